//! Erasing an account, as far as its stations go: its records go first (so its tokens, password
//! and station credentials stop working at once), then its sessions are closed on every node, and
//! once they are gone — a session may write while it finishes its last message — what they wrote
//! is swept too. Each node of a cluster also sweeps its own write-ahead log ([`sweep_here`]), so
//! nothing it still holds of the account reaches the shared store after the erasure.

use super::local::LocalFleet;
use super::{Fleet, FleetError};
use crate::actors::tracker::SessionTracker;
use crate::ids::AccountId;
use crate::metrics as m;
use crate::store::{self, AccountStore, ErasureReport, StationStore, StoreError};
use std::time::Duration;

/// How long erasure waits for the account's station sessions to finish the message they are handling.
pub const SESSION_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Why an erasure did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

/// What an erasure removed, and how many sessions it closed on this node.
pub struct Erased {
    pub report: ErasureReport,
    pub sessions: usize,
}

/// Erases the account's records and closes its sessions everywhere.
pub async fn erase_account(
    fleet: &Fleet,
    stations: &dyn StationStore,
    accounts: &dyn AccountStore,
    account_id: &AccountId,
) -> Result<Erased, ErasureError> {
    let mut report = store::erase_account(stations, accounts, account_id).await?;
    stations.flush().await?;
    let (tracker, guard) = SessionTracker::with_guard();
    let sessions = fleet.close_account(account_id, guard).await?;
    if !tracker.close_and_wait(SESSION_CLOSE_WAIT).await {
        tracing::warn!(account = %account_id, "erased account's sessions still closing; sweeping anyway");
    }
    // A session may have written while it finished its last message: sweep again once they are gone.
    let late = store::erase_account(stations, accounts, account_id).await?;
    stations.flush().await?;
    absorb(&mut report, &late);
    metrics::gauge!(m::QUEUED_COMMANDS).decrement(report.queued_commands as f64);
    Ok(Erased { report, sessions })
}

/// Another node erased the account: close its sessions here, wait for them, and sweep what this
/// node still holds of it.
pub async fn sweep_here(
    local: &LocalFleet,
    stations: &dyn StationStore,
    accounts: &dyn AccountStore,
    account_id: &AccountId,
) {
    let (tracker, guard) = SessionTracker::with_guard();
    if let Err(e) = local.close_account(account_id, guard).await {
        tracing::error!(account = %account_id, error = %e, "closing an erased account's sessions failed");
    }
    tracker.close_and_wait(SESSION_CLOSE_WAIT).await;
    match store::erase_account(stations, accounts, account_id).await {
        Ok(_) => tracing::info!(account = %account_id, "erased account: sessions closed, local records swept"),
        Err(e) => tracing::error!(account = %account_id, error = %e, "sweeping an erased account failed"),
    }
}

fn absorb(report: &mut ErasureReport, late: &ErasureReport) {
    report.stations += late.stations;
    report.id_tags += late.id_tags;
    report.transactions += late.transactions;
    report.meter_values += late.meter_values;
    report.events += late.events;
    report.commands += late.commands;
    report.queued_commands += late.queued_commands;
    report.tokens += late.tokens;
    report.login_events += late.login_events;
    report.consents += late.consents;
    report.device_variables += late.device_variables;
}
