//! The station endpoint `GET /ocpp/{tenant}/{station_id}`: subprotocol negotiation, authentication by
//! the station's OCPP security profile, then a [`StationSession`] for the connection.
//!
//! | profile | channel | credentials |
//! |---|---|---|
//! | 1 | plain or TLS | HTTP Basic: station id and password |
//! | 2 | TLS only | HTTP Basic |
//! | 3 | TLS only | a client certificate (verified in the handshake) whose subject CN is the station id and O the tenant's slug |
//!
//! The password may be the current one, the one a rotation replaced while its grace window lasts,
//! or one the station was told and has not been recorded as accepting; connecting with that one
//! makes it current ([`crate::model::Station::password_hashes`]).
//!
//! What an attempt may cost is bounded ([`crate::limits`]): a password check that needs argon2
//! (one not verified before) is refused with 429 while its station or client address is backing
//! off after failures, and waits behind clean attempts; an accepted station reconnecting more often
//! than its window allows is refused with 429; the connection's bytes pass a [`FrameGuard`] that
//! refuses an oversized message by its header.
//!
//! actix-http hands every WebSocket upgrade request to [`upgraded`] with its connection; the
//! application still answers it (middleware, routing, [`ocpp_endpoint`]), and a station's 101 then
//! takes the socket away from the HTTP connection to its session's task. A station costs one task,
//! its session's, and no HTTP dispatcher for the life of its connection.

use crate::actors::session::socket::{self, SocketKeep, StationIo};
use crate::actors::session::SessionSetup;
use crate::actors::{StationKey, StationSession};
use crate::auth;
use crate::ids::StationId;
use crate::limits::connections::{AddressKey, Connection};
use crate::limits::frames::FrameGuard;
use crate::limits::{self, Limit};
use crate::metrics as m;
use crate::model::{PasswordSlot, SecurityProfile};
use crate::ocpp::Version;
use crate::state::AppState;
use crate::tls::{client_identity, TlsConnection};
use actix_codec::{AsyncRead, AsyncWrite, Framed};
use actix_http::body::{BodySize, MessageBody};
use actix_http::{h1, ConnectionType, Request};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::web::BytesMut;
use actix_web::{web, HttpMessage as _, HttpRequest, HttpResponse};
use base64::Engine;
use futures_util::SinkExt as _;
use serde_json::json;
use std::rc::Rc;
use std::time::Duration;

/// Why a connection was refused; the `reason` label of the auth-failure counter.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    UnsupportedSubprotocol,
    MissingCredentials,
    UnknownTenant,
    UnknownStation,
    BadPassword,
    /// A profile 2 or 3 station over a plain connection.
    TlsRequired,
    /// A profile 3 station without a client certificate.
    ClientCertRequired,
    /// A profile 3 station whose certificate names another station or tenant.
    ClientCertMismatch,
}

impl Refusal {
    const ALL: [Refusal; 8] = [
        Refusal::UnsupportedSubprotocol,
        Refusal::MissingCredentials,
        Refusal::UnknownTenant,
        Refusal::UnknownStation,
        Refusal::BadPassword,
        Refusal::TlsRequired,
        Refusal::ClientCertRequired,
        Refusal::ClientCertMismatch,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Refusal::UnsupportedSubprotocol => "unsupported_subprotocol",
            Refusal::MissingCredentials => "missing_credentials",
            Refusal::UnknownTenant => "unknown_tenant",
            Refusal::UnknownStation => "unknown_station",
            Refusal::BadPassword => "bad_password",
            Refusal::TlsRequired => "tls_required",
            Refusal::ClientCertRequired => "client_cert_required",
            Refusal::ClientCertMismatch => "client_cert_mismatch",
        }
    }
}

/// Registers the refusal counter of every reason at zero, so that a fresh node already exports it.
pub fn register_metrics() {
    for reason in Refusal::ALL {
        metrics::counter!(m::AUTH_FAILURES, "reason" => reason.as_str()).increment(0);
    }
}

