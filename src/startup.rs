//! Builds the application: store, registries, HTTP server bound to its listener (port 0 works;
//! [`Application::port`] tells the port chosen).

use crate::actors::station_registry::{NoPresence, StationRegistry};
use crate::actors::tracker::SessionTracker;
use crate::actors::AccountRegistry;
use crate::api::middleware::{self, RequestLimits};
use crate::api::{self, ApiError};
use crate::cluster::{Bus, LocalNode, PresenceTable, RedisLink};
use crate::config::Settings;
use crate::fleet::node::ThisNode;
use crate::fleet::{Fleet, LocalFleet};
use crate::ids::AccountId;
use crate::limits::connections::ConnectionTable;
use crate::limits::{self, Limits};
use crate::login::{LogNotifier, LoginGuard};
use crate::metrics as m;
use crate::ocpp::context::HandlerSettings;
use crate::state::{AppState, Mode};
use crate::store::{AccountStore, NodeLog, NodeLogSettings, RedisStore, SledStore, StationStore};
use crate::{tls, ws};
use actix::prelude::*;
use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse};
use anyhow::Context as _;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where one node keeps its write-ahead log, inside the data directory.
pub const NODE_LOG_DIR: &str = "station-log";

/// What a new connection's data gets (its TLS peer, its place in the connection table).
type OnConnect = Arc<dyn Fn(&dyn std::any::Any, &mut actix_web::dev::Extensions) + Send + Sync>;

/// What every listener's HTTP service shares.
#[derive(Clone)]
struct HttpSetup {
    keep_alive: Duration,
    shutdown: actix_server::GracefulShutdownSignal,
    on_connect: OnConnect,
}

/// One listener's HTTP/1 service over sockets of type `$io`: the application `$app` serves every
/// request, and a WebSocket upgrade request is served by [`ws::upgraded`], which hands a station's
/// socket to its session. What actix-web's `HttpServer` would build, plus the upgrade (a macro:
/// the service's type cannot be named).
macro_rules! http_service {
    ($app:expr, $setup:expr, $secure:expr, $addr:expr, $io:ty) => {{
        use actix_service::{
            fn_factory, fn_service, map_config, IntoServiceFactory as _, ServiceFactory as _, ServiceFactoryExt as _,
        };
        let (app, setup, secure, addr) = ($app.clone(), $setup.clone(), $secure, $addr);
        let shutdown = setup.shutdown.clone();
        let on_connect = setup.on_connect.clone();
        // `AppConfig::new` is crate-private; this is the constructor actix's own test server uses.
        let config = move || actix_web::dev::AppConfig::__priv_test_new(secure, addr.to_string(), addr);
        let upgrade_app = app.clone();
        actix_http::HttpService::<$io, _, _>::build()
            .graceful_shutdown_signal(move || {
                let signal = shutdown.clone();
                async move { signal.notified().await }
            })
            .keep_alive(setup.keep_alive)
            // Headers are timed by the connection table's reaper, for every request (actix's own
            // timer covers only a connection's first).
            .client_request_timeout(Duration::ZERO)
            .client_disconnect_timeout(Duration::from_secs(1))
            .local_addr(addr)
            .on_connect_ext(move |io: &$io, data: &mut actix_web::dev::Extensions| (on_connect)(io, data))
            .upgrade(fn_factory(move || {
                let factory = upgrade_app().into_factory();
                async move {
                    let app = std::rc::Rc::new(factory.new_service(config()).await?);
                    Ok::<_, ()>(fn_service(move |(req, framed)| ws::upgraded(app.clone(), req, framed)))
                }
            }))
            .finish(map_config(app().into_factory().map_err(|err| err.error_response()), move |_| config()))
    }};
}

