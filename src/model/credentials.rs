//! A station's credentials over time: its Basic-auth password and the rotation of it, the client
//! certificates the station CA issued it, and moves of its security profile.
//!
//! The rules live here, once, for every caller (the API, the station's session, queued delivery)
//! and every store:
//! - A new password is *pending* until the station accepts it: the command that tells it
//!   (1.6 `ChangeConfiguration` of `AuthorizationKey`, 2.0.1 `SetVariables` of
//!   `SecurityCtrlr.BasicAuthPassword`) is answered Accepted, or the station connects with it
//!   (it evidently took it, whatever became of the answer). It then becomes current, and the
//!   password it replaces keeps working for a grace window, so a station reconnecting with either
//!   gets in. A rejected change is dropped; the old password stays.
//! - Each change carries an id; an answer settles only the change it belongs to, so a late answer
//!   to an older change cannot promote a newer password.
//! - A profile moves up only (1 → 2 → 3), as OCPP asks; it takes effect once the station accepted
//!   the change, from its next connection.

use super::{SecurityProfile, Station};
use crate::ocpp::Version;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Shortest and longest Basic-auth password (OCPP security profile 1: 16 to 40 characters).
pub const PASSWORD_MIN: usize = 16;
pub const PASSWORD_MAX: usize = 40;
/// Issued certificates kept on a station's record, newest last.
pub const KEPT_CERTIFICATES: usize = 5;

/// A password the station has been (or is to be) told, not yet accepted by it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingPassword {
    /// Hashed as any station password ([`crate::auth`]).
    pub hash: String,
    /// The change this password belongs to: the queued command's id, or one made for a command
    /// sent at once.
    pub change_id: String,
    pub requested_at: DateTime<Utc>,
}

/// The password a rotation replaced, still accepted until `until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetiredPassword {
    pub hash: String,
    pub until: DateTime<Utc>,
}

/// How the station answered the command that told it a new password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordAnswer {
    Accepted,
    Rejected,
}

/// Which of a station's passwords a connection used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSlot {
    Current,
    /// The one a rotation replaced, within its grace window.
    Previous,
    /// The one the station was told and has not been recorded as accepting.
    Pending,
}

/// Where a certificate the station CA issued is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateStatus {
    /// Signed and on its way to the station (CertificateSigned).
    Issued,
    /// The station answered CertificateSigned with Accepted.
    Installed,
    /// The station answered Rejected, or could not be told.
    Rejected,
}

/// A client certificate the station CA issued a station.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuedCertificate {
    /// Lower-case hex.
    pub serial: String,
    pub issued_at: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub status: CertificateStatus,
}

/// Where a move of the station's security profile is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileChangeStatus {
    /// Told to the station; its answer has not come.
    Requested,
    /// The station accepted: the new profile's rules apply from its next connection.
    Accepted,
    /// The station refused (or answered with an error); the profile stays.
    Rejected,
}

/// The latest move of the station's security profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileChange {
    pub from: SecurityProfile,
    pub to: SecurityProfile,
    pub status: ProfileChangeStatus,
    pub requested_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
}

/// The new password a command tells the station, if it tells one: 1.6 `ChangeConfiguration` of
/// `AuthorizationKey`; 2.0.1 `SetVariables` of `SecurityCtrlr.BasicAuthPassword` (its Actual
/// attribute, the default).
pub fn password_in_command<'a>(version: Version, action: &str, payload: &'a Value) -> Option<&'a str> {
    match (version, action) {
        (Version::V16, "ChangeConfiguration") => {
            (payload.get("key")?.as_str()? == "AuthorizationKey").then(|| payload.get("value")?.as_str())?
        }
        (Version::V201, "SetVariables") => payload
            .get("setVariableData")?
            .as_array()?
            .iter()
            .find(|d| is_password_variable(d) && attribute_is_actual(d))?
            .get("attributeValue")?
            .as_str(),
        _ => None,
    }
}

