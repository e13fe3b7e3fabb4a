//! TLS termination (`--tls-listen`, feature `tls`), over real loopback sockets, with
//! certificates each test makes for itself (tests/common/certs.rs): line echo over TLS 1.2
//! and 1.3, the real `openssl s_client`, what a TLS port does with plaintext, a slow
//! handshake and a corrupt record, close_notify, mutual TLS and the identity it gives,
//! tokens over TLS, reloading the certificate on SIGHUP, backpressure, and start-up errors.
//!
//! The clients are rustls (ring provider), blocking over std sockets, except for the
//! concurrent round trips, which drive rustls sans-IO over mio like the server does.

#![cfg(feature = "tls")]

mod common;

use common::certs::{arg, make_test_pki, rotate_server_cert, TestPki};
use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    AlertDescription, ClientConfig, ClientConnection, ProtocolVersion, RootCertStore, StreamOwned,
    SupportedProtocolVersion,
};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

// ---------------------------------------------------------------------------
// Servers and clients
// ---------------------------------------------------------------------------

/// `wharf MODE` with a plain and a TLS listener on free ports, serving `pki`'s server
/// certificate, with `extra` flags.
fn start_tls(mode: &str, pki: &TestPki, extra: &[&str]) -> Server {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        arg(&pki.server_cert),
        "--tls-key",
        arg(&pki.server_key),
    ];
    args.extend_from_slice(extra);
    Server::start(mode, &args)
}

/// The certificates of a PEM file, in order.
fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A client trusting only `ca`, speaking only `versions`, presenting `identity` (a
/// certificate and key file) if given.
fn client_config(
    ca: &Path,
    versions: &[&'static SupportedProtocolVersion],
    identity: Option<(&Path, &Path)>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in pem_certs(ca) {
        roots.add(cert).expect("a usable CA certificate");
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .expect("protocol versions")
            .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                pem_certs(cert),
                PrivateKeyDer::from_pem_file(key).expect("the client key"),
            )
            .expect("a usable client certificate"),
    };
    Arc::new(config)
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("a server name")
}

/// Connects and completes the handshake, as far as the client can tell (in TLS 1.3 the
/// server judges a client certificate after that).
fn try_connect_tls(addr: SocketAddr, config: &Arc<ClientConfig>) -> io::Result<TlsStream> {
    let mut sock = connect(addr);
    let mut conn = ClientConnection::new(Arc::clone(config), localhost()).expect("a client");
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(StreamOwned::new(conn, sock))
}

fn connect_tls(addr: SocketAddr, config: &Arc<ClientConfig>) -> TlsStream {
    try_connect_tls(addr, config).unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"))
}

/// The TLS error inside an I/O error, if that is what it is.
fn tls_error(error: &io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

/// The leaf certificate the server presented.
fn served_cert(stream: &TlsStream) -> CertificateDer<'static> {
    stream
        .conn
        .peer_certificates()
        .expect("server certificates")[0]
        .clone()
}

/// Sends `text` and expects `reply` as the next line.
fn expect_reply(stream: &mut (impl Read + Write), text: &str, reply: &str) {
    stream.write_all(text.as_bytes()).expect("write");
    stream.flush().expect("flush");
    assert_eq!(read_line(stream), reply, "after sending {text:?}");
}

/// Reads to the end of a TLS stream: `Ok` only for a clean close_notify; `UnexpectedEof`
/// for a TCP end of stream without one.
fn read_to_close(stream: &mut TlsStream) -> io::Result<Vec<u8>> {
    let mut received = Vec::new();
    stream.read_to_end(&mut received).map(|_| received)
}

/// A client whose handshake or first exchange must fail: returns the TLS error it got (an
/// alert from the server, typically), panicking if anything was echoed.
fn refused(addr: SocketAddr, config: &Arc<ClientConfig>) -> rustls::Error {
    let mut stream = match try_connect_tls(addr, config) {
        Ok(stream) => stream,
        Err(e) => return tls_error(&e).cloned().unwrap_or_else(|| panic!("{e}")),
    };
    // The handshake finished as the client sees it: the verdict comes with the next read.
    let _ = stream
        .write_all(b"let me in\n")
        .and_then(|()| stream.flush());
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => panic!("a clean close, without an alert"),
        Ok(n) => panic!("served: {}", preview(&buf[..n])),
        Err(e) => tls_error(&e)
            .cloned()
            .unwrap_or_else(|| panic!("not a TLS error: {e}")),
    }
}

/// The bytes of a fresh ClientHello for `config`.
fn client_hello(config: &Arc<ClientConfig>) -> Vec<u8> {
    let mut conn = ClientConnection::new(Arc::clone(config), localhost()).expect("a client");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("a ClientHello");
    hello
}

