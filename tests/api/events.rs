//! The tenant's event feed over real HTTP: a Server-Sent Events client following a charging
//! session and resuming after a disconnect, filters, tenancy, the bound on streams; webhooks
//! delivered to a receiver in the test, signed, in order, retried, disabled and resumed.

use crate::helpers::{series_value, spawn_app_with, StationClient, TestApp};
use crate::restart::start_with;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One Server-Sent Event as a client sees it.
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: u64,
    pub event: String,
    pub data: Value,
}

/// A Server-Sent Events client on `GET /api/v1/events`.
pub struct SseClient {
    response: reqwest::Response,
    buffer: String,
    pending: VecDeque<Sse>,
}

impl SseClient {
    /// Opens the stream (`query` after `?`, `last_event_id` as the header); panics unless 200.
    pub async fn open(app_url: &str, token: &str, query: &str, last_event_id: Option<u64>) -> SseClient {
        match Self::try_open(app_url, token, query, last_event_id).await {
            Ok(client) => client,
            Err((status, body)) => panic!("event stream refused: {status} {body}"),
        }
    }

    pub async fn try_open(
        app_url: &str,
        token: &str,
        query: &str,
        last_event_id: Option<u64>,
    ) -> Result<SseClient, (StatusCode, String)> {
        let mut req = reqwest::Client::new().get(format!("{app_url}/api/v1/events?{query}")).bearer_auth(token);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let response = req.send().await.expect("stream request sent");
        if response.status() != StatusCode::OK {
            let status = response.status();
            return Err((status, response.text().await.unwrap_or_default()));
        }
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        Ok(SseClient { response, buffer: String::new(), pending: VecDeque::new() })
    }

    /// The next event, or None when none came within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let chunk = match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return None,
                Ok(chunk) => chunk.expect("stream read").expect("stream still open"),
            };
            self.buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).expect("data is JSON"));
                    }
                }
                // Comments (keep-alives) and the retry line carry no event.
                if let (Some(id), Some(event), Some(data)) = (id, event, data) {
                    self.pending.push_back(Sse { id, event, data });
                }
            }
        }
    }

    /// Whether the server ended the stream within `wait` (events before the end are passed over).
    pub async fn ended_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return false,
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) | Ok(Err(_)) => return true,
            }
        }
    }

    /// The next event; panics when none comes within 10 s.
    pub async fn next(&mut self) -> Sse {
        self.next_within(Duration::from_secs(10)).await.expect("an event within 10 s")
    }

    /// Events until one of type `last` (included).
    pub async fn until(&mut self, last: &str) -> Vec<Sse> {
        let mut seen = Vec::new();
        loop {
            let e = self.next().await;
            let done = e.event == last;
            seen.push(e);
            if done {
                return seen;
            }
        }
    }
}

