//! The real binary, stopped hard and started again on the same data dir.

use crate::helpers::StationClient;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ocpp-css serve` on port 0 with JSON logs and reads the bound port from its "listening" line.
fn start(data: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ocpp-css"))
        .arg("serve")
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
    let api = |port: u16, path: &str| format!("http://127.0.0.1:{port}/api/v1{path}");

    let account = json!({"email": "ops@acme.example", "password": "s3cret-pass", "name": "Acme", "slug": "acme"});
    assert_eq!(http.post(api(server.port, "/accounts")).json(&account).send().await.unwrap().status(), 201);
    let login = json!({"email": "ops@acme.example", "password": "s3cret-pass"});
    let token: Value =
        http.post(api(server.port, "/sessions")).json(&login).send().await.unwrap().json().await.unwrap();
    let token = token["token"].as_str().unwrap().to_string();
    let created: Value = http
        .post(api(server.port, "/stations"))
        .bearer_auth(&token)
        .json(&json!({"id": "CP001"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let password = created["password"].as_str().unwrap().to_string();
    http.put(api(server.port, "/id-tags/RFID-1"))
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
    let (status, fresh): (u16, Value) = {
        let r = http.post(api(server.port, "/sessions")).json(&login).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    };
    assert_eq!(status, 200, "the account survived");
    let old_token_works = http.get(api(server.port, "/account")).bearer_auth(&token).send().await.unwrap().status();
    assert_eq!(old_token_works, 200, "a token issued before the kill still works");
    let token = fresh["token"].as_str().unwrap();

    let tx: Value = http
        .get(api(server.port, &format!("/transactions/{done}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((tx["status"].as_str(), tx["energy_wh"].as_i64()), (Some("completed"), Some(1000)), "{tx}");
    let tx: Value = http
        .get(api(server.port, &format!("/transactions/{open}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tx["status"], "active");
    assert_eq!(tx["meter_values"][0]["sampled_value"][0]["value"], "75");
    let st: Value =
        http.get(api(server.port, "/stations/CP001")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
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
