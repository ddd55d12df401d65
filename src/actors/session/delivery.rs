//! Delivery of the commands queued for a station while it was offline.
//!
//! Once a reconnected station is accepted and has sent its first message, its session runs
//! [`deliver`]: the queued commands go out one at a time, in the order they were queued, through the
//! session's ordinary command path, and each record follows: `sent`, then `answered`, `rejected`
//! (CALLERROR) or `unanswered`; a command past its expiry becomes `expired` without being sent. A
//! command the session could not send (it ended first) goes back to `queued` for the next connection.

use super::station_session::{CommandError, SendCommand, StationSession};
use super::StationKey;
use crate::metrics as m;
use crate::model::{CommandFailure, CommandRecord, CommandStatus};
use crate::ocpp::Version;
use crate::store::{Store, StoreResult};
use actix::Addr;
use chrono::Utc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Delivers the station's queued commands until none is left; returns how many were sent.
pub async fn deliver(
    store: Arc<dyn Store>,
    session: Addr<StationSession>,
    key: StationKey,
    version: Version,
    answer_timeout: Duration,
) -> StoreResult<usize> {
    let mut sent = 0;
    loop {
        let queued = store.queued_commands(&key.account_id, &key.station_id).await?;
        if queued.is_empty() {
            return Ok(sent);
        }
        for mut command in queued {
            if command.expires_at <= Utc::now() {
                command.status = CommandStatus::Expired;
                save(store.as_ref(), &command).await?;
                metrics::gauge!(m::QUEUED_COMMANDS).decrement(1.0);
                tracing::info!(station = %key, command = %command.id, "queued command expired unsent");
                continue;
            }
            if command.protocol != version.subprotocol() {
                // Validated for another version than the station now speaks: sending it would only
                // earn a CALLERROR, or worse, be misread.
                command.status = CommandStatus::Rejected;
                command.error = Some(CommandFailure {
                    code: "ProtocolMismatch".into(),
                    description: format!(
                        "queued for {}, but the station connected with {}",
                        command.protocol,
                        version.subprotocol()
                    ),
                });
                save(store.as_ref(), &command).await?;
                metrics::gauge!(m::QUEUED_COMMANDS).decrement(1.0);
                continue;
            }
            command.status = CommandStatus::Sent;
            command.sent_at = Some(Utc::now());
            save(store.as_ref(), &command).await?;
            metrics::gauge!(m::QUEUED_COMMANDS).decrement(1.0);
            let (responder, answer) = oneshot::channel();
            let send = SendCommand {
                action: command.action.clone(),
                payload: command.payload.clone(),
                deadline: Instant::now() + answer_timeout,
                responder,
            };
            let result = match session.send(send).await {
                Ok(()) => answer.await.unwrap_or(Err(CommandError::NotSent)),
                Err(_) => Err(CommandError::NotSent),
            };
            command.answered_at = Some(Utc::now());
            match result {
                Ok(response) => {
                    command.status = CommandStatus::Answered;
                    command.response = Some(response);
                }
                Err(CommandError::CallError { code, description, .. }) => {
                    command.status = CommandStatus::Rejected;
                    command.error = Some(CommandFailure { code, description });
                }
                Err(CommandError::Timeout) | Err(CommandError::Disconnected) => {
                    command.status = CommandStatus::Unanswered;
                }
                Err(CommandError::Expired) | Err(CommandError::NotSent) => {
                    // Never on the wire: it waits for the next connection.
                    command.status = CommandStatus::Queued;
                    command.sent_at = None;
                    command.answered_at = None;
                    save(store.as_ref(), &command).await?;
                    metrics::gauge!(m::QUEUED_COMMANDS).increment(1.0);
                    return Ok(sent);
                }
            }
            save(store.as_ref(), &command).await?;
            sent += 1;
            tracing::info!(station = %key, command = %command.id, action = %command.action, status = ?command.status, "queued command delivered");
        }
    }
}

async fn save(store: &dyn Store, command: &CommandRecord) -> StoreResult<()> {
    store.update_command(command).await?;
    store.flush().await
}
