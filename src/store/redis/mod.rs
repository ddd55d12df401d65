//! The shared store of a cluster: every store trait on Redis ([`super::StationStore`],
//! [`super::AccountStore`], [`super::SharedStore`]), so every node sees the same
//! accounts, stations, transactions and command queues.
//!
//! # Key layout
//!
//! Every key starts with `{key_prefix}:`, so several clusters can share one Redis. Record values are
//! JSON. Parts of a key that come from ids (accounts, stations, emails, …) have `%` written as `%25`,
//! `:` as `%3A`, `{` as `%7B` and `}` as `%7D`, so no two ids make the same key and no id makes a
//! hash tag. In the list, `{a}` is an account id, `{s}` a station id.
//!
//! The layout runs on a single Redis and on a Redis Cluster alike. A Redis Cluster runs a script or
//! a transaction only over keys of one hash slot, so the keys are in three groups:
//!
//! - **An account's keys** carry the account as their hash tag (`stations:{{a}}`: the braces in
//!   the key, around the account id): all of an account's data is in one slot, where every script
//!   and atomic pipeline that touches it runs. One account is never spread over several Redis
//!   nodes; many accounts are spread over all of them.
//! - **The directory** — the account records and what must be unique across accounts (emails,
//!   slugs) or found without knowing the account (API tokens) — shares the tag `{accounts}`, so an
//!   account is created, renamed or removed together with its email and slug by one script. It is
//!   one slot: one record per account and per token, read once per API request and per station
//!   connection.
//! - **Node-wide keys** are each used alone (one command, or a script over that key only): the
//!   transaction sequence (`INCRBY`), the list of queued commands behind the queue gauge, the list
//!   of accounts with webhooks, leases, markers.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `tx_seq` | string | the last transaction id handed out (1.6 and 2.0.1 share it; `INCRBY` reserves) |
//! | `layout` | string | the version of this key layout (see [`layout`]) |
//! | `indexed` | string | the version of the list indexes built from records stored before them |
//! | `lease:{name}` | string | the node holding a lease of background work (`retention`, `layout`), until it expires |
//! | `queued` | sorted set | JSON `[account, station, command id]` of every queued command, by creation time, µs; written beside the queues (not in their slot), so an entry whose command is no longer queued is dropped once it is a minute old and first |
//! | `webhook_accounts` | set | ids of the accounts with webhooks; best-effort (not in their slot): may name an account whose last webhook is gone, never misses one that has one |
//! | `{accounts}:account:{a}` | string | the account |
//! | `{accounts}:ids` | sorted set | every account id, all scored 0: in byte order, for walks over every account |
//! | `{accounts}:email:{email}` | string | the account id with that email |
//! | `{accounts}:slug:{slug}` | string | the account id with that slug; empty once the account is erased (reserved) |
//! | `{accounts}:token:{hash}` | string | an API token, under the SHA-256 of its secret |
//! | `{accounts}:tokens:{a}` | hash | token id → token hash |
//! | `{accounts}:erasing` | set | account ids whose erasure began and has not finished |
//! | `consents:{{a}}` | string | the account's consents |
//! | `logins:{{a}}` | list | sign-in events, oldest first, trimmed to the newest `keep` |
//! | `stations:{{a}}` | hash | station id → station |
//! | `station_ids:{{a}}` | sorted set | the station ids, all scored 0: in byte order, for pages |
//! | `id_tags:{{a}}` | hash | id tag → tag |
//! | `id_tag_ids:{{a}}` | sorted set | the id tags, all scored 0: in byte order, for pages |
//! | `txs:{{a}}` | hash | transaction id → transaction |
//! | `tx_ids:{{a}}` | sorted set | every transaction id, scored by itself: newest first, for pages |
//! | `tx_station:{{a}}:{s}` | sorted set | the station's transaction ids, scored by themselves |
//! | `tx_open:{{a}}` | sorted set | the ids of the transactions not stopped, scored by themselves |
//! | `tx_stations:{{a}}` | set | stations with a `tx_station:` key |
//! | `tx_starts:{{a}}` | hash | `{s}:{connector}:{start timestamp}:{meter start}` → id of the 1.6 transaction |
//! | `tx_refs:{{a}}` | hash | `{s}:{station's transaction id}` → id of the 2.0.1 transaction |
//! | `meter:{{a}}:{s}:{tx}` | sorted set | readings (JSON members, so a reading is kept once) by timestamp, µs; `tx` 0 = none |
//! | `meter_keys:{{a}}` | set | JSON `[station, tx]` of every `meter:` key of the account |
//! | `meter_stations:{{a}}` | sorted set | the stations with a `meter:{{a}}:{s}:0` key, all scored 0: in byte order, for pages |
//! | `events:{{a}}:{s}` | sorted set | station events (JSON members, so a replay is kept once) by received time, µs |
//! | `event_stations:{{a}}` | set | stations with an `events:` key |
//! | `vars:{{a}}:{s}` | hash | [`DeviceVariable::key`] → device-model variable |
//! | `var_stations:{{a}}` | set | stations with a `vars:` key |
//! | `commands:{{a}}` | hash | `{s}:{command id}` → command record, whatever its status |
//! | `command_ids:{{a}}` | sorted set | the fields of `commands:{{a}}`, all scored 0: in byte order, for pages |
//! | `queue:{{a}}:{s}` | sorted set | ids of the station's queued commands, by `queue_seq:{{a}}` at queueing |
//! | `queue_stations:{{a}}` | set | stations with a `queue:` key |
//! | `queue_seq:{{a}}` | string | the order of queueing |
//! | `feed:{{a}}` | stream | the account's feed: entry `0-{id}`, field `e` the event's JSON; old events removed by `XDEL` |
//! | `feed_seq:{{a}}` | string | the last feed id handed out (`INCR`, by the script that appends) |
//! | `feed_from:{{a}}` | hash | a cluster node's log origin → the last sequence appended from it |
//! | `webhooks:{{a}}` | hash | webhook id → webhook |
//! | `webhook_cursors:{{a}}` | hash | webhook id → the feed id its delivery has reached |
//! | `webhook_log:{{a}}` | hash | webhook id → its delivery log (a JSON array, newest first) |
//!
//! A list route reads one page: a range of an index (`ZRANGEBYLEX` or `ZREVRANGEBYSCORE`) and the
//! records it names (`HMGET`); each index entry is written by the same script or atomic pipeline
//! as its record. A reader of the feed reads a range of its stream (`XRANGE`) after the last event
//! it has: the stream is its own index. Erasure reads the per-account keys directly. Nothing walks
//! the key space but the one-time move of a store of the layout before hash tags (`SCAN`, once, on
//! a single Redis, marked by `layout`).
//!
//! # Several writers
//!
//! Read-modify-write changes (accounts, stations, transactions) are optimistic: the new value is
//! written by a Lua script only if the stored one is still what was read, else the change is
//! recomputed from the fresh value, a bounded number of times. Creations that must be unique across
//! nodes (a 1.6 start, a 2.0.1 reference, an email, a slug) are checked and written by one script.
//! `WATCH` is never used: the connection is multiplexed and shared.
//!
//! # Durability
//!
//! A write is in Redis when its call returns; [`super::StationStore::flush`] waits for nothing more, and
//! an [`super::AccountStore`] write is durable when it returns in the same sense. How much of it
//! survives a Redis crash is Redis's AOF setting: run it with `appendonly yes` and `appendfsync
//! everysec` (up to a second lost) or `always` (nothing acknowledged lost). In cluster mode each
//! node's sled write-ahead log covers what a station sent until it reached Redis.

