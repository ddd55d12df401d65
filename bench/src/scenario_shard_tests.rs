//! A sharded `scenario` run merged equals one run of the whole: every station's figures are made
//! up deterministically from its index and recorded into its class's `Live` as the station tasks
//! do, once for the whole fleet and once per shard (each shard its slice of the stations, classes
//! assigned as `run` assigns them); `summarize` turns them into the report `run` writes, the
//! shards' are written as JSON files, and `merge::merge_any` (what `ocpp-bench merge` calls) reads
//! and merges them.

use super::*;
use crate::merge::{self, Merged};
use crate::shard::Shard;
use std::path::{Path, PathBuf};

/// Three classes: 1.6 with sessions and offline periods, 2.0.1 with sessions and flaky drops, and
/// idle 1.6 stations that only heartbeat.
const FILE: &str = r#"
[run]
stations = 23
duration_secs = 600
connect_rate = 10
seed = 3

[[class]]
name = "ac"
share = 50
protocol = "1.6"
connectors = 2
heartbeat_secs = 60
[class.sessions]
every_secs = "60-120"
length_secs = "120-300"
meter_interval_secs = 30
[class.offline]
every_secs = "100-200"
for_secs = 30

[[class]]
name = "dc"
share = 30
protocol = "2.0.1"
connectors = 1
heartbeat_secs = "60-120"
[class.sessions]
every_secs = 30
length_secs = "600-1200"
meter_interval_secs = 10
[class.flaky]
reconnect_every_secs = "100-300"

[[class]]
name = "idle"
share = 20
protocol = "1.6"
connectors = 1
heartbeat_secs = 300
"#;

/// The first shard's start, ms since the Unix epoch; the others start 100, 200 … ms later.
const T0: u64 = 1_700_000_000_000;

/// The raw samples (µs) by (class, histogram name), to check the percentiles against.
type Raw = BTreeMap<(String, String), Vec<u64>>;

/// Station `g`'s `k`-th latency: 1 µs to 50 ms, one in 50 from 1 to 3 s.
fn sample(g: u64, k: u64) -> Duration {
    let x = schedule::splitmix64(g * 1_000_003 + k);
    Duration::from_micros(if x.is_multiple_of(50) { 1_000_000 + x % 2_000_000 } else { 1 + x % 50_000 })
}

/// One station's figures going into its class's `Live` (and its samples into `raw`).
struct Sink<'a> {
    live: &'a mut Live,
    raw: &'a mut Raw,
    class: &'a str,
    g: u64,
    k: u64,
}

impl Sink<'_> {
    fn next(&mut self) -> Duration {
        self.k += 1;
        sample(self.g, self.k)
    }

    fn keep(&mut self, key: &str, d: Duration) {
        let us = (d.as_micros() as u64).max(1);
        self.raw.entry((self.class.to_string(), key.to_string())).or_default().push(us);
    }

    /// A latency recorded as `Station` records `connect`, `boot`, `recover`, `replay`.
    fn sample(&mut self, key: &str) {
        let d = self.next();
        self.live.record(key, d);
        self.keep(key, d);
    }

    /// A call's outcome as `Station::call` records it.
    fn call(&mut self, label: &str, out: Outcome) {
        let d = self.next();
        if matches!(out, Outcome::Result(_)) {
            self.keep(&format!("actions.{label}"), d);
        }
        self.live.outcome(label, &out, d);
    }

    fn ok(&mut self, label: &str) {
        self.call(label, Outcome::Result(Value::Null));
    }
}

