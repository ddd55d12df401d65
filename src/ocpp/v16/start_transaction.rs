//! StartTransaction: a charging session began; it gets a unique transaction id.

use super::id_tag_info::IdTagInfo;
use crate::model::{events, NewTransaction, TagStatus};
use crate::ocpp::common::notice::Notice;
use crate::ocpp::context::{Handled, HandlerError, StationContext};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub connector_id: u32,
    pub id_tag: String,
    pub meter_start: i64,
    pub reservation_id: Option<i64>,
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub id_tag_info: IdTagInfo,
    pub transaction_id: i32,
}

pub async fn handle(ctx: &StationContext<'_>, req: Request) -> Result<Handled<Response>, HandlerError> {
    let id_tag_info = IdTagInfo::lookup(ctx.store, ctx.account_id, &req.id_tag).await?;
    // The transaction is recorded whatever the tag's status: the station has started it and meters it;
    // a tag that is not Accepted tells the station to stop it.
    let (tx, created) = ctx
        .store
        .start_transaction(&NewTransaction {
            account_id: ctx.account_id.clone(),
            station_id: ctx.station_id.clone(),
            connector_id: req.connector_id,
            id_tag: req.id_tag,
            id_tag_status: id_tag_info.status.as_str().to_string(),
            meter_start: req.meter_start,
            start_timestamp: req.timestamp,
            reservation_id: req.reservation_id,
        })
        .await?;
    if created {
        ctx.emit(events::transaction_started(&tx));
        if id_tag_info.status != TagStatus::Accepted {
            let tag = tx.id_tag.as_deref().unwrap_or_default();
            ctx.emit(events::authorization_refused(
                ctx.station_id,
                tag,
                id_tag_info.status.as_str(),
                "StartTransaction",
            ));
        }
    } else {
        tracing::info!(
            station = ctx.station_id.as_str(),
            transaction_id = tx.id,
            "retried StartTransaction answered with its first id"
        );
    }
    let response = Response { id_tag_info, transaction_id: tx.id };
    Ok(Handled::with_notice(
        response,
        Notice::TransactionStarted { transaction_id: tx.id, connector_id: tx.connector_id },
    ))
}

#[cfg(test)]
mod tests {
    use crate::ocpp::common::test_support::*;
    use crate::store::prelude::*;
    use serde_json::json;

    fn start(connector: u32, ts: &str) -> serde_json::Value {
        json!({"connectorId": connector, "idTag": "TAG", "meterStart": 1000, "timestamp": ts})
    }

    #[tokio::test]
    async fn each_start_gets_a_new_id_and_is_stored() {
        let f = Fixture::new().await;
        let a = f.ok("StartTransaction", start(1, "2026-01-01T10:00:00Z")).await;
        let b = f.ok("StartTransaction", start(2, "2026-01-01T10:00:00Z")).await;
        let (a, b) = (a["transactionId"].as_i64().unwrap(), b["transactionId"].as_i64().unwrap());
        assert_ne!(a, b);
        let tx = f.store.transaction(&ACCOUNT.into(), a as i32).await.unwrap().unwrap();
        assert_eq!((tx.connector_id, tx.meter_start, tx.id_tag.as_deref()), (1, Some(1000), Some("TAG")));
        assert!(tx.stop.is_none());
    }

    #[tokio::test]
    async fn unknown_tag_is_recorded_but_answered_invalid() {
        let f = Fixture::new().await;
        let r = f.ok("StartTransaction", start(1, "2026-01-01T10:00:00Z")).await;
        assert_eq!(r["idTagInfo"]["status"], "Invalid");
        assert!(r["transactionId"].as_i64().unwrap() > 0);
    }

    #[tokio::test]
    async fn a_retried_start_gets_the_same_id() {
        let f = Fixture::new().await;
        let a = f.ok("StartTransaction", start(1, "2026-01-01T10:00:00Z")).await;
        let b = f.ok("StartTransaction", start(1, "2026-01-01T10:00:00Z")).await;
        assert_eq!(a["transactionId"], b["transactionId"]);
        assert_eq!(crate::store::all_transactions(&f.store, &ACCOUNT.into(), None).await.unwrap().len(), 1);
    }
}
