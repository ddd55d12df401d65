//! What every request handler shares ([`AppState`]), built once by [`crate::startup`], and how
//! this node is deployed ([`Mode`]).

use crate::actors::tracker::SessionTracker;
use crate::actors::AccountRegistry;
use crate::config::Settings;
use crate::fleet::Fleet;
use crate::limits::Limits;
use crate::login::{LoginGuard, LoginNotifier};
use crate::ocpp::context::HandlerSettings;
use crate::store::{AccountStore, NodeLog, StationStore};
use actix::Addr;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

/// How this node is deployed.
#[derive(Clone)]
pub enum Mode {
    /// One node: the embedded store is the system of record; `log` is the node's write-ahead log in
    /// front of it (and the station path's store).
    Single { log: NodeLog },
    /// A node of a cluster: `wal` is its write-ahead log in front of the shared store in Redis
    /// (and the station path's store).
    Cluster { wal: NodeLog },
}

/// How long a tenant's request waits for this node's log to catch up before it is served anyway.
/// The log drains in milliseconds; only a failing store of record keeps it waiting this long.
const CATCH_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Mode {
    /// This node's write-ahead log.
    pub fn log(&self) -> &NodeLog {
        match self {
            Mode::Single { log } | Mode::Cluster { wal: log } => log,
        }
    }

    /// On one node, waits until what stations were acknowledged for before now is in the store of
    /// record, so a tenant's request sees it (at most [`CATCH_UP_WAIT`]). A cluster makes no such
    /// promise: the request may be served by another node than the station's.
    pub async fn caught_up(&self) {
        if let Mode::Single { log } = self {
            if !log.caught_up(tokio::time::Instant::now() + CATCH_UP_WAIT).await {
                tracing::warn!(pending = log.pending(), "answering a request before the node's log caught up with it");
            }
        }
    }
}

/// What every request handler shares.
pub struct AppState {
    /// What the station path writes through (the node's write-ahead log in cluster mode).
    pub station_store: Arc<dyn StationStore>,
    /// The API's records, durable when a call returns (Redis itself in cluster mode).
    pub account_store: Arc<dyn AccountStore>,
    pub settings: Arc<Settings>,
    /// Reaches stations wherever they are connected.
    pub fleet: Fleet,
    pub accounts: Addr<AccountRegistry>,
    pub handler_settings: Arc<HandlerSettings>,
    pub metrics: PrometheusHandle,
    /// Every live session holds one of its guards; closed when shutdown begins, and then station
    /// connections still being accepted are refused (503), so a reconnect storm cannot outlive it.
    pub sessions: Arc<SessionTracker>,
    /// Station passwords already checked with argon2 (see [`crate::auth::CredentialCache`]).
    pub credentials: crate::auth::CredentialCache,
    /// Failed sign-in counts and pending new-location challenges.
    pub login: Arc<LoginGuard>,
    /// Delivers new-location codes to account holders.
    pub notifier: Arc<dyn LoginNotifier>,
    /// The TLS listener's bound port, when it is enabled.
    pub tls_port: Option<u16>,
    /// One node, or a node of a cluster (with its write-ahead log).
    pub mode: Mode,
    /// Bounds on what outsiders' input may consume, and their per-key counts.
    pub limits: Arc<Limits>,
    /// Wakes this node's event streams when the account store appends to a feed.
    pub feed_signal: Arc<crate::store::FeedSignal>,
}
