//! One station's OCPP-J connection: connect with subprotocol and Basic auth, make calls, answer the
//! central system's calls, close.

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SUBPROTOCOL: &str = "ocpp1.6";

use crate::v201::Protocol;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Small buffers: a bench holds many connections whose messages are a few hundred bytes.
/// (tungstenite 0.24 reads in fixed 4 KiB chunks; its read buffer size is not configurable.)
fn ws_config() -> WebSocketConfig {
    WebSocketConfig {
        write_buffer_size: 0, // write each message out at once
        // Room for one message of the largest size (1 MiB) and its frame header while the socket is
        // backed up; nothing is allocated up front.
        max_write_buffer_size: (1 << 20) + 64,
        max_message_size: Some(1 << 20),
        max_frame_size: Some(1 << 20),
        ..WebSocketConfig::default()
    }
}

/// Where and as whom a station connects.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    pub id: String,
    pub password: Option<String>,
    pub source_ip: Option<IpAddr>,
}

/// How a call ended.
#[derive(Debug)]
pub enum Outcome {
    /// The CALLRESULT payload.
    Result(Value),
    CallError {
        code: String,
        description: String,
    },
    Timeout,
    /// The connection is gone; the station must reconnect.
    Closed(String),
}

/// The kind of a BootNotification's failure (`boot_pending`, `boot_rejected`, `boot_callerror`,
/// `boot_timeout`, `boot_closed`); `None` when it was Accepted.
pub fn boot_failure(out: &Outcome) -> Option<&'static str> {
    match out {
        Outcome::Result(v) if v["status"] == "Accepted" => None,
        Outcome::Result(v) if v["status"] == "Pending" => Some("boot_pending"),
        Outcome::Result(_) => Some("boot_rejected"),
        Outcome::CallError { .. } => Some("boot_callerror"),
        Outcome::Timeout => Some("boot_timeout"),
        Outcome::Closed(_) => Some("boot_closed"),
    }
}

/// An open OCPP-J connection.
pub struct Conn {
    ws: Ws,
    next_id: u64,
    /// The version agreed on: how the central system's calls are answered.
    protocol: Protocol,
    /// How the connection ended, once it did: see [`end_kind`].
    end: Option<String>,
    /// How long the steps of its connect took.
    pub timing: Timing,
}

/// The steps of one connect: TCP connect, TLS handshake (`wss://` only), WebSocket upgrade.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timing {
    pub tcp: Duration,
    pub tls: Option<Duration>,
    /// The TLS handshake resumed an earlier session (`--tls-resumption on`, a reconnect).
    pub tls_resumed: bool,
    pub ws: Duration,
}

