//! The Redis store's list indexes: sorted sets that hold an account's stations and id tags in key
//! order and its transactions by id (all of them, by station, and the open ones), so a page of a
//! list is one range read of an index and one `HMGET` of the records it names (see
//! [`crate::model::PageBuilder`]). Each index entry is written in the same script or atomic
//! pipeline as its record; [`RedisStore::index_stored`] indexes, once, what was stored before.

use super::scripts::SCRIPTS;
use super::{decode, RedisStore};
use crate::ids::AccountId;
use crate::model::{Page, PageBuilder, PageRequest, Transaction, TransactionFilter};
use crate::store::StoreResult;
use redis::ScriptInvocation;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

/// The version of the indexes a store has built from what was stored before them (`indexed`): 1,
/// the lists'; 2, also the export's ([`super::export`]).
const INDEXES_VERSION: &str = "2";
/// Records read per step while indexing what was stored before.
pub(super) const INDEX_BATCH: usize = 500;

/// Whether a transaction belongs in the open index, as the scripts take it.
pub(super) fn open_flag(tx: &Transaction) -> &'static str {
    if tx.stop.is_none() {
        "1"
    } else {
        "0"
    }
}

impl RedisStore {
    /// The transaction indexes a write of `tx` keeps, in the order the scripts take them: the
    /// account's ids, the station's ids, the open ids, the stations with transactions.
    pub(super) fn transaction_indexes(&self, account_id: &str, station_id: &str) -> [String; 4] {
        [
            self.key("tx_ids", &[account_id]),
            self.key("tx_station", &[account_id, station_id]),
            self.key("tx_open", &[account_id]),
            self.key("tx_stations", &[account_id]),
        ]
    }

    /// Adds the transaction indexes of `tx` as the script's next keys.
    pub(super) fn with_transaction_indexes(&self, invocation: &mut ScriptInvocation<'_>, tx: &Transaction) {
        for key in self.transaction_indexes(&tx.account_id, &tx.station_id) {
            invocation.key(key);
        }
    }

    /// Adds to an atomic pipeline what indexes `tx` (as the scripts' `index_tx` does).
    pub(super) fn index_transaction(&self, pipe: &mut redis::Pipeline, tx: &Transaction) {
        let [ids, by_station, open, stations] = self.transaction_indexes(&tx.account_id, &tx.station_id);
        pipe.cmd("ZADD").arg(ids).arg(tx.id).arg(tx.id).ignore();
        pipe.cmd("ZADD").arg(by_station).arg(tx.id).arg(tx.id).ignore();
        match tx.stop {
            None => pipe.cmd("ZADD").arg(open).arg(tx.id).arg(tx.id).ignore(),
            Some(_) => pipe.cmd("ZREM").arg(open).arg(tx.id).ignore(),
        };
        pipe.cmd("SADD").arg(stations).arg(tx.station_id.as_str()).ignore();
    }

