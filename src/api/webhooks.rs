//! Webhooks: where the tenant's events are pushed. The secret that signs deliveries is shown once,
//! in the answer that created the webhook; a new webhook is delivered the events appended after
//! it was created.

use super::events::parse_types;
use super::{ApiError, Tenant};
use crate::model::{EventType, Webhook};
use crate::state::AppState;
use crate::webhooks::{sign, ssrf};
use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    url: String,
    /// Event types; every type when absent or empty.
    #[serde(default)]
    types: Vec<String>,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookChange {
    url: Option<String>,
    types: Option<Vec<String>>,
    enabled: Option<bool>,
}

/// The webhook as the API shows it: everything but the secret.
fn view(hook: &Webhook) -> Value {
    json!({
        "id": hook.id,
        "url": hook.url,
        "types": hook.types,
        "enabled": hook.enabled,
        "disabled_reason": hook.disabled_reason,
        "created_at": hook.created_at,
        "updated_at": hook.updated_at,
    })
}

fn check_url(state: &AppState, url: &str) -> Result<String, ApiError> {
    ssrf::check_url(url, state.settings.webhooks.allow_private_destinations)
        .map(|_| url.to_string())
        .map_err(|e| ApiError::invalid("invalid_field", format!("url: {e}")))
}

fn types(names: &[String]) -> Result<Vec<EventType>, ApiError> {
    let mut types = parse_types(Some(&names.join(",")))?;
    types.sort();
    types.dedup();
    Ok(types)
}

async fn find(state: &AppState, account: &crate::model::Account, id: &str) -> Result<Webhook, ApiError> {
    state.account_store.webhook(&account.id, id).await?.ok_or_else(|| ApiError::NotFound(format!("no webhook {id}")))
}

/// `POST /webhooks`: 201 with the webhook and, this once, its secret.
pub async fn create(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    body: web::Json<NewWebhook>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let url = check_url(&state, &body.url)?;
    let types = types(&body.types)?;
    let limit = state.settings.webhooks.max_per_account;
    if state.account_store.webhooks(&account.id).await?.len() >= limit {
        return Err(ApiError::QuotaExceeded {
            message: format!("this account has {limit} webhooks already (webhooks.max_per_account)"),
            limit,
        });
    }
    let now = Utc::now();
    let hook = Webhook {
        id: uuid::Uuid::new_v4().to_string(),
        account_id: account.id.clone(),
        url,
        types,
        secret: sign::new_secret(),
        enabled: body.enabled,
        disabled_reason: None,
        created_at: now,
        updated_at: now,
    };
    // The cursor first: the webhook is delivered what is appended from now on, never the past.
    let head = state.account_store.feed_head(&account.id).await?;
    state.account_store.set_webhook_cursor(&account.id, &hook.id, head).await?;
    state.account_store.put_webhook(&hook).await?;
    tracing::info!(account = %account.id, webhook = %hook.id, "webhook created");
    let mut shown = view(&hook);
    shown["secret"] = json!(hook.secret);
    Ok(HttpResponse::Created()
        .insert_header((actix_web::http::header::LOCATION, format!("/api/v1/webhooks/{}", hook.id)))
        .json(shown))
}

/// `GET /webhooks`: every webhook of the account (a few: `webhooks.max_per_account`).
pub async fn list(state: web::Data<AppState>, Tenant(account): Tenant) -> Result<HttpResponse, ApiError> {
    let hooks = state.account_store.webhooks(&account.id).await?;
    Ok(HttpResponse::Ok().json(json!({"items": hooks.iter().map(view).collect::<Vec<_>>()})))
}

pub async fn get(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(view(&find(&state, &account, &path).await?)))
}

/// `PATCH /webhooks/{id}`: a new URL, types, or enabled; enabling clears why it was disabled and
/// delivery resumes where it stopped.
pub async fn update(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    path: web::Path<String>,
    body: web::Json<WebhookChange>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.url.is_none() && body.types.is_none() && body.enabled.is_none() {
        return Err(ApiError::invalid("invalid_field", "give url, types, enabled or several"));
    }
    let url = body.url.as_deref().map(|u| check_url(&state, u)).transpose()?;
    let types = body.types.as_deref().map(types).transpose()?;
    let hook = state
        .account_store
        .update_webhook(&account.id, &path, &|h| {
            if let Some(url) = &url {
                h.url.clone_from(url);
            }
            if let Some(types) = &types {
                h.types.clone_from(types);
            }
            if let Some(enabled) = body.enabled {
                h.enabled = enabled;
                if enabled {
                    h.disabled_reason = None;
                }
            }
            h.updated_at = Utc::now();
        })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no webhook {}", path.as_str())))?;
    Ok(HttpResponse::Ok().json(view(&hook)))
}

pub async fn delete(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !state.account_store.delete_webhook(&account.id, &path).await? {
        return Err(ApiError::NotFound(format!("no webhook {}", path.as_str())));
    }
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /webhooks/{id}/deliveries`: the webhook's delivery log, newest first.
pub async fn deliveries(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let hook = find(&state, &account, &path).await?;
    let log = state.account_store.webhook_deliveries(&account.id, &hook.id).await?;
    Ok(HttpResponse::Ok().json(json!({"items": log})))
}
