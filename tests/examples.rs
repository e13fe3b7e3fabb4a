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

#[allow(dead_code)] // its main() is for `cargo run --example multi_reactor`
#[path = "../examples/multi_reactor.rs"]
mod multi_reactor;

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

#[test]
#[cfg(target_os = "linux")] // where SO_REUSEPORT spreads connections over the listeners
fn multi_reactor_example_spreads_connections_over_its_reactors() {
    let reactors = multi_reactor::Reactors::start(
        "127.0.0.1:0".parse().unwrap(),
        2,
        Config::default(),
        || wharf::service::Echo,
    )
    .expect("start two reactors");
    let addr = reactors.addr();
    // The kernel hashes connection addresses: 64 connections from 16 source addresses reach
    // both reactors, unless something is wrong (a chance of 2 in 2^64).
    for i in 0..64u8 {
        let source = std::net::Ipv4Addr::new(127, 0, 0, 1 + i % 16);
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .bind(&std::net::SocketAddr::from((source, 0)).into())
            .expect("bind the source address");
        socket.connect(&addr.into()).expect("connect");
        let mut client = TcpStream::from(socket);
        client
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let message = format!("hello {i}\n");
        client.write_all(message.as_bytes()).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).expect("read the echo");
        assert_eq!(reply, message);
    }
    reactors.drain();
    let stats = reactors.join().expect("both reactors return");
    assert_eq!(stats.iter().map(|s| s.accepted).sum::<u64>(), 64);
    assert!(
        stats.iter().all(|s| s.accepted > 0),
        "both reactors serve: {stats:?}"
    );
}
