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
    per, ActionReport, CloseReport, FleetSummary, HarnessReport, HoldReport, MergedReport, RampReport, StormReport,
    Windows,
};
use crate::stats::{latency_ms, new_histogram, LatencyMs};
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

/// Reads one shard's output.
pub fn read(path: &Path) -> Result<FleetSummary> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    match v.get("scenario").and_then(|s| s.as_str()) {
        Some("fleet") => {}
        Some(other) => bail!("{}: a {other:?} output; merge takes `fleet --shard` outputs", path.display()),
        None => bail!("{}: not an ocpp-bench output (no \"scenario\")", path.display()),
    }
    serde_json::from_value(v)
        .with_context(|| format!("{}: not a fleet output of this ocpp-bench version", path.display()))
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
    if inputs.is_empty() {
        bail!("no file to merge");
    }
    for (name, s) in &inputs {
        if s.merged.is_some() {
            bail!("{name} is already a merged report; merge the shards' own outputs");
        }
        if s.shard.is_none() {
            bail!("{name} was not written by a sharded run (fleet --shard I/N)");
        }
        if s.histograms.is_empty() {
            bail!("{name} has no histograms (written by an ocpp-bench without merge support?)");
        }
    }
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
    let mut seen: BTreeMap<u32, &str> = BTreeMap::new();
    for (name, s) in &inputs {
        let sh = s.shard.as_ref().expect("checked above");
        if sh.count != count {
            bail!("{name} is shard {}/{} but {first_name} is of {count} shards: not one run", sh.index, sh.count);
        }
        if let Some(other) = seen.insert(sh.index, name) {
            bail!("{other} and {name} are both shard {}/{count}: each shard once", sh.index);
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
    let missing: Vec<u32> = (1..=count).filter(|i| !seen.contains_key(i)).collect();
    if !missing.is_empty() {
        if !allow_missing {
            bail!(
                "shards {missing:?} of {count} are missing (give every shard's file, or --allow-missing to merge \
                 the {} given)",
                inputs.len()
            );
        }
        eprintln!("warning: merging {} of {count} shards; missing {missing:?}", inputs.len());
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
            shards: seen.keys().copied().collect(),
            count,
            files: inputs.iter().map(|(n, _)| n.clone()).collect(),
            hold_start_spread_secs: spread,
            storm_start_spread_secs: storm_spread,
        }),
        windows,
        histograms: encode_all(hists.iter().map(|(k, h)| (k.clone(), h))),
    })
}