/// Why a connection attempt failed; [`ConnectError::kind`] is the label it is counted under.
#[derive(Debug)]
pub enum ConnectError {
    /// The URL cannot be used (no host, bad syntax, bad credentials header).
    BadUrl(String),
    /// Name resolution failed, or gave no address of the source address' family.
    Resolve(String),
    /// The local socket could not be created or bound to the source address.
    Bind(String),
    /// The kernel had no free local port (EADDRNOTAVAIL): too many connections per source address.
    NoPort(String),
    /// The server actively refused the TCP connection (RST to the SYN).
    Refused,
    /// Another TCP-level failure (reset, unreachable, …).
    Tcp(String),
    /// The TLS handshake failed: `tls_cert` (the server's certificate is not trusted or not for this
    /// host), `tls_alert` (the server refused, e.g. our client certificate), `tls_setup` (our own
    /// certificates or flags), `tls` (anything else).
    Tls(&'static str, String),
    /// The server answered the WebSocket upgrade with this HTTP status instead of 101.
    Http(u16),
    /// The WebSocket handshake failed otherwise (connection closed, malformed answer).
    Handshake(String),
    /// The upgrade succeeded but the server did not select the subprotocol offered (the first).
    Subprotocol(&'static str, Option<String>),
    /// Connect and handshake did not finish in time.
    Timeout,
}

impl ConnectError {
    /// A short stable label: `refused`, `http_401`, `timeout`, `no_port`, …
    pub fn kind(&self) -> String {
        match self {
            ConnectError::BadUrl(_) => "bad_url".into(),
            ConnectError::Resolve(_) => "resolve".into(),
            ConnectError::Bind(_) => "bind".into(),
            ConnectError::NoPort(_) => "no_port".into(),
            ConnectError::Refused => "refused".into(),
            ConnectError::Tcp(_) => "tcp_error".into(),
            ConnectError::Tls(kind, _) => (*kind).into(),
            ConnectError::Http(code) => format!("http_{code}"),
            ConnectError::Handshake(_) => "handshake".into(),
            ConnectError::Subprotocol(..) => "subprotocol".into(),
            ConnectError::Timeout => "timeout".into(),
        }
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::BadUrl(e) => write!(f, "bad URL: {e}"),
            ConnectError::Resolve(e) => write!(f, "cannot resolve: {e}"),
            ConnectError::Bind(e) => write!(f, "local socket: {e}"),
            ConnectError::NoPort(e) => write!(f, "no free local port (add --source-ips): {e}"),
            ConnectError::Refused => write!(f, "TCP connection refused"),
            ConnectError::Tcp(e) => write!(f, "TCP connect: {e}"),
            ConnectError::Tls(kind, e) => write!(f, "TLS handshake ({kind}): {e}"),
            ConnectError::Http(code) => write!(f, "WebSocket upgrade answered HTTP {code}"),
            ConnectError::Handshake(e) => write!(f, "WebSocket handshake: {e}"),
            ConnectError::Subprotocol(offered, agreed) => {
                write!(f, "server did not agree on subprotocol {offered} (answered {agreed:?})")
            }
            ConnectError::Timeout => write!(f, "connect timed out"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// The failure of a TCP connect, by its OS error.
fn tcp_error(e: std::io::Error) -> ConnectError {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => ConnectError::Refused,
        std::io::ErrorKind::AddrNotAvailable => ConnectError::NoPort(e.to_string()),
        _ => ConnectError::Tcp(e.to_string()),
    }
}

/// The failure of a TLS handshake, by the rustls error inside.
fn tls_error(e: std::io::Error) -> ConnectError {
    let kind = match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(_)) => "tls_cert",
        Some(rustls::Error::AlertReceived(_)) => "tls_alert",
        Some(_) => "tls",
        None => match e.kind() {
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof => "tls_reset",
            _ => "tls",
        },
    };
    ConnectError::Tls(kind, e.to_string())
}

/// Lets the kernel pick the local port at connect time rather than at bind time
/// (`IP_BIND_ADDRESS_NO_PORT`): it then knows the destination, so a port in TIME_WAIT towards it can
/// be reused (`net.ipv4.tcp_tw_reuse`), which a bind-time choice cannot do. Best effort.
#[cfg(target_os = "linux")]
pub fn bind_address_no_port(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, a pointer to a live c_int and its size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(not(target_os = "linux"))]
pub fn bind_address_no_port(_socket: &TcpSocket) {}

/// Connects, offering `ocpp1.6` and HTTP Basic credentials; every step ends by `deadline`.
pub async fn connect(ep: &Endpoint, deadline: Instant) -> Result<Conn, ConnectError> {
    connect_as(ep, Protocol::V16, deadline).await
}

/// [`connect`] offering the subprotocol of `protocol` (`ocpp1.6` or `ocpp2.0.1`).
pub async fn connect_as(ep: &Endpoint, protocol: Protocol, deadline: Instant) -> Result<Conn, ConnectError> {
    let subprotocol = protocol.subprotocol();
    let bad_url = |e: String| ConnectError::BadUrl(format!("{}: {e}", ep.url));
    let mut request = ep.url.as_str().into_client_request().map_err(|e| bad_url(e.to_string()))?;
    let headers = request.headers_mut();
    headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_static(subprotocol));
    if let Some(password) = &ep.password {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", ep.id));
        let value = HeaderValue::from_str(&format!("Basic {basic}")).map_err(|e| bad_url(e.to_string()))?;
        headers.insert("Authorization", value);
    }
    let uri = request.uri();
    let host =
        uri.host().ok_or_else(|| bad_url("no host".into()))?.trim_start_matches('[').trim_end_matches(']').to_string();
    let wss = uri.scheme_str() == Some("wss");
    let port = uri.port_u16().unwrap_or(if wss { 443 } else { 80 });
    let tls = if wss {
        let config =
            crate::tls::client().and_then(|t| t.for_station(&ep.id)).map_err(|e| ConnectError::Tls("tls_setup", e))?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| bad_url(format!("TLS server name {host:?}: {e}")))?;
        Some((tokio_rustls::TlsConnector::from(config), name))
    } else {
        None
    };

