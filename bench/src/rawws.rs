//! WebSocket by hand, for the hostile scenario: raw TCP connects (a chosen source address, receive
//! buffer and abortive close), the client's HTTP upgrade, frame headers declaring any length,
//! masking, and a reader of the server's frames that notices its close frame.

use crate::conn::bind_address_no_port;
use crate::outcomes::io_label;
use crate::schedule::splitmix64;
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_CLOSE: u8 = 0x8;

/// Largest payload length a frame header can declare (RFC 6455: the top bit of the 64-bit length is 0).
pub const MAX_DECLARED_LEN: u64 = u64::MAX >> 1;

/// Longest HTTP response head read before giving up on it.
pub const MAX_HEAD: usize = 16 * 1024;

/// Largest server frame the reader takes apart; a longer one ends the reading (`server_frame_too_big`).
pub const MAX_SERVER_FRAME: u64 = 4 << 20;

/// A masked client frame header: FIN bit, opcode, the declared payload length (at most
/// [`MAX_DECLARED_LEN`]; larger is clamped), and the mask key.
pub fn frame_header(fin: bool, opcode: u8, len: u64, mask: [u8; 4]) -> Vec<u8> {
    let len = len.min(MAX_DECLARED_LEN);
    let mut h = Vec::with_capacity(14);
    h.push(if fin { 0x80 } else { 0 } | (opcode & 0x0F));
    match len {
        0..=125 => h.push(0x80 | len as u8),
        126..=0xFFFF => {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
    }
    h.extend_from_slice(&mask);
    h
}

/// XORs `data` with the mask key; `data` starts at byte `offset` of the payload, so a payload can
/// be masked in pieces.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: u64) {
    let shift = (offset % 4) as usize;
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(i + shift) % 4];
    }
}

/// A whole masked client frame.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = frame_header(fin, opcode, payload.len() as u64, mask);
    let start = f.len();
    f.extend_from_slice(payload);
    apply_mask(&mut f[start..], mask, 0);
    f
}

/// A masked text frame holding all of `text`.
pub fn text_frame(text: &str, mask: [u8; 4]) -> Vec<u8> {
    client_frame(true, OP_TEXT, text.as_bytes(), mask)
}

/// A frame from the server.
#[derive(Debug, PartialEq)]
pub struct ServerFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// A frame and how many bytes of the buffer it took.
    Frame(ServerFrame, usize),
    Incomplete,
    /// Declares more than the reader takes.
    TooBig(u64),
}

/// Takes the first frame off `buf` (server frames are unmasked, but a masked one is unmasked too).
pub fn parse_server_frame(buf: &[u8], max_payload: u64) -> Parsed {
    if buf.len() < 2 {
        return Parsed::Incomplete;
    }
    let (fin, opcode, masked) = (buf[0] & 0x80 != 0, buf[0] & 0x0F, buf[1] & 0x80 != 0);
    let (len, mut at) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        126 | 127 => return Parsed::Incomplete,
        n => (u64::from(n), 2),
    };
    if len > max_payload {
        return Parsed::TooBig(len);
    }
    let mask = if masked {
        if buf.len() < at + 4 {
            return Parsed::Incomplete;
        }
        let m = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        Some(m)
    } else {
        None
    };
    // len ≤ max_payload, which fits in memory.
    let end = at + len as usize;
    if buf.len() < end {
        return Parsed::Incomplete;
    }
    let mut payload = buf[at..end].to_vec();
    if let Some(m) = mask {
        apply_mask(&mut payload, m, 0);
    }
    Parsed::Frame(ServerFrame { fin, opcode, payload }, end)
}

/// The status code in a close frame's payload; `None` when it has none.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

/// The client's upgrade request, offering `ocpp1.6`, with HTTP Basic credentials when a password is given.
pub fn upgrade_request(host: &str, path: &str, user: &str, password: Option<&str>, key: &str) -> String {
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {}\r\n",
        crate::conn::SUBPROTOCOL
    );
    if let Some(pw) = password {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        r += &format!("Authorization: Basic {basic}\r\n");
    }
    r += "\r\n";
    r
}

/// An HTTP/1.x response head.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Bytes of the head, the blank line included.
    pub len: usize,
}

impl ResponseHead {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Parses the HTTP/1.x response head at the start of `buf`; `Ok(None)` while it is incomplete.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead>, &'static str> {
    let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD { Err("head_too_long") } else { Ok(None) };
    };
    let head = std::str::from_utf8(&buf[..pos]).map_err(|_| "head_not_utf8")?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    if !first.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err("not_http");
    }
    let status = first.next().and_then(|s| s.parse::<u16>().ok()).ok_or("bad_status")?;
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Ok(Some(ResponseHead { status, headers, len: pos + 4 }))
}

