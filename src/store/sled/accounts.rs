//! The sled store's [`AccountStore`]: each write made durable (through the group commit) before it
//! returns.

use super::{
    abort, backend, decode, encode, get, key, leading_time, meter_span, off_worker, page_of, prefix, readings, scan,
    stored_readings, time_key, transactional, SledStore,
};
use crate::ids::{AccountId, StationId};
use crate::model::{
    reading_order, Account, ApiToken, CommandKey, CommandRecord, Consents, DataKind, DeviceVariable, EventDraft,
    EventKey, FeedCutoffs, FeedEvent, IdTag, LoginEvent, MeterRecord, Page, PageBuilder, PageRequest, PruneStep,
    ReadingKey, ReadingPage, Station, StationEvent, StationFilter, Transaction, TransactionFilter, Webhook,
    WebhookDelivery,
};
use crate::store::{AccountStore, AccountUpdate, ErasureReport, StationUpdate, StoreError, StoreResult, WebhookUpdate};
use async_trait::async_trait;
use sled::transaction::Transactional;

#[async_trait]
impl AccountStore for SledStore {
    async fn create_account(&self, account: &Account) -> StoreResult<()> {
        let written: StoreResult<()> = async {
            let value = encode(account)?;
            let r = (&self.accounts, &self.accounts_by_email, &self.accounts_by_slug).transaction(|(a, e, s)| {
                if e.get(account.email.as_bytes())?.is_some() {
                    return Err(abort(StoreError::Conflict("email")));
                }
                if s.get(account.slug.as_bytes())?.is_some() {
                    return Err(abort(StoreError::Conflict("slug")));
                }
                e.insert(account.email.as_bytes(), account.id.as_bytes())?;
                s.insert(account.slug.as_bytes(), account.id.as_bytes())?;
                a.insert(account.id.as_bytes(), value.as_slice())?;
                Ok(())
            });
            transactional(r)
        }
        .await;
        self.durable(written).await
    }

    async fn account(&self, id: &AccountId) -> StoreResult<Option<Account>> {
        get(&self.accounts, id.as_bytes())
    }

    async fn account_by_email(&self, email: &str) -> StoreResult<Option<Account>> {
        self.account_by_index(&self.accounts_by_email, email)
    }

    async fn update_account(&self, id: &AccountId, update: AccountUpdate<'_>) -> StoreResult<Option<Account>> {
        let written: StoreResult<Option<Account>> = async {
            let r = (&self.accounts, &self.accounts_by_email, &self.accounts_by_slug).transaction(|(a, e, s)| {
                let Some(bytes) = a.get(id.as_bytes())? else { return Ok(None) };
                let old: Account = decode(&bytes).map_err(abort)?;
                let mut new = old.clone();
                update(&mut new);
                new.id = old.id.clone();
                if new.email != old.email {
                    if e.get(new.email.as_bytes())?.is_some() {
                        return Err(abort(StoreError::Conflict("email")));
                    }
                    e.remove(old.email.as_bytes())?;
                    e.insert(new.email.as_bytes(), id.as_bytes())?;
                }
                if new.slug != old.slug {
                    if s.get(new.slug.as_bytes())?.is_some() {
                        return Err(abort(StoreError::Conflict("slug")));
                    }
                    s.remove(old.slug.as_bytes())?;
                    s.insert(new.slug.as_bytes(), id.as_bytes())?;
                }
                a.insert(id.as_bytes(), encode(&new).map_err(abort)?)?;
                Ok(Some(new))
            });
            transactional(r)
        }
        .await;
        self.durable(written).await
    }

    async fn erase_account(&self, account_id: &AccountId) -> StoreResult<ErasureReport> {
        let written: StoreResult<ErasureReport> = async { self.erase(account_id) }.await;
        self.durable(written).await
    }

