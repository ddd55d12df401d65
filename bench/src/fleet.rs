//! The `fleet` scenario: many connections, a ramp, a hold with open-loop traffic, a reconnect
//! storm, a clean close.
//!
//! Timeline, driven by one coordinator that tells every station task the phase over a watch channel:
//!
//! 1. **Ramp.** Station `i` starts `i / --connect-rate` after the first (at most
//!    `--connect-concurrency` at once): TCP + WebSocket handshake (its latency recorded), then
//!    BootNotification (its latency recorded separately; it must be Accepted), then one
//!    StatusNotification per connector. Failures are counted by kind.
//! 2. **Hold.** Every station sends Heartbeats on a fixed period with a random offset so that the
//!    fleet's total is `--heartbeat-rate`, and starts transactions (Start, MeterValues…, Stop) so
//!    that the total is `--transaction-rate`. Latency counts from each call's scheduled time (no
//!    coordinated omission); a call overdue by more than `--timeout` is not sent but counted as
//!    unsent. A lost connection is counted and re-established (with a boot) once a second.
//! 3. **Storm** (`--storm`). Every connection is dropped without a WebSocket close, and after
//!    `--storm-pause` every station reconnects and boots again: all at once, or at `--storm-rate`.
//!    Failed attempts are retried after 1–2 s until `--storm-timeout`.
//! 4. **Close.** Every station sends a WebSocket close and waits for the server's.
//!
//! Every wait of a station is bounded by `--timeout`; every phase of the coordinator has a deadline,
//! and station tasks still running at the last one are aborted.
//!
//! `--protocol` makes some or all stations OCPP 2.0.1 ones ([`v201`]): the same phases, with 2.0.1's
//! BootNotification and StatusNotification (per EVSE), and TransactionEvent Started/Updated/Ended
//! (seqNo 0, 1…K, K+1) in place of Start/MeterValues/Stop.

use crate::cli::{FleetArgs, StormClose};
use crate::conn::{self, Conn, Endpoint, Outcome};
use crate::messages::{self, UniqueClock};
use crate::provision;
use crate::report::{
    self, ActionReport, CloseReport, FleetConfig, FleetSummary, HarnessReport, HoldReport, RampReport, ServerReport,
    ShardReport, StormReport, Windows, ACTIONS,
};
use crate::schedule;
use crate::stations;
use crate::stats::{latency_ms, new_histogram};
use crate::sys::{self, ProcSample};
use crate::v201::{self, Protocol};
use anyhow::{anyhow, bail, Result};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep, sleep_until, timeout_at, Instant};

/// What the coordinator asks of the stations now.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Ramp,
    /// The hold began at this instant.
    Hold(Instant),
    /// Drop now; reconnect from this instant.
    Storm(Instant),
    Close,
}

const HEARTBEAT: usize = 0;
const STATUS: usize = 1;
const START: usize = 2;
const METER: usize = 3;
const STOP: usize = 4;
const TX_STARTED: usize = 5;
const TX_UPDATED: usize = 6;
const TX_ENDED: usize = 7;
/// The calls of the hold (all but the ramp's StatusNotifications).
const HOLD_ACTIONS: [usize; 7] = [HEARTBEAT, START, METER, STOP, TX_STARTED, TX_UPDATED, TX_ENDED];

pub(crate) type Hist = Mutex<Histogram<u64>>;

/// Connect latency by step.
struct Steps {
    tcp: Hist,
    tls: Hist,
    tls_resumed: AtomicU64,
    ws: Hist,
}

impl Default for Steps {
    fn default() -> Steps {
        Steps { tcp: hist(), tls: hist(), tls_resumed: AtomicU64::new(0), ws: hist() }
    }
}

impl Steps {
    fn record(&self, t: &conn::Timing) {
        record(&self.tcp, t.tcp);
        if let Some(tls) = t.tls {
            record(&self.tls, tls);
            self.tls_resumed.fetch_add(u64::from(t.tls_resumed), Relaxed);
        }
        record(&self.ws, t.ws);
    }

    /// `None` when nothing connected.
    fn report(&self) -> Option<report::StepsMs> {
        let ws = lat(&self.ws);
        let tls = lat(&self.tls);
        (ws.samples > 0).then(|| report::StepsMs {
            tcp_ms: lat(&self.tcp),
            tls_resumed: (tls.samples > 0).then(|| self.tls_resumed.load(Relaxed)),
            tls_ms: (tls.samples > 0).then_some(tls),
            ws_ms: ws,
        })
    }
}

pub(crate) fn hist() -> Hist {
    Mutex::new(new_histogram())
}

pub(crate) fn record(h: &Hist, d: Duration) {
    h.lock().expect("histogram lock").saturating_record((d.as_micros() as u64).max(1));
}

pub(crate) fn bump(m: &Mutex<BTreeMap<String, u64>>, key: &str) {
    *m.lock().expect("map lock").entry(key.to_string()).or_default() += 1;
}

#[derive(Default)]
struct ActionStats {
    hist: Option<Hist>,
    ok: AtomicU64,
    call_errors: AtomicU64,
    timeouts: AtomicU64,
    closed: AtomicU64,
}

/// What all stations add to; the progress line and the summary read it.
struct Counters {
    actions: [ActionStats; ACTIONS.len()],
    call_errors_by_code: Mutex<BTreeMap<String, u64>>,
    /// Successful calls, all phases and actions (progress rate).
    ok_total: AtomicU64,
    /// Hold latencies since the last progress line (its p99).
    window: Hist,

    connect: Hist,
    /// The connect's steps (TCP, TLS, WebSocket upgrade), ramp and storm.
    ramp_steps: Steps,
    storm_steps: Steps,
    boot: Hist,
    ramp_failures: Mutex<BTreeMap<String, u64>>,
    ramp_failed: AtomicU64,
    booted: AtomicU64,
    /// Stations whose ramp is over, booted or failed.
    ramp_done: AtomicU64,
    /// Connections open now.
    connected: AtomicI64,

    hold_scheduled: AtomicU64,
    hold_ok: AtomicU64,
    unsent: AtomicU64,
    in_hold: AtomicI64,
    disconnects: AtomicU64,
    reconnects: AtomicU64,
    hold_disconnects: AtomicU64,
    hold_reconnects: AtomicU64,

    storm_entered: AtomicU64,
    storm_pending: AtomicI64,
    storm_completed: AtomicU64,
    storm_gave_up: AtomicU64,
    storm_attempts: AtomicU64,
    /// Last storm completion, µs after the first reconnect.
    storm_last_us: AtomicU64,
    storm_failures: Mutex<BTreeMap<String, u64>>,
    storm_connect: Hist,
    storm_boot: Hist,
    storm_recover: Hist,

