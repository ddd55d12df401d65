//! The API's one error type: every failure answers a stable JSON body `{code, message}` (plus
//! `details` where there is more to say) with the status its kind maps to.

use crate::store::StoreError;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};
use std::fmt;
use std::time::Duration;

#[derive(Debug)]
pub enum ApiError {
    /// The request is malformed or a field is invalid.
    Invalid { code: &'static str, message: String },
    /// A command payload does not match its OCPP schema.
    InvalidPayload { message: String, ocpp_error: String },
    /// Missing, unknown or expired bearer token, or wrong credentials.
    Unauthorized(String),
    /// A signed-in request that must re-authenticate gave the wrong password.
    InvalidCredentials(String),
    /// A correct password from a location the account has never signed in from: a one-time code was
    /// sent, and `POST /sessions/confirm` with it and this challenge finishes the sign-in.
    NewLocation { challenge_id: String, expires_at: chrono::DateTime<chrono::Utc> },
    /// Too many failed attempts: try again after this long.
    TooManyAttempts { retry_after: Duration },
    /// Too many requests of a kind (sign-ups from one address, say): try again after this long.
    RateLimited { retry_after: Duration, message: String },
    /// A quota of the account is used up (its stations, say).
    QuotaExceeded { message: String, limit: usize },
    /// The request's body did not arrive in time.
    RequestTimeout,
    /// The request's body is larger than the API takes (`limits.api_body_bytes`).
    BodyTooLarge { limit: usize },
    /// The resource does not exist (or belongs to another tenant).
    NotFound(String),
    /// A unique field is already taken.
    Conflict(String),
    /// The station has no live connection.
    StationNotConnected(String),
    /// The station answered the command with a CALLERROR.
    StationCallError { code: String, description: String, details: Value },
    /// The station did not answer in time.
    StationTimeout(String),
    /// The station connection ended before it answered.
    StationDisconnected(String),
    /// A service this request needs (in cluster mode: Redis, another node) cannot be reached now.
    Unavailable(String),
    /// Something broke on our side; the message is logged, not shown.
    Internal(String),
}

impl ApiError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Invalid { code, message: message.into() }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid { code, .. } => code,
            ApiError::InvalidPayload { .. } => "invalid_payload",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::InvalidCredentials(_) => "invalid_credentials",
            ApiError::NewLocation { .. } => "new_location",
            ApiError::TooManyAttempts { .. } => "too_many_attempts",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::QuotaExceeded { .. } => "quota_exceeded",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::StationNotConnected(_) => "station_not_connected",
            ApiError::StationCallError { .. } => "station_call_error",
            ApiError::StationTimeout(_) => "station_timeout",
            ApiError::StationDisconnected(_) => "station_disconnected",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::Invalid { message, .. }
            | ApiError::InvalidPayload { message, .. }
            | ApiError::Unauthorized(message)
            | ApiError::InvalidCredentials(message)
            | ApiError::NotFound(message)
            | ApiError::Conflict(message)
            | ApiError::StationNotConnected(message)
            | ApiError::StationTimeout(message)
            | ApiError::StationDisconnected(message)
            | ApiError::Unavailable(message)
            | ApiError::RateLimited { message, .. }
            | ApiError::QuotaExceeded { message, .. } => message.clone(),
            ApiError::RequestTimeout => "the request body did not arrive in time".to_string(),
            ApiError::BodyTooLarge { limit } => format!("the request body is larger than {limit} bytes"),
            ApiError::StationCallError { code, description, .. } => {
                format!("the station answered with CALLERROR {code}: {description}")
            }
            ApiError::NewLocation { .. } => {
                "sign-in from a new location: confirm it with the one-time code sent to the account holder".to_string()
            }
            ApiError::TooManyAttempts { retry_after } => {
                format!("too many failed attempts; try again in {} s", retry_seconds(*retry_after))
            }
            ApiError::Internal(_) => "internal error".to_string(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } | ApiError::InvalidPayload { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::InvalidCredentials(_) | ApiError::NewLocation { .. } | ApiError::QuotaExceeded { .. } => {
                StatusCode::FORBIDDEN
            }
            ApiError::TooManyAttempts { .. } | ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::StationNotConnected(_) => StatusCode::CONFLICT,
            ApiError::StationCallError { .. } | ApiError::StationDisconnected(_) => StatusCode::BAD_GATEWAY,
            ApiError::StationTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(detail) = self {
            tracing::error!(error = %detail, "internal error answering an API request");
        }
        let mut body = json!({"code": self.code(), "message": self.message()});
        match self {
            ApiError::InvalidPayload { ocpp_error, .. } => body["details"] = json!({"ocpp_error_code": ocpp_error}),
            ApiError::StationCallError { code, description, details } => {
                body["details"] =
                    json!({"error_code": code, "error_description": description, "error_details": details})
            }
            ApiError::NewLocation { challenge_id, expires_at } => {
                body["details"] = json!({"challenge_id": challenge_id, "expires_at": expires_at})
            }
            ApiError::TooManyAttempts { retry_after } | ApiError::RateLimited { retry_after, .. } => {
                body["details"] = json!({"retry_after_secs": retry_seconds(*retry_after)})
            }
            ApiError::QuotaExceeded { limit, .. } | ApiError::BodyTooLarge { limit } => {
                body["details"] = json!({"limit": limit})
            }
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized(_) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::TooManyAttempts { retry_after } | ApiError::RateLimited { retry_after, .. } => {
                response.insert_header((header::RETRY_AFTER, retry_seconds(*retry_after).to_string()));
            }
            // The rest of the body may never come, or is not read: the connection cannot carry
            // another request.
            ApiError::RequestTimeout | ApiError::BodyTooLarge { .. } => {
                response.force_close();
            }
            ApiError::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            _ => {}
        }
        response.json(body)
    }
}

/// Whole seconds, rounded up, so a client waiting this long is not refused again.
fn retry_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(field) => ApiError::Conflict(format!("{field} is already taken")),
            StoreError::Backend(cause) => ApiError::Internal(cause.to_string()),
            StoreError::Unavailable(cause) => ApiError::Unavailable(cause.to_string()),
        }
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        ApiError::Internal(format!("actor mailbox: {e}"))
    }
}

impl From<crate::fleet::FleetError> for ApiError {
    fn from(e: crate::fleet::FleetError) -> Self {
        use crate::fleet::FleetError;
        match e {
            FleetError::NotConnected => ApiError::StationNotConnected(e.to_string()),
            FleetError::Registry(e) => e.into(),
            FleetError::Presence(_) | FleetError::Node { .. } => ApiError::Unavailable(e.to_string()),
        }
    }
}
