//! The key layout's version, and the one-time move of a store written before keys carried hash
//! tags (layout 1: `{prefix}:stations:{account}`, `{prefix}:account:{account}`, a node-wide
//! `queue_seq`) to the layout of the module documentation (layout 2: `{prefix}:stations:{{account}}`,
//! `{prefix}:{accounts}:account:{account}`, a `queue_seq` per account), which Redis Cluster accepts.
//!
//! Only a single Redis can hold layout 1 (its scripts cannot run on a cluster), so only there is
//! anything moved: one `SCAN` of the prefix, each old key renamed by a script that never overwrites
//! a key of the new layout. One node does it, holding the lease `layout`; the store of every node
//! answers [`StoreError::Unavailable`] until the marker `layout` says it is done (a cluster node's
//! write-ahead log holds the stations' messages meanwhile).

use super::scripts::SCRIPTS;
use super::{RedisStore, ACCOUNT_KINDS, STATION_KINDS};
use crate::store::{StoreError, StoreResult};
use std::time::Duration;

/// The layout this code reads and writes; the key `layout` holds it once a store is in it.
const LAYOUT_VERSION: &str = "2";
/// How long the moving node's lease lasts without being renewed (it is renewed every batch).
const LEASE_TTL: Duration = Duration::from_secs(30);
/// Keys read per `SCAN` step.
const BATCH: usize = 1000;

/// Kinds of layout 1 whose keys move to the directory (`{accounts}` tag).
const DIRECTORY_KINDS: [&str; 6] = ["account", "email", "slug", "token", "tokens", "erasing"];
/// Where a key of layout 1 goes.
#[derive(Debug, PartialEq, Eq)]
struct Move {
    to: String,
    /// The account whose record this is, for the directory's index of account ids.
    account: Option<String>,
}

/// A key part of layout 1 read back (it escaped only `%` and `:`).
fn unescape_v1(s: &str) -> String {
    s.replace("%3A", ":").replace("%25", "%")
}

impl RedisStore {
    /// Where `key` goes in layout 2, or None when it stays (a key of layout 2, a node-wide key, a
    /// key of the cluster's presence and bus, anything not the store's).
    fn moved(&self, key: &str) -> Option<Move> {
        let rest = key.strip_prefix(&*self.prefix)?;
        let mut split = rest.split(':');
        let kind = split.next()?;
        let parts: Vec<String> = split.map(unescape_v1).collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        if DIRECTORY_KINDS.contains(&kind) {
            let account = (kind == "account").then(|| parts.first().map(|p| p.to_string())).flatten();
            return Some(Move { to: self.dir_key(kind, &parts), account });
        }
        // A hash-tagged first part is layout 2's (layout 1 never wrote one: account ids are UUIDs).
        let of_account = ACCOUNT_KINDS.contains(&kind) || STATION_KINDS.contains(&kind);
        if of_account && !parts.is_empty() && !parts[0].starts_with('{') {
            // `queue_seq` had no parts in layout 1: it is not an account's key then, and stays.
            return Some(Move { to: self.key(kind, &parts), account: None });
        }
        None
    }

