//! The bus: every node subscribes to `{prefix}:inbox:{node_id}` and `{prefix}:broadcast`. A command
//! for a station on another node is published to that node's inbox; that node sends it on the
//! station's session (through its [`LocalNode`]) and publishes the answer to the asking node's inbox.
//! Pub/sub delivers at most once: a lost message is a command timeout, as on one node.

use super::link::{lock, ClusterError, LocalNode, RedisLink};
use crate::actors::station::{DisconnectReason, SessionId, StationKey};
use crate::fleet::command::{Command, CommandError, RemoteOutcome};
use crate::ids::{AccountId, StationId};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// What nodes tell each other.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Envelope {
    Command {
        id: String,
        reply_to: String,
        account_id: AccountId,
        station_id: StationId,
        command: Command,
    },
    Reply {
        id: String,
        outcome: RemoteOutcome,
    },
    /// A newer connection took the station: close this session of it.
    Kick {
        account_id: AccountId,
        station_id: StationId,
        session: SessionId,
    },
    /// The station was deleted, blocked or changed profile: close its session.
    Close {
        account_id: AccountId,
        station_id: StationId,
    },
    /// The account was erased: close its sessions and refuse its late ones.
    CloseAccount {
        account_id: AccountId,
    },
    /// New commands were queued for the station.
    DeliverQueued {
        account_id: AccountId,
        station_id: StationId,
    },
}

fn inbox(link: &RedisLink, node: &str) -> String {
    link.key(format_args!("inbox:{node}"))
}

fn broadcast(link: &RedisLink) -> String {
    link.key(format_args!("broadcast"))
}

async fn publish(link: &RedisLink, channel: &str, envelope: &Envelope) -> Result<u64, ClusterError> {
    let body = serde_json::to_string(envelope)?;
    link.run(redis::cmd("PUBLISH").arg(channel).arg(body)).await
}

/// Tells `node` to close its session `session` of the station (a newer connection took it).
pub(super) async fn kick(
    link: &RedisLink,
    node: &str,
    key: &StationKey,
    session: SessionId,
) -> Result<(), ClusterError> {
    let kick = Envelope::Kick { account_id: key.account_id.clone(), station_id: key.station_id.clone(), session };
    publish(link, &inbox(link, node), &kick).await.map(|_| ())
}

/// This node's end of the bus.
pub struct Bus {
    link: Arc<RedisLink>,
    /// Where what other nodes ask of this node's stations goes.
    node: Arc<dyn LocalNode>,
    /// Commands sent through other nodes, by id, waiting for their answer.
    waiting: Mutex<HashMap<String, oneshot::Sender<RemoteOutcome>>>,
}

impl Bus {
    /// Starts listening to other nodes (reconnecting while Redis is away).
    pub fn start(link: Arc<RedisLink>, node: Arc<dyn LocalNode>) -> Arc<Bus> {
        for result in ["answered", "error", "timeout", "not_connected", "unreachable"] {
            metrics::counter!(crate::metrics::CLUSTER_ROUTED_COMMANDS, "result" => result).increment(0);
        }
        let bus = Arc::new(Bus { link, node, waiting: Mutex::new(HashMap::new()) });
        let this = bus.clone();
        actix_rt::spawn(async move { this.listen().await });
        bus
    }

    /// Sends a command to the station's session on `node` and waits for the answer.
    pub async fn send_command(
        &self,
        node: &str,
        key: &StationKey,
        command: Command,
    ) -> Result<RemoteOutcome, ClusterError> {
        if self.link.is_cluster() {
            // A Redis Cluster counts only the subscribers of the node a message was published on, so
            // whether `node` is there is asked of its liveness key instead.
            let alive: i64 = self.link.run(redis::cmd("EXISTS").arg(self.link.node_key(node))).await?;
            if alive == 0 {
                return Ok(RemoteOutcome::NotConnected);
            }
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(id.clone(), tx);
        let timeout = command.timeout;
        let envelope = Envelope::Command {
            id: id.clone(),
            reply_to: self.link.node_id.clone(),
            account_id: key.account_id.clone(),
            station_id: key.station_id.clone(),
            command,
        };
        let receivers = match publish(&self.link, &inbox(&self.link, node), &envelope).await {
            Ok(n) => n,
            Err(e) => {
                lock(&self.waiting).remove(&id);
                return Err(e);
            }
        };
        if receivers == 0 && !self.link.is_cluster() {
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
        publish(&self.link, &inbox(&self.link, node), &envelope).await.map(|_| ())
    }

    /// Tells the node holding the station that commands were queued for it.
    pub async fn deliver_remote(&self, node: &str, key: &StationKey) -> Result<(), ClusterError> {
        let envelope =
            Envelope::DeliverQueued { account_id: key.account_id.clone(), station_id: key.station_id.clone() };
        publish(&self.link, &inbox(&self.link, node), &envelope).await.map(|_| ())
    }

    /// Tells every node that the account was erased.
    pub async fn close_account_everywhere(&self, account_id: &AccountId) -> Result<(), ClusterError> {
        let envelope = Envelope::CloseAccount { account_id: account_id.clone() };
        publish(&self.link, &broadcast(&self.link), &envelope).await.map(|_| ())
    }

    /// Receives what other nodes send, reconnecting while Redis is away.
    async fn listen(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.subscribe().await {
                Ok(mut pubsub) => {
                    backoff = Duration::from_millis(100);
                    tracing::info!(node = %self.link.node_id, "cluster: listening to other nodes");
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
            let mut pubsub = self.link.subscriber().get_async_pubsub().await?;
            pubsub.subscribe(inbox(&self.link, &self.link.node_id)).await?;
            pubsub.subscribe(broadcast(&self.link)).await?;
            Ok::<_, ClusterError>(pubsub)
        };
        tokio::time::timeout(self.link.timeout * 2, connect).await.map_err(|_| ClusterError::Timeout)?
    }

    fn receive(self: Arc<Self>, envelope: Envelope) {
        let node = self.node.clone();
        match envelope {
            Envelope::Command { id, reply_to, account_id, station_id, command } => {
                actix_rt::spawn(async move {
                    let key = StationKey { account_id, station_id };
                    let outcome = match node.send_command(&key, command).await {
                        Some(result) => RemoteOutcome::Done(result),
                        None => RemoteOutcome::NotConnected,
                    };
                    let reply = Envelope::Reply { id, outcome };
                    if let Err(e) = publish(&self.link, &inbox(&self.link, &reply_to), &reply).await {
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
                node.close_if_session(&key, session, DisconnectReason::Replaced);
            }
            Envelope::Close { account_id, station_id } => {
                actix_rt::spawn(async move {
                    node.close(&StationKey { account_id, station_id }, DisconnectReason::Deleted).await;
                });
            }
            Envelope::CloseAccount { account_id } => {
                actix_rt::spawn(async move { node.account_erased(&account_id).await });
            }
            Envelope::DeliverQueued { account_id, station_id } => {
                actix_rt::spawn(async move { node.nudge_delivery(&StationKey { account_id, station_id }).await });
            }
        }
    }
}
