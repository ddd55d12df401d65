//! The station certificate authority (OCPP security profile 3): signs the CSRs stations send with
//! `SignCertificate` into the client certificates they later present on the TLS listener
//! ([`crate::tls`]), subject CN = the station id and O = the tenant's slug.
//!
//! A CSR is hostile input: it is parsed (at most [`MAX_CSR_CHARS`] characters), its self-signature
//! is verified, its subject must name exactly the station and tenant that sent it, and nothing
//! else in it is trusted: the issued certificate takes only its public key, and a subject of
//! that CN and O. Requested extensions (SANs, key usages, CA) are ignored.
//!
//! The CA's certificate and PKCS#8 key are loaded once ([`StationCa::load`]); the CA is checked
//! then by issuing a probe certificate and verifying it against the CA certificate as loaded, so a
//! key that does not belong to the certificate, or a subject rcgen cannot reproduce byte for byte,
//! fails at startup rather than in a station's handshake.

use anyhow::Context as _;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore as _;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    SerialNumber, SubjectPublicKeyInfo,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::Path;
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::error::X509Error;
use x509_parser::oid_registry::{
    OID_PKCS1_SHA1WITHRSA, OID_SHA1_WITH_RSA, OID_X509_COMMON_NAME, OID_X509_ORGANIZATION_NAME,
};
use x509_parser::prelude::FromDer as _;
use x509_parser::x509::X509Name;

/// The longest CSR accepted, in bytes (a PEM CSR is ASCII, so characters): the `csr` field of
/// `SignCertificate` (OCPP 1.6 security extension and 2.0.1) is at most 5500 characters.
pub const MAX_CSR_CHARS: usize = 5500;

/// How far before the moment of issue an issued certificate is valid, for stations whose clocks
/// are a little behind.
const BACKDATE: chrono::Duration = chrono::Duration::minutes(5);

/// Serial numbers: 20 bytes, the most RFC 5280 allows, positive (see [`fresh_serial`]).
const SERIAL_BYTES: usize = 20;

/// The certificate authority that signs station CSRs. Cheap to share in an `Arc`; signing takes
/// `&self`.
pub struct StationCa {
    /// The CA's parameters as read from its certificate, re-signed with its key: what rcgen issues
    /// with (its subject becomes the issuer name, its key identifier the authority key identifier).
    issuer: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate and its issuers as loaded, re-encoded as PEM (only the certificates).
    ca_pem: String,
    ca_not_after: DateTime<Utc>,
    validity: chrono::Duration,
}

impl fmt::Debug for StationCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StationCa")
            .field("ca_not_after", &self.ca_not_after)
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

/// A certificate issued by [`StationCa::sign`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The issued certificate, then the CA chain as loaded, PEM: what `CertificateSigned` sends.
    pub chain_pem: String,
    /// The serial number, lower-case hex (40 digits).
    pub serial: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

/// Why a CSR was not signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsrRefusal {
    /// Not a PEM (or bare base64 DER) PKCS#10 request, or longer than [`MAX_CSR_CHARS`].
    Unreadable,
    /// The request's self-signature does not verify with its own public key.
    BadSignature,
    /// The subject is not CN = the station id, O = the tenant's slug, each exactly once. The values
    /// the request had (the first of each; None when absent or not a UTF8String/PrintableString).
    SubjectMismatch { common_name: Option<String>, organization: Option<String> },
    /// The request's key or signature algorithm is not one that is signed: ECDSA P-256/P-384,
    /// Ed25519, or RSA of at least 2048 bits, signed with SHA-256 or better (not SHA-1).
    UnsupportedKey,
    /// The CA cannot issue: its certificate has expired, or signing failed.
    CaUnavailable,
}

impl CsrRefusal {
    /// A short label, for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            CsrRefusal::Unreadable => "unreadable",
            CsrRefusal::BadSignature => "bad_signature",
            CsrRefusal::SubjectMismatch { .. } => "subject_mismatch",
            CsrRefusal::UnsupportedKey => "unsupported_key",
            CsrRefusal::CaUnavailable => "ca_unavailable",
        }
    }
}

impl fmt::Display for CsrRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CsrRefusal::Unreadable => {
                write!(f, "the CSR is not a PEM-encoded PKCS#10 request of at most {MAX_CSR_CHARS} characters")
            }
            CsrRefusal::BadSignature => write!(f, "the CSR's signature does not verify with its public key"),
            CsrRefusal::SubjectMismatch { common_name, organization } => write!(
                f,
                "the CSR's subject (CN={}, O={}) is not this station and tenant",
                common_name.as_deref().unwrap_or("<none>"),
                organization.as_deref().unwrap_or("<none>"),
            ),
            CsrRefusal::UnsupportedKey => write!(
                f,
                "the CSR's key or signature algorithm is not supported (ECDSA P-256/P-384, Ed25519, or RSA \
                 of at least 2048 bits; SHA-256 or better)"
            ),
            CsrRefusal::CaUnavailable => write!(f, "the station CA cannot issue certificates (expired or failing)"),
        }
    }
}

