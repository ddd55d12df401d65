//! The system of record behind a trait, so the embedded sled store and (in cluster mode) a shared
//! store serve the same contract.

mod group_commit;
mod sled_store;

pub use group_commit::{CommitPolicy, GroupCommit};
pub use sled_store::SledStore;

use crate::model::{
    Account, ApiToken, CommandRecord, DeviceVariable, IdTag, MeterRecord, NewTransaction, Station, StationEvent,
    Transaction, TransactionStop,
};
use async_trait::async_trait;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique field is taken; the string names the field.
    #[error("{0} is already taken")]
    Conflict(&'static str),
    /// The backend failed; the message is for logs.
    #[error("storage backend error: {0}")]
    Backend(String),
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

/// The system of record. Writes are applied when the call returns; [`Store::flush`] makes every write
/// before it durable, and a station's message is acknowledged only after that.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn create_account(&self, account: &Account) -> StoreResult<()>;
    async fn account(&self, id: &str) -> StoreResult<Option<Account>>;
    async fn account_by_email(&self, email: &str) -> StoreResult<Option<Account>>;
    async fn account_by_slug(&self, slug: &str) -> StoreResult<Option<Account>>;

    /// Stores a token under the hash of its secret.
    async fn put_token(&self, token_hash: &str, token: &ApiToken) -> StoreResult<()>;
    async fn token(&self, token_hash: &str) -> StoreResult<Option<ApiToken>>;

    async fn create_station(&self, station: &Station) -> StoreResult<()>;
    async fn station(&self, account_id: &str, station_id: &str) -> StoreResult<Option<Station>>;
    async fn stations(&self, account_id: &str) -> StoreResult<Vec<Station>>;
    /// Applies `update` to the station and returns the new record; `None` when there is no such station.
    async fn update_station(
        &self,
        account_id: &str,
        station_id: &str,
        update: StationUpdate<'_>,
    ) -> StoreResult<Option<Station>>;
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

    async fn add_event(&self, account_id: &str, event: &StationEvent) -> StoreResult<()>;
    async fn events(&self, account_id: &str, station_id: &str) -> StoreResult<Vec<StationEvent>>;

    /// Stores device-model variables of a station, replacing those with the same key.
    async fn put_variables(&self, account_id: &str, station_id: &str, variables: &[DeviceVariable]) -> StoreResult<()>;
    /// A station's device model, ordered by component, then variable.
    async fn variables(&self, account_id: &str, station_id: &str) -> StoreResult<Vec<DeviceVariable>>;

    /// Appends a command to its station's queue.
    async fn enqueue_command(&self, command: &CommandRecord) -> StoreResult<()>;
    /// Replaces a command's record; once it is no longer `Queued` it leaves its station's queue.
    async fn update_command(&self, command: &CommandRecord) -> StoreResult<()>;
    async fn command(&self, account_id: &str, station_id: &str, command_id: &str)
        -> StoreResult<Option<CommandRecord>>;
    /// The station's commands still `Queued`, in the order they were queued.
    async fn queued_commands(&self, account_id: &str, station_id: &str) -> StoreResult<Vec<CommandRecord>>;
    /// Every queued command of every station, how many (for the queue gauge at start-up).
    async fn queued_command_count(&self) -> StoreResult<usize>;
    /// When the oldest command still queued was queued.
    async fn oldest_queued_command(&self) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>>;

    /// Makes every write that returned before this call durable.
    async fn flush(&self) -> StoreResult<()>;
}
