//! Running out of file descriptors: the server sheds what it cannot hold, keeps serving the
//! connections it has, does not spin, and recovers when descriptors free up.

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

const REFUSAL: &[u8] = b"ERR server full (out of file descriptors)\n";

#[test]
fn fd_exhaustion_sheds_new_connections_without_spinning_and_recovers() {
    // 64 descriptors: about 55 connections after the server's own (stdio, poller, waker,
    // listener, spare).
    let server = Server::start_with_nofile("echo", &["--listen", "127.0.0.1:0"], 64);
    let mut existing = connect(server.addr());
    assert_eq!(round_trip(&mut existing, b"before"), b"before");

    // The flood: 200 connections, each says one byte. Each is either served (the byte comes
    // back) or refused with one line and closed.
    let mut flood: Vec<_> = (0..200).map(|_| connect(server.addr())).collect();
    let (mut served, mut refused) = (0, 0);
    for (i, client) in flood.iter_mut().enumerate() {
        client.write_all(b"x").ok(); // a refused connection may already be reset
        let mut first = [0u8; 1];
        match client.read(&mut first) {
            Ok(1) if first[0] == b'x' => served += 1,
            Ok(1) => {
                let mut rest = Vec::new();
                let _ = client.read_to_end(&mut rest);
                assert_bytes_eq(
                    &format!("flood client {i}"),
                    REFUSAL,
                    &[&first[..], &rest].concat(),
                );
                refused += 1;
            }
            Ok(_) => panic!("flood client {i}: closed without a refusal line"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => refused += 1,
            Err(e) => panic!("flood client {i}: {e}"),
        }
    }
    assert!(
        served > 20 && refused > 100,
        "served {served}, refused {refused}"
    );

    // Saturated: the existing client is still served, and the server does not spin.
    assert_eq!(round_trip(&mut existing, b"during"), b"during");
    let cpu_before = cpu_time(server.pid());
    let window = Duration::from_secs(2);
    std::thread::sleep(window); // a measuring window, not a synchronisation
    let cpu = cpu_time(server.pid()) - cpu_before;
    assert!(
        cpu < Duration::from_millis(200),
        "the server used {cpu:?} of CPU in {window:?} while saturated"
    );
    let stderr = server.stderr_text();
    assert!(
        stderr.contains("refused: out of file descriptors"),
        "stderr:\n{stderr}"
    );

    // The flood leaves: new clients are served again.
    drop(flood);
    wait_until(Duration::from_secs(20), "a new client to be served", || {
        let mut client = connect(server.addr());
        client.write_all(b"after").is_ok() && {
            let mut reply = [0u8; 5];
            client.read_exact(&mut reply).is_ok() && &reply == b"after"
        }
    });
    assert_eq!(round_trip(&mut existing, b"still"), b"still");
}

#[test]
fn at_the_descriptor_limit_with_nothing_waiting_the_server_stays_quiet() {
    // Linux reserves a descriptor before looking at the accept queue, so accept fails with
    // EMFILE even when nothing waits. That must not turn into a retry every second.
    let server = Server::start_with_nofile("echo", &["--listen", "127.0.0.1:0"], 32);
    let mut held = Vec::new();
    loop {
        let mut client = connect(server.addr());
        client.write_all(b"x").ok();
        let mut first = [0u8; 1];
        match client.read(&mut first) {
            Ok(1) if first[0] == b'x' => held.push(client),
            _ => break, // refused: the server is at its limit
        }
        assert!(held.len() < 100, "the descriptor limit was never reached");
    }
    let failures = || server.log_lines("accept failed").len();
    let before = failures();
    std::thread::sleep(Duration::from_secs(3)); // a measuring window, not a synchronisation
    let after = failures();
    assert!(
        after <= before + 1,
        "accept was retried while nothing waited: {before} -> {after} failure lines in 3 s"
    );
    drop(held);
}

/// Whatever a client got before its connection ended: bytes, or nothing (an end or a reset).
fn answer_of(client: &mut std::net::TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    match client.read_to_end(&mut got) {
        Ok(_) => got,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => got,
        Err(e) => panic!("reading the answer: {e}"),
    }
}

#[test]
fn out_of_descriptors_an_address_outside_the_allow_list_still_learns_nothing() {
    let server = Server::start_with_nofile(
        "echo",
        &["--listen", "127.0.0.1:0", "--allow", "127.0.0.2/32"],
        32,
    );
    // Allowed clients take every descriptor the server has.
    let mut held = Vec::new();
    loop {
        let mut client = connect_from("127.0.0.2", server.addr());
        client.write_all(b"x").ok();
        let mut first = [0u8; 1];
        match client.read(&mut first) {
            Ok(1) if first[0] == b'x' => held.push(client),
            _ => break, // shed: the server is out of descriptors
        }
        assert!(held.len() < 100, "the descriptor limit was never reached");
    }
    // At the limit, an allowed client is told why; one outside the list is only closed.
    let mut allowed = connect_from("127.0.0.2", server.addr());
    assert_bytes_eq("an allowed client", REFUSAL, &answer_of(&mut allowed));
    let mut outsider = connect_from("127.0.0.1", server.addr());
    assert_bytes_eq(
        "a client outside the allow-list",
        b"",
        &answer_of(&mut outsider),
    );
    // Logged after the close: wait for the line, do not race it.
    server.wait_for_log("refused: not in the allow-list", IO_TIMEOUT);
    drop(held);
}
