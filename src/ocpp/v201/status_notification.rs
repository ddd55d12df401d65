//! StatusNotification (2.0.1): a connector of an EVSE changed status.

use crate::model::{connector_key, events, ConnectorStatus, StationChange};
use crate::ocpp::common::notice::Notice;
use crate::ocpp::context::{Handled, HandlerError, StationContext};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub timestamp: DateTime<Utc>,
    pub connector_status: String,
    pub evse_id: u32,
    pub connector_id: u32,
}

#[derive(Debug, Serialize)]
pub struct Response {}

pub async fn handle(ctx: &StationContext<'_>, req: Request) -> Result<Handled<Response>, HandlerError> {
    let now = Utc::now();
    let status = ConnectorStatus {
        evse_id: Some(req.evse_id),
        connector_id: req.connector_id,
        status: req.connector_status.clone(),
        error_code: None,
        info: None,
        vendor_id: None,
        vendor_error_code: None,
        timestamp: Some(req.timestamp),
        received_at: now,
    };
    ctx.emit(events::status_changed(ctx.station_id, &status));
    let k = connector_key(Some(req.evse_id), req.connector_id);
    ctx.store.change_station(ctx.account_id, ctx.station_id, &StationChange::Connector { key: k, status }).await?;
    let notice = Notice::ConnectorStatus { connector_id: req.connector_id, status: req.connector_status };
    Ok(Handled::with_notice(Response {}, notice))
}
