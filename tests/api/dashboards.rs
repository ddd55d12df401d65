//! A real Prometheus scrapes a running node (in cluster mode, on a real Redis) with a few stations, then every PromQL expression of the
//! Grafana dashboards is evaluated through Prometheus's HTTP API: each must succeed and return series.
//! The same Prometheus loads the alert rules (`grafana/alerts/`) and evaluates them on the node's
//! series without error; promtool checks them and runs their unit tests.

use crate::helpers::{spawn_app_with, try_connect, StationClient};
use crate::redis::RedisServer;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const RULES: &str = "ocpp-css.rules.yml";

fn alerts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/alerts")
}

fn promtool(args: &[&str]) -> std::process::Output {
    let binary = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("promtool is needed: scripts/test installs the Debian package `prometheus`, which has it");
    Command::new(binary).args(args).current_dir(alerts_dir()).output().expect("promtool runs")
}

#[test]
fn the_alert_rules_are_valid_and_pass_their_unit_tests() {
    for args in [["check", "rules", RULES], ["test", "rules", "ocpp-css.rules.test.yml"]] {
        let out = promtool(&args);
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_prometheus(target_port: u16) -> Prometheus {
    let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("the prometheus binary is needed: scripts/test installs the Debian package `prometheus`");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - '{}'\nscrape_configs:\n  - job_name: ocpp-css\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n",
            alerts_dir().join(RULES).display()
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    Prometheus { child, port, _dir: dir }
}

impl Prometheus {
    async fn query(&self, http: &reqwest::Client, expr: &str) -> Value {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        match http.get(url).query(&[("query", expr)]).send().await {
            Ok(res) => res.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }
}

/// Every `expr` in a dashboard (panel targets, also inside rows) and every query variable.
fn expressions(dashboard: &Value, out: &mut Vec<String>) {
    match dashboard {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) if !e.is_empty() => out.push(e.clone()),
                    ("templating", Value::Object(t)) => {
                        for var in t.get("list").and_then(Value::as_array).into_iter().flatten() {
                            let q = var
                                .get("query")
                                .and_then(|q| q.as_str().or_else(|| q.get("query").and_then(Value::as_str)));
                            if let Some(q) = q.filter(|_| var["type"] == "query") {
                                out.push(q.to_string());
                            }
                        }
                    }
                    _ => expressions(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| expressions(v, out)),
        _ => {}
    }
}

/// Grafana's own syntax, made plain PromQL: variables, and `label_values(m, l)` as the series it lists.
fn to_promql(expr: &str) -> String {
    let e = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "5m")
        .replace("$node", ".*");
    match e.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')) {
        Some(args) => args.split(',').next().unwrap_or("").trim().to_string(),
        None => e,
    }
}

fn dashboards() -> Vec<(PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("grafana/dashboards exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard is JSON");
            out.push((path, v));
        }
    }
    out
}

