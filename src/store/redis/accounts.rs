//! The Redis store's [`AccountStore`]: a write is in Redis when its call returns (how durable it is
//! there is Redis's AOF setting, see the module documentation).

use super::scripts::SCRIPTS;
use super::{backend, command_field, decode, encode, queued_member, score, RedisStore};
use crate::ids::{AccountId, StationId};
use crate::model::{
    Account, ApiToken, CommandKey, CommandRecord, Consents, DataKind, DeviceVariable, EventDraft, EventKey,
    FeedCutoffs, FeedEvent, IdTag, LoginEvent, MeterRecord, Page, PageRequest, PruneStep, ReadingKey, ReadingPage,
    Station, StationEvent, StationFilter, Transaction, TransactionFilter, Webhook, WebhookDelivery,
};
use crate::store::rules::{backoff, contention, CAS_ATTEMPTS};
use crate::store::{AccountStore, AccountUpdate, ErasureReport, StationUpdate, StoreError, StoreResult, WebhookUpdate};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// How many entries of the queued list whose command is no longer queued one look at the oldest
/// drops before it gives up until the next look.
const STALE_QUEUED_DROPS: usize = 16;
/// The age past which an entry of the queued list without its queued command is taken as stale.
const STALE_QUEUED_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

#[async_trait]
impl AccountStore for RedisStore {
    fn feed_signal(&self) -> std::sync::Arc<crate::store::FeedSignal> {
        self.feed_signal.clone()
    }

    async fn add_feed_events(&self, account_id: &AccountId, events: &[EventDraft]) -> StoreResult<()> {
        self.append_feed_events(account_id, None, events).await
    }

    async fn feed_after(&self, account_id: &AccountId, after: u64, limit: usize) -> StoreResult<Vec<FeedEvent>> {
        self.feed_after_now(account_id, after, limit).await
    }

    async fn feed_head(&self, account_id: &AccountId) -> StoreResult<u64> {
        self.feed_head_now(account_id).await
    }

    async fn prune_feed(
        &self,
        account_id: &AccountId,
        cutoffs: &FeedCutoffs,
        after: Option<String>,
        batch: usize,
    ) -> StoreResult<PruneStep> {
        self.prune_feed_now(account_id, cutoffs, after, batch).await
    }

    async fn put_webhook(&self, webhook: &Webhook) -> StoreResult<()> {
        self.put_webhook_now(webhook).await
    }

    async fn webhook(&self, account_id: &AccountId, webhook_id: &str) -> StoreResult<Option<Webhook>> {
        self.webhook_now(account_id, webhook_id).await
    }

    async fn webhooks(&self, account_id: &AccountId) -> StoreResult<Vec<Webhook>> {
        self.webhooks_now(account_id).await
    }

    async fn update_webhook(
        &self,
        account_id: &AccountId,
        webhook_id: &str,
        update: WebhookUpdate<'_>,
    ) -> StoreResult<Option<Webhook>> {
        self.update_webhook_now(account_id, webhook_id, update).await
    }

    async fn delete_webhook(&self, account_id: &AccountId, webhook_id: &str) -> StoreResult<bool> {
        self.delete_webhook_now(account_id, webhook_id).await
    }

    async fn webhook_accounts(&self) -> StoreResult<Vec<AccountId>> {
        self.webhook_accounts_now().await
    }

    async fn webhook_cursor(&self, account_id: &AccountId, webhook_id: &str) -> StoreResult<Option<u64>> {
        self.webhook_cursor_now(account_id, webhook_id).await
    }

    async fn set_webhook_cursor(&self, account_id: &AccountId, webhook_id: &str, cursor: u64) -> StoreResult<()> {
        self.set_webhook_cursor_now(account_id, webhook_id, cursor).await
    }

    async fn webhook_deliveries(&self, account_id: &AccountId, webhook_id: &str) -> StoreResult<Vec<WebhookDelivery>> {
        self.webhook_deliveries_now(account_id, webhook_id).await
    }

    async fn put_webhook_deliveries(
        &self,
        account_id: &AccountId,
        webhook_id: &str,
        log: &[WebhookDelivery],
    ) -> StoreResult<()> {
        self.put_webhook_deliveries_now(account_id, webhook_id, log).await
    }

