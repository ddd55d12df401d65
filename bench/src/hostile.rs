//! The `hostile` scenario: a small legitimate fleet measures the central system's latency while an
//! attack runs beside it.
//!
//! 1. **Provision** (with `--provision-api`): the legitimate tenant (its fleet, plus a pool of
//!    stations that never connected, for the connect probes) and the attacker's own tenant, as a
//!    self-signed-up hostile user would have it.
//! 2. **Setup.** The legitimate stations connect and boot (BootNotification must be Accepted).
//! 3. **Quiet** (`--quiet` s): open-loop Heartbeats totalling `--legit-rate`/s, latency from the
//!    scheduled send, and the attack's probes (if it has any), with no attack.
//! 4. **Attack** (`--duration` s): the same, with the attack running on a runtime of its own.
//!
//! The server process is sampled every second (RSS, open files, CPU); its log file and data
//! directory are measured at the attack's start and end. Every wait of the harness is bounded, and
//! tasks still running at the last deadline are aborted.

use crate::attacks::{self, AttackPlan, AttackStats};
use crate::cli::{HostileArgs, ProbeKind, DEFAULT_PROVISION_PASSWORD};
use crate::conn::{self, Conn, Endpoint, Outcome};
use crate::hostile_report::{
    gauge, mib_rate, per_second, rate, AttackReport, FilesReport, HarnessReport, HostileConfig, HostileSummary,
    LegitPhase, LegitReport, ProbePhase, ProbeReport, Sample, ServerReport, SetupReport,
};
use crate::messages;
use crate::outcomes::{self, Tally};
use crate::provision::{self, Plan};
use crate::rawws::RawTarget;
use crate::report;
use crate::schedule;
use crate::stations::{self, StationCred};
use crate::stats::{latency_ms, new_histogram};
use crate::sys::{self, ProcSample};
use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{sleep_until, timeout_at, Instant};

/// Legitimate stations connecting at once during the setup.
const SETUP_CONCURRENCY: usize = 50;
/// Seconds between progress lines.
const PROGRESS_EVERY: u64 = 5;
/// Account password of the attacker's tenant.
const ATTACKER_ACCOUNT_PASSWORD: &str = "attacker-account-password";

/// The run's timeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phases {
    pub quiet_start: Instant,
    pub attack_start: Instant,
    pub end: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Quiet,
    Attack,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Quiet => "quiet",
            Phase::Attack => "attack",
        }
    }
}

impl Phases {
    pub fn new(quiet_start: Instant, quiet: Duration, duration: Duration) -> Phases {
        Phases { quiet_start, attack_start: quiet_start + quiet, end: quiet_start + quiet + duration }
    }

    /// The phase an instant belongs to; `None` before the quiet phase and from the end on.
    pub fn of(&self, t: Instant) -> Option<Phase> {
        if t < self.quiet_start || t >= self.end {
            None
        } else if t < self.attack_start {
            Some(Phase::Quiet)
        } else {
            Some(Phase::Attack)
        }
    }

    fn secs(&self, p: Phase) -> f64 {
        match p {
            Phase::Quiet => self.attack_start.duration_since(self.quiet_start).as_secs_f64(),
            Phase::Attack => self.end.duration_since(self.attack_start).as_secs_f64(),
        }
    }
}

/// Stations the connect probes use up over the run (each connects once), a few spare.
pub fn fresh_pool_size(probes: &[(ProbeKind, u64)], quiet_secs: u64, duration_secs: u64) -> usize {
    probes
        .iter()
        .filter(|(p, _)| *p == ProbeKind::NewStation)
        .map(|(_, every)| ((quiet_secs + duration_secs) * 1000).div_ceil((*every).max(1)) as usize + 5)
        .sum()
}

/// Ids of the never-connected stations: unique to the run, so that no earlier run connected them.
pub fn fresh_ids(prefix: &str, nonce: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}-N{nonce}-{i:05}")).collect()
}

/// A short lowercase hex tag unique to this run (time and process id).
pub fn run_nonce() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{:06x}{:02x}", secs & 0xFF_FFFF, std::process::id() & 0xFF)
}

/// An early end of the run, shared by everything that runs until the end.
#[derive(Default)]
struct Stop {
    flag: std::sync::atomic::AtomicBool,
    at: Mutex<Option<(Instant, String)>>,
}

impl Stop {
    fn is_set(&self) -> bool {
        self.flag.load(Relaxed)
    }

    fn set(&self, why: String) {
        let mut at = self.at.lock().expect("stop lock");
        if at.is_none() {
            *at = Some((Instant::now(), why));
            self.flag.store(true, Relaxed);
        }
    }

    /// When and why the run was stopped early.
    fn when(&self) -> Option<(Instant, String)> {
        self.at.lock().expect("stop lock").clone()
    }
}

/// Sleeps until `t` or an early stop, whichever is first.
async fn wait_until(t: Instant, stop: &Stop) {
    while !stop.is_set() && Instant::now() < t {
        sleep_until(t.min(Instant::now() + Duration::from_millis(100))).await;
    }
}

type Hist = Mutex<Histogram<u64>>;

fn record(h: &Hist, d: Duration) {
    h.lock().expect("histogram lock").saturating_record((d.as_micros() as u64).max(1));
}

/// The legitimate fleet's counts of one phase.
struct PhaseStats {
    hist: Hist,
    scheduled: AtomicU64,
    ok: AtomicU64,
    unsent: AtomicU64,
    timeouts: AtomicU64,
    call_errors: AtomicU64,
    disconnects: AtomicU64,
    reconnect_failures: AtomicU64,
    failures: Tally,
}

