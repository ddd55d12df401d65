//! BootNotification (2.0.1): the station introduces itself; the answer depends on its registration.

use crate::model::{BootInfo, Registration};
use crate::ocpp::common::boot::record_boot;
use crate::ocpp::common::notice::Notice;
use crate::ocpp::context::{Handled, HandlerError, StationContext};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Modem {
    pub iccid: Option<String>,
    pub imsi: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChargingStation {
    pub serial_number: Option<String>,
    pub model: String,
    pub vendor_name: String,
    pub firmware_version: Option<String>,
    pub modem: Option<Modem>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub charging_station: ChargingStation,
    pub reason: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub current_time: DateTime<Utc>,
    pub interval: u64,
    pub status: &'static str,
}

pub async fn handle(ctx: &StationContext<'_>, req: Request) -> Result<Handled<Response>, HandlerError> {
    let now = Utc::now();
    let cs = req.charging_station;
    let (iccid, imsi) = cs.modem.map(|m| (m.iccid, m.imsi)).unwrap_or((None, None));
    tracing::info!(station = ctx.station_id.as_str(), reason = %req.reason, "boot");
    let boot = BootInfo {
        charge_point_vendor: cs.vendor_name,
        charge_point_model: cs.model,
        charge_point_serial_number: cs.serial_number,
        charge_box_serial_number: None,
        firmware_version: cs.firmware_version,
        iccid,
        imsi,
        meter_type: None,
        meter_serial_number: None,
        booted_at: now,
    };
    let (registration, interval) = record_boot(ctx, boot).await?;
    let status = match registration {
        Registration::Accepted => "Accepted",
        Registration::Pending => "Pending",
        Registration::Blocked => "Rejected",
    };
    Ok(Handled::with_notice(
        Response { current_time: now, interval: interval.as_secs(), status },
        Notice::Booted { registration },
    ))
}
