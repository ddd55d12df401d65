//! OCPP security profiles 2 (TLS + Basic auth) and 3 (mutual TLS), with certificates made here.

use crate::helpers::{series_value, spawn_app, spawn_app_with, try_connect, try_connect_url, StationClient, TestApp};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use reqwest::{Method, StatusCode};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Message;

pub struct Ca {
    pub cert: Certificate,
    pub key: KeyPair,
}

/// What a CA certificate named `name` says of itself, root or intermediate.
fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        Ca { cert: ca_params(name).self_signed(&key).unwrap(), key }
    }

    /// An intermediate CA under this one.
    fn intermediate(&self, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        Ca { cert: ca_params(name).signed_by(&key, &self.cert, &self.key).unwrap(), key }
    }

    /// A leaf certificate signed by this CA, with a new P-256 (ECDSA) key.
    fn issue(
        &self,
        sans: &[&str],
        cn: &str,
        org: Option<&str>,
        usage: ExtendedKeyUsagePurpose,
    ) -> (Certificate, KeyPair) {
        self.issue_for(KeyPair::generate().unwrap(), sans, cn, org, usage)
    }

    /// A leaf certificate signed by this CA, for `key`.
    fn issue_for(
        &self,
        key: KeyPair,
        sans: &[&str],
        cn: &str,
        org: Option<&str>,
        usage: ExtendedKeyUsagePurpose,
    ) -> (Certificate, KeyPair) {
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(o) = org {
            params.distinguished_name.push(DnType::OrganizationName, o);
        }
        params.extended_key_usages = vec![usage];
        (params.signed_by(&key, &self.cert, &self.key).unwrap(), key)
    }

    /// A station's client certificate chain and key, for rustls.
    fn client(&self, cn: &str, org: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let (cert, key) = self.issue(&[], cn, Some(org), ExtendedKeyUsagePurpose::ClientAuth);
        (vec![cert.der().clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
    }
}

/// A server CA and certificate for 127.0.0.1 and localhost, and a separate CA for station certificates,
/// written to a temp dir.
pub struct Pki {
    dir: tempfile::TempDir,
    pub server_ca: Ca,
    pub station_ca: Ca,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let server_ca = Ca::new("ocpp-css test server CA");
        let station_ca = Ca::new("ocpp-css test station CA");
        // Each server certificate comes from its own intermediate, sent in its chain (clients trust the
        // root only), so a listener that mixed up the two chains would fail verification.
        let intermediate = server_ca.intermediate("ocpp-css test ECDSA intermediate");
        let (server, server_key) =
            intermediate.issue(&["127.0.0.1", "localhost"], "ocpp-css", None, ExtendedKeyUsagePurpose::ServerAuth);
        std::fs::write(dir.path().join("server.pem"), server.pem() + &intermediate.cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("stations-ca.pem"), station_ca.cert.pem()).unwrap();
        std::fs::write(dir.path().join("stations-ca.key"), station_ca.key.serialize_pem()).unwrap();
        Pki { dir, server_ca, station_ca }
    }

    pub fn path(&self, file: &str) -> std::path::PathBuf {
        self.dir.path().join(file)
    }

    /// Adds an RSA server certificate (server-rsa.pem, server-rsa.key; subject CN ocpp-css-rsa) beside
    /// the ECDSA one (CN ocpp-css). rcgen cannot make RSA keys: the openssl binary does.
    fn with_rsa(self) -> Pki {
        let key_path = self.path("server-rsa.key");
        let status = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
            .arg(&key_path)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the openssl binary runs (scripts/test installs it)");
        assert!(status.success(), "openssl genpkey failed");
        let key = KeyPair::from_pem(&std::fs::read_to_string(&key_path).unwrap()).unwrap();
        let intermediate = self.server_ca.intermediate("ocpp-css test RSA intermediate");
        let (server, _) = intermediate.issue_for(
            key,
            &["127.0.0.1", "localhost"],
            "ocpp-css-rsa",
            None,
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        std::fs::write(self.path("server-rsa.pem"), server.pem() + &intermediate.cert.pem()).unwrap();
        self
    }

    /// The `[tls]` settings of this PKI: the ECDSA certificate, the station CA, any port.
    fn settings(&self, s: &mut ocpp_css::config::Settings) {
        s.tls.enabled = true;
        s.tls.port = 0;
        s.tls.cert_path = self.path("server.pem");
        s.tls.key_path = self.path("server.key");
        s.tls.client_ca_path = self.path("stations-ca.pem");
    }

    async fn spawn(&self) -> TestApp {
        self.spawn_with(|_| {}).await
    }

    /// The app with this PKI's `[tls]` settings, then `tweak`.
    async fn spawn_with(&self, tweak: impl FnOnce(&mut ocpp_css::config::Settings) + Send + 'static) -> TestApp {
        let mut tls = ocpp_css::config::Settings::load(None).expect("default config loads");
        self.settings(&mut tls);
        let tls = tls.tls;
        spawn_app_with(move |s| {
            s.tls = tls;
            tweak(s);
        })
        .await
    }

    /// Like [`Pki::spawn_with`], with the station CA signing station certificates (`[station_ca]`).
    pub async fn spawn_with_ca(&self, tweak: impl FnOnce(&mut ocpp_css::config::Settings) + Send + 'static) -> TestApp {
        let (ca, ca_key) = (self.path("stations-ca.pem"), self.path("stations-ca.key"));
        self.spawn_with(move |s| {
            s.station_ca.cert_path = ca;
            s.station_ca.key_path = ca_key;
            tweak(s);
        })
        .await
    }

    /// Both server certificates, ECDSA first.
    fn both(&self) -> impl FnOnce(&mut ocpp_css::config::Settings) + Send + 'static {
        let (cert, key) = (self.path("server-rsa.pem"), self.path("server-rsa.key"));
        move |s| {
            s.tls.alt_cert_path = cert;
            s.tls.alt_key_path = key;
        }
    }

    /// A client trusting the server CA, presenting `client` when given.
    pub fn client_config(
        &self,
        client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.server_ca.cert.der().clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(ocpp_css::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        Arc::new(match client {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
            None => builder.with_no_client_auth(),
        })
    }
}

/// Refused station connections so far, for this reason (every test app of the process counts).
fn failures(metrics: &str, reason: &str) -> f64 {
    series_value(metrics, "ocpp_auth_failures_total", &[("reason", reason)])
}

pub fn wss(app: &TestApp, tenant: &str, station: &str) -> String {
    format!("wss://127.0.0.1:{}/ocpp/{tenant}/{station}", app.tls_port.expect("TLS enabled"))
}

async fn provision(app: &TestApp, token: &str, id: &str, profile: u8) -> serde_json::Value {
    let (status, body) = app.post("/stations", token, json!({"id": id, "security_profile": profile})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

#[tokio::test]
async fn a_profile_2_station_connects_over_tls_with_its_password_and_never_over_plain_websocket() {
    let pki = Pki::new();
    let app = pki.spawn().await;
    let t = app.tenant("acme").await;
    let created = provision(&app, &t.token, "CP2", 2).await;
    assert_eq!(created["security_profile"], 2);
    let url = created["ocpp_url"].as_str().unwrap();
    assert_eq!(url, wss(&app, "acme", "CP2"), "profile 2 stations are handed the TLS listener's URL");
    let password = created["password"].as_str().unwrap();
    let tls = pki.client_config(None);
    let before = app.metrics().await;

    assert_eq!(StationClient::connect(app.port, "acme", "CP2", password).await.err().as_deref(), Some("HTTP 401"));
    let wrong = try_connect_url(url, Some(("CP2", "wrong-password-1234")), Some("ocpp1.6"), Some(tls.clone())).await;
    assert_eq!(wrong.err().as_deref(), Some("HTTP 401"));
    let no_password = try_connect_url(url, None, Some("ocpp1.6"), Some(tls.clone())).await;
    assert_eq!(no_password.err().as_deref(), Some("HTTP 401"));
    let mut cp = try_connect_url(url, Some(("CP2", password)), Some("ocpp1.6"), Some(tls.clone())).await.unwrap();
    assert_eq!(cp.boot().await["status"], "Accepted");
    let (_, station) = app.get("/stations/CP2", &t.token).await;
    assert_eq!((station["connected"].as_bool(), station["security_profile"].as_u64()), (Some(true), Some(2)));

    // A profile 1 station may use either listener.
    let basic = app.station(&t, "CP1").await;
    let mut over_tls =
        try_connect_url(&wss(&app, "acme", "CP1"), Some(("CP1", &basic)), Some("ocpp1.6"), Some(tls.clone()))
            .await
            .unwrap();
    assert_eq!(over_tls.boot().await["status"], "Accepted");
    assert!(failures(&app.metrics().await, "tls_required") > failures(&before, "tls_required"));
}

#[tokio::test]
async fn raising_a_stations_profile_closes_its_plain_session_and_keeps_it_off_plain_websocket() {
    let pki = Pki::new();
    let app = pki.spawn().await;
    let t = app.tenant("acme").await;
    let password = app.station(&t, "CP1").await;
    let mut plain = StationClient::connect(app.port, "acme", "CP1", &password).await.unwrap();
    plain.boot().await;
    let (status, station) =
        app.request(Method::PATCH, "/stations/CP1", Some(&t.token), Some(json!({"security_profile": 2}))).await;
    assert_eq!((status, station["security_profile"].as_u64()), (StatusCode::OK, Some(2)), "{station}");
    assert!(station["ocpp_url"].as_str().unwrap().starts_with("wss://"));
    assert!(matches!(plain.recv_message().await, Some(Message::Close(_)) | None));
    assert_eq!(StationClient::connect(app.port, "acme", "CP1", &password).await.err().as_deref(), Some("HTTP 401"));
    let url = wss(&app, "acme", "CP1");
    let mut cp =
        try_connect_url(&url, Some(("CP1", &password)), Some("ocpp1.6"), Some(pki.client_config(None))).await.unwrap();
    assert_eq!(cp.boot().await["status"], "Accepted");

    let (status, err) =
        app.request(Method::PATCH, "/stations/CP1", Some(&t.token), Some(json!({"security_profile": 4}))).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_json")));
}

#[tokio::test]
async fn a_profile_3_station_connects_with_its_client_certificate_and_nothing_else() {
    let pki = Pki::new();
    let app = pki.spawn().await;
    let t = app.tenant("acme").await;
    let other = app.tenant("other").await;
    let created = provision(&app, &t.token, "CP3", 3).await;
    provision(&app, &other.token, "CP3", 3).await;
    let password = created["password"].as_str().unwrap().to_string();
    let url = created["ocpp_url"].as_str().unwrap().to_string();
    let connect = |client| {
        let (url, config) = (url.clone(), pki.client_config(client));
        async move { try_connect_url(&url, None, Some("ocpp1.6"), Some(config)).await }
    };
    let before = app.metrics().await;

    // Its own certificate, without any password.
    let mut cp = connect(Some(pki.station_ca.client("CP3", "acme"))).await.expect("the right certificate connects");
    assert_eq!(cp.boot().await["status"], "Accepted");
    assert_eq!(cp.call("Heartbeat", json!({})).await[0], 3);

    assert_eq!(connect(None).await.err().as_deref(), Some("HTTP 401"), "no certificate");
    let password_only =
        try_connect_url(&url, Some(("CP3", &password)), Some("ocpp1.6"), Some(pki.client_config(None))).await;
    assert_eq!(password_only.err().as_deref(), Some("HTTP 401"), "a password is not a certificate");
    assert_eq!(
        connect(Some(pki.station_ca.client("CP4", "acme"))).await.err().as_deref(),
        Some("HTTP 401"),
        "another station's certificate"
    );
    assert_eq!(
        connect(Some(pki.station_ca.client("CP3", "other"))).await.err().as_deref(),
        Some("HTTP 401"),
        "another tenant's CP3"
    );
    let stranger = Ca::new("someone else's CA");
    let refused = connect(Some(stranger.client("CP3", "acme"))).await;
    assert!(refused.is_err(), "a certificate from an unknown CA fails the handshake");
    assert_eq!(
        try_connect(app.port, "acme", "CP3", Some(("CP3", &password)), Some("ocpp1.6")).await.err().as_deref(),
        Some("HTTP 401"),
        "plain WebSocket"
    );

    // The other tenant's CP3 connects with its own certificate, and alpha's is still up.
    let mut other_cp = try_connect_url(
        &wss(&app, "other", "CP3"),
        None,
        Some("ocpp1.6"),
        Some(pki.client_config(Some(pki.station_ca.client("CP3", "other")))),
    )
    .await
    .unwrap();
    assert_eq!(other_cp.boot().await["status"], "Accepted");
    assert_eq!(cp.call("Heartbeat", json!({})).await[0], 3);

    let metrics = app.metrics().await;
    for reason in ["client_cert_required", "client_cert_mismatch", "tls_required"] {
        assert!(failures(&metrics, reason) > failures(&before, reason), "{reason} not counted");
    }
}

#[tokio::test]
async fn an_erased_accounts_certificate_station_can_no_longer_connect() {
    let pki = Pki::new();
    let app = pki.spawn().await;
    let t = app.tenant("acme").await;
    provision(&app, &t.token, "CP3", 3).await;
    let config = pki.client_config(Some(pki.station_ca.client("CP3", "acme")));
    let url = wss(&app, "acme", "CP3");
    let mut cp = try_connect_url(&url, None, Some("ocpp1.6"), Some(config.clone())).await.unwrap();
    cp.boot().await;
    let (status, _) = app
        .request(Method::DELETE, "/account", Some(&t.token), Some(json!({"password": crate::helpers::PASSWORD})))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(matches!(cp.recv_message().await, Some(Message::Close(_)) | None));
    let again = try_connect_url(&url, None, Some("ocpp1.6"), Some(config)).await;
    assert_eq!(again.err().as_deref(), Some("HTTP 401"), "its still-valid certificate no longer opens anything");
}

#[tokio::test]
async fn profiles_2_and_3_are_refused_where_tls_is_not_configured() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    for profile in [2, 3] {
        let (status, err) = app.post("/stations", &t.token, json!({"id": "CP1", "security_profile": profile})).await;
        assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_field")), "{err}");
    }
    let (status, created) = app.post("/stations", &t.token, json!({"id": "CP1"})).await;
    assert_eq!((status, created["security_profile"].as_u64()), (StatusCode::CREATED, Some(1)));
}

/// What `openssl s_client` negotiated with the TLS listener, offering TLS 1.2 and only `cipher`,
/// trusting the server CA only: the suite and the server certificate's subject, or None when the
/// handshake failed.
async fn s_client(pki: &Pki, port: u16, cipher: &str) -> Option<(String, String)> {
    let ca = pki.path("server-ca.pem");
    std::fs::write(&ca, pki.server_ca.cert.pem()).unwrap();
    let cipher = cipher.to_string();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("openssl")
            .args(["s_client", "-brief", "-verify_return_error", "-tls1_2", "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-cipher", &cipher, "-CAfile"])
            .arg(&ca)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("the openssl binary runs (scripts/test installs it)")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    let field = |name: &str| {
        text.lines().find_map(|l| l.trim().strip_prefix(name)).map(|v| v.trim_start_matches(':').trim().to_string())
    };
    match (output.status.success(), field("Ciphersuite"), field("Peer certificate")) {
        (true, Some(suite), Some(subject)) => Some((suite, subject)),
        _ => None,
    }
}

#[tokio::test]
async fn the_rustls_listener_offers_the_ocpp_ecdsa_suites_and_gives_each_client_the_certificate_it_can_use() {
    let pki = Pki::new().with_rsa();
    let app = pki.spawn_with(pki.both()).await;
    let port = app.tls_port.expect("TLS enabled");
    for suite in ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384"] {
        assert_eq!(s_client(&pki, port, suite).await, Some((suite.to_string(), "CN = ocpp-css".to_string())));
    }
    for suite in ["AES128-GCM-SHA256", "AES256-GCM-SHA384"] {
        assert_eq!(s_client(&pki, port, suite).await, None, "{suite}: rustls has no static RSA key exchange");
    }
    for suite in ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"] {
        assert_eq!(
            s_client(&pki, port, suite).await,
            Some((suite.to_string(), "CN = ocpp-css-rsa".to_string())),
            "a client offering only RSA suites gets the RSA certificate"
        );
    }
    // A rustls station (TLS 1.3, both key types offered) still connects.
    let t = app.tenant("acme").await;
    provision(&app, &t.token, "CP3", 3).await;
    let config = pki.client_config(Some(pki.station_ca.client("CP3", "acme")));
    let mut cp = try_connect_url(&wss(&app, "acme", "CP3"), None, Some("ocpp1.6"), Some(config)).await.unwrap();
    assert_eq!(cp.boot().await["status"], "Accepted");
}

