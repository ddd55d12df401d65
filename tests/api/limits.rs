//! Every bound on what an outsider's input consumes, tried as a hostile user would, over real
//! sockets. Where the node's own memory or counters are what is measured, the real binary runs in
//! its own process (the test process's recorder and heap are shared by every test app).

use crate::helpers::{series_value, spawn_app, spawn_app_with, try_connect, StationClient};
use crate::raw::{self, Ending};
use crate::restart::{start_with, Server};
use futures_util::SinkExt;
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

fn limit_hits(metrics: &str, limit: &str) -> f64 {
    series_value(metrics, "ocpp_limit_hits_total", &[("limit", limit)])
}

/// The real binary with these settings, tenant "acme" signed up and its station CP001 provisioned:
/// its data dir (kept for as long as the server runs), the server, an HTTP client, CP001's password.
async fn binary_with_station(env: &[(&str, &str)]) -> (tempfile::TempDir, Server, reqwest::Client, String) {
    let data = tempfile::tempdir().unwrap();
    let server = start_with(data.path(), env);
    let http = reqwest::Client::new();
    let token = server.sign_in(&http).await;
    let password = server.station(&http, &token, "CP001").await;
    (data, server, http, password)
}

#[tokio::test]
async fn a_frame_header_declaring_two_to_the_forty_bytes_is_closed_with_1009_before_the_node_buffers_it() {
    let (_data, server, http, password) = binary_with_station(&[]).await;
    let fresh = server.metrics(&http).await;
    assert!(
        fresh.lines().any(|l| l.starts_with("ocpp_limit_hits_total{") && l.contains("limit=\"frame_size\"")),
        "every limit is exported before it is hit: {fresh}"
    );
    let before = raw::rss_kib(server.child.id());

    let stream = raw::station(server.port, "acme", "CP001", &password, None).await;
    let (mut reader, mut writer) = stream.into_split();
    let flood = tokio::spawn(async move {
        writer.write_all(&raw::header(true, 1, 1 << 40)).await.expect("header sent");
        let chunk = vec![b'a'; 64 * 1024];
        let (mut sent, started) = (0u64, Instant::now());
        while started.elapsed() < Duration::from_secs(20) {
            if writer.write_all(&chunk).await.is_err() {
                return (sent, true);
            }
            sent += chunk.len() as u64;
        }
        (sent, false)
    });
    let (ending, _) = raw::read_until_close(&mut reader, Duration::from_secs(10)).await;
    assert_eq!(ending, Ending::Close(1009));
    let (sent, cut_off) = tokio::time::timeout(Duration::from_secs(30), flood).await.expect("flood ends").unwrap();
    assert!(cut_off, "the server ended the connection; {sent} bytes were sent");
    let after = raw::rss_kib(server.child.id());
    assert!(after < before + 32 * 1024, "RSS grew from {before} KiB to {after} KiB after {sent} bytes");

    let metrics = server.metrics(&http).await;
    assert_eq!(limit_hits(&metrics, "frame_size"), 1.0);
    assert_eq!(series_value(&metrics, "ocpp_disconnects_total", &[("reason", "frame_too_big")]), 1.0);
}

