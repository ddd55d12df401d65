//! MeterValues: periodic or triggered meter readings; every sampled value is kept.

use crate::model::{events, MeterRecord, MeterValue};
use crate::ocpp::context::{Handled, HandlerError, StationContext};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub connector_id: u32,
    pub transaction_id: Option<i32>,
    pub meter_value: Vec<MeterValue>,
}

#[derive(Debug, Serialize)]
pub struct Response {}

pub async fn handle(ctx: &StationContext<'_>, req: Request) -> Result<Handled<Response>, HandlerError> {
    let records: Vec<MeterRecord> = req
        .meter_value
        .into_iter()
        .map(|meter_value| MeterRecord {
            station_id: ctx.station_id.clone(),
            evse_id: None,
            connector_id: req.connector_id,
            transaction_id: req.transaction_id,
            meter_value,
        })
        .collect();
    ctx.store.add_meter_values(ctx.account_id, &records).await?;
    if let Some(transaction_id) = req.transaction_id {
        ctx.emit(events::transaction_updated(ctx.station_id, transaction_id, &records));
    }
    Ok(Handled::reply(Response {}))
}

#[cfg(test)]
mod tests {
    use crate::ocpp::common::test_support::*;
    use crate::store::prelude::*;
    use serde_json::json;

    #[tokio::test]
    async fn keeps_every_sampled_value_of_every_reading() {
        let f = Fixture::new().await;
        let mv = json!({"connectorId": 1, "transactionId": 7, "meterValue": [
            {"timestamp": "2026-01-01T10:00:00Z", "sampledValue": [
                {"value": "100", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                {"value": "7.4", "measurand": "Power.Active.Import", "unit": "kW", "phase": "L1"}]},
            {"timestamp": "2026-01-01T10:01:00Z", "sampledValue": [{"value": "220"}]}]});
        f.ok("MeterValues", mv).await;
        let got = f.store.transaction_meter_values(&ACCOUNT.into(), &STATION.into(), 7).await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].meter_value.sampled_value.len(), 2);
        assert_eq!(got[0].meter_value.sampled_value[1].phase.as_deref(), Some("L1"));
        assert_eq!(got[1].meter_value.sampled_value[0].value, "220");
    }
}