/// A small fast generator for masks, keys, ids and filler (not for secrets).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(splitmix64(seed))
    }

    /// Seeded from the clock and `stream`, so two runs differ.
    pub fn from_clock(stream: u64) -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng::new(nanos ^ splitmix64(stream))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix64(self.0)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let x = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&x[..chunk.len()]);
        }
    }

    pub fn mask(&mut self) -> [u8; 4] {
        let x = self.next_u64().to_le_bytes();
        [x[0], x[1], x[2], x[3]]
    }

    /// A `Sec-WebSocket-Key`: 16 random bytes, base64.
    pub fn ws_key(&mut self) -> String {
        let mut b = [0u8; 16];
        self.fill(&mut b);
        base64::engine::general_purpose::STANDARD.encode(b)
    }
}

/// `ws://host:port/path` (or `http://…`) split into the `host:port` to connect to and the path
/// (which may still hold `{id}`); port 80 when none is given.
pub fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| anyhow!("{url:?} is not a ws:// or http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        bail!("{url:?} has no host");
    }
    let has_port = match authority.rfind(']') {
        Some(close) => authority[close..].contains(':'),
        None => authority.contains(':'),
    };
    let hostport = if has_port { authority.to_string() } else { format!("{authority}:80") };
    Ok((hostport, path.to_string()))
}

/// Where raw connections go: the address, the Host header, and the path with `{id}` in it.
#[derive(Debug, Clone)]
pub struct RawTarget {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

impl RawTarget {
    /// From a station URL template (`{tenant}` replaced by `tenant`) or an API base URL, resolving
    /// the host once.
    pub async fn from_url(url: &str, tenant: &str) -> Result<RawTarget> {
        let (host, path) = split_url(&url.replace("{tenant}", tenant))?;
        let addr = tokio::net::lookup_host(host.as_str())
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .ok_or_else(|| anyhow!("{host} has no address"))?;
        Ok(RawTarget { addr, host, path })
    }

    pub fn path_for(&self, id: &str) -> String {
        self.path.replace("{id}", id)
    }
}

/// Options of one raw socket.
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketOpts {
    pub source_ip: Option<IpAddr>,
    /// SO_RCVBUF, set before connecting (the kernel doubles it for its bookkeeping).
    pub recv_buffer: Option<u32>,
    /// Close with RST (SO_LINGER 0), leaving no TIME_WAIT behind on this side.
    pub linger_zero: bool,
}

/// Why a raw connect or upgrade failed.
#[derive(Debug, Clone, PartialEq)]
pub enum RawError {
    /// TCP-level, by label (`refused`, `no_port`, `harness_emfile`, `reset`, …).
    Connect(&'static str),
    /// The upgrade was answered with this status instead of 101.
    Http {
        status: u16,
        retry_after: Option<String>,
    },
    /// The upgrade went wrong otherwise, by label (`handshake_eof`, `handshake_reset`, `head_too_long`, …).
    Handshake(&'static str),
    Timeout,
}

impl RawError {
    pub fn kind(&self) -> String {
        match self {
            RawError::Connect(k) | RawError::Handshake(k) => (*k).to_string(),
            RawError::Http { status, .. } => crate::outcomes::http_label(*status),
            RawError::Timeout => "timeout".into(),
        }
    }
}

/// A TCP connection to `addr`, by `deadline`.
pub async fn tcp_connect(addr: SocketAddr, opts: SocketOpts, deadline: Instant) -> Result<TcpStream, RawError> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
        .map_err(|e| RawError::Connect(io_label(&e)))?;
    if let Some(n) = opts.recv_buffer {
        socket.set_recv_buffer_size(n).map_err(|e| RawError::Connect(io_label(&e)))?;
    }
    if let Some(ip) = opts.source_ip {
        if ip.is_ipv4() {
            bind_address_no_port(&socket);
        }
        socket.bind(SocketAddr::new(ip, 0)).map_err(|e| RawError::Connect(io_label(&e)))?;
    }
    let stream = match timeout_at(deadline, socket.connect(addr)).await {
        Err(_) => return Err(RawError::Timeout),
        Ok(Err(e)) => return Err(RawError::Connect(io_label(&e))),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    if opts.linger_zero {
        let _ = stream.set_zero_linger();
    }
    Ok(stream)
}

/// Reads an HTTP response head off `stream` by `deadline`; returns it with the bytes read past it.
pub async fn read_response_head(
    stream: &mut (impl AsyncRead + Unpin),
    deadline: Instant,
) -> Result<(ResponseHead, Vec<u8>), RawError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        match parse_response_head(&buf) {
            Ok(Some(head)) => {
                let rest = buf.split_off(head.len);
                return Ok((head, rest));
            }
            Ok(None) => {}
            Err(kind) => return Err(RawError::Handshake(kind)),
        }
        match timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Err(RawError::Timeout),
            Ok(Ok(0)) => return Err(RawError::Handshake("handshake_eof")),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => {
                return Err(RawError::Handshake(if io_label(&e) == "reset" {
                    "handshake_reset"
                } else {
                    "handshake_io"
                }))
            }
        }
    }
}

