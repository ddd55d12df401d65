//! A session's outgoing frames: a queue bounded in bytes that is itself the body of the
//! WebSocket's HTTP response.
//!
//! The session actor never waits on the socket: it puts frames in the [`Outbox`], and the
//! socket's writer (`socket::Pump`, on the session's own task) takes them, encoded, from the
//! [`OutboxBody`] whenever the socket has room. Nothing sits between the two — no task, no channel — so the queue of an idle
//! station holds no memory. A station that stops reading fills the kernel's buffers and then the
//! connection's write buffer, after which the connection takes nothing more: the session watches
//! [`Outbox::taken`], and a station that has taken nothing for `limits.slow_consumer_secs` while
//! frames wait is a slow consumer. Meanwhile the session keeps queueing, up to
//! `limits.outbound_queue_bytes`: one more frame is refused ([`Overflow`]) and the station is a
//! slow consumer too. Pings and pongs never pile up: one of each waits at most.
//!
//! Session and connection run on the same thread (the arbiter that accepted the connection), so
//! the queue is shared without locks.

use actix_http::body::{BodySize, MessageBody};
use actix_http::ws::{CloseReason, OpCode, Parser};
use actix_web::web::{Bytes, BytesMut};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// What the connection sends on the socket.
enum Outbound {
    Text(String),
    Ping,
    Pong(Bytes),
    Close(CloseReason),
}

/// A control frame's payload is at most 125 bytes (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// The most the connection takes from the queue at once, encoded.
const MAX_CHUNK: usize = 64 * 1024;

impl Outbound {
    /// What the frame weighs in the queue: its payload and a header.
    fn weight(&self) -> usize {
        const HEADER: usize = 14;
        HEADER
            + match self {
                Outbound::Text(t) => t.len(),
                Outbound::Ping => 0,
                Outbound::Pong(b) => b.len(),
                Outbound::Close(_) => 125,
            }
    }

    /// Appends the frame as it goes on the wire (a server's frames are not masked).
    fn encode(self, dst: &mut BytesMut) {
        match self {
            Outbound::Text(text) => Parser::write_message(dst, text, OpCode::Text, true, false),
            Outbound::Ping => Parser::write_message(dst, b"", OpCode::Ping, true, false),
            Outbound::Pong(payload) => {
                let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
                Parser::write_message(dst, payload, OpCode::Pong, true, false)
            }
            Outbound::Close(reason) => Parser::write_close(dst, Some(reason), false),
        }
    }
}

/// The node-wide gauge of queued bytes, its handle looked up once (a lookup per frame would cost
/// more than the frame).
fn queued_gauge() -> &'static metrics::Gauge {
    static GAUGE: std::sync::OnceLock<metrics::Gauge> = std::sync::OnceLock::new();
    GAUGE.get_or_init(|| metrics::gauge!(crate::metrics::OUTBOUND_QUEUED_BYTES))
}

#[derive(Default)]
struct Shared {
    frames: RefCell<VecDeque<Outbound>>,
    /// Bytes queued and not yet taken by the connection.
    queued: Cell<usize>,
    /// Frames the connection has taken so far.
    taken: Cell<u64>,
    ping_waiting: Cell<bool>,
    pong_waiting: Cell<bool>,
    /// A close frame is queued: nothing is queued after it.
    closing: Cell<bool>,
    /// The session is gone: once the queue is empty the connection ends.
    session_gone: Cell<bool>,
    /// The connection is gone (it dropped its body): nothing more will be written.
    connection_gone: Cell<bool>,
    /// The connection waiting for frames.
    body_waker: Cell<Option<Waker>>,
    /// The station's incoming messages waiting for bytes, told when the connection is gone.
    hangup_waker: Cell<Option<Waker>>,
}

impl Shared {
    fn hold(&self, weight: usize) {
        self.queued.set(self.queued.get() + weight);
        queued_gauge().increment(weight as f64);
    }

    fn release(&self, weight: usize) {
        self.queued.set(self.queued.get() - weight);
        queued_gauge().decrement(weight as f64);
    }

    fn wake(slot: &Cell<Option<Waker>>) {
        if let Some(waker) = slot.take() {
            waker.wake();
        }
    }

