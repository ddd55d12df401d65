//! `ocpp-bench merge`: one report from the --json outputs of a distributed `fleet` run.
//!
//! Counts are summed exactly; the latency histograms (written by each shard in HdrHistogram's V2
//! serialized form, base64) are added, so the percentiles are those of the merged histogram; rates
//! are computed over the shards' combined wall-clock windows:
//!
//! * ramp: `secs` = latest ramp end − earliest ramp start, `achieved_rate` = Σ booted / secs;
//! * hold: every shard holds for the same --hold, so `achieved_msgs_per_sec` = Σ ok / --hold and
//!   `target_msgs_per_sec` = Σ of the shards' targets; `merged.hold_start_spread_secs` says how far
//!   apart the holds began (the sum is a fleet rate only if they overlapped);
//! * storm: `secs` = latest last completion − earliest first reconnect, `rate_per_sec` =
//!   Σ completed / secs (`merged.storm_start_spread_secs` says how far apart the storms began).
//!
//! The server report (it is one server) is that of the shard whose ramp ended last, its
//! `rss_per_session_kib` recomputed over all shards' connections; the harness's RSS is summed over the processes, its open-file limit the smallest, aborted tasks summed.

use crate::report::{
    per, ActionReport, CloseReport, FleetSummary, HarnessReport, HoldReport, MergedReport, RampReport, ShardReport,
    StormReport, Windows,
};
use crate::stats::{latency_ms, new_histogram, LatencyMs, Summary};
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A histogram in HdrHistogram's V2 serialized form, base64 (standard alphabet, padded).
pub fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2Serializer::new().serialize(h, &mut bytes).expect("serializing into a Vec cannot fail");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The inverse of [`encode`].
pub fn decode(text: &str) -> Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim()).context("not base64")?;
    Deserializer::new().deserialize(&mut bytes.as_slice()).map_err(|e| anyhow!("not a V2 histogram: {e:?}"))
}

/// The histograms of a run by name, encoded.
pub fn encode_all<'a>(hists: impl IntoIterator<Item = (String, &'a Histogram<u64>)>) -> BTreeMap<String, String> {
    hists.into_iter().map(|(name, h)| (name, encode(h))).collect()
}

/// Reads one output: its scenario and its JSON.
fn read_value(path: &Path) -> Result<(String, serde_json::Value)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    match v.get("scenario").and_then(|s| s.as_str()) {
        Some(s @ ("fleet" | "events" | "scenario")) => Ok((s.to_string(), v)),
        Some(other) => {
            bail!("{}: a {other:?} output; merge takes `fleet`, `events` or `scenario` --shard outputs", path.display())
        }
        None => bail!("{}: not an ocpp-bench output (no \"scenario\")", path.display()),
    }
}

/// Reads one shard's `fleet` output.
pub fn read(path: &Path) -> Result<FleetSummary> {
    let (scenario, v) = read_value(path)?;
    if scenario != "fleet" {
        bail!("{}: a {scenario:?} output, not a fleet one", path.display());
    }
    serde_json::from_value(v)
        .with_context(|| format!("{}: not a fleet output of this ocpp-bench version", path.display()))
}

/// What `merge` made: the summary of the scenario the files are of.
pub enum Merged {
    Fleet(Box<FleetSummary>),
    Events(Box<Summary>),
    Scenario(Box<crate::scenario_run::ScenarioSummary>),
}

