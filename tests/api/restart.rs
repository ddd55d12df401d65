//! The real binary, stopped hard and started again on the same data dir.

use crate::helpers::StationClient;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) port: u16,
}

impl Server {
    pub(crate) fn api(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/api/v1{path}", self.port)
    }

    /// A tenant "acme" (created unless it exists) and a fresh bearer token.
    pub(crate) async fn sign_in(&self, http: &reqwest::Client) -> String {
        let account = json!({"email": "ops@acme.example", "password": "s3cret-pass", "name": "Acme", "slug": "acme"});
        http.post(self.api("/accounts")).json(&account).send().await.unwrap();
        let login = json!({"email": "ops@acme.example", "password": "s3cret-pass"});
        let body: Value = http.post(self.api("/sessions")).json(&login).send().await.unwrap().json().await.unwrap();
        body["token"].as_str().expect("token").to_string()
    }

    async fn get(&self, http: &reqwest::Client, token: &str, path: &str) -> Value {
        http.get(self.api(path)).bearer_auth(token).send().await.unwrap().json().await.unwrap()
    }

    /// Provisions a station and returns its password.
    pub(crate) async fn station(&self, http: &reqwest::Client, token: &str, id: &str) -> String {
        let created: Value = http
            .post(self.api("/stations"))
            .bearer_auth(token)
            .json(&json!({"id": id}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        created["password"].as_str().expect("password").to_string()
    }

    /// Provisions a station with a password the operator chose (hashed with argon2).
    pub(crate) async fn station_with_password(&self, http: &reqwest::Client, token: &str, id: &str, password: &str) {
        let r = http
            .post(self.api("/stations"))
            .bearer_auth(token)
            .json(&json!({"id": id, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    }
}

impl Server {
    /// The server's /metrics text.
    pub(crate) async fn metrics(&self, http: &reqwest::Client) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        http.get(url).send().await.unwrap().text().await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ocpp-css serve` on port 0 with JSON logs and reads the bound port from its "listening" line.
fn start(data: &std::path::Path) -> Server {
    start_with(data, &[])
}

/// [`start`] with more settings, as `OCPP_CSS__…` environment variables.
pub(crate) fn start_with(data: &std::path::Path, env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ocpp-css"))
        .arg("serve")
        .envs(env.iter().copied())
        .env("OCPP_CSS__SERVER__PORT", "0")
        .env("OCPP_CSS__SERVER__WORKERS", "1")
        .env("OCPP_CSS__STORAGE__DATA_DIR", data)
        .env("OCPP_CSS__LOG__FORMAT", "json")
        .env("OCPP_CSS__LOG__LEVEL", "info")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = BufReader::new(stdout).lines();
    let port = loop {
        let line = lines.next().expect("server logged before exiting").expect("log line");
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if v["message"] == "listening" {
            break v["port"].as_u64().expect("port field") as u16;
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, port }
}

#[tokio::test]
async fn everything_acknowledged_survives_a_hard_kill_and_restart() {
    let data = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let server = start(data.path());

    let token = server.sign_in(&http).await;
    let password = server.station(&http, &token, "CP001").await;
    http.put(server.api("/id-tags/RFID-1"))
        .bearer_auth(&token)
        .json(&json!({"status": "Accepted"}))
        .send()
        .await
        .unwrap();

    let mut cp = StationClient::connect(server.port, "acme", "CP001", &password).await.unwrap();
    cp.boot().await;
    cp.ok("StatusNotification", json!({"connectorId": 1, "errorCode": "NoError", "status": "Charging"})).await;
    let done = cp
        .ok(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "RFID-1", "meterStart": 100, "timestamp": "2026-11-25T10:00:00Z"}),
        )
        .await["transactionId"]
        .as_i64()
        .unwrap();
    cp.ok("StopTransaction", json!({"transactionId": done, "meterStop": 1100, "timestamp": "2026-11-25T10:30:00Z"}))
        .await;
    let open = cp
        .ok(
            "StartTransaction",
            json!({"connectorId": 2, "idTag": "RFID-1", "meterStart": 50, "timestamp": "2026-11-25T10:40:00Z"}),
        )
        .await["transactionId"]
        .as_i64()
        .unwrap();
    cp.ok("MeterValues", json!({"connectorId": 2, "transactionId": open, "meterValue": [{"timestamp": "2026-11-25T10:45:00Z", "sampledValue": [{"value": "75"}]}]}))
        .await;

    // SIGKILL: no chance to flush anything that was not already durable.
    drop(cp);
    drop(server);

    let server = start(data.path());
    let old_token_works = http.get(server.api("/account")).bearer_auth(&token).send().await.unwrap().status();
    assert_eq!(old_token_works, 200, "the account and a token issued before the kill survived");
    let token = server.sign_in(&http).await;

    let tx = server.get(&http, &token, &format!("/transactions/{done}")).await;
    assert_eq!((tx["status"].as_str(), tx["energy_wh"].as_i64()), (Some("completed"), Some(1000)), "{tx}");
    let tx = server.get(&http, &token, &format!("/transactions/{open}")).await;
    assert_eq!(tx["status"], "active");
    let readings = server.get(&http, &token, &format!("/transactions/{open}/meter-values")).await;
    assert_eq!(readings["items"][0]["sampled_value"][0]["value"], "75", "{readings}");
    let st = server.get(&http, &token, "/stations/CP001").await;
    assert_eq!(st["connectors"]["1"]["status"], "Charging");
    assert_eq!(st["boot"]["charge_point_vendor"], "ACME");
    assert_eq!(st["connected"], false);

    // The station reconnects with the same password, and transaction ids keep growing.
    let mut cp = StationClient::connect(server.port, "acme", "CP001", &password).await.unwrap();
    cp.boot().await;
    let next = cp
        .ok(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "RFID-1", "meterStart": 1100, "timestamp": "2026-11-25T11:00:00Z"}),
        )
        .await["transactionId"]
        .as_i64()
        .unwrap();
    assert!(next > open, "transaction ids are never reused: {next} after {open}");
}

/// What a client saw acknowledged (a CALLRESULT received) before the server died.
#[derive(Default, Debug)]
struct Acked {
    started: Vec<(String, i64, i64)>,
    meter_values: Vec<(i64, String)>,
    stopped: Vec<(i64, i64)>,
}

/// Sends a CALL frame and waits for its CALLRESULT; None once the connection is gone.
async fn exchange(cp: &mut StationClient, (frame, uid): (String, String)) -> Option<Value> {
    use futures_util::{SinkExt, StreamExt};
    cp.ws.send(Message::Text(frame)).await.ok()?;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), cp.ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).ok()?;
                if v[0] == 3 && v[1] == json!(uid) {
                    return Some(v[2].clone());
                }
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// One station charging in a loop until its connection dies; records every acknowledged message.
async fn charge_until_killed(port: u16, id: String, password: String, acked: Arc<Mutex<Acked>>) {
    let Ok(mut cp) = StationClient::connect(port, "acme", &id, &password).await else { return };
    let mut n = 0u64;
    let mut call = |action: &'static str, payload: Value| {
        n += 1;
        let frame = json!([2, format!("{id}-{n}"), action, payload]).to_string();
        (frame, format!("{id}-{n}"))
    };
    if exchange(&mut cp, call("BootNotification", json!({"chargePointVendor": "V", "chargePointModel": "M"})))
        .await
        .is_none()
    {
        return;
    }
    let mut meter = 0i64;
    for round in 0.. {
        let start_ts = format!("2026-11-25T10:{:02}:{:02}Z", (round / 60) % 60, round % 60);
        let start = json!({"connectorId": 1, "idTag": "RFID-1", "meterStart": meter, "timestamp": start_ts});
        let Some(r) = exchange(&mut cp, call("StartTransaction", start)).await else { return };
        let tx = r["transactionId"].as_i64().unwrap();
        acked.lock().unwrap().started.push((id.clone(), tx, meter));
        for k in 0..3 {
            meter += 100;
            let ts = format!("2026-11-25T11:{:02}:{:02}Z", (round / 60) % 60, (round + k) % 60);
            let mv = json!({"connectorId": 1, "transactionId": tx, "meterValue": [{"timestamp": ts, "sampledValue": [{"value": meter.to_string()}]}]});
            if exchange(&mut cp, call("MeterValues", mv)).await.is_none() {
                return;
            }
            acked.lock().unwrap().meter_values.push((tx, meter.to_string()));
        }
        let stop = json!({"transactionId": tx, "meterStop": meter, "timestamp": "2026-11-25T12:00:00Z"});
        if exchange(&mut cp, call("StopTransaction", stop)).await.is_none() {
            return;
        }
        acked.lock().unwrap().stopped.push((tx, meter));
    }
}

#[tokio::test]
async fn every_message_acknowledged_before_a_sigkill_mid_traffic_is_there_after_restart() {
    let data = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut server = start(data.path());
    let token = server.sign_in(&http).await;
    let mut stations = Vec::new();
    for i in 0..8 {
        let id = format!("CP{i:03}");
        let password = server.station(&http, &token, &id).await;
        stations.push((id, password));
    }
    let acked = Arc::new(Mutex::new(Acked::default()));
    let clients: Vec<_> = stations
        .iter()
        .map(|(id, pw)| tokio::spawn(charge_until_killed(server.port, id.clone(), pw.clone(), acked.clone())))
        .collect();
    // Let traffic flow, then kill the server in the middle of it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.started.len() >= 8 && acked.meter_values.len() >= 8, "traffic flowed before the kill: {acked:?}");

    let server = start(data.path());
    let token = server.sign_in(&http).await;
    for (station, tx, meter_start) in &acked.started {
        let t = server.get(&http, &token, &format!("/transactions/{tx}")).await;
        assert_eq!(
            (t["station_id"].as_str(), t["meter_start"].as_i64()),
            (Some(station.as_str()), Some(*meter_start)),
            "{t}"
        );
    }
    for (tx, meter_stop) in &acked.stopped {
        let t = server.get(&http, &token, &format!("/transactions/{tx}")).await;
        assert_eq!((t["status"].as_str(), t["meter_stop"].as_i64()), (Some("completed"), Some(*meter_stop)), "{t}");
    }
    for (tx, value) in &acked.meter_values {
        let t = server.get(&http, &token, &format!("/transactions/{tx}/meter-values")).await;
        let values: Vec<&str> =
            t["items"].as_array().unwrap().iter().filter_map(|m| m["sampled_value"][0]["value"].as_str()).collect();
        assert!(
            values.contains(&value.as_str()),
            "acknowledged meter value {value} of transaction {tx} lost: {values:?}"
        );
    }
}

#[tokio::test]
async fn a_command_queued_before_a_restart_is_delivered_after_it() {
    let data = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let server = start(data.path());
    let token = server.sign_in(&http).await;
    let password = server.station(&http, &token, "CP001").await;
    let res = http
        .post(server.api("/stations/CP001/commands/RemoteStartTransaction?queue=true"))
        .bearer_auth(&token)
        .json(&json!({"connectorId": 1, "idTag": "RFID-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let queued: Value = res.json().await.unwrap();
    let id = queued["command_id"].as_str().unwrap().to_string();
    drop(server); // SIGKILL

    let server = start(data.path());
    let token = server.sign_in(&http).await;
    assert_eq!(server.get(&http, &token, &format!("/stations/CP001/command-records/{id}")).await["status"], "queued");
    let mut cp = StationClient::connect(server.port, "acme", "CP001", &password).await.unwrap();
    cp.boot().await;
    let call = cp.recv().await;
    assert_eq!((call[2].as_str(), call[3]["idTag"].as_str()), (Some("RemoteStartTransaction"), Some("RFID-1")));
    cp.send_text(&json!([3, call[1], {"status": "Accepted"}]).to_string()).await;
    let mut state = Value::Null;
    for _ in 0..50 {
        state = server.get(&http, &token, &format!("/stations/CP001/command-records/{id}")).await;
        if state["status"] == "answered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (state["status"].as_str(), state["response"]["status"].as_str()),
        (Some("answered"), Some("Accepted")),
        "{state}"
    );
}

#[tokio::test]
async fn sigterm_closes_sessions_with_1012_and_exits_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut server = start(data.path());
    let token = server.sign_in(&http).await;
    let password = server.station(&http, &token, "CP001").await;
    let mut cp = StationClient::connect(server.port, "acme", "CP001", &password).await.unwrap();
    cp.boot().await;
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    match cp.recv_message().await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Restart),
        other => panic!("expected close 1012, got {other:?}"),
    }
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "server did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}");
    // New connections are refused once it is gone.
    assert!(StationClient::connect(server.port, "acme", "CP001", &password).await.is_err());
}
