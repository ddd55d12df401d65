//! DiagnosticsStatusNotification: progress of a diagnostics upload asked by GetDiagnostics.

use crate::model::{events, EventType, StationChange, StatusReport};
use crate::ocpp::context::{Handled, HandlerError, StationContext};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
pub struct Request {
    pub status: String,
}

#[derive(Debug, Serialize)]
pub struct Response {}

pub async fn handle(ctx: &StationContext<'_>, req: Request) -> Result<Handled<Response>, HandlerError> {
    let payload = serde_json::json!({ "status": req.status });
    let report = StatusReport { status: req.status, received_at: chrono::Utc::now() };
    ctx.store.change_station(ctx.account_id, ctx.station_id, &StationChange::DiagnosticsStatus(report)).await?;
    ctx.emit(events::reported(EventType::DiagnosticsStatus, ctx.station_id, "DiagnosticsStatusNotification", &payload));
    Ok(Handled::reply(Response {}))
}
