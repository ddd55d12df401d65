//! This node's connection to the cluster's Redis, shared by [`presence`](super::presence) and the
//! [`bus`](super::bus), and [`LocalNode`]: what they hand this node's own stations.

use crate::actors::station::{DisconnectReason, SessionId, StationKey};
use crate::config::ClusterSettings;
use crate::fleet::command::{Command, CommandResult};
use crate::ids::AccountId;
use crate::store::RedisConnection;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What this node does for the cluster with its own stations: what the bus receives and the
/// presence refresh finds is done through it (implemented by the fleet's local part).
#[async_trait::async_trait]
pub trait LocalNode: Send + Sync {
    /// Sends the command on the station's session here; `None` when it has none here.
    async fn send_command(&self, key: &StationKey, command: Command) -> Option<CommandResult>;
    /// Closes the station's session here, if it has one.
    async fn close(&self, key: &StationKey, reason: DisconnectReason);
    /// Closes the station's session here if it is still `session`.
    fn close_if_session(&self, key: &StationKey, session: SessionId, reason: DisconnectReason);
    /// Tells the station's session here that commands were queued for it.
    async fn nudge_delivery(&self, key: &StationKey);
    /// Another node erased the account: close its sessions here and sweep what this node holds of it.
    async fn account_erased(&self, account_id: &AccountId);
}

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis: timed out")]
    Timeout,
    #[error("cluster message: {0}")]
    Encoding(#[from] serde_json::Error),
}

/// This node's connection to the cluster's Redis, and its name in it.
pub struct RedisLink {
    pub(super) node_id: String,
    prefix: String,
    /// A client per configured URL, for subscriptions: pub/sub reaches every node of a Redis
    /// Cluster, so one subscription to any of them hears everything.
    subscribers: Vec<redis::Client>,
    /// The subscriber tried next.
    next_subscriber: AtomicUsize,
    conn: RedisConnection,
    pub(super) timeout: Duration,
    up: AtomicBool,
}

impl RedisLink {
    /// Connects lazily: a node starts while Redis is down, and catches up when it is back.
    pub fn new(settings: &ClusterSettings, node_id: String) -> anyhow::Result<Arc<RedisLink>> {
        let target = settings.redis_target().map_err(anyhow::Error::msg)?;
        let subscribers =
            target.urls().iter().map(|url| redis::Client::open(url.as_str())).collect::<Result<Vec<_>, _>>()?;
        let conn = RedisConnection::lazy(&target, settings.redis_timeout())?;
        metrics::gauge!(crate::metrics::CLUSTER_REDIS_UP).set(1.0);
        Ok(Arc::new(RedisLink {
            node_id,
            prefix: settings.key_prefix.clone(),
            subscribers,
            next_subscriber: AtomicUsize::new(0),
            conn,
            timeout: settings.redis_timeout(),
            up: AtomicBool::new(true),
        }))
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// A client to subscribe with: each call the next of the configured URLs, so a subscription
    /// lost with its node is made again on another.
    pub(super) fn subscriber(&self) -> &redis::Client {
        let n = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        // `RedisTarget` has at least one URL, so there is at least one subscriber.
        &self.subscribers[n % self.subscribers.len()]
    }

    /// Whether the shared Redis is a Redis Cluster.
    pub(super) fn is_cluster(&self) -> bool {
        self.conn.is_cluster()
    }

    /// The liveness key of `node` (see [`presence`](super::presence)).
    pub(super) fn node_key(&self, node: &str) -> String {
        self.key(format_args!("node:{node}"))
    }

    pub(super) fn key(&self, rest: std::fmt::Arguments<'_>) -> String {
        format!("{}:{rest}", self.prefix)
    }

    fn mark(&self, up: bool, error: Option<&dyn std::fmt::Display>) {
        let was = self.up.swap(up, Ordering::Relaxed);
        metrics::gauge!(crate::metrics::CLUSTER_REDIS_UP).set(if up { 1.0 } else { 0.0 });
        match (was, up, error) {
            (true, false, Some(e)) => tracing::warn!(error = %e, "cluster: Redis unreachable"),
            (false, true, _) => tracing::info!("cluster: Redis reachable again"),
            _ => {}
        }
    }

    pub(super) async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, ClusterError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => {
                self.mark(true, None);
                Ok(v)
            }
            Ok(Err(e)) => {
                self.mark(false, Some(&e));
                Err(e.into())
            }
            Err(_) => {
                self.mark(false, Some(&"timed out"));
                Err(ClusterError::Timeout)
            }
        }
    }

    /// Runs commands on keys of several stations, one answer each; `None` when any failed (Redis
    /// is then marked down). One pipeline on a single Redis; on a Redis Cluster the keys are in
    /// different slots, which one pipeline cannot span, so the commands go out at once, each to the
    /// node of its key.
    pub(super) async fn run_batch<T: redis::FromRedisValue + Send>(&self, cmds: &[redis::Cmd]) -> Option<Vec<T>> {
        let run = async {
            if self.conn.is_cluster() {
                let each = cmds.iter().map(|cmd| {
                    let mut conn = self.conn.clone();
                    async move { cmd.query_async::<T>(&mut conn).await }
                });
                futures_util::future::join_all(each).await.into_iter().collect::<Result<Vec<T>, _>>()
            } else {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd.clone());
                }
                pipe.query_async::<Vec<T>>(&mut self.conn.clone()).await
            }
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.mark(false, Some(&e));
                None
            }
            Err(_) => {
                self.mark(false, Some(&"timed out"));
                None
            }
        }
    }
}

/// Locks a mutex; a panic while it was held poisons nothing that matters here (plain maps).
pub(super) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
