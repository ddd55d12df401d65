//! OCPP protocol code, free of actors and sockets: framing ([`rpc`]), schema validation ([`schema`])
//! and the per-version handlers ([`v16`]).

pub mod rpc;
pub mod schema;
pub mod v16;
