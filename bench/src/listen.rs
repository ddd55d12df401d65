//! The `listen` scenario: the receiving end of ocpp-css's event feed, while something else (a
//! `fleet`) makes the events.
//!
//! 1. **Setup.** Signs in (or takes `--token`), opens `--sse-clients` streams of
//!    `GET /api/v1/events` (every type, from the feed's head), starts `--webhooks` receivers (small
//!    HTTP/1.1 servers on `--receiver-ip`, port 0, answering every request `200` with an empty
//!    body, keep-alive) and registers one webhook per receiver through the API.
//! 2. **Warmup** (`--warmup`): receipts are only checked, not counted (the server's dispatcher
//!    starts a new webhook's worker within a couple of seconds).
//! 3. **Window** (`--duration`): per second and in total, events received over SSE (each client's
//!    count too) and webhook deliveries (each receiver's), and the lag from the event's `time`
//!    (set by the server when it handled what caused the event) to its receipt here, SSE and
//!    webhooks apart. Sender and receiver share one clock: this is meant for one machine.
//! 4. **Drain** (`--drain`): the SSE clients stop; each receiver is given up to that long to reach
//!    the newest id the SSE clients had seen at the window's end (how far behind the webhooks were).
//! 5. The webhooks are deleted and the receivers stop.
//!
//! Checked over the whole run at each receiver: an event id received twice (a duplicate: the
//! delivery is at least once) and an id lower than one received before (out of order: deliveries
//! are in feed order). Each SSE client is checked the same way.

use crate::cli::ListenArgs;
use crate::merge;
use crate::outcomes;
use crate::provision;
use crate::report;
use crate::stats::{latency_ms, new_histogram, LatencyMs};
use crate::sys::{self, ProcSample};
use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, Instant};

/// Largest request head (request line and headers) a receiver reads.
const MAX_HEAD: usize = 64 * 1024;
/// Largest delivery body a receiver reads.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Largest SSE line (an event's `data:`) a client keeps.
const MAX_SSE_LINE: usize = 4 * 1024 * 1024;
/// Between two tries of an SSE client whose stream could not be opened or ended.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// The API base: `URL` with `/api/v1` added unless it ends with it.
pub fn api_base(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.ends_with("/api/v1") {
        url.to_string()
    } else {
        format!("{url}/api/v1")
    }
}

// ---------------------------------------------------------------------------------------------
// What arrives: an event's id and time, however it came.

/// The part of a feed event the listener looks at.
#[derive(Debug, Deserialize)]
struct EventHead {
    id: u64,
    time: String,
}

/// Microseconds from `time` (RFC 3339) to `now`; None if `time` does not parse.
/// A negative lag (clocks apart) counts as 0.
fn lag_us(time: &str, now: chrono::DateTime<chrono::Utc>) -> Option<u64> {
    let t = chrono::DateTime::parse_from_rfc3339(time).ok()?;
    let d = now.signed_duration_since(t.with_timezone(&chrono::Utc));
    Some(d.num_microseconds().unwrap_or(i64::MAX).max(0) as u64)
}

/// What one stream of event ids (an SSE client, a receiver) has seen: duplicates and order.
#[derive(Debug, Default)]
pub struct IdCheck {
    seen: HashSet<u64>,
    max: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
}

/// How an id fared in an [`IdCheck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    First,
    Duplicate,
    /// New, but lower than one seen before.
    OutOfOrder,
}

impl IdCheck {
    pub fn see(&mut self, id: u64) -> Seen {
        if !self.seen.insert(id) {
            self.duplicates += 1;
            return Seen::Duplicate;
        }
        if id < self.max {
            self.out_of_order += 1;
            return Seen::OutOfOrder;
        }
        self.max = id;
        Seen::First
    }

    pub fn max(&self) -> u64 {
        self.max
    }
}

// ---------------------------------------------------------------------------------------------
// The tally: what every client and receiver adds to.

type Hist = Mutex<Histogram<u64>>;

fn hist() -> Hist {
    Mutex::new(new_histogram())
}

fn record(h: &Hist, us: u64) {
    h.lock().expect("histogram lock").saturating_record(us.max(1));
}

/// SSE or webhooks.
#[derive(Debug, Clone, Copy)]
enum Via {
    Sse,
    Webhook,
}

/// One kind of receipt (SSE or webhooks): counts per second of the window, lag.
struct Channel {
    per_second: Vec<AtomicU64>,
    lag: Hist,
    /// Lag since the last progress line (its p99).
    lag_window: Hist,
    /// Receipts whose `time` did not parse (counted, no lag).
    no_time: AtomicU64,
}

impl Channel {
    fn new(secs: u64) -> Channel {
        Channel {
            per_second: (0..secs).map(|_| AtomicU64::new(0)).collect(),
            lag: hist(),
            lag_window: hist(),
            no_time: AtomicU64::new(0),
        }
    }

    fn total(&self) -> u64 {
        self.per_second.iter().map(|n| n.load(Relaxed)).sum()
    }
}

/// One SSE client's counts.
#[derive(Default)]
struct Client {
    /// Events received in the window.
    events: AtomicU64,
    /// Events received over the whole run.
    events_total: AtomicU64,
    /// Streams opened (the first and every reconnect).
    opened: AtomicU64,
    /// The highest event id received.
    last_id: AtomicU64,
    duplicates: AtomicU64,
    out_of_order: AtomicU64,
}

