//! OCPP 2.0.1: dispatch of station-initiated CALLs to their handlers, and the list of commands the
//! central system may send. Same shape as [`super::v16`]: typed `Request` in, typed `Response` out.
//!
//! Every station→central-system message of 2.0.1 is answered. Those with effects beyond the record
//! (boot, status, authorization, transactions, meter values, the device model, firmware status) have
//! a handler of their own; the others are kept as station events and answered as [`recorded`] says.

pub mod authorize;
pub mod boot_notification;
pub mod meter_values;
pub mod notify_event;
pub mod notify_report;
pub mod recorded;
pub mod status_notification;
pub mod transaction_event;
mod types;

use super::handler::{run_handler, Dispatched, HandlerError, StationContext};
use super::rpc::Call;
// Same messages, same effect in both versions: Heartbeat, and 2.0.1's FirmwareStatusNotification,
// which carries what 1.6's SignedFirmwareStatusNotification does (status, requestId).
use super::v16::heartbeat;
use super::v16::signed_firmware_status_notification as firmware_status_notification;

/// Actions a station sends to the central system.
pub const STATION_ACTIONS: &[&str] = &[
    "Authorize",
    "BootNotification",
    "ClearedChargingLimit",
    "DataTransfer",
    "FirmwareStatusNotification",
    "Get15118EVCertificate",
    "GetCertificateStatus",
    "Heartbeat",
    "LogStatusNotification",
    "MeterValues",
    "NotifyChargingLimit",
    "NotifyCustomerInformation",
    "NotifyDisplayMessages",
    "NotifyEVChargingNeeds",
    "NotifyEVChargingSchedule",
    "NotifyEvent",
    "NotifyMonitoringReport",
    "NotifyReport",
    "PublishFirmwareStatusNotification",
    "ReportChargingProfiles",
    "ReservationStatusUpdate",
    "SecurityEventNotification",
    "SignCertificate",
    "StatusNotification",
    "TransactionEvent",
];

/// Actions the central system sends to a station (the command API's `{Action}`).
pub const COMMAND_ACTIONS: &[&str] = &[
    "CancelReservation",
    "CertificateSigned",
    "ChangeAvailability",
    "ClearCache",
    "ClearChargingProfile",
    "ClearDisplayMessage",
    "ClearVariableMonitoring",
    "CostUpdated",
    "CustomerInformation",
    "DataTransfer",
    "DeleteCertificate",
    "GetBaseReport",
    "GetChargingProfiles",
    "GetCompositeSchedule",
    "GetDisplayMessages",
    "GetInstalledCertificateIds",
    "GetLocalListVersion",
    "GetLog",
    "GetMonitoringReport",
    "GetReport",
    "GetTransactionStatus",
    "GetVariables",
    "InstallCertificate",
    "PublishFirmware",
    "RequestStartTransaction",
    "RequestStopTransaction",
    "ReserveNow",
    "Reset",
    "SendLocalList",
    "SetChargingProfile",
    "SetDisplayMessage",
    "SetMonitoringBase",
    "SetMonitoringLevel",
    "SetNetworkProfile",
    "SetVariableMonitoring",
    "SetVariables",
    "TriggerMessage",
    "UnlockConnector",
    "UnpublishFirmware",
    "UpdateFirmware",
];

/// Runs the 2.0.1 handler of an action that passed the common checks of [`crate::ocpp::handler`].
pub(crate) async fn dispatch(ctx: &StationContext<'_>, call: &Call) -> Result<Dispatched, HandlerError> {
    let ((payload, notice), durable) = match call.action.as_str() {
        "Authorize" => (run_handler!(authorize, ctx, call)?, false),
        "BootNotification" => (run_handler!(boot_notification, ctx, call)?, true),
        "FirmwareStatusNotification" => (run_handler!(firmware_status_notification, ctx, call)?, true),
        "Heartbeat" => (run_handler!(heartbeat, ctx, call)?, false),
        "MeterValues" => (run_handler!(meter_values, ctx, call)?, true),
        "NotifyEvent" => (run_handler!(notify_event, ctx, call)?, true),
        "NotifyReport" => (run_handler!(notify_report, ctx, call)?, true),
        "StatusNotification" => (run_handler!(status_notification, ctx, call)?, true),
        "TransactionEvent" => (run_handler!(transaction_event, ctx, call)?, true),
        other => (recorded::handle(ctx, other, &call.payload).await?, true),
    };
    Ok(Dispatched { payload, notice, durable })
}

#[cfg(test)]
mod tests {
    use super::super::v16::test_support::Fixture;
    use super::*;
    use crate::ocpp::schema::{self, Direction};
    use crate::ocpp::Version;
    use serde_json::json;

    #[test]
    fn the_action_lists_cover_every_201_schema_once() {
        let mut all: Vec<&str> = STATION_ACTIONS.iter().chain(COMMAND_ACTIONS).copied().collect();
        all.sort();
        let before = all.len();
        all.dedup();
        // DataTransfer goes both ways.
        assert_eq!(before - all.len(), 1);
        let mut schemas: Vec<&str> = schema::V201_ACTIONS.iter().map(|(a, _, _)| *a).collect();
        schemas.sort();
        assert_eq!(all, schemas);
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
