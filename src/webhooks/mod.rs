//! Webhooks: a tenant's events pushed as JSON to URLs the tenant registers. This module holds the
//! pieces that need no actor and no store: signing, the destination rules, the retry schedule, and
//! the HTTP sender.
//!
//! - [`sign`]: the signature headers, [`sign::sign`], the receiver's [`sign::verify`] and new secrets.
//! - [`ssrf`]: which URLs and addresses a delivery may reach, and the resolver that enforces it when
//!   connecting.
//! - [`backoff`]: the wait before each retry.
//! - [`client`]: the [`Sender`] that makes one signed POST and reports an [`Attempt`].
//!
//! # What a receiver checks
//!
//! Every delivery is a `POST` with `Content-Type: application/json` and three headers:
//!
//! | header | value |
//! | --- | --- |
//! | `Ocpp-Css-Event-Id` | the event's id; the same on every retry of that event, so duplicates can be dropped |
//! | `Ocpp-Css-Timestamp` | the unix time, in seconds, at which this attempt was signed |
//! | `Ocpp-Css-Signature` | `t=<timestamp>,v1=<signature>` |
//!
//! The signature is the lowercase hex HMAC-SHA256, keyed with the webhook's secret (the whole string,
//! `whsec_` included, as UTF-8 bytes), of the timestamp in decimal, a dot, and the request body exactly as
//! received: `HMAC-SHA256(secret, "<timestamp>.<body>")`. A receiver should:
//!
//! 1. read the raw body bytes before any JSON parsing (re-serialising changes them);
//! 2. take `t` and the `v1` values from the header (split on `,`, then on the first `=`), ignoring
//!    other fields: a future scheme may be sent alongside `v1`, and more than one `v1` may appear while
//!    a secret is being rotated;
//! 3. refuse the request if `t` is more than a few minutes (300 seconds is usual) from its own clock,
//!    so a captured request cannot be replayed later;
//! 4. compute the HMAC over `"<t>.<body>"` and compare it with each `v1` in constant time, accepting
//!    if one matches.
//!
//! [`sign::verify`] is that algorithm. A 2xx answer means the event was taken; anything else, a
//! redirect included, or no answer within the timeout, is retried later with [`backoff::retry_delay`].

pub mod backoff;
pub mod client;
pub mod dispatch;
pub mod sign;
pub mod ssrf;

pub use backoff::retry_delay;
pub use client::{Attempt, Sender};
pub use sign::{new_secret, verify, EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
pub use ssrf::{allowed_ip, check_url, GuardedResolver, UrlError};