/// One webhook receiver's state.
struct Receiver {
    url: String,
    /// The webhook's id, once registered.
    webhook_id: OnceLock<String>,
    /// Deliveries received in the window.
    deliveries: AtomicU64,
    /// Requests received over the whole run (window or not).
    requests: AtomicU64,
    /// Requests that were not a delivery the listener could read (no id, bad JSON, no length).
    malformed: AtomicU64,
    ids: Mutex<IdCheck>,
    /// The highest event id received, for the drain's wait.
    max_id: AtomicU64,
}

impl Receiver {
    fn new(url: String) -> Receiver {
        Receiver {
            url,
            webhook_id: OnceLock::new(),
            deliveries: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            ids: Mutex::default(),
            max_id: AtomicU64::new(0),
        }
    }
}

struct Tally {
    /// The window's start (set once setup and warmup are over) and length.
    start: OnceLock<Instant>,
    secs: u64,
    sse: Channel,
    hooks: Channel,
    clients: Vec<Client>,
    receivers: Vec<Receiver>,
    /// SSE failures by kind: `http_429`, `connect_error`, `stream_error`, `ended`, ….
    sse_failures: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn new(secs: u64, clients: usize, receivers: Vec<Receiver>) -> Tally {
        Tally {
            start: OnceLock::new(),
            secs,
            sse: Channel::new(secs),
            hooks: Channel::new(secs),
            clients: (0..clients).map(|_| Client::default()).collect(),
            receivers,
            sse_failures: Mutex::default(),
        }
    }

    /// The second of the window `at` falls in; None outside the window.
    fn second(&self, at: Instant) -> Option<usize> {
        let start = *self.start.get()?;
        let s = at.checked_duration_since(start)?.as_secs();
        (s < self.secs).then_some(s as usize)
    }

    /// Counts a receipt at `at` with event time `time`; true if it fell in the window.
    fn receipt(&self, via: Via, at: Instant, time: &str) -> bool {
        let Some(second) = self.second(at) else { return false };
        let channel = match via {
            Via::Sse => &self.sse,
            Via::Webhook => &self.hooks,
        };
        channel.per_second[second].fetch_add(1, Relaxed);
        match lag_us(time, chrono::Utc::now()) {
            Some(us) => {
                record(&channel.lag, us);
                record(&channel.lag_window, us);
            }
            None => {
                channel.no_time.fetch_add(1, Relaxed);
            }
        }
        true
    }

    fn sse_failure(&self, kind: &str) {
        *self.sse_failures.lock().expect("map lock").entry(kind.to_string()).or_default() += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events.

/// One event of a stream, as its lines said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Splits a `text/event-stream` body into events: `field: value` lines, a blank line ends an
/// event, `:` lines are comments; an event without data is not dispatched.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    /// Comment lines seen (`: keep-alive`).
    pub comments: u64,
    /// Lines longer than [`MAX_SSE_LINE`], dropped.
    pub overlong: u64,
}

impl SseParser {
    /// Feeds bytes; the events they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if let Some(ev) = self.line_done(&line) {
                    out.push(ev);
                }
            } else if self.line.len() < MAX_SSE_LINE {
                self.line.push(b);
            } else if self.line.len() == MAX_SSE_LINE {
                self.overlong += 1;
                self.line.push(b);
            }
        }
        out
    }

    fn line_done(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.len() > MAX_SSE_LINE {
            return None;
        }
        if line.is_empty() {
            let data = self.data.take();
            let (id, event) = (self.id.take(), self.event.take());
            return data.map(|data| SseEvent { id, event, data });
        }
        if line[0] == b':' {
            self.comments += 1;
            return None;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*text, ""),
        };
        match field {
            "id" => self.id = Some(value.to_string()),
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
        None
    }
}

/// What an SSE client needs.
struct SseCtx {
    http: reqwest::Client,
    url: String,
    token: String,
    tally: Arc<Tally>,
    /// Clients whose first stream is open.
    opened: AtomicU64,
    /// Clients that gave up opening their first stream.
    failed: AtomicU64,
    setup_deadline: Instant,
}

