//! The station store of a node: a store of record behind [`SharedStore`] (Redis on a cluster node,
//! the node's own main sled database on one node), fronted by a small sled database of the node's
//! own, which is its write-ahead log.
//!
//! Why one node has it too: a station's acknowledgement waits for a flush, and a sled flush writes
//! everything dirty in its database. Written straight into the store of record, each meter reading
//! dirtied a page of a tree that only grows, so every flush carried those pages; the log's trees
//! stay small (entries leave as they are applied), its flushes stay short, and the drainer writes
//! the store of record in batches, one flush per batch.
//!
//! What a connected station's messages change is written to sled first — a local replica of the
//! records the answers are computed from, and an entry in the write-ahead log — and acknowledged once
//! [`StationStore::flush`] made it durable. A drainer task applies the log to the shared store, in order,
//! flushes it there and only then removes what it applied. While the shared store is unreachable,
//! stations keep being answered from sled and the log grows; it drains when the shared store is back.
//! The API's records are not here: the [`crate::store::AccountStore`] is the store of record itself.
//! On one node a tenant's request first waits (briefly) until the log has caught up with it
//! ([`NodeLog::caught_up`]), so it shows what stations were acknowledged for before it; across a
//! cluster no such promise is made. Of the command queue, delivery's reads and updates go straight to the shared store.
//!
//! Trees this module keeps in the log's sled database, beside [`SledStore`]'s own (so one flush makes
//! them durable together; names from when only cluster nodes had a log):
//! - `cluster_wal`: big-endian `u64` sequence → `WalEntry` (JSON: when, and a `WalOp`: a transaction
//!   record to put, meter values, an event, device-model variables or a station change); replay
//!   order is write order.
//! - `cluster_wal_set_aside`: entries that cannot be applied (undecodable, or of an account the shared
//!   store does not have), kept for an operator rather than dropped.
//! - `cluster_stations`, `cluster_id_tags`: `account\0id` → the record as last seen or changed here.
//! - `cluster_lease`: the transaction-id ranges reserved from the shared sequence, not yet handed out.
//!
//! The local [`SledStore`] holds the replica of transactions (with their start and reference indexes):
//! [`SharedStore::put_transaction`] writes it, and its own id sequence is never used.
//!
//! Where the station path's answers come from:
//! - Station and id-tag reads: the shared store while it answers (the answer is cached), else the
//!   cache. A failed call marks the shared store down; reads then go straight to the cache until the
//!   drainer finds it back.
//! - Transactions: the replica while the log holds transaction records of the station (they are
//!   newer); otherwise the shared store's copy, which refreshes the replica (the station may have
//!   been on another node); the shared store also for what the replica lacks; the replica while the
//!   shared store is down. New ids come from the node's lease.
//! - Station changes: applied to the cached record and logged as data, so the drainer applies them
//!   to the shared store's record as it is then (API changes made through other nodes stay).
//! - On one node (`NodeLogSettings::networked` false) there are no copies: station, id-tag and
//!   account reads and station changes go straight to the store of record; only transactions, meter
//!   values, events and device variables go through the log.
//!
//! Limits:
//! - A station that moves to another node while transaction records of it wait in this node's log
//!   (the shared store unreachable from here, or this node down) is served there from the shared
//!   store's older copy: a retried StartTransaction can get a second id, a StopTransaction of a
//!   transaction started here can answer unknown (it is then kept as an event). When the log drains,
//!   a 1.6 transaction keeps the first stop recorded and 2.0.1 events applied on both nodes are merged
//!   (see `reconcile`), so no acknowledged event is overwritten; a duplicate start stays a duplicate.
//! - A 2.0.1 TransactionEvent for a transaction neither in the replica nor reachable creates it (the
//!   store cannot tell a Started event from a later one), so such a station gets a second record too.
//! - Entries on a node's disk reach the shared store only when that node runs again.
//! - A station's protocol is written at its connection only when the record read then names
//!   another; read from this node's cache while Redis is down, that record can be older than the
//!   shared store's (the station used another protocol through another node since), and the shared
//!   store then keeps the other protocol until the station's next connection while Redis answers.
//! - While the shared store is unreachable an id tag or station never looked up through this node is
//!   unknown here, and no new station can connect (accounts are not cached).
//! - An erasure through this node clears its log, caches and replica; other nodes' caches and replicas
//!   of the account stay on their disks, and what their logs still hold for it is set aside, not applied.
//! - An entry the shared store keeps refusing blocks the log behind it (`ocpp_wal_drain_errors_total`
//!   grows, `remote_up` stays false): nothing acknowledged is skipped.

