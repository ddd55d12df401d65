//! A distributed run merged equals one run of the whole: the samples of a fleet are built
//! deterministically, recorded into one `Counters` (the whole) and into one per shard (each
//! station's samples into its shard's), turned into summaries with the histograms serialized,
//! written as JSON files, read back and merged by `merge::merge_files`.

use super::*;
use crate::merge;
use crate::report::per;
use crate::report::tests::sample_summary;
use crate::shard::Shard;
use clap::Parser;

const N: u64 = 10;
const PER_STATION: u64 = 300;

/// Station `g`'s `k`-th latency, µs: spread from 1 µs to ~3 s with a slow tail.
fn sample_us(g: u64, k: u64) -> u64 {
    let x = schedule::splitmix64(g * 1_000_003 + k);
    if x.is_multiple_of(100) {
        1_000_000 + x % 2_000_000
    } else {
        1 + x % 50_000
    }
}

/// Records station `g`'s samples as the fleet's station tasks do.
fn record_station(c: &Counters, g: u64) {
    record(&c.connect, Duration::from_micros(sample_us(g, 10_000)));
    record(&c.boot, Duration::from_micros(sample_us(g, 10_001)));
    c.booted.fetch_add(1, Relaxed);
    if g % 4 == 3 {
        c.ramp_failed.fetch_add(1, Relaxed);
        bump(&c.ramp_failures, if g % 8 == 3 { "refused" } else { "http_401" });
    }
    for k in 0..PER_STATION {
        let action = [HEARTBEAT, START, METER, STOP][(k % 4) as usize];
        record(c.action_hist(action), Duration::from_micros(sample_us(g, k)));
        c.actions[action].ok.fetch_add(1, Relaxed);
        c.hold_ok.fetch_add(1, Relaxed);
        c.hold_scheduled.fetch_add(1, Relaxed);
    }
    if g.is_multiple_of(3) {
        bump(&c.call_errors_by_code, "InternalError");
        c.actions[HEARTBEAT].call_errors.fetch_add(1, Relaxed);
    }
    c.storm_entered.fetch_add(1, Relaxed);
    c.storm_completed.fetch_add(1, Relaxed);
    c.storm_attempts.fetch_add(1 + g % 2, Relaxed);
    record(&c.storm_connect, Duration::from_micros(sample_us(g, 20_000)));
    record(&c.storm_boot, Duration::from_micros(sample_us(g, 20_001)));
    record(&c.storm_recover, Duration::from_micros(sample_us(g, 20_002)));
    c.closed_clean.fetch_add(1, Relaxed);
}

/// The summary of `c` as `run` builds it: counters, percentiles, serialized histograms.
fn summary_of(c: &Counters, shard: Option<(Shard, std::ops::Range<u64>)>, windows: Windows) -> FleetSummary {
    let mut s = sample_summary();
    s.config.stations = N;
    s.ramp.booted = c.booted.load(Relaxed);
    s.ramp.connected = s.ramp.booted;
    s.ramp.failures = c.ramp_failed.load(Relaxed);
    s.ramp.failures_by_kind = c.ramp_failures.lock().unwrap().clone();
    s.ramp.connect_ms = lat(&c.connect);
    s.ramp.boot_ms = lat(&c.boot);
    s.hold.ok = c.hold_ok.load(Relaxed);
    s.hold.scheduled = c.hold_scheduled.load(Relaxed);
    s.hold.timeouts = 0;
    s.timeouts = 0;
    s.actions = ACTIONS.iter().zip(&c.actions).map(|(name, a)| (name.to_string(), action_report(a))).collect();
    s.call_errors_by_code = c.call_errors_by_code.lock().unwrap().clone();
    let st = s.storm.as_mut().unwrap();
    st.stations = c.storm_entered.load(Relaxed);
    st.completed = c.storm_completed.load(Relaxed);
    st.attempts = c.storm_attempts.load(Relaxed);
    st.connect_ms = lat(&c.storm_connect);
    st.boot_ms = lat(&c.storm_boot);
    st.recover_ms = lat(&c.storm_recover);
    s.close.clean = c.closed_clean.load(Relaxed);
    s.shard = shard.map(|(sh, r)| ShardReport {
        index: sh.index,
        count: sh.count,
        first_station: r.start + 1,
        stations: r.end - r.start,
    });
    s.windows = windows;
    s.histograms = histograms(c, true);
    s
}

fn windows(offset_ms: u64) -> Windows {
    let t = 1_700_000_000_000 + offset_ms;
    Windows {
        ramp_start_ms: t,
        ramp_end_ms: t + 2_000,
        hold_start_ms: t + 2_100,
        hold_end_ms: t + 12_100,
        storm_start_ms: Some(t + 13_000),
        storm_end_ms: Some(t + 14_500),
    }
}

