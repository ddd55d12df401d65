//! The store of a cluster node: the shared store of record (Redis, behind [`Store`]) fronted by this
//! node's sled database, which is its write-ahead log.
//!
//! What a connected station's messages change is written to sled first — a local replica of the
//! records the answers are computed from, and an entry in the write-ahead log — and acknowledged once
//! [`Store::flush`] made it durable. A drainer task applies the log to the shared store, in order,
//! flushes it there and only then removes what it applied. While the shared store is unreachable,
//! stations keep being answered from sled and the log grows; it drains when the shared store is back.
//! Everything else (accounts, tokens, the API's reads and writes, the command queue) goes straight to
//! the shared store, and fails while it is down; those writes are flushed there before they return.
//!
//! Trees this module keeps in the node's sled database, beside [`SledStore`]'s own (so one flush makes
//! them durable together):
//! - `cluster_wal`: big-endian `u64` sequence → `WalEntry` (JSON: when, and a `WalOp`: a transaction
//!   record to put, meter values, an event, device-model variables or a station change); replay
//!   order is write order.
//! - `cluster_wal_set_aside`: entries that cannot be applied (undecodable, or of an account the shared
//!   store does not have), kept for an operator rather than dropped.
//! - `cluster_stations`, `cluster_id_tags`: `account\0id` → the record as last seen or changed here.
//! - `cluster_lease`: the transaction-id ranges reserved from the shared sequence, not yet handed out.
//!
//! The local [`SledStore`] holds the replica of transactions (with their start and reference indexes):
//! [`Store::put_transaction`] writes it, and its own id sequence is never used.
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
//! - While the shared store is unreachable an id tag or station never looked up through this node is
//!   unknown here, and no new station can connect (accounts are not cached).
//! - An erasure through this node clears its log, caches and replica; other nodes' caches and replicas
//!   of the account stay on their disks, and what their logs still hold for it is set aside, not applied.
//! - An entry the shared store keeps refusing blocks the log behind it (`ocpp_wal_drain_errors_total`
//!   grows, `remote_up` stays false): nothing acknowledged is skipped.

use super::sled_store::{backend, decode, encode, get};
use super::{
    AccountUpdate, ErasureReport, EventOutcome, NewTransactionFn, SledStore, StationUpdate, StopOutcome, Store,
    StoreError, StoreResult, TransactionUpdate,
};
use crate::metrics as m;
use crate::model::{
    Account, ApiToken, CommandRecord, Consents, DeviceVariable, IdTag, LoginEvent, MeterRecord, NewTransaction,
    StartIdentity, Station, StationChange, StationEvent, Transaction,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

const WAL_TREE: &str = "cluster_wal";
const SET_ASIDE_TREE: &str = "cluster_wal_set_aside";
const STATIONS_TREE: &str = "cluster_stations";
const ID_TAGS_TREE: &str = "cluster_id_tags";
const ACCOUNTS_TREE: &str = "cluster_accounts_by_slug";
const LEASE_TREE: &str = "cluster_lease";
const LEASE_KEY: &[u8] = b"ranges";
/// Station-path writes of one station are serialized by one of this many locks.
const LOCK_STRIPES: usize = 64;
/// Stations whose log entries the drainer applies side by side.
const DRAIN_CONCURRENCY: usize = 64;
/// The account the drainer asks for to find out whether the shared store answers: no account has an
/// empty id.
const PROBE_ACCOUNT_ID: &str = "";

/// How a [`ClusterStore`] behaves.
#[derive(Debug, Clone)]
pub struct ClusterStoreSettings {
    /// Transaction ids reserved from the shared sequence at a time (`cluster.transaction_id_block`).
    pub transaction_id_block: u32,
    /// First wait before the drainer tries the shared store again after a failure; it doubles.
    pub retry_min: Duration,
    /// Longest wait between the drainer's attempts; also how often an idle drainer looks around.
    pub retry_max: Duration,
    /// Log entries the drainer reads (and applies) per round.
    pub drain_batch: usize,
}

impl Default for ClusterStoreSettings {
    fn default() -> Self {
        Self {
            transaction_id_block: 1000,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(2),
            drain_batch: 1024,
        }
    }
}

impl From<&crate::config::ClusterSettings> for ClusterStoreSettings {
    fn from(c: &crate::config::ClusterSettings) -> Self {
        Self { transaction_id_block: c.transaction_id_block, ..Self::default() }
    }
}

impl ClusterStoreSettings {
    fn block(&self) -> u32 {
        self.transaction_id_block.max(1)
    }

    /// Below this many ids left, a new block is reserved ahead of need.
    fn refill_below(&self) -> i64 {
        i64::from((self.block() / 5).max(1))
    }
}

/// One write waiting to reach the shared store. Applying one twice changes nothing: the shared
/// store's writes are idempotent by content, and a transaction record is reconciled with the shared
/// copy before it is put (see [`reconcile`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WalOp {
    PutTransaction(Transaction),
    MeterValues {
        account_id: String,
        records: Vec<MeterRecord>,
    },
    Event {
        account_id: String,
        event: StationEvent,
    },
    Variables {
        account_id: String,
        station_id: String,
        variables: Vec<DeviceVariable>,
    },
    /// Values a NotifyEvent saw ([`Store::observe_variables`]).
    ObservedVariables {
        account_id: String,
        station_id: String,
        seen: Vec<DeviceVariable>,
    },
    StationChange {
        account_id: String,
        station_id: String,
        change: StationChange,
    },
}

impl WalOp {
    fn account_id(&self) -> &str {
        match self {
            WalOp::PutTransaction(tx) => &tx.account_id,
            WalOp::MeterValues { account_id, .. }
            | WalOp::Event { account_id, .. }
            | WalOp::Variables { account_id, .. }
            | WalOp::ObservedVariables { account_id, .. }
            | WalOp::StationChange { account_id, .. } => account_id,
        }
    }

    /// The station the entry is about: entries of one station are applied in log order, those of
    /// different stations side by side.
    fn station(&self) -> StationKey {
        match self {
            WalOp::PutTransaction(tx) => (tx.account_id.clone(), tx.station_id.clone()),
            WalOp::MeterValues { account_id, records } => {
                (account_id.clone(), records.first().map(|r| r.station_id.clone()).unwrap_or_default())
            }
            WalOp::Event { account_id, event } => (account_id.clone(), event.station_id.clone()),
            WalOp::Variables { account_id, station_id, .. }
            | WalOp::ObservedVariables { account_id, station_id, .. }
            | WalOp::StationChange { account_id, station_id, .. } => (account_id.clone(), station_id.clone()),
        }
    }

    /// The station whose transaction records the entry changes, if it changes one. Meter values,
    /// events, device models and station changes leave transaction records alone, so they do not make
    /// the shared store's copy of a transaction stale.
    fn transaction_station(&self) -> Option<StationKey> {
        match self {
            WalOp::PutTransaction(tx) => Some((tx.account_id.clone(), tx.station_id.clone())),
            _ => None,
        }
    }
}

/// What this node's copy answers while the shared store is unreachable. A record it does not hold
/// may exist all the same, so "none" would be a guess: the caller is told to try again later
/// (a station connecting gets 503, an Authorize or StartTransaction a CALLERROR it retries, rather
/// than a definite Invalid for a tag that may be valid).
fn unknown_while_down<T>(cached: Option<T>) -> StoreResult<Option<T>> {
    match cached {
        Some(found) => Ok(Some(found)),
        None => Err(StoreError::Unavailable(
            "not known on this node, and the shared store cannot be reached to ask".to_string(),
        )),
    }
}

/// One call's worth of consecutive meter-value entries of one station.
fn merged_readings(entries: &[(sled::IVec, WalOp)]) -> (String, Vec<MeterRecord>) {
    let mut account = String::new();
    let mut records = Vec::new();
    for (_, op) in entries {
        if let WalOp::MeterValues { account_id, records: r } = op {
            account.clone_from(account_id);
            records.extend(r.iter().cloned());
        }
    }
    (account, records)
}

/// A log entry: the write and when it was made (for the age of the oldest waiting entry).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WalEntry {
    at: DateTime<Utc>,
    op: WalOp,
}

/// Transaction ids reserved for this node: `[start, end)` ranges, handed out from the first.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Lease {
    ranges: Vec<(i32, i32)>,
}

impl Lease {
    fn remaining(&self) -> i64 {
        self.ranges.iter().map(|(s, e)| i64::from(*e) - i64::from(*s)).sum()
    }

    fn take(&mut self) -> Option<i32> {
        self.ranges.retain(|(s, e)| s < e);
        let first = self.ranges.first_mut()?;
        let id = first.0;
        first.0 += 1;
        Some(id)
    }
}

/// (account id, station id).
type StationKey = (String, String);

fn key(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len() + 1);
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

fn account_prefix(account_id: &str) -> Vec<u8> {
    let mut p = account_id.as_bytes().to_vec();
    p.push(0);
    p
}

/// The key of a set-aside entry: when it was set aside, then its log key (log keys start again from 0
/// when a node restarts with an empty log, so they alone could collide).
fn set_aside_key(wal_key: &[u8]) -> Vec<u8> {
    let now = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
    let mut k = now.to_be_bytes().to_vec();
    k.extend_from_slice(wal_key);
    k
}

/// A lock whose holder panicked still guards consistent data here (counters and a key sequence
/// updated in one step), so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a drain round stopped early.
enum DrainError {
    /// The shared store failed: it counts as down until a retry succeeds.
    Remote(StoreError),
    /// This node's sled failed.
    Local(StoreError),
}

/// What the drainer does after a round.
enum Round {
    /// More entries are waiting: go on at once.
    More,
    /// Nothing to do until new work (or the next look around).
    Idle,
    /// Something failed: wait, longer each time, and try again.
    Failed,
}

/// What wakes the drainer; shared with it apart from the store, so that dropping the last
/// [`ClusterStore`] lets the drainer end.
struct Signals {
    work: Notify,
    stop: Notify,
    stopped: AtomicBool,
}

struct Inner {
    local: SledStore,
    remote: Arc<dyn Store>,
    settings: ClusterStoreSettings,
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
    /// Transaction entries in the log per station: for a station with none, this node has no
    /// transaction record newer than the shared store's.
    pending_by_station: Mutex<HashMap<StationKey, usize>>,
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
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.signals.stopped.store(true, Ordering::Release);
        self.signals.stop.notify_one();
    }
}

/// The [`Store`] of a cluster node; see the module documentation. Cheap to clone: clones share the
/// log, the caches and the drainer.
#[derive(Clone)]
pub struct ClusterStore {
    inner: Arc<Inner>,
}

