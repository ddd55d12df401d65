//! The embedded store: one sled database in the configured data directory.
//!
//! Keys are the parts of a record's identity joined by a NUL byte (ids never contain one: the API and
//! the WebSocket endpoint refuse them), so a tenant's records share a prefix and list with one scan.

mod accounts;
mod export;
mod feed;
mod retention;
#[cfg(test)]
mod tests;

use super::group_commit::{CommitPolicy, GroupCommit};
use super::rules::{self, TransactionAt, TransactionRecords};
use super::{
    Cause, ErasureReport, EventOutcome, NewTransactionFn, SharedStore, Source, StationLookup, StationStore,
    StopOutcome, StoreError, StoreResult, TransactionUpdate,
};
use crate::ids::{AccountId, StationId};
use crate::model::{
    Account, CommandRecord, CommandStatus, DeviceVariable, EventDraft, IdTag, MeterRecord, NewTransaction, Page,
    PageBuilder, StartIdentity, Station, StationChange, StationEvent, Transaction, TransactionStop,
};
use async_trait::async_trait;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use std::path::Path;

pub(super) const SEP: u8 = 0;
const TX_SEQ_KEY: &[u8] = b"transaction_seq";
/// Present once the transactions stored before the indexes by station and by open were indexed.
const TX_INDEXED_KEY: &[u8] = b"transactions_indexed";
/// Set once the meter-values entries are each within one span of time.
const METER_SPLIT_KEY: &[u8] = b"meter_values_split";
/// Meta keys `erasing\0{account_id}` mark erasures begun and not finished.
const ERASING: &[u8] = b"erasing";
/// The value of a slug index entry that names no account: the slug of an erased account.
pub(super) const RESERVED_SLUG: &[u8] = b"";

/// The sled-backed store: on one node both the [`StationStore`] and the [`super::AccountStore`]; on a
/// cluster node the replica under its write-ahead log.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    accounts: sled::Tree,
    accounts_by_email: sled::Tree,
    accounts_by_slug: sled::Tree,
    tokens: sled::Tree,
    /// account id, token id → token hash: lists and revokes an account's tokens.
    account_tokens: sled::Tree,
    consents: sled::Tree,
    login_events: sled::Tree,
    stations: sled::Tree,
    id_tags: sled::Tree,
    transactions: sled::Tree,
    transaction_starts: sled::Tree,
    /// `{account}\0{station}\0{id}` for every transaction: a station's transactions by id.
    transactions_by_station: sled::Tree,
    /// `{account}\0{id}` for every transaction not stopped.
    open_transactions: sled::Tree,
    meter_values: sled::Tree,
    events: sled::Tree,
    commands: sled::Tree,
    command_queue: sled::Tree,
    transaction_refs: sled::Tree,
    device_model: sled::Tree,
    meta: sled::Tree,
    /// `{account}\0{id}` → the account's feed events, in id order.
    feed: sled::Tree,
    /// `{account}\0{origin}` → the last sequence applied from a cluster node's log.
    feed_origins: sled::Tree,
    /// `{account}` → the last id its feed handed out.
    feed_heads: sled::Tree,
    /// `{account}\0{webhook id}` → webhook.
    webhooks: sled::Tree,
    /// `{account}\0{webhook id}\0cursor|deliveries` → the webhook's delivery state.
    webhook_state: sled::Tree,
    /// Held while feed ids are taken and written, so they reach the tree in order.
    feed_order: std::sync::Arc<std::sync::Mutex<()>>,
    feed_signal: std::sync::Arc<super::FeedSignal>,
    commit: GroupCommit,
}

pub(super) fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(SEP);
        }
        k.extend_from_slice(p);
    }
    k
}

pub(super) fn prefix(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = key(parts);
    k.push(SEP);
    k
}

/// A failure of this node's own database (or of starting its committer): an answer, never
/// "unavailable". The error is kept as the source.
pub(crate) fn backend(e: impl Into<Source>) -> StoreError {
    StoreError::Backend(Cause::from_source("sled", e))
}

pub(crate) fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    Ok(serde_json::to_vec(value)?)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    Ok(serde_json::from_slice(bytes)?)
}

/// Indexes a transaction record being written, in the sled transaction that writes it: by its
/// station (which never changes), and among the open ones while it has not stopped.
fn index_transaction(
    by_station: &sled::transaction::TransactionalTree,
    open: &sled::transaction::TransactionalTree,
    tx: &Transaction,
) -> Result<(), sled::transaction::UnabortableTransactionError> {
    by_station.insert(SledStore::station_transaction_key(tx), &[])?;
    let k = SledStore::transaction_key(&tx.account_id, tx.id);
    if tx.stop.is_none() {
        open.insert(k, &[])?;
    } else {
        open.remove(k)?;
    }
    Ok(())
}

