//! Wakes the readers of a tenant's feed when this node appends to it: a store appends, then
//! [`FeedSignal::wake`]s the account's listeners, who read what is new from the store. Events
//! appended on another node of a cluster wake no one here; readers also look again on their own
//! every so often (`events.poll_interval_ms`).

use crate::ids::AccountId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// The listeners of each account's feed on this node.
#[derive(Default)]
pub struct FeedSignal {
    listeners: Mutex<HashMap<AccountId, Arc<Notify>>>,
}

impl FeedSignal {
    /// What a reader of the account's feed waits on (`notified()`, taken before it reads, so an
    /// append between its read and its wait is not missed).
    pub fn listen(&self, account_id: &AccountId) -> Arc<Notify> {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        listeners.entry(account_id.clone()).or_default().clone()
    }

    /// The account's feed grew: wakes whoever listens. An account no one listens to any more is
    /// forgotten here.
    pub fn wake(&self, account_id: &AccountId) {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(notify) = listeners.get(account_id) {
            if Arc::strong_count(notify) == 1 {
                listeners.remove(account_id);
            } else {
                notify.notify_waiters();
            }
        }
    }

    /// Accounts with a listener entry (for tests of the bound).
    pub fn len(&self) -> usize {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_listener_is_woken_by_its_account_only_and_forgotten_once_gone() {
        let signal = FeedSignal::default();
        let (a, b): (AccountId, AccountId) = ("a".into(), "b".into());
        {
            let notify = signal.listen(&a);
            let woken = notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            signal.wake(&b);
            assert!(tokio::time::timeout(Duration::from_millis(50), woken.as_mut()).await.is_err());
            signal.wake(&a);
            assert!(tokio::time::timeout(Duration::from_millis(50), woken.as_mut()).await.is_ok());
        }
        signal.wake(&a);
        assert!(signal.is_empty());
    }
}
