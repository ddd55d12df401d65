//! The `fleet` scenario's summary: what was asked, what each phase measured; a table and JSON.

use crate::stats::LatencyMs;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The calls whose latency is reported per action, in table order.
/// (OCPP 1.6 and 2.0.1: a 2.0.1 transaction's events are told apart by their eventType.)
pub const ACTIONS: [&str; 8] = [
    "Heartbeat",
    "StatusNotification",
    "StartTransaction",
    "MeterValues",
    "StopTransaction",
    "TransactionEvent(Started)",
    "TransactionEvent(Updated)",
    "TransactionEvent(Ended)",
];

/// What the run was asked to do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FleetConfig {
    pub url_template: String,
    pub stations: u64,
    /// `--protocol` as given: `1.6`, `2.0.1`, or shares `1.6=70,2.0.1=30`.
    pub protocol: String,
    /// Of the stations, those speaking OCPP 2.0.1.
    pub stations_v201: u64,
    pub connectors: u32,
    pub connector_zero: bool,
    pub connect_rate: f64,
    pub connect_concurrency: u32,
    pub hold_secs: f64,
    pub heartbeat_rate: f64,
    pub transaction_rate: f64,
    pub meter_values: u32,
    pub meter_interval_secs: f64,
    pub storm: bool,
    /// Reconnects per second in the storm; `None`: all at once.
    pub storm_rate: Option<f64>,
    pub storm_close: String,
    pub timeout_secs: f64,
    /// Source addresses of this process (merged: the sum over the shards).
    pub source_ips: usize,
    /// --seed of the stations' schedule offsets.
    #[serde(default)]
    pub seed: u64,
}

/// Which part of a distributed run (`--shard I/N`) this output is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardReport {
    /// 1-based.
    pub index: u32,
    pub count: u32,
    /// The shard's first station, 1-based (`{prefix}{first_station:06}`).
    pub first_station: u64,
    /// The shard's stations: `first_station .. first_station + stations`.
    pub stations: u64,
}

/// The phases' wall-clock windows, milliseconds since the Unix epoch (what `merge` combines the
/// shards' rates with).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Windows {
    pub ramp_start_ms: u64,
    pub ramp_end_ms: u64,
    pub hold_start_ms: u64,
    pub hold_end_ms: u64,
    /// The storm's first reconnect and its last completion (`None` without --storm).
    pub storm_start_ms: Option<u64>,
    pub storm_end_ms: Option<u64>,
}

/// What `ocpp-bench merge` combined.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MergedReport {
    /// The shards merged (1-based indices, sorted) of `count`.
    pub shards: Vec<u32>,
    pub count: u32,
    pub files: Vec<String>,
    /// Latest hold start minus earliest, seconds: how far apart the shards' holds began.
    pub hold_start_spread_secs: f64,
    /// The same for the storms' first reconnects (`None` without storm): each shard's storm begins
    /// after its own hold has drained, so they may start apart even with --start-at.
    #[serde(default)]
    pub storm_start_spread_secs: Option<f64>,
}

/// Phase 1: connect, boot, one StatusNotification per connector.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RampReport {
    /// From the first scheduled connect until every station had booted or failed.
    pub secs: f64,
    /// Stations booted (BootNotification Accepted).
    pub booted: u64,
    /// Connections open when the ramp ended.
    pub connected: u64,
    /// Stations that did not get through connect and boot.
    pub failures: u64,
    /// Failures by kind: refused, http_<status>, timeout, boot_rejected, boot_timeout, …
    pub failures_by_kind: BTreeMap<String, u64>,
    /// booted / secs.
    pub achieved_rate: f64,
    /// TCP connect + WebSocket handshake.
    pub connect_ms: LatencyMs,
    /// The connect by step (absent when nothing connected, and in merged reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<StepsMs>,
    /// BootNotification round trip.
    pub boot_ms: LatencyMs,
}