/// A built, bound, not yet running application.
pub struct Application {
    port: u16,
    tls_port: Option<u16>,
    server: Server,
    fleet: Fleet,
    station_store: Arc<dyn StationStore>,
    shutdown_timeout: Duration,
    sessions: Arc<SessionTracker>,
    mode: Mode,
    /// The retention pass, stopped with the application.
    _retention: AbortOnDrop,
    /// The webhook dispatcher, stopped with the application.
    _webhooks: AbortOnDrop,
}

/// Stops a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Application {
    /// Opens the embedded store in the configured data directory and builds on it; in cluster mode
    /// (`cluster.redis_url` set) the embedded store becomes this node's write-ahead log in front of
    /// the shared store in Redis.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        // The recorder first, so what the stores report while opening is kept.
        m::handle(settings.server.node_id());
        let dir = &settings.storage.data_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
        let local = SledStore::open(dir, settings.storage.commit_policy())
            .with_context(|| format!("opening the store in {}", dir.display()))?;
        if !settings.cluster.enabled() {
            // One node: the store of record, behind a write-ahead log of its own in a subdirectory.
            let main = Arc::new(local);
            let log_dir = dir.join(NODE_LOG_DIR);
            let log_store = SledStore::open(&log_dir, settings.storage.commit_policy())
                .with_context(|| format!("opening the node's log in {}", log_dir.display()))?;
            let log = NodeLog::open(
                log_store,
                main.clone(),
                NodeLogSettings {
                    node_id: settings.server.node_id().to_string(),
                    ..NodeLogSettings::single(&settings.cluster)
                },
            )
            .context("opening the node's log")?;
            let mode = Mode::Single { log: log.clone() };
            return Self::build_with_store(settings, Arc::new(log), main, mode).await;
        }
        if settings.server.node_id.is_empty() {
            anyhow::bail!("cluster mode (cluster.redis_url) needs server.node_id: a name unique to each node");
        }
        // Lazily: a node starts while Redis is down, and serves the stations it knows from its own
        // copies, their messages waiting in its write-ahead log.
        let target = settings.cluster.redis_target().map_err(anyhow::Error::msg)?;
        let redis = RedisStore::connect_lazy(&target, &settings.cluster.key_prefix, settings.cluster.redis_timeout())
            .await
            .with_context(|| format!("configuring Redis at {}", settings.cluster.redacted_redis_url()))?;
        let redis = Arc::new(redis);
        let wal = NodeLog::open(
            local,
            redis.clone(),
            NodeLogSettings {
                node_id: settings.server.node_id().to_string(),
                ..NodeLogSettings::from(&settings.cluster)
            },
        )
        .context("opening the write-ahead log")?;
        tracing::info!(node = %settings.server.node_id(), redis = %settings.cluster.redacted_redis_url(), pending = wal.pending(), "cluster mode");
        Self::build_with_store(settings, Arc::new(wal.clone()), redis, Mode::Cluster { wal }).await
    }

    /// Builds on given stores, in dependency order: the presence the registry reports to, the
    /// registry, the fleet over it, and in cluster mode the bus that hands other nodes' requests to
    /// this node's fleet. Must run inside an actix system (the registries are actors).
    pub async fn build_with_store(
        settings: Settings,
        station_store: Arc<dyn StationStore>,
        account_store: Arc<dyn AccountStore>,
        mode: Mode,
    ) -> anyhow::Result<Application> {
        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let backlog = settings.server.backlog;
        let listener = bind(&address, backlog).with_context(|| format!("binding {address}"))?;
        let port = listener.local_addr()?.port();
        let tls = if settings.tls.enabled {
            let config = tls::listener(&settings.tls).context("configuring TLS")?;
            let address = format!("{}:{}", settings.server.host, settings.tls.port);
            let listener = bind(&address, backlog).with_context(|| format!("binding {address} (TLS)"))?;
            Some((listener, config))
        } else {
            None
        };
        let tls_port = tls.as_ref().map(|(l, _)| l.local_addr().map(|a| a.port())).transpose()?;
        match account_store.queued_command_count().await {
            Ok(queued) => metrics::gauge!(m::QUEUED_COMMANDS).set(queued as f64),
            // Cluster mode with Redis down: the gauge starts from what this node queues.
            Err(crate::store::StoreError::Unavailable(e)) => {
                tracing::warn!(error = %e, "cannot count the queued commands now")
            }
            Err(e) => return Err(e).context("counting queued commands"),
        }
        let fleet = build_fleet(&settings, &mode, &station_store, &account_store)?;
        let sessions = Arc::new(SessionTracker::new());
        let accounts = AccountRegistry::new(Duration::from_secs(settings.accounts.idle_secs)).start();
        let ca = &settings.station_ca;
        let station_ca = if ca.enabled() {
            let validity = chrono::Duration::days(i64::from(ca.validity_days.max(1)));
            let loaded = crate::ca::StationCa::load(&ca.cert_path, &ca.key_path, validity)
                .context("loading the station CA ([station_ca])")?;
            Some(Arc::new(loaded))
        } else {
            None
        };
        let handler_settings = Arc::new(HandlerSettings {
            heartbeat_interval: Duration::from_secs(settings.ocpp.heartbeat_interval_secs),
            boot_retry_interval: Duration::from_secs(settings.ocpp.boot_retry_interval_secs),
            password_grace_secs: settings.ocpp.password_grace_secs,
            renew_before: (station_ca.is_some() && ca.renew_before_days > 0)
                .then(|| chrono::Duration::days(i64::from(ca.renew_before_days))),
            renewal_check: Duration::from_secs(ca.renewal_check_secs.max(1)),
            station_ca,
        });
        limits::register_metrics();
        crate::ws::register_metrics();
        crate::actors::session::register_metrics();
        crate::actors::account::register_metrics();
        crate::api::middleware::register_metrics();
        crate::api::events::register_metrics();
        limits::logs::set_per_site_per_minute(settings.limits.site_warnings);
        let capacity = match settings.limits.max_connections {
            0 => ConnectionTable::capacity_for_fd_limit(settings.limits.fd_reserve),
            n => n,
        };
        let limits = Arc::new(Limits::new(&settings.limits, capacity));
        limits.connections.start_reaper();
        tracing::info!(capacity, "connection capacity");
        let connections = limits.connections.clone();
        let request_limits = RequestLimits {
            body_timeout: settings.limits.body_timeout(),
            refusal_delay: settings.limits.refusal_delay(),
        };
        let retention = AbortOnDrop(crate::retention::spawn(
            account_store.clone(),
            settings.retention.clone(),
            settings.server.node_id().to_string(),
        ));
        let webhooks = AbortOnDrop(
            crate::webhooks::dispatch::spawn(
                account_store.clone(),
                settings.webhooks.clone(),
                account_store.feed_signal(),
                settings.server.node_id().to_string(),
                settings.events.poll_interval(),
            )
            .context("starting the webhook dispatcher")?,
        );
        let state = web::Data::new(AppState {
            feed_signal: account_store.feed_signal(),
            limits,
            sessions: sessions.clone(),
            credentials: crate::auth::CredentialCache::default(),
            station_store: station_store.clone(),
            account_store,
            settings: Arc::new(settings.clone()),
            fleet: fleet.clone(),
            accounts,
            handler_settings,
            metrics: m::handle(settings.server.node_id()),
            login: Arc::new(LoginGuard::new(settings.login.clone())),
            notifier: Arc::new(LogNotifier),
            tls_port,
            mode: mode.clone(),
        });
        let expose_login_codes = settings.api.expose_login_codes;
        let api_body_bytes = settings.limits.api_body_bytes;
        let app = move || {
            App::new()
                .app_data(state.clone())
                .wrap_fn(move |req, srv| middleware::around(request_limits, req, srv))
                .route(HEALTHZ, web::get().to(healthz))
                .route(READYZ, web::get().to(readyz))
                .route(METRICS, web::get().to(metrics_endpoint))
                .route("/ocpp/{tenant}/{station_id}", web::get().to(ws::ocpp_endpoint))
                .service(web::scope("/api/v1").configure(|cfg| api::configure(cfg, expose_login_codes, api_body_bytes)))
                .default_service(web::to(|| async {
                    Err::<HttpResponse, ApiError>(ApiError::NotFound("no such route".into()))
                }))
        };
        let mut builder = actix_server::Server::build()
            .backlog(settings.server.backlog)
            .max_concurrent_connections(settings.server.max_connections_per_worker)
            .shutdown_timeout(settings.ocpp.shutdown_timeout_secs)
            // Signals are handled by `run_until_stopped`, which closes the station sessions first.
            .disable_signals();
        if settings.server.workers > 0 {
            builder = builder.workers(settings.server.workers);
        }
        let http = HttpSetup {
            keep_alive: settings.limits.keep_alive(),
            shutdown: builder.graceful_shutdown_signal(),
            on_connect: Arc::new(move |conn: &dyn std::any::Any, data: &mut actix_web::dev::Extensions| {
                tls::on_connect(conn, data);
                connections.on_connect(conn, data);
            }),
        };
        let plain = listener.local_addr()?;
        let (setup, plain_app) = (http.clone(), app.clone());
        builder = builder.listen("ocpp-css", listener, move || {
            http_service!(plain_app, setup, false, plain, actix_web::rt::net::TcpStream).tcp()
        })?;
        if let Some((listener, config)) = tls {
            let secure = listener.local_addr()?;
            let setup = http.clone();
            builder = match config {
                tls::Listener::Rustls(config) => builder.listen("ocpp-css-tls", listener, move || {
                    http_service!(
                        app,
                        setup,
                        true,
                        secure,
                        actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>
                    )
                    .rustls_0_23_with_config((*config).clone(), actix_http::TlsAcceptorConfig::default())
                })?,
                #[cfg(feature = "openssl-tls")]
                tls::Listener::OpenSsl(acceptor) => {
                    tracing::info!("TLS listener served by OpenSSL (tls.rsa_key_exchange)");
                    builder.listen("ocpp-css-tls", listener, move || {
                        http_service!(app, setup, true, secure, tls::OpenSslTls)
                            .openssl_with_config(acceptor.clone(), actix_http::TlsAcceptorConfig::default())
                    })?
                }
            };
        }
        tracing::info!(address = %address, port, tls_port, "listening");
        let shutdown_timeout = Duration::from_secs(settings.ocpp.shutdown_timeout_secs);
        Ok(Application {
            port,
            tls_port,
            server: builder.run(),
            fleet,
            station_store,
            shutdown_timeout,
            sessions,
            mode,
            _retention: retention,
            _webhooks: webhooks,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS listener's port, when `tls.enabled`.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// Serves until the process is told to stop (SIGTERM or SIGINT), then shuts down gracefully:
    /// stops accepting connections, lets every session finish the message it is handling and closes
    /// it with close code 1012 (service restart), flushes the store, and stops the workers.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let (fleet, store, timeout) = (self.fleet.clone(), self.station_store.clone(), self.shutdown_timeout);
        let (sessions, mode) = (self.sessions.clone(), self.mode.clone());
        actix_rt::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: no new connections, closing station sessions");
            // No session starts from now on (a station connecting is refused with 503)...
            sessions.close();
            handle.pause().await;
            let deadline = Instant::now() + timeout;
            // ...those live are closed, and one that registers late is closed at once by the
            // registry; every session holds a guard of `sessions` until it is gone.
            let closed = fleet.close_all().await;
            if !sessions.close_and_wait(timeout).await {
                tracing::warn!("station sessions still closing at the shutdown timeout");
            }
            tracing::info!(sessions = closed, "station sessions closed");
            fleet.release_presence().await;
            if let Err(e) = store.flush().await {
                tracing::error!(error = %e, "final flush failed");
            }
            // What is still in the write-ahead log is safe on disk and drains at the next start;
            // while the store of record answers, give it the rest of the shutdown time to drain now.
            let wal = mode.log();
            let pending = wal.drain_until(deadline.into()).await;
            tracing::info!(pending, "write-ahead log at shutdown");
            wal.shutdown().await;
            handle.stop(true).await;
        });
        self.server.await
    }
}