mod accounts;
mod conn;
mod export;
mod feed;
mod index;
mod layout;
mod retention;
mod scripts;
mod station;

use super::rules::{backoff, contention, CAS_ATTEMPTS};
use super::{Cause, ErasureReport, StoreError, StoreResult};
use crate::ids::{AccountId, StationId};
use crate::model::{Account, CommandRecord, StartIdentity};
use chrono::{DateTime, Utc};
pub use conn::{RedisConnection, RedisTarget};
use redis::{FromRedisValue, ScriptInvocation};
use scripts::SCRIPTS;
use serde::{de::DeserializeOwned, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The kinds of an account's keys of which it has one.
const ACCOUNT_KINDS: [&str; 26] = [
    "consents",
    "logins",
    "stations",
    "station_ids",
    "id_tags",
    "id_tag_ids",
    "txs",
    "tx_ids",
    "tx_open",
    "tx_stations",
    "tx_starts",
    "tx_refs",
    "meter_keys",
    "meter_stations",
    "event_stations",
    "var_stations",
    "commands",
    "command_ids",
    "queue_stations",
    "queue_seq",
    "feed",
    "feed_seq",
    "feed_from",
    "webhooks",
    "webhook_cursors",
    "webhook_log",
];
/// The kinds of an account's keys of which it has one per station (`meter`: per station and
/// transaction), each listed by a set of the account (`tx_stations`, `meter_keys`, …).
const STATION_KINDS: [&str; 5] = ["tx_station", "meter", "events", "vars", "queue"];

/// The hash tag of the directory's keys (see [`RedisStore::dir_key`]).
const DIRECTORY_TAG: &str = "{accounts}";

/// What lists an account's keys: the stations with events, with device variables, the
/// `[station, tx]` of its meter readings, the stations with a command queue, and the stations with
/// transactions.
type AccountIndexes = (Vec<String>, Vec<String>, Vec<String>, Vec<String>, Vec<String>);

/// The Redis-backed store: one multiplexed connection (to one Redis or a Redis Cluster) that
/// reconnects by itself after Redis comes back. Clones share it.
#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConnection,
    /// Whether the store answers calls: not until its keys are in the layout this code reads (see
    /// [`layout`]). None for the handle that moves them.
    open: Option<Arc<AtomicBool>>,
    /// `{key_prefix}:`
    prefix: Arc<str>,
    /// The longest wait for one call to Redis.
    timeout: Duration,
    /// Wakes this node's readers of a feed this handle appended to.
    feed_signal: Arc<super::FeedSignal>,
}

