//! `TlsSession` over byte slices, against rustls's own client: how it copes with records cut
//! anywhere, what it keeps between reads, and what it sends when things go wrong. No socket.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{AlertDescription, ClientConfig, ClientConnection, RootCertStore, ServerConfig};

use super::TlsSession;

const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// A server and a client trusting it, speaking `versions`.
fn pair(versions: &[&'static rustls::SupportedProtocolVersion]) -> (TlsSession, ClientConnection) {
    pair_with(versions, None)
}

/// The same, the client's records carrying at most `client_fragment` bytes.
fn pair_with(
    versions: &[&'static rustls::SupportedProtocolVersion],
    client_fragment: Option<usize>,
) -> (TlsSession, ClientConnection) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("a certificate");
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("a server config");
    let mut roots = RootCertStore::empty();
    roots.add(cert).expect("a root");
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.max_fragment_size = client_fragment;
    let name = ServerName::try_from("localhost").expect("a name");
    (
        TlsSession::new(&Arc::new(server)).expect("a session"),
        ClientConnection::new(Arc::new(client), name).expect("a client"),
    )
}

/// Everything the client has to send.
fn from_client(client: &mut ClientConnection) -> Vec<u8> {
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).expect("write_tls");
    }
    wire
}

/// Hands the server's bytes to the client; returns the plaintext it got out of them.
fn to_client(client: &mut ClientConnection, mut wire: &[u8]) -> Result<Vec<u8>, rustls::Error> {
    let mut plain = Vec::new();
    while !wire.is_empty() {
        client.read_tls(&mut wire).expect("read_tls");
        client.process_new_packets()?;
        // Drained as it comes: the client buffers only so much plaintext.
        match client.reader().read_to_end(&mut plain) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("client reader: {e}"),
        }
    }
    Ok(plain)
}

/// Feeds `wire` to the server in pieces of `piece` bytes; returns the plaintext and what the
/// server answered, and whether the handshake completed on the way.
fn feed(server: &mut TlsSession, wire: &[u8], piece: usize) -> (Vec<u8>, Vec<u8>, bool) {
    let (mut plain, mut out, mut done) = (Vec::new(), Vec::new(), false);
    for chunk in wire.chunks(piece) {
        let mut chunk = chunk.to_vec();
        let received = server
            .receive(&mut chunk, &mut plain, &mut out)
            .expect("receive");
        done |= received.handshake_done;
    }
    (plain, out, done)
}

/// Runs the handshake with the client's flights cut into pieces of `piece` bytes.
fn handshake(server: &mut TlsSession, client: &mut ClientConnection, piece: usize) {
    let mut done = false;
    while client.is_handshaking() || !done {
        let wire = from_client(client);
        assert!(!wire.is_empty(), "the handshake stalled");
        let (_, out, finished) = feed(server, &wire, piece);
        done |= finished;
        to_client(client, &out).expect("the server's flight");
    }
    assert!(!server.is_handshaking());
}

#[test]
fn records_cut_anywhere_decrypt_whole_and_nothing_is_kept_at_a_record_boundary() {
    for (versions, piece) in [(TLS13, 1), (TLS12, 1), (TLS13, 7), (TLS12, 1000)] {
        let (mut server, mut client) = pair(versions);
        handshake(&mut server, &mut client, piece);
        let message: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        client.writer().write_all(&message).expect("write");
        let (plain, _, _) = feed(&mut server, &from_client(&mut client), piece);
        assert_eq!(plain, message, "{versions:?} in pieces of {piece}");
        // An idle connection holds no receive buffer.
        assert_eq!(server.pending.capacity(), 0, "{versions:?} piece {piece}");
    }
}

#[test]
fn a_handshake_message_split_over_many_records_is_joined_across_reads() {
    for versions in [TLS12, TLS13] {
        // The client's records carry at most 64 bytes: its hello spans several of them,
        // which rustls joins in place, in the bytes it asks to be kept between reads.
        let (mut server, mut client) = pair_with(versions, Some(64));
        handshake(&mut server, &mut client, 5);
        client.writer().write_all(b"joined\n").expect("write");
        let (plain, _, _) = feed(&mut server, &from_client(&mut client), 5);
        assert_eq!(plain, b"joined\n", "{versions:?}");
        assert_eq!(server.pending.capacity(), 0, "{versions:?}");
    }
}

#[test]
fn a_partial_record_is_kept_until_the_rest_comes() {
    let (mut server, mut client) = pair(TLS13);
    handshake(&mut server, &mut client, usize::MAX);
    client.writer().write_all(b"hello\n").expect("write");
    let wire = from_client(&mut client);
    let (plain, _, _) = feed(&mut server, &wire[..wire.len() - 1], usize::MAX);
    assert!(plain.is_empty());
    assert_eq!(server.pending.len(), wire.len() - 1);
    let (plain, _, _) = feed(&mut server, &wire[wire.len() - 1..], usize::MAX);
    assert_eq!(plain, b"hello\n");
    assert_eq!(server.pending.capacity(), 0);
}

