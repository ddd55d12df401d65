//! The records the system keeps: accounts (tenants), stations, id tags, transactions, meter values.
//!
//! These are the shapes stored by the stores in [`crate::store`] and, minus secrets, shown by the API.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::ids::{AccountId, StationId};

mod credentials;
pub mod feed;
mod page;
mod retention;
mod webhook;
pub use credentials::{
    certificate_signed, mask_password, password_answer, password_command, password_in_command, profile_commands,
    profile_step_accepted, renewal_trigger, CertificateStatus, IssuedCertificate, PasswordAnswer, PasswordSlot,
    PendingPassword, ProfileChange, ProfileChangeStatus, RetiredPassword, PASSWORD_MAX, PASSWORD_MIN,
};
pub use feed::{events, EventDraft, EventType, FeedCutoffs, FeedEvent, FeedFilter};
pub use page::{
    reading_order, CommandKey, EventKey, Page, PageBuilder, PageRequest, ReadingKey, ReadingPage, StationFilter,
    TimeKey, TimePage, TransactionFilter, TransactionStatus, DEFAULT_LIMIT, MAX_LIMIT, SCAN_BUDGET,
};
pub use retention::{
    command_is_old, cutoff, event_is_old, login_is_old, reading_is_old, transaction_is_old, DataKind, PruneStep,
    RetentionPeriods, MAX_RETENTION_DAYS, MIN_RETENTION_DAYS,
};
pub use webhook::{record_delivery, DeliveryOutcome, Webhook, WebhookDelivery};

/// A tenant: a charging-network operator with its own stations, id tags and transactions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub email: String,
    pub name: String,
    /// Short name used in station URLs: `/ocpp/{slug}/{station_id}`.
    pub slug: String,
    /// argon2 PHC string.
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    /// Network prefixes (IPv4 /24, IPv6 /48) the account has signed in from: a correct password from
    /// any other prefix is refused until confirmed with a one-time code. Accounts stored before this
    /// field existed have none, and register the prefix of their next sign-in.
    #[serde(default)]
    pub known_locations: Vec<String>,
    /// The periods the tenant set for its data; the node's defaults for the rest.
    #[serde(default)]
    pub retention: RetentionPeriods,
}

/// An API bearer token, stored under the SHA-256 of the token so a copy of the store reveals none.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiToken {
    /// Names the token in listings and revocations without revealing it. Tokens issued before ids
    /// existed have an empty one and are refused (they could be neither listed nor revoked).
    #[serde(default)]
    pub id: String,
    pub account_id: AccountId,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// When the token was last used, to within a minute (updating on every request would cost a
    /// write per request).
    #[serde(default)]
    pub last_used_at: Option<DateTime<Utc>>,
}

/// One choice an account holder made, and when.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub granted: bool,
    /// When `granted` last changed; None while it has never been set.
    pub updated_at: Option<DateTime<Utc>>,
}

/// An account holder's choices about optional processing: all off until they turn one on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consents {
    pub personalized_content: Consent,
    pub personalized_offers: Consent,
    pub marketing_emails: Consent,
    pub non_essential_cookies: Consent,
}

/// How a sign-in attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginOutcome {
    /// Right password from a known location: a token was issued.
    Success,
    /// Wrong password.
    BadPassword,
    /// Right password from a location never seen: a one-time code was sent, no token issued.
    NewLocation,
    /// A one-time code confirmed a new location: a token was issued and the location is now known.
    Confirmed,
    /// A wrong one-time code.
    BadCode,
    /// Refused unchecked: too many failed attempts.
    RateLimited,
}

/// One sign-in attempt on an account, kept so the holder can see who tried to use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginEvent {
    pub at: DateTime<Utc>,
    /// The client's address, as the server saw it (or as a trusted proxy reported it).
    pub ip: String,
    pub outcome: LoginOutcome,
}

/// Whether a station's BootNotification is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    /// Boot answered Accepted; the station may send anything.
    Accepted,
    /// Boot answered Pending: the operator has not accepted the station yet.
    Pending,
    /// Boot answered Rejected: the operator has blocked the station.
    Blocked,
}