/// A token file readable by its owner only.
fn token_file(pki: &TestPki) -> PathBuf {
    let path = pki.dir.join("tokens");
    std::fs::write(&path, "alice:tok-alice-000001\nbob:tok-bob-000000002\n")
        .expect("the token file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

// ---------------------------------------------------------------------------
// Echo over TLS
// ---------------------------------------------------------------------------

/// How a driven client ends its sending side.
#[derive(Debug, Clone, Copy, PartialEq)]
enum HalfClose {
    /// close_notify, then the TCP FIN.
    CloseNotifyThenFin,
    /// close_notify alone; the socket stays open until the server has closed.
    CloseNotify,
    /// The TCP FIN alone (a truncation, as far as TLS can tell).
    Fin,
}

/// One TLS client connection driven sans-IO over a non-blocking socket.
struct Driven {
    sock: mio::net::TcpStream,
    tls: ClientConnection,
    version: ProtocolVersion,
    half_close: HalfClose,
    payload: Vec<u8>,
    /// Plaintext handed to rustls.
    written: usize,
    /// Ciphertext rustls made that the socket has not taken yet.
    ciphertext: Vec<u8>,
    connected: bool,
    said_goodbye: bool,
    fin_sent: bool,
    tcp_eof: bool,
    received: Vec<u8>,
    /// The server's close_notify came, after everything it sent.
    clean_eof: bool,
}

impl Driven {
    fn done(&self) -> bool {
        self.clean_eof && self.said_goodbye && !self.backlogged()
    }

    /// Whether ciphertext waits to be written.
    fn backlogged(&self) -> bool {
        self.tls.wants_write() || !self.ciphertext.is_empty()
    }

    fn describe(&self, index: usize) -> String {
        format!(
            "conn #{index} ({:?}, {:?}): connected={} handshaking={} wrote {}/{} \
             goodbye={} fin={} read {} bytes, tcp_eof={} close_notify={}",
            self.version,
            self.half_close,
            self.connected,
            self.tls.is_handshaking(),
            self.written,
            self.payload.len(),
            self.said_goodbye,
            self.fin_sent,
            self.received.len(),
            self.tcp_eof,
            self.clean_eof
        )
    }

    /// Makes all the progress possible (the poller is edge-triggered).
    fn step(&mut self, index: usize, rng: &mut fastrand::Rng, buf: &mut [u8]) {
        if !self.connected {
            if let Some(e) = self.sock.take_error().expect("take_error") {
                panic!("conn #{index}: connect failed: {e}");
            }
            match self.sock.peer_addr() {
                Ok(_) => self.connected = true,
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) => panic!("conn #{index}: connect failed: {e}"),
            }
        }
        loop {
            let mut progress = self.receive(index, buf);
            progress |= self.send(index, rng);
            if !progress {
                return;
            }
        }
    }

    fn receive(&mut self, index: usize, buf: &mut [u8]) -> bool {
        if self.tcp_eof {
            return false;
        }
        let progress = match self.tls.read_tls(&mut self.sock) {
            Ok(0) => {
                self.tcp_eof = true;
                true
            }
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Err(e) => panic!("{}: read: {e}", self.describe(index)),
        };
        if let Err(e) = self.tls.process_new_packets() {
            panic!("{}: TLS error: {e}", self.describe(index));
        }
        loop {
            match self.tls.reader().read(buf) {
                Ok(0) => {
                    self.clean_eof = true;
                    break;
                }
                Ok(n) => {
                    self.received.extend_from_slice(&buf[..n]);
                    assert!(
                        self.received.len() <= self.payload.len(),
                        "{}: more bytes back than were sent",
                        self.describe(index)
                    );
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!(
                    "{}: {e} (the server closed without close_notify?)",
                    self.describe(index)
                ),
            }
        }
        progress
    }

    fn send(&mut self, index: usize, rng: &mut fastrand::Rng) -> bool {
        let mut progress = false;
        // Plaintext once the handshake is done, one random fragment at a time, each its own
        // record; no more while the socket has not taken the last one.
        while !self.tls.is_handshaking() && self.written < self.payload.len() && !self.backlogged()
        {
            let end = (self.written + fragment(rng)).min(self.payload.len());
            self.tls
                .writer()
                .write_all(&self.payload[self.written..end])
                .expect("plaintext into rustls");
            self.written = end;
            progress |= self.flush(index, rng);
        }
        if !self.tls.is_handshaking() && self.written == self.payload.len() && !self.said_goodbye {
            self.said_goodbye = true;
            progress = true;
            if self.half_close != HalfClose::Fin {
                self.tls.send_close_notify();
            }
        }
        progress |= self.flush(index, rng);
        if self.said_goodbye
            && !self.fin_sent
            && !self.backlogged()
            && self.half_close != HalfClose::CloseNotify
        {
            self.sock
                .shutdown(Shutdown::Write)
                .unwrap_or_else(|e| panic!("{}: shutdown: {e}", self.describe(index)));
            self.fin_sent = true;
            progress = true;
        }
        progress
    }

    /// Writes the records rustls has ready in random fragments, one write each, so that
    /// the server reads handshake messages and records in pieces; true if any went out.
    fn flush(&mut self, index: usize, rng: &mut fastrand::Rng) -> bool {
        while self.tls.wants_write() {
            self.tls
                .write_tls(&mut self.ciphertext)
                .expect("rustls writes into a Vec");
        }
        let mut progress = false;
        while !self.ciphertext.is_empty() {
            let end = fragment(rng).min(self.ciphertext.len());
            match self.sock.write(&self.ciphertext[..end]) {
                Ok(n) => {
                    self.ciphertext.drain(..n);
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("{}: write: {e}", self.describe(index)),
            }
        }
        progress
    }
}

/// A random write size: half the time a few bytes, else up to about a segment.
fn fragment(rng: &mut fastrand::Rng) -> usize {
    let max = if rng.bool() { 8 } else { 1500 };
    rng.usize(1..=max)
}

/// Random lines: random bytes (NUL, `\r`, non-UTF-8 included) of random lengths, each
/// ended by `\n`, and half the time a last line without one.
fn random_lines(rng: &mut fastrand::Rng) -> Vec<u8> {
    let target = rng.usize(1..=12 * 1024);
    let mut payload = Vec::with_capacity(target + 400);
    while payload.len() < target {
        // Now and then a line longer than a TLS record (16 KiB).
        let len = if rng.u8(..20) == 0 {
            rng.usize(16 * 1024..40 * 1024)
        } else {
            rng.usize(0..400)
        };
        for _ in 0..len {
            payload.push(loop {
                let byte = rng.u8(..);
                if byte != b'\n' {
                    break byte;
                }
            });
        }
        payload.push(b'\n');
    }
    if rng.bool() {
        payload.extend_from_slice(b"an unterminated last line");
    }
    payload
}

#[test]
fn line_echo_is_byte_exact_over_tls12_and_tls13_on_100_concurrent_connections() {
    use mio::{Events, Interest, Poll, Token};

    let pki = make_test_pki("concurrent");
    let server = start_tls("line", &pki, &[]);
    let addr = server.tls_addr();
    let mut rng = seeded_rng("line_echo_over_tls_concurrent");
    let configs = [
        (
            client_config(&pki.ca, TLS12, None),
            ProtocolVersion::TLSv1_2,
        ),
        (
            client_config(&pki.ca, TLS13, None),
            ProtocolVersion::TLSv1_3,
        ),
    ];
    let endings = [
        HalfClose::CloseNotifyThenFin,
        HalfClose::CloseNotify,
        HalfClose::Fin,
    ];
    let mut poll = Poll::new().expect("a poller");
    let mut conns: Vec<Driven> = (0..100)
        .map(|i| {
            let (config, version) = &configs[i % 2];
            let mut sock = mio::net::TcpStream::connect(addr).expect("connect");
            sock.set_nodelay(true).expect("TCP_NODELAY");
            poll.registry()
                .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)
                .expect("register");
            Driven {
                sock,
                tls: ClientConnection::new(Arc::clone(config), localhost()).expect("a client"),
                version: *version,
                half_close: endings[i % 3],
                payload: random_lines(&mut rng),
                written: 0,
                ciphertext: Vec::new(),
                connected: false,
                said_goodbye: false,
                fin_sent: false,
                tcp_eof: false,
                received: Vec::new(),
                clean_eof: false,
            }
        })
        .collect();

    let timeout = Duration::from_secs(30);
    let deadline = Instant::now() + timeout;
    let mut events = Events::with_capacity(256);
    let mut buf = vec![0u8; 64 * 1024];
    while conns.iter().any(|c| !c.done()) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let stuck: Vec<String> = (conns.iter().enumerate())
                .filter(|(_, c)| !c.done())
                .map(|(i, c)| c.describe(i))
                .take(20)
                .collect();
            panic!("incomplete after {timeout:?}:\n{}", stuck.join("\n"));
        }
        match poll.poll(&mut events, Some(left)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("poll: {e}"),
        }
        for event in events.iter() {
            let index = event.token().0;
            if !conns[index].done() {
                conns[index].step(index, &mut rng, &mut buf);
            }
        }
    }
    for (i, conn) in conns.iter().enumerate() {
        assert_eq!(
            conn.tls.protocol_version(),
            Some(conn.version),
            "conn #{i}: the version asked for"
        );
        // A TCP end of stream without close_notify is a truncation: an unterminated last
        // line is not echoed.
        let expected = match conn.half_close {
            HalfClose::Fin => {
                let whole = conn.payload.iter().rposition(|&b| b == b'\n');
                &conn.payload[..whole.map_or(0, |at| at + 1)]
            }
            _ => &conn.payload[..],
        };
        assert_bytes_eq(&conn.describe(i), expected, &conn.received);
    }
    let truncated = conns
        .iter()
        .filter(|c| c.half_close == HalfClose::Fin)
        .count() as u64;
    let line = server.wait_for_stats(IO_TIMEOUT, "all 100 closed", |line| {
        stat(line, "closed") == 100
    });
    assert_eq!(stat(&line, "tls_handshakes"), 100, "{line}");
    assert_eq!(stat(&line, "tls_errors"), 0, "{line}");
    assert_eq!(stat(&line, "closed_by_peer"), 100 - truncated, "{line}");
    assert_eq!(stat(&line, "tls_truncated"), truncated, "{line}");
}