/// A transaction id kept in an index.
fn index_id(bytes: &[u8], what: &str) -> StoreResult<i32> {
    Ok(i32::from_be_bytes(bytes.try_into().map_err(|_| StoreError::backend(what))?))
}

pub(crate) fn get<T: DeserializeOwned>(tree: &sled::Tree, k: &[u8]) -> StoreResult<Option<T>> {
    tree.get(k).map_err(backend)?.map(|v| decode(&v)).transpose()
}

pub(super) fn scan<T: DeserializeOwned>(tree: &sled::Tree, p: &[u8]) -> StoreResult<Vec<T>> {
    tree.scan_prefix(p).map(|item| item.map_err(backend).and_then(|(_, v)| decode(&v))).collect()
}

/// Runs a read of many records on tokio's blocking pool: a list page may read thousands of records,
/// and the async worker it was asked on also serves stations, which must not wait behind it.
pub(super) async fn off_worker<T: Send + 'static>(
    read: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(read).await.map_err(|e| StoreError::backend(format!("a list read failed: {e}")))?
}

/// The first key after every key under the prefix `p`, which ends with SEP (0): the same prefix with
/// 1 there.
pub(super) fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut end = p.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// Reads a page of the entries of `tree` under the prefix `p` (which ends with the separator), in key
/// order or, for a newest-first list, reversed, starting after the key `p` + `after`, into `builder`
/// (made for the page asked). `each` makes an entry the page's item, its cursor and whether it
/// matches the filter; `None` passes over it.
pub(super) fn page_of<T, K: Clone>(
    tree: &sled::Tree,
    p: &[u8],
    after: Option<&[u8]>,
    reverse: bool,
    mut builder: PageBuilder<T, K>,
    mut each: impl FnMut(&[u8], sled::IVec) -> StoreResult<Option<(K, T, bool)>>,
) -> StoreResult<Page<T, K>> {
    use std::ops::Bound::{Excluded, Included};
    let end = prefix_end(p);
    let cursor = after.map(|a| [p, a].concat());
    let range = match (&cursor, reverse) {
        (None, _) => (Included(p.to_vec()), Excluded(end)),
        (Some(c), false) => (Excluded(c.clone()), Excluded(end)),
        (Some(c), true) => (Included(p.to_vec()), Excluded(c.clone())),
    };
    let entries = tree.range::<Vec<u8>, _>(range);
    let entries: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
        if reverse { Box::new(entries.rev()) } else { Box::new(entries) };
    for entry in entries {
        let (k, v) = entry.map_err(backend)?;
        let Some((cursor, item, matches)) = each(&k[p.len()..], v)? else { continue };
        if !builder.offer(cursor, item, matches) {
            break;
        }
    }
    Ok(builder.finish())
}

/// A time as a key part that sorts as the time does: the sign bit flipped, so that negative
/// (pre-1970) times still sort before positive ones.
pub(super) fn time_key(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

/// The time a [`time_key`] was made of.
pub(super) fn time_of_key(k: [u8; 8]) -> i64 {
    (u64::from_be_bytes(k) ^ (1 << 63)) as i64
}

/// The time of a key part that starts with a [`time_key`] (what follows a meter-values or events
/// prefix); `what` names the key in the error when it does not.
pub(super) fn leading_time(rest: &[u8], what: &str) -> StoreResult<i64> {
    rest.get(..8)
        .and_then(|t| <[u8; 8]>::try_from(t).ok())
        .map(time_of_key)
        .ok_or_else(|| StoreError::backend(format!("bad {what} key")))
}

/// The span of time one meter-values entry covers at most: its readings all fall in one such span
/// of the clock (from a multiple of it), so a page of a transaction's readings from a time on starts
/// reading at that span's first entry.
pub(super) const METER_SPAN_MS: i64 = 5 * 60 * 1000;

/// The start of the span of the clock `ms` falls in.
pub(super) fn meter_span(ms: i64) -> i64 {
    ms.div_euclid(METER_SPAN_MS) * METER_SPAN_MS
}

/// The entries that store `records`: one per station, transaction and span of time of the call (a
/// drained log hands over many calls at once, a 1.6 StopTransaction a whole session's readings). A
/// growing tree costs a leaf written per insert, so fewer, larger entries are the cheaper write. Each
/// is keyed by its earliest time and what it holds, so the same readings applied twice (a log
/// replayed after a crash) are stored once.
pub(super) fn meter_entries(account_id: &AccountId, records: &[MeterRecord]) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut groups: std::collections::BTreeMap<(&str, i32, i64), Vec<&MeterRecord>> = Default::default();
    for record in records {
        let span = meter_span(record.meter_value.timestamp.timestamp_millis());
        groups.entry((record.station_id.as_str(), record.transaction_id.unwrap_or(0), span)).or_default().push(record);
    }
    let mut out = Vec::with_capacity(groups.len());
    for ((station, tx, _), group) in groups {
        let value = encode(&group)?;
        let fingerprint = Sha256::digest(&value);
        let first = group.iter().map(|r| r.meter_value.timestamp.timestamp_millis()).min().unwrap_or(0);
        let k =
            key(&[account_id.as_bytes(), station.as_bytes(), &tx.to_be_bytes(), &time_key(first), &fingerprint[..8]]);
        out.push((k, value));
    }
    Ok(out)
}