/// What the station said about itself in its last BootNotification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BootInfo {
    pub charge_point_vendor: String,
    pub charge_point_model: String,
    pub charge_point_serial_number: Option<String>,
    pub charge_box_serial_number: Option<String>,
    pub firmware_version: Option<String>,
    pub iccid: Option<String>,
    pub imsi: Option<String>,
    pub meter_type: Option<String>,
    pub meter_serial_number: Option<String>,
    pub booted_at: DateTime<Utc>,
}

/// The last StatusNotification for one connector: in OCPP 1.6 connector 0 is the station as a whole;
/// in 2.0.1 a connector belongs to an EVSE.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConnectorStatus {
    /// The EVSE (2.0.1); None for 1.6.
    #[serde(default)]
    pub evse_id: Option<u32>,
    #[serde(default)]
    pub connector_id: u32,
    pub status: String,
    /// The 1.6 error code; 2.0.1 reports none.
    pub error_code: Option<String>,
    pub info: Option<String>,
    pub vendor_id: Option<String>,
    pub vendor_error_code: Option<String>,
    /// When the station says the status changed (its clock), if it said.
    pub timestamp: Option<DateTime<Utc>>,
    /// When the central system received it.
    pub received_at: DateTime<Utc>,
}

/// A firmware or diagnostics status report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    pub status: String,
    pub received_at: DateTime<Utc>,
}

/// How a station must authenticate (OCPP 1.6 security whitepaper profiles).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum SecurityProfile {
    /// Basic auth, over plain WebSocket or TLS.
    #[default]
    Basic,
    /// Basic auth over TLS only.
    TlsBasic,
    /// A client certificate over TLS (mutual TLS); no password.
    ClientCertificate,
}

impl TryFrom<u8> for SecurityProfile {
    type Error = String;

    fn try_from(n: u8) -> Result<Self, String> {
        match n {
            1 => Ok(SecurityProfile::Basic),
            2 => Ok(SecurityProfile::TlsBasic),
            3 => Ok(SecurityProfile::ClientCertificate),
            other => Err(format!("security profile {other} does not exist (1, 2 or 3)")),
        }
    }
}

impl From<SecurityProfile> for u8 {
    fn from(p: SecurityProfile) -> u8 {
        match p {
            SecurityProfile::Basic => 1,
            SecurityProfile::TlsBasic => 2,
            SecurityProfile::ClientCertificate => 3,
        }
    }
}

/// A charge point provisioned by a tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Station {
    pub account_id: AccountId,
    pub id: StationId,
    /// argon2 PHC string of the Basic-auth password.
    pub password_hash: String,
    /// Stations stored before profiles existed use profile 1, which is what they did.
    #[serde(default)]
    pub security_profile: SecurityProfile,
    pub registration: Registration,
    pub created_at: DateTime<Utc>,
    pub boot: Option<BootInfo>,
    /// By [`connector_key`]: "1" for 1.6 connector 1, "1/2" for 2.0.1 EVSE 1 connector 2.
    pub connectors: BTreeMap<String, ConnectorStatus>,
    /// The last time a message from this station was received and persisted.
    pub last_seen: Option<DateTime<Utc>>,
    /// The subprotocol of its last connection.
    pub protocol: Option<String>,
    pub firmware_status: Option<StatusReport>,
    pub diagnostics_status: Option<StatusReport>,
    /// A new password the station has been told and not yet accepted ([`credentials`]).
    #[serde(default)]
    pub pending_password: Option<PendingPassword>,
    /// The password the last rotation replaced, accepted until its grace window ends.
    #[serde(default)]
    pub previous_password: Option<RetiredPassword>,
    /// When the station last accepted a new password.
    #[serde(default)]
    pub password_changed_at: Option<DateTime<Utc>>,
    /// The client certificates the station CA issued it, newest last.
    #[serde(default)]
    pub certificates: Vec<IssuedCertificate>,
    /// The latest move of its security profile.
    #[serde(default)]
    pub profile_change: Option<ProfileChange>,
}

/// The key of a connector in [`Station::connectors`].
pub fn connector_key(evse_id: Option<u32>, connector_id: u32) -> String {
    match evse_id {
        Some(evse) => format!("{evse}/{connector_id}"),
        None => connector_id.to_string(),
    }
}