#[test]
fn the_server_answers_a_half_close_with_everything_owed_then_close_notify_and_a_truncation_loses_the_unterminated_line(
) {
    let pki = make_test_pki("half-close");
    let server = start_tls("line", &pki, &[]);
    for versions in [TLS12, TLS13] {
        for close_notify in [true, false] {
            let mut client =
                connect_tls(server.tls_addr(), &client_config(&pki.ca, versions, None));
            client
                .write_all(b"first\nlast, unterminated")
                .expect("write");
            if close_notify {
                client.conn.send_close_notify();
            }
            client.flush().expect("flush");
            client.sock.shutdown(Shutdown::Write).expect("shutdown");
            let received = read_to_close(&mut client).unwrap_or_else(|e| {
                panic!("{versions:?} close_notify={close_notify}: no clean close_notify: {e}")
            });
            // Without close_notify the stream may have been cut short: the last line is not
            // taken as whole (issue 16).
            let expected: &[u8] = if close_notify {
                b"first\nlast, unterminated"
            } else {
                b"first\n"
            };
            assert_eq!(
                received, expected,
                "{versions:?} close_notify={close_notify}"
            );
        }
    }
}

#[test]
fn a_close_by_the_server_sends_close_notify() {
    let pki = make_test_pki("server-close");
    let server = start_tls("line", &pki, &["--max-line", "16", "--idle-timeout", "1"]);
    let config = client_config(&pki.ca, TLS13, None);

    // The handler closes (an overlong line): the refusal, then close_notify.
    let mut overlong = connect_tls(server.tls_addr(), &config);
    overlong
        .write_all(b"ok\nthis line is far too long\n")
        .expect("write");
    overlong.flush().expect("flush");
    let received = read_to_close(&mut overlong).expect("a clean close_notify after the refusal");
    assert_eq!(
        String::from_utf8_lossy(&received),
        "ok\nERR line too long (max 16 bytes)\n"
    );

    // The reactor closes (idle timeout): close_notify all the same.
    let mut idle = connect_tls(server.tls_addr(), &config);
    expect_reply(&mut idle, "still here\n", "still here\n");
    let received = read_to_close(&mut idle).expect("a clean close_notify at the idle timeout");
    assert!(received.is_empty(), "{}", preview(&received));
    let line = server.request_stats();
    assert_eq!(stat(&line, "idle_timeouts"), 1, "{line}");
}

