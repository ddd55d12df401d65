//! The transaction-id lease: blocks of ids reserved from the shared sequence, so a node hands out
//! ids nobody else gets, while the shared store is unreachable too.

use super::{lock, Inner};
use crate::store::sled::{backend, encode, get};
use crate::store::{StoreError, StoreResult};
use serde::{Deserialize, Serialize};

const LEASE_KEY: &[u8] = b"ranges";

/// Transaction ids reserved for this node: `[start, end)` ranges, handed out from the first.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Lease {
    ranges: Vec<(i32, i32)>,
}

impl Lease {
    pub(super) fn remaining(&self) -> i64 {
        self.ranges.iter().map(|(s, e)| i64::from(*e) - i64::from(*s)).sum()
    }

    pub(super) fn take(&mut self) -> Option<i32> {
        self.ranges.retain(|(s, e)| s < e);
        let first = self.ranges.first_mut()?;
        let id = first.0;
        first.0 += 1;
        Some(id)
    }
}

impl Inner {
    pub(super) fn read_lease(&self) -> StoreResult<Lease> {
        Ok(get(&self.lease, LEASE_KEY)?.unwrap_or_default())
    }

    pub(super) fn lease_remaining(&self) -> StoreResult<i64> {
        let _g = lock(&self.lease_lock);
        Ok(self.read_lease()?.remaining())
    }

    /// Takes an id from the lease, if it has one. The lease is written before the record that uses
    /// the id, so the flush that makes the record durable makes the id's consumption durable too.
    pub(super) fn take_id(&self) -> StoreResult<Option<(i32, i64)>> {
        let _g = lock(&self.lease_lock);
        let mut lease = self.read_lease()?;
        let Some(id) = lease.take() else { return Ok(None) };
        self.lease.insert(LEASE_KEY, encode(&lease)?).map_err(backend)?;
        Ok(Some((id, lease.remaining())))
    }

    /// A transaction id no one else has or will get: from the lease, refilled from the shared sequence
    /// when it runs out (which fails while the shared store is down).
    pub(super) async fn allocate_id(&self) -> StoreResult<i32> {
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
        Err(StoreError::unavailable("no transaction id left on this node and the shared store is unreachable"))
    }

    /// Reserves a block of ids from the shared sequence when the lease runs low.
    pub(super) async fn refill_lease(&self) -> StoreResult<()> {
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
}
