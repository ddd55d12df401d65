//! What wraps every request (API and station upgrades alike): the refusal of a connection held over
//! its address's limit, the body deadline and busy-connection tracking ([`crate::limits::http`]),
//! a request id in a span around the handling and in the `x-request-id` header (the caller's own,
//! when it sent a usable one), the slow 429, and the request counter by status class (API requests
//! only: not station upgrades, health probes or metrics scrapes).

use crate::limits;
use crate::metrics as m;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use std::future::Future;
use std::time::{Duration, Instant};
use tracing::Instrument;

const REQUEST_ID: &str = "x-request-id";

/// Longest `x-request-id` taken from a caller.
const MAX_REQUEST_ID: usize = 64;

/// A caller's request id is kept when it is short and made of safe characters (it goes into every
/// log line of the request and back in the response); otherwise the request gets a new one.
fn usable_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The `method` label: the methods the API has, and `other` for any a client may invent.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Registers the request counter of every status class at zero, so that a fresh node already
/// exports it.
pub fn register_metrics() {
    for class in ["2xx", "3xx", "4xx", "5xx"] {
        metrics::counter!(m::API_REQUESTS, "status" => class).increment(0);
    }
}

/// The middleware's settings.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// How long an API body may take to arrive.
    pub body_timeout: Duration,
    /// How long a 429 waits before it is sent.
    pub refusal_delay: Duration,
}

/// Handles one request around the service `srv` (for `App::wrap_fn`).
pub fn around<S, B>(
    limits: RequestLimits,
    mut req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse<EitherBody<limits::http::Tracked<B>>>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    // A connection held over its address's limit is never served: its request is refused once the
    // refusal delay is over (or the connection reset first).
    let held = limits::http::held_refusal(&req);
    // The connection is busy until the response is written; an API body has a deadline.
    let in_flight = limits::http::begin(&mut req, limits.body_timeout);
    // Every request gets an id, in a span around its handling (so in every log line it causes) and
    // in the `x-request-id` response header.
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| usable_request_id(id))
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_string);
    let span = tracing::info_span!("request", request_id = %request_id, method = %req.method(), path = %req.path());
    // A health probe or a metrics scrape every few seconds would otherwise be most of what the
    // request counter counts.
    let counted = !(req.path().starts_with("/ocpp/") || crate::startup::PROBES.contains(&req.path()));
    let call = match held {
        None => Ok({
            let _enter = span.enter();
            srv.call(req)
        }),
        Some(delay) => Err((req, delay)),
    };
    let refusal_delay = limits.refusal_delay;
    async move {
        let mut res = match call {
            Ok(fut) => {
                let res = fut.await?;
                // A 429 is a refusal the client can repeat at will: it is slow.
                if res.status() == actix_web::http::StatusCode::TOO_MANY_REQUESTS {
                    tokio::time::sleep(refusal_delay).await;
                }
                res.map_body(|_, body| EitherBody::left(limits::http::Tracked::new(body, in_flight)))
            }
            Err((req, delay)) => {
                tokio::time::sleep(delay).await;
                req.into_response(limits::http::refusal()).map_into_right_body()
            }
        };
        let status = res.status();
        if counted {
            let class = match status.as_u16() {
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            };
            metrics::counter!(m::API_REQUESTS, "status" => class).increment(1);
            // By the route's template, never the path: a path holds ids, and any path can be asked.
            let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".to_string());
            let method = method_label(res.request().method());
            metrics::histogram!(m::API_REQUEST_DURATION, "route" => route, "method" => method, "status" => class)
                .record(started.elapsed().as_secs_f64());
        }
        if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&request_id) {
            res.headers_mut().insert(actix_web::http::header::HeaderName::from_static(REQUEST_ID), value);
        }
        tracing::debug!(status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
        Ok(res)
    }
    .instrument(span)
}
