//! The summary of the `hostile` scenario: what was asked, the legitimate fleet's latency in the
//! quiet and the attack phase, the probes, the attack's outcomes, the server's resources.

use crate::outcomes::{top, Spread};
use crate::report::{mib, per};
use crate::stats::LatencyMs;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HostileConfig {
    pub attack: &'static str,
    pub attackers: u32,
    pub duration_secs: u64,
    pub quiet_secs: u64,
    pub legit_stations: u32,
    pub legit_rate: f64,
    pub url_template: String,
    pub legit_tenant: String,
    pub attacker_tenant: String,
    pub source_ips: usize,
    pub attack_source_ips: usize,
    /// Connection floods: most attack connections held at once (after the harness's own limit).
    pub max_conns: Option<u64>,
    pub timeout_secs: f64,
    pub attack_threads: u32,
}

/// Connecting the legitimate fleet before the quiet phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SetupReport {
    pub secs: f64,
    pub booted: u64,
    pub failures_by_kind: BTreeMap<String, u64>,
    /// Never-connected legitimate stations provisioned for the connect probes.
    pub fresh_stations: usize,
}

/// The legitimate Heartbeats scheduled in one phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LegitPhase {
    pub secs: f64,
    pub scheduled: u64,
    pub ok: u64,
    /// Overdue by more than --timeout before they could be sent (the station was disconnected or
    /// still waiting for an earlier answer).
    pub unsent: u64,
    pub timeouts: u64,
    pub call_errors: u64,
    /// Connections lost in this phase.
    pub disconnects: u64,
    /// Reconnects that failed in this phase.
    pub reconnect_failures: u64,
    /// Every failure by kind: `timeout`, `callerror_X`, `lost_close_1008`, `reconnect_http_503`, …
    pub failures_by_kind: BTreeMap<String, u64>,
    pub ok_per_sec: f64,
    /// From the scheduled send to the CALLRESULT.
    pub latency_ms: LatencyMs,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LegitReport {
    pub quiet: LegitPhase,
    pub attack: LegitPhase,
}

