//! StationSession: the actor of one station's WebSocket connection.
//!
//! It consumes the actix-ws message stream, decodes each text frame ([`crate::ocpp::rpc`]), hands CALLs
//! to the version's handlers one at a time (a CALLRESULT goes out only once the handler's writes are
//! durable), and correlates the answers to the commands it sends. Central-system commands go out one
//! at a time, as OCPP-J asks: the next waits until the previous is answered or has timed out.
//! Outgoing frames are written by a small task fed through a channel, so the actor never waits on the
//! socket.

use super::account::{self, AccountRegistry, StationConnected, StationDisconnected, StationNotice};
use super::station_registry::{Register, StationRegistry, Unregister};
use super::{DisconnectReason, SessionId, StationKey};
use crate::metrics as m;
use crate::model::{Registration, StationChange};
use crate::ocpp::handler::{self, HandlerSettings, Notice, Reply, StationContext};
use crate::ocpp::rpc::{Call, CallError, ErrorCode, Frame};
use crate::ocpp::schema::{self, Direction};
use crate::ocpp::Version;
use crate::store::Store;
use actix::prelude::*;
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

/// Why a command got no CALLRESULT.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum CommandError {
    /// The station answered with a CALLERROR.
    CallError { code: String, description: String, details: Value },
    /// Sent, but no answer before the deadline.
    Timeout,
    /// Sent, but the session ended before the answer came.
    Disconnected,
    /// The deadline passed before the command's turn to be sent came.
    Expired,
    /// The session ended before the command was sent.
    NotSent,
}

/// The station's CALLRESULT payload, or why there is none.
pub type CommandResult = Result<Value, CommandError>;

/// Wait before queued-command delivery is tried again after the store could not be reached.
const DELIVERY_RETRY: Duration = Duration::from_secs(2);

/// Sends a command (a CSMS-initiated CALL) to the station. The payload must already be validated.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SendCommand {
    pub action: String,
    pub payload: Value,
    /// After this instant the command is not sent, or its answer no longer awaited.
    pub deadline: Instant,
    pub responder: oneshot::Sender<CommandResult>,
}

/// The station has new queued commands: deliver them if delivery has begun on this session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeliverQueued;

/// Closes the session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseSession {
    pub reason: DisconnectReason,
}

/// What the writer task sends on the socket.
enum Outbound {
    Text(String),
    Ping,
    Pong(actix_web::web::Bytes),
    Close(CloseReason),
}

/// Everything a session needs, given by the WebSocket endpoint.
pub struct SessionSetup {
    pub key: StationKey,
    pub version: Version,
    pub registration: Registration,
    pub store: Arc<dyn Store>,
    pub handler_settings: Arc<HandlerSettings>,
    pub stations: Addr<StationRegistry>,
    pub accounts: Addr<AccountRegistry>,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    /// How long a delivered queued command waits for its answer.
    pub command_timeout: Duration,
}

struct QueuedCommand {
    action: String,
    payload: Value,
    deadline: Instant,
    responder: oneshot::Sender<CommandResult>,
}

struct InFlight {
    unique_id: String,
    action: String,
    sent_at: Instant,
    responder: oneshot::Sender<CommandResult>,
    timer: SpawnHandle,
}

pub struct StationSession {
    id: SessionId,
    setup: SessionSetup,
    registration: Registration,
    out: mpsc::UnboundedSender<Outbound>,
    last_activity: Instant,
    /// When the station's last message arrived.
    last_heard: chrono::DateTime<chrono::Utc>,
    /// When the tenant's actor was last told this station is alive.
    last_reported: Instant,
    in_flight: Option<InFlight>,
    queue: VecDeque<QueuedCommand>,
    close_reason: Option<DisconnectReason>,
    /// The tenant's actor, once looked up.
    account: Option<Addr<super::AccountActor>>,
    /// The answers to the latest CALLs, by unique id: a repeated CALL is answered again from here
    /// and not applied twice.
    recent_replies: VecDeque<(String, String)>,
    /// Queued-command delivery: started after the first handled message of an accepted station.
    delivery: Delivery,
    /// Carries the station and session ids into every log line of this session.
    span: tracing::Span,
}

/// How often at most the tenant's actor hears that a station is alive when nothing else changed.
const LIVENESS_REPORT_EVERY: Duration = Duration::from_secs(5);