#[test]
fn a_drain_ends_tls_connections_with_close_notify() {
    let pki = make_test_pki("drain");
    let mut server = start_tls("line", &pki, &["--drain-timeout", "1"]);
    let config = client_config(&pki.ca, TLS12, None);
    let mut finishing = connect_tls(server.tls_addr(), &config);
    let mut idle = connect_tls(server.tls_addr(), &config);
    expect_reply(&mut idle, "idle\n", "idle\n");
    server.signal(libc::SIGTERM);
    server.wait_for_log("draining", IO_TIMEOUT);
    // One finishes during the drain: its echo, then close_notify.
    finishing.write_all(b"last words").expect("write");
    finishing.conn.send_close_notify();
    finishing.flush().expect("flush");
    let received = read_to_close(&mut finishing).expect("a clean close during the drain");
    assert_eq!(received, b"last words");
    // The other is closed when the drain runs out of time, with close_notify all the same.
    let received = read_to_close(&mut idle).expect("a clean close at the end of the drain");
    assert!(received.is_empty(), "{}", preview(&received));
    assert!(server.wait_for_exit(EXIT_TIMEOUT).success());
}

// ---------------------------------------------------------------------------
// openssl s_client
// ---------------------------------------------------------------------------

fn openssl_available() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        eprintln!("skipping: no `openssl` binary on this machine (.ci/run installs it)");
    }
    found
}

/// Runs `openssl s_client` against `addr` trusting `ca`, sends `input`, waits until the
/// echo of `input` has been printed, then closes its stdin (it sends close_notify and
/// exits). Returns what it printed.
fn s_client(addr: SocketAddr, ca: &Path, version: &str, input: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-CAfile"])
        .arg(ca)
        .args(["-servername", "localhost", "-verify_hostname", "localhost"])
        .args(["-verify_return_error", "-showcerts", version])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl s_client");
    let collect = |mut pipe: Box<dyn Read + Send>| {
        let text = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&text);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        text
    };
    let stdout = collect(Box::new(child.stdout.take().expect("stdout")));
    let stderr = collect(Box::new(child.stderr.take().expect("stderr")));
    let text =
        |pipe: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&pipe.lock().unwrap()).into_owned();
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.as_bytes())
        .expect("write to s_client");
    let deadline = Instant::now() + IO_TIMEOUT;
    while !text(&stdout).contains(input) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "s_client exited ({status}) before the echo; stdout:\n{}\nstderr:\n{}",
                text(&stdout),
                text(&stderr)
            );
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!(
                "no echo from s_client within {IO_TIMEOUT:?}; stdout:\n{}",
                text(&stdout)
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
    drop(stdin);
    let status = wait_with_deadline(&mut child, EXIT_TIMEOUT).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("s_client did not exit after its stdin closed")
    });
    assert!(
        status.success(),
        "s_client: {status}; stderr:\n{}",
        text(&stderr)
    );
    text(&stdout)
}

#[test]
fn openssl_s_client_verifies_the_configured_certificate_and_gets_line_echo() {
    if !openssl_available() {
        return;
    }
    let pki = make_test_pki("s-client");
    let server = start_tls("line", &pki, &[]);
    let configured = pem_certs(&pki.server_cert).remove(0);
    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let input = format!("hello over {version}\nsecond line\n");
        let out = s_client(server.tls_addr(), &pki.ca, flag, &input);
        assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
        assert!(out.contains(&format!("New, {version}, Cipher is")), "{out}");
        // -showcerts prints the chain as served, leaf first.
        let served = CertificateDer::pem_slice_iter(out.as_bytes())
            .next()
            .expect("a certificate in the s_client output")
            .expect("a PEM certificate");
        assert!(
            served == configured,
            "s_client was served another certificate"
        );
    }
    let line = server.wait_for_stats(IO_TIMEOUT, "both closed", |line| stat(line, "closed") == 2);
    assert_eq!(stat(&line, "tls_handshakes"), 2, "{line}");
    assert_eq!(stat(&line, "tls_errors"), 0, "{line}");
}

// ---------------------------------------------------------------------------
// Hostile and broken clients
// ---------------------------------------------------------------------------

