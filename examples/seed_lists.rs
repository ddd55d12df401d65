//! Fills a tenant's lists straight into a store, for the list benchmarks in BENCHMARKS.md: stations,
//! id tags and transactions (1.6 records, one in a hundred still open, the rest stopped), spread over
//! the stations, starting a minute apart. The tenant is made first through the API (sign-up), so it
//! can sign in; the server must not be running on a sled data dir while this writes to it.
//!
//! ```text
//! cargo run --release --example seed_lists -- sled <data_dir> <email> <stations> <transactions>
//! cargo run --release --example seed_lists -- redis <redis_url[,more seed URLs of a Redis Cluster]> <key_prefix> <email> <stations> <transactions>
//! ```
//!
//! Stations get a password hash nothing verifies: they are there to be listed, not to connect.

use chrono::{Duration, TimeZone, Utc};
use ocpp_css::ids::AccountId;
use ocpp_css::model::{
    IdTag, NewTransaction, Registration, SecurityProfile, Station, TagStatus, Transaction, TransactionStop,
};
use ocpp_css::store::{CommitPolicy, RedisStore, RedisTarget, SharedStore, SledStore};
use std::sync::Arc;

const WRITERS: usize = 8;

fn usage() -> ! {
    eprintln!("usage: seed_lists sled <data_dir> <email> <stations> <transactions>");
    eprintln!("       seed_lists redis <redis_url> <key_prefix> <email> <stations> <transactions>");
    std::process::exit(2)
}

fn number(s: &str) -> usize {
    s.replace('_', "").parse().unwrap_or_else(|_| usage())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (store, rest): (Arc<dyn SharedStore>, &[String]) = match args.first().map(String::as_str) {
        Some("sled") if args.len() == 5 => {
            (Arc::new(SledStore::open(std::path::Path::new(&args[1]), CommitPolicy::default())?), &args[2..])
        }
        Some("redis") if args.len() == 6 => {
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
    let (email, stations, transactions) = (&rest[0], number(&rest[1]), number(&rest[2]));
    let account = store.account_by_email(email).await?.ok_or("no account with that email: sign up first")?;
    let account_id = account.id.clone();
    let started = std::time::Instant::now();

    let station_id = |i: usize| format!("SEED{i:06}");
    for i in 0..stations {
        let station = Station::new(
            &account_id,
            &station_id(i).as_str().into(),
            "seeded".into(),
            Registration::Accepted,
            SecurityProfile::Basic,
        );
        match store.create_station(&station).await {
            Ok(()) | Err(ocpp_css::store::StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let tag = IdTag {
            id_tag: format!("TAG{i:06}"),
            status: TagStatus::Accepted,
            expiry_date: None,
            parent_id_tag: None,
            updated_at: Utc::now(),
        };
        store.put_id_tag(&account_id, &tag).await?;
    }
    eprintln!("{stations} stations and id tags in {:.1} s", started.elapsed().as_secs_f64());

    let base = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).single().ok_or("a valid time")?;
    let per_writer = transactions.div_ceil(WRITERS);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, account_id) = (store.clone(), account_id.clone());
        let range = (w * per_writer)..((w + 1) * per_writer).min(transactions);
        writers.push(tokio::spawn(async move { write(store, account_id, range, stations.max(1), base).await }));
    }
    for writer in writers {
        writer.await??;
    }
    store.flush().await?;
    eprintln!("{transactions} transactions in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Writes the transactions numbered `range`: the n-th on station n mod `stations`, started n minutes
/// after `base`, stopped 40 minutes later unless n is a multiple of 100.
async fn write(
    store: Arc<dyn SharedStore>,
    account_id: AccountId,
    range: std::ops::Range<usize>,
    stations: usize,
    base: chrono::DateTime<Utc>,
) -> Result<(), ocpp_css::store::StoreError> {
    const BLOCK: usize = 1000;
    let mut n = range.start;
    while n < range.end {
        let count = BLOCK.min(range.end - n);
        let ids = store.reserve_transaction_ids(count as u32).await?;
        for id in ids {
            let start = base + Duration::minutes(n as i64);
            let new = NewTransaction {
                account_id: account_id.clone(),
                station_id: format!("SEED{:06}", n % stations).as_str().into(),
                connector_id: 1 + (n % 2) as u32,
                id_tag: format!("TAG{:06}", n % stations),
                id_tag_status: "Accepted".into(),
                meter_start: 1000 * n as i64,
                start_timestamp: start,
                reservation_id: None,
            };
            let mut tx = Transaction::started(&new, id, start);
            if !n.is_multiple_of(100) {
                let end = start + Duration::minutes(40);
                tx.stop = Some(TransactionStop {
                    meter_stop: Some(1000 * n as i64 + 7400),
                    timestamp: end,
                    reason: Some("Local".into()),
                    id_tag: None,
                    received_at: end,
                });
            }
            store.put_transaction(&tx).await?;
            n += 1;
        }
        if n % 1_000_000 < BLOCK {
            eprintln!("  … {n}");
        }
    }
    Ok(())
}
