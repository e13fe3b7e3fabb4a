//! The embedding API over real loopback sockets: a reactor on a thread, custom handlers,
//! clients on the test thread.

mod common;

use common::embedded::{Embedded, Shared};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use wharf::{CloseReason, Config, ConnId, Context, Handler, ListenOptions, Listener, Reactor};

fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    stream.read_to_end(&mut out).expect("read to EOF");
    out
}

/// Records opens and closes; relays commands between connections.
#[derive(Default)]
struct Events {
    open: Vec<ConnId>,
    closed: Vec<(ConnId, CloseReason)>,
}

/// A small line protocol: `all X` writes X to every other connection, `kick` closes every
/// other connection after telling it `bye`, `stale` writes to the first connection ever seen.
struct Relay {
    events: Arc<Shared<Events>>,
    first: Option<ConnId>,
}

impl Handler for Relay {
    type Session = ();

    fn on_open(&mut self, ctx: &mut Context<'_>, _peer: SocketAddr) {
        self.first.get_or_insert(ctx.id());
        self.events.update(|e| e.open.push(ctx.id()));
    }

    fn on_data(&mut self, ctx: &mut Context<'_>, _: &mut (), input: &[u8]) -> usize {
        let Some(end) = input.iter().position(|&b| b == b'\n') else {
            return 0;
        };
        let line = &input[..end];
        let others: Vec<ConnId> = {
            let events = self.events.value.lock().unwrap();
            let closed: Vec<ConnId> = events.closed.iter().map(|(id, _)| *id).collect();
            events
                .open
                .iter()
                .copied()
                .filter(|id| *id != ctx.id() && !closed.contains(id))
                .collect()
        };
        if let Some(text) = line.strip_prefix(b"all ") {
            for id in &others {
                ctx.write_to(*id, text);
                ctx.write_to(*id, b"\n");
            }
            ctx.write(b"sent\n");
        } else if line == b"kick" {
            for id in &others {
                ctx.write_to(*id, b"bye\n");
                ctx.close_conn(*id);
            }
            ctx.write(b"kicked\n");
        } else if line == b"stale" {
            ctx.write_to(self.first.expect("a first connection"), b"leak\n");
            ctx.write(b"ok\n");
        }
        end + 1
    }

    fn on_close(&mut self, ctx: &mut Context<'_>, _: (), reason: CloseReason) {
        let id = ctx.id();
        self.events.update(|e| e.closed.push((id, reason)));
    }
}

fn relay() -> (Relay, Arc<Shared<Events>>) {
    let events = Arc::new(Shared::default());
    let handler = Relay {
        events: Arc::clone(&events),
        first: None,
    };
    (handler, events)
}

fn read_line(stream: &mut TcpStream) -> Vec<u8> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        match stream.read(&mut byte).expect("read a line") {
            0 => break,
            _ => line.push(byte[0]),
        }
    }
    line
}

#[test]
fn write_to_delivers_to_another_connection() {
    let (handler, events) = relay();
    let server = Embedded::start(Config::default(), handler);
    let mut alice = server.connect();
    let mut bob = server.connect();
    events.wait_until("two connections", |e| e.open.len() == 2);
    alice.write_all(b"all hello bob\n").unwrap();
    assert_eq!(read_line(&mut alice), b"sent\n");
    assert_eq!(read_line(&mut bob), b"hello bob\n");
}

#[test]
fn close_conn_flushes_output_then_closes_the_other_connection() {
    let (handler, events) = relay();
    let server = Embedded::start(Config::default(), handler);
    let mut alice = server.connect();
    let mut bob = server.connect();
    events.wait_until("two connections", |e| e.open.len() == 2);
    alice.write_all(b"kick\n").unwrap();
    assert_eq!(read_line(&mut alice), b"kicked\n");
    assert_eq!(read_to_end(&mut bob), b"bye\n", "bye, then end of stream");
    // The server lingers until the peer's end of stream, so that closing cannot reset data
    // the peer has not read: closing bob's side completes it.
    drop(bob);
    events.wait_until("bob's close", |e| {
        e.closed.iter().any(|(_, r)| *r == CloseReason::Closed)
    });
}

#[test]
fn stale_id_never_reaches_the_connection_that_reuses_its_slot() {
    let (handler, events) = relay();
    let server = Embedded::start(Config::default(), handler);
    let first = server.connect();
    events.wait_until("first connection", |e| e.open.len() == 1);
    first.shutdown(Shutdown::Both).unwrap();
    drop(first);
    events.wait_until("first connection closed", |e| e.closed.len() == 1);
    // The slab hands the freed slot to the next connection; only the generation tells the
    // two apart.
    let mut second = server.connect();
    second.write_all(b"stale\n").unwrap();
    second.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut second), b"ok\n");
    let events = events.value.lock().unwrap();
    assert_ne!(events.open[0], events.open[1]);
}

#[test]
fn stop_closes_connections_and_run_returns() {
    let (handler, events) = relay();
    let mut server = Embedded::start(Config::default(), handler);
    let mut client = server.connect();
    events.wait_until("connection", |e| e.open.len() == 1);
    server.stop();
    assert_eq!(read_to_end(&mut client), b"");
    let events = events.value.lock().unwrap();
    assert_eq!(events.closed.len(), 1);
    assert_eq!(events.closed[0].1, CloseReason::Shutdown);
}

