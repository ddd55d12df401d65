//! The Redis store's [`StationStore`] and [`SharedStore`], and the compare-and-set the transaction
//! rules run over.

use super::index::open_flag;
use super::scripts::SCRIPTS;
use super::{
    backend, command_field, decode, encode, join, parse_id, queued_member, score, start_field, transaction_id,
    RedisStore,
};
use crate::ids::{AccountId, StationId};
use crate::model::{
    Account, CommandRecord, CommandStatus, DeviceVariable, EventDraft, IdTag, MeterRecord, NewTransaction,
    StartIdentity, Station, StationChange, StationEvent, Transaction, TransactionStop,
};
use crate::store::rules::{self, TransactionAt, TransactionRecords};
use crate::store::{
    AccountStore, EventOutcome, NewTransactionFn, SharedStore, StationLookup, StationStore, StopOutcome, StoreResult,
    TransactionUpdate,
};
use async_trait::async_trait;
use chrono::Utc;

#[async_trait]
impl StationLookup for RedisStore {
    async fn station(&self, account_id: &AccountId, station_id: &StationId) -> StoreResult<Option<Station>> {
        self.hget("station", &self.key("stations", &[account_id]), station_id).await
    }

    async fn id_tag(&self, account_id: &AccountId, id_tag: &str) -> StoreResult<Option<IdTag>> {
        self.hget("id_tag", &self.key("id_tags", &[account_id]), id_tag).await
    }
}

#[async_trait]
impl StationStore for RedisStore {
    async fn account_by_slug(&self, slug: &str) -> StoreResult<Option<Account>> {
        let id: Option<String> =
            self.query("account_by_slug", redis::cmd("GET").arg(self.dir_key("slug", &[slug]))).await?;
        match id {
            // An empty id is the slug of an erased account: reserved, naming no one.
            Some(id) if !id.is_empty() => self.account(&AccountId::from(id)).await,
            _ => Ok(None),
        }
    }

    async fn change_station(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        change: &StationChange,
    ) -> StoreResult<Option<Station>> {
        AccountStore::update_station(self, account_id, station_id, &|s| change.apply(s)).await
    }

    async fn start_transaction(&self, tx: &NewTransaction) -> StoreResult<(Transaction, bool)> {
        const WHAT: &str = "start_transaction";
        // The id is taken before the start is checked, so a retried start leaves a gap in the sequence;
        // in exchange a start is one check-and-write that racing nodes cannot both win.
        let id = self.next_transaction_id().await?;
        let record = Transaction::started(tx, id, Utc::now());
        let mut invocation = SCRIPTS.start_transaction.prepare_invoke();
        invocation.key(self.key("tx_starts", &[&tx.account_id])).key(self.key("txs", &[&tx.account_id]));
        self.with_transaction_indexes(&mut invocation, &record);
        invocation.arg(start_field(&tx.start_identity())).arg(id).arg(encode(&record)?).arg(tx.station_id.as_str());
        let (found, json): (String, Option<String>) = self.eval(WHAT, &invocation).await?;
        if parse_id(&found)? == id {
            return Ok((record, true));
        }
        let json = json.ok_or_else(|| backend(format!("{WHAT}: the start index names a missing transaction")))?;
        Ok((decode(&json)?, false))
    }

    async fn stop_transaction(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        transaction_id: i32,
        stop: &TransactionStop,
    ) -> StoreResult<StopOutcome> {
        rules::stop_transaction(self, account_id, station_id, transaction_id, stop).await
    }

    async fn apply_transaction_event(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        station_transaction_id: &str,
        seq_no: u64,
        create: NewTransactionFn<'_>,
        apply: TransactionUpdate<'_>,
    ) -> StoreResult<EventOutcome> {
        let at = TransactionAt::Reference { account_id, station_id, reference: station_transaction_id };
        rules::apply_transaction_event(self, at, seq_no, create, apply).await
    }

    async fn add_meter_values(&self, account_id: &AccountId, records: &[MeterRecord]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let index = self.key("meter_keys", &[account_id]);
        let mut loose = std::collections::BTreeSet::new();
        for record in records {
            let tx = record.transaction_id.unwrap_or(0);
            if tx == 0 && loose.insert(record.station_id.as_str()) {
                pipe.cmd("ZADD")
                    .arg(self.key("meter_stations", &[account_id]))
                    .arg(0)
                    .arg(record.station_id.as_str())
                    .ignore();
            }
            // The member is the reading itself: the same reading twice is one member.
            pipe.cmd("ZADD")
                .arg(self.key("meter", &[account_id, &record.station_id, &tx.to_string()]))
                .arg(score(record.meter_value.timestamp))
                .arg(encode(record)?)
                .ignore();
            pipe.cmd("SADD").arg(&index).arg(encode(&(&record.station_id, tx))?).ignore();
        }
        self.query_pipe("add_meter_values", &pipe).await
    }

