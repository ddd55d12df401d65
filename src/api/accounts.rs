//! Accounts and sign-in: `POST /accounts`, `POST /sessions`, `GET /account`.

use super::{ApiError, Tenant};
use crate::auth;
use crate::model::{Account, ApiToken};
use crate::startup::AppState;
use actix_web::{web, HttpResponse};
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    email: String,
    password: String,
}

fn normalize_email(email: &str) -> Result<String, ApiError> {
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

fn account_view(a: &Account) -> serde_json::Value {
    json!({"id": a.id, "email": a.email, "name": a.name, "slug": a.slug, "created_at": a.created_at})
}

/// Hashes on the blocking pool: argon2 takes tens of milliseconds of CPU by design.
pub(crate) async fn hash(password: String) -> Result<String, ApiError> {
    web::block(move || auth::hash_password(&password))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))
}

pub(crate) async fn verify(password: String, phc: String) -> Result<bool, ApiError> {
    web::block(move || auth::verify_password(&password, &phc)).await.map_err(|e| ApiError::Internal(e.to_string()))
}

pub async fn create(state: web::Data<AppState>, body: web::Json<NewAccount>) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let email = normalize_email(&body.email)?;
    if !(8..=128).contains(&body.password.chars().count()) {
        return Err(ApiError::invalid("invalid_field", "password must be 8 to 128 characters long"));
    }
    let name = body.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid("invalid_field", "name must be 1 to 100 characters long"));
    }
    check_slug(&body.slug)?;
    let account = Account {
        id: uuid::Uuid::new_v4().to_string(),
        email,
        name,
        slug: body.slug,
        password_hash: hash(body.password).await?,
        created_at: Utc::now(),
    };
    state.store.create_account(&account).await?;
    state.store.flush().await?;
    tracing::info!(account = %account.id, slug = %account.slug, "account created");
    Ok(HttpResponse::Created().json(account_view(&account)))
}

pub async fn login(state: web::Data<AppState>, body: web::Json<Credentials>) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let refused = || ApiError::Unauthorized("invalid email or password".into());
    let email = normalize_email(&body.email).map_err(|_| refused())?;
    let account = state.store.account_by_email(&email).await?.ok_or_else(refused)?;
    if !verify(body.password, account.password_hash.clone()).await? {
        return Err(refused());
    }
    let token = auth::random_secret(43);
    let now = Utc::now();
    let ttl = chrono::Duration::seconds(state.settings.api.token_ttl_secs as i64);
    let record = ApiToken { account_id: account.id.clone(), created_at: now, expires_at: now + ttl };
    state.store.put_token(&auth::token_hash(&token), &record).await?;
    state.store.flush().await?;
    Ok(HttpResponse::Ok()
        .json(json!({"token": token, "expires_at": record.expires_at, "account": account_view(&account)})))
}

pub async fn me(Tenant(account): Tenant) -> HttpResponse {
    HttpResponse::Ok().json(account_view(&account))
}
