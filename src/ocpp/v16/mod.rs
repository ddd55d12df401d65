//! OCPP 1.6J: dispatch of station-initiated CALLs to one handler per action, and the list of
//! commands the central system may send.
//!
//! Every handler has the same shape: it receives its action's typed `Request` (decoded from the payload
//! only after the payload passed the OCA schema), does its effects through the [`Store`], and returns a
//! typed `Response` and, where the tenant's live view changes, a [`Notice`].

pub mod authorize;
pub mod boot_notification;
pub mod data_transfer;
pub mod diagnostics_status_notification;
pub mod firmware_status_notification;
pub mod heartbeat;
mod id_tag_info;
pub mod log_status_notification;
pub mod meter_values;
pub mod security_event_notification;
pub mod sign_certificate;
pub mod signed_firmware_status_notification;
pub mod start_transaction;
pub mod status_notification;
pub mod stop_transaction;

pub use id_tag_info::IdTagInfo;

use super::rpc::{Call, CallError, ErrorCode};
use super::schema::{self, Direction};
use crate::model::{Registration, StationEvent};
use crate::store::{Store, StoreError};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use std::time::Duration;

/// The subprotocol name of this version.
pub const SUBPROTOCOL: &str = "ocpp1.6";

/// Actions a station sends to the central system.
pub const STATION_ACTIONS: &[&str] = &[
    "Authorize",
    "BootNotification",
    "DataTransfer",
    "DiagnosticsStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "LogStatusNotification",
    "MeterValues",
    "SecurityEventNotification",
    "SignCertificate",
    "SignedFirmwareStatusNotification",
    "StartTransaction",
    "StatusNotification",
    "StopTransaction",
];

/// Actions the central system sends to a station (the command API's `{Action}`).
pub const COMMAND_ACTIONS: &[&str] = &[
    "CancelReservation",
    "CertificateSigned",
    "ChangeAvailability",
    "ChangeConfiguration",
    "ClearCache",
    "ClearChargingProfile",
    "DataTransfer",
    "DeleteCertificate",
    "ExtendedTriggerMessage",
    "GetCompositeSchedule",
    "GetConfiguration",
    "GetDiagnostics",
    "GetInstalledCertificateIds",
    "GetLocalListVersion",
    "GetLog",
    "InstallCertificate",
    "RemoteStartTransaction",
    "RemoteStopTransaction",
    "ReserveNow",
    "Reset",
    "SendLocalList",
    "SetChargingProfile",
    "SignedUpdateFirmware",
    "TriggerMessage",
    "UnlockConnector",
    "UpdateFirmware",
];

/// Settings the handlers need.
#[derive(Debug, Clone)]
pub struct HandlerSettings {
    /// Heartbeat interval given to accepted stations.
    pub heartbeat_interval: Duration,
    /// Wait before the next BootNotification, given to pending or rejected stations.
    pub boot_retry_interval: Duration,
}

/// Who sent the CALL, and what handlers need to act on it.
pub struct StationContext<'a> {
    pub store: &'a dyn Store,
    pub account_id: &'a str,
    pub station_id: &'a str,
    /// The station's registration as the session knows it.
    pub registration: Registration,
    pub settings: &'a HandlerSettings,
}

/// A change to the tenant's live view caused by a handled CALL.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    Booted { registration: Registration },
    ConnectorStatus { connector_id: u32, status: String },
    TransactionStarted { transaction_id: i32, connector_id: u32 },
    TransactionStopped { transaction_id: i32 },
}

/// What a handler produced.
#[derive(Debug)]
pub struct Handled<R> {
    pub response: R,
    pub notice: Option<Notice>,
}

impl<R> Handled<R> {
    pub fn reply(response: R) -> Self {
        Self { response, notice: None }
    }
    pub fn with_notice(response: R, notice: Notice) -> Self {
        Self { response, notice: Some(notice) }
    }
}

/// Why a CALL was not handled.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{description}")]
    Refused { code: ErrorCode, description: String },
}

/// The outcome of one CALL: the CALLRESULT payload (and live-view notice), or the CALLERROR.
#[derive(Debug)]
pub enum Reply {
    Result { payload: Value, notice: Option<Notice> },
    Error(CallError),
}

fn refused(code: ErrorCode, description: impl Into<String>) -> HandlerError {
    HandlerError::Refused { code, description: description.into() }
}

fn decode<T: DeserializeOwned>(payload: &Value) -> Result<T, HandlerError> {
    // The payload passed the schema, so a failure here is a field the schema allows but this type does
    // not (an integer beyond 64 bits, say): the value is outside what can be processed.
    serde_json::from_value(payload.clone()).map_err(|e| refused(ErrorCode::PropertyConstraintViolation, e.to_string()))
}

fn encode<R: Serialize>(handled: Handled<R>) -> Result<(Value, Option<Notice>), HandlerError> {
    let payload = serde_json::to_value(handled.response)
        .map_err(|e| refused(ErrorCode::InternalError, format!("response encoding failed: {e}")))?;
    Ok((payload, handled.notice))
}

