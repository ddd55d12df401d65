//! FirmwareStatusNotification: progress of a firmware update asked by UpdateFirmware.

use crate::ocpp::context::{Handled, HandlerError, StationContext};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
pub struct Request {
    pub status: String,
}

#[derive(Debug, Serialize)]
pub struct Response {}

pub async fn handle(ctx: &StationContext<'_>, req: Request) -> Result<Handled<Response>, HandlerError> {
    crate::ocpp::common::firmware_status::set_firmware_status(ctx, req.status).await?;
    Ok(Handled::reply(Response {}))
}

#[cfg(test)]
mod tests {
    use crate::ocpp::common::test_support::*;
    use crate::store::prelude::*;
    use serde_json::json;

    #[tokio::test]
    async fn firmware_and_diagnostics_progress_is_kept_on_the_station() {
        let f = Fixture::new().await;
        f.ok("FirmwareStatusNotification", json!({"status": "Installing"})).await;
        f.ok("DiagnosticsStatusNotification", json!({"status": "Uploaded"})).await;
        let s = f.store.station(&ACCOUNT.into(), &STATION.into()).await.unwrap().unwrap();
        assert_eq!(s.firmware_status.unwrap().status, "Installing");
        assert_eq!(s.diagnostics_status.unwrap().status, "Uploaded");
        assert_eq!(
            f.error_code("FirmwareStatusNotification", json!({"status": "Exploded"})).await,
            "PropertyConstraintViolation"
        );
    }
}