impl Default for PhaseStats {
    fn default() -> Self {
        PhaseStats {
            hist: Mutex::new(new_histogram()),
            scheduled: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            unsent: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            call_errors: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            reconnect_failures: AtomicU64::new(0),
            failures: Tally::default(),
        }
    }
}

impl PhaseStats {
    /// A Heartbeat overdue by more than --timeout before it could be sent.
    fn unsent(&self) {
        self.unsent.fetch_add(1, Relaxed);
        self.failures.add("unsent");
    }

    fn report(&self, secs: f64) -> LegitPhase {
        let ok = self.ok.load(Relaxed);
        LegitPhase {
            secs,
            scheduled: self.scheduled.load(Relaxed),
            ok,
            unsent: self.unsent.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            call_errors: self.call_errors.load(Relaxed),
            disconnects: self.disconnects.load(Relaxed),
            reconnect_failures: self.reconnect_failures.load(Relaxed),
            failures_by_kind: self.failures.snapshot(),
            ok_per_sec: rate(ok, secs),
            latency_ms: latency_ms(&self.hist.lock().expect("histogram lock")),
        }
    }
}

/// What the legitimate stations share.
struct Legit {
    quiet: PhaseStats,
    attack: PhaseStats,
    /// Latencies since the last progress line.
    window: Hist,
    connected: AtomicI64,
    timeout: Duration,
    period: Option<Duration>,
    seed: u64,
    phases: Phases,
    stop: Arc<Stop>,
}

impl Legit {
    fn at(&self, t: Instant) -> Option<&PhaseStats> {
        match self.phases.of(t)? {
            Phase::Quiet => Some(&self.quiet),
            Phase::Attack => Some(&self.attack),
        }
    }

    /// The phase stats of `t`, or of the nearest phase (a loss just after the end counts in the attack).
    fn near(&self, t: Instant) -> &PhaseStats {
        self.at(t).unwrap_or(if t < self.phases.attack_start { &self.quiet } else { &self.attack })
    }
}

/// Connect, then a BootNotification that must be Accepted; the error is the failure's kind.
async fn connect_boot(ep: &Endpoint, timeout: Duration) -> Result<Conn, String> {
    let t0 = Instant::now();
    let mut c = Box::pin(conn::connect(ep, t0 + timeout)).await.map_err(|e| e.kind())?;
    match Box::pin(c.call("BootNotification", &messages::boot_notification(), Instant::now() + timeout)).await {
        Outcome::Result(v) if v["status"] == "Accepted" => Ok(c),
        Outcome::Result(v) => Err(format!("boot_{}", outcomes::clean(v["status"].as_str().unwrap_or("")))),
        Outcome::CallError { code, .. } => Err(format!("boot_{}", outcomes::callerror_label(&code))),
        Outcome::Timeout => Err("boot_timeout".into()),
        Outcome::Closed(_) => Err(format!("boot_{}", c.end_kind().unwrap_or("closed"))),
    }
}

