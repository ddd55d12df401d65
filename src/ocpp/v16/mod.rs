//! OCPP 1.6J: the declaration of every action ([`ACTIONS`]) and one handler per action a station sends.
//!
//! Every handler has the same shape: it receives its action's typed `Request` (decoded from the payload
//! only after the payload passed the OCA schema), does its effects through the store, and returns a
//! typed `Response` and, where the tenant's live view changes, a [`Notice`](super::common::notice::Notice).

pub mod authorize;
pub mod boot_notification;
pub mod data_transfer;
pub mod diagnostics_status_notification;
pub mod firmware_status_notification;
pub mod id_tag_info;
pub mod log_status_notification;
pub mod meter_values;
pub mod security_event_notification;
pub mod sign_certificate;
pub mod start_transaction;
pub mod status_notification;
pub mod stop_transaction;

use super::actions::declare_actions;
// Same messages, same effect in both versions.
use super::common::{firmware_status as signed_firmware_status_notification, heartbeat};

declare_actions! {
    /// Every action of OCPP 1.6 (core, firmware, local list, reservation, remote trigger, smart
    /// charging) and of its security extension.
    pub static ACTIONS = schemas "v16", request "", response "Response";
    Authorize:                        Station, volatile, handler(authorize);
    BootNotification:                 Station, durable, handler(boot_notification);
    CancelReservation:                CentralSystem;
    CertificateSigned:                CentralSystem;
    ChangeAvailability:               CentralSystem;
    ChangeConfiguration:              CentralSystem;
    ClearCache:                       CentralSystem;
    ClearChargingProfile:             CentralSystem;
    DataTransfer:                     Both, durable, handler(data_transfer);
    DeleteCertificate:                CentralSystem;
    DiagnosticsStatusNotification:    Station, durable, handler(diagnostics_status_notification);
    ExtendedTriggerMessage:           CentralSystem;
    FirmwareStatusNotification:       Station, durable, handler(firmware_status_notification);
    GetCompositeSchedule:             CentralSystem;
    GetConfiguration:                 CentralSystem;
    GetDiagnostics:                   CentralSystem;
    GetInstalledCertificateIds:       CentralSystem;
    GetLocalListVersion:              CentralSystem;
    GetLog:                           CentralSystem;
    Heartbeat:                        Station, volatile, handler(heartbeat);
    InstallCertificate:               CentralSystem;
    LogStatusNotification:            Station, durable, handler(log_status_notification);
    MeterValues:                      Station, durable, handler(meter_values);
    RemoteStartTransaction:           CentralSystem;
    RemoteStopTransaction:            CentralSystem;
    ReserveNow:                       CentralSystem;
    Reset:                            CentralSystem;
    SecurityEventNotification:        Station, durable, handler(security_event_notification);
    SendLocalList:                    CentralSystem;
    SetChargingProfile:               CentralSystem;
    SignCertificate:                  Station, durable, handler(sign_certificate);
    SignedFirmwareStatusNotification: Station, durable, handler(signed_firmware_status_notification);
    SignedUpdateFirmware:             CentralSystem;
    StartTransaction:                 Station, durable, handler(start_transaction);
    StatusNotification:               Station, durable, handler(status_notification);
    StopTransaction:                  Station, durable, handler(stop_transaction);
    TriggerMessage:                   CentralSystem;
    UnlockConnector:                  CentralSystem;
    UpdateFirmware:                   CentralSystem;
}

#[cfg(test)]
mod tests {
    use crate::model::Registration;
    use crate::ocpp::common::test_support::*;
    use crate::ocpp::handler::{handle_call, Reply};
    use crate::ocpp::rpc::Call;
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
        // A refusal is in the tenant's feed: flushed too.
        let before = f.store.flushes();
        f.ok("Authorize", json!({"idTag": "T"})).await;
        assert!(f.store.flushes() > before, "a refused Authorize answered before a flush");
        // Nothing to make durable: no flush is waited for.
        let tag = crate::model::IdTag {
            id_tag: "T".into(),
            status: crate::model::TagStatus::Accepted,
            expiry_date: None,
            parent_id_tag: None,
            updated_at: chrono::Utc::now(),
        };
        crate::store::AccountStore::put_id_tag(&f.store, &ACCOUNT.into(), &tag).await.unwrap();
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
        assert_eq!(
            f.store.events(&ACCOUNT.into(), &STATION.into()).await.unwrap().len(),
            1,
            "only what was acknowledged is kept"
        );
        let start = json!({"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": "2026-01-01T10:00:00Z"});
        assert!(f.ok("StartTransaction", start).await["transactionId"].is_number(), "transactions do not count");
    }
}
