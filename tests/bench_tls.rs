//! `wharf-bench --tls` over loopback: pingpong, connect and hold through TLS, against a small
//! blocking rustls echo server started by each test (a thread per connection, `StreamOwned`),
//! and against `wharf echo --tls-listen` (ignored until the server side of issue 7 is in).
//!
//! Certificates are made fresh by each test (`common::certs`). Every wait is bounded: servers
//! answer at once, and each wharf-bench run is asked for a fraction of a second and killed if
//! it outlives `RUN_TIMEOUT`.

#![cfg(feature = "tls")]

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{HandshakeKind, RootCertStore, ServerConfig, ServerConnection, StreamOwned};
use serde_json::Value;

use common::bench::{bench, json_report, number, run};
use common::certs::{arg, make_test_pki, TestPki};

/// Handshakes the in-test server completed, by kind.
#[derive(Default)]
struct Handshakes {
    full: AtomicU64,
    resumed: AtomicU64,
}

/// A blocking rustls echo server on a free loopback port: each connection gets a thread that
/// completes the handshake, echoes every byte, and answers close_notify with its own. Its
/// threads end with the test process.
struct TlsEcho {
    addr: SocketAddr,
    handshakes: Arc<Handshakes>,
}

impl TlsEcho {
    /// Serves with the PKI's server certificate; asks clients for a certificate from the
    /// PKI's CA when `mtls`.
    fn start(pki: &TestPki, mtls: bool) -> TlsEcho {
        let provider = Arc::new(ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = if mtls {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&pki.ca).expect("CA file") {
                roots.add(cert.expect("CA PEM")).expect("CA certificate");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let chain = CertificateDer::pem_file_iter(&pki.server_cert)
            .expect("server certificate file")
            .collect::<Result<Vec<_>, _>>()
            .expect("server certificate PEM");
        let key = PrivateKeyDer::from_pem_file(&pki.server_key).expect("server key");
        let config = Arc::new(builder.with_single_cert(chain, key).expect("server config"));

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let handshakes = Arc::new(Handshakes::default());
        let counted = Arc::clone(&handshakes);
        thread::spawn(move || {
            for socket in listener.incoming() {
                let Ok(socket) = socket else { continue };
                let config = Arc::clone(&config);
                let counted = Arc::clone(&counted);
                thread::spawn(move || {
                    let _ = echo(config, socket, &counted);
                });
            }
        });
        TlsEcho { addr, handshakes }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }
}

/// One connection of [`TlsEcho`].
fn echo(config: Arc<ServerConfig>, socket: TcpStream, counted: &Handshakes) -> io::Result<()> {
    // The tickets of TLS 1.3 and the first reply are two writes: without this, Nagle would
    // hold the reply for the client's delayed ACK.
    socket.set_nodelay(true)?;
    let session = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = StreamOwned::new(session, socket);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    match tls.conn.handshake_kind() {
        Some(HandshakeKind::Resumed) => counted.resumed.fetch_add(1, Ordering::Relaxed),
        _ => counted.full.fetch_add(1, Ordering::Relaxed),
    };
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match tls.read(&mut buffer)? {
            0 => {
                tls.conn.send_close_notify();
                return tls.flush();
            }
            n => {
                tls.write_all(&buffer[..n])?;
                tls.flush()?;
            }
        }
    }
}

/// A successful run's report, which must count no error and say it spoke TLS `version`.
fn clean_tls_report(output: &Output, version: &str) -> Value {
    assert!(output.status.success(), "{output:?}");
    let report = json_report(output);
    assert_eq!(number(&report, "errors"), 0.0, "{report}");
    assert_eq!(report["tls"], true, "{report}");
    assert_eq!(report["tls_version"], version, "{report}");
    report
}

/// `--tls --tls-ca CA` as arguments.
fn trusting(ca: &Path) -> [&str; 3] {
    ["--tls", "--tls-ca", arg(ca)]
}

#[test]
fn pingpong_over_tls_checks_every_byte_and_counts_no_errors() {
    let pki = make_test_pki("pingpong_over_tls");
    let server = TlsEcho::start(&pki, false);
    let output = run(bench()
        .args(["pingpong", "--addr", &server.addr(), "-c", "3", "-s", "100"])
        .args(["-d", "0.3", "--json"])
        .args(trusting(&pki.ca)));
    let report = clean_tls_report(&output, "1.3");
    assert_eq!(number(&report, "connects_established"), 3.0, "{report}");
    assert!(number(&report, "round_trips") > 0.0, "{report}");
    assert_eq!(report["errors_by_kind"]["tls_errors"], 0, "{report}");
}

#[test]
fn messages_larger_than_a_record_and_the_socket_buffers_come_back_whole() {
    let pki = make_test_pki("large_messages");
    let server = TlsEcho::start(&pki, false);
    let output = run(bench()
        .args([
            "pingpong",
            "--addr",
            &server.addr(),
            "-c",
            "2",
            "-s",
            "300000",
        ])
        .args(["-d", "0.3", "--json"])
        .args(trusting(&pki.ca)));
    let report = clean_tls_report(&output, "1.3");
    assert!(number(&report, "round_trips") > 0.0, "{report}");
}

#[test]
fn line_mode_and_tls_1_2_when_asked() {
    let pki = make_test_pki("tls12_lines");
    let server = TlsEcho::start(&pki, false);
    let output = run(bench()
        .args(["pingpong", "--addr", &server.addr(), "-c", "2", "-s", "40"])
        .args(["--line", "-d", "0.3", "--json", "--tls-version", "1.2"])
        .args(["--tls-server-name", "localhost"])
        .args(trusting(&pki.ca)));
    let report = clean_tls_report(&output, "1.2");
    assert!(number(&report, "round_trips") > 0.0, "{report}");
}

#[test]
fn connect_over_tls_makes_a_full_handshake_per_connection() {
    let pki = make_test_pki("connect_over_tls");
    let server = TlsEcho::start(&pki, false);
    let output = run(bench()
        .args([
            "connect",
            "--addr",
            &server.addr(),
            "-c",
            "2",
            "-d",
            "0.3",
            "--json",
        ])
        .args(trusting(&pki.ca)));
    let report = clean_tls_report(&output, "1.3");
    let connections = number(&report, "connections");
    assert!(connections > 0.0, "{report}");
    assert!(number(&report, "connections_per_s") > 0.0, "{report}");
    let full = server.handshakes.full.load(Ordering::Relaxed) as f64;
    assert!(
        full >= connections,
        "{full} full handshakes for {connections} connections: {report}"
    );
    assert_eq!(
        server.handshakes.resumed.load(Ordering::Relaxed),
        0,
        "no session may be resumed: {report}"
    );
}

#[test]
fn insecure_accepts_a_certificate_it_was_not_told_to_trust() {
    let pki = make_test_pki("insecure");
    let server = TlsEcho::start(&pki, false);
    let output = run(bench()
        .args([
            "connect",
            "--addr",
            &server.addr(),
            "-c",
            "2",
            "-d",
            "0.3",
            "--json",
        ])
        .args(["--tls", "--insecure"]));
    let report = clean_tls_report(&output, "1.3");
    assert!(number(&report, "connections") > 0.0, "{report}");
}

#[test]
fn a_certificate_from_another_ca_is_refused_with_a_certificate_error() {
    let pki = make_test_pki("wrong_ca");
    let server = TlsEcho::start(&pki, false);
    for mode in ["pingpong", "connect"] {
        let output = run(bench()
            .args([mode, "--addr", &server.addr(), "-d", "0.3"])
            .args(trusting(&pki.other_ca)));
        assert_eq!(output.status.code(), Some(1), "{mode}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("no TLS session with") && stderr.contains("invalid peer certificate"),
            "{mode}: {stderr}"
        );
        assert!(stderr.contains("UnknownIssuer"), "{mode}: {stderr}");
        assert!(!stderr.contains("panicked"), "{mode}: {stderr}");
    }
}

#[test]
fn tls_to_a_server_that_does_not_speak_it_is_one_clear_error() {
    let server = common::Server::start("echo", &["--listen", "127.0.0.1:0"]);
    let output = run(bench()
        .args(["connect", "--addr", &server.addr().to_string(), "-d", "0.3"])
        .args(["--tls", "--insecure"]));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no TLS session with") && stderr.contains("does the server speak TLS"),
        "{stderr}"
    );
}