    closed_clean: AtomicU64,
    closed_unclean: AtomicU64,
    log_budget: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            actions: std::array::from_fn(|_| ActionStats { hist: Some(hist()), ..ActionStats::default() }),
            call_errors_by_code: Mutex::default(),
            ok_total: AtomicU64::new(0),
            window: hist(),
            connect: hist(),
            boot: hist(),
            ramp_failures: Mutex::default(),
            ramp_failed: AtomicU64::new(0),
            booted: AtomicU64::new(0),
            ramp_done: AtomicU64::new(0),
            connected: AtomicI64::new(0),
            hold_scheduled: AtomicU64::new(0),
            hold_ok: AtomicU64::new(0),
            unsent: AtomicU64::new(0),
            in_hold: AtomicI64::new(0),
            disconnects: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            hold_disconnects: AtomicU64::new(0),
            hold_reconnects: AtomicU64::new(0),
            storm_entered: AtomicU64::new(0),
            storm_pending: AtomicI64::new(0),
            storm_completed: AtomicU64::new(0),
            storm_gave_up: AtomicU64::new(0),
            storm_attempts: AtomicU64::new(0),
            storm_last_us: AtomicU64::new(0),
            storm_failures: Mutex::default(),
            storm_connect: hist(),
            ramp_steps: Steps::default(),
            storm_steps: Steps::default(),
            storm_boot: hist(),
            storm_recover: hist(),
            closed_clean: AtomicU64::new(0),
            closed_unclean: AtomicU64::new(0),
            log_budget: AtomicU64::new(10),
        }
    }
}

impl Counters {
    /// Prints `line` on stderr while the budget lasts.
    fn log(&self, line: impl FnOnce() -> String) {
        match self.log_budget.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)) {
            Ok(1) => eprintln!("{} (further failures are only counted)", line()),
            Ok(_) => eprintln!("{}", line()),
            Err(_) => {}
        }
    }

    fn action_hist(&self, action: usize) -> &Hist {
        self.actions[action].hist.as_ref().expect("every action has a histogram")
    }
}

/// Everything a station task needs, shared by all.
struct Ctx {
    c: Counters,
    timeout: Duration,
    connectors: u32,
    connector_zero: bool,
    hold: Duration,
    hb_period: Option<Duration>,
    tx_period: Option<Duration>,
    meter_values: u32,
    meter_gap: Duration,
    id_tag: String,
    seed: u64,
    /// The run's start, ms since the epoch: part of every 2.0.1 transactionId.
    run_tag: u64,
    storm_rate: Option<f64>,
    storm_timeout: Duration,
    storm_reset: bool,
    storm_rank: AtomicU64,
    phase: watch::Receiver<Phase>,
}

/// Where a connect-and-boot's latencies go.
#[derive(Clone, Copy)]
enum Stage {
    Ramp,
    Storm,
    /// Reconnects during the hold: not recorded.
    Hold,
}

impl Ctx {
    /// Records a call's outcome; false when the connection is gone.
    fn outcome(&self, action: usize, from: Instant, out: &Outcome, in_window: bool, id: &str) -> bool {
        let a = &self.c.actions[action];
        match out {
            Outcome::Result(_) => {
                let d = from.elapsed();
                a.ok.fetch_add(1, Relaxed);
                self.c.ok_total.fetch_add(1, Relaxed);
                record(self.c.action_hist(action), d);
                if in_window {
                    self.c.hold_ok.fetch_add(1, Relaxed);
                    record(&self.c.window, d);
                }
                true
            }
            Outcome::CallError { code, description } => {
                a.call_errors.fetch_add(1, Relaxed);
                bump(&self.c.call_errors_by_code, code);
                self.c.log(|| format!("{id}: {} CALLERROR {code}: {description}", ACTIONS[action]));
                true
            }
            Outcome::Timeout => {
                a.timeouts.fetch_add(1, Relaxed);
                self.c.log(|| format!("{id}: {} timed out after {:?}", ACTIONS[action], self.timeout));
                true
            }
            Outcome::Closed(e) => {
                a.closed.fetch_add(1, Relaxed);
                self.c.log(|| format!("{id}: connection lost during {}: {e}", ACTIONS[action]));
                false
            }
        }
    }

