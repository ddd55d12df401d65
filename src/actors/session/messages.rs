//! The messages a station's session handles from the rest of the node. Declared apart from the
//! actor so that the registry can hold a `Recipient` of them without naming the session type: one
//! recipient of [`ToSession`] (each recipient is an address clone with allocations of its own,
//! held for as long as the station is connected).

use crate::actors::station::DisconnectReason;
use crate::actors::tracker::SessionGuard;
use crate::fleet::command::CommandResult;
use actix::prelude::*;
use serde_json::Value;
use std::time::Instant;
use tokio::sync::oneshot;

/// What the rest of the node tells a session.
#[derive(Message)]
#[rtype(result = "()")]
pub enum ToSession {
    Command(SendCommand),
    Deliver(DeliverQueued),
    Close(CloseSession),
}

/// Sends a command (a CSMS-initiated CALL) to the station. The payload must already be validated.
pub struct SendCommand {
    pub action: String,
    pub payload: Value,
    /// After this instant the command is not sent, or its answer no longer awaited.
    pub deadline: Instant,
    pub responder: oneshot::Sender<CommandResult>,
}

/// The station has new queued commands: deliver them if delivery has begun on this session.
pub struct DeliverQueued;

/// Closes the session.
pub struct CloseSession {
    pub reason: DisconnectReason,
    /// Kept by the session until it is gone, for whoever waits for that.
    pub guard: Option<SessionGuard>,
}
