//! AccountActor: one per tenant, holding its live view (which stations are connected, over which
//! protocol, since when, when each was last heard from, their open transactions). Started on demand
//! by the AccountRegistry and stopped when idle. Later event streams and quotas hang on it.

use super::station::SessionId;
use crate::ids::{AccountId, StationId};
use crate::metrics as m;
use crate::ocpp::common::notice::Notice;
use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// When a connected station's last message arrived: written by its session as each message
/// arrives, read by the live view when it is asked. That a station is alive costs no actor message
/// (a fleet heartbeating every few minutes would otherwise send its tenant's actor one per heartbeat).
#[derive(Debug)]
pub struct LastHeard(AtomicU64);

/// What [`LastHeard`] counts from: the first time any was made.
fn anchor() -> Instant {
    static ANCHOR: OnceLock<Instant> = OnceLock::new();
    *ANCHOR.get_or_init(Instant::now)
}

impl LastHeard {
    pub fn new(at: Instant) -> Arc<Self> {
        let heard = Arc::new(LastHeard(AtomicU64::new(0)));
        heard.mark(at);
        heard
    }

    /// A message arrived at `at`.
    pub fn mark(&self, at: Instant) {
        let since = at.saturating_duration_since(anchor()).as_nanos();
        self.0.store(u64::try_from(since).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn instant(&self) -> Instant {
        anchor() + Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }

    /// The wall-clock time of the last message (now less how long ago it was).
    pub fn time(&self) -> DateTime<Utc> {
        let ago = chrono::TimeDelta::from_std(self.instant().elapsed()).unwrap_or(chrono::TimeDelta::zero());
        Utc::now() - ago
    }
}

/// What the tenant sees of one connected station.
#[derive(Debug, Clone, Serialize)]
pub struct LiveStation {
    #[serde(skip)]
    pub session_id: SessionId,
    pub protocol: String,
    pub connected_at: DateTime<Utc>,
    /// As of the live view's answer (from `heard`).
    pub last_message_at: DateTime<Utc>,
    pub open_transactions: BTreeMap<u32, i32>,
    #[serde(skip)]
    heard: Arc<LastHeard>,
}

/// A tenant's live view.
pub struct AccountActor {
    account_id: AccountId,
    registry: Addr<AccountRegistry>,
    stations: HashMap<StationId, LiveStation>,
    idle_after: Duration,
    last_activity: Instant,
}

impl Actor for AccountActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        metrics::gauge!(m::ACCOUNT_ACTORS).increment(1.0);
        let check = (self.idle_after / 4).max(Duration::from_millis(100));
        ctx.run_interval(check, |act, ctx| {
            if act.stations.is_empty() && act.last_activity.elapsed() >= act.idle_after {
                tracing::debug!(account = %act.account_id, "account actor idle, stopping");
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        metrics::gauge!(m::ACCOUNT_ACTORS).decrement(1.0);
        self.registry.do_send(AccountStopped { account_id: self.account_id.clone(), addr: ctx.address() });
    }
}

/// A station's session started.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct StationConnected {
    pub station_id: StationId,
    pub session_id: SessionId,
    pub protocol: String,
    /// Kept up to date by the session.
    pub heard: Arc<LastHeard>,
}

/// A station's session ended.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct StationDisconnected {
    pub station_id: StationId,
    pub session_id: SessionId,
}

/// A handled message changed what the tenant sees ([`Notice::changes_live_view`]).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct StationNotice {
    pub station_id: StationId,
    pub session_id: SessionId,
    pub notice: Notice,
}

/// The live state of every connected station, by station id.
#[derive(Message, Clone)]
#[rtype(result = "HashMap<StationId, LiveStation>")]
pub struct GetLiveView;

impl AccountActor {
    fn touch(&mut self) {
        self.last_activity = Instant::now();
    }
}

impl Handler<StationConnected> for AccountActor {
    type Result = ();

    fn handle(&mut self, msg: StationConnected, _: &mut Context<Self>) {
        self.touch();
        // Session ids grow with connection order, so the newest connection is the one shown even when
        // messages of two racing sessions arrive out of order.
        if matches!(self.stations.get(&msg.station_id), Some(s) if s.session_id > msg.session_id) {
            return;
        }
        let now = Utc::now();
        self.stations.insert(
            msg.station_id,
            LiveStation {
                session_id: msg.session_id,
                protocol: msg.protocol,
                connected_at: now,
                last_message_at: now,
                open_transactions: BTreeMap::new(),
                heard: msg.heard,
            },
        );
    }
}

