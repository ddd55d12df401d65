//! The multi-tenant REST API under `/api/v1`.
//!
//! Every tenant-scoped route takes a [`Tenant`] (or a [`SignedIn`], which also names the token),
//! resolved from the bearer token; another tenant's stations, tags, transactions and tokens are
//! simply not found (404). Errors are [`ApiError`]s.

mod accounts;
mod commands;
pub mod credentials;
pub mod error;
pub(crate) mod events;
mod id_tags;
pub mod middleware;
mod paging;
mod privacy;
mod sessions;
mod stations;
mod transactions;
mod webhooks;

pub use error::ApiError;

use crate::auth;
use crate::model::{Account, ApiToken};
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use futures_util::future::LocalBoxFuture;
use std::net::{IpAddr, Ipv4Addr};

/// The OpenAPI document of this API, served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Registers the API routes under the current scope (`/api/v1`); the one-time-code route only when
/// `expose_login_codes` is set. Request bodies may hold `body_bytes`.
pub fn configure(cfg: &mut web::ServiceConfig, expose_login_codes: bool, body_bytes: usize) {
    if expose_login_codes {
        cfg.route("/login-codes/{challenge_id}", web::get().to(sessions::login_code));
    }
    cfg.app_data(web::JsonConfig::default().limit(body_bytes).error_handler(move |err, _| match err {
        actix_web::error::JsonPayloadError::Payload(e) if crate::limits::http::is_body_timeout(&e) => {
            ApiError::RequestTimeout.into()
        }
        actix_web::error::JsonPayloadError::Overflow { .. }
        | actix_web::error::JsonPayloadError::OverflowKnownLength { .. } => {
            crate::limits::hit(crate::limits::Limit::BodySize);
            ApiError::BodyTooLarge { limit: body_bytes }.into()
        }
        err => ApiError::invalid("invalid_json", format!("request body is not the expected JSON: {err}")).into(),
    }))
    .app_data(web::PathConfig::default().error_handler(|err, _| ApiError::NotFound(err.to_string()).into()))
    .app_data(
        web::QueryConfig::default().error_handler(|err, _| ApiError::invalid("invalid_query", err.to_string()).into()),
    )
    .route("/openapi.json", web::get().to(openapi))
    .route("/accounts", web::post().to(accounts::create))
    .route("/sessions", web::post().to(sessions::login))
    .route("/sessions/confirm", web::post().to(sessions::confirm))
    .route("/sessions/current", web::delete().to(sessions::logout))
    .route("/account", web::get().to(accounts::me))
    .route("/account", web::patch().to(accounts::update))
    .route("/account", web::delete().to(accounts::erase))
    .route("/account/export", web::get().to(privacy::export))
    .route("/account/consents", web::get().to(privacy::consents))
    .route("/account/consents", web::put().to(privacy::put_consents))
    .route("/account/retention", web::get().to(privacy::retention))
    .route("/account/retention", web::put().to(privacy::put_retention))
    .route("/account/tokens", web::get().to(sessions::tokens))
    .route("/account/tokens/{token_id}", web::delete().to(sessions::revoke))
    .route("/stations", web::post().to(stations::create))
    .route("/stations", web::get().to(stations::list))
    .route("/stations/bulk", web::post().to(stations::create_bulk))
    .route("/stations/{id}", web::get().to(stations::get))
    .route("/stations/{id}", web::patch().to(stations::update))
    .route("/stations/{id}", web::delete().to(stations::delete))
    .route("/stations/{id}/variables", web::get().to(stations::variables))
    .route("/stations/{id}/events", web::get().to(stations::events))
    .route("/stations/{id}/commands/{action}", web::post().to(commands::send))
    .route("/stations/{id}/command-records/{command_id}", web::get().to(commands::get))
    .route("/stations/{id}/password", web::post().to(credentials::rotate_password))
    .route("/stations/{id}/security-profile", web::post().to(credentials::upgrade_profile))
    .route("/stations/{id}/certificate/renew", web::post().to(credentials::renew_certificate))
    .route("/stations/{id}/certificate-signed", web::post().to(credentials::certificate_signed))
    .route("/stations/{id}/certificates", web::get().to(credentials::installed))
    .route("/stations/{id}/certificates", web::post().to(credentials::install))
    .route("/stations/{id}/certificates/{serial_number}", web::delete().to(credentials::delete))
    .route("/id-tags", web::get().to(id_tags::list))
    .route("/id-tags/{id_tag}", web::put().to(id_tags::put))
    .route("/id-tags/{id_tag}", web::get().to(id_tags::get))
    .route("/id-tags/{id_tag}", web::delete().to(id_tags::delete))
    .route("/events", web::get().to(events::stream))
    .route("/webhooks", web::post().to(webhooks::create))
    .route("/webhooks", web::get().to(webhooks::list))
    .route("/webhooks/{id}", web::get().to(webhooks::get))
    .route("/webhooks/{id}", web::patch().to(webhooks::update))
    .route("/webhooks/{id}", web::delete().to(webhooks::delete))
    .route("/webhooks/{id}/deliveries", web::get().to(webhooks::deliveries))
    .route("/transactions", web::get().to(transactions::list))
    // Before `/transactions/{id}`, which would take `export` for an id.
    .route("/transactions/export", web::get().to(transactions::export))
    .route("/transactions/{id}", web::get().to(transactions::get))
    .route("/transactions/{id}/meter-values", web::get().to(transactions::meter_values));
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(OPENAPI)
}

