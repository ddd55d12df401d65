//! The CALLERROR code as a metric label: only values OCPP defines, so what a station sends cannot
//! create unbounded label values (the action's label is [`crate::ocpp::actions::label`]).

use crate::fleet::command::CallErrorCode;
use crate::ocpp::Version;

/// A CALLERROR code as a metric label: as `version` spells a code OCPP names, or "other".
pub fn error_code_label(code: &CallErrorCode, version: Version) -> &'static str {
    match code {
        CallErrorCode::Known(code) => code.name(version),
        CallErrorCode::Other(_) => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ocpp::rpc::ErrorCode;

    #[test]
    fn error_code_labels_are_bounded_to_what_ocpp_names() {
        let v201 = CallErrorCode::parse("FormatViolation", Version::V201);
        assert_eq!(error_code_label(&v201, Version::V201), "FormatViolation");
        assert_eq!(error_code_label(&CallErrorCode::Known(ErrorCode::InternalError), Version::V16), "InternalError");
        assert_eq!(error_code_label(&CallErrorCode::Other("Mine".into()), Version::V16), "other");
    }
}
