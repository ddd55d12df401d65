//! What only the sled store has to show: its queue keys, erasure down to the last key, and that the
//! account store's writes are durable when they return.

use super::*;
use crate::ids::AccountId;
use crate::model::{ApiToken, Consents, LoginEvent, Page, PageRequest, ReadingKey};
use crate::store::prelude::*;
use chrono::{Duration, Utc};

fn command(station: &str, action: &str, age_secs: i64) -> CommandRecord {
    let created = Utc::now() - Duration::seconds(age_secs);
    CommandRecord {
        id: uuid::Uuid::new_v4().to_string(),
        protocol: "ocpp1.6".into(),
        account_id: "acct".into(),
        station_id: station.into(),
        action: action.into(),
        payload: serde_json::json!({}),
        status: CommandStatus::Queued,
        created_at: created,
        expires_at: created + Duration::hours(1),
        sent_at: None,
        answered_at: None,
        response: None,
        error: None,
    }
}

#[tokio::test]
async fn command_queues_keep_order_per_station_and_release_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), CommitPolicy::default()).unwrap();
    // Enough commands that queue sequence numbers contain zero bytes.
    let mut a = Vec::new();
    for i in 0..300 {
        let c = command("A", &format!("Cmd{i}"), 10);
        store.enqueue_command(&c).await.unwrap();
        a.push(c);
    }
    let oldest = command("B", "Old", 500);
    store.enqueue_command(&oldest).await.unwrap();
    store.enqueue_command(&command("AB", "Other", 5)).await.unwrap();

    let queued = store.queued_commands(&"acct".into(), &"A".into()).await.unwrap();
    assert_eq!(queued.iter().map(|c| c.action.as_str()).take(3).collect::<Vec<_>>(), ["Cmd0", "Cmd1", "Cmd2"]);
    assert_eq!(queued.len(), 300, "station A's queue holds none of B's or AB's");
    assert_eq!(store.queued_command_count().await.unwrap(), 302);
    assert_eq!(store.oldest_queued_command().await.unwrap(), Some(oldest.created_at));

    let mut first = a[0].clone();
    first.status = CommandStatus::Sent;
    store.update_command(&first).await.unwrap();
    assert_eq!(store.queued_commands(&"acct".into(), &"A".into()).await.unwrap()[0].action, "Cmd1");
    assert_eq!(
        store.command(&"acct".into(), &"A".into(), &first.id).await.unwrap().unwrap().status,
        CommandStatus::Sent
    );
    assert_eq!(store.queued_command_count().await.unwrap(), 301);

    let mut old = oldest.clone();
    old.status = CommandStatus::Expired;
    store.update_command(&old).await.unwrap();
    assert_ne!(store.oldest_queued_command().await.unwrap(), Some(oldest.created_at));
}

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

/// Puts one record of every kind under the account.
async fn fill(store: &SledStore, account_id: &AccountId) {
    let token = ApiToken {
        id: format!("tok-{account_id}"),
        account_id: account_id.clone(),
        created_at: Utc::now(),
        expires_at: Utc::now() + Duration::hours(1),
        last_used_at: None,
    };
    store.put_token(&format!("hash-{account_id}"), &token).await.unwrap();
    let station: Station = serde_json::from_value(serde_json::json!({
        "account_id": account_id, "id": "CP1", "password_hash": "", "registration": "accepted",
        "created_at": Utc::now(), "boot": null, "connectors": {}, "last_seen": null, "protocol": null,
        "firmware_status": null, "diagnostics_status": null,
    }))
    .unwrap();
    store.create_station(&station).await.unwrap();
    let tag = IdTag {
        id_tag: "T".into(),
        status: crate::model::TagStatus::Accepted,
        expiry_date: None,
        parent_id_tag: None,
        updated_at: Utc::now(),
    };
    store.put_id_tag(account_id, &tag).await.unwrap();
    let (tx, _) = store
        .start_transaction(&NewTransaction {
            account_id: account_id.clone(),
            station_id: "CP1".into(),
            connector_id: 1,
            id_tag: "T".into(),
            id_tag_status: "Accepted".into(),
            meter_start: 0,
            start_timestamp: Utc::now(),
            reservation_id: None,
        })
        .await
        .unwrap();
    let reading = MeterRecord {
        station_id: "CP1".into(),
        evse_id: None,
        connector_id: 1,
        transaction_id: Some(tx.id),
        meter_value: crate::model::MeterValue { timestamp: Utc::now(), sampled_value: vec![] },
    };
    store.add_meter_values(account_id, &[reading]).await.unwrap();
    let event = StationEvent {
        station_id: "CP1".into(),
        action: "DataTransfer".into(),
        payload: serde_json::json!({}),
        received_at: Utc::now(),
    };
    store.add_event(account_id, &event).await.unwrap();
    let mut c = command("CP1", "Reset", 1);
    c.account_id = account_id.clone();
    store.enqueue_command(&c).await.unwrap();
    store.put_consents(account_id, &Consents::default()).await.unwrap();
    let login = LoginEvent { at: Utc::now(), ip: "127.0.0.1".into(), outcome: crate::model::LoginOutcome::Success };
    store.add_login_event(account_id, &login, 10).await.unwrap();
    // OCPP 2.0.1: a transaction known by the station's own id, and a device-model variable.
    let mut v201 = tx.clone();
    v201.station_transaction_id = Some("tx-201".into());
    store
        .apply_transaction_event(
            account_id,
            &"CP1".into(),
            "tx-201",
            0,
            &|id| Transaction { id, ..v201.clone() },
            &|_| {},
        )
        .await
        .unwrap();
    let variable: crate::model::DeviceVariable = serde_json::from_value(serde_json::json!({
        "component": "OCPPCommCtrlr", "component_instance": null, "evse_id": null, "connector_id": null,
        "variable": "HeartbeatInterval", "variable_instance": null, "attribute_type": "Actual", "value": "60",
        "mutability": null, "persistent": null, "constant": null, "characteristics": null, "updated_at": Utc::now(),
    }))
    .unwrap();
    store.put_variables(account_id, &"CP1".into(), &[variable]).await.unwrap();
}

