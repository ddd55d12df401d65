//! Bounds on what one station, tenant or stranger can take from everyone else on the node: memory,
//! file descriptors, disk, CPU and log volume. Each bound is checked before its cost is paid, has a
//! config key (`[limits]`, and `ocpp.max_frame_bytes`), answers with a clear signal, and counts in
//! `ocpp_limit_hits_total{limit}` under one of the [`Limit`] names.
//!
//! - [`frames`]: message size, judged on the frame headers as the bytes arrive.
//! - [`connections`]: the HTTP server's connections: per address, in all, and stalled ones.
//! - [`http`]: per request: body deadline, and the connection marked busy while a request runs.
//! - [`quota`]: per-key windows and failure back-off (authentication, sign-ups, reconnects, events).
//! - [`logs`]: log lines per interval.
//!
//! The session's own bounds (outgoing queue, replay cache, message rate) live with the session
//! ([`crate::actors::session`]); they use the settings and counters defined here.

pub mod connections;
pub mod frames;
pub mod http;
pub mod logs;
pub mod quota;

use crate::config::LimitSettings;
use crate::ids::{AccountId, StationId};
use crate::metrics as m;
use connections::{AddressKey, ConnectionLimits, ConnectionTable};
use quota::{Backoff, Concurrency, WindowQuota};
use std::sync::Arc;
use std::time::Duration;

/// Every bound: the `limit` label of `ocpp_limit_hits_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A WebSocket message over `ocpp.max_frame_bytes` (close 1009).
    FrameSize,
    /// A session's outgoing queue over `outbound_queue_bytes` (disconnected).
    OutboundQueue,
    /// A station took nothing of its outgoing queue for `slow_consumer_secs` (disconnected).
    SlowConsumer,
    /// A station sent faster than its rate; its socket was not read for a while.
    MessageRate,
    /// An event-only message over the station's stored-bytes quota (Rejected / CALLERROR).
    EventStorage,
    /// A station reconnecting more often than its window allows (429).
    Reconnects,
    /// A request's headers did not arrive in time (connection closed).
    HeaderTimeout,
    /// A request's body did not arrive in time (408).
    BodyTimeout,
    /// An API request's body over `limits.api_body_bytes` (413).
    BodySize,
    /// One address holding too many unauthenticated connections (closed as accepted).
    ConnectionsPerAddress,
    /// The node at its connection capacity with nothing to evict (closed as accepted).
    ConnectionCapacity,
    /// An unauthenticated connection closed to make room for a new one.
    ConnectionEvicted,
    /// A station authentication refused unchecked during its back-off (429).
    AuthBackoff,
    /// A suspect password check refused because too many wait already (429).
    AuthQueue,
    /// Sign-ups from one address over the window (429).
    Signups,
    /// A tenant at its station quota (403).
    StationsPerTenant,
    /// A log line held back.
    LogLines,
    /// A command refused because too many wait for their station already (429).
    WaitingCommands,
    /// A list page cut short after reading `limits.list_scan_records` records (a filter no index
    /// answers); its cursor goes on.
    ListScan,
    /// An export refused because the tenant streams `limits.exports_per_tenant` already (429).
    Exports,
    /// An event stream refused: the tenant holds `limits.event_streams_per_tenant` (429) or the
    /// node `limits.event_streams` (503) already.
    EventStreams,
    /// An event stream cut off: its client took nothing for `events.send_timeout_secs`.
    EventStreamStalled,
}

impl Limit {
    pub const ALL: [Limit; 22] = [
        Limit::FrameSize,
        Limit::OutboundQueue,
        Limit::SlowConsumer,
        Limit::MessageRate,
        Limit::EventStorage,
        Limit::Reconnects,
        Limit::HeaderTimeout,
        Limit::BodyTimeout,
        Limit::BodySize,
        Limit::ConnectionsPerAddress,
        Limit::ConnectionCapacity,
        Limit::ConnectionEvicted,
        Limit::AuthBackoff,
        Limit::AuthQueue,
        Limit::Signups,
        Limit::StationsPerTenant,
        Limit::LogLines,
        Limit::WaitingCommands,
        Limit::ListScan,
        Limit::Exports,
        Limit::EventStreams,
        Limit::EventStreamStalled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::FrameSize => "frame_size",
            Limit::OutboundQueue => "outbound_queue",
            Limit::SlowConsumer => "slow_consumer",
            Limit::MessageRate => "message_rate",
            Limit::EventStorage => "event_storage",
            Limit::Reconnects => "reconnects",
            Limit::HeaderTimeout => "header_timeout",
            Limit::BodyTimeout => "body_timeout",
            Limit::BodySize => "body_size",
            Limit::ConnectionsPerAddress => "connections_per_address",
            Limit::ConnectionCapacity => "connection_capacity",
            Limit::ConnectionEvicted => "connection_evicted",
            Limit::AuthBackoff => "auth_backoff",
            Limit::AuthQueue => "auth_queue",
            Limit::Signups => "signups",
            Limit::StationsPerTenant => "stations_per_tenant",
            Limit::LogLines => "log_lines",
            Limit::WaitingCommands => "waiting_commands",
            Limit::ListScan => "list_scan",
            Limit::Exports => "exports",
            Limit::EventStreams => "event_streams",
            Limit::EventStreamStalled => "event_stream_stalled",
        }
    }
}

