use crate::helpers::{spawn_app, StationClient, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn station_201(app: &TestApp, t: &crate::helpers::Tenant, id: &str) -> StationClient {
    let password = app.station(t, id).await;
    let cp = StationClient::connect_201(app.port, &t.slug, id, &password).await.expect("2.0.1 station connects");
    assert_eq!(cp.protocol.as_deref(), Some("ocpp2.0.1"));
    cp
}

fn tx_event(kind: &str, seq: u64, wh: f64, extra: Value) -> Value {
    let mut e = json!({
        "eventType": kind, "timestamp": format!("2026-11-25T10:{:02}:00Z", seq * 10), "triggerReason": "MeterValuePeriodic",
        "seqNo": seq, "transactionInfo": {"transactionId": "c0ffee-01", "chargingState": "Charging"},
        "evse": {"id": 1, "connectorId": 1},
        "meterValue": [{"timestamp": format!("2026-11-25T10:{:02}:00Z", seq * 10),
            "sampledValue": [{"value": wh, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "kWh"}},
                             {"value": 11.0, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "kW"}}]}]
    });
    if let (Value::Object(e), Value::Object(x)) = (&mut e, extra) {
        e.extend(x);
    }
    e
}

#[tokio::test]
async fn a_201_station_boots_authorizes_and_charges_with_its_energy_in_the_api() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    app.request(Method::PUT, "/id-tags/CARD-7", Some(&t.token), Some(json!({"status": "Accepted"}))).await;
    let mut cp = station_201(&app, &t, "EVSE-HUB").await;

    let boot = cp.boot_201().await;
    assert_eq!((boot["status"].as_str(), boot["interval"].as_u64()), (Some("Accepted"), Some(300)));
    assert!(cp.ok("Heartbeat", json!({})).await["currentTime"].is_string());
    cp.ok(
        "StatusNotification",
        json!({"timestamp": "2026-11-25T09:59:00Z", "connectorStatus": "Occupied", "evseId": 1, "connectorId": 1}),
    )
    .await;
    cp.ok(
        "StatusNotification",
        json!({"timestamp": "2026-11-25T09:59:00Z", "connectorStatus": "Available", "evseId": 2, "connectorId": 1}),
    )
    .await;
    let auth = cp.ok("Authorize", json!({"idToken": {"idToken": "CARD-7", "type": "ISO14443"}})).await;
    assert_eq!(auth["idTokenInfo"]["status"], "Accepted");
    let unknown = cp.ok("Authorize", json!({"idToken": {"idToken": "STRANGER", "type": "ISO14443"}})).await;
    assert_eq!(unknown["idTokenInfo"]["status"], "Unknown");

    let started = cp
        .ok(
            "TransactionEvent",
            tx_event(
                "Started",
                0,
                12.0,
                json!({"triggerReason": "Authorized", "idToken": {"idToken": "CARD-7", "type": "ISO14443"}}),
            ),
        )
        .await;
    assert_eq!(started["idTokenInfo"]["status"], "Accepted");
    cp.ok("TransactionEvent", tx_event("Updated", 1, 15.5, json!({}))).await;
    let (_, station) = app.get("/stations/EVSE-HUB", &t.token).await;
    assert_eq!((station["protocol"].as_str(), station["connected"].as_bool()), (Some("ocpp2.0.1"), Some(true)));
    assert_eq!(station["connectors"]["1/1"]["status"], "Occupied");
    assert_eq!(station["connectors"]["2/1"]["evse_id"], 2);
    assert_eq!(station["boot"]["charge_point_vendor"], "ACME");
    let tx_id = station["open_transactions"]["1"].as_i64().expect("open transaction on EVSE 1");

    let ended = tx_event(
        "Ended",
        2,
        20.25,
        json!({"triggerReason": "EVCommunicationLost", "transactionInfo": {"transactionId": "c0ffee-01", "stoppedReason": "EVDisconnected"}}),
    );
    assert_eq!(cp.ok("TransactionEvent", ended.clone()).await, json!({}));
    // The answer to Ended was lost: the station sends it again, with the same seqNo.
    assert_eq!(cp.ok("TransactionEvent", ended).await, json!({}));

    let (status, tx) = app.get(&format!("/transactions/{tx_id}"), &t.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((tx["status"].as_str(), tx["station_transaction_id"].as_str()), (Some("completed"), Some("c0ffee-01")));
    assert_eq!(
        (tx["meter_start"].as_i64(), tx["meter_stop"].as_i64(), tx["energy_wh"].as_i64()),
        (Some(12000), Some(20250), Some(8250))
    );
    assert_eq!(
        (tx["id_tag"].as_str(), tx["stop_reason"].as_str(), tx["evse_id"].as_u64()),
        (Some("CARD-7"), Some("EVDisconnected"), Some(1))
    );
    assert_eq!(tx["events"].as_array().map(Vec::len), Some(3), "the repeated Ended was applied once: {tx}");
    let (_, readings) = app.get(&format!("/transactions/{tx_id}/meter-values"), &t.token).await;
    assert_eq!(readings["items"].as_array().map(Vec::len), Some(3), "{readings}");
    assert_eq!(readings["items"][0]["sampled_value"][0]["value"], "12", "kWh as sent");
    let (_, list) = app.get("/transactions?station=EVSE-HUB", &t.token).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn get_and_set_variables_round_trip_and_the_device_model_is_visible() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let mut cp = station_201(&app, &t, "CS-1").await;
    cp.boot_201().await;

    // GetVariables through the command API, validated against the 2.0.1 schema.
    let get = json!({"getVariableData": [{"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}]});
    let api = app.post("/stations/CS-1/commands/GetVariables", &t.token, get.clone());
    let station = async {
        let call = cp.recv().await;
        assert_eq!((call[2].as_str(), &call[3]), (Some("GetVariables"), &get));
        let answer = json!({"getVariableResult": [{"attributeStatus": "Accepted", "attributeValue": "300",
            "component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}]});
        cp.send_text(&json!([3, call[1], answer]).to_string()).await;
    };
    let ((status, body), ()) = tokio::join!(api, station);
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("answered")), "{body}");
    assert_eq!(body["response"]["getVariableResult"][0]["attributeValue"], "300");

    let set = json!({"setVariableData": [{"attributeValue": "60", "component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}]});
    let api = app.post("/stations/CS-1/commands/SetVariables", &t.token, set);
    let station = async {
        let call = cp.recv().await;
        let answer = json!({"setVariableResult": [{"attributeStatus": "Accepted", "component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}]});
        cp.send_text(&json!([3, call[1], answer]).to_string()).await;
    };
    let ((status, body), ()) = tokio::join!(api, station);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["setVariableResult"][0]["attributeStatus"], "Accepted");

    // Invalid for 2.0.1, and 1.6-only actions, are refused before anything is sent.
    let (status, body) =
        app.post("/stations/CS-1/commands/SetVariables", &t.token, json!({"setVariableData": []})).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_payload")));
    assert_eq!(body["details"]["ocpp_error_code"], "OccurrenceConstraintViolation");
    let (status, body) =
        app.post("/stations/CS-1/commands/RemoteStartTransaction", &t.token, json!({"idTag": "X"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["message"].as_str().unwrap().contains("ocpp2.0.1"), "{body}");

    // GetBaseReport, then the station reports its device model.
    let api = app.post(
        "/stations/CS-1/commands/GetBaseReport",
        &t.token,
        json!({"requestId": 9, "reportBase": "FullInventory"}),
    );
    let station = async {
        let call = cp.recv().await;
        cp.send_text(&json!([3, call[1], {"status": "Accepted"}]).to_string()).await;
    };
    let ((status, _), ()) = tokio::join!(api, station);
    assert_eq!(status, StatusCode::OK);
    cp.ok(
        "NotifyReport",
        json!({"requestId": 9, "generatedAt": "2026-11-25T10:00:00Z", "seqNo": 0, "tbc": false, "reportData": [
        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"},
         "variableAttribute": [{"type": "Actual", "value": "60", "mutability": "ReadWrite"}],
         "variableCharacteristics": {"unit": "s", "dataType": "integer", "supportsMonitoring": false}},
        {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "AvailabilityState"},
         "variableAttribute": [{"value": "Available", "mutability": "ReadOnly"}]}]}),
    )
    .await;
    let (status, vars) = app.get("/stations/CS-1/variables", &t.token).await;
    assert_eq!(status, StatusCode::OK);
    let vars = vars.as_array().unwrap();
    assert_eq!(vars.len(), 2);
    let hb = vars.iter().find(|v| v["variable"] == "HeartbeatInterval").unwrap();
    assert_eq!(
        (hb["value"].as_str(), hb["mutability"].as_str(), hb["characteristics"]["unit"].as_str()),
        (Some("60"), Some("ReadWrite"), Some("s"))
    );
    let other = app.tenant("other").await;
    assert_eq!(app.get("/stations/CS-1/variables", &other.token).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_monitoring_event_changes_a_reported_value_and_keeps_what_the_report_said_of_it() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let mut cp = station_201(&app, &t, "CS-1").await;
    cp.boot_201().await;
    let power = json!({"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Power"}});
    let mut data = power.clone();
    data["variableAttribute"] =
        json!([{"type": "Actual", "value": "0", "mutability": "ReadOnly", "persistent": false, "constant": false}]);
    data["variableCharacteristics"] = json!({"unit": "W", "dataType": "decimal", "supportsMonitoring": true});
    cp.ok(
        "NotifyReport",
        json!({"requestId": 1, "generatedAt": "2026-11-25T10:00:00Z", "seqNo": 0, "reportData": [data]}),
    )
    .await;
    let (_, reported) = app.get("/stations/CS-1/variables", &t.token).await;
    let reported = reported[0].clone();

    let mut event = power.clone();
    event.as_object_mut().unwrap().extend(
        json!({"eventId": 1, "timestamp": "2026-11-25T10:05:00Z", "trigger": "Delta", "actualValue": "7400",
               "eventNotificationType": "HardWiredNotification"})
        .as_object()
        .unwrap()
        .clone(),
    );
    cp.ok("NotifyEvent", json!({"generatedAt": "2026-11-25T10:05:00Z", "seqNo": 0, "eventData": [event]})).await;

    let (status, vars) = app.get("/stations/CS-1/variables", &t.token).await;
    assert_eq!(status, StatusCode::OK);
    let vars = vars.as_array().unwrap();
    assert_eq!(vars.len(), 1, "{vars:?}");
    let v = &vars[0];
    assert_eq!(v["value"], "7400");
    let at = |v: &Value| v["updated_at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    assert!(at(v) >= at(&reported), "{v} {reported}");
    for kept in ["mutability", "persistent", "constant", "characteristics", "attribute_type", "evse_id"] {
        assert_eq!(v[kept], reported[kept], "{kept}: {v}");
    }
    assert_eq!((v["mutability"].as_str(), v["characteristics"]["unit"].as_str()), (Some("ReadOnly"), Some("W")));
}

#[tokio::test]
async fn bad_201_frames_get_the_201_error_codes() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let mut cp = station_201(&app, &t, "CS-1").await;
    cp.boot_201().await;
    let cases: &[(&str, &str, &str)] = &[
        ("garbage", "-1", "RpcFrameworkError"),
        (r#"[2, "b1", "Heartbeat"]"#, "b1", "RpcFrameworkError"),
        (r#"[6, "b2", "Heartbeat", {}]"#, "b2", "MessageTypeNotSupported"),
        (r#"[2, "b3", "Teleport", {}]"#, "b3", "NotImplemented"),
        (
            r#"[2, "b4", "RequestStartTransaction", {"idToken": {"idToken": "X", "type": "Central"}, "remoteStartId": 1}]"#,
            "b4",
            "NotSupported",
        ),
        (r#"[2, "b5", "Authorize", {}]"#, "b5", "ProtocolError"),
        (r#"[2, "b6", "Authorize", {"idToken": {"idToken": 5, "type": "Central"}}]"#, "b6", "TypeConstraintViolation"),
        (r#"[2, "b7", "Heartbeat", {"extra": 1}]"#, "b7", "FormatViolation"),
        (r#"[2, "b8", "MeterValues", {"evseId": 1, "meterValue": []}]"#, "b8", "OccurrenceConstraintViolation"),
        (
            r#"[2, "b9", "StatusNotification", {"timestamp": "2026-11-25T10:00:00Z", "connectorStatus": "Sleeping", "evseId": 1, "connectorId": 1}]"#,
            "b9",
            "PropertyConstraintViolation",
        ),
    ];
    for (text, id, code) in cases {
        cp.send_text(text).await;
        let answer = cp.recv().await;
        assert_eq!(
            (answer[0].as_i64(), answer[1].as_str(), answer[2].as_str()),
            (Some(4), Some(*id), Some(*code)),
            "for {text}"
        );
    }
    assert_eq!(cp.call("Heartbeat", json!({})).await[0], 3, "the session goes on");
}

#[tokio::test]
async fn a_201_station_not_accepted_is_told_pending_and_refused_anything_but_boot() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let (_, created) = app.post("/stations", &t.token, json!({"id": "CS-P", "registration": "pending"})).await;
    let password = created["password"].as_str().unwrap();
    let mut cp = StationClient::connect_201(app.port, "acme", "CS-P", password).await.unwrap();
    assert_eq!(cp.boot_201().await["status"], "Pending");
    let refused = cp.call("TransactionEvent", tx_event("Started", 0, 1.0, json!({}))).await;
    assert_eq!((refused[0].as_i64(), refused[2].as_str()), (Some(4), Some("SecurityError")));
    let (_, txs) = app.get("/transactions", &t.token).await;
    assert_eq!(txs, json!({"items": [], "next_cursor": null}));
}
