//! Lockout: an address that fails authentication too often is refused for a while. Sans-IO:
//! addresses and ticks in, verdicts out.
//!
//! The table of offenders is bounded: a flood of failures from many addresses cannot grow it
//! past its capacity. When it is full, the entry that would expire soonest and is not locked
//! out makes room; when every entry is a lockout, a new offender goes uncounted until one
//! expires (locking out the addresses already caught matters more).

use std::collections::HashMap;
use std::net::IpAddr;

use crate::timer::Tick;

/// The lockout rule and the addresses it is counting.
#[derive(Debug)]
pub(crate) struct Lockout {
    /// Failures within `window` that lock an address out (0: never).
    limit: u32,
    window: Tick,
    duration: Tick,
    capacity: usize,
    offenders: HashMap<IpAddr, Offender>,
}

#[derive(Debug, Clone, Copy)]
struct Offender {
    failures: u32,
    /// When the first failure of the current window happened.
    since: Tick,
    /// Set while locked out: until when.
    locked_until: Option<Tick>,
}

impl Offender {
    /// When the entry stops mattering: its lockout ends, or its window closes.
    fn expires_at(&self, window: Tick) -> Tick {
        self.locked_until
            .unwrap_or_else(|| self.since.saturating_add(window))
    }
}

impl Lockout {
    /// Lock out after `limit` failures within `window`, for `duration`, tracking at most
    /// `capacity` addresses. `limit` 0 turns lockout off.
    pub(crate) fn new(limit: u32, window: Tick, duration: Tick, capacity: usize) -> Lockout {
        Lockout {
            limit,
            window,
            duration,
            capacity: capacity.max(1),
            offenders: HashMap::new(),
        }
    }

    /// Whether `ip` is locked out now.
    pub(crate) fn is_locked(&self, ip: IpAddr, now: Tick) -> bool {
        self.offenders
            .get(&ip)
            .and_then(|offender| offender.locked_until)
            .is_some_and(|until| now < until)
    }

    /// Counts a failed authentication from `ip`. True when this failure locked it out.
    pub(crate) fn failed(&mut self, ip: IpAddr, now: Tick) -> bool {
        if self.limit == 0 {
            return false;
        }
        if !self.offenders.contains_key(&ip) && !self.make_room(now) {
            return false;
        }
        let window = self.window;
        let offender = self.offenders.entry(ip).or_insert(Offender {
            failures: 0,
            since: now,
            locked_until: None,
        });
        if offender.expires_at(window) <= now {
            // The window (or an earlier lockout) is over: count afresh.
            *offender = Offender {
                failures: 0,
                since: now,
                locked_until: None,
            };
        }
        if offender.locked_until.is_some() {
            return false; // connected before the lockout began
        }
        offender.failures += 1;
        if offender.failures < self.limit {
            return false;
        }
        offender.locked_until = Some(now.saturating_add(self.duration));
        true
    }

    /// Forgets the entries that no longer matter.
    pub(crate) fn expire(&mut self, now: Tick) {
        let window = self.window;
        self.offenders
            .retain(|_, offender| offender.expires_at(window) > now);
    }

    /// Addresses being counted or locked out now.
    pub(crate) fn len(&self) -> usize {
        self.offenders.len()
    }

    /// Makes room for one more entry; false if every entry is a lockout still running.
    fn make_room(&mut self, now: Tick) -> bool {
        if self.offenders.len() < self.capacity {
            return true;
        }
        self.expire(now);
        if self.offenders.len() < self.capacity {
            return true;
        }
        let window = self.window;
        let soonest = self
            .offenders
            .iter()
            .filter(|(_, offender)| offender.locked_until.is_none())
            .min_by_key(|(_, offender)| offender.expires_at(window))
            .map(|(ip, _)| *ip);
        match soonest {
            Some(ip) => {
                self.offenders.remove(&ip);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn the_fifth_failure_within_the_window_locks_out_until_the_duration_passes() {
        let mut lockout = Lockout::new(5, 600, 600, 100);
        for tick in 0..4 {
            assert!(!lockout.failed(ip(2), tick));
        }
        assert!(!lockout.is_locked(ip(2), 4));
        assert!(lockout.failed(ip(2), 4), "the fifth failure");
        assert!(lockout.is_locked(ip(2), 5));
        assert!(!lockout.is_locked(ip(3), 5), "another address");
        assert!(lockout.is_locked(ip(2), 603));
        assert!(!lockout.is_locked(ip(2), 604), "over after 600 ticks");
        lockout.expire(604);
        assert_eq!(lockout.len(), 0);
    }

    #[test]
    fn failures_spread_wider_than_the_window_never_lock_out() {
        let mut lockout = Lockout::new(3, 10, 100, 100);
        for tick in [0, 5, 11, 16, 22, 27] {
            assert!(!lockout.failed(ip(2), tick), "tick {tick}");
        }
        assert!(!lockout.is_locked(ip(2), 28));
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_its_lockouts() {
        let mut lockout = Lockout::new(2, 100, 100, 4);
        lockout.failed(ip(1), 0);
        assert!(lockout.failed(ip(1), 0), "ip 1 locked out");
        for last in 2..=200 {
            lockout.failed(ip(last), 1);
            assert!(lockout.len() <= 4);
        }
        assert!(
            lockout.is_locked(ip(1), 2),
            "a flood does not evict a lockout"
        );
        lockout.expire(101);
        assert_eq!(lockout.len(), 0);
    }

    #[test]
    fn zero_failures_means_off() {
        let mut lockout = Lockout::new(0, 100, 100, 4);
        for _ in 0..10 {
            assert!(!lockout.failed(ip(1), 0));
        }
        assert_eq!(lockout.len(), 0);
    }
}
