//! What a handler receives with its request: who sent the CALL, where its effects go, and the
//! settings and limits it is handled under.

use super::Version;
use crate::ids::{AccountId, StationId};
use crate::limits::quota::WindowQuota;
use crate::limits::{self, Limit};
use crate::model::Registration;
use crate::store::StationStore;
use serde::Serialize;
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
    pub account_id: &'a AccountId,
    pub station_id: &'a StationId,
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
                crate::warn_limited!(
                    station = self.station_id.as_str(),
                    "event storage quota of the station used up: not kept"
                );
                false
            }
        }
    }
}
