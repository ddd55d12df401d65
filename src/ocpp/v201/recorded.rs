//! The 2.0.1 messages that are kept for the record and otherwise only acknowledged; each one's answer
//! is in its row of [`super::ACTIONS`]. Where an answer is a refusal it is because the capability
//! behind it is not offered: no V2G certificate authority or OCSP responder (Get15118EVCertificate,
//! GetCertificateStatus; a station's own certificate is signed by the station CA, see
//! [`crate::ocpp::common::sign_certificate`]), no smart-charging engine to act on an EV's needs
//! (NotifyEVChargingNeeds), no vendor extensions (DataTransfer).

use crate::ocpp::common::data_transfer;
use crate::ocpp::common::events::record_event;
use crate::ocpp::common::notice::Notice;
use crate::ocpp::context::{HandlerError, StationContext};
use serde_json::{json, Value};

/// Keeps the message as a station event and answers it `response`.
pub async fn handle(
    ctx: &StationContext<'_>,
    action: &'static str,
    payload: &Value,
    response: Value,
) -> Result<(Value, Option<Notice>), HandlerError> {
    if action == "DataTransfer" {
        if !data_transfer::keep(ctx, payload).await? {
            return Ok((json!({"status": "Rejected"}), None));
        }
    } else {
        record_event(ctx, action, payload).await?;
    }
    if action == "SecurityEventNotification" {
        crate::warn_limited!(station = ctx.station_id.as_str(), kind = %payload["type"], "station security event");
    }
    Ok((response, None))
}