/// Records station `g` (of class `class`) as its task would over a run: ramp, status, heartbeats
/// (some answered with a CALLERROR or not at all), sessions, flaky drops, offline periods with
/// queued and replayed messages, lost connections, the close. Returns whether its task was aborted.
fn record_station(c: &Class, live: &mut Live, raw: &mut Raw, g: u64) -> bool {
    let mut s = Sink { live, raw, class: &c.name, g, k: 0 };
    if g % 9 == 4 {
        s.live.count("ramp_failures", 1);
        s.live.fail(if g.is_multiple_of(2) { "refused" } else { "boot_rejected" });
        return false;
    }
    s.sample("connect");
    s.sample("boot");
    s.live.count("booted", 1);
    for _ in 0..c.connectors {
        s.ok("StatusNotification");
    }
    for k in 0..20 + g % 7 {
        match (g + k) % 13 {
            0 => s.call("Heartbeat", Outcome::CallError { code: "InternalError".into(), description: String::new() }),
            7 => s.call("Heartbeat", Outcome::Timeout),
            _ => s.ok("Heartbeat"),
        }
    }
    if c.sessions.is_some() {
        let (start, meter, stop) = match c.protocol {
            Protocol::V16 => ("StartTransaction", "MeterValues", "StopTransaction"),
            Protocol::V201 => ("TransactionEvent(Started)", "TransactionEvent(Updated)", "TransactionEvent(Ended)"),
        };
        for connector in 0..u64::from(c.connectors) {
            let sessions = 1 + (g + connector) % 3;
            for n in 0..sessions {
                s.live.count("sessions_started", 1);
                s.ok(start);
                for _ in 0..2 + (g + n) % 4 {
                    s.live.count("meter_values", 1);
                    s.ok(meter);
                }
                let at_end = n + 1 == sessions && g % 2 == 1;
                s.live.count(if at_end { "stopped_at_end" } else { "sessions_completed" }, 1);
                if (g + n) % 5 == 3 {
                    s.call(stop, Outcome::CallError { code: "FormationViolation".into(), description: String::new() });
                } else {
                    s.ok(stop);
                }
            }
        }
    }
    if c.flaky.is_some() {
        for i in 0..1 + g % 3 {
            s.live.count("flaky_drops", 1);
            if (g + i).is_multiple_of(4) {
                s.live.fail("reconnect_refused");
            }
            s.live.count("reconnects", 1);
            s.live.count("flaky_recovered", 1);
            s.sample("recover");
        }
    }
    if c.offline.is_some() {
        for _ in 0..1 + g % 2 {
            s.live.count("offline_periods", 1);
            let queued = 3 + g % 3;
            s.live.count("queued", queued);
            s.live.count("reconnects", 1);
            s.live.count("back_online", 1);
            for _ in 1..queued {
                s.ok("MeterValues");
                s.live.count("replayed", 1);
                s.sample("replay");
            }
            s.live.count("replay_failed", 1);
            if g.is_multiple_of(2) {
                s.live.fail("replay_no_transaction_id");
            } else {
                s.call("MeterValues", Outcome::Timeout);
            }
        }
    }
    if g % 5 == 2 {
        s.call("Heartbeat", Outcome::Closed("reset".into()));
        s.live.count("disconnects", 1);
        s.live.fail("lost_reset");
        s.live.count("reconnects", 1);
    }
    if g % 7 == 6 {
        s.live.count("left_unsent", 1);
    }
    if g % 11 == 10 {
        return true;
    }
    s.live.count(if g % 6 == 5 { "closed_unclean" } else { "closed_clean" }, 1);
    false
}

