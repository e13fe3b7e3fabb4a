//! The PROXY protocol (HAProxy's, versions 1 and 2), sans-IO: what the first bytes of a
//! connection from a trusted load balancer say about the client behind it. Parsed with the
//! `ppp` crate; this module decides what a result means for the reactor.
//!
//! On a listener that expects the header ([`crate::Reactor::expect_proxy_header`]), it is
//! required: the spec forbids guessing whether one is present, so a connection whose first
//! bytes are not a valid header is closed, whatever follows. Both versions are accepted on
//! the same listener (their first bytes tell them apart). A v2 `LOCAL` command (the
//! balancer's own health check) and a v1 `UNKNOWN` or v2 `UNSPEC`/Unix address family keep
//! the connection's own address, as the spec says. v2 TLVs are read past and ignored; a
//! CRC32C TLV is not verified (the spec asks that only of receivers that support it).
//!
//! Public so that it can be fuzzed (fuzz/) and used by an embedder that reads headers
//! itself; the reactor does all of this for a listener given to
//! [`crate::Reactor::expect_proxy_header`].
//!
//! ```
//! use wharf::proxy::{examine, Header};
//!
//! let input = b"PROXY TCP4 198.51.100.7 10.0.0.1 40000 7000\r\nhello\n";
//! let Header::Read { len, client } = examine(input) else { panic!() };
//! assert_eq!(&input[len..], b"hello\n");
//! assert_eq!(client, Some("198.51.100.7:40000".parse()?));
//! assert_eq!(examine(&input[..10]), Header::More);
//! # Ok::<(), std::net::AddrParseError>(())
//! ```

use std::net::{IpAddr, SocketAddr};

use ppp::{v1, v2, HeaderResult, PartialResult};

/// The longest header read: a v1 header is at most 107 bytes; a v2 header is 16 bytes plus
/// its addresses and TLVs, which HAProxy keeps to a few hundred. A longer one is refused.
pub const MAX_HEADER: usize = 4096;

/// What the first bytes of a connection came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Header {
    /// Not enough bytes yet to tell.
    More,
    /// A valid header of `len` bytes; `client` is the address it carries, or `None` to
    /// keep the connection's own (LOCAL, UNKNOWN, an address family without one).
    Read {
        /// The header's length: what follows it is the client's.
        len: usize,
        /// The client's address, if the header carries one to use.
        client: Option<SocketAddr>,
    },
    /// Not a valid header: why.
    Invalid(String),
}

/// The longest v1 header, CRLF included.
const MAX_V1_HEADER: usize = 107;

/// Reads the header at the start of `input`, every byte received so far: `More` until it
/// is whole, `Invalid` as soon as it cannot become a header (or passes [`MAX_HEADER`]).
pub fn examine(input: &[u8]) -> Header {
    // A v1 header is a line: read to its CRLF (within 107 bytes) before parsing, since the
    // parser can take a line cut short for a bad one ("... 40000 " for a bad port).
    let v1_line = input.starts_with(b"PROXY ") || b"PROXY ".starts_with(input);
    let line_ends = memchr::memmem::find(input, b"\r\n").is_some();
    if v1_line && !line_ends && input.len() < MAX_V1_HEADER {
        return Header::More;
    }
    let result = HeaderResult::parse(input);
    if result.is_incomplete() {
        return match input.len() {
            // A whole v1 line that still lacks a field ("PROXY TCP4\r\n") will not get it.
            _ if v1_line && line_ends => Header::Invalid("PROXY v1: a field is missing".into()),
            n if n >= MAX_HEADER => Header::Invalid(format!("no header in the first {n} bytes")),
            _ => Header::More,
        };
    }
    let header = read(result);
    match header {
        Header::Read { len, .. } if len > MAX_HEADER => {
            Header::Invalid(format!("a {len}-byte header, over {MAX_HEADER}"))
        }
        header => header,
    }
}