#[tokio::test]
async fn a_fragmented_message_growing_past_the_limit_is_closed_with_1009_and_a_legal_one_is_answered() {
    let app = spawn_app_with(|s| s.ocpp.max_frame_bytes = 4096).await;
    let t = app.tenant("acme").await;
    let password = app.station(&t, "CP001").await;
    let mut stream = raw::station(app.port, "acme", "CP001", &password, None).await;
    // A legal fragmented message (3 frames, a ping between them) is put together and answered.
    let call = r#"[2,"f1","Heartbeat",{}]"#.as_bytes();
    let mut bytes = raw::frame(false, 1, &call[..5]);
    bytes.extend(raw::frame(true, 0x9, b"hi"));
    bytes.extend(raw::frame(false, 0, &call[5..10]));
    bytes.extend(raw::frame(true, 0, &call[10..]));
    stream.write_all(&bytes).await.unwrap();
    let mut answered = false;
    for _ in 0..2 {
        let mut h = [0u8; 2];
        stream.read_exact(&mut h).await.unwrap();
        let mut payload = vec![0u8; (h[1] & 0x7f) as usize];
        stream.read_exact(&mut payload).await.unwrap();
        answered |= h[0] & 0x0f == 1 && String::from_utf8_lossy(&payload).contains("\"f1\"");
    }
    assert!(answered, "the fragmented CALL was answered");
    // Then frames of 1 KiB each, without end: cut off once the message passes 4 KiB.
    stream.write_all(&raw::frame(false, 1, &[b' '; 1024])).await.unwrap();
    for _ in 0..8 {
        if stream.write_all(&raw::frame(false, 0, &[b' '; 1024])).await.is_err() {
            break;
        }
    }
    let (ending, _) = raw::read_until_close(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(ending, Ending::Close(1009));
}

#[tokio::test]
async fn a_text_message_that_is_not_utf8_is_closed_with_1007() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let password = app.station(&t, "CP001").await;
    let mut stream = raw::station(app.port, "acme", "CP001", &password, None).await;
    stream.write_all(&raw::frame(true, 1, &[b'[', 0xff, 0xfe, b']'])).await.unwrap();
    let (ending, _) = raw::read_until_close(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(ending, Ending::Close(1007));
    let mut again = StationClient::connect(app.port, "acme", "CP001", &password).await.unwrap();
    assert_eq!(again.call("Heartbeat", json!({})).await[0], 3, "the station may come back");
}

#[tokio::test]
async fn a_binary_frame_on_201_is_answered_with_rpc_framework_error() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let password = app.station(&t, "CP201").await;
    let mut cp = StationClient::connect_201(app.port, "acme", "CP201", &password).await.unwrap();
    cp.ws.send(Message::Binary(vec![1, 2, 3])).await.unwrap();
    let answer = cp.recv().await;
    assert_eq!(
        (answer[0].as_i64(), answer[1].as_str(), answer[2].as_str()),
        (Some(4), Some("-1"), Some("RpcFrameworkError"))
    );
}

