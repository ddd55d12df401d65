//! What the privacy export reads a page at a time besides the lists: the stations with readings
//! outside a transaction (`meter_stations:{a}`), a station's events (`events:{a}:{s}`) and the
//! account's command records (`command_ids:{a}` over `commands:{a}`). The two indexes are written
//! with what they index (`add_meter_values`, the `enqueue_command` script) and built once from
//! what was stored before them ([`RedisStore::index_export_lists`]).

use super::scripts::SCRIPTS;
use super::{command_field, decode, RedisStore};
use crate::ids::{AccountId, StationId};
use crate::model::{CommandKey, CommandRecord, EventKey, Page, PageBuilder, PageRequest, StationEvent, TimePage};
use crate::store::StoreResult;

impl RedisStore {
    /// [`crate::store::AccountStore::loose_reading_stations_page`]: one `ZRANGEBYLEX` of the
    /// stations with a `meter:{a}:{s}:0` key, which a station's deletion leaves.
    pub(super) async fn loose_reading_stations(
        &self,
        account_id: &AccountId,
        page: &PageRequest<StationId>,
    ) -> StoreResult<Page<StationId, StationId>> {
        let index = self.key("meter_stations", &[account_id]);
        let from = page.after.as_ref().map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let mut builder = PageBuilder::new(page);
        let ids: Vec<String> = self
            .query(
                "loose_reading_stations_page",
                redis::cmd("ZRANGEBYLEX").arg(&index).arg(&from).arg("+").arg("LIMIT").arg(0).arg(builder.wanted()),
            )
            .await?;
        for id in ids {
            let id = StationId::from(id);
            if !builder.offer(id.clone(), id, true) {
                break;
            }
        }
        Ok(builder.finish())
    }

    /// [`crate::store::AccountStore::events_page`]: the events are a sorted set scored by the time
    /// they were received, ties ordered by the member (the event's JSON): one `ZRANGEBYSCORE` from
    /// the cursor's time, past its events of that time.
    pub(super) async fn station_events(
        &self,
        account_id: &AccountId,
        station_id: &StationId,
        page: &PageRequest<EventKey>,
    ) -> StoreResult<Page<StationEvent, EventKey>> {
        let key = self.key("events", &[account_id, station_id]);
        let (min, skip) = match page.after {
            Some((t, n)) => (t.to_string(), n),
            None => ("-inf".to_string(), 0),
        };
        let mut cut = TimePage::new(page, true);
        let members: Vec<String> = self
            .query(
                "events_page",
                redis::cmd("ZRANGEBYSCORE").arg(&key).arg(min).arg("+inf").arg("LIMIT").arg(skip).arg(cut.wanted()),
            )
            .await?;
        for m in &members {
            let event: StationEvent = decode(m)?;
            if !cut.offer(event.received_at.timestamp_micros(), event) {
                break;
            }
        }
        Ok(cut.finish())
    }

    /// [`crate::store::AccountStore::commands_page`]: a range of `command_ids:{a}` (the fields of
    /// `commands:{a}`, `{station}:{command id}`, in byte order) and the records it names.
    pub(super) async fn command_records(
        &self,
        account_id: &AccountId,
        page: &PageRequest<CommandKey>,
    ) -> StoreResult<Page<CommandRecord, CommandKey>> {
        const WHAT: &str = "commands_page";
        let (index, hash) = (self.key("command_ids", &[account_id]), self.key("commands", &[account_id]));
        let mut builder = PageBuilder::new(page);
        let mut from =
            page.after.as_ref().map_or_else(|| "-".to_owned(), |(s, id)| format!("({}", command_field(s, id)));
        'reading: loop {
            let wanted = builder.wanted();
            if wanted == 0 {
                break;
            }
            let fields: Vec<String> = self
                .query(WHAT, redis::cmd("ZRANGEBYLEX").arg(&index).arg(&from).arg("+").arg("LIMIT").arg(0).arg(wanted))
                .await?;
            let Some(last) = fields.last() else { break };
            from = format!("({last}");
            let values: Vec<Option<String>> = self.query(WHAT, redis::cmd("HMGET").arg(&hash).arg(&fields)).await?;
            for value in values.iter().flatten() {
                let command: CommandRecord = decode(value)?;
                if !builder.offer((command.station_id.clone(), command.id.clone()), command, true) {
                    break 'reading;
                }
            }
            if fields.len() < wanted {
                break;
            }
        }
        Ok(builder.finish())
    }

    /// Builds the indexes above from what an account stored before them: its `meter_keys` of
    /// transaction 0 and the fields of its `commands` hash.
    pub(super) async fn index_export_lists(&self, account_id: &AccountId) -> StoreResult<()> {
        const WHAT: &str = "index_stored";
        let meter_stations = self.key("meter_stations", &[account_id]);
        let mut cursor = 0u64;
        loop {
            let (next, members): (u64, Vec<String>) = self
                .query(
                    WHAT,
                    redis::cmd("SSCAN")
                        .arg(self.key("meter_keys", &[account_id]))
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(super::index::INDEX_BATCH),
                )
                .await?;
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(&meter_stations);
            let mut loose = 0;
            for m in &members {
                let (station, tx): (String, i32) = decode(m)?;
                if tx == 0 {
                    zadd.arg(0).arg(station);
                    loose += 1;
                }
            }
            if loose > 0 {
                self.query::<i64>(WHAT, &zadd).await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let (hash, index) = (&self.key("commands", &[account_id]), &self.key("command_ids", &[account_id]));
        self.each_stored(hash, |fields| async move {
            let names: Vec<&String> = fields.keys().collect();
            let mut invocation = SCRIPTS.index_stored_fields.prepare_invoke();
            invocation.key(hash).key(index).arg(names);
            self.eval::<i64>(WHAT, &invocation).await.map(|_| ())
        })
        .await
    }
}
