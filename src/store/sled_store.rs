//! The embedded store: one sled database in the configured data directory.
//!
//! Keys are the parts of a record's identity joined by a NUL byte (ids never contain one: the API and
//! the WebSocket endpoint refuse them), so a tenant's records share a prefix and list with one scan.

use super::group_commit::{CommitPolicy, GroupCommit};
use super::{
    AccountUpdate, ErasureReport, EventOutcome, NewTransactionFn, StationUpdate, StopOutcome, Store, StoreError,
    StoreResult, TransactionUpdate,
};
use crate::model::{
    Account, ApiToken, CommandRecord, CommandStatus, Consents, DeviceVariable, IdTag, LoginEvent, MeterRecord,
    NewTransaction, StartIdentity, Station, StationEvent, Transaction, TransactionStop,
};
use async_trait::async_trait;
use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use std::path::Path;

const SEP: u8 = 0;
const TX_SEQ_KEY: &[u8] = b"transaction_seq";
/// Meta keys `erasing\0{account_id}` mark erasures begun and not finished.
const ERASING: &[u8] = b"erasing";
/// The value of a slug index entry that names no account: the slug of an erased account.
const RESERVED_SLUG: &[u8] = b"";

/// The sled-backed [`Store`].
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    accounts: sled::Tree,
    accounts_by_email: sled::Tree,
    accounts_by_slug: sled::Tree,
    tokens: sled::Tree,
    /// account id, token id → token hash: lists and revokes an account's tokens.
    account_tokens: sled::Tree,
    consents: sled::Tree,
    login_events: sled::Tree,
    stations: sled::Tree,
    id_tags: sled::Tree,
    transactions: sled::Tree,
    transaction_starts: sled::Tree,
    meter_values: sled::Tree,
    events: sled::Tree,
    commands: sled::Tree,
    command_queue: sled::Tree,
    transaction_refs: sled::Tree,
    device_model: sled::Tree,
    meta: sled::Tree,
    commit: GroupCommit,
}

fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(SEP);
        }
        k.extend_from_slice(p);
    }
    k
}

fn prefix(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = key(parts);
    k.push(SEP);
    k
}

pub(super) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

pub(super) fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(backend)
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(backend)
}

pub(super) fn get<T: DeserializeOwned>(tree: &sled::Tree, k: &[u8]) -> StoreResult<Option<T>> {
    tree.get(k).map_err(backend)?.map(|v| decode(&v)).transpose()
}

fn scan<T: DeserializeOwned>(tree: &sled::Tree, p: &[u8]) -> StoreResult<Vec<T>> {
    tree.scan_prefix(p).map(|item| item.map_err(backend).and_then(|(_, v)| decode(&v))).collect()
}

/// Unwraps a sled transaction result whose abort value is a `StoreError`.
fn transactional<T>(r: Result<T, TransactionError<StoreError>>) -> StoreResult<T> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => backend(e),
    })
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

/// Takes `count` ids from the transaction sequence inside a sled transaction; returns the first.
fn take_ids(
    meta: &sled::transaction::TransactionalTree,
    count: u32,
) -> Result<i32, ConflictableTransactionError<StoreError>> {
    let last = match meta.get(TX_SEQ_KEY)? {
        Some(v) => i32::from_be_bytes(v.as_ref().try_into().map_err(|_| abort(backend("bad sequence")))?),
        None => 0,
    };
    let count = i32::try_from(count).map_err(|_| abort(backend("too many ids asked for")))?;
    let end = last.checked_add(count).ok_or_else(|| abort(backend("transaction ids exhausted")))?;
    meta.insert(TX_SEQ_KEY, &end.to_be_bytes())?;
    Ok(last + 1)
}

impl SledStore {
    /// Opens (or creates) the database in `dir`; [`Store::flush`] follows `policy`.
    pub fn open(dir: &Path, policy: CommitPolicy) -> StoreResult<Self> {
        let db = sled::Config::new().path(dir).open().map_err(backend)?;
        let commit = GroupCommit::start(db.clone(), policy).map_err(backend)?;
        let tree = |name: &str| db.open_tree(name).map_err(backend);
        let store = Self {
            accounts: tree("accounts")?,
            accounts_by_email: tree("accounts_by_email")?,
            accounts_by_slug: tree("accounts_by_slug")?,
            tokens: tree("tokens")?,
            account_tokens: tree("account_tokens")?,
            consents: tree("consents")?,
            login_events: tree("login_events")?,
            stations: tree("stations")?,
            id_tags: tree("id_tags")?,
            transactions: tree("transactions")?,
            transaction_starts: tree("transaction_starts")?,
            meter_values: tree("meter_values")?,
            events: tree("events")?,
            commands: tree("commands")?,
            transaction_refs: tree("transaction_refs")?,
            device_model: tree("device_model")?,
            command_queue: tree("command_queue")?,
            meta: tree("meta")?,
            commit,
            db,
        };
        store.finish_interrupted_erasures()?;
        Ok(store)
    }

