//! The source addresses of `--src`, as parsed from the command line: each brings its own
//! range of local ports (see `dial.rs`, which binds to them in turn).

use std::net::{IpAddr, Ipv4Addr};

/// Most source addresses one `--src` range may name: more is surely a typo.
const MAX_SOURCES: u32 = 65_536;

/// The source addresses of `--src`, in the order connections take them.
#[derive(Debug, Clone, Default)]
pub struct Sources(pub Vec<IpAddr>);

/// Parses `--src`: one address (`127.0.0.2`), a comma-separated list, or an IPv4 range
/// (`127.0.0.1-127.0.0.16`), or a mix (`127.0.0.1-127.0.0.8,127.0.1.1`).
pub fn parse_sources(text: &str) -> Result<Sources, String> {
    let mut sources = Vec::new();
    for part in text.split(',').map(str::trim) {
        match part.split_once('-') {
            None => sources.push(parse_ip(part)?),
            Some((first, last)) => {
                let first = parse_v4(first)?;
                let last = parse_v4(last)?;
                let (first, last) = (u32::from(first), u32::from(last));
                if first > last {
                    return Err(format!("source range '{part}' runs backwards"));
                }
                if last - first >= MAX_SOURCES {
                    return Err(format!(
                        "source range '{part}' names more than {MAX_SOURCES} addresses"
                    ));
                }
                sources.extend((first..=last).map(|ip| IpAddr::V4(Ipv4Addr::from(ip))));
            }
        }
    }
    Ok(Sources(sources))
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.parse().map_err(|_| {
        format!(
            "invalid source address '{text}': expected an IP address, a list \
             (127.0.0.1,127.0.0.2) or a range (127.0.0.1-127.0.0.16)"
        )
    })
}

fn parse_v4(text: &str) -> Result<Ipv4Addr, String> {
    text.trim().parse().map_err(|_| {
        format!("invalid source range end '{text}': ranges are of IPv4 addresses, e.g. 127.0.0.1-127.0.0.16")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_names_every_address_in_it() {
        let sources = parse_sources("127.0.0.1-127.0.0.16")
            .expect("valid range")
            .0;
        assert_eq!(sources.len(), 16);
        assert_eq!(sources[15], IpAddr::from([127, 0, 0, 16]));
    }

    #[test]
    fn lists_ranges_and_ipv6_mix() {
        let sources = parse_sources("127.0.0.1-127.0.0.2, ::1")
            .expect("valid list")
            .0;
        assert_eq!(sources.len(), 3);
        assert!(sources[2].is_ipv6());
    }

    #[test]
    fn backwards_and_malformed_ranges_are_refused() {
        assert!(parse_sources("127.0.0.9-127.0.0.1").is_err());
        assert!(parse_sources("localhost").is_err());
        assert!(parse_sources("::1-::2").is_err());
    }
}
