//! Slow consumers: a client that sends without ever reading must not grow the server's
//! memory (`--max-outbuf`: past it the server stops reading from that client), must not slow
//! the other clients down, and is dropped once its output has not moved for
//! `--write-timeout` seconds.

mod common;

use common::*;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;
/// What the slow client tries to send.
const FLOOD: usize = 100 * MIB;
/// A write that makes no progress for this long means the server stopped reading.
const STALL: Duration = Duration::from_secs(1);
/// `ROUND_TRIPS` echo round trips on `client`; returns the slowest, each checked byte-exact.
fn round_trips_next_to_the_slow_client(client: &mut TcpStream, when: &str) -> Duration {
    let mut slowest = Duration::ZERO;
    for i in 0..ROUND_TRIPS {
        let message = format!("round trip {i} {when}");
        let started = Instant::now();
        let got = round_trip(client, message.as_bytes());
        slowest = slowest.max(started.elapsed());
        assert_bytes_eq(&message, message.as_bytes(), &got);
    }
    slowest
}

/// How much the server's resident memory may grow while the slow client is stalled: the
/// 1 MiB of output it keeps, one read's worth over it, and allocator slack. Without
/// backpressure it would hold the whole flood (up to 100 MiB).
const RSS_GROWTH_BOUND: u64 = 16 * MIB as u64;
/// Round trips of another client in each phase of the flood, and the bound on each one.
const ROUND_TRIPS: usize = 100;
const ROUND_TRIP_BOUND: Duration = Duration::from_millis(100);

/// How the slow client's writing ended.
#[derive(Debug)]
enum WriteEnd {
    /// Everything was sent (the server read it all: no backpressure).
    Finished,
    /// No write progress for `STALL`: the server stopped reading.
    Stalled,
    /// The connection failed (reset, broken pipe): the server dropped it.
    Failed(ErrorKind),
}

/// Starts a client that writes up to `FLOOD` bytes and never reads. Returns the socket (kept
/// open, unread, by the caller), the running count of bytes written, and the writer thread's
/// outcome on a channel.
fn start_slow_client(
    addr: SocketAddr,
) -> (
    TcpStream,
    Arc<AtomicUsize>,
    mpsc::Receiver<(WriteEnd, usize)>,
) {
    let stream = connect(addr);
    let mut writer = stream.try_clone().expect("clone the slow client's socket");
    writer
        .set_write_timeout(Some(STALL))
        .expect("set write timeout");
    let written = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&written);
    let (done, outcome) = mpsc::channel();
    thread::spawn(move || {
        let mut rng = fastrand::Rng::with_seed(3);
        let chunk = random_bytes(&mut rng, 256 * 1024);
        let mut total = 0;
        let end = loop {
            if total >= FLOOD {
                break WriteEnd::Finished;
            }
            match writer.write(&chunk[..chunk.len().min(FLOOD - total)]) {
                Ok(0) => break WriteEnd::Failed(ErrorKind::WriteZero),
                Ok(n) => {
                    total += n;
                    count.store(total, Ordering::SeqCst);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break WriteEnd::Stalled
                }
                Err(e) => break WriteEnd::Failed(e.kind()),
            }
        };
        let _ = done.send((end, total));
    });
    (stream, written, outcome)
}

/// The server's pending output for all connections together (echo: what it read and has not
/// written back yet), from its counters.
fn pending_output(stats: &str) -> u64 {
    stat(stats, "bytes_in") - stat(stats, "bytes_out")
}