/// One legitimate station: Heartbeats on its schedule from the quiet phase's start to the end,
/// reconnecting (with a boot) at most once a second when the connection is lost.
async fn legit_station(legit: Arc<Legit>, index: u32, ep: Endpoint, conn: Conn) {
    let mut conn = Some(conn);
    let ph = legit.phases;
    let Some(period) = legit.period else {
        // No heartbeats asked: hold the connection (answering the server) until the end.
        if let Some(c) = conn.as_mut() {
            let _ = c.serve_until(wait_until(ph.end, &legit.stop)).await;
        }
        if let Some(c) = conn.take() {
            c.close(Duration::from_secs(2)).await;
        }
        return;
    };
    let mut due = ph.quiet_start + schedule::offset(legit.seed, index, 0, period);
    let mut next_reconnect = Instant::now();
    let lost = |conn: &mut Option<Conn>, label: String| {
        if let Some(c) = conn.take() {
            let s = legit.near(Instant::now());
            s.disconnects.fetch_add(1, Relaxed);
            s.failures.add(&format!("lost_{}", c.end_kind().map(str::to_string).unwrap_or(label)));
            legit.connected.fetch_sub(1, Relaxed);
        }
    };
    while due < ph.end && !legit.stop.is_set() {
        let Some(stats) = legit.at(due) else {
            due += period;
            continue;
        };
        if conn.is_none() {
            if Instant::now() >= ph.end {
                // The run is over: what was still due before its end was never sent.
                while due < ph.end {
                    if let Some(s) = legit.at(due) {
                        s.scheduled.fetch_add(1, Relaxed);
                        s.unsent();
                    }
                    due += period;
                }
                break;
            }
            if Instant::now() >= next_reconnect {
                next_reconnect = Instant::now() + Duration::from_secs(1);
                match connect_boot(&ep, legit.timeout).await {
                    Ok(c) => {
                        conn = Some(c);
                        legit.connected.fetch_add(1, Relaxed);
                    }
                    Err(kind) => {
                        let s = legit.near(Instant::now());
                        s.reconnect_failures.fetch_add(1, Relaxed);
                        s.failures.add(&format!("reconnect_{kind}"));
                    }
                }
            }
            if conn.is_none() {
                if Instant::now() > due + legit.timeout {
                    stats.scheduled.fetch_add(1, Relaxed);
                    stats.unsent();
                    due += period;
                } else {
                    sleep_until(next_reconnect.min(due + legit.timeout + Duration::from_millis(1))).await;
                }
                continue;
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        if due > Instant::now() {
            if let Err(e) = c.serve_until(wait_until(due, &legit.stop)).await {
                lost(&mut conn, outcomes::clean(&e));
                continue;
            }
            if legit.stop.is_set() {
                break;
            }
        }
        stats.scheduled.fetch_add(1, Relaxed);
        let now = Instant::now();
        if now > due + legit.timeout {
            stats.unsent();
            due += period;
            continue;
        }
        match c.call("Heartbeat", &messages::heartbeat(), now + legit.timeout).await {
            Outcome::Result(_) => {
                let d = due.elapsed();
                stats.ok.fetch_add(1, Relaxed);
                record(&stats.hist, d);
                record(&legit.window, d);
            }
            Outcome::CallError { code, .. } => {
                stats.call_errors.fetch_add(1, Relaxed);
                stats.failures.add(&outcomes::callerror_label(&code));
            }
            Outcome::Timeout => {
                stats.timeouts.fetch_add(1, Relaxed);
                stats.failures.add("timeout");
            }
            Outcome::Closed(_) => lost(&mut conn, "closed".into()),
        }
        due += period;
    }
    if let Some(c) = conn.take() {
        c.close(Duration::from_secs(2)).await;
        legit.connected.fetch_sub(1, Relaxed);
    }
}

/// One probe's counts in one phase.
struct ProbeStats {
    hist: Hist,
    tries: AtomicU64,
    ok: AtomicU64,
    failures: Tally,
}

impl Default for ProbeStats {
    fn default() -> Self {
        ProbeStats {
            hist: Mutex::new(new_histogram()),
            tries: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            failures: Tally::default(),
        }
    }
}

impl ProbeStats {
    fn report(&self) -> ProbePhase {
        ProbePhase {
            tries: self.tries.load(Relaxed),
            ok: self.ok.load(Relaxed),
            failures_by_kind: self.failures.snapshot(),
            latency_ms: latency_ms(&self.hist.lock().expect("histogram lock")),
        }
    }
}

/// What the probes share.
struct Probes {
    /// Opens a new connection for every request, as a client arriving now would.
    client: reqwest::Client,
    api: Option<String>,
    token: Option<String>,
    email: String,
    account_password: String,
    fresh: Vec<Endpoint>,
    next_fresh: AtomicUsize,
    timeout: Duration,
    phases: Phases,
    stop: Arc<Stop>,
    /// By probe: (every ms, quiet, attack).
    stats: BTreeMap<ProbeKind, (u64, ProbeStats, ProbeStats)>,
}

impl Probes {
    /// Why a probe cannot run here, if it cannot.
    fn missing(&self, kind: ProbeKind) -> Option<&'static str> {
        match kind {
            ProbeKind::ApiAccount if self.token.is_none() => {
                Some("no API token (give --provision-api, or --api with --email)")
            }
            ProbeKind::SignIn if self.api.is_none() => Some("no API (give --provision-api or --api)"),
            ProbeKind::NewStation if self.fresh.is_empty() => {
                Some("no never-connected stations (needs --provision-api)")
            }
            _ => None,
        }
    }

    async fn once(&self, kind: ProbeKind) -> Result<(), String> {
        let api = self.api.as_deref().unwrap_or("");
        let http = |r: Result<reqwest::Response, reqwest::Error>| match r {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(outcomes::http_label(r.status().as_u16())),
            Err(e) => Err(outcomes::reqwest_label(&e)),
        };
        match kind {
            ProbeKind::ApiAccount => {
                let token = self.token.as_deref().unwrap_or("");
                http(self.client.get(format!("{api}/account")).bearer_auth(token).send().await)
            }
            ProbeKind::SignIn => http(
                self.client
                    .post(format!("{api}/sessions"))
                    .json(&serde_json::json!({"email": self.email, "password": self.account_password}))
                    .send()
                    .await,
            ),
            ProbeKind::NewStation => {
                let Some(ep) = self.fresh.get(self.next_fresh.fetch_add(1, Relaxed)) else {
                    return Err("pool_exhausted".into());
                };
                let c = connect_boot(ep, self.timeout).await?;
                tokio::spawn(c.close(Duration::from_secs(2)));
                Ok(())
            }
        }
    }
}

async fn probe_loop(probes: Arc<Probes>, kind: ProbeKind, every: Duration) {
    let ph = probes.phases;
    let mut at = ph.quiet_start + every / 2;
    let mut running = tokio::task::JoinSet::new();
    while at < ph.end {
        wait_until(at, &probes.stop).await;
        if probes.stop.is_set() {
            break;
        }
        let p = probes.clone();
        running.spawn(async move {
            let Some((_, quiet, attack)) = p.stats.get(&kind) else { return };
            let stats = match p.phases.of(at) {
                Some(Phase::Quiet) => quiet,
                Some(Phase::Attack) => attack,
                None => return,
            };
            stats.tries.fetch_add(1, Relaxed);
            let t0 = Instant::now();
            match timeout_at(t0 + p.timeout, p.once(kind)).await {
                Ok(Ok(())) => {
                    stats.ok.fetch_add(1, Relaxed);
                    record(&stats.hist, t0.elapsed());
                }
                Ok(Err(kind)) => stats.failures.add(&kind),
                Err(_) => stats.failures.add("timeout"),
            }
        });
        at += every;
        while running.try_join_next().is_some() {}
    }
    let hard = ph.end + probes.timeout + Duration::from_secs(1);
    while let Ok(Some(_)) = timeout_at(hard, running.join_next()).await {}
    running.abort_all();
}

/// One reading of the server and the attack.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    proc: Option<ProcSample>,
    fds: Option<u64>,
    cpu: Option<f64>,
    attack_open: i64,
}