/// Consumes only whole 4-byte frames and answers each with its bytes reversed.
struct Frames;

impl Handler for Frames {
    type Session = ();
    fn on_open(&mut self, _: &mut Context<'_>, _: SocketAddr) {}
    fn on_data(&mut self, ctx: &mut Context<'_>, _: &mut (), input: &[u8]) -> usize {
        let whole = input.len() / 4 * 4;
        for frame in input[..whole].chunks(4) {
            let mut reversed = frame.to_vec();
            reversed.reverse();
            ctx.write(&reversed);
        }
        whole
    }
}

#[test]
fn unconsumed_input_waits_for_the_rest_of_its_message() {
    let server = Embedded::start(Config::default(), Frames);
    let mut client = server.connect();
    client.set_nodelay(true).unwrap();
    for piece in [&b"ab"[..], b"cdefg", b"h", b"ijk", b"l"] {
        client.write_all(piece).unwrap();
    }
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut client), b"dcbahgfelkji");
}

#[test]
fn backpressure_stops_reading_from_a_peer_that_does_not_read() {
    let config = Config {
        high_water: 4096,
        low_water: 1024,
        ..Config::default()
    };
    let server = Embedded::start(config, wharf::service::Echo);
    let mut client = server.connect();
    // A write that finds no room for two seconds gives up: by then the server has stopped
    // reading. Without backpressure it would keep reading and buffering, and this loop would
    // run to the cap.
    client
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    const CAP: usize = 512 << 20;
    let chunk = vec![7u8; 64 * 1024];
    let mut written = 0;
    while written < CAP {
        match client.write(&chunk) {
            Ok(n) => written += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("write failed: {e}"),
        }
    }
    assert!(
        written < 64 << 20,
        "the server kept reading {written} bytes from a peer that never read"
    );
    // Nothing was lost: everything comes back once the client reads.
    client.shutdown(Shutdown::Write).unwrap();
    let echoed = read_to_end(&mut client);
    assert_eq!(echoed.len(), written);
    assert!(echoed.iter().all(|&b| b == 7));
}

/// Never consumes anything: waits for a message that never completes.
struct Hoarder;

impl Handler for Hoarder {
    type Session = ();
    fn on_open(&mut self, _: &mut Context<'_>, _: SocketAddr) {}
    fn on_data(&mut self, _: &mut Context<'_>, _: &mut (), _: &[u8]) -> usize {
        0
    }
}

#[test]
fn input_over_max_input_closes_the_connection() {
    let config = Config {
        max_input: 8 * 1024,
        ..Config::default()
    };
    let server = Embedded::start(config, Hoarder);
    let mut client = server.connect();
    client.write_all(&[1u8; 64 * 1024]).unwrap();
    // The server gives up on the connection: end of stream, not a read timeout.
    assert_eq!(read_to_end(&mut client), b"");
}

/// Says, on open, which listener the connection came in on and who its peer is.
struct WhoAmI;

impl Handler for WhoAmI {
    type Session = ();

    fn on_open(&mut self, ctx: &mut Context<'_>, peer: SocketAddr) {
        let line = format!("{:?} {peer} {:?}\n", ctx.listener(), ctx.peer_addr());
        ctx.write(line.as_bytes());
        ctx.close();
    }

    fn on_data(&mut self, _: &mut Context<'_>, _: &mut (), input: &[u8]) -> usize {
        input.len()
    }
}

#[test]
fn each_connection_knows_its_listener_and_a_proxy_header_names_its_peer() {
    let bind = || Listener::bind("127.0.0.1:0".parse().unwrap(), &ListenOptions::default());
    let (plain, behind) = (bind().unwrap(), bind().unwrap());
    let (plain_addr, behind_addr) = (plain.local_addr(), behind.local_addr());
    let mut reactor = Reactor::new(Config::default(), WhoAmI).unwrap();
    let plain_id = reactor.add_listener(plain).unwrap();
    let behind_id = reactor.add_listener(behind).unwrap();
    reactor.expect_proxy_header(behind_id, vec!["127.0.0.0/8".parse().unwrap()]);
    let handle = reactor.handle();
    let thread = std::thread::spawn(move || reactor.run());

    let mut direct = TcpStream::connect(plain_addr).unwrap();
    let line = String::from_utf8(read_to_end(&mut direct)).unwrap();
    let own = direct.local_addr().unwrap();
    assert_eq!(line, format!("Some({plain_id:?}) {own} Some({own})\n"));

    let mut proxied = TcpStream::connect(behind_addr).unwrap();
    proxied
        .write_all(b"PROXY TCP4 198.51.100.7 127.0.0.1 4000 7000\r\n")
        .unwrap();
    let line = String::from_utf8(read_to_end(&mut proxied)).unwrap();
    let client = "198.51.100.7:4000";
    assert_eq!(
        line,
        format!("Some({behind_id:?}) {client} Some({client})\n")
    );

    handle.stop();
    thread.join().unwrap().unwrap();
}
