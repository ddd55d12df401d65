//! Delivery of the commands queued for a station while it was offline.
//!
//! Once a reconnected station is accepted and has sent its first message, its session runs
//! [`deliver`]: the queued commands go out one at a time, in the order they were queued, through the
//! session's ordinary command path, and each record follows: `sent`, then `answered`, `rejected`
//! (CALLERROR) or `unanswered`; a command past its expiry becomes `expired` without being sent. A
//! command the session could not send (it ended first) goes back to `queued` for the next connection.

use super::messages::{SendCommand, ToSession};
use crate::actors::station::StationKey;
use crate::fleet::command::CommandError;
use crate::metrics as m;
use crate::model::{
    events, mask_password, password_answer, password_in_command, CommandFailure, CommandRecord, CommandStatus,
    PasswordAnswer, StationChange,
};
use crate::ocpp::Version;
use crate::store::{StationStore, StoreResult};
use actix::Recipient;
use chrono::Utc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Delivers the station's queued commands until none is left; returns how many were sent.
pub async fn deliver(
    store: Arc<dyn StationStore>,
    session: Recipient<ToSession>,
    key: StationKey,
    version: Version,
    answer_timeout: Duration,
    password_grace_secs: u64,
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
            let result = match session.send(ToSession::Command(send)).await {
                Ok(()) => answer.await.unwrap_or(Err(CommandError::NotSent)),
                Err(_) => Err(CommandError::NotSent),
            };
            command.answered_at = Some(Utc::now());
            if password_in_command(version, &command.action, &command.payload).is_some() {
                settle_password(store.as_ref(), &command, version, &result, password_grace_secs).await?;
                // Told; not to be shown again.
                if let Some(masked) = mask_password(version, &command.action, &command.payload) {
                    command.payload = masked;
                }
            }
            match result {
                Ok(response) => {
                    command.status = CommandStatus::Answered;
                    command.response = Some(response);
                }
                Err(CommandError::CallError { code, description, .. }) => {
                    command.status = CommandStatus::Rejected;
                    command.error = Some(CommandFailure { code: code.name(version).to_string(), description });
                }
                Err(CommandError::Timeout) | Err(CommandError::Disconnected) => {
                    command.status = CommandStatus::Unanswered;
                }
                Err(CommandError::Expired) | Err(CommandError::NotSent) | Err(CommandError::QueueFull) => {
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

/// The station answered a queued command that told it a new password: the change is settled as
/// the model says (no answer at all leaves it pending: the station may have taken it).
async fn settle_password(
    store: &dyn StationStore,
    command: &CommandRecord,
    version: Version,
    result: &Result<serde_json::Value, CommandError>,
    grace_secs: u64,
) -> StoreResult<()> {
    let accepted = match result {
        Ok(response) => password_answer(version, &command.action, response) == PasswordAnswer::Accepted,
        Err(CommandError::CallError { .. }) => false,
        Err(_) => return Ok(()),
    };
    let change =
        StationChange::PasswordAnswered { change_id: command.id.clone(), accepted, at: Utc::now(), grace_secs };
    store.change_station(&command.account_id, &command.station_id, &change).await?;
    let outcome = if accepted { "accepted" } else { "rejected" };
    let feed = [events::password_changed(&command.station_id, outcome, &command.id)];
    store.append_feed(&command.account_id, &feed).await?;
    m::feed_emitted(&feed);
    Ok(())
}

/// Keeps the command's new state, tells the tenant's feed, and makes both durable.
async fn save(store: &dyn StationStore, command: &CommandRecord) -> StoreResult<()> {
    store.update_command(command).await?;
    let feed = [events::command(command)];
    store.append_feed(&command.account_id, &feed).await?;
    m::feed_emitted(&feed);
    store.flush().await
}

/// Where a session's queued-command delivery is: it starts after the first handled message of an
/// accepted station, runs as a task of its own, and runs again when nudged while it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    NotStarted,
    Running { again: bool },
    Idle,
}

impl Delivery {
    /// A message was handled: answers whether delivery starts now.
    pub fn handled(&mut self, accepted: bool) -> bool {
        self.start_if(accepted && *self == Delivery::NotStarted)
    }

    /// New commands were queued: answers whether delivery starts now (else a running one looks
    /// again when it is done; one not started yet starts after the station's first message).
    pub fn nudged(&mut self, open: bool) -> bool {
        match *self {
            Delivery::NotStarted => false,
            Delivery::Running { .. } => {
                *self = Delivery::Running { again: true };
                false
            }
            Delivery::Idle => self.start_if(open),
        }
    }

    /// The delivery task is done: answers whether it starts again.
    pub fn finished(&mut self, open: bool) -> bool {
        let again = matches!(*self, Delivery::Running { again: true }) && open;
        *self = Delivery::Idle;
        self.start_if(again)
    }

    fn start_if(&mut self, start: bool) -> bool {
        if start {
            *self = Delivery::Running { again: false };
        }
        start
    }
}

#[cfg(test)]
mod tests {
    use super::Delivery;

    #[test]
    fn delivery_starts_once_accepted_and_runs_again_when_nudged_meanwhile() {
        let mut d = Delivery::NotStarted;
        assert!(!d.nudged(true), "not before the station's first message");
        assert!(!d.handled(false), "not for a station not accepted");
        assert!(d.handled(true));
        assert!(!d.handled(true), "once");
        assert!(!d.nudged(true), "running: it looks again when done");
        assert!(d.finished(true), "and so it runs again");
        assert!(!d.finished(true));
        assert_eq!(d, Delivery::Idle);
        assert!(d.nudged(true));
        assert!(!d.nudged(true));
        assert!(!d.finished(false), "a closed session does not run it again");
        assert!(!d.nudged(false));
    }
}
