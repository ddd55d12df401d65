//! Validation of OCPP payloads against the Open Charge Alliance JSON schemas vendored under `schemas/`.
//!
//! The schemas of a version are those its actions declare ([`super::actions`]). Each schema is
//! compiled once, on first use. A violation is reported with the CALLERROR code that
//! OCPP-J names for its kind, so the session and the command API report the same thing for the
//! same mistake.

use super::actions::Action;
use super::rpc::ErrorCode;
use jsonschema::{error::ValidationErrorKind, Validator};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

/// One schema violation: the CALLERROR code for its kind and a message naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaViolation {
    pub code: ErrorCode,
    /// JSON pointer of the offending value within the payload ("" for the payload itself).
    pub path: String,
    pub message: String,
}

impl fmt::Display for SchemaViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Which side of an action a payload belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Request,
    Response,
}

/// The compiled schemas of one OCPP version, keyed by `(action, direction)`.
pub struct SchemaSet {
    validators: HashMap<(&'static str, Direction), Validator>,
}

impl SchemaSet {
    /// Compiles the request and response schemas of every action declared in `actions`.
    fn compile(actions: &[Action]) -> Self {
        let mut validators = HashMap::new();
        for action in actions {
            for (direction, text) in
                [(Direction::Request, action.request_schema), (Direction::Response, action.response_schema)]
            {
                // The schemas are compiled into the binary and checked by the tests below, so a failure
                // here is a build defect, not an input error.
                let schema: Value = serde_json::from_str(text).expect("vendored OCPP schema is valid JSON");
                // The draft comes from each schema's "$schema": draft-04 for 1.6, draft-06 for 2.0.1.
                let validator = jsonschema::options()
                    .should_validate_formats(true)
                    .build(&schema)
                    .expect("vendored OCPP schema compiles");
                validators.insert((action.name, direction), validator);
            }
        }
        Self { validators }
    }

    /// Whether the version has a schema (and so an action) of this name.
    pub fn knows(&self, action: &str) -> bool {
        self.validators.contains_key(&(action, Direction::Request))
    }

    /// Check a payload. `None` when the action is unknown to this version.
    pub fn validate(&self, action: &str, direction: Direction, payload: &Value) -> Option<Result<(), SchemaViolation>> {
        let validator = self.validators.get(&(action, direction))?;
        Some(match validator.validate(payload) {
            Ok(()) => Ok(()),
            Err(e) => Err(SchemaViolation {
                code: code_for(&e.kind),
                path: e.instance_path.to_string(),
                message: describe(&e.kind, &e.to_string()),
            }),
        })
    }
}

/// The OCPP-J error code for a kind of schema violation.
///
/// - a field of the wrong JSON type, or a string longer than its CiString type: TypeConstraintViolation;
/// - a required field missing: ProtocolError ("payload for Action is incomplete");
/// - too many or too few list entries: OccurenceConstraintViolation;
/// - a field the PDU does not have: FormationViolation ("not conform the PDU structure");
/// - a value outside its enumeration, format or range: PropertyConstraintViolation.
fn code_for(kind: &ValidationErrorKind) -> ErrorCode {
    use ValidationErrorKind as K;
    match kind {
        K::Type { .. } | K::MaxLength { .. } | K::MinLength { .. } => ErrorCode::TypeConstraintViolation,
        K::Required { .. } => ErrorCode::ProtocolError,
        K::MaxItems { .. } | K::MinItems { .. } | K::UniqueItems => ErrorCode::OccurenceConstraintViolation,
        K::AdditionalProperties { .. } | K::AdditionalItems { .. } | K::UnevaluatedProperties { .. } => {
            ErrorCode::FormationViolation
        }
        _ => ErrorCode::PropertyConstraintViolation,
    }
}

fn describe(kind: &ValidationErrorKind, fallback: &str) -> String {
    use ValidationErrorKind as K;
    match kind {
        K::Required { property } => format!("required property {property} is missing"),
        K::AdditionalProperties { unexpected } => {
            format!("unexpected properties: {}", unexpected.join(", "))
        }
        _ => fallback.to_string(),
    }
}

/// The OCPP 2.0.1 schemas, compiled on first use.
pub fn v201() -> &'static SchemaSet {
    static SET: OnceLock<SchemaSet> = OnceLock::new();
    SET.get_or_init(|| SchemaSet::compile(super::v201::ACTIONS))
}

/// The OCPP 1.6 schemas, compiled on first use.
pub fn v16() -> &'static SchemaSet {
    static SET: OnceLock<SchemaSet> = OnceLock::new();
    SET.get_or_init(|| SchemaSet::compile(super::v16::ACTIONS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn violation(action: &str, payload: Value) -> SchemaViolation {
        v16().validate(action, Direction::Request, &payload).expect("known action").expect_err("should be invalid")
    }

    #[test]
    fn every_vendored_schema_compiles() {
        assert_eq!(v16().validators.len(), crate::ocpp::v16::ACTIONS.len() * 2);
        assert_eq!(v201().validators.len(), crate::ocpp::v201::ACTIONS.len() * 2);
        assert_eq!(
            crate::ocpp::v201::ACTIONS.len() * 2,
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/v201")).unwrap().count()
        );
    }

    #[test]
    fn v201_schemas_check_their_definitions() {
        let bad = json!({"chargingStation": {"model": "M", "vendorName": 5}, "reason": "PowerUp"});
        let v = v201().validate("BootNotification", Direction::Request, &bad).unwrap().unwrap_err();
        assert_eq!((v.code, v.path.as_str()), (ErrorCode::TypeConstraintViolation, "/chargingStation/vendorName"));
        let ok = json!({"chargingStation": {"model": "M", "vendorName": "V"}, "reason": "PowerUp"});
        assert_eq!(v201().validate("BootNotification", Direction::Request, &ok), Some(Ok(())));
    }

    #[test]
    fn valid_payload_passes() {
        let ok = v16().validate(
            "BootNotification",
            Direction::Request,
            &json!({"chargePointVendor": "ACME", "chargePointModel": "X1"}),
        );
        assert_eq!(ok, Some(Ok(())));
    }

    #[test]
    fn unknown_action_is_none() {
        assert!(v16().validate("Teleport", Direction::Request, &json!({})).is_none());
        assert!(!v16().knows("Teleport"));
    }

    #[test]
    fn violations_map_to_the_ocpp_error_codes() {
        let v = violation("BootNotification", json!({"chargePointVendor": "ACME"}));
        assert_eq!(v.code, ErrorCode::ProtocolError);
        assert!(v.message.contains("chargePointModel"), "{v}");

        let v = violation("BootNotification", json!({"chargePointVendor": 5, "chargePointModel": "X"}));
        assert_eq!(v.code, ErrorCode::TypeConstraintViolation);
        assert_eq!(v.path, "/chargePointVendor");

        let v = violation("BootNotification", json!({"chargePointVendor": "A".repeat(21), "chargePointModel": "X"}));
        assert_eq!(v.code, ErrorCode::TypeConstraintViolation);

        let v =
            violation("BootNotification", json!({"chargePointVendor": "A", "chargePointModel": "X", "color": "red"}));
        assert_eq!(v.code, ErrorCode::FormationViolation);

        let v = violation("Reset", json!({"type": "Medium"}));
        assert_eq!(v.code, ErrorCode::PropertyConstraintViolation);

        let v = violation(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": "yesterday"}),
        );
        assert_eq!(v.code, ErrorCode::PropertyConstraintViolation);
    }
}