/// The report of a run of `file`'s stations `range` (all of them without `shard`), as `run` makes
/// it; with the raw samples.
fn run_of(sc: &Scenario, file: &str, range: std::ops::Range<u64>, shard: Option<Shard>) -> (ScenarioSummary, Raw) {
    let whole_n = u64::from(sc.stations);
    let assignment = scenario::assign(&sc.classes, whole_n);
    let live: Vec<Mutex<Live>> = sc.classes.iter().map(|_| Mutex::new(Live::default())).collect();
    let mut per_class = vec![0u64; sc.classes.len()];
    let mut aborted = vec![0u64; sc.classes.len()];
    let mut raw = Raw::new();
    for g in range.clone() {
        let k = assignment[g as usize];
        per_class[k] += 1;
        if record_station(&sc.classes[k], &mut live[k].lock().unwrap(), &mut raw, g) {
            aborted[k] += 1;
        }
    }
    let index = shard.map_or(1, |s| u64::from(s.index));
    let config = ScenarioConfig {
        file: file.into(),
        url_template: "ws://127.0.0.1:8180/ocpp/bench/{id}".into(),
        stations: whole_n,
        duration_secs: sc.duration_secs,
        connect_rate: sc.connect_rate,
        time_scale: sc.time_scale,
        seed: sc.seed.unwrap_or(1),
        timeout_secs: 10.0,
        // Per process: 1, 2, 3 addresses on the shards, so 6 for the whole.
        source_ips: shard.map_or(6, |s| s.index as usize),
        classes: class_configs(&sc.classes, &assignment),
    };
    let mut s = summarize(config, &sc.classes, &live, &per_class, &aborted).unwrap();
    // The shards start 0, 100, 200 ms apart; each ramps 2 s and runs 600 s.
    s.start_ms = T0 + (index - 1) * 100;
    s.ramp_secs = 2.0;
    s.end_ms = s.start_ms + 600_000;
    s.shard = shard.map(|sh| ShardReport {
        index: sh.index,
        count: sh.count,
        first_station: range.start + 1,
        stations: range.end - range.start,
    });
    (s, raw)
}

/// Writes the `count` shards' --json outputs of a run of scenario file `file` (its text) into `dir`,
/// named `{prefix}{i}.json`; returns the files, the whole run's summary and raw samples.
fn shard_files(
    dir: &Path,
    (file, text): (&str, &str),
    prefix: &str,
    count: u32,
) -> (Vec<PathBuf>, ScenarioSummary, Raw) {
    let sc = scenario::parse(file, text).unwrap();
    let (whole, raw) = run_of(&sc, file, 0..u64::from(sc.stations), None);
    let mut files = Vec::new();
    for index in 1..=count {
        let sh = Shard { index, count };
        let (s, _) = run_of(&sc, file, sh.range(u64::from(sc.stations)), Some(sh));
        let p = dir.join(format!("{prefix}{index}.json"));
        // As main.rs writes it.
        std::fs::write(&p, serde_json::to_string_pretty(&s).unwrap() + "\n").unwrap();
        files.push(p);
    }
    (files, whole, raw)
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ocpp-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn merged(files: &[PathBuf], allow_missing: bool) -> Result<ScenarioSummary> {
    match merge::merge_any(files, allow_missing)? {
        Merged::Scenario(s) => Ok(*s),
        _ => panic!("not merged as a scenario"),
    }
}

/// The latencies of histogram `key` in a class's report.
fn lat_of<'a>(r: &'a ClassReport, key: &str) -> &'a LatencyMs {
    match key {
        "connect" => &r.connect_ms,
        "boot" => &r.boot_ms,
        "recover" => &r.flaky.recover_ms,
        "replay" => &r.offline.replay_ms,
        _ => &r.actions[key.strip_prefix("actions.").expect("an action's histogram")].latency_ms,
    }
}

/// `got` is within the histogram's precision (3 significant digits: 0.1 %, and the report's
/// rounding to the µs) of the percentiles of the raw samples.
fn assert_close(what: &str, got: &LatencyMs, raw: &[u64]) {
    let mut raw = raw.to_vec();
    raw.sort_unstable();
    let n = raw.len();
    assert_eq!(got.samples, n as u64, "{what}: samples");
    let close = |got: f64, exact: f64| (got - exact).abs() <= exact * 0.001 + 0.001;
    let at = |q: f64| raw[((q * n as f64).ceil() as usize).clamp(1, n) - 1] as f64 / 1000.0;
    for (q, v) in [(0.5, got.p50), (0.9, got.p90), (0.95, got.p95), (0.99, got.p99), (0.999, got.p99_9), (1.0, got.max)]
    {
        assert!(close(v, at(q)), "{what}: p{q} {v} ms, the samples' {} ms", at(q));
    }
    let mean = raw.iter().sum::<u64>() as f64 / n as f64 / 1000.0;
    assert!(close(got.mean, mean), "{what}: mean {} ms, the samples' {mean} ms", got.mean);
}

