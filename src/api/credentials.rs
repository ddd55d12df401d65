//! A station's credentials over time, through the API: password rotation, certificate renewal
//! and the certificates on the station, moving its security profile up. The rules (what is
//! pending, what an answer settles, which way a profile may move) are the model's
//! ([`crate::model`], `credentials`); this is where the API sends the commands that carry them out
//! (through [`super::commands::dispatch`], like any command) and records what the station said.

use super::commands::{dispatch, Sent, Target};
use super::stations::change;
use super::{check_printable, ApiError, Tenant};
use crate::auth;
use crate::ids::{AccountId, StationId};
use crate::model::{
    events, password_command, profile_commands, profile_step_accepted, renewal_trigger, PasswordAnswer,
    SecurityProfile, Station, PASSWORD_MAX, PASSWORD_MIN,
};
use crate::ocpp::Version;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

/// Checks an operator-chosen password (16 to 40 printable characters) and hashes it with argon2.
pub(crate) async fn check_and_hash(state: &AppState, password: &str) -> Result<String, ApiError> {
    check_printable("password", password, PASSWORD_MIN, PASSWORD_MAX)?;
    let (_, hash) = super::stations::station_secret(state, Some(password.to_string())).await?;
    Ok(hash)
}

/// Records `hash` as the station's pending password in the change `change_id`.
pub(crate) async fn propose(
    state: &AppState,
    account_id: &AccountId,
    station_id: &StationId,
    hash: String,
    change_id: &str,
) -> Result<(), ApiError> {
    let now = chrono::Utc::now();
    change(state, account_id, station_id, |s| s.propose_password(hash.clone(), change_id.to_string(), now)).await?;
    super::events::emit(state, account_id, events::password_changed(station_id, "requested", change_id)).await;
    Ok(())
}

/// The station answered the password change `change_id`: settled as the model says, and told.
pub(crate) async fn settle(
    state: &AppState,
    account_id: &AccountId,
    station_id: &StationId,
    change_id: &str,
    answer: PasswordAnswer,
) -> Result<(), ApiError> {
    let now = chrono::Utc::now();
    let grace = state.settings.ocpp.password_grace();
    let settled = std::sync::atomic::AtomicBool::new(false);
    state
        .account_store
        .update_station(account_id, station_id, &|s| {
            settled.store(s.settle_password(change_id, answer, now, grace), std::sync::atomic::Ordering::Relaxed)
        })
        .await?;
    if settled.into_inner() {
        let outcome = if answer == PasswordAnswer::Accepted { "accepted" } else { "rejected" };
        tracing::info!(account = %account_id, station = %station_id, change = change_id, outcome, "station password change settled");
        super::events::emit(state, account_id, events::password_changed(station_id, outcome, change_id)).await;
    }
    Ok(())
}

