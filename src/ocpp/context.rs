//! What a handler receives with its request — who sent the CALL, where its effects go, the
//! settings and limits it is handled under — and what it gives back: [`Handled`], or why it
//! refused ([`HandlerError`]).

use super::common::notice::Notice;
use super::rpc::ErrorCode;
use super::Version;
use crate::ids::{AccountId, StationId};
use crate::limits::quota::WindowQuota;
use crate::limits::{self, Limit};
use crate::model::{EventDraft, Registration};
use crate::store::{StationStore, StoreError};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use std::time::Duration;

/// Settings the handlers (and the sessions) need.
#[derive(Clone)]
pub struct HandlerSettings {
    /// Heartbeat interval given to accepted stations.
    pub heartbeat_interval: Duration,
    /// Wait before the next BootNotification, given to pending or rejected stations.
    pub boot_retry_interval: Duration,
    /// How long a replaced station password keeps working (`ocpp.password_grace_secs`).
    pub password_grace_secs: u64,
    /// The CA that signs station certificates, when one is configured (`[station_ca]`).
    pub station_ca: Option<std::sync::Arc<crate::ca::StationCa>>,
    /// A connected station is asked for a new CSR this long before its certificate expires; None:
    /// never.
    pub renew_before: Option<chrono::Duration>,
    /// How often a session looks whether its station's certificate is due.
    pub renewal_check: Duration,
}

impl std::fmt::Debug for HandlerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerSettings")
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("boot_retry_interval", &self.boot_retry_interval)
            .field("password_grace_secs", &self.password_grace_secs)
            .field("station_ca", &self.station_ca.is_some())
            .field("renew_before", &self.renew_before)
            .finish()
    }
}

impl HandlerSettings {
    /// Settings for handlers under test: no CA, no renewal.
    pub fn plain(heartbeat_interval: Duration, boot_retry_interval: Duration) -> HandlerSettings {
        HandlerSettings {
            heartbeat_interval,
            boot_retry_interval,
            password_grace_secs: 3600,
            station_ca: None,
            renew_before: None,
            renewal_check: Duration::from_secs(21600),
        }
    }
}

/// Who sent the CALL, and what handlers need to act on it.
pub struct StationContext<'a> {
    /// The OCPP version of the session.
    pub version: Version,
    pub store: &'a dyn StationStore,
    pub account_id: &'a AccountId,
    pub station_id: &'a StationId,
    /// The slug of the station's tenant (what its certificate's subject O must be).
    pub tenant_slug: &'a str,
    /// The station's registration as the session knows it.
    pub registration: Registration,
    pub settings: &'a HandlerSettings,
    /// Stored bytes of event-only messages per station (`limits.station_event_bytes`); None: no
    /// limit.
    pub event_quota: Option<&'a WindowQuota<String>>,
    /// What the CALL's handling has to tell the tenant's feed; appended before the CALL is
    /// flushed and answered ([`super::handler::handle_call`]).
    pub feed: std::sync::Mutex<Vec<EventDraft>>,
}

impl StationContext<'_> {
    /// Tells the tenant's feed what the CALL changed (appended with the CALL's other writes).
    pub(crate) fn emit(&self, event: EventDraft) {
        self.feed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(event);
    }

    /// The events emitted so far, taken.
    pub(crate) fn take_feed(&self) -> Vec<EventDraft> {
        std::mem::take(&mut *self.feed.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

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
                crate::warn_limited!(
                    station = self.station_id.as_str(),
                    "event storage quota of the station used up: not kept"
                );
                false
            }
        }
    }
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

pub(crate) fn refused(code: ErrorCode, description: impl Into<String>) -> HandlerError {
    HandlerError::Refused { code, description: description.into() }
}

pub(crate) fn decode<T: DeserializeOwned>(payload: &Value) -> Result<T, HandlerError> {
    // The payload passed the schema, so a failure here is a field the schema allows but this type does
    // not (an integer beyond 64 bits, say): the value is outside what can be processed.
    // Read from the payload where it is, not from a copy.
    T::deserialize(payload).map_err(|e| refused(ErrorCode::PropertyConstraintViolation, e.to_string()))
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
        let request: $module::Request = $crate::ocpp::context::decode(&$call.payload)?;
        $crate::ocpp::context::encode($module::handle($ctx, request).await?)
    }};
}
pub(crate) use run_handler;