/// Reads the files and merges them as the scenario they are of (all must be of one).
pub fn merge_any(files: &[PathBuf], allow_missing: bool) -> Result<Merged> {
    let Some(first) = files.first() else { bail!("no file to merge") };
    let (scenario, _) = read_value(first)?;
    if scenario == "fleet" {
        return Ok(Merged::Fleet(Box::new(merge_files(files, allow_missing)?)));
    }
    if scenario == "scenario" {
        let mut inputs = Vec::with_capacity(files.len());
        for f in files {
            let (sc, v) = read_value(f)?;
            if sc != scenario {
                bail!("{} is a {sc:?} output, {} a {scenario:?} one: not one run", f.display(), first.display());
            }
            let s: crate::scenario_run::ScenarioSummary = serde_json::from_value(v)
                .with_context(|| format!("{}: not a scenario output of this ocpp-bench version", f.display()))?;
            inputs.push((f.display().to_string(), s));
        }
        let shards = check_shards(
            &inputs.iter().map(|(n, s)| (n.as_str(), s.shard.as_ref(), s.merged.is_some())).collect::<Vec<_>>(),
            allow_missing,
        )?;
        return Ok(Merged::Scenario(Box::new(crate::scenario_run::merge(inputs, shards)?)));
    }
    let mut inputs = Vec::with_capacity(files.len());
    for f in files {
        let (sc, v) = read_value(f)?;
        if sc != scenario {
            bail!("{} is a {sc:?} output, {} an {scenario:?} one: not one run", f.display(), first.display());
        }
        let s: Summary = serde_json::from_value(v)
            .with_context(|| format!("{}: not an events output of this ocpp-bench version", f.display()))?;
        inputs.push((f.display().to_string(), s));
    }
    Ok(Merged::Events(Box::new(merge_events(inputs, allow_missing)?)))
}

/// The shard checks of both scenarios: every input a shard of one count, each once; the indices
/// merged. `inputs`: (file, shard, is a merged report).
fn check_shards(inputs: &[(&str, Option<&ShardReport>, bool)], allow_missing: bool) -> Result<Vec<u32>> {
    let Some(&(first_name, _, _)) = inputs.first() else { bail!("no file to merge") };
    let mut count = None;
    let mut seen: BTreeMap<u32, &str> = BTreeMap::new();
    for &(name, shard, merged) in inputs {
        if merged {
            bail!("{name} is already a merged report; merge the shards' own outputs");
        }
        let Some(sh) = shard else { bail!("{name} was not written by a sharded run (--shard I/N)") };
        let n = *count.get_or_insert(sh.count);
        if sh.count != n {
            bail!("{name} is shard {}/{} but {first_name} is of {n} shards: not one run", sh.index, sh.count);
        }
        if let Some(other) = seen.insert(sh.index, name) {
            bail!("{other} and {name} are both shard {}/{n}: each shard once", sh.index);
        }
    }
    let n = count.unwrap_or(0);
    let missing: Vec<u32> = (1..=n).filter(|i| !seen.contains_key(i)).collect();
    if !missing.is_empty() {
        if !allow_missing {
            bail!(
                "shards {missing:?} of {n} are missing (give every shard's file, or --allow-missing to merge the {} \
                 given)",
                inputs.len()
            );
        }
        eprintln!("warning: merging {} of {n} shards; missing {missing:?}", inputs.len());
    }
    Ok(seen.into_keys().collect())
}

/// Merges `events --shard` outputs: counts summed, histograms added, msgs/s = Σ messages_ok /
/// duration (every shard measures as long; `merged.hold_start_spread_secs` says how far apart the
/// measured windows began).
pub fn merge_events(inputs: Vec<(String, Summary)>, allow_missing: bool) -> Result<Summary> {
    let shards = check_shards(
        &inputs.iter().map(|(n, s)| (n.as_str(), s.shard.as_ref(), s.merged.is_some())).collect::<Vec<_>>(),
        allow_missing,
    )?;
    let (first_name, first) = &inputs[0];
    let same = |s: &Summary| {
        let mut r = s.run.clone();
        r.setup_secs = first.run.setup_secs;
        r
    };
    let mut h = new_histogram();
    let mut by_code = BTreeMap::new();
    for (name, s) in &inputs {
        if same(s) != first.run {
            bail!(
                "{name} and {first_name} are not shards of one run; what they were asked differs: {:?} against {:?}",
                s.run,
                first.run
            );
        }
        let sh = decode(&s.histogram).with_context(|| format!("{name}: histogram"))?;
        h.add(&sh).map_err(|e| anyhow!("{name}: histogram does not fit: {e:?}"))?;
        add_kinds(&mut by_code, &s.call_errors_by_code);
    }
    let sum = |f: &dyn Fn(&Summary) -> u64| -> u64 { inputs.iter().map(|(_, s)| f(s)).sum() };
    let mut run = first.run.clone();
    run.setup_secs = inputs.iter().map(|(_, s)| s.run.setup_secs).fold(0.0, f64::max);
    let counts = crate::stats::Counts {
        call_errors: sum(&|s| s.call_errors),
        call_errors_by_code: by_code,
        timeouts: sum(&|s| s.timeouts),
        disconnects: sum(&|s| s.disconnects),
        reconnects: sum(&|s| s.reconnects),
        unsent: sum(&|s| s.unsent),
        stations_ready: sum(&|s| s.stations_ready),
        setup_failures: sum(&|s| s.setup_failures),
        ok_total: sum(&|s| s.messages_ok_total),
    };
    let mut m = crate::stats::summarize(run, &h, counts);
    let starts = inputs.iter().map(|(_, s)| s.window_start_ms);
    m.window_start_ms = starts.clone().min().unwrap_or(0);
    m.window_end_ms = inputs.iter().map(|(_, s)| s.window_end_ms).max().unwrap_or(0);
    m.merged = Some(MergedReport {
        count: first.shard.as_ref().map_or(0, |s| s.count),
        shards,
        files: inputs.iter().map(|(n, _)| n.clone()).collect(),
        hold_start_spread_secs: starts.max().unwrap_or(0).saturating_sub(m.window_start_ms) as f64 / 1000.0,
        storm_start_spread_secs: None,
    });
    Ok(m)
}

