//! Per HTTP request: the connection is busy from the request's start until its response is
//! written ([`Tracked`]), and the request body must arrive within `limits.body_timeout_secs`
//! ([`BodyDeadline`]: the extractor reading it then fails, and the API answers 408).

use super::connections::{Connection, RequestInFlight};
use super::{hit, Limit};
use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Payload, ServiceRequest};
use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::Stream;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// A request body that fails with a timed-out I/O error when it is not complete by its deadline.
pub struct BodyDeadline {
    inner: Payload,
    deadline: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl Stream for BodyDeadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.done = true;
                    hit(Limit::BodyTimeout);
                    let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "request body timed out");
                    Poll::Ready(Some(Err(PayloadError::Io(e))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// Whether a body error is [`BodyDeadline`]'s.
pub fn is_body_timeout(e: &PayloadError) -> bool {
    matches!(e, PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

/// Called as a request enters the application: marks its connection busy, and gives an API
/// request's body its deadline (a station's WebSocket stream is not a body: its session bounds it).
pub fn begin(req: &mut ServiceRequest, body_timeout: Duration) -> Option<RequestInFlight> {
    let in_flight = req.conn_data::<std::rc::Rc<Connection>>().map(|c| c.request());
    if !req.path().starts_with("/ocpp/") {
        let (_, payload) = req.parts_mut();
        if !matches!(payload, Payload::None) {
            let inner = std::mem::replace(payload, Payload::None);
            let deadline = Box::pin(tokio::time::sleep(body_timeout));
            *payload = Payload::Stream { payload: Box::pin(BodyDeadline { inner, deadline, done: false }) };
        }
    }
    in_flight
}

/// The refusal delay left, when the request came on a connection held over its address's limit.
pub fn held_refusal(req: &ServiceRequest) -> Option<Duration> {
    req.conn_data::<std::rc::Rc<Connection>>().filter(|c| c.refused()).map(|c| c.refusal_delay())
}

/// The answer to a request on a held connection: 429, and the connection closed.
pub fn refusal() -> actix_web::HttpResponse {
    actix_web::HttpResponse::TooManyRequests()
        .insert_header((actix_web::http::header::RETRY_AFTER, "1"))
        .force_close()
        .json(serde_json::json!({
            "code": "too_many_connections",
            "message": "too many connections from this address",
        }))
}

/// A response body that keeps its request marked in flight until it is written (or dropped).
pub struct Tracked<B> {
    body: B,
    _in_flight: Option<RequestInFlight>,
}

impl<B> Tracked<B> {
    pub fn new(body: B, in_flight: Option<RequestInFlight>) -> Self {
        Self { body, _in_flight: in_flight }
    }
}

impl<B: MessageBody + Unpin> MessageBody for Tracked<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn a_body_that_stops_coming_fails_at_its_deadline() {
        let chunks =
            futures_util::stream::iter([Ok(Bytes::from_static(b"{\"half\":"))]).chain(futures_util::stream::pending());
        let mut body = BodyDeadline {
            inner: Payload::Stream { payload: Box::pin(chunks) },
            deadline: Box::pin(tokio::time::sleep(Duration::from_millis(50))),
            done: false,
        };
        assert_eq!(body.next().await.unwrap().unwrap(), Bytes::from_static(b"{\"half\":"));
        let started = std::time::Instant::now();
        let err = body.next().await.unwrap().unwrap_err();
        assert!(is_body_timeout(&err), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(body.next().await.is_none());
    }
}