fn refuse(state: &AppState, req: &HttpRequest, reason: Refusal, offered: &[String]) -> HttpResponse {
    metrics::counter!(m::AUTH_FAILURES, "reason" => reason.as_str()).increment(1);
    if state.limits.refusals_log.allow() {
        let peer = req.connection_info().peer_addr().unwrap_or("unknown").to_string();
        tracing::warn!(path = %req.path(), %peer, reason = reason.as_str(), "station connection refused");
    }
    match reason {
        Refusal::UnsupportedSubprotocol => HttpResponse::BadRequest().json(json!({
            "code": "unsupported_subprotocol",
            "message": format!(
                "offered subprotocols {offered:?}; this server speaks {:?}",
                Version::ALL.map(Version::subprotocol)
            ),
        })),
        // One answer for every credential problem, so a caller cannot probe which stations exist.
        _ => HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"ocpp-css\", charset=\"UTF-8\""))
            .json(json!({"code": "unauthorized", "message": "station authentication failed"})),
    }
}

/// The subprotocols the client offered, trimmed, in its order.
fn offered_subprotocols(req: &HttpRequest) -> Vec<String> {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// 429 with Retry-After: a limit says "not now" (`code` tells which).
fn too_many(limit: Limit, code: &str, message: &str, wait: Duration) -> HttpResponse {
    limits::hit(limit);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HttpResponse::TooManyRequests()
        .insert_header((header::RETRY_AFTER, secs.max(1).to_string()))
        .json(json!({"code": code, "message": message, "details": {"retry_after_secs": secs.max(1)}}))
}

fn too_many_reconnects(wait: Duration) -> HttpResponse {
    too_many(
        Limit::Reconnects,
        "too_many_reconnects",
        "this station reconnects too often; wait before the next attempt",
        wait,
    )
}

fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// 503 while the server shuts down: the station is to reconnect (to another node, or after the restart).
fn shutting_down() -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header((header::RETRY_AFTER, "5"))
        .json(json!({"code": "shutting_down", "message": "the server is restarting; reconnect shortly"}))
}

