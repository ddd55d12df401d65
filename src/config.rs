//! Layered settings: `config/default.toml` (compiled in), then the file given by `--config`, then
//! `OCPP_CSS__SECTION__KEY` environment variables.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The commented default configuration, the first layer of every configuration.
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub ocpp: OcppSettings,
    pub commands: CommandSettings,
    pub api: ApiSettings,
    pub accounts: AccountSettings,
    pub login: LoginSettings,
    pub tls: TlsSettings,
    pub cluster: ClusterSettings,
    pub limits: LimitSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
pub struct CommandSettings {
    pub queue_ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
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
}

impl OcppSettings {
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiSettings {
    pub token_ttl_secs: u64,
    /// Take the client address from the last `X-Forwarded-For` entry (set by a proxy in front).
    pub trust_forwarded_for: bool,
    /// Serve the one-time sign-in codes at `GET /api/v1/login-codes/{challenge_id}` (tests only).
    pub expose_login_codes: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LoginSettings {
    pub max_failures_per_account: usize,
    pub max_failures_per_ip: usize,
    pub failure_window_secs: u64,
    pub challenge_ttl_secs: u64,
    pub challenge_max_attempts: u32,
    pub history_limit: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TlsSettings {
    pub enabled: bool,
    pub port: u16,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub client_ca_path: PathBuf,
    pub public_url: String,
}

impl TlsSettings {
    /// Whether station client certificates can be checked (security profile 3).
    pub fn client_certificates(&self) -> bool {
        self.enabled && !self.client_ca_path.as_os_str().is_empty()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClusterSettings {
    /// Redis URL of the shared store; empty means a single node with no Redis.
    pub redis_url: String,
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
}

/// Bounds on what outsiders' input may consume (`[limits]`; see `config/default.toml`).
#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
pub struct AccountSettings {
    pub idle_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Settings {
    /// Loads the layers: defaults, then `file` when given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, config::ConfigError> {
        let mut builder =
            config::Config::builder().add_source(config::File::from_str(DEFAULT_CONFIG, config::FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        builder
            .add_source(
                config::Environment::with_prefix("OCPP_CSS").prefix_separator("__").separator("__").try_parsing(true),
            )
            .build()?
            .try_deserialize()
            .map(|mut settings: Settings| {
                settings.server.host_name = host_name();
                settings
            })
    }
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

    #[test]
    fn a_missing_config_file_is_an_error() {
        assert!(Settings::load(Some(Path::new("/nonexistent/ocpp-css.toml"))).is_err());
    }
}
