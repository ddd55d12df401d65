//! The station endpoint `GET /ocpp/{tenant}/{station_id}`: subprotocol negotiation, authentication by
//! the station's OCPP security profile, then a [`StationSession`] for the connection.
//!
//! | profile | channel | credentials |
//! |---|---|---|
//! | 1 | plain or TLS | HTTP Basic: station id and password |
//! | 2 | TLS only | HTTP Basic |
//! | 3 | TLS only | a client certificate (verified in the handshake) whose subject CN is the station id and O the tenant's slug |

use crate::actors::station_session::SessionSetup;
use crate::actors::{StationKey, StationSession};
use crate::auth;
use crate::metrics as m;
use crate::model::SecurityProfile;
use crate::ocpp::Version;
use crate::startup::AppState;
use crate::tls::{client_identity, TlsConnection};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use serde_json::json;
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

fn refuse(req: &HttpRequest, reason: Refusal, offered: &[String]) -> HttpResponse {
    metrics::counter!(m::AUTH_FAILURES, "reason" => reason.as_str()).increment(1);
    let peer = req.connection_info().peer_addr().unwrap_or("unknown").to_string();
    tracing::warn!(path = %req.path(), %peer, reason = reason.as_str(), "station connection refused");
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

pub async fn ocpp_endpoint(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let (tenant, station_id) = path.into_inner();
    if state.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, "5"))
            .json(json!({"code": "shutting_down", "message": "the server is restarting; reconnect shortly"})));
    }
    let offered = offered_subprotocols(&req);
    // A station that offers no subprotocol at all is taken to speak 1.6, as many deployed 1.6 chargers
    // do; one that offers only versions this server does not speak is refused.
    let version = if offered.is_empty() {
        Version::V16
    } else {
        match Version::ALL.into_iter().find(|v| offered.iter().any(|o| o == v.subprotocol())) {
            Some(v) => v,
            None => return Ok(refuse(&req, Refusal::UnsupportedSubprotocol, &offered)),
        }
    };
    let store_err = |e: crate::store::StoreError| actix_web::error::ErrorServiceUnavailable(e.to_string());
    let Some(account) = state.store.account_by_slug(&tenant).await.map_err(store_err)? else {
        return Ok(refuse(&req, Refusal::UnknownTenant, &offered));
    };
    let Some(station) = state.store.station(&account.id, &station_id).await.map_err(store_err)? else {
        return Ok(refuse(&req, Refusal::UnknownStation, &offered));
    };
    let tls = req.conn_data::<TlsConnection>();
    match station.security_profile {
        SecurityProfile::Basic | SecurityProfile::TlsBasic => {
            if station.security_profile == SecurityProfile::TlsBasic && tls.is_none() {
                return Ok(refuse(&req, Refusal::TlsRequired, &offered));
            }
            let Some((user, password)) = basic_credentials(&req) else {
                return Ok(refuse(&req, Refusal::MissingCredentials, &offered));
            };
            if user != station_id {
                return Ok(refuse(&req, Refusal::UnknownStation, &offered));
            }
            let who = format!("{}/{}", account.id, station_id);
            let phc = station.password_hash.clone();
            if !state.credentials.contains(&who, &password, &phc) {
                let (pw, hash) = (password.clone(), phc.clone());
                let verified = auth::argon2_job(move || auth::verify_password(&pw, &hash)).await?;
                if !verified {
                    return Ok(refuse(&req, Refusal::BadPassword, &offered));
                }
                state.credentials.insert(&who, &password, &phc);
            }
        }
        SecurityProfile::ClientCertificate => {
            let Some(tls) = tls else {
                return Ok(refuse(&req, Refusal::TlsRequired, &offered));
            };
            // The handshake verified the chain against the client CA; what is left is whose it is.
            let Some(leaf) = tls.client_chain.as_ref().and_then(|chain| chain.first()) else {
                return Ok(refuse(&req, Refusal::ClientCertRequired, &offered));
            };
            // Station ids are unique only within a tenant, and one CA serves every tenant: the
            // certificate must name both.
            let names_station = client_identity(leaf).is_some_and(|id| {
                id.common_name.as_deref() == Some(station_id.as_str())
                    && id.organization.as_deref() == Some(account.slug.as_str())
            });
            if !names_station {
                return Ok(refuse(&req, Refusal::ClientCertMismatch, &offered));
            }
        }
    }

    let (response, session, stream) = actix_ws::handle_with_protocols(&req, body, &[version.subprotocol()])?;
    let max = state.settings.ocpp.max_frame_bytes;
    let stream = stream.max_frame_size(max).aggregate_continuations().max_continuation_size(max);
    let ocpp = &state.settings.ocpp;
    let setup = SessionSetup {
        key: StationKey { account_id: account.id, station_id },
        version,
        registration: station.registration,
        store: state.store.clone(),
        handler_settings: state.handler_settings.clone(),
        stations: state.stations.clone(),
        accounts: state.accounts.clone(),
        ping_interval: Duration::from_secs(ocpp.ping_interval_secs.max(1)),
        idle_timeout: Duration::from_secs(ocpp.idle_timeout_secs.max(1)),
        command_timeout: ocpp.command_timeout(),
    };
    StationSession::start(setup, session, stream);
    Ok(response)
}
