//! Counting per key in this node's memory: fixed-window quotas ([`WindowQuota`]) and failure
//! back-off ([`Backoff`]). Keys that fall idle are swept, so a stranger inventing keys costs at most
//! one entry per key for one window.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Maps that grew past this many keys since the last sweep are swept for idle keys.
const SWEEP_FLOOR: usize = 1024;

struct Swept<K, V> {
    map: HashMap<K, V>,
    sweep_at: usize,
}

impl<K: Hash + Eq, V> Swept<K, V> {
    fn new() -> Self {
        Self { map: HashMap::new(), sweep_at: SWEEP_FLOOR }
    }

    /// Drops the values `live` says are idle once the map has doubled since the last sweep.
    fn sweep(&mut self, live: impl Fn(&V) -> bool) {
        if self.map.len() >= self.sweep_at {
            self.map.retain(|_, v| live(v));
            self.sweep_at = (self.map.len() * 2).max(SWEEP_FLOOR);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    used: u64,
}

/// At most `limit` units per key per window (windows start with a key's first use).
pub struct WindowQuota<K> {
    limit: u64,
    window: Duration,
    keys: Mutex<Swept<K, Window>>,
}

impl<K: Hash + Eq + Clone> WindowQuota<K> {
    pub fn new(limit: u64, window: Duration) -> Self {
        Self { limit, window: window.max(Duration::from_millis(1)), keys: Mutex::new(Swept::new()) }
    }

    /// Units the key has taken in its current window.
    pub fn used(&self, key: &K) -> u64 {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.map.get(key).filter(|w| w.started.elapsed() < self.window).map_or(0, |w| w.used)
    }

    /// Whether `units` would not fit the key's window now: how long until it ends, then. Takes
    /// nothing (a cheap early refusal; [`WindowQuota::take`] still decides).
    pub fn full(&self, key: &K, units: u64) -> Option<Duration> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let w = keys.map.get(key)?;
        let age = w.started.elapsed();
        (age < self.window && w.used.saturating_add(units) > self.limit)
            .then(|| self.window.saturating_sub(age).max(Duration::from_secs(1)))
    }

    /// Takes `units` from the key's window; when they do not fit, takes nothing and answers how
    /// long until the window ends.
    pub fn take(&self, key: &K, units: u64) -> Result<(), Duration> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.window;
        keys.sweep(|w| w.started.elapsed() < window);
        let now = Instant::now();
        let w = keys.map.entry(key.clone()).or_insert(Window { started: now, used: 0 });
        if now.duration_since(w.started) >= window {
            *w = Window { started: now, used: 0 };
        }
        if w.used.saturating_add(units) > self.limit {
            return Err(window.saturating_sub(now.duration_since(w.started)).max(Duration::from_secs(1)));
        }
        w.used += units;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// Failed attempts per key: after `free` failures within `window`, the key is blocked for a
/// back-off that doubles with each further failure, from one second up to `max`.
pub struct Backoff<K> {
    free: u32,
    window: Duration,
    max: Duration,
    keys: Mutex<Swept<K, Failures>>,
}

impl<K: Hash + Eq + Clone> Backoff<K> {
    pub fn new(free: u32, window: Duration, max: Duration) -> Self {
        Self { free: free.max(1), window, max: max.max(Duration::from_secs(1)), keys: Mutex::new(Swept::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Swept<K, Failures>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long the key must still wait; None when it may try now.
    pub fn blocked(&self, key: &K) -> Option<Duration> {
        let keys = self.lock();
        let until = keys.map.get(key)?.blocked_until?;
        until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    /// Whether the key failed within the window (its attempts are suspect, even if not blocked).
    pub fn suspect(&self, key: &K) -> bool {
        self.lock().map.get(key).is_some_and(|f| f.last.elapsed() < self.window)
    }

    /// Counts a failure; answers the back-off it starts, if any.
    pub fn fail(&self, key: &K) -> Option<Duration> {
        let mut keys = self.lock();
        let (window, max) = (self.window, self.max);
        keys.sweep(|f| f.last.elapsed() < window || f.blocked_until.is_some_and(|u| u > Instant::now()));
        let now = Instant::now();
        let f = keys.map.entry(key.clone()).or_insert(Failures { count: 0, last: now, blocked_until: None });
        if now.duration_since(f.last) >= window {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
        if f.count < self.free {
            return None;
        }
        let doublings = (f.count - self.free).min(20);
        let backoff = Duration::from_secs(1u64 << doublings).min(max);
        f.blocked_until = Some(now + backoff);
        Some(backoff)
    }

    /// Forgets the key's failures (a success).
    pub fn clear(&self, key: &K) {
        self.lock().map.remove(key);
    }
}

/// A rate with bursts, for one owner (a session): each [`TokenBucket::take`] spends a token and
/// answers how long to wait when there was none.
#[derive(Debug)]
pub struct TokenBucket {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A rate of 0 (or less) means no limit.
    pub fn new(per_sec: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self { per_sec, burst, tokens: burst, last: Instant::now() }
    }

    /// Spends one token; when none was left, the time until the rate has paid for this one.
    pub fn take(&mut self) -> Option<Duration> {
        if self.per_sec <= 0.0 {
            return None;
        }
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_sec).min(self.burst);
        self.last = now;
        self.tokens -= 1.0;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.per_sec))
    }
}

/// At most `limit` holders per key at once: what a long request (an export) takes while it runs.
/// A key without holders has no entry, so strangers inventing keys cost nothing once they are done.
pub struct Concurrency<K: Hash + Eq + Clone> {
    limit: usize,
    held: Arc<Mutex<HashMap<K, usize>>>,
}

/// One place of a [`Concurrency`] bound, given back when dropped.
pub struct Permit<K: Hash + Eq + Clone> {
    key: K,
    held: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Hash + Eq + Clone> Concurrency<K> {
    pub fn new(limit: usize) -> Self {
        Self { limit, held: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// A place for `key`, or None when `limit` are taken already.
    pub fn acquire(&self, key: &K) -> Option<Permit<K>> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(key.clone()).or_insert(0);
        if *n >= self.limit {
            if *n == 0 {
                held.remove(key);
            }
            return None;
        }
        *n += 1;
        Some(Permit { key: key.clone(), held: self.held.clone() })
    }

    /// Places taken for `key` now.
    pub fn held(&self, key: &K) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).get(key).copied().unwrap_or(0)
    }
}

impl<K: Hash + Eq + Clone> Drop for Permit<K> {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_concurrency_bound_refuses_past_its_limit_per_key_and_frees_a_place_when_a_permit_drops() {
        let c = Concurrency::new(2);
        let a1 = c.acquire(&"a").expect("first");
        let a2 = c.acquire(&"a").expect("second");
        assert!(c.acquire(&"a").is_none(), "a third at once is refused");
        assert!(c.acquire(&"b").is_some(), "another key has its own places");
        drop(a1);
        assert_eq!(c.held(&"a"), 1);
        let a3 = c.acquire(&"a").expect("a dropped permit frees its place");
        drop((a2, a3));
        assert_eq!(c.held(&"a"), 0);
        assert!(c.held.lock().unwrap().is_empty(), "no entry is kept for a key without holders");
        let none = Concurrency::new(0);
        assert!(none.acquire(&"a").is_none(), "a limit of 0 refuses all");
        assert!(none.held.lock().unwrap().is_empty(), "and keeps nothing for the refused key");
    }

    #[test]
    fn a_window_quota_refuses_what_does_not_fit_and_starts_afresh_with_the_next_window() {
        let q = WindowQuota::new(10, Duration::from_millis(50));
        assert!(q.take(&"a", 6).is_ok());
        assert!(q.take(&"a", 5).is_err(), "6 + 5 > 10");
        assert!(q.take(&"a", 4).is_ok(), "a refusal takes nothing");
        assert!(q.full(&"a", 1).is_some() && q.full(&"a", 0).is_none() && q.full(&"new", 10).is_none());
        assert_eq!((q.used(&"a"), q.used(&"new")), (10, 0));
        assert!(q.take(&"b", 10).is_ok(), "keys are separate");
        std::thread::sleep(Duration::from_millis(60));
        assert!(q.take(&"a", 10).is_ok());
    }

    #[test]
    fn a_token_bucket_lets_a_burst_through_then_paces_to_its_rate() {
        let mut b = TokenBucket::new(10.0, 5);
        assert!((0..5).all(|_| b.take().is_none()), "the burst");
        let wait = b.take().expect("then a wait");
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100), "{wait:?}");
        assert!(TokenBucket::new(0.0, 1).take().is_none() && TokenBucket::new(0.0, 1).take().is_none(), "0: no limit");
    }

    #[test]
    fn back_off_starts_after_the_free_failures_and_doubles() {
        let b = Backoff::new(3, Duration::from_secs(60), Duration::from_secs(5));
        assert_eq!(b.fail(&"k"), None);
        assert!(b.suspect(&"k") && b.blocked(&"k").is_none());
        assert_eq!(b.fail(&"k"), None);
        assert_eq!(b.fail(&"k"), Some(Duration::from_secs(1)));
        assert!(b.blocked(&"k").is_some());
        assert_eq!(b.fail(&"k"), Some(Duration::from_secs(2)));
        assert_eq!(b.fail(&"k"), Some(Duration::from_secs(4)));
        assert_eq!(b.fail(&"k"), Some(Duration::from_secs(5)), "capped");
        assert!(!b.suspect(&"other"));
        b.clear(&"k");
        assert!(b.blocked(&"k").is_none() && !b.suspect(&"k"));
    }
}