    async fn create_account(&self, account: &Account) -> StoreResult<()> {
        let mut invocation = SCRIPTS.create_account.prepare_invoke();
        invocation
            .key(self.dir_key("account", &[&account.id]))
            .key(self.dir_key("email", &[&account.email]))
            .key(self.dir_key("slug", &[&account.slug]))
            .key(self.dir_key("ids", &[]))
            .arg(account.id.as_str())
            .arg(encode(account)?);
        let outcome: String = self.eval("create_account", &invocation).await?;
        match outcome.as_str() {
            "ok" => Ok(()),
            "email" => Err(StoreError::Conflict("email")),
            "slug" => Err(StoreError::Conflict("slug")),
            other => Err(backend(format!("create_account: unexpected answer {other:?}"))),
        }
    }

    async fn account(&self, id: &AccountId) -> StoreResult<Option<Account>> {
        self.get("account", &self.dir_key("account", &[id])).await
    }

    async fn account_by_email(&self, email: &str) -> StoreResult<Option<Account>> {
        let id: Option<String> =
            self.query("account_by_email", redis::cmd("GET").arg(self.dir_key("email", &[email]))).await?;
        match id {
            Some(id) if !id.is_empty() => self.account(&AccountId::from(id)).await,
            _ => Ok(None),
        }
    }

    async fn update_account(&self, id: &AccountId, update: AccountUpdate<'_>) -> StoreResult<Option<Account>> {
        const WHAT: &str = "update_account";
        let key = self.dir_key("account", &[id]);
        for attempt in 0..CAS_ATTEMPTS {
            let Some(old_json) = self.query::<Option<String>>(WHAT, redis::cmd("GET").arg(&key)).await? else {
                return Ok(None);
            };
            let old: Account = decode(&old_json)?;
            let mut new = old.clone();
            update(&mut new);
            new.id = old.id.clone();
            let mut invocation = SCRIPTS.update_account.prepare_invoke();
            invocation
                .key(&key)
                .key(self.dir_key("email", &[&old.email]))
                .key(self.dir_key("email", &[&new.email]))
                .key(self.dir_key("slug", &[&old.slug]))
                .key(self.dir_key("slug", &[&new.slug]))
                .arg(&old_json)
                .arg(encode(&new)?)
                .arg(id.as_str());
            let outcome: String = self.eval(WHAT, &invocation).await?;
            match outcome.as_str() {
                "ok" => return Ok(Some(new)),
                "email" => return Err(StoreError::Conflict("email")),
                "slug" => return Err(StoreError::Conflict("slug")),
                "retry" => backoff(attempt).await,
                other => return Err(backend(format!("{WHAT}: unexpected answer {other:?}"))),
            }
        }
        Err(contention(WHAT))
    }

    async fn erase_account(&self, account_id: &AccountId) -> StoreResult<ErasureReport> {
        self.erase(account_id).await
    }

