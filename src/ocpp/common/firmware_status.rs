//! Firmware-update progress, kept on the station record. This is the handler of 1.6's
//! SignedFirmwareStatusNotification (security extension: progress of a SignedUpdateFirmware) and of
//! 2.0.1's FirmwareStatusNotification, which has the same fields; 1.6's FirmwareStatusNotification
//! (no request id) keeps its progress through `set_firmware_status`.

use crate::model::{events, EventType, StationChange, StatusReport};
use crate::ocpp::context::{Handled, HandlerError, StationContext};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub status: String,
    pub request_id: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct Response {}

pub async fn handle(ctx: &StationContext<'_>, req: Request) -> Result<Handled<Response>, HandlerError> {
    tracing::debug!(station = ctx.station_id.as_str(), request_id = ?req.request_id, status = %req.status, "signed firmware status");
    set_firmware_status(ctx, req.status).await?;
    Ok(Handled::reply(Response {}))
}

/// Keeps the latest firmware-update progress on the station record.
pub(crate) async fn set_firmware_status(ctx: &StationContext<'_>, status: String) -> Result<(), HandlerError> {
    let payload = serde_json::json!({ "status": status });
    let report = StatusReport { status, received_at: chrono::Utc::now() };
    ctx.store.change_station(ctx.account_id, ctx.station_id, &StationChange::FirmwareStatus(report)).await?;
    ctx.emit(events::reported(EventType::FirmwareStatus, ctx.station_id, "FirmwareStatusNotification", &payload));
    Ok(())
}
