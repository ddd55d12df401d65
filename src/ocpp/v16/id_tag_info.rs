//! IdTagInfo: the authorization answer shared by Authorize, StartTransaction and StopTransaction.

use super::HandlerError;
use crate::model::TagStatus;
use crate::store::StationLookup;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// OCPP 1.6 IdTagInfo.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IdTagInfo {
    pub status: TagStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry_date: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id_tag: Option<String>,
}

impl IdTagInfo {
    /// Looks the tag up among the tenant's id tags: unknown tags are Invalid, and an Accepted tag
    /// whose expiry date has passed is Expired.
    pub async fn lookup(store: &dyn StationLookup, account_id: &str, id_tag: &str) -> Result<Self, HandlerError> {
        let Some(tag) = store.id_tag(account_id, id_tag).await? else {
            return Ok(Self { status: TagStatus::Invalid, expiry_date: None, parent_id_tag: None });
        };
        let status = match (tag.status, tag.expiry_date) {
            (TagStatus::Accepted, Some(expiry)) if expiry <= Utc::now() => TagStatus::Expired,
            (status, _) => status,
        };
        Ok(Self { status, expiry_date: tag.expiry_date, parent_id_tag: tag.parent_id_tag })
    }
}
