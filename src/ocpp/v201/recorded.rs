//! The 2.0.1 messages that are kept for the record and otherwise only acknowledged, with the answer
//! each gets. Where an answer is a refusal it is because the capability behind it is not offered:
//! no certificate authority or OCSP responder for stations (SignCertificate, Get15118EVCertificate,
//! GetCertificateStatus), no smart-charging engine to act on an EV's needs (NotifyEVChargingNeeds),
//! no vendor extensions (DataTransfer).

use crate::ocpp::handler::{record_event, refused, store_event, HandlerError, Notice, StationContext};
use crate::ocpp::rpc::ErrorCode;
use serde_json::{json, Value};

/// The answer to a recorded action; None for an action that is not one of them.
pub fn answer(action: &str) -> Option<Value> {
    Some(match action {
        "ClearedChargingLimit"
        | "LogStatusNotification"
        | "NotifyChargingLimit"
        | "NotifyCustomerInformation"
        | "NotifyDisplayMessages"
        | "NotifyMonitoringReport"
        | "PublishFirmwareStatusNotification"
        | "ReportChargingProfiles"
        | "ReservationStatusUpdate"
        | "SecurityEventNotification" => json!({}),
        "NotifyEVChargingSchedule" => json!({"status": "Accepted"}),
        "NotifyEVChargingNeeds" => json!({"status": "Rejected"}),
        "SignCertificate" => json!({"status": "Rejected"}),
        "Get15118EVCertificate" => json!({"status": "Failed", "exiResponse": ""}),
        "GetCertificateStatus" => json!({"status": "Failed"}),
        "DataTransfer" => json!({"status": "UnknownVendorId"}),
        _ => return None,
    })
}

/// Keeps the message as a station event and answers it.
pub async fn handle(
    ctx: &StationContext<'_>,
    action: &str,
    payload: &Value,
) -> Result<(Value, Option<Notice>), HandlerError> {
    let Some(response) = answer(action) else {
        return Err(refused(ErrorCode::NotSupported, format!("{action} is not handled")));
    };
    if action == "DataTransfer" {
        // Past the station's event quota: Rejected, and not kept.
        if !ctx.charge_event(payload) {
            return Ok((json!({"status": "Rejected"}), None));
        }
        store_event(ctx, action, payload).await?;
    } else {
        record_event(ctx, action, payload).await?;
    }
    if action == "SecurityEventNotification" {
        crate::warn_limited!(station = ctx.station_id, kind = %payload["type"], "station security event");
    }
    Ok((response, None))
}
