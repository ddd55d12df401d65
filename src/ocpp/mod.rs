//! OCPP protocol code, free of actors and sockets: framing ([`rpc`]), schema validation ([`schema`])
//! and the per-version handlers ([`v16`], [`v201`]).

pub mod handler;
pub mod rpc;
pub mod schema;
pub mod v16;
pub mod v201;

use schema::SchemaSet;

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

    /// Actions the central system may send (the command API's `{Action}`).
    pub fn command_actions(self) -> &'static [&'static str] {
        match self {
            Version::V16 => v16::COMMAND_ACTIONS,
            Version::V201 => v201::COMMAND_ACTIONS,
        }
    }

    /// Actions a station sends.
    pub fn station_actions(self) -> &'static [&'static str] {
        match self {
            Version::V16 => v16::STATION_ACTIONS,
            Version::V201 => v201::STATION_ACTIONS,
        }
    }
}