/// One part of a key or hash field, escaped so that `:` only ever separates parts and braces only
/// ever mark a hash tag.
fn part(s: &str) -> Cow<'_, str> {
    if s.contains([':', '%', '{', '}']) {
        Cow::Owned(s.replace('%', "%25").replace(':', "%3A").replace('{', "%7B").replace('}', "%7D"))
    } else {
        Cow::Borrowed(s)
    }
}

/// Parts joined by `:`, each escaped.
fn join(parts: &[&str]) -> String {
    parts.iter().map(|p| part(p)).collect::<Vec<_>>().join(":")
}

/// Redis answered, with something that makes no sense here (stored data is corrupt, say).
fn backend(what: impl std::fmt::Display) -> StoreError {
    StoreError::backend(format!("redis: {what}"))
}

/// A failed Redis call: `Unavailable` when Redis could not be reached (a retry later may work),
/// `Backend` when it answered with an error.
fn failure(what: &str, e: redis::RedisError) -> StoreError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        StoreError::Unavailable(Cause::from_source(format!("redis: {what}"), e))
    } else {
        StoreError::Backend(Cause::from_source(format!("redis: {what}"), e))
    }
}

fn encode<T: Serialize>(value: &T) -> StoreResult<String> {
    Ok(serde_json::to_string(value)?)
}

fn decode<T: DeserializeOwned>(json: &str) -> StoreResult<T> {
    Ok(serde_json::from_str(json)?)
}

/// A time as a sorted-set score: microseconds, exact in an f64 until the year 2255.
fn score(t: DateTime<Utc>) -> f64 {
    t.timestamp_micros() as f64
}

fn transaction_id(n: i64) -> StoreResult<i32> {
    i32::try_from(n).map_err(|_| backend("transaction ids exhausted"))
}

fn parse_id(s: &str) -> StoreResult<i32> {
    s.parse().map_err(|_| backend(format!("bad transaction id {s:?} in an index")))
}

fn start_field(start: &StartIdentity) -> String {
    join(&[
        &start.station_id,
        &start.connector_id.to_string(),
        &start.start_timestamp.to_rfc3339(),
        &start.meter_start.to_string(),
    ])
}

fn command_field(station_id: &StationId, command_id: &str) -> String {
    join(&[station_id, command_id])
}

/// The member of the `queued` sorted set that names a command.
fn queued_member(command: &CommandRecord) -> StoreResult<String> {
    encode(&[command.account_id.as_str(), command.station_id.as_str(), &command.id])
}

impl RedisStore {
    /// Connects to `target`, keeping every key under `{key_prefix}:`. Each call to Redis waits at
    /// most `timeout`; past it, or when Redis cannot be reached, the call fails with
    /// [`StoreError::Unavailable`] and the next call tries to reconnect. Fails when Redis does not
    /// answer now. Finishes the erasures a crash interrupted.
    pub async fn connect(target: &RedisTarget, key_prefix: &str, timeout: Duration) -> StoreResult<RedisStore> {
        let store = Self::configure(target, key_prefix, timeout)?;
        store.maintenance().query::<String>("connect", &redis::cmd("PING")).await?;
        store.open().await?;
        store.finish_interrupted_erasures().await?;
        store.index_stored().await?;
        Ok(store)
    }