fn is_password_variable(d: &Value) -> bool {
    d.pointer("/component/name").and_then(Value::as_str) == Some("SecurityCtrlr")
        && d.pointer("/variable/name").and_then(Value::as_str) == Some("BasicAuthPassword")
}

fn attribute_is_actual(d: &Value) -> bool {
    d.get("attributeType").and_then(Value::as_str).is_none_or(|t| t == "Actual")
}

/// The command that tells a station of `version` its new password.
pub fn password_command(version: Version, password: &str) -> (&'static str, Value) {
    match version {
        Version::V16 => ("ChangeConfiguration", json!({"key": "AuthorizationKey", "value": password})),
        Version::V201 => (
            "SetVariables",
            json!({"setVariableData": [{
                "attributeType": "Actual",
                "attributeValue": password,
                "component": {"name": "SecurityCtrlr"},
                "variable": {"name": "BasicAuthPassword"},
            }]}),
        ),
    }
}

/// How the station answered a password command (`action` is one [`password_in_command`]
/// recognised). Accepted and RebootRequired both accept: the station uses the password from its
/// next connection either way. An answer that says nothing of the password (no result for the
/// variable) is taken as a refusal: nothing shows the station took it.
pub fn password_answer(version: Version, action: &str, response: &Value) -> PasswordAnswer {
    let accepted = |status: Option<&str>| matches!(status, Some("Accepted") | Some("RebootRequired"));
    let ok = match (version, action) {
        (Version::V16, "ChangeConfiguration") => accepted(response.get("status").and_then(Value::as_str)),
        (Version::V201, "SetVariables") => accepted(
            response
                .get("setVariableResult")
                .and_then(Value::as_array)
                .and_then(|results| results.iter().find(|r| is_password_variable(r) && attribute_is_actual(r)))
                .and_then(|r| r.get("attributeStatus"))
                .and_then(Value::as_str),
        ),
        _ => false,
    };
    if ok {
        PasswordAnswer::Accepted
    } else {
        PasswordAnswer::Rejected
    }
}

/// The payload of a command with the password it carries shown as `***`; None when it carries none
/// (nothing to mask).
pub fn mask_password(version: Version, action: &str, payload: &Value) -> Option<Value> {
    password_in_command(version, action, payload)?;
    let mut masked = payload.clone();
    match version {
        Version::V16 => masked["value"] = json!("***"),
        Version::V201 => {
            if let Some(data) = masked.get_mut("setVariableData").and_then(Value::as_array_mut) {
                for d in data.iter_mut().filter(|d| is_password_variable(d)) {
                    d["attributeValue"] = json!("***");
                }
            }
        }
    }
    Some(masked)
}

/// The commands that move a station to `to`: 1.6 `ChangeConfiguration` of `SecurityProfile`;
/// 2.0.1 a network profile in `slot` naming the CSMS at `csms_url` with the new profile, that slot
/// made the first to try, and a reset when idle so that the station connects with it.
pub fn profile_commands(
    version: Version,
    to: SecurityProfile,
    csms_url: &str,
    slot: u32,
) -> Vec<(&'static str, Value)> {
    let level = u8::from(to);
    match version {
        Version::V16 => vec![("ChangeConfiguration", json!({"key": "SecurityProfile", "value": level.to_string()}))],
        Version::V201 => vec![
            (
                "SetNetworkProfile",
                json!({
                    "configurationSlot": slot,
                    "connectionData": {
                        "ocppVersion": "OCPP20",
                        "ocppTransport": "JSON",
                        "ocppCsmsUrl": csms_url,
                        "messageTimeout": 30,
                        "securityProfile": level,
                        "ocppInterface": "Wired0",
                    },
                }),
            ),
            (
                "SetVariables",
                json!({"setVariableData": [{
                    "attributeValue": slot.to_string(),
                    "component": {"name": "OCPPCommCtrlr"},
                    "variable": {"name": "NetworkConfigurationPriority"},
                }]}),
            ),
            ("Reset", json!({"type": "OnIdle"})),
        ],
    }
}

