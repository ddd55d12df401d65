//! OCPP 2.0.1: the declaration of every action ([`ACTIONS`]) and the handlers of those a station
//! sends. Same shape as [`super::v16`]: typed `Request` in, typed `Response` out.
//!
//! Every station→central-system message of 2.0.1 is answered. Those with effects beyond the record
//! (boot, status, authorization, transactions, meter values, the device model, firmware status) have
//! a handler of their own; the others are kept as station events and answered as their row says
//! ([`recorded`]).

pub mod authorize;
pub mod boot_notification;
pub mod meter_values;
pub mod notify_event;
pub mod notify_report;
pub mod recorded;
pub mod sign_certificate;
pub mod status_notification;
pub mod transaction_event;
mod types;

use super::actions::declare_actions;
// Same messages, same effect in both versions: Heartbeat, and 2.0.1's FirmwareStatusNotification,
// which carries what 1.6's SignedFirmwareStatusNotification does (status, requestId).
use super::common::{firmware_status as firmware_status_notification, heartbeat};

declare_actions! {
    /// Every action of OCPP 2.0.1.
    pub static ACTIONS = schemas "v201", request "Request", response "Response";
    Authorize:                         Station, volatile, handler(authorize);
    BootNotification:                  Station, durable, handler(boot_notification);
    CancelReservation:                 CentralSystem;
    CertificateSigned:                 CentralSystem;
    ChangeAvailability:                CentralSystem;
    ClearCache:                        CentralSystem;
    ClearChargingProfile:              CentralSystem;
    ClearDisplayMessage:               CentralSystem;
    ClearVariableMonitoring:           CentralSystem;
    ClearedChargingLimit:              Station, durable, handler(recorded {});
    CostUpdated:                       CentralSystem;
    CustomerInformation:               CentralSystem;
    DataTransfer:                      Both, durable, handler(recorded {"status": "UnknownVendorId"});
    DeleteCertificate:                 CentralSystem;
    FirmwareStatusNotification:        Station, durable, handler(firmware_status_notification);
    Get15118EVCertificate:             Station, durable, handler(recorded {"status": "Failed", "exiResponse": ""});
    GetBaseReport:                     CentralSystem;
    GetCertificateStatus:              Station, durable, handler(recorded {"status": "Failed"});
    GetChargingProfiles:               CentralSystem;
    GetCompositeSchedule:              CentralSystem;
    GetDisplayMessages:                CentralSystem;
    GetInstalledCertificateIds:        CentralSystem;
    GetLocalListVersion:               CentralSystem;
    GetLog:                            CentralSystem;
    GetMonitoringReport:               CentralSystem;
    GetReport:                         CentralSystem;
    GetTransactionStatus:              CentralSystem;
    GetVariables:                      CentralSystem;
    Heartbeat:                         Station, volatile, handler(heartbeat);
    InstallCertificate:                CentralSystem;
    LogStatusNotification:             Station, durable, handler(recorded {});
    MeterValues:                       Station, durable, handler(meter_values);
    NotifyChargingLimit:               Station, durable, handler(recorded {});
    NotifyCustomerInformation:         Station, durable, handler(recorded {});
    NotifyDisplayMessages:             Station, durable, handler(recorded {});
    NotifyEVChargingNeeds:             Station, durable, handler(recorded {"status": "Rejected"});
    NotifyEVChargingSchedule:          Station, durable, handler(recorded {"status": "Accepted"});
    NotifyEvent:                       Station, durable, handler(notify_event);
    NotifyMonitoringReport:            Station, durable, handler(recorded {});
    NotifyReport:                      Station, durable, handler(notify_report);
    PublishFirmware:                   CentralSystem;
    PublishFirmwareStatusNotification: Station, durable, handler(recorded {});
    ReportChargingProfiles:            Station, durable, handler(recorded {});
    RequestStartTransaction:           CentralSystem;
    RequestStopTransaction:            CentralSystem;
    ReservationStatusUpdate:           Station, durable, handler(recorded {});
    ReserveNow:                        CentralSystem;
    Reset:                             CentralSystem;
    SecurityEventNotification:         Station, durable, handler(recorded {});
    SendLocalList:                     CentralSystem;
    SetChargingProfile:                CentralSystem;
    SetDisplayMessage:                 CentralSystem;
    SetMonitoringBase:                 CentralSystem;
    SetMonitoringLevel:                CentralSystem;
    SetNetworkProfile:                 CentralSystem;
    SetVariableMonitoring:             CentralSystem;
    SetVariables:                      CentralSystem;
    SignCertificate:                   Station, durable, handler(sign_certificate);
    StatusNotification:                Station, durable, handler(status_notification);
    TransactionEvent:                  Station, durable, handler(transaction_event);
    TriggerMessage:                    CentralSystem;
    UnlockConnector:                   CentralSystem;
    UnpublishFirmware:                 CentralSystem;
    UpdateFirmware:                    CentralSystem;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ocpp::actions::Sender;
    use crate::ocpp::common::test_support::Fixture;
    use crate::ocpp::schema::{self, Direction};
    use crate::ocpp::Version;
    use serde_json::json;

    #[test]
    fn the_declarations_cover_every_201_schema_once() {
        let declared: Vec<&str> = ACTIONS.iter().map(|a| a.name).collect();
        let mut files: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/v201"))
            .unwrap()
            .filter_map(|e| {
                e.unwrap().file_name().into_string().unwrap().strip_suffix("Request.json").map(String::from)
            })
            .collect();
        files.sort();
        assert_eq!(declared, files);
        // DataTransfer goes both ways.
        let both: Vec<&str> = ACTIONS.iter().filter(|a| a.sender == Sender::Both).map(|a| a.name).collect();
        assert_eq!(both, ["DataTransfer"]);
    }

    #[tokio::test]
    async fn every_station_message_gets_an_answer_its_schema_accepts() {
        let f = Fixture::with_version(Version::V201).await;
        let ts = "2026-11-25T10:00:00Z";
        let component = json!({"name": "EVSE", "evse": {"id": 1}});
        let variable = json!({"name": "Power"});
        let samples = [
            ("ClearedChargingLimit", json!({"chargingLimitSource": "EMS"})),
            ("DataTransfer", json!({"vendorId": "com.acme"})),
            (
                "Get15118EVCertificate",
                json!({"iso15118SchemaVersion": "urn:iso:15118:2:2013:MsgDef", "action": "Install", "exiRequest": "AAAA"}),
            ),
            (
                "GetCertificateStatus",
                json!({"ocspRequestData": {"hashAlgorithm": "SHA256", "issuerNameHash": "a", "issuerKeyHash": "b", "serialNumber": "1", "responderURL": "http://ocsp.example"}}),
            ),
            ("LogStatusNotification", json!({"status": "Uploaded", "requestId": 1})),
            ("NotifyChargingLimit", json!({"chargingLimit": {"chargingLimitSource": "EMS"}})),
            ("NotifyCustomerInformation", json!({"data": "x", "seqNo": 0, "generatedAt": ts, "requestId": 1})),
            ("NotifyDisplayMessages", json!({"requestId": 1})),
            ("NotifyEVChargingNeeds", json!({"evseId": 1, "chargingNeeds": {"requestedEnergyTransfer": "DC"}})),
            (
                "NotifyEVChargingSchedule",
                json!({"timeBase": ts, "evseId": 1, "chargingSchedule": {"id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.0}]}}),
            ),
            ("NotifyMonitoringReport", json!({"requestId": 1, "seqNo": 0, "generatedAt": ts})),
            ("PublishFirmwareStatusNotification", json!({"status": "Idle"})),
            (
                "ReportChargingProfiles",
                json!({"requestId": 1, "chargingLimitSource": "CSO", "evseId": 1, "chargingProfile": [{"id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Absolute", "chargingSchedule": [{"id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.0}]}]}]}),
            ),
            ("ReservationStatusUpdate", json!({"reservationId": 1, "reservationUpdateStatus": "Expired"})),
            ("SecurityEventNotification", json!({"type": "FirmwareUpdated", "timestamp": ts})),
            ("SignCertificate", json!({"csr": "-----BEGIN CERTIFICATE REQUEST-----"})),
            (
                "NotifyEvent",
                json!({"generatedAt": ts, "seqNo": 0, "eventData": [{"eventId": 1, "timestamp": ts, "trigger": "Delta", "actualValue": "7400", "eventNotificationType": "HardWiredNotification", "component": component, "variable": variable}]}),
            ),
            ("NotifyReport", json!({"requestId": 1, "generatedAt": ts, "seqNo": 0})),
            ("FirmwareStatusNotification", json!({"status": "Installed"})),
            ("Heartbeat", json!({})),
        ];
        for (action, payload) in samples {
            assert_eq!(schema::v201().validate(action, Direction::Request, &payload), Some(Ok(())), "sample {action}");
            let answer = f.ok(action, payload).await;
            assert_eq!(
                schema::v201().validate(action, Direction::Response, &answer),
                Some(Ok(())),
                "{action} answered {answer}"
            );
        }
    }
}
