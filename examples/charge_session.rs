//! A simulated charge point that runs one charging session against a central system:
//! BootNotification → StatusNotification → Authorize → StartTransaction → MeterValues →
//! StopTransaction, printing each exchange. Any OCPP-J 1.6 central system will do.
//!
//! ```text
//! cargo run --example charge_session -- <ocpp_url> <password> [id_tag]
//! cargo run --example charge_session -- <station.json> [id_tag]
//! ```
//!
//! `station.json` is the answer of `POST /api/v1/stations` (it holds `ocpp_url` and `password`).
//!
//! While connected it also answers the central system's commands with Accepted, so the command API
//! can be tried from another terminal; pass `--stay` after the arguments to keep the connection open.

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn call(ws: &mut Ws, n: &mut u32, action: &str, payload: Value) -> Result<Value, String> {
    *n += 1;
    let id = format!("cs-{n}");
    let frame = json!([2, id, action, payload]);
    println!("→ {frame}");
    ws.send(Message::Text(frame.to_string())).await.map_err(|e| e.to_string())?;
    loop {
        let msg = ws.next().await.ok_or("connection closed")?.map_err(|e| e.to_string())?;
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        println!("← {v}");
        match v[0].as_i64() {
            Some(3) if v[1] == json!(id) => return Ok(v[2].clone()),
            Some(4) if v[1] == json!(id) => return Err(format!("{action} refused: {v}")),
            Some(2) => answer_command(ws, &v).await?,
            _ => {}
        }
    }
}

/// Answers a central-system command the way a cooperative charger would.
async fn answer_command(ws: &mut Ws, call: &Value) -> Result<(), String> {
    let payload = match call[2].as_str() {
        Some("GetConfiguration") => {
            json!({"configurationKey": [{"key": "HeartbeatInterval", "readonly": false, "value": "300"}]})
        }
        Some("GetLocalListVersion") => json!({"listVersion": 0}),
        Some("GetDiagnostics") => json!({}),
        Some("UnlockConnector") => json!({"status": "Unlocked"}),
        Some("DataTransfer") => json!({"status": "Accepted"}),
        _ => json!({"status": "Accepted"}),
    };
    let answer = json!([3, call[1], payload]);
    println!("→ {answer}");
    ws.send(Message::Text(answer.to_string())).await.map_err(|e| e.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let stay = args.iter().any(|a| a == "--stay");
    let args: Vec<&String> = args.iter().filter(|a| *a != "--stay").collect();
    let usage = "usage: charge_session (<ocpp_url> <password> | <station.json>) [id_tag] [--stay]";
    let first = args.first().ok_or(usage)?;
    let (url, password, rest) = if first.starts_with("ws://") || first.starts_with("wss://") {
        (first.to_string(), args.get(1).ok_or(usage)?.to_string(), &args[2..])
    } else {
        let text = std::fs::read_to_string(first).map_err(|e| format!("{first}: {e}"))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{first}: {e}"))?;
        let field = |k: &str| v[k].as_str().map(String::from).ok_or(format!("{first} has no {k}"));
        (field("ocpp_url")?, field("password")?, &args[1..])
    };
    let id_tag = rest.first().map(|s| s.as_str()).unwrap_or("RFID-0001");
    let station_id = url.rsplit('/').next().ok_or("the URL ends with the station id")?;

    let mut request = url.as_str().into_client_request().map_err(|e| e.to_string())?;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{station_id}:{password}"));
    let headers = request.headers_mut();
    headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_static("ocpp1.6"));
    headers.insert("Authorization", HeaderValue::from_str(&format!("Basic {basic}")).map_err(|e| e.to_string())?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| format!("connect failed: {e}"))?;
    println!("connected to {url}");

    let n = &mut 0;
    let now = || chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    call(&mut ws, n, "BootNotification", json!({"chargePointVendor": "Example", "chargePointModel": "Sim-1"})).await?;
    call(&mut ws, n, "StatusNotification", json!({"connectorId": 1, "errorCode": "NoError", "status": "Preparing"}))
        .await?;
    call(&mut ws, n, "Authorize", json!({"idTag": id_tag})).await?;
    let (meter_start, meter_stop) = (1000, 8500);
    let start = call(
        &mut ws,
        n,
        "StartTransaction",
        json!({"connectorId": 1, "idTag": id_tag, "meterStart": meter_start, "timestamp": now()}),
    )
    .await?;
    let tx = start["transactionId"].as_i64().ok_or("no transactionId")?;
    call(&mut ws, n, "StatusNotification", json!({"connectorId": 1, "errorCode": "NoError", "status": "Charging"}))
        .await?;
    call(
        &mut ws,
        n,
        "MeterValues",
        json!({"connectorId": 1, "transactionId": tx, "meterValue": [{"timestamp": now(), "sampledValue": [
            {"value": "4200", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}]}),
    )
    .await?;
    call(
        &mut ws,
        n,
        "StopTransaction",
        json!({"transactionId": tx, "meterStop": meter_stop, "timestamp": now(), "idTag": id_tag, "reason": "Local"}),
    )
    .await?;
    call(&mut ws, n, "StatusNotification", json!({"connectorId": 1, "errorCode": "NoError", "status": "Available"}))
        .await?;
    println!("transaction {tx} done: {} Wh charged", meter_stop - meter_start);

    if stay {
        println!("staying connected; answering commands (Ctrl-C to quit)");
        while let Some(msg) = ws.next().await {
            if let Ok(Message::Text(text)) = msg {
                let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                println!("← {v}");
                if v[0] == 2 {
                    answer_command(&mut ws, &v).await?;
                }
            }
        }
    }
    Ok(())
}
