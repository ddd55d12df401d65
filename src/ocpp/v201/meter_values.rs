//! MeterValues (2.0.1): readings of an EVSE (0 = the main meter) outside transactions.

use super::types::MeterValue201;
use crate::model::MeterRecord;
use crate::ocpp::context::{Handled, HandlerError, StationContext};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub evse_id: u32,
    pub meter_value: Vec<MeterValue201>,
}

#[derive(Debug, Serialize)]
pub struct Response {}

pub async fn handle(ctx: &StationContext<'_>, req: Request) -> Result<Handled<Response>, HandlerError> {
    let records: Vec<MeterRecord> = req
        .meter_value
        .iter()
        .map(|mv| MeterRecord {
            station_id: ctx.station_id.clone(),
            evse_id: Some(req.evse_id),
            connector_id: 0,
            transaction_id: None,
            meter_value: mv.to_model(),
        })
        .collect();
    ctx.store.add_meter_values(ctx.account_id, &records).await?;
    Ok(Handled::reply(Response {}))
}
