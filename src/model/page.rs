//! Lists a page at a time: what a page request asks for, what the filters of each list mean, and
//! how a page is cut from records read in the list's order. Every backend reads a page from an
//! index kept in that order, starting after the cursor; the rules here are the same for all of
//! them.

use super::{MeterRecord, Registration, Station, Transaction};
use crate::ids::StationId;
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// Items in a page when the caller does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// The most items a page holds.
pub const MAX_LIMIT: usize = 1000;
/// The most records one page request reads, unless told otherwise (`limits.list_scan_records`):
/// when a filter is checked on the records themselves (a filter no index answers), a page ends
/// early at this bound, possibly empty, with a cursor to go on from.
pub const SCAN_BUDGET: usize = 5000;

/// One page of a list: at most `limit` items after the key `after` (from the start without one),
/// reading at most `budget` records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest<K> {
    pub after: Option<K>,
    pub limit: usize,
    pub budget: usize,
}

impl<K> PageRequest<K> {
    /// At most `limit` items after `after`, within the default budget.
    pub fn new(after: Option<K>, limit: usize) -> Self {
        PageRequest { after, limit, budget: SCAN_BUDGET }
    }

    /// The first `limit` items.
    pub fn first(limit: usize) -> Self {
        Self::new(None, limit)
    }
}

/// A page of a list, and the key to ask the next page after when there may be more.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T, K> {
    pub items: Vec<T>,
    pub next: Option<K>,
    /// The page ended short because it read as many records as its budget allowed.
    pub budget_spent: bool,
}

impl<T, K> Page<T, K> {
    /// The same page with its cursor's key turned into another type.
    pub fn map_key<L>(self, f: impl FnOnce(K) -> L) -> Page<T, L> {
        Page { items: self.items, next: self.next.map(f), budget_spent: self.budget_spent }
    }
}

/// Cuts a page from records offered in the list's order (those after the cursor): keeps those that
/// match, up to the limit, and reads at most [`SCAN_BUDGET`] records. A store feeds it until
/// [`PageBuilder::offer`] says stop or its records run out, then calls [`PageBuilder::finish`].
pub struct PageBuilder<T, K> {
    limit: usize,
    budget: usize,
    read: usize,
    items: Vec<(K, T)>,
    last_read: Option<K>,
    /// Stopped before the records ran out: a full page with more records after it, or the budget
    /// spent.
    cut: bool,
}

impl<T, K: Clone> PageBuilder<T, K> {
    /// A builder for the page `request` asks (its cursor is the source's business).
    pub fn new<R>(request: &PageRequest<R>) -> Self {
        Self::with_budget(request.limit, request.budget)
    }

    pub fn with_budget(limit: usize, budget: usize) -> Self {
        let limit = limit.max(1);
        PageBuilder {
            limit,
            budget: budget.max(limit),
            read: 0,
            items: Vec::with_capacity(limit.min(MAX_LIMIT)),
            last_read: None,
            cut: false,
        }
    }

    /// How many more records are worth reading at most (for a store that reads in batches).
    pub fn wanted(&self) -> usize {
        if self.cut {
            return 0;
        }
        // One past a full page tells whether more follow.
        (self.limit + 1 - self.items.len()).min(self.budget - self.read + 1)
    }

    /// Offers the next record in order, with whether it matches the filter. False when the page is
    /// done: the record was not taken and no more are wanted.
    pub fn offer(&mut self, key: K, item: T, matches: bool) -> bool {
        if self.cut {
            return false;
        }
        if self.items.len() == self.limit || self.read == self.budget {
            self.cut = true;
            return false;
        }
        self.read += 1;
        if matches {
            self.items.push((key.clone(), item));
        }
        self.last_read = Some(key);
        true
    }

    /// Ends the page before its records ran out: the source read up to `read_up_to` (inclusive) and
    /// stopped for its own bound. The page goes on from there unless it is already full.
    pub fn stop(&mut self, read_up_to: K) {
        if !self.cut {
            self.cut = true;
            self.last_read = Some(read_up_to);
        }
    }

    /// The page. Its cursor is the last item's key after a full page with more behind it, the last
    /// record read when the budget ran out first, and none when the records ran out.
    pub fn finish(self) -> Page<T, K> {
        let full = self.items.len() == self.limit;
        let next = match self.cut {
            false => None,
            true if full => self.items.last().map(|(k, _)| k.clone()),
            true => self.last_read,
        };
        let budget_spent = self.cut && !full && self.read == self.budget;
        Page { items: self.items.into_iter().map(|(_, item)| item).collect(), next, budget_spent }
    }
}

