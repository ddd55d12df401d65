//! What both versions' BootNotification do: keep what the station says and answer by its registration.

use crate::model::{events, BootInfo, Registration, StationChange};
use crate::ocpp::context::{HandlerError, StationContext};
use std::time::Duration;

/// Keeps what a BootNotification says about the station; answers its registration and the interval
/// to give it (heartbeat interval when accepted, retry interval otherwise).
pub(crate) async fn record_boot(
    ctx: &StationContext<'_>,
    boot: BootInfo,
) -> Result<(Registration, Duration), HandlerError> {
    let updated =
        ctx.store.change_station(ctx.account_id, ctx.station_id, &StationChange::Booted(boot.clone())).await?;
    // A station deleted while connected is treated as blocked; its session is being closed anyway.
    let registration = updated.map(|s| s.registration).unwrap_or(Registration::Blocked);
    ctx.emit(events::booted(ctx.station_id, &boot, registration));
    let interval = match registration {
        Registration::Accepted => ctx.settings.heartbeat_interval,
        Registration::Pending | Registration::Blocked => ctx.settings.boot_retry_interval,
    };
    Ok((registration, interval))
}
