//! Access control right after accept: `--allow` networks and `--max-conns-per-ip`. Several
//! 127.0.0.x source addresses stand for different hosts.

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Whether the server echoes a round trip on `stream` (false: it closed it at once).
fn served(stream: &mut TcpStream) -> bool {
    if stream.write_all(b"ping").is_err() {
        return false;
    }
    let mut reply = [0u8; 4];
    match stream.read(&mut reply) {
        Ok(0) => false,
        Ok(n) => {
            stream
                .read_exact(&mut reply[n..])
                .expect("the rest of the echo");
            assert_eq!(&reply, b"ping");
            true
        }
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => false,
        Err(e) => panic!("read: {e}"),
    }
}

#[test]
fn allow_list_closes_other_addresses_at_once() {
    let server = Server::start(
        "echo",
        &[
            "--listen",
            "127.0.0.1:0",
            "--allow",
            "127.0.0.2/32",
            "--allow",
            "127.0.0.8/30",
        ],
    );
    assert!(served(&mut connect_from("127.0.0.2", server.addr())));
    assert!(served(&mut connect_from("127.0.0.9", server.addr())));
    assert!(!served(&mut connect_from("127.0.0.1", server.addr())));
    assert!(!served(&mut connect_from("127.0.0.3", server.addr())));
    let line = server.request_stats();
    assert_eq!(stat(&line, "refused_not_allowed"), 2, "{line}");
    server.wait_for_log("refused: not in the allow-list", IO_TIMEOUT);
}

#[test]
fn allow_matches_v4_mapped_peers_on_a_dual_stack_listener() {
    if !ipv6_available() {
        return eprintln!("skipped: no IPv6 loopback");
    }
    let server = Server::start("echo", &["--listen", "[::]:0", "--allow", "127.0.0.0/8"]);
    let port = server.addr().port();
    // An IPv4 client arrives as ::ffff:127.0.0.1 and matches the IPv4 rule; ::1 does not.
    assert!(served(&mut connect_from(
        "127.0.0.1",
        SocketAddr::from(([127, 0, 0, 1], port))
    )));
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    assert!(!served(&mut connect_from("::1", v6)));
}

#[test]
fn max_conns_per_ip_refuses_the_extra_connection_from_one_address() {
    let server = Server::start(
        "echo",
        &["--listen", "127.0.0.1:0", "--max-conns-per-ip", "2"],
    );
    let mut first = connect_from("127.0.0.2", server.addr());
    let mut second = connect_from("127.0.0.2", server.addr());
    assert!(served(&mut first) && served(&mut second));
    assert!(
        !served(&mut connect_from("127.0.0.2", server.addr())),
        "a third from one host"
    );
    assert!(
        served(&mut connect_from("127.0.0.3", server.addr())),
        "another host"
    );
    // Once one closes, that host may connect again.
    drop(first);
    wait_until(Duration::from_secs(20), "a free slot for 127.0.0.2", || {
        served(&mut connect_from("127.0.0.2", server.addr()))
    });
    let line = server.request_stats();
    assert!(stat(&line, "refused_per_ip") >= 1, "{line}");
}

/// Issue 16: a server listening beyond loopback gets a per-address limit by default (256),
/// and says so; an explicit --max-conns-per-ip wins, and loopback-only servers have none.
#[test]
fn listening_beyond_loopback_limits_connections_per_address_by_default() {
    let server = Server::start("echo", &["--listen", "0.0.0.0:0"]);
    assert!(
        server
            .stderr_text()
            .contains("at most 256 connections per source address by default"),
        "{}",
        server.stderr_text()
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], server.addr().port()));
    let mut held: Vec<TcpStream> = (0..256).map(|_| connect_from("127.0.0.4", addr)).collect();
    assert!(served(&mut held[255]), "the 256th from one host");
    assert!(
        !served(&mut connect_from("127.0.0.4", addr)),
        "the 257th from one host"
    );
    assert!(served(&mut connect_from("127.0.0.5", addr)), "another host");

    let loopback = Server::start("echo", &["--listen", "127.0.0.1:0"]);
    assert!(
        !loopback
            .stderr_text()
            .contains("per source address by default"),
        "{}",
        loopback.stderr_text()
    );
}
