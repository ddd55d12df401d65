//! The TLS listener (OCPP security profiles 2 and 3): its rustls configuration from the certificate
//! files in `[tls]`, and what a connection tells the station endpoint about its client certificate.
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
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::any::Any;
use std::sync::Arc;
use x509_cert::der::{oid::ObjectIdentifier, Decode};

/// The one crypto provider this process uses (ring: no C toolchain beyond cc, smaller builds),
/// passed explicitly so nothing depends on a process-wide default.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &std::path::Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(certs)
}

/// The server configuration for `[tls]`: its certificate and key, and, when `client_ca_path` is set,
/// optional client certificates issued by that CA.
pub fn server_config(settings: &TlsSettings) -> anyhow::Result<ServerConfig> {
    let chain = certificates(&settings.cert_path)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key_path)
        .with_context(|| format!("reading the private key in {}", settings.key_path.display()))?;
    let provider = crypto_provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = if settings.client_certificates() {
        let mut roots = RootCertStore::empty();
        for ca in certificates(&settings.client_ca_path)? {
            roots.add(ca).with_context(|| format!("adding a client CA from {}", settings.client_ca_path.display()))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            // Profile 1 and 2 stations (and API clients) use this listener without a certificate.
            .allow_unauthenticated()
            .build()
            .context("building the client certificate verifier")?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    builder.with_single_cert(chain, key).context("the server certificate and key do not match")
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
