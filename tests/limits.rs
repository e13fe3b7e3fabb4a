//! `--max-conns N`: each connection over the limit is accepted, sent one error line and
//! closed; the connections being served are not disturbed, a freed slot is served again, and
//! a burst of refusals is logged at most once a second.

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Instant;

const REFUSED_LOG: &str = "refused: connection limit reached";

fn refusal_line(max: usize) -> Vec<u8> {
    format!("ERR server full (max {max} connections)\n").into_bytes()
}

/// A connection that has been served once: the server counts it as active from then on.
fn served_client(addr: SocketAddr, tag: &str) -> std::net::TcpStream {
    let mut client = connect(addr);
    assert_bytes_eq(
        tag,
        tag.as_bytes(),
        &round_trip(&mut client, tag.as_bytes()),
    );
    client
}

/// Connects without sending anything, and returns everything the server sends before EOF.
fn refused_reply(addr: SocketAddr) -> Vec<u8> {
    let mut client = connect(addr);
    read_to_eof(&mut client, IO_TIMEOUT)
}

#[test]
fn max_conns_refuses_the_extra_connection_with_an_error_line() {
    let server = Server::start("echo", &["--listen", "127.0.0.1:0", "--max-conns", "2"]);
    let mut first = served_client(server.addr(), "first");
    let mut second = served_client(server.addr(), "second");

    // The third connection is accepted (connect succeeds), told why, and closed.
    let got = refused_reply(server.addr());
    assert_bytes_eq("the connection over the limit", &refusal_line(2), &got);

    // The two being served did not notice.
    assert_eq!(round_trip(&mut first, b"still one"), b"still one");
    assert_eq!(round_trip(&mut second, b"still two"), b"still two");
    let line = server.wait_for_log(REFUSED_LOG, IO_TIMEOUT);
    assert!(line.contains("WARN"), "refusal logged as {line:?}");
    assert_no_panic(&server.stderr_text());
}

#[test]
fn max_conns_applies_in_line_mode_too() {
    let server = Server::start("line", &["--listen", "127.0.0.1:0", "--max-conns", "1"]);
    let mut only = served_client(server.addr(), "only\n");
    assert_bytes_eq(
        "over the limit",
        &refusal_line(1),
        &refused_reply(server.addr()),
    );
    assert_eq!(round_trip(&mut only, b"again\n"), b"again\n");
}

#[test]
fn max_conns_serves_a_new_connection_once_one_closes() {
    let server = Server::start("echo", &["--listen", "127.0.0.1:0", "--max-conns", "2"]);
    let mut leaving = served_client(server.addr(), "leaving");
    let mut staying = served_client(server.addr(), "staying");
    assert_bytes_eq("full", &refusal_line(2), &refused_reply(server.addr()));

    // One of the two leaves. Its EOF comes from the server closing the socket, which is
    // when the server stops counting it: the very next connection must be served.
    leaving.shutdown(Shutdown::Write).expect("shutdown(Write)");
    assert_bytes_eq("leaving", b"", &read_to_eof(&mut leaving, IO_TIMEOUT));
    drop(leaving);

    let mut newcomer = served_client(server.addr(), "newcomer");
    assert_eq!(round_trip(&mut staying, b"staying"), b"staying");
    // And the limit holds again with the newcomer in.
    assert_bytes_eq(
        "full again",
        &refusal_line(2),
        &refused_reply(server.addr()),
    );
    assert_eq!(round_trip(&mut newcomer, b"newcomer"), b"newcomer");
}