    let work = async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| ConnectError::Resolve(format!("{host}: {e}")))?
            .collect();
        let addr = addrs
            .iter()
            .copied()
            .find(|a| ep.source_ip.is_none_or(|s| s.is_ipv4() == a.is_ipv4()))
            .ok_or_else(|| ConnectError::Resolve(format!("{host} has no address of the source address' family")))?;
        let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
            .map_err(|e| ConnectError::Bind(e.to_string()))?;
        if let Some(ip) = ep.source_ip {
            if ip.is_ipv4() {
                bind_address_no_port(&socket);
            }
            // EADDRINUSE from bind(ip, 0) means no free port; EADDRNOTAVAIL, an address not on this host.
            socket.bind(SocketAddr::new(ip, 0)).map_err(|e| match e.kind() {
                std::io::ErrorKind::AddrInUse => ConnectError::NoPort(format!("source address {ip}: {e}")),
                _ => ConnectError::Bind(format!("source address {ip}: {e}")),
            })?;
        }
        let t0 = Instant::now();
        let stream = socket.connect(addr).await.map_err(tcp_error)?;
        let _ = stream.set_nodelay(true);
        let t1 = Instant::now();
        let mut timing = Timing { tcp: t1 - t0, ..Timing::default() };
        let stream = match tls {
            Some((connector, name)) => {
                let s = connector.connect(name, stream).await.map_err(tls_error)?;
                timing.tls = Some(t1.elapsed());
                timing.tls_resumed = matches!(s.get_ref().1.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
                MaybeTlsStream::Rustls(s)
            }
            None => MaybeTlsStream::Plain(stream),
        };
        let t2 = Instant::now();
        let (ws, response) = tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
            .await
            .map_err(|e| match e {
                WsError::Http(r) => ConnectError::Http(r.status().as_u16()),
                other => ConnectError::Handshake(other.to_string()),
            })?;
        let agreed = response.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok()).map(str::trim);
        if agreed != Some(subprotocol) {
            return Err(ConnectError::Subprotocol(subprotocol, agreed.map(str::to_string)));
        }
        timing.ws = t2.elapsed();
        Ok(Conn { ws, next_id: 0, protocol, end: None, timing })
    };
    timeout_at(deadline, work).await.map_err(|_| ConnectError::Timeout)?
}

/// A short stable label for how a WebSocket ended: `close_1009` (a close frame with that code),
/// `close_no_code`, `eof` (TCP closed without a close frame), `reset`, `io_error`, `protocol_error`.
pub fn end_kind(close: Option<Option<u16>>, error: Option<&WsError>) -> String {
    if let Some(code) = close {
        return match code {
            Some(c) => format!("close_{c}"),
            None => "close_no_code".into(),
        };
    }
    match error {
        None | Some(WsError::ConnectionClosed | WsError::AlreadyClosed) => "eof".into(),
        Some(WsError::Protocol(tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake)) => {
            "eof".into()
        }
        Some(WsError::Io(e)) => match e.kind() {
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionAborted => "reset".into(),
            std::io::ErrorKind::UnexpectedEof => "eof".into(),
            _ => "io_error".into(),
        },
        Some(WsError::Capacity(_)) => "too_big".into(),
        Some(_) => "protocol_error".into(),
    }
}

/// The close frame a station sends when it ends its connection: status 1000 (Normal), no reason.
/// (`close(None)` would send a close frame without a status, which the server sees as 1005.)
fn normal_close() -> CloseFrame<'static> {
    CloseFrame { code: CloseCode::Normal, reason: "".into() }
}

fn close_code(frame: &Option<tokio_tungstenite::tungstenite::protocol::CloseFrame<'_>>) -> Option<Option<u16>> {
    Some(frame.as_ref().map(|f| u16::from(f.code)))
}

/// What a received frame means to a station waiting for the answer to `waiting_for`.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// The CALLRESULT of the awaited call.
    Result(Value),
    /// The CALLERROR of the awaited call.
    Error { code: String, description: String },
    /// A call of the central system, with its answer.
    ServerCall(String),
    /// Anything else: a late answer to an earlier (timed-out) call, an unknown message type.
    Ignored,
}

