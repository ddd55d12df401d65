//! Counters shared by the stations, and the run's summary.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Highest latency the histogram tells apart (one hour, in microseconds); longer ones are clamped.
const MAX_TRACKED_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds, three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_US, 3).expect("valid histogram bounds")
}

/// What all stations add to while they run; the progress line reads it too.
pub struct Shared {
    /// Ack latencies of the calls sent (or scheduled) inside the measured window, µs.
    pub latency: Mutex<Histogram<u64>>,
    /// Calls answered with a CALLRESULT, warmup included.
    pub ok_total: AtomicU64,
    pub call_errors: AtomicU64,
    pub call_errors_by_code: Mutex<BTreeMap<String, u64>>,
    pub timeouts: AtomicU64,
    pub disconnects: AtomicU64,
    pub reconnects: AtomicU64,
    /// Open loop: calls scheduled inside the window but not sent by its end (the harness or the
    /// server fell behind).
    pub unsent: AtomicU64,
    pub stations_ready: AtomicU64,
    pub setup_failures: AtomicU64,
    /// How many more failures are worth a line on stderr.
    pub log_budget: AtomicU64,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            latency: Mutex::new(new_histogram()),
            ok_total: AtomicU64::new(0),
            call_errors: AtomicU64::new(0),
            call_errors_by_code: Mutex::new(BTreeMap::new()),
            timeouts: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            unsent: AtomicU64::new(0),
            stations_ready: AtomicU64::new(0),
            setup_failures: AtomicU64::new(0),
            log_budget: AtomicU64::new(10),
        }
    }
}

impl Shared {
    pub fn record_ok(&self, latency_us: u64, measured: bool) {
        self.ok_total.fetch_add(1, Relaxed);
        if measured {
            self.latency.lock().expect("histogram lock").saturating_record(latency_us.max(1));
        }
    }

    pub fn record_call_error(&self, code: &str) {
        self.call_errors.fetch_add(1, Relaxed);
        *self.call_errors_by_code.lock().expect("error map lock").entry(code.to_string()).or_default() += 1;
    }

    /// Prints `line` on stderr while the budget lasts, so a failing run does not flood the terminal.
    pub fn log(&self, line: impl FnOnce() -> String) {
        let left = self.log_budget.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
        match left {
            Ok(1) => eprintln!("{} (further failures are only counted)", line()),
            Ok(_) => eprintln!("{}", line()),
            Err(_) => {}
        }
    }

    pub fn counts(&self) -> Counts {
        Counts {
            call_errors: self.call_errors.load(Relaxed),
            call_errors_by_code: self.call_errors_by_code.lock().expect("error map lock").clone(),
            timeouts: self.timeouts.load(Relaxed),
            disconnects: self.disconnects.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            unsent: self.unsent.load(Relaxed),
            stations_ready: self.stations_ready.load(Relaxed),
            setup_failures: self.setup_failures.load(Relaxed),
            ok_total: self.ok_total.load(Relaxed),
        }
    }
}

/// Failure and bookkeeping counts of a run (whole run, warmup included).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub call_errors: u64,
    pub call_errors_by_code: BTreeMap<String, u64>,
    pub timeouts: u64,
    pub disconnects: u64,
    pub reconnects: u64,
    pub unsent: u64,
    pub stations_ready: u64,
    pub setup_failures: u64,
    pub ok_total: u64,
}

/// What the run was asked to do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    pub scenario: String,
    pub message: String,
    /// "closed-loop" or "open-loop".
    pub mode: String,
    /// Total calls per second asked for in open loop.
    pub target_rate: Option<f64>,
    pub url_template: String,
    pub stations: u64,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    pub setup_secs: f64,
}

/// Ack latency percentiles, milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LatencyMs {
    pub samples: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

/// The result of a run, printed as a table and written as JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    #[serde(flatten)]
    pub run: RunInfo,
    pub stations_ready: u64,
    pub setup_failures: u64,
    /// CALLRESULTs of calls sent (or scheduled) inside the measured window.
    pub messages_ok: u64,
    /// CALLRESULTs over the whole run, warmup included.
    pub messages_ok_total: u64,
    /// CALLERRORs, timeouts and disconnects count over the whole run, warmup included.
    pub call_errors: u64,
    pub call_errors_by_code: BTreeMap<String, u64>,
    pub timeouts: u64,
    pub disconnects: u64,
    pub reconnects: u64,
    /// Open loop: calls scheduled in the window but not sent before it ended.
    pub unsent: u64,
    /// messages_ok / duration_secs.
    pub msgs_per_sec: f64,
    pub latency_ms: LatencyMs,
    /// With --shard: which part of the stations this process ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::report::ShardReport>,
    /// Written by `merge`: which shards it combined (`hold_start_spread_secs`: how far apart the
    /// shards' measured windows began).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<crate::report::MergedReport>,
    /// The measured window, milliseconds since the Unix epoch.
    #[serde(default)]
    pub window_start_ms: u64,
    #[serde(default)]
    pub window_end_ms: u64,
    /// The latency histogram (µs) in HdrHistogram's V2 serialized form, base64.
    #[serde(default)]
    pub histogram: String,
}

