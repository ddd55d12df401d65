//! Secrets: argon2 password hashes, random station passwords and their keyed hashes, API bearer
//! tokens.
//!
//! Which verifier a password gets follows from who chose it. A station password the server
//! generated ([`STATION_SECRET_LEN`] random alphanumerics, about 190 bits) cannot be guessed, so a
//! salted HMAC-SHA256 ([`hash_generated_secret`]) protects it as well as argon2 would and checks
//! with one HMAC computation: a cold fleet's first connections wait for no argon2 run.
//! A password a person chose (an account's, or a station's set through the API) may be guessable,
//! so it keeps argon2, which makes each guess against a leaked store expensive.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use hmac::{Hmac, Mac};
use rand::{distributions::Alphanumeric, Rng, RngCore};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock, RwLock};
use tokio::sync::oneshot;

/// Hashes a password into an argon2id PHC string (salted, default parameters).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// Hashes with explicit argon2id cost parameters (memory in KiB, iterations).
pub fn hash_password_with(
    password: &str,
    memory_kib: u32,
    iterations: u32,
) -> Result<String, argon2::password_hash::Error> {
    let params = Params::new(memory_kib, iterations, 1, None)?;
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params).hash_password(password.as_bytes(), &salt)?.to_string())
}

/// Checks a password against a stored PHC string (its own parameters are in it). A malformed stored hash counts as a mismatch.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Length of a station password the server generates: 32 alphanumerics carry 32 × log2(62) ≈ 190
/// bits.
pub const STATION_SECRET_LEN: usize = 32;

/// Prefix of a keyed hash of a generated secret: `$hmac-sha256$<salt hex>$<tag hex>`.
const KEYED_PREFIX: &str = "$hmac-sha256$";

/// Hashes a secret the server generated: HMAC-SHA256 keyed by 16 random bytes of salt, stored as
/// `$hmac-sha256$<salt hex>$<tag hex>`. Only for secrets with ≥ 128 bits of randomness: a fast hash
/// of a guessable password could be brute-forced from a leaked store.
pub fn hash_generated_secret(secret: &str) -> String {
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    let tag = keyed_tag(&salt, secret).finalize().into_bytes();
    format!("{KEYED_PREFIX}{}${}", hex::encode(salt), hex::encode(tag))
}

fn keyed_tag(salt: &[u8], secret: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(salt).expect("HMAC accepts any key length");
    mac.update(secret.as_bytes());
    mac
}

/// Whether a stored hash is a keyed hash of a generated secret (checked with one HMAC, no argon2).
pub fn is_keyed_hash(stored: &str) -> bool {
    stored.starts_with(KEYED_PREFIX)
}

/// Checks a secret against a keyed hash from [`hash_generated_secret`], in constant time. A
/// malformed stored hash counts as a mismatch.
pub fn verify_keyed(secret: &str, stored: &str) -> bool {
    let Some(rest) = stored.strip_prefix(KEYED_PREFIX) else { return false };
    let Some((salt, tag)) = rest.split_once('$') else { return false };
    let (Ok(salt), Ok(tag)) = (hex::decode(salt), hex::decode(tag)) else { return false };
    keyed_tag(&salt, secret).verify_slice(&tag).is_ok()
}

/// Which queue an argon2 job waits in when every core is busy with one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Everyone without recent failures: sign-ups, sign-ins, provisioning, first-time station
    /// connections.
    Normal,
    /// Password checks from an address or for a station with recent failures: they run only when
    /// no normal job waits, and at most `max_waiting` of them wait at once.
    Suspect { max_waiting: usize },
}

/// At most one argon2 job per core at a time, normal jobs first.
struct Gate {
    state: Mutex<GateState>,
}

struct GateState {
    free: usize,
    normal: VecDeque<oneshot::Sender<Permit>>,
    suspect: VecDeque<oneshot::Sender<Permit>>,
}