#[test]
fn max_conns_refusals_are_logged_at_most_once_per_second() {
    let server = Server::start("echo", &["--listen", "127.0.0.1:0", "--max-conns", "1"]);
    let mut only = served_client(server.addr(), "only");

    // A burst of 50 connections over the limit; each gets its refusal line.
    const BURST: usize = 50;
    let started = Instant::now();
    let mut clients: Vec<_> = (0..BURST).map(|_| connect(server.addr())).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        let mut reply = Vec::new();
        match client.read_to_end(&mut reply) {
            Ok(_) => assert_bytes_eq(&format!("burst client {i}"), &refusal_line(1), &reply),
            Err(e) => panic!("burst client {i}: {e} after {}", preview(&reply)),
        }
    }
    let elapsed = started.elapsed();

    // All 50 are counted, but only one line per second (at most) was logged for them.
    let stats = server.wait_for_stats(IO_TIMEOUT, "rejected=50", |l| stat(l, "rejected") >= 50);
    assert_eq!(stat(&stats, "rejected"), BURST as u64, "{stats}");
    assert_eq!(stat(&stats, "active"), 1, "{stats}");
    let lines = server.log_lines(REFUSED_LOG);
    let allowed = elapsed.as_secs() as usize + 1;
    assert!(
        !lines.is_empty() && lines.len() <= allowed,
        "{} refusal log lines for {BURST} refusals in {elapsed:?} (at most {allowed} allowed):\n{}",
        lines.len(),
        lines.join("\n")
    );
    // The first line says how many refusals it stands for.
    assert!(
        lines[0].contains("refused in the last second"),
        "{}",
        lines[0]
    );

    assert_eq!(round_trip(&mut only, b"served"), b"served");
}

#[test]
fn a_refused_client_that_writes_first_sees_the_line_or_a_reset() {
    // A client that sends before reading may have its refusal line destroyed by a reset
    // (the server closes with the client's bytes unread); it must never be served.
    let server = Server::start("echo", &["--listen", "127.0.0.1:0", "--max-conns", "1"]);
    let mut only = served_client(server.addr(), "only");
    for i in 0..10 {
        let mut client = connect(server.addr());
        let _ = client.write_all(b"hello?"); // may already be reset
        let mut reply = Vec::new();
        match client.read_to_end(&mut reply) {
            Ok(_) => assert_bytes_eq(&format!("refused client {i}"), &refusal_line(1), &reply),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                assert!(
                    refusal_line(1).starts_with(&reply),
                    "refused client {i} got {} before the reset",
                    preview(&reply)
                )
            }
            Err(e) => panic!("refused client {i}: {e}"),
        }
    }
    assert_eq!(round_trip(&mut only, b"served"), b"served");
}

/// Issue 16: 0 turns a limit flag off, for --max-conns too (the open-files limit remains).
#[test]
fn max_conns_0_means_no_limit() {
    let server = Server::start("echo", &["--listen", "127.0.0.1:0", "--max-conns", "0"]);
    let mut clients: Vec<_> = (0..20)
        .map(|i| served_client(server.addr(), &format!("client {i}")))
        .collect();
    for (i, client) in clients.iter_mut().enumerate() {
        let message = format!("still here {i}\n");
        assert_eq!(round_trip(client, message.as_bytes()), message.as_bytes());
    }
    assert!(
        server
            .stderr_text()
            .contains("--max-conns 0: no connection limit"),
        "{}",
        server.stderr_text()
    );
}

/// Issue 16: --max-conns beyond what the open-files limit allows is said once at start, with
/// the numbers and the fix (no hard limit reaches 10^8: Linux caps it at fs.nr_open).
#[test]
fn max_conns_over_the_open_files_limit_is_warned_about_at_start() {
    let server = Server::start(
        "echo",
        &["--listen", "127.0.0.1:0", "--max-conns", "100000000"],
    );
    let stderr = server.stderr_text();
    assert!(
        stderr.contains("--max-conns 100000000 needs about")
            && stderr.contains("but the limit is")
            && stderr.contains("LimitNOFILE"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("needs about").count(), 1, "{stderr}");
}

/// Issue 16: two of wharf's own listeners on one address is a clear error before anything is
/// bound, not "address in use" sending the operator after another server.
#[test]
fn two_listeners_on_one_address_are_refused_naming_both() {
    for (first, second) in [
        ("127.0.0.1:17", "127.0.0.1:17"),
        ("0.0.0.0:17", "127.0.0.1:17"),
    ] {
        let out = run_to_exit(
            wharf_command("echo", &["--listen", first, "--listen", second]),
            EXIT_TIMEOUT,
        );
        assert_no_panic(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "stderr:\n{}", out.stderr);
        assert!(
            out.stderr.contains(&format!(
                "--listen {first} and --listen {second} are the same address"
            )),
            "stderr:\n{}",
            out.stderr
        );
    }
}
