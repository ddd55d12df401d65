//! LogStatusNotification (security extension): progress of a log upload asked by GetLog. Kept as an event.

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
    let payload = serde_json::json!({"status": req.status, "requestId": req.request_id});
    crate::ocpp::common::events::record_event(ctx, "LogStatusNotification", &payload).await?;
    Ok(Handled::reply(Response {}))
}
