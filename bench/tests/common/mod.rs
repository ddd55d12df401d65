//! What the end-to-end tests share: the real server (ocpp-css) in-process on port 0 with a
//! temporary data directory, and the harness's binary run as a child process.
// Each test binary uses its own part of this.
#![allow(dead_code)]

use ocpp_css::config::Settings;
use ocpp_css::startup::Application;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The server, running until the test process ends.
pub struct Server {
    pub port: u16,
    /// The TLS listener's port, when the tweak enabled it.
    pub tls_port: Option<u16>,
    _data: tempfile::TempDir,
}

/// Starts the server with the test settings.
pub fn start_server() -> Server {
    start_server_with(|_| {})
}

/// Starts the server in a thread of its own (it runs its own actix system) with the test settings
/// changed by `tweak`, and waits until it is bound.
pub fn start_server_with(tweak: impl FnOnce(&mut Settings)) -> Server {
    let data = tempfile::tempdir().expect("temp dir");
    let mut s = Settings::load(None).expect("default config loads");
    s.server.port = 0;
    s.server.workers = 2;
    s.storage.data_dir = data.path().to_path_buf();
    s.ocpp.command_timeout_secs = 5;
    s.log.level = "warn".into();
    s.limits.refusal_delay_ms = 0;
    tweak(&mut s);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let system = actix_rt::System::new();
        system.block_on(async move {
            let app = Application::build(s).await.expect("application builds");
            let _ = tx.send((app.port(), app.tls_port()));
            let _ = app.run_until_stopped().await;
        });
    });
    let (port, tls_port) = rx.recv_timeout(Duration::from_secs(60)).expect("server started");
    Server { port, tls_port, _data: data }
}

/// The harness's process; killed if the test ends (fails) before it did.
pub struct Bench(Option<std::process::Child>);

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn bench(args: &[String]) -> Bench {
    let child = Command::new(env!("CARGO_BIN_EXE_ocpp-bench"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ocpp-bench starts");
    Bench(Some(child))
}

/// Waits for the harness (at most `limit`), killing it if it overran; its exit success and output.
pub async fn finish(mut bench: Bench, limit: Duration) -> (bool, String, String) {
    let child = bench.0.take().expect("not finished yet");
    let id = child.id();
    let waiter = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(limit, waiter).await {
        Ok(Ok(Ok(out))) => (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        _ => {
            let _ = Command::new("kill").arg(id.to_string()).status();
            panic!("ocpp-bench {id} did not finish within {limit:?}");
        }
    }
}

/// A bearer token of the account the harness provisioned.
pub async fn token(http: &reqwest::Client, api: &str, email: &str) -> String {
    let r = http
        .post(format!("{api}/sessions"))
        .json(&json!({"email": email, "password": "bench-account-password"}))
        .send()
        .await
        .expect("sign-in sent");
    let v: Value = r.json().await.expect("sign-in answer");
    v["token"].as_str().expect("a token").to_string()
}

/// Runs the harness to its end (killed after `limit`); its exit success, stdout and stderr.
pub async fn run_bench(args: Vec<String>, limit: Duration) -> (bool, String, String) {
    finish(bench(&args), limit).await
}

/// The `--json` summary the harness wrote.
pub fn summary(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("JSON summary written")).expect("JSON summary parses")
}