/// Records a message kept only for the record.
async fn record_event(ctx: &StationContext<'_>, action: &str, payload: &Value) -> Result<(), HandlerError> {
    let event = StationEvent {
        station_id: ctx.station_id.to_string(),
        action: action.to_string(),
        payload: payload.clone(),
        received_at: chrono::Utc::now(),
    };
    ctx.store.add_event(ctx.account_id, &event).await?;
    Ok(())
}

/// Keeps the latest firmware-update progress on the station record.
async fn set_firmware_status(ctx: &StationContext<'_>, status: String) -> Result<(), HandlerError> {
    let report = crate::model::StatusReport { status, received_at: chrono::Utc::now() };
    ctx.store.update_station(ctx.account_id, ctx.station_id, &|s| s.firmware_status = Some(report.clone())).await?;
    Ok(())
}

macro_rules! run {
    ($module:ident, $ctx:expr, $call:expr) => {{
        let request: $module::Request = decode(&$call.payload)?;
        encode($module::handle($ctx, request).await?)
    }};
}

/// Handles one station-initiated CALL, from schema check to the durable effects. The reply is a
/// CALLRESULT only once everything the CALL changed is flushed to disk.
pub async fn handle_call(ctx: &StationContext<'_>, call: &Call) -> Reply {
    match dispatch(ctx, call).await {
        Ok((payload, notice)) => Reply::Result { payload, notice },
        Err(HandlerError::Refused { code, description }) => {
            Reply::Error(CallError::new(call.unique_id.clone(), code, description))
        }
        Err(HandlerError::Store(e)) => {
            tracing::error!(error = %e, action = %call.action, station = ctx.station_id, "store failed while handling a CALL");
            Reply::Error(CallError::new(
                call.unique_id.clone(),
                ErrorCode::InternalError,
                "storage failure, retry later",
            ))
        }
    }
}

