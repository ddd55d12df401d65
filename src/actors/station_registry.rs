//! StationRegistry: station key → the address of its live session.
//!
//! The newest connection wins: a registration from a session with a higher id replaces the current
//! one, which is told to close; a late `Unregister` from a replaced session finds another session id
//! and changes nothing. Sessions of an erased account are closed and, should one register late,
//! refused.

use super::station_session::{CloseSession, StationSession};
use super::{DisconnectReason, SessionId, StationKey};
use crate::cluster::Cluster;
use crate::ocpp::Version;
use actix::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Routes to stations' live sessions.
#[derive(Default)]
pub struct StationRegistry {
    sessions: HashMap<StationKey, (SessionId, Addr<StationSession>, Version)>,
    /// Accounts erased since start-up: a session that authenticated just before its account was
    /// erased, and registers after, is closed rather than served. Ids only, which name nothing left.
    erased: HashSet<String>,
    /// In cluster mode: where this node tells the others which stations it holds.
    cluster: Option<Arc<Cluster>>,
}

impl StationRegistry {
    /// A registry that also keeps the stations' cluster-wide presence.
    pub fn clustered(cluster: Arc<Cluster>) -> Self {
        Self { cluster: Some(cluster), ..Self::default() }
    }

    fn released(&self, key: &StationKey, session_id: SessionId) {
        if let Some(cluster) = &self.cluster {
            cluster.release(key.clone(), session_id);
        }
    }
}

impl Actor for StationRegistry {
    type Context = Context<Self>;
}

impl Supervised for StationRegistry {}

/// A session has started and wants to receive the station's commands.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    pub key: StationKey,
    pub session_id: SessionId,
    /// The OCPP version the session speaks (commands are validated for it).
    pub version: Version,
    pub addr: Addr<StationSession>,
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
#[rtype(result = "Option<(Addr<StationSession>, Version)>")]
pub struct Lookup {
    pub key: StationKey,
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

/// Closes every session of an erased account and refuses its later ones; answers the closed
/// sessions' addresses, to wait for them to stop.
#[derive(Message)]
#[rtype(result = "Vec<Addr<StationSession>>")]
pub struct CloseAccount {
    pub account_id: String,
}

/// Closes every session (graceful shutdown); answers their addresses, to wait for them to stop.
#[derive(Message)]
#[rtype(result = "Vec<Addr<StationSession>>")]
pub struct CloseAll;

impl Handler<Register> for StationRegistry {
    type Result = ();

    fn handle(&mut self, msg: Register, _: &mut Context<Self>) {
        if self.erased.contains(&msg.key.account_id) {
            msg.addr.do_send(CloseSession { reason: DisconnectReason::Deleted });
            return;
        }
        match self.sessions.get(&msg.key) {
            Some((current, _, _)) if *current > msg.session_id => {
                // An older connection registering late: the newer one keeps the station.
                msg.addr.do_send(CloseSession { reason: DisconnectReason::Replaced });
            }
            _ => {
                if let Some(cluster) = &self.cluster {
                    cluster.claim(msg.key.clone(), msg.session_id, msg.version.subprotocol());
                }
                if let Some((old_id, old, _)) =
                    self.sessions.insert(msg.key.clone(), (msg.session_id, msg.addr, msg.version))
                {
                    if old_id != msg.session_id {
                        tracing::info!(station = %msg.key, old_session = old_id, new_session = msg.session_id, "newer connection replaces the current one");
                        old.do_send(CloseSession { reason: DisconnectReason::Replaced });
                    }
                }
            }
        }
    }
}

impl Handler<Unregister> for StationRegistry {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _: &mut Context<Self>) {
        if matches!(self.sessions.get(&msg.key), Some((id, _, _)) if *id == msg.session_id) {
            self.sessions.remove(&msg.key);
            self.released(&msg.key, msg.session_id);
        }
    }
}

impl Handler<CloseIfSession> for StationRegistry {
    type Result = ();

    fn handle(&mut self, msg: CloseIfSession, _: &mut Context<Self>) {
        if matches!(self.sessions.get(&msg.key), Some((id, _, _)) if *id == msg.session_id) {
            if let Some((id, addr, _)) = self.sessions.remove(&msg.key) {
                self.released(&msg.key, id);
                addr.do_send(CloseSession { reason: msg.reason });
            }
        }
    }
}

impl Handler<Lookup> for StationRegistry {
    type Result = Option<(Addr<StationSession>, Version)>;

    fn handle(&mut self, msg: Lookup, _: &mut Context<Self>) -> Self::Result {
        self.sessions.get(&msg.key).map(|(_, addr, version)| (addr.clone(), *version))
    }
}

impl Handler<CloseStation> for StationRegistry {
    type Result = bool;

    fn handle(&mut self, msg: CloseStation, _: &mut Context<Self>) -> bool {
        match self.sessions.remove(&msg.key) {
            Some((id, addr, _)) => {
                self.released(&msg.key, id);
                addr.do_send(CloseSession { reason: msg.reason });
                true
            }
            None => false,
        }
    }
}

impl Handler<CloseAccount> for StationRegistry {
    type Result = MessageResult<CloseAccount>;

    fn handle(&mut self, msg: CloseAccount, _: &mut Context<Self>) -> Self::Result {
        let keys: Vec<_> = self.sessions.keys().filter(|k| k.account_id == msg.account_id).cloned().collect();
        let mut closed = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some((id, addr, _)) = self.sessions.remove(&key) {
                self.released(&key, id);
                addr.do_send(CloseSession { reason: DisconnectReason::Deleted });
                closed.push(addr);
            }
        }
        self.erased.insert(msg.account_id);
        MessageResult(closed)
    }
}

impl Handler<CloseAll> for StationRegistry {
    type Result = MessageResult<CloseAll>;

    fn handle(&mut self, _: CloseAll, _: &mut Context<Self>) -> Self::Result {
        let drained: Vec<_> = self.sessions.drain().collect();
        for (key, (id, _, _)) in &drained {
            self.released(key, *id);
        }
        let sessions: Vec<_> = drained.into_iter().map(|(_, (_, addr, _))| addr).collect();
        for addr in &sessions {
            addr.do_send(CloseSession { reason: DisconnectReason::Shutdown });
        }
        MessageResult(sessions)
    }
}