#[test]
fn a_client_certificate_is_presented_when_given_and_missed_when_not() {
    let pki = make_test_pki("mtls");
    let server = TlsEcho::start(&pki, true);
    let output = run(bench()
        .args([
            "pingpong",
            "--addr",
            &server.addr(),
            "-c",
            "2",
            "-d",
            "0.3",
            "--json",
        ])
        .args(["--tls-cert", arg(&pki.client_cert)])
        .args(["--tls-key", arg(&pki.client_key)])
        .args(trusting(&pki.ca)));
    clean_tls_report(&output, "1.3");

    let output = run(bench()
        .args(["pingpong", "--addr", &server.addr(), "-c", "2", "-d", "0.3"])
        .args(trusting(&pki.ca)));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no TLS session with"), "{stderr}");
    assert!(stderr.contains("CertificateRequired"), "{stderr}");
}

#[test]
fn hold_over_tls_keeps_every_session_open() {
    let pki = make_test_pki("hold_over_tls");
    let server = TlsEcho::start(&pki, false);
    let output = run(bench()
        .args(["hold", "--addr", &server.addr(), "-c", "20", "-d", "0.2"])
        .args(["--connect-pace", "8", "--json"])
        .args(trusting(&pki.ca)));
    let report = clean_tls_report(&output, "1.3");
    assert_eq!(number(&report, "established"), 20.0, "{report}");
}

