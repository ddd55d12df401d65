//! End to end: OCPP 2.0.1 fleets of the harness's binary against the real server (ocpp-css, run
//! in-process on port 0 with a temporary data directory).

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn args(port: u16, tenant: &str, prefix: &str, protocol: &str, stations: u32, json: &std::path::Path) -> Vec<String> {
    [
        "fleet",
        "--provision-api",
        &format!("http://127.0.0.1:{port}/api/v1"),
        "--tenant",
        tenant,
        "--id-prefix",
        prefix,
        "--protocol",
        protocol,
        "--stations",
        &stations.to_string(),
        "--connectors",
        "2",
        "--connect-rate",
        "200",
        "--hold",
        "5",
        "--heartbeat-rate",
        &stations.to_string(),
        "--transaction-rate",
        "4",
        "--meter-values",
        "2",
        "--meter-interval",
        "0.5",
        "--timeout",
        "5",
        "--threads",
        "2",
        "--json",
        json.to_str().expect("utf-8 path"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_201_fleet_boots_charges_and_answers_commands_against_the_server() {
    let server = start_server();
    let api = format!("http://127.0.0.1:{}/api/v1", server.port);
    let out = tempfile::tempdir().expect("temp dir");
    let json_path = out.path().join("fleet.json");
    let child = bench(&args(server.port, "bench", "B201-", "2.0.1", 20, &json_path));

    // While the fleet holds: commands through the API reach a 2.0.1 station and come back answered.
    let http = reqwest::Client::new();
    let mut connected = false;
    let mut tok = None;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tok.is_none() {
            let r = http
                .post(format!("{api}/sessions"))
                .json(&json!({"email": "bench@bench.example.com", "password": "bench-account-password"}))
                .send()
                .await;
            if let Ok(r) = r {
                if r.status().is_success() {
                    tok = r.json::<Value>().await.ok().and_then(|v| v["token"].as_str().map(String::from));
                }
            }
        }
        if let Some(t) = &tok {
            let r = http.get(format!("{api}/stations/B201-000020")).bearer_auth(t).send().await;
            if let Ok(r) = r {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                if v["connected"] == true && v["protocol"] == "ocpp2.0.1" {
                    connected = true;
                    break;
                }
            }
        }
    }
    assert!(connected, "the last station never showed connected over 2.0.1");
    let t = tok.expect("signed in");
    let get = json!({"getVariableData": [{"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}]});
    for (action, payload) in [
        ("GetVariables", get),
        ("Reset", json!({"type": "Immediate"})),
        (
            "RequestStartTransaction",
            json!({"remoteStartId": 7, "idToken": {"idToken": "BENCH-TAG", "type": "ISO14443"}}),
        ),
    ] {
        let r = http
            .post(format!("{api}/stations/B201-000001/commands/{action}"))
            .bearer_auth(&t)
            .json(&payload)
            .send()
            .await
            .expect("command sent");
        let status = r.status();
        let body: Value = r.json().await.expect("command answer");
        assert!(status.is_success(), "{action}: {status} {body}");
        // "accepted" when the answer's status is Accepted, "answered" otherwise.
        assert!(matches!(body["status"].as_str(), Some("answered" | "accepted")), "{action}: {body}");
        match action {
            "GetVariables" => {
                let result = &body["response"]["getVariableResult"][0];
                assert_eq!(
                    (result["attributeStatus"].as_str(), result["attributeValue"].as_str()),
                    (Some("Accepted"), Some("300")),
                    "{body}"
                );
            }
            _ => assert_eq!(body["response"]["status"], "Accepted", "{action}: {body}"),
        }
    }

    let (ok, stdout, stderr) = finish(child, Duration::from_secs(120)).await;
    assert!(ok, "ocpp-bench failed:\n{stdout}\n{stderr}");
    let s = summary(&json_path);
    assert_eq!((s["config"]["protocol"].as_str(), s["config"]["stations_v201"].as_u64()), (Some("2.0.1"), Some(20)));
    assert_eq!((s["ramp"]["booted"].as_u64(), s["ramp"]["failures"].as_u64()), (Some(20), Some(0)), "{stderr}");
    let a = &s["actions"];
    assert_eq!(a["StatusNotification"]["ok"], 40, "two EVSEs each");
    let hb = a["Heartbeat"]["ok"].as_u64().unwrap_or(0);
    assert!(hb >= 80, "{hb} heartbeats answered of ~100 scheduled");
    let started = a["TransactionEvent(Started)"]["ok"].as_u64().unwrap_or(0);
    assert!(started >= 12, "{started} transactions started of ~20 scheduled");
    assert_eq!(a["TransactionEvent(Updated)"]["ok"].as_u64(), Some(started * 2));
    assert_eq!(a["TransactionEvent(Ended)"]["ok"].as_u64(), Some(started));
    for name in ["StartTransaction", "MeterValues", "StopTransaction"] {
        assert_eq!(a[name]["ok"], 0, "no 1.6 {name} from a 2.0.1 fleet");
    }
    let hold = &s["hold"];
    assert_eq!(
        (
            hold["timeouts"].as_u64(),
            hold["call_errors"].as_u64(),
            hold["unsent"].as_u64(),
            hold["disconnects"].as_u64()
        ),
        (Some(0), Some(0), Some(0), Some(0)),
        "{hold}"
    );
    assert_eq!((s["timeouts"].as_u64(), s["disconnects"].as_u64()), (Some(0), Some(0)));
    assert_eq!(s["call_errors_by_code"], json!({}));
    assert_eq!(s["close"]["clean"], 20);
    assert!(stdout.contains("TransactionEvent(Started)") && stdout.contains("OCPP 2.0.1"), "{stdout}");

    // The server has every transaction, completed, with its energy: 2 Updated × 100 Wh.
    let t = token(&http, &api, "bench@bench.example.com").await;
    let txs: Value = http
        .get(format!("{api}/transactions"))
        .bearer_auth(&t)
        .send()
        .await
        .expect("transactions listed")
        .json()
        .await
        .expect("transactions parse");
    let txs = txs["items"].as_array().expect("a page of transactions");
    let fleet: Vec<&Value> =
        txs.iter().filter(|t| t["station_transaction_id"].is_string() && t["status"] == "completed").collect();
    assert_eq!(fleet.len() as u64, started, "{txs:?}");
    for tx in &fleet {
        assert_eq!(tx["energy_wh"], 200, "{tx}");
        assert_eq!(tx["id_tag"], "BENCH-TAG", "{tx}");
    }
    let mut ids: Vec<&str> = fleet.iter().filter_map(|t| t["station_transaction_id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), fleet.len(), "transactionIds are unique");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_fleet_speaks_both_versions_to_the_server() {
    let server = start_server();
    let api = format!("http://127.0.0.1:{}/api/v1", server.port);
    let out = tempfile::tempdir().expect("temp dir");
    let json_path = out.path().join("mix.json");
    let child = bench(&args(server.port, "mix", "MIX-", "1.6=70,2.0.1=30", 20, &json_path));
    let (ok, stdout, stderr) = finish(child, Duration::from_secs(120)).await;
    assert!(ok, "ocpp-bench failed:\n{stdout}\n{stderr}");
    let s = summary(&json_path);
    assert_eq!(
        (s["config"]["protocol"].as_str(), s["config"]["stations_v201"].as_u64()),
        (Some("1.6=70,2.0.1=30"), Some(6))
    );
    assert_eq!((s["ramp"]["booted"].as_u64(), s["ramp"]["failures"].as_u64()), (Some(20), Some(0)), "{stderr}");
    let a = &s["actions"];
    let ok_of = |name: &str| a[name]["ok"].as_u64().unwrap_or(0);
    assert!(ok_of("StartTransaction") > 0 && ok_of("TransactionEvent(Started)") > 0, "{a}");
    assert_eq!(ok_of("StopTransaction"), ok_of("StartTransaction"));
    assert_eq!(ok_of("TransactionEvent(Ended)"), ok_of("TransactionEvent(Started)"));
    assert_eq!((s["timeouts"].as_u64(), s["hold"]["call_errors"].as_u64()), (Some(0), Some(0)), "{stderr}");

    let t = token(&reqwest::Client::new(), &api, "bench@mix.example.com").await;
    let stations: Value = reqwest::Client::new()
        .get(format!("{api}/transactions"))
        .bearer_auth(&t)
        .send()
        .await
        .expect("transactions listed")
        .json()
        .await
        .expect("transactions parse");
    let txs = stations["items"].as_array().expect("a page of transactions");
    let v201 = txs.iter().filter(|t| t["station_transaction_id"].is_string()).count() as u64;
    assert_eq!(v201, ok_of("TransactionEvent(Started)"));
    assert_eq!(txs.len() as u64, ok_of("StartTransaction") + v201);
    assert!(txs.iter().all(|t| t["energy_wh"] == 200 && t["status"] == "completed"), "{txs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_201_stations_are_transaction_events_the_server_keeps() {
    let server = start_server();
    let api = format!("http://127.0.0.1:{}/api/v1", server.port);
    let out = tempfile::tempdir().expect("temp dir");
    let json_path = out.path().join("events.json");
    let args: Vec<String> = [
        "events",
        "--provision-api",
        &api,
        "--tenant",
        "ev",
        "--id-prefix",
        "EV-",
        "--protocol",
        "2.0.1",
        "--stations",
        "5",
        "--rate",
        "50",
        "--warmup",
        "1",
        "--duration",
        "2",
        "--threads",
        "2",
        "--json",
        json_path.to_str().expect("utf-8 path"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (ok, stdout, stderr) = finish(bench(&args), Duration::from_secs(120)).await;
    assert!(ok, "ocpp-bench failed:\n{stdout}\n{stderr}");
    let s = summary(&json_path);
    assert_eq!((s["stations_ready"].as_u64(), s["setup_failures"].as_u64()), (Some(5), Some(0)), "{stderr}");
    assert_eq!(
        (s["call_errors"].as_u64(), s["timeouts"].as_u64(), s["disconnects"].as_u64()),
        (Some(0), Some(0), Some(0)),
        "{stderr}"
    );
    let total = s["messages_ok_total"].as_u64().unwrap_or(0);
    // Open loop at 50/s for 2 s: every scheduled message is answered or counted unsent (how many
    // are answered in time depends on the machine's load, which a test does not judge).
    let (answered, unsent) = (s["messages_ok"].as_u64().unwrap_or(0), s["unsent"].as_u64().unwrap_or(0));
    assert!(answered > 0 && answered + unsent >= 95 && total >= answered, "{s}");
    assert!(s["message"].as_str().is_some_and(|m| m.contains("TransactionEvent")), "{s}");

    let http = reqwest::Client::new();
    let t = token(&http, &api, "bench@ev.example.com").await;
    let txs: Value = http
        .get(format!("{api}/transactions"))
        .bearer_auth(&t)
        .send()
        .await
        .expect("transactions listed")
        .json()
        .await
        .expect("transactions parse");
    let txs = txs["items"].as_array().expect("a page of transactions");
    assert_eq!(txs.len(), 5, "{txs:?}");
    assert!(txs.iter().all(|t| t["status"] == "completed"), "{txs:?}");
    // Every TransactionEvent Updated added 7 Wh.
    let energy: u64 = txs.iter().filter_map(|t| t["energy_wh"].as_u64()).sum();
    assert_eq!(energy, 7 * total);
}
