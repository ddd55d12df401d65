//! The `events` scenario: durable events per second and their ack latency.
//!
//! Timeline: setup (every station connects, boots and starts one transaction), then `go`; calls
//! sent (closed loop) or scheduled (open loop) in `[go + warmup, go + warmup + duration)` are
//! measured; no call is started after that, the ones in flight are awaited, then each station
//! sends StopTransaction (unmeasured) and closes its connection.

use crate::cli::{EventsArgs, MessageKind};
use crate::conn::{self, Conn, Endpoint, Outcome};
use crate::messages::{self, UniqueClock};
use crate::provision;
use crate::stations;
use crate::stats::{self, RunInfo, Shared, Summary};
use crate::v201::{self, Protocol};
use anyhow::{bail, Context, Result};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::time::{sleep, sleep_until, Instant};

/// Everything a station task needs, shared by all.
struct Ctx {
    message: MessageKind,
    /// Open loop: the time between two calls of one station.
    interval: Option<Duration>,
    timeout: Duration,
    warmup: Duration,
    duration: Duration,
    id_tag: String,
    protocol: Protocol,
    /// The run's start, ms since the epoch: part of the 2.0.1 transactionIds.
    run_tag: u64,
    stations: u32,
    shared: Arc<Shared>,
    handshakes: Semaphore,
    go: watch::Receiver<Option<Instant>>,
}

/// Open loop: a station's time between calls for a total of `rate` calls/s over `stations`.
pub fn station_interval(rate: f64, stations: u32) -> Duration {
    Duration::from_secs_f64(stations as f64 / rate)
}

/// Open loop: station `index`'s first send is offset within one interval, so that the stations'
/// calls are spread evenly instead of all leaving at once.
pub fn first_offset(index: usize, stations: u32, interval: Duration) -> Duration {
    interval.mul_f64(index as f64 / stations.max(1) as f64)
}

/// Open loop: how many calls of one station fall in the `remaining` part of the window, the first
/// at its start.
pub fn still_due(remaining: Duration, interval: Duration) -> u64 {
    (remaining.as_secs_f64() / interval.as_secs_f64()).ceil() as u64
}

/// Connects and sends BootNotification; the boot must be Accepted.
async fn connect_and_boot(ctx: &Ctx, ep: &Endpoint) -> Result<Conn> {
    let _permit = ctx.handshakes.acquire().await?;
    let mut c = conn::connect_as(ep, ctx.protocol, Instant::now() + ctx.timeout).await?;
    let boot = match ctx.protocol {
        Protocol::V16 => messages::boot_notification(),
        Protocol::V201 => v201::boot_notification(),
    };
    match c.call("BootNotification", &boot, Instant::now() + ctx.timeout).await {
        Outcome::Result(v) if v["status"] == "Accepted" => Ok(c),
        Outcome::Result(v) => bail!("BootNotification not accepted: {v}"),
        other => bail!("BootNotification: {other:?}"),
    }
}

/// Connect, boot, start the transaction: returns the connection and the transaction id (2.0.1: 0,
/// the station's own id being [`tx201`]).
async fn setup(
    ctx: &Ctx,
    ep: &Endpoint,
    index: usize,
    meter_start: i64,
    clock: &mut UniqueClock,
) -> Result<(Conn, i64)> {
    let mut c = connect_and_boot(ctx, ep).await?;
    if ctx.protocol == Protocol::V201 {
        let payload =
            v201::transaction_event(&tx201(ctx, index), 0, u32::MAX, 1, &ctx.id_tag, meter_start, &clock.next());
        return match c.call("TransactionEvent", &payload, Instant::now() + ctx.timeout).await {
            Outcome::Result(v) => {
                let status = &v["idTokenInfo"]["status"];
                if status != "Accepted" {
                    ctx.shared.log(|| {
                        format!(
                            "{}: TransactionEvent Started idTokenInfo.status is {status} (the bench meters on)",
                            ep.id
                        )
                    });
                }
                Ok((c, 0))
            }
            other => bail!("TransactionEvent Started: {other:?}"),
        };
    }
    let payload = messages::start_transaction(1, &ctx.id_tag, meter_start, &clock.next());
    match c.call("StartTransaction", &payload, Instant::now() + ctx.timeout).await {
        Outcome::Result(v) => {
            let tx = v["transactionId"]
                .as_i64()
                .with_context(|| format!("StartTransaction answer without transactionId: {v}"))?;
            let status = &v["idTagInfo"]["status"];
            if status != "Accepted" {
                ctx.shared
                    .log(|| format!("{}: StartTransaction idTagInfo.status is {status} (the bench meters on)", ep.id));
            }
            Ok((c, tx))
        }
        other => bail!("StartTransaction: {other:?}"),
    }
}

