//! The dispatcher: delivers each enabled webhook's events, in feed order, at least once.
//!
//! The feed itself is the outbox. Each webhook has a cursor in the store (the id of the last event
//! it is done with); its worker reads up to [`BATCH`] events of the feed after the cursor, posts
//! each event the webhook wants, and stores the cursor past the events the receiver answered 2xx
//! (with the delivery log) once the batch is through, or at its first failure. A node that dies
//! mid-batch loses nothing: the next worker starts from the stored cursor and posts again what
//! was not stored as done (receivers dedupe by the `Ocpp-Css-Event-Id` header). Deliveries are one
//! at a time per webhook, so a station's events (and every other's) arrive in the order they
//! happened.
//!
//! A failed attempt is tried again after a back-off that doubles, with jitter, up to
//! `webhooks.retry_max_secs`; once an event has failed for `webhooks.retry_for_secs` the webhook
//! is disabled, with that event undelivered, and the tenant is told by a `webhook.disabled`
//! event. Enabling it again (PATCH) resumes from there.
//!
//! In a cluster one node at a time dispatches (the `webhooks` lease); the others stand by.

use super::backoff::retry_delay;
use super::client::{Attempt, Sender};
use crate::config::WebhookSettings;
use crate::ids::AccountId;
use crate::metrics as m;
use crate::model::{events, record_delivery, DeliveryOutcome, FeedEvent, Webhook, WebhookDelivery};
use crate::store::{AccountStore, FeedSignal, StoreResult};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The lease that lets one node of a cluster dispatch.
const LEASE: &str = "webhooks";
/// How often the dispatcher looks for new, changed and removed webhooks (and renews its lease).
const REFRESH: Duration = Duration::from_secs(2);
/// How long the lease lasts without renewal: another node takes over after this.
const LEASE_TTL: Duration = Duration::from_secs(10);
/// Events a worker reads from the feed at a time.
const BATCH: usize = 100;
/// Events counted at most per webhook for the outbox depth gauge.
const DEPTH_BOUND: usize = 10_000;
/// How often the outbox gauges are measured.
const MEASURE_EVERY: Duration = Duration::from_secs(10);

type HookKey = (AccountId, String);

/// What the dispatcher needs, shared with its workers.
struct Shared {
    store: Arc<dyn AccountStore>,
    settings: WebhookSettings,
    signal: Arc<FeedSignal>,
    sender: Sender,
    /// Between two looks at the feed when nothing woke a worker.
    poll: Duration,
}

/// Starts the dispatcher on the current runtime; it runs until the returned task is aborted.
pub fn spawn(
    store: Arc<dyn AccountStore>,
    settings: WebhookSettings,
    signal: Arc<FeedSignal>,
    node: String,
    poll: Duration,
) -> anyhow::Result<JoinHandle<()>> {
    register_metrics();
    let sender = Sender::new(settings.timeout(), settings.allow_private_destinations)?;
    let shared = Arc::new(Shared { store, settings, signal, sender, poll });
    Ok(tokio::spawn(run(shared, node)))
}

/// Registers the webhook series at zero, so that a fresh node already exports them.
pub fn register_metrics() {
    for outcome in ["delivered", "http_error", "unreachable"] {
        metrics::counter!(m::WEBHOOK_DELIVERIES, "outcome" => outcome).increment(0);
    }
    metrics::counter!(m::WEBHOOKS_DISABLED).increment(0);
    metrics::gauge!(m::WEBHOOK_OUTBOX_DEPTH).set(0.0);
    metrics::gauge!(m::WEBHOOK_OUTBOX_OLDEST_AGE).set(0.0);
}

/// Aborts its workers when the dispatcher ends (aborted with the application).
#[derive(Default)]
struct Workers(HashMap<HookKey, JoinHandle<()>>);

impl Drop for Workers {
    fn drop(&mut self) {
        for (_, worker) in self.0.drain() {
            worker.abort();
        }
    }
}

async fn run(shared: Arc<Shared>, node: String) {
    let mut workers = Workers::default();
    let mut last_measure = tokio::time::Instant::now() - MEASURE_EVERY;
    loop {
        match shared.store.lease(LEASE, &node, LEASE_TTL).await {
            Ok(true) => {
                if let Err(e) = refresh(&shared, &mut workers).await {
                    crate::warn_limited!(error = %e, "webhook dispatcher could not list the webhooks");
                }
                if last_measure.elapsed() >= MEASURE_EVERY {
                    last_measure = tokio::time::Instant::now();
                    measure(&shared, workers.0.keys().cloned().collect()).await;
                }
            }
            Ok(false) => {
                // Another node dispatches: this one's workers stop, so no event goes out twice at once.
                workers.0.drain().for_each(|(_, w)| w.abort());
            }
            Err(e) => {
                crate::warn_limited!(error = %e, "webhook dispatcher: the lease could not be read");
                workers.0.drain().for_each(|(_, w)| w.abort());
            }
        }
        tokio::time::sleep(REFRESH).await;
    }
}

