//! The HTTP sender: one signed POST per delivery attempt, with the destination rules of
//! [`super::ssrf`] applied both to the URL and to every address a host name resolves to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use reqwest::header::CONTENT_TYPE;

use super::sign::{sign, EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::ssrf::{check_url, GuardedResolver};

/// The user agent every delivery carries.
pub const USER_AGENT: &str = concat!("ocpp-css-webhooks/", env!("CARGO_PKG_VERSION"));

/// The longest wait for a TCP (and TLS) connection, when the overall timeout is longer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a response body is read before the response is dropped. Nothing in it is used: reading
/// a short body to its end only lets the connection be reused, and a receiver cannot make us hold more.
const MAX_RESPONSE_BYTES: usize = 4 * 1024;

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The response's HTTP status; `None` when no response came (refused URL, DNS, connection, TLS,
    /// timeout).
    pub status: Option<u16>,
    /// From the start of the attempt until the response's status and headers arrived, or until it failed.
    pub latency: Duration,
    /// Why no response came, with its chain of causes; `None` whenever there is a status, whatever it is.
    pub error: Option<String>,
}

impl Attempt {
    /// Whether the receiver took the event: a 2xx status. Anything else, a redirect included, is retried.
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Sends webhook deliveries. One per process is enough: it holds a connection pool.
///
/// TLS is rustls on the ring provider with the Mozilla roots of `webpki-roots`; redirects are never
/// followed (a 3xx is a failed attempt: following one would reach a URL nobody checked); no proxy is
/// used, so that connections go to the addresses the [`GuardedResolver`] allowed.
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    allow_private: bool,
}

impl Sender {
    /// A sender whose attempts take at most `timeout` from connecting to the end of the response, and
    /// which may reach private addresses only when `allow_private` (tests, single-network setups).
    pub fn new(timeout: Duration, allow_private: bool) -> anyhow::Result<Sender> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .context("the webhook TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver::new(allow_private)))
            .user_agent(USER_AGENT)
            .connect_timeout(timeout.min(CONNECT_TIMEOUT))
            .timeout(timeout)
            .build()
            .context("the webhook HTTP client")?;
        Ok(Sender { client, allow_private })
    }

    /// POSTs `body` (JSON) to `url`, signed with `secret`, as event `event_id`.
    ///
    /// The URL is checked again first: its host may be an IP literal, which the resolver never sees.
    /// The signature covers exactly the bytes sent, at the current unix time. Never fails: every
    /// problem is an [`Attempt`] with an `error`.
    pub async fn post(&self, url: &str, secret: &str, event_id: u64, body: Vec<u8>) -> Attempt {
        let started = Instant::now();
        let url = match check_url(url, self.allow_private) {
            Ok(url) => url,
            Err(e) => {
                tracing::debug!(event_id, error = %e, "webhook delivery refused before sending");
                return Attempt { status: None, latency: started.elapsed(), error: Some(e.to_string()) };
            }
        };
        let host = url.host_str().unwrap_or_default().to_owned();
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign(secret, timestamp, &body);
        let sent = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .header(EVENT_ID_HEADER, event_id.to_string())
            .body(body)
            .send()
            .await;
        match sent {
            Ok(mut response) => {
                let latency = started.elapsed();
                let status = response.status().as_u16();
                read_a_little(&mut response).await;
                tracing::debug!(
                    event_id,
                    host,
                    status,
                    latency_ms = latency.as_millis() as u64,
                    "webhook delivery attempt"
                );
                Attempt { status: Some(status), latency, error: None }
            }
            Err(e) => {
                let latency = started.elapsed();
                // The URL's query may hold the receiver's token: the caller knows the URL anyway.
                let error = error_chain(&e.without_url());
                tracing::debug!(
                    event_id,
                    host,
                    error,
                    latency_ms = latency.as_millis() as u64,
                    "webhook delivery attempt failed"
                );
                Attempt { status: None, latency, error: Some(error) }
            }
        }
    }
}