#[test]
fn plaintext_to_a_tls_port_closes_only_that_connection_with_a_rate_limited_log_line() {
    let pki = make_test_pki("plaintext");
    let server = start_tls("line", &pki, &[]);
    let mut bystander = connect_tls(server.tls_addr(), &client_config(&pki.ca, TLS13, None));
    expect_reply(&mut bystander, "before\n", "before\n");

    let started = Instant::now();
    for _ in 0..20 {
        let mut plain = connect(server.tls_addr());
        plain
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .expect("write");
        let reply = read_to_eof(&mut plain, IO_TIMEOUT);
        // A fatal alert record (content type 21) and the end, never an echo.
        assert_eq!(reply.first(), Some(&21), "{}", preview(&reply));
        assert!(reply.len() <= 7, "more than one alert: {}", preview(&reply));
    }
    let took = started.elapsed();

    expect_reply(&mut bystander, "after\n", "after\n");
    let line = server.wait_for_stats(IO_TIMEOUT, "20 TLS errors", |line| {
        stat(line, "tls_errors") == 20
    });
    assert_eq!(stat(&line, "tls_handshakes"), 1, "{line}");
    assert_eq!(
        stat(&line, "active"),
        1,
        "only the bystander is left: {line}"
    );
    let logged = server.log_lines("closing: TLS error");
    assert!(
        !logged.is_empty() && logged.len() as u64 <= took.as_secs() + 2,
        "{} log lines for 20 plaintext connections in {took:?}, at most one a second:\n{}",
        logged.len(),
        logged.join("\n")
    );
    assert!(logged[0].contains("peer=127.0.0.1:"), "{}", logged[0]);
}

#[test]
fn a_client_that_never_finishes_the_handshake_is_closed_at_the_timeout_and_others_are_served() {
    let pki = make_test_pki("slowloris");
    let server = start_tls("line", &pki, &["--tls-handshake-timeout", "1"]);
    let config = client_config(&pki.ca, TLS13, None);
    let mut bystander = connect_tls(server.tls_addr(), &config);
    expect_reply(&mut bystander, "before\n", "before\n");

    // A real ClientHello, dribbled a byte per 100 ms: activity does not buy more time.
    let hello = client_hello(&config);
    let mut slow = connect(server.tls_addr());
    let opened = Instant::now();
    slow.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let mut sent = 0;
    let mut received = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                assert!(
                    opened.elapsed() < Duration::from_secs(20),
                    "not closed within 20 s of a 1 s handshake timeout"
                );
                if sent + 1 < hello.len() {
                    slow.write_all(&hello[sent..sent + 1]).expect("dribble");
                    sent += 1;
                }
                if sent == 3 {
                    // Meanwhile, a new client gets through its handshake at once.
                    let mut fresh = connect_tls(server.tls_addr(), &config);
                    expect_reply(&mut fresh, "during\n", "during\n");
                }
            }
            Err(e) => panic!("the slow client's read: {e}"),
        }
    }
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed after {took:?}, before the 1 s handshake timeout"
    );
    // Nothing but, perhaps, a close_notify alert in the clear.
    assert!(
        received.is_empty() || received == [21, 3, 3, 0, 2, 1, 0],
        "{}",
        preview(&received)
    );
    // The bystander, open for longer than the handshake timeout, is not subject to it.
    expect_reply(&mut bystander, "after\n", "after\n");
    let line = server.request_stats();
    assert_eq!(stat(&line, "tls_handshake_timeouts"), 1, "{line}");
    assert_eq!(stat(&line, "tls_handshakes"), 2, "{line}");
}

#[test]
fn a_corrupt_record_mid_stream_closes_that_connection_with_bad_record_mac() {
    let pki = make_test_pki("corrupt");
    let server = start_tls("line", &pki, &[]);
    let mut bystander = connect_tls(server.tls_addr(), &client_config(&pki.ca, TLS13, None));
    for versions in [TLS12, TLS13] {
        let mut victim = connect_tls(server.tls_addr(), &client_config(&pki.ca, versions, None));
        expect_reply(&mut victim, "intact\n", "intact\n");
        // A record of the client's own making, its last byte (the tag) flipped in transit.
        victim
            .conn
            .writer()
            .write_all(b"tampered\n")
            .expect("write");
        let mut record = Vec::new();
        victim.conn.write_tls(&mut record).expect("a record");
        *record.last_mut().expect("a non-empty record") ^= 0x01;
        victim.sock.write_all(&record).expect("write the record");
        let mut buf = [0u8; 64];
        match victim.read(&mut buf) {
            Err(e) => assert_eq!(
                tls_error(&e),
                Some(&rustls::Error::AlertReceived(
                    AlertDescription::BadRecordMac
                )),
                "{versions:?}: {e}"
            ),
            Ok(n) => panic!("{versions:?}: read {n} bytes after a corrupt record"),
        }
        // And then the end of the stream.
        assert!(read_to_eof(&mut victim.sock, IO_TIMEOUT).is_empty());
        expect_reply(&mut bystander, "unaffected\n", "unaffected\n");
    }
    // The victims' sockets are closed: the server lets them go once it reads that.
    let line = server.wait_for_stats(IO_TIMEOUT, "the victims closed", |line| {
        stat(line, "active") == 1
    });
    assert_eq!(stat(&line, "tls_errors"), 2, "{line}");
    assert_eq!(stat(&line, "tls_handshakes"), 3, "{line}");
}

