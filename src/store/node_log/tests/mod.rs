mod flaky;

use super::reconcile::reconcile;
use super::*;
use crate::ids::{AccountId, StationId};
use crate::model::{Registration, TagStatus, TransactionEventRecord, TransactionStop};
use crate::ocpp::context::{HandlerSettings, StationContext};
use crate::ocpp::handler::{handle_call, Reply};
use crate::ocpp::rpc::Call;
use crate::ocpp::Version;
use crate::store::CommitPolicy;
use crate::store::{erase_account, AccountStore};
use flaky::Flaky;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::Path;

const ACCOUNT: &str = "acct-1";
const OTHER: &str = "acct-2";
const CP16: &str = "CP16";
const CP201: &str = "CP201";
const CP_OTHER: &str = "CP-B";

fn account(id: &str, slug: &str) -> Account {
    Account {
        id: id.into(),
        email: format!("ops@{slug}.example"),
        name: slug.into(),
        slug: slug.into(),
        password_hash: String::new(),
        created_at: Utc::now(),
        known_locations: vec![],
        retention: Default::default(),
    }
}

/// The shared store, switched on, with two accounts: the first with a 1.6 and a 2.0.1 station and
/// an accepted id tag, the second with one station.
async fn shared() -> Arc<Flaky> {
    let dir = tempfile::tempdir().unwrap();
    let inner = SledStore::open(dir.path(), CommitPolicy::default()).unwrap();
    for (id, slug) in [(ACCOUNT, "acme"), (OTHER, "bravo")] {
        inner.create_account(&account(id, slug)).await.unwrap();
    }
    for (acct, station) in [(ACCOUNT, CP16), (ACCOUNT, CP201), (OTHER, CP_OTHER)] {
        let s = Station::new(&acct.into(), &station.into(), String::new(), Registration::Accepted, Default::default());
        inner.create_station(&s).await.unwrap();
    }
    let tag = IdTag {
        id_tag: "TAG".into(),
        status: TagStatus::Accepted,
        expiry_date: None,
        parent_id_tag: None,
        updated_at: Utc::now(),
    };
    inner.put_id_tag(&ACCOUNT.into(), &tag).await.unwrap();
    inner.put_id_tag(&OTHER.into(), &tag).await.unwrap();
    Arc::new(Flaky {
        inner,
        on: AtomicBool::new(true),
        reads: AtomicUsize::new(0),
        flush_ok: AtomicBool::new(true),
        _dir: dir,
    })
}

fn settings(block: u32) -> NodeLogSettings {
    NodeLogSettings {
        transaction_id_block: block,
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        drain_batch: 256,
        networked: true,
        node_id: "test-node".into(),
    }
}

/// A node over the sled database in `dir` (reopened after a previous node's shutdown: its
/// group-commit thread lets the database go shortly after), with its id lease filled.
async fn node(remote: &Arc<Flaky>, dir: &Path, block: u32) -> NodeLog {
    let mut attempts = 0;
    let local = loop {
        match SledStore::open(dir, CommitPolicy::default()) {
            Ok(local) => break local,
            Err(_) if attempts < 200 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => panic!("could not reopen the node's database: {e}"),
        }
    };
    let store = NodeLog::open(local, remote.clone(), settings(block)).unwrap();
    if remote.on.load(Ordering::SeqCst) {
        eventually("the id lease is filled", || store.inner.lease_remaining().unwrap() > 0).await;
    }
    store
}

async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn drained(store: &NodeLog) {
    eventually("the write-ahead log is drained", || store.pending() == 0 && store.remote_up()).await;
}

/// A station connecting to the node: its record and its id tag are looked up (and cached).
async fn connect(store: &NodeLog, account_id: &AccountId, station_id: &StationId) {
    assert!(store.station(account_id, station_id).await.unwrap().is_some());
    store.id_tag(account_id, "TAG").await.unwrap();
}

/// Handles one CALL of a station of `account_id` through the OCPP handlers, flush included.
async fn call_as(
    store: &NodeLog,
    account_id: &AccountId,
    station_id: &StationId,
    action: &str,
    payload: Value,
) -> Reply {
    let version = if station_id == CP201 { Version::V201 } else { Version::V16 };
    let settings = HandlerSettings::plain(Duration::from_secs(300), Duration::from_secs(60));
    let ctx = StationContext {
        version,
        store,
        account_id,
        station_id,
        tenant_slug: "tenant",
        registration: Registration::Accepted,
        settings: &settings,
        event_quota: None,
        feed: Default::default(),
    };
    handle_call(&ctx, &Call { unique_id: "u1".into(), action: action.into(), payload }).await
}

