//! The holder's rights over the account's data: access and portability (`GET /account/export`) and
//! choices (`GET|PUT /account/consents`). Rectification and erasure are in `accounts`.

use super::accounts::account_view;
use super::transactions;
use super::{ApiError, SignedIn, Tenant};
use crate::ids::{AccountId, StationId};
use crate::model::{
    CommandRecord, Consent, Consents, DataKind, MeterRecord, Page, PageRequest, RetentionPeriods, SampledValue,
    Station, StationFilter, TransactionFilter, MAX_LIMIT, MAX_RETENTION_DAYS, MIN_RETENTION_DAYS,
};
use crate::ocpp::Version;
use crate::state::AppState;
use crate::store::{AccountStore, StoreError, StoreResult};
use actix_web::http::header::{self, ContentType};
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Names the format of the export document, so a later change of shape can be told apart.
const EXPORT_FORMAT: &str = "ocpp-css.account-export.v1";
/// The pieces the export document is handed to the response body in.
const CHUNK_BYTES: usize = 64 * 1024;
/// Pieces written ahead of what the client has taken: with a store page, all the node holds of an
/// export.
const CHUNKS_AHEAD: usize = 4;
/// Records of a page written on the worker the export runs on; more go to the blocking pool (that
/// worker also serves stations, and a page of a thousand records is a fair amount of writing).
const INLINE_RECORDS: usize = 64;

/// A meter reading as the export shows it.
#[derive(Serialize)]
struct ReadingView<'a> {
    station_id: &'a StationId,
    connector_id: u32,
    transaction_id: Option<i32>,
    timestamp: DateTime<Utc>,
    sampled_value: &'a [SampledValue],
}

fn write_reading(out: &mut Vec<u8>, r: &MeterRecord) -> serde_json::Result<()> {
    let view = ReadingView {
        station_id: &r.station_id,
        connector_id: r.connector_id,
        transaction_id: r.transaction_id,
        timestamp: r.meter_value.timestamp,
        sampled_value: &r.meter_value.sampled_value,
    };
    serde_json::to_writer(out, &view)
}

fn write_record<T: Serialize>(out: &mut Vec<u8>, record: &T) -> serde_json::Result<()> {
    serde_json::to_writer(out, record)
}

/// A command record, a password it carries masked as the API shows it.
fn write_command(out: &mut Vec<u8>, command: &CommandRecord) -> serde_json::Result<()> {
    let masked = Version::from_subprotocol(&command.protocol)
        .and_then(|v| crate::model::mask_password(v, &command.action, &command.payload));
    match masked {
        Some(payload) => serde_json::to_writer(out, &CommandRecord { payload, ..command.clone() }),
        None => serde_json::to_writer(out, command),
    }
}

fn station_view(s: &Station) -> Value {
    json!({
        "id": s.id,
        "security_profile": s.security_profile,
        "registration": s.registration,
        "created_at": s.created_at,
        "boot": s.boot,
        "connectors": s.connectors,
        "last_seen": s.last_seen,
        "protocol": s.protocol,
        "firmware_status": s.firmware_status,
        "diagnostics_status": s.diagnostics_status,
        "credentials": super::credentials::view(s),
    })
}

/// A store page as the export reads them: as many records as a list page holds at most.
fn request<K>(after: Option<K>, budget: usize) -> PageRequest<K> {
    PageRequest { after, limit: MAX_LIMIT, budget }
}

