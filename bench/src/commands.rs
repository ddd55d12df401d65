//! The stations' answers to the central system (`--answer-delay`, `--answer`), and commands sent
//! through an HTTP API while the fleet holds (`--command-rate`, `--command`, …): their round trip
//! (HTTP request sent → HTTP response received) per action, and their outcomes.
//!
//! Schedule: command `k` (0-based) is due `k / --command-rate` after the hold's start, while that
//! is before the hold's end; its action is the `k`-th of the `--command` list, round-robin; its
//! station is `(offset + k) mod N` of the stations this process runs, `offset` drawn from `--seed`,
//! so every station gets its share and a run with the same seed sends the same commands to the
//! same stations. At most `--command-concurrency` requests are in flight; a command that cannot be
//! sent within `--timeout` of its due time is counted as unsent, like the hold's calls.

use crate::schedule;
use crate::stats::{latency_ms, new_histogram, LatencyMs};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::{sleep_until, timeout_at, Instant};

/// `--answer-delay`: every answer to the central system waits a uniform time in `min..=max` ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerDelay {
    pub min_ms: u64,
    pub max_ms: u64,
}

pub fn parse_answer_delay(s: &str) -> Result<AnswerDelay, String> {
    let num = |t: &str| t.trim().parse::<u64>().map_err(|_| format!("{s:?}: expected MS or MIN-MAX (milliseconds)"));
    let (min_ms, max_ms) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(s)?, num(s)?),
    };
    if min_ms > max_ms {
        return Err(format!("{s:?}: the minimum is above the maximum"));
    }
    if max_ms > 3_600_000 {
        return Err(format!("{s:?}: at most an hour"));
    }
    Ok(AnswerDelay { min_ms, max_ms })
}

/// `--answer Action=JSON`: the answer to one action, in place of the schema-valid default.
pub fn parse_answer(s: &str) -> Result<(String, Value), String> {
    let (action, json) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected Action=JSON"))?;
    let action = action.trim();
    if action.is_empty() || !action.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!("{s:?}: {action:?} is not an action name"));
    }
    let v: Value = serde_json::from_str(json).map_err(|e| format!("{s:?}: the answer is not JSON: {e}"))?;
    if !v.is_object() {
        return Err(format!("{s:?}: an OCPP answer is a JSON object"));
    }
    Ok((action.to_string(), v))
}

/// `--command ACTION[=JSON]`: an action and its payload (`{}` when none is given).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSpec {
    pub action: String,
    pub payload: Value,
}

pub fn parse_command(s: &str) -> Result<CommandSpec, String> {
    let (action, payload) = match s.split_once('=') {
        Some((a, j)) => {
            let v: Value = serde_json::from_str(j).map_err(|e| format!("{s:?}: the payload is not JSON: {e}"))?;
            if !v.is_object() {
                return Err(format!("{s:?}: an OCPP payload is a JSON object"));
            }
            (a.trim(), v)
        }
        None => (s.trim(), Value::Object(Default::default())),
    };
    if action.is_empty() || !action.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!("{s:?}: {action:?} is not an action name"));
    }
    Ok(CommandSpec { action: action.to_string(), payload })
}

/// `--command-header 'Name: value'`.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s.split_once(':').ok_or_else(|| format!("{s:?}: expected 'Name: value'"))?;
    let name = name.trim();
    reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("{s:?}: {e}"))?;
    reqwest::header::HeaderValue::from_str(value.trim()).map_err(|e| format!("{s:?}: {e}"))?;
    Ok((name.to_string(), value.trim().to_string()))
}

/// How stations answer, set once per process before the fleet starts.
#[derive(Debug, Default)]
struct Answers {
    delay: Option<AnswerDelay>,
    overrides: BTreeMap<String, Value>,
    seed: u64,
    n: AtomicU64,
}

static ANSWERS: OnceLock<Answers> = OnceLock::new();

