//! `wss://` stations: which server certificates are trusted (`--ca-file`, else the system's bundle),
//! which client certificate a station presents (profile 3: `--client-cert-dir` or minted from
//! `--client-ca`/`--client-ca-key`), and TLS session resumption (`--tls-resumption`).
//!
//! The set-up is process-wide ([`install`] once before the stations connect); a `wss://` connect
//! without it uses the system roots and no client certificate.

use anyhow::{anyhow, bail, Context, Result};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The TLS flags, as given (shared by the scenarios through `TargetArgs`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsOptions {
    pub ca_file: Option<PathBuf>,
    pub client_cert_dir: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub client_ca_key: Option<PathBuf>,
    /// Client certificates' subject O (the tenant slug, as ocpp-css checks).
    pub tenant: String,
    pub resumption: bool,
}

impl TlsOptions {
    /// True when any flag that only means something over TLS is set.
    pub fn any_set(&self) -> bool {
        self.ca_file.is_some()
            || self.client_cert_dir.is_some()
            || self.client_ca.is_some()
            || self.client_ca_key.is_some()
    }
}

/// Where a station's client certificate comes from.
enum ClientAuth {
    None,
    /// `{dir}/{id}.pem` (chain, leaf first) and `{dir}/{id}.key`.
    Dir(PathBuf),
    /// Minted at first use: CN = station id, O = tenant, signed by this CA.
    Mint {
        issuer: Box<Issuer>,
        tenant: String,
    },
}

/// The process-wide TLS client set-up.
pub struct TlsClient {
    roots: Arc<RootCertStore>,
    auth: ClientAuth,
    resumption: bool,
    /// One configuration per station (its own certificate and session cache), made at first connect.
    per_station: Mutex<HashMap<String, Arc<ClientConfig>>>,
    /// The configuration without a client certificate.
    shared: Arc<ClientConfig>,
}

static TLS: OnceLock<TlsClient> = OnceLock::new();

/// Checks the flags against the URL template and sets up TLS for the process. A `ws://` template
/// with TLS flags is an error (they would silently do nothing).
pub fn install(opts: &TlsOptions, template: &str) -> Result<()> {
    let wss = template.starts_with("wss://");
    if !wss {
        if opts.any_set() {
            bail!(
                "--ca-file, --client-cert-dir and --client-ca only apply to wss:// URL templates, and {template:?} is not one"
            );
        }
        return Ok(());
    }
    let client = TlsClient::new(opts)?;
    // A second install in one process (tests) keeps the first.
    let _ = TLS.set(client);
    Ok(())
}

/// The set-up of [`install`], or the default one (system roots, no client certificate).
pub fn client() -> Result<&'static TlsClient, String> {
    if let Some(c) = TLS.get() {
        return Ok(c);
    }
    let c = TlsClient::new(&TlsOptions { resumption: true, ..TlsOptions::default() }).map_err(|e| format!("{e:#}"))?;
    Ok(TLS.get_or_init(|| c))
}

/// The system's trusted roots: `$SSL_CERT_FILE`, else the first bundle found at the usual places.
pub fn system_roots() -> Result<Vec<CertificateDer<'static>>> {
    let candidates: Vec<PathBuf> = match std::env::var_os("SSL_CERT_FILE") {
        Some(f) => vec![PathBuf::from(f)],
        None => [
            "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine, Arch
            "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL
            "/etc/ssl/ca-bundle.pem",             // openSUSE
            "/etc/ssl/cert.pem",                  // macOS, BSDs
        ]
        .iter()
        .map(PathBuf::from)
        .collect(),
    };
    for path in &candidates {
        if path.exists() {
            return read_certs(path);
        }
    }
    bail!("no system CA bundle found (tried {candidates:?}); give --ca-file or set SSL_CERT_FILE")
}

/// All certificates of a PEM file; an error if it cannot be read or holds none.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("{}: bad PEM: {e:?}", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no PEM certificate in it", path.display());
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| anyhow!("{}: no usable PEM private key: {e:?}", path.display()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA that signs station certificates: its subject name (as the real certificate has it, so that
/// the server finds the issuer) and its key.
pub struct Issuer {
    cert: Certificate,
    key: KeyPair,
}

/// A station's client certificate, minted: CN = `id`, O = `tenant`, clientAuth, signed by `issuer`.
pub fn mint(issuer: &Issuer, id: &str, tenant: &str) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let key = KeyPair::generate().context("generating a station key")?;
    let mut params = CertificateParams::new(Vec::<String>::new()).context("certificate parameters")?;
    params.distinguished_name.push(DnType::CommonName, id);
    params.distinguished_name.push(DnType::OrganizationName, tenant);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert =
        params.signed_by(&key, &issuer.cert, &issuer.key).with_context(|| format!("signing {id}'s certificate"))?;
    Ok((vec![cert.der().clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))))
}