    async fn put_token(&self, token_hash: &str, token: &ApiToken) -> StoreResult<()> {
        let written: StoreResult<()> = async {
            let value = encode(token)?;
            let index = key(&[token.account_id.as_bytes(), token.id.as_bytes()]);
            let r = (&self.tokens, &self.account_tokens).transaction(|(tokens, index_tree)| {
                tokens.insert(token_hash.as_bytes(), value.as_slice())?;
                index_tree.insert(index.as_slice(), token_hash.as_bytes())?;
                Ok(())
            });
            transactional(r)
        }
        .await;
        self.durable(written).await
    }

    async fn token(&self, token_hash: &str) -> StoreResult<Option<ApiToken>> {
        get(&self.tokens, token_hash.as_bytes())
    }

    async fn tokens(&self, account_id: &AccountId) -> StoreResult<Vec<ApiToken>> {
        let mut out = Vec::new();
        for item in self.account_tokens.scan_prefix(prefix(&[account_id.as_bytes()])) {
            let (_, hash) = item.map_err(backend)?;
            if let Some(token) = get::<ApiToken>(&self.tokens, &hash)? {
                out.push(token);
            }
        }
        out.sort_by_key(|t| t.created_at);
        Ok(out)
    }

    async fn delete_token(&self, account_id: &AccountId, token_id: &str) -> StoreResult<bool> {
        let written: StoreResult<bool> = async {
            let index = key(&[account_id.as_bytes(), token_id.as_bytes()]);
            let r = (&self.tokens, &self.account_tokens).transaction(|(tokens, index_tree)| {
                let Some(hash) = index_tree.remove(index.as_slice())? else { return Ok(false) };
                tokens.remove(hash)?;
                Ok(true)
            });
            transactional(r)
        }
        .await;
        self.durable(written).await
    }

    async fn delete_tokens_except(&self, account_id: &AccountId, keep: Option<&str>) -> StoreResult<usize> {
        let written: StoreResult<usize> = async {
            let mut removed = 0;
            for item in self.account_tokens.scan_prefix(prefix(&[account_id.as_bytes()])) {
                let (k, hash) = item.map_err(backend)?;
                let token_id = &k[account_id.len() + 1..];
                if keep.is_some_and(|keep| keep.as_bytes() == token_id) {
                    continue;
                }
                self.tokens.remove(hash).map_err(backend)?;
                self.account_tokens.remove(k).map_err(backend)?;
                removed += 1;
            }
            Ok(removed)
        }
        .await;
        self.durable(written).await
    }

    async fn consents(&self, account_id: &AccountId) -> StoreResult<Consents> {
        Ok(get(&self.consents, account_id.as_bytes())?.unwrap_or_default())
    }

    async fn put_consents(&self, account_id: &AccountId, consents: &Consents) -> StoreResult<()> {
        let written: StoreResult<()> = async {
            self.consents.insert(account_id.as_bytes(), encode(consents)?).map_err(backend)?;
            Ok(())
        }
        .await;
        self.durable(written).await
    }

    async fn add_login_event(&self, account_id: &AccountId, event: &LoginEvent, keep: usize) -> StoreResult<()> {
        let written: StoreResult<()> = async {
            let seq = self.db.generate_id().map_err(backend)?;
            let p = prefix(&[account_id.as_bytes()]);
            self.login_events
                .insert(key(&[account_id.as_bytes(), &seq.to_be_bytes()]), encode(event)?)
                .map_err(backend)?;
            // Keys sort by sequence, so the oldest come first; drop what exceeds the limit.
            let total = self.login_events.scan_prefix(&p).count();
            for item in self.login_events.scan_prefix(&p).take(total.saturating_sub(keep)) {
                let (k, _) = item.map_err(backend)?;
                self.login_events.remove(k).map_err(backend)?;
            }
            Ok(())
        }
        .await;
        self.durable(written).await
    }

    async fn login_events(&self, account_id: &AccountId) -> StoreResult<Vec<LoginEvent>> {
        scan(&self.login_events, &prefix(&[account_id.as_bytes()]))
    }

    async fn create_station(&self, station: &Station) -> StoreResult<()> {
        let written: StoreResult<()> = async {
            let k = key(&[station.account_id.as_bytes(), station.id.as_bytes()]);
            let swapped =
                self.stations.compare_and_swap(k, None as Option<&[u8]>, Some(encode(station)?)).map_err(backend)?;
            swapped.map_err(|_| StoreError::Conflict("station id"))
        }
        .await;
        self.durable(written).await
    }

