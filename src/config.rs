//! Layered settings: `config/default.toml` (compiled in), then the file given by `--config`, then
//! `OCPP_CSS__SECTION__KEY` environment variables. A key no setting has, in the file or in an
//! `OCPP_CSS__` variable, is an error that names it and the closest known key: a typo does not
//! silently leave the default in force.

use crate::store::RedisTarget;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The prefix of the environment variables that set settings (`OCPP_CSS__SECTION__KEY`).
pub const ENV_PREFIX: &str = "OCPP_CSS";
const ENV_SEPARATOR: &str = "__";

/// The commented default configuration, the first layer of every configuration.
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub ocpp: OcppSettings,
    pub commands: CommandSettings,
    pub api: ApiSettings,
    pub accounts: AccountSettings,
    pub login: LoginSettings,
    pub tls: TlsSettings,
    pub station_ca: StationCaSettings,
    pub cluster: ClusterSettings,
    pub limits: LimitSettings,
    pub retention: RetentionSettings,
    pub events: EventSettings,
    pub webhooks: WebhookSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub max_connections_per_worker: usize,
    pub backlog: u32,
    pub public_url: String,
    /// This node's name as configured; empty means the host name (see [`ServerSettings::node_id`]).
    pub node_id: String,
    /// The host name, read once when the settings load: the node's name when `node_id` is empty.
    #[serde(skip)]
    host_name: String,
}

impl ServerSettings {
    /// This node's name in metrics, logs and the cluster: `node_id`, or the host name when it is empty.
    pub fn node_id(&self) -> &str {
        match (self.node_id.as_str(), self.host_name.as_str()) {
            ("", "") => "ocpp-css",
            ("", host) => host,
            (configured, _) => configured,
        }
    }
}

/// The host name, or empty when it cannot be read.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StorageSettings {
    pub data_dir: PathBuf,
    pub group_commit_window_us: u64,
    pub flush_per_message: bool,
}

impl StorageSettings {
    pub fn commit_policy(&self) -> crate::store::CommitPolicy {
        crate::store::CommitPolicy {
            window: Duration::from_micros(self.group_commit_window_us),
            per_message: self.flush_per_message,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CommandSettings {
    pub queue_ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct OcppSettings {
    pub heartbeat_interval_secs: u64,
    pub boot_retry_interval_secs: u64,
    pub command_timeout_secs: u64,
    pub max_frame_bytes: usize,
    pub auto_accept_stations: bool,
    pub station_hash_memory_kib: u32,
    pub station_hash_iterations: u32,
    pub shutdown_timeout_secs: u64,
    pub ping_interval_secs: u64,
    pub idle_timeout_secs: u64,
    pub password_grace_secs: u64,
}

impl OcppSettings {
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_secs)
    }

    /// How long a station's replaced password keeps working after it accepted a new one.
    pub fn password_grace(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::try_from(self.password_grace_secs).unwrap_or(i64::MAX / 1000))
    }
}

/// The certificate authority that signs station client certificates (security profile 3).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StationCaSettings {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub validity_days: u32,
    pub renew_before_days: u32,
    pub renewal_check_secs: u64,
}

