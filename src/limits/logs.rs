//! Log volume: what a station or a stranger can make the node write.
//!
//! A [`LogBudget`] lets the first few warnings of an interval through; the rest are counted
//! (`ocpp_limit_hits_total{limit="log_lines"}`) and summed up in one line with their count when the
//! interval is over (at the next warning, or when [`LogBudget::flush`] is called: a session does at
//! its end and at its timer ticks). The summary is written in the caller's span, so it carries the
//! station it is about.

use super::{hit, Limit};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct LogBudget {
    per_interval: u32,
    interval: Duration,
    started: Instant,
    used: u32,
    suppressed: u64,
}

impl LogBudget {
    pub fn new(per_interval: u32, interval: Duration) -> Self {
        Self {
            per_interval,
            interval: interval.max(Duration::from_secs(1)),
            started: Instant::now(),
            used: 0,
            suppressed: 0,
        }
    }

    /// Whether a warning may be written now. When the interval is over, first writes the summary
    /// of what the last one held back.
    pub fn allow(&mut self) -> bool {
        if self.started.elapsed() >= self.interval {
            self.flush();
            self.started = Instant::now();
            self.used = 0;
        }
        if self.used < self.per_interval {
            self.used += 1;
            return true;
        }
        self.suppressed += 1;
        hit(Limit::LogLines);
        false
    }

    /// Writes the summary of the warnings held back so far, if any.
    pub fn flush(&mut self) {
        if self.suppressed > 0 {
            tracing::warn!(
                suppressed = self.suppressed,
                interval_secs = self.interval.as_secs(),
                "more warnings like the above were not logged"
            );
            self.suppressed = 0;
        }
    }
}

/// A [`LogBudget`] shared by the threads of the node (connection refusals, say).
#[derive(Debug)]
pub struct SharedLogBudget(Mutex<LogBudget>);

impl SharedLogBudget {
    pub fn new(per_interval: u32, interval: Duration) -> Self {
        Self(Mutex::new(LogBudget::new(per_interval, interval)))
    }

    pub fn allow(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).allow()
    }
}

/// Lines one call site of [`warn_limited!`] / [`error_limited!`] writes per minute, node-wide
/// (`limits.site_warnings`, set at start-up; the first application of a process sets it).
static PER_SITE_PER_MINUTE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(10);

/// Sets [`PER_SITE_PER_MINUTE`] (call sites that logged already keep their budget).
pub fn set_per_site_per_minute(lines: u32) {
    PER_SITE_PER_MINUTE.store(lines, std::sync::atomic::Ordering::Relaxed);
}

/// Lines a call site may write per minute.
pub fn per_site_per_minute() -> u32 {
    PER_SITE_PER_MINUTE.load(std::sync::atomic::Ordering::Relaxed)
}

/// A `tracing` event at `$level` within a budget of its own call site (`limits.site_warnings` lines
/// a minute for the whole node, then one summary line with the count): for what any station can
/// cause at will. Use [`warn_limited!`] or [`error_limited!`].
#[macro_export]
macro_rules! log_limited {
    ($level:ident, $($arg:tt)+) => {{
        static BUDGET: std::sync::OnceLock<$crate::limits::logs::SharedLogBudget> = std::sync::OnceLock::new();
        let budget = BUDGET.get_or_init(|| {
            $crate::limits::logs::SharedLogBudget::new(
                $crate::limits::logs::per_site_per_minute(),
                std::time::Duration::from_secs(60),
            )
        });
        if budget.allow() {
            tracing::$level!($($arg)+);
        }
    }};
}

/// `tracing::warn!` within its call site's budget (see [`log_limited!`]).
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => { $crate::log_limited!(warn, $($arg)+) };
}

/// `tracing::error!` within its call site's budget (see [`log_limited!`]).
#[macro_export]
macro_rules! error_limited {
    ($($arg:tt)+) => { $crate::log_limited!(error, $($arg)+) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_warnings_of_an_interval_pass_and_the_rest_are_held_back_until_it_ends() {
        let mut budget = LogBudget::new(3, Duration::from_secs(1));
        let passed = (0..10).filter(|_| budget.allow()).count();
        assert_eq!((passed, budget.suppressed), (3, 7));
        budget.started -= Duration::from_secs(1);
        assert!(budget.allow(), "a new interval");
        assert_eq!(budget.suppressed, 0, "the summary was written");
    }
}
