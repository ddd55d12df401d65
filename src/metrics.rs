//! Every metric name, in one place, and the Prometheus recorder behind `/metrics`.
//!
//! Labels never carry station or account ids: their values come from small fixed sets (protocol,
//! action, direction, result, reason, error code).

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Gauge: open station WebSocket sessions, by `protocol`.
pub const CONNECTIONS: &str = "ocpp_connections";
/// Counter: accepted station connections.
pub const CONNECTS: &str = "ocpp_connects_total";
/// Counter: ended station sessions, by `reason` (closed_by_station, replaced, deleted, idle_timeout,
/// protocol_error, frame_too_big, shutdown).
pub const DISCONNECTS: &str = "ocpp_disconnects_total";
/// Counter: refused station connections, by `reason` (unknown_tenant, unknown_station, bad_password,
/// missing_credentials, unsupported_subprotocol, tls_required, client_cert_required,
/// client_cert_mismatch).
pub const AUTH_FAILURES: &str = "ocpp_auth_failures_total";
/// Counter: SignCertificate requests, by `outcome` (issued, no_ca, unsupported_type, unreadable,
/// bad_signature, subject_mismatch, unsupported_key, ca_unavailable).
pub const CERTIFICATE_SIGNINGS: &str = "ocpp_certificate_signings_total";
/// Counter: certificates the station CA issued that were sent to the station (CertificateSigned),
/// by `outcome` (installed, rejected, unanswered).
pub const CERTIFICATES_DELIVERED: &str = "ocpp_certificates_delivered_total";
/// Counter: renewals a session asked its station for (a trigger for a new CSR), by `result`
/// (accepted, rejected, unanswered).
pub const CERTIFICATE_RENEWALS: &str = "ocpp_certificate_renewals_total";
/// Gauge: connected stations (on this node) whose installed certificate from the station CA
/// expires within `within` (`renewal_window`: `station_ca.renew_before_days`; `7d`).
pub const CERTIFICATES_EXPIRING: &str = "ocpp_station_certificates_expiring";
/// Counter: OCPP messages, by `action`, `direction` (in = from station, out = to station) and `result`
/// (ok, error, timeout).
pub const MESSAGES: &str = "ocpp_messages_total";
/// Counter: CALLERRORs sent to stations, by `code`.
pub const CALL_ERRORS: &str = "ocpp_call_errors_total";
/// Histogram (seconds): time to handle a station's CALL, durable write included, by `action`.
pub const CALL_DURATION: &str = "ocpp_call_duration_seconds";
/// Histogram (seconds): time from sending a command to the station's answer, by `action`.
pub const COMMAND_DURATION: &str = "ocpp_command_duration_seconds";
/// Gauge: commands sent to stations and not yet answered.
pub const PENDING_COMMANDS: &str = "ocpp_pending_commands";
/// Histogram (seconds): time to make a batch of writes durable (flush).
pub const STORE_FLUSH_DURATION: &str = "ocpp_store_flush_duration_seconds";
/// Histogram (seconds): time a write waits to become durable (group-commit window plus flush).
pub const DURABLE_WAIT: &str = "ocpp_durable_wait_seconds";
/// Histogram: writers sharing one flush.
pub const GROUP_COMMIT_BATCH: &str = "ocpp_group_commit_batch_size";
/// Gauge: commands queued for offline stations, not yet sent.
pub const QUEUED_COMMANDS: &str = "ocpp_queued_commands";
/// Counter: repeated CALLs (same unique id on a session) answered from the session's cache.
pub const DUPLICATE_CALLS: &str = "ocpp_duplicate_calls_total";
/// Gauge (seconds): age of the oldest command queued for an offline station, 0 when none.
pub const QUEUED_OLDEST_AGE: &str = "ocpp_queued_command_oldest_age_seconds";
/// Counter: API requests answered, by `status` class (2xx, 4xx, 5xx).
pub const API_REQUESTS: &str = "ocpp_api_requests_total";
/// Histogram `{route, method, status}`: time to answer an API request, by the route's template
/// (`unmatched` for a path no route has), the method (`other` for one the API has not) and the
/// status class.
pub const API_REQUEST_DURATION: &str = "ocpp_api_request_duration_seconds";
/// Gauge (cluster mode): 1 while this node reaches Redis for presence and routing, 0 when not.
pub const CLUSTER_REDIS_UP: &str = "ocpp_cluster_redis_up";
/// Counter (cluster mode): API commands sent to a station on another node, by `result` (answered,
/// error, timeout, not_connected, unreachable).
pub const CLUSTER_ROUTED_COMMANDS: &str = "ocpp_cluster_routed_commands_total";
/// Gauge: live account actors.
pub const ACCOUNT_ACTORS: &str = "ocpp_account_actors";
/// Gauge (cluster): entries in this node's write-ahead log, waiting to reach the shared store.
pub const WAL_PENDING: &str = "ocpp_wal_pending";
/// Gauge (cluster, seconds): age of the oldest entry waiting in the write-ahead log, 0 when none.
pub const WAL_OLDEST_AGE: &str = "ocpp_wal_oldest_age_seconds";
/// Counter (cluster): write-ahead entries applied to the shared store (or set aside).
pub const WAL_DRAINED: &str = "ocpp_wal_drained_total";
/// Counter (cluster): drain rounds that failed (the shared store or the local store refused).
pub const WAL_DRAIN_ERRORS: &str = "ocpp_wal_drain_errors_total";
/// Counter (cluster): write-ahead entries set aside instead of applied, by `reason` (undecodable,
/// unknown_account): kept on the node's disk for an operator.
pub const WAL_SET_ASIDE: &str = "ocpp_wal_set_aside_total";
/// Gauge (cluster): 1 while the shared store (Redis) answers this node, 0 while it does not.
pub const REDIS_UP: &str = "ocpp_redis_up";
/// Counter: times a limit refused, slowed or cut off something an outsider sent, by `limit` (the
/// names of [`crate::limits::Limit`]).
pub const LIMIT_HITS: &str = "ocpp_limit_hits_total";
/// Counter: CALLRESULTs and CALLERRORs from stations that answer no command in flight.
pub const UNSOLICITED_ANSWERS: &str = "ocpp_unsolicited_answers_total";
/// Counter: argon2 password checks and hashes run, by `lane` (normal, suspect).
pub const ARGON2_JOBS: &str = "ocpp_argon2_jobs_total";
/// Gauge: bytes of outgoing frames queued in station sessions and not yet taken by the socket.
pub const OUTBOUND_QUEUED_BYTES: &str = "ocpp_outbound_queued_bytes";
/// Gauge: open HTTP connections, by `state`: authenticated (station sessions), unauthenticated (API
/// connections and connections still handshaking), held (over their address's limit, refused).
pub const HTTP_CONNECTIONS: &str = "ocpp_http_connections";
/// Counter: records removed after their retention period, by `kind` (meter_values, station_events,
/// login_history, finished_commands, finished_transactions).
pub const RETENTION_PRUNED: &str = "ocpp_retention_pruned_total";
/// Counter: events appended to tenants' feeds by this node, by `type` (station.connected, …).
pub const EVENTS_EMITTED: &str = "ocpp_events_emitted_total";
/// Gauge: open Server-Sent Events streams (`GET /api/v1/events`).
pub const SSE_CLIENTS: &str = "ocpp_sse_clients";
/// Counter: Server-Sent Events streams ended by the server, by `reason` (slow_client: its client
/// took nothing in time; account_erased; store_error: the feed could not be read).
pub const SSE_CUTOFFS: &str = "ocpp_sse_cutoffs_total";
/// Counter: webhook delivery attempts, by `outcome` (delivered, http_error, unreachable, refused).
pub const WEBHOOK_DELIVERIES: &str = "ocpp_webhook_deliveries_total";
/// Histogram (seconds): time a webhook receiver took to answer a delivery.
pub const WEBHOOK_DELIVERY_DURATION: &str = "ocpp_webhook_delivery_duration_seconds";
/// Gauge: events waiting to be delivered to enabled webhooks (counted up to a bound per webhook).
pub const WEBHOOK_OUTBOX_DEPTH: &str = "ocpp_webhook_outbox_depth";
/// Gauge (seconds): age of the oldest event waiting for an enabled webhook.
pub const WEBHOOK_OUTBOX_OLDEST_AGE: &str = "ocpp_webhook_outbox_oldest_age_seconds";
/// Counter: webhooks disabled by the service after failing for longer than the retry period.
pub const WEBHOOKS_DISABLED: &str = "ocpp_webhooks_disabled_total";
/// Counter: retention passes over every account, by `outcome` (done, failed, skipped: another node
/// of the cluster holds the retention lease).
pub const RETENTION_PASSES: &str = "ocpp_retention_passes_total";
/// Gauge (seconds): how long the last retention pass took.
pub const RETENTION_PASS_DURATION: &str = "ocpp_retention_last_pass_seconds";

