//! The store contract: one set of checks over `&dyn SharedStore` — so over both callers' traits,
//! [`StationStore`] and [`AccountStore`], and what a cluster node's log needs besides — each run
//! against a fresh [`SledStore`] (module `sled`), a fresh [`RedisStore`] on its own redis-server
//! (module `redis`), and a [`RedisStore`] on the test process's Redis Cluster of three masters under
//! a key prefix of its own (module `redis_cluster`).
//! Then what only the Redis store has to show: it survives Redis restarting, fails fast while Redis
//! is down, keeps to its key prefix, and finishes an interrupted erasure when it next connects.

use crate::redis::{RedisCluster, RedisServer};
use chrono::{DateTime, Duration, TimeZone, Utc};
use ocpp_css::ids::{AccountId, StationId};
use ocpp_css::model::{
    Account, ApiToken, BootInfo, CommandRecord, CommandStatus, ConnectorStatus, Consent, Consents, DataKind,
    DeliveryOutcome, DeviceVariable, EventDraft, EventType, FeedCutoffs, FeedEvent, IdTag, LoginEvent, LoginOutcome,
    MeterRecord, MeterValue, NewTransaction, Page, PageRequest, ReadingKey, Registration, SampledValue,
    SecurityProfile, Station, StationChange, StationEvent, StationFilter, TagStatus, Transaction,
    TransactionEventRecord, TransactionFilter, TransactionStatus, TransactionStop, Webhook, WebhookDelivery,
};
use ocpp_css::store::prelude::*;
use ocpp_css::store::{
    all_id_tags, all_stations, all_transactions, CommitPolicy, ErasureReport, RedisStore, RedisTarget, SharedStore,
    SledStore, StopOutcome, StoreError,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The longest a Redis call may take in these tests.
const REDIS_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// The longest a call to the Redis Cluster may take: a store's first call discovers the cluster's
/// topology, and every test of the process shares the three nodes at once.
const REDIS_CLUSTER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A fresh store, and a second handle on the same data (another connection for Redis, as a second
/// node would have; a clone for sled), with what keeps them alive.
pub struct Subject {
    store: Arc<dyn SharedStore>,
    other: Arc<dyn SharedStore>,
    /// The sled directory or the redis-server, removed or killed when the test ends (nothing for
    /// the shared Redis Cluster, which lives as long as the test process).
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

async fn sled_subject() -> Subject {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path(), CommitPolicy::default()).expect("sled opens");
    Subject { other: Arc::new(store.clone()), store: Arc::new(store), _keep: Box::new(dir) }
}

async fn redis_subject() -> Subject {
    let server = RedisServer::start().await;
    let store = RedisStore::connect(&server.target(), "contract", REDIS_TIMEOUT).await.expect("redis store connects");
    let other = RedisStore::connect(&server.target(), "contract", REDIS_TIMEOUT).await.expect("second connection");
    Subject { store: Arc::new(store), other: Arc::new(other), _keep: Box::new(server) }
}

/// Two handles on the process's shared Redis Cluster, under a key prefix no other test uses
/// (`contract-{n}`), so each test starts from an empty store.
async fn redis_cluster_subject() -> Subject {
    static NEXT_PREFIX: AtomicUsize = AtomicUsize::new(0);
    // The first caller starts the cluster (blocking, seconds); the others wait for it.
    let cluster = match tokio::task::spawn_blocking(RedisCluster::shared).await {
        Ok(cluster) => cluster,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    let prefix = format!("contract-{}", NEXT_PREFIX.fetch_add(1, Ordering::Relaxed));
    let target = cluster.target();
    let store =
        RedisStore::connect(&target, &prefix, REDIS_CLUSTER_TIMEOUT).await.expect("redis cluster store connects");
    let other = RedisStore::connect(&target, &prefix, REDIS_CLUSTER_TIMEOUT).await.expect("second connection");
    Subject { store: Arc::new(store), other: Arc::new(other), _keep: Box::new(()) }
}

/// Generates, for each check, one test against sled, one against Redis and one against a Redis
/// Cluster.
macro_rules! contract {
    ($($check:ident),* $(,)?) => {
        mod sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::checks::$check(&super::sled_subject().await).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::checks::$check(&super::redis_subject().await).await;
                }
            )*
        }
        mod redis_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::checks::$check(&super::redis_cluster_subject().await).await;
                }
            )*
        }
    };
}

contract!(
    accounts_are_unique_by_email_and_by_slug,
    updating_an_account_moves_its_email_and_slug_and_refuses_taken_ones,
    concurrent_account_updates_from_two_handles_lose_nothing,
    erasure_removes_everything_of_the_account_keeps_its_slug_reserved_and_spares_the_others,
    tokens_are_found_by_hash_listed_by_age_and_revoked_per_account,
    consents_are_all_off_until_set,
    login_history_keeps_the_newest_n_oldest_first,
    stations_are_created_once_listed_by_id_updated_and_deleted,
    concurrent_station_changes_from_two_handles_lose_nothing,
    id_tags_are_created_replaced_listed_and_deleted,
    a_retried_start_finds_its_transaction_and_a_stop_applies_once,
    two_handles_racing_the_same_start_get_the_same_transaction,
    two_handles_racing_stops_of_one_transaction_record_only_the_first,
    two_handles_racing_events_of_one_transaction_lose_none_and_create_it_once,
    transaction_events_create_once_and_a_repeated_seq_no_changes_nothing,
    put_transaction_is_idempotent_and_found_by_start_and_reference,
    reserved_transaction_ids_are_never_handed_out_again,
    meter_values_are_kept_once_in_timestamp_order,
    meter_values_page_by_time_across_calls_and_spans_with_ties_in_a_fixed_order,
    pruning_removes_what_is_older_than_the_cutoff_of_each_kind_a_batch_at_a_time,
    pruning_finished_transactions_takes_their_indexes_and_readings_and_keeps_open_ones,
    lists_page_in_their_order_and_miss_or_repeat_nothing_while_rows_arrive,
    transaction_pages_filter_by_station_status_and_time_through_every_write_path,
    station_pages_filter_by_registration_and_protocol,
    station_events_are_kept_once_in_received_order,
    the_exports_pages_of_loose_reading_stations_events_and_commands_give_each_once_in_order,
    command_queues_keep_order_per_station_and_release_what_left_them,
    device_variables_are_replaced_by_key_and_ordered_by_component_then_variable,
    observed_values_change_only_the_value_and_time_of_what_was_reported,
    the_first_event_a_store_appends_is_read_after_0_and_moves_the_head,
    feed_ids_grow_across_handles_and_pages_read_in_order_after_an_id,
    feeds_of_two_accounts_are_separate,
    a_drained_feed_entry_is_appended_once_per_origin_and_only_for_a_greater_sequence,
    pruning_the_feed_removes_events_old_by_their_kinds_period_and_stops_at_newer_ones,
    webhooks_are_put_listed_updated_by_both_handles_and_deleted_with_their_cursor_and_log,
    webhook_cursors_and_delivery_logs_round_trip_per_webhook,
    flush_succeeds,
);

fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).single().expect("a valid time") + Duration::seconds(secs)
}

fn account(id: &str, slug: &str) -> Account {
    Account {
        id: id.into(),
        email: format!("ops@{slug}.example"),
        name: slug.into(),
        slug: slug.into(),
        password_hash: "hash".into(),
        created_at: at(0),
        known_locations: vec![],
        retention: Default::default(),
    }
}

fn station(account_id: &str, id: &str) -> Station {
    Station::new(&account_id.into(), &id.into(), format!("hash-{id}"), Registration::Accepted, SecurityProfile::Basic)
}

fn tag(id: &str, status: TagStatus) -> IdTag {
    IdTag { id_tag: id.into(), status, expiry_date: None, parent_id_tag: None, updated_at: at(0) }
}

fn token(account_id: &str, id: &str, created: i64) -> ApiToken {
    ApiToken {
        id: id.into(),
        account_id: account_id.into(),
        created_at: at(created),
        expires_at: at(created + 3600),
        last_used_at: None,
    }
}

fn new_tx(account_id: &str, station_id: &str, connector_id: u32, meter_start: i64) -> NewTransaction {
    NewTransaction {
        account_id: account_id.into(),
        station_id: station_id.into(),
        connector_id,
        id_tag: "TAG".into(),
        id_tag_status: "Accepted".into(),
        meter_start,
        start_timestamp: at(100),
        reservation_id: None,
    }
}

fn stop(meter_stop: i64) -> TransactionStop {
    TransactionStop {
        meter_stop: Some(meter_stop),
        timestamp: at(200),
        reason: Some("Local".into()),
        id_tag: None,
        received_at: at(201),
    }
}

fn reading(station_id: &str, tx: Option<i32>, secs: i64, wh: &str) -> MeterRecord {
    MeterRecord {
        station_id: station_id.into(),
        evse_id: None,
        connector_id: 1,
        transaction_id: tx,
        meter_value: MeterValue {
            timestamp: at(secs),
            sampled_value: vec![SampledValue {
                value: wh.into(),
                context: None,
                format: None,
                measurand: Some("Energy.Active.Import.Register".into()),
                phase: None,
                location: None,
                unit: Some("Wh".into()),
            }],
        },
    }
}

fn event(station_id: &str, action: &str, received: i64) -> StationEvent {
    StationEvent {
        station_id: station_id.into(),
        action: action.into(),
        payload: serde_json::json!({ "vendorId": "acme", "n": received }),
        received_at: at(received) + Duration::nanoseconds(123_456_789),
    }
}

fn command(account_id: &str, station_id: &str, action: &str, created: i64) -> CommandRecord {
    CommandRecord {
        id: format!("{station_id}-{action}-{created}"),
        protocol: "ocpp1.6".into(),
        account_id: account_id.into(),
        station_id: station_id.into(),
        action: action.into(),
        payload: serde_json::json!({}),
        status: CommandStatus::Queued,
        // Nanoseconds, which the oldest-command answer must keep.
        created_at: at(created) + Duration::nanoseconds(987_654_321),
        expires_at: at(created + 3600),
        sent_at: None,
        answered_at: None,
        response: None,
        error: None,
    }
}

fn variable(component: &str, name: &str, value: &str) -> DeviceVariable {
    DeviceVariable {
        component: component.into(),
        component_instance: None,
        evse_id: None,
        connector_id: None,
        variable: name.into(),
        variable_instance: None,
        attribute_type: "Actual".into(),
        value: Some(value.into()),
        mutability: Some("ReadWrite".into()),
        persistent: None,
        constant: None,
        characteristics: None,
        updated_at: at(0),
    }
}

fn event_record(seq_no: u64, event_type: &str, energy: Option<i64>) -> TransactionEventRecord {
    TransactionEventRecord {
        seq_no,
        event_type: event_type.into(),
        trigger_reason: "Authorized".into(),
        timestamp: at(100 + seq_no as i64),
        offline: false,
        energy_register_wh: energy,
        received_at: at(100 + seq_no as i64),
    }
}

/// An event for the feed, at `secs`, telling its `n` in its body.
fn feed_event(kind: EventType, station_id: Option<&str>, secs: i64, n: u32) -> EventDraft {
    EventDraft {
        kind,
        time: at(secs) + Duration::microseconds(123_456),
        station_id: station_id.map(Into::into),
        body: serde_json::json!({ "n": n, "nested": { "id": n } }),
    }
}

fn webhook(account_id: &str, id: &str, url: &str) -> Webhook {
    Webhook {
        id: id.into(),
        account_id: account_id.into(),
        url: url.into(),
        types: vec![],
        secret: format!("secret-{id}"),
        enabled: true,
        disabled_reason: None,
        created_at: at(0),
        updated_at: at(0),
    }
}

fn delivery(event_id: u64, outcome: DeliveryOutcome, attempts: u32) -> WebhookDelivery {
    WebhookDelivery {
        event_id,
        event_type: EventType::StationBooted,
        outcome,
        attempts,
        status_code: Some(500),
        latency_ms: 12,
        error: Some("server error".into()),
        first_attempt_at: at(1),
        last_attempt_at: at(2),
    }
}

/// Every event of the account's feed, read `limit` at a time.
async fn whole_feed(store: &dyn SharedStore, account_id: &str, limit: usize) -> Vec<FeedEvent> {
    let mut events: Vec<FeedEvent> = Vec::new();
    loop {
        let after = events.last().map_or(0, |e| e.id);
        let page = store.feed_after(&account_id.into(), after, limit).await.unwrap();
        assert!(page.len() <= limit, "at most the limit");
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
}

/// A 2.0.1 transaction record as the TransactionEvent handler would build it.
fn v201(account_id: &str, station_id: &str, reference: &str, id: i32) -> Transaction {
    Transaction {
        id,
        account_id: account_id.into(),
        station_id: station_id.into(),
        connector_id: 1,
        id_tag: None,
        id_tag_status: None,
        meter_start: None,
        start_timestamp: at(100),
        reservation_id: None,
        stop: None,
        started_received_at: at(100),
        station_transaction_id: Some(reference.into()),
        evse_id: Some(1),
        charging_state: None,
        events: vec![],
    }
}

/// Puts one record of every kind under the account, on station CP1.
async fn fill(store: &dyn SharedStore, account_id: &str) {
    let account_id = &AccountId::from(account_id);
    store.put_token(&format!("hash-{account_id}"), &token(account_id, &format!("tok-{account_id}"), 0)).await.unwrap();
    store.create_station(&station(account_id, "CP1")).await.unwrap();
    store.put_id_tag(account_id, &tag("TAG", TagStatus::Accepted)).await.unwrap();
    let (tx, _) = store.start_transaction(&new_tx(account_id, "CP1", 1, 0)).await.unwrap();
    store.add_meter_values(account_id, &[reading("CP1", Some(tx.id), 150, "10")]).await.unwrap();
    store.add_event(account_id, &event("CP1", "DataTransfer", 1)).await.unwrap();
    store.enqueue_command(&command(account_id, "CP1", "Reset", 1)).await.unwrap();
    let consents =
        Consents { marketing_emails: Consent { granted: true, updated_at: Some(at(0)) }, ..Consents::default() };
    store.put_consents(account_id, &consents).await.unwrap();
    let login = LoginEvent { at: at(0), ip: "127.0.0.1".into(), outcome: LoginOutcome::Success };
    store.add_login_event(account_id, &login, 10).await.unwrap();
    store
        .apply_transaction_event(
            account_id,
            &"CP1".into(),
            "tx-201",
            0,
            &|id| v201(account_id, "CP1", "tx-201", id),
            &|t| t.events.push(event_record(0, "Started", None)),
        )
        .await
        .unwrap();
    store
        .put_variables(account_id, &"CP1".into(), &[variable("OCPPCommCtrlr", "HeartbeatInterval", "60")])
        .await
        .unwrap();
    store.add_feed_events(account_id, &[feed_event(EventType::StationBooted, Some("CP1"), 1, 1)]).await.unwrap();
    store
        .append_feed_from(account_id, "node-1/CP1", 7, &[feed_event(EventType::TransactionStarted, Some("CP1"), 2, 2)])
        .await
        .unwrap();
    store.put_webhook(&webhook(account_id, "wh-1", "https://example.com/hook")).await.unwrap();
    store.set_webhook_cursor(account_id, "wh-1", 1).await.unwrap();
    store.put_webhook_deliveries(account_id, "wh-1", &[delivery(1, DeliveryOutcome::Delivered, 1)]).await.unwrap();
}

/// The ids of every transaction matching `filter`, read `limit` at a time.
async fn walk_transactions(
    store: &dyn SharedStore,
    account_id: &str,
    filter: &TransactionFilter,
    limit: usize,
) -> Vec<i32> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page: Page<Transaction, i32> =
            store.transactions_page(&account_id.into(), filter, &PageRequest::new(after, limit)).await.unwrap();
        assert!(page.items.len() <= limit, "a page holds at most its limit");
        ids.extend(page.items.iter().map(|t| t.id));
        match page.next {
            Some(next) => after = Some(next),
            None => return ids,
        }
    }
}

/// The ids of every station matching `filter`, read `limit` at a time.
async fn walk_stations(store: &dyn SharedStore, account_id: &str, filter: &StationFilter, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = store.stations_page(&account_id.into(), filter, &PageRequest::new(after, limit)).await.unwrap();
        assert!(page.items.len() <= limit, "a page holds at most its limit");
        ids.extend(page.items.iter().map(|s| s.id.to_string()));
        match page.next {
            Some(next) => after = Some(next),
            None => return ids,
        }
    }
}

