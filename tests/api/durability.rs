use crate::helpers::{series_value, spawn_app, StationClient, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

async fn command_state(app: &TestApp, token: &str, id: &str) -> Value {
    let (status, body) = app.get(&format!("/stations/CP001/command-records/{id}"), token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Polls until the command leaves `queued`/`sent`.
async fn settled(app: &TestApp, token: &str, id: &str) -> Value {
    for _ in 0..100 {
        let body = command_state(app, token, id).await;
        if !matches!(body["status"].as_str(), Some("queued") | Some("sent")) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("command {id} never settled");
}

#[tokio::test]
async fn a_repeated_call_is_answered_again_and_applied_once_but_a_reused_id_is_a_new_call() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let mut cp = app.connected_station(&t, "CP001").await;
    cp.boot().await;
    let duplicates_before = series_value(&app.metrics().await, "ocpp_duplicate_calls_total", &[]);
    let start = |meter: i64| {
        json!([2, "same-id", "StartTransaction", {"connectorId": 1, "idTag": "T", "meterStart": meter, "timestamp": "2026-11-25T10:00:00Z"}]).to_string()
    };
    cp.send_text(&start(100)).await;
    let first = cp.recv().await;
    // The very same frame again (its answer was lost): the first answer, nothing new recorded.
    cp.send_text(&start(100)).await;
    let second = cp.recv().await;
    assert_eq!(first, second);
    let (_, txs) = app.get("/transactions", &t.token).await;
    assert_eq!(txs["items"].as_array().map(Vec::len), Some(1), "{txs}");
    assert_eq!(txs["items"][0]["meter_start"], 100);
    assert!(series_value(&app.metrics().await, "ocpp_duplicate_calls_total", &[]) > duplicates_before);
    // The same id with another body is another message (a station that restarted its id counter):
    // it is applied, and gets its own answer.
    cp.send_text(&start(200)).await;
    let third = cp.recv().await;
    assert_eq!(third[0], 3, "{third}");
    assert_ne!(third[2]["transactionId"], first[2]["transactionId"]);
    let (_, txs) = app.get("/transactions", &t.token).await;
    assert_eq!(txs["items"].as_array().map(Vec::len), Some(2), "{txs}");
}

#[tokio::test]
async fn a_repeated_call_that_changes_nothing_is_answered_afresh_not_from_memory() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let mut cp = app.connected_station(&t, "CP001").await;
    cp.boot().await;
    let heartbeat = json!([2, "hb-1", "Heartbeat", {}]).to_string();
    cp.send_text(&heartbeat).await;
    let first = cp.recv().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    cp.send_text(&heartbeat).await;
    let second = cp.recv().await;
    assert_eq!((first[0].as_i64(), first[1].as_str()), (Some(3), Some("hb-1")), "{first}");
    assert_eq!((second[0].as_i64(), second[1].as_str()), (Some(3), Some("hb-1")), "{second}");
    // Nothing was remembered for it: the repeat went through the handler again and got the time
    // of its own answer (a remembered answer would be the first, byte for byte).
    assert!(second[2]["currentTime"].is_string(), "{second}");
    assert_ne!(first[2]["currentTime"], second[2]["currentTime"]);
}

#[tokio::test]
async fn a_retried_meter_values_message_is_stored_once() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let mut cp = app.connected_station(&t, "CP001").await;
    cp.boot().await;
    let tx = cp
        .ok(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": "2026-11-25T10:00:00Z"}),
        )
        .await["transactionId"]
        .clone();
    let mv = json!({"connectorId": 1, "transactionId": tx, "meterValue": [{"timestamp": "2026-11-25T10:05:00Z", "sampledValue": [{"value": "10"}]}]});
    // New unique id each time, as a station retrying after a lost answer on a new connection would.
    cp.ok("MeterValues", mv.clone()).await;
    cp.ok("MeterValues", mv).await;
    let later = json!({"connectorId": 1, "transactionId": tx, "meterValue": [{"timestamp": "2026-11-25T10:10:00Z", "sampledValue": [{"value": "20"}]}]});
    cp.ok("MeterValues", later).await;
    let (_, detail) = app.get(&format!("/transactions/{tx}/meter-values"), &t.token).await;
    let values: Vec<&str> =
        detail["items"].as_array().unwrap().iter().map(|m| m["sampled_value"][0]["value"].as_str().unwrap()).collect();
    assert_eq!(values, ["10", "20"]);
}

#[tokio::test]
async fn commands_queued_for_an_offline_station_are_delivered_in_order_after_it_boots() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let password = app.station(&t, "CP001").await;

    let (status, err) = app.post("/stations/CP001/commands/ClearCache", &t.token, json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(err["message"].as_str().unwrap().contains("queue=true"), "{err}");

    let (status, first) = app
        .post("/stations/CP001/commands/ChangeConfiguration?queue=true", &t.token, json!({"key": "A", "value": "1"}))
        .await;
    assert_eq!((status, first["status"].as_str()), (StatusCode::ACCEPTED, Some("queued")), "{first}");
    let (_, second) = app.post("/stations/CP001/commands/Reset?queue=true", &t.token, json!({"type": "Soft"})).await;
    let (_, third) = app.post("/stations/CP001/commands/ClearCache?queue=true", &t.token, json!({})).await;
    let ids: Vec<String> =
        [&first, &second, &third].iter().map(|c| c["command_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(command_state(&app, &t.token, &ids[0]).await["status"], "queued");
    let (status, _) = app.post("/stations/CP001/commands/Reset?queue=true", &t.token, json!({"type": "Medium"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "queued commands are validated too");

    let mut cp = StationClient::connect(app.port, "acme", "CP001", &password).await.unwrap();
    // Nothing is sent before the station's first message.
    assert!(tokio::time::timeout(Duration::from_millis(300), cp.recv()).await.is_err());
    cp.boot().await;
    let c1 = cp.recv().await;
    assert_eq!((c1[2].as_str(), c1[3]["key"].as_str()), (Some("ChangeConfiguration"), Some("A")));
    cp.send_text(&json!([3, c1[1], {"status": "Accepted"}]).to_string()).await;
    let c2 = cp.recv().await;
    assert_eq!(c2[2], "Reset");
    cp.send_text(&json!([4, c2[1], "NotSupported", "no reset", {}]).to_string()).await;
    let c3 = cp.recv().await;
    assert_eq!(c3[2], "ClearCache");
    cp.send_text(&json!([3, c3[1], {"status": "Rejected"}]).to_string()).await;

    let s1 = settled(&app, &t.token, &ids[0]).await;
    assert_eq!(
        (s1["status"].as_str(), s1["response"]["status"].as_str()),
        (Some("answered"), Some("Accepted")),
        "{s1}"
    );
    assert!(s1["sent_at"].is_string() && s1["answered_at"].is_string());
    let s2 = settled(&app, &t.token, &ids[1]).await;
    assert_eq!((s2["status"].as_str(), s2["error"]["code"].as_str()), (Some("rejected"), Some("NotSupported")));
    let s3 = settled(&app, &t.token, &ids[2]).await;
    assert_eq!((s3["status"].as_str(), s3["response"]["status"].as_str()), (Some("answered"), Some("Rejected")));

    // With the station connected, ?queue=true changes nothing: the command goes out at once.
    let api = app.post("/stations/CP001/commands/ClearCache?queue=true", &t.token, json!({}));
    let station = async {
        let call = cp.recv().await;
        cp.send_text(&json!([3, call[1], {"status": "Accepted"}]).to_string()).await;
    };
    let ((status, body), ()) = tokio::join!(api, station);
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("accepted")),
        "a connected station gets it at once"
    );
    let (_, other) = app.get("/stations/CP001/command-records/not-a-command", &t.token).await;
    assert_eq!(other["code"], "not_found");
}

#[tokio::test]
async fn a_queued_command_past_its_expiry_is_never_sent() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let password = app.station(&t, "CP001").await;
    let (_, stale) = app.post("/stations/CP001/commands/ClearCache?queue=true&expires_in=1", &t.token, json!({})).await;
    let (_, fresh) = app.post("/stations/CP001/commands/GetLocalListVersion?queue=true", &t.token, json!({})).await;
    let (status, bad) =
        app.post("/stations/CP001/commands/ClearCache?queue=true&expires_in=0", &t.token, json!({})).await;
    assert_eq!((status, bad["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_query")));
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let mut cp = StationClient::connect(app.port, "acme", "CP001", &password).await.unwrap();
    cp.boot().await;
    let call = cp.recv().await;
    assert_eq!(call[2], "GetLocalListVersion", "the expired ClearCache is skipped");
    cp.send_text(&json!([3, call[1], {"listVersion": 3}]).to_string()).await;
    let stale = settled(&app, &t.token, stale["command_id"].as_str().unwrap()).await;
    assert_eq!((stale["status"].as_str(), stale["sent_at"].is_null()), (Some("expired"), true));
    let fresh = settled(&app, &t.token, fresh["command_id"].as_str().unwrap()).await;
    assert_eq!(fresh["response"]["listVersion"], 3);
}

#[tokio::test]
async fn a_queued_command_whose_answer_never_comes_is_unanswered_not_resent() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let password = app.station(&t, "CP001").await;
    let (_, queued) =
        app.post("/stations/CP001/commands/UnlockConnector?queue=true", &t.token, json!({"connectorId": 1})).await;
    let id = queued["command_id"].as_str().unwrap().to_string();
    let mut cp = StationClient::connect(app.port, "acme", "CP001", &password).await.unwrap();
    cp.boot().await;
    assert_eq!(cp.recv().await[2], "UnlockConnector");
    drop(cp); // the connection is lost before the station answers
    let state = settled(&app, &t.token, &id).await;
    assert_eq!(state["status"], "unanswered", "the station may have acted: it is not sent again");
    let mut cp = StationClient::connect(app.port, "acme", "CP001", &password).await.unwrap();
    cp.boot().await;
    assert!(tokio::time::timeout(Duration::from_millis(500), cp.recv()).await.is_err(), "not resent");
}

#[tokio::test]
async fn a_queued_command_s_location_is_where_its_record_is_read() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    app.station(&t, "CP001").await;
    let res = app
        .http
        .post(app.api("/stations/CP001/commands/ClearCache?queue=true"))
        .bearer_auth(&t.token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    // A path of its own, not the POST's: `commands/{action}` and `command-records/{command_id}`.
    let location = res.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let record: Value =
        app.http.get(app.url(&location)).bearer_auth(&t.token).send().await.unwrap().json().await.unwrap();
    assert!(location.contains("/command-records/") && record["status"] == "queued", "{location}: {record}");
    assert_eq!(record["action"], "ClearCache");
}
