//! The sled store's feed and webhooks. Feed entries are keyed `{account}\0{id}` (the id big-endian,
//! so an account's events list in id order); ids come from the database's monotonic generator
//! (greater after a restart than any handed out before it), taken and written under one lock, so
//! that an event a reader sees has every event with a smaller id before it.

use super::{abort, backend, decode, encode, get, key, prefix, prefix_end, scan, transactional, SledStore};
use crate::ids::AccountId;
use crate::model::{EventDraft, FeedCutoffs, FeedEvent, PruneStep, Webhook, WebhookDelivery};
use crate::store::{StoreError, StoreResult, WebhookUpdate};
use sled::transaction::Transactional;
use std::collections::BTreeSet;

const CURSOR: &[u8] = b"cursor";
const DELIVERIES: &[u8] = b"deliveries";

fn feed_key(account_id: &AccountId, id: u64) -> Vec<u8> {
    key(&[account_id.as_bytes(), &id.to_be_bytes()])
}

fn id_of(rest: &[u8]) -> StoreResult<u64> {
    <[u8; 8]>::try_from(rest).map(u64::from_be_bytes).map_err(|_| StoreError::backend("bad feed key"))
}

impl SledStore {
    /// Appends to the account's feed, not yet durable; wakes the account's readers on this node.
    pub(super) fn append_feed_now(&self, account_id: &AccountId, events: &[EventDraft]) -> StoreResult<()> {
        self.append_feed_once(account_id, None, events)
    }

    /// Appends the events, with the account's head and (given an origin) the origin's sequence,
    /// in one sled transaction: a crash keeps all of it or none. An origin whose sequence is not
    /// above the last one recorded appends nothing.
    pub(super) fn append_feed_once(
        &self,
        account_id: &AccountId,
        origin: Option<(&str, u64)>,
        events: &[EventDraft],
    ) -> StoreResult<()> {
        if events.is_empty() && origin.is_none() {
            return Ok(());
        }
        let origin_key = origin.map(|(o, _)| key(&[account_id.as_bytes(), o.as_bytes()]));
        let head_key = account_id.as_bytes();
        let appended = {
            // Held from taking the ids to writing the entries: ids reach the tree in order.
            let _order = self.feed_order.lock().unwrap_or_else(|p| p.into_inner());
            // Taken before the transaction (the generator may flush, which must not happen inside
            // one); a transaction that appends nothing leaves gaps, which ids may have. The
            // generator starts at 0, which is "before the first event": ids start at 1.
            let ids = events
                .iter()
                .map(|_| self.db.generate_id().map(|id| id + 1))
                .collect::<Result<Vec<u64>, _>>()
                .map_err(backend)?;
            let r = (&self.feed, &self.feed_origins, &self.feed_heads).transaction(|(feed, origins, heads)| {
                if let (Some(k), Some((_, seq))) = (&origin_key, origin) {
                    let last = origins.get(k)?.map(|v| id_of(&v)).transpose().map_err(abort)?;
                    if last.is_some_and(|last| seq <= last) {
                        return Ok(false);
                    }
                    origins.insert(k.as_slice(), &seq.to_be_bytes())?;
                }
                let mut head = None;
                for (draft, &id) in events.iter().zip(&ids) {
                    let event = FeedEvent::from_draft(id, draft.clone());
                    feed.insert(feed_key(account_id, id), encode(&event).map_err(abort)?)?;
                    head = Some(id);
                }
                if let Some(head) = head {
                    heads.insert(head_key, &head.to_be_bytes())?;
                }
                Ok(head.is_some())
            });
            transactional(r)?
        };
        if appended {
            self.feed_signal.wake(account_id);
        }
        Ok(())
    }

