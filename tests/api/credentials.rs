//! A station's credentials over time: password rotation (1.6 and 2.0.1, connected and queued), the
//! station CA (SignCertificate → CertificateSigned → a profile-3 connection), profile upgrades,
//! automatic renewal, and the typed certificate commands.

use crate::events::SseClient;
use crate::helpers::{series_value, spawn_app_with, try_connect_url, StationClient, TestApp};
use crate::tls::{wss, Pki};
use rcgen::{CertificateParams, DnType, KeyPair};
use reqwest::StatusCode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use std::time::Duration;

/// Answers the next CALL the station receives with `payload`; returns the CALL.
async fn answer_next(cp: &mut StationClient, payload: Value) -> Value {
    let call = cp.recv().await;
    assert_eq!(call[0], 2, "expected a CALL from the server: {call}");
    cp.send_text(&json!([3, call[1], payload]).to_string()).await;
    call
}

/// Posts to the API while the station answers the CALLs it gets with `answers`, in order; returns
/// the API's answer and the CALLs.
async fn post_answering(
    app: &TestApp,
    token: &str,
    cp: &mut StationClient,
    path: &str,
    body: Value,
    answers: Vec<Value>,
) -> (StatusCode, Value, Vec<Value>) {
    let api = app.post(path, token, body);
    let station = async {
        let mut calls = Vec::new();
        for answer in answers {
            calls.push(answer_next(cp, answer).await);
        }
        calls
    };
    let ((status, body), calls) = tokio::join!(api, station);
    (status, body, calls)
}

async fn connect_16(app: &TestApp, id: &str, password: &str) -> Result<StationClient, String> {
    StationClient::connect(app.port, "acme", id, password).await
}

async fn connect_201(app: &TestApp, id: &str, password: &str) -> Result<StationClient, String> {
    StationClient::connect_201(app.port, "acme", id, password).await
}

async fn app_with_grace(secs: u64) -> TestApp {
    spawn_app_with(move |s| s.ocpp.password_grace_secs = secs).await
}

#[tokio::test]
async fn a_1_6_station_takes_a_new_password_and_the_old_one_stops_after_the_grace_window() {
    let app = app_with_grace(8).await;
    let t = app.tenant("acme").await;
    let old = app.station(&t, "CP1").await;
    let mut cp = connect_16(&app, "CP1", &old).await.unwrap();
    cp.boot().await;
    let mut events = SseClient::open(&app.url(""), &t.token, "types=station.password_changed", None).await;

    let accepted = json!({"status": "Accepted"});
    let (status, body, calls) =
        post_answering(&app, &t.token, &mut cp, "/stations/CP1/password", json!({}), vec![accepted]).await;
    // The window began when the answer was recorded, before this.
    let window_end = tokio::time::Instant::now() + Duration::from_secs(8);
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("accepted")), "{body}");
    let new = body["password"].as_str().expect("a generated password is shown once").to_string();
    assert_eq!(new.len(), 32);
    assert_eq!(calls[0][2], "ChangeConfiguration");
    assert_eq!(calls[0][3], json!({"key": "AuthorizationKey", "value": new}));
    let outcomes: Vec<Value> =
        [events.next().await, events.next().await].map(|e| e.data["body"]["outcome"].clone()).into();
    assert_eq!(outcomes, [json!("requested"), json!("accepted")]);
    let (_, station) = app.get("/stations/CP1", &t.token).await;
    assert!(station["credentials"]["password_changed_at"].is_string(), "{station}");
    assert!(station["credentials"]["password_change_pending"].is_null());

    // Within the grace window the station may reconnect with either password.
    drop(cp);
    let mut with_old = connect_16(&app, "CP1", &old).await.expect("the old password lasts the window");
    with_old.boot().await;
    let mut with_new = connect_16(&app, "CP1", &new).await.expect("the new password works at once");
    with_new.boot().await;
    assert!(tokio::time::Instant::now() < window_end, "the checks within the window took the whole window");
    tokio::time::sleep_until(window_end + Duration::from_millis(200)).await;
    assert_eq!(connect_16(&app, "CP1", &old).await.err().as_deref(), Some("HTTP 401"), "the window is over");
    assert_eq!(connect_16(&app, "CP1", &new).await.map(|_| ()), Ok(()));
}

