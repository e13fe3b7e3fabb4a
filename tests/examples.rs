//! Every example under examples/ is compiled into this test and served over a real socket.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use wharf::{Config, ListenOptions, Listener, Reactor};

#[allow(dead_code)] // its main() is for `cargo run --example tally`
#[path = "../examples/tally.rs"]
mod tally;

#[allow(dead_code)] // its main() is for `cargo run --example kv`
#[path = "../examples/kv.rs"]
mod kv;

/// Serves `handler` on 127.0.0.1:0 on a thread; returns the address and a stop function.
fn serve<H>(handler: H) -> (std::net::SocketAddr, impl FnOnce())
where
    H: wharf::Handler + Send + 'static,
    H::Session: Send,
{
    let listener =
        Listener::bind("127.0.0.1:0".parse().unwrap(), &ListenOptions::default()).expect("bind");
    let addr = listener.local_addr();
    let mut reactor = Reactor::new(Config::default(), handler).unwrap();
    reactor.add_listener(listener).unwrap();
    let handle = reactor.handle();
    let server = std::thread::spawn(move || reactor.run());
    (addr, move || {
        handle.stop();
        server.join().unwrap().unwrap();
    })
}

/// Sends `input`, half-closes, and returns everything the server answered.
fn exchange(addr: std::net::SocketAddr, input: &[u8]) -> String {
    let mut client = TcpStream::connect(addr).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    client.write_all(input).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    client.read_to_string(&mut reply).expect("read reply");
    reply
}

#[test]
fn kv_example_sets_gets_and_deletes_across_connections() {
    let (addr, stop) = serve(kv::Kv::default());
    assert_eq!(
        exchange(
            addr,
            b"SET greeting hello world\nGET greeting\nGET nothing\nBOGUS\n"
        ),
        "OK\nVALUE hello world\nNOT_FOUND\nERR expected SET key value, GET key or DEL key\n"
    );
    // The store outlives the connection; CRLF clients work too.
    assert_eq!(
        exchange(addr, b"GET greeting\r\nDEL greeting\r\nDEL greeting\r\n"),
        "VALUE hello world\nDELETED\nNOT_FOUND\n"
    );
    stop();
}

#[test]
fn tally_example_sums_per_connection_and_overall() {
    let (addr, stop) = serve(tally::Tally::default());
    assert_eq!(
        exchange(addr, b"5\n7\nx\n"),
        "5 5\n12 12\nERR not an integer: x\n"
    );
    // A second connection starts its own sum; the total carries on. The unterminated "9"
    // is never answered.
    assert_eq!(exchange(addr, b"-2\n1\n9"), "-2 10\n-1 11\n");
    stop();
}
