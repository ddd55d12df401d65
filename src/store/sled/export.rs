//! What the privacy export reads a page at a time besides the lists: the stations with readings
//! outside a transaction, a station's events and the account's command records. Each runs on the
//! calling thread; the [`crate::store::AccountStore`] methods run it off the async workers.

use super::{backend, decode, key, leading_time, meter_key_parts, page_of, prefix, SledStore, SEP};
use crate::ids::{AccountId, StationId};
use crate::model::{CommandKey, CommandRecord, EventKey, Page, PageBuilder, PageRequest, StationEvent, TimePage};
use crate::store::{StoreError, StoreResult};

impl SledStore {
    /// [`crate::store::AccountStore::loose_reading_stations_page`]. Meter-values keys are
    /// `{account}\0{station}\0{transaction}\0…`, the transaction a 4-byte big-endian number, so a
    /// station's readings outside a transaction (transaction 0) are its first entries. The walk
    /// skips from station to station: one seek each, whatever their readings; the stations looked at
    /// count against the page's budget.
    pub(super) fn loose_reading_stations_page_now(
        &self,
        account_id: &AccountId,
        page: &PageRequest<StationId>,
    ) -> StoreResult<Page<StationId, StationId>> {
        let p = prefix(&[account_id.as_bytes()]);
        // The first key after every key of `station`: its prefix with 1 in place of the separator.
        let past = |station: &[u8]| [p.as_slice(), station, &[SEP + 1]].concat();
        let mut from = page.after.as_ref().map_or_else(|| p.clone(), |s| past(s.as_bytes()));
        let mut builder = PageBuilder::new(page);
        loop {
            let Some(entry) = self.meter_values.range(from.as_slice()..).next() else { break };
            let (k, _) = entry.map_err(backend)?;
            let Some(rest) = k.strip_prefix(p.as_slice()) else { break };
            let (station, tx) = meter_key_parts(rest)?;
            let id = StationId::from(
                String::from_utf8(station.to_vec()).map_err(|_| StoreError::backend("bad meter-values key"))?,
            );
            if !builder.offer(id.clone(), id, tx == 0) {
                break;
            }
            from = past(station);
        }
        Ok(builder.finish())
    }

    /// [`crate::store::AccountStore::events_page`] of the station whose events are under `p`.
    /// Events are keyed by the time they were received ([`super::time_key`]) and a fingerprint, so
    /// a page reads from the cursor's time on. Events stored before were keyed by a sequence
    /// number, which sorts before any time: their "time" in a cursor is that number's.
    pub(super) fn events_page_now(
        &self,
        p: &[u8],
        page: &PageRequest<EventKey>,
    ) -> StoreResult<Page<StationEvent, EventKey>> {
        let mut start = p.to_vec();
        if let Some((t, _)) = page.after {
            start.extend_from_slice(&super::time_key(t));
        }
        let mut cut = TimePage::new(page, false);
        for item in self.events.range(start..) {
            let (k, v) = item.map_err(backend)?;
            let Some(rest) = k.strip_prefix(p) else { break };
            let time = leading_time(rest, "event")?;
            if !cut.offer(time, decode(&v)?) {
                break;
            }
        }
        Ok(cut.finish())
    }

    /// [`crate::store::AccountStore::commands_page`]: command records are keyed
    /// `{account}\0{station}\0{command id}`, in that order.
    pub(super) fn commands_page_now(
        &self,
        account_id: &AccountId,
        page: &PageRequest<CommandKey>,
    ) -> StoreResult<Page<CommandRecord, CommandKey>> {
        let p = prefix(&[account_id.as_bytes()]);
        let after = page.after.as_ref().map(|(station, id)| key(&[station.as_bytes(), id.as_bytes()]));
        page_of(&self.commands, &p, after.as_deref(), false, PageBuilder::new(page), |_, v| {
            let command: CommandRecord = decode(&v)?;
            Ok(Some(((command.station_id.clone(), command.id.clone()), command, true)))
        })
    }
}
