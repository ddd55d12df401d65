//! SignedFirmwareStatusNotification (security extension): progress of a SignedUpdateFirmware. OCPP
//! 2.0.1's FirmwareStatusNotification has the same fields and is handled here too.

use super::{Handled, HandlerError, StationContext};
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
    tracing::debug!(station = ctx.station_id, request_id = ?req.request_id, status = %req.status, "signed firmware status");
    super::set_firmware_status(ctx, req.status).await?;
    Ok(Handled::reply(Response {}))
}