/// Review of issue 14: a record cut at the end of a big read left an idle connection holding
/// the whole read's allocation (142 KB measured per idle TLS connection).
#[test]
fn a_partial_record_after_a_big_read_keeps_only_its_own_bytes() {
    let (mut server, mut client) = pair(TLS13);
    handshake(&mut server, &mut client, usize::MAX);
    // A partial record first, so the next read joins it in the kept buffer.
    client.writer().write_all(b"first\n").expect("write");
    let first = from_client(&mut client);
    feed(&mut server, &first[..first.len() - 1], usize::MAX);
    // Then the rest of it, 60 KB of whole records, and the start of one more.
    let mut wire = first[first.len() - 1..].to_vec();
    client.writer().write_all(&[7u8; 60_000]).expect("write");
    client.writer().write_all(b"last\n").expect("write");
    let more = from_client(&mut client);
    wire.extend_from_slice(&more[..more.len() - 3]);
    let (plain, _, _) = feed(&mut server, &wire, usize::MAX);
    assert_eq!(plain.len(), 6 + 60_000);
    assert!(!server.pending.is_empty(), "a partial record is kept");
    assert!(
        server.pending.capacity() <= 2 * server.pending.len() + 4096,
        "{} bytes kept in an allocation of {}",
        server.pending.len(),
        server.pending.capacity()
    );
}

#[test]
fn sealed_output_reaches_the_client_whatever_its_size() {
    for versions in [TLS12, TLS13] {
        let (mut server, mut client) = pair(versions);
        handshake(&mut server, &mut client, usize::MAX);
        for size in [1, 64, 16 * 1024, 16 * 1024 + 1, 100_000] {
            let message: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
            let mut out = Vec::new();
            server.seal(&message, &mut out);
            let got = to_client(&mut client, &out).expect("records");
            assert_eq!(got, message, "{versions:?} {size} bytes");
        }
    }
}

#[test]
fn a_corrupt_record_fails_with_the_bad_record_mac_alert() {
    for versions in [TLS12, TLS13] {
        let (mut server, mut client) = pair(versions);
        handshake(&mut server, &mut client, usize::MAX);
        client.writer().write_all(b"tampered\n").expect("write");
        let mut wire = from_client(&mut client);
        *wire.last_mut().expect("a record") ^= 1;
        let (mut plain, mut out) = (Vec::new(), Vec::new());
        let error = server.receive(&mut wire, &mut plain, &mut out);
        assert_eq!(error, Err(rustls::Error::DecryptError), "{versions:?}");
        assert!(plain.is_empty());
        assert_eq!(
            to_client(&mut client, &out),
            Err(rustls::Error::AlertReceived(AlertDescription::BadRecordMac)),
            "{versions:?}"
        );
    }
}

#[test]
fn close_notify_goes_once_and_nothing_is_sealed_after_it() {
    let (mut server, mut client) = pair(TLS13);
    handshake(&mut server, &mut client, usize::MAX);
    let mut out = Vec::new();
    assert!(server.say_goodbye(&mut out));
    assert!(!server.say_goodbye(&mut out));
    server.seal(b"too late\n", &mut out);
    assert_eq!(to_client(&mut client, &out), Ok(Vec::new()));
    let state = client.process_new_packets().expect("a clean state");
    assert!(state.peer_has_closed());
}

#[test]
fn the_peers_close_notify_ends_its_stream_and_what_follows_is_dropped() {
    let (mut server, mut client) = pair(TLS13);
    handshake(&mut server, &mut client, usize::MAX);
    client.writer().write_all(b"last\n").expect("write");
    client.send_close_notify();
    let mut wire = from_client(&mut client);
    wire.extend_from_slice(b"trailing garbage");
    let (mut plain, mut out) = (Vec::new(), Vec::new());
    let received = server
        .receive(&mut wire, &mut plain, &mut out)
        .expect("receive");
    assert!(received.peer_closed);
    assert_eq!(plain, b"last\n");
    assert_eq!(server.pending.capacity(), 0);
    // Our side may still answer, then say goodbye.
    let mut out = Vec::new();
    server.seal(b"reply\n", &mut out);
    assert!(server.say_goodbye(&mut out));
    assert_eq!(to_client(&mut client, &out), Ok(b"reply\n".to_vec()));
}

#[test]
fn a_close_notify_alone_right_after_the_handshake_is_the_peers_end_of_stream() {
    // The handshake's last answer (TLS 1.3 tickets) leaves rustls owing a TransmitTlsData
    // state, which it yields before PeerClosed: that must not hide the end of stream.
    for versions in [TLS12, TLS13] {
        let (mut server, mut client) = pair(versions);
        handshake(&mut server, &mut client, usize::MAX);
        client.send_close_notify();
        let mut wire = from_client(&mut client);
        let (mut plain, mut out) = (Vec::new(), Vec::new());
        let received = server
            .receive(&mut wire, &mut plain, &mut out)
            .expect("receive");
        assert!(received.peer_closed, "{versions:?}");
    }
}

#[test]
fn no_close_notify_during_the_handshake() {
    let (mut server, mut client) = pair(TLS13);
    let (_, out, _) = feed(&mut server, &from_client(&mut client), usize::MAX);
    assert!(!out.is_empty(), "the server's flight");
    let mut out = Vec::new();
    assert!(!server.say_goodbye(&mut out));
    assert!(out.is_empty());
}
