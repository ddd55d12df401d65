//! Every list route answers a page: `limit` and an opaque `cursor` in, `{items, next_cursor}` out,
//! in a stable order, with the filters an operator narrows by.

use crate::helpers::{series_value, spawn_app, spawn_app_with, StationClient, Tenant, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Follows `next_cursor` from the first page of `path` (which has its query, with `limit`), and
/// returns each page's items.
async fn walk(app: &TestApp, token: &str, path: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut url = path.to_string();
    loop {
        let (status, body) = app.get(&url, token).await;
        assert_eq!(status, StatusCode::OK, "{url}: {body}");
        pages.push(body["items"].as_array().expect("items").clone());
        match body["next_cursor"].as_str() {
            Some(cursor) => url = format!("{path}&cursor={cursor}"),
            None => {
                assert!(body["next_cursor"].is_null(), "{body}");
                return pages;
            }
        }
        assert!(pages.len() < 100, "the pages end");
    }
}

fn field(items: &[Value], name: &str) -> Vec<String> {
    items.iter().map(|i| i[name].to_string().trim_matches('"').to_string()).collect()
}

async fn start(cp: &mut StationClient, connector: u32, at: &str) -> i64 {
    let start = cp
        .ok("StartTransaction", json!({"connectorId": connector, "idTag": "RFID-1", "meterStart": 0, "timestamp": at}))
        .await;
    start["transactionId"].as_i64().expect("transaction id")
}

async fn put_tag(app: &TestApp, t: &Tenant, tag: &str) {
    let (status, body) =
        app.request(Method::PUT, &format!("/id-tags/{tag}"), Some(&t.token), Some(json!({"status": "Accepted"}))).await;
    assert!(status.is_success(), "{body}");
}

#[tokio::test]
async fn stations_and_id_tags_page_in_order_and_a_walk_misses_and_repeats_nothing_while_rows_arrive() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let other = app.tenant("other").await;
    for i in [10, 20, 30, 40, 50, 60, 70] {
        app.station(&t, &format!("CP{i}")).await;
        put_tag(&app, &t, &format!("TAG{i}")).await;
    }
    app.station(&other, "CP15").await;

    // Default page: everything, in id order, no cursor.
    let (_, all) = app.get("/stations", &t.token).await;
    assert_eq!(field(all["items"].as_array().unwrap(), "id"), ["CP10", "CP20", "CP30", "CP40", "CP50", "CP60", "CP70"]);
    assert!(all["next_cursor"].is_null());

    // Walking three at a time while stations are added on both sides of the cursor: those before
    // it are not shown, those after it are, each once.
    let mut seen = Vec::new();
    let (mut page, mut url) = (0, "/stations?limit=3".to_string());
    loop {
        let (status, body) = app.get(&url, &t.token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let items = body["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(field(items, "id"));
        let Some(cursor) = body["next_cursor"].as_str() else { break };
        page += 1;
        // CP15 and CP25 sort before the cursor; CP95 after CP30, CP105 before CP60 (byte order).
        app.station(&t, &format!("CP{page}5")).await;
        app.station(&t, &format!("CP{}5", 8 + page)).await;
        url = format!("/stations?limit=3&cursor={cursor}");
    }
    assert_eq!(seen, ["CP10", "CP20", "CP30", "CP40", "CP50", "CP60", "CP70", "CP95"], "each once, in byte order");

    let pages = walk(&app, &t.token, "/id-tags?limit=2").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2, 1]);
    let tags: Vec<String> = pages.iter().flat_map(|p| field(p, "id_tag")).collect();
    assert_eq!(tags, ["TAG10", "TAG20", "TAG30", "TAG40", "TAG50", "TAG60", "TAG70"]);
    // Another tenant's list has only its own.
    let (_, theirs) = app.get("/stations", &other.token).await;
    assert_eq!(field(theirs["items"].as_array().unwrap(), "id"), ["CP15"]);
}

