//! StationSession: the actor of one station's WebSocket connection, and its parts.
//!
//! The actor consumes the station's message stream ([`socket`]) and ties the parts together; each
//! part is a plain piece that knows nothing of actix contexts:
//! - [`inbound`]: the station's CALLs, handled one at a time (a CALLRESULT goes out only once the
//!   handler's writes are durable), and the replay cache that answers a repeated CALL again;
//! - [`outbound`]: the central system's commands, one on the wire at a time, as OCPP-J asks, each
//!   with its deadline, correlated with their answers by unique id;
//! - [`delivery`]: the commands queued while the station was offline, delivered once it is back;
//! - [`certificates`]: a certificate the station CA issued, sent to the station; renewal asked for
//!   before the station's certificate expires;
//! - [`socket`]: the WebSocket on the HTTP connection, the station's messages decoded;
//! - [`writer`]: the outgoing frames, bounded in bytes, so the actor never waits on the socket and a
//!   station that stops reading is cut off as a slow consumer;
//! - [`reporting`]: what the tenant's actor hears; [`labels`]: the bounded metric labels;
//!   [`messages`]: what the rest of the node sends a session.
//!
//! What a station sends is bounded too: a message rate (past it the session stops reading the
//! socket for a while), a replay cache bounded in bytes that answers only true repeats, and a
//! budget of warnings per interval ([`crate::limits`]).

pub mod certificates;
pub mod delivery;
pub mod inbound;
pub mod labels;
pub mod messages;
pub mod outbound;
pub mod reporting;
pub mod socket;
pub mod writer;

pub use messages::{CloseSession, DeliverQueued, SendCommand, ToSession};

use self::delivery::Delivery;
use self::inbound::{Fingerprint, ReplayCache};
use self::labels::error_code_label;
use self::outbound::{CommandQueue, Outgoing, Pending};
use self::reporting::TenantLink;
use self::socket::{Incoming, Pump};
use self::writer::{Outbox, Overflow};
use crate::actors::account::{AccountRegistry, LastHeard, StationConnected, StationDisconnected, StationNotice};
use crate::actors::station::{next_session_id, DisconnectReason, SessionId, StationKey};
use crate::actors::station_registry::{Register, SessionHandle, StationRegistry, Unregister};
use crate::actors::tracker::SessionGuard;
use crate::fleet::command::{CallErrorCode, CommandError, CommandResult};
use crate::limits::connections::ConnectionHandle;
use crate::limits::logs::LogBudget;
use crate::limits::quota::TokenBucket;
use crate::limits::{self, Limit, Limits};
use crate::metrics as m;
use crate::model::{events, EventDraft, Registration, StationChange};
use crate::ocpp::actions::Action;
use crate::ocpp::common::notice::Notice;
use crate::ocpp::context::{HandlerSettings, StationContext};
use crate::ocpp::handler::{self, Reply};
use crate::ocpp::rpc::{Call, CallError, ErrorCode, Frame};
use crate::ocpp::schema::Direction;
use crate::ocpp::Version;
use crate::store::StationStore;
use actix::prelude::*;
use actix_http::ws::{CloseCode, CloseReason, ProtocolError};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Wait before queued-command delivery is tried again after the store could not be reached.
const DELIVERY_RETRY: Duration = Duration::from_secs(2);

/// Everything a session needs, given by the WebSocket endpoint.
pub struct SessionSetup {
    pub key: StationKey,
    pub version: Version,
    pub registration: Registration,
    /// The station's record, read when it connected, names the protocol it connected with.
    pub protocol_recorded: bool,
    pub store: Arc<dyn StationStore>,
    pub handler_settings: Arc<HandlerSettings>,
    pub stations: Addr<StationRegistry>,
    pub accounts: Addr<AccountRegistry>,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    /// How long a delivered queued command waits for its answer.
    pub command_timeout: Duration,
    /// The node's limits: their settings, and the per-station quotas handlers charge.
    pub limits: Arc<Limits>,
    /// The connection under the session, to cut it off when the station misbehaves.
    pub connection: Option<ConnectionHandle>,
    /// The tenant's slug (a CSR's subject O must name it).
    pub tenant_slug: Arc<str>,
    /// When the certificate the station installed from the station CA expires, as its record said
    /// when it connected.
    pub certificate_expiry: Option<chrono::DateTime<chrono::Utc>>,
    /// Its record said the certificate is due for renewal: asked for once the station is accepted.
    pub renewal_due: bool,
}

