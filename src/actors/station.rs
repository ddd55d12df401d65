//! A station's identity and a session's: the names every part of the station path shares (a leaf:
//! it imports nothing of the crate).

use crate::ids::{AccountId, StationId};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// A station's identity: its tenant and its id within that tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StationKey {
    pub account_id: AccountId,
    pub station_id: StationId,
}

impl fmt::Display for StationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.account_id, self.station_id)
    }
}

/// Identifies one connection. Ids grow with the order in which connections were accepted, which is
/// what "the newest connection wins" compares.
pub type SessionId = u64;

/// A new, process-unique, increasing session id.
pub fn next_session_id() -> SessionId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Why a session ended; the `reason` label of the disconnect counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The station closed the connection (or it dropped).
    ClosedByStation,
    /// A newer connection for the same station took over.
    Replaced,
    /// The station was deleted or blocked through the API.
    Deleted,
    /// Nothing was received for longer than the idle timeout.
    IdleTimeout,
    /// The WebSocket protocol was violated.
    ProtocolError,
    /// A message over the size limit was sent.
    FrameTooBig,
    /// The server is shutting down.
    Shutdown,
    /// A text message was not UTF-8.
    InvalidUtf8,
    /// The station did not read what the server sent it (its outgoing queue filled, or took
    /// nothing for the slow-consumer time).
    SlowConsumer,
}

impl DisconnectReason {
    pub const ALL: [DisconnectReason; 9] = [
        DisconnectReason::ClosedByStation,
        DisconnectReason::Replaced,
        DisconnectReason::Deleted,
        DisconnectReason::IdleTimeout,
        DisconnectReason::ProtocolError,
        DisconnectReason::FrameTooBig,
        DisconnectReason::Shutdown,
        DisconnectReason::InvalidUtf8,
        DisconnectReason::SlowConsumer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::ClosedByStation => "closed_by_station",
            DisconnectReason::Replaced => "replaced",
            DisconnectReason::Deleted => "deleted",
            DisconnectReason::IdleTimeout => "idle_timeout",
            DisconnectReason::ProtocolError => "protocol_error",
            DisconnectReason::FrameTooBig => "frame_too_big",
            DisconnectReason::Shutdown => "shutdown",
            DisconnectReason::InvalidUtf8 => "invalid_utf8",
            DisconnectReason::SlowConsumer => "slow_consumer",
        }
    }
}