/// One SSE client: opens the stream, reads it until `stop`, reopens it (with `Last-Event-ID`) when
/// it ends. Before its first stream opened it gives up at the setup deadline.
async fn sse_client(ctx: Arc<SseCtx>, index: usize, mut stop: watch::Receiver<bool>) {
    let me = &ctx.tally.clients[index];
    let mut check = IdCheck::default();
    let mut last_id: Option<u64> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let first = me.opened.load(Relaxed) == 0;
        if first && Instant::now() >= ctx.setup_deadline {
            ctx.failed.fetch_add(1, Relaxed);
            return;
        }
        let mut req = ctx.http.get(&ctx.url).bearer_auth(&ctx.token).header("accept", "text/event-stream");
        if let Some(id) = last_id {
            req = req.header("last-event-id", id.to_string());
        }
        let response = tokio::select! {
            r = req.send() => r,
            _ = stop.changed() => return,
        };
        let mut response = match response {
            Ok(r) if r.status() == StatusCode::OK => r,
            Ok(r) => {
                ctx.tally.sse_failure(&format!("http_{}", r.status().as_u16()));
                pause(&mut stop).await;
                continue;
            }
            Err(e) => {
                ctx.tally.sse_failure(&outcomes::reqwest_label(&e));
                pause(&mut stop).await;
                continue;
            }
        };
        if me.opened.fetch_add(1, Relaxed) == 0 {
            ctx.opened.fetch_add(1, Relaxed);
        }
        let mut parser = SseParser::default();
        loop {
            let chunk = tokio::select! {
                c = response.chunk() => c,
                _ = stop.changed() => return,
            };
            let bytes = match chunk {
                Ok(Some(b)) => b,
                Ok(None) => {
                    ctx.tally.sse_failure("ended");
                    break;
                }
                Err(e) => {
                    ctx.tally.sse_failure(if e.is_timeout() { "timeout" } else { "stream_error" });
                    break;
                }
            };
            let at = Instant::now();
            for ev in parser.feed(&bytes) {
                me.events_total.fetch_add(1, Relaxed);
                let head: Option<EventHead> = serde_json::from_str(&ev.data).ok();
                let id = head.as_ref().map(|h| h.id).or_else(|| ev.id.as_deref().and_then(|s| s.trim().parse().ok()));
                if let Some(id) = id {
                    match check.see(id) {
                        Seen::First => {}
                        Seen::Duplicate => {
                            me.duplicates.fetch_add(1, Relaxed);
                        }
                        Seen::OutOfOrder => {
                            me.out_of_order.fetch_add(1, Relaxed);
                        }
                    }
                    last_id = Some(check.max());
                    me.last_id.store(check.max(), Relaxed);
                }
                let time = head.as_ref().map_or("", |h| h.time.as_str());
                if ctx.tally.receipt(Via::Sse, at, time) {
                    me.events.fetch_add(1, Relaxed);
                }
            }
        }
        pause(&mut stop).await;
    }
}

async fn pause(stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = sleep(RECONNECT_PAUSE) => {}
        _ = stop.changed() => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Webhook receivers: a minimal HTTP/1.1 server (Content-Length bodies, keep-alive).

/// A request head, as far as a receiver cares.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head, blank line included.
    pub len: usize,
    pub method: String,
    pub content_length: Option<usize>,
    pub chunked: bool,
    pub event_id: Option<u64>,
    /// `Connection: close` asked.
    pub close: bool,
}

/// Parses the request head at the start of `buf`: Ok(None) while incomplete, Err when it is not
/// HTTP/1.x.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, &'static str> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD { Err("head too large") } else { Ok(None) };
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| "head not UTF-8")?;
    let mut lines = text.split("\r\n");
    let request = lines.next().ok_or("no request line")?;
    let mut parts = request.split(' ');
    let method = parts.next().filter(|m| !m.is_empty()).ok_or("no method")?.to_string();
    let _target = parts.next().ok_or("no target")?;
    let version = parts.next().ok_or("no version")?;
    if !version.starts_with("HTTP/1.") {
        return Err("not HTTP/1.x");
    }
    let mut head = Head { len: end + 4, method, content_length: None, chunked: false, event_id: None, close: false };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { return Err("header without a colon") };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(value.parse().map_err(|_| "bad content-length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("ocpp-css-event-id") {
            head.event_id = value.parse().ok();
        } else if name.eq_ignore_ascii_case("connection") {
            head.close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok(Some(head))
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
const BAD: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const NOT_IMPLEMENTED: &[u8] = b"HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Accepts connections until the listener is dropped with the task.
async fn receive(listener: TcpListener, tally: Arc<Tally>, index: usize) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(stream, tally.clone(), index));
    }
}

