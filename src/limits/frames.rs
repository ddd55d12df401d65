//! The size of a station's WebSocket messages, checked on the bytes as they arrive.
//!
//! actix's WebSocket codec compares a frame's length with its limit only once the whole frame is
//! in its buffer, and aggregates fragmented messages before comparing theirs: a header declaring
//! 2^40 bytes, or endless continuation frames, are buffered for as long as the bytes keep coming.
//! [`FrameGuard`] sits between the connection and the codec and reads only the frame headers
//! (RFC 6455 §5.2) as they pass: a data frame declaring more than the limit, or a fragmented
//! message whose frames add up to more, ends the stream with [`PayloadError::Overflow`] before any
//! of its payload is handed on. Payload bytes are counted, never copied.

use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Where the guard is in the byte stream.
#[derive(Debug)]
enum Position {
    /// Reading a frame header: the bytes seen so far (2 to 14 bytes long when complete).
    Header { bytes: [u8; 14], len: usize },
    /// Inside a frame's payload: this many bytes remain.
    Payload(u64),
}

/// Follows the frame headers of a client's WebSocket byte stream.
#[derive(Debug)]
pub struct FrameLimit {
    max: u64,
    position: Position,
    /// Payload bytes of the data message being received (all its frames so far).
    message: u64,
}

/// A frame header broke the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversized {
    /// Where, in the chunk given to [`FrameLimit::scan`], the offending frame's header starts
    /// (0 when it started in an earlier chunk).
    pub at: usize,
    /// The size the message would reach.
    pub size: u64,
}

impl FrameLimit {
    pub fn new(max: usize) -> Self {
        Self { max: max as u64, position: Position::Header { bytes: [0; 14], len: 0 }, message: 0 }
    }

    /// The header's full length once its first two bytes are known: 2, the extended length (0, 2 or 8
    /// bytes) and, for a masked (client) frame, the 4-byte key.
    fn header_len(first_two: [u8; 2]) -> usize {
        let ext = match first_two[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if first_two[1] & 0x80 != 0 { 4 } else { 0 };
        2 + ext + mask
    }

    /// Reads `chunk`, the next bytes of the stream. Malformed headers are left for the codec to
    /// refuse; only sizes are judged here.
    pub fn scan(&mut self, chunk: &[u8]) -> Result<(), Oversized> {
        let mut i = 0;
        while i < chunk.len() {
            match &mut self.position {
                Position::Payload(remaining) => {
                    let take = (*remaining).min((chunk.len() - i) as u64);
                    *remaining -= take;
                    i += take as usize;
                    if *remaining == 0 {
                        self.position = Position::Header { bytes: [0; 14], len: 0 };
                    }
                }
                Position::Header { bytes, len } => {
                    let header_start = i.saturating_sub(*len);
                    let need = if *len >= 2 { Self::header_len([bytes[0], bytes[1]]) } else { 2 };
                    let take = (need - *len).min(chunk.len() - i);
                    bytes[*len..*len + take].copy_from_slice(&chunk[i..i + take]);
                    *len += take;
                    i += take;
                    if *len < 2 || *len < Self::header_len([bytes[0], bytes[1]]) {
                        continue;
                    }
                    let opcode = bytes[0] & 0x0f;
                    let payload = match bytes[1] & 0x7f {
                        126 => u64::from(u16::from_be_bytes([bytes[2], bytes[3]])),
                        127 => u64::from_be_bytes([
                            bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7], bytes[8], bytes[9],
                        ]),
                        n => u64::from(n),
                    };
                    // Control frames (0x8..) may come between the fragments of a message; only data
                    // frames (continuation 0, text 1, binary 2) make it up.
                    if opcode < 0x8 {
                        if opcode != 0 {
                            self.message = 0;
                        }
                        self.message = self.message.saturating_add(payload);
                        if self.message > self.max {
                            return Err(Oversized { at: header_start, size: self.message });
                        }
                    }
                    self.position = if payload == 0 {
                        Position::Header { bytes: [0; 14], len: 0 }
                    } else {
                        Position::Payload(payload)
                    };
                }
            }
        }
        Ok(())
    }
}

/// A station connection's incoming bytes, ended with [`PayloadError::Overflow`] at the header of
/// the first frame that breaks [`FrameLimit`]. The bytes before that frame are still delivered,
/// so messages already complete are handled before the error.
pub struct FrameGuard<S> {
    inner: S,
    limit: FrameLimit,
    /// The refused frame's header was reached: once the bytes before it are delivered, the stream
    /// ends with the error.
    refused: Option<Refusal>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The bytes before the frame went out with the last poll; give the reader one turn to decode
    /// them before the error (the reader stops at the first error without decoding what it holds).
    Yielded,
    Due,
    Reported,
}

impl<S> FrameGuard<S> {
    pub fn new(inner: S, max_message_bytes: usize) -> Self {
        Self { inner, limit: FrameLimit::new(max_message_bytes), refused: None }
    }
}