/// What one meter-values entry holds: the readings of one call for one station and transaction, or
/// (stored before readings were grouped) one reading.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum StoredReadings {
    Many(Vec<MeterRecord>),
    One(MeterRecord),
}

/// The station and transaction a meter-values key names, from the part after the account's prefix:
/// `{station}\0{transaction, 4 bytes big-endian}\0…` (0 for readings outside a transaction).
pub(super) fn meter_key_parts(rest: &[u8]) -> StoreResult<(&[u8], i32)> {
    let bad = || StoreError::backend("bad meter-values key");
    let end = rest.iter().position(|b| *b == SEP).ok_or_else(bad)?;
    let tx = rest.get(end + 1..end + 5).and_then(|t| <[u8; 4]>::try_from(t).ok()).ok_or_else(bad)?;
    Ok((&rest[..end], i32::from_be_bytes(tx)))
}

/// The readings a meter-values entry holds.
pub(super) fn stored_readings(v: &[u8]) -> StoreResult<Vec<MeterRecord>> {
    Ok(match decode::<StoredReadings>(v)? {
        StoredReadings::Many(records) => records,
        StoredReadings::One(record) => vec![record],
    })
}

/// The readings under `p`, in the order of their station, transaction and time, each once (the same
/// reading may have come in two calls: a station resends what it got no answer for).
pub(super) fn readings(tree: &sled::Tree, p: &[u8]) -> StoreResult<Vec<MeterRecord>> {
    let mut out = Vec::new();
    for item in tree.scan_prefix(p) {
        let (_, v) = item.map_err(backend)?;
        out.extend(stored_readings(&v)?);
    }
    let mut keyed = out.into_iter().map(|r| encode(&r).map(|bytes| (bytes, r))).collect::<StoreResult<Vec<_>>>()?;
    keyed.sort_by(|(ab, a), (bb, b)| {
        (a.station_id.as_str(), a.transaction_id, a.meter_value.timestamp, a.connector_id, ab).cmp(&(
            b.station_id.as_str(),
            b.transaction_id,
            b.meter_value.timestamp,
            b.connector_id,
            bb,
        ))
    });
    keyed.dedup_by(|(a, _), (b, _)| a == b);
    Ok(keyed.into_iter().map(|(_, r)| r).collect())
}

/// Unwraps a sled transaction result whose abort value is a `StoreError`.
pub(super) fn transactional<T>(r: Result<T, TransactionError<StoreError>>) -> StoreResult<T> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => backend(e),
    })
}

pub(super) fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

/// Takes `count` ids from the transaction sequence inside a sled transaction; returns the first.
fn take_ids(
    meta: &sled::transaction::TransactionalTree,
    count: u32,
) -> Result<i32, ConflictableTransactionError<StoreError>> {
    let last = match meta.get(TX_SEQ_KEY)? {
        Some(v) => i32::from_be_bytes(v.as_ref().try_into().map_err(|_| abort(StoreError::backend("bad sequence")))?),
        None => 0,
    };
    let count = i32::try_from(count).map_err(|_| abort(StoreError::backend("too many ids asked for")))?;
    let end = last.checked_add(count).ok_or_else(|| abort(StoreError::backend("transaction ids exhausted")))?;
    meta.insert(TX_SEQ_KEY, &end.to_be_bytes())?;
    Ok(last + 1)
}