    async fn stations_page(
        &self,
        account_id: &AccountId,
        filter: &StationFilter,
        page: &PageRequest<StationId>,
    ) -> StoreResult<Page<Station, StationId>> {
        let (store, account_id, filter, page) = (self.clone(), account_id.clone(), filter.clone(), page.clone());
        off_worker(move || {
            let after = page.after.as_ref().map(|id| id.as_bytes());
            let p = prefix(&[account_id.as_bytes()]);
            page_of(&store.stations, &p, after, false, PageBuilder::new(&page), |_, v| {
                let station: Station = decode(&v)?;
                let matches = filter.matches(&station);
                Ok(Some((station.id.clone(), station, matches)))
            })
        })
        .await
    }

    async fn station_count(&self, account_id: &AccountId) -> StoreResult<usize> {
        let mut n = 0;
        for item in self.stations.scan_prefix(prefix(&[account_id.as_bytes()])) {
            item.map_err(backend)?;
            n += 1;
        }
        Ok(n)
    }

    async fn update_station(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        update: StationUpdate<'_>,
    ) -> StoreResult<Option<Station>> {
        let written = self.update_station_now(account_id, station_id, |s| update(s));
        self.durable(written).await
    }

    async fn delete_station(&self, account_id: &AccountId, station_id: &StationId) -> StoreResult<bool> {
        let written: StoreResult<bool> = async {
            let k = key(&[account_id.as_bytes(), station_id.as_bytes()]);
            Ok(self.stations.remove(k).map_err(backend)?.is_some())
        }
        .await;
        self.durable(written).await
    }

    async fn put_id_tag(&self, account_id: &AccountId, tag: &IdTag) -> StoreResult<bool> {
        let written: StoreResult<bool> = async {
            let k = key(&[account_id.as_bytes(), tag.id_tag.as_bytes()]);
            Ok(self.id_tags.insert(k, encode(tag)?).map_err(backend)?.is_none())
        }
        .await;
        self.durable(written).await
    }

    async fn id_tags_page(
        &self,
        account_id: &AccountId,
        page: &PageRequest<String>,
    ) -> StoreResult<Page<IdTag, String>> {
        let (store, account_id, page) = (self.clone(), account_id.clone(), page.clone());
        off_worker(move || {
            let after = page.after.as_ref().map(|t| t.as_bytes());
            let p = prefix(&[account_id.as_bytes()]);
            page_of(&store.id_tags, &p, after, false, PageBuilder::new(&page), |_, v| {
                let tag: IdTag = decode(&v)?;
                Ok(Some((tag.id_tag.clone(), tag, true)))
            })
        })
        .await
    }

    async fn delete_id_tag(&self, account_id: &AccountId, id_tag: &str) -> StoreResult<bool> {
        let written: StoreResult<bool> = async {
            let k = key(&[account_id.as_bytes(), id_tag.as_bytes()]);
            Ok(self.id_tags.remove(k).map_err(backend)?.is_some())
        }
        .await;
        self.durable(written).await
    }

    async fn variables(&self, account_id: &AccountId, station_id: &StationId) -> StoreResult<Vec<DeviceVariable>> {
        scan(&self.device_model, &prefix(&[account_id.as_bytes(), station_id.as_bytes()]))
    }

    async fn transaction(&self, account_id: &AccountId, transaction_id: i32) -> StoreResult<Option<Transaction>> {
        get(&self.transactions, &Self::transaction_key(account_id, transaction_id))
    }

    async fn transactions_page(
        &self,
        account_id: &AccountId,
        filter: &TransactionFilter,
        page: &PageRequest<i32>,
    ) -> StoreResult<Page<Transaction, i32>> {
        let (store, account_id, filter, page) = (self.clone(), account_id.clone(), filter.clone(), page.clone());
        off_worker(move || store.transactions_page_now(&account_id, &filter, &page)).await
    }

