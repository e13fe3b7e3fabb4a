//! `wharf echo`: RFC 862 echo, every byte back in order, over many
//! concurrent connections and under backpressure.

mod common;

use common::*;
use std::io::Write;
use std::net::Shutdown;
use std::time::Duration;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

#[test]
fn concurrent_connections_echo_random_fragments_byte_exact() {
    let server = Server::start("echo", &["--listen", "127.0.0.1:0"]);
    let mut rng = seeded_rng("concurrent_connections_echo_random_fragments_byte_exact");

    // 200 connections, each 0..=256 KiB of random bytes (so some are empty),
    // written in fragments of 1..=8 KiB, then half-closed and read to EOF.
    let payloads: Vec<Vec<u8>> = (0..200)
        .map(|_| {
            let len = rng.usize(0..=256 * KIB);
            random_bytes(&mut rng, len)
        })
        .collect();
    assert_round_trips(
        server.addr(),
        payloads,
        8 * KIB,
        &mut rng,
        Duration::from_secs(60),
    );
}

#[test]
fn single_client_16_mib_is_echoed_completely_under_backpressure() {
    // 16 MiB is far more than the socket buffers on both sides can hold, so
    // the server must stop reading while its output is pending and resume
    // once the client drains it, without losing or reordering anything.
    let server = Server::start("echo", &["--listen", "127.0.0.1:0"]);
    let mut rng = seeded_rng("single_client_16_mib_is_echoed_completely_under_backpressure");
    let payload = random_bytes(&mut rng, 16 * MIB);
    assert_round_trips(
        server.addr(),
        vec![payload],
        64 * KIB,
        &mut rng,
        Duration::from_secs(60),
    );
}

#[test]
fn echo_is_immediate_without_waiting_for_half_close() {
    // Echo must not buffer until EOF: a request gets its echo while the
    // connection stays fully open, repeatedly.
    let server = Server::start("echo", &["--listen", "127.0.0.1:0"]);
    let mut stream = connect(server.addr());
    for round in 0..10 {
        let msg = format!("round {round}: no newline here");
        stream.write_all(msg.as_bytes()).expect("write");
        let got = read_exactly(&mut stream, msg.len(), IO_TIMEOUT);
        assert_bytes_eq(&format!("round {round}"), msg.as_bytes(), &got);
    }
}

#[test]
fn immediate_half_close_gets_clean_eof() {
    let server = Server::start("echo", &["--listen", "127.0.0.1:0"]);
    let mut stream = connect(server.addr());
    stream.shutdown(Shutdown::Write).expect("shutdown(Write)");
    let got = read_to_eof(&mut stream, IO_TIMEOUT);
    assert_bytes_eq("empty stream", b"", &got);
}

#[test]
fn half_close_flushes_pending_output() {
    // Everything written before the half-close comes back before EOF.
    let server = Server::start("echo", &["--listen", "127.0.0.1:0"]);
    let data = b"hello\nworld, no trailing newline \x00\xff";
    let got = send_and_half_close(server.addr(), data);
    assert_bytes_eq("echo then EOF", data, &got);
}

#[test]
fn server_keeps_serving_after_clients_disconnect_abruptly() {
    // Clients that vanish without reading or half-closing must not disturb
    // the server.
    let mut server = Server::start("echo", &["--listen", "127.0.0.1:0"]);
    for _ in 0..20 {
        let mut stream = connect(server.addr());
        stream.write_all(b"bye").expect("write");
        drop(stream);
    }
    let got = send_and_half_close(server.addr(), b"still here");
    assert_bytes_eq("after abrupt disconnects", b"still here", &got);
    server.assert_running();
}

#[test]
fn urgent_data_does_not_stall_the_bytes_behind_it() {
    // Linux ends a read at the urgent (MSG_OOB) mark even when more data follows, so a short
    // read there does not mean the socket is drained. Each client sends a line, one urgent
    // byte and another line in quick succession, and never half-closes (which would raise a
    // new event and hide a stall). The urgent byte is out of band, not part of the stream.
    let server = Server::start("echo", &["--listen", "127.0.0.1:0"]);
    let mut clients: Vec<_> = (0..100).map(|_| connect(server.addr())).collect();
    for client in &mut clients {
        client.set_nodelay(true).expect("TCP_NODELAY");
        client.write_all(b"AAAA\n").expect("first line");
        socket2::SockRef::from(&*client)
            .send_out_of_band(b"!")
            .expect("urgent byte");
        client.write_all(b"CCCC\n").expect("second line");
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let got = read_exactly(client, 10, Duration::from_secs(20));
        assert_bytes_eq(&format!("client {i}"), b"AAAA\nCCCC\n", &got);
    }
}
