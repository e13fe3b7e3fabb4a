//! How long to wait before replacing a worker that died: doubling while workers die young,
//! so a crash loop cannot spin the CPU.

use std::time::Duration;

/// The first pause before a dead worker is replaced; it doubles with every worker that dies
/// young, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A worker that served this long before it died was not crash-looping: the next pause is
/// `FIRST_BACKOFF` again.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// The pause before replacing a worker, per worker id: a crash loop costs one start every
/// `MAX_BACKOFF`, and a worker that dies after a good run is replaced at once.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff {
            next: FIRST_BACKOFF,
        }
    }

    /// The pause after a worker that lived for `lived` died.
    pub fn after_death(&mut self, lived: Duration) -> Duration {
        if lived >= STABLE_AFTER {
            self.next = FIRST_BACKOFF;
        }
        let pause = self.next;
        self.next = (pause * 2).min(MAX_BACKOFF);
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_loop_backs_off_to_five_seconds_and_a_good_run_resets_it() {
        let mut backoff = Backoff::new();
        let young = Duration::from_millis(50);
        let pauses: Vec<u64> = (0..8)
            .map(|_| backoff.after_death(young).as_millis() as u64)
            .collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(
            backoff.after_death(STABLE_AFTER),
            FIRST_BACKOFF,
            "a worker that served 10 s was not crash-looping"
        );
        assert_eq!(backoff.after_death(young), FIRST_BACKOFF * 2);
    }
}
