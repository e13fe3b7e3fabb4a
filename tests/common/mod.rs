//! Shared helpers for the integration tests that drive the real `wharf`
//! binary over loopback sockets.
//!
//! Everything here synchronises on conditions (a line on stderr, a socket
//! becoming readable, a process exiting) with generous deadlines; the
//! deadlines only matter when something is broken, never on the happy path.

#![allow(dead_code)]

pub mod bench;
pub mod certs;
pub mod chat;
pub mod embedded;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long to wait for the server to print its `listening on` lines.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default deadline for a single socket operation (read to EOF, read N bytes).
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a process to exit after it was asked to.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of the binary under test: the crate's `wharf` binary, unless
/// WHARF_BIN names another build to run the same tests against.
pub fn wharf_bin() -> String {
    std::env::var("WHARF_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wharf").to_string())
}

/// A `Command` for `wharf <mode> <args...>`.
pub fn wharf_command(mode: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(wharf_bin());
    cmd.arg(mode).args(args);
    cmd
}

/// Extracts the address from a `wharf: listening on <addr> (<mode>)` line.
pub fn parse_listening_line(line: &str) -> Option<(SocketAddr, String)> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let (addr, mode) = rest.split_once(' ')?;
    let addr = addr.parse().ok()?;
    let mode = mode
        .trim()
        .strip_prefix('(')?
        .strip_suffix(')')?
        .to_string();
    Some((addr, mode))
}

/// A running `wharf` server. Killed (SIGKILL) and reaped on drop, so a
/// failing test never leaks a server process.
pub struct Server {
    child: Child,
    /// The addresses from the `listening on` lines, in the order printed.
    pub addrs: Vec<SocketAddr>,
    /// The `listening on` lines themselves, in the order printed.
    pub listen_lines: Vec<String>,
    /// Every stderr line seen so far (filled by a reader thread).
    stderr_lines: Arc<Mutex<Vec<String>>>,
    stderr_thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts `wharf <mode> <args...>` and waits until it has printed one
    /// `listening on` line per `--listen` argument (one if there is none).
    pub fn start(mode: &str, args: &[&str]) -> Server {
        Server::start_command(mode, args, wharf_command(mode, args))
    }

    /// Like [`Server::start`], with the open-files limit of the server set to `nofile`
    /// (soft and hard) before it runs.
    pub fn start_with_nofile(mode: &str, args: &[&str], nofile: u64) -> Server {
        let mut cmd = wharf_command(mode, args);
        limit_open_files(&mut cmd, nofile);
        Server::start_command(mode, args, cmd)
    }

    /// Like [`Server::start`], with these environment variables set for the server (for
    /// example `RUST_LOG`).
    pub fn start_with_env(mode: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = wharf_command(mode, args);
        cmd.envs(env.iter().copied());
        Server::start_command(mode, args, cmd)
    }