/// Activity that makes every metric the dashboards use exist; returns the stations left connected.
async fn exercise(app: &crate::helpers::TestApp) -> Vec<StationClient> {
    let t = app.tenant("fleet").await;
    let mut stations = Vec::new();
    for i in 0..3 {
        let mut cp = app.connected_station(&t, &format!("CP{i}")).await;
        cp.boot().await;
        cp.ok("StatusNotification", json!({"connectorId": 1, "errorCode": "NoError", "status": "Available"})).await;
        let tx = cp
            .ok(
                "StartTransaction",
                json!({"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": "2026-11-25T10:00:00Z"}),
            )
            .await["transactionId"]
            .clone();
        cp.ok("MeterValues", json!({"connectorId": 1, "transactionId": tx, "meterValue": [{"timestamp": "2026-11-25T10:01:00Z", "sampledValue": [{"value": "5"}]}]})).await;
        stations.push(cp);
    }
    // A CALLERROR, a Heartbeat sent twice under one id (answered afresh both times), an auth failure.
    stations[0].send_text("not json").await;
    stations[0].recv().await;
    for _ in 0..2 {
        stations[0].send_text(r#"[2, "dup-1", "Heartbeat", {}]"#).await;
        stations[0].recv().await;
    }
    assert!(try_connect(app.port, "fleet", "CP0", Some(("CP0", "wrong-password-123")), Some("ocpp1.6")).await.is_err());
    // A command round trip.
    let api = app.post("/stations/CP1/commands/ClearCache", &t.token, json!({}));
    let station = async {
        let call = stations[1].recv().await;
        stations[1].send_text(&json!([3, call[1], {"status": "Accepted"}]).to_string()).await;
    };
    tokio::join!(api, station);
    // A command queued for an offline station, and a disconnect.
    app.station(&t, "OFFLINE").await;
    app.post("/stations/OFFLINE/commands/ClearCache?queue=true", &t.token, json!({})).await;
    // A station connecting again: its older connection is replaced.
    let password = app.station(&t, "TWICE").await;
    let mut first = crate::helpers::StationClient::connect(app.port, "fleet", "TWICE", &password).await.unwrap();
    let _second = crate::helpers::StationClient::connect(app.port, "fleet", "TWICE", &password).await.unwrap();
    assert!(first.recv_message().await.is_none_or(|m| m.is_close()), "the older connection is closed");
    stations.pop();
    let (status, _) = app.get("/stations/NOPE", &t.token).await;
    assert_eq!(status, 404);
    stations
}

/// An event stream left open, and a webhook that has delivered: the event panels' series.
async fn exercise_events(app: &crate::helpers::TestApp) -> (crate::events::SseClient, crate::events::Receiver) {
    let t = app.tenant("listener").await;
    let mut stream = crate::events::SseClient::open(&app.url(""), &t.token, "", None).await;
    let receiver = crate::events::Receiver::start(vec![500]).await;
    crate::events::create_webhook(app, &t.token, &receiver.url, json!([])).await;
    let mut cp = app.connected_station(&t, "CP1").await;
    cp.boot().await;
    stream.next().await;
    receiver.wait_delivered(2).await;
    (stream, receiver)
}

#[tokio::test]
async fn every_dashboard_query_returns_series_from_a_real_prometheus() {
    let boards = dashboards();
    assert!(!boards.is_empty(), "no dashboards in grafana/dashboards");
    let mut exprs = Vec::new();
    for (_, board) in &boards {
        expressions(board, &mut exprs);
    }
    assert!(exprs.len() >= 10, "dashboards hold only {} queries", exprs.len());

    // A node in cluster mode: it has every series a single node has, and the cluster ones.
    let redis = RedisServer::start().await;
    let url = redis.url();
    let app = spawn_app_with(move |s| {
        s.cluster.redis_url = url;
        s.server.node_id = "dash-node".into();
        s.webhooks.allow_private_destinations = true;
        s.webhooks.retry_min_ms = 20;
    })
    .await;
    let _connected = exercise(&app).await;
    let _listening = exercise_events(&app).await;
    let prometheus = start_prometheus(app.port);
    let http = reqwest::Client::new();
    // Wait for the target to be scraped, then for enough samples for 1m rate windows.
    let started = Instant::now();
    loop {
        let up = prometheus.query(&http, "up{job=\"ocpp-css\"}").await;
        if up["data"]["result"][0]["value"][1] == "1" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "prometheus never scraped the node: {up}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;

    let mut failures = Vec::new();
    for expr in &exprs {
        let promql = to_promql(expr);
        let answer = prometheus.query(&http, &promql).await;
        if answer["status"] != "success" {
            failures.push(format!("{expr}\n    error: {}", answer["error"]));
        } else if answer["data"]["result"].as_array().is_none_or(Vec::is_empty) {
            failures.push(format!("{expr}\n    no series"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} dashboard queries failed:\n{}",
        failures.len(),
        exprs.len(),
        failures.join("\n")
    );

    // Every alert rule loaded and evaluated on the node's real series without an error.
    let url = format!("http://127.0.0.1:{}/api/v1/rules", prometheus.port);
    let started = Instant::now();
    loop {
        let rules: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        let all: Vec<&Value> = rules["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        let healthy = all.iter().filter(|r| r["health"] == "ok").count();
        if all.len() >= 9 && healthy == all.len() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "alert rules not all evaluated ok: {rules}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