#[test]
fn tls_runs_spread_over_client_processes() {
    let pki = make_test_pki("procs_over_tls");
    let server = TlsEcho::start(&pki, false);
    let output = run(bench()
        .args([
            "pingpong",
            "--addr",
            &server.addr(),
            "-c",
            "5",
            "--procs",
            "2",
        ])
        .args(["-d", "0.3", "--json"])
        .args(trusting(&pki.ca)));
    let report = clean_tls_report(&output, "1.3");
    assert_eq!(number(&report, "client_procs"), 2.0, "{report}");
    assert_eq!(number(&report, "connects_established"), 5.0, "{report}");
    assert!(number(&report, "round_trips") > 0.0, "{report}");
}

#[test]
fn tls_flags_that_cannot_work_are_bad_arguments() {
    let addr = "127.0.0.1:1";
    let cases: &[&[&str]] = &[
        &["pingpong", "--addr", addr, "--tls"],
        &[
            "pingpong",
            "--addr",
            addr,
            "--tls",
            "--insecure",
            "--tls-ca",
            "ca.pem",
        ],
        &["connect", "--addr", addr, "--insecure"],
        &[
            "hold",
            "--addr",
            addr,
            "--tls",
            "--insecure",
            "--tls-cert",
            "c.pem",
        ],
        &[
            "pingpong",
            "--addr",
            addr,
            "--tls",
            "--insecure",
            "--tls-version",
            "1.1",
        ],
        &["chat", "--addr", addr, "--tls"],
    ];
    for args in cases {
        let output = run(bench().args(*args));
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
    }
}

// ---- against wharf's own TLS listener (issue 7) ---------------------------------------------

/// `wharf echo --tls-listen 127.0.0.1:0` with the PKI's server certificate.
fn wharf_tls(pki: &TestPki) -> common::Server {
    let server = common::Server::start(
        "echo",
        &[
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            arg(&pki.server_cert),
            "--tls-key",
            arg(&pki.server_key),
        ],
    );
    assert!(
        server.listen_lines[0].contains("tls"),
        "{:?}",
        server.listen_lines
    );
    server
}

#[test]

fn pingpong_over_tls_against_wharf() {
    let pki = make_test_pki("wharf_pingpong_tls");
    let server = wharf_tls(&pki);
    let output = run(bench()
        .args(["pingpong", "--addr", &server.addr().to_string(), "-c", "4"])
        .args(["-s", "100", "-d", "0.5", "--json"])
        .args(["--server-pid", &server.pid().to_string()])
        .args(trusting(&pki.ca)));
    let report = clean_tls_report(&output, "1.3");
    assert_eq!(number(&report, "connects_established"), 4.0, "{report}");
    assert!(number(&report, "round_trips") > 0.0, "{report}");
    number(&report, "server_cpu_ns_per_op");
}

#[test]

fn connect_over_tls_against_wharf_counts_handshakes() {
    let pki = make_test_pki("wharf_connect_tls");
    let server = wharf_tls(&pki);
    for version in ["1.2", "1.3"] {
        let output = run(bench()
            .args(["connect", "--addr", &server.addr().to_string(), "-c", "2"])
            .args(["-d", "0.3", "--json", "--tls-version", version])
            .args(trusting(&pki.ca)));
        let report = clean_tls_report(&output, version);
        assert!(number(&report, "connections") > 0.0, "{report}");
    }
}

#[test]

fn hold_over_tls_against_wharf_measures_memory_per_session() {
    let pki = make_test_pki("wharf_hold_tls");
    let server = wharf_tls(&pki);
    let output = run(bench()
        .args(["hold", "--addr", &server.addr().to_string(), "-c", "50"])
        .args(["-d", "0.2", "--connect-pace", "16", "--json"])
        .args(["--server-pid", &server.pid().to_string()])
        .args(["--tls", "--insecure"]));
    let report = clean_tls_report(&output, "1.3");
    assert_eq!(number(&report, "established"), 50.0, "{report}");
    number(&report, "server_rss_per_conn_bytes");
}
