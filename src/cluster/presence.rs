//! Presence: `{prefix}:presence:{{account_id}}:{station_id}` holds which node (and which session on
//! it) has the station, as JSON, with a TTL of two WebSocket ping intervals. Each node refreshes the
//! keys of its stations in batches (pipelined on a single Redis) every third of the TTL, so a killed node's stations
//! show offline within the TTL. `{prefix}:node:{node_id}` is the node's own liveness key.
//!
//! Duplicate connections: a node claims a station with `SET … GET`; when the previous holder was
//! another node, that node is told (over the [`bus`](super::bus)) to close its session — the newer
//! connection wins. A refresh that finds the key held by another session closes the local one too.

use super::bus;
use super::link::{lock, ClusterError, LocalNode, RedisLink};
use crate::actors::station::{DisconnectReason, SessionId, StationKey};
use crate::actors::station_registry::PresenceSink;
use crate::ids::{AccountId, StationId};
use crate::ocpp::Version;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Stations refreshed per pipelined round trip.
const REFRESH_BATCH: usize = 500;

/// Deletes the key only if it still holds this value.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
/// Extends the key if it holds this value or nothing (it expired); 0 when another session holds it.
const REFRESH: &str = "local v = redis.call('GET', KEYS[1]) \
    if v == false or v == ARGV[1] then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end return 0";

/// Where a station is connected, as kept in its presence key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    pub node: String,
    pub session: SessionId,
    pub protocol: String,
    pub connected_at: DateTime<Utc>,
}

/// A station whose session is on this node.
struct Held {
    /// The presence value (JSON) this node sets for it.
    value: String,
    /// Whether Redis has it: until then the refresh loop claims it again rather than extending it.
    claimed: bool,
}

/// This node's part of the cluster's presence table.
pub struct PresenceTable {
    link: Arc<RedisLink>,
    ttl: Duration,
    /// Stations whose session is on this node.
    local: Mutex<HashMap<StationKey, Held>>,
}

impl PresenceSink for Arc<PresenceTable> {
    fn claim(&self, key: &StationKey, session: SessionId, version: Version) {
        PresenceTable::claim(self, key.clone(), session, version.subprotocol());
    }

    fn release(&self, key: &StationKey, session: SessionId) {
        PresenceTable::release(self, key.clone(), session);
    }
}

impl PresenceTable {
    /// `ttl` is about two WebSocket ping intervals.
    pub fn new(link: Arc<RedisLink>, ttl: Duration) -> Arc<PresenceTable> {
        Arc::new(PresenceTable { link, ttl, local: Mutex::new(HashMap::new()) })
    }

    pub fn node_id(&self) -> &str {
        self.link.node_id()
    }

    /// Starts refreshing presence; a station another session has taken is closed through `node`.
    pub fn start(self: &Arc<Self>, node: Arc<dyn LocalNode>) {
        let this = self.clone();
        actix_rt::spawn(async move { this.refresh_loop(node).await });
    }

    fn presence_key(&self, key: &StationKey) -> String {
        // The account is the hash tag: its stations' keys share a slot of a Redis Cluster, so one
        // MGET reads them.
        self.link.key(format_args!("presence:{{{}}}:{}", key.account_id, key.station_id))
    }

