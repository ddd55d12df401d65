//! The account holder's rights (access and portability, rectification, erasure, choices) and the
//! protection of accounts (failure limits, new-location codes, login history, revocable tokens).

use crate::helpers::{client_from, series_value, spawn_app, spawn_app_with, StationClient, TestApp, PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// A station of the tenant that charged once: boot, a DataTransfer event, a transaction with meter values.
async fn charge_once(app: &TestApp, tenant: &crate::helpers::Tenant, station: &str, tag: &str) -> (StationClient, i64) {
    app.request(Method::PUT, &format!("/id-tags/{tag}"), Some(&tenant.token), Some(json!({"status": "Accepted"})))
        .await;
    let mut cp = app.connected_station(tenant, station).await;
    cp.boot().await;
    cp.ok("DataTransfer", json!({"vendorId": "ACME", "data": "hello"})).await;
    let tx = cp
        .ok(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": tag, "meterStart": 1000, "timestamp": "2026-11-25T10:00:00Z"}),
        )
        .await["transactionId"]
        .as_i64()
        .unwrap();
    cp.ok(
        "MeterValues",
        json!({"connectorId": 1, "transactionId": tx, "meterValue": [
            {"timestamp": "2026-11-25T10:15:00Z", "sampledValue": [{"value": "1500", "unit": "Wh"}]}
        ]}),
    )
    .await;
    cp.ok("StopTransaction", json!({"transactionId": tx, "meterStop": 2000, "timestamp": "2026-11-25T10:30:00Z"}))
        .await;
    (cp, tx)
}

async fn export(app: &TestApp, token: &str) -> (StatusCode, Value) {
    app.get("/account/export", token).await
}

#[tokio::test]
async fn the_export_holds_everything_kept_about_the_account_and_no_secret() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let other = app.tenant("other").await;
    let (_cp, tx) = charge_once(&app, &t, "CP001", "TAG-1").await;
    charge_once(&app, &other, "OTHER-CP", "OTHER-TAG").await;
    app.request(Method::PUT, "/account/consents", Some(&t.token), Some(json!({"marketing_emails": true}))).await;
    assert_eq!(app.login(&t.email, "wrong-password").await.0, StatusCode::UNAUTHORIZED);
    let (status, hook) = app.post("/webhooks", &t.token, json!({"url": "https://hooks.acme.example/ocpp"})).await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    let hook_secret = hook["secret"].as_str().expect("secret").to_string();

    let res = app.http.get(app.api("/account/export")).bearer_auth(&t.token).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let disposition = res.headers()["content-disposition"].to_str().unwrap().to_string();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    let text = res.text().await.unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();

    assert_eq!(doc["account"]["email"], "ops@acme.example");
    assert_eq!(doc["account"]["known_locations"], json!(["127.0.0.0/24"]));
    assert_eq!(doc["consents"]["marketing_emails"]["granted"], true);
    assert!(
        doc["retention"]["meter_values"]["days"].as_u64().is_some(),
        "the periods the data is kept for: {}",
        doc["retention"]
    );
    assert_eq!(doc["stations"][0]["id"], "CP001");
    assert_eq!(doc["stations"][0]["boot"]["charge_point_vendor"], "ACME");
    assert_eq!(doc["stations"][0]["events"][0]["action"], "DataTransfer");
    assert_eq!(doc["id_tags"][0]["id_tag"], "TAG-1");
    let transaction = &doc["transactions"][0];
    assert_eq!((transaction["id"].as_i64(), transaction["energy_wh"].as_i64()), (Some(tx), Some(1000)));
    assert_eq!(transaction["meter_values"][0]["sampled_value"][0]["value"], "1500");
    let outcomes: Vec<&str> =
        doc["login_history"].as_array().unwrap().iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["success", "bad_password"]);
    assert_eq!(doc["login_history"][0]["ip"], "127.0.0.1");
    assert_eq!(doc["tokens"].as_array().map(Vec::len), Some(1));
    assert_eq!(doc["webhooks"][0]["url"], "https://hooks.acme.example/ocpp");
    assert_eq!(doc["webhooks"][0]["deliveries"], json!([]));

    for secret in [
        "password_hash",
        "$argon2",
        "$hmac-sha256",
        t.token.as_str(),
        "OTHER-CP",
        "OTHER-TAG",
        "ops@other.example",
        hook_secret.as_str(),
        "whsec_",
    ] {
        assert!(!text.contains(secret), "the export must not contain {secret:?}");
    }
}

