//! End to end: a scenario file of four station classes (idle 1.6, busy 2.0.1, flaky 1.6, offline
//! 2.0.1 with replay) run by the harness's binary against the real server (in-process, port 0).

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const SCENARIO: &str = r#"
[run]
stations = 12
duration_secs = 8
connect_rate = 50
seed = 3

[[class]]
name = "idle"
share = 25
protocol = "1.6"
connectors = 2
heartbeat_secs = 2

[[class]]
name = "busy"
share = 25
protocol = "2.0.1"
connectors = 1
heartbeat_secs = 3
[class.sessions]
every_secs = "0.2-0.5"
length_secs = "1.5-2"
meter_interval_secs = 1

[[class]]
name = "flaky"
share = 25
protocol = "1.6"
connectors = 1
heartbeat_secs = 1
[class.sessions]
every_secs = 0.5
length_secs = 1.5
meter_interval_secs = 0.5
[class.flaky]
reconnect_every_secs = "1.5-2.5"

[[class]]
name = "offline"
share = 25
protocol = "2.0.1"
connectors = 1
heartbeat_secs = 1
[class.sessions]
every_secs = 0.3
length_secs = "2-3"
meter_interval_secs = 0.5
[class.offline]
every_secs = "1-1.5"
for_secs = "1.5-2"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_of_four_classes_runs_against_the_server() {
    let server = start_server();
    let api = format!("http://127.0.0.1:{}/api/v1", server.port);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("mixed.toml");
    std::fs::write(&file, SCENARIO).expect("scenario written");
    let json_path = dir.path().join("scenario.json");
    let args: Vec<String> = [
        "scenario",
        file.to_str().expect("utf-8 path"),
        "--provision-api",
        &api,
        "--tenant",
        "scn",
        "--id-prefix",
        "SCN-",
        "--timeout",
        "5",
        "--threads",
        "2",
        "--json",
        json_path.to_str().expect("utf-8 path"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (ok, stdout, stderr) = run_bench(args, Duration::from_secs(120)).await;
    assert!(ok, "ocpp-bench failed:\n{stdout}\n{stderr}");
    let s = summary(&json_path);
    let o = &s["overall"];
    assert_eq!((o["booted"].as_u64(), o["ramp_failures"].as_u64()), (Some(12), Some(0)), "{stderr}");
    let class = |name: &str| s["classes"][name].clone();
    for name in ["idle", "busy", "flaky", "offline"] {
        let c = class(name);
        assert_eq!((c["stations"].as_u64(), c["booted"].as_u64()), (Some(3), Some(3)), "{name}: {c}");
        assert_eq!(c["closed_clean"], 3, "{name}: {c}");
        assert_eq!(c["call_errors_by_code"], serde_json::json!({}), "{name}: {c}");
    }
    assert!(class("idle")["actions"]["Heartbeat"]["ok"].as_u64().unwrap_or(0) >= 6, "{}", class("idle"));
    assert_eq!(class("idle")["sessions"]["started"], 0);
    for name in ["busy", "flaky", "offline"] {
        let c = class(name);
        assert!(c["sessions"]["completed"].as_u64().unwrap_or(0) >= 3, "{name}: {c}");
    }
    let busy = class("busy");
    let started = busy["actions"]["TransactionEvent(Started)"]["ok"].as_u64().unwrap_or(0);
    assert_eq!(started, busy["sessions"]["started"].as_u64().unwrap_or(0), "{busy}");
    assert_eq!(busy["actions"]["TransactionEvent(Ended)"]["ok"].as_u64(), Some(started), "{busy}");

    let flaky = class("flaky");
    let drops = flaky["flaky"]["drops"].as_u64().unwrap_or(0);
    assert!(drops >= 3, "every flaky station dropped at least once: {flaky}");
    assert_eq!(flaky["flaky"]["recovered"].as_u64(), Some(drops), "{flaky}");
    assert_eq!(flaky["flaky"]["recover_ms"]["samples"].as_u64(), Some(drops), "{flaky}");
    assert!(flaky["reconnects"].as_u64().unwrap_or(0) >= drops, "{flaky}");

    let off = class("offline");
    let replayed = off["offline"]["replayed"].as_u64().unwrap_or(0);
    assert!(off["offline"]["periods"].as_u64().unwrap_or(0) >= 3, "{off}");
    assert!(replayed > 0, "{off}");
    assert_eq!(off["offline"]["queued"].as_u64(), Some(replayed), "{off}");
    assert_eq!((off["offline"]["replay_failed"].as_u64(), off["offline"]["left_unsent"].as_u64()), (Some(0), Some(0)));
    assert_eq!(off["offline"]["replay_ms"]["samples"].as_u64(), Some(replayed), "{off}");
    assert!(stdout.contains("CLASS offline") && stdout.contains("OVERALL"), "{stdout}");

    // The server has every session as a completed transaction, and the replayed TransactionEvents
    // with offline: true.
    let http = reqwest::Client::new();
    let t = token(&http, &api, "bench@scn.example.com").await;
    let get = |url: String| {
        let (http, t) = (http.clone(), t.clone());
        async move {
            let r = http.get(url).bearer_auth(&t).send().await.expect("API answers");
            r.json::<Value>().await.expect("JSON answer")
        }
    };
    let txs = get(format!("{api}/transactions?limit=1000")).await;
    let txs = txs["items"].as_array().expect("a page of transactions").clone();
    let sessions: u64 =
        ["busy", "flaky", "offline"].iter().map(|n| class(n)["sessions"]["started"].as_u64().unwrap_or(0)).sum();
    assert_eq!(txs.len() as u64, sessions, "{txs:?}");
    assert!(txs.iter().all(|t| t["status"] == "completed"), "{txs:?}");
    let mut offline_events = 0u64;
    for tx in txs.iter().filter(|t| t["station_transaction_id"].is_string()) {
        let detail = get(format!("{api}/transactions/{}", tx["id"])).await;
        let events = detail["events"].as_array().expect("events").clone();
        offline_events += events.iter().filter(|e| e["offline"] == true).count() as u64;
    }
    assert_eq!(offline_events, replayed, "every replayed TransactionEvent is on the server, flagged offline");
}
