//! What every version's handlers share: the context a CALL is handled in, what a handler produces,
//! and [`handle_call`], which runs the checks common to every CALL (known action, direction, schema,
//! registration) before the version's own dispatch, and the flush before a state change is answered.

use super::rpc::{Call, CallError, ErrorCode};
use super::schema::Direction;
use super::{v16, v201, Version};
use crate::limits::quota::WindowQuota;
use crate::limits::{self, Limit};
use crate::model::{Registration, StationChange, StationEvent};
use crate::store::{StationStore, StoreError};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use std::time::Duration;

/// Settings the handlers need.
#[derive(Debug, Clone)]
pub struct HandlerSettings {
    /// Heartbeat interval given to accepted stations.
    pub heartbeat_interval: Duration,
    /// Wait before the next BootNotification, given to pending or rejected stations.
    pub boot_retry_interval: Duration,
}

/// Who sent the CALL, and what handlers need to act on it.
pub struct StationContext<'a> {
    /// The OCPP version of the session.
    pub version: Version,
    pub store: &'a dyn StationStore,
    pub account_id: &'a str,
    pub station_id: &'a str,
    /// The station's registration as the session knows it.
    pub registration: Registration,
    pub settings: &'a HandlerSettings,
    /// Stored bytes of event-only messages per station (`limits.station_event_bytes`); None: no
    /// limit.
    pub event_quota: Option<&'a WindowQuota<String>>,
}

impl StationContext<'_> {
    /// Takes what keeping `payload` costs from the station's event quota; false (and nothing
    /// taken) when it does not fit, in which case the message must not be kept, nor acknowledged
    /// as if it were.
    pub(crate) fn charge_event(&self, payload: &impl Serialize) -> bool {
        let Some(quota) = self.event_quota else { return true };
        // What the store keeps: the payload and a record around it.
        let bytes = serde_json::to_vec(payload).map(|v| v.len()).unwrap_or(0) as u64 + 128;
        match quota.take(&limits::station_key(self.account_id, self.station_id), bytes) {
            Ok(()) => true,
            Err(_) => {
                limits::hit(Limit::EventStorage);
                crate::warn_limited!(station = self.station_id, "event storage quota of the station used up: not kept");
                false
            }
        }
    }
}

/// The CALLERROR for an event-only message the station's quota has no room for.
pub(crate) fn over_event_quota() -> HandlerError {
    refused(ErrorCode::GenericError, "event storage quota of this station used up; send it again later")
}

/// A change to the tenant's live view caused by a handled CALL.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    Booted {
        registration: Registration,
    },
    ConnectorStatus {
        connector_id: u32,
        status: String,
    },
    /// `connector_id` is the 1.6 connector, or the 2.0.1 EVSE.
    TransactionStarted {
        transaction_id: i32,
        connector_id: u32,
    },
    TransactionStopped {
        transaction_id: i32,
    },
}

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
        station_id: ctx.station_id.to_string(),
        action: action.to_string(),
        payload: payload.clone(),
        received_at: chrono::Utc::now(),
    };
    ctx.store.add_event(ctx.account_id, &event).await?;
    Ok(())
}

/// Keeps the latest firmware-update progress on the station record.
pub(crate) async fn set_firmware_status(ctx: &StationContext<'_>, status: String) -> Result<(), HandlerError> {
    let report = crate::model::StatusReport { status, received_at: chrono::Utc::now() };
    ctx.store.change_station(ctx.account_id, ctx.station_id, &StationChange::FirmwareStatus(report)).await?;
    Ok(())
}

/// Keeps what a BootNotification says about the station; answers its registration and the interval
/// to give it (heartbeat interval when accepted, retry interval otherwise).
pub(crate) async fn record_boot(
    ctx: &StationContext<'_>,
    boot: crate::model::BootInfo,
) -> Result<(Registration, Duration), HandlerError> {
    let updated = ctx.store.change_station(ctx.account_id, ctx.station_id, &StationChange::Booted(boot)).await?;
    // A station deleted while connected is treated as blocked; its session is being closed anyway.
    let registration = updated.map(|s| s.registration).unwrap_or(Registration::Blocked);
    let interval = match registration {
        Registration::Accepted => ctx.settings.heartbeat_interval,
        Registration::Pending | Registration::Blocked => ctx.settings.boot_retry_interval,
    };
    Ok((registration, interval))
}

/// Decodes a CALL's payload into `$module::Request`, runs `$module::handle` and encodes its
/// response: the body of every arm of a version's dispatch.
macro_rules! run_handler {
    ($module:ident, $ctx:expr, $call:expr) => {{
        let request: $module::Request = $crate::ocpp::handler::decode(&$call.payload)?;
        $crate::ocpp::handler::encode($module::handle($ctx, request).await?)
    }};
}
pub(crate) use run_handler;

/// What a version's dispatch produced for one CALL.
pub(crate) struct Dispatched {
    pub payload: Value,
    pub notice: Option<Notice>,
    /// The handler changed state: it must be on disk before the CALLRESULT.
    pub durable: bool,
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
            crate::error_limited!(error = %e, action = %call.action, station = ctx.station_id, "store failed while handling a CALL");
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
    let action = call.action.as_str();
    let schemas = ctx.version.schemas();
    if !schemas.knows(action) {
        return Err(refused(ErrorCode::NotImplemented, format!("unknown action {action}")));
    }
    if !ctx.version.station_actions().contains(&action) {
        return Err(refused(ErrorCode::NotSupported, format!("{action} is sent by the central system, not to it")));
    }
    if let Some(Err(violation)) = schemas.validate(action, Direction::Request, &call.payload) {
        return Err(refused(violation.code, violation.to_string()));
    }
    if ctx.registration != Registration::Accepted && action != "BootNotification" {
        return Err(refused(ErrorCode::SecurityError, "station is not accepted: send a BootNotification first"));
    }
    let done = match ctx.version {
        Version::V16 => v16::dispatch(ctx, call).await?,
        Version::V201 => v201::dispatch(ctx, call).await?,
    };
    if done.durable {
        ctx.store.flush().await?;
    }
    Ok((done.payload, done.notice))
}