    async fn meter_values_page(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        transaction_id: i32,
        page: &PageRequest<ReadingKey>,
    ) -> StoreResult<Page<MeterRecord, ReadingKey>> {
        let p = prefix(&[account_id.as_bytes(), station_id.as_bytes(), &transaction_id.to_be_bytes()]);
        let (store, page) = (self.clone(), page.clone());
        off_worker(move || store.meter_values_page_now(&p, &page)).await
    }

    async fn loose_reading_stations_page(
        &self,
        account_id: &AccountId,
        page: &PageRequest<StationId>,
    ) -> StoreResult<Page<StationId, StationId>> {
        let (store, account_id, page) = (self.clone(), account_id.clone(), page.clone());
        off_worker(move || store.loose_reading_stations_page_now(&account_id, &page)).await
    }

    async fn events_page(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        page: &PageRequest<EventKey>,
    ) -> StoreResult<Page<StationEvent, EventKey>> {
        let p = prefix(&[account_id.as_bytes(), station_id.as_bytes()]);
        let (store, page) = (self.clone(), page.clone());
        off_worker(move || store.events_page_now(&p, &page)).await
    }

    async fn commands_page(
        &self,
        account_id: &AccountId,
        page: &PageRequest<CommandKey>,
    ) -> StoreResult<Page<CommandRecord, CommandKey>> {
        let (store, account_id, page) = (self.clone(), account_id.clone(), page.clone());
        off_worker(move || store.commands_page_now(&account_id, &page)).await
    }

    async fn account_meter_values(&self, account_id: &AccountId) -> StoreResult<Vec<MeterRecord>> {
        readings(&self.meter_values, &prefix(&[account_id.as_bytes()]))
    }

    async fn events(&self, account_id: &AccountId, station_id: &StationId) -> StoreResult<Vec<StationEvent>> {
        scan(&self.events, &prefix(&[account_id.as_bytes(), station_id.as_bytes()]))
    }

    async fn account_events(&self, account_id: &AccountId) -> StoreResult<Vec<StationEvent>> {
        scan(&self.events, &prefix(&[account_id.as_bytes()]))
    }

    async fn enqueue_command(&self, command: &CommandRecord) -> StoreResult<()> {
        let written: StoreResult<()> = async {
            let record_key =
                key(&[command.account_id.as_bytes(), command.station_id.as_bytes(), command.id.as_bytes()]);
            let seq = self.db.generate_id().map_err(backend)?;
            let queue_key = key(&[command.account_id.as_bytes(), command.station_id.as_bytes(), &seq.to_be_bytes()]);
            let value = encode(command)?;
            let r = (&self.commands, &self.command_queue).transaction(|(commands, queue)| {
                commands.insert(record_key.as_slice(), value.as_slice())?;
                queue.insert(queue_key.as_slice(), command.id.as_bytes())?;
                Ok(())
            });
            transactional(r)
        }
        .await;
        self.durable(written).await
    }

    async fn command(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        command_id: &str,
    ) -> StoreResult<Option<CommandRecord>> {
        get(&self.commands, &key(&[account_id.as_bytes(), station_id.as_bytes(), command_id.as_bytes()]))
    }

    async fn account_commands(&self, account_id: &AccountId) -> StoreResult<Vec<CommandRecord>> {
        scan(&self.commands, &prefix(&[account_id.as_bytes()]))
    }

    async fn queued_command_count(&self) -> StoreResult<usize> {
        Ok(self.command_queue.len())
    }

