//! DataTransfer from a station, in either version: no vendor extensions are installed, so the
//! message is only kept for the record, within the station's event quota.

use crate::ocpp::context::{HandlerError, StationContext};
use serde_json::Value;

/// Keeps the message as a station event; false (and nothing kept) past the station's event quota,
/// in which case the answer is Rejected rather than a CALLERROR: the station need not send it again.
pub async fn keep(ctx: &StationContext<'_>, payload: &Value) -> Result<bool, HandlerError> {
    if !ctx.charge_event(payload) {
        return Ok(false);
    }
    super::events::store_event(ctx, "DataTransfer", payload).await?;
    Ok(true)
}