/// Starts a worker for each enabled webhook without one; stops those of webhooks gone or disabled.
async fn refresh(shared: &Arc<Shared>, workers: &mut Workers) -> StoreResult<()> {
    let mut enabled = Vec::new();
    for account_id in shared.store.webhook_accounts().await? {
        for hook in shared.store.webhooks(&account_id).await? {
            if hook.enabled {
                enabled.push((account_id.clone(), hook.id));
            }
        }
    }
    workers.0.retain(|key, worker| {
        let keep = enabled.contains(key) && !worker.is_finished();
        if !keep {
            worker.abort();
        }
        keep
    });
    for key in enabled {
        if let std::collections::hash_map::Entry::Vacant(slot) = workers.0.entry(key) {
            let (account_id, id) = slot.key().clone();
            slot.insert(tokio::spawn(work(shared.clone(), account_id, id)));
        }
    }
    Ok(())
}

/// Sets the outbox gauges: events waiting for the dispatched webhooks (each counted up to
/// [`DEPTH_BOUND`]) and the age of the oldest.
async fn measure(shared: &Shared, hooks: Vec<HookKey>) {
    let (mut depth, mut oldest) = (0usize, None);
    for (account_id, id) in hooks {
        let Ok(Some(hook)) = shared.store.webhook(&account_id, &id).await else { continue };
        let Ok(Some(mut cursor)) = shared.store.webhook_cursor(&account_id, &id).await else { continue };
        let mut counted = 0;
        while counted < DEPTH_BOUND {
            let Ok(events) = shared.store.feed_after(&account_id, cursor, BATCH).await else { break };
            let Some(last) = events.last() else { break };
            cursor = last.id;
            for event in events.iter().filter(|e| hook.wants(e.kind)) {
                counted += 1;
                oldest = Some(oldest.map_or(event.time, |o: chrono::DateTime<Utc>| o.min(event.time)));
            }
            if events.len() < BATCH {
                break;
            }
        }
        depth += counted;
    }
    metrics::gauge!(m::WEBHOOK_OUTBOX_DEPTH).set(depth as f64);
    let age = oldest.map_or(0.0, |t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0);
    metrics::gauge!(m::WEBHOOK_OUTBOX_OLDEST_AGE).set(age);
}

/// One webhook's worker: until the webhook is gone or disabled (or the task aborted), delivers the
/// events after its cursor. The cursor is read once, then kept here: only this worker moves it
/// while it runs. A store failure is waited out.
async fn work(shared: Arc<Shared>, account_id: AccountId, id: String) {
    tracing::debug!(account = %account_id, webhook = %id, "webhook worker started");
    let mut cursor = None;
    loop {
        let step = match cursor.as_mut() {
            Some(cursor) => deliver_some(&shared, &account_id, &id, cursor).await,
            None => stored_cursor(&shared.store, &account_id, &id).await.map(|c| {
                cursor = Some(c);
                true
            }),
        };
        match step {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                crate::warn_limited!(account = %account_id, webhook = %id, error = %e, "webhook worker: store failed; trying again");
                tokio::time::sleep(shared.poll.max(Duration::from_secs(1))).await;
            }
        }
    }
}

/// Where the webhook's delivery stands in the store.
async fn stored_cursor(store: &Arc<dyn AccountStore>, account_id: &AccountId, id: &str) -> StoreResult<u64> {
    match store.webhook_cursor(account_id, id).await? {
        Some(cursor) => Ok(cursor),
        None => {
            // Created without one (it is set when the API creates a webhook): from now on.
            let head = store.feed_head(account_id).await?;
            store.set_webhook_cursor(account_id, id, head).await?;
            Ok(head)
        }
    }
}

/// Delivers what is waiting for the webhook after `cursor`, or waits for more; false once the
/// webhook is gone or disabled.
async fn deliver_some(shared: &Shared, account_id: &AccountId, id: &str, cursor: &mut u64) -> StoreResult<bool> {
    let store = &shared.store;
    let listener = shared.signal.listen(account_id);
    let woken = listener.notified();
    tokio::pin!(woken);
    woken.as_mut().enable();
    let Some(hook) = store.webhook(account_id, id).await?.filter(|h| h.enabled) else { return Ok(false) };
    let events = store.feed_after(account_id, *cursor, BATCH).await?;
    tracing::trace!(webhook = %id, cursor = *cursor, events = events.len(), "webhook worker read the feed");
    if events.is_empty() {
        tokio::select! {
            _ = &mut woken => {}
            _ = tokio::time::sleep(shared.poll) => {}
        }
        return Ok(true);
    }
    // The cursor and the log are written once per batch, not per delivery: a node that dies
    // mid-batch sends the batch's delivered events again (at least once), and a webhook is not
    // held to one durable write per event.
    let mut log = store.webhook_deliveries(account_id, id).await?;
    let mut done = *cursor;
    let mut going = true;
    for event in events {
        if hook.wants(event.kind) && !deliver(shared, &hook, &event, &mut log).await? {
            going = false;
            break;
        }
        done = event.id;
    }
    // Not for a webhook removed meanwhile: its state would outlive it.
    if store.webhook(account_id, id).await?.is_none() {
        return Ok(false);
    }
    if done != *cursor {
        store.set_webhook_cursor(account_id, id, done).await?;
        *cursor = done;
    }
    store.put_webhook_deliveries(account_id, id, &log).await?;
    Ok(going)
}

