//! Counters: `--stats-interval SECS` logs a `stats:` line periodically, SIGUSR1 logs one at
//! once, and the counters in it add up to what the clients did.

mod common;

use common::*;
use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

const STATS: &str = "stats: accepted=";

/// Three echo connections that each send 5 bytes, half-close and read the echo to EOF.
fn three_echo_connections(addr: SocketAddr) {
    for i in 0..3 {
        let message = format!("msg-{i}");
        let got = send_and_half_close(addr, message.as_bytes());
        assert_bytes_eq(&format!("connection {i}"), message.as_bytes(), &got);
    }
}

#[test]
fn stats_interval_logs_a_line_periodically() {
    let server = Server::start(
        "echo",
        &["--listen", "127.0.0.1:0", "--stats-interval", "1"],
    );
    three_echo_connections(server.addr());

    // Two periodic lines that count the three connections (the first periodic line may
    // predate them).
    wait_until(
        Duration::from_secs(15),
        "two periodic stats lines show accepted=3",
        || {
            server
                .log_lines(STATS)
                .iter()
                .filter(|line| stat(line, "accepted") == 3)
                .count()
                >= 2
        },
    );
    let lines = server.log_lines(STATS);
    let last = lines.last().expect("a stats line");
    assert_eq!(stat(last, "closed_by_peer"), 3, "{last}");
    assert_eq!(stat(last, "active"), 0, "{last}");
    // Counters only grow, line after line.
    for pair in lines.windows(2) {
        for field in ["accepted", "closed", "bytes_in", "bytes_out"] {
            assert!(
                stat(&pair[0], field) <= stat(&pair[1], field),
                "{field} went down:\n{}\n{}",
                pair[0],
                pair[1]
            );
        }
    }
}

#[test]
fn stats_interval_zero_logs_nothing_until_sigusr1() {
    let server = Server::start(
        "echo",
        &["--listen", "127.0.0.1:0", "--stats-interval", "0"],
    );
    let mut client = connect(server.addr());
    assert_eq!(round_trip(&mut client, b"ping"), b"ping");
    // A short measuring window, longer than the 1 s interval of the test above.
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        server.log_lines("stats: ").is_empty(),
        "stats logged without being asked:\n{}",
        server.stderr_text()
    );
    let line = server.request_stats();
    assert!(line.contains(STATS), "{line}");
    assert_eq!(stat(&line, "accepted"), 1, "{line}");
    assert_eq!(stat(&line, "active"), 1, "{line}");
    assert_eq!(server.log_lines("stats: ").len(), 1, "one line per SIGUSR1");
}

#[test]
fn sigusr1_logs_the_counters_at_once() {
    let mut server = Server::start(
        "echo",
        &["--listen", "127.0.0.1:0", "--stats-interval", "0"],
    );
    three_echo_connections(server.addr());

    // Each SIGUSR1 logs one line; the counters are updated by the server's loop, so ask
    // until they show the three connections.
    let line = server.wait_for_stats(IO_TIMEOUT, "the stats show 3 closed connections", |l| {
        stat(l, "closed") == 3
    });
    for (field, expected) in [
        ("accepted", 3),
        ("active", 0),
        ("rejected", 0),
        ("closed", 3),
        ("closed_by_peer", 3),
        ("closed_by_server", 0),
        ("closed_by_error", 0),
        ("idle_timeouts", 0),
        ("write_timeouts", 0),
        ("closed_by_shutdown", 0),
        ("bytes_in", 15),
        ("bytes_out", 15),
        ("accept_errors", 0),
    ] {
        assert_eq!(stat(&line, field), expected, "{field} in {line}");
    }
    // SIGUSR1 does not stop the server.
    server.assert_running();
    assert_eq!(
        send_and_half_close(server.addr(), b"still serving"),
        b"still serving"
    );
}

#[test]
fn stats_count_connections_open_and_closed_by_the_server() {
    // Line mode, a connection still open and one the server closed after an overlong line.
    let server = Server::start("line", &["--listen", "127.0.0.1:0", "--max-line", "8"]);
    let mut open = connect(server.addr());
    assert_eq!(round_trip(&mut open, b"hi\n"), b"hi\n");
    let mut refused = connect(server.addr());
    refused
        .write_all(b"far too long\n")
        .expect("write an overlong line");
    refused.shutdown(Shutdown::Write).expect("shutdown(Write)");
    assert_bytes_eq(
        "overlong line",
        b"ERR line too long (max 8 bytes)\n",
        &read_to_eof(&mut refused, IO_TIMEOUT),
    );

    let line = server.wait_for_stats(IO_TIMEOUT, "one connection closed", |l| {
        stat(l, "closed") == 1
    });
    assert_eq!(stat(&line, "accepted"), 2, "{line}");
    assert_eq!(stat(&line, "closed_by_server"), 1, "{line}");
    assert_eq!(stat(&line, "closed_by_peer"), 0, "{line}");
    assert_eq!(stat(&line, "active"), 1, "{line}");
    assert_eq!(stat(&line, "bytes_in"), 3 + 13, "{line}");
    assert_eq!(
        stat(&line, "bytes_out"),
        3 + "ERR line too long (max 8 bytes)\n".len() as u64,
        "{line}"
    );
    assert_eq!(
        stat(&line, "closed"),
        stat(&line, "closed_by_peer")
            + stat(&line, "closed_by_server")
            + stat(&line, "closed_by_error")
            + stat(&line, "idle_timeouts")
            + stat(&line, "write_timeouts")
            + stat(&line, "closed_by_shutdown"),
        "closed is the sum of the reasons: {line}"
    );
}

#[test]
fn sigusr1_answers_with_a_stats_line_whatever_rust_log_hides() {
    for level in ["warn", "error", "off"] {
        let server = Server::start_with_env(
            "echo",
            &["--listen", "127.0.0.1:0", "--stats-interval", "0"],
            &[("RUST_LOG", level)],
        );
        let mut client = connect(server.addr());
        assert_eq!(round_trip(&mut client, b"ping"), b"ping");
        let line = server.request_stats();
        assert!(line.contains(STATS), "RUST_LOG={level}: {line}");
        assert_eq!(stat(&line, "accepted"), 1, "RUST_LOG={level}: {line}");
        assert_eq!(
            server.log_lines("stats: ").len(),
            1,
            "RUST_LOG={level}: one line"
        );
    }
}