/// What `GET /stations` may be narrowed to by the stored record (whether a station is connected is
/// live state, which the API checks).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct StationFilter {
    pub registration: Option<Registration>,
    /// The subprotocol of the station's last connection (`ocpp1.6`, `ocpp2.0.1`).
    pub protocol: Option<String>,
}

impl StationFilter {
    pub fn is_empty(&self) -> bool {
        self.registration.is_none() && self.protocol.is_none()
    }

    pub fn matches(&self, station: &Station) -> bool {
        self.registration.is_none_or(|r| station.registration == r)
            && self.protocol.as_deref().is_none_or(|p| station.protocol.as_deref() == Some(p))
    }
}

/// Whether a transaction has stopped, as `GET /transactions` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionStatus {
    Active,
    Completed,
}

impl TransactionStatus {
    pub fn of(tx: &Transaction) -> Self {
        if tx.stop.is_some() {
            TransactionStatus::Completed
        } else {
            TransactionStatus::Active
        }
    }
}

/// What `GET /transactions` may be narrowed to. Times are bounds on the station's own timestamps:
/// `*_from` inclusive, `*_to` exclusive; a stop bound leaves out transactions not stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransactionFilter {
    pub station: Option<StationId>,
    pub status: Option<TransactionStatus>,
    pub started_from: Option<DateTime<Utc>>,
    pub started_to: Option<DateTime<Utc>>,
    pub stopped_from: Option<DateTime<Utc>>,
    pub stopped_to: Option<DateTime<Utc>>,
}

impl TransactionFilter {
    pub fn matches(&self, tx: &Transaction) -> bool {
        let in_range = |t: DateTime<Utc>, from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>| {
            from.is_none_or(|f| t >= f) && to.is_none_or(|end| t < end)
        };
        let stop_bounded = self.stopped_from.is_some() || self.stopped_to.is_some();
        self.station.as_ref().is_none_or(|s| &tx.station_id == s)
            && self.status.is_none_or(|s| TransactionStatus::of(tx) == s)
            && in_range(tx.start_timestamp, self.started_from, self.started_to)
            && match &tx.stop {
                Some(stop) => in_range(stop.timestamp, self.stopped_from, self.stopped_to),
                None => !stop_bounded,
            }
    }

    /// Only the transactions still open: the index of open transactions answers.
    pub fn open_only(&self) -> bool {
        self.status == Some(TransactionStatus::Active)
    }
}

/// Where a page of a list in time order goes on: a time (microseconds since the epoch) and a place
/// among the records of that time (1 for the first). The cursor `(t, n)` goes on after the first `n`
/// records at `t`, and `(t, 0)` starts at `t`.
pub type TimeKey = (i64, u32);

/// Where a page of one transaction's meter readings goes on ([`TimeKey`]): a reading's time and its
/// place among the readings of that time. Readings are in time order, those of the same time in the
/// order of their stored JSON (what Redis orders a sorted set's ties by).
pub type ReadingKey = TimeKey;

/// Where a page of one station's events goes on ([`TimeKey`]): the time an event is stored under
/// (when it was received) and its place among the events of that time, in the store's own order.
pub type EventKey = TimeKey;

/// A command record's place in the account's list of them: its station, then its id.
pub type CommandKey = (StationId, String);

/// The key a reading sorts by within its transaction: its time, then its stored bytes.
pub fn reading_order<'a>(record: &MeterRecord, stored: &'a [u8]) -> (i64, &'a [u8]) {
    (record.meter_value.timestamp.timestamp_micros(), stored)
}

/// Cuts a page of a list in time order from records offered in that order, each once, numbering
/// those of the same time as the cursor ([`TimeKey`]) counts them. A source may start anywhere at or
/// before the cursor's time: what is not after the cursor is passed over.
pub struct TimePage<T> {
    builder: PageBuilder<T, TimeKey>,
    after: Option<TimeKey>,
    last: Option<TimeKey>,
}

impl<T> TimePage<T> {
    /// The page `request` asks. `positioned`: the source itself starts right after the cursor (it
    /// skipped the first `n` records at its time), so the numbering goes on from the cursor's.
    pub fn new(request: &PageRequest<TimeKey>, positioned: bool) -> Self {
        TimePage {
            builder: PageBuilder::new(request),
            after: request.after,
            last: if positioned { request.after } else { None },
        }
    }

    /// Offers the next record, of time `t`; false when the page is full and no more are wanted.
    pub fn offer(&mut self, t: i64, item: T) -> bool {
        let n = match self.last {
            Some((at, n)) if at == t => n + 1,
            _ => 1,
        };
        self.last = Some((t, n));
        if self.after.is_some_and(|after| (t, n) <= after) {
            return true;
        }
        self.builder.offer((t, n), item, true)
    }

