//! Fills one long charging session straight into a store, for the meter-readings benchmark in
//! BENCHMARKS.md: a station, an open transaction on it, and N readings one second apart (an
//! energy register each), each written as its own MeterValues message would be. The tenant is made
//! first through the API (sign-up); the server must not be running on a sled data dir while this
//! writes to it. Prints the transaction id. With `STOPPED=1` in the environment the session is then
//! stopped (its readings become what a retention period can remove).
//!
//! ```text
//! cargo run --release --example seed_readings -- sled <data_dir> <email> <readings>
//! cargo run --release --example seed_readings -- redis <redis_url[,more seed URLs of a Redis Cluster]> <key_prefix> <email> <readings>
//! ```

use chrono::{Duration, TimeZone, Utc};
use ocpp_css::model::{
    MeterRecord, MeterValue, NewTransaction, Registration, SampledValue, SecurityProfile, Station, TransactionStop,
};
use ocpp_css::store::{CommitPolicy, RedisStore, RedisTarget, SharedStore, SledStore};
use std::sync::Arc;

fn usage() -> ! {
    eprintln!("usage: seed_readings sled <data_dir> <email> <readings>");
    eprintln!("       seed_readings redis <redis_url> <key_prefix> <email> <readings>");
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (store, rest): (Arc<dyn SharedStore>, &[String]) = match args.first().map(String::as_str) {
        Some("sled") if args.len() == 4 => {
            (Arc::new(SledStore::open(std::path::Path::new(&args[1]), CommitPolicy::default())?), &args[2..])
        }
        Some("redis") if args.len() == 5 => {
            let timeout = std::time::Duration::from_secs(10);
            (
                Arc::new(
                    RedisStore::connect(&RedisTarget::parse(&args[1], args[1].contains(','))?, &args[2], timeout)
                        .await?,
                ),
                &args[3..],
            )
        }
        _ => usage(),
    };
    let email = &rest[0];
    let readings: usize = rest[1].replace('_', "").parse().unwrap_or_else(|_| usage());
    let account = store.account_by_email(email).await?.ok_or("no account with that email: sign up first")?;
    let station_id = "LONG-SESSION".into();
    let station =
        Station::new(&account.id, &station_id, "seeded".into(), Registration::Accepted, SecurityProfile::Basic);
    match store.create_station(&station).await {
        Ok(()) | Err(ocpp_css::store::StoreError::Conflict(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let start = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).single().ok_or("a valid time")?;
    let new = NewTransaction {
        account_id: account.id.clone(),
        station_id: station_id.clone(),
        connector_id: 1,
        id_tag: "LONG".into(),
        id_tag_status: "Accepted".into(),
        meter_start: 0,
        start_timestamp: start,
        reservation_id: None,
    };
    let (tx, _) = store.start_transaction(&new).await?;
    let started = std::time::Instant::now();
    for k in 0..readings {
        let value: SampledValue = serde_json::from_value(serde_json::json!({
            "value": (k * 2).to_string(), "context": "Sample.Periodic", "format": "Raw",
            "measurand": "Energy.Active.Import.Register", "location": "Outlet", "unit": "Wh",
        }))?;
        let record = MeterRecord {
            station_id: station_id.clone(),
            evse_id: None,
            connector_id: 1,
            transaction_id: Some(tx.id),
            meter_value: MeterValue { timestamp: start + Duration::seconds(k as i64), sampled_value: vec![value] },
        };
        store.add_meter_values(&account.id, &[record]).await?;
    }
    if std::env::var("STOPPED").is_ok_and(|v| v == "1") {
        let end = start + Duration::seconds(readings as i64);
        let stop = TransactionStop {
            meter_stop: Some(2 * readings as i64),
            timestamp: end,
            reason: Some("Local".into()),
            id_tag: None,
            received_at: Utc::now(),
        };
        store.stop_transaction(&account.id, &station_id, tx.id, &stop).await?;
    }
    store.flush().await?;
    eprintln!("{readings} readings in {:.1} s", started.elapsed().as_secs_f64());
    println!("{}", tx.id);
    Ok(())
}
