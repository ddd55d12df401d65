//! The transaction rules of [`Transaction`] ("first stop wins", "a seqNo seen changes nothing",
//! "the first event creates it"), run once for every backend over the one compare-and-set each gives
//! ([`TransactionRecords`]): read the record, apply the rule to a copy, write it only if the stored
//! record is still the one read, else read again.

use super::{EventOutcome, NewTransactionFn, StopOutcome, StoreError, StoreResult, TransactionUpdate};
use crate::ids::{AccountId, StationId};
use crate::model::{Stopping, Transaction};
use async_trait::async_trait;
use rand::Rng;
use std::time::Duration;

/// How often a compare-and-set is recomputed after another writer changed the record in between.
pub(crate) const CAS_ATTEMPTS: u32 = 32;

/// Which transaction record: by its id, or (2.0.1) by the station's own transaction id.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TransactionAt<'a> {
    Id { account_id: &'a AccountId, id: i32 },
    Reference { account_id: &'a AccountId, station_id: &'a StationId, reference: &'a str },
}

/// A backend's transaction records, with the one compare-and-set the rules need.
#[async_trait]
pub(crate) trait TransactionRecords: Send + Sync {
    /// What the record was when it was read (its stored bytes, say): the swap checks against it.
    type Version: Send + Sync;

    /// The record and its version; `None` when there is none.
    async fn load(&self, at: TransactionAt<'_>) -> StoreResult<Option<(Transaction, Self::Version)>>;
    /// A new id from the transaction sequence.
    async fn new_id(&self) -> StoreResult<i32>;
    /// Writes `new` if the stored record is still the one read as `old`; with `old` `None`, creates
    /// it (and the index that finds it by the station's reference) if no record has that reference
    /// yet. False when another writer came first.
    async fn swap(&self, old: Option<&Self::Version>, new: &Transaction) -> StoreResult<bool>;
}

/// Pauses a little, more after each lost compare-and-set, so racing writers spread out.
pub(crate) async fn backoff(attempt: u32) {
    let micros = rand::thread_rng().gen_range(0..=200 * u64::from(attempt + 1));
    tokio::time::sleep(Duration::from_micros(micros)).await;
}

pub(crate) fn contention(what: &str) -> StoreError {
    StoreError::backend(format!("{what}: the record kept changing under {CAS_ATTEMPTS} attempts to update it"))
}

/// A StopTransaction ([`Transaction::stop`]).
pub(crate) async fn stop_transaction<S: TransactionRecords + ?Sized>(
    store: &S,
    account_id: &AccountId,
    station_id: &StationId,
    transaction_id: i32,
    stop: &crate::model::TransactionStop,
) -> StoreResult<StopOutcome> {
    for attempt in 0..CAS_ATTEMPTS {
        let Some((mut tx, version)) = store.load(TransactionAt::Id { account_id, id: transaction_id }).await? else {
            return Ok(StopOutcome::Unknown);
        };
        match tx.stop(station_id, stop) {
            Stopping::OtherStation => return Ok(StopOutcome::Unknown),
            Stopping::AlreadyStopped => return Ok(StopOutcome::AlreadyStopped(tx)),
            Stopping::Stopped => {
                if store.swap(Some(&version), &tx).await? {
                    return Ok(StopOutcome::Stopped(tx));
                }
            }
        }
        backoff(attempt).await;
    }
    Err(contention("stop_transaction"))
}

/// An OCPP 2.0.1 TransactionEvent ([`Transaction::apply_event`]); the first event seen of a
/// transaction creates it, with a new id.
pub(crate) async fn apply_transaction_event<S: TransactionRecords + ?Sized>(
    store: &S,
    at: TransactionAt<'_>,
    seq_no: u64,
    create: NewTransactionFn<'_>,
    apply: TransactionUpdate<'_>,
) -> StoreResult<EventOutcome> {
    for attempt in 0..CAS_ATTEMPTS {
        let (old, mut tx) = match store.load(at).await? {
            Some((tx, version)) => (Some(version), tx),
            None => (None, create(store.new_id().await?)),
        };
        let created = old.is_none();
        let applied = tx.apply_event(seq_no, apply);
        if !applied && !created {
            return Ok(EventOutcome { transaction: tx, applied, created });
        }
        if store.swap(old.as_ref(), &tx).await? {
            return Ok(EventOutcome { transaction: tx, applied, created });
        }
        // Another writer changed it (or created it first, the id taken here staying unused): go
        // again from its record.
        backoff(attempt).await;
    }
    Err(contention("apply_transaction_event"))
}