/// `GET /account/export`: everything held about the account, as one JSON document. Secrets are left
/// out: the password and station password hashes, and the token secrets (only their hashes are
/// stored).
///
/// The document is streamed: the small parts (the account, its consents, tokens and sign-ins) and
/// the first page of stations are read before the answer starts, so a store that fails then gets
/// its error status; the rest is read a store page at a time by a task that writes it into a short
/// queue of chunks the body takes from, as the client reads. A failure later ends the body without
/// the chunked terminator, which HTTP clients report. It counts against the tenant's exports at
/// once (`limits.exports_per_tenant`), like `GET /transactions/export`.
pub async fn export(state: web::Data<AppState>, signed_in: SignedIn) -> Result<HttpResponse, ApiError> {
    let account = signed_in.account;
    let place = transactions::export_place(&state, &account.id)?;
    let store = state.account_store.clone();
    let budget = state.limits.settings.list_scan_records;
    let id = &account.id;
    let tokens: Vec<Value> = store
        .tokens(id)
        .await?
        .iter()
        .map(|t| json!({"id": t.id, "created_at": t.created_at, "expires_at": t.expires_at, "last_used_at": t.last_used_at}))
        .collect();
    let mut webhooks = Vec::new();
    for hook in store.webhooks(id).await? {
        // Never the secret: the export is no place for a credential.
        webhooks.push(json!({
            "id": hook.id, "url": hook.url, "types": hook.types, "enabled": hook.enabled,
            "disabled_reason": hook.disabled_reason, "created_at": hook.created_at, "updated_at": hook.updated_at,
            "deliveries": store.webhook_deliveries(id, &hook.id).await?,
        }));
    }
    let mut profile = account_view(&account);
    profile["known_locations"] = json!(account.known_locations);
    let head = json!({
        "format": EXPORT_FORMAT,
        "exported_at": Utc::now(),
        "account": profile,
        "consents": store.consents(id).await?,
        // How long each kind of this data is kept.
        "retention": retention_view(&account.retention, &state.settings.retention.defaults()),
        "login_history": store.login_events(id).await?,
        "tokens": tokens,
        "webhooks": webhooks,
    });
    let stations = store.stations_page(id, &StationFilter::default(), &request(None, budget)).await?;

    let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
    // The place is given back once both the body and the task that writes it have ended.
    let place = Arc::new(place);
    let writer = Writer { store, account_id: account.id.clone(), budget, _place: place.clone() };
    tokio::spawn(writer.run(head, stations, Out { buf: Vec::with_capacity(2 * CHUNK_BYTES), tx }));
    let body = futures_util::stream::unfold(Some((rx, place)), |open| async move {
        let (mut rx, place) = open?;
        match rx.recv().await {
            Some(Part::Chunk(bytes)) => Some((Ok(bytes), Some((rx, place)))),
            Some(Part::End) => None,
            Some(Part::Failed(e)) => Some((Err(e), None)),
            // The writer ended without saying so (it panicked): the document is not whole.
            None => Some((Err(std::io::Error::other("the account export stopped before its end")), None)),
        }
    });
    Ok(HttpResponse::Ok()
        .content_type(ContentType::json())
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"ocpp-css-export-{}.json\"", account.slug),
        ))
        .streaming(body))
}

/// What the writing task hands the response body.
enum Part {
    /// The next piece of the document, never empty (an empty chunk would end the body: it is
    /// chunked encoding's terminator).
    Chunk(web::Bytes),
    /// The document is whole.
    End,
    /// The export failed: the body ends without its terminator.
    Failed(std::io::Error),
}

/// Why the writing task stopped before the end.
enum Stop {
    /// The client went away (the body was dropped): nothing is left to do.
    Gone,
    /// A read or a write failed.
    Failed(std::io::Error),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Failed(std::io::Error::other(e))
    }
}

impl From<serde_json::Error> for Stop {
    fn from(e: serde_json::Error) -> Self {
        Stop::Failed(std::io::Error::other(e))
    }
}

/// The document being written: the bytes not handed on yet, and the queue they go to.
struct Out {
    buf: Vec<u8>,
    tx: mpsc::Sender<Part>,
}

/// Whether an array being written has an item yet (the next one needs a comma before it).
#[derive(Default)]
struct Items {
    some: bool,
}

impl Out {
    fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// `"name":`
    fn key(&mut self, name: &str) -> Result<(), Stop> {
        serde_json::to_writer(&mut self.buf, name)?;
        self.raw(b":");
        Ok(())
    }

    /// The fields of `object`, each followed by a comma: the object it is written into goes on.
    fn fields(&mut self, object: Value) -> Result<(), Stop> {
        let Value::Object(fields) = object else {
            return Err(Stop::Failed(std::io::Error::other("an export part is not a JSON object")));
        };
        for (name, value) in &fields {
            self.key(name)?;
            serde_json::to_writer(&mut self.buf, value)?;
            self.raw(b",");
        }
        Ok(())
    }

    /// Starts the next item of an array.
    fn item(&mut self, items: &mut Items) {
        if items.some {
            self.raw(b",");
        }
        items.some = true;
    }

    /// Appends items written elsewhere (comma-separated, possibly none).
    fn items(&mut self, items: &mut Items, written: &[u8]) {
        if !written.is_empty() {
            self.item(items);
            self.raw(written);
        }
    }

    /// Hands on what fills whole chunks, waiting while the client has not taken the chunks before;
    /// stops once the client has gone.
    async fn pass(&mut self) -> Result<(), Stop> {
        if self.tx.is_closed() {
            return Err(Stop::Gone);
        }
        if self.buf.len() < CHUNK_BYTES {
            return Ok(());
        }
        let mut full = web::Bytes::from(std::mem::take(&mut self.buf));
        while full.len() >= CHUNK_BYTES {
            self.tx.send(Part::Chunk(full.split_to(CHUNK_BYTES))).await.map_err(|_| Stop::Gone)?;
        }
        self.buf.reserve(2 * CHUNK_BYTES);
        self.buf.extend_from_slice(&full);
        Ok(())
    }