/// Every key in every tree that starts with the account id.
fn keys_of(store: &SledStore, account_id: &AccountId) -> Vec<String> {
    let mut found = Vec::new();
    for name in store.db.tree_names() {
        let tree = store.db.open_tree(&name).unwrap();
        for item in tree.iter() {
            let (k, v) = item.unwrap();
            if k.starts_with(account_id.as_bytes()) || v.as_ref() == account_id.as_bytes() {
                found.push(format!("{}: {}", String::from_utf8_lossy(&name), String::from_utf8_lossy(&k)));
            }
        }
    }
    found
}

#[tokio::test]
async fn erasure_leaves_no_record_of_the_account_and_reserves_its_slug() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), CommitPolicy::default()).unwrap();
    for (id, slug) in [("acct-a", "alpha"), ("acct-b", "bravo")] {
        store.create_account(&account(id, slug)).await.unwrap();
        fill(&store, &id.into()).await;
    }
    assert!(keys_of(&store, &"acct-a".into()).len() >= 14, "every kind of record is there to erase");

    let report = store.erase_account(&"acct-a".into()).await.unwrap();
    assert_eq!(report.device_variables, 1);
    assert_eq!(
        (report.stations, report.transactions, report.meter_values, report.tokens, report.queued_commands),
        (1, 2, 1, 1, 1)
    );
    assert_eq!(keys_of(&store, &"acct-a".into()), Vec::<String>::new());
    assert!(store.account_by_email("ops@alpha.example").await.unwrap().is_none());
    assert!(store.account_by_slug("alpha").await.unwrap().is_none());
    assert!(matches!(store.create_account(&account("acct-c", "alpha")).await, Err(StoreError::Conflict("slug"))));
    let mut reuse = account("acct-c", "charlie");
    reuse.email = "ops@alpha.example".into();
    store.create_account(&reuse).await.expect("the email is free again");

    assert!(keys_of(&store, &"acct-b".into()).len() >= 14, "the other account is untouched");
    assert_eq!(store.tokens(&"acct-b".into()).await.unwrap().len(), 1);
    assert_eq!(
        store.erase_account(&"acct-a".into()).await.unwrap(),
        ErasureReport::default(),
        "erasing twice is harmless"
    );
}

#[tokio::test]
async fn an_erasure_interrupted_by_a_crash_is_finished_on_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), CommitPolicy::default()).unwrap();
    store.create_account(&account("acct-a", "alpha")).await.unwrap();
    fill(&store, &"acct-a".into()).await;
    // As if the process died right after marking the erasure; `open` runs this on start-up (the
    // test cannot reopen: the group-commit thread holds the database until the process ends).
    store.meta.insert(key(&[ERASING, b"acct-a"]), &[]).unwrap();
    store.finish_interrupted_erasures().unwrap();
    assert_eq!(keys_of(&store, &"acct-a".into()), Vec::<String>::new());
    assert!(store.meta.scan_prefix(prefix(&[ERASING])).next().is_none());
}

#[tokio::test]
async fn account_store_writes_are_durable_when_they_return_and_concurrent_ones_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let window = std::time::Duration::from_millis(20);
    let store = SledStore::open(dir.path(), CommitPolicy { window, per_message: false }).unwrap();
    let before = store.flushes();
    store.create_account(&account("acct-a", "alpha")).await.unwrap();
    assert!(store.flushes() > before, "the write was flushed before it returned");

    let before = store.flushes();
    let writers: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store.put_consents(&AccountId::from(format!("acct-{i}")), &Consents::default()).await
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap().unwrap();
    }
    let flushes = store.flushes() - before;
    assert!((1..20).contains(&flushes), "{flushes} flushes for 20 concurrent writes");

    // The station path's writes wait for its explicit flush instead.
    let before = store.flushes();
    store
        .add_event(
            &"acct-a".into(),
            &StationEvent {
                station_id: "CP1".into(),
                action: "DataTransfer".into(),
                payload: serde_json::json!({}),
                received_at: Utc::now(),
            },
        )
        .await
        .unwrap();
    assert_eq!(store.flushes(), before, "a station-path write does not flush by itself");
    store.flush().await.unwrap();
    assert!(store.flushes() > before);
}

