//! Cluster mode: several nodes behind one load balancer, sharing one Redis.
//!
//! - Presence: `{prefix}:presence:{account_id}:{station_id}` holds which node (and which session on it)
//!   has the station, as JSON, with a TTL of two WebSocket ping intervals. Each node refreshes the
//!   keys of its stations in pipelined batches every third of the TTL, so a killed node's stations
//!   show offline within the TTL. `{prefix}:node:{node_id}` is the node's own liveness key.
//! - Duplicate connections: a node claims a station with `SET … GET`; when the previous holder was
//!   another node, that node is told to close its session (the newer connection wins). A refresh that
//!   finds the key held by another session closes the local one too.
//! - Routing: every node subscribes to `{prefix}:inbox:{node_id}` and `{prefix}:broadcast`. An API
//!   command for a station on another node is published to that node's inbox; the node sends it on
//!   the station's session and publishes the answer to the asking node's inbox. Pub/sub delivers at
//!   most once: a lost message is a command timeout, as on one node.
//!
//! The account ids in keys are generated (no `:`), so a key names one station whatever its id holds.

use crate::actors::station_registry::{CloseAccount, CloseIfSession, CloseStation, Lookup};
use crate::actors::station_session::{CommandError, CommandResult, DeliverQueued, SendCommand};
use crate::actors::{DisconnectReason, SessionId, StationKey, StationRegistry};
use crate::config::ClusterSettings;
use crate::store::Store;
use actix::Addr;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Stations refreshed per pipelined round trip.
const REFRESH_BATCH: usize = 500;

/// Where a station is connected, as kept in its presence key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    pub node: String,
    pub session: SessionId,
    pub protocol: String,
    pub connected_at: DateTime<Utc>,
}

/// How a command sent through another node ended.
#[derive(Debug, Serialize, Deserialize)]
pub enum RemoteOutcome {
    /// The session's answer (or why there was none).
    Done(CommandResult),
    /// The station was not connected to that node (any more).
    NotConnected,
}

/// What nodes tell each other.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Envelope {
    Command {
        id: String,
        reply_to: String,
        account_id: String,
        station_id: String,
        action: String,
        payload: Value,
        timeout_ms: u64,
    },
    Reply {
        id: String,
        outcome: RemoteOutcome,
    },
    /// A newer connection took the station: close this session of it.
    Kick {
        account_id: String,
        station_id: String,
        session: SessionId,
    },
    /// The station was deleted, blocked or changed profile: close its session.
    Close {
        account_id: String,
        station_id: String,
    },
    /// The account was erased: close its sessions and refuse its late ones.
    CloseAccount {
        account_id: String,
    },
    /// New commands were queued for the station.
    DeliverQueued {
        account_id: String,
        station_id: String,
    },
}

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(String),
}

fn redis_err(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Redis(e.to_string())
}

/// This node's membership of the cluster.
pub struct Cluster {
    node_id: String,
    prefix: String,
    client: redis::Client,
    conn: ConnectionManager,
    ttl: Duration,
    timeout: Duration,
    /// Stations whose session is on this node.
    local: Mutex<HashMap<StationKey, Held>>,
    /// Commands sent through other nodes, by id, waiting for their answer.
    waiting: Mutex<HashMap<String, oneshot::Sender<RemoteOutcome>>>,
    registry: OnceLock<Addr<StationRegistry>>,
    store: OnceLock<Arc<dyn Store>>,
    up: AtomicBool,
}

/// A station whose session is on this node.
struct Held {
    /// The presence value (JSON) this node sets for it.
    value: String,
    /// Whether Redis has it: until then the refresh loop claims it again rather than extending it.
    claimed: bool,
}

/// Deletes the key only if it still holds this value.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
/// Extends the key if it holds this value or nothing (it expired); 0 when another session holds it.
const REFRESH: &str = "local v = redis.call('GET', KEYS[1]) \
    if v == false or v == ARGV[1] then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end return 0";

