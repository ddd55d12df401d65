//! The shared store of the cluster store's tests: a sled store (in its own directory) that fails
//! every call as unavailable while switched off, as Redis does while unreachable.

use crate::ids::{AccountId, StationId};
use crate::model::{
    Account, ApiToken, CommandKey, CommandRecord, Consents, DataKind, DeviceVariable, EventDraft, EventKey,
    FeedCutoffs, FeedEvent, IdTag, LoginEvent, MeterRecord, NewTransaction, Page, PageRequest, PruneStep, ReadingKey,
    StartIdentity, Station, StationChange, StationEvent, StationFilter, Transaction, TransactionFilter,
    TransactionStop, Webhook, WebhookDelivery,
};
use crate::store::{
    AccountStore, AccountUpdate, ErasureReport, EventOutcome, NewTransactionFn, SharedStore, SledStore, StationLookup,
    StationStore, StationUpdate, StopOutcome, StoreError, StoreResult, TransactionUpdate, WebhookUpdate,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

pub(super) struct Flaky {
    pub(super) inner: SledStore,
    pub(super) on: AtomicBool,
    /// Station and id-tag reads that reached it.
    pub(super) reads: AtomicUsize,
    /// Whether its flush succeeds (writes are applied either way).
    pub(super) flush_ok: AtomicBool,
    pub(super) _dir: tempfile::TempDir,
}

impl Flaky {
    pub(super) fn set(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
    }

    fn gate(&self) -> StoreResult<()> {
        if self.on.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(StoreError::unavailable("shared store switched off"))
        }
    }
}

/// `impl $trait for Flaky`: each method checks the switch, then asks the sled store.
macro_rules! gated {
    ($trait:ident { $(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)* } $($plain:item)*) => {
        #[async_trait]
        impl $trait for Flaky {
            $($plain)*
            $(
                async fn $name(&self $(, $arg: $ty)*) -> StoreResult<$ret> {
                    self.gate()?;
                    self.inner.$name($($arg),*).await
                }
            )*
        }
    };
}

#[async_trait]
impl StationLookup for Flaky {
    async fn station(&self, account_id: &AccountId, station_id: &StationId) -> StoreResult<Option<Station>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.gate()?;
        self.inner.station(account_id, station_id).await
    }

    async fn id_tag(&self, account_id: &AccountId, id_tag: &str) -> StoreResult<Option<IdTag>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.gate()?;
        self.inner.id_tag(account_id, id_tag).await
    }
}

#[async_trait]
impl StationStore for Flaky {
    async fn account_by_slug(&self, slug: &str) -> StoreResult<Option<Account>> {
        self.gate()?;
        self.inner.account_by_slug(slug).await
    }
    async fn change_station(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        change: &StationChange,
    ) -> StoreResult<Option<Station>> {
        self.gate()?;
        self.inner.change_station(account_id, station_id, change).await
    }
    async fn start_transaction(&self, tx: &NewTransaction) -> StoreResult<(Transaction, bool)> {
        self.gate()?;
        self.inner.start_transaction(tx).await
    }
    async fn stop_transaction(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        transaction_id: i32,
        stop: &TransactionStop,
    ) -> StoreResult<StopOutcome> {
        self.gate()?;
        self.inner.stop_transaction(account_id, station_id, transaction_id, stop).await
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
        self.gate()?;
        self.inner.apply_transaction_event(account_id, station_id, station_transaction_id, seq_no, create, apply).await
    }
    async fn add_meter_values(&self, account_id: &AccountId, records: &[MeterRecord]) -> StoreResult<()> {
        self.gate()?;
        self.inner.add_meter_values(account_id, records).await
    }
    async fn add_event(&self, account_id: &AccountId, event: &StationEvent) -> StoreResult<()> {
        self.gate()?;
        self.inner.add_event(account_id, event).await
    }
    async fn put_variables(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        variables: &[DeviceVariable],
    ) -> StoreResult<()> {
        self.gate()?;
        self.inner.put_variables(account_id, station_id, variables).await
    }
    async fn observe_variables(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        seen: &[DeviceVariable],
    ) -> StoreResult<()> {
        self.gate()?;
        self.inner.observe_variables(account_id, station_id, seen).await
    }
    async fn append_feed(&self, account_id: &AccountId, events: &[EventDraft]) -> StoreResult<()> {
        self.gate()?;
        StationStore::append_feed(&self.inner, account_id, events).await
    }
    async fn queued_commands(&self, account_id: &AccountId, station_id: &StationId) -> StoreResult<Vec<CommandRecord>> {
        self.gate()?;
        self.inner.queued_commands(account_id, station_id).await
    }
    async fn update_command(&self, command: &CommandRecord) -> StoreResult<()> {
        self.gate()?;
        self.inner.update_command(command).await
    }
    async fn forget_account(&self, account_id: &AccountId) -> StoreResult<()> {
        self.gate()?;
        self.inner.forget_account(account_id).await
    }
    async fn flush(&self) -> StoreResult<()> {
        self.gate()?;
        if !self.flush_ok.load(Ordering::SeqCst) {
            return Err(StoreError::backend("flush failed"));
        }
        self.inner.flush().await
    }
}