impl SledStore {
    /// Opens (or creates) the database in `dir`; [`StationStore::flush`] follows `policy`.
    pub fn open(dir: &Path, policy: CommitPolicy) -> StoreResult<Self> {
        // Written every 500 ms even when no one waits for a flush: on one node a station's own
        // record (boot, status, last seen) is written here without one (README, "Durable before
        // acknowledged").
        let db = sled::Config::new().path(dir).flush_every_ms(Some(500)).open().map_err(backend)?;
        let commit = GroupCommit::start(db.clone(), policy).map_err(backend)?;
        let tree = |name: &str| db.open_tree(name).map_err(backend);
        let store = Self {
            accounts: tree("accounts")?,
            accounts_by_email: tree("accounts_by_email")?,
            accounts_by_slug: tree("accounts_by_slug")?,
            tokens: tree("tokens")?,
            account_tokens: tree("account_tokens")?,
            consents: tree("consents")?,
            login_events: tree("login_events")?,
            stations: tree("stations")?,
            id_tags: tree("id_tags")?,
            transactions: tree("transactions")?,
            transaction_starts: tree("transaction_starts")?,
            transactions_by_station: tree("transactions_by_station")?,
            open_transactions: tree("open_transactions")?,
            meter_values: tree("meter_values")?,
            events: tree("events")?,
            commands: tree("commands")?,
            transaction_refs: tree("transaction_refs")?,
            device_model: tree("device_model")?,
            command_queue: tree("command_queue")?,
            meta: tree("meta")?,
            feed: tree("feed")?,
            feed_origins: tree("feed_origins")?,
            feed_heads: tree("feed_heads")?,
            webhooks: tree("webhooks")?,
            webhook_state: tree("webhook_state")?,
            feed_order: Default::default(),
            feed_signal: Default::default(),
            commit,
            db,
        };
        store.finish_interrupted_erasures()?;
        store.index_transactions()?;
        store.split_meter_entries()?;
        Ok(store)
    }

    /// Finishes erasures a crash interrupted: nothing of an erased account may outlive its erasure.
    fn finish_interrupted_erasures(&self) -> StoreResult<()> {
        for item in self.meta.scan_prefix(prefix(&[ERASING])) {
            let (k, _) = item.map_err(backend)?;
            let account_id = AccountId::from(String::from_utf8_lossy(&k[ERASING.len() + 1..]).to_string());
            tracing::warn!(account = %account_id, "finishing an interrupted account erasure");
            self.erase(&account_id)?;
        }
        self.db.flush().map_err(backend)?;
        Ok(())
    }

    /// Builds the transaction indexes of a database written before they existed, once: every
    /// transaction written since is indexed in the sled transaction that writes it.
    fn index_transactions(&self) -> StoreResult<()> {
        if self.meta.get(TX_INDEXED_KEY).map_err(backend)?.is_some() {
            return Ok(());
        }
        let mut n = 0u64;
        for item in self.transactions.iter() {
            let (_, v) = item.map_err(backend)?;
            let tx: Transaction = decode(&v)?;
            self.transactions_by_station.insert(Self::station_transaction_key(&tx), &[]).map_err(backend)?;
            if tx.stop.is_none() {
                self.open_transactions.insert(Self::transaction_key(&tx.account_id, tx.id), &[]).map_err(backend)?;
            }
            n += 1;
        }
        self.meta.insert(TX_INDEXED_KEY, &[]).map_err(backend)?;
        self.db.flush().map_err(backend)?;
        if n > 0 {
            tracing::info!(transactions = n, "indexed the stored transactions by station and by open");
        }
        Ok(())
    }

    /// Splits the meter-values entries of a database written before entries were bounded to one
    /// span of time ([`METER_SPAN_MS`]), once: a page of readings from a time on relies on it. Each
    /// entry is replaced by its split in one batch, so a crash leaves either.
    fn split_meter_entries(&self) -> StoreResult<()> {
        if self.meta.get(METER_SPLIT_KEY).map_err(backend)?.is_some() {
            return Ok(());
        }
        let mut split = 0u64;
        for item in self.meter_values.iter() {
            let (k, v) = item.map_err(backend)?;
            let StoredReadings::Many(records) = decode::<StoredReadings>(&v)? else { continue };
            let spans: std::collections::BTreeSet<i64> =
                records.iter().map(|r| meter_span(r.meter_value.timestamp.timestamp_millis())).collect();
            if spans.len() < 2 {
                continue;
            }
            let Some(account_id) = k.split(|b| *b == SEP).next() else { continue };
            let account_id = AccountId::from(String::from_utf8_lossy(account_id).to_string());
            let mut batch = sled::Batch::default();
            batch.remove(k);
            for (k, v) in meter_entries(&account_id, &records)? {
                batch.insert(k, v);
            }
            self.meter_values.apply_batch(batch).map_err(backend)?;
            split += 1;
        }
        self.meta.insert(METER_SPLIT_KEY, &[]).map_err(backend)?;
        self.db.flush().map_err(backend)?;
        if split > 0 {
            tracing::info!(entries = split, "split stored meter-value entries by span of time");
        }
        Ok(())
    }