/// The command that makes a station of `version` send a new CSR (1.6 security extension
/// `ExtendedTriggerMessage`, 2.0.1 `TriggerMessage`).
pub fn renewal_trigger(version: Version) -> (&'static str, Value) {
    match version {
        Version::V16 => ("ExtendedTriggerMessage", json!({"requestedMessage": "SignChargePointCertificate"})),
        Version::V201 => ("TriggerMessage", json!({"requestedMessage": "SignChargingStationCertificate"})),
    }
}

/// The command that hands a station of `version` the certificate chain the station CA signed.
pub fn certificate_signed(version: Version, chain: &str) -> (&'static str, Value) {
    match version {
        Version::V16 => ("CertificateSigned", json!({"certificateChain": chain})),
        Version::V201 => {
            ("CertificateSigned", json!({"certificateChain": chain, "certificateType": "ChargingStationCertificate"}))
        }
    }
}

/// Whether the station accepted one of the [`profile_commands`]: its status (2.0.1 SetVariables:
/// its one result's) is Accepted, RebootRequired or (Reset) Scheduled.
pub fn profile_step_accepted(action: &str, response: &Value) -> bool {
    let status = if action == "SetVariables" {
        response.pointer("/setVariableResult/0/attributeStatus").and_then(Value::as_str)
    } else {
        response.get("status").and_then(Value::as_str)
    };
    matches!(status, Some("Accepted") | Some("RebootRequired") | Some("Scheduled"))
}

impl SecurityProfile {
    /// Whether a station may be moved from this profile to `to`: up only, as OCPP asks (a station
    /// does not lower its own security). An operator may still set any profile outright.
    pub fn can_upgrade_to(self, to: SecurityProfile) -> bool {
        u8::from(to) > u8::from(self)
    }
}

impl Station {
    /// The station is being told a new password (hashed as `hash`), in the change `change_id`. A
    /// change already pending is superseded: its answer, when it comes, settles nothing.
    pub fn propose_password(&mut self, hash: String, change_id: String, at: DateTime<Utc>) {
        self.pending_password = Some(PendingPassword { hash, change_id, requested_at: at });
    }

    /// The station answered the change `change_id`; true when it was the pending one (and so
    /// settled). Accepted: the pending password becomes current, the current one is kept for
    /// `grace`. Rejected: the pending one is dropped.
    pub fn settle_password(
        &mut self,
        change_id: &str,
        answer: PasswordAnswer,
        at: DateTime<Utc>,
        grace: Duration,
    ) -> bool {
        if self.pending_password.as_ref().is_none_or(|p| p.change_id != change_id) {
            return false;
        }
        let Some(pending) = self.pending_password.take() else { return false };
        if answer == PasswordAnswer::Accepted {
            let old = std::mem::replace(&mut self.password_hash, pending.hash);
            self.previous_password = Some(RetiredPassword { hash: old, until: at + grace });
            self.password_changed_at = Some(at);
        }
        true
    }

    /// The station's passwords a connection at `now` may use, as (slot, hash): the current one,
    /// the one a rotation replaced while its grace lasts, and the pending one.
    pub fn password_hashes(&self, now: DateTime<Utc>) -> Vec<(PasswordSlot, &str)> {
        let mut hashes = vec![(PasswordSlot::Current, self.password_hash.as_str())];
        if let Some(previous) = self.previous_password.as_ref().filter(|p| p.until > now) {
            hashes.push((PasswordSlot::Previous, previous.hash.as_str()));
        }
        if let Some(pending) = &self.pending_password {
            hashes.push((PasswordSlot::Pending, pending.hash.as_str()));
        }
        hashes
    }

