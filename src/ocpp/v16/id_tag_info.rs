//! IdTagInfo: the authorization answer shared by Authorize, StartTransaction and StopTransaction.

use crate::ids::AccountId;
use crate::model::TagStatus;
use crate::ocpp::common::id_tag::{authorise, Authorisation};
use crate::ocpp::context::HandlerError;
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
    pub async fn lookup(store: &dyn StationLookup, account_id: &AccountId, id_tag: &str) -> Result<Self, HandlerError> {
        Ok(match authorise(store, account_id, id_tag).await? {
            Some(Authorisation { status, expiry_date, parent_id_tag }) => Self { status, expiry_date, parent_id_tag },
            None => Self { status: TagStatus::Invalid, expiry_date: None, parent_id_tag: None },
        })
    }
}