    /// Flushes completed so far (tests check that acknowledgements wait for one).
    pub fn flushes(&self) -> u64 {
        self.commit.flushes()
    }

    /// Opens (or creates) a tree of this database beside the store's own, so what is kept there is
    /// made durable by the same [`StationStore::flush`]. The name must not be one the store uses.
    pub fn open_tree(&self, name: &str) -> StoreResult<sled::Tree> {
        self.db.open_tree(name).map_err(backend)
    }

    fn start_key(start: &StartIdentity) -> Vec<u8> {
        key(&[
            start.account_id.as_bytes(),
            start.station_id.as_bytes(),
            &start.connector_id.to_be_bytes(),
            start.start_timestamp.to_rfc3339().as_bytes(),
            &start.meter_start.to_be_bytes(),
        ])
    }

    fn reference_key(account_id: &AccountId, station_id: &StationId, station_transaction_id: &str) -> Vec<u8> {
        key(&[account_id.as_bytes(), station_id.as_bytes(), station_transaction_id.as_bytes()])
    }

    fn account_by_index(&self, index: &sled::Tree, k: &str) -> StoreResult<Option<Account>> {
        match index.get(k.as_bytes()).map_err(backend)? {
            Some(id) => get(&self.accounts, &id),
            None => Ok(None),
        }
    }

    /// Removes every record of the account (see [`super::AccountStore::erase_account`]). Idempotent, so it can be
    /// run again after a crash; the marker in `meta` is removed only once everything else is.
    pub(crate) fn erase(&self, account_id: &AccountId) -> StoreResult<ErasureReport> {
        let marker = key(&[ERASING, account_id.as_bytes()]);
        self.meta.insert(&marker, &[]).map_err(backend)?;
        let mut report = ErasureReport::default();
        let r = (&self.accounts, &self.accounts_by_email, &self.accounts_by_slug).transaction(|(a, e, s)| {
            let Some(bytes) = a.remove(account_id.as_bytes())? else { return Ok(()) };
            let account: Account = decode(&bytes).map_err(abort)?;
            if e.get(account.email.as_bytes())?.is_some_and(|id| id.as_ref() == account_id.as_bytes()) {
                e.remove(account.email.as_bytes())?;
            }
            s.insert(account.slug.as_bytes(), RESERVED_SLUG)?;
            Ok(())
        });
        transactional(r)?;
        let p = prefix(&[account_id.as_bytes()]);
        for item in self.account_tokens.scan_prefix(&p) {
            let (k, hash) = item.map_err(backend)?;
            self.tokens.remove(hash).map_err(backend)?;
            self.account_tokens.remove(k).map_err(backend)?;
            report.tokens += 1;
        }
        let clear = |tree: &sled::Tree| -> StoreResult<usize> {
            let mut n = 0;
            for item in tree.scan_prefix(&p) {
                let (k, _) = item.map_err(backend)?;
                tree.remove(k).map_err(backend)?;
                n += 1;
            }
            Ok(n)
        };
        report.stations = clear(&self.stations)?;
        report.id_tags = clear(&self.id_tags)?;
        report.transactions = clear(&self.transactions)?;
        clear(&self.transactions_by_station)?;
        clear(&self.open_transactions)?;
        clear(&self.transaction_starts)?;
        clear(&self.transaction_refs)?;
        report.device_variables = clear(&self.device_model)?;
        report.meter_values = readings(&self.meter_values, &p)?.len();
        clear(&self.meter_values)?;
        report.events = clear(&self.events)?;
        report.queued_commands = clear(&self.command_queue)?;
        report.commands = clear(&self.commands)?;
        report.login_events = clear(&self.login_events)?;
        report.consents = usize::from(self.consents.remove(account_id.as_bytes()).map_err(backend)?.is_some());
        report.feed_events = clear(&self.feed)?;
        clear(&self.feed_origins)?;
        self.feed_heads.remove(account_id.as_bytes()).map_err(backend)?;
        report.webhooks = clear(&self.webhooks)?;
        clear(&self.webhook_state)?;
        self.meta.remove(&marker).map_err(backend)?;
        Ok(report)
    }