/// Samples every second from the quiet phase's start to the end; prints a progress line every few
/// seconds. Returns the readings and whether the server went away.
async fn sampler(
    pid: Option<u32>,
    rss_limit_mib: u64,
    phases: Phases,
    legit: Arc<Legit>,
    attack: Arc<AttackStats>,
    legit_stations: u32,
) -> (Vec<Reading>, bool) {
    let ticks = sys::clock_ticks_per_sec();
    let mut readings = Vec::new();
    let mut gone = false;
    sleep_until(phases.quiet_start).await;
    let mut last = pid.and_then(sys::sample);
    let (mut last_ok, mut last_bytes, mut last_msgs) = (0u64, 0u64, 0u64);
    for n in 1u64.. {
        let mut at = phases.quiet_start + Duration::from_secs(n);
        if at > phases.end {
            break;
        }
        if at == phases.end {
            // The last reading just before the end, while the attack still holds what it holds.
            at -= Duration::from_millis(100);
        }
        sleep_until(at).await;
        let proc = pid.and_then(sys::sample);
        if pid.is_some() && proc.is_none() && !gone {
            gone = true;
            eprintln!("warning: the server process is gone");
        }
        let cpu = match (last, proc) {
            (Some(a), Some(b)) => Some(sys::cpu_percent(&a, &b, ticks)),
            _ => None,
        };
        if proc.is_some() {
            last = proc;
        }
        let r = Reading { at, proc, fds: pid.and_then(sys::count_fds), cpu, attack_open: attack.open.load(Relaxed) };
        readings.push(r);
        if let Some(s) = proc.filter(|s| rss_limit_mib > 0 && s.rss_kib > rss_limit_mib * 1024) {
            let why = format!(
                "the server's RSS ({} MiB) passed --server-rss-limit {rss_limit_mib} MiB {:.0} s into the {}",
                report::mib(s.rss_kib),
                at.duration_since(phases.attack_start.min(at)).as_secs_f64(),
                if at < phases.attack_start { "quiet phase" } else { "attack" }
            );
            eprintln!("STOPPING: {why}");
            legit.stop.set(why);
            attack.stop();
        }
        if n % PROGRESS_EVERY == 0 {
            let ok = legit.quiet.ok.load(Relaxed) + legit.attack.ok.load(Relaxed);
            let p99 = {
                let mut w = legit.window.lock().expect("histogram lock");
                let p = (!w.is_empty()).then(|| w.value_at_quantile(0.99) as f64 / 1000.0);
                w.reset();
                p
            };
            let timeouts = legit.quiet.timeouts.load(Relaxed) + legit.attack.timeouts.load(Relaxed);
            let disc = legit.quiet.disconnects.load(Relaxed) + legit.attack.disconnects.load(Relaxed);
            let bytes = attack.bytes.load(Relaxed);
            let msgs = attack.messages.load(Relaxed);
            let phase = match phases.of(at - Duration::from_millis(1)) {
                Some(Phase::Quiet) => format!("quiet {}/{}s", n, phases.secs(Phase::Quiet) as u64),
                _ => format!(
                    "attack {:.0}/{}s",
                    at.duration_since(phases.attack_start).as_secs_f64(),
                    phases.secs(Phase::Attack) as u64
                ),
            };
            let secs = PROGRESS_EVERY as f64;
            let mut line = format!(
                "[{:>4}s] {phase:<15} legit {}/{legit_stations} conn, {:.0} hb/s, p99 {}, timeouts {timeouts}, disc {disc} \
                 | attack {} open, {:.0} msgs/s, {:.1} MiB/s",
                n,
                legit.connected.load(Relaxed),
                (ok - last_ok) as f64 / secs,
                p99.map_or("-".to_string(), |p| format!("{p:.1} ms")),
                r.attack_open,
                (msgs - last_msgs) as f64 / secs,
                (bytes - last_bytes) as f64 / secs / (1024.0 * 1024.0),
            );
            (last_ok, last_bytes, last_msgs) = (ok, bytes, msgs);
            let seen = attack.outcomes.snapshot();
            if !seen.is_empty() {
                line += &format!(" [{}]", outcomes::top(&seen, 4));
            }
            if let Some(s) = proc {
                line += &format!(
                    " | server {} MiB, {} fds, {:.0}%",
                    report::mib(s.rss_kib),
                    r.fds.map_or("?".to_string(), |f| f.to_string()),
                    cpu.unwrap_or(0.0)
                );
            }
            eprintln!("{line}");
        }
        if legit.stop.is_set() {
            break;
        }
    }
    (readings, gone)
}

/// Checks the arguments that clap cannot check alone.
pub fn check(args: &HostileArgs) -> Result<()> {
    if args.attack.needs_api() && args.api().is_none() {
        bail!("--attack {} needs the account API: give --provision-api or --api", args.attack.name());
    }
    if args.target.credentials.is_some() && args.target.provision_api.is_some() {
        bail!("--credentials and --provision-api exclude each other");
    }
    if let Some(api) = args.api() {
        if !api.starts_with("http://") {
            bail!("--api/--provision-api {api:?} must start with http:// (TLS is not supported by this harness)");
        }
    }
    if args.attacker_tenant == args.target.tenant {
        bail!("--attacker-tenant must differ from --tenant: the attacker has its own tenant");
    }
    Ok(())
}

/// Everything provisioning (or the command line) gives the run.
struct Cast {
    legit: Vec<StationCred>,
    fresh: Vec<StationCred>,
    template: String,
    legit_tenant: String,
    token: Option<String>,
    attackers: Vec<StationCred>,
    attacker_tenant: String,
}

