//! OCPP 1.6J: dispatch of station-initiated CALLs to one handler per action, and the list of
//! commands the central system may send.
//!
//! Every handler has the same shape: it receives its action's typed `Request` (decoded from the payload
//! only after the payload passed the OCA schema), does its effects through the [`crate::store::StationStore`], and returns a
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

pub use super::handler::{handle_call, Handled, HandlerError, HandlerSettings, Notice, Reply, StationContext};
use super::handler::{record_event, refused, run_handler, set_firmware_status, Dispatched};
use super::rpc::{Call, ErrorCode};

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

/// Runs the 1.6 handler of an action that passed the common checks of [`crate::ocpp::handler`];
/// answers its payload, notice, and whether it changed state that must be durable before the answer.
pub(crate) async fn dispatch(ctx: &StationContext<'_>, call: &Call) -> Result<Dispatched, HandlerError> {
    let action = call.action.as_str();
    let ((payload, notice), durable) = match action {
        "Authorize" => (run_handler!(authorize, ctx, call)?, false),
        "BootNotification" => (run_handler!(boot_notification, ctx, call)?, true),
        "DataTransfer" => (run_handler!(data_transfer, ctx, call)?, true),
        "DiagnosticsStatusNotification" => (run_handler!(diagnostics_status_notification, ctx, call)?, true),
        "FirmwareStatusNotification" => (run_handler!(firmware_status_notification, ctx, call)?, true),
        "Heartbeat" => (run_handler!(heartbeat, ctx, call)?, false),
        "LogStatusNotification" => (run_handler!(log_status_notification, ctx, call)?, true),
        "MeterValues" => (run_handler!(meter_values, ctx, call)?, true),
        "SecurityEventNotification" => (run_handler!(security_event_notification, ctx, call)?, true),
        "SignCertificate" => (run_handler!(sign_certificate, ctx, call)?, true),
        "SignedFirmwareStatusNotification" => (run_handler!(signed_firmware_status_notification, ctx, call)?, true),
        "StartTransaction" => (run_handler!(start_transaction, ctx, call)?, true),
        "StatusNotification" => (run_handler!(status_notification, ctx, call)?, true),
        "StopTransaction" => (run_handler!(stop_transaction, ctx, call)?, true),
        other => return Err(refused(ErrorCode::NotSupported, format!("{other} is not supported"))),
    };
    Ok(Dispatched { payload, notice, durable })
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::model::{Registration, Station};
    use crate::store::prelude::*;
    use crate::store::SledStore;
    use serde_json::Value;
    use std::time::Duration;

    /// A temporary store holding one account with one accepted station, `CP1`.
    pub struct Fixture {
        pub store: SledStore,
        pub settings: HandlerSettings,
        pub version: crate::ocpp::Version,
        /// The station's event quota, when the test sets one.
        pub event_quota: Option<crate::limits::quota::WindowQuota<String>>,
        _dir: tempfile::TempDir,
    }

    pub const ACCOUNT: &str = "acct-1";
    pub const STATION: &str = "CP1";

    impl Fixture {
        pub async fn new() -> Self {
            Self::with_version(crate::ocpp::Version::V16).await
        }

        pub async fn with_version(version: crate::ocpp::Version) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store = SledStore::open(dir.path(), crate::store::CommitPolicy::default()).unwrap();
            let station = Station::new(ACCOUNT, STATION, String::new(), Registration::Accepted, Default::default());
            store.create_station(&station).await.unwrap();
            let settings = HandlerSettings {
                heartbeat_interval: Duration::from_secs(300),
                boot_retry_interval: Duration::from_secs(60),
            };
            Self { store, settings, version, event_quota: None, _dir: dir }
        }

        /// A fixture whose station may keep `bytes` of events.
        pub async fn with_event_quota(version: crate::ocpp::Version, bytes: u64) -> Self {
            let mut f = Self::with_version(version).await;
            f.event_quota = Some(crate::limits::quota::WindowQuota::new(bytes, Duration::from_secs(3600)));
            f
        }

        pub fn ctx(&self) -> StationContext<'_> {
            self.ctx_with(Registration::Accepted)
        }

        pub fn ctx_with(&self, registration: Registration) -> StationContext<'_> {
            StationContext {
                version: self.version,
                store: &self.store,
                account_id: ACCOUNT,
                station_id: STATION,
                registration,
                settings: &self.settings,
                event_quota: self.event_quota.as_ref(),
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
    use crate::model::Registration;
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

    #[tokio::test]
    async fn past_the_event_quota_event_only_messages_are_refused_and_not_kept_and_billing_goes_on() {
        use crate::store::prelude::*;
        let f = Fixture::with_event_quota(crate::ocpp::Version::V16, 1000).await;
        let data = "x".repeat(600);
        assert_eq!(f.ok("DataTransfer", json!({"vendorId": "v", "data": data})).await["status"], "UnknownVendorId");
        assert_eq!(f.ok("DataTransfer", json!({"vendorId": "v", "data": data})).await["status"], "Rejected");
        let security = json!({"type": "TamperDetectionActivated", "timestamp": "2026-01-01T10:00:00Z", "techInfo": "x".repeat(250)});
        assert_eq!(f.error_code("SecurityEventNotification", security).await, "GenericError");
        assert_eq!(f.store.events(ACCOUNT, STATION).await.unwrap().len(), 1, "only what was acknowledged is kept");
        let start = json!({"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": "2026-01-01T10:00:00Z"});
        assert!(f.ok("StartTransaction", start).await["transactionId"].is_number(), "transactions do not count");
    }
}