    /// Records a certificate the station CA issued the station (the oldest beyond
    /// [`KEPT_CERTIFICATES`] is forgotten).
    pub fn certificate_issued(&mut self, certificate: IssuedCertificate) {
        self.certificates.push(certificate);
        let excess = self.certificates.len().saturating_sub(KEPT_CERTIFICATES);
        self.certificates.drain(..excess);
    }

    /// The station answered the CertificateSigned of certificate `serial`.
    pub fn certificate_answered(&mut self, serial: &str, installed: bool) {
        if let Some(c) = self.certificates.iter_mut().find(|c| c.serial == serial) {
            c.status = if installed { CertificateStatus::Installed } else { CertificateStatus::Rejected };
        }
    }

    /// When the newest certificate the station installed expires; None when it installed none.
    pub fn certificate_expiry(&self) -> Option<DateTime<Utc>> {
        self.certificates.iter().rev().find(|c| c.status == CertificateStatus::Installed).map(|c| c.not_after)
    }

    /// Whether the station's certificate is due for renewal at `now` (`before` its expiry), and no
    /// newer one is on its way.
    /// A certificate issued more than a day ago and never answered counts as lost.
    pub fn renewal_due(&self, now: DateTime<Utc>, before: Duration) -> bool {
        let installed = self.certificates.iter().rposition(|c| c.status == CertificateStatus::Installed);
        let Some(at) = installed else { return false };
        let on_its_way = self.certificates[at + 1..]
            .iter()
            .any(|c| c.status == CertificateStatus::Issued && c.issued_at > now - Duration::days(1));
        !on_its_way && self.certificates[at].not_after - before <= now
    }

    /// A move of the profile was asked for.
    pub fn profile_requested(&mut self, to: SecurityProfile, at: DateTime<Utc>) {
        self.profile_change = Some(ProfileChange {
            from: self.security_profile,
            to,
            status: ProfileChangeStatus::Requested,
            requested_at: at,
            answered_at: None,
        });
    }

