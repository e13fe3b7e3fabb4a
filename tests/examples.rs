//! Every example under examples/ is compiled into this test and served over a real socket.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use wharf::{Config, ListenOptions, Listener, Reactor};

#[allow(dead_code)] // its main() is for `cargo run --example tally`
#[path = "../examples/tally.rs"]
mod tally;

#[test]
fn tally_example_sums_per_connection_and_overall() {
    let listener =
        Listener::bind("127.0.0.1:0".parse().unwrap(), &ListenOptions::default()).expect("bind");
    let addr = listener.local_addr();
    let mut reactor = Reactor::new(Config::default(), tally::Tally::default()).unwrap();
    reactor.add_listener(listener).unwrap();
    let handle = reactor.handle();
    let server = std::thread::spawn(move || reactor.run());

    let exchange = |input: &[u8]| {
        let mut client = TcpStream::connect(addr).expect("connect");
        client
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        client.write_all(input).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).expect("read reply");
        reply
    };
    assert_eq!(
        exchange(b"5\n7\nx\n"),
        "5 5\n12 12\nERR not an integer: x\n"
    );
    // A second connection starts its own sum; the total carries on. The unterminated "9"
    // is never answered.
    assert_eq!(exchange(b"-2\n1\n9"), "-2 10\n-1 11\n");

    handle.stop();
    server.join().unwrap().unwrap();
}