    /// Leaves `cx`'s waker in `slot`, for [`Shared::wake`].
    fn register(slot: &Cell<Option<Waker>>, cx: &Context<'_>) {
        let waker = cx.waker();
        match slot.take() {
            Some(w) if w.will_wake(waker) => slot.set(Some(w)),
            _ => slot.set(Some(waker.clone())),
        }
    }
}

/// The queue would pass its bound: the station is not reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    pub queued: usize,
}

/// The session's side of the queue.
pub struct Outbox {
    shared: Rc<Shared>,
    max_bytes: usize,
}

/// A queue of at most `max_bytes`; the body goes to the socket's writer, the hangup to the
/// stream of the station's messages.
pub fn outbox(max_bytes: usize) -> (Outbox, OutboxBody, Hangup) {
    let shared = Rc::new(Shared::default());
    let body = OutboxBody { shared: shared.clone(), ended: false };
    let hangup = Hangup { shared: shared.clone() };
    (Outbox { shared, max_bytes }, body, hangup)
}

impl Outbox {
    fn push(&self, frame: Outbound, bounded: bool) -> Result<(), Overflow> {
        let s = &*self.shared;
        // Nothing more is written after a close frame or once the connection is gone.
        if s.closing.get() || s.connection_gone.get() {
            return Ok(());
        }
        let weight = frame.weight();
        let queued = s.queued.get();
        // One frame always fits an empty queue, however large (a command the API accepted).
        if bounded && queued > 0 && queued + weight > self.max_bytes {
            return Err(Overflow { queued });
        }
        if matches!(frame, Outbound::Close(_)) {
            s.closing.set(true);
        }
        s.hold(weight);
        s.frames.borrow_mut().push_back(frame);
        // No wake-up: the session, whose task also writes the socket, writes what it queued
        // itself (`Pump::write_now`) — a wake-up would poll the whole session once more.
        Ok(())
    }

    pub fn text(&self, text: String) -> Result<(), Overflow> {
        self.push(Outbound::Text(text), true)
    }

    /// Queues a ping unless one is still waiting.
    pub fn ping(&self) -> Result<(), Overflow> {
        if self.shared.ping_waiting.replace(true) {
            return Ok(());
        }
        self.push(Outbound::Ping, true)
    }

    /// Queues the answer to a station's ping unless an answer is still waiting (answering the
    /// latest of several pings with one pong is what RFC 6455 §5.5.3 allows).
    pub fn pong(&self, payload: Bytes) -> Result<(), Overflow> {
        if self.shared.pong_waiting.replace(true) {
            return Ok(());
        }
        self.push(Outbound::Pong(payload), true)
    }

    /// Queues the close frame, after which the connection's body ends. It goes whatever the bound.
    pub fn close(&self, reason: CloseReason) {
        let _always_fits = self.push(Outbound::Close(reason), false);
    }

    /// Bytes waiting.
    pub fn queued(&self) -> usize {
        self.shared.queued.get()
    }

    /// Frames the connection has taken so far: unchanged over a while with frames waiting, the
    /// station is not reading.
    pub fn taken(&self) -> u64 {
        self.shared.taken.get()
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // What is queued still goes (the close frame last); then the body ends.
        self.shared.session_gone.set(true);
        Shared::wake(&self.shared.body_waker);
    }
}

/// The queued frames, encoded, as the socket's writer takes them.
pub struct OutboxBody {
    shared: Rc<Shared>,
    ended: bool,
}

impl MessageBody for OutboxBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Infallible>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let s = &*this.shared;
        let mut frames = s.frames.borrow_mut();
        if frames.is_empty() && !s.session_gone.get() {
            Shared::register(&s.body_waker, cx);
            return Poll::Pending;
        }
        let mut buf = BytesMut::with_capacity(s.queued.get().clamp(16, MAX_CHUNK));
        while let Some(frame) = frames.pop_front() {
            s.release(frame.weight());
            s.taken.set(s.taken.get() + 1);
            match frame {
                Outbound::Ping => s.ping_waiting.set(false),
                Outbound::Pong(_) => s.pong_waiting.set(false),
                Outbound::Close(_) => this.ended = true,
                Outbound::Text(_) => {}
            }
            frame.encode(&mut buf);
            if this.ended || buf.len() >= MAX_CHUNK {
                break;
            }
        }
        if frames.is_empty() {
            // Drained: an idle station's queue holds no memory.
            *frames = VecDeque::new();
        }
        if frames.is_empty() && s.session_gone.get() && !this.ended {
            // The session ended without a close frame (it always sends one; this is a safeguard).
            this.ended = true;
            Parser::write_close(&mut buf, None, false);
        }
        Poll::Ready(Some(Ok(buf.freeze())))
    }
}

