//! Id-tag authorisation, the same in both versions: what the tenant's id tags say of a tag. Each
//! version words the answer its own way (1.6 `IdTagInfo`, 2.0.1 `IdTokenInfo`).

use crate::ids::AccountId;
use crate::model::TagStatus;
use crate::ocpp::context::HandlerError;
use crate::store::StationLookup;
use chrono::{DateTime, Utc};

/// A tag the tenant knows, as it stands now.
#[derive(Debug, Clone, PartialEq)]
pub struct Authorisation {
    /// The tag's status; an Accepted tag whose expiry date has passed is Expired.
    pub status: TagStatus,
    pub expiry_date: Option<DateTime<Utc>>,
    pub parent_id_tag: Option<String>,
}

/// Looks the tag up among the tenant's id tags; None for a tag it does not have.
pub async fn authorise(
    store: &dyn StationLookup,
    account_id: &AccountId,
    id_tag: &str,
) -> Result<Option<Authorisation>, HandlerError> {
    let Some(tag) = store.id_tag(account_id, id_tag).await? else {
        return Ok(None);
    };
    let status = match (tag.status, tag.expiry_date) {
        (TagStatus::Accepted, Some(expiry)) if expiry <= Utc::now() => TagStatus::Expired,
        (status, _) => status,
    };
    Ok(Some(Authorisation { status, expiry_date: tag.expiry_date, parent_id_tag: tag.parent_id_tag }))
}
