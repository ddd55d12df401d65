//! The tenant's event feed: what happened to its stations, transactions and commands, one record
//! per happening, in the order the store appended them. Served live over Server-Sent Events
//! (`GET /api/v1/events`) and pushed to the tenant's webhooks; kept as long as the retention rules
//! keep the data each event describes ([`EventType::data_kind`]).
//!
//! Everything that decides an event's type and body lives here, so that every place that emits
//! one (the station path, the API, the webhook dispatcher) says the same thing the same way.

use super::{CommandRecord, CommandStatus, DataKind, Registration, Transaction};
use crate::ids::StationId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// What an event says happened: a fixed set, named `<subject>.<what>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "station.connected")]
    StationConnected,
    #[serde(rename = "station.disconnected")]
    StationDisconnected,
    #[serde(rename = "station.booted")]
    StationBooted,
    #[serde(rename = "station.status_changed")]
    StatusChanged,
    #[serde(rename = "station.registration_changed")]
    RegistrationChanged,
    #[serde(rename = "station.firmware_status")]
    FirmwareStatus,
    #[serde(rename = "station.diagnostics_status")]
    DiagnosticsStatus,
    #[serde(rename = "station.security_event")]
    SecurityEvent,
    #[serde(rename = "station.password_changed")]
    PasswordChanged,
    #[serde(rename = "station.certificate_changed")]
    CertificateChanged,
    #[serde(rename = "station.security_profile_changed")]
    SecurityProfileChanged,
    #[serde(rename = "transaction.started")]
    TransactionStarted,
    #[serde(rename = "transaction.updated")]
    TransactionUpdated,
    #[serde(rename = "transaction.ended")]
    TransactionEnded,
    #[serde(rename = "authorization.refused")]
    AuthorizationRefused,
    #[serde(rename = "command.queued")]
    CommandQueued,
    #[serde(rename = "command.sent")]
    CommandSent,
    #[serde(rename = "command.answered")]
    CommandAnswered,
    #[serde(rename = "command.failed")]
    CommandFailed,
    #[serde(rename = "webhook.disabled")]
    WebhookDisabled,
}

impl EventType {
    pub const ALL: [EventType; 20] = [
        EventType::StationConnected,
        EventType::StationDisconnected,
        EventType::StationBooted,
        EventType::StatusChanged,
        EventType::RegistrationChanged,
        EventType::FirmwareStatus,
        EventType::DiagnosticsStatus,
        EventType::SecurityEvent,
        EventType::PasswordChanged,
        EventType::CertificateChanged,
        EventType::SecurityProfileChanged,
        EventType::TransactionStarted,
        EventType::TransactionUpdated,
        EventType::TransactionEnded,
        EventType::AuthorizationRefused,
        EventType::CommandQueued,
        EventType::CommandSent,
        EventType::CommandAnswered,
        EventType::CommandFailed,
        EventType::WebhookDisabled,
    ];

