//! Scenario files: a fleet made of station classes (TOML), parsed and checked here; run by
//! [`crate::scenario_run`].
//!
//! ```toml
//! [run]
//! stations = 1000
//! duration_secs = 3600
//! connect_rate = 50
//! seed = 7            # optional
//! time_scale = 60     # optional: every class time divided by it
//!
//! [[class]]
//! name = "ac"
//! share = 80          # percent of the fleet; the shares add up to 100
//! protocol = "1.6"    # or "2.0.1"
//! connectors = 2
//! heartbeat_secs = 300
//! [class.sessions]
//! every_secs = "3600-14400"   # idle time between sessions of a connector (or per_hour = 0.5)
//! length_secs = "3600-10800"
//! meter_interval_secs = 60
//! [class.flaky]
//! reconnect_every_secs = "1800-7200"
//! [class.offline]
//! every_secs = "3600-7200"
//! for_secs = "60-600"
//! ```

use crate::v201::Protocol;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// A number of seconds, or a range `"min-max"` drawn uniformly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Secs {
    pub min: f64,
    pub max: f64,
}

impl Secs {
    /// The value at `f` ∈ [0, 1) of the range, divided by `scale`.
    pub fn draw(self, f: f64, scale: f64) -> Duration {
        Duration::from_secs_f64((self.min + (self.max - self.min) * f) / scale)
    }

    /// `min-max`, or `n` when both are the same.
    pub fn label(self) -> String {
        if self.min == self.max {
            format!("{}", self.min)
        } else {
            format!("{}-{}", self.min, self.max)
        }
    }
}

/// As written in the file: a number or a string `"min-max"` (or `"n"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawSecs {
    Number(f64),
    Text(String),
}

