//! BootNotification: the station introduces itself; the answer depends on its registration.

use crate::model::{BootInfo, Registration};
use crate::ocpp::common::notice::Notice;
use crate::ocpp::context::{Handled, HandlerError, StationContext};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub charge_point_vendor: String,
    pub charge_point_model: String,
    pub charge_point_serial_number: Option<String>,
    pub charge_box_serial_number: Option<String>,
    pub firmware_version: Option<String>,
    pub iccid: Option<String>,
    pub imsi: Option<String>,
    pub meter_type: Option<String>,
    pub meter_serial_number: Option<String>,
}

#[derive(Debug, Serialize)]
pub enum RegistrationStatus {
    Accepted,
    Pending,
    Rejected,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub status: RegistrationStatus,
    pub current_time: DateTime<Utc>,
    /// Heartbeat interval when accepted, otherwise the wait before the next BootNotification (seconds).
    pub interval: u64,
}

pub async fn handle(ctx: &StationContext<'_>, req: Request) -> Result<Handled<Response>, HandlerError> {
    let now = Utc::now();
    let boot = BootInfo {
        charge_point_vendor: req.charge_point_vendor,
        charge_point_model: req.charge_point_model,
        charge_point_serial_number: req.charge_point_serial_number,
        charge_box_serial_number: req.charge_box_serial_number,
        firmware_version: req.firmware_version,
        iccid: req.iccid,
        imsi: req.imsi,
        meter_type: req.meter_type,
        meter_serial_number: req.meter_serial_number,
        booted_at: now,
    };
    let (registration, interval) = crate::ocpp::common::boot::record_boot(ctx, boot).await?;
    let status = match registration {
        Registration::Accepted => RegistrationStatus::Accepted,
        Registration::Pending => RegistrationStatus::Pending,
        Registration::Blocked => RegistrationStatus::Rejected,
    };
    Ok(Handled::with_notice(
        Response { status, current_time: now, interval: interval.as_secs() },
        Notice::Booted { registration },
    ))
}

#[cfg(test)]
mod tests {
    use crate::model::Registration;
    use crate::ocpp::common::test_support::*;
    use crate::store::prelude::*;
    use serde_json::json;

    #[tokio::test]
    async fn accepted_station_gets_the_heartbeat_interval_and_its_boot_info_is_kept() {
        let f = Fixture::new().await;
        let r = f
            .ok(
                "BootNotification",
                json!({"chargePointVendor": "ACME", "chargePointModel": "X1", "firmwareVersion": "1.2"}),
            )
            .await;
        assert_eq!(r["status"], "Accepted");
        assert_eq!(r["interval"], 300);
        assert!(r["currentTime"].as_str().unwrap().ends_with('Z'));
        let s = f.store.station(&ACCOUNT.into(), &STATION.into()).await.unwrap().unwrap();
        let boot = s.boot.unwrap();
        assert_eq!((boot.charge_point_vendor.as_str(), boot.firmware_version.as_deref()), ("ACME", Some("1.2")));
    }

    #[tokio::test]
    async fn pending_and_blocked_stations_are_told_to_retry_later() {
        let f = Fixture::new().await;
        for (reg, status) in [(Registration::Pending, "Pending"), (Registration::Blocked, "Rejected")] {
            f.store.update_station(&ACCOUNT.into(), &STATION.into(), &|s| s.registration = reg).await.unwrap();
            let r = f.ok("BootNotification", json!({"chargePointVendor": "A", "chargePointModel": "B"})).await;
            assert_eq!(r["status"], status);
            assert_eq!(r["interval"], 60);
        }
    }
}
