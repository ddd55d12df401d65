//! SignCertificate (A02/A03): the station asks for its CSR to be signed by the station CA
//! ([`crate::ocpp::common::sign_certificate`]).

use crate::ocpp::common::sign_certificate::sign;
use crate::ocpp::context::{Handled, HandlerError, StationContext};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub csr: String,
    pub certificate_type: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Response {
    pub status: &'static str,
}

pub async fn handle(ctx: &StationContext<'_>, req: Request) -> Result<Handled<Response>, HandlerError> {
    let (accepted, notice) = sign(ctx, &req.csr, req.certificate_type.as_deref()).await?;
    let response = Response { status: if accepted { "Accepted" } else { "Rejected" } };
    Ok(Handled { response, notice })
}
