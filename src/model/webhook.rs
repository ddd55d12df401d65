//! A tenant's webhooks: where its events are pushed, which ones, signed with which secret, and
//! what became of each delivery.

use super::EventType;
use crate::ids::AccountId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An endpoint the tenant's events are delivered to, in feed order, at least once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: String,
    pub account_id: AccountId,
    /// An http or https URL.
    pub url: String,
    /// The event types delivered; every type when empty.
    pub types: Vec<EventType>,
    /// The HMAC-SHA256 key each delivery is signed with; shown to the tenant once, when created.
    pub secret: String,
    /// Delivery runs only while enabled.
    pub enabled: bool,
    /// Why delivery stopped, when it was stopped by the service rather than by the tenant.
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Webhook {
    /// Whether the webhook is for this type of event.
    pub fn wants(&self, kind: EventType) -> bool {
        self.types.is_empty() || self.types.contains(&kind)
    }
}

/// How one event's delivery to a webhook ended, or stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// The last attempt failed; another follows after a back-off.
    Retrying,
    /// Attempts failed for longer than the retry period: the webhook was disabled with this event
    /// undelivered (it is the first delivered once the webhook is enabled again).
    GaveUp,
}

/// One event's delivery to a webhook: its last attempt's answer and how many attempts it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    pub event_id: u64,
    pub event_type: EventType,
    pub outcome: DeliveryOutcome,
    pub attempts: u32,
    /// The HTTP status of the last attempt; None when no answer came (refused, timed out).
    pub status_code: Option<u16>,
    /// How long the last attempt took, in milliseconds.
    pub latency_ms: u64,
    /// What went wrong in the last attempt, when it failed.
    pub error: Option<String>,
    pub first_attempt_at: DateTime<Utc>,
    pub last_attempt_at: DateTime<Utc>,
}

/// Records an attempt in a webhook's delivery log (newest first): it replaces the entry of the same
/// event, else goes first; the log keeps the newest `keep` entries.
pub fn record_delivery(log: &mut Vec<WebhookDelivery>, delivery: WebhookDelivery, keep: usize) {
    if let Some(first) = log.first_mut().filter(|d| d.event_id == delivery.event_id) {
        *first = delivery;
    } else {
        log.insert(0, delivery);
    }
    log.truncate(keep);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(event_id: u64, outcome: DeliveryOutcome, attempts: u32) -> WebhookDelivery {
        WebhookDelivery {
            event_id,
            event_type: EventType::StationBooted,
            outcome,
            attempts,
            status_code: Some(500),
            latency_ms: 3,
            error: None,
            first_attempt_at: Utc::now(),
            last_attempt_at: Utc::now(),
        }
    }

    #[test]
    fn attempts_of_one_event_share_an_entry_and_the_log_is_bounded() {
        let mut log = Vec::new();
        record_delivery(&mut log, attempt(1, DeliveryOutcome::Retrying, 1), 3);
        record_delivery(&mut log, attempt(1, DeliveryOutcome::Delivered, 2), 3);
        assert_eq!(log.len(), 1);
        assert_eq!((log[0].attempts, log[0].outcome), (2, DeliveryOutcome::Delivered));
        for id in 2..=5 {
            record_delivery(&mut log, attempt(id, DeliveryOutcome::Delivered, 1), 3);
        }
        assert_eq!(log.iter().map(|d| d.event_id).collect::<Vec<_>>(), vec![5, 4, 3]);
    }
}
