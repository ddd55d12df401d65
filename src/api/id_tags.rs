//! Id tags: the tenant's RFID cards and tokens, answered to Authorize and transactions.

use super::paging::{self, List};
use super::{check_printable, ApiError, Tenant};
use crate::model::{IdTag, TagStatus};
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagBody {
    status: TagStatus,
    expiry_date: Option<DateTime<Utc>>,
    parent_id_tag: Option<String>,
}

/// OCPP 1.6 IdToken is a CiString20.
fn check_tag(field: &str, tag: &str) -> Result<(), ApiError> {
    check_printable(field, tag, 1, 20)
}

pub async fn put(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    path: web::Path<String>,
    body: web::Json<TagBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    check_tag("id_tag", &path)?;
    if let Some(parent) = &body.parent_id_tag {
        check_tag("parent_id_tag", parent)?;
    }
    let tag = IdTag {
        id_tag: path.into_inner(),
        status: body.status,
        expiry_date: body.expiry_date,
        parent_id_tag: body.parent_id_tag,
        updated_at: Utc::now(),
    };
    let created = state.account_store.put_id_tag(&account.id, &tag).await?;
    Ok(if created { HttpResponse::Created() } else { HttpResponse::Ok() }.json(tag))
}

pub async fn get(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tag = state.account_store.id_tag(&account.id, &path).await?;
    let tag = tag.ok_or_else(|| ApiError::NotFound(format!("no id tag {}", path.as_str())))?;
    Ok(HttpResponse::Ok().json(tag))
}

/// `GET /id-tags`: a page, by tag.
pub async fn list(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    q: web::Query<paging::PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let budget = state.limits.settings.list_scan_records;
    let page = paging::request(List::IdTags, q.limit, q.cursor.as_deref(), budget, Some)?;
    let page = state.account_store.id_tags_page(&account.id, &page).await?;
    paging::respond(List::IdTags, page, |t| Some(serde_json::json!(t)), |k| k).await
}

pub async fn delete(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !state.account_store.delete_id_tag(&account.id, &path).await? {
        return Err(ApiError::NotFound(format!("no id tag {}", path.as_str())));
    }
    Ok(HttpResponse::NoContent().finish())
}