    /// Finishes erasures a crash interrupted: nothing of an erased account may outlive its erasure.
    fn finish_interrupted_erasures(&self) -> StoreResult<()> {
        for item in self.meta.scan_prefix(prefix(&[ERASING])) {
            let (k, _) = item.map_err(backend)?;
            let account_id = String::from_utf8_lossy(&k[ERASING.len() + 1..]).to_string();
            tracing::warn!(account = %account_id, "finishing an interrupted account erasure");
            self.erase(&account_id)?;
        }
        self.db.flush().map_err(backend)?;
        Ok(())
    }

    /// Flushes completed so far (tests check that acknowledgements wait for one).
    pub fn flushes(&self) -> u64 {
        self.commit.flushes()
    }

    /// Opens (or creates) a tree of this database beside the store's own, so what is kept there is
    /// made durable by the same [`Store::flush`]. The name must not be one the store uses.
    pub fn open_tree(&self, name: &str) -> StoreResult<sled::Tree> {
        self.db.open_tree(name).map_err(backend)
    }

    fn start_key(start: &StartIdentity) -> Vec<u8> {
        key(&[
            start.account_id.as_bytes(),
            start.station_id.as_bytes(),
            &start.connector_id.to_be_bytes(),
            start.start_timestamp.to_rfc3339().as_bytes(),
            &start.meter_start.to_be_bytes(),
        ])
    }

    fn reference_key(account_id: &str, station_id: &str, station_transaction_id: &str) -> Vec<u8> {
        key(&[account_id.as_bytes(), station_id.as_bytes(), station_transaction_id.as_bytes()])
    }

    fn account_by_index(&self, index: &sled::Tree, k: &str) -> StoreResult<Option<Account>> {
        match index.get(k.as_bytes()).map_err(backend)? {
            Some(id) => get(&self.accounts, &id),
            None => Ok(None),
        }
    }

    /// Removes every record of the account (see [`Store::erase_account`]). Idempotent, so it can be
    /// run again after a crash; the marker in `meta` is removed only once everything else is.
    fn erase(&self, account_id: &str) -> StoreResult<ErasureReport> {
        let marker = key(&[ERASING, account_id.as_bytes()]);
        self.meta.insert(&marker, &[]).map_err(backend)?;
        let mut report = ErasureReport::default();
        let r = (&self.accounts, &self.accounts_by_email, &self.accounts_by_slug).transaction(|(a, e, s)| {
            let Some(bytes) = a.remove(account_id.as_bytes())? else { return Ok(()) };
            let account: Account = decode(&bytes).map_err(abort)?;
            if e.get(account.email.as_bytes())?.is_some_and(|id| id.as_ref() == account_id.as_bytes()) {
                e.remove(account.email.as_bytes())?;
            }
            s.insert(account.slug.as_bytes(), RESERVED_SLUG)?;
            Ok(())
        });
        transactional(r)?;
        let p = prefix(&[account_id.as_bytes()]);
        for item in self.account_tokens.scan_prefix(&p) {
            let (k, hash) = item.map_err(backend)?;
            self.tokens.remove(hash).map_err(backend)?;
            self.account_tokens.remove(k).map_err(backend)?;
            report.tokens += 1;
        }
        let clear = |tree: &sled::Tree| -> StoreResult<usize> {
            let mut n = 0;
            for item in tree.scan_prefix(&p) {
                let (k, _) = item.map_err(backend)?;
                tree.remove(k).map_err(backend)?;
                n += 1;
            }
            Ok(n)
        };
        report.stations = clear(&self.stations)?;
        report.id_tags = clear(&self.id_tags)?;
        report.transactions = clear(&self.transactions)?;
        clear(&self.transaction_starts)?;
        clear(&self.transaction_refs)?;
        report.device_variables = clear(&self.device_model)?;
        report.meter_values = clear(&self.meter_values)?;
        report.events = clear(&self.events)?;
        report.queued_commands = clear(&self.command_queue)?;
        report.commands = clear(&self.commands)?;
        report.login_events = clear(&self.login_events)?;
        report.consents = usize::from(self.consents.remove(account_id.as_bytes()).map_err(backend)?.is_some());
        self.meta.remove(&marker).map_err(backend)?;
        Ok(report)
    }

    fn transaction_key(account_id: &str, id: i32) -> Vec<u8> {
        key(&[account_id.as_bytes(), &id.to_be_bytes()])
    }
}

#[async_trait]
impl Store for SledStore {
    async fn create_account(&self, account: &Account) -> StoreResult<()> {
        let value = encode(account)?;
        let r = (&self.accounts, &self.accounts_by_email, &self.accounts_by_slug).transaction(|(a, e, s)| {
            if e.get(account.email.as_bytes())?.is_some() {
                return Err(abort(StoreError::Conflict("email")));
            }
            if s.get(account.slug.as_bytes())?.is_some() {
                return Err(abort(StoreError::Conflict("slug")));
            }
            e.insert(account.email.as_bytes(), account.id.as_bytes())?;
            s.insert(account.slug.as_bytes(), account.id.as_bytes())?;
            a.insert(account.id.as_bytes(), value.as_slice())?;
            Ok(())
        });
        transactional(r)
    }

    async fn account(&self, id: &str) -> StoreResult<Option<Account>> {
        get(&self.accounts, id.as_bytes())
    }

    async fn account_by_email(&self, email: &str) -> StoreResult<Option<Account>> {
        self.account_by_index(&self.accounts_by_email, email)
    }