/// The series a station's CALL of one action moves: its handling time and its outcome. Each handle
/// is looked up once per process rather than once per message (a look-up builds the series' key
/// and searches the registry, which costs more than the recording), and only when first used, so
/// that a series appears in `/metrics` once it has something to say, as with the macros.
#[derive(Default)]
pub struct CallMetrics {
    action: &'static str,
    duration: OnceLock<metrics::Histogram>,
    ok: OnceLock<metrics::Counter>,
    error: OnceLock<metrics::Counter>,
}

impl CallMetrics {
    pub fn duration(&self) -> &metrics::Histogram {
        self.duration.get_or_init(|| metrics::histogram!(CALL_DURATION, "action" => self.action))
    }

    pub fn ok(&self) -> &metrics::Counter {
        self.ok
            .get_or_init(|| metrics::counter!(MESSAGES, "action" => self.action, "direction" => "in", "result" => "ok"))
    }

    pub fn error(&self) -> &metrics::Counter {
        self.error.get_or_init(
            || metrics::counter!(MESSAGES, "action" => self.action, "direction" => "in", "result" => "error"),
        )
    }
}

/// The [`CallMetrics`] of an action's label: an action name of either version, or `unknown` for
/// anything else.
pub fn call_metrics(action: &str) -> &'static CallMetrics {
    static TABLE: OnceLock<std::collections::HashMap<&'static str, CallMetrics>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let names = crate::ocpp::Version::ALL.into_iter().flat_map(|v| v.actions().iter().map(|a| a.name));
        names
            .chain(std::iter::once("unknown"))
            .map(|action| (action, CallMetrics { action, ..Default::default() }))
            .collect()
    });
    // "unknown" is in the table (added above), so the second look-up cannot fail.
    table.get(action).or_else(|| table.get("unknown")).expect("the table holds \"unknown\"")
}

