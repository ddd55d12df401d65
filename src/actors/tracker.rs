//! "Until these sessions are gone", without polling: each session holds a [`SessionGuard`], and
//! [`SessionTracker::close_and_wait`] returns once every guard has been dropped — the drop-guard
//! channel of tokio-rs/mini-redis (`shutdown.rs`, `server.rs`). A guard lives as long as the
//! session actor holding it, so the wait ends when the last of them has stopped.

use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;

/// Held by a session (or by whoever waits on its behalf); dropping it is all it does.
#[derive(Debug, Clone)]
pub struct SessionGuard {
    _tx: mpsc::Sender<()>,
}

/// Hands out guards until it is closed, then waits for them to be dropped.
#[derive(Debug)]
pub struct SessionTracker {
    tx: Mutex<Option<mpsc::Sender<()>>>,
    rx: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

impl Default for SessionTracker {
    fn default() -> Self {
        SessionTracker::new()
    }
}

impl SessionTracker {
    pub fn new() -> SessionTracker {
        SessionTracker::with_guard().0
    }

    /// A tracker and its first guard, for one wait.
    pub fn with_guard() -> (SessionTracker, SessionGuard) {
        // Nothing is ever sent: the channel only reports that every sender is gone.
        let (tx, rx) = mpsc::channel(1);
        let guard = SessionGuard { _tx: tx.clone() };
        (SessionTracker { tx: Mutex::new(Some(tx)), rx: tokio::sync::Mutex::new(rx) }, guard)
    }

    /// Whether the tracker was closed (it hands out no more guards).
    pub fn is_closed(&self) -> bool {
        lock(&self.tx).is_none()
    }

    /// A guard, or `None` once the tracker is closed.
    pub fn guard(&self) -> Option<SessionGuard> {
        lock(&self.tx).as_ref().map(|tx| SessionGuard { _tx: tx.clone() })
    }

    /// Hands out no more guards.
    pub fn close(&self) {
        lock(&self.tx).take();
    }

    /// Hands out no more guards; answers whether every guard was dropped within `timeout`.
    pub async fn close_and_wait(&self, timeout: Duration) -> bool {
        self.close();
        let mut rx = self.rx.lock().await;
        tokio::time::timeout(timeout, rx.recv()).await.is_ok()
    }
}

/// Locks a mutex; a panic while it was held poisons nothing here (an `Option` of a sender).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_wait_ends_when_the_last_guard_is_dropped() {
        let tracker = SessionTracker::new();
        let (a, b) = (tracker.guard().expect("open"), tracker.guard().expect("open"));
        let b2 = b.clone();
        drop(a);
        let later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(b);
            drop(b2);
        });
        assert!(tracker.close_and_wait(Duration::from_secs(5)).await);
        assert!(tracker.guard().is_none(), "closed: no new guards");
        later.await.expect("the task ran");
    }

    #[tokio::test]
    async fn the_wait_gives_up_at_its_timeout() {
        let tracker = SessionTracker::new();
        let _held = tracker.guard();
        assert!(!tracker.close_and_wait(Duration::from_millis(20)).await);
    }
}