    async fn account_by_slug(&self, slug: &str) -> StoreResult<Option<Account>> {
        self.account_by_index(&self.accounts_by_slug, slug)
    }

    async fn update_account(&self, id: &str, update: AccountUpdate<'_>) -> StoreResult<Option<Account>> {
        let r = (&self.accounts, &self.accounts_by_email, &self.accounts_by_slug).transaction(|(a, e, s)| {
            let Some(bytes) = a.get(id.as_bytes())? else { return Ok(None) };
            let old: Account = decode(&bytes).map_err(abort)?;
            let mut new = old.clone();
            update(&mut new);
            new.id = old.id.clone();
            if new.email != old.email {
                if e.get(new.email.as_bytes())?.is_some() {
                    return Err(abort(StoreError::Conflict("email")));
                }
                e.remove(old.email.as_bytes())?;
                e.insert(new.email.as_bytes(), id.as_bytes())?;
            }
            if new.slug != old.slug {
                if s.get(new.slug.as_bytes())?.is_some() {
                    return Err(abort(StoreError::Conflict("slug")));
                }
                s.remove(old.slug.as_bytes())?;
                s.insert(new.slug.as_bytes(), id.as_bytes())?;
            }
            a.insert(id.as_bytes(), encode(&new).map_err(abort)?)?;
            Ok(Some(new))
        });
        transactional(r)
    }

    async fn erase_account(&self, account_id: &str) -> StoreResult<ErasureReport> {
        self.erase(account_id)
    }

    async fn put_token(&self, token_hash: &str, token: &ApiToken) -> StoreResult<()> {
        let value = encode(token)?;
        let index = key(&[token.account_id.as_bytes(), token.id.as_bytes()]);
        let r = (&self.tokens, &self.account_tokens).transaction(|(tokens, index_tree)| {
            tokens.insert(token_hash.as_bytes(), value.as_slice())?;
            index_tree.insert(index.as_slice(), token_hash.as_bytes())?;
            Ok(())
        });
        transactional(r)
    }

    async fn token(&self, token_hash: &str) -> StoreResult<Option<ApiToken>> {
        get(&self.tokens, token_hash.as_bytes())
    }

    async fn tokens(&self, account_id: &str) -> StoreResult<Vec<ApiToken>> {
        let mut out = Vec::new();
        for item in self.account_tokens.scan_prefix(prefix(&[account_id.as_bytes()])) {
            let (_, hash) = item.map_err(backend)?;
            if let Some(token) = get::<ApiToken>(&self.tokens, &hash)? {
                out.push(token);
            }
        }
        out.sort_by_key(|t| t.created_at);
        Ok(out)
    }

    async fn delete_token(&self, account_id: &str, token_id: &str) -> StoreResult<bool> {
        let index = key(&[account_id.as_bytes(), token_id.as_bytes()]);
        let r = (&self.tokens, &self.account_tokens).transaction(|(tokens, index_tree)| {
            let Some(hash) = index_tree.remove(index.as_slice())? else { return Ok(false) };
            tokens.remove(hash)?;
            Ok(true)
        });
        transactional(r)
    }

    async fn delete_tokens_except(&self, account_id: &str, keep: Option<&str>) -> StoreResult<usize> {
        let mut removed = 0;
        for item in self.account_tokens.scan_prefix(prefix(&[account_id.as_bytes()])) {
            let (k, hash) = item.map_err(backend)?;
            let token_id = &k[account_id.len() + 1..];
            if keep.is_some_and(|keep| keep.as_bytes() == token_id) {
                continue;
            }
            self.tokens.remove(hash).map_err(backend)?;
            self.account_tokens.remove(k).map_err(backend)?;
            removed += 1;
        }
        Ok(removed)
    }

    async fn consents(&self, account_id: &str) -> StoreResult<Consents> {
        Ok(get(&self.consents, account_id.as_bytes())?.unwrap_or_default())
    }

    async fn put_consents(&self, account_id: &str, consents: &Consents) -> StoreResult<()> {
        self.consents.insert(account_id.as_bytes(), encode(consents)?).map_err(backend)?;
        Ok(())
    }

    async fn add_login_event(&self, account_id: &str, event: &LoginEvent, keep: usize) -> StoreResult<()> {
        let seq = self.db.generate_id().map_err(backend)?;
        let p = prefix(&[account_id.as_bytes()]);
        self.login_events.insert(key(&[account_id.as_bytes(), &seq.to_be_bytes()]), encode(event)?).map_err(backend)?;
        // Keys sort by sequence, so the oldest come first; drop what exceeds the limit.
        let total = self.login_events.scan_prefix(&p).count();
        for item in self.login_events.scan_prefix(&p).take(total.saturating_sub(keep)) {
            let (k, _) = item.map_err(backend)?;
            self.login_events.remove(k).map_err(backend)?;
        }
        Ok(())
    }

    async fn login_events(&self, account_id: &str) -> StoreResult<Vec<LoginEvent>> {
        scan(&self.login_events, &prefix(&[account_id.as_bytes()]))
    }

