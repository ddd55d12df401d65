//! Heartbeat: the station is alive and wants the time.

use super::{Handled, HandlerError, StationContext};
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

pub async fn handle(ctx: &StationContext<'_>, _req: Request) -> Result<Handled<Response>, HandlerError> {
    let now = Utc::now();
    // last_seen is informational: it is written but not flushed for a heartbeat.
    ctx.store.update_station(ctx.account_id, ctx.station_id, &|s| s.last_seen = Some(now)).await?;
    Ok(Handled::reply(Response { current_time: now }))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use crate::store::Store;
    use serde_json::json;

    #[tokio::test]
    async fn answers_the_current_time_and_marks_the_station_seen() {
        let f = Fixture::new().await;
        let before = chrono::Utc::now();
        let r = f.ok("Heartbeat", json!({})).await;
        let t: chrono::DateTime<chrono::Utc> = r["currentTime"].as_str().unwrap().parse().unwrap();
        assert!(t >= before - chrono::Duration::seconds(1));
        let seen = f.store.station(ACCOUNT, STATION).await.unwrap().unwrap().last_seen.unwrap();
        assert!(seen >= before);
    }
}
