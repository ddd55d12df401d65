//! `ocpp-floor`: the floor a central system is measured against. A bare tokio-tungstenite server
//! that accepts any station at any path (no authentication, no storage, no state), picks the
//! OCPP subprotocol offered, and answers every CALL with a canned CALLRESULT for its action. What
//! `ocpp-bench` measures against it is what the socket, the WebSocket codec and JSON parsing cost
//! alone: a real server's per-session memory and per-message CPU are compared with these.
//!
//!     ocpp-floor --port 8190
//!     ocpp-bench fleet --url-template 'ws://127.0.0.1:8190/ocpp/{id}' --password x --stations 5000 …
//!
//! Not a central system: it checks no password, stores nothing and sends no CALL of its own.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// The answer to a CALL of `action`, for a station speaking 2.0.1 (`v201`) or 1.6.
fn canned(action: &str, v201: bool, now: &str) -> Value {
    match (action, v201) {
        ("BootNotification", _) => json!({"status": "Accepted", "currentTime": now, "interval": 300}),
        ("Heartbeat", _) => json!({"currentTime": now}),
        ("Authorize", false) => json!({"idTagInfo": {"status": "Accepted"}}),
        ("Authorize", true) => json!({"idTokenInfo": {"status": "Accepted"}}),
        ("StartTransaction", _) => json!({"transactionId": 1, "idTagInfo": {"status": "Accepted"}}),
        ("StopTransaction", _) => json!({"idTagInfo": {"status": "Accepted"}}),
        ("DataTransfer", _) => json!({"status": "Accepted"}),
        ("TransactionEvent", _) => json!({"idTokenInfo": {"status": "Accepted"}}),
        // StatusNotification, MeterValues, NotifyEvent, FirmwareStatusNotification and the rest
        // answer with an empty object.
        _ => json!({}),
    }
}

/// The reply to one text message: a CALLRESULT for a CALL, nothing for anything else.
fn reply(text: &str, v201: bool, now: &str) -> Option<String> {
    let frame: Value = serde_json::from_str(text).ok()?;
    let frame = frame.as_array()?;
    if frame.first()?.as_u64()? != 2 {
        return None;
    }
    let id = frame.get(1)?.as_str()?;
    let action = frame.get(2)?.as_str()?;
    Some(json!([3, id, canned(action, v201, now)]).to_string())
}

async fn serve(stream: TcpStream, now: Arc<RwLock<String>>) {
    let mut v201 = false;
    // The callback's error type (an HTTP response) is tungstenite's, not ours to shrink.
    #[allow(clippy::result_large_err)]
    let pick = |req: &Request, mut resp: Response| {
        let offered = req.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).unwrap_or("");
        let chosen = offered.split(',').map(str::trim).find(|p| *p == "ocpp2.0.1" || *p == "ocpp1.6");
        if let Some(p) = chosen {
            v201 = p == "ocpp2.0.1";
            resp.headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static(if v201 { "ocpp2.0.1" } else { "ocpp1.6" }));
        }
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, pick).await else { return };
    while let Some(Ok(message)) = ws.next().await {
        let answer = match message {
            Message::Text(text) => {
                let now = now.read().map(|n| n.clone()).unwrap_or_default();
                reply(&text, v201, &now).map(Message::Text)
            }
            Message::Close(_) => break,
            // Pings are answered by tungstenite itself; binary frames and pongs get nothing.
            _ => None,
        };
        if let Some(answer) = answer {
            if ws.send(answer).await.is_err() {
                break;
            }
        }
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut bind, mut port) = ("127.0.0.1".to_string(), 8190u16);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--bind", Some(v)) => bind = v,
            ("--port", Some(v)) => port = v.parse().map_err(|e| std::io::Error::other(format!("--port: {e}")))?,
            _ => {
                eprintln!("usage: ocpp-floor [--bind ADDR] [--port PORT]   (default 127.0.0.1:8190)");
                std::process::exit(2);
            }
        }
    }
    // As many connections as the hard open-files limit allows.
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind((bind.as_str(), port)).await?;
        eprintln!("ocpp-floor: answering OCPP-J CALLs on ws://{}", listener.local_addr()?);
        let now = Arc::new(RwLock::new(String::new()));
        let clock = now.clone();
        tokio::spawn(async move {
            loop {
                let stamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                if let Ok(mut n) = clock.write() {
                    *n = stamp;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or the like: wait a little instead of spinning.
                    eprintln!("ocpp-floor: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve(stream, now.clone()));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_get_their_canned_result_and_nothing_else_gets_an_answer() {
        let r: Value = serde_json::from_str(&reply(r#"[2,"7","Heartbeat",{}]"#, false, "T").unwrap()).unwrap();
        assert_eq!(r, json!([3, "7", {"currentTime": "T"}]));
        let r: Value =
            serde_json::from_str(&reply(r#"[2,"a","Authorize",{"idToken":{}}]"#, true, "T").unwrap()).unwrap();
        assert_eq!(r, json!([3, "a", {"idTokenInfo": {"status": "Accepted"}}]));
        assert_eq!(reply(r#"[3,"7",{}]"#, false, "T"), None, "a CALLRESULT");
        assert_eq!(reply("not json", false, "T"), None);
        assert_eq!(reply(r#"[2,7,"Heartbeat",{}]"#, false, "T"), None, "a numeric message id");
    }
}