/// Reads and merges the files.
pub fn merge_files(files: &[PathBuf], allow_missing: bool) -> Result<FleetSummary> {
    let mut inputs = Vec::with_capacity(files.len());
    for f in files {
        inputs.push((f.display().to_string(), read(f)?));
    }
    merge(inputs, allow_missing)
}

fn add_kinds(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, n) in from {
        *into.entry(k.clone()).or_default() += n;
    }
}

/// The config fields in which two shards of one run may differ.
const PER_PROCESS_CONFIG: [&str; 1] = ["source_ips"];

/// Merges shard outputs (name, summary); refuses outputs of different runs, duplicates, non-shards.
pub fn merge(mut inputs: Vec<(String, FleetSummary)>, allow_missing: bool) -> Result<FleetSummary> {
    let shards = check_shards(
        &inputs.iter().map(|(n, s)| (n.as_str(), s.shard.as_ref(), s.merged.is_some())).collect::<Vec<_>>(),
        allow_missing,
    )?;
    inputs.sort_by_key(|(_, s)| s.shard.as_ref().map_or(0, |sh| sh.index));
    let (first_name, first) = &inputs[0];
    let count = first.shard.as_ref().map_or(0, |sh| sh.count);
    let config_of = |s: &FleetSummary| -> Result<serde_json::Map<String, serde_json::Value>> {
        let serde_json::Value::Object(mut m) = serde_json::to_value(&s.config)? else {
            bail!("config is not an object");
        };
        for k in PER_PROCESS_CONFIG {
            m.remove(k);
        }
        Ok(m)
    };
    let base = config_of(first)?;
    for (name, s) in &inputs {
        if s.histograms.is_empty() {
            bail!("{name} has no histograms (written by an ocpp-bench without merge support?)");
        }
        let c = config_of(s)?;
        let differ: Vec<String> = base
            .iter()
            .filter(|(k, v)| c.get(*k) != Some(v))
            .map(|(k, v)| format!("{k} ({v} in {first_name}, {} in {name})", c.get(k).cloned().unwrap_or_default()))
            .collect();
        if !differ.is_empty() {
            bail!("{name} and {first_name} are not shards of one run; their configs differ: {}", differ.join(", "));
        }
        if s.storm.is_some() != first.storm.is_some() {
            bail!("{name} and {first_name}: one has a storm report and the other not");
        }
    }

    // Histograms: every name any shard has, added.
    let mut hists: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    for (name, s) in &inputs {
        for (key, text) in &s.histograms {
            let h = decode(text).with_context(|| format!("{name}: histogram {key:?}"))?;
            let into = hists.entry(key.clone()).or_insert_with(new_histogram);
            into.add(&h).map_err(|e| anyhow!("{name}: histogram {key:?} does not fit: {e:?}"))?;
        }
    }
    let lat = |key: &str| -> LatencyMs { latency_ms(hists.get(key).unwrap_or(&new_histogram())) };
    // The connect's steps, from the shards' `{phase}.tcp|tls|ws` histograms (absent: older shards).
    let steps = |phase: &str, of: &dyn Fn(&FleetSummary) -> Option<&crate::report::StepsMs>| {
        let ws = lat(&format!("{phase}.ws"));
        let tls = lat(&format!("{phase}.tls"));
        (ws.samples > 0).then(|| crate::report::StepsMs {
            tcp_ms: lat(&format!("{phase}.tcp")),
            tls_resumed: (tls.samples > 0)
                .then(|| inputs.iter().filter_map(|(_, s)| of(s).and_then(|st| st.tls_resumed)).sum()),
            tls_ms: (tls.samples > 0).then_some(tls),
            ws_ms: ws,
        })
    };
    let sum = |f: &dyn Fn(&FleetSummary) -> u64| -> u64 { inputs.iter().map(|(_, s)| f(s)).sum() };
    let min_of = |f: &dyn Fn(&Windows) -> u64| inputs.iter().map(|(_, s)| f(&s.windows)).min().unwrap_or(0);
    let max_of = |f: &dyn Fn(&Windows) -> u64| inputs.iter().map(|(_, s)| f(&s.windows)).max().unwrap_or(0);
    let secs = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1000.0;

    let windows = Windows {
        ramp_start_ms: min_of(&|w| w.ramp_start_ms),
        ramp_end_ms: max_of(&|w| w.ramp_end_ms),
        hold_start_ms: min_of(&|w| w.hold_start_ms),
        hold_end_ms: max_of(&|w| w.hold_end_ms),
        storm_start_ms: inputs.iter().filter_map(|(_, s)| s.windows.storm_start_ms).min(),
        storm_end_ms: inputs.iter().filter_map(|(_, s)| s.windows.storm_end_ms).max(),
    };

    let mut ramp_kinds = BTreeMap::new();
    let mut errors_by_code = BTreeMap::new();
    let mut storm_kinds = BTreeMap::new();
    for (_, s) in &inputs {
        add_kinds(&mut ramp_kinds, &s.ramp.failures_by_kind);
        add_kinds(&mut errors_by_code, &s.call_errors_by_code);
        if let Some(st) = &s.storm {
            add_kinds(&mut storm_kinds, &st.failures_by_kind);
        }
    }
    let ramp_secs = secs(windows.ramp_start_ms, windows.ramp_end_ms);
    let booted = sum(&|s| s.ramp.booted);
    let ramp = RampReport {
        secs: ramp_secs,
        booted,
        connected: sum(&|s| s.ramp.connected),
        failures: sum(&|s| s.ramp.failures),
        failures_by_kind: ramp_kinds,
        achieved_rate: per(booted as f64, ramp_secs),
        connect_ms: lat("ramp.connect"),
        steps: steps("ramp", &|s| s.ramp.steps.as_ref()),
        boot_ms: lat("ramp.boot"),
    };
    let hold_ok = sum(&|s| s.hold.ok);
    let hold = HoldReport {
        secs: first.hold.secs,
        target_msgs_per_sec: (inputs.iter().map(|(_, s)| s.hold.target_msgs_per_sec).sum::<f64>() * 10.0).round()
            / 10.0,
        achieved_msgs_per_sec: per(hold_ok as f64, first.hold.secs),
        scheduled: sum(&|s| s.hold.scheduled),
        ok: hold_ok,
        unsent: sum(&|s| s.hold.unsent),
        timeouts: sum(&|s| s.hold.timeouts),
        call_errors: sum(&|s| s.hold.call_errors),
        disconnects: sum(&|s| s.hold.disconnects),
        reconnects: sum(&|s| s.hold.reconnects),
    };
    let mut actions = BTreeMap::new();
    for name in inputs.iter().flat_map(|(_, s)| s.actions.keys()) {
        if actions.contains_key(name) {
            continue;
        }
        let get = |f: &dyn Fn(&ActionReport) -> u64| -> u64 {
            inputs.iter().filter_map(|(_, s)| s.actions.get(name)).map(f).sum()
        };
        let report = ActionReport {
            ok: get(&|a| a.ok),
            call_errors: get(&|a| a.call_errors),
            timeouts: get(&|a| a.timeouts),
            closed: get(&|a| a.closed),
            latency_ms: lat(&format!("actions.{name}")),
        };
        actions.insert(name.clone(), report);
    }
    let storm = first.storm.is_some().then(|| {
        let st = |f: &dyn Fn(&StormReport) -> u64| -> u64 {
            inputs.iter().filter_map(|(_, s)| s.storm.as_ref()).map(f).sum()
        };
        let completed = st(&|r| r.completed);
        let storm_secs = match (windows.storm_start_ms, windows.storm_end_ms) {
            (Some(a), Some(b)) => secs(a, b),
            _ => 0.0,
        };
        StormReport {
            stations: st(&|r| r.stations),
            completed,
            gave_up: st(&|r| r.gave_up),
            attempts: st(&|r| r.attempts),
            failures_by_kind: storm_kinds,
            secs: storm_secs,
            rate_per_sec: per(completed as f64, storm_secs),
            connect_ms: lat("storm.connect"),
            steps: steps("storm", &|s| s.storm.as_ref().and_then(|st| st.steps.as_ref())),
            boot_ms: lat("storm.boot"),
            recover_ms: lat("storm.recover"),
        }
    });
    // One server: the report of the shard whose ramp ended last (its after-ramp sample saw every
    // shard's sessions), the per-session RSS over the whole fleet's connections.
    let server = inputs
        .iter()
        .filter(|(_, s)| s.server.is_some())
        .max_by_key(|(_, s)| s.windows.ramp_end_ms)
        .and_then(|(_, s)| s.server.clone())
        .map(|mut sv| {
            sv.rss_per_session_kib =
                per((sv.rss_after_ramp_mib - sv.rss_before_ramp_mib).max(0.0) * 1024.0, ramp.connected as f64);
            sv
        });
    let mut config = first.config.clone();
    config.source_ips = inputs.iter().map(|(_, s)| s.config.source_ips).sum();
    let hold_starts = inputs.iter().map(|(_, s)| s.windows.hold_start_ms);
    let spread = secs(hold_starts.clone().min().unwrap_or(0), hold_starts.max().unwrap_or(0));
    let storm_starts: Vec<u64> = inputs.iter().filter_map(|(_, s)| s.windows.storm_start_ms).collect();
    let storm_spread = match (storm_starts.iter().min(), storm_starts.iter().max()) {
        (Some(&a), Some(&b)) => Some(secs(a, b)),
        _ => None,
    };
    let sum_f = |f: &dyn Fn(&HarnessReport) -> f64| {
        (inputs.iter().map(|(_, s)| f(&s.harness)).sum::<f64>() * 10.0).round() / 10.0
    };
    Ok(FleetSummary {
        scenario: "fleet".into(),
        config,
        ramp,
        hold,
        actions,
        storm,
        close: CloseReport { clean: sum(&|s| s.close.clean), unclean: sum(&|s| s.close.unclean) },
        timeouts: sum(&|s| s.timeouts),
        disconnects: sum(&|s| s.disconnects),
        call_errors_by_code: errors_by_code,
        server,
        harness: HarnessReport {
            rss_after_ramp_mib: sum_f(&|h| h.rss_after_ramp_mib),
            rss_end_mib: sum_f(&|h| h.rss_end_mib),
            nofile_limit: inputs.iter().map(|(_, s)| s.harness.nofile_limit).min().unwrap_or(0),
            tasks_aborted: sum(&|s| s.harness.tasks_aborted),
        },
        shard: None,
        merged: Some(MergedReport {
            shards,
            count,
            files: inputs.iter().map(|(n, _)| n.clone()).collect(),
            hold_start_spread_secs: spread,
            storm_start_spread_secs: storm_spread,
        }),
        windows,
        histograms: encode_all(hists.iter().map(|(k, h)| (k.clone(), h))),
        // Not merged: each shard's commands stay in its own file.
        commands: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::Shard;
    use crate::stats::{summarize, RunInfo, Shared};

    const N: u64 = 7;

    fn info() -> RunInfo {
        RunInfo {
            scenario: "events".into(),
            message: "meter-values".into(),
            mode: "open-loop".into(),
            target_rate: Some(700.0),
            url_template: "ws://h/{id}".into(),
            stations: N,
            warmup_secs: 1.0,
            duration_secs: 10.0,
            setup_secs: 0.5,
        }
    }

    /// Station `g`'s samples, recorded as its task does.
    fn record(sh: &Shared, g: u64) {
        for k in 0..500 {
            let us = 1 + crate::schedule::splitmix64(g * 7919 + k) % 200_000;
            sh.record_ok(us, k >= 50); // the first 50 in the warmup
        }
        sh.stations_ready.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if g == 4 {
            sh.record_call_error("InternalError");
        }
    }

    fn summary(stations: std::ops::Range<u64>, shard: Option<Shard>, start_ms: u64) -> Summary {
        let sh = Shared::default();
        for g in stations.clone() {
            record(&sh, g);
        }
        let h = sh.latency.lock().unwrap().clone();
        let mut s = summarize(info(), &h, sh.counts());
        s.shard = shard.map(|x| ShardReport {
            index: x.index,
            count: x.count,
            first_station: stations.start + 1,
            stations: stations.end - stations.start,
        });
        s.window_start_ms = start_ms;
        s.window_end_ms = start_ms + 10_000;
        s
    }

    #[test]
    fn merged_events_shards_equal_one_run_of_the_whole() {
        let dir = std::env::temp_dir().join(format!("ocpp-bench-merge-events-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let whole = summary(0..N, None, 0);
        let mut files = Vec::new();
        for index in 1..=3 {
            let sh = Shard { index, count: 3 };
            let s = summary(sh.range(N), Some(sh), u64::from(index) * 50);
            let p = dir.join(format!("e{index}.json"));
            std::fs::write(&p, serde_json::to_string(&s).unwrap()).unwrap();
            files.push(p);
        }
        let Merged::Events(m) = merge_any(&files, false).unwrap() else { panic!("not events") };
        assert_eq!((m.messages_ok, m.messages_ok_total), (whole.messages_ok, whole.messages_ok_total));
        assert_eq!((m.stations_ready, m.call_errors), (whole.stations_ready, whole.call_errors));
        assert_eq!(m.call_errors_by_code, whole.call_errors_by_code);
        // The same histogram, so the same percentiles to the last digit.
        assert_eq!(m.latency_ms, whole.latency_ms);
        assert_eq!(m.histogram, whole.histogram);
        assert_eq!(m.msgs_per_sec, whole.msgs_per_sec);
        assert_eq!(m.merged.as_ref().unwrap().hold_start_spread_secs, 0.1);
        assert!(crate::stats::render_table(&m).contains("3 of 3 shards"));

        // Refusals: a fleet among events, a duplicate, another rate.
        let mut other: Summary = serde_json::from_str(&std::fs::read_to_string(&files[1]).unwrap()).unwrap();
        other.run.target_rate = Some(1.0);
        let p = dir.join("other.json");
        std::fs::write(&p, serde_json::to_string(&other).unwrap()).unwrap();
        let err = |f: &[PathBuf]| format!("{:#}", merge_any(f, false).err().expect("refused"));
        assert!(err(&[files[0].clone(), p.clone(), files[2].clone()]).contains("not shards of one run"));
        assert!(err(&[files[0].clone(), files[0].clone()]).contains("both shard 1/3"));
        assert!(err(&files[..2]).contains("missing"));
        std::fs::write(&p, r#"{"scenario":"fleet"}"#).unwrap();
        assert!(err(&[files[0].clone(), p.clone()]).contains("not one run"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn histograms_round_trip_and_garbage_is_refused() {
        let mut h = new_histogram();
        for v in [1u64, 10, 1_000, 3_600_000_000] {
            h.record(v).unwrap();
        }
        let back = decode(&encode(&h)).unwrap();
        assert_eq!(back, h);
        assert!(format!("{:#}", decode("!!").unwrap_err()).contains("not base64"));
        assert!(format!("{:#}", decode("AAAA").unwrap_err()).contains("not a V2 histogram"));
    }
}