/// How many answered CALLs a session remembers for repeats: a station repeats the message it is
/// waiting on, so a few suffice, and at fleet scale every remembered reply costs memory per session.
const RECENT_REPLIES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    NotStarted,
    Running { again: bool },
    Idle,
}

impl StationSession {
    /// Starts the session actor on the current arbiter, consuming the station's message stream and
    /// writing through `ws`.
    pub fn start(
        setup: SessionSetup,
        ws: actix_ws::Session,
        stream: actix_ws::AggregatedMessageStream,
    ) -> Addr<StationSession> {
        let (out, rx) = mpsc::unbounded_channel();
        actix_rt::spawn(write_loop(ws, rx));
        StationSession::create(move |ctx| {
            ctx.add_stream(stream);
            let id = super::next_session_id();
            let span = tracing::info_span!("station_session", station = %setup.key, session = id, protocol = setup.version.subprotocol());
            StationSession {
                id,
                span,
                registration: setup.registration,
                setup,
                out,
                last_activity: Instant::now(),
                last_heard: chrono::Utc::now(),
                last_reported: Instant::now(),
                in_flight: None,
                queue: VecDeque::new(),
                close_reason: None,
                account: None,
                recent_replies: VecDeque::new(),
                delivery: Delivery::NotStarted,
            }
        })
    }

    fn send_frame(&self, frame: &Frame) {
        // A closed channel means the writer has ended with the connection; the stream's end stops us.
        let _ = self.out.send(Outbound::Text(frame.to_text()));
    }

    fn close(&mut self, reason: DisconnectReason, ctx: &mut Context<Self>) {
        if self.close_reason.is_some() {
            return;
        }
        self.close_reason = Some(reason);
        let (code, description) = match reason {
            DisconnectReason::Replaced => (CloseCode::Policy, "replaced by a newer connection"),
            DisconnectReason::Deleted => (CloseCode::Policy, "station removed or blocked"),
            DisconnectReason::IdleTimeout => (CloseCode::Away, "idle timeout"),
            DisconnectReason::ProtocolError => (CloseCode::Protocol, "protocol error"),
            DisconnectReason::FrameTooBig => (CloseCode::Size, "message too big"),
            DisconnectReason::Shutdown => (CloseCode::Restart, "server shutting down"),
            DisconnectReason::ClosedByStation => (CloseCode::Normal, "closed"),
        };
        let _ = self.out.send(Outbound::Close(CloseReason { code, description: Some(description.to_string()) }));
        ctx.stop();
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        match Frame::parse(text) {
            Ok(Frame::Call(call)) => self.on_call(call, ctx),
            Ok(Frame::CallResult(result)) => self.on_answer(&result.unique_id, Ok(result.payload), ctx),
            Ok(Frame::CallError(e)) => {
                let unique_id = e.unique_id.clone();
                let error = CommandError::CallError { code: e.code, description: e.description, details: e.details };
                self.on_answer(&unique_id, Err(error), ctx)
            }
            Err(e) => {
                tracing::debug!(station = %self.setup.key, code = %e.code, error = %e.description, "undecodable frame");
                metrics::counter!(m::MESSAGES, "action" => "unknown", "direction" => "in", "result" => "error")
                    .increment(1);
                self.reply_error(e.to_call_error(self.setup.version));
            }
        }
    }

    fn reply_error(&self, error: CallError) {
        metrics::counter!(m::CALL_ERRORS, "code" => error_code_label(&error.code)).increment(1);
        self.send_frame(&Frame::CallError(error));
    }