#[tokio::test]
async fn a_bad_limit_or_cursor_or_filter_is_refused_with_a_stable_error() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    for i in 0..3 {
        app.station(&t, &format!("CP{i}")).await;
        put_tag(&app, &t, &format!("TAG{i}")).await;
    }
    let (_, tags) = app.get("/id-tags?limit=1", &t.token).await;
    let tag_cursor = tags["next_cursor"].as_str().expect("a cursor").to_string();
    let (_, stations) = app.get("/stations?limit=1", &t.token).await;
    assert!(stations["next_cursor"].is_string());

    for (path, code) in [
        ("/stations?limit=0".to_string(), "invalid_limit"),
        ("/transactions?limit=1001".to_string(), "invalid_limit"),
        ("/id-tags?limit=-1".to_string(), "invalid_query"),
        ("/stations?cursor=not-a-cursor!".to_string(), "invalid_cursor"),
        (format!("/stations?cursor={tag_cursor}"), "invalid_cursor"),
        (format!("/transactions?cursor={tag_cursor}"), "invalid_cursor"),
        ("/transactions?status=paused".to_string(), "invalid_query"),
        ("/transactions?started_from=yesterday".to_string(), "invalid_query"),
        ("/stations?registration=maybe".to_string(), "invalid_query"),
        ("/stations?connected=perhaps".to_string(), "invalid_query"),
        ("/stations?sort=id".to_string(), "invalid_query"),
    ] {
        let (status, body) = app.get(&path, &t.token).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{path}: {body}");
        assert!(body["message"].is_string(), "{body}");
    }
    // The largest page is allowed.
    let (status, _) = app.get("/stations?limit=1000", &t.token).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn transactions_page_newest_first_by_station_status_and_time() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    put_tag(&app, &t, "RFID-1").await;
    let mut cp1 = app.connected_station(&t, "CP1").await;
    let mut cp2 = app.connected_station(&t, "CP2").await;
    cp1.boot().await;
    cp2.boot().await;
    let a = start(&mut cp1, 1, "2026-11-25T08:00:00Z").await;
    let b = start(&mut cp2, 1, "2026-11-25T09:00:00Z").await;
    let c = start(&mut cp1, 2, "2026-11-25T10:00:00Z").await;
    let d = start(&mut cp2, 2, "2026-11-25T11:00:00Z").await;
    for (cp, tx, at) in [(&mut cp1, a, "2026-11-25T12:00:00Z"), (&mut cp2, d, "2026-11-25T13:00:00Z")] {
        cp.ok("StopTransaction", json!({"transactionId": tx, "meterStop": 1000, "timestamp": at})).await;
    }
    let ids = |pages: Vec<Vec<Value>>| pages.iter().flatten().map(|t| t["id"].as_i64().unwrap()).collect::<Vec<_>>();

    let pages = walk(&app, &t.token, "/transactions?limit=3").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 1]);
    assert_eq!(ids(pages), [d, c, b, a], "newest first");
    assert_eq!(ids(walk(&app, &t.token, "/transactions?limit=1&station=CP1").await), [c, a]);
    assert_eq!(ids(walk(&app, &t.token, "/transactions?limit=1&status=active").await), [c, b]);
    let completed = walk(&app, &t.token, "/transactions?limit=10&status=completed").await;
    assert!(completed.iter().flatten().all(|t| t["status"] == "completed"));
    assert_eq!(ids(completed), [d, a]);
    assert_eq!(ids(walk(&app, &t.token, "/transactions?limit=2&station=CP2&status=active").await), [b]);
    let started = "/transactions?limit=1&started_from=2026-11-25T09:00:00Z&started_to=2026-11-25T11:00:00Z";
    assert_eq!(ids(walk(&app, &t.token, started).await), [c, b], "from inclusive, to exclusive");
    let stopped = "/transactions?limit=5&stopped_from=2026-11-25T12:30:00Z";
    assert_eq!(ids(walk(&app, &t.token, stopped).await), [d]);
    assert!(ids(walk(&app, &t.token, "/transactions?limit=5&station=CP9").await).is_empty());

    // A transaction started while a client walks is newer than its cursor: the walk goes on
    // without it and without repeating anything.
    let (_, first) = app.get("/transactions?limit=2", &t.token).await;
    let e = start(&mut cp1, 3, "2026-11-25T14:00:00Z").await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, rest) = app.get(&format!("/transactions?limit=2&cursor={cursor}"), &t.token).await;
    assert_eq!(
        ids(vec![first["items"].as_array().unwrap().clone(), rest["items"].as_array().unwrap().clone()]),
        [d, c, b, a]
    );
    assert_eq!(ids(walk(&app, &t.token, "/transactions?limit=100").await)[0], e);
}

