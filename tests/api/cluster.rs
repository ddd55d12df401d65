//! Cluster mode: real redis-server processes and several nodes sharing one, stations on real
//! WebSockets: commands across nodes, duplicate connections across nodes, a killed node, and Redis
//! killed and restarted while stations keep sending.

use crate::events::{accept_tag, charging_session, SseClient, SESSION_TYPES};
use crate::helpers::{spawn_app_with, StationClient, Tenant, TestApp};
use crate::redis::{RedisCluster, RedisServer};
use crate::restart::start_with;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Presence TTL of the test nodes: two ping intervals of one second.
const TTL: Duration = Duration::from_secs(2);

/// A node of the cluster on `redis`, in this process.
async fn node(redis: &RedisServer, name: &str) -> TestApp {
    let (url, name) = (redis.url(), name.to_string());
    spawn_app_with(move |s| {
        s.cluster.redis_url = url;
        s.server.node_id = name;
        s.ocpp.ping_interval_secs = 1;
    })
    .await
}

/// A Redis, two nodes on it, tenant "acme" and its station CP1 connected (and booted) to node A.
struct Cluster {
    redis: RedisServer,
    a: TestApp,
    b: TestApp,
    tenant: Tenant,
    password: String,
    station: StationClient,
}

async fn two_nodes_and_a_station() -> Cluster {
    let redis = RedisServer::start().await;
    let (a, b) = (node(&redis, "node-a").await, node(&redis, "node-b").await);
    let tenant = a.tenant("acme").await;
    let password = a.station(&tenant, "CP1").await;
    let mut station = StationClient::connect(a.port, "acme", "CP1", &password).await.unwrap();
    station.boot().await;
    Cluster { redis, a, b, tenant, password, station }
}

/// Polls `GET /stations/{id}` on `app` until `check` holds; panics with the last view after `within`.
async fn wait_for_station(app: &TestApp, token: &str, id: &str, within: Duration, check: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = app.get(&format!("/stations/{id}"), token).await;
        if status == StatusCode::OK && check(&body) {
            return;
        }
        assert!(Instant::now() < deadline, "station {id} never matched; last view: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `POST /stations/CP1/commands/{action}` to `app` in the background (it waits for the
/// station's answer, which the test gives meanwhile); the handle yields the status and body.
fn command_later(
    app: &TestApp,
    token: &str,
    action: &str,
    body: Value,
) -> tokio::task::JoinHandle<(StatusCode, Value)> {
    let url = app.api(&format!("/stations/CP1/commands/{action}"));
    let token = token.to_string();
    tokio::spawn(async move {
        let res = reqwest::Client::new().post(url).bearer_auth(token).json(&body).send().await.unwrap();
        (res.status(), res.json::<Value>().await.unwrap())
    })
}

/// Answers the next CALL the station receives with `payload`; returns the CALL.
async fn answer_next_call(cp: &mut StationClient, payload: Value) -> Value {
    let call = cp.recv().await;
    assert_eq!(call[0], 2, "expected a CALL from the server: {call}");
    cp.send_text(&json!([3, call[1], payload]).to_string()).await;
    call
}

#[tokio::test]
async fn a_command_through_one_node_reaches_a_station_on_another_and_its_answer_returns() {
    let Cluster { redis: _redis, a: _a, b, tenant, password: _, station: mut cp } = two_nodes_and_a_station().await;

    // Any node knows where the station is.
    wait_for_station(&b, &tenant.token, "CP1", Duration::from_secs(5), |v| {
        v["connected"] == true && v["node"] == "node-a"
    })
    .await;
    let (_, listed) = b.get("/stations", &tenant.token).await;
    assert_eq!(
        (listed["items"][0]["connected"].clone(), listed["items"][0]["node"].clone()),
        (json!(true), json!("node-a"))
    );

    // A command on B travels to A's session; the station's answer comes back to B's caller.
    let reset = command_later(&b, &tenant.token, "Reset", json!({"type": "Soft"}));
    let call = answer_next_call(&mut cp, json!({"status": "Accepted"})).await;
    assert_eq!((call[2].as_str(), &call[3]), (Some("Reset"), &json!({"type": "Soft"})));
    let (status, body) = reset.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "accepted");

    // Unanswered, it times out on B as it would on A (command timeout 2 s): 504.
    let started = Instant::now();
    let unlock = command_later(&b, &tenant.token, "UnlockConnector", json!({"connectorId": 1}));
    let call = cp.recv().await;
    assert_eq!(call[2], "UnlockConnector");
    let (status, body) = unlock.await.unwrap();
    assert_eq!((status, body["code"].as_str()), (StatusCode::GATEWAY_TIMEOUT, Some("station_timeout")), "{body}");
    assert!(started.elapsed() < Duration::from_secs(6), "timed out after {:?}", started.elapsed());

    // A CALLERROR answer is reported as on one node.
    let trigger = command_later(&b, &tenant.token, "TriggerMessage", json!({"requestedMessage": "Heartbeat"}));
    let call = cp.recv().await;
    cp.send_text(&json!([4, call[1], "NotSupported", "no triggers here", {}]).to_string()).await;
    let (status, body) = trigger.await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["details"]["error_code"], "NotSupported");
}

