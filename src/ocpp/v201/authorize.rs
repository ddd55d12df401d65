//! Authorize (2.0.1): is this id token allowed to charge? Answered from the tenant's id tags.

use super::types::IdToken;
use crate::ids::AccountId;
use crate::model::events;
use crate::ocpp::common::id_tag::authorise;
use crate::ocpp::context::{Handled, HandlerError, StationContext};
use crate::store::StationLookup;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub id_token: IdToken,
}

/// IdTokenInfoType.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IdTokenInfo {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_expiry_date_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id_token: Option<IdToken>,
}

impl IdTokenInfo {
    /// Unknown tokens are `Unknown`; an Accepted tag past its expiry is `Expired`; a token of type
    /// NoAuthorization (the station charges without identification) is `Accepted`.
    pub async fn lookup(
        store: &dyn StationLookup,
        account_id: &AccountId,
        token: &IdToken,
    ) -> Result<Self, HandlerError> {
        if token.kind == "NoAuthorization" {
            return Ok(Self { status: "Accepted", cache_expiry_date_time: None, group_id_token: None });
        }
        let Some(tag) = authorise(store, account_id, &token.id_token).await? else {
            return Ok(Self { status: "Unknown", cache_expiry_date_time: None, group_id_token: None });
        };
        Ok(Self {
            status: tag.status.as_str(),
            cache_expiry_date_time: tag.expiry_date,
            group_id_token: tag.parent_id_tag.map(|id| IdToken { id_token: id, kind: "Central".into() }),
        })
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub id_token_info: IdTokenInfo,
}

pub async fn handle(ctx: &StationContext<'_>, req: Request) -> Result<Handled<Response>, HandlerError> {
    let id_token_info = IdTokenInfo::lookup(ctx.store, ctx.account_id, &req.id_token).await?;
    if id_token_info.status != "Accepted" {
        let event =
            events::authorization_refused(ctx.station_id, &req.id_token.id_token, id_token_info.status, "Authorize");
        ctx.emit(event);
    }
    Ok(Handled::reply(Response { id_token_info }))
}

#[cfg(test)]
mod tests {
    use crate::model::{IdTag, TagStatus};
    use crate::ocpp::common::test_support::{Fixture, ACCOUNT};
    use crate::ocpp::Version;
    use crate::store::prelude::*;
    use serde_json::json;

    #[tokio::test]
    async fn tokens_are_answered_from_the_tenants_tags() {
        let f = Fixture::with_version(Version::V201).await;
        let tag = IdTag {
            id_tag: "CARD-1".into(),
            status: TagStatus::Accepted,
            expiry_date: None,
            parent_id_tag: Some("FLEET".into()),
            updated_at: chrono::Utc::now(),
        };
        f.store.put_id_tag(&ACCOUNT.into(), &tag).await.unwrap();
        let r = f.ok("Authorize", json!({"idToken": {"idToken": "CARD-1", "type": "ISO14443"}})).await;
        assert_eq!(r["idTokenInfo"]["status"], "Accepted");
        assert_eq!(r["idTokenInfo"]["groupIdToken"], json!({"idToken": "FLEET", "type": "Central"}));
        let r = f.ok("Authorize", json!({"idToken": {"idToken": "NOBODY", "type": "ISO14443"}})).await;
        assert_eq!(r["idTokenInfo"]["status"], "Unknown");
        let r = f.ok("Authorize", json!({"idToken": {"idToken": "", "type": "NoAuthorization"}})).await;
        assert_eq!(r["idTokenInfo"]["status"], "Accepted");
    }
}
