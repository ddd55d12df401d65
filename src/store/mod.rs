//! The system of record, behind one trait per caller:
//!
//! - [`StationStore`]: what a connected station's messages change and read (the OCPP handlers, the
//!   session, queued-command delivery). Writes are applied when a call returns and made durable by
//!   [`StationStore::flush`], which a station's message is acknowledged after: one group commit
//!   serves many messages. In cluster mode this is the node's write-ahead log ([`NodeLog`]).
//! - [`AccountStore`]: the API's records (accounts, tokens, consents, sign-ins, stations, id tags,
//!   command records, erasure, the reads of transactions, meter values and events). Every write is
//!   durable when it returns. In cluster mode this is [`RedisStore`] itself.
//! - [`StationLookup`]: the reads both need (a station, an id tag); a cluster node's station store
//!   answers them from its cache while Redis is down, the account store always from Redis.
//! - [`SharedStore`]: a store of record a cluster node's log drains into (both traits, plus putting
//!   a finished transaction record and reserving ids).
//!
//! On one node [`SledStore`] is all of them. The rules of a transaction ("first stop wins", "a
//! seqNo seen changes nothing") are methods of [`Transaction`]; each backend gives one
//! compare-and-set of a transaction record, over which [`rules`] runs them.

mod feed_signal;
mod group_commit;
mod node_log;
mod redis;
pub(crate) mod rules;
mod sled;

pub use self::redis::{RedisConnection, RedisStore, RedisTarget};
pub use self::sled::SledStore;
pub use feed_signal::FeedSignal;
pub use group_commit::{CommitPolicy, GroupCommit};
pub use node_log::{NodeLog, NodeLogSettings};

use crate::ids::{AccountId, StationId};
use crate::model::{
    Account, ApiToken, CommandKey, CommandRecord, Consents, DataKind, DeviceVariable, EventDraft, EventKey,
    FeedCutoffs, FeedEvent, IdTag, LoginEvent, MeterRecord, NewTransaction, Page, PageRequest, PruneStep, ReadingKey,
    StartIdentity, Station, StationChange, StationEvent, StationFilter, Transaction, TransactionFilter,
    TransactionStop, Webhook, WebhookDelivery,
};
use async_trait::async_trait;
use serde::Serialize;

/// The error a store failure came from (a sled, Redis, JSON or I/O error, or a message).
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What failed below the store: what was being done, and the error it came from.
#[derive(Debug)]
pub struct Cause {
    what: String,
    source: Option<Source>,
}

impl Cause {
    /// A failure described by a message alone (stored data that makes no sense, say).
    pub fn new(what: impl Into<String>) -> Self {
        Self { what: what.into(), source: None }
    }

    /// A failure of `what`, caused by `source`.
    pub fn from_source(what: impl Into<String>, source: impl Into<Source>) -> Self {
        Self { what: what.into(), source: Some(source.into()) }
    }
}

impl std::fmt::Display for Cause {
    /// The message and, after it, the source's: logs written with `%e` keep the detail (the source
    /// is also [`std::error::Error::source`], for callers that look at its type).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(source) if self.what.is_empty() => write!(f, "{source}"),
            Some(source) => write!(f, "{}: {source}", self.what),
            None => f.write_str(&self.what),
        }
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<&str> for Cause {
    fn from(what: &str) -> Self {
        Cause::new(what)
    }
}