/// A CALL that must be answered with a CALLRESULT (the station's acknowledgement).
async fn ok(store: &NodeLog, station_id: &StationId, action: &str, payload: Value) -> Value {
    match call_as(store, &ACCOUNT.into(), station_id, action, payload).await {
        Reply::Result { payload, .. } => payload,
        Reply::Error(e) => panic!("{action} was not acknowledged: {e:?}"),
    }
}

fn start16(minute: u32, meter_start: i64) -> Value {
    json!({"connectorId": 1, "idTag": "TAG", "meterStart": meter_start,
           "timestamp": format!("2026-01-01T10:{minute:02}:00Z")})
}

fn meter16(id: i64, wh: i64) -> Value {
    json!({"connectorId": 1, "transactionId": id,
           "meterValue": [{"timestamp": "2026-01-01T10:30:00Z", "sampledValue": [{"value": wh.to_string()}]}]})
}

fn stop16(id: i64, meter_stop: i64) -> Value {
    json!({"transactionId": id, "meterStop": meter_stop, "timestamp": "2026-01-01T11:00:00Z", "idTag": "TAG",
           "reason": "Local"})
}

fn event201(kind: &str, seq: u64, wh: f64) -> Value {
    let at = format!("2026-11-25T10:{seq:02}:00Z");
    let mut e = json!({"eventType": kind, "timestamp": at, "triggerReason": "MeterValuePeriodic", "seqNo": seq,
        "transactionInfo": {"transactionId": "tx-abc"}, "evse": {"id": 1, "connectorId": 1},
        "meterValue": [{"timestamp": at, "sampledValue": [{"value": wh, "unitOfMeasure": {"unit": "Wh"}}]}]});
    if kind == "Started" {
        e["idToken"] = json!({"idToken": "TAG", "type": "ISO14443"});
    }
    if kind == "Ended" {
        e["transactionInfo"]["stoppedReason"] = json!("EVDisconnected");
    }
    e
}

/// A 1.6 charging session: boot, status, authorize, start (meter 1000), meter values, stop (9000),
/// a DataTransfer; returns the transaction id.
async fn session16(store: &NodeLog) -> i64 {
    ok(store, &CP16.into(), "BootNotification", json!({"chargePointVendor": "V", "chargePointModel": "M"})).await;
    let status = json!({"connectorId": 1, "errorCode": "NoError", "status": "Charging"});
    ok(store, &CP16.into(), "StatusNotification", status).await;
    let auth = ok(store, &CP16.into(), "Authorize", json!({"idTag": "TAG"})).await;
    assert_eq!(auth["idTagInfo"]["status"], "Accepted");
    let started = ok(store, &CP16.into(), "StartTransaction", start16(0, 1000)).await;
    assert_eq!(started["idTagInfo"]["status"], "Accepted");
    let id = started["transactionId"].as_i64().unwrap();
    ok(store, &CP16.into(), "MeterValues", meter16(id, 5000)).await;
    ok(store, &CP16.into(), "StopTransaction", stop16(id, 9000)).await;
    ok(store, &CP16.into(), "DataTransfer", json!({"vendorId": "v"})).await;
    id
}

/// A 2.0.1 transaction: Started (1000 Wh), Updated (4000 Wh), Ended (9500 Wh), Ended again.
async fn session201(store: &NodeLog) {
    ok(store, &CP201.into(), "TransactionEvent", event201("Started", 0, 1000.0)).await;
    ok(store, &CP201.into(), "TransactionEvent", event201("Updated", 1, 4000.0)).await;
    ok(store, &CP201.into(), "TransactionEvent", event201("Ended", 2, 9500.0)).await;
    ok(store, &CP201.into(), "TransactionEvent", event201("Ended", 2, 9500.0)).await;
}

/// The shared store's transactions of the account, checked to have unique ids.
async fn remote_transactions(remote: &Flaky, account_id: &AccountId) -> Vec<Transaction> {
    let txs = crate::store::all_transactions(&remote.inner, account_id, None).await.unwrap();
    let ids: HashSet<i32> = txs.iter().map(|t| t.id).collect();
    assert_eq!(ids.len(), txs.len(), "transaction ids are unique: {txs:?}");
    txs
}

