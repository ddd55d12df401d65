//! Retention: the periods a tenant reads and sets, and the background pass that removes what is
//! older, kind by kind, while an open transaction keeps its readings.

use crate::helpers::{series_value, spawn_app, spawn_app_with, StationClient};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_tenant_reads_its_periods_sets_its_own_and_goes_back_to_the_default() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let (status, periods) = app.get("/account/retention", &t.token).await;
    assert_eq!(status, StatusCode::OK, "{periods}");
    // The node's defaults (config/default.toml), none of them the tenant's own.
    let default_days = |kind: &str| periods[kind]["default_days"].as_u64().expect("a default period");
    for kind in ["meter_values", "station_events", "login_history", "finished_commands", "finished_transactions"] {
        assert_eq!(
            (periods[kind]["days"].as_u64(), &periods[kind]["own"]),
            (Some(default_days(kind)), &json!(false)),
            "{periods}"
        );
    }
    let (meter_default, events_default) = (default_days("meter_values"), default_days("station_events"));

    let put = |body: Value| app.request(Method::PUT, "/account/retention", Some(&t.token), Some(body));
    let (status, periods) = put(json!({"meter_values": 30, "station_events": 7})).await;
    assert_eq!(status, StatusCode::OK, "{periods}");
    assert_eq!(periods["meter_values"], json!({"days": 30, "default_days": meter_default, "own": true}));
    assert_eq!(periods["station_events"]["days"], 7);
    // A field left out stays; null goes back to the default.
    let (_, periods) = put(json!({"station_events": null})).await;
    assert_eq!(periods["meter_values"]["days"], 30);
    assert_eq!(
        periods["station_events"],
        json!({"days": events_default, "default_days": events_default, "own": false})
    );
    let (_, read_back) = app.get("/account/retention", &t.token).await;
    assert_eq!(read_back, periods, "kept");

    for bad in [
        json!({"meter_values": 0}),
        json!({"login_history": 3651}),
        json!({"meter_values": -1}),
        json!({"transactions": 5}),
    ] {
        let (status, body) = put(bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["code"].as_str().is_some_and(|c| c.starts_with("invalid_")), "{body}");
    }
    let (_, unchanged) = app.get("/account/retention", &t.token).await;
    assert_eq!(unchanged, periods, "a refused change changes nothing");
    let other = app.tenant("other").await;
    let (_, theirs) = app.get("/account/retention", &other.token).await;
    assert_eq!(theirs["meter_values"]["own"], false, "another tenant's periods are its own");
}

async fn readings(cp: &mut StationClient, tx: i64, times: &[&str]) {
    let values: Vec<Value> = times.iter().map(|t| json!({"timestamp": t, "sampledValue": [{"value": *t}]})).collect();
    cp.ok("MeterValues", json!({"connectorId": 1, "transactionId": tx, "meterValue": values})).await;
}

#[tokio::test]
async fn the_pass_removes_readings_past_the_tenants_period_and_an_open_transaction_keeps_its_own() {
    let app = spawn_app_with(|s| {
        s.retention.interval_secs = 1;
        s.retention.pause_ms = 0;
        s.retention.batch = 2;
    })
    .await;
    let t = app.tenant("acme").await;
    let (status, body) =
        app.request(Method::PUT, "/account/retention", Some(&t.token), Some(json!({"meter_values": 1}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.request(Method::PUT, "/id-tags/RFID-1", Some(&t.token), Some(json!({"status": "Accepted"}))).await;
    let mut cp = app.connected_station(&t, "CP1").await;
    cp.boot().await;
    let now = chrono::Utc::now();
    let recent = (now - chrono::Duration::hours(1)).to_rfc3339();
    let old = ["2020-01-01T10:00:00Z", "2020-01-01T10:01:00Z", "2020-01-01T10:02:00Z"];
    let start = |connector: u32| json!({"connectorId": connector, "idTag": "RFID-1", "meterStart": 0, "timestamp": "2020-01-01T09:59:00Z"});
    let finished = cp.ok("StartTransaction", start(1)).await["transactionId"].as_i64().expect("id");
    readings(&mut cp, finished, &old).await;
    readings(&mut cp, finished, &[&recent]).await;
    cp.ok("StopTransaction", json!({"transactionId": finished, "meterStop": 10, "timestamp": recent})).await;
    let open = cp.ok("StartTransaction", start(2)).await["transactionId"].as_i64().expect("id");
    readings(&mut cp, open, &old).await;

    let values = |tx: i64| {
        let app = &app;
        let token = t.token.clone();
        async move {
            let (_, page) = app.get(&format!("/transactions/{tx}/meter-values"), &token).await;
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|r| r["timestamp"].as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if values(finished).await.len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "a pass removed the old readings within 20 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left = values(finished).await;
    assert_eq!(left.len(), 1);
    assert!(!left[0].starts_with("2020"), "the recent reading stays: {left:?}");
    assert_eq!(values(open).await.len(), 3, "an open transaction keeps its readings, however old");
    let metrics = app.metrics().await;
    assert!(series_value(&metrics, "ocpp_retention_pruned_total", &[("kind", "meter_values")]) >= 3.0, "counted");
    assert!(series_value(&metrics, "ocpp_retention_passes_total", &[("outcome", "done")]) >= 1.0);
    // The transaction itself stays.
    let (status, tx) = app.get(&format!("/transactions/{finished}"), &t.token).await;
    assert_eq!((status, tx["status"].as_str()), (StatusCode::OK, Some("completed")));
}
