//! What a session tells its tenant's [`AccountActor`]: the station connected, what its messages
//! changed that only the live view shows (notices), and that it disconnected. When it was last
//! heard from is no message: the session writes it where the actor reads it
//! ([`crate::actors::account::LastHeard`]).
//!
//! The actor's address is cached after the first lookup, in the session and for the thread, so a
//! session's messages do not pass through the (global) account registry and a new session of a
//! tenant already served on its thread announces itself without waiting for a lookup (a reconnect
//! storm's sessions would each wait for two round trips to the registry's thread); a stopped actor
//! is looked up again.

use crate::actors::account::{self, AccountActor, AccountRegistry, GetAccount, StationConnected, StationDisconnected};
use crate::ids::AccountId;
use actix::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;

/// Below this many cached tenants, a thread's cache is not pruned.
const CACHE_PRUNE_FLOOR: usize = 64;

/// The tenants' actors this thread's sessions have reached. Stopped actors are pruned whenever the
/// cache has doubled since the last pruning, so it holds about the tenants with stations on this
/// thread.
struct ActorCache {
    actors: HashMap<AccountId, Addr<AccountActor>>,
    prune_at: usize,
}

thread_local! {
    static ACTORS: RefCell<ActorCache> =
        RefCell::new(ActorCache { actors: HashMap::new(), prune_at: CACHE_PRUNE_FLOOR });
}

/// The tenant's actor, when a session on this thread reached it and it still runs.
fn cached_actor(account_id: &AccountId) -> Option<Addr<AccountActor>> {
    ACTORS.with(|c| c.borrow().actors.get(account_id).filter(|a| a.connected()).cloned())
}

fn cache_actor(account_id: &AccountId, addr: &Addr<AccountActor>) {
    ACTORS.with(|c| {
        let mut c = c.borrow_mut();
        if !c.actors.contains_key(account_id) && c.actors.len() >= c.prune_at {
            c.actors.retain(|_, a| a.connected());
            c.prune_at = (c.actors.len() * 2).max(CACHE_PRUNE_FLOOR);
        }
        c.actors.insert(account_id.clone(), addr.clone());
    });
}

/// A session's line to its tenant's actor.
pub struct TenantLink {
    accounts: Addr<AccountRegistry>,
    account_id: AccountId,
    /// The tenant's actor, once looked up.
    actor: Option<Addr<AccountActor>>,
}

impl TenantLink {
    pub fn new(accounts: Addr<AccountRegistry>, account_id: AccountId) -> TenantLink {
        TenantLink { accounts, account_id, actor: None }
    }

    /// Announces the station, so the tenant's actor knows it before any of its messages is
    /// handled. Sent at once when the actor is known on this thread (what the session sends it
    /// later is queued behind); otherwise the lookup and announcement the session is to wait for,
    /// resolving to the actor, for [`TenantLink::found`].
    pub fn announce(
        &mut self,
        connected: StationConnected,
    ) -> Option<impl Future<Output = Option<Addr<AccountActor>>> + 'static> {
        if let Some(addr) = cached_actor(&self.account_id) {
            addr.do_send(connected);
            self.actor = Some(addr);
            return None;
        }
        let (accounts, account_id) = (self.accounts.clone(), self.account_id.clone());
        Some(async move {
            let addr = accounts.send(GetAccount { account_id }).await.ok()?;
            addr.send(connected).await.ok()?;
            Some(addr)
        })
    }

    /// Keeps the actor a lookup found, for this session and the thread's others.
    pub fn found(&mut self, actor: Option<Addr<AccountActor>>) {
        if let Some(addr) = actor {
            cache_actor(&self.account_id, &addr);
            self.actor = Some(addr);
        }
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