/// A station connected with its pending password: it took it, so it is current from now on.
pub async fn pending_password_used(state: &AppState, account_id: &AccountId, station: &Station) {
    let Some(pending) = &station.pending_password else { return };
    if let Err(e) = settle(state, account_id, &station.id, &pending.change_id, PasswordAnswer::Accepted).await {
        tracing::warn!(account = %account_id, station = %station.id, error = %e, "could not record the password the station connected with");
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    /// The new password (16 to 40 printable characters); generated when absent.
    password: Option<String>,
    /// Queue the change for an offline station (the default); false answers 409 instead.
    queue: Option<bool>,
    /// Seconds a queued change waits for the station.
    expires_in: Option<u64>,
}

/// `POST /stations/{id}/password`: tells the station a new Basic-auth password with its version's
/// mechanism. It becomes current once the station accepts it (or connects with it); the old one
/// keeps working for `ocpp.password_grace_secs` after that.
pub async fn rotate_password(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    path: web::Path<StationId>,
    body: web::Json<NewPassword>,
) -> Result<HttpResponse, ApiError> {
    let NewPassword { password, queue, expires_in } = body.into_inner();
    let target = Target::find(&state, &account.id, &path).await?;
    let (password, hash, generated) = match password {
        Some(p) => {
            let hash = check_and_hash(&state, &p).await?;
            (p, hash, false)
        }
        None => {
            let p = auth::random_secret(auth::STATION_SECRET_LEN);
            let hash = auth::hash_generated_secret(&p);
            (p, hash, true)
        }
    };
    let (action, payload) = password_command(target.version(), &password);
    let queue = queue.unwrap_or(true).then_some(expires_in);
    let sent = match dispatch(&state, &target, action, payload, queue, Some(hash)).await {
        // The generic answer names the command route's `?queue=true`; this route takes `queue` in its body.
        Err(ApiError::StationNotConnected(_)) if queue.is_none() => {
            return Err(ApiError::StationNotConnected(format!(
                "station {} is not connected; leave out \"queue\": false to tell it the new password when it connects",
                target.key.station_id
            )))
        }
        sent => sent?,
    };
    let shown = generated.then_some(password);
    Ok(match sent {
        Sent::Answered(response) => {
            let version = target.version();
            let status = match crate::model::password_answer(version, action, &response) {
                PasswordAnswer::Accepted => "accepted",
                PasswordAnswer::Rejected => "rejected",
            };
            HttpResponse::Ok().json(json!({"status": status, "password": shown, "response": response}))
        }
        Sent::Queued(command) => HttpResponse::Accepted().json(json!({
            "status": "queued",
            "command_id": command.id,
            "expires_at": command.expires_at,
            "password": shown,
        })),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpgrade {
    security_profile: SecurityProfile,
    /// 2.0.1: the network configuration slot the new profile is written to (default 1).
    configuration_slot: Option<u32>,
}

/// `POST /stations/{id}/security-profile`: moves a connected station up to profile 2 or 3 as OCPP
/// describes it (1.6: `ChangeConfiguration` of `SecurityProfile`; 2.0.1: `SetNetworkProfile`, the
/// slot made first in `NetworkConfigurationPriority`, `Reset` OnIdle). Once the station accepted,
/// the new profile is its profile: its next connection is held to the new rules.
pub async fn upgrade_profile(
    state: web::Data<AppState>,
    req: HttpRequest,
    Tenant(account): Tenant,
    path: web::Path<StationId>,
    body: web::Json<ProfileUpgrade>,
) -> Result<HttpResponse, ApiError> {
    let ProfileUpgrade { security_profile: to, configuration_slot } = body.into_inner();
    super::stations::check_profile(&state, to)?;
    let target = Target::find(&state, &account.id, &path).await?;
    let from = target.station.security_profile;
    if !from.can_upgrade_to(to) {
        return Err(ApiError::invalid(
            "invalid_field",
            format!(
                "a station's profile moves up only: this one is on profile {}; to set any profile outright, PATCH the station",
                u8::from(from)
            ),
        ));
    }
    target.require_live()?;
    let version = target.version();
    let slot = configuration_slot.unwrap_or(1);
    // 2.0.1 names the CSMS without the station's own id, which the station appends.
    let mut upgraded = target.station.clone();
    upgraded.security_profile = to;
    let url = super::stations::ocpp_url(&state, &req, &account, &upgraded);
    let csms_url = url.strip_suffix(&format!("/{}", upgraded.id)).unwrap_or(&url).to_string();
    let now = chrono::Utc::now();
    change(&state, &account.id, &path, move |s| s.profile_requested(to, now)).await?;
    let change = |outcome: &str| events::profile_changed(&path, from, to, outcome);
    super::events::emit(&state, &account.id, change("requested")).await;
    let mut answers = Vec::new();
    let mut accepted = true;
    for (action, payload) in profile_commands(version, to, &csms_url, slot) {
        let answer = match dispatch(&state, &target, action, payload, None, None).await {
            Ok(Sent::Answered(response)) => response,
            Ok(Sent::Queued(_)) => return Err(ApiError::Internal("a command sent at once was queued".into())),
            Err(e) => {
                // No answer, or an error answer: the station did not take the profile.
                settle_profile(&state, &account.id, &path, false).await?;
                super::events::emit(&state, &account.id, change("rejected")).await;
                return Err(e);
            }
        };
        let ok = profile_step_accepted(action, &answer);
        answers.push(json!({"action": action, "response": answer}));
        if !ok {
            accepted = false;
            break;
        }
    }
    let station = settle_profile(&state, &account.id, &path, accepted).await?;
    let outcome = if accepted { "accepted" } else { "rejected" };
    super::events::emit(&state, &account.id, change(outcome)).await;
    tracing::info!(account = %account.id, station = %path, from = u8::from(from), to = u8::from(to), outcome, "security profile upgrade");
    Ok(HttpResponse::Ok().json(json!({
        "status": outcome,
        "security_profile": station.security_profile,
        "profile_change": station.profile_change,
        "answers": answers,
    })))
}

async fn settle_profile(
    state: &AppState,
    account_id: &AccountId,
    station_id: &StationId,
    accepted: bool,
) -> Result<Station, ApiError> {
    let now = chrono::Utc::now();
    change(state, account_id, station_id, move |s| s.profile_answered(accepted, now)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueOptions {
    /// Queue for an offline station instead of answering 409.
    #[serde(default)]
    queue: bool,
    expires_in: Option<u64>,
}

impl QueueOptions {
    fn queue(&self) -> Option<Option<u64>> {
        self.queue.then_some(self.expires_in)
    }
}

/// `POST /stations/{id}/certificate/renew`: asks the station to send a new CSR (1.6
/// `ExtendedTriggerMessage`, 2.0.1 `TriggerMessage` of its SignCertificate); the station CA signs
/// it when it comes. Queued for an offline station with `?queue=true`.
pub async fn renew_certificate(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    path: web::Path<StationId>,
    options: web::Query<QueueOptions>,
) -> Result<HttpResponse, ApiError> {
    if state.handler_settings.station_ca.is_none() {
        return Err(ApiError::Conflict(
            "no station CA is configured (station_ca.cert_path, station_ca.key_path): a CSR would be refused".into(),
        ));
    }
    let target = Target::find(&state, &account.id, &path).await?;
    let (action, payload) = renewal_trigger(target.version());
    Ok(dispatch(&state, &target, action, payload, options.queue(), None).await?.respond())
}

/// The certificate types the API names, and each version's name for them.
fn certificate_type(version: Version, name: &str) -> Result<&'static str, ApiError> {
    let found = match (version, name) {
        (Version::V16, "csms_root") => Some("CentralSystemRootCertificate"),
        (Version::V16, "manufacturer_root") => Some("ManufacturerRootCertificate"),
        (Version::V201, "csms_root") => Some("CSMSRootCertificate"),
        (Version::V201, "manufacturer_root") => Some("ManufacturerRootCertificate"),
        (Version::V201, "v2g_root") => Some("V2GRootCertificate"),
        (Version::V201, "mo_root") => Some("MORootCertificate"),
        _ => None,
    };
    found.ok_or_else(|| {
        let names = match version {
            Version::V16 => "csms_root, manufacturer_root",
            Version::V201 => "csms_root, manufacturer_root, v2g_root, mo_root",
        };
        ApiError::invalid(
            "invalid_field",
            format!("certificate type {name} is not one an {} station keeps ({names})", version.subprotocol()),
        )
    })
}

/// The API's name of a version's certificate type.
fn certificate_type_name(ocpp: &str) -> &str {
    match ocpp {
        "CentralSystemRootCertificate" | "CSMSRootCertificate" => "csms_root",
        "ManufacturerRootCertificate" => "manufacturer_root",
        "V2GRootCertificate" => "v2g_root",
        "MORootCertificate" => "mo_root",
        "V2GCertificateChain" => "v2g_chain",
        other => other,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Install {
    #[serde(rename = "type")]
    kind: String,
    /// PEM. For `csms_root`, absent means this server's own TLS root (the last certificate of
    /// `tls.cert_path`).
    certificate: Option<String>,
}

/// `POST /stations/{id}/certificates`: installs a root certificate on the station
/// (`InstallCertificate`): the CSMS root before a station moves to TLS, a manufacturer root.
pub async fn install(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    path: web::Path<StationId>,
    options: web::Query<QueueOptions>,
    body: web::Json<Install>,
) -> Result<HttpResponse, ApiError> {
    let Install { kind, certificate } = body.into_inner();
    let target = Target::find(&state, &account.id, &path).await?;
    let version = target.version();
    let ocpp_type = certificate_type(version, &kind)?;
    let certificate = match certificate {
        Some(pem) => pem,
        None if kind == "csms_root" => server_root(&state)?,
        None => return Err(ApiError::invalid("invalid_field", "certificate (PEM) is required for this type")),
    };
    let payload = json!({"certificateType": ocpp_type, "certificate": certificate});
    Ok(dispatch(&state, &target, "InstallCertificate", payload, options.queue(), None).await?.respond())
}

/// The last certificate of the TLS listener's chain: the root stations are to trust.
fn server_root(state: &AppState) -> Result<String, ApiError> {
    let tls = &state.settings.tls;
    if !tls.enabled {
        return Err(ApiError::Conflict(
            "the TLS listener is off (tls.enabled): there is no CSMS root to install".into(),
        ));
    }
    let text = std::fs::read_to_string(&tls.cert_path)
        .map_err(|e| ApiError::Internal(format!("reading {}: {e}", tls.cert_path.display())))?;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    let start = text.rfind(BEGIN).ok_or_else(|| ApiError::Internal("no certificate in tls.cert_path".into()))?;
    let end = text[start..].find("-----END CERTIFICATE-----").map(|e| start + e + "-----END CERTIFICATE-----".len());
    let end = end.ok_or_else(|| ApiError::Internal("an unterminated certificate in tls.cert_path".into()))?;
    Ok(format!("{}\n", &text[start..end]))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstalledQuery {
    /// Certificate types to list, comma-separated (1.6: exactly one; default csms_root).
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// `GET /stations/{id}/certificates`: the certificates installed on a connected station
/// (`GetInstalledCertificateIds`), as hash data (what `DELETE` takes).
pub async fn installed(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    path: web::Path<StationId>,
    q: web::Query<InstalledQuery>,
) -> Result<HttpResponse, ApiError> {
    let target = Target::find(&state, &account.id, &path).await?;
    target.require_live()?;
    let version = target.version();
    let kinds: Vec<&str> = q.kind.as_deref().map(|k| k.split(',').map(str::trim).collect()).unwrap_or_default();
    let payload = match version {
        Version::V16 => {
            let kind = match kinds.as_slice() {
                [] => "csms_root",
                [kind] => kind,
                _ => {
                    return Err(ApiError::invalid(
                        "invalid_query",
                        "a 1.6 station lists one certificate type at a time",
                    ))
                }
            };
            json!({"certificateType": certificate_type(version, kind)?})
        }
        Version::V201 if kinds.is_empty() => json!({}),
        Version::V201 => {
            let types = kinds.iter().map(|k| certificate_type(version, k)).collect::<Result<Vec<_>, _>>()?;
            json!({"certificateType": types})
        }
    };
    installed_of(&state, &target, payload).await
}

async fn installed_of(state: &AppState, target: &Target, payload: Value) -> Result<HttpResponse, ApiError> {
    let Sent::Answered(response) =
        dispatch(state, target, "GetInstalledCertificateIds", payload.clone(), None, None).await?
    else {
        return Err(ApiError::Internal("a command sent at once was queued".into()));
    };
    let hash = |h: &Value, kind: Option<&str>| {
        json!({
            "type": kind.map(certificate_type_name),
            "hash_algorithm": h.get("hashAlgorithm"),
            "issuer_name_hash": h.get("issuerNameHash"),
            "issuer_key_hash": h.get("issuerKeyHash"),
            "serial_number": h.get("serialNumber"),
        })
    };
    let certificates: Vec<Value> = match target.version() {
        Version::V16 => {
            let kind = payload.get("certificateType").and_then(Value::as_str);
            let list = response.get("certificateHashData").and_then(Value::as_array);
            list.into_iter().flatten().map(|h| hash(h, kind)).collect()
        }
        Version::V201 => {
            let list = response.get("certificateHashDataChain").and_then(Value::as_array);
            list.into_iter()
                .flatten()
                .filter_map(|c| {
                    let kind = c.get("certificateType").and_then(Value::as_str);
                    c.get("certificateHashData").map(|h| hash(h, kind))
                })
                .collect()
        }
    };
    let status = response.get("status").and_then(Value::as_str).unwrap_or("");
    Ok(HttpResponse::Ok().json(json!({
        "status": super::commands::snake(status),
        "certificates": certificates,
        "response": response,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateHash {
    hash_algorithm: String,
    issuer_name_hash: String,
    issuer_key_hash: String,
    #[serde(default)]
    queue: bool,
    expires_in: Option<u64>,
}

/// `DELETE /stations/{id}/certificates/{serial_number}?hash_algorithm=&issuer_name_hash=&issuer_key_hash=`:
/// removes an installed certificate (`DeleteCertificate`), named by the hash data
/// `GET /stations/{id}/certificates` lists.
pub async fn delete(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    path: web::Path<(StationId, String)>,
    q: web::Query<CertificateHash>,
) -> Result<HttpResponse, ApiError> {
    let (station_id, serial_number) = path.into_inner();
    let q = q.into_inner();
    let target = Target::find(&state, &account.id, &station_id).await?;
    let payload = json!({"certificateHashData": {
        "hashAlgorithm": q.hash_algorithm,
        "issuerNameHash": q.issuer_name_hash,
        "issuerKeyHash": q.issuer_key_hash,
        "serialNumber": serial_number,
    }});
    let queue = q.queue.then_some(q.expires_in);
    Ok(dispatch(&state, &target, "DeleteCertificate", payload, queue, None).await?.respond())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    /// PEM chain: the station's certificate first.
    certificate_chain: String,
    /// 2.0.1: `charging_station` (default) or `v2g`.
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// `POST /stations/{id}/certificate-signed`: sends the station a certificate chain signed
/// elsewhere (`CertificateSigned`); certificates this server's station CA signs are sent without
/// being asked.
pub async fn certificate_signed(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    path: web::Path<StationId>,
    options: web::Query<QueueOptions>,
    body: web::Json<Signed>,
) -> Result<HttpResponse, ApiError> {
    let Signed { certificate_chain, kind } = body.into_inner();
    let target = Target::find(&state, &account.id, &path).await?;
    let payload = match (target.version(), kind.as_deref()) {
        (Version::V16, None) => json!({"certificateChain": certificate_chain}),
        (Version::V201, None | Some("charging_station")) => {
            json!({"certificateChain": certificate_chain, "certificateType": "ChargingStationCertificate"})
        }
        (Version::V201, Some("v2g")) => {
            json!({"certificateChain": certificate_chain, "certificateType": "V2GCertificate"})
        }
        (version, Some(other)) => {
            return Err(ApiError::invalid(
                "invalid_field",
                format!(
                    "type {other} is not one an {} station takes (2.0.1: charging_station, v2g)",
                    version.subprotocol()
                ),
            ))
        }
    };
    Ok(dispatch(&state, &target, "CertificateSigned", payload, options.queue(), None).await?.respond())
}

/// What a station's view shows of its credentials (never a hash).
pub fn view(station: &Station) -> Value {
    json!({
        "password_changed_at": station.password_changed_at,
        "password_change_pending": station.pending_password.as_ref().map(|p| json!({
            "change_id": p.change_id,
            "requested_at": p.requested_at,
        })),
        "previous_password_valid_until": station.previous_password.as_ref().map(|p| p.until),
        "certificates": station.certificates,
        "certificate_expires_at": station.certificate_expiry(),
        "profile_change": station.profile_change,
    })
}
