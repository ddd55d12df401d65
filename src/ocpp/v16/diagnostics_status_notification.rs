//! DiagnosticsStatusNotification: progress of a diagnostics upload asked by GetDiagnostics.

use crate::model::{StationChange, StatusReport};
use crate::ocpp::context::{Handled, HandlerError, StationContext};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
pub struct Request {
    pub status: String,
}

#[derive(Debug, Serialize)]
pub struct Response {}

pub async fn handle(ctx: &StationContext<'_>, req: Request) -> Result<Handled<Response>, HandlerError> {
    let report = StatusReport { status: req.status, received_at: chrono::Utc::now() };
    ctx.store.change_station(ctx.account_id, ctx.station_id, &StationChange::DiagnosticsStatus(report)).await?;
    Ok(Handled::reply(Response {}))
}
