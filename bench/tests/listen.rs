//! End to end: `listen` on the receiving end of the feed (SSE clients and webhook receivers) while
//! a small `fleet` charges, against the real server (ocpp-css, in-process on port 0 with a
//! temporary data directory).

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_counts_every_event_over_sse_and_webhooks_while_a_fleet_charges() {
    let server = start_server_with(|s| {
        s.webhooks.allow_private_destinations = true;
        s.limits.unauthenticated_connections_per_address = 0;
    });
    let api = format!("http://127.0.0.1:{}/api/v1", server.port);
    let dir = tempfile::tempdir().expect("temp dir");
    let (fleet_json, listen_json) = (dir.path().join("fleet.json"), dir.path().join("listen.json"));
    let email = "bench@listen.example.com";
    // The account first, so that `listen` can sign in while the fleet provisions its stations.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{api}/accounts"))
        .json(&json!({"email": email, "password": "bench-account-password", "name": "listen", "slug": "listen"}))
        .send()
        .await
        .expect("sign-up sent");
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());

    let fleet = bench(
        &[
            "fleet",
            "--provision-api",
            &api,
            "--tenant",
            "listen",
            "--stations",
            "10",
            "--connect-rate",
            "200",
            "--hold",
            "12",
            "--heartbeat-rate",
            "5",
            "--transaction-rate",
            "4",
            "--meter-interval",
            "0.2",
            "--threads",
            "1",
            "--json",
            fleet_json.to_str().expect("utf-8 path"),
        ]
        .map(String::from),
    );
    let listen = [
        "listen",
        "--api",
        &format!("http://127.0.0.1:{}", server.port),
        "--tenant",
        "listen",
        "--sse-clients",
        "3",
        "--webhooks",
        "2",
        "--duration",
        "5",
        "--warmup",
        "3",
        "--drain",
        "10",
        "--threads",
        "1",
        "--json",
        listen_json.to_str().expect("utf-8 path"),
    ]
    .map(String::from);
    // The fleet's ramp takes well under 2 s; the window then falls inside its hold.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ok, stdout, stderr) = run_bench(listen.to_vec(), Duration::from_secs(60)).await;
    assert!(ok, "listen failed:\n{stdout}\n{stderr}");
    let (fleet_ok, _, fleet_err) = finish(fleet, Duration::from_secs(60)).await;
    assert!(fleet_ok, "fleet failed: {fleet_err}");

    let s: Value = summary(&listen_json);
    let n = |v: &Value| v.as_u64().unwrap_or(u64::MAX);
    let sse = &s["sse"];
    assert_eq!(n(&sse["opened"]), 3, "{sse}");
    // 4 transactions a second, each five events: every client hears them all, in order, once.
    assert!(n(&sse["per_client_min"]) >= 40, "{sse}\n{stderr}");
    assert_eq!((n(&sse["duplicates"]), n(&sse["out_of_order"]), n(&sse["without_time"])), (0, 0, 0), "{sse}");
    assert!(sse["lag_ms"]["p50"].as_f64().unwrap_or(-1.0) > 0.0, "{sse}");
    let wh = &s["webhooks"];
    assert_eq!(n(&wh["endpoints"]), 2, "{wh}");
    assert_eq!(n(&wh["deleted"]), 2, "{wh}");
    assert!(n(&wh["per_endpoint_min"]) >= 40, "{wh}\n{stderr}");
    assert_eq!(wh["all_in_order"], true, "{wh}");
    assert_eq!(n(&wh["duplicates"]), 0, "{wh}");
    for e in wh["per_endpoint"].as_array().expect("endpoints") {
        assert!(e["caught_up_secs"].is_number(), "a receiver never caught up with SSE: {e}");
        assert_eq!(n(&e["malformed"]), 0, "{e}");
    }
    assert_eq!(s["timeline"].as_array().map(Vec::len), Some(5));
    assert!(stdout.contains("deliveries") && stdout.contains("caught up"), "{stdout}");
    // Deleted: the account has no webhook left.
    let token = token(&http, &api, email).await;
    let hooks: Value = http
        .get(format!("{api}/webhooks"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list sent")
        .json()
        .await
        .expect("list answer");
    assert_eq!(hooks["items"].as_array().map(Vec::len), Some(0), "{hooks}");
}
