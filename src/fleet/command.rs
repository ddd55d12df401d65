//! What a command to a station is and how it can end: the types the API, the session, queued
//! delivery and the cluster bus share. A leaf: it knows OCPP's error codes and nothing of actors or
//! the cluster, since these values also travel between nodes over Redis.

use crate::ocpp::rpc::ErrorCode;
use crate::ocpp::Version;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// A command (a CSMS-initiated CALL) for a station. The payload has been validated for the
/// version the station speaks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub action: String,
    pub payload: Value,
    /// How long the station has to answer, counted from when the command is handed to its session.
    #[serde(with = "millis")]
    pub timeout: Duration,
}

/// Why a command got no CALLRESULT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandError {
    /// The station answered with a CALLERROR.
    CallError { code: CallErrorCode, description: String, details: Value },
    /// Sent, but no answer before the deadline.
    Timeout,
    /// Sent, but the session ended before the answer came.
    Disconnected,
    /// The deadline passed before the command's turn to be sent came.
    Expired,
    /// The session ended before the command was sent.
    NotSent,
    /// The session already holds as many commands waiting for their turn as it accepts.
    QueueFull,
}

impl CommandError {
    /// A station's CALLERROR (its code as a station speaking `version` spells it).
    pub fn from_call_error(code: String, description: String, details: Value, version: Version) -> CommandError {
        CommandError::CallError { code: CallErrorCode::parse(&code, version), description, details }
    }
}

/// The station's CALLRESULT payload, or why there is none.
pub type CommandResult = Result<Value, CommandError>;

/// How a command sent through another node ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RemoteOutcome {
    /// The session's answer (or why there was none).
    Done(CommandResult),
    /// The station was not connected to that node (any more).
    NotConnected,
}

/// A CALLERROR's code: one OCPP names (in the version the session speaks), or whatever else a
/// station sent. Decisions and metric labels match on the kind, never on its spelling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallErrorCode {
    /// Between nodes by kind (its variant's name), since two kinds share a 1.6 spelling.
    Known(ErrorCode),
    Other(String),
}

impl CallErrorCode {
    /// The code as received from (or sent to) a station speaking `version`: known only when it is
    /// that version's own spelling, so [`CallErrorCode::name`] gives back exactly what was on the wire.
    pub fn parse(code: &str, version: Version) -> CallErrorCode {
        match ErrorCode::ALL.iter().find(|c| c.name(version) == code) {
            Some(known) => CallErrorCode::Known(*known),
            None => CallErrorCode::Other(code.to_string()),
        }
    }

    /// The code as a station speaking `version` spells it.
    pub fn name(&self, version: Version) -> &str {
        match self {
            CallErrorCode::Known(code) => code.name(version),
            CallErrorCode::Other(code) => code,
        }
    }

    pub fn is(&self, code: ErrorCode) -> bool {
        matches!(self, CallErrorCode::Known(c) if *c == code)
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_keeps_the_spelling_of_its_version() {
        let v201 = CallErrorCode::parse("FormatViolation", Version::V201);
        assert_eq!(v201, CallErrorCode::Known(ErrorCode::FormationViolation));
        assert_eq!(v201.name(Version::V201), "FormatViolation");
        let rpc = CallErrorCode::parse("RpcFrameworkError", Version::V201);
        assert!(rpc.is(ErrorCode::RpcFrameworkError));
        // 1.6 has no FormatViolation: a 1.6 station sending it sent some other code.
        let odd = CallErrorCode::parse("FormatViolation", Version::V16);
        assert_eq!(odd, CallErrorCode::Other("FormatViolation".into()));
        assert_eq!(odd.name(Version::V16), "FormatViolation");
    }

    #[test]
    fn outcomes_survive_the_trip_between_nodes() {
        let outcomes = [
            RemoteOutcome::Done(Err(CommandError::CallError {
                code: CallErrorCode::Known(ErrorCode::RpcFrameworkError),
                description: "no".into(),
                details: serde_json::json!({"a": 1}),
            })),
            RemoteOutcome::Done(Err(CommandError::CallError {
                code: CallErrorCode::Other("Vendor".into()),
                description: String::new(),
                details: Value::Null,
            })),
            RemoteOutcome::Done(Ok(serde_json::json!({"status": "Accepted"}))),
            RemoteOutcome::Done(Err(CommandError::QueueFull)),
            RemoteOutcome::NotConnected,
        ];
        for outcome in outcomes {
            let text = serde_json::to_string(&outcome).expect("serializes");
            assert_eq!(serde_json::from_str::<RemoteOutcome>(&text).expect("deserializes"), outcome);
        }
        let command = Command { action: "Reset".into(), payload: Value::Null, timeout: Duration::from_millis(1500) };
        let text = serde_json::to_string(&command).expect("serializes");
        assert_eq!(serde_json::from_str::<Command>(&text).expect("deserializes"), command);
    }
}
