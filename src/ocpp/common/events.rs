//! Messages kept only for the record, as station events, within the station's event quota.

use crate::model::{events, EventType, StationEvent};
use crate::ocpp::context::{refused, HandlerError, StationContext};
use crate::ocpp::rpc::ErrorCode;
use serde_json::Value;

/// The CALLERROR for an event-only message the station's quota has no room for.
pub(crate) fn over_event_quota() -> HandlerError {
    refused(ErrorCode::GenericError, "event storage quota of this station used up; send it again later")
}

/// Records a message kept only for the record, within the station's event quota (a CALLERROR when
/// it has no room: the station keeps the message and may send it again later).
pub(crate) async fn record_event(ctx: &StationContext<'_>, action: &str, payload: &Value) -> Result<(), HandlerError> {
    if !ctx.charge_event(payload) {
        return Err(over_event_quota());
    }
    store_event(ctx, action, payload).await
}

/// Records a message kept only for the record, its quota already charged.
pub(crate) async fn store_event(ctx: &StationContext<'_>, action: &str, payload: &Value) -> Result<(), HandlerError> {
    let event = StationEvent {
        station_id: ctx.station_id.clone(),
        action: action.to_string(),
        payload: payload.clone(),
        received_at: chrono::Utc::now(),
    };
    ctx.store.add_event(ctx.account_id, &event).await?;
    if let Some(kind) = feed_type(action) {
        ctx.emit(events::reported(kind, ctx.station_id, action, payload));
    }
    Ok(())
}

/// The feed event a message kept for the record is, if it is one the tenant hears of: security
/// events, and log uploads (the 2.0.1 and 1.6-security successor of diagnostics).
fn feed_type(action: &str) -> Option<EventType> {
    match action {
        "SecurityEventNotification" => Some(EventType::SecurityEvent),
        "LogStatusNotification" => Some(EventType::DiagnosticsStatus),
        _ => None,
    }
}
