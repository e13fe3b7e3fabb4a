//! Accepting connections when the process runs out of file descriptors.

mod common;

use common::*;
use std::io::Write;
use std::time::Duration;

#[test]
fn accept_resumes_when_descriptors_free_up() {
    // With 24 descriptors the server can hold about 15 connections; 40 clients connect (the
    // kernel completes every handshake and queues them). Each client in turn waits for its
    // echo and then closes, freeing a descriptor: the server must come back to the queue
    // each time, although no new connection arrives to wake the listener.
    let server = Server::start_with_nofile("echo", &["--listen", "127.0.0.1:0"], 24);
    let mut clients: Vec<_> = (0..40).map(|_| connect(server.addr())).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .write_all(format!("{i:04}").as_bytes())
            .expect("write");
    }
    for (i, client) in clients.into_iter().enumerate() {
        let mut client = client;
        let got = read_exactly(&mut client, 4, Duration::from_secs(20));
        assert_bytes_eq(&format!("client {i}"), format!("{i:04}").as_bytes(), &got);
        drop(client);
    }
    let stderr = server.stderr_text();
    assert!(
        stderr.contains("accept failed"),
        "the limit was never reached, so this test proved nothing; stderr:\n{stderr}"
    );
}
