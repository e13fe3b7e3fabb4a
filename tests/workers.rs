//! `--workers N`: a parent process and N worker processes on one port. Connections come from
//! 16 source addresses (127.0.0.1 to 127.0.0.16), because SO_REUSEPORT spreads them over the
//! workers by a hash of their addresses. Which worker holds a connection is read from /proc.
//! Workers need Linux.

#![cfg(target_os = "linux")]

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// 127.0.0.1 to 127.0.0.16.
fn sources() -> Vec<IpAddr> {
    (1..=16)
        .map(|n| IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)))
        .collect()
}

fn start_workers(count: usize, extra: &[&str]) -> Server {
    start_workers_with_env(count, extra, &[])
}

/// [`start_workers`], with these environment variables set for the parent and its workers.
fn start_workers_with_env(count: usize, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let count = count.to_string();
    let mut args = vec!["--listen", "127.0.0.1:0", "--workers", count.as_str()];
    args.extend_from_slice(extra);
    Server::start_with_env("echo", &args, env)
}

/// The pid of each worker by id, from the parent's latest `worker=ID pid=PID ready` lines.
fn worker_pids(server: &Server) -> BTreeMap<usize, i32> {
    server
        .log_lines(" ready")
        .iter()
        .filter_map(|line| {
            let rest = &line[line.find("worker=")? + "worker=".len()..];
            let (id, rest) = rest.split_once(" pid=")?;
            let (pid, _) = rest.split_once(' ')?;
            Some((id.parse().ok()?, pid.parse().ok()?))
        })
        .collect()
}

/// Waits until the parent says every one of `count` workers is ready.
fn wait_for_workers(server: &Server, count: usize) -> BTreeMap<usize, i32> {
    wait_until(STARTUP_TIMEOUT, "every worker is ready", || {
        worker_pids(server).len() == count
    });
    worker_pids(server)
}

/// A blocking connection to `addr` from `source`.
fn connect_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .expect("bind the source address");
    socket.connect(&addr.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream
}

/// The peer addresses of the TCP connections that process `pid` holds, from its descriptors
/// and /proc/net/tcp.
fn peers_of(pid: i32) -> BTreeSet<SocketAddr> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
                .filter_map(|link| {
                    let link = link.to_string_lossy().into_owned();
                    Some(
                        link.strip_prefix("socket:[")?
                            .strip_suffix(']')?
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if !inodes.contains(*fields.get(9)?) {
                return None;
            }
            // rem_address is IP:PORT in hex, the IP as the kernel's native-endian u32.
            let (ip, port) = fields[2].split_once(':')?;
            let ip = u32::from_str_radix(ip, 16).ok()?.to_ne_bytes();
            Some(SocketAddr::from((ip, u16::from_str_radix(port, 16).ok()?)))
        })
        .collect()
}

/// Sends SIGUSR1 to the parent and returns its next summed `stats: workers=` line.
fn summed_stats(server: &Server) -> String {
    let before = server.log_lines("stats: workers=").len();
    server.signal(libc::SIGUSR1);
    let mut line = String::new();
    wait_until(IO_TIMEOUT, "the parent logs a summed stats line", || {
        let lines = server.log_lines("stats: workers=");
        line = lines.last().cloned().unwrap_or_default();
        lines.len() > before
    });
    line
}

/// The last `stats:` line of worker `id`.
fn worker_stats(server: &Server, id: usize) -> String {
    let tag = format!("worker={id} stats: ");
    server
        .log_lines(&tag)
        .pop()
        .unwrap_or_else(|| panic!("no `{tag}` line; stderr:\n{}", server.stderr_text()))
}