pub async fn ocpp_endpoint(
    req: HttpRequest,
    path: web::Path<(String, StationId)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let (tenant, station_id) = path.into_inner();
    if state.sessions.is_closed() {
        return Ok(shutting_down());
    }
    let offered = offered_subprotocols(&req);
    // A station that offers no subprotocol at all is taken to speak 1.6, as many deployed 1.6 chargers
    // do; one that offers only versions this server does not speak is refused.
    let version = if offered.is_empty() {
        Version::V16
    } else {
        match Version::ALL.into_iter().find(|v| offered.iter().any(|o| o == v.subprotocol())) {
            Some(v) => v,
            None => return Ok(refuse(&state, &req, Refusal::UnsupportedSubprotocol, &offered)),
        }
    };
    let store_err = |e: crate::store::StoreError| actix_web::error::ErrorServiceUnavailable(e.to_string());
    // A station in a reconnect loop is refused before it costs a look-up: the window is keyed by
    // what the URL names, and only accepted connections fill it.
    let reconnect_key = limits::station_key(&tenant, &station_id);
    if let Some(wait) = state.limits.reconnects.full(&reconnect_key, 1) {
        return Ok(too_many_reconnects(wait));
    }
    let l = &state.limits;
    // Probing for tenants and stations counts against the address too.
    let address = AddressKey::of(crate::api::client_ip(&req, state.settings.api.trust_forwarded_for));
    let Some(account) = state.station_store.account_by_slug(&tenant).await.map_err(store_err)? else {
        l.address_auth.fail(&address);
        return Ok(refuse(&state, &req, Refusal::UnknownTenant, &offered));
    };
    let Some(station) = state.station_store.station(&account.id, &station_id).await.map_err(store_err)? else {
        l.address_auth.fail(&address);
        return Ok(refuse(&state, &req, Refusal::UnknownStation, &offered));
    };
    let tls = req.conn_data::<TlsConnection>();
    let station_key = limits::station_key(&account.id, &station_id);
    match station.security_profile {
        SecurityProfile::Basic | SecurityProfile::TlsBasic => {
            if station.security_profile == SecurityProfile::TlsBasic && tls.is_none() {
                return Ok(refuse(&state, &req, Refusal::TlsRequired, &offered));
            }
            let Some((user, password)) = basic_credentials(&req) else {
                return Ok(refuse(&state, &req, Refusal::MissingCredentials, &offered));
            };
            if user != station_id {
                l.address_auth.fail(&address);
                return Ok(refuse(&state, &req, Refusal::UnknownStation, &offered));
            }
            // The station's passwords: the current one, the one a rotation replaced while its
            // grace lasts, and a new one it was told and has not been recorded as accepting.
            let candidates: Vec<(PasswordSlot, String)> = station
                .password_hashes(chrono::Utc::now())
                .into_iter()
                .map(|(slot, h)| (slot, h.to_string()))
                .collect();
            // A generated secret's keyed hash is checked at once, with one HMAC, and a right one is
            // let in whatever the back-off. An operator-chosen password has an argon2 hash: one
            // verified before is recognised from the cache without argon2, whatever the back-off.
            // Either way, an attacker failing against a station's id does not lock the station out.
            let recognised = candidates.iter().find_map(|(slot, phc)| {
                let known = if auth::is_keyed_hash(phc) {
                    auth::verify_keyed(&password, phc)
                } else {
                    state.credentials.contains(&station_key, &password, phc)
                };
                known.then_some((*slot, auth::is_keyed_hash(phc)))
            });
            let slot = match recognised {
                Some((slot, keyed)) => {
                    if keyed {
                        l.station_auth.clear(&station_key);
                    }
                    slot
                }
                None => {
                    let wait = l.station_auth.blocked(&station_key).max(l.address_auth.blocked(&address));
                    if let Some(wait) = wait {
                        return Ok(too_many(
                            Limit::AuthBackoff,
                            "too_many_attempts",
                            "too many failed authentications for this station or from this address",
                            wait,
                        ));
                    }
                    // Keyed hashes were checked above; only argon2 hashes are left to check, in one
                    // job (more than one only while a rotation is under way).
                    let argon2: Vec<(PasswordSlot, String)> =
                        candidates.into_iter().filter(|(_, phc)| !auth::is_keyed_hash(phc)).collect();
                    let verified = if argon2.is_empty() {
                        None
                    } else {
                        let lane = if l.station_auth.suspect(&station_key) || l.address_auth.suspect(&address) {
                            auth::Lane::Suspect { max_waiting: l.settings.auth_queue }
                        } else {
                            auth::Lane::Normal
                        };
                        let pw = password.clone();
                        let job = move || argon2.into_iter().find(|(_, phc)| auth::verify_password(&pw, phc));
                        let Some(verified) = auth::argon2_job_in(lane, job).await? else {
                            return Ok(too_many(
                                Limit::AuthQueue,
                                "too_many_attempts",
                                "too many password checks waiting",
                                Duration::from_secs(1),
                            ));
                        };
                        verified
                    };
                    let Some((slot, phc)) = verified else {
                        l.station_auth.fail(&station_key);
                        l.address_auth.fail(&address);
                        return Ok(refuse(&state, &req, Refusal::BadPassword, &offered));
                    };
                    l.station_auth.clear(&station_key);
                    state.credentials.insert(&station_key, &password, &phc);
                    slot
                }
            };
            if slot == PasswordSlot::Pending {
                // The station connects with the password it was told: it took it, whatever became
                // of its answer.
                crate::api::credentials::pending_password_used(&state, &account.id, &station).await;
            }
        }
        SecurityProfile::ClientCertificate => {
            let Some(tls) = tls else {
                return Ok(refuse(&state, &req, Refusal::TlsRequired, &offered));
            };
            // The handshake verified the chain against the client CA; what is left is whose it is.
            let Some(leaf) = tls.client_chain.as_ref().and_then(|chain| chain.first()) else {
                return Ok(refuse(&state, &req, Refusal::ClientCertRequired, &offered));
            };
            // Station ids are unique only within a tenant, and one CA serves every tenant: the
            // certificate must name both.
            let names_station = client_identity(leaf).is_some_and(|id| {
                id.common_name.as_deref() == Some(station_id.as_str())
                    && id.organization.as_deref() == Some(account.slug.as_str())
            });
            if !names_station {
                return Ok(refuse(&state, &req, Refusal::ClientCertMismatch, &offered));
            }
        }
    }

    // Authenticated: the connection counts against the station's reconnect window.
    if let Err(wait) = l.reconnects.take(&reconnect_key, 1) {
        return Ok(too_many_reconnects(wait));
    }
    let max = state.settings.ocpp.max_frame_bytes;
    // Taken before the session exists, so shutdown waits for it; none once shutdown has begun.
    let Some(guard) = state.sessions.guard() else { return Ok(shutting_down()) };
    let subprotocol = (!offered.is_empty()).then(|| version.subprotocol());
    let response = socket::handshake(&req, subprotocol)?;
    // A station's session from now on: the connection no longer counts against its address, and
    // the session's own timeouts bound it.
    let shared = req.conn_data::<Rc<Connection>>().cloned();
    let connection = shared.as_ref().map(|c| {
        c.upgraded();
        c.handle()
    });
    let ocpp = &state.settings.ocpp;
    let setup = SessionSetup {
        key: StationKey { account_id: account.id, station_id },
        version,
        registration: station.registration,
        protocol_recorded: station.protocol.as_deref() == Some(version.subprotocol()),
        store: state.station_store.clone(),
        handler_settings: state.handler_settings.clone(),
        stations: state.fleet.local().registry().clone(),
        accounts: state.accounts.clone(),
        ping_interval: Duration::from_secs(ocpp.ping_interval_secs.max(1)),
        idle_timeout: Duration::from_secs(ocpp.idle_timeout_secs.max(1)),
        command_timeout: ocpp.command_timeout(),
        limits: state.limits.clone(),
        connection,
        tenant_slug: account.slug.as_str().into(),
        certificate_expiry: station.certificate_expiry(),
        renewal_due: state
            .handler_settings
            .renew_before
            .is_some_and(|before| station.renewal_due(chrono::Utc::now(), before)),
    };
    let keep = SocketKeep { connection: shared, guard: Some(guard) };
    // The session starts once the socket is handed over, its 101 encoded and not yet written
    // ([`upgraded`]).
    req.extensions_mut().insert(PendingSession {
        setup,
        max_frame: max,
        max_queued: l.settings.outbound_queue_bytes,
        keep,
    });
    Ok(response)
}

