//! Accounts: sign-up (`POST /accounts`), the account itself (`GET`), rectification (`PATCH`) and
//! erasure (`DELETE /account`).

use super::{client_ip, ApiError, SignedIn, Tenant};
use crate::auth;
use crate::fleet::erasure::{self, ErasureError};
use crate::limits::connections::AddressKey;
use crate::limits::{self, Limit};
use crate::login::location_prefix;
use crate::model::Account;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    email: String,
    password: String,
    name: String,
    slug: String,
}

/// A rectification: any of name, email and password. Email and password need `current_password`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountChange {
    name: Option<String>,
    email: Option<String>,
    password: Option<String>,
    current_password: Option<String>,
}

/// Erasure re-authenticates: a stolen token alone must not be able to destroy the account.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Erasure {
    password: String,
}

pub(crate) fn normalize_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && matches!(email.split_once('@'), Some((user, domain)) if !user.is_empty() && domain.contains('.') && !domain.contains('@') && !domain.starts_with('.') && !domain.ends_with('.'))
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(email)
    } else {
        Err(ApiError::invalid("invalid_field", "email is not a valid address"))
    }
}

fn check_slug(slug: &str) -> Result<(), ApiError> {
    let ok = (2..=32).contains(&slug.len())
        && slug.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "invalid_field",
            "slug must be 2 to 32 characters of a-z, 0-9 and '-', not starting or ending with '-'",
        ))
    }
}

fn check_password(password: &str) -> Result<(), ApiError> {
    if (8..=128).contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(ApiError::invalid("invalid_field", "password must be 8 to 128 characters long"))
    }
}

fn check_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim().to_string();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid("invalid_field", "name must be 1 to 100 characters long"));
    }
    Ok(name)
}

pub(crate) fn account_view(a: &Account) -> serde_json::Value {
    json!({"id": a.id, "email": a.email, "name": a.name, "slug": a.slug, "created_at": a.created_at})
}

/// Hashes on the blocking pool: argon2 takes tens of milliseconds of CPU by design.
pub(crate) async fn hash(password: String) -> Result<String, ApiError> {
    hash_in(auth::Lane::Normal, password).await
}

