//! How long to wait before retrying a failed delivery.

use std::time::Duration;

use rand::Rng;

/// The wait before retry number `attempt` (counting from 1; 0 is taken as 1).
///
/// The ceiling doubles with each attempt, `base * 2^(attempt - 1)`, saturating instead of overflowing
/// and never above `cap`; the wait is drawn uniformly between half the ceiling and all of it. The
/// random half spreads out the retries of many deliveries that failed together (a receiver that was
/// down), so they do not all come back at the same instant; the fixed half keeps the schedule from
/// collapsing to near-zero waits for a receiver that is still down.
pub fn retry_delay(attempt: u32, base: Duration, cap: Duration, rng: &mut impl Rng) -> Duration {
    let doublings = attempt.saturating_sub(1);
    // `checked_shl` fails from 32 doublings on: any non-zero base is past every cap by then.
    let ceiling = match 1u32.checked_shl(doublings) {
        Some(factor) => base.saturating_mul(factor).min(cap),
        None if base.is_zero() => Duration::ZERO,
        None => cap,
    };
    rng.gen_range(ceiling / 2..=ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const BASE: Duration = Duration::from_secs(10);
    const CAP: Duration = Duration::from_secs(3600);

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn the_delay_grows_by_doubling() {
        let mut rng = rng();
        for (attempt, ceiling) in [(1u32, 10u64), (2, 20), (3, 40), (4, 80), (5, 160)] {
            for _ in 0..200 {
                let d = retry_delay(attempt, BASE, CAP, &mut rng);
                assert!(d >= Duration::from_secs(ceiling) / 2 && d <= Duration::from_secs(ceiling), "{attempt}: {d:?}");
            }
        }
        assert!(retry_delay(0, BASE, CAP, &mut rng) <= BASE);
    }

    #[test]
    fn the_delay_never_exceeds_the_cap_even_for_huge_attempts() {
        let mut rng = rng();
        for attempt in [10, 11, 20, 31, 32, 33, 64, 1000, u32::MAX] {
            let d = retry_delay(attempt, BASE, CAP, &mut rng);
            assert!(d <= CAP && d >= CAP / 2, "{attempt}: {d:?}");
        }
        let huge = Duration::from_secs(u64::MAX / 2);
        assert!(retry_delay(40, huge, CAP, &mut rng) <= CAP);
        assert!(retry_delay(3, BASE, Duration::from_secs(1), &mut rng) <= Duration::from_secs(1));
    }

    #[test]
    fn a_zero_base_waits_nothing() {
        let mut rng = rng();
        assert_eq!(retry_delay(1, Duration::ZERO, CAP, &mut rng), Duration::ZERO);
        assert_eq!(retry_delay(u32::MAX, Duration::ZERO, CAP, &mut rng), Duration::ZERO);
    }

    #[test]
    fn the_jitter_spreads_across_the_upper_half() {
        let mut rng = rng();
        let draws: Vec<Duration> = (0..1000).map(|_| retry_delay(4, BASE, CAP, &mut rng)).collect();
        let (low, high) = (Duration::from_secs(40), Duration::from_secs(80));
        assert!(draws.iter().all(|d| *d >= low && *d <= high));
        // Uniform over [40 s, 80 s]: each quarter of that span should get a fair share of 1000 draws.
        for quarter in 0..4u32 {
            let from = low + Duration::from_secs(10) * quarter;
            let to = from + Duration::from_secs(10);
            let n = draws.iter().filter(|d| **d >= from && **d < to).count();
            assert!(n > 150, "quarter {quarter} got {n} of 1000");
        }
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert!(distinct.len() > 900);
    }
}