    fn transaction_key(account_id: &AccountId, id: i32) -> Vec<u8> {
        key(&[account_id.as_bytes(), &id.to_be_bytes()])
    }

    fn station_transaction_key(tx: &Transaction) -> Vec<u8> {
        key(&[tx.account_id.as_bytes(), tx.station_id.as_bytes(), &tx.id.to_be_bytes()])
    }

    /// Applies `update` to the station record (see [`AccountStore::update_station`]), not yet durable.
    /// A change that leaves the record as it was writes nothing (a station reconnecting with the
    /// protocol it had, a boot that repeats the last one to the second): a reconnect storm then
    /// rewrites only what moved.
    fn update_station_now(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        update: impl Fn(&mut Station),
    ) -> StoreResult<Option<Station>> {
        let k = key(&[account_id.as_bytes(), station_id.as_bytes()]);
        loop {
            let Some(old) = self.stations.get(&k).map_err(backend)? else { return Ok(None) };
            let mut station: Station = decode(&old)?;
            update(&mut station);
            let bytes = encode(&station)?;
            if bytes.as_slice() == old.as_ref() {
                return Ok(Some(station));
            }
            // Another writer in between: apply the change again to what it wrote.
            if self.stations.compare_and_swap(&k, Some(old), Some(bytes)).map_err(backend)?.is_ok() {
                return Ok(Some(station));
            }
        }
    }

    /// Passes a write's result on once it is durable: the account store's writes are durable when
    /// they return (and share a flush with whatever else is waiting for one).
    async fn durable<T>(&self, written: StoreResult<T>) -> StoreResult<T> {
        let value = written?;
        self.commit.durable().await?;
        Ok(value)
    }
}

#[async_trait]
impl StationLookup for SledStore {
    async fn station(&self, account_id: &AccountId, station_id: &StationId) -> StoreResult<Option<Station>> {
        get(&self.stations, &key(&[account_id.as_bytes(), station_id.as_bytes()]))
    }

    async fn id_tag(&self, account_id: &AccountId, id_tag: &str) -> StoreResult<Option<IdTag>> {
        get(&self.id_tags, &key(&[account_id.as_bytes(), id_tag.as_bytes()]))
    }
}

#[async_trait]
impl StationStore for SledStore {
    async fn account_by_slug(&self, slug: &str) -> StoreResult<Option<Account>> {
        self.account_by_index(&self.accounts_by_slug, slug)
    }

    async fn change_station(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        change: &StationChange,
    ) -> StoreResult<Option<Station>> {
        self.update_station_now(account_id, station_id, |s| change.apply(s))
    }

    async fn start_transaction(&self, tx: &NewTransaction) -> StoreResult<(Transaction, bool)> {
        let start_key = Self::start_key(&tx.start_identity());
        let received_at = chrono::Utc::now();
        let trees = (
            &self.transactions,
            &self.transaction_starts,
            &self.meta,
            &self.transactions_by_station,
            &self.open_transactions,
        );
        let r = trees.transaction(|(txs, starts, meta, by_station, open)| {
            if let Some(id) = starts.get(&start_key)? {
                let id = i32::from_be_bytes(
                    id.as_ref().try_into().map_err(|_| abort(StoreError::backend("bad start index")))?,
                );
                let existing = txs.get(Self::transaction_key(&tx.account_id, id))?;
                let existing =
                    existing.ok_or_else(|| abort(StoreError::backend("start index names a missing transaction")))?;
                let existing: Transaction = decode(&existing).map_err(abort)?;
                return Ok((existing, false));
            }
            let next = take_ids(meta, 1)?;
            let record = Transaction::started(tx, next, received_at);
            txs.insert(Self::transaction_key(&tx.account_id, next), encode(&record).map_err(abort)?)?;
            index_transaction(by_station, open, &record)?;
            starts.insert(start_key.as_slice(), &next.to_be_bytes())?;
            Ok((record, true))
        });
        transactional(r)
    }

    async fn stop_transaction(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        transaction_id: i32,
        stop: &TransactionStop,
    ) -> StoreResult<StopOutcome> {
        rules::stop_transaction(self, account_id, station_id, transaction_id, stop).await
    }