#[tokio::test]
async fn stations_are_narrowed_by_connection_registration_and_protocol() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let mut live16 = app.connected_station(&t, "CP-A").await;
    live16.boot().await;
    let password = app.station(&t, "CP-B").await;
    let mut live201 = StationClient::connect_201(app.port, &t.slug, "CP-B", &password).await.expect("2.0.1 connects");
    live201.boot_201().await;
    for id in ["CP-C", "CP-D", "CP-E"] {
        app.station(&t, id).await;
    }
    let (status, _) =
        app.request(Method::PATCH, "/stations/CP-D", Some(&t.token), Some(json!({"registration": "pending"}))).await;
    assert_eq!(status, StatusCode::OK);
    let ids = |pages: Vec<Vec<Value>>| pages.iter().flat_map(|p| field(p, "id")).collect::<Vec<_>>();

    assert_eq!(ids(walk(&app, &t.token, "/stations?limit=1&connected=true").await), ["CP-A", "CP-B"]);
    let offline = walk(&app, &t.token, "/stations?limit=2&connected=false").await;
    assert!(offline.iter().flatten().all(|s| s["connected"] == false));
    assert_eq!(ids(offline), ["CP-C", "CP-D", "CP-E"]);
    assert_eq!(ids(walk(&app, &t.token, "/stations?limit=1&registration=pending").await), ["CP-D"]);
    assert_eq!(ids(walk(&app, &t.token, "/stations?limit=1&protocol=ocpp2.0.1").await), ["CP-B"]);
    assert_eq!(ids(walk(&app, &t.token, "/stations?limit=5&protocol=ocpp1.6&connected=true").await), ["CP-A"]);
}

#[tokio::test]
async fn a_filter_no_index_answers_reads_a_bounded_number_of_records_per_page_and_is_counted() {
    let app = spawn_app_with(|s| s.limits.list_scan_records = 3).await;
    let t = app.tenant("acme").await;
    put_tag(&app, &t, "RFID-1").await;
    let mut cp = app.connected_station(&t, "CP1").await;
    cp.boot().await;
    let mut started = Vec::new();
    for connector in 1..=7 {
        started.push(start(&mut cp, connector, &format!("2026-11-25T0{connector}:00:00Z")).await);
    }
    let before = series_value(&app.metrics().await, "ocpp_limit_hits_total", &[("limit", "list_scan")]);

    // Only the oldest matches: each request reads at most 3 records, so the walk takes pages that
    // come back empty, each with a cursor to go on from, and ends with the match.
    let pages = walk(&app, &t.token, "/transactions?limit=1&started_to=2026-11-25T02:00:00Z").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [0, 0, 1], "3 + 3 + 1 records read");
    assert_eq!(pages[2][0]["id"].as_i64(), Some(started[0]));
    let after = series_value(&app.metrics().await, "ocpp_limit_hits_total", &[("limit", "list_scan")]);
    assert_eq!(after - before, 2.0, "two pages were cut short by the bound");
    // A page the index answers whole is not bounded by it.
    let (_, all) = app.get("/transactions?limit=7", &t.token).await;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(7));
}