async fn run_station(ctx: Arc<Ctx>, index: usize, ep: Endpoint) {
    let sh = &ctx.shared;
    let mut clock = UniqueClock::default();
    let mut energy: i64 = 1_000 + (index as i64 % 1000) * 100;
    let (conn, tx) = match setup(&ctx, &ep, index, energy, &mut clock).await {
        Ok(v) => v,
        Err(e) => {
            sh.setup_failures.fetch_add(1, Relaxed);
            sh.log(|| format!("{}: setup failed: {e:#}", ep.id));
            return;
        }
    };
    sh.stations_ready.fetch_add(1, Relaxed);
    let mut conn = Some(conn);

    // Wait for the start signal, answering the central system meanwhile.
    let mut go_rx = ctx.go.clone();
    let go = loop {
        if let Some(go) = *go_rx.borrow_and_update() {
            break go;
        }
        let Some(c) = conn.as_mut() else {
            match go_rx.wait_for(Option::is_some).await {
                Ok(go) => break go.expect("checked by wait_for"),
                Err(_) => return,
            }
        };
        match c.serve_until(go_rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return, // the run is over
            Err(e) => {
                sh.disconnects.fetch_add(1, Relaxed);
                sh.log(|| format!("{}: disconnected before the start: {e}", ep.id));
                conn = None;
            }
        }
    };
    let measure_from = go + ctx.warmup;
    let end = measure_from + ctx.duration;
    let mut scheduled = ctx.interval.map(|iv| go + first_offset(index, ctx.stations, iv));
    let mut n: u64 = 0;

    loop {
        let now = Instant::now();
        let intended = scheduled.unwrap_or(now);
        if intended >= end {
            break;
        }
        if now >= end {
            // Open loop behind schedule: what is still due in the window is not sent.
            if let Some(iv) = ctx.interval {
                sh.unsent.fetch_add(still_due(end.duration_since(intended), iv), Relaxed);
            }
            break;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => {
                match connect_and_boot(&ctx, &ep).await {
                    Ok(c) => {
                        sh.reconnects.fetch_add(1, Relaxed);
                        conn = Some(c);
                    }
                    Err(e) => {
                        sh.log(|| format!("{}: reconnect failed: {e:#}", ep.id));
                        sleep(Duration::from_secs(1).min(end.saturating_duration_since(now))).await;
                    }
                }
                continue;
            }
        };
        if intended > now {
            if let Err(e) = c.serve_until(sleep_until(intended)).await {
                sh.disconnects.fetch_add(1, Relaxed);
                sh.log(|| format!("{}: disconnected: {e}", ep.id));
                conn = None;
                continue;
            }
        }
        let ts = clock.next();
        let (action, payload) = match (ctx.message, ctx.protocol) {
            (MessageKind::MeterValues, Protocol::V16) => {
                energy += 7;
                ("MeterValues", messages::meter_values(1, tx, energy, &ts))
            }
            (MessageKind::MeterValues, Protocol::V201) => {
                energy += 7;
                let seq = u32::try_from(n + 1).unwrap_or(u32::MAX - 1);
                let e = v201::transaction_event(&tx201(&ctx, index), seq, u32::MAX, 1, &ctx.id_tag, energy, &ts);
                ("TransactionEvent", e)
            }
            (MessageKind::Status, Protocol::V16) => ("StatusNotification", messages::status_notification(n, &ts)),
            (MessageKind::Status, Protocol::V201) => ("StatusNotification", v201::status_notification(n, &ts)),
        };
        n += 1;
        let sent = Instant::now();
        // Closed loop measures from the send; open loop from the schedule (coordinated omission).
        let from = scheduled.unwrap_or(sent);
        let outcome = c.call(action, &payload, sent + ctx.timeout).await;
        let done = Instant::now();
        if let (Some(s), Some(iv)) = (scheduled.as_mut(), ctx.interval) {
            *s += iv;
        }
        match outcome {
            Outcome::Result(_) => {
                let us = done.duration_since(from).as_micros() as u64;
                sh.record_ok(us, from >= measure_from);
            }
            Outcome::CallError { code, description } => {
                sh.record_call_error(&code);
                sh.log(|| format!("{}: {action} CALLERROR {code}: {description}", ep.id));
            }
            Outcome::Timeout => {
                sh.timeouts.fetch_add(1, Relaxed);
                sh.log(|| format!("{}: {action} timed out after {:?}", ep.id, ctx.timeout));
            }
            Outcome::Closed(e) => {
                sh.disconnects.fetch_add(1, Relaxed);
                sh.log(|| format!("{}: disconnected: {e}", ep.id));
                conn = None;
            }
        }
    }
    if let Some(mut c) = conn {
        // End the transaction, as a charger would; unmeasured, and a failure here only counts.
        let (action, payload) = match ctx.protocol {
            Protocol::V16 => ("StopTransaction", messages::stop_transaction(tx, &ctx.id_tag, energy, &clock.next())),
            Protocol::V201 => {
                // Ended follows the last Updated (only MeterValues runs sent any).
                let sent = if ctx.message == MessageKind::MeterValues { n } else { 0 };
                let seq = u32::try_from(sent + 1).unwrap_or(u32::MAX);
                let e =
                    v201::transaction_event(&tx201(&ctx, index), seq, seq - 1, 1, &ctx.id_tag, energy, &clock.next());
                ("TransactionEvent", e)
            }
        };
        match c.call(action, &payload, Instant::now() + ctx.timeout).await {
            Outcome::Result(_) => {}
            Outcome::CallError { code, description } => {
                sh.record_call_error(&code);
                sh.log(|| format!("{}: {action} (end of the transaction) CALLERROR {code}: {description}", ep.id));
            }
            Outcome::Timeout => {
                sh.timeouts.fetch_add(1, Relaxed);
            }
            Outcome::Closed(_) => {
                sh.disconnects.fetch_add(1, Relaxed);
            }
        }
        c.close(ctx.timeout.min(Duration::from_secs(2))).await;
    }
}

