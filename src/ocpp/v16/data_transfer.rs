//! DataTransfer from a station: vendor-specific data. No vendor extensions are installed, so the
//! answer is UnknownVendorId, and the message is kept for the record; past the station's event
//! quota it is Rejected and not kept.

use crate::ocpp::common::data_transfer;
use crate::ocpp::context::{Handled, HandlerError, StationContext};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub vendor_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Response {
    pub status: &'static str,
}

pub async fn handle(ctx: &StationContext<'_>, req: Request) -> Result<Handled<Response>, HandlerError> {
    let payload = serde_json::to_value(&req).unwrap_or_default();
    let status = if data_transfer::keep(ctx, &payload).await? { "UnknownVendorId" } else { "Rejected" };
    Ok(Handled::reply(Response { status }))
}

#[cfg(test)]
mod tests {
    use crate::ocpp::common::test_support::*;
    use crate::store::prelude::*;
    use serde_json::json;

    #[tokio::test]
    async fn is_kept_and_answered_unknown_vendor() {
        let f = Fixture::new().await;
        let r = f.ok("DataTransfer", json!({"vendorId": "com.acme", "messageId": "m", "data": "x"})).await;
        assert_eq!(r, json!({"status": "UnknownVendorId"}));
        let ev = f.store.events(&ACCOUNT.into(), &STATION.into()).await.unwrap();
        assert_eq!((ev[0].action.as_str(), &ev[0].payload["vendorId"]), ("DataTransfer", &json!("com.acme")));
    }
}
