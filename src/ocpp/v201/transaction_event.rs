//! TransactionEvent (2.0.1): Started, Updated and Ended events of a transaction the station names.
//!
//! Events are applied by seqNo: one already applied (a retry) changes nothing; events arriving out
//! of order (sent late after an outage, `offline: true`) are still applied, and the energy figures are
//! recomputed from all applied events, so the arrival order does not matter: the meter start is the
//! energy register of the earliest event (by seqNo) that carried one, the meter stop that of the Ended
//! event (or, if it had none, of the latest event that had one).

use super::authorize::IdTokenInfo;
use super::types::{Evse, IdToken, MeterValue201};
use crate::model::{events, MeterRecord, Transaction, TransactionEventRecord, TransactionStop};
use crate::ocpp::common::notice::Notice;
use crate::ocpp::context::{Handled, HandlerError, StationContext};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionInfo {
    pub transaction_id: String,
    pub charging_state: Option<String>,
    pub stopped_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub event_type: String,
    pub timestamp: DateTime<Utc>,
    pub trigger_reason: String,
    pub seq_no: u64,
    #[serde(default)]
    pub offline: bool,
    pub reservation_id: Option<i64>,
    pub transaction_info: TransactionInfo,
    pub id_token: Option<IdToken>,
    pub evse: Option<Evse>,
    #[serde(default)]
    pub meter_value: Vec<MeterValue201>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token_info: Option<IdTokenInfo>,
}

pub async fn handle(ctx: &StationContext<'_>, req: Request) -> Result<Handled<Response>, HandlerError> {
    let id_token_info = match &req.id_token {
        Some(token) => Some(IdTokenInfo::lookup(ctx.store, ctx.account_id, token).await?),
        None => None,
    };
    let now = Utc::now();
    let register = req.meter_value.iter().find_map(MeterValue201::energy_register_wh);
    let event = TransactionEventRecord {
        seq_no: req.seq_no,
        event_type: req.event_type.clone(),
        trigger_reason: req.trigger_reason.clone(),
        timestamp: req.timestamp,
        offline: req.offline,
        energy_register_wh: register,
        received_at: now,
    };
    let evse = req.evse.as_ref().map(|e| e.id);
    let connector = req.evse.as_ref().and_then(|e| e.connector_id).unwrap_or(0);
    let token = req.id_token.as_ref().map(|t| t.id_token.clone());
    let token_status = id_token_info.as_ref().map(|i| i.status.to_string());
    let info = &req.transaction_info;
    let create = |id: i32| Transaction {
        id,
        account_id: ctx.account_id.clone(),
        station_id: ctx.station_id.clone(),
        connector_id: connector,
        id_tag: None,
        id_tag_status: None,
        meter_start: None,
        start_timestamp: req.timestamp,
        reservation_id: req.reservation_id,
        stop: None,
        started_received_at: now,
        station_transaction_id: Some(info.transaction_id.clone()),
        evse_id: evse,
        charging_state: None,
        events: Vec::new(),
    };
    let apply = |tx: &mut Transaction| {
        if tx.id_tag.is_none() {
            tx.id_tag = token.clone();
            tx.id_tag_status = token_status.clone();
        }
        if tx.evse_id.is_none() {
            tx.evse_id = evse;
        }
        if connector != 0 && tx.connector_id == 0 {
            tx.connector_id = connector;
        }
        if req.event_type == "Started" || req.timestamp < tx.start_timestamp {
            tx.start_timestamp = tx.start_timestamp.min(req.timestamp);
        }
        if info.charging_state.is_some() {
            tx.charging_state = info.charging_state.clone();
        }
        if req.event_type == "Ended" {
            tx.stop = Some(TransactionStop {
                meter_stop: None,
                timestamp: req.timestamp,
                reason: info.stopped_reason.clone(),
                id_tag: token.clone(),
                received_at: now,
            });
        }
        tx.events.push(event.clone());
        tx.recompute_energy();
    };
    let outcome = ctx
        .store
        .apply_transaction_event(ctx.account_id, ctx.station_id, &info.transaction_id, req.seq_no, &create, &apply)
        .await?;
    let tx = &outcome.transaction;
    if !outcome.applied {
        tracing::info!(station = ctx.station_id.as_str(), transaction = %info.transaction_id, seq_no = req.seq_no, "repeated TransactionEvent changed nothing");
        return Ok(Handled::reply(Response { id_token_info }));
    }
    let records: Vec<MeterRecord> = req
        .meter_value
        .iter()
        .map(|mv| MeterRecord {
            station_id: ctx.station_id.clone(),
            evse_id: tx.evse_id,
            connector_id: tx.connector_id,
            transaction_id: Some(tx.id),
            meter_value: mv.to_model(),
        })
        .collect();
    if !records.is_empty() {
        ctx.store.add_meter_values(ctx.account_id, &records).await?;
    }
    if outcome.created {
        ctx.emit(events::transaction_started(tx));
    }
    match req.event_type.as_str() {
        "Ended" => ctx.emit(events::transaction_ended(tx)),
        _ if !records.is_empty() => ctx.emit(events::transaction_updated(ctx.station_id, tx.id, &records)),
        _ => {}
    }
    if let Some(info) = id_token_info.as_ref().filter(|i| i.status != "Accepted") {
        let tag = req.id_token.as_ref().map(|t| t.id_token.as_str()).unwrap_or_default();
        ctx.emit(events::authorization_refused(ctx.station_id, tag, info.status, "TransactionEvent"));
    }
    let notice = match req.event_type.as_str() {
        "Ended" => Some(Notice::TransactionStopped { transaction_id: tx.id }),
        _ if outcome.created => {
            Some(Notice::TransactionStarted { transaction_id: tx.id, connector_id: tx.evse_id.unwrap_or(0) })
        }
        _ => None,
    };
    Ok(Handled { response: Response { id_token_info }, notice })
}

