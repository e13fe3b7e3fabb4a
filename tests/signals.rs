//! SIGINT and SIGTERM stop the server with exit status 0, also while a
//! client is connected.

mod common;

use common::*;
use std::io::Write;

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
    drop(client);
}

#[test]
fn sigterm_with_client_connected_exits_zero() {
    stops_cleanly_on(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sigint_with_client_connected_exits_zero() {
    stops_cleanly_on(libc::SIGINT, "SIGINT");
}
