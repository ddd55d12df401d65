//! The fleet: the one way to reach a station wherever it is connected — on this node, through the
//! [`StationRegistry`](crate::actors::StationRegistry), or in cluster mode on the node that holds
//! it, found through Redis presence and reached over the cluster bus. The API, erasure and queued
//! delivery call [`Fleet`]; none of them decides local or remote.
//!
//! - [`command`]: what a command is and how it ends (a leaf, also what travels between nodes);
//! - [`local`]: this node's stations; [`node`]: what this node does for the others;
//! - [`erasure`]: closing an erased account's sessions everywhere and sweeping its records.
//!
//! `Fleet` is a struct over an enum of the two deployments rather than a trait object: the set is
//! closed, every operation is "this node first, then (cluster) the node holding the station", and
//! one `match` per operation shows that in one place, with no boxed async trait calls.

pub mod command;
pub mod erasure;
pub mod local;
pub mod node;

pub use crate::cluster::Presence;
pub use command::{CallErrorCode, Command, CommandError, CommandResult, RemoteOutcome};
pub use local::LocalFleet;

use crate::actors::station::{DisconnectReason, StationKey};
use crate::actors::station_registry::SessionHandle;
use crate::actors::tracker::SessionGuard;
use crate::cluster::{Bus, ClusterError, PresenceTable};
use crate::ids::{AccountId, StationId};
use crate::metrics as m;
use crate::ocpp::Version;
use actix::MailboxError;
use std::collections::HashMap;
use std::sync::Arc;

/// Why the fleet could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The station has no live session (any more) anywhere the fleet can tell.
    #[error("the station is not connected")]
    NotConnected,
    /// This node's registry is gone (the node is stopping).
    #[error("the station registry stopped: {0}")]
    Registry(#[from] MailboxError),
    /// Cluster mode: where the station is connected cannot be read now.
    #[error("cannot tell where the station is connected: {0}")]
    Presence(#[source] ClusterError),
    /// Cluster mode: the node holding the station cannot be reached now.
    #[error("cannot reach node {node}: {source}")]
    Node {
        node: String,
        #[source]
        source: ClusterError,
    },
}

/// A station found connected, and how to reach it.
pub struct Located {
    key: StationKey,
    /// The OCPP version its connection speaks.
    pub version: Version,
    route: Route,
}

enum Route {
    Here(SessionHandle),
    Node(String),
}

#[derive(Clone)]
enum Reach {
    /// One node: a station not here is not connected.
    Single,
    /// A cluster: a station not here may be on the node its presence names.
    Cluster { presence: Arc<PresenceTable>, bus: Arc<Bus> },
}

/// Reaches stations wherever they are connected. Cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    node_id: String,
    local: LocalFleet,
    reach: Reach,
}

impl Fleet {
    /// One node.
    pub fn single(node_id: String, local: LocalFleet) -> Fleet {
        Fleet { node_id, local, reach: Reach::Single }
    }

    /// A node of a cluster.
    pub fn clustered(local: LocalFleet, presence: Arc<PresenceTable>, bus: Arc<Bus>) -> Fleet {
        Fleet { node_id: presence.node_id().to_string(), local, reach: Reach::Cluster { presence, bus } }
    }

