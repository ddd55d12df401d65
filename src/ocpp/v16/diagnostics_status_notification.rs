//! DiagnosticsStatusNotification: progress of a diagnostics upload asked by GetDiagnostics.

use super::{Handled, HandlerError, StationContext};
use crate::model::StatusReport;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
pub struct Request {
    pub status: String,
}

#[derive(Debug, Serialize)]
pub struct Response {}

pub async fn handle(ctx: &StationContext<'_>, req: Request) -> Result<Handled<Response>, HandlerError> {
    let report = StatusReport { status: req.status, received_at: chrono::Utc::now() };
    ctx.store.update_station(ctx.account_id, ctx.station_id, &|s| s.diagnostics_status = Some(report.clone())).await?;
    Ok(Handled::reply(Response {}))
}
