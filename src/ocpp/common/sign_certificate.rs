//! SignCertificate (1.6 security extension, 2.0.1 A02/A03): the station asks for its CSR to be
//! signed. With a station CA configured, a CSR whose subject names the station (CN = station id,
//! O = the tenant's slug, as a profile-3 connection is checked) is signed at once: the request is
//! answered Accepted, the certificate is recorded on the station, and the session sends it to the
//! station (CertificateSigned) once the answer is out ([`Notice::SendCertificate`]). Without a CA,
//! or for a CSR the CA will not sign, the answer is Rejected, and the refusal counted by reason.

use super::events::record_event;
use super::notice::Notice;
use crate::metrics as m;
use crate::model::{events, CertificateStatus, IssuedCertificate, StationChange};
use crate::ocpp::context::{HandlerError, StationContext};
use serde_json::json;

/// Outcomes of a signing request: the `outcome` label of [`m::CERTIFICATE_SIGNINGS`].
pub const OUTCOMES: [&str; 6] =
    ["issued", "no_ca", "unsupported_type", "unreadable", "bad_signature", "subject_mismatch"];

/// Handles a CSR of `certificate_type` (2.0.1; None for 1.6, where it is always the station's
/// own): whether it was accepted, and the notice that sends the certificate.
pub async fn sign(
    ctx: &StationContext<'_>,
    csr: &str,
    certificate_type: Option<&str>,
) -> Result<(bool, Option<Notice>), HandlerError> {
    // Kept for the record, as any message the station sends about its security.
    record_event(ctx, "SignCertificate", &json!({"csr": csr, "certificateType": certificate_type})).await?;
    let refuse = |outcome: &'static str, reason: &str| {
        metrics::counter!(m::CERTIFICATE_SIGNINGS, "outcome" => outcome).increment(1);
        ctx.emit(events::certificate_changed(ctx.station_id, "refused", None, None, Some(reason)));
        Ok((false, None))
    };
    let Some(ca) = ctx.settings.station_ca.as_ref() else {
        metrics::counter!(m::CERTIFICATE_SIGNINGS, "outcome" => "no_ca").increment(1);
        return Ok((false, None));
    };
    // The station CA issues client certificates; a V2G certificate is another PKI's.
    if certificate_type.is_some_and(|t| t != "ChargingStationCertificate") {
        return refuse("unsupported_type", "only ChargingStationCertificate is signed here");
    }
    let issued = match ca.sign(csr, ctx.station_id.as_str(), ctx.tenant_slug) {
        Ok(issued) => issued,
        Err(refusal) => {
            crate::warn_limited!(station = ctx.station_id.as_str(), reason = refusal.as_str(), "CSR refused");
            return refuse(refusal.as_str(), &refusal.to_string());
        }
    };
    let record = IssuedCertificate {
        serial: issued.serial.clone(),
        issued_at: chrono::Utc::now(),
        not_after: issued.not_after,
        status: CertificateStatus::Issued,
    };
    ctx.store.change_station(ctx.account_id, ctx.station_id, &StationChange::CertificateIssued(record)).await?;
    metrics::counter!(m::CERTIFICATE_SIGNINGS, "outcome" => "issued").increment(1);
    tracing::info!(station = ctx.station_id.as_str(), serial = %issued.serial, not_after = %issued.not_after, "station certificate issued");
    ctx.emit(events::certificate_changed(ctx.station_id, "issued", Some(&issued.serial), Some(issued.not_after), None));
    Ok((true, Some(Notice::SendCertificate { chain: issued.chain_pem, serial: issued.serial })))
}

/// Registers the signing counter of every outcome at zero.
pub fn register_metrics() {
    for outcome in OUTCOMES {
        metrics::counter!(m::CERTIFICATE_SIGNINGS, "outcome" => outcome).increment(0);
    }
}
