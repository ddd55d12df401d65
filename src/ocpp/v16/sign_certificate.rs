//! SignCertificate (security extension): the station asks for its CSR to be signed. No certificate
//! authority is configured for stations, so the request is kept for the record and Rejected.

use crate::ocpp::context::{Handled, HandlerError, StationContext};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
pub struct Request {
    pub csr: String,
}

#[derive(Debug, Serialize)]
pub struct Response {
    pub status: &'static str,
}

pub async fn handle(ctx: &StationContext<'_>, req: Request) -> Result<Handled<Response>, HandlerError> {
    crate::ocpp::common::events::record_event(ctx, "SignCertificate", &serde_json::json!({"csr": req.csr})).await?;
    Ok(Handled::reply(Response { status: "Rejected" }))
}
