//! `--idle-timeout SECS`: a connection with nothing read or written for that long is closed
//! by the server; activity keeps it open.
//!
//! The reactor counts time in 100 ms ticks and stamps activity with the tick it happened in,
//! so a 1-second timeout closes a connection after more than 0.9 s of silence (usually 1.0 to
//! 1.1 s) measured from the server's last read or write. The client's clock starts before
//! the write (or the connect) that caused that activity, so "more than 0.9 s" holds for the
//! client's measurement as well; the upper bound is generous, for a loaded machine.

mod common;

use common::*;
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The earliest a 1-second idle timeout may close a connection, after the client began its
/// last write (or its connect).
const NOT_BEFORE: Duration = Duration::from_millis(900);
/// The latest it must have closed it, on a machine busy with other tests.
const WITHIN: Duration = Duration::from_secs(10);

/// Reads until EOF, which must come with no data and no reset (the server has read
/// everything, so its close is a plain FIN), and returns how long after `since` it came.
fn eof_after(stream: &mut TcpStream, since: Instant) -> Duration {
    let got = read_to_eof(stream, WITHIN);
    assert_bytes_eq("bytes before the idle close", b"", &got);
    since.elapsed()
}

#[test]
fn idle_timeout_closes_a_silent_connection() {
    let server = Server::start("echo", &["--listen", "127.0.0.1:0", "--idle-timeout", "1"]);
    let mut client = connect(server.addr());
    let last_write = Instant::now();
    assert_eq!(round_trip(&mut client, b"hello"), b"hello");

    // Now silence: the server closes the connection, not before the timeout has passed.
    let silent_for = eof_after(&mut client, last_write);
    eprintln!("idle connection closed after {silent_for:?}");
    assert!(
        silent_for > NOT_BEFORE,
        "closed after only {silent_for:?} of silence with --idle-timeout 1"
    );

    let stats = server.wait_for_stats(IO_TIMEOUT, "idle_timeouts=1", |l| {
        stat(l, "idle_timeouts") == 1
    });
    assert_eq!(stat(&stats, "active"), 0, "{stats}");
    assert_eq!(stat(&stats, "closed"), 1, "{stats}");
    assert_no_panic(&server.stderr_text());
}

#[test]
fn idle_timeout_closes_a_connection_that_never_sent_anything() {
    let server = Server::start("line", &["--listen", "127.0.0.1:0", "--idle-timeout", "1"]);
    let connecting = Instant::now();
    let mut client = connect(server.addr());
    let silent_for = eof_after(&mut client, connecting);
    assert!(silent_for > NOT_BEFORE, "closed after only {silent_for:?}");
}

#[test]
fn idle_timeout_is_reset_by_activity() {
    let server = Server::start("echo", &["--listen", "127.0.0.1:0", "--idle-timeout", "1"]);
    let mut active = connect(server.addr());
    let mut silent = connect(server.addr());
    let silent_wrote = Instant::now();
    assert_eq!(round_trip(&mut silent, b"s"), b"s");
    silent
        .set_nonblocking(true)
        .expect("set the silent client non-blocking");

    // The active client says something every 200 ms for 2.5 seconds, well past the idle
    // timeout: it stays open, while the silent one next to it is closed.
    let started = Instant::now();
    let mut silent_closed_after = None;
    let mut round = 0;
    let last_write = loop {
        let message = format!("round {round}");
        let wrote = Instant::now();
        assert_bytes_eq(
            &format!("active client, {:?} in", started.elapsed()),
            message.as_bytes(),
            &round_trip(&mut active, message.as_bytes()),
        );
        round += 1;
        if silent_closed_after.is_none() {
            let mut byte = [0u8; 1];
            match silent.read(&mut byte) {
                Ok(0) => silent_closed_after = Some(silent_wrote.elapsed()),
                Ok(_) => panic!("the silent client received a byte"),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("the silent client: {e}"),
            }
        }
        if started.elapsed() >= Duration::from_millis(2500) {
            break wrote;
        }
        std::thread::sleep(Duration::from_millis(200)); // pacing the activity, not a wait
    };
    let silent_closed_after = silent_closed_after
        .expect("the silent client was not closed during 2.5 s of --idle-timeout 1");
    assert!(
        silent_closed_after > NOT_BEFORE,
        "the silent client was closed after {silent_closed_after:?}"
    );

    // Once the active client falls silent, it is closed in turn.
    let silent_for = eof_after(&mut active, last_write);
    assert!(silent_for > NOT_BEFORE, "closed after only {silent_for:?}");
}