    /// The name on the wire (SSE `event:`, webhook `type`, metric label, filter value).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::StationConnected => "station.connected",
            EventType::StationDisconnected => "station.disconnected",
            EventType::StationBooted => "station.booted",
            EventType::StatusChanged => "station.status_changed",
            EventType::RegistrationChanged => "station.registration_changed",
            EventType::FirmwareStatus => "station.firmware_status",
            EventType::DiagnosticsStatus => "station.diagnostics_status",
            EventType::SecurityEvent => "station.security_event",
            EventType::PasswordChanged => "station.password_changed",
            EventType::CertificateChanged => "station.certificate_changed",
            EventType::SecurityProfileChanged => "station.security_profile_changed",
            EventType::TransactionStarted => "transaction.started",
            EventType::TransactionUpdated => "transaction.updated",
            EventType::TransactionEnded => "transaction.ended",
            EventType::AuthorizationRefused => "authorization.refused",
            EventType::CommandQueued => "command.queued",
            EventType::CommandSent => "command.sent",
            EventType::CommandAnswered => "command.answered",
            EventType::CommandFailed => "command.failed",
            EventType::WebhookDisabled => "webhook.disabled",
        }
    }

    /// The type named `name`, if one is.
    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The kind of data the event describes: it is kept as long as that kind is
    /// ([`FeedCutoffs`]). Transactions and commands have their own periods; everything else is
    /// what a station reported.
    pub fn data_kind(self) -> DataKind {
        match self {
            EventType::TransactionStarted | EventType::TransactionUpdated | EventType::TransactionEnded => {
                DataKind::FinishedTransactions
            }
            EventType::CommandQueued
            | EventType::CommandSent
            | EventType::CommandAnswered
            | EventType::CommandFailed => DataKind::FinishedCommands,
            _ => DataKind::StationEvents,
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event before the store gave it its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventDraft {
    #[serde(rename = "type")]
    pub kind: EventType,
    pub time: DateTime<Utc>,
    /// The station it is about; None for an event of the account itself (a webhook disabled).
    pub station_id: Option<StationId>,
    pub body: Value,
}

/// An event of the feed: its id orders it among the tenant's events (ids grow; they need not be
/// consecutive).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedEvent {
    pub id: u64,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub time: DateTime<Utc>,
    pub station_id: Option<StationId>,
    pub body: Value,
}

impl FeedEvent {
    pub fn from_draft(id: u64, draft: EventDraft) -> FeedEvent {
        FeedEvent { id, kind: draft.kind, time: draft.time, station_id: draft.station_id, body: draft.body }
    }

    /// Whether the retention rules call the event old: older than the period of the data it
    /// describes.
    pub fn is_old(&self, cutoffs: &FeedCutoffs) -> bool {
        cutoffs.before(self.kind.data_kind()).is_some_and(|before| self.time < before)
    }
}

/// For each kind of data with a period, the time before which it is old: what an event of the
/// feed is judged by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedCutoffs(BTreeMap<DataKind, DateTime<Utc>>);

impl FeedCutoffs {
    pub fn set(&mut self, kind: DataKind, before: DateTime<Utc>) {
        self.0.insert(kind, before);
    }

    pub fn before(&self, kind: DataKind) -> Option<DateTime<Utc>> {
        self.0.get(&kind).copied()
    }

    /// The latest cutoff: an event at or after it is old by no rule (a kind without a period
    /// keeps its events), and, the feed being in time order, neither is any after it. None when
    /// no kind has a period: nothing is old.
    pub fn latest(&self) -> Option<DateTime<Utc>> {
        self.0.values().max().copied()
    }
}

/// Which events a reader wants: some types (all when empty), one station (all without one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedFilter {
    pub types: Vec<EventType>,
    pub station: Option<StationId>,
}

impl FeedFilter {
    pub fn matches(&self, event: &FeedEvent) -> bool {
        (self.types.is_empty() || self.types.contains(&event.kind))
            && self.station.as_ref().is_none_or(|s| event.station_id.as_ref() == Some(s))
    }
}

/// The events a station's messages and the session around them cause. Each constructor is the
/// one place its type's body is shaped.
pub mod events {
    use super::*;
    use crate::model::{BootInfo, ConnectorStatus, MeterRecord, MeterValue};

    /// The register a transaction's energy is read from (the default measurand).
    const ENERGY_REGISTER: &str = "Energy.Active.Import.Register";

    fn draft(kind: EventType, station: &StationId, body: Value) -> EventDraft {
        EventDraft { kind, time: Utc::now(), station_id: Some(station.clone()), body }
    }

    pub fn connected(station: &StationId, protocol: &str) -> EventDraft {
        draft(EventType::StationConnected, station, json!({"protocol": protocol}))
    }

    /// `reason` is the session's end as the disconnect metric names it (closed_by_station, replaced, …).
    pub fn disconnected(station: &StationId, reason: &str) -> EventDraft {
        draft(EventType::StationDisconnected, station, json!({"reason": reason}))
    }

    pub fn booted(station: &StationId, boot: &BootInfo, registration: Registration) -> EventDraft {
        draft(
            EventType::StationBooted,
            station,
            json!({
                "vendor": boot.charge_point_vendor,
                "model": boot.charge_point_model,
                "serial_number": boot.charge_point_serial_number,
                "firmware_version": boot.firmware_version,
                "registration": registration,
            }),
        )
    }