    /// Hands on the rest, and that the document is whole.
    async fn finish(&mut self) -> Result<(), Stop> {
        if !self.buf.is_empty() {
            let rest = web::Bytes::from(std::mem::take(&mut self.buf));
            self.tx.send(Part::Chunk(rest)).await.map_err(|_| Stop::Gone)?;
        }
        self.tx.send(Part::End).await.map_err(|_| Stop::Gone)
    }
}

/// Writes `records` as array items, comma-separated, each with `write`: on the blocking pool when
/// there are more than [`INLINE_RECORDS`].
async fn encode<T: Send + 'static>(
    records: Vec<T>,
    write: fn(&mut Vec<u8>, &T) -> serde_json::Result<()>,
) -> Result<Vec<u8>, Stop> {
    let inline = records.len() <= INLINE_RECORDS;
    let encode = move || -> serde_json::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(records.len() * 256);
        for (i, record) in records.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write(&mut out, record)?;
        }
        Ok(out)
    };
    if inline {
        return Ok(encode()?);
    }
    Ok(web::block(encode).await.map_err(|e| Stop::Failed(std::io::Error::other(e)))??)
}

/// Writes every record of a paged list as array items, a page at a time: `read` reads the page
/// after a key (from the start without one). Pages a scan budget cut short, even empty ones, are
/// read past.
async fn each_page<T, K, R, Fut>(
    out: &mut Out,
    items: &mut Items,
    mut read: R,
    write: fn(&mut Vec<u8>, &T) -> serde_json::Result<()>,
) -> Result<(), Stop>
where
    T: Send + 'static,
    R: FnMut(Option<K>) -> Fut,
    Fut: std::future::Future<Output = StoreResult<Page<T, K>>>,
{
    let mut after = None;
    loop {
        let page = read(after.take()).await?;
        out.items(items, &encode(page.items, write).await?);
        out.pass().await?;
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(()),
        }
    }
}

/// The task that reads the account's records a page at a time and writes the document.
struct Writer {
    store: Arc<dyn AccountStore>,
    account_id: AccountId,
    /// Records a page read may look at (`limits.list_scan_records`).
    budget: usize,
    /// The tenant's export place, held until the writing ends too.
    _place: Arc<crate::limits::quota::Permit<AccountId>>,
}

impl Writer {
    async fn run(self, head: Value, stations: Page<Station, StationId>, mut out: Out) {
        let written = match self.write(head, stations, &mut out).await {
            Ok(()) => out.finish().await,
            Err(stop) => Err(stop),
        };
        match written {
            Ok(()) => {}
            Err(Stop::Gone) => {
                tracing::debug!(account = %self.account_id, "an account export stopped: the client went away");
            }
            Err(Stop::Failed(e)) => {
                tracing::warn!(account = %self.account_id, error = %e, "an account export stopped: it failed");
                // The body ends without its terminator; a client that went meanwhile misses nothing.
                let _ = out.tx.send(Part::Failed(e)).await;
            }
        }
    }

    /// The document: the head's fields, then each list, read and written a page at a time.
    async fn write(&self, head: Value, stations: Page<Station, StationId>, out: &mut Out) -> Result<(), Stop> {
        out.raw(b"{");
        out.fields(head)?;
        out.key("stations")?;
        out.raw(b"[");
        self.stations(stations, out).await?;
        out.raw(b"],");
        out.key("id_tags")?;
        out.raw(b"[");
        let (store, id, budget) = (&*self.store, &self.account_id, self.budget);
        each_page(
            out,
            &mut Items::default(),
            |after| async move { store.id_tags_page(id, &request(after, budget)).await },
            write_record,
        )
        .await?;
        out.raw(b"],");
        out.key("transactions")?;
        out.raw(b"[");
        self.transactions(out).await?;
        out.raw(b"],");
        // Readings a station sent outside any transaction, of deleted stations too.
        out.key("meter_values_without_transaction")?;
        out.raw(b"[");
        self.loose_readings(out).await?;
        out.raw(b"],");
        out.key("commands")?;
        out.raw(b"[");
        each_page(
            out,
            &mut Items::default(),
            |after| async move { store.commands_page(id, &request(after, budget)).await },
            write_command,
        )
        .await?;
        out.raw(b"]}");
        Ok(())
    }