fn us_to_ms(us: f64) -> f64 {
    (us / 1000.0 * 1000.0).round() / 1000.0
}

/// Latency percentiles of a µs histogram; all zero when it is empty.
pub fn latency_ms(h: &Histogram<u64>) -> LatencyMs {
    if h.is_empty() {
        return LatencyMs { samples: 0, mean: 0.0, p50: 0.0, p90: 0.0, p95: 0.0, p99: 0.0, p99_9: 0.0, max: 0.0 };
    }
    let q = |q: f64| us_to_ms(h.value_at_quantile(q) as f64);
    LatencyMs {
        samples: h.len(),
        mean: us_to_ms(h.mean()),
        p50: q(0.50),
        p90: q(0.90),
        p95: q(0.95),
        p99: q(0.99),
        p99_9: q(0.999),
        max: us_to_ms(h.max() as f64),
    }
}

/// The summary of a run from its latency histogram (which holds exactly the measured successes).
pub fn summarize(run: RunInfo, h: &Histogram<u64>, counts: Counts) -> Summary {
    let messages_ok = h.len();
    let msgs_per_sec =
        if run.duration_secs > 0.0 { (messages_ok as f64 / run.duration_secs * 10.0).round() / 10.0 } else { 0.0 };
    Summary {
        run,
        stations_ready: counts.stations_ready,
        setup_failures: counts.setup_failures,
        messages_ok,
        messages_ok_total: counts.ok_total,
        call_errors: counts.call_errors,
        call_errors_by_code: counts.call_errors_by_code,
        timeouts: counts.timeouts,
        disconnects: counts.disconnects,
        reconnects: counts.reconnects,
        unsent: counts.unsent,
        msgs_per_sec,
        latency_ms: latency_ms(h),
        shard: None,
        merged: None,
        window_start_ms: 0,
        window_end_ms: 0,
        histogram: crate::merge::encode(h),
    }
}