/// The subject name of a DER certificate, for rcgen (each attribute with its string type kept, so
/// that the issuer name of a minted certificate is byte for byte the CA's subject).
fn subject_of(der: &[u8]) -> Result<(rcgen::DistinguishedName, Vec<u8>)> {
    use x509_cert::der::{Decode, Tag, Tagged};
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| anyhow!("not an X.509 certificate: {e}"))?;
    let mut dn = rcgen::DistinguishedName::new();
    for rdn in cert.tbs_certificate.subject.0.iter() {
        for attr in rdn.0.iter() {
            let arcs: Vec<u64> = attr.oid.arcs().map(u64::from).collect();
            let text = String::from_utf8(attr.value.value().to_vec())
                .map_err(|_| anyhow!("subject attribute {} is not a text string", attr.oid))?;
            let value = match attr.value.tag() {
                Tag::PrintableString => DnValue::PrintableString(
                    text.as_str().try_into().map_err(|e| anyhow!("subject attribute {}: {e}", attr.oid))?,
                ),
                Tag::Ia5String => DnValue::Ia5String(
                    text.as_str().try_into().map_err(|e| anyhow!("subject attribute {}: {e}", attr.oid))?,
                ),
                Tag::Utf8String => DnValue::Utf8String(text),
                other => bail!("subject attribute {} has string type {other}, which is not supported", attr.oid),
            };
            dn.push(DnType::from_oid(&arcs), value);
        }
    }
    let public_key = cert.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes().to_vec();
    Ok((dn, public_key))
}

/// The CA of `--client-ca`/`--client-ca-key`, checked to be usable.
pub fn load_issuer(cert: &Path, key: &Path) -> Result<Issuer> {
    let ca = read_certs(cert).context("--client-ca")?;
    let key_pem =
        std::fs::read_to_string(key).with_context(|| format!("--client-ca-key: reading {}", key.display()))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| anyhow!("--client-ca-key {}: {e}", key.display()))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    let (dn, public_key) = subject_of(ca[0].as_ref()).with_context(|| format!("--client-ca {}", cert.display()))?;
    if key.public_key_raw() != public_key.as_slice() {
        bail!("--client-ca-key is not the key of the --client-ca certificate {}", cert.display());
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    // Only its name and key are used: the stand-in is never sent.
    let stand_in = params.self_signed(&key).context("--client-ca-key")?;
    Ok(Issuer { cert: stand_in, key })
}