async fn dispatch(ctx: &StationContext<'_>, call: &Call) -> Result<(Value, Option<Notice>), HandlerError> {
    let action = call.action.as_str();
    let schemas = schema::v16();
    if !schemas.knows(action) {
        return Err(refused(ErrorCode::NotImplemented, format!("unknown action {action}")));
    }
    if !STATION_ACTIONS.contains(&action) {
        return Err(refused(ErrorCode::NotSupported, format!("{action} is sent by the central system, not to it")));
    }
    if let Some(Err(violation)) = schemas.validate(action, Direction::Request, &call.payload) {
        return Err(refused(violation.code, violation.to_string()));
    }
    if ctx.registration != Registration::Accepted && action != "BootNotification" {
        return Err(refused(ErrorCode::SecurityError, "station is not accepted: send a BootNotification first"));
    }
    let ((payload, notice), durable) = match action {
        "Authorize" => (run!(authorize, ctx, call)?, false),
        "BootNotification" => (run!(boot_notification, ctx, call)?, true),
        "DataTransfer" => (run!(data_transfer, ctx, call)?, true),
        "DiagnosticsStatusNotification" => (run!(diagnostics_status_notification, ctx, call)?, true),
        "FirmwareStatusNotification" => (run!(firmware_status_notification, ctx, call)?, true),
        "Heartbeat" => (run!(heartbeat, ctx, call)?, false),
        "LogStatusNotification" => (run!(log_status_notification, ctx, call)?, true),
        "MeterValues" => (run!(meter_values, ctx, call)?, true),
        "SecurityEventNotification" => (run!(security_event_notification, ctx, call)?, true),
        "SignCertificate" => (run!(sign_certificate, ctx, call)?, true),
        "SignedFirmwareStatusNotification" => (run!(signed_firmware_status_notification, ctx, call)?, true),
        "StartTransaction" => (run!(start_transaction, ctx, call)?, true),
        "StatusNotification" => (run!(status_notification, ctx, call)?, true),
        "StopTransaction" => (run!(stop_transaction, ctx, call)?, true),
        other => return Err(refused(ErrorCode::NotSupported, format!("{other} is not supported"))),
    };
    if durable {
        ctx.store.flush().await?;
    }
    Ok((payload, notice))
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::model::Station;
    use crate::store::SledStore;
    use std::collections::BTreeMap;

    /// A temporary store holding one account with one accepted station, `CP1`.
    pub struct Fixture {
        pub store: SledStore,
        pub settings: HandlerSettings,
        _dir: tempfile::TempDir,
    }

    pub const ACCOUNT: &str = "acct-1";
    pub const STATION: &str = "CP1";

    impl Fixture {
        pub async fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store = SledStore::open(dir.path(), crate::store::CommitPolicy::default()).unwrap();
            let station = Station {
                account_id: ACCOUNT.into(),
                id: STATION.into(),
                password_hash: String::new(),
                security_profile: Default::default(),
                registration: Registration::Accepted,
                created_at: chrono::Utc::now(),
                boot: None,
                connectors: BTreeMap::new(),
                last_seen: None,
                protocol: None,
                firmware_status: None,
                diagnostics_status: None,
            };
            store.create_station(&station).await.unwrap();
            let settings = HandlerSettings {
                heartbeat_interval: Duration::from_secs(300),
                boot_retry_interval: Duration::from_secs(60),
            };
            Self { store, settings, _dir: dir }
        }

        pub fn ctx(&self) -> StationContext<'_> {
            self.ctx_with(Registration::Accepted)
        }

        pub fn ctx_with(&self, registration: Registration) -> StationContext<'_> {
            StationContext {
                store: &self.store,
                account_id: ACCOUNT,
                station_id: STATION,
                registration,
                settings: &self.settings,
            }
        }

        /// Sends one CALL through the dispatcher.
        pub async fn call(&self, action: &str, payload: Value) -> Reply {
            let call = Call { unique_id: "u1".into(), action: action.into(), payload };
            handle_call(&self.ctx(), &call).await
        }

        pub async fn ok(&self, action: &str, payload: Value) -> Value {
            match self.call(action, payload).await {
                Reply::Result { payload, .. } => payload,
                Reply::Error(e) => panic!("{action} failed: {e:?}"),
            }
        }

        pub async fn error_code(&self, action: &str, payload: Value) -> String {
            match self.call(action, payload).await {
                Reply::Result { payload, .. } => {
                    panic!("{action} unexpectedly succeeded: {payload}")
                }
                Reply::Error(e) => e.code,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn state_changing_messages_are_flushed_before_they_are_answered() {
        let f = Fixture::new().await;
        let changes = [
            ("BootNotification", json!({"chargePointVendor": "V", "chargePointModel": "M"})),
            ("StatusNotification", json!({"connectorId": 1, "errorCode": "NoError", "status": "Available"})),
            (
                "StartTransaction",
                json!({"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": "2026-01-01T10:00:00Z"}),
            ),
            (
                "MeterValues",
                json!({"connectorId": 1, "transactionId": 1, "meterValue": [{"timestamp": "2026-01-01T10:01:00Z", "sampledValue": [{"value": "1"}]}]}),
            ),
            ("StopTransaction", json!({"transactionId": 1, "meterStop": 5, "timestamp": "2026-01-01T11:00:00Z"})),
            ("DataTransfer", json!({"vendorId": "v"})),
            ("FirmwareStatusNotification", json!({"status": "Idle"})),
            ("DiagnosticsStatusNotification", json!({"status": "Idle"})),
            ("SecurityEventNotification", json!({"type": "X", "timestamp": "2026-01-01T10:00:00Z"})),
        ];
        for (action, payload) in changes {
            let before = f.store.flushes();
            f.ok(action, payload).await;
            assert!(f.store.flushes() > before, "{action} answered before a flush");
        }
        // Nothing to make durable: no flush is waited for.
        let before = f.store.flushes();
        f.ok("Authorize", json!({"idTag": "T"})).await;
        assert_eq!(f.store.flushes(), before);
    }

    #[tokio::test]
    async fn unknown_actions_are_not_implemented() {
        let f = Fixture::new().await;
        assert_eq!(f.error_code("Teleport", json!({})).await, "NotImplemented");
    }

    #[tokio::test]
    async fn central_system_actions_sent_by_a_station_are_not_supported() {
        let f = Fixture::new().await;
        assert_eq!(f.error_code("Reset", json!({"type": "Soft"})).await, "NotSupported");
    }

    #[tokio::test]
    async fn schema_violations_carry_their_error_codes() {
        let f = Fixture::new().await;
        assert_eq!(f.error_code("Authorize", json!({})).await, "ProtocolError");
        assert_eq!(f.error_code("Authorize", json!({"idTag": 7})).await, "TypeConstraintViolation");
        assert_eq!(f.error_code("Authorize", json!({"idTag": "A".repeat(21)})).await, "TypeConstraintViolation");
        assert_eq!(
            f.error_code("StatusNotification", json!({"connectorId": 1, "errorCode": "NoError", "status": "Sleeping"}))
                .await,
            "PropertyConstraintViolation"
        );
    }

    #[tokio::test]
    async fn a_station_not_accepted_may_only_boot() {
        let f = Fixture::new().await;
        let call = Call { unique_id: "x".into(), action: "Heartbeat".into(), payload: json!({}) };
        match handle_call(&f.ctx_with(Registration::Pending), &call).await {
            Reply::Error(e) => assert_eq!(e.code, "SecurityError"),
            other => panic!("{other:?}"),
        }
        let boot = Call {
            unique_id: "y".into(),
            action: "BootNotification".into(),
            payload: json!({"chargePointVendor": "V", "chargePointModel": "M"}),
        };
        assert!(matches!(handle_call(&f.ctx_with(Registration::Pending), &boot).await, Reply::Result { .. }));
    }
}