pub struct StationSession {
    id: SessionId,
    setup: SessionSetup,
    registration: Registration,
    out: Outbox,
    /// Writes `out` to the socket; after the session, the task that writes what is left.
    pump: Option<Pump>,
    /// The slow-consumer watch is armed: frames wait for the connection to take them.
    watching_out: bool,
    last_activity: Instant,
    /// When the station's last message arrived (a data frame; a ping or pong is not a message),
    /// shared with the tenant's live view.
    heard: Arc<LastHeard>,
    /// The message that arrived last (`heard`) was recorded as the station's last sight in its
    /// record (a boot, a status): the session's end has no sight to record.
    sight_recorded: bool,
    /// The central system's commands, and the timer of the one on the wire.
    commands: CommandQueue,
    command_timer: Option<SpawnHandle>,
    close_reason: Option<DisconnectReason>,
    /// What the tenant's actor hears of this station.
    tenant: TenantLink,
    /// The answers to the latest CALLs: a repeated CALL is answered again from here and not
    /// applied twice.
    recent_replies: ReplayCache,
    /// The station's message rate.
    rate: TokenBucket,
    /// Warnings this session may still log in the current interval.
    warnings: LogBudget,
    /// Queued-command delivery: started after the first handled message of an accepted station.
    delivery: Delivery,
    /// Held until the session is gone, for those who asked to close it and wait.
    close_guards: Vec<SessionGuard>,
    /// Where the station's certificate stands in the expiry gauge.
    expiring: certificates::Expiring,
    /// Carries the station and session ids into every log line of this session.
    span: tracing::Span,
}

/// How long a closed session's connection may linger before it is reset: the station's part of the
/// closing handshake, when the session ended normally...
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// ...and when it ended because the station broke the protocol or a limit (the close frame has
/// been written by then; a peer still streaming is not read any further).
const CLOSE_GRACE_VIOLATION: Duration = Duration::from_secs(1);

/// How long the connection of a session closed for `reason` may linger (none: the station closed it).
fn close_grace(reason: Option<DisconnectReason>) -> Duration {
    match reason {
        Some(DisconnectReason::ProtocolError | DisconnectReason::FrameTooBig | DisconnectReason::InvalidUtf8) => {
            CLOSE_GRACE_VIOLATION
        }
        _ => CLOSE_GRACE,
    }
}

/// Registers the session metrics whose labels are known in advance at zero, so that a fresh node
/// already exports them (a dashboard's node list, an alert on their absence).
pub fn register_metrics() {
    for version in Version::ALL {
        metrics::gauge!(m::CONNECTIONS, "protocol" => version.subprotocol()).increment(0.0);
    }
    metrics::counter!(m::CONNECTS).increment(0);
    for reason in DisconnectReason::ALL {
        metrics::counter!(m::DISCONNECTS, "reason" => reason.as_str()).increment(0);
    }
    metrics::counter!(m::DUPLICATE_CALLS).increment(0);
    metrics::gauge!(m::PENDING_COMMANDS).increment(0.0);
    certificates::register_metrics();
    crate::ocpp::common::sign_certificate::register_metrics();
    let codes = Version::ALL.into_iter().flat_map(|v| ErrorCode::ALL.map(|c| c.name(v)));
    for code in codes.chain(std::iter::once("other")) {
        metrics::counter!(m::CALL_ERRORS, "code" => code).increment(0);
    }
}

/// The delivery task has emptied the queue (or stopped on an error).
#[derive(Message)]
#[rtype(result = "()")]
struct DeliveryFinished;

