//! The TLS side of the embedding API: an embedder's own `rustls::ServerConfig` (here with
//! ALPN and TLS 1.2 only), and what a handler can ask about a TLS connection: that it is TLS,
//! the version, the ALPN protocol, the peer address.
#![cfg(feature = "tls")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::certs::make_test_pki;
use common::read_line;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use wharf::{Config, Context, Handler, ListenOptions, Listener, Reactor, TlsConfig, Tokens};

/// Greets each connection with what the context says about it.
struct Describe;

impl Handler for Describe {
    type Session = ();

    fn on_open(&mut self, ctx: &mut Context<'_>, peer: SocketAddr) {
        let line = format!(
            "tls={} version={} alpn={} peer_matches={}\n",
            ctx.is_tls(),
            ctx.tls_version().unwrap_or("-"),
            ctx.alpn()
                .map_or("-".into(), |p| String::from_utf8_lossy(p).into_owned()),
            ctx.peer_addr() == Some(peer),
        );
        ctx.write(line.as_bytes());
    }

    fn on_data(&mut self, _: &mut Context<'_>, _: &mut (), input: &[u8]) -> usize {
        input.len()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client that trusts the CA in the PEM file `ca`.
fn client_config(ca: &std::path::Path) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots
            .add(cert.expect("CA certificate"))
            .expect("add the CA");
    }
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[test]
fn an_embedders_server_config_and_what_a_handler_can_ask_about_tls() {
    let pki = make_test_pki("tls_api");
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server_cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&pki.server_key).unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    server.alpn_protocols = vec![b"wharf/1".to_vec()];

    let listener =
        Listener::bind("127.0.0.1:0".parse().unwrap(), &ListenOptions::default()).expect("bind");
    let plain_listener =
        Listener::bind("127.0.0.1:0".parse().unwrap(), &ListenOptions::default()).expect("bind");
    let (tls_addr, plain_addr) = (listener.local_addr(), plain_listener.local_addr());
    let mut reactor = Reactor::new(Config::default(), Describe).expect("reactor");
    reactor
        .add_tls_listener(listener, TlsConfig::from_server_config(Arc::new(server)))
        .expect("TLS listener");
    reactor
        .add_listener(plain_listener)
        .expect("plain listener");
    let handle = reactor.handle();
    let thread = std::thread::spawn(move || reactor.run());

    let mut client = client_config(&pki.ca);
    client.alpn_protocols = vec![b"other/2".to_vec(), b"wharf/1".to_vec()];
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
    let socket = TcpStream::connect(tls_addr).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, socket);
    tls.flush().expect("handshake");
    assert_eq!(
        read_line(&mut tls),
        "tls=true version=TLSv1.2 alpn=wharf/1 peer_matches=true\n"
    );

    let mut plain = TcpStream::connect(plain_addr).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert_eq!(
        read_line(&mut plain),
        "tls=false version=- alpn=- peer_matches=true\n"
    );

    handle.stop();
    thread.join().expect("reactor thread").expect("run");
}

/// Refuses every connection in `on_open`, and counts the input it is (wrongly) given.
struct RefuseAtOpen(Arc<AtomicUsize>);

impl Handler for RefuseAtOpen {
    type Session = ();

    fn on_open(&mut self, ctx: &mut Context<'_>, _: SocketAddr) {
        ctx.write(b"BYE\n");
        ctx.close();
    }

    fn on_data(&mut self, ctx: &mut Context<'_>, _: &mut (), input: &[u8]) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst);
        ctx.write(b"SEEN\n");
        input.len()
    }
}

/// A TLS 1.3 client's first request rides with its Finished: a handler that closes the
/// connection in `on_open` must not be handed it.
#[test]
fn a_handler_that_closes_in_on_open_is_not_given_the_input_that_came_with_the_handshake() {
    let pki = make_test_pki("tls_api_refuse");
    let seen = Arc::new(AtomicUsize::new(0));
    let listener =
        Listener::bind("127.0.0.1:0".parse().unwrap(), &ListenOptions::default()).expect("bind");
    let addr = listener.local_addr();
    let mut reactor =
        Reactor::new(Config::default(), RefuseAtOpen(Arc::clone(&seen))).expect("reactor");
    let tls = TlsConfig::from_pem_files(&pki.server_cert, &pki.server_key, None).expect("TLS");
    reactor.add_tls_listener(listener, tls).expect("listener");
    let handle = reactor.handle();
    let thread = std::thread::spawn(move || reactor.run());

    let client = Arc::new(client_config(&pki.ca));
    for _ in 0..10 {
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::clone(&client), name).unwrap();
        let mut socket = TcpStream::connect(addr).expect("connect");
        socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        // Buffered before the handshake: rustls sends it right behind its Finished.
        conn.writer().write_all(b"GET secret\n").unwrap();
        let mut text = Vec::new();
        loop {
            while conn.wants_write() {
                conn.write_tls(&mut socket).expect("write");
            }
            match conn.read_tls(&mut socket) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if conn.process_new_packets().is_err() {
                break;
            }
            let _ = conn.reader().read_to_end(&mut text);
        }
        assert_eq!(String::from_utf8_lossy(&text), "BYE\n");
    }
    handle.stop();
    thread.join().expect("reactor thread").expect("run");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "on_data after the handler closed"
    );
}

/// After a TLS handshake, a connection that still has to send `AUTH` gets the auth timeout,
/// even when it is shorter than what is left of the handshake timeout.
#[test]
fn the_auth_timeout_after_a_tls_handshake_is_kept_when_shorter_than_the_handshakes() {
    let pki = make_test_pki("tls_api_auth_timeout");
    let listener =
        Listener::bind("127.0.0.1:0".parse().unwrap(), &ListenOptions::default()).expect("bind");
    let addr = listener.local_addr();
    let config = Config {
        auth_timeout: Duration::from_secs(1),
        tls_handshake_timeout: Duration::from_secs(30),
        ..Config::default()
    };
    let mut reactor = Reactor::new(config, Describe).expect("reactor");
    reactor.set_authenticator(Tokens::parse("alice:s3cret-0123456789\n").expect("tokens"));
    let tls = TlsConfig::from_pem_files(&pki.server_cert, &pki.server_key, None).expect("TLS");
    reactor.add_tls_listener(listener, tls).expect("listener");
    let handle = reactor.handle();
    let thread = std::thread::spawn(move || reactor.run());

    let client = client_config(&pki.ca);
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
    let socket = TcpStream::connect(addr).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, socket);
    tls.flush().expect("handshake");
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest); // EOF (or a reset) once the server gives up
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "closed after {took:?}: the 1 s auth timeout was lost behind the 30 s handshake one"
    );
    handle.stop();
    thread.join().expect("reactor thread").expect("run");
}
