//! The system of record behind a trait, so the embedded sled store and (in cluster mode) a shared
//! store serve the same contract.

mod cluster_store;
mod group_commit;
mod redis_store;
mod sled_store;

pub use cluster_store::{ClusterStore, ClusterStoreSettings};
pub use group_commit::{CommitPolicy, GroupCommit};
pub use redis_store::RedisStore;
pub use sled_store::SledStore;

use crate::model::{
    Account, ApiToken, CommandRecord, Consents, DeviceVariable, IdTag, LoginEvent, MeterRecord, NewTransaction,
    StartIdentity, Station, StationChange, StationEvent, Transaction, TransactionStop,
};
use async_trait::async_trait;
use serde::Serialize;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique field is taken; the string names the field.
    #[error("{0} is already taken")]
    Conflict(&'static str),
    /// The backend failed; the message is for logs.
    #[error("storage backend error: {0}")]
    Backend(String),
    /// The backend cannot be reached now (in cluster mode: Redis is down); retrying later may work.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
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
}

/// The system of record. Writes are applied when the call returns; [`Store::flush`] makes every write
/// before it durable, and a station's message is acknowledged only after that.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn create_account(&self, account: &Account) -> StoreResult<()>;
    async fn account(&self, id: &str) -> StoreResult<Option<Account>>;
    async fn account_by_email(&self, email: &str) -> StoreResult<Option<Account>>;
    async fn account_by_slug(&self, slug: &str) -> StoreResult<Option<Account>>;

    /// Applies `update` to the account and returns the new record; `None` when there is no such account.
    /// A changed email or slug moves its index entry; one already taken is a `Conflict`.
    async fn update_account(&self, id: &str, update: AccountUpdate<'_>) -> StoreResult<Option<Account>>;
    /// Removes the account and everything held about it: its email and slug index entries, tokens,
    /// stations, id tags, transactions, meter values, events, commands, consents and login history.
    /// The slug stays reserved, linked to nothing: [`Store::create_account`] refuses it (station
    /// certificates naming it may still be valid). An erasure interrupted by a crash is finished when
    /// the store is next opened.
    async fn erase_account(&self, account_id: &str) -> StoreResult<ErasureReport>;

    /// Stores a token under the hash of its secret.
    async fn put_token(&self, token_hash: &str, token: &ApiToken) -> StoreResult<()>;
    async fn token(&self, token_hash: &str) -> StoreResult<Option<ApiToken>>;
    /// The account's tokens, expired ones included until they are removed.
    async fn tokens(&self, account_id: &str) -> StoreResult<Vec<ApiToken>>;
    /// Removes the account's token with this id; false when it has none.
    async fn delete_token(&self, account_id: &str, token_id: &str) -> StoreResult<bool>;
    /// Removes every token of the account except the one with id `keep`; returns how many went.
    async fn delete_tokens_except(&self, account_id: &str, keep: Option<&str>) -> StoreResult<usize>;

    /// The account's choices; all off when it never made any.
    async fn consents(&self, account_id: &str) -> StoreResult<Consents>;
    async fn put_consents(&self, account_id: &str, consents: &Consents) -> StoreResult<()>;

    /// Appends a sign-in attempt to the account's history, keeping only the newest `keep`.
    async fn add_login_event(&self, account_id: &str, event: &LoginEvent, keep: usize) -> StoreResult<()>;
    /// The account's sign-in history, oldest first.
    async fn login_events(&self, account_id: &str) -> StoreResult<Vec<LoginEvent>>;

    async fn create_station(&self, station: &Station) -> StoreResult<()>;
    async fn station(&self, account_id: &str, station_id: &str) -> StoreResult<Option<Station>>;
    async fn stations(&self, account_id: &str) -> StoreResult<Vec<Station>>;
    /// How many stations the account has (its quota is checked against this).
    async fn station_count(&self, account_id: &str) -> StoreResult<usize> {
        Ok(self.stations(account_id).await?.len())
    }
    /// Applies `update` to the station and returns the new record; `None` when there is no such station.
    async fn update_station(
        &self,
        account_id: &str,
        station_id: &str,
        update: StationUpdate<'_>,
    ) -> StoreResult<Option<Station>>;
    /// Applies a change the station's own messages made; returns the new record, `None` when there is
    /// no such station. Unlike [`Store::update_station`] the change is data, so a cluster node can
    /// keep it in its write-ahead log while the shared store is unreachable.
    async fn change_station(
        &self,
        account_id: &str,
        station_id: &str,
        change: &StationChange,
    ) -> StoreResult<Option<Station>> {
        self.update_station(account_id, station_id, &|s| change.apply(s)).await
    }
    /// Removes the station; false when there was none.
    async fn delete_station(&self, account_id: &str, station_id: &str) -> StoreResult<bool>;

    /// Creates or replaces an id tag; true when it was created.
    async fn put_id_tag(&self, account_id: &str, tag: &IdTag) -> StoreResult<bool>;
    async fn id_tag(&self, account_id: &str, id_tag: &str) -> StoreResult<Option<IdTag>>;
    async fn id_tags(&self, account_id: &str) -> StoreResult<Vec<IdTag>>;
    async fn delete_id_tag(&self, account_id: &str, id_tag: &str) -> StoreResult<bool>;

    /// Records a started transaction with a new unique id. A retry of the same start (same station,
    /// connector, meterStart and timestamp) returns the transaction recorded the first time, with `false`.
    async fn start_transaction(&self, tx: &NewTransaction) -> StoreResult<(Transaction, bool)>;
    async fn stop_transaction(
        &self,
        account_id: &str,
        station_id: &str,
        transaction_id: i32,
        stop: &TransactionStop,
    ) -> StoreResult<StopOutcome>;
    /// Applies an OCPP 2.0.1 TransactionEvent to the transaction the station calls
    /// `station_transaction_id`, creating it (with an id from the same sequence as 1.6 transactions)
    /// if this is the first event seen of it. An event whose `seq_no` is among those already applied
    /// changes nothing.
    async fn apply_transaction_event(
        &self,
        account_id: &str,
        station_id: &str,
        station_transaction_id: &str,
        seq_no: u64,
        create: NewTransactionFn<'_>,
        apply: TransactionUpdate<'_>,
    ) -> StoreResult<EventOutcome>;
    async fn transaction(&self, account_id: &str, transaction_id: i32) -> StoreResult<Option<Transaction>>;
    /// The 1.6 transaction with this start (see [`Transaction::start_identity`]), if one was recorded.
    async fn transaction_by_start(&self, start: &StartIdentity) -> StoreResult<Option<Transaction>>;
    /// The 2.0.1 transaction the station calls `station_transaction_id`, if one was recorded.
    async fn transaction_by_reference(
        &self,
        account_id: &str,
        station_id: &str,
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
    /// The account's transactions, newest first, optionally for one station.
    async fn transactions(&self, account_id: &str, station_id: Option<&str>) -> StoreResult<Vec<Transaction>>;

    /// Keeps meter readings. A reading is identified by its station, connector, transaction, timestamp
    /// and values, so a retried MeterValues stores nothing twice.
    async fn add_meter_values(&self, account_id: &str, records: &[MeterRecord]) -> StoreResult<()>;
    /// Meter readings of one transaction, by timestamp.
    async fn transaction_meter_values(
        &self,
        account_id: &str,
        station_id: &str,
        transaction_id: i32,
    ) -> StoreResult<Vec<MeterRecord>>;

    /// Every meter reading of the account, with or without a transaction.
    async fn account_meter_values(&self, account_id: &str) -> StoreResult<Vec<MeterRecord>>;

    async fn add_event(&self, account_id: &str, event: &StationEvent) -> StoreResult<()>;
    async fn events(&self, account_id: &str, station_id: &str) -> StoreResult<Vec<StationEvent>>;
    /// Every event of every station of the account.
    async fn account_events(&self, account_id: &str) -> StoreResult<Vec<StationEvent>>;

    /// Stores device-model variables of a station, replacing those with the same key.
    async fn put_variables(&self, account_id: &str, station_id: &str, variables: &[DeviceVariable]) -> StoreResult<()>;
    /// Applies values a station saw (NotifyEvent) to the attributes with the same key, which keep
    /// the rest of what was reported of them ([`DeviceVariable::observed`]); an attribute not
    /// stored yet is stored as seen.
    async fn observe_variables(&self, account_id: &str, station_id: &str, seen: &[DeviceVariable]) -> StoreResult<()>;
    /// A station's device model, ordered by component, then variable.
    async fn variables(&self, account_id: &str, station_id: &str) -> StoreResult<Vec<DeviceVariable>>;

    /// Appends a command to its station's queue.
    async fn enqueue_command(&self, command: &CommandRecord) -> StoreResult<()>;
    /// Replaces a command's record; once it is no longer `Queued` it leaves its station's queue.
    async fn update_command(&self, command: &CommandRecord) -> StoreResult<()>;
    async fn command(&self, account_id: &str, station_id: &str, command_id: &str)
        -> StoreResult<Option<CommandRecord>>;
    /// Every command record of the account, whatever its status.
    async fn account_commands(&self, account_id: &str) -> StoreResult<Vec<CommandRecord>>;
    /// The station's commands still `Queued`, in the order they were queued.
    async fn queued_commands(&self, account_id: &str, station_id: &str) -> StoreResult<Vec<CommandRecord>>;
    /// Every queued command of every station, how many (for the queue gauge at start-up).
    async fn queued_command_count(&self) -> StoreResult<usize>;
    /// When the oldest command still queued was queued.
    async fn oldest_queued_command(&self) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>>;

    /// Makes every write that returned before this call durable.
    async fn flush(&self) -> StoreResult<()>;
}
