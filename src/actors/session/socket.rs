//! A station's WebSocket on its HTTP connection: the upgrade response, whose body is the session's
//! [`Outbox`], and the station's messages, decoded from the connection's bytes and reassembled
//! from their fragments.
//!
//! Written on actix-http's WebSocket codec, without a channel or a task of its own between the
//! connection and the session: an idle station's connection holds the session's state and
//! nothing more (actix-ws puts a 32-slot channel and a task between them).

use super::writer::{self, Hangup, Outbox};
use actix_http::body::MessageBody as _;
use actix_http::error::PayloadError;
use actix_http::ws::{self, CloseReason, Codec, Frame, Item, ProtocolError};
use actix_web::http::header;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use bytestring::ByteString;
use futures_util::Stream;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A message from the station, its fragments (if any) put together.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(ByteString),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    Close(Option<CloseReason>),
}

/// Answers a WebSocket upgrade request: the response to send (naming `subprotocol` when given),
/// the queue of what the session sends, and the stream of what the station sends, read from
/// `payload`, no message larger than `max_message` bytes.
pub fn upgrade<S>(
    req: &HttpRequest,
    payload: S,
    subprotocol: Option<&'static str>,
    max_message: usize,
    max_queued: usize,
) -> Result<(HttpResponse, Outbox, StationStream<S>), actix_web::Error> {
    let mut response = ws::handshake(req.head())?;
    if let Some(subprotocol) = subprotocol {
        response.insert_header((header::SEC_WEBSOCKET_PROTOCOL, subprotocol));
    }
    let (outbox, body, hangup) = writer::outbox(max_queued);
    let stream = StationStream::new(payload, hangup, max_message);
    Ok((response.message_body(body.boxed())?.into(), outbox, stream))
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
