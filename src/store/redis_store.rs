//! The shared store of a cluster: the [`Store`] contract on Redis, so every node sees the same
//! accounts, stations, transactions and command queues.
//!
//! # Key layout
//!
//! Every key starts with `{key_prefix}:`, so several clusters can share one Redis. Record values are
//! JSON. Parts of a key that come from ids (accounts, stations, emails, …) have `%` written as `%25`
//! and `:` as `%3A`, so no two ids make the same key. In the list, `{a}` is an account id, `{s}` a
//! station id.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `tx_seq` | string | the last transaction id handed out (1.6 and 2.0.1 share it; `INCRBY` reserves) |
//! | `erasing` | set | account ids whose erasure began and has not finished |
//! | `account:{a}` | string | the account |
//! | `email:{email}` | string | the account id with that email |
//! | `slug:{slug}` | string | the account id with that slug; empty once the account is erased (reserved) |
//! | `token:{hash}` | string | an API token, under the SHA-256 of its secret |
//! | `tokens:{a}` | hash | token id → token hash |
//! | `consents:{a}` | string | the account's consents |
//! | `logins:{a}` | list | sign-in events, oldest first, trimmed to the newest `keep` |
//! | `stations:{a}` | hash | station id → station |
//! | `id_tags:{a}` | hash | id tag → tag |
//! | `txs:{a}` | hash | transaction id → transaction |
//! | `tx_starts:{a}` | hash | `{s}:{connector}:{start timestamp}:{meter start}` → id of the 1.6 transaction |
//! | `tx_refs:{a}` | hash | `{s}:{station's transaction id}` → id of the 2.0.1 transaction |
//! | `meter:{a}:{s}:{tx}` | sorted set | readings (JSON members, so a reading is kept once) by timestamp, µs; `tx` 0 = none |
//! | `meter_keys:{a}` | set | JSON `[station, tx]` of every `meter:` key of the account |
//! | `events:{a}:{s}` | sorted set | station events (JSON members, so a replay is kept once) by received time, µs |
//! | `event_stations:{a}` | set | stations with an `events:` key |
//! | `vars:{a}:{s}` | hash | [`DeviceVariable::key`] → device-model variable |
//! | `var_stations:{a}` | set | stations with a `vars:` key |
//! | `commands:{a}` | hash | `{s}:{command id}` → command record, whatever its status |
//! | `queue:{a}:{s}` | sorted set | ids of the station's queued commands, by `queue_seq` at queueing |
//! | `queue_stations:{a}` | set | stations with a `queue:` key |
//! | `queue_seq` | string | the order of queueing |
//! | `queued` | sorted set | JSON `[account, station, command id]` of every queued command, by creation time, µs |
//!
//! Listings and erasure read these per-account keys directly; nothing walks the key space.
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
//! A write is in Redis when its call returns; [`Store::flush`] waits for nothing more. How much of it
//! survives a Redis crash is Redis's AOF setting: run it with `appendonly yes` and `appendfsync
//! everysec` (up to a second lost) or `always` (nothing acknowledged lost). In cluster mode each
//! node's sled write-ahead log covers what a station sent until it reached Redis.

use super::{
    AccountUpdate, ErasureReport, EventOutcome, NewTransactionFn, StationUpdate, StopOutcome, Store, StoreError,
    StoreResult, TransactionUpdate,
};
use crate::model::{
    Account, ApiToken, CommandRecord, CommandStatus, Consents, DeviceVariable, IdTag, LoginEvent, MeterRecord,
    NewTransaction, StartIdentity, Station, StationEvent, Transaction, TransactionStop,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::Rng;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Script, ScriptInvocation};