/// One probe in one phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbePhase {
    pub tries: u64,
    pub ok: u64,
    pub failures_by_kind: BTreeMap<String, u64>,
    pub latency_ms: LatencyMs,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbeReport {
    pub every_ms: u64,
    pub quiet: ProbePhase,
    pub attack: ProbePhase,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AttackReport {
    pub kind: &'static str,
    pub attackers: u32,
    pub secs: f64,
    /// Connections (or requests) tried, and how many got through (TCP for the floods, the
    /// WebSocket upgrade, an HTTP answer for the request attacks).
    pub attempts: u64,
    pub attempts_per_sec: f64,
    pub established: u64,
    /// Frames (or requests) sent in full.
    pub messages: u64,
    pub messages_per_sec: f64,
    pub bytes_sent: u64,
    pub mib_per_sec: f64,
    pub outcomes: BTreeMap<String, u64>,
    /// Retry-After values seen, by value.
    pub retry_after: BTreeMap<String, u64>,
    pub open_peak: i64,
    /// Attack connections open, sampled each second of the attack.
    pub open: Option<Spread>,
    /// Connections the server ended: bytes sent by then, and how long they had lasted.
    pub cut_after_bytes: Option<Spread>,
    pub cut_after_secs: Option<Spread>,
    /// no-read, replay-amplify: seconds until the server stopped taking bytes.
    pub blocked_after_secs: Option<Spread>,
    /// reconnect-loop: accepted upgrades in each second of the attack.
    pub accepted_per_sec: Option<Spread>,
    pub tasks_aborted: u64,
    /// Why the run ended before --duration, if it did.
    pub stopped_early: Option<String>,
}

/// Average of the quiet phase, average and peak of the attack phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Gauge {
    pub quiet_avg: f64,
    pub attack_avg: f64,
    pub attack_peak: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerReport {
    pub pid: u32,
    pub alive_at_end: bool,
    pub rss_mib: Gauge,
    /// attack peak − quiet average.
    pub rss_growth_mib: f64,
    pub fds: Option<Gauge>,
    /// Percent of one core.
    pub cpu_pct: Gauge,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FilesReport {
    /// --server-log: bytes it grew from the attack's start to its end.
    pub log_growth_bytes: Option<u64>,
    /// --data-dir: bytes it grew from the attack's start to its end, and its size then.
    pub data_dir_growth_bytes: Option<i64>,
    pub data_dir_bytes_at_end: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HarnessReport {
    pub nofile_limit: u64,
    pub rss_end_mib: f64,
    /// Legitimate station tasks still running at the deadline (aborted).
    pub tasks_aborted: u64,
}

/// One second's sample.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sample {
    /// Seconds since the quiet phase began.
    pub t: f64,
    pub phase: &'static str,
    pub rss_mib: Option<f64>,
    pub fds: Option<u64>,
    pub cpu_pct: Option<f64>,
    pub attack_open: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HostileSummary {
    pub scenario: &'static str,
    pub config: HostileConfig,
    pub setup: SetupReport,
    pub legit: LegitReport,
    /// By probe name.
    pub probes: BTreeMap<String, ProbeReport>,
    pub attack: AttackReport,
    pub server: Option<ServerReport>,
    pub files: FilesReport,
    pub harness: HarnessReport,
    pub samples: Vec<Sample>,
}

fn avg(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The gauge of a series split by phase.
pub fn gauge(quiet: &[f64], attack: &[f64]) -> Gauge {
    Gauge {
        quiet_avg: round1(avg(quiet)),
        attack_avg: round1(avg(attack)),
        attack_peak: round1(attack.iter().copied().fold(0.0, f64::max)),
    }
}

/// The spread of per-second counts over `secs` whole seconds (seconds with nothing count as 0).
pub fn per_second(counts: &[u64], secs: usize) -> Option<Spread> {
    if secs == 0 {
        return None;
    }
    let v: Vec<f64> = (0..secs).map(|i| counts.get(i).copied().unwrap_or(0) as f64).collect();
    Some(Spread {
        n: secs as u64,
        min: v.iter().copied().fold(f64::INFINITY, f64::min),
        mean: round1(avg(&v)),
        max: v.iter().copied().fold(0.0, f64::max),
    })
}

fn lat(l: &LatencyMs) -> String {
    if l.samples == 0 {
        return "-".into();
    }
    format!("p50 {:.2}  p99 {:.2}  max {:.2} ms  (n={})", l.p50, l.p99, l.max, l.samples)
}

fn kinds(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(" ({})", top(m, 6))
    }
}

fn spread(s: &Option<Spread>, unit: &str) -> Option<String> {
    s.as_ref().map(|s| format!("min {} / mean {} / max {} {unit} (n={})", s.min, s.mean, s.max, s.n))
}

fn bytes(n: f64) -> String {
    const K: f64 = 1024.0;
    match n.abs() {
        x if x >= K * K * K => format!("{:.2} GiB", n / (K * K * K)),
        x if x >= K * K => format!("{:.1} MiB", n / (K * K)),
        x if x >= K => format!("{:.1} KiB", n / K),
        _ => format!("{n} B"),
    }
}

fn gauge_row(g: &Gauge, unit: &str) -> String {
    format!("quiet avg {}{unit}, attack avg {}{unit}, attack peak {}{unit}", g.quiet_avg, g.attack_avg, g.attack_peak)
}

fn legit_row(p: &LegitPhase) -> String {
    let mut s = format!("{}; {} ok of {} scheduled ({}/s)", lat(&p.latency_ms), p.ok, p.scheduled, p.ok_per_sec);
    let failures = p.unsent + p.timeouts + p.call_errors + p.disconnects + p.reconnect_failures;
    if failures > 0 {
        let _ = write!(
            s,
            "; {} unsent, {} timeouts, {} CALLERRORs, {} disconnects, {} failed reconnects",
            p.unsent, p.timeouts, p.call_errors, p.disconnects, p.reconnect_failures
        );
    }
    s
}

fn probe_row(p: &ProbePhase) -> String {
    format!("{} ok of {}{}; {}", p.ok, p.tries, kinds(&p.failures_by_kind), lat(&p.latency_ms))
}

/// The summary as a two-column table.
pub fn render_table(s: &HostileSummary) -> String {
    let c = &s.config;
    let a = &s.attack;
    let mut rows: Vec<(String, String)> = vec![
        (
            "ATTACK".into(),
            format!(
                "{} × {} for {} s after {} s quiet; attacker tenant {:?}{}",
                c.attack,
                c.attackers,
                c.duration_secs,
                c.quiet_secs,
                c.attacker_tenant,
                if c.attack_source_ips > 0 {
                    format!(", from {} address(es)", c.attack_source_ips)
                } else {
                    String::new()
                }
            ),
        ),
        ("url template".into(), c.url_template.clone()),
        (
            "LEGIT".into(),
            format!(
                "{} stations of {:?}, {} heartbeats/s; {} booted in {:.1} s{}",
                c.legit_stations,
                c.legit_tenant,
                c.legit_rate,
                s.setup.booted,
                s.setup.secs,
                kinds(&s.setup.failures_by_kind)
            ),
        ),
        ("  quiet".into(), legit_row(&s.legit.quiet)),
        ("  attack".into(), legit_row(&s.legit.attack)),
    ];
    for (k, v) in [("quiet", &s.legit.quiet), ("attack", &s.legit.attack)] {
        if !v.failures_by_kind.is_empty() {
            rows.push((format!("    {k} failures"), top(&v.failures_by_kind, 8)));
        }
    }
    for (name, p) in &s.probes {
        rows.push((format!("PROBE {name}"), format!("every {} ms", p.every_ms)));
        rows.push(("  quiet".into(), probe_row(&p.quiet)));
        rows.push(("  attack".into(), probe_row(&p.attack)));
    }
    rows.push((
        "ATTACK RESULT".into(),
        format!(
            "{} attempts ({}/s), {} got through; {} messages ({}/s), {} sent ({} MiB/s)",
            a.attempts,
            a.attempts_per_sec,
            a.established,
            a.messages,
            a.messages_per_sec,
            bytes(a.bytes_sent as f64),
            a.mib_per_sec
        ),
    ));
    rows.push(("  outcomes".into(), if a.outcomes.is_empty() { "-".into() } else { top(&a.outcomes, 12) }));
    if !a.retry_after.is_empty() {
        rows.push(("  Retry-After".into(), top(&a.retry_after, 6)));
    }
    if let Some(v) = spread(&a.open, "open") {
        rows.push(("  open conns".into(), format!("{v}; peak {}", a.open_peak)));
    }
    if let Some(b) = &a.cut_after_bytes {
        rows.push((
            "  cut after".into(),
            format!("min {} / mean {} / max {} (n={})", bytes(b.min), bytes(b.mean), bytes(b.max), b.n),
        ));
    }
    if let Some(v) = spread(&a.cut_after_secs, "s") {
        rows.push(("  lasted".into(), v));
    }
    if let Some(v) = spread(&a.blocked_after_secs, "s") {
        rows.push(("  blocked after".into(), v));
    }
    if let Some(v) = spread(&a.accepted_per_sec, "accepted/s") {
        rows.push(("  accepted".into(), v));
    }
    if let Some(why) = &a.stopped_early {
        rows.push(("  STOPPED EARLY".into(), why.clone()));
    }
    if a.tasks_aborted > 0 {
        rows.push(("  aborted".into(), format!("{} attack tasks at the deadline", a.tasks_aborted)));
    }
    if let Some(sv) = &s.server {
        rows.push((
            "SERVER".into(),
            format!("pid {}{}", sv.pid, if sv.alive_at_end { "" } else { " (exited during the run!)" }),
        ));
        rows.push(("  RSS".into(), format!("{}; growth {} MiB", gauge_row(&sv.rss_mib, " MiB"), sv.rss_growth_mib)));
        if let Some(f) = &sv.fds {
            rows.push(("  open files".into(), gauge_row(f, "")));
        }
        rows.push(("  CPU".into(), format!("{} (of one core)", gauge_row(&sv.cpu_pct, "%"))));
    }
    if let Some(g) = s.files.log_growth_bytes {
        rows.push(("  log growth".into(), bytes(g as f64)));
    }
    if let (Some(g), Some(end)) = (s.files.data_dir_growth_bytes, s.files.data_dir_bytes_at_end) {
        rows.push(("  data growth".into(), format!("{} ({} at the end)", bytes(g as f64), bytes(end as f64))));
    }
    let h = &s.harness;
    rows.push((
        "HARNESS".into(),
        format!(
            "RSS {} MiB at end; nofile {}{}{}",
            h.rss_end_mib,
            h.nofile_limit,
            c.max_conns.map(|m| format!("; flood cap {m} connections")).unwrap_or_default(),
            if h.tasks_aborted > 0 { format!("; {} legit tasks aborted", h.tasks_aborted) } else { String::new() }
        ),
    ));
    let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<width$}  {v}");
    }
    out
}

/// `a / secs` rounded to a tenth.
pub fn rate(a: u64, secs: f64) -> f64 {
    per(a as f64, secs)
}

/// Bytes per second as MiB/s, to a tenth.
pub fn mib_rate(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        mib((bytes as f64 / secs / 1024.0) as u64)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{latency_ms, new_histogram};

    fn lat_of(us: &[u64]) -> LatencyMs {
        let mut h = new_histogram();
        for &u in us {
            h.record(u).unwrap();
        }
        latency_ms(&h)
    }

    fn phase(ok: u64, failures: BTreeMap<String, u64>) -> LegitPhase {
        LegitPhase {
            secs: 10.0,
            scheduled: ok + failures.values().sum::<u64>(),
            ok,
            unsent: 0,
            timeouts: failures.get("timeout").copied().unwrap_or(0),
            call_errors: 0,
            disconnects: 0,
            reconnect_failures: 0,
            failures_by_kind: failures,
            ok_per_sec: ok as f64 / 10.0,
            latency_ms: lat_of(&[900, 1_000, 1_100, 40_000]),
        }
    }

    pub fn sample_summary() -> HostileSummary {
        let probe = ProbePhase {
            tries: 10,
            ok: 9,
            failures_by_kind: BTreeMap::from([("http_503".into(), 1)]),
            latency_ms: lat_of(&[5_000, 6_000]),
        };
        HostileSummary {
            scenario: "hostile",
            config: HostileConfig {
                attack: "stalled-body",
                attackers: 8,
                duration_secs: 10,
                quiet_secs: 5,
                legit_stations: 200,
                legit_rate: 200.0,
                url_template: "ws://127.0.0.1:8190/ocpp/bench/{id}".into(),
                legit_tenant: "bench".into(),
                attacker_tenant: "hostile".into(),
                source_ips: 1,
                attack_source_ips: 8,
                max_conns: Some(19_000),
                timeout_secs: 10.0,
                attack_threads: 1,
            },
            setup: SetupReport { secs: 1.2, booted: 200, failures_by_kind: BTreeMap::new(), fresh_stations: 35 },
            legit: LegitReport {
                quiet: phase(1000, BTreeMap::new()),
                attack: phase(1900, BTreeMap::from([("timeout".into(), 100)])),
            },
            probes: BTreeMap::from([(
                "api_get_account".to_string(),
                ProbeReport { every_ms: 1000, quiet: probe.clone(), attack: probe },
            )]),
            attack: AttackReport {
                kind: "stalled-body",
                attackers: 8,
                secs: 10.0,
                attempts: 19_500,
                attempts_per_sec: 1950.0,
                established: 19_000,
                messages: 19_000,
                messages_per_sec: 1900.0,
                bytes_sent: 2_500_000,
                mib_per_sec: 0.2,
                outcomes: BTreeMap::from([("open_at_end".into(), 18_000), ("closed_http_408".into(), 1000)]),
                retry_after: BTreeMap::new(),
                open_peak: 18_500,
                open: Some(Spread { n: 10, min: 2000.0, mean: 15_000.0, max: 18_500.0 }),
                cut_after_bytes: None,
                cut_after_secs: Some(Spread { n: 1000, min: 5.0, mean: 5.1, max: 5.3 }),
                blocked_after_secs: None,
                accepted_per_sec: None,
                tasks_aborted: 0,
                stopped_early: None,
            },
            server: Some(ServerReport {
                pid: 42,
                alive_at_end: true,
                rss_mib: gauge(&[30.0, 30.0], &[40.0, 90.0]),
                rss_growth_mib: 60.0,
                fds: Some(gauge(&[220.0], &[5000.0, 19_000.0])),
                cpu_pct: gauge(&[10.0], &[150.0, 190.0]),
            }),
            files: FilesReport {
                log_growth_bytes: Some(2048),
                data_dir_growth_bytes: Some(1 << 20),
                data_dir_bytes_at_end: Some(5 << 20),
            },
            harness: HarnessReport { nofile_limit: 20_000, rss_end_mib: 80.0, tasks_aborted: 0 },
            samples: vec![Sample {
                t: 1.0,
                phase: "quiet",
                rss_mib: Some(30.0),
                fds: Some(220),
                cpu_pct: Some(10.0),
                attack_open: 0,
            }],
        }
    }

    #[test]
    fn gauges_split_quiet_from_attack() {
        let g = gauge(&[10.0, 20.0], &[30.0, 90.0, 60.0]);
        assert_eq!(g, Gauge { quiet_avg: 15.0, attack_avg: 60.0, attack_peak: 90.0 });
        assert_eq!(gauge(&[], &[]), Gauge { quiet_avg: 0.0, attack_avg: 0.0, attack_peak: 0.0 });
    }

    #[test]
    fn per_second_counts_empty_seconds_as_zero() {
        let s = per_second(&[3, 5], 4).unwrap();
        assert_eq!((s.n, s.min, s.mean, s.max), (4, 0.0, 2.0, 5.0));
        assert_eq!(per_second(&[1, 2, 3], 0), None);
        // Counts past the attack's end (the last connect finishing late) are left out.
        assert_eq!(per_second(&[1, 1, 9], 2).unwrap().max, 1.0);
    }

    #[test]
    fn json_has_the_documented_shape() {
        let v = serde_json::to_value(sample_summary()).unwrap();
        assert_eq!(v["scenario"], "hostile");
        for key in ["config", "setup", "legit", "probes", "attack", "server", "files", "harness", "samples"] {
            assert!(v.get(key).is_some(), "no {key}");
        }
        for phase in ["quiet", "attack"] {
            for key in ["p50", "p99", "max"] {
                assert!(v["legit"][phase]["latency_ms"][key].is_number(), "legit.{phase}.{key}");
            }
        }
        assert_eq!(v["legit"]["attack"]["failures_by_kind"]["timeout"], 100);
        assert_eq!(v["attack"]["outcomes"]["closed_http_408"], 1000);
        assert_eq!(v["probes"]["api_get_account"]["attack"]["failures_by_kind"]["http_503"], 1);
        assert_eq!(v["server"]["rss_mib"]["attack_peak"], 90.0);
        assert_eq!(v["server"]["fds"]["attack_peak"], 19_000.0);
        assert_eq!(v["files"]["log_growth_bytes"], 2048);
        assert!(v["attack"]["cut_after_bytes"].is_null());
        assert_eq!(v["attack"]["open"]["max"], 18_500.0);
    }

    #[test]
    fn table_shows_both_phases_the_outcomes_and_the_server() {
        let t = render_table(&sample_summary());
        for needle in [
            "ATTACK",
            "stalled-body × 8",
            "  quiet",
            "  attack",
            "timeout 100",
            "PROBE api_get_account",
            "http_503 1",
            "open_at_end 18000, closed_http_408 1000",
            "peak 18500",
            "SERVER",
            "attack peak 90 MiB",
            "attack peak 19000",
            "log growth",
            "2.0 KiB",
            "1.0 MiB (5.0 MiB at the end)",
            "flood cap 19000",
        ] {
            assert!(t.contains(needle), "{needle} missing:\n{t}");
        }
    }

    #[test]
    fn optional_parts_stay_out_of_the_table() {
        let mut s = sample_summary();
        s.server = None;
        s.probes.clear();
        s.files = FilesReport { log_growth_bytes: None, data_dir_growth_bytes: None, data_dir_bytes_at_end: None };
        let t = render_table(&s);
        for absent in ["SERVER", "PROBE", "log growth", "data growth"] {
            assert!(!t.contains(absent), "{absent} shown:\n{t}");
        }
        assert!(serde_json::to_value(&s).unwrap()["server"].is_null());
    }

    #[test]
    fn rates_round() {
        assert_eq!(rate(1000, 3.0), 333.3);
        assert_eq!(mib_rate(10 << 20, 2.0), 5.0);
        assert_eq!(mib_rate(5, 0.0), 0.0);
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.00 GiB");
    }
}