mod cache;
mod lease;
mod reconcile;
#[cfg(test)]
mod tests;
mod wal;

use super::rules::{self, TransactionAt};
use super::sled::{backend, decode, encode, get};
use super::{
    Cause, EventOutcome, NewTransactionFn, SharedStore, SledStore, StationLookup, StationStore, StopOutcome,
    StoreError, StoreResult, TransactionUpdate,
};
use crate::ids::{AccountId, StationId};
use crate::metrics as m;
use crate::model::{
    Account, CommandRecord, DeviceVariable, EventDraft, IdTag, MeterRecord, NewTransaction, Station, StationChange,
    StationEvent, Transaction,
};
use async_trait::async_trait;
use cache::{unknown_while_down, NodeTransactions};
use chrono::Utc;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use wal::{drain_loop, set_aside_key, WalEntry, WalOp};

const WAL_TREE: &str = "cluster_wal";
const SET_ASIDE_TREE: &str = "cluster_wal_set_aside";
const STATIONS_TREE: &str = "cluster_stations";
const ID_TAGS_TREE: &str = "cluster_id_tags";
const ACCOUNTS_TREE: &str = "cluster_accounts_by_slug";
const LEASE_TREE: &str = "cluster_lease";
/// Station-path writes of one station are serialized by one of this many locks.
const LOCK_STRIPES: usize = 64;
/// Stations whose log entries the drainer applies side by side.
const DRAIN_CONCURRENCY: usize = 64;
/// The account the drainer asks for to find out whether the shared store answers: no account has an
/// empty id.
const PROBE_ACCOUNT_ID: &str = "";

/// How a [`NodeLog`] behaves.
#[derive(Debug, Clone)]
pub struct NodeLogSettings {
    /// Transaction ids reserved from the shared sequence at a time (`cluster.transaction_id_block`).
    pub transaction_id_block: u32,
    /// First wait before the drainer tries the shared store again after a failure; it doubles.
    pub retry_min: Duration,
    /// Longest wait between the drainer's attempts; also how often an idle drainer looks around.
    pub retry_max: Duration,
    /// Log entries the drainer reads (and applies) per round.
    pub drain_batch: usize,
    /// Whether the store of record is across the network (a cluster's Redis): then the node reports
    /// its reachability (`ocpp_redis_up`) and keeps copies of the stations, id tags and accounts it
    /// read from it, to serve stations while it cannot be reached. One node's store of record is
    /// its own sled database: neither is needed, and copies would cost memory per station.
    pub networked: bool,
    /// This node's name: where the feed events of its log come from
    /// ([`crate::store::SharedStore::append_feed_from`]).
    pub node_id: String,
}

impl Default for NodeLogSettings {
    fn default() -> Self {
        Self {
            transaction_id_block: 1000,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(2),
            drain_batch: 1024,
            networked: true,
            node_id: "node".to_string(),
        }
    }
}

impl From<&crate::config::ClusterSettings> for NodeLogSettings {
    fn from(c: &crate::config::ClusterSettings) -> Self {
        Self { transaction_id_block: c.transaction_id_block, ..Self::default() }
    }
}

impl NodeLogSettings {
    /// One node: the log in front of the node's own store of record.
    pub fn single(c: &crate::config::ClusterSettings) -> Self {
        Self { networked: false, ..Self::from(c) }
    }
}

impl NodeLogSettings {
    fn block(&self) -> u32 {
        self.transaction_id_block.max(1)
    }

    /// Below this many ids left, a new block is reserved ahead of need.
    fn refill_below(&self) -> i64 {
        i64::from((self.block() / 5).max(1))
    }
}

/// (account id, station id).
type StationKey = (AccountId, StationId);