/// A running job's slot; given to the next waiter when dropped.
struct Permit(&'static Gate);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl Gate {
    fn new(slots: usize) -> Gate {
        Gate { state: Mutex::new(GateState { free: slots, normal: VecDeque::new(), suspect: VecDeque::new() }) }
    }

    /// The process's gate: one slot per core.
    fn get() -> &'static Gate {
        static GATE: OnceLock<Gate> = OnceLock::new();
        GATE.get_or_init(|| Gate::new(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(&'static self) {
        let mut state = self.lock();
        while let Some(waiter) = state.normal.pop_front().or_else(|| state.suspect.pop_front()) {
            match waiter.send(Permit(self)) {
                Ok(()) => return,
                // The waiter has gone (its client hung up): the slot goes to the next one. Dropping
                // the permit here would release again, under the lock.
                Err(permit) => std::mem::forget(permit),
            }
        }
        state.free += 1;
    }

    /// A slot, after waiting in `lane`; None when the suspect lane is full.
    async fn acquire(&'static self, lane: Lane) -> Option<Permit> {
        let rx = {
            let mut state = self.lock();
            if state.free > 0 {
                state.free -= 1;
                return Some(Permit(self));
            }
            let (tx, rx) = oneshot::channel();
            match lane {
                Lane::Normal => state.normal.push_back(tx),
                Lane::Suspect { max_waiting } => {
                    if state.suspect.len() >= max_waiting {
                        state.suspect.retain(|w| !w.is_closed());
                    }
                    if state.suspect.len() >= max_waiting {
                        return None;
                    }
                    state.suspect.push_back(tx);
                }
            }
            rx
        };
        rx.await.ok()
    }
}

/// Runs argon2 work (hashing or verifying) on the blocking pool, at most one job per CPU core at a
/// time. Each job allocates its whole memory cost (MiBs); unbounded, a burst of first-time station
/// connections would run hundreds at once and leave the allocator holding gigabytes.
pub async fn argon2_job<T, F>(job: F) -> Result<T, actix_web::error::BlockingError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let _permit = Gate::get().acquire(Lane::Normal).await;
    metrics::counter!(crate::metrics::ARGON2_JOBS, "lane" => "normal").increment(1);
    actix_web::web::block(job).await
}

/// [`argon2_job`] waiting in `lane`: None, without running it, when the suspect lane is full.
pub async fn argon2_job_in<T, F>(lane: Lane, job: F) -> Result<Option<T>, actix_web::error::BlockingError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let Some(_permit) = Gate::get().acquire(lane).await else { return Ok(None) };
    let label = match lane {
        Lane::Normal => "normal",
        Lane::Suspect { .. } => "suspect",
    };
    metrics::counter!(crate::metrics::ARGON2_JOBS, "lane" => label).increment(1);
    actix_web::web::block(job).await.map(Some)
}

/// A random alphanumeric secret of `len` characters from the OS-seeded thread RNG.
pub fn random_secret(len: usize) -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// The key under which a bearer token is stored: its SHA-256, hex. Tokens carry 256 bits of
/// randomness, so a fast hash is enough to make a leaked store useless for logging in.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Station credentials already verified with argon2, kept as a keyed hash so that a reconnecting
/// station is checked in microseconds instead of an argon2 run: a reconnect storm of a whole fleet
/// would otherwise take minutes of CPU. The key is random per process, so the cache is worthless
/// outside it; an entry covers one (station, stored hash) pair, so a new password (a new hash)
/// misses and goes through argon2 again.
pub struct CredentialCache {
    key: [u8; 32],
    verified: RwLock<HashMap<String, [u8; 32]>>,
}

impl Default for CredentialCache {
    fn default() -> Self {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        Self { key, verified: RwLock::new(HashMap::new()) }
    }
}

