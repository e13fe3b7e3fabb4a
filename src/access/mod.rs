//! Access control, decided right after accept and before a byte is read: an allow-list of
//! networks, the lockout of addresses that failed to authenticate ([`lockout`]), a
//! connection-rate limit per address ([`rate`]), and a limit of connections open at once per
//! address. Sans-IO: addresses and ticks in, verdicts out.
//!
//! IPv4 clients of a dual-stack `[::]` listener arrive as IPv4-mapped IPv6 addresses
//! (`::ffff:a.b.c.d`); they are matched and counted as the IPv4 addresses they are.
//!
//! The lockout, the rate limit and the per-address limit count an IPv6 client by its
//! network, the first `ipv6_prefix` bits of its address (64 by default): one host is
//! usually given a whole /64, and counting its addresses one by one would give it 2^64
//! fresh starts. The allow-list matches whole addresses.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::Config;
use crate::timer::{self, Tick};

mod lockout;
mod rate;

use lockout::Lockout;
use rate::AcceptRate;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its address is in none of the allowed networks.
    NotAllowed,
    /// Its address failed to authenticate too often, and is locked out for a while.
    LockedOut,
    /// Its address is connecting faster than `max_accept_rate`.
    RateLimited,
    /// Its address already has `max_conns_per_ip` connections.
    TooManyFromIp,
    /// It came to a listener that expects a PROXY header from a source not trusted to send
    /// one (the acceptor's check, made before these rules).
    UntrustedProxy,
}

/// The access rules and what they remember about addresses.
#[derive(Debug)]
pub(crate) struct Access {
    allow: Vec<IpNet>,
    lockout: Lockout,
    rate: AcceptRate,
    max_per_ip: usize,
    open: HashMap<IpAddr, u32>,
    /// Bits of an IPv6 address that name a client (`Config::ipv6_prefix`).
    ipv6_prefix: u8,
    /// Networks whose failures are never counted (`Config::lockout_exempt`).
    exempt: Vec<IpNet>,
}

impl Access {
    /// The rules of `config`: `allow`, the lockout settings, `max_accept_rate` and
    /// `max_conns_per_ip`.
    pub(crate) fn new(config: &Config) -> Access {
        let ticks = |duration| timer::ticks(Some(duration)).unwrap_or(1);
        Access {
            allow: config.allow.clone(),
            lockout: Lockout::new(
                config.lockout_failures,
                ticks(config.lockout_window),
                ticks(config.lockout_duration),
                config.max_tracked_addresses,
            ),
            rate: AcceptRate::new(config.max_accept_rate, config.max_tracked_addresses),
            max_per_ip: config.max_conns_per_ip,
            open: HashMap::new(),
            ipv6_prefix: config.ipv6_prefix.clamp(1, 128),
            exempt: config.lockout_exempt.clone(),
        }
    }

