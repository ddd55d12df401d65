//! The `scenario` command: a fleet of station classes ([`crate::scenario`]) against the target.
//!
//! Stations connect at the file's `connect_rate` (each boots and sends one StatusNotification
//! Available per connector), then each follows its class until the run's end: Heartbeats every
//! `heartbeat_secs`, sessions on each connector (Start / TransactionEvent Started, a meter reading every
//! `meter_interval_secs`, Stop / Ended after `length_secs`, then `every_secs` idle), flaky drops (the
//! TCP connection reset without a close, then reconnect + boot at once, retried every second) and
//! offline periods (a WebSocket close; the transaction messages due meanwhile are queued with their
//! original timestamps, 2.0.1 TransactionEvents with `offline: true`, and replayed in order once the
//! station is back and booted). At the end open sessions are stopped, queues replayed, and every
//! station closes (status 1000). Every draw is seeded by (seed, station index, stream), so a station
//! behaves the same sharded or not.

use crate::cli::ScenarioArgs;
use crate::conn::{self, Conn, Endpoint, Outcome};
use crate::fleet::unix_ms;
use crate::messages::{self, UniqueClock};
use crate::provision;
use crate::report::{self, ActionReport, ShardReport};
use crate::scenario::{self, Class, Scenario, Secs};
use crate::schedule;
use crate::stats::{latency_ms, new_histogram, LatencyMs};
use crate::sys;
use crate::v201::{self, Protocol};
use anyhow::{anyhow, bail, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{sleep, sleep_until, timeout_at, Instant};

/// Draw streams of a station (with its index and the seed).
const S_HEARTBEAT: u32 = 0;
const S_FLAKY: u32 = 1;
const S_OFFLINE: u32 = 2;
/// Sessions of connector c use streams S_SESSION + 8·c + 0..8, each draw a new stream number.
const S_SESSION: u32 = 16;

/// What one class's stations add to while they run.
#[derive(Default)]
struct Live {
    counts: BTreeMap<&'static str, u64>,
    failures: BTreeMap<String, u64>,
    call_errors: BTreeMap<String, u64>,
    /// Per action label: ok, call errors, timeouts, closed.
    actions: BTreeMap<String, [u64; 4]>,
    /// `connect`, `boot`, `recover`, `replay`, `actions.<label>` (µs).
    hists: BTreeMap<String, Histogram<u64>>,
}

impl Live {
    fn count(&mut self, key: &'static str, n: u64) {
        *self.counts.entry(key).or_default() += n;
    }

    fn fail(&mut self, kind: &str) {
        *self.failures.entry(kind.to_string()).or_default() += 1;
    }

    fn record(&mut self, name: &str, d: Duration) {
        self.hists
            .entry(name.to_string())
            .or_insert_with(new_histogram)
            .saturating_record((d.as_micros() as u64).max(1));
    }

    /// A call's outcome under `label`; `latency` is recorded if it was answered with a CALLRESULT.
    fn outcome(&mut self, label: &str, out: &Outcome, latency: Duration) {
        let slot = match out {
            Outcome::Result(_) => 0,
            Outcome::CallError { .. } => 1,
            Outcome::Timeout => 2,
            Outcome::Closed(_) => 3,
        };
        self.actions.entry(label.to_string()).or_default()[slot] += 1;
        match out {
            Outcome::Result(_) => self.record(&format!("actions.{label}"), latency),
            Outcome::CallError { code, .. } => {
                *self.call_errors.entry(code.clone()).or_default() += 1;
                self.fail(&format!("callerror_{code}"));
            }
            Outcome::Timeout => self.fail("timeout"),
            Outcome::Closed(_) => {}
        }
    }
}

struct Ctx {
    classes: Vec<Class>,
    live: Vec<Mutex<Live>>,
    timeout: Duration,
    scale: f64,
    seed: u64,
    id_tag: String,
    run_tag: u64,
    /// When stations stop their behaviours, stop their sessions, replay and close.
    end: Instant,
    connected: AtomicI64,
    booted: AtomicU64,
    ramp_done: AtomicU64,
    ok_total: AtomicU64,
    offline_now: AtomicI64,
    log_budget: AtomicU64,
}

impl Ctx {
    fn log(&self, line: impl FnOnce() -> String) {
        match self.log_budget.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)) {
            Ok(1) => eprintln!("{} (further failures are only counted)", line()),
            Ok(_) => eprintln!("{}", line()),
            Err(_) => {}
        }
    }
}

/// A transaction message that could not be sent (the station was offline), in the order made.
struct Queued {
    label: &'static str,
    name: &'static str,
    payload: Value,
    /// The station's number of the session it belongs to.
    session: u32,
    /// 1.6 MeterValues/StopTransaction: the session's server transactionId goes in at replay.
    needs_id: bool,
}

/// A connector's session cycle.
#[derive(Clone, Copy)]
enum Session {
    /// The next session starts then (`None`: the class has no sessions).
    Idle(Option<Instant>),
    /// Session `n` (the station's count) is open: its next reading (seqNo `seq`) is due `at`, it ends `until`.
    Open { n: u32, seq: u32, at: Instant, until: Instant },
}

struct Station {
    ctx: Arc<Ctx>,
    class: usize,
    index: u32,
    ep: Endpoint,
    proto: Protocol,
    conn: Option<Conn>,
    clock: UniqueClock,
    /// Offline: since and until when.
    offline: Option<Instant>,
    queue: VecDeque<Queued>,
    /// 1.6: server transactionIds by session number.
    tx_ids: HashMap<u32, i64>,
    sessions: Vec<Session>,
    sessions_made: u32,
    energy: i64,
    draws: u32,
}

impl Station {
    fn class(&self) -> &Class {
        &self.ctx.classes[self.class]
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.ctx.live[self.class].lock().expect("class stats lock")
    }

