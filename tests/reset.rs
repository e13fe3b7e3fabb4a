//! A peer that resets its connection (SO_LINGER 0) while the server has
//! output pending for it must not disturb the other connections or the
//! server itself.

mod common;

use common::*;
use socket2::{Domain, Socket, Type};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const WORKERS: usize = 20;
const RESET_PEERS: usize = 5;
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection that echoes ping-pong rounds of random sizes until told to
/// stop, checking every round byte-exact. Counts its completed rounds.
fn spawn_worker(
    addr: SocketAddr,
    id: usize,
    seed: u64,
    rounds: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut stream = connect(addr);
        let mut round = 0;
        while !stop.load(Ordering::SeqCst) {
            // Small enough that writing it all before reading cannot fill
            // both directions' socket buffers.
            let len = rng.usize(1..=16 * 1024);
            let data = random_bytes(&mut rng, len);
            stream
                .write_all(&data)
                .unwrap_or_else(|e| panic!("worker {id} round {round}: write failed: {e}"));
            let got = read_exactly(&mut stream, len, IO_TIMEOUT);
            assert_bytes_eq(&format!("worker {id} round {round}"), &data, &got);
            round += 1;
            rounds.fetch_add(1, Ordering::SeqCst);
        }
    })
}

/// Bytes queued in the socket's receive buffer (FIONREAD).
fn bytes_readable(socket: &Socket) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points to
    // a live c_int; the fd is owned by `socket` and open.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(
        rc,
        0,
        "ioctl(FIONREAD) failed: {}",
        io::Error::last_os_error()
    );
    n as usize
}

/// Connects, writes up to 1 MiB without ever reading (tiny receive buffer so
/// that the server's echo backs up quickly), and once the server has
/// demonstrably echoed part of it, resets the connection (SO_LINGER 0 +
/// close => RST) while the server still has output pending for it.
fn reset_mid_transfer(addr: SocketAddr, rng: &mut fastrand::Rng) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("create socket");
    socket.set_recv_buffer_size(4096).expect("set SO_RCVBUF");
    socket
        .connect_timeout(&addr.into(), IO_TIMEOUT)
        .expect("connect reset peer");
    socket.set_nodelay(true).expect("set TCP_NODELAY");
    socket.set_nonblocking(true).expect("set non-blocking");
    let mut socket_io: &Socket = &socket;

    let payload = random_bytes(rng, 1024 * 1024);
    let mut written = 0;
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        if written == payload.len() {
            // All written: wait until some echo has come back.
            wait_until(IO_TIMEOUT, "the server echoes to the reset peer", || {
                bytes_readable(&socket) > 0
            });
            break;
        }
        match socket_io.write(&payload[written..(written + 64 * 1024).min(payload.len())]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Our send buffer is full because the server stopped reading;
                // once echoed bytes are waiting for us, the server is blocked
                // on its output to us: that is the moment to reset.
                if bytes_readable(&socket) > 0 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "reset peer: no echo received after writing {written} bytes"
                );
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reset peer: write failed after {written} bytes: {e}"),
        }
    }
    eprintln!(
        "reset peer: resetting after writing {written} bytes with {} echoed bytes unread",
        bytes_readable(&socket)
    );
    socket
        .set_linger(Some(Duration::ZERO))
        .expect("set SO_LINGER 0");
    drop(socket); // close with linger 0 sends RST
}

#[test]
fn reset_peer_with_pending_output_does_not_disturb_other_connections() {
    let mut server = Server::start("echo", &["--listen", "127.0.0.1:0"]);
    let addr = server.addr();
    let mut rng = seeded_rng("reset_peer_with_pending_output_does_not_disturb_other_connections");

    let stop = Arc::new(AtomicBool::new(false));
    let counters: Vec<Arc<AtomicUsize>> = (0..WORKERS)
        .map(|_| Arc::new(AtomicUsize::new(0)))
        .collect();
    let workers: Vec<_> = counters
        .iter()
        .enumerate()
        .map(|(id, rounds)| {
            spawn_worker(addr, id, rng.u64(..), Arc::clone(rounds), Arc::clone(&stop))
        })
        .collect();
    // If a worker panics (echo mismatch), it stops counting; the waits below
    // then time out, so also stop waiting early when one has finished.
    let all_advanced_past = |snapshot: &[usize], by: usize| {
        counters
            .iter()
            .zip(snapshot)
            .all(|(c, s)| c.load(Ordering::SeqCst) >= s + by)
            || workers.iter().any(|w| w.is_finished())
    };

    // Before: every worker has completed a few rounds.
    let zero = vec![0; WORKERS];
    wait_until(PROGRESS_TIMEOUT, "every worker completed 3 rounds", || {
        all_advanced_past(&zero, 3)
    });

    // During: reset peers one after another while the workers keep going,
    // and check that all workers make progress after each reset.
    for i in 0..RESET_PEERS {
        reset_mid_transfer(addr, &mut rng);
        let snapshot: Vec<usize> = counters.iter().map(|c| c.load(Ordering::SeqCst)).collect();
        wait_until(
            PROGRESS_TIMEOUT,
            &format!("every worker completed 2 more rounds after reset #{i}"),
            || all_advanced_past(&snapshot, 2),
        );
        server.assert_running();
    }

    stop.store(true, Ordering::SeqCst);
    for (id, worker) in workers.into_iter().enumerate() {
        if let Err(panic) = worker.join() {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("worker {id} failed: {msg}");
        }
    }

    // After: a brand-new connection is accepted and served.
    server.assert_running();
    let payload = random_bytes(&mut rng, 100 * 1024);
    assert_round_trips(
        addr,
        vec![payload],
        8 * 1024,
        &mut rng,
        Duration::from_secs(30),
    );

    // The RSTs must not have produced a panic either.
    assert_no_panic(&server.stderr_text());
}

#[test]
fn reset_before_reading_anything_leaves_server_accepting() {
    // The simplest abort: connect, send, reset immediately.
    let mut server = Server::start("echo", &["--listen", "127.0.0.1:0"]);
    for _ in 0..10 {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("create socket");
        socket
            .connect_timeout(&server.addr().into(), IO_TIMEOUT)
            .expect("connect");
        (&socket).write_all(b"abort me").expect("write");
        socket
            .set_linger(Some(Duration::ZERO))
            .expect("set SO_LINGER 0");
        drop(socket);
    }
    let got = send_and_half_close(server.addr(), b"still serving");
    assert_bytes_eq("after resets", b"still serving", &got);
    server.assert_running();
}