    /// Who `ip` counts as: an IPv4 address as itself (a mapped one as the IPv4 address it
    /// is), an IPv6 address as its network of `ipv6_prefix` bits.
    fn client(&self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = u128::MAX << (128 - u32::from(self.ipv6_prefix));
                IpAddr::V6((bits & mask).into())
            }
            v4 => v4,
        }
    }

    /// Whether per-address counts are kept (and [`Access::release`] must be called).
    pub(crate) fn counts(&self) -> bool {
        self.max_per_ip > 0
    }

    /// Decides on a new connection from `ip` at tick `now`; an admitted one is counted
    /// until released.
    pub(crate) fn admit(&mut self, ip: IpAddr, now: Tick) -> Result<(), Refusal> {
        if !self.allows(ip) {
            return Err(Refusal::NotAllowed);
        }
        let ip = ip.to_canonical();
        let ip = self.client(ip);
        if self.lockout.is_locked(ip, now) {
            return Err(Refusal::LockedOut);
        }
        if !self.rate.admit(ip, now) {
            return Err(Refusal::RateLimited);
        }
        if self.max_per_ip > 0 {
            let open = self.open.entry(ip).or_insert(0);
            if *open as usize >= self.max_per_ip {
                return Err(Refusal::TooManyFromIp);
            }
            *open += 1;
        }
        Ok(())
    }

    /// Whether the allow-list lets `ip` in (an empty list lets everyone in).
    pub(crate) fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }

    /// Whether `ip` is locked out now.
    pub(crate) fn is_locked(&self, ip: IpAddr, now: Tick) -> bool {
        self.lockout.is_locked(self.client(ip), now)
    }

    /// A connection from `ip` failed to authenticate. True when that locked the address out.
    /// Failures from an exempt network are not counted.
    pub(crate) fn auth_failed(&mut self, ip: IpAddr, now: Tick) -> bool {
        let canonical = ip.to_canonical();
        if self.exempt.iter().any(|net| net.contains(&canonical)) {
            return false;
        }
        self.lockout.failed(self.client(ip), now)
    }

    /// Forgets lockouts and rate buckets that have run out; due once a second or so.
    pub(crate) fn expire(&mut self, now: Tick) {
        self.lockout.expire(now);
        self.rate.expire(now);
    }

    /// Whether anything is remembered that [`Access::expire`] may forget.
    pub(crate) fn remembers(&self) -> bool {
        self.lockout.len() > 0 || self.rate.len() > 0
    }

    /// Addresses counted or locked out for failing to authenticate.
    pub(crate) fn offenders(&self) -> usize {
        self.lockout.len()
    }

    /// A connection admitted from `ip` has closed.
    pub(crate) fn release(&mut self, ip: IpAddr) {
        let ip = self.client(ip);
        if let Some(open) = self.open.get_mut(&ip) {
            *open -= 1;
            if *open == 0 {
                self.open.remove(&ip); // the table holds only addresses with connections
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_network_and_exempt_networks_are_never_locked_out() {
        let mut config = Config {
            lockout_failures: 2,
            max_conns_per_ip: 1,
            lockout_exempt: vec!["10.0.0.0/8".parse().unwrap()],
            ..Config::default()
        };
        let mut rules = access(config.clone());
        // Two addresses of one /64: one client.
        assert_eq!(rules.admit(ip("2001:db8:1:2::1"), 0), Ok(()));
        assert_eq!(
            rules.admit(ip("2001:db8:1:2:ffff::9"), 0),
            Err(Refusal::TooManyFromIp)
        );
        assert_eq!(rules.admit(ip("2001:db8:1:3::1"), 0), Ok(()), "another /64");
        // Failures from across the /64 add up to a lockout of all of it.
        assert!(!rules.auth_failed(ip("2001:db8:1:2::a"), 0));
        assert!(rules.auth_failed(ip("2001:db8:1:2::b"), 0));
        assert!(rules.is_locked(ip("2001:db8:1:2::c"), 1));
        // An exempt network fails as often as it likes.
        for _ in 0..10 {
            assert!(!rules.auth_failed(ip("10.1.2.3"), 0));
        }
        assert!(!rules.is_locked(ip("10.1.2.3"), 1));
        // /128 counts each address apart.
        config.ipv6_prefix = 128;
        let mut exact = access(config);
        assert_eq!(exact.admit(ip("2001:db8:1:2::1"), 0), Ok(()));
        assert_eq!(exact.admit(ip("2001:db8:1:2::2"), 0), Ok(()));
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn access(config: Config) -> Access {
        Access::new(&config)
    }

    #[test]
    fn the_allow_list_admits_only_its_networks_and_mapped_v4_matches_v4_rules() {
        let mut access = access(Config {
            allow: vec!["127.0.0.0/30".parse().unwrap(), "fd00::/8".parse().unwrap()],
            ..Config::default()
        });
        assert_eq!(access.admit(ip("127.0.0.2"), 0), Ok(()));
        assert_eq!(access.admit(ip("127.0.0.4"), 0), Err(Refusal::NotAllowed));
        assert_eq!(access.admit(ip("::ffff:127.0.0.1"), 0), Ok(()));
        assert_eq!(
            access.admit(ip("::ffff:127.0.0.9"), 0),
            Err(Refusal::NotAllowed)
        );
        assert_eq!(access.admit(ip("fd12::1"), 0), Ok(()));
        assert_eq!(access.admit(ip("::1"), 0), Err(Refusal::NotAllowed));
    }

    #[test]
    fn an_empty_allow_list_admits_everyone() {
        let mut access = access(Config::default());
        assert_eq!(access.admit(ip("203.0.113.7"), 0), Ok(()));
        assert!(!access.counts());
        assert!(!access.remembers());
    }

    #[test]
    fn per_ip_limit_counts_each_address_and_frees_on_release() {
        let mut access = access(Config {
            max_conns_per_ip: 2,
            ..Config::default()
        });
        assert_eq!(access.admit(ip("127.0.0.2"), 0), Ok(()));
        assert_eq!(
            access.admit(ip("::ffff:127.0.0.2"), 0),
            Ok(()),
            "the same address, mapped"
        );
        assert_eq!(
            access.admit(ip("127.0.0.2"), 0),
            Err(Refusal::TooManyFromIp)
        );
        assert_eq!(access.admit(ip("127.0.0.3"), 0), Ok(()));
        access.release(ip("127.0.0.2"));
        assert_eq!(access.admit(ip("127.0.0.2"), 0), Ok(()));
        access.release(ip("127.0.0.3"));
        assert!(
            !access.open.contains_key(&ip("127.0.0.3")),
            "no entry for an idle address"
        );
    }

    #[test]
    fn a_locked_out_address_is_refused_and_a_mapped_one_too() {
        let mut access = access(Config::default());
        for _ in 0..4 {
            assert!(!access.auth_failed(ip("::ffff:127.0.0.5"), 0));
        }
        assert!(access.auth_failed(ip("127.0.0.5"), 0), "the fifth failure");
        assert_eq!(access.admit(ip("127.0.0.5"), 1), Err(Refusal::LockedOut));
        assert_eq!(
            access.admit(ip("::ffff:127.0.0.5"), 1),
            Err(Refusal::LockedOut)
        );
        assert_eq!(access.admit(ip("127.0.0.6"), 1), Ok(()));
        assert_eq!(access.offenders(), 1);
    }

    #[test]
    fn the_accept_rate_limits_each_address() {
        let mut access = access(Config {
            max_accept_rate: 2,
            ..Config::default()
        });
        assert_eq!(access.admit(ip("127.0.0.2"), 0), Ok(()));
        assert_eq!(access.admit(ip("127.0.0.2"), 0), Ok(()));
        assert_eq!(access.admit(ip("127.0.0.2"), 0), Err(Refusal::RateLimited));
        assert_eq!(access.admit(ip("127.0.0.3"), 0), Ok(()));
        assert!(access.remembers());
        access.expire(10);
        assert!(!access.remembers());
    }
}
