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

#[tokio::test]
async fn a_message_sent_with_the_handshake_in_one_packet_is_answered() {
    use base64::Engine;
    use tokio::io::AsyncWriteExt;
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let password = app.station(&t, "CP001").await;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("CP001:{password}"));
    let mut bytes = format!(
        "GET /ocpp/acme/CP001 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: ocpp1.6\r\nAuthorization: Basic {auth}\r\n\r\n"
    )
    .into_bytes();
    // The first CALL goes in the same write as the request: the server reads it with the request's
    // bytes, before it knows it is a WebSocket.
    bytes.extend(crate::raw::text(r#"[2,"early-1","Heartbeat",{}]"#));
    let mut stream = crate::raw::tcp(app.port, None, None).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let head = crate::raw::read_head(&mut stream).await.unwrap();
    assert_eq!(crate::raw::status_of(&head), 101, "{head}");
    let (ending, texts) = crate::raw::read_until_close(&mut stream, std::time::Duration::from_secs(3)).await;
    assert!(matches!(ending, crate::raw::Ending::Open), "the session stays up");
    assert_eq!(texts.len(), 1, "{texts:?}");
    let answer: serde_json::Value = serde_json::from_str(&texts[0]).unwrap();
    assert_eq!(answer[0], 3, "{answer}");
    assert_eq!(answer[1], "early-1", "{answer}");
}

#[tokio::test]
async fn a_websocket_upgrade_to_a_path_that_is_no_station_gets_the_routes_answer_and_a_closed_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let mut stream = crate::raw::tcp(app.port, None, None).await.unwrap();
    let request = "GET /api/v1/nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    assert!(read.is_ok(), "the server closes the connection after its answer");
    let response = String::from_utf8_lossy(&response);
    assert_eq!(crate::raw::status_of(&response), 404, "{response}");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("a JSON body: {response}"));
    assert_eq!(body["code"], "not_found", "{body}");
}