#[test]
fn idle_timeout_zero_keeps_a_silent_connection_open() {
    // A short measuring window: with --idle-timeout 0 a connection silent for longer than
    // the 1-second timeout of the other tests is still open and served.
    let server = Server::start("echo", &["--listen", "127.0.0.1:0", "--idle-timeout", "0"]);
    let mut client = connect(server.addr());
    assert_eq!(round_trip(&mut client, b"one"), b"one");
    client
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("set read timeout");
    let mut byte = [0u8; 1];
    match client.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected the connection to stay open and silent, got {other:?}"),
    }
    assert_eq!(round_trip(&mut client, b"two"), b"two");
}

#[test]
fn interrupted_waits_do_not_postpone_the_idle_timeout() {
    // epoll_wait returns EINTR on every stop/continue (and ptrace attach, and signals whose
    // handlers do not wake the reactor). Each interruption must not restart the wait from
    // scratch, or a stream of them keeps a deadline from ever coming.
    let server = Server::start("echo", &["--listen", "127.0.0.1:0", "--idle-timeout", "1"]);
    let mut client = connect(server.addr());
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let start = Instant::now();
    let mut byte = [0u8; 1];
    loop {
        // Pacing the interruptions, not synchronising: the condition is the EOF below.
        server.signal(libc::SIGSTOP);
        server.signal(libc::SIGCONT);
        match client.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => panic!("an idle echo connection received data"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read: {e}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "a 1 s idle timeout did not fire within 6 s while the server was being interrupted"
        );
    }
}

/// Issue 16: a client that trickles an unfinished line a byte at a time keeps the idle timer
/// alive, but not the line deadline (`--line-timeout`): it is closed, as a message timeout.
#[test]
fn line_timeout_closes_a_client_trickling_an_unfinished_line() {
    use std::io::Write;
    // A duration with a unit (issue 16): 1000ms is the same second as "1".
    let server = Server::start(
        "line",
        &["--listen", "127.0.0.1:0", "--line-timeout", "1000ms"],
    );
    let mut client = connect(server.addr());
    assert_eq!(round_trip(&mut client, b"whole\n"), b"whole\n");
    let began = Instant::now();
    client.write_all(b"par").expect("write");
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let mut buf = [0u8; 64];
    loop {
        assert!(began.elapsed() < WITHIN, "still open after {WITHIN:?}");
        match client.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => panic!("unexpected reply {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                // One more byte of the line, never its end. Once the server has closed, this
                // write may reset the connection: that is the close too.
                if client.write_all(b"t").is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    let open_for = began.elapsed();
    eprintln!("trickling client closed after {open_for:?}");
    assert!(open_for > NOT_BEFORE, "closed after only {open_for:?}");
    let stats = server.wait_for_stats(IO_TIMEOUT, "message_timeouts=1", |l| {
        stat(l, "message_timeouts") == 1
    });
    assert_eq!(stat(&stats, "idle_timeouts"), 0, "{stats}");
    assert_no_panic(&server.stderr_text());
}

/// Lines that each take a while to arrive, but complete within `--line-timeout`, keep a
/// connection open for longer than the timeout: the deadline restarts with each line.
#[test]
fn slow_lines_that_complete_are_not_a_line_timeout() {
    use std::io::Write;
    let server = Server::start("line", &["--listen", "127.0.0.1:0", "--line-timeout", "1"]);
    let mut client = connect(server.addr());
    let mut buf = [0u8; 64];
    // Three lines, each half-sent and left so for 0.6 s: 1.8 s of unfinished input in all,
    // never 1 s of one line.
    for _ in 0..3 {
        client.write_all(b"half a ").expect("write");
        client
            .set_read_timeout(Some(Duration::from_millis(600)))
            .expect("read timeout");
        match client.read(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("a half line got {other:?}"),
        }
        client
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("read timeout");
        client.write_all(b"line\n").expect("write");
        let mut echo = [0u8; 12];
        client.read_exact(&mut echo).expect("the echo");
        assert_eq!(&echo, b"half a line\n");
    }
    let stats = server.request_stats();
    assert_eq!(stat(&stats, "message_timeouts"), 0, "{stats}");
    assert_eq!(stat(&stats, "active"), 1, "{stats}");
}