/// The fleet of this node, built in dependency order: the presence the registry reports to, the
/// registry, and in cluster mode the bus that hands other nodes' requests to this node.
fn build_fleet(
    settings: &Settings,
    mode: &Mode,
    station_store: &Arc<dyn StationStore>,
    account_store: &Arc<dyn AccountStore>,
) -> anyhow::Result<Fleet> {
    let node_id = settings.server.node_id().to_string();
    match mode {
        Mode::Single { .. } => {
            let registry = StationRegistry::new(Arc::new(NoPresence)).start();
            Ok(Fleet::single(node_id, LocalFleet::new(registry)))
        }
        Mode::Cluster { .. } => {
            let link = RedisLink::new(&settings.cluster, node_id).context("configuring the cluster")?;
            let presence_ttl = Duration::from_secs(2 * settings.ocpp.ping_interval_secs.max(1));
            let presence = PresenceTable::new(link.clone(), presence_ttl);
            let registry = StationRegistry::new(Arc::new(presence.clone())).start();
            let local = LocalFleet::new(registry);
            let node: Arc<dyn LocalNode> = Arc::new(ThisNode {
                local: local.clone(),
                station_store: station_store.clone(),
                account_store: account_store.clone(),
            });
            let bus = Bus::start(link, node.clone());
            presence.start(node);
            Ok(Fleet::clustered(local, presence, bus))
        }
    }
}