impl<S> Stream for FrameGuard<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.refused {
            Some(Refusal::Yielded) => {
                this.refused = Some(Refusal::Due);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Some(Refusal::Due) => {
                this.refused = Some(Refusal::Reported);
                return Poll::Ready(Some(Err(PayloadError::Overflow)));
            }
            Some(Refusal::Reported) => return Poll::Ready(None),
            None => {}
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(mut chunk))) => match this.limit.scan(&chunk) {
                Ok(()) => Poll::Ready(Some(Ok(chunk))),
                Err(Oversized { at, .. }) => {
                    crate::limits::hit(crate::limits::Limit::FrameSize);
                    if at == 0 {
                        this.refused = Some(Refusal::Reported);
                        return Poll::Ready(Some(Err(PayloadError::Overflow)));
                    }
                    chunk.truncate(at);
                    this.refused = Some(Refusal::Yielded);
                    Poll::Ready(Some(Ok(chunk)))
                }
            },
            other => other,
        }
    }
}

/// Whether a WebSocket stream error is the guard's refusal (the reader wraps it in an I/O error).
pub fn is_oversized(error: &std::io::Error) -> bool {
    error.get_ref().and_then(|e| e.downcast_ref::<PayloadError>()).is_some_and(|e| matches!(e, PayloadError::Overflow))
}

/// Whether a WebSocket stream error is a text message that is not UTF-8.
pub fn is_invalid_utf8(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::InvalidData
        && error.get_ref().is_some_and(|e| e.downcast_ref::<std::str::Utf8Error>().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    /// A masked client frame header for `len` payload bytes.
    fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
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
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    fn frame(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let mut f = header(fin, opcode, len as u64);
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    #[test]
    fn a_header_declaring_too_much_is_refused_before_its_payload() {
        let mut limit = FrameLimit::new(1000);
        let mut bytes = frame(true, 1, 10);
        let at = bytes.len();
        bytes.extend(header(true, 1, 1 << 40));
        assert_eq!(limit.scan(&bytes), Err(Oversized { at, size: 1 << 40 }));
    }

    #[test]
    fn frames_within_the_limit_pass_in_any_split() {
        let mut stream = Vec::new();
        for len in [0, 1, 125, 126, 1000, 70_000] {
            stream.extend(frame(true, 1, len));
            stream.extend(frame(true, 0x9, 4)); // a ping between them
        }
        for split in [1, 2, 3, 7, 64, 4096, stream.len()] {
            let mut limit = FrameLimit::new(70_000);
            for chunk in stream.chunks(split) {
                assert_eq!(limit.scan(chunk), Ok(()), "split {split}");
            }
            assert!(matches!(limit.position, Position::Header { len: 0, .. }), "ends between frames");
        }
    }

    #[test]
    fn a_header_split_over_chunks_is_still_read() {
        let mut limit = FrameLimit::new(100);
        let h = header(true, 2, 5000);
        assert_eq!(limit.scan(&h[..3]), Ok(()));
        assert_eq!(limit.scan(&h[3..]), Err(Oversized { at: 0, size: 5000 }));
    }

    #[test]
    fn a_fragmented_message_counts_all_its_frames_and_not_the_control_frames_between() {
        let mut limit = FrameLimit::new(1000);
        let mut ok = frame(false, 1, 400);
        ok.extend(frame(true, 0xA, 100)); // a pong in between does not count
        ok.extend(frame(false, 0, 400));
        ok.extend(frame(true, 0, 200));
        assert_eq!(limit.scan(&ok), Ok(()), "exactly 1000");
        // A new message starts afresh.
        let mut over = frame(false, 1, 600);
        let at = over.len();
        over.extend(header(false, 0, 401));
        assert_eq!(limit.scan(&over), Err(Oversized { at, size: 1001 }));
    }

    #[tokio::test]
    async fn the_guard_delivers_what_came_before_the_refused_frame_then_the_error() {
        let good = frame(true, 1, 20);
        let mut chunk = good.clone();
        chunk.extend(header(true, 1, 1 << 40));
        chunk.extend([0u8; 100]);
        let source = futures_util::stream::iter(vec![Ok(Bytes::from(chunk)), Ok(Bytes::from_static(b"more"))]);
        let mut guard = FrameGuard::new(source, 1000);
        assert_eq!(guard.next().await.unwrap().unwrap(), Bytes::from(good));
        assert!(matches!(guard.next().await, Some(Err(PayloadError::Overflow))));
        assert!(guard.next().await.is_none(), "nothing after the refusal");
    }

    #[test]
    fn the_errors_are_recognised_through_the_readers_wrapping() {
        assert!(is_oversized(&std::io::Error::other(PayloadError::Overflow)));
        assert!(!is_oversized(&std::io::Error::other("other")));
        let bytes = vec![0xff, 0xfe];
        let utf8 = std::str::from_utf8(&bytes).unwrap_err();
        assert!(is_invalid_utf8(&std::io::Error::new(std::io::ErrorKind::InvalidData, utf8)));
        assert!(!is_invalid_utf8(&std::io::Error::new(std::io::ErrorKind::InvalidData, "reserved bits")));
    }
}
