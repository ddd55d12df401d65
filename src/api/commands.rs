//! `POST /stations/{id}/commands/{Action}`: send an OCPP command to a connected station and wait for
//! its answer.

use super::{ApiError, Tenant};
use crate::actors::StationKey;
use crate::fleet::{Command, CommandError, FleetError, Located};
use crate::ids::{AccountId, StationId};
use crate::model::{
    events, mask_password, password_answer, password_in_command, CommandRecord, CommandStatus, PasswordAnswer, Station,
};
use crate::ocpp::schema::Direction;
use crate::ocpp::Version;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

/// "NotSupported" → "not_supported": the answer's status as a stable lower-case word.
pub(crate) fn snake(status: &str) -> String {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandOptions {
    /// Queue the command when the station is offline instead of answering 409.
    #[serde(default)]
    queue: bool,
    /// Seconds a queued command waits for the station before it expires.
    expires_in: Option<u64>,
}

pub async fn send(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    path: web::Path<(StationId, String)>,
    options: web::Query<CommandOptions>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let (station_id, action) = path.into_inner();
    let target = Target::find(&state, &account.id, &station_id).await?;
    let queue = options.queue.then_some(options.expires_in);
    let sent = dispatch(&state, &target, &action, body.into_inner(), queue, None).await?;
    Ok(sent.respond())
}

/// A station the API sends commands to: its record, and where it is connected, if it is.
pub(crate) struct Target {
    pub key: StationKey,
    pub station: Station,
    pub live: Option<Located>,
}

impl Target {
    /// The tenant's station `station_id` (404 when it has none), located.
    pub async fn find(state: &AppState, account_id: &AccountId, station_id: &StationId) -> Result<Target, ApiError> {
        let Some(station) = state.account_store.station(account_id, station_id).await? else {
            return Err(ApiError::NotFound(format!("no station {station_id}")));
        };
        let key = StationKey { account_id: account_id.clone(), station_id: station_id.clone() };
        let live = state.fleet.locate(&key).await?;
        Ok(Target { key, station, live })
    }

    /// The version of the live connection; for an offline station, that of its last connection
    /// (1.6 for a station never connected).
    pub fn version(&self) -> Version {
        match &self.live {
            Some(at) => at.version,
            None => self.station.protocol.as_deref().and_then(Version::from_subprotocol).unwrap_or(Version::V16),
        }
    }

    /// 409 unless the station is connected.
    pub fn require_live(&self) -> Result<(), ApiError> {
        match self.live {
            Some(_) => Ok(()),
            None => Err(ApiError::StationNotConnected(format!("station {} is not connected", self.key.station_id))),
        }
    }
}

/// What became of a command the API sent.
pub(crate) enum Sent {
    /// The connected station answered with this CALLRESULT.
    Answered(Value),
    /// The station was offline: the command waits for it.
    Queued(Box<CommandRecord>),
}

impl Sent {
    /// 200 with the answer's status as a word and the answer; 202 with the queued command's id.
    pub fn respond(self) -> HttpResponse {
        match self {
            Sent::Answered(response) => {
                let status =
                    response.get("status").and_then(Value::as_str).map(snake).unwrap_or_else(|| "answered".into());
                HttpResponse::Ok().json(json!({"status": status, "response": response}))
            }
            Sent::Queued(command) => HttpResponse::Accepted()
                .insert_header((
                    actix_web::http::header::LOCATION,
                    format!("/api/v1/stations/{}/command-records/{}", command.station_id, command.id),
                ))
                .json(json!({"command_id": command.id, "status": command.status, "expires_at": command.expires_at})),
        }
    }
}

/// Sends `action` to the station and waits for its answer, or, when it is offline and `queue`
/// says so (with the queued command's lifetime, if not the default), queues it. Every command the
/// API sends goes through here: one that tells the station a new password
/// ([`password_in_command`]) records it as pending first and settles it with the answer
/// ([`super::credentials`]); `password_hash` is its hash when the caller made it (a generated
/// password), else it is hashed here as an operator-chosen one.
pub(crate) async fn dispatch(
    state: &AppState,
    target: &Target,
    action: &str,
    payload: Value,
    queue: Option<Option<u64>>,
    password_hash: Option<String>,
) -> Result<Sent, ApiError> {
    let version = target.version();
    let station_id = &target.key.station_id;
    let commands = version.command_actions();
    if !commands.contains(&action) {
        return Err(ApiError::NotFound(format!(
            "{action} is not an {} command; commands are: {}",
            version.subprotocol(),
            commands.join(", ")
        )));
    }
    if let Some(Err(v)) = version.schemas().validate(action, Direction::Request, &payload) {
        return Err(ApiError::InvalidPayload {
            message: format!("payload does not match the {} {action} schema: {v}", version.subprotocol()),
            ocpp_error: v.code.name(version).to_string(),
        });
    }
    let account_id = &target.key.account_id;
    match (&target.live, queue) {
        (None, None) => {
            return Err(ApiError::StationNotConnected(format!(
                "station {station_id} is not connected; add ?queue=true to deliver the command when it connects"
            )))
        }
        (None, Some(expires_in)) => {
            queue_ttl(state, expires_in)?;
        }
        (Some(_), _) => {}
    }
    // A command that tells the station a new password: recorded as pending before it goes out.
    let change_id = uuid::Uuid::new_v4().to_string();
    let rotation = match password_in_command(version, action, &payload) {
        Some(password) => {
            let hash = match password_hash {
                Some(hash) => hash,
                None => super::credentials::check_and_hash(state, password).await?,
            };
            super::credentials::propose(state, account_id, station_id, hash, &change_id).await?;
            true
        }
        None => false,
    };
    let Some(at) = &target.live else {
        let queued =
            enqueue(state, &target.key, version, action.to_string(), payload, queue.flatten(), change_id.clone()).await;
        return match queued {
            Ok(command) => Ok(Sent::Queued(Box::new(command))),
            Err(e) => {
                if rotation {
                    // Never queued: the password was never to be told.
                    super::credentials::settle(state, account_id, station_id, &change_id, PasswordAnswer::Rejected)
                        .await?;
                }
                Err(e)
            }
        };
    };
    let timeout = state.settings.ocpp.command_timeout();
    let command = Command { action: action.to_string(), payload, timeout };
    let sent = state.fleet.send_command(at, command).await;
    if rotation && sent.is_err() {
        // Not sent at all: the password was never told.
        super::credentials::settle(state, account_id, station_id, &change_id, PasswordAnswer::Rejected).await?;
    }
    let result = match sent {
        Ok(result) => result,
        Err(FleetError::NotConnected) => {
            return Err(ApiError::StationNotConnected(format!("station {station_id} is not connected")))
        }
        Err(e) => return Err(e.into()),
    };
    if rotation {
        // An error answer refuses the change, as does a command never sent; no answer (timeout,
        // lost connection) leaves it pending: the station may have taken it, and then connects
        // with it.
        let answer = match &result {
            Ok(response) => Some(password_answer(version, action, response)),
            // An error answer, or never on the wire.
            Err(CommandError::CallError { .. })
            | Err(CommandError::NotSent)
            | Err(CommandError::QueueFull)
            | Err(CommandError::Expired) => Some(PasswordAnswer::Rejected),
            Err(CommandError::Timeout) | Err(CommandError::Disconnected) => None,
        };
        if let Some(answer) = answer {
            super::credentials::settle(state, account_id, station_id, &change_id, answer).await?;
        }
    }
    let timed_out = || {
        ApiError::StationTimeout(format!("station {station_id} did not answer {action} within {}s", timeout.as_secs()))
    };
    let disconnected = || ApiError::StationDisconnected(format!("station {station_id} disconnected before answering"));
    let outcome = match &result {
        Ok(response) => Ok(response),
        Err(CommandError::CallError { code, description, .. }) => Err((code.name(at.version), description.as_str())),
        Err(CommandError::Timeout) | Err(CommandError::Expired) => Err(("Timeout", "no answer in time")),
        Err(CommandError::Disconnected) | Err(CommandError::NotSent) => Err(("Disconnected", "disconnected first")),
        Err(CommandError::QueueFull) => Err(("QueueFull", "too many commands waiting")),
    };
    super::events::emit(state, account_id, events::direct_command(station_id, action, outcome)).await;
    match result {
        Err(CommandError::Timeout) | Err(CommandError::Expired) => Err(timed_out()),
        Err(CommandError::Disconnected) | Err(CommandError::NotSent) => Err(disconnected()),
        Err(CommandError::QueueFull) => Err(ApiError::RateLimited {
            retry_after: std::time::Duration::from_secs(1),
            message: format!("station {station_id} has too many commands waiting; try again shortly"),
        }),
        Err(CommandError::CallError { code, description, details }) => {
            Err(ApiError::StationCallError { code: code.name(at.version).to_string(), description, details })
        }
        Ok(response) => Ok(Sent::Answered(response)),
    }
}

/// How long a queued command waits: `expires_in`, or `commands.queue_ttl_secs`; at most a year.
fn queue_ttl(state: &AppState, expires_in: Option<u64>) -> Result<u64, ApiError> {
    let ttl = expires_in.unwrap_or(state.settings.commands.queue_ttl_secs);
    if ttl == 0 || ttl > 365 * 86400 {
        return Err(ApiError::invalid("invalid_query", "expires_in must be 1 to 31536000 seconds"));
    }
    Ok(ttl)
}

/// Queues a command for an offline station, under the id `id`.
async fn enqueue(
    state: &AppState,
    key: &StationKey,
    version: Version,
    action: String,
    payload: Value,
    expires_in: Option<u64>,
    id: String,
) -> Result<CommandRecord, ApiError> {
    let ttl = queue_ttl(state, expires_in)?;
    let now = chrono::Utc::now();
    let command = CommandRecord {
        id,
        protocol: version.subprotocol().to_string(),
        account_id: key.account_id.clone(),
        station_id: key.station_id.clone(),
        action,
        payload,
        status: CommandStatus::Queued,
        created_at: now,
        expires_at: now + chrono::Duration::seconds(ttl as i64),
        sent_at: None,
        answered_at: None,
        response: None,
        error: None,
    };
    state.account_store.enqueue_command(&command).await?;
    super::events::emit(state, &key.account_id, events::command(&command)).await;
    metrics::gauge!(crate::metrics::QUEUED_COMMANDS).increment(1.0);
    tracing::info!(station = %key, command = %command.id, action = %command.action, "command queued for an offline station");
    // The station may have connected since it was looked up: its session then delivers it now.
    state.fleet.nudge_delivery(key).await?;
    Ok(command)
}

/// `GET /stations/{id}/command-records/{command_id}`: a queued command's state and the station's answer.
pub async fn get(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    path: web::Path<(StationId, String)>,
) -> Result<HttpResponse, ApiError> {
    let (station_id, command_id) = path.into_inner();
    let command = state
        .account_store
        .command(&account.id, &station_id, &command_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no command {command_id} for station {station_id}")))?;
    Ok(HttpResponse::Ok().json(json!({
        "command_id": command.id,
        "station_id": command.station_id,
        "action": command.action,
        // A password a command carries is never shown again.
        "payload": Version::from_subprotocol(&command.protocol)
            .and_then(|v| mask_password(v, &command.action, &command.payload))
            .unwrap_or(command.payload),
        "status": command.status,
        "created_at": command.created_at,
        "expires_at": command.expires_at,
        "sent_at": command.sent_at,
        "answered_at": command.answered_at,
        "response": command.response,
        "error": command.error,
    })))
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
