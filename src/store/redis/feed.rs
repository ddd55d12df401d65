//! The Redis store's feed and webhooks.
//!
//! An account's feed is a stream, `feed:{{a}}`, whose entry ids are `0-{event id}`: the stream
//! itself keeps the events in id order, `XRANGE` from an exclusive start reads "the events after
//! this one", and `XDEL` removes old ones without disturbing the order. The ids come from
//! `feed_seq:{{a}}`, taken and written by one script, so an event a reader sees has every event
//! with a smaller id before it (no other append can slip in between an id and its entry).
//!
//! Webhooks, their cursors and their delivery logs are three hashes of the account, keyed by
//! webhook id. Which accounts have webhooks is a node-wide set, `webhook_accounts`: it is kept
//! best-effort, because it is in another slot than the account's keys and so cannot be written by
//! the same script on a Redis Cluster. An account may stay listed without webhooks (a node died
//! between the two steps of a delete); its callers then find none and skip it. The order of the
//! steps makes sure an account with a webhook is never left unlisted.

use super::scripts::SCRIPTS;
use super::{backend, decode, encode, RedisStore};
use crate::ids::AccountId;
use crate::model::{EventDraft, FeedCutoffs, FeedEvent, PruneStep, Webhook, WebhookDelivery};
use crate::store::{StoreResult, WebhookUpdate};

/// The field of a feed entry that holds the event's JSON.
const EVENT_FIELD: &str = "e";

/// A stream entry as `XRANGE` answers it: its id and its fields and values, alternating.
type Entry = (String, Vec<String>);

/// The JSON of a draft as the append script takes it: the script makes it the JSON of the
/// [`FeedEvent`] by putting `"id":{id},` after its opening brace. That is exactly how serde writes
/// a [`FeedEvent`] (the id is its first field, the others are the draft's, in the draft's order),
/// so the stored JSON decodes as one and no JSON is parsed or rebuilt in Lua.
fn draft_json(draft: &EventDraft) -> StoreResult<String> {
    let json = encode(draft)?;
    // A struct with fields: never `{}`, so the comma the script adds is always followed by one.
    if !json.starts_with('{') || json.len() < 3 {
        return Err(backend(format!("a feed event encodes as {json:?}, not as an object")));
    }
    Ok(json)
}

