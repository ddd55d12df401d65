//! Group commit: many writers wait on one flush.
//!
//! A writer that needs its writes durable sends a request to the committer thread and waits. The
//! committer takes the first request, waits up to the commit window for others, takes every request
//! that arrived by then, flushes the database once and wakes them all. Requests that arrive during
//! a flush share the next one. With `per_message`, every request gets a flush of its own (the
//! behaviour group commit replaces, kept for comparison benchmarks).

use super::{Cause, StoreError, StoreResult};
use crate::metrics as m;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How writes become durable.
#[derive(Debug, Clone, Copy)]
pub struct CommitPolicy {
    /// How long the first waiting writer waits for others to share its flush.
    pub window: Duration,
    /// One flush per request, no sharing.
    pub per_message: bool,
}

impl Default for CommitPolicy {
    fn default() -> Self {
        Self { window: Duration::from_micros(500), per_message: false }
    }
}

/// A flush's outcome, shared by every writer it served.
type Flushed = Result<(), Arc<sled::Error>>;

type Waiter = (Instant, oneshot::Sender<Flushed>);

/// Handle to the committer thread; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct GroupCommit {
    requests: mpsc::Sender<Waiter>,
    flushes: Arc<AtomicU64>,
}

impl GroupCommit {
    /// Starts the committer for `db`.
    pub fn start(db: sled::Db, policy: CommitPolicy) -> std::io::Result<Self> {
        // Registered before the first flush, so that a fresh node already exports them (empty).
        let _ = (
            metrics::histogram!(m::STORE_FLUSH_DURATION),
            metrics::histogram!(m::GROUP_COMMIT_BATCH),
            metrics::histogram!(m::DURABLE_WAIT),
        );
        let (requests, rx) = mpsc::channel::<Waiter>();
        let flushes = Arc::new(AtomicU64::new(0));
        let counter = flushes.clone();
        std::thread::Builder::new().name("group-commit".into()).spawn(move || run(db, policy, rx, counter))?;
        Ok(Self { requests, flushes })
    }

    /// Flushes completed so far.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Acquire)
    }

    /// Resolves once every write made before the call is on disk.
    pub async fn durable(&self) -> StoreResult<()> {
        let stopped = || StoreError::backend("group committer stopped");
        let (tx, rx) = oneshot::channel();
        self.requests.send((Instant::now(), tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?.map_err(|e| StoreError::Backend(Cause::from_source("flush", e)))
    }
}

fn run(db: sled::Db, policy: CommitPolicy, rx: mpsc::Receiver<Waiter>, flushes: Arc<AtomicU64>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        if !policy.per_message {
            let deadline = batch[0].0 + policy.window;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match rx.recv_timeout(left) {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            batch.extend(rx.try_iter());
        }
        let started = Instant::now();
        let result: Flushed = db.flush().map(|_| ()).map_err(Arc::new);
        let done = Instant::now();
        flushes.fetch_add(1, Ordering::Release);
        metrics::histogram!(m::STORE_FLUSH_DURATION).record((done - started).as_secs_f64());
        metrics::histogram!(m::GROUP_COMMIT_BATCH).record(batch.len() as f64);
        if let Err(e) = &result {
            tracing::error!(error = %e, "flush failed; waiting writes are told so");
        }
        for (asked, waiter) in batch {
            metrics::histogram!(m::DURABLE_WAIT).record((done - asked).as_secs_f64());
            let _ = waiter.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_writers_share_flushes_and_all_are_answered() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let gc = GroupCommit::start(db.clone(), CommitPolicy { window: Duration::from_millis(20), per_message: false })
            .unwrap();
        let writers: Vec<_> = (0..50u32)
            .map(|i| {
                let (db, gc) = (db.clone(), gc.clone());
                tokio::spawn(async move {
                    db.insert(i.to_be_bytes(), &b"v"[..]).unwrap();
                    gc.durable().await
                })
            })
            .collect();
        let started = Instant::now();
        for w in writers {
            w.await.unwrap().unwrap();
        }
        // Fifty writers with a 20 ms window finish in a handful of windows, not fifty flushes' worth
        // of windows.
        assert!(started.elapsed() < Duration::from_millis(20 * 25), "{:?}", started.elapsed());
        assert!(gc.flushes() < 25, "{} flushes for 50 writers", gc.flushes());
        assert_eq!(db.len(), 50);
    }

    #[tokio::test]
    async fn per_message_policy_flushes_once_per_writer() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let gc = GroupCommit::start(db, CommitPolicy { window: Duration::ZERO, per_message: true }).unwrap();
        let writers: Vec<_> = (0..10)
            .map(|_| {
                let gc = gc.clone();
                tokio::spawn(async move { gc.durable().await })
            })
            .collect();
        for w in writers {
            w.await.unwrap().unwrap();
        }
        assert_eq!(gc.flushes(), 10);
    }
}
