//! A station's WebSocket: the upgrade response, then the socket itself, handed over by the HTTP
//! connection with the 101 encoded and not yet written (`ws::upgraded`). The session's task reads it —
//! the station's messages, decoded and reassembled from their fragments — and writes it: the
//! [`Pump`] takes the session's [`Outbox`] as the socket has room.
//!
//! Written on actix-http's WebSocket codec, with no task, channel or HTTP dispatcher of its own
//! between the socket and the session: one task per station, and an idle station's socket holds
//! the session's state and nothing more.

use super::writer::{self, Hangup, Outbox, OutboxBody};
use crate::actors::tracker::SessionGuard;
use crate::limits::connections::Connection;
use actix_codec::{AsyncRead, AsyncWrite, ReadBuf};
use actix_http::body::MessageBody as _;
use actix_http::error::PayloadError;
use actix_http::ws::{self, CloseReason, Codec, Frame, Item, ProtocolError};
use actix_web::http::header;
use actix_web::web::{Buf as _, Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use bytestring::ByteString;
use futures_util::Stream;
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// A message from the station, its fragments (if any) put together.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(ByteString),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    Close(Option<CloseReason>),
}

/// The answer to a station's WebSocket upgrade request (naming `subprotocol` when given): 101,
/// whose connection then hands its socket to [`connect`].
pub fn handshake(req: &HttpRequest, subprotocol: Option<&'static str>) -> Result<HttpResponse, actix_web::Error> {
    let mut response = ws::handshake(req.head())?;
    if let Some(subprotocol) = subprotocol {
        response.insert_header((header::SEC_WEBSOCKET_PROTOCOL, subprotocol));
    }
    Ok(HttpResponse::from(response.finish().map_into_boxed_body()))
}

/// A station's socket, plain or TLS, once the HTTP connection has handed it over.
pub trait StationIo: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> StationIo for T {}

/// The socket, shared by its reading half (the session's stream) and its writing half ([`Pump`]).
/// Both are polled by the session's task, one at a time, so the cell is never contended.
type SharedIo = Rc<RefCell<Box<dyn StationIo>>>;

/// The station's side of an upgraded socket, for the session: the queue of what it sends, the
/// stream of what the station sends (through `guard`, no message larger than `max_message`
/// bytes), and the pump that writes the queue. `early` holds the bytes the station sent right
/// after its handshake (read with the request); `head`, the encoded 101, is written first. `keep`
/// is held as long as the socket.
pub fn connect<G, S>(
    io: Box<dyn StationIo>,
    early: BytesMut,
    head: BytesMut,
    guard: G,
    max_message: usize,
    max_queued: usize,
    keep: SocketKeep,
) -> (Outbox, StationStream<S>, Pump)
where
    G: FnOnce(IoReader) -> S,
{
    let io: SharedIo = Rc::new(RefCell::new(io));
    let (outbox, body, hangup) = writer::outbox(max_queued);
    let reader = IoReader { io: io.clone(), early: (!early.is_empty()).then(|| early.freeze()), ended: false };
    let stream = StationStream::new(guard(reader), hangup, max_message);
    let pump = Pump { io, body: Some(body), chunk: head.freeze(), unflushed: true, keep, waker: None };
    (outbox, stream, pump)
}

/// What lives as long as the socket: the connection's place in the connection table, and the
/// session's count for shutdown (which then waits for the close frame to be written).
pub struct SocketKeep {
    pub connection: Option<Rc<Connection>>,
    pub guard: Option<SessionGuard>,
}

/// The station's bytes as they arrive, read straight from the socket.
pub struct IoReader {
    io: SharedIo,
    early: Option<Bytes>,
    ended: bool,
}

/// The most read from the socket at once.
const READ_CHUNK: usize = 8 * 1024;