impl StationCaSettings {
    pub fn enabled(&self) -> bool {
        !self.cert_path.as_os_str().is_empty()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ApiSettings {
    pub token_ttl_secs: u64,
    /// Take the client address from the last `X-Forwarded-For` entry (set by a proxy in front).
    pub trust_forwarded_for: bool,
    /// Serve the one-time sign-in codes at `GET /api/v1/login-codes/{challenge_id}` (tests only).
    pub expose_login_codes: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LoginSettings {
    pub max_failures_per_account: usize,
    pub max_failures_per_ip: usize,
    pub failure_window_secs: u64,
    pub challenge_ttl_secs: u64,
    pub challenge_max_attempts: u32,
    pub history_limit: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TlsSettings {
    pub enabled: bool,
    pub port: u16,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// A second certificate chain and key (empty: none), of the other key type than `cert_path`'s
    /// (one RSA, one ECDSA); each handshake gets the one its client can use.
    pub alt_cert_path: PathBuf,
    pub alt_key_path: PathBuf,
    pub client_ca_path: PathBuf,
    pub public_url: String,
    /// Offer the static-RSA suites (no forward secrecy) OCPP lists for RSA certificates; served by
    /// OpenSSL, which needs the `openssl-tls` cargo feature.
    pub rsa_key_exchange: bool,
    /// Sessions the listener remembers for resumption by id (0: none).
    pub session_cache_entries: usize,
    /// Resumption by session tickets (state kept by the client, sealed under keys of this node).
    pub session_tickets: bool,
}

impl TlsSettings {
    /// Whether station client certificates can be checked (security profile 3).
    pub fn client_certificates(&self) -> bool {
        self.enabled && !self.client_ca_path.as_os_str().is_empty()
    }

    /// The configured certificate chains and their keys: `cert_path`/`key_path`, then the
    /// `alt_cert_path`/`alt_key_path` pair when it is set. An error says which half of the second
    /// pair is missing.
    pub fn certificate_pairs(&self) -> Result<Vec<(&Path, &Path)>, String> {
        let mut pairs = vec![(self.cert_path.as_path(), self.key_path.as_path())];
        match (self.alt_cert_path.as_os_str().is_empty(), self.alt_key_path.as_os_str().is_empty()) {
            (true, true) => {}
            (false, false) => pairs.push((self.alt_cert_path.as_path(), self.alt_key_path.as_path())),
            (false, true) => return Err("tls.alt_cert_path is set but tls.alt_key_path is empty".into()),
            (true, false) => return Err("tls.alt_key_path is set but tls.alt_cert_path is empty".into()),
        }
        Ok(pairs)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ClusterSettings {
    /// Redis URL of the shared store (several, comma-separated, for the seeds of a Redis Cluster);
    /// empty means a single node with no Redis.
    pub redis_url: String,
    /// Whether `redis_url` names the seed nodes of a Redis Cluster rather than one Redis.
    pub redis_cluster: bool,
    /// Prefix of every Redis key this cluster uses.
    pub key_prefix: String,
    /// Longest wait (milliseconds) for one Redis command before it counts as failed.
    pub redis_timeout_ms: u64,
    /// Transaction ids a node takes from the shared sequence at a time.
    pub transaction_id_block: u32,
}

impl ClusterSettings {
    pub fn enabled(&self) -> bool {
        !self.redis_url.is_empty()
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// The Redis deployment `redis_url` and `redis_cluster` name; an error says what is wrong with
    /// them.
    pub fn redis_target(&self) -> Result<RedisTarget, String> {
        if self.key_prefix.contains(['{', '}']) {
            // A brace in the prefix would become every key's hash tag: one slot for all.
            return Err(format!("cluster.key_prefix {:?} may not hold '{{' or '}}'", self.key_prefix));
        }
        RedisTarget::parse(&self.redis_url, self.redis_cluster)
    }

    /// `redis_url` with any password shown as `***`, for logs and errors.
    pub fn redacted_redis_url(&self) -> String {
        self.redis_url.split(',').map(|u| redact_url_password(u.trim())).collect::<Vec<_>>().join(",")
    }
}

/// Bounds on what outsiders' input may consume (`[limits]`; see `config/default.toml`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LimitSettings {
    pub outbound_queue_bytes: usize,
    pub slow_consumer_secs: u64,
    pub replay_cache_bytes: usize,
    pub waiting_commands: usize,
    pub station_messages_per_sec: f64,
    pub station_message_burst: u32,
    pub station_event_bytes: u64,
    pub station_event_window_secs: u64,
    pub station_reconnects: u32,
    pub station_reconnect_window_secs: u64,
    pub header_timeout_ms: u64,
    pub body_timeout_secs: u64,
    pub keep_alive_secs: u64,
    pub unauthenticated_connections_per_address: u32,
    pub refusal_delay_ms: u64,
    pub held_refusals: usize,
    pub max_connections: usize,
    pub fd_reserve: u64,
    pub auth_failures_per_station: u32,
    pub auth_failures_per_address: u32,
    pub auth_failure_window_secs: u64,
    pub auth_backoff_max_secs: u64,
    pub auth_queue: usize,
    pub signups_per_address: u32,
    pub signup_window_secs: u64,
    pub stations_per_tenant: usize,
    pub session_warnings: u32,
    pub site_warnings: u32,
    pub log_summary_secs: u64,
    pub api_body_bytes: usize,
    pub list_scan_records: usize,
    pub exports_per_tenant: usize,
    /// Event streams (`GET /api/v1/events`) open on this node at once; more are refused (503).
    pub event_streams: usize,
    /// Event streams one tenant holds open on this node at once; more are refused (429).
    pub event_streams_per_tenant: usize,
}

impl LimitSettings {
    pub fn slow_consumer(&self) -> Duration {
        Duration::from_secs(self.slow_consumer_secs.max(1))
    }
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms.max(1))
    }
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_secs.max(1))
    }
    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.keep_alive_secs)
    }
    pub fn refusal_delay(&self) -> Duration {
        Duration::from_millis(self.refusal_delay_ms)
    }
}