impl ClusterStore {
    /// Opens the cluster store over this node's sled store and the shared store, and starts the
    /// drainer on the current tokio runtime (log entries from before a restart are drained too).
    pub fn open(local: SledStore, remote: Arc<dyn Store>, settings: ClusterStoreSettings) -> StoreResult<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| backend(format!("the cluster store's drainer needs a tokio runtime: {e}")))?;
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
            Some((k, _)) => u64::from_be_bytes(k.as_ref().try_into().map_err(|_| backend("bad write-ahead key"))?) + 1,
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
            pending_by_station: Mutex::new(by_station),
            up: AtomicBool::new(true),
            lease_lock: Mutex::new(()),
            refill_lock: tokio::sync::Mutex::new(()),
            drain_gate: tokio::sync::Mutex::new(()),
            station_locks: (0..LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            signals: signals.clone(),
            drainer: Mutex::new(None),
            settings,
        });
        metrics::gauge!(m::WAL_PENDING).set(pending as f64);
        metrics::gauge!(m::WAL_OLDEST_AGE).set(0.0);
        metrics::gauge!(m::REDIS_UP).set(1.0);
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
        if self.up.swap(false, Ordering::AcqRel) {
            metrics::gauge!(m::REDIS_UP).set(0.0);
            tracing::warn!(
                error = %error,
                "shared store unreachable: stations are answered from this node, writes wait in the write-ahead log"
            );
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            metrics::gauge!(m::REDIS_UP).set(1.0);
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
    /// first: [`ClusterStore::flush`] covers only this node's own writes.
    async fn written<T>(&self, r: StoreResult<T>) -> StoreResult<T> {
        let value = self.seen(r)?;
        self.seen(self.remote.flush().await)?;
        Ok(value)
    }

    fn station_has_pending(&self, account_id: &str, station_id: &str) -> bool {
        lock(&self.pending_by_station).contains_key(&(account_id.to_string(), station_id.to_string()))
    }

    /// The shared store's copy of the station's transactions is current: it answers, and holds every
    /// transaction record this node wrote for the station.
    fn remote_current(&self, account_id: &str, station_id: &str) -> bool {
        self.up() && !self.station_has_pending(account_id, station_id)
    }

    fn station_lock(&self, account_id: &str, station_id: &str) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (account_id, station_id).hash(&mut h);
        &self.station_locks[(h.finish() % LOCK_STRIPES as u64) as usize]
    }

    fn count_in(&self, station: &Option<StationKey>) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if let Some(s) = station {
            *lock(&self.pending_by_station).entry(s.clone()).or_default() += 1;
        }
    }

    fn count_out(&self, station: &Option<StationKey>) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
        if let Some(s) = station {
            let mut map = lock(&self.pending_by_station);
            if let Some(n) = map.get_mut(s) {
                *n -= 1;
                if *n == 0 {
                    map.remove(s);
                }
            }
        }
    }

    /// Appends a write to the log; durable with the next flush.
    fn append(&self, op: WalOp) -> StoreResult<()> {
        let station = op.transaction_station();
        let bytes = encode(&WalEntry { at: Utc::now(), op })?;
        {
            let mut next = lock(&self.next_key);
            // Counted before the entry is visible, so the drainer never removes an uncounted entry.
            self.count_in(&station);
            if let Err(e) = self.wal.insert(next.to_be_bytes(), bytes) {
                self.count_out(&station);
                return Err(backend(e));
            }
            *next += 1;
        }
        metrics::gauge!(m::WAL_PENDING).set(self.pending.load(Ordering::Acquire) as f64);
        self.signals.work.notify_one();
        Ok(())
    }

    /// Removes an applied (or erased) entry; only the call that removes it uncounts it.
    fn remove_entry(&self, k: &[u8], op: &WalOp) -> StoreResult<()> {
        if self.wal.remove(k).map_err(backend)?.is_some() {
            self.count_out(&op.transaction_station());
            metrics::gauge!(m::WAL_PENDING).set(self.pending.load(Ordering::Acquire) as f64);
        }
        Ok(())
    }

    fn set_aside(&self, k: &[u8], v: &[u8], op: Option<&WalOp>, reason: &'static str) -> StoreResult<()> {
        self.set_aside.insert(set_aside_key(k), v).map_err(backend)?;
        metrics::counter!(m::WAL_SET_ASIDE, "reason" => reason).increment(1);
        match op {
            Some(op) => self.remove_entry(k, op),
            None => {
                // Undecodable, so never counted per station; only the total knows it.
                if self.wal.remove(k).map_err(backend)?.is_some() {
                    self.count_out(&None);
                }
                Ok(())
            }
        }
    }

    fn read_lease(&self) -> StoreResult<Lease> {
        Ok(get(&self.lease, LEASE_KEY)?.unwrap_or_default())
    }

    fn lease_remaining(&self) -> StoreResult<i64> {
        let _g = lock(&self.lease_lock);
        Ok(self.read_lease()?.remaining())
    }

    /// Takes an id from the lease, if it has one. The lease is written before the record that uses
    /// the id, so the flush that makes the record durable makes the id's consumption durable too.
    fn take_id(&self) -> StoreResult<Option<(i32, i64)>> {
        let _g = lock(&self.lease_lock);
        let mut lease = self.read_lease()?;
        let Some(id) = lease.take() else { return Ok(None) };
        self.lease.insert(LEASE_KEY, encode(&lease)?).map_err(backend)?;
        Ok(Some((id, lease.remaining())))
    }

    /// A transaction id no one else has or will get: from the lease, refilled from the shared sequence
    /// when it runs out (which fails while the shared store is down).
    async fn allocate_id(&self) -> StoreResult<i32> {
        for _ in 0..2 {
            if let Some((id, left)) = self.take_id()? {
                if left < self.settings.refill_below() {
                    self.signals.work.notify_one();
                }
                return Ok(id);
            }
            if !self.up() {
                break;
            }
            self.refill_lease().await?;
        }
        Err(backend("no transaction id left on this node and the shared store is unreachable"))
    }

    /// Reserves a block of ids from the shared sequence when the lease runs low.
    async fn refill_lease(&self) -> StoreResult<()> {
        let _g = self.refill_lock.lock().await;
        if self.lease_remaining()? >= self.settings.refill_below() {
            return Ok(());
        }
        let block = self.settings.block();
        let range = self.seen(self.remote.reserve_transaction_ids(block).await)?;
        // The reservation must outlive a crash of the shared store before any id of it is handed out.
        self.seen(self.remote.flush().await)?;
        let _g = lock(&self.lease_lock);
        let mut lease = self.read_lease()?;
        lease.ranges.push((range.start, range.end));
        self.lease.insert(LEASE_KEY, encode(&lease)?).map_err(backend)?;
        tracing::debug!(start = range.start, end = range.end, "transaction ids reserved");
        Ok(())
    }

    /// Writes a record the shared store answered with into a cache, or drops it when there is none.
    fn cache<T: Serialize>(&self, tree: &sled::Tree, k: &[u8], value: Option<&T>) {
        let r = match value {
            Some(v) => encode(v).and_then(|bytes| {
                let same = tree.get(k).map_err(backend)?.is_some_and(|old| old.as_ref() == bytes.as_slice());
                if !same {
                    tree.insert(k, bytes).map_err(backend)?;
                }
                Ok(())
            }),
            None => tree.remove(k).map(|_| ()).map_err(backend),
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not update this node's cache of the shared store");
        }
    }

    /// A station-path read: the shared store's answer (cached here) while it answers, else the cache.
    async fn cached_read<T, F>(&self, tree: &sled::Tree, k: Vec<u8>, remote: F) -> StoreResult<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: std::future::Future<Output = StoreResult<Option<T>>>,
    {
        if self.up() {
            match remote.await {
                Ok(found) => {
                    self.cache(tree, &k, found.as_ref());
                    return Ok(found);
                }
                Err(e) => self.mark_down(&e),
            }
        }
        unknown_while_down(get(tree, &k)?)
    }

    /// The transaction as it stands, `None` when there is none. The replica comes first while this
    /// node holds transaction writes of the station the shared store does not have yet (they are
    /// newer); otherwise the shared store's copy does (another node may have changed it), refreshing
    /// the replica; and the shared store is asked for what the replica lacks. `Err` when the record
    /// could be in neither reachable place.
    async fn current_transaction(
        &self,
        account_id: &str,
        station_id: &str,
        transaction_id: i32,
    ) -> StoreResult<Option<Transaction>> {
        let local_first = !self.remote_current(account_id, station_id);
        if local_first {
            if let Some(tx) = self.local.transaction(account_id, transaction_id).await? {
                return Ok(Some(tx));
            }
        }
        if self.up() {
            match self.remote.transaction(account_id, transaction_id).await {
                Ok(found) => return self.refreshed(found).await,
                Err(e) => self.mark_down(&e),
            }
        }
        if !local_first {
            if let Some(tx) = self.local.transaction(account_id, transaction_id).await? {
                return Ok(Some(tx));
            }
        }
        Err(backend(format!("transaction {transaction_id} is not on this node and the shared store is unreachable")))
    }

    /// Like [`Inner::current_transaction`], for a 2.0.1 transaction known by the station's reference;
    /// `None` also when the shared store cannot be asked (the event then creates it).
    async fn current_by_reference(
        &self,
        account_id: &str,
        station_id: &str,
        reference: &str,
    ) -> StoreResult<Option<Transaction>> {
        let local_first = !self.remote_current(account_id, station_id);
        if local_first {
            if let Some(tx) = self.local.transaction_by_reference(account_id, station_id, reference).await? {
                return Ok(Some(tx));
            }
        }
        if self.up() {
            match self.remote.transaction_by_reference(account_id, station_id, reference).await {
                Ok(found) => return self.refreshed(found).await,
                Err(e) => self.mark_down(&e),
            }
        }
        if local_first {
            return Ok(None);
        }
        self.local.transaction_by_reference(account_id, station_id, reference).await
    }

    /// Copies a record the shared store answered with into the replica.
    async fn refreshed(&self, found: Option<Transaction>) -> StoreResult<Option<Transaction>> {
        if let Some(tx) = &found {
            self.local.put_transaction(tx).await?;
        }
        Ok(found)
    }

    /// Writes a transaction record to the replica and the log.
    async fn record(&self, tx: &Transaction) -> StoreResult<()> {
        self.local.put_transaction(tx).await?;
        self.append(WalOp::PutTransaction(tx.clone()))
    }

    /// Drops everything this node holds of the account that could reach the shared store again: its
    /// log entries (and those set aside) and its cached stations and id tags.
    async fn forget_account(&self, account_id: &str) -> StoreResult<usize> {
        let _gate = self.drain_gate.lock().await;
        let mut dropped = 0;
        for item in self.wal.iter() {
            let (k, v) = item.map_err(backend)?;
            if let Ok(entry) = decode::<WalEntry>(&v) {
                if entry.op.account_id() == account_id {
                    self.remove_entry(&k, &entry.op)?;
                    dropped += 1;
                }
            }
        }
        for item in self.set_aside.iter() {
            let (k, v) = item.map_err(backend)?;
            if decode::<WalEntry>(&v).is_ok_and(|e| e.op.account_id() == account_id) {
                self.set_aside.remove(k).map_err(backend)?;
            }
        }
        for item in self.accounts_by_slug.iter() {
            let (k, v) = item.map_err(backend)?;
            if decode::<Account>(&v).map_or(true, |a| a.id == account_id) {
                self.accounts_by_slug.remove(k).map_err(backend)?;
            }
        }
        let p = account_prefix(account_id);
        for tree in [&self.stations, &self.id_tags] {
            for item in tree.scan_prefix(&p) {
                let (k, _) = item.map_err(backend)?;
                tree.remove(k).map_err(backend)?;
            }
        }
        Ok(dropped)
    }

    /// Applies one log entry to the shared store.
    async fn apply(&self, op: &WalOp) -> StoreResult<()> {
        let remote = &self.remote;
        match op {
            WalOp::PutTransaction(tx) => {
                let theirs = remote.transaction(&tx.account_id, tx.id).await?;
                if let Some(record) = reconcile(tx, theirs) {
                    remote.put_transaction(&record).await?;
                }
            }
            WalOp::MeterValues { account_id, records } => remote.add_meter_values(account_id, records).await?,
            WalOp::Event { account_id, event } => remote.add_event(account_id, event).await?,
            WalOp::Variables { account_id, station_id, variables } => {
                remote.put_variables(account_id, station_id, variables).await?
            }
            WalOp::ObservedVariables { account_id, station_id, seen } => {
                remote.observe_variables(account_id, station_id, seen).await?
            }
            WalOp::StationChange { account_id, station_id, change } => {
                if remote.change_station(account_id, station_id, change).await?.is_none() {
                    tracing::info!(
                        account = %account_id,
                        station = %station_id,
                        "station deleted before its change reached the shared store; change dropped"
                    );
                }
            }
        }
        Ok(())
    }

    /// Applies one station's entries in log order, meter readings that follow one another in one
    /// call; stops at the first failure. Returns the entries applied, and the failure.
    async fn apply_station(&self, entries: Vec<(sled::IVec, WalOp)>) -> (Vec<(sled::IVec, WalOp)>, Option<StoreError>) {
        let mut applied = Vec::with_capacity(entries.len());
        let mut readings: Vec<(sled::IVec, WalOp)> = Vec::new();
        let mut entries = entries.into_iter().peekable();
        while let Some((k, op)) = entries.next() {
            if let WalOp::MeterValues { .. } = &op {
                readings.push((k, op));
                if matches!(entries.peek(), Some((_, WalOp::MeterValues { .. }))) {
                    continue;
                }
                let (account_id, records) = merged_readings(&readings);
                if let Err(e) = self.remote.add_meter_values(&account_id, &records).await {
                    return (applied, Some(e));
                }
                applied.append(&mut readings);
                continue;
            }
            if let Err(e) = self.apply(&op).await {
                return (applied, Some(e));
            }
            applied.push((k, op));
        }
        (applied, None)
    }

    /// Applies the oldest entries of the log to the shared store: each station's in log order,
    /// different stations' side by side; returns how many, and whether more may be waiting.
    async fn drain_batch(&self) -> Result<(usize, bool), DrainError> {
        let _gate = self.drain_gate.lock().await;
        let batch = self
            .wal
            .iter()
            .take(self.settings.drain_batch)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| DrainError::Local(backend(e)))?;
        if batch.is_empty() {
            return Ok((0, false));
        }
        // Only entries read before this flush are applied: the flush makes them durable, with the
        // replica and lease writes made before each, so nothing reaches the shared store that a crash
        // of this node could undo (an id used there but handed out again here, say).
        self.local.flush().await.map_err(DrainError::Local)?;
        let mut accounts: HashMap<String, bool> = HashMap::new();
        let mut order: Vec<StationKey> = Vec::new();
        let mut by_station: HashMap<StationKey, Vec<(sled::IVec, WalOp)>> = HashMap::new();
        for (k, v) in &batch {
            let entry = match decode::<WalEntry>(v) {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::error!(key = ?k, error = %e, "undecodable write-ahead entry set aside");
                    self.set_aside(k, v, None, "undecodable").map_err(DrainError::Local)?;
                    continue;
                }
            };
            let account_id = entry.op.account_id();
            let known = match accounts.get(account_id) {
                Some(known) => *known,
                None => self.remote.account(account_id).await.map_err(DrainError::Remote)?.is_some(),
            };
            accounts.insert(account_id.to_string(), known);
            if !known {
                // Erased through another node (or never there): applying would bring erased records
                // back; dropping would lose what a station was told is kept.
                tracing::warn!(
                    account = %account_id,
                    "write-ahead entry of an account unknown to the shared store: set aside"
                );
                self.set_aside(k, v, Some(&entry.op), "unknown_account").map_err(DrainError::Local)?;
                metrics::counter!(m::WAL_DRAINED).increment(1);
                continue;
            }
            let station = entry.op.station();
            by_station
                .entry(station.clone())
                .or_insert_with(|| {
                    order.push(station);
                    Vec::new()
                })
                .push((k.clone(), entry.op));
        }
        let mut groups = Vec::with_capacity(order.len());
        for station in order {
            if let Some(entries) = by_station.remove(&station) {
                groups.push(entries);
            }
        }
        let results: Vec<_> = futures_util::stream::iter(groups.into_iter().map(|entries| self.apply_station(entries)))
            .buffer_unordered(DRAIN_CONCURRENCY)
            .collect()
            .await;
        let mut applied = Vec::new();
        let mut failure = None;
        for (done, error) in results {
            applied.extend(done);
            failure = failure.or(error);
        }
        let count = applied.len();
        if count > 0 {
            // Removed only once the shared store made them durable; until then a replay is harmless.
            match self.remote.flush().await {
                Ok(()) => {
                    for (k, op) in &applied {
                        self.remove_entry(k, op).map_err(DrainError::Local)?;
                    }
                    metrics::counter!(m::WAL_DRAINED).increment(count as u64);
                }
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        match failure {
            Some(e) => Err(DrainError::Remote(e)),
            None => Ok((count, batch.len() == self.settings.drain_batch)),
        }
    }

    /// One round of the drainer: drain, or find out whether the shared store is back, and keep the
    /// id lease filled.
    async fn round(&self) -> Round {
        let result = async {
            let mut more = false;
            if self.pending.load(Ordering::Acquire) > 0 {
                let (applied, m) = self.drain_batch().await?;
                more = m;
                if applied > 0 {
                    self.mark_up();
                }
            }
            if !self.up() {
                self.remote.account(PROBE_ACCOUNT_ID).await.map_err(DrainError::Remote)?;
                self.mark_up();
            }
            if self.lease_remaining().map_err(DrainError::Local)? < self.settings.refill_below() {
                self.refill_lease().await.map_err(DrainError::Remote)?;
            }
            Ok(more)
        }
        .await;
        self.report_oldest();
        match result {
            Ok(true) => Round::More,
            Ok(false) => Round::Idle,
            Err(DrainError::Remote(e)) => {
                metrics::counter!(m::WAL_DRAIN_ERRORS).increment(1);
                self.mark_down(&e);
                let pending = self.pending.load(Ordering::Acquire);
                tracing::debug!(error = %e, pending, "shared store refused a write-ahead round");
                Round::Failed
            }
            Err(DrainError::Local(e)) => {
                metrics::counter!(m::WAL_DRAIN_ERRORS).increment(1);
                tracing::error!(error = %e, "this node's store failed while draining the write-ahead log");
                Round::Failed
            }
        }
    }

    fn report_oldest(&self) {
        let age = match self.wal.first() {
            Ok(Some((_, v))) => decode::<WalEntry>(&v)
                .map(|e| (Utc::now() - e.at).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0),
            _ => 0.0,
        };
        metrics::gauge!(m::WAL_OLDEST_AGE).set(age);
    }
}