    pub fn status_changed(station: &StationId, status: &ConnectorStatus) -> EventDraft {
        draft(
            EventType::StatusChanged,
            station,
            json!({
                "evse_id": status.evse_id,
                "connector_id": status.connector_id,
                "status": status.status,
                "error_code": status.error_code,
                "timestamp": status.timestamp,
            }),
        )
    }

    pub fn registration_changed(station: &StationId, from: Registration, to: Registration) -> EventDraft {
        draft(EventType::RegistrationChanged, station, json!({"from": from, "to": to}))
    }

    /// A change of the station's password: `outcome` is requested, accepted or rejected.
    pub fn password_changed(station: &StationId, outcome: &str, change_id: &str) -> EventDraft {
        draft(EventType::PasswordChanged, station, json!({"outcome": outcome, "change_id": change_id}))
    }

    /// What became of a certificate for the station: `outcome` is issued, refused (a CSR the CA
    /// would not sign, `reason` says why), installed or rejected (the station's answer).
    pub fn certificate_changed(
        station: &StationId,
        outcome: &str,
        serial: Option<&str>,
        not_after: Option<DateTime<Utc>>,
        reason: Option<&str>,
    ) -> EventDraft {
        draft(
            EventType::CertificateChanged,
            station,
            json!({"outcome": outcome, "serial": serial, "not_after": not_after, "reason": reason}),
        )
    }

    /// A move of the station's security profile: `outcome` is requested, accepted or rejected.
    pub fn profile_changed(
        station: &StationId,
        from: crate::model::SecurityProfile,
        to: crate::model::SecurityProfile,
        outcome: &str,
    ) -> EventDraft {
        draft(EventType::SecurityProfileChanged, station, json!({"from": from, "to": to, "outcome": outcome}))
    }

    /// A firmware, diagnostics, log or security report: its type and the payload as sent.
    pub fn reported(kind: EventType, station: &StationId, action: &str, payload: &Value) -> EventDraft {
        draft(kind, station, json!({"action": action, "payload": payload}))
    }

    pub fn transaction_started(tx: &Transaction) -> EventDraft {
        draft(
            EventType::TransactionStarted,
            &tx.station_id,
            json!({
                "transaction_id": tx.id,
                "station_transaction_id": tx.station_transaction_id,
                "evse_id": tx.evse_id,
                "connector_id": tx.connector_id,
                "id_tag": tx.id_tag,
                "meter_start_wh": tx.meter_start,
                "started_at": tx.start_timestamp,
            }),
        )
    }

    /// New readings of a transaction: how many, and the newest energy register value among them
    /// (Wh), if one was read.
    pub fn transaction_updated(station: &StationId, transaction_id: i32, records: &[MeterRecord]) -> EventDraft {
        let newest = records
            .iter()
            .filter_map(|r| energy_register_wh(&r.meter_value).map(|wh| (r.meter_value.timestamp, wh)))
            .max_by_key(|(at, _)| *at);
        draft(
            EventType::TransactionUpdated,
            station,
            json!({
                "transaction_id": transaction_id,
                "readings": records.len(),
                "meter_wh": newest.map(|(_, wh)| wh),
                "meter_at": newest.map(|(at, _)| at),
            }),
        )
    }

    /// The whole-meter energy register of a reading in Wh (the default measurand; Wh or kWh).
    fn energy_register_wh(reading: &MeterValue) -> Option<f64> {
        reading.sampled_value.iter().find_map(|s| {
            let measurand = s.measurand.as_deref().unwrap_or(ENERGY_REGISTER);
            if measurand != ENERGY_REGISTER || s.phase.is_some() {
                return None;
            }
            let value: f64 = s.value.trim().parse().ok()?;
            match s.unit.as_deref().unwrap_or("Wh") {
                "Wh" => Some(value),
                "kWh" => Some(value * 1000.0),
                _ => None,
            }
        })
    }

    pub fn transaction_ended(tx: &Transaction) -> EventDraft {
        let stop = tx.stop.as_ref();
        draft(
            EventType::TransactionEnded,
            &tx.station_id,
            json!({
                "transaction_id": tx.id,
                "station_transaction_id": tx.station_transaction_id,
                "connector_id": tx.connector_id,
                "id_tag": tx.id_tag,
                "meter_start_wh": tx.meter_start,
                "meter_stop_wh": stop.and_then(|s| s.meter_stop),
                "energy_wh": tx.energy_wh(),
                "reason": stop.and_then(|s| s.reason.clone()),
                "started_at": tx.start_timestamp,
                "stopped_at": stop.map(|s| s.timestamp),
            }),
        )
    }