impl TlsClient {
    pub fn new(opts: &TlsOptions) -> Result<TlsClient> {
        let mut roots = RootCertStore::empty();
        let certs = match &opts.ca_file {
            Some(f) => read_certs(f).context("--ca-file")?,
            None => system_roots()?,
        };
        let (_, ignored) = roots.add_parsable_certificates(certs);
        if roots.is_empty() {
            bail!("no usable CA certificate ({ignored} could not be parsed)");
        }
        let auth = match (&opts.client_cert_dir, &opts.client_ca, &opts.client_ca_key) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                bail!("--client-cert-dir and --client-ca are alternatives: give one")
            }
            (Some(dir), None, None) => {
                if !dir.is_dir() {
                    bail!("--client-cert-dir {}: not a directory", dir.display());
                }
                ClientAuth::Dir(dir.clone())
            }
            (None, Some(c), Some(k)) => {
                ClientAuth::Mint { issuer: Box::new(load_issuer(c, k)?), tenant: opts.tenant.clone() }
            }
            (None, Some(_), None) => bail!("--client-ca needs --client-ca-key (the CA's private key)"),
            (None, None, Some(_)) => bail!("--client-ca-key needs --client-ca (the CA's certificate)"),
            (None, None, None) => ClientAuth::None,
        };
        let roots = Arc::new(roots);
        let shared = Arc::new(Self::config(&roots, None, opts.resumption)?);
        Ok(TlsClient { roots, auth, resumption: opts.resumption, per_station: Mutex::new(HashMap::new()), shared })
    }

    fn config(
        roots: &Arc<RootCertStore>,
        client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
        resumption: bool,
    ) -> Result<ClientConfig> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_root_certificates(roots.clone());
        let mut config = match client {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).context("client certificate")?,
            None => builder.with_no_client_auth(),
        };
        // A small cache per configuration: one station's own sessions.
        config.resumption = if resumption { Resumption::in_memory_sessions(4) } else { Resumption::disabled() };
        Ok(config)
    }

    /// The configuration station `id` connects with (made at its first connect, then reused, so that
    /// a reconnect can resume its session).
    /// Without client certificates and without resumption, every station shares one configuration;
    /// with resumption each has its own all the same: a shared cache holds a few tickets for the
    /// one server name, which the whole fleet would compete for.
    pub fn for_station(&self, id: &str) -> Result<Arc<ClientConfig>, String> {
        if matches!(self.auth, ClientAuth::None) && !self.resumption {
            return Ok(self.shared.clone());
        }
        if let Some(c) = self.per_station.lock().map_err(|_| "TLS cache lock".to_string())?.get(id) {
            return Ok(c.clone());
        }
        let pair = match &self.auth {
            ClientAuth::None => None,
            ClientAuth::Dir(dir) => {
                let (pem, key) = (dir.join(format!("{id}.pem")), dir.join(format!("{id}.key")));
                Some(read_certs(&pem).and_then(|c| Ok((c, read_key(&key)?))).map_err(|e| format!("{e:#}"))?)
            }
            ClientAuth::Mint { issuer, tenant } => Some(mint(issuer, id, tenant).map_err(|e| format!("{e:#}"))?),
        };
        let config = Arc::new(Self::config(&self.roots, pair, self.resumption).map_err(|e| format!("{e:#}"))?);
        self.per_station.lock().map_err(|_| "TLS cache lock".to_string())?.insert(id.to_string(), config.clone());
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(dir: &Path) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "bench test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (dir.join("ca.pem"), dir.join("ca.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn minted_certificates_carry_the_station_id_and_tenant_as_the_server_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = ca(dir.path());
        let issuer = load_issuer(&c, &k).unwrap();
        let (chain, _key) = mint(&issuer, "BENCH000007", "acme").unwrap();
        let id = ocpp_css::tls::client_identity(chain[0].as_ref()).expect("the server parses it");
        assert_eq!(id.common_name.as_deref(), Some("BENCH000007"));
        assert_eq!(id.organization.as_deref(), Some("acme"));
    }

    #[test]
    fn flags_are_checked_with_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = ca(dir.path());
        let opts = |f: &dyn Fn(&mut TlsOptions)| {
            let mut o =
                TlsOptions { ca_file: Some(c.clone()), tenant: "t".into(), resumption: true, ..Default::default() };
            f(&mut o);
            o
        };
        let err = |o: TlsOptions| format!("{:#}", TlsClient::new(&o).err().expect("refused"));
        assert!(TlsClient::new(&opts(&|_| {})).is_ok());
        assert!(TlsClient::new(&opts(&|o| {
            o.client_ca = Some(c.clone());
            o.client_ca_key = Some(k.clone())
        }))
        .is_ok());
        assert!(err(opts(&|o| o.client_ca = Some(c.clone()))).contains("--client-ca needs --client-ca-key"));
        assert!(err(opts(&|o| o.client_ca_key = Some(k.clone()))).contains("needs --client-ca"));
        let missing = err(opts(&|o| o.ca_file = Some(dir.path().join("nope.pem"))));
        assert!(missing.contains("--ca-file") && missing.contains("nope.pem"), "{missing}");
        let not_pem = dir.path().join("x.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        assert!(err(opts(&|o| o.ca_file = Some(not_pem.clone()))).contains("no PEM certificate"));
        // A certificate given as the key.
        assert!(err(opts(&|o| {
            o.client_ca = Some(c.clone());
            o.client_ca_key = Some(c.clone())
        }))
        .contains("--client-ca-key"));
        assert!(err(opts(&|o| {
            o.client_cert_dir = Some(dir.path().into());
            o.client_ca = Some(c.clone())
        }))
        .contains("alternatives"));
        assert!(err(opts(&|o| o.client_cert_dir = Some(c.clone()))).contains("not a directory"));
        // ws:// with TLS flags is an error; wss:// without --ca-file uses the system roots.
        let e = install(&opts(&|_| {}), "ws://h/{id}").unwrap_err().to_string();
        assert!(e.contains("only apply to wss://"), "{e}");
        assert!(install(&TlsOptions::default(), "ws://h/{id}").is_ok());
        if system_roots().is_ok() {
            assert!(TlsClient::new(&TlsOptions::default()).is_ok());
        }
    }

    #[test]
    fn a_cert_dir_station_loads_its_own_files_once() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = ca(dir.path());
        let issuer = load_issuer(&c, &k).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "CP1");
        let cert = params.signed_by(&key, &issuer.cert, &issuer.key).unwrap();
        std::fs::write(dir.path().join("CP1.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("CP1.key"), key.serialize_pem()).unwrap();
        let o = TlsOptions { ca_file: Some(c), client_cert_dir: Some(dir.path().into()), ..Default::default() };
        let t = TlsClient::new(&o).unwrap();
        let first = t.for_station("CP1").unwrap();
        assert!(first.client_auth_cert_resolver.has_certs());
        assert!(Arc::ptr_eq(&first, &t.for_station("CP1").unwrap()), "cached: a reconnect can resume");
        // A key that does not parse.
        std::fs::write(dir.path().join("CP2.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("CP2.key"), "not a key").unwrap();
        let e = t.for_station("CP2").err().unwrap();
        assert!(e.contains("CP2.key"), "{e}");
    }

    #[test]
    fn a_wrong_ca_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = ca(dir.path());
        let other = tempfile::tempdir().unwrap();
        let (_, k) = ca(other.path());
        let e = load_issuer(&c, &k).err().unwrap().to_string();
        assert!(e.contains("is not the key of the --client-ca certificate"), "{e}");
    }

    #[test]
    fn a_cert_dir_station_without_files_is_an_error_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = ca(dir.path());
        let o = TlsOptions { ca_file: Some(c), client_cert_dir: Some(dir.path().into()), ..Default::default() };
        let t = TlsClient::new(&o).unwrap();
        let e = t.for_station("CP9").err().unwrap();
        assert!(e.contains("CP9.pem"), "{e}");
    }
}