/// The drainer: rounds until the store is dropped or shut down. It holds the store only during a
/// round, so dropping the last [`ClusterStore`] ends it.
async fn drain_loop(store: Weak<Inner>, signals: Arc<Signals>) {
    let mut backoff: Option<Duration> = None;
    loop {
        if signals.stopped.load(Ordering::Acquire) {
            return;
        }
        let (round, settings) = {
            let Some(inner) = store.upgrade() else { return };
            (inner.round().await, inner.settings.clone())
        };
        match round {
            Round::More => {
                backoff = None;
                tokio::task::yield_now().await;
            }
            Round::Idle => {
                backoff = None;
                tokio::select! {
                    _ = signals.work.notified() => {}
                    _ = signals.stop.notified() => return,
                    _ = tokio::time::sleep(settings.retry_max) => {}
                }
            }
            Round::Failed => {
                let wait = backoff.map_or(settings.retry_min, |b| (b * 2).min(settings.retry_max));
                backoff = Some(wait);
                tokio::select! {
                    _ = signals.stop.notified() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// What to write to the shared store for a transaction record from this node's log, given the shared
/// store's copy; `None` when the shared copy already holds everything the record does. A record from
/// the log may be older than the shared copy (the log replayed after a crash, or the station served
/// by another node meanwhile), and must never undo what was recorded there:
/// - 1.6: a stopped transaction is final, the first stop recorded wins (as a retried StopTransaction
///   answers AlreadyStopped);
/// - 2.0.1: events are kept by seqNo; when each side has events the other lacks, the record gets all
///   of them and its energy is recomputed ([`Transaction::recompute_energy`], the rule the
///   TransactionEvent handler applies).
fn reconcile(ours: &Transaction, theirs: Option<Transaction>) -> Option<Transaction> {
    let Some(theirs) = theirs else { return Some(ours.clone()) };
    if &theirs == ours {
        return None;
    }
    if ours.station_transaction_id.is_none() {
        return if theirs.stop.is_some() { None } else { Some(ours.clone()) };
    }
    let theirs_seqs: HashSet<u64> = theirs.events.iter().map(|e| e.seq_no).collect();
    let ours_seqs: HashSet<u64> = ours.events.iter().map(|e| e.seq_no).collect();
    if ours_seqs.is_subset(&theirs_seqs) {
        return None;
    }
    let theirs_only: Vec<_> = theirs.events.iter().filter(|e| !ours_seqs.contains(&e.seq_no)).cloned().collect();
    if theirs_only.is_empty() {
        return Some(ours.clone());
    }
    tracing::warn!(
        account = %ours.account_id,
        station = %ours.station_id,
        transaction_id = ours.id,
        "transaction events applied on two nodes; merging them"
    );
    let latest = |t: &Transaction| t.events.iter().map(|e| e.seq_no).max();
    let mut merged = ours.clone();
    merged.events.extend(theirs_only);
    merged.events.sort_by_key(|e| e.seq_no);
    merged.start_timestamp = merged.start_timestamp.min(theirs.start_timestamp);
    if merged.stop.is_none() {
        merged.stop = theirs.stop.clone();
    }
    if merged.id_tag.is_none() {
        merged.id_tag = theirs.id_tag.clone();
        merged.id_tag_status = theirs.id_tag_status.clone();
    }
    if merged.evse_id.is_none() {
        merged.evse_id = theirs.evse_id;
    }
    if latest(&theirs) > latest(ours) && theirs.charging_state.is_some() {
        merged.charging_state = theirs.charging_state.clone();
    }
    merged.recompute_energy();
    Some(merged)
}

#[async_trait]
impl Store for ClusterStore {
    async fn create_account(&self, account: &Account) -> StoreResult<()> {
        self.inner.written(self.inner.remote.create_account(account).await).await
    }

    async fn account(&self, id: &str) -> StoreResult<Option<Account>> {
        self.inner.seen(self.inner.remote.account(id).await)
    }

    async fn account_by_email(&self, email: &str) -> StoreResult<Option<Account>> {
        self.inner.seen(self.inner.remote.account_by_email(email).await)
    }

    /// From the shared store while it answers; otherwise this node's copy, without the password hash
    /// and known locations (a station connecting needs only the account's id), so stations can
    /// reconnect while Redis is down.
    async fn account_by_slug(&self, slug: &str) -> StoreResult<Option<Account>> {
        let inner = &self.inner;
        if inner.up() {
            match inner.remote.account_by_slug(slug).await {
                Ok(found) => {
                    let kept = found.as_ref().map(|a| Account {
                        password_hash: String::new(),
                        known_locations: Vec::new(),
                        ..a.clone()
                    });
                    inner.cache(&inner.accounts_by_slug, slug.as_bytes(), kept.as_ref());
                    inner.mark_up();
                    return Ok(found);
                }
                Err(e) => inner.mark_down(&e),
            }
        }
        unknown_while_down(get(&inner.accounts_by_slug, slug.as_bytes())?)
    }

    async fn update_account(&self, id: &str, update: AccountUpdate<'_>) -> StoreResult<Option<Account>> {
        self.inner.written(self.inner.remote.update_account(id, update).await).await
    }

    /// Drops the account's log entries, cached records and replica first, so no drain can bring
    /// erased records back, then erases it from the shared store, then from this node's replica again
    /// (a station still connected may have written meanwhile). The report is the shared store's.
    async fn erase_account(&self, account_id: &str) -> StoreResult<ErasureReport> {
        let dropped = self.inner.forget_account(account_id).await?;
        self.inner.local.erase_account(account_id).await?;
        tracing::info!(account = %account_id, dropped, "write-ahead entries of an erased account dropped");
        let report = self.inner.written(self.inner.remote.erase_account(account_id).await).await?;
        self.inner.forget_account(account_id).await?;
        self.inner.local.erase_account(account_id).await?;
        Ok(report)
    }

    async fn put_token(&self, token_hash: &str, token: &ApiToken) -> StoreResult<()> {
        self.inner.written(self.inner.remote.put_token(token_hash, token).await).await
    }

    async fn token(&self, token_hash: &str) -> StoreResult<Option<ApiToken>> {
        self.inner.seen(self.inner.remote.token(token_hash).await)
    }

    async fn tokens(&self, account_id: &str) -> StoreResult<Vec<ApiToken>> {
        self.inner.seen(self.inner.remote.tokens(account_id).await)
    }

    async fn delete_token(&self, account_id: &str, token_id: &str) -> StoreResult<bool> {
        self.inner.written(self.inner.remote.delete_token(account_id, token_id).await).await
    }

    async fn delete_tokens_except(&self, account_id: &str, keep: Option<&str>) -> StoreResult<usize> {
        self.inner.written(self.inner.remote.delete_tokens_except(account_id, keep).await).await
    }

    async fn consents(&self, account_id: &str) -> StoreResult<Consents> {
        self.inner.seen(self.inner.remote.consents(account_id).await)
    }

    async fn put_consents(&self, account_id: &str, consents: &Consents) -> StoreResult<()> {
        self.inner.written(self.inner.remote.put_consents(account_id, consents).await).await
    }

    async fn add_login_event(&self, account_id: &str, event: &LoginEvent, keep: usize) -> StoreResult<()> {
        self.inner.written(self.inner.remote.add_login_event(account_id, event, keep).await).await
    }

    async fn login_events(&self, account_id: &str) -> StoreResult<Vec<LoginEvent>> {
        self.inner.seen(self.inner.remote.login_events(account_id).await)
    }

    async fn create_station(&self, station: &Station) -> StoreResult<()> {
        self.inner.written(self.inner.remote.create_station(station).await).await?;
        self.inner.cache(&self.inner.stations, &key(&station.account_id, &station.id), Some(station));
        Ok(())
    }

    async fn station(&self, account_id: &str, station_id: &str) -> StoreResult<Option<Station>> {
        let remote = self.inner.remote.station(account_id, station_id);
        self.inner.cached_read(&self.inner.stations, key(account_id, station_id), remote).await
    }

    async fn stations(&self, account_id: &str) -> StoreResult<Vec<Station>> {
        self.inner.seen(self.inner.remote.stations(account_id).await)
    }

    async fn station_count(&self, account_id: &str) -> StoreResult<usize> {
        self.inner.seen(self.inner.remote.station_count(account_id).await)
    }

    async fn update_station(
        &self,
        account_id: &str,
        station_id: &str,
        update: StationUpdate<'_>,
    ) -> StoreResult<Option<Station>> {
        let updated =
            self.inner.written(self.inner.remote.update_station(account_id, station_id, update).await).await?;
        self.inner.cache(&self.inner.stations, &key(account_id, station_id), updated.as_ref());
        Ok(updated)
    }

    /// Applied to the cached record (a BootNotification's to the shared store's, when it answers: the
    /// registration it is answered with may have been changed through another node) and logged as a
    /// change, so the drainer applies it to the shared store's record as it is then.
    async fn change_station(
        &self,
        account_id: &str,
        station_id: &str,
        change: &StationChange,
    ) -> StoreResult<Option<Station>> {
        let inner = &self.inner;
        let _station = inner.station_lock(account_id, station_id).lock().await;
        let k = key(account_id, station_id);
        let fresh = matches!(change, StationChange::Booted(_));
        let mut base: Option<Station> = if fresh { None } else { get(&inner.stations, &k)? };
        if base.is_none() && inner.up() {
            match inner.remote.station(account_id, station_id).await {
                Ok(Some(s)) => base = Some(s),
                Ok(None) => {
                    inner.cache::<Station>(&inner.stations, &k, None);
                    return Ok(None);
                }
                Err(e) => inner.mark_down(&e),
            }
        }
        if base.is_none() && fresh {
            base = get(&inner.stations, &k)?;
        }
        let Some(mut station) = base else {
            return Err(backend(format!(
                "station {station_id} is not cached on this node and the shared store is unreachable"
            )));
        };
        change.apply(&mut station);
        inner.stations.insert(&k, encode(&station)?).map_err(backend)?;
        inner.append(WalOp::StationChange {
            account_id: account_id.to_string(),
            station_id: station_id.to_string(),
            change: change.clone(),
        })?;
        Ok(Some(station))
    }

    async fn delete_station(&self, account_id: &str, station_id: &str) -> StoreResult<bool> {
        let deleted = self.inner.written(self.inner.remote.delete_station(account_id, station_id).await).await?;
        self.inner.cache::<Station>(&self.inner.stations, &key(account_id, station_id), None);
        Ok(deleted)
    }

    async fn put_id_tag(&self, account_id: &str, tag: &IdTag) -> StoreResult<bool> {
        let created = self.inner.written(self.inner.remote.put_id_tag(account_id, tag).await).await?;
        self.inner.cache(&self.inner.id_tags, &key(account_id, &tag.id_tag), Some(tag));
        Ok(created)
    }

    async fn id_tag(&self, account_id: &str, id_tag: &str) -> StoreResult<Option<IdTag>> {
        let remote = self.inner.remote.id_tag(account_id, id_tag);
        self.inner.cached_read(&self.inner.id_tags, key(account_id, id_tag), remote).await
    }

    async fn id_tags(&self, account_id: &str) -> StoreResult<Vec<IdTag>> {
        self.inner.seen(self.inner.remote.id_tags(account_id).await)
    }

    async fn delete_id_tag(&self, account_id: &str, id_tag: &str) -> StoreResult<bool> {
        let deleted = self.inner.written(self.inner.remote.delete_id_tag(account_id, id_tag).await).await?;
        self.inner.cache::<IdTag>(&self.inner.id_tags, &key(account_id, id_tag), None);
        Ok(deleted)
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
        account_id: &str,
        station_id: &str,
        transaction_id: i32,
        stop: &crate::model::TransactionStop,
    ) -> StoreResult<StopOutcome> {
        let inner = &self.inner;
        let _station = inner.station_lock(account_id, station_id).lock().await;
        let Some(mut record) = inner.current_transaction(account_id, station_id, transaction_id).await? else {
            return Ok(StopOutcome::Unknown);
        };
        if record.station_id != station_id {
            return Ok(StopOutcome::Unknown);
        }
        if record.stop.is_some() {
            // Logged again for the same reason as a retried start.
            inner.record(&record).await?;
            return Ok(StopOutcome::AlreadyStopped(record));
        }
        record.stop = Some(stop.clone());
        inner.record(&record).await?;
        Ok(StopOutcome::Stopped(record))
    }

    /// The transaction is taken as for a StopTransaction; one found in neither place is created with
    /// an id from this node's lease (so a 2.0.1 station can start transactions while the shared store
    /// is down).
    async fn apply_transaction_event(
        &self,
        account_id: &str,
        station_id: &str,
        station_transaction_id: &str,
        seq_no: u64,
        create: NewTransactionFn<'_>,
        apply: TransactionUpdate<'_>,
    ) -> StoreResult<EventOutcome> {
        let inner = &self.inner;
        let _station = inner.station_lock(account_id, station_id).lock().await;
        let (mut record, created) =
            match inner.current_by_reference(account_id, station_id, station_transaction_id).await? {
                Some(record) => (record, false),
                None => (create(inner.allocate_id().await?), true),
            };
        if record.events.iter().any(|e| e.seq_no == seq_no) {
            // Logged again for the same reason as a retried start.
            inner.record(&record).await?;
            return Ok(EventOutcome { transaction: record, applied: false, created });
        }
        apply(&mut record);
        inner.record(&record).await?;
        Ok(EventOutcome { transaction: record, applied: true, created })
    }

    async fn transaction(&self, account_id: &str, transaction_id: i32) -> StoreResult<Option<Transaction>> {
        self.inner.seen(self.inner.remote.transaction(account_id, transaction_id).await)
    }

    async fn transaction_by_start(&self, start: &StartIdentity) -> StoreResult<Option<Transaction>> {
        self.inner.seen(self.inner.remote.transaction_by_start(start).await)
    }

    async fn transaction_by_reference(
        &self,
        account_id: &str,
        station_id: &str,
        station_transaction_id: &str,
    ) -> StoreResult<Option<Transaction>> {
        let r = self.inner.remote.transaction_by_reference(account_id, station_id, station_transaction_id).await;
        self.inner.seen(r)
    }

    async fn put_transaction(&self, tx: &Transaction) -> StoreResult<()> {
        self.inner.written(self.inner.remote.put_transaction(tx).await).await
    }

    async fn reserve_transaction_ids(&self, count: u32) -> StoreResult<std::ops::Range<i32>> {
        self.inner.written(self.inner.remote.reserve_transaction_ids(count).await).await
    }

    async fn transactions(&self, account_id: &str, station_id: Option<&str>) -> StoreResult<Vec<Transaction>> {
        self.inner.seen(self.inner.remote.transactions(account_id, station_id).await)
    }

    async fn add_meter_values(&self, account_id: &str, records: &[MeterRecord]) -> StoreResult<()> {
        self.inner.append(WalOp::MeterValues { account_id: account_id.to_string(), records: records.to_vec() })
    }

    async fn transaction_meter_values(
        &self,
        account_id: &str,
        station_id: &str,
        transaction_id: i32,
    ) -> StoreResult<Vec<MeterRecord>> {
        self.inner.seen(self.inner.remote.transaction_meter_values(account_id, station_id, transaction_id).await)
    }

    async fn account_meter_values(&self, account_id: &str) -> StoreResult<Vec<MeterRecord>> {
        self.inner.seen(self.inner.remote.account_meter_values(account_id).await)
    }

    async fn add_event(&self, account_id: &str, event: &StationEvent) -> StoreResult<()> {
        self.inner.append(WalOp::Event { account_id: account_id.to_string(), event: event.clone() })
    }

    async fn events(&self, account_id: &str, station_id: &str) -> StoreResult<Vec<StationEvent>> {
        self.inner.seen(self.inner.remote.events(account_id, station_id).await)
    }

    async fn account_events(&self, account_id: &str) -> StoreResult<Vec<StationEvent>> {
        self.inner.seen(self.inner.remote.account_events(account_id).await)
    }

    async fn put_variables(&self, account_id: &str, station_id: &str, variables: &[DeviceVariable]) -> StoreResult<()> {
        self.inner.append(WalOp::Variables {
            account_id: account_id.to_string(),
            station_id: station_id.to_string(),
            variables: variables.to_vec(),
        })
    }

    async fn observe_variables(&self, account_id: &str, station_id: &str, seen: &[DeviceVariable]) -> StoreResult<()> {
        self.inner.append(WalOp::ObservedVariables {
            account_id: account_id.to_string(),
            station_id: station_id.to_string(),
            seen: seen.to_vec(),
        })
    }

    async fn variables(&self, account_id: &str, station_id: &str) -> StoreResult<Vec<DeviceVariable>> {
        self.inner.seen(self.inner.remote.variables(account_id, station_id).await)
    }

    async fn enqueue_command(&self, command: &CommandRecord) -> StoreResult<()> {
        self.inner.written(self.inner.remote.enqueue_command(command).await).await
    }

    async fn update_command(&self, command: &CommandRecord) -> StoreResult<()> {
        self.inner.written(self.inner.remote.update_command(command).await).await
    }

    async fn command(
        &self,
        account_id: &str,
        station_id: &str,
        command_id: &str,
    ) -> StoreResult<Option<CommandRecord>> {
        self.inner.seen(self.inner.remote.command(account_id, station_id, command_id).await)
    }

    async fn account_commands(&self, account_id: &str) -> StoreResult<Vec<CommandRecord>> {
        self.inner.seen(self.inner.remote.account_commands(account_id).await)
    }

    async fn queued_commands(&self, account_id: &str, station_id: &str) -> StoreResult<Vec<CommandRecord>> {
        self.inner.seen(self.inner.remote.queued_commands(account_id, station_id).await)
    }

    async fn queued_command_count(&self) -> StoreResult<usize> {
        self.inner.seen(self.inner.remote.queued_command_count().await)
    }

    async fn oldest_queued_command(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.inner.seen(self.inner.remote.oldest_queued_command().await)
    }

    /// Makes this node's writes durable (replica, caches, lease and log together): what a station
    /// is acknowledged after. The shared store gets them from the drainer.
    async fn flush(&self) -> StoreResult<()> {
        self.inner.local.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Registration, TagStatus, TransactionEventRecord, TransactionStop};
    use crate::ocpp::context::{HandlerSettings, StationContext};
    use crate::ocpp::handler::{handle_call, Reply};
    use crate::ocpp::rpc::Call;
    use crate::ocpp::Version;
    use crate::store::CommitPolicy;
    use serde_json::{json, Value};
    use std::path::Path;

    const ACCOUNT: &str = "acct-1";
    const OTHER: &str = "acct-2";
    const CP16: &str = "CP16";
    const CP201: &str = "CP201";
    const CP_OTHER: &str = "CP-B";

    /// The shared store of the tests: a sled store (in its own directory) that fails every call with
    /// a backend error while switched off, as Redis does while unreachable.
    struct Flaky {
        inner: SledStore,
        on: AtomicBool,
        /// Station and id-tag reads that reached it.
        reads: AtomicUsize,
        /// Whether its flush succeeds (writes are applied either way).
        flush_ok: AtomicBool,
        _dir: tempfile::TempDir,
    }

    impl Flaky {
        fn set(&self, on: bool) {
            self.on.store(on, Ordering::SeqCst);
        }

        fn gate(&self) -> StoreResult<()> {
            if self.on.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(StoreError::Backend("shared store switched off".into()))
            }
        }
    }

    #[async_trait]
    impl Store for Flaky {
        async fn create_account(&self, account: &Account) -> StoreResult<()> {
            self.gate()?;
            self.inner.create_account(account).await
        }
        async fn account(&self, id: &str) -> StoreResult<Option<Account>> {
            self.gate()?;
            self.inner.account(id).await
        }
        async fn account_by_email(&self, email: &str) -> StoreResult<Option<Account>> {
            self.gate()?;
            self.inner.account_by_email(email).await
        }
        async fn account_by_slug(&self, slug: &str) -> StoreResult<Option<Account>> {
            self.gate()?;
            self.inner.account_by_slug(slug).await
        }
        async fn update_account(&self, id: &str, update: AccountUpdate<'_>) -> StoreResult<Option<Account>> {
            self.gate()?;
            self.inner.update_account(id, update).await
        }
        async fn erase_account(&self, account_id: &str) -> StoreResult<ErasureReport> {
            self.gate()?;
            self.inner.erase_account(account_id).await
        }
        async fn put_token(&self, token_hash: &str, token: &ApiToken) -> StoreResult<()> {
            self.gate()?;
            self.inner.put_token(token_hash, token).await
        }
        async fn token(&self, token_hash: &str) -> StoreResult<Option<ApiToken>> {
            self.gate()?;
            self.inner.token(token_hash).await
        }
        async fn tokens(&self, account_id: &str) -> StoreResult<Vec<ApiToken>> {
            self.gate()?;
            self.inner.tokens(account_id).await
        }
        async fn delete_token(&self, account_id: &str, token_id: &str) -> StoreResult<bool> {
            self.gate()?;
            self.inner.delete_token(account_id, token_id).await
        }
        async fn delete_tokens_except(&self, account_id: &str, keep: Option<&str>) -> StoreResult<usize> {
            self.gate()?;
            self.inner.delete_tokens_except(account_id, keep).await
        }
        async fn consents(&self, account_id: &str) -> StoreResult<Consents> {
            self.gate()?;
            self.inner.consents(account_id).await
        }
        async fn put_consents(&self, account_id: &str, consents: &Consents) -> StoreResult<()> {
            self.gate()?;
            self.inner.put_consents(account_id, consents).await
        }
        async fn add_login_event(&self, account_id: &str, event: &LoginEvent, keep: usize) -> StoreResult<()> {
            self.gate()?;
            self.inner.add_login_event(account_id, event, keep).await
        }
        async fn login_events(&self, account_id: &str) -> StoreResult<Vec<LoginEvent>> {
            self.gate()?;
            self.inner.login_events(account_id).await
        }
        async fn create_station(&self, station: &Station) -> StoreResult<()> {
            self.gate()?;
            self.inner.create_station(station).await
        }
        async fn station(&self, account_id: &str, station_id: &str) -> StoreResult<Option<Station>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.gate()?;
            self.inner.station(account_id, station_id).await
        }
        async fn stations(&self, account_id: &str) -> StoreResult<Vec<Station>> {
            self.gate()?;
            self.inner.stations(account_id).await
        }
        async fn update_station(
            &self,
            account_id: &str,
            station_id: &str,
            update: StationUpdate<'_>,
        ) -> StoreResult<Option<Station>> {
            self.gate()?;
            self.inner.update_station(account_id, station_id, update).await
        }
        async fn change_station(
            &self,
            account_id: &str,
            station_id: &str,
            change: &StationChange,
        ) -> StoreResult<Option<Station>> {
            self.gate()?;
            self.inner.change_station(account_id, station_id, change).await
        }
        async fn delete_station(&self, account_id: &str, station_id: &str) -> StoreResult<bool> {
            self.gate()?;
            self.inner.delete_station(account_id, station_id).await
        }
        async fn put_id_tag(&self, account_id: &str, tag: &IdTag) -> StoreResult<bool> {
            self.gate()?;
            self.inner.put_id_tag(account_id, tag).await
        }
        async fn id_tag(&self, account_id: &str, id_tag: &str) -> StoreResult<Option<IdTag>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.gate()?;
            self.inner.id_tag(account_id, id_tag).await
        }
        async fn id_tags(&self, account_id: &str) -> StoreResult<Vec<IdTag>> {
            self.gate()?;
            self.inner.id_tags(account_id).await
        }
        async fn delete_id_tag(&self, account_id: &str, id_tag: &str) -> StoreResult<bool> {
            self.gate()?;
            self.inner.delete_id_tag(account_id, id_tag).await
        }
        async fn start_transaction(&self, tx: &NewTransaction) -> StoreResult<(Transaction, bool)> {
            self.gate()?;
            self.inner.start_transaction(tx).await
        }
        async fn stop_transaction(
            &self,
            account_id: &str,
            station_id: &str,
            transaction_id: i32,
            stop: &TransactionStop,
        ) -> StoreResult<StopOutcome> {
            self.gate()?;
            self.inner.stop_transaction(account_id, station_id, transaction_id, stop).await
        }
        async fn apply_transaction_event(
            &self,
            account_id: &str,
            station_id: &str,
            station_transaction_id: &str,
            seq_no: u64,
            create: NewTransactionFn<'_>,
            apply: TransactionUpdate<'_>,
        ) -> StoreResult<EventOutcome> {
            self.gate()?;
            self.inner
                .apply_transaction_event(account_id, station_id, station_transaction_id, seq_no, create, apply)
                .await
        }
        async fn transaction(&self, account_id: &str, transaction_id: i32) -> StoreResult<Option<Transaction>> {
            self.gate()?;
            self.inner.transaction(account_id, transaction_id).await
        }
        async fn transaction_by_start(&self, start: &StartIdentity) -> StoreResult<Option<Transaction>> {
            self.gate()?;
            self.inner.transaction_by_start(start).await
        }
        async fn transaction_by_reference(
            &self,
            account_id: &str,
            station_id: &str,
            station_transaction_id: &str,
        ) -> StoreResult<Option<Transaction>> {
            self.gate()?;
            self.inner.transaction_by_reference(account_id, station_id, station_transaction_id).await
        }
        async fn put_transaction(&self, tx: &Transaction) -> StoreResult<()> {
            self.gate()?;
            self.inner.put_transaction(tx).await
        }
        async fn reserve_transaction_ids(&self, count: u32) -> StoreResult<std::ops::Range<i32>> {
            self.gate()?;
            self.inner.reserve_transaction_ids(count).await
        }
        async fn transactions(&self, account_id: &str, station_id: Option<&str>) -> StoreResult<Vec<Transaction>> {
            self.gate()?;
            self.inner.transactions(account_id, station_id).await
        }
        async fn add_meter_values(&self, account_id: &str, records: &[MeterRecord]) -> StoreResult<()> {
            self.gate()?;
            self.inner.add_meter_values(account_id, records).await
        }
        async fn transaction_meter_values(
            &self,
            account_id: &str,
            station_id: &str,
            transaction_id: i32,
        ) -> StoreResult<Vec<MeterRecord>> {
            self.gate()?;
            self.inner.transaction_meter_values(account_id, station_id, transaction_id).await
        }
        async fn account_meter_values(&self, account_id: &str) -> StoreResult<Vec<MeterRecord>> {
            self.gate()?;
            self.inner.account_meter_values(account_id).await
        }
        async fn add_event(&self, account_id: &str, event: &StationEvent) -> StoreResult<()> {
            self.gate()?;
            self.inner.add_event(account_id, event).await
        }
        async fn events(&self, account_id: &str, station_id: &str) -> StoreResult<Vec<StationEvent>> {
            self.gate()?;
            self.inner.events(account_id, station_id).await
        }
        async fn account_events(&self, account_id: &str) -> StoreResult<Vec<StationEvent>> {
            self.gate()?;
            self.inner.account_events(account_id).await
        }
        async fn put_variables(
            &self,
            account_id: &str,
            station_id: &str,
            variables: &[DeviceVariable],
        ) -> StoreResult<()> {
            self.gate()?;
            self.inner.put_variables(account_id, station_id, variables).await
        }
        async fn observe_variables(
            &self,
            account_id: &str,
            station_id: &str,
            seen: &[DeviceVariable],
        ) -> StoreResult<()> {
            self.gate()?;
            self.inner.observe_variables(account_id, station_id, seen).await
        }
        async fn variables(&self, account_id: &str, station_id: &str) -> StoreResult<Vec<DeviceVariable>> {
            self.gate()?;
            self.inner.variables(account_id, station_id).await
        }
        async fn enqueue_command(&self, command: &CommandRecord) -> StoreResult<()> {
            self.gate()?;
            self.inner.enqueue_command(command).await
        }
        async fn update_command(&self, command: &CommandRecord) -> StoreResult<()> {
            self.gate()?;
            self.inner.update_command(command).await
        }
        async fn command(
            &self,
            account_id: &str,
            station_id: &str,
            command_id: &str,
        ) -> StoreResult<Option<CommandRecord>> {
            self.gate()?;
            self.inner.command(account_id, station_id, command_id).await
        }
        async fn account_commands(&self, account_id: &str) -> StoreResult<Vec<CommandRecord>> {
            self.gate()?;
            self.inner.account_commands(account_id).await
        }
        async fn queued_commands(&self, account_id: &str, station_id: &str) -> StoreResult<Vec<CommandRecord>> {
            self.gate()?;
            self.inner.queued_commands(account_id, station_id).await
        }
        async fn queued_command_count(&self) -> StoreResult<usize> {
            self.gate()?;
            self.inner.queued_command_count().await
        }
        async fn oldest_queued_command(&self) -> StoreResult<Option<DateTime<Utc>>> {
            self.gate()?;
            self.inner.oldest_queued_command().await
        }
        async fn flush(&self) -> StoreResult<()> {
            self.gate()?;
            if !self.flush_ok.load(Ordering::SeqCst) {
                return Err(StoreError::Backend("flush failed".into()));
            }
            self.inner.flush().await
        }
    }

    fn account(id: &str, slug: &str) -> Account {
        Account {
            id: id.into(),
            email: format!("ops@{slug}.example"),
            name: slug.into(),
            slug: slug.into(),
            password_hash: String::new(),
            created_at: Utc::now(),
            known_locations: vec![],
        }
    }

    /// The shared store, switched on, with two accounts: the first with a 1.6 and a 2.0.1 station and
    /// an accepted id tag, the second with one station.
    async fn shared() -> Arc<Flaky> {
        let dir = tempfile::tempdir().unwrap();
        let inner = SledStore::open(dir.path(), CommitPolicy::default()).unwrap();
        for (id, slug) in [(ACCOUNT, "acme"), (OTHER, "bravo")] {
            inner.create_account(&account(id, slug)).await.unwrap();
        }
        for (acct, station) in [(ACCOUNT, CP16), (ACCOUNT, CP201), (OTHER, CP_OTHER)] {
            let s = Station::new(acct, station, String::new(), Registration::Accepted, Default::default());
            inner.create_station(&s).await.unwrap();
        }
        let tag = IdTag {
            id_tag: "TAG".into(),
            status: TagStatus::Accepted,
            expiry_date: None,
            parent_id_tag: None,
            updated_at: Utc::now(),
        };
        inner.put_id_tag(ACCOUNT, &tag).await.unwrap();
        inner.put_id_tag(OTHER, &tag).await.unwrap();
        Arc::new(Flaky {
            inner,
            on: AtomicBool::new(true),
            reads: AtomicUsize::new(0),
            flush_ok: AtomicBool::new(true),
            _dir: dir,
        })
    }

    fn settings(block: u32) -> ClusterStoreSettings {
        ClusterStoreSettings {
            transaction_id_block: block,
            retry_min: Duration::from_millis(10),
            retry_max: Duration::from_millis(50),
            drain_batch: 256,
        }
    }

    /// A node over the sled database in `dir` (reopened after a previous node's shutdown: its
    /// group-commit thread lets the database go shortly after), with its id lease filled.
    async fn node(remote: &Arc<Flaky>, dir: &Path, block: u32) -> ClusterStore {
        let mut attempts = 0;
        let local = loop {
            match SledStore::open(dir, CommitPolicy::default()) {
                Ok(local) => break local,
                Err(_) if attempts < 200 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(e) => panic!("could not reopen the node's database: {e}"),
            }
        };
        let store = ClusterStore::open(local, remote.clone(), settings(block)).unwrap();
        if remote.on.load(Ordering::SeqCst) {
            eventually("the id lease is filled", || store.inner.lease_remaining().unwrap() > 0).await;
        }
        store
    }

    async fn eventually(what: &str, done: impl Fn() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting until {what}");
    }

    async fn drained(store: &ClusterStore) {
        eventually("the write-ahead log is drained", || store.pending() == 0 && store.remote_up()).await;
    }

    /// A station connecting to the node: its record and its id tag are looked up (and cached).
    async fn connect(store: &ClusterStore, account_id: &str, station_id: &str) {
        assert!(store.station(account_id, station_id).await.unwrap().is_some());
        store.id_tag(account_id, "TAG").await.unwrap();
    }

    /// Handles one CALL of a station of `account_id` through the OCPP handlers, flush included.
    async fn call_as(store: &ClusterStore, account_id: &str, station_id: &str, action: &str, payload: Value) -> Reply {
        let version = if station_id == CP201 { Version::V201 } else { Version::V16 };
        let settings = HandlerSettings {
            heartbeat_interval: Duration::from_secs(300),
            boot_retry_interval: Duration::from_secs(60),
        };
        let ctx = StationContext {
            version,
            store,
            account_id,
            station_id,
            registration: Registration::Accepted,
            settings: &settings,
            event_quota: None,
        };
        handle_call(&ctx, &Call { unique_id: "u1".into(), action: action.into(), payload }).await
    }

    /// A CALL that must be answered with a CALLRESULT (the station's acknowledgement).
    async fn ok(store: &ClusterStore, station_id: &str, action: &str, payload: Value) -> Value {
        match call_as(store, ACCOUNT, station_id, action, payload).await {
            Reply::Result { payload, .. } => payload,
            Reply::Error(e) => panic!("{action} was not acknowledged: {e:?}"),
        }
    }

    fn start16(minute: u32, meter_start: i64) -> Value {
        json!({"connectorId": 1, "idTag": "TAG", "meterStart": meter_start,
               "timestamp": format!("2026-01-01T10:{minute:02}:00Z")})
    }

    fn meter16(id: i64, wh: i64) -> Value {
        json!({"connectorId": 1, "transactionId": id,
               "meterValue": [{"timestamp": "2026-01-01T10:30:00Z", "sampledValue": [{"value": wh.to_string()}]}]})
    }

    fn stop16(id: i64, meter_stop: i64) -> Value {
        json!({"transactionId": id, "meterStop": meter_stop, "timestamp": "2026-01-01T11:00:00Z", "idTag": "TAG",
               "reason": "Local"})
    }

    fn event201(kind: &str, seq: u64, wh: f64) -> Value {
        let at = format!("2026-11-25T10:{seq:02}:00Z");
        let mut e = json!({"eventType": kind, "timestamp": at, "triggerReason": "MeterValuePeriodic", "seqNo": seq,
            "transactionInfo": {"transactionId": "tx-abc"}, "evse": {"id": 1, "connectorId": 1},
            "meterValue": [{"timestamp": at, "sampledValue": [{"value": wh, "unitOfMeasure": {"unit": "Wh"}}]}]});
        if kind == "Started" {
            e["idToken"] = json!({"idToken": "TAG", "type": "ISO14443"});
        }
        if kind == "Ended" {
            e["transactionInfo"]["stoppedReason"] = json!("EVDisconnected");
        }
        e
    }

    /// A 1.6 charging session: boot, status, authorize, start (meter 1000), meter values, stop (9000),
    /// a DataTransfer; returns the transaction id.
    async fn session16(store: &ClusterStore) -> i64 {
        ok(store, CP16, "BootNotification", json!({"chargePointVendor": "V", "chargePointModel": "M"})).await;
        let status = json!({"connectorId": 1, "errorCode": "NoError", "status": "Charging"});
        ok(store, CP16, "StatusNotification", status).await;
        let auth = ok(store, CP16, "Authorize", json!({"idTag": "TAG"})).await;
        assert_eq!(auth["idTagInfo"]["status"], "Accepted");
        let started = ok(store, CP16, "StartTransaction", start16(0, 1000)).await;
        assert_eq!(started["idTagInfo"]["status"], "Accepted");
        let id = started["transactionId"].as_i64().unwrap();
        ok(store, CP16, "MeterValues", meter16(id, 5000)).await;
        ok(store, CP16, "StopTransaction", stop16(id, 9000)).await;
        ok(store, CP16, "DataTransfer", json!({"vendorId": "v"})).await;
        id
    }

    /// A 2.0.1 transaction: Started (1000 Wh), Updated (4000 Wh), Ended (9500 Wh), Ended again.
    async fn session201(store: &ClusterStore) {
        ok(store, CP201, "TransactionEvent", event201("Started", 0, 1000.0)).await;
        ok(store, CP201, "TransactionEvent", event201("Updated", 1, 4000.0)).await;
        ok(store, CP201, "TransactionEvent", event201("Ended", 2, 9500.0)).await;
        ok(store, CP201, "TransactionEvent", event201("Ended", 2, 9500.0)).await;
    }

    /// The shared store's transactions of the account, checked to have unique ids.
    async fn remote_transactions(remote: &Flaky, account_id: &str) -> Vec<Transaction> {
        let txs = remote.inner.transactions(account_id, None).await.unwrap();
        let ids: HashSet<i32> = txs.iter().map(|t| t.id).collect();
        assert_eq!(ids.len(), txs.len(), "transaction ids are unique: {txs:?}");
        txs
    }

    fn by_station<'a>(txs: &'a [Transaction], station_id: &str) -> &'a Transaction {
        let mut found = txs.iter().filter(|t| t.station_id == station_id);
        let tx = found.next().unwrap_or_else(|| panic!("no transaction of {station_id}"));
        assert!(found.next().is_none(), "one transaction of {station_id}");
        tx
    }

    /// What the two sessions above must leave in the shared store.
    async fn assert_sessions_recorded(remote: &Flaky, id16: i64) {
        let txs = remote_transactions(remote, ACCOUNT).await;
        assert_eq!(txs.len(), 2, "{txs:?}");
        let tx16 = by_station(&txs, CP16);
        assert_eq!(i64::from(tx16.id), id16);
        assert_eq!((tx16.meter_start, tx16.energy_wh()), (Some(1000), Some(8000)));
        assert_eq!(tx16.stop.as_ref().unwrap().reason.as_deref(), Some("Local"));
        let readings = remote.inner.transaction_meter_values(ACCOUNT, CP16, tx16.id).await.unwrap();
        assert_eq!(readings.len(), 1);
        let tx201 = by_station(&txs, CP201);
        assert_eq!((tx201.meter_start, tx201.energy_wh(), tx201.events.len()), (Some(1000), Some(8500), 3));
        assert_eq!(tx201.id_tag_status.as_deref(), Some("Accepted"));
        assert_eq!(remote.inner.transaction_meter_values(ACCOUNT, CP201, tx201.id).await.unwrap().len(), 3);
        let events = remote.inner.events(ACCOUNT, CP16).await.unwrap();
        assert_eq!(events.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["DataTransfer"]);
        let station = remote.inner.station(ACCOUNT, CP16).await.unwrap().unwrap();
        assert_eq!(station.connectors["1"].status, "Charging");
        assert_eq!(station.boot.as_ref().map(|b| b.charge_point_vendor.as_str()), Some("V"));
    }

    #[tokio::test]
    async fn with_the_shared_store_up_station_writes_reach_it_as_the_node_recorded_them() {
        let remote = shared().await;
        let dir = tempfile::tempdir().unwrap();
        let store = node(&remote, dir.path(), 1000).await;
        connect(&store, ACCOUNT, CP16).await;
        connect(&store, ACCOUNT, CP201).await;
        let id16 = session16(&store).await;
        session201(&store).await;
        drained(&store).await;

        assert_sessions_recorded(&remote, id16).await;
        for tx in remote_transactions(&remote, ACCOUNT).await {
            let replica = store.inner.local.transaction(ACCOUNT, tx.id).await.unwrap();
            assert_eq!(replica.as_ref(), Some(&tx), "the shared record is the one the node computed");
        }
        assert_eq!(store.transactions(ACCOUNT, None).await.unwrap().len(), 2, "API reads go to the shared store");
        store.shutdown().await;
    }

    #[tokio::test]
    async fn with_the_shared_store_down_stations_are_answered_and_everything_drains_when_it_is_back() {
        let remote = shared().await;
        let dir = tempfile::tempdir().unwrap();
        let store = node(&remote, dir.path(), 1000).await;
        connect(&store, ACCOUNT, CP16).await;
        connect(&store, ACCOUNT, CP201).await;

        remote.set(false);
        // The first read finds the shared store down; later ones go straight to the cache.
        assert!(store.station(ACCOUNT, CP16).await.unwrap().is_some());
        assert!(!store.remote_up());
        let reads = remote.reads.load(Ordering::SeqCst);
        assert_eq!(store.id_tag(ACCOUNT, "TAG").await.unwrap().map(|t| t.status), Some(TagStatus::Accepted));
        assert!(store.station(ACCOUNT, CP201).await.unwrap().is_some());
        let id16 = session16(&store).await;
        session201(&store).await;
        assert_eq!(remote.reads.load(Ordering::SeqCst), reads, "no read waited on the shared store");
        assert!(matches!(store.transactions(ACCOUNT, None).await, Err(StoreError::Backend(_))), "API reads fail");

        assert!(store.pending() > 0);
        assert!(!store.remote_up());
        assert!(remote.inner.transactions(ACCOUNT, None).await.unwrap().is_empty(), "nothing reached it");
        assert!(remote.inner.station(ACCOUNT, CP16).await.unwrap().unwrap().connectors.is_empty());

        remote.set(true);
        drained(&store).await;
        assert_sessions_recorded(&remote, id16).await;
        store.shutdown().await;
    }

    #[tokio::test]
    async fn a_monitoring_event_while_the_shared_store_is_down_keeps_what_was_reported_of_the_variable() {
        let remote = shared().await;
        let dir = tempfile::tempdir().unwrap();
        let store = node(&remote, dir.path(), 1000).await;
        connect(&store, ACCOUNT, CP201).await;
        let power = json!({"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Power"}});
        let mut data = power.clone();
        data["variableAttribute"] = json!([{"value": "0", "mutability": "ReadOnly"}]);
        data["variableCharacteristics"] = json!({"unit": "W", "dataType": "decimal", "supportsMonitoring": true});
        let report = json!({"requestId": 1, "generatedAt": "2026-11-25T10:00:00Z", "seqNo": 0, "reportData": [data]});
        ok(&store, CP201, "NotifyReport", report).await;
        drained(&store).await;

        remote.set(false);
        let mut event = power;
        event["eventId"] = json!(1);
        event["timestamp"] = json!("2026-11-25T10:05:00Z");
        event["trigger"] = json!("Delta");
        event["actualValue"] = json!("7400");
        event["eventNotificationType"] = json!("HardWiredNotification");
        ok(
            &store,
            CP201,
            "NotifyEvent",
            json!({"generatedAt": "2026-11-25T10:05:00Z", "seqNo": 0, "eventData": [event]}),
        )
        .await;
        remote.set(true);
        drained(&store).await;

        let vars = remote.inner.variables(ACCOUNT, CP201).await.unwrap();
        assert_eq!(vars.len(), 1);
        assert_eq!((vars[0].value.as_deref(), vars[0].mutability.as_deref()), (Some("7400"), Some("ReadOnly")));
        assert_eq!(vars[0].characteristics.as_ref().map(|c| c["unit"].clone()), Some(json!("W")));
        store.shutdown().await;
    }

    #[tokio::test]
    async fn a_tenant_seen_before_redis_went_down_is_found_without_its_secrets() {
        let remote = shared().await;
        let dir = tempfile::tempdir().unwrap();
        let store = node(&remote, dir.path(), 1000).await;
        remote.inner.update_account(ACCOUNT, &|a| a.password_hash = "$argon2id$stand-in".into()).await.unwrap();
        let up = store.account_by_slug("acme").await.unwrap().expect("the tenant");
        assert!(!up.password_hash.is_empty(), "while Redis answers, the whole record");

        remote.set(false);
        let down = store.account_by_slug("acme").await.unwrap().expect("still found: stations can reconnect");
        assert_eq!((down.id.as_str(), down.slug.as_str()), (ACCOUNT, "acme"));
        assert!(down.password_hash.is_empty() && down.known_locations.is_empty(), "no secret kept on the node");
        let unknown = store.account_by_slug("bravo").await;
        assert!(matches!(unknown, Err(StoreError::Unavailable(_))), "never looked up: ask again later, {unknown:?}");

        remote.set(true);
        store.erase_account(ACCOUNT).await.unwrap();
        remote.set(false);
        let erased = store.account_by_slug("acme").await;
        assert!(matches!(erased, Err(StoreError::Unavailable(_))), "an erased tenant is forgotten here too");
        store.shutdown().await;
    }

    #[tokio::test]
    async fn acknowledged_writes_survive_a_restart_while_the_shared_store_is_down() {
        let remote = shared().await;
        let dir = tempfile::tempdir().unwrap();
        let store = node(&remote, dir.path(), 1000).await;
        connect(&store, ACCOUNT, CP16).await;
        connect(&store, ACCOUNT, CP201).await;
        remote.set(false);
        let first = ok(&store, CP16, "StartTransaction", start16(0, 1000)).await["transactionId"].as_i64().unwrap();
        ok(&store, CP16, "MeterValues", meter16(first, 5000)).await;
        ok(&store, CP201, "TransactionEvent", event201("Started", 0, 1000.0)).await;
        let pending = store.pending();
        store.shutdown().await;
        drop(store);

        let store = node(&remote, dir.path(), 1000).await;
        assert_eq!(store.pending(), pending, "the log outlived the process");
        assert!(store.station(ACCOUNT, CP16).await.unwrap().is_some(), "the cache too");
        ok(&store, CP16, "StopTransaction", stop16(first, 9000)).await;
        let second = ok(&store, CP16, "StartTransaction", start16(5, 9000)).await["transactionId"].as_i64().unwrap();
        assert_ne!(second, first);
        ok(&store, CP201, "TransactionEvent", event201("Ended", 1, 9500.0)).await;

        remote.set(true);
        drained(&store).await;
        let txs = remote_transactions(&remote, ACCOUNT).await;
        assert_eq!(txs.len(), 3, "{txs:?}");
        let stopped = txs.iter().find(|t| i64::from(t.id) == first).unwrap();
        assert_eq!(stopped.energy_wh(), Some(8000));
        assert_eq!(remote.inner.transaction_meter_values(ACCOUNT, CP16, stopped.id).await.unwrap().len(), 1);
        let open = txs.iter().find(|t| i64::from(t.id) == second).unwrap();
        assert_eq!((open.meter_start, open.stop.is_none()), (Some(9000), true));
        let tx201 = by_station(&txs, CP201);
        assert_eq!((tx201.energy_wh(), tx201.events.len()), (Some(8500), 2));
        store.shutdown().await;
    }

    #[tokio::test]
    async fn a_retried_start_while_the_shared_store_is_down_gets_its_first_id() {
        let remote = shared().await;
        let dir = tempfile::tempdir().unwrap();
        let store = node(&remote, dir.path(), 1000).await;
        connect(&store, ACCOUNT, CP16).await;
        remote.set(false);
        let a = ok(&store, CP16, "StartTransaction", start16(0, 1000)).await["transactionId"].clone();
        let b = ok(&store, CP16, "StartTransaction", start16(0, 1000)).await["transactionId"].clone();
        assert_eq!(a, b);
        remote.set(true);
        drained(&store).await;
        assert_eq!(remote_transactions(&remote, ACCOUNT).await.len(), 1);
        store.shutdown().await;
    }

    #[tokio::test]
    async fn entries_leave_the_log_only_once_the_shared_store_made_them_durable() {
        let remote = shared().await;
        let dir = tempfile::tempdir().unwrap();
        let store = node(&remote, dir.path(), 1000).await;
        connect(&store, ACCOUNT, CP16).await;
        remote.flush_ok.store(false, Ordering::SeqCst);
        let id = ok(&store, CP16, "StartTransaction", start16(0, 1000)).await["transactionId"].as_i64().unwrap();
        for _ in 0..50 {
            if remote.inner.transaction(ACCOUNT, id as i32).await.unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(remote.inner.transaction(ACCOUNT, id as i32).await.unwrap().is_some(), "applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(store.pending(), 1, "kept until the shared store's flush succeeds");
        assert!(!store.remote_up());

        remote.flush_ok.store(true, Ordering::SeqCst);
        drained(&store).await;
        assert_eq!(remote_transactions(&remote, ACCOUNT).await.len(), 1, "applied again, changing nothing");
        store.shutdown().await;
    }

    fn new_tx(minute: u32) -> NewTransaction {
        NewTransaction {
            account_id: ACCOUNT.into(),
            station_id: CP16.into(),
            connector_id: 1,
            id_tag: "TAG".into(),
            id_tag_status: "Accepted".into(),
            meter_start: 0,
            start_timestamp: format!("2026-01-01T10:{minute:02}:00Z").parse().unwrap(),
            reservation_id: None,
        }
    }

    #[tokio::test]
    async fn an_exhausted_id_lease_while_the_shared_store_is_down_refuses_rather_than_reusing_an_id() {
        let remote = shared().await;
        let dir = tempfile::tempdir().unwrap();
        let store = node(&remote, dir.path(), 2).await;
        remote.set(false);
        let (a, _) = store.start_transaction(&new_tx(0)).await.unwrap();
        let (b, _) = store.start_transaction(&new_tx(1)).await.unwrap();
        assert_ne!(a.id, b.id);
        assert!(matches!(store.start_transaction(&new_tx(2)).await, Err(StoreError::Backend(_))));
        let (retry, created) = store.start_transaction(&new_tx(0)).await.unwrap();
        assert_eq!((retry.id, created), (a.id, false), "a retry needs no new id");

        remote.set(true);
        eventually("the drainer finds the shared store back", || store.remote_up()).await;
        let (c, created) = store.start_transaction(&new_tx(2)).await.unwrap();
        assert!(created);
        assert!(c.id != a.id && c.id != b.id);
        drained(&store).await;
        assert_eq!(remote_transactions(&remote, ACCOUNT).await.len(), 3);
        store.shutdown().await;
    }

    #[tokio::test]
    async fn an_erased_account_s_waiting_writes_never_reach_the_shared_store() {
        let remote = shared().await;
        let dir = tempfile::tempdir().unwrap();
        let store = node(&remote, dir.path(), 1000).await;
        connect(&store, ACCOUNT, CP16).await;
        connect(&store, OTHER, CP_OTHER).await;
        remote.set(false);
        ok(&store, CP16, "StartTransaction", start16(0, 1000)).await;
        for payload in [start16(0, 1000), json!({"vendorId": "v"})] {
            let action = if payload.get("vendorId").is_some() { "DataTransfer" } else { "StartTransaction" };
            assert!(matches!(call_as(&store, OTHER, CP_OTHER, action, payload).await, Reply::Result { .. }));
        }
        let before = store.pending();

        // The shared store is down, so the erasure fails (and is asked again), but what this node
        // held of the account is gone already.
        assert!(store.erase_account(OTHER).await.is_err());
        assert_eq!(store.pending(), before - 2);
        assert!(!store.inner.station_has_pending(OTHER, CP_OTHER));
        let dropped = store.station(OTHER, CP_OTHER).await;
        assert!(matches!(dropped, Err(StoreError::Unavailable(_))), "its cached station is dropped: {dropped:?}");

        remote.set(true);
        drained(&store).await;
        assert!(remote.inner.transactions(OTHER, None).await.unwrap().is_empty());
        assert!(remote.inner.events(OTHER, CP_OTHER).await.unwrap().is_empty());
        assert_eq!(remote_transactions(&remote, ACCOUNT).await.len(), 1, "the other account drained");
        store.erase_account(OTHER).await.unwrap();
        assert!(remote.inner.account(OTHER).await.unwrap().is_none());

        // A station of the erased account still connected somewhere writes once more: set aside.
        assert!(matches!(
            call_as(&store, OTHER, CP_OTHER, "DataTransfer", json!({"vendorId": "v"})).await,
            Reply::Result { .. }
        ));
        drained(&store).await;
        assert!(remote.inner.events(OTHER, CP_OTHER).await.unwrap().is_empty());
        assert_eq!(store.inner.set_aside.len(), 1);
        store.shutdown().await;
    }

    #[tokio::test]
    async fn a_transaction_started_on_one_node_is_stopped_right_on_another() {
        let remote = shared().await;
        let (dx, dy) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let x = node(&remote, dx.path(), 1000).await;
        let y = node(&remote, dy.path(), 1000).await;
        connect(&x, ACCOUNT, CP16).await;
        connect(&x, ACCOUNT, CP201).await;
        let id = ok(&x, CP16, "StartTransaction", start16(0, 1000)).await["transactionId"].as_i64().unwrap();
        ok(&x, CP201, "TransactionEvent", event201("Started", 0, 1000.0)).await;
        drained(&x).await;

        // The stations reconnect to node Y.
        connect(&y, ACCOUNT, CP16).await;
        connect(&y, ACCOUNT, CP201).await;
        ok(&y, CP16, "MeterValues", meter16(id, 5000)).await;
        ok(&y, CP16, "StopTransaction", stop16(id, 9000)).await;
        ok(&y, CP201, "TransactionEvent", event201("Updated", 1, 4000.0)).await;
        ok(&y, CP201, "TransactionEvent", event201("Ended", 2, 9500.0)).await;
        drained(&y).await;

        let txs = remote_transactions(&remote, ACCOUNT).await;
        assert_eq!(txs.len(), 2, "{txs:?}");
        let tx16 = by_station(&txs, CP16);
        assert_eq!((i64::from(tx16.id), tx16.energy_wh()), (id, Some(8000)));
        let tx201 = by_station(&txs, CP201);
        assert_eq!((tx201.energy_wh(), tx201.events.len()), (Some(8500), 3));
        x.shutdown().await;
        y.shutdown().await;
    }

    fn event_record(seq_no: u64, event_type: &str, wh: i64) -> TransactionEventRecord {
        TransactionEventRecord {
            seq_no,
            event_type: event_type.into(),
            trigger_reason: "MeterValuePeriodic".into(),
            timestamp: Utc::now(),
            offline: false,
            energy_register_wh: Some(wh),
            received_at: Utc::now(),
        }
    }

    #[test]
    fn an_older_record_from_the_log_never_undoes_what_the_shared_store_recorded() {
        let open = Transaction::started(&new_tx(0), 7, Utc::now());
        let mut stopped = open.clone();
        stopped.stop = Some(TransactionStop {
            meter_stop: Some(500),
            timestamp: Utc::now(),
            reason: None,
            id_tag: None,
            received_at: Utc::now(),
        });
        assert_eq!(reconcile(&open, None), Some(open.clone()));
        assert_eq!(reconcile(&stopped, Some(open.clone())), Some(stopped.clone()));
        assert_eq!(reconcile(&open, Some(stopped.clone())), None, "a replayed start does not reopen it");
        assert_eq!(reconcile(&stopped, Some(stopped.clone())), None);

        // 2.0.1: node X applied events 0 and 1, node Y (the station moved) 0 and 2, the Ended one.
        let mut base = open.clone();
        base.station_transaction_id = Some("tx-abc".into());
        base.meter_start = None;
        let mut x = base.clone();
        x.events = vec![event_record(0, "Started", 1000), event_record(1, "Updated", 4000)];
        let mut y = base.clone();
        y.events = vec![event_record(0, "Started", 1000), event_record(2, "Ended", 9500)];
        y.stop = stopped.stop.clone();
        let merged = reconcile(&x, Some(y.clone())).unwrap();
        assert_eq!(merged.events.iter().map(|e| e.seq_no).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!((merged.meter_start, merged.energy_wh()), (Some(1000), Some(8500)));
        let mut behind = base.clone();
        behind.events = vec![event_record(0, "Started", 1000)];
        assert_eq!(reconcile(&behind, Some(y)), None, "the shared copy has every event already");
    }
}
