//! Test harness: the application on port 0 with a temporary data dir, an API client, and a real
//! OCPP-J WebSocket client.

use futures_util::{SinkExt, StreamExt};
use ocpp_css::config::Settings;
use ocpp_css::startup::Application;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct TestApp {
    pub port: u16,
    /// The TLS listener's port, when the settings enabled it.
    pub tls_port: Option<u16>,
    pub http: reqwest::Client,
    pub _data: tempfile::TempDir,
}

/// Settings for tests: port 0, a fresh data dir, short command timeout.
pub fn test_settings(data: &std::path::Path) -> Settings {
    let mut s = Settings::load(None).expect("default config loads");
    s.server.port = 0;
    s.server.workers = 2;
    s.storage.data_dir = data.to_path_buf();
    s.ocpp.command_timeout_secs = 2;
    s.log.level = "warn".into();
    // The tests read new-location codes here, standing in for the holder's mailbox.
    s.api.expose_login_codes = true;
    // Refusals are answered at once (limits.rs tests the delay itself).
    s.limits.refusal_delay_ms = 0;
    s
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the application in its own thread (it runs its own actix system) and waits until it is bound.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings) + Send + 'static) -> TestApp {
    let data = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(data.path());
    tweak(&mut settings);
    ocpp_css::telemetry::init(&settings.log);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let system = actix_rt::System::new();
        system.block_on(async move {
            let app = Application::build(settings).await.expect("application builds");
            let _ = tx.send((app.port(), app.tls_port()));
            let _ = app.run_until_stopped().await;
        });
    });
    let (port, tls_port) = rx.await.expect("application started");
    TestApp { port, tls_port, http: reqwest::Client::new(), _data: data }
}

/// An HTTP client whose requests come from `ip` (any 127.x.y.z is this machine on Linux), to sign in
/// from another network than 127.0.0.0/24.
pub fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(Some(ip.parse().expect("an IP address"))).build().expect("client")
}

/// The password [`TestApp::tenant`] signs up with.
pub const PASSWORD: &str = "s3cret-pass";

/// A signed-up tenant with a bearer token.
pub struct Tenant {
    pub token: String,
    pub slug: String,
    pub email: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn api(&self, path: &str) -> String {
        self.url(&format!("/api/v1{path}"))
    }