    /// Handles a station's CALL. `ctx.wait` holds every other event of this session until the reply
    /// is sent, so a station's messages are applied in the order it sent them.
    fn on_call(&mut self, call: Call, ctx: &mut Context<Self>) {
        if let Some((_, reply)) = self.recent_replies.iter().find(|(id, _)| *id == call.unique_id) {
            tracing::info!(station = %self.setup.key, unique_id = %call.unique_id, action = %call.action, "repeated CALL answered again, not applied");
            metrics::counter!(m::DUPLICATE_CALLS).increment(1);
            let _ = self.out.send(Outbound::Text(reply.clone()));
            return;
        }
        let started = Instant::now();
        let store = self.setup.store.clone();
        let settings = self.setup.handler_settings.clone();
        let key = self.setup.key.clone();
        let registration = self.registration;
        let version = self.setup.version;
        let fut = async move {
            let ctx = StationContext {
                version,
                store: store.as_ref(),
                account_id: &key.account_id,
                station_id: &key.station_id,
                registration,
                settings: &settings,
            };
            let reply = handler::handle_call(&ctx, &call).await;
            (call, reply)
        };
        let fut = fut.instrument(self.span.clone());
        ctx.wait(fut.into_actor(self).map(move |(call, reply), act, ctx| {
            let _enter = act.span.clone().entered();
            let action = action_label(&call.action);
            metrics::histogram!(m::CALL_DURATION, "action" => action).record(started.elapsed().as_secs_f64());
            match reply {
                Reply::Result { payload, notice } => {
                    metrics::counter!(m::MESSAGES, "action" => action, "direction" => "in", "result" => "ok")
                        .increment(1);
                    if let Some(Notice::Booted { registration }) = &notice {
                        act.registration = *registration;
                    }
                    let frame = Frame::CallResult(crate::ocpp::rpc::CallResult { unique_id: call.unique_id, payload });
                    act.remember_reply(&frame);
                    act.send_frame(&frame);
                    // A notice changes the tenant's live view and always goes; a message that only
                    // proves the station alive (most are heartbeats) is reported at most every few
                    // seconds, so a fleet's heartbeats do not each cost an actor message.
                    if notice.is_some() || act.last_reported.elapsed() >= LIVENESS_REPORT_EVERY {
                        act.last_reported = Instant::now();
                        let msg = StationNotice {
                            station_id: act.setup.key.station_id.clone(),
                            session_id: act.id,
                            notice,
                        };
                        act.tell_account(msg, ctx);
                    }
                    if act.registration == Registration::Accepted && act.delivery == Delivery::NotStarted {
                        act.start_delivery(ctx);
                    }
                }
                Reply::Error(error) => {
                    metrics::counter!(m::MESSAGES, "action" => action, "direction" => "in", "result" => "error")
                        .increment(1);
                    tracing::debug!(station = %act.setup.key, action = %call.action, code = %error.code, error = %error.description, "CALL refused");
                    // A storage failure is worth retrying with the same id; anything else would be refused again.
                    if error.code != ErrorCode::InternalError.as_str() {
                        act.remember_reply(&Frame::CallError(error.clone()));
                    }
                    act.reply_error(error);
                }
            }
        }));
    }

    fn remember_reply(&mut self, frame: &Frame) {
        if self.recent_replies.len() == RECENT_REPLIES {
            self.recent_replies.pop_front();
        }
        self.recent_replies.push_back((frame.unique_id().to_string(), frame.to_text()));
    }

    /// Runs queued-command delivery until the queue is empty; a nudge while it runs makes it look again.
    /// It runs as a task of its own, not on this actor's context, so that the records of a command in
    /// flight are still settled when the session ends.
    fn start_delivery(&mut self, ctx: &mut Context<Self>) {
        self.delivery = Delivery::Running { again: false };
        let run = super::delivery::deliver(
            self.setup.store.clone(),
            ctx.address(),
            self.setup.key.clone(),
            self.setup.version,
            self.setup.command_timeout,
        );
        let (session, key) = (ctx.address(), self.setup.key.clone());
        actix_rt::spawn(async move {
            let retry = match run.await {
                Ok(_) => false,
                // Cluster mode with Redis down: the queue is there again when Redis is.
                Err(e @ crate::store::StoreError::Unavailable(_)) => {
                    tracing::warn!(station = %key, error = %e, "queued commands cannot be read now; trying again shortly");
                    true
                }
                Err(e) => {
                    tracing::error!(station = %key, error = %e, "queued command delivery failed");
                    false
                }
            };
            session.do_send(DeliveryFinished);
            if retry {
                tokio::time::sleep(DELIVERY_RETRY).await;
                session.do_send(DeliverQueued);
            }
        });
    }