    fn start_command(mode: &str, args: &[&str], mut cmd: Command) -> Server {
        // One line per plain listener, then one per TLS listener (the default plain one if
        // neither is given); UDP lines come after and are not awaited.
        let count = |flag: &str| args.iter().filter(|a| **a == flag).count();
        let expected = (count("--listen")
            + count("--tls-listen")
            + count("--proxy-listen")
            + count("--proxy-tls-listen"))
        .max(1);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("failed to spawn the wharf binary");
        let stderr = child.stderr.take().expect("child stderr was not piped");

        // Read stderr on a thread: every line is recorded, and forwarded on
        // the channel so that start() can wait for the listening lines.
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let lines = Arc::clone(&stderr_lines);
        let stderr_thread = thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines.lock().expect("stderr lines lock").push(line.clone());
                // The receiver goes away once startup is over; keep recording.
                let _ = tx.send(line);
            }
        });

        let mut server = Server {
            child,
            addrs: Vec::new(),
            listen_lines: Vec::new(),
            stderr_lines,
            stderr_thread: Some(stderr_thread),
        };

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while server.addrs.len() < expected {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(remaining) {
                Ok(line) => {
                    if !line.contains("listening on ") {
                        continue;
                    }
                    let (addr, _) = parse_listening_line(&line).unwrap_or_else(|| {
                        panic!("cannot parse a socket address out of stderr line {line:?}")
                    });
                    server.addrs.push(addr);
                    server.listen_lines.push(line);
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "wharf {mode} {args:?} did not print {expected} `listening on` line(s) \
                     within {STARTUP_TIMEOUT:?}; stderr so far:\n{}",
                    server.stderr_text()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = server.wait_for_exit(EXIT_TIMEOUT);
                    panic!(
                        "wharf {mode} {args:?} closed stderr ({status}) before printing \
                         {expected} `listening on` line(s); stderr:\n{}",
                        server.stderr_text()
                    )
                }
            }
        }
        server
    }

    /// The first (usually only) listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The first TLS listening address (a `listening on ADDR (MODE, tls)` line).
    pub fn tls_addr(&self) -> SocketAddr {
        self.listen_lines
            .iter()
            .filter_map(|line| parse_listening_line(line))
            .find(|(_, mode)| mode.contains(", tls"))
            .map(|(addr, _)| addr)
            .unwrap_or_else(|| panic!("no TLS listener among {:?}", self.listen_lines))
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Sends `sig` (e.g. `libc::SIGTERM`) to the server process.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
        // own child, which has not been reaped yet (we hold the Child).
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(
            rc,
            0,
            "kill({}, {sig}) failed: {}",
            self.pid(),
            io::Error::last_os_error()
        );
    }

    /// Everything the server wrote on stderr so far, one line per line.
    pub fn stderr_text(&self) -> String {
        self.stderr_lines
            .lock()
            .expect("stderr lines lock")
            .join("\n")
    }

    /// Panics (with the server's stderr) if the server has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait on the server") {
            panic!(
                "server exited unexpectedly ({status}); stderr:\n{}",
                self.stderr_text()
            );
        }
    }

    /// Waits (bounded) for the server to exit, then for its stderr to be
    /// fully read, and returns the exit status.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> ExitStatus {
        let status = wait_with_deadline(&mut self.child, timeout).unwrap_or_else(|| {
            panic!(
                "server did not exit within {timeout:?}; stderr so far:\n{}",
                self.stderr_text()
            )
        });
        // The pipe is closed now that the process is gone, so the reader
        // thread finishes promptly; joining makes stderr_text() complete.
        if let Some(handle) = self.stderr_thread.take() {
            let _ = handle.join();
        }
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if let Some(handle) = self.stderr_thread.take() {
            let _ = handle.join();
        }
    }
}

/// Polls `try_wait` until the child exits or `timeout` passes.
pub fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait on child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The outcome of a process run to completion.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion (stdin closed, stdout and stderr captured) and
/// returns its status and output. Kills it and panics if it does not exit
/// within `timeout` (e.g. a server that started although it should not have).
pub fn run_to_exit(mut cmd: Command, timeout: Duration) -> Finished {
    let description = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to spawn {description}: {e}"));

    // Drain both pipes on threads so a chatty child cannot block on a full
    // pipe while we wait for it.
    fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    }
    let stdout = drain(child.stdout.take().expect("child stdout was not piped"));
    let stderr = drain(child.stderr.take().expect("child stderr was not piped"));

    let status = match wait_with_deadline(&mut child, timeout) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap_or_default();
            panic!("{description} did not exit within {timeout:?}; stderr:\n{stderr}");
        }
    };
    Finished {
        status,
        stdout: stdout.join().expect("stdout reader thread panicked"),
        stderr: stderr.join().expect("stderr reader thread panicked"),
    }
}

/// Asserts that stderr looks like a clean error exit: no panic or backtrace.
pub fn assert_no_panic(stderr: &str) {
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "the binary panicked instead of reporting an error; stderr:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------
// Blocking client helpers
// ---------------------------------------------------------------------------

/// Connects a blocking client with TCP_NODELAY and bounded read/write timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr} failed: {e}"));
    stream.set_nodelay(true).expect("set TCP_NODELAY");
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("set read timeout");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("set write timeout");
    stream
}

/// A connection to `addr` from source address `src`.
pub fn connect_from(src: &str, addr: SocketAddr) -> TcpStream {
    let src: std::net::IpAddr = src.parse().expect("source address");
    let domain = if src.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(src, 0).into())
        .expect("bind the source address");
    socket.connect(&addr.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("read timeout");
    stream
}

/// Sets the open-files limit (soft and hard) of the process `command` starts.
pub fn limit_open_files(command: &mut Command, nofile: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Reads one line (up to and including `\n`), failing clearly on EOF, an error or a
/// timeout (the stream's read timeout), with what had been read by then.
pub fn read_line(stream: &mut impl Read) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        match stream.read(&mut byte) {
            Ok(0) => panic!("EOF after {:?}", String::from_utf8_lossy(&line)),
            Ok(_) => line.push(byte[0]),
            Err(e) => panic!(
                "reading a line after {:?}: {e}",
                String::from_utf8_lossy(&line)
            ),
        }
    }
    String::from_utf8(line).expect("a UTF-8 line")
}