/// Sets the stations' answer delay and overrides (the first call wins).
pub fn configure_answers(delay: Option<AnswerDelay>, overrides: &[(String, Value)], seed: u64) {
    let _ = ANSWERS.set(Answers {
        delay: delay.filter(|d| d.max_ms > 0),
        overrides: overrides.iter().cloned().collect(),
        seed,
        n: AtomicU64::new(0),
    });
}

/// The answer to the central system's `action`: the `--answer` override, else [`crate::v201::answer`].
pub fn answer(protocol: crate::v201::Protocol, action: &str, payload: &Value) -> Value {
    match ANSWERS.get().and_then(|a| a.overrides.get(action)) {
        Some(v) => v.clone(),
        None => crate::v201::answer(protocol, action, payload),
    }
}

/// The `--answer-delay` of the next answer (uniform in its range).
pub fn next_delay() -> Option<Duration> {
    let a = ANSWERS.get()?;
    let d = a.delay?;
    Some(delay_of(d, a.seed, a.n.fetch_add(1, Relaxed)))
}

/// The `n`-th answer's delay: uniform in `d`'s range, drawn from `seed`.
fn delay_of(d: AnswerDelay, seed: u64, n: u64) -> Duration {
    let span = (d.max_ms - d.min_ms) as f64;
    let ms = d.min_ms as f64 + span * schedule::fraction(seed, n as u32, 300 + (n >> 32) as u32);
    Duration::from_secs_f64(ms / 1000.0)
}

/// Waits the `--answer-delay` before an answer is sent.
pub async fn answer_delay() {
    if let Some(d) = next_delay() {
        tokio::time::sleep(d).await;
    }
}

/// Command `k` of the schedule: (due after the hold's start, index into the command list, station).
pub fn slot(k: u64, rate: f64, mix: usize, stations: u64, seed: u64) -> (Duration, usize, u64) {
    let offset = (schedule::fraction(seed, 0, 400) * stations as f64) as u64;
    (schedule::slot(k, rate), (k % mix.max(1) as u64) as usize, (offset + k) % stations.max(1))
}

/// What the commands need: where to send them, as whom, and when.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `{id}` and `{action}` are filled in.
    pub url_template: String,
    pub headers: Vec<(String, String)>,
    pub commands: Vec<CommandSpec>,
    pub rate: f64,
    pub concurrency: u32,
    pub timeout: Duration,
    pub seed: u64,
}

pub fn url(template: &str, id: &str, action: &str) -> String {
    template.replace("{id}", id).replace("{action}", action)
}

/// One action's commands.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommandActionReport {
    /// Requests sent (= ok + errors).
    pub sent: u64,
    /// Answered 2xx.
    pub ok: u64,
    /// Answered otherwise, or no answer (transport error, `--timeout`).
    pub errors: u64,
    /// Due but not sent within `--timeout` of their due time (all --command-concurrency in flight).
    pub unsent: u64,
    /// By HTTP status class (`2xx`, `4xx`, `5xx`, …) or `transport` (no HTTP answer).
    pub by_status_class: BTreeMap<String, u64>,
    /// By the answer's `code` (error bodies, e.g. `station_timeout`, `rate_limited`).
    pub by_code: BTreeMap<String, u64>,
    /// By the 2xx answer's `status` (ocpp-css: `accepted`, `rejected`, `answered`, …).
    pub by_status: BTreeMap<String, u64>,
    /// Shortest round trip, ms.
    pub min_ms: f64,
    /// HTTP request sent → HTTP response (body included) received.
    pub latency_ms: LatencyMs,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommandsReport {
    pub url_template: String,
    pub rate_per_sec: f64,
    pub concurrency: u32,
    /// The mix, round-robin, as given.
    pub mix: Vec<String>,
    pub scheduled: u64,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub unsent: u64,
    /// Answer delay of the stations, ms (`[min, max]`), if any.
    pub answer_delay_ms: Option<[u64; 2]>,
    /// Actions whose answer was overridden with --answer.
    pub answer_overrides: Vec<String>,
    pub actions: BTreeMap<String, CommandActionReport>,
}