fn reading(tx: Option<i32>, connector: u32, at: chrono::DateTime<Utc>, value: &str) -> MeterRecord {
    serde_json::from_value(serde_json::json!({
        "station_id": "CP1", "connector_id": connector, "transaction_id": tx,
        "meter_value": {"timestamp": at, "sampledValue": [{"value": value}]},
    }))
    .unwrap()
}

#[tokio::test]
async fn readings_written_together_list_by_time_once_each_and_count_one_by_one_on_erasure() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), CommitPolicy::default()).unwrap();
    let a: AccountId = "acct-a".into();
    store.create_account(&account("acct-a", "alpha")).await.unwrap();
    let t0 = Utc::now();
    let at = |s: i64| t0 + Duration::seconds(s);
    // A log drains many calls' readings at once: out of time order, of two transactions, one
    // reading sent twice (once in each call), one without a transaction.
    let first = [reading(Some(7), 1, at(20), "20"), reading(Some(7), 1, at(0), "0"), reading(Some(8), 2, at(5), "b")];
    store.add_meter_values(&a, &first).await.unwrap();
    let second = [reading(Some(7), 1, at(10), "10"), reading(Some(7), 1, at(20), "20"), reading(None, 1, at(1), "n")];
    store.add_meter_values(&a, &second).await.unwrap();
    // A reading stored before readings were grouped: one per entry.
    let old = reading(Some(7), 1, at(15), "15");
    let k = key(&[
        a.as_bytes(),
        b"CP1",
        &7i32.to_be_bytes(),
        &time_key(old.meter_value.timestamp.timestamp_millis()),
        &1u32.to_be_bytes(),
        b"fingerpr",
    ]);
    store.meter_values.insert(k, encode(&old).unwrap()).unwrap();

    let values =
        |rs: Vec<MeterRecord>| rs.iter().map(|r| r.meter_value.sampled_value[0].value.clone()).collect::<Vec<_>>();
    let seven = store.transaction_meter_values(&a, &"CP1".into(), 7).await.unwrap();
    assert_eq!(values(seven), ["0", "10", "15", "20"]);
    assert_eq!(values(store.transaction_meter_values(&a, &"CP1".into(), 8).await.unwrap()), ["b"]);
    assert_eq!(store.account_meter_values(&a).await.unwrap().len(), 6);
    // The same call applied twice (a log replayed after a crash) adds nothing.
    store.add_meter_values(&a, &second).await.unwrap();
    assert_eq!(store.account_meter_values(&a).await.unwrap().len(), 6);

    assert_eq!(store.erase_account(&a).await.unwrap().meter_values, 6);
    assert!(store.account_meter_values(&a).await.unwrap().is_empty());
}

#[tokio::test]
async fn entries_written_before_they_were_bounded_to_a_span_are_split_once_and_page_from_any_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), CommitPolicy::default()).unwrap();
    let a: AccountId = "acct-a".into();
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z").unwrap().with_timezone(&Utc);
    // A whole hour of readings in one entry, keyed by its first: what a 1.6 StopTransaction's
    // transactionData was stored as before entries were bounded.
    let session: Vec<MeterRecord> =
        (0..60).map(|m| reading(Some(7), 1, t0 + Duration::minutes(m), &m.to_string())).collect();
    let k = key(&[a.as_bytes(), b"CP1", &7i32.to_be_bytes(), &time_key(t0.timestamp_millis()), b"fingerpr"]);
    store.meter_values.insert(k, encode(&session).unwrap()).unwrap();
    let from = |m: i64| PageRequest::new(Some(((t0 + Duration::minutes(m)).timestamp_micros(), 0)), 2);
    let values = |p: Page<MeterRecord, ReadingKey>| {
        p.items.iter().map(|r| r.meter_value.sampled_value[0].value.clone()).collect::<Vec<_>>()
    };
    let page = store.meter_values_page(&a, &"CP1".into(), 7, &from(30)).await.unwrap();
    assert!(page.items.is_empty(), "unsplit, the entry lies before the span a page from 10:30 starts at");

    store.meta.remove(METER_SPLIT_KEY).unwrap();
    store.split_meter_entries().unwrap();
    assert_eq!(store.meter_values.len(), 12, "an hour in spans of five minutes");
    let page = store.meter_values_page(&a, &"CP1".into(), 7, &from(30)).await.unwrap();
    assert_eq!(values(page), ["30", "31"]);
    assert_eq!(store.transaction_meter_values(&a, &"CP1".into(), 7).await.unwrap(), session);
    // Once: the marker stays, and a second pass finds nothing wider than a span.
    store.split_meter_entries().unwrap();
    assert_eq!(store.meter_values.len(), 12);
}