#[test]
fn a_full_server_closes_a_tls_client_without_a_plaintext_line() {
    let pki = make_test_pki("full");
    let server = start_tls("line", &pki, &["--max-conns", "1"]);
    let config = client_config(&pki.ca, TLS13, None);
    let mut served = connect_tls(server.tls_addr(), &config);
    expect_reply(&mut served, "served\n", "served\n");
    // `ERR server full` in the clear would reach a TLS client as a corrupt record: it gets
    // the close alone (an end of stream, or a reset if its ClientHello came after it).
    let mut refused = connect(server.tls_addr());
    let _ = refused.write_all(&client_hello(&config));
    let mut received = Vec::new();
    if let Err(e) = refused.read_to_end(&mut received) {
        assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    }
    assert!(received.is_empty(), "{}", preview(&received));
    // A plain client still gets the line.
    assert_eq!(
        read_to_eof(&mut connect(server.addr()), IO_TIMEOUT),
        b"ERR server full (max 1 connections)\n"
    );
    expect_reply(&mut served, "still served\n", "still served\n");
    let line = server.request_stats();
    assert_eq!(stat(&line, "rejected"), 2, "{line}");
}

// ---------------------------------------------------------------------------
// Mutual TLS, identities, tokens
// ---------------------------------------------------------------------------

#[test]
fn mutual_tls_refuses_a_missing_or_foreign_client_certificate() {
    let pki = make_test_pki("mtls-refused");
    let server = start_tls("chat", &pki, &["--tls-client-ca", arg(&pki.ca)]);
    let mut watcher = connect(server.addr());
    for versions in [TLS12, TLS13] {
        let none = refused(server.tls_addr(), &client_config(&pki.ca, versions, None));
        assert_eq!(
            none,
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
            "{versions:?}, no client certificate"
        );
        let foreign = Some((&*pki.other_client_cert, &*pki.other_client_key));
        let foreign = refused(
            server.tls_addr(),
            &client_config(&pki.ca, versions, foreign),
        );
        assert_eq!(
            foreign,
            rustls::Error::AlertReceived(AlertDescription::UnknownCA),
            "{versions:?}, a certificate from another CA"
        );
    }
    // None of them joined the room: the next member the watcher hears of is this one.
    let _next = connect(server.addr());
    assert_eq!(read_line(&mut watcher), "* user2 joined\n");
    let line = server.request_stats();
    assert_eq!(stat(&line, "tls_errors"), 4, "{line}");
    assert_eq!(stat(&line, "tls_handshakes"), 0, "{line}");
}

#[test]
fn a_client_certificate_subject_is_the_identity_and_the_chat_name() {
    let pki = make_test_pki("mtls-name");
    let server = start_tls("chat", &pki, &["--tls-client-ca", arg(&pki.ca)]);
    let mut watcher = connect(server.addr());
    for versions in [TLS12, TLS13] {
        let identity = Some((&*pki.client_cert, &*pki.client_key));
        let mut alice = connect_tls(
            server.tls_addr(),
            &client_config(&pki.ca, versions, identity),
        );
        assert_eq!(read_line(&mut watcher), "* client-alice joined\n");
        expect_reply(&mut alice, "/who\n", "* online: client-alice user1\n");
        alice.write_all(b"hi\n").expect("write");
        alice.flush().expect("flush");
        assert_eq!(read_line(&mut watcher), "<client-alice> hi\n");
        expect_reply(
            &mut alice,
            "/nick mallory\n",
            "ERR your name is client-alice, set by authentication\n",
        );
        drop(alice);
        assert_eq!(read_line(&mut watcher), "* client-alice left\n");
    }
    // Without a DNS name, the common name.
    let identity = Some((&*pki.cn_client_cert, &*pki.cn_client_key));
    let mut bob = connect_tls(server.tls_addr(), &client_config(&pki.ca, TLS13, identity));
    assert_eq!(
        read_line(&mut watcher),
        format!("* {} joined\n", pki.cn_client_name)
    );
    expect_reply(
        &mut bob,
        "/who\n",
        &format!("* online: {} user1\n", pki.cn_client_name),
    );
}

#[test]
fn over_tls_without_a_client_certificate_the_first_line_must_be_auth() {
    let pki = make_test_pki("tls-tokens");
    let tokens = token_file(&pki);
    let server = start_tls("line", &pki, &["--auth-tokens", arg(&tokens)]);
    let mut client = connect_tls(server.tls_addr(), &client_config(&pki.ca, TLS13, None));
    expect_reply(&mut client, "hello\n", "ERR auth required\n");
    expect_reply(&mut client, "AUTH tok-bob-000000002\n", "OK bob\n");
    expect_reply(&mut client, "hello\n", "hello\n");
    let line = server.request_stats();
    assert_eq!(stat(&line, "auth_ok"), 1, "{line}");
}

#[test]
fn a_client_certificate_is_authentication_enough_when_tokens_are_on() {
    let pki = make_test_pki("cert-and-tokens");
    let tokens = token_file(&pki);
    let server = start_tls(
        "chat",
        &pki,
        &[
            "--auth-tokens",
            arg(&tokens),
            "--tls-client-ca",
            arg(&pki.ca),
        ],
    );
    let identity = Some((&*pki.client_cert, &*pki.client_key));
    let mut alice = connect_tls(server.tls_addr(), &client_config(&pki.ca, TLS13, identity));
    // No AUTH line: the first line is served.
    expect_reply(&mut alice, "/who\n", "* online: client-alice\n");
    let mut bob = connect(server.addr());
    expect_reply(&mut bob, "AUTH tok-bob-000000002\n", "OK bob\n");
    assert_eq!(read_line(&mut alice), "* bob joined\n");
    let line = server.request_stats();
    assert_eq!(stat(&line, "auth_ok"), 1, "only bob used a token: {line}");
}