struct Stats {
    /// Shortest round trip, µs, exact (the histogram's minimum is its bucket's lower bound).
    min_us: AtomicU64,
    sent: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    unsent: AtomicU64,
    maps: Mutex<[BTreeMap<String, u64>; 3]>,
    hist: Mutex<Option<Histogram<u64>>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            min_us: AtomicU64::new(u64::MAX),
            sent: AtomicU64::default(),
            ok: AtomicU64::default(),
            errors: AtomicU64::default(),
            unsent: AtomicU64::default(),
            maps: Mutex::default(),
            hist: Mutex::default(),
        }
    }
}

fn bump(stats: &Stats, which: usize, key: String) {
    *stats.maps.lock().expect("map lock")[which].entry(key).or_default() += 1;
}

/// Counts one HTTP answer: (status, body).
fn count_answer(stats: &Stats, status: u16, body: &[u8]) {
    bump(stats, 0, format!("{}xx", status / 100));
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        stats.ok.fetch_add(1, Relaxed);
        if let Some(s) = v.get("status").and_then(Value::as_str) {
            bump(stats, 2, s.to_string());
        }
    } else {
        stats.errors.fetch_add(1, Relaxed);
        let code = v.get("code").and_then(Value::as_str).map_or_else(|| format!("http_{status}"), str::to_string);
        bump(stats, 1, code);
    }
}