#[tokio::test]
async fn the_transaction_export_streams_every_match_as_ndjson_across_store_pages() {
    let app = spawn_app_with(|s| {
        s.limits.station_messages_per_sec = 100_000.0;
        s.limits.station_message_burst = 100_000;
        // Store pages a filter leaves empty (a completed transaction among a thousand open ones).
        s.limits.list_scan_records = 50;
        // One at a time: each export below gives its place back when its body ends.
        s.limits.exports_per_tenant = 1;
    })
    .await;
    let t = app.tenant("acme").await;
    let other = app.tenant("other").await;
    put_tag(&app, &t, "RFID-1").await;
    let mut cp = app.connected_station(&t, "CP1").await;
    cp.boot().await;
    // More than one store page (1,000) of them.
    let mut ids = Vec::new();
    for n in 0..1005u32 {
        let at = format!("2026-11-{:02}T{:02}:{:02}:00Z", 1 + n / 1440, n / 60 % 24, n % 60);
        let start = cp
            .ok(
                "StartTransaction",
                json!({"connectorId": 1 + n % 4, "idTag": "RFID-1", "meterStart": n, "timestamp": at}),
            )
            .await;
        ids.push(start["transactionId"].as_i64().expect("transaction id"));
    }
    let stopped = ids[3];
    cp.ok("StopTransaction", json!({"transactionId": stopped, "meterStop": 503, "timestamp": "2026-11-02T00:00:00Z"}))
        .await;
    ids.reverse();

    let export = |path: &str, token: &str| {
        let req = app.http.get(app.api(path)).bearer_auth(token.to_string());
        async move {
            let res = req.send().await.expect("export answered");
            let status = res.status();
            let kind = res.headers().get("content-type").map(|v| v.to_str().unwrap_or_default().to_string());
            (status, kind, res.text().await.expect("export read"))
        }
    };
    let (status, kind, body) = export("/transactions/export", &t.token).await;
    assert_eq!((status, kind.as_deref()), (StatusCode::OK, Some("application/x-ndjson")));
    let lines: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).expect("one JSON object a line")).collect();
    assert_eq!(lines.iter().map(|l| l["id"].as_i64().unwrap()).collect::<Vec<_>>(), ids, "every one, newest first");
    let done = lines.iter().find(|l| l["id"] == stopped).unwrap();
    assert_eq!((done["status"].as_str(), done["energy_wh"].as_i64()), (Some("completed"), Some(500)));

    let (_, _, body) = export("/transactions/export?status=completed", &t.token).await;
    assert_eq!(body.lines().count(), 1);
    // Started in a ten-minute window (one a minute).
    let (_, _, body) =
        export("/transactions/export?started_from=2026-11-01T00:10:00Z&started_to=2026-11-01T00:20:00Z", &t.token)
            .await;
    assert_eq!(body.lines().count(), 10);
    let (_, _, body) = export("/transactions/export", &other.token).await;
    assert_eq!(body, "", "another tenant's export is its own");
    let (status, _, body) = export("/transactions/export?limit=5", &t.token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("invalid_query"), "{body}");
}