    /// An id tag the central system refused (`status` as the station was told).
    pub fn authorization_refused(station: &StationId, id_tag: &str, status: &str, action: &str) -> EventDraft {
        draft(EventType::AuthorizationRefused, station, json!({"id_tag": id_tag, "status": status, "action": action}))
    }

    /// A command record's state as an event: queued, sent, answered (CALLRESULT), failed (CALLERROR,
    /// no answer, expired unsent).
    pub fn command(record: &CommandRecord) -> EventDraft {
        let kind = match record.status {
            CommandStatus::Queued => EventType::CommandQueued,
            CommandStatus::Sent => EventType::CommandSent,
            CommandStatus::Answered => EventType::CommandAnswered,
            CommandStatus::Rejected | CommandStatus::Expired | CommandStatus::Unanswered => EventType::CommandFailed,
        };
        draft(
            kind,
            &record.station_id,
            json!({
                "command_id": record.id,
                "action": record.action,
                "status": record.status,
                "response": record.response,
                "error": record.error,
            }),
        )
    }

    /// A command sent at once to a connected station (no record is kept): its outcome.
    pub fn direct_command(station: &StationId, action: &str, outcome: Result<&Value, (&str, &str)>) -> EventDraft {
        match outcome {
            Ok(response) => draft(
                EventType::CommandAnswered,
                station,
                json!({"command_id": null, "action": action, "status": "answered", "response": response, "error": null}),
            ),
            Err((code, description)) => draft(
                EventType::CommandFailed,
                station,
                json!({"command_id": null, "action": action, "status": "failed", "response": null,
                       "error": {"code": code, "description": description}}),
            ),
        }
    }

    /// One of the account's webhooks was disabled (failing for too long, say).
    pub fn webhook_disabled(webhook_id: &str, url: &str, reason: &str) -> EventDraft {
        EventDraft {
            kind: EventType::WebhookDisabled,
            time: Utc::now(),
            station_id: None,
            body: json!({"webhook_id": webhook_id, "url": url, "reason": reason}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn every_type_round_trips_by_name_and_as_json() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), Value::String(t.as_str().into()));
        }
        assert_eq!(EventType::parse("station.exploded"), None);
    }

    #[test]
    fn an_event_is_old_by_the_period_of_what_it_describes() {
        let now = Utc::now();
        let mut cutoffs = FeedCutoffs::default();
        cutoffs.set(DataKind::StationEvents, now - Duration::days(1));
        let event = |kind, age_days| FeedEvent {
            id: 1,
            kind,
            time: now - Duration::days(age_days),
            station_id: None,
            body: Value::Null,
        };
        assert!(event(EventType::StatusChanged, 2).is_old(&cutoffs));
        assert!(!event(EventType::StatusChanged, 0).is_old(&cutoffs));
        // Transactions have no period here: kept whatever their age.
        assert!(!event(EventType::TransactionEnded, 400).is_old(&cutoffs));
        cutoffs.set(DataKind::FinishedTransactions, now - Duration::days(30));
        assert!(event(EventType::TransactionEnded, 400).is_old(&cutoffs));
    }

    #[test]
    fn a_filter_passes_the_named_types_of_the_named_station() {
        let e = FeedEvent {
            id: 7,
            kind: EventType::StationBooted,
            time: Utc::now(),
            station_id: Some("CP1".into()),
            body: Value::Null,
        };
        assert!(FeedFilter::default().matches(&e));
        assert!(FeedFilter { types: vec![EventType::StationBooted], station: None }.matches(&e));
        assert!(!FeedFilter { types: vec![EventType::StationConnected], station: None }.matches(&e));
        assert!(!FeedFilter { types: vec![], station: Some("CP2".into()) }.matches(&e));
        assert!(FeedFilter { types: vec![], station: Some("CP1".into()) }.matches(&e));
    }
}