#[test]
fn merged_scenario_shards_equal_one_run_of_the_whole() {
    let dir = tempdir("scenario-merge-eq");
    // 23 stations over 3 shards: 7, 8, 8; the files given out of order.
    let (mut files, whole, raw) = shard_files(&dir, ("s.toml", FILE), "s", 3);
    files.rotate_left(1);
    let m = merged(&files, false).unwrap();

    // The fixture exercises every count (so the comparisons below are not of zeros).
    let o = &whole.overall;
    assert_eq!(o.stations, 23);
    assert!(o.ramp_failures > 0 && o.booted + o.ramp_failures == 23);
    let (ss, f, fl) = (&o.sessions, &o.offline, &o.flaky);
    assert!(ss.started > 0 && ss.completed > 0 && ss.stopped_at_end > 0 && ss.meter_values > 0);
    assert!(f.periods > 0 && f.back_online > 0 && f.queued > 0 && f.replayed > 0 && f.replay_failed > 0);
    assert!(fl.drops > 0 && fl.recovered > 0 && o.disconnects > 0 && o.reconnects > 0);
    assert!(o.closed_clean > 0 && o.closed_unclean > 0 && o.offline.left_unsent > 0);
    for kind in [
        "refused",
        "boot_rejected",
        "callerror_InternalError",
        "callerror_FormationViolation",
        "timeout",
        "reconnect_refused",
        "replay_no_transaction_id",
        "lost_reset",
        "aborted",
    ] {
        assert!(o.failures_by_kind.get(kind).is_some_and(|&n| n > 0), "{kind}: {:?}", o.failures_by_kind);
    }
    assert!(o.actions.values().any(|a| a.closed > 0) && o.actions.values().any(|a| a.timeouts > 0));

    // Counts: exact, per class and overall.
    assert_eq!(m.classes.keys().collect::<Vec<_>>(), ["ac", "dc", "idle"]);
    for (name, r) in m.classes.iter().map(|(n, r)| (n.as_str(), r)).chain([("overall", &m.overall)]) {
        let w = if name == "overall" { &whole.overall } else { &whole.classes[name] };
        assert_eq!((r.stations, r.booted, r.ramp_failures), (w.stations, w.booted, w.ramp_failures), "{name}");
        assert_eq!(r.messages, w.messages, "{name}: messages");
        assert_eq!(r.actions.keys().collect::<Vec<_>>(), w.actions.keys().collect::<Vec<_>>(), "{name}");
        for (action, a) in &r.actions {
            let b = &w.actions[action];
            let counts = |a: &ActionReport| (a.ok, a.call_errors, a.timeouts, a.closed);
            assert_eq!(counts(a), counts(b), "{name}: {action}");
        }
        assert_eq!(
            (r.sessions.started, r.sessions.completed, r.sessions.stopped_at_end, r.sessions.meter_values),
            (w.sessions.started, w.sessions.completed, w.sessions.stopped_at_end, w.sessions.meter_values),
            "{name}: sessions"
        );
        assert_eq!((r.flaky.drops, r.flaky.recovered), (w.flaky.drops, w.flaky.recovered), "{name}: flaky");
        let off = |o: &OfflineReport| (o.periods, o.back_online, o.queued, o.replayed, o.replay_failed, o.left_unsent);
        assert_eq!(off(&r.offline), off(&w.offline), "{name}: offline");
        assert_eq!(
            (r.disconnects, r.reconnects, r.closed_clean, r.closed_unclean),
            (w.disconnects, w.reconnects, w.closed_clean, w.closed_unclean),
            "{name}: connection"
        );
        assert_eq!(r.failures_by_kind, w.failures_by_kind, "{name}: failures");
        assert_eq!(r.call_errors_by_code, w.call_errors_by_code, "{name}: CALLERRORs");
        // And the rest (the latencies) too: the merged histograms are the whole's.
        assert_eq!(r, w, "{name}");
    }
    // The stations of each class are the file's assignment of the whole fleet's.
    for cc in &m.config.classes {
        assert_eq!(m.classes[&cc.name].stations, cc.stations, "{}", cc.name);
    }

    // Histograms: count for count the whole run's, per class.
    assert_eq!(m.histograms.keys().collect::<Vec<_>>(), whole.histograms.keys().collect::<Vec<_>>());
    for (class, hs) in &whole.histograms {
        assert_eq!(m.histograms[class].keys().collect::<Vec<_>>(), hs.keys().collect::<Vec<_>>(), "{class}");
        for (key, text) in hs {
            let (a, b) = (merge::decode(&m.histograms[class][key]).unwrap(), merge::decode(text).unwrap());
            let counts = |h: &Histogram<u64>| {
                h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect::<Vec<_>>()
            };
            assert_eq!(counts(&a), counts(&b), "{class}.{key}");
        }
    }

    // Percentiles: within the histogram's precision of the raw samples', per class and overall.
    let mut all: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for ((class, key), samples) in &raw {
        assert_close(&format!("{class}.{key}"), lat_of(&m.classes[class], key), samples);
        all.entry(key.as_str()).or_default().extend(samples);
    }
    for (key, samples) in &all {
        assert_close(&format!("overall.{key}"), lat_of(&m.overall, key), samples);
    }
    assert!(all.contains_key("recover") && all.contains_key("replay") && all.contains_key("actions.Heartbeat"));

    // The run: the whole's config (source_ips summed), its window, which shards.
    assert_eq!(m.config, whole.config);
    assert_eq!((m.start_ms, m.end_ms), (T0, T0 + 200 + 600_000));
    // From the first connect (shard 1) to the last ramp's end (shard 3's, 200 ms later).
    assert_eq!(m.ramp_secs, 2.2);
    assert!(m.shard.is_none());
    let mr = m.merged.as_ref().unwrap();
    assert_eq!((mr.count, mr.shards.clone(), mr.hold_start_spread_secs), (3, vec![1, 2, 3], 0.2));
    assert!(mr.files[0].ends_with("s1.json"), "{:?}", mr.files);

    // The merged JSON reads back as a scenario summary and the table renders.
    let back: ScenarioSummary = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(back, m);
    let t = render_table(&m);
    assert!(t.contains("3 of 3 shards") && t.contains("CLASS dc") && t.contains("OVERALL"), "{t}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn one_shard_merged_alone_is_the_whole_run() {
    let dir = tempdir("scenario-merge-one");
    let (files, whole, _) = shard_files(&dir, ("s.toml", FILE), "s", 1);
    let m = merged(&files, false).unwrap();
    assert_eq!((&m.classes, &m.overall, &m.histograms), (&whole.classes, &whole.overall, &whole.histograms));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn scenario_merge_refuses_what_is_not_one_run() {
    let dir = tempdir("scenario-merge-refuse");
    let (files, _, _) = shard_files(&dir, ("s.toml", FILE), "s", 3);
    let err = |files: &[PathBuf]| format!("{:#}", merged(files, false).unwrap_err());

    // Two copies of one shard: the same file twice, or a copy of it.
    let e = err(&[files[0].clone(), files[0].clone(), files[1].clone(), files[2].clone()]);
    assert!(e.contains("both shard 1/3"), "{e}");
    let copy = dir.join("copy.json");
    std::fs::copy(&files[1], &copy).unwrap();
    let e = err(&[files[0].clone(), files[1].clone(), copy.clone(), files[2].clone()]);
    assert!(e.contains("both shard 2/3") && e.contains("copy.json"), "{e}");
    // A missing shard, unless asked.
    assert!(err(&files[..2]).contains("shards [3] of 3 are missing"));
    let partial = merged(&files[..2], true).unwrap();
    assert_eq!(partial.merged.unwrap().shards, vec![1, 2]);
    assert_eq!(partial.overall.stations, 15);

    // Shards of another scenario file: another name, a class's heartbeat, another seed.
    let other = FILE.replace("heartbeat_secs = 300", "heartbeat_secs = 120").replace("seed = 3", "seed = 4");
    let (others, _, _) = shard_files(&dir, ("t.toml", &other), "t", 3);
    let e = err(&[files[0].clone(), others[1].clone(), files[2].clone()]);
    assert!(e.contains("t2.json") && e.contains("s1.json") && e.contains("not shards of one run"), "{e}");
    assert!(e.contains(r#"file: "s.toml" in"#) && e.contains(r#""t.toml" in"#), "{e}");
    assert!(e.contains("seed: 3 in") && e.contains(r#"class "idle" heartbeat_secs: "300" in"#), "{e}");
    assert!(!e.contains("class \"ac\"") && !e.contains("source_ips"), "{e}");
    // The same file name with other contents (another machine's copy): the classes differ.
    let other = FILE.replace("share = 30", "share = 25").replace("share = 20", "share = 25");
    let (others, _, _) = shard_files(&dir, ("s.toml", &other), "u", 3);
    let e = err(&[files[0].clone(), others[1].clone(), files[2].clone()]);
    assert!(
        e.contains("not shards of one run")
            && e.contains(r#"class "dc" share: 30.0 in"#)
            && e.contains(r#"class "idle" share"#),
        "{e}"
    );
    // Another shard count.
    let (fours, _, _) = shard_files(&dir, ("s.toml", FILE), "f", 4);
    let e = err(&[files[0].clone(), fours[1].clone()]);
    assert!(e.contains("not one run"), "{e}");

    // A fleet shard with scenario shards, in either order.
    let mut fleet = crate::report::tests::sample_summary();
    fleet.shard = Some(ShardReport { index: 2, count: 3, first_station: 8, stations: 8 });
    let fp = dir.join("fleet2.json");
    std::fs::write(&fp, serde_json::to_string_pretty(&fleet).unwrap()).unwrap();
    let e = err(&[files[0].clone(), fp.clone(), files[2].clone()]);
    assert!(e.contains("fleet2.json is a \"fleet\" output") && e.contains("\"scenario\" one: not one run"), "{e}");
    let e = format!("{:#}", merge::merge_any(&[fp.clone(), files[0].clone()], false).err().expect("refused"));
    assert!(e.contains("s1.json: a \"scenario\" output, not a fleet one"), "{e}");

    // Not a shard's output: a whole run's, a merged report.
    let p = dir.join("p.json");
    let mut whole: ScenarioSummary = serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    whole.shard = None;
    std::fs::write(&p, serde_json::to_string(&whole).unwrap()).unwrap();
    assert!(err(std::slice::from_ref(&p)).contains("not written by a sharded run"));
    std::fs::write(&p, serde_json::to_string(&merged(&files, false).unwrap()).unwrap()).unwrap();
    assert!(err(std::slice::from_ref(&p)).contains("already a merged report"));
    // A broken histogram is named.
    let mut broken: ScenarioSummary = serde_json::from_str(&std::fs::read_to_string(&files[1]).unwrap()).unwrap();
    broken.histograms.get_mut("dc").unwrap().insert("boot".into(), "AAAA".into());
    std::fs::write(&p, serde_json::to_string(&broken).unwrap()).unwrap();
    let e = err(&[files[0].clone(), p.clone(), files[2].clone()]);
    assert!(e.contains("histogram dc.boot") && e.contains("not a V2 histogram"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