#[tokio::test]
async fn a_name_change_needs_only_the_token() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let (status, me) =
        app.request(Method::PATCH, "/account", Some(&t.token), Some(json!({"name": "  ACME Ltd "}))).await;
    assert_eq!((status, me["name"].as_str()), (StatusCode::OK, Some("ACME Ltd")));
    assert_eq!(app.get("/account", &t.token).await.1["name"], "ACME Ltd");
    let (status, err) = app.request(Method::PATCH, "/account", Some(&t.token), Some(json!({}))).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_field")));
    let (status, _) = app.request(Method::PATCH, "/account", None, Some(json!({"name": "X"}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_email_change_needs_the_current_password_and_a_free_address() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    app.tenant("taken").await;
    let patch = |body: Value| app.request(Method::PATCH, "/account", Some(&t.token), Some(body));

    let (status, err) = patch(json!({"email": "new@acme.example"})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_field")), "{err}");
    let (status, err) = patch(json!({"email": "new@acme.example", "current_password": "not-it-at-all"})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::FORBIDDEN, Some("invalid_credentials")), "{err}");
    let (status, err) = patch(json!({"email": "OPS@taken.example", "current_password": PASSWORD})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")), "{err}");
    let (status, err) = patch(json!({"email": "not-an-address", "current_password": PASSWORD})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_field")), "{err}");

    let (status, me) = patch(json!({"email": "New@Acme.example", "current_password": PASSWORD})).await;
    assert_eq!((status, me["email"].as_str()), (StatusCode::OK, Some("new@acme.example")), "{me}");
    assert_eq!(app.login("ops@acme.example", PASSWORD).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(app.login("new@acme.example", PASSWORD).await.0, StatusCode::OK);
    assert_eq!(app.get("/account", &t.token).await.0, StatusCode::OK, "an email change keeps the tokens");
    // The old address is free for someone else.
    let (status, _) = app
        .request(
            Method::POST,
            "/accounts",
            None,
            Some(json!({"email": "ops@acme.example", "password": "long-enough", "name": "N", "slug": "fresh"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn a_password_change_needs_the_old_password_and_revokes_every_other_token() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let (_, second) = app.login(&t.email, PASSWORD).await;
    let second = second["token"].as_str().unwrap().to_string();
    let patch = |body: Value| app.request(Method::PATCH, "/account", Some(&t.token), Some(body));

    let (status, err) = patch(json!({"password": "brand-new-pass", "current_password": "wrong-old-pass"})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::FORBIDDEN, Some("invalid_credentials")));
    let (status, err) = patch(json!({"password": "short", "current_password": PASSWORD})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_field")));
    assert_eq!(app.get("/account", &second).await.0, StatusCode::OK, "failed changes revoke nothing");

    let (status, _) = patch(json!({"password": "brand-new-pass", "current_password": PASSWORD})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.get("/account", &t.token).await.0, StatusCode::OK, "the token that changed it stays");
    assert_eq!(app.get("/account", &second).await.0, StatusCode::UNAUTHORIZED, "every other token is revoked");
    assert_eq!(app.login(&t.email, PASSWORD).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(app.login(&t.email, "brand-new-pass").await.0, StatusCode::OK);
}

#[tokio::test]
async fn erasure_removes_the_account_and_its_data_and_locks_out_its_stations() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let other = app.tenant("other").await;
    let password = app.station(&t, "CP002").await;
    let (mut cp, _) = charge_once(&app, &t, "CP001", "TAG-1").await;
    let (mut other_cp, other_tx) = charge_once(&app, &other, "CP001", "TAG-1").await;
    app.post("/stations/CP002/commands/Reset?queue=true", &t.token, json!({"type": "Soft"})).await;

    let (status, err) =
        app.request(Method::DELETE, "/account", Some(&t.token), Some(json!({"password": "not-the-password"}))).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::FORBIDDEN, Some("invalid_credentials")));
    assert_eq!(app.get("/account", &t.token).await.0, StatusCode::OK, "a wrong password erases nothing");

    let (status, answer) =
        app.request(Method::DELETE, "/account", Some(&t.token), Some(json!({"password": PASSWORD}))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["erased"], true);
    let removed = &answer["removed"];
    assert_eq!((removed["stations"].as_u64(), removed["transactions"].as_u64()), (Some(2), Some(1)), "{answer}");
    assert_eq!((removed["id_tags"].as_u64(), removed["queued_commands"].as_u64()), (Some(1), Some(1)), "{answer}");
    let retained: Vec<&str> =
        answer["retained"].as_array().unwrap().iter().map(|r| r["data"].as_str().unwrap()).collect();
    assert_eq!(retained, ["slug", "server logs"], "{answer}");
    assert!(answer["retained"].as_array().unwrap().iter().all(|r| r["reason"].as_str().is_some_and(|r| !r.is_empty())));

    // Its station's session is closed, and no station of it connects again.
    assert!(matches!(cp.recv_message().await, Some(Message::Close(_)) | None));
    assert_eq!(StationClient::connect(app.port, "acme", "CP002", &password).await.err().as_deref(), Some("HTTP 401"));
    // Its token, its password and its export are gone.
    for path in ["/account", "/account/export", "/stations", "/transactions"] {
        assert_eq!(app.get(path, &t.token).await.0, StatusCode::UNAUTHORIZED, "{path}");
    }
    assert_eq!(app.login(&t.email, PASSWORD).await.0, StatusCode::UNAUTHORIZED);

    // The email is free again; the slug stays reserved, as the answer said.
    let sign_up = |email: &str, slug: &str| {
        app.request(
            Method::POST,
            "/accounts",
            None,
            Some(json!({"email": email, "password": PASSWORD, "name": "N", "slug": slug})),
        )
    };
    assert_eq!(sign_up("new@acme.example", "acme").await.0, StatusCode::CONFLICT);
    assert_eq!(sign_up(&t.email, "acme-two").await.0, StatusCode::CREATED);
    let (_, session) = app.login(&t.email, PASSWORD).await;
    let (_, fresh) = export(&app, session["token"].as_str().unwrap()).await;
    assert_eq!((fresh["stations"].clone(), fresh["transactions"].clone()), (json!([]), json!([])), "{fresh}");
    assert_eq!(fresh["login_history"].as_array().map(Vec::len), Some(1), "only the new account's sign-in");

    // The other tenant, with a station of the same id, is untouched.
    assert_eq!(other_cp.call("Heartbeat", json!({})).await[0], 3);
    let (status, tx) = app.get(&format!("/transactions/{other_tx}"), &other.token).await;
    assert_eq!((status, tx["energy_wh"].as_i64()), (StatusCode::OK, Some(1000)));
    let (_, other_export) = export(&app, &other.token).await;
    assert_eq!(other_export["stations"][0]["id"], "CP001");
    assert_eq!(other_export["id_tags"][0]["id_tag"], "TAG-1");
}

#[tokio::test]
async fn consents_start_off_and_keep_the_time_of_each_change() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let (status, c) = app.get("/account/consents", &t.token).await;
    assert_eq!(status, StatusCode::OK);
    for choice in ["personalized_content", "personalized_offers", "marketing_emails", "non_essential_cookies"] {
        assert_eq!(c[choice], json!({"granted": false, "updated_at": null}), "{choice} is off by default");
    }
    let put = |body: Value| app.request(Method::PUT, "/account/consents", Some(&t.token), Some(body));

    let (status, c) = put(json!({"marketing_emails": true, "personalized_offers": false})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(c["marketing_emails"]["granted"], true);
    let granted_at = c["marketing_emails"]["updated_at"].clone();
    assert!(granted_at.is_string(), "{c}");
    assert_eq!(c["personalized_offers"]["updated_at"], Value::Null, "setting a choice to what it is changes nothing");

    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (_, c) = put(json!({"marketing_emails": true, "non_essential_cookies": true})).await;
    assert_eq!(c["marketing_emails"]["updated_at"], granted_at, "unchanged: same time");
    assert!(c["non_essential_cookies"]["updated_at"].is_string());
    let (_, c) = put(json!({"marketing_emails": false})).await;
    assert_eq!(c["marketing_emails"]["granted"], false);
    assert_ne!(c["marketing_emails"]["updated_at"], granted_at, "withdrawn: a new time");
    assert_eq!(c["non_essential_cookies"]["granted"], true, "choices not named stay");
    assert_eq!(app.get("/account/consents", &t.token).await.1, c);

    let (status, err) = put(json!({"telemetry": true})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_json")));
}

#[tokio::test]
async fn repeated_wrong_passwords_lock_the_account_with_retry_after() {
    let app = spawn_app_with(|s| {
        s.login.max_failures_per_account = 3;
        s.login.max_failures_per_ip = 50;
    })
    .await;
    let t = app.tenant("acme").await;
    let bystander = app.tenant("bystander").await;
    for _ in 0..3 {
        assert_eq!(app.login(&t.email, "wrong-password").await.0, StatusCode::UNAUTHORIZED);
    }
    let res = app
        .http
        .post(app.api("/sessions"))
        .json(&json!({"email": t.email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "even the right password waits");
    let retry_after: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["code"], "too_many_attempts");
    assert_eq!(err["details"]["retry_after_secs"].as_u64(), Some(retry_after));
    // From another address too: the limit is the account's.
    let (status, _) = app
        .request_with(
            &client_from("127.0.0.2"),
            Method::POST,
            "/sessions",
            None,
            Some(json!({"email": t.email, "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Other accounts from the same address are not affected.
    assert_eq!(app.login(&bystander.email, PASSWORD).await.0, StatusCode::OK);

    let (_, doc) = export(&app, &t.token).await;
    let outcomes: Vec<&str> =
        doc["login_history"].as_array().unwrap().iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["success", "bad_password", "bad_password", "bad_password", "rate_limited"]);
}

#[tokio::test]
async fn one_address_failing_against_many_accounts_is_limited() {
    let app = spawn_app_with(|s| {
        s.login.max_failures_per_ip = 4;
        s.login.max_failures_per_account = 50;
    })
    .await;
    let t = app.tenant("acme").await;
    for i in 0..4 {
        assert_eq!(app.login(&format!("nobody{i}@acme.example"), "guess-guess").await.0, StatusCode::UNAUTHORIZED);
    }
    let (status, err) = app.login(&t.email, PASSWORD).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("too_many_attempts")));
    // Another address (of the same, known, network) still signs in.
    let (status, _) = app
        .request_with(
            &client_from("127.0.0.2"),
            Method::POST,
            "/sessions",
            None,
            Some(json!({"email": t.email, "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_sign_in_from_a_new_network_waits_for_its_one_time_code() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let abroad = client_from("127.0.1.1");
    let sign_in = json!({"email": t.email, "password": PASSWORD});
    let (status, err) = app.request_with(&abroad, Method::POST, "/sessions", None, Some(sign_in.clone())).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::FORBIDDEN, Some("new_location")), "{err}");
    assert!(err.get("token").is_none());
    let challenge = err["details"]["challenge_id"].as_str().expect("a challenge id").to_string();
    assert!(err["details"]["expires_at"].is_string());
    // A wrong password from there is just a wrong password: no challenge, no hint.
    let (status, err) = app
        .request_with(
            &abroad,
            Method::POST,
            "/sessions",
            None,
            Some(json!({"email": t.email, "password": "nope-nope"})),
        )
        .await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));

    let (status, code) = app.request(Method::GET, &format!("/login-codes/{challenge}"), None, None).await;
    assert_eq!(status, StatusCode::OK);
    let code = code["code"].as_str().unwrap().to_string();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let app = &app;
    let confirm = |client: reqwest::Client, code: String| {
        let challenge = challenge.clone();
        async move {
            app.request_with(
                &client,
                Method::POST,
                "/sessions/confirm",
                None,
                Some(json!({"challenge_id": challenge, "code": code})),
            )
            .await
        }
    };
    assert_eq!(confirm(abroad.clone(), wrong.to_string()).await.0, StatusCode::UNAUTHORIZED, "a wrong code");
    assert_eq!(
        confirm(app.http.clone(), code.clone()).await.0,
        StatusCode::UNAUTHORIZED,
        "the right code from another network than the sign-in"
    );
    let (status, session) = confirm(abroad.clone(), code.clone()).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let token = session["token"].as_str().unwrap().to_string();
    assert_eq!(app.get("/account", &token).await.0, StatusCode::OK);
    assert_eq!(confirm(abroad.clone(), code).await.0, StatusCode::UNAUTHORIZED, "a code works once");

    // The network is known now.
    let (status, _) = app.request_with(&abroad, Method::POST, "/sessions", None, Some(sign_in)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, doc) = export(app, &token).await;
    assert_eq!(doc["account"]["known_locations"], json!(["127.0.0.0/24", "127.0.1.0/24"]));
    let history: Vec<(&str, &str)> = doc["login_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["outcome"].as_str().unwrap(), e["ip"].as_str().unwrap()))
        .collect();
    assert_eq!(
        history,
        [
            ("success", "127.0.0.1"),
            ("new_location", "127.0.1.1"),
            ("bad_password", "127.0.1.1"),
            ("bad_code", "127.0.1.1"),
            ("bad_code", "127.0.0.1"),
            ("confirmed", "127.0.1.1"),
            ("success", "127.0.1.1"),
        ]
    );
}

#[tokio::test]
async fn one_time_codes_are_served_only_when_the_config_says_so() {
    let app = spawn_app_with(|s| s.api.expose_login_codes = false).await;
    let t = app.tenant("acme").await;
    let (_, err) = app
        .request_with(
            &client_from("127.0.1.1"),
            Method::POST,
            "/sessions",
            None,
            Some(json!({"email": t.email, "password": PASSWORD})),
        )
        .await;
    let challenge = err["details"]["challenge_id"].as_str().unwrap();
    let (status, _) = app.request(Method::GET, &format!("/login-codes/{challenge}"), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tokens_are_listed_without_secrets_and_can_be_revoked() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let (_, second) = app.login(&t.email, PASSWORD).await;
    let (second, second_id) =
        (second["token"].as_str().unwrap().to_string(), second["token_id"].as_str().unwrap().to_string());

    let res = app.http.get(app.api("/account/tokens")).bearer_auth(&t.token).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    assert!(!text.contains(&t.token) && !text.contains(&second), "no token secret is listed");
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    let current: Vec<bool> = list.as_array().unwrap().iter().map(|t| t["current"].as_bool().unwrap()).collect();
    assert_eq!(current, [true, false]);
    assert!(list[0]["last_used_at"].is_string() && list[0]["expires_at"].is_string(), "{list}");

    let path = format!("/account/tokens/{second_id}");
    assert_eq!(app.request(Method::DELETE, &path, Some(&t.token), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.get("/account", &second).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(app.request(Method::DELETE, &path, Some(&t.token), None).await.0, StatusCode::NOT_FOUND);

    // Signing out revokes the token it is sent with.
    assert_eq!(app.request(Method::DELETE, "/sessions/current", Some(&t.token), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.get("/account", &t.token).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tokens_expire() {
    let app = spawn_app_with(|s| s.api.token_ttl_secs = 1).await;
    let t = app.tenant("acme").await;
    assert_eq!(app.get("/account", &t.token).await.0, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(app.get("/account", &t.token).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn no_tenant_can_read_or_change_anothers_account_data() {
    let app = spawn_app().await;
    let a = app.tenant("alpha").await;
    let b = app.tenant("bravo").await;
    charge_once(&app, &a, "CP001", "TAG-A").await;
    let (_, a_tokens) = app.get("/account/tokens", &a.token).await;
    let a_token_id = a_tokens[0]["id"].as_str().unwrap().to_string();

    // Bravo cannot revoke alpha's token, whose id it somehow learnt.
    let (status, err) =
        app.request(Method::DELETE, &format!("/account/tokens/{a_token_id}"), Some(&b.token), None).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    assert_eq!(app.get("/account", &a.token).await.0, StatusCode::OK);
    // Bravo's views hold only bravo.
    let (_, b_export) = export(&app, &b.token).await;
    assert_eq!(b_export["account"]["slug"], "bravo");
    assert_eq!((b_export["stations"].clone(), b_export["id_tags"].clone()), (json!([]), json!([])));
    let (_, b_tokens) = app.get("/account/tokens", &b.token).await;
    assert!(b_tokens.as_array().unwrap().iter().all(|t| t["id"] != a_token_id.as_str()));
    // Bravo's changes change only bravo.
    app.request(Method::PUT, "/account/consents", Some(&b.token), Some(json!({"marketing_emails": true}))).await;
    assert_eq!(app.get("/account/consents", &a.token).await.1["marketing_emails"]["granted"], false);
    let (status, _) = app
        .request(
            Method::PATCH,
            "/account",
            Some(&b.token),
            Some(json!({"email": a.email, "current_password": PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "bravo cannot take alpha's address");
    // Alpha's password does not erase bravo, and bravo's erasure leaves alpha whole.
    let (status, _) =
        app.request(Method::DELETE, "/account", Some(&b.token), Some(json!({"password": "alpha-guess"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) =
        app.request(Method::DELETE, "/account", Some(&b.token), Some(json!({"password": PASSWORD}))).await;
    assert_eq!(status, StatusCode::OK);
    let (_, a_export) = export(&app, &a.token).await;
    assert_eq!(
        (a_export["stations"][0]["id"].as_str(), a_export["id_tags"][0]["id_tag"].as_str()),
        (Some("CP001"), Some("TAG-A"))
    );
    assert_eq!(a_export["transactions"].as_array().map(Vec::len), Some(1));
}

/// `count` readings a minute apart from `from` minutes past 2026-11-25T00:00Z, values `{tag}-{n}`.
fn readings(tag: &str, from: u32, count: u32) -> Vec<Value> {
    (from..from + count)
        .map(|n| {
            let at = format!("2026-11-{:02}T{:02}:{:02}:00Z", 25 + n / 1440, n / 60 % 24, n % 60);
            json!({"timestamp": at, "sampledValue": [{"value": format!("{tag}-{n}"), "unit": "Wh"}]})
        })
        .collect()
}

/// The values of the first sampled value of each reading, in the order given.
fn values(readings: &Value) -> Vec<String> {
    readings
        .as_array()
        .expect("readings")
        .iter()
        .map(|r| r["sampled_value"][0]["value"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_export_streams_every_record_of_a_large_account_once_across_store_pages() {
    let app = spawn_app_with(|s| {
        s.limits.station_messages_per_sec = 100_000.0;
        s.limits.station_message_burst = 100_000;
        // Each export below gives its place back when its body ends.
        s.limits.exports_per_tenant = 1;
    })
    .await;
    let t = app.tenant("acme").await;
    let other = app.tenant("other").await;
    charge_once(&app, &other, "CP1", "OTHER-TAG").await;
    app.request(Method::PUT, "/id-tags/TAG-1", Some(&t.token), Some(json!({"status": "Accepted"}))).await;
    let mut cp1 = app.connected_station(&t, "CP1").await;
    let mut cp2 = app.connected_station(&t, "CP2").await;
    cp1.boot().await;
    cp2.boot().await;

    // More than a store page (1,000) of transactions, of events, of one transaction's readings and
    // of readings outside a transaction; the last of a station deleted since.
    let charge = async {
        let mut ids = Vec::new();
        for n in 0..1005u32 {
            let at = format!("2026-11-01T{:02}:{:02}:00Z", n / 60 % 24, n % 60);
            let start = json!({"connectorId": 1 + n % 4, "idTag": "TAG-1", "meterStart": n, "timestamp": at});
            ids.push(cp1.ok("StartTransaction", start).await["transactionId"].as_i64().unwrap());
        }
        let long = ids[10];
        for from in [0, 400, 800] {
            let readings = readings("long", from, 400);
            cp1.ok("MeterValues", json!({"connectorId": 3, "transactionId": long, "meterValue": readings})).await;
        }
        cp1.ok(
            "MeterValues",
            json!({"connectorId": 1, "transactionId": ids[1004], "meterValue": readings("last", 0, 1)}),
        )
        .await;
        cp1.ok("MeterValues", json!({"connectorId": 1, "meterValue": readings("cp1-loose", 0, 2)})).await;
        for n in 0..1001 {
            cp1.ok("DataTransfer", json!({"vendorId": "ACME", "data": format!("event-{n}")})).await;
        }
        ids
    };
    let loose = async {
        for from in [0, 370, 740] {
            cp2.ok("MeterValues", json!({"connectorId": 1, "meterValue": readings("cp2-loose", from, 370)})).await;
        }
    };
    let (ids, ()) = tokio::join!(charge, loose);
    drop(cp2);
    assert_eq!(app.request(Method::DELETE, "/stations/CP2", Some(&t.token), None).await.0, StatusCode::NO_CONTENT);
    app.station(&t, "CP3").await;
    for kind in ["Soft", "Hard", "Soft"] {
        let (status, body) = app.post("/stations/CP3/commands/Reset?queue=true", &t.token, json!({"type": kind})).await;
        assert!(status.is_success(), "{body}");
    }

    for _ in 0..2 {
        let res = app.http.get(app.api("/account/export")).bearer_auth(&t.token).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "application/json");
        assert!(res.headers()["content-disposition"].to_str().unwrap().starts_with("attachment"));
        assert!(res.headers().get("content-length").is_none(), "streamed, not built whole");
        let doc: Value = serde_json::from_str(&res.text().await.unwrap()).expect("one JSON document");

        let mut exported: Vec<i64> =
            doc["transactions"].as_array().unwrap().iter().map(|tx| tx["id"].as_i64().unwrap()).collect();
        assert_eq!(exported.first(), ids.last(), "newest first");
        exported.sort_unstable();
        assert_eq!(exported, ids, "every transaction once");
        let tx = |id: i64| doc["transactions"].as_array().unwrap().iter().find(|tx| tx["id"] == id).unwrap();
        let long: Vec<String> = (0..1200).map(|n| format!("long-{n}")).collect();
        assert_eq!(values(&tx(ids[10])["meter_values"]), long, "every reading once, in time order");
        assert_eq!(values(&tx(ids[1004])["meter_values"]), ["last-0"]);
        assert_eq!(tx(ids[500])["meter_values"], json!([]));

        let stations: Vec<&str> =
            doc["stations"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
        assert_eq!(stations, ["CP1", "CP3"], "the deleted station's record is gone");
        let events: Vec<String> = doc["stations"][0]["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["payload"]["data"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(events, (0..1001).map(|n| format!("event-{n}")).collect::<Vec<_>>(), "every event once, in order");
        assert_eq!(doc["stations"][1]["events"], json!([]));

        let mut loose = values(&doc["meter_values_without_transaction"]);
        loose.sort_unstable();
        let mut expected: Vec<String> = (0..1110).map(|n| format!("cp2-loose-{n}")).collect();
        expected.extend(["cp1-loose-0".to_string(), "cp1-loose-1".to_string()]);
        expected.sort_unstable();
        assert_eq!(loose, expected, "every reading outside a transaction once, the deleted station's too");
        let commands = doc["commands"].as_array().unwrap();
        assert_eq!(commands.len(), 3);
        assert!(commands.iter().all(|c| c["station_id"] == "CP3" && c["action"] == "Reset"), "{commands:?}");
        assert_eq!(doc["id_tags"].as_array().map(Vec::len), Some(1));
        assert_eq!(doc["format"], "ocpp-css.account-export.v1");
        assert!(!doc.to_string().contains("OTHER-TAG"), "another tenant's records are its own");
    }
    // The place is given back when the body ends: the transaction export, which shares the bound,
    // is served.
    assert_eq!(app.get("/transactions", &t.token).await.0, StatusCode::OK);
    let res = app.http.get(app.api("/transactions/export")).bearer_auth(&t.token).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_export_past_the_tenants_bound_of_exports_is_refused_with_429_and_counted() {
    let app = spawn_app_with(|s| s.limits.exports_per_tenant = 0).await;
    let t = app.tenant("acme").await;
    let before = series_value(&app.metrics().await, "ocpp_limit_hits_total", &[("limit", "exports")]);
    let (status, body) = export(&app, &t.token).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")), "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("exports_per_tenant")), "{body}");
    let after = series_value(&app.metrics().await, "ocpp_limit_hits_total", &[("limit", "exports")]);
    assert_eq!(after - before, 1.0);
    // Only the export: the account itself still answers.
    assert_eq!(app.get("/account", &t.token).await.0, StatusCode::OK);
}
