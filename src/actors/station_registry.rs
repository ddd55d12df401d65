//! StationRegistry: station key → the live session's handle (a `Recipient` of the messages a
//! session takes, as in actix's `websockets/chat` server; never the session type).
//!
//! The newest connection wins: a registration from a session with a higher id replaces the current
//! one, which is told to close; a late `Unregister` from a replaced session finds another session id
//! and changes nothing. Sessions of an erased account are closed and, should one register late,
//! refused; so are all sessions once the node is shutting down. Every change of which session holds
//! a station is reported to the node's [`PresenceSink`] (the cluster's presence, or nothing).

use super::session::messages::{CloseSession, DeliverQueued, SendCommand, ToSession};
use super::station::{DisconnectReason, SessionId, StationKey};
use super::tracker::SessionGuard;
use crate::ids::{AccountId, StationId};
use crate::ocpp::Version;
use actix::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Where the registry reports which session holds a station: in cluster mode, the station's
/// presence in Redis; on one node, nowhere.
pub trait PresenceSink: Send + Sync {
    /// `session` of this node now holds the station.
    fn claim(&self, key: &StationKey, session: SessionId, version: Version);
    /// `session` of this node no longer holds the station.
    fn release(&self, key: &StationKey, session: SessionId);
}

/// One node alone: nobody else asks where its stations are.
pub struct NoPresence;

impl PresenceSink for NoPresence {
    fn claim(&self, _: &StationKey, _: SessionId, _: Version) {}
    fn release(&self, _: &StationKey, _: SessionId) {}
}

/// What the registry holds of a live session: where to send it what it takes.
#[derive(Clone)]
pub struct SessionHandle {
    pub inbox: Recipient<ToSession>,
}

impl SessionHandle {
    fn close(&self, reason: DisconnectReason, guard: Option<SessionGuard>) {
        self.inbox.do_send(ToSession::Close(CloseSession { reason, guard }));
    }

    /// Hands the session a command; fails when the session is gone.
    pub async fn command(&self, command: SendCommand) -> Result<(), MailboxError> {
        self.inbox.send(ToSession::Command(command)).await
    }

    /// Tells the session that commands were queued for its station.
    pub fn deliver(&self) {
        self.inbox.do_send(ToSession::Deliver(DeliverQueued));
    }
}

struct Live {
    id: SessionId,
    version: Version,
    session: SessionHandle,
}

/// Routes to stations' live sessions.
pub struct StationRegistry {
    sessions: HashMap<StationKey, Live>,
    /// Accounts erased since start-up: a session that authenticated just before its account was
    /// erased, and registers after, is closed rather than served. Ids only, which name nothing left.
    erased: HashSet<AccountId>,
    /// Set by [`CloseAll`]: the node is shutting down, and a late registration is closed at once.
    closing: bool,
    presence: Arc<dyn PresenceSink>,
}

impl StationRegistry {
    pub fn new(presence: Arc<dyn PresenceSink>) -> Self {
        StationRegistry { sessions: HashMap::new(), erased: HashSet::new(), closing: false, presence }
    }

    /// Removes the station's session if `session_id` is still the one (any when `None`) and
    /// closes it.
    fn remove(
        &mut self,
        key: &StationKey,
        session_id: Option<SessionId>,
        reason: DisconnectReason,
        guard: Option<SessionGuard>,
    ) -> bool {
        match self.sessions.get(key) {
            Some(live) if session_id.is_none_or(|id| id == live.id) => {}
            _ => return false,
        }
        let Some(live) = self.sessions.remove(key) else { return false };
        self.presence.release(key, live.id);
        live.session.close(reason, guard);
        true
    }
}

impl Actor for StationRegistry {
    type Context = Context<Self>;
}

/// A session has started and wants to receive the station's commands.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    pub key: StationKey,
    pub session_id: SessionId,
    /// The OCPP version the session speaks (commands are validated for it).
    pub version: Version,
    pub session: SessionHandle,
}

/// A session has stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    pub key: StationKey,
    pub session_id: SessionId,
}

/// The live session of a station, if any, and its OCPP version.
#[derive(Message)]
#[rtype(result = "Option<(SessionHandle, Version)>")]
pub struct Lookup {
    pub key: StationKey,
}

/// The live sessions of an account's stations: station id → OCPP version.
#[derive(Message)]
#[rtype(result = "HashMap<StationId, Version>")]
pub struct LiveOf {
    pub account_id: AccountId,
}