/// A connect's steps, each timed on its own: `connect_ms` ≈ `tcp_ms` + `tls_ms` + `ws_ms`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepsMs {
    /// TCP connect (SYN to established).
    pub tcp_ms: LatencyMs,
    /// TLS handshake (wss:// only), client certificate included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ms: Option<LatencyMs>,
    /// Of those handshakes, how many resumed an earlier session (wss:// only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_resumed: Option<u64>,
    /// WebSocket upgrade (HTTP request to 101, the server's authentication included).
    pub ws_ms: LatencyMs,
}

/// Phase 2: the held connections' open-loop traffic.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HoldReport {
    pub secs: f64,
    /// heartbeat_rate + transaction_rate × (meter_values + 2).
    pub target_msgs_per_sec: f64,
    /// Answered calls scheduled inside the hold, per second of hold.
    pub achieved_msgs_per_sec: f64,
    /// Calls scheduled inside the hold: Heartbeats due in it, and every call of the transactions
    /// started in it (a transaction runs to its StopTransaction even past the hold's end).
    pub scheduled: u64,
    /// Of those, answered with a CALLRESULT.
    pub ok: u64,
    /// Of those, never sent: overdue by more than --timeout (the station was busy, disconnected, or
    /// the harness fell behind), or part of a transaction whose start failed.
    pub unsent: u64,
    pub timeouts: u64,
    pub call_errors: u64,
    /// Connections lost during the hold (not the storm's own drop).
    pub disconnects: u64,
    /// Reconnects (with boot) after such losses.
    pub reconnects: u64,
}

/// One action's outcome over the whole run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActionReport {
    pub ok: u64,
    pub call_errors: u64,
    pub timeouts: u64,
    /// The connection ended while waiting for the answer.
    pub closed: u64,
    /// From the scheduled send (open loop) to the CALLRESULT.
    pub latency_ms: LatencyMs,
}

/// Phase 3: drop everything, reconnect everything.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StormReport {
    /// Stations that took part (those booted before).
    pub stations: u64,
    /// Of those, connected and booted again.
    pub completed: u64,
    /// Of those, still not back when --storm-timeout ran out.
    pub gave_up: u64,
    /// Connect attempts (first tries and retries).
    pub attempts: u64,
    /// Failed attempts by kind.
    pub failures_by_kind: BTreeMap<String, u64>,
    /// From the first reconnect to the last completion.
    pub secs: f64,
    /// completed / secs.
    pub rate_per_sec: f64,
    /// Per attempt: TCP connect + WebSocket handshake.
    pub connect_ms: LatencyMs,
    /// Per successful attempt, the connect by step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<StepsMs>,
    /// Per attempt: BootNotification round trip.
    pub boot_ms: LatencyMs,
    /// Per station: from its scheduled reconnect to its accepted boot, retries included.
    pub recover_ms: LatencyMs,
}

/// Phase 4: WebSocket close.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CloseReport {
    /// Closing handshakes completed.
    pub clean: u64,
    /// Closes not acknowledged in time.
    pub unclean: u64,
}

/// The server process, sampled from /proc every second.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerReport {
    pub pid: u32,
    pub rss_before_ramp_mib: f64,
    pub rss_after_ramp_mib: f64,
    /// (rss_after_ramp − rss_before_ramp) / connections open at the end of the ramp.
    pub rss_per_session_kib: f64,
    pub rss_after_hold_mib: f64,
    pub rss_after_storm_mib: Option<f64>,
    pub peak_rss_mib: f64,
    /// CPU, percent of one core.
    pub cpu_ramp_pct: f64,
    pub cpu_hold_pct: f64,
    pub cpu_storm_pct: Option<f64>,
    /// False if the process went away during the run.
    pub alive_at_end: bool,
}

