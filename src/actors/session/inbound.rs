//! The inbound direction of a session: what it answers the station's CALLs with, and its memory of
//! its latest answers, so that a station repeating a CALL (same unique id,
//! same frame: it did not get the answer) is answered again without the CALL being applied twice.
//! Only answers to CALLs that change something (durable actions) are kept; a repeated Heartbeat or
//! Authorize is answered afresh.
//!
//! It is bounded in bytes (`limits.replay_cache_bytes`) and in entries, and answers only a true
//! repeat: a frame reusing a unique id with other content is a new CALL (stations restart their id
//! counters), and must not fetch someone's large remembered answer with a few bytes.

use crate::fleet::command::CallErrorCode;
use crate::ocpp::rpc::ErrorCode;
use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};

/// Whether a refusal is remembered for a repeat of the same CALL: a storage failure (InternalError)
/// is worth retrying with the same id; anything else would be refused again.
pub fn remember_refusal(code: &CallErrorCode) -> bool {
    !code.is(ErrorCode::InternalError)
}

/// Answers kept at most, whatever their size: a station repeats the message it is waiting on, so a
/// few suffice.
const MAX_ENTRIES: usize = 8;

/// What identifies a CALL's frame text: its hash and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(u64, usize);

/// An answer, under its CALL's unique id and frame. The id is kept as its keyed hash: the frame's
/// fingerprint (which covers the id too) must match as well, so a look-up compares numbers only
/// and an entry holds one allocation, the answer.
struct Entry {
    unique_id: u64,
    frame: Fingerprint,
    reply: String,
}

impl Entry {
    fn weight(&self) -> usize {
        self.reply.len() + std::mem::size_of::<Entry>()
    }
}

pub struct ReplayCache {
    entries: VecDeque<Entry>,
    bytes: usize,
    max_bytes: usize,
    /// Keyed per session, so a station cannot craft a frame that collides with another.
    hasher: RandomState,
}

impl ReplayCache {
    pub fn new(max_bytes: usize) -> Self {
        Self { entries: VecDeque::new(), bytes: 0, max_bytes, hasher: RandomState::new() }
    }

    pub fn fingerprint(&self, frame: &str) -> Fingerprint {
        Fingerprint(self.hasher.hash_one(frame), frame.len())
    }

    /// The answer given to this very frame, if it is remembered.
    pub fn answer(&self, unique_id: &str, frame: Fingerprint) -> Option<&str> {
        // The fingerprint first: two numbers, where most frames differ (one id is never remembered twice).
        let mut same_frame = self.entries.iter().filter(|e| e.frame == frame);
        let entry = same_frame.find(|e| e.unique_id == self.hasher.hash_one(unique_id))?;
        Some(entry.reply.as_str())
    }

    /// Remembers the answer to a CALL, dropping the oldest answers to make room. An answer larger
    /// than the whole cache is not kept (a repeat is then applied again: the store's own
    /// idempotency still holds for transactions and meter values).
    pub fn remember(&mut self, unique_id: &str, frame: Fingerprint, reply: String) {
        let entry = Entry { unique_id: self.hasher.hash_one(unique_id), frame, reply };
        // A newer answer under the same id replaces the older.
        if let Some(i) = self.entries.iter().position(|e| e.unique_id == entry.unique_id) {
            if let Some(old) = self.entries.remove(i) {
                self.bytes -= old.weight();
            }
        }
        let weight = entry.weight();
        if weight > self.max_bytes {
            return;
        }
        while self.entries.len() >= MAX_ENTRIES || self.bytes + weight > self.max_bytes {
            match self.entries.pop_front() {
                Some(old) => self.bytes -= old.weight(),
                None => break,
            }
        }
        self.bytes += weight;
        self.entries.push_back(entry);
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ocpp::Version;

    #[test]
    fn only_a_storage_failure_may_be_retried_under_the_same_id() {
        assert!(!remember_refusal(&CallErrorCode::parse("InternalError", Version::V16)));
        assert!(remember_refusal(&CallErrorCode::parse("FormatViolation", Version::V201)));
        assert!(remember_refusal(&CallErrorCode::Other("Mine".into())));
    }

    #[test]
    fn only_the_same_frame_under_the_same_id_gets_the_remembered_answer() {
        let mut cache = ReplayCache::new(4096);
        let call = r#"[2,"A","Authorize",{"idTag":"X"}]"#;
        let fp = cache.fingerprint(call);
        cache.remember("A", fp, "[3,\"A\",{}]".into());
        assert_eq!(cache.answer("A", cache.fingerprint(call)), Some("[3,\"A\",{}]"));
        let other = cache.fingerprint(r#"[2,"A","Authorize",{}]"#);
        assert_eq!(cache.answer("A", other), None, "same id, other frame");
        assert_eq!(cache.answer("B", fp), None);
    }

    #[test]
    fn the_cache_stays_within_its_bytes_dropping_the_oldest_and_refusing_what_cannot_fit() {
        let mut cache = ReplayCache::new(2000);
        let fp = cache.fingerprint("frame");
        for i in 0..20 {
            cache.remember(&format!("m{i}"), fp, "x".repeat(400));
            assert!(cache.bytes() <= 2000, "{} bytes after {i}", cache.bytes());
        }
        assert!(cache.answer("m19", fp).is_some() && cache.answer("m0", fp).is_none());
        cache.remember("huge", fp, "x".repeat(5000));
        assert!(cache.answer("huge", fp).is_none(), "larger than the cache");
        assert!(cache.answer("m19", fp).is_some(), "and it pushed nothing out");
    }

    #[test]
    fn at_most_a_few_answers_are_kept_however_small() {
        let mut cache = ReplayCache::new(1 << 20);
        let fp = cache.fingerprint("f");
        for i in 0..100 {
            cache.remember(&format!("m{i}"), fp, "[3]".into());
        }
        assert_eq!(cache.entries.len(), MAX_ENTRIES);
    }
}