use serde::{de::DeserializeOwned, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// How often a compare-and-set is recomputed after another writer changed the value in between.
const CAS_ATTEMPTS: u32 = 32;

/// The Lua scripts; each checks and writes in one step, which Redis runs without interleaving.
struct Scripts {
    create_account: Script,
    update_account: Script,
    remove_account: Script,
    hash_cas: Script,
    start_transaction: Script,
    create_by_reference: Script,
    enqueue_command: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    // KEYS: account, email index, slug index. ARGV: account id, account JSON.
    create_account: Script::new(
        r"
        if redis.call('EXISTS', KEYS[2]) == 1 then return 'email' end
        if redis.call('EXISTS', KEYS[3]) == 1 then return 'slug' end
        redis.call('SET', KEYS[2], ARGV[1])
        redis.call('SET', KEYS[3], ARGV[1])
        redis.call('SET', KEYS[1], ARGV[2])
        return 'ok'
        ",
    ),
    // KEYS: account, old email, new email, old slug, new slug. ARGV: JSON read, new JSON, account id.
    update_account: Script::new(
        r"
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'retry' end
        if KEYS[2] ~= KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then return 'email' end
        if KEYS[4] ~= KEYS[5] and redis.call('EXISTS', KEYS[5]) == 1 then return 'slug' end
        if KEYS[2] ~= KEYS[3] then
            redis.call('DEL', KEYS[2])
            redis.call('SET', KEYS[3], ARGV[3])
        end
        if KEYS[4] ~= KEYS[5] then
            redis.call('DEL', KEYS[4])
            redis.call('SET', KEYS[5], ARGV[3])
        end
        redis.call('SET', KEYS[1], ARGV[2])
        return 'ok'
        ",
    ),
    // KEYS: account, its email index, its slug index. ARGV: JSON read, account id.
    // The slug stays, linked to nothing: it is reserved.
    remove_account: Script::new(
        r"
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        redis.call('DEL', KEYS[1])
        if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
        redis.call('SET', KEYS[3], '')
        return 1
        ",
    ),
    // KEYS: hash. ARGV: field, value read, new value.
    hash_cas: Script::new(
        r"
        if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
        return 1
        ",
    ),
    // KEYS: start index, transactions. ARGV: start field, new id, new JSON.
    // Returns the id of the transaction with this start and its record.
    start_transaction: Script::new(
        r"
        local existing = redis.call('HGET', KEYS[1], ARGV[1])
        if existing then return {existing, redis.call('HGET', KEYS[2], existing)} end
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
        redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
        return {ARGV[2], ARGV[3]}
        ",
    ),
    // KEYS: reference index, transactions. ARGV: reference field, new id, new JSON.
    create_by_reference: Script::new(
        r"
        if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
        redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
        return 1
        ",
    ),
    // KEYS: commands, station queue, queue stations, all queued, queue sequence.
    // ARGV: record field, record JSON, command id, station id, created at (µs), member of all queued.
    // Queueing the same command again keeps its place.
    enqueue_command: Script::new(
        r"
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
        if not redis.call('ZSCORE', KEYS[2], ARGV[3]) then
            redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[5]), ARGV[3])
        end
        redis.call('SADD', KEYS[3], ARGV[4])
        redis.call('ZADD', KEYS[4], ARGV[5], ARGV[6])
        return 1
        ",
    ),
});

/// What lists an account's keys: its tokens (id → hash), then the stations with events, with device
/// variables, the `[station, tx]` of its meter readings, and the stations with a command queue.
type AccountIndexes = (BTreeMap<String, String>, Vec<String>, Vec<String>, Vec<String>, Vec<String>);

/// The Redis-backed [`Store`]: one multiplexed connection that reconnects by itself after Redis
/// comes back. Clones share it.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    /// `{key_prefix}:`
    prefix: Arc<str>,
    /// The longest wait for one call to Redis.
    timeout: Duration,
}

/// One part of a key or hash field, escaped so that `:` only ever separates parts.
fn part(s: &str) -> Cow<'_, str> {
    if s.contains([':', '%']) {
        Cow::Owned(s.replace('%', "%25").replace(':', "%3A"))
    } else {
        Cow::Borrowed(s)
    }
}

/// Parts joined by `:`, each escaped.
fn join(parts: &[&str]) -> String {
    parts.iter().map(|p| part(p)).collect::<Vec<_>>().join(":")
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("redis: {e}"))
}

/// A failed Redis call: `Unavailable` when Redis could not be reached (a retry later may work),
/// `Backend` when it answered with an error.
fn failure(what: &str, e: redis::RedisError) -> StoreError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        StoreError::Unavailable(format!("redis: {what}: {e}"))
    } else {
        backend(format!("{what}: {e}"))
    }
}

fn encode<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(backend)
}