impl From<String> for Cause {
    fn from(what: String) -> Self {
        Cause::new(what)
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique field is taken; the string names the field.
    #[error("{0} is already taken")]
    Conflict(&'static str),
    /// The backend answered with a failure, or what it holds is corrupt; retrying will not help.
    #[error("storage backend error: {0}")]
    Backend(#[source] Cause),
    /// The backend cannot be reached now (Redis: connection refused, timed out, I/O failed; a cluster
    /// node: what it does not hold itself while Redis is down); retrying later may work.
    #[error("storage unavailable: {0}")]
    Unavailable(#[source] Cause),
}

impl StoreError {
    /// [`StoreError::Backend`] with a message.
    pub fn backend(what: impl Into<String>) -> Self {
        StoreError::Backend(Cause::new(what))
    }

    /// [`StoreError::Unavailable`] with a message.
    pub fn unavailable(what: impl Into<String>) -> Self {
        StoreError::Unavailable(Cause::new(what))
    }
}

impl From<::sled::Error> for StoreError {
    /// sled is this node's own disk: its failures are answers, not unreachability.
    fn from(e: ::sled::Error) -> Self {
        StoreError::Backend(Cause::from_source("sled", e))
    }
}

impl From<serde_json::Error> for StoreError {
    /// A record that does not encode or decode: stored data is corrupt.
    fn from(e: serde_json::Error) -> Self {
        StoreError::Backend(Cause::from_source("record encoding", e))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
/// The outcome of a StopTransaction.
#[derive(Debug, Clone, PartialEq)]
pub enum StopOutcome {
    /// The transaction was open and is now closed.
    Stopped(Transaction),
    /// The transaction was closed already (a retried StopTransaction): nothing changed.
    AlreadyStopped(Transaction),
    /// No such transaction for this station.
    Unknown,
}

/// The outcome of an OCPP 2.0.1 TransactionEvent.
#[derive(Debug, Clone, PartialEq)]
pub struct EventOutcome {
    pub transaction: Transaction,
    /// False when an event with this seqNo was applied before: nothing changed.
    pub applied: bool,
    /// The event created the transaction (the first event the central system saw of it).
    pub created: bool,
}

/// Builds a new transaction record around the id the store allocated.
pub type NewTransactionFn<'a> = &'a (dyn Fn(i32) -> Transaction + Send + Sync);
/// Applies an event to a transaction record.
pub type TransactionUpdate<'a> = &'a (dyn Fn(&mut Transaction) + Send + Sync);

/// Changes a station record in place.
pub type StationUpdate<'a> = &'a (dyn Fn(&mut Station) + Send + Sync);

/// Changes an account record in place.
pub type AccountUpdate<'a> = &'a (dyn Fn(&mut Account) + Send + Sync);

/// Changes a webhook record in place.
pub type WebhookUpdate<'a> = &'a (dyn Fn(&mut Webhook) + Send + Sync);

/// How many records of each kind an erasure removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ErasureReport {
    pub stations: usize,
    pub id_tags: usize,
    pub transactions: usize,
    pub meter_values: usize,
    pub events: usize,
    pub commands: usize,
    /// Of `commands`, how many were still waiting in a station's queue.
    pub queued_commands: usize,
    pub tokens: usize,
    pub login_events: usize,
    pub consents: usize,
    /// Device-model variables reported by the account's 2.0.1 stations.
    pub device_variables: usize,
    /// Events of the account's feed.
    pub feed_events: usize,
    /// Webhooks, with their delivery state and log.
    pub webhooks: usize,
}

/// The reads both callers make: the station path (in cluster mode through the node's cache, so a
/// station is served while Redis is down) and the API (always the store of record).
#[async_trait]
pub trait StationLookup: Send + Sync + 'static {
    async fn station(&self, account_id: &AccountId, station_id: &StationId) -> StoreResult<Option<Station>>;
    async fn id_tag(&self, account_id: &AccountId, id_tag: &str) -> StoreResult<Option<IdTag>>;
}

/// What a connected station's messages change and read. Writes are applied when the call returns;
/// [`StationStore::flush`] makes every write before it durable, and a station's message is
/// acknowledged only after that (many messages share one flush).
#[async_trait]
pub trait StationStore: StationLookup {
    /// The tenant a station connects under (its URL's slug).
    async fn account_by_slug(&self, slug: &str) -> StoreResult<Option<Account>>;

    /// Applies a change the station's own messages made; returns the new record, `None` when there
    /// is no such station. The change is data, so a cluster node can keep it in its write-ahead log
    /// while the shared store is unreachable.
    async fn change_station(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        change: &StationChange,
    ) -> StoreResult<Option<Station>>;

    /// Records a started transaction with a new unique id. A retry of the same start (same station,
    /// connector, meterStart and timestamp) returns the transaction recorded the first time, with `false`.
    async fn start_transaction(&self, tx: &NewTransaction) -> StoreResult<(Transaction, bool)>;
    /// Stops the station's transaction: the first stop wins, a retried one changes nothing
    /// ([`Transaction::stop`]).
    async fn stop_transaction(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        transaction_id: i32,
        stop: &TransactionStop,
    ) -> StoreResult<StopOutcome>;
    /// Applies an OCPP 2.0.1 TransactionEvent to the transaction the station calls
    /// `station_transaction_id`, creating it (with an id from the same sequence as 1.6 transactions)
    /// if this is the first event seen of it. An event whose `seq_no` is among those already applied
    /// changes nothing ([`Transaction::apply_event`]).
    async fn apply_transaction_event(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        station_transaction_id: &str,
        seq_no: u64,
        create: NewTransactionFn<'_>,
        apply: TransactionUpdate<'_>,
    ) -> StoreResult<EventOutcome>;

    /// Keeps meter readings. A reading is identified by its station, connector, transaction, timestamp
    /// and values, so a retried MeterValues stores nothing twice.
    async fn add_meter_values(&self, account_id: &AccountId, records: &[MeterRecord]) -> StoreResult<()>;
    async fn add_event(&self, account_id: &AccountId, event: &StationEvent) -> StoreResult<()>;
    /// Stores device-model variables of a station, replacing those with the same key.
    async fn put_variables(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        variables: &[DeviceVariable],
    ) -> StoreResult<()>;
    /// Applies values a station saw (NotifyEvent) to the attributes with the same key, which keep
    /// the rest of what was reported of them ([`DeviceVariable::observed`]); an attribute not
    /// stored yet is stored as seen.
    async fn observe_variables(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        seen: &[DeviceVariable],
    ) -> StoreResult<()>;

    /// Appends events to the account's feed, in this order, each with an id greater than any the
    /// account's feed has given; durable with the next [`StationStore::flush`].
    async fn append_feed(&self, account_id: &AccountId, events: &[EventDraft]) -> StoreResult<()>;

    /// The station's commands still `Queued`, in the order they were queued.
    async fn queued_commands(&self, account_id: &AccountId, station_id: &StationId) -> StoreResult<Vec<CommandRecord>>;
    /// Replaces a command's record; once it is no longer `Queued` it leaves its station's queue.
    async fn update_command(&self, command: &CommandRecord) -> StoreResult<()>;

    /// Drops what this store holds of an account beyond the account store's reach, before and after
    /// [`AccountStore::erase_account`] (see [`erase_account`]): nothing on one node, where both are
    /// one store; a cluster node's log entries, caches and replica of it.
    async fn forget_account(&self, account_id: &AccountId) -> StoreResult<()>;

    /// Makes every write that returned before this call durable.
    async fn flush(&self) -> StoreResult<()>;
}

/// The API's records. Every write is durable when it returns (on sled through the group commit, so
/// concurrent writers share a flush).
#[async_trait]
pub trait AccountStore: StationLookup {
    async fn create_account(&self, account: &Account) -> StoreResult<()>;
    async fn account(&self, id: &AccountId) -> StoreResult<Option<Account>>;
    async fn account_by_email(&self, email: &str) -> StoreResult<Option<Account>>;

    /// Applies `update` to the account and returns the new record; `None` when there is no such account.
    /// A changed email or slug moves its index entry; one already taken is a `Conflict`.
    async fn update_account(&self, id: &AccountId, update: AccountUpdate<'_>) -> StoreResult<Option<Account>>;
    /// Removes the account and everything held about it: its email and slug index entries, tokens,
    /// stations, id tags, transactions, meter values, events, commands, consents and login history.
    /// The slug stays reserved, linked to nothing: [`AccountStore::create_account`] refuses it
    /// (station certificates naming it may still be valid). An erasure interrupted by a crash is
    /// finished when the store is next opened. Callers erase through [`erase_account`], which also
    /// sweeps the station store.
    async fn erase_account(&self, account_id: &AccountId) -> StoreResult<ErasureReport>;

    /// Stores a token under the hash of its secret.
    async fn put_token(&self, token_hash: &str, token: &ApiToken) -> StoreResult<()>;
    async fn token(&self, token_hash: &str) -> StoreResult<Option<ApiToken>>;
    /// The account's tokens, expired ones included until they are removed.
    async fn tokens(&self, account_id: &AccountId) -> StoreResult<Vec<ApiToken>>;
    /// Removes the account's token with this id; false when it has none.
    async fn delete_token(&self, account_id: &AccountId, token_id: &str) -> StoreResult<bool>;
    /// Removes every token of the account except the one with id `keep`; returns how many went.
    async fn delete_tokens_except(&self, account_id: &AccountId, keep: Option<&str>) -> StoreResult<usize>;

    /// The account's choices; all off when it never made any.
    async fn consents(&self, account_id: &AccountId) -> StoreResult<Consents>;
    async fn put_consents(&self, account_id: &AccountId, consents: &Consents) -> StoreResult<()>;

    /// Appends a sign-in attempt to the account's history, keeping only the newest `keep`.
    async fn add_login_event(&self, account_id: &AccountId, event: &LoginEvent, keep: usize) -> StoreResult<()>;
    /// The account's sign-in history, oldest first.
    async fn login_events(&self, account_id: &AccountId) -> StoreResult<Vec<LoginEvent>>;

    async fn create_station(&self, station: &Station) -> StoreResult<()>;
    /// A page of the account's stations by id, read from the id order; `filter` is checked on the
    /// records read ([`crate::model::PageBuilder`]).
    async fn stations_page(
        &self,
        account_id: &AccountId,
        filter: &StationFilter,
        page: &PageRequest<StationId>,
    ) -> StoreResult<Page<Station, StationId>>;
    /// How many stations the account has (its quota is checked against this).
    async fn station_count(&self, account_id: &AccountId) -> StoreResult<usize>;
    /// Applies `update` to the station and returns the new record; `None` when there is no such station.
    async fn update_station(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        update: StationUpdate<'_>,
    ) -> StoreResult<Option<Station>>;
    /// Removes the station; false when there was none.
    async fn delete_station(&self, account_id: &AccountId, station_id: &StationId) -> StoreResult<bool>;

    /// Creates or replaces an id tag; true when it was created.
    async fn put_id_tag(&self, account_id: &AccountId, tag: &IdTag) -> StoreResult<bool>;
    /// A page of the account's id tags by tag, read from the tag order.
    async fn id_tags_page(
        &self,
        account_id: &AccountId,
        page: &PageRequest<String>,
    ) -> StoreResult<Page<IdTag, String>>;
    async fn delete_id_tag(&self, account_id: &AccountId, id_tag: &str) -> StoreResult<bool>;

    async fn transaction(&self, account_id: &AccountId, transaction_id: i32) -> StoreResult<Option<Transaction>>;
    /// A page of the account's transactions, newest (highest id) first, read from an index in that
    /// order: the station's transactions when the filter names one, else the open ones when it asks
    /// only for those, else all; the rest of the filter is checked on the records read.
    async fn transactions_page(
        &self,
        account_id: &AccountId,
        filter: &TransactionFilter,
        page: &PageRequest<i32>,
    ) -> StoreResult<Page<Transaction, i32>>;
    /// A page of one transaction's meter readings in time order (see [`ReadingKey`]), read from
    /// where the cursor's time is stored on.
    async fn meter_values_page(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        transaction_id: i32,
        page: &PageRequest<ReadingKey>,
    ) -> StoreResult<Page<MeterRecord, ReadingKey>>;
    /// Every meter reading of one transaction, in time order, read a page at a time (for a
    /// transaction known to be small, and for tests).
    async fn transaction_meter_values(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        transaction_id: i32,
    ) -> StoreResult<Vec<MeterRecord>> {
        every_page(|page| async move { self.meter_values_page(account_id, station_id, transaction_id, &page).await })
            .await
    }
    /// A page of the ids of the account's stations with meter readings outside a transaction (kept
    /// under transaction 0, read with [`AccountStore::meter_values_page`]), by id. A deleted
    /// station's readings stay, so it is listed too.
    async fn loose_reading_stations_page(
        &self,
        account_id: &AccountId,
        page: &PageRequest<StationId>,
    ) -> StoreResult<Page<StationId, StationId>>;
    /// A page of one station's events in the order they were received (see [`EventKey`]).
    async fn events_page(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        page: &PageRequest<EventKey>,
    ) -> StoreResult<Page<StationEvent, EventKey>>;
    /// A page of the account's command records, whatever their status, by station, then command id
    /// (each in the store's own order of its keys).
    async fn commands_page(
        &self,
        account_id: &AccountId,
        page: &PageRequest<CommandKey>,
    ) -> StoreResult<Page<CommandRecord, CommandKey>>;
    /// Every meter reading of the account, with or without a transaction.
    async fn account_meter_values(&self, account_id: &AccountId) -> StoreResult<Vec<MeterRecord>>;
    async fn events(&self, account_id: &AccountId, station_id: &StationId) -> StoreResult<Vec<StationEvent>>;
    /// Every event of every station of the account.
    async fn account_events(&self, account_id: &AccountId) -> StoreResult<Vec<StationEvent>>;
    /// A station's device model, ordered by component, then variable.
    async fn variables(&self, account_id: &AccountId, station_id: &StationId) -> StoreResult<Vec<DeviceVariable>>;

    /// What wakes this node's readers of an account's feed when this store appends to it.
    fn feed_signal(&self) -> std::sync::Arc<FeedSignal>;
    /// Appends events to the account's feed, in this order, each with an id greater than any the
    /// account's feed has given; durable when it returns.
    async fn add_feed_events(&self, account_id: &AccountId, events: &[EventDraft]) -> StoreResult<()>;
    /// At most `limit` events of the account's feed with ids greater than `after`, in id order.
    /// Every event a reader is given has all the account's events with smaller ids before it: an
    /// event appended later has a greater id.
    async fn feed_after(&self, account_id: &AccountId, after: u64, limit: usize) -> StoreResult<Vec<FeedEvent>>;
    /// The greatest id of the account's feed so far (0 before its first event).
    async fn feed_head(&self, account_id: &AccountId) -> StoreResult<u64>;
    /// One step of removing the events of the account's feed that the retention rules call old
    /// ([`FeedEvent::is_old`]): looks at about `batch` events from the oldest, going on from the
    /// opaque position `after`; stops once it reaches events newer than every cutoff.
    async fn prune_feed(
        &self,
        account_id: &AccountId,
        cutoffs: &FeedCutoffs,
        after: Option<String>,
        batch: usize,
    ) -> StoreResult<PruneStep>;

    /// Stores a new webhook, or replaces one with its id.
    async fn put_webhook(&self, webhook: &Webhook) -> StoreResult<()>;
    async fn webhook(&self, account_id: &AccountId, webhook_id: &str) -> StoreResult<Option<Webhook>>;
    /// The account's webhooks, by id (an account has a few: `webhooks.max_per_account`).
    async fn webhooks(&self, account_id: &AccountId) -> StoreResult<Vec<Webhook>>;
    /// Applies `update` to the webhook and returns the new record; `None` when there is no such
    /// webhook. Concurrent updates do not lose each other's changes.
    async fn update_webhook(
        &self,
        account_id: &AccountId,
        webhook_id: &str,
        update: WebhookUpdate<'_>,
    ) -> StoreResult<Option<Webhook>>;
    /// Removes the webhook with its cursor and delivery log; false when there was none.
    async fn delete_webhook(&self, account_id: &AccountId, webhook_id: &str) -> StoreResult<bool>;
    /// Every account with at least one webhook.
    async fn webhook_accounts(&self) -> StoreResult<Vec<AccountId>>;
    /// Where the webhook's delivery stands: every event of the feed up to this id was delivered or
    /// is not for it. None before the dispatcher first set it.
    async fn webhook_cursor(&self, account_id: &AccountId, webhook_id: &str) -> StoreResult<Option<u64>>;
    async fn set_webhook_cursor(&self, account_id: &AccountId, webhook_id: &str, cursor: u64) -> StoreResult<()>;
    /// The webhook's delivery log, newest first.
    async fn webhook_deliveries(&self, account_id: &AccountId, webhook_id: &str) -> StoreResult<Vec<WebhookDelivery>>;
    /// Replaces the webhook's delivery log.
    async fn put_webhook_deliveries(
        &self,
        account_id: &AccountId,
        webhook_id: &str,
        log: &[WebhookDelivery],
    ) -> StoreResult<()>;

    /// Appends a command to its station's queue.
    async fn enqueue_command(&self, command: &CommandRecord) -> StoreResult<()>;
    async fn command(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        command_id: &str,
    ) -> StoreResult<Option<CommandRecord>>;
    /// Every command record of the account, whatever its status.
    async fn account_commands(&self, account_id: &AccountId) -> StoreResult<Vec<CommandRecord>>;
    /// Every queued command of every station, how many (for the queue gauge).
    async fn queued_command_count(&self) -> StoreResult<usize>;
    /// When the oldest command still queued was queued.
    async fn oldest_queued_command(&self) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>>;
    /// Some of the ids of every account, going on after the opaque position `after` (from the start
    /// without one), and where to go on (None: every account was handed out). For work over every
    /// account in the background; an account created meanwhile may be missed until the next walk.
    async fn account_ids(&self, after: Option<String>, limit: usize) -> StoreResult<(Vec<AccountId>, Option<String>)>;
    /// Takes or renews the lease `name` for `holder` for `ttl`: true when `holder` holds it now, so
    /// that background work over every account runs on one node of a cluster at a time. One node
    /// (sled) always holds it.
    async fn lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> StoreResult<bool>;
    /// One step of removing the account's records of `kind` that the retention rules of
    /// [`crate::model`] call old at `before`: looks at about `batch` records at most, going on from
    /// the opaque position `after` (from the start without one). The readings of an open
    /// transaction are kept.
    async fn prune(
        &self,
        account_id: &AccountId,
        kind: DataKind,
        before: chrono::DateTime<chrono::Utc>,
        after: Option<String>,
        batch: usize,
    ) -> StoreResult<PruneStep>;
}

/// A store of record a cluster node's write-ahead log drains into: both callers' traits, and what
/// the log needs besides. Writes are applied when the call returns; [`StationStore::flush`] makes
/// them durable.
#[async_trait]
pub trait SharedStore: StationStore + AccountStore {
    /// The 1.6 transaction with this start (see [`Transaction::start_identity`]), if one was recorded.
    async fn transaction_by_start(&self, start: &StartIdentity) -> StoreResult<Option<Transaction>>;
    /// The 2.0.1 transaction the station calls `station_transaction_id`, if one was recorded.
    async fn transaction_by_reference(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        station_transaction_id: &str,
    ) -> StoreResult<Option<Transaction>>;
    /// Stores a transaction record as it is, with what finds it again (its start for a 1.6
    /// transaction, the station's reference for a 2.0.1 one), replacing any record with its id. This
    /// is how a cluster node's write-ahead log reaches the shared store, so applying the same record
    /// twice must change nothing.
    async fn put_transaction(&self, tx: &Transaction) -> StoreResult<()>;
    /// Takes `count` ids from the sequence transaction ids come from, for a cluster node to hand out
    /// on its own (while the shared store is unreachable, too). No other caller gets them.
    async fn reserve_transaction_ids(&self, count: u32) -> StoreResult<std::ops::Range<i32>>;
    /// Appends events a cluster node's log held ([`StationStore::append_feed`]), once: `origin`
    /// names where they were written (node and station) and `seq` grows with each entry written
    /// there; an entry whose `seq` is not above the last one applied from its origin changes
    /// nothing, so a drain retried after a lost answer appends nothing twice.
    async fn append_feed_from(
        &self,
        account_id: &AccountId,
        origin: &str,
        seq: u64,
        events: &[EventDraft],
    ) -> StoreResult<()>;
}

/// Every item of a paged list, read page after page (`read` reads the page asked): for lists known
/// to be small, and for tests.
pub async fn every_page<T, K, F, Fut>(mut read: F) -> StoreResult<Vec<T>>
where
    F: FnMut(PageRequest<K>) -> Fut,
    Fut: std::future::Future<Output = StoreResult<Page<T, K>>>,
{
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = read(PageRequest::new(after, crate::model::MAX_LIMIT)).await?;
        all.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(all),
        }
    }
}

/// Every transaction of the account (of one station when named), newest first, page after page.
pub async fn all_transactions<S: AccountStore + ?Sized>(
    store: &S,
    account_id: &AccountId,
    station: Option<&StationId>,
) -> StoreResult<Vec<Transaction>> {
    let filter = TransactionFilter { station: station.cloned(), ..TransactionFilter::default() };
    every_page(|p| {
        let filter = &filter;
        async move { store.transactions_page(account_id, filter, &p).await }
    })
    .await
}

/// Every station of the account, by id, page after page.
pub async fn all_stations<S: AccountStore + ?Sized>(store: &S, account_id: &AccountId) -> StoreResult<Vec<Station>> {
    every_page(|p| async move { store.stations_page(account_id, &StationFilter::default(), &p).await }).await
}

/// Every id tag of the account, by tag, page after page.
pub async fn all_id_tags<S: AccountStore + ?Sized>(store: &S, account_id: &AccountId) -> StoreResult<Vec<IdTag>> {
    every_page(|p| async move { store.id_tags_page(account_id, &p).await }).await
}

/// Erases an account (see [`AccountStore::erase_account`]): what the station store holds of it
/// first, so no write-ahead drain brings erased records back, then the account store, then the
/// station store again (a station still connected may have written meanwhile). The report is the
/// account store's.
pub async fn erase_account(
    stations: &dyn StationStore,
    accounts: &dyn AccountStore,
    account_id: &AccountId,
) -> StoreResult<ErasureReport> {
    stations.forget_account(account_id).await?;
    let report = accounts.erase_account(account_id).await?;
    stations.forget_account(account_id).await?;
    Ok(report)
}

/// Every store trait, for code that holds a concrete store (tests, mostly) and calls both sides.
pub mod prelude {
    pub use super::{AccountStore, SharedStore, StationLookup, StationStore};
}
