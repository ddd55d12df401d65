//! Sign-in and tokens: `POST /sessions` (with failure limits and new-location challenges),
//! `POST /sessions/confirm`, `DELETE /sessions/current`, `GET /account/tokens`,
//! `DELETE /account/tokens/{id}`, and the test-only `GET /login-codes/{challenge_id}`.

use super::accounts::{account_view, hash, normalize_email, verify_in};
use super::{client_ip, ApiError, SignedIn};
use crate::auth;
use crate::ids::AccountId;
use crate::login::{location_prefix, ConfirmError};
use crate::model::{Account, ApiToken, LoginEvent, LoginOutcome};
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use std::net::IpAddr;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    email: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    challenge_id: String,
    code: String,
}

/// A hash no password is known for, checked when the email has no account.
async fn unknown_account_hash() -> Result<String, ApiError> {
    static HASH: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    HASH.get_or_try_init(|| hash(auth::random_secret(32))).await.cloned()
}

/// Keeps a sign-in attempt in the account's history.
async fn record(state: &AppState, account_id: &AccountId, ip: IpAddr, outcome: LoginOutcome) -> Result<(), ApiError> {
    let event = LoginEvent { at: Utc::now(), ip: ip.to_string(), outcome };
    state.account_store.add_login_event(account_id, &event, state.settings.login.history_limit).await?;
    Ok(())
}

/// Issues a token and answers the session.
async fn issue(state: &AppState, account: &Account) -> Result<HttpResponse, ApiError> {
    let token = auth::random_secret(43);
    let now = Utc::now();
    let ttl = chrono::Duration::seconds(state.settings.api.token_ttl_secs as i64);
    let record = ApiToken {
        id: uuid::Uuid::new_v4().to_string(),
        account_id: account.id.clone(),
        created_at: now,
        expires_at: now + ttl,
        last_used_at: None,
    };
    state.account_store.put_token(&auth::token_hash(&token), &record).await?;
    Ok(HttpResponse::Ok().json(json!({
        "token": token,
        "token_id": record.id,
        "expires_at": record.expires_at,
        "account": account_view(account),
    })))
}

pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let ip = client_ip(&req, state.settings.api.trust_forwarded_for);
    let refused = || ApiError::Unauthorized("invalid email or password".into());
    let account = match normalize_email(&body.email) {
        Ok(email) => state.account_store.account_by_email(&email).await?,
        Err(_) => None,
    };
    if let Some(retry_after) = state.login.blocked(account.as_ref().map(|a| &a.id), ip) {
        if let Some(a) = account.as_ref().filter(|a| state.login.note_rate_limited(&a.id)) {
            record(&state, &a.id, ip, LoginOutcome::RateLimited).await?;
        }
        return Err(ApiError::TooManyAttempts { retry_after });
    }
    // After recent failures of this address or account, the password check waits behind others.
    let lane = if state.login.suspect(account.as_ref().map(|a| &a.id), ip) {
        auth::Lane::Suspect { max_waiting: state.limits.settings.auth_queue }
    } else {
        auth::Lane::Normal
    };
    let Some(mut account) = account else {
        // Spend what checking a password costs, so the answer's timing does not tell which emails
        // have accounts.
        verify_in(lane, body.password, unknown_account_hash().await?).await?;
        state.login.record_failure(None, ip);
        return Err(refused());
    };
    if !verify_in(lane, body.password, account.password_hash.clone()).await? {
        state.login.record_failure(Some(&account.id), ip);
        record(&state, &account.id, ip, LoginOutcome::BadPassword).await?;
        return Err(refused());
    }
    state.login.clear_account(&account.id);
    let prefix = location_prefix(ip);
    if account.known_locations.is_empty() {
        // An account from before locations were kept: its first sign-in sets the first one.
        account = state
            .account_store
            .update_account(&account.id, &|a| a.known_locations.push(prefix.clone()))
            .await?
            .ok_or_else(refused)?;
    } else if !account.known_locations.contains(&prefix) {
        let challenge = state.login.challenge(&account.id, ip);
        state.notifier.new_location(&account, &challenge);
        record(&state, &account.id, ip, LoginOutcome::NewLocation).await?;
        return Err(ApiError::NewLocation { challenge_id: challenge.challenge_id, expires_at: challenge.expires_at });
    }
    record(&state, &account.id, ip, LoginOutcome::Success).await?;
    issue(&state, &account).await
}

pub async fn confirm(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<Confirmation>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let ip = client_ip(&req, state.settings.api.trust_forwarded_for);
    let refused = || ApiError::Unauthorized("invalid, expired or used one-time code".into());
    if let Some(retry_after) = state.login.blocked(None, ip) {
        return Err(ApiError::TooManyAttempts { retry_after });
    }
    let confirmed = match state.login.confirm(&body.challenge_id, body.code.trim(), ip) {
        Ok(c) => c,
        Err(ConfirmError::Unknown) => {
            state.login.record_failure(None, ip);
            return Err(refused());
        }
        Err(ConfirmError::Refused { account_id }) => {
            state.login.record_failure(Some(&account_id), ip);
            record(&state, &account_id, ip, LoginOutcome::BadCode).await?;
            return Err(refused());
        }
    };
    let prefix = confirmed.prefix.clone();
    let account = state
        .account_store
        .update_account(&confirmed.account_id, &|a| {
            if !a.known_locations.contains(&prefix) {
                a.known_locations.push(prefix.clone());
            }
        })
        .await?
        // Erased between the sign-in and its confirmation.
        .ok_or_else(refused)?;
    tracing::info!(account = %account.id, prefix = %confirmed.prefix, "new sign-in location confirmed");
    record(&state, &account.id, ip, LoginOutcome::Confirmed).await?;
    issue(&state, &account).await
}

/// Signs out: revokes the token the request came with.
pub async fn logout(state: web::Data<AppState>, signed_in: SignedIn) -> Result<HttpResponse, ApiError> {
    state.account_store.delete_token(&signed_in.account.id, &signed_in.token.id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The account's live tokens, without their secrets (only hashes are kept anyway).
pub async fn tokens(state: web::Data<AppState>, signed_in: SignedIn) -> Result<HttpResponse, ApiError> {
    let now = Utc::now();
    let tokens = state.account_store.tokens(&signed_in.account.id).await?;
    let views: Vec<_> = tokens
        .iter()
        .filter(|t| t.expires_at > now && !t.id.is_empty())
        .map(|t| {
            json!({
                "id": t.id,
                "created_at": t.created_at,
                "expires_at": t.expires_at,
                "last_used_at": t.last_used_at,
                "current": t.id == signed_in.token.id,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

pub async fn revoke(
    state: web::Data<AppState>,
    signed_in: SignedIn,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !state.account_store.delete_token(&signed_in.account.id, &path).await? {
        return Err(ApiError::NotFound(format!("no token {}", path.as_str())));
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Test and development aid (`api.expose_login_codes`): the one-time code of a pending challenge,
/// standing in for the holder's mailbox.
pub async fn login_code(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let code = state.login.code(&path).ok_or_else(|| ApiError::NotFound("no such pending challenge".into()))?;
    Ok(HttpResponse::Ok().json(json!({"challenge_id": path.into_inner(), "code": code})))
}