    fn node_key(&self) -> String {
        self.link.node_key(&self.link.node_id)
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// A session of this node became the station's current one: claim the station cluster-wide and
    /// close the session another node may hold.
    pub fn claim(self: &Arc<Self>, key: StationKey, session: SessionId, protocol: &str) {
        let presence = Presence {
            node: self.link.node_id.clone(),
            session,
            protocol: protocol.to_string(),
            connected_at: Utc::now(),
        };
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
        let old: Option<String> = match self.link.run(&cmd).await {
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
            let _ = self.link.run::<i64>(&cmd).await;
        }
        let Some(old) = old.and_then(|o| serde_json::from_str::<Presence>(&o).ok()) else { return };
        if old.node != self.link.node_id {
            tracing::info!(station = %key, old_node = %old.node, "station connected here: closing its session on the other node");
            if let Err(e) = bus::kick(&self.link, &old.node, &key, old.session).await {
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
            if let Err(e) = this.link.run::<i64>(&cmd).await {
                tracing::warn!(station = %key, error = %e, "could not clear the station's presence; it expires on its own");
            }
        });
    }

    /// Where the station is connected, if anywhere.
    pub async fn presence(&self, key: &StationKey) -> Result<Option<Presence>, ClusterError> {
        let v: Option<String> = self.link.run(redis::cmd("GET").arg(self.presence_key(key))).await?;
        Ok(v.and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Where each of the account's stations is connected, for those that are.
    pub async fn presences(
        &self,
        account_id: &AccountId,
        station_ids: &[StationId],
    ) -> Result<HashMap<StationId, Presence>, ClusterError> {
        let mut out = HashMap::new();
        for chunk in station_ids.chunks(REFRESH_BATCH) {
            let mut cmd = redis::cmd("MGET");
            for id in chunk {
                cmd.arg(self.presence_key(&StationKey { account_id: account_id.clone(), station_id: id.clone() }));
            }
            let values: Vec<Option<String>> = self.link.run(&cmd).await?;
            for (id, v) in chunk.iter().zip(values) {
                if let Some(p) = v.and_then(|v| serde_json::from_str::<Presence>(&v).ok()) {
                    out.insert(id.clone(), p);
                }
            }
        }
        Ok(out)
    }

    /// Every third of the TTL: the node's liveness key, and the presence of each station connected
    /// here, in pipelined batches. A station another session has taken meanwhile is closed here.
    async fn refresh_loop(self: Arc<Self>, node: Arc<dyn LocalNode>) {
        let period = (self.ttl / 3).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let started_at = Utc::now();
        loop {
            tick.tick().await;
            let liveness = serde_json::json!({"node": self.link.node_id, "started_at": started_at}).to_string();
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.node_key()).arg(liveness).arg("PX").arg(self.ttl_ms());
            if self.link.run::<()>(&cmd).await.is_err() {
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
                // EVAL, not EVALSHA: a restarted Redis has no scripts cached, and a batch does not
                // load them on demand.
                let cmds: Vec<redis::Cmd> = chunk
                    .iter()
                    .map(|(key, value)| {
                        redis::cmd("EVAL")
                            .arg(REFRESH)
                            .arg(1)
                            .arg(self.presence_key(key))
                            .arg(value)
                            .arg(self.ttl_ms())
                            .to_owned()
                    })
                    .collect();
                let Some(kept) = self.link.run_batch::<i64>(&cmds).await else { break };
                for ((key, value), kept) in chunk.iter().zip(kept) {
                    if kept != 0 {
                        continue;
                    }
                    let Ok(p) = serde_json::from_str::<Presence>(value) else { continue };
                    tracing::info!(station = %key, "another connection holds the station: closing this one");
                    node.close_if_session(key, p.session, DisconnectReason::Replaced);
                }
            }
        }
    }

    /// Clears the presence of every station connected here (graceful shutdown: they show offline
    /// at once rather than after the TTL).
    pub async fn release_all(&self) {
        let entries: Vec<(StationKey, String)> = lock(&self.local).drain().map(|(k, h)| (k, h.value)).collect();
        for chunk in entries.chunks(REFRESH_BATCH) {
            let cmds: Vec<redis::Cmd> = chunk
                .iter()
                .map(|(key, value)| {
                    redis::cmd("EVAL").arg(RELEASE).arg(1).arg(self.presence_key(key)).arg(value).to_owned()
                })
                .collect();
            let _ = self.link.run_batch::<i64>(&cmds).await;
        }
        let _ = self.link.run::<i64>(redis::cmd("DEL").arg(self.node_key())).await;
    }
}
