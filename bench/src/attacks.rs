//! The attacks of the `hostile` scenario. Each runs its clients from `start` to `end` on a runtime
//! of its own, apart from the legitimate fleet's. Every wait is bounded by --timeout and by the
//! attack's end; a client that is refused or cut off records how, and tries again, for the whole
//! duration. What happened is counted in [`AttackStats`], which the coordinator reads meanwhile.

use crate::cli::AttackKind;
use crate::conn::{Conn, Outcome};
use crate::messages;
use crate::outcomes::{self, SpreadAcc, Tally};
use crate::rawws::{self, RawError, RawTarget, Rng, Seen, SocketOpts, OP_CONTINUATION, OP_TEXT, RETRY_PAUSE};
use crate::stations::StationCred;
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at, Instant};

/// Declared payload length of the big-frame attack's single frame.
pub const BIG_FRAME_LEN: u64 = 1 << 40;
/// Payload of each fragment of the fragments attack.
pub const FRAGMENT_LEN: usize = 16 * 1024;
/// Receive buffer of the attacks that never read.
pub const NO_READ_RCVBUF: u32 = 4096;
/// A write that makes no progress this long counts as blocked (no-read, replay-amplify).
pub const BLOCKED_AFTER: Duration = Duration::from_secs(1);
/// Connects in flight per attack client in the connection floods.
pub const FLOOD_CONNECTS_PER_CLIENT: usize = 32;
/// Content-Length the stalled-body requests announce.
pub const STALLED_CONTENT_LENGTH: u64 = 100_000;
/// The outcome of an attempt that was still under way when the attack's time ran out.
pub const UNFINISHED: &str = "unfinished_at_end";
/// How long the reader of a cut-off connection is waited for, to learn the server's close frame.
const READER_GRACE: Duration = Duration::from_millis(500);

/// What to attack, from where, for how long.
#[derive(Debug, Clone)]
pub struct AttackPlan {
    pub kind: AttackKind,
    pub attackers: u32,
    pub start: Instant,
    pub end: Instant,
    pub timeout: Duration,
    /// The station endpoint, `{tenant}` already the attacker's.
    pub stations_at: RawTarget,
    /// The API listener and its base path (stalled-body, conn-flood).
    pub api_at: RawTarget,
    /// API base URL (signup-flood).
    pub api: Option<String>,
    /// The attacker's stations: one per client (auth-brute uses the first).
    pub stations: Vec<StationCred>,
    pub source_ips: Vec<IpAddr>,
    pub max_conns: u64,
    pub frame_limit: usize,
    /// Unique to this run: fresh e-mails and slugs.
    pub nonce: String,
}

impl AttackPlan {
    pub fn check(&self) -> Result<()> {
        if self.kind.uses_stations() && self.stations.is_empty() {
            bail!("{} needs at least one attacker station", self.kind.name());
        }
        if self.kind.needs_api() && self.api.is_none() {
            bail!("{} needs the API: give --api or --provision-api", self.kind.name());
        }
        Ok(())
    }
}

/// What the attack did and what the server did to it.
#[derive(Debug, Default)]
pub struct AttackStats {
    /// Outcomes by label: how connections ended, answers by kind, refusals.
    pub outcomes: Tally,
    /// Retry-After values the server gave, by value.
    pub retry_after: Tally,
    /// Connections (or requests) tried.
    pub attempts: AtomicU64,
    /// Of those, got through: TCP for the floods, the WebSocket upgrade, an HTTP answer.
    pub established: AtomicU64,
    /// Frames (or requests) sent in full.
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    /// Attack connections open now, and the most at once.
    pub open: AtomicI64,
    pub open_peak: AtomicI64,
    /// Connections the server ended: bytes sent by then, and their lifetime in seconds.
    pub cut_bytes: SpreadAcc,
    pub cut_secs: SpreadAcc,
    /// Seconds from connect until writes stopped making progress (the attacks that never read).
    pub blocked_secs: SpreadAcc,
    /// Accepted WebSocket upgrades by second of the attack.
    pub accepted_by_sec: Mutex<Vec<u64>>,
    /// Client tasks still running at the hard deadline.
    pub aborted: AtomicU64,
    /// Set (with [`AttackStats::stop`]) to end the attack early: the server's RSS passed its limit.
    pub stop: AtomicBool,
    stopping: tokio::sync::Notify,
}

impl AttackStats {
    /// Ends the attack now: every client stops at its next step, held connections at once.
    pub fn stop(&self) {
        self.stop.store(true, Relaxed);
        self.stopping.notify_waiters();
    }

    fn opened(&self) {
        let n = self.open.fetch_add(1, Relaxed) + 1;
        self.open_peak.fetch_max(n, Relaxed);
    }

    fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }

    fn sent(&self, bytes: usize, frames: u64) {
        self.bytes.fetch_add(bytes as u64, Relaxed);
        self.messages.fetch_add(frames, Relaxed);
    }

    fn accepted_at(&self, second: usize) {
        let mut v = self.accepted_by_sec.lock().expect("per-second lock");
        if v.len() <= second {
            v.resize(second + 1, 0);
        }
        v[second] += 1;
    }
}

struct Ctx {
    plan: AttackPlan,
    stats: Arc<AttackStats>,
    next_ip: AtomicUsize,
    counter: AtomicU64,
}

impl Ctx {
    fn over(&self) -> bool {
        Instant::now() >= self.plan.end || self.stats.stop.load(Relaxed)
    }

    /// `d` from now, but not past the attack's end.
    fn until(&self, d: Duration) -> Instant {
        (Instant::now() + d).min(self.plan.end)
    }

    fn source_ip(&self) -> Option<IpAddr> {
        let ips = &self.plan.source_ips;
        (!ips.is_empty()).then(|| ips[self.next_ip.fetch_add(1, Relaxed) % ips.len()])
    }

    fn opts(&self, recv_buffer: Option<u32>) -> SocketOpts {
        SocketOpts { source_ip: self.source_ip(), recv_buffer, linger_zero: true }
    }

    /// Attacker station `idx` (checked non-empty by [`AttackPlan::check`]).
    fn station(&self, idx: usize) -> &StationCred {
        &self.plan.stations[idx % self.plan.stations.len()]
    }

    async fn pause(&self) {
        sleep_until((Instant::now() + RETRY_PAUSE).min(self.plan.end)).await;
    }

    /// Counts a failure; a wait that only the attack's end cut short is `unfinished_at_end`.
    fn failed(&self, e: &RawError) {
        if let RawError::Http { retry_after: Some(r), .. } = e {
            self.stats.retry_after.add(&outcomes::clean(r));
        }
        if self.over() && *e == RawError::Timeout {
            self.stats.outcomes.add(UNFINISHED);
        } else {
            self.stats.outcomes.add(&e.kind());
        }
    }

    /// Opens an attacker station's WebSocket by hand; a failure is counted, paused after, `None`.
    async fn open_station(&self, idx: usize, opts: SocketOpts, rng: &mut Rng) -> Option<(TcpStream, Vec<u8>)> {
        let cred = self.station(idx);
        self.stats.attempts.fetch_add(1, Relaxed);
        let deadline = self.until(self.plan.timeout);
        match rawws::open_ws(&self.plan.stations_at, &cred.id, cred.password.as_deref(), opts, rng, deadline).await {
            Ok(x) => {
                self.stats.established.fetch_add(1, Relaxed);
                self.stats.opened();
                Some(x)
            }
            Err(e) => {
                let refused_by_http = matches!(e, RawError::Http { .. });
                self.failed(&e);
                if !refused_by_http {
                    self.pause().await;
                }
                None
            }
        }
    }

    fn second_of_attack(&self) -> usize {
        Instant::now().saturating_duration_since(self.plan.start).as_secs() as usize
    }
}

/// The label of a text frame the server sent on an attack connection.
pub fn server_message_label(text: &[u8]) -> String {
    let Ok(Value::Array(frame)) = serde_json::from_slice::<Value>(text) else {
        return "server_text_other".into();
    };
    match frame.first().and_then(Value::as_i64) {
        Some(2) => format!("server_call_{}", outcomes::clean(frame.get(2).and_then(Value::as_str).unwrap_or(""))),
        Some(3) => "server_callresult".into(),
        Some(4) => format!("server_{}", outcomes::callerror_label(frame.get(2).and_then(Value::as_str).unwrap_or(""))),
        _ => "server_text_other".into(),
    }
}

/// How the writer of a streaming attack stopped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WriteEnd {
    /// The reader saw the server end the connection.
    ServerEnded,
    /// A write failed, by label.
    Failed(&'static str),
    /// No progress for --timeout.
    Stalled,
    /// The attack's time was up.
    RunOver,
}

/// How an attack connection ended: the server's close frame (or FIN, or reset) as the reader saw
/// it first, then the writer's view.
pub fn end_label(how: WriteEnd, seen: &Seen) -> String {
    if let Some(s) = seen.ended() {
        return s;
    }
    match how {
        WriteEnd::Failed(k) => k.to_string(),
        WriteEnd::Stalled => "write_stalled".into(),
        WriteEnd::RunOver => "open_at_end".into(),
        WriteEnd::ServerEnded => "server_ended".into(),
    }
}

/// The big-frame, fragments and unsolicited writers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Streamed {
    BigFrame,
    Fragments,
    Unsolicited,
}