    /// A seeded draw from `range` (scaled), on a new stream of `base`.
    fn draw(&mut self, base: u32, range: Secs) -> Duration {
        self.draws = self.draws.wrapping_add(1);
        let f = schedule::fraction(self.ctx.seed, self.index, base.wrapping_add(self.draws << 8));
        range.draw(f, self.ctx.scale)
    }

    /// Connect and BootNotification (Accepted); the failure's kind otherwise. Latencies go to
    /// `connect`/`boot` only with `timed`.
    async fn connect_boot(&mut self, timed: bool) -> Result<(), String> {
        let t0 = Instant::now();
        let mut c = Box::pin(conn::connect_as(&self.ep, self.proto, t0 + self.ctx.timeout)).await.map_err(|e| {
            self.ctx.log(|| format!("{}: connect failed: {e}", self.ep.id));
            e.kind()
        })?;
        let t1 = Instant::now();
        let boot = match self.proto {
            Protocol::V16 => messages::boot_notification(),
            Protocol::V201 => v201::boot_notification(),
        };
        let out = c.call("BootNotification", &boot, t1 + self.ctx.timeout).await;
        if let Some(kind) = conn::boot_failure(&out) {
            self.ctx.log(|| format!("{}: BootNotification failed: {kind}", self.ep.id));
            return Err(kind.into());
        }
        if timed {
            let mut l = self.live();
            l.record("connect", t1 - t0);
            l.record("boot", t1.elapsed());
        }
        self.ctx.connected.fetch_add(1, Relaxed);
        self.conn = Some(c);
        Ok(())
    }

    /// Reconnects (retrying every second until the run's end); true once booted.
    async fn reconnect(&mut self) -> bool {
        loop {
            match self.connect_boot(false).await {
                Ok(()) => {
                    self.live().count("reconnects", 1);
                    return true;
                }
                Err(kind) => self.live().fail(&format!("reconnect_{kind}")),
            }
            let retry = Instant::now() + Duration::from_secs(1);
            if retry >= self.ctx.end {
                return false;
            }
            sleep_until(retry).await;
        }
    }

    /// The connection is gone, not by the station's doing.
    fn lost(&mut self, why: &str) {
        if self.conn.take().is_some() {
            self.ctx.connected.fetch_sub(1, Relaxed);
            let mut l = self.live();
            l.count("disconnects", 1);
            l.fail(&format!("lost_{why}"));
        }
    }

    /// One call on the open connection; its outcome recorded under `label`, latency from `from`.
    async fn call(&mut self, label: &str, name: &str, payload: &Value, from: Instant) -> Option<Value> {
        let c = self.conn.as_mut()?;
        let out = c.call(name, payload, Instant::now() + self.ctx.timeout).await;
        let end_kind = c.end_kind().unwrap_or("closed").to_string();
        self.live().outcome(label, &out, from.elapsed());
        match out {
            Outcome::Result(v) => {
                self.ctx.ok_total.fetch_add(1, Relaxed);
                Some(v)
            }
            Outcome::Closed(e) => {
                self.ctx.log(|| format!("{}: connection lost during {label}: {e}", self.ep.id));
                self.lost(&end_kind);
                None
            }
            _ => None,
        }
    }

    /// Sends a transaction message now, or queues it while the station has no connection.
    async fn send_or_queue(
        &mut self,
        label: &'static str,
        name: &'static str,
        mut payload: Value,
        from: Instant,
        session: u32,
    ) {
        if self.offline.is_some() || self.conn.is_none() {
            if self.proto == Protocol::V201 {
                payload["offline"] = json!(true);
            }
            let needs_id = self.proto == Protocol::V16 && label != "StartTransaction";
            self.queue.push_back(Queued { label, name, payload, session, needs_id });
            self.live().count("queued", 1);
            return;
        }
        if let Some(v) = self.call(label, name, &payload, from).await {
            if label == "StartTransaction" {
                match v["transactionId"].as_i64() {
                    Some(id) => {
                        self.tx_ids.insert(session, id);
                    }
                    None => self.live().fail("start_without_transaction_id"),
                }
            }
        }
    }

    /// Replays the queue in order on the fresh connection; stops (keeping the rest) if it is lost.
    async fn replay(&mut self) {
        let back = Instant::now();
        while let Some(mut q) = self.queue.pop_front() {
            if q.needs_id {
                match self.tx_ids.get(&q.session) {
                    Some(id) => q.payload["transactionId"] = json!(id),
                    None => {
                        let mut l = self.live();
                        l.count("replay_failed", 1);
                        l.fail("replay_no_transaction_id");
                        continue;
                    }
                }
            }
            let sent = Instant::now();
            match self.call(q.label, q.name, &q.payload, sent).await {
                Some(v) => {
                    if q.label == "StartTransaction" {
                        if let Some(id) = v["transactionId"].as_i64() {
                            self.tx_ids.insert(q.session, id);
                        }
                    }
                    let mut l = self.live();
                    l.count("replayed", 1);
                    l.record("replay", back.elapsed());
                }
                None if self.conn.is_none() => {
                    self.queue.push_front(q);
                    return;
                }
                None => self.live().count("replay_failed", 1),
            }
        }
    }

