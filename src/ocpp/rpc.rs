//! OCPP-J RPC framing: the three message types (CALL, CALLRESULT, CALLERROR) as typed values.
//!
//! Every way a text frame can be wrong maps to exactly one [`ErrorCode`], so the session can answer
//! with the CALLERROR the OCPP-J specification names. The unique-id length limit lives here too; the
//! frame-size limit is enforced by the WebSocket codec before a frame ever reaches [`Frame::parse`].

use super::Version;
use serde_json::{json, Value};
use std::fmt;

/// OCPP-J: "The maximum length of the unique id is 36 characters".
pub const MAX_UNIQUE_ID_LEN: usize = 36;

/// OCPP 2.0.1 (part 4, 4.2.3): an errorDescription holds at most 255 characters. Ours are cut there
/// in both versions: a description quoting the offending value must not echo a station's 64 KiB back.
pub const MAX_ERROR_DESCRIPTION_CHARS: usize = 255;

/// `description` cut to [`MAX_ERROR_DESCRIPTION_CHARS`] characters, ending with "…" when cut.
fn bounded_description(description: String) -> String {
    if description.chars().count() <= MAX_ERROR_DESCRIPTION_CHARS {
        return description;
    }
    let mut cut: String = description.chars().take(MAX_ERROR_DESCRIPTION_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// The unique id used in a CALLERROR when the offending frame's own id could not be read
/// (the convention OCPP 2.0.1 writes down and most 1.6 implementations follow).
pub const UNKNOWN_UNIQUE_ID: &str = "-1";

const CALL: u64 = 2;
const CALL_RESULT: u64 = 3;
const CALL_ERROR: u64 = 4;

/// CALLERROR codes. Each is a kind of error; [`ErrorCode::name`] gives its spelling in a version:
/// OCPP-J 1.6 (section 4.2.3) and OCPP 2.0.1 (part 4, section 4.3) name some kinds differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ErrorCode {
    /// Requested Action is not known by receiver.
    NotImplemented,
    /// Requested Action is recognized but not supported by the receiver.
    NotSupported,
    /// An internal error occurred and the receiver was not able to process the requested Action.
    InternalError,
    /// Payload for Action is incomplete.
    ProtocolError,
    /// During the processing of Action a security issue occurred preventing the receiver from completing it.
    SecurityError,
    /// Payload for Action is syntactically incorrect or not conform the PDU structure for Action.
    FormationViolation,
    /// Payload is syntactically correct but at least one field contains an invalid value.
    PropertyConstraintViolation,
    /// Payload is syntactically correct but at least one field violates occurrence constraints.
    OccurenceConstraintViolation,
    /// Payload is syntactically correct but at least one field violates data type constraints.
    TypeConstraintViolation,
    /// Any other error not covered by the previous ones.
    GenericError,
    /// The frame is not a valid RPC message (e.g. its message id cannot be read). 2.0.1:
    /// RpcFrameworkError; 1.6 has no such code and says FormationViolation.
    RpcFrameworkError,
    /// The message type id is unknown. 2.0.1: MessageTypeNotSupported; 1.6 says ProtocolError.
    MessageTypeNotSupported,
}

impl ErrorCode {
    /// The code as a version spells it on the wire.
    pub fn name(self, version: Version) -> &'static str {
        match (self, version) {
            (ErrorCode::FormationViolation, Version::V201) => "FormatViolation",
            (ErrorCode::OccurenceConstraintViolation, Version::V201) => "OccurrenceConstraintViolation",
            (ErrorCode::RpcFrameworkError, Version::V201) => "RpcFrameworkError",
            (ErrorCode::RpcFrameworkError, Version::V16) => "FormationViolation",
            (ErrorCode::MessageTypeNotSupported, Version::V201) => "MessageTypeNotSupported",
            (ErrorCode::MessageTypeNotSupported, Version::V16) => "ProtocolError",
            (code, _) => code.as_str(),
        }
    }

    /// Every kind.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::NotImplemented,
        ErrorCode::NotSupported,
        ErrorCode::InternalError,
        ErrorCode::ProtocolError,
        ErrorCode::SecurityError,
        ErrorCode::FormationViolation,
        ErrorCode::PropertyConstraintViolation,
        ErrorCode::OccurenceConstraintViolation,
        ErrorCode::TypeConstraintViolation,
        ErrorCode::GenericError,
        ErrorCode::RpcFrameworkError,
        ErrorCode::MessageTypeNotSupported,
    ];

    /// The OCPP 1.6 spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotImplemented => "NotImplemented",
            ErrorCode::NotSupported => "NotSupported",
            ErrorCode::InternalError => "InternalError",
            ErrorCode::ProtocolError => "ProtocolError",
            ErrorCode::SecurityError => "SecurityError",
            ErrorCode::FormationViolation => "FormationViolation",
            ErrorCode::PropertyConstraintViolation => "PropertyConstraintViolation",
            ErrorCode::OccurenceConstraintViolation => "OccurenceConstraintViolation",
            ErrorCode::TypeConstraintViolation => "TypeConstraintViolation",
            ErrorCode::GenericError => "GenericError",
            ErrorCode::RpcFrameworkError => "FormationViolation",
            ErrorCode::MessageTypeNotSupported => "ProtocolError",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A CALL: `[2, "<uniqueId>", "<Action>", {<payload>}]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub unique_id: String,
    pub action: String,
    pub payload: Value,
}

/// A CALLRESULT: `[3, "<uniqueId>", {<payload>}]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CallResult {
    pub unique_id: String,
    pub payload: Value,
}