/// Reads until EOF, failing clearly on a timeout or an error (e.g. a reset)
/// and showing what had been received by then.
pub fn read_to_eof(stream: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            panic!(
                "no EOF within {timeout:?}; received {} bytes so far: {}",
                received.len(),
                preview(&received)
            );
        }
        stream
            .set_read_timeout(Some(remaining))
            .expect("set read timeout");
        match stream.read(&mut buf) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {} // loop re-checks the deadline
            Err(e) => panic!(
                "read failed before EOF ({e}); received {} bytes so far: {}",
                received.len(),
                preview(&received)
            ),
        }
    }
}

/// Reads exactly `n` bytes (bounded by `timeout`), failing clearly otherwise.
pub fn read_exactly(stream: &mut TcpStream, n: usize, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut received = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            panic!(
                "only {filled} of {n} expected bytes within {timeout:?}: {}",
                preview(&received[..filled])
            );
        }
        stream
            .set_read_timeout(Some(remaining))
            .expect("set read timeout");
        match stream.read(&mut received[filled..]) {
            Ok(0) => panic!(
                "EOF after {filled} of {n} expected bytes: {}",
                preview(&received[..filled])
            ),
            Ok(k) => filled += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => panic!(
                "read failed after {filled} of {n} expected bytes ({e}): {}",
                preview(&received[..filled])
            ),
        }
    }
    received
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Writes `data` then half-closes (shutdown Write), then reads to EOF.
/// Only for small payloads: nothing is read while writing.
pub fn send_and_half_close(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    stream.write_all(data).expect("write request");
    stream.shutdown(Shutdown::Write).expect("shutdown(Write)");
    read_to_eof(&mut stream, IO_TIMEOUT)
}

/// A short, escaped rendering of bytes for failure messages.
pub fn preview(bytes: &[u8]) -> String {
    const MAX: usize = 200;
    if bytes.len() <= MAX {
        format!("\"{}\"", bytes.escape_ascii())
    } else {
        format!(
            "\"{}\"... ({} more bytes)",
            bytes[..MAX].escape_ascii(),
            bytes.len() - MAX
        )
    }
}

/// Like `assert_eq!` on byte strings, but never dumps megabytes: reports the
/// lengths, the first differing offset and a window around it.
#[track_caller]
pub fn assert_bytes_eq(context: &str, expected: &[u8], actual: &[u8]) {
    if expected == actual {
        return;
    }
    let first_diff = expected
        .iter()
        .zip(actual)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(actual.len()));
    let from = first_diff.saturating_sub(32);
    let window = |b: &[u8]| preview(&b[from.min(b.len())..(first_diff + 32).min(b.len())]);
    panic!(
        "{context}: byte mismatch: expected {} bytes, got {}; first difference at offset \
         {first_diff}\n  expected[{from}..]: {}\n  actual[{from}..]:   {}",
        expected.len(),
        actual.len(),
        window(expected),
        window(actual),
    );
}