    /// Tells the tenant's actor. The address is cached after the first lookup, so a session's
    /// messages do not pass through the (global) account registry; a stopped actor is looked up again.
    fn tell_account<M>(&mut self, msg: M, ctx: &mut Context<Self>)
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        super::AccountActor: Handler<M>,
    {
        if let Some(addr) = self.account.as_ref().filter(|a| a.connected()) {
            addr.do_send(msg);
            return;
        }
        let accounts = self.setup.accounts.clone();
        let account_id = self.setup.key.account_id.clone();
        let lookup = async move {
            let addr = accounts.send(account::GetAccount { account_id: account_id.clone() }).await.ok()?;
            match addr.send(msg.clone()).await {
                Ok(_) => Some(addr),
                // Stopped between lookup and send: `tell` looks it up once more.
                Err(_) => {
                    account::tell(&accounts, &account_id, msg).await;
                    None
                }
            }
        };
        ctx.spawn(lookup.into_actor(self).map(|addr, act, _| {
            if addr.is_some() {
                act.account = addr;
            }
        }));
    }

    fn on_answer(&mut self, unique_id: &str, result: CommandResult, ctx: &mut Context<Self>) {
        match self.in_flight.take() {
            Some(flight) if flight.unique_id == unique_id => {
                ctx.cancel_future(flight.timer);
                metrics::gauge!(m::PENDING_COMMANDS).decrement(1.0);
                let action = action_label(&flight.action);
                metrics::histogram!(m::COMMAND_DURATION, "action" => action)
                    .record(flight.sent_at.elapsed().as_secs_f64());
                let label = if result.is_ok() { "ok" } else { "error" };
                metrics::counter!(m::MESSAGES, "action" => action, "direction" => "out", "result" => label)
                    .increment(1);
                if let Ok(payload) = &result {
                    if let Some(Err(v)) =
                        self.setup.version.schemas().validate(&flight.action, Direction::Response, payload)
                    {
                        tracing::warn!(station = %self.setup.key, action = %flight.action, violation = %v, "station answer does not match its schema");
                    }
                }
                let _ = flight.responder.send(result);
                self.send_next(ctx);
            }
            other => {
                self.in_flight = other;
                tracing::warn!(station = %self.setup.key, unique_id, "answer to no pending command ignored");
            }
        }
    }

    /// Sends the next queued command if none is in flight.
    fn send_next(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight.is_some() {
            return;
        }
        while let Some(cmd) = self.queue.pop_front() {
            let now = Instant::now();
            if cmd.responder.is_closed() {
                continue;
            }
            if cmd.deadline <= now {
                let _ = cmd.responder.send(Err(CommandError::Expired));
                continue;
            }
            let unique_id = uuid::Uuid::new_v4().simple().to_string();
            let call = Call { unique_id: unique_id.clone(), action: cmd.action.clone(), payload: cmd.payload };
            self.send_frame(&Frame::Call(call));
            let timer_id = unique_id.clone();
            let timer = ctx.run_later(cmd.deadline - now, move |act, ctx| act.on_timeout(&timer_id, ctx));
            metrics::gauge!(m::PENDING_COMMANDS).increment(1.0);
            self.in_flight =
                Some(InFlight { unique_id, action: cmd.action, sent_at: now, responder: cmd.responder, timer });
            return;
        }
    }

    fn on_timeout(&mut self, unique_id: &str, ctx: &mut Context<Self>) {
        if matches!(&self.in_flight, Some(f) if f.unique_id == unique_id) {
            if let Some(flight) = self.in_flight.take() {
                metrics::gauge!(m::PENDING_COMMANDS).decrement(1.0);
                let action = action_label(&flight.action);
                metrics::counter!(m::MESSAGES, "action" => action, "direction" => "out", "result" => "timeout")
                    .increment(1);
                tracing::info!(station = %self.setup.key, action = %flight.action, "command timed out");
                let _ = flight.responder.send(Err(CommandError::Timeout));
            }
            self.send_next(ctx);
        }
    }
}

