//! UDP echo (`wharf echo --udp ADDR`) on the same reactor as TCP.

mod common;

use common::*;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// The UDP address a server announced with `listening on ADDR (udp)`.
fn udp_addr(server: &Server) -> SocketAddr {
    let line = server.wait_for_log("(udp)", IO_TIMEOUT);
    parse_listening_line(&line)
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .0
}

#[test]
fn udp_echoes_random_payload_sizes_from_concurrent_senders_while_tcp_is_served() {
    let server = Server::start("echo", &["--listen", "127.0.0.1:0", "--udp", "127.0.0.1:0"]);
    let udp = udp_addr(&server);
    let senders: Vec<_> = (0..8)
        .map(|sender| {
            std::thread::spawn(move || {
                let mut rng = seeded_rng(&format!("udp sender {sender}"));
                let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a client socket");
                // UDP may drop on a busy host (eight 64 KiB datagrams at once overflow the
                // default socket buffers): a datagram without its echo within the wait is
                // sent again, a bounded number of times. The test still pins that every
                // echo that arrives is byte-exact and from the server, that every datagram
                // is echoed in the end, and that TCP is served meanwhile.
                socket
                    .set_read_timeout(Some(Duration::from_millis(500)))
                    .expect("read timeout");
                let mut reply = vec![0u8; 65_536];
                let mut previous: Vec<u8> = Vec::new();
                for i in 0..100 {
                    // Mostly small, sometimes up to the largest UDP payload, sometimes empty.
                    let len = match rng.u8(..) {
                        0..=9 => 0,
                        10..=29 => rng.usize(..=65_507),
                        _ => rng.usize(..=1500),
                    };
                    let payload = random_bytes(&mut rng, len);
                    let what = format!("sender {sender}, datagram {i}");
                    let mut tries = 0;
                    'send: loop {
                        tries += 1;
                        assert!(tries <= 20, "{what}: no echo after 20 tries");
                        socket.send_to(&payload, udp).expect("send a datagram");
                        loop {
                            let (n, from) = match socket.recv_from(&mut reply) {
                                Ok(received) => received,
                                Err(e) if is_timeout(&e) => continue 'send,
                                Err(e) => panic!("{what}: {e}"),
                            };
                            assert_eq!(from, udp);
                            // A late echo of the previous datagram, resent: skip it.
                            if reply[..n] == previous[..] && payload != previous {
                                continue;
                            }
                            assert_bytes_eq(&what, &payload, &reply[..n]);
                            break 'send;
                        }
                    }
                    previous = payload;
                }
            })
        })
        .collect();
    // TCP is served all along.
    let mut tcp = connect(server.addr());
    for i in 0..50 {
        let message = format!("tcp {i}\n");
        assert_eq!(round_trip(&mut tcp, message.as_bytes()), message.as_bytes());
    }
    for sender in senders {
        sender.join().expect("a UDP sender failed");
    }
}

#[test]
fn udp_address_in_use_is_a_clean_error() {
    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_to_exit(
        wharf_command("echo", &["--listen", "127.0.0.1:0", "--udp", &addr]),
        EXIT_TIMEOUT,
    );
    assert_no_panic(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(
        out.stderr.contains("already in use") && out.stderr.contains("ss -lunp"),
        "stderr:\n{}",
        out.stderr
    );
}

/// A receive that gave up waiting (the socket's read timeout).
fn is_timeout(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}