impl Station {
    /// A newly provisioned station: never connected, nothing reported yet.
    pub fn new(
        account_id: &AccountId,
        id: &StationId,
        password_hash: String,
        registration: Registration,
        security_profile: SecurityProfile,
    ) -> Self {
        Station {
            account_id: account_id.clone(),
            id: id.clone(),
            password_hash,
            security_profile,
            registration,
            created_at: Utc::now(),
            boot: None,
            connectors: BTreeMap::new(),
            last_seen: None,
            protocol: None,
            firmware_status: None,
            diagnostics_status: None,
            pending_password: None,
            previous_password: None,
            password_changed_at: None,
            certificates: Vec::new(),
            profile_change: None,
        }
    }
}

/// A change a station's own messages make to its record. Data rather than a closure, so that in
/// cluster mode it can wait in a node's write-ahead log and be applied to the shared store later.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum StationChange {
    /// A BootNotification: what the station says about itself; it was seen when it booted.
    Booted(BootInfo),
    /// A StatusNotification for the connector under `key` ([`connector_key`]).
    Connector {
        key: String,
        status: ConnectorStatus,
    },
    FirmwareStatus(StatusReport),
    DiagnosticsStatus(StatusReport),
    /// The subprotocol of the station's newest connection.
    Protocol(String),
    /// The station was heard from at this time (kept only if later than what is recorded).
    Seen(DateTime<Utc>),
    /// The station answered the password change `change_id` ([`Station::settle_password`]);
    /// the replaced password lasts `grace_secs`.
    PasswordAnswered {
        change_id: String,
        accepted: bool,
        at: DateTime<Utc>,
        grace_secs: u64,
    },
    /// The station CA issued the station a certificate.
    CertificateIssued(IssuedCertificate),
    /// The station answered the CertificateSigned of certificate `serial`.
    CertificateAnswered {
        serial: String,
        installed: bool,
    },
}

impl StationChange {
    pub fn apply(&self, s: &mut Station) {
        let seen = |s: &mut Station, at: DateTime<Utc>| s.last_seen = Some(s.last_seen.map_or(at, |old| old.max(at)));
        match self {
            StationChange::Booted(boot) => {
                s.boot = Some(boot.clone());
                seen(s, boot.booted_at);
            }
            StationChange::Connector { key, status } => {
                s.connectors.insert(key.clone(), status.clone());
                seen(s, status.received_at);
            }
            StationChange::FirmwareStatus(report) => s.firmware_status = Some(report.clone()),
            StationChange::DiagnosticsStatus(report) => s.diagnostics_status = Some(report.clone()),
            StationChange::Protocol(protocol) => s.protocol = Some(protocol.clone()),
            StationChange::Seen(at) => seen(s, *at),
            StationChange::PasswordAnswered { change_id, accepted, at, grace_secs } => {
                let answer = if *accepted { PasswordAnswer::Accepted } else { PasswordAnswer::Rejected };
                let grace = chrono::Duration::seconds(i64::try_from(*grace_secs).unwrap_or(i64::MAX / 1000));
                s.settle_password(change_id, answer, *at, grace);
            }
            StationChange::CertificateIssued(certificate) => s.certificate_issued(certificate.clone()),
            StationChange::CertificateAnswered { serial, installed } => s.certificate_answered(serial, *installed),
        }
    }
}

/// The authorization status of an id tag (OCPP 1.6 AuthorizationStatus, as stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TagStatus {
    Accepted,
    Blocked,
    Expired,
    Invalid,
}

impl TagStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TagStatus::Accepted => "Accepted",
            TagStatus::Blocked => "Blocked",
            TagStatus::Expired => "Expired",
            TagStatus::Invalid => "Invalid",
        }
    }
}

/// An RFID card or other token a tenant's drivers use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IdTag {
    pub id_tag: String,
    pub status: TagStatus,
    pub expiry_date: Option<DateTime<Utc>>,
    pub parent_id_tag: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// One sampled value of a meter reading, as the station sent it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SampledValue {
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measurand: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// A meter reading: every sampled value taken at one instant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MeterValue {
    pub timestamp: DateTime<Utc>,
    pub sampled_value: Vec<SampledValue>,
}

/// A stored meter reading with where it came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MeterRecord {
    pub station_id: StationId,
    /// OCPP 2.0.1: the EVSE (then `connector_id` is 0).
    #[serde(default)]
    pub evse_id: Option<u32>,
    pub connector_id: u32,
    pub transaction_id: Option<i32>,
    pub meter_value: MeterValue,
}

