//! The path of one station-initiated CALL: [`handle_call`] runs the checks common to every CALL
//! (known action, direction, schema, registration), all read from the version's declarations
//! ([`super::actions`]), then the action's handler, and flushes what a durable action changed
//! before the CALLRESULT.

use super::actions::Handling;
use super::common::notice::Notice;
use super::context::{refused, HandlerError, StationContext};
use super::rpc::{Call, CallError, ErrorCode};
use super::schema::Direction;
use crate::model::Registration;
use serde_json::Value;

/// The outcome of one CALL: the CALLRESULT payload (and live-view notice), or the CALLERROR.
#[derive(Debug)]
pub enum Reply {
    Result { payload: Value, notice: Option<Notice> },
    Error(CallError),
}

/// Handles one station-initiated CALL, from schema check to the durable effects. The reply is a
/// CALLRESULT only once everything the CALL changed is flushed to disk.
pub async fn handle_call(ctx: &StationContext<'_>, call: &Call) -> Reply {
    match checked_dispatch(ctx, call).await {
        Ok((payload, notice)) => Reply::Result { payload, notice },
        Err(HandlerError::Refused { code, description }) => {
            Reply::Error(CallError::new(ctx.version, call.unique_id.clone(), code, description))
        }
        Err(HandlerError::Store(e)) => {
            crate::error_limited!(error = %e, action = %call.action, station = ctx.station_id.as_str(), "store failed while handling a CALL");
            Reply::Error(CallError::new(
                ctx.version,
                call.unique_id.clone(),
                ErrorCode::InternalError,
                "storage failure, retry later",
            ))
        }
    }
}

async fn checked_dispatch(ctx: &StationContext<'_>, call: &Call) -> Result<(Value, Option<Notice>), HandlerError> {
    let name = call.action.as_str();
    let Some(action) = ctx.version.action(name) else {
        return Err(refused(ErrorCode::NotImplemented, format!("unknown action {name}")));
    };
    let Handling::Handler { run, durable } = action.handling else {
        return Err(refused(ErrorCode::NotSupported, format!("{name} is sent by the central system, not to it")));
    };
    if let Some(Err(violation)) = ctx.version.schemas().validate(name, Direction::Request, &call.payload) {
        return Err(refused(violation.code, violation.to_string()));
    }
    if ctx.registration != Registration::Accepted && name != "BootNotification" {
        return Err(refused(ErrorCode::SecurityError, "station is not accepted: send a BootNotification first"));
    }
    let (payload, notice) = run(ctx, call).await?;
    let feed = ctx.take_feed();
    if !feed.is_empty() {
        ctx.store.append_feed(ctx.account_id, &feed).await?;
        crate::metrics::feed_emitted(&feed);
    }
    if durable || !feed.is_empty() {
        ctx.store.flush().await?;
    }
    Ok((payload, notice))
}
