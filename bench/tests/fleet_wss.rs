//! End to end over wss://: the real server (in-process, TLS listener with a client CA, certificates
//! made here with rcgen) and a fleet of profile-3 stations driven by the harness's binary, each with
//! a client certificate it mints from the station CA.

mod common;

use common::*;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn ca(name: &str) -> (Certificate, KeyPair) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.distinguished_name.push(DnType::OrganizationName, "ocpp-bench tests");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    (params.self_signed(&key).expect("CA cert"), key)
}

/// The certificates of one test, in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |f: &str, text: String| std::fs::write(dir.path().join(f), text).expect("written");
        let (server_ca, server_ca_key) = ca("bench server CA");
        let (station_ca, station_ca_key) = ca("bench station CA");
        let (other_ca, _) = ca("some other CA");
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("server params");
        params.distinguished_name.push(DnType::CommonName, "ocpp-css");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = params.signed_by(&key, &server_ca, &server_ca_key).expect("server cert");
        write("server.pem", server.pem() + &server_ca.pem());
        write("server.key", key.serialize_pem());
        write("server-ca.pem", server_ca.pem());
        write("other-ca.pem", other_ca.pem());
        write("stations-ca.pem", station_ca.pem());
        write("stations-ca.key", station_ca_key.serialize_pem());
        Pki { dir }
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }
}