/// The harness itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HarnessReport {
    pub rss_after_ramp_mib: f64,
    pub rss_end_mib: f64,
    pub nofile_limit: u64,
    /// Station tasks still running at the hard deadline (aborted).
    pub tasks_aborted: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FleetSummary {
    pub scenario: String,
    pub config: FleetConfig,
    pub ramp: RampReport,
    pub hold: HoldReport,
    /// By action name.
    pub actions: BTreeMap<String, ActionReport>,
    pub storm: Option<StormReport>,
    pub close: CloseReport,
    /// All call timeouts of the run.
    pub timeouts: u64,
    /// All unexpected connection losses of the run.
    pub disconnects: u64,
    pub call_errors_by_code: BTreeMap<String, u64>,
    pub server: Option<ServerReport>,
    pub harness: HarnessReport,
    /// With --shard: which part of the fleet this process ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardReport>,
    /// Written by `merge`: which shards it combined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<MergedReport>,
    #[serde(default)]
    pub windows: Windows,
    /// The latency histograms (µs, 3 significant digits) in HdrHistogram's V2 serialized form,
    /// base64: `ramp.connect`, `ramp.boot`, `actions.<Action>`, and with --storm `storm.connect`,
    /// `storm.boot`, `storm.recover`.
    #[serde(default)]
    pub histograms: BTreeMap<String, String>,
    /// With --command-rate: the commands sent through the API during the hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<crate::commands::CommandsReport>,
}

pub fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// `a / b` rounded to a tenth; 0 when `b` is 0.
pub fn per(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b * 10.0).round() / 10.0
    } else {
        0.0
    }
}

pub(crate) fn kinds(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = m.iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!(" ({})", parts.join(", "))
}

/// The connect's steps as rows under the `  connect` row of `section`.
fn insert_steps(rows: &mut Vec<(String, String)>, section: &str, steps: &Option<StepsMs>) {
    let Some(st) = steps else { return };
    let Some(start) = rows.iter().position(|(k, _)| k == section) else { return };
    let Some(at) = rows[start..].iter().position(|(k, _)| k == "  connect") else { return };
    let mut add = vec![("    tcp".to_string(), lat(&st.tcp_ms))];
    if let Some(tls) = &st.tls_ms {
        let resumed = st.tls_resumed.map(|n| format!("; {n} resumed")).unwrap_or_default();
        add.push(("    tls".into(), format!("{}{resumed}", lat(tls))));
    }
    add.push(("    ws upgrade".into(), lat(&st.ws_ms)));
    let at = start + at + 1;
    rows.splice(at..at, add);
}

pub(crate) fn lat(l: &LatencyMs) -> String {
    if l.samples == 0 {
        return "-".into();
    }
    format!(
        "p50 {:.2}  p95 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms  (n={})",
        l.p50, l.p95, l.p99, l.p99_9, l.max, l.samples
    )
}