/// The 2.0.1 transactionId of station `index` in this run.
fn tx201(ctx: &Ctx, index: usize) -> String {
    v201::transaction_id(ctx.run_tag, index as u32, 0)
}

/// Prints one line a second on stderr until `stop` turns true.
async fn progress(
    shared: Arc<Shared>,
    start: Instant,
    go: watch::Receiver<Option<Instant>>,
    warmup: Duration,
    duration: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut last_ok, mut last_at) = (0u64, Instant::now());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = Instant::now();
        let c = shared.counts();
        let rate = (c.ok_total - last_ok) as f64 / now.duration_since(last_at).as_secs_f64();
        (last_ok, last_at) = (c.ok_total, now);
        let go = *go.borrow();
        let phase = match go {
            None => "setup".to_string(),
            Some(g) if now < g + warmup => format!("warmup {:.0}s", now.duration_since(g).as_secs_f64()),
            Some(g) if now < g + warmup + duration => {
                format!("measure {:.0}/{}s", now.duration_since(g + warmup).as_secs_f64(), duration.as_secs())
            }
            Some(_) => "drain".to_string(),
        };
        eprintln!(
            "[{:>4.0}s] {phase:<14} {rate:>9.1} msgs/s  ok {}  ready {}  setup-failed {}  callerrors {}  timeouts {}  disconnects {}",
            now.duration_since(start).as_secs_f64(),
            c.ok_total, c.stations_ready, c.setup_failures, c.call_errors, c.timeouts, c.disconnects
        );
    }
}

