//! StopTransaction: a charging session ended; energy = meterStop - meterStart.

use super::id_tag_info::IdTagInfo;
use crate::model::{events, MeterRecord, MeterValue, TransactionStop};
use crate::ocpp::common::notice::Notice;
use crate::ocpp::context::{Handled, HandlerError, StationContext};
use crate::store::StopOutcome;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub id_tag: Option<String>,
    pub meter_stop: i64,
    pub timestamp: DateTime<Utc>,
    pub transaction_id: i32,
    pub reason: Option<String>,
    #[serde(default)]
    pub transaction_data: Vec<MeterValue>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_tag_info: Option<IdTagInfo>,
}

pub async fn handle(ctx: &StationContext<'_>, req: Request) -> Result<Handled<Response>, HandlerError> {
    let id_tag_info = match &req.id_tag {
        Some(tag) => Some(IdTagInfo::lookup(ctx.store, ctx.account_id, tag).await?),
        None => None,
    };
    let stop = TransactionStop {
        meter_stop: Some(req.meter_stop),
        timestamp: req.timestamp,
        reason: req.reason.clone(),
        id_tag: req.id_tag.clone(),
        received_at: Utc::now(),
    };
    let outcome = ctx.store.stop_transaction(ctx.account_id, ctx.station_id, req.transaction_id, &stop).await?;
    let notice = match &outcome {
        StopOutcome::Stopped(tx) => {
            let records: Vec<MeterRecord> = req
                .transaction_data
                .into_iter()
                .map(|mv| MeterRecord {
                    station_id: ctx.station_id.clone(),
                    evse_id: None,
                    connector_id: tx.connector_id,
                    transaction_id: Some(tx.id),
                    meter_value: mv,
                })
                .collect();
            if !records.is_empty() {
                ctx.store.add_meter_values(ctx.account_id, &records).await?;
            }
            ctx.emit(events::transaction_ended(tx));
            Some(Notice::TransactionStopped { transaction_id: tx.id })
        }
        StopOutcome::AlreadyStopped(tx) => {
            tracing::info!(
                station = ctx.station_id.as_str(),
                transaction_id = tx.id,
                "retried StopTransaction changed nothing"
            );
            None
        }
        StopOutcome::Unknown => {
            // The station must be able to clear the transaction from its queue, so it is answered; the
            // message is kept so that the meter reading is not lost.
            crate::warn_limited!(
                station = ctx.station_id.as_str(),
                transaction_id = req.transaction_id,
                "StopTransaction for an unknown transaction"
            );
            let payload = serde_json::json!({
                "transactionId": req.transaction_id, "meterStop": req.meter_stop,
                "timestamp": req.timestamp, "idTag": req.id_tag, "reason": req.reason,
            });
            crate::ocpp::common::events::record_event(ctx, "StopTransaction", &payload).await?;
            None
        }
    };
    Ok(Handled { response: Response { id_tag_info }, notice })
}

#[cfg(test)]
mod tests {
    use crate::ocpp::common::test_support::*;
    use crate::store::prelude::*;
    use serde_json::json;

    async fn started(f: &Fixture) -> i64 {
        let r = f
            .ok(
                "StartTransaction",
                json!({"connectorId": 1, "idTag": "TAG", "meterStart": 1500, "timestamp": "2026-01-01T10:00:00Z"}),
            )
            .await;
        r["transactionId"].as_i64().unwrap()
    }

    fn stop(id: i64, meter: i64) -> serde_json::Value {
        json!({"transactionId": id, "meterStop": meter, "timestamp": "2026-01-01T11:00:00Z", "idTag": "TAG", "reason": "Local",
               "transactionData": [{"timestamp": "2026-01-01T11:00:00Z",
                   "sampledValue": [{"value": "9000", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}]})
    }

    #[tokio::test]
    async fn energy_is_meter_stop_minus_meter_start_and_transaction_data_is_kept() {
        let f = Fixture::new().await;
        let id = started(&f).await;
        let r = f.ok("StopTransaction", stop(id, 9000)).await;
        assert_eq!(r["idTagInfo"]["status"], "Invalid");
        let tx = f.store.transaction(&ACCOUNT.into(), id as i32).await.unwrap().unwrap();
        assert_eq!(tx.energy_wh(), Some(7500));
        assert_eq!(tx.stop.as_ref().unwrap().reason.as_deref(), Some("Local"));
        let mv = f.store.transaction_meter_values(&ACCOUNT.into(), &STATION.into(), id as i32).await.unwrap();
        assert_eq!(mv.len(), 1);
        assert_eq!(mv[0].meter_value.sampled_value[0].value, "9000");
    }

    #[tokio::test]
    async fn a_retried_stop_changes_nothing() {
        let f = Fixture::new().await;
        let id = started(&f).await;
        f.ok("StopTransaction", stop(id, 9000)).await;
        f.ok("StopTransaction", stop(id, 12000)).await;
        let tx = f.store.transaction(&ACCOUNT.into(), id as i32).await.unwrap().unwrap();
        assert_eq!(tx.energy_wh(), Some(7500));
        assert_eq!(
            f.store.transaction_meter_values(&ACCOUNT.into(), &STATION.into(), id as i32).await.unwrap().len(),
            1
        );
    }

    #[tokio::test]
    async fn an_unknown_transaction_is_answered_and_kept_as_an_event() {
        let f = Fixture::new().await;
        let r = f
            .ok("StopTransaction", json!({"transactionId": 4242, "meterStop": 10, "timestamp": "2026-01-01T11:00:00Z"}))
            .await;
        assert_eq!(r, json!({}));
        let events = f.store.events(&ACCOUNT.into(), &STATION.into()).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].payload["transactionId"], 4242);
    }
}