/// One echo round trip that may fail: `Err` says how the connection ended.
fn try_round_trip(stream: &mut TcpStream, message: &[u8]) -> Result<(), String> {
    stream.write_all(message).map_err(|e| e.to_string())?;
    let mut reply = vec![0; message.len()];
    let mut filled = 0;
    while filled < reply.len() {
        match stream.read(&mut reply[filled..]) {
            Ok(0) => return Err("end of stream".into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    assert_bytes_eq("round trip", message, &reply);
    Ok(())
}

/// Sends `signal` to process `pid` (a worker, grandchild of the test).
fn kill(pid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is a worker that the parent
    // has not reaped (it has not logged its death), so no other process can have its number.
    assert_eq!(
        unsafe { libc::kill(pid, signal) },
        0,
        "kill({pid}, {signal})"
    );
}

/// Whether `pid` is a live wharf worker (not gone, not a zombie, not a reused pid).
fn worker_running(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    !matches!(state, None | Some(Some('Z' | 'X')))
        && String::from_utf8_lossy(&cmdline).contains("--worker-id")
}

#[test]
fn two_workers_share_one_port_and_both_serve() {
    let server = start_workers(2, &[]);
    assert_eq!(
        server.listen_lines.len(),
        1,
        "one `listening on` line per listener"
    );
    assert!(
        server.listen_lines[0].ends_with("(echo, 2 workers)"),
        "{:?}",
        server.listen_lines[0]
    );
    let mut rng = seeded_rng("two_workers_share_one_port_and_both_serve");
    let payloads: Vec<Vec<u8>> = (0..200)
        .map(|_| {
            let len = rng.usize(1..=16 * 1024);
            random_bytes(&mut rng, len)
        })
        .collect();
    let expected = payloads.clone();
    let received = drive_round_trips_from(
        &sources(),
        server.addr(),
        payloads,
        4096,
        &mut rng,
        IO_TIMEOUT,
    );
    for (i, (sent, got)) in expected.iter().zip(&received).enumerate() {
        assert_bytes_eq(&format!("connection #{i}"), sent, got);
    }

    // Counters move a moment after the client saw its end of stream.
    let deadline = Instant::now() + IO_TIMEOUT;
    let sum = loop {
        let line = summed_stats(&server);
        if stat(&line, "closed") == 200 || Instant::now() >= deadline {
            break line;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(stat(&sum, "workers"), 2, "{sum}");
    assert_eq!(stat(&sum, "accepted"), 200, "{sum}");
    let total: u64 = expected.iter().map(|p| p.len() as u64).sum();
    assert_eq!(stat(&sum, "bytes_in"), total, "{sum}");
    let (one, two) = (worker_stats(&server, 1), worker_stats(&server, 2));
    assert!(
        stat(&one, "accepted") > 0 && stat(&two, "accepted") > 0,
        "both workers serve:\n{one}\n{two}"
    );
    assert_eq!(stat(&one, "accepted") + stat(&two, "accepted"), 200);

    // Having served and reported its counters, each worker still runs on one thread, its
    // reactor's (docs/ARCHITECTURE.md, "Signals").
    let pids = wait_for_workers(&server, 2);
    for (id, pid) in pids {
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("read /proc/PID/task")
            .count();
        assert_eq!(threads, 1, "worker={id} pid={pid} runs {threads} threads");
    }
}

#[test]
fn a_killed_worker_is_replaced_while_the_other_keeps_serving() {
    let server = start_workers(2, &[]);
    let pids = wait_for_workers(&server, 2);
    let mut clients: Vec<TcpStream> = sources()
        .iter()
        .cycle()
        .take(32)
        .map(|&source| connect_from(source, server.addr()))
        .collect();
    for (i, client) in clients.iter_mut().enumerate() {
        try_round_trip(client, format!("hello {i}\n").as_bytes()).expect("served");
    }
    // Served, so accepted: each worker's descriptors now name its clients.
    let of_first = peers_of(pids[&1]);
    let (doomed, survivors): (Vec<_>, Vec<_>) = clients
        .into_iter()
        .partition(|client| of_first.contains(&client.local_addr().unwrap()));
    assert!(
        !doomed.is_empty() && !survivors.is_empty(),
        "32 connections from 16 addresses all went to one worker ({} to worker 1)",
        doomed.len()
    );

    kill(pids[&1], libc::SIGKILL);
    server.wait_for_log(&format!("worker=1 pid={} died", pids[&1]), IO_TIMEOUT);
    for (i, mut client) in survivors.into_iter().enumerate() {
        try_round_trip(&mut client, format!("still here {i}\n").as_bytes())
            .unwrap_or_else(|e| panic!("a connection of worker 2 ended: {e}"));
    }
    for mut client in doomed {
        let outcome = try_round_trip(&mut client, b"anyone?\n");
        assert!(
            outcome.is_err(),
            "a connection of the killed worker answered"
        );
    }

    // A new worker 1 within a few seconds (the first back-off is 100 ms).
    let mut replaced = 0;
    wait_until(Duration::from_secs(20), "a new worker 1 is ready", || {
        replaced = worker_pids(&server)[&1];
        replaced != pids[&1]
    });
    let mut clients: Vec<TcpStream> = sources()
        .iter()
        .cycle()
        .take(32)
        .map(|&source| connect_from(source, server.addr()))
        .collect();
    for (i, client) in clients.iter_mut().enumerate() {
        try_round_trip(client, format!("new {i}\n").as_bytes()).expect("served");
    }
    let of_new = peers_of(replaced);
    assert!(
        clients
            .iter()
            .any(|client| of_new.contains(&client.local_addr().unwrap())),
        "the new worker 1 serves none of 32 new connections"
    );
}

/// Connections from 16 addresses, each served once (so accepted), spread over both of two
/// workers: returns them, open, and how many worker 1 holds.
fn connections_on_both_workers(
    server: &Server,
    pids: &BTreeMap<usize, i32>,
) -> (Vec<TcpStream>, usize) {
    let mut clients: Vec<TcpStream> = sources()
        .iter()
        .cycle()
        .take(32)
        .map(|&source| connect_from(source, server.addr()))
        .collect();
    for (i, client) in clients.iter_mut().enumerate() {
        try_round_trip(client, format!("hello {i}\n").as_bytes()).expect("served");
    }
    let of_first = peers_of(pids[&1]);
    let on_first = clients
        .iter()
        .filter(|client| of_first.contains(&client.local_addr().unwrap()))
        .count();
    assert!(
        on_first > 0 && on_first < clients.len(),
        "32 connections from 16 addresses all went to one worker ({on_first} to worker 1)"
    );
    (clients, on_first)
}

#[test]
fn the_sum_comes_over_the_stats_channel_even_when_workers_log_no_stats_lines() {
    // Workers log warnings only, so they write no `stats:` line of their own; the parent's
    // supervisor (wharf::workers) still logs its summed line at info.
    let server = start_workers_with_env(2, &[], &[("RUST_LOG", "warn,wharf::workers=info")]);
    let pids = wait_for_workers(&server, 2);
    let (clients, _) = connections_on_both_workers(&server, &pids);

    let sum = summed_stats(&server);
    assert_eq!(stat(&sum, "workers"), 2, "{sum}");
    // Counted when accepted, before the first echo: all in by the time the clients saw them.
    assert_eq!(stat(&sum, "accepted"), 32, "{sum}");
    assert_eq!(stat(&sum, "active"), 32, "{sum}");
    // Every counter, by name, in the order of a worker's own line.
    let names: Vec<&str> = sum
        .split_once("stats: workers=2 ")
        .map(|(_, fields)| fields)
        .unwrap_or_else(|| panic!("{sum}"))
        .split(' ')
        .map(|field| field.split_once('=').map_or(field, |(name, _)| name))
        .collect();
    let expected: Vec<&str> = wharf::Stats::default().fields().map(|(n, _)| n).collect();
    assert_eq!(names, expected, "{sum}");
    let stderr = server.stderr_text();
    assert!(
        !stderr.contains("worker=1 stats:") && !stderr.contains("worker=2 stats:"),
        "the workers logged stats lines at RUST_LOG=warn:\n{stderr}"
    );
    drop(clients);
}

#[test]
fn a_worker_that_does_not_answer_is_left_out_of_the_sum_after_the_wait() {
    let server = start_workers(2, &[]);
    let pids = wait_for_workers(&server, 2);
    let (clients, on_first) = connections_on_both_workers(&server, &pids);
    let on_second = (clients.len() - on_first) as u64;

    /// Stops a worker (SIGSTOP) until dropped, so that no failure leaves it stopped.
    struct Stopped(i32);
    impl Drop for Stopped {
        fn drop(&mut self) {
            // SAFETY: as in `kill`; the result is not checked, so that a worker already gone
            // cannot turn a failing test's unwinding into an abort.
            unsafe { libc::kill(self.0, libc::SIGCONT) };
        }
    }
    kill(pids[&1], libc::SIGSTOP);
    let stopped = Stopped(pids[&1]);
    let asked = Instant::now();
    let sum = summed_stats(&server);
    // The parent waits 2 s for worker 1, then sums what it has: worker 2's counters alone.
    assert!(asked.elapsed() >= Duration::from_secs(2), "{sum}");
    assert_eq!(stat(&sum, "workers"), 1, "{sum}");
    assert_eq!(stat(&sum, "accepted"), on_second, "{sum}");
    server.wait_for_log("stats: 1 workers did not answer", IO_TIMEOUT);

    // Back again, it answers the next round (the late answer to the last one is ignored
    // or taken: both are its counters now).
    drop(stopped);
    let sum = summed_stats(&server);
    assert_eq!(stat(&sum, "workers"), 2, "{sum}");
    assert_eq!(stat(&sum, "accepted"), 32, "{sum}");
    drop(clients);
}

#[test]
fn sigterm_drains_every_worker_and_the_parent_exits_zero() {
    let mut server = start_workers(2, &["--drain-timeout", "60"]);
    wait_for_workers(&server, 2);
    let mut rng = seeded_rng("sigterm_drains_every_worker_and_the_parent_exits_zero");
    let payload = random_bytes(&mut rng, 128 * 1024);
    let (first, second) = payload.split_at(64 * 1024);
    // 32 connections from 16 addresses: both workers have some in flight.
    let mut clients: Vec<TcpStream> = sources()
        .iter()
        .cycle()
        .take(32)
        .map(|&source| connect_from(source, server.addr()))
        .collect();
    for client in &mut clients {
        client.write_all(first).expect("first half");
        let echoed = read_exactly(client, first.len(), IO_TIMEOUT);
        assert_bytes_eq("first half", first, &echoed);
    }

    server.signal(libc::SIGTERM);
    let mut in_flight = 0;
    for id in [1, 2] {
        let mut line = String::new();
        wait_until(IO_TIMEOUT, "both workers drain", || {
            let tag = format!("worker={id} received SIGTERM: draining");
            line = server.log_lines(&tag).pop().unwrap_or_default();
            !line.is_empty()
        });
        // "... listeners closed, N connections have up to 60s to finish"
        let count: usize = line
            .split(", ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no connection count in {line:?}"));
        assert!(count > 0, "worker {id} drains nothing: {line}");
        in_flight += count;
    }
    assert_eq!(in_flight, clients.len());
    for client in &mut clients {
        client
            .write_all(second)
            .expect("second half, while draining");
        client.shutdown(Shutdown::Write).expect("half-close");
        let echoed = read_to_eof(client, IO_TIMEOUT);
        assert_bytes_eq("second half", second, &echoed);
    }
    let status = server.wait_for_exit(EXIT_TIMEOUT);
    let stderr = server.stderr_text();
    assert_no_panic(&stderr);
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    let stopped = server.log_lines(" stopped");
    assert_eq!(
        stopped.iter().filter(|l| l.ends_with(" stopped")).count(),
        2,
        "both workers stopped cleanly; stderr:\n{stderr}"
    );
}

#[test]
fn sigkill_of_the_parent_leaves_no_worker_running() {
    let server = start_workers(2, &["--drain-timeout", "1"]);
    let pids = wait_for_workers(&server, 2);
    let addr = server.addr();
    let mut client = connect(addr);
    try_round_trip(&mut client, b"ping").expect("served");

    server.signal(libc::SIGKILL);
    wait_until(EXIT_TIMEOUT, "no worker is left running", || {
        pids.values().all(|&pid| !worker_running(pid))
    });
    assert_bytes_eq(
        "after the workers went",
        b"",
        &read_to_eof(&mut client, IO_TIMEOUT),
    );
    let refused = TcpStream::connect(addr).map(|_| ()).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
}

#[test]
fn port_zero_gives_three_workers_one_port_and_a_second_group_is_refused() {
    let server = start_workers(3, &[]);
    let addr = server.addr();
    assert_ne!(addr.port(), 0);
    let pids = wait_for_workers(&server, 3);
    let mut rng = seeded_rng("port_zero_gives_three_workers_one_port");
    let payloads: Vec<Vec<u8>> = (0..48).map(|_| random_bytes(&mut rng, 1000)).collect();
    assert_round_trips(addr, payloads, 1000, &mut rng, IO_TIMEOUT);
    assert_eq!(
        server.log_lines("listening on").len(),
        1,
        "stderr:\n{}",
        server.stderr_text()
    );
    assert_eq!(pids.len(), 3);

    // Another group on the same port would silently split the traffic: refused, in one line.
    let port = addr.to_string();
    let second = run_to_exit(
        wharf_command("echo", &["--listen", &port, "--workers", "2"]),
        EXIT_TIMEOUT,
    );
    assert_no_panic(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "stderr:\n{}", second.stderr);
    let lines: Vec<&str> = second.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line:\n{}", second.stderr);
    assert!(lines[0].contains("already in use"), "{}", lines[0]);
}

#[test]
fn chat_with_two_workers_is_refused_in_one_line() {
    let finished = run_to_exit(
        wharf_command("chat", &["--listen", "127.0.0.1:0", "--workers", "2"]),
        EXIT_TIMEOUT,
    );
    assert_no_panic(&finished.stderr);
    assert_eq!(finished.status.code(), Some(2), "{}", finished.stderr);
    let lines: Vec<&str> = finished.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line:\n{}", finished.stderr);
    assert!(
        lines[0].contains("chat") && lines[0].contains("one worker"),
        "{}",
        lines[0]
    );
}

#[cfg(feature = "tls")]
#[test]
fn two_workers_serve_one_tls_port() {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    use std::sync::Arc;

    let pki = common::certs::make_test_pki("workers_tls");
    let (cert, key) = (
        common::certs::arg(&pki.server_cert),
        common::certs::arg(&pki.server_key),
    );
    let server = Server::start(
        "line",
        &[
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--workers",
            "2",
        ],
    );
    assert_eq!(server.listen_lines.len(), 1, "{:?}", server.listen_lines);
    assert!(
        server.listen_lines[0].ends_with("(line, tls, 2 workers)"),
        "{:?}",
        server.listen_lines[0]
    );
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&pki.ca).expect("CA file") {
        roots.add(ca.expect("CA")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    for (i, source) in sources().into_iter().cycle().take(48).enumerate() {
        let socket = connect_from(source, server.tls_addr());
        let name = ServerName::try_from("localhost").expect("name");
        let session = rustls::ClientConnection::new(Arc::clone(&config), name).expect("client");
        let mut tls = rustls::StreamOwned::new(session, socket);
        let line = format!("hello {i}\n");
        tls.write_all(line.as_bytes()).expect("write");
        assert_eq!(read_line(&mut tls), line, "connection #{i} from {source}");
    }
    let sum = summed_stats(&server); // asks every worker for its line
    assert_eq!(stat(&sum, "tls_handshakes"), 48, "{sum}");
    let (one, two) = (worker_stats(&server, 1), worker_stats(&server, 2));
    assert!(
        stat(&one, "tls_handshakes") > 0 && stat(&two, "tls_handshakes") > 0,
        "both workers serve TLS:\n{one}\n{two}"
    );
}

/// Sends SIGCONT to the parent when dropped, so a failing test never leaves it stopped.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is the test's child.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[test]
fn a_stopped_parent_does_not_stop_its_workers_however_much_they_log() {
    let server = start_workers_with_env(2, &[], &[("RUST_LOG", "debug")]);
    let pids = wait_for_workers(&server, 2);
    // The parent stops reading its workers' stderr; a pipe holds about 64 KiB.
    server.signal(libc::SIGSTOP);
    let resume = Resume(server.pid());
    // Each connection makes the worker that serves it log a line at debug level: 3,000
    // connections are far more than two pipes hold.
    let sources = sources();
    for n in 0..3000 {
        let mut client = connect_from(sources[n % sources.len()], server.addr());
        try_round_trip(&mut client, b"log me").unwrap_or_else(|e| {
            panic!("connection {n}, the parent stopped: {e}");
        });
    }
    // Every worker still answers: one connection held by each, a round trip on each.
    let mut held = Vec::new();
    for (id, pid) in &pids {
        let mut found = None;
        for n in 0..200 {
            let mut client = connect_from(sources[n % sources.len()], server.addr());
            try_round_trip(&mut client, b"hello").expect("a round trip");
            let local = client.local_addr().expect("local address");
            if peers_of(*pid).contains(&local) {
                found = Some(client);
                break;
            }
            held.push(client);
        }
        let mut client = found.unwrap_or_else(|| panic!("no connection reached worker {id}"));
        try_round_trip(&mut client, b"still here").expect("worker answers");
    }
    drop(resume);
    // Once the parent reads again, each worker says what it dropped.
    for n in 0..200 {
        let mut client = connect_from(sources[n % sources.len()], server.addr());
        let _ = try_round_trip(&mut client, b"after");
        if server.log_lines("log lines dropped").len() >= 2 {
            break;
        }
    }
    wait_until(IO_TIMEOUT, "each worker says it dropped log lines", || {
        server.log_lines("log lines dropped").len() >= 2
    });
}