    /// How many more records are worth reading at most.
    pub fn wanted(&self) -> usize {
        self.builder.wanted()
    }

    pub fn finish(self) -> Page<T, TimeKey> {
        self.builder.finish()
    }
}

/// Cuts a page of a transaction's readings from readings offered in [`reading_order`] (a
/// [`TimePage`] of their timestamps).
pub struct ReadingPage(TimePage<MeterRecord>);

impl ReadingPage {
    /// The page `request` asks; `positioned` as for [`TimePage::new`].
    pub fn new(request: &PageRequest<ReadingKey>, positioned: bool) -> Self {
        ReadingPage(TimePage::new(request, positioned))
    }

    /// Offers the next reading; false when the page is full and no more are wanted.
    pub fn offer(&mut self, record: MeterRecord) -> bool {
        let t = record.meter_value.timestamp.timestamp_micros();
        self.0.offer(t, record)
    }

    /// How many more readings are worth reading at most.
    pub fn wanted(&self) -> usize {
        self.0.wanted()
    }

    pub fn finish(self) -> Page<MeterRecord, ReadingKey> {
        self.0.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(keys: &[u32], limit: usize, budget: usize, keep: impl Fn(u32) -> bool) -> (Vec<u32>, Option<u32>) {
        let mut b = PageBuilder::with_budget(limit, budget);
        for &k in keys {
            if !b.offer(k, k, keep(k)) {
                break;
            }
        }
        let p = b.finish();
        (p.items, p.next)
    }

    #[test]
    fn a_full_page_points_after_its_last_item_only_when_more_follow() {
        assert_eq!(page(&[1, 2, 3, 4], 3, 100, |_| true), (vec![1, 2, 3], Some(3)));
        assert_eq!(page(&[1, 2, 3], 3, 100, |_| true), (vec![1, 2, 3], None), "nothing after the third");
        assert_eq!(page(&[1, 2], 3, 100, |_| true), (vec![1, 2], None));
        assert_eq!(page(&[], 3, 100, |_| true), (vec![], None));
    }

    #[test]
    fn a_filter_reads_past_what_it_leaves_out_up_to_the_budget() {
        let even = |k: u32| k.is_multiple_of(2);
        assert_eq!(page(&[1, 2, 3, 4, 5, 6], 2, 100, even), (vec![2, 4], Some(4)));
        assert_eq!(page(&[1, 2, 3, 5, 7], 2, 100, even), (vec![2], None), "the records ran out");
        // Budget of 4: 1, 3, 5, 7 read and left out; the page is empty but goes on from 7.
        assert_eq!(page(&[1, 3, 5, 7, 8, 10], 2, 4, even), (vec![], Some(7)));
        // Going on from there finds the rest.
        assert_eq!(page(&[8, 10], 2, 4, even), (vec![8, 10], None));
    }

    #[test]
    fn a_page_says_when_its_budget_ran_out_before_it_was_full() {
        let finish = |keys: &[u32], limit, budget| {
            let mut b = PageBuilder::with_budget(limit, budget);
            for &k in keys {
                if !b.offer(k, k, k.is_multiple_of(2)) {
                    break;
                }
            }
            b.finish().budget_spent
        };
        assert!(finish(&[1, 3, 5, 7, 8], 2, 4), "four read, none kept, more behind");
        assert!(!finish(&[1, 3, 5, 7], 2, 4), "the records ran out first");
        assert!(!finish(&[2, 4, 6], 2, 2), "a full page");
        assert!(!finish(&[1, 2, 4, 6], 2, 100));
    }

    #[test]
    fn a_source_that_stops_early_leaves_a_cursor_where_it_stopped() {
        let mut b: PageBuilder<u32, u32> = PageBuilder::with_budget(3, 100);
        b.offer(1, 1, true);
        b.offer(2, 2, false);
        b.stop(9);
        assert!(!b.offer(10, 10, true), "nothing is taken after the stop");
        assert_eq!(b.finish(), Page { items: vec![1], next: Some(9), budget_spent: false });
    }

    #[test]
    fn wanted_counts_one_past_a_full_page() {
        let mut b: PageBuilder<u32, u32> = PageBuilder::with_budget(3, 100);
        assert_eq!(b.wanted(), 4);
        b.offer(1, 1, true);
        assert_eq!(b.wanted(), 3);
        let mut tight: PageBuilder<u32, u32> = PageBuilder::with_budget(3, 3);
        tight.offer(1, 1, false);
        tight.offer(2, 2, false);
        assert_eq!(tight.wanted(), 2, "one left of the budget, and one to see whether more follow");
    }

    fn tx(station: &str, start_min: i64, stop_min: Option<i64>) -> Transaction {
        let at = |m: i64| DateTime::from_timestamp(m * 60, 0).expect("in range");
        let start = super::super::NewTransaction {
            account_id: "a".into(),
            station_id: station.into(),
            connector_id: 1,
            id_tag: "TAG".into(),
            id_tag_status: "Accepted".into(),
            meter_start: 0,
            start_timestamp: at(start_min),
            reservation_id: None,
        };
        let mut tx = Transaction::started(&start, 1, at(start_min));
        tx.stop = stop_min.map(|m| super::super::TransactionStop {
            meter_stop: Some(10),
            timestamp: at(m),
            reason: None,
            id_tag: None,
            received_at: at(m),
        });
        tx
    }

    #[test]
    fn transaction_filters_bound_start_and_stop_times_and_status() {
        let at = |m: i64| DateTime::from_timestamp(m * 60, 0);
        let open = tx("CP1", 10, None);
        let done = tx("CP2", 10, Some(20));
        let all = TransactionFilter::default();
        assert!(all.matches(&open) && all.matches(&done));
        let active = TransactionFilter { status: Some(TransactionStatus::Active), ..all.clone() };
        assert!(active.matches(&open) && !active.matches(&done));
        let cp2 = TransactionFilter { station: Some("CP2".into()), ..all.clone() };
        assert!(!cp2.matches(&open) && cp2.matches(&done));
        let started = TransactionFilter { started_from: at(10), started_to: at(11), ..all.clone() };
        assert!(started.matches(&open), "from is inclusive");
        let before = TransactionFilter { started_to: at(10), ..all.clone() };
        assert!(!before.matches(&open), "to is exclusive");
        let stopped = TransactionFilter { stopped_from: at(15), ..all.clone() };
        assert!(stopped.matches(&done));
        assert!(!stopped.matches(&open), "a stop bound leaves out what has not stopped");
        assert!(!TransactionFilter { stopped_to: at(20), ..all }.matches(&done));
    }

    fn reading(t: &str, kwh: &str) -> MeterRecord {
        serde_json::from_value(serde_json::json!({
            "station_id": "CP1", "connector_id": 1, "transaction_id": 7,
            "meter_value": {"timestamp": t, "sampledValue": [{"value": kwh}]}
        }))
        .expect("a reading")
    }

    fn values(page: &Page<MeterRecord, ReadingKey>) -> Vec<String> {
        page.items.iter().map(|r| r.meter_value.sampled_value[0].value.clone()).collect()
    }

    #[test]
    fn readings_page_by_time_and_a_cursor_counts_readings_of_the_same_time() {
        // Two readings at 00:01 (a tie), one before and one after.
        let all = [
            reading("2026-12-01T00:00:00Z", "1"),
            reading("2026-12-01T00:01:00Z", "2"),
            reading("2026-12-01T00:01:00Z", "3"),
            reading("2026-12-01T00:02:00Z", "4"),
        ];
        let walk = |request: &PageRequest<ReadingKey>, positioned: bool, from: usize| {
            let mut page = ReadingPage::new(request, positioned);
            for r in &all[from..] {
                if !page.offer(r.clone()) {
                    break;
                }
            }
            page.finish()
        };
        let first = walk(&PageRequest::first(2), false, 0);
        assert_eq!(values(&first), ["1", "2"]);
        let t1 = all[1].meter_value.timestamp.timestamp_micros();
        assert_eq!(first.next, Some((t1, 1)), "after the first reading at 00:01");
        // A source that starts at the cursor's time (sled, from a time bucket) and one that skips
        // the cursor's readings itself (Redis, with an offset) cut the same page.
        let second = walk(&PageRequest::new(first.next, 2), false, 0);
        assert_eq!(values(&second), ["3", "4"]);
        assert_eq!(second.next, None, "the readings ran out");
        assert_eq!(values(&walk(&PageRequest::new(first.next, 2), true, 2)), ["3", "4"]);
        let cut = walk(&PageRequest::new(first.next, 1), true, 2);
        assert_eq!((values(&cut), cut.next), (vec!["3".to_string()], Some((t1, 2))), "numbering goes on");
        // (t, 0) starts at t.
        assert_eq!(values(&walk(&PageRequest::new(Some((t1, 0)), 10), false, 0)), ["2", "3", "4"]);
    }
}