const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// The process-wide recorder, every series labelled `node` with this node's id. Installed once:
/// every application built in this process (tests build several) renders the same registry, with
/// the first node id given.
pub fn handle(node_id: &str) -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .add_global_label("node", node_id)
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(GROUP_COMMIT_BATCH.into()), BATCH_BUCKETS))
                // The bucket lists above are non-empty constants, the only thing this can reject.
                .expect("histogram buckets are valid");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only when another recorder was installed first, in which case ours stays unused
            // and /metrics renders an empty registry: logged rather than fatal.
            if let Err(e) = metrics::set_global_recorder(recorder) {
                tracing::error!(error = %e, "a metrics recorder was already installed");
            }
            describe();
            process_collector().describe();
            handle
        })
        .clone()
}

/// Process metrics (RSS, open and max fds, CPU seconds, threads), read at each scrape.
fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// The Prometheus text of every metric, process metrics freshly read.
pub fn render(handle: &PrometheusHandle) -> String {
    process_collector().collect();
    handle.render()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(CONNECTIONS, "Open station WebSocket sessions");
    describe_counter!(CONNECTS, "Accepted station connections");
    describe_counter!(DISCONNECTS, "Ended station sessions by reason");
    describe_counter!(AUTH_FAILURES, "Refused station connections by reason");
    describe_counter!(MESSAGES, "OCPP messages by action, direction and result");
    describe_counter!(CALL_ERRORS, "CALLERRORs sent to stations by code");
    describe_histogram!(CALL_DURATION, Unit::Seconds, "Time to handle a station's CALL, durable write included");
    describe_histogram!(COMMAND_DURATION, Unit::Seconds, "Time from sending a command to the station's answer");
    describe_gauge!(PENDING_COMMANDS, "Commands sent to stations and not yet answered");
    describe_histogram!(STORE_FLUSH_DURATION, Unit::Seconds, "Time to flush writes to disk");
    describe_histogram!(DURABLE_WAIT, Unit::Seconds, "Time a write waits to become durable");
    describe_histogram!(GROUP_COMMIT_BATCH, "Writers sharing one flush");
    describe_gauge!(QUEUED_COMMANDS, "Commands queued for offline stations, not yet sent");
    describe_counter!(DUPLICATE_CALLS, "Repeated CALLs answered from the session's cache");
    describe_gauge!(QUEUED_OLDEST_AGE, Unit::Seconds, "Age of the oldest command queued for an offline station");
    describe_counter!(API_REQUESTS, "API requests by status class");
    describe_histogram!(
        API_REQUEST_DURATION,
        Unit::Seconds,
        "Time to answer an API request, by route template, method and status class"
    );
    describe_gauge!(ACCOUNT_ACTORS, "Live account actors");
    describe_gauge!(WAL_PENDING, "Write-ahead entries waiting to reach the shared store");
    describe_gauge!(WAL_OLDEST_AGE, Unit::Seconds, "Age of the oldest write-ahead entry waiting");
    describe_counter!(WAL_DRAINED, "Write-ahead entries applied to the shared store");
    describe_counter!(WAL_DRAIN_ERRORS, "Failed write-ahead drain rounds");
    describe_counter!(WAL_SET_ASIDE, "Write-ahead entries set aside instead of applied, by reason");
    describe_gauge!(REDIS_UP, "Whether the shared store answers this node (1) or not (0)");
    describe_gauge!(CLUSTER_REDIS_UP, "Whether Redis answers this node's presence and routing (1) or not (0)");
    describe_counter!(CLUSTER_ROUTED_COMMANDS, "API commands sent to a station on another node, by result");
    describe_counter!(LIMIT_HITS, "Times a limit refused, slowed or cut off an outsider's input, by limit");
    describe_counter!(UNSOLICITED_ANSWERS, "Station answers to no command in flight");
    describe_counter!(ARGON2_JOBS, "argon2 password checks and hashes run, by lane");
    describe_gauge!(OUTBOUND_QUEUED_BYTES, "Bytes queued for stations and not yet taken by their sockets");
    describe_gauge!(HTTP_CONNECTIONS, "Open HTTP connections by state (authenticated, unauthenticated, held)");
    describe_counter!(RETENTION_PRUNED, "Records removed after their retention period, by kind");
    describe_counter!(RETENTION_PASSES, "Retention passes over every account, by outcome");
    describe_gauge!(RETENTION_PASS_DURATION, Unit::Seconds, "How long the last retention pass took");
    describe_counter!(EVENTS_EMITTED, "Events appended to tenants' feeds by this node, by type");
    describe_gauge!(SSE_CLIENTS, "Open Server-Sent Events streams");
    describe_counter!(SSE_CUTOFFS, "Server-Sent Events streams ended by the server, by reason");
    describe_counter!(WEBHOOK_DELIVERIES, "Webhook delivery attempts, by outcome");
    describe_histogram!(WEBHOOK_DELIVERY_DURATION, Unit::Seconds, "Time a webhook receiver took to answer");
    describe_gauge!(WEBHOOK_OUTBOX_DEPTH, "Events waiting to be delivered to enabled webhooks");
    describe_gauge!(WEBHOOK_OUTBOX_OLDEST_AGE, Unit::Seconds, "Age of the oldest event waiting for a webhook");
    describe_counter!(WEBHOOKS_DISABLED, "Webhooks disabled after failing for longer than the retry period");
}

/// Counts events appended to a feed, by type.
pub fn feed_emitted(events: &[crate::model::EventDraft]) {
    for e in events {
        metrics::counter!(EVENTS_EMITTED, "type" => e.kind.as_str()).increment(1);
    }
}
