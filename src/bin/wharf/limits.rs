//! Limits an operator should hear about at start rather than discover under load: the
//! open-files limit against `--max-conns`, and two of wharf's own listeners on one address.

use std::net::SocketAddr;

use crate::cli::{ServerArgs, Workers};
use crate::sys;

/// Descriptors the server holds besides connections: stdio, the poller, its waker, the
/// spare descriptor kept for refusing connections when out of them, signal plumbing, and
/// room for the certificate files a TLS reload opens.
const SPARE_DESCRIPTORS: u64 = 16;

/// Raises the soft open-files limit to the hard one (no privilege needed; workers inherit
/// it), and warns once, with the numbers and the fix, when `--max-conns` cannot be reached
/// under it. `--max-conns 0` means no limit of wharf's own: then the open-files limit is
/// the limit, and the log says so.
pub fn check_open_files(args: &ServerArgs) {
    let (soft, hard) = match sys::raise_open_files_limit() {
        Ok(limits) => limits,
        Err(error) => {
            log::warn!("cannot read or raise the open-files limit (RLIMIT_NOFILE): {error}");
            return;
        }
    };
    let listeners = args.listeners().len() as u64;
    let needed = (args.max_conns as u64)
        .saturating_add(listeners)
        .saturating_add(SPARE_DESCRIPTORS);
    let per = if args.workers == Workers::Count(1) {
        ""
    } else {
        " per worker"
    };
    if args.max_conns == 0 {
        log::info!(
            "--max-conns 0: no connection limit of wharf's own; the open-files limit ({soft}) \
             bounds connections{per}, and past it they are refused with \
             'ERR server full (out of file descriptors)'"
        );
    } else if needed > soft {
        log::warn!(
            "--max-conns {} needs about {needed} open files{per} (connections, {listeners} \
             listeners and {SPARE_DESCRIPTORS} spare), but the limit is {soft} (hard limit \
             {hard}): past it connections are refused with 'ERR server full (out of file \
             descriptors)'. Raise the hard limit (`ulimit -Hn`, systemd's LimitNOFILE=, \
             /etc/security/limits.conf) or lower --max-conns to {}",
            args.max_conns,
            soft.saturating_sub(listeners + SPARE_DESCRIPTORS)
        );
    }
}

/// Says when a listener beyond loopback gets the default per-address limit.
pub fn note_exposed_defaults(args: &ServerArgs) {
    if args.max_conns_per_ip_defaulted() && args.max_conns_per_ip() > 0 {
        log::info!(
            "listening beyond loopback: at most {} connections per source address by default \
             (--max-conns-per-ip N to change it, 0 for no limit)",
            args.max_conns_per_ip()
        );
    }
}

/// Refuses two of wharf's own TCP listeners on one address (the second would fail with
/// "address in use" and send the operator looking for another server). A wildcard address
/// (`0.0.0.0`, `[::]`) overlaps every address of its port; port 0 never clashes.
pub fn check_listener_overlap(args: &ServerArgs) -> Result<(), String> {
    let all: Vec<(&str, SocketAddr)> = (args.listeners().iter())
        .map(|point| (point.kind.flag(), point.addr))
        .collect();
    for (i, (first_flag, first)) in all.iter().enumerate() {
        for (second_flag, second) in &all[i + 1..] {
            if overlap(*first, *second) {
                return Err(format!(
                    "{first_flag} {first} and {second_flag} {second} are the same address: \
                     wharf cannot listen there twice; give each listener a port of its own"
                ));
            }
        }
    }
    Ok(())
}

/// Whether listening on both would clash: the same port, and the same IP or a wildcard
/// that covers the other (`[::]` covers IPv4 too unless IPv6-only, so it is taken to).
fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    let covers = |wide: SocketAddr, other: SocketAddr| {
        wide.ip().is_unspecified() && (wide.is_ipv6() || other.is_ipv4())
    };
    a.ip() == b.ip() || covers(a, b) || covers(b, a)
}

#[cfg(test)]
mod tests {
    use super::overlap;

    #[test]
    fn listeners_overlap_on_the_same_port_and_address_or_a_covering_wildcard() {
        let clash = |a: &str, b: &str| overlap(a.parse().unwrap(), b.parse().unwrap());
        assert!(clash("127.0.0.1:7000", "127.0.0.1:7000"));
        assert!(clash("0.0.0.0:7000", "127.0.0.1:7000"));
        assert!(clash("[::]:7000", "127.0.0.1:7000"));
        assert!(clash("[::1]:7000", "[::]:7000"));
        assert!(!clash("127.0.0.1:7000", "127.0.0.1:7001"));
        assert!(!clash("127.0.0.1:7000", "127.0.0.2:7000"));
        assert!(!clash("0.0.0.0:7000", "[::1]:7000"));
        assert!(!clash("127.0.0.1:0", "127.0.0.1:0"));
    }
}
