//! Addresses as people type them on a command line: `7000`, `:7000`, `127.0.0.1:7000`,
//! `[::]:7000`, `localhost:7000`, `db.example:7000`.
//!
//! A port alone means that port on **loopback** (127.0.0.1): listening on every interface is
//! never a default, it is spelled `0.0.0.0:PORT` or `[::]:PORT`. A host name is resolved once,
//! when [`HostPort::resolve`] is called (at start), to every address it has; nothing is
//! resolved again later.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// A host (or none: loopback) and a port, parsed but not resolved.
///
/// ```
/// use wharf::HostPort;
///
/// let bare: HostPort = "7000".parse()?;
/// assert_eq!(bare.resolve()?, ["127.0.0.1:7000".parse()?]);
/// let v6: HostPort = "[::]:7000".parse()?;
/// assert_eq!(v6.resolve()?, ["[::]:7000".parse()?]);
/// assert!("localhost:99999".parse::<HostPort>().unwrap_err().to_string().contains("port out of range"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    host: Host,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

/// Why an address could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrError {
    text: String,
    why: String,
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid address '{}': {}; expected PORT (loopback), HOST:PORT, IP:PORT or \
             [IPv6]:PORT, e.g. 7000, localhost:7000, 0.0.0.0:7000 or [::]:7000",
            self.text, self.why
        )
    }
}

impl std::error::Error for AddrError {}

impl FromStr for HostPort {
    type Err = AddrError;

    fn from_str(text: &str) -> Result<HostPort, AddrError> {
        let error = |why: &str| AddrError {
            text: text.to_string(),
            why: why.to_string(),
        };
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(HostPort {
                host: Host::Ip(addr.ip()),
                port: addr.port(),
            });
        }
        // `7000`, `:7000`, `host:7000`, `[v6]:7000` (the last only if the port is bad).
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => (host, port),
            None => ("", text),
        };
        let port = parse_port(port).map_err(|why| error(&why))?;
        let host = if host.is_empty() {
            Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
        } else if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Host::Ip(IpAddr::from_str(inner).map_err(|_| error("not an IPv6 address in [ ]"))?)
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            if ip.is_ipv6() {
                return Err(error("write an IPv6 address in brackets: [::1]:7000"));
            }
            Host::Ip(ip)
        } else if valid_host_name(host) {
            Host::Name(host.to_string())
        } else {
            return Err(error("not an IP address or a host name"));
        };
        Ok(HostPort { host, port })
    }
}

impl HostPort {
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether it names a host to look up (rather than an IP address).
    pub fn is_name(&self) -> bool {
        matches!(self.host, Host::Name(_))
    }

    /// Every address it stands for: one for an IP address, each address of a host name
    /// (looked up now, with the system's resolver), without repeats, in the resolver's order.
    pub fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        let name = match &self.host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, self.port)]),
            Host::Name(name) => name,
        };
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for addr in (name.as_str(), self.port).to_socket_addrs()? {
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{name} has no address"),
            ));
        }
        Ok(addrs)
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{text}' is not a port number"));
    }
    match text.parse::<u32>() {
        Ok(port) if port <= u32::from(u16::MAX) => Ok(port as u16),
        _ => Err(format!("port out of range: {text} (0 to 65535)")),
    }
}

/// Letters, digits, `-` and `.`, as DNS names are written (RFC 1123), not empty.
fn valid_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(text: &str) -> Vec<SocketAddr> {
        text.parse::<HostPort>().unwrap().resolve().unwrap()
    }

    #[test]
    fn a_bare_port_means_loopback_and_every_interface_is_explicit() {
        assert_eq!(resolved("7000"), ["127.0.0.1:7000".parse().unwrap()]);
        assert_eq!(resolved(":7000"), ["127.0.0.1:7000".parse().unwrap()]);
        assert_eq!(resolved("0.0.0.0:7000"), ["0.0.0.0:7000".parse().unwrap()]);
        assert_eq!(resolved("[::]:7000"), ["[::]:7000".parse().unwrap()]);
        assert_eq!(resolved("[::1]:0"), ["[::1]:0".parse().unwrap()]);
    }

    #[test]
    fn localhost_resolves_to_loopback_addresses_only() {
        let addrs = resolved("localhost:7000");
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 7000),
            "{addrs:?}"
        );
    }

    #[test]
    fn bad_addresses_say_what_is_wrong() {
        let why = |text: &str| text.parse::<HostPort>().unwrap_err().to_string();
        assert!(
            why(":99999").contains("port out of range: 99999"),
            "{}",
            why(":99999")
        );
        assert!(why("localhost:http").contains("'http' is not a port number"));
        assert!(why("").contains("is not a port number"));
        assert!(why("::1:7000").contains("brackets"), "{}", why("::1:7000"));
        assert!(why("[nope]:7000").contains("IPv6"));
        assert!(why("a b:7000").contains("not an IP address or a host name"));
    }
}