    async fn oldest_queued_command(&self) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
        // The queue is keyed by station, then by order of queueing: each station's first entry is its
        // oldest. Queues are short-lived, so a walk over them at scrape time is cheap.
        let mut oldest: Option<chrono::DateTime<chrono::Utc>> = None;
        for item in self.command_queue.iter() {
            let (k, id) = item.map_err(backend)?;
            // The key ends with the 8-byte queue sequence; what precedes it is "account\0station\0".
            let Some(station_prefix) = k.len().checked_sub(8).map(|end| &k[..end]) else { continue };
            let mut record_key = station_prefix.to_vec();
            record_key.extend_from_slice(&id);
            if let Some(record) = get::<CommandRecord>(&self.commands, &record_key)? {
                oldest = Some(oldest.map_or(record.created_at, |o| o.min(record.created_at)));
            }
        }
        Ok(oldest)
    }

    async fn account_ids(&self, after: Option<String>, limit: usize) -> StoreResult<(Vec<AccountId>, Option<String>)> {
        let store = self.clone();
        off_worker(move || store.account_ids_now(after, limit)).await
    }

    fn feed_signal(&self) -> std::sync::Arc<crate::store::FeedSignal> {
        self.feed_signal.clone()
    }

    async fn add_feed_events(&self, account_id: &AccountId, events: &[EventDraft]) -> StoreResult<()> {
        let written = self.append_feed_now(account_id, events);
        self.durable(written).await
    }

    async fn feed_after(&self, account_id: &AccountId, after: u64, limit: usize) -> StoreResult<Vec<FeedEvent>> {
        let (store, account_id) = (self.clone(), account_id.clone());
        off_worker(move || store.feed_after_now(&account_id, after, limit)).await
    }

    async fn feed_head(&self, account_id: &AccountId) -> StoreResult<u64> {
        self.feed_head_now(account_id)
    }

    async fn prune_feed(
        &self,
        account_id: &AccountId,
        cutoffs: &FeedCutoffs,
        after: Option<String>,
        batch: usize,
    ) -> StoreResult<PruneStep> {
        let (store, account_id, cutoffs) = (self.clone(), account_id.clone(), cutoffs.clone());
        let written = off_worker(move || store.prune_feed_now(&account_id, &cutoffs, after, batch)).await;
        self.durable(written).await
    }

    async fn put_webhook(&self, webhook: &Webhook) -> StoreResult<()> {
        let written = self.put_webhook_now(webhook);
        self.durable(written).await
    }

    async fn webhook(&self, account_id: &AccountId, webhook_id: &str) -> StoreResult<Option<Webhook>> {
        self.webhook_now(account_id, webhook_id)
    }

    async fn webhooks(&self, account_id: &AccountId) -> StoreResult<Vec<Webhook>> {
        self.webhooks_now(account_id)
    }

    async fn update_webhook(
        &self,
        account_id: &AccountId,
        webhook_id: &str,
        update: WebhookUpdate<'_>,
    ) -> StoreResult<Option<Webhook>> {
        let written = self.update_webhook_now(account_id, webhook_id, update);
        self.durable(written).await
    }

    async fn delete_webhook(&self, account_id: &AccountId, webhook_id: &str) -> StoreResult<bool> {
        let written = self.delete_webhook_now(account_id, webhook_id);
        self.durable(written).await
    }

    async fn webhook_accounts(&self) -> StoreResult<Vec<AccountId>> {
        let store = self.clone();
        off_worker(move || store.webhook_accounts_now()).await
    }

    async fn webhook_cursor(&self, account_id: &AccountId, webhook_id: &str) -> StoreResult<Option<u64>> {
        self.webhook_cursor_now(account_id, webhook_id)
    }

    async fn set_webhook_cursor(&self, account_id: &AccountId, webhook_id: &str, cursor: u64) -> StoreResult<()> {
        let written = self.set_webhook_cursor_now(account_id, webhook_id, cursor);
        self.durable(written).await
    }

    async fn webhook_deliveries(&self, account_id: &AccountId, webhook_id: &str) -> StoreResult<Vec<WebhookDelivery>> {
        self.webhook_deliveries_now(account_id, webhook_id)
    }

    async fn put_webhook_deliveries(
        &self,
        account_id: &AccountId,
        webhook_id: &str,
        log: &[WebhookDelivery],
    ) -> StoreResult<()> {
        let written = self.put_webhook_deliveries_now(account_id, webhook_id, log);
        self.durable(written).await
    }

    /// One node: nobody else to share the work with.
    async fn lease(&self, _name: &str, _holder: &str, _ttl: std::time::Duration) -> StoreResult<bool> {
        Ok(true)
    }

    async fn prune(
        &self,
        account_id: &AccountId,
        kind: DataKind,
        before: chrono::DateTime<chrono::Utc>,
        after: Option<String>,
        batch: usize,
    ) -> StoreResult<PruneStep> {
        let (store, account_id) = (self.clone(), account_id.clone());
        off_worker(move || store.prune_now(&account_id, kind, before, after, batch)).await
    }
}