// ---------------------------------------------------------------------------
// Reloading the certificate
// ---------------------------------------------------------------------------

#[test]
fn after_sighup_new_clients_get_the_new_certificate_and_old_ones_keep_working() {
    let pki = make_test_pki("reload");
    let server = start_tls("line", &pki, &[]);
    let old_cert = pem_certs(&pki.server_cert).remove(0);
    let old_ca = client_config(&pki.ca, TLS13, None);
    let mut before = connect_tls(server.tls_addr(), &old_ca);
    assert!(served_cert(&before) == old_cert);
    expect_reply(&mut before, "before\n", "before\n");

    let new_ca = rotate_server_cert(&pki);
    let new_cert = pem_certs(&pki.server_cert).remove(0);
    assert!(new_cert != old_cert);
    server.signal(libc::SIGHUP);
    let logged = server.wait_for_log("certificate reloaded", IO_TIMEOUT);
    let listener = format!("TLS listener {}: ", server.tls_addr());
    assert!(logged.contains(&listener), "{logged}");

    let mut after = connect_tls(server.tls_addr(), &client_config(&new_ca, TLS12, None));
    assert!(served_cert(&after) == new_cert, "the new certificate");
    expect_reply(&mut after, "after\n", "after\n");
    // A client trusting only the old CA is now refused the new certificate.
    let error = try_connect_tls(server.tls_addr(), &old_ca)
        .expect_err("the old CA does not vouch for the new certificate");
    assert!(
        matches!(
            tls_error(&error),
            Some(rustls::Error::InvalidCertificate(_))
        ),
        "{error}"
    );
    // The connection made before the reload goes on with its own session.
    expect_reply(&mut before, "still here\n", "still here\n");
    before.conn.send_close_notify();
    before.flush().expect("flush");
    assert!(read_to_close(&mut before)
        .expect("a clean close")
        .is_empty());
}

#[test]
fn a_broken_pair_on_sighup_is_logged_and_the_old_certificate_kept() {
    let pki = make_test_pki("reload-broken");
    let server = start_tls("line", &pki, &[]);
    let old_cert = pem_certs(&pki.server_cert).remove(0);
    let config = client_config(&pki.ca, TLS13, None);

    // Half a rotation: a new certificate, but the old key still beside it.
    let old_key = std::fs::read(&pki.server_key).expect("read the key");
    rotate_server_cert(&pki);
    std::fs::write(&pki.server_key, old_key).expect("put the old key back");
    server.signal(libc::SIGHUP);
    let logged = server.wait_for_log("reload failed, keeping the old certificate", IO_TIMEOUT);
    assert!(logged.contains(arg(&pki.server_cert)), "{logged}");
    assert!(server.log_lines("certificate reloaded").is_empty());

    let mut client = connect_tls(server.tls_addr(), &config);
    assert!(served_cert(&client) == old_cert, "the old certificate");
    expect_reply(&mut client, "served\n", "served\n");
}

// ---------------------------------------------------------------------------
// Backpressure
// ---------------------------------------------------------------------------