pub async fn run(args: EventsArgs) -> Result<Summary> {
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        bail!("--timeout must be a positive number of seconds");
    }
    if let Some(r) = args.rate {
        if !(r > 0.0 && r.is_finite()) {
            bail!("--rate must be a positive number of calls per second");
        }
    }
    // With --shard, this process runs its slice of the stations; each keeps the interval and
    // offset it has in the whole run (fleet-wide index and count), so its rate is its share.
    let all = u64::from(args.stations);
    let range = match args.shard {
        Some(sh) if sh.range(all).is_empty() => {
            bail!("--shard {}: {all} stations leave this shard none; use at most {all} shards", sh.label())
        }
        Some(sh) => sh.range(all),
        None => 0..all,
    };
    let sign_up = if range.start == 0 { provision::SignUp::IfMissing } else { provision::SignUp::WaitForIt };
    let (creds, template, tenant) = provision::stations_in(&args.target, range.clone(), sign_up).await?;

    let shared = Arc::new(Shared::default());
    let (go_tx, go_rx) = watch::channel(None::<Instant>);
    let (stop_tx, stop_rx) = watch::channel(false);
    let interval = args.rate.map(|r| station_interval(r, args.stations));
    let ctx = Arc::new(Ctx {
        message: args.message,
        interval,
        timeout: Duration::from_secs_f64(args.timeout),
        warmup: Duration::from_secs(args.warmup),
        duration: Duration::from_secs(args.duration),
        id_tag: args.target.id_tag.clone(),
        protocol: args.protocol,
        run_tag: chrono::Utc::now().timestamp_millis().max(0) as u64,
        stations: args.stations,
        shared: shared.clone(),
        handshakes: Semaphore::new(args.connect_concurrency as usize),
        go: go_rx.clone(),
    });

    let start = Instant::now();
    let progress = tokio::spawn(progress(shared.clone(), start, go_rx, ctx.warmup, ctx.duration, stop_rx));
    let mut tasks = Vec::with_capacity(creds.len());
    for (i, cred) in creds.into_iter().enumerate() {
        let ep = Endpoint {
            url: stations::expand_template(&template, &tenant, &cred.id),
            id: cred.id,
            password: cred.password,
            source_ip: (!args.source_ips.is_empty()).then(|| args.source_ips[i % args.source_ips.len()]),
        };
        tasks.push(tokio::spawn(run_station(ctx.clone(), range.start as usize + i, ep)));
    }

    // Setup: until every station is ready or has failed, or the setup time is up.
    let setup_deadline = start + Duration::from_secs(args.setup_timeout);
    let n = range.end - range.start;
    while shared.stations_ready.load(Relaxed) + shared.setup_failures.load(Relaxed) < n
        && Instant::now() < setup_deadline
    {
        sleep(Duration::from_millis(20)).await;
    }
    let setup_secs = start.elapsed().as_secs_f64();
    if let Some(at) = args.start_at {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(at);
        match at.duration_since(std::time::SystemTime::now()) {
            Ok(wait) => {
                eprintln!("starting in {:.1} s (--start-at)", wait.as_secs_f64());
                sleep(wait).await;
            }
            Err(late) => eprintln!("warning: --start-at was {:.1} s ago; starting now", late.duration().as_secs_f64()),
        }
    }
    let go = Instant::now();
    let go_wall = std::time::SystemTime::now();
    let _ = go_tx.send(Some(go));

    // Everything ends by itself; this is the backstop for a task stuck beyond its own timeouts.
    let hard_end = go + ctx.warmup + ctx.duration + ctx.timeout * 3 + Duration::from_secs(5);
    let mut aborted = 0;
    for t in tasks {
        let abort = t.abort_handle();
        if tokio::time::timeout_at(hard_end, t).await.is_err() {
            abort.abort();
            aborted += 1;
        }
    }
    if aborted > 0 {
        eprintln!("warning: {aborted} station tasks did not finish in time and were aborted");
    }
    let _ = stop_tx.send(true);
    let _ = progress.await;

    let h = shared.latency.lock().expect("histogram lock").clone();
    let info = RunInfo {
        scenario: "events".into(),
        message: match (args.message, args.protocol) {
            (m, Protocol::V16) => m.name(),
            (MessageKind::MeterValues, Protocol::V201) => "meter-values (OCPP 2.0.1: TransactionEvent Updated)",
            (MessageKind::Status, Protocol::V201) => "status (OCPP 2.0.1)",
        }
        .into(),
        mode: if interval.is_some() { "open-loop" } else { "closed-loop" }.into(),
        target_rate: args.rate,
        url_template: template.replace("{tenant}", &tenant),
        stations: all,
        warmup_secs: args.warmup as f64,
        duration_secs: args.duration as f64,
        setup_secs: (setup_secs * 1000.0).round() / 1000.0,
    };
    let mut summary = stats::summarize(info, &h, shared.counts());
    let ms = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    summary.window_start_ms = ms(go_wall + ctx.warmup);
    summary.window_end_ms = ms(go_wall + ctx.warmup + ctx.duration);
    summary.shard = args.shard.map(|sh| crate::report::ShardReport {
        index: sh.index,
        count: sh.count,
        first_station: range.start + 1,
        stations: n,
    });
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_spreads_the_rate_over_stations() {
        let iv = station_interval(1000.0, 50);
        assert_eq!(iv, Duration::from_millis(50));
        assert_eq!(first_offset(0, 50, iv), Duration::ZERO);
        assert_eq!(first_offset(25, 50, iv), Duration::from_millis(25));
        assert!(first_offset(49, 50, iv) < iv);
    }

    #[test]
    fn unsent_counts_the_schedule_left_in_the_window() {
        let iv = Duration::from_millis(10);
        assert_eq!(still_due(Duration::from_millis(100), iv), 10);
        assert_eq!(still_due(Duration::from_millis(95), iv), 10);
        assert_eq!(still_due(Duration::from_millis(1), iv), 1);
    }
}