    async fn apply_transaction_event(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        station_transaction_id: &str,
        seq_no: u64,
        create: NewTransactionFn<'_>,
        apply: TransactionUpdate<'_>,
    ) -> StoreResult<EventOutcome> {
        let at = TransactionAt::Reference { account_id, station_id, reference: station_transaction_id };
        rules::apply_transaction_event(self, at, seq_no, create, apply).await
    }

    async fn put_variables(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        variables: &[DeviceVariable],
    ) -> StoreResult<()> {
        let mut batch = sled::Batch::default();
        for v in variables {
            batch.insert(key(&[account_id.as_bytes(), station_id.as_bytes(), v.key().as_bytes()]), encode(v)?);
        }
        self.device_model.apply_batch(batch).map_err(backend)
    }

    async fn observe_variables(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        seen: &[DeviceVariable],
    ) -> StoreResult<()> {
        // One station's messages are handled one at a time, so nothing else writes its device model
        // between the read and the batch.
        let mut batch = std::collections::BTreeMap::new();
        for v in seen {
            let k = key(&[account_id.as_bytes(), station_id.as_bytes(), v.key().as_bytes()]);
            let known = match batch.remove(&k) {
                Some(earlier) => Some(earlier),
                None => get(&self.device_model, &k)?,
            };
            batch.insert(k, DeviceVariable::observed(known, v));
        }
        let mut writes = sled::Batch::default();
        for (k, v) in &batch {
            writes.insert(k.as_slice(), encode(v)?);
        }
        self.device_model.apply_batch(writes).map_err(backend)
    }

    async fn add_meter_values(&self, account_id: &AccountId, records: &[MeterRecord]) -> StoreResult<()> {
        for (k, value) in meter_entries(account_id, records)? {
            self.meter_values.insert(k, value).map_err(backend)?;
        }
        Ok(())
    }

    async fn add_event(&self, account_id: &AccountId, event: &StationEvent) -> StoreResult<()> {
        let value = encode(event)?;
        // Keyed by when it was received and what it is, so the same event applied twice (a cluster
        // node's write-ahead log may replay it) is stored once, and a station's events list in the
        // order they were received. Events stored before were keyed by a sequence number, which
        // sorts before any time key: they still list first.
        let fingerprint = Sha256::digest(&value);
        let time = time_key(event.received_at.timestamp_micros());
        let k = key(&[account_id.as_bytes(), event.station_id.as_bytes(), &time, &fingerprint[..8]]);
        self.events.insert(k, value).map_err(backend)?;
        Ok(())
    }

    async fn update_command(&self, command: &CommandRecord) -> StoreResult<()> {
        let record_key = key(&[command.account_id.as_bytes(), command.station_id.as_bytes(), command.id.as_bytes()]);
        self.commands.insert(record_key, encode(command)?).map_err(backend)?;
        if command.status != CommandStatus::Queued {
            let p = prefix(&[command.account_id.as_bytes(), command.station_id.as_bytes()]);
            for item in self.command_queue.scan_prefix(p) {
                let (k, id) = item.map_err(backend)?;
                if id.as_ref() == command.id.as_bytes() {
                    self.command_queue.remove(k).map_err(backend)?;
                }
            }
        }
        Ok(())
    }

    async fn append_feed(&self, account_id: &AccountId, events: &[EventDraft]) -> StoreResult<()> {
        self.append_feed_now(account_id, events)
    }

    async fn queued_commands(&self, account_id: &AccountId, station_id: &StationId) -> StoreResult<Vec<CommandRecord>> {
        let mut out = Vec::new();
        for item in self.command_queue.scan_prefix(prefix(&[account_id.as_bytes(), station_id.as_bytes()])) {
            let (_, id) = item.map_err(backend)?;
            let k = key(&[account_id.as_bytes(), station_id.as_bytes(), &id]);
            if let Some(record) = get::<CommandRecord>(&self.commands, &k)? {
                if record.status == CommandStatus::Queued {
                    out.push(record);
                }
            }
        }
        Ok(out)
    }

    /// One node: the account store is this store, and its erasure leaves nothing behind.
    async fn forget_account(&self, _account_id: &AccountId) -> StoreResult<()> {
        Ok(())
    }

    async fn flush(&self) -> StoreResult<()> {
        self.commit.durable().await
    }
}

#[async_trait]
impl SharedStore for SledStore {
    async fn transaction_by_start(&self, start: &StartIdentity) -> StoreResult<Option<Transaction>> {
        let Some(id) = self.transaction_starts.get(Self::start_key(start)).map_err(backend)? else {
            return Ok(None);
        };
        let id = index_id(&id, "bad start index")?;
        get(&self.transactions, &Self::transaction_key(&start.account_id, id))
    }