/// Everything the store answers about an account, as text, to compare before and after.
async fn everything_of(store: &dyn SharedStore, account_id: &str) -> String {
    let account_id = &AccountId::from(account_id);
    let txs = all_transactions(store, account_id, None).await.unwrap();
    let mut meter = Vec::new();
    for tx in &txs {
        meter.push(store.transaction_meter_values(account_id, &tx.station_id, tx.id).await.unwrap());
    }
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        store.account(account_id).await.unwrap(),
        store.tokens(account_id).await.unwrap(),
        store.consents(account_id).await.unwrap(),
        store.login_events(account_id).await.unwrap(),
        all_stations(store, account_id).await.unwrap(),
        all_id_tags(store, account_id).await.unwrap(),
        txs,
        meter,
        store.account_meter_values(account_id).await.unwrap(),
        store.events(account_id, &"CP1".into()).await.unwrap(),
        store.account_events(account_id).await.unwrap(),
        store.account_commands(account_id).await.unwrap(),
        store.queued_commands(account_id, &"CP1".into()).await.unwrap(),
        store.variables(account_id, &"CP1".into()).await.unwrap(),
        store.transaction_by_reference(account_id, &"CP1".into(), "tx-201").await.unwrap(),
        store.transaction_by_start(&new_tx(account_id, "CP1", 1, 0).start_identity()).await.unwrap(),
        store.feed_after(account_id, 0, 100).await.unwrap(),
        store.feed_head(account_id).await.unwrap(),
        store.webhooks(account_id).await.unwrap(),
        store.webhook_cursor(account_id, "wh-1").await.unwrap(),
        store.webhook_deliveries(account_id, "wh-1").await.unwrap(),
    )
}

mod checks {
    use super::*;

    pub async fn accounts_are_unique_by_email_and_by_slug(s: &Subject) {
        let store = &*s.store;
        let a = account("acct-a", "alpha");
        store.create_account(&a).await.unwrap();
        assert_eq!(store.account(&"acct-a".into()).await.unwrap().unwrap().email, "ops@alpha.example");
        assert_eq!(store.account_by_email("ops@alpha.example").await.unwrap().unwrap().id, "acct-a");
        assert_eq!(store.account_by_slug("alpha").await.unwrap().unwrap().id, "acct-a");
        assert!(store.account(&"nobody".into()).await.unwrap().is_none());
        assert!(store.account_by_email("nobody@example.com").await.unwrap().is_none());
        assert!(store.account_by_slug("nobody").await.unwrap().is_none());

        let mut same_email = account("acct-b", "bravo");
        same_email.email = a.email.clone();
        assert!(matches!(store.create_account(&same_email).await, Err(StoreError::Conflict("email"))));
        let mut same_slug = account("acct-b", "bravo");
        same_slug.slug = "alpha".into();
        assert!(matches!(store.create_account(&same_slug).await, Err(StoreError::Conflict("slug"))));
        assert!(store.account(&"acct-b".into()).await.unwrap().is_none(), "a refused account is not stored");
        assert!(store.account_by_email("ops@bravo.example").await.unwrap().is_none());
        store.create_account(&account("acct-b", "bravo")).await.unwrap();
        assert_eq!(store.account_by_slug("bravo").await.unwrap().unwrap().id, "acct-b");
        // Ids with the characters a key layout might use stay apart.
        store.create_account(&account("x:y%z", "colon:slug")).await.unwrap();
        assert_eq!(store.account_by_slug("colon:slug").await.unwrap().unwrap().id, "x:y%z");
        assert!(store.account(&"x".into()).await.unwrap().is_none());
    }

