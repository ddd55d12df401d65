//! `GET /events`: the tenant's feed, live, as Server-Sent Events; and [`emit`], how an API handler
//! tells the feed what it changed.
//!
//! A stream reads the feed from the store after the position it is at (its `Last-Event-ID`, its
//! `after`, or the feed's head when it names neither), sends what passes its filter, and waits
//! for the store to append more: woken by this node's appends ([`crate::store::FeedSignal`]), and
//! looking again every `events.poll_interval_ms` for what other nodes appended. Since it reads
//! the feed itself rather than a copy of what happened, a client that reconnects with the id of the
//! last event it got misses nothing and gets nothing twice.
//!
//! What a stream holds is bounded: a few chunks of at most `events.batch` events wait for the
//! client; one that takes nothing for `events.send_timeout_secs` is cut off (it resumes with its
//! `Last-Event-ID`). Streams are bounded per tenant and per node (`limits.event_streams*`).

use super::{ApiError, Tenant};
use crate::ids::{AccountId, StationId};
use crate::limits::{self, Limit};
use crate::metrics as m;
use crate::model::{EventDraft, EventType, FeedEvent, FeedFilter};
use crate::state::AppState;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use std::fmt::Write as _;
use std::time::Duration;
use tokio::sync::mpsc;

/// Chunks (each up to `events.batch` events) waiting for a stream's client.
const STREAM_BUFFER: usize = 4;

/// Appends what an API request changed to the tenant's feed. The change itself is done and
/// durable already, so a failure here is logged rather than answered.
pub(crate) async fn emit(state: &AppState, account_id: &AccountId, event: EventDraft) {
    let feed = [event];
    match state.account_store.add_feed_events(account_id, &feed).await {
        Ok(()) => m::feed_emitted(&feed),
        Err(e) => {
            crate::error_limited!(account = %account_id, error = %e, kind = %feed[0].kind, "could not append an event to the feed")
        }
    }
}

/// Registers the feed's and the streams' series at zero, so that a fresh node already exports them.
pub fn register_metrics() {
    for kind in EventType::ALL {
        metrics::counter!(m::EVENTS_EMITTED, "type" => kind.as_str()).increment(0);
    }
    metrics::gauge!(m::SSE_CLIENTS).increment(0.0);
    for reason in [SLOW_CLIENT, ACCOUNT_ERASED, "store_error"] {
        metrics::counter!(m::SSE_CUTOFFS, "reason" => reason).increment(0);
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Comma-separated event types; every type when absent.
    types: Option<String>,
    /// One station's events only.
    station: Option<StationId>,
    /// Start after this event id (as `Last-Event-ID` does; the header wins when both are given).
    after: Option<u64>,
}

/// The filter a query names; 400 for a type that does not exist.
pub(super) fn parse_types(types: Option<&str>) -> Result<Vec<EventType>, ApiError> {
    let Some(types) = types else { return Ok(Vec::new()) };
    types
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            EventType::parse(t).ok_or_else(|| {
                let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                ApiError::invalid("invalid_query", format!("unknown event type {t:?}; types are: {}", known.join(", ")))
            })
        })
        .collect()
}

/// One event as Server-Sent Events lines: its id, its type as the event name, its JSON as data.
fn write_event(out: &mut String, event: &FeedEvent) {
    // A FeedEvent is plain JSON (no map with non-string keys), so this does not fail; were it to,
    // the event would go out without data rather than bring the stream down.
    let data = serde_json::to_string(event).unwrap_or_default();
    let _ = write!(out, "id: {}\nevent: {}\ndata: {}\n\n", event.id, event.kind, data);
}

