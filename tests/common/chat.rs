//! Chat clients for the fan-out tests (tests/chat_fanout.rs): a member on a blocking socket
//! that reads whole lines (plain or mutual TLS), a crowd of members on non-blocking sockets
//! driven from one thread with one mio `Poll`, and a background reader that keeps a member's
//! input drained while the test writes from it.
//!
//! A crowd keeps one small record per member (no buffered reader of its own): a room of a few
//! thousand costs the test a few hundred KiB, so the server's memory is what a test measures.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use super::{connect, preview};

/// How long a member waits for one line before the test fails. Long enough for a loaded
/// machine; short enough that a behaviour the server lacks fails the test in seconds.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// One member, blocking
// ---------------------------------------------------------------------------

/// A chat member reading whole lines, each with a bounded wait ([`LINE_TIMEOUT`]). `S` is a
/// plain socket, or a TLS stream over one.
pub struct ChatMember<S: Read + Write = TcpStream> {
    stream: BufReader<S>,
    line: Vec<u8>,
}

impl ChatMember<TcpStream> {
    /// Connects to `addr` (TCP_NODELAY on, so each `say` goes out at once).
    pub fn join(addr: SocketAddr) -> ChatMember {
        let stream = connect(addr);
        stream
            .set_read_timeout(Some(LINE_TIMEOUT))
            .expect("set read timeout");
        ChatMember::over(stream)
    }

    /// A second handle on the same socket, for a [`Drain`] to read from while this one writes.
    pub fn socket(&self) -> TcpStream {
        self.stream.get_ref().try_clone().expect("clone the socket")
    }
}

impl<S: Read + Write> ChatMember<S> {
    /// A member over an established stream (whose reads must time out, as `join`'s do).
    pub fn over(stream: S) -> ChatMember<S> {
        ChatMember {
            stream: BufReader::new(stream),
            line: Vec::new(),
        }
    }

    /// Sends `text` and a `\n`, in one write.
    pub fn say(&mut self, text: &str) {
        self.send(format!("{text}\n").as_bytes());
    }

    /// Sends raw bytes, in one write.
    pub fn send(&mut self, bytes: &[u8]) {
        let stream = self.stream.get_mut();
        stream.write_all(bytes).expect("write to the chat server");
        stream.flush().expect("flush to the chat server");
    }

    /// The next line, `\n` included, as bytes. Panics on end of stream or after
    /// [`LINE_TIMEOUT`], with what had arrived of the line by then.
    pub fn line_bytes(&mut self) -> &[u8] {
        self.line.clear();
        match self.stream.read_until(b'\n', &mut self.line) {
            Ok(_) if self.line.ends_with(b"\n") => &self.line,
            Ok(_) => panic!("end of stream after {}", preview(&self.line)),
            Err(e) => panic!(
                "no whole line within {LINE_TIMEOUT:?} ({e}); got {}",
                preview(&self.line)
            ),
        }
    }

    /// The next line, `\n` included.
    pub fn line(&mut self) -> String {
        String::from_utf8_lossy(self.line_bytes()).into_owned()
    }

    /// Reads lines until one satisfies `wanted`, and returns it.
    pub fn line_where(&mut self, what: &str, wanted: impl Fn(&[u8]) -> bool) -> String {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            if wanted(self.line_bytes()) {
                return String::from_utf8_lossy(&self.line).into_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no line {what} within {LINE_TIMEOUT:?}; the last was {}",
                preview(&self.line)
            );
        }
    }

    /// Reads lines until one starts with `prefix`, and returns it.
    pub fn line_starting(&mut self, prefix: &str) -> String {
        self.line_where(&format!("starting with {prefix:?}"), |line| {
            line.starts_with(prefix.as_bytes())
        })
    }

    /// Reads lines up to and including one that starts with `prefix`; returns them all.
    pub fn lines_through(&mut self, prefix: &str) -> Vec<String> {
        let deadline = Instant::now() + LINE_TIMEOUT;
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            let last = line.starts_with(prefix);
            lines.push(line);
            if last {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "no line starting with {prefix:?} within {LINE_TIMEOUT:?}; got {lines:?}"
            );
        }
    }

    /// Sends `/who` and returns the names of the answer, in the order given.
    pub fn who(&mut self) -> Vec<String> {
        self.say("/who");
        who_names(&self.line_starting("* online:"))
    }
}

