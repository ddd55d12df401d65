//! OCPP protocol code, free of actors and sockets: framing ([`rpc`]), the declaration of every
//! action of each version ([`actions`]), schema validation ([`schema`]), the path of a CALL
//! ([`handler`]) through the context it is handled in ([`context`]) to the per-version handlers
//! ([`v16`], [`v201`]) and those both versions share ([`common`]).

pub mod actions;
pub mod common;
pub mod context;
pub mod handler;
pub mod rpc;
pub mod schema;
pub mod v16;
pub mod v201;

use actions::Action;
use schema::SchemaSet;
use std::sync::OnceLock;

/// The OCPP versions this server speaks, one per WebSocket subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V16,
    V201,
}

impl Version {
    /// In order of preference: a station offering both gets the newer.
    pub const ALL: [Version; 2] = [Version::V201, Version::V16];

    pub fn subprotocol(self) -> &'static str {
        match self {
            Version::V16 => "ocpp1.6",
            Version::V201 => "ocpp2.0.1",
        }
    }

    pub fn from_subprotocol(name: &str) -> Option<Version> {
        Version::ALL.into_iter().find(|v| v.subprotocol() == name)
    }

    pub fn schemas(self) -> &'static SchemaSet {
        match self {
            Version::V16 => schema::v16(),
            Version::V201 => schema::v201(),
        }
    }

    /// Every action of the version, as declared (sorted by name).
    pub fn actions(self) -> &'static [Action] {
        match self {
            Version::V16 => v16::ACTIONS,
            Version::V201 => v201::ACTIONS,
        }
    }

    /// The declaration of an action of this version; None for a name it does not define.
    pub fn action(self, name: &str) -> Option<&'static Action> {
        actions::find(self.actions(), name)
    }

    /// Actions the central system may send (the command API's `{Action}`).
    pub fn command_actions(self) -> &'static [&'static str] {
        fn list(version: Version) -> Vec<&'static str> {
            version.actions().iter().filter(|a| a.sender.central_system_sends()).map(|a| a.name).collect()
        }
        static V16: OnceLock<Vec<&'static str>> = OnceLock::new();
        static V201: OnceLock<Vec<&'static str>> = OnceLock::new();
        match self {
            Version::V16 => V16.get_or_init(|| list(self)),
            Version::V201 => V201.get_or_init(|| list(self)),
        }
    }
}
