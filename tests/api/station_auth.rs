use crate::helpers::{series_value, spawn_app, try_connect, StationClient};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_provisioned_station_connects_with_its_password_and_nothing_else() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let (status, created) = app.post("/stations", &t.token, json!({"id": "CP001"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let url = created["ocpp_url"].as_str().unwrap();
    assert!(url.starts_with("ws://") && url.ends_with("/ocpp/acme/CP001"), "{url}");
    let password = created["password"].as_str().unwrap();
    assert!(password.len() >= 16);

    let p = app.port;
    let failures = |m: &str, reason: &str| series_value(m, "ocpp_auth_failures_total", &[("reason", reason)]);
    let before = app.metrics().await;
    assert_eq!(
        try_connect(p, "acme", "CP001", Some(("CP001", "wrong-password-123")), Some("ocpp1.6")).await.err().as_deref(),
        Some("HTTP 401")
    );
    assert_eq!(
        try_connect(p, "acme", "CP999", Some(("CP999", password)), Some("ocpp1.6")).await.err().as_deref(),
        Some("HTTP 401")
    );
    assert_eq!(
        try_connect(p, "nobody", "CP001", Some(("CP001", password)), Some("ocpp1.6")).await.err().as_deref(),
        Some("HTTP 401")
    );
    assert_eq!(try_connect(p, "acme", "CP001", None, Some("ocpp1.6")).await.err().as_deref(), Some("HTTP 401"));
    assert_eq!(
        try_connect(p, "acme", "CP001", Some(("CP002", password)), Some("ocpp1.6")).await.err().as_deref(),
        Some("HTTP 401"),
        "username must be the station id"
    );

    let mut station = StationClient::connect(p, "acme", "CP001", password).await.expect("right password connects");
    assert_eq!(station.boot().await["status"], "Accepted");

    let metrics = app.metrics().await;
    for reason in ["bad_password", "unknown_station", "unknown_tenant", "missing_credentials"] {
        assert!(failures(&metrics, reason) > failures(&before, reason), "{reason} not counted");
    }
}

#[tokio::test]
async fn only_unsupported_subprotocols_are_refused_with_a_clear_error() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let password = app.station(&t, "CP001").await;
    let handshake = |protocols: &'static str| {
        app.http
            .get(app.url("/ocpp/acme/CP001"))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Protocol", protocols)
            .basic_auth("CP001", Some(&password))
            .send()
    };
    let res = handshake("ocpp2.0, ocpp1.5").await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let err: serde_json::Value = res.json().await.unwrap();
    assert_eq!(err["code"], "unsupported_subprotocol");
    assert!(err["message"].as_str().unwrap().contains("ocpp1.6"), "{err}");

    // Offering 1.6 among others, with spaces around the tokens, negotiates 1.6.
    let res = handshake("ocpp2.0.1 ,  ocpp1.6 ").await.unwrap();
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(res.headers()["sec-websocket-protocol"], "ocpp1.6");
    let mut s =
        try_connect(app.port, "acme", "CP001", Some(("CP001", &password)), Some("ocpp2.0.1,ocpp1.6")).await.unwrap();
    assert_eq!(s.boot().await["status"], "Accepted");
}

#[tokio::test]
async fn the_newest_connection_wins_and_the_old_ones_late_stop_keeps_it_registered() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let password = app.station(&t, "CP001").await;
    let mut first = StationClient::connect(app.port, "acme", "CP001", &password).await.unwrap();
    first.boot().await;
    // Two more connections race for the station.
    let (second, third) = tokio::join!(
        StationClient::connect(app.port, "acme", "CP001", &password),
        StationClient::connect(app.port, "acme", "CP001", &password)
    );
    let (mut a, mut b) = (second.unwrap(), third.unwrap());

    // The first connection is closed by the server as replaced (policy violation close code).
    match first.recv_message().await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Policy),
        other => panic!("first connection should be closed, got {other:?}"),
    }
    // Exactly one of the racing pair survives: the other is closed too.
    let a_closed = tokio::time::timeout(Duration::from_millis(1500), a.recv_message()).await;
    let b_closed = tokio::time::timeout(Duration::from_millis(1500), b.recv_message()).await;
    let (mut winner, loser_closed) = match (a_closed, b_closed) {
        (Err(_), Ok(closed)) => (a, closed),
        (Ok(closed), Err(_)) => (b, closed),
        other => panic!("exactly one of two racing connections must survive: {other:?}"),
    };
    assert!(matches!(loser_closed, Some(Message::Close(_)) | None));

    // Give the closed sessions' stop time to reach the registry, then check the winner is still routed to.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, station) = app.get("/stations/CP001", &t.token).await;
    assert_eq!(station["connected"], true, "{station}");
    let api = async { app.post("/stations/CP001/commands/ClearCache", &t.token, json!({})).await };
    let station_side = async {
        let call = winner.recv().await;
        assert_eq!(call[2], "ClearCache");
        winner.send_text(&json!([3, call[1], {"status": "Accepted"}]).to_string()).await;
    };
    let ((status, body), ()) = tokio::join!(api, station_side);
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("accepted")), "{body}");
}

#[tokio::test]
async fn deleting_a_station_closes_its_session_and_locks_it_out() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let password = app.station(&t, "CP001").await;
    let mut s = StationClient::connect(app.port, "acme", "CP001", &password).await.unwrap();
    s.boot().await;
    let (status, _) = app.request(reqwest::Method::DELETE, "/stations/CP001", Some(&t.token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(matches!(s.recv_message().await, Some(Message::Close(_)) | None));
    let err = StationClient::connect(app.port, "acme", "CP001", &password).await.err();
    assert_eq!(err.as_deref(), Some("HTTP 401"));
    let (status, _) = app.get("/stations/CP001", &t.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_pending_station_may_only_boot_until_the_operator_accepts_it() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let (_, created) = app.post("/stations", &t.token, json!({"id": "CP001", "registration": "pending"})).await;
    let password = created["password"].as_str().unwrap().to_string();
    let mut s = StationClient::connect(app.port, "acme", "CP001", &password).await.unwrap();
    let boot = s.boot().await;
    assert_eq!((boot["status"].as_str(), boot["interval"].as_u64()), (Some("Pending"), Some(60)));
    let hb = s.call("Heartbeat", json!({})).await;
    assert_eq!((hb[0].as_i64(), hb[2].as_str()), (Some(4), Some("SecurityError")));

    let (status, st) = app
        .request(reqwest::Method::PATCH, "/stations/CP001", Some(&t.token), Some(json!({"registration": "accepted"})))
        .await;
    assert_eq!((status, st["registration"].as_str()), (StatusCode::OK, Some("accepted")));
    let boot = s.boot().await;
    assert_eq!((boot["status"].as_str(), boot["interval"].as_u64()), (Some("Accepted"), Some(300)));
    assert_eq!(s.call("Heartbeat", json!({})).await[0], 3);
}
