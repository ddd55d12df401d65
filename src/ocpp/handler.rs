//! The path of one station-initiated CALL: [`handle_call`] runs the checks common to every CALL
//! (known action, direction, schema, registration), all read from the version's declarations
//! ([`super::actions`]), then the action's handler, and flushes what a durable action changed
//! before the CALLRESULT. Also what a handler produces ([`Handled`]) and why it may refuse.

use super::actions::Handling;
use super::common::notice::Notice;
use super::context::StationContext;
use super::rpc::{Call, CallError, ErrorCode};
use super::schema::Direction;
use crate::model::Registration;
use crate::store::StoreError;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

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

pub(crate) fn refused(code: ErrorCode, description: impl Into<String>) -> HandlerError {
    HandlerError::Refused { code, description: description.into() }
}

pub(crate) fn decode<T: DeserializeOwned>(payload: &Value) -> Result<T, HandlerError> {
    // The payload passed the schema, so a failure here is a field the schema allows but this type does
    // not (an integer beyond 64 bits, say): the value is outside what can be processed.
    serde_json::from_value(payload.clone()).map_err(|e| refused(ErrorCode::PropertyConstraintViolation, e.to_string()))
}

pub(crate) fn encode<R: Serialize>(handled: Handled<R>) -> Result<(Value, Option<Notice>), HandlerError> {
    let payload = serde_json::to_value(handled.response)
        .map_err(|e| refused(ErrorCode::InternalError, format!("response encoding failed: {e}")))?;
    Ok((payload, handled.notice))
}

/// Decodes a CALL's payload into `$module::Request`, runs `$module::handle` and encodes its
/// response: the handler of a row of [`super::actions::declare_actions!`].
macro_rules! run_handler {
    ($module:ident, $ctx:expr, $call:expr) => {{
        let request: $module::Request = $crate::ocpp::handler::decode(&$call.payload)?;
        $crate::ocpp::handler::encode($module::handle($ctx, request).await?)
    }};
}
pub(crate) use run_handler;

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
    if durable {
        ctx.store.flush().await?;
    }
    Ok((payload, notice))
}