    /// The connection is gone (not by our own doing).
    fn lost(&self, conn: &mut Option<Conn>, in_hold: bool) {
        if conn.take().is_some() {
            self.c.connected.fetch_sub(1, Relaxed);
            self.c.disconnects.fetch_add(1, Relaxed);
            if in_hold {
                self.c.hold_disconnects.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Connect, then BootNotification, which must be Accepted; the error is the failure's kind.
async fn connect_boot(ctx: &Ctx, ep: &Endpoint, proto: Protocol, stage: Stage) -> Result<Conn, String> {
    let (connect_h, boot_h, steps) = match stage {
        Stage::Ramp => (Some(&ctx.c.connect), Some(&ctx.c.boot), Some(&ctx.c.ramp_steps)),
        Stage::Storm => (Some(&ctx.c.storm_connect), Some(&ctx.c.storm_boot), Some(&ctx.c.storm_steps)),
        Stage::Hold => (None, None, None),
    };
    let t0 = Instant::now();
    let mut c = match Box::pin(conn::connect_as(ep, proto, t0 + ctx.timeout)).await {
        Ok(c) => c,
        Err(e) => {
            ctx.c.log(|| format!("{}: connect failed: {e}", ep.id));
            return Err(e.kind());
        }
    };
    let t1 = Instant::now();
    if let Some(h) = connect_h {
        record(h, t1 - t0);
    }
    if let Some(st) = steps {
        st.record(&c.timing);
    }
    let boot = match proto {
        Protocol::V16 => messages::boot_notification(),
        Protocol::V201 => v201::boot_notification(),
    };
    let out = Box::pin(c.call("BootNotification", &boot, t1 + ctx.timeout)).await;
    let Some(kind) = conn::boot_failure(&out) else {
        if let Some(h) = boot_h {
            record(h, t1.elapsed());
        }
        return Ok(c);
    };
    ctx.c.log(|| match &out {
        Outcome::Result(v) => format!("{}: BootNotification not accepted: {v}", ep.id),
        Outcome::CallError { code, description } => {
            format!("{}: BootNotification CALLERROR {code}: {description}", ep.id)
        }
        Outcome::Timeout => format!("{}: BootNotification timed out", ep.id),
        Outcome::Closed(e) => format!("{}: connection lost during BootNotification: {e}", ep.id),
    });
    Err(kind.to_string())
}

/// Phase 1 for one station. `Err` if it never booted; `Ok(None)` if it booted but lost the connection.
async fn ramp_up(ctx: &Ctx, ep: &Endpoint, proto: Protocol, clock: &mut UniqueClock) -> Result<Option<Conn>, ()> {
    let mut c = match connect_boot(ctx, ep, proto, Stage::Ramp).await {
        Ok(c) => c,
        Err(kind) => {
            ctx.c.ramp_failed.fetch_add(1, Relaxed);
            bump(&ctx.c.ramp_failures, &kind);
            return Err(());
        }
    };
    ctx.c.connected.fetch_add(1, Relaxed);
    ctx.c.booted.fetch_add(1, Relaxed);
    // 2.0.1 has no connector 0: the station itself is not a connector there.
    let first = if ctx.connector_zero && proto == Protocol::V16 { 0 } else { 1 };
    for connector in first..=ctx.connectors {
        let sent = Instant::now();
        let payload = match proto {
            Protocol::V16 => messages::status_available(connector, &clock.next()),
            Protocol::V201 => v201::status_available(connector, 1, &clock.next()),
        };
        let out = c.call("StatusNotification", &payload, sent + ctx.timeout).await;
        if !ctx.outcome(STATUS, sent, &out, false, &ep.id) {
            let mut gone = Some(c);
            ctx.lost(&mut gone, false);
            return Ok(None);
        }
    }
    Ok(Some(c))
}

/// Waits, answering the central system, until the phase satisfies `done`.
async fn wait_phase(
    ctx: &Ctx,
    rx: &mut watch::Receiver<Phase>,
    conn: &mut Option<Conn>,
    done: impl Fn(Phase) -> bool,
) -> Phase {
    loop {
        let p = *rx.borrow_and_update();
        if done(p) {
            return p;
        }
        match conn.as_mut() {
            Some(c) => match c.serve_until(rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Phase::Close, // the coordinator is gone
                Err(e) => {
                    ctx.c.log(|| format!("connection lost while idle: {e}"));
                    ctx.lost(conn, matches!(p, Phase::Hold(_)));
                }
            },
            None => {
                if rx.changed().await.is_err() {
                    return Phase::Close;
                }
            }
        }
    }
}

/// A station's transaction cycle.
#[derive(Debug, Clone, Copy)]
enum Tx {
    /// The next StartTransaction is due then (`None`: no transactions).
    Idle(Option<Instant>),
    /// `step` 1..=K is the K-th MeterValues, K+1 the StopTransaction, due `at` (2.0.1: the
    /// TransactionEvent of seqNo `step`, Updated then Ended; `id` is the station's transaction number).
    Open { cycle: Instant, id: i64, connector: u32, step: u32, at: Instant },
}

/// Phase 2 for one station: its heartbeats and transactions until the hold's end (a transaction
/// begun in the hold runs to its StopTransaction).
async fn hold(
    ctx: &Ctx,
    index: u32,
    ep: &Endpoint,
    proto: Protocol,
    conn: &mut Option<Conn>,
    clock: &mut UniqueClock,
    start: Instant,
) {
    let end = start + ctx.hold;
    let in_window = |t: Instant| t >= start && t < end;
    let k = ctx.meter_values;
    let mut hb = ctx.hb_period.map(|p| start + schedule::offset(ctx.seed, index, 0, p));
    let mut tx = Tx::Idle(ctx.tx_period.map(|p| start + schedule::offset(ctx.seed, index, 1, p)));
    let mut tx_count: u32 = 0;
    let mut energy: i64 = 1_000 + (index as i64 % 1000) * 100;
    let mut next_reconnect = Instant::now();

    // A transaction's calls belong to the hold when it starts in the hold (it then runs to its Stop,
    // after the hold's end if need be), so that the hold's schedule is rate × length.
    // Counts the unsent remainder of a transaction from `step` on (0 = Start).
    let give_up_tx = |cycle: Instant, step: u32| {
        if in_window(cycle) {
            let n = u64::from(k + 2 - step);
            ctx.c.hold_scheduled.fetch_add(n, Relaxed);
            ctx.c.unsent.fetch_add(n, Relaxed);
        }
    };

    loop {
        let hb_due = hb.filter(|t| *t < end);
        let tx_due = match tx {
            Tx::Idle(Some(t)) if t < end => Some(t),
            Tx::Open { at, .. } => Some(at),
            _ => None,
        };
        let (at, is_tx) = match (hb_due, tx_due) {
            (None, None) => break,
            (Some(h), Some(t)) if t < h => (t, true),
            (Some(h), _) => (h, false),
            (None, Some(t)) => (t, true),
        };

        if conn.is_none() {
            if let Tx::Open { cycle, step, .. } = tx {
                give_up_tx(cycle, step);
                tx = Tx::Idle(ctx.tx_period.map(|p| cycle + p));
                continue;
            }
            if Instant::now() >= next_reconnect {
                next_reconnect = Instant::now() + Duration::from_secs(1);
                if let Ok(c) = connect_boot(ctx, ep, proto, Stage::Hold).await {
                    *conn = Some(c);
                    ctx.c.connected.fetch_add(1, Relaxed);
                    ctx.c.reconnects.fetch_add(1, Relaxed);
                    ctx.c.hold_reconnects.fetch_add(1, Relaxed);
                }
            }
            if conn.is_none() {
                if Instant::now() > at + ctx.timeout {
                    // Overdue while disconnected: not sent.
                    if is_tx {
                        give_up_tx(at, 0);
                        tx = Tx::Idle(ctx.tx_period.map(|p| at + p));
                    } else {
                        if in_window(at) {
                            ctx.c.hold_scheduled.fetch_add(1, Relaxed);
                            ctx.c.unsent.fetch_add(1, Relaxed);
                        }
                        hb = ctx.hb_period.map(|p| at + p);
                    }
                } else {
                    sleep_until(next_reconnect.min(at + ctx.timeout + Duration::from_millis(1))).await;
                }
                continue;
            }
        }
        let c = conn.as_mut().expect("connected above");
        if at > Instant::now() {
            if let Err(e) = c.serve_until(sleep_until(at)).await {
                ctx.c.log(|| format!("{}: connection lost: {e}", ep.id));
                ctx.lost(conn, true);
                continue;
            }
        }
        let now = Instant::now();
        let overdue = now > at + ctx.timeout;
        let deadline = now + ctx.timeout;
        match tx {
            Tx::Open { cycle, id, connector, step, at: due } if is_tx => {
                // A begun transaction is always completed, however late.
                if in_window(cycle) {
                    ctx.c.hold_scheduled.fetch_add(1, Relaxed);
                }
                if step <= k {
                    energy += 100;
                }
                let (action, name, payload) = match proto {
                    Protocol::V16 if step <= k => {
                        (METER, "MeterValues", messages::meter_values(connector, id, energy, &clock.next()))
                    }
                    Protocol::V16 => {
                        (STOP, "StopTransaction", messages::stop_transaction(id, &ctx.id_tag, energy, &clock.next()))
                    }
                    Protocol::V201 => (
                        if step <= k { TX_UPDATED } else { TX_ENDED },
                        "TransactionEvent",
                        v201::transaction_event(
                            &v201::transaction_id(ctx.run_tag, index, id as u32),
                            step,
                            k,
                            connector,
                            &ctx.id_tag,
                            energy,
                            &clock.next(),
                        ),
                    ),
                };
                let out = c.call(name, &payload, deadline).await;
                let alive = ctx.outcome(action, due, &out, in_window(cycle), &ep.id);
                tx = if step > k {
                    Tx::Idle(ctx.tx_period.map(|p| cycle + p))
                } else {
                    Tx::Open { cycle, id, connector, step: step + 1, at: due + ctx.meter_gap }
                };
                if !alive {
                    ctx.lost(conn, true);
                }
            }
            _ if is_tx => {
                // StartTransaction of a new cycle, due `at`.
                let next = Tx::Idle(ctx.tx_period.map(|p| at + p));
                if overdue {
                    give_up_tx(at, 0);
                    tx = next;
                    continue;
                }
                if in_window(at) {
                    ctx.c.hold_scheduled.fetch_add(1, Relaxed);
                }
                let connector = tx_count % ctx.connectors + 1;
                let number = tx_count;
                tx_count = tx_count.wrapping_add(1);
                let (action, name, payload) = match proto {
                    Protocol::V16 => (
                        START,
                        "StartTransaction",
                        messages::start_transaction(connector, &ctx.id_tag, energy, &clock.next()),
                    ),
                    Protocol::V201 => (
                        TX_STARTED,
                        "TransactionEvent",
                        v201::transaction_event(
                            &v201::transaction_id(ctx.run_tag, index, number),
                            0,
                            k,
                            connector,
                            &ctx.id_tag,
                            energy,
                            &clock.next(),
                        ),
                    ),
                };
                let out = c.call(name, &payload, deadline).await;
                let tx_id = match (&out, proto) {
                    (Outcome::Result(v), Protocol::V16) => v["transactionId"].as_i64(),
                    // The station names a 2.0.1 transaction itself.
                    (Outcome::Result(_), Protocol::V201) => Some(i64::from(number)),
                    _ => None,
                };
                let alive = ctx.outcome(action, at, &out, in_window(at), &ep.id);
                tx = match tx_id {
                    Some(id) => Tx::Open { cycle: at, id, connector, step: 1, at: at + ctx.meter_gap },
                    None => {
                        if let Outcome::Result(v) = &out {
                            ctx.c.log(|| format!("{}: StartTransaction answer without transactionId: {v}", ep.id));
                        }
                        give_up_tx(at, 1);
                        next
                    }
                };
                if !alive {
                    ctx.lost(conn, true);
                }
            }
            _ => {
                hb = ctx.hb_period.map(|p| at + p);
                if in_window(at) {
                    ctx.c.hold_scheduled.fetch_add(1, Relaxed);
                }
                if overdue {
                    ctx.c.unsent.fetch_add(1, Relaxed);
                    continue;
                }
                let out = c.call("Heartbeat", &messages::heartbeat(), deadline).await;
                if !ctx.outcome(HEARTBEAT, at, &out, in_window(at), &ep.id) {
                    ctx.lost(conn, true);
                }
            }
        }
    }
}

/// Phase 3 for one station: drop the connection, reconnect and boot from `at` (or its slot in the
/// storm's rate), retrying until the storm's deadline.
async fn storm(ctx: &Ctx, index: u32, ep: &Endpoint, proto: Protocol, conn: &mut Option<Conn>, at: Instant) {
    ctx.c.storm_entered.fetch_add(1, Relaxed);
    ctx.c.storm_pending.fetch_add(1, Relaxed);
    if let Some(c) = conn.take() {
        c.abandon(ctx.storm_reset);
        ctx.c.connected.fetch_sub(1, Relaxed);
    }
    let rank = ctx.storm_rank.fetch_add(1, Relaxed);
    let scheduled = at + ctx.storm_rate.map_or(Duration::ZERO, |r| schedule::slot(rank, r));
    let deadline = at + ctx.storm_timeout;
    let mut attempt_at = scheduled;
    for attempt in 0u32.. {
        sleep_until(attempt_at).await;
        ctx.c.storm_attempts.fetch_add(1, Relaxed);
        match connect_boot(ctx, ep, proto, Stage::Storm).await {
            Ok(c) => {
                let now = Instant::now();
                record(&ctx.c.storm_recover, now - scheduled);
                ctx.c.storm_last_us.fetch_max(now.duration_since(at).as_micros() as u64, Relaxed);
                ctx.c.storm_completed.fetch_add(1, Relaxed);
                ctx.c.connected.fetch_add(1, Relaxed);
                ctx.c.reconnects.fetch_add(1, Relaxed);
                *conn = Some(c);
                break;
            }
            Err(kind) => {
                bump(&ctx.c.storm_failures, &kind);
                let backoff = Duration::from_secs(1).mul_f64(1.0 + schedule::fraction(ctx.seed, index, 100 + attempt));
                let retry = Instant::now() + backoff;
                if retry >= deadline {
                    ctx.c.storm_gave_up.fetch_add(1, Relaxed);
                    break;
                }
                attempt_at = retry;
            }
        }
    }
    ctx.c.storm_pending.fetch_sub(1, Relaxed);
}

async fn run_station(ctx: Arc<Ctx>, index: u32, ep: Endpoint, proto: Protocol, permit: OwnedSemaphorePermit) {
    let mut clock = UniqueClock::default();
    let ramp = Box::pin(ramp_up(&ctx, &ep, proto, &mut clock)).await;
    drop(permit);
    ctx.c.ramp_done.fetch_add(1, Relaxed);
    let Ok(conn) = ramp else { return };
    let mut conn = conn;
    let mut rx = ctx.phase.clone();

    let mut phase = wait_phase(&ctx, &mut rx, &mut conn, |p| p != Phase::Ramp).await;
    if let Phase::Hold(start) = phase {
        ctx.c.in_hold.fetch_add(1, Relaxed);
        Box::pin(hold(&ctx, index, &ep, proto, &mut conn, &mut clock, start)).await;
        ctx.c.in_hold.fetch_sub(1, Relaxed);
        phase = wait_phase(&ctx, &mut rx, &mut conn, |p| matches!(p, Phase::Storm(_) | Phase::Close)).await;
    }
    if let Phase::Storm(at) = phase {
        Box::pin(storm(&ctx, index, &ep, proto, &mut conn, at)).await;
        wait_phase(&ctx, &mut rx, &mut conn, |p| p == Phase::Close).await;
    }
    if let Some(c) = conn.take() {
        let clean = c.close(ctx.timeout.min(Duration::from_secs(2))).await;
        ctx.c.connected.fetch_sub(1, Relaxed);
        if clean {
            ctx.c.closed_clean.fetch_add(1, Relaxed);
        } else {
            ctx.c.closed_unclean.fetch_add(1, Relaxed);
        }
    }
}

/// What the monitor saw of the server.
#[derive(Debug, Default, Clone, Copy)]
struct Watched {
    peak_rss_kib: u64,
    gone: bool,
}

/// Prints a progress line every second and samples the server; returns what it saw.
async fn monitor(
    ctx: Arc<Ctx>,
    stations: u64,
    server_pid: Option<u32>,
    started: Instant,
    mut stop: watch::Receiver<bool>,
) -> Watched {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let ticks = sys::clock_ticks_per_sec();
    let mut watched = Watched::default();
    let mut last_srv: Option<ProcSample> = server_pid.and_then(sys::sample);
    let (mut last_ok, mut last_at) = (ctx.c.ok_total.load(Relaxed), Instant::now());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return watched,
        }
        let now = Instant::now();
        let c = &ctx.c;
        let ok = c.ok_total.load(Relaxed);
        let rate = (ok - last_ok) as f64 / now.duration_since(last_at).as_secs_f64();
        (last_ok, last_at) = (ok, now);
        let p99 = {
            let mut w = c.window.lock().expect("histogram lock");
            let p = if w.is_empty() { None } else { Some(w.value_at_quantile(0.99) as f64 / 1000.0) };
            w.reset();
            p
        };
        let phase = *ctx.phase.borrow();
        let label = match phase {
            Phase::Ramp => format!("ramp {}/{stations}", c.ramp_done.load(Relaxed)),
            Phase::Hold(s) if now < s + ctx.hold => {
                format!("hold {:.0}/{}s", now.duration_since(s).as_secs_f64(), ctx.hold.as_secs())
            }
            Phase::Hold(_) => "hold drain".into(),
            Phase::Storm(_) => format!(
                "storm {}/{} back",
                c.storm_completed.load(Relaxed),
                c.storm_entered.load(Relaxed).max(c.booted.load(Relaxed))
            ),
            Phase::Close => "close".into(),
        };
        let mut line = format!(
            "[{:>5.0}s] {label:<16} conn {:>6}  booted {:>6}  fail {}  {rate:>8.1} msgs/s  p99(1s) {}  timeouts {}  disc {}",
            now.duration_since(started).as_secs_f64(),
            c.connected.load(Relaxed),
            c.booted.load(Relaxed),
            c.ramp_failed.load(Relaxed),
            p99.map_or("-".to_string(), |p| format!("{p:.2} ms")),
            c.actions.iter().map(|a| a.timeouts.load(Relaxed)).sum::<u64>(),
            c.disconnects.load(Relaxed),
        );
        if matches!(phase, Phase::Storm(_)) {
            let failed: u64 = c.storm_failures.lock().expect("map lock").values().sum();
            line += &format!("  storm-fail {failed}");
        }
        if let Some(pid) = server_pid {
            match sys::sample(pid) {
                Some(s) => {
                    watched.peak_rss_kib = watched.peak_rss_kib.max(s.rss_kib);
                    let cpu = last_srv.map_or(0.0, |l| sys::cpu_percent(&l, &s, ticks));
                    line += &format!("  | server {} MiB {cpu:.0}%", report::mib(s.rss_kib));
                    last_srv = Some(s);
                }
                None if !watched.gone => {
                    watched.gone = true;
                    eprintln!("warning: server process {pid} is gone");
                }
                None => {}
            }
        }
        eprintln!("{line}");
    }
}

/// Samples the server at a phase boundary, keeping the peak up to date.
fn server_sample(pid: Option<u32>, peak: &mut u64) -> Option<ProcSample> {
    let s = sys::sample(pid?)?;
    *peak = (*peak).max(s.rss_kib);
    Some(s)
}

fn action_report(a: &ActionStats) -> ActionReport {
    let h = a.hist.as_ref().expect("every action has a histogram").lock().expect("histogram lock");
    ActionReport {
        ok: a.ok.load(Relaxed),
        call_errors: a.call_errors.load(Relaxed),
        timeouts: a.timeouts.load(Relaxed),
        closed: a.closed.load(Relaxed),
        latency_ms: latency_ms(&h),
    }
}

fn lat(h: &Hist) -> crate::stats::LatencyMs {
    latency_ms(&h.lock().expect("histogram lock"))
}

/// Checks the arguments that clap cannot check alone.
pub fn check(args: &FleetArgs) -> Result<()> {
    if args.transaction_rate > 0.0 {
        let period = args.stations as f64 / args.transaction_rate;
        let tx_secs = (args.meter_values + 1) as f64 * args.meter_interval;
        if period <= tx_secs {
            bail!(
                "--transaction-rate {} over {} stations starts one transaction per station every {period:.2} s, \
                 but a transaction lasts (--meter-values + 1) × --meter-interval = {tx_secs:.2} s: lower the rate, \
                 add stations or shorten --meter-interval",
                args.transaction_rate,
                args.stations
            );
        }
    }
    let cmd = &args.commands;
    if cmd.command_rate > 0.0 {
        if cmd.commands.is_empty() {
            bail!("--command-rate needs at least one --command ACTION[=JSON]");
        }
        match &cmd.command_url_template {
            Some(t) if !t.contains("{id}") => bail!("--command-url-template {t:?} has no {{id}}"),
            None if args.target.provision_api.is_none() => {
                bail!("--command-rate needs --command-url-template (or --provision-api for ocpp-css's command API)")
            }
            _ => {}
        }
    }
    Ok(())
}

/// The commands' plan: URL template and headers (with --provision-api and no template of one's
/// own, ocpp-css's command API with a bearer token of the account).
async fn command_plan(args: &FleetArgs) -> Result<Option<crate::commands::Plan>> {
    let cmd = &args.commands;
    if cmd.command_rate <= 0.0 {
        return Ok(None);
    }
    let mut headers = cmd.command_headers.clone();
    let url_template = match (&cmd.command_url_template, &args.target.provision_api) {
        (Some(t), _) => t.clone(),
        (None, Some(api)) => {
            let api = api.trim_end_matches('/');
            let t = &args.target;
            let email = t.email.clone().unwrap_or_else(|| format!("bench@{}.example.com", t.tenant));
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization")) {
                let token = provision::token_of(api, &email, &t.account_password).await?;
                headers.push(("Authorization".into(), format!("Bearer {token}")));
            }
            format!("{api}/stations/{{id}}/commands/{{action}}")
        }
        (None, None) => bail!("--command-rate needs --command-url-template or --provision-api"),
    };
    Ok(Some(crate::commands::Plan {
        url_template,
        headers,
        commands: cmd.commands.clone(),
        rate: cmd.command_rate,
        concurrency: cmd.command_concurrency,
        timeout: Duration::from_secs_f64(args.timeout),
        seed: args.seed,
    }))
}

/// With `--shard`: the shard's own arguments (its stations, its share of the rates; see
/// [`crate::shard::Shard::share`]) and its 0-based station indices; without, the whole fleet.
pub fn shard_args(mut args: FleetArgs) -> Result<(FleetArgs, std::ops::Range<u64>)> {
    let n = u64::from(args.stations);
    let Some(sh) = args.shard else { return Ok((args, 0..n)) };
    let range = sh.range(n);
    if range.is_empty() {
        bail!("--shard {}: {n} stations leave this shard none; use at most {n} shards", sh.label());
    }
    args.stations = range.end as u32 - range.start as u32;
    args.connect_rate = sh.share(args.connect_rate, n);
    args.heartbeat_rate = sh.share(args.heartbeat_rate, n);
    args.transaction_rate = sh.share(args.transaction_rate, n);
    args.storm_rate = args.storm_rate.map(|r| sh.share(r, n));
    args.commands.command_rate = sh.share(args.commands.command_rate, n);
    args.connect_concurrency = (sh.share(f64::from(args.connect_concurrency), n).ceil() as u32).max(1);
    Ok((args, range))
}

/// `at` as milliseconds since the Unix epoch, given one instant whose wall-clock time is known.
pub(crate) fn unix_ms(base: (Instant, std::time::SystemTime), at: Instant) -> u64 {
    let t = if at >= base.0 { base.1 + (at - base.0) } else { base.1 - (base.0 - at) };
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The run's latency histograms under their names in the JSON (`histograms`).
fn histograms(c: &Counters, storm: bool) -> BTreeMap<String, String> {
    let mut named: Vec<(String, &Hist)> = vec![("ramp.connect".into(), &c.connect), ("ramp.boot".into(), &c.boot)];
    for (name, a) in ACTIONS.iter().zip(0..) {
        named.push((format!("actions.{name}"), c.action_hist(a)));
    }
    // The connect's steps (merged into `steps`); `*.tls` only over wss://.
    for (phase, st) in [("ramp", &c.ramp_steps), ("storm", &c.storm_steps)] {
        if phase == "ramp" || storm {
            named.extend([
                (format!("{phase}.tcp"), &st.tcp),
                (format!("{phase}.tls"), &st.tls),
                (format!("{phase}.ws"), &st.ws),
            ]);
        }
    }
    if storm {
        named.extend([
            ("storm.connect".into(), &c.storm_connect),
            ("storm.boot".into(), &c.storm_boot),
            ("storm.recover".into(), &c.storm_recover),
        ]);
    }
    named.into_iter().map(|(k, h)| (k, crate::merge::encode(&h.lock().expect("histogram lock")))).collect()
}

pub async fn run(args: FleetArgs) -> Result<FleetSummary> {
    let whole = args.clone();
    let (args, range) = shard_args(args)?;
    check(&args)?;
    let n = args.stations as u64;
    let timeout = Duration::from_secs_f64(args.timeout);
    let source_ips = args.source_ips.clone().map(|s| s.0).unwrap_or_default();

    let nofile = match sys::raise_nofile(n + 1_000) {
        Ok(l) => {
            eprintln!("open-file limit: {} (hard {})", l.soft, l.hard);
            if l.soft < n + 100 {
                eprintln!(
                    "warning: the open-file limit {} is below --stations + 100 = {}; connections beyond it will fail \
                     (raise the hard limit: ulimit -Hn, or run as root)",
                    l.soft,
                    n + 100
                );
            }
            l.soft
        }
        Err(e) => {
            eprintln!("warning: cannot read or raise the open-file limit: {e}");
            0
        }
    };
    if let Some(hint) = sys::port_hint(n, source_ips.len(), sys::ephemeral_ports()) {
        eprintln!("{hint}");
    }
    if let Some(pid) = args.server_pid {
        sys::sample(pid).ok_or_else(|| anyhow!("--server-pid {pid}: no such process readable in /proc"))?;
    }

    // Shard 1 creates the account if need be, the others wait for it (sign-ups are rate-limited
    // per address); each shard creates only its own stations.
    let sign_up = if range.start == 0 { provision::SignUp::IfMissing } else { provision::SignUp::WaitForIt };
    let (creds, template, tenant) = provision::stations_in(&args.target, range.clone(), sign_up).await?;
    crate::commands::configure_answers(args.answers.answer_delay, &args.answers.answers, args.seed);
    let command_plan = command_plan(&args).await?;
    let station_ids: Vec<String> = creds.iter().map(|c| c.id.clone()).collect();
    if let Some(at) = args.start_at {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(at);
        match at.duration_since(std::time::SystemTime::now()) {
            Ok(wait) => {
                eprintln!("starting the ramp in {:.1} s (--start-at)", wait.as_secs_f64());
                sleep(wait).await;
            }
            Err(late) => {
                eprintln!("warning: --start-at was {:.1} s ago; starting now", late.duration().as_secs_f64())
            }
        }
    }

    let (phase_tx, phase_rx) = watch::channel(Phase::Ramp);
    let ctx = Arc::new(Ctx {
        c: Counters::default(),
        timeout,
        connectors: args.connectors,
        connector_zero: args.connector_zero,
        hold: Duration::from_secs(args.hold),
        hb_period: schedule::station_interval(args.heartbeat_rate, args.stations),
        tx_period: schedule::station_interval(args.transaction_rate, args.stations),
        meter_values: args.meter_values,
        meter_gap: Duration::from_secs_f64(args.meter_interval),
        id_tag: args.target.id_tag.clone(),
        seed: args.seed,
        run_tag: chrono::Utc::now().timestamp_millis().max(0) as u64,
        storm_rate: args.storm_rate,
        storm_timeout: Duration::from_secs(args.storm_timeout),
        storm_reset: args.storm_close == StormClose::Rst,
        storm_rank: AtomicU64::new(0),
        phase: phase_rx,
    });

    let mut peak_kib = 0u64;
    let srv_before = server_sample(args.server_pid, &mut peak_kib);
    let started = Instant::now();
    let clock_base = (started, std::time::SystemTime::now());
    let (stop_tx, stop_rx) = watch::channel(false);
    let monitor = tokio::spawn(monitor(ctx.clone(), n, args.server_pid, started, stop_rx));

    // Phase 1: ramp.
    let per_station = timeout * (2 + args.connectors + u32::from(args.connector_zero));
    let ramp_deadline = started + schedule::slot(n, args.connect_rate) + per_station * 2 + Duration::from_secs(10);
    let handshakes = Arc::new(Semaphore::new(args.connect_concurrency as usize));
    let mut tasks = Vec::with_capacity(creds.len());
    let mut not_started = 0u64;
    for (i, cred) in creds.into_iter().enumerate() {
        sleep_until(started + schedule::slot(i as u64, args.connect_rate)).await;
        let Ok(Ok(permit)) = timeout_at(ramp_deadline, handshakes.clone().acquire_owned()).await else {
            not_started = n - i as u64;
            break;
        };
        let ep = Endpoint {
            url: stations::expand_template(&template, &tenant, &cred.id),
            id: cred.id,
            password: cred.password,
            source_ip: (!source_ips.is_empty()).then(|| source_ips[i % source_ips.len()]),
        };
        // The fleet-wide index: a station's schedule offsets and protocol are the same sharded or not.
        let index = range.start + i as u64;
        tasks.push(tokio::spawn(run_station(ctx.clone(), index as u32, ep, args.protocol.of(index), permit)));
    }
    if not_started > 0 {
        ctx.c.ramp_failed.fetch_add(not_started, Relaxed);
        *ctx.c.ramp_failures.lock().expect("map lock").entry("not_started".into()).or_default() += not_started;
        eprintln!("warning: {not_started} stations were not started before the ramp deadline");
    }
    let spawned = tasks.len() as u64;
    while ctx.c.ramp_done.load(Relaxed) < spawned && Instant::now() < ramp_deadline {
        sleep(Duration::from_millis(10)).await;
    }
    let ramp_end = Instant::now();
    let ramp_secs = ramp_end.duration_since(started).as_secs_f64();
    let connected_after_ramp = ctx.c.connected.load(Relaxed).max(0) as u64;
    let harness_rss_ramp = sys::self_rss_kib().unwrap_or(0);
    let srv_after_ramp = server_sample(args.server_pid, &mut peak_kib);
    eprintln!(
        "ramp done in {ramp_secs:.1} s: {} booted, {} failed, {connected_after_ramp} connected; harness RSS {} MiB{}",
        ctx.c.booted.load(Relaxed),
        ctx.c.ramp_failed.load(Relaxed),
        report::mib(harness_rss_ramp),
        srv_after_ramp.map(|s| format!(", server RSS {} MiB", report::mib(s.rss_kib))).unwrap_or_default()
    );

    // Phase 2: hold.
    let hold_start = Instant::now();
    let hold_end = hold_start + ctx.hold;
    let _ = phase_tx.send(Phase::Hold(hold_start));
    let commands = command_plan.map(|plan| {
        let overrides = args.answers.answers.iter().map(|(a, _)| a.clone()).collect();
        tokio::spawn(crate::commands::run(
            plan,
            station_ids,
            hold_start,
            hold_end,
            args.answers.answer_delay,
            overrides,
        ))
    });
    sleep_until(hold_end).await;
    let srv_hold_end = server_sample(args.server_pid, &mut peak_kib);
    let tx_secs = ctx.meter_gap * (args.meter_values + 1);
    let drain_deadline = hold_end + tx_secs + timeout + Duration::from_secs(2);
    while ctx.c.in_hold.load(Relaxed) > 0 && Instant::now() < drain_deadline {
        sleep(Duration::from_millis(10)).await;
    }
    let commands = match commands {
        Some(t) => t.await.ok(),
        None => None,
    };

    // Phase 3: storm.
    let mut storm_window = None;
    let mut storm_at = None;
    if args.storm {
        let at = Instant::now() + Duration::from_secs_f64(args.storm_pause);
        storm_at = Some(at);
        let srv_storm_start = server_sample(args.server_pid, &mut peak_kib);
        let _ = phase_tx.send(Phase::Storm(at));
        let storm_deadline = at + ctx.storm_timeout + timeout * 2 + Duration::from_secs(2);
        loop {
            sleep(Duration::from_millis(10)).await;
            let entered = ctx.c.storm_entered.load(Relaxed);
            let alive = ctx.c.booted.load(Relaxed);
            if (entered >= alive && ctx.c.storm_pending.load(Relaxed) == 0 && Instant::now() > at)
                || Instant::now() >= storm_deadline
            {
                break;
            }
        }
        let srv_storm_end = server_sample(args.server_pid, &mut peak_kib);
        storm_window = Some((srv_storm_start, srv_storm_end));
    }

    // Phase 4: close.
    let _ = phase_tx.send(Phase::Close);
    let hard_end = Instant::now() + timeout.min(Duration::from_secs(2)) + Duration::from_secs(5);
    let mut aborted = 0u64;
    for t in tasks {
        let abort = t.abort_handle();
        if timeout_at(hard_end, t).await.is_err() {
            abort.abort();
            aborted += 1;
        }
    }
    if aborted > 0 {
        eprintln!("warning: {aborted} station tasks did not finish in time and were aborted");
    }
    let _ = stop_tx.send(true);
    let watched = monitor.await.unwrap_or_default();
    let srv_end = server_sample(args.server_pid, &mut peak_kib);
    let harness_rss_end = sys::self_rss_kib().unwrap_or(0);

    // The summary.
    let c = &ctx.c;
    let ticks = sys::clock_ticks_per_sec();
    let cpu = |a: Option<ProcSample>, b: Option<ProcSample>| Some(sys::cpu_percent(&a?, &b?, ticks));
    let server = match (args.server_pid, srv_before, srv_after_ramp) {
        (Some(pid), Some(before), Some(after)) => Some(ServerReport {
            pid,
            rss_before_ramp_mib: report::mib(before.rss_kib),
            rss_after_ramp_mib: report::mib(after.rss_kib),
            rss_per_session_kib: report::per(
                after.rss_kib.saturating_sub(before.rss_kib) as f64,
                connected_after_ramp as f64,
            ),
            rss_after_hold_mib: srv_hold_end.map_or(0.0, |s| report::mib(s.rss_kib)),
            rss_after_storm_mib: storm_window.and_then(|(_, e)| e).map(|s| report::mib(s.rss_kib)),
            peak_rss_mib: report::mib(peak_kib.max(watched.peak_rss_kib)),
            cpu_ramp_pct: cpu(srv_before, srv_after_ramp).unwrap_or(0.0),
            cpu_hold_pct: cpu(srv_after_ramp, srv_hold_end).unwrap_or(0.0),
            cpu_storm_pct: storm_window.and_then(|(a, b)| cpu(a, b)),
            alive_at_end: srv_end.is_some() && !watched.gone,
        }),
        _ => None,
    };
    let storm = args.storm.then(|| {
        let completed = c.storm_completed.load(Relaxed);
        let secs = c.storm_last_us.load(Relaxed) as f64 / 1e6;
        StormReport {
            stations: c.storm_entered.load(Relaxed),
            completed,
            gave_up: c.storm_gave_up.load(Relaxed),
            attempts: c.storm_attempts.load(Relaxed),
            failures_by_kind: c.storm_failures.lock().expect("map lock").clone(),
            secs: (secs * 1000.0).round() / 1000.0,
            rate_per_sec: report::per(completed as f64, secs),
            connect_ms: lat(&c.storm_connect),
            steps: c.storm_steps.report(),
            boot_ms: lat(&c.storm_boot),
            recover_ms: lat(&c.storm_recover),
        }
    });
    let actions: BTreeMap<String, ActionReport> =
        ACTIONS.iter().zip(&c.actions).map(|(name, a)| (name.to_string(), action_report(a))).collect();
    let hold_secs = ctx.hold.as_secs_f64();
    let hold_ok = c.hold_ok.load(Relaxed);
    let total_timeouts: u64 = c.actions.iter().map(|a| a.timeouts.load(Relaxed)).sum();
    let summary = FleetSummary {
        scenario: "fleet".into(),
        // The whole fleet's (with --shard, `shard` says which part this process ran).
        config: FleetConfig {
            url_template: template.replace("{tenant}", &tenant),
            stations: u64::from(whole.stations),
            protocol: args.protocol.label(),
            stations_v201: args.protocol.count_v201(u64::from(whole.stations)),
            connectors: args.connectors,
            connector_zero: args.connector_zero,
            connect_rate: whole.connect_rate,
            connect_concurrency: whole.connect_concurrency,
            hold_secs,
            heartbeat_rate: whole.heartbeat_rate,
            transaction_rate: whole.transaction_rate,
            meter_values: args.meter_values,
            meter_interval_secs: args.meter_interval,
            storm: args.storm,
            storm_rate: whole.storm_rate,
            storm_close: match args.storm_close {
                StormClose::Rst => "rst",
                StormClose::Fin => "fin",
            }
            .into(),
            timeout_secs: args.timeout,
            source_ips: source_ips.len(),
            seed: args.seed,
        },
        ramp: RampReport {
            secs: (ramp_secs * 1000.0).round() / 1000.0,
            booted: c.booted.load(Relaxed),
            connected: connected_after_ramp,
            failures: c.ramp_failed.load(Relaxed),
            failures_by_kind: c.ramp_failures.lock().expect("map lock").clone(),
            achieved_rate: report::per(c.booted.load(Relaxed) as f64, ramp_secs),
            connect_ms: lat(&c.connect),
            steps: c.ramp_steps.report(),
            boot_ms: lat(&c.boot),
        },
        hold: HoldReport {
            secs: hold_secs,
            target_msgs_per_sec: args.heartbeat_rate + args.transaction_rate * (args.meter_values + 2) as f64,
            achieved_msgs_per_sec: report::per(hold_ok as f64, hold_secs),
            scheduled: c.hold_scheduled.load(Relaxed),
            ok: hold_ok,
            unsent: c.unsent.load(Relaxed),
            timeouts: HOLD_ACTIONS.iter().map(|&a| c.actions[a].timeouts.load(Relaxed)).sum(),
            call_errors: HOLD_ACTIONS.iter().map(|&a| c.actions[a].call_errors.load(Relaxed)).sum(),
            disconnects: c.hold_disconnects.load(Relaxed),
            reconnects: c.hold_reconnects.load(Relaxed),
        },
        actions,
        storm,
        close: CloseReport { clean: c.closed_clean.load(Relaxed), unclean: c.closed_unclean.load(Relaxed) },
        timeouts: total_timeouts,
        disconnects: c.disconnects.load(Relaxed),
        call_errors_by_code: c.call_errors_by_code.lock().expect("map lock").clone(),
        server,
        harness: HarnessReport {
            rss_after_ramp_mib: report::mib(harness_rss_ramp),
            rss_end_mib: report::mib(harness_rss_end),
            nofile_limit: nofile,
            tasks_aborted: aborted,
        },
        shard: whole.shard.map(|sh| ShardReport {
            index: sh.index,
            count: sh.count,
            first_station: range.start + 1,
            stations: n,
        }),
        merged: None,
        windows: Windows {
            ramp_start_ms: unix_ms(clock_base, started),
            ramp_end_ms: unix_ms(clock_base, ramp_end),
            hold_start_ms: unix_ms(clock_base, hold_start),
            hold_end_ms: unix_ms(clock_base, hold_end),
            storm_start_ms: storm_at.map(|at| unix_ms(clock_base, at)),
            storm_end_ms: storm_at
                .map(|at| unix_ms(clock_base, at + Duration::from_micros(c.storm_last_us.load(Relaxed)))),
        },
        histograms: histograms(c, args.storm),
        commands,
    };
    Ok(summary)
}

#[cfg(test)]
#[path = "fleet_shard_tests.rs"]
mod shard_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(extra: &[&str]) -> FleetArgs {
        let cli = Cli::try_parse_from(["ocpp-bench", "fleet"].iter().chain(extra)).unwrap();
        let Command::Fleet(a) = cli.command else { panic!("not fleet") };
        a
    }

    #[test]
    fn transactions_must_fit_their_period() {
        // 1000 stations, 100 tx/s: one per station every 10 s; 3 MeterValues 1 s apart take 4 s.
        assert!(check(&args(&["--stations", "1000", "--transaction-rate", "100"])).is_ok());
        // 1000 tx/s: every 1 s, shorter than 4 s.
        let err = check(&args(&["--stations", "1000", "--transaction-rate", "1000"])).unwrap_err();
        assert!(err.to_string().contains("--meter-interval"), "{err}");
        assert!(check(&args(&["--transaction-rate", "1000", "--meter-interval", "0.1"])).is_ok());
    }

    #[test]
    fn shards_share_the_command_rate() {
        let (a, r) = shard_args(args(&["--stations", "10", "--command-rate", "10", "--shard", "2/2"])).unwrap();
        assert_eq!((a.commands.command_rate, r), (5.0, 5..10));
    }

    #[test]
    fn phases_compare_as_the_stations_need() {
        let t = Instant::now();
        assert_ne!(Phase::Ramp, Phase::Hold(t));
        assert!(matches!(Phase::Storm(t), Phase::Storm(_) | Phase::Close));
        assert_eq!(Phase::Close, Phase::Close);
    }

    #[test]
    fn counters_record_outcomes_by_action() {
        let (_tx, rx) = watch::channel(Phase::Ramp);
        let ctx = Ctx {
            c: Counters::default(),
            timeout: Duration::from_secs(1),
            connectors: 1,
            connector_zero: false,
            hold: Duration::from_secs(1),
            hb_period: None,
            tx_period: None,
            meter_values: 0,
            meter_gap: Duration::from_secs(1),
            id_tag: "T".into(),
            seed: 1,
            run_tag: 0,
            storm_rate: None,
            storm_timeout: Duration::from_secs(1),
            storm_reset: true,
            storm_rank: AtomicU64::new(0),
            phase: rx,
        };
        ctx.c.log_budget.store(0, Relaxed);
        let t = Instant::now();
        assert!(ctx.outcome(HEARTBEAT, t, &Outcome::Result(serde_json::json!({})), true, "A"));
        assert!(ctx.outcome(HEARTBEAT, t, &Outcome::Timeout, true, "A"));
        assert!(ctx.outcome(
            START,
            t,
            &Outcome::CallError { code: "InternalError".into(), description: String::new() },
            true,
            "A"
        ));
        assert!(!ctx.outcome(METER, t, &Outcome::Closed("x".into()), true, "A"));
        let hb = action_report(&ctx.c.actions[HEARTBEAT]);
        assert_eq!((hb.ok, hb.timeouts, hb.latency_ms.samples), (1, 1, 1));
        assert_eq!(action_report(&ctx.c.actions[START]).call_errors, 1);
        assert_eq!(action_report(&ctx.c.actions[METER]).closed, 1);
        assert_eq!(ctx.c.hold_ok.load(Relaxed), 1);
        assert_eq!(ctx.c.call_errors_by_code.lock().unwrap()["InternalError"], 1);
    }
}
