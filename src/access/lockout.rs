//! Lockout: an address that fails authentication too often is refused for a while. Sans-IO:
//! addresses and ticks in, verdicts out.
//!
//! The table of offenders is bounded: a flood of failures from many addresses cannot grow it
//! past its capacity. When it is full, the entry that would expire soonest and is not locked
//! out makes room, found in O(log n) from an index by expiry (not by scanning the table).
//! Lockouts are never evicted. When every entry is a lockout still running (an attack from
//! more addresses than the table holds), failures from new addresses are counted by their
//! network instead (a /24, an IPv6 /48) in a small second table, so the attack goes on
//! being counted and its networks locked out; that costs their other hosts a lockout too,
//! which beats letting an attacker with many addresses guess for free.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use crate::timer::Tick;

/// The lockout rule and the addresses it is counting.
#[derive(Debug)]
pub(crate) struct Lockout {
    /// Failures within `window` that lock an address out (0: never).
    limit: u32,
    window: Tick,
    duration: Tick,
    /// Addresses.
    exact: Table,
    /// Networks, counted only while `exact` is full of lockouts.
    networks: Table,
}

#[derive(Debug, Clone, Copy)]
struct Offender {
    failures: u32,
    /// When the first failure of the current window happened.
    since: Tick,
    /// Set while locked out: until when.
    locked_until: Option<Tick>,
}

/// A bounded table of offenders with its eviction order.
#[derive(Debug)]
struct Table {
    capacity: usize,
    entries: HashMap<IpAddr, Offender>,
    /// Entries not locked out, by the end of their window: the next to evict comes first.
    counting: BTreeSet<(Tick, IpAddr)>,
    /// Lockouts, by their end.
    locked: BTreeSet<(Tick, IpAddr)>,
}

impl Table {
    fn new(capacity: usize) -> Table {
        Table {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            counting: BTreeSet::new(),
            locked: BTreeSet::new(),
        }
    }

    fn is_locked(&self, ip: IpAddr, now: Tick) -> bool {
        self.entries
            .get(&ip)
            .and_then(|offender| offender.locked_until)
            .is_some_and(|until| now < until)
    }

    /// Drops the entries whose window or lockout is over: O(log n) each.
    fn expire(&mut self, now: Tick) {
        for index in [&mut self.counting, &mut self.locked] {
            while let Some(&(due, ip)) = index.first() {
                if due > now {
                    break;
                }
                index.pop_first();
                self.entries.remove(&ip);
            }
        }
    }

    /// Room for `ip`: it is in, or there is space, or the entry nearest its end and not
    /// locked out is evicted. False when every entry is a lockout still running.
    fn make_room(&mut self, ip: IpAddr, now: Tick) -> bool {
        if self.entries.contains_key(&ip) || self.entries.len() < self.capacity {
            return true;
        }
        self.expire(now);
        if self.entries.len() < self.capacity {
            return true;
        }
        match self.counting.pop_first() {
            Some((_, evicted)) => {
                self.entries.remove(&evicted);
                true
            }
            None => false,
        }
    }

    /// Counts a failure; true when it locked `ip` out.
    fn failed(&mut self, ip: IpAddr, now: Tick, rule: (u32, Tick, Tick)) -> bool {
        let (limit, window, duration) = rule;
        let fresh = Offender {
            failures: 0,
            since: now,
            locked_until: None,
        };
        let offender = self.entries.entry(ip).or_insert(fresh);
        let ends = |o: &Offender| o.since.saturating_add(window);
        if offender.failures == 0 {
            self.counting.insert((ends(offender), ip));
        } else if offender.locked_until.unwrap_or_else(|| ends(offender)) <= now {
            // The window (or an earlier lockout) is over: count afresh.
            match offender.locked_until {
                Some(until) => self.locked.remove(&(until, ip)),
                None => self.counting.remove(&(ends(offender), ip)),
            };
            *offender = fresh;
            self.counting.insert((ends(offender), ip));
        }
        if offender.locked_until.is_some() {
            return false; // connected before the lockout began
        }
        offender.failures += 1;
        if offender.failures < limit {
            return false;
        }
        let until = now.saturating_add(duration);
        self.counting.remove(&(ends(offender), ip));
        offender.locked_until = Some(until);
        self.locked.insert((until, ip));
        true
    }
}

