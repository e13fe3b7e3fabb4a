//! Graceful drain: the first SIGTERM or SIGINT closes the listeners at once, lets the
//! connections finish for up to `--drain-timeout` seconds (bytes sent before the signal are
//! still echoed, a half-closed connection is flushed and closed), and exits 0 as soon as the
//! last one is gone, or at the deadline. A second signal stops at once.

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;
/// Logged by the reactor once the listeners are closed (the signal thread logs a
/// `received SIGTERM: draining` line a moment before that).
const DRAINING: &str = "draining: listeners closed";

/// A connected client that has been served once, so the server counts it.
fn served_client(addr: SocketAddr) -> TcpStream {
    let mut client = connect(addr);
    assert_eq!(round_trip(&mut client, b"hello"), b"hello");
    client
}

fn assert_exit_zero(server: &mut Server, timeout: Duration) {
    let status = server.wait_for_exit(timeout);
    let stderr = server.stderr_text();
    assert_no_panic(&stderr);
    assert_eq!(
        status.code(),
        Some(0),
        "expected exit status 0, got {status}; stderr:\n{stderr}"
    );
}

#[test]
fn drain_delivers_everything_sent_before_the_signal() {
    // A drain timeout far above the time the transfer needs, so that exiting at the
    // deadline instead of when the connection closes shows.
    let mut server = Server::start(
        "echo",
        &["--listen", "127.0.0.1:0", "--drain-timeout", "20"],
    );
    let mut rng = seeded_rng("drain_delivers_everything_sent_before_the_signal");
    let payload = random_bytes(&mut rng, 4 * MIB);

    let mut client = connect(server.addr());
    let mut writer = client.try_clone().expect("clone the client socket");
    let to_send = payload.clone();
    let sender = thread::spawn(move || {
        writer.write_all(&to_send).expect("write 4 MiB");
        writer.shutdown(Shutdown::Write).expect("shutdown(Write)");
    });

    // The signal goes out as soon as the first echoed bytes come back: most of the 4 MiB is
    // still in flight (in the client's send buffer, the server's receive buffer, or not
    // written yet).
    let mut received = vec![0u8; 64 * 1024];
    let n = client
        .read(&mut received)
        .expect("read the first echoed bytes");
    assert!(n > 0, "EOF before any echo");
    received.truncate(n);
    server.signal(libc::SIGTERM);
    let signalled = Instant::now();
    eprintln!(
        "SIGTERM sent with {n} of {} bytes echoed back",
        payload.len()
    );
    assert!(
        n < payload.len() / 2,
        "the echo was too fast to test a drain"
    );

    received.extend(read_to_eof(&mut client, IO_TIMEOUT));
    assert_bytes_eq("echo across the drain", &payload, &received);
    sender.join().expect("the sender thread");

    // The process exits once the connection is gone, long before the drain timeout.
    assert_exit_zero(&mut server, EXIT_TIMEOUT);
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "exit took {took:?} after the signal: did the server wait for the drain timeout?"
    );
    let stderr = server.stderr_text();
    assert!(
        stderr.contains("received SIGTERM") && stderr.contains(DRAINING),
        "stderr:\n{stderr}"
    );
}

#[test]
fn drain_closes_the_listeners_at_once() {
    let mut server = Server::start(
        "echo",
        &["--listen", "127.0.0.1:0", "--drain-timeout", "30"],
    );
    let addr = server.addr();
    let mut client = served_client(addr);

    server.signal(libc::SIGTERM);
    server.wait_for_log(DRAINING, IO_TIMEOUT);
    match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
        Err(e) => panic!("connect during the drain failed with {e}, not connection refused"),
        Ok(_) => panic!("a connection during the drain was accepted by the kernel"),
    }

    // The connection that was there keeps its drain time; closing it ends the process.
    client.shutdown(Shutdown::Write).expect("shutdown(Write)");
    assert_bytes_eq(
        "after half-close",
        b"",
        &read_to_eof(&mut client, IO_TIMEOUT),
    );
    assert_exit_zero(&mut server, Duration::from_secs(10));
}

#[test]
fn drain_flushes_and_closes_a_connection_that_half_closes() {
    let mut server = Server::start(
        "line",
        &["--listen", "127.0.0.1:0", "--drain-timeout", "30"],
    );
    let mut client = connect(server.addr());
    // A complete line and an unterminated one: the second is echoed only on half-close.
    client
        .write_all(b"complete\nunterminated")
        .expect("write the lines");
    assert_bytes_eq(
        "the complete line",
        b"complete\n",
        &read_exactly(&mut client, 9, IO_TIMEOUT),
    );

    server.signal(libc::SIGINT);
    server.wait_for_log(DRAINING, IO_TIMEOUT);
    let half_closed = Instant::now();
    client.shutdown(Shutdown::Write).expect("shutdown(Write)");
    assert_bytes_eq(
        "flushed on half-close during the drain",
        b"unterminated",
        &read_to_eof(&mut client, IO_TIMEOUT),
    );
    // Exits as soon as its last connection is closed, not at the 30 s deadline.
    assert_exit_zero(&mut server, Duration::from_secs(10));
    eprintln!("exited {:?} after the half-close", half_closed.elapsed());
    assert!(server.stderr_text().contains("received SIGINT"));
}

#[test]
fn drain_timeout_closes_idle_connections_and_exits_zero() {
    let mut server = Server::start("echo", &["--listen", "127.0.0.1:0", "--drain-timeout", "1"]);
    let mut idle = served_client(server.addr());

    // The idle client never closes: the server waits out the drain timeout, then closes it
    // (EOF: the server has read everything) and exits 0.
    let signalled = Instant::now(); // before the signal: the deadline counts from its arrival
    server.signal(libc::SIGTERM);
    assert_bytes_eq(
        "idle client at the deadline",
        b"",
        &read_to_eof(&mut idle, Duration::from_secs(10)),
    );
    let closed_after = signalled.elapsed();
    assert_exit_zero(&mut server, Duration::from_secs(10));
    eprintln!("idle client closed {closed_after:?} after the signal");
    // The deadline is counted in 100 ms ticks from the signal.
    assert!(
        closed_after >= Duration::from_millis(900),
        "the idle client was closed {closed_after:?} after the signal, before the 1 s drain timeout"
    );
    // The final counters: the idle client was closed by the shutdown.
    let stopped = server
        .log_lines("stopped: ")
        .pop()
        .unwrap_or_else(|| panic!("no `stopped:` line; stderr:\n{}", server.stderr_text()));
    assert_eq!(stat(&stopped, "closed_by_shutdown"), 1, "{stopped}");
}

#[test]
fn second_signal_stops_at_once() {
    let mut server = Server::start(
        "echo",
        &["--listen", "127.0.0.1:0", "--drain-timeout", "30"],
    );
    let mut idle = served_client(server.addr());

    server.signal(libc::SIGTERM);
    server.wait_for_log(DRAINING, IO_TIMEOUT);
    let second = Instant::now();
    server.signal(libc::SIGTERM);
    assert_exit_zero(&mut server, Duration::from_secs(10));
    let took = second.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "exit took {took:?} after the second signal"
    );
    assert!(
        server.stderr_text().contains("second signal: stopping now"),
        "stderr:\n{}",
        server.stderr_text()
    );
    // Its connection was closed by the exit (FIN or reset, both fine), not left hanging.
    idle.set_read_timeout(Some(IO_TIMEOUT))
        .expect("set read timeout");
    let mut buf = [0u8; 16];
    match idle.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected EOF or a reset on the idle client, got {other:?}"),
    }
}