/// The event id of a feed entry id (`0-{id}`).
fn entry_event_id(entry_id: &str) -> StoreResult<u64> {
    entry_id
        .strip_prefix("0-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| backend(format!("bad feed entry id {entry_id:?}")))
}

/// The event of a feed entry. Its JSON carries the id too; both must agree, else the stream was
/// written by something other than the append script.
fn entry_event((entry_id, fields): &Entry) -> StoreResult<FeedEvent> {
    let id = entry_event_id(entry_id)?;
    let json = fields
        .chunks(2)
        .find_map(|pair| match pair {
            [field, value] if field == EVENT_FIELD => Some(value),
            _ => None,
        })
        .ok_or_else(|| backend(format!("feed entry {entry_id} has no event")))?;
    let event: FeedEvent = decode(json)?;
    if event.id != id {
        return Err(backend(format!("feed entry {entry_id} holds event {}", event.id)));
    }
    Ok(event)
}

impl RedisStore {
    /// Appends to the account's feed by one script (`append_feed` of the scripts);
    /// with an origin, only if `seq` is above the last one applied from it
    /// ([`crate::store::SharedStore::append_feed_from`]), checked and recorded in the same step.
    pub(super) async fn append_feed_events(
        &self,
        account_id: &AccountId,
        origin: Option<(&str, u64)>,
        events: &[EventDraft],
    ) -> StoreResult<()> {
        // No events and no origin: nothing to write. An origin's sequence is recorded even with no
        // events (an entry of a node's log may hold none), as on sled.
        if events.is_empty() && origin.is_none() {
            return Ok(());
        }
        let mut invocation = SCRIPTS.append_feed.prepare_invoke();
        invocation
            .key(self.key("feed", &[account_id]))
            .key(self.key("feed_seq", &[account_id]))
            .key(self.key("feed_from", &[account_id]));
        match origin {
            Some((origin, seq)) => invocation.arg(seq.to_string()).arg(origin),
            None => invocation.arg("").arg(""),
        };
        for draft in events {
            invocation.arg(draft_json(draft)?);
        }
        self.eval::<i64>("append_feed", &invocation).await?;
        if !events.is_empty() {
            self.feed_signal.wake(account_id);
        }
        Ok(())
    }

    pub(super) async fn feed_after_now(
        &self,
        account_id: &AccountId,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<FeedEvent>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let entries = self.feed_range(account_id, Some(after), limit).await?;
        entries.iter().map(entry_event).collect()
    }

    /// The sequence the ids come from, not the last entry: it never goes back, even once pruning
    /// removed the newest events.
    pub(super) async fn feed_head_now(&self, account_id: &AccountId) -> StoreResult<u64> {
        let head: Option<u64> =
            self.query("feed_head", redis::cmd("GET").arg(self.key("feed_seq", &[account_id]))).await?;
        Ok(head.unwrap_or(0))
    }

    /// At most `count` entries of the feed, in id order: after the event `after` (exclusive start,
    /// `(`, which needs Redis 6.2), or from the first.
    async fn feed_range(&self, account_id: &AccountId, after: Option<u64>, count: usize) -> StoreResult<Vec<Entry>> {
        let start = after.map_or_else(|| "-".to_owned(), |a| format!("(0-{a}"));
        let cmd = redis::cmd("XRANGE")
            .arg(self.key("feed", &[account_id]))
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .to_owned();
        self.query("feed_range", &cmd).await
    }

    /// One step of the walk, as on sled: the position handed back is the id of the last event
    /// looked at; the old events of the step go in one `XDEL`.
    pub(super) async fn prune_feed_now(
        &self,
        account_id: &AccountId,
        cutoffs: &FeedCutoffs,
        after: Option<String>,
        batch: usize,
    ) -> StoreResult<PruneStep> {
        let Some(latest) = cutoffs.latest() else { return Ok(PruneStep { removed: 0, next: None }) };
        if batch == 0 {
            return Ok(PruneStep { removed: 0, next: None });
        }
        // A position this store did not give starts the walk over, as on sled.
        let after = after.and_then(|a| a.parse::<u64>().ok());
        let entries = self.feed_range(account_id, after, batch).await?;
        let (mut old, mut last, mut reached_new) = (Vec::new(), None, false);
        for entry in &entries {
            let event = entry_event(entry)?;
            if event.time >= latest {
                reached_new = true;
                break;
            }
            if event.is_old(cutoffs) {
                old.push(entry.0.as_str());
            }
            last = Some(event.id);
        }
        let removed = if old.is_empty() {
            0
        } else {
            // XDEL counts what it removed: a concurrent prune's removals are not counted twice.
            let del = redis::cmd("XDEL").arg(self.key("feed", &[account_id])).arg(&old).to_owned();
            self.query::<usize>("prune_feed", &del).await?
        };
        let next = if reached_new || entries.len() < batch { None } else { last.map(|l| l.to_string()) };
        Ok(PruneStep { removed, next })
    }

    /// Listed before the write, so that a node dying in between leaves an account listed without
    /// webhooks (harmless) rather than one with a webhook unlisted; listed again after it, so that a
    /// delete that just emptied the account's webhooks and unlisted it cannot leave this one
    /// unlisted (see [`RedisStore::delete_webhook_now`]).
    pub(super) async fn put_webhook_now(&self, webhook: &Webhook) -> StoreResult<()> {
        const WHAT: &str = "put_webhook";
        let list = redis::cmd("SADD")
            .arg(self.global_key("webhook_accounts", &[]))
            .arg(webhook.account_id.as_str())
            .to_owned();
        self.query::<i64>(WHAT, &list).await?;
        let key = self.key("webhooks", &[&webhook.account_id]);
        self.query::<i64>(WHAT, redis::cmd("HSET").arg(key).arg(&webhook.id).arg(encode(webhook)?)).await?;
        self.query::<i64>(WHAT, &list).await?;
        Ok(())
    }

    pub(super) async fn webhook_now(&self, account_id: &AccountId, webhook_id: &str) -> StoreResult<Option<Webhook>> {
        self.hget("webhook", &self.key("webhooks", &[account_id]), webhook_id).await
    }

    pub(super) async fn webhooks_now(&self, account_id: &AccountId) -> StoreResult<Vec<Webhook>> {
        self.hvalues("webhooks", &self.key("webhooks", &[account_id])).await
    }

    pub(super) async fn update_webhook_now(
        &self,
        account_id: &AccountId,
        webhook_id: &str,
        update: WebhookUpdate<'_>,
    ) -> StoreResult<Option<Webhook>> {
        let key = self.key("webhooks", &[account_id]);
        self.update_field("update_webhook", &key, webhook_id, |webhook: Option<Webhook>| {
            Ok(match webhook {
                Some(mut w) => {
                    update(&mut w);
                    (Some(w.clone()), Some(w))
                }
                None => (None, None),
            })
        })
        .await
    }

    /// The webhook, its cursor and its log go in one atomic step. The account leaves
    /// `webhook_accounts` once it has no webhook left; that is another slot, so another step, after
    /// which the account's webhooks are counted again: a webhook put in between (whose own listing
    /// may have come before the removal) lists the account again.
    pub(super) async fn delete_webhook_now(&self, account_id: &AccountId, webhook_id: &str) -> StoreResult<bool> {
        const WHAT: &str = "delete_webhook";
        let webhooks = self.key("webhooks", &[account_id]);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HDEL")
            .arg(&webhooks)
            .arg(webhook_id)
            .cmd("HDEL")
            .arg(self.key("webhook_cursors", &[account_id]))
            .arg(webhook_id)
            .ignore()
            .cmd("HDEL")
            .arg(self.key("webhook_log", &[account_id]))
            .arg(webhook_id)
            .ignore()
            .cmd("HLEN")
            .arg(&webhooks);
        let (deleted, left): (i64, i64) = self.query_pipe(WHAT, &pipe).await?;
        if left == 0 {
            let listing = self.global_key("webhook_accounts", &[]);
            self.query::<i64>(WHAT, redis::cmd("SREM").arg(&listing).arg(account_id.as_str())).await?;
            let left: i64 = self.query(WHAT, redis::cmd("HLEN").arg(&webhooks)).await?;
            if left > 0 {
                self.query::<i64>(WHAT, redis::cmd("SADD").arg(&listing).arg(account_id.as_str())).await?;
            }
        }
        Ok(deleted == 1)
    }

    /// The node-wide listing, which may name an account whose webhooks are gone (see the module
    /// documentation).
    pub(super) async fn webhook_accounts_now(&self) -> StoreResult<Vec<AccountId>> {
        let members = self.members("webhook_accounts", &self.global_key("webhook_accounts", &[])).await?;
        Ok(members.into_iter().map(AccountId::from).collect())
    }

    pub(super) async fn webhook_cursor_now(
        &self,
        account_id: &AccountId,
        webhook_id: &str,
    ) -> StoreResult<Option<u64>> {
        let cmd = redis::cmd("HGET").arg(self.key("webhook_cursors", &[account_id])).arg(webhook_id).to_owned();
        self.query("webhook_cursor", &cmd).await
    }

    pub(super) async fn set_webhook_cursor_now(
        &self,
        account_id: &AccountId,
        webhook_id: &str,
        cursor: u64,
    ) -> StoreResult<()> {
        let cmd =
            redis::cmd("HSET").arg(self.key("webhook_cursors", &[account_id])).arg(webhook_id).arg(cursor).to_owned();
        self.query::<i64>("set_webhook_cursor", &cmd).await?;
        Ok(())
    }

    pub(super) async fn webhook_deliveries_now(
        &self,
        account_id: &AccountId,
        webhook_id: &str,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        let log = self.hget("webhook_deliveries", &self.key("webhook_log", &[account_id]), webhook_id).await?;
        Ok(log.unwrap_or_default())
    }

    pub(super) async fn put_webhook_deliveries_now(
        &self,
        account_id: &AccountId,
        webhook_id: &str,
        log: &[WebhookDelivery],
    ) -> StoreResult<()> {
        let cmd = redis::cmd("HSET")
            .arg(self.key("webhook_log", &[account_id]))
            .arg(webhook_id)
            .arg(encode(&log)?)
            .to_owned();
        self.query::<i64>("put_webhook_deliveries", &cmd).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EventType;
    use chrono::{DateTime, Utc};

    fn draft(station: Option<&str>) -> EventDraft {
        EventDraft {
            kind: EventType::StationBooted,
            time: DateTime::parse_from_rfc3339("2024-05-01T12:00:00.123456Z").unwrap().with_timezone(&Utc),
            station_id: station.map(Into::into),
            body: serde_json::json!({"id": 3, "nested": {"id": "x"}, "n": 1.5e300}),
        }
    }

    /// What the append script writes, done here the same way: the event's JSON as serde writes it.
    #[test]
    fn the_scripts_splice_of_the_id_into_a_draft_is_the_events_json() {
        for station in [Some("CP1"), None] {
            let d = draft(station);
            let json = draft_json(&d).unwrap();
            for id in [1u64, 42, 9_007_199_254_740_991] {
                let spliced = format!("{{\"id\":{id},{}", &json[1..]);
                assert_eq!(spliced, encode(&FeedEvent::from_draft(id, d.clone())).unwrap());
                let entry = ("0-".to_owned() + &id.to_string(), vec![EVENT_FIELD.to_owned(), spliced]);
                assert_eq!(entry_event(&entry).unwrap(), FeedEvent::from_draft(id, d.clone()));
            }
        }
    }

    #[test]
    fn a_feed_entry_whose_id_disagrees_with_its_event_is_refused() {
        let json = encode(&FeedEvent::from_draft(7, draft(None))).unwrap();
        assert!(entry_event(&("0-8".into(), vec![EVENT_FIELD.into(), json.clone()])).is_err());
        assert!(entry_event(&("1-7".into(), vec![EVENT_FIELD.into(), json.clone()])).is_err());
        assert!(entry_event(&("0-7".into(), vec!["other".into(), json])).is_err());
    }
}