#[tokio::test]
async fn a_second_certificate_must_have_the_other_key_type_and_each_key_its_certificate() {
    let pki = Pki::new().with_rsa();
    let (ca, _) = pki.server_ca.issue(&["localhost"], "another", None, ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(pki.path("other.pem"), ca.pem()).unwrap();
    let error = |tweak: &dyn Fn(&mut ocpp_css::config::TlsSettings)| {
        let mut s = ocpp_css::config::Settings::load(None).unwrap();
        pki.settings(&mut s);
        tweak(&mut s.tls);
        match ocpp_css::tls::listener(&s.tls) {
            Ok(_) => String::new(),
            Err(e) => format!("{e:#}"),
        }
    };
    let rsa = |t: &mut ocpp_css::config::TlsSettings| {
        t.alt_cert_path = pki.path("server-rsa.pem");
        t.alt_key_path = pki.path("server-rsa.key");
    };
    assert_eq!(error(&rsa), "", "one ECDSA and one RSA certificate");
    let two_ecdsa = error(&|t| {
        t.alt_cert_path = pki.path("server.pem");
        t.alt_key_path = pki.path("server.key");
    });
    assert!(two_ecdsa.contains("both hold ECDSA keys"), "{two_ecdsa}");
    let mismatch = error(&|t| {
        t.alt_cert_path = pki.path("server-rsa.pem");
        t.alt_key_path = pki.path("server.key");
    });
    assert!(mismatch.contains("does not match the key"), "{mismatch}");
    let mismatch = error(&|t| t.cert_path = pki.path("other.pem"));
    assert!(mismatch.contains("does not match the key"), "{mismatch}");
    let half = error(&|t| t.alt_cert_path = pki.path("server-rsa.pem"));
    assert!(half.contains("tls.alt_key_path is empty"), "{half}");
    #[cfg(not(feature = "openssl-tls"))]
    {
        let refused = error(&|t| t.rsa_key_exchange = true);
        assert!(refused.contains("--features openssl-tls"), "{refused}");
    }
    #[cfg(feature = "openssl-tls")]
    {
        assert_eq!(
            error(&|t| {
                rsa(t);
                t.rsa_key_exchange = true
            }),
            ""
        );
        let two_ecdsa = error(&|t| {
            t.alt_cert_path = pki.path("server.pem");
            t.alt_key_path = pki.path("server.key");
            t.rsa_key_exchange = true;
        });
        assert!(two_ecdsa.contains("both hold ECDSA keys"), "{two_ecdsa}");
    }
}

#[cfg(feature = "openssl-tls")]
#[tokio::test]
async fn with_rsa_key_exchange_the_openssl_listener_offers_all_four_ocpp_suites_and_serves_every_profile() {
    let pki = Pki::new().with_rsa();
    let both = pki.both();
    let app = pki
        .spawn_with(move |s| {
            both(s);
            s.tls.rsa_key_exchange = true;
        })
        .await;
    let port = app.tls_port.expect("TLS enabled");
    for (suite, subject) in [
        ("ECDHE-ECDSA-AES128-GCM-SHA256", "CN = ocpp-css"),
        ("ECDHE-ECDSA-AES256-GCM-SHA384", "CN = ocpp-css"),
        ("AES128-GCM-SHA256", "CN = ocpp-css-rsa"),
        ("AES256-GCM-SHA384", "CN = ocpp-css-rsa"),
        ("ECDHE-RSA-AES128-GCM-SHA256", "CN = ocpp-css-rsa"),
    ] {
        assert_eq!(s_client(&pki, port, suite).await, Some((suite.to_string(), subject.to_string())), "{suite}");
    }
    assert_eq!(s_client(&pki, port, "ECDHE-ECDSA-CHACHA20-POLY1305").await, None, "not in the cipher list");

    let t = app.tenant("acme").await;
    provision(&app, &t.token, "CP3", 3).await;
    let url = wss(&app, "acme", "CP3");
    let certificate = pki.client_config(Some(pki.station_ca.client("CP3", "acme")));
    let mut cp = try_connect_url(&url, None, Some("ocpp1.6"), Some(certificate)).await.expect("its own certificate");
    assert_eq!(cp.boot().await["status"], "Accepted");
    assert_eq!(cp.call("Heartbeat", json!({})).await[0], 3);
    let another = pki.client_config(Some(pki.station_ca.client("CP4", "acme")));
    let refused = try_connect_url(&url, None, Some("ocpp1.6"), Some(another)).await;
    assert_eq!(refused.err().as_deref(), Some("HTTP 401"), "another station's certificate");
    let stranger = pki.client_config(Some(Ca::new("someone else's CA").client("CP3", "acme")));
    let refused = try_connect_url(&url, None, Some("ocpp1.6"), Some(stranger)).await;
    assert!(refused.is_err(), "a certificate from an unknown CA fails the handshake");

    let created = provision(&app, &t.token, "CP2", 2).await;
    let password = created["password"].as_str().unwrap();
    let url = created["ocpp_url"].as_str().unwrap();
    let wrong =
        try_connect_url(url, Some(("CP2", "wrong-password-1234")), Some("ocpp1.6"), Some(pki.client_config(None)));
    assert_eq!(wrong.await.err().as_deref(), Some("HTTP 401"));
    let mut cp2 = try_connect_url(url, Some(("CP2", password)), Some("ocpp1.6"), Some(pki.client_config(None)))
        .await
        .expect("a profile 2 station with its password");
    assert_eq!(cp2.boot().await["status"], "Accepted");
}

/// One HTTPS request to `/healthz` on the TLS listener with `config`; how its handshake went.
fn healthz_handshake(config: Arc<rustls::ClientConfig>, port: u16) -> rustls::HandshakeKind {
    use std::io::{Read, Write};
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    // Read to the end (the server closes): session tickets come after the handshake.
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    conn.handshake_kind().expect("handshake done")
}

#[tokio::test]
async fn a_reconnecting_client_resumes_its_tls_session_unless_resumption_is_off() {
    use rustls::HandshakeKind::{Full, Resumed};
    let pki = Pki::new();
    for (tickets, cache, expected) in [(true, 20000, Resumed), (false, 20000, Resumed), (false, 0, Full)] {
        let app = pki
            .spawn_with(move |s| {
                s.tls.session_tickets = tickets;
                s.tls.session_cache_entries = cache;
            })
            .await;
        let (config, port) = (pki.client_config(None), app.tls_port.unwrap());
        let kinds = tokio::task::spawn_blocking(move || {
            [healthz_handshake(config.clone(), port), healthz_handshake(config, port)]
        })
        .await
        .unwrap();
        assert_eq!(kinds, [Full, expected], "tickets {tickets}, {cache} sessions remembered");
    }
}