impl RawSecs {
    /// Checks the value: positive (or, with `zero_ok`, not negative), finite, min ≤ max.
    fn check(&self, zero_ok: bool) -> Result<Secs, String> {
        let (min, max) = match self {
            RawSecs::Number(n) => (*n, *n),
            RawSecs::Text(t) => {
                let num = |s: &str| {
                    s.trim()
                        .parse::<f64>()
                        .map_err(|_| format!("{t:?} is not a number of seconds or a range \"min-max\""))
                };
                match t.trim().split_once('-') {
                    Some((a, b)) => (num(a)?, num(b)?),
                    None => {
                        let n = num(t)?;
                        (n, n)
                    }
                }
            }
        };
        if !min.is_finite() || !max.is_finite() {
            return Err("must be a finite number of seconds".into());
        }
        if min < 0.0 || (!zero_ok && min == 0.0) {
            return Err(format!("must be {} (got {min})", if zero_ok { "0 or more" } else { "more than 0" }));
        }
        if min > max {
            return Err(format!("the range's min {min} is above its max {max}"));
        }
        Ok(Secs { min, max })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    run: RawRun,
    #[serde(default, rename = "class")]
    classes: Vec<RawClass>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    stations: u32,
    duration_secs: f64,
    connect_rate: f64,
    seed: Option<u64>,
    time_scale: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    name: Option<String>,
    share: f64,
    protocol: String,
    connectors: u32,
    heartbeat_secs: RawSecs,
    sessions: Option<RawSessions>,
    flaky: Option<RawFlaky>,
    offline: Option<RawOffline>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSessions {
    every_secs: Option<RawSecs>,
    per_hour: Option<f64>,
    length_secs: RawSecs,
    meter_interval_secs: RawSecs,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlaky {
    reconnect_every_secs: RawSecs,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOffline {
    every_secs: RawSecs,
    for_secs: RawSecs,
}

/// A checked scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub stations: u32,
    pub duration_secs: f64,
    pub connect_rate: f64,
    pub seed: Option<u64>,
    /// Class times (heartbeat, sessions, flaky, offline) are divided by it; 1 = real time.
    pub time_scale: f64,
    pub classes: Vec<Class>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Class {
    pub name: String,
    /// Percent of the fleet.
    pub share: f64,
    pub protocol: Protocol,
    pub connectors: u32,
    pub heartbeat: Secs,
    pub sessions: Option<Sessions>,
    pub flaky: Option<Flaky>,
    pub offline: Option<Offline>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sessions {
    /// Idle time of a connector between two sessions (`per_hour = R`: 3600/R, ±50 %).
    pub gap: Secs,
    pub length: Secs,
    pub meter_interval: Secs,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flaky {
    pub every: Secs,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Offline {
    pub every: Secs,
    pub duration: Secs,
}

/// Parses and checks a scenario's text; errors name `file`, the class and the key.
pub fn parse(file: &str, text: &str) -> Result<Scenario, String> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        // Which class the mistake is in: the last `[[class]]` before it, and its name if given.
        let at = e.span().map_or(0, |s| s.start).min(text.len());
        let before = text.get(..at).unwrap_or("");
        let class = match before.matches("[[class]]").count() {
            0 => String::new(),
            k => {
                let block = before.rsplit("[[class]]").next().unwrap_or("");
                let name = block.lines().find_map(|l| {
                    let (key, value) = l.split_once('=')?;
                    (key.trim() == "name").then(|| value.trim().trim_matches('"').to_string())
                });
                match name {
                    Some(n) => format!("class {n:?}: "),
                    None => format!("class #{k}: "),
                }
            }
        };
        format!("{file}: {class}{}", e.to_string().trim_end())
    })?;
    let run = raw.run;
    let at = |key: &str, e: String| format!("{file}: [run] {key}: {e}");
    if run.stations == 0 {
        return Err(at("stations", "must be at least 1".into()));
    }
    let positive = |key: &str, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(at(key, format!("must be more than 0 (got {v})")))
        }
    };
    let duration_secs = positive("duration_secs", run.duration_secs)?;
    let connect_rate = positive("connect_rate", run.connect_rate)?;
    let time_scale = positive("time_scale", run.time_scale.unwrap_or(1.0))?;
    if raw.classes.is_empty() {
        return Err(format!("{file}: no [[class]]: a scenario needs at least one station class"));
    }
    let mut classes: Vec<Class> = Vec::with_capacity(raw.classes.len());
    for (i, c) in raw.classes.into_iter().enumerate() {
        let name = match c.name.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => return Err(format!("{file}: class #{} has no name (name = \"…\")", i + 1)),
        };
        let at = |key: &str, e: String| format!("{file}: class {name:?}: {key}: {e}");
        if classes.iter().any(|o| o.name == name) {
            return Err(format!("{file}: class {name:?} is defined twice: class names must be unique"));
        }
        if !(c.share.is_finite() && c.share > 0.0 && c.share <= 100.0) {
            return Err(at("share", format!("must be a percentage above 0, at most 100 (got {})", c.share)));
        }
        let protocol = match c.protocol.trim() {
            "1.6" => Protocol::V16,
            "2.0.1" => Protocol::V201,
            other => return Err(at("protocol", format!("{other:?}: must be \"1.6\" or \"2.0.1\""))),
        };
        if !(1..=64).contains(&c.connectors) {
            return Err(at("connectors", format!("must be 1 to 64 (got {})", c.connectors)));
        }
        let heartbeat = c.heartbeat_secs.check(false).map_err(|e| at("heartbeat_secs", e))?;
        let sessions = match c.sessions {
            None => None,
            Some(s) => {
                let gap = match (s.every_secs, s.per_hour) {
                    (Some(e), None) => e.check(false).map_err(|e| at("sessions.every_secs", e))?,
                    (None, Some(r)) if r.is_finite() && r > 0.0 => Secs { min: 1800.0 / r, max: 5400.0 / r },
                    (None, Some(r)) => return Err(at("sessions.per_hour", format!("must be more than 0 (got {r})"))),
                    (Some(_), Some(_)) => {
                        return Err(at("sessions", "give every_secs or per_hour, not both".into()));
                    }
                    (None, None) => return Err(at("sessions", "needs every_secs (or per_hour)".into())),
                };
                Some(Sessions {
                    gap,
                    length: s.length_secs.check(false).map_err(|e| at("sessions.length_secs", e))?,
                    meter_interval: s
                        .meter_interval_secs
                        .check(false)
                        .map_err(|e| at("sessions.meter_interval_secs", e))?,
                })
            }
        };
        let flaky = match c.flaky {
            None => None,
            Some(f) => Some(Flaky {
                every: f.reconnect_every_secs.check(false).map_err(|e| at("flaky.reconnect_every_secs", e))?,
            }),
        };
        let offline = match c.offline {
            None => None,
            Some(o) => Some(Offline {
                every: o.every_secs.check(false).map_err(|e| at("offline.every_secs", e))?,
                duration: o.for_secs.check(false).map_err(|e| at("offline.for_secs", e))?,
            }),
        };
        classes.push(Class {
            name,
            share: c.share,
            protocol,
            connectors: c.connectors,
            heartbeat,
            sessions,
            flaky,
            offline,
        });
    }
    let total: f64 = classes.iter().map(|c| c.share).sum();
    if (total - 100.0).abs() > 1e-6 {
        let parts: Vec<String> = classes.iter().map(|c| format!("{}={}", c.name, c.share)).collect();
        return Err(format!("{file}: the classes' shares add up to {total}%, not 100% ({})", parts.join(", ")));
    }
    Ok(Scenario { stations: run.stations, duration_secs, connect_rate, seed: run.seed, time_scale, classes })
}

/// Reads and checks a scenario file.
pub fn load(path: &Path) -> Result<Scenario, String> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    parse(&name, &text)
}

