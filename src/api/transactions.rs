//! Transactions: what was charged, where, by whom, and the energy delivered.

use super::{ApiError, Tenant};
use crate::ids::StationId;
use crate::model::Transaction;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    station: Option<StationId>,
}

pub(crate) fn view(tx: &Transaction) -> Value {
    json!({
        "id": tx.id,
        "station_id": tx.station_id,
        "connector_id": tx.connector_id,
        "id_tag": tx.id_tag,
        "id_tag_status": tx.id_tag_status,
        "status": if tx.stop.is_some() { "completed" } else { "active" },
        "meter_start": tx.meter_start,
        "start_timestamp": tx.start_timestamp,
        "reservation_id": tx.reservation_id,
        "meter_stop": tx.stop.as_ref().map(|s| s.meter_stop),
        "stop_timestamp": tx.stop.as_ref().map(|s| s.timestamp),
        "stop_reason": tx.stop.as_ref().and_then(|s| s.reason.clone()),
        "stop_id_tag": tx.stop.as_ref().and_then(|s| s.id_tag.clone()),
        "energy_wh": tx.energy_wh(),
        "station_transaction_id": tx.station_transaction_id,
        "evse_id": tx.evse_id,
        "charging_state": tx.charging_state,
    })
}

pub async fn list(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    q: web::Query<Filter>,
) -> Result<HttpResponse, ApiError> {
    let txs = state.account_store.transactions(&account.id, q.station.as_ref()).await?;
    Ok(HttpResponse::Ok().json(txs.iter().map(view).collect::<Vec<_>>()))
}

pub async fn get(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    path: web::Path<i32>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let tx = state.account_store.transaction(&account.id, id).await?;
    let tx = tx.ok_or_else(|| ApiError::NotFound(format!("no transaction {id}")))?;
    let meter_values = state.account_store.transaction_meter_values(&account.id, &tx.station_id, tx.id).await?;
    let mut body = view(&tx);
    body["events"] = json!(tx
        .events
        .iter()
        .map(|e| json!({"seq_no": e.seq_no, "event_type": e.event_type, "trigger_reason": e.trigger_reason,
            "timestamp": e.timestamp, "offline": e.offline, "received_at": e.received_at}))
        .collect::<Vec<_>>());
    body["meter_values"] = json!(meter_values
        .iter()
        .map(|r| json!({"connector_id": r.connector_id, "evse_id": r.evse_id, "timestamp": r.meter_value.timestamp, "sampled_value": r.meter_value.sampled_value}))
        .collect::<Vec<_>>());
    Ok(HttpResponse::Ok().json(body))
}
