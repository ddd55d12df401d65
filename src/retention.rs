//! The retention pass: every `retention.interval_secs`, a walk over every account that removes, kind
//! by kind, what is older than the account's period (its own, else the node's default), a batch
//! at a time with a pause between batches, so that station traffic never waits behind it. What is
//! old is the model's rule ([`crate::model::RetentionPeriods`], [`crate::model::cutoff`]); how it
//! is found and removed is each store's ([`AccountStore::prune`]).

use crate::config::RetentionSettings;
use crate::metrics as m;
use crate::model::{cutoff, DataKind, FeedCutoffs};

/// The retention counter's label for events of the tenants' feeds.
const FEED: &str = "feed_events";
use crate::store::{AccountStore, StoreResult};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// Accounts read from the store at a time.
const ACCOUNTS_AT_A_TIME: usize = 100;

/// What one pass removed, by kind, over how many accounts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub accounts: usize,
    pub removed: BTreeMap<&'static str, usize>,
}

/// One pass over every account at `now`.
pub async fn pass(
    store: &dyn AccountStore,
    settings: &RetentionSettings,
    now: DateTime<Utc>,
) -> StoreResult<PassReport> {
    let defaults = settings.defaults();
    let mut report = PassReport::default();
    let mut accounts_after = None;
    loop {
        let (ids, next) = store.account_ids(accounts_after, ACCOUNTS_AT_A_TIME).await?;
        for id in ids {
            // Gone since it was listed (erased): nothing of it to keep or remove.
            let Some(account) = store.account(&id).await? else { continue };
            report.accounts += 1;
            let mut feed_cutoffs = FeedCutoffs::default();
            for kind in DataKind::ALL {
                let Some(days) = account.retention.effective(kind, &defaults) else { continue };
                let before = cutoff(now, days);
                feed_cutoffs.set(kind, before);
                let mut after = None;
                loop {
                    let step = store.prune(&id, kind, before, after, settings.batch).await?;
                    if step.removed > 0 {
                        metrics::counter!(m::RETENTION_PRUNED, "kind" => kind.as_str()).increment(step.removed as u64);
                        *report.removed.entry(kind.as_str()).or_default() += step.removed;
                    }
                    let Some(next) = step.next else { break };
                    after = Some(next);
                    if !settings.pause().is_zero() {
                        tokio::time::sleep(settings.pause()).await;
                    }
                }
            }
            // The feed last: each event goes with the kind of data it describes.
            let mut after = None;
            loop {
                let step = store.prune_feed(&id, &feed_cutoffs, after, settings.batch).await?;
                if step.removed > 0 {
                    metrics::counter!(m::RETENTION_PRUNED, "kind" => FEED).increment(step.removed as u64);
                    *report.removed.entry(FEED).or_default() += step.removed;
                }
                let Some(next) = step.next else { break };
                after = Some(next);
                if !settings.pause().is_zero() {
                    tokio::time::sleep(settings.pause()).await;
                }
            }
        }
        let Some(next) = next else { break };
        accounts_after = Some(next);
    }
    Ok(report)
}

/// Registers the retention series at zero, so that a fresh node already exports them.
pub fn register_metrics() {
    for kind in DataKind::ALL {
        metrics::counter!(m::RETENTION_PRUNED, "kind" => kind.as_str()).increment(0);
    }
    metrics::counter!(m::RETENTION_PRUNED, "kind" => FEED).increment(0);
    for outcome in ["done", "failed", "skipped"] {
        metrics::counter!(m::RETENTION_PASSES, "outcome" => outcome).increment(0);
    }
}

/// The lease that lets one node of a cluster run the passes.
const LEASE: &str = "retention";

/// Runs a pass every `interval_secs`, the first one interval after start-up, until the runtime
/// stops, on the node `node` when it holds the retention lease (one node of a cluster at a time;
/// the lease outlives an interval by half of one, so its holder keeps it and another node takes over
/// when the holder is gone). A pass that fails (the store unreachable) is logged and counted; the
/// next one starts over.
pub fn spawn(store: Arc<dyn AccountStore>, settings: RetentionSettings, node: String) -> tokio::task::JoinHandle<()> {
    register_metrics();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(settings.interval());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once: the first pass waits one interval, off the busy start-up.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let started = Instant::now();
            let lease = settings.interval() + settings.interval() / 2;
            match store.lease(LEASE, &node, lease).await {
                Ok(true) => {}
                Ok(false) => {
                    metrics::counter!(m::RETENTION_PASSES, "outcome" => "skipped").increment(1);
                    tracing::debug!("retention pass skipped: another node holds the lease");
                    continue;
                }
                Err(e) => {
                    metrics::counter!(m::RETENTION_PASSES, "outcome" => "failed").increment(1);
                    tracing::warn!(error = %e, "retention pass not started: the lease could not be read");
                    continue;
                }
            }
            match pass(&*store, &settings, Utc::now()).await {
                Ok(report) => {
                    metrics::counter!(m::RETENTION_PASSES, "outcome" => "done").increment(1);
                    tracing::info!(accounts = report.accounts, removed = ?report.removed,
                        seconds = started.elapsed().as_secs_f64(), "retention pass done");
                }
                Err(e) => {
                    metrics::counter!(m::RETENTION_PASSES, "outcome" => "failed").increment(1);
                    tracing::warn!(error = %e, "retention pass failed; the next one starts over");
                }
            }
            metrics::gauge!(m::RETENTION_PASS_DURATION).set(started.elapsed().as_secs_f64());
        }
    })
}