/// A CALLERROR: `[4, "<uniqueId>", "<errorCode>", "<errorDescription>", {<errorDetails>}]`.
///
/// The error code is kept as the string received, since a peer may send codes of another version.
#[derive(Debug, Clone, PartialEq)]
pub struct CallError {
    pub unique_id: String,
    pub code: String,
    pub description: String,
    pub details: Value,
}

/// One decoded OCPP-J message.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Call(Call),
    CallResult(CallResult),
    CallError(CallError),
}

/// Why a text frame could not be decoded, with the unique id to answer to when it could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub unique_id: Option<String>,
    pub code: ErrorCode,
    pub description: String,
}

impl FrameError {
    fn new(unique_id: Option<String>, code: ErrorCode, description: impl Into<String>) -> Self {
        Self { unique_id, code, description: description.into() }
    }

    /// The CALLERROR that answers this frame in `version`.
    pub fn to_call_error(&self, version: Version) -> CallError {
        CallError {
            unique_id: self.unique_id.clone().unwrap_or_else(|| UNKNOWN_UNIQUE_ID.to_string()),
            code: self.code.name(version).to_string(),
            description: bounded_description(self.description.clone()),
            details: json!({}),
        }
    }
}

impl Frame {
    /// Decode one text frame.
    pub fn parse(text: &str) -> Result<Frame, FrameError> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            FrameError::new(None, ErrorCode::RpcFrameworkError, format!("frame is not valid JSON: {e}"))
        })?;
        let Value::Array(mut items) = value else {
            return Err(FrameError::new(None, ErrorCode::RpcFrameworkError, "frame is not a JSON array"));
        };
        // Read the unique id first, so every later error can be answered to the right call. The
        // parts are moved out of the array, never copied.
        let unique_id = match items.get_mut(1) {
            Some(Value::String(id)) if id.is_empty() => {
                return Err(FrameError::new(None, ErrorCode::RpcFrameworkError, "unique id is empty"))
            }
            Some(Value::String(id)) if id.chars().count() > MAX_UNIQUE_ID_LEN => {
                return Err(FrameError::new(
                    None,
                    ErrorCode::RpcFrameworkError,
                    format!("unique id is longer than {MAX_UNIQUE_ID_LEN} characters"),
                ))
            }
            Some(Value::String(id)) => std::mem::take(id),
            Some(_) => return Err(FrameError::new(None, ErrorCode::RpcFrameworkError, "unique id is not a string")),
            None => return Err(FrameError::new(None, ErrorCode::RpcFrameworkError, "frame has no unique id")),
        };
        let refuse =
            |code: ErrorCode, description: String| Err(FrameError::new(Some(unique_id.clone()), code, description));
        let type_id = match items.first() {
            Some(Value::Number(n)) => n.as_u64(),
            _ => None,
        };
        let Some(type_id) = type_id else {
            return refuse(ErrorCode::RpcFrameworkError, "message type id is not a number".into());
        };
        match type_id {
            CALL => {
                if items.len() != 4 {
                    return refuse(
                        ErrorCode::RpcFrameworkError,
                        format!("a CALL has 4 elements, this frame has {}", items.len()),
                    );
                }
                let action = match &mut items[2] {
                    Value::String(a) if !a.is_empty() => std::mem::take(a),
                    _ => return refuse(ErrorCode::RpcFrameworkError, "action is not a non-empty string".into()),
                };
                let payload = items[3].take();
                if !payload.is_object() {
                    return refuse(ErrorCode::RpcFrameworkError, "CALL payload is not a JSON object".into());
                }
                Ok(Frame::Call(Call { unique_id, action, payload }))
            }
            CALL_RESULT => {
                if items.len() != 3 {
                    return refuse(
                        ErrorCode::RpcFrameworkError,
                        format!("a CALLRESULT has 3 elements, this frame has {}", items.len()),
                    );
                }
                let payload = items[2].take();
                if !payload.is_object() {
                    return refuse(ErrorCode::RpcFrameworkError, "CALLRESULT payload is not a JSON object".into());
                }
                Ok(Frame::CallResult(CallResult { unique_id, payload }))
            }
            CALL_ERROR => {
                if items.len() != 5 {
                    return refuse(
                        ErrorCode::RpcFrameworkError,
                        format!("a CALLERROR has 5 elements, this frame has {}", items.len()),
                    );
                }
                let details = items[4].take();
                let (Value::String(code), Value::String(description)) = (items[2].take(), items[3].take()) else {
                    return refuse(
                        ErrorCode::RpcFrameworkError,
                        "CALLERROR code and description must be strings".into(),
                    );
                };
                Ok(Frame::CallError(CallError { unique_id, code, description, details }))
            }
            other => refuse(ErrorCode::MessageTypeNotSupported, format!("unknown message type id {other}")),
        }
    }

    /// Encode to the text sent on the wire.
    pub fn to_text(&self) -> String {
        // Serialized from the parts as they are (a tuple is a JSON array), not copied into a Value.
        let text = match self {
            Frame::Call(c) => serde_json::to_string(&(CALL, &c.unique_id, &c.action, &c.payload)),
            Frame::CallResult(r) => serde_json::to_string(&(CALL_RESULT, &r.unique_id, &r.payload)),
            Frame::CallError(e) => {
                serde_json::to_string(&(CALL_ERROR, &e.unique_id, &e.code, &e.description, &e.details))
            }
        };
        // Strings and JSON values always serialize (no map has non-string keys).
        text.unwrap_or_else(|e| unreachable!("a frame always serializes: {e}"))
    }

    pub fn unique_id(&self) -> &str {
        match self {
            Frame::Call(c) => &c.unique_id,
            Frame::CallResult(r) => &r.unique_id,
            Frame::CallError(e) => &e.unique_id,
        }
    }
}