impl std::error::Error for CsrRefusal {}

impl StationCa {
    /// Loads the CA certificate (PEM; the file may hold the CA followed by its own issuers, all
    /// returned in the chain) and its private key (PEM, PKCS#8: ECDSA P-256/P-384, Ed25519 or RSA).
    /// `validity` = how long issued certificates live (never beyond the CA's own not_after).
    pub fn load(cert_path: &Path, key_path: &Path, validity: chrono::Duration) -> anyhow::Result<StationCa> {
        anyhow::ensure!(validity > chrono::Duration::zero(), "the validity of station certificates must be positive");
        let certs = CertificateDer::pem_file_iter(cert_path)
            .with_context(|| format!("reading the station CA certificate {}", cert_path.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing the certificates in {}", cert_path.display()))?;
        let ca_der = certs.first().with_context(|| format!("no certificate in {}", cert_path.display()))?;
        let (rest, ca) = X509Certificate::from_der(ca_der)
            .map_err(|e| anyhow::anyhow!("the first certificate in {} does not parse: {e}", cert_path.display()))?;
        anyhow::ensure!(rest.is_empty(), "trailing bytes after the CA certificate in {}", cert_path.display());
        let is_ca = ca
            .basic_constraints()
            .map_err(|e| anyhow::anyhow!("the CA certificate's basic constraints: {e}"))?
            .is_some_and(|b| b.value.ca);
        anyhow::ensure!(is_ca, "the certificate in {} is not a CA (basicConstraints cA)", cert_path.display());
        // rcgen rebuilds the subject from its attributes (and panics on an empty RDN).
        anyhow::ensure!(
            ca.subject().iter().all(|rdn| rdn.iter().next().is_some()),
            "the CA certificate's subject has an empty RDN"
        );
        let ca_not_after = DateTime::from_timestamp(ca.validity().not_after.timestamp(), 0)
            .context("the CA certificate's not_after is out of range")?;
        anyhow::ensure!(ca_not_after > Utc::now(), "the station CA certificate expired at {ca_not_after}");

        let key = PrivateKeyDer::from_pem_file(key_path)
            .with_context(|| format!("reading the station CA key {}", key_path.display()))?;
        anyhow::ensure!(
            matches!(key, PrivateKeyDer::Pkcs8(_)),
            "the station CA key {} is not PKCS#8 (`-----BEGIN PRIVATE KEY-----`); convert it with \
             `openssl pkcs8 -topk8 -nocrypt`",
            key_path.display()
        );
        let key = KeyPair::try_from(&key).map_err(|e| {
            anyhow::anyhow!("the station CA key {} is not ECDSA P-256/P-384, Ed25519 or RSA: {e}", key_path.display())
        })?;

        let params = CertificateParams::from_ca_cert_der(ca_der)
            .map_err(|e| anyhow::anyhow!("the CA certificate in {} cannot issue: {e}", cert_path.display()))?;
        let issuer = params.self_signed(&key).map_err(|e| anyhow::anyhow!("signing with the station CA key: {e}"))?;

        let ca_pem = certs.iter().map(|c| pem_encode("CERTIFICATE", c)).collect();
        let station_ca = StationCa { issuer, key, ca_pem, ca_not_after, validity };

        // A probe: the issued certificate must name the CA's subject byte for byte and verify with
        // the CA certificate's key (the key file belongs to the certificate file).
        let probe_key = KeyPair::generate().map_err(|e| anyhow::anyhow!("a probe key: {e}"))?;
        let probe_spki = SubjectPublicKeyInfo::from_der(&probe_key.public_key_der())
            .map_err(|e| anyhow::anyhow!("the probe key: {e}"))?;
        let (probe, _) = station_ca
            .issue(&probe_spki, "probe", "probe", Utc::now())
            .map_err(|e| anyhow::anyhow!("issuing a probe certificate: {e}"))?;
        let (_, probe) = X509Certificate::from_der(&probe)
            .map_err(|e| anyhow::anyhow!("the probe certificate does not parse: {e}"))?;
        anyhow::ensure!(
            probe.issuer().as_raw() == ca.subject().as_raw(),
            "certificates issued by the station CA would not name its subject exactly ({} vs {})",
            probe.issuer(),
            ca.subject()
        );
        probe.verify_signature(Some(ca.public_key())).map_err(|e| {
            anyhow::anyhow!(
                "the key in {} does not belong to the CA certificate in {} ({e})",
                key_path.display(),
                cert_path.display()
            )
        })?;
        Ok(station_ca)
    }

    /// Checks the CSR and issues a client certificate for `station_id` of `tenant_slug`: see the
    /// module documentation, and [`CsrRefusal`] for what is refused.
    pub fn sign(&self, csr_pem: &str, station_id: &str, tenant_slug: &str) -> Result<Issued, CsrRefusal> {
        if csr_pem.len() > MAX_CSR_CHARS {
            return Err(CsrRefusal::Unreadable);
        }
        let der = csr_der(csr_pem).ok_or(CsrRefusal::Unreadable)?;
        let csr = match X509CertificationRequest::from_der(&der) {
            Ok(([], csr)) => csr,
            _ => return Err(CsrRefusal::Unreadable),
        };
        let algorithm = &csr.signature_algorithm.algorithm;
        if *algorithm == OID_PKCS1_SHA1WITHRSA || *algorithm == OID_SHA1_WITH_RSA {
            return Err(CsrRefusal::UnsupportedKey);
        }
        match csr.verify_signature() {
            Ok(()) => {}
            Err(X509Error::SignatureUnsupportedAlgorithm) => return Err(CsrRefusal::UnsupportedKey),
            Err(_) => return Err(CsrRefusal::BadSignature),
        }
        let info = &csr.certification_request_info;
        let (common_name, organization) = subject(&info.subject);
        let exact = |values: &[Option<String>], wanted: &str| values.len() == 1 && values[0].as_deref() == Some(wanted);
        if !exact(&common_name, station_id) || !exact(&organization, tenant_slug) {
            return Err(CsrRefusal::SubjectMismatch {
                common_name: common_name.into_iter().next().flatten(),
                organization: organization.into_iter().next().flatten(),
            });
        }
        let public_key =
            SubjectPublicKeyInfo::from_der(info.subject_pki.raw).map_err(|_| CsrRefusal::UnsupportedKey)?;

        let now = Utc::now();
        if self.ca_not_after <= now {
            return Err(CsrRefusal::CaUnavailable);
        }
        let (der, issued) = self.issue(&public_key, station_id, tenant_slug, now)?;
        let mut chain_pem = pem_encode("CERTIFICATE", &der);
        chain_pem.push_str(&self.ca_pem);
        Ok(Issued { chain_pem, ..issued })
    }

    /// The CA chain as loaded (the CA certificate, then its issuers), PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate's not_after, beyond which nothing is issued.
    pub fn ca_not_after(&self) -> DateTime<Utc> {
        self.ca_not_after
    }

    /// Issues a client certificate for this key and subject, valid from `now` - [`BACKDATE`]: its
    /// DER and what [`Issued`] records (without the chain).
    fn issue(
        &self,
        public_key: &SubjectPublicKeyInfo,
        station_id: &str,
        tenant_slug: &str,
        now: DateTime<Utc>,
    ) -> Result<(Vec<u8>, Issued), CsrRefusal> {
        // X.509 times are whole seconds: what is recorded is what the certificate says.
        let now = DateTime::from_timestamp(now.timestamp(), 0).ok_or(CsrRefusal::CaUnavailable)?;
        let not_before = now - BACKDATE;
        let not_after = now.checked_add_signed(self.validity).map_or(self.ca_not_after, |t| t.min(self.ca_not_after));
        let serial = fresh_serial();

        let mut subject = DistinguishedName::new();
        subject.push(DnType::OrganizationName, tenant_slug);
        subject.push(DnType::CommonName, station_id);
        let mut params = CertificateParams::default();
        params.distinguished_name = subject;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.not_before = offset_date_time(not_before)?;
        params.not_after = offset_date_time(not_after)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(public_key, &self.issuer, &self.key).map_err(|_| CsrRefusal::CaUnavailable)?;
        let issued = Issued { chain_pem: String::new(), serial: hex::encode(serial), not_before, not_after };
        Ok((cert.der().to_vec(), issued))
    }
}

/// not_after of the first certificate in a PEM (for recording what a station was sent); None if it
/// doesn't parse.
pub fn not_after(pem: &str) -> Option<DateTime<Utc>> {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()?;
    let (_, cert) = X509Certificate::from_der(&der).ok()?;
    DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
}

/// The DER of a CSR: PEM (`CERTIFICATE REQUEST` or `NEW CERTIFICATE REQUEST`), or bare base64 as
/// some stations send it.
fn csr_der(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    let body = match text.strip_prefix("-----BEGIN ") {
        Some(rest) => {
            let (label, rest) = rest.split_once("-----")?;
            if label != "CERTIFICATE REQUEST" && label != "NEW CERTIFICATE REQUEST" {
                return None;
            }
            let (body, after) = rest.split_once(&format!("-----END {label}-----"))?;
            if !after.trim().is_empty() {
                return None;
            }
            body
        }
        None => text,
    };
    let body: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// The subject's commonName and organizationName values, every occurrence (in any RDN); a value
/// that is not a UTF8String or PrintableString is None.
fn subject(name: &X509Name<'_>) -> (Vec<Option<String>>, Vec<Option<String>>) {
    let (mut common_name, mut organization) = (Vec::new(), Vec::new());
    for attribute in name.iter().flat_map(|rdn| rdn.iter()) {
        let value = attribute.attr_value();
        let text = match value.header.tag() {
            Tag::Utf8String | Tag::PrintableString => std::str::from_utf8(value.data).ok().map(str::to_string),
            _ => None,
        };
        if *attribute.attr_type() == OID_X509_COMMON_NAME {
            common_name.push(text);
        } else if *attribute.attr_type() == OID_X509_ORGANIZATION_NAME {
            organization.push(text);
        }
    }
    (common_name, organization)
}

/// A random positive serial of exactly [`SERIAL_BYTES`] bytes: the top bit clear (positive, so DER
/// adds no leading zero) and the next one set (no leading zero byte to strip), 158 random bits.
fn fresh_serial() -> [u8; SERIAL_BYTES] {
    let mut serial = [0u8; SERIAL_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut serial);
    serial[0] = (serial[0] & 0x7f) | 0x40;
    serial
}

fn offset_date_time(t: DateTime<Utc>) -> Result<time::OffsetDateTime, CsrRefusal> {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp()).map_err(|_| CsrRefusal::CaUnavailable)
}

/// PEM with 64-character lines, each ending in `\n`.
fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    // base64 is ASCII, so every 64-byte chunk is valid UTF-8.
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, DnValue, SanType};
    use rustls::pki_types::UnixTime;
    use rustls::server::WebPkiClientVerifier;
    use rustls::RootCertStore;
    use std::sync::Arc;

