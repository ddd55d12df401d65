//! A client below the WebSocket library: a TCP connection with a handshake done by hand, for the
//! bytes a well-behaved library never sends (a header declaring 2^40 bytes, text that is not UTF-8,
//! a peer that never reads) and for half-sent HTTP requests.

use base64::Engine;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to 127.0.0.1:`port`, from `from` when given, with a receive buffer of
/// `recv_buffer` bytes when given (set before connecting, so the window stays that small).
pub async fn tcp(port: u16, from: Option<&str>, recv_buffer: Option<u32>) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = from {
        let ip: IpAddr = ip.parse().expect("an IP address");
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    socket.connect(SocketAddr::from(([127, 0, 0, 1], port))).await
}

/// The HTTP status the server answered a WebSocket handshake for a station with, and the stream.
pub async fn handshake(
    mut stream: TcpStream,
    tenant: &str,
    id: &str,
    password: &str,
    protocol: &str,
) -> (u16, String, TcpStream) {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{password}"));
    let request = format!(
        "GET /ocpp/{tenant}/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {protocol}\r\nAuthorization: Basic {auth}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("handshake sent");
    let head = read_head(&mut stream).await.expect("handshake answered");
    (status_of(&head), head, stream)
}

/// A station connected by hand: status 101 asserted.
pub async fn station(port: u16, tenant: &str, id: &str, password: &str, recv_buffer: Option<u32>) -> TcpStream {
    let stream = tcp(port, None, recv_buffer).await.expect("connects");
    let (status, head, stream) = handshake(stream, tenant, id, password, "ocpp1.6").await;
    assert_eq!(status, 101, "{head}");
    stream
}

/// Reads an HTTP response head (up to the blank line), byte by byte so nothing after it is taken.
pub async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

pub fn status_of(head: &str) -> u16 {
    head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A client frame header (masked, with an all-zero key, so the payload goes as it is).
pub fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
    let mut h = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match len {
        0..=125 => h.push(0x80 | len as u8),
        126..=0xffff => {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
    }
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

/// A whole client frame.
pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = header(fin, opcode, payload.len() as u64);
    f.extend_from_slice(payload);
    f
}

pub fn text(payload: &str) -> Vec<u8> {
    frame(true, 1, payload.as_bytes())
}

/// How the server ended the connection, as seen by a reader of its frames.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// A close frame with this code.
    Close(u16),
    /// The connection ended (EOF or reset) without a close frame.
    Dropped,
    /// Still open after the wait.
    Open,
}

/// Reads the server's frames until a close frame or the end of the connection, at most `wait`.
/// Text frames are returned too.
pub async fn read_until_close(stream: &mut (impl AsyncRead + Unpin), wait: Duration) -> (Ending, Vec<String>) {
    let mut texts = Vec::new();
    let read = async {
        loop {
            let mut h = [0u8; 2];
            if stream.read_exact(&mut h).await.is_err() {
                return Ending::Dropped;
            }
            let len = match h[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    if stream.read_exact(&mut b).await.is_err() {
                        return Ending::Dropped;
                    }
                    u64::from(u16::from_be_bytes(b))
                }
                127 => {
                    let mut b = [0u8; 8];
                    if stream.read_exact(&mut b).await.is_err() {
                        return Ending::Dropped;
                    }
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            let mut payload = vec![0u8; len as usize];
            if stream.read_exact(&mut payload).await.is_err() {
                return Ending::Dropped;
            }
            match h[0] & 0x0f {
                0x8 if payload.len() >= 2 => return Ending::Close(u16::from_be_bytes([payload[0], payload[1]])),
                0x8 => return Ending::Close(1005),
                0x1 => texts.push(String::from_utf8_lossy(&payload).into_owned()),
                _ => {}
            }
        }
    };
    let ending = tokio::time::timeout(wait, read).await.unwrap_or(Ending::Open);
    (ending, texts)
}

/// Whether the server has closed the connection: a read ends (EOF or reset) within `wait`.
pub async fn closed_within(stream: &mut (impl AsyncRead + Unpin), wait: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(wait, read).await.is_ok()
}

/// The resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}