fn by_station<'a>(txs: &'a [Transaction], station_id: &StationId) -> &'a Transaction {
    let mut found = txs.iter().filter(|t| t.station_id == *station_id);
    let tx = found.next().unwrap_or_else(|| panic!("no transaction of {station_id}"));
    assert!(found.next().is_none(), "one transaction of {station_id}");
    tx
}

/// What the two sessions above must leave in the shared store.
async fn assert_sessions_recorded(remote: &Flaky, id16: i64) {
    let txs = remote_transactions(remote, &ACCOUNT.into()).await;
    assert_eq!(txs.len(), 2, "{txs:?}");
    let tx16 = by_station(&txs, &CP16.into());
    assert_eq!(i64::from(tx16.id), id16);
    assert_eq!((tx16.meter_start, tx16.energy_wh()), (Some(1000), Some(8000)));
    assert_eq!(tx16.stop.as_ref().unwrap().reason.as_deref(), Some("Local"));
    let readings = remote.inner.transaction_meter_values(&ACCOUNT.into(), &CP16.into(), tx16.id).await.unwrap();
    assert_eq!(readings.len(), 1);
    let tx201 = by_station(&txs, &CP201.into());
    assert_eq!((tx201.meter_start, tx201.energy_wh(), tx201.events.len()), (Some(1000), Some(8500), 3));
    assert_eq!(tx201.id_tag_status.as_deref(), Some("Accepted"));
    assert_eq!(remote.inner.transaction_meter_values(&ACCOUNT.into(), &CP201.into(), tx201.id).await.unwrap().len(), 3);
    let events = remote.inner.events(&ACCOUNT.into(), &CP16.into()).await.unwrap();
    assert_eq!(events.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["DataTransfer"]);
    let station = remote.inner.station(&ACCOUNT.into(), &CP16.into()).await.unwrap().unwrap();
    assert_eq!(station.connectors["1"].status, "Charging");
    assert_eq!(station.boot.as_ref().map(|b| b.charge_point_vendor.as_str()), Some("V"));
}

#[tokio::test]
async fn with_the_shared_store_up_station_writes_reach_it_as_the_node_recorded_them() {
    let remote = shared().await;
    let dir = tempfile::tempdir().unwrap();
    let store = node(&remote, dir.path(), 1000).await;
    connect(&store, &ACCOUNT.into(), &CP16.into()).await;
    connect(&store, &ACCOUNT.into(), &CP201.into()).await;
    let id16 = session16(&store).await;
    session201(&store).await;
    drained(&store).await;

    assert_sessions_recorded(&remote, id16).await;
    for tx in remote_transactions(&remote, &ACCOUNT.into()).await {
        let replica = store.inner.local.transaction(&ACCOUNT.into(), tx.id).await.unwrap();
        assert_eq!(replica.as_ref(), Some(&tx), "the shared record is the one the node computed");
    }
    // The account store of a cluster node is the shared store itself.
    assert_eq!(
        crate::store::all_transactions(&*remote, &ACCOUNT.into(), None).await.unwrap().len(),
        2,
        "API reads go to the shared store"
    );
    store.shutdown().await;
}

#[tokio::test]
async fn with_the_shared_store_down_stations_are_answered_and_everything_drains_when_it_is_back() {
    let remote = shared().await;
    let dir = tempfile::tempdir().unwrap();
    let store = node(&remote, dir.path(), 1000).await;
    connect(&store, &ACCOUNT.into(), &CP16.into()).await;
    connect(&store, &ACCOUNT.into(), &CP201.into()).await;

    remote.set(false);
    // The first read finds the shared store down; later ones go straight to the cache.
    assert!(store.station(&ACCOUNT.into(), &CP16.into()).await.unwrap().is_some());
    assert!(!store.remote_up());
    let reads = remote.reads.load(Ordering::SeqCst);
    assert_eq!(store.id_tag(&ACCOUNT.into(), "TAG").await.unwrap().map(|t| t.status), Some(TagStatus::Accepted));
    assert!(store.station(&ACCOUNT.into(), &CP201.into()).await.unwrap().is_some());
    let id16 = session16(&store).await;
    session201(&store).await;
    assert_eq!(remote.reads.load(Ordering::SeqCst), reads, "no read waited on the shared store");
    assert!(
        matches!(
            crate::store::all_transactions(&*remote, &ACCOUNT.into(), None).await,
            Err(StoreError::Unavailable(_))
        ),
        "API reads fail"
    );

    assert!(store.pending() > 0);
    assert!(!store.remote_up());
    assert!(
        crate::store::all_transactions(&remote.inner, &ACCOUNT.into(), None).await.unwrap().is_empty(),
        "nothing reached it"
    );
    assert!(remote.inner.station(&ACCOUNT.into(), &CP16.into()).await.unwrap().unwrap().connectors.is_empty());

    remote.set(true);
    drained(&store).await;
    assert_sessions_recorded(&remote, id16).await;
    store.shutdown().await;
}