#[tokio::test]
async fn the_newer_connection_wins_across_nodes() {
    let Cluster { redis: _redis, a, b, tenant, password, station: mut old } = two_nodes_and_a_station().await;
    wait_for_station(&b, &tenant.token, "CP1", Duration::from_secs(5), |v| v["node"] == "node-a").await;

    let mut new = StationClient::connect(b.port, "acme", "CP1", &password).await.unwrap();
    new.boot().await;
    // Node A closes the older session.
    match old.recv_message().await {
        None | Some(Message::Close(_)) => {}
        Some(other) => panic!("the old connection should have been closed, got {other:?}"),
    }
    wait_for_station(&a, &tenant.token, "CP1", Duration::from_secs(5), |v| {
        v["connected"] == true && v["node"] == "node-b"
    })
    .await;
    // The newer one keeps working, and commands go to it.
    new.ok("Heartbeat", json!({})).await;
    let cmd = command_later(&a, &tenant.token, "ClearCache", json!({}));
    answer_next_call(&mut new, json!({"status": "Accepted"})).await;
    assert_eq!(cmd.await.unwrap().0, StatusCode::OK);
    // The presence refresh on A never takes the station back.
    tokio::time::sleep(TTL).await;
    let (_, view) = b.get("/stations/CP1", &tenant.token).await;
    assert_eq!(view["node"], "node-b", "{view}");
}

