//! A session's outgoing frames: a queue bounded in bytes, and the task that writes it to the socket.
//!
//! The session actor never waits on the socket: it puts frames in the [`Outbox`], and the writer
//! task hands them to the WebSocket one at a time. A station that stops reading its socket fills
//! the kernel's buffers and then the WebSocket's own small queue, and the writer's next hand-over
//! blocks; it may block for `limits.slow_consumer_secs`, after which the station is a slow
//! consumer. Meanwhile the session keeps queueing, up to `limits.outbound_queue_bytes`: one more
//! frame is refused ([`Overflow`]) and the station is a slow consumer too. Pings and pongs never
//! pile up: one of each waits at most.

use actix_web::web::Bytes;
use actix_ws::CloseReason;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What the writer task sends on the socket.
enum Outbound {
    Text(String),
    Ping,
    Pong(Bytes),
    Close(CloseReason),
}

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
}

/// The node-wide gauge of queued bytes, its handle looked up once (a lookup per frame would cost
/// more than the frame).
fn queued_gauge() -> &'static metrics::Gauge {
    static GAUGE: std::sync::OnceLock<metrics::Gauge> = std::sync::OnceLock::new();
    GAUGE.get_or_init(|| metrics::gauge!(crate::metrics::OUTBOUND_QUEUED_BYTES))
}

#[derive(Debug, Default)]
struct Shared {
    /// Bytes queued and not yet handed to the WebSocket.
    queued: AtomicUsize,
    ping_waiting: AtomicBool,
    pong_waiting: AtomicBool,
}

impl Shared {
    fn hold(&self, weight: usize) {
        self.queued.fetch_add(weight, Ordering::Relaxed);
        queued_gauge().increment(weight as f64);
    }

    fn release(&self, weight: usize) {
        self.queued.fetch_sub(weight, Ordering::Relaxed);
        queued_gauge().decrement(weight as f64);
    }
}

/// The queue would pass its bound: the station is not reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    pub queued: usize,
}

/// Why the writer task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterEnd {
    /// The session closed the connection, or the connection is gone.
    Closed,
    /// The socket took nothing for the slow-consumer time.
    Stuck,
}

/// The session's side of the queue.
pub struct Outbox {
    tx: mpsc::UnboundedSender<Outbound>,
    shared: Arc<Shared>,
    max_bytes: usize,
}

impl Outbox {
    /// A queue of at most `max_bytes` and its writer task, which ends (calling `on_end`) when the
    /// session closes or when the socket takes nothing for `stuck_after`.
    pub fn start(
        ws: actix_ws::Session,
        max_bytes: usize,
        stuck_after: Duration,
        on_end: impl FnOnce(WriterEnd) + 'static,
    ) -> Outbox {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let writer = write_loop(ws, rx, shared.clone(), stuck_after);
        actix_rt::spawn(async move { on_end(writer.await) });
        Outbox { tx, shared, max_bytes }
    }

    fn push(&self, frame: Outbound) -> Result<(), Overflow> {
        let weight = frame.weight();
        let queued = self.shared.queued.load(Ordering::Relaxed);
        // One frame always fits an empty queue, however large (a command the API accepted).
        if queued > 0 && queued + weight > self.max_bytes {
            return Err(Overflow { queued });
        }
        // A closed channel means the writer has ended with the connection (the stream's end stops
        // the session): nothing is queued then. The writer runs on this thread, so it cannot take
        // the frame before it is counted.
        if self.tx.send(frame).is_ok() {
            self.shared.hold(weight);
        }
        Ok(())
    }

    pub fn text(&self, text: String) -> Result<(), Overflow> {
        self.push(Outbound::Text(text))
    }

    /// Queues a ping unless one is still waiting.
    pub fn ping(&self) -> Result<(), Overflow> {
        if self.shared.ping_waiting.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        self.push(Outbound::Ping)
    }

    /// Queues the answer to a station's ping unless an answer is still waiting (answering the
    /// latest of several pings with one pong is what RFC 6455 §5.5.3 allows).
    pub fn pong(&self, payload: Bytes) -> Result<(), Overflow> {
        if self.shared.pong_waiting.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        self.push(Outbound::Pong(payload))
    }

    /// Queues the close frame, after which the writer ends. It goes whatever the bound.
    pub fn close(&self, reason: CloseReason) {
        let frame = Outbound::Close(reason);
        let weight = frame.weight();
        if self.tx.send(frame).is_ok() {
            self.shared.hold(weight);
        }
    }

    /// Bytes waiting.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }
}

async fn write_loop(
    ws: actix_ws::Session,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
    shared: Arc<Shared>,
    stuck_after: Duration,
) -> WriterEnd {
    let end = write_frames(ws, &mut rx, &shared, stuck_after).await;
    // What is still queued will never be written: it leaves the count, and nothing more comes in.
    rx.close();
    while let Ok(frame) = rx.try_recv() {
        shared.release(frame.weight());
    }
    end
}

async fn write_frames(
    mut ws: actix_ws::Session,
    rx: &mut mpsc::UnboundedReceiver<Outbound>,
    shared: &Shared,
    stuck_after: Duration,
) -> WriterEnd {
    while let Some(out) = rx.recv().await {
        let weight = out.weight();
        let sent = match out {
            Outbound::Text(text) => tokio::time::timeout(stuck_after, ws.text(text)).await,
            Outbound::Ping => {
                shared.ping_waiting.store(false, Ordering::Relaxed);
                tokio::time::timeout(stuck_after, ws.ping(b"")).await
            }
            Outbound::Pong(bytes) => {
                shared.pong_waiting.store(false, Ordering::Relaxed);
                tokio::time::timeout(stuck_after, ws.pong(&bytes)).await
            }
            Outbound::Close(reason) => {
                let _ = tokio::time::timeout(stuck_after, ws.close(Some(reason))).await;
                shared.release(weight);
                return WriterEnd::Closed;
            }
        };
        shared.release(weight);
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(_closed)) => return WriterEnd::Closed,
            Err(_elapsed) => return WriterEnd::Stuck,
        }
    }
    // The session is gone without an explicit close (it always sends one first; this is a safeguard).
    let _ = tokio::time::timeout(stuck_after, ws.close(None)).await;
    WriterEnd::Closed
}