fn key(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len() + 1);
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

fn account_prefix(account_id: &AccountId) -> Vec<u8> {
    let mut p = account_id.as_bytes().to_vec();
    p.push(0);
    p
}

/// A lock whose holder panicked still guards consistent data here (counters and a key sequence
/// updated in one step), so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What wakes the drainer; shared with it apart from the store, so that dropping the last
/// [`NodeLog`] lets the drainer end.
struct Signals {
    work: Notify,
    stop: Notify,
    stopped: AtomicBool,
}

struct Inner {
    local: SledStore,
    remote: Arc<dyn SharedStore>,
    settings: NodeLogSettings,
    wal: sled::Tree,
    set_aside: sled::Tree,
    stations: sled::Tree,
    id_tags: sled::Tree,
    /// slug → the account without its secrets, so stations can reconnect while Redis is down.
    accounts_by_slug: sled::Tree,
    lease: sled::Tree,
    /// The next log key. Held while an entry is inserted, so keys become visible in order and a batch
    /// read by the drainer is always a prefix of the log.
    next_key: Mutex<u64>,
    /// Entries in the log.
    pending: AtomicUsize,
    /// Entries appended since the log was opened, and how many of those the last flush that
    /// completed covers: a flush with nothing new appended since has nothing of this node's to make
    /// durable (on one node a station's own record goes straight to the store of record), and is
    /// answered without waiting for the committer.
    appended: AtomicU64,
    appended_durable: AtomicU64,
    /// Transaction entries in the log per station: for a station with none, this node has no
    /// transaction record newer than the shared store's.
    pending_by_station: Mutex<HashMap<StationKey, usize>>,
    /// Told each time an entry leaves the log or the shared store is found unreachable (see
    /// [`NodeLog::drain_until`]).
    progress: Notify,
    up: AtomicBool,
    /// Serializes handing out ids from the lease.
    lease_lock: Mutex<()>,
    /// One reservation from the shared sequence at a time.
    refill_lock: tokio::sync::Mutex<()>,
    /// Held by the drainer while it applies a batch, and by an erasure while it clears the log.
    drain_gate: tokio::sync::Mutex<()>,
    /// Serializes the station-path writes of a station (read the current record, change it, log it).
    station_locks: Vec<tokio::sync::Mutex<()>>,
    signals: Arc<Signals>,
    drainer: Mutex<Option<JoinHandle<()>>>,
    /// The last feed sequence handed out: microseconds since the epoch, or one more than the last
    /// when the clock has not moved on, so it grows across restarts (and a new log directory)
    /// while the clock does.
    feed_seq: AtomicU64,
}

impl Inner {
    fn next_feed_seq(&self) -> u64 {
        let now = Utc::now().timestamp_micros().max(0) as u64;
        let previous = self
            .feed_seq
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| Some(now.max(last + 1)))
            .unwrap_or_else(|last| last);
        now.max(previous + 1)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.signals.stopped.store(true, Ordering::Release);
        self.signals.stop.notify_one();
    }
}

/// The [`StationStore`] of a cluster node; see the module documentation. Cheap to clone: clones share the
/// log, the caches and the drainer.
#[derive(Clone)]
pub struct NodeLog {
    inner: Arc<Inner>,
}