impl CredentialCache {
    fn tag(&self, who: &str, password: &str, phc: &str) -> [u8; 32] {
        // new_from_slice accepts keys of any length for HMAC; the key is 32 bytes.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes a 32-byte key");
        for part in [who, phc, password] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether this password was verified against this stored hash before.
    pub fn contains(&self, who: &str, password: &str, phc: &str) -> bool {
        let tag = self.tag(who, password, phc);
        let verified = self.verified.read().unwrap_or_else(|e| e.into_inner());
        // Both tags are HMAC outputs, so comparing them leaks nothing about the password.
        verified.get(who).is_some_and(|t| *t == tag)
    }

    pub fn insert(&self, who: &str, password: &str, phc: &str) {
        let tag = self.tag(who, password, phc);
        self.verified.write().unwrap_or_else(|e| e.into_inner()).insert(who.to_string(), tag);
    }

    pub fn forget(&self, who: &str) {
        self.verified.write().unwrap_or_else(|e| e.into_inner()).remove(who);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_only_its_password() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horsf", &h));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn cheaper_parameters_still_verify_and_are_recorded_in_the_hash() {
        let h = hash_password_with("a-station-secret", 4096, 1).unwrap();
        assert!(h.contains("m=4096,t=1"), "{h}");
        assert!(verify_password("a-station-secret", &h));
        assert!(!verify_password("another-secret", &h));
    }

    #[test]
    fn a_keyed_hash_verifies_only_its_secret_and_is_salted() {
        let secret = random_secret(STATION_SECRET_LEN);
        let h = hash_generated_secret(&secret);
        assert!(is_keyed_hash(&h), "{h}");
        assert!(!is_keyed_hash(&hash_password_with(&secret, 4096, 1).unwrap()));
        assert!(verify_keyed(&secret, &h));
        assert!(!verify_keyed(&random_secret(STATION_SECRET_LEN), &h));
        assert!(!verify_keyed(&secret[1..], &h), "a prefix of the secret");
        assert_ne!(h, hash_generated_secret(&secret), "each hash has its own salt");
        for broken in ["$hmac-sha256$", "$hmac-sha256$zz$00", "$hmac-sha256$00", &h[..h.len() - 2], "plain"] {
            assert!(!verify_keyed(&secret, broken), "{broken}");
        }
    }

    #[test]
    fn the_credential_cache_knows_only_what_it_was_told() {
        let cache = CredentialCache::default();
        assert!(!cache.contains("acct/CP1", "pw", "$hash1"));
        cache.insert("acct/CP1", "pw", "$hash1");
        assert!(cache.contains("acct/CP1", "pw", "$hash1"));
        assert!(!cache.contains("acct/CP1", "pw2", "$hash1"), "another password");
        assert!(!cache.contains("acct/CP1", "pw", "$hash2"), "a new stored hash");
        assert!(!cache.contains("acct/CP2", "pw", "$hash1"), "another station");
        cache.forget("acct/CP1");
        assert!(!cache.contains("acct/CP1", "pw", "$hash1"));
    }

    #[tokio::test]
    async fn suspect_password_checks_wait_behind_normal_ones_and_their_queue_is_bounded() {
        let gate: &'static Gate = Box::leak(Box::new(Gate::new(1)));
        // Take the slot, so that everything after waits.
        let held = gate.acquire(Lane::Normal).await;
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let waiter = |lane: Lane, name: &'static str| {
            let order = order.clone();
            tokio::spawn(async move {
                if let Some(_p) = gate.acquire(lane).await {
                    order.lock().unwrap().push(name);
                }
            })
        };
        let suspect = waiter(Lane::Suspect { max_waiting: 1 }, "suspect");
        tokio::task::yield_now().await;
        assert!(gate.acquire(Lane::Suspect { max_waiting: 1 }).await.is_none(), "the suspect lane is full");
        let normal = waiter(Lane::Normal, "normal");
        tokio::task::yield_now().await;
        drop(held);
        suspect.await.unwrap();
        normal.await.unwrap();
        assert_eq!(*order.lock().unwrap(), ["normal", "suspect"]);
    }

    #[test]
    fn secrets_are_random_and_sized() {
        let a = random_secret(32);
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_secret(32));
        assert_eq!(token_hash("x"), token_hash("x"));
        assert_ne!(token_hash("x"), token_hash("y"));
    }
}