#[tokio::test]
async fn a_monitoring_event_while_the_shared_store_is_down_keeps_what_was_reported_of_the_variable() {
    let remote = shared().await;
    let dir = tempfile::tempdir().unwrap();
    let store = node(&remote, dir.path(), 1000).await;
    connect(&store, &ACCOUNT.into(), &CP201.into()).await;
    let power = json!({"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Power"}});
    let mut data = power.clone();
    data["variableAttribute"] = json!([{"value": "0", "mutability": "ReadOnly"}]);
    data["variableCharacteristics"] = json!({"unit": "W", "dataType": "decimal", "supportsMonitoring": true});
    let report = json!({"requestId": 1, "generatedAt": "2026-11-25T10:00:00Z", "seqNo": 0, "reportData": [data]});
    ok(&store, &CP201.into(), "NotifyReport", report).await;
    drained(&store).await;

    remote.set(false);
    let mut event = power;
    event["eventId"] = json!(1);
    event["timestamp"] = json!("2026-11-25T10:05:00Z");
    event["trigger"] = json!("Delta");
    event["actualValue"] = json!("7400");
    event["eventNotificationType"] = json!("HardWiredNotification");
    ok(
        &store,
        &CP201.into(),
        "NotifyEvent",
        json!({"generatedAt": "2026-11-25T10:05:00Z", "seqNo": 0, "eventData": [event]}),
    )
    .await;
    remote.set(true);
    drained(&store).await;

    let vars = remote.inner.variables(&ACCOUNT.into(), &CP201.into()).await.unwrap();
    assert_eq!(vars.len(), 1);
    assert_eq!((vars[0].value.as_deref(), vars[0].mutability.as_deref()), (Some("7400"), Some("ReadOnly")));
    assert_eq!(vars[0].characteristics.as_ref().map(|c| c["unit"].clone()), Some(json!("W")));
    store.shutdown().await;
}

#[tokio::test]
async fn a_tenant_seen_before_redis_went_down_is_found_without_its_secrets() {
    let remote = shared().await;
    let dir = tempfile::tempdir().unwrap();
    let store = node(&remote, dir.path(), 1000).await;
    remote.inner.update_account(&ACCOUNT.into(), &|a| a.password_hash = "$argon2id$stand-in".into()).await.unwrap();
    let up = store.account_by_slug("acme").await.unwrap().expect("the tenant");
    assert!(!up.password_hash.is_empty(), "while Redis answers, the whole record");

    remote.set(false);
    let down = store.account_by_slug("acme").await.unwrap().expect("still found: stations can reconnect");
    assert_eq!((down.id.as_str(), down.slug.as_str()), (ACCOUNT, "acme"));
    assert!(down.password_hash.is_empty() && down.known_locations.is_empty(), "no secret kept on the node");
    let unknown = store.account_by_slug("bravo").await;
    assert!(matches!(unknown, Err(StoreError::Unavailable(_))), "never looked up: ask again later, {unknown:?}");

    remote.set(true);
    erase_account(&store, remote.as_ref(), &ACCOUNT.into()).await.unwrap();
    remote.set(false);
    let erased = store.account_by_slug("acme").await;
    assert!(matches!(erased, Err(StoreError::Unavailable(_))), "an erased tenant is forgotten here too");
    store.shutdown().await;
}