#[tokio::test]
async fn a_2_0_1_station_that_rejects_the_new_password_keeps_its_old_one() {
    let app = app_with_grace(60).await;
    let t = app.tenant("acme").await;
    let old = app.station(&t, "CP2").await;
    let mut cp = connect_201(&app, "CP2", &old).await.unwrap();
    cp.boot_201().await;

    let chosen = "chosen-password-0123456789";
    let result = |status: &str| {
        json!({"setVariableResult": [{
            "attributeStatus": status,
            "component": {"name": "SecurityCtrlr"},
            "variable": {"name": "BasicAuthPassword"},
        }]})
    };
    let (status, body, calls) = post_answering(
        &app,
        &t.token,
        &mut cp,
        "/stations/CP2/password",
        json!({"password": chosen}),
        vec![result("Rejected")],
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("rejected")), "{body}");
    assert!(body["password"].is_null(), "a chosen password is not echoed");
    let data = &calls[0][3]["setVariableData"][0];
    assert_eq!((calls[0][2].as_str(), data["attributeValue"].as_str()), (Some("SetVariables"), Some(chosen)));
    assert_eq!(data["component"]["name"], "SecurityCtrlr");
    assert_eq!(connect_201(&app, "CP2", chosen).await.err().as_deref(), Some("HTTP 401"), "refused: not taken");
    let (_, station) = app.get("/stations/CP2", &t.token).await;
    assert!(station["credentials"]["password_changed_at"].is_null());

    // The same variable set through the generic command route is recognised too.
    let (status, body, _) = post_answering(
        &app,
        &t.token,
        &mut cp,
        "/stations/CP2/commands/SetVariables",
        json!({"setVariableData": [{
            "attributeValue": chosen,
            "component": {"name": "SecurityCtrlr"},
            "variable": {"name": "BasicAuthPassword"},
        }]}),
        vec![result("Accepted")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut again = connect_201(&app, "CP2", chosen).await.expect("the accepted password lets the station in");
    again.boot_201().await;
    let mut with_old = connect_201(&app, "CP2", &old).await.expect("the old one within the window");
    with_old.boot_201().await;

    let (status, err) = app.post("/stations/CP2/password", &t.token, json!({"password": "short"})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_field")));
}

#[tokio::test]
async fn an_offline_station_is_told_its_new_password_when_it_returns() {
    let app = app_with_grace(60).await;
    let t = app.tenant("acme").await;
    let old = app.station(&t, "CP3").await;
    let (status, err) = app.post("/stations/CP3/password", &t.token, json!({"queue": false})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::CONFLICT, Some("station_not_connected")));
    assert!(err["message"].as_str().unwrap().contains("\"queue\": false"), "names this route's option: {err}");
    let (status, err) = app.post("/stations/CP3/password", &t.token, json!({"expires_in": 0})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_query")));
    let (_, station) = app.get("/stations/CP3", &t.token).await;
    assert!(station["credentials"]["password_change_pending"].is_null(), "nothing pending: {station}");
    let (status, body) = app.post("/stations/CP3/password", &t.token, json!({})).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::ACCEPTED, Some("queued")), "{body}");
    let new = body["password"].as_str().unwrap().to_string();
    let command_id = body["command_id"].as_str().unwrap().to_string();

    let mut cp = connect_16(&app, "CP3", &old).await.unwrap();
    cp.boot().await;
    let call = answer_next(&mut cp, json!({"status": "Accepted"})).await;
    assert_eq!(call[3], json!({"key": "AuthorizationKey", "value": new}));
    let record = wait_for_command(&app, &t.token, "CP3", &command_id, "answered").await;
    assert_eq!(record["payload"]["value"], "***", "the password is not shown again: {record}");
    let (_, station) = app.get("/stations/CP3", &t.token).await;
    assert!(station["credentials"]["password_changed_at"].is_string(), "{station}");
}

