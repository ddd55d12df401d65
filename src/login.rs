//! Sign-in protection: failed-attempt limits per account and per client address, one-time codes for
//! sign-ins from new locations, and the [`LoginNotifier`] that delivers those codes.
//!
//! Everything here lives in this node's memory. That is enough for a single node: a restart forgets
//! failure counts (an attacker gains one window's worth of tries per restart) and pending codes (the
//! holder signs in again). A cluster would keep both in the shared store.

use crate::config::LoginSettings;
use crate::ids::AccountId;
use crate::model::Account;
use chrono::{DateTime, Utc};
use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The network a sign-in comes from, as compared with the account's known locations: the IPv4 /24
/// or IPv6 /48 around the address, so that a new lease from the same provider is not "new".
pub fn location_prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

/// The key a client address is counted under (see [`crate::limits::connections::AddressKey`]:
/// the IPv4 address, or the IPv6 /64).
fn address_key(ip: IpAddr) -> String {
    format!("ip:{}", crate::limits::connections::AddressKey::of(ip))
}

fn account_key(account_id: &AccountId) -> String {
    format!("account:{account_id}")
}

/// What the account holder is told when a correct password comes from a new location.
#[derive(Debug, Clone)]
pub struct LocationChallenge {
    pub challenge_id: String,
    pub code: String,
    pub ip: IpAddr,
    pub prefix: String,
    pub expires_at: DateTime<Utc>,
}

/// Delivers one-time codes to account holders. An email notifier will implement this; until then
/// [`LogNotifier`] writes the code to the log, where the operator can relay it.
pub trait LoginNotifier: Send + Sync + 'static {
    fn new_location(&self, account: &Account, challenge: &LocationChallenge);
}

/// Logs each code at info level (with the account, never with the password).
pub struct LogNotifier;

impl LoginNotifier for LogNotifier {
    fn new_location(&self, account: &Account, c: &LocationChallenge) {
        tracing::info!(
            account = %account.id,
            email = %account.email,
            challenge = %c.challenge_id,
            code = %c.code,
            ip = %c.ip,
            prefix = %c.prefix,
            expires_at = %c.expires_at,
            "sign-in from a new location: one-time code issued"
        );
    }
}

struct Pending {
    account_id: AccountId,
    prefix: String,
    code: String,
    expires: Instant,
    attempts_left: u32,
}

/// A confirmed challenge: the account may sign in, and `prefix` becomes one of its known locations.
#[derive(Debug)]
pub struct Confirmed {
    pub account_id: AccountId,
    pub prefix: String,
}

/// Why a code did not confirm.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfirmError {
    /// No such challenge, or expired, used or out of tries.
    Unknown,
    /// The code is wrong (a try was used), or it came from another network than the sign-in.
    Refused { account_id: AccountId },
}

/// Failure counts and pending challenges.
pub struct LoginGuard {
    settings: LoginSettings,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
    challenges: Mutex<HashMap<String, Pending>>,
    /// When a refusal for too many attempts was last written to each account's history.
    limited_noted: Mutex<HashMap<AccountId, Instant>>,
}

/// Failure lists this long are swept for expired entries, so idle keys do not accumulate.
const SWEEP_AT: usize = 10_000;

