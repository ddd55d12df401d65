//! Measures what the shared store costs in Redis memory, for the capacity table in BENCHMARKS.md:
//! bytes per stored transaction (record and indexes) and per meter reading, written through the
//! store's own calls (as a cluster node's write-ahead log drains them), read from `INFO memory`
//! before and after. Two shapes of reading: an energy register alone (what `ocpp-bench` sends), and
//! six measurands (energy, power, current, voltage, temperature, state of charge). Then every
//! reading is removed by retention's own steps, timed, with the memory it gives back.
//!
//! ```text
//! cargo run --release --example redis_footprint -- <redis_url> <transactions> <readings_per_transaction>
//! ```
//!
//! Use a Redis of its own (the numbers are deltas of the whole server's memory); it writes under
//! the key prefix `footprint-<pid>`.

use chrono::{Duration, TimeZone, Utc};
use ocpp_css::model::{
    Account, DataKind, MeterRecord, MeterValue, NewTransaction, SampledValue, Transaction, TransactionStop,
};
use ocpp_css::store::prelude::*;
use ocpp_css::store::{RedisStore, RedisTarget};
use std::sync::Arc;

const WRITERS: usize = 8;
const STATIONS: usize = 1000;

fn usage() -> ! {
    eprintln!("usage: redis_footprint <redis_url> <transactions> <readings_per_transaction>");
    std::process::exit(2)
}

async fn used_memory(url: &str) -> Result<u64, Box<dyn std::error::Error>> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await?;
    let line = info.lines().find_map(|l| l.strip_prefix("used_memory:")).ok_or("no used_memory in INFO")?;
    Ok(line.trim().parse()?)
}

fn sampled(value: String, measurand: &str, unit: &str) -> SampledValue {
    serde_json::from_value(serde_json::json!({
        "value": value, "context": "Sample.Periodic", "format": "Raw", "measurand": measurand,
        "location": "Outlet", "unit": unit,
    }))
    .unwrap_or_else(|e| panic!("a sampled value: {e}"))
}

fn reading(tx: &Transaction, k: usize, measurands: usize) -> MeterRecord {
    let at = tx.start_timestamp + Duration::seconds(60 * k as i64);
    let energy = 1000 * tx.id as i64 + 125 * k as i64;
    let mut values = vec![sampled(energy.to_string(), "Energy.Active.Import.Register", "Wh")];
    if measurands > 1 {
        values.push(sampled("7360.0".into(), "Power.Active.Import", "W"));
        values.push(sampled("32.0".into(), "Current.Import", "A"));
        values.push(sampled("230.1".into(), "Voltage", "V"));
        values.push(sampled("35.5".into(), "Temperature", "Celsius"));
        values.push(sampled(format!("{}", 20 + k % 80), "SoC", "Percent"));
    }
    MeterRecord {
        station_id: tx.station_id.clone(),
        evse_id: None,
        connector_id: tx.connector_id,
        transaction_id: Some(tx.id),
        meter_value: MeterValue { timestamp: at, sampled_value: values },
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, transactions, per_tx] = args.as_slice() else { usage() };
    let number = |s: &str| s.replace('_', "").parse::<usize>().unwrap_or_else(|_| usage());
    let (transactions, per_tx) = (number(transactions), number(per_tx));
    let prefix = format!("footprint-{}", std::process::id());
    let store: Arc<RedisStore> = Arc::new(
        RedisStore::connect(&RedisTarget::parse(url, url.contains(','))?, &prefix, std::time::Duration::from_secs(10))
            .await?,
    );
    let account = Account {
        id: format!("acct-{prefix}").into(),
        email: format!("{prefix}@footprint.example"),
        name: "footprint".into(),
        slug: prefix.clone(),
        password_hash: "unused".into(),
        created_at: Utc::now(),
        known_locations: vec![],
        retention: Default::default(),
    };
    store.create_account(&account).await?;
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().ok_or("a valid time")?;

    // Transactions: started and stopped through the store, as a station's messages are.
    let before = used_memory(url).await?;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, account) = (store.clone(), account.id.clone());
        writers.push(tokio::spawn(async move {
            let mut txs = Vec::new();
            for n in (w..transactions).step_by(WRITERS) {
                let start = base + Duration::minutes(n as i64);
                let new = NewTransaction {
                    account_id: account.clone(),
                    station_id: format!("CP{:06}", n % STATIONS).as_str().into(),
                    connector_id: 1 + (n % 2) as u32,
                    id_tag: format!("TAG{:06}", n % 5000),
                    id_tag_status: "Accepted".into(),
                    meter_start: 1000 * n as i64,
                    start_timestamp: start,
                    reservation_id: None,
                };
                let (tx, _) = store.start_transaction(&new).await?;
                let end = start + Duration::minutes(40);
                let stop = TransactionStop {
                    meter_stop: Some(1000 * n as i64 + 7400),
                    timestamp: end,
                    reason: Some("Local".into()),
                    id_tag: None,
                    received_at: end,
                };
                store.stop_transaction(&account, &tx.station_id, tx.id, &stop).await?;
                txs.push(tx);
            }
            Ok::<_, ocpp_css::store::StoreError>(txs)
        }));
    }
    let mut all = Vec::new();
    for w in writers {
        all.extend(w.await??);
    }
    let after_tx = used_memory(url).await?;
    println!(
        "transactions: {transactions} took {} bytes: {:.0} bytes each (record, start index, id and station indexes)",
        after_tx - before,
        (after_tx - before) as f64 / transactions as f64
    );

    // Readings: half the transactions get energy-only readings, the other half six measurands.
    let (energy_only, six) = all.split_at(all.len() / 2);
    for (txs, measurands) in [(energy_only, 1), (six, 6)] {
        let before = used_memory(url).await?;
        let mut writers = Vec::new();
        for chunk in txs.chunks(txs.len().div_ceil(WRITERS).max(1)) {
            let (store, account, chunk) = (store.clone(), account.id.clone(), chunk.to_vec());
            writers.push(tokio::spawn(async move {
                for tx in &chunk {
                    // One MeterValues message a reading, as a station samples them.
                    for k in 0..per_tx {
                        store.add_meter_values(&account, &[reading(tx, k, measurands)]).await?;
                    }
                }
                Ok::<_, ocpp_css::store::StoreError>(())
            }));
        }
        for w in writers {
            w.await??;
        }
        let after = used_memory(url).await?;
        let n = txs.len() * per_tx;
        let json = serde_json::to_vec(&reading(&txs[0], 1, measurands))?.len();
        println!(
            "readings of {measurands} measurand(s): {n} took {} bytes: {:.0} bytes each (the member's JSON is {json} bytes)",
            after - before,
            (after - before) as f64 / n as f64
        );
    }

    // Retention: every reading past its period, removed as the pass does (500 records a step).
    let before = used_memory(url).await?;
    let started = std::time::Instant::now();
    let (mut removed, mut after) = (0usize, None);
    loop {
        let step = store.prune(&account.id, DataKind::MeterValues, base + Duration::days(3650), after, 500).await?;
        removed += step.removed;
        match step.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let freed = before.saturating_sub(used_memory(url).await?);
    println!("pruned {removed} readings in {seconds:.1} s ({:.0}/s), freeing {freed} bytes", removed as f64 / seconds);
    Ok(())
}