/// Queues ChangeAvailability (Inoperative) for the offline CP1 through `app`; the command's id.
async fn queue_inoperative(app: &TestApp, token: &str) -> String {
    let (status, queued) = app
        .post(
            "/stations/CP1/commands/ChangeAvailability?queue=true",
            token,
            json!({"connectorId": 0, "type": "Inoperative"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    queued["command_id"].as_str().unwrap().to_string()
}

/// Connects CP1 to `app` and answers the queued ChangeAvailability it is sent first.
async fn take_queued_inoperative(app: &TestApp, tenant: &Tenant, password: &str) -> StationClient {
    let mut cp = StationClient::connect(app.port, &tenant.slug, "CP1", password).await.unwrap();
    cp.boot().await;
    let call = answer_next_call(&mut cp, json!({"status": "Accepted"})).await;
    assert_eq!(call[2], "ChangeAvailability");
    cp
}

#[tokio::test]
async fn a_command_queued_on_one_node_is_delivered_by_the_node_the_station_connects_to() {
    let redis = RedisServer::start().await;
    let (a, b) = (node(&redis, "node-a").await, node(&redis, "node-b").await);
    let tenant = a.tenant("acme").await;
    let password = a.station(&tenant, "CP1").await;
    let id = queue_inoperative(&a, &tenant.token).await;
    let _cp = take_queued_inoperative(&b, &tenant, &password).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, command) = a.get(&format!("/stations/CP1/command-records/{id}"), &tenant.token).await;
        if command["status"] == "answered" {
            assert_eq!(command["response"]["status"], "Accepted");
            break;
        }
        assert!(Instant::now() < deadline, "command never answered: {command}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_killed_nodes_stations_show_offline_within_the_ttl_and_reconnect_to_another_node() {
    let redis = RedisServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let url = redis.url();
    let mut a = start_with(
        data.path(),
        &[
            ("OCPP_CSS__CLUSTER__REDIS_URL", url.as_str()),
            ("OCPP_CSS__SERVER__NODE_ID", "node-a"),
            ("OCPP_CSS__OCPP__PING_INTERVAL_SECS", "1"),
        ],
    );
    let b = node(&redis, "node-b").await;
    let tenant = b.tenant("acme").await;
    let password = b.station(&tenant, "CP1").await;
    let mut cp = StationClient::connect(a.port, "acme", "CP1", &password).await.unwrap();
    cp.boot().await;
    wait_for_station(&b, &tenant.token, "CP1", Duration::from_secs(5), |v| v["node"] == "node-a").await;

    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed = Instant::now();
    drop(cp);
    wait_for_station(&b, &tenant.token, "CP1", TTL + Duration::from_secs(2), |v| v["connected"] == false).await;
    let offline_after = killed.elapsed();
    assert!(offline_after <= TTL + Duration::from_millis(500), "offline only after {offline_after:?}");

    // The station comes back through another node.
    let mut cp = StationClient::connect(b.port, "acme", "CP1", &password).await.unwrap();
    cp.boot().await;
    wait_for_station(&b, &tenant.token, "CP1", Duration::from_secs(5), |v| {
        v["connected"] == true && v["node"] == "node-b"
    })
    .await;
}

/// Sends a CALL and returns its CALLRESULT payload, failing the test on anything else.
async fn acked(cp: &mut StationClient, action: &str, payload: Value) -> Value {
    let answer = cp.call(action, payload).await;
    assert_eq!(answer[0], 3, "{action} was not acknowledged: {answer}");
    answer[2].clone()
}

/// Station CP1 of `tenant` provisioned through `station_on`, the tag RFID-1 accepted through
/// `tag_via`, and the station connected (and booted) to `station_on`; its password and client.
async fn station_with_a_tag(station_on: &TestApp, tag_via: &TestApp, tenant: &Tenant) -> (String, StationClient) {
    let password = station_on.station(tenant, "CP1").await;
    let (status, _) = tag_via
        .request(reqwest::Method::PUT, "/id-tags/RFID-1", Some(&tenant.token), Some(json!({"status": "Accepted"})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let mut cp = StationClient::connect(station_on.port, &tenant.slug, "CP1", &password).await.unwrap();
    cp.boot().await;
    (password, cp)
}

#[tokio::test]
async fn redis_killed_and_restarted_loses_no_acknowledged_event() {
    let mut redis = RedisServer::start().await;
    let (a, b) = (node(&redis, "node-a").await, node(&redis, "node-b").await);
    let tenant = a.tenant("acme").await;
    let (password, mut cp) = station_with_a_tag(&a, &a, &tenant).await;
    let start = json!({"connectorId": 1, "idTag": "RFID-1", "meterStart": 1000, "timestamp": "2026-11-25T10:00:00Z"});
    let before = acked(&mut cp, "StartTransaction", start).await;
    assert_eq!(before["idTagInfo"]["status"], "Accepted");
    let first = before["transactionId"].as_i64().unwrap();

    redis.kill();

    // The station keeps being answered: every message below is acknowledged while Redis is down.
    for minute in 1..=20 {
        let mv = json!({"connectorId": 1, "transactionId": first, "meterValue": [{
            "timestamp": format!("2026-11-25T10:{minute:02}:00Z"),
            "sampledValue": [{"value": (1000 + minute * 100).to_string(), "measurand": "Energy.Active.Import.Register"}]
        }]});
        acked(&mut cp, "MeterValues", mv).await;
    }
    acked(
        &mut cp,
        "StopTransaction",
        json!({"transactionId": first, "meterStop": 3000, "timestamp": "2026-11-25T10:21:00Z"}),
    )
    .await;
    acked(&mut cp, "StatusNotification", json!({"connectorId": 1, "errorCode": "NoError", "status": "Finishing"}))
        .await;
    let during = acked(
        &mut cp,
        "StartTransaction",
        json!({"connectorId": 2, "idTag": "RFID-1", "meterStart": 500, "timestamp": "2026-11-25T10:30:00Z"}),
    )
    .await;
    assert_eq!(during["idTagInfo"]["status"], "Accepted", "the tag is known from before the outage");
    let second = during["transactionId"].as_i64().unwrap();
    assert_ne!(second, first);
    acked(&mut cp, "DataTransfer", json!({"vendorId": "ACME", "data": "while redis was down"})).await;

    // The connection drops and the station comes back to the same node while Redis is still down.
    drop(cp);
    let mut cp = StationClient::connect(a.port, "acme", "CP1", &password).await.expect("reconnects during the outage");
    cp.boot().await;
    let mv = json!({"connectorId": 2, "transactionId": second, "meterValue": [{
        "timestamp": "2026-11-25T10:35:00Z", "sampledValue": [{"value": "650"}]
    }]});
    acked(&mut cp, "MeterValues", mv).await;

    // The API cannot answer from the shared store meanwhile, and says so.
    let (status, body) = b.get("/transactions", &tenant.token).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable")), "{body}");

    redis.restart().await;

    // Everything acknowledged drains to Redis and is visible from the other node.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, tx) = b.get(&format!("/transactions/{first}"), &tenant.token).await;
        let (_, tx2) = b.get(&format!("/transactions/{second}"), &tenant.token).await;
        let (_, mv) = b.get(&format!("/transactions/{first}/meter-values"), &tenant.token).await;
        let (_, mv2) = b.get(&format!("/transactions/{second}/meter-values"), &tenant.token).await;
        if status == StatusCode::OK
            && tx["status"] == "completed"
            && mv["items"].as_array().map(Vec::len) == Some(20)
            && tx2["status"] == "active"
            && mv2["items"].as_array().map(Vec::len) == Some(1)
        {
            assert_eq!(tx["energy_wh"], 2000, "{tx}");
            let values: Vec<&str> = mv["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["sampled_value"][0]["value"].as_str().unwrap())
                .collect();
            let expected: Vec<String> = (1..=20).map(|m| (1000 + m * 100).to_string()).collect();
            assert_eq!(values, expected, "every reading, once, in order");
            break;
        }
        assert!(Instant::now() < deadline, "not drained: {status} {tx} / {tx2}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, station) = b.get("/stations/CP1", &tenant.token).await;
    assert_eq!(station["connectors"]["1"]["status"], "Finishing", "{station}");
    let (_, all) = b.get("/transactions", &tenant.token).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2, "no transaction twice: {all}");
}

#[tokio::test]
async fn an_erasure_through_one_node_closes_the_accounts_sessions_on_every_node() {
    let redis = RedisServer::start().await;
    let (a, b) = (node(&redis, "node-a").await, node(&redis, "node-b").await);
    let tenant = a.tenant("acme").await;
    let other = a.tenant("other").await;
    let password = a.station(&tenant, "CP1").await;
    let other_password = a.station(&other, "CP1").await;
    let mut cp = StationClient::connect(a.port, "acme", "CP1", &password).await.unwrap();
    cp.boot().await;
    acked(&mut cp, "StatusNotification", json!({"connectorId": 1, "errorCode": "NoError", "status": "Charging"})).await;
    let mut other_cp = StationClient::connect(a.port, "other", "CP1", &other_password).await.unwrap();
    other_cp.boot().await;

    let (status, answer) = b
        .request(reqwest::Method::DELETE, "/account", Some(&tenant.token), Some(json!({"password": "s3cret-pass"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["removed"]["stations"], 1, "{answer}");

    // Node A closes the erased account's session, and only that one.
    assert!(matches!(cp.recv_message().await, None | Some(Message::Close(_))), "the session on node A is closed");
    other_cp.ok("Heartbeat", json!({})).await;
    // Nothing of it is served by either node, and its station cannot come back through A.
    for app in [&a, &b] {
        let (status, _) = app.get("/account", &tenant.token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert!(StationClient::connect(a.port, "acme", "CP1", &password).await.is_err());
    let (status, _) = b.get("/stations/CP1", &other.token).await;
    assert_eq!(status, StatusCode::OK, "the other tenant is untouched");
}

#[tokio::test]
async fn a_node_stopped_with_sigterm_hands_its_stations_over_at_once() {
    let redis = RedisServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let url = redis.url();
    let mut a = start_with(
        data.path(),
        &[("OCPP_CSS__CLUSTER__REDIS_URL", url.as_str()), ("OCPP_CSS__SERVER__NODE_ID", "node-a")],
    );
    let b = node(&redis, "node-b").await;
    let tenant = b.tenant("acme").await;
    let password = b.station(&tenant, "CP1").await;
    let mut cp = StationClient::connect(a.port, "acme", "CP1", &password).await.unwrap();
    cp.boot().await;
    wait_for_station(&b, &tenant.token, "CP1", Duration::from_secs(5), |v| v["node"] == "node-a").await;

    let pid = a.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(matches!(cp.recv_message().await, None | Some(Message::Close(_))));
    assert!(a.child.wait().unwrap().success(), "a clean exit");
    // Not after the presence TTL (here 120 s: ping interval 60 s): at once.
    let (_, view) = b.get("/stations/CP1", &tenant.token).await;
    assert_eq!(view["connected"], false, "{view}");
}

#[tokio::test]
async fn a_node_restarted_while_redis_is_down_serves_the_stations_it_knows() {
    let mut redis = RedisServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let url = redis.url();
    let env = [("OCPP_CSS__CLUSTER__REDIS_URL", url.as_str()), ("OCPP_CSS__SERVER__NODE_ID", "node-a")];
    let mut a = start_with(data.path(), &env);
    let http = reqwest::Client::new();
    let api = |port: u16, path: &str| format!("http://127.0.0.1:{port}/api/v1{path}");
    let account = json!({"email": "ops@acme.example", "password": "s3cret-pass", "name": "Acme", "slug": "acme"});
    http.post(api(a.port, "/accounts")).json(&account).send().await.unwrap();
    let login = json!({"email": "ops@acme.example", "password": "s3cret-pass"});
    let session: Value = http.post(api(a.port, "/sessions")).json(&login).send().await.unwrap().json().await.unwrap();
    let token = session["token"].as_str().unwrap().to_string();
    let created: Value = http
        .post(api(a.port, "/stations"))
        .bearer_auth(&token)
        .json(&json!({"id": "CP1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let password = created["password"].as_str().unwrap().to_string();
    http.put(api(a.port, "/id-tags/RFID-1"))
        .bearer_auth(&token)
        .json(&json!({"status": "Accepted"}))
        .send()
        .await
        .unwrap();
    let mut cp = StationClient::connect(a.port, "acme", "CP1", &password).await.unwrap();
    cp.boot().await;
    acked(&mut cp, "Authorize", json!({"idTag": "RFID-1"})).await;

    // The node dies, then Redis; the node comes back while Redis is still down.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    drop(cp);
    redis.kill();
    let a = start_with(data.path(), &env);
    let mut cp = StationClient::connect(a.port, "acme", "CP1", &password).await.expect("a known station reconnects");
    cp.boot().await;
    let start = json!({"connectorId": 1, "idTag": "RFID-1", "meterStart": 100, "timestamp": "2026-11-25T10:00:00Z"});
    let started = acked(&mut cp, "StartTransaction", start).await;
    assert_eq!(started["idTagInfo"]["status"], "Accepted");
    let id = started["transactionId"].as_i64().unwrap();
    acked(
        &mut cp,
        "StopTransaction",
        json!({"transactionId": id, "meterStop": 600, "timestamp": "2026-11-25T10:20:00Z"}),
    )
    .await;
    let ready: Value =
        http.get(format!("http://127.0.0.1:{}/readyz", a.port)).send().await.unwrap().json().await.unwrap();
    assert_eq!((ready["status"].as_str(), ready["redis"].as_str()), (Some("ready"), Some("down")), "{ready}");

    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = http.get(api(a.port, &format!("/transactions/{id}"))).bearer_auth(&token).send().await.unwrap();
        if res.status() == StatusCode::OK {
            let tx: Value = res.json().await.unwrap();
            if tx["status"] == "completed" {
                assert_eq!(tx["energy_wh"], 500, "{tx}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "the transaction never reached Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_idle_node_s_readiness_says_how_redis_is_at_each_probe() {
    let mut redis = RedisServer::start().await;
    let a = node(&redis, "node-a").await;
    let ready = || async { a.http.get(a.url("/readyz")).send().await.unwrap().json::<Value>().await.unwrap() };
    assert_eq!(ready().await["redis"], "up");
    // No station and no request in between: the probe itself asks Redis.
    redis.kill();
    let view = ready().await;
    assert_eq!((view["status"].as_str(), view["redis"].as_str()), (Some("ready"), Some("down")), "{view}");
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready().await["redis"] != "up" {
        assert!(Instant::now() < deadline, "readiness never saw Redis back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn nodes_on_a_redis_cluster_share_stations_commands_queues_and_transactions() {
    let cluster = match tokio::task::spawn_blocking(RedisCluster::shared).await {
        Ok(cluster) => cluster,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    // The shared cluster serves other tests: this one keeps to a prefix of its own.
    let prefix = format!("nodes-{}", uuid::Uuid::new_v4().simple());
    let on_cluster = |name: &str| {
        let (urls, prefix, name) = (cluster.urls().join(","), prefix.clone(), name.to_string());
        spawn_app_with(move |s| {
            s.cluster.redis_url = urls;
            s.cluster.redis_cluster = true;
            s.cluster.key_prefix = prefix;
            s.server.node_id = name;
            s.ocpp.ping_interval_secs = 1;
        })
    };
    let (a, b) = (on_cluster("node-a").await, on_cluster("node-b").await);
    let tenant = a.tenant("acme").await;
    let other = b.tenant("other").await;
    let (password, mut cp) = station_with_a_tag(&a, &b, &tenant).await;

    // Presence and commands across nodes, through the cluster's pub/sub.
    wait_for_station(&b, &tenant.token, "CP1", Duration::from_secs(5), |v| {
        v["connected"] == true && v["node"] == "node-a"
    })
    .await;
    let reset = command_later(&b, &tenant.token, "Reset", json!({"type": "Soft"}));
    let call = answer_next_call(&mut cp, json!({"status": "Accepted"})).await;
    assert_eq!(call[2], "Reset");
    let (status, body) = reset.await.unwrap();
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("accepted")), "{body}");

    // A transaction started on A, read whole through B.
    let start = json!({"connectorId": 1, "idTag": "RFID-1", "meterStart": 1000, "timestamp": "2026-11-25T10:00:00Z"});
    let started = acked(&mut cp, "StartTransaction", start).await;
    assert_eq!(started["idTagInfo"]["status"], "Accepted", "the tag put through B is known to A");
    let id = started["transactionId"].as_i64().unwrap();
    let mv = json!({"connectorId": 1, "transactionId": id, "meterValue": [{
        "timestamp": "2026-11-25T10:05:00Z", "sampledValue": [{"value": "1200"}]
    }]});
    acked(&mut cp, "MeterValues", mv).await;
    acked(
        &mut cp,
        "StopTransaction",
        json!({"transactionId": id, "meterStop": 1500, "timestamp": "2026-11-25T10:10:00Z"}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, tx) = b.get(&format!("/transactions/{id}"), &tenant.token).await;
        let (_, mv) = b.get(&format!("/transactions/{id}/meter-values"), &tenant.token).await;
        if tx["status"] == "completed" && mv["items"].as_array().map(Vec::len) == Some(1) {
            assert_eq!(tx["energy_wh"], 500, "{tx}");
            break;
        }
        assert!(Instant::now() < deadline, "the transaction never reached the cluster: {tx} {mv}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, theirs) = b.get("/transactions", &other.token).await;
    assert_eq!(theirs["items"], json!([]), "another tenant sees none of it");
    // The feed, on the Redis Cluster too: A's station's session, read from its start on B.
    let mut feed =
        SseClient::open(&b.url(""), &tenant.token, "types=transaction.started,transaction.ended", Some(0)).await;
    let (started, ended) = (feed.next().await, feed.next().await);
    assert_eq!((started.event.as_str(), ended.event.as_str()), ("transaction.started", "transaction.ended"));
    assert_eq!(ended.data["body"]["energy_wh"], json!(500));
    let mut theirs = SseClient::open(&b.url(""), &other.token, "", Some(0)).await;
    assert!(theirs.next_within(Duration::from_millis(500)).await.is_none(), "another tenant hears none of it");

    // A command queued through B for the offline station is delivered when it comes back to A.
    drop(cp);
    wait_for_station(&b, &tenant.token, "CP1", Duration::from_secs(5), |v| v["connected"] == false).await;
    queue_inoperative(&b, &tenant.token).await;
    take_queued_inoperative(&a, &tenant, &password).await;
}

#[tokio::test]
async fn an_event_of_a_station_on_node_a_reaches_an_sse_client_on_node_b_in_order() {
    let redis = RedisServer::start().await;
    let (a, b) = (node(&redis, "node-a").await, node(&redis, "node-b").await);
    let tenant = a.tenant("acme").await;
    accept_tag(&b, &tenant.token).await;
    let password = a.station(&tenant, "CP1").await;
    let mut on_b = SseClient::open(&b.url(""), &tenant.token, "", None).await;
    let mut on_a = SseClient::open(&a.url(""), &tenant.token, "", None).await;
    let mut cp = StationClient::connect(a.port, "acme", "CP1", &password).await.unwrap();
    charging_session(&mut cp, 1).await;
    let seen_b = on_b.until("transaction.ended").await;
    let types: Vec<&str> = seen_b.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(types, SESSION_TYPES, "{seen_b:?}");
    let seen_a = on_a.until("transaction.ended").await;
    let ids = |seen: &[crate::events::Sse]| seen.iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(&seen_a), ids(&seen_b), "both nodes serve the one feed, with the same ids");
    // A client of B resuming from an id A's client got misses nothing.
    let mut resumed = SseClient::open(&b.url(""), &tenant.token, "", Some(seen_a[2].id)).await;
    assert_eq!(resumed.next().await.id, seen_a[3].id);
}

#[tokio::test]
async fn a_password_rotated_through_one_node_lets_the_station_into_another() {
    let Cluster { redis: _redis, a: _a, b, tenant, password, station: mut cp } = two_nodes_and_a_station().await;
    wait_for_station(&b, &tenant.token, "CP1", Duration::from_secs(5), |v| v["node"] == "node-a").await;
    let url = format!("{}/api/v1/stations/CP1/password", b.url(""));
    let rotate = tokio::spawn({
        let token = tenant.token.clone();
        async move {
            let res = reqwest::Client::new().post(url).bearer_auth(token).json(&json!({})).send().await.unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        }
    });
    let call = answer_next_call(&mut cp, json!({"status": "Accepted"})).await;
    assert_eq!(call[2], "ChangeConfiguration");
    let (status, body) = rotate.await.unwrap();
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("accepted")), "{body}");
    let new = body["password"].as_str().unwrap();
    assert_eq!(call[3]["value"], new);
    drop(cp);
    let mut on_b =
        StationClient::connect(b.port, "acme", "CP1", new).await.expect("the new password on the other node");
    on_b.boot().await;
    let mut old =
        StationClient::connect(b.port, "acme", "CP1", &password).await.expect("the old one within the window");
    old.boot().await;
}
