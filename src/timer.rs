//! The reactor's clock and its heap of connection deadlines.
//!
//! Time is counted in ticks of 100 ms since the reactor started, in a `u32` (13 years). The
//! reactor reads the system clock once per wakeup, so connections compare and store plain
//! integers: four bytes per timestamp instead of sixteen for an `Instant`, and no clock read
//! per event.
//!
//! Each connection has at most one live entry in a binary heap: the tick at which it must be
//! checked. Activity never touches the heap; it only updates the connection's timestamps.
//! When an entry comes due, the reactor recomputes the connection's real deadline from those
//! timestamps, and either expires the connection or pushes one entry for the later deadline.
//! An entry whose connection has closed, or that a sooner entry replaced, is skipped when it
//! comes out of the heap (lazy deletion). Every operation is O(log n), and nothing ever scans
//! all connections.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::conn_id::ConnId;

/// Reactor time: ticks since the reactor started.
pub(crate) type Tick = u32;

/// The length of one tick.
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// "No deadline": later than any real tick.
pub(crate) const NEVER: Tick = Tick::MAX;

/// Converts a timeout to whole ticks, rounding up so a timeout never fires early. `None` or
/// zero means "no timeout".
pub(crate) fn ticks(timeout: Option<Duration>) -> Option<Tick> {
    let timeout = timeout.filter(|t| !t.is_zero())?;
    let ticks = timeout.as_nanos().div_ceil(TICK.as_nanos());
    Some(ticks.min(NEVER as u128 - 1) as Tick)
}

/// The reactor's view of the time, read once per wakeup.
#[derive(Debug)]
pub(crate) struct Clock {
    start: Instant,
    now: Instant,
    /// `now` in ticks, computed once per update: connections read it on every event.
    tick: Tick,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        let start = Instant::now();
        Clock {
            start,
            now: start,
            tick: 0,
        }
    }

    /// Reads the system clock.
    pub(crate) fn update(&mut self) {
        self.now = Instant::now();
        let elapsed = self.now.duration_since(self.start);
        // Whole ticks in 64-bit arithmetic (Duration::as_nanos would divide 128-bit numbers).
        let tick_ms = TICK.as_millis() as u64;
        let ticks =
            elapsed.as_secs() * (1000 / tick_ms) + u64::from(elapsed.subsec_millis()) / tick_ms;
        self.tick = ticks.min(u64::from(NEVER - 1)) as Tick;
    }

    /// The time of the last update.
    pub(crate) fn now(&self) -> Instant {
        self.now
    }

    /// The tick of the last update.
    pub(crate) fn tick(&self) -> Tick {
        self.tick
    }

    /// The first tick that begins at or after `at`.
    pub(crate) fn tick_at(&self, at: Instant) -> Tick {
        let elapsed = at.saturating_duration_since(self.start);
        let tick_ms = TICK.as_millis();
        let ticks = elapsed.as_millis().div_ceil(tick_ms);
        ticks.min(u128::from(NEVER - 1)) as Tick
    }

    /// How long from the last update until `tick` begins (zero if it has).
    pub(crate) fn until(&self, tick: Tick) -> Duration {
        let at = self.start + TICK * tick;
        at.saturating_duration_since(self.now)
    }
}

/// The first tick that begins at least `timeout` ticks after any instant within `tick`.
///
/// An event stamped with tick `t` happened somewhere inside it, so `t + timeout` could be
/// reached up to one tick early; one more tick makes every timeout last at least its full
/// length (and at most one tick more).
pub(crate) fn after(tick: Tick, timeout: Tick) -> Tick {
    tick.saturating_add(timeout)
        .saturating_add(1)
        .min(NEVER - 1)
}

/// Connection check times, soonest first.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Tick, ConnId)>>,
}

impl Timers {
    /// Checks `id` at `at`.
    pub(crate) fn schedule(&mut self, at: Tick, id: ConnId) {
        self.heap.push(Reverse((at, id)));
    }

    /// The soonest check time, if any.
    pub(crate) fn next(&self) -> Option<Tick> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns an entry due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Tick) -> Option<(Tick, ConnId)> {
        if self.next()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(entry)| entry)
    }

    /// Number of entries, stale ones included.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops the entries `live` rejects, and memory the heap no longer needs. Stale entries
    /// (closed connections, superseded checks) otherwise wait until they come due, and a
    /// stream of short connections would pile up one per connection per idle timeout.
    pub(crate) fn compact(&mut self, mut live: impl FnMut(Tick, ConnId) -> bool) {
        self.heap.retain(|Reverse((at, id))| live(*at, *id));
        if self.heap.capacity() > 4 * self.heap.len() + 64 {
            self.heap.shrink_to(2 * self.heap.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_round_up_and_zero_means_none() {
        assert_eq!(ticks(None), None);
        assert_eq!(ticks(Some(Duration::ZERO)), None);
        assert_eq!(ticks(Some(Duration::from_millis(1))), Some(1));
        assert_eq!(ticks(Some(Duration::from_secs(1))), Some(10));
        assert_eq!(ticks(Some(Duration::from_millis(1001))), Some(11));
        assert_eq!(ticks(Some(Duration::MAX)), Some(NEVER - 1));
    }

    #[test]
    fn entries_come_out_soonest_first_and_only_when_due() {
        let mut timers = Timers::default();
        let (a, b, c) = (ConnId::new(1, 0), ConnId::new(2, 0), ConnId::new(3, 0));
        timers.schedule(30, a);
        timers.schedule(10, b);
        timers.schedule(20, c);
        assert_eq!(timers.next(), Some(10));
        assert_eq!(timers.pop_due(9), None);
        assert_eq!(timers.pop_due(25), Some((10, b)));
        assert_eq!(timers.pop_due(25), Some((20, c)));
        assert_eq!(timers.pop_due(25), None);
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn compact_keeps_only_live_entries_and_gives_memory_back() {
        let mut timers = Timers::default();
        for key in 0..10_000 {
            timers.schedule(key as Tick, ConnId::new(key, 0));
        }
        timers.compact(|_, id| id.key() % 1000 == 0);
        assert_eq!(timers.len(), 10);
        assert!(timers.heap.capacity() < 100);
        assert_eq!(timers.pop_due(NEVER - 1), Some((0, ConnId::new(0, 0))));
    }

    #[test]
    fn after_waits_the_full_timeout_and_saturates_below_never() {
        assert_eq!(after(5, 10), 16);
        assert_eq!(after(NEVER - 3, 10), NEVER - 1);
    }

    #[test]
    fn clock_ticks_follow_the_updates() {
        let mut clock = Clock::new();
        clock.start -= Duration::from_millis(2_345);
        clock.update();
        assert_eq!(clock.tick(), 23);
        assert!(clock.until(24) <= Duration::from_millis(56));
    }

    #[test]
    fn clock_until_counts_down_to_a_tick() {
        let clock = Clock::new();
        assert_eq!(clock.tick(), 0);
        assert_eq!(clock.until(0), Duration::ZERO);
        assert!(clock.until(10) <= Duration::from_secs(1));
        assert!(clock.until(10) > Duration::from_millis(900));
    }
}