pub async fn stream(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    req: HttpRequest,
    q: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let filter = FeedFilter { types: parse_types(q.types.as_deref())?, station: q.station };
    let last_event_id = match req.headers().get("last-event-id") {
        Some(v) => Some(v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()).ok_or_else(|| {
            ApiError::invalid("invalid_header", "Last-Event-ID must be the id of an event (a number)")
        })?),
        None => None,
    };
    let node_place = state.limits.node_event_streams.acquire(&()).ok_or_else(|| {
        limits::hit(Limit::EventStreams);
        ApiError::Unavailable(format!(
            "this node serves {} event streams already (limits.event_streams); try another node or later",
            state.limits.settings.event_streams
        ))
    })?;
    let tenant_place = state.limits.event_streams.acquire(&account.id).ok_or_else(|| {
        limits::hit(Limit::EventStreams);
        ApiError::RateLimited {
            retry_after: Duration::from_secs(1),
            message: format!(
                "this account holds {} event streams on this node already (limits.event_streams_per_tenant)",
                state.limits.settings.event_streams_per_tenant
            ),
        }
    })?;
    let start = match last_event_id.or(q.after) {
        Some(id) => id,
        None => state.account_store.feed_head(&account.id).await?,
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(STREAM_BUFFER);
    let reader = Reader { state: state.clone(), account_id: account.id.clone(), filter, cursor: start, tx };
    actix_rt::spawn(async move {
        let _places = (node_place, tenant_place);
        metrics::gauge!(m::SSE_CLIENTS).increment(1.0);
        let end = reader.run().await;
        metrics::gauge!(m::SSE_CLIENTS).decrement(1.0);
        if let Some(reason) = end {
            metrics::counter!(m::SSE_CUTOFFS, "reason" => reason).increment(1);
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        // Tells nginx-like proxies not to hold the stream back.
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body))
}

/// One stream's reading of the feed.
struct Reader {
    state: web::Data<AppState>,
    account_id: AccountId,
    filter: FeedFilter,
    /// The id of the last event read (sent, or passed over by the filter).
    cursor: u64,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl Reader {
    /// Reads and sends until the client goes (None) or the stream is cut off (the reason).
    async fn run(mut self) -> Option<&'static str> {
        let settings = self.state.settings.events.clone();
        let signal = self.state.feed_signal.listen(&self.account_id);
        // A retry interval for EventSource clients, and the start of the body right away, so the
        // client knows the stream is open before the first event.
        if let Err(end) = self.send(Bytes::from_static(b"retry: 1000\n\n"), settings.send_timeout()).await {
            return end;
        }
        let mut last_sent = tokio::time::Instant::now();
        loop {
            let woken = signal.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let events = match self
                .state
                .account_store
                .feed_after(&self.account_id, self.cursor, settings.batch.max(1))
                .await
            {
                Ok(events) => events,
                Err(e) => {
                    crate::warn_limited!(account = %self.account_id, error = %e, "event stream: the feed could not be read; ending it");
                    return Some("store_error");
                }
            };
            let full = events.len() >= settings.batch.max(1);
            let mut chunk = String::new();
            for event in &events {
                if self.filter.matches(event) {
                    write_event(&mut chunk, event);
                }
                self.cursor = event.id;
            }
            if !chunk.is_empty() {
                if let Err(end) = self.send(Bytes::from(chunk), settings.send_timeout()).await {
                    return end;
                }
                last_sent = tokio::time::Instant::now();
            }
            if full {
                continue;
            }
            let keepalive_at = last_sent + settings.keepalive();
            tokio::select! {
                _ = &mut woken => {}
                _ = tokio::time::sleep(settings.poll_interval()) => {}
                _ = self.tx.closed() => return None,
                _ = tokio::time::sleep_until(keepalive_at) => {
                    // An erased account's streams end (its feed is gone, and so are its tokens).
                    if let Ok(None) = self.state.account_store.account(&self.account_id).await {
                        return Some(ACCOUNT_ERASED);
                    }
                    if let Err(end) = self.send(Bytes::from_static(b": keep-alive\n\n"), settings.send_timeout()).await {
                        return end;
                    }
                    last_sent = tokio::time::Instant::now();
                }
            }
        }
    }

    async fn send(&self, chunk: Bytes, timeout: Duration) -> Result<(), Option<&'static str>> {
        let sent = send_within(&self.tx, chunk, timeout).await;
        if sent == Err(Some(SLOW_CLIENT)) {
            crate::warn_limited!(account = %self.account_id, "event stream client took nothing in time; cut off");
        }
        sent
    }
}

/// Why a stream whose client took nothing in time was ended (the cut-off counter's reason).
const SLOW_CLIENT: &str = "slow_client";
/// Why a stream of an account erased meanwhile was ended.
const ACCOUNT_ERASED: &str = "account_erased";

/// Hands a chunk to the client's response: Err(None) when the client went, Err(Some(reason)) when
/// it took nothing for `timeout` (the stream is to be cut off; the limit is counted).
async fn send_within(
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    chunk: Bytes,
    timeout: Duration,
) -> Result<(), Option<&'static str>> {
    match tokio::time::timeout(timeout, tx.send(Ok(chunk))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(None),
        Err(_) => {
            limits::hit(Limit::EventStreamStalled);
            Err(Some(SLOW_CLIENT))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_parsed_and_an_unknown_one_is_refused_by_name() {
        assert_eq!(parse_types(None).unwrap(), vec![]);
        assert_eq!(
            parse_types(Some("station.booted, transaction.ended")).unwrap(),
            vec![EventType::StationBooted, EventType::TransactionEnded]
        );
        let err = parse_types(Some("station.booted,station.exploded")).unwrap_err();
        assert!(err.to_string().contains("station.exploded"), "{err}");
    }

    #[tokio::test]
    async fn a_client_that_takes_nothing_is_cut_off_and_one_that_went_ends_the_stream() {
        let (tx, rx) = mpsc::channel(1);
        let wait = Duration::from_millis(50);
        assert_eq!(send_within(&tx, Bytes::from_static(b"a"), wait).await, Ok(()));
        // The buffer is full and nobody reads it.
        assert_eq!(send_within(&tx, Bytes::from_static(b"b"), wait).await, Err(Some(SLOW_CLIENT)));
        drop(rx);
        assert_eq!(send_within(&tx, Bytes::from_static(b"c"), wait).await, Err(None));
    }

    #[test]
    fn an_event_is_written_as_id_event_and_data_lines() {
        let event = FeedEvent {
            id: 42,
            kind: EventType::StationConnected,
            time: chrono::Utc::now(),
            station_id: Some("CP1".into()),
            body: serde_json::json!({"protocol": "ocpp1.6"}),
        };
        let mut out = String::new();
        write_event(&mut out, &event);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "id: 42");
        assert_eq!(lines[1], "event: station.connected");
        let data: FeedEvent = serde_json::from_str(lines[2].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data, event);
        assert!(out.ends_with("\n\n"));
    }
}
