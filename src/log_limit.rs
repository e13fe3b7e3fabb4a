//! Rate-limited log lines, for events a client can trigger at will.
//!
//! A flood of rejected connections must not become a flood of log lines: each kind of event
//! is logged at most once per interval, with the number of occurrences since the last line.

use std::time::{Duration, Instant};

/// Lets one log line through per interval and counts the rest.
#[derive(Debug)]
pub(crate) struct LogLimit {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// At most one line per second.
    pub(crate) const fn per_second() -> LogLimit {
        LogLimit {
            interval: Duration::from_secs(1),
            last: None,
            suppressed: 0,
        }
    }

    /// Records one occurrence at `now`. Returns `Some(occurrences)` (this one and those
    /// suppressed since the last line) when a line may be logged now.
    pub(crate) fn hit(&mut self, now: Instant) -> Option<u64> {
        self.suppressed += 1;
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.interval)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_of_the_rest() {
        let mut limit = LogLimit::per_second();
        let start = Instant::now();
        assert_eq!(limit.hit(start), Some(1));
        for ms in 1..=999 {
            assert_eq!(limit.hit(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(limit.hit(start + Duration::from_millis(1000)), Some(1000));
        assert_eq!(limit.hit(start + Duration::from_millis(1001)), None);
    }
}