    pub(super) fn feed_after_now(
        &self,
        account_id: &AccountId,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<FeedEvent>> {
        let p = prefix(&[account_id.as_bytes()]);
        let start = feed_key(account_id, after.saturating_add(1));
        let mut out = Vec::new();
        for item in self.feed.range(start..prefix_end(&p)).take(limit) {
            let (_, v) = item.map_err(backend)?;
            out.push(decode(&v)?);
        }
        Ok(out)
    }

    /// The last id appended, kept apart from the events so that pruning does not move it back.
    pub(super) fn feed_head_now(&self, account_id: &AccountId) -> StoreResult<u64> {
        self.feed_heads.get(account_id.as_bytes()).map_err(backend)?.map_or(Ok(0), |v| id_of(&v))
    }

    pub(super) fn prune_feed_now(
        &self,
        account_id: &AccountId,
        cutoffs: &FeedCutoffs,
        after: Option<String>,
        batch: usize,
    ) -> StoreResult<PruneStep> {
        let Some(latest) = cutoffs.latest() else { return Ok(PruneStep { removed: 0, next: None }) };
        let p = prefix(&[account_id.as_bytes()]);
        let from = after.and_then(|a| a.parse::<u64>().ok()).map_or(0, |a| a.saturating_add(1));
        let (mut removed, mut read, mut last) = (0, 0, None);
        for item in self.feed.range(feed_key(account_id, from)..prefix_end(&p)).take(batch) {
            let (k, v) = item.map_err(backend)?;
            let event: FeedEvent = decode(&v)?;
            if event.time >= latest {
                return Ok(PruneStep { removed, next: None });
            }
            if event.is_old(cutoffs) {
                self.feed.remove(k).map_err(backend)?;
                removed += 1;
            }
            read += 1;
            last = Some(event.id);
        }
        let next = if read == batch { last.map(|l| l.to_string()) } else { None };
        Ok(PruneStep { removed, next })
    }

    pub(super) fn put_webhook_now(&self, webhook: &Webhook) -> StoreResult<()> {
        let k = key(&[webhook.account_id.as_bytes(), webhook.id.as_bytes()]);
        self.webhooks.insert(k, encode(webhook)?).map_err(backend)?;
        Ok(())
    }

    pub(super) fn webhook_now(&self, account_id: &AccountId, webhook_id: &str) -> StoreResult<Option<Webhook>> {
        get(&self.webhooks, &key(&[account_id.as_bytes(), webhook_id.as_bytes()]))
    }

    pub(super) fn webhooks_now(&self, account_id: &AccountId) -> StoreResult<Vec<Webhook>> {
        scan(&self.webhooks, &prefix(&[account_id.as_bytes()]))
    }

    pub(super) fn update_webhook_now(
        &self,
        account_id: &AccountId,
        webhook_id: &str,
        update: WebhookUpdate<'_>,
    ) -> StoreResult<Option<Webhook>> {
        let k = key(&[account_id.as_bytes(), webhook_id.as_bytes()]);
        let mut result = None;
        let mut failure = None;
        self.webhooks
            .fetch_and_update(&k, |old| {
                let old = old?;
                match decode::<Webhook>(old) {
                    Ok(mut hook) => {
                        update(&mut hook);
                        match encode(&hook) {
                            Ok(bytes) => {
                                result = Some(hook);
                                Some(bytes)
                            }
                            Err(e) => {
                                failure = Some(e);
                                Some(old.to_vec())
                            }
                        }
                    }
                    Err(e) => {
                        failure = Some(e);
                        Some(old.to_vec())
                    }
                }
            })
            .map_err(backend)?;
        match failure {
            Some(e) => Err(e),
            None => Ok(result),
        }
    }

    pub(super) fn delete_webhook_now(&self, account_id: &AccountId, webhook_id: &str) -> StoreResult<bool> {
        let k = key(&[account_id.as_bytes(), webhook_id.as_bytes()]);
        let existed = self.webhooks.remove(&k).map_err(backend)?.is_some();
        self.webhook_state.remove(key(&[account_id.as_bytes(), webhook_id.as_bytes(), CURSOR])).map_err(backend)?;
        self.webhook_state.remove(key(&[account_id.as_bytes(), webhook_id.as_bytes(), DELIVERIES])).map_err(backend)?;
        Ok(existed)
    }

    pub(super) fn webhook_accounts_now(&self) -> StoreResult<Vec<AccountId>> {
        let mut accounts = BTreeSet::new();
        for item in self.webhooks.iter() {
            let (k, _) = item.map_err(backend)?;
            let account = k.split(|b| *b == super::SEP).next().unwrap_or_default();
            accounts.insert(String::from_utf8_lossy(account).into_owned());
        }
        Ok(accounts.into_iter().map(AccountId::from).collect())
    }

    pub(super) fn webhook_cursor_now(&self, account_id: &AccountId, webhook_id: &str) -> StoreResult<Option<u64>> {
        let k = key(&[account_id.as_bytes(), webhook_id.as_bytes(), CURSOR]);
        self.webhook_state.get(k).map_err(backend)?.map(|v| id_of(&v)).transpose()
    }

    pub(super) fn set_webhook_cursor_now(
        &self,
        account_id: &AccountId,
        webhook_id: &str,
        cursor: u64,
    ) -> StoreResult<()> {
        let k = key(&[account_id.as_bytes(), webhook_id.as_bytes(), CURSOR]);
        self.webhook_state.insert(k, &cursor.to_be_bytes()).map_err(backend)?;
        Ok(())
    }

    pub(super) fn webhook_deliveries_now(
        &self,
        account_id: &AccountId,
        webhook_id: &str,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        let k = key(&[account_id.as_bytes(), webhook_id.as_bytes(), DELIVERIES]);
        Ok(get(&self.webhook_state, &k)?.unwrap_or_default())
    }

    pub(super) fn put_webhook_deliveries_now(
        &self,
        account_id: &AccountId,
        webhook_id: &str,
        log: &[WebhookDelivery],
    ) -> StoreResult<()> {
        let k = key(&[account_id.as_bytes(), webhook_id.as_bytes(), DELIVERIES]);
        self.webhook_state.insert(k, encode(&log)?).map_err(backend)?;
        Ok(())
    }
}
