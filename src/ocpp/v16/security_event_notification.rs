//! SecurityEventNotification (security extension): a security-relevant event at the station. Kept as an event.

use crate::ocpp::context::{Handled, HandlerError, StationContext};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: DateTime<Utc>,
    pub tech_info: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Response {}

pub async fn handle(ctx: &StationContext<'_>, req: Request) -> Result<Handled<Response>, HandlerError> {
    let payload = serde_json::json!({"type": req.kind, "timestamp": req.timestamp, "techInfo": req.tech_info});
    crate::ocpp::common::events::record_event(ctx, "SecurityEventNotification", &payload).await?;
    crate::warn_limited!(station = ctx.station_id.as_str(), kind = %req.kind, "station security event");
    Ok(Handled::reply(Response {}))
}

#[cfg(test)]
mod tests {
    use crate::ocpp::common::test_support::*;
    use crate::store::prelude::*;
    use serde_json::json;

    #[tokio::test]
    async fn security_events_and_log_status_are_kept() {
        let f = Fixture::new().await;
        f.ok(
            "SecurityEventNotification",
            json!({"type": "TamperDetectionActivated", "timestamp": "2026-01-01T10:00:00Z"}),
        )
        .await;
        f.ok("LogStatusNotification", json!({"status": "Uploaded", "requestId": 3})).await;
        let ev = f.store.events(&ACCOUNT.into(), &STATION.into()).await.unwrap();
        let actions: Vec<&str> = ev.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["SecurityEventNotification", "LogStatusNotification"]);
        assert_eq!(ev[0].payload["type"], "TamperDetectionActivated");
    }
}
