//! The fleet on this node: the [`StationRegistry`] and the sessions it routes to.

use super::command::{Command, CommandError, CommandResult};
use crate::actors::session::messages::SendCommand;
use crate::actors::station::{DisconnectReason, SessionId, StationKey};
use crate::actors::station_registry::{
    CloseAccount, CloseAll, CloseIfSession, CloseStation, LiveOf, Lookup, SessionHandle, StationRegistry,
};
use crate::actors::tracker::SessionGuard;
use crate::ids::{AccountId, StationId};
use crate::ocpp::Version;
use actix::{Addr, MailboxError};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The session went away before it took the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// This node's stations.
#[derive(Clone)]
pub struct LocalFleet {
    registry: Addr<StationRegistry>,
}

impl LocalFleet {
    pub fn new(registry: Addr<StationRegistry>) -> LocalFleet {
        LocalFleet { registry }
    }

    /// The registry sessions register with.
    pub fn registry(&self) -> &Addr<StationRegistry> {
        &self.registry
    }

    /// The station's live session here and the version it speaks.
    pub async fn lookup(&self, key: &StationKey) -> Result<Option<(SessionHandle, Version)>, MailboxError> {
        self.registry.send(Lookup { key: key.clone() }).await
    }

    /// The account's live sessions here: station id → version.
    pub async fn live_of(&self, account_id: &AccountId) -> Result<HashMap<StationId, Version>, MailboxError> {
        self.registry.send(LiveOf { account_id: account_id.clone() }).await
    }

    /// Sends the command on `session` and waits for its answer.
    pub async fn send(session: &SessionHandle, command: Command) -> Result<CommandResult, Gone> {
        let (responder, answer) = oneshot::channel();
        let Command { action, payload, timeout } = command;
        let deadline = Instant::now() + timeout;
        session.command(SendCommand { action, payload, deadline, responder }).await.map_err(|_| Gone)?;
        // The session answers Timeout itself at the deadline; the extra second only guards against
        // a session that vanished without answering.
        Ok(match tokio::time::timeout(timeout + Duration::from_secs(1), answer).await {
            Err(_) => Err(CommandError::Timeout),
            Ok(Err(_)) => Err(CommandError::Disconnected),
            Ok(Ok(result)) => result,
        })
    }

    /// Sends the command to the station's session here; `None` when it has none here.
    pub async fn send_to(&self, key: &StationKey, command: Command) -> Option<CommandResult> {
        let (session, _) = self.lookup(key).await.ok().flatten()?;
        LocalFleet::send(&session, command).await.ok()
    }

    /// Closes the station's session here; answers whether it had one.
    pub async fn close(&self, key: &StationKey, reason: DisconnectReason) -> Result<bool, MailboxError> {
        self.registry.send(CloseStation { key: key.clone(), reason }).await
    }

    /// Closes the station's session here if it is still `session_id`.
    pub fn close_if_session(&self, key: &StationKey, session_id: SessionId, reason: DisconnectReason) {
        self.registry.do_send(CloseIfSession { key: key.clone(), session_id, reason });
    }

    /// Closes the account's sessions here and refuses its later ones; each closed session holds a
    /// clone of `guard` until it is gone. Answers how many were closed.
    pub async fn close_account(&self, account_id: &AccountId, guard: SessionGuard) -> Result<usize, MailboxError> {
        self.registry.send(CloseAccount { account_id: account_id.clone(), guard }).await
    }

    /// Tells the station's session here that commands were queued for it; answers whether it has one.
    pub async fn nudge(&self, key: &StationKey) -> Result<bool, MailboxError> {
        let session = self.lookup(key).await?;
        if let Some((session, _)) = &session {
            session.deliver();
        }
        Ok(session.is_some())
    }

    /// Closes every session here and refuses later ones (shutdown); answers how many were closed.
    pub async fn close_all(&self) -> usize {
        self.registry.send(CloseAll).await.unwrap_or_default()
    }
}
