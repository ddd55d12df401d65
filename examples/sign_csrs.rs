//! Measures what the station CA costs per SignCertificate, for BENCHMARKS.md: the time to check and
//! sign one CSR (`StationCa::sign`: parse, verify the CSR's signature, check the subject, issue),
//! for an ECDSA P-256 CA and, when the `openssl` binary is there to make its key, an RSA-2048 CA.
//! The CSRs (P-256 keys) are made beforehand and not timed.
//!
//! ```text
//! cargo run --release --example sign_csrs -- <csrs>
//! ```

use ocpp_css::ca::StationCa;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use std::path::Path;
use std::time::Instant;

type Error = Box<dyn std::error::Error>;

/// A self-signed CA with `key`, written to `dir` as ca.pem / ca.key.
fn write_ca(dir: &Path, key: &KeyPair) -> Result<(), Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "bench station CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(key)?;
    std::fs::write(dir.join("ca.pem"), cert.pem())?;
    std::fs::write(dir.join("ca.key"), key.serialize_pem())?;
    Ok(())
}

fn csrs(n: usize) -> Result<Vec<String>, Error> {
    (0..n)
        .map(|i| {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.distinguished_name.push(DnType::CommonName, format!("CP{i}"));
            params.distinguished_name.push(DnType::OrganizationName, "acme");
            Ok(params.serialize_request(&key)?.pem()?)
        })
        .collect()
}

fn run(name: &str, dir: &Path, requests: &[String]) -> Result<(), Error> {
    let ca = StationCa::load(&dir.join("ca.pem"), &dir.join("ca.key"), chrono::Duration::days(365))?;
    let started = Instant::now();
    for (i, csr) in requests.iter().enumerate() {
        ca.sign(csr, &format!("CP{i}"), "acme").map_err(|e| format!("CSR {i} refused: {e}"))?;
    }
    let elapsed = started.elapsed();
    let each = elapsed.as_secs_f64() / requests.len() as f64;
    println!(
        "{name}: {} CSRs in {:.3} s: {:.1} µs each, {:.0} a second on one core",
        requests.len(),
        elapsed.as_secs_f64(),
        each * 1e6,
        1.0 / each
    );
    Ok(())
}

fn main() -> Result<(), Error> {
    let n: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let requests = csrs(n)?;
    let ec = tempfile::tempdir()?;
    write_ca(ec.path(), &KeyPair::generate()?)?;
    run("ECDSA P-256 CA", ec.path(), &requests)?;
    let rsa = tempfile::tempdir()?;
    let key_path = rsa.path().join("rsa.key");
    let made = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&key_path)
        .stderr(std::process::Stdio::null())
        .status();
    match made {
        Ok(status) if status.success() => {
            let key = KeyPair::from_pem(&std::fs::read_to_string(&key_path)?)?;
            write_ca(rsa.path(), &key)?;
            run("RSA-2048 CA", rsa.path(), &requests)?;
        }
        _ => println!("RSA-2048 CA: skipped (no openssl binary to make its key)"),
    }
    Ok(())
}
