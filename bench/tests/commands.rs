//! End to end: commands through the server's API while the harness's fleet holds (`--command-rate`),
//! with the stations' answers delayed (`--answer-delay`) and overridden (`--answer`), against the real
//! server (ocpp-css, in-process on port 0 with a temporary data directory).

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

fn fleet_args(port: u16, tenant: &str, protocol: &str, json: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let mut a: Vec<String> = [
        "fleet",
        "--provision-api",
        &api,
        "--tenant",
        tenant,
        "--id-prefix",
        &format!("{}-", tenant.to_uppercase()),
        "--protocol",
        protocol,
        "--stations",
        "8",
        "--connect-rate",
        "200",
        "--hold",
        "4",
        "--heartbeat-rate",
        "8",
        "--timeout",
        "5",
        "--threads",
        "2",
        "--command-rate",
        "10",
        "--json",
        json.to_str().expect("utf-8 path"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// The checks every command run passes: all sent and answered 2xx, none unsent, counts adding up,
/// no round trip shorter than the stations' answer delay, every action in the table.
fn check_commands(s: &Value, stdout: &str, stderr: &str, actions: &[&str], min_delay_ms: f64) {
    let c = &s["commands"];
    assert!(c.is_object(), "no commands in the summary: {s}");
    let n = |v: &Value| v.as_u64().unwrap_or(u64::MAX);
    // 10/s over a 4 s hold.
    assert_eq!(n(&c["scheduled"]), 40, "{c}");
    assert_eq!((n(&c["sent"]), n(&c["ok"]), n(&c["errors"]), n(&c["unsent"])), (40, 40, 0, 0), "{c}\n{stderr}");
    let listed: Vec<&String> = c["actions"].as_object().expect("actions").keys().collect();
    assert_eq!(listed.len(), actions.len(), "{c}");
    let mut total = 0;
    for name in actions {
        let a = &c["actions"][name];
        let sent = n(&a["sent"]);
        assert!(sent >= 40 / actions.len() as u64, "{name}: {a}");
        assert_eq!((n(&a["ok"]) + n(&a["errors"]), n(&a["errors"]), n(&a["unsent"])), (sent, 0, 0), "{name}: {a}");
        assert_eq!(a["by_status_class"], serde_json::json!({"2xx": sent}), "{name}: {a}");
        assert_eq!(n(&a["latency_ms"]["samples"]), sent, "{name}: {a}");
        let min = a["min_ms"].as_f64().unwrap_or(0.0);
        assert!(min >= min_delay_ms, "{name}: round trip {min} ms is shorter than the answer delay {min_delay_ms} ms");
        assert!(a["latency_ms"]["max"].as_f64().unwrap_or(0.0) < 5000.0, "{name}: {a}");
        assert!(stdout.contains(&format!("  {name} ")), "{name} is not in the table:\n{stdout}");
        total += sent;
    }
    assert_eq!(total, n(&c["sent"]));
    assert!(stdout.contains("COMMANDS"), "{stdout}");
    // The fleet itself was undisturbed.
    assert_eq!((s["ramp"]["booted"].as_u64(), s["ramp"]["failures"].as_u64()), (Some(8), Some(0)), "{stderr}");
    assert_eq!((s["timeouts"].as_u64(), s["disconnects"].as_u64()), (Some(0), Some(0)), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_a_201_fleet_and_their_round_trip_includes_the_answer_delay() {
    let server = start_server();
    let out = tempfile::tempdir().expect("temp dir");
    let json_path = out.path().join("cmd201.json");
    let get = r#"GetVariables={"getVariableData":[{"component":{"name":"OCPPCommCtrlr"},"variable":{"name":"HeartbeatInterval"}}]}"#;
    let start = r#"RequestStartTransaction={"remoteStartId":7,"idToken":{"idToken":"BENCH-TAG","type":"ISO14443"}}"#;
    let extra =
        ["--command", get, "--command", r#"Reset={"type":"Immediate"}"#, "--command", start, "--answer-delay", "50"];
    let child = bench(&fleet_args(server.port, "cmda", "2.0.1", &json_path, &extra));
    let (ok, stdout, stderr) = finish(child, Duration::from_secs(120)).await;
    assert!(ok, "ocpp-bench failed:\n{stdout}\n{stderr}");
    let s = summary(&json_path);
    check_commands(&s, &stdout, &stderr, &["GetVariables", "Reset", "RequestStartTransaction"], 50.0);
    let c = &s["commands"];
    assert_eq!(c["answer_delay_ms"], serde_json::json!([50, 50]));
    assert_eq!(c["mix"], serde_json::json!(["GetVariables", "Reset", "RequestStartTransaction"]));
    // Round-robin: 40 commands over three actions are 14, 13, 13.
    let sent = |a: &str| c["actions"][a]["sent"].as_u64();
    assert_eq!((sent("GetVariables"), sent("Reset"), sent("RequestStartTransaction")), (Some(14), Some(13), Some(13)));
    // GetVariables answers carry no status: "answered"; the others "accepted".
    assert_eq!(c["actions"]["GetVariables"]["by_status"], serde_json::json!({"answered": 14}), "{c}");
    assert_eq!(c["actions"]["Reset"]["by_status"], serde_json::json!({"accepted": 13}), "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_fleet_answers_reset_as_told_and_the_api_reports_it_rejected() {
    let server = start_server();
    let out = tempfile::tempdir().expect("temp dir");
    let json_path = out.path().join("cmd16.json");
    let extra = [
        "--command",
        r#"Reset={"type":"Soft"}"#,
        "--command",
        r#"RemoteStartTransaction={"idTag":"BENCH-TAG"}"#,
        "--command",
        "GetConfiguration",
        "--command",
        r#"TriggerMessage={"requestedMessage":"Heartbeat"}"#,
        "--answer",
        r#"Reset={"status":"Rejected"}"#,
        "--answer-delay",
        "20-60",
    ];
    let child = bench(&fleet_args(server.port, "cmdb", "1.6", &json_path, &extra));
    let (ok, stdout, stderr) = finish(child, Duration::from_secs(120)).await;
    assert!(ok, "ocpp-bench failed:\n{stdout}\n{stderr}");
    let s = summary(&json_path);
    check_commands(
        &s,
        &stdout,
        &stderr,
        &["Reset", "RemoteStartTransaction", "GetConfiguration", "TriggerMessage"],
        20.0,
    );
    let c = &s["commands"];
    assert_eq!(c["answer_overrides"], serde_json::json!(["Reset"]));
    assert_eq!(c["actions"]["Reset"]["by_status"], serde_json::json!({"rejected": 10}), "{c}");
    assert_eq!(c["actions"]["RemoteStartTransaction"]["by_status"], serde_json::json!({"accepted": 10}), "{c}");
    assert!(stdout.contains("status rejected 10"), "{stdout}");
}