#[tokio::test]
async fn acknowledged_writes_survive_a_restart_while_the_shared_store_is_down() {
    let remote = shared().await;
    let dir = tempfile::tempdir().unwrap();
    let store = node(&remote, dir.path(), 1000).await;
    connect(&store, &ACCOUNT.into(), &CP16.into()).await;
    connect(&store, &ACCOUNT.into(), &CP201.into()).await;
    remote.set(false);
    let first = ok(&store, &CP16.into(), "StartTransaction", start16(0, 1000)).await["transactionId"].as_i64().unwrap();
    ok(&store, &CP16.into(), "MeterValues", meter16(first, 5000)).await;
    ok(&store, &CP201.into(), "TransactionEvent", event201("Started", 0, 1000.0)).await;
    let pending = store.pending();
    store.shutdown().await;
    drop(store);

    let store = node(&remote, dir.path(), 1000).await;
    assert_eq!(store.pending(), pending, "the log outlived the process");
    assert!(store.station(&ACCOUNT.into(), &CP16.into()).await.unwrap().is_some(), "the cache too");
    ok(&store, &CP16.into(), "StopTransaction", stop16(first, 9000)).await;
    let second =
        ok(&store, &CP16.into(), "StartTransaction", start16(5, 9000)).await["transactionId"].as_i64().unwrap();
    assert_ne!(second, first);
    ok(&store, &CP201.into(), "TransactionEvent", event201("Ended", 1, 9500.0)).await;

    remote.set(true);
    drained(&store).await;
    let txs = remote_transactions(&remote, &ACCOUNT.into()).await;
    assert_eq!(txs.len(), 3, "{txs:?}");
    let stopped = txs.iter().find(|t| i64::from(t.id) == first).unwrap();
    assert_eq!(stopped.energy_wh(), Some(8000));
    assert_eq!(
        remote.inner.transaction_meter_values(&ACCOUNT.into(), &CP16.into(), stopped.id).await.unwrap().len(),
        1
    );
    let open = txs.iter().find(|t| i64::from(t.id) == second).unwrap();
    assert_eq!((open.meter_start, open.stop.is_none()), (Some(9000), true));
    let tx201 = by_station(&txs, &CP201.into());
    assert_eq!((tx201.energy_wh(), tx201.events.len()), (Some(8500), 2));
    store.shutdown().await;
}

#[tokio::test]
async fn a_retried_start_while_the_shared_store_is_down_gets_its_first_id() {
    let remote = shared().await;
    let dir = tempfile::tempdir().unwrap();
    let store = node(&remote, dir.path(), 1000).await;
    connect(&store, &ACCOUNT.into(), &CP16.into()).await;
    remote.set(false);
    let a = ok(&store, &CP16.into(), "StartTransaction", start16(0, 1000)).await["transactionId"].clone();
    let b = ok(&store, &CP16.into(), "StartTransaction", start16(0, 1000)).await["transactionId"].clone();
    assert_eq!(a, b);
    remote.set(true);
    drained(&store).await;
    assert_eq!(remote_transactions(&remote, &ACCOUNT.into()).await.len(), 1);
    store.shutdown().await;
}