impl Stream for IoReader {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(early) = this.early.take() {
            return Poll::Ready(Some(Ok(early)));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        // Read on the stack, copied out at the size read: an idle station's socket holds no buffer.
        // Left uninitialised: zeroing 8 KiB per message showed in the profile.
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut read = ReadBuf::uninit(&mut buf);
        let mut io = this.io.borrow_mut();
        match Pin::new(&mut **io).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) if read.filled().is_empty() => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(Bytes::copy_from_slice(read.filled())))),
            Poll::Ready(Err(e)) => {
                this.ended = true;
                Poll::Ready(Some(Err(PayloadError::Io(e))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Writes the session's queue to the socket as the socket takes it: one chunk at a time, the next
/// taken from the queue only when the last is written (so a station that does not read stops
/// taking, which is how the session sees a slow consumer).
pub struct Pump {
    io: SharedIo,
    /// `None` once the queue has ended (after its close frame) or the socket failed: dropping the
    /// body tells the stream the connection is gone.
    body: Option<OutboxBody>,
    chunk: Bytes,
    unflushed: bool,
    keep: SocketKeep,
    /// The waker of the task that last polled the pump (the session's), for [`Pump::write_now`].
    waker: Option<Waker>,
}

impl Pump {
    /// Writes what waits; ready once nothing more will be written (the queue ended, or the socket
    /// failed).
    pub fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &self.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => self.waker = Some(cx.waker().clone()),
        }
        self.write(cx)
    }

    /// Writes what the session just queued, from the session's own handler: no wake-up and no
    /// second turn of the session. What the socket does not take at once is written when the
    /// socket wakes the session. Before the session was first polled there is nothing to write.
    pub fn write_now(&mut self) {
        if let Some(waker) = self.waker.take() {
            let _written_or_waiting = self.write(&mut Context::from_waker(&waker));
            self.waker.get_or_insert(waker);
        }
    }

    fn write(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if !self.chunk.is_empty() {
                let mut io = self.io.borrow_mut();
                match Pin::new(&mut **io).poll_write(cx, &self.chunk) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        self.chunk.advance(n);
                        continue;
                    }
                    Poll::Ready(_) => {
                        drop(io);
                        return self.fail();
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.unflushed {
                let mut io = self.io.borrow_mut();
                match Pin::new(&mut **io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.unflushed = false,
                    Poll::Ready(Err(_)) => {
                        drop(io);
                        return self.fail();
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            let Some(body) = self.body.as_mut() else { return Poll::Ready(()) };
            match Pin::new(body).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    // Taken as it is: the queue gives its memory back once drained.
                    self.chunk = chunk;
                    self.unflushed = true;
                }
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => {
                    self.body = None;
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn fail(&mut self) -> Poll<()> {
        self.chunk = Bytes::new();
        self.body = None;
        Poll::Ready(())
    }

    /// After the session: writes what it left queued (its close frame last), ends the socket's
    /// sending side, and reads until the station closes its side; `within` bounds all of it.
    pub async fn finish(mut self, within: Duration) {
        let done = async {
            std::future::poll_fn(|cx| self.poll_write(cx)).await;
            let io = self.io.clone();
            if std::future::poll_fn(|cx| Pin::new(&mut **io.borrow_mut()).poll_shutdown(cx)).await.is_err() {
                return;
            }
            // Written: a node shutting down need not wait for the station's side.
            self.keep.guard = None;
            // The station answers the close frame and closes its side; what it sends meanwhile
            // is not read by anyone (closing with unread bytes would reset the connection).
            let mut buf = [0u8; READ_CHUNK];
            loop {
                let mut read = ReadBuf::new(&mut buf);
                match std::future::poll_fn(|cx| Pin::new(&mut **io.borrow_mut()).poll_read(cx, &mut read)).await {
                    Ok(()) if !read.filled().is_empty() => {}
                    _ => return,
                }
            }
        };
        let _ = tokio::time::timeout(within, done).await;
        // The socket closes before the connection leaves the table (fields drop in order).
        let Pump { io, keep, .. } = self;
        drop(io);
        drop(keep);
    }
}

/// The parts of a fragmented data message received so far.
struct Fragments {
    text: bool,
    parts: Vec<Bytes>,
    size: usize,
}

/// The station's messages, from the connection's bytes. It ends after the first error, and when
/// the connection is gone.
pub struct StationStream<S> {
    payload: S,
    hangup: Hangup,
    codec: Codec,
    /// Bytes received and not yet decoded.
    buf: BytesMut,
    fragments: Option<Fragments>,
    max_message: usize,
    ending: bool,
}

impl<S> StationStream<S> {
    fn new(payload: S, hangup: Hangup, max_message: usize) -> Self {
        StationStream {
            payload,
            hangup,
            codec: Codec::new().max_size(max_message),
            buf: BytesMut::new(),
            fragments: None,
            max_message,
            ending: false,
        }
    }

    /// What a decoded frame gives: a message, nothing yet (a fragment), or an error.
    fn on_frame(&mut self, frame: Frame) -> Option<Result<Incoming, ProtocolError>> {
        let (first_is_text, bytes, last) = match frame {
            Frame::Text(bytes) => return Some(text(bytes)),
            Frame::Binary(bytes) => return Some(Ok(Incoming::Binary(bytes))),
            Frame::Ping(bytes) => return Some(Ok(Incoming::Ping(bytes))),
            Frame::Pong(bytes) => return Some(Ok(Incoming::Pong(bytes))),
            Frame::Close(reason) => return Some(Ok(Incoming::Close(reason))),
            Frame::Continuation(Item::FirstText(bytes)) => (Some(true), bytes, false),
            Frame::Continuation(Item::FirstBinary(bytes)) => (Some(false), bytes, false),
            Frame::Continuation(Item::Continue(bytes)) => (None, bytes, false),
            Frame::Continuation(Item::Last(bytes)) => (None, bytes, true),
        };
        // The codec refuses a continuation without a first fragment, and a second first one.
        let fragments = self.fragments.get_or_insert_with(|| Fragments {
            text: first_is_text.unwrap_or(false),
            parts: Vec::new(),
            size: 0,
        });
        fragments.size += bytes.len();
        if fragments.size > self.max_message {
            return Some(Err(ProtocolError::Overflow));
        }
        if !bytes.is_empty() {
            fragments.parts.push(bytes);
        }
        if !last {
            return None;
        }
        let Fragments { text: is_text, parts, size } = self.fragments.take()?;
        let mut whole = BytesMut::with_capacity(size);
        for part in parts {
            whole.extend_from_slice(&part);
        }
        let whole = whole.freeze();
        Some(if is_text { text(whole) } else { Ok(Incoming::Binary(whole)) })
    }
}

/// A text message, refused when it is not UTF-8 (the error carries the [`std::str::Utf8Error`]).
fn text(bytes: Bytes) -> Result<Incoming, ProtocolError> {
    ByteString::try_from(bytes)
        .map(Incoming::Text)
        .map_err(|e| ProtocolError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))
}

impl<S> Stream for StationStream<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Incoming, ProtocolError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        use actix_codec::Decoder as _;
        let this = self.get_mut();
        loop {
            if !this.buf.is_empty() {
                let message = match this.codec.decode(&mut this.buf) {
                    Ok(None) => None,
                    Ok(Some(frame)) => match this.on_frame(frame) {
                        None => continue,
                        message => message,
                    },
                    Err(e) => Some(Err(e)),
                };
                if let Some(message) = message {
                    if message.is_err() {
                        // The stream ends at its first error; what was not decoded is dropped.
                        this.ending = true;
                        this.buf = BytesMut::new();
                    }
                    return Poll::Ready(Some(message));
                }
            }
            if this.buf.is_empty() {
                // Nothing waits to be decoded: the storage of the bytes already read goes.
                this.buf = BytesMut::new();
            }
            if this.ending {
                return Poll::Ready(None);
            }
            let gone = this.hangup.poll_gone(cx);
            match Pin::new(&mut this.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    if this.buf.is_empty() {
                        this.buf = BytesMut::from(bytes);
                    } else {
                        this.buf.extend_from_slice(&bytes);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.ending = true;
                    return Poll::Ready(Some(Err(ProtocolError::Io(io::Error::other(e)))));
                }
                Poll::Ready(None) => this.ending = true,
                // The connection is gone: its payload may never end by itself.
                Poll::Pending if gone => this.ending = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_http::ws::{OpCode, Parser};
    use futures_util::StreamExt;

    /// A client's frame, masked as a client must.
    fn frame(payload: &[u8], op: OpCode, fin: bool) -> Bytes {
        let mut dst = BytesMut::new();
        Parser::write_message(&mut dst, payload, op, fin, true);
        dst.freeze()
    }

    fn stream_of(
        chunks: Vec<Bytes>,
        max: usize,
    ) -> (Outbox, StationStream<impl Stream<Item = Result<Bytes, PayloadError>> + Unpin>) {
        let (outbox, _body, hangup) = writer::outbox(1024);
        let payload = futures_util::stream::iter(chunks.into_iter().map(Ok));
        (outbox, StationStream::new(payload, hangup, max))
    }

    #[actix_rt::test]
    async fn messages_are_decoded_across_chunks_and_fragments_put_together() {
        let whole = [
            frame(b"[2,\"1\",\"Heartbeat\",{}]", OpCode::Text, true),
            frame(b"[2,\"2\",", OpCode::Text, false),
            frame(b"ping", OpCode::Ping, true),
            frame(b"\"Heartbeat\",{}]", OpCode::Continue, true),
        ]
        .concat();
        // Split mid-frame: a chunk boundary is not a frame boundary.
        let chunks = vec![Bytes::copy_from_slice(&whole[..5]), Bytes::copy_from_slice(&whole[5..])];
        let (_outbox, stream) = stream_of(chunks, 1024);
        let got: Vec<_> = stream.map(|m| m.map_err(|e| e.to_string())).collect().await;
        assert_eq!(
            got,
            vec![
                Ok(Incoming::Text("[2,\"1\",\"Heartbeat\",{}]".into())),
                Ok(Incoming::Ping(Bytes::from_static(b"ping"))),
                Ok(Incoming::Text("[2,\"2\",\"Heartbeat\",{}]".into())),
            ]
        );
    }

    #[actix_rt::test]
    async fn fragments_adding_up_past_the_limit_end_the_stream() {
        let chunks = vec![frame(&[b'a'; 60], OpCode::Text, false), frame(&[b'b'; 60], OpCode::Continue, true)];
        let (_outbox, mut stream) = stream_of(chunks, 100);
        assert!(matches!(stream.next().await, Some(Err(ProtocolError::Overflow))));
        assert!(stream.next().await.is_none());
    }

    #[actix_rt::test]
    async fn a_fragmented_text_that_is_not_utf8_is_refused_as_such() {
        let chunks = vec![frame(&[b'[', 0xff], OpCode::Text, false), frame(&[0xfe, b']'], OpCode::Continue, true)];
        let (_outbox, mut stream) = stream_of(chunks, 100);
        let Some(Err(ProtocolError::Io(e))) = stream.next().await else { panic!("not UTF-8") };
        assert!(crate::limits::frames::is_invalid_utf8(&e));
    }

    #[actix_rt::test]
    async fn the_stream_ends_when_the_connection_is_gone() {
        let (_outbox, body, hangup) = writer::outbox(1024);
        let mut stream =
            StationStream::new(futures_util::stream::pending::<Result<Bytes, PayloadError>>(), hangup, 100);
        drop(body);
        assert!(stream.next().await.is_none());
    }
}