/// The tenants' live event streams (`GET /api/v1/events`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct EventSettings {
    /// A stream whose client has not taken what was sent within this many seconds is cut off (it
    /// resumes with `Last-Event-ID`).
    pub send_timeout_secs: u64,
    /// Seconds between two comment lines on an idle stream, so proxies keep it open.
    pub keepalive_secs: u64,
    /// Milliseconds between two looks at the feed when nothing woke the stream (events appended on
    /// another node of a cluster wake no one here).
    pub poll_interval_ms: u64,
    /// Events read from the store at a time.
    pub batch: usize,
}

impl EventSettings {
    pub fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.send_timeout_secs.max(1))
    }
    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(self.keepalive_secs.max(1))
    }
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(10))
    }
}

/// Delivery of tenants' events to their webhooks.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WebhookSettings {
    /// Webhooks one tenant may have.
    pub max_per_account: usize,
    /// Deliver to private, loopback and link-local addresses too (tests, on-premise receivers).
    /// Off, such destinations are refused when the webhook is created and when it is delivered to.
    pub allow_private_destinations: bool,
    /// Seconds a receiver has to answer a delivery.
    pub timeout_secs: u64,
    /// First wait before a failed delivery is tried again (milliseconds); it doubles, with jitter.
    pub retry_min_ms: u64,
    /// Longest wait between two attempts (seconds).
    pub retry_max_secs: u64,
    /// Seconds an event's delivery is retried before the webhook is disabled (and the tenant told,
    /// with a `webhook.disabled` event); enabling it again resumes with that event.
    pub retry_for_secs: u64,
    /// Entries kept in each webhook's delivery log.
    pub delivery_log: usize,
}

impl WebhookSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }
    pub fn retry_min(&self) -> Duration {
        Duration::from_millis(self.retry_min_ms.max(1))
    }
    pub fn retry_max(&self) -> Duration {
        Duration::from_secs(self.retry_max_secs.max(1))
    }
    pub fn retry_for(&self) -> Duration {
        Duration::from_secs(self.retry_for_secs)
    }
}

/// How long each kind of data is kept unless a tenant sets its own period, and how the pruner
/// removes what is older.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RetentionSettings {
    /// Days; 0 keeps that kind without a period.
    pub meter_values_days: u32,
    pub station_events_days: u32,
    pub login_history_days: u32,
    pub finished_commands_days: u32,
    pub finished_transactions_days: u32,
    /// Seconds between the starts of two passes over every account.
    pub interval_secs: u64,
    /// Records one step looks at, at most.
    pub batch: usize,
    /// Pause between two steps (milliseconds), so a pass never holds the store for long.
    pub pause_ms: u64,
}