impl StationSession {
    /// Starts the session actor on the current arbiter, consuming the station's message stream and
    /// writing to `out` through `pump` (all three from [`socket::connect`]).
    pub fn start<S>(setup: SessionSetup, out: Outbox, stream: S, pump: Pump) -> Addr<StationSession>
    where
        S: futures_util::Stream<Item = Result<Incoming, ProtocolError>> + 'static,
    {
        StationSession::create(move |ctx| {
            ctx.add_stream(stream);
            // After the stream: a reply queued while a message is handled is written in the same turn.
            ctx.spawn(Pumping);
            let id = next_session_id();
            let span = tracing::info_span!("station_session", station = %setup.key, session = id, protocol = setup.version.subprotocol());
            let l = &setup.limits.settings;
            let recent_replies = ReplayCache::new(l.replay_cache_bytes);
            let rate = TokenBucket::new(l.station_messages_per_sec, l.station_message_burst);
            let warnings = LogBudget::new(l.session_warnings, Duration::from_secs(l.log_summary_secs));
            let commands = CommandQueue::new(l.waiting_commands);
            let tenant = TenantLink::new(setup.accounts.clone(), setup.key.account_id.clone());
            StationSession {
                id,
                span,
                registration: setup.registration,
                setup,
                out,
                pump: Some(pump),
                watching_out: false,
                recent_replies,
                rate,
                warnings,
                tenant,
                last_activity: Instant::now(),
                heard: LastHeard::new(Instant::now()),
                sight_recorded: false,
                commands,
                command_timer: None,
                close_reason: None,
                delivery: Delivery::NotStarted,
                close_guards: Vec::new(),
                expiring: certificates::Expiring::default(),
            }
        })
    }

    fn send_frame(&mut self, frame: &Frame, ctx: &mut Context<Self>) {
        self.send_text(frame.to_text(), ctx);
    }

    fn send_text(&mut self, text: String, ctx: &mut Context<Self>) {
        let queued = self.out.text(text);
        self.after_queueing(queued, ctx);
    }

    /// What follows putting a frame in the outbox: the slow-consumer watch, or, past the queue's
    /// bound, the end of a station that is not reading.
    fn after_queueing(&mut self, queued: Result<(), Overflow>, ctx: &mut Context<Self>) {
        match queued {
            Ok(()) => {
                if let Some(pump) = self.pump.as_mut() {
                    pump.write_now();
                }
                self.watch_out(ctx)
            }
            Err(overflow) => {
                if self.warnings.allow() {
                    tracing::warn!(station = %self.setup.key, queued = overflow.queued, "outgoing queue full: the station is not reading, cutting it off");
                }
                self.cut_off(Limit::OutboundQueue, ctx);
            }
        }
    }

    /// While frames wait, looks every `limits.slow_consumer_secs` whether the connection took any
    /// since the last look: a station that took none is not reading.
    fn watch_out(&mut self, ctx: &mut Context<Self>) {
        if self.watching_out || self.out.queued() == 0 || self.close_reason.is_some() {
            return;
        }
        self.watching_out = true;
        let taken = self.out.taken();
        ctx.run_later(self.setup.limits.settings.slow_consumer(), move |act, ctx| {
            act.watching_out = false;
            if act.out.queued() == 0 || act.close_reason.is_some() {
                return;
            }
            if act.out.taken() != taken {
                return act.watch_out(ctx);
            }
            let _enter = act.span.clone().entered();
            if act.warnings.allow() {
                tracing::warn!(station = %act.setup.key, queued = act.out.queued(), "the station took nothing it was sent for too long: slow consumer, cutting it off");
            }
            act.cut_off(Limit::SlowConsumer, ctx);
        });
    }

    /// Ends a session whose station is not reading: the close frame would wait behind everything
    /// else, so the connection is reset at once.
    fn cut_off(&mut self, limit: Limit, ctx: &mut Context<Self>) {
        let counted = self.setup.connection.as_ref().is_some_and(|c| c.abort(Some(limit)));
        if !counted {
            limits::hit(limit);
        }
        self.close(DisconnectReason::SlowConsumer, ctx);
    }