impl Actor for StationSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let _enter = self.span.clone().entered();
        let protocol = self.setup.version.subprotocol();
        metrics::gauge!(m::CONNECTIONS, "protocol" => protocol).increment(1.0);
        metrics::counter!(m::CONNECTS).increment(1);
        tracing::info!(station = %self.setup.key, session = self.id, protocol, "station connected");
        self.setup.stations.do_send(Register {
            key: self.setup.key.clone(),
            session_id: self.id,
            version: self.setup.version,
            addr: ctx.address(),
        });
        let connected = StationConnected {
            station_id: self.setup.key.station_id.clone(),
            session_id: self.id,
            protocol: protocol.to_string(),
        };
        // Waited for, so the tenant's actor knows the station before any of its messages is handled.
        let accounts = self.setup.accounts.clone();
        let account_id = self.setup.key.account_id.clone();
        let announce = async move {
            let addr = accounts.send(account::GetAccount { account_id }).await.ok()?;
            addr.send(connected).await.ok()?;
            Some(addr)
        };
        ctx.wait(announce.into_actor(self).map(|addr, act, _| act.account = addr));
        let store = self.setup.store.clone();
        let key = self.setup.key.clone();
        actix_rt::spawn(async move {
            let change = StationChange::Protocol(protocol.to_string());
            let r = store.change_station(&key.account_id, &key.station_id, &change).await;
            if let Err(e) = r {
                tracing::warn!(station = %key, error = %e, "could not record the station's protocol");
            }
        });
        ctx.run_interval(self.setup.ping_interval, |act, ctx| {
            if act.last_activity.elapsed() >= act.setup.idle_timeout {
                tracing::info!(station = %act.setup.key, "no traffic within the idle timeout, closing");
                act.close(DisconnectReason::IdleTimeout, ctx);
            } else {
                let _ = act.out.send(Outbound::Ping);
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        let _enter = self.span.clone().entered();
        let reason = self.close_reason.unwrap_or(DisconnectReason::ClosedByStation);
        metrics::gauge!(m::CONNECTIONS, "protocol" => self.setup.version.subprotocol()).decrement(1.0);
        metrics::counter!(m::DISCONNECTS, "reason" => reason.as_str()).increment(1);
        tracing::info!(station = %self.setup.key, session = self.id, reason = reason.as_str(), "station disconnected");
        self.setup.stations.do_send(Unregister { key: self.setup.key.clone(), session_id: self.id });
        // The actor is stopping, so nothing can be spawned on its context any more.
        let disconnected = StationDisconnected { station_id: self.setup.key.station_id.clone(), session_id: self.id };
        match self.account.as_ref().filter(|a| a.connected()) {
            Some(addr) => addr.do_send(disconnected),
            None => {
                let accounts = self.setup.accounts.clone();
                let account_id = self.setup.key.account_id.clone();
                actix_rt::spawn(async move {
                    account::tell(&accounts, &account_id, disconnected).await;
                });
            }
        }
        if let Some(flight) = self.in_flight.take() {
            metrics::gauge!(m::PENDING_COMMANDS).decrement(1.0);
            let _ = flight.responder.send(Err(CommandError::Disconnected));
        }
        // Heartbeats write nothing; the last time the station was heard from is kept now.
        let (store, key, seen) = (self.setup.store.clone(), self.setup.key.clone(), self.last_heard);
        actix_rt::spawn(async move {
            let r = store.change_station(&key.account_id, &key.station_id, &StationChange::Seen(seen)).await;
            if let Err(e) = r {
                tracing::warn!(station = %key, error = %e, "could not record when the station was last seen");
            }
        });
        for cmd in self.queue.drain(..) {
            let _ = cmd.responder.send(Err(CommandError::NotSent));
        }
    }
}

impl StreamHandler<Result<AggregatedMessage, ProtocolError>> for StationSession {
    fn handle(&mut self, item: Result<AggregatedMessage, ProtocolError>, ctx: &mut Context<Self>) {
        let _enter = self.span.clone().entered();
        self.last_activity = Instant::now();
        if matches!(item, Ok(AggregatedMessage::Text(_))) {
            self.last_heard = chrono::Utc::now();
        }
        match item {
            Ok(AggregatedMessage::Text(text)) => self.on_text(&text, ctx),
            Ok(AggregatedMessage::Binary(_)) => {
                // OCPP-J is text only; the frame cannot be parsed for a unique id.
                self.reply_error(CallError::new(
                    self.setup.version,
                    crate::ocpp::rpc::UNKNOWN_UNIQUE_ID,
                    ErrorCode::FormationViolation,
                    "binary frames are not OCPP-J",
                ));
            }
            Ok(AggregatedMessage::Ping(bytes)) => {
                let _ = self.out.send(Outbound::Pong(bytes));
            }
            Ok(AggregatedMessage::Pong(_)) => {}
            Ok(AggregatedMessage::Close(reason)) => {
                tracing::debug!(station = %self.setup.key, ?reason, "station closed the connection");
                self.close(DisconnectReason::ClosedByStation, ctx);
            }
            Err(ProtocolError::Overflow) => {
                tracing::warn!(station = %self.setup.key, "message over the size limit, closing");
                self.close(DisconnectReason::FrameTooBig, ctx);
            }
            Err(ProtocolError::Io(e)) => {
                // The TCP connection dropped without a close frame: a station losing its network.
                tracing::debug!(station = %self.setup.key, error = %e, "connection dropped");
                self.close(DisconnectReason::ClosedByStation, ctx);
            }
            Err(e) => {
                tracing::warn!(station = %self.setup.key, error = %e, "WebSocket protocol error, closing");
                self.close(DisconnectReason::ProtocolError, ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<SendCommand> for StationSession {
    type Result = ();

    fn handle(&mut self, msg: SendCommand, ctx: &mut Context<Self>) {
        if self.close_reason.is_some() {
            let _ = msg.responder.send(Err(CommandError::NotSent));
            return;
        }
        self.queue.push_back(QueuedCommand {
            action: msg.action,
            payload: msg.payload,
            deadline: msg.deadline,
            responder: msg.responder,
        });
        self.send_next(ctx);
    }
}

/// The delivery task has emptied the queue (or stopped on an error).
#[derive(Message)]
#[rtype(result = "()")]
struct DeliveryFinished;

impl Handler<DeliveryFinished> for StationSession {
    type Result = ();

    fn handle(&mut self, _: DeliveryFinished, ctx: &mut Context<Self>) {
        match self.delivery {
            Delivery::Running { again: true } if self.close_reason.is_none() => self.start_delivery(ctx),
            _ => self.delivery = Delivery::Idle,
        }
    }
}

impl Handler<DeliverQueued> for StationSession {
    type Result = ();

    fn handle(&mut self, _: DeliverQueued, ctx: &mut Context<Self>) {
        match self.delivery {
            // Not accepted or not heard from yet: delivery starts after its first message.
            Delivery::NotStarted => {}
            Delivery::Running { .. } => self.delivery = Delivery::Running { again: true },
            Delivery::Idle if self.close_reason.is_none() => self.start_delivery(ctx),
            Delivery::Idle => {}
        }
    }
}

impl Handler<CloseSession> for StationSession {
    type Result = ();

    fn handle(&mut self, msg: CloseSession, ctx: &mut Context<Self>) {
        self.close(msg.reason, ctx);
    }
}

async fn write_loop(mut ws: actix_ws::Session, mut rx: mpsc::UnboundedReceiver<Outbound>) {
    while let Some(out) = rx.recv().await {
        let sent = match out {
            Outbound::Text(text) => ws.text(text).await,
            Outbound::Ping => ws.ping(b"").await,
            Outbound::Pong(bytes) => ws.pong(&bytes).await,
            Outbound::Close(reason) => {
                let _ = ws.close(Some(reason)).await;
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
    // The actor is gone without an explicit close (it always sends one first; this is a safeguard).
    let _ = ws.close(None).await;
}

/// The action as a metric label: only actions OCPP defines, so station input cannot create unbounded
/// label values.
fn action_label(action: &str) -> &'static str {
    schema::V16_ACTIONS
        .iter()
        .chain(schema::V201_ACTIONS)
        .find(|(a, _, _)| *a == action)
        .map(|(a, _, _)| *a)
        .unwrap_or("unknown")
}

fn error_code_label(code: &str) -> &'static str {
    const CODES: &[&str] = &[
        "NotImplemented",
        "NotSupported",
        "InternalError",
        "ProtocolError",
        "SecurityError",
        "FormationViolation",
        "PropertyConstraintViolation",
        "OccurenceConstraintViolation",
        "TypeConstraintViolation",
        "GenericError",
        "FormatViolation",
        "OccurrenceConstraintViolation",
        "RpcFrameworkError",
        "MessageTypeNotSupported",
    ];
    CODES.iter().find(|c| **c == code).copied().unwrap_or("other")
}