/// [`hash`] waiting in `lane`; 429 when the suspect lane is full.
async fn hash_in(lane: auth::Lane, password: String) -> Result<String, ApiError> {
    match auth::argon2_job_in(lane, move || auth::hash_password(&password)).await {
        Ok(Some(hashed)) => hashed.map_err(|e| ApiError::Internal(e.to_string())),
        Ok(None) => Err(queue_full()),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// The suspect lane of password checks is full.
fn queue_full() -> ApiError {
    limits::hit(Limit::AuthQueue);
    ApiError::TooManyAttempts { retry_after: std::time::Duration::from_secs(1) }
}

pub(crate) async fn verify(password: String, phc: String) -> Result<bool, ApiError> {
    verify_in(auth::Lane::Normal, password, phc).await
}

/// [`verify`] waiting in `lane`; 429 when the suspect lane is full.
pub(crate) async fn verify_in(lane: auth::Lane, password: String, phc: String) -> Result<bool, ApiError> {
    match auth::argon2_job_in(lane, move || auth::verify_password(&password, &phc)).await {
        Ok(Some(verified)) => Ok(verified),
        Ok(None) => Err(queue_full()),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<NewAccount>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let email = normalize_email(&body.email)?;
    check_password(&body.password)?;
    let name = check_name(&body.name)?;
    check_slug(&body.slug)?;
    // Signing up is the first sign-in: its network is the account's first known location.
    let ip = client_ip(&req, state.settings.api.trust_forwarded_for);
    // Each sign-up costs an argon2 run and a tenant: a few per address and window, and after the
    // first, the hashing waits behind everyone else's password checks.
    let address = AddressKey::of(ip);
    let lane = match state.limits.signups.used(&address) {
        0 => auth::Lane::Normal,
        _ => auth::Lane::Suspect { max_waiting: state.limits.settings.auth_queue },
    };
    if let Err(retry_after) = state.limits.signups.take(&address, 1) {
        limits::hit(Limit::Signups);
        return Err(ApiError::RateLimited {
            retry_after,
            message: "too many sign-ups from this address; try again later".into(),
        });
    }
    let account = Account {
        id: uuid::Uuid::new_v4().to_string().into(),
        email,
        name,
        slug: body.slug,
        password_hash: hash_in(lane, body.password).await?,
        created_at: Utc::now(),
        known_locations: vec![location_prefix(ip)],
        retention: Default::default(),
    };
    state.account_store.create_account(&account).await?;
    tracing::info!(account = %account.id, slug = %account.slug, "account created");
    Ok(HttpResponse::Created().json(account_view(&account)))
}

pub async fn me(Tenant(account): Tenant) -> HttpResponse {
    HttpResponse::Ok().json(account_view(&account))
}

/// Checks the password of a signed-in holder before a change that needs it. Wrong passwords count
/// as failed sign-ins, so a stolen token cannot be used to guess the password.
async fn reauthenticate(
    state: &AppState,
    req: &HttpRequest,
    account: &Account,
    password: Option<String>,
) -> Result<(), ApiError> {
    let password = password.ok_or_else(|| {
        ApiError::invalid("invalid_field", "current_password is required to change the email or password")
    })?;
    let ip = client_ip(req, state.settings.api.trust_forwarded_for);
    if let Some(retry_after) = state.login.blocked(Some(&account.id), ip) {
        return Err(ApiError::TooManyAttempts { retry_after });
    }
    if !verify(password, account.password_hash.clone()).await? {
        state.login.record_failure(Some(&account.id), ip);
        return Err(ApiError::InvalidCredentials("the password is wrong".into()));
    }
    Ok(())
}

pub async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    signed_in: SignedIn,
    body: web::Json<AccountChange>,
) -> Result<HttpResponse, ApiError> {
    let SignedIn { account, token } = signed_in;
    let body = body.into_inner();
    if body.name.is_none() && body.email.is_none() && body.password.is_none() {
        return Err(ApiError::invalid("invalid_field", "give at least one of name, email and password"));
    }
    let name = body.name.as_deref().map(check_name).transpose()?;
    let email = body.email.as_deref().map(normalize_email).transpose()?;
    if let Some(p) = &body.password {
        check_password(p)?;
    }
    if email.is_some() || body.password.is_some() {
        reauthenticate(&state, &req, &account, body.current_password).await?;
    }
    let password_hash = match body.password {
        Some(p) => Some(hash(p).await?),
        None => None,
    };
    let changed = state
        .account_store
        .update_account(&account.id, &|a| {
            if let Some(name) = &name {
                a.name = name.clone();
            }
            if let Some(email) = &email {
                a.email = email.clone();
            }
            if let Some(h) = &password_hash {
                a.password_hash = h.clone();
            }
        })
        .await?
        .ok_or_else(|| ApiError::Unauthorized("unknown or expired token".into()))?;
    if password_hash.is_some() {
        // Whoever knew the old password may hold a token: only the session that changed it stays.
        let revoked = state.account_store.delete_tokens_except(&account.id, Some(&token.id)).await?;
        tracing::info!(account = %account.id, revoked, "password changed; other tokens revoked");
    }
    Ok(HttpResponse::Ok().json(account_view(&changed)))
}

pub async fn erase(
    state: web::Data<AppState>,
    req: HttpRequest,
    Tenant(account): Tenant,
    body: web::Json<Erasure>,
) -> Result<HttpResponse, ApiError> {
    reauthenticate(&state, &req, &account, Some(body.into_inner().password)).await?;
    // The account record goes first, so its tokens, its password and its stations' credentials stop
    // working at once; then its sessions are closed, everywhere.
    let erased =
        erasure::erase_account(&state.fleet, state.station_store.as_ref(), state.account_store.as_ref(), &account.id)
            .await
            .map_err(|e| match e {
                ErasureError::Store(e) => ApiError::from(e),
                ErasureError::Fleet(e) => ApiError::from(e),
            })?;
    let (report, sessions) = (erased.report, erased.sessions);
    state.login.forget_account(&account.id);
    tracing::info!(account = %account.id, sessions, "account erased");
    Ok(HttpResponse::Ok().json(json!({
        "erased": true,
        "removed": report,
        "retained": [
            {
                "data": "slug",
                "value": account.slug,
                "reason": "Reserved, linked to nothing else, so no new account can take it: station certificates \
                           issued for this slug may still be valid and would otherwise authenticate as the new \
                           account's stations.",
            },
            {
                "data": "server logs",
                "reason": "Log lines written before the erasure (account id, slug, station ids, client addresses) \
                           stay in the operator's log storage until its rotation deletes them; they are not part \
                           of the account's records and are never used to restore it.",
            },
        ],
    })))
}
