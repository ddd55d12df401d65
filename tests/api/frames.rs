use crate::helpers::{series_value, spawn_app, spawn_app_with, StationClient};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// Sends raw text and returns the CALLERROR's (unique id, error code).
async fn error_for(cp: &mut StationClient, text: &str) -> (String, String) {
    cp.send_text(text).await;
    let answer = cp.recv().await;
    assert_eq!(answer[0], 4, "{text} should get a CALLERROR, got {answer}");
    assert!(answer[3].is_string() && answer[4].is_object(), "CALLERROR has description and details: {answer}");
    (answer[1].as_str().unwrap().to_string(), answer[2].as_str().unwrap().to_string())
}

#[tokio::test]
async fn every_kind_of_bad_frame_gets_the_callerror_the_spec_names_and_the_session_goes_on() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let mut cp = app.connected_station(&t, "CP001").await;
    cp.boot().await;

    let formation_before =
        series_value(&app.metrics().await, "ocpp_call_errors_total", &[("code", "FormationViolation")]);
    let cases: &[(&str, &str, &str)] = &[
        ("this is not json", "-1", "FormationViolation"),
        (r#"{"not": "an array"}"#, "-1", "FormationViolation"),
        (r#"[2, "a1", "Heartbeat"]"#, "a1", "FormationViolation"),
        (r#"[2, "a2", "Heartbeat", "payload"]"#, "a2", "FormationViolation"),
        (r#"[9, "a3", "Heartbeat", {}]"#, "a3", "ProtocolError"),
        (r#"[2, "a4", "FlyToTheMoon", {}]"#, "a4", "NotImplemented"),
        (r#"[2, "a5", "RemoteStartTransaction", {"idTag": "X"}]"#, "a5", "NotSupported"),
        (r#"[2, "a6", "Authorize", {}]"#, "a6", "ProtocolError"),
        (r#"[2, "a7", "Authorize", {"idTag": 12}]"#, "a7", "TypeConstraintViolation"),
        (r#"[2, "a8", "Authorize", {"idTag": "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}]"#, "a8", "TypeConstraintViolation"),
        (r#"[2, "a9", "Authorize", {"idTag": "A", "extra": 1}]"#, "a9", "FormationViolation"),
        (
            r#"[2, "a10", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Flying"}]"#,
            "a10",
            "PropertyConstraintViolation",
        ),
        (
            r#"[2, "a11", "StartTransaction", {"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": "not a time"}]"#,
            "a11",
            "PropertyConstraintViolation",
        ),
    ];
    for (text, id, code) in cases {
        let (got_id, got_code) = error_for(&mut cp, text).await;
        assert_eq!((got_id.as_str(), got_code.as_str()), (*id, *code), "for {text}");
    }
    let long_id = "x".repeat(37);
    let (id, code) = error_for(&mut cp, &format!(r#"[2, "{long_id}", "Heartbeat", {{}}]"#)).await;
    assert_eq!((id.as_str(), code.as_str()), ("-1", "FormationViolation"));

    cp.ws.send(Message::Binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(cp.recv().await[2], "FormationViolation");
    // An answer to a command that was never sent is ignored, not answered.
    cp.send_text(r#"[3, "never-sent", {}]"#).await;

    // After all that garbage the session still works, and so does the server.
    assert_eq!(cp.call("Heartbeat", json!({})).await[0], 3);
    let formation_after =
        series_value(&app.metrics().await, "ocpp_call_errors_total", &[("code", "FormationViolation")]);
    assert!(formation_after >= formation_before + 6.0, "CALLERRORs counted by code");
}

#[tokio::test]
async fn a_frame_over_the_size_limit_closes_only_that_connection_with_1009() {
    let app = spawn_app_with(|s| s.ocpp.max_frame_bytes = 4096).await;
    let t = app.tenant("acme").await;
    let password = app.station(&t, "CP001").await;
    let mut cp = StationClient::connect(app.port, "acme", "CP001", &password).await.unwrap();
    cp.boot().await;
    let huge = format!(r#"[2, "big", "DataTransfer", {{"vendorId": "v", "data": "{}"}}]"#, "x".repeat(8000));
    cp.send_text(&huge).await;
    match cp.recv_message().await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected close 1009, got {other:?}"),
    }
    let mut again = StationClient::connect(app.port, "acme", "CP001", &password).await.expect("server still accepts");
    assert_eq!(again.call("Heartbeat", json!({})).await[0], 3);
}