    /// Like [`RedisStore::connect`], without needing Redis to answer now: calls fail as unavailable
    /// until it does (a cluster node starts, and serves the stations it knows, while Redis is down).
    /// When Redis answers, returns once the store's keys are in this version's layout (see
    /// [`layout`]); otherwise that, and finishing interrupted erasures, happen in the background once
    /// it does. Must be called inside a tokio runtime that lives as long as the store.
    pub async fn connect_lazy(target: &RedisTarget, key_prefix: &str, timeout: Duration) -> StoreResult<RedisStore> {
        let store = Self::configure(target, key_prefix, timeout)?;
        match store.open().await {
            Ok(()) | Err(StoreError::Unavailable(_)) => {}
            Err(e) => return Err(e),
        }
        let background = store.clone();
        tokio::spawn(async move {
            loop {
                let ready = match background.open().await {
                    Ok(()) => match background.finish_interrupted_erasures().await {
                        Ok(()) => background.index_stored().await,
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                match ready {
                    Ok(()) => break,
                    Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_secs(1)).await,
                    Err(e) => {
                        tracing::error!(error = %e, "could not open the store, finish the interrupted erasures or index the stored lists");
                        break;
                    }
                }
            }
        });
        Ok(store)
    }

    fn configure(target: &RedisTarget, key_prefix: &str, timeout: Duration) -> StoreResult<RedisStore> {
        // A URL may hold a password: it is not repeated in errors.
        let conn = RedisConnection::lazy(target, timeout).map_err(|e| failure("configuring", e))?;
        let open = Some(Arc::new(AtomicBool::new(false)));
        Ok(RedisStore { conn, open, prefix: format!("{key_prefix}:").into(), timeout, feed_signal: Default::default() })
    }

    /// A handle on the same connection that answers while the store is still closed.
    fn maintenance(&self) -> RedisStore {
        RedisStore { open: None, ..self.clone() }
    }

    /// Brings the keys to the layout this code reads, then opens the store to calls.
    async fn open(&self) -> StoreResult<()> {
        let Some(open) = &self.open else { return Ok(()) };
        if open.load(Ordering::Acquire) {
            return Ok(());
        }
        self.maintenance().prepare_layout(&uuid::Uuid::new_v4().to_string()).await?;
        open.store(true, Ordering::Release);
        Ok(())
    }

    /// Fails while the store is closed (see [`RedisStore::open`]).
    fn check_open(&self, what: &str) -> StoreResult<()> {
        match &self.open {
            Some(open) if !open.load(Ordering::Acquire) => Err(StoreError::unavailable(format!(
                "redis: {what}: the store's keys are being moved to the layout of this version"
            ))),
            _ => Ok(()),
        }
    }

    /// A key of an account: `{key_prefix}:{kind}:{{account}}:{more parts…}`, parts escaped. The
    /// account (`parts[0]`) is the key's hash tag, so all of an account's keys are in one slot of a
    /// Redis Cluster, where its scripts and atomic pipelines can run.
    fn key(&self, kind: &str, parts: &[&str]) -> String {
        debug_assert!(!parts.is_empty(), "an account's key names the account");
        let mut k = String::with_capacity(self.prefix.len() + kind.len() + 60);
        k.push_str(&self.prefix);
        k.push_str(kind);
        for (i, p) in parts.iter().enumerate() {
            k.push(':');
            if i == 0 {
                k.push('{');
                k.push_str(&part(p));
                k.push('}');
            } else {
                k.push_str(&part(p));
            }
        }
        k
    }

    /// A key of the directory: `{key_prefix}:{accounts}:{kind}:{parts…}`. The account records and
    /// what must be unique across accounts (emails, slugs) or found without knowing the account
    /// (API tokens) share the hash tag `{accounts}`, so one script can check and change them together.
    fn dir_key(&self, kind: &str, parts: &[&str]) -> String {
        self.global_key(&format!("{DIRECTORY_TAG}:{kind}"), parts)
    }

    /// A key of its own: `{key_prefix}:{kind}:{parts…}`, in whatever slot its name falls in. Only
    /// ever used alone (one command, or a script of that key only).
    fn global_key(&self, kind: &str, parts: &[&str]) -> String {
        let mut k = format!("{}{kind}", self.prefix);
        for p in parts {
            k.push(':');
            k.push_str(&part(p));
        }
        k
    }

    fn timed_out(&self, what: &str) -> StoreError {
        StoreError::unavailable(format!("redis: {what}: no answer within {} ms", self.timeout.as_millis()))
    }

    /// Runs one command, bounded by the timeout.
    async fn query<T: FromRedisValue>(&self, what: &str, cmd: &redis::Cmd) -> StoreResult<T> {
        self.check_open(what)?;
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, cmd.query_async(&mut conn)).await {
            Ok(r) => r.map_err(|e| failure(what, e)),
            Err(_) => Err(self.timed_out(what)),
        }
    }