    async fn create_station(&self, station: &Station) -> StoreResult<()> {
        let k = key(&[station.account_id.as_bytes(), station.id.as_bytes()]);
        let swapped =
            self.stations.compare_and_swap(k, None as Option<&[u8]>, Some(encode(station)?)).map_err(backend)?;
        swapped.map_err(|_| StoreError::Conflict("station id"))
    }

    async fn station(&self, account_id: &str, station_id: &str) -> StoreResult<Option<Station>> {
        get(&self.stations, &key(&[account_id.as_bytes(), station_id.as_bytes()]))
    }

    async fn stations(&self, account_id: &str) -> StoreResult<Vec<Station>> {
        scan(&self.stations, &prefix(&[account_id.as_bytes()]))
    }

    async fn station_count(&self, account_id: &str) -> StoreResult<usize> {
        let mut n = 0;
        for item in self.stations.scan_prefix(prefix(&[account_id.as_bytes()])) {
            item.map_err(backend)?;
            n += 1;
        }
        Ok(n)
    }

    async fn update_station(
        &self,
        account_id: &str,
        station_id: &str,
        update: StationUpdate<'_>,
    ) -> StoreResult<Option<Station>> {
        let k = key(&[account_id.as_bytes(), station_id.as_bytes()]);
        let mut failure = None;
        let new = self
            .stations
            .update_and_fetch(&k, |old| {
                let old = old?;
                match decode::<Station>(old) {
                    Ok(mut station) => {
                        update(&mut station);
                        match encode(&station) {
                            Ok(bytes) => Some(bytes),
                            Err(e) => {
                                failure = Some(e);
                                Some(old.to_vec())
                            }
                        }
                    }
                    Err(e) => {
                        failure = Some(e);
                        Some(old.to_vec())
                    }
                }
            })
            .map_err(backend)?;
        if let Some(e) = failure {
            return Err(e);
        }
        new.map(|v| decode(&v)).transpose()
    }

    async fn delete_station(&self, account_id: &str, station_id: &str) -> StoreResult<bool> {
        let k = key(&[account_id.as_bytes(), station_id.as_bytes()]);
        Ok(self.stations.remove(k).map_err(backend)?.is_some())
    }

    async fn put_id_tag(&self, account_id: &str, tag: &IdTag) -> StoreResult<bool> {
        let k = key(&[account_id.as_bytes(), tag.id_tag.as_bytes()]);
        Ok(self.id_tags.insert(k, encode(tag)?).map_err(backend)?.is_none())
    }

    async fn id_tag(&self, account_id: &str, id_tag: &str) -> StoreResult<Option<IdTag>> {
        get(&self.id_tags, &key(&[account_id.as_bytes(), id_tag.as_bytes()]))
    }

    async fn id_tags(&self, account_id: &str) -> StoreResult<Vec<IdTag>> {
        scan(&self.id_tags, &prefix(&[account_id.as_bytes()]))
    }

    async fn delete_id_tag(&self, account_id: &str, id_tag: &str) -> StoreResult<bool> {
        let k = key(&[account_id.as_bytes(), id_tag.as_bytes()]);
        Ok(self.id_tags.remove(k).map_err(backend)?.is_some())
    }

    async fn start_transaction(&self, tx: &NewTransaction) -> StoreResult<(Transaction, bool)> {
        let start_key = Self::start_key(&tx.start_identity());
        let received_at = chrono::Utc::now();
        let r = (&self.transactions, &self.transaction_starts, &self.meta).transaction(|(txs, starts, meta)| {
            if let Some(id) = starts.get(&start_key)? {
                let id = i32::from_be_bytes(id.as_ref().try_into().map_err(|_| abort(backend("bad start index")))?);
                let existing = txs.get(Self::transaction_key(&tx.account_id, id))?;
                let existing = existing.ok_or_else(|| abort(backend("start index names a missing transaction")))?;
                let existing: Transaction = decode(&existing).map_err(abort)?;
                return Ok((existing, false));
            }
            let next = take_ids(meta, 1)?;
            let record = Transaction::started(tx, next, received_at);
            txs.insert(Self::transaction_key(&tx.account_id, next), encode(&record).map_err(abort)?)?;
            starts.insert(start_key.as_slice(), &next.to_be_bytes())?;
            Ok((record, true))
        });
        transactional(r)
    }

    async fn stop_transaction(
        &self,
        account_id: &str,
        station_id: &str,
        transaction_id: i32,
        stop: &TransactionStop,
    ) -> StoreResult<StopOutcome> {
        let k = Self::transaction_key(account_id, transaction_id);
        let r = self.transactions.transaction(|txs| {
            let Some(bytes) = txs.get(&k)? else {
                return Ok(StopOutcome::Unknown);
            };
            let mut record: Transaction = decode(&bytes).map_err(abort)?;
            if record.station_id != station_id {
                return Ok(StopOutcome::Unknown);
            }
            if record.stop.is_some() {
                return Ok(StopOutcome::AlreadyStopped(record));
            }
            record.stop = Some(stop.clone());
            txs.insert(k.as_slice(), encode(&record).map_err(abort)?)?;
            Ok(StopOutcome::Stopped(record))
        });
        transactional(r)
    }

