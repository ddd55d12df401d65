use crate::helpers::{series_value, spawn_app, StationClient};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Sends a command through the API while the station answers it with `answer(call)`.
async fn round_trip(
    app: &crate::helpers::TestApp,
    token: &str,
    cp: &mut StationClient,
    action: &str,
    body: Value,
    answer: impl FnOnce(&Value) -> Option<Value>,
) -> (StatusCode, Value, Value) {
    let path = format!("/stations/CP001/commands/{action}");
    let api = app.post(&path, token, body);
    let station = async {
        let call = cp.recv().await;
        if let Some(reply) = answer(&call) {
            cp.send_text(&reply.to_string()).await;
        }
        call
    };
    let ((status, body), call) = tokio::join!(api, station);
    (status, body, call)
}

#[tokio::test]
async fn a_command_reaches_the_station_and_its_answer_comes_back_to_the_caller() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let mut cp = app.connected_station(&t, "CP001").await;
    cp.boot().await;
    let (status, body, call) = round_trip(
        &app,
        &t.token,
        &mut cp,
        "RemoteStartTransaction",
        json!({"connectorId": 1, "idTag": "RFID-1"}),
        |c| Some(json!([3, c[1], {"status": "Accepted"}])),
    )
    .await;
    assert_eq!(call[0], 2);
    assert_eq!(call[2], "RemoteStartTransaction");
    assert_eq!(call[3], json!({"connectorId": 1, "idTag": "RFID-1"}));
    assert!(call[1].as_str().is_some_and(|id| !id.is_empty() && id.len() <= 36));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "accepted", "response": {"status": "Accepted"}}));

    // A command without a status in its answer.
    let (status, body, _) = round_trip(&app, &t.token, &mut cp, "GetConfiguration", json!({"key": ["HeartbeatInterval"]}), |c| {
        Some(json!([3, c[1], {"configurationKey": [{"key": "HeartbeatInterval", "readonly": false, "value": "300"}]}]))
    })
    .await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("answered")));
    assert_eq!(body["response"]["configurationKey"][0]["value"], "300");

    // The station answers with a CALLERROR: the caller learns which.
    let (status, body, _) = round_trip(&app, &t.token, &mut cp, "Reset", json!({"type": "Hard"}), |c| {
        Some(json!([4, c[1], "NotSupported", "no hard reset here", {}]))
    })
    .await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_GATEWAY, Some("station_call_error")));
    assert_eq!(body["details"]["error_code"], "NotSupported");

    // The station stays silent: 504 after the configured timeout, and the next command still works.
    let (status, body, _) = round_trip(&app, &t.token, &mut cp, "ClearCache", json!({}), |_| None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::GATEWAY_TIMEOUT, Some("station_timeout")));
    let (status, _, _) = round_trip(&app, &t.token, &mut cp, "ClearCache", json!({}), |c| {
        Some(json!([3, c[1], {"status": "Accepted"}]))
    })
    .await;
    assert_eq!(status, StatusCode::OK);
    let answered =
        series_value(&app.metrics().await, "ocpp_command_duration_seconds_count", &[("action", "ClearCache")]);
    assert!(answered >= 1.0, "station answer latency recorded");
}

#[tokio::test]
async fn commands_are_validated_before_they_are_sent() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let mut cp = app.connected_station(&t, "CP001").await;
    cp.boot().await;
    let (status, body) = app.post("/stations/CP001/commands/Reset", &t.token, json!({"type": "Medium"})).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_payload")));
    assert!(body["message"].as_str().unwrap().contains("/type"), "the message names the field: {body}");
    assert_eq!(body["details"]["ocpp_error_code"], "PropertyConstraintViolation");
    let (status, _) = app.post("/stations/CP001/commands/RemoteStartTransaction", &t.token, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = app.post("/stations/CP001/commands/Teleport", &t.token, json!({})).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, _) = app.post("/stations/CP001/commands/Heartbeat", &t.token, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "station-initiated actions are not commands");
    // Nothing invalid reached the station: the next thing it receives is a valid command.
    let (status, _, call) = round_trip(&app, &t.token, &mut cp, "UnlockConnector", json!({"connectorId": 1}), |c| {
        Some(json!([3, c[1], {"status": "Unlocked"}]))
    })
    .await;
    assert_eq!((status, call[2].as_str()), (StatusCode::OK, Some("UnlockConnector")));
}

#[tokio::test]
async fn a_command_for_a_station_that_is_not_connected_is_a_conflict() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    app.station(&t, "CP001").await;
    let (status, body) = app.post("/stations/CP001/commands/ClearCache", &t.token, json!({})).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("station_not_connected")));
    let (status, _) = app.post("/stations/CP404/commands/ClearCache", &t.token, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn commands_sent_together_go_out_one_at_a_time_in_order() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let mut cp = app.connected_station(&t, "CP001").await;
    cp.boot().await;
    let first = app.post("/stations/CP001/commands/ChangeConfiguration", &t.token, json!({"key": "A", "value": "1"}));
    let second = async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        app.post("/stations/CP001/commands/ChangeConfiguration", &t.token, json!({"key": "B", "value": "2"})).await
    };
    let station = async {
        let c1 = cp.recv().await;
        // While the first is unanswered, the second must not be sent.
        let early = tokio::time::timeout(std::time::Duration::from_millis(400), cp.recv()).await;
        assert!(early.is_err(), "second command sent before the first was answered");
        cp.send_text(&json!([3, c1[1], {"status": "Accepted"}]).to_string()).await;
        let c2 = cp.recv().await;
        cp.send_text(&json!([3, c2[1], {"status": "RebootRequired"}]).to_string()).await;
        (c1, c2)
    };
    let ((s1, b1), (s2, b2), (c1, c2)) = tokio::join!(first, second, station);
    assert_eq!((c1[3]["key"].as_str(), c2[3]["key"].as_str()), (Some("A"), Some("B")));
    assert_eq!((s1, b1["status"].as_str()), (StatusCode::OK, Some("accepted")));
    assert_eq!((s2, b2["status"].as_str()), (StatusCode::OK, Some("reboot_required")));
}