impl LoginGuard {
    pub fn new(settings: LoginSettings) -> Self {
        Self {
            settings,
            failures: Mutex::new(HashMap::new()),
            challenges: Mutex::new(HashMap::new()),
            limited_noted: Mutex::new(HashMap::new()),
        }
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.settings.failure_window_secs)
    }

    /// How long until `key` may try again; None when it may now.
    fn wait(&self, failures: &mut HashMap<String, VecDeque<Instant>>, key: &str, max: usize) -> Option<Duration> {
        let window = self.window();
        let list = failures.get_mut(key)?;
        while list.front().is_some_and(|t| t.elapsed() >= window) {
            list.pop_front();
        }
        if list.len() < max.max(1) {
            return None;
        }
        // The attempt that must leave the window before the count drops below the limit.
        let gate = list[list.len() - max.max(1)];
        Some(window.saturating_sub(gate.elapsed()).max(Duration::from_secs(1)))
    }

    /// Whether a sign-in must be refused unchecked, and for how long: the longer of the account's
    /// and the address's waits.
    pub fn blocked(&self, account_id: Option<&AccountId>, ip: IpAddr) -> Option<Duration> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let by_ip = self.wait(&mut failures, &address_key(ip), self.settings.max_failures_per_ip);
        let by_account = account_id
            .and_then(|id| self.wait(&mut failures, &account_key(id), self.settings.max_failures_per_account));
        by_ip.max(by_account)
    }

    /// Whether the address or the account failed recently (within the window), though not enough
    /// to be blocked: such sign-ins wait behind others for a password check.
    pub fn suspect(&self, account_id: Option<&AccountId>, ip: IpAddr) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.window();
        let recent = |key: &str| failures.get(key).and_then(|l| l.back()).is_some_and(|t| t.elapsed() < window);
        recent(&address_key(ip)) || account_id.is_some_and(|id| recent(&account_key(id)))
    }

    /// Counts a failed attempt against the address and, when known, the account.
    pub fn record_failure(&self, account_id: Option<&AccountId>, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= SWEEP_AT {
            let window = self.window();
            failures.retain(|_, list| list.back().is_some_and(|t| t.elapsed() < window));
        }
        let now = Instant::now();
        failures.entry(address_key(ip)).or_default().push_back(now);
        if let Some(id) = account_id {
            failures.entry(account_key(id)).or_default().push_back(now);
        }
    }

    /// Whether a refused attempt should go to the account's history: the first of each window does,
    /// so the holder sees the attack, and the rest do not, so an attacker cannot flush the history.
    pub fn note_rate_limited(&self, account_id: &AccountId) -> bool {
        let mut noted = self.limited_noted.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.window();
        if noted.len() >= SWEEP_AT {
            noted.retain(|_, t| t.elapsed() < window);
        }
        match noted.get(account_id) {
            Some(t) if t.elapsed() < window => false,
            _ => {
                noted.insert(account_id.clone(), Instant::now());
                true
            }
        }
    }

    /// A successful sign-in clears the account's count (not the address's: one address may be
    /// trying many accounts).
    pub fn clear_account(&self, account_id: &AccountId) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&account_key(account_id));
    }

    /// Drops everything held about an erased account.
    pub fn forget_account(&self, account_id: &AccountId) {
        self.clear_account(account_id);
        self.limited_noted.lock().unwrap_or_else(|e| e.into_inner()).remove(account_id);
        self.challenges.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, p| p.account_id != *account_id);
    }

    /// Issues a one-time code for a sign-in from `ip`.
    pub fn challenge(&self, account_id: &AccountId, ip: IpAddr) -> LocationChallenge {
        let ttl = Duration::from_secs(self.settings.challenge_ttl_secs);
        let code = format!("{:06}", rand::thread_rng().gen_range(0..1_000_000u32));
        let challenge = LocationChallenge {
            challenge_id: uuid::Uuid::new_v4().to_string(),
            code: code.clone(),
            ip,
            prefix: location_prefix(ip),
            expires_at: Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(10)),
        };
        let mut challenges = self.challenges.lock().unwrap_or_else(|e| e.into_inner());
        challenges.retain(|_, p| p.expires > Instant::now());
        challenges.insert(
            challenge.challenge_id.clone(),
            Pending {
                account_id: account_id.clone(),
                prefix: challenge.prefix.clone(),
                code,
                expires: Instant::now() + ttl,
                attempts_left: self.settings.challenge_max_attempts.max(1),
            },
        );
        challenge
    }

    /// Checks a code. A right code from the challenged network confirms and uses up the challenge; a
    /// wrong one uses a try, and the last try uses it up.
    pub fn confirm(&self, challenge_id: &str, code: &str, ip: IpAddr) -> Result<Confirmed, ConfirmError> {
        let mut challenges = self.challenges.lock().unwrap_or_else(|e| e.into_inner());
        let pending = challenges.get_mut(challenge_id).ok_or(ConfirmError::Unknown)?;
        if pending.expires <= Instant::now() {
            challenges.remove(challenge_id);
            return Err(ConfirmError::Unknown);
        }
        if constant_time_eq(pending.code.as_bytes(), code.as_bytes()) && pending.prefix == location_prefix(ip) {
            let pending = challenges.remove(challenge_id).ok_or(ConfirmError::Unknown)?;
            return Ok(Confirmed { account_id: pending.account_id, prefix: pending.prefix });
        }
        pending.attempts_left = pending.attempts_left.saturating_sub(1);
        let account_id = pending.account_id.clone();
        if pending.attempts_left == 0 {
            challenges.remove(challenge_id);
        }
        Err(ConfirmError::Refused { account_id })
    }

    /// The code of a pending challenge (for `api.expose_login_codes`).
    pub fn code(&self, challenge_id: &str) -> Option<String> {
        let challenges = self.challenges.lock().unwrap_or_else(|e| e.into_inner());
        challenges.get(challenge_id).filter(|p| p.expires > Instant::now()).map(|p| p.code.clone())
    }
}

