//! Opening client connections: a non-blocking socket with TCP_NODELAY, bound to the next
//! source address in turn when there are several, and a `connect` that does not wait.
//!
//! Several source addresses get past the ephemeral port range: a local port only has to be
//! unique per (source address, server address) pair, so each source address brings a whole
//! range of ports. On Linux every 127.x.y.z is a loopback address without any setup.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use crate::sys;

/// Most source addresses one `--src` range may name: more is surely a typo.
const MAX_SOURCES: u32 = 65_536;

/// Opens connections to one server address.
#[derive(Debug)]
pub struct Dialer {
    target: SocketAddr,
    sources: Vec<IpAddr>,
    next_source: usize,
}

impl Dialer {
    /// A dialer for `target`. With no `sources` the kernel picks the source address.
    pub fn new(target: SocketAddr, sources: Option<&Sources>) -> Dialer {
        Dialer {
            target,
            sources: sources.map(|sources| sources.0.clone()).unwrap_or_default(),
            next_source: 0,
        }
    }

    /// The server address.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Starts a connection. It completes (or fails) later: the poller reports the socket
    /// writable, and `TcpStream::take_error` tells which.
    pub fn dial(&mut self) -> io::Result<TcpStream> {
        let socket = Socket::new(
            Domain::for_address(self.target),
            Type::STREAM.nonblocking().cloexec(),
            Some(Protocol::TCP),
        )?;
        // One small message in flight at a time: Nagle's algorithm could only add delay.
        socket.set_nodelay(true)?;
        if let Some(&source) = self.sources.get(self.next_source) {
            self.next_source = (self.next_source + 1) % self.sources.len();
            if source.is_ipv4() {
                sys::bind_address_no_port(&socket)?;
            }
            socket.bind(&SocketAddr::new(source, 0).into())?;
        }
        match socket.connect(&self.target.into()) {
            Ok(()) => {}
            Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(error) => return Err(error),
        }
        Ok(TcpStream::from_std(socket.into()))
    }
}

/// Whether a non-blocking connect has completed: `Ok(false)` while it is still under way.
pub fn connected(stream: &TcpStream) -> io::Result<bool> {
    if let Some(error) = stream.take_error()? {
        return Err(error);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(error) => Err(error),
    }
}

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