#[cfg(test)]
mod tests {
    use crate::ocpp::common::test_support::{Fixture, ACCOUNT, STATION};
    use crate::ocpp::Version;
    use crate::store::prelude::*;
    use serde_json::{json, Value};

    fn event(kind: &str, seq: u64, wh: Option<f64>, extra: Value) -> Value {
        let mut e = json!({"eventType": kind, "timestamp": format!("2026-11-25T10:{:02}:00Z", seq), "triggerReason": "MeterValuePeriodic",
            "seqNo": seq, "transactionInfo": {"transactionId": "tx-abc"}, "evse": {"id": 1, "connectorId": 1}});
        if let Some(wh) = wh {
            e["meterValue"] = json!([{"timestamp": format!("2026-11-25T10:{:02}:00Z", seq), "sampledValue": [{"value": wh, "unitOfMeasure": {"unit": "Wh"}}]}]);
        }
        if let (Value::Object(e), Value::Object(x)) = (&mut e, extra) {
            e.extend(x);
        }
        e
    }

    #[tokio::test]
    async fn a_lifecycle_gives_the_energy_and_a_retried_ended_changes_nothing() {
        let f = Fixture::with_version(Version::V201).await;
        f.ok(
            "TransactionEvent",
            event("Started", 0, Some(1000.0), json!({"idToken": {"idToken": "X", "type": "ISO14443"}})),
        )
        .await;
        f.ok("TransactionEvent", event("Updated", 1, Some(4000.0), json!({}))).await;
        let ended = event(
            "Ended",
            2,
            Some(9500.0),
            json!({"transactionInfo": {"transactionId": "tx-abc", "stoppedReason": "EVDisconnected"}}),
        );
        f.ok("TransactionEvent", ended.clone()).await;
        f.ok("TransactionEvent", ended).await;
        let txs = crate::store::all_transactions(&f.store, &ACCOUNT.into(), Some(&STATION.into())).await.unwrap();
        assert_eq!(txs.len(), 1);
        let tx = &txs[0];
        assert_eq!((tx.meter_start, tx.energy_wh(), tx.events.len()), (Some(1000), Some(8500), 3));
        assert_eq!(tx.stop.as_ref().unwrap().reason.as_deref(), Some("EVDisconnected"));
        assert_eq!(tx.station_transaction_id.as_deref(), Some("tx-abc"));
        assert_eq!(f.store.transaction_meter_values(&ACCOUNT.into(), &STATION.into(), tx.id).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn events_arriving_out_of_order_give_the_same_result() {
        let f = Fixture::with_version(Version::V201).await;
        f.ok("TransactionEvent", event("Ended", 2, Some(9500.0), json!({"offline": true}))).await;
        f.ok("TransactionEvent", event("Updated", 1, Some(4000.0), json!({"offline": true}))).await;
        f.ok("TransactionEvent", event("Started", 0, Some(1000.0), json!({"offline": true}))).await;
        let tx = &crate::store::all_transactions(&f.store, &ACCOUNT.into(), None).await.unwrap()[0];
        assert_eq!((tx.meter_start, tx.energy_wh()), (Some(1000), Some(8500)));
        let seqs: Vec<u64> = tx.events.iter().map(|e| e.seq_no).collect();
        assert_eq!(seqs, [0, 1, 2]);
        assert!(tx.events.iter().all(|e| e.offline));
        assert_eq!(tx.start_timestamp.to_rfc3339(), "2026-11-25T10:00:00+00:00");
    }
}