#[tokio::test]
async fn an_export_past_the_tenants_bound_is_refused_with_429_and_counted() {
    let app = spawn_app_with(|s| s.limits.exports_per_tenant = 0).await;
    let t = app.tenant("acme").await;
    let before = series_value(&app.metrics().await, "ocpp_limit_hits_total", &[("limit", "exports")]);
    let (status, body) = app.get("/transactions/export", &t.token).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["code"], "rate_limited", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("exports_per_tenant")), "{body}");
    let after = series_value(&app.metrics().await, "ocpp_limit_hits_total", &[("limit", "exports")]);
    assert_eq!(after - before, 1.0);
    // The bound is on exports only: the list itself still answers.
    let (status, _) = app.get("/transactions", &t.token).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_transactions_meter_values_page_by_time_from_the_start_a_time_or_a_cursor() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let other = app.tenant("other").await;
    put_tag(&app, &t, "RFID-1").await;
    let mut cp = app.connected_station(&t, "CP1").await;
    cp.boot().await;
    let tx = start(&mut cp, 1, "2026-11-25T10:00:00Z").await;
    // Half an hour, a reading a minute, sent out of order in batches.
    for batch in (0..30).collect::<Vec<u32>>().chunks(4).rev() {
        let values: Vec<Value> = batch
            .iter()
            .map(|m| json!({"timestamp": format!("2026-11-25T10:{m:02}:30Z"), "sampledValue": [{"value": m.to_string()}]}))
            .collect();
        cp.ok("MeterValues", json!({"connectorId": 1, "transactionId": tx, "meterValue": values})).await;
    }
    let path = format!("/transactions/{tx}/meter-values");
    let pages = walk(&app, &t.token, &format!("{path}?limit=7")).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [7, 7, 7, 7, 2]);
    let values: Vec<String> = pages.iter().flatten().map(|r| r["sampled_value"][0]["value"].to_string()).collect();
    let expected: Vec<String> = (0..30).map(|m| format!("\"{m}\"")).collect();
    assert_eq!(values, expected, "every reading once, by time");
    assert_eq!(pages[0][0]["timestamp"], "2026-11-25T10:00:30Z");

    let (status, from) = app.get(&format!("{path}?from=2026-11-25T10:20:00Z&limit=2"), &t.token).await;
    assert_eq!(status, StatusCode::OK, "{from}");
    assert_eq!(field(from["items"].as_array().unwrap(), "timestamp"), ["2026-11-25T10:20:30Z", "2026-11-25T10:21:30Z"]);
    let cursor = from["next_cursor"].as_str().expect("more after").to_string();
    let (_, next) = app.get(&format!("{path}?cursor={cursor}&limit=1"), &t.token).await;
    assert_eq!(field(next["items"].as_array().unwrap(), "timestamp"), ["2026-11-25T10:22:30Z"]);

    let (status, body) = app.get(&format!("{path}?cursor={cursor}&from=2026-11-25T10:20:00Z"), &t.token).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_query")), "{body}");
    let (status, body) = app.get(&format!("{path}?cursor=bm90LW1pbmU"), &t.token).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_cursor")), "{body}");
    let (status, body) = app.get(&format!("{path}?limit=1001"), &t.token).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_limit")), "{body}");
    let (status, _) = app.get(&path, &other.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's transaction is not there");
    let (status, _) = app.get("/transactions/999999/meter-values", &t.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The transaction itself no longer carries them.
    let (_, detail) = app.get(&format!("/transactions/{tx}"), &t.token).await;
    assert!(detail.get("meter_values").is_none(), "{detail}");
}

#[tokio::test]
async fn a_stations_events_page_in_the_order_received() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let other = app.tenant("other").await;
    let mut cp = app.connected_station(&t, "CP1").await;
    cp.boot().await;
    for n in 0..7 {
        cp.ok("DataTransfer", json!({"vendorId": "ACME", "data": format!("hello {n}")})).await;
    }
    let pages = walk(&app, &t.token, "/stations/CP1/events?limit=3").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    let data: Vec<&str> = pages.iter().flatten().map(|e| e["payload"]["data"].as_str().unwrap_or_default()).collect();
    let expected: Vec<String> = (0..7).map(|n| format!("hello {n}")).collect();
    assert_eq!(data, expected, "every event once, in the order received");
    assert_eq!(pages[0][0]["action"], "DataTransfer");
    assert!(pages[0][0]["received_at"].as_str().is_some());

    let (status, _) = app.get("/stations/CP1/events", &other.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's station is not there");
    let (status, _) = app.get("/stations/NOPE/events", &t.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app.get("/stations/CP1/events?cursor=bm90LW1pbmU", &t.token).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_cursor")), "{body}");
}
