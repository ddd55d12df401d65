//! StatusNotification: a connector's (or, for connector 0, the station's) status changed.

use crate::model::{connector_key, events, ConnectorStatus, StationChange};
use crate::ocpp::common::notice::Notice;
use crate::ocpp::context::{Handled, HandlerError, StationContext};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub connector_id: u32,
    pub error_code: String,
    pub status: String,
    pub info: Option<String>,
    pub timestamp: Option<DateTime<Utc>>,
    pub vendor_id: Option<String>,
    pub vendor_error_code: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Response {}

pub async fn handle(ctx: &StationContext<'_>, req: Request) -> Result<Handled<Response>, HandlerError> {
    let now = Utc::now();
    let connector_id = req.connector_id;
    let status = ConnectorStatus {
        evse_id: None,
        connector_id,
        status: req.status.clone(),
        error_code: Some(req.error_code),
        info: req.info,
        vendor_id: req.vendor_id,
        vendor_error_code: req.vendor_error_code,
        timestamp: req.timestamp,
        received_at: now,
    };
    ctx.emit(events::status_changed(ctx.station_id, &status));
    let change = StationChange::Connector { key: connector_key(None, connector_id), status };
    ctx.store.change_station(ctx.account_id, ctx.station_id, &change).await?;
    Ok(Handled::with_notice(Response {}, Notice::ConnectorStatus { connector_id, status: req.status }))
}

#[cfg(test)]
mod tests {
    use crate::ocpp::common::test_support::*;
    use crate::store::prelude::*;
    use serde_json::json;

    #[tokio::test]
    async fn keeps_the_last_status_of_each_connector() {
        let f = Fixture::new().await;
        let sn = |c: u32, status: &str| json!({"connectorId": c, "errorCode": "NoError", "status": status});
        f.ok("StatusNotification", sn(0, "Available")).await;
        f.ok("StatusNotification", sn(1, "Preparing")).await;
        f.ok("StatusNotification", sn(2, "Available")).await;
        f.ok(
            "StatusNotification",
            json!({"connectorId": 1, "errorCode": "GroundFailure", "status": "Faulted", "info": "RCD tripped",
                   "timestamp": "2026-01-01T10:00:00Z"}),
        )
        .await;
        let s = f.store.station(&ACCOUNT.into(), &STATION.into()).await.unwrap().unwrap();
        assert_eq!(s.connectors.len(), 3);
        let c1 = &s.connectors["1"];
        assert_eq!(
            (c1.status.as_str(), c1.error_code.as_deref().unwrap(), c1.info.as_deref()),
            ("Faulted", "GroundFailure", Some("RCD tripped"))
        );
        assert_eq!(s.connectors["2"].status, "Available");
    }
}