impl RetentionSettings {
    /// The node's default period of each kind.
    pub fn defaults(&self) -> crate::model::RetentionPeriods {
        let days = |d: u32| (d > 0).then_some(d);
        crate::model::RetentionPeriods {
            meter_values: days(self.meter_values_days),
            station_events: days(self.station_events_days),
            login_history: days(self.login_history_days),
            finished_commands: days(self.finished_commands_days),
            finished_transactions: days(self.finished_transactions_days),
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs.max(1))
    }

    pub fn pause(&self) -> Duration {
        Duration::from_millis(self.pause_ms)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AccountSettings {
    pub idle_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Settings {
    /// Loads the layers: defaults, then `file` when given, then the process's environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, SettingsError> {
        Self::load_from(file, std::env::vars())
    }

    /// [`Settings::load`] with the environment given (tests pass their own).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, SettingsError> {
        let env: HashMap<String, String> = env.into_iter().filter(|(name, _)| env_key(name).is_some()).collect();
        let mut builder =
            config::Config::builder().add_source(config::File::from_str(DEFAULT_CONFIG, config::FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        let layered = builder
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator(ENV_SEPARATOR)
                    .separator(ENV_SEPARATOR)
                    .try_parsing(true)
                    .source(Some(env.clone())),
            )
            .build()?;
        let mut ignored = Vec::new();
        let mut settings: Settings = serde_ignored::deserialize(layered, |path| ignored.push(path.to_string()))?;
        if !ignored.is_empty() {
            let known = known_keys();
            let unknown = ignored
                .into_iter()
                .map(|key| {
                    // The variable that set it, if one did: its key is the ignored one or lies under it.
                    let variable = env
                        .keys()
                        .filter(|name| env_key(name).is_some_and(|k| k == key || k.starts_with(&format!("{key}."))))
                        .min()
                        .cloned();
                    let closest = closest(&key, &known);
                    UnknownKey { key, variable, closest }
                })
                .collect();
            return Err(SettingsError::Unknown { unknown });
        }
        settings.server.host_name = host_name();
        Ok(settings)
    }

    /// The settings as TOML, every key with its effective value; a password in `cluster.redis_url`
    /// is shown as `***` (`ocpp-css check-config`).
    pub fn to_redacted_toml(&self) -> Result<String, toml::ser::Error> {
        let mut shown = self.clone();
        shown.cluster.redis_url = shown.cluster.redacted_redis_url();
        toml::to_string(&shown)
    }
}

/// The settings key an `OCPP_CSS__SECTION__KEY` variable names (`section.key`), or None for
/// another variable.
fn env_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix(ENV_PREFIX)?.strip_prefix(ENV_SEPARATOR)?;
    Some(rest.to_lowercase().replace(ENV_SEPARATOR, "."))
}

/// Every section and key the settings have (`section`, `section.key`): those of the compiled-in
/// defaults, which name them all.
fn known_keys() -> Vec<String> {
    fn walk(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
        for (name, value) in table {
            let key = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            if let toml::Value::Table(inner) = value {
                walk(&key, inner, out);
            }
            out.push(key);
        }
    }
    let mut keys = Vec::new();
    // The defaults are compiled in and parsed by every load before this is reached.
    if let Ok(table) = DEFAULT_CONFIG.parse::<toml::Table>() {
        walk("", &table, &mut keys);
    }
    keys
}

/// The known key most like `key`, when one is close enough to be a likely typo.
fn closest(key: &str, known: &[String]) -> Option<String> {
    known
        .iter()
        .map(|k| (strsim::levenshtein(key, k), k))
        .filter(|(distance, k)| *distance <= (k.len() / 3).max(2))
        .min()
        .map(|(_, k)| k.clone())
}

/// `redis://user:secret@host/0` shown as `redis://user:***@host/0`.
fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((userinfo, host)) = rest.rsplit_once('@') else { return url.to_string() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// A key no setting has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    /// As `section.key` (a whole unknown section as `section`).
    pub key: String,
    /// The `OCPP_CSS__` variable that set it, when one did (else the `--config` file did: the
    /// compiled-in defaults have every key and no other).
    pub variable: Option<String>,
    /// The known key it most likely meant.
    pub closest: Option<String>,
}

impl fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown setting `{}`", self.key)?;
        match &self.variable {
            Some(variable) => write!(f, " (environment variable {variable})")?,
            None => f.write_str(" (in the --config file)")?,
        }
        if let Some(closest) = &self.closest {
            write!(f, "; did you mean `{closest}`?")?;
        }
        Ok(())
    }
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A file that cannot be read or parsed, or a value of the wrong type.
    #[error(transparent)]
    Invalid(#[from] config::ConfigError),
    #[error("{}", unknown.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Unknown { unknown: Vec<UnknownKey> },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_loads() {
        let s = Settings::load(None).expect("default config");
        assert_eq!(s.server.port, 8180);
        assert_eq!(s.ocpp.heartbeat_interval_secs, 300);
        assert_eq!(s.log.format, LogFormat::Text);
        assert!(s.ocpp.auto_accept_stations);
        assert!(!s.api.expose_login_codes && !s.api.trust_forwarded_for && !s.tls.enabled);
    }

    #[test]
    fn a_config_file_overrides_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[ocpp]\nheartbeat_interval_secs = 42\n[log]\nformat = \"json\"\n").unwrap();
        let s = Settings::load(Some(&path)).unwrap();
        assert_eq!(s.ocpp.heartbeat_interval_secs, 42);
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.server.port, 8180, "untouched keys keep their defaults");
    }

    #[test]
    fn the_node_is_named_by_its_setting_or_else_its_host() {
        let mut s = Settings::load(None).expect("default config");
        s.server.node_id = String::new();
        let expected = match host_name() {
            h if h.is_empty() => "ocpp-css".to_string(),
            h => h,
        };
        assert_eq!(s.server.node_id(), expected, "the host name, read when the settings loaded");
        s.server.node_id = "node-a".into();
        assert_eq!(s.server.node_id(), "node-a", "a name set after loading counts");
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn unknown(r: Result<Settings, SettingsError>) -> Vec<UnknownKey> {
        match r {
            Err(SettingsError::Unknown { unknown }) => unknown,
            Err(e) => panic!("another error: {e}"),
            Ok(_) => panic!("an unknown key was accepted"),
        }
    }

    #[test]
    fn variables_set_settings_and_others_are_not_read() {
        let s =
            Settings::load_from(None, env(&[("OCPP_CSS__SERVER__PORT", "8199"), ("OCPP_CSSX", "1"), ("PATH", "/bin")]))
                .unwrap();
        assert_eq!(s.server.port, 8199);
    }

    #[test]
    fn an_unknown_variable_is_an_error_naming_it_and_the_key_it_likely_meant() {
        let found = unknown(Settings::load_from(None, env(&[("OCPP_CSS__SERVER__PORTT", "8199")])));
        assert_eq!(
            found,
            vec![UnknownKey {
                key: "server.portt".into(),
                variable: Some("OCPP_CSS__SERVER__PORTT".into()),
                closest: Some("server.port".into())
            }]
        );
        assert_eq!(
            found[0].to_string(),
            "unknown setting `server.portt` (environment variable OCPP_CSS__SERVER__PORTT); did you mean `server.port`?"
        );
        // A misspelt section would have started a node without Redis.
        let found = unknown(Settings::load_from(None, env(&[("OCPP_CSS__CLUSTR__REDIS_URL", "redis://127.0.0.1/0")])));
        assert_eq!(found[0].key, "clustr");
        assert_eq!(found[0].variable.as_deref(), Some("OCPP_CSS__CLUSTR__REDIS_URL"));
        assert_eq!(found[0].closest.as_deref(), Some("cluster"));
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error_and_a_far_one_gets_no_guess() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[server]\nprot = 8199\n[limits]\nzzzzzzzzzzzzzz = 1\n").unwrap();
        let mut found = unknown(Settings::load_from(Some(&path), env(&[])));
        found.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].key, "limits.zzzzzzzzzzzzzz");
        assert_eq!(found[0].closest, None);
        assert_eq!((found[1].key.as_str(), found[1].closest.as_deref()), ("server.prot", Some("server.port")));
        assert!(found.iter().all(|u| u.variable.is_none() && u.to_string().contains("--config file")));
    }

    #[test]
    fn the_printed_settings_load_back_as_they_were_with_the_redis_password_hidden() {
        let s = Settings::load_from(
            None,
            env(&[
                ("OCPP_CSS__CLUSTER__REDIS_URL", "redis://app:s3cret@127.0.0.1:6379/0"),
                ("OCPP_CSS__SERVER__PORT", "8199"),
            ]),
        )
        .unwrap();
        let shown = s.to_redacted_toml().unwrap();
        assert!(!shown.contains("s3cret") && shown.contains("redis://app:***@127.0.0.1:6379/0"), "{shown}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shown.toml");
        std::fs::write(&path, &shown).unwrap();
        let back = Settings::load_from(Some(&path), env(&[])).expect("check-config's output is a config file");
        assert_eq!(back.to_redacted_toml().unwrap(), shown);
        assert_eq!(redact_url_password("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
        assert_eq!(redact_url_password("redis://:pw@h/0"), "redis://:***@h/0");
    }

    #[test]
    fn the_seeds_of_a_redis_cluster_are_each_shown_without_their_password_and_need_cluster_mode() {
        let seeds = "redis://app:s3cret@10.0.0.1:7000, redis://app:s3cret@10.0.0.2:7000";
        let s = Settings::load_from(
            None,
            env(&[("OCPP_CSS__CLUSTER__REDIS_URL", seeds), ("OCPP_CSS__CLUSTER__REDIS_CLUSTER", "true")]),
        )
        .unwrap();
        let shown = s.to_redacted_toml().unwrap();
        assert!(shown.contains("redis://app:***@10.0.0.1:7000,redis://app:***@10.0.0.2:7000"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(s.cluster.redis_target().is_ok_and(|t| t.is_cluster() && t.urls().len() == 2));
        let mut single = s.cluster.clone();
        single.redis_cluster = false;
        assert!(single.redis_target().unwrap_err().contains("cluster.redis_cluster = true"));
        single.key_prefix = "{tag}".into();
        assert!(single.redis_target().unwrap_err().contains("may not hold"));
    }

    #[test]
    fn the_production_example_loads_with_every_key_known() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/production.example.toml");
        let s = Settings::load_from(Some(&path), env(&[])).expect("config/production.example.toml is valid");
        assert!(s.tls.enabled && s.cluster.enabled() && s.log.format == LogFormat::Json);
        assert_eq!((s.server.host.as_str(), s.server.node_id()), ("0.0.0.0", "ocpp-1"));
        // The unit starts the server with the file the example says to install.
        let unit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ocpp-css.service"))
            .expect("config/ocpp-css.service");
        assert!(unit.contains("ExecStart=/usr/local/bin/ocpp-css serve --config /etc/ocpp-css/ocpp-css.toml"));
    }

    #[test]
    fn the_second_tls_certificate_needs_both_its_paths() {
        let mut tls = Settings::load(None).unwrap().tls;
        (tls.cert_path, tls.key_path) = ("a.pem".into(), "a.key".into());
        assert_eq!(tls.certificate_pairs(), Ok(vec![(Path::new("a.pem"), Path::new("a.key"))]));
        tls.alt_cert_path = "b.pem".into();
        assert_eq!(tls.certificate_pairs(), Err("tls.alt_cert_path is set but tls.alt_key_path is empty".into()));
        tls.alt_key_path = "b.key".into();
        let pairs = tls.certificate_pairs().unwrap();
        assert_eq!(pairs[1], (Path::new("b.pem"), Path::new("b.key")));
        assert!(!tls.rsa_key_exchange, "static RSA is off by default");
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        assert!(Settings::load(Some(Path::new("/nonexistent/ocpp-css.toml"))).is_err());
    }
}