/// The class of each of the first `n` stations (0-based indices), by share and spread over the id
/// range: smooth weighted round robin over the shares in hundredths of a percent, so that any run
/// of 10,000 consecutive stations (and about any prefix) has the asked shares, and the class of a
/// station does not depend on `n` (a shard computes the whole run's assignment of its ids).
pub fn assign(classes: &[Class], n: u64) -> Vec<usize> {
    let weights: Vec<i64> = classes.iter().map(|c| (c.share * 100.0).round() as i64).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; classes.len()];
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let mut best = 0;
        for (k, w) in weights.iter().enumerate() {
            current[k] += w;
            if current[k] > current[best] {
                best = k;
            }
        }
        current[best] -= total;
        out.push(best);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[run]
stations = 10
duration_secs = 60
connect_rate = 5

[[class]]
name = "idle"
share = 50
protocol = "1.6"
connectors = 2
heartbeat_secs = 300

[[class]]
name = "busy"
share = 50
protocol = "2.0.1"
connectors = 1
heartbeat_secs = "60-120"
[class.sessions]
every_secs = 30
length_secs = "600-1200"
meter_interval_secs = 10
[class.offline]
every_secs = "100-200"
for_secs = 30
"#;

    fn err(text: &str) -> String {
        parse("s.toml", text).unwrap_err()
    }

    #[test]
    fn a_good_file_parses() {
        let s = parse("s.toml", GOOD).unwrap();
        assert_eq!((s.stations, s.time_scale, s.seed), (10, 1.0, None));
        assert_eq!(s.classes[1].heartbeat, Secs { min: 60.0, max: 120.0 });
        let sess = s.classes[1].sessions.unwrap();
        assert_eq!(sess.length, Secs { min: 600.0, max: 1200.0 });
        assert_eq!(s.classes[1].offline.unwrap().duration, Secs { min: 30.0, max: 30.0 });
        assert_eq!(s.classes[1].protocol, Protocol::V201);
        assert!(s.classes[0].sessions.is_none());
    }

    #[test]
    fn the_shipped_examples_parse() {
        for f in ["urban-ac.toml", "dc-depot.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(f);
            let s = load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!s.classes.is_empty(), "{f}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_the_file_and_key() {
        let e = err(&GOOD.replace("connectors = 2", "connectors = 2\nconectors = 3"));
        assert!(e.starts_with("s.toml: class \"idle\": ") && e.contains("unknown field `conectors`"), "{e}");
        let e = err(&GOOD.replace("for_secs = 30", "for_secs = 30\nbogus = 1"));
        assert!(e.starts_with("s.toml: class \"busy\": ") && e.contains("unknown field `bogus`"), "{e}");
        let e = err(&GOOD.replace("connect_rate = 5", "connect_rate = 5\nstaions = 1"));
        assert!(e.starts_with("s.toml: TOML parse error") && e.contains("unknown field `staions`"), "{e}");
    }

    #[test]
    fn shares_must_add_up_to_100() {
        let e = err(&GOOD.replace("share = 50\nprotocol = \"2.0.1\"", "share = 40\nprotocol = \"2.0.1\""));
        assert_eq!(e, "s.toml: the classes' shares add up to 90%, not 100% (idle=50, busy=40)");
        let e = err(&GOOD.replace("share = 50\nprotocol = \"1.6\"", "share = 0\nprotocol = \"1.6\""));
        assert!(e.contains("class \"idle\": share: must be a percentage"), "{e}");
    }

    #[test]
    fn intervals_must_be_positive() {
        let e = err(&GOOD.replace("heartbeat_secs = 300", "heartbeat_secs = 0"));
        assert_eq!(e, "s.toml: class \"idle\": heartbeat_secs: must be more than 0 (got 0)");
        let e = err(&GOOD.replace("meter_interval_secs = 10", "meter_interval_secs = -5"));
        assert!(e.contains("class \"busy\": sessions.meter_interval_secs: must be more than 0 (got -5)"), "{e}");
        let e = err(&GOOD.replace("duration_secs = 60", "duration_secs = 0"));
        assert_eq!(e, "s.toml: [run] duration_secs: must be more than 0 (got 0)");
        let e = err(&GOOD.replace("every_secs = 30", "every_secs = \"ten\""));
        assert!(e.contains("sessions.every_secs: \"ten\" is not a number"), "{e}");
    }

    #[test]
    fn ranges_must_go_up() {
        let e = err(&GOOD.replace("\"600-1200\"", "\"1200-600\""));
        assert_eq!(e, "s.toml: class \"busy\": sessions.length_secs: the range's min 1200 is above its max 600");
        let e = err(&GOOD.replace("\"100-200\"", "\"300-200\""));
        assert!(e.contains("class \"busy\": offline.every_secs: the range's min 300"), "{e}");
    }

    #[test]
    fn classes_need_unique_names() {
        let e = err(&GOOD.replace("name = \"busy\"", "name = \"idle\""));
        assert_eq!(e, "s.toml: class \"idle\" is defined twice: class names must be unique");
        let e = err(&GOOD.replace("name = \"busy\"\n", ""));
        assert_eq!(e, "s.toml: class #2 has no name (name = \"…\")");
        let e = err(&GOOD.replace("name = \"busy\"", "name = \" \""));
        assert_eq!(e, "s.toml: class #2 has no name (name = \"…\")");
    }

    #[test]
    fn other_mistakes_are_named() {
        let e = err(&GOOD.replace("protocol = \"1.6\"", "protocol = \"1.5\""));
        assert_eq!(e, "s.toml: class \"idle\": protocol: \"1.5\": must be \"1.6\" or \"2.0.1\"");
        let e = err(&GOOD.replace("connectors = 1", "connectors = 0"));
        assert_eq!(e, "s.toml: class \"busy\": connectors: must be 1 to 64 (got 0)");
        let e = err(&GOOD.replace("every_secs = 30\n", "every_secs = 30\nper_hour = 2\n"));
        assert!(e.contains("sessions: give every_secs or per_hour, not both"), "{e}");
        let e = err(&GOOD.replace("stations = 10", "stations = 0"));
        assert_eq!(e, "s.toml: [run] stations: must be at least 1");
        let e = err("[run]\nstations = 1\nduration_secs = 1\nconnect_rate = 1\n");
        assert!(e.contains("no [[class]]"), "{e}");
        let e = err("[run]\nstations = 1\n");
        assert!(e.starts_with("s.toml: ") && e.contains("missing field `duration_secs`"), "{e}");
        let e = err("[run\n");
        assert!(e.starts_with("s.toml: "), "{e}");
    }

    #[test]
    fn classes_are_spread_by_share_and_stable() {
        let s = parse("s.toml", GOOD).unwrap();
        let a = assign(&s.classes, 10);
        assert_eq!(a.iter().filter(|&&k| k == 1).count(), 5);
        assert_eq!(&a[..4], &[0, 1, 0, 1], "spread, not in blocks");
        // A longer run gives the same first stations the same classes (a shard's view of its ids).
        assert_eq!(&assign(&s.classes, 1000)[..10], &a[..]);
        let mut three = s.classes.clone();
        three.push(three[0].clone());
        (three[0].share, three[1].share, three[2].share) = (70.0, 20.0, 10.0);
        let a = assign(&three, 100);
        let count = |k| a.iter().filter(|&&c| c == k).count();
        assert_eq!((count(0), count(1), count(2)), (70, 20, 10));
        let a = assign(&three, 10);
        assert_eq!((a.iter().filter(|&&c| c == 2).count()), 1, "{a:?}");
    }
}