    /// A message the station may not send (too big, not UTF-8): the connection ends with the close
    /// code that says why.
    fn refuse_message(&mut self, reason: DisconnectReason, ctx: &mut Context<Self>) {
        if self.warnings.allow() {
            tracing::warn!(station = %self.setup.key, reason = reason.as_str(), "message refused, closing");
        }
        self.close(reason, ctx);
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
            DisconnectReason::InvalidUtf8 => (CloseCode::Invalid, "text message is not UTF-8"),
            DisconnectReason::SlowConsumer => (CloseCode::Policy, "not reading: slow consumer"),
            DisconnectReason::Shutdown => (CloseCode::Restart, "server shutting down"),
            DisconnectReason::ClosedByStation => (CloseCode::Normal, "closed"),
        };
        self.out.close(CloseReason { code, description: Some(description.to_string()) });
        // The connection goes with the session: a peer that does not finish the closing handshake
        // within the grace is reset (without lingering on what it has not read), whatever the
        // socket's last writer is still doing then.
        if let Some(connection) = self.setup.connection.clone() {
            let grace = close_grace(Some(reason));
            actix_rt::spawn(async move {
                tokio::time::sleep(grace).await;
                connection.abort(None);
            });
        }
        ctx.stop();
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        match Frame::parse(text) {
            Ok(Frame::Call(call)) => {
                // The action is looked up once, in this session's version. Only an answer to a CALL
                // that changes something is kept for a repeat, so only such a CALL can be a repeat
                // to answer from memory: the frame of any other is not even hashed.
                let declared = self.setup.version.action(&call.action);
                let fingerprint = declared.is_some_and(|a| a.durable()).then(|| self.recent_replies.fingerprint(text));
                self.on_call(call, declared, fingerprint, ctx)
            }
            Ok(Frame::CallResult(result)) => self.on_answer(&result.unique_id, Ok(result.payload), ctx),
            Ok(Frame::CallError(e)) => {
                let error = CommandError::from_call_error(e.code, e.description, e.details, self.setup.version);
                self.on_answer(&e.unique_id, Err(error), ctx)
            }
            Err(e) => {
                tracing::debug!(station = %self.setup.key, code = %e.code, error = %e.description, "undecodable frame");
                m::call_metrics("unknown").error().increment(1);
                self.reply_error(e.to_call_error(self.setup.version), ctx);
            }
        }
    }

    /// The code of a CALLERROR this session sends, typed.
    fn code_of(&self, error: &CallError) -> CallErrorCode {
        CallErrorCode::parse(&error.code, self.setup.version)
    }

    fn reply_error(&mut self, error: CallError, ctx: &mut Context<Self>) {
        let code = self.code_of(&error);
        metrics::counter!(m::CALL_ERRORS, "code" => error_code_label(&code, self.setup.version)).increment(1);
        self.send_frame(&Frame::CallError(error), ctx);
    }

    /// Handles a station's CALL (`declared`: its action in this session's version). `ctx.wait` holds
    /// every other event of this session until the reply is sent, so a station's messages are
    /// applied in the order it sent them. `fingerprint`: the frame's, when its answer is kept.
    fn on_call(
        &mut self,
        call: Call,
        declared: Option<&'static Action>,
        fingerprint: Option<Fingerprint>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(reply) = fingerprint.and_then(|f| self.recent_replies.answer(&call.unique_id, f)) {
            tracing::debug!(station = %self.setup.key, unique_id = %call.unique_id, action = %call.action, "repeated CALL answered again, not applied");
            metrics::counter!(m::DUPLICATE_CALLS).increment(1);
            let reply = reply.to_string();
            self.send_text(reply, ctx);
            return;
        }
        let started = Instant::now();
        let store = self.setup.store.clone();
        let settings = self.setup.handler_settings.clone();
        let limits = self.setup.limits.clone();
        let key = self.setup.key.clone();
        let registration = self.registration;
        let version = self.setup.version;
        let tenant_slug = self.setup.tenant_slug.clone();
        let fut = async move {
            let ctx = StationContext {
                version,
                store: store.as_ref(),
                account_id: &key.account_id,
                station_id: &key.station_id,
                tenant_slug: &tenant_slug,
                registration,
                settings: &settings,
                event_quota: Some(&limits.event_bytes),
                feed: Default::default(),
            };
            let reply = handler::handle_call(&ctx, &call).await;
            (call, reply)
        };
        let fut = fut.instrument(self.span.clone());
        ctx.wait(Writing::new(fut.into_actor(self).map(move |(call, reply), act, ctx| {
            let _enter = act.span.clone().entered();
            // The label of a name this version does not declare is still another version's, or `unknown`.
            let series = m::call_metrics(declared.map_or_else(|| crate::ocpp::actions::label(&call.action), |a| a.name));
            series.duration().record(started.elapsed().as_secs_f64());
            match reply {
                Reply::Result { payload, notice } => {
                    series.ok().increment(1);
                    if let Some(Notice::Booted { registration }) = &notice {
                        act.registration = *registration;
                    }
                    // Nothing else is handled before this answer: `heard` is still this CALL's arrival.
                    act.sight_recorded = notice.as_ref().is_some_and(Notice::recorded_sight);
                    let frame = Frame::CallResult(crate::ocpp::rpc::CallResult { unique_id: call.unique_id, payload });
                    act.answer_call(frame, fingerprint, ctx);
                    // Only what the live view shows and nothing else does goes to the tenant's actor:
                    // that the station is alive it reads from `heard`; a boot or a status is in the
                    // station's record.
                    if let Some(Notice::SendCertificate { chain, serial }) = &notice {
                        act.send_certificate(chain.clone(), serial.clone(), ctx);
                    }
                    if let Some(notice) = notice.filter(Notice::changes_live_view) {
                        let msg =
                            StationNotice { station_id: act.setup.key.station_id.clone(), session_id: act.id, notice };
                        act.tell_tenant(msg, ctx);
                    }
                    if act.delivery.handled(act.registration == Registration::Accepted) {
                        act.start_delivery(ctx);
                        if act.setup.renewal_due {
                            act.check_certificate(ctx);
                        }
                    }
                }
                Reply::Error(error) => {
                    series.error().increment(1);
                    tracing::debug!(station = %act.setup.key, action = %call.action, code = %error.code, error = %error.description, "CALL refused");
                    let code = act.code_of(&error);
                    metrics::counter!(m::CALL_ERRORS, "code" => error_code_label(&code, act.setup.version))
                        .increment(1);
                    let remember = fingerprint.filter(|_| inbound::remember_refusal(&code));
                    act.answer_call(Frame::CallError(error), remember, ctx);
                }
            }
        })));
    }

    /// Sends the answer to a CALL, remembered for a repeat of the very same frame when its
    /// fingerprint is given: only an answer to a CALL that changed something is (one that changed
    /// nothing, a Heartbeat or an Authorize, is simply answered afresh, and an idle station's
    /// heartbeats do not fill its session's memory).
    fn answer_call(&mut self, frame: Frame, fingerprint: Option<Fingerprint>, ctx: &mut Context<Self>) {
        let text = frame.to_text();
        if let Some(fingerprint) = fingerprint {
            self.recent_replies.remember(frame.unique_id(), fingerprint, text.clone());
        }
        self.send_text(text, ctx);
    }

    /// Runs queued-command delivery until the queue is empty; a nudge while it runs makes it look again.
    /// It runs as a task of its own, not on this actor's context, so that the records of a command in
    /// flight are still settled when the session ends.
    fn start_delivery(&mut self, ctx: &mut Context<Self>) {
        let run = delivery::deliver(
            self.setup.store.clone(),
            ctx.address().recipient(),
            self.setup.key.clone(),
            self.setup.version,
            self.setup.command_timeout,
            self.setup.handler_settings.password_grace_secs,
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
                session.do_send(ToSession::Deliver(DeliverQueued));
            }
        });
    }

    /// Sends the station the certificate the station CA just issued it, after the answer to its
    /// SignCertificate (on a task: the answer is recorded even if the session ends meanwhile).
    fn send_certificate(&mut self, chain: String, serial: String, ctx: &mut Context<Self>) {
        let run = certificates::deliver(
            self.setup.store.clone(),
            ctx.address().recipient(),
            self.setup.key.clone(),
            self.setup.version,
            chain,
            serial,
            self.setup.command_timeout,
        );
        let key = self.setup.key.clone();
        actix_rt::spawn(async move {
            if let Err(e) = run.await {
                tracing::warn!(station = %key, error = %e, "could not record the station's answer to CertificateSigned");
            }
        });
    }

    /// Looks whether the station's certificate is due for renewal (asking for a new CSR if it is)
    /// and moves the expiry gauge.
    fn check_certificate(&mut self, ctx: &mut Context<Self>) {
        let Some(before) = self.setup.handler_settings.renew_before else { return };
        let run = certificates::check(
            self.setup.store.clone(),
            ctx.address().recipient(),
            self.setup.key.clone(),
            self.setup.version,
            before,
            self.setup.command_timeout,
        );
        let key = self.setup.key.clone();
        let checked = async move {
            run.await
                .map_err(|e| tracing::warn!(station = %key, error = %e, "could not check the station's certificate"))
        };
        ctx.spawn(checked.into_actor(self).map(|checked, act, _| {
            if let Ok(expiring) = checked {
                if act.close_reason.is_none() {
                    act.expiring.update_gauge(expiring);
                    act.expiring = expiring;
                }
            }
        }));
    }

    /// Tells the tenant's actor, looking it up (on this context) when its address is not known.
    fn tell_tenant<M>(&mut self, msg: M, ctx: &mut Context<Self>)
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        crate::actors::account::AccountActor: Handler<M>,
    {
        if let Some(lookup) = self.tenant.tell(msg) {
            ctx.spawn(lookup.into_actor(self).map(|addr, act, _| act.tenant.found(addr)));
        }
    }

    fn on_answer(&mut self, unique_id: &str, result: CommandResult, ctx: &mut Context<Self>) {
        if let (Some(action), Ok(payload)) = (self.commands.outstanding(unique_id), &result) {
            if let Some(Err(v)) = self.setup.version.schemas().validate(action, Direction::Response, payload) {
                if self.warnings.allow() {
                    tracing::warn!(station = %self.setup.key, action, violation = %v, "station answer does not match its schema");
                }
            }
        }
        match self.commands.answer(unique_id, result, Instant::now()) {
            Ok(next) => {
                if let Some(timer) = self.command_timer.take() {
                    ctx.cancel_future(timer);
                }
                self.send_command(next, ctx);
            }
            Err(outbound::Unsolicited) => {
                tracing::debug!(station = %self.setup.key, unique_id, "answer to no pending command ignored")
            }
        }
    }

    /// Puts a command on the wire and arms its deadline.
    fn send_command(&mut self, outgoing: Option<Outgoing>, ctx: &mut Context<Self>) {
        let Some(Outgoing { call, timeout }) = outgoing else { return };
        let unique_id = call.unique_id.clone();
        self.send_frame(&Frame::Call(call), ctx);
        self.command_timer = Some(ctx.run_later(timeout, move |act, ctx| act.on_timeout(&unique_id, ctx)));
    }

    fn on_timeout(&mut self, unique_id: &str, ctx: &mut Context<Self>) {
        if let Some((action, next)) = self.commands.expire(unique_id, Instant::now()) {
            self.command_timer = None;
            tracing::info!(station = %self.setup.key, action = %action, "command timed out");
            self.send_command(next, ctx);
        }
    }
}