    /// Brings the store to layout 2 (see the module documentation) if it is not in it; returns once
    /// it is, whichever node moved it.
    pub(super) async fn prepare_layout(&self, holder: &str) -> StoreResult<()> {
        const WHAT: &str = "layout";
        if !self.conn.is_cluster() {
            let info: String = self.query(WHAT, redis::cmd("INFO").arg("cluster")).await?;
            if info.lines().any(|l| l.trim() == "cluster_enabled:1") {
                return Err(StoreError::backend(
                    "redis: this Redis is a node of a Redis Cluster: set cluster.redis_cluster = true (and list some of its nodes in cluster.redis_url)",
                ));
            }
        }
        let marker = self.global_key("layout", &[]);
        loop {
            let version: Option<String> = self.query(WHAT, redis::cmd("GET").arg(&marker)).await?;
            match version.as_deref() {
                Some(LAYOUT_VERSION) => return Ok(()),
                Some(other) => {
                    return Err(StoreError::backend(format!(
                        "redis: the store's key layout is version {other}; this build reads version {LAYOUT_VERSION}"
                    )))
                }
                None => {}
            }
            if self.conn.is_cluster() {
                // A cluster never held layout 1.
                return self.query(WHAT, redis::cmd("SET").arg(&marker).arg(LAYOUT_VERSION)).await;
            }
            if self.take_lease(WHAT, holder, LEASE_TTL).await? {
                self.move_to_layout_2(holder).await?;
                self.query::<()>(WHAT, redis::cmd("SET").arg(&marker).arg(LAYOUT_VERSION)).await?;
                // Given back: renewed to expire at once.
                self.take_lease(WHAT, holder, Duration::from_millis(1)).await?;
                return Ok(());
            }
            tracing::info!("another node is moving the store to its new key layout; waiting");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn move_to_layout_2(&self, holder: &str) -> StoreResult<()> {
        const WHAT: &str = "layout";
        let ids = self.dir_key("ids", &[]);
        let mut pattern = String::new();
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        let (mut cursor, mut moved, mut kept) = (0u64, 0usize, 0usize);
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .query(WHAT, redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(BATCH))
                .await?;
            for key in keys {
                let Some(step) = self.moved(&key) else { continue };
                let mut invocation = SCRIPTS.rename_absent.prepare_invoke();
                invocation.key(&key).key(&step.to);
                if let Some(account) = &step.account {
                    invocation.key(&ids).arg(account);
                }
                match self.eval::<i64>(WHAT, &invocation).await? {
                    1 => moved += 1,
                    -1 => {
                        // Both names hold data: neither is lost, the old one is left for an operator.
                        tracing::error!(old = %key, new = %step.to, "both the old and the new key exist: the old one is kept as it is");
                        kept += 1;
                    }
                    _ => {}
                }
            }
            if !self.take_lease(WHAT, holder, LEASE_TTL).await? {
                return Err(StoreError::unavailable("redis: lost the lease of the key layout's move"));
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // Each account's commands go on queueing after those queued under the node-wide sequence.
        let old_sequence = self.global_key("queue_seq", &[]);
        let sequence: Option<i64> = self.query(WHAT, redis::cmd("GET").arg(&old_sequence)).await?;
        if let Some(sequence) = sequence {
            let mut after = None;
            loop {
                let (accounts, next) = self.account_id_range(after, BATCH).await?;
                for account in accounts {
                    let seed =
                        redis::cmd("SET").arg(self.key("queue_seq", &[&account])).arg(sequence).arg("NX").to_owned();
                    self.query::<Option<String>>(WHAT, &seed).await?;
                }
                match next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            self.query::<i64>(WHAT, redis::cmd("DEL").arg(&old_sequence)).await?;
        }
        tracing::info!(moved, kept, "moved the store's keys to the layout Redis Cluster accepts");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> RedisStore {
        let target = super::super::RedisTarget::Single("redis://127.0.0.1:1/".into());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        rt.block_on(async { RedisStore::configure(&target, "p", Duration::from_millis(10)) }).expect("configured")
    }

    #[test]
    fn keys_of_layout_1_move_into_their_account_slot_or_the_directory() {
        let s = store();
        let to = |key: &str| s.moved(key).map(|m| m.to);
        assert_eq!(to("p:stations:acct-a"), Some("p:stations:{acct-a}".into()));
        assert_eq!(to("p:meter:acct-a:CP%3A1:42"), Some("p:meter:{acct-a}:CP%3A1:42".into()));
        assert_eq!(to("p:events:acct-a:CP{1}"), Some("p:events:{acct-a}:CP%7B1%7D".into()));
        assert_eq!(to("p:email:a%3Ab@example.com"), Some("p:{accounts}:email:a%3Ab@example.com".into()));
        assert_eq!(to("p:erasing"), Some("p:{accounts}:erasing".into()));
        assert_eq!(
            s.moved("p:account:acct-a"),
            Some(Move { to: "p:{accounts}:account:acct-a".into(), account: Some("acct-a".into()) })
        );
        for stays in [
            "p:stations:{acct-a}",
            "p:{accounts}:account:acct-a",
            "p:queue_seq",
            "p:queue_seq:{acct-a}",
            "p:tx_seq",
            "p:queued",
            "p:lease:retention",
            "p:presence:acct-a:CP1",
            "p:presence:{acct-a}:CP1",
            "other:stations:acct-a",
        ] {
            assert_eq!(s.moved(stays), None, "{stays}");
        }
    }
}