/// The WebSocket upgrade of station `user` over `stream`; on 101 (with the right accept key),
/// the bytes the server sent past its answer.
pub async fn upgrade(
    stream: &mut TcpStream,
    target: &RawTarget,
    user: &str,
    password: Option<&str>,
    rng: &mut Rng,
    deadline: Instant,
) -> Result<Vec<u8>, RawError> {
    let key = rng.ws_key();
    let request = upgrade_request(&target.host, &target.path_for(user), user, password, &key);
    match timeout_at(deadline, stream.write_all(request.as_bytes())).await {
        Err(_) => return Err(RawError::Timeout),
        Ok(Err(e)) => return Err(RawError::Connect(io_label(&e))),
        Ok(Ok(())) => {}
    }
    let (head, rest) = read_response_head(stream, deadline).await?;
    if head.status != 101 {
        return Err(RawError::Http {
            status: head.status,
            retry_after: head.header("retry-after").map(str::to_string),
        });
    }
    if head.header("sec-websocket-accept") != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err(RawError::Handshake("bad_accept_key"));
    }
    Ok(rest)
}

/// Connect and upgrade, both by `deadline`.
pub async fn open_ws(
    target: &RawTarget,
    user: &str,
    password: Option<&str>,
    opts: SocketOpts,
    rng: &mut Rng,
    deadline: Instant,
) -> Result<(TcpStream, Vec<u8>), RawError> {
    let mut stream = tcp_connect(target.addr, opts, deadline).await?;
    let rest = upgrade(&mut stream, target, user, password, rng, deadline).await?;
    Ok((stream, rest))
}

/// What a reader of the server's side of a raw connection saw by the time it stopped.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Seen {
    /// A close frame came: its code, `None` if it had none.
    pub close: Option<Option<u16>>,
    /// The server closed the TCP stream (FIN) without a close frame first.
    pub eof: bool,
    /// Reading failed with this label (`reset`, …).
    pub error: Option<&'static str>,
    /// The server sent a frame longer than the reader takes.
    pub too_big: bool,
    /// The reader stopped at its deadline with the connection still open.
    pub open: bool,
    pub bytes: u64,
}

impl Seen {
    /// How the server ended the connection, if it did.
    pub fn ended(&self) -> Option<String> {
        if self.close.is_some() {
            return Some(crate::conn::end_kind(self.close, None));
        }
        if self.eof {
            return Some("eof".into());
        }
        if self.too_big {
            return Some("server_frame_too_big".into());
        }
        self.error.map(str::to_string)
    }
}

/// Reads the server's frames until it closes, fails, or `until`; every text frame goes to `on_text`.
pub async fn read_frames(
    rd: &mut (impl AsyncRead + Unpin),
    mut buf: Vec<u8>,
    until: Instant,
    mut on_text: impl FnMut(&[u8]),
) -> Seen {
    let mut seen = Seen::default();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        loop {
            match parse_server_frame(&buf, MAX_SERVER_FRAME) {
                Parsed::Frame(f, used) => {
                    buf.drain(..used);
                    match f.opcode {
                        OP_CLOSE => {
                            seen.close = Some(close_code(&f.payload));
                            return seen;
                        }
                        OP_TEXT => on_text(&f.payload),
                        _ => {}
                    }
                }
                Parsed::Incomplete => break,
                Parsed::TooBig(_) => {
                    seen.too_big = true;
                    return seen;
                }
            }
        }
        match timeout_at(until, rd.read(&mut chunk)).await {
            Err(_) => {
                seen.open = true;
                return seen;
            }
            Ok(Ok(0)) => {
                seen.eof = true;
                return seen;
            }
            Ok(Ok(n)) => {
                seen.bytes += n as u64;
                buf.extend_from_slice(&chunk[..n]);
            }
            Ok(Err(e)) => {
                seen.error = Some(io_label(&e));
                return seen;
            }
        }
    }
}