#[test]
fn max_outbuf_backpressure_holds_over_tls_and_nothing_is_lost() {
    const FLOOD: usize = 64 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let pki = make_test_pki("backpressure");
    let server = start_tls("echo", &pki, &["--max-outbuf", "65536"]);
    let mut rng = seeded_rng("tls_backpressure");
    let data = random_bytes(&mut rng, CHUNK);
    let mut sock = connect(server.tls_addr());
    let mut tls =
        ClientConnection::new(client_config(&pki.ca, TLS13, None), localhost()).expect("a client");
    while tls.is_handshaking() {
        tls.complete_io(&mut sock).expect("handshake");
    }
    let rss_before = rss_bytes(server.pid());

    // Send without reading until a write makes no progress for a second.
    sock.set_write_timeout(Some(Duration::from_secs(1)))
        .expect("write timeout");
    let mut sent = 0;
    loop {
        if !tls.wants_write() {
            if sent == FLOOD {
                break;
            }
            tls.writer().write_all(&data).expect("plaintext");
            sent += CHUNK;
        }
        match tls.write_tls(&mut sock) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(
        sent < FLOOD,
        "the server read all {FLOOD} bytes without the client reading: no backpressure"
    );

    let rss_stalled = rss_bytes(server.pid());

    // Read it all back, byte-exact, sending the rest as the server makes room.
    use mio::{Events, Interest, Poll, Token};
    sock.set_nonblocking(true).expect("non-blocking");
    let mut sock = mio::net::TcpStream::from_std(sock);
    let mut poll = Poll::new().expect("a poller");
    poll.registry()
        .register(&mut sock, Token(0), Interest::READABLE | Interest::WRITABLE)
        .expect("register");
    let mut events = Events::with_capacity(4);
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut received = 0;
    let mut buf = vec![0u8; CHUNK];
    while received < sent {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{received} of {sent} bytes back within {IO_TIMEOUT:?}"
        );
        match poll.poll(&mut events, Some(left)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("poll: {e}"),
        }
        // Edge-triggered: both directions until the socket says WouldBlock.
        let mut progress = true;
        while progress {
            progress = false;
            while tls.wants_write() {
                match tls.write_tls(&mut sock) {
                    Ok(_) => progress = true,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("write: {e}"),
                }
            }
            match tls.read_tls(&mut sock) {
                Ok(0) => panic!("EOF after {received} of {sent} bytes"),
                Ok(_) => progress = true,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
            tls.process_new_packets().expect("TLS");
            loop {
                match tls.reader().read(&mut buf) {
                    Ok(0) => panic!("close_notify after {received} of {sent} bytes"),
                    Ok(n) => {
                        for (i, byte) in buf[..n].iter().enumerate() {
                            let at = received + i;
                            assert_eq!(*byte, data[at % CHUNK], "byte {at} of the echo");
                        }
                        received += n;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
        }
    }
    let line = server.request_stats();
    assert_eq!(stat(&line, "closed"), 0, "{line}");
    assert_eq!(stat(&line, "tls_errors"), 0, "{line}");
    // What the server held while the client did not read: its 64 KiB of output, a read's
    // worth past it, rustls's buffers and allocator slack; never the megabytes sent.
    let growth = rss_stalled.saturating_sub(rss_before);
    assert!(
        growth < 16 * 1024 * 1024,
        "the server grew by {growth} bytes while {sent} were sent and none read"
    );
}

// ---------------------------------------------------------------------------
// Start-up errors
// ---------------------------------------------------------------------------

/// Starts a TLS server on these files, which must fail: returns its one line on stderr,
/// after checking the exit status (1), that nothing listened, and that nothing panicked.
fn start_up_error(cert: &Path, key: &Path, client_ca: Option<&Path>) -> String {
    let mut args = vec!["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"];
    args.extend(["--tls-cert", arg(cert), "--tls-key", arg(key)]);
    if let Some(client_ca) = client_ca {
        args.extend(["--tls-client-ca", arg(client_ca)]);
    }
    let out = run_to_exit(wharf_command("echo", &args), EXIT_TIMEOUT);
    assert_no_panic(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", out.stderr);
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "one line; stderr:\n{}", out.stderr);
    assert!(lines[0].starts_with("wharf: error: "), "{}", lines[0]);
    lines[0].to_string()
}

#[test]
fn a_missing_unreadable_or_mismatched_certificate_or_key_is_one_line_at_start_up() {
    let pki = make_test_pki("start-up");
    let (cert, key) = (&*pki.server_cert, &*pki.server_key);
    let missing = pki.dir.join("missing.pem");
    let missing = &*missing;
    let says = |line: String, file: &Path, why: &str| {
        assert!(
            line.contains(arg(file)) && line.contains(why),
            "expected {} and {why:?} in {line:?}",
            file.display()
        );
    };
    says(start_up_error(missing, key, None), missing, "no such file");
    says(
        start_up_error(cert, missing, None),
        missing,
        "no usable private key: no such file",
    );
    says(
        start_up_error(cert, key, Some(missing)),
        missing,
        "no such file",
    );
    // A directory cannot be read as a file.
    says(
        start_up_error(&pki.dir, key, None),
        &pki.dir,
        "Is a directory",
    );
    says(
        start_up_error(cert, cert, None),
        cert,
        "no usable private key",
    );
    says(
        start_up_error(key, key, None),
        key,
        "no PEM certificate in it",
    );
    // Half a rotation: the key of another certificate.
    says(
        start_up_error(cert, &pki.client_key, None),
        cert,
        "do not make a usable pair",
    );
    // Root reads any file: an unreadable one needs another user.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let unreadable = pki.dir.join("unreadable.key");
        std::fs::copy(key, &unreadable).expect("copy the key");
        std::fs::set_permissions(&unreadable, std::fs::Permissions::from_mode(0o000))
            .expect("chmod 000");
        says(
            start_up_error(cert, &unreadable, None),
            &unreadable,
            "permission denied",
        );
    } else {
        eprintln!("running as root: the unreadable-file case is left out");
    }
}

#[test]
fn a_proxy_tls_listener_reads_the_header_then_the_handshake() {
    let pki = make_test_pki("proxy-tls");
    let server = Server::start(
        "line",
        &[
            "--proxy-tls-listen",
            "127.0.0.1:0",
            "--proxy-from",
            "127.0.0.1/32",
            "--allow",
            "198.51.100.0/24",
            "--tls-cert",
            arg(&pki.server_cert),
            "--tls-key",
            arg(&pki.server_key),
        ],
    );
    assert!(
        server.listen_lines[0].ends_with("(line, tls, proxy)"),
        "{:?}",
        server.listen_lines
    );
    let config = client_config(&pki.ca, TLS13, None);
    let handshake_after = |header: &[u8]| -> io::Result<TlsStream> {
        let mut sock = connect(server.addr());
        sock.write_all(header)?;
        let mut conn = ClientConnection::new(Arc::clone(&config), localhost()).expect("a client");
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)?;
        }
        Ok(StreamOwned::new(conn, sock))
    };
    let mut tls = handshake_after(b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 7443\r\n")
        .expect("a handshake after the header");
    tls.write_all(b"behind a balancer\n").expect("write");
    assert_eq!(read_line(&mut tls), "behind a balancer\n");
    // A client the allow-list refuses never gets a handshake.
    let refused = handshake_after(b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 7443\r\n");
    assert!(refused.is_err(), "a handshake for a refused client");
}