/// The summary as a two-column table.
pub fn render_table(s: &FleetSummary) -> String {
    let c = &s.config;
    let mut rows: Vec<(String, String)> = vec![
        ("url template".into(), c.url_template.clone()),
        (
            "stations".into(),
            format!(
                "{} × {} connector(s){}, from {} source address(es); OCPP {}{}",
                c.stations,
                c.connectors,
                if c.connector_zero { " + connector 0" } else { "" },
                c.source_ips.max(1),
                c.protocol,
                if c.stations_v201 > 0 && c.stations_v201 < c.stations {
                    format!(" ({} on 2.0.1)", c.stations_v201)
                } else {
                    String::new()
                }
            ),
        ),
    ];
    if let Some(sh) = &s.shard {
        rows.push((
            "shard".into(),
            format!(
                "{} of the fleet: stations {}..{} ({}), its share of the rates",
                format_args!("{}/{}", sh.index, sh.count),
                sh.first_station,
                sh.first_station + sh.stations.saturating_sub(1),
                sh.stations
            ),
        ));
    }
    if let Some(m) = &s.merged {
        rows.push((
            "merged".into(),
            format!(
                "{} of {} shards ({:?}); holds began within {} s{}",
                m.shards.len(),
                m.count,
                m.shards,
                m.hold_start_spread_secs,
                m.storm_start_spread_secs.map(|x| format!(", storms within {x} s")).unwrap_or_default()
            ),
        ));
    }
    rows.extend([
        ("RAMP".into(), format!("{} conn/s asked, at most {} at once", c.connect_rate, c.connect_concurrency)),
        (
            "  booted".into(),
            format!(
                "{} in {:.1} s ({} conn/s); {} open at the end",
                s.ramp.booted, s.ramp.secs, s.ramp.achieved_rate, s.ramp.connected
            ),
        ),
        ("  failures".into(), format!("{}{}", s.ramp.failures, kinds(&s.ramp.failures_by_kind))),
        ("  connect".into(), lat(&s.ramp.connect_ms)),
        ("  boot".into(), lat(&s.ramp.boot_ms)),
        (
            "HOLD".into(),
            format!(
                "{} s; {} heartbeats/s + {} transactions/s ({} MeterValues each)",
                c.hold_secs, c.heartbeat_rate, c.transaction_rate, c.meter_values
            ),
        ),
        (
            "  msgs/s".into(),
            format!("{} achieved of {} asked", s.hold.achieved_msgs_per_sec, s.hold.target_msgs_per_sec),
        ),
        (
            "  calls".into(),
            format!(
                "{} scheduled, {} ok, {} unsent, {} timeouts, {} CALLERRORs",
                s.hold.scheduled, s.hold.ok, s.hold.unsent, s.hold.timeouts, s.hold.call_errors
            ),
        ),
        ("  disconnects".into(), format!("{} ({} reconnected)", s.hold.disconnects, s.hold.reconnects)),
    ]);
    for name in ACTIONS {
        if let Some(a) = s.actions.get(name).filter(|a| a.ok + a.call_errors + a.timeouts + a.closed > 0) {
            let mut v = lat(&a.latency_ms);
            if a.call_errors + a.timeouts + a.closed > 0 {
                let _ = write!(v, "; {} errors, {} timeouts, {} closed", a.call_errors, a.timeouts, a.closed);
            }
            rows.push((format!("  {name}"), v));
        }
    }
    if let Some(st) = &s.storm {
        rows.extend([
            (
                "STORM".into(),
                format!(
                    "{} dropped ({}), {}",
                    st.stations,
                    c.storm_close,
                    match c.storm_rate {
                        Some(r) => format!("reconnecting at {r}/s"),
                        None => "all reconnecting at once".into(),
                    }
                ),
            ),
            (
                "  back".into(),
                format!("{} in {:.1} s = {} /s; {} gave up", st.completed, st.secs, st.rate_per_sec, st.gave_up),
            ),
            (
                "  attempts".into(),
                format!(
                    "{} ({} failed{})",
                    st.attempts,
                    st.failures_by_kind.values().sum::<u64>(),
                    kinds(&st.failures_by_kind)
                ),
            ),
            ("  connect".into(), lat(&st.connect_ms)),
            ("  boot".into(), lat(&st.boot_ms)),
            ("  recover".into(), lat(&st.recover_ms)),
        ]);
        insert_steps(&mut rows, "STORM", &st.steps);
    }
    insert_steps(&mut rows, "RAMP", &s.ramp.steps);
    rows.push(("CLOSE".into(), format!("{} clean, {} unacknowledged", s.close.clean, s.close.unclean)));
    rows.push(("timeouts".into(), s.timeouts.to_string()));
    rows.push(("disconnects".into(), s.disconnects.to_string()));
    for (code, n) in &s.call_errors_by_code {
        rows.push((format!("  CALLERROR {code}"), n.to_string()));
    }
    if let Some(sv) = &s.server {
        rows.push((
            "SERVER".into(),
            format!("pid {}{}", sv.pid, if sv.alive_at_end { "" } else { " (exited during the run!)" }),
        ));
        rows.push((
            "  RSS".into(),
            format!(
                "{} MiB before ramp, {} after ramp ({} KiB/session), {} after hold{}, peak {}",
                sv.rss_before_ramp_mib,
                sv.rss_after_ramp_mib,
                sv.rss_per_session_kib,
                sv.rss_after_hold_mib,
                sv.rss_after_storm_mib.map(|m| format!(", {m} after storm")).unwrap_or_default(),
                sv.peak_rss_mib
            ),
        ));
        rows.push((
            "  CPU".into(),
            format!(
                "ramp {}%, hold {}%{} (of one core)",
                sv.cpu_ramp_pct,
                sv.cpu_hold_pct,
                sv.cpu_storm_pct.map(|p| format!(", storm {p}%")).unwrap_or_default()
            ),
        ));
    }
    let h = &s.harness;
    rows.push((
        "HARNESS".into(),
        format!(
            "RSS {} MiB after ramp, {} at end; nofile {}{}",
            h.rss_after_ramp_mib,
            h.rss_end_mib,
            h.nofile_limit,
            if h.tasks_aborted > 0 {
                format!("; {} tasks aborted at the deadline", h.tasks_aborted)
            } else {
                String::new()
            }
        ),
    ));
    if let Some(c) = &s.commands {
        rows.extend(crate::commands::rows(c));
    }
    layout(rows)
}