    async fn apply_transaction_event(
        &self,
        account_id: &str,
        station_id: &str,
        station_transaction_id: &str,
        seq_no: u64,
        create: NewTransactionFn<'_>,
        apply: TransactionUpdate<'_>,
    ) -> StoreResult<EventOutcome> {
        let ref_key = Self::reference_key(account_id, station_id, station_transaction_id);
        let r = (&self.transactions, &self.transaction_refs, &self.meta).transaction(|(txs, refs, meta)| {
            let (mut record, created) = match refs.get(&ref_key)? {
                Some(id) => {
                    let id = i32::from_be_bytes(id.as_ref().try_into().map_err(|_| abort(backend("bad reference")))?);
                    let bytes = txs.get(Self::transaction_key(account_id, id))?;
                    let bytes = bytes.ok_or_else(|| abort(backend("reference names a missing transaction")))?;
                    (decode::<Transaction>(&bytes).map_err(abort)?, false)
                }
                None => {
                    let id = take_ids(meta, 1)?;
                    refs.insert(ref_key.as_slice(), &id.to_be_bytes())?;
                    (create(id), true)
                }
            };
            if record.events.iter().any(|e| e.seq_no == seq_no) {
                return Ok(EventOutcome { transaction: record, applied: false, created });
            }
            apply(&mut record);
            txs.insert(Self::transaction_key(account_id, record.id), encode(&record).map_err(abort)?)?;
            Ok(EventOutcome { transaction: record, applied: true, created })
        });
        transactional(r)
    }

    async fn put_variables(&self, account_id: &str, station_id: &str, variables: &[DeviceVariable]) -> StoreResult<()> {
        let mut batch = sled::Batch::default();
        for v in variables {
            batch.insert(key(&[account_id.as_bytes(), station_id.as_bytes(), v.key().as_bytes()]), encode(v)?);
        }
        self.device_model.apply_batch(batch).map_err(backend)
    }

    async fn observe_variables(&self, account_id: &str, station_id: &str, seen: &[DeviceVariable]) -> StoreResult<()> {
        // One station's messages are handled one at a time, so nothing else writes its device model
        // between the read and the batch.
        let mut batch = std::collections::BTreeMap::new();
        for v in seen {
            let k = key(&[account_id.as_bytes(), station_id.as_bytes(), v.key().as_bytes()]);
            let known = match batch.remove(&k) {
                Some(earlier) => Some(earlier),
                None => get(&self.device_model, &k)?,
            };
            batch.insert(k, DeviceVariable::observed(known, v));
        }
        let mut writes = sled::Batch::default();
        for (k, v) in &batch {
            writes.insert(k.as_slice(), encode(v)?);
        }
        self.device_model.apply_batch(writes).map_err(backend)
    }

    async fn variables(&self, account_id: &str, station_id: &str) -> StoreResult<Vec<DeviceVariable>> {
        scan(&self.device_model, &prefix(&[account_id.as_bytes(), station_id.as_bytes()]))
    }

    async fn transaction(&self, account_id: &str, transaction_id: i32) -> StoreResult<Option<Transaction>> {
        get(&self.transactions, &Self::transaction_key(account_id, transaction_id))
    }

    async fn transaction_by_start(&self, start: &StartIdentity) -> StoreResult<Option<Transaction>> {
        let Some(id) = self.transaction_starts.get(Self::start_key(start)).map_err(backend)? else {
            return Ok(None);
        };
        let id = i32::from_be_bytes(id.as_ref().try_into().map_err(|_| backend("bad start index"))?);
        get(&self.transactions, &Self::transaction_key(&start.account_id, id))
    }

    async fn transaction_by_reference(
        &self,
        account_id: &str,
        station_id: &str,
        station_transaction_id: &str,
    ) -> StoreResult<Option<Transaction>> {
        let k = Self::reference_key(account_id, station_id, station_transaction_id);
        let Some(id) = self.transaction_refs.get(k).map_err(backend)? else {
            return Ok(None);
        };
        let id = i32::from_be_bytes(id.as_ref().try_into().map_err(|_| backend("bad reference"))?);
        get(&self.transactions, &Self::transaction_key(account_id, id))
    }

    async fn put_transaction(&self, tx: &Transaction) -> StoreResult<()> {
        let value = encode(tx)?;
        let id = tx.id.to_be_bytes();
        let start_key = tx.start_identity().map(|s| Self::start_key(&s));
        let ref_key =
            tx.station_transaction_id.as_deref().map(|r| Self::reference_key(&tx.account_id, &tx.station_id, r));
        let r = (&self.transactions, &self.transaction_starts, &self.transaction_refs).transaction(
            |(txs, starts, refs)| {
                txs.insert(Self::transaction_key(&tx.account_id, tx.id), value.as_slice())?;
                if let Some(k) = &start_key {
                    starts.insert(k.as_slice(), &id)?;
                }
                if let Some(k) = &ref_key {
                    refs.insert(k.as_slice(), &id)?;
                }
                Ok(())
            },
        );
        transactional(r)
    }

    async fn reserve_transaction_ids(&self, count: u32) -> StoreResult<std::ops::Range<i32>> {
        let first = transactional(self.meta.transaction(|meta| take_ids(meta, count)))?;
        Ok(first..first + count as i32)
    }

