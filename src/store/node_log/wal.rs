//! The write-ahead log: what a station's messages change waits here, durable with the node's next
//! flush, until the drainer has applied it to the shared store and the shared store made it durable.

use super::reconcile::reconcile;
use super::{lock, Inner, Signals, StationKey, DRAIN_CONCURRENCY, PROBE_ACCOUNT_ID};
use crate::ids::{AccountId, StationId};
use crate::metrics as m;
use crate::model::{DeviceVariable, EventDraft, MeterRecord, StationChange, StationEvent, Transaction};
use crate::store::sled::{backend, decode, encode};
use crate::store::{StationStore, StoreError, StoreResult};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// One write waiting to reach the shared store. Applying one twice changes nothing: the shared
/// store's writes are idempotent by content, and a transaction record is reconciled with the shared
/// copy before it is put (see [`reconcile`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum WalOp {
    PutTransaction(Transaction),
    MeterValues {
        account_id: AccountId,
        records: Vec<MeterRecord>,
    },
    Event {
        account_id: AccountId,
        event: StationEvent,
    },
    Variables {
        account_id: AccountId,
        station_id: StationId,
        variables: Vec<DeviceVariable>,
    },
    /// Values a NotifyEvent saw ([`crate::store::StationStore::observe_variables`]).
    ObservedVariables {
        account_id: AccountId,
        station_id: StationId,
        seen: Vec<DeviceVariable>,
    },
    StationChange {
        account_id: AccountId,
        station_id: StationId,
        change: StationChange,
    },
    /// Events for the account's feed, about `station_id` (empty: about the account). `seq` grows
    /// with each such entry of this node, so the shared store appends them once
    /// ([`crate::store::SharedStore::append_feed_from`]).
    Feed {
        account_id: AccountId,
        station_id: StationId,
        seq: u64,
        events: Vec<EventDraft>,
    },
}

impl WalOp {
    pub(super) fn account_id(&self) -> &AccountId {
        match self {
            WalOp::PutTransaction(tx) => &tx.account_id,
            WalOp::MeterValues { account_id, .. }
            | WalOp::Event { account_id, .. }
            | WalOp::Variables { account_id, .. }
            | WalOp::ObservedVariables { account_id, .. }
            | WalOp::StationChange { account_id, .. }
            | WalOp::Feed { account_id, .. } => account_id,
        }
    }

    /// The station the entry is about: entries of one station are applied in log order, those of
    /// different stations side by side.
    pub(super) fn station(&self) -> StationKey {
        match self {
            WalOp::PutTransaction(tx) => (tx.account_id.clone(), tx.station_id.clone()),
            WalOp::MeterValues { account_id, records } => {
                (account_id.clone(), records.first().map(|r| r.station_id.clone()).unwrap_or_default())
            }
            WalOp::Event { account_id, event } => (account_id.clone(), event.station_id.clone()),
            WalOp::Variables { account_id, station_id, .. }
            | WalOp::ObservedVariables { account_id, station_id, .. }
            | WalOp::StationChange { account_id, station_id, .. }
            | WalOp::Feed { account_id, station_id, .. } => (account_id.clone(), station_id.clone()),
        }
    }

    /// The station whose transaction records the entry changes, if it changes one. Meter values,
    /// events, device models and station changes leave transaction records alone, so they do not make
    /// the shared store's copy of a transaction stale.
    pub(super) fn transaction_station(&self) -> Option<StationKey> {
        match self {
            WalOp::PutTransaction(tx) => Some((tx.account_id.clone(), tx.station_id.clone())),
            _ => None,
        }
    }
}

/// One call's worth of consecutive meter-value entries of one station.
fn merged_readings(entries: &[(sled::IVec, WalOp)]) -> (AccountId, Vec<MeterRecord>) {
    let mut account = AccountId::default();
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
pub(super) struct WalEntry {
    pub(super) at: DateTime<Utc>,
    pub(super) op: WalOp,
}

/// The key of a set-aside entry: when it was set aside, then its log key (log keys start again from 0
/// when a node restarts with an empty log, so they alone could collide).
pub(super) fn set_aside_key(wal_key: &[u8]) -> Vec<u8> {
    let now = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
    let mut k = now.to_be_bytes().to_vec();
    k.extend_from_slice(wal_key);
    k
}

/// Why a drain round stopped early.
pub(super) enum DrainError {
    /// The shared store failed: it counts as down until a retry succeeds.
    Remote(StoreError),
    /// This node's sled failed.
    Local(StoreError),
}

/// What the drainer does after a round.
pub(super) enum Round {
    /// More entries are waiting: go on at once.
    More,
    /// Nothing to do until new work (or the next look around).
    Idle,
    /// Something failed: wait, longer each time, and try again.
    Failed,
}

impl Inner {
    pub(super) fn count_in(&self, station: &Option<StationKey>) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if let Some(s) = station {
            *lock(&self.pending_by_station).entry(s.clone()).or_default() += 1;
        }
    }

    pub(super) fn count_out(&self, station: &Option<StationKey>) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
        self.progress.notify_waiters();
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
    pub(super) fn append(&self, op: WalOp) -> StoreResult<()> {
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
        // After the insert: a flush that reads this count starts after the entry is in the tree.
        self.appended.fetch_add(1, Ordering::AcqRel);
        metrics::gauge!(m::WAL_PENDING).set(self.pending.load(Ordering::Acquire) as f64);
        self.signals.work.notify_one();
        Ok(())
    }

    /// Removes an applied (or erased) entry; only the call that removes it uncounts it.
    pub(super) fn remove_entry(&self, k: &[u8], op: &WalOp) -> StoreResult<()> {
        if self.wal.remove(k).map_err(backend)?.is_some() {
            self.count_out(&op.transaction_station());
            metrics::gauge!(m::WAL_PENDING).set(self.pending.load(Ordering::Acquire) as f64);
        }
        Ok(())
    }

    pub(super) fn set_aside(&self, k: &[u8], v: &[u8], op: Option<&WalOp>, reason: &'static str) -> StoreResult<()> {
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

    /// Applies one log entry to the shared store.
    pub(super) async fn apply(&self, op: &WalOp) -> StoreResult<()> {
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
            WalOp::Feed { account_id, station_id, seq, events } => {
                let origin = format!("{}\u{1f}{}", self.settings.node_id, station_id);
                remote.append_feed_from(account_id, &origin, *seq, events).await?
            }
        }
        Ok(())
    }

    /// Applies one station's entries in log order, meter readings that follow one another in one
    /// call; stops at the first failure. Returns the entries applied, and the failure.
    pub(super) async fn apply_station(
        &self,
        entries: Vec<(sled::IVec, WalOp)>,
    ) -> (Vec<(sled::IVec, WalOp)>, Option<StoreError>) {
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
    pub(super) async fn drain_batch(&self) -> Result<(usize, bool), DrainError> {
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
        let mut accounts: HashMap<AccountId, bool> = HashMap::new();
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
            accounts.insert(account_id.clone(), known);
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
    pub(super) async fn round(&self) -> Round {
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
                self.remote.account(&AccountId::from(PROBE_ACCOUNT_ID)).await.map_err(DrainError::Remote)?;
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

    pub(super) fn report_oldest(&self) {
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
/// round, so dropping the last [`NodeLog`] ends it.
pub(super) async fn drain_loop(store: Weak<Inner>, signals: Arc<Signals>) {
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