#[tokio::test]
async fn a_station_that_does_not_read_is_cut_off_as_a_slow_consumer_with_its_queue_within_the_bound() {
    const BOUND: f64 = 65536.0;
    let (_data, server, http, password) = binary_with_station(&[
        ("OCPP_CSS__LIMITS__STATION_MESSAGES_PER_SEC", "0"),
        ("OCPP_CSS__LIMITS__OUTBOUND_QUEUE_BYTES", "65536"),
        ("OCPP_CSS__LIMITS__SLOW_CONSUMER_SECS", "2"),
    ])
    .await;
    let before = raw::rss_kib(server.child.id());
    // A small receive window, and never a read.
    let stream = raw::station(server.port, "acme", "CP001", &password, Some(4096)).await;
    let (_never_read, mut writer) = stream.into_split();
    let flood = tokio::spawn(async move {
        let mut batch = Vec::new();
        for i in 0..200 {
            batch.extend(raw::text(&format!(r#"[2,"h{i}","Heartbeat",{{}}]"#)));
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if writer.write_all(&batch).await.is_err() {
                return true;
            }
        }
        false
    });
    let mut peak = 0.0f64;
    while !flood.is_finished() {
        let queued = series_value(&server.metrics(&http).await, "ocpp_outbound_queued_bytes", &[]);
        peak = peak.max(queued);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(flood.await.unwrap(), "the server cut the station off within a minute");
    assert!(peak <= BOUND + 256.0, "queued bytes peaked at {peak}");
    let metrics = server.metrics(&http).await;
    assert_eq!(series_value(&metrics, "ocpp_disconnects_total", &[("reason", "slow_consumer")]), 1.0);
    assert_eq!(limit_hits(&metrics, "outbound_queue") + limit_hits(&metrics, "slow_consumer"), 1.0);
    assert_eq!(series_value(&metrics, "ocpp_outbound_queued_bytes", &[]), 0.0, "nothing left counted");
    let after = raw::rss_kib(server.child.id());
    assert!(after < before + 32 * 1024, "RSS grew from {before} KiB to {after} KiB");
}

#[tokio::test]
async fn a_request_body_that_never_comes_is_answered_408_and_the_connection_closed() {
    let app = spawn_app_with(|s| s.limits.body_timeout_secs = 1).await;
    let before = limit_hits(&app.metrics().await, "body_timeout");
    let mut stream = raw::tcp(app.port, None, None).await.unwrap();
    let request = "POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"email\":";
    stream.write_all(request.as_bytes()).await.unwrap();
    let started = Instant::now();
    let head = tokio::time::timeout(Duration::from_secs(5), raw::read_head(&mut stream)).await.unwrap().unwrap();
    assert_eq!(raw::status_of(&head), 408, "{head}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(raw::closed_within(&mut stream, Duration::from_secs(3)).await, "and the connection is closed");
    assert!(limit_hits(&app.metrics().await, "body_timeout") > before);
}

#[tokio::test]
async fn a_request_body_over_the_api_limit_is_refused_with_413_before_it_is_read() {
    let app = spawn_app_with(|s| s.limits.api_body_bytes = 1024).await;
    let big = json!({"email": "ops@big.example", "password": "x".repeat(2000), "name": "big", "slug": "big"});
    let (status, body) = app.request(reqwest::Method::POST, "/accounts", None, Some(big)).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large")), "{body}");
    assert_eq!(body["details"]["limit"], 1024);
    let t = app.tenant("small").await;
    assert!(!t.token.is_empty(), "a body within the limit is taken");
    assert!(limit_hits(&app.metrics().await, "body_size") >= 1.0);
}

#[tokio::test]
async fn headers_that_never_finish_are_timed_out_on_a_first_and_on_a_later_request() {
    let app = spawn_app_with(|s| {
        s.limits.header_timeout_ms = 500;
        s.limits.keep_alive_secs = 1;
    })
    .await;
    let before = limit_hits(&app.metrics().await, "header_timeout");
    // The first request never finishes its headers.
    let mut first = raw::tcp(app.port, None, None).await.unwrap();
    first.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    assert!(raw::closed_within(&mut first, Duration::from_secs(4)).await, "first request timed out");
    // A keep-alive connection whose second request dribbles in.
    let mut later = raw::tcp(app.port, None, None).await.unwrap();
    later.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let head = raw::read_head(&mut later).await.unwrap();
    assert_eq!(raw::status_of(&head), 200, "{head}");
    let started = Instant::now();
    let dribble = async {
        for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa" {
            if later.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    dribble.await;
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), later.read_to_end(&mut rest)).await.is_ok();
    assert!(ended, "the dribbling connection was closed");
    assert!(started.elapsed() < Duration::from_secs(8), "within keep-alive + header timeout (+ slack)");
    let after = limit_hits(&app.metrics().await, "header_timeout");
    assert!(after >= before + 2.0, "{before} -> {after}");
}

#[tokio::test]
async fn one_address_cannot_hold_more_unauthenticated_connections_than_its_limit() {
    let app = spawn_app_with(|s| s.limits.unauthenticated_connections_per_address = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(raw::tcp(app.port, Some("127.0.0.7"), None).await.unwrap());
    }
    // Wait until the server has taken all three in.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = raw::tcp(app.port, Some("127.0.0.7"), None).await.unwrap();
    assert!(raw::closed_within(&mut fourth, Duration::from_secs(2)).await, "closed as it was accepted");
    let other = crate::helpers::client_from("127.0.0.8");
    let ok = other.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK, "another address is served");
    // One of the three goes: the address may connect again.
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = raw::tcp(app.port, Some("127.0.0.7"), None).await.unwrap();
    again.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(raw::status_of(&raw::read_head(&mut again).await.unwrap()), 200);
    assert!(limit_hits(&app.metrics().await, "connections_per_address") >= 1.0);
}

#[tokio::test]
async fn refusals_are_slow_and_a_connection_over_its_address_limit_is_never_served() {
    let app = spawn_app_with(|s| {
        s.limits.refusal_delay_ms = 600;
        s.limits.unauthenticated_connections_per_address = 1;
        s.limits.signups_per_address = 1;
    })
    .await;
    let _holds_the_one = raw::tcp(app.port, Some("127.0.4.1"), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Over the limit: held, its request answered 429 only after the delay, then closed.
    let mut over = raw::tcp(app.port, Some("127.0.4.1"), None).await.unwrap();
    let started = Instant::now();
    over.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let head = raw::read_head(&mut over).await.unwrap();
    let waited = started.elapsed();
    if !head.is_empty() {
        assert_eq!(raw::status_of(&head), 429, "{head}");
    }
    assert!(waited >= Duration::from_millis(450), "refused after the delay, not at once: {waited:?}");
    assert!(raw::closed_within(&mut over, Duration::from_secs(3)).await);
    // A 429 of the API is slow too.
    let sign_up = |slug: &str| json!({"email": format!("ops@{slug}.example"), "password": "s3cret-pass", "name": slug, "slug": slug});
    let client = crate::helpers::client_from("127.0.4.2");
    let (status, _) = app.request_with(&client, reqwest::Method::POST, "/accounts", None, Some(sign_up("one"))).await;
    assert_eq!(status, StatusCode::CREATED);
    let started = Instant::now();
    let (status, _) = app.request_with(&client, reqwest::Method::POST, "/accounts", None, Some(sign_up("two"))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(started.elapsed() >= Duration::from_millis(550), "{:?}", started.elapsed());
}

#[tokio::test]
async fn at_capacity_the_oldest_unauthenticated_connection_makes_room_for_a_new_client() {
    let app = spawn_app_with(|s| s.limits.max_connections = 4).await;
    let mut flood = Vec::new();
    for i in 0..4 {
        flood.push(raw::tcp(app.port, Some(&format!("127.0.1.{}", 10 + i)), None).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // A legitimate client still gets in; the oldest of the flood makes room.
    let ok = reqwest::Client::new().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(raw::closed_within(&mut flood[0], Duration::from_secs(2)).await, "the oldest was evicted");
    assert!(limit_hits(&app.metrics().await, "connection_evicted") >= 1.0);
}

#[tokio::test]
async fn a_brute_force_on_a_chosen_station_password_is_throttled_and_stops_costing_argon2_runs() {
    let data = tempfile::tempdir().unwrap();
    let server = start_with(
        data.path(),
        &[
            ("OCPP_CSS__LIMITS__AUTH_FAILURES_PER_STATION", "3"),
            ("OCPP_CSS__LIMITS__AUTH_BACKOFF_MAX_SECS", "60"),
            ("OCPP_CSS__LIMITS__REFUSAL_DELAY_MS", "0"),
        ],
    );
    let http = reqwest::Client::new();
    let token = server.sign_in(&http).await;
    // An operator-chosen password may be guessable: it is hashed and checked with argon2.
    let password = "operator-chosen-pw-01".to_string();
    server.station_with_password(&http, &token, "CP001", &password).await;
    // The real station connected once: it is recognised from now on without argon2.
    drop(StationClient::connect(server.port, "acme", "CP001", &password).await.unwrap());
    let argon2 = |m: &str| series_value(m, "ocpp_argon2_jobs_total", &[]);
    let start = argon2(&server.metrics(&http).await);
    for i in 0..3 {
        let wrong = format!("wrong-password-{i:04}");
        let refused = try_connect(server.port, "acme", "CP001", Some(("CP001", &wrong)), None).await;
        assert_eq!(refused.err().as_deref(), Some("HTTP 401"));
    }
    assert_eq!(argon2(&server.metrics(&http).await), start + 3.0, "each wrong password cost one argon2 run");
    for i in 0..10 {
        let wrong = format!("more-wrong-pass-{i:04}");
        let refused = try_connect(server.port, "acme", "CP001", Some(("CP001", &wrong)), None).await;
        assert_eq!(refused.err().as_deref(), Some("HTTP 429"), "attempt {i} during the back-off");
    }
    let stream = raw::tcp(server.port, None, None).await.unwrap();
    let (status, head, _) = raw::handshake(stream, "acme", "CP001", "yet-another-wrong-one", "ocpp1.6").await;
    assert_eq!(status, 429);
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    let metrics = server.metrics(&http).await;
    assert_eq!(argon2(&metrics), start + 3.0, "no argon2 run while throttled");
    assert_eq!(limit_hits(&metrics, "auth_backoff"), 11.0);
    let mut real =
        StationClient::connect(server.port, "acme", "CP001", &password).await.expect("the real station gets in");
    assert_eq!(real.call("Heartbeat", json!({})).await[0], 3);
}

#[tokio::test]
async fn generated_station_passwords_cost_no_argon2_run_right_or_wrong_and_wrong_ones_still_back_off() {
    let (_data, server, http, password) = binary_with_station(&[
        ("OCPP_CSS__LIMITS__AUTH_FAILURES_PER_STATION", "3"),
        ("OCPP_CSS__LIMITS__AUTH_BACKOFF_MAX_SECS", "60"),
        ("OCPP_CSS__LIMITS__REFUSAL_DELAY_MS", "0"),
    ])
    .await;
    let argon2 = |m: &str| series_value(m, "ocpp_argon2_jobs_total", &[]);
    let start = argon2(&server.metrics(&http).await);
    // The first connection of a station with a generated password: no argon2 run.
    drop(StationClient::connect(server.port, "acme", "CP001", &password).await.unwrap());
    for i in 0..3 {
        let wrong = format!("wrong-password-{i:04}");
        let refused = try_connect(server.port, "acme", "CP001", Some(("CP001", &wrong)), None).await;
        assert_eq!(refused.err().as_deref(), Some("HTTP 401"));
    }
    for i in 0..5 {
        let wrong = format!("more-wrong-pass-{i:04}");
        let refused = try_connect(server.port, "acme", "CP001", Some(("CP001", &wrong)), None).await;
        assert_eq!(refused.err().as_deref(), Some("HTTP 429"), "attempt {i} during the back-off");
    }
    let metrics = server.metrics(&http).await;
    assert_eq!(argon2(&metrics), start, "no argon2 run for a generated password, right or wrong");
    assert_eq!(limit_hits(&metrics, "auth_backoff"), 5.0);
    // The right password gets in during the back-off: failing against a station's id does not
    // lock the station out.
    let mut real =
        StationClient::connect(server.port, "acme", "CP001", &password).await.expect("the real station gets in");
    assert_eq!(real.call("Heartbeat", json!({})).await[0], 3);
}

#[tokio::test]
async fn a_station_in_a_reconnect_loop_is_refused_with_retry_after() {
    let app = spawn_app_with(|s| {
        s.limits.station_reconnects = 3;
        s.limits.station_reconnect_window_secs = 60;
    })
    .await;
    let t = app.tenant("acme").await;
    let password = app.station(&t, "CP001").await;
    for _ in 0..3 {
        let mut cp = StationClient::connect(app.port, "acme", "CP001", &password).await.unwrap();
        cp.ws.close(None).await.unwrap();
    }
    let stream = raw::tcp(app.port, None, None).await.unwrap();
    let (status, head, _) = raw::handshake(stream, "acme", "CP001", &password, "ocpp1.6").await;
    assert_eq!(status, 429, "{head}");
    let retry: u64 = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("retry-after:").map(|v| v.trim().to_string()))
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    let other = app.station(&t, "CP002").await;
    assert!(StationClient::connect(app.port, "acme", "CP002", &other).await.is_ok(), "other stations are not affected");
    assert!(limit_hits(&app.metrics().await, "reconnects") >= 1.0);
}

#[tokio::test]
async fn an_over_quota_data_transfer_is_rejected_and_not_stored() {
    let app = spawn_app_with(|s| s.limits.station_event_bytes = 1500).await;
    let t = app.tenant("acme").await;
    let mut cp = app.connected_station(&t, "CP001").await;
    cp.boot().await;
    let data = "d".repeat(1000);
    assert_eq!(cp.ok("DataTransfer", json!({"vendorId": "v", "data": data})).await["status"], "UnknownVendorId");
    assert_eq!(cp.ok("DataTransfer", json!({"vendorId": "v", "data": data})).await["status"], "Rejected");
    let security =
        json!({"type": "TamperDetectionActivated", "timestamp": "2026-11-25T10:00:00Z", "techInfo": "x".repeat(250)});
    let refused = cp.call("SecurityEventNotification", security).await;
    assert_eq!((refused[0].as_i64(), refused[2].as_str()), (Some(4), Some("GenericError")), "{refused}");
    // Meter values and transactions are never refused for it.
    let start = json!({"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": "2026-11-25T10:00:00Z"});
    assert!(cp.ok("StartTransaction", start).await["transactionId"].is_number());
    let (_, export) = app.get("/account/export", &t.token).await;
    let events = export["stations"][0]["events"].as_array().expect("events").len();
    assert_eq!(events, 1, "only the acknowledged DataTransfer is kept");
    assert!(limit_hits(&app.metrics().await, "event_storage") >= 2.0);
}

#[tokio::test]
async fn a_station_sending_past_its_rate_is_slowed_and_every_message_is_answered() {
    let app = spawn_app_with(|s| {
        s.limits.station_messages_per_sec = 5.0;
        s.limits.station_message_burst = 5;
    })
    .await;
    let t = app.tenant("acme").await;
    let mut cp = app.connected_station(&t, "CP001").await;
    let started = Instant::now();
    for i in 0..20 {
        cp.send_text(&json!([2, format!("r{i}"), "Heartbeat", {}]).to_string()).await;
    }
    for i in 0..20 {
        let answer = cp.recv().await;
        assert_eq!((answer[0].as_i64(), answer[1].as_str()), (Some(3), Some(format!("r{i}").as_str())));
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(2500), "15 over the burst at 5/s take 3 s, took {elapsed:?}");
    assert!(limit_hits(&app.metrics().await, "message_rate") >= 10.0);
}

#[tokio::test]
async fn sign_ups_from_one_address_are_limited() {
    let app = spawn_app_with(|s| s.limits.signups_per_address = 2).await;
    let sign_up = |slug: &str| json!({"email": format!("ops@{slug}.example"), "password": "s3cret-pass", "name": slug, "slug": slug});
    for slug in ["one", "two"] {
        let (status, body) = app.request(reqwest::Method::POST, "/accounts", None, Some(sign_up(slug))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let res = app.http.post(app.api("/accounts")).json(&sign_up("three")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    let other = crate::helpers::client_from("127.0.3.1");
    let (status, _) = app.request_with(&other, reqwest::Method::POST, "/accounts", None, Some(sign_up("four"))).await;
    assert_eq!(status, StatusCode::CREATED, "another address may sign up");
}

#[tokio::test]
async fn a_tenant_cannot_provision_past_its_station_quota() {
    let app = spawn_app_with(|s| s.limits.stations_per_tenant = 3).await;
    let t = app.tenant("acme").await;
    for id in ["CP1", "CP2"] {
        app.station(&t, id).await;
    }
    let (status, body) =
        app.post("/stations/bulk", &t.token, json!({"stations": [{"id": "CP2"}, {"id": "CP3"}, {"id": "CP4"}]})).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("quota_exceeded")), "{body}");
    assert_eq!(body["details"]["limit"], 3);
    let (status, body) =
        app.post("/stations/bulk", &t.token, json!({"stations": [{"id": "CP2"}, {"id": "CP3"}]})).await;
    assert_eq!(status, StatusCode::OK, "an existing station is not a new one: {body}");
    let (status, body) = app.post("/stations", &t.token, json!({"id": "CP4"})).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("quota_exceeded")), "{body}");
    let other = app.tenant("other").await;
    app.station(&other, "CP4").await;
}

#[tokio::test]
async fn answers_to_commands_never_sent_are_counted_and_change_nothing() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let mut cp = app.connected_station(&t, "CP001").await;
    let before = series_value(&app.metrics().await, "ocpp_unsolicited_answers_total", &[]);
    for i in 0..50 {
        cp.send_text(&format!(r#"[3,"never-sent-{i}",{{}}]"#)).await;
    }
    assert_eq!(cp.call("Heartbeat", json!({})).await[0], 3, "the session goes on");
    assert!(series_value(&app.metrics().await, "ocpp_unsolicited_answers_total", &[]) >= before + 50.0);
}

#[tokio::test]
async fn a_command_past_the_waiting_bound_is_refused_with_429_and_counted_while_those_before_it_go_out() {
    let app = spawn_app_with(|s| s.limits.waiting_commands = 1).await;
    let t = app.tenant("acme").await;
    let mut cp = app.connected_station(&t, "CP001").await;
    cp.boot().await;
    let before = limit_hits(&app.metrics().await, "waiting_commands");
    let send = |key: &'static str, after_ms: u64| {
        let (app, token) = (&app, t.token.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            app.post("/stations/CP001/commands/ChangeConfiguration", &token, json!({"key": key, "value": "1"})).await
        }
    };
    // A goes on the wire, B waits behind it (the one place there is), C finds no room.
    let station = async {
        let a = cp.recv().await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        cp.send_text(&json!([3, a[1], {"status": "Accepted"}]).to_string()).await;
        let b = cp.recv().await;
        cp.send_text(&json!([3, b[1], {"status": "Accepted"}]).to_string()).await;
        (a, b)
    };
    let ((sa, _), (sb, _), (sc, bc), (a, b)) = tokio::join!(send("A", 0), send("B", 100), send("C", 300), station);
    assert_eq!((sa, sb), (StatusCode::OK, StatusCode::OK));
    assert_eq!((sc, bc["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")), "{bc}");
    assert_eq!((a[3]["key"].as_str(), b[3]["key"].as_str()), (Some("A"), Some("B")));
    let after = limit_hits(&app.metrics().await, "waiting_commands");
    assert!(after > before, "the refusal is counted: {before} then {after}");
}

#[tokio::test]
async fn a_station_session_keeps_its_place_in_the_connection_table_after_the_handshake() {
    // The API client's pooled connection, two stations and one idle client fill a table of 4. The
    // sessions own their sockets once the handshake is answered; they still count, so a new client
    // must evict an idle connection, and never a station.
    let app = spawn_app_with(|s| s.limits.max_connections = 4).await;
    let t = app.tenant("acme").await;
    let mut one = app.connected_station(&t, "CP001").await;
    let mut two = app.connected_station(&t, "CP002").await;
    let _idle = raw::tcp(app.port, Some("127.0.1.20"), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ok = reqwest::Client::new().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(limit_hits(&metrics, "connection_evicted") >= 1.0, "the table was full: {metrics}");
    for cp in [&mut one, &mut two] {
        // Answered at all (the station is not booted): its session is alive.
        let answer = cp.call("Heartbeat", json!({})).await;
        assert!(matches!(answer[0].as_u64(), Some(3 | 4)), "the stations were not evicted: {answer}");
    }
}