    /// Session `n`'s message number `seq` (0: the start; `end`: the stop; else a reading): its label
    /// in the report, the call's action and payload.
    fn session_message(&mut self, connector: u32, n: u32, seq: u32, end: bool) -> (&'static str, &'static str, Value) {
        let ts = self.clock.next();
        let tag = self.ctx.id_tag.clone();
        if seq > 0 {
            self.energy += 100;
        }
        match self.proto {
            Protocol::V16 if seq == 0 => {
                ("StartTransaction", "StartTransaction", messages::start_transaction(connector, &tag, self.energy, &ts))
            }
            Protocol::V16 if end => (
                "StopTransaction",
                "StopTransaction",
                messages::stop_transaction(self.tx_ids.get(&n).copied().unwrap_or(0), &tag, self.energy, &ts),
            ),
            Protocol::V16 => (
                "MeterValues",
                "MeterValues",
                messages::meter_values(connector, self.tx_ids.get(&n).copied().unwrap_or(0), self.energy, &ts),
            ),
            Protocol::V201 => {
                let id = v201::transaction_id(self.ctx.run_tag, self.index, n);
                // Updated while seq ≤ updates; Ended past them.
                let updates = if end { seq - 1 } else { u32::MAX };
                let label = match (seq, end) {
                    (0, _) => "TransactionEvent(Started)",
                    (_, true) => "TransactionEvent(Ended)",
                    _ => "TransactionEvent(Updated)",
                };
                (
                    label,
                    "TransactionEvent",
                    v201::transaction_event(&id, seq, updates, connector, &tag, self.energy, &ts),
                )
            }
        }
    }

    /// Runs the session event due on `connector`.
    async fn session_event(&mut self, connector: u32, due: Instant) {
        let Some(spec) = self.class().sessions else { return };
        let slot = (connector - 1) as usize;
        let base = S_SESSION + 8 * connector;
        let (n, seq, end) = match self.sessions[slot] {
            Session::Idle(_) => {
                let n = self.sessions_made;
                self.sessions_made += 1;
                let until = due + self.draw(base, spec.length);
                let at = due + self.draw(base + 1, spec.meter_interval);
                self.sessions[slot] = Session::Open { n, seq: 1, at, until };
                self.live().count("sessions_started", 1);
                (n, 0, false)
            }
            Session::Open { n, seq, until, .. } if due >= until => {
                self.sessions[slot] = Session::Idle(Some(due + self.draw(base + 2, spec.gap)));
                self.live().count("sessions_completed", 1);
                (n, seq, true)
            }
            Session::Open { n, seq, until, .. } => {
                let at = due + self.draw(base + 1, spec.meter_interval);
                self.sessions[slot] = Session::Open { n, seq: seq + 1, at: at.min(until), until };
                self.live().count("meter_values", 1);
                (n, seq, false)
            }
        };
        let (label, name, payload) = self.session_message(connector, n, seq, end);
        self.send_or_queue(label, name, payload, due, n).await;
    }

    /// The next due session event: (connector, time).
    fn next_session(&self) -> Option<(u32, Instant)> {
        self.sessions
            .iter()
            .zip(1u32..)
            .filter_map(|(s, c)| match *s {
                Session::Idle(Some(t)) => Some((c, t)),
                Session::Open { at, until, .. } => Some((c, at.min(until))),
                Session::Idle(None) => None,
            })
            .min_by_key(|&(_, t)| t)
    }
}

/// Time-of-event kinds of a station's loop.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Due {
    Heartbeat,
    Session(u32),
    Flaky,
    OfflineStart,
    OfflineEnd,
    End,
}

