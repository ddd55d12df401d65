//! How long each kind of data is kept: a period per kind, the node's default unless the tenant set
//! its own, and what "older than its period" means for each kind. Stores remove what these rules
//! call old, a batch at a time (`AccountStore::prune`); the pruner (`crate::retention`) drives them.

use super::{CommandRecord, CommandStatus, LoginEvent, MeterRecord, StationEvent, Transaction};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// The shortest period a tenant may set, in days.
pub const MIN_RETENTION_DAYS: u32 = 1;
/// The longest period a tenant may set, in days (ten years).
pub const MAX_RETENTION_DAYS: u32 = 3650;

/// The kinds of data removed after a period. An open transaction and its readings are always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// Meter readings, by their timestamp; the readings of an open transaction are kept.
    MeterValues,
    /// What stations reported outside transactions (DataTransfer, security events, …), by the time
    /// they were received.
    StationEvents,
    /// Sign-ins and failed sign-ins, by their time.
    LoginHistory,
    /// Command records that are over (answered, rejected, expired, unanswered), by when they ended;
    /// queued and sent ones are kept.
    FinishedCommands,
    /// Stopped transactions, with their readings, by when the stop was received.
    FinishedTransactions,
}

impl DataKind {
    pub const ALL: [DataKind; 5] = [
        DataKind::MeterValues,
        DataKind::StationEvents,
        DataKind::LoginHistory,
        DataKind::FinishedCommands,
        DataKind::FinishedTransactions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DataKind::MeterValues => "meter_values",
            DataKind::StationEvents => "station_events",
            DataKind::LoginHistory => "login_history",
            DataKind::FinishedCommands => "finished_commands",
            DataKind::FinishedTransactions => "finished_transactions",
        }
    }
}

/// A period in days for each kind; `None` where it is not set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPeriods {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_values: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station_events: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_history: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_commands: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_transactions: Option<u32>,
}

impl RetentionPeriods {
    pub fn get(&self, kind: DataKind) -> Option<u32> {
        *self.slot(kind)
    }

    pub fn set(&mut self, kind: DataKind, days: Option<u32>) {
        *self.slot_mut(kind) = days;
    }

    fn slot(&self, kind: DataKind) -> &Option<u32> {
        match kind {
            DataKind::MeterValues => &self.meter_values,
            DataKind::StationEvents => &self.station_events,
            DataKind::LoginHistory => &self.login_history,
            DataKind::FinishedCommands => &self.finished_commands,
            DataKind::FinishedTransactions => &self.finished_transactions,
        }
    }

    fn slot_mut(&mut self, kind: DataKind) -> &mut Option<u32> {
        match kind {
            DataKind::MeterValues => &mut self.meter_values,
            DataKind::StationEvents => &mut self.station_events,
            DataKind::LoginHistory => &mut self.login_history,
            DataKind::FinishedCommands => &mut self.finished_commands,
            DataKind::FinishedTransactions => &mut self.finished_transactions,
        }
    }

    /// The period that applies to `kind`: the tenant's own (`self`), else the node's default.
    pub fn effective(&self, kind: DataKind, defaults: &RetentionPeriods) -> Option<u32> {
        self.get(kind).or(defaults.get(kind))
    }

    /// Whether `days` is a period a tenant may set.
    pub fn allowed(days: u32) -> bool {
        (MIN_RETENTION_DAYS..=MAX_RETENTION_DAYS).contains(&days)
    }
}

/// The time before which data kept for `days` is old at `now`.
pub fn cutoff(now: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    now - Duration::days(i64::from(days))
}

/// A meter reading is old when its timestamp is before the cutoff (whether its transaction is
/// still open is the store's to check: the reading does not say).
pub fn reading_is_old(r: &MeterRecord, before: DateTime<Utc>) -> bool {
    r.meter_value.timestamp < before
}

pub fn event_is_old(e: &StationEvent, before: DateTime<Utc>) -> bool {
    e.received_at < before
}

pub fn login_is_old(e: &LoginEvent, before: DateTime<Utc>) -> bool {
    e.at < before
}

/// A command record is old once it is over and ended before the cutoff: when it was answered,
/// else (expired unsent) when it expired, else when it was sent or created.
pub fn command_is_old(c: &CommandRecord, before: DateTime<Utc>) -> bool {
    let ended = match c.status {
        CommandStatus::Queued | CommandStatus::Sent => return false,
        CommandStatus::Expired => c.expires_at,
        CommandStatus::Answered | CommandStatus::Rejected | CommandStatus::Unanswered => {
            c.answered_at.or(c.sent_at).unwrap_or(c.created_at)
        }
    };
    ended < before
}

/// A transaction is old once it stopped and the stop was received before the cutoff (the server's
/// clock: a station's wrong clock must not cost a bill). An open transaction never is.
pub fn transaction_is_old(tx: &Transaction, before: DateTime<Utc>) -> bool {
    tx.stop.as_ref().is_some_and(|stop| stop.received_at < before)
}

/// What one pruning step removed, and where the next step goes on (None: the account's pass over
/// that kind is done). The position is the store's own, opaque to the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneStep {
    pub removed: usize,
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_own_period_wins_over_the_default_and_periods_are_bounded() {
        let defaults = RetentionPeriods { meter_values: Some(180), station_events: Some(90), ..Default::default() };
        let mut own = RetentionPeriods::default();
        assert_eq!(own.effective(DataKind::MeterValues, &defaults), Some(180));
        own.set(DataKind::MeterValues, Some(30));
        assert_eq!(own.effective(DataKind::MeterValues, &defaults), Some(30));
        assert_eq!(own.effective(DataKind::StationEvents, &defaults), Some(90));
        assert_eq!(own.effective(DataKind::LoginHistory, &defaults), None, "kept without a period");
        assert!(RetentionPeriods::allowed(1) && RetentionPeriods::allowed(3650));
        assert!(!RetentionPeriods::allowed(0) && !RetentionPeriods::allowed(3651));
        let now = Utc::now();
        assert_eq!(cutoff(now, 2), now - Duration::hours(48));
    }

    #[test]
    fn a_command_is_old_only_once_over_and_by_when_it_ended() {
        let now = Utc::now();
        let mut c: CommandRecord = serde_json::from_value(serde_json::json!({
            "id": "c1", "account_id": "a", "station_id": "CP1", "action": "Reset", "payload": {},
            "status": "queued", "created_at": now - Duration::days(10), "expires_at": now - Duration::days(9),
            "sent_at": null, "answered_at": null, "response": null, "error": null
        }))
        .expect("a command record");
        let before = now - Duration::days(5);
        assert!(!command_is_old(&c, before), "queued: kept");
        c.status = CommandStatus::Expired;
        assert!(command_is_old(&c, before));
        c.status = CommandStatus::Answered;
        c.answered_at = Some(now - Duration::days(1));
        assert!(!command_is_old(&c, before), "answered a day ago");
    }
}