#[test]
fn slow_consumer_does_not_grow_server_memory_and_others_stay_fast() {
    // Default limits: --max-outbuf 1 MiB, --write-timeout 60 (far beyond this test).
    let server = Server::start("echo", &["--listen", "127.0.0.1:0"]);
    let mut other = connect(server.addr());
    assert_eq!(round_trip(&mut other, &[7u8; 4096]), [7u8; 4096]); // warm-up
    let baseline = rss_bytes(server.pid());

    let (_slow, written, outcome) = start_slow_client(server.addr());
    // Wait until the flood is well under way (past what the server may keep) ...
    wait_until(IO_TIMEOUT, "the slow client has sent 2 MiB", || {
        written.load(Ordering::SeqCst) >= 2 * MIB
    });

    // ... then time another client's round trips while the flood goes on, and again once
    // the slow client has stalled (the server holding it back).
    let mut slowest = round_trips_next_to_the_slow_client(&mut other, "during the flood");
    let (end, total) = outcome
        .recv_timeout(Duration::from_secs(60))
        .expect("the slow client's writer neither stalled nor finished within 60 s");
    let stalled_rss = rss_bytes(server.pid());
    slowest = slowest.max(round_trips_next_to_the_slow_client(
        &mut other,
        "after the stall",
    ));
    let stats = server.request_stats();
    eprintln!(
        "slow client's writes ended ({end:?}) after {} MiB; server RSS {} -> {} KiB; slowest \
         of {} round trips {slowest:?}; {stats}",
        total / MIB,
        baseline / 1024,
        stalled_rss / 1024,
        2 * ROUND_TRIPS,
    );

    assert!(
        stalled_rss < baseline + RSS_GROWTH_BOUND,
        "server RSS grew from {baseline} to {stalled_rss} bytes (bound: {RSS_GROWTH_BOUND})"
    );
    assert!(
        matches!(end, WriteEnd::Stalled),
        "the slow client's writes ended with {end:?} after {total} bytes: expected them to \
         stall once the server stopped reading"
    );
    // The counters agree: the server keeps about --max-outbuf for the slow client (one read
    // budget over it at most), and the rest of the flood waits in the kernel's buffers.
    assert!(
        pending_output(&stats) <= 2 * MIB as u64,
        "the server holds {} bytes of output: {stats}",
        pending_output(&stats)
    );
    assert!(
        slowest < ROUND_TRIP_BOUND,
        "a round trip took {slowest:?} next to the slow consumer (bound {ROUND_TRIP_BOUND:?})"
    );
    // The write timeout (60 s) has not struck: backpressure alone held the line.
    assert!(
        server.log_lines("dropped:").is_empty(),
        "{}",
        server.stderr_text()
    );
    assert_no_panic(&server.stderr_text());
}

#[test]
fn write_timeout_drops_a_client_that_stopped_reading() {
    let server = Server::start("echo", &["--listen", "127.0.0.1:0", "--write-timeout", "1"]);
    let mut other = connect(server.addr());
    assert_eq!(round_trip(&mut other, b"before"), b"before");

    // The slow client's output stops moving once its receive buffer is full; a second later
    // the server drops it, which its writer (blocked, or about to block) sees as a reset or
    // a broken pipe.
    let (mut slow, _written, outcome) = start_slow_client(server.addr());
    let line = server.wait_for_log("dropped:", Duration::from_secs(30));
    assert!(line.contains("the peer stopped reading"), "{line}");

    let (end, total) = outcome
        .recv_timeout(Duration::from_secs(30))
        .expect("the slow client's writer did not end within 30 s");
    // The writer may also have noticed the stall (its own 1 s timeout) before the reset.
    match end {
        WriteEnd::Failed(kind) => assert!(
            matches!(kind, ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
            "the writer failed with {kind:?} after {total} bytes"
        ),
        WriteEnd::Stalled => {
            let failed = wait_for_write_failure(&mut slow);
            assert!(
                matches!(failed, ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
                "a write after the drop failed with {failed:?}"
            );
        }
        WriteEnd::Finished => panic!("the server took all {total} bytes"),
    }

    let stats = server.wait_for_stats(IO_TIMEOUT, "write_timeouts=1", |l| {
        stat(l, "write_timeouts") == 1
    });
    assert_eq!(stat(&stats, "active"), 1, "{stats}");
    // The other client was served throughout, and still is.
    assert_eq!(round_trip(&mut other, b"after"), b"after");
    assert_no_panic(&server.stderr_text());
}

/// Writes to a connection the server has dropped until the kernel reports it (the first
/// write after a reset may still be accepted locally); returns the error.
fn wait_for_write_failure(stream: &mut TcpStream) -> ErrorKind {
    stream
        .set_write_timeout(Some(Duration::from_millis(100)))
        .expect("set write timeout");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match stream.write(b"are you there?") {
            Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return e.kind();
            }
            _ if Instant::now() >= deadline => {
                panic!("writes to the dropped connection did not fail within 30 s")
            }
            _ => thread::sleep(Duration::from_millis(10)),
        }
    }
}

#[test]
fn write_timeout_zero_keeps_a_stalled_client() {
    // With the write timeout off, backpressure holds a stalled client indefinitely: over a
    // short window longer than the 1-second timeout above, it is not dropped.
    let server = Server::start("echo", &["--listen", "127.0.0.1:0", "--write-timeout", "0"]);
    let (_slow, _written, outcome) = start_slow_client(server.addr());
    let (end, total) = outcome
        .recv_timeout(Duration::from_secs(60))
        .expect("the slow client's writer did not end within 60 s");
    assert!(
        matches!(end, WriteEnd::Stalled),
        "the writer ended with {end:?} after {total} bytes"
    );
    // The writer's stall took 1 s of no progress; the output has been stuck at least as long.
    thread::sleep(Duration::from_millis(1000)); // a measuring window, not a synchronisation
    assert!(
        server.log_lines("dropped:").is_empty(),
        "{}",
        server.stderr_text()
    );
    let stats = server.request_stats();
    assert_eq!(stat(&stats, "active"), 1, "{stats}");
    assert_eq!(stat(&stats, "write_timeouts"), 0, "{stats}");
}