/// Classifies an OCPP-J text frame (a 1.6 station's view).
#[cfg(test)]
pub fn classify(text: &str, waiting_for: Option<&str>) -> Incoming {
    classify_as(text, waiting_for, Protocol::V16)
}

/// Classifies an OCPP-J text frame; a call of the central system gets the answer a station of
/// `protocol` gives it ([`crate::v201::answer`]).
pub fn classify_as(text: &str, waiting_for: Option<&str>, protocol: Protocol) -> Incoming {
    let Ok(Value::Array(frame)) = serde_json::from_str::<Value>(text) else {
        return Incoming::Ignored;
    };
    let id = frame.get(1).and_then(Value::as_str);
    match frame.first().and_then(Value::as_i64) {
        Some(2) if id.is_some() => {
            let action = frame.get(2).and_then(Value::as_str).unwrap_or("");
            let answer = crate::commands::answer(protocol, action, frame.get(3).unwrap_or(&Value::Null));
            Incoming::ServerCall(json!([3, id, answer]).to_string())
        }
        Some(3) if id.is_some() && id == waiting_for => Incoming::Result(frame.get(2).cloned().unwrap_or(Value::Null)),
        Some(4) if id.is_some() && id == waiting_for => Incoming::Error {
            code: frame.get(2).and_then(Value::as_str).unwrap_or("?").to_string(),
            description: frame.get(3).and_then(Value::as_str).unwrap_or("").to_string(),
        },
        _ => Incoming::Ignored,
    }
}

impl Conn {
    /// Sends one CALL and waits, answering the central system's own calls meanwhile, for its answer.
    pub async fn call(&mut self, action: &str, payload: &Value, deadline: Instant) -> Outcome {
        self.call_json(action, &payload.to_string(), deadline).await
    }