async fn run_station(mut st: Station, permit: tokio::sync::OwnedSemaphorePermit) {
    let ctx = st.ctx.clone();
    let booted = st.connect_boot(true).await;
    drop(permit);
    ctx.ramp_done.fetch_add(1, Relaxed);
    if let Err(kind) = booted {
        let mut l = st.live();
        l.count("ramp_failures", 1);
        l.fail(&kind);
        return;
    }
    ctx.booted.fetch_add(1, Relaxed);
    st.live().count("booted", 1);
    for connector in 1..=st.class().connectors {
        let ts = st.clock.next();
        let payload = match st.proto {
            Protocol::V16 => messages::status_available(connector, &ts),
            Protocol::V201 => v201::status_available(connector, 1, &ts),
        };
        st.call("StatusNotification", "StatusNotification", &payload, Instant::now()).await;
    }

    let class = st.class().clone();
    let now = Instant::now();
    let mut hb = Some(now + st.draw(S_HEARTBEAT, class.heartbeat));
    st.sessions = (1..=class.connectors)
        .map(|c| {
            Session::Idle(
                class.sessions.map(|s| now + st.draw(S_SESSION + 8 * c + 3, Secs { min: 0.0, max: s.gap.max })),
            )
        })
        .collect();
    let mut flaky = class.flaky.map(|f| now + st.draw(S_FLAKY, f.every));
    let mut offline_at = class.offline.map(|o| now + st.draw(S_OFFLINE, o.every));
    let mut offline_until = now;

    loop {
        let mut due = (ctx.end, Due::End);
        let mut consider = |t: Option<Instant>, d: Due| {
            if let Some(t) = t {
                if t < due.0 {
                    due = (t, d);
                }
            }
        };
        if st.offline.is_some() {
            consider(Some(offline_until), Due::OfflineEnd);
        } else {
            consider(hb, Due::Heartbeat);
            consider(flaky, Due::Flaky);
            consider(offline_at, Due::OfflineStart);
        }
        if let Some((c, t)) = st.next_session() {
            consider(Some(t), Due::Session(c));
        }
        let (at, what) = due;
        // Online without a connection (lost, reconnect failed): try again before anything else.
        if st.offline.is_none() && st.conn.is_none() {
            if !st.reconnect().await {
                break;
            }
            st.replay().await;
            continue;
        }
        if let Some(c) = st.conn.as_mut() {
            if let Err(e) = c.serve_until(sleep_until(at)).await {
                let kind = c.end_kind().unwrap_or("closed").to_string();
                ctx.log(|| format!("{}: connection lost: {e}", st.ep.id));
                st.lost(&kind);
                continue;
            }
        } else {
            sleep_until(at).await;
        }
        match what {
            Due::End => break,
            Due::Heartbeat => {
                hb = Some(at + st.draw(S_HEARTBEAT, class.heartbeat));
                st.call("Heartbeat", "Heartbeat", &messages::heartbeat(), at).await;
            }
            Due::Session(c) => st.session_event(c, at).await,
            Due::Flaky => {
                let every = class.flaky.map(|f| f.every).unwrap_or(Secs { min: 1.0, max: 1.0 });
                if let Some(c) = st.conn.take() {
                    c.abandon(true);
                    ctx.connected.fetch_sub(1, Relaxed);
                }
                st.live().count("flaky_drops", 1);
                if !st.reconnect().await {
                    break;
                }
                {
                    let mut l = st.live();
                    l.count("flaky_recovered", 1);
                    l.record("recover", at.elapsed());
                }
                st.replay().await;
                flaky = Some(Instant::now() + st.draw(S_FLAKY, every));
            }
            Due::OfflineStart => {
                let Some(spec) = class.offline else { continue };
                if let Some(c) = st.conn.take() {
                    c.hang_up(Duration::from_secs(1)).await;
                    ctx.connected.fetch_sub(1, Relaxed);
                }
                st.offline = Some(at);
                ctx.offline_now.fetch_add(1, Relaxed);
                offline_until = at + st.draw(S_OFFLINE, spec.duration);
                st.live().count("offline_periods", 1);
            }
            Due::OfflineEnd => {
                let Some(spec) = class.offline else { continue };
                st.offline = None;
                ctx.offline_now.fetch_sub(1, Relaxed);
                if !st.reconnect().await {
                    break;
                }
                st.live().count("back_online", 1);
                st.replay().await;
                // No Heartbeat is owed for the time offline.
                hb = Some(Instant::now() + st.draw(S_HEARTBEAT, class.heartbeat));
                offline_at = Some(Instant::now() + st.draw(S_OFFLINE, spec.every));
            }
        }
    }

    // The end: back online if need be, replay, stop open sessions, close.
    let was_offline = st.offline.take().is_some();
    if was_offline {
        ctx.offline_now.fetch_sub(1, Relaxed);
    }
    if st.conn.is_none() && (!st.queue.is_empty() || st.sessions.iter().any(|s| matches!(s, Session::Open { .. }))) {
        // A last chance past the end: one attempt.
        if st.connect_boot(false).await.is_ok() {
            let mut l = st.live();
            l.count("reconnects", 1);
            if was_offline {
                l.count("back_online", 1);
            }
        }
    }
    if st.conn.is_some() {
        st.replay().await;
    }
    for c in 1..=class.connectors {
        if let Session::Open { n, seq, .. } = st.sessions[(c - 1) as usize] {
            // Stopped now, before its planned end.
            st.sessions[(c - 1) as usize] = Session::Idle(None);
            st.live().count("stopped_at_end", 1);
            let (label, name, payload) = st.session_message(c, n, seq, true);
            st.send_or_queue(label, name, payload, Instant::now(), n).await;
        }
    }
    let left = st.queue.len() as u64;
    if left > 0 {
        st.live().count("left_unsent", left);
    }
    if let Some(c) = st.conn.take() {
        let clean = c.close(ctx.timeout.min(Duration::from_secs(2))).await;
        ctx.connected.fetch_sub(1, Relaxed);
        st.live().count(if clean { "closed_clean" } else { "closed_unclean" }, 1);
    }
}