    /// Each station with its device model (read whole: a station reports a bounded number of
    /// variables) and its events, a page at a time.
    async fn stations(&self, first: Page<Station, StationId>, out: &mut Out) -> Result<(), Stop> {
        let (store, id, budget) = (&*self.store, &self.account_id, self.budget);
        let (mut page, mut list) = (first, Items::default());
        loop {
            for station in &page.items {
                out.item(&mut list);
                out.raw(b"{");
                let mut view = station_view(station);
                view["variables"] = json!(store.variables(id, &station.id).await?);
                out.fields(view)?;
                out.key("events")?;
                out.raw(b"[");
                let station_id = &station.id;
                each_page(
                    out,
                    &mut Items::default(),
                    |after| async move { store.events_page(id, station_id, &request(after, budget)).await },
                    write_record,
                )
                .await?;
                out.raw(b"]}");
                out.pass().await?;
            }
            let Some(after) = page.next else { return Ok(()) };
            page = store.stations_page(id, &StationFilter::default(), &request(Some(after), budget)).await?;
        }
    }

    /// Every transaction, newest first, each with its meter readings in time order, a page at a time.
    async fn transactions(&self, out: &mut Out) -> Result<(), Stop> {
        let (store, id, budget) = (&*self.store, &self.account_id, self.budget);
        let (filter, mut list, mut after) = (TransactionFilter::default(), Items::default(), None);
        loop {
            let page = store.transactions_page(id, &filter, &request(after.take(), budget)).await?;
            for tx in &page.items {
                out.item(&mut list);
                out.raw(b"{");
                out.fields(transactions::view(tx))?;
                out.key("meter_values")?;
                out.raw(b"[");
                let (station_id, tx_id) = (&tx.station_id, tx.id);
                each_page(
                    out,
                    &mut Items::default(),
                    |after| async move { store.meter_values_page(id, station_id, tx_id, &request(after, budget)).await },
                    write_reading,
                )
                .await?;
                out.raw(b"]}");
                out.pass().await?;
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// The readings stations sent outside any transaction (kept under transaction 0), station by
    /// station, deleted stations too.
    async fn loose_readings(&self, out: &mut Out) -> Result<(), Stop> {
        let (store, id, budget) = (&*self.store, &self.account_id, self.budget);
        let (mut list, mut after) = (Items::default(), None);
        loop {
            let page = store.loose_reading_stations_page(id, &request(after.take(), budget)).await?;
            for station_id in &page.items {
                let read = |after| async move {
                    let mut page = store.meter_values_page(id, station_id, 0, &request(after, budget)).await?;
                    // A reading sent with transaction id 0 is kept there too; it is not one of these.
                    page.items.retain(|r| r.transaction_id.is_none());
                    Ok(page)
                };
                each_page(out, &mut list, read, write_reading).await?;
            }
            out.pass().await?;
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(()),
            }
        }
    }
}

/// A change of choices: each field given sets that choice; the others stay as they are.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentChange {
    personalized_content: Option<bool>,
    personalized_offers: Option<bool>,
    marketing_emails: Option<bool>,
    non_essential_cookies: Option<bool>,
}

pub async fn consents(state: web::Data<AppState>, Tenant(account): Tenant) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.account_store.consents(&account.id).await?))
}

pub async fn put_consents(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    body: web::Json<ConsentChange>,
) -> Result<HttpResponse, ApiError> {
    let change = body.into_inner();
    let mut consents: Consents = state.account_store.consents(&account.id).await?;
    let now = Utc::now();
    // The time of a choice is when it changed: setting a choice to what it already is keeps its time.
    let set = |consent: &mut Consent, granted: Option<bool>| {
        if let Some(granted) = granted.filter(|g| *g != consent.granted) {
            *consent = Consent { granted, updated_at: Some(now) };
        }
    };
    set(&mut consents.personalized_content, change.personalized_content);
    set(&mut consents.personalized_offers, change.personalized_offers);
    set(&mut consents.marketing_emails, change.marketing_emails);
    set(&mut consents.non_essential_cookies, change.non_essential_cookies);
    state.account_store.put_consents(&account.id, &consents).await?;
    Ok(HttpResponse::Ok().json(consents))
}

/// The periods that apply to the account's data, kind by kind: its own where it set one, else the
/// node's default (`null`: kept without a period).
fn retention_view(own: &RetentionPeriods, defaults: &RetentionPeriods) -> Value {
    let mut out = serde_json::Map::new();
    for kind in DataKind::ALL {
        out.insert(
            kind.as_str().to_string(),
            json!({
                "days": own.effective(kind, defaults),
                "default_days": defaults.get(kind),
                "own": own.get(kind).is_some(),
            }),
        );
    }
    Value::Object(out)
}