impl NodeLog {
    /// Opens the cluster store over this node's sled store and the shared store, and starts the
    /// drainer on the current tokio runtime (log entries from before a restart are drained too).
    pub fn open(local: SledStore, remote: Arc<dyn SharedStore>, settings: NodeLogSettings) -> StoreResult<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            StoreError::Backend(Cause::from_source("the cluster store's drainer needs a tokio runtime", e))
        })?;
        let wal = local.open_tree(WAL_TREE)?;
        let set_aside = local.open_tree(SET_ASIDE_TREE)?;
        let mut by_station: HashMap<StationKey, usize> = HashMap::new();
        let mut pending = 0;
        for item in wal.iter() {
            let (k, v) = item.map_err(backend)?;
            match decode::<WalEntry>(&v) {
                Ok(entry) => {
                    if let Some(s) = entry.op.transaction_station() {
                        *by_station.entry(s).or_default() += 1;
                    }
                    pending += 1;
                }
                Err(e) => {
                    tracing::error!(key = ?k, error = %e, "undecodable write-ahead entry set aside");
                    metrics::counter!(m::WAL_SET_ASIDE, "reason" => "undecodable").increment(1);
                    set_aside.insert(set_aside_key(&k), v).map_err(backend)?;
                    wal.remove(&k).map_err(backend)?;
                }
            }
        }
        let next_key = match wal.last().map_err(backend)? {
            Some((k, _)) => {
                u64::from_be_bytes(k.as_ref().try_into().map_err(|_| StoreError::backend("bad write-ahead key"))?) + 1
            }
            None => 0,
        };
        let signals = Arc::new(Signals { work: Notify::new(), stop: Notify::new(), stopped: AtomicBool::new(false) });
        let inner = Arc::new(Inner {
            stations: local.open_tree(STATIONS_TREE)?,
            id_tags: local.open_tree(ID_TAGS_TREE)?,
            accounts_by_slug: local.open_tree(ACCOUNTS_TREE)?,
            lease: local.open_tree(LEASE_TREE)?,
            wal,
            set_aside,
            local,
            remote,
            next_key: Mutex::new(next_key),
            pending: AtomicUsize::new(pending),
            appended: AtomicU64::new(0),
            appended_durable: AtomicU64::new(0),
            pending_by_station: Mutex::new(by_station),
            progress: Notify::new(),
            up: AtomicBool::new(true),
            lease_lock: Mutex::new(()),
            refill_lock: tokio::sync::Mutex::new(()),
            drain_gate: tokio::sync::Mutex::new(()),
            station_locks: (0..LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            signals: signals.clone(),
            drainer: Mutex::new(None),
            feed_seq: AtomicU64::new(0),
            settings,
        });
        metrics::gauge!(m::WAL_PENDING).set(pending as f64);
        metrics::gauge!(m::WAL_OLDEST_AGE).set(0.0);
        if inner.settings.networked {
            metrics::gauge!(m::REDIS_UP).set(1.0);
        }
        // Counters exist from the start, at zero, so rates and alerts on them work before the first event.
        metrics::counter!(m::WAL_DRAINED).increment(0);
        metrics::counter!(m::WAL_DRAIN_ERRORS).increment(0);
        for reason in ["undecodable", "unknown_account"] {
            metrics::counter!(m::WAL_SET_ASIDE, "reason" => reason).increment(0);
        }
        if pending > 0 {
            tracing::info!(pending, "write-ahead entries from before the restart are waiting to be drained");
        }
        let handle = runtime.spawn(drain_loop(Arc::downgrade(&inner), signals));
        *lock(&inner.drainer) = Some(handle);
        Ok(Self { inner })
    }

    /// Whether the shared store counts as reachable: false from a failed call until the drainer
    /// reaches it again.
    pub fn remote_up(&self) -> bool {
        self.inner.up()
    }

    /// Entries in the write-ahead log, not yet applied to the shared store.
    pub fn pending(&self) -> usize {
        self.inner.pending.load(Ordering::Acquire)
    }

    /// Waits until the log is empty, the shared store is found unreachable, or `deadline` passes,
    /// whichever comes first; answers what is still in the log.
    pub async fn drain_until(&self, deadline: tokio::time::Instant) -> usize {
        loop {
            // Registered before the checks, so a change between them and the wait is not missed.
            let progress = self.inner.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            let pending = self.pending();
            if pending == 0 || !self.remote_up() {
                return pending;
            }
            if tokio::time::timeout_at(deadline, progress).await.is_err() {
                return self.pending();
            }
        }
    }

    /// Waits until every entry appended before the call has left the log (applied to the store of
    /// record, made durable there), the store of record is found unreachable, or `deadline` passes;
    /// answers whether it caught up. What a station was acknowledged for before the call is then
    /// what the store of record shows.
    pub async fn caught_up(&self, deadline: tokio::time::Instant) -> bool {
        if self.pending() == 0 {
            return true;
        }
        let target = *lock(&self.inner.next_key);
        loop {
            let progress = self.inner.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            let oldest = match self.inner.wal.first() {
                Ok(first) => first.map(|(k, _)| k.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(u64::MAX)),
                // This node's own database failed: nothing to wait for that would come.
                Err(_) => return false,
            };
            if oldest.is_none_or(|k| k >= target) {
                return true;
            }
            if !self.remote_up() || tokio::time::timeout_at(deadline, progress).await.is_err() {
                return false;
            }
        }
    }

    /// Stops the drainer and waits for it to end (what is in the log stays there, for the next open).
    pub async fn shutdown(&self) {
        self.inner.signals.stopped.store(true, Ordering::Release);
        self.inner.signals.stop.notify_one();
        let handle = lock(&self.inner.drainer).take();
        if let Some(handle) = handle {
            if let Err(e) = handle.await {
                tracing::error!(error = %e, "the write-ahead drainer ended abnormally");
            }
        }
    }
}

