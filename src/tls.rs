//! The TLS listener (OCPP security profiles 2 and 3): its rustls configuration from the certificate
//! files in `[tls]` (or, for `rsa_key_exchange`, its OpenSSL one), and what a connection tells the
//! station endpoint about its client certificate.
//!
//! One listener serves both profiles: client certificates are asked for but not required, so a
//! profile-2 station (TLS + Basic auth) connects without one. A certificate that is presented must
//! chain to `tls.client_ca_path`, or the handshake fails; which station it may act as is decided per
//! request by [`crate::ws`] from its subject.

use crate::config::TlsSettings;
use actix_web::dev::Extensions;
use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use std::any::Any;
use std::path::Path;
use std::sync::Arc;
use x509_cert::der::{oid::ObjectIdentifier, Decode};

/// The one crypto provider this process uses (ring: no C toolchain beyond cc, smaller builds),
/// passed explicitly so nothing depends on a process-wide default.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(certs)
}

/// The configured certificate chains with their keys (`cert_path`'s first), each key checked against
/// its certificate, and the two keys (when there are two) of different types.
pub fn certified_keys(
    settings: &TlsSettings,
    provider: &rustls::crypto::CryptoProvider,
) -> anyhow::Result<Vec<Arc<CertifiedKey>>> {
    let mut keys: Vec<Arc<CertifiedKey>> = Vec::new();
    for (cert_path, key_path) in settings.certificate_pairs().map_err(anyhow::Error::msg)? {
        let chain = certificates(cert_path)?;
        let key = PrivateKeyDer::from_pem_file(key_path)
            .with_context(|| format!("reading the private key in {}", key_path.display()))?;
        let key = provider
            .key_provider
            .load_private_key(key)
            .with_context(|| format!("loading the private key in {}", key_path.display()))?;
        let certified = CertifiedKey::new(chain, key);
        match certified.keys_match() {
            // The provider could not tell (no public key from this key type): the handshake will.
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(e) => anyhow::bail!(
                "the certificate in {} does not match the key in {}: {e}",
                cert_path.display(),
                key_path.display()
            ),
        }
        if let Some(first) = keys.first() {
            let algorithm = certified.key.algorithm();
            anyhow::ensure!(
                first.key.algorithm() != algorithm,
                "tls.cert_path and tls.alt_cert_path both hold {algorithm:?} keys; the second certificate must \
                 have the other key type (one RSA, one ECDSA)"
            );
        }
        tracing::info!(cert = %cert_path.display(), key_type = ?certified.key.algorithm(), "TLS server certificate");
        keys.push(Arc::new(certified));
    }
    Ok(keys)
}

/// Picks, for each handshake, the first configured certificate whose key the client can use: it
/// offers a signature scheme for the key and a cipher suite that key can authenticate (any TLS 1.3
/// suite; for TLS 1.2, one of the key's type, ECDHE-ECDSA or ECDHE-RSA). When none fits, the first
/// certificate, and the handshake fails as it would have with it alone.
#[derive(Debug)]
struct ByKeyType {
    keys: Vec<Arc<CertifiedKey>>,
    suites: Vec<rustls::SupportedCipherSuite>,
}

impl ByKeyType {
    fn fits(&self, key: &CertifiedKey, offered: &[rustls::CipherSuite], schemes: &[rustls::SignatureScheme]) -> bool {
        let algorithm = key.key.algorithm();
        key.key.choose_scheme(schemes).is_some()
            && self.suites.iter().any(|s| offered.contains(&s.suite()) && s.usable_for_signature_algorithm(algorithm))
    }
}

impl ResolvesServerCert for ByKeyType {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let (offered, schemes) = (hello.cipher_suites(), hello.signature_schemes());
        self.keys.iter().find(|k| self.fits(k, offered, schemes)).or_else(|| self.keys.first()).cloned()
    }
}

