//! Access control, decided right after accept and before a byte is read: an allow-list of
//! networks and a limit of connections per source address. Sans-IO: addresses in, verdicts
//! out.
//!
//! IPv4 clients of a dual-stack `[::]` listener arrive as IPv4-mapped IPv6 addresses
//! (`::ffff:a.b.c.d`); they are matched and counted as the IPv4 addresses they are.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its address is in none of the allowed networks.
    NotAllowed,
    /// Its address already has `max_conns_per_ip` connections.
    TooManyFromIp,
}

/// The allow-list and the per-address connection counts.
#[derive(Debug, Default)]
pub(crate) struct Access {
    allow: Vec<IpNet>,
    max_per_ip: usize,
    open: HashMap<IpAddr, u32>,
}

impl Access {
    /// `allow` empty: every address is allowed. `max_per_ip` 0: no per-address limit.
    pub(crate) fn new(allow: Vec<IpNet>, max_per_ip: usize) -> Access {
        Access {
            allow,
            max_per_ip,
            open: HashMap::new(),
        }
    }

    /// Whether per-address counts are kept (and [`Access::release`] must be called).
    pub(crate) fn counts(&self) -> bool {
        self.max_per_ip > 0
    }

    /// Decides on a new connection from `ip`; an admitted one is counted until released.
    pub(crate) fn admit(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        let ip = ip.to_canonical();
        if !self.allow.is_empty() && !self.allow.iter().any(|net| net.contains(&ip)) {
            return Err(Refusal::NotAllowed);
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

    /// A connection admitted from `ip` has closed.
    pub(crate) fn release(&mut self, ip: IpAddr) {
        let ip = ip.to_canonical();
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

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_allow_list_admits_only_its_networks_and_mapped_v4_matches_v4_rules() {
        let mut access = Access::new(
            vec!["127.0.0.0/30".parse().unwrap(), "fd00::/8".parse().unwrap()],
            0,
        );
        assert_eq!(access.admit(ip("127.0.0.2")), Ok(()));
        assert_eq!(access.admit(ip("127.0.0.4")), Err(Refusal::NotAllowed));
        assert_eq!(access.admit(ip("::ffff:127.0.0.1")), Ok(()));
        assert_eq!(
            access.admit(ip("::ffff:127.0.0.9")),
            Err(Refusal::NotAllowed)
        );
        assert_eq!(access.admit(ip("fd12::1")), Ok(()));
        assert_eq!(access.admit(ip("::1")), Err(Refusal::NotAllowed));
    }

    #[test]
    fn an_empty_allow_list_admits_everyone() {
        let mut access = Access::new(Vec::new(), 0);
        assert_eq!(access.admit(ip("203.0.113.7")), Ok(()));
        assert!(!access.counts());
    }

    #[test]
    fn per_ip_limit_counts_each_address_and_frees_on_release() {
        let mut access = Access::new(Vec::new(), 2);
        assert_eq!(access.admit(ip("127.0.0.2")), Ok(()));
        assert_eq!(
            access.admit(ip("::ffff:127.0.0.2")),
            Ok(()),
            "the same address, mapped"
        );
        assert_eq!(access.admit(ip("127.0.0.2")), Err(Refusal::TooManyFromIp));
        assert_eq!(access.admit(ip("127.0.0.3")), Ok(()));
        access.release(ip("127.0.0.2"));
        assert_eq!(access.admit(ip("127.0.0.2")), Ok(()));
        access.release(ip("127.0.0.3"));
        assert!(
            !access.open.contains_key(&ip("127.0.0.3")),
            "no entry for an idle address"
        );
    }
}
