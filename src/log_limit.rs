//! Rate-limited log lines, for events a client can trigger at will.
//!
//! A flood of rejected connections must not become a flood of log lines: each kind of event
//! is logged at most once per interval, with the number of occurrences since the last line.
//! Occurrences not logged are not left waiting for the next one, which may never come: the
//! reactor calls [`LogLimit::flush`] on its timer for its own limits, which logs how many
//! there were once the interval is over (`5 more connections refused by the access rules in
//! the last 1.0s`). A handler's limits (an overlong line in `proto/`) have no timer: their
//! count waits for the next line they let through.

use std::time::{Duration, Instant};

use log::Level;

/// Lets one log line through per interval and counts the rest.
#[derive(Debug)]
pub(crate) struct LogLimit {
    interval: Duration,
    last: Option<Instant>,
    /// Occurrences since the last line: the next one's count.
    suppressed: u64,
    /// How a flushed count is logged: under the log target of the lines it stands for
    /// (their module's path), at their level, as "N more `what`".
    target: &'static str,
    level: Level,
    what: &'static str,
}

impl LogLimit {
    /// At most one line per second; occurrences not logged are flushed under `target`
    /// (`module_path!()` where the lines are logged) at `level`, as "N more `what`", so
    /// that `RUST_LOG` filters them as it filters the lines.
    pub(crate) const fn per_second(
        target: &'static str,
        level: Level,
        what: &'static str,
    ) -> LogLimit {
        LogLimit {
            interval: Duration::from_secs(1),
            last: None,
            suppressed: 0,
            target,
            level,
            what,
        }
    }

    /// When occurrences not logged are due to be flushed; `None` if none waits.
    pub(crate) fn due(&self) -> Option<Instant> {
        let last = self.last.filter(|_| self.suppressed > 0)?;
        Some(last + self.interval)
    }

    /// Logs the occurrences not logged since the last line, once the interval since it is
    /// over. Call it on a timer ([`LogLimit::due`] says when).
    pub(crate) fn flush(&mut self, now: Instant) {
        let Some(due) = self.due() else {
            return;
        };
        if now < due {
            return;
        }
        let since = self
            .last
            .map_or(Duration::ZERO, |last| now.duration_since(last));
        log::log!(
            target: self.target,
            self.level,
            "{} more {} in the last {:.1}s (not logged one by one)",
            self.suppressed,
            self.what,
            since.as_secs_f64()
        );
        self.suppressed = 0;
        self.last = Some(now);
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
        let mut limit = LogLimit::per_second(module_path!(), Level::Info, "events");
        let start = Instant::now();
        assert_eq!(limit.hit(start), Some(1));
        for ms in 1..=999 {
            assert_eq!(limit.hit(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(limit.hit(start + Duration::from_millis(1000)), Some(1000));
        assert_eq!(limit.hit(start + Duration::from_millis(1001)), None);
    }

    #[test]
    fn what_was_not_logged_is_due_a_line_of_its_own_after_the_interval() {
        let mut limit = LogLimit::per_second(module_path!(), Level::Info, "events");
        let start = Instant::now();
        assert_eq!(limit.hit(start), Some(1));
        assert_eq!(limit.due(), None, "nothing suppressed yet");
        assert_eq!(limit.hit(start + Duration::from_millis(10)), None);
        assert_eq!(limit.hit(start + Duration::from_millis(20)), None);
        let due = start + Duration::from_secs(1);
        assert_eq!(limit.due(), Some(due));
        limit.flush(due - Duration::from_millis(1)); // too early: nothing
        assert_eq!(limit.due(), Some(due));
        limit.flush(due);
        assert_eq!(limit.due(), None, "flushed");
        // The flush counts as a line: the next occurrence within a second waits.
        assert_eq!(limit.hit(due + Duration::from_millis(1)), None);
        assert_eq!(limit.hit(due + Duration::from_secs(1)), Some(2));
    }
}