/// A listening socket with the configured backlog. (`std::net::TcpListener::bind` always asks for
/// 128, too few for a reconnect storm: the kernel drops the overflow and clients retry a second later.)
fn bind(address: &str, backlog: u32) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    use std::net::ToSocketAddrs;
    let addr = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "address resolves to nothing"))?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The probe and scrape paths, outside the API (and not counted as API requests).
const HEALTHZ: &str = "/healthz";
const READYZ: &str = "/readyz";
const METRICS: &str = "/metrics";
pub(crate) const PROBES: [&str; 3] = [HEALTHZ, READYZ, METRICS];

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Ready when the store answers. In cluster mode a node serves its stations while Redis is down
/// (their messages wait in its write-ahead log), so it stays ready and says how Redis is: asked at
/// each probe (within `cluster.redis_timeout_ms`), not as last found by the node's own traffic.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let probe = state.account_store.account(&AccountId::from("readiness-probe")).await;
    if let Mode::Cluster { wal } = &state.mode {
        return HttpResponse::Ok().json(serde_json::json!({
            "status": "ready",
            "redis": if probe.is_ok() { "up" } else { "down" },
            "wal_pending": wal.pending(),
        }));
    }
    match probe {
        Ok(_) => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
        Err(e) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"code": "store_unavailable", "message": e.to_string()})),
    }
}

async fn metrics_endpoint(state: web::Data<AppState>) -> HttpResponse {
    if let Mode::Cluster { .. } = state.mode {
        // Cluster mode: the queue is the cluster's, shared in Redis; what this node added and sent
        // would not add up to it.
        if let Ok(queued) = state.account_store.queued_command_count().await {
            metrics::gauge!(m::QUEUED_COMMANDS).set(queued as f64);
        }
    }
    match state.account_store.oldest_queued_command().await {
        Ok(oldest) => {
            let age = oldest.map(|t| (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0);
            metrics::gauge!(m::QUEUED_OLDEST_AGE).set(age.unwrap_or(0.0));
        }
        Err(e) => tracing::warn!(error = %e, "could not read the command queue for metrics"),
    }
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(m::render(&state.metrics))
}
