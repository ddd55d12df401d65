use crate::helpers::{series_value, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn a_charging_session_from_boot_to_stop_shows_in_the_api_with_its_energy() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let (status, _) =
        app.request(Method::PUT, "/id-tags/RFID-1", Some(&t.token), Some(json!({"status": "Accepted"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let mut cp = app.connected_station(&t, "CP001").await;

    let boot = cp.boot().await;
    assert_eq!((boot["status"].as_str(), boot["interval"].as_u64()), (Some("Accepted"), Some(300)));
    assert!(cp.ok("Heartbeat", json!({})).await["currentTime"].is_string());
    cp.ok("StatusNotification", json!({"connectorId": 1, "errorCode": "NoError", "status": "Preparing"})).await;
    let auth = cp.ok("Authorize", json!({"idTag": "RFID-1"})).await;
    assert_eq!(auth["idTagInfo"]["status"], "Accepted");
    let start = cp
        .ok(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "RFID-1", "meterStart": 12000, "timestamp": "2026-11-25T10:00:00Z"}),
        )
        .await;
    assert_eq!(start["idTagInfo"]["status"], "Accepted");
    let tx = start["transactionId"].as_i64().expect("transaction id");
    cp.ok("StatusNotification", json!({"connectorId": 1, "errorCode": "NoError", "status": "Charging"})).await;
    cp.ok(
        "MeterValues",
        json!({"connectorId": 1, "transactionId": tx, "meterValue": [{"timestamp": "2026-11-25T10:15:00Z", "sampledValue": [
            {"value": "14500", "measurand": "Energy.Active.Import.Register", "unit": "Wh", "context": "Sample.Periodic"},
            {"value": "11.0", "measurand": "Power.Active.Import", "unit": "kW"}]}]}),
    )
    .await;

    // While charging, the API shows the station connected with the open transaction.
    let (_, station) = app.get("/stations/CP001", &t.token).await;
    assert_eq!(
        (station["connected"].as_bool(), station["protocol"].as_str()),
        (Some(true), Some("ocpp1.6")),
        "{station}"
    );
    assert_eq!(station["connectors"]["1"]["status"], "Charging");
    assert_eq!(station["open_transactions"]["1"], tx);
    assert_eq!(station["boot"]["charge_point_vendor"], "ACME");
    let (_, active) = app.get(&format!("/transactions/{tx}"), &t.token).await;
    assert_eq!((active["status"].as_str(), active["energy_wh"].is_null()), (Some("active"), true));

    let stop = cp
        .ok("StopTransaction", json!({"transactionId": tx, "meterStop": 20500, "timestamp": "2026-11-25T11:00:00Z", "idTag": "RFID-1", "reason": "Local",
            "transactionData": [{"timestamp": "2026-11-25T11:00:00Z", "sampledValue": [{"value": "20500", "context": "Transaction.End", "unit": "Wh"}]}]}))
        .await;
    assert_eq!(stop["idTagInfo"]["status"], "Accepted");
    // A retried StopTransaction (the answer was lost) changes nothing.
    cp.ok("StopTransaction", json!({"transactionId": tx, "meterStop": 99999, "timestamp": "2026-11-25T11:05:00Z"}))
        .await;

    let (status, done) = app.get(&format!("/transactions/{tx}"), &t.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(done["status"], "completed");
    assert_eq!(done["energy_wh"], 8500);
    assert_eq!((done["meter_start"].as_i64(), done["meter_stop"].as_i64()), (Some(12000), Some(20500)));
    assert_eq!(done["stop_reason"], "Local");
    let (_, readings) = app.get(&format!("/transactions/{tx}/meter-values"), &t.token).await;
    let mv = readings["items"].as_array().unwrap();
    assert_eq!(mv.len(), 2, "periodic reading and transactionData are both kept: {readings}");
    assert_eq!(mv[0]["sampled_value"][1]["measurand"], "Power.Active.Import");
    assert_eq!(mv[1]["sampled_value"][0]["context"], "Transaction.End");

    let (_, list) = app.get("/transactions?station=CP001", &t.token).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    let (_, other) = app.get("/transactions?station=CP002", &t.token).await;
    assert_eq!(other["items"].as_array().map(Vec::len), Some(0));

    let metrics = app.metrics().await;
    assert!(
        series_value(
            &metrics,
            "ocpp_messages_total",
            &[("action", "StartTransaction"), ("direction", "in"), ("result", "ok")]
        ) >= 1.0
    );
    assert!(
        series_value(&metrics, "ocpp_call_duration_seconds_count", &[("action", "StopTransaction")]) >= 2.0,
        "latency histogram"
    );
    assert!(series_value(&metrics, "ocpp_connections", &[("protocol", "ocpp1.6")]) >= 1.0, "this station is connected");
}

#[tokio::test]
async fn id_tags_decide_authorize_answers_and_are_managed_through_the_api() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let put = |tag: &'static str, body: serde_json::Value| {
        let token = t.token.clone();
        let app = &app;
        async move { app.request(Method::PUT, &format!("/id-tags/{tag}"), Some(&token), Some(body)).await }
    };
    put("BLOCKED", json!({"status": "Blocked"})).await;
    put("OLD", json!({"status": "Accepted", "expiry_date": "2020-01-01T00:00:00Z"})).await;
    put("CHILD", json!({"status": "Accepted", "parent_id_tag": "FLEET-7"})).await;
    let (status, _) = put("CHILD", json!({"status": "Accepted", "parent_id_tag": "FLEET-8"})).await;
    assert_eq!(status, StatusCode::OK, "replacing a tag answers 200");
    let (status, err) = put("BAD", json!({"status": "Maybe"})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_json")));
    let (status, _) = app
        .request(
            Method::PUT,
            &format!("/id-tags/{}", "X".repeat(21)),
            Some(&t.token),
            Some(json!({"status": "Accepted"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "id tags are at most 20 characters");

    let mut cp = app.connected_station(&t, "CP001").await;
    cp.boot().await;
    let status_of = |r: serde_json::Value| r["idTagInfo"]["status"].as_str().unwrap().to_string();
    assert_eq!(status_of(cp.ok("Authorize", json!({"idTag": "BLOCKED"})).await), "Blocked");
    assert_eq!(status_of(cp.ok("Authorize", json!({"idTag": "OLD"})).await), "Expired");
    assert_eq!(status_of(cp.ok("Authorize", json!({"idTag": "UNKNOWN"})).await), "Invalid");
    let child = cp.ok("Authorize", json!({"idTag": "CHILD"})).await;
    assert_eq!(
        (child["idTagInfo"]["status"].as_str(), child["idTagInfo"]["parentIdTag"].as_str()),
        (Some("Accepted"), Some("FLEET-8"))
    );

    let (_, tags) = app.get("/id-tags", &t.token).await;
    assert_eq!(tags["items"].as_array().map(Vec::len), Some(3));
    let (status, _) = app.request(Method::DELETE, "/id-tags/CHILD", Some(&t.token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(status_of(cp.ok("Authorize", json!({"idTag": "CHILD"})).await), "Invalid");
    let (status, _) = app.get("/id-tags/CHILD", &t.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The station's `last_seen`: the time of its last message, while it is connected and once it is
/// offline, whether that message recorded it (a boot) or only proved the station alive (a heartbeat,
/// recorded as it disconnects).
#[tokio::test]
async fn an_offline_station_shows_when_its_last_message_arrived() {
    use chrono::{DateTime, TimeDelta, Utc};
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    // Polled: the disconnect is recorded after the session has ended.
    let offline_seen_at_least = |id: &'static str, at_least: DateTime<Utc>| {
        let (app, token) = (&app, t.token.clone());
        async move {
            let mut last = None;
            for _ in 0..100 {
                let (_, s) = app.get(&format!("/stations/{id}"), &token).await;
                let seen =
                    s["last_seen"].as_str().and_then(|v| DateTime::parse_from_rfc3339(v).ok()).map(|d| d.to_utc());
                if s["connected"] == false && seen.is_some_and(|seen| seen >= at_least) {
                    return seen.unwrap_or(at_least);
                }
                last = Some(s);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            panic!("{id} not shown offline and seen at {at_least} or later: {last:?}");
        }
    };

    // Booted, then gone: the boot's time.
    let mut cp = app.connected_station(&t, "CP-BOOT").await;
    cp.boot().await;
    let (_, booted) = app.get("/stations/CP-BOOT", &t.token).await;
    let boot_seen = DateTime::parse_from_rfc3339(booted["last_seen"].as_str().expect("a boot is a sighting"))
        .expect("RFC 3339")
        .to_utc();
    drop(cp);
    assert_eq!(offline_seen_at_least("CP-BOOT", boot_seen).await, boot_seen);

    // Booted, a heartbeat later, then gone: the heartbeat's time, which only the disconnect records.
    let mut cp = app.connected_station(&t, "CP-HB").await;
    cp.boot().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before_heartbeat = Utc::now() - TimeDelta::milliseconds(5);
    cp.ok("Heartbeat", json!({})).await;
    // While it is connected, from its session, at once.
    let (_, live) = app.get("/stations/CP-HB", &t.token).await;
    let seen = DateTime::parse_from_rfc3339(live["last_seen"].as_str().unwrap_or_default()).map(|d| d.to_utc());
    assert!(live["connected"] == true && seen.is_ok_and(|seen| seen >= before_heartbeat), "{live}");
    drop(cp);
    offline_seen_at_least("CP-HB", before_heartbeat).await;
}