gated!(AccountStore {
    fn create_account(&self, account: &Account) -> ();
    fn account(&self, id: &AccountId) -> Option<Account>;
    fn account_by_email(&self, email: &str) -> Option<Account>;
    fn update_account(&self, id: &AccountId, update: AccountUpdate<'_>) -> Option<Account>;
    fn erase_account(&self, account_id: &AccountId) -> ErasureReport;
    fn put_token(&self, token_hash: &str, token: &ApiToken) -> ();
    fn token(&self, token_hash: &str) -> Option<ApiToken>;
    fn tokens(&self, account_id: &AccountId) -> Vec<ApiToken>;
    fn delete_token(&self, account_id: &AccountId, token_id: &str) -> bool;
    fn delete_tokens_except(&self, account_id: &AccountId, keep: Option<&str>) -> usize;
    fn consents(&self, account_id: &AccountId) -> Consents;
    fn put_consents(&self, account_id: &AccountId, consents: &Consents) -> ();
    fn add_login_event(&self, account_id: &AccountId, event: &LoginEvent, keep: usize) -> ();
    fn login_events(&self, account_id: &AccountId) -> Vec<LoginEvent>;
    fn create_station(&self, station: &Station) -> ();
    fn stations_page(&self, account_id: &AccountId, filter: &StationFilter, page: &PageRequest<StationId>) -> Page<Station, StationId>;
    fn station_count(&self, account_id: &AccountId) -> usize;
    fn update_station(&self, account_id: &AccountId, station_id: &StationId, update: StationUpdate<'_>) -> Option<Station>;
    fn delete_station(&self, account_id: &AccountId, station_id: &StationId) -> bool;
    fn put_id_tag(&self, account_id: &AccountId, tag: &IdTag) -> bool;
    fn id_tags_page(&self, account_id: &AccountId, page: &PageRequest<String>) -> Page<IdTag, String>;
    fn delete_id_tag(&self, account_id: &AccountId, id_tag: &str) -> bool;
    fn transaction(&self, account_id: &AccountId, transaction_id: i32) -> Option<Transaction>;
    fn transactions_page(&self, account_id: &AccountId, filter: &TransactionFilter, page: &PageRequest<i32>) -> Page<Transaction, i32>;
    fn meter_values_page(&self, account_id: &AccountId, station_id: &StationId, transaction_id: i32, page: &PageRequest<ReadingKey>) -> Page<MeterRecord, ReadingKey>;
    fn loose_reading_stations_page(&self, account_id: &AccountId, page: &PageRequest<StationId>) -> Page<StationId, StationId>;
    fn events_page(&self, account_id: &AccountId, station_id: &StationId, page: &PageRequest<EventKey>) -> Page<StationEvent, EventKey>;
    fn commands_page(&self, account_id: &AccountId, page: &PageRequest<CommandKey>) -> Page<CommandRecord, CommandKey>;
    fn account_meter_values(&self, account_id: &AccountId) -> Vec<MeterRecord>;
    fn events(&self, account_id: &AccountId, station_id: &StationId) -> Vec<StationEvent>;
    fn account_events(&self, account_id: &AccountId) -> Vec<StationEvent>;
    fn variables(&self, account_id: &AccountId, station_id: &StationId) -> Vec<DeviceVariable>;
    fn enqueue_command(&self, command: &CommandRecord) -> ();
    fn command(&self, account_id: &AccountId, station_id: &StationId, command_id: &str) -> Option<CommandRecord>;
    fn account_commands(&self, account_id: &AccountId) -> Vec<CommandRecord>;
    fn queued_command_count(&self) -> usize;
    fn oldest_queued_command(&self) -> Option<DateTime<Utc>>;
    fn account_ids(&self, after: Option<String>, limit: usize) -> (Vec<AccountId>, Option<String>);
    fn lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> bool;
    fn prune(&self, account_id: &AccountId, kind: DataKind, before: DateTime<Utc>, after: Option<String>, batch: usize) -> PruneStep;
    fn add_feed_events(&self, account_id: &AccountId, events: &[EventDraft]) -> ();
    fn feed_after(&self, account_id: &AccountId, after: u64, limit: usize) -> Vec<FeedEvent>;
    fn feed_head(&self, account_id: &AccountId) -> u64;
    fn prune_feed(&self, account_id: &AccountId, cutoffs: &FeedCutoffs, after: Option<String>, batch: usize) -> PruneStep;
    fn put_webhook(&self, webhook: &Webhook) -> ();
    fn webhook(&self, account_id: &AccountId, webhook_id: &str) -> Option<Webhook>;
    fn webhooks(&self, account_id: &AccountId) -> Vec<Webhook>;
    fn update_webhook(&self, account_id: &AccountId, webhook_id: &str, update: WebhookUpdate<'_>) -> Option<Webhook>;
    fn delete_webhook(&self, account_id: &AccountId, webhook_id: &str) -> bool;
    fn webhook_accounts(&self) -> Vec<AccountId>;
    fn webhook_cursor(&self, account_id: &AccountId, webhook_id: &str) -> Option<u64>;
    fn set_webhook_cursor(&self, account_id: &AccountId, webhook_id: &str, cursor: u64) -> ();
    fn webhook_deliveries(&self, account_id: &AccountId, webhook_id: &str) -> Vec<WebhookDelivery>;
    fn put_webhook_deliveries(&self, account_id: &AccountId, webhook_id: &str, log: &[WebhookDelivery]) -> ();
}
    fn feed_signal(&self) -> std::sync::Arc<crate::store::FeedSignal> {
        self.inner.feed_signal()
    }
);

gated!(SharedStore {
    fn transaction_by_start(&self, start: &StartIdentity) -> Option<Transaction>;
    fn transaction_by_reference(&self, account_id: &AccountId, station_id: &StationId, station_transaction_id: &str) -> Option<Transaction>;
    fn put_transaction(&self, tx: &Transaction) -> ();
    fn reserve_transaction_ids(&self, count: u32) -> std::ops::Range<i32>;
    fn append_feed_from(&self, account_id: &AccountId, origin: &str, seq: u64, events: &[EventDraft]) -> ();
});