/// The end of a transaction.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TransactionStop {
    /// Energy register at the end, Wh (2.0.1: from the Ended event's readings, when it had one).
    pub meter_stop: Option<i64>,
    pub timestamp: DateTime<Utc>,
    pub reason: Option<String>,
    pub id_tag: Option<String>,
    pub received_at: DateTime<Utc>,
}

/// A charging session, from StartTransaction to StopTransaction.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Transaction {
    pub id: i32,
    pub account_id: AccountId,
    pub station_id: StationId,
    pub connector_id: u32,
    /// The id tag (1.6) or id token (2.0.1) that started it; 2.0.1 may start without one.
    pub id_tag: Option<String>,
    /// The authorization answer given for it.
    pub id_tag_status: Option<String>,
    /// Energy register at the start, Wh (2.0.1: from the earliest event with a reading).
    pub meter_start: Option<i64>,
    pub start_timestamp: DateTime<Utc>,
    pub reservation_id: Option<i64>,
    pub stop: Option<TransactionStop>,
    pub started_received_at: DateTime<Utc>,
    /// OCPP 2.0.1: the station's own transaction id.
    #[serde(default)]
    pub station_transaction_id: Option<String>,
    /// OCPP 2.0.1: the EVSE.
    #[serde(default)]
    pub evse_id: Option<u32>,
    /// OCPP 2.0.1: the latest charging state (Charging, SuspendedEV, ...).
    #[serde(default)]
    pub charging_state: Option<String>,
    /// OCPP 2.0.1: every TransactionEvent applied, by seqNo.
    #[serde(default)]
    pub events: Vec<TransactionEventRecord>,
}

impl Transaction {
    /// The record of a 1.6 StartTransaction given the id `id`.
    pub fn started(tx: &NewTransaction, id: i32, received_at: DateTime<Utc>) -> Self {
        Transaction {
            id,
            account_id: tx.account_id.clone(),
            station_id: tx.station_id.clone(),
            connector_id: tx.connector_id,
            id_tag: Some(tx.id_tag.clone()),
            id_tag_status: Some(tx.id_tag_status.clone()),
            meter_start: Some(tx.meter_start),
            start_timestamp: tx.start_timestamp,
            reservation_id: tx.reservation_id,
            stop: None,
            started_received_at: received_at,
            station_transaction_id: None,
            evse_id: None,
            charging_state: None,
            events: Vec::new(),
        }
    }

    /// What identifies a 1.6 transaction's start (station, connector, timestamp, meter start), so a
    /// retried StartTransaction finds the transaction it started; None for a 2.0.1 transaction.
    pub fn start_identity(&self) -> Option<StartIdentity> {
        if self.station_transaction_id.is_some() {
            return None;
        }
        Some(StartIdentity {
            account_id: self.account_id.clone(),
            station_id: self.station_id.clone(),
            connector_id: self.connector_id,
            start_timestamp: self.start_timestamp,
            meter_start: self.meter_start?,
        })
    }

    /// OCPP 2.0.1: meter start and stop from the applied events, whatever order they arrived in (or
    /// on which node they were applied): the meter start is the energy register of the earliest
    /// event (by seqNo) that carried one, the meter stop that of the Ended event (or, if it had none,
    /// of the latest event that had one).
    pub fn recompute_energy(&mut self) {
        self.events.sort_by_key(|e| e.seq_no);
        self.meter_start = self.events.iter().find_map(|e| e.energy_register_wh);
        if let Some(stop) = self.stop.as_mut() {
            let ended = self.events.iter().find(|e| e.event_type == "Ended").and_then(|e| e.energy_register_wh);
            stop.meter_stop = ended.or_else(|| self.events.iter().rev().find_map(|e| e.energy_register_wh));
        }
    }

    /// Energy delivered in Wh: meter stop − meter start, once stopped and both are known.
    pub fn energy_wh(&self) -> Option<i64> {
        Some(self.stop.as_ref()?.meter_stop? - self.meter_start?)
    }