    async fn transactions(&self, account_id: &str, station_id: Option<&str>) -> StoreResult<Vec<Transaction>> {
        let mut all: Vec<Transaction> = scan(&self.transactions, &prefix(&[account_id.as_bytes()]))?;
        if let Some(station) = station_id {
            all.retain(|t| t.station_id == station);
        }
        all.reverse();
        Ok(all)
    }

    async fn add_meter_values(&self, account_id: &str, records: &[MeterRecord]) -> StoreResult<()> {
        let mut batch = sled::Batch::default();
        for record in records {
            let tx = record.transaction_id.unwrap_or(0);
            let value = encode(record)?;
            // Keyed by what the reading is, so the same reading sent twice is stored once, and a
            // transaction's readings list in time order.
            let fingerprint = Sha256::digest(&value);
            let millis = record.meter_value.timestamp.timestamp_millis();
            // Flip the sign bit so that negative (pre-1970) times still sort before positive ones.
            let time = ((millis as u64) ^ (1 << 63)).to_be_bytes();
            let k = key(&[
                account_id.as_bytes(),
                record.station_id.as_bytes(),
                &tx.to_be_bytes(),
                &time,
                &record.connector_id.to_be_bytes(),
                &fingerprint[..8],
            ]);
            batch.insert(k, value);
        }
        self.meter_values.apply_batch(batch).map_err(backend)
    }

    async fn transaction_meter_values(
        &self,
        account_id: &str,
        station_id: &str,
        transaction_id: i32,
    ) -> StoreResult<Vec<MeterRecord>> {
        scan(
            &self.meter_values,
            &prefix(&[account_id.as_bytes(), station_id.as_bytes(), &transaction_id.to_be_bytes()]),
        )
    }

    async fn account_meter_values(&self, account_id: &str) -> StoreResult<Vec<MeterRecord>> {
        scan(&self.meter_values, &prefix(&[account_id.as_bytes()]))
    }

    async fn add_event(&self, account_id: &str, event: &StationEvent) -> StoreResult<()> {
        let value = encode(event)?;
        // Keyed by when it was received and what it is, so the same event applied twice (a cluster
        // node's write-ahead log may replay it) is stored once, and a station's events list in the
        // order they were received. Events stored before were keyed by a sequence number, which
        // sorts before any time key: they still list first.
        let fingerprint = Sha256::digest(&value);
        let micros = event.received_at.timestamp_micros();
        // Flip the sign bit so that negative (pre-1970) times still sort before positive ones.
        let time = ((micros as u64) ^ (1 << 63)).to_be_bytes();
        let k = key(&[account_id.as_bytes(), event.station_id.as_bytes(), &time, &fingerprint[..8]]);
        self.events.insert(k, value).map_err(backend)?;
        Ok(())
    }

    async fn events(&self, account_id: &str, station_id: &str) -> StoreResult<Vec<StationEvent>> {
        scan(&self.events, &prefix(&[account_id.as_bytes(), station_id.as_bytes()]))
    }

    async fn account_events(&self, account_id: &str) -> StoreResult<Vec<StationEvent>> {
        scan(&self.events, &prefix(&[account_id.as_bytes()]))
    }

    async fn enqueue_command(&self, command: &CommandRecord) -> StoreResult<()> {
        let record_key = key(&[command.account_id.as_bytes(), command.station_id.as_bytes(), command.id.as_bytes()]);
        let seq = self.db.generate_id().map_err(backend)?;
        let queue_key = key(&[command.account_id.as_bytes(), command.station_id.as_bytes(), &seq.to_be_bytes()]);
        let value = encode(command)?;
        let r = (&self.commands, &self.command_queue).transaction(|(commands, queue)| {
            commands.insert(record_key.as_slice(), value.as_slice())?;
            queue.insert(queue_key.as_slice(), command.id.as_bytes())?;
            Ok(())
        });
        transactional(r)
    }

    async fn update_command(&self, command: &CommandRecord) -> StoreResult<()> {
        let record_key = key(&[command.account_id.as_bytes(), command.station_id.as_bytes(), command.id.as_bytes()]);
        self.commands.insert(record_key, encode(command)?).map_err(backend)?;
        if command.status != CommandStatus::Queued {
            let p = prefix(&[command.account_id.as_bytes(), command.station_id.as_bytes()]);
            for item in self.command_queue.scan_prefix(p) {
                let (k, id) = item.map_err(backend)?;
                if id.as_ref() == command.id.as_bytes() {
                    self.command_queue.remove(k).map_err(backend)?;
                }
            }
        }
        Ok(())
    }

    async fn command(
        &self,
        account_id: &str,
        station_id: &str,
        command_id: &str,
    ) -> StoreResult<Option<CommandRecord>> {
        get(&self.commands, &key(&[account_id.as_bytes(), station_id.as_bytes(), command_id.as_bytes()]))
    }

    async fn account_commands(&self, account_id: &str) -> StoreResult<Vec<CommandRecord>> {
        scan(&self.commands, &prefix(&[account_id.as_bytes()]))
    }