impl SledStore {
    /// [`AccountStore::meter_values_page`] of the transaction whose entries are under `p`, on the
    /// calling thread. Entries are keyed by their earliest time and each lies within one span of
    /// [`METER_SPAN_MS`]: reading starts at the first entry of the cursor's span, and goes a span at
    /// a time (the entries of a span may interleave), each span's readings ordered and each once.
    fn meter_values_page_now(
        &self,
        p: &[u8],
        page: &PageRequest<ReadingKey>,
    ) -> StoreResult<Page<MeterRecord, ReadingKey>> {
        let mut start = p.to_vec();
        if let Some((t, _)) = page.after {
            start.extend_from_slice(&time_key(meter_span(t.div_euclid(1000))));
        }
        let mut cut = ReadingPage::new(page, false);
        let mut span: Option<i64> = None;
        let mut held: Vec<(Vec<u8>, MeterRecord)> = Vec::new();
        // Offers the readings of a span in order; false once the page wants no more.
        let offer = |held: &mut Vec<(Vec<u8>, MeterRecord)>, cut: &mut ReadingPage| -> bool {
            held.sort_by(|(ab, a), (bb, b)| reading_order(a, ab).cmp(&reading_order(b, bb)));
            held.dedup_by(|(a, _), (b, _)| a == b);
            held.drain(..).all(|(_, r)| cut.offer(r))
        };
        for item in self.meter_values.range(start..) {
            let (k, v) = item.map_err(backend)?;
            if !k.starts_with(p) {
                break;
            }
            let this = meter_span(leading_time(&k[p.len()..], "meter-values")?);
            if span.is_some_and(|s| s != this) && !offer(&mut held, &mut cut) {
                return Ok(cut.finish());
            }
            span = Some(this);
            for r in stored_readings(&v)? {
                held.push((encode(&r)?, r));
            }
        }
        offer(&mut held, &mut cut);
        Ok(cut.finish())
    }

    /// [`AccountStore::transactions_page`], on the calling thread.
    fn transactions_page_now(
        &self,
        account_id: &AccountId,
        filter: &TransactionFilter,
        page: &PageRequest<i32>,
    ) -> StoreResult<Page<Transaction, i32>> {
        let after = page.after.map(i32::to_be_bytes);
        let after = after.as_ref().map(|a| a.as_slice());
        let record = |id: &[u8]| -> StoreResult<Option<(i32, Transaction, bool)>> {
            let id = i32::from_be_bytes(id.try_into().map_err(|_| StoreError::backend("bad transaction index"))?);
            // An index entry is written with its record, in one sled transaction.
            let tx: Option<Transaction> = get(&self.transactions, &Self::transaction_key(account_id, id))?;
            Ok(tx.map(|tx| {
                let matches = filter.matches(&tx);
                (id, tx, matches)
            }))
        };
        match (&filter.station, filter.open_only()) {
            (Some(station), _) => {
                let p = prefix(&[account_id.as_bytes(), station.as_bytes()]);
                page_of(&self.transactions_by_station, &p, after, true, PageBuilder::new(page), |id, _| record(id))
            }
            (None, true) => {
                let p = prefix(&[account_id.as_bytes()]);
                page_of(&self.open_transactions, &p, after, true, PageBuilder::new(page), |id, _| record(id))
            }
            (None, false) => page_of(
                &self.transactions,
                &prefix(&[account_id.as_bytes()]),
                after,
                true,
                PageBuilder::new(page),
                |id, v| {
                    let tx: Transaction = decode(&v)?;
                    let matches = filter.matches(&tx);
                    let id = i32::from_be_bytes(id.try_into().map_err(|_| StoreError::backend("bad transaction key"))?);
                    Ok(Some((id, tx, matches)))
                },
            ),
        }
    }
}