async fn cast(args: &HostileArgs, nonce: &str, fresh_n: usize) -> Result<Cast> {
    let t = &args.target;
    let n = args.legit_stations as usize;
    let attacker_ids = if args.attack.uses_stations() {
        stations::station_ids(&args.attacker_prefix, args.attackers() as usize)
    } else {
        Vec::new()
    };
    let Some(papi) = t.provision_api.as_deref() else {
        let (legit, template, legit_tenant) = provision::stations_of(t, n).await?;
        let token = match (args.api(), &t.email) {
            (Some(api), Some(email)) => match provision::token_of(api, email, &t.account_password).await {
                Ok(tok) => Some(tok),
                Err(e) => {
                    eprintln!("note: no API token, the API probe is skipped: {e:#}");
                    None
                }
            },
            _ => None,
        };
        let pw = args.attacker_password.clone();
        return Ok(Cast {
            legit,
            fresh: Vec::new(),
            template,
            legit_tenant,
            token,
            attackers: attacker_ids.into_iter().map(|id| StationCred { id, password: pw.clone() }).collect(),
            attacker_tenant: args.attacker_tenant.clone(),
        });
    };
    if let Some(tpl) = &t.url_template {
        stations::check_template(tpl)?;
    }
    let password = t.password.clone().unwrap_or_else(|| DEFAULT_PROVISION_PASSWORD.into());
    let email = t.email.clone().unwrap_or_else(|| format!("bench@{}.example.com", t.tenant));
    let legit_ids = stations::station_ids(&t.id_prefix, n);
    let fresh_ids = fresh_ids(&t.id_prefix, nonce, fresh_n);
    let all: Vec<String> = legit_ids.iter().chain(&fresh_ids).cloned().collect();
    let legit = provision::provision(&Plan {
        api: papi,
        slug: &t.tenant,
        email: &email,
        account_password: &t.account_password,
        id_tag: &t.id_tag,
        station_password: Some(&password),
        station_ids: &all,
    })
    .await
    .context("provisioning the legitimate tenant")?;
    let attacker_pw = args.attacker_password.clone().unwrap_or_else(|| DEFAULT_PROVISION_PASSWORD.into());
    let attacker = provision::provision(&Plan {
        api: papi,
        slug: &args.attacker_tenant,
        email: &format!("attacker@{}.example.com", args.attacker_tenant),
        account_password: ATTACKER_ACCOUNT_PASSWORD,
        id_tag: "EVIL-TAG",
        station_password: Some(&attacker_pw),
        station_ids: &attacker_ids,
    })
    .await
    .context("provisioning the attacker's tenant")?;
    let template = match &t.url_template {
        Some(tpl) => tpl.clone(),
        None => stations::template_from_api(papi)?,
    };
    let cred = |id: String, pw: &str| StationCred { id, password: Some(pw.to_string()) };
    Ok(Cast {
        legit: legit_ids.into_iter().map(|id| cred(id, &password)).collect(),
        fresh: fresh_ids.into_iter().map(|id| cred(id, &password)).collect(),
        template,
        legit_tenant: legit.slug,
        token: Some(legit.token),
        attackers: attacker_ids.into_iter().map(|id| cred(id, &attacker_pw)).collect(),
        attacker_tenant: attacker.slug,
    })
}

fn endpoints(creds: Vec<StationCred>, template: &str, tenant: &str, ips: &[IpAddr], skip: usize) -> Vec<Endpoint> {
    creds
        .into_iter()
        .enumerate()
        .map(|(i, c)| Endpoint {
            url: stations::expand_template(template, tenant, &c.id),
            id: c.id,
            password: c.password,
            source_ip: (!ips.is_empty()).then(|| ips[(i + skip) % ips.len()]),
        })
        .collect()
}