/// The server configuration for `[tls]`: its certificate(s) and key(s), and, when `client_ca_path`
/// is set, optional client certificates issued by that CA.
pub fn server_config(settings: &TlsSettings) -> anyhow::Result<ServerConfig> {
    let provider = crypto_provider();
    let keys = certified_keys(settings, &provider)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = if settings.client_certificates() {
        let mut roots = RootCertStore::empty();
        for ca in certificates(&settings.client_ca_path)? {
            roots.add(ca).with_context(|| format!("adding a client CA from {}", settings.client_ca_path.display()))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            // Profile 1 and 2 stations (and API clients) use this listener without a certificate.
            .allow_unauthenticated()
            .build()
            .context("building the client certificate verifier")?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_cert_resolver(Arc::new(ByKeyType { keys, suites: provider.cipher_suites.clone() }));
    // rustls remembers 256 sessions by default: a fleet reconnecting at once would resume almost none.
    config.session_storage = if settings.session_cache_entries > 0 {
        rustls::server::ServerSessionMemoryCache::new(settings.session_cache_entries)
    } else {
        Arc::new(rustls::server::NoServerSessionStorage {})
    };
    if settings.session_tickets {
        config.ticketer = rustls::crypto::ring::Ticketer::new().context("TLS session ticket keys")?;
    }
    Ok(config)
}

/// How the TLS listener is served: by rustls, or, for `rsa_key_exchange`, by OpenSSL.
pub enum Listener {
    Rustls(Box<ServerConfig>),
    #[cfg(feature = "openssl-tls")]
    OpenSsl(openssl::ssl::SslAcceptor),
}

/// The TLS listener `[tls]` asks for. With `rsa_key_exchange` on and this build without the
/// `openssl-tls` feature, an error saying so.
pub fn listener(settings: &TlsSettings) -> anyhow::Result<Listener> {
    if settings.rsa_key_exchange {
        #[cfg(feature = "openssl-tls")]
        return openssl_acceptor(settings).map(Listener::OpenSsl);
        #[cfg(not(feature = "openssl-tls"))]
        anyhow::bail!(
            "tls.rsa_key_exchange = true needs the OpenSSL TLS listener, which this build does not have: \
             build with `cargo build --release --features openssl-tls` (needs libssl-dev and pkg-config), \
             or set tls.rsa_key_exchange = false"
        );
    }
    server_config(settings).map(|c| Listener::Rustls(Box::new(c)))
}

/// TLS 1.2 suites of the OpenSSL listener, in OpenSSL's names: the two ECDHE-ECDSA and two static-RSA
/// AES-GCM suites OCPP 2.0.1 lists, and ECDHE-RSA AES-GCM for RSA certificates with forward secrecy.
#[cfg(feature = "openssl-tls")]
pub const OPENSSL_TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:\
     ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:AES128-GCM-SHA256:AES256-GCM-SHA384";

/// The OpenSSL listener for `rsa_key_exchange`: TLS 1.2 and 1.3, [`OPENSSL_TLS12_CIPHERS`], each
/// configured certificate with its own chain (OpenSSL keeps one certificate per key type), and
/// optional client certificates verified against `client_ca_path`.
#[cfg(feature = "openssl-tls")]
pub fn openssl_acceptor(settings: &TlsSettings) -> anyhow::Result<openssl::ssl::SslAcceptor> {
    use openssl::pkey::PKey;
    use openssl::ssl::{SslAcceptor, SslMethod, SslVerifyMode, SslVersion};
    use openssl::x509::X509;
    // The same checks, and the same messages, as the rustls listener's.
    certified_keys(settings, &crypto_provider())?;
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).context("OpenSSL context")?;
    builder.set_min_proto_version(Some(SslVersion::TLS1_2)).context("TLS minimum version")?;
    builder.set_max_proto_version(Some(SslVersion::TLS1_3)).context("TLS maximum version")?;
    builder.set_cipher_list(OPENSSL_TLS12_CIPHERS).context("TLS 1.2 cipher list")?;
    for (cert_path, key_path) in settings.certificate_pairs().map_err(anyhow::Error::msg)? {
        // The chain file's first certificate goes to its key type's slot; the rest become that slot's
        // own chain (SSL_CTX_use_certificate_chain_file), so the two certificates keep separate chains.
        builder
            .set_certificate_chain_file(cert_path)
            .with_context(|| format!("OpenSSL: loading the certificate chain in {}", cert_path.display()))?;
        let pem = std::fs::read(key_path).with_context(|| format!("reading {}", key_path.display()))?;
        let key = PKey::private_key_from_pem(&pem)
            .with_context(|| format!("OpenSSL: parsing the private key in {}", key_path.display()))?;
        builder
            .set_private_key(&key)
            .with_context(|| format!("OpenSSL: loading the private key in {}", key_path.display()))?;
        builder.check_private_key().with_context(|| {
            format!(
                "OpenSSL: the certificate in {} does not match the key in {}",
                cert_path.display(),
                key_path.display()
            )
        })?;
    }
    if settings.client_certificates() {
        let ca_path = &settings.client_ca_path;
        builder
            .set_ca_file(ca_path)
            .with_context(|| format!("OpenSSL: loading client CAs from {}", ca_path.display()))?;
        let pem = std::fs::read(ca_path).with_context(|| format!("reading {}", ca_path.display()))?;
        for ca in X509::stack_from_pem(&pem).with_context(|| format!("parsing {}", ca_path.display()))? {
            builder.add_client_ca(&ca).context("OpenSSL: naming a client CA")?;
        }
        // PEER without FAIL_IF_NO_PEER_CERT: a certificate is asked for, checked when presented, and
        // not required (profile 1 and 2 stations, API clients).
        builder.set_verify(SslVerifyMode::PEER);
        // OpenSSL refuses to resume sessions of a verifying context without one.
        builder.set_session_id_context(b"ocpp-css").context("OpenSSL session id context")?;
    } else {
        builder.set_verify(SslVerifyMode::NONE);
    }
    builder.set_session_cache_mode(if settings.session_cache_entries > 0 {
        openssl::ssl::SslSessionCacheMode::SERVER
    } else {
        openssl::ssl::SslSessionCacheMode::OFF
    });
    builder.set_session_cache_size(i32::try_from(settings.session_cache_entries).unwrap_or(i32::MAX));
    if !settings.session_tickets {
        builder.set_options(openssl::ssl::SslOptions::NO_TICKET);
    }
    Ok(builder.build())
}

/// Put in a TLS connection's data by [`on_connect`]: the request came over TLS, and with this
/// verified client certificate chain, if any (end entity first).
#[derive(Debug, Clone)]
pub struct TlsConnection {
    pub client_chain: Option<Vec<CertificateDer<'static>>>,
}

/// The `HttpServer::on_connect` hook: marks TLS connections and keeps their client certificates.
/// Plain connections get nothing, which is how the station endpoint tells them apart.
pub fn on_connect(conn: &dyn Any, data: &mut Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    if let Some(tls) = conn.downcast_ref::<Tls>() {
        let (_, session) = tls.get_ref();
        let client_chain = session.peer_certificates().map(|c| c.iter().map(|c| c.clone().into_owned()).collect());
        data.insert(TlsConnection { client_chain });
    }
    #[cfg(feature = "openssl-tls")]
    if let Some(tls) = conn.downcast_ref::<OpenSslTls>() {
        data.insert(TlsConnection { client_chain: openssl_client_chain(tls.ssl()) });
    }
}

/// A connection of the OpenSSL listener (`rsa_key_exchange`).
#[cfg(feature = "openssl-tls")]
pub type OpenSslTls = actix_tls::accept::openssl::TlsStream<actix_web::rt::net::TcpStream>;

/// The client's certificate chain as the OpenSSL handshake verified it, leaf first, in DER (the
/// server side's peer chain does not hold the leaf). A certificate that does not encode counts as no
/// certificate at all.
#[cfg(feature = "openssl-tls")]
fn openssl_client_chain(ssl: &openssl::ssl::SslRef) -> Option<Vec<CertificateDer<'static>>> {
    let leaf = ssl.peer_certificate()?;
    let rest = ssl.peer_cert_chain().into_iter().flatten();
    let chain = std::iter::once(leaf.as_ref()).chain(rest).map(|c| c.to_der().map(CertificateDer::from));
    match chain.collect::<Result<Vec<_>, _>>() {
        Ok(chain) => Some(chain),
        Err(e) => {
            tracing::warn!(error = %e, "a client certificate did not encode; taken as none");
            None
        }
    }
}

/// What a client certificate's subject says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Subject commonName: the station id.
    pub common_name: Option<String>,
    /// Subject organizationName: the tenant's slug.
    pub organization: Option<String>,
}

const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const ORGANIZATION: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");

/// Reads the subject of a DER certificate (already verified by the handshake); None when it does not
/// parse. Attributes that are not valid UTF-8 strings count as absent.
pub fn client_identity(der: &[u8]) -> Option<ClientIdentity> {
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let mut identity = ClientIdentity { common_name: None, organization: None };
    for rdn in cert.tbs_certificate.subject.0.iter() {
        for attribute in rdn.0.iter() {
            let value = std::str::from_utf8(attribute.value.value()).ok().map(str::to_string);
            if attribute.oid == COMMON_NAME {
                identity.common_name = value;
            } else if attribute.oid == ORGANIZATION {
                identity.organization = value;
            }
        }
    }
    Some(identity)
}