/// Rows as a two-column table, the keys padded to the longest.
pub fn layout(rows: Vec<(String, String)>) -> String {
    let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<width$}  {v}");
    }
    out
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::stats::{latency_ms, new_histogram};

    pub fn sample_summary() -> FleetSummary {
        let mut h = new_histogram();
        for us in [800u64, 1_000, 1_200, 5_000] {
            h.record(us).unwrap();
        }
        let l = latency_ms(&h);
        let mut actions = BTreeMap::new();
        for name in ACTIONS {
            actions.insert(
                name.to_string(),
                ActionReport { ok: 4, call_errors: 0, timeouts: 0, closed: 0, latency_ms: l.clone() },
            );
        }
        FleetSummary {
            scenario: "fleet".into(),
            config: FleetConfig {
                url_template: "ws://127.0.0.1:8180/ocpp/bench/{id}".into(),
                stations: 1000,
                protocol: "1.6=70,2.0.1=30".into(),
                stations_v201: 300,
                connectors: 1,
                connector_zero: false,
                connect_rate: 500.0,
                connect_concurrency: 1000,
                hold_secs: 10.0,
                heartbeat_rate: 1000.0,
                transaction_rate: 0.0,
                meter_values: 3,
                meter_interval_secs: 1.0,
                storm: true,
                storm_rate: None,
                storm_close: "rst".into(),
                timeout_secs: 10.0,
                source_ips: 0,
                seed: 1,
            },
            ramp: RampReport {
                secs: 2.1,
                booted: 1000,
                connected: 1000,
                failures: 2,
                failures_by_kind: BTreeMap::from([("refused".into(), 1), ("http_401".into(), 1)]),
                achieved_rate: 476.2,
                connect_ms: l.clone(),
                steps: Some(StepsMs {
                    tcp_ms: l.clone(),
                    tls_ms: Some(l.clone()),
                    tls_resumed: Some(0),
                    ws_ms: l.clone(),
                }),
                boot_ms: l.clone(),
            },
            hold: HoldReport {
                secs: 10.0,
                target_msgs_per_sec: 1000.0,
                achieved_msgs_per_sec: 999.5,
                scheduled: 10_000,
                ok: 9_995,
                unsent: 0,
                timeouts: 5,
                call_errors: 0,
                disconnects: 0,
                reconnects: 0,
            },
            actions,
            storm: Some(StormReport {
                stations: 1000,
                completed: 1000,
                gave_up: 0,
                attempts: 1000,
                failures_by_kind: BTreeMap::new(),
                secs: 1.5,
                rate_per_sec: 666.7,
                connect_ms: l.clone(),
                steps: Some(StepsMs {
                    tcp_ms: l.clone(),
                    tls_ms: Some(l.clone()),
                    tls_resumed: Some(0),
                    ws_ms: l.clone(),
                }),
                boot_ms: l.clone(),
                recover_ms: l,
            }),
            close: CloseReport { clean: 1000, unclean: 0 },
            timeouts: 5,
            disconnects: 0,
            call_errors_by_code: BTreeMap::new(),
            server: Some(ServerReport {
                pid: 42,
                rss_before_ramp_mib: 20.0,
                rss_after_ramp_mib: 60.0,
                rss_per_session_kib: 41.0,
                rss_after_hold_mib: 61.0,
                rss_after_storm_mib: Some(70.0),
                peak_rss_mib: 75.0,
                cpu_ramp_pct: 80.0,
                cpu_hold_pct: 30.0,
                cpu_storm_pct: Some(120.0),
                alive_at_end: true,
            }),
            harness: HarnessReport {
                rss_after_ramp_mib: 30.0,
                rss_end_mib: 31.0,
                nofile_limit: 20_000,
                tasks_aborted: 0,
            },
            shard: None,
            merged: None,
            windows: Windows::default(),
            histograms: BTreeMap::new(),
            commands: None,
        }
    }

    #[test]
    fn json_has_the_documented_shape() {
        let v = serde_json::to_value(sample_summary()).unwrap();
        assert_eq!(v["scenario"], "fleet");
        for key in ["config", "ramp", "hold", "actions", "storm", "close", "server", "harness"] {
            assert!(v.get(key).is_some(), "no {key}");
        }
        for key in ["p50", "p95", "p99", "p99_9", "max", "samples"] {
            assert!(v["ramp"]["connect_ms"][key].is_number(), "connect_ms.{key}");
            assert!(v["actions"]["Heartbeat"]["latency_ms"][key].is_number(), "Heartbeat {key}");
        }
        for a in ACTIONS {
            assert!(v["actions"][a]["ok"].is_u64(), "{a}");
        }
        assert_eq!(v["ramp"]["failures_by_kind"]["http_401"], 1);
        assert_eq!(v["hold"]["target_msgs_per_sec"], 1000.0);
        assert!(v["hold"]["achieved_msgs_per_sec"].is_number());
        assert!(v["storm"]["rate_per_sec"].is_number());
        assert!(v["storm"]["recover_ms"]["p99"].is_number());
        assert_eq!(v["server"]["rss_per_session_kib"], 41.0);
        assert_eq!(v["server"]["cpu_hold_pct"], 30.0);
        assert!(v["harness"]["rss_after_ramp_mib"].is_number());
        assert!(v["timeouts"].is_u64() && v["disconnects"].is_u64());
    }

    #[test]
    fn optional_parts_are_null() {
        let mut s = sample_summary();
        s.storm = None;
        s.server = None;
        let v = serde_json::to_value(&s).unwrap();
        assert!(v["storm"].is_null());
        assert!(v["server"].is_null());
        let t = render_table(&s);
        assert!(!t.contains("STORM") && !t.contains("SERVER"), "{t}");
    }

    #[test]
    fn table_shows_every_phase() {
        let t = render_table(&sample_summary());
        for needle in [
            "RAMP",
            "HOLD",
            "STORM",
            "CLOSE",
            "SERVER",
            "HARNESS",
            "Heartbeat",
            "StopTransaction",
            "TransactionEvent(Started)",
            "TransactionEvent(Ended)",
            "OCPP 1.6=70,2.0.1=30 (300 on 2.0.1)",
            "http_401 1",
            "41 KiB/session",
            "999.5 achieved of 1000 asked",
        ] {
            assert!(t.contains(needle), "{needle} missing:\n{t}");
        }
    }

    #[test]
    fn helpers_round() {
        assert_eq!(mib(1536), 1.5);
        assert_eq!(per(1000.0, 3.0), 333.3);
        assert_eq!(per(5.0, 0.0), 0.0);
    }
}