/// The summary as a two-column table.
pub fn render_table(s: &Summary) -> String {
    let mut rows: Vec<(String, String)> = vec![
        ("scenario".into(), format!("{} ({}, {})", s.run.scenario, s.run.message, s.run.mode)),
        ("url template".into(), s.run.url_template.clone()),
    ];
    if let Some(sh) = &s.shard {
        rows.push((
            "shard".into(),
            format!(
                "{}/{}: stations {}..{}, its share of the rate",
                sh.index,
                sh.count,
                sh.first_station,
                sh.first_station + sh.stations.saturating_sub(1)
            ),
        ));
    }
    if let Some(m) = &s.merged {
        rows.push((
            "merged".into(),
            format!(
                "{} of {} shards ({:?}); windows began within {} s",
                m.shards.len(),
                m.count,
                m.shards,
                m.hold_start_spread_secs
            ),
        ));
    }
    if let Some(r) = s.run.target_rate {
        rows.push(("target rate".into(), format!("{r} msgs/s")));
    }
    let unsent =
        if s.run.target_rate.is_some() { format!(", {} scheduled but unsent", s.unsent) } else { String::new() };
    rows.extend([
        (
            "stations".into(),
            format!("{} ({} ready, {} failed setup)", s.run.stations, s.stations_ready, s.setup_failures),
        ),
        (
            "duration".into(),
            format!(
                "{} s measured after {} s warmup (setup {:.1} s)",
                s.run.duration_secs, s.run.warmup_secs, s.run.setup_secs
            ),
        ),
        ("messages ok".into(), format!("{} ({} with warmup{unsent})", s.messages_ok, s.messages_ok_total)),
        ("CALLERRORs".into(), s.call_errors.to_string()),
        ("timeouts".into(), s.timeouts.to_string()),
        ("disconnects".into(), format!("{} ({} reconnects)", s.disconnects, s.reconnects)),
        ("msgs/s".into(), format!("{:.1}", s.msgs_per_sec)),
        ("latency p50".into(), format!("{:.3} ms", s.latency_ms.p50)),
        ("latency p90".into(), format!("{:.3} ms", s.latency_ms.p90)),
        ("latency p99".into(), format!("{:.3} ms", s.latency_ms.p99)),
        ("latency p99.9".into(), format!("{:.3} ms", s.latency_ms.p99_9)),
        ("latency max".into(), format!("{:.3} ms", s.latency_ms.max)),
        ("latency mean".into(), format!("{:.3} ms", s.latency_ms.mean)),
    ]);
    for (code, n) in &s.call_errors_by_code {
        rows.push((format!("  CALLERROR {code}"), n.to_string()));
    }
    let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<width$}  {v}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(duration: f64) -> RunInfo {
        RunInfo {
            scenario: "events".into(),
            message: "meter-values".into(),
            mode: "closed-loop".into(),
            target_rate: None,
            url_template: "ws://h/{id}".into(),
            stations: 2,
            warmup_secs: 1.0,
            duration_secs: duration,
            setup_secs: 0.5,
        }
    }

    #[test]
    fn summary_percentiles_come_from_the_histogram_in_ms() {
        let mut h = new_histogram();
        // 1..=1000 ms, one sample each.
        for ms in 1..=1000u64 {
            h.record(ms * 1000).unwrap();
        }
        let s = summarize(info(10.0), &h, Counts { ok_total: 1200, ..Counts::default() });
        assert_eq!(s.messages_ok, 1000);
        assert_eq!(s.messages_ok_total, 1200);
        assert_eq!(s.msgs_per_sec, 100.0);
        let l = &s.latency_ms;
        assert_eq!(l.samples, 1000);
        // Three significant digits: within 0.1 % of the exact percentile.
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(close(l.p50, 500.0), "p50 {}", l.p50);
        assert!(close(l.p90, 900.0), "p90 {}", l.p90);
        assert!(close(l.p95, 950.0), "p95 {}", l.p95);
        assert!(close(l.p99, 990.0), "p99 {}", l.p99);
        assert!(close(l.p99_9, 999.0), "p99.9 {}", l.p99_9);
        assert!(close(l.max, 1000.0), "max {}", l.max);
        assert!(close(l.mean, 500.5), "mean {}", l.mean);
        assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p99_9 && l.p99_9 <= l.max);
    }

    #[test]
    fn a_slow_tail_shows_in_p99_but_not_p50() {
        let mut h = new_histogram();
        h.record_n(2_000, 980).unwrap(); // 2 ms
        h.record_n(250_000, 20).unwrap(); // 250 ms
        let l = latency_ms(&h);
        assert!((l.p50 - 2.0).abs() < 0.01, "{}", l.p50);
        assert!((l.p90 - 2.0).abs() < 0.01, "{}", l.p90);
        assert!((l.p99 - 250.0).abs() < 0.3, "{}", l.p99);
        assert!((l.max - 250.0).abs() < 0.3, "{}", l.max);
    }

    #[test]
    fn empty_histogram_gives_zeros_not_garbage() {
        let s = summarize(info(5.0), &new_histogram(), Counts { call_errors: 3, ..Counts::default() });
        assert_eq!(s.messages_ok, 0);
        assert_eq!(s.msgs_per_sec, 0.0);
        assert_eq!(s.latency_ms.samples, 0);
        assert_eq!(s.latency_ms.max, 0.0);
        assert_eq!(s.call_errors, 3);
    }

    #[test]
    fn shared_counters_feed_the_summary() {
        let sh = Shared::default();
        sh.record_ok(1500, false); // warmup: counted in total only
        sh.record_ok(1500, true);
        sh.record_ok(0, true); // clamped to 1 µs, still a sample
        sh.record_call_error("FormationViolation");
        sh.record_call_error("FormationViolation");
        sh.record_call_error("InternalError");
        let h = sh.latency.lock().unwrap().clone();
        let s = summarize(info(1.0), &h, sh.counts());
        assert_eq!(s.messages_ok, 2);
        assert_eq!(s.messages_ok_total, 3);
        assert_eq!(s.call_errors, 3);
        assert_eq!(s.call_errors_by_code["FormationViolation"], 2);
        assert_eq!(s.call_errors_by_code["InternalError"], 1);
    }

    #[test]
    fn json_and_table_carry_the_numbers() {
        let mut h = new_histogram();
        h.record(3_000).unwrap();
        let s = summarize(info(1.0), &h, Counts::default());
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["scenario"], "events");
        assert_eq!(v["messages_ok"], 1);
        assert_eq!(v["msgs_per_sec"], 1.0);
        assert!((v["latency_ms"]["p99"].as_f64().unwrap() - 3.0).abs() < 0.01);
        let t = render_table(&s);
        assert!(t.contains("msgs/s"), "{t}");
        assert!(t.contains("latency p99.9"), "{t}");
        assert!(t.contains("CALLERRORs"), "{t}");
    }
}