    /// [`Conn::call`] with the payload already serialized (`payload_json` must be a JSON object).
    pub async fn call_json(&mut self, action: &str, payload_json: &str, deadline: Instant) -> Outcome {
        self.next_id += 1;
        let id = self.next_id.to_string();
        let frame = format!("[2,{},{},{payload_json}]", Value::from(id.as_str()), Value::from(action));
        match timeout_at(deadline, self.ws.send(Message::Text(frame))).await {
            Err(_) => return Outcome::Timeout,
            Ok(Err(e)) => {
                self.end = Some(end_kind(None, Some(&e)));
                return Outcome::Closed(format!("send failed: {e}"));
            }
            Ok(Ok(())) => {}
        }
        loop {
            let msg = match timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Outcome::Timeout,
                Ok(None) => {
                    self.end = Some(end_kind(None, None));
                    return Outcome::Closed("connection closed".into());
                }
                Ok(Some(Err(e))) => {
                    self.end = Some(end_kind(None, Some(&e)));
                    return Outcome::Closed(e.to_string());
                }
                Ok(Some(Ok(m))) => m,
            };
            let text = match msg {
                Message::Text(t) => t,
                Message::Close(f) => {
                    self.end = Some(end_kind(close_code(&f), None));
                    return Outcome::Closed(format!("closed by server: {f:?}"));
                }
                _ => continue,
            };
            match classify_as(&text, Some(&id), self.protocol) {
                Incoming::Result(v) => return Outcome::Result(v),
                Incoming::Error { code, description } => return Outcome::CallError { code, description },
                Incoming::ServerCall(answer) => match timeout_at(deadline, async {
                    crate::commands::answer_delay().await;
                    self.ws.send(Message::Text(answer)).await
                })
                .await
                {
                    Err(_) => return Outcome::Timeout,
                    Ok(Err(e)) => return Outcome::Closed(format!("send failed: {e}")),
                    Ok(Ok(())) => {}
                },
                Incoming::Ignored => {}
            }
        }
    }

    /// Waits for `until` while answering the central system's calls; `Err` if the connection ends.
    pub async fn serve_until<F: Future>(&mut self, until: F) -> Result<F::Output, String> {
        tokio::pin!(until);
        loop {
            tokio::select! {
                out = &mut until => return Ok(out),
                msg = self.ws.next() => match msg {
                    None => {
                        self.end = Some(end_kind(None, None));
                        return Err("connection closed".into());
                    }
                    Some(Err(e)) => {
                        self.end = Some(end_kind(None, Some(&e)));
                        return Err(e.to_string());
                    }
                    Some(Ok(Message::Close(f))) => {
                        self.end = Some(end_kind(close_code(&f), None));
                        return Err(format!("closed by server: {f:?}"));
                    }
                    Some(Ok(Message::Text(text))) => {
                        if let Incoming::ServerCall(answer) = classify_as(&text, None, self.protocol) {
                            crate::commands::answer_delay().await;
                            self.ws.send(Message::Text(answer)).await.map_err(|e| e.to_string())?;
                        }
                    }
                    Some(Ok(_)) => {}
                }
            }
        }
    }

    /// How the connection ended (`close_1009`, `eof`, `reset`, …), once a call or a wait saw it end.
    pub fn end_kind(&self) -> Option<&str> {
        self.end.as_deref()
    }

    /// An OCPP-J connection over a stream whose WebSocket upgrade was done elsewhere (by hand);
    /// `read_ahead` holds the bytes read past the upgrade answer.
    pub async fn from_upgraded(stream: TcpStream, read_ahead: Vec<u8>) -> Conn {
        let ws = WebSocketStream::from_partially_read(
            MaybeTlsStream::Plain(stream),
            read_ahead,
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            Some(ws_config()),
        )
        .await;
        Conn { ws, next_id: 0, protocol: Protocol::V16, end: None, timing: Timing::default() }
    }

    /// Closes with a close frame of status 1000 (Normal) and waits (at most `wait`) for the server's close; true if
    /// the closing handshake completed in time.
    pub async fn close(mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, async {
            if self.ws.close(Some(normal_close())).await.is_err() {
                return false;
            }
            loop {
                match self.ws.next().await {
                    Some(Ok(_)) => {}
                    // tungstenite ends the stream once the server's close frame came back.
                    None | Some(Err(WsError::ConnectionClosed)) => return true,
                    Some(Err(_)) => return false,
                }
            }
        })
        .await
        .unwrap_or(false)
    }

    /// Sends a close frame of status 1000 (waiting at most `wait` to get it out) and drops the connection at once,
    /// without waiting for the server's answer.
    pub async fn hang_up(mut self, wait: Duration) {
        let _ = tokio::time::timeout(wait, self.ws.close(Some(normal_close()))).await;
    }

    /// Drops the connection without a WebSocket close, as a network failure would: with `reset`,
    /// an abortive close (RST, no TIME_WAIT left behind), otherwise an orderly TCP FIN.
    pub fn abandon(self, reset: bool) {
        if reset {
            let tcp = match self.ws.get_ref() {
                MaybeTlsStream::Plain(s) => Some(s),
                MaybeTlsStream::Rustls(s) => Some(s.get_ref().0),
                _ => None,
            };
            if let Some(tcp) = tcp {
                let _ = tcp.set_zero_linger();
            }
        }
        drop(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_answers_by_id() {
        assert_eq!(
            classify(r#"[3,"7",{"currentTime":"x"}]"#, Some("7")),
            Incoming::Result(json!({"currentTime": "x"}))
        );
        assert_eq!(classify(r#"[3,"6",{}]"#, Some("7")), Incoming::Ignored);
        assert_eq!(
            classify(r#"[4,"7","FormationViolation","bad",{}]"#, Some("7")),
            Incoming::Error { code: "FormationViolation".into(), description: "bad".into() }
        );
        assert_eq!(classify(r#"[4,"7","X","",{}]"#, None), Incoming::Ignored);
        assert_eq!(classify("not json", Some("7")), Incoming::Ignored);
        assert_eq!(classify(r#"{"a":1}"#, Some("7")), Incoming::Ignored);
    }

    #[test]
    fn server_calls_are_accepted() {
        let Incoming::ServerCall(answer) = classify(r#"[2,"srv-1","Reset",{"type":"Soft"}]"#, Some("7")) else {
            panic!("not a server call");
        };
        let v: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(v, json!([3, "srv-1", {"status": "Accepted"}]));
        let get = r#"[2,"g",{"x":1},{}]"#; // an action that is not a string: still answered
        assert!(matches!(classify_as(get, None, Protocol::V201), Incoming::ServerCall(_)));
        let get = r#"[2,"g","GetVariables",{"getVariableData":[{"component":{"name":"C"},"variable":{"name":"V"}}]}]"#;
        let Incoming::ServerCall(answer) = classify_as(get, None, Protocol::V201) else { panic!("not a call") };
        let v: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(v[2]["getVariableResult"][0]["attributeStatus"], "Accepted");
    }

    #[test]
    fn ends_are_labelled() {
        use std::io::{Error, ErrorKind};
        use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
        assert_eq!(end_kind(Some(Some(1009)), None), "close_1009");
        // A close frame wins over the error that followed it.
        assert_eq!(end_kind(Some(None), Some(&WsError::ConnectionClosed)), "close_no_code");
        assert_eq!(end_kind(None, None), "eof");
        assert_eq!(end_kind(None, Some(&WsError::Io(Error::from(ErrorKind::ConnectionReset)))), "reset");
        assert_eq!(end_kind(None, Some(&WsError::Io(Error::from(ErrorKind::BrokenPipe)))), "reset");
        assert_eq!(end_kind(None, Some(&WsError::Io(Error::from(ErrorKind::PermissionDenied)))), "io_error");
        let reset = WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake);
        assert_eq!(end_kind(None, Some(&reset)), "eof");
        let big = WsError::Capacity(CapacityError::MessageTooLong { size: 2, max_size: 1 });
        assert_eq!(end_kind(None, Some(&big)), "too_big");
        assert_eq!(end_kind(None, Some(&WsError::Utf8)), "protocol_error");
    }

    /// A local WebSocket server that agrees on `ocpp1.6`, answers one BootNotification, and reports
    /// the close frame the station sent (its code; `None`: a close frame without one).
    #[allow(clippy::result_large_err)] // the handshake callback's error type is tungstenite's
    async fn close_server() -> (String, tokio::task::JoinHandle<Option<Option<u16>>>) {
        use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ocpp/t/{{id}}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let agree = |_: &Request, mut r: Response| {
                r.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(SUBPROTOCOL));
                Ok(r)
            };
            let mut ws = tokio_tungstenite::accept_hdr_async(tcp, agree).await.unwrap();
            while let Some(msg) = ws.next().await {
                match msg.unwrap() {
                    Message::Text(t) => {
                        let v: Value = serde_json::from_str(&t).unwrap();
                        let answer = json!([3, v[1], {"status": "Accepted", "interval": 60, "currentTime": "x"}]);
                        ws.send(Message::Text(answer.to_string())).await.unwrap();
                    }
                    Message::Close(f) => {
                        let code = f.as_ref().map(|f| u16::from(f.code));
                        // tungstenite answers the close itself as the stream goes on.
                        let _ = ws.next().await;
                        return Some(code);
                    }
                    _ => {}
                }
            }
            None
        });
        (url, task)
    }

    fn endpoint(template: &str) -> Endpoint {
        Endpoint {
            url: template.replace("{id}", "CP1"),
            id: "CP1".into(),
            password: Some("pw".into()),
            source_ip: None,
        }
    }

    #[tokio::test]
    async fn close_sends_status_1000() {
        let (url, server) = close_server().await;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut c = connect(&endpoint(&url), deadline).await.unwrap();
        assert!(matches!(c.call("BootNotification", &json!({}), deadline).await, Outcome::Result(_)));
        assert!(c.close(Duration::from_secs(5)).await, "closing handshake completed");
        assert_eq!(server.await.unwrap(), Some(Some(1000)), "the server saw close code 1000 (Normal)");
    }

    #[tokio::test]
    async fn hang_up_sends_status_1000_too() {
        let (url, server) = close_server().await;
        let c = connect(&endpoint(&url), Instant::now() + Duration::from_secs(5)).await.unwrap();
        c.hang_up(Duration::from_secs(5)).await;
        assert_eq!(server.await.unwrap(), Some(Some(1000)));
    }

    #[test]
    fn config_is_valid_and_small() {
        let c = ws_config();
        assert!(c.max_write_buffer_size > c.write_buffer_size);
        assert_eq!(c.write_buffer_size, 0);
    }
}