pub async fn retention(state: web::Data<AppState>, Tenant(account): Tenant) -> HttpResponse {
    HttpResponse::Ok().json(retention_view(&account.retention, &state.settings.retention.defaults()))
}

/// A field that may be absent (no change), `null` (back to the default) or a value: absent stays
/// `None`, the rest is `Some`.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A change of retention periods, in days: each field given sets that kind's period (`null`: back
/// to the node's default); the others stay as they are.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionChange {
    #[serde(default, deserialize_with = "present")]
    meter_values: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    station_events: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    login_history: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    finished_commands: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    finished_transactions: Option<Option<u32>>,
}

pub async fn put_retention(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    body: web::Json<RetentionChange>,
) -> Result<HttpResponse, ApiError> {
    let change = body.into_inner();
    let changes = [
        (DataKind::MeterValues, change.meter_values),
        (DataKind::StationEvents, change.station_events),
        (DataKind::LoginHistory, change.login_history),
        (DataKind::FinishedCommands, change.finished_commands),
        (DataKind::FinishedTransactions, change.finished_transactions),
    ];
    for (kind, days) in &changes {
        if let Some(Some(days)) = days {
            if !RetentionPeriods::allowed(*days) {
                return Err(ApiError::invalid(
                    "invalid_field",
                    format!(
                        "{}: a period is {MIN_RETENTION_DAYS} to {MAX_RETENTION_DAYS} days (null: the default)",
                        kind.as_str()
                    ),
                ));
            }
        }
    }
    let updated = state
        .account_store
        .update_account(&account.id, &|a| {
            for (kind, days) in &changes {
                if let Some(days) = days {
                    a.retention.set(*kind, *days);
                }
            }
        })
        .await?
        .ok_or_else(|| ApiError::NotFound("no such account".into()))?;
    tracing::info!(account = %account.id, retention = ?updated.retention, "retention periods changed");
    Ok(HttpResponse::Ok().json(retention_view(&updated.retention, &state.settings.retention.defaults())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(rx: &mut mpsc::Receiver<Part>) -> Vec<Option<usize>> {
        let mut seen = Vec::new();
        while let Ok(part) = rx.try_recv() {
            seen.push(match part {
                Part::Chunk(bytes) => Some(bytes.len()),
                Part::End => None,
                Part::Failed(e) => panic!("{e}"),
            });
        }
        seen
    }

    #[tokio::test]
    async fn the_document_goes_out_in_whole_chunks_then_the_rest_and_never_an_empty_one() {
        let (tx, mut rx) = mpsc::channel(CHUNKS_AHEAD);
        let mut out = Out { buf: Vec::new(), tx };
        out.raw(&[b' '; CHUNK_BYTES - 1]);
        assert!(out.pass().await.is_ok());
        assert_eq!(parts(&mut rx), [], "less than a chunk waits");
        out.raw(&[b' '; CHUNK_BYTES + 10]);
        assert!(out.pass().await.is_ok());
        assert_eq!(parts(&mut rx), [Some(CHUNK_BYTES), Some(CHUNK_BYTES)]);
        assert!(out.finish().await.is_ok());
        assert_eq!(parts(&mut rx), [Some(9), None], "the rest, then the end");

        let (tx, mut rx) = mpsc::channel(CHUNKS_AHEAD);
        let mut out = Out { buf: Vec::new(), tx };
        out.raw(&[b' '; CHUNK_BYTES]);
        assert!(out.pass().await.is_ok());
        assert!(out.finish().await.is_ok());
        assert_eq!(parts(&mut rx), [Some(CHUNK_BYTES), None], "no empty chunk before the end");
        drop(rx);
        let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
        let mut gone = Out { buf: Vec::new(), tx };
        drop(rx);
        assert!(matches!(gone.pass().await, Err(Stop::Gone)), "a client gone stops the writing");
    }

    #[tokio::test]
    async fn items_are_comma_separated_within_and_across_pages() {
        let (tx, _rx) = mpsc::channel(CHUNKS_AHEAD);
        let mut out = Out { buf: Vec::new(), tx };
        let mut items = Items::default();
        out.raw(b"[");
        out.items(&mut items, &encode(vec![1, 2], write_record).await.unwrap_or_default());
        out.items(&mut items, &encode(Vec::<i32>::new(), write_record).await.unwrap_or_default());
        out.items(&mut items, &encode((3..100).collect(), write_record).await.unwrap_or_default());
        out.raw(b"]");
        let list: Vec<i32> = serde_json::from_slice(&out.buf).expect("a JSON array");
        assert_eq!(list, (1..100).collect::<Vec<_>>());
    }
}