/// Appends a session's own event (connected, disconnected) to the tenant's feed; durable with the
/// node's next flush (nothing the station waits for is acknowledged by it).
async fn append_feed(store: &dyn StationStore, key: &StationKey, event: EventDraft) {
    let feed = [event];
    match store.append_feed(&key.account_id, &feed).await {
        Ok(()) => m::feed_emitted(&feed),
        Err(e) => tracing::warn!(station = %key, error = %e, "could not append the session's event to the feed"),
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
        let addr = ctx.address();
        self.setup.stations.do_send(Register {
            key: self.setup.key.clone(),
            session_id: self.id,
            version: self.setup.version,
            session: SessionHandle { inbox: addr.recipient() },
        });
        let connected = StationConnected {
            station_id: self.setup.key.station_id.clone(),
            session_id: self.id,
            protocol: protocol.to_string(),
            heard: self.heard.clone(),
        };
        // A lookup is waited for, so the tenant's actor knows the station before any of its
        // messages is handled.
        if let Some(lookup) = self.tenant.announce(connected) {
            ctx.wait(Writing::new(lookup.into_actor(self).map(|addr, act, _| act.tenant.found(addr))));
        }
        // In the feed before anything the station's messages cause (waited for, as they are).
        let (store, key) = (self.setup.store.clone(), self.setup.key.clone());
        let feed = async move { append_feed(store.as_ref(), &key, events::connected(&key.station_id, protocol)).await };
        ctx.wait(Writing::new(feed.into_actor(self)));
        // Written only when the record read at the connection names another protocol: a station
        // reconnecting as it was costs no write.
        if !self.setup.protocol_recorded {
            let store = self.setup.store.clone();
            let key = self.setup.key.clone();
            actix_rt::spawn(async move {
                let change = StationChange::Protocol(protocol.to_string());
                let r = store.change_station(&key.account_id, &key.station_id, &change).await;
                if let Err(e) = r {
                    tracing::warn!(station = %key, error = %e, "could not record the station's protocol");
                }
            });
        }
        if let Some(before) = self.setup.handler_settings.renew_before {
            let expiring = certificates::Expiring::of(self.setup.certificate_expiry, before, chrono::Utc::now());
            self.expiring.update_gauge(expiring);
            self.expiring = expiring;
            ctx.run_interval(self.setup.handler_settings.renewal_check, |act, ctx| {
                if act.registration == Registration::Accepted {
                    act.check_certificate(ctx);
                }
            });
        }
        ctx.run_interval(self.setup.ping_interval, |act, ctx| {
            let _enter = act.span.clone().entered();
            act.warnings.flush();
            if act.last_activity.elapsed() >= act.setup.idle_timeout {
                tracing::info!(station = %act.setup.key, "no traffic within the idle timeout, closing");
                act.close(DisconnectReason::IdleTimeout, ctx);
            } else {
                let queued = act.out.ping();
                act.after_queueing(queued, ctx);
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        let _enter = self.span.clone().entered();
        self.warnings.flush();
        self.expiring.update_gauge(certificates::Expiring::default());
        let reason = self.close_reason.unwrap_or(DisconnectReason::ClosedByStation);
        metrics::gauge!(m::CONNECTIONS, "protocol" => self.setup.version.subprotocol()).decrement(1.0);
        metrics::counter!(m::DISCONNECTS, "reason" => reason.as_str()).increment(1);
        tracing::info!(station = %self.setup.key, session = self.id, reason = reason.as_str(), "station disconnected");
        self.setup.stations.do_send(Unregister { key: self.setup.key.clone(), session_id: self.id });
        self.tenant
            .disconnected(StationDisconnected { station_id: self.setup.key.station_id.clone(), session_id: self.id });
        let (store, key) = (self.setup.store.clone(), self.setup.key.clone());
        let event = events::disconnected(&key.station_id, reason.as_str());
        actix_rt::spawn(async move { append_feed(store.as_ref(), &key, event).await });
        // Heartbeats write nothing; the last time the station was heard from is kept now, unless
        // its last message (a boot, a status) recorded it already. Kept as an instant (a clock read
        // per message less), turned into a time once, here.
        if !self.sight_recorded {
            let seen = self.heard.time();
            let (store, key) = (self.setup.store.clone(), self.setup.key.clone());
            actix_rt::spawn(async move {
                let r = store.change_station(&key.account_id, &key.station_id, &StationChange::Seen(seen)).await;
                if let Err(e) = r {
                    tracing::warn!(station = %key, error = %e, "could not record when the station was last seen");
                }
            });
        }
        self.commands.close();
        // What the session queued last (its close frame) is written after it, within the grace
        // its closing allows.
        if let Some(pump) = self.pump.take() {
            actix_rt::spawn(pump.finish(close_grace(self.close_reason)));
        }
    }
}

pin_project_lite::pin_project! {
    /// A future the session waits for (`ctx.wait`, which holds every other event of the session)
    /// while its socket is still written: what it queued before goes out meanwhile.
    struct Writing<F> {
        #[pin]
        inner: F,
    }
}

impl<F> Writing<F> {
    fn new(inner: F) -> Self {
        Writing { inner }
    }
}

impl<F: ActorFuture<StationSession>> ActorFuture<StationSession> for Writing<F> {
    type Output = F::Output;

    fn poll(
        self: Pin<&mut Self>,
        act: &mut StationSession,
        ctx: &mut Context<StationSession>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<F::Output> {
        let _written_or_waiting = act.poll_pump(cx);
        self.project().inner.poll(act, ctx, cx)
    }
}

/// The session's socket written from the session's own task: polls the [`Pump`] whenever the
/// session is woken (by the socket having room, or by the session queueing a frame).
struct Pumping;

impl ActorFuture<StationSession> for Pumping {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut StationSession,
        _: &mut Context<StationSession>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        act.poll_pump(cx)
    }
}

impl StationSession {
    /// Writes what waits for the socket; ready once nothing more will be written by the session.
    fn poll_pump(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        match self.pump.as_mut() {
            Some(pump) => pump.poll_write(cx),
            None => Poll::Ready(()),
        }
    }
}

impl StreamHandler<Result<Incoming, ProtocolError>> for StationSession {
    fn handle(&mut self, item: Result<Incoming, ProtocolError>, ctx: &mut Context<Self>) {
        let _enter = self.span.clone().entered();
        self.last_activity = Instant::now();
        if matches!(item, Ok(Incoming::Text(_))) {
            self.heard.mark(self.last_activity);
            self.sight_recorded = false;
        }
        match item {
            Ok(Incoming::Text(text)) => self.on_text(&text, ctx),
            Ok(Incoming::Binary(_)) => {
                // OCPP-J is text only; the frame cannot be parsed for a unique id.
                self.reply_error(
                    CallError::new(
                        self.setup.version,
                        crate::ocpp::rpc::UNKNOWN_UNIQUE_ID,
                        ErrorCode::RpcFrameworkError,
                        "binary frames are not OCPP-J",
                    ),
                    ctx,
                );
            }
            Ok(Incoming::Ping(bytes)) => {
                let queued = self.out.pong(bytes);
                self.after_queueing(queued, ctx);
            }
            Ok(Incoming::Pong(_)) => {}
            Ok(Incoming::Close(reason)) => {
                tracing::debug!(station = %self.setup.key, ?reason, "station closed the connection");
                self.close(DisconnectReason::ClosedByStation, ctx);
            }
            Err(ProtocolError::Overflow) => self.refuse_message(DisconnectReason::FrameTooBig, ctx),
            Err(ProtocolError::Io(e)) if limits::frames::is_oversized(&e) => {
                self.refuse_message(DisconnectReason::FrameTooBig, ctx)
            }
            Err(ProtocolError::Io(e)) if limits::frames::is_invalid_utf8(&e) => {
                self.refuse_message(DisconnectReason::InvalidUtf8, ctx)
            }
            Err(ProtocolError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                if self.warnings.allow() {
                    tracing::warn!(station = %self.setup.key, error = %e, "WebSocket protocol error, closing");
                }
                self.close(DisconnectReason::ProtocolError, ctx);
            }
            Err(ProtocolError::Io(e)) => {
                // The TCP connection dropped without a close frame: a station losing its network.
                tracing::debug!(station = %self.setup.key, error = %e, "connection dropped");
                self.close(DisconnectReason::ClosedByStation, ctx);
            }
            Err(e) => {
                if self.warnings.allow() {
                    tracing::warn!(station = %self.setup.key, error = %e, "WebSocket protocol error, closing");
                }
                self.close(DisconnectReason::ProtocolError, ctx);
            }
        }
        // Past its message rate the station waits: while this session waits, its stream is not
        // polled, so its socket is not read and TCP slows the station down. Nothing is dropped.
        if self.close_reason.is_none() {
            if let Some(pause) = self.rate.take() {
                limits::hit(Limit::MessageRate);
                ctx.wait(Writing::new(actix::clock::sleep(pause).into_actor(self)));
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<ToSession> for StationSession {
    type Result = ();

    fn handle(&mut self, msg: ToSession, ctx: &mut Context<Self>) {
        match msg {
            ToSession::Command(msg) => self.on_command(msg, ctx),
            ToSession::Deliver(DeliverQueued) => {
                if self.delivery.nudged(self.close_reason.is_none()) {
                    self.start_delivery(ctx);
                }
            }
            ToSession::Close(msg) => {
                self.close_guards.extend(msg.guard);
                self.close(msg.reason, ctx);
            }
        }
    }
}

impl StationSession {
    /// A command from the API (or a queued one being delivered) to send to the station.
    fn on_command(&mut self, msg: SendCommand, ctx: &mut Context<Self>) {
        if self.close_reason.is_some() {
            let _ = msg.responder.send(Err(CommandError::NotSent));
            return;
        }
        let pending =
            Pending { action: msg.action, payload: msg.payload, deadline: msg.deadline, responder: msg.responder };
        let next = self.commands.push(pending, Instant::now());
        let bound = self.setup.limits.settings.waiting_commands;
        if self.commands.waiting() == bound && self.warnings.allow() {
            tracing::warn!(station = %self.setup.key, waiting = bound, "commands pile up for a station that answers slowly; more are refused");
        }
        self.send_command(next, ctx);
    }
}

impl Handler<DeliveryFinished> for StationSession {
    type Result = ();

    fn handle(&mut self, _: DeliveryFinished, ctx: &mut Context<Self>) {
        if self.delivery.finished(self.close_reason.is_none()) {
            self.start_delivery(ctx);
        }
    }
}
