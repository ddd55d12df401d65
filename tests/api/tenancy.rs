use crate::helpers::{spawn_app, StationClient};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn two_tenants_may_both_own_cp001_and_never_see_each_others_data() {
    let app = spawn_app().await;
    let a = app.tenant("alpha").await;
    let b = app.tenant("bravo").await;
    let pass_a = app.station(&a, "CP001").await;
    let pass_b = app.station(&b, "CP001").await;
    app.request(Method::PUT, "/id-tags/TAG-A", Some(&a.token), Some(json!({"status": "Accepted"}))).await;

    // Each station authenticates only under its own tenant's URL.
    assert_eq!(StationClient::connect(app.port, "bravo", "CP001", &pass_a).await.err().as_deref(), Some("HTTP 401"));
    let mut cp_a = StationClient::connect(app.port, "alpha", "CP001", &pass_a).await.unwrap();
    let mut cp_b = StationClient::connect(app.port, "bravo", "CP001", &pass_b).await.unwrap();
    cp_a.boot().await;
    cp_b.boot().await;

    // Alpha's tag is unknown at bravo.
    assert_eq!(cp_b.ok("Authorize", json!({"idTag": "TAG-A"})).await["idTagInfo"]["status"], "Invalid");
    let tx = cp_a
        .ok(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "TAG-A", "meterStart": 0, "timestamp": "2026-11-25T10:00:00Z"}),
        )
        .await["transactionId"]
        .as_i64()
        .unwrap();
    // Bravo's station cannot stop alpha's transaction.
    cp_b.ok("StopTransaction", json!({"transactionId": tx, "meterStop": 5, "timestamp": "2026-11-25T10:30:00Z"})).await;

    for path in [format!("/transactions/{tx}"), "/id-tags/TAG-A".to_string()] {
        let (status, body) = app.get(&path, &b.token).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{path}");
        assert_eq!(app.get(&path, &a.token).await.0, StatusCode::OK, "{path}");
    }
    let (_, tx_a) = app.get(&format!("/transactions/{tx}"), &a.token).await;
    assert_eq!(tx_a["status"], "active", "bravo's StopTransaction did not touch alpha's transaction");
    let (_, list_b) = app.get("/transactions", &b.token).await;
    assert_eq!(list_b, json!({"items": [], "next_cursor": null}));

    // Commands reach the right tenant's CP001.
    let api = app.post("/stations/CP001/commands/ClearCache", &b.token, json!({}));
    let station = async {
        let call = cp_b.recv().await;
        cp_b.send_text(&json!([3, call[1], {"status": "Accepted"}]).to_string()).await;
    };
    let ((status, _), ()) = tokio::join!(api, station);
    assert_eq!(status, StatusCode::OK);

    // Bravo deleting its CP001 leaves alpha's connected.
    assert_eq!(app.request(Method::DELETE, "/stations/CP001", Some(&b.token), None).await.0, StatusCode::NO_CONTENT);
    let (_, st_a) = app.get("/stations/CP001", &a.token).await;
    assert_eq!(st_a["connected"], true);
    assert_eq!(cp_a.call("Heartbeat", json!({})).await[0], 3);
    let (_, list_a) = app.get("/stations", &a.token).await;
    assert_eq!(list_a["items"].as_array().map(Vec::len), Some(1));
}