impl CallError {
    /// A CALLERROR with the code spelled as `version` spells it.
    pub fn new(
        version: Version,
        unique_id: impl Into<String>,
        code: ErrorCode,
        description: impl Into<String>,
    ) -> Self {
        Self {
            unique_id: unique_id.into(),
            code: code.name(version).to_string(),
            description: bounded_description(description.into()),
            details: json!({}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> FrameError {
        Frame::parse(text).expect_err("frame should be rejected")
    }

    #[test]
    fn decodes_each_message_type() {
        let call = Frame::parse(r#"[2,"a1","Heartbeat",{}]"#).unwrap();
        assert_eq!(call, Frame::Call(Call { unique_id: "a1".into(), action: "Heartbeat".into(), payload: json!({}) }));
        let res = Frame::parse(r#"[3,"a2",{"status":"Accepted"}]"#).unwrap();
        assert_eq!(
            res,
            Frame::CallResult(CallResult { unique_id: "a2".into(), payload: json!({"status":"Accepted"}) })
        );
        let e = Frame::parse(r#"[4,"a3","NotImplemented","nope",{}]"#).unwrap();
        assert!(matches!(e, Frame::CallError(CallError { ref code, .. }) if code == "NotImplemented"));
    }

    #[test]
    fn round_trips_through_text() {
        let f = Frame::Call(Call { unique_id: "x".into(), action: "Reset".into(), payload: json!({"type":"Soft"}) });
        assert_eq!(Frame::parse(&f.to_text()).unwrap(), f);
    }

    #[test]
    fn garbage_is_a_formation_violation_without_id() {
        for text in ["", "hello", "{}", "42", r#"{"a":1}"#, "[", "[2]"] {
            let e = err(text);
            assert_eq!(e.code, ErrorCode::RpcFrameworkError, "{text}");
            assert_eq!(e.to_call_error(Version::V16).unique_id, UNKNOWN_UNIQUE_ID);
            assert_eq!(e.to_call_error(Version::V16).code, "FormationViolation");
            assert_eq!(e.to_call_error(Version::V201).code, "RpcFrameworkError");
        }
    }

    #[test]
    fn structural_errors_keep_the_unique_id() {
        let e = err(r#"[2,"id7","Heartbeat"]"#);
        assert_eq!((e.code, e.unique_id.as_deref()), (ErrorCode::RpcFrameworkError, Some("id7")));
        let e = err(r#"[2,"id8","Heartbeat",[]]"#);
        assert_eq!(e.code, ErrorCode::RpcFrameworkError);
        let e = err(r#"[2,"id9",17,{}]"#);
        assert_eq!(e.code, ErrorCode::RpcFrameworkError);
        let e = err(r#"["2","id10","Heartbeat",{}]"#);
        assert_eq!((e.code, e.unique_id.as_deref()), (ErrorCode::RpcFrameworkError, Some("id10")));
    }

    #[test]
    fn unknown_message_type_is_a_protocol_error_in_16_and_message_type_not_supported_in_201() {
        let e = err(r#"[7,"id1","Heartbeat",{}]"#);
        assert_eq!(e.to_call_error(Version::V16).code, "ProtocolError");
        assert_eq!(e.to_call_error(Version::V201).code, "MessageTypeNotSupported");
        assert_eq!((e.code, e.unique_id.as_deref()), (ErrorCode::MessageTypeNotSupported, Some("id1")));
    }

    #[test]
    fn error_descriptions_are_cut_to_255_characters() {
        let long = CallError::new(Version::V16, "a", ErrorCode::TypeConstraintViolation, "é".repeat(70_000));
        assert_eq!(long.description.chars().count(), MAX_ERROR_DESCRIPTION_CHARS);
        assert!(long.description.ends_with('…'));
        let exact = "x".repeat(MAX_ERROR_DESCRIPTION_CHARS);
        assert_eq!(CallError::new(Version::V201, "a", ErrorCode::GenericError, exact.clone()).description, exact);
        assert_eq!(CallError::new(Version::V201, "a", ErrorCode::GenericError, "short").description, "short");
    }

    #[test]
    fn unique_id_longer_than_36_is_refused() {
        let long = "x".repeat(37);
        let e = err(&format!(r#"[2,"{long}","Heartbeat",{{}}]"#));
        assert_eq!(e.code, ErrorCode::RpcFrameworkError);
        let ok = "x".repeat(36);
        assert!(Frame::parse(&format!(r#"[2,"{ok}","Heartbeat",{{}}]"#)).is_ok());
    }
}
