//! The sled store's side of retention: a walk over one account's records of a kind, removing what
//! the rules of [`crate::model`] call old, a batch at a time from a position in the tree.

use super::{backend, decode, meter_key_parts, prefix, prefix_end, stored_readings, transactional, SledStore};
use crate::ids::AccountId;
use crate::model::{
    command_is_old, event_is_old, login_is_old, reading_is_old, transaction_is_old, CommandRecord, DataKind,
    LoginEvent, PruneStep, StationEvent, Transaction,
};
use crate::store::{StoreError, StoreResult};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use sled::transaction::Transactional;
use std::ops::Bound::{Excluded, Included};

impl SledStore {
    /// [`crate::store::AccountStore::account_ids`], on the calling thread: accounts in key order.
    pub(super) fn account_ids_now(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<(Vec<AccountId>, Option<String>)> {
        let start = match &after {
            Some(a) => Excluded(a.as_bytes().to_vec()),
            None => Included(Vec::new()),
        };
        let mut ids = Vec::new();
        for item in self.accounts.range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded)) {
            let (k, _) = item.map_err(backend)?;
            ids.push(AccountId::from(String::from_utf8_lossy(&k).to_string()));
            if ids.len() == limit.max(1) {
                let next = ids.last().map(|id| id.as_str().to_string());
                return Ok((ids, next));
            }
        }
        Ok((ids, None))
    }

    /// [`crate::store::AccountStore::prune`], on the calling thread. The position is the last key
    /// looked at (after the account's prefix).
    pub(super) fn prune_now(
        &self,
        account_id: &AccountId,
        kind: DataKind,
        before: DateTime<Utc>,
        after: Option<String>,
        batch: usize,
    ) -> StoreResult<PruneStep> {
        let p = prefix(&[account_id.as_bytes()]);
        let tree = match kind {
            DataKind::MeterValues => &self.meter_values,
            DataKind::StationEvents => &self.events,
            DataKind::LoginHistory => &self.login_events,
            DataKind::FinishedCommands => &self.commands,
            DataKind::FinishedTransactions => &self.transactions,
        };
        let start = match after {
            Some(a) => {
                let suffix = URL_SAFE_NO_PAD.decode(a).map_err(|_| StoreError::backend("a bad pruning position"))?;
                Excluded([p.as_slice(), &suffix].concat())
            }
            None => Included(p.clone()),
        };
        // Removes the entry, counted as `records`, if there are any and it is still what was read: a
        // record changed meanwhile waits for the next pass.
        let remove = |k: &[u8], v: &[u8], records: usize| -> StoreResult<usize> {
            if records == 0 {
                return Ok(0);
            }
            Ok(if tree.compare_and_swap(k, Some(v), None::<&[u8]>).map_err(backend)?.is_ok() { records } else { 0 })
        };
        let batch = batch.max(1);
        let (mut removed, mut looked, mut last) = (0, 0, None);
        for item in tree.range::<Vec<u8>, _>((start, Excluded(prefix_end(&p)))) {
            let (k, v) = item.map_err(backend)?;
            looked += 1;
            removed += match kind {
                DataKind::MeterValues => remove(&k, &v, self.old_readings(account_id, &k[p.len()..], &v, before)?)?,
                DataKind::StationEvents => {
                    remove(&k, &v, usize::from(event_is_old(&decode::<StationEvent>(&v)?, before)))?
                }
                DataKind::LoginHistory => {
                    remove(&k, &v, usize::from(login_is_old(&decode::<LoginEvent>(&v)?, before)))?
                }
                DataKind::FinishedCommands => {
                    remove(&k, &v, usize::from(command_is_old(&decode::<CommandRecord>(&v)?, before)))?
                }
                // With its index entries and readings, in the trees beside this one.
                DataKind::FinishedTransactions => {
                    let tx: Transaction = decode(&v)?;
                    usize::from(transaction_is_old(&tx, before) && self.remove_transaction(&k, &v, &tx)?)
                }
            };
            last = Some(k[p.len()..].to_vec());
            if looked == batch {
                break;
            }
        }
        let next = if looked == batch { last.map(|l| URL_SAFE_NO_PAD.encode(l)) } else { None };
        Ok(PruneStep { removed, next })
    }

    /// Removes a transaction (stored under `k` as `v`, if it still is) with its index entries in one
    /// sled transaction, then its readings. False when it changed since it was read.
    fn remove_transaction(&self, k: &[u8], v: &[u8], tx: &Transaction) -> StoreResult<bool> {
        let by_station = Self::station_transaction_key(tx);
        let start = tx.start_identity().map(|s| Self::start_key(&s));
        let reference =
            tx.station_transaction_id.as_deref().map(|r| Self::reference_key(&tx.account_id, &tx.station_id, r));
        let r = (&self.transactions, &self.transactions_by_station, &self.transaction_starts, &self.transaction_refs)
            .transaction(|(txs, stations, starts, refs)| {
                if txs.get(k)?.as_deref() != Some(v) {
                    return Ok(false);
                }
                txs.remove(k)?;
                stations.remove(by_station.as_slice())?;
                if let Some(start) = &start {
                    starts.remove(start.as_slice())?;
                }
                if let Some(reference) = &reference {
                    refs.remove(reference.as_slice())?;
                }
                Ok(true)
            });
        if !transactional(r)? {
            return Ok(false);
        }
        let readings = prefix(&[tx.account_id.as_bytes(), tx.station_id.as_bytes(), &tx.id.to_be_bytes()]);
        let mut batch = sled::Batch::default();
        for item in self.meter_values.scan_prefix(readings) {
            let (k, _) = item.map_err(backend)?;
            batch.remove(k);
        }
        self.meter_values.apply_batch(batch).map_err(backend)?;
        Ok(true)
    }

    /// How many readings the meter-values entry `v` (key `k` after the account's prefix: station,
    /// transaction, …) holds when every one of them is old and its transaction is not open; else 0.
    fn old_readings(&self, account_id: &AccountId, k: &[u8], v: &[u8], before: DateTime<Utc>) -> StoreResult<usize> {
        let (_, tx) = meter_key_parts(k)?;
        if tx != 0 && self.open_transactions.contains_key(Self::transaction_key(account_id, tx)).map_err(backend)? {
            return Ok(0);
        }
        let records = stored_readings(v)?;
        Ok(if records.iter().all(|r| reading_is_old(r, before)) { records.len() } else { 0 })
    }
}
