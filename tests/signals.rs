//! SIGINT and SIGTERM stop the server with exit status 0, also while a client is connected
//! (after the drain timeout, see tests/drain.rs), and at once when no client is.

mod common;

use common::*;
use std::io::Write;
use std::time::{Duration, Instant};

fn stops_cleanly_on(sig: libc::c_int, name: &str) {
    let mut server = Server::start("echo", &["--listen", "127.0.0.1:0", "--drain-timeout", "1"]);

    // A client that is connected and has been served: the event loop (and
    // with it the signal handling) is running when the signal arrives.
    let mut client = connect(server.addr());
    client.write_all(b"ping").expect("write");
    assert_bytes_eq(
        "echo before signal",
        b"ping",
        &read_exactly(&mut client, 4, IO_TIMEOUT),
    );

    server.signal(sig);
    let status = server.wait_for_exit(EXIT_TIMEOUT);
    let stderr = server.stderr_text();
    assert_no_panic(&stderr);
    assert_eq!(
        status.code(),
        Some(0),
        "after {name} expected exit status 0, got {status}; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("received {name}")),
        "the signal was not logged; stderr:\n{stderr}"
    );
    // The client was closed by the server, not left hanging.
    assert_bytes_eq("after the exit", b"", &read_to_eof(&mut client, IO_TIMEOUT));
}

#[test]
fn sigterm_with_client_connected_exits_zero() {
    stops_cleanly_on(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sigint_with_client_connected_exits_zero() {
    stops_cleanly_on(libc::SIGINT, "SIGINT");
}

#[test]
fn signal_without_connections_exits_at_once() {
    // Nothing to drain: the exit does not wait for the (long) drain timeout.
    let mut server = Server::start(
        "line",
        &["--listen", "127.0.0.1:0", "--drain-timeout", "30"],
    );
    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_for_exit(EXIT_TIMEOUT);
    let took = signalled.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}; stderr:\n{}",
        server.stderr_text()
    );
    assert!(
        took < Duration::from_secs(10),
        "exit took {took:?} with no connection to drain"
    );
}