/// Closes the station's session, if it has one; answers whether it had.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct CloseStation {
    pub key: StationKey,
    pub reason: DisconnectReason,
}

/// Closes the station's session if it is still this one (another node took the station).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseIfSession {
    pub key: StationKey,
    pub session_id: SessionId,
    pub reason: DisconnectReason,
}

/// Closes every session of an erased account and refuses its later ones; answers how many were
/// closed. Each closed session holds a clone of `guard` until it is gone.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CloseAccount {
    pub account_id: AccountId,
    pub guard: SessionGuard,
}

/// Closes every session and refuses later ones (graceful shutdown); answers how many were closed.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CloseAll;

impl Handler<Register> for StationRegistry {
    type Result = ();

    fn handle(&mut self, msg: Register, _: &mut Context<Self>) {
        if self.closing {
            msg.session.close(DisconnectReason::Shutdown, None);
            return;
        }
        if self.erased.contains(&msg.key.account_id) {
            msg.session.close(DisconnectReason::Deleted, None);
            return;
        }
        match self.sessions.get(&msg.key) {
            Some(current) if current.id > msg.session_id => {
                // An older connection registering late: the newer one keeps the station.
                msg.session.close(DisconnectReason::Replaced, None);
            }
            _ => {
                self.presence.claim(&msg.key, msg.session_id, msg.version);
                let live = Live { id: msg.session_id, version: msg.version, session: msg.session };
                if let Some(old) = self.sessions.insert(msg.key.clone(), live) {
                    if old.id != msg.session_id {
                        tracing::info!(station = %msg.key, old_session = old.id, new_session = msg.session_id, "newer connection replaces the current one");
                        old.session.close(DisconnectReason::Replaced, None);
                    }
                }
            }
        }
    }
}

impl Handler<Unregister> for StationRegistry {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _: &mut Context<Self>) {
        if matches!(self.sessions.get(&msg.key), Some(live) if live.id == msg.session_id) {
            self.sessions.remove(&msg.key);
            self.presence.release(&msg.key, msg.session_id);
        }
    }
}

impl Handler<CloseIfSession> for StationRegistry {
    type Result = ();

    fn handle(&mut self, msg: CloseIfSession, _: &mut Context<Self>) {
        self.remove(&msg.key, Some(msg.session_id), msg.reason, None);
    }
}

impl Handler<Lookup> for StationRegistry {
    type Result = Option<(SessionHandle, Version)>;

    fn handle(&mut self, msg: Lookup, _: &mut Context<Self>) -> Self::Result {
        self.sessions.get(&msg.key).map(|live| (live.session.clone(), live.version))
    }
}

impl Handler<LiveOf> for StationRegistry {
    type Result = MessageResult<LiveOf>;

    fn handle(&mut self, msg: LiveOf, _: &mut Context<Self>) -> Self::Result {
        let live = self
            .sessions
            .iter()
            .filter(|(k, _)| k.account_id == msg.account_id)
            .map(|(k, live)| (k.station_id.clone(), live.version))
            .collect();
        MessageResult(live)
    }
}

impl Handler<CloseStation> for StationRegistry {
    type Result = bool;

    fn handle(&mut self, msg: CloseStation, _: &mut Context<Self>) -> bool {
        self.remove(&msg.key, None, msg.reason, None)
    }
}

impl Handler<CloseAccount> for StationRegistry {
    type Result = usize;

    fn handle(&mut self, msg: CloseAccount, _: &mut Context<Self>) -> usize {
        let keys: Vec<_> = self.sessions.keys().filter(|k| k.account_id == msg.account_id).cloned().collect();
        let closed = keys
            .iter()
            .filter(|key| self.remove(key, None, DisconnectReason::Deleted, Some(msg.guard.clone())))
            .count();
        self.erased.insert(msg.account_id);
        closed
    }
}

impl Handler<CloseAll> for StationRegistry {
    type Result = usize;

    fn handle(&mut self, _: CloseAll, _: &mut Context<Self>) -> usize {
        self.closing = true;
        let drained: Vec<_> = self.sessions.drain().collect();
        for (key, live) in &drained {
            self.presence.release(key, live.id);
            live.session.close(DisconnectReason::Shutdown, None);
        }
        drained.len()
    }
}