/// `n` CALLRESULTs for random ids, each its own masked frame.
pub fn unsolicited_batch(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 40);
    for _ in 0..n {
        let text = format!(r#"[3,"{:016x}",{{}}]"#, rng.next_u64());
        out.extend_from_slice(&rawws::text_frame(&text, rng.mask()));
    }
    out
}

async fn stream_loop(ctx: Arc<Ctx>, idx: usize, mode: Streamed) {
    let mut rng = Rng::from_clock(idx as u64);
    let mut random = vec![0u8; 64 * 1024];
    rng.fill(&mut random);
    let mask = rng.mask();
    let letters = vec![b'x'; FRAGMENT_LEN];
    let first_fragment = rawws::client_frame(false, OP_TEXT, &letters, mask);
    let continuations: Vec<u8> =
        (0..4).flat_map(|_| rawws::client_frame(false, OP_CONTINUATION, &letters, mask)).collect();
    let big_header = rawws::frame_header(true, OP_TEXT, BIG_FRAME_LEN, mask);

    while !ctx.over() {
        let Some((stream, ahead)) = ctx.open_station(idx, ctx.opts(None), &mut rng).await else { continue };
        let (mut rd, mut wr) = stream.into_split();
        let reader_ctx = ctx.clone();
        let mut reader = tokio::spawn(async move {
            let stats = reader_ctx.stats.clone();
            let until = reader_ctx.plan.end + Duration::from_millis(200);
            rawws::read_frames(&mut rd, ahead, until, |t| stats.outcomes.add(&server_message_label(t))).await
        });
        let started = Instant::now();
        let mut sent = 0u64;
        let mut first = true;
        let mut from_reader = None;
        let how = loop {
            // A write that is ready at once never meets its deadline: look at the clock too.
            if ctx.over() {
                break WriteEnd::RunOver;
            }
            let (buf, frames): (Cow<[u8]>, u64) = match (mode, first) {
                (Streamed::BigFrame, true) => (Cow::Owned([big_header.as_slice(), &random].concat()), 1),
                (Streamed::BigFrame, false) => (Cow::Borrowed(&random), 0),
                (Streamed::Fragments, true) => (Cow::Borrowed(&first_fragment), 1),
                (Streamed::Fragments, false) => (Cow::Borrowed(&continuations), 4),
                (Streamed::Unsolicited, _) => (Cow::Owned(unsolicited_batch(&mut rng, 256)), 256),
            };
            first = false;
            // The server may end the connection while a write is stuck: watch the reader meanwhile.
            let written = tokio::select! {
                biased;
                r = &mut reader => {
                    from_reader = Some(r.unwrap_or_default());
                    break WriteEnd::ServerEnded;
                }
                w = timeout_at(ctx.until(ctx.plan.timeout), wr.write_all(&buf)) => w,
            };
            match written {
                Ok(Ok(())) => {
                    sent += buf.len() as u64;
                    ctx.stats.sent(buf.len(), frames);
                }
                Ok(Err(e)) => break WriteEnd::Failed(outcomes::io_label(&e)),
                Err(_) if ctx.over() => break WriteEnd::RunOver,
                Err(_) => break WriteEnd::Stalled,
            }
        };
        let seen = match from_reader {
            Some(seen) => seen,
            None => {
                let grace = if how == WriteEnd::RunOver { Duration::from_millis(400) } else { READER_GRACE };
                match tokio::time::timeout(grace, &mut reader).await {
                    Ok(Ok(seen)) => seen,
                    _ => {
                        reader.abort();
                        Seen::default()
                    }
                }
            }
        };
        ctx.stats.outcomes.add(&end_label(how, &seen));
        if how != WriteEnd::RunOver || seen.ended().is_some() {
            ctx.stats.cut_bytes.add(sent as f64);
            ctx.stats.cut_secs.add(started.elapsed().as_secs_f64());
        }
        ctx.stats.closed();
        // Dropping both halves closes the socket with RST (SO_LINGER 0).
    }
}