    /// Sends a request and returns its status and JSON body (Null when there is none).
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.request_with(&self.http, method, path, token, body).await
    }

    /// [`TestApp::request`] through a given client (e.g. one from [`client_from`]).
    pub async fn request_with(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = client.request(method, self.api(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let text = res.text().await.expect("body read");
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, body)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.request(reqwest::Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.request(reqwest::Method::POST, path, Some(token), Some(body)).await
    }

    /// Signs in from the default client: the session answer, or the status and error.
    pub async fn login(&self, email: &str, password: &str) -> (StatusCode, Value) {
        self.request(reqwest::Method::POST, "/sessions", None, Some(json!({"email": email, "password": password})))
            .await
    }

    /// Creates an account with this slug and signs in.
    pub async fn tenant(&self, slug: &str) -> Tenant {
        let email = format!("ops@{slug}.example");
        let (status, body) = self
            .request(
                reqwest::Method::POST,
                "/accounts",
                None,
                Some(json!({"email": email, "password": "s3cret-pass", "name": slug, "slug": slug})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = self
            .request(reqwest::Method::POST, "/sessions", None, Some(json!({"email": email, "password": "s3cret-pass"})))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        Tenant { token: body["token"].as_str().expect("token").to_string(), slug: slug.to_string(), email }
    }

    /// Provisions a station and returns its password.
    pub async fn station(&self, tenant: &Tenant, id: &str) -> String {
        let (status, body) = self.post("/stations", &tenant.token, json!({"id": id})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["password"].as_str().expect("password").to_string()
    }

    /// Provisions a station and connects it.
    pub async fn connected_station(&self, tenant: &Tenant, id: &str) -> StationClient {
        let password = self.station(tenant, id).await;
        StationClient::connect(self.port, &tenant.slug, id, &password).await.expect("station connects")
    }

    pub async fn metrics(&self) -> String {
        self.http.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }
}

/// A charge point speaking OCPP-J 1.6 over a real WebSocket.
pub struct StationClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The subprotocol the server chose.
    pub protocol: Option<String>,
    next_id: u64,
}

/// The HTTP status of a refused WebSocket handshake, or the error text.
pub async fn try_connect(
    port: u16,
    tenant: &str,
    id: &str,
    auth: Option<(&str, &str)>,
    protocols: Option<&str>,
) -> Result<StationClient, String> {
    try_connect_url(&format!("ws://127.0.0.1:{port}/ocpp/{tenant}/{id}"), auth, protocols, None).await
}

/// Like [`try_connect`], to any URL (ws:// or wss://), with a TLS client configuration for wss://.
pub async fn try_connect_url(
    url: &str,
    auth: Option<(&str, &str)>,
    protocols: Option<&str>,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<StationClient, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    if let Some(p) = protocols {
        request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
    }
    if let Some((user, pass)) = auth {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        request.headers_mut().insert("Authorization", HeaderValue::from_str(&format!("Basic {token}")).unwrap());
    }
    let connector = tls.map(tokio_tungstenite::Connector::Rustls);
    match tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector).await {
        Ok((ws, response)) => {
            let chosen =
                response.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok()).map(String::from);
            if let Some(offered) = protocols {
                let chosen = chosen.as_deref().expect("server must confirm a subprotocol");
                assert!(offered.split(',').any(|p| p.trim() == chosen), "server chose {chosen}, not offered");
            }
            Ok(StationClient { ws, protocol: chosen, next_id: 1 })
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(format!("HTTP {}", response.status().as_u16()))
        }
        Err(e) => Err(e.to_string()),
    }
}

impl StationClient {
    pub async fn connect(port: u16, tenant: &str, id: &str, password: &str) -> Result<StationClient, String> {
        try_connect(port, tenant, id, Some((id, password)), Some("ocpp1.6")).await
    }

    /// Connects speaking OCPP 2.0.1.
    pub async fn connect_201(port: u16, tenant: &str, id: &str, password: &str) -> Result<StationClient, String> {
        try_connect(port, tenant, id, Some((id, password)), Some("ocpp2.0.1")).await
    }

    /// BootNotification in 2.0.1 form.
    pub async fn boot_201(&mut self) -> Value {
        self.ok(
            "BootNotification",
            json!({"chargingStation": {"model": "Test-2", "vendorName": "ACME", "serialNumber": "SN-1", "firmwareVersion": "2.0.1"}, "reason": "PowerUp"}),
        )
        .await
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.to_string())).await.expect("frame sent");
    }

    /// The next OCPP-J frame from the server (pings are answered on the way).
    pub async fn recv(&mut self) -> Value {
        match self.recv_message().await {
            Some(Message::Text(t)) => serde_json::from_str(&t).expect("server sends JSON"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next data or close message, None when the connection ended.
    pub async fn recv_message(&mut self) -> Option<Message> {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("server answered within 10 s");
            match next {
                Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => continue,
                Some(Ok(m)) => return Some(m),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Sends a CALL and returns the server's answer frame (CALLRESULT or CALLERROR).
    pub async fn call(&mut self, action: &str, payload: Value) -> Value {
        let id = format!("m{}", self.next_id);
        self.next_id += 1;
        self.send_text(&json!([2, id, action, payload]).to_string()).await;
        let answer = self.recv().await;
        assert_eq!(answer[1], json!(id), "answer correlates to the call: {answer}");
        answer
    }

    /// Sends a CALL that must succeed and returns the CALLRESULT payload.
    pub async fn ok(&mut self, action: &str, payload: Value) -> Value {
        let answer = self.call(action, payload).await;
        assert_eq!(answer[0], 3, "{action} answered with {answer}");
        answer[2].clone()
    }

    pub async fn boot(&mut self) -> Value {
        self.ok("BootNotification", json!({"chargePointVendor": "ACME", "chargePointModel": "Test-1"})).await
    }
}

/// The sum of every series of `name` (the name exactly: `_bucket` etc. are other names) whose labels
/// include all of `labels`; 0 when there is none. Series of other test apps in this process count too
/// (the recorder is process-wide), so tests compare values before and after their own activity.
pub fn series_value(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let has_all = labels.iter().all(|(k, v)| rest.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
            (metric == name && has_all).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// The server binary as an operator runs it, with only the settings a test gives: the developer's
/// own `OCPP_CSS__` variables, `RUST_LOG` and backtrace switches stay out.
pub fn server_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ocpp-css"));
    for (name, _) in std::env::vars().filter(|(name, _)| {
        name.starts_with("OCPP_CSS") || ["RUST_LOG", "RUST_BACKTRACE", "RUST_LIB_BACKTRACE"].contains(&name.as_str())
    }) {
        cmd.env_remove(name);
    }
    cmd
}

/// `ocpp-css serve` in a process of its own on a free port with a data dir in `data`, its stdout read
/// up to the line that says it listens: (the process, those lines, its port). The caller kills it.
pub fn serve_process(data: &std::path::Path) -> (std::process::Child, Vec<String>, Option<u16>) {
    use std::io::{BufRead, BufReader};
    let mut server = server_command()
        .arg("serve")
        .env("OCPP_CSS__STORAGE__DATA_DIR", data)
        .env("OCPP_CSS__SERVER__PORT", "0")
        .stdout(std::process::Stdio::piped())
        // Once the lines are read the pipe closes; what the server writes after that is not wanted.
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the server starts");
    let stdout = server.stdout.take().expect("piped");
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let listening = line.contains("listening");
        lines.push(line);
        if listening {
            break;
        }
    }
    let port = lines.last().and_then(|l| l.rsplit("port=").next()).and_then(|p| p.trim().parse().ok());
    (server, lines, port)
}