impl Lockout {
    /// Lock out after `limit` failures within `window`, for `duration`, tracking at most
    /// `capacity` addresses (and a sixteenth of that in networks). `limit` 0 turns lockout
    /// off.
    pub(crate) fn new(limit: u32, window: Tick, duration: Tick, capacity: usize) -> Lockout {
        Lockout {
            limit,
            window,
            duration,
            exact: Table::new(capacity),
            networks: Table::new(capacity / 16),
        }
    }

    /// Whether `ip` is locked out now, by itself or by its network.
    pub(crate) fn is_locked(&self, ip: IpAddr, now: Tick) -> bool {
        self.exact.is_locked(ip, now)
            || (!self.networks.entries.is_empty() && self.networks.is_locked(network(ip), now))
    }

    /// Counts a failed authentication from `ip`. True when this failure locked it (or its
    /// network) out.
    pub(crate) fn failed(&mut self, ip: IpAddr, now: Tick) -> bool {
        if self.limit == 0 {
            return false;
        }
        let rule = (self.limit, self.window, self.duration);
        if self.exact.make_room(ip, now) {
            return self.exact.failed(ip, now, rule);
        }
        // Every entry is a running lockout: count by network.
        let net = network(ip);
        self.networks.make_room(net, now) && self.networks.failed(net, now, rule)
    }

    /// Forgets the entries that no longer matter.
    pub(crate) fn expire(&mut self, now: Tick) {
        self.exact.expire(now);
        self.networks.expire(now);
    }

    /// Addresses (and networks) being counted or locked out now.
    pub(crate) fn len(&self) -> usize {
        self.exact.entries.len() + self.networks.entries.len()
    }
}

/// The network an address is counted by when the table of addresses is full: its /24, or
/// its IPv6 /48.
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) & 0xffff_ff00).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & (u128::MAX << 80)).into()),
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

    #[test]
    fn eviction_takes_the_entry_nearest_the_end_of_its_window() {
        let mut lockout = Lockout::new(5, 100, 100, 2);
        lockout.failed(ip(1), 0);
        lockout.failed(ip(2), 5);
        lockout.failed(ip(1), 6); // still ip 1's window from tick 0
        lockout.failed(ip(3), 7); // full: ip 1's window ends first
        assert!(!lockout.exact.entries.contains_key(&ip(1)));
        assert!(lockout.exact.entries.contains_key(&ip(2)));
        assert!(lockout.exact.entries.contains_key(&ip(3)));
        assert_eq!(
            lockout.exact.counting.len(),
            2,
            "the index follows the table"
        );
    }

    /// Issue 16: with `--max-tracked-ips 4 --lockout-failures 2`, a fifth address made 50
    /// guesses, all answered, never locked out: the table was full of lockouts.
    #[test]
    fn a_table_full_of_lockouts_counts_new_addresses_by_their_network() {
        let mut lockout = Lockout::new(2, 100, 100, 4);
        for last in 1..=4 {
            lockout.failed(IpAddr::from([192, 0, 2, last]), 0);
            assert!(lockout.failed(IpAddr::from([192, 0, 2, last]), 0));
        }
        let fifth = IpAddr::from([198, 51, 100, 7]);
        assert!(!lockout.failed(fifth, 1));
        assert!(lockout.failed(fifth, 2), "counted, by its /24");
        assert!(lockout.is_locked(fifth, 3));
        assert!(
            lockout.is_locked(IpAddr::from([198, 51, 100, 200]), 3),
            "its network"
        );
        assert!(!lockout.is_locked(IpAddr::from([203, 0, 113, 1]), 3));
        // Everything runs out in time.
        lockout.expire(200);
        assert_eq!(lockout.len(), 0);
        assert!(!lockout.is_locked(fifth, 200));
    }
}