    pub async fn updating_an_account_moves_its_email_and_slug_and_refuses_taken_ones(s: &Subject) {
        let store = &*s.store;
        store.create_account(&account("acct-a", "alpha")).await.unwrap();
        store.create_account(&account("acct-b", "bravo")).await.unwrap();

        let updated = store
            .update_account(&"acct-a".into(), &|a| {
                a.email = "new@alpha.example".into();
                a.name = "Alpha Renamed".into();
                a.id = "hijack".into();
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!((updated.id.as_str(), updated.name.as_str()), ("acct-a", "Alpha Renamed"), "the id cannot change");
        assert!(store.account(&"hijack".into()).await.unwrap().is_none());
        assert!(store.account_by_email("ops@alpha.example").await.unwrap().is_none(), "the old email is free");
        assert_eq!(store.account_by_email("new@alpha.example").await.unwrap().unwrap().name, "Alpha Renamed");

        store.update_account(&"acct-a".into(), &|a| a.slug = "alpha2".into()).await.unwrap().unwrap();
        assert_eq!(store.account_by_slug("alpha2").await.unwrap().unwrap().id, "acct-a");
        assert!(store.account_by_slug("alpha").await.unwrap().is_none());

        let taken = store.update_account(&"acct-a".into(), &|a| a.email = "ops@bravo.example".into()).await;
        assert!(matches!(taken, Err(StoreError::Conflict("email"))), "{taken:?}");
        let taken = store.update_account(&"acct-a".into(), &|a| a.slug = "bravo".into()).await;
        assert!(matches!(taken, Err(StoreError::Conflict("slug"))), "{taken:?}");
        let a = store.account(&"acct-a".into()).await.unwrap().unwrap();
        assert_eq!(
            (a.email.as_str(), a.slug.as_str()),
            ("new@alpha.example", "alpha2"),
            "a refused update changes nothing"
        );
        assert_eq!(store.account_by_email("ops@bravo.example").await.unwrap().unwrap().id, "acct-b");
        assert_eq!(store.account_by_slug("bravo").await.unwrap().unwrap().id, "acct-b");

        // The freed slug is free for a new account.
        store.create_account(&account("acct-c", "alpha")).await.unwrap();
        assert!(store.update_account(&"nobody".into(), &|a| a.name = "x".into()).await.unwrap().is_none());
    }

    pub async fn concurrent_account_updates_from_two_handles_lose_nothing(s: &Subject) {
        s.store.create_account(&account("acct-a", "alpha")).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let store = if i % 2 == 0 { s.store.clone() } else { s.other.clone() };
            tasks.push(tokio::spawn(async move {
                let location = format!("10.0.{i}.0/24");
                store
                    .update_account(&"acct-a".into(), &|a| a.known_locations.push(location.clone()))
                    .await
                    .unwrap()
                    .unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let a = s.store.account(&"acct-a".into()).await.unwrap().unwrap();
        assert_eq!(a.known_locations.len(), 16, "{:?}", a.known_locations);
    }

    pub async fn erasure_removes_everything_of_the_account_keeps_its_slug_reserved_and_spares_the_others(s: &Subject) {
        let store = &*s.store;
        for (id, slug) in [("acct-a", "alpha"), ("acct-b", "bravo")] {
            store.create_account(&account(id, slug)).await.unwrap();
            fill(store, id).await;
        }
        let b_before = everything_of(store, "acct-b").await;
        assert_eq!(store.queued_command_count().await.unwrap(), 2);

        let report = store.erase_account(&"acct-a".into()).await.unwrap();
        assert_eq!(
            report,
            ErasureReport {
                stations: 1,
                id_tags: 1,
                transactions: 2,
                meter_values: 1,
                events: 1,
                commands: 1,
                queued_commands: 1,
                tokens: 1,
                login_events: 1,
                consents: 1,
                device_variables: 1,
                feed_events: 2,
                webhooks: 1,
            }
        );

        assert!(store.account(&"acct-a".into()).await.unwrap().is_none());
        assert!(store.account_by_email("ops@alpha.example").await.unwrap().is_none());
        assert!(store.account_by_slug("alpha").await.unwrap().is_none());
        assert!(store.token("hash-acct-a").await.unwrap().is_none());
        assert!(store.tokens(&"acct-a".into()).await.unwrap().is_empty());
        assert_eq!(store.consents(&"acct-a".into()).await.unwrap(), Consents::default());
        assert!(store.login_events(&"acct-a".into()).await.unwrap().is_empty());
        assert!(all_stations(store, &"acct-a".into()).await.unwrap().is_empty());
        assert!(store.station(&"acct-a".into(), &"CP1".into()).await.unwrap().is_none());
        assert!(all_id_tags(store, &"acct-a".into()).await.unwrap().is_empty());
        assert!(all_transactions(store, &"acct-a".into(), None).await.unwrap().is_empty());
        assert!(store.transaction_by_start(&new_tx("acct-a", "CP1", 1, 0).start_identity()).await.unwrap().is_none());
        assert!(store.transaction_by_reference(&"acct-a".into(), &"CP1".into(), "tx-201").await.unwrap().is_none());
        assert!(store.account_meter_values(&"acct-a".into()).await.unwrap().is_empty());
        assert!(store.events(&"acct-a".into(), &"CP1".into()).await.unwrap().is_empty());
        assert!(store.account_events(&"acct-a".into()).await.unwrap().is_empty());
        assert!(store.account_commands(&"acct-a".into()).await.unwrap().is_empty());
        assert!(store.queued_commands(&"acct-a".into(), &"CP1".into()).await.unwrap().is_empty());
        assert!(store.variables(&"acct-a".into(), &"CP1".into()).await.unwrap().is_empty());
        assert_eq!(store.queued_command_count().await.unwrap(), 1, "only the other account's command is queued");
        assert_eq!(store.oldest_queued_command().await.unwrap(), Some(command("acct-b", "CP1", "Reset", 1).created_at));
        assert!(store.feed_after(&"acct-a".into(), 0, 100).await.unwrap().is_empty());
        assert!(store.webhooks(&"acct-a".into()).await.unwrap().is_empty());
        assert!(store.webhook(&"acct-a".into(), "wh-1").await.unwrap().is_none());
        assert_eq!(store.webhook_cursor(&"acct-a".into(), "wh-1").await.unwrap(), None);
        assert!(store.webhook_deliveries(&"acct-a".into(), "wh-1").await.unwrap().is_empty());
        assert_eq!(store.webhook_accounts().await.unwrap(), [AccountId::from("acct-b")]);

        let slug_again = store.create_account(&account("acct-c", "alpha")).await;
        assert!(matches!(slug_again, Err(StoreError::Conflict("slug"))), "the slug stays reserved: {slug_again:?}");
        let mut same_email = account("acct-c", "charlie");
        same_email.email = "ops@alpha.example".into();
        store.create_account(&same_email).await.expect("the email is free again");

        assert_eq!(everything_of(store, "acct-b").await, b_before, "the other account is untouched");
        assert_eq!(
            store.erase_account(&"acct-a".into()).await.unwrap(),
            ErasureReport::default(),
            "erasing twice is harmless"
        );
        // What was applied from a node's log went with the account: the same entry is applied again.
        let again = feed_event(EventType::TransactionStarted, Some("CP1"), 2, 2);
        store.append_feed_from(&"acct-a".into(), "node-1/CP1", 7, std::slice::from_ref(&again)).await.unwrap();
        let feed = store.feed_after(&"acct-a".into(), 0, 100).await.unwrap();
        assert_eq!(feed.into_iter().map(|e| (e.kind, e.body)).collect::<Vec<_>>(), [(again.kind, again.body)]);
    }

    pub async fn tokens_are_found_by_hash_listed_by_age_and_revoked_per_account(s: &Subject) {
        let store = &*s.store;
        store.put_token("h-new", &token("acct-a", "t-new", 60)).await.unwrap();
        store.put_token("h-old", &token("acct-a", "t-old", 0)).await.unwrap();
        store.put_token("h-mid", &token("acct-a", "t-mid", 30)).await.unwrap();
        store.put_token("h-b", &token("acct-b", "t-b", 0)).await.unwrap();

        assert_eq!(store.token("h-old").await.unwrap().unwrap().id, "t-old");
        assert!(store.token("h-none").await.unwrap().is_none());
        let ids = |tokens: Vec<ApiToken>| tokens.into_iter().map(|t| t.id).collect::<Vec<_>>();
        assert_eq!(ids(store.tokens(&"acct-a".into()).await.unwrap()), ["t-old", "t-mid", "t-new"], "oldest first");

        assert!(
            !store.delete_token(&"acct-b".into(), "t-old").await.unwrap(),
            "another account's token is not revoked"
        );
        assert!(store.delete_token(&"acct-a".into(), "t-old").await.unwrap());
        assert!(!store.delete_token(&"acct-a".into(), "t-old").await.unwrap(), "once");
        assert!(store.token("h-old").await.unwrap().is_none());

        assert_eq!(store.delete_tokens_except(&"acct-a".into(), Some("t-new")).await.unwrap(), 1);
        assert_eq!(ids(store.tokens(&"acct-a".into()).await.unwrap()), ["t-new"]);
        assert!(store.token("h-mid").await.unwrap().is_none());
        assert_eq!(store.delete_tokens_except(&"acct-a".into(), None).await.unwrap(), 1);
        assert!(store.tokens(&"acct-a".into()).await.unwrap().is_empty());
        assert_eq!(store.delete_tokens_except(&"acct-a".into(), None).await.unwrap(), 0);
        assert_eq!(ids(store.tokens(&"acct-b".into()).await.unwrap()), ["t-b"], "the other account keeps its token");
    }

    pub async fn consents_are_all_off_until_set(s: &Subject) {
        let store = &*s.store;
        assert_eq!(store.consents(&"acct-a".into()).await.unwrap(), Consents::default());
        let mut c =
            Consents { personalized_offers: Consent { granted: true, updated_at: Some(at(5)) }, ..Consents::default() };
        store.put_consents(&"acct-a".into(), &c).await.unwrap();
        assert_eq!(store.consents(&"acct-a".into()).await.unwrap(), c);
        c.personalized_offers.granted = false;
        store.put_consents(&"acct-a".into(), &c).await.unwrap();
        assert_eq!(store.consents(&"acct-a".into()).await.unwrap(), c);
        assert_eq!(store.consents(&"acct-b".into()).await.unwrap(), Consents::default());
    }

    pub async fn login_history_keeps_the_newest_n_oldest_first(s: &Subject) {
        let store = &*s.store;
        let login = |i: i64| LoginEvent { at: at(i), ip: format!("192.0.2.{i}"), outcome: LoginOutcome::BadPassword };
        for i in 1..=5 {
            store.add_login_event(&"acct-a".into(), &login(i), 3).await.unwrap();
        }
        store.add_login_event(&"acct-b".into(), &login(9), 3).await.unwrap();
        assert_eq!(store.login_events(&"acct-a".into()).await.unwrap(), [login(3), login(4), login(5)]);
        assert_eq!(store.login_events(&"acct-b".into()).await.unwrap(), [login(9)]);
        assert!(store.login_events(&"acct-c".into()).await.unwrap().is_empty());
    }

    pub async fn stations_are_created_once_listed_by_id_updated_and_deleted(s: &Subject) {
        let store = &*s.store;
        for id in ["CP2", "CP1", "CP10"] {
            store.create_station(&station("acct-a", id)).await.unwrap();
        }
        store.create_station(&station("acct-b", "CP1")).await.unwrap();
        let again = store.create_station(&station("acct-a", "CP1")).await;
        assert!(matches!(again, Err(StoreError::Conflict("station id"))), "{again:?}");
        let ids = all_stations(store, &"acct-a".into()).await.unwrap().into_iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(ids, ["CP1", "CP10", "CP2"], "by id");
        assert_eq!(store.station_count(&"acct-a".into()).await.unwrap(), 3);
        assert_eq!(store.station_count(&"acct-none".into()).await.unwrap(), 0);
        assert_eq!(store.station(&"acct-a".into(), &"CP1".into()).await.unwrap().unwrap().password_hash, "hash-CP1");
        assert!(store.station(&"acct-a".into(), &"CP3".into()).await.unwrap().is_none());

        let updated = store
            .update_station(&"acct-a".into(), &"CP1".into(), &|s| s.registration = Registration::Blocked)
            .await
            .unwrap();
        assert_eq!(updated.unwrap().registration, Registration::Blocked);
        assert_eq!(
            store.station(&"acct-a".into(), &"CP1".into()).await.unwrap().unwrap().registration,
            Registration::Blocked
        );
        assert_eq!(
            store.station(&"acct-b".into(), &"CP1".into()).await.unwrap().unwrap().registration,
            Registration::Accepted
        );
        assert!(store
            .update_station(&"acct-a".into(), &"CP3".into(), &|s| s.protocol = Some("x".into()))
            .await
            .unwrap()
            .is_none());
        assert!(
            store.station(&"acct-a".into(), &"CP3".into()).await.unwrap().is_none(),
            "updating nothing creates nothing"
        );

        let boot = BootInfo {
            charge_point_vendor: "Acme".into(),
            charge_point_model: "One".into(),
            charge_point_serial_number: None,
            charge_box_serial_number: None,
            firmware_version: Some("1.2".into()),
            iccid: None,
            imsi: None,
            meter_type: None,
            meter_serial_number: None,
            booted_at: at(10),
        };
        store
            .change_station(&"acct-a".into(), &"CP2".into(), &StationChange::Booted(boot.clone()))
            .await
            .unwrap()
            .unwrap();
        let status = ConnectorStatus {
            evse_id: None,
            connector_id: 1,
            status: "Charging".into(),
            error_code: Some("NoError".into()),
            info: None,
            vendor_id: None,
            vendor_error_code: None,
            timestamp: None,
            received_at: at(20),
        };
        store
            .change_station(
                &"acct-a".into(),
                &"CP2".into(),
                &StationChange::Connector { key: "1".into(), status: status.clone() },
            )
            .await
            .unwrap();
        let cp2 =
            store.change_station(&"acct-a".into(), &"CP2".into(), &StationChange::Seen(at(15))).await.unwrap().unwrap();
        assert_eq!(cp2.boot, Some(boot));
        assert_eq!(cp2.connectors.get("1"), Some(&status));
        assert_eq!(cp2.last_seen, Some(at(20)), "an earlier sighting does not move last_seen back");
        assert_eq!(store.station(&"acct-a".into(), &"CP2".into()).await.unwrap().unwrap().last_seen, Some(at(20)));
        assert!(store
            .change_station(&"acct-a".into(), &"CP9".into(), &StationChange::Seen(at(1)))
            .await
            .unwrap()
            .is_none());

        assert!(store.delete_station(&"acct-a".into(), &"CP1".into()).await.unwrap());
        assert!(!store.delete_station(&"acct-a".into(), &"CP1".into()).await.unwrap());
        assert!(store.station(&"acct-a".into(), &"CP1".into()).await.unwrap().is_none());
        assert!(
            store.station(&"acct-b".into(), &"CP1".into()).await.unwrap().is_some(),
            "the other tenant's CP1 stays"
        );
        store.create_station(&station("acct-a", "CP1")).await.expect("a deleted id can be provisioned again");
    }

    pub async fn concurrent_station_changes_from_two_handles_lose_nothing(s: &Subject) {
        s.store.create_station(&station("acct-a", "CP1")).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..20u32 {
            let store = if i % 2 == 0 { s.store.clone() } else { s.other.clone() };
            tasks.push(tokio::spawn(async move {
                let status = ConnectorStatus {
                    evse_id: None,
                    connector_id: i,
                    status: "Available".into(),
                    error_code: None,
                    info: None,
                    vendor_id: None,
                    vendor_error_code: None,
                    timestamp: None,
                    received_at: at(i64::from(i)),
                };
                let change = StationChange::Connector { key: i.to_string(), status };
                store.change_station(&"acct-a".into(), &"CP1".into(), &change).await.unwrap().unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let cp1 = s.store.station(&"acct-a".into(), &"CP1".into()).await.unwrap().unwrap();
        assert_eq!(cp1.connectors.len(), 20, "{:?}", cp1.connectors.keys().collect::<Vec<_>>());
        assert_eq!(cp1.last_seen, Some(at(19)));
    }

    pub async fn id_tags_are_created_replaced_listed_and_deleted(s: &Subject) {
        let store = &*s.store;
        assert!(store.put_id_tag(&"acct-a".into(), &tag("TAG-B", TagStatus::Accepted)).await.unwrap(), "created");
        assert!(store.put_id_tag(&"acct-a".into(), &tag("TAG-A", TagStatus::Accepted)).await.unwrap());
        assert!(!store.put_id_tag(&"acct-a".into(), &tag("TAG-B", TagStatus::Blocked)).await.unwrap(), "replaced");
        assert!(store.put_id_tag(&"acct-b".into(), &tag("TAG-B", TagStatus::Expired)).await.unwrap(), "per account");
        assert_eq!(store.id_tag(&"acct-a".into(), "TAG-B").await.unwrap(), Some(tag("TAG-B", TagStatus::Blocked)));
        assert_eq!(
            all_id_tags(store, &"acct-a".into()).await.unwrap(),
            [tag("TAG-A", TagStatus::Accepted), tag("TAG-B", TagStatus::Blocked)]
        );
        assert!(store.delete_id_tag(&"acct-a".into(), "TAG-B").await.unwrap());
        assert!(!store.delete_id_tag(&"acct-a".into(), "TAG-B").await.unwrap());
        assert!(store.id_tag(&"acct-a".into(), "TAG-B").await.unwrap().is_none());
        assert_eq!(store.id_tag(&"acct-b".into(), "TAG-B").await.unwrap().unwrap().status, TagStatus::Expired);
    }

    pub async fn a_retried_start_finds_its_transaction_and_a_stop_applies_once(s: &Subject) {
        let store = &*s.store;
        let (first, created) = store.start_transaction(&new_tx("acct-a", "CP1", 1, 1000)).await.unwrap();
        assert!(created);
        assert!(first.id > 0);
        assert_eq!((first.meter_start, first.stop.as_ref()), (Some(1000), None));
        let (retry, created) = store.start_transaction(&new_tx("acct-a", "CP1", 1, 1000)).await.unwrap();
        assert!(!created, "a retried start creates nothing");
        assert_eq!(retry, first);
        let (second, created) = store.start_transaction(&new_tx("acct-a", "CP2", 1, 1000)).await.unwrap();
        assert!(created);
        assert!(second.id > first.id, "ids grow");
        let (third, _) = store.start_transaction(&new_tx("acct-a", "CP1", 2, 1000)).await.unwrap();
        assert_eq!(
            store.transaction_by_start(&new_tx("acct-a", "CP1", 1, 1000).start_identity()).await.unwrap(),
            Some(first.clone())
        );
        assert!(store.transaction_by_start(&new_tx("acct-a", "CP1", 1, 999).start_identity()).await.unwrap().is_none());
        assert!(store
            .transaction_by_start(&new_tx("acct-b", "CP1", 1, 1000).start_identity())
            .await
            .unwrap()
            .is_none());

        assert_eq!(
            store.stop_transaction(&"acct-a".into(), &"CP2".into(), first.id, &stop(1500)).await.unwrap(),
            StopOutcome::Unknown,
            "another station's"
        );
        assert_eq!(
            store.stop_transaction(&"acct-b".into(), &"CP1".into(), first.id, &stop(1500)).await.unwrap(),
            StopOutcome::Unknown,
            "another account's"
        );
        assert_eq!(
            store.stop_transaction(&"acct-a".into(), &"CP1".into(), 999_999, &stop(1500)).await.unwrap(),
            StopOutcome::Unknown
        );
        let StopOutcome::Stopped(stopped) =
            store.stop_transaction(&"acct-a".into(), &"CP1".into(), first.id, &stop(1500)).await.unwrap()
        else {
            panic!("the open transaction stops");
        };
        assert_eq!(stopped.energy_wh(), Some(500));
        let again = store.stop_transaction(&"acct-a".into(), &"CP1".into(), first.id, &stop(9999)).await.unwrap();
        assert_eq!(again, StopOutcome::AlreadyStopped(stopped.clone()), "a retried stop changes nothing");
        assert_eq!(store.transaction(&"acct-a".into(), first.id).await.unwrap(), Some(stopped.clone()));
        assert!(store.transaction(&"acct-b".into(), first.id).await.unwrap().is_none());

        let ids = |txs: Vec<Transaction>| txs.into_iter().map(|t| t.id).collect::<Vec<_>>();
        assert_eq!(
            ids(all_transactions(store, &"acct-a".into(), None).await.unwrap()),
            [third.id, second.id, first.id],
            "newest first"
        );
        assert_eq!(
            ids(all_transactions(store, &"acct-a".into(), Some(&"CP1".into())).await.unwrap()),
            [third.id, first.id]
        );
        assert!(all_transactions(store, &"acct-a".into(), Some(&"CP9".into())).await.unwrap().is_empty());
        assert!(all_transactions(store, &"acct-b".into(), None).await.unwrap().is_empty());
    }

    pub async fn two_handles_racing_the_same_start_get_the_same_transaction(s: &Subject) {
        for round in 0..10 {
            let tx = new_tx("acct-a", "CP1", 1, round);
            let (a, b) = (s.store.clone(), s.other.clone());
            let (ta, tb) = (tx.clone(), tx.clone());
            let (ra, rb) = tokio::join!(
                tokio::spawn(async move { a.start_transaction(&ta).await.unwrap() }),
                tokio::spawn(async move { b.start_transaction(&tb).await.unwrap() }),
            );
            let ((ta, created_a), (tb, created_b)) = (ra.unwrap(), rb.unwrap());
            assert_eq!(ta.id, tb.id, "round {round}");
            assert!(created_a ^ created_b, "exactly one created it (round {round})");
        }
        assert_eq!(all_transactions(&*s.store, &"acct-a".into(), None).await.unwrap().len(), 10);
    }

    pub async fn two_handles_racing_stops_of_one_transaction_record_only_the_first(s: &Subject) {
        for round in 0..10 {
            let (open, _) = s.store.start_transaction(&new_tx("acct-a", "CP1", 1, round)).await.unwrap();
            let (a, b) = (s.store.clone(), s.other.clone());
            let (ra, rb) = tokio::join!(
                tokio::spawn(async move {
                    a.stop_transaction(&"acct-a".into(), &"CP1".into(), open.id, &stop(1000 + round)).await
                }),
                tokio::spawn(async move {
                    b.stop_transaction(&"acct-a".into(), &"CP1".into(), open.id, &stop(2000 + round)).await
                }),
            );
            let outcomes = [ra.unwrap().unwrap(), rb.unwrap().unwrap()];
            let stopped: Vec<_> = outcomes
                .iter()
                .filter_map(|o| match o {
                    StopOutcome::Stopped(tx) => Some(tx.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(stopped.len(), 1, "exactly one stop wins (round {round}): {outcomes:?}");
            assert!(
                outcomes.contains(&StopOutcome::AlreadyStopped(stopped[0].clone())),
                "the other finds the winner's stop (round {round}): {outcomes:?}"
            );
            assert_eq!(s.store.transaction(&"acct-a".into(), open.id).await.unwrap().as_ref(), Some(&stopped[0]));
        }
    }

    pub async fn two_handles_racing_events_of_one_transaction_lose_none_and_create_it_once(s: &Subject) {
        for round in 0..5 {
            let reference = format!("race-{round}");
            let tasks: Vec<_> = (0..6u64)
                .map(|seq_no| {
                    let store = if seq_no % 2 == 0 { s.store.clone() } else { s.other.clone() };
                    let reference = reference.clone();
                    tokio::spawn(async move {
                        let create = |id| v201("acct-a", "CP1", &reference, id);
                        store
                            .apply_transaction_event(
                                &"acct-a".into(),
                                &"CP1".into(),
                                &reference,
                                seq_no,
                                &create,
                                &|t| {
                                    t.events.push(event_record(seq_no, "Updated", Some(100 * seq_no as i64)));
                                },
                            )
                            .await
                            .unwrap()
                    })
                })
                .collect();
            let mut created = 0;
            for task in tasks {
                let outcome = task.await.unwrap();
                assert!(outcome.applied, "each seqNo is new (round {round})");
                created += usize::from(outcome.created);
            }
            assert_eq!(created, 1, "one event created it (round {round})");
            let tx =
                s.store.transaction_by_reference(&"acct-a".into(), &"CP1".into(), &reference).await.unwrap().unwrap();
            let mut seqs: Vec<u64> = tx.events.iter().map(|e| e.seq_no).collect();
            seqs.sort_unstable();
            assert_eq!(seqs, [0, 1, 2, 3, 4, 5], "no event lost (round {round})");
        }
    }

    pub async fn transaction_events_create_once_and_a_repeated_seq_no_changes_nothing(s: &Subject) {
        let store = &*s.store;
        let create = |id| v201("acct-a", "CP1", "ref-1", id);
        let started = store
            .apply_transaction_event(&"acct-a".into(), &"CP1".into(), "ref-1", 0, &create, &|t| {
                t.events.push(event_record(0, "Started", Some(100)));
                t.meter_start = Some(100);
            })
            .await
            .unwrap();
        assert!(started.created && started.applied);
        let id = started.transaction.id;
        assert_eq!(started.transaction.events.len(), 1);

        let repeated = store
            .apply_transaction_event(&"acct-a".into(), &"CP1".into(), "ref-1", 0, &create, &|t| {
                t.events.push(event_record(0, "Started", Some(100)));
                t.charging_state = Some("should not be set".into());
            })
            .await
            .unwrap();
        assert!(!repeated.created && !repeated.applied);
        assert_eq!(repeated.transaction, started.transaction);

        let updated = store
            .apply_transaction_event(&"acct-a".into(), &"CP1".into(), "ref-1", 1, &create, &|t| {
                t.events.push(event_record(1, "Updated", Some(150)));
                t.charging_state = Some("Charging".into());
            })
            .await
            .unwrap();
        assert!(updated.applied && !updated.created);
        assert_eq!(updated.transaction.id, id);
        assert_eq!(updated.transaction.events.iter().map(|e| e.seq_no).collect::<Vec<_>>(), [0, 1]);

        let stored = store.transaction(&"acct-a".into(), id).await.unwrap().unwrap();
        assert_eq!(stored, updated.transaction);
        assert_eq!(
            store.transaction_by_reference(&"acct-a".into(), &"CP1".into(), "ref-1").await.unwrap(),
            Some(stored)
        );
        assert!(store.transaction_by_reference(&"acct-a".into(), &"CP2".into(), "ref-1").await.unwrap().is_none());
        assert!(store.transaction_by_reference(&"acct-b".into(), &"CP1".into(), "ref-1").await.unwrap().is_none());

        let other = store
            .apply_transaction_event(
                &"acct-a".into(),
                &"CP2".into(),
                "ref-1",
                0,
                &|id| v201("acct-a", "CP2", "ref-1", id),
                &|_| {},
            )
            .await
            .unwrap();
        assert!(other.created, "the same reference on another station is another transaction");
        assert_ne!(other.transaction.id, id);
        let (v16, _) = store.start_transaction(&new_tx("acct-a", "CP3", 1, 0)).await.unwrap();
        assert!(v16.id > other.transaction.id, "1.6 and 2.0.1 ids come from one sequence");
    }

    pub async fn put_transaction_is_idempotent_and_found_by_start_and_reference(s: &Subject) {
        let store = &*s.store;
        let ids = store.reserve_transaction_ids(2).await.unwrap();
        let started = Transaction::started(&new_tx("acct-a", "CP1", 1, 500), ids.start, at(101));
        store.put_transaction(&started).await.unwrap();
        store.put_transaction(&started).await.unwrap();
        assert_eq!(
            all_transactions(store, &"acct-a".into(), None).await.unwrap(),
            std::slice::from_ref(&started),
            "stored once"
        );
        assert_eq!(
            store.transaction_by_start(&new_tx("acct-a", "CP1", 1, 500).start_identity()).await.unwrap(),
            Some(started.clone())
        );
        let (retried, created) = store.start_transaction(&new_tx("acct-a", "CP1", 1, 500)).await.unwrap();
        assert_eq!((retried, created), (started.clone(), false), "a start put there is found by a retried start");

        let mut stopped = started.clone();
        stopped.stop = Some(stop(900));
        store.put_transaction(&stopped).await.unwrap();
        store.put_transaction(&stopped).await.unwrap();
        assert_eq!(store.transaction(&"acct-a".into(), started.id).await.unwrap(), Some(stopped.clone()), "replaced");
        assert_eq!(all_transactions(store, &"acct-a".into(), None).await.unwrap().len(), 1);

        let mut v2 = v201("acct-a", "CP1", "ref-9", ids.start + 1);
        v2.events.push(event_record(0, "Started", None));
        store.put_transaction(&v2).await.unwrap();
        store.put_transaction(&v2).await.unwrap();
        assert_eq!(
            store.transaction_by_reference(&"acct-a".into(), &"CP1".into(), "ref-9").await.unwrap(),
            Some(v2.clone())
        );
        let next = store
            .apply_transaction_event(
                &"acct-a".into(),
                &"CP1".into(),
                "ref-9",
                1,
                &|id| v201("acct-a", "CP1", "ref-9", id),
                &|t| t.events.push(event_record(1, "Updated", None)),
            )
            .await
            .unwrap();
        assert!(!next.created && next.applied, "an event finds the transaction put there");
        assert_eq!(next.transaction.id, v2.id);
        let ids_listed = all_transactions(store, &"acct-a".into(), None)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect::<Vec<_>>();
        assert_eq!(ids_listed, [v2.id, started.id]);
    }

    pub async fn reserved_transaction_ids_are_never_handed_out_again(s: &Subject) {
        let store = &*s.store;
        let (before, _) = store.start_transaction(&new_tx("acct-a", "CP1", 1, 0)).await.unwrap();
        let block = store.reserve_transaction_ids(10).await.unwrap();
        assert_eq!(block.len(), 10);
        assert!(block.start > before.id);
        let other_block = s.other.reserve_transaction_ids(5).await.unwrap();
        assert_eq!(other_block.len(), 5);
        assert!(other_block.start >= block.end || other_block.end <= block.start, "{block:?} {other_block:?}");
        let (after, _) = store.start_transaction(&new_tx("acct-a", "CP1", 1, 1)).await.unwrap();
        let event = store
            .apply_transaction_event(
                &"acct-a".into(),
                &"CP1".into(),
                "r",
                0,
                &|id| v201("acct-a", "CP1", "r", id),
                &|_| {},
            )
            .await
            .unwrap();
        for id in [before.id, after.id, event.transaction.id] {
            assert!(!block.contains(&id) && !other_block.contains(&id), "{id} was reserved");
        }
        let empty = store.reserve_transaction_ids(0).await.unwrap();
        assert!(empty.is_empty());
    }

    pub async fn meter_values_page_by_time_across_calls_and_spans_with_ties_in_a_fixed_order(s: &Subject) {
        let store = &*s.store;
        let a: AccountId = "acct-a".into();
        // Two hours of readings every 37 s (many spans of a store's grouping), two readings at a
        // few instants (a tie), written in calls of every shape: a whole session at once (a 1.6
        // StopTransaction's transactionData), out of order, and some twice.
        let mut all: Vec<MeterRecord> = (0..200).map(|i| reading("CP1", Some(7), i * 37, &format!("{i}"))).collect();
        for i in [3, 50, 51, 199] {
            all.push(reading("CP1", Some(7), i * 37, &format!("{i}-bis")));
        }
        store.add_meter_values(&a, &all[..100]).await.unwrap();
        for chunk in all[100..].chunks(7).rev() {
            store.add_meter_values(&a, chunk).await.unwrap();
        }
        store.add_meter_values(&a, &all[40..60]).await.unwrap();
        store.add_meter_values(&a, &[reading("CP1", Some(8), 40, "other")]).await.unwrap();
        // Time order; ties in the order of their stored JSON.
        all.sort_by_cached_key(|r| (r.meter_value.timestamp, serde_json::to_vec(r).unwrap()));

        let a = &a;
        let page = |after: Option<ReadingKey>, limit: usize| {
            let request = PageRequest::new(after, limit);
            async move { store.meter_values_page(a, &"CP1".into(), 7, &request).await.unwrap() }
        };
        for limit in [1, 2, 9, 100, 1000] {
            let (mut walked, mut after, mut pages) = (Vec::new(), None, 0);
            loop {
                let p = page(after, limit).await;
                assert!(p.items.len() <= limit && (p.items.len() == limit || p.next.is_none()), "limit {limit}");
                walked.extend(p.items);
                pages += 1;
                match p.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
                assert!(pages <= all.len() + 1, "the pages end");
            }
            assert_eq!(walked, all, "a walk of pages of {limit} gives every reading once, in order");
        }
        // From a time on: `(t, 0)` starts with the first reading at t.
        let t = all[100].meter_value.timestamp;
        let from = page(Some((t.timestamp_micros(), 0)), 3).await;
        assert_eq!(from.items, all[100..103]);
        // After the first of two readings at one instant: the second, then on.
        let tie = all.iter().position(|r| r.meter_value.timestamp == at(50 * 37)).unwrap();
        assert_eq!(all[tie + 1].meter_value.timestamp, at(50 * 37), "two readings at that instant");
        let after_first = page(Some((at(50 * 37).timestamp_micros(), 1)), 2).await;
        assert_eq!(after_first.items, all[tie + 1..tie + 3]);
        assert!(page(Some((all[all.len() - 1].meter_value.timestamp.timestamp_micros() + 1, 0)), 5)
            .await
            .items
            .is_empty());
        assert!(store.meter_values_page(a, &"CP1".into(), 9, &PageRequest::first(5)).await.unwrap().items.is_empty());
    }

    /// Prunes `kind` of the account to the end, `batch` records a step; how many went, in how many steps.
    async fn prune_all(
        store: &dyn SharedStore,
        a: &str,
        kind: DataKind,
        before: DateTime<Utc>,
        batch: usize,
    ) -> (usize, usize) {
        let (mut removed, mut steps, mut after) = (0, 0, None);
        loop {
            let step = store.prune(&a.into(), kind, before, after, batch).await.unwrap();
            removed += step.removed;
            steps += 1;
            assert!(steps < 1000, "a pass ends");
            match step.next {
                Some(next) => after = Some(next),
                None => return (removed, steps),
            }
        }
    }

    pub async fn pruning_removes_what_is_older_than_the_cutoff_of_each_kind_a_batch_at_a_time(s: &Subject) {
        let store = &*s.store;
        for (id, slug) in [("acct-a", "alpha"), ("acct-b", "beta")] {
            store.create_account(&account(id, slug)).await.unwrap();
        }
        let a: AccountId = "acct-a".into();
        let before = at(0);
        // Readings: a finished transaction's, some old and some not; an open transaction's, all
        // old; loose ones; and the other account's, all old.
        let (open, _) = store.start_transaction(&new_tx("acct-a", "CP2", 1, 0)).await.unwrap();
        let done: Vec<MeterRecord> =
            (0..30).map(|i| reading("CP1", Some(7), -3000 + i * 200, &format!("{i}"))).collect();
        store.add_meter_values(&a, &done).await.unwrap();
        let open_readings: Vec<MeterRecord> = (0..5).map(|i| reading("CP2", Some(open.id), -5000 + i, "o")).collect();
        store.add_meter_values(&a, &open_readings).await.unwrap();
        store
            .add_meter_values(&a, &[reading("CP3", None, -10, "loose-old"), reading("CP3", None, 10, "loose-new")])
            .await
            .unwrap();
        store.add_meter_values(&a, &[reading("CP5", None, -10, "loose-all-old")]).await.unwrap();
        store.add_meter_values(&"acct-b".into(), &[reading("CP1", Some(7), -3000, "b")]).await.unwrap();
        for (station, received) in [("CP1", -100), ("CP1", 100), ("CP4", -50)] {
            store.add_event(&a, &event(station, "DataTransfer", received)).await.unwrap();
        }
        store.add_event(&"acct-b".into(), &event("CP1", "DataTransfer", -100)).await.unwrap();
        for (secs, outcome) in
            [(-200, LoginOutcome::Success), (-100, LoginOutcome::BadPassword), (50, LoginOutcome::Success)]
        {
            let login = LoginEvent { at: at(secs), ip: "127.0.0.1".into(), outcome };
            store.add_login_event(&a, &login, 100).await.unwrap();
        }
        let mut answered_long_ago = command("acct-a", "CP1", "Reset", -500);
        answered_long_ago.status = CommandStatus::Answered;
        answered_long_ago.answered_at = Some(at(-400));
        let mut answered_lately = command("acct-a", "CP1", "Reset", -500);
        answered_lately.id = "lately".into();
        answered_lately.status = CommandStatus::Answered;
        answered_lately.answered_at = Some(at(10));
        let still_queued = command("acct-a", "CP1", "Reset", -900);
        store.enqueue_command(&still_queued).await.unwrap();
        for c in [&answered_long_ago, &answered_lately] {
            store.update_command(c).await.unwrap();
        }

        // Readings, 4 at a time: the 15 old ones of the finished transaction (all before at(0)) and
        // the old loose one; the open transaction keeps all of its own.
        let (removed, steps) = prune_all(store, "acct-a", DataKind::MeterValues, before, 4).await;
        let kept: Vec<String> = store
            .transaction_meter_values(&a, &"CP1".into(), 7)
            .await
            .unwrap()
            .iter()
            .map(|r| r.meter_value.sampled_value[0].value.clone())
            .collect();
        let old_done = done.iter().filter(|r| r.meter_value.timestamp < before).count();
        assert_eq!(
            kept,
            (old_done..30).map(|i| i.to_string()).collect::<Vec<_>>(),
            "the finished transaction's new readings stay"
        );
        assert_eq!(removed, old_done + 2, "its old readings and the old loose ones went");
        let loose_stations = store.loose_reading_stations_page(&a, &PageRequest::first(10)).await.unwrap().items;
        assert_eq!(
            loose_stations,
            [StationId::from("CP3")],
            "a station whose loose readings all went is no longer listed"
        );
        assert!(steps >= 1);
        assert_eq!(
            store.transaction_meter_values(&a, &"CP2".into(), open.id).await.unwrap().len(),
            5,
            "an open transaction keeps its readings"
        );
        let loose = store.transaction_meter_values(&a, &"CP3".into(), 0).await.unwrap();
        assert_eq!(
            loose.iter().map(|r| r.meter_value.sampled_value[0].value.as_str()).collect::<Vec<_>>(),
            ["loose-new"]
        );
        assert_eq!(
            store.account_meter_values(&"acct-b".into()).await.unwrap().len(),
            1,
            "another account's are its own"
        );
        assert_eq!(
            prune_all(store, "acct-a", DataKind::MeterValues, before, 4).await.0,
            0,
            "a second pass finds nothing"
        );

        assert_eq!(prune_all(store, "acct-a", DataKind::StationEvents, before, 1).await.0, 2);
        let events = store.account_events(&a).await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.received_at).collect::<Vec<_>>(),
            [event("CP1", "DataTransfer", 100).received_at]
        );
        assert_eq!(store.account_events(&"acct-b".into()).await.unwrap().len(), 1);

        assert_eq!(prune_all(store, "acct-a", DataKind::LoginHistory, before, 1).await.0, 2);
        assert_eq!(store.login_events(&a).await.unwrap().iter().map(|e| e.at).collect::<Vec<_>>(), [at(50)]);

        assert_eq!(prune_all(store, "acct-a", DataKind::FinishedCommands, before, 2).await.0, 1);
        let mut left: Vec<String> = store.account_commands(&a).await.unwrap().into_iter().map(|c| c.id).collect();
        left.sort();
        let mut expected = vec![answered_lately.id.clone(), still_queued.id.clone()];
        expected.sort();
        assert_eq!(left, expected, "a command ended lately and a queued one stay");
        let paged = store.commands_page(&a, &PageRequest::first(10)).await.unwrap().items;
        assert_eq!(paged.len(), 2, "and the command index names only those");

        // Every account is handed out, a few at a time.
        let (mut ids, mut after) = (Vec::new(), None);
        loop {
            let (page, next) = store.account_ids(after, 1).await.unwrap();
            ids.extend(page.into_iter().map(|id| id.to_string()));
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
            assert!(ids.len() < 100, "the walk ends");
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids, ["acct-a", "acct-b"]);
    }

    pub async fn pruning_finished_transactions_takes_their_indexes_and_readings_and_keeps_open_ones(s: &Subject) {
        let store = &*s.store;
        store.create_account(&account("acct-a", "alpha")).await.unwrap();
        let a: AccountId = "acct-a".into();
        // Stopped at 200 (received at 201): old at 1000. One stopped later, and one open.
        let (old, _) = store.start_transaction(&new_tx("acct-a", "CP1", 1, 0)).await.unwrap();
        store.stop_transaction(&a, &"CP1".into(), old.id, &stop(10)).await.unwrap();
        store.add_meter_values(&a, &[reading("CP1", Some(old.id), 150, "old")]).await.unwrap();
        let (later, _) = store.start_transaction(&new_tx("acct-a", "CP1", 2, 0)).await.unwrap();
        let mut late_stop = stop(10);
        late_stop.received_at = at(5000);
        store.stop_transaction(&a, &"CP1".into(), later.id, &late_stop).await.unwrap();
        let (open, _) = store.start_transaction(&new_tx("acct-a", "CP1", 3, 0)).await.unwrap();
        store.add_meter_values(&a, &[reading("CP1", Some(open.id), -9000, "open")]).await.unwrap();
        // A 2.0.1 transaction stopped long ago, found by its reference until it goes.
        let mut v2 = v201("acct-a", "CP9", "ref-1", store.reserve_transaction_ids(1).await.unwrap().start);
        v2.stop = Some(stop(10));
        store.put_transaction(&v2).await.unwrap();
        assert!(store.transaction_by_reference(&a, &"CP9".into(), "ref-1").await.unwrap().is_some());

        let (removed, _) = prune_all(store, "acct-a", DataKind::FinishedTransactions, at(1000), 1).await;
        assert_eq!(removed, 2, "the two stopped long ago");
        assert!(store.transaction(&a, old.id).await.unwrap().is_none());
        assert!(store.transaction(&a, v2.id).await.unwrap().is_none());
        assert!(store.transaction_by_start(&new_tx("acct-a", "CP1", 1, 0).start_identity()).await.unwrap().is_none());
        assert!(store.transaction_by_reference(&a, &"CP9".into(), "ref-1").await.unwrap().is_none());
        assert!(
            store.transaction_meter_values(&a, &"CP1".into(), old.id).await.unwrap().is_empty(),
            "its readings went with it"
        );
        let listed: Vec<i32> = store
            .transactions_page(&a, &TransactionFilter::default(), &PageRequest::first(10))
            .await
            .unwrap()
            .items
            .iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(listed, [open.id, later.id], "the others stay, newest first");
        let by_station = TransactionFilter { station: Some("CP1".into()), ..Default::default() };
        let listed = store.transactions_page(&a, &by_station, &PageRequest::first(10)).await.unwrap().items.len();
        assert_eq!(listed, 2, "and the station's index no longer names it");
        assert_eq!(store.transaction_meter_values(&a, &"CP1".into(), open.id).await.unwrap().len(), 1);
        assert_eq!(prune_all(store, "acct-a", DataKind::FinishedTransactions, at(1000), 1).await.0, 0);
    }

    pub async fn meter_values_are_kept_once_in_timestamp_order(s: &Subject) {
        let store = &*s.store;
        let (r1, r2, r3) = (
            reading("CP1", Some(7), 10, "100"),
            reading("CP1", Some(7), 20, "200"),
            reading("CP1", Some(7), 30, "300"),
        );
        let loose = reading("CP1", None, 5, "50");
        let other_tx = reading("CP1", Some(8), 15, "999");
        store.add_meter_values(&"acct-a".into(), &[r3.clone(), r1.clone()]).await.unwrap();
        store.add_meter_values(&"acct-a".into(), &[r2.clone(), r1.clone(), loose.clone()]).await.unwrap();
        store.add_meter_values(&"acct-a".into(), &[r3.clone(), other_tx.clone()]).await.unwrap();
        store.add_meter_values(&"acct-a".into(), &[]).await.unwrap();
        assert_eq!(
            store.transaction_meter_values(&"acct-a".into(), &"CP1".into(), 7).await.unwrap(),
            [r1.clone(), r2.clone(), r3.clone()]
        );
        assert_eq!(
            store.transaction_meter_values(&"acct-a".into(), &"CP1".into(), 8).await.unwrap(),
            std::slice::from_ref(&other_tx)
        );
        assert!(store.transaction_meter_values(&"acct-a".into(), &"CP2".into(), 7).await.unwrap().is_empty());
        assert!(store.transaction_meter_values(&"acct-b".into(), &"CP1".into(), 7).await.unwrap().is_empty());
        // A different value at the same instant is another reading.
        let corrected = reading("CP1", Some(7), 20, "201");
        store.add_meter_values(&"acct-a".into(), std::slice::from_ref(&corrected)).await.unwrap();
        assert_eq!(store.transaction_meter_values(&"acct-a".into(), &"CP1".into(), 7).await.unwrap().len(), 4);

        let mut all = store.account_meter_values(&"acct-a".into()).await.unwrap();
        assert_eq!(all.len(), 6, "every reading once, with or without a transaction");
        let key =
            |r: &MeterRecord| (r.transaction_id, r.meter_value.timestamp, r.meter_value.sampled_value[0].value.clone());
        all.sort_by_key(key);
        let mut expected = vec![r1, r2, r3, loose, other_tx, corrected];
        expected.sort_by_key(key);
        assert_eq!(all, expected);
    }

    pub async fn lists_page_in_their_order_and_miss_or_repeat_nothing_while_rows_arrive(s: &Subject) {
        let store = &*s.store;
        let a: AccountId = "acct-a".into();
        let mut expected_stations = std::collections::BTreeSet::new();
        for i in 0..20 {
            let id = format!("CP{:03}", i * 10);
            store.create_station(&station("acct-a", &id)).await.unwrap();
            store.put_id_tag(&a, &tag(&format!("TAG{:03}", i * 10), TagStatus::Accepted)).await.unwrap();
            expected_stations.insert(id);
        }
        store.create_station(&station("acct-b", "CP005")).await.unwrap();
        store.put_id_tag(&"acct-b".into(), &tag("TAG005", TagStatus::Accepted)).await.unwrap();

        // Stations: between pages one arrives before the cursor (never shown), one after it (shown
        // once), and one not yet shown is deleted (not shown).
        let (mut seen, mut after, mut round) = (Vec::new(), None::<ocpp_css::ids::StationId>, 0);
        loop {
            let page = store.stations_page(&a, &StationFilter::default(), &PageRequest::new(after, 6)).await.unwrap();
            assert!(page.items.len() <= 6);
            seen.extend(page.items.iter().map(|s| s.id.to_string()));
            let Some(next) = page.next else { break };
            round += 1;
            let cursor: u32 = next.as_str()[2..].parse().unwrap();
            let before = format!("CP{:03}", cursor - 1);
            let beyond = format!("CP{:03}", cursor + 1);
            store.create_station(&station("acct-a", &before)).await.unwrap();
            store.create_station(&station("acct-a", &beyond)).await.unwrap();
            expected_stations.insert(beyond);
            let doomed = format!("CP{:03}", cursor + 20);
            if expected_stations.remove(&doomed) {
                assert!(store.delete_station(&a, &doomed.as_str().into()).await.unwrap());
            }
            after = Some(next);
        }
        assert!(round >= 3, "several pages were read ({round})");
        assert_eq!(seen, expected_stations.into_iter().collect::<Vec<_>>(), "in id order, each once");

        // Id tags, the same way.
        let (mut seen, mut after, mut expected) = (Vec::new(), None::<String>, std::collections::BTreeSet::new());
        for i in 0..20 {
            expected.insert(format!("TAG{:03}", i * 10));
        }
        loop {
            let page = store.id_tags_page(&a, &PageRequest::new(after, 7)).await.unwrap();
            assert!(page.items.len() <= 7);
            seen.extend(page.items.iter().map(|t| t.id_tag.clone()));
            let Some(next) = page.next else { break };
            let cursor: u32 = next[3..].parse().unwrap();
            store.put_id_tag(&a, &tag(&format!("TAG{:03}", cursor - 1), TagStatus::Accepted)).await.unwrap();
            store.put_id_tag(&a, &tag(&format!("TAG{:03}", cursor + 1), TagStatus::Accepted)).await.unwrap();
            expected.insert(format!("TAG{:03}", cursor + 1));
            after = Some(next);
        }
        assert_eq!(seen, expected.into_iter().collect::<Vec<_>>(), "in tag order, each once");

        // Transactions, newest first: those started while a client pages are newer than any page
        // it has left, so it sees exactly the ones there were when it began; one stopped meanwhile
        // is still there once.
        let mut expected = Vec::new();
        for i in 0..17 {
            expected
                .push(store.start_transaction(&new_tx("acct-a", &format!("CP{:03}", i % 3), 1, i)).await.unwrap().0.id);
        }
        store.start_transaction(&new_tx("acct-b", "CP005", 1, 0)).await.unwrap();
        expected.reverse();
        let (mut seen, mut after) = (Vec::new(), None);
        loop {
            let page =
                store.transactions_page(&a, &TransactionFilter::default(), &PageRequest::new(after, 5)).await.unwrap();
            assert!(page.items.len() <= 5);
            seen.extend(page.items.iter().map(|t| t.id));
            let Some(next) = page.next else { break };
            store.start_transaction(&new_tx("acct-a", "CP000", 2, 100 + next as i64)).await.unwrap();
            let last = expected[expected.len() - 1];
            let _ = store.stop_transaction(&a, &"CP002".into(), last, &stop(1)).await.unwrap();
            after = Some(next);
        }
        assert_eq!(seen, expected, "newest first, each once");
    }

    pub async fn transaction_pages_filter_by_station_status_and_time_through_every_write_path(s: &Subject) {
        let store = &*s.store;
        let a: AccountId = "acct-a".into();
        let start = |station: &str, connector: u32, secs: i64| {
            let mut tx = new_tx("acct-a", station, connector, secs);
            tx.start_timestamp = at(secs);
            tx
        };
        let stop_at = |secs: i64| TransactionStop { timestamp: at(secs), ..stop(secs) };
        let t1 = store.start_transaction(&start("CP1", 1, 10)).await.unwrap().0.id;
        let t2 = store.start_transaction(&start("CP2", 1, 20)).await.unwrap().0.id;
        let t3 = store.start_transaction(&start("CP1", 2, 30)).await.unwrap().0.id;
        let t4 = store.start_transaction(&start("CP2", 2, 40)).await.unwrap().0.id;
        let t_dup = store.start_transaction(&start("CP1", 1, 15)).await.unwrap().0.id;
        assert!(matches!(
            store.stop_transaction(&a, &"CP1".into(), t1, &stop_at(100)).await.unwrap(),
            StopOutcome::Stopped(_)
        ));
        assert!(matches!(
            store.stop_transaction(&a, &"CP2".into(), t4, &stop_at(300)).await.unwrap(),
            StopOutcome::Stopped(_)
        ));
        // Another account's, on a station of the same name: never in acct-a's lists.
        store.start_transaction(&new_tx("acct-b", "CP1", 1, 0)).await.unwrap();
        // A 2.0.1 transaction written whole (as a cluster node's log applies it), open, then ended.
        let t5 = store.reserve_transaction_ids(1).await.unwrap().start;
        let mut v = v201("acct-a", "CP1", "tx-5", t5);
        v.start_timestamp = at(50);
        store.put_transaction(&v).await.unwrap();
        let t6 = store.start_transaction(&start("CP3", 1, 60)).await.unwrap().0.id;
        let status = |s| TransactionFilter { status: Some(s), ..TransactionFilter::default() };

        for limit in [1, 2, 1000] {
            let on =
                |station: &str| TransactionFilter { station: Some(station.into()), ..TransactionFilter::default() };
            assert_eq!(
                walk_transactions(store, "acct-a", &on("CP1"), limit).await,
                [t5, t_dup, t3, t1],
                "limit {limit}"
            );
            assert_eq!(walk_transactions(store, "acct-a", &on("CP2"), limit).await, [t4, t2]);
            assert!(walk_transactions(store, "acct-a", &on("CP9"), limit).await.is_empty());
            assert_eq!(
                walk_transactions(store, "acct-a", &status(TransactionStatus::Active), limit).await,
                [t6, t5, t_dup, t3, t2]
            );
            assert_eq!(
                walk_transactions(store, "acct-a", &status(TransactionStatus::Completed), limit).await,
                [t4, t1]
            );
            let open_on_cp2 = TransactionFilter {
                station: Some("CP2".into()),
                status: Some(TransactionStatus::Active),
                ..TransactionFilter::default()
            };
            assert_eq!(walk_transactions(store, "acct-a", &open_on_cp2, limit).await, [t2]);
            let started = TransactionFilter {
                started_from: Some(at(15)),
                started_to: Some(at(40)),
                ..TransactionFilter::default()
            };
            assert_eq!(
                walk_transactions(store, "acct-a", &started, limit).await,
                [t_dup, t3, t2],
                "from inclusive, to exclusive"
            );
            let stopped = TransactionFilter {
                stopped_from: Some(at(100)),
                stopped_to: Some(at(300)),
                ..TransactionFilter::default()
            };
            assert_eq!(
                walk_transactions(store, "acct-a", &stopped, limit).await,
                [t1],
                "an open one has no stop to be in range"
            );
        }
        assert_eq!(
            walk_transactions(store, "acct-b", &TransactionFilter::default(), 10).await.len(),
            1,
            "the other account's own"
        );

        // Ending the 2.0.1 one (rewritten whole) and stopping through the event path move them out of
        // the open ones.
        v.stop = Some(stop_at(400));
        store.put_transaction(&v).await.unwrap();
        assert!(matches!(
            store.stop_transaction(&a, &"CP1".into(), t3, &stop_at(500)).await.unwrap(),
            StopOutcome::Stopped(_)
        ));
        assert_eq!(walk_transactions(store, "acct-a", &status(TransactionStatus::Active), 2).await, [t6, t_dup, t2]);
        assert_eq!(
            walk_transactions(store, "acct-a", &status(TransactionStatus::Completed), 2).await,
            [t5, t4, t3, t1]
        );
        // And a second handle (another node) reads the same.
        assert_eq!(
            walk_transactions(&*s.other, "acct-a", &status(TransactionStatus::Active), 1).await,
            [t6, t_dup, t2]
        );
    }

    pub async fn station_pages_filter_by_registration_and_protocol(s: &Subject) {
        let store = &*s.store;
        let a: AccountId = "acct-a".into();
        for i in 0..9 {
            store.create_station(&station("acct-a", &format!("CP{i}"))).await.unwrap();
        }
        store.create_station(&station("acct-b", "CP0")).await.unwrap();
        for i in [1, 4, 7] {
            store
                .update_station(&a, &format!("CP{i}").as_str().into(), &|s| s.registration = Registration::Pending)
                .await
                .unwrap();
        }
        for i in [4, 5, 6] {
            store
                .update_station(&a, &format!("CP{i}").as_str().into(), &|s| s.protocol = Some("ocpp2.0.1".into()))
                .await
                .unwrap();
        }
        for limit in [1, 2, 100] {
            let pending = StationFilter { registration: Some(Registration::Pending), ..StationFilter::default() };
            assert_eq!(walk_stations(store, "acct-a", &pending, limit).await, ["CP1", "CP4", "CP7"], "limit {limit}");
            let v201 = StationFilter { protocol: Some("ocpp2.0.1".into()), ..StationFilter::default() };
            assert_eq!(walk_stations(store, "acct-a", &v201, limit).await, ["CP4", "CP5", "CP6"]);
            let both = StationFilter { registration: Some(Registration::Pending), protocol: Some("ocpp2.0.1".into()) };
            assert_eq!(walk_stations(store, "acct-a", &both, limit).await, ["CP4"]);
            assert_eq!(walk_stations(store, "acct-a", &StationFilter::default(), limit).await.len(), 9);
        }
        assert_eq!(walk_stations(store, "acct-b", &StationFilter::default(), 1).await, ["CP0"]);
    }

    pub async fn station_events_are_kept_once_in_received_order(s: &Subject) {
        let store = &*s.store;
        let (e1, e2, e3) = (
            event("CP1", "DataTransfer", 1),
            event("CP1", "SecurityEventNotification", 2),
            event("CP1", "DataTransfer", 3),
        );
        let elsewhere = event("CP2", "DataTransfer", 0);
        store.add_event(&"acct-a".into(), &e1).await.unwrap();
        store.add_event(&"acct-a".into(), &e3).await.unwrap();
        store.add_event(&"acct-a".into(), &e2).await.unwrap();
        store.add_event(&"acct-a".into(), &e1).await.unwrap();
        store.add_event(&"acct-a".into(), &elsewhere).await.unwrap();
        store.add_event(&"acct-b".into(), &e1).await.unwrap();
        assert_eq!(
            store.events(&"acct-a".into(), &"CP1".into()).await.unwrap(),
            [e1.clone(), e2.clone(), e3.clone()],
            "once, by received time"
        );
        assert_eq!(store.events(&"acct-a".into(), &"CP2".into()).await.unwrap(), std::slice::from_ref(&elsewhere));
        assert!(store.events(&"acct-a".into(), &"CP3".into()).await.unwrap().is_empty());
        assert_eq!(store.account_events(&"acct-a".into()).await.unwrap(), [e1.clone(), e2, e3, elsewhere]);
        assert_eq!(store.account_events(&"acct-b".into()).await.unwrap(), [e1]);
    }

    pub async fn the_exports_pages_of_loose_reading_stations_events_and_commands_give_each_once_in_order(s: &Subject) {
        let store = &*s.store;
        let a: AccountId = "acct-a".into();
        let a = &a;

        // Readings outside a transaction on four stations, one of them since deleted; CP4 has only
        // readings of a transaction; another account's stay its own.
        for id in ["CP1", "CP10", "CP3", "CP4", "CP:2"] {
            store.create_station(&station("acct-a", id)).await.unwrap();
        }
        for id in ["CP1", "CP10", "CP3", "CP:2"] {
            let loose: Vec<MeterRecord> = (0..3).map(|i| reading(id, None, i * 400, &format!("{id}-{i}"))).collect();
            store.add_meter_values(a, &loose).await.unwrap();
        }
        store
            .add_meter_values(a, &[reading("CP1", Some(7), 10, "tx"), reading("CP4", Some(8), 10, "tx")])
            .await
            .unwrap();
        store.add_meter_values(&"acct-b".into(), &[reading("CP0", None, 10, "b")]).await.unwrap();
        assert!(store.delete_station(a, &"CP3".into()).await.unwrap());
        for (limit, budget) in [(1, 1), (2, 2), (2, 1000), (100, 5000)] {
            let (mut walked, mut after, mut pages) = (Vec::new(), None, 0);
            loop {
                let request = PageRequest { after, limit, budget };
                let page = store.loose_reading_stations_page(a, &request).await.unwrap();
                assert!(page.items.len() <= limit);
                walked.extend(page.items.into_iter().map(|s| s.to_string()));
                pages += 1;
                assert!(pages <= 20, "the pages end");
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            assert_eq!(
                walked,
                ["CP1", "CP10", "CP3", "CP:2"],
                "limit {limit}, budget {budget}: by id, the deleted one too"
            );
        }
        let loose = store.transaction_meter_values(a, &"CP3".into(), 0).await.unwrap();
        assert_eq!(loose.len(), 3, "a deleted station's readings stay");
        let b_stations = store.loose_reading_stations_page(&"acct-b".into(), &PageRequest::first(10)).await.unwrap();
        assert_eq!(b_stations.items, [ocpp_css::ids::StationId::from("CP0")]);

        // Events: out of order, some twice, several at the same instant.
        let mut events: Vec<StationEvent> = (0..40).map(|i| event("CP1", "DataTransfer", i % 13)).collect();
        for (i, e) in events.iter_mut().enumerate() {
            e.payload = serde_json::json!({ "n": i });
        }
        for chunk in events.chunks(3).rev() {
            for e in chunk {
                store.add_event(a, e).await.unwrap();
            }
        }
        store.add_event(a, &events[5]).await.unwrap();
        store.add_event(a, &event("CP10", "DataTransfer", 1)).await.unwrap();
        store.add_event(&"acct-b".into(), &event("CP1", "DataTransfer", 1)).await.unwrap();
        let whole = store.events(a, &"CP1".into()).await.unwrap();
        assert_eq!(whole.len(), 40);
        for limit in [1, 2, 7, 1000] {
            let (mut walked, mut after, mut pages) = (Vec::new(), None, 0);
            loop {
                let page = store.events_page(a, &"CP1".into(), &PageRequest::new(after, limit)).await.unwrap();
                assert!(page.items.len() <= limit && (page.items.len() == limit || page.next.is_none()));
                walked.extend(page.items);
                pages += 1;
                assert!(pages <= 41, "the pages end");
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            assert_eq!(walked, whole, "a walk of pages of {limit} gives every event once, in received order");
        }
        let mut sorted = whole.clone();
        sorted.sort_by_key(|e| e.payload["n"].as_u64());
        assert_eq!(sorted, events, "each event once");
        assert!(store.events_page(a, &"CP9".into(), &PageRequest::first(5)).await.unwrap().items.is_empty());

        // Command records, whatever their status.
        let mut expected = Vec::new();
        for (i, station_id) in ["CP1", "CP:2", "CP10", "CP1", "CP3"].into_iter().enumerate() {
            for n in 0..4 {
                let c = command("acct-a", station_id, &format!("Reset{n}"), i as i64);
                store.enqueue_command(&c).await.unwrap();
                expected.push(c);
            }
        }
        let mut sent = expected[2].clone();
        sent.status = CommandStatus::Sent;
        store.update_command(&sent).await.unwrap();
        expected[2] = sent;
        store.enqueue_command(&command("acct-b", "CP1", "Reset", 1)).await.unwrap();
        let whole = store.account_commands(a).await.unwrap();
        assert_eq!(whole.len(), expected.len());
        for limit in [1, 3, 1000] {
            let (mut walked, mut after, mut pages) = (Vec::new(), None, 0);
            loop {
                let page = store.commands_page(a, &PageRequest::new(after, limit)).await.unwrap();
                assert!(page.items.len() <= limit && (page.items.len() == limit || page.next.is_none()));
                walked.extend(page.items);
                pages += 1;
                assert!(pages <= 21, "the pages end");
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            assert_eq!(walked, whole, "a walk of pages of {limit} gives every command once, in order");
        }
        let mut sorted = whole;
        sorted.sort_by(|x, y| x.id.cmp(&y.id));
        expected.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(sorted, expected);
        let theirs = store.commands_page(&"acct-b".into(), &PageRequest::first(10)).await.unwrap();
        assert_eq!(theirs.items.len(), 1);
    }

    pub async fn command_queues_keep_order_per_station_and_release_what_left_them(s: &Subject) {
        let store = &*s.store;
        assert_eq!(store.queued_command_count().await.unwrap(), 0);
        assert_eq!(store.oldest_queued_command().await.unwrap(), None);
        // Queued in this order; created_at does not decide the order of a station's queue.
        let a1 = command("acct-a", "CP1", "Reset", 50);
        let a2 = command("acct-a", "CP1", "UnlockConnector", 40);
        let a3 = command("acct-a", "CP1", "TriggerMessage", 60);
        let b1 = command("acct-a", "CP2", "Reset", 10);
        let other = command("acct-b", "CP1", "Reset", 30);
        for c in [&a1, &a2, &b1, &a3, &other] {
            store.enqueue_command(c).await.unwrap();
        }
        let actions = |cs: Vec<CommandRecord>| cs.into_iter().map(|c| c.action).collect::<Vec<_>>();
        assert_eq!(
            actions(store.queued_commands(&"acct-a".into(), &"CP1".into()).await.unwrap()),
            ["Reset", "UnlockConnector", "TriggerMessage"]
        );
        assert_eq!(store.queued_commands(&"acct-a".into(), &"CP2".into()).await.unwrap(), std::slice::from_ref(&b1));
        assert_eq!(store.queued_commands(&"acct-b".into(), &"CP1".into()).await.unwrap(), std::slice::from_ref(&other));
        assert_eq!(store.queued_command_count().await.unwrap(), 5);
        assert_eq!(store.oldest_queued_command().await.unwrap(), Some(b1.created_at));
        assert_eq!(store.command(&"acct-a".into(), &"CP1".into(), &a2.id).await.unwrap(), Some(a2.clone()));
        assert!(store.command(&"acct-a".into(), &"CP2".into(), &a2.id).await.unwrap().is_none());
        assert!(store.command(&"acct-b".into(), &"CP1".into(), &a2.id).await.unwrap().is_none());

        let mut sent = a1.clone();
        sent.status = CommandStatus::Sent;
        sent.sent_at = Some(at(70));
        store.update_command(&sent).await.unwrap();
        assert_eq!(
            actions(store.queued_commands(&"acct-a".into(), &"CP1".into()).await.unwrap()),
            ["UnlockConnector", "TriggerMessage"]
        );
        assert_eq!(store.command(&"acct-a".into(), &"CP1".into(), &a1.id).await.unwrap(), Some(sent.clone()));
        assert_eq!(store.queued_command_count().await.unwrap(), 4);
        let mut answered = sent.clone();
        answered.status = CommandStatus::Answered;
        answered.response = Some(serde_json::json!({ "status": "Accepted" }));
        store.update_command(&answered).await.unwrap();
        assert_eq!(store.command(&"acct-a".into(), &"CP1".into(), &a1.id).await.unwrap(), Some(answered));
        assert_eq!(store.queued_command_count().await.unwrap(), 4);

        let mut expired = b1.clone();
        expired.status = CommandStatus::Expired;
        store.update_command(&expired).await.unwrap();
        assert!(store.queued_commands(&"acct-a".into(), &"CP2".into()).await.unwrap().is_empty());
        assert_eq!(store.oldest_queued_command().await.unwrap(), Some(other.created_at));
        assert_eq!(store.queued_command_count().await.unwrap(), 3);

        let mut all = store.account_commands(&"acct-a".into()).await.unwrap();
        all.sort_by(|x, y| x.id.cmp(&y.id));
        let mut expected =
            vec![store.command(&"acct-a".into(), &"CP1".into(), &a1.id).await.unwrap().unwrap(), a2, a3, expired];
        expected.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(all, expected, "every command of the account, whatever its status");
    }

    pub async fn observed_values_change_only_the_value_and_time_of_what_was_reported(s: &Subject) {
        let store = &*s.store;
        let mut reported = variable("EVSE", "Power", "0");
        reported.evse_id = Some(1);
        reported.mutability = Some("ReadOnly".into());
        reported.persistent = Some(false);
        reported.characteristics = Some(serde_json::json!({"unit": "W", "dataType": "decimal"}));
        store.put_variables(&"acct-a".into(), &"CP1".into(), std::slice::from_ref(&reported)).await.unwrap();

        let seen = |value: &str, secs: i64| {
            let mut v = variable("EVSE", "Power", value);
            v.evse_id = Some(1);
            v.mutability = None;
            v.updated_at = at(secs);
            v
        };
        let never_reported = seen("230", 5);
        let mut voltage = never_reported.clone();
        voltage.variable = "Voltage".into();
        store
            .observe_variables(&"acct-a".into(), &"CP1".into(), &[seen("7400", 10), voltage.clone(), seen("7300", 20)])
            .await
            .unwrap();
        store.observe_variables(&"acct-a".into(), &"CP1".into(), &[]).await.unwrap();

        let mut expected = reported.clone();
        expected.value = Some("7300".into());
        expected.updated_at = at(20);
        assert_eq!(
            store.variables(&"acct-a".into(), &"CP1".into()).await.unwrap(),
            [expected, voltage],
            "the latest value seen wins"
        );
        assert!(s.other.variables(&"acct-a".into(), &"CP2".into()).await.unwrap().is_empty());
    }

    pub async fn device_variables_are_replaced_by_key_and_ordered_by_component_then_variable(s: &Subject) {
        let store = &*s.store;
        let mut evse = variable("EVSE", "Power", "11000");
        evse.evse_id = Some(1);
        let batch = [
            variable("SecurityCtrlr", "OrganizationName", "Acme"),
            evse.clone(),
            variable("OCPPCommCtrlr", "WebSocketPingInterval", "30"),
            variable("OCPPCommCtrlr", "HeartbeatInterval", "60"),
        ];
        store.put_variables(&"acct-a".into(), &"CP1".into(), &batch).await.unwrap();
        store.put_variables(&"acct-a".into(), &"CP1".into(), &[]).await.unwrap();
        let replaced = variable("OCPPCommCtrlr", "HeartbeatInterval", "120");
        store.put_variables(&"acct-a".into(), &"CP1".into(), std::slice::from_ref(&replaced)).await.unwrap();
        let mut target = variable("OCPPCommCtrlr", "HeartbeatInterval", "90");
        target.attribute_type = "Target".into();
        store.put_variables(&"acct-a".into(), &"CP1".into(), &[target.clone()]).await.unwrap();

        let got = store.variables(&"acct-a".into(), &"CP1".into()).await.unwrap();
        assert_eq!(
            got,
            [
                evse,
                replaced,
                target,
                variable("OCPPCommCtrlr", "WebSocketPingInterval", "30"),
                variable("SecurityCtrlr", "OrganizationName", "Acme"),
            ]
        );
        let keys = got.iter().map(DeviceVariable::key).collect::<Vec<_>>();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "in key order");
        assert!(store.variables(&"acct-a".into(), &"CP2".into()).await.unwrap().is_empty());
        assert!(store.variables(&"acct-b".into(), &"CP1".into()).await.unwrap().is_empty());
    }

    /// A reader starts at 0 ("before the first event"): the very first event of a new store must
    /// be after it.
    pub async fn the_first_event_a_store_appends_is_read_after_0_and_moves_the_head(s: &Subject) {
        let store = &*s.store;
        let a: AccountId = "acct-a".into();
        let first = feed_event(EventType::StationConnected, Some("CP1"), 1, 1);
        store.add_feed_events(&a, std::slice::from_ref(&first)).await.unwrap();
        let feed = store.feed_after(&a, 0, 10).await.unwrap();
        assert_eq!(feed.len(), 1, "the first event is read after 0: {feed:?}");
        assert!(feed[0].id > 0);
        assert_eq!(feed[0], FeedEvent::from_draft(feed[0].id, first));
        assert_eq!(store.feed_head(&a).await.unwrap(), feed[0].id);
    }

    pub async fn feed_ids_grow_across_handles_and_pages_read_in_order_after_an_id(s: &Subject) {
        let (store, other) = (&*s.store, &*s.other);
        let a: AccountId = "acct-a".into();
        assert_eq!(store.feed_head(&a).await.unwrap(), 0, "0 before the first event");
        assert!(store.feed_after(&a, 0, 10).await.unwrap().is_empty());
        store.add_feed_events(&a, &[]).await.unwrap();
        assert_eq!(store.feed_head(&a).await.unwrap(), 0, "appending nothing takes no id");

        let drafts: Vec<EventDraft> = (0..7)
            .map(|n| {
                let kind = EventType::ALL[n as usize % EventType::ALL.len()];
                feed_event(kind, (n % 3 != 0).then_some("CP:{1}"), i64::from(n), n)
            })
            .collect();
        store.add_feed_events(&a, &drafts[0..3]).await.unwrap();
        other.append_feed(&a, &drafts[3..4]).await.unwrap();
        other.add_feed_events(&a, &drafts[4..6]).await.unwrap();
        store.append_feed(&a, &drafts[6..]).await.unwrap();
        store.flush().await.unwrap();
        other.flush().await.unwrap();

        let all = store.feed_after(&a, 0, 100).await.unwrap();
        assert_eq!(all.len(), 7);
        assert!(
            all.windows(2).all(|w| w[0].id < w[1].id),
            "ids grow: {:?}",
            all.iter().map(|e| e.id).collect::<Vec<_>>()
        );
        assert!(all[0].id > 0);
        for (event, draft) in all.iter().zip(&drafts) {
            assert_eq!(event, &FeedEvent::from_draft(event.id, draft.clone()), "kept as appended, in order");
        }
        assert_eq!(other.feed_after(&a, 0, 100).await.unwrap(), all, "both handles read the same feed");
        assert_eq!(store.feed_head(&a).await.unwrap(), all[6].id);
        assert_eq!(other.feed_head(&a).await.unwrap(), all[6].id);

        assert_eq!(store.feed_after(&a, all[1].id, 2).await.unwrap(), all[2..4], "after is exclusive; limit bounds");
        assert!(store.feed_after(&a, all[6].id, 10).await.unwrap().is_empty());
        assert!(store.feed_after(&a, 0, 0).await.unwrap().is_empty(), "a limit of 0 reads nothing");
        // An id between two events (ids need not be consecutive) reads from the next one.
        assert_eq!(store.feed_after(&a, all[3].id - 1, 1).await.unwrap(), all[3..4]);
        for limit in [1, 2, 3, 7] {
            assert_eq!(whole_feed(store, "acct-a", limit).await, all, "pages of {limit}");
        }

        // Appends racing from two handles each get ids above every id given before them.
        let mut tasks = Vec::new();
        for i in 0..10u32 {
            let store = if i % 2 == 0 { s.store.clone() } else { s.other.clone() };
            tasks.push(tokio::spawn(async move {
                let pair = [
                    feed_event(EventType::CommandSent, Some("CP1"), 100, 100 + 2 * i),
                    feed_event(EventType::CommandAnswered, Some("CP1"), 100, 101 + 2 * i),
                ];
                store.add_feed_events(&"acct-a".into(), &pair).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let raced = store.feed_after(&a, all[6].id, 100).await.unwrap();
        assert_eq!(raced.len(), 20);
        assert!(raced.windows(2).all(|w| w[0].id < w[1].id));
        let n = |e: &FeedEvent| e.body["n"].as_u64().unwrap();
        for pair in raced.iter().filter(|e| n(e) % 2 == 0) {
            let next = raced.iter().position(|e| n(e) == n(pair) + 1).unwrap();
            let this = raced.iter().position(|e| n(e) == n(pair)).unwrap();
            assert!(this < next, "one append's events stay in their order");
        }
        assert_eq!(store.feed_head(&a).await.unwrap(), raced[19].id);
    }

    pub async fn feeds_of_two_accounts_are_separate(s: &Subject) {
        let store = &*s.store;
        let (a, b): (AccountId, AccountId) = ("acct-a".into(), "acct-b".into());
        store.add_feed_events(&a, &[feed_event(EventType::StationConnected, Some("CP1"), 1, 1)]).await.unwrap();
        store.add_feed_events(&b, &[feed_event(EventType::StationConnected, Some("CP1"), 2, 2)]).await.unwrap();
        store.add_feed_events(&a, &[feed_event(EventType::StationDisconnected, Some("CP1"), 3, 3)]).await.unwrap();
        let ns = |events: Vec<FeedEvent>| events.into_iter().map(|e| e.body["n"].as_u64().unwrap()).collect::<Vec<_>>();
        assert_eq!(ns(store.feed_after(&a, 0, 10).await.unwrap()), [1, 3]);
        assert_eq!(ns(store.feed_after(&b, 0, 10).await.unwrap()), [2]);
        assert!(store.feed_after(&"acct-c".into(), 0, 10).await.unwrap().is_empty());
        assert_eq!(store.feed_head(&"acct-c".into()).await.unwrap(), 0);
        let head_b = store.feed_head(&b).await.unwrap();
        assert_eq!(head_b, store.feed_after(&b, 0, 10).await.unwrap()[0].id);

        let mut cutoffs = FeedCutoffs::default();
        cutoffs.set(DataKind::StationEvents, at(1000));
        let mut removed = 0;
        let mut after = None;
        loop {
            let step = store.prune_feed(&a, &cutoffs, after, 10).await.unwrap();
            removed += step.removed;
            match step.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(removed, 2);
        assert!(store.feed_after(&a, 0, 10).await.unwrap().is_empty());
        assert_eq!(
            ns(store.feed_after(&b, 0, 10).await.unwrap()),
            [2],
            "pruning one account's feed spares the other's"
        );
    }

    pub async fn a_drained_feed_entry_is_appended_once_per_origin_and_only_for_a_greater_sequence(s: &Subject) {
        let (store, other) = (&*s.store, &*s.other);
        let (a, b): (AccountId, AccountId) = ("acct-a".into(), "acct-b".into());
        let e = |n: u32| feed_event(EventType::StatusChanged, Some("CP1"), i64::from(n), n);
        let ns = |events: Vec<FeedEvent>| events.into_iter().map(|e| e.body["n"].as_u64().unwrap()).collect::<Vec<_>>();
        let seq = 1_714_564_800_000_000u64;

        store.append_feed_from(&a, "node-1/CP1", seq, &[e(1), e(2)]).await.unwrap();
        store.append_feed_from(&a, "node-1/CP1", seq, &[e(1), e(2)]).await.unwrap();
        other.append_feed_from(&a, "node-1/CP1", seq, &[e(1), e(2)]).await.unwrap();
        store.append_feed_from(&a, "node-1/CP1", seq - 1, &[e(99)]).await.unwrap();
        assert_eq!(ns(store.feed_after(&a, 0, 100).await.unwrap()), [1, 2], "a retried drain appends nothing twice");

        other.append_feed_from(&a, "node-1/CP1", seq + 1, &[e(3)]).await.unwrap();
        store.append_feed_from(&a, "node-2/CP1", 5, &[e(4)]).await.unwrap();
        store.append_feed_from(&a, "node-1/CP2", seq, &[e(5)]).await.unwrap();
        store.add_feed_events(&a, &[e(6)]).await.unwrap();
        store.append_feed_from(&a, "node-2/CP1", 5, &[e(99)]).await.unwrap();
        store.append_feed_from(&a, "node-1/CP1", seq + 1, &[e(99)]).await.unwrap();
        assert_eq!(
            ns(store.feed_after(&a, 0, 100).await.unwrap()),
            [1, 2, 3, 4, 5, 6],
            "a greater sequence appends; each origin counts its own"
        );
        store.append_feed_from(&b, "node-1/CP1", 1, &[e(70)]).await.unwrap();
        assert_eq!(ns(store.feed_after(&b, 0, 100).await.unwrap()), [70], "each account counts its own origins");

        // Sequences are compared exactly over the whole u64 range, past the integers a double holds.
        let big = 1u64 << 53;
        store.append_feed_from(&a, "node-3", big, &[e(7)]).await.unwrap();
        store.append_feed_from(&a, "node-3", big + 1, &[e(8)]).await.unwrap();
        store.append_feed_from(&a, "node-3", big, &[e(99)]).await.unwrap();
        store.append_feed_from(&a, "node-3", u64::MAX - 1, &[e(9)]).await.unwrap();
        store.append_feed_from(&a, "node-3", u64::MAX - 2, &[e(99)]).await.unwrap();
        store.append_feed_from(&a, "node-3", u64::MAX, &[e(10)]).await.unwrap();
        store.append_feed_from(&a, "node-3", u64::MAX, &[e(99)]).await.unwrap();
        // Digits are not compared as text alone: 9 is below 10.
        store.append_feed_from(&a, "node-4", 9, &[e(11)]).await.unwrap();
        store.append_feed_from(&a, "node-4", 10, &[e(12)]).await.unwrap();
        store.append_feed_from(&a, "node-4", 9, &[e(99)]).await.unwrap();
        // An entry with no events still counts as applied.
        store.append_feed_from(&a, "node-5", 20, &[]).await.unwrap();
        store.append_feed_from(&a, "node-5", 20, &[e(99)]).await.unwrap();
        store.append_feed_from(&a, "node-5", 21, &[e(13)]).await.unwrap();
        let feed = store.feed_after(&a, 0, 100).await.unwrap();
        assert_eq!(ns(feed.clone()), (1..=13).collect::<Vec<u64>>());
        assert!(feed.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(store.feed_head(&a).await.unwrap(), feed[12].id);
    }

    pub async fn pruning_the_feed_removes_events_old_by_their_kinds_period_and_stops_at_newer_ones(s: &Subject) {
        let store = &*s.store;
        let a: AccountId = "acct-a".into();
        let events = [
            (EventType::StatusChanged, 0),       // station events: old before 50
            (EventType::CommandFailed, 5),       // commands: old before 15
            (EventType::TransactionEnded, 10),   // transactions: no period, kept
            (EventType::CommandSent, 20),        // not old: 20 >= 15
            (EventType::StatusChanged, 30),      // old
            (EventType::WebhookDisabled, 35),    // an account's event: a station event's period, old
            (EventType::TransactionStarted, 40), // kept
            (EventType::StatusChanged, 49),      // old
            (EventType::StatusChanged, 60),      // newer than every cutoff: the walk ends here
            (EventType::StatusChanged, 1),       // old by its time, but after the end of the walk
        ];
        let drafts: Vec<EventDraft> = events
            .iter()
            .enumerate()
            .map(|(n, (kind, secs))| {
                let station = (*kind != EventType::WebhookDisabled).then_some("CP1");
                feed_event(*kind, station, *secs, n as u32)
            })
            .collect();
        store.add_feed_events(&a, &drafts).await.unwrap();
        store.add_feed_events(&"acct-b".into(), &drafts).await.unwrap();
        let before = store.feed_after(&a, 0, 100).await.unwrap();
        let head = store.feed_head(&a).await.unwrap();

        let nothing = store.prune_feed(&a, &FeedCutoffs::default(), None, 3).await.unwrap();
        assert_eq!((nothing.removed, nothing.next), (0, None), "no period: nothing is old");

        let mut cutoffs = FeedCutoffs::default();
        cutoffs.set(DataKind::StationEvents, at(50));
        cutoffs.set(DataKind::FinishedCommands, at(15));
        let (mut removed, mut steps, mut after) = (0, 0, None);
        loop {
            let step = store.prune_feed(&a, &cutoffs, after, 3).await.unwrap();
            assert!(step.removed <= 3, "a step looks at about a batch");
            removed += step.removed;
            steps += 1;
            assert!(steps <= 10, "the walk ends");
            match step.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(removed, 5);
        assert_eq!(steps, 3, "two full batches, then the one that reaches a newer event");
        let kept: Vec<u64> =
            store.feed_after(&a, 0, 100).await.unwrap().iter().map(|e| e.body["n"].as_u64().unwrap()).collect();
        assert_eq!(kept, [2, 3, 6, 8, 9]);
        let again = store.feed_after(&a, 0, 100).await.unwrap();
        for event in &again {
            assert!(before.contains(event), "what stays is unchanged, with its id");
        }
        assert_eq!(store.feed_head(&a).await.unwrap(), head, "pruning takes no id back");
        assert_eq!(store.feed_after(&"acct-b".into(), 0, 100).await.unwrap().len(), 10, "the other account keeps all");

        // A walk again finds nothing more; new events get ids above every earlier one.
        let step = store.prune_feed(&a, &cutoffs, None, 100).await.unwrap();
        assert_eq!((step.removed, step.next), (0, None));
        store.add_feed_events(&a, &[feed_event(EventType::StationBooted, Some("CP1"), 70, 10)]).await.unwrap();
        assert!(store.feed_after(&a, head, 10).await.unwrap()[0].id > head);
    }

    pub async fn webhooks_are_put_listed_updated_by_both_handles_and_deleted_with_their_cursor_and_log(s: &Subject) {
        let store = &*s.store;
        let (a, b): (AccountId, AccountId) = ("acct-a".into(), "acct-b".into());
        assert!(store.webhook(&a, "wh-1").await.unwrap().is_none());
        assert!(store.webhooks(&a).await.unwrap().is_empty());
        assert!(store.webhook_accounts().await.unwrap().is_empty());

        store.put_webhook(&webhook("acct-a", "wh-2", "https://two.example")).await.unwrap();
        store.put_webhook(&webhook("acct-a", "wh-1", "https://one.example")).await.unwrap();
        store.put_webhook(&webhook("acct-b", "wh-1", "https://b.example")).await.unwrap();
        let ids = |hooks: Vec<Webhook>| hooks.into_iter().map(|w| (w.id, w.url)).collect::<Vec<_>>();
        assert_eq!(
            ids(store.webhooks(&a).await.unwrap()),
            [("wh-1".to_string(), "https://one.example".to_string()), ("wh-2".into(), "https://two.example".into())],
            "by id"
        );
        assert_eq!(store.webhook(&a, "wh-1").await.unwrap(), Some(webhook("acct-a", "wh-1", "https://one.example")));
        assert_eq!(store.webhook(&b, "wh-1").await.unwrap().map(|w| w.url), Some("https://b.example".into()));
        assert!(store.webhook(&b, "wh-2").await.unwrap().is_none());
        assert_eq!(store.webhook_accounts().await.unwrap(), [a.clone(), b.clone()]);

        let mut replaced = webhook("acct-a", "wh-1", "https://one.example/v2");
        replaced.types = vec![EventType::StationBooted];
        store.put_webhook(&replaced).await.unwrap();
        assert_eq!(store.webhook(&a, "wh-1").await.unwrap(), Some(replaced.clone()), "a put replaces");
        assert_eq!(store.webhooks(&a).await.unwrap().len(), 2);

        let updated = store
            .update_webhook(&a, "wh-1", &|w| {
                w.enabled = false;
                w.disabled_reason = Some("failing".into());
            })
            .await
            .unwrap()
            .unwrap();
        assert!(!updated.enabled);
        assert_eq!(store.webhook(&a, "wh-1").await.unwrap(), Some(updated));
        assert!(store.update_webhook(&a, "wh-9", &|w| w.enabled = false).await.unwrap().is_none());
        assert!(store.webhook(&a, "wh-9").await.unwrap().is_none(), "updating nothing creates nothing");

        let mut tasks = Vec::new();
        for i in 0..16usize {
            let store = if i % 2 == 0 { s.store.clone() } else { s.other.clone() };
            tasks.push(tokio::spawn(async move {
                let kind = EventType::ALL[i];
                store.update_webhook(&"acct-a".into(), "wh-2", &|w| w.types.push(kind)).await.unwrap().unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut types = store.webhook(&a, "wh-2").await.unwrap().unwrap().types;
        types.sort();
        let mut expected = EventType::ALL[..16].to_vec();
        expected.sort();
        assert_eq!(types, expected, "concurrent updates from two handles lose nothing");

        store.set_webhook_cursor(&a, "wh-1", 42).await.unwrap();
        store.put_webhook_deliveries(&a, "wh-1", &[delivery(42, DeliveryOutcome::Delivered, 1)]).await.unwrap();
        store.set_webhook_cursor(&a, "wh-2", 7).await.unwrap();
        store.put_webhook_deliveries(&a, "wh-2", &[delivery(7, DeliveryOutcome::Retrying, 2)]).await.unwrap();
        store.set_webhook_cursor(&b, "wh-1", 3).await.unwrap();
        store.put_webhook_deliveries(&b, "wh-1", &[delivery(3, DeliveryOutcome::Delivered, 1)]).await.unwrap();

        assert!(s.other.delete_webhook(&a, "wh-1").await.unwrap());
        assert!(store.webhook(&a, "wh-1").await.unwrap().is_none());
        assert_eq!(store.webhook_cursor(&a, "wh-1").await.unwrap(), None, "its cursor went with it");
        assert!(store.webhook_deliveries(&a, "wh-1").await.unwrap().is_empty(), "and its log");
        assert!(!store.delete_webhook(&a, "wh-1").await.unwrap(), "once");
        assert_eq!(store.webhooks(&a).await.unwrap().len(), 1);
        assert_eq!(store.webhook_cursor(&a, "wh-2").await.unwrap(), Some(7), "another webhook's state stays");
        assert_eq!(store.webhook_deliveries(&a, "wh-2").await.unwrap().len(), 1);
        assert_eq!(
            store.webhook_cursor(&b, "wh-1").await.unwrap(),
            Some(3),
            "another account's webhook of that id too"
        );
        assert_eq!(store.webhook(&b, "wh-1").await.unwrap().map(|w| w.url), Some("https://b.example".into()));
        assert_eq!(store.webhook_accounts().await.unwrap(), [a.clone(), b.clone()], "acct-a still has one");

        assert!(store.delete_webhook(&a, "wh-2").await.unwrap());
        assert!(store.webhooks(&a).await.unwrap().is_empty());
        assert_eq!(
            store.webhook_accounts().await.unwrap(),
            std::slice::from_ref(&b),
            "an account without webhooks is not listed"
        );
        assert!(!store.delete_webhook(&"acct-c".into(), "wh-1").await.unwrap());
        assert_eq!(store.webhook_accounts().await.unwrap(), std::slice::from_ref(&b));

        store.put_webhook(&webhook("acct-a", "wh-3", "https://three.example")).await.unwrap();
        assert_eq!(store.webhook_accounts().await.unwrap(), [a.clone(), b.clone()], "listed again");
    }

    pub async fn webhook_cursors_and_delivery_logs_round_trip_per_webhook(s: &Subject) {
        let (store, other) = (&*s.store, &*s.other);
        let (a, b): (AccountId, AccountId) = ("acct-a".into(), "acct-b".into());
        store.put_webhook(&webhook("acct-a", "wh-1", "https://one.example")).await.unwrap();
        assert_eq!(store.webhook_cursor(&a, "wh-1").await.unwrap(), None, "none before the dispatcher sets it");
        assert!(store.webhook_deliveries(&a, "wh-1").await.unwrap().is_empty());

        store.set_webhook_cursor(&a, "wh-1", 5).await.unwrap();
        assert_eq!(other.webhook_cursor(&a, "wh-1").await.unwrap(), Some(5));
        other.set_webhook_cursor(&a, "wh-1", u64::MAX).await.unwrap();
        assert_eq!(store.webhook_cursor(&a, "wh-1").await.unwrap(), Some(u64::MAX), "any u64");
        store.set_webhook_cursor(&a, "wh-1", 0).await.unwrap();
        assert_eq!(store.webhook_cursor(&a, "wh-1").await.unwrap(), Some(0));
        assert_eq!(store.webhook_cursor(&a, "wh-2").await.unwrap(), None);
        assert_eq!(store.webhook_cursor(&b, "wh-1").await.unwrap(), None);

        let log = vec![
            delivery(9, DeliveryOutcome::Retrying, 3),
            WebhookDelivery { status_code: None, error: None, ..delivery(8, DeliveryOutcome::GaveUp, 12) },
            delivery(7, DeliveryOutcome::Delivered, 1),
        ];
        store.put_webhook_deliveries(&a, "wh-1", &log).await.unwrap();
        assert_eq!(other.webhook_deliveries(&a, "wh-1").await.unwrap(), log, "newest first, as put");
        other.put_webhook_deliveries(&a, "wh-1", &log[..1]).await.unwrap();
        assert_eq!(store.webhook_deliveries(&a, "wh-1").await.unwrap(), log[..1], "a put replaces the log");
        store.put_webhook_deliveries(&a, "wh-1", &[]).await.unwrap();
        assert!(store.webhook_deliveries(&a, "wh-1").await.unwrap().is_empty());
        assert!(store.webhook_deliveries(&b, "wh-1").await.unwrap().is_empty());
    }

    pub async fn flush_succeeds(s: &Subject) {
        s.store.create_account(&account("acct-a", "alpha")).await.unwrap();
        s.store.flush().await.unwrap();
        assert!(s.store.account(&"acct-a".into()).await.unwrap().is_some());
    }
}

/// Every key of a Redis database, with a client of the tests' own.
async fn redis_keys(url: &str) -> Vec<String> {
    let client = ::redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = ::redis::cmd("KEYS").arg("*").query_async(&mut conn).await.unwrap();
    keys.sort();
    keys
}

#[tokio::test]
async fn redis_store_works_again_after_redis_restarts_and_fails_fast_while_it_is_down() {
    let mut server = RedisServer::start().await;
    let store = RedisStore::connect(&server.target(), "restart", REDIS_TIMEOUT).await.unwrap();
    store.create_account(&account("acct-a", "alpha")).await.unwrap();
    store.create_station(&station("acct-a", "CP1")).await.unwrap();
    let (tx, _) = store.start_transaction(&new_tx("acct-a", "CP1", 1, 0)).await.unwrap();

    server.kill();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let down = store.account(&"acct-a".into()).await;
        let waited = started.elapsed();
        match down {
            Err(StoreError::Unavailable(message)) => assert!(message.to_string().contains("redis"), "{message}"),
            other => panic!("a call while Redis is down fails as unavailable, not {other:?}"),
        }
        assert!(waited < REDIS_TIMEOUT + std::time::Duration::from_secs(1), "it took {waited:?}");
    }

    let port = server.port();
    server.restart().await;
    assert_eq!(server.port(), port, "the same address: the store is not told of another");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let account = loop {
        match store.account(&"acct-a".into()).await {
            Ok(found) => break found,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "the store did not reconnect: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(account.map(|a| a.slug), Some("alpha".into()), "what was written before is still there");
    assert!(store.station(&"acct-a".into(), &"CP1".into()).await.unwrap().is_some());
    let (next, created) = store.start_transaction(&new_tx("acct-a", "CP1", 2, 0)).await.unwrap();
    assert!(created && next.id > tx.id, "the id sequence survived too");
    // Scripts are gone from the restarted server: they are loaded again.
    let updated =
        store.update_station(&"acct-a".into(), &"CP1".into(), &|s| s.protocol = Some("ocpp1.6".into())).await.unwrap();
    assert_eq!(updated.and_then(|s| s.protocol), Some("ocpp1.6".into()));
}

#[tokio::test]
async fn connecting_to_a_redis_that_is_not_there_fails_as_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let result =
        RedisStore::connect(&RedisTarget::Single(format!("redis://127.0.0.1:{port}/")), "nowhere", REDIS_TIMEOUT).await;
    match result {
        Err(StoreError::Unavailable(message)) => assert!(message.to_string().contains("redis"), "{message}"),
        Err(e) => panic!("expected an unavailable error, got {e:?}"),
        Ok(_) => panic!("nothing listens there"),
    }
    assert!(started.elapsed() < REDIS_TIMEOUT + std::time::Duration::from_secs(1));
    let invalid = RedisStore::connect(&RedisTarget::Single("not a url".into()), "x", REDIS_TIMEOUT).await;
    assert!(matches!(invalid, Err(StoreError::Backend(_))));
}

#[tokio::test]
async fn redis_stores_keep_to_their_key_prefix_and_erasure_leaves_no_key_of_the_account() {
    let server = RedisServer::start().await;
    let one = RedisStore::connect(&server.target(), "one", REDIS_TIMEOUT).await.unwrap();
    let two = RedisStore::connect(&server.target(), "two", REDIS_TIMEOUT).await.unwrap();
    one.create_account(&account("acct-a", "alpha")).await.unwrap();
    two.create_account(&account("acct-a", "alpha")).await.expect("another prefix is another store");
    fill(&one, "acct-a").await;
    one.add_meter_values(&"acct-a".into(), &[reading("CP1", None, 5, "loose")]).await.unwrap();
    one.create_account(&account("acct-b", "bravo")).await.unwrap();
    fill(&one, "acct-b").await;
    assert!(all_stations(&two, &"acct-a".into()).await.unwrap().is_empty());
    let keys = redis_keys(&server.url()).await;
    assert!(keys.iter().all(|k| k.starts_with("one:") || k.starts_with("two:")), "{keys:?}");
    let of_a = |keys: &[String]| keys.iter().filter(|k| k.contains("acct-a") && k.starts_with("one:")).count();
    assert!(of_a(&keys) >= 10, "{keys:?}");

    one.erase_account(&"acct-a".into()).await.unwrap();
    let keys = redis_keys(&server.url()).await;
    assert_eq!(of_a(&keys), 0, "{keys:?}");
    // Nor a value naming it: the email index is gone, the slug index names no one, the queue of all
    // commands holds only the other account's.
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let slug: String = ::redis::cmd("GET").arg("one:{accounts}:slug:alpha").query_async(&mut conn).await.unwrap();
    assert_eq!(slug, "");
    let email: Option<String> =
        ::redis::cmd("GET").arg("one:{accounts}:email:ops@alpha.example").query_async(&mut conn).await.unwrap();
    assert_eq!(email, None);
    let queued: Vec<String> =
        ::redis::cmd("ZRANGE").arg("one:queued").arg(0).arg(-1).query_async(&mut conn).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert!(queued.iter().all(|m| !m.contains("acct-a")), "{queued:?}");
    let with_webhooks: Vec<String> =
        ::redis::cmd("SMEMBERS").arg("one:webhook_accounts").query_async(&mut conn).await.unwrap();
    assert_eq!(with_webhooks, ["acct-b"]);
    assert!(keys.iter().any(|k| k.contains("acct-b")), "the other account is still there");
    assert!(two.account(&"acct-a".into()).await.unwrap().is_some(), "the other prefix's account of that id stays");
}

#[tokio::test]
async fn a_redis_erasure_interrupted_by_a_crash_is_finished_when_a_store_next_connects() {
    let server = RedisServer::start().await;
    let store = RedisStore::connect(&server.target(), "crash", REDIS_TIMEOUT).await.unwrap();
    store.create_account(&account("acct-a", "alpha")).await.unwrap();
    fill(&store, "acct-a").await;
    // As if a node died right after marking the erasure begun.
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 =
        ::redis::cmd("SADD").arg("crash:{accounts}:erasing").arg("acct-a").query_async(&mut conn).await.unwrap();

    let next = RedisStore::connect(&server.target(), "crash", REDIS_TIMEOUT).await.unwrap();
    assert!(next.account(&"acct-a".into()).await.unwrap().is_none());
    assert!(all_stations(&next, &"acct-a".into()).await.unwrap().is_empty());
    assert!(all_transactions(&next, &"acct-a".into(), None).await.unwrap().is_empty());
    assert!(matches!(next.create_account(&account("acct-c", "alpha")).await, Err(StoreError::Conflict("slug"))));
    let keys = redis_keys(&server.url()).await;
    assert!(keys.iter().all(|k| !k.contains("acct-a") && k != "crash:{accounts}:erasing"), "{keys:?}");
}

#[tokio::test]
async fn a_redis_store_written_before_the_list_indexes_is_indexed_when_a_store_next_connects() {
    let server = RedisServer::start().await;
    let store = RedisStore::connect(&server.target(), "old", REDIS_TIMEOUT).await.unwrap();
    let a: AccountId = "acct-a".into();
    for (account_id, slug) in [("acct-a", "alpha"), ("acct-b", "beta")] {
        store.create_account(&account(account_id, slug)).await.unwrap();
        for id in ["CP:1", "CP2", "CP3"] {
            store.create_station(&station(account_id, id)).await.unwrap();
            store.put_id_tag(&account_id.into(), &tag(&format!("TAG-{id}"), TagStatus::Accepted)).await.unwrap();
        }
    }
    let mut started = Vec::new();
    for (i, id) in ["CP:1", "CP2", "CP:1", "CP3"].into_iter().enumerate() {
        started.push(store.start_transaction(&new_tx("acct-a", id, 1, i as i64)).await.unwrap().0.id);
    }
    store.stop_transaction(&a, &"CP2".into(), started[1], &stop(10)).await.unwrap();
    store.add_meter_values(&a, &[reading("CP:1", None, 1, "1"), reading("CP3", None, 2, "2")]).await.unwrap();
    store.enqueue_command(&command("acct-a", "CP:1", "Reset", 1)).await.unwrap();
    store.enqueue_command(&command("acct-a", "CP2", "Reset", 2)).await.unwrap();
    let loose = |store: RedisStore| async move {
        let page = store.loose_reading_stations_page(&"acct-a".into(), &PageRequest::first(10)).await.unwrap();
        page.items.into_iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let commands = |store: RedisStore| async move {
        store.commands_page(&"acct-a".into(), &PageRequest::first(10)).await.unwrap().items
    };
    assert_eq!(loose(store.clone()).await, ["CP3", "CP:1"]);
    let command_records = commands(store.clone()).await;
    assert_eq!(command_records.len(), 2);
    let ids = |s: Vec<Station>| s.into_iter().map(|s| s.id.to_string()).collect::<Vec<_>>();
    let stations = ids(all_stations(&store, &a).await.unwrap());
    let tags = all_id_tags(&store, &a).await.unwrap();
    let txs = all_transactions(&store, &a, None).await.unwrap();
    let open = TransactionFilter { status: Some(TransactionStatus::Active), ..TransactionFilter::default() };
    let on_cp1 = TransactionFilter { station: Some("CP:1".into()), ..TransactionFilter::default() };
    assert_eq!(walk_transactions(&store, "acct-a", &open, 2).await, [started[3], started[2], started[0]]);

    // As a store of the version before the indexes left it: the records without their indexes.
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for key in redis_keys(&server.url()).await {
        let index = [
            "station_ids:",
            "id_tag_ids:",
            "tx_ids:",
            "tx_station:",
            "tx_open:",
            "tx_stations:",
            "meter_stations:",
            "command_ids:",
        ]
        .iter()
        .any(|kind| key.starts_with(&format!("old:{kind}")));
        if index || key == "old:indexed" {
            let _: i64 = ::redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
        }
    }
    assert!(all_stations(&store, &a).await.unwrap().is_empty(), "the lists read only the indexes");

    let next = RedisStore::connect(&server.target(), "old", REDIS_TIMEOUT).await.unwrap();
    assert_eq!(ids(all_stations(&next, &a).await.unwrap()), stations);
    assert_eq!(stations, ["CP2", "CP3", "CP:1"], "in byte order");
    assert_eq!(all_id_tags(&next, &a).await.unwrap(), tags);
    assert_eq!(all_transactions(&next, &a, None).await.unwrap(), txs);
    assert_eq!(walk_transactions(&next, "acct-a", &open, 2).await, [started[3], started[2], started[0]]);
    assert_eq!(walk_transactions(&next, "acct-a", &on_cp1, 1).await, [started[2], started[0]]);
    assert_eq!(all_stations(&next, &"acct-b".into()).await.unwrap().len(), 3);
    assert_eq!(loose(next.clone()).await, ["CP3", "CP:1"]);
    assert_eq!(commands(next.clone()).await, command_records);
    // Once: the marker is set, and the indexes then follow the writes.
    next.delete_station(&a, &"CP2".into()).await.unwrap();
    let again = RedisStore::connect(&server.target(), "old", REDIS_TIMEOUT).await.unwrap();
    assert_eq!(all_stations(&again, &a).await.unwrap().len(), 2);

    // A store the lists were indexed in (version 1) gets the export's indexes alone.
    for key in ["old:meter_stations:{acct-a}", "old:command_ids:{acct-a}"] {
        let _: i64 = ::redis::cmd("DEL").arg(key).query_async(&mut conn).await.unwrap();
    }
    let _: () = ::redis::cmd("SET").arg("old:indexed").arg("1").query_async(&mut conn).await.unwrap();
    assert!(loose(again.clone()).await.is_empty());
    let v2 = RedisStore::connect(&server.target(), "old", REDIS_TIMEOUT).await.unwrap();
    assert_eq!(loose(v2.clone()).await, ["CP3", "CP:1"]);
    assert_eq!(commands(v2.clone()).await, command_records);
    assert_eq!(all_stations(&v2, &a).await.unwrap().len(), 2, "the station deleted after indexing stays out");
}

#[tokio::test]
async fn a_redis_lease_is_held_by_one_node_until_it_expires() {
    let server = RedisServer::start().await;
    let url = server.url();
    let a = RedisStore::connect(&RedisTarget::Single(url.clone()), "contract", REDIS_TIMEOUT).await.expect("node a");
    let b = RedisStore::connect(&RedisTarget::Single(url.clone()), "contract", REDIS_TIMEOUT).await.expect("node b");
    let ttl = std::time::Duration::from_millis(300);
    assert!(a.lease("retention", "node-a", ttl).await.unwrap(), "nobody held it");
    assert!(a.lease("retention", "node-a", ttl).await.unwrap(), "its holder renews it");
    assert!(!b.lease("retention", "node-b", ttl).await.unwrap(), "another node does not get it meanwhile");
    assert!(b.lease("other-work", "node-b", ttl).await.unwrap(), "another lease is another");
    tokio::time::sleep(ttl * 2).await;
    assert!(b.lease("retention", "node-b", ttl).await.unwrap(), "taken over once it expired");
    assert!(!a.lease("retention", "node-a", ttl).await.unwrap(), "and then the first node waits");
}

#[tokio::test]
async fn one_sled_node_always_holds_its_leases() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path(), CommitPolicy::default()).expect("sled opens");
    let ttl = std::time::Duration::from_millis(300);
    assert!(store.lease("retention", "node-a", ttl).await.unwrap());
    assert!(store.lease("retention", "node-b", ttl).await.unwrap(), "one node: nobody to share the work with");
}

/// A key of the current layout as the layout before hash tags named it (the account's tag without
/// its braces, the directory's keys without `{accounts}`, one queue sequence for every account).
fn layout_1_name(prefix: &str, key: &str) -> String {
    let rest = key.strip_prefix(&format!("{prefix}:")).expect("a key of the prefix");
    if let Some(directory) = rest.strip_prefix("{accounts}:") {
        return format!("{prefix}:{directory}");
    }
    match rest.split_once(":{") {
        Some(("queue_seq", _)) => format!("{prefix}:queue_seq"),
        Some((kind, tagged)) => format!("{prefix}:{kind}:{}", tagged.replacen('}', "", 1)),
        None => key.to_string(),
    }
}

/// What the store reads of account `acct-b` (filled by [`fill`]): the account, its stations,
/// transactions, station CP1's queued commands and its token, as JSON.
async fn account_b_as_read(store: &RedisStore) -> serde_json::Value {
    let b: AccountId = "acct-b".into();
    serde_json::json!([
        store.account(&b).await.unwrap(),
        all_stations(store, &b).await.unwrap(),
        all_transactions(store, &b, None).await.unwrap(),
        store.queued_commands(&b, &"CP1".into()).await.unwrap(),
        store.token("hash-acct-b").await.unwrap(),
    ])
}

#[tokio::test]
async fn a_redis_store_of_the_layout_before_hash_tags_is_moved_to_it_when_a_store_next_connects() {
    let server = RedisServer::start().await;
    let store = RedisStore::connect(&server.target(), "v1", REDIS_TIMEOUT).await.unwrap();
    for (id, slug) in [("acct-a", "alpha"), ("acct-b", "beta"), ("acct-c", "gamma")] {
        store.create_account(&account(id, slug)).await.unwrap();
        fill(&store, id).await;
    }
    store.enqueue_command(&command("acct-b", "CP1", "Reset", 2)).await.unwrap();
    // What erasing a full account finds, for comparison after the move.
    let whole = store.erase_account(&"acct-c".into()).await.unwrap();
    let b: AccountId = "acct-b".into();
    let before = account_b_as_read(&store).await;

    // As the version before hash tags left it.
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut sequence = 0i64;
    for key in redis_keys(&server.url()).await {
        if key.starts_with("v1:queue_seq:") {
            let n: i64 = ::redis::cmd("GET").arg(&key).query_async(&mut conn).await.unwrap();
            sequence = sequence.max(n);
            let _: i64 = ::redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
        } else if key == "v1:layout" || key == "v1:{accounts}:ids" {
            let _: i64 = ::redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
        } else if key != layout_1_name("v1", &key) {
            let _: () =
                ::redis::cmd("RENAME").arg(&key).arg(layout_1_name("v1", &key)).query_async(&mut conn).await.unwrap();
        }
    }
    let _: () = ::redis::cmd("SET").arg("v1:queue_seq").arg(sequence).query_async(&mut conn).await.unwrap();
    assert!(redis_keys(&server.url()).await.iter().all(|k| !k.contains('{')), "no key of the new layout is left");
    assert!(store.account(&b).await.unwrap().is_none(), "the old names are not read");

    let next = RedisStore::connect(&server.target(), "v1", REDIS_TIMEOUT).await.unwrap();
    let after = account_b_as_read(&next).await;
    assert_eq!(after, before);
    assert_eq!(next.account_by_email("ops@beta.example").await.unwrap().map(|a| a.id), Some(b.clone()));
    assert!(
        matches!(next.create_account(&account("acct-d", "gamma")).await, Err(StoreError::Conflict("slug"))),
        "an erased account's slug stays reserved"
    );
    let (ids, _) = next.account_ids(None, 10).await.unwrap();
    assert_eq!(ids, [AccountId::from("acct-a"), b.clone()], "the directory lists the accounts moved");
    // A command queued now comes after those queued before the move.
    next.enqueue_command(&command("acct-b", "CP1", "Reset", 0)).await.unwrap();
    let queued: Vec<String> =
        next.queued_commands(&b, &"CP1".into()).await.unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(queued, ["CP1-Reset-1", "CP1-Reset-2", "CP1-Reset-0"]);
    assert_eq!(next.erase_account(&"acct-a".into()).await.unwrap(), whole, "everything of an account moved");
    assert!(
        redis_keys(&server.url()).await.iter().all(|k| k.contains('{')
            || ["v1:tx_seq", "v1:queued", "v1:layout", "v1:indexed", "v1:webhook_accounts"].contains(&k.as_str())
            || k.starts_with("v1:lease:")),
        "{:?}",
        redis_keys(&server.url()).await
    );

    // Once: a store already moved is left as it is.
    let again = RedisStore::connect(&server.target(), "v1", REDIS_TIMEOUT).await.unwrap();
    assert_eq!(account_b_as_read(&again).await, account_b_as_read(&next).await);
}

#[tokio::test]
async fn a_node_of_a_redis_cluster_named_as_a_single_redis_is_refused_with_what_to_set() {
    let cluster = match tokio::task::spawn_blocking(RedisCluster::shared).await {
        Ok(cluster) => cluster,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    let one = RedisTarget::Single(cluster.urls()[0].clone());
    match RedisStore::connect(&one, "single", REDIS_CLUSTER_TIMEOUT).await {
        Err(StoreError::Backend(why)) => assert!(why.to_string().contains("cluster.redis_cluster = true"), "{why}"),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a cluster node taken as a single Redis was accepted"),
    }
}

#[tokio::test]
async fn a_redis_queued_list_entry_without_its_queued_command_is_dropped_once_settled_and_oldest() {
    let server = RedisServer::start().await;
    let store = RedisStore::connect(&server.target(), "q", REDIS_TIMEOUT).await.unwrap();
    store.create_account(&account("acct-a", "alpha")).await.unwrap();
    let queued = command("acct-a", "CP1", "Reset", 1);
    store.enqueue_command(&queued).await.unwrap();
    // As a node that died between listing a command and queueing it would leave: two entries of the
    // node-wide list naming no queued command, one settled (older than a minute), one young.
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let micros = |t: DateTime<Utc>| t.timestamp_micros() as f64;
    let settled = serde_json::json!(["acct-a", "CP1", "gone-settled"]).to_string();
    let young = serde_json::json!(["acct-a", "CP1", "gone-young"]).to_string();
    let _: i64 = ::redis::cmd("ZADD")
        .arg("q:queued")
        .arg(micros(at(0) - Duration::days(1)))
        .arg(&settled)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(store.queued_command_count().await.unwrap(), 2, "counted until it is looked at");
    assert_eq!(store.oldest_queued_command().await.unwrap(), Some(queued.created_at), "the settled one is passed over");
    assert_eq!(store.queued_command_count().await.unwrap(), 1, "and dropped");

    let _: i64 =
        ::redis::cmd("ZADD").arg("q:queued").arg(micros(Utc::now())).arg(&young).query_async(&mut conn).await.unwrap();
    store.update_command(&CommandRecord { status: CommandStatus::Answered, ..queued }).await.unwrap();
    let oldest = store.oldest_queued_command().await.unwrap().expect("the young entry is still listed");
    assert!(Utc::now() - oldest < Duration::minutes(1), "its queueing may still be on its way: {oldest}");
    assert_eq!(store.queued_command_count().await.unwrap(), 1);
}