/// Writes the shards' outputs of a run of `count` shards into `dir`; returns the files and the
/// whole run's summary.
fn shard_files(dir: &std::path::Path, count: u32) -> (Vec<std::path::PathBuf>, FleetSummary) {
    let whole = Counters::default();
    for g in 0..N {
        record_station(&whole, g);
    }
    let whole = summary_of(&whole, None, windows(0));
    let mut files = Vec::new();
    for index in 1..=count {
        let sh = Shard { index, count };
        let c = Counters::default();
        for g in sh.range(N) {
            record_station(&c, g);
        }
        // The shards started 0, 100, 200 … ms apart.
        let s = summary_of(&c, Some((sh, sh.range(N))), windows(u64::from(index - 1) * 100));
        let path = dir.join(format!("shard{index}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&s).unwrap()).unwrap();
        files.push(path);
    }
    (files, whole)
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ocpp-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn hist_of(s: &FleetSummary, key: &str) -> Histogram<u64> {
    merge::decode(&s.histograms[key]).unwrap()
}

#[test]
fn merged_shards_equal_one_run_of_the_whole() {
    let dir = tempdir("merge-eq");
    let (files, whole) = shard_files(&dir, 3); // 10 stations over 3 shards: 3, 3, 4
    let m = merge::merge_files(&files, false).unwrap();

    // Counts: exact.
    assert_eq!(m.ramp.booted, whole.ramp.booted);
    assert_eq!(m.ramp.failures, whole.ramp.failures);
    assert_eq!(m.ramp.failures_by_kind, whole.ramp.failures_by_kind);
    assert_eq!((m.hold.ok, m.hold.scheduled), (whole.hold.ok, whole.hold.scheduled));
    assert_eq!(m.call_errors_by_code, whole.call_errors_by_code);
    assert_eq!(m.close, whole.close);
    for name in ACTIONS {
        let (a, b) = (&m.actions[name], &whole.actions[name]);
        assert_eq!((a.ok, a.call_errors, a.timeouts, a.closed), (b.ok, b.call_errors, b.timeouts, b.closed), "{name}");
    }
    let (ms, ws) = (m.storm.as_ref().unwrap(), whole.storm.as_ref().unwrap());
    assert_eq!((ms.stations, ms.completed, ms.attempts), (ws.stations, ws.completed, ws.attempts));

    // Histograms: the merged one is the whole's, count for count, so every percentile is the
    // same; both are within the histogram's precision (3 significant digits: 0.1 %) of the
    // exact percentile of the raw samples.
    for key in whole.histograms.keys() {
        let (a, b) = (hist_of(&m, key), hist_of(&whole, key));
        assert_eq!(a.len(), b.len(), "{key}");
        assert!(
            a.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .eq(b.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value()))),
            "{key}: same counts at every value"
        );
    }
    for name in ACTIONS.iter().filter(|n| **n != "StatusNotification") {
        assert_eq!(m.actions[*name].latency_ms, whole.actions[*name].latency_ms, "{name}");
    }
    assert_eq!(m.ramp.connect_ms, whole.ramp.connect_ms);
    assert_eq!(ms.recover_ms, ws.recover_ms);
    let mut raw: Vec<u64> = (0..N).flat_map(|g| (0..PER_STATION).step_by(4).map(move |k| sample_us(g, k))).collect();
    raw.sort_unstable();
    let hb = &m.actions["Heartbeat"].latency_ms;
    assert_eq!(hb.samples, raw.len() as u64);
    for (q, got) in [(0.5, hb.p50), (0.99, hb.p99), (1.0, hb.max)] {
        let exact = raw[((q * raw.len() as f64).ceil() as usize).clamp(1, raw.len()) - 1] as f64 / 1000.0;
        assert!((got - exact).abs() <= exact * 0.001 + 0.001, "p{q}: {got} vs {exact} ms");
    }

    // Rates over the combined windows: shards started 0/100/200 ms apart, each ramp 2 s.
    assert_eq!(m.ramp.secs, 2.2);
    assert_eq!(m.ramp.achieved_rate, per(N as f64, 2.2));
    assert_eq!(m.hold.achieved_msgs_per_sec, per((N * PER_STATION) as f64, 10.0));
    assert_eq!(ms.secs, 1.7);
    assert_eq!(m.merged.as_ref().unwrap().shards, vec![1, 2, 3]);
    assert_eq!(m.merged.as_ref().unwrap().hold_start_spread_secs, 0.2);
    assert_eq!(m.merged.as_ref().unwrap().storm_start_spread_secs, Some(0.2));
    assert_eq!(m.config, whole.config);
    assert!(m.shard.is_none());

    // The merged JSON reads back as a fleet summary and the table renders.
    let v: FleetSummary = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(v, m);
    let t = report::render_table(&m);
    assert!(t.contains("3 of 3 shards"), "{t}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn merge_refuses_what_is_not_one_run() {
    let dir = tempdir("merge-refuse");
    let (files, _) = shard_files(&dir, 2);
    let err =
        |files: &[std::path::PathBuf], allow: bool| format!("{:#}", merge::merge_files(files, allow).unwrap_err());

    // The same shard twice.
    assert!(err(&[files[0].clone(), files[0].clone(), files[1].clone()], false).contains("both shard 1/2"));
    // A missing shard, unless asked.
    assert!(err(&files[..1], false).contains("missing"));
    let partial = merge::merge_files(&files[..1], true).unwrap();
    assert_eq!(partial.merged.unwrap().shards, vec![1]);
    // Another config.
    let mut other: FleetSummary = serde_json::from_str(&std::fs::read_to_string(&files[1]).unwrap()).unwrap();
    other.config.heartbeat_rate = 5.0;
    let p = dir.join("other.json");
    std::fs::write(&p, serde_json::to_string(&other).unwrap()).unwrap();
    let e = err(&[files[0].clone(), p.clone()], false);
    assert!(e.contains("configs differ") && e.contains("heartbeat_rate"), "{e}");
    // Another shard count.
    other = serde_json::from_str(&std::fs::read_to_string(&files[1]).unwrap()).unwrap();
    other.shard.as_mut().unwrap().count = 3;
    std::fs::write(&p, serde_json::to_string(&other).unwrap()).unwrap();
    assert!(err(&[files[0].clone(), p.clone()], false).contains("not one run"));
    // Not a shard, or a merged report.
    other = serde_json::from_str(&std::fs::read_to_string(&files[1]).unwrap()).unwrap();
    other.shard = None;
    std::fs::write(&p, serde_json::to_string(&other).unwrap()).unwrap();
    assert!(err(std::slice::from_ref(&p), false).contains("not written by a sharded run"));
    let merged = merge::merge_files(&files, false).unwrap();
    std::fs::write(&p, serde_json::to_string(&merged).unwrap()).unwrap();
    assert!(err(std::slice::from_ref(&p), false).contains("already a merged report"));
    // A broken histogram.
    other = serde_json::from_str(&std::fs::read_to_string(&files[1]).unwrap()).unwrap();
    other.histograms.insert("ramp.boot".into(), "AAAA".into());
    std::fs::write(&p, serde_json::to_string(&other).unwrap()).unwrap();
    let e = err(&[files[0].clone(), p.clone()], false);
    assert!(e.contains("ramp.boot") && e.contains("not a V2 histogram"), "{e}");
    // Not JSON, another scenario, no such file.
    std::fs::write(&p, "{oops").unwrap();
    assert!(err(std::slice::from_ref(&p), false).contains("not JSON"));
    std::fs::write(&p, r#"{"scenario":"events"}"#).unwrap();
    assert!(err(std::slice::from_ref(&p), false).contains("\"events\" output"));
    std::fs::write(&p, r#"{"scenario":"fleet","config":{}}"#).unwrap();
    assert!(err(std::slice::from_ref(&p), false).contains("not a fleet output"));
    assert!(err(&[dir.join("nope.json")], false).contains("reading"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_shard_runs_its_slice_at_its_share() {
    let cli = |extra: &[&str]| {
        let cli = crate::cli::Cli::try_parse_from(["ocpp-bench", "fleet"].iter().chain(extra)).unwrap();
        let crate::cli::Command::Fleet(a) = cli.command else { panic!("not fleet") };
        a
    };
    let base = ["--stations", "10", "--connect-rate", "100", "--heartbeat-rate", "50", "--storm", "--storm-rate", "20"];
    let mut a = base.to_vec();
    a.extend(["--shard", "3/3", "--connect-concurrency", "10"]);
    let (s, r) = shard_args(cli(&a)).unwrap();
    assert_eq!((r, s.stations), (6..10, 4));
    assert_eq!((s.connect_rate, s.heartbeat_rate, s.storm_rate, s.connect_concurrency), (40.0, 20.0, Some(8.0), 4));
    let (s, r) = shard_args(cli(&base)).unwrap();
    assert_eq!((r, s.stations, s.connect_rate), (0..10, 10, 100.0));
    // More shards than stations: 2 stations over 3 shards are 0..0, 0..1, 1..2.
    let e = shard_args(cli(&["--stations", "2", "--shard", "1/3"])).unwrap_err().to_string();
    assert!(e.contains("leave this shard none"), "{e}");
    assert_eq!(shard_args(cli(&["--stations", "2", "--shard", "2/3"])).unwrap().1, 0..1);
    assert_eq!(shard_args(cli(&["--stations", "2", "--shard", "3/3"])).unwrap().1, 1..2);
}

#[test]
fn windows_are_wall_clock_milliseconds() {
    let base = (Instant::now(), std::time::UNIX_EPOCH + Duration::from_secs(1_000));
    assert_eq!(unix_ms(base, base.0), 1_000_000);
    assert_eq!(unix_ms(base, base.0 + Duration::from_millis(1_500)), 1_001_500);
}