    async fn add_event(&self, account_id: &AccountId, event: &StationEvent) -> StoreResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("ZADD")
            .arg(self.key("events", &[account_id, &event.station_id]))
            .arg(score(event.received_at))
            .arg(encode(event)?)
            .ignore()
            .cmd("SADD")
            .arg(self.key("event_stations", &[account_id]))
            .arg(event.station_id.as_str())
            .ignore();
        self.query_pipe("add_event", &pipe).await
    }

    async fn put_variables(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        variables: &[DeviceVariable],
    ) -> StoreResult<()> {
        if variables.is_empty() {
            return Ok(());
        }
        let mut hset = redis::cmd("HSET");
        hset.arg(self.key("vars", &[account_id, station_id]));
        for v in variables {
            hset.arg(v.key()).arg(encode(v)?);
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .add_command(hset)
            .ignore()
            .cmd("SADD")
            .arg(self.key("var_stations", &[account_id]))
            .arg(station_id.as_str())
            .ignore();
        self.query_pipe("put_variables", &pipe).await
    }

    async fn observe_variables(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        seen: &[DeviceVariable],
    ) -> StoreResult<()> {
        let hash = self.key("vars", &[account_id, station_id]);
        let mut unknown: Vec<DeviceVariable> = Vec::new();
        for v in seen {
            if let Some(earlier) = unknown.iter_mut().find(|u| u.key() == v.key()) {
                *earlier = DeviceVariable::observed(Some(earlier.clone()), v);
                continue;
            }
            let known = self
                .update_field("observe_variables", &hash, &v.key(), |known: Option<DeviceVariable>| {
                    Ok(match known {
                        Some(known) => (Some(DeviceVariable::observed(Some(known), v)), true),
                        None => (None, false),
                    })
                })
                .await?;
            if !known {
                unknown.push(v.clone());
            }
        }
        self.put_variables(account_id, station_id, &unknown).await
    }

    async fn update_command(&self, command: &CommandRecord) -> StoreResult<()> {
        let (account, station) = (command.account_id.as_str(), command.station_id.as_str());
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(self.key("commands", &[account]))
            .arg(command_field(&command.station_id, &command.id))
            .arg(encode(command)?)
            .ignore()
            // A record written here first is listed as one enqueued is.
            .cmd("ZADD")
            .arg(self.key("command_ids", &[account]))
            .arg(0)
            .arg(command_field(&command.station_id, &command.id))
            .ignore();
        if command.status != CommandStatus::Queued {
            pipe.cmd("ZREM").arg(self.key("queue", &[account, station])).arg(&command.id).ignore();
        }
        self.query_pipe::<()>("update_command", &pipe).await?;
        if command.status != CommandStatus::Queued {
            // The node-wide list is a key of its own, out of the account's slot: taken off it after
            // the queue (should this fail, the list drops the entry itself, see
            // `oldest_queued_command`).
            let unlist = redis::cmd("ZREM").arg(self.global_key("queued", &[])).arg(queued_member(command)?).to_owned();
            self.query::<i64>("update_command", &unlist).await?;
        }
        Ok(())
    }

    async fn queued_commands(&self, account_id: &AccountId, station_id: &StationId) -> StoreResult<Vec<CommandRecord>> {
        const WHAT: &str = "queued_commands";
        let ids: Vec<String> = self
            .query(WHAT, redis::cmd("ZRANGE").arg(self.key("queue", &[account_id, station_id])).arg(0).arg(-1))
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut hmget = redis::cmd("HMGET");
        hmget.arg(self.key("commands", &[account_id]));
        for id in &ids {
            hmget.arg(command_field(station_id, id));
        }
        let records: Vec<Option<String>> = self.query(WHAT, &hmget).await?;
        let mut out = Vec::with_capacity(records.len());
        for json in records.iter().flatten() {
            let record: CommandRecord = decode(json)?;
            if record.status == CommandStatus::Queued {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// The account store is this store, and its erasure leaves nothing of the account behind.
    async fn forget_account(&self, _account_id: &AccountId) -> StoreResult<()> {
        Ok(())
    }

    async fn append_feed(&self, account_id: &AccountId, events: &[EventDraft]) -> StoreResult<()> {
        self.append_feed_events(account_id, None, events).await
    }

    async fn flush(&self) -> StoreResult<()> {
        // A write is in Redis once its call returned; how durable it is there is Redis's AOF setting.
        Ok(())
    }
}

#[async_trait]
impl SharedStore for RedisStore {
    async fn transaction_by_start(&self, start: &StartIdentity) -> StoreResult<Option<Transaction>> {
        let index = self.key("tx_starts", &[&start.account_id]);
        let id: Option<String> =
            self.query("transaction_by_start", redis::cmd("HGET").arg(index).arg(start_field(start))).await?;
        match id {
            Some(id) => self.transaction(&start.account_id, parse_id(&id)?).await,
            None => Ok(None),
        }
    }

    async fn transaction_by_reference(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        station_transaction_id: &str,
    ) -> StoreResult<Option<Transaction>> {
        let index = self.key("tx_refs", &[account_id]);
        let field = join(&[station_id, station_transaction_id]);
        let id: Option<String> =
            self.query("transaction_by_reference", redis::cmd("HGET").arg(index).arg(field)).await?;
        match id {
            Some(id) => self.transaction(account_id, parse_id(&id)?).await,
            None => Ok(None),
        }
    }

    async fn put_transaction(&self, tx: &Transaction) -> StoreResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("HSET").arg(self.key("txs", &[&tx.account_id])).arg(tx.id).arg(encode(tx)?).ignore();
        if let Some(start) = tx.start_identity() {
            pipe.cmd("HSET").arg(self.key("tx_starts", &[&tx.account_id])).arg(start_field(&start)).arg(tx.id).ignore();
        }
        if let Some(reference) = &tx.station_transaction_id {
            let field = join(&[&tx.station_id, reference]);
            pipe.cmd("HSET").arg(self.key("tx_refs", &[&tx.account_id])).arg(field).arg(tx.id).ignore();
        }
        self.index_transaction(&mut pipe, tx);
        self.query_pipe("put_transaction", &pipe).await
    }

    async fn reserve_transaction_ids(&self, count: u32) -> StoreResult<std::ops::Range<i32>> {
        let cmd = redis::cmd("INCRBY").arg(self.global_key("tx_seq", &[])).arg(count).to_owned();
        let end = transaction_id(self.query::<i64>("reserve_transaction_ids", &cmd).await?)?;
        // `end` is the last id taken; the range ends after it.
        let count = i32::try_from(count).map_err(|_| backend("too many ids asked for"))?;
        let end = end.checked_add(1).ok_or_else(|| backend("transaction ids exhausted"))?;
        Ok(end - count..end)
    }

    async fn append_feed_from(
        &self,
        account_id: &AccountId,
        origin: &str,
        seq: u64,
        events: &[EventDraft],
    ) -> StoreResult<()> {
        self.append_feed_events(account_id, Some((origin, seq)), events).await
    }
}

/// The one compare-and-set the transaction rules run over: a Lua script writes the record only if
/// its stored JSON is still what was read (a new one only if its reference is still free).
#[async_trait]
impl TransactionRecords for RedisStore {
    /// The record's stored JSON.
    type Version = String;

    async fn load(&self, at: TransactionAt<'_>) -> StoreResult<Option<(Transaction, String)>> {
        const WHAT: &str = "transaction";
        let (account_id, id) = match at {
            TransactionAt::Id { account_id, id } => (account_id, id.to_string()),
            TransactionAt::Reference { account_id, station_id, reference } => {
                let refs = self.key("tx_refs", &[account_id]);
                let field = join(&[station_id, reference]);
                let id: Option<String> = self.query(WHAT, redis::cmd("HGET").arg(refs).arg(field)).await?;
                let Some(id) = id else { return Ok(None) };
                (account_id, id)
            }
        };
        let json: Option<String> =
            self.query(WHAT, redis::cmd("HGET").arg(self.key("txs", &[account_id])).arg(&id)).await?;
        match json {
            Some(json) => Ok(Some((decode(&json)?, json))),
            None if matches!(at, TransactionAt::Reference { .. }) => {
                Err(backend(format!("{WHAT}: a reference names a missing transaction")))
            }
            None => Ok(None),
        }
    }

    async fn new_id(&self) -> StoreResult<i32> {
        self.next_transaction_id().await
    }

    async fn swap(&self, old: Option<&String>, new: &Transaction) -> StoreResult<bool> {
        const WHAT: &str = "transaction";
        let txs = self.key("txs", &[&new.account_id]);
        let json = encode(new)?;
        let (station, open) = (new.station_id.as_str(), open_flag(new));
        let mut invocation;
        match (old, &new.station_transaction_id) {
            (Some(old), _) => {
                invocation = SCRIPTS.transaction_cas.prepare_invoke();
                invocation.key(&txs);
                self.with_transaction_indexes(&mut invocation, new);
                invocation.arg(new.id).arg(old).arg(&json).arg(station).arg(open);
            }
            (None, Some(reference)) => {
                invocation = SCRIPTS.create_by_reference.prepare_invoke();
                invocation.key(self.key("tx_refs", &[&new.account_id])).key(&txs);
                self.with_transaction_indexes(&mut invocation, new);
                let field = join(&[&new.station_id, reference]);
                invocation.arg(field).arg(new.id).arg(&json).arg(station).arg(open);
            }
            (None, None) => {
                invocation = SCRIPTS.create_transaction.prepare_invoke();
                invocation.key(&txs);
                self.with_transaction_indexes(&mut invocation, new);
                invocation.arg(new.id).arg(&json).arg(station).arg(open);
            }
        }
        let swapped: i64 = self.eval(WHAT, &invocation).await?;
        Ok(swapped == 1)
    }
}
