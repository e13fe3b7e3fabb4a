//! The connection-rate limit: a token bucket per source address. Sans-IO: addresses and
//! ticks in, verdicts out.
//!
//! Each address may open `per_second` connections a second, in bursts of up to a second's
//! worth. Amounts are kept in tenths of a connection, the refill per 100 ms tick, so the
//! arithmetic is exact integers. A bucket that has refilled completely says nothing an
//! empty table would not, so it is dropped; the table holds only addresses that connected
//! within the last second. It is bounded: past its capacity, new addresses go unlimited
//! until entries expire (a flood from that many addresses is beyond what a per-address limit
//! can stop).

use std::collections::HashMap;
use std::net::IpAddr;

use crate::timer::Tick;

/// What one connection costs, in tenths.
const COST: u64 = 10;

/// The buckets of the addresses that connected recently.
#[derive(Debug)]
pub(crate) struct AcceptRate {
    /// Connections a second per address (0: no limit); also tenths refilled per tick.
    per_second: u64,
    capacity: usize,
    buckets: HashMap<IpAddr, Bucket>,
    /// The tick of the last sweep: a second one within a tick would find nothing, so a
    /// full table under a flood of new addresses is swept once a tick, not once an accept.
    swept_at: Option<Tick>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tenths of a connection available at `at`.
    tenths: u64,
    at: Tick,
}

impl AcceptRate {
    /// At most `per_second` connections a second from each address (0: no limit), tracking
    /// at most `capacity` addresses.
    pub(crate) fn new(per_second: u32, capacity: usize) -> AcceptRate {
        AcceptRate {
            per_second: per_second.into(),
            capacity: capacity.max(1),
            buckets: HashMap::new(),
            swept_at: None,
        }
    }

    /// A full bucket: one second's worth.
    fn full(&self) -> u64 {
        self.per_second * COST
    }

    fn refilled(&self, bucket: Bucket, now: Tick) -> u64 {
        let elapsed = u64::from(now.saturating_sub(bucket.at));
        (bucket.tenths + elapsed * self.per_second).min(self.full())
    }

    /// Whether a connection from `ip` now is within its rate; if so it is counted.
    pub(crate) fn admit(&mut self, ip: IpAddr, now: Tick) -> bool {
        if self.per_second == 0 {
            return true;
        }
        let tenths = match self.buckets.get(&ip) {
            Some(bucket) => self.refilled(*bucket, now),
            None => {
                if self.buckets.len() >= self.capacity {
                    if self.swept_at != Some(now) {
                        self.expire(now);
                    }
                    if self.buckets.len() >= self.capacity {
                        return true; // see the module docs
                    }
                }
                self.full()
            }
        };
        let admitted = tenths >= COST;
        let tenths = if admitted { tenths - COST } else { tenths };
        self.buckets.insert(ip, Bucket { tenths, at: now });
        admitted
    }

    /// Drops the buckets that have refilled.
    pub(crate) fn expire(&mut self, now: Tick) {
        self.swept_at = Some(now);
        let full = self.full();
        let per_second = self.per_second;
        self.buckets.retain(|_, bucket| {
            let elapsed = u64::from(now.saturating_sub(bucket.at));
            bucket.tenths + elapsed * per_second < full
        });
    }

    /// Addresses tracked now.
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_burst_of_one_seconds_worth_then_the_refill_rate() {
        let mut rate = AcceptRate::new(5, 100);
        let admitted = (0..20).filter(|_| rate.admit(ip(2), 0)).count();
        assert_eq!(admitted, 5, "the burst");
        assert!(rate.admit(ip(3), 0), "another address has its own bucket");
        assert!(
            !rate.admit(ip(2), 1),
            "half a connection refilled after 100 ms"
        );
        assert!(rate.admit(ip(2), 2), "one after 200 ms");
        assert!(!rate.admit(ip(2), 2));
        // Ten seconds later: a full bucket again, never more.
        let admitted = (0..20).filter(|_| rate.admit(ip(2), 102)).count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn refilled_buckets_are_dropped_and_the_table_is_bounded() {
        let mut rate = AcceptRate::new(1, 8);
        for last in 0..=255 {
            assert!(rate.admit(ip(last), 0));
            assert!(rate.len() <= 8);
        }
        rate.expire(10);
        assert_eq!(rate.len(), 0, "all refilled after a second");
    }

    #[test]
    fn zero_means_no_limit() {
        let mut rate = AcceptRate::new(0, 8);
        assert!((0..1000).all(|_| rate.admit(ip(1), 0)));
        assert_eq!(rate.len(), 0);
    }
}
