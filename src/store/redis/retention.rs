//! The Redis store's side of retention: one account's records of a kind walked with the cursor of
//! `SSCAN` / `HSCAN` (or from the head of a list), removing what the rules of [`crate::model`] call
//! old, each removal by a script that checks the record is still what was read.

use super::scripts::SCRIPTS;
use super::{decode, encode, join, score, start_field, RedisStore};
use crate::ids::AccountId;
use crate::model::{
    command_is_old, login_is_old, transaction_is_old, CommandRecord, DataKind, LoginEvent, PruneStep, Transaction,
};
use crate::store::StoreResult;
use chrono::{DateTime, Utc};

/// A cursor of `SCAN` and its kin: "0" starts a walk and ends one.
fn scan_next(cursor: String) -> Option<String> {
    (cursor != "0").then_some(cursor)
}

impl RedisStore {
    /// [`crate::store::AccountStore::account_ids`]: a range of the directory's index of account ids
    /// (byte order), after the last one handed out.
    pub(super) async fn account_id_range(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<(Vec<AccountId>, Option<String>)> {
        let limit = limit.max(1);
        let from = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let ids: Vec<String> = self
            .query(
                "account_ids",
                redis::cmd("ZRANGEBYLEX")
                    .arg(self.dir_key("ids", &[]))
                    .arg(from)
                    .arg("+")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        let next = if ids.len() == limit { ids.last().cloned() } else { None };
        Ok((ids.into_iter().map(AccountId::from).collect(), next))
    }

    /// [`crate::store::AccountStore::lease`]: `lease:{name}` holds the holder's name until it expires.
    pub(super) async fn take_lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> StoreResult<bool> {
        let mut invocation = SCRIPTS.lease.prepare_invoke();
        invocation.key(self.global_key("lease", &[name])).arg(holder).arg(ttl.as_millis().max(1) as u64);
        Ok(self.eval::<i64>("lease", &invocation).await? == 1)
    }

    /// A step of `SSCAN` over a set that lists an account's keys: some members, and where to go on.
    async fn listing_step(
        &self,
        listing: &str,
        cursor: String,
        batch: usize,
    ) -> StoreResult<(Option<String>, Vec<String>)> {
        let (next, members): (String, Vec<String>) =
            self.query("prune", redis::cmd("SSCAN").arg(listing).arg(cursor).arg("COUNT").arg(batch)).await?;
        Ok((scan_next(next), members))
    }

    /// Removes the members of the sorted set `set` scored below `bound`; once it is empty, it leaves
    /// `listing` (where it is `member`) and the sorted set `also` names, if any. How many went.
    async fn prune_set(
        &self,
        set: &str,
        bound: &str,
        listing: &str,
        member: &str,
        also: Option<(String, &str)>,
    ) -> StoreResult<usize> {
        let mut invocation = SCRIPTS.prune_sorted_set.prepare_invoke();
        invocation.key(set).key(listing).arg(bound).arg(member);
        if let Some((key, member)) = also {
            invocation.key(key).arg(member);
        }
        self.eval("prune", &invocation).await
    }

    /// [`crate::store::AccountStore::prune`].
    pub(super) async fn prune_kind(
        &self,
        account_id: &AccountId,
        kind: DataKind,
        before: DateTime<Utc>,
        after: Option<String>,
        batch: usize,
    ) -> StoreResult<PruneStep> {
        const WHAT: &str = "prune";
        let batch = batch.max(1);
        let cursor = after.unwrap_or_else(|| "0".into());
        // Sorted sets scored by time (µs): members scored below the cutoff go.
        let bound = format!("({}", score(before));
        match kind {
            DataKind::MeterValues => {
                let listing = self.key("meter_keys", &[account_id]);
                let (next, members) = self.listing_step(&listing, cursor, batch).await?;
                let open = self.key("tx_open", &[account_id]);
                let mut removed = 0usize;
                for member in members {
                    let (station, tx): (String, i32) = decode(&member)?;
                    if tx != 0 {
                        let is_open: Option<f64> = self.query(WHAT, redis::cmd("ZSCORE").arg(&open).arg(tx)).await?;
                        if is_open.is_some() {
                            continue;
                        }
                    }
                    let set = self.key("meter", &[account_id, &station, &tx.to_string()]);
                    // Readings outside a transaction are listed by station for the export too.
                    let by_station = (tx == 0).then(|| (self.key("meter_stations", &[account_id]), station.as_str()));
                    removed += self.prune_set(&set, &bound, &listing, &member, by_station).await?;
                }
                Ok(PruneStep { removed, next })
            }
            DataKind::StationEvents => {
                let listing = self.key("event_stations", &[account_id]);
                let (next, stations) = self.listing_step(&listing, cursor, batch).await?;
                let mut removed = 0usize;
                for station in stations {
                    let set = self.key("events", &[account_id, &station]);
                    removed += self.prune_set(&set, &bound, &listing, &station, None).await?;
                }
                Ok(PruneStep { removed, next })
            }
            DataKind::LoginHistory => {
                // Oldest first: the old ones are a run at the head.
                let key = self.key("logins", &[account_id]);
                let head: Vec<String> = self.query(WHAT, redis::cmd("LRANGE").arg(&key).arg(0).arg(batch - 1)).await?;
                let mut old = 0usize;
                for e in &head {
                    if !login_is_old(&decode::<LoginEvent>(e)?, before) {
                        break;
                    }
                    old += 1;
                }
                let Some(last) = old.checked_sub(1).and_then(|i| head.get(i)) else {
                    return Ok(PruneStep::default());
                };
                let mut invocation = SCRIPTS.trim_list_head.prepare_invoke();
                invocation.key(&key).arg(old).arg(last);
                let removed = self.eval::<usize>(WHAT, &invocation).await?;
                // A whole batch was old and went: more may follow.
                let more = removed == batch;
                Ok(PruneStep { removed, next: more.then(String::new) })
            }
            DataKind::FinishedCommands => {
                let key = self.key("commands", &[account_id]);
                let (next, fields): (String, Vec<(String, String)>) =
                    self.query(WHAT, redis::cmd("HSCAN").arg(&key).arg(cursor).arg("COUNT").arg(batch)).await?;
                let mut removed = 0usize;
                for (field, value) in fields {
                    if command_is_old(&decode::<CommandRecord>(&value)?, before) {
                        let mut invocation = SCRIPTS.hash_delete_if.prepare_invoke();
                        invocation.key(&key).key(self.key("command_ids", &[account_id])).arg(&field).arg(&value);
                        removed += self.eval::<usize>(WHAT, &invocation).await?;
                    }
                }
                Ok(PruneStep { removed, next: scan_next(next) })
            }
            DataKind::FinishedTransactions => {
                // Oldest (lowest id) first, from after the last id looked at.
                let min = match after_id(&cursor) {
                    Some(id) => format!("({id}"),
                    None => "-inf".into(),
                };
                let ids: Vec<String> = self
                    .query(
                        WHAT,
                        redis::cmd("ZRANGEBYSCORE")
                            .arg(self.key("tx_ids", &[account_id]))
                            .arg(min)
                            .arg("+inf")
                            .arg("LIMIT")
                            .arg(0)
                            .arg(batch),
                    )
                    .await?;
                if ids.is_empty() {
                    return Ok(PruneStep::default());
                }
                let txs = self.key("txs", &[account_id]);
                let values: Vec<Option<String>> = self.query(WHAT, redis::cmd("HMGET").arg(&txs).arg(&ids)).await?;
                let mut removed = 0usize;
                for value in values.into_iter().flatten() {
                    let tx: Transaction = decode(&value)?;
                    if !transaction_is_old(&tx, before) {
                        continue;
                    }
                    let id = tx.id.to_string();
                    let start = tx.start_identity().map(|s| start_field(&s)).unwrap_or_default();
                    let reference =
                        tx.station_transaction_id.as_deref().map(|r| join(&[&tx.station_id, r])).unwrap_or_default();
                    let mut invocation = SCRIPTS.remove_transaction.prepare_invoke();
                    invocation
                        .key(&txs)
                        .key(self.key("tx_ids", &[account_id]))
                        .key(self.key("tx_station", &[account_id, &tx.station_id]))
                        .key(self.key("tx_starts", &[account_id]))
                        .key(self.key("tx_refs", &[account_id]))
                        .key(self.key("meter", &[account_id, &tx.station_id, &id]))
                        .key(self.key("meter_keys", &[account_id]))
                        .arg(&id)
                        .arg(&value)
                        .arg(start)
                        .arg(reference)
                        .arg(encode(&(&tx.station_id, tx.id))?);
                    removed += self.eval::<usize>(WHAT, &invocation).await?;
                }
                let more = ids.len() == batch;
                Ok(PruneStep { removed, next: more.then(|| ids.last().cloned()).flatten() })
            }
        }
    }
}

/// The last transaction id a step looked at, from its position ("0" or none: from the start).
fn after_id(cursor: &str) -> Option<i32> {
    cursor.parse::<i32>().ok().filter(|_| cursor != "0")
}