    /// The station answered the requested move: accepted, the profile is the new one.
    pub fn profile_answered(&mut self, accepted: bool, at: DateTime<Utc>) {
        let Some(change) = self.profile_change.as_mut().filter(|c| c.status == ProfileChangeStatus::Requested) else {
            return;
        };
        change.answered_at = Some(at);
        if accepted {
            change.status = ProfileChangeStatus::Accepted;
            self.security_profile = change.to;
        } else {
            change.status = ProfileChangeStatus::Rejected;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Registration;

    fn station() -> Station {
        Station::new(&"acct".into(), &"CP1".into(), "old".into(), Registration::Accepted, SecurityProfile::Basic)
    }

    #[test]
    fn an_accepted_password_becomes_current_and_the_old_one_lasts_the_grace_window() {
        let mut s = station();
        let now = Utc::now();
        s.propose_password("new".into(), "c1".into(), now);
        let slots: Vec<_> = s.password_hashes(now).into_iter().map(|(slot, h)| (slot, h.to_string())).collect();
        assert_eq!(slots, vec![(PasswordSlot::Current, "old".into()), (PasswordSlot::Pending, "new".into())]);
        assert!(!s.settle_password("c0", PasswordAnswer::Accepted, now, Duration::minutes(10)), "another change");
        assert!(s.settle_password("c1", PasswordAnswer::Accepted, now, Duration::minutes(10)));
        assert_eq!(s.password_hash, "new");
        let within: Vec<_> = s.password_hashes(now + Duration::minutes(9)).into_iter().map(|(_, h)| h).collect();
        assert_eq!(within, vec!["new", "old"]);
        let after: Vec<_> = s.password_hashes(now + Duration::minutes(10)).into_iter().map(|(_, h)| h).collect();
        assert_eq!(after, vec!["new"], "the old password stops at the end of the window");
    }

    #[test]
    fn a_rejected_or_superseded_change_leaves_the_password() {
        let mut s = station();
        let now = Utc::now();
        s.propose_password("a".into(), "c1".into(), now);
        s.propose_password("b".into(), "c2".into(), now);
        assert!(!s.settle_password("c1", PasswordAnswer::Accepted, now, Duration::minutes(1)), "superseded");
        assert_eq!(s.password_hash, "old");
        assert!(s.settle_password("c2", PasswordAnswer::Rejected, now, Duration::minutes(1)));
        assert_eq!((s.password_hash.as_str(), s.pending_password.is_none()), ("old", true));
        assert!(s.previous_password.is_none());
    }

    #[test]
    fn password_commands_are_recognised_in_both_versions_and_answers_read() {
        for version in Version::ALL {
            let (action, payload) = password_command(version, "0123456789abcdefXYZ");
            assert_eq!(password_in_command(version, action, &payload), Some("0123456789abcdefXYZ"));
            let masked = mask_password(version, action, &payload).unwrap();
            assert_eq!(password_in_command(version, action, &masked), Some("***"));
        }
        let other = json!({"key": "HeartbeatInterval", "value": "60"});
        assert_eq!(password_in_command(Version::V16, "ChangeConfiguration", &other), None);
        assert_eq!(
            password_answer(Version::V16, "ChangeConfiguration", &json!({"status": "Accepted"})),
            PasswordAnswer::Accepted
        );
        assert_eq!(
            password_answer(Version::V16, "ChangeConfiguration", &json!({"status": "Rejected"})),
            PasswordAnswer::Rejected
        );
        let result = |status: &str| {
            json!({"setVariableResult": [
                {"attributeStatus": "Accepted", "component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}},
                {"attributeStatus": status, "component": {"name": "SecurityCtrlr"}, "variable": {"name": "BasicAuthPassword"}},
            ]})
        };
        assert_eq!(password_answer(Version::V201, "SetVariables", &result("Accepted")), PasswordAnswer::Accepted);
        assert_eq!(password_answer(Version::V201, "SetVariables", &result("Rejected")), PasswordAnswer::Rejected);
    }

    #[test]
    fn profiles_move_up_only_and_change_once_accepted() {
        assert!(SecurityProfile::Basic.can_upgrade_to(SecurityProfile::TlsBasic));
        assert!(!SecurityProfile::ClientCertificate.can_upgrade_to(SecurityProfile::TlsBasic));
        assert!(!SecurityProfile::TlsBasic.can_upgrade_to(SecurityProfile::TlsBasic));
        let mut s = station();
        s.profile_requested(SecurityProfile::TlsBasic, Utc::now());
        assert_eq!(s.security_profile, SecurityProfile::Basic, "not before the station accepted");
        s.profile_answered(true, Utc::now());
        assert_eq!(s.security_profile, SecurityProfile::TlsBasic);
        assert_eq!(s.profile_change.as_ref().map(|c| c.status), Some(ProfileChangeStatus::Accepted));
    }

    #[test]
    fn renewal_is_due_before_the_installed_certificate_expires() {
        let mut s = station();
        let now = Utc::now();
        let cert = |serial: &str, days: i64, status| IssuedCertificate {
            serial: serial.into(),
            issued_at: now,
            not_after: now + Duration::days(days),
            status,
        };
        assert!(!s.renewal_due(now, Duration::days(30)), "no certificate, nothing to renew");
        s.certificate_issued(cert("01", 20, CertificateStatus::Issued));
        s.certificate_answered("01", true);
        assert_eq!(s.certificate_expiry(), Some(now + Duration::days(20)));
        assert!(s.renewal_due(now, Duration::days(30)));
        assert!(!s.renewal_due(now, Duration::days(10)));
        s.certificate_issued(cert("02", 365, CertificateStatus::Issued));
        assert!(!s.renewal_due(now, Duration::days(30)), "a newer one is on its way");
        for n in 0..10 {
            s.certificate_issued(cert(&format!("{n:02x}"), 1, CertificateStatus::Issued));
        }
        assert_eq!(s.certificates.len(), KEPT_CERTIFICATES);
    }
}
