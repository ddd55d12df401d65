//! The holder's rights over the account's data: access and portability (`GET /account/export`) and
//! choices (`GET|PUT /account/consents`). Rectification and erasure are in `accounts`.

use super::accounts::account_view;
use super::transactions;
use super::{ApiError, SignedIn, Tenant};
use crate::model::{
    Consent, Consents, DataKind, MeterRecord, RetentionPeriods, MAX_RETENTION_DAYS, MIN_RETENTION_DAYS,
};
use crate::state::AppState;
use crate::store::{all_id_tags, all_stations, all_transactions};
use actix_web::http::header;
use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

/// Names the format of the export document, so a later change of shape can be told apart.
const EXPORT_FORMAT: &str = "ocpp-css.account-export.v1";

fn meter_view(r: &MeterRecord) -> Value {
    json!({
        "station_id": r.station_id,
        "connector_id": r.connector_id,
        "transaction_id": r.transaction_id,
        "timestamp": r.meter_value.timestamp,
        "sampled_value": r.meter_value.sampled_value,
    })
}

/// Everything held about the account, as one JSON document. Secrets are left out: the password and
/// station password hashes, and the token secrets (only their hashes are stored).
pub async fn export(state: web::Data<AppState>, signed_in: SignedIn) -> Result<HttpResponse, ApiError> {
    let account = &signed_in.account;
    let store = &state.account_store;
    let id = &account.id;
    let stations = all_stations(&**store, id).await?;
    let meter_values = store.account_meter_values(id).await?;
    let events = store.account_events(id).await?;
    let commands = store.account_commands(id).await?;
    let transactions: Vec<Value> = all_transactions(&**store, id, None)
        .await?
        .iter()
        .map(|tx| {
            let mut view = transactions::view(tx);
            view["meter_values"] = meter_values
                .iter()
                .filter(|r| r.transaction_id == Some(tx.id) && r.station_id == tx.station_id)
                .map(meter_view)
                .collect();
            view
        })
        .collect();
    let mut variables = std::collections::HashMap::new();
    for s in &stations {
        variables.insert(s.id.clone(), store.variables(id, &s.id).await?);
    }
    let stations: Vec<Value> = stations
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "security_profile": s.security_profile,
                "registration": s.registration,
                "created_at": s.created_at,
                "boot": s.boot,
                "connectors": s.connectors,
                "last_seen": s.last_seen,
                "protocol": s.protocol,
                "firmware_status": s.firmware_status,
                "diagnostics_status": s.diagnostics_status,
                "events": events.iter().filter(|e| e.station_id == s.id).collect::<Vec<_>>(),
                "variables": variables.get(&s.id),
            })
        })
        .collect();
    let mut profile = account_view(account);
    profile["known_locations"] = json!(account.known_locations);
    let tokens: Vec<Value> = store
        .tokens(id)
        .await?
        .iter()
        .map(|t| json!({"id": t.id, "created_at": t.created_at, "expires_at": t.expires_at, "last_used_at": t.last_used_at}))
        .collect();
    let document = json!({
        "format": EXPORT_FORMAT,
        "exported_at": Utc::now(),
        "account": profile,
        "consents": store.consents(id).await?,
        "stations": stations,
        "id_tags": all_id_tags(&**store, id).await?,
        "transactions": transactions,
        // Readings a station sent outside any transaction.
        "meter_values_without_transaction": meter_values.iter().filter(|r| r.transaction_id.is_none()).map(meter_view).collect::<Vec<_>>(),
        "commands": commands,
        "login_history": store.login_events(id).await?,
        "tokens": tokens,
    });
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"ocpp-css-export-{}.json\"", account.slug),
        ))
        .json(document))
}

/// A change of choices: each field given sets that choice; the others stay as they are.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentChange {
    personalized_content: Option<bool>,
    personalized_offers: Option<bool>,
    marketing_emails: Option<bool>,
    non_essential_cookies: Option<bool>,
}

pub async fn consents(state: web::Data<AppState>, Tenant(account): Tenant) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.account_store.consents(&account.id).await?))
}

pub async fn put_consents(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    body: web::Json<ConsentChange>,
) -> Result<HttpResponse, ApiError> {
    let change = body.into_inner();
    let mut consents: Consents = state.account_store.consents(&account.id).await?;
    let now = Utc::now();
    // The time of a choice is when it changed: setting a choice to what it already is keeps its time.
    let set = |consent: &mut Consent, granted: Option<bool>| {
        if let Some(granted) = granted.filter(|g| *g != consent.granted) {
            *consent = Consent { granted, updated_at: Some(now) };
        }
    };
    set(&mut consents.personalized_content, change.personalized_content);
    set(&mut consents.personalized_offers, change.personalized_offers);
    set(&mut consents.marketing_emails, change.marketing_emails);
    set(&mut consents.non_essential_cookies, change.non_essential_cookies);
    state.account_store.put_consents(&account.id, &consents).await?;
    Ok(HttpResponse::Ok().json(consents))
}

/// The periods that apply to the account's data, kind by kind: its own where it set one, else the
/// node's default (`null`: kept without a period).
fn retention_view(own: &RetentionPeriods, defaults: &RetentionPeriods) -> Value {
    let mut out = serde_json::Map::new();
    for kind in DataKind::ALL {
        out.insert(
            kind.as_str().to_string(),
            json!({
                "days": own.effective(kind, defaults),
                "default_days": defaults.get(kind),
                "own": own.get(kind).is_some(),
            }),
        );
    }
    Value::Object(out)
}

pub async fn retention(state: web::Data<AppState>, Tenant(account): Tenant) -> HttpResponse {
    HttpResponse::Ok().json(retention_view(&account.retention, &state.settings.retention.defaults()))
}

/// A field that may be absent (no change), `null` (back to the default) or a value: absent stays
/// `None`, the rest is `Some`.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A change of retention periods, in days: each field given sets that kind's period (`null`: back
/// to the node's default); the others stay as they are.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionChange {
    #[serde(default, deserialize_with = "present")]
    meter_values: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    station_events: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    login_history: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    finished_commands: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    finished_transactions: Option<Option<u32>>,
}

pub async fn put_retention(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    body: web::Json<RetentionChange>,
) -> Result<HttpResponse, ApiError> {
    let change = body.into_inner();
    let changes = [
        (DataKind::MeterValues, change.meter_values),
        (DataKind::StationEvents, change.station_events),
        (DataKind::LoginHistory, change.login_history),
        (DataKind::FinishedCommands, change.finished_commands),
        (DataKind::FinishedTransactions, change.finished_transactions),
    ];
    for (kind, days) in &changes {
        if let Some(Some(days)) = days {
            if !RetentionPeriods::allowed(*days) {
                return Err(ApiError::invalid(
                    "invalid_field",
                    format!(
                        "{}: a period is {MIN_RETENTION_DAYS} to {MAX_RETENTION_DAYS} days (null: the default)",
                        kind.as_str()
                    ),
                ));
            }
        }
    }
    let updated = state
        .account_store
        .update_account(&account.id, &|a| {
            for (kind, days) in &changes {
                if let Some(days) = days {
                    a.retention.set(*kind, *days);
                }
            }
        })
        .await?
        .ok_or_else(|| ApiError::NotFound("no such account".into()))?;
    tracing::info!(account = %account.id, retention = ?updated.retention, "retention periods changed");
    Ok(HttpResponse::Ok().json(retention_view(&updated.retention, &state.settings.retention.defaults())))
}