/// Compares without stopping at the first difference, so timing does not tell how much was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LoginSettings {
        LoginSettings {
            max_failures_per_account: 3,
            max_failures_per_ip: 5,
            failure_window_secs: 900,
            challenge_ttl_secs: 600,
            challenge_max_attempts: 2,
            history_limit: 100,
        }
    }

    #[test]
    fn prefixes_are_the_v4_slash_24_and_the_v6_slash_48() {
        assert_eq!(location_prefix("203.0.113.77".parse().unwrap()), "203.0.113.0/24");
        assert_eq!(location_prefix("2001:db8:abcd:12::1".parse().unwrap()), "2001:db8:abcd::/48");
        assert_eq!(address_key("2001:db8:abcd:12::1".parse().unwrap()), "ip:2001:db8:abcd:12::/64");
    }

    #[test]
    fn failures_block_the_account_and_the_address_separately() {
        let guard = LoginGuard::new(settings());
        let (ip, other_ip) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert_eq!(guard.blocked(Some(&"a".into()), ip), None);
            guard.record_failure(Some(&"a".into()), ip);
        }
        let wait = guard.blocked(Some(&"a".into()), other_ip).expect("the account is blocked from any address");
        assert!(wait <= Duration::from_secs(900) && wait > Duration::from_secs(890), "{wait:?}");
        assert_eq!(guard.blocked(Some(&"b".into()), other_ip), None);
        guard.record_failure(Some(&"b".into()), ip);
        guard.record_failure(Some(&"c".into()), ip);
        assert!(guard.blocked(Some(&"d".into()), ip).is_some(), "five failures from one address block it");
        guard.clear_account(&"a".into());
        assert_eq!(guard.blocked(Some(&"a".into()), other_ip), None);
        assert!(guard.suspect(None, ip), "the address failed recently");
        assert!(!guard.suspect(Some(&"a".into()), other_ip), "the account's failures were cleared");
    }

    #[test]
    fn a_code_confirms_once_from_the_challenged_network_and_wrong_codes_use_it_up() {
        let guard = LoginGuard::new(settings());
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let c = guard.challenge(&"a".into(), ip);
        assert_eq!(c.code.len(), 6);
        let elsewhere = "192.0.2.1".parse().unwrap();
        assert!(matches!(guard.confirm(&c.challenge_id, &c.code, elsewhere), Err(ConfirmError::Refused { .. })));
        let confirmed = guard.confirm(&c.challenge_id, &c.code, "198.51.100.9".parse().unwrap()).unwrap();
        assert_eq!((confirmed.account_id.as_str(), confirmed.prefix.as_str()), ("a", "198.51.100.0/24"));
        assert_eq!(guard.confirm(&c.challenge_id, &c.code, ip).unwrap_err(), ConfirmError::Unknown);

        let c = guard.challenge(&"a".into(), ip);
        assert!(guard.confirm(&c.challenge_id, "nope", ip).is_err());
        assert!(guard.confirm(&c.challenge_id, "nope", ip).is_err());
        assert_eq!(guard.confirm(&c.challenge_id, &c.code, ip).unwrap_err(), ConfirmError::Unknown);
    }
}