    /// A station's StopTransaction: the first stop wins, so a retried one (or one for a transaction
    /// stopped otherwise) changes nothing; another station's transaction is left alone.
    pub fn stop(&mut self, station_id: &StationId, stop: &TransactionStop) -> Stopping {
        if self.station_id != *station_id {
            return Stopping::OtherStation;
        }
        if self.stop.is_some() {
            return Stopping::AlreadyStopped;
        }
        self.stop = Some(stop.clone());
        Stopping::Stopped
    }

    /// Applies an OCPP 2.0.1 TransactionEvent with `apply`, unless an event with its `seq_no` was
    /// applied before (a retry): then nothing changes and the answer is false. The first event seen
    /// of a transaction is applied to the record it creates ([`crate::store::rules`]).
    pub fn apply_event(&mut self, seq_no: u64, apply: impl FnOnce(&mut Transaction)) -> bool {
        if self.events.iter().any(|e| e.seq_no == seq_no) {
            return false;
        }
        apply(self);
        true
    }
}

/// What a StopTransaction did to a transaction record ([`Transaction::stop`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopping {
    /// It was open and is now stopped.
    Stopped,
    /// It was stopped already: nothing changed.
    AlreadyStopped,
    /// It is another station's: nothing changed, and for the station that asked it does not exist.
    OtherStation,
}

/// One applied OCPP 2.0.1 TransactionEvent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TransactionEventRecord {
    pub seq_no: u64,
    pub event_type: String,
    pub trigger_reason: String,
    pub timestamp: DateTime<Utc>,
    /// Sent while the station was offline.
    pub offline: bool,
    /// The energy register (Wh) among its readings, if any.
    pub energy_register_wh: Option<i64>,
    pub received_at: DateTime<Utc>,
}

/// What a StartTransaction asks to record.
#[derive(Debug, Clone)]
pub struct NewTransaction {
    pub account_id: AccountId,
    pub station_id: StationId,
    pub connector_id: u32,
    pub id_tag: String,
    pub id_tag_status: String,
    pub meter_start: i64,
    pub start_timestamp: DateTime<Utc>,
    pub reservation_id: Option<i64>,
}

/// The fields that identify a 1.6 transaction's start; see [`Transaction::start_identity`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartIdentity {
    pub account_id: AccountId,
    pub station_id: StationId,
    pub connector_id: u32,
    pub start_timestamp: DateTime<Utc>,
    pub meter_start: i64,
}

impl NewTransaction {
    pub fn start_identity(&self) -> StartIdentity {
        StartIdentity {
            account_id: self.account_id.clone(),
            station_id: self.station_id.clone(),
            connector_id: self.connector_id,
            start_timestamp: self.start_timestamp,
            meter_start: self.meter_start,
        }
    }
}

/// A message kept for the record that changes no other state (DataTransfer, security events, ...).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StationEvent {
    pub station_id: StationId,
    pub action: String,
    pub payload: serde_json::Value,
    pub received_at: DateTime<Utc>,
}

/// A variable of a 2.0.1 station's device model, as reported by NotifyReport (and NotifyEvent).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceVariable {
    pub component: String,
    pub component_instance: Option<String>,
    pub evse_id: Option<u32>,
    pub connector_id: Option<u32>,
    pub variable: String,
    pub variable_instance: Option<String>,
    /// Actual, Target, MinSet or MaxSet.
    pub attribute_type: String,
    pub value: Option<String>,
    pub mutability: Option<String>,
    pub persistent: Option<bool>,
    pub constant: Option<bool>,
    /// variableCharacteristics as reported (unit, dataType, limits, valuesList, ...).
    pub characteristics: Option<serde_json::Value>,
    pub updated_at: DateTime<Utc>,
}

impl DeviceVariable {
    /// The attribute once `seen` (the same attribute as a 2.0.1 NotifyEvent saw it: a value and the
    /// time) is applied to what is `known` of it: the value and the time change; what the report
    /// said of the variable (mutability, persistence, constancy, characteristics) stays. An
    /// attribute never reported is kept as seen.
    pub fn observed(known: Option<DeviceVariable>, seen: &DeviceVariable) -> DeviceVariable {
        match known {
            Some(mut attribute) => {
                attribute.value = seen.value.clone();
                attribute.updated_at = seen.updated_at;
                attribute
            }
            None => seen.clone(),
        }
    }

