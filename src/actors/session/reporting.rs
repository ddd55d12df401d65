//! What a session tells its tenant's [`AccountActor`]: the station connected, what its messages
//! changed (notices), that it is alive, and that it disconnected.
//!
//! The actor's address is cached after the first lookup, so a session's messages do not pass
//! through the (global) account registry; a stopped actor is looked up again. Liveness alone is
//! reported at most every [`LIVENESS_REPORT_EVERY`], so a fleet's heartbeats do not each cost an
//! actor message.

use crate::actors::account::{self, AccountActor, AccountRegistry, GetAccount, StationConnected, StationDisconnected};
use crate::ids::AccountId;
use actix::prelude::*;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often at most the tenant's actor hears that a station is alive when nothing else changed.
pub const LIVENESS_REPORT_EVERY: Duration = Duration::from_secs(5);

/// A session's line to its tenant's actor.
pub struct TenantLink {
    accounts: Addr<AccountRegistry>,
    account_id: AccountId,
    /// The tenant's actor, once looked up.
    actor: Option<Addr<AccountActor>>,
    /// When the tenant's actor was last told this station is alive.
    last_reported: Instant,
}

impl TenantLink {
    pub fn new(accounts: Addr<AccountRegistry>, account_id: AccountId) -> TenantLink {
        TenantLink { accounts, account_id, actor: None, last_reported: Instant::now() }
    }

    /// Announces the station; the session waits for it, so the tenant's actor knows the station
    /// before any of its messages is handled. Resolves to the actor, to [`TenantLink::found`].
    pub fn announce(&self, connected: StationConnected) -> impl Future<Output = Option<Addr<AccountActor>>> + 'static {
        let (accounts, account_id) = (self.accounts.clone(), self.account_id.clone());
        async move {
            let addr = accounts.send(GetAccount { account_id }).await.ok()?;
            addr.send(connected).await.ok()?;
            Some(addr)
        }
    }

    /// Keeps the actor a lookup found.
    pub fn found(&mut self, actor: Option<Addr<AccountActor>>) {
        if actor.is_some() {
            self.actor = actor;
        }
    }

    /// Whether a handled message is reported: always when it changed something (`changed`), else
    /// when the last report is old enough.
    pub fn due(&mut self, changed: bool) -> bool {
        if changed || self.last_reported.elapsed() >= LIVENESS_REPORT_EVERY {
            self.last_reported = Instant::now();
            return true;
        }
        false
    }

    /// Tells the tenant's actor: at once when its address is known, else the lookup to run (on
    /// the session's context; its result goes to [`TenantLink::found`]).
    pub fn tell<M>(&self, msg: M) -> Option<impl Future<Output = Option<Addr<AccountActor>>> + 'static>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        AccountActor: Handler<M>,
    {
        if let Some(addr) = self.actor.as_ref().filter(|a| a.connected()) {
            addr.do_send(msg);
            return None;
        }
        let (accounts, account_id) = (self.accounts.clone(), self.account_id.clone());
        Some(async move {
            let addr = accounts.send(GetAccount { account_id: account_id.clone() }).await.ok()?;
            match addr.send(msg.clone()).await {
                Ok(_) => Some(addr),
                // Stopped between lookup and send: `tell` looks it up once more.
                Err(_) => {
                    account::tell(&accounts, &account_id, msg).await;
                    None
                }
            }
        })
    }

    /// The session ended. It is stopping, so nothing can be spawned on its context any more.
    pub fn disconnected(&self, msg: StationDisconnected) {
        match self.actor.as_ref().filter(|a| a.connected()) {
            Some(addr) => addr.do_send(msg),
            None => {
                let (accounts, account_id) = (self.accounts.clone(), self.account_id.clone());
                actix_rt::spawn(async move {
                    account::tell(&accounts, &account_id, msg).await;
                });
            }
        }
    }
}