    async fn put_token(&self, token_hash: &str, token: &ApiToken) -> StoreResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.dir_key("token", &[token_hash]))
            .arg(encode(token)?)
            .ignore()
            .cmd("HSET")
            .arg(self.dir_key("tokens", &[&token.account_id]))
            .arg(&token.id)
            .arg(token_hash)
            .ignore();
        self.query_pipe("put_token", &pipe).await
    }

    async fn token(&self, token_hash: &str) -> StoreResult<Option<ApiToken>> {
        self.get("token", &self.dir_key("token", &[token_hash])).await
    }

    async fn tokens(&self, account_id: &AccountId) -> StoreResult<Vec<ApiToken>> {
        let hashes = self.hgetall("tokens", &self.dir_key("tokens", &[account_id])).await?;
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let mut mget = redis::cmd("MGET");
        for hash in hashes.values() {
            mget.arg(self.dir_key("token", &[hash]));
        }
        let found: Vec<Option<String>> = self.query("tokens", &mget).await?;
        let mut out: Vec<ApiToken> = found.iter().flatten().map(|t| decode(t)).collect::<StoreResult<_>>()?;
        out.sort_by_key(|t| t.created_at);
        Ok(out)
    }

    async fn delete_token(&self, account_id: &AccountId, token_id: &str) -> StoreResult<bool> {
        let index = self.dir_key("tokens", &[account_id]);
        let hash: Option<String> = self.query("delete_token", redis::cmd("HGET").arg(&index).arg(token_id)).await?;
        let Some(hash) = hash else { return Ok(false) };
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("DEL").arg(self.dir_key("token", &[&hash])).ignore().cmd("HDEL").arg(&index).arg(token_id);
        let (removed,): (i64,) = self.query_pipe("delete_token", &pipe).await?;
        Ok(removed == 1)
    }

    async fn delete_tokens_except(&self, account_id: &AccountId, keep: Option<&str>) -> StoreResult<usize> {
        let index = self.dir_key("tokens", &[account_id]);
        let hashes = self.hgetall("delete_tokens_except", &index).await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut n = 0;
        for (token_id, hash) in &hashes {
            if keep == Some(token_id.as_str()) {
                continue;
            }
            pipe.cmd("DEL").arg(self.dir_key("token", &[hash])).ignore().cmd("HDEL").arg(&index).arg(token_id);
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        let removed: Vec<i64> = self.query_pipe("delete_tokens_except", &pipe).await?;
        Ok(removed.iter().filter(|&&r| r == 1).count())
    }

    async fn consents(&self, account_id: &AccountId) -> StoreResult<Consents> {
        Ok(self.get("consents", &self.key("consents", &[account_id])).await?.unwrap_or_default())
    }

    async fn put_consents(&self, account_id: &AccountId, consents: &Consents) -> StoreResult<()> {
        let cmd = redis::cmd("SET").arg(self.key("consents", &[account_id])).arg(encode(consents)?).to_owned();
        self.query("put_consents", &cmd).await
    }

    async fn add_login_event(&self, account_id: &AccountId, event: &LoginEvent, keep: usize) -> StoreResult<()> {
        let key = self.key("logins", &[account_id]);
        let mut pipe = redis::pipe();
        pipe.atomic();
        if keep == 0 {
            pipe.cmd("DEL").arg(&key).ignore();
        } else {
            let keep = i64::try_from(keep).unwrap_or(i64::MAX);
            pipe.cmd("RPUSH").arg(&key).arg(encode(event)?).ignore();
            pipe.cmd("LTRIM").arg(&key).arg(-keep).arg(-1).ignore();
        }
        self.query_pipe("add_login_event", &pipe).await
    }

    async fn login_events(&self, account_id: &AccountId) -> StoreResult<Vec<LoginEvent>> {
        let events: Vec<String> = self
            .query("login_events", redis::cmd("LRANGE").arg(self.key("logins", &[account_id])).arg(0).arg(-1))
            .await?;
        events.iter().map(|e| decode(e)).collect()
    }

    async fn create_station(&self, station: &Station) -> StoreResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSETNX")
            .arg(self.key("stations", &[&station.account_id]))
            .arg(station.id.as_str())
            .arg(encode(station)?)
            // Already there when the station was: adding it again changes nothing.
            .cmd("ZADD")
            .arg(self.key("station_ids", &[&station.account_id]))
            .arg(0)
            .arg(station.id.as_str())
            .ignore();
        let (created,): (i64,) = self.query_pipe("create_station", &pipe).await?;
        if created == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict("station id"))
        }
    }

    async fn stations_page(
        &self,
        account_id: &AccountId,
        filter: &StationFilter,
        page: &PageRequest<StationId>,
    ) -> StoreResult<Page<Station, StationId>> {
        let (index, hash) = (self.key("station_ids", &[account_id]), self.key("stations", &[account_id]));
        let page =
            PageRequest { after: page.after.as_ref().map(|id| id.to_string()), limit: page.limit, budget: page.budget };
        let p = self.lex_page("stations", &index, &hash, &page, |s| filter.matches(s)).await?;
        Ok(p.map_key(StationId::from))
    }

    async fn station_count(&self, account_id: &AccountId) -> StoreResult<usize> {
        self.query("station_count", redis::cmd("HLEN").arg(self.key("stations", &[account_id]))).await
    }

    async fn update_station(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        update: StationUpdate<'_>,
    ) -> StoreResult<Option<Station>> {
        let key = self.key("stations", &[account_id]);
        self.update_field("update_station", &key, station_id, |station: Option<Station>| {
            Ok(match station {
                Some(mut s) => {
                    update(&mut s);
                    (Some(s.clone()), Some(s))
                }
                None => (None, None),
            })
        })
        .await
    }

    async fn delete_station(&self, account_id: &AccountId, station_id: &StationId) -> StoreResult<bool> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HDEL")
            .arg(self.key("stations", &[account_id]))
            .arg(station_id.as_str())
            .cmd("ZREM")
            .arg(self.key("station_ids", &[account_id]))
            .arg(station_id.as_str())
            .ignore();
        let (deleted,): (i64,) = self.query_pipe("delete_station", &pipe).await?;
        Ok(deleted == 1)
    }

    async fn put_id_tag(&self, account_id: &AccountId, tag: &IdTag) -> StoreResult<bool> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(self.key("id_tags", &[account_id]))
            .arg(&tag.id_tag)
            .arg(encode(tag)?)
            .cmd("ZADD")
            .arg(self.key("id_tag_ids", &[account_id]))
            .arg(0)
            .arg(&tag.id_tag)
            .ignore();
        let (created,): (i64,) = self.query_pipe("put_id_tag", &pipe).await?;
        Ok(created == 1)
    }

    async fn id_tags_page(
        &self,
        account_id: &AccountId,
        page: &PageRequest<String>,
    ) -> StoreResult<Page<IdTag, String>> {
        let (index, hash) = (self.key("id_tag_ids", &[account_id]), self.key("id_tags", &[account_id]));
        self.lex_page("id_tags", &index, &hash, page, |_: &IdTag| true).await
    }

    async fn delete_id_tag(&self, account_id: &AccountId, id_tag: &str) -> StoreResult<bool> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HDEL")
            .arg(self.key("id_tags", &[account_id]))
            .arg(id_tag)
            .cmd("ZREM")
            .arg(self.key("id_tag_ids", &[account_id]))
            .arg(id_tag)
            .ignore();
        let (deleted,): (i64,) = self.query_pipe("delete_id_tag", &pipe).await?;
        Ok(deleted == 1)
    }

    async fn transaction(&self, account_id: &AccountId, transaction_id: i32) -> StoreResult<Option<Transaction>> {
        self.hget("transaction", &self.key("txs", &[account_id]), &transaction_id.to_string()).await
    }

    async fn transactions_page(
        &self,
        account_id: &AccountId,
        filter: &TransactionFilter,
        page: &PageRequest<i32>,
    ) -> StoreResult<Page<Transaction, i32>> {
        self.transaction_page(account_id, filter, page).await
    }

    /// The readings are a sorted set scored by time, its ties ordered by the member (the reading's
    /// JSON): one `ZRANGEBYSCORE` from the cursor's time, past its readings of that time.
    async fn meter_values_page(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        transaction_id: i32,
        page: &PageRequest<ReadingKey>,
    ) -> StoreResult<Page<MeterRecord, ReadingKey>> {
        let key = self.key("meter", &[account_id, station_id, &transaction_id.to_string()]);
        let (min, skip) = match page.after {
            Some((t, n)) => (t.to_string(), n),
            None => ("-inf".to_string(), 0),
        };
        let mut cut = ReadingPage::new(page, true);
        let members: Vec<String> = self
            .query(
                "meter_values_page",
                redis::cmd("ZRANGEBYSCORE").arg(&key).arg(min).arg("+inf").arg("LIMIT").arg(skip).arg(cut.wanted()),
            )
            .await?;
        for m in &members {
            if !cut.offer(decode(m)?) {
                break;
            }
        }
        Ok(cut.finish())
    }

    async fn loose_reading_stations_page(
        &self,
        account_id: &AccountId,
        page: &PageRequest<StationId>,
    ) -> StoreResult<Page<StationId, StationId>> {
        self.loose_reading_stations(account_id, page).await
    }

    async fn events_page(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        page: &PageRequest<EventKey>,
    ) -> StoreResult<Page<StationEvent, EventKey>> {
        self.station_events(account_id, station_id, page).await
    }

    async fn commands_page(
        &self,
        account_id: &AccountId,
        page: &PageRequest<CommandKey>,
    ) -> StoreResult<Page<CommandRecord, CommandKey>> {
        self.command_records(account_id, page).await
    }

    async fn account_meter_values(&self, account_id: &AccountId) -> StoreResult<Vec<MeterRecord>> {
        const WHAT: &str = "account_meter_values";
        let mut keys: Vec<(String, i32)> = self
            .members(WHAT, &self.key("meter_keys", &[account_id]))
            .await?
            .iter()
            .map(|m| decode(m))
            .collect::<StoreResult<_>>()?;
        keys.sort();
        let mut out = Vec::new();
        for (station, tx) in keys {
            out.extend(
                self.zvalues::<MeterRecord>(WHAT, &self.key("meter", &[account_id, &station, &tx.to_string()])).await?,
            );
        }
        Ok(out)
    }

    async fn events(&self, account_id: &AccountId, station_id: &StationId) -> StoreResult<Vec<StationEvent>> {
        self.zvalues("events", &self.key("events", &[account_id, station_id])).await
    }

    async fn account_events(&self, account_id: &AccountId) -> StoreResult<Vec<StationEvent>> {
        let mut out = Vec::new();
        for station in self.members("account_events", &self.key("event_stations", &[account_id])).await? {
            out.extend(self.events(account_id, &StationId::from(station)).await?);
        }
        Ok(out)
    }

    async fn variables(&self, account_id: &AccountId, station_id: &StationId) -> StoreResult<Vec<DeviceVariable>> {
        // By key: component, its instance, EVSE, connector, variable, … — the order sled keeps.
        self.hvalues("variables", &self.key("vars", &[account_id, station_id])).await
    }

    async fn enqueue_command(&self, command: &CommandRecord) -> StoreResult<()> {
        let (account, station) = (command.account_id.as_str(), command.station_id.as_str());
        // First in the node-wide list of queued commands (a key of its own, so not in the script's
        // slot): a command queued is always counted; one listed whose queueing then failed is
        // dropped from the list when it comes first (see `oldest_queued_command`).
        let listed = redis::cmd("ZADD")
            .arg(self.global_key("queued", &[]))
            .arg(score(command.created_at))
            .arg(queued_member(command)?)
            .to_owned();
        self.query::<i64>("enqueue_command", &listed).await?;
        let mut invocation = SCRIPTS.enqueue_command.prepare_invoke();
        invocation
            .key(self.key("commands", &[account]))
            .key(self.key("queue", &[account, station]))
            .key(self.key("queue_stations", &[account]))
            .key(self.key("queue_seq", &[account]))
            .key(self.key("command_ids", &[account]))
            .arg(command_field(&command.station_id, &command.id))
            .arg(encode(command)?)
            .arg(&command.id)
            .arg(station);
        self.eval::<i64>("enqueue_command", &invocation).await?;
        Ok(())
    }

    async fn command(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        command_id: &str,
    ) -> StoreResult<Option<CommandRecord>> {
        self.hget("command", &self.key("commands", &[account_id]), &command_field(station_id, command_id)).await
    }

    async fn account_commands(&self, account_id: &AccountId) -> StoreResult<Vec<CommandRecord>> {
        // By field, `{station}:{command id}`: by station, then command id, as sled lists them.
        self.hvalues("account_commands", &self.key("commands", &[account_id])).await
    }

    async fn queued_command_count(&self) -> StoreResult<usize> {
        self.query("queued_command_count", redis::cmd("ZCARD").arg(self.global_key("queued", &[]))).await
    }

    async fn oldest_queued_command(&self) -> StoreResult<Option<DateTime<Utc>>> {
        const WHAT: &str = "oldest_queued_command";
        let queued = self.global_key("queued", &[]);
        // The list is written beside the queues, not with them: an entry whose command is no longer
        // queued (its queueing failed half-way, or its removal from the list did) is dropped here.
        for _ in 0..STALE_QUEUED_DROPS {
            let oldest: Vec<(String, f64)> =
                self.query(WHAT, redis::cmd("ZRANGE").arg(&queued).arg(0).arg(0).arg("WITHSCORES")).await?;
            let Some((member, micros)) = oldest.into_iter().next() else { return Ok(None) };
            let (account, station, id): (AccountId, StationId, String) = decode(&member)?;
            let queue = self.key("queue", &[&account, &station]);
            let still_queued: Option<f64> = self.query(WHAT, redis::cmd("ZSCORE").arg(&queue).arg(&id)).await?;
            // A young entry may be one whose queueing is still on its way: it is left alone.
            let settled = micros < score(Utc::now() - STALE_QUEUED_AFTER);
            if still_queued.is_none() && settled {
                self.query::<i64>(WHAT, redis::cmd("ZREM").arg(&queued).arg(&member)).await?;
                continue;
            }
            // The record has the time to the nanosecond; the score, to the microsecond, if the record is gone.
            return match self.command(&account, &station, &id).await? {
                Some(record) => Ok(Some(record.created_at)),
                None => Ok(DateTime::from_timestamp_micros(micros as i64)),
            };
        }
        Ok(None)
    }

    async fn account_ids(&self, after: Option<String>, limit: usize) -> StoreResult<(Vec<AccountId>, Option<String>)> {
        self.account_id_range(after, limit).await
    }

    async fn lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> StoreResult<bool> {
        self.take_lease(name, holder, ttl).await
    }

    async fn prune(
        &self,
        account_id: &AccountId,
        kind: DataKind,
        before: DateTime<Utc>,
        after: Option<String>,
        batch: usize,
    ) -> StoreResult<PruneStep> {
        self.prune_kind(account_id, kind, before, after, batch).await
    }
}