fn start_tls_server(pki: &Pki) -> Server {
    let (cert, key, client_ca) = (pki.path("server.pem"), pki.path("server.key"), pki.path("stations-ca.pem"));
    start_server_with(move |s| {
        s.tls.enabled = true;
        s.tls.port = 0;
        s.tls.cert_path = cert;
        s.tls.key_path = key;
        s.tls.client_ca_path = client_ca;
    })
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

const TENANT: &str = "wss-bench";
const STATIONS: u32 = 10;

/// Account, id tag and stations through the harness's own provisioning (over ws://, profile 1), then
/// every station raised to profile 3 through the API.
async fn provision_profile_3(server: &Server, out: &Path) {
    let api = format!("http://127.0.0.1:{}/api/v1", server.port);
    let json_path = out.join("provision.json");
    let (ok, stdout, stderr) = run_bench(
        strings(&[
            "fleet",
            "--provision-api",
            &api,
            "--tenant",
            TENANT,
            "--id-prefix",
            "W-",
            "--stations",
            &STATIONS.to_string(),
            "--hold",
            "0",
            "--timeout",
            "5",
            "--json",
            json_path.to_str().expect("utf-8 path"),
        ]),
        Duration::from_secs(120),
    )
    .await;
    assert!(ok, "provisioning run failed:\n{stdout}\n{stderr}");
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{api}/sessions"))
        .json(&json!({"email": format!("bench@{TENANT}.example.com"), "password": "bench-account-password"}))
        .send()
        .await
        .expect("sign-in sent");
    let token = r.json::<Value>().await.expect("sign-in answer")["token"].as_str().expect("a token").to_string();
    for i in 1..=STATIONS {
        let r = http
            .patch(format!("{api}/stations/W-{i:06}"))
            .bearer_auth(&token)
            .json(&json!({"security_profile": 3}))
            .send()
            .await
            .expect("PATCH sent");
        let status = r.status();
        let body: Value = r.json().await.expect("PATCH answer");
        assert!(status.is_success() && body["security_profile"] == 3, "{status} {body}");
    }
}

fn wss_args(server: &Server, pki: &Pki, ca_file: &str, json: &Path, extra: &[&str]) -> Vec<String> {
    let url = format!("wss://127.0.0.1:{}/ocpp/{{tenant}}/{{id}}", server.tls_port.expect("TLS enabled"));
    let mut a = strings(&[
        "fleet",
        "--url-template",
        &url,
        "--tenant",
        TENANT,
        "--id-prefix",
        "W-",
        "--stations",
        &STATIONS.to_string(),
        "--connect-rate",
        "100",
        "--timeout",
        "5",
        "--threads",
        "2",
        "--ca-file",
        pki.path(ca_file).to_str().expect("utf-8 path"),
        "--client-ca",
        pki.path("stations-ca.pem").to_str().expect("utf-8 path"),
        "--client-ca-key",
        pki.path("stations-ca.key").to_str().expect("utf-8 path"),
        "--json",
        json.to_str().expect("utf-8 path"),
    ]);
    a.extend(strings(extra));
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_3_fleet_boots_over_wss_with_minted_certificates_and_reports_the_tls_handshake() {
    let pki = Pki::new();
    let server = start_tls_server(&pki);
    let out = tempfile::tempdir().expect("temp dir");
    provision_profile_3(&server, out.path()).await;

    let json_path = out.path().join("wss.json");
    let extra = ["--hold", "3", "--heartbeat-rate", "10", "--storm", "--storm-pause", "0.5", "--storm-timeout", "30"];
    let (ok, stdout, stderr) =
        run_bench(wss_args(&server, &pki, "server-ca.pem", &json_path, &extra), Duration::from_secs(120)).await;
    assert!(ok, "ocpp-bench failed:\n{stdout}\n{stderr}");
    let s = summary(&json_path);
    let ramp = &s["ramp"];
    assert_eq!((ramp["booted"].as_u64(), ramp["failures"].as_u64()), (Some(10), Some(0)), "{ramp}\n{stderr}");
    let hb = s["actions"]["Heartbeat"]["ok"].as_u64().unwrap_or(0);
    assert!(hb >= 20, "{hb} heartbeats answered of ~30 scheduled");
    assert_eq!((s["timeouts"].as_u64(), s["hold"]["call_errors"].as_u64()), (Some(0), Some(0)), "{stderr}");
    for (phase, n) in [("ramp", 10), ("storm", 10)] {
        let steps = &s[phase]["steps"];
        for step in ["tcp_ms", "tls_ms", "ws_ms"] {
            assert_eq!(steps[step]["samples"].as_u64(), Some(n), "{phase}.steps.{step}: {steps}");
            assert!(steps[step]["p50"].as_f64().unwrap_or(0.0) > 0.0, "{phase}.steps.{step}: {steps}");
        }
    }
    // Every storm reconnect resumed its station's session from the ramp (--tls-resumption on).
    assert_eq!(s["ramp"]["steps"]["tls_resumed"], 0);
    assert_eq!(s["storm"]["steps"]["tls_resumed"], 10, "{}", s["storm"]["steps"]);
    assert_eq!((s["storm"]["completed"].as_u64(), s["storm"]["gave_up"].as_u64()), (Some(10), Some(0)));
    assert_eq!(s["close"]["clean"], 10);
    assert!(stdout.matches("    tls ").count() == 2, "a tls row in the ramp and the storm tables:\n{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_file_counts_tls_failures_and_no_certificate_is_refused_by_the_server() {
    let pki = Pki::new();
    let server = start_tls_server(&pki);
    let out = tempfile::tempdir().expect("temp dir");
    provision_profile_3(&server, out.path()).await;

    // The server's certificate is not signed by the CA given: every connect fails in TLS.
    let json_path = out.path().join("wrong-ca.json");
    let (_, stdout, stderr) =
        run_bench(wss_args(&server, &pki, "other-ca.pem", &json_path, &["--hold", "0"]), Duration::from_secs(120))
            .await;
    assert!(!stderr.contains("panicked"), "{stderr}");
    let s = summary(&json_path);
    let ramp = &s["ramp"];
    assert_eq!((ramp["booted"].as_u64(), ramp["failures"].as_u64()), (Some(0), Some(10)), "{ramp}\n{stdout}");
    assert_eq!(ramp["failures_by_kind"], json!({"tls_cert": 10}), "{ramp}");
    assert!(stdout.contains("tls_cert"), "{stdout}");

    // The right CA but no client certificate: the server lets the handshake through (the client CA is
    // optional there) and refuses the profile-3 station at the upgrade.
    let json_path = out.path().join("no-cert.json");
    let url = format!("wss://127.0.0.1:{}/ocpp/{{tenant}}/{{id}}", server.tls_port.expect("TLS enabled"));
    let ca = pki.path("server-ca.pem");
    let args = strings(&[
        "fleet",
        "--url-template",
        &url,
        "--tenant",
        TENANT,
        "--id-prefix",
        "W-",
        "--stations",
        "2",
        "--hold",
        "0",
        "--timeout",
        "5",
        "--ca-file",
        ca.to_str().expect("utf-8 path"),
        "--json",
        json_path.to_str().expect("utf-8 path"),
    ]);
    let (_, stdout, stderr) = run_bench(args, Duration::from_secs(120)).await;
    let s = summary(&json_path);
    assert_eq!(s["ramp"]["failures"].as_u64(), Some(2), "{stdout}\n{stderr}");
    assert_eq!(s["ramp"]["failures_by_kind"], json!({"http_401": 2}), "{stdout}");
}