/// Reads at most [`MAX_RESPONSE_BYTES`] of the body, then lets the rest go with the connection.
async fn read_a_little(response: &mut reqwest::Response) {
    let mut read = 0;
    while read < MAX_RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            // The end, or a broken body: the status is all that counts either way.
            Ok(None) | Err(_) => return,
        }
    }
}

/// An error's message followed by each of its causes', skipping a cause its parent already repeats.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::sign::verify;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    const SECRET: &str = "whsec_client_test";

    /// One request as the test server read it.
    struct Received {
        /// The request line and headers, as sent.
        head: String,
        body: Vec<u8>,
    }

    impl Received {
        fn header(&self, name: &str) -> Option<&str> {
            self.head.lines().skip(1).find_map(|line| {
                let (k, v) = line.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
        }
    }

    /// What the test server answers.
    #[derive(Clone)]
    enum Reply {
        /// This exact response, then close.
        Canned(String),
        /// A 200 announcing a gigabyte, then zeros for as long as the client reads.
        Endless,
        /// Read the request and never answer.
        Silent,
    }

    /// A minimal HTTP/1.1 server on 127.0.0.1: the requests it read, and how many connections it accepted.
    struct TestServer {
        addr: SocketAddr,
        requests: mpsc::UnboundedReceiver<Received>,
        connections: Arc<AtomicUsize>,
    }

    async fn serve(reply: Reply) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a test port");
        let addr = listener.local_addr().expect("the test port");
        let (tx, requests) = mpsc::unbounded_channel();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(answer(stream, reply.clone(), tx.clone()));
            }
        });
        TestServer { addr, requests, connections }
    }

    async fn answer(mut stream: TcpStream, reply: Reply, tx: mpsc::UnboundedSender<Received>) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let length = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = tx.send(Received { head, body: buf[head_end..head_end + length].to_vec() });
        match reply {
            Reply::Canned(response) => {
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
            Reply::Endless => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n").await;
                let zeros = vec![0u8; 64 * 1024];
                while stream.write_all(&zeros).await.is_ok() {}
            }
            Reply::Silent => tokio::time::sleep(Duration::from_secs(30)).await,
        }
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    const FAIL: &str = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\nboom";

    fn sender(allow_private: bool) -> Sender {
        Sender::new(Duration::from_secs(5), allow_private).expect("a webhook sender")
    }

    #[tokio::test]
    async fn a_delivery_arrives_signed_over_the_body_received() {
        let mut server = serve(Reply::Canned(OK.into())).await;
        let body = br#"{"event":"BootNotification","stationId":"CP-1"}"#.to_vec();
        let attempt = sender(true).post(&format!("http://{}/hook", server.addr), SECRET, 42, body.clone()).await;
        assert_eq!(attempt.status, Some(200), "{attempt:?}");
        assert!(attempt.delivered());
        assert_eq!(attempt.error, None);

        let got = server.requests.recv().await.expect("the request");
        assert!(got.head.starts_with("POST /hook HTTP/1.1\r\n"), "{}", got.head);
        assert_eq!(got.body, body);
        assert_eq!(got.header("content-type"), Some("application/json"));
        assert_eq!(got.header("ocpp-css-event-id"), Some("42"));
        assert_eq!(got.header("user-agent"), Some(USER_AGENT));
        assert!(USER_AGENT.starts_with("ocpp-css-webhooks/"));
        let timestamp: i64 = got.header("ocpp-css-timestamp").expect("a timestamp").parse().expect("unix seconds");
        let now = chrono::Utc::now().timestamp();
        assert!((now - timestamp).abs() <= 5);
        let signature = got.header("ocpp-css-signature").expect("a signature");
        assert!(signature.starts_with(&format!("t={timestamp},v1=")), "{signature}");
        assert!(verify(SECRET, signature, &got.body, now, 300));
        assert!(!verify("whsec_other", signature, &got.body, now, 300));
    }

    #[tokio::test]
    async fn a_server_error_is_not_delivered() {
        let server = serve(Reply::Canned(FAIL.into())).await;
        let attempt = sender(true).post(&format!("http://{}/", server.addr), SECRET, 1, b"{}".to_vec()).await;
        assert_eq!(attempt.status, Some(500));
        assert!(!attempt.delivered());
        assert_eq!(attempt.error, None);
    }

    #[tokio::test]
    async fn private_destinations_are_refused_without_connecting() {
        let server = serve(Reply::Canned(OK.into())).await;
        let port = server.addr.port();
        let sender = sender(false);

        let by_ip = sender.post(&format!("http://127.0.0.1:{port}/"), SECRET, 1, b"{}".to_vec()).await;
        assert_eq!(by_ip.status, None);
        assert!(by_ip.error.as_deref().is_some_and(|e| e.contains("127.0.0.1")), "{by_ip:?}");

        let by_name = sender.post(&format!("http://localhost:{port}/"), SECRET, 1, b"{}".to_vec()).await;
        assert_eq!(by_name.status, None);
        assert!(by_name.error.as_deref().is_some_and(|e| e.contains("resolves to a private address")), "{by_name:?}");
        assert!(!by_name.error.as_deref().is_some_and(|e| e.contains("http://")), "the URL leaked: {by_name:?}");

        let mapped = sender.post(&format!("http://[::ffff:127.0.0.1]:{port}/"), SECRET, 1, b"{}".to_vec()).await;
        assert_eq!(mapped.status, None);

        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(server.connections.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed() {
        let mut target = serve(Reply::Canned(OK.into())).await;
        let redirect = format!(
            "HTTP/1.1 302 Found\r\nLocation: http://{}/elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            target.addr
        );
        let mut server = serve(Reply::Canned(redirect)).await;
        let attempt = sender(true).post(&format!("http://{}/", server.addr), SECRET, 1, b"{}".to_vec()).await;
        assert_eq!(attempt.status, Some(302));
        assert!(!attempt.delivered());
        assert!(server.requests.recv().await.is_some());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(target.connections.load(Ordering::SeqCst), 0);
        assert!(target.requests.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_huge_response_body_is_not_read() {
        let server = serve(Reply::Endless).await;
        let started = Instant::now();
        let attempt = sender(true).post(&format!("http://{}/", server.addr), SECRET, 1, b"{}".to_vec()).await;
        assert_eq!(attempt.status, Some(200));
        assert!(attempt.delivered());
        // Reading the gigabyte would hit the 5 s timeout (and would not be a clean return).
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_silent_receiver_times_out() {
        let server = serve(Reply::Silent).await;
        let sender = Sender::new(Duration::from_millis(300), true).expect("a webhook sender");
        let attempt = sender.post(&format!("http://{}/", server.addr), SECRET, 1, b"{}".to_vec()).await;
        assert_eq!(attempt.status, None);
        assert!(!attempt.delivered());
        assert!(attempt.error.is_some());
        assert!(attempt.latency < Duration::from_secs(3), "{attempt:?}");
    }

    #[tokio::test]
    async fn https_goes_through_the_ring_tls_configuration() {
        // A server that answers a ClientHello with plain HTTP: the handshake fails cleanly, which shows the
        // preconfigured rustls client is the one in use (no provider lookup, no panic).
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a test port");
        let addr = listener.local_addr().expect("the test port");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(OK.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        let attempt = sender(true).post(&format!("https://{addr}/"), SECRET, 1, b"{}".to_vec()).await;
        assert_eq!(attempt.status, None);
        assert!(attempt.error.is_some(), "{attempt:?}");
    }

    #[test]
    fn only_2xx_is_delivered() {
        let attempt = |status| Attempt { status, latency: Duration::ZERO, error: None };
        assert!(attempt(Some(200)).delivered());
        assert!(attempt(Some(204)).delivered());
        assert!(attempt(Some(299)).delivered());
        assert!(!attempt(Some(199)).delivered());
        assert!(!attempt(Some(301)).delivered());
        assert!(!attempt(Some(404)).delivered());
        assert!(!attempt(None).delivered());
    }
}