/// A seeded RNG; the seed is printed (shown on failure) and can be forced
/// with WHARF_TEST_SEED to reproduce a failing run.
pub fn seeded_rng(test: &str) -> fastrand::Rng {
    let seed = std::env::var("WHARF_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("{test}: WHARF_TEST_SEED={seed}");
    fastrand::Rng::with_seed(seed)
}

/// `len` random bytes.
pub fn random_bytes(rng: &mut fastrand::Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

/// Whether this host can bind IPv6 loopback sockets at all.
pub fn ipv6_available() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

// ---------------------------------------------------------------------------
// Concurrent round-trip driver (mio)
// ---------------------------------------------------------------------------

/// State of one client connection driven by [`drive_round_trips`].
struct DrivenConn {
    stream: mio::net::TcpStream,
    payload: Vec<u8>,
    written: usize,
    connected: bool,
    shut_down: bool,
    received: Vec<u8>,
    eof: bool,
}

impl DrivenConn {
    fn done(&self) -> bool {
        self.shut_down && self.eof
    }

    fn describe(&self, index: usize) -> String {
        format!(
            "conn #{index}: connected={} wrote {}/{} bytes, half-closed={}, read {} bytes, eof={}",
            self.connected,
            self.written,
            self.payload.len(),
            self.shut_down,
            self.received.len(),
            self.eof
        )
    }
}

/// Opens one connection per payload to `addr` and drives them all
/// concurrently from a single thread with one mio `Poll`:
///
/// * each payload is written in random fragments of 1..=`max_fragment`
///   bytes (one `write` call per fragment, TCP_NODELAY on);
/// * the connection is read whenever it is readable, also while writing,
///   so neither side can deadlock on full socket buffers;
/// * after the last byte is written the client half-closes (shutdown Write)
///   and keeps reading until EOF.
///
/// The server is expected to echo each connection's bytes unchanged (echo
/// mode, or line mode without overlong lines): receiving more than was sent
/// is reported as a failure at once.
///
/// Returns the bytes received on each connection, in payload order. Panics
/// with a per-connection report if everything is not done within `timeout`.
pub fn drive_round_trips(
    addr: SocketAddr,
    payloads: Vec<Vec<u8>>,
    max_fragment: usize,
    rng: &mut fastrand::Rng,
    timeout: Duration,
) -> Vec<Vec<u8>> {
    drive_round_trips_from(&[], addr, payloads, max_fragment, rng, timeout)
}

/// [`drive_round_trips`], with connection `i` made from source address
/// `sources[i % sources.len()]` (e.g. 127.0.0.x, so that connections differ in more
/// than their port); from the system's choice if `sources` is empty.
pub fn drive_round_trips_from(
    sources: &[std::net::IpAddr],
    addr: SocketAddr,
    payloads: Vec<Vec<u8>>,
    max_fragment: usize,
    rng: &mut fastrand::Rng,
    timeout: Duration,
) -> Vec<Vec<u8>> {
    use mio::{Events, Interest, Poll, Token};

    assert!(max_fragment >= 1, "max_fragment must be at least 1");
    let deadline = Instant::now() + timeout;
    let mut poll = Poll::new().expect("create mio Poll");
    let mut conns: Vec<DrivenConn> = payloads
        .into_iter()
        .enumerate()
        .map(|(i, payload)| {
            let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
            let mut stream = connect_nonblocking(source, addr)
                .unwrap_or_else(|e| panic!("conn #{i}: connect to {addr} failed: {e}"));
            stream.set_nodelay(true).expect("set TCP_NODELAY");
            poll.registry()
                .register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .expect("register client socket with mio");
            DrivenConn {
                stream,
                payload,
                written: 0,
                connected: false,
                shut_down: false,
                received: Vec::new(),
                eof: false,
            }
        })
        .collect();

    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut remaining = conns.len();
    while remaining > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let incomplete: Vec<String> = conns
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.done())
                .map(|(i, c)| c.describe(i))
                .collect();
            panic!(
                "{} of {} connections incomplete after {timeout:?} (server stalled?):\n{}",
                incomplete.len(),
                conns.len(),
                incomplete
                    .iter()
                    .take(30)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        match poll.poll(&mut events, Some(left)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("mio poll failed: {e}"),
        }
        for event in events.iter() {
            let index = event.token().0;
            let conn = &mut conns[index];
            if conn.done() {
                continue;
            }
            // mio is edge-triggered: on every event, make all the progress
            // possible (until WouldBlock) or we may never hear back.
            if !conn.connected {
                // A non-blocking connect finishes when the socket becomes
                // writable; until then, writes and shutdown must wait (a
                // shutdown during SYN_SENT would abort the connection).
                if let Some(e) = conn.stream.take_error().expect("take_error") {
                    panic!("conn #{index}: connect to {addr} failed: {e}");
                }
                match conn.stream.peer_addr() {
                    Ok(_) => conn.connected = true,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                    Err(e) => panic!("conn #{index}: connect to {addr} failed: {e}"),
                }
            }
            if conn.connected {
                write_fragments(conn, index, max_fragment, rng);
            }
            read_available(conn, index, &mut buf);
            if conn.done() {
                remaining -= 1;
            }
        }
    }
    conns.into_iter().map(|c| c.received).collect()
}

fn write_fragments(
    conn: &mut DrivenConn,
    index: usize,
    max_fragment: usize,
    rng: &mut fastrand::Rng,
) {
    while conn.written < conn.payload.len() {
        let left = conn.payload.len() - conn.written;
        let fragment = rng.usize(1..=max_fragment).min(left);
        match conn
            .stream
            .write(&conn.payload[conn.written..conn.written + fragment])
        {
            Ok(0) => panic!("{}: write returned 0", conn.describe(index)),
            Ok(n) => conn.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("{}: write failed: {e}", conn.describe(index)),
        }
    }
    if !conn.shut_down {
        conn.stream
            .shutdown(Shutdown::Write)
            .unwrap_or_else(|e| panic!("{}: shutdown(Write) failed: {e}", conn.describe(index)));
        conn.shut_down = true;
    }
}

fn read_available(conn: &mut DrivenConn, index: usize, buf: &mut [u8]) {
    while !conn.eof {
        match conn.stream.read(buf) {
            Ok(0) => {
                conn.eof = true;
                if !conn.shut_down {
                    panic!(
                        "{}: server closed the connection before the client finished \
                         writing; received so far: {}",
                        conn.describe(index),
                        preview(&conn.received)
                    );
                }
            }
            Ok(n) => {
                conn.received.extend_from_slice(&buf[..n]);
                if conn.received.len() > conn.payload.len() {
                    panic!(
                        "{}: received more bytes than were sent",
                        conn.describe(index)
                    );
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return, // still connecting
            Err(e) => panic!("{}: read failed: {e}", conn.describe(index)),
        }
    }
}

/// Starts a non-blocking connect to `addr`, from `source` if given.
fn connect_nonblocking(
    source: Option<std::net::IpAddr>,
    addr: SocketAddr,
) -> io::Result<mio::net::TcpStream> {
    let Some(source) = source else {
        return mio::net::TcpStream::connect(addr);
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.set_nonblocking(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
}

/// Convenience: round-trips `payloads` through the driver and asserts that
/// every connection got back exactly what it sent.
pub fn assert_round_trips(
    addr: SocketAddr,
    payloads: Vec<Vec<u8>>,
    max_fragment: usize,
    rng: &mut fastrand::Rng,
    timeout: Duration,
) {
    let expected = payloads.clone();
    let received = drive_round_trips(addr, payloads, max_fragment, rng, timeout);
    for (i, (sent, got)) in expected.iter().zip(&received).enumerate() {
        assert_bytes_eq(&format!("connection #{i}"), sent, got);
    }
}

/// Waits (polling every few milliseconds) until `condition` holds; panics
/// with `what` if it does not within `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// CPU time (user + system) a process has used so far, from /proc/PID/stat.
pub fn cpu_time(pid: libc::pid_t) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat has a command name")
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// Resident memory of a process, from /proc/PID/status, in bytes.
pub fn rss_bytes(pid: libc::pid_t) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Writes `message`, then reads exactly as many bytes back: one echo round trip.
pub fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    use std::io::Write;
    stream
        .write_all(message)
        .expect("write the round-trip message");
    read_exactly(stream, message.len(), IO_TIMEOUT)
}

// ---------------------------------------------------------------------------
// Log lines and counters (the hardening tests)
// ---------------------------------------------------------------------------

impl Server {
    /// The stderr lines seen so far that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.stderr_lines
            .lock()
            .expect("stderr lines lock")
            .iter()
            .filter(|line| line.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits (bounded) until a stderr line contains `needle`, and returns the first one.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log_lines(needle).into_iter().next() {
                return line;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no stderr line containing {needle:?} within {timeout:?}; stderr:\n{}",
                    self.stderr_text()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends SIGUSR1 and returns the `stats:` line it makes the server log.
    pub fn request_stats(&self) -> String {
        let before = self.log_lines("stats: ").len();
        self.signal(libc::SIGUSR1);
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let lines = self.log_lines("stats: ");
            if lines.len() > before {
                return lines.last().expect("a stats line").clone();
            }
            if Instant::now() >= deadline {
                panic!(
                    "no `stats:` line within {IO_TIMEOUT:?} of SIGUSR1; stderr:\n{}",
                    self.stderr_text()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Asks for the counters (SIGUSR1) until the `stats:` line satisfies `condition`, and
    /// returns that line: the counters are updated by the server's event loop, a moment
    /// after the client saw the event they count.
    pub fn wait_for_stats(
        &self,
        timeout: Duration,
        what: &str,
        condition: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let line = self.request_stats();
            if condition(&line) {
                return line;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting until {what}; last stats line:\n{line}"
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The value of `field=N` in a `stats:` log line; panics if the field is missing.
pub fn stat(line: &str, field: &str) -> u64 {
    let key = format!("{field}=");
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key.as_str()))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no numeric `{key}` in stats line {line:?}"))
}