/// The Authorize of the replay-amplify attack: unique id "A", an idTag of `len` characters.
pub fn big_authorize(len: usize) -> String {
    format!(r#"[2,"A","Authorize",{{"idTag":"{}"}}]"#, "T".repeat(len))
}

/// The idTag length of [`big_authorize`] for a server frame limit: about 65,000 for 64 KiB.
pub fn big_id_tag_len(frame_limit: usize) -> usize {
    frame_limit.saturating_sub(536).max(21)
}

/// `n` Heartbeat CALLs with ids from `*next` on, each its own masked frame.
pub fn heartbeat_batch(next: &mut u64, rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 40);
    for _ in 0..n {
        *next += 1;
        out.extend_from_slice(&rawws::text_frame(&format!(r#"[2,"{next}","Heartbeat",{{}}]"#), rng.mask()));
    }
    out
}

/// no-read and replay-amplify: write flat out, never read, through a 4 KiB receive buffer.
async fn no_read_loop(ctx: Arc<Ctx>, idx: usize, replay: bool) {
    const BATCH: usize = 200;
    let mut rng = Rng::from_clock(1000 + idx as u64);
    let replays: Vec<u8> = {
        let mask = rng.mask();
        (0..BATCH).flat_map(|_| rawws::text_frame(r#"[2,"A","Authorize",{}]"#, mask)).collect()
    };
    let authorize = big_authorize(big_id_tag_len(ctx.plan.frame_limit));
    let mut next_id = 0u64;
    while !ctx.over() {
        let Some((mut stream, _ahead)) = ctx.open_station(idx, ctx.opts(Some(NO_READ_RCVBUF)), &mut rng).await else {
            continue;
        };
        let started = Instant::now();
        let mut last_progress = started;
        let mut blocked = false;
        let mut sent = 0u64;
        let (mut pending, mut frames): (Cow<[u8]>, u64) = if replay {
            (Cow::Owned(rawws::text_frame(&authorize, rng.mask())), 1)
        } else {
            (Cow::Owned(heartbeat_batch(&mut next_id, &mut rng, BATCH)), BATCH as u64)
        };
        let mut pos = 0usize;
        let how = loop {
            if ctx.over() {
                break WriteEnd::RunOver;
            }
            if pos == pending.len() {
                ctx.stats.messages.fetch_add(frames, Relaxed);
                (pending, frames) = if replay {
                    (Cow::Borrowed(replays.as_slice()), BATCH as u64)
                } else {
                    (Cow::Owned(heartbeat_batch(&mut next_id, &mut rng, BATCH)), BATCH as u64)
                };
                pos = 0;
            }
            match timeout_at(ctx.until(BLOCKED_AFTER), stream.write(&pending[pos..])).await {
                Ok(Ok(0)) => break WriteEnd::Failed("eof"),
                Ok(Ok(n)) => {
                    pos += n;
                    sent += n as u64;
                    ctx.stats.bytes.fetch_add(n as u64, Relaxed);
                    last_progress = Instant::now();
                }
                Ok(Err(e)) => break WriteEnd::Failed(outcomes::io_label(&e)),
                Err(_) if ctx.over() => break WriteEnd::RunOver,
                Err(_) => {
                    if !blocked {
                        blocked = true;
                        ctx.stats.outcomes.add("blocked");
                        ctx.stats.blocked_secs.add(last_progress.duration_since(started).as_secs_f64());
                    }
                }
            }
        };
        let label = match how {
            // Still making no progress when the time ran out.
            WriteEnd::RunOver if last_progress.elapsed() >= BLOCKED_AFTER => "blocked_at_end".to_string(),
            other => end_label(other, &Seen::default()),
        };
        ctx.stats.outcomes.add(&label);
        if how != WriteEnd::RunOver {
            ctx.stats.cut_bytes.add(sent as f64);
            ctx.stats.cut_secs.add(started.elapsed().as_secs_f64());
        }
        ctx.stats.closed();
    }
}

/// The request head of a stalled-body connection: a sign-in whose body never comes.
pub fn stalled_request(host: &str, api_path: &str) -> String {
    format!(
        "POST {}/sessions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: \
         {STALLED_CONTENT_LENGTH}\r\n\r\n",
        api_path.trim_end_matches('/')
    )
}

/// The label of a held flood connection the server ended, from what it sent before closing.
pub fn flood_end_label(received: &[u8], error: Option<&'static str>) -> String {
    if let Ok(Some(head)) = rawws::parse_response_head(received) {
        return format!("closed_{}", outcomes::http_label(head.status));
    }
    match (error, received.is_empty()) {
        (Some(e), _) => format!("closed_{e}"),
        (None, true) => "closed_eof".into(),
        (None, false) => "closed_eof_after_data".into(),
    }
}

/// stalled-body and conn-flood: one connection opener.
async fn flood_opener(ctx: Arc<Ctx>, permits: Arc<Semaphore>, head: Option<Arc<Vec<u8>>>) {
    let connect_wait = ctx.plan.timeout.min(Duration::from_secs(3));
    while !ctx.over() {
        // Wakes once a second to notice an early stop.
        let permit = match timeout_at(ctx.until(Duration::from_secs(1)), permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => break,
            Err(_) => continue,
        };
        // Permits come free in a rush at the end, as the held connections let go.
        if ctx.over() {
            break;
        }
        ctx.stats.attempts.fetch_add(1, Relaxed);
        let mut stream = match rawws::tcp_connect(ctx.plan.api_at.addr, ctx.opts(None), ctx.until(connect_wait)).await {
            Ok(s) => s,
            Err(e) => {
                if ctx.over() && e == RawError::Timeout {
                    ctx.stats.outcomes.add(UNFINISHED);
                } else {
                    ctx.stats.outcomes.add(&format!("connect_{}", e.kind()));
                }
                drop(permit);
                if e != RawError::Timeout {
                    ctx.pause().await;
                }
                continue;
            }
        };
        if let Some(head) = &head {
            match timeout_at(ctx.until(ctx.plan.timeout), stream.write_all(head)).await {
                Ok(Ok(())) => ctx.stats.sent(head.len(), 1),
                Ok(Err(e)) => {
                    ctx.stats.outcomes.add(&format!("send_{}", outcomes::io_label(&e)));
                    continue;
                }
                Err(_) => {
                    ctx.stats.outcomes.add(if ctx.over() { UNFINISHED } else { "send_timeout" });
                    continue;
                }
            }
        }
        ctx.stats.established.fetch_add(1, Relaxed);
        ctx.stats.opened();
        tokio::spawn(hold(ctx.clone(), stream, permit));
    }
}

/// Holds a flood connection until the server ends it or the attack is over.
async fn hold(ctx: Arc<Ctx>, mut stream: TcpStream, permit: OwnedSemaphorePermit) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut chunk = [0u8; 1024];
    let ended = loop {
        if ctx.stats.stop.load(Relaxed) {
            break None;
        }
        let read = tokio::select! {
            r = timeout_at(ctx.plan.end, stream.read(&mut chunk)) => r,
            _ = ctx.stats.stopping.notified() => break None,
        };
        match read {
            Err(_) => break None,
            Ok(Ok(0)) => break Some(flood_end_label(&received, None)),
            Ok(Ok(n)) => {
                received.extend_from_slice(&chunk[..n]);
                // An answer (or garbage) ends it: the request is over either way.
                if !matches!(rawws::parse_response_head(&received), Ok(None)) {
                    break Some(flood_end_label(&received, None));
                }
            }
            Ok(Err(e)) => break Some(flood_end_label(&received, Some(outcomes::io_label(&e)))),
        }
    };
    match ended {
        Some(label) => {
            ctx.stats.outcomes.add(&label);
            ctx.stats.cut_secs.add(started.elapsed().as_secs_f64());
        }
        None => ctx.stats.outcomes.add("open_at_end"),
    }
    ctx.stats.closed();
    drop(permit);
}

/// The DataTransfer payload of the event flood: its whole frame stays just under `frame_limit`
/// bytes for any call id of up to 20 characters.
pub fn data_transfer_payload(frame_limit: usize) -> String {
    // [2,"<id>","DataTransfer",{"vendorId":"x","data":"…"}] is 48 bytes plus the id and the data.
    let fill = frame_limit.saturating_sub(48 + 20 + 16);
    format!(r#"{{"vendorId":"x","data":"{}"}}"#, "d".repeat(fill))
}

async fn event_flood(ctx: Arc<Ctx>, idx: usize) {
    let payload = data_transfer_payload(ctx.plan.frame_limit);
    let mut rng = Rng::from_clock(2000 + idx as u64);
    while !ctx.over() {
        let Some((stream, ahead)) = ctx.open_station(idx, ctx.opts(None), &mut rng).await else { continue };
        let started = Instant::now();
        let mut conn = Conn::from_upgraded(stream, ahead).await;
        let boot = conn.call("BootNotification", &messages::boot_notification(), ctx.until(ctx.plan.timeout)).await;
        let mut gone = match boot {
            Outcome::Result(v) if v["status"] == "Accepted" => None,
            Outcome::Result(v) => Some(format!("boot_{}", outcomes::clean(v["status"].as_str().unwrap_or("")))),
            Outcome::CallError { code, .. } => Some(format!("boot_{}", outcomes::callerror_label(&code))),
            Outcome::Timeout => Some("boot_timeout".into()),
            Outcome::Closed(_) => Some(conn.end_kind().unwrap_or("eof").to_string()),
        };
        let mut sent = 0u64;
        while gone.is_none() && !ctx.over() {
            let out = conn.call_json("DataTransfer", &payload, ctx.until(ctx.plan.timeout)).await;
            ctx.stats.sent(payload.len() + 48, 1);
            sent += payload.len() as u64 + 48;
            match out {
                Outcome::Result(v) => ctx.stats.outcomes.add(&outcomes::datatransfer_label(&v)),
                Outcome::CallError { code, .. } => ctx.stats.outcomes.add(&outcomes::callerror_label(&code)),
                Outcome::Timeout if ctx.over() => ctx.stats.outcomes.add(UNFINISHED),
                Outcome::Timeout => ctx.stats.outcomes.add("timeout"),
                Outcome::Closed(_) => gone = Some(conn.end_kind().unwrap_or("eof").to_string()),
            }
        }
        match gone {
            Some(label) => {
                ctx.stats.outcomes.add(&label);
                ctx.stats.cut_bytes.add(sent as f64);
                ctx.stats.cut_secs.add(started.elapsed().as_secs_f64());
                if label.starts_with("boot_") {
                    let _ = conn.close(Duration::from_millis(500)).await;
                    ctx.pause().await;
                }
            }
            None => {
                ctx.stats.outcomes.add("open_at_end");
                let _ = conn.close(Duration::from_millis(500)).await;
            }
        }
        ctx.stats.closed();
    }
}

async fn auth_brute(ctx: Arc<Ctx>, idx: usize) {
    let mut rng = Rng::from_clock(3000 + idx as u64);
    let cred = ctx.station(0).clone();
    while !ctx.over() {
        let wrong = format!("wrong-{:016x}{:016x}", rng.next_u64(), rng.next_u64());
        ctx.stats.attempts.fetch_add(1, Relaxed);
        ctx.stats.messages.fetch_add(1, Relaxed);
        let deadline = ctx.until(ctx.plan.timeout);
        match rawws::open_ws(&ctx.plan.stations_at, &cred.id, Some(&wrong), ctx.opts(None), &mut rng, deadline).await {
            Ok(_) => {
                ctx.stats.established.fetch_add(1, Relaxed);
                ctx.stats.outcomes.add("http_101");
            }
            Err(e @ RawError::Http { .. }) => {
                ctx.stats.established.fetch_add(1, Relaxed);
                ctx.failed(&e);
            }
            Err(e) => {
                ctx.failed(&e);
                ctx.pause().await;
            }
        }
    }
}

/// A sign-up of the flood: e-mail, password, name and a slug the server takes (2–32 of a-z, 0-9, '-').
pub fn signup_body(nonce: &str, n: u64) -> Value {
    json!({
        "email": format!("flood-{nonce}-{n}@flood.example.com"),
        "password": format!("flood-password-{n:08}"),
        "name": format!("flood {n}"),
        "slug": format!("fl-{nonce}-{n}"),
    })
}

async fn signup_flood(ctx: Arc<Ctx>, clients: Arc<Vec<reqwest::Client>>) {
    let Some(api) = ctx.plan.api.as_deref() else { return };
    let url = format!("{}/accounts", api.trim_end_matches('/'));
    while !ctx.over() {
        let n = ctx.counter.fetch_add(1, Relaxed);
        let client = &clients[n as usize % clients.len()];
        ctx.stats.attempts.fetch_add(1, Relaxed);
        ctx.stats.messages.fetch_add(1, Relaxed);
        let body = signup_body(&ctx.plan.nonce, n);
        match timeout_at(ctx.until(ctx.plan.timeout), client.post(&url).json(&body).send()).await {
            Err(_) => ctx.stats.outcomes.add(if ctx.over() { UNFINISHED } else { "timeout" }),
            Ok(Ok(r)) => {
                ctx.stats.established.fetch_add(1, Relaxed);
                ctx.stats.outcomes.add(&outcomes::http_label(r.status().as_u16()));
                if let Some(v) = r.headers().get("retry-after").and_then(|v| v.to_str().ok()) {
                    ctx.stats.retry_after.add(&outcomes::clean(v));
                }
            }
            Ok(Err(e)) => {
                ctx.stats.outcomes.add(&outcomes::reqwest_label(&e));
                ctx.pause().await;
            }
        }
    }
}

async fn reconnect_loop(ctx: Arc<Ctx>, idx: usize) {
    let mut rng = Rng::from_clock(4000 + idx as u64);
    while !ctx.over() {
        let Some((stream, ahead)) = ctx.open_station(idx, ctx.opts(None), &mut rng).await else { continue };
        ctx.stats.accepted_at(ctx.second_of_attack());
        let mut conn = Conn::from_upgraded(stream, ahead).await;
        ctx.stats.messages.fetch_add(1, Relaxed);
        let out = conn.call("BootNotification", &messages::boot_notification(), ctx.until(ctx.plan.timeout)).await;
        let (label, alive) = match out {
            Outcome::Result(v) => (format!("boot_{}", outcomes::clean(v["status"].as_str().unwrap_or(""))), true),
            Outcome::CallError { code, .. } => (format!("boot_{}", outcomes::callerror_label(&code)), true),
            Outcome::Timeout if ctx.over() => (UNFINISHED.to_string(), true),
            Outcome::Timeout => ("boot_timeout".into(), true),
            Outcome::Closed(_) => (conn.end_kind().unwrap_or("eof").to_string(), false),
        };
        ctx.stats.outcomes.add(&label);
        // A close frame, and gone at once: no waiting for the server to close its end.
        if alive {
            conn.hang_up(ctx.plan.timeout.min(Duration::from_secs(1))).await;
        }
        ctx.stats.closed();
    }
}

/// Runs the attack from `plan.start` to `plan.end`; clients still running a little after the end
/// are aborted (and counted).
pub async fn run(plan: AttackPlan, stats: Arc<AttackStats>) {
    let ctx = Arc::new(Ctx { plan, stats, next_ip: AtomicUsize::new(0), counter: AtomicU64::new(0) });
    sleep_until(ctx.plan.start).await;
    let n = ctx.plan.attackers as usize;
    let mut set = JoinSet::new();
    match ctx.plan.kind {
        AttackKind::BigFrame | AttackKind::Fragments | AttackKind::Unsolicited => {
            let mode = match ctx.plan.kind {
                AttackKind::BigFrame => Streamed::BigFrame,
                AttackKind::Fragments => Streamed::Fragments,
                _ => Streamed::Unsolicited,
            };
            for i in 0..n {
                set.spawn(stream_loop(ctx.clone(), i, mode));
            }
        }
        AttackKind::NoRead | AttackKind::ReplayAmplify => {
            let replay = ctx.plan.kind == AttackKind::ReplayAmplify;
            for i in 0..n {
                set.spawn(no_read_loop(ctx.clone(), i, replay));
            }
        }
        AttackKind::StalledBody | AttackKind::ConnFlood => {
            let permits = Arc::new(Semaphore::new(ctx.plan.max_conns.min(Semaphore::MAX_PERMITS as u64) as usize));
            let head = (ctx.plan.kind == AttackKind::StalledBody)
                .then(|| Arc::new(stalled_request(&ctx.plan.api_at.host, &ctx.plan.api_at.path).into_bytes()));
            for _ in 0..n * FLOOD_CONNECTS_PER_CLIENT {
                set.spawn(flood_opener(ctx.clone(), permits.clone(), head.clone()));
            }
        }
        AttackKind::EventFlood => {
            for i in 0..n {
                set.spawn(event_flood(ctx.clone(), i));
            }
        }
        AttackKind::AuthBrute => {
            for i in 0..n {
                set.spawn(auth_brute(ctx.clone(), i));
            }
        }
        AttackKind::SignupFlood => {
            let clients = signup_clients(&ctx.plan);
            for _ in 0..n {
                set.spawn(signup_flood(ctx.clone(), clients.clone()));
            }
        }
        AttackKind::ReconnectLoop => {
            for i in 0..n {
                set.spawn(reconnect_loop(ctx.clone(), i));
            }
        }
    }
    let hard = ctx.plan.end + ctx.plan.timeout.min(Duration::from_secs(5)) + Duration::from_secs(1);
    loop {
        match timeout_at(hard, set.join_next()).await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                ctx.stats.aborted.store(set.len() as u64, Relaxed);
                set.abort_all();
                while set.join_next().await.is_some() {}
                break;
            }
        }
    }
    // Held flood connections end at `end` by themselves.
    while ctx.stats.open.load(Relaxed) > 0 && Instant::now() < hard {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One HTTP client per attack source address (one in all without --attack-source-ips).
fn signup_clients(plan: &AttackPlan) -> Arc<Vec<reqwest::Client>> {
    let build = |ip: Option<IpAddr>| {
        let b = reqwest::Client::builder().timeout(plan.timeout).local_address(ip);
        b.build().unwrap_or_else(|_| reqwest::Client::new())
    };
    let clients: Vec<reqwest::Client> = if plan.source_ips.is_empty() {
        vec![build(None)]
    } else {
        plan.source_ips.iter().map(|ip| build(Some(*ip))).collect()
    };
    Arc::new(clients)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rawws::{parse_server_frame, Parsed};

    #[test]
    fn server_messages_are_labelled_by_kind() {
        assert_eq!(server_message_label(br#"[4,"1","GenericError","x",{}]"#), "server_callerror_GenericError");
        assert_eq!(server_message_label(br#"[3,"1",{}]"#), "server_callresult");
        assert_eq!(server_message_label(br#"[2,"9","Reset",{"type":"Soft"}]"#), "server_call_Reset");
        assert_eq!(server_message_label(b"not json"), "server_text_other");
        assert_eq!(server_message_label(br#"{"a":1}"#), "server_text_other");
    }

    #[test]
    fn the_server_view_wins_over_the_writer_view() {
        let closed = Seen { close: Some(Some(1009)), ..Seen::default() };
        assert_eq!(end_label(WriteEnd::Failed("reset"), &closed), "close_1009");
        assert_eq!(end_label(WriteEnd::Failed("reset"), &Seen::default()), "reset");
        assert_eq!(end_label(WriteEnd::Stalled, &Seen::default()), "write_stalled");
        assert_eq!(end_label(WriteEnd::RunOver, &Seen { open: true, ..Seen::default() }), "open_at_end");
        assert_eq!(end_label(WriteEnd::ServerEnded, &Seen { eof: true, ..Seen::default() }), "eof");
    }

    #[test]
    fn unsolicited_frames_are_callresults_with_distinct_ids() {
        let mut rng = Rng::new(3);
        let mut buf = unsolicited_batch(&mut rng, 50);
        let mut ids = std::collections::BTreeSet::new();
        while !buf.is_empty() {
            let Parsed::Frame(f, used) = parse_server_frame(&buf, 1000) else { panic!("not a frame") };
            let v: Value = serde_json::from_slice(&f.payload).unwrap();
            assert_eq!((v[0].as_i64(), v[2].clone()), (Some(3), json!({})));
            ids.insert(v[1].as_str().unwrap().to_string());
            buf.drain(..used);
        }
        assert_eq!(ids.len(), 50);
    }

    #[test]
    fn heartbeats_number_on() {
        let (mut next, mut rng) = (0u64, Rng::new(1));
        let mut buf = heartbeat_batch(&mut next, &mut rng, 3);
        assert_eq!(next, 3);
        let Parsed::Frame(f, used) = parse_server_frame(&buf, 1000) else { panic!("not a frame") };
        assert_eq!(f.payload, br#"[2,"1","Heartbeat",{}]"#);
        buf.drain(..used);
        let Parsed::Frame(f, _) = parse_server_frame(&buf, 1000) else { panic!("not a frame") };
        assert_eq!(f.payload, br#"[2,"2","Heartbeat",{}]"#);
    }

    #[test]
    fn the_replayed_authorize_fits_the_frame_limit() {
        let len = big_id_tag_len(65_536);
        assert_eq!(len, 65_000);
        let a = big_authorize(len);
        assert!(a.len() < 65_536 && a.len() > 65_000, "{}", a.len());
        let v: Value = serde_json::from_str(&a).unwrap();
        assert_eq!((v[1].as_str(), v[2].as_str()), (Some("A"), Some("Authorize")));
        assert_eq!(v[3]["idTag"].as_str().unwrap().len(), 65_000);
    }

    #[test]
    fn data_transfers_stay_just_under_the_limit() {
        for limit in [65_536usize, 1_000] {
            let payload = data_transfer_payload(limit);
            let v: Value = serde_json::from_str(&payload).unwrap();
            assert_eq!(v["vendorId"], "x");
            for id in ["1", "12345678901234567890"] {
                let frame = format!(r#"[2,"{id}","DataTransfer",{payload}]"#);
                assert!(frame.len() < limit, "{} ≥ {limit}", frame.len());
                assert!(frame.len() > limit - 64, "{} is not just under {limit}", frame.len());
            }
        }
    }

    #[test]
    fn stalled_requests_announce_a_body_that_never_comes() {
        let r = stalled_request("127.0.0.1:8190", "/api/v1/");
        assert!(r.starts_with("POST /api/v1/sessions HTTP/1.1\r\nHost: 127.0.0.1:8190\r\n"), "{r}");
        assert!(r.contains("Content-Type: application/json\r\n"));
        assert!(r.contains("Content-Length: 100000\r\n"));
        assert!(r.ends_with("\r\n\r\n"), "the head ends, the body does not follow");
    }

    #[test]
    fn flood_ends_are_labelled() {
        assert_eq!(
            flood_end_label(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n", None),
            "closed_http_408"
        );
        assert_eq!(flood_end_label(b"", None), "closed_eof");
        assert_eq!(flood_end_label(b"", Some("reset")), "closed_reset");
        assert_eq!(flood_end_label(b"HTTP/1.1 4", None), "closed_eof_after_data");
    }

    #[test]
    fn signups_are_fresh_and_well_formed() {
        let a = signup_body("6650a3f1", 0);
        let b = signup_body("6650a3f1", 4_000_000_000);
        assert_ne!(a["email"], b["email"]);
        assert_ne!(a["slug"], b["slug"]);
        for v in [a, b] {
            let slug = v["slug"].as_str().unwrap();
            assert!((2..=32).contains(&slug.len()), "{slug}");
            assert!(slug.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{slug}");
            assert!(v["password"].as_str().unwrap().len() >= 8);
            assert!(v["email"].as_str().unwrap().contains('@'));
        }
    }

    #[test]
    fn stats_track_open_connections_and_seconds() {
        let s = AttackStats::default();
        s.opened();
        s.opened();
        s.closed();
        s.opened();
        assert_eq!((s.open.load(Relaxed), s.open_peak.load(Relaxed)), (2, 2));
        s.accepted_at(0);
        s.accepted_at(3);
        s.accepted_at(3);
        assert_eq!(*s.accepted_by_sec.lock().unwrap(), vec![1, 0, 0, 2]);
    }
}
