//! Transactions: what was charged, where, by whom, and the energy delivered.

use super::paging::{self, List};
use super::{ApiError, Tenant};
use crate::ids::{AccountId, StationId};
use crate::limits::quota::Permit;
use crate::model::{MeterRecord, Page, PageRequest, Transaction, TransactionFilter, TransactionStatus, MAX_LIMIT};
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

/// `GET /transactions`: a page, newest first, narrowed by station, status and time ranges.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    station: Option<StationId>,
    status: Option<TransactionStatus>,
    started_from: Option<DateTime<Utc>>,
    started_to: Option<DateTime<Utc>>,
    stopped_from: Option<DateTime<Utc>>,
    stopped_to: Option<DateTime<Utc>>,
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

impl ListQuery {
    fn filter(&self) -> TransactionFilter {
        TransactionFilter {
            station: self.station.clone(),
            status: self.status,
            started_from: self.started_from,
            started_to: self.started_to,
            stopped_from: self.stopped_from,
            stopped_to: self.stopped_to,
        }
    }
}

pub async fn list(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let budget = state.limits.settings.list_scan_records;
    let page = paging::request(List::Transactions, q.limit, q.cursor.as_deref(), budget, |k| k.parse().ok())?;
    let page = state.account_store.transactions_page(&account.id, &q.filter(), &page).await?;
    paging::respond(List::Transactions, page, |tx| Some(view(&tx)), |id| id.to_string()).await
}

/// A place among the exports the tenant streams at once (`limits.exports_per_tenant`: this one and
/// the account export), held by the body until it ends or the client goes; 429 when all are taken.
pub(super) fn export_place(state: &AppState, account_id: &AccountId) -> Result<Permit<AccountId>, ApiError> {
    state.limits.exports.acquire(account_id).ok_or_else(|| {
        crate::limits::hit(crate::limits::Limit::Exports);
        ApiError::RateLimited {
            retry_after: std::time::Duration::from_secs(1),
            message: format!(
                "this account streams {} exports already (limits.exports_per_tenant); try again when one has ended",
                state.limits.settings.exports_per_tenant
            ),
        }
    })
}

/// Where an export stands: a page read and not yet written, the key to read the next one after, or
/// the end.
enum Export {
    Ready(Page<Transaction, i32>),
    After(i32),
    Done,
}

/// `GET /transactions/export`: every transaction the filters select, newest first, one JSON object
/// per line (NDJSON), as the list shows it (`GET /transactions/{id}` without its 2.0.1 events). Streamed a
/// store page at a time, as the client takes it: the node never holds more than one page of it.
/// The first page is read before the answer starts (a store that fails then gets its error status);
/// a failure later ends the body without the chunked terminator, which HTTP clients report.
pub async fn export(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    if q.limit.is_some() || q.cursor.is_some() {
        return Err(ApiError::invalid(
            "invalid_query",
            "the export has no pages: it takes the list's filters, not limit or cursor",
        ));
    }
    let permit = export_place(&state, &account.id)?;
    let filter = q.filter();
    let store = state.account_store.clone();
    let budget = state.limits.settings.list_scan_records;
    let read = move |after: Option<i32>| PageRequest { after, limit: MAX_LIMIT, budget };
    let first = store.transactions_page(&account.id, &filter, &read(None)).await?;
    let account_id = account.id.clone();
    let lines = futures_util::stream::try_unfold(Export::Ready(first), move |step| {
        let (store, filter, account_id) = (store.clone(), filter.clone(), account_id.clone());
        let _held = &permit;
        async move {
            // A page the scan budget cut short may hold nothing; an empty chunk would end the
            // body (it is chunked encoding's terminator), so such pages are read past.
            let mut step = step;
            let page = loop {
                let page = match step {
                    Export::Done => return Ok(None),
                    Export::Ready(page) => page,
                    Export::After(after) => {
                        store.transactions_page(&account_id, &filter, &read(Some(after))).await.map_err(|e| {
                            tracing::warn!(account = %account_id, error = %e, "a transaction export stopped: the store failed");
                            std::io::Error::other(e.to_string())
                        })?
                    }
                };
                if !page.items.is_empty() {
                    break page;
                }
                step = page.next.map_or(Export::Done, Export::After);
            };
            let next = page.next.map_or(Export::Done, Export::After);
            let chunk = web::block(move || {
                let mut out = Vec::with_capacity(page.items.len() * 512);
                for tx in &page.items {
                    serde_json::to_writer(&mut out, &view(tx))?;
                    out.push(b'\n');
                }
                Ok::<_, serde_json::Error>(out)
            })
            .await
            .map_err(std::io::Error::other)?
            .map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>(Some((web::Bytes::from(chunk), next)))
        }
    });
    Ok(HttpResponse::Ok().content_type("application/x-ndjson").streaming(lines))
}

pub async fn get(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    path: web::Path<i32>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let tx = state.account_store.transaction(&account.id, id).await?;
    let tx = tx.ok_or_else(|| ApiError::NotFound(format!("no transaction {id}")))?;
    let mut body = view(&tx);
    body["events"] = json!(tx
        .events
        .iter()
        .map(|e| json!({"seq_no": e.seq_no, "event_type": e.event_type, "trigger_reason": e.trigger_reason,
            "timestamp": e.timestamp, "offline": e.offline, "received_at": e.received_at}))
        .collect::<Vec<_>>());
    Ok(HttpResponse::Ok().json(body))
}

/// `GET /transactions/{id}/meter-values`: a page of the transaction's readings in time order, from
/// the start, from a time (`from`), or from a cursor.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterValuesQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    from: Option<DateTime<Utc>>,
}

pub async fn meter_values(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    path: web::Path<i32>,
    q: web::Query<MeterValuesQuery>,
) -> Result<HttpResponse, ApiError> {
    let (id, q) = (path.into_inner(), q.into_inner());
    if q.from.is_some() && q.cursor.is_some() {
        return Err(ApiError::invalid(
            "invalid_query",
            "from starts a walk and cursor goes on with one: give one of them, not both",
        ));
    }
    let tx = state.account_store.transaction(&account.id, id).await?;
    let tx = tx.ok_or_else(|| ApiError::NotFound(format!("no transaction {id}")))?;
    let budget = state.limits.settings.list_scan_records;
    let mut page = paging::request(List::MeterValues, q.limit, q.cursor.as_deref(), budget, paging::parse_time_key)?;
    if let Some(from) = q.from {
        page.after = Some((from.timestamp_micros(), 0));
    }
    let page = state.account_store.meter_values_page(&account.id, &tx.station_id, tx.id, &page).await?;
    let view = |r: MeterRecord| {
        Some(json!({"connector_id": r.connector_id, "evse_id": r.evse_id, "timestamp": r.meter_value.timestamp,
            "sampled_value": r.meter_value.sampled_value}))
    };
    paging::respond(List::MeterValues, page, view, paging::time_key_text).await
}
