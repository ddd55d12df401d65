//! The messages a station's session handles from the rest of the node. Declared apart from the
//! actor so that the registry can hold `Recipient`s of them without naming the session type.

use crate::actors::station::DisconnectReason;
use crate::actors::tracker::SessionGuard;
use crate::fleet::command::CommandResult;
use actix::prelude::*;
use serde_json::Value;
use std::time::Instant;
use tokio::sync::oneshot;

/// Sends a command (a CSMS-initiated CALL) to the station. The payload must already be validated.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SendCommand {
    pub action: String,
    pub payload: Value,
    /// After this instant the command is not sent, or its answer no longer awaited.
    pub deadline: Instant,
    pub responder: oneshot::Sender<CommandResult>,
}

/// The station has new queued commands: deliver them if delivery has begun on this session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeliverQueued;

/// Closes the session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseSession {
    pub reason: DisconnectReason,
    /// Kept by the session until it is gone, for whoever waits for that.
    pub guard: Option<SessionGuard>,
}