    async fn transaction_by_reference(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        station_transaction_id: &str,
    ) -> StoreResult<Option<Transaction>> {
        let k = Self::reference_key(account_id, station_id, station_transaction_id);
        let Some(id) = self.transaction_refs.get(k).map_err(backend)? else {
            return Ok(None);
        };
        let id = index_id(&id, "bad reference")?;
        get(&self.transactions, &Self::transaction_key(account_id, id))
    }

    async fn put_transaction(&self, tx: &Transaction) -> StoreResult<()> {
        let value = encode(tx)?;
        let id = tx.id.to_be_bytes();
        let start_key = tx.start_identity().map(|s| Self::start_key(&s));
        let ref_key =
            tx.station_transaction_id.as_deref().map(|r| Self::reference_key(&tx.account_id, &tx.station_id, r));
        let trees = (
            &self.transactions,
            &self.transaction_starts,
            &self.transaction_refs,
            &self.transactions_by_station,
            &self.open_transactions,
        );
        let r = trees.transaction(|(txs, starts, refs, by_station, open)| {
            txs.insert(Self::transaction_key(&tx.account_id, tx.id), value.as_slice())?;
            index_transaction(by_station, open, tx)?;
            if let Some(k) = &start_key {
                starts.insert(k.as_slice(), &id)?;
            }
            if let Some(k) = &ref_key {
                refs.insert(k.as_slice(), &id)?;
            }
            Ok(())
        });
        transactional(r)
    }

    async fn reserve_transaction_ids(&self, count: u32) -> StoreResult<std::ops::Range<i32>> {
        let first = transactional(self.meta.transaction(|meta| take_ids(meta, count)))?;
        Ok(first..first + count as i32)
    }

    async fn append_feed_from(
        &self,
        account_id: &AccountId,
        origin: &str,
        seq: u64,
        events: &[EventDraft],
    ) -> StoreResult<()> {
        self.append_feed_once(account_id, Some((origin, seq)), events)
    }
}

/// The one compare-and-set the transaction rules ([`rules`]) run over: a sled transaction that
/// writes the record only if its stored bytes are still those read.
#[async_trait]
impl TransactionRecords for SledStore {
    /// The record's stored bytes.
    type Version = sled::IVec;

    async fn load(&self, at: TransactionAt<'_>) -> StoreResult<Option<(Transaction, sled::IVec)>> {
        let (account_id, id) = match at {
            TransactionAt::Id { account_id, id } => (account_id, id),
            TransactionAt::Reference { account_id, station_id, reference } => {
                let k = Self::reference_key(account_id, station_id, reference);
                let Some(id) = self.transaction_refs.get(k).map_err(backend)? else { return Ok(None) };
                (account_id, index_id(&id, "bad reference")?)
            }
        };
        match self.transactions.get(Self::transaction_key(account_id, id)).map_err(backend)? {
            Some(bytes) => Ok(Some((decode(&bytes)?, bytes))),
            None if matches!(at, TransactionAt::Reference { .. }) => {
                Err(StoreError::backend("reference names a missing transaction"))
            }
            None => Ok(None),
        }
    }

    async fn new_id(&self) -> StoreResult<i32> {
        transactional(self.meta.transaction(|meta| take_ids(meta, 1)))
    }

    async fn swap(&self, old: Option<&sled::IVec>, new: &Transaction) -> StoreResult<bool> {
        let k = Self::transaction_key(&new.account_id, new.id);
        let value = encode(new)?;
        let reference =
            new.station_transaction_id.as_deref().map(|r| Self::reference_key(&new.account_id, &new.station_id, r));
        let trees =
            (&self.transactions, &self.transaction_refs, &self.transactions_by_station, &self.open_transactions);
        let r = trees.transaction(|(txs, refs, by_station, open)| {
            match old {
                Some(old) => {
                    if txs.get(&k)?.as_ref() != Some(old) {
                        return Ok(false);
                    }
                }
                None => {
                    if let Some(rk) = &reference {
                        if refs.get(rk)?.is_some() {
                            return Ok(false);
                        }
                        refs.insert(rk.as_slice(), &new.id.to_be_bytes())?;
                    }
                }
            }
            txs.insert(k.as_slice(), value.as_slice())?;
            index_transaction(by_station, open, new)?;
            Ok(true)
        });
        transactional(r)
    }
}