fn decode<T: DeserializeOwned>(json: &str) -> StoreResult<T> {
    serde_json::from_str(json).map_err(backend)
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

fn command_field(station_id: &str, command_id: &str) -> String {
    join(&[station_id, command_id])
}

/// The member of the `queued` sorted set that names a command.
fn queued_member(command: &CommandRecord) -> StoreResult<String> {
    encode(&[&command.account_id, &command.station_id, &command.id])
}

/// Pauses a little, more after each lost compare-and-set, so racing writers spread out.
async fn backoff(attempt: u32) {
    let micros = rand::thread_rng().gen_range(0..=200 * u64::from(attempt + 1));
    tokio::time::sleep(Duration::from_micros(micros)).await;
}

fn contention(what: &str) -> StoreError {
    backend(format!("{what}: the record kept changing under {CAS_ATTEMPTS} attempts to update it"))
}

impl RedisStore {
    /// Connects to Redis at `url` (`redis://host:port/db`), keeping every key under `{key_prefix}:`.
    /// Each call to Redis waits at most `timeout`; past it, or when Redis cannot be reached, the call
    /// fails with [`StoreError::Unavailable`] and the next call tries to reconnect. Fails when Redis
    /// does not answer now. Finishes the erasures a crash interrupted.
    pub async fn connect(url: &str, key_prefix: &str, timeout: Duration) -> StoreResult<RedisStore> {
        let (client, config) = Self::client(url, timeout)?;
        let conn = match tokio::time::timeout(timeout, ConnectionManager::new_with_config(client, config)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(failure("cannot connect", e)),
            Err(_) => {
                return Err(StoreError::Unavailable(format!("redis: cannot connect within {} ms", timeout.as_millis())))
            }
        };
        let store = RedisStore { conn, prefix: format!("{key_prefix}:").into(), timeout };
        store.query::<String>("connect", &redis::cmd("PING")).await?;
        store.finish_interrupted_erasures().await?;
        Ok(store)
    }

    /// Like [`RedisStore::connect`], without needing Redis to answer now: calls fail as unavailable
    /// until it does (a cluster node starts, and serves the stations it knows, while Redis is down).
    /// Interrupted erasures are finished in the background once Redis answers. Must be called
    /// inside a tokio runtime that lives as long as the store.
    pub fn connect_lazy(url: &str, key_prefix: &str, timeout: Duration) -> StoreResult<RedisStore> {
        let (client, config) = Self::client(url, timeout)?;
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| failure("configuring", e))?;
        let store = RedisStore { conn, prefix: format!("{key_prefix}:").into(), timeout };
        let background = store.clone();
        tokio::spawn(async move {
            loop {
                match background.finish_interrupted_erasures().await {
                    Ok(()) => break,
                    Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_secs(1)).await,
                    Err(e) => {
                        tracing::error!(error = %e, "could not finish the interrupted erasures");
                        break;
                    }
                }
            }
        });
        Ok(store)
    }

    fn client(url: &str, timeout: Duration) -> StoreResult<(redis::Client, ConnectionManagerConfig)> {
        // The URL may hold a password: it is not repeated in errors.
        let client = redis::Client::open(url).map_err(|e| backend(format!("invalid URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // One quick retry per reconnection; while Redis stays down, each call fails fast and the
            // next one tries again.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(timeout);
        Ok((client, config))
    }

    /// `{key_prefix}:{kind}:{parts…}`, parts escaped.
    fn key(&self, kind: &str, parts: &[&str]) -> String {
        let mut k = String::with_capacity(self.prefix.len() + kind.len() + 40);
        k.push_str(&self.prefix);
        k.push_str(kind);
        for p in parts {
            k.push(':');
            k.push_str(&part(p));
        }
        k
    }

    fn timed_out(&self, what: &str) -> StoreError {
        StoreError::Unavailable(format!("redis: {what}: no answer within {} ms", self.timeout.as_millis()))
    }

    /// Runs one command, bounded by the timeout.
    async fn query<T: FromRedisValue>(&self, what: &str, cmd: &redis::Cmd) -> StoreResult<T> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, cmd.query_async(&mut conn)).await {
            Ok(r) => r.map_err(|e| failure(what, e)),
            Err(_) => Err(self.timed_out(what)),
        }
    }

    /// Runs a pipeline (atomic when built with `.atomic()`), bounded by the timeout.
    async fn query_pipe<T: FromRedisValue>(&self, what: &str, pipe: &redis::Pipeline) -> StoreResult<T> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, pipe.query_async(&mut conn)).await {
            Ok(r) => r.map_err(|e| failure(what, e)),
            Err(_) => Err(self.timed_out(what)),
        }
    }

    /// Runs a script (loading it first when Redis does not have it, as after a restart), bounded by
    /// the timeout.
    async fn eval<T: FromRedisValue>(&self, what: &str, invocation: &ScriptInvocation<'_>) -> StoreResult<T> {
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
        let n: i64 = self.query("transaction id", redis::cmd("INCR").arg(self.key("tx_seq", &[]))).await?;
        transaction_id(n)
    }

    /// Finishes erasures a crash interrupted: nothing of an erased account may outlive its erasure.
    async fn finish_interrupted_erasures(&self) -> StoreResult<()> {
        for account_id in self.members("erasures", &self.key("erasing", &[])).await? {
            tracing::warn!(account = %account_id, "finishing an interrupted account erasure");
            self.erase(&account_id).await?;
        }
        Ok(())
    }

    /// Removes every record of the account (see [`Store::erase_account`]). Idempotent, so it can be
    /// run again after a crash; the account leaves the `erasing` set only once everything else is gone.
    async fn erase(&self, account_id: &str) -> StoreResult<ErasureReport> {
        const WHAT: &str = "erase_account";
        let erasing = self.key("erasing", &[]);
        self.query::<i64>(WHAT, redis::cmd("SADD").arg(&erasing).arg(account_id)).await?;

        let account_key = self.key("account", &[account_id]);
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
                .key(self.key("email", &[&account.email]))
                .key(self.key("slug", &[&account.slug]))
                .arg(&json)
                .arg(account_id);
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
        let (token_hashes, event_stations, var_stations, meter_keys, queue_stations): AccountIndexes = self
            .query_pipe(
                WHAT,
                redis::pipe()
                    .cmd("HGETALL")
                    .arg(k("tokens"))
                    .cmd("SMEMBERS")
                    .arg(k("event_stations"))
                    .cmd("SMEMBERS")
                    .arg(k("var_stations"))
                    .cmd("SMEMBERS")
                    .arg(k("meter_keys"))
                    .cmd("SMEMBERS")
                    .arg(k("queue_stations")),
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

        // Count what is there, then remove it all in one step.
        let mut count = redis::pipe();
        for kind in ["stations", "id_tags", "txs", "commands"] {
            count.cmd("HLEN").arg(k(kind));
        }
        count.cmd("LLEN").arg(k("logins")).cmd("EXISTS").arg(k("consents"));
        for key in &var_keys {
            count.cmd("HLEN").arg(key);
        }
        for key in event_keys.iter().chain(&meter_keys) {
            count.cmd("ZCARD").arg(key);
        }
        let counts: Vec<usize> = self.query_pipe(WHAT, &count).await?;
        let expected = 6 + var_keys.len() + event_keys.len() + meter_keys.len();
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
            ..ErasureReport::default()
        };
        let mut rest = counts[6..].iter();
        report.device_variables = rest.by_ref().take(var_keys.len()).sum();
        report.events = rest.by_ref().take(event_keys.len()).sum();
        report.meter_values = rest.sum();
        report.queued_commands = queued.iter().map(|(_, ids)| ids.len()).sum();

        let mut remove = redis::pipe();
        remove.atomic();
        for hash in token_hashes.values() {
            remove.cmd("DEL").arg(self.key("token", &[hash])).ignore();
        }
        let queued_all = self.key("queued", &[]);
        for (station, ids) in &queued {
            for id in ids {
                remove.cmd("ZREM").arg(&queued_all).arg(encode(&[account_id, station.as_str(), id.as_str()])?).ignore();
            }
        }
        for key in var_keys.iter().chain(&event_keys).chain(&meter_keys).chain(&queue_keys) {
            remove.cmd("DEL").arg(key).ignore();
        }
        for kind in [
            "tokens",
            "consents",
            "logins",
            "stations",
            "id_tags",
            "txs",
            "tx_starts",
            "tx_refs",
            "meter_keys",
            "event_stations",
            "var_stations",
            "commands",
            "queue_stations",
        ] {
            remove.cmd("DEL").arg(k(kind)).ignore();
        }
        remove.cmd("SREM").arg(&erasing).arg(account_id).ignore();
        self.query_pipe::<()>(WHAT, &remove).await?;
        Ok(report)
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn create_account(&self, account: &Account) -> StoreResult<()> {
        let mut invocation = SCRIPTS.create_account.prepare_invoke();
        invocation
            .key(self.key("account", &[&account.id]))
            .key(self.key("email", &[&account.email]))
            .key(self.key("slug", &[&account.slug]))
            .arg(&account.id)
            .arg(encode(account)?);
        let outcome: String = self.eval("create_account", &invocation).await?;
        match outcome.as_str() {
            "ok" => Ok(()),
            "email" => Err(StoreError::Conflict("email")),
            "slug" => Err(StoreError::Conflict("slug")),
            other => Err(backend(format!("create_account: unexpected answer {other:?}"))),
        }
    }

    async fn account(&self, id: &str) -> StoreResult<Option<Account>> {
        self.get("account", &self.key("account", &[id])).await
    }

    async fn account_by_email(&self, email: &str) -> StoreResult<Option<Account>> {
        let id: Option<String> =
            self.query("account_by_email", redis::cmd("GET").arg(self.key("email", &[email]))).await?;
        match id {
            Some(id) if !id.is_empty() => self.account(&id).await,
            _ => Ok(None),
        }
    }

    async fn account_by_slug(&self, slug: &str) -> StoreResult<Option<Account>> {
        let id: Option<String> =
            self.query("account_by_slug", redis::cmd("GET").arg(self.key("slug", &[slug]))).await?;
        match id {
            // An empty id is the slug of an erased account: reserved, naming no one.
            Some(id) if !id.is_empty() => self.account(&id).await,
            _ => Ok(None),
        }
    }

    async fn update_account(&self, id: &str, update: AccountUpdate<'_>) -> StoreResult<Option<Account>> {
        const WHAT: &str = "update_account";
        let key = self.key("account", &[id]);
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
                .key(self.key("email", &[&old.email]))
                .key(self.key("email", &[&new.email]))
                .key(self.key("slug", &[&old.slug]))
                .key(self.key("slug", &[&new.slug]))
                .arg(&old_json)
                .arg(encode(&new)?)
                .arg(id);
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

    async fn erase_account(&self, account_id: &str) -> StoreResult<ErasureReport> {
        self.erase(account_id).await
    }

    async fn put_token(&self, token_hash: &str, token: &ApiToken) -> StoreResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.key("token", &[token_hash]))
            .arg(encode(token)?)
            .ignore()
            .cmd("HSET")
            .arg(self.key("tokens", &[&token.account_id]))
            .arg(&token.id)
            .arg(token_hash)
            .ignore();
        self.query_pipe("put_token", &pipe).await
    }

    async fn token(&self, token_hash: &str) -> StoreResult<Option<ApiToken>> {
        self.get("token", &self.key("token", &[token_hash])).await
    }

    async fn tokens(&self, account_id: &str) -> StoreResult<Vec<ApiToken>> {
        let hashes = self.hgetall("tokens", &self.key("tokens", &[account_id])).await?;
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let mut mget = redis::cmd("MGET");
        for hash in hashes.values() {
            mget.arg(self.key("token", &[hash]));
        }
        let found: Vec<Option<String>> = self.query("tokens", &mget).await?;
        let mut out: Vec<ApiToken> = found.iter().flatten().map(|t| decode(t)).collect::<StoreResult<_>>()?;
        out.sort_by_key(|t| t.created_at);
        Ok(out)
    }

    async fn delete_token(&self, account_id: &str, token_id: &str) -> StoreResult<bool> {
        let index = self.key("tokens", &[account_id]);
        let hash: Option<String> = self.query("delete_token", redis::cmd("HGET").arg(&index).arg(token_id)).await?;
        let Some(hash) = hash else { return Ok(false) };
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("DEL").arg(self.key("token", &[&hash])).ignore().cmd("HDEL").arg(&index).arg(token_id);
        let (removed,): (i64,) = self.query_pipe("delete_token", &pipe).await?;
        Ok(removed == 1)
    }

    async fn delete_tokens_except(&self, account_id: &str, keep: Option<&str>) -> StoreResult<usize> {
        let index = self.key("tokens", &[account_id]);
        let hashes = self.hgetall("delete_tokens_except", &index).await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut n = 0;
        for (token_id, hash) in &hashes {
            if keep == Some(token_id.as_str()) {
                continue;
            }
            pipe.cmd("DEL").arg(self.key("token", &[hash])).ignore().cmd("HDEL").arg(&index).arg(token_id);
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        let removed: Vec<i64> = self.query_pipe("delete_tokens_except", &pipe).await?;
        Ok(removed.iter().filter(|&&r| r == 1).count())
    }

    async fn consents(&self, account_id: &str) -> StoreResult<Consents> {
        Ok(self.get("consents", &self.key("consents", &[account_id])).await?.unwrap_or_default())
    }

    async fn put_consents(&self, account_id: &str, consents: &Consents) -> StoreResult<()> {
        let cmd = redis::cmd("SET").arg(self.key("consents", &[account_id])).arg(encode(consents)?).to_owned();
        self.query("put_consents", &cmd).await
    }

    async fn add_login_event(&self, account_id: &str, event: &LoginEvent, keep: usize) -> StoreResult<()> {
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

    async fn login_events(&self, account_id: &str) -> StoreResult<Vec<LoginEvent>> {
        let events: Vec<String> = self
            .query("login_events", redis::cmd("LRANGE").arg(self.key("logins", &[account_id])).arg(0).arg(-1))
            .await?;
        events.iter().map(|e| decode(e)).collect()
    }

    async fn create_station(&self, station: &Station) -> StoreResult<()> {
        let cmd = redis::cmd("HSETNX")
            .arg(self.key("stations", &[&station.account_id]))
            .arg(&station.id)
            .arg(encode(station)?)
            .to_owned();
        let created: i64 = self.query("create_station", &cmd).await?;
        if created == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict("station id"))
        }
    }

    async fn station(&self, account_id: &str, station_id: &str) -> StoreResult<Option<Station>> {
        self.hget("station", &self.key("stations", &[account_id]), station_id).await
    }

    async fn stations(&self, account_id: &str) -> StoreResult<Vec<Station>> {
        self.hvalues("stations", &self.key("stations", &[account_id])).await
    }

    async fn station_count(&self, account_id: &str) -> StoreResult<usize> {
        self.query("station_count", redis::cmd("HLEN").arg(self.key("stations", &[account_id]))).await
    }

    async fn update_station(
        &self,
        account_id: &str,
        station_id: &str,
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

    async fn delete_station(&self, account_id: &str, station_id: &str) -> StoreResult<bool> {
        let cmd = redis::cmd("HDEL").arg(self.key("stations", &[account_id])).arg(station_id).to_owned();
        Ok(self.query::<i64>("delete_station", &cmd).await? == 1)
    }

    async fn put_id_tag(&self, account_id: &str, tag: &IdTag) -> StoreResult<bool> {
        let cmd =
            redis::cmd("HSET").arg(self.key("id_tags", &[account_id])).arg(&tag.id_tag).arg(encode(tag)?).to_owned();
        Ok(self.query::<i64>("put_id_tag", &cmd).await? == 1)
    }

    async fn id_tag(&self, account_id: &str, id_tag: &str) -> StoreResult<Option<IdTag>> {
        self.hget("id_tag", &self.key("id_tags", &[account_id]), id_tag).await
    }

    async fn id_tags(&self, account_id: &str) -> StoreResult<Vec<IdTag>> {
        self.hvalues("id_tags", &self.key("id_tags", &[account_id])).await
    }

    async fn delete_id_tag(&self, account_id: &str, id_tag: &str) -> StoreResult<bool> {
        let cmd = redis::cmd("HDEL").arg(self.key("id_tags", &[account_id])).arg(id_tag).to_owned();
        Ok(self.query::<i64>("delete_id_tag", &cmd).await? == 1)
    }

    async fn start_transaction(&self, tx: &NewTransaction) -> StoreResult<(Transaction, bool)> {
        const WHAT: &str = "start_transaction";
        // The id is taken before the start is checked, so a retried start leaves a gap in the sequence;
        // in exchange a start is one check-and-write that racing nodes cannot both win.
        let id = self.next_transaction_id().await?;
        let record = Transaction::started(tx, id, Utc::now());
        let mut invocation = SCRIPTS.start_transaction.prepare_invoke();
        invocation
            .key(self.key("tx_starts", &[&tx.account_id]))
            .key(self.key("txs", &[&tx.account_id]))
            .arg(start_field(&tx.start_identity()))
            .arg(id)
            .arg(encode(&record)?);
        let (found, json): (String, Option<String>) = self.eval(WHAT, &invocation).await?;
        if parse_id(&found)? == id {
            return Ok((record, true));
        }
        let json = json.ok_or_else(|| backend(format!("{WHAT}: the start index names a missing transaction")))?;
        Ok((decode(&json)?, false))
    }

    async fn stop_transaction(
        &self,
        account_id: &str,
        station_id: &str,
        transaction_id: i32,
        stop: &TransactionStop,
    ) -> StoreResult<StopOutcome> {
        let key = self.key("txs", &[account_id]);
        self.update_field("stop_transaction", &key, &transaction_id.to_string(), |tx: Option<Transaction>| {
            Ok(match tx {
                Some(tx) if tx.station_id != station_id => (None, StopOutcome::Unknown),
                None => (None, StopOutcome::Unknown),
                Some(tx) if tx.stop.is_some() => (None, StopOutcome::AlreadyStopped(tx)),
                Some(mut tx) => {
                    tx.stop = Some(stop.clone());
                    (Some(tx.clone()), StopOutcome::Stopped(tx))
                }
            })
        })
        .await
    }

    async fn apply_transaction_event(
        &self,
        account_id: &str,
        station_id: &str,
        station_transaction_id: &str,
        seq_no: u64,
        create: NewTransactionFn<'_>,
        apply: TransactionUpdate<'_>,
    ) -> StoreResult<EventOutcome> {
        const WHAT: &str = "apply_transaction_event";
        let refs = self.key("tx_refs", &[account_id]);
        let txs = self.key("txs", &[account_id]);
        let field = join(&[station_id, station_transaction_id]);
        let seen = |tx: &Transaction| tx.events.iter().any(|e| e.seq_no == seq_no);
        for attempt in 0..CAS_ATTEMPTS {
            let id: Option<String> = self.query(WHAT, redis::cmd("HGET").arg(&refs).arg(&field)).await?;
            match id {
                Some(id) => {
                    let old: Option<String> = self.query(WHAT, redis::cmd("HGET").arg(&txs).arg(&id)).await?;
                    let old = old.ok_or_else(|| backend(format!("{WHAT}: a reference names a missing transaction")))?;
                    let mut tx: Transaction = decode(&old)?;
                    if seen(&tx) {
                        return Ok(EventOutcome { transaction: tx, applied: false, created: false });
                    }
                    apply(&mut tx);
                    let mut invocation = SCRIPTS.hash_cas.prepare_invoke();
                    invocation.key(&txs).arg(&id).arg(&old).arg(encode(&tx)?);
                    if self.eval::<i64>(WHAT, &invocation).await? == 1 {
                        return Ok(EventOutcome { transaction: tx, applied: true, created: false });
                    }
                }
                None => {
                    let id = self.next_transaction_id().await?;
                    let mut tx = create(id);
                    let applied = !seen(&tx);
                    if applied {
                        apply(&mut tx);
                    }
                    let mut invocation = SCRIPTS.create_by_reference.prepare_invoke();
                    invocation.key(&refs).key(&txs).arg(&field).arg(id).arg(encode(&tx)?);
                    if self.eval::<i64>(WHAT, &invocation).await? == 1 {
                        return Ok(EventOutcome { transaction: tx, applied, created: true });
                    }
                    // Another node created it first (the id taken here stays unused): go again
                    // from its record.
                }
            }
            backoff(attempt).await;
        }
        Err(contention(WHAT))
    }

    async fn transaction(&self, account_id: &str, transaction_id: i32) -> StoreResult<Option<Transaction>> {
        self.hget("transaction", &self.key("txs", &[account_id]), &transaction_id.to_string()).await
    }

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
        account_id: &str,
        station_id: &str,
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
        self.query_pipe("put_transaction", &pipe).await
    }

    async fn reserve_transaction_ids(&self, count: u32) -> StoreResult<std::ops::Range<i32>> {
        let cmd = redis::cmd("INCRBY").arg(self.key("tx_seq", &[])).arg(count).to_owned();
        let end = transaction_id(self.query::<i64>("reserve_transaction_ids", &cmd).await?)?;
        // `end` is the last id taken; the range ends after it.
        let count = i32::try_from(count).map_err(|_| backend("too many ids asked for"))?;
        let end = end.checked_add(1).ok_or_else(|| backend("transaction ids exhausted"))?;
        Ok(end - count..end)
    }

    async fn transactions(&self, account_id: &str, station_id: Option<&str>) -> StoreResult<Vec<Transaction>> {
        let mut all: Vec<Transaction> = self.hvalues("transactions", &self.key("txs", &[account_id])).await?;
        if let Some(station) = station_id {
            all.retain(|t| t.station_id == station);
        }
        all.sort_by_key(|t| std::cmp::Reverse(t.id));
        Ok(all)
    }

    async fn add_meter_values(&self, account_id: &str, records: &[MeterRecord]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let index = self.key("meter_keys", &[account_id]);
        for record in records {
            let tx = record.transaction_id.unwrap_or(0);
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

    async fn transaction_meter_values(
        &self,
        account_id: &str,
        station_id: &str,
        transaction_id: i32,
    ) -> StoreResult<Vec<MeterRecord>> {
        let key = self.key("meter", &[account_id, station_id, &transaction_id.to_string()]);
        self.zvalues("transaction_meter_values", &key).await
    }

    async fn account_meter_values(&self, account_id: &str) -> StoreResult<Vec<MeterRecord>> {
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

    async fn add_event(&self, account_id: &str, event: &StationEvent) -> StoreResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("ZADD")
            .arg(self.key("events", &[account_id, &event.station_id]))
            .arg(score(event.received_at))
            .arg(encode(event)?)
            .ignore()
            .cmd("SADD")
            .arg(self.key("event_stations", &[account_id]))
            .arg(&event.station_id)
            .ignore();
        self.query_pipe("add_event", &pipe).await
    }

    async fn events(&self, account_id: &str, station_id: &str) -> StoreResult<Vec<StationEvent>> {
        self.zvalues("events", &self.key("events", &[account_id, station_id])).await
    }

    async fn account_events(&self, account_id: &str) -> StoreResult<Vec<StationEvent>> {
        let mut out = Vec::new();
        for station in self.members("account_events", &self.key("event_stations", &[account_id])).await? {
            out.extend(self.events(account_id, &station).await?);
        }
        Ok(out)
    }

    async fn put_variables(&self, account_id: &str, station_id: &str, variables: &[DeviceVariable]) -> StoreResult<()> {
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
            .arg(station_id)
            .ignore();
        self.query_pipe("put_variables", &pipe).await
    }

    async fn observe_variables(&self, account_id: &str, station_id: &str, seen: &[DeviceVariable]) -> StoreResult<()> {
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

    async fn variables(&self, account_id: &str, station_id: &str) -> StoreResult<Vec<DeviceVariable>> {
        // By key: component, its instance, EVSE, connector, variable, … — the order sled keeps.
        self.hvalues("variables", &self.key("vars", &[account_id, station_id])).await
    }

    async fn enqueue_command(&self, command: &CommandRecord) -> StoreResult<()> {
        let (account, station) = (command.account_id.as_str(), command.station_id.as_str());
        let mut invocation = SCRIPTS.enqueue_command.prepare_invoke();
        invocation
            .key(self.key("commands", &[account]))
            .key(self.key("queue", &[account, station]))
            .key(self.key("queue_stations", &[account]))
            .key(self.key("queued", &[]))
            .key(self.key("queue_seq", &[]))
            .arg(command_field(station, &command.id))
            .arg(encode(command)?)
            .arg(&command.id)
            .arg(station)
            .arg(score(command.created_at))
            .arg(queued_member(command)?);
        self.eval::<i64>("enqueue_command", &invocation).await?;
        Ok(())
    }

    async fn update_command(&self, command: &CommandRecord) -> StoreResult<()> {
        let (account, station) = (command.account_id.as_str(), command.station_id.as_str());
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(self.key("commands", &[account]))
            .arg(command_field(station, &command.id))
            .arg(encode(command)?)
            .ignore();
        if command.status != CommandStatus::Queued {
            pipe.cmd("ZREM").arg(self.key("queue", &[account, station])).arg(&command.id).ignore();
            pipe.cmd("ZREM").arg(self.key("queued", &[])).arg(queued_member(command)?).ignore();
        }
        self.query_pipe("update_command", &pipe).await
    }

    async fn command(
        &self,
        account_id: &str,
        station_id: &str,
        command_id: &str,
    ) -> StoreResult<Option<CommandRecord>> {
        self.hget("command", &self.key("commands", &[account_id]), &command_field(station_id, command_id)).await
    }

    async fn account_commands(&self, account_id: &str) -> StoreResult<Vec<CommandRecord>> {
        // By field, `{station}:{command id}`: by station, then command id, as sled lists them.
        self.hvalues("account_commands", &self.key("commands", &[account_id])).await
    }

    async fn queued_commands(&self, account_id: &str, station_id: &str) -> StoreResult<Vec<CommandRecord>> {
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

    async fn queued_command_count(&self) -> StoreResult<usize> {
        self.query("queued_command_count", redis::cmd("ZCARD").arg(self.key("queued", &[]))).await
    }

    async fn oldest_queued_command(&self) -> StoreResult<Option<DateTime<Utc>>> {
        const WHAT: &str = "oldest_queued_command";
        let oldest: Vec<(String, f64)> =
            self.query(WHAT, redis::cmd("ZRANGE").arg(self.key("queued", &[])).arg(0).arg(0).arg("WITHSCORES")).await?;
        let Some((member, micros)) = oldest.into_iter().next() else { return Ok(None) };
        // The record has the time to the nanosecond; the score, to the microsecond, if the record is gone.
        let (account, station, id): (String, String, String) = decode(&member)?;
        match self.command(&account, &station, &id).await? {
            Some(record) => Ok(Some(record.created_at)),
            None => Ok(DateTime::from_timestamp_micros(micros as i64)),
        }
    }

    async fn flush(&self) -> StoreResult<()> {
        // A write is in Redis once its call returned; how durable it is there is Redis's AOF setting.
        Ok(())
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
