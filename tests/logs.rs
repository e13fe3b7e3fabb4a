//! Log lines an operator relies on: the access line per connection (debug level, target
//! `wharf::access`), and rate-limited lines that account for every occurrence, flushing
//! what they did not log on a timer rather than waiting for an event that may never come.

mod common;

use std::io::Read;
use std::time::Duration;

use common::*;

#[test]
fn each_connection_gets_an_access_line_when_it_closes() {
    let server = Server::start_with_env(
        "echo",
        &["--listen", "127.0.0.1:0"],
        &[("RUST_LOG", "warn,wharf::access=debug")],
    );
    let stream = connect(server.addr());
    let local = stream.local_addr().unwrap();
    drop(stream);
    let echoed = send_and_half_close(server.addr(), b"hello");
    assert_eq!(echoed, b"hello");
    let line = server.wait_for_log("bytes_in=5", IO_TIMEOUT);
    assert!(line.contains("wharf::access"), "{line}");
    assert!(line.contains("bytes_out=5 reason=peer closed"), "{line}");
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    assert!(line.contains(" duration="), "{line}");
    let first = server.wait_for_log(&format!("peer={local} "), IO_TIMEOUT);
    assert!(first.contains("bytes_in=0 bytes_out=0"), "{first}");
}

/// The counts in the `(N refused by access rules in the last second)` lines and the
/// `N more connections refused by the access rules` lines.
fn refusals_logged(server: &Server) -> u64 {
    let counted = server.log_lines("refused by access rules in the last second");
    let one_by_one: u64 = (counted.iter())
        .filter_map(|line| {
            line.rsplit_once(" (")?
                .1
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    let flushed: u64 = (server
        .log_lines("more connections refused by the access rules")
        .iter())
    .filter_map(|line| {
        let after = line.split("] ").nth(1).unwrap_or(line);
        after.split(' ').next()?.parse::<u64>().ok()
    })
    .sum();
    one_by_one + flushed
}

#[test]
fn rate_limited_lines_flush_what_they_did_not_log_on_a_timer() {
    let server = Server::start(
        "echo",
        &["--listen", "127.0.0.1:0", "--allow", "10.0.0.0/8"],
    );
    for _ in 0..20 {
        let mut refused = connect(server.addr());
        refused.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let _ = refused.read(&mut [0; 8]); // closed at once
    }
    // No more events: the count of those not logged one by one arrives on its own.
    server.wait_for_log(
        "more connections refused by the access rules",
        Duration::from_secs(30),
    );
    wait_until(IO_TIMEOUT, "every refusal is in the logs once", || {
        refusals_logged(&server) == 20
    });
}