/// A short pause after a failed connect, so that a refusing server does not become a busy loop.
pub const RETRY_PAUSE: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests {
    use super::*;

    const M: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

    #[test]
    fn a_two_to_the_forty_frame_header() {
        let h = frame_header(true, OP_TEXT, 1 << 40, M);
        // FIN + text, masked + 127 (64-bit length follows), 2^40 big-endian, the key.
        assert_eq!(h, [0x81, 0xFF, 0, 0, 0x01, 0, 0, 0, 0, 0, 0x11, 0x22, 0x33, 0x44]);
        // The top bit of a 64-bit length must stay clear.
        let top = frame_header(true, OP_TEXT, u64::MAX, M);
        assert_eq!(top[2], 0x7F);
        assert_eq!(&top[3..10], &[0xFF; 7]);
    }

    #[test]
    fn length_encodings_switch_at_126_and_65536() {
        assert_eq!(frame_header(true, OP_TEXT, 125, M)[..2], [0x81, 0x80 | 125]);
        assert_eq!(frame_header(true, OP_TEXT, 126, M)[..4], [0x81, 0x80 | 126, 0, 126]);
        assert_eq!(frame_header(true, OP_TEXT, 65_535, M)[..4], [0x81, 0xFE, 0xFF, 0xFF]);
        assert_eq!(frame_header(true, OP_TEXT, 65_536, M).len(), 2 + 8 + 4);
        assert_eq!(frame_header(true, OP_TEXT, 0, M), [0x81, 0x80, 0x11, 0x22, 0x33, 0x44]);
    }

    #[test]
    fn fragments_are_a_first_frame_without_fin_then_continuations() {
        let first = frame_header(false, OP_TEXT, 16 * 1024, M);
        assert_eq!(first[..4], [0x01, 0xFE, 0x40, 0x00], "no FIN, text, 16384");
        let cont = client_frame(false, OP_CONTINUATION, &[b'a'; 16 * 1024], M);
        assert_eq!(cont[..4], [0x00, 0xFE, 0x40, 0x00], "no FIN, continuation, 16384");
        assert_eq!(cont.len(), 4 + 4 + 16 * 1024);
        assert_eq!(cont[8], b'a' ^ 0x11);
        assert_eq!(cont[9], b'a' ^ 0x22);
        assert_eq!(cont[12], b'a' ^ 0x11);
        // Our own parser reads it back (it unmasks masked frames too).
        let Parsed::Frame(f, used) = parse_server_frame(&cont, 1 << 20) else { panic!("not parsed") };
        assert_eq!((f.fin, f.opcode, used), (false, OP_CONTINUATION, cont.len()));
        assert!(f.payload.iter().all(|&b| b == b'a'));
    }

    #[test]
    fn masking_in_pieces_equals_masking_at_once() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, M, 0);
        let mut pieces = data.clone();
        let (a, b) = pieces.split_at_mut(7);
        apply_mask(a, M, 0);
        apply_mask(b, M, 7);
        assert_eq!(whole, pieces);
        apply_mask(&mut whole, M, 0);
        assert_eq!(whole, data, "masking twice restores");
    }

    #[test]
    fn text_frames_round_trip() {
        let f = text_frame(r#"[3,"x",{}]"#, M);
        let Parsed::Frame(back, n) = parse_server_frame(&f, 100) else { panic!("not parsed") };
        assert_eq!(n, f.len());
        assert_eq!(back, ServerFrame { fin: true, opcode: OP_TEXT, payload: br#"[3,"x",{}]"#.to_vec() });
    }

    #[test]
    fn server_frames_parse_in_pieces() {
        // Unmasked close frame with code 1009 and a reason, then the start of another frame.
        let mut buf = vec![0x88, 6, 0x03, 0xF1, b'b', b'i', b'g', b'!', 0x81];
        assert_eq!(parse_server_frame(&buf[..1], 100), Parsed::Incomplete);
        assert_eq!(parse_server_frame(&buf[..5], 100), Parsed::Incomplete);
        let Parsed::Frame(f, n) = parse_server_frame(&buf, 100) else { panic!("not parsed") };
        assert_eq!((f.opcode, n, close_code(&f.payload)), (OP_CLOSE, 8, Some(1009)));
        buf.drain(..n);
        assert_eq!(parse_server_frame(&buf, 100), Parsed::Incomplete);
        assert_eq!(close_code(&[]), None);
        // 16-bit and 64-bit lengths.
        let mut mid = vec![0x81, 126, 0x01, 0x00];
        mid.extend(vec![b'x'; 256]);
        assert!(matches!(parse_server_frame(&mid, 1000), Parsed::Frame(ref f, 260) if f.payload.len() == 256));
        assert_eq!(parse_server_frame(&mid[..3], 1000), Parsed::Incomplete);
        let huge = [0x82, 127, 0, 0, 1, 0, 0, 0, 0, 0];
        assert_eq!(parse_server_frame(&huge, 1000), Parsed::TooBig(1 << 40));
    }

    #[test]
    fn upgrade_request_has_the_credentials_and_subprotocol() {
        let r = upgrade_request("127.0.0.1:8180", "/ocpp/t/CP1", "CP1", Some("pw"), "a2V5");
        assert!(r.starts_with("GET /ocpp/t/CP1 HTTP/1.1\r\nHost: 127.0.0.1:8180\r\n"), "{r}");
        assert!(r.contains("Sec-WebSocket-Protocol: ocpp1.6\r\n"));
        assert!(r.contains("Sec-WebSocket-Key: a2V5\r\n"));
        // base64("CP1:pw")
        assert!(r.contains("Authorization: Basic Q1AxOnB3\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\n"));
        assert!(!upgrade_request("h", "/", "u", None, "k").contains("Authorization"));
    }

    #[test]
    fn response_heads_parse() {
        let text = b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\ncontent-length: 0\r\n\r\nrest";
        let head = parse_response_head(text).unwrap().unwrap();
        assert_eq!(head.status, 429);
        assert_eq!(head.header("Retry-After"), Some("7"));
        assert_eq!(&text[head.len..], b"rest");
        assert_eq!(parse_response_head(b"HTTP/1.1 101 Switching"), Ok(None));
        assert_eq!(parse_response_head(b"SSH-2.0\r\n\r\n"), Err("not_http"));
        assert_eq!(parse_response_head(b"HTTP/1.1 abc\r\n\r\n"), Err("bad_status"));
        assert_eq!(parse_response_head(&vec![b'x'; MAX_HEAD + 1]), Err("head_too_long"));
    }

    #[test]
    fn urls_split_into_address_and_path() {
        let (h, p) = split_url("ws://127.0.0.1:8180/ocpp/t/{id}").unwrap();
        assert_eq!((h.as_str(), p.as_str()), ("127.0.0.1:8180", "/ocpp/t/{id}"));
        assert_eq!(split_url("ws://localhost/x").unwrap().0, "localhost:80");
        assert_eq!(split_url("ws://[::1]:9000/x").unwrap().0, "[::1]:9000");
        assert_eq!(split_url("ws://[::1]/x").unwrap().0, "[::1]:80");
        assert_eq!(split_url("ws://h:1").unwrap().1, "/");
        let (h, p) = split_url("http://127.0.0.1:8190/api/v1").unwrap();
        assert_eq!((h.as_str(), p.as_str()), ("127.0.0.1:8190", "/api/v1"));
        assert!(split_url("https://h/x").is_err());
        assert!(split_url("ws:///x").is_err());
    }

    #[test]
    fn rng_is_reproducible_and_fills_odd_lengths() {
        let (mut a, mut b) = (Rng::new(5), Rng::new(5));
        assert_eq!(a.next_u64(), b.next_u64());
        let mut buf = [0u8; 13];
        a.fill(&mut buf);
        assert!(buf.iter().any(|&x| x != 0));
        assert_eq!(a.ws_key().len(), 24, "16 bytes in base64");
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn seen_tells_how_the_server_ended() {
        let s = Seen { close: Some(Some(1009)), error: Some("reset"), ..Seen::default() };
        assert_eq!(s.ended().as_deref(), Some("close_1009"));
        assert_eq!(Seen { eof: true, ..Seen::default() }.ended().as_deref(), Some("eof"));
        assert_eq!(Seen { error: Some("reset"), ..Seen::default() }.ended().as_deref(), Some("reset"));
        assert_eq!(Seen { open: true, ..Seen::default() }.ended(), None);
        assert_eq!(RawError::Http { status: 401, retry_after: None }.kind(), "http_401");
        assert_eq!(RawError::Connect("refused").kind(), "refused");
    }

    #[tokio::test]
    async fn reader_stops_at_the_close_frame() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        server.write_all(&[0x81, 3, b'a', b'b', b'c', 0x88, 2, 0x03, 0xE8]).await.unwrap();
        let mut texts = Vec::new();
        let seen =
            read_frames(&mut client, Vec::new(), Instant::now() + Duration::from_secs(5), |t| texts.push(t.to_vec()))
                .await;
        assert_eq!(texts, vec![b"abc".to_vec()]);
        assert_eq!(seen.close, Some(Some(1000)));
        drop(server);
        let seen = read_frames(&mut client, Vec::new(), Instant::now() + Duration::from_secs(5), |_| {}).await;
        assert!(seen.eof);
    }
}