/// The account a request acts for, from its `Authorization: Bearer <token>` header.
pub struct Tenant(pub Account);

/// The account a request acts for and the token it came with. Resolving it also waits until the
/// station messages acknowledged before the request are in the store it reads ([`crate::state::Mode::caught_up`]).
pub struct SignedIn {
    pub account: Account,
    pub token: ApiToken,
}

/// How often a token's `last_used_at` is written: a write per request would be a cost for nothing.
const LAST_USED_RESOLUTION_SECS: i64 = 60;

impl FromRequest for SignedIn {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string());
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::Internal("application state missing".into()))?;
            let token = token.ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
            let hash = auth::token_hash(&token);
            let now = chrono::Utc::now();
            let mut record = state
                .account_store
                .token(&hash)
                .await?
                .filter(|t| t.expires_at > now && !t.id.is_empty())
                .ok_or_else(|| ApiError::Unauthorized("unknown or expired token".into()))?;
            let account = state
                .account_store
                .account(&record.account_id)
                .await?
                .ok_or_else(|| ApiError::Unauthorized("unknown or expired token".into()))?;
            if record.last_used_at.is_none_or(|t| (now - t).num_seconds() >= LAST_USED_RESOLUTION_SECS) {
                record.last_used_at = Some(now);
                // At most once a resolution period per token, so its flush is rare.
                state.account_store.put_token(&hash, &record).await?;
            }
            state.mode.caught_up().await;
            Ok(SignedIn { account, token: record })
        })
    }
}

impl FromRequest for Tenant {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let signed_in = SignedIn::from_request(req, payload);
        Box::pin(async move { Ok(Tenant(signed_in.await?.account)) })
    }
}

/// The client's address: the TCP peer, or, with `api.trust_forwarded_for`, the last
/// `X-Forwarded-For` entry (the one the proxy in front appended; earlier ones are the client's say).
pub(crate) fn client_ip(req: &HttpRequest, trust_forwarded_for: bool) -> IpAddr {
    let forwarded = trust_forwarded_for
        .then(|| req.headers().get_all("x-forwarded-for").filter_map(|v| v.to_str().ok()).last())
        .flatten()
        .and_then(|v| v.rsplit(',').next())
        .and_then(|ip| ip.trim().parse().ok());
    forwarded.or_else(|| req.peer_addr().map(|a| a.ip())).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// Checks a field's length in characters and that it holds only printable ASCII.
fn check_printable(field: &str, value: &str, min: usize, max: usize) -> Result<(), ApiError> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(ApiError::invalid("invalid_field", format!("{field} must be {min} to {max} characters long")));
    }
    if !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ApiError::invalid("invalid_field", format!("{field} must be printable ASCII without spaces")));
    }
    Ok(())
}

/// Station ids appear in URLs and in the store's keys: letters, digits, '.', '_' and '-', 1 to 48.
fn check_station_id(id: &str) -> Result<(), ApiError> {
    let ok =
        (1..=48).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "invalid_field",
            "station id must be 1 to 48 characters of letters, digits, '.', '_' and '-'",
        ))
    }
}