/// Posts one event until the receiver takes it (true), or until it has failed for the retry
/// period, when the webhook is disabled (false; also when it was disabled or removed meanwhile).
async fn deliver(
    shared: &Shared,
    hook: &Webhook,
    event: &FeedEvent,
    log: &mut Vec<WebhookDelivery>,
) -> StoreResult<bool> {
    let store = &shared.store;
    let settings = &shared.settings;
    let body = serde_json::to_vec(event)?;
    let first_attempt_at = Utc::now();
    let mut hook = hook.clone();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let attempt = shared.sender.post(&hook.url, &hook.secret, event.id, body.clone()).await;
        tracing::debug!(webhook = %hook.id, event = event.id, status = ?attempt.status, error = ?attempt.error, "webhook delivery attempt");
        let outcome = attempt_outcome(&attempt);
        metrics::counter!(m::WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
        metrics::histogram!(m::WEBHOOK_DELIVERY_DURATION).record(attempt.latency.as_secs_f64());
        let delivered = attempt.delivered();
        let failing_for = Utc::now() - first_attempt_at;
        let give_up = !delivered && failing_for.to_std().unwrap_or_default() >= settings.retry_for();
        let entry = WebhookDelivery {
            event_id: event.id,
            event_type: event.kind,
            outcome: if delivered {
                DeliveryOutcome::Delivered
            } else if give_up {
                DeliveryOutcome::GaveUp
            } else {
                DeliveryOutcome::Retrying
            },
            attempts,
            status_code: attempt.status,
            latency_ms: attempt.latency.as_millis() as u64,
            error: attempt.error.clone(),
            first_attempt_at,
            last_attempt_at: Utc::now(),
        };
        record_delivery(log, entry, settings.delivery_log.max(1));
        if delivered {
            return Ok(true);
        }
        // A failing delivery shows in the log at once (the batch's successes are written with it).
        store.put_webhook_deliveries(&hook.account_id, &hook.id, log).await?;
        tracing::info!(account = %hook.account_id, webhook = %hook.id, event = event.id, attempts,
            status = ?attempt.status, error = ?attempt.error, "webhook delivery failed");
        if give_up {
            disable(shared, &hook, attempts, &attempt).await?;
            return Ok(false);
        }
        let delay = retry_delay(attempts, settings.retry_min(), settings.retry_max(), &mut rand::thread_rng());
        tokio::time::sleep(delay).await;
        // The tenant may have changed the URL or secret, disabled or removed it meanwhile.
        match store.webhook(&hook.account_id, &hook.id).await? {
            Some(fresh) if fresh.enabled => hook = fresh,
            _ => return Ok(false),
        }
    }
}

/// The metric label of an attempt.
fn attempt_outcome(attempt: &Attempt) -> &'static str {
    match (attempt.delivered(), attempt.status) {
        (true, _) => "delivered",
        (false, Some(_)) => "http_error",
        (false, None) => "unreachable",
    }
}

/// Disables a webhook that has failed for the retry period and tells the tenant.
async fn disable(shared: &Shared, hook: &Webhook, attempts: u32, last: &Attempt) -> StoreResult<()> {
    let last_error = match (last.status, &last.error) {
        (Some(status), _) => format!("HTTP {status}"),
        (None, Some(e)) => e.clone(),
        (None, None) => "no answer".to_string(),
    };
    let reason = format!(
        "deliveries failed for {}s ({attempts} attempts; last: {last_error})",
        shared.settings.retry_for().as_secs()
    );
    let disabled_reason = reason.clone();
    shared
        .store
        .update_webhook(&hook.account_id, &hook.id, &|h| {
            h.enabled = false;
            h.disabled_reason = Some(disabled_reason.clone());
            h.updated_at = Utc::now();
        })
        .await?;
    metrics::counter!(m::WEBHOOKS_DISABLED).increment(1);
    tracing::warn!(account = %hook.account_id, webhook = %hook.id, %reason, "webhook disabled");
    let feed = [events::webhook_disabled(&hook.id, &hook.url, &reason)];
    shared.store.add_feed_events(&hook.account_id, &feed).await?;
    m::feed_emitted(&feed);
    Ok(())
}