impl Cluster {
    /// Connects (lazily: a node starts while Redis is down, and catches up when it is back).
    /// `presence_ttl` is about two WebSocket ping intervals.
    pub fn new(settings: &ClusterSettings, node_id: String, presence_ttl: Duration) -> anyhow::Result<Arc<Cluster>> {
        let client = redis::Client::open(settings.redis_url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.redis_timeout()))
            .set_response_timeout(Some(settings.redis_timeout()))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Arc::new(Cluster {
            node_id,
            prefix: settings.key_prefix.clone(),
            client,
            conn,
            ttl: presence_ttl,
            timeout: settings.redis_timeout(),
            local: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashMap::new()),
            registry: OnceLock::new(),
            store: OnceLock::new(),
            up: AtomicBool::new(true),
        }))
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Starts listening to other nodes and refreshing presence; `registry` routes to local sessions,
    /// `store` is swept when another node erases an account.
    pub fn start(self: &Arc<Self>, registry: Addr<StationRegistry>, store: Arc<dyn Store>) {
        let _ = self.registry.set(registry);
        let _ = self.store.set(store);
        metrics::gauge!(crate::metrics::CLUSTER_REDIS_UP).set(1.0);
        for result in ["answered", "error", "timeout", "not_connected", "unreachable"] {
            metrics::counter!(crate::metrics::CLUSTER_ROUTED_COMMANDS, "result" => result).increment(0);
        }
        let this = self.clone();
        actix_rt::spawn(async move { this.listen().await });
        let this = self.clone();
        actix_rt::spawn(async move { this.refresh_loop().await });
    }

    fn presence_key(&self, key: &StationKey) -> String {
        format!("{}:presence:{}:{}", self.prefix, key.account_id, key.station_id)
    }

    fn inbox(&self, node: &str) -> String {
        format!("{}:inbox:{node}", self.prefix)
    }

    fn broadcast_channel(&self) -> String {
        format!("{}:broadcast", self.prefix)
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
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

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, ClusterError> {
        let mut conn = self.conn.clone();
        let r = tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await;
        match r {
            Ok(Ok(v)) => {
                self.mark(true, None);
                Ok(v)
            }
            Ok(Err(e)) => {
                self.mark(false, Some(&e));
                Err(redis_err(e))
            }
            Err(_) => {
                self.mark(false, Some(&"timed out"));
                Err(ClusterError::Redis("timed out".into()))
            }
        }
    }

    async fn publish(&self, channel: &str, envelope: &Envelope) -> Result<u64, ClusterError> {
        let body = serde_json::to_string(envelope).map_err(redis_err)?;
        self.run(redis::cmd("PUBLISH").arg(channel).arg(body)).await
    }

    /// A session of this node became the station's current one: claim the station cluster-wide and
    /// close the session another node may hold.
    pub fn claim(self: &Arc<Self>, key: StationKey, session: SessionId, protocol: &str) {
        let presence =
            Presence { node: self.node_id.clone(), session, protocol: protocol.to_string(), connected_at: Utc::now() };
        let Ok(value) = serde_json::to_string(&presence) else { return };
        lock(&self.local).insert(key.clone(), Held { value: value.clone(), claimed: false });
        let this = self.clone();
        actix_rt::spawn(async move { this.try_claim(key, value).await });
    }

    /// Sets the station's presence to `value` and tells the node it replaces, if any, to close its
    /// session. Failing (Redis down), the refresh loop tries again.
    async fn try_claim(&self, key: StationKey, value: String) {
        let k = self.presence_key(&key);
        // SET … GET: the value it replaced comes back in the same step.
        let mut cmd = redis::cmd("SET");
        cmd.arg(&k).arg(&value).arg("PX").arg(self.ttl_ms()).arg("GET");
        let old: Option<String> = match self.run(&cmd).await {
            Ok(old) => old,
            Err(e) => {
                tracing::debug!(station = %key, error = %e, "could not record the station's presence yet");
                return;
            }
        };
        let still_ours = match lock(&self.local).get_mut(&key) {
            Some(held) if held.value == value => {
                held.claimed = true;
                true
            }
            _ => false,
        };
        if !still_ours {
            // The session ended while the claim was on its way: take the claim back.
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(RELEASE).arg(1).arg(&k).arg(&value);
            let _ = self.run::<i64>(&cmd).await;
        }
        let Some(old) = old.and_then(|o| serde_json::from_str::<Presence>(&o).ok()) else { return };
        if old.node != self.node_id {
            tracing::info!(station = %key, old_node = %old.node, "station connected here: closing its session on the other node");
            let kick = Envelope::Kick {
                account_id: key.account_id.clone(),
                station_id: key.station_id.clone(),
                session: old.session,
            };
            if let Err(e) = self.publish(&self.inbox(&old.node), &kick).await {
                tracing::warn!(station = %key, error = %e, "could not tell the other node to close its session");
            }
        }
    }

    /// A session of this node ended: drop the station's presence if it is still this session's.
    pub fn release(self: &Arc<Self>, key: StationKey, session: SessionId) {
        let value = {
            let mut local = lock(&self.local);
            let ours = local.get(&key).and_then(|h| serde_json::from_str::<Presence>(&h.value).ok()).map(|p| p.session);
            if ours != Some(session) {
                return;
            }
            local.remove(&key).map(|h| h.value)
        };
        let Some(value) = value else { return };
        let this = self.clone();
        actix_rt::spawn(async move {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(RELEASE).arg(1).arg(this.presence_key(&key)).arg(value);
            if let Err(e) = this.run::<i64>(&cmd).await {
                tracing::warn!(station = %key, error = %e, "could not clear the station's presence; it expires on its own");
            }
        });
    }

    /// Where the station is connected, if anywhere.
    pub async fn presence(&self, key: &StationKey) -> Result<Option<Presence>, ClusterError> {
        let v: Option<String> = self.run(redis::cmd("GET").arg(self.presence_key(key))).await?;
        Ok(v.and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Where each of the account's stations is connected, for those that are.
    pub async fn presences(
        &self,
        account_id: &str,
        station_ids: &[String],
    ) -> Result<HashMap<String, Presence>, ClusterError> {
        let mut out = HashMap::new();
        for chunk in station_ids.chunks(REFRESH_BATCH) {
            let mut cmd = redis::cmd("MGET");
            for id in chunk {
                cmd.arg(self.presence_key(&StationKey { account_id: account_id.to_string(), station_id: id.clone() }));
            }
            let values: Vec<Option<String>> = self.run(&cmd).await?;
            for (id, v) in chunk.iter().zip(values) {
                if let Some(p) = v.and_then(|v| serde_json::from_str::<Presence>(&v).ok()) {
                    out.insert(id.clone(), p);
                }
            }
        }
        Ok(out)
    }

    /// Sends a command to the station's session on another node and waits for the answer.
    pub async fn send_command(
        &self,
        node: &str,
        key: &StationKey,
        action: &str,
        payload: Value,
        timeout: Duration,
    ) -> Result<RemoteOutcome, ClusterError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(id.clone(), tx);
        let envelope = Envelope::Command {
            id: id.clone(),
            reply_to: self.node_id.clone(),
            account_id: key.account_id.clone(),
            station_id: key.station_id.clone(),
            action: action.to_string(),
            payload,
            timeout_ms: timeout.as_millis() as u64,
        };
        let receivers = match self.publish(&self.inbox(node), &envelope).await {
            Ok(n) => n,
            Err(e) => {
                lock(&self.waiting).remove(&id);
                return Err(e);
            }
        };
        if receivers == 0 {
            // The node is gone; its presence keys have not expired yet.
            lock(&self.waiting).remove(&id);
            return Ok(RemoteOutcome::NotConnected);
        }
        // The remote session answers Timeout itself at the deadline; the margin covers the trip back.
        let r = tokio::time::timeout(timeout + Duration::from_secs(2), rx).await;
        lock(&self.waiting).remove(&id);
        match r {
            Ok(Ok(outcome)) => Ok(outcome),
            _ => Ok(RemoteOutcome::Done(Err(CommandError::Timeout))),
        }
    }

    /// Tells the node holding the station to close its session.
    pub async fn close_remote(&self, node: &str, key: &StationKey) -> Result<(), ClusterError> {
        let envelope = Envelope::Close { account_id: key.account_id.clone(), station_id: key.station_id.clone() };
        self.publish(&self.inbox(node), &envelope).await.map(|_| ())
    }

    /// Tells the node holding the station that commands were queued for it.
    pub async fn deliver_remote(&self, node: &str, key: &StationKey) -> Result<(), ClusterError> {
        let envelope =
            Envelope::DeliverQueued { account_id: key.account_id.clone(), station_id: key.station_id.clone() };
        self.publish(&self.inbox(node), &envelope).await.map(|_| ())
    }

    /// Tells every node that the account was erased.
    pub async fn close_account_everywhere(&self, account_id: &str) -> Result<(), ClusterError> {
        let envelope = Envelope::CloseAccount { account_id: account_id.to_string() };
        self.publish(&self.broadcast_channel(), &envelope).await.map(|_| ())
    }

    /// Receives what other nodes send, reconnecting while Redis is away.
    async fn listen(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.subscribe().await {
                Ok(mut pubsub) => {
                    backoff = Duration::from_millis(100);
                    tracing::info!(node = %self.node_id, "cluster: listening to other nodes");
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let Ok(body) = msg.get_payload::<String>() else { continue };
                        match serde_json::from_str::<Envelope>(&body) {
                            Ok(envelope) => self.clone().receive(envelope),
                            Err(e) => tracing::warn!(error = %e, "cluster: unreadable message from another node"),
                        }
                    }
                    tracing::warn!("cluster: lost the subscription to other nodes, reconnecting");
                }
                Err(e) => tracing::debug!(error = %e, "cluster: cannot subscribe yet"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSub, ClusterError> {
        let connect = async {
            let mut pubsub = self.client.get_async_pubsub().await.map_err(redis_err)?;
            pubsub.subscribe(self.inbox(&self.node_id)).await.map_err(redis_err)?;
            pubsub.subscribe(self.broadcast_channel()).await.map_err(redis_err)?;
            Ok(pubsub)
        };
        tokio::time::timeout(self.timeout * 2, connect).await.map_err(|_| ClusterError::Redis("timed out".into()))?
    }

    fn receive(self: Arc<Self>, envelope: Envelope) {
        let Some(registry) = self.registry.get().cloned() else { return };
        match envelope {
            Envelope::Command { id, reply_to, account_id, station_id, action, payload, timeout_ms } => {
                actix_rt::spawn(async move {
                    let key = StationKey { account_id, station_id };
                    let outcome = match registry.send(Lookup { key: key.clone() }).await {
                        Ok(Some((session, _))) => {
                            let (responder, answer) = oneshot::channel();
                            let deadline = Instant::now() + Duration::from_millis(timeout_ms);
                            let sent = session.send(SendCommand { action, payload, deadline, responder }).await;
                            match sent {
                                Ok(()) => RemoteOutcome::Done(answer.await.unwrap_or(Err(CommandError::Disconnected))),
                                Err(_) => RemoteOutcome::NotConnected,
                            }
                        }
                        _ => RemoteOutcome::NotConnected,
                    };
                    let reply = Envelope::Reply { id, outcome };
                    if let Err(e) = self.publish(&self.inbox(&reply_to), &reply).await {
                        tracing::warn!(station = %key, error = %e, "cluster: could not return a command's answer");
                    }
                });
            }
            Envelope::Reply { id, outcome } => {
                if let Some(waiter) = lock(&self.waiting).remove(&id) {
                    let _ = waiter.send(outcome);
                }
            }
            Envelope::Kick { account_id, station_id, session } => {
                let key = StationKey { account_id, station_id };
                registry.do_send(CloseIfSession { key, session_id: session, reason: DisconnectReason::Replaced });
            }
            Envelope::Close { account_id, station_id } => {
                let key = StationKey { account_id, station_id };
                registry.do_send(CloseStation { key, reason: DisconnectReason::Deleted });
            }
            Envelope::CloseAccount { account_id } => {
                let Some(store) = self.store.get().cloned() else { return };
                actix_rt::spawn(async move {
                    let sessions =
                        registry.send(CloseAccount { account_id: account_id.clone() }).await.unwrap_or_default();
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while sessions.iter().any(|s| s.connected()) && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    // What this node's sessions wrote last, still in its write-ahead log, must not
                    // reach the shared store after the erasure.
                    match store.erase_account(&account_id).await {
                        Ok(_) => {
                            tracing::info!(account = %account_id, "erased account: sessions closed, local records swept")
                        }
                        Err(e) => {
                            tracing::error!(account = %account_id, error = %e, "sweeping an erased account failed")
                        }
                    }
                });
            }
            Envelope::DeliverQueued { account_id, station_id } => {
                actix_rt::spawn(async move {
                    let key = StationKey { account_id, station_id };
                    if let Ok(Some((session, _))) = registry.send(Lookup { key }).await {
                        session.do_send(DeliverQueued);
                    }
                });
            }
        }
    }

    /// Every third of the TTL: the node's liveness key, and the presence of each station connected
    /// here, in pipelined batches. A station another session has taken meanwhile is closed here.
    async fn refresh_loop(self: Arc<Self>) {
        let period = (self.ttl / 3).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let started_at = Utc::now();
        loop {
            tick.tick().await;
            let liveness = serde_json::json!({"node": self.node_id, "started_at": started_at}).to_string();
            let node_key = format!("{}:node:{}", self.prefix, self.node_id);
            let mut cmd = redis::cmd("SET");
            cmd.arg(node_key).arg(liveness).arg("PX").arg(self.ttl_ms());
            if self.run::<()>(&cmd).await.is_err() {
                continue;
            }
            let (mut entries, mut unclaimed) = (Vec::new(), Vec::new());
            for (key, held) in lock(&self.local).iter() {
                let entry = (key.clone(), held.value.clone());
                if held.claimed {
                    entries.push(entry);
                } else {
                    unclaimed.push(entry);
                }
            }
            for (key, value) in unclaimed {
                self.try_claim(key, value).await;
            }
            for chunk in entries.chunks(REFRESH_BATCH) {
                // EVAL, not EVALSHA: a restarted Redis has no scripts cached, and a pipeline does not
                // load them on demand.
                let mut pipe = redis::pipe();
                for (key, value) in chunk {
                    pipe.cmd("EVAL").arg(REFRESH).arg(1).arg(self.presence_key(key)).arg(value).arg(self.ttl_ms());
                }
                let mut conn = self.conn.clone();
                let r = tokio::time::timeout(self.timeout, pipe.query_async::<Vec<i64>>(&mut conn)).await;
                let kept = match r {
                    Ok(Ok(kept)) => kept,
                    Ok(Err(e)) => {
                        self.mark(false, Some(&e));
                        break;
                    }
                    Err(_) => {
                        self.mark(false, Some(&"timed out"));
                        break;
                    }
                };
                for ((key, value), kept) in chunk.iter().zip(kept) {
                    if kept != 0 {
                        continue;
                    }
                    let Ok(p) = serde_json::from_str::<Presence>(value) else { continue };
                    tracing::info!(station = %key, "another connection holds the station: closing this one");
                    if let Some(registry) = self.registry.get() {
                        registry.do_send(CloseIfSession {
                            key: key.clone(),
                            session_id: p.session,
                            reason: DisconnectReason::Replaced,
                        });
                    }
                }
            }
        }
    }

    /// Clears the presence of every station connected here (graceful shutdown: they show offline
    /// at once rather than after the TTL).
    pub async fn release_all(&self) {
        let entries: Vec<(StationKey, String)> = lock(&self.local).drain().map(|(k, h)| (k, h.value)).collect();
        for chunk in entries.chunks(REFRESH_BATCH) {
            let mut pipe = redis::pipe();
            for (key, value) in chunk {
                pipe.cmd("EVAL").arg(RELEASE).arg(1).arg(self.presence_key(key)).arg(value);
            }
            let mut conn = self.conn.clone();
            let _ = tokio::time::timeout(self.timeout, pipe.query_async::<Vec<i64>>(&mut conn)).await;
        }
        let node_key = format!("{}:node:{}", self.prefix, self.node_id);
        let _ = self.run::<i64>(redis::cmd("DEL").arg(node_key)).await;
    }
}

/// Locks a mutex; a panic while it was held poisons nothing that matters here (plain maps).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