    /// A page of the records of `hash` whose fields `index` (a sorted set of equal scores) holds in
    /// byte order, after the field `after`; `keep` says whether a record matches the list's filter.
    pub(super) async fn lex_page<T: DeserializeOwned>(
        &self,
        what: &str,
        index: &str,
        hash: &str,
        page: &PageRequest<String>,
        keep: impl Fn(&T) -> bool,
    ) -> StoreResult<Page<T, String>> {
        let mut builder = PageBuilder::new(page);
        let mut from = page.after.as_ref().map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        'reading: loop {
            let wanted = builder.wanted();
            if wanted == 0 {
                break;
            }
            let fields: Vec<String> = self
                .query(what, redis::cmd("ZRANGEBYLEX").arg(index).arg(&from).arg("+").arg("LIMIT").arg(0).arg(wanted))
                .await?;
            let Some(last) = fields.last() else { break };
            from = format!("({last}");
            let values: Vec<Option<String>> = self.query(what, redis::cmd("HMGET").arg(hash).arg(&fields)).await?;
            for (field, value) in fields.iter().zip(values) {
                // Deleted between the two reads: passed over.
                let Some(value) = value else { continue };
                let record: T = decode(&value)?;
                let matches = keep(&record);
                if !builder.offer(field.clone(), record, matches) {
                    break 'reading;
                }
            }
            if fields.len() < wanted {
                break;
            }
        }
        Ok(builder.finish())
    }

    /// A page of the account's transactions, newest first, from the index the filter points to (see
    /// [`crate::store::AccountStore::transactions_page`]).
    pub(super) async fn transaction_page(
        &self,
        account_id: &AccountId,
        filter: &TransactionFilter,
        page: &PageRequest<i32>,
    ) -> StoreResult<Page<Transaction, i32>> {
        const WHAT: &str = "transactions";
        let index = match (&filter.station, filter.open_only()) {
            (Some(station), _) => self.key("tx_station", &[account_id, station]),
            (None, true) => self.key("tx_open", &[account_id]),
            (None, false) => self.key("tx_ids", &[account_id]),
        };
        let txs = self.key("txs", &[account_id]);
        let mut builder = PageBuilder::new(page);
        let mut from = page.after.map_or_else(|| "+inf".to_owned(), |a| format!("({a}"));
        'reading: loop {
            let wanted = builder.wanted();
            if wanted == 0 {
                break;
            }
            let ids: Vec<i32> = self
                .query(
                    WHAT,
                    redis::cmd("ZREVRANGEBYSCORE").arg(&index).arg(&from).arg("-inf").arg("LIMIT").arg(0).arg(wanted),
                )
                .await?;
            let Some(last) = ids.last() else { break };
            from = format!("({last}");
            let values: Vec<Option<String>> = self.query(WHAT, redis::cmd("HMGET").arg(&txs).arg(&ids)).await?;
            for (&id, value) in ids.iter().zip(values) {
                let Some(value) = value else { continue };
                let tx: Transaction = decode(&value)?;
                let matches = filter.matches(&tx);
                if !builder.offer(id, tx, matches) {
                    break 'reading;
                }
            }
            if ids.len() < wanted {
                break;
            }
        }
        Ok(builder.finish())
    }

    /// Indexes what was stored before the list indexes existed, once per store (several nodes doing
    /// it at once index the same entries), account by account from the directory's index of
    /// account ids; records written meanwhile are indexed by their writers.
    pub(super) async fn index_stored(&self) -> StoreResult<()> {
        const WHAT: &str = "index_stored";
        let marker = self.global_key("indexed", &[]);
        let done: Option<String> = self.query(WHAT, redis::cmd("GET").arg(&marker)).await?;
        if done.as_deref() == Some(INDEXES_VERSION) {
            return Ok(());
        }
        // A store of version 1 has the lists' indexes already.
        let lists_indexed = done.as_deref() == Some("1");
        let mut after = None;
        let mut accounts = 0usize;
        loop {
            let (ids, next) = self.account_id_range(after, INDEX_BATCH).await?;
            for account_id in ids {
                if !lists_indexed {
                    self.index_account(&account_id).await?;
                }
                self.index_export_lists(&account_id).await?;
                accounts += 1;
            }
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        self.query::<()>(WHAT, redis::cmd("SET").arg(&marker).arg(INDEXES_VERSION)).await?;
        tracing::info!(accounts, lists_indexed, "indexed what was stored before the paging indexes");
        Ok(())
    }

    async fn index_account(&self, account_id: &AccountId) -> StoreResult<()> {
        const WHAT: &str = "index_stored";
        for (hash, index) in [("stations", "station_ids"), ("id_tags", "id_tag_ids")] {
            let (hash, index) = (&self.key(hash, &[account_id]), &self.key(index, &[account_id]));
            self.each_stored(hash, |fields| async move {
                let names: Vec<&String> = fields.keys().collect();
                let mut invocation = SCRIPTS.index_stored_fields.prepare_invoke();
                invocation.key(hash).key(index).arg(names);
                self.eval::<i64>(WHAT, &invocation).await.map(|_| ())
            })
            .await?;
        }
        let txs = &self.key("txs", &[account_id]);
        self.each_stored(txs, |records| async move {
            let mut by_station: BTreeMap<String, Vec<(String, String, &'static str)>> = BTreeMap::new();
            for (id, json) in records {
                let tx: Transaction = decode(&json)?;
                by_station.entry(tx.station_id.to_string()).or_default().push((id, json, open_flag(&tx)));
            }
            for (station, entries) in by_station {
                let mut invocation = SCRIPTS.index_stored_transactions.prepare_invoke();
                invocation.key(txs);
                for key in self.transaction_indexes(account_id, &station) {
                    invocation.key(key);
                }
                invocation.arg(&station);
                for (id, json, open) in entries {
                    invocation.arg(id).arg(json).arg(open);
                }
                self.eval::<i64>(WHAT, &invocation).await?;
            }
            Ok(())
        })
        .await
    }

    /// Calls `each` with the fields and values of `hash`, a batch at a time (`HSCAN`).
    pub(super) async fn each_stored<F, Fut>(&self, hash: &str, mut each: F) -> StoreResult<()>
    where
        F: FnMut(BTreeMap<String, String>) -> Fut,
        Fut: std::future::Future<Output = StoreResult<()>>,
    {
        let mut cursor = 0u64;
        loop {
            let (next, fields): (u64, BTreeMap<String, String>) = self
                .query("index_stored", redis::cmd("HSCAN").arg(hash).arg(cursor).arg("COUNT").arg(INDEX_BATCH))
                .await?;
            if !fields.is_empty() {
                each(fields).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}