impl Inner {
    fn up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn mark_down(&self, error: &StoreError) {
        self.progress.notify_waiters();
        if self.up.swap(false, Ordering::AcqRel) {
            if self.settings.networked {
                metrics::gauge!(m::REDIS_UP).set(0.0);
            }
            tracing::warn!(
                error = %error,
                "shared store unreachable: stations are answered from this node, writes wait in the write-ahead log"
            );
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            if self.settings.networked {
                metrics::gauge!(m::REDIS_UP).set(1.0);
            }
            tracing::info!(pending = self.pending.load(Ordering::Acquire), "shared store reachable again");
        }
    }

    /// Passes a shared-store result on, noting a backend failure (a conflict is an answer).
    fn seen<T>(&self, r: StoreResult<T>) -> StoreResult<T> {
        match &r {
            Err(e @ (StoreError::Backend(_) | StoreError::Unavailable(_))) => self.mark_down(e),
            // An answer: reachable (reads of the caches go to the shared store again at once).
            _ => self.mark_up(),
        }
        r
    }

    /// Passes on the result of a write that went straight to the shared store, made durable there
    /// first: [`NodeLog::flush`] covers only this node's own writes.
    async fn written<T>(&self, r: StoreResult<T>) -> StoreResult<T> {
        let value = self.seen(r)?;
        self.seen(self.remote.flush().await)?;
        Ok(value)
    }

    fn station_has_pending(&self, account_id: &AccountId, station_id: &StationId) -> bool {
        lock(&self.pending_by_station).contains_key(&(account_id.clone(), station_id.clone()))
    }

    /// The shared store's copy of the station's transactions is current: it answers, and holds every
    /// transaction record this node wrote for the station.
    fn remote_current(&self, account_id: &AccountId, station_id: &StationId) -> bool {
        self.up() && !self.station_has_pending(account_id, station_id)
    }

    fn station_lock(&self, account_id: &AccountId, station_id: &StationId) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (account_id, station_id).hash(&mut h);
        &self.station_locks[(h.finish() % LOCK_STRIPES as u64) as usize]
    }
}

#[async_trait]
impl StationLookup for NodeLog {
    async fn station(&self, account_id: &AccountId, station_id: &StationId) -> StoreResult<Option<Station>> {
        let remote = self.inner.remote.station(account_id, station_id);
        self.inner.cached_read(&self.inner.stations, key(account_id, station_id), remote).await
    }

    async fn id_tag(&self, account_id: &AccountId, id_tag: &str) -> StoreResult<Option<IdTag>> {
        let remote = self.inner.remote.id_tag(account_id, id_tag);
        self.inner.cached_read(&self.inner.id_tags, key(account_id, id_tag), remote).await
    }
}

#[async_trait]
impl StationStore for NodeLog {
    /// From the shared store while it answers; otherwise this node's copy, without the password hash
    /// and known locations (a station connecting needs only the account's id), so stations can
    /// reconnect while Redis is down.
    async fn account_by_slug(&self, slug: &str) -> StoreResult<Option<Account>> {
        let inner = &self.inner;
        if !inner.settings.networked {
            return inner.remote.account_by_slug(slug).await;
        }
        if inner.up() {
            match inner.remote.account_by_slug(slug).await {
                Ok(found) => {
                    let kept = found.as_ref().map(|a| Account {
                        password_hash: String::new(),
                        known_locations: Vec::new(),
                        retention: Default::default(),
                        ..a.clone()
                    });
                    inner.keep_cached(inner.cache(&inner.accounts_by_slug, slug.as_bytes(), kept.as_ref())).await;
                    inner.mark_up();
                    return Ok(found);
                }
                Err(e) => inner.mark_down(&e),
            }
        }
        unknown_while_down(get(&inner.accounts_by_slug, slug.as_bytes())?)
    }

