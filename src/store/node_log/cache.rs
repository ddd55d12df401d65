//! This node's copies of what the shared store holds: stations, id tags and tenants as last seen
//! (so stations are served while Redis is down), and the replica of transactions, with how the
//! station path picks between a copy and the shared store.

use super::wal::{WalEntry, WalOp};
use super::{account_prefix, Inner};
use crate::ids::{AccountId, StationId};
use crate::model::{Account, Transaction};
use crate::store::rules::{TransactionAt, TransactionRecords};
use crate::store::sled::{backend, decode, encode, get};
use crate::store::{AccountStore, SharedStore, StationStore, StoreError, StoreResult};
use async_trait::async_trait;
use serde::{de::DeserializeOwned, Serialize};

/// What this node's copy answers while the shared store is unreachable. A record it does not hold
/// may exist all the same, so "none" would be a guess: the caller is told to try again later
/// (a station connecting gets 503, an Authorize or StartTransaction a CALLERROR it retries, rather
/// than a definite Invalid for a tag that may be valid).
pub(super) fn unknown_while_down<T>(cached: Option<T>) -> StoreResult<Option<T>> {
    match cached {
        Some(found) => Ok(Some(found)),
        None => Err(StoreError::unavailable("not known on this node, and the shared store cannot be reached to ask")),
    }
}

impl Inner {
    /// Writes a record the shared store answered with into a cache, or drops it when there is none.
    /// True when the cache changed.
    pub(super) fn cache<T: Serialize>(&self, tree: &sled::Tree, k: &[u8], value: Option<&T>) -> bool {
        let r = match value {
            Some(v) => encode(v).and_then(|bytes| {
                let same = tree.get(k).map_err(backend)?.is_some_and(|old| old.as_ref() == bytes.as_slice());
                if !same {
                    tree.insert(k, bytes).map_err(backend)?;
                }
                Ok(!same)
            }),
            None => tree.remove(k).map(|old| old.is_some()).map_err(backend),
        };
        r.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not update this node's cache of the shared store");
            false
        })
    }

    /// Makes a changed cache entry durable at once: a station read (an Authorize, a connection) is
    /// not followed by a flush of its own, and what it cached is what serves the station after a
    /// restart while Redis is down. Cache entries change rarely, so this is rarely a flush.
    pub(super) async fn keep_cached(&self, changed: bool) {
        if changed {
            if let Err(e) = self.local.flush().await {
                tracing::warn!(error = %e, "could not make this node's cache of the shared store durable");
            }
        }
    }

    /// A station-path read: the shared store's answer (cached here) while it answers, else the cache.
    pub(super) async fn cached_read<T, F>(&self, tree: &sled::Tree, k: Vec<u8>, remote: F) -> StoreResult<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: std::future::Future<Output = StoreResult<Option<T>>>,
    {
        if !self.settings.networked {
            return remote.await;
        }
        if self.up() {
            match remote.await {
                Ok(found) => {
                    self.keep_cached(self.cache(tree, &k, found.as_ref())).await;
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
    pub(super) async fn current_transaction(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
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
        Err(StoreError::unavailable(format!(
            "transaction {transaction_id} is not on this node and the shared store is unreachable"
        )))
    }

    /// Like [`Inner::current_transaction`], for a 2.0.1 transaction known by the station's reference;
    /// `None` also when the shared store cannot be asked (the event then creates it).
    pub(super) async fn current_by_reference(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
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
    pub(super) async fn refreshed(&self, found: Option<Transaction>) -> StoreResult<Option<Transaction>> {
        if let Some(tx) = &found {
            self.local.put_transaction(tx).await?;
        }
        Ok(found)
    }

    /// Writes a transaction record to the replica and the log.
    pub(super) async fn record(&self, tx: &Transaction) -> StoreResult<()> {
        self.local.put_transaction(tx).await?;
        self.append(WalOp::PutTransaction(tx.clone()))
    }

    /// Drops everything this node holds of the account that could reach the shared store again: its
    /// log entries (and those set aside) and its cached stations and id tags.
    pub(super) async fn forget_account(&self, account_id: &AccountId) -> StoreResult<usize> {
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
            if decode::<Account>(&v).map_or(true, |a| a.id == *account_id) {
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
}

/// A station's transactions as this node's station path sees them, for the transaction rules: read
/// where [`Inner::current_transaction`] finds them, written to the replica and the log. The
/// station's lock is held around a whole rule, so the swap cannot lose to another writer here.
pub(super) struct NodeTransactions<'a> {
    pub(super) inner: &'a Inner,
    pub(super) station_id: &'a StationId,
}

#[async_trait]
impl TransactionRecords for NodeTransactions<'_> {
    type Version = ();

    async fn load(&self, at: TransactionAt<'_>) -> StoreResult<Option<(Transaction, ())>> {
        let found = match at {
            TransactionAt::Id { account_id, id } => {
                self.inner.current_transaction(account_id, self.station_id, id).await?
            }
            TransactionAt::Reference { account_id, station_id, reference } => {
                self.inner.current_by_reference(account_id, station_id, reference).await?
            }
        };
        Ok(found.map(|tx| (tx, ())))
    }

    async fn new_id(&self) -> StoreResult<i32> {
        self.inner.allocate_id().await
    }

    async fn swap(&self, _old: Option<&()>, new: &Transaction) -> StoreResult<bool> {
        self.inner.record(new).await?;
        Ok(true)
    }
}