/// The names in a `* online: NAME NAME ...` line, in the order given.
pub fn who_names(line: &str) -> Vec<String> {
    line.strip_prefix("* online:")
        .unwrap_or_else(|| panic!("not an answer to /who: {line:?}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Which name a `* OLD is now NEW` line (possibly followed by an explanation) gives.
pub fn renamed_to(line: &str) -> Option<&str> {
    line.split_once(" is now ")?.1.split_whitespace().next()
}

// ---------------------------------------------------------------------------
// A member's input, drained in the background
// ---------------------------------------------------------------------------

/// Reads and discards a socket's input on a thread, so that a member the test only writes
/// from keeps up with what the room sends it (and is never a slow reader).
pub struct Drain {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<DrainEnd>>,
}

/// What a [`Drain`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainEnd {
    pub bytes: u64,
    /// The server closed the connection (end of stream or a reset) before the drain stopped.
    pub closed_by_server: bool,
}

impl Drain {
    pub fn start(mut socket: TcpStream) -> Drain {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        // Short reads let the thread notice `stop`; they are not a synchronisation.
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set read timeout");
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut end = DrainEnd {
                bytes: 0,
                closed_by_server: false,
            };
            while !stopped.load(Ordering::SeqCst) {
                match socket.read(&mut buf) {
                    Ok(0) => {
                        end.closed_by_server = true;
                        break;
                    }
                    Ok(n) => end.bytes += n as u64,
                    Err(e) if is_retry(&e) => {}
                    Err(_) => {
                        end.closed_by_server = true;
                        break;
                    }
                }
            }
            end
        });
        Drain {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops reading and reports.
    pub fn finish(mut self) -> DrainEnd {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .expect("a drain thread")
            .join()
            .expect("the drain thread panicked")
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

// ---------------------------------------------------------------------------
// Many members, non-blocking, one thread
// ---------------------------------------------------------------------------

/// Many chat members on non-blocking sockets, driven by [`Crowd::pump`]: it reads whatever
/// arrived, hands each complete line to the caller, and writes what [`Crowd::send`] queued.
/// Members are numbered in the order they were added.
pub struct Crowd {
    poll: Poll,
    events: Events,
    members: Vec<CrowdMember>,
    buf: Vec<u8>,
    gone: usize,
}

struct CrowdMember {
    /// `None` once the test closed it.
    stream: Option<mio::net::TcpStream>,
    /// The start of a line whose `\n` has not arrived yet.
    partial: Vec<u8>,
    /// Queued writes, each written with its own `write` calls, and how much of the first
    /// one has gone.
    out: VecDeque<Vec<u8>>,
    out_pos: usize,
    /// Why the connection ended, if the server ended it.
    gone: Option<String>,
}

impl Crowd {
    pub fn new() -> Crowd {
        Crowd {
            poll: Poll::new().expect("create a mio Poll"),
            events: Events::with_capacity(1024),
            members: Vec::new(),
            buf: vec![0u8; 64 * 1024],
            gone: 0,
        }
    }

    /// A crowd of `n` members, connected one after the other: the server accepts them in
    /// that order, so member `i` is the `i`-th to join.
    pub fn join(addr: SocketAddr, n: usize) -> Crowd {
        let mut crowd = Crowd::new();
        for _ in 0..n {
            crowd.add(addr);
        }
        crowd
    }

    /// Connects one more member (a blocking connect: it returns once the connection waits in
    /// the server's accept queue, so the server takes members in the order they are added).
    /// Returns its number.
    pub fn add(&mut self, addr: SocketAddr) -> usize {
        let index = self.members.len();
        let socket = connect(addr);
        socket.set_nonblocking(true).expect("set non-blocking");
        let mut stream = mio::net::TcpStream::from_std(socket);
        self.poll
            .registry()
            .register(
                &mut stream,
                Token(index),
                Interest::READABLE | Interest::WRITABLE,
            )
            .expect("register a member with mio");
        self.members.push(CrowdMember {
            stream: Some(stream),
            partial: Vec::new(),
            out: VecDeque::new(),
            out_pos: 0,
            gone: None,
        });
        index
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Members the server disconnected so far.
    pub fn gone(&self) -> usize {
        self.gone
    }

    /// Why the server disconnected member `i`, if it did.
    pub fn gone_reason(&self, i: usize) -> Option<&str> {
        self.members[i].gone.as_deref()
    }

    /// The first members the server disconnected, described, for failure messages.
    pub fn describe_gone(&self) -> String {
        self.members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.gone.as_ref().map(|why| format!("member {i}: {why}")))
            .take(10)
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Queues `bytes` for member `i`, to go out in as few `write` calls as the socket allows
    /// (one, unless its send buffer is full), after what was queued before.
    pub fn send(&mut self, i: usize, bytes: &[u8]) {
        self.members[i].out.push_back(bytes.to_vec());
        self.flush(i);
    }

    /// Closes member `i` (it leaves the room).
    pub fn close(&mut self, i: usize) {
        if let Some(mut stream) = self.members[i].stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
    }

    /// Waits at most `timeout` for something to happen, then reads everything that arrived
    /// (each complete line, `\n` included, goes to `on_line` with its member's number) and
    /// writes what is queued.
    pub fn pump(&mut self, timeout: Duration, mut on_line: impl FnMut(usize, &[u8])) {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => return,
            Err(e) => panic!("mio poll failed: {e}"),
        }
        let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
        for i in ready {
            self.receive(i, &mut on_line);
            self.flush(i);
        }
    }

    /// Like [`Crowd::pump`], for members the test only keeps up with: what arrived is read
    /// and thrown away, without looking for lines. Returns how many bytes that was.
    pub fn pump_discard(&mut self, timeout: Duration) -> u64 {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => return 0,
            Err(e) => panic!("mio poll failed: {e}"),
        }
        let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
        let mut bytes = 0;
        for i in ready {
            let member = &mut self.members[i];
            let Some(stream) = member.stream.as_mut() else {
                continue;
            };
            while member.gone.is_none() {
                match stream.read(&mut self.buf) {
                    Ok(0) => member.gone = Some("end of stream".into()),
                    Ok(n) => bytes += n as u64,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => member.gone = Some(e.to_string()),
                }
                if member.gone.is_some() {
                    self.gone += 1;
                }
            }
            self.flush(i);
        }
        bytes
    }

    /// Pumps until `done` holds, failing after `timeout` with `what` and `progress()`.
    pub fn pump_until<T>(
        &mut self,
        state: &mut T,
        timeout: Duration,
        what: &str,
        mut on_line: impl FnMut(&mut T, usize, &[u8]),
        done: impl Fn(&T) -> bool,
        progress: impl Fn(&T) -> String,
    ) {
        let deadline = Instant::now() + timeout;
        while !done(state) {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting until {what}: {}; members the server \
                 disconnected: {} ({})",
                progress(state),
                self.gone,
                self.describe_gone()
            );
            self.pump(Duration::from_millis(50), |i, line| on_line(state, i, line));
        }
    }

    /// Reads member `i` until the socket is drained (mio is edge-triggered).
    fn receive(&mut self, i: usize, on_line: &mut impl FnMut(usize, &[u8])) {
        let member = &mut self.members[i];
        let Some(stream) = member.stream.as_mut() else {
            return;
        };
        if member.gone.is_some() {
            return;
        }
        loop {
            let n = match stream.read(&mut self.buf) {
                Ok(0) => {
                    member.gone = Some("end of stream".into());
                    self.gone += 1;
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    member.gone = Some(e.to_string());
                    self.gone += 1;
                    return;
                }
            };
            let mut chunk = &self.buf[..n];
            // Finish the line begun in an earlier read, then hand over whole lines straight
            // from the read buffer: no copy per line.
            if !member.partial.is_empty() {
                let Some(end) = chunk.iter().position(|&b| b == b'\n') else {
                    member.partial.extend_from_slice(chunk);
                    continue;
                };
                member.partial.extend_from_slice(&chunk[..=end]);
                on_line(i, &member.partial);
                member.partial.clear();
                chunk = &chunk[end + 1..];
            }
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', chunk) {
                on_line(i, &chunk[start..=end]);
                start = end + 1;
            }
            member.partial.extend_from_slice(&chunk[start..]);
        }
    }

    fn flush(&mut self, i: usize) {
        let member = &mut self.members[i];
        let Some(stream) = member.stream.as_mut() else {
            return;
        };
        while let Some(piece) = member.out.front() {
            match stream.write(&piece[member.out_pos..]) {
                Ok(n) => {
                    member.out_pos += n;
                    if member.out_pos == piece.len() {
                        member.out.pop_front();
                        member.out_pos = 0;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // Still connecting (cannot happen after a blocking connect, but harmless).
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) => {
                    if member.gone.is_none() {
                        member.gone = Some(format!("write failed: {e}"));
                        self.gone += 1;
                    }
                    member.out.clear();
                    return;
                }
            }
        }
    }
}

impl Default for Crowd {
    fn default() -> Crowd {
        Crowd::new()
    }
}

/// Parses a decimal number at the start of `bytes`; returns it and the rest.
pub fn parse_number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 18 {
        return None;
    }
    let value = bytes[..digits]
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some((value, &bytes[digits..]))
}

// ---------------------------------------------------------------------------
// Open files
// ---------------------------------------------------------------------------

/// Raises this process's soft limit on open files to at least `wanted` (up to the hard
/// limit), so that a test, and the server it starts (which inherits the limit), can hold
/// thousands of connections. Returns the soft limit now in force.
pub fn raise_open_files_limit(wanted: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only to the struct it is given, which lives on this stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        panic!("getrlimit: {}", io::Error::last_os_error());
    }
    if limit.rlim_cur >= wanted {
        return limit.rlim_cur;
    }
    limit.rlim_cur = wanted.min(limit.rlim_max);
    // SAFETY: setrlimit reads only the struct it is given; raising the soft limit up to the
    // hard one needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        panic!("setrlimit: {}", io::Error::last_os_error());
    }
    limit.rlim_cur
}

// ---------------------------------------------------------------------------
// Mutual TLS
// ---------------------------------------------------------------------------

/// A chat member over TLS.
#[cfg(feature = "tls")]
pub type TlsMember = ChatMember<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>;

/// Joins over TLS at `addr`, trusting only `ca` and presenting the client certificate
/// `cert`/`key` (mutual TLS: the server names the member after the certificate's subject).
#[cfg(feature = "tls")]
pub fn join_tls(
    addr: SocketAddr,
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> TlsMember {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    let certs = |path: &std::path::Path| -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(ca) {
        roots.add(cert).expect("a usable CA certificate");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(
        certs(cert),
        PrivateKeyDer::from_pem_file(key).expect("the client key"),
    )
    .expect("a usable client certificate");
    let mut socket = connect(addr);
    socket
        .set_read_timeout(Some(LINE_TIMEOUT))
        .expect("set read timeout");
    let server_name = ServerName::try_from("localhost").expect("a server name");
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), server_name).expect("a TLS client");
    while conn.is_handshaking() {
        conn.complete_io(&mut socket)
            .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"));
    }
    ChatMember::over(rustls::StreamOwned::new(conn, socket))
}