    /// Applied to the cached record (a BootNotification's to the shared store's, when it answers: the
    /// registration it is answered with may have been changed through another node) and logged as a
    /// change, so the drainer applies it to the shared store's record as it is then.
    async fn change_station(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        change: &StationChange,
    ) -> StoreResult<Option<Station>> {
        let inner = &self.inner;
        let _station = inner.station_lock(account_id, station_id).lock().await;
        if !inner.settings.networked {
            // The store of record is at hand, and a station's record changes rarely: the change is
            // made there at once (logged, it cost 3.4 KiB more memory per booted station, measured).
            return inner.remote.change_station(account_id, station_id, change).await;
        }
        let k = key(account_id, station_id);
        let fresh = matches!(change, StationChange::Booted(_));
        let mut base: Option<Station> = if fresh { None } else { get(&inner.stations, &k)? };
        if base.is_none() && inner.up() {
            match inner.remote.station(account_id, station_id).await {
                Ok(Some(s)) => base = Some(s),
                Ok(None) => {
                    inner.keep_cached(inner.cache::<Station>(&inner.stations, &k, None)).await;
                    return Ok(None);
                }
                Err(e) => inner.mark_down(&e),
            }
        }
        if base.is_none() && fresh {
            base = get(&inner.stations, &k)?;
        }
        let Some(mut station) = base else {
            return Err(StoreError::unavailable(format!(
                "station {station_id} is not cached on this node and the shared store is unreachable"
            )));
        };
        change.apply(&mut station);
        inner.stations.insert(&k, encode(&station)?).map_err(backend)?;
        inner.append(WalOp::StationChange {
            account_id: account_id.clone(),
            station_id: station_id.clone(),
            change: change.clone(),
        })?;
        Ok(Some(station))
    }

    /// A retry is found in the replica first (what this node recorded), then, when it answers, in
    /// the shared store (a retry of a start another node recorded). A new transaction gets an id
    /// from this node's lease.
    async fn start_transaction(&self, tx: &NewTransaction) -> StoreResult<(Transaction, bool)> {
        let inner = &self.inner;
        let _station = inner.station_lock(&tx.account_id, &tx.station_id).lock().await;
        let start = tx.start_identity();
        let mut existing = inner.local.transaction_by_start(&start).await?;
        if existing.is_none() && inner.up() {
            match inner.remote.transaction_by_start(&start).await {
                Ok(found) => existing = found,
                Err(e) => inner.mark_down(&e),
            }
        }
        let (record, created) = match existing {
            Some(record) => (record, false),
            None => (Transaction::started(tx, inner.allocate_id().await?, Utc::now()), true),
        };
        // Logged even when it was recorded before: a crash may have come between that replica write
        // and its log entry, and putting a record twice changes nothing.
        inner.record(&record).await?;
        Ok((record, created))
    }

    async fn stop_transaction(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        transaction_id: i32,
        stop: &crate::model::TransactionStop,
    ) -> StoreResult<StopOutcome> {
        let inner = &self.inner;
        let _station = inner.station_lock(account_id, station_id).lock().await;
        let records = NodeTransactions { inner, station_id };
        let outcome = rules::stop_transaction(&records, account_id, station_id, transaction_id, stop).await?;
        if let StopOutcome::AlreadyStopped(record) = &outcome {
            // Logged again for the same reason as a retried start.
            inner.record(record).await?;
        }
        Ok(outcome)
    }