    /// Identity of the attribute within the station's device model.
    pub fn key(&self) -> String {
        let opt = |o: &Option<String>| o.clone().unwrap_or_default();
        let num = |o: Option<u32>| o.map(|n| n.to_string()).unwrap_or_default();
        format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
            self.component,
            opt(&self.component_instance),
            num(self.evse_id),
            num(self.connector_id),
            self.variable,
            opt(&self.variable_instance),
            self.attribute_type
        )
    }
}

/// Where a queued command is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// Waiting for the station to connect.
    Queued,
    /// Sent; the answer has not arrived yet.
    Sent,
    /// The station answered with a CALLRESULT (`response`).
    Answered,
    /// The station answered with a CALLERROR (`error`).
    Rejected,
    /// Not sent before its expiry.
    Expired,
    /// Sent, but no answer came (timeout or lost connection): the station may or may not have acted.
    Unanswered,
}

/// A CALLERROR a station answered with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommandFailure {
    pub code: String,
    pub description: String,
}

/// A command queued for a station that was offline when it was asked for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommandRecord {
    pub id: String,
    /// The subprotocol the payload was validated for; delivered only over the same.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    pub account_id: AccountId,
    pub station_id: StationId,
    pub action: String,
    pub payload: serde_json::Value,
    pub status: CommandStatus,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
    pub response: Option<serde_json::Value>,
    pub error: Option<CommandFailure>,
}

fn default_protocol() -> String {
    "ocpp1.6".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_transaction() -> Transaction {
        let start = NewTransaction {
            account_id: "acct".into(),
            station_id: "CP1".into(),
            connector_id: 1,
            id_tag: "TAG".into(),
            id_tag_status: "Accepted".into(),
            meter_start: 100,
            start_timestamp: Utc::now(),
            reservation_id: None,
        };
        Transaction::started(&start, 7, Utc::now())
    }

    fn stop_at(meter_stop: i64) -> TransactionStop {
        TransactionStop {
            meter_stop: Some(meter_stop),
            timestamp: Utc::now(),
            reason: None,
            id_tag: None,
            received_at: Utc::now(),
        }
    }

    #[test]
    fn ids_in_a_record_are_the_bare_strings_they_were() {
        let station =
            Station::new(&"acct".into(), &"CP1".into(), "h".into(), Registration::Accepted, SecurityProfile::Basic);
        let stored = serde_json::to_value(&station).unwrap();
        assert_eq!((&stored["account_id"], &stored["id"]), (&serde_json::json!("acct"), &serde_json::json!("CP1")));
        let back: Station = serde_json::from_value(stored).unwrap();
        assert_eq!((back.account_id.as_str(), back.id.as_str()), ("acct", "CP1"));
    }

    #[test]
    fn the_first_stop_wins_and_a_retried_or_foreign_stop_changes_nothing() {
        let mut tx = open_transaction();
        assert_eq!(tx.stop(&"CP2".into(), &stop_at(500)), Stopping::OtherStation);
        assert!(tx.stop.is_none(), "another station cannot stop it");
        assert_eq!(tx.stop(&"CP1".into(), &stop_at(500)), Stopping::Stopped);
        let first = tx.clone();
        assert_eq!(tx.stop(&"CP1".into(), &stop_at(900)), Stopping::AlreadyStopped);
        assert_eq!(tx, first, "the retry changed nothing");
        assert_eq!(tx.energy_wh(), Some(400));
    }

    #[test]
    fn an_event_with_a_seq_no_already_applied_changes_nothing() {
        let record = |seq_no| TransactionEventRecord {
            seq_no,
            event_type: "Updated".into(),
            trigger_reason: "MeterValuePeriodic".into(),
            timestamp: Utc::now(),
            offline: false,
            energy_register_wh: Some(1000 * seq_no as i64),
            received_at: Utc::now(),
        };
        let mut tx = open_transaction();
        assert!(tx.apply_event(0, |t| t.events.push(record(0))));
        assert!(tx.apply_event(1, |t| t.events.push(record(1))));
        let before = tx.clone();
        assert!(!tx.apply_event(1, |t| t.events.push(record(1))), "a repeat is not applied");
        assert_eq!(tx, before);
        assert_eq!(tx.events.len(), 2);
    }
}