/// Counts one hit of a limit.
pub fn hit(limit: Limit) {
    metrics::counter!(m::LIMIT_HITS, "limit" => limit.as_str()).increment(1);
}

/// Registers every limit's counter at zero, so that a fresh node already exports them.
pub fn register_metrics() {
    for limit in Limit::ALL {
        metrics::counter!(m::LIMIT_HITS, "limit" => limit.as_str()).increment(0);
    }
    metrics::counter!(m::UNSOLICITED_ANSWERS).increment(0);
    for lane in ["normal", "suspect"] {
        metrics::counter!(m::ARGON2_JOBS, "lane" => lane).increment(0);
    }
    metrics::gauge!(m::OUTBOUND_QUEUED_BYTES).increment(0.0);
}

/// A station as the per-station limits count it. `account_id` is a plain string because the
/// reconnect window counts what the URL names, before any look-up: the tenant's slug.
pub fn station_key(account_id: &str, station_id: &StationId) -> String {
    format!("{account_id}/{station_id}")
}

/// The node-wide state of the limits, shared by every request and session.
pub struct Limits {
    pub settings: LimitSettings,
    pub connections: Arc<ConnectionTable>,
    /// Failed station authentications, by station.
    pub station_auth: Backoff<String>,
    /// Failed station authentications, by client address.
    pub address_auth: Backoff<AddressKey>,
    pub signups: WindowQuota<AddressKey>,
    /// Accepted connections, by station.
    pub reconnects: WindowQuota<String>,
    /// Stored bytes of event-only messages, by station.
    pub event_bytes: WindowQuota<String>,
    /// Refused station connections are logged within this budget.
    pub refusals_log: logs::SharedLogBudget,
    /// Exports streaming now, by tenant.
    pub exports: Concurrency<AccountId>,
    /// Event streams open now, by tenant.
    pub event_streams: Concurrency<AccountId>,
    /// Event streams open now on the node.
    pub node_event_streams: Concurrency<()>,
}

impl Limits {
    /// The limits of one application; `capacity` is how many connections it may hold.
    pub fn new(settings: &LimitSettings, capacity: usize) -> Self {
        let secs = Duration::from_secs;
        let connections = ConnectionTable::new(ConnectionLimits {
            per_address: settings.unauthenticated_connections_per_address,
            capacity,
            header_timeout: settings.header_timeout(),
            keep_alive: settings.keep_alive(),
            refusal_delay: settings.refusal_delay(),
            tarpit: settings.held_refusals,
        });
        let auth_window = secs(settings.auth_failure_window_secs);
        let backoff_max = secs(settings.auth_backoff_max_secs);
        Self {
            settings: settings.clone(),
            connections,
            station_auth: Backoff::new(settings.auth_failures_per_station, auth_window, backoff_max),
            address_auth: Backoff::new(settings.auth_failures_per_address, auth_window, backoff_max),
            signups: WindowQuota::new(settings.signups_per_address.into(), secs(settings.signup_window_secs)),
            reconnects: WindowQuota::new(
                settings.station_reconnects.into(),
                secs(settings.station_reconnect_window_secs),
            ),
            event_bytes: WindowQuota::new(settings.station_event_bytes, secs(settings.station_event_window_secs)),
            refusals_log: logs::SharedLogBudget::new(
                settings.session_warnings.max(1) * 4,
                secs(settings.log_summary_secs),
            ),
            exports: Concurrency::new(settings.exports_per_tenant),
            event_streams: Concurrency::new(settings.event_streams_per_tenant),
            node_event_streams: Concurrency::new(settings.event_streams),
        }
    }
}