/// Serves one connection's requests, one after the other, until it closes.
async fn serve_connection(mut stream: TcpStream, tally: Arc<Tally>, index: usize) {
    let me = &tally.receivers[index];
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    loop {
        let head = loop {
            match parse_head(&buf) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(_) => {
                    me.malformed.fetch_add(1, Relaxed);
                    let _ = stream.write_all(BAD).await;
                    return;
                }
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        me.requests.fetch_add(1, Relaxed);
        let len = match (head.content_length, head.chunked) {
            (Some(n), false) if n <= MAX_BODY => n,
            (None, false) => 0,
            _ => {
                // The server's deliveries carry a length; anything else is not what this measures.
                me.malformed.fetch_add(1, Relaxed);
                let _ = stream.write_all(NOT_IMPLEMENTED).await;
                return;
            }
        };
        while buf.len() < head.len + len {
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let at = Instant::now();
        delivered(&tally, me, &head, &buf[head.len..head.len + len], at);
        if stream.write_all(OK).await.is_err() || head.close {
            return;
        }
        buf.drain(..head.len + len);
    }
}

/// Counts one delivery at a receiver.
fn delivered(tally: &Tally, me: &Receiver, head: &Head, body: &[u8], at: Instant) {
    let event: Option<EventHead> = serde_json::from_slice(body).ok();
    let Some(id) = head.event_id.or(event.as_ref().map(|e| e.id)) else {
        me.malformed.fetch_add(1, Relaxed);
        return;
    };
    me.ids.lock().expect("id check lock").see(id);
    me.max_id.fetch_max(id, Relaxed);
    let time = event.as_ref().map_or("", |e| e.time.as_str());
    if tally.receipt(Via::Webhook, at, time) {
        me.deliveries.fetch_add(1, Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// The API: sign in, webhooks.

async fn body_text(r: reqwest::Response) -> String {
    r.text().await.unwrap_or_default()
}

async fn create_webhook(http: &reqwest::Client, api: &str, token: &str, url: &str) -> Result<String> {
    let r = http
        .post(format!("{api}/webhooks"))
        .bearer_auth(token)
        .json(&json!({ "url": url }))
        .send()
        .await
        .with_context(|| format!("POST {api}/webhooks"))?;
    let status = r.status();
    if status != StatusCode::CREATED {
        let body = body_text(r).await;
        let hint = if body.contains("private") || body.contains("loopback") {
            " (the server refuses loopback receivers unless OCPP_CSS__WEBHOOKS__ALLOW_PRIVATE_DESTINATIONS=true)"
        } else if status == StatusCode::FORBIDDEN || body.contains("max_per_account") {
            " (raise OCPP_CSS__WEBHOOKS__MAX_PER_ACCOUNT, or delete the account's other webhooks)"
        } else {
            ""
        };
        bail!("creating the webhook for {url} answered {status}: {body}{hint}");
    }
    let v: serde_json::Value = r.json().await.context("POST /webhooks answer")?;
    v["id"].as_str().map(str::to_string).ok_or_else(|| anyhow!("POST /webhooks answered without an id: {v}"))
}

/// Deletes the webhooks; how many were deleted (each failure is printed).
async fn delete_webhooks(http: &reqwest::Client, api: &str, token: &str, ids: &[String]) -> u64 {
    let mut deleted = 0;
    for id in ids {
        match http.delete(format!("{api}/webhooks/{id}")).bearer_auth(token).send().await {
            Ok(r) if r.status().is_success() => deleted += 1,
            Ok(r) => eprintln!("warning: deleting webhook {id} answered {}", r.status()),
            Err(e) => eprintln!("warning: deleting webhook {id}: {e}"),
        }
    }
    deleted
}

// ---------------------------------------------------------------------------------------------
// The summary.

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListenConfig {
    pub api: String,
    pub sse_clients: u32,
    pub webhooks: u32,
    pub duration_secs: u64,
    pub warmup_secs: u64,
    pub drain_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SseReport {
    pub clients: u32,
    /// Clients whose first stream opened before the setup deadline.
    pub opened: u64,
    /// Events received in the window, all clients together.
    pub events: u64,
    pub events_per_sec: f64,
    /// Events received in the window by the client that got the fewest, and the most.
    pub per_client_min: u64,
    pub per_client_max: u64,
    /// Streams reopened after one ended (cut-offs included), all clients together.
    pub reopened: u64,
    /// Failures by kind (`http_<status>`, `connect_error`, `ended`, `stream_error`, …).
    pub failures_by_kind: BTreeMap<String, u64>,
    /// Over the whole run, all clients together.
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Receipts whose `time` did not parse (no lag).
    pub without_time: u64,
    /// The newest event id an SSE client had received when the window ended.
    pub newest_id: u64,
    /// From the event's `time` to its receipt.
    pub lag_ms: LatencyMs,
    /// Events in the window, per client.
    pub per_client: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EndpointReport {
    pub url: String,
    pub webhook_id: String,
    /// Deliveries received in the window.
    pub deliveries: u64,
    /// Requests received over the whole run.
    pub requests: u64,
    /// Over the whole run: the same event id received again.
    pub duplicates: u64,
    /// Over the whole run: an id lower than one received before.
    pub out_of_order: u64,
    /// No out-of-order id.
    pub in_order: bool,
    pub malformed: u64,
    /// The highest event id received by the window's end.
    pub newest_id_at_end: u64,
    /// SSE's newest id at the window's end minus this receiver's (ids of events, every type counted).
    pub behind_at_end: Option<u64>,
    /// Seconds after the window's end until this receiver had SSE's newest id (None: not within
    /// --drain, or no SSE client to compare with).
    pub caught_up_secs: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WebhooksReport {
    pub endpoints: u32,
    pub deliveries: u64,
    pub deliveries_per_sec: f64,
    pub per_endpoint_min: u64,
    pub per_endpoint_max: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub all_in_order: bool,
    pub without_time: u64,
    pub lag_ms: LatencyMs,
    /// Webhooks deleted at the end.
    pub deleted: u64,
    pub per_endpoint: Vec<EndpointReport>,
}

/// One second of the window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Second {
    pub second: u64,
    pub sse_events: u64,
    /// Of that second, the fewest and most events one SSE client received.
    pub sse_per_client_min: u64,
    pub sse_per_client_max: u64,
    pub webhook_deliveries: u64,
    pub sse_lag_p99_ms: Option<f64>,
    pub webhook_lag_p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListenSummary {
    pub scenario: String,
    pub config: ListenConfig,
    /// The window, milliseconds since the Unix epoch.
    pub window_start_ms: u64,
    pub window_end_ms: u64,
    pub setup_secs: f64,
    pub sse: SseReport,
    pub webhooks: WebhooksReport,
    pub timeline: Vec<Second>,
    /// The server's CPU over the window, percent of one core (with --server-pid).
    pub server_cpu_pct: Option<f64>,
    /// This process's CPU over the window, percent of one core.
    pub harness_cpu_pct: Option<f64>,
    /// `sse.lag` and `webhooks.lag` (µs), HdrHistogram V2 serialized, base64.
    pub histograms: BTreeMap<String, String>,
}

fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn min_max(values: impl Iterator<Item = u64> + Clone) -> (u64, u64) {
    (values.clone().min().unwrap_or(0), values.max().unwrap_or(0))
}

// ---------------------------------------------------------------------------------------------
// The run.

pub async fn run(args: ListenArgs) -> Result<ListenSummary> {
    if args.sse_clients == 0 && args.webhooks == 0 {
        bail!("nothing to listen with: give --sse-clients and/or --webhooks");
    }
    let api = api_base(&args.api);
    if let Err(e) = sys::raise_nofile(u64::from(args.sse_clients) + 4 * u64::from(args.webhooks) + 256) {
        eprintln!("warning: cannot read or raise the open-file limit: {e}");
    }
    let setup_started = Instant::now();
    let token = match &args.token {
        Some(t) => t.clone(),
        None => {
            let email = args.email.clone().unwrap_or_else(|| format!("bench@{}.example.com", args.tenant));
            provision::token_of(&api, &email, &args.password).await.context("signing in")?
        }
    };
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .context("the HTTP client")?;

    // Receivers first: their ports go into the webhooks' URLs.
    let mut listeners = Vec::new();
    let mut receivers = Vec::new();
    for i in 0..args.webhooks {
        let listener = TcpListener::bind(SocketAddr::new(args.receiver_ip, 0))
            .await
            .with_context(|| format!("binding a receiver on {}", args.receiver_ip))?;
        let addr = listener.local_addr().context("receiver address")?;
        let host = match addr.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        receivers.push(Receiver::new(format!("http://{host}:{}/hook/{}", addr.port(), i + 1)));
        listeners.push(listener);
    }
    let secs = args.duration;
    let tally = Arc::new(Tally::new(secs, args.sse_clients as usize, receivers));
    let receiver_tasks: Vec<_> =
        listeners.into_iter().enumerate().map(|(i, l)| tokio::spawn(receive(l, tally.clone(), i))).collect();

    // SSE streams.
    let (stop_tx, stop_rx) = watch::channel(false);
    let sse = Arc::new(SseCtx {
        http: http.clone(),
        url: format!("{api}/events"),
        token: token.clone(),
        tally: tally.clone(),
        opened: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        setup_deadline: Instant::now() + Duration::from_secs(args.setup_timeout),
    });
    let sse_tasks: Vec<_> =
        (0..args.sse_clients as usize).map(|i| tokio::spawn(sse_client(sse.clone(), i, stop_rx.clone()))).collect();
    let wanted = u64::from(args.sse_clients);
    while sse.opened.load(Relaxed) + sse.failed.load(Relaxed) < wanted {
        sleep(Duration::from_millis(20)).await;
    }
    let opened = sse.opened.load(Relaxed);
    if opened < wanted {
        let failures = tally.sse_failures.lock().expect("map lock").clone();
        eprintln!(
            "warning: {} of {wanted} event streams did not open within --setup-timeout {} s: {failures:?} \
             (limits.event_streams_per_tenant: OCPP_CSS__LIMITS__EVENT_STREAMS_PER_TENANT)",
            wanted - opened,
            args.setup_timeout
        );
        if opened == 0 {
            let _ = stop_tx.send(true);
            bail!("no event stream opened: {failures:?}");
        }
    }

    // Webhooks, one per receiver; those made are deleted if a later one fails.
    let mut webhook_ids = Vec::new();
    for r in &tally.receivers {
        match create_webhook(&http, &api, &token, &r.url).await {
            Ok(id) => {
                let _ = r.webhook_id.set(id.clone());
                webhook_ids.push(id);
            }
            Err(e) => {
                delete_webhooks(&http, &api, &token, &webhook_ids).await;
                let _ = stop_tx.send(true);
                return Err(e);
            }
        }
    }
    let setup_secs = setup_started.elapsed().as_secs_f64();
    eprintln!(
        "listening: {opened} event streams, {} webhooks (set up in {setup_secs:.1} s); warmup {} s, then {secs} s",
        webhook_ids.len(),
        args.warmup
    );
    sleep(Duration::from_secs(args.warmup)).await;

    // The window.
    let ticks = sys::clock_ticks_per_sec();
    let srv_start = args.server_pid.and_then(sys::sample);
    let self_start = sys::sample(std::process::id());
    let start = Instant::now();
    let start_wall = std::time::SystemTime::now();
    let _ = tally.start.set(start);
    let end = start + Duration::from_secs(secs);
    let mut per_client_seconds = Vec::with_capacity(secs as usize);
    let mut per_second_p99 = Vec::with_capacity(secs as usize);
    let mut prev: Vec<u64> = vec![0; tally.clients.len()];
    let (mut prev_sse, mut prev_hooks) = (0u64, 0u64);
    for s in 1..=secs {
        sleep_until(start + Duration::from_secs(s)).await;
        let now_counts: Vec<u64> = tally.clients.iter().map(|c| c.events.load(Relaxed)).collect();
        let deltas = now_counts.iter().zip(&prev).map(|(a, b)| a - b);
        let (cmin, cmax) = min_max(deltas);
        per_client_seconds.push((cmin, cmax));
        prev = now_counts;
        let (sse_total, hooks_total) = (tally.sse.total(), tally.hooks.total());
        let p99 = |h: &Hist| {
            let mut h = h.lock().expect("histogram lock");
            let p = (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1000.0);
            h.reset();
            p
        };
        let fmt = |p: Option<f64>| p.map_or("-".to_string(), |p| format!("{p:.1} ms"));
        let (sse_p99, hooks_p99) = (p99(&tally.sse.lag_window), p99(&tally.hooks.lag_window));
        per_second_p99.push((sse_p99, hooks_p99));
        eprintln!(
            "[{s:>4}s] sse {:>7} ev/s (per client {cmin}..{cmax})  webhooks {:>6}/s  lag p99(1s) sse {}  webhooks {}  \
             sse failures {}",
            sse_total - prev_sse,
            hooks_total - prev_hooks,
            fmt(sse_p99),
            fmt(hooks_p99),
            tally.sse_failures.lock().expect("map lock").values().sum::<u64>(),
        );
        (prev_sse, prev_hooks) = (sse_total, hooks_total);
    }
    sleep_until(end).await;
    let end_wall = std::time::SystemTime::now();
    let srv_end = args.server_pid.and_then(sys::sample);
    let self_end = sys::sample(std::process::id());
    let cpu = |a: Option<ProcSample>, b: Option<ProcSample>| Some(sys::cpu_percent(&a?, &b?, ticks));

    // SSE stops; what the webhooks had by now, and how long they take to catch up.
    let _ = stop_tx.send(true);
    let newest_sse = tally.clients.iter().map(|c| c.last_id.load(Relaxed)).max().unwrap_or(0);
    let at_end: Vec<u64> = tally.receivers.iter().map(|r| r.max_id.load(Relaxed)).collect();
    let mut caught_up: Vec<Option<f64>> =
        at_end.iter().map(|&m| (args.sse_clients > 0 && m >= newest_sse).then_some(0.0)).collect();
    if args.sse_clients > 0 && !tally.receivers.is_empty() && args.drain > 0 {
        let drain_end = Instant::now() + Duration::from_secs(args.drain);
        eprintln!("draining: up to {} s for the webhooks to reach event {newest_sse}", args.drain);
        while caught_up.iter().any(Option::is_none) && Instant::now() < drain_end {
            sleep(Duration::from_millis(20)).await;
            for (r, c) in tally.receivers.iter().zip(caught_up.iter_mut()) {
                if c.is_none() && r.max_id.load(Relaxed) >= newest_sse {
                    *c = Some((end.elapsed().as_secs_f64() * 100.0).round() / 100.0);
                }
            }
        }
    }
    let deleted = delete_webhooks(&http, &api, &token, &webhook_ids).await;
    for t in sse_tasks {
        let abort = t.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), t).await.is_err() {
            abort.abort();
        }
    }
    for t in receiver_tasks {
        t.abort();
    }

    // The summary.
    let per_client: Vec<u64> = tally.clients.iter().map(|c| c.events.load(Relaxed)).collect();
    let (per_client_min, per_client_max) = min_max(per_client.iter().copied());
    let sum = |f: fn(&Client) -> &AtomicU64| tally.clients.iter().map(|c| f(c).load(Relaxed)).sum::<u64>();
    let sse_events = tally.sse.total();
    let sse_lag = tally.sse.lag.lock().expect("histogram lock").clone();
    let hook_lag = tally.hooks.lag.lock().expect("histogram lock").clone();
    let sse_report = SseReport {
        clients: args.sse_clients,
        opened,
        events: sse_events,
        events_per_sec: report::per(sse_events as f64, secs as f64),
        per_client_min,
        per_client_max,
        reopened: sum(|c| &c.opened).saturating_sub(opened),
        failures_by_kind: tally.sse_failures.lock().expect("map lock").clone(),
        duplicates: sum(|c| &c.duplicates),
        out_of_order: sum(|c| &c.out_of_order),
        without_time: tally.sse.no_time.load(Relaxed),
        newest_id: newest_sse,
        lag_ms: latency_ms(&sse_lag),
        per_client,
    };
    let per_endpoint: Vec<EndpointReport> = tally
        .receivers
        .iter()
        .zip(at_end.iter().zip(&caught_up))
        .map(|(r, (&newest, &caught))| {
            let ids = r.ids.lock().expect("id check lock");
            EndpointReport {
                url: r.url.clone(),
                webhook_id: r.webhook_id.get().cloned().unwrap_or_default(),
                deliveries: r.deliveries.load(Relaxed),
                requests: r.requests.load(Relaxed),
                duplicates: ids.duplicates,
                out_of_order: ids.out_of_order,
                in_order: ids.out_of_order == 0,
                malformed: r.malformed.load(Relaxed),
                newest_id_at_end: newest,
                behind_at_end: (args.sse_clients > 0).then(|| newest_sse.saturating_sub(newest)),
                caught_up_secs: caught,
            }
        })
        .collect();
    let deliveries = tally.hooks.total();
    let (per_endpoint_min, per_endpoint_max) = min_max(per_endpoint.iter().map(|e| e.deliveries));
    let webhooks = WebhooksReport {
        endpoints: args.webhooks,
        deliveries,
        deliveries_per_sec: report::per(deliveries as f64, secs as f64),
        per_endpoint_min,
        per_endpoint_max,
        duplicates: per_endpoint.iter().map(|e| e.duplicates).sum(),
        out_of_order: per_endpoint.iter().map(|e| e.out_of_order).sum(),
        all_in_order: per_endpoint.iter().all(|e| e.in_order),
        without_time: tally.hooks.no_time.load(Relaxed),
        lag_ms: latency_ms(&hook_lag),
        deleted,
        per_endpoint,
    };
    let timeline = (0..secs as usize)
        .map(|s| {
            let (cmin, cmax) = per_client_seconds.get(s).copied().unwrap_or((0, 0));
            let (sse_p99, hooks_p99) = per_second_p99.get(s).copied().unwrap_or((None, None));
            Second {
                second: s as u64 + 1,
                sse_events: tally.sse.per_second[s].load(Relaxed),
                sse_per_client_min: cmin,
                sse_per_client_max: cmax,
                webhook_deliveries: tally.hooks.per_second[s].load(Relaxed),
                sse_lag_p99_ms: sse_p99,
                webhook_lag_p99_ms: hooks_p99,
            }
        })
        .collect();
    let histograms = merge::encode_all([("sse.lag".to_string(), &sse_lag), ("webhooks.lag".to_string(), &hook_lag)]);
    Ok(ListenSummary {
        scenario: "listen".into(),
        config: ListenConfig {
            api,
            sse_clients: args.sse_clients,
            webhooks: args.webhooks,
            duration_secs: secs,
            warmup_secs: args.warmup,
            drain_secs: args.drain,
        },
        window_start_ms: unix_ms(start_wall),
        window_end_ms: unix_ms(end_wall),
        setup_secs: (setup_secs * 10.0).round() / 10.0,
        sse: sse_report,
        webhooks,
        timeline,
        server_cpu_pct: cpu(srv_start, srv_end),
        harness_cpu_pct: cpu(self_start, self_end),
        histograms,
    })
}

fn lat(l: &LatencyMs) -> String {
    if l.samples == 0 {
        return "-".into();
    }
    format!("p50 {:.1}  p99 {:.1}  max {:.1} ms  (n={})", l.p50, l.p99, l.max, l.samples)
}

/// The summary as a two-column table, then one line per webhook endpoint.
pub fn render_table(s: &ListenSummary) -> String {
    let c = &s.config;
    let (sse, wh) = (&s.sse, &s.webhooks);
    let pct = |p: Option<f64>| p.map_or("-".to_string(), |p| format!("{p:.0}%"));
    let per_sec = |f: fn(&Second) -> u64| {
        let (lo, hi) = min_max(s.timeline.iter().map(f));
        format!("{lo}..{hi}")
    };
    let mut rows: Vec<(String, String)> = vec![
        ("api".into(), c.api.clone()),
        (
            "window".into(),
            format!(
                "{} s after {} s warmup (setup {:.1} s), drain up to {} s",
                c.duration_secs, c.warmup_secs, s.setup_secs, c.drain_secs
            ),
        ),
        ("sse clients".into(), format!("{} ({} opened, {} reopened)", sse.clients, sse.opened, sse.reopened)),
        (
            "  events".into(),
            format!("{} = {:.1}/s (per second {})", sse.events, sse.events_per_sec, per_sec(|x| x.sse_events)),
        ),
        (
            "  per client".into(),
            format!(
                "min {} max {} = {:.1}..{:.1}/s",
                sse.per_client_min,
                sse.per_client_max,
                report::per(sse.per_client_min as f64, c.duration_secs as f64),
                report::per(sse.per_client_max as f64, c.duration_secs as f64)
            ),
        ),
        ("  lag".into(), lat(&sse.lag_ms)),
        (
            "  checks".into(),
            format!(
                "{} duplicates, {} out of order, {} without time; newest id {}",
                sse.duplicates, sse.out_of_order, sse.without_time, sse.newest_id
            ),
        ),
    ];
    if !sse.failures_by_kind.is_empty() {
        let parts: Vec<String> = sse.failures_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        rows.push(("  failures".into(), parts.join(", ")));
    }
    rows.extend([
        ("webhooks".into(), format!("{} endpoints ({} deleted at the end)", wh.endpoints, wh.deleted)),
        (
            "  deliveries".into(),
            format!(
                "{} = {:.1}/s (per second {})",
                wh.deliveries,
                wh.deliveries_per_sec,
                per_sec(|x| x.webhook_deliveries)
            ),
        ),
        (
            "  per endpoint".into(),
            format!(
                "min {} max {} = {:.1}..{:.1}/s",
                wh.per_endpoint_min,
                wh.per_endpoint_max,
                report::per(wh.per_endpoint_min as f64, c.duration_secs as f64),
                report::per(wh.per_endpoint_max as f64, c.duration_secs as f64)
            ),
        ),
        ("  lag".into(), lat(&wh.lag_ms)),
        (
            "  checks".into(),
            format!(
                "{} duplicates, {} out of order ({}), {} without time",
                wh.duplicates,
                wh.out_of_order,
                if wh.all_in_order { "all in order" } else { "NOT all in order" },
                wh.without_time
            ),
        ),
        ("server cpu".into(), pct(s.server_cpu_pct)),
        ("harness cpu".into(), pct(s.harness_cpu_pct)),
    ]);
    let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<width$}  {v}");
    }
    if !wh.per_endpoint.is_empty() {
        let _ = writeln!(out, "\nendpoint                              deliveries  dup  order  behind  caught up");
        for e in &wh.per_endpoint {
            let _ = writeln!(
                out,
                "{:<36}  {:>10}  {:>3}  {:>5}  {:>6}  {}",
                e.url,
                e.deliveries,
                e.duplicates,
                if e.in_order { "ok" } else { "NO" },
                e.behind_at_end.map_or("-".to_string(), |b| b.to_string()),
                e.caught_up_secs.map_or("-".to_string(), |s| format!("{s:.2} s")),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_base_adds_the_version_once() {
        assert_eq!(api_base("http://127.0.0.1:8180"), "http://127.0.0.1:8180/api/v1");
        assert_eq!(api_base("http://127.0.0.1:8180/"), "http://127.0.0.1:8180/api/v1");
        assert_eq!(api_base("http://h:1/api/v1/"), "http://h:1/api/v1");
    }

    #[test]
    fn sse_lines_make_events_across_chunk_boundaries() {
        let mut p = SseParser::default();
        let mut got = p.feed(b"retry: 1000\n\nid: 7\nevent: station.booted\ndata: {\"id\":7,");
        assert!(got.is_empty(), "{got:?}");
        got = p.feed(b"\"time\":\"t\"}\r\n\r\n: keep-alive\n\nid: 8\ndata: a\ndata: b\n\n");
        assert_eq!(
            got,
            vec![
                SseEvent {
                    id: Some("7".into()),
                    event: Some("station.booted".into()),
                    data: "{\"id\":7,\"time\":\"t\"}".into()
                },
                SseEvent { id: Some("8".into()), event: None, data: "a\nb".into() },
            ]
        );
        assert_eq!(p.comments, 1);
    }

    #[test]
    fn an_overlong_line_is_dropped_not_kept() {
        let mut p = SseParser::default();
        let big = vec![b'x'; MAX_SSE_LINE + 10];
        assert!(p.feed(b"data: ").is_empty());
        assert!(p.feed(&big).is_empty());
        assert!(p.feed(b"\n\ndata: ok\n\n").iter().map(|e| e.data.as_str()).eq(["ok"]));
        assert_eq!(p.overlong, 1);
    }

    #[test]
    fn ids_are_checked_for_duplicates_and_order() {
        let mut c = IdCheck::default();
        assert_eq!(c.see(1), Seen::First);
        assert_eq!(c.see(3), Seen::First);
        assert_eq!(c.see(3), Seen::Duplicate);
        assert_eq!(c.see(2), Seen::OutOfOrder);
        assert_eq!(c.see(2), Seen::Duplicate);
        assert_eq!(c.see(4), Seen::First);
        assert_eq!((c.duplicates, c.out_of_order, c.max()), (2, 1, 4));
    }

    #[test]
    fn a_request_head_is_parsed_once_complete() {
        let req =
            b"POST /hook/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nOcpp-Css-Event-Id: 42\r\n\r\n{\"id\":42}...";
        assert_eq!(parse_head(&req[..20]), Ok(None));
        let h = parse_head(req).unwrap().unwrap();
        assert_eq!(h.method, "POST");
        assert_eq!((h.content_length, h.event_id, h.chunked, h.close), (Some(12), Some(42), false, false));
        assert_eq!(&req[h.len..], b"{\"id\":42}...");
        assert!(parse_head(b"GET / SPDY/3\r\n\r\n").is_err());
        assert!(parse_head(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_head(&vec![b'a'; MAX_HEAD + 1]).is_err());
        let h =
            parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").unwrap().unwrap();
        assert!(h.chunked && h.close);
    }

    #[test]
    fn lag_is_measured_from_the_event_time() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-07T10:00:01.250Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(lag_us("2026-12-07T10:00:01.000000000Z", now), Some(250_000));
        assert_eq!(lag_us("2026-12-07T10:00:02Z", now), Some(0), "a clock apart is 0, not negative");
        assert_eq!(lag_us("yesterday", now), None);
    }

    #[tokio::test]
    async fn a_receiver_answers_200_and_counts_each_delivery_on_a_kept_alive_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tally = Arc::new(Tally::new(10, 0, vec![Receiver::new(format!("http://{addr}/hook/1"))]));
        let _ = tally.start.set(Instant::now());
        let task = tokio::spawn(receive(listener, tally.clone(), 0));
        let http = reqwest::Client::new();
        let time = chrono::Utc::now().to_rfc3339();
        for id in [5u64, 6, 6, 4] {
            let body = json!({"id": id, "type": "station.booted", "time": time, "station_id": "CP1", "body": {}});
            let r = http
                .post(format!("http://{addr}/hook/1"))
                .header("ocpp-css-event-id", id.to_string())
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.content_length(), Some(0));
        }
        let me = &tally.receivers[0];
        assert_eq!(me.deliveries.load(Relaxed), 4);
        assert_eq!(tally.hooks.total(), 4);
        let ids = me.ids.lock().unwrap();
        assert_eq!((ids.duplicates, ids.out_of_order, ids.max()), (1, 1, 6));
        assert_eq!(tally.hooks.lag.lock().unwrap().len(), 4);
        task.abort();
    }
}