/// Sends the commands due from `start` until `end`, then waits for those in flight.
pub async fn run(
    plan: Plan,
    stations: Vec<String>,
    start: Instant,
    end: Instant,
    delay: Option<AnswerDelay>,
    overrides: Vec<String>,
) -> CommandsReport {
    let client = reqwest::Client::builder().timeout(plan.timeout).build().unwrap_or_default();
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in &plan.headers {
        if let (Ok(k), Ok(v)) =
            (reqwest::header::HeaderName::from_bytes(k.as_bytes()), reqwest::header::HeaderValue::from_str(v))
        {
            headers.append(k, v);
        }
    }
    // One set of figures per action (an action repeated in the mix to weight it counts as one).
    let mut names: Vec<String> = Vec::new();
    let stat_of: Vec<usize> = plan
        .commands
        .iter()
        .map(|c| match names.iter().position(|n| *n == c.action) {
            Some(i) => i,
            None => {
                names.push(c.action.clone());
                names.len() - 1
            }
        })
        .collect();
    let stats: Arc<Vec<Stats>> = Arc::new(names.iter().map(|_| Stats::default()).collect());
    let bodies: Vec<Arc<String>> = plan.commands.iter().map(|c| Arc::new(c.payload.to_string())).collect();
    let sem = Arc::new(Semaphore::new(plan.concurrency.max(1) as usize));
    let n = stations.len() as u64;
    let mut tasks = Vec::new();
    let mut scheduled = 0u64;
    for k in 0u64.. {
        let (due, which, station) = slot(k, plan.rate, plan.commands.len(), n, plan.seed);
        let due = start + due;
        if due >= end || n == 0 {
            break;
        }
        scheduled += 1;
        sleep_until(due).await;
        let st = &stats[stat_of[which]];
        let Ok(Ok(permit)) = timeout_at(due + plan.timeout, sem.clone().acquire_owned()).await else {
            st.unsent.fetch_add(1, Relaxed);
            continue;
        };
        if Instant::now() > due + plan.timeout {
            st.unsent.fetch_add(1, Relaxed);
            continue;
        }
        let action = &plan.commands[which].action;
        let req = client
            .post(url(&plan.url_template, &stations[station as usize], action))
            .headers(headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bodies[which].as_str().to_owned());
        let stats = stats.clone();
        let stat = stat_of[which];
        tasks.push(tokio::spawn(async move {
            let st = &stats[stat];
            st.sent.fetch_add(1, Relaxed);
            let sent = Instant::now();
            let answer = async {
                let r = req.send().await?;
                let status = r.status().as_u16();
                let body = r.bytes().await?;
                Ok::<_, reqwest::Error>((status, body))
            }
            .await;
            let d = sent.elapsed();
            match answer {
                Ok((status, body)) => {
                    st.min_us.fetch_min(d.as_micros() as u64, Relaxed);
                    st.hist
                        .lock()
                        .expect("histogram lock")
                        .get_or_insert_with(new_histogram)
                        .saturating_record((d.as_micros() as u64).max(1));
                    count_answer(st, status, &body);
                }
                Err(e) => {
                    st.errors.fetch_add(1, Relaxed);
                    bump(st, 0, "transport".into());
                    bump(st, 1, if e.is_timeout() { "timeout".into() } else { "transport_error".into() });
                }
            }
            drop(permit);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut actions: BTreeMap<String, CommandActionReport> = BTreeMap::new();
    for (name, st) in names.iter().zip(stats.iter()) {
        let h = st.hist.lock().expect("histogram lock").take().unwrap_or_else(new_histogram);
        let [by_status_class, by_code, by_status] = st.maps.lock().expect("map lock").clone();
        let min_us = st.min_us.load(Relaxed);
        actions.insert(
            name.clone(),
            CommandActionReport {
                sent: st.sent.load(Relaxed),
                ok: st.ok.load(Relaxed),
                errors: st.errors.load(Relaxed),
                unsent: st.unsent.load(Relaxed),
                by_status_class,
                by_code,
                by_status,
                min_ms: if min_us == u64::MAX { 0.0 } else { min_us as f64 / 1000.0 },
                latency_ms: latency_ms(&h),
            },
        );
    }
    let sum = |f: fn(&CommandActionReport) -> u64| actions.values().map(f).sum::<u64>();
    CommandsReport {
        url_template: plan.url_template.clone(),
        rate_per_sec: plan.rate,
        concurrency: plan.concurrency,
        mix: plan.commands.iter().map(|c| c.action.clone()).collect(),
        scheduled,
        sent: sum(|a| a.sent),
        ok: sum(|a| a.ok),
        errors: sum(|a| a.errors),
        unsent: sum(|a| a.unsent),
        answer_delay_ms: delay.map(|d| [d.min_ms, d.max_ms]),
        answer_overrides: overrides,
        actions,
    }
}

/// The commands' rows of the summary table.
pub fn rows(c: &CommandsReport) -> Vec<(String, String)> {
    let mut rows = vec![(
        "COMMANDS".into(),
        format!(
            "{} scheduled at {}/s ({} in flight at most), {} sent: {} ok, {} errors, {} unsent; mix {}{}",
            c.scheduled,
            c.rate_per_sec,
            c.concurrency,
            c.sent,
            c.ok,
            c.errors,
            c.unsent,
            c.mix.join(","),
            c.answer_delay_ms.map(|[a, b]| format!("; answer delay {a}-{b} ms")).unwrap_or_default()
        ),
    )];
    let kv = |m: &BTreeMap<String, u64>| m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
    for (name, a) in &c.actions {
        let l = &a.latency_ms;
        rows.push((
            format!("  {name}"),
            format!(
                "sent {} ok {} err {} unsent {}; round trip min {} p50 {} p99 {} max {} ms; {}{}{}",
                a.sent,
                a.ok,
                a.errors,
                a.unsent,
                a.min_ms,
                l.p50,
                l.p99,
                l.max,
                kv(&a.by_status_class),
                if a.by_status.is_empty() { String::new() } else { format!("; status {}", kv(&a.by_status)) },
                if a.by_code.is_empty() { String::new() } else { format!("; code {}", kv(&a.by_code)) },
            ),
        ));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn delays_parse() {
        assert_eq!(parse_answer_delay("50"), Ok(AnswerDelay { min_ms: 50, max_ms: 50 }));
        assert_eq!(parse_answer_delay("10-200"), Ok(AnswerDelay { min_ms: 10, max_ms: 200 }));
        for bad in ["", "x", "200-10", "-5", "1-", "1.5", "99999999"] {
            assert!(parse_answer_delay(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn delays_are_uniform_in_their_range() {
        let d = AnswerDelay { min_ms: 20, max_ms: 60 };
        let all: Vec<Duration> = (0..1000).map(|n| delay_of(d, 1, n)).collect();
        assert!(all.iter().all(|x| *x >= Duration::from_millis(20) && *x <= Duration::from_millis(60)));
        let mean = all.iter().map(Duration::as_secs_f64).sum::<f64>() / 1000.0;
        assert!((0.038..0.042).contains(&mean), "mean {mean}");
        assert!(
            all.iter().any(|x| *x < Duration::from_millis(25)) && all.iter().any(|x| *x > Duration::from_millis(55))
        );
        let fixed = AnswerDelay { min_ms: 50, max_ms: 50 };
        assert!((0..10).all(|n| delay_of(fixed, 3, n) == Duration::from_millis(50)));
    }

    #[test]
    fn answers_and_commands_parse() {
        assert_eq!(parse_answer(r#"Reset={"status":"Rejected"}"#), Ok(("Reset".into(), json!({"status": "Rejected"}))));
        assert!(parse_answer("VendorThing={}").is_ok(), "unknown actions are fine");
        for bad in ["Reset", r#"Reset={"status":}"#, "Reset=[1]", r#"={"a":1}"#, r#"Re set={}"#] {
            assert!(parse_answer(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse_command("Reset"), Ok(CommandSpec { action: "Reset".into(), payload: json!({}) }));
        let c = parse_command(r#"Reset={"type":"Immediate"}"#).unwrap();
        assert_eq!(c.payload, json!({"type": "Immediate"}));
        for bad in ["", "Reset=x", "Reset=3", "a/b"] {
            assert!(parse_command(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse_header("Authorization: Bearer x"), Ok(("Authorization".into(), "Bearer x".into())));
        assert!(parse_header("no colon").is_err() && parse_header("bad name: x").is_err());
    }

    #[test]
    fn the_schedule_is_deterministic_spread_and_round_robin() {
        let take = |seed| (0..300).map(|k| slot(k, 100.0, 3, 10, seed)).collect::<Vec<_>>();
        assert_eq!(take(1), take(1));
        assert_ne!(take(1).iter().map(|s| s.2).collect::<Vec<_>>(), take(7).iter().map(|s| s.2).collect::<Vec<_>>());
        let s = take(1);
        // Open loop at 100/s: command k is due k × 10 ms.
        assert_eq!(s[150].0, Duration::from_millis(1500));
        // Every station gets the same share, every action a third, in turn.
        let mut per_station = [0u32; 10];
        let mut per_action = [0u32; 3];
        for (k, (_, a, st)) in s.iter().enumerate() {
            per_station[*st as usize] += 1;
            per_action[*a] += 1;
            assert_eq!(*a, k % 3);
        }
        assert!(per_station.iter().all(|&n| n == 30), "{per_station:?}");
        assert!(per_action.iter().all(|&n| n == 100), "{per_action:?}");
        // Consecutive commands go to different stations.
        assert!(s.windows(2).all(|w| w[0].2 != w[1].2));
    }

    #[test]
    fn answers_are_counted_by_class_code_and_status() {
        let st = Stats::default();
        count_answer(&st, 200, br#"{"status":"rejected","response":{"status":"Rejected"}}"#);
        count_answer(&st, 504, br#"{"code":"station_timeout","message":"..."}"#);
        count_answer(&st, 429, b"not json");
        let m = st.maps.lock().unwrap().clone();
        assert_eq!((st.ok.load(Relaxed), st.errors.load(Relaxed)), (1, 2));
        assert_eq!(m[0], BTreeMap::from([("2xx".into(), 1), ("4xx".into(), 1), ("5xx".into(), 1)]));
        assert_eq!(m[1], BTreeMap::from([("station_timeout".into(), 1), ("http_429".into(), 1)]));
        assert_eq!(m[2], BTreeMap::from([("rejected".into(), 1)]));
    }

    /// A tiny HTTP/1.1 server: `/ok/...` answers 200 `{"status":"accepted"}` after `delay`,
    /// `/slow/...` 504 `{"code":"station_timeout"}` after `delay`; without the bearer header 401.
    async fn http_server(delay: Duration) -> (String, Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let paths = Arc::new(Mutex::new(Vec::new()));
        let seen = paths.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            let mut chunk = [0u8; 4096];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        while buf.len() < end + 4 + len {
                            let mut chunk = [0u8; 4096];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                        let authorized = head.contains("authorization: bearer t0k");
                        buf.drain(..end + 4 + len);
                        seen.lock().unwrap().push(path.clone());
                        tokio::time::sleep(delay).await;
                        let (status, body) = match () {
                            _ if !authorized => ("401 Unauthorized", r#"{"code":"unauthorized"}"#),
                            _ if path.starts_with("/ok/") => ("200 OK", r#"{"status":"accepted"}"#),
                            _ => ("504 Gateway Timeout", r#"{"code":"station_timeout"}"#),
                        };
                        let answer = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if sock.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (base, paths)
    }

    fn plan(base: &str, concurrency: u32, timeout_ms: u64) -> Plan {
        Plan {
            url_template: format!("{base}/{{action}}/{{id}}"),
            headers: vec![("Authorization".into(), "Bearer t0k".into())],
            commands: vec![
                CommandSpec { action: "ok".into(), payload: json!({}) },
                CommandSpec { action: "ok".into(), payload: json!({}) },
                CommandSpec { action: "slow".into(), payload: json!({}) },
            ],
            rate: 20.0,
            concurrency,
            timeout: Duration::from_millis(timeout_ms),
            seed: 1,
        }
    }

    #[tokio::test]
    async fn commands_are_timed_counted_and_bounded_in_flight() {
        let (base, paths) = http_server(Duration::from_millis(30)).await;
        let ids: Vec<String> = (1..=4).map(|i| format!("S{i}")).collect();
        let start = Instant::now();
        let r = run(plan(&base, 8, 2000), ids.clone(), start, start + Duration::from_secs(1), None, vec![]).await;
        // 20/s for 1 s, "ok" weighted twice: 14 + 6.
        assert_eq!((r.scheduled, r.sent, r.ok, r.errors, r.unsent), (20, 20, 14, 6, 0), "{r:?}");
        let ok = &r.actions["ok"];
        assert_eq!((ok.sent, ok.ok, ok.latency_ms.samples), (14, 14, 14));
        assert!(ok.min_ms >= 30.0, "{ok:?}");
        assert_eq!(ok.by_status, BTreeMap::from([("accepted".into(), 14)]));
        let slow = &r.actions["slow"];
        assert_eq!(slow.by_status_class, BTreeMap::from([("5xx".into(), 6)]));
        assert_eq!(slow.by_code, BTreeMap::from([("station_timeout".into(), 6)]));
        // Spread over the stations: each got 5.
        let paths = paths.lock().unwrap().clone();
        for id in &ids {
            let id = id.to_lowercase();
            assert_eq!(paths.iter().filter(|p| p.ends_with(&format!("/{id}"))).count(), 5, "{paths:?}");
        }

        // One in flight, each 300 ms, due every 50 ms, at most 200 ms late: most are not sent.
        let (base, _) = http_server(Duration::from_millis(300)).await;
        let start = Instant::now();
        let r = run(plan(&base, 1, 200), ids, start, start + Duration::from_secs(1), None, vec![]).await;
        assert_eq!(r.scheduled, 20);
        assert_eq!(r.sent + r.unsent, 20, "{r:?}");
        assert!(r.unsent >= 10 && r.sent >= 2, "{r:?}");
        // Each sent one outlived the 200 ms --timeout: counted as timeouts, no HTTP class.
        assert_eq!(r.errors, r.sent, "{r:?}");
        let codes: u64 = r.actions.values().map(|a| a.by_code.get("timeout").copied().unwrap_or(0)).sum();
        assert_eq!(codes, r.sent, "{r:?}");
    }

    #[test]
    fn urls_are_filled_in() {
        assert_eq!(
            url("http://h/api/v1/stations/{id}/commands/{action}", "B1", "Reset"),
            "http://h/api/v1/stations/B1/commands/Reset"
        );
    }
}