    /// This node's name.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn local(&self) -> &LocalFleet {
        &self.local
    }

    /// Where the station is connected, if it is.
    pub async fn locate(&self, key: &StationKey) -> Result<Option<Located>, FleetError> {
        if let Some((session, version)) = self.local.lookup(key).await? {
            return Ok(Some(Located { key: key.clone(), version, route: Route::Here(session) }));
        }
        let Reach::Cluster { presence, .. } = &self.reach else { return Ok(None) };
        let found = presence.presence(key).await.map_err(FleetError::Presence)?;
        Ok(found.filter(|p| p.node != self.node_id).map(|p| Located {
            key: key.clone(),
            version: Version::from_subprotocol(&p.protocol).unwrap_or(Version::V16),
            route: Route::Node(p.node),
        }))
    }

    /// Sends a command to a located station and waits for its answer (or why there is none).
    pub async fn send_command(&self, at: &Located, command: Command) -> Result<CommandResult, FleetError> {
        let (node, bus) = match (&at.route, &self.reach) {
            (Route::Here(session), _) => {
                return LocalFleet::send(session, command).await.map_err(|_| FleetError::NotConnected)
            }
            (Route::Node(node), Reach::Cluster { bus, .. }) => (node, bus),
            // Only a cluster locates a station on another node.
            (Route::Node(_), Reach::Single) => return Err(FleetError::NotConnected),
        };
        let outcome = bus.send_command(node, &at.key, command).await;
        let label = match &outcome {
            Ok(RemoteOutcome::Done(Ok(_))) => "answered",
            Ok(RemoteOutcome::Done(Err(CommandError::Timeout))) => "timeout",
            Ok(RemoteOutcome::Done(Err(_))) => "error",
            Ok(RemoteOutcome::NotConnected) => "not_connected",
            Err(_) => "unreachable",
        };
        metrics::counter!(m::CLUSTER_ROUTED_COMMANDS, "result" => label).increment(1);
        match outcome {
            Ok(RemoteOutcome::Done(result)) => Ok(result),
            Ok(RemoteOutcome::NotConnected) => Err(FleetError::NotConnected),
            Err(source) => Err(FleetError::Node { node: node.clone(), source }),
        }
    }

    /// Closes the station's session (it was deleted, blocked or changed profile), wherever it is.
    pub async fn close(&self, key: &StationKey) -> Result<(), FleetError> {
        if self.local.close(key, DisconnectReason::Deleted).await? {
            return Ok(());
        }
        let Reach::Cluster { presence, bus } = &self.reach else { return Ok(()) };
        let node = match presence.presence(key).await.map_err(FleetError::Presence)? {
            Some(p) if p.node != self.node_id => p.node,
            _ => return Ok(()),
        };
        bus.close_remote(&node, key).await.map_err(|source| FleetError::Node { node, source })
    }

    /// Closes the account's sessions here (each holding a clone of `guard` until it is gone) and
    /// tells the other nodes to close theirs; answers how many were closed here.
    pub async fn close_account(&self, account_id: &AccountId, guard: SessionGuard) -> Result<usize, FleetError> {
        let closed = self.local.close_account(account_id, guard).await?;
        if let Reach::Cluster { bus, .. } = &self.reach {
            // The other nodes close the account's sessions and sweep what they still hold of it.
            if let Err(e) = bus.close_account_everywhere(account_id).await {
                tracing::warn!(account = %account_id, error = %e, "could not tell the other nodes about the erasure");
            }
        }
        Ok(closed)
    }

    /// Commands were queued for the station: its session, wherever it is, delivers them now.
    /// Failing that, delivery begins anyway on the station's next connection.
    pub async fn nudge_delivery(&self, key: &StationKey) -> Result<(), FleetError> {
        if self.local.nudge(key).await? {
            return Ok(());
        }
        let Reach::Cluster { presence, bus } = &self.reach else { return Ok(()) };
        if let Ok(Some(p)) = presence.presence(key).await {
            if let Err(e) = bus.deliver_remote(&p.node, key).await {
                tracing::warn!(station = %key, error = %e, "could not tell the station's node about its queued command");
            }
        }
        Ok(())
    }

    /// Where those of the account's stations not connected here are connected (cluster mode;
    /// nowhere on one node). Without Redis they are shown as this node knows them: offline.
    pub async fn elsewhere(&self, account_id: &AccountId, station_ids: &[StationId]) -> HashMap<StationId, Presence> {
        let Reach::Cluster { presence, .. } = &self.reach else { return HashMap::new() };
        match presence.presences(account_id, station_ids).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read where stations are connected");
                HashMap::new()
            }
        }
    }

    /// Shutdown: closes every session here and refuses later ones; answers how many were closed.
    pub async fn close_all(&self) -> usize {
        self.local.close_all().await
    }

    /// Shutdown, once the sessions are gone: this node's stations show offline at once rather
    /// than after the presence TTL.
    pub async fn release_presence(&self) {
        if let Reach::Cluster { presence, .. } = &self.reach {
            presence.release_all().await;
        }
    }
}