#[tokio::test]
async fn a_station_that_connects_with_its_pending_password_makes_it_current() {
    let app = app_with_grace(1).await;
    let t = app.tenant("acme").await;
    let old = app.station(&t, "CP4").await;
    let mut cp = connect_16(&app, "CP4", &old).await.unwrap();
    cp.boot().await;
    // The station takes the password but its answer never comes: the API times out, and the
    // change stays pending.
    let api = app.post("/stations/CP4/password", &t.token, json!({}));
    let ((status, body), call) = tokio::join!(api, cp.recv());
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    let new = call[3]["value"].as_str().unwrap().to_string();
    let (_, station) = app.get("/stations/CP4", &t.token).await;
    assert!(station["credentials"]["password_change_pending"]["change_id"].is_string(), "{station}");
    drop(cp);

    let mut cp = connect_16(&app, "CP4", &new).await.expect("the pending password lets the station in");
    cp.boot().await;
    let (_, station) = app.get("/stations/CP4", &t.token).await;
    assert!(station["credentials"]["password_change_pending"].is_null(), "{station}");
    assert!(station["credentials"]["password_changed_at"].is_string());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(connect_16(&app, "CP4", &old).await.err().as_deref(), Some("HTTP 401"));
}

async fn wait_for_command(app: &TestApp, token: &str, station: &str, id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, record) = app.get(&format!("/stations/{station}/command-records/{id}"), token).await;
        if record["status"] == status || tokio::time::Instant::now() > deadline {
            assert_eq!(record["status"], status, "{record}");
            return record;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A CSR for `cn`/`o` and its key.
fn csr(cn: &str, o: &str) -> (String, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.distinguished_name.push(DnType::OrganizationName, o);
    (params.serialize_request(&key).unwrap().pem().unwrap(), key)
}

fn chain_of(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap()
}

fn signings(metrics: &str, outcome: &str) -> f64 {
    series_value(metrics, "ocpp_certificate_signings_total", &[("outcome", outcome)])
}

#[tokio::test]
async fn a_station_gets_its_certificate_from_the_station_ca_and_reconnects_on_profile_3() {
    let pki = Pki::new();
    let app = pki.spawn_with_ca(|_| {}).await;
    let t = app.tenant("acme").await;
    let (status, created) = app.post("/stations", &t.token, json!({"id": "CP5", "security_profile": 2})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let password = created["password"].as_str().unwrap().to_string();
    let url = wss(&app, "acme", "CP5");
    let mut cp =
        try_connect_url(&url, Some(("CP5", &password)), Some("ocpp1.6"), Some(pki.client_config(None))).await.unwrap();
    cp.boot().await;
    let before = app.metrics().await;

    // A CSR naming another station is refused, and nothing is sent.
    let (wrong, _) = csr("CP6", "acme");
    assert_eq!(cp.ok("SignCertificate", json!({"csr": wrong})).await, json!({"status": "Rejected"}));
    let (other_tenant, _) = csr("CP5", "globex");
    assert_eq!(cp.ok("SignCertificate", json!({"csr": other_tenant})).await, json!({"status": "Rejected"}));
    let garbage = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----";
    assert_eq!(cp.ok("SignCertificate", json!({"csr": garbage})).await, json!({"status": "Rejected"}));
    assert!(cp.ok("Heartbeat", json!({})).await["currentTime"].is_string(), "no CALL came in between");
    let after = app.metrics().await;
    assert_eq!(signings(&after, "subject_mismatch") - signings(&before, "subject_mismatch"), 2.0);
    assert!(signings(&after, "unreadable") > signings(&before, "unreadable"));

    // The right subject: Accepted, then CertificateSigned with the chain.
    let (request, key) = csr("CP5", "acme");
    assert_eq!(cp.ok("SignCertificate", json!({"csr": request})).await, json!({"status": "Accepted"}));
    let call = answer_next(&mut cp, json!({"status": "Accepted"})).await;
    assert_eq!(call[2], "CertificateSigned");
    let chain = chain_of(call[3]["certificateChain"].as_str().unwrap());
    assert_eq!(chain.len(), 2, "the station's certificate and the CA");
    let identity = ocpp_css::tls::client_identity(&chain[0]).unwrap();
    assert_eq!((identity.common_name.as_deref(), identity.organization.as_deref()), (Some("CP5"), Some("acme")));
    let station =
        wait_for_station(&app, &t.token, "CP5", |s| s["credentials"]["certificates"][0]["status"] == "installed").await;
    assert!(station["credentials"]["certificate_expires_at"].is_string(), "{station}");

    // The operator moves it up to profile 3 the OCPP way; it reconnects with its new certificate.
    let (status, body, calls) = post_answering(
        &app,
        &t.token,
        &mut cp,
        "/stations/CP5/security-profile",
        json!({"security_profile": 3}),
        vec![json!({"status": "Accepted"})],
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("accepted")), "{body}");
    assert_eq!(calls[0][3], json!({"key": "SecurityProfile", "value": "3"}));
    assert_eq!(body["security_profile"], 3);
    drop(cp);
    let with_password =
        try_connect_url(&url, Some(("CP5", &password)), Some("ocpp1.6"), Some(pki.client_config(None))).await;
    assert_eq!(with_password.err().as_deref(), Some("HTTP 401"), "profile 3 takes a certificate, not a password");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let tls = pki.client_config(Some((chain, key)));
    let mut cp =
        try_connect_url(&url, None, Some("ocpp1.6"), Some(tls)).await.expect("the issued certificate lets it in");
    assert_eq!(cp.boot().await["status"], "Accepted");

    // Renewal on demand: the station is asked for a new CSR.
    let (status, body, calls) = post_answering(
        &app,
        &t.token,
        &mut cp,
        "/stations/CP5/certificate/renew",
        json!({}),
        vec![json!({"status": "Accepted"})],
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("accepted")), "{body}");
    assert_eq!(
        (calls[0][2].as_str(), &calls[0][3]),
        (Some("ExtendedTriggerMessage"), &json!({"requestedMessage": "SignChargePointCertificate"}))
    );
    let (status, err) = app.post("/stations/CP5/security-profile", &t.token, json!({"security_profile": 2})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_field")), "no downgrade: {err}");
}

async fn wait_for_station(app: &TestApp, token: &str, id: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, station) = app.get(&format!("/stations/{id}"), token).await;
        if ok(&station) {
            return station;
        }
        assert!(tokio::time::Instant::now() < deadline, "station never got there: {station}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_2_0_1_station_is_moved_to_tls_and_gets_its_certificate() {
    let pki = Pki::new();
    let app = pki.spawn_with_ca(|_| {}).await;
    let t = app.tenant("acme").await;
    let password = app.station(&t, "CP7").await;
    let mut cp = connect_201(&app, "CP7", &password).await.unwrap();
    cp.boot_201().await;
    let mut events = SseClient::open(&app.url(""), &t.token, "types=station.security_profile_changed", None).await;

    // First the CSMS root, so that the station can trust the TLS listener.
    let (status, body, calls) = post_answering(
        &app,
        &t.token,
        &mut cp,
        "/stations/CP7/certificates",
        json!({"type": "csms_root"}),
        vec![json!({"status": "Accepted"})],
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("accepted")), "{body}");
    assert_eq!(calls[0][2], "InstallCertificate");
    assert_eq!(calls[0][3]["certificateType"], "CSMSRootCertificate");
    let served = std::fs::read_to_string(pki.path("server.pem")).unwrap();
    let last = served.rfind("-----BEGIN CERTIFICATE-----").unwrap();
    assert_eq!(calls[0][3]["certificate"].as_str(), Some(&served[last..]), "the last certificate of tls.cert_path");

    let accepted = json!({"status": "Accepted"});
    let set = json!({"setVariableResult": [{"attributeStatus": "Accepted", "component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "NetworkConfigurationPriority"}}]});
    let (status, body, calls) = post_answering(
        &app,
        &t.token,
        &mut cp,
        "/stations/CP7/security-profile",
        json!({"security_profile": 2, "configuration_slot": 2}),
        vec![accepted.clone(), set, accepted.clone()],
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("accepted")), "{body}");
    let actions: Vec<&str> = calls.iter().map(|c| c[2].as_str().unwrap()).collect();
    assert_eq!(actions, ["SetNetworkProfile", "SetVariables", "Reset"]);
    let data = &calls[0][3]["connectionData"];
    assert_eq!(data["ocppCsmsUrl"], format!("wss://127.0.0.1:{}/ocpp/acme", app.tls_port.unwrap()));
    assert_eq!((data["securityProfile"].as_u64(), calls[0][3]["configurationSlot"].as_u64()), (Some(2), Some(2)));
    assert_eq!(calls[1][3]["setVariableData"][0]["attributeValue"], "2");
    let outcomes: Vec<Value> =
        [events.next().await, events.next().await].map(|e| e.data["body"]["outcome"].clone()).into();
    assert_eq!(outcomes, [json!("requested"), json!("accepted")]);
    drop(cp);
    assert_eq!(connect_201(&app, "CP7", &password).await.err().as_deref(), Some("HTTP 401"), "TLS from now on");

    let url = wss(&app, "acme", "CP7");
    let mut cp = try_connect_url(&url, Some(("CP7", &password)), Some("ocpp2.0.1"), Some(pki.client_config(None)))
        .await
        .unwrap();
    cp.boot_201().await;
    let (request, _) = csr("CP7", "acme");
    let answer =
        cp.ok("SignCertificate", json!({"csr": request, "certificateType": "ChargingStationCertificate"})).await;
    assert_eq!(answer["status"], "Accepted");
    let call = answer_next(&mut cp, json!({"status": "Accepted"})).await;
    assert_eq!(
        (call[2].as_str(), call[3]["certificateType"].as_str()),
        (Some("CertificateSigned"), Some("ChargingStationCertificate"))
    );

    // What the station has installed, and removing one.
    let hash =
        json!({"hashAlgorithm": "SHA256", "issuerNameHash": "aa11", "issuerKeyHash": "bb22", "serialNumber": "0c"});
    let listed = json!({"status": "Accepted", "certificateHashDataChain": [{"certificateType": "CSMSRootCertificate", "certificateHashData": hash}]});
    let api = app.get("/stations/CP7/certificates?type=csms_root", &t.token);
    let ((status, body), call) = tokio::join!(api, answer_next(&mut cp, listed));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(call[3], json!({"certificateType": ["CSMSRootCertificate"]}));
    assert_eq!(
        body["certificates"],
        json!([{"type": "csms_root", "hash_algorithm": "SHA256", "issuer_name_hash": "aa11", "issuer_key_hash": "bb22", "serial_number": "0c"}])
    );
    let api = app.request(
        reqwest::Method::DELETE,
        "/stations/CP7/certificates/0c?hash_algorithm=SHA256&issuer_name_hash=aa11&issuer_key_hash=bb22",
        Some(&t.token),
        None,
    );
    let ((status, body), call) = tokio::join!(api, answer_next(&mut cp, json!({"status": "Accepted"})));
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("accepted")), "{body}");
    assert_eq!((call[2].as_str(), &call[3]["certificateHashData"]), (Some("DeleteCertificate"), &hash));
}

#[tokio::test]
async fn a_certificate_near_its_expiry_is_renewed_when_the_station_connects() {
    let pki = Pki::new();
    // Certificates live 30 days and are renewed 60 days ahead: due as soon as installed.
    let app = pki
        .spawn_with_ca(|s| {
            s.station_ca.validity_days = 30;
            s.station_ca.renew_before_days = 60;
        })
        .await;
    let t = app.tenant("acme").await;
    let password = app.station(&t, "CP8").await;
    let mut cp = connect_16(&app, "CP8", &password).await.unwrap();
    cp.boot().await;
    let (request, _) = csr("CP8", "acme");
    assert_eq!(cp.ok("SignCertificate", json!({"csr": request})).await["status"], "Accepted");
    answer_next(&mut cp, json!({"status": "Accepted"})).await;
    wait_for_station(&app, &t.token, "CP8", |s| s["credentials"]["certificates"][0]["status"] == "installed").await;
    drop(cp);

    let mut cp = connect_16(&app, "CP8", &password).await.unwrap();
    cp.boot().await;
    let call = answer_next(&mut cp, json!({"status": "Accepted"})).await;
    assert_eq!(
        (call[2].as_str(), &call[3]),
        (Some("ExtendedTriggerMessage"), &json!({"requestedMessage": "SignChargePointCertificate"}))
    );
    let metrics = app.metrics().await;
    assert!(series_value(&metrics, "ocpp_station_certificates_expiring", &[("within", "renewal_window")]) >= 1.0);
    assert!(series_value(&metrics, "ocpp_certificate_renewals_total", &[("result", "accepted")]) >= 1.0);
}

#[tokio::test]
async fn without_a_station_ca_csrs_are_refused_and_renewal_is_a_conflict() {
    let app = app_with_grace(60).await;
    let t = app.tenant("acme").await;
    let password = app.station(&t, "CP9").await;
    let mut cp = connect_16(&app, "CP9", &password).await.unwrap();
    cp.boot().await;
    let (request, _) = csr("CP9", "acme");
    assert_eq!(cp.ok("SignCertificate", json!({"csr": request})).await, json!({"status": "Rejected"}));
    let (status, err) = app.post("/stations/CP9/certificate/renew", &t.token, json!({})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")), "{err}");
}