    /// Runs a pipeline (atomic when built with `.atomic()`), bounded by the timeout.
    async fn query_pipe<T: FromRedisValue>(&self, what: &str, pipe: &redis::Pipeline) -> StoreResult<T> {
        self.check_open(what)?;
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, pipe.query_async(&mut conn)).await {
            Ok(r) => r.map_err(|e| failure(what, e)),
            Err(_) => Err(self.timed_out(what)),
        }
    }

    /// Runs a script (loading it first when Redis does not have it, as after a restart), bounded by
    /// the timeout.
    async fn eval<T: FromRedisValue>(&self, what: &str, invocation: &ScriptInvocation<'_>) -> StoreResult<T> {
        self.check_open(what)?;
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn)).await {
            Ok(r) => r.map_err(|e| failure(what, e)),
            Err(_) => Err(self.timed_out(what)),
        }
    }

    async fn get<T: DeserializeOwned>(&self, what: &str, key: &str) -> StoreResult<Option<T>> {
        let json: Option<String> = self.query(what, redis::cmd("GET").arg(key)).await?;
        json.as_deref().map(decode).transpose()
    }

    async fn hget<T: DeserializeOwned>(&self, what: &str, key: &str, field: &str) -> StoreResult<Option<T>> {
        let json: Option<String> = self.query(what, redis::cmd("HGET").arg(key).arg(field)).await?;
        json.as_deref().map(decode).transpose()
    }

    /// Every field of a hash, by field (byte order).
    async fn hgetall(&self, what: &str, key: &str) -> StoreResult<BTreeMap<String, String>> {
        self.query(what, redis::cmd("HGETALL").arg(key)).await
    }

    /// The values of a hash, decoded, in byte order of their fields.
    async fn hvalues<T: DeserializeOwned>(&self, what: &str, key: &str) -> StoreResult<Vec<T>> {
        self.hgetall(what, key).await?.values().map(|v| decode(v)).collect()
    }

    /// The members of a set, sorted.
    async fn members(&self, what: &str, key: &str) -> StoreResult<Vec<String>> {
        let mut m: Vec<String> = self.query(what, redis::cmd("SMEMBERS").arg(key)).await?;
        m.sort();
        Ok(m)
    }

    /// A sorted set's members in score order, decoded.
    async fn zvalues<T: DeserializeOwned>(&self, what: &str, key: &str) -> StoreResult<Vec<T>> {
        let m: Vec<String> = self.query(what, redis::cmd("ZRANGE").arg(key).arg(0).arg(-1)).await?;
        m.iter().map(|v| decode(v)).collect()
    }

    /// Changes a JSON value in a hash field by compare-and-set: `change` gets the record (None when
    /// there is none) and says what to write, if anything, and what to return.
    async fn update_field<T, R>(
        &self,
        what: &str,
        key: &str,
        field: &str,
        change: impl Fn(Option<T>) -> StoreResult<(Option<T>, R)>,
    ) -> StoreResult<R>
    where
        T: Serialize + DeserializeOwned,
    {
        for attempt in 0..CAS_ATTEMPTS {
            let old: Option<String> = self.query(what, redis::cmd("HGET").arg(key).arg(field)).await?;
            let record = old.as_deref().map(decode::<T>).transpose()?;
            let (new, result) = change(record)?;
            let (Some(old), Some(new)) = (old, new) else { return Ok(result) };
            let new = encode(&new)?;
            if new == old {
                return Ok(result);
            }
            let swapped: i64 = self.eval(what, SCRIPTS.hash_cas.key(key).arg(field).arg(&old).arg(&new)).await?;
            if swapped == 1 {
                return Ok(result);
            }
            backoff(attempt).await;
        }
        Err(contention(what))
    }

    /// A new id from the transaction sequence.
    async fn next_transaction_id(&self) -> StoreResult<i32> {
        let n: i64 = self.query("transaction id", redis::cmd("INCR").arg(self.global_key("tx_seq", &[]))).await?;
        transaction_id(n)
    }

    /// Finishes erasures a crash interrupted: nothing of an erased account may outlive its erasure.
    async fn finish_interrupted_erasures(&self) -> StoreResult<()> {
        for account_id in self.members("erasures", &self.dir_key("erasing", &[])).await? {
            tracing::warn!(account = %account_id, "finishing an interrupted account erasure");
            self.erase(&AccountId::from(account_id)).await?;
        }
        Ok(())
    }

    /// Removes every record of the account (see [`super::AccountStore::erase_account`]). Idempotent, so it can be
    /// run again after a crash; the account leaves the `erasing` set only once everything else is gone.
    async fn erase(&self, account_id: &AccountId) -> StoreResult<ErasureReport> {
        const WHAT: &str = "erase_account";
        let erasing = self.dir_key("erasing", &[]);
        self.query::<i64>(WHAT, redis::cmd("SADD").arg(&erasing).arg(account_id.as_str())).await?;

        let account_key = self.dir_key("account", &[account_id]);
        let mut removed = false;
        for attempt in 0..CAS_ATTEMPTS {
            let json: Option<String> = self.query(WHAT, redis::cmd("GET").arg(&account_key)).await?;
            let Some(json) = json else {
                removed = true;
                break;
            };
            let account: Account = decode(&json)?;
            let mut invocation = SCRIPTS.remove_account.prepare_invoke();
            invocation
                .key(&account_key)
                .key(self.dir_key("email", &[&account.email]))
                .key(self.dir_key("slug", &[&account.slug]))
                .key(self.dir_key("ids", &[]))
                .arg(&json)
                .arg(account_id.as_str());
            if self.eval::<i64>(WHAT, &invocation).await? == 1 {
                removed = true;
                break;
            }
            backoff(attempt).await;
        }
        if !removed {
            return Err(contention(WHAT));
        }

        let k = |kind: &str| self.key(kind, &[account_id]);
        let token_hashes: BTreeMap<String, String> = self.hgetall(WHAT, &self.dir_key("tokens", &[account_id])).await?;
        let (event_stations, var_stations, meter_keys, queue_stations, tx_stations): AccountIndexes = self
            .query_pipe(
                WHAT,
                redis::pipe()
                    .cmd("SMEMBERS")
                    .arg(k("event_stations"))
                    .cmd("SMEMBERS")
                    .arg(k("var_stations"))
                    .cmd("SMEMBERS")
                    .arg(k("meter_keys"))
                    .cmd("SMEMBERS")
                    .arg(k("queue_stations"))
                    .cmd("SMEMBERS")
                    .arg(k("tx_stations")),
            )
            .await?;
        let event_keys: Vec<String> = event_stations.iter().map(|s| self.key("events", &[account_id, s])).collect();
        let var_keys: Vec<String> = var_stations.iter().map(|s| self.key("vars", &[account_id, s])).collect();
        let meter_keys: Vec<String> = meter_keys
            .iter()
            .map(|m| {
                let (station, tx): (String, i32) = decode(m)?;
                Ok(self.key("meter", &[account_id, &station, &tx.to_string()]))
            })
            .collect::<StoreResult<_>>()?;
        let queue_keys: Vec<String> = queue_stations.iter().map(|s| self.key("queue", &[account_id, s])).collect();
        let tx_station_keys: Vec<String> =
            tx_stations.iter().map(|s| self.key("tx_station", &[account_id, s])).collect();

        // Count what is there, then remove it all in one step.
        let mut count = redis::pipe();
        for kind in ["stations", "id_tags", "txs", "commands"] {
            count.cmd("HLEN").arg(k(kind));
        }
        count
            .cmd("LLEN")
            .arg(k("logins"))
            .cmd("EXISTS")
            .arg(k("consents"))
            .cmd("XLEN")
            .arg(k("feed"))
            .cmd("HLEN")
            .arg(k("webhooks"));
        for key in &var_keys {
            count.cmd("HLEN").arg(key);
        }
        for key in event_keys.iter().chain(&meter_keys) {
            count.cmd("ZCARD").arg(key);
        }
        let counts: Vec<usize> = self.query_pipe(WHAT, &count).await?;
        let expected = 8 + var_keys.len() + event_keys.len() + meter_keys.len();
        if counts.len() != expected {
            return Err(backend(format!("{WHAT}: {} counts for {expected} questions", counts.len())));
        }
        let mut queued: Vec<(String, Vec<String>)> = Vec::new();
        for (station, key) in queue_stations.iter().zip(&queue_keys) {
            let ids: Vec<String> = self.query(WHAT, redis::cmd("ZRANGE").arg(key).arg(0).arg(-1)).await?;
            queued.push((station.clone(), ids));
        }

        let mut report = ErasureReport {
            stations: counts[0],
            id_tags: counts[1],
            transactions: counts[2],
            commands: counts[3],
            login_events: counts[4],
            consents: counts[5],
            tokens: token_hashes.len(),
            feed_events: counts[6],
            webhooks: counts[7],
            ..ErasureReport::default()
        };
        let mut rest = counts[8..].iter();
        report.device_variables = rest.by_ref().take(var_keys.len()).sum();
        report.events = rest.by_ref().take(event_keys.len()).sum();
        report.meter_values = rest.sum();
        report.queued_commands = queued.iter().map(|(_, ids)| ids.len()).sum();

        // The directory's part (tokens), the account's part (its data) and the node-wide lists (of
        // queued commands, of accounts with webhooks) are in different slots of a Redis Cluster: each
        // is removed in a step of its own. The account leaves `erasing` only once all are done; a
        // crash in between is finished at the next start.
        let mut tokens = redis::pipe();
        tokens.atomic();
        for hash in token_hashes.values() {
            tokens.cmd("DEL").arg(self.dir_key("token", &[hash])).ignore();
        }
        tokens.cmd("DEL").arg(self.dir_key("tokens", &[account_id])).ignore();
        self.query_pipe::<()>(WHAT, &tokens).await?;

        let mut remove = redis::pipe();
        remove.atomic();
        for key in var_keys.iter().chain(&event_keys).chain(&meter_keys).chain(&queue_keys).chain(&tx_station_keys) {
            remove.cmd("DEL").arg(key).ignore();
        }
        for kind in ACCOUNT_KINDS {
            remove.cmd("DEL").arg(k(kind)).ignore();
        }
        self.query_pipe::<()>(WHAT, &remove).await?;

        let members: Vec<String> = queued
            .iter()
            .flat_map(|(station, ids)| {
                ids.iter().map(move |id| encode(&[account_id.as_str(), station.as_str(), id.as_str()]))
            })
            .collect::<StoreResult<_>>()?;
        if !members.is_empty() {
            let unlist = redis::cmd("ZREM").arg(self.global_key("queued", &[])).arg(&members).to_owned();
            self.query::<i64>(WHAT, &unlist).await?;
        }
        let webhook_accounts =
            redis::cmd("SREM").arg(self.global_key("webhook_accounts", &[])).arg(account_id.as_str()).to_owned();
        self.query::<i64>(WHAT, &webhook_accounts).await?;
        self.query::<i64>(WHAT, redis::cmd("SREM").arg(&erasing).arg(account_id.as_str())).await?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parts_are_escaped_so_distinct_ids_never_share_a_key() {
        assert_eq!(join(&["a:b", "c"]), "a%3Ab:c");
        assert_ne!(join(&["a:b", "c"]), join(&["a", "b:c"]));
        assert_eq!(join(&["100%", "x"]), "100%25:x");
        assert_ne!(join(&["a%3Ab"]), join(&["a:b"]));
        assert_eq!(join(&["plain", "CP001"]), "plain:CP001");
    }

    #[test]
    fn scores_keep_microseconds_exactly() {
        let t = DateTime::parse_from_rfc3339("2024-05-01T12:00:00.123456Z").unwrap().with_timezone(&Utc);
        assert_eq!(DateTime::from_timestamp_micros(score(t) as i64), Some(t));
        let before_1970 = DateTime::parse_from_rfc3339("1960-01-01T00:00:00.000001Z").unwrap().with_timezone(&Utc);
        assert!(score(before_1970) < score(t));
    }
}