/// A class's (or the whole run's) figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassReport {
    /// Stations of the class in this run (this shard's with --shard).
    pub stations: u64,
    /// Connected and booted (BootNotification Accepted) in the ramp; failed to.
    pub booted: u64,
    pub ramp_failures: u64,
    pub connect_ms: LatencyMs,
    pub boot_ms: LatencyMs,
    /// CALLRESULTs received, all actions.
    pub messages: u64,
    /// By action label (`Heartbeat`, `StartTransaction`, `TransactionEvent(Started)`, …).
    pub actions: BTreeMap<String, ActionReport>,
    pub sessions: SessionsReport,
    pub flaky: FlakyReport,
    pub offline: OfflineReport,
    /// Connections lost not by the station's doing; reconnects (with boot) of any cause.
    pub disconnects: u64,
    pub reconnects: u64,
    pub closed_clean: u64,
    pub closed_unclean: u64,
    pub failures_by_kind: BTreeMap<String, u64>,
    pub call_errors_by_code: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionsReport {
    pub started: u64,
    /// Ended at their drawn length.
    pub completed: u64,
    /// Still open at the run's end, stopped then.
    pub stopped_at_end: u64,
    /// Readings (MeterValues / TransactionEvent Updated) made.
    pub meter_values: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FlakyReport {
    pub drops: u64,
    pub recovered: u64,
    /// From the drop to the BootNotification accepted again.
    pub recover_ms: LatencyMs,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OfflineReport {
    pub periods: u64,
    pub back_online: u64,
    /// Transaction messages queued while offline (or disconnected); replayed with a CALLRESULT;
    /// replayed without one (CALLERROR, timeout) or not replayable; still queued at the end.
    pub queued: u64,
    pub replayed: u64,
    pub replay_failed: u64,
    pub left_unsent: u64,
    /// Per replayed message: from the station's reconnect (boot accepted) to its CALLRESULT.
    pub replay_ms: LatencyMs,
}

fn empty() -> LatencyMs {
    latency_ms(&new_histogram())
}

fn sum_map(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, n) in from {
        *into.entry(k.clone()).or_default() += n;
    }
}

impl ClassReport {
    fn from_live(stations: u64, l: &Live) -> ClassReport {
        let n = |k: &str| l.counts.get(k).copied().unwrap_or(0);
        let actions = l
            .actions
            .iter()
            .map(|(k, a)| {
                let r = ActionReport { ok: a[0], call_errors: a[1], timeouts: a[2], closed: a[3], latency_ms: empty() };
                (k.clone(), r)
            })
            .collect();
        ClassReport {
            stations,
            booted: n("booted"),
            ramp_failures: n("ramp_failures"),
            connect_ms: empty(),
            boot_ms: empty(),
            messages: 0,
            actions,
            sessions: SessionsReport {
                started: n("sessions_started"),
                completed: n("sessions_completed"),
                stopped_at_end: n("stopped_at_end"),
                meter_values: n("meter_values"),
            },
            flaky: FlakyReport { drops: n("flaky_drops"), recovered: n("flaky_recovered"), recover_ms: empty() },
            offline: OfflineReport {
                periods: n("offline_periods"),
                back_online: n("back_online"),
                queued: n("queued"),
                replayed: n("replayed"),
                replay_failed: n("replay_failed"),
                left_unsent: n("left_unsent"),
                replay_ms: empty(),
            },
            disconnects: n("disconnects"),
            reconnects: n("reconnects"),
            closed_clean: n("closed_clean"),
            closed_unclean: n("closed_unclean"),
            failures_by_kind: l.failures.clone(),
            call_errors_by_code: l.call_errors.clone(),
        }
    }

    /// Adds `o`'s counts (the latencies are filled from the histograms afterwards).
    fn add(&mut self, o: &ClassReport) {
        self.stations += o.stations;
        self.booted += o.booted;
        self.ramp_failures += o.ramp_failures;
        for (k, a) in &o.actions {
            let e = self.actions.entry(k.clone()).or_insert_with(|| ActionReport {
                ok: 0,
                call_errors: 0,
                timeouts: 0,
                closed: 0,
                latency_ms: empty(),
            });
            e.ok += a.ok;
            e.call_errors += a.call_errors;
            e.timeouts += a.timeouts;
            e.closed += a.closed;
        }
        let (s, os) = (&mut self.sessions, &o.sessions);
        s.started += os.started;
        s.completed += os.completed;
        s.stopped_at_end += os.stopped_at_end;
        s.meter_values += os.meter_values;
        self.flaky.drops += o.flaky.drops;
        self.flaky.recovered += o.flaky.recovered;
        let (f, of) = (&mut self.offline, &o.offline);
        f.periods += of.periods;
        f.back_online += of.back_online;
        f.queued += of.queued;
        f.replayed += of.replayed;
        f.replay_failed += of.replay_failed;
        f.left_unsent += of.left_unsent;
        self.disconnects += o.disconnects;
        self.reconnects += o.reconnects;
        self.closed_clean += o.closed_clean;
        self.closed_unclean += o.closed_unclean;
        sum_map(&mut self.failures_by_kind, &o.failures_by_kind);
        sum_map(&mut self.call_errors_by_code, &o.call_errors_by_code);
    }

    /// The latencies and `messages` from the class's histograms.
    fn fill(&mut self, h: &BTreeMap<String, Histogram<u64>>) {
        let of = |k: &str| h.get(k).map_or_else(empty, latency_ms);
        self.connect_ms = of("connect");
        self.boot_ms = of("boot");
        self.flaky.recover_ms = of("recover");
        self.offline.replay_ms = of("replay");
        for (k, a) in self.actions.iter_mut() {
            a.latency_ms = of(&format!("actions.{k}"));
        }
        self.messages = self.actions.values().map(|a| a.ok).sum();
    }
}

fn add_hists(into: &mut BTreeMap<String, Histogram<u64>>, from: &BTreeMap<String, Histogram<u64>>) -> Result<()> {
    for (k, h) in from {
        into.entry(k.clone())
            .or_insert_with(new_histogram)
            .add(h)
            .map_err(|e| anyhow!("histogram {k} does not fit: {e:?}"))?;
    }
    Ok(())
}

/// A class as the file gave it, with its stations in the whole run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassConfig {
    pub name: String,
    pub share: f64,
    pub protocol: String,
    pub connectors: u32,
    pub heartbeat_secs: String,
    /// `every_secs`, `length_secs`, `meter_interval_secs` as ranges; `null` without sessions.
    pub sessions: Option<BTreeMap<String, String>>,
    pub flaky_every_secs: Option<String>,
    /// `every_secs`, `for_secs`.
    pub offline: Option<BTreeMap<String, String>>,
    pub stations: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScenarioConfig {
    pub file: String,
    pub url_template: String,
    /// The whole run's (all shards').
    pub stations: u64,
    pub duration_secs: f64,
    pub connect_rate: f64,
    pub time_scale: f64,
    pub seed: u64,
    pub timeout_secs: f64,
    pub source_ips: usize,
    pub classes: Vec<ClassConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScenarioSummary {
    pub scenario: String,
    pub config: ScenarioConfig,
    /// First connect to the last station booted or failed.
    pub ramp_secs: f64,
    pub classes: BTreeMap<String, ClassReport>,
    pub overall: ClassReport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<report::MergedReport>,
    /// The run's first connect and its end (stations closed), ms since the Unix epoch.
    pub start_ms: u64,
    pub end_ms: u64,
    /// Class → histogram name (`connect`, `boot`, `recover`, `replay`, `actions.<label>`) → µs
    /// histogram, HdrHistogram V2 serialized, base64.
    pub histograms: BTreeMap<String, BTreeMap<String, String>>,
}

/// The classes' reports (latencies filled) and the overall one, from their counts and histograms.
fn finish_reports(
    classes: &mut BTreeMap<String, ClassReport>,
    hists: &BTreeMap<String, BTreeMap<String, Histogram<u64>>>,
) -> Result<ClassReport> {
    let mut overall = ClassReport::from_live(0, &Live::default());
    let mut all = BTreeMap::new();
    for (name, r) in classes.iter_mut() {
        let h = hists.get(name).cloned().unwrap_or_default();
        r.fill(&h);
        overall.add(r);
        add_hists(&mut all, &h)?;
    }
    overall.fill(&all);
    Ok(overall)
}

fn secs_map(pairs: &[(&str, Secs)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, s)| (k.to_string(), s.label())).collect()
}

fn class_config(c: &Class, stations: u64) -> ClassConfig {
    ClassConfig {
        name: c.name.clone(),
        share: c.share,
        protocol: match c.protocol {
            Protocol::V16 => "1.6".into(),
            Protocol::V201 => "2.0.1".into(),
        },
        connectors: c.connectors,
        heartbeat_secs: c.heartbeat.label(),
        sessions: c.sessions.map(|s| {
            secs_map(&[("every_secs", s.gap), ("length_secs", s.length), ("meter_interval_secs", s.meter_interval)])
        }),
        flaky_every_secs: c.flaky.map(|f| f.every.label()),
        offline: c.offline.map(|o| secs_map(&[("every_secs", o.every), ("for_secs", o.duration)])),
        stations,
    }
}

/// A progress line on stderr every second.
async fn monitor(ctx: Arc<Ctx>, n: u64, started: Instant, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = (0u64, Instant::now());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = Instant::now();
        let ok = ctx.ok_total.load(Relaxed);
        let rate = (ok - last.0) as f64 / now.duration_since(last.1).as_secs_f64();
        last = (ok, now);
        let (mut sessions, mut replayed, mut drops, mut disc, mut fails) = (0, 0, 0, 0, 0u64);
        for l in &ctx.live {
            let l = l.lock().expect("class stats lock");
            let n = |k: &str| l.counts.get(k).copied().unwrap_or(0);
            sessions += n("sessions_started");
            replayed += n("replayed");
            drops += n("flaky_drops");
            disc += n("disconnects");
            fails += l.failures.values().sum::<u64>();
        }
        let left = ctx.end.saturating_duration_since(now).as_secs_f64();
        eprintln!(
            "[{:>5.0}s] ramp {}/{n}  conn {:>6}  booted {:>6}  {rate:>7.1} msgs/s  sessions {sessions}  flaky drops \
             {drops}  offline {}  replayed {replayed}  disc {disc}  failures {fails}  ({left:.0} s left)",
            now.duration_since(started).as_secs_f64(),
            ctx.ramp_done.load(Relaxed),
            ctx.connected.load(Relaxed),
            ctx.booted.load(Relaxed),
            ctx.offline_now.load(Relaxed),
        );
    }
}

