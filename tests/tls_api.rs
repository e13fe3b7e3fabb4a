//! The TLS side of the embedding API: an embedder's own `rustls::ServerConfig` (here with
//! ALPN and TLS 1.2 only), and what a handler can ask about a TLS connection: that it is TLS,
//! the version, the ALPN protocol, the peer address.
#![cfg(feature = "tls")]

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::certs::make_test_pki;
use common::read_line;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use wharf::{Config, Context, Handler, ListenOptions, Listener, Reactor, TlsConfig};

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

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
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
