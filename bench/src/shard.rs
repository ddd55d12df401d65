//! Distributed runs: `--shard I/N` gives one generator process its contiguous slice of the fleet
//! and its share of the fleet's rates; `ocpp-bench merge` (see `merge.rs`) adds the shards' outputs.

use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Shard `index` (1-based) of `count` generator processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// Parses `--shard I/N`: 1 ≤ I ≤ N.
pub fn parse_shard(s: &str) -> Result<Shard, String> {
    let (i, n) = s.split_once('/').ok_or_else(|| format!("{s:?} is not I/N (e.g. 2/4: the second of four shards)"))?;
    let num = |t: &str, what: &str| {
        t.trim().parse::<u32>().map_err(|_| format!("{s:?}: {what} {t:?} is not a whole number (I/N, e.g. 2/4)"))
    };
    let (index, count) = (num(i, "shard")?, num(n, "shard count")?);
    if count == 0 {
        return Err(format!("{s:?}: the shard count must be at least 1"));
    }
    if index == 0 || index > count {
        return Err(format!("{s:?}: shards are numbered from 1 to {count} (1-based), not {index}"));
    }
    Ok(Shard { index, count })
}

impl Shard {
    /// This shard's stations among `n`, as 0-based indices: shard i gets
    /// `[(i-1)·n/count, i·n/count)`, so the shards' slices are contiguous, disjoint, cover all `n`
    /// and differ in size by at most one. Empty when `count > n` for some shards.
    pub fn range(self, n: u64) -> Range<u64> {
        let at = |k: u32| (u128::from(k) * u128::from(n) / u128::from(self.count)) as u64;
        at(self.index - 1)..at(self.index)
    }

    /// This shard's part of a whole-fleet `rate` (per second) over `n` stations: in proportion to
    /// its stations, so that every station keeps the period it has in an unsharded run.
    pub fn share(self, rate: f64, n: u64) -> f64 {
        if n == 0 {
            return 0.0;
        }
        rate * self.range(n).count() as f64 / n as f64
    }

    pub fn label(self) -> String {
        format!("{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_one_based() {
        assert_eq!(parse_shard("1/4"), Ok(Shard { index: 1, count: 4 }));
        assert_eq!(parse_shard(" 4 / 4 "), Ok(Shard { index: 4, count: 4 }));
        assert_eq!(parse_shard("1/1"), Ok(Shard { index: 1, count: 1 }));
        for (bad, says) in [
            ("0/4", "numbered from 1 to 4"),
            ("5/4", "numbered from 1 to 4"),
            ("1/0", "at least 1"),
            ("0/0", "at least 1"),
            ("2", "is not I/N"),
            ("a/4", "not a whole number"),
            ("1/b", "not a whole number"),
            ("-1/4", "not a whole number"),
            ("1/4/2", "not a whole number"),
            ("", "is not I/N"),
        ] {
            let err = parse_shard(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn every_station_is_in_exactly_one_shard() {
        for n in [0u64, 1, 2, 3, 7, 10, 100, 101, 999, 100_000] {
            for count in [1u32, 2, 3, 4, 7, 16, 150] {
                let mut seen = vec![0u32; n as usize];
                let mut next = 0;
                for index in 1..=count {
                    let r = Shard { index, count }.range(n);
                    assert_eq!(r.start, next, "n={n} {index}/{count}: contiguous");
                    next = r.end;
                    let len = r.end - r.start;
                    assert!(len == n / count as u64 || len == n / count as u64 + 1, "n={n} {index}/{count}: {len}");
                    for i in r {
                        seen[i as usize] += 1;
                    }
                }
                assert_eq!(next, n);
                assert!(seen.iter().all(|&k| k == 1), "n={n} count={count}");
                // n > count: some shards are empty (the fleet refuses to run one).
                if u64::from(count) > n {
                    assert!((1..=count).any(|index| Shard { index, count }.range(n).is_empty()));
                }
            }
        }
    }

    #[test]
    fn rates_are_shared_in_proportion() {
        let n = 10;
        let shares: Vec<f64> = (1..=3).map(|index| Shard { index, count: 3 }.share(1000.0, n)).collect();
        assert_eq!(shares, vec![300.0, 300.0, 400.0]);
        assert!((shares.iter().sum::<f64>() - 1000.0).abs() < 1e-9);
        // Each station keeps its unsharded period: shard stations / shard rate = n / rate.
        let s = Shard { index: 3, count: 3 };
        assert!((s.range(n).count() as f64 / s.share(1000.0, n) - n as f64 / 1000.0).abs() < 1e-12);
    }
}
