//! Authorize: is this id tag allowed to charge?

use super::id_tag_info::IdTagInfo;
use crate::model::{events, TagStatus};
use crate::ocpp::context::{Handled, HandlerError, StationContext};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub id_tag: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub id_tag_info: IdTagInfo,
}

pub async fn handle(ctx: &StationContext<'_>, req: Request) -> Result<Handled<Response>, HandlerError> {
    let id_tag_info = IdTagInfo::lookup(ctx.store, ctx.account_id, &req.id_tag).await?;
    if id_tag_info.status != TagStatus::Accepted {
        ctx.emit(events::authorization_refused(ctx.station_id, &req.id_tag, id_tag_info.status.as_str(), "Authorize"));
    }
    Ok(Handled::reply(Response { id_tag_info }))
}

#[cfg(test)]
mod tests {
    use crate::model::{IdTag, TagStatus};
    use crate::ocpp::common::test_support::*;
    use crate::store::prelude::*;
    use chrono::{Duration, Utc};
    use serde_json::json;

    async fn put(
        f: &Fixture,
        tag: &str,
        status: TagStatus,
        expiry: Option<chrono::DateTime<Utc>>,
        parent: Option<&str>,
    ) {
        let t = IdTag {
            id_tag: tag.into(),
            status,
            expiry_date: expiry,
            parent_id_tag: parent.map(String::from),
            updated_at: Utc::now(),
        };
        f.store.put_id_tag(&ACCOUNT.into(), &t).await.unwrap();
    }

    #[tokio::test]
    async fn answers_from_the_tenants_id_tags() {
        let f = Fixture::new().await;
        let future = Utc::now() + Duration::days(1);
        put(&f, "GOOD", TagStatus::Accepted, Some(future), Some("FLEET")).await;
        put(&f, "OLD", TagStatus::Accepted, Some(Utc::now() - Duration::days(1)), None).await;
        put(&f, "BAD", TagStatus::Blocked, None, None).await;

        let r = f.ok("Authorize", json!({"idTag": "GOOD"})).await;
        assert_eq!(r["idTagInfo"]["status"], "Accepted");
        assert_eq!(r["idTagInfo"]["parentIdTag"], "FLEET");
        assert!(r["idTagInfo"]["expiryDate"].is_string());
        assert_eq!(f.ok("Authorize", json!({"idTag": "OLD"})).await["idTagInfo"]["status"], "Expired");
        assert_eq!(f.ok("Authorize", json!({"idTag": "BAD"})).await["idTagInfo"]["status"], "Blocked");
        assert_eq!(f.ok("Authorize", json!({"idTag": "NOBODY"})).await["idTagInfo"]["status"], "Invalid");
    }

    #[tokio::test]
    async fn another_tenants_tag_is_invalid() {
        let f = Fixture::new().await;
        let t = IdTag {
            id_tag: "THEIRS".into(),
            status: TagStatus::Accepted,
            expiry_date: None,
            parent_id_tag: None,
            updated_at: Utc::now(),
        };
        f.store.put_id_tag(&"other-account".into(), &t).await.unwrap();
        assert_eq!(f.ok("Authorize", json!({"idTag": "THEIRS"})).await["idTagInfo"]["status"], "Invalid");
    }
}
