//! Pure pieces of the fleet scenario's timing and addressing: the connect schedule, the stations'
//! send intervals and random offsets, source-address lists.

use std::net::IpAddr;
use std::time::Duration;

/// Token-bucket schedule at `rate` per second: the `i`-th (from 0) start is due `i / rate` after
/// the first. Starts that fall behind (a full concurrency cap) are due at once, so the average rate
/// holds; none is ever due earlier.
pub fn slot(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

/// Open loop: one station's period for a total of `total_rate` per second over `stations`;
/// `None` for a zero rate.
pub fn station_interval(total_rate: f64, stations: u32) -> Option<Duration> {
    (total_rate > 0.0 && stations > 0).then(|| Duration::from_secs_f64(stations as f64 / total_rate))
}

/// SplitMix64: a small, good-enough mixing function for reproducible pseudo-random offsets.
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform pseudo-random fraction in [0, 1) for (seed, station, stream).
pub fn fraction(seed: u64, station: u32, stream: u32) -> f64 {
    let x = splitmix64(seed ^ splitmix64(((station as u64) << 32) | stream as u64));
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Station `station`'s first send of a periodic `stream` within one `period`, so that a fleet's sends
/// spread over the period instead of leaving together.
pub fn offset(seed: u64, station: u32, stream: u32, period: Duration) -> Duration {
    period.mul_f64(fraction(seed, station, stream))
}

/// Most addresses one `--source-ips` range may expand to.
pub const MAX_RANGE: u128 = 65_536;

/// Parses `--source-ips`: comma-separated addresses and inclusive ranges, `127.0.0.1-127.0.0.8`
/// (or `127.0.0.1-8`, the last IPv4 octet only).
pub fn parse_source_ips(text: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((a, b)) = item.split_once('-') else {
            out.push(item.parse::<IpAddr>().map_err(|e| format!("{item:?}: {e}"))?);
            continue;
        };
        let start: IpAddr = a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?;
        let b = b.trim();
        let end: IpAddr = match (start, b.parse::<u8>()) {
            (IpAddr::V4(s), Ok(last)) => {
                let o = s.octets();
                IpAddr::from([o[0], o[1], o[2], last])
            }
            _ => b.parse().map_err(|e| format!("{b:?}: {e}"))?,
        };
        let (lo, hi) = match (start, end) {
            (IpAddr::V4(s), IpAddr::V4(e)) => (u32::from(s) as u128, u32::from(e) as u128),
            (IpAddr::V6(s), IpAddr::V6(e)) => (u128::from(s), u128::from(e)),
            _ => return Err(format!("{item:?}: both ends must be of one address family")),
        };
        if hi < lo {
            return Err(format!("{item:?}: the range ends before it starts"));
        }
        if hi - lo >= MAX_RANGE {
            return Err(format!("{item:?}: more than {MAX_RANGE} addresses"));
        }
        for n in lo..=hi {
            out.push(match start {
                IpAddr::V4(_) => IpAddr::from(std::net::Ipv4Addr::from(n as u32)),
                IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::from(n)),
            });
        }
    }
    if out.is_empty() {
        return Err("no address given".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_schedule_is_evenly_spaced() {
        assert_eq!(slot(0, 500.0), Duration::ZERO);
        assert_eq!(slot(1, 500.0), Duration::from_millis(2));
        assert_eq!(slot(500, 500.0), Duration::from_secs(1));
        assert_eq!(slot(100_000, 2_000.0), Duration::from_secs(50));
        // Every gap is the same.
        let gaps: Vec<Duration> = (0..100).map(|i| slot(i + 1, 250.0) - slot(i, 250.0)).collect();
        assert!(gaps.iter().all(|g| g.as_micros().abs_diff(4_000) <= 1), "{gaps:?}");
    }

    #[test]
    fn intervals_spread_the_total_rate() {
        assert_eq!(station_interval(1000.0, 1000), Some(Duration::from_secs(1)));
        assert_eq!(station_interval(20_000.0, 50_000), Some(Duration::from_millis(2500)));
        assert_eq!(station_interval(0.0, 10), None);
    }

    #[test]
    fn offsets_are_reproducible_spread_and_inside_the_period() {
        let p = Duration::from_secs(10);
        assert_eq!(offset(7, 3, 0, p), offset(7, 3, 0, p));
        assert_ne!(offset(7, 3, 0, p), offset(7, 3, 1, p), "streams differ");
        assert_ne!(offset(7, 3, 0, p), offset(8, 3, 0, p), "seeds differ");
        let n = 10_000u32;
        let mut buckets = [0u32; 10];
        for s in 0..n {
            let o = offset(1, s, 0, p);
            assert!(o < p);
            buckets[o.as_secs() as usize] += 1;
        }
        // Uniform: each tenth of the period gets about a tenth of the stations.
        assert!(buckets.iter().all(|&b| (800..1200).contains(&b)), "{buckets:?}");
    }

    #[test]
    fn source_ips_take_lists_and_ranges() {
        let ips = parse_source_ips("127.0.0.1,127.0.0.2").unwrap();
        assert_eq!(ips, vec!["127.0.0.1".parse::<IpAddr>().unwrap(), "127.0.0.2".parse().unwrap()]);
        let r = parse_source_ips("127.0.0.1-127.0.0.8").unwrap();
        assert_eq!(r.len(), 8);
        assert_eq!(r[7], "127.0.0.8".parse::<IpAddr>().unwrap());
        assert_eq!(parse_source_ips("127.0.0.1-8").unwrap(), r);
        let across = parse_source_ips("10.0.0.255-10.0.1.1").unwrap();
        assert_eq!(across.len(), 3);
        assert_eq!(across[1], "10.0.1.0".parse::<IpAddr>().unwrap());
        let mixed = parse_source_ips(" 127.0.0.9 , 127.0.0.1-2 ,::1").unwrap();
        assert_eq!(mixed.len(), 4);
        assert_eq!(parse_source_ips("::1-::3").unwrap().len(), 3);
        assert_eq!(parse_source_ips("127.0.0.5-127.0.0.5").unwrap().len(), 1);
    }

    #[test]
    fn bad_source_ips_are_refused() {
        assert!(parse_source_ips("").is_err());
        assert!(parse_source_ips("127.0.0.300").is_err());
        assert!(parse_source_ips("127.0.0.8-127.0.0.1").is_err());
        assert!(parse_source_ips("127.0.0.1-::1").is_err());
        assert!(parse_source_ips("10.0.0.0-10.255.255.255").is_err());
        assert!(parse_source_ips("127.0.0.1-x").is_err());
    }
}
