//! The sled store's side of retention: a walk over one account's records of a kind, removing what
//! the rules of [`crate::model`] call old, a batch at a time from a position in the tree.

use super::{backend, decode, prefix, SledStore, StoredReadings, SEP};
use crate::ids::AccountId;
use crate::model::{
    command_is_old, event_is_old, login_is_old, reading_is_old, CommandRecord, DataKind, LoginEvent, PruneStep,
    StationEvent,
};
use crate::store::{StoreError, StoreResult};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
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
        };
        let start = match after {
            Some(a) => {
                let suffix = URL_SAFE_NO_PAD.decode(a).map_err(|_| StoreError::backend("a bad pruning position"))?;
                Excluded([p.as_slice(), &suffix].concat())
            }
            None => Included(p.clone()),
        };
        let mut end = p.clone();
        // The prefix ends with SEP (0): the same prefix with 1 there is the first key after all of it.
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let batch = batch.max(1);
        let (mut removed, mut looked, mut last) = (0, 0, None);
        for item in tree.range::<Vec<u8>, _>((start, Excluded(end))) {
            let (k, v) = item.map_err(backend)?;
            looked += 1;
            let old = match kind {
                DataKind::MeterValues => self.old_readings(account_id, &k[p.len()..], &v, before)?,
                DataKind::StationEvents => usize::from(event_is_old(&decode::<StationEvent>(&v)?, before)),
                DataKind::LoginHistory => usize::from(login_is_old(&decode::<LoginEvent>(&v)?, before)),
                DataKind::FinishedCommands => usize::from(command_is_old(&decode::<CommandRecord>(&v)?, before)),
            };
            if old > 0 {
                // Only if it is still what was read: a record changed meanwhile waits for the next pass.
                if tree.compare_and_swap(&k, Some(&v), None::<&[u8]>).map_err(backend)?.is_ok() {
                    removed += old;
                }
            }
            last = Some(k[p.len()..].to_vec());
            if looked == batch {
                break;
            }
        }
        let next = if looked == batch { last.map(|l| URL_SAFE_NO_PAD.encode(l)) } else { None };
        Ok(PruneStep { removed, next })
    }

    /// How many readings the meter-values entry `v` (key `k` after the account's prefix: station,
    /// transaction, …) holds when every one of them is old and its transaction is not open; else 0.
    fn old_readings(&self, account_id: &AccountId, k: &[u8], v: &[u8], before: DateTime<Utc>) -> StoreResult<usize> {
        let station_end =
            k.iter().position(|b| *b == SEP).ok_or_else(|| StoreError::backend("bad meter-values key"))?;
        let tx = k
            .get(station_end + 1..station_end + 5)
            .and_then(|t| <[u8; 4]>::try_from(t).ok())
            .map(i32::from_be_bytes)
            .ok_or_else(|| StoreError::backend("bad meter-values key"))?;
        if tx != 0 && self.open_transactions.contains_key(Self::transaction_key(account_id, tx)).map_err(backend)? {
            return Ok(0);
        }
        let records = match decode::<StoredReadings>(v)? {
            StoredReadings::Many(records) => records,
            StoredReadings::One(record) => vec![record],
        };
        Ok(if records.iter().all(|r| reading_is_old(r, before)) { records.len() } else { 0 })
    }
}