pub async fn run(args: HostileArgs) -> Result<HostileSummary> {
    check(&args)?;
    let kind = args.attack;
    let attackers = args.attackers();
    let timeout = Duration::from_secs_f64(args.timeout);
    let legit_n = u64::from(args.legit_stations);
    let legit_ips = args.source_ips.clone().map(|s| s.0).unwrap_or_default();
    let attack_ips = args.attack_source_ips.clone().map(|s| s.0).unwrap_or_default();
    let nonce = run_nonce();
    let api = args.api().map(|a| a.trim_end_matches('/').to_string());

    // The harness's own open files: the fleet, the probes, and the attack's connections.
    let attack_fds = if kind.floods_connections() { args.max_conns } else { u64::from(attackers) * 2 };
    let nofile = match sys::raise_nofile(legit_n + attack_fds + 1_000) {
        Ok(l) => {
            eprintln!("open-file limit: {} (hard {})", l.soft, l.hard);
            l.soft
        }
        Err(e) => {
            eprintln!("warning: cannot read or raise the open-file limit: {e}");
            0
        }
    };
    let max_conns = kind.floods_connections().then(|| {
        let budget = nofile.saturating_sub(legit_n + 400);
        if nofile > 0 && args.max_conns > budget {
            eprintln!(
                "warning: --max-conns {} does not fit the harness's open-file limit {nofile} next to {legit_n} \
                 legitimate stations; holding at most {budget}",
                args.max_conns
            );
            budget.max(1)
        } else {
            args.max_conns
        }
    });
    if let Some(pid) = args.server_pid {
        sys::sample(pid).ok_or_else(|| anyhow!("--server-pid {pid}: no such process readable in /proc"))?;
    }

    let fresh_n = fresh_pool_size(kind.probes(), args.quiet, args.duration);
    let cast = cast(&args, &nonce, fresh_n).await?;

    // Setup: the legitimate fleet connects and boots.
    let setup_start = Instant::now();
    let eps = endpoints(cast.legit, &cast.template, &cast.legit_tenant, &legit_ips, 0);
    let setup_failures = Tally::default();
    let mut booted: Vec<(u32, Endpoint, Conn)> = Vec::with_capacity(eps.len());
    {
        let mut attempts = futures_util::stream::iter(eps.into_iter().enumerate())
            .map(|(i, ep)| async move {
                let r = connect_boot(&ep, timeout).await;
                (i as u32, ep, r)
            })
            .buffer_unordered(SETUP_CONCURRENCY);
        while let Some((i, ep, r)) = attempts.next().await {
            match r {
                Ok(c) => booted.push((i, ep, c)),
                Err(kind) => setup_failures.add(&kind),
            }
        }
    }
    let setup_secs = setup_start.elapsed().as_secs_f64();
    let failures = setup_failures.snapshot();
    eprintln!(
        "setup: {} of {legit_n} legitimate stations booted in {setup_secs:.1} s{}",
        booted.len(),
        if failures.is_empty() { String::new() } else { format!(" ({})", outcomes::top(&failures, 5)) }
    );
    let booted_n = booted.len() as u64;
    if booted.is_empty() {
        bail!("no legitimate station booted ({}); is the server up?", outcomes::top(&failures, 5));
    }

    let phases = Phases::new(
        Instant::now() + Duration::from_millis(200),
        Duration::from_secs(args.quiet),
        Duration::from_secs(args.duration),
    );
    let stop = Arc::new(Stop::default());
    let legit = Arc::new(Legit {
        quiet: PhaseStats::default(),
        attack: PhaseStats::default(),
        window: Mutex::new(new_histogram()),
        connected: AtomicI64::new(booted.len() as i64),
        timeout,
        period: schedule::station_interval(args.legit_rate, args.legit_stations),
        seed: args.seed,
        phases,
        stop: stop.clone(),
    });

    // The attack, on its own runtime and thread.
    let stations_at = RawTarget::from_url(&cast.template, &cast.attacker_tenant).await?;
    let api_at = match &api {
        Some(a) => RawTarget::from_url(a, "").await?,
        None => RawTarget { path: "/api/v1".into(), ..stations_at.clone() },
    };
    let plan = AttackPlan {
        kind,
        attackers,
        start: phases.attack_start,
        end: phases.end,
        timeout,
        stations_at,
        api_at,
        api: api.clone(),
        stations: cast.attackers,
        source_ips: attack_ips.clone(),
        max_conns: max_conns.unwrap_or(args.max_conns),
        frame_limit: args.frame_limit as usize,
        nonce: nonce.clone(),
    };
    plan.check()?;
    let attack_stats = Arc::new(AttackStats::default());
    let attack_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.attack_threads as usize)
        .thread_name("attack")
        .enable_all()
        .build()
        .context("starting the attack's runtime")?;
    let stats_for_attack = attack_stats.clone();
    let attack_thread = std::thread::Builder::new()
        .name("attack".into())
        .spawn(move || {
            attack_rt.block_on(attacks::run(plan, stats_for_attack));
            attack_rt.shutdown_timeout(Duration::from_secs(1));
        })
        .context("starting the attack's thread")?;

    // The legitimate fleet, the probes, the sampler.
    let mut fleet = Vec::with_capacity(booted.len());
    for (i, ep, c) in booted {
        fleet.push(tokio::spawn(legit_station(legit.clone(), i, ep, c)));
    }
    let probe_list: Vec<(ProbeKind, u64)> = kind.probes().to_vec();
    let probes = Arc::new(Probes {
        client: reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(0)
            .local_address(legit_ips.first().copied())
            .build()
            .context("probe HTTP client")?,
        api: api.clone(),
        token: cast.token,
        email: args.target.email.clone().unwrap_or_else(|| format!("bench@{}.example.com", args.target.tenant)),
        account_password: args.target.account_password.clone(),
        fresh: endpoints(cast.fresh, &cast.template, &cast.legit_tenant, &legit_ips, 0),
        next_fresh: AtomicUsize::new(0),
        timeout,
        phases,
        stop: stop.clone(),
        stats: probe_list
            .iter()
            .map(|(k, every)| (*k, (*every, ProbeStats::default(), ProbeStats::default())))
            .collect(),
    });
    let mut probe_tasks = Vec::new();
    for (k, every) in &probe_list {
        match probes.missing(*k) {
            Some(why) => eprintln!("note: probe {} skipped: {why}", k.name()),
            None => probe_tasks.push(tokio::spawn(probe_loop(probes.clone(), *k, Duration::from_millis(*every)))),
        }
    }
    let sampler = tokio::spawn(sampler(
        args.server_pid,
        args.server_rss_limit,
        phases,
        legit.clone(),
        attack_stats.clone(),
        args.legit_stations,
    ));

    // Phase boundaries: the log file and the data directory.
    let log_size = || args.server_log.as_deref().and_then(sys::file_size);
    let data_size = || args.data_dir.as_deref().and_then(sys::dir_size);
    eprintln!("quiet phase: {} s", args.quiet);
    wait_until(phases.attack_start, &stop).await;
    let (log_at_start, data_at_start) = (log_size(), data_size());
    if !stop.is_set() {
        eprintln!("attack {} starts: {attackers} client(s) for {} s", kind.name(), args.duration);
    }
    wait_until(phases.end, &stop).await;
    // The attack's thread only learns of an early stop through its stats.
    if stop.is_set() {
        attack_stats.stop();
    }
    let (log_at_end, data_at_end) = (log_size(), data_size());
    let stopped = stop.when();
    let end = stopped.as_ref().map_or(phases.end, |(at, _)| (*at).min(phases.end));
    eprintln!("attack over; waiting for the last answers");

    // Wind down: every task is bounded, the stragglers are aborted.
    let hard = end + timeout + Duration::from_secs(3);
    let mut aborted = 0u64;
    for t in fleet.into_iter().chain(probe_tasks) {
        let abort = t.abort_handle();
        if timeout_at(hard, t).await.is_err() {
            abort.abort();
            aborted += 1;
        }
    }
    let joined = tokio::task::spawn_blocking(move || attack_thread.join());
    if timeout_at(hard + Duration::from_secs(10), joined).await.is_err() {
        eprintln!("warning: the attack's thread did not stop in time");
    }
    let (readings, gone) = sampler.await.unwrap_or_default();

    // The summary.
    let duration_secs = end.saturating_duration_since(phases.attack_start).as_secs_f64();
    let in_phase = |p: Phase| readings.iter().filter(move |r| phases.of(r.at - Duration::from_millis(1)) == Some(p));
    let series = |p: Phase, f: &dyn Fn(&Reading) -> Option<f64>| in_phase(p).filter_map(f).collect::<Vec<f64>>();
    let rss = |r: &Reading| r.proc.map(|s| report::mib(s.rss_kib));
    let fds = |r: &Reading| r.fds.map(|f| f as f64);
    let cpu = |r: &Reading| r.cpu;
    let server = args.server_pid.map(|pid| {
        let rss_g = gauge(&series(Phase::Quiet, &rss), &series(Phase::Attack, &rss));
        let fds_q = series(Phase::Quiet, &fds);
        let fds_a = series(Phase::Attack, &fds);
        ServerReport {
            pid,
            alive_at_end: !gone && sys::sample(pid).is_some(),
            rss_growth_mib: ((rss_g.attack_peak - rss_g.quiet_avg) * 10.0).round() / 10.0,
            rss_mib: rss_g,
            fds: (!fds_q.is_empty() || !fds_a.is_empty()).then(|| gauge(&fds_q, &fds_a)),
            cpu_pct: gauge(&series(Phase::Quiet, &cpu), &series(Phase::Attack, &cpu)),
        }
    });
    let open_series = series(Phase::Attack, &|r: &Reading| Some(r.attack_open as f64));
    let a = &attack_stats;
    let open_spread = kind.floods_connections().then(|| {
        let acc = outcomes::SpreadAcc::default();
        open_series.iter().for_each(|x| acc.add(*x));
        acc.get()
    });
    let bytes = a.bytes.load(Relaxed);
    let attack = AttackReport {
        kind: kind.name(),
        attackers,
        secs: duration_secs,
        attempts: a.attempts.load(Relaxed),
        attempts_per_sec: rate(a.attempts.load(Relaxed), duration_secs),
        established: a.established.load(Relaxed),
        messages: a.messages.load(Relaxed),
        messages_per_sec: rate(a.messages.load(Relaxed), duration_secs),
        bytes_sent: bytes,
        mib_per_sec: mib_rate(bytes, duration_secs),
        outcomes: a.outcomes.snapshot(),
        retry_after: a.retry_after.snapshot(),
        open_peak: a.open_peak.load(Relaxed),
        open: open_spread.flatten(),
        cut_after_bytes: a.cut_bytes.get(),
        cut_after_secs: a.cut_secs.get(),
        blocked_after_secs: a.blocked_secs.get(),
        accepted_per_sec: (kind == crate::cli::AttackKind::ReconnectLoop)
            .then(|| per_second(&a.accepted_by_sec.lock().expect("per-second lock"), duration_secs as usize))
            .flatten(),
        tasks_aborted: a.aborted.load(Relaxed),
        stopped_early: stopped.map(|(_, why)| why),
    };
    let probes_report = probes
        .stats
        .iter()
        .filter(|(k, _)| probes.missing(**k).is_none())
        .map(|(k, (every, q, at))| {
            (k.name().to_string(), ProbeReport { every_ms: *every, quiet: q.report(), attack: at.report() })
        })
        .collect();
    let samples = readings
        .iter()
        .map(|r| Sample {
            t: (r.at.duration_since(phases.quiet_start).as_secs_f64() * 10.0).round() / 10.0,
            phase: phases.of(r.at - Duration::from_millis(1)).map_or("end", Phase::name),
            rss_mib: rss(r),
            fds: r.fds,
            cpu_pct: r.cpu,
            attack_open: r.attack_open,
        })
        .collect();
    let growth = |a: Option<u64>, b: Option<u64>| Some(b? as i64 - a? as i64);
    Ok(HostileSummary {
        scenario: "hostile",
        config: HostileConfig {
            attack: kind.name(),
            attackers,
            duration_secs: args.duration,
            quiet_secs: args.quiet,
            legit_stations: args.legit_stations,
            legit_rate: args.legit_rate,
            url_template: cast.template.replace("{tenant}", &cast.legit_tenant),
            legit_tenant: cast.legit_tenant,
            attacker_tenant: cast.attacker_tenant,
            source_ips: legit_ips.len(),
            attack_source_ips: attack_ips.len(),
            max_conns,
            timeout_secs: args.timeout,
            attack_threads: args.attack_threads,
        },
        setup: SetupReport {
            secs: (setup_secs * 10.0).round() / 10.0,
            booted: booted_n,
            failures_by_kind: failures,
            fresh_stations: fresh_n,
        },
        legit: LegitReport {
            quiet: legit.quiet.report(end.min(phases.attack_start).duration_since(phases.quiet_start).as_secs_f64()),
            attack: legit.attack.report(duration_secs),
        },
        probes: probes_report,
        attack,
        server,
        files: FilesReport {
            log_growth_bytes: growth(log_at_start, log_at_end).map(|g| g.max(0) as u64),
            data_dir_growth_bytes: growth(data_at_start, data_at_end),
            data_dir_bytes_at_end: data_at_end,
        },
        harness: HarnessReport {
            nofile_limit: nofile,
            rss_end_mib: report::mib(sys::self_rss_kib().unwrap_or(0)),
            tasks_aborted: aborted,
        },
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{AttackKind, Cli, Command};
    use clap::Parser;

    fn args(extra: &[&str]) -> HostileArgs {
        let cli = Cli::try_parse_from(["ocpp-bench", "hostile"].iter().chain(extra)).unwrap();
        let Command::Hostile(a) = cli.command else { panic!("not hostile") };
        a
    }

    #[test]
    fn instants_fall_into_their_phase() {
        let t0 = Instant::now();
        let p = Phases::new(t0, Duration::from_secs(10), Duration::from_secs(60));
        assert_eq!(p.of(t0 - Duration::from_millis(1)), None, "before the quiet phase");
        assert_eq!(p.of(t0), Some(Phase::Quiet));
        assert_eq!(p.of(t0 + Duration::from_millis(9_999)), Some(Phase::Quiet));
        assert_eq!(p.of(t0 + Duration::from_secs(10)), Some(Phase::Attack));
        assert_eq!(p.of(t0 + Duration::from_millis(69_999)), Some(Phase::Attack));
        assert_eq!(p.of(t0 + Duration::from_secs(70)), None, "the end is outside");
        assert_eq!((p.secs(Phase::Quiet), p.secs(Phase::Attack)), (10.0, 60.0));
        let no_quiet = Phases::new(t0, Duration::ZERO, Duration::from_secs(5));
        assert_eq!(no_quiet.of(t0), Some(Phase::Attack));
    }

    #[test]
    fn the_fresh_pool_covers_every_connect_probe() {
        // auth-brute: a new station every 500 ms over 5 + 10 s = 30, and 5 spare.
        assert_eq!(fresh_pool_size(AttackKind::AuthBrute.probes(), 5, 10), 35);
        // stalled-body: every second over 70 s.
        assert_eq!(fresh_pool_size(AttackKind::StalledBody.probes(), 10, 60), 75);
        assert_eq!(fresh_pool_size(AttackKind::BigFrame.probes(), 10, 60), 0);
        let ids = fresh_ids("BENCH", "abc12345", 3);
        assert_eq!(ids, ["BENCH-Nabc12345-00001", "BENCH-Nabc12345-00002", "BENCH-Nabc12345-00003"]);
        // Station ids: at most 48 of letters, digits, '.', '_', '-'.
        let long = fresh_ids(&"P".repeat(20), &run_nonce(), 99_999);
        assert!(long.iter().all(|id| id.len() <= 48), "{}", long[0]);
        assert!(run_nonce().chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn arguments_are_checked() {
        assert!(check(&args(&["--attack", "big-frame"])).is_ok());
        let e = check(&args(&["--attack", "signup-flood"])).unwrap_err();
        assert!(e.to_string().contains("--provision-api"), "{e}");
        assert!(check(&args(&["--attack", "signup-flood", "--api", "http://h:1/api/v1"])).is_ok());
        assert!(check(&args(&["--attack", "signup-flood", "--api", "https://h/api/v1"])).is_err());
        let same = args(&["--attack", "big-frame", "--tenant", "x", "--attacker-tenant", "x"]);
        assert!(check(&same).unwrap_err().to_string().contains("--attacker-tenant"));
    }

    #[test]
    fn phase_stats_report_what_was_counted() {
        let s = PhaseStats::default();
        for _ in 0..4 {
            s.scheduled.fetch_add(1, Relaxed);
        }
        s.ok.fetch_add(2, Relaxed);
        record(&s.hist, Duration::from_millis(3));
        record(&s.hist, Duration::from_millis(5));
        s.unsent();
        s.timeouts.fetch_add(1, Relaxed);
        s.failures.add("timeout");
        let r = s.report(2.0);
        assert_eq!((r.scheduled, r.ok, r.unsent, r.timeouts, r.ok_per_sec), (4, 2, 1, 1, 1.0));
        assert_eq!(r.failures_by_kind, BTreeMap::from([("timeout".into(), 1), ("unsent".into(), 1)]));
        assert_eq!(r.latency_ms.samples, 2);
        assert!((r.latency_ms.max - 5.0).abs() < 0.01, "{}", r.latency_ms.max);
    }

    #[tokio::test]
    async fn an_early_stop_keeps_its_first_reason_and_ends_the_waits() {
        let stop = Stop::default();
        assert!(!stop.is_set() && stop.when().is_none());
        stop.set("rss".into());
        stop.set("later".into());
        assert!(stop.is_set());
        assert_eq!(stop.when().map(|(_, why)| why).as_deref(), Some("rss"));
        let t0 = Instant::now();
        wait_until(t0 + Duration::from_secs(30), &stop).await;
        assert!(t0.elapsed() < Duration::from_secs(1), "the wait ignored the stop");
        let running = Stop::default();
        wait_until(Instant::now() + Duration::from_millis(150), &running).await;
        assert!(t0.elapsed() >= Duration::from_millis(150), "returned before its time");
    }

    #[test]
    fn endpoints_take_source_addresses_round_robin() {
        let creds = vec![
            StationCred { id: "A".into(), password: Some("p".into()) },
            StationCred { id: "B".into(), password: None },
            StationCred { id: "C".into(), password: None },
        ];
        let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()];
        let eps = endpoints(creds, "ws://h:1/ocpp/{tenant}/{id}", "t", &ips, 0);
        assert_eq!(eps[1].url, "ws://h:1/ocpp/t/B");
        assert_eq!(eps.iter().map(|e| e.source_ip.unwrap()).collect::<Vec<_>>(), vec![ips[0], ips[1], ips[0]]);
        assert!(endpoints(Vec::new(), "ws://h/{id}", "t", &[], 0).is_empty());
    }
}