    /// The transaction is taken as for a StopTransaction; one found in neither place is created with
    /// an id from this node's lease (so a 2.0.1 station can start transactions while the shared store
    /// is down).
    async fn apply_transaction_event(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        station_transaction_id: &str,
        seq_no: u64,
        create: NewTransactionFn<'_>,
        apply: TransactionUpdate<'_>,
    ) -> StoreResult<EventOutcome> {
        let inner = &self.inner;
        let _station = inner.station_lock(account_id, station_id).lock().await;
        let records = NodeTransactions { inner, station_id };
        let at = TransactionAt::Reference { account_id, station_id, reference: station_transaction_id };
        let outcome = rules::apply_transaction_event(&records, at, seq_no, create, apply).await?;
        if !outcome.applied && !outcome.created {
            // Logged again for the same reason as a retried start.
            inner.record(&outcome.transaction).await?;
        }
        Ok(outcome)
    }

    async fn add_meter_values(&self, account_id: &AccountId, records: &[MeterRecord]) -> StoreResult<()> {
        self.inner.append(WalOp::MeterValues { account_id: account_id.clone(), records: records.to_vec() })
    }

    async fn add_event(&self, account_id: &AccountId, event: &StationEvent) -> StoreResult<()> {
        self.inner.append(WalOp::Event { account_id: account_id.clone(), event: event.clone() })
    }

    async fn append_feed(&self, account_id: &AccountId, events: &[EventDraft]) -> StoreResult<()> {
        // One entry per station the events are about, in their order.
        let mut rest = events;
        while let Some(first) = rest.first() {
            let station = first.station_id.clone().unwrap_or_default();
            let n = rest.iter().take_while(|e| e.station_id.clone().unwrap_or_default() == station).count();
            let (these, after) = rest.split_at(n);
            self.inner.append(WalOp::Feed {
                account_id: account_id.clone(),
                station_id: station,
                seq: self.inner.next_feed_seq(),
                events: these.to_vec(),
            })?;
            rest = after;
        }
        Ok(())
    }

    async fn put_variables(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        variables: &[DeviceVariable],
    ) -> StoreResult<()> {
        self.inner.append(WalOp::Variables {
            account_id: account_id.clone(),
            station_id: station_id.clone(),
            variables: variables.to_vec(),
        })
    }

    async fn observe_variables(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        seen: &[DeviceVariable],
    ) -> StoreResult<()> {
        self.inner.append(WalOp::ObservedVariables {
            account_id: account_id.clone(),
            station_id: station_id.clone(),
            seen: seen.to_vec(),
        })
    }

    async fn queued_commands(&self, account_id: &AccountId, station_id: &StationId) -> StoreResult<Vec<CommandRecord>> {
        self.inner.seen(self.inner.remote.queued_commands(account_id, station_id).await)
    }

    async fn update_command(&self, command: &CommandRecord) -> StoreResult<()> {
        self.inner.written(self.inner.remote.update_command(command).await).await
    }

    /// Drops the account's log entries, cached records and replica, so no drain can bring erased
    /// records back (what other nodes' logs still hold of it is set aside when they drain: the shared
    /// store no longer knows the account).
    async fn forget_account(&self, account_id: &AccountId) -> StoreResult<()> {
        let dropped = self.inner.forget_account(account_id).await?;
        self.inner.local.erase(account_id)?;
        if dropped > 0 {
            tracing::info!(account = %account_id, dropped, "write-ahead entries of an erased account dropped");
        }
        Ok(())
    }

    /// Makes this node's writes durable (replica, caches, lease and log together): what a station
    /// is acknowledged after. The shared store gets them from the drainer. Every write a station is
    /// acknowledged for is a log entry (a transaction's replica record is written before its
    /// entry), so when no entry was appended since the last completed flush began there is nothing
    /// to wait for: a BootNotification or StatusNotification on one node, whose change went to the
    /// store of record directly, is answered without a trip to the committer.
    async fn flush(&self) -> StoreResult<()> {
        let inner = &self.inner;
        // Read before the flush is asked for: every entry counted here was inserted before it starts.
        let appended = inner.appended.load(Ordering::Acquire);
        if appended <= inner.appended_durable.load(Ordering::Acquire) {
            return Ok(());
        }
        inner.local.flush().await?;
        inner.appended_durable.fetch_max(appended, Ordering::AcqRel);
        Ok(())
    }
}