impl Handler<StationDisconnected> for AccountActor {
    type Result = ();

    fn handle(&mut self, msg: StationDisconnected, _: &mut Context<Self>) {
        self.touch();
        if matches!(self.stations.get(&msg.station_id), Some(s) if s.session_id == msg.session_id) {
            self.stations.remove(&msg.station_id);
        }
    }
}

impl Handler<StationNotice> for AccountActor {
    type Result = ();

    fn handle(&mut self, msg: StationNotice, _: &mut Context<Self>) {
        self.touch();
        let Some(live) = self.stations.get_mut(&msg.station_id) else {
            return;
        };
        if live.session_id != msg.session_id {
            return;
        }
        match msg.notice {
            Notice::TransactionStarted { transaction_id, connector_id } => {
                live.open_transactions.insert(connector_id, transaction_id);
            }
            Notice::TransactionStopped { transaction_id } => {
                live.open_transactions.retain(|_, id| *id != transaction_id);
            }
            Notice::Booted { .. } | Notice::ConnectorStatus { .. } | Notice::SendCertificate { .. } => {}
        }
    }
}

impl Handler<GetLiveView> for AccountActor {
    type Result = MessageResult<GetLiveView>;

    fn handle(&mut self, _: GetLiveView, _: &mut Context<Self>) -> Self::Result {
        self.touch();
        for live in self.stations.values_mut() {
            live.last_message_at = live.heard.time().max(live.connected_at);
        }
        MessageResult(self.stations.clone())
    }
}

/// Registers the account-actor gauge at zero, so that a fresh node already exports it.
pub fn register_metrics() {
    metrics::gauge!(m::ACCOUNT_ACTORS).increment(0.0);
}

/// Starts account actors on demand and hands out their addresses.
pub struct AccountRegistry {
    accounts: HashMap<AccountId, Addr<AccountActor>>,
    idle_after: Duration,
}

impl AccountRegistry {
    pub fn new(idle_after: Duration) -> Self {
        Self { accounts: HashMap::new(), idle_after }
    }
}

impl Actor for AccountRegistry {
    type Context = Context<Self>;
}

/// The account's actor, started if it is not running.
#[derive(Message)]
#[rtype(result = "Addr<AccountActor>")]
pub struct GetAccount {
    pub account_id: AccountId,
}

/// An account actor stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AccountStopped {
    pub account_id: AccountId,
    pub addr: Addr<AccountActor>,
}

impl Handler<GetAccount> for AccountRegistry {
    type Result = MessageResult<GetAccount>;

    fn handle(&mut self, msg: GetAccount, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(addr) = self.accounts.get(&msg.account_id) {
            if addr.connected() {
                return MessageResult(addr.clone());
            }
        }
        let actor = AccountActor {
            account_id: msg.account_id.clone(),
            registry: ctx.address(),
            stations: HashMap::new(),
            idle_after: self.idle_after,
            last_activity: Instant::now(),
        };
        let addr = actor.start();
        self.accounts.insert(msg.account_id, addr.clone());
        MessageResult(addr)
    }
}

impl Handler<AccountStopped> for AccountRegistry {
    type Result = ();

    fn handle(&mut self, msg: AccountStopped, _: &mut Context<Self>) {
        if matches!(self.accounts.get(&msg.account_id), Some(a) if *a == msg.addr) {
            self.accounts.remove(&msg.account_id);
        }
    }
}

/// Sends a message to the account's actor, starting it again if it stopped in between.
pub async fn tell<M>(registry: &Addr<AccountRegistry>, account_id: &AccountId, msg: M) -> Option<M::Result>
where
    M: Message + Send + Clone + 'static,
    M::Result: Send,
    AccountActor: Handler<M>,
{
    for _ in 0..2 {
        let addr = registry.send(GetAccount { account_id: account_id.clone() }).await.ok()?;
        if let Ok(r) = addr.send(msg.clone()).await {
            return Some(r);
        }
    }
    None
}
