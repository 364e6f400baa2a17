//! Time as a parameter: expiry, cooldowns and lockouts read a [`Clock`], so tests move time
//! instead of sleeping.

use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> OffsetDateTime;

    /// Whole seconds since the Unix epoch: what token and session expiry compare against
    /// on every request.
    fn unix_now(&self) -> i64 {
        self.now().unix_timestamp()
    }
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one sanctioned wall-clock read
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    /// Without the calendar arithmetic of an `OffsetDateTime` (a few hundred instructions
    /// on each proxied request).
    #[allow(clippy::disallowed_methods)] // the sanctioned wall-clock read, in seconds
    fn unix_now(&self) -> i64 {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
        }
    }
}

impl SystemClock {
    /// Time since the Unix epoch to the microsecond, for log lines.
    #[allow(clippy::disallowed_methods)] // the sanctioned wall-clock read
    pub fn since_epoch(&self) -> std::time::Duration {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// The monotonic clock, for durations and deadlines that no test moves (connection
/// deadlines, queue waits, request timing): read here, so that every other read of a clock
/// is the [`Clock`]'s.
#[allow(clippy::disallowed_methods)] // the sanctioned monotonic read
pub fn monotonic() -> std::time::Instant {
    std::time::Instant::now()
}

/// [`monotonic`], as tokio's timers count it (paused and moved by `tokio::time` in tests).
#[allow(clippy::disallowed_methods)] // the sanctioned monotonic read for tokio timers
pub fn timer_now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

/// A clock that moves only when told to.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<OffsetDateTime>>);

impl ManualClock {
    pub fn new(start: OffsetDateTime) -> Self {
        ManualClock(Arc::new(Mutex::new(start)))
    }

    /// Starts at the current wall-clock time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    pub fn advance(&self, by: std::time::Duration) {
        if let Ok(mut t) = self.0.lock() {
            *t += by;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        self.0
            .lock()
            .map(|t| *t)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// Formats a time as RFC 3339 in UTC (the contract's format).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_when_told() {
        let c = ManualClock::new(OffsetDateTime::UNIX_EPOCH);
        assert_eq!(c.now(), OffsetDateTime::UNIX_EPOCH);
        c.advance(std::time::Duration::from_secs(90));
        assert_eq!(c.now().unix_timestamp(), 90);
        assert_eq!(rfc3339(c.now()), "1970-01-01T00:01:30Z");
        assert_eq!(c.unix_now(), 90);
    }

    #[test]
    fn system_clock_seconds_agree_with_its_date() {
        let before = SystemClock.now().unix_timestamp();
        let secs = SystemClock.unix_now();
        let after = SystemClock.now().unix_timestamp();
        assert!(
            before <= secs && secs <= after,
            "{before} <= {secs} <= {after}"
        );
        assert!(secs > 1_700_000_000);
    }
}