/// What a complete parse says.
fn read(result: HeaderResult<'_>) -> Header {
    match result {
        HeaderResult::V1(Ok(header)) => {
            let client = match header.addresses {
                v1::Addresses::Tcp4(ip) => Some((ip.source_address.into(), ip.source_port)),
                v1::Addresses::Tcp6(ip) => Some((ip.source_address.into(), ip.source_port)),
                v1::Addresses::Unknown => None,
            };
            Header::Read {
                len: header.header.len(),
                client: client.map(|(ip, port): (IpAddr, u16)| SocketAddr::new(ip, port)),
            }
        }
        HeaderResult::V2(Ok(header)) => {
            let client = match (header.command, header.addresses) {
                (v2::Command::Local, _) => None,
                (v2::Command::Proxy, v2::Addresses::IPv4(ip)) => {
                    Some(SocketAddr::new(ip.source_address.into(), ip.source_port))
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(ip)) => {
                    Some(SocketAddr::new(ip.source_address.into(), ip.source_port))
                }
                (v2::Command::Proxy, _) => None,
            };
            Header::Read {
                len: header.header.len(),
                client,
            }
        }
        HeaderResult::V1(Err(error)) => Header::Invalid(format!("PROXY v1: {error}")),
        HeaderResult::V2(Err(error)) => Header::Invalid(format!("PROXY v2: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 header: `command` (0x20 LOCAL, 0x21 PROXY), TCP over IPv4, 203.0.113.7:5555 to
    /// 10.0.0.1:7000, with `tlvs` after the addresses.
    fn v2(command: u8, tlvs: &[u8]) -> Vec<u8> {
        let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        header.push(command);
        header.push(0x11);
        header.extend_from_slice(&(12 + tlvs.len() as u16).to_be_bytes());
        header.extend_from_slice(&[203, 0, 113, 7, 10, 0, 0, 1]);
        header.extend_from_slice(&5555u16.to_be_bytes());
        header.extend_from_slice(&7000u16.to_be_bytes());
        header.extend_from_slice(tlvs);
        header
    }

    #[test]
    fn a_v1_header_gives_the_client_and_its_length() {
        let input = b"PROXY TCP4 198.51.100.2 10.0.0.1 40000 7000\r\nhello\n";
        let len = input.len() - b"hello\n".len();
        let client = Some("198.51.100.2:40000".parse().unwrap());
        assert_eq!(examine(input), Header::Read { len, client });
        let input = b"PROXY TCP6 2001:db8::9 2001:db8::1 40000 7000\r\n";
        let client = Some("[2001:db8::9]:40000".parse().unwrap());
        let len = input.len();
        assert_eq!(examine(input), Header::Read { len, client });
        let unknown = b"PROXY UNKNOWN\r\n";
        let (len, client) = (unknown.len(), None);
        assert_eq!(examine(unknown), Header::Read { len, client });
    }

    #[test]
    fn a_v2_header_gives_the_client_and_local_keeps_the_connection_s_own() {
        let proxy = v2(0x21, &[0x04, 0x00, 0x01, 0x00]); // a NOOP TLV, read past
        let client = Some("203.0.113.7:5555".parse().unwrap());
        let len = proxy.len();
        let mut input = proxy.clone();
        input.extend_from_slice(b"\x16\x03\x01"); // what follows is not the header's
        assert_eq!(examine(&input), Header::Read { len, client });
        let local = v2(0x20, &[]);
        let len = local.len();
        assert_eq!(examine(&local), Header::Read { len, client: None });
    }

    #[test]
    fn a_header_split_anywhere_waits_for_the_rest() {
        let v1 = b"PROXY TCP4 198.51.100.2 10.0.0.1 40000 7000\r\n".to_vec();
        for header in [v1, v2(0x21, &[0x04, 0x00, 0x01, 0x00])] {
            for cut in 0..header.len() {
                assert_eq!(examine(&header[..cut]), Header::More, "cut at {cut}");
            }
        }
    }

    use proptest::prelude::*;

    /// A header (v1 or v2, IPv4 or IPv6) carrying `client`.
    fn header_for(client: SocketAddr, v2_form: bool) -> Vec<u8> {
        match (v2_form, client) {
            (false, SocketAddr::V4(c)) => {
                format!("PROXY TCP4 {} 10.0.0.1 {} 7000\r\n", c.ip(), c.port()).into_bytes()
            }
            (false, SocketAddr::V6(c)) => {
                format!("PROXY TCP6 {} ::1 {} 7000\r\n", c.ip(), c.port()).into_bytes()
            }
            (true, SocketAddr::V4(c)) => {
                let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
                h.extend_from_slice(&c.ip().octets());
                h.extend_from_slice(&[10, 0, 0, 1]);
                h.extend_from_slice(&c.port().to_be_bytes());
                h.extend_from_slice(&7000u16.to_be_bytes());
                h
            }
            (true, SocketAddr::V6(c)) => {
                let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
                h.extend_from_slice(&c.ip().octets());
                h.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
                h.extend_from_slice(&c.port().to_be_bytes());
                h.extend_from_slice(&7000u16.to_be_bytes());
                h
            }
        }
    }

    fn client() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        ]
    }

    proptest! {
        /// Whatever arrives: no panic, a header never longer than what arrived or the cap,
        /// and "more" only while under the cap.
        #[test]
        fn any_bytes_give_a_bounded_answer(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            match examine(&input) {
                Header::Read { len, .. } => prop_assert!(len <= input.len() && len <= MAX_HEADER),
                Header::More => prop_assert!(input.len() < MAX_HEADER),
                Header::Invalid(_) => {}
            }
        }

        /// A header for any client, in either version, followed by anything: every prefix
        /// short of it waits, and from its end on it reads as that client, whatever follows.
        #[test]
        fn a_header_reads_the_same_however_it_is_cut(
            client in client(),
            v2_form in any::<bool>(),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let header = header_for(client, v2_form);
            let input = [header.as_slice(), &tail].concat();
            for cut in 0..header.len() {
                prop_assert_eq!(examine(&input[..cut]), Header::More, "cut at {}", cut);
            }
            let read = Header::Read { len: header.len(), client: Some(client) };
            for end in header.len()..=input.len() {
                prop_assert_eq!(&examine(&input[..end]), &read);
            }
        }
    }

    #[test]
    fn anything_else_is_invalid_and_nothing_is_guessed() {
        for input in [
            b"GET / HTTP/1.1\r\n\r\n".as_slice(),
            b"hello\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"PROXY TCP4 999.1.1.1 10.0.0.1 1 2\r\n",
            b"PROXY TCP9 1.1.1.1 10.0.0.1 1 2\r\n",
        ] {
            assert!(
                matches!(examine(input), Header::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let mut bad_version = v2(0x21, &[]);
        bad_version[12] = 0x31;
        assert!(matches!(examine(&bad_version), Header::Invalid(_)));
        // A whole v1 line missing a field is refused at once, not left to time out.
        assert!(matches!(examine(b"PROXY TCP4\r\n"), Header::Invalid(_)));
        let short = b"PROXY TCP4 198.51.100.2 10.0.0.1 40000\r\n";
        assert!(matches!(examine(short), Header::Invalid(_)));
        // However it arrives, a header over the limit is refused.
        let tlvs = [[0x04u8, 0x0f, 0xf0].as_slice(), &[0; 0x0ff0]].concat();
        assert!(matches!(examine(&v2(0x21, &tlvs)), Header::Invalid(_)));
    }
}