impl Drop for OutboxBody {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.connection_gone.set(true);
        // What is still queued will never be written: it leaves the count.
        for frame in s.frames.take() {
            s.release(frame.weight());
        }
        Shared::wake(&s.hangup_waker);
    }
}

/// Tells the stream of the station's messages that the connection is gone: the HTTP payload it
/// reads may then never end by itself.
pub struct Hangup {
    shared: Rc<Shared>,
}

impl Hangup {
    /// Whether the connection is gone; if not, `cx` is woken when it goes.
    pub fn poll_gone(&self, cx: &mut Context<'_>) -> bool {
        let s = &*self.shared;
        if s.connection_gone.get() {
            return true;
        }
        Shared::register(&s.hangup_waker, cx);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_http::ws::CloseCode;
    use futures_util::task::noop_waker;

    fn poll(body: &mut OutboxBody) -> Poll<Option<Bytes>> {
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        Pin::new(body).poll_next(&mut cx).map(|o| o.map(|r| r.unwrap_or_else(|never| match never {})))
    }

    fn close_reason() -> CloseReason {
        CloseReason { code: CloseCode::Policy, description: Some("bye".into()) }
    }

    #[test]
    fn frames_go_out_encoded_in_order_and_leave_the_count() {
        let (out, mut body, _hangup) = outbox(1024);
        assert!(poll(&mut body).is_pending(), "nothing queued, nothing to write");
        out.text("[2,\"1\",\"Heartbeat\",{}]".into()).unwrap();
        out.ping().unwrap();
        out.ping().unwrap();
        assert_eq!(out.queued(), 14 + 22 + 14, "the second ping waits behind the first, not beside it");
        let Poll::Ready(Some(bytes)) = poll(&mut body) else { panic!("frames were queued") };
        let mut expected = BytesMut::new();
        Parser::write_message(&mut expected, "[2,\"1\",\"Heartbeat\",{}]", OpCode::Text, true, false);
        Parser::write_message(&mut expected, b"", OpCode::Ping, true, false);
        assert_eq!(bytes, expected.freeze());
        assert_eq!((out.queued(), out.taken()), (0, 2));
        out.ping().unwrap();
        assert_eq!(out.queued(), 14, "taken, a ping may be queued again");
    }

    #[test]
    fn the_bound_refuses_a_frame_but_never_the_first_nor_the_close() {
        let (out, mut body, _hangup) = outbox(100);
        out.text("x".repeat(200)).unwrap();
        assert_eq!(out.text("y".into()), Err(Overflow { queued: 214 }));
        out.close(close_reason());
        assert!(out.text("after close".into()).is_ok() && out.queued() == 214 + 139, "nothing after the close");
        let Poll::Ready(Some(bytes)) = poll(&mut body) else { panic!("frames were queued") };
        assert_eq!(bytes.len(), 4 + 200 + 2 + 2 + 3, "the text, then the close frame");
        assert_eq!(poll(&mut body), Poll::Ready(None), "the body ends after the close frame");
    }

    #[test]
    fn a_dropped_session_ends_the_body_after_what_it_queued() {
        let (out, mut body, _hangup) = outbox(1024);
        out.text("last".into()).unwrap();
        drop(out);
        let Poll::Ready(Some(bytes)) = poll(&mut body) else { panic!("a frame was queued") };
        assert_eq!(&bytes[..], &[0x81, 4, b'l', b'a', b's', b't', 0x88, 0][..], "the text, then a bare close");
        assert_eq!(poll(&mut body), Poll::Ready(None));
    }

    #[test]
    fn a_gone_connection_drops_what_waits_and_tells_the_reader() {
        let (out, body, hangup) = outbox(1024);
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(!hangup.poll_gone(&mut cx));
        out.text("never written".into()).unwrap();
        drop(body);
        assert!(hangup.poll_gone(&mut cx));
        assert_eq!(out.queued(), 0, "nothing left counted");
        out.text("too late".into()).unwrap();
        assert_eq!(out.queued(), 0, "nothing is queued for a connection that is gone");
    }
}
