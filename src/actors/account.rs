//! AccountActor: one per tenant, holding its live view (which stations are connected, over which
//! protocol, since when, their latest connector statuses). Started on demand by the AccountRegistry
//! and stopped when idle. Later event streams and quotas hang on it.

use super::station::SessionId;
use crate::ids::{AccountId, StationId};
use crate::metrics as m;
use crate::ocpp::common::notice::Notice;
use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// What the tenant sees of one connected station.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LiveStation {
    #[serde(skip)]
    pub session_id: SessionId,
    pub protocol: String,
    pub connected_at: DateTime<Utc>,
    pub last_message_at: DateTime<Utc>,
    pub open_transactions: BTreeMap<u32, i32>,
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
}

/// A station's session ended.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct StationDisconnected {
    pub station_id: StationId,
    pub session_id: SessionId,
}

/// A handled message changed what the tenant sees.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct StationNotice {
    pub station_id: StationId,
    pub session_id: SessionId,
    /// None when the message only proves the station is alive.
    pub notice: Option<Notice>,
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
        live.last_message_at = Utc::now();
        match msg.notice {
            Some(Notice::TransactionStarted { transaction_id, connector_id }) => {
                live.open_transactions.insert(connector_id, transaction_id);
            }
            Some(Notice::TransactionStopped { transaction_id }) => {
                live.open_transactions.retain(|_, id| *id != transaction_id);
            }
            Some(Notice::Booted { .. }) | Some(Notice::ConnectorStatus { .. }) | None => {}
        }
    }
}

impl Handler<GetLiveView> for AccountActor {
    type Result = MessageResult<GetLiveView>;

    fn handle(&mut self, _: GetLiveView, _: &mut Context<Self>) -> Self::Result {
        self.touch();
        MessageResult(self.stations.clone())
    }
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