/// An accepted station whose 101 is on its way: what its session needs once it has the socket.
struct PendingSession {
    setup: SessionSetup,
    max_frame: usize,
    max_queued: usize,
    keep: SocketKeep,
}

impl PendingSession {
    fn start(self, io: Box<dyn StationIo>, early: BytesMut, head: BytesMut) {
        let max = self.max_frame;
        // Every byte the station sends passes the frame guard first: a message too big is refused
        // by its frame header, before the codec buffers it.
        let (out, stream, pump) =
            socket::connect(io, early, head, |bytes| FrameGuard::new(bytes, max), max, self.max_queued, self.keep);
        StationSession::start(self.setup, out, stream, pump);
    }
}

/// Serves a WebSocket upgrade request, which actix-http hands here with its connection: the
/// application answers it as it answers any request (middleware, routing, [`ocpp_endpoint`]).
/// A station's 101 is written and the socket given to its session, which then reads and writes it
/// on its own task, without the HTTP connection; any other answer is written and the connection
/// closed.
pub async fn upgraded<T, S, B>(
    app: Rc<S>,
    req: Request,
    mut framed: Framed<T, h1::Codec>,
) -> Result<(), actix_http::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    let (response, pending) = match app.call(req).await {
        Ok(res) => {
            let (req, res) = res.into_parts();
            let pending = req.extensions_mut().remove::<PendingSession>();
            (res.map_into_boxed_body(), pending)
        }
        Err(e) => (e.error_response(), None),
    };
    let (mut head, body) = actix_http::Response::from(response).into_parts();
    match pending {
        Some(pending) if head.status() == StatusCode::SWITCHING_PROTOCOLS => {
            // Encoded, not yet written: the session exists (and has its id, which orders it among
            // the station's connections) before the station can see its 101 and connect again.
            if framed.feed(h1::Message::Item((head, BodySize::None))).await.is_err() {
                return Ok(());
            }
            let parts = framed.into_parts();
            pending.start(Box::new(parts.io), parts.read_buf, parts.write_buf);
        }
        _ => {
            head.head_mut().set_connection_type(ConnectionType::Close);
            let size = body.size();
            if framed.send(h1::Message::Item((head, size))).await.is_err() {
                return Ok(());
            }
            let mut body = std::pin::pin!(body);
            while let Some(chunk) = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await {
                let Ok(chunk) = chunk else { return Ok(()) };
                if framed.send(h1::Message::Chunk(Some(chunk))).await.is_err() {
                    return Ok(());
                }
            }
            let _ = framed.send(h1::Message::Chunk(None)).await;
            let _ = framed.close().await;
        }
    }
    Ok(())
}
