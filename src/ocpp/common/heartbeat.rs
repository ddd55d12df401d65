//! Heartbeat, the same in both versions: the station is alive and wants the time.

use crate::ocpp::context::{Handled, HandlerError, StationContext};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub current_time: DateTime<Utc>,
}

/// Writes nothing: while a station is connected its last message time is in the tenant's live view,
/// and the session stores it when it ends. At fleet scale heartbeats are most of the traffic.
pub async fn handle(_ctx: &StationContext<'_>, _req: Request) -> Result<Handled<Response>, HandlerError> {
    Ok(Handled::reply(Response { current_time: Utc::now() }))
}

#[cfg(test)]
mod tests {
    use crate::ocpp::common::test_support::*;
    use serde_json::json;

    #[tokio::test]
    async fn answers_the_current_time_without_a_write() {
        let f = Fixture::new().await;
        let before = chrono::Utc::now();
        let flushes = f.store.flushes();
        let r = f.ok("Heartbeat", json!({})).await;
        let t: chrono::DateTime<chrono::Utc> = r["currentTime"].as_str().unwrap().parse().unwrap();
        assert!(t >= before - chrono::Duration::seconds(1));
        assert_eq!(f.store.flushes(), flushes);
    }
}