    const YEAR: chrono::Duration = chrono::Duration::days(365);

    // StationCa is shared between session actors in an Arc.
    const _: fn() = || {
        fn shared<T: Send + Sync>() {}
        shared::<StationCa>();
    };

    /// A CA certificate and key (as rcgen objects, to issue with in tests).
    struct TestCa {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn ca_params(name: &str, not_after: time::OffsetDateTime) -> CertificateParams {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, DnValue::PrintableString("DE".try_into().expect("printable")));
        dn.push(DnType::OrganizationName, "ocpp-css tests");
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = not_after;
        params
    }

    fn in_days(days: i64) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc() + time::Duration::days(days)
    }

    fn self_signed_ca(key: KeyPair, not_after: time::OffsetDateTime) -> TestCa {
        let cert = ca_params("Station Root", not_after).self_signed(&key).expect("test CA signs itself");
        TestCa { cert, key }
    }

    fn key_pem(key: &KeyPair) -> String {
        pem_encode("PRIVATE KEY", &key.serialize_der())
    }

    /// Writes the certificate file (the given PEMs concatenated) and the key, loads them.
    fn load(
        dir: &tempfile::TempDir,
        cert_pems: &[&str],
        key: &str,
        validity: chrono::Duration,
    ) -> anyhow::Result<StationCa> {
        let cert_path = dir.path().join("ca.pem");
        let key_path = dir.path().join("ca.key");
        std::fs::write(&cert_path, cert_pems.concat()).expect("write the CA certificate");
        std::fs::write(&key_path, key).expect("write the CA key");
        StationCa::load(&cert_path, &key_path, validity)
    }

    fn csr_with(key: &KeyPair, subject: DistinguishedName, customize: impl FnOnce(&mut CertificateParams)) -> String {
        let mut params = CertificateParams::default();
        params.distinguished_name = subject;
        customize(&mut params);
        let csr = params.serialize_request(key).expect("serialize a CSR");
        pem_encode("CERTIFICATE REQUEST", csr.der())
    }

    fn csr(station: &str, tenant: &str) -> String {
        let key = KeyPair::generate().expect("a station key");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, station);
        dn.push(DnType::OrganizationName, tenant);
        csr_with(&key, dn, |_| {})
    }

    fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>().expect("PEM certificates")
    }

    /// Verifies a chain (leaf first) as the TLS listener would, against `root`.
    fn verify_client(chain_pem: &str, root: &CertificateDer<'static>) -> Result<(), rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.add(root.clone()).expect("the root is a usable trust anchor");
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crate::tls::crypto_provider())
            .build()
            .expect("client verifier");
        let chain = certs(chain_pem);
        verifier.verify_client_cert(&chain[0], &chain[1..], UnixTime::now()).map(|_| ())
    }

    /// Checks everything about an issued certificate for (CP1, acme) by `ca_der`.
    fn check_issued(issued: &Issued, ca_der: &[u8], validity: chrono::Duration) {
        let chain = certs(&issued.chain_pem);
        let (_, leaf) = X509Certificate::from_der(&chain[0]).expect("the leaf parses");
        let (_, ca) = X509Certificate::from_der(ca_der).expect("the CA parses");

        let identity = crate::tls::client_identity(&chain[0]).expect("the leaf's subject reads");
        assert_eq!(identity.common_name.as_deref(), Some("CP1"));
        assert_eq!(identity.organization.as_deref(), Some("acme"));
        assert_eq!(leaf.subject().iter().count(), 2, "only O and CN: {}", leaf.subject());

        let eku = leaf.extended_key_usage().expect("EKU parses").expect("EKU present").value;
        assert!(eku.client_auth && !eku.server_auth && !eku.any && eku.other.is_empty());
        let ku = leaf.key_usage().expect("key usage parses").expect("key usage present").value;
        assert!(ku.digital_signature() && !ku.key_cert_sign());
        let bc = leaf.basic_constraints().expect("basic constraints parse").expect("basic constraints present");
        assert!(!bc.value.ca);
        assert!(leaf.subject_alternative_name().expect("SAN parses").is_none());

        let aki = leaf
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.clone(),
                _ => None,
            })
            .expect("authority key identifier");
        let ski = ca
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(ski) => Some(ski.clone()),
                _ => None,
            })
            .expect("the CA has a subject key identifier");
        assert_eq!(aki.0, ski.0);

        assert_eq!(leaf.issuer().as_raw(), ca.subject().as_raw());
        leaf.verify_signature(Some(ca.public_key())).expect("the leaf verifies with the CA's key");

        assert_eq!(issued.serial, hex::encode(leaf.raw_serial()));
        assert_eq!(issued.serial.len(), 40);
        assert!(leaf.raw_serial()[0] < 0x80, "positive serial");

        let now = Utc::now();
        assert_eq!(leaf.validity().not_before.timestamp(), issued.not_before.timestamp());
        assert_eq!(leaf.validity().not_after.timestamp(), issued.not_after.timestamp());
        assert!((issued.not_before - (now - BACKDATE)).num_seconds().abs() <= 5);
        assert!((issued.not_after - (now + validity)).num_seconds().abs() <= 5, "{}", issued.not_after);
        assert_eq!(not_after(&issued.chain_pem), Some(issued.not_after));
    }

    #[test]
    fn signs_a_csr_for_its_station_and_tenant() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = self_signed_ca(KeyPair::generate().expect("CA key"), in_days(3650));
        let ca_pem = ca.cert.pem_for_test();
        let station_ca = load(&dir, &[&ca_pem], &key_pem(&ca.key), YEAR).expect("load the CA");
        assert_eq!(station_ca.ca_pem(), ca_pem);

        let issued = station_ca.sign(&csr("CP1", "acme"), "CP1", "acme").expect("signed");
        check_issued(&issued, ca.cert.der(), YEAR);
        assert!(issued.chain_pem.ends_with(&ca_pem), "leaf then the CA as loaded");
        assert_eq!(certs(&issued.chain_pem).len(), 2);
        verify_client(&issued.chain_pem, ca.cert.der()).expect("a TLS listener trusting the CA accepts it");
        let stranger = self_signed_ca(KeyPair::generate().expect("another CA key"), in_days(3650));
        verify_client(&issued.chain_pem, stranger.cert.der()).expect_err("another CA with the same name does not");

        let again = station_ca.sign(&csr("CP1", "acme"), "CP1", "acme").expect("signed again");
        assert_ne!(again.serial, issued.serial);
    }

    #[test]
    fn other_key_types_sign_and_are_signed() {
        for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
            let dir = tempfile::tempdir().expect("tempdir");
            let ca = self_signed_ca(KeyPair::generate_for(alg).expect("CA key"), in_days(3650));
            let station_ca = load(&dir, &[&ca.cert.pem_for_test()], &key_pem(&ca.key), YEAR).expect("load the CA");
            for station_alg in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
                let key = KeyPair::generate_for(station_alg).expect("station key");
                let mut dn = DistinguishedName::new();
                dn.push(DnType::CommonName, "CP1");
                dn.push(DnType::OrganizationName, "acme");
                let issued = station_ca.sign(&csr_with(&key, dn, |_| {}), "CP1", "acme").expect("signed");
                check_issued(&issued, ca.cert.der(), YEAR);
                verify_client(&issued.chain_pem, ca.cert.der()).expect("accepted");
            }
        }
    }

    #[test]
    fn an_intermediate_ca_returns_its_whole_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = self_signed_ca(KeyPair::generate().expect("root key"), in_days(3650));
        let key = KeyPair::generate().expect("intermediate key");
        let intermediate = ca_params("Station Issuing CA", in_days(1000))
            .signed_by(&key, &root.cert, &root.key)
            .expect("the root signs the intermediate");
        let chain = [intermediate.pem_for_test(), root.cert.pem_for_test()];
        let chain = [chain[0].as_str(), chain[1].as_str()];
        let station_ca = load(&dir, &chain, &key_pem(&key), YEAR).expect("load the intermediate");
        assert_eq!(station_ca.ca_pem(), chain.concat());

        let issued = station_ca.sign(&csr("CP1", "acme"), "CP1", "acme").expect("signed");
        check_issued(&issued, intermediate.der(), YEAR);
        assert_eq!(certs(&issued.chain_pem).len(), 3);
        verify_client(&issued.chain_pem, root.cert.der()).expect("chains to the root");
    }

    #[test]
    fn never_outlives_the_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = self_signed_ca(KeyPair::generate().expect("CA key"), in_days(10));
        let station_ca = load(&dir, &[&ca.cert.pem_for_test()], &key_pem(&ca.key), YEAR).expect("load the CA");
        let issued = station_ca.sign(&csr("CP1", "acme"), "CP1", "acme").expect("signed");
        assert_eq!(issued.not_after, station_ca.ca_not_after());
        assert!((issued.not_after - (Utc::now() + chrono::Duration::days(10))).num_seconds().abs() <= 5);
        verify_client(&issued.chain_pem, ca.cert.der()).expect("accepted");
    }

    #[test]
    fn refuses_a_subject_that_is_not_the_station_and_tenant() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = self_signed_ca(KeyPair::generate().expect("CA key"), in_days(3650));
        let station_ca = load(&dir, &[&ca.cert.pem_for_test()], &key_pem(&ca.key), YEAR).expect("load the CA");
        let mismatch = |cn: Option<&str>, o: Option<&str>| CsrRefusal::SubjectMismatch {
            common_name: cn.map(str::to_string),
            organization: o.map(str::to_string),
        };

        let refused = station_ca.sign(&csr("CP2", "acme"), "CP1", "acme").expect_err("another station");
        assert_eq!(refused, mismatch(Some("CP2"), Some("acme")));
        assert_eq!(refused.as_str(), "subject_mismatch");
        assert!(refused.to_string().contains("CN=CP2"), "{refused}");
        assert_eq!(station_ca.sign(&csr("CP1", "evil"), "CP1", "acme"), Err(mismatch(Some("CP1"), Some("evil"))));
        assert_eq!(station_ca.sign(&csr("cp1", "acme"), "CP1", "acme"), Err(mismatch(Some("cp1"), Some("acme"))));
        assert_eq!(station_ca.sign(&csr("CP1 ", "acme"), "CP1", "acme"), Err(mismatch(Some("CP1 "), Some("acme"))));

        let key = KeyPair::generate().expect("station key");
        let mut only_cn = DistinguishedName::new();
        only_cn.push(DnType::CommonName, "CP1");
        let refused = station_ca.sign(&csr_with(&key, only_cn, |_| {}), "CP1", "acme");
        assert_eq!(refused, Err(mismatch(Some("CP1"), None)));

        // The same attribute twice is ambiguous, even when one of them is right (rcgen keeps one
        // attribute per type: openssl writes this one, when it is there).
        if let Some(pem) = openssl_csr(&dir, "/O=acme/CN=CP1/CN=CP2") {
            let refused = station_ca.sign(&pem, "CP1", "acme");
            assert_eq!(refused, Err(mismatch(Some("CP1"), Some("acme"))));
        }
    }

    #[test]
    fn takes_printable_strings_and_nothing_but_key_and_subject() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = self_signed_ca(KeyPair::generate().expect("CA key"), in_days(3650));
        let station_ca = load(&dir, &[&ca.cert.pem_for_test()], &key_pem(&ca.key), YEAR).expect("load the CA");
        let key = KeyPair::generate().expect("station key");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, DnValue::PrintableString("DE".try_into().expect("printable")));
        dn.push(DnType::OrganizationalUnitName, "chargers");
        dn.push(DnType::OrganizationName, DnValue::PrintableString("acme".try_into().expect("printable")));
        dn.push(DnType::CommonName, DnValue::PrintableString("CP1".try_into().expect("printable")));
        let pem = csr_with(&key, dn, |params| {
            params.subject_alt_names = vec![SanType::DnsName("csms.example".try_into().expect("DNS name"))];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        });
        let issued = station_ca.sign(&pem, "CP1", "acme").expect("signed");
        check_issued(&issued, ca.cert.der(), YEAR);
        let chain = certs(&issued.chain_pem);
        let (_, leaf) = X509Certificate::from_der(&chain[0]).expect("leaf parses");
        assert_eq!(leaf.public_key().raw, key.public_key_der().as_slice(), "the CSR's key");

        // Bare base64, as some stations send it, and surrounding whitespace.
        let bare: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        station_ca.sign(&bare, "CP1", "acme").expect("bare base64");
        station_ca.sign(&format!("\n  {pem}\n"), "CP1", "acme").expect("padded PEM");
    }

    #[test]
    fn refuses_unreadable_csrs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = self_signed_ca(KeyPair::generate().expect("CA key"), in_days(3650));
        let ca_pem = ca.cert.pem_for_test();
        let station_ca = load(&dir, &[&ca_pem], &key_pem(&ca.key), YEAR).expect("load the CA");
        let good = csr("CP1", "acme");
        let long = format!("{good}{}", " ".repeat(MAX_CSR_CHARS));
        let truncated = good.replace("-----END CERTIFICATE REQUEST-----\n", "");
        let body_only: String = good.lines().filter(|l| !l.starts_with("-----")).collect();
        let trailing_junk = format!("{good}junk");
        let der = csr_der(&good).expect("DER");
        let mut extra = der.clone();
        extra.push(0);
        for garbage in [
            "",
            "garbage",
            "-----BEGIN CERTIFICATE REQUEST-----\nnot base64!\n-----END CERTIFICATE REQUEST-----\n",
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            ca_pem.as_str(),
            long.as_str(),
            truncated.as_str(),
            &body_only[..body_only.len() / 2],
            trailing_junk.as_str(),
            &pem_encode("CERTIFICATE REQUEST", &der[..der.len() - 1]),
            &pem_encode("CERTIFICATE REQUEST", &extra),
            &pem_encode("CERTIFICATE", &der),
        ] {
            let refused = station_ca.sign(garbage, "CP1", "acme").expect_err(garbage);
            assert_eq!(refused, CsrRefusal::Unreadable, "{garbage:?}");
        }
        assert_eq!(CsrRefusal::Unreadable.as_str(), "unreadable");
        station_ca.sign(&pem_encode("NEW CERTIFICATE REQUEST", &der), "CP1", "acme").expect("the old label");
    }

    #[test]
    fn refuses_a_broken_signature() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = self_signed_ca(KeyPair::generate().expect("CA key"), in_days(3650));
        let station_ca = load(&dir, &[&ca.cert.pem_for_test()], &key_pem(&ca.key), YEAR).expect("load the CA");
        let mut der = csr_der(&csr("CP1", "acme")).expect("DER");
        // The signature BIT STRING ends the request; its last byte is the low byte of the ECDSA s.
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let refused = station_ca.sign(&pem_encode("CERTIFICATE REQUEST", &der), "CP1", "acme");
        assert_eq!(refused, Err(CsrRefusal::BadSignature));
        assert_eq!(CsrRefusal::BadSignature.as_str(), "bad_signature");

        // A subject changed after signing: the signature no longer covers it.
        let mut der = csr_der(&csr("CP2", "acme")).expect("DER");
        let at = der.windows(3).position(|w| w == b"CP2").expect("the CN in the DER");
        der[at + 2] = b'1';
        let refused = station_ca.sign(&pem_encode("CERTIFICATE REQUEST", &der), "CP1", "acme");
        assert_eq!(refused, Err(CsrRefusal::BadSignature));
    }

    #[test]
    fn an_rsa_ca_signs_rsa_and_ec_csrs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Some(ca_key_pem) = openssl_rsa_key(&dir, "ca-rsa.key") else {
            eprintln!("skipped: no openssl binary to make an RSA key");
            return;
        };
        let ca_key = key_from_pem(&ca_key_pem);
        let ca = self_signed_ca(ca_key, in_days(3650));
        let station_ca = load(&dir, &[&ca.cert.pem_for_test()], &ca_key_pem, YEAR).expect("load the RSA CA");

        let issued = station_ca.sign(&csr("CP1", "acme"), "CP1", "acme").expect("an EC CSR");
        check_issued(&issued, ca.cert.der(), YEAR);
        verify_client(&issued.chain_pem, ca.cert.der()).expect("accepted");

        let station_key = key_from_pem(&openssl_rsa_key(&dir, "station-rsa.key").expect("openssl ran once already"));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "CP1");
        dn.push(DnType::OrganizationName, "acme");
        let issued = station_ca.sign(&csr_with(&station_key, dn, |_| {}), "CP1", "acme").expect("an RSA CSR");
        check_issued(&issued, ca.cert.der(), YEAR);
        verify_client(&issued.chain_pem, ca.cert.der()).expect("accepted");

        // A SHA-1 signed request is not taken.
        if let Some(pem) = openssl_csr_with(&dir, "/O=acme/CN=CP1", "-sha1") {
            assert_eq!(station_ca.sign(&pem, "CP1", "acme"), Err(CsrRefusal::UnsupportedKey));
        }
    }

    #[test]
    fn load_refuses_what_cannot_issue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = self_signed_ca(KeyPair::generate().expect("CA key"), in_days(3650));
        let ca_pem = ca.cert.pem_for_test();
        let other_key = KeyPair::generate().expect("another key");

        let err = load(&dir, &[&ca_pem], &key_pem(&other_key), YEAR).expect_err("the wrong key");
        assert!(format!("{err:#}").contains("does not belong"), "{err:#}");
        load(&dir, &[], &key_pem(&ca.key), YEAR).expect_err("no certificate");
        load(&dir, &[&ca_pem], "not a key", YEAR).expect_err("no key");
        load(&dir, &[&ca_pem], &key_pem(&ca.key), chrono::Duration::zero()).expect_err("no validity");

        let leaf_key = KeyPair::generate().expect("leaf key");
        let mut leaf_params = ca_params("not a CA", in_days(100));
        leaf_params.is_ca = IsCa::ExplicitNoCa;
        let leaf = leaf_params.signed_by(&leaf_key, &ca.cert, &ca.key).expect("leaf");
        let err = load(&dir, &[&leaf.pem_for_test()], &key_pem(&leaf_key), YEAR).expect_err("not a CA");
        assert!(format!("{err:#}").contains("not a CA"), "{err:#}");

        let mut expired = ca_params("expired", in_days(-1));
        expired.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(10);
        let expired = expired.self_signed(&ca.key).expect("expired CA");
        let err = load(&dir, &[&expired.pem_for_test()], &key_pem(&ca.key), YEAR).expect_err("expired");
        assert!(format!("{err:#}").contains("expired"), "{err:#}");

        // An EC key in SEC1 form is explained.
        let sec1 = ca_key_as_sec1(&dir, &key_pem(&ca.key));
        if let Some(sec1) = sec1 {
            let err = load(&dir, &[&ca_pem], &sec1, YEAR).expect_err("SEC1");
            assert!(format!("{err:#}").contains("PKCS#8"), "{err:#}");
        }
    }

    #[test]
    fn reads_not_after() {
        let ca = self_signed_ca(KeyPair::generate().expect("CA key"), in_days(30));
        let expected = ca.cert.params().not_after.unix_timestamp();
        assert_eq!(not_after(&ca.cert.pem_for_test()).map(|t| t.timestamp()), Some(expected));
        assert_eq!(not_after("garbage"), None);
        assert_eq!(not_after(""), None);
        assert_eq!(not_after(&pem_encode("CERTIFICATE", b"\x30\x03\x02\x01\x00")), None);
    }

    trait PemForTest {
        fn pem_for_test(&self) -> String;
    }

    impl PemForTest for rcgen::Certificate {
        fn pem_for_test(&self) -> String {
            pem_encode("CERTIFICATE", self.der())
        }
    }

    fn key_from_pem(pem: &str) -> KeyPair {
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("a PEM key");
        KeyPair::try_from(&der).expect("a key rcgen takes")
    }

    fn openssl(args: &[&str]) -> Option<std::process::Output> {
        match std::process::Command::new("openssl").args(args).output() {
            Ok(out) => {
                assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
                Some(out)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("running openssl: {e}"),
        }
    }

    /// A PKCS#8 RSA-2048 key from the openssl binary; None without one.
    fn openssl_rsa_key(dir: &tempfile::TempDir, name: &str) -> Option<String> {
        let path = dir.path().join(name);
        let path_str = path.to_str().expect("a UTF-8 temp path");
        openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path_str])?;
        Some(std::fs::read_to_string(&path).expect("openssl wrote the key"))
    }

    fn openssl_csr(dir: &tempfile::TempDir, subject: &str) -> Option<String> {
        openssl_csr_with(dir, subject, "-sha256")
    }

    /// A CSR with an RSA key made by openssl with this subject (`/O=acme/CN=CP1`); None without it.
    fn openssl_csr_with(dir: &tempfile::TempDir, subject: &str, digest: &str) -> Option<String> {
        let key = dir.path().join("csr.key");
        let key = key.to_str().expect("a UTF-8 temp path");
        let out = openssl(&["req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-subj", subject, digest])?;
        Some(String::from_utf8(out.stdout).expect("PEM is ASCII"))
    }

    fn ca_key_as_sec1(dir: &tempfile::TempDir, pkcs8: &str) -> Option<String> {
        let path = dir.path().join("pkcs8.key");
        std::fs::write(&path, pkcs8).expect("write the key");
        let out = openssl(&["ec", "-in", path.to_str().expect("a UTF-8 temp path")])?;
        Some(String::from_utf8(out.stdout).expect("PEM is ASCII"))
    }
}