#[tokio::test]
async fn entries_leave_the_log_only_once_the_shared_store_made_them_durable() {
    let remote = shared().await;
    let dir = tempfile::tempdir().unwrap();
    let store = node(&remote, dir.path(), 1000).await;
    connect(&store, &ACCOUNT.into(), &CP16.into()).await;
    remote.flush_ok.store(false, Ordering::SeqCst);
    let id = ok(&store, &CP16.into(), "StartTransaction", start16(0, 1000)).await["transactionId"].as_i64().unwrap();
    for _ in 0..50 {
        if remote.inner.transaction(&ACCOUNT.into(), id as i32).await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(remote.inner.transaction(&ACCOUNT.into(), id as i32).await.unwrap().is_some(), "applied");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The transaction and the feed entry of its start.
    assert_eq!(store.pending(), 2, "kept until the shared store's flush succeeds");
    assert!(!store.remote_up());

    remote.flush_ok.store(true, Ordering::SeqCst);
    drained(&store).await;
    assert_eq!(remote_transactions(&remote, &ACCOUNT.into()).await.len(), 1, "applied again, changing nothing");
    store.shutdown().await;
}

fn new_tx(minute: u32) -> NewTransaction {
    NewTransaction {
        account_id: ACCOUNT.into(),
        station_id: CP16.into(),
        connector_id: 1,
        id_tag: "TAG".into(),
        id_tag_status: "Accepted".into(),
        meter_start: 0,
        start_timestamp: format!("2026-01-01T10:{minute:02}:00Z").parse().unwrap(),
        reservation_id: None,
    }
}

#[tokio::test]
async fn an_exhausted_id_lease_while_the_shared_store_is_down_refuses_rather_than_reusing_an_id() {
    let remote = shared().await;
    let dir = tempfile::tempdir().unwrap();
    let store = node(&remote, dir.path(), 2).await;
    remote.set(false);
    let (a, _) = store.start_transaction(&new_tx(0)).await.unwrap();
    let (b, _) = store.start_transaction(&new_tx(1)).await.unwrap();
    assert_ne!(a.id, b.id);
    assert!(matches!(store.start_transaction(&new_tx(2)).await, Err(StoreError::Unavailable(_))));
    let (retry, created) = store.start_transaction(&new_tx(0)).await.unwrap();
    assert_eq!((retry.id, created), (a.id, false), "a retry needs no new id");

    remote.set(true);
    eventually("the drainer finds the shared store back", || store.remote_up()).await;
    let (c, created) = store.start_transaction(&new_tx(2)).await.unwrap();
    assert!(created);
    assert!(c.id != a.id && c.id != b.id);
    drained(&store).await;
    assert_eq!(remote_transactions(&remote, &ACCOUNT.into()).await.len(), 3);
    store.shutdown().await;
}

#[tokio::test]
async fn an_erased_account_s_waiting_writes_never_reach_the_shared_store() {
    let remote = shared().await;
    let dir = tempfile::tempdir().unwrap();
    let store = node(&remote, dir.path(), 1000).await;
    connect(&store, &ACCOUNT.into(), &CP16.into()).await;
    connect(&store, &OTHER.into(), &CP_OTHER.into()).await;
    remote.set(false);
    ok(&store, &CP16.into(), "StartTransaction", start16(0, 1000)).await;
    for payload in [start16(0, 1000), json!({"vendorId": "v"})] {
        let action = if payload.get("vendorId").is_some() { "DataTransfer" } else { "StartTransaction" };
        assert!(matches!(
            call_as(&store, &OTHER.into(), &CP_OTHER.into(), action, payload).await,
            Reply::Result { .. }
        ));
    }
    let before = store.pending();

    // The shared store is down, so the erasure fails (and is asked again), but what this node
    // held of the account is gone already.
    assert!(erase_account(&store, remote.as_ref(), &OTHER.into()).await.is_err());
    // Its transaction, its DataTransfer and the feed entry of its start.
    assert_eq!(store.pending(), before - 3);
    assert!(!store.inner.station_has_pending(&OTHER.into(), &CP_OTHER.into()));
    let dropped = store.station(&OTHER.into(), &CP_OTHER.into()).await;
    assert!(matches!(dropped, Err(StoreError::Unavailable(_))), "its cached station is dropped: {dropped:?}");

    remote.set(true);
    drained(&store).await;
    assert!(crate::store::all_transactions(&remote.inner, &OTHER.into(), None).await.unwrap().is_empty());
    assert!(remote.inner.events(&OTHER.into(), &CP_OTHER.into()).await.unwrap().is_empty());
    assert_eq!(remote_transactions(&remote, &ACCOUNT.into()).await.len(), 1, "the other account drained");
    erase_account(&store, remote.as_ref(), &OTHER.into()).await.unwrap();
    assert!(remote.inner.account(&OTHER.into()).await.unwrap().is_none());

    // A station of the erased account still connected somewhere writes once more: set aside.
    assert!(matches!(
        call_as(&store, &OTHER.into(), &CP_OTHER.into(), "DataTransfer", json!({"vendorId": "v"})).await,
        Reply::Result { .. }
    ));
    drained(&store).await;
    assert!(remote.inner.events(&OTHER.into(), &CP_OTHER.into()).await.unwrap().is_empty());
    assert_eq!(store.inner.set_aside.len(), 1);
    store.shutdown().await;
}

#[tokio::test]
async fn a_transaction_started_on_one_node_is_stopped_right_on_another() {
    let remote = shared().await;
    let (dx, dy) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let x = node(&remote, dx.path(), 1000).await;
    let y = node(&remote, dy.path(), 1000).await;
    connect(&x, &ACCOUNT.into(), &CP16.into()).await;
    connect(&x, &ACCOUNT.into(), &CP201.into()).await;
    let id = ok(&x, &CP16.into(), "StartTransaction", start16(0, 1000)).await["transactionId"].as_i64().unwrap();
    ok(&x, &CP201.into(), "TransactionEvent", event201("Started", 0, 1000.0)).await;
    drained(&x).await;

    // The stations reconnect to node Y.
    connect(&y, &ACCOUNT.into(), &CP16.into()).await;
    connect(&y, &ACCOUNT.into(), &CP201.into()).await;
    ok(&y, &CP16.into(), "MeterValues", meter16(id, 5000)).await;
    ok(&y, &CP16.into(), "StopTransaction", stop16(id, 9000)).await;
    ok(&y, &CP201.into(), "TransactionEvent", event201("Updated", 1, 4000.0)).await;
    ok(&y, &CP201.into(), "TransactionEvent", event201("Ended", 2, 9500.0)).await;
    drained(&y).await;

    let txs = remote_transactions(&remote, &ACCOUNT.into()).await;
    assert_eq!(txs.len(), 2, "{txs:?}");
    let tx16 = by_station(&txs, &CP16.into());
    assert_eq!((i64::from(tx16.id), tx16.energy_wh()), (id, Some(8000)));
    let tx201 = by_station(&txs, &CP201.into());
    assert_eq!((tx201.energy_wh(), tx201.events.len()), (Some(8500), 3));
    x.shutdown().await;
    y.shutdown().await;
}

fn event_record(seq_no: u64, event_type: &str, wh: i64) -> TransactionEventRecord {
    TransactionEventRecord {
        seq_no,
        event_type: event_type.into(),
        trigger_reason: "MeterValuePeriodic".into(),
        timestamp: Utc::now(),
        offline: false,
        energy_register_wh: Some(wh),
        received_at: Utc::now(),
    }
}

#[test]
fn an_older_record_from_the_log_never_undoes_what_the_shared_store_recorded() {
    let open = Transaction::started(&new_tx(0), 7, Utc::now());
    let mut stopped = open.clone();
    stopped.stop = Some(TransactionStop {
        meter_stop: Some(500),
        timestamp: Utc::now(),
        reason: None,
        id_tag: None,
        received_at: Utc::now(),
    });
    assert_eq!(reconcile(&open, None), Some(open.clone()));
    assert_eq!(reconcile(&stopped, Some(open.clone())), Some(stopped.clone()));
    assert_eq!(reconcile(&open, Some(stopped.clone())), None, "a replayed start does not reopen it");
    assert_eq!(reconcile(&stopped, Some(stopped.clone())), None);

    // 2.0.1: node X applied events 0 and 1, node Y (the station moved) 0 and 2, the Ended one.
    let mut base = open.clone();
    base.station_transaction_id = Some("tx-abc".into());
    base.meter_start = None;
    let mut x = base.clone();
    x.events = vec![event_record(0, "Started", 1000), event_record(1, "Updated", 4000)];
    let mut y = base.clone();
    y.events = vec![event_record(0, "Started", 1000), event_record(2, "Ended", 9500)];
    y.stop = stopped.stop.clone();
    let merged = reconcile(&x, Some(y.clone())).unwrap();
    assert_eq!(merged.events.iter().map(|e| e.seq_no).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!((merged.meter_start, merged.energy_wh()), (Some(1000), Some(8500)));
    let mut behind = base.clone();
    behind.events = vec![event_record(0, "Started", 1000)];
    assert_eq!(reconcile(&behind, Some(y)), None, "the shared copy has every event already");
}

#[tokio::test]
async fn the_drain_at_shutdown_ends_at_once_while_the_shared_store_is_down_and_with_an_empty_log_once_it_is_back() {
    let remote = shared().await;
    let dir = tempfile::tempdir().unwrap();
    let store = node(&remote, dir.path(), 1000).await;
    connect(&store, &ACCOUNT.into(), &CP16.into()).await;
    remote.set(false);
    let id = ok(&store, &CP16.into(), "StartTransaction", start16(0, 1000)).await["transactionId"].as_i64().unwrap();
    ok(&store, &CP16.into(), "MeterValues", meter16(id, 2000)).await;
    eventually("the drainer finds the shared store gone", || !store.remote_up()).await;
    let pending = store.pending();
    assert!(pending > 0);

    // Down: nothing can drain, so the wait ends now rather than at its deadline.
    let started = std::time::Instant::now();
    let left = store.drain_until(tokio::time::Instant::now() + Duration::from_secs(60)).await;
    assert_eq!(left, pending);
    assert!(started.elapsed() < Duration::from_secs(10), "waited {:?}", started.elapsed());

    // Back: the wait ends with the log empty, well before its deadline.
    remote.set(true);
    eventually("the drainer finds the shared store back", || store.remote_up()).await;
    let started = std::time::Instant::now();
    assert_eq!(store.drain_until(tokio::time::Instant::now() + Duration::from_secs(60)).await, 0);
    assert!(started.elapsed() < Duration::from_secs(30), "waited {:?}", started.elapsed());
    assert_eq!(remote_transactions(&remote, &ACCOUNT.into()).await.len(), 1);
    store.shutdown().await;
}

#[tokio::test]
async fn caught_up_returns_once_what_was_logged_before_it_is_in_the_store_of_record() {
    let remote = shared().await;
    let dir = tempfile::tempdir().unwrap();
    let store = node(&remote, dir.path(), 1000).await;
    connect(&store, &ACCOUNT.into(), &CP16.into()).await;
    let id = ok(&store, &CP16.into(), "StartTransaction", start16(0, 1000)).await["transactionId"].as_i64().unwrap();
    for wh in [2000, 3000, 4000] {
        ok(&store, &CP16.into(), "MeterValues", meter16(id, wh)).await;
    }
    assert!(store.caught_up(tokio::time::Instant::now() + Duration::from_secs(30)).await);
    // At once, not eventually: the wait is what makes an API read after an acknowledgement see it.
    let readings = remote.inner.transaction_meter_values(&ACCOUNT.into(), &CP16.into(), id as i32).await.unwrap();
    assert_eq!(readings.len(), 3);
    assert_eq!(remote_transactions(&remote, &ACCOUNT.into()).await.len(), 1);

    // With the store of record gone the wait ends when the drainer finds out, not at its deadline.
    remote.set(false);
    ok(&store, &CP16.into(), "MeterValues", meter16(id, 5000)).await;
    let started = std::time::Instant::now();
    assert!(!store.caught_up(tokio::time::Instant::now() + Duration::from_secs(60)).await);
    assert!(started.elapsed() < Duration::from_secs(10), "waited {:?}", started.elapsed());
    remote.set(true);
    drained(&store).await;
    store.shutdown().await;
}

#[tokio::test]
async fn a_flush_with_nothing_logged_since_the_last_one_waits_for_no_committer() {
    let remote = shared().await;
    let dir = tempfile::tempdir().unwrap();
    let store = node(&remote, dir.path(), 1000).await;
    let (account_id, station_id): (AccountId, StationId) = (ACCOUNT.into(), CP16.into());
    connect(&store, &account_id, &station_id).await;
    let flushes = || store.inner.local.flushes();

    // A logged write is made durable by a flush of the node's database before it is acknowledged.
    let before = flushes();
    ok(&store, &station_id, "StartTransaction", start16(0, 1000)).await;
    assert!(flushes() > before, "a logged write was acknowledged without a flush");

    // Nothing logged since: a station record change on one node goes to the store of record, and
    // the acknowledgement after it has nothing of the log's to wait for.
    let one_dir = tempfile::tempdir().unwrap();
    let one_node = NodeLog::open(
        SledStore::open(one_dir.path(), CommitPolicy::default()).unwrap(),
        remote.clone(),
        NodeLogSettings { networked: false, ..settings(1000) },
    )
    .unwrap();
    let before = one_node.inner.local.flushes();
    let change = StationChange::Protocol("ocpp1.6".into());
    one_node.change_station(&account_id, &station_id, &change).await.unwrap().unwrap();
    one_node.flush().await.unwrap();
    assert_eq!(one_node.inner.local.flushes(), before, "a flush with nothing logged went to the committer");

    // The next logged write is flushed again, and a second flush right after has nothing left.
    let event = StationEvent {
        station_id: station_id.clone(),
        action: "DataTransfer".into(),
        payload: json!({"vendorId": "test"}),
        received_at: Utc::now(),
    };
    one_node.add_event(&account_id, &event).await.unwrap();
    one_node.flush().await.unwrap();
    let after_event = one_node.inner.local.flushes();
    assert!(after_event > before, "a logged event was not flushed");
    one_node.flush().await.unwrap();
    assert_eq!(one_node.inner.local.flushes(), after_event);
    one_node.shutdown().await;
    store.shutdown().await;
}
