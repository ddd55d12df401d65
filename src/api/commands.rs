//! `POST /stations/{id}/commands/{Action}`: send an OCPP command to a connected station and wait for
//! its answer.

use super::{ApiError, Tenant};
use crate::actors::station_registry::Lookup;
use crate::actors::station_session::{CommandError, SendCommand};
use crate::actors::StationKey;
use crate::ocpp::schema::{self, Direction};
use crate::ocpp::v16::COMMAND_ACTIONS;
use crate::startup::AppState;
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};
use std::time::Instant;
use tokio::sync::oneshot;

/// "NotSupported" → "not_supported": the answer's status as a stable lower-case word.
fn snake(status: &str) -> String {
    let mut out = String::with_capacity(status.len() + 4);
    for (i, c) in status.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

pub async fn send(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    path: web::Path<(String, String)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let (station_id, action) = path.into_inner();
    if state
        .store
        .station(&account.id, &station_id)
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound(format!("no station {station_id}")));
    }
    if !COMMAND_ACTIONS.contains(&action.as_str()) {
        return Err(ApiError::NotFound(format!(
            "{action} is not an OCPP 1.6 command; commands are: {}",
            COMMAND_ACTIONS.join(", ")
        )));
    }
    let payload = body.into_inner();
    if let Some(Err(v)) = schema::v16().validate(&action, Direction::Request, &payload) {
        return Err(ApiError::InvalidPayload {
            message: format!("payload does not match the {action} schema: {v}"),
            ocpp_error: v.code.as_str().to_string(),
        });
    }
    let key = StationKey {
        account_id: account.id.clone(),
        station_id: station_id.clone(),
    };
    let session = state.stations.send(Lookup { key }).await?.ok_or_else(|| {
        ApiError::StationNotConnected(format!("station {station_id} is not connected"))
    })?;
    let timeout = state.settings.ocpp.command_timeout();
    let (responder, answer) = oneshot::channel();
    session
        .send(SendCommand {
            action: action.clone(),
            payload,
            deadline: Instant::now() + timeout,
            responder,
        })
        .await
        .map_err(|_| {
            ApiError::StationNotConnected(format!("station {station_id} is not connected"))
        })?;
    // The session answers Timeout itself at the deadline; the extra second only guards against a
    // session that vanished without answering.
    let result = tokio::time::timeout(timeout + std::time::Duration::from_secs(1), answer).await;
    let timed_out = || {
        ApiError::StationTimeout(format!(
            "station {station_id} did not answer {action} within {}s",
            timeout.as_secs()
        ))
    };
    match result {
        Err(_) => Err(timed_out()),
        Ok(Err(_)) => Err(ApiError::StationDisconnected(format!(
            "station {station_id} disconnected before answering"
        ))),
        Ok(Ok(Err(CommandError::Timeout))) => Err(timed_out()),
        Ok(Ok(Err(CommandError::Disconnected))) => Err(ApiError::StationDisconnected(format!(
            "station {station_id} disconnected before answering"
        ))),
        Ok(Ok(Err(CommandError::CallError {
            code,
            description,
            details,
        }))) => Err(ApiError::StationCallError {
            code,
            description,
            details,
        }),
        Ok(Ok(Ok(response))) => {
            let status = response
                .get("status")
                .and_then(Value::as_str)
                .map(snake)
                .unwrap_or_else(|| "answered".into());
            Ok(HttpResponse::Ok().json(json!({"status": status, "response": response})))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn statuses_become_snake_case() {
        assert_eq!(super::snake("Accepted"), "accepted");
        assert_eq!(super::snake("NotSupported"), "not_supported");
        assert_eq!(super::snake("RebootRequired"), "reboot_required");
    }
}