    async fn queued_commands(&self, account_id: &str, station_id: &str) -> StoreResult<Vec<CommandRecord>> {
        let mut out = Vec::new();
        for item in self.command_queue.scan_prefix(prefix(&[account_id.as_bytes(), station_id.as_bytes()])) {
            let (_, id) = item.map_err(backend)?;
            let k = key(&[account_id.as_bytes(), station_id.as_bytes(), &id]);
            if let Some(record) = get::<CommandRecord>(&self.commands, &k)? {
                if record.status == CommandStatus::Queued {
                    out.push(record);
                }
            }
        }
        Ok(out)
    }

    async fn queued_command_count(&self) -> StoreResult<usize> {
        Ok(self.command_queue.len())
    }

    async fn oldest_queued_command(&self) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
        // The queue is keyed by station, then by order of queueing: each station's first entry is its
        // oldest. Queues are short-lived, so a walk over them at scrape time is cheap.
        let mut oldest: Option<chrono::DateTime<chrono::Utc>> = None;
        for item in self.command_queue.iter() {
            let (k, id) = item.map_err(backend)?;
            // The key ends with the 8-byte queue sequence; what precedes it is "account\0station\0".
            let Some(station_prefix) = k.len().checked_sub(8).map(|end| &k[..end]) else { continue };
            let mut record_key = station_prefix.to_vec();
            record_key.extend_from_slice(&id);
            if let Some(record) = get::<CommandRecord>(&self.commands, &record_key)? {
                oldest = Some(oldest.map_or(record.created_at, |o| o.min(record.created_at)));
            }
        }
        Ok(oldest)
    }

    async fn flush(&self) -> StoreResult<()> {
        self.commit.durable().await.map_err(StoreError::Backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, Utc};

    fn command(station: &str, action: &str, age_secs: i64) -> CommandRecord {
        let created = Utc::now() - Duration::seconds(age_secs);
        CommandRecord {
            id: uuid::Uuid::new_v4().to_string(),
            protocol: "ocpp1.6".into(),
            account_id: "acct".into(),
            station_id: station.into(),
            action: action.into(),
            payload: serde_json::json!({}),
            status: CommandStatus::Queued,
            created_at: created,
            expires_at: created + Duration::hours(1),
            sent_at: None,
            answered_at: None,
            response: None,
            error: None,
        }
    }

    #[tokio::test]
    async fn command_queues_keep_order_per_station_and_release_what_was_sent() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), CommitPolicy::default()).unwrap();
        // Enough commands that queue sequence numbers contain zero bytes.
        let mut a = Vec::new();
        for i in 0..300 {
            let c = command("A", &format!("Cmd{i}"), 10);
            store.enqueue_command(&c).await.unwrap();
            a.push(c);
        }
        let oldest = command("B", "Old", 500);
        store.enqueue_command(&oldest).await.unwrap();
        store.enqueue_command(&command("AB", "Other", 5)).await.unwrap();

        let queued = store.queued_commands("acct", "A").await.unwrap();
        assert_eq!(queued.iter().map(|c| c.action.as_str()).take(3).collect::<Vec<_>>(), ["Cmd0", "Cmd1", "Cmd2"]);
        assert_eq!(queued.len(), 300, "station A's queue holds none of B's or AB's");
        assert_eq!(store.queued_command_count().await.unwrap(), 302);
        assert_eq!(store.oldest_queued_command().await.unwrap(), Some(oldest.created_at));

        let mut first = a[0].clone();
        first.status = CommandStatus::Sent;
        store.update_command(&first).await.unwrap();
        assert_eq!(store.queued_commands("acct", "A").await.unwrap()[0].action, "Cmd1");
        assert_eq!(store.command("acct", "A", &first.id).await.unwrap().unwrap().status, CommandStatus::Sent);
        assert_eq!(store.queued_command_count().await.unwrap(), 301);

        let mut old = oldest.clone();
        old.status = CommandStatus::Expired;
        store.update_command(&old).await.unwrap();
        assert_ne!(store.oldest_queued_command().await.unwrap(), Some(oldest.created_at));
    }

    fn account(id: &str, slug: &str) -> Account {
        Account {
            id: id.into(),
            email: format!("ops@{slug}.example"),
            name: slug.into(),
            slug: slug.into(),
            password_hash: String::new(),
            created_at: Utc::now(),
            known_locations: vec![],
        }
    }

    /// Puts one record of every kind under the account.
    async fn fill(store: &SledStore, account_id: &str) {
        let token = ApiToken {
            id: format!("tok-{account_id}"),
            account_id: account_id.into(),
            created_at: Utc::now(),
            expires_at: Utc::now() + Duration::hours(1),
            last_used_at: None,
        };
        store.put_token(&format!("hash-{account_id}"), &token).await.unwrap();
        let station: Station = serde_json::from_value(serde_json::json!({
            "account_id": account_id, "id": "CP1", "password_hash": "", "registration": "accepted",
            "created_at": Utc::now(), "boot": null, "connectors": {}, "last_seen": null, "protocol": null,
            "firmware_status": null, "diagnostics_status": null,
        }))
        .unwrap();
        store.create_station(&station).await.unwrap();
        let tag = IdTag {
            id_tag: "T".into(),
            status: crate::model::TagStatus::Accepted,
            expiry_date: None,
            parent_id_tag: None,
            updated_at: Utc::now(),
        };
        store.put_id_tag(account_id, &tag).await.unwrap();
        let (tx, _) = store
            .start_transaction(&NewTransaction {
                account_id: account_id.into(),
                station_id: "CP1".into(),
                connector_id: 1,
                id_tag: "T".into(),
                id_tag_status: "Accepted".into(),
                meter_start: 0,
                start_timestamp: Utc::now(),
                reservation_id: None,
            })
            .await
            .unwrap();
        let reading = MeterRecord {
            station_id: "CP1".into(),
            evse_id: None,
            connector_id: 1,
            transaction_id: Some(tx.id),
            meter_value: crate::model::MeterValue { timestamp: Utc::now(), sampled_value: vec![] },
        };
        store.add_meter_values(account_id, &[reading]).await.unwrap();
        let event = StationEvent {
            station_id: "CP1".into(),
            action: "DataTransfer".into(),
            payload: serde_json::json!({}),
            received_at: Utc::now(),
        };
        store.add_event(account_id, &event).await.unwrap();
        let mut c = command("CP1", "Reset", 1);
        c.account_id = account_id.into();
        store.enqueue_command(&c).await.unwrap();
        store.put_consents(account_id, &Consents::default()).await.unwrap();
        let login = LoginEvent { at: Utc::now(), ip: "127.0.0.1".into(), outcome: crate::model::LoginOutcome::Success };
        store.add_login_event(account_id, &login, 10).await.unwrap();
        // OCPP 2.0.1: a transaction known by the station's own id, and a device-model variable.
        let mut v201 = tx.clone();
        v201.station_transaction_id = Some("tx-201".into());
        store
            .apply_transaction_event(account_id, "CP1", "tx-201", 0, &|id| Transaction { id, ..v201.clone() }, &|_| {})
            .await
            .unwrap();
        let variable: crate::model::DeviceVariable = serde_json::from_value(serde_json::json!({
            "component": "OCPPCommCtrlr", "component_instance": null, "evse_id": null, "connector_id": null,
            "variable": "HeartbeatInterval", "variable_instance": null, "attribute_type": "Actual", "value": "60",
            "mutability": null, "persistent": null, "constant": null, "characteristics": null, "updated_at": Utc::now(),
        }))
        .unwrap();
        store.put_variables(account_id, "CP1", &[variable]).await.unwrap();
    }

    /// Every key in every tree that starts with the account id.
    fn keys_of(store: &SledStore, account_id: &str) -> Vec<String> {
        let mut found = Vec::new();
        for name in store.db.tree_names() {
            let tree = store.db.open_tree(&name).unwrap();
            for item in tree.iter() {
                let (k, v) = item.unwrap();
                if k.starts_with(account_id.as_bytes()) || v.as_ref() == account_id.as_bytes() {
                    found.push(format!("{}: {}", String::from_utf8_lossy(&name), String::from_utf8_lossy(&k)));
                }
            }
        }
        found
    }

    #[tokio::test]
    async fn erasure_leaves_no_record_of_the_account_and_reserves_its_slug() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), CommitPolicy::default()).unwrap();
        for (id, slug) in [("acct-a", "alpha"), ("acct-b", "bravo")] {
            store.create_account(&account(id, slug)).await.unwrap();
            fill(&store, id).await;
        }
        assert!(keys_of(&store, "acct-a").len() >= 14, "every kind of record is there to erase");

        let report = store.erase_account("acct-a").await.unwrap();
        assert_eq!(report.device_variables, 1);
        assert_eq!(
            (report.stations, report.transactions, report.meter_values, report.tokens, report.queued_commands),
            (1, 2, 1, 1, 1)
        );
        assert_eq!(keys_of(&store, "acct-a"), Vec::<String>::new());
        assert!(store.account_by_email("ops@alpha.example").await.unwrap().is_none());
        assert!(store.account_by_slug("alpha").await.unwrap().is_none());
        assert!(matches!(store.create_account(&account("acct-c", "alpha")).await, Err(StoreError::Conflict("slug"))));
        let mut reuse = account("acct-c", "charlie");
        reuse.email = "ops@alpha.example".into();
        store.create_account(&reuse).await.expect("the email is free again");

        assert!(keys_of(&store, "acct-b").len() >= 14, "the other account is untouched");
        assert_eq!(store.tokens("acct-b").await.unwrap().len(), 1);
        assert_eq!(store.erase_account("acct-a").await.unwrap(), ErasureReport::default(), "erasing twice is harmless");
    }

    #[tokio::test]
    async fn an_erasure_interrupted_by_a_crash_is_finished_on_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), CommitPolicy::default()).unwrap();
        store.create_account(&account("acct-a", "alpha")).await.unwrap();
        fill(&store, "acct-a").await;
        // As if the process died right after marking the erasure; `open` runs this on start-up (the
        // test cannot reopen: the group-commit thread holds the database until the process ends).
        store.meta.insert(key(&[ERASING, b"acct-a"]), &[]).unwrap();
        store.finish_interrupted_erasures().unwrap();
        assert_eq!(keys_of(&store, "acct-a"), Vec::<String>::new());
        assert!(store.meta.scan_prefix(prefix(&[ERASING])).next().is_none());
    }
}
