use crate::helpers::spawn_app;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn an_account_signs_up_signs_in_and_sees_itself() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let (status, me) = app.get("/account", &t.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((me["slug"].as_str(), me["email"].as_str()), (Some("acme"), Some("ops@acme.example")));
    assert!(me.get("password_hash").is_none(), "no secret leaves the API: {me}");
}

#[tokio::test]
async fn email_and_slug_are_unique() {
    let app = spawn_app().await;
    app.tenant("acme").await;
    let body = |email: &str, slug: &str| json!({"email": email, "password": "long-enough", "name": "N", "slug": slug});
    let (status, err) = app.request(Method::POST, "/accounts", None, Some(body("OPS@acme.example", "other"))).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    let (status, _) = app.request(Method::POST, "/accounts", None, Some(body("new@acme.example", "acme"))).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn bad_sign_up_input_is_refused_with_a_stable_error() {
    let app = spawn_app().await;
    let cases = [
        json!({"email": "not-an-email", "password": "long-enough", "name": "N", "slug": "ok"}),
        json!({"email": "a@b.example", "password": "short", "name": "N", "slug": "ok"}),
        json!({"email": "a@b.example", "password": "long-enough", "name": "N", "slug": "Bad Slug"}),
        json!({"email": "a@b.example", "password": "long-enough", "name": "", "slug": "ok"}),
    ];
    for body in cases {
        let (status, err) = app.request(Method::POST, "/accounts", None, Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(err["code"], "invalid_field", "{err}");
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let res = app
        .http
        .post(app.api("/accounts"))
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let err: serde_json::Value = res.json().await.unwrap();
    assert_eq!(err["code"], "invalid_json");
}

#[tokio::test]
async fn wrong_password_and_missing_or_forged_tokens_are_unauthorized() {
    let app = spawn_app().await;
    app.tenant("acme").await;
    let (status, err) = app
        .request(Method::POST, "/sessions", None, Some(json!({"email": "ops@acme.example", "password": "wrong-pass"})))
        .await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    let (status, err) = app.request(Method::GET, "/stations", None, None).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    let (status, _) = app.get("/stations", "forged-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn unknown_routes_answer_json_404_and_health_endpoints_answer() {
    let app = spawn_app().await;
    let res = app.http.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.json::<serde_json::Value>().await.unwrap()["code"], "not_found");
    for path in ["/healthz", "/readyz"] {
        assert_eq!(app.http.get(app.url(path)).send().await.unwrap().status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app.http.get(app.api("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{doc}");
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/api/v1/accounts", "post"),
        ("/api/v1/sessions", "post"),
        ("/api/v1/sessions/confirm", "post"),
        ("/api/v1/sessions/current", "delete"),
        ("/api/v1/account", "get"),
        ("/api/v1/account", "patch"),
        ("/api/v1/account", "delete"),
        ("/api/v1/account/export", "get"),
        ("/api/v1/account/consents", "get"),
        ("/api/v1/account/consents", "put"),
        ("/api/v1/account/retention", "get"),
        ("/api/v1/account/retention", "put"),
        ("/api/v1/account/tokens", "get"),
        ("/api/v1/account/tokens/{token_id}", "delete"),
        ("/api/v1/login-codes/{challenge_id}", "get"),
        ("/api/v1/stations", "post"),
        ("/api/v1/stations", "get"),
        ("/api/v1/stations/bulk", "post"),
        ("/api/v1/stations/{id}", "get"),
        ("/api/v1/stations/{id}", "patch"),
        ("/api/v1/stations/{id}", "delete"),
        ("/api/v1/stations/{id}/variables", "get"),
        ("/api/v1/stations/{id}/events", "get"),
        ("/api/v1/stations/{id}/commands/{action}", "post"),
        ("/api/v1/stations/{id}/command-records/{command_id}", "get"),
        ("/api/v1/stations/{id}/password", "post"),
        ("/api/v1/stations/{id}/security-profile", "post"),
        ("/api/v1/stations/{id}/certificate/renew", "post"),
        ("/api/v1/stations/{id}/certificate-signed", "post"),
        ("/api/v1/stations/{id}/certificates", "get"),
        ("/api/v1/stations/{id}/certificates", "post"),
        ("/api/v1/stations/{id}/certificates/{serial_number}", "delete"),
        ("/api/v1/id-tags", "get"),
        ("/api/v1/id-tags/{id_tag}", "put"),
        ("/api/v1/id-tags/{id_tag}", "get"),
        ("/api/v1/id-tags/{id_tag}", "delete"),
        ("/api/v1/transactions", "get"),
        ("/api/v1/transactions/export", "get"),
        ("/api/v1/transactions/{id}", "get"),
        ("/api/v1/transactions/{id}/meter-values", "get"),
        ("/api/v1/events", "get"),
        ("/api/v1/webhooks", "post"),
        ("/api/v1/webhooks", "get"),
        ("/api/v1/webhooks/{id}", "get"),
        ("/api/v1/webhooks/{id}", "patch"),
        ("/api/v1/webhooks/{id}", "delete"),
        ("/api/v1/webhooks/{id}/deliveries", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "OpenAPI lacks {method} {path}");
    }
}
