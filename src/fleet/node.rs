//! What this node does for the rest of a cluster: the cluster bus and presence hand what they
//! receive for this node's stations to [`ThisNode`].

use super::command::{Command, CommandResult};
use super::erasure;
use super::local::LocalFleet;
use crate::actors::station::{DisconnectReason, SessionId, StationKey};
use crate::cluster::LocalNode;
use crate::ids::AccountId;
use crate::store::{AccountStore, StationStore};
use std::sync::Arc;

/// This node's stations, and the stores to sweep when another node erases an account.
pub struct ThisNode {
    pub local: LocalFleet,
    pub station_store: Arc<dyn StationStore>,
    pub account_store: Arc<dyn AccountStore>,
}

#[async_trait::async_trait]
impl LocalNode for ThisNode {
    async fn send_command(&self, key: &StationKey, command: Command) -> Option<CommandResult> {
        self.local.send_to(key, command).await
    }

    async fn close(&self, key: &StationKey, reason: DisconnectReason) {
        let _ = self.local.close(key, reason).await;
    }

    fn close_if_session(&self, key: &StationKey, session: SessionId, reason: DisconnectReason) {
        self.local.close_if_session(key, session, reason);
    }

    async fn nudge_delivery(&self, key: &StationKey) {
        let _ = self.local.nudge(key).await;
    }

    async fn account_erased(&self, account_id: &AccountId) {
        erasure::sweep_here(&self.local, self.station_store.as_ref(), self.account_store.as_ref(), account_id).await;
    }
}