pub async fn run(args: ScenarioArgs) -> Result<ScenarioSummary> {
    let sc: Scenario = scenario::load(&args.file).map_err(|e| anyhow!(e))?;
    let whole_n = u64::from(sc.stations);
    let range = match args.shard {
        Some(sh) => {
            let r = sh.range(whole_n);
            if r.is_empty() {
                bail!("--shard {}: {whole_n} stations leave this shard none; use at most {whole_n} shards", sh.label());
            }
            r
        }
        None => 0..whole_n,
    };
    let assignment = scenario::assign(&sc.classes, whole_n);
    let duration = args.duration.unwrap_or(sc.duration_secs);
    let scale = args.time_scale.unwrap_or(sc.time_scale);
    let seed = args.seed.or(sc.seed).unwrap_or(1);
    let timeout = Duration::from_secs_f64(args.timeout);
    let connect_rate = args.shard.map_or(sc.connect_rate, |sh| sh.share(sc.connect_rate, whole_n));
    let n = range.end - range.start;
    let source_ips = args.source_ips.clone().map(|s| s.0).unwrap_or_default();
    if let Err(e) = sys::raise_nofile(n + 1_000) {
        eprintln!("warning: cannot read or raise the open-file limit: {e}");
    }
    if let Some(hint) = sys::port_hint(n, source_ips.len(), sys::ephemeral_ports()) {
        eprintln!("{hint}");
    }

    let sign_up = if range.start == 0 { provision::SignUp::IfMissing } else { provision::SignUp::WaitForIt };
    let (creds, template, tenant) = provision::stations_in(&args.target, range.clone(), sign_up).await?;

    let started = Instant::now();
    let clock_base = (started, std::time::SystemTime::now());
    let ctx = Arc::new(Ctx {
        classes: sc.classes.clone(),
        live: sc.classes.iter().map(|_| Mutex::new(Live::default())).collect(),
        timeout,
        scale,
        seed,
        id_tag: args.target.id_tag.clone(),
        run_tag: chrono::Utc::now().timestamp_millis().max(0) as u64,
        end: started + Duration::from_secs_f64(duration),
        connected: AtomicI64::new(0),
        booted: AtomicU64::new(0),
        ramp_done: AtomicU64::new(0),
        ok_total: AtomicU64::new(0),
        offline_now: AtomicI64::new(0),
        log_budget: AtomicU64::new(10),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let monitor = tokio::spawn(monitor(ctx.clone(), n, started, stop_rx));

    // Connect at the rate, at most 1000 handshakes at once; each station then runs to the end.
    let handshakes = Arc::new(tokio::sync::Semaphore::new(1000));
    let mut tasks = Vec::with_capacity(creds.len());
    let mut per_class = vec![0u64; sc.classes.len()];
    for (i, cred) in creds.into_iter().enumerate() {
        let at = started + schedule::slot(i as u64, connect_rate);
        if at >= ctx.end {
            break;
        }
        sleep_until(at).await;
        let Ok(permit) = handshakes.clone().acquire_owned().await else { break };
        let index = range.start + i as u64;
        let class = assignment[index as usize];
        per_class[class] += 1;
        let st = Station {
            ctx: ctx.clone(),
            class,
            index: index as u32,
            ep: Endpoint {
                url: crate::stations::expand_template(&template, &tenant, &cred.id),
                id: cred.id,
                password: cred.password,
                source_ip: (!source_ips.is_empty()).then(|| source_ips[i % source_ips.len()]),
            },
            proto: sc.classes[class].protocol,
            conn: None,
            clock: UniqueClock::default(),
            offline: None,
            queue: VecDeque::new(),
            tx_ids: HashMap::new(),
            sessions: Vec::new(),
            sessions_made: 0,
            energy: 1_000 + (index as i64 % 1000) * 100,
            draws: 0,
        };
        tasks.push((class, tokio::spawn(run_station(st, permit))));
    }
    let spawned = tasks.len() as u64;
    if spawned < n {
        eprintln!("warning: {} stations were not started before the run's end", n - spawned);
    }
    while ctx.ramp_done.load(Relaxed) < spawned && Instant::now() < ctx.end {
        sleep(Duration::from_millis(10)).await;
    }
    let ramp_secs = started.elapsed().as_secs_f64();
    eprintln!("ramp done in {ramp_secs:.1} s: {} booted", ctx.booted.load(Relaxed));

    // The end: every station stops its sessions, replays and closes; bounded.
    let hard_end = ctx.end + timeout * 4 + Duration::from_secs(5);
    let mut aborted = vec![0u64; sc.classes.len()];
    for (class, t) in tasks {
        let abort = t.abort_handle();
        if timeout_at(hard_end, t).await.is_err() {
            abort.abort();
            aborted[class] += 1;
        }
    }
    let aborted_n: u64 = aborted.iter().sum();
    if aborted_n > 0 {
        eprintln!("warning: {aborted_n} station tasks did not finish in time and were aborted");
    }
    let _ = stop_tx.send(true);
    let _ = monitor.await;
    let end = Instant::now();

    let config = ScenarioConfig {
        file: args.file.display().to_string(),
        url_template: template.replace("{tenant}", &tenant),
        stations: whole_n,
        duration_secs: duration,
        connect_rate: sc.connect_rate,
        time_scale: scale,
        seed,
        timeout_secs: args.timeout,
        source_ips: source_ips.len(),
        classes: class_configs(&sc.classes, &assignment),
    };
    let mut s = summarize(config, &sc.classes, &ctx.live, &per_class, &aborted)?;
    s.ramp_secs = (ramp_secs * 1000.0).round() / 1000.0;
    s.shard = args.shard.map(|sh| ShardReport {
        index: sh.index,
        count: sh.count,
        first_station: range.start + 1,
        stations: n,
    });
    s.start_ms = unix_ms(clock_base, started);
    s.end_ms = unix_ms(clock_base, end);
    Ok(s)
}

/// The file's classes with their stations in the whole run (`assignment`: each station's class).
fn class_configs(classes: &[Class], assignment: &[usize]) -> Vec<ClassConfig> {
    (0..classes.len())
        .map(|k| class_config(&classes[k], assignment.iter().filter(|&&c| c == k).count() as u64))
        .collect()
}

/// The report of a run (or of a shard) from what its stations recorded per class (`live`, in the
/// order of `classes`; `per_class`: the stations started of each, `aborted`: their tasks aborted at
/// the end), its histograms encoded; `ramp_secs`, `shard` and the window are left for the caller.
fn summarize(
    config: ScenarioConfig,
    classes: &[Class],
    live: &[Mutex<Live>],
    per_class: &[u64],
    aborted: &[u64],
) -> Result<ScenarioSummary> {
    let mut reports = BTreeMap::new();
    let mut hists = BTreeMap::new();
    for (k, c) in classes.iter().enumerate() {
        let l = live[k].lock().expect("class stats lock");
        let mut r = ClassReport::from_live(per_class[k], &l);
        if aborted[k] > 0 {
            *r.failures_by_kind.entry("aborted".into()).or_default() += aborted[k];
        }
        reports.insert(c.name.clone(), r);
        hists.insert(c.name.clone(), l.hists.clone());
    }
    let overall = finish_reports(&mut reports, &hists)?;
    Ok(ScenarioSummary {
        scenario: "scenario".into(),
        config,
        ramp_secs: 0.0,
        classes: reports,
        overall,
        shard: None,
        merged: None,
        start_ms: 0,
        end_ms: 0,
        histograms: hists
            .iter()
            .map(|(c, h)| (c.clone(), crate::merge::encode_all(h.iter().map(|(k, h)| (k.clone(), h)))))
            .collect(),
    })
}

/// Merges `scenario --shard` outputs: counts summed, histograms added, latencies from the sums.
pub fn merge(mut inputs: Vec<(String, ScenarioSummary)>, shards: Vec<u32>) -> Result<ScenarioSummary> {
    inputs.sort_by_key(|(_, s)| s.shard.as_ref().map_or(0, |sh| sh.index));
    let (first_name, first) = &inputs[0];
    let mut classes: BTreeMap<String, ClassReport> = BTreeMap::new();
    let mut hists: BTreeMap<String, BTreeMap<String, Histogram<u64>>> = BTreeMap::new();
    for (name, s) in &inputs {
        let differ = config_differences(&first.config, &s.config, first_name, name);
        if !differ.is_empty() {
            bail!("{name} and {first_name} are not shards of one run; their configs differ: {}", differ.join("; "));
        }
        for (class, r) in &s.classes {
            match classes.get_mut(class) {
                Some(m) => m.add(r),
                None => {
                    classes.insert(class.clone(), r.clone());
                }
            }
            let into = hists.entry(class.clone()).or_default();
            for (k, b64) in s.histograms.get(class).into_iter().flatten() {
                let h = crate::merge::decode(b64).map_err(|e| anyhow!("{name}: histogram {class}.{k}: {e}"))?;
                add_hists(into, &BTreeMap::from([(k.clone(), h)]))?;
            }
        }
    }
    let overall = finish_reports(&mut classes, &hists)?;
    let mut config = first.config.clone();
    config.source_ips = inputs.iter().map(|(_, s)| s.config.source_ips).sum();
    let start_ms = inputs.iter().map(|(_, s)| s.start_ms).min().unwrap_or(0);
    let latest_start = inputs.iter().map(|(_, s)| s.start_ms).max().unwrap_or(0);
    // The whole ramp: from the first shard's first connect to the last shard's ramp end.
    let ramp_end = inputs.iter().map(|(_, s)| s.start_ms + (s.ramp_secs * 1000.0).round() as u64).max().unwrap_or(0);
    Ok(ScenarioSummary {
        scenario: "scenario".into(),
        config,
        ramp_secs: ramp_end.saturating_sub(start_ms) as f64 / 1000.0,
        classes,
        overall,
        shard: None,
        merged: Some(report::MergedReport {
            count: first.shard.as_ref().map_or(0, |s| s.count),
            shards,
            files: inputs.iter().map(|(n, _)| n.clone()).collect(),
            hold_start_spread_secs: latest_start.saturating_sub(start_ms) as f64 / 1000.0,
            storm_start_spread_secs: None,
        }),
        start_ms,
        end_ms: inputs.iter().map(|(_, s)| s.end_ms).max().unwrap_or(0),
        histograms: hists
            .iter()
            .map(|(c, h)| (c.clone(), crate::merge::encode_all(h.iter().map(|(k, h)| (k.clone(), h)))))
            .collect(),
    })
}

fn to_value<T: Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or_default()
}

/// What differs between two shards' configs, one entry per field (`source_ips` is the process's
/// own; a class's fields as `class "name" field`); `a_name` and `b_name` say whose.
fn config_differences(a: &ScenarioConfig, b: &ScenarioConfig, a_name: &str, b_name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut diff = |what: &str, a: Value, b: Value, skip: &[&str]| {
        let (Value::Object(a), Value::Object(b)) = (a, b) else { return };
        for (k, v) in a.iter().filter(|(k, _)| !skip.contains(&k.as_str())) {
            if b.get(k) != Some(v) {
                let w = b.get(k).cloned().unwrap_or_default();
                out.push(format!("{what}{k}: {v} in {a_name}, {w} in {b_name}"));
            }
        }
    };
    diff("", to_value(a), to_value(b), &["source_ips", "classes"]);
    let names = |c: &ScenarioConfig| c.classes.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    if names(a) != names(b) {
        out.push(format!("classes: {:?} in {a_name}, {:?} in {b_name}", names(a), names(b)));
    } else {
        for (ca, cb) in a.classes.iter().zip(&b.classes) {
            diff(&format!("class {:?} ", ca.name), to_value(ca), to_value(cb), &[]);
        }
    }
    out
}

fn class_rows(rows: &mut Vec<(String, String)>, title: String, r: &ClassReport) {
    use report::{kinds, lat};
    rows.push((title, format!("{} stations: {} booted, {} failed", r.stations, r.booted, r.ramp_failures)));
    rows.push(("  connect".into(), lat(&r.connect_ms)));
    rows.push(("  boot".into(), lat(&r.boot_ms)));
    rows.push(("  messages".into(), format!("{} answered", r.messages)));
    for (name, a) in &r.actions {
        let mut v = format!("{} ok; {}", a.ok, lat(&a.latency_ms));
        if a.call_errors + a.timeouts + a.closed > 0 {
            v += &format!("; {} errors, {} timeouts, {} closed", a.call_errors, a.timeouts, a.closed);
        }
        rows.push((format!("    {name}"), v));
    }
    let s = &r.sessions;
    if s.started > 0 {
        rows.push((
            "  sessions".into(),
            format!(
                "{} started, {} completed, {} stopped at the end; {} readings",
                s.started, s.completed, s.stopped_at_end, s.meter_values
            ),
        ));
    }
    if r.flaky.drops > 0 {
        rows.push((
            "  flaky".into(),
            format!("{} drops, {} recovered; recover {}", r.flaky.drops, r.flaky.recovered, lat(&r.flaky.recover_ms)),
        ));
    }
    let o = &r.offline;
    if o.periods + o.queued > 0 {
        rows.push((
            "  offline".into(),
            format!(
                "{} periods, {} back; {} queued, {} replayed, {} failed, {} left",
                o.periods, o.back_online, o.queued, o.replayed, o.replay_failed, o.left_unsent
            ),
        ));
        rows.push(("  replay".into(), lat(&o.replay_ms)));
    }
    rows.push((
        "  connection".into(),
        format!(
            "{} lost, {} reconnects; closed {} clean, {} not",
            r.disconnects, r.reconnects, r.closed_clean, r.closed_unclean
        ),
    ));
    rows.push((
        "  failures".into(),
        format!("{}{}", r.failures_by_kind.values().sum::<u64>(), kinds(&r.failures_by_kind)),
    ));
}

pub fn render_table(s: &ScenarioSummary) -> String {
    let c = &s.config;
    let mut rows = vec![
        ("scenario".to_string(), c.file.clone()),
        ("url template".into(), c.url_template.clone()),
        (
            "run".into(),
            format!(
                "{} stations at {} conn/s, {} s, time scale {}, seed {}; ramp {:.1} s",
                c.stations, c.connect_rate, c.duration_secs, c.time_scale, c.seed, s.ramp_secs
            ),
        ),
    ];
    if let Some(sh) = &s.shard {
        rows.push((
            "shard".into(),
            format!("{}/{}: stations {}..{}", sh.index, sh.count, sh.first_station, sh.first_station + sh.stations - 1),
        ));
    }
    if let Some(m) = &s.merged {
        rows.push(("merged".into(), format!("{} of {} shards ({:?})", m.shards.len(), m.count, m.shards)));
    }
    for cc in &c.classes {
        if let Some(r) = s.classes.get(&cc.name) {
            let title =
                format!("CLASS {} ({}%, OCPP {}, {} connector(s))", cc.name, cc.share, cc.protocol, cc.connectors);
            class_rows(&mut rows, title, r);
        }
    }
    class_rows(&mut rows, "OVERALL".into(), &s.overall);
    report::layout(rows)
}

#[cfg(test)]
#[path = "scenario_shard_tests.rs"]
mod shard_tests;