/// A charging session on a 1.6 station on day `day` of December 2026: boot, a status, start, two
/// meter readings, stop. Sessions of different days are different transactions (a start with the
/// same connector, meter and time is a retry of the first).
pub async fn charging_session(cp: &mut StationClient, day: u32) {
    let at = |time: &str| format!("2026-12-{day:02}T{time}Z");
    cp.boot().await;
    cp.ok("StatusNotification", json!({"connectorId": 1, "errorCode": "NoError", "status": "Preparing"})).await;
    let start = cp
        .ok(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "RFID-1", "meterStart": 1000, "timestamp": at("10:00:00")}),
        )
        .await;
    let tx = start["transactionId"].as_i64().expect("transaction id");
    for (wh, time) in [(1500, "10:15:00"), (2200, "10:30:00")] {
        cp.ok(
            "MeterValues",
            json!({"connectorId": 1, "transactionId": tx, "meterValue": [{"timestamp": at(time),
                   "sampledValue": [{"value": wh.to_string(), "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}]}),
        )
        .await;
    }
    cp.ok("StopTransaction", json!({"transactionId": tx, "meterStop": 3000, "timestamp": at("11:00:00")})).await;
}

/// Registers the id tag [`charging_session`] starts with, so it is accepted.
pub async fn accept_tag(app: &TestApp, token: &str) {
    let (status, body) =
        app.request(reqwest::Method::PUT, "/id-tags/RFID-1", Some(token), Some(json!({"status": "Accepted"}))).await;
    assert!(status.is_success(), "{body}");
}

/// The types of a charging session's events, in order, from the connection on.
pub const SESSION_TYPES: [&str; 7] = [
    "station.connected",
    "station.booted",
    "station.status_changed",
    "transaction.started",
    "transaction.updated",
    "transaction.updated",
    "transaction.ended",
];

fn types(events: &[Sse]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

#[tokio::test]
async fn an_sse_client_sees_a_charging_session_in_order_and_resumes_without_a_gap_or_a_duplicate() {
    let app = spawn_app_with(|_| {}).await;
    let t = app.tenant("feed").await;
    accept_tag(&app, &t.token).await;
    let password = app.station(&t, "CP1").await;
    let base = app.url("");
    let mut stream = SseClient::open(&base, &t.token, "", None).await;
    let mut cp = StationClient::connect(app.port, &t.slug, "CP1", &password).await.expect("connects");
    charging_session(&mut cp, 1).await;
    let events = stream.until("transaction.ended").await;
    assert_eq!(types(&events), SESSION_TYPES, "{events:?}");
    assert!(events.windows(2).all(|w| w[0].id < w[1].id), "ids grow: {events:?}");
    for e in &events {
        assert_eq!(e.data["id"], json!(e.id));
        assert_eq!(e.data["type"], json!(e.event));
        assert_eq!(e.data["station_id"], json!("CP1"));
    }
    let ended = &events[6].data["body"];
    assert_eq!((ended["energy_wh"].as_i64(), ended["meter_stop_wh"].as_i64()), (Some(2000), Some(3000)), "{ended}");
    assert_eq!(events[4].data["body"]["meter_wh"], json!(1500.0));
    assert_eq!(events[1].data["body"]["vendor"], json!("ACME"));

    // A second session while the client is away for part of it: it read three events, dropped the
    // stream, and comes back with the last id it got.
    let mut first = SseClient::open(&base, &t.token, "", Some(events[6].id)).await;
    charging_session(&mut cp, 2).await;
    let got: Vec<Sse> = vec![first.next().await, first.next().await, first.next().await];
    drop(first);
    cp.ok("Heartbeat", json!({})).await;
    let mut again = SseClient::open(&base, &t.token, "", Some(got[2].id)).await;
    let rest = again.until("transaction.ended").await;
    let all: Vec<Sse> = got.into_iter().chain(rest).collect();
    assert_eq!(types(&all), SESSION_TYPES[1..].to_vec(), "no gap, no duplicate: {all:?}");
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "{all:?}");
    assert!(again.next_within(Duration::from_millis(500)).await.is_none(), "nothing more");
    cp.ok("Authorize", json!({"idTag": "UNKNOWN-9"})).await;
    let refused = again.next().await;
    assert_eq!(refused.event, "authorization.refused");
    assert_eq!(refused.data["body"], json!({"id_tag": "UNKNOWN-9", "status": "Invalid", "action": "Authorize"}));

    // A filter: one type; one station.
    let mut ended_only = SseClient::open(&base, &t.token, "types=transaction.ended", Some(0)).await;
    let only: Vec<Sse> = vec![ended_only.next().await, ended_only.next().await];
    assert_eq!(types(&only), ["transaction.ended", "transaction.ended"]);
    assert!(ended_only.next_within(Duration::from_millis(500)).await.is_none());
    let mut other_station = SseClient::open(&base, &t.token, "station=CP2", Some(0)).await;
    assert!(other_station.next_within(Duration::from_millis(500)).await.is_none());
    let (status, body) = app.get("/events?types=station.exploded", &t.token).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_query")), "{body}");
    assert!(body["message"].as_str().unwrap_or_default().contains("station.exploded"), "{body}");
}

#[tokio::test]
async fn no_event_of_another_tenant_ever_reaches_a_stream() {
    let app = spawn_app_with(|_| {}).await;
    let (a, b) = (app.tenant("tenant-a").await, app.tenant("tenant-b").await);
    accept_tag(&app, &a.token).await;
    let base = app.url("");
    let mut stream_b = SseClient::open(&base, &b.token, "", Some(0)).await;
    let mut stream_a = SseClient::open(&base, &a.token, "", Some(0)).await;
    let mut cp_a = app.connected_station(&a, "CP1").await;
    charging_session(&mut cp_a, 1).await;
    // B's own station, of the same name, after A's session.
    let mut cp_b = app.connected_station(&b, "CP1").await;
    cp_b.boot().await;
    assert_eq!(types(&stream_a.until("transaction.ended").await), SESSION_TYPES);
    let seen_b = vec![stream_b.next().await, stream_b.next().await];
    assert_eq!(types(&seen_b), ["station.connected", "station.booted"]);
    assert!(stream_b.next_within(Duration::from_millis(500)).await.is_none(), "only B's own events");
    // And B cannot read A's by naming an id of A's feed.
    let mut replay_b = SseClient::open(&base, &b.token, "", Some(0)).await;
    assert_eq!(types(&[replay_b.next().await, replay_b.next().await]), ["station.connected", "station.booted"]);
}

#[tokio::test]
async fn a_command_and_a_registration_change_are_in_the_feed() {
    let app = spawn_app_with(|_| {}).await;
    let t = app.tenant("feed-api").await;
    app.station(&t, "CP9").await;
    let base = app.url("");
    let mut stream = SseClient::open(&base, &t.token, "", None).await;
    let (status, body) = app
        .request(reqwest::Method::PATCH, "/stations/CP9", Some(&t.token), Some(json!({"registration": "blocked"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.post("/stations/CP9/commands/Reset?queue=true", &t.token, json!({"type": "Soft"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let changed = stream.next().await;
    assert_eq!(changed.event, "station.registration_changed");
    assert_eq!(changed.data["body"]["to"], json!("blocked"));
    let queued = stream.next().await;
    assert_eq!(queued.event, "command.queued");
    assert_eq!(queued.data["body"]["command_id"], body["command_id"]);
    assert_eq!(queued.data["body"]["action"], json!("Reset"));
}

#[tokio::test]
async fn streams_past_the_tenants_bound_are_refused_with_429_and_counted() {
    let app = spawn_app_with(|s| {
        s.limits.event_streams_per_tenant = 1;
        // A client that went is noticed when the stream next writes to it.
        s.events.keepalive_secs = 1;
    })
    .await;
    let t = app.tenant("feed-bound").await;
    let base = app.url("");
    let before = series_value(&app.metrics().await, "ocpp_limit_hits_total", &[("limit", "event_streams")]);
    let held = SseClient::open(&base, &t.token, "", None).await;
    let refused = SseClient::try_open(&base, &t.token, "", None).await.err().expect("second stream refused");
    assert_eq!(refused.0, StatusCode::TOO_MANY_REQUESTS, "{}", refused.1);
    assert!(refused.1.contains("event_streams_per_tenant"), "{}", refused.1);
    let after = series_value(&app.metrics().await, "ocpp_limit_hits_total", &[("limit", "event_streams")]);
    assert!(after > before, "{before} -> {after}");
    // The place comes back when the client goes.
    drop(held);
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok(s) = SseClient::try_open(&base, &t.token, "", None).await {
            reopened = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reopened.is_some(), "a stream opens again once the first one is gone");
    let (status, body) =
        app.request_with(&reqwest::Client::new(), reqwest::Method::GET, "/events", Some(&t.token), None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["code"], json!("rate_limited"));
}

/// What a receiver got: each request's headers of interest and body.
#[derive(Debug, Clone)]
pub struct Received {
    pub signature: String,
    pub timestamp: String,
    pub event_id: String,
    pub body: Vec<u8>,
    /// The status the receiver answered.
    pub answered: u16,
}

/// A webhook receiver: a plain HTTP/1.1 server on 127.0.0.1 that records every request and answers
/// each with the next status of its script (200 once the script is used up; 0 never answers).
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(script: Vec<u16>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://127.0.0.1:{}/hook", listener.local_addr().expect("addr").port());
        let got = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let (g, s) = (got.clone(), script.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (g, s) = (g.clone(), s.clone());
                tokio::spawn(async move {
                    while let Some((headers, body)) = read_request(&mut socket).await {
                        // 0: take the request and never answer it (a receiver that hangs).
                        let status = s.lock().unwrap().pop_front().unwrap_or(200);
                        let header = |name: &str| {
                            headers
                                .iter()
                                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                                .map(|(_, v)| v.clone())
                                .unwrap_or_default()
                        };
                        g.lock().unwrap().push(Received {
                            signature: header("ocpp-css-signature"),
                            timestamp: header("ocpp-css-timestamp"),
                            event_id: header("ocpp-css-event-id"),
                            body,
                            answered: status,
                        });
                        if status == 0 {
                            std::future::pending::<()>().await;
                        }
                        let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                        if socket.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Receiver { url, got, script, _task: task }
    }

    /// The bodies answered 2xx, as JSON, in the order they came.
    pub fn delivered(&self) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| (200..300).contains(&r.answered))
            .map(|r| serde_json::from_slice(&r.body).expect("a JSON body"))
            .collect()
    }

    /// Waits until `n` deliveries were answered 2xx.
    pub async fn wait_delivered(&self, n: usize) -> Vec<Value> {
        for _ in 0..300 {
            let delivered = self.delivered();
            if delivered.len() >= n {
                return delivered;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{n} deliveries expected, got {:?}", self.delivered().iter().map(|v| &v["type"]).collect::<Vec<_>>());
    }
}

/// Reads one HTTP/1.1 request with a content-length body: (headers, body); None at the end.
async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<(Vec<(String, String)>, Vec<u8>)> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        if socket.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).to_string();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':').map(|(n, v)| (n.trim().to_string(), v.trim().to_string())))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    socket.read_exact(&mut body).await.ok()?;
    Some((headers, body))
}

/// Checks a delivery's signature as a receiver would: HMAC-SHA256 of "{timestamp}.{body}" under
/// the secret, hex, in `v1=`, with the timestamp in `t=` (and in its own header).
pub fn signature_verifies(secret: &str, r: &Received) -> bool {
    let parts: Vec<(&str, &str)> = r.signature.split(',').filter_map(|p| p.split_once('=')).collect();
    let t = parts.iter().find(|(k, _)| *k == "t").map(|(_, v)| *v);
    let v1 = parts.iter().find(|(k, _)| *k == "v1").map(|(_, v)| *v);
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    if t != r.timestamp {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    hex::encode(mac.finalize().into_bytes()) == v1
}

/// The webhook's delivery log once it has `n` entries (it is written once per batch of events).
async fn deliveries_logged(app: &TestApp, token: &str, id: &str, n: usize) -> Value {
    for _ in 0..100 {
        let (status, log) = app.get(&format!("/webhooks/{id}/deliveries"), token).await;
        assert_eq!(status, StatusCode::OK, "{log}");
        if log["items"].as_array().is_some_and(|items| items.len() >= n) {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the delivery log never held {n} entries");
}

/// A webhook for `url` with these types: (id, secret).
pub async fn create_webhook(app: &TestApp, token: &str, url: &str, types: Value) -> (String, String) {
    let (status, body) = app.post("/webhooks", token, json!({"url": url, "types": types})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (body["id"].as_str().expect("id").into(), body["secret"].as_str().expect("secret").into())
}

fn receiving_app(s: &mut ocpp_css::config::Settings) {
    s.webhooks.allow_private_destinations = true;
    s.webhooks.retry_min_ms = 20;
    s.webhooks.retry_max_secs = 1;
    s.events.poll_interval_ms = 50;
}

#[tokio::test]
async fn a_webhook_receives_every_event_signed_and_in_order_and_its_deliveries_are_logged() {
    let app = spawn_app_with(receiving_app).await;
    let t = app.tenant("hooked").await;
    let receiver = Receiver::start(vec![]).await;
    accept_tag(&app, &t.token).await;
    let (id, secret) = create_webhook(&app, &t.token, &receiver.url, json!([])).await;
    // The secret is shown once.
    let (status, shown) = app.get(&format!("/webhooks/{id}"), &t.token).await;
    assert_eq!(status, StatusCode::OK);
    assert!(shown.get("secret").is_none(), "{shown}");
    assert_eq!(shown["enabled"], json!(true));
    let mut cp = app.connected_station(&t, "CP1").await;
    charging_session(&mut cp, 3).await;
    let delivered = receiver.wait_delivered(SESSION_TYPES.len()).await;
    let got_types: Vec<&str> = delivered.iter().map(|v| v["type"].as_str().unwrap_or_default()).collect();
    assert_eq!(got_types, SESSION_TYPES);
    for r in receiver.got.lock().unwrap().iter() {
        assert!(signature_verifies(&secret, r), "signature of {r:?}");
        assert!(!signature_verifies("whsec_wrong", r));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(r.event_id, body["id"].to_string());
    }
    let log = deliveries_logged(&app, &t.token, &id, SESSION_TYPES.len()).await;
    let items = log["items"].as_array().expect("items");
    assert_eq!(items.len(), SESSION_TYPES.len(), "{log}");
    assert_eq!(items[0]["event_type"], json!("transaction.ended"), "newest first");
    assert!(items.iter().all(|d| d["outcome"] == json!("delivered") && d["status_code"] == json!(200)), "{log}");
    assert!(items.iter().all(|d| d["attempts"] == json!(1) && d["latency_ms"].is_u64()), "{log}");

    // A webhook for one type only; one deleted gets nothing more.
    let only = Receiver::start(vec![]).await;
    let (only_id, _) = create_webhook(&app, &t.token, &only.url, json!(["transaction.ended"])).await;
    let (status, _) = app.request(reqwest::Method::DELETE, &format!("/webhooks/{id}"), Some(&t.token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    charging_session(&mut cp, 4).await;
    let ended = only.wait_delivered(1).await;
    assert_eq!(ended[0]["type"], json!("transaction.ended"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(only.delivered().len(), 1);
    assert_eq!(receiver.delivered().len(), SESSION_TYPES.len(), "the deleted webhook got nothing more");
    let (status, list) = app.get("/webhooks", &t.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"].as_array().map(|a| a.len()), Some(1));
    assert_eq!(list["items"][0]["id"], json!(only_id));
}

#[tokio::test]
async fn a_receiver_that_fails_five_times_then_recovers_still_gets_everything_in_order() {
    let app = spawn_app_with(receiving_app).await;
    let t = app.tenant("flaky-receiver").await;
    accept_tag(&app, &t.token).await;
    let receiver = Receiver::start(vec![500, 503, 500, 502, 500]).await;
    let (id, secret) = create_webhook(&app, &t.token, &receiver.url, json!([])).await;
    let mut cp = app.connected_station(&t, "CP1").await;
    charging_session(&mut cp, 5).await;
    let delivered = receiver.wait_delivered(SESSION_TYPES.len()).await;
    let got_types: Vec<&str> = delivered.iter().map(|v| v["type"].as_str().unwrap_or_default()).collect();
    assert_eq!(got_types, SESSION_TYPES, "each event once, in order");
    let got = receiver.got.lock().unwrap().clone();
    assert_eq!(got.len(), SESSION_TYPES.len() + 5);
    // The failed attempts were all of the first event, sent again unchanged.
    assert!(got[..6].iter().all(|r| r.body == got[0].body), "retries repeat the first event");
    assert!(got.iter().all(|r| signature_verifies(&secret, r)));
    let log = deliveries_logged(&app, &t.token, &id, SESSION_TYPES.len()).await;
    let first = log["items"].as_array().and_then(|i| i.last()).cloned().unwrap_or_default();
    assert_eq!((first["attempts"].as_u64(), first["outcome"].as_str()), (Some(6), Some("delivered")), "{log}");
}

#[tokio::test]
async fn a_webhook_failing_past_the_retry_period_is_disabled_the_tenant_told_and_it_resumes_when_enabled() {
    let app = spawn_app_with(|s| {
        receiving_app(s);
        s.webhooks.retry_for_secs = 1;
    })
    .await;
    let t = app.tenant("dead-receiver").await;
    let receiver = Receiver::start(vec![500; 1000]).await;
    let (id, _) = create_webhook(&app, &t.token, &receiver.url, json!(["station.booted", "webhook.disabled"])).await;
    let mut stream = SseClient::open(&app.url(""), &t.token, "types=webhook.disabled", None).await;
    let mut cp = app.connected_station(&t, "CP1").await;
    cp.boot().await;
    let told = stream.next().await;
    assert_eq!(told.event, "webhook.disabled");
    assert_eq!(told.data["body"]["webhook_id"], json!(id));
    assert!(told.data["station_id"].is_null());
    let (_, hook) = app.get(&format!("/webhooks/{id}"), &t.token).await;
    assert_eq!(hook["enabled"], json!(false), "{hook}");
    assert!(hook["disabled_reason"].as_str().unwrap_or_default().contains("HTTP 500"), "{hook}");
    let (_, log) = app.get(&format!("/webhooks/{id}/deliveries"), &t.token).await;
    assert_eq!(log["items"][0]["outcome"], json!("gave_up"), "{log}");
    let metrics = app.metrics().await;
    assert!(series_value(&metrics, "ocpp_webhooks_disabled_total", &[]) >= 1.0);
    assert!(series_value(&metrics, "ocpp_webhook_deliveries_total", &[("outcome", "http_error")]) >= 2.0);

    // The receiver is fixed; enabled again, the webhook delivers the boot it gave up on, then the
    // news that it was disabled.
    receiver.script.lock().unwrap().clear();
    let (status, hook) = app
        .request(reqwest::Method::PATCH, &format!("/webhooks/{id}"), Some(&t.token), Some(json!({"enabled": true})))
        .await;
    assert_eq!(status, StatusCode::OK, "{hook}");
    assert!(hook["disabled_reason"].is_null());
    let delivered = receiver.wait_delivered(2).await;
    assert_eq!(delivered[0]["type"], json!("station.booted"));
    assert_eq!(delivered[1]["type"], json!("webhook.disabled"));
}

#[tokio::test]
async fn webhook_urls_are_checked_and_private_destinations_refused_by_default() {
    let app = spawn_app_with(|s| s.webhooks.max_per_account = 1).await;
    let t = app.tenant("ssrf").await;
    for (url, why) in [
        ("http://127.0.0.1:9/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::1]/hook", "loopback v6"),
        ("ftp://example.com/hook", "scheme"),
        ("not a url", "garbage"),
        ("https://user:pass@example.com/hook", "credentials"),
    ] {
        let (status, body) = app.post("/webhooks", &t.token, json!({"url": url})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {body}");
        assert_eq!(body["code"], json!("invalid_field"), "{why}: {body}");
    }
    let (status, body) =
        app.post("/webhooks", &t.token, json!({"url": "https://hooks.example.com/x", "types": ["station.nope"]})).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_query")), "{body}");
    let (status, body) = app.post("/webhooks", &t.token, json!({"url": "https://hooks.example.com/x"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app.post("/webhooks", &t.token, json!({"url": "https://hooks.example.com/y"})).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("quota_exceeded")), "{body}");
    // Another tenant sees none of it.
    let other = app.tenant("ssrf-other").await;
    let id = body_id(&app, &t.token).await;
    let (status, _) = app.get(&format!("/webhooks/{id}"), &other.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = app.get("/webhooks", &other.token).await;
    assert_eq!(list["items"], json!([]));
}

async fn body_id(app: &TestApp, token: &str) -> String {
    let (_, list) = app.get("/webhooks", token).await;
    list["items"][0]["id"].as_str().expect("a webhook").to_string()
}

#[tokio::test]
async fn a_node_killed_mid_delivery_loses_no_event_and_delivers_it_after_restart() {
    let data = tempfile::tempdir().expect("temp dir");
    let http = reqwest::Client::new();
    let env = [
        ("OCPP_CSS__WEBHOOKS__ALLOW_PRIVATE_DESTINATIONS", "true"),
        ("OCPP_CSS__WEBHOOKS__RETRY_MIN_MS", "50"),
        ("OCPP_CSS__WEBHOOKS__RETRY_MAX_SECS", "1"),
        ("OCPP_CSS__EVENTS__POLL_INTERVAL_MS", "50"),
    ];
    let mut server = start_with(data.path(), &env);
    let token = server.sign_in(&http).await;
    let password = server.station(&http, &token, "CP1").await;
    let tag = http.put(server.api("/id-tags/RFID-1")).bearer_auth(&token).json(&json!({"status": "Accepted"}));
    assert!(tag.send().await.expect("tag put").status().is_success());
    // The first delivery is taken and never answered: the node dies with it in flight.
    let receiver = Receiver::start(vec![0]).await;
    let created = http
        .post(server.api("/webhooks"))
        .bearer_auth(&token)
        .json(&json!({"url": receiver.url}))
        .send()
        .await
        .expect("webhook created");
    assert_eq!(created.status(), StatusCode::CREATED);
    let mut cp = StationClient::connect(server.port, "acme", "CP1", &password).await.expect("connects");
    charging_session(&mut cp, 1).await;
    for _ in 0..100 {
        if !receiver.got.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(receiver.got.lock().unwrap().len(), 1, "one delivery in flight");
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reaped");
    drop(cp);

    let _restarted = start_with(data.path(), &env);
    let delivered = receiver.wait_delivered(SESSION_TYPES.len()).await;
    let got: Vec<&str> = delivered.iter().map(|v| v["type"].as_str().unwrap_or_default()).collect();
    assert_eq!(
        &got[..SESSION_TYPES.len()],
        SESSION_TYPES,
        "every acknowledged event, in order, the one in flight again"
    );
    let first = receiver.got.lock().unwrap()[0].body.clone();
    assert_eq!(serde_json::from_slice::<Value>(&first).unwrap(), delivered[0], "the same event, sent again");
}

#[tokio::test]
async fn an_erased_accounts_streams_end() {
    let app = spawn_app_with(|s| s.events.keepalive_secs = 1).await;
    let t = app.tenant("erased-feed").await;
    let mut stream = SseClient::open(&app.url(""), &t.token, "", None).await;
    let (status, body) = app
        .request(
            reqwest::Method::DELETE,
            "/account",
            Some(&t.token),
            Some(json!({"password": crate::helpers::PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["removed"]["feed_events"].is_u64() && body["removed"]["webhooks"].is_u64(), "{body}");
    assert!(stream.ended_within(Duration::from_secs(5)).await, "the stream ended with the account");
}
