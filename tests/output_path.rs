//! The reactor's output path (issue 13), on an embedded reactor over real loopback sockets:
//! a pingpong costs one write per round trip, many small writes to one connection in one
//! callback go out in one `writev`, and a handler that checks [`Context::backlogged`] keeps
//! its output near `Config::high_water` while the rest of its input waits.
//!
//! The counts come from [`wharf::Stats::writes`]: the write and writev system calls made for
//! connections' output.

mod common;

use common::embedded::{Embedded, Shared, DEADLINE};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;

use wharf::{Config, ConnId, Context, Handler};

/// Reads exactly `n` bytes, failing clearly on end of stream or a timeout.
fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        match stream.read(&mut buf[filled..]) {
            Ok(0) => panic!("end of stream after {filled} of {n} bytes"),
            Ok(k) => filled += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read failed after {filled} of {n} bytes: {e}"),
        }
    }
    buf
}

// ---------------------------------------------------------------------------
// Pingpong
// ---------------------------------------------------------------------------

const ROUND_TRIPS: usize = 2_000;
const PING: usize = 64;
/// Writes allowed beyond one per round trip: a reply the kernel took in two parts, say.
const WRITE_SLACK: u64 = 10;

#[test]
fn a_pingpong_round_trip_costs_one_write() {
    let mut server = Embedded::start(Config::default(), wharf::service::Echo);
    let mut client = server.connect();
    for i in 0..ROUND_TRIPS {
        let ping = [(i % 251) as u8; PING];
        client.write_all(&ping).expect("write a ping");
        let pong = read_exactly(&mut client, PING);
        assert_eq!(pong, ping, "round trip {i}");
    }
    let stats = server.stop();
    let expected = ROUND_TRIPS as u64;
    assert_eq!(stats.bytes_out, expected * PING as u64, "{stats}");
    assert!(
        (expected..=expected + WRITE_SLACK).contains(&stats.writes),
        "{} writes for {ROUND_TRIPS} round trips (one each expected, at most {WRITE_SLACK} \
         more): {stats}",
        stats.writes
    );
}

// ---------------------------------------------------------------------------
// Coalescing
// ---------------------------------------------------------------------------

const MESSAGES: usize = 100;

/// For each line from one connection, writes `MESSAGES` small messages, one call each, to
/// the other connection.
struct Scatter {
    conns: Arc<Shared<Vec<ConnId>>>,
}

impl Handler for Scatter {
    type Session = ();

    fn on_open(&mut self, ctx: &mut Context<'_>, _peer: SocketAddr) {
        let id = ctx.id();
        self.conns.update(|conns| conns.push(id));
    }

    fn on_data(&mut self, ctx: &mut Context<'_>, _: &mut (), input: &[u8]) -> usize {
        let other = self.conns.get(|conns| {
            conns
                .iter()
                .copied()
                .find(|id| *id != ctx.id())
                .expect("a second connection")
        });
        let mut consumed = 0;
        while let Some(end) = input[consumed..].iter().position(|&b| b == b'\n') {
            for i in 0..MESSAGES {
                ctx.write_to(other, format!("msg {i:03}\n").as_bytes());
            }
            consumed += end + 1;
        }
        consumed
    }
}

fn scattered() -> Vec<u8> {
    (0..MESSAGES)
        .flat_map(|i| format!("msg {i:03}\n").into_bytes())
        .collect()
}

#[test]
fn many_small_writes_to_one_connection_go_out_in_one_writev() {
    let conns = Arc::new(Shared::default());
    let mut server = Embedded::start(
        Config::default(),
        Scatter {
            conns: Arc::clone(&conns),
        },
    );
    let mut a = server.connect();
    conns.wait_until("A's open", |c: &Vec<ConnId>| c.len() == 1);
    let mut b = server.connect();
    conns.wait_until("B's open", |c: &Vec<ConnId>| c.len() == 2);

    a.write_all(b"go\n").expect("write to A");
    let expected = scattered();
    let got = read_exactly(&mut b, expected.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected),
        "B got the messages in order"
    );
    let stats = server.stop();
    // A was sent nothing: every write was for B's messages.
    assert_eq!(stats.bytes_out, expected.len() as u64, "{stats}");
    assert!(
        stats.writes <= 2,
        "{} writes for {MESSAGES} messages written in one callback (one writev expected, \
         two if the kernel took them in parts): {stats}",
        stats.writes
    );
}

// ---------------------------------------------------------------------------
// Output bounded inside a callback
// ---------------------------------------------------------------------------

const BLOCK: usize = 64 * 1024;
const INPUT: usize = 100;
const HIGH_WATER: usize = 1024 * 1024;

/// What the amplifying handler saw.
#[derive(Default, Debug)]
struct Amplified {
    /// The most it wrote in one callback, and how many callbacks stopped on `backlogged`.
    max_in_callback: usize,
    stopped: usize,
    callbacks: usize,
    consumed: usize,
    written: usize,
}

/// Answers each input byte with a 64 KiB block of that byte, stopping when
/// `Context::backlogged` says the connection has output enough; the rest of its input waits.
struct Amplifier {
    seen: Arc<Shared<Amplified>>,
}

impl Handler for Amplifier {
    type Session = ();

    fn on_open(&mut self, _: &mut Context<'_>, _: SocketAddr) {}

    fn on_data(&mut self, ctx: &mut Context<'_>, _: &mut (), input: &[u8]) -> usize {
        let mut consumed = 0;
        let mut written = 0;
        while consumed < input.len() && !ctx.backlogged() {
            ctx.write(&[input[consumed]; BLOCK]);
            written += BLOCK;
            consumed += 1;
        }
        self.seen.update(|seen| {
            seen.max_in_callback = seen.max_in_callback.max(written);
            seen.stopped += usize::from(consumed < input.len());
            seen.callbacks += 1;
            seen.consumed += consumed;
            seen.written += written;
        });
        consumed
    }
}

#[test]
fn a_handler_that_checks_backlogged_keeps_its_output_near_high_water() {
    let config = Config {
        high_water: HIGH_WATER,
        low_water: HIGH_WATER / 4,
        ..Config::default()
    };
    let seen = Arc::new(Shared::default());
    let mut server = Embedded::start(
        config,
        Amplifier {
            seen: Arc::clone(&seen),
        },
    );
    // A small receive buffer, so that the kernel takes little of the output while the client
    // does not read.
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(64 * 1024).expect("SO_RCVBUF");
    socket.connect(&server.addr.into()).expect("connect");
    let mut client: TcpStream = socket.into();
    client
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");

    let input: Vec<u8> = (0..INPUT as u8).collect();
    client.write_all(&input).expect("write the input");
    // Not reading: the handler must stop on backlogged() with input left over.
    seen.wait_until("a callback stopped on backlogged()", |s: &Amplified| {
        s.stopped >= 1
    });
    let while_stalled = seen.get(|s| (s.written, s.consumed));
    assert!(
        while_stalled.1 < INPUT,
        "the handler consumed all its input while the client read nothing: {:?}",
        seen.get(|s| format!("{s:?}"))
    );

    // Now read everything: the rest of the input is passed again as the output drains.
    let expected: Vec<u8> = input.iter().flat_map(|&b| [b; BLOCK]).collect();
    let got = read_exactly(&mut client, expected.len());
    if let Some(at) = got.iter().zip(&expected).position(|(g, e)| g != e) {
        panic!(
            "byte {at} (block {}) is {} where {} was due",
            at / BLOCK,
            got[at],
            expected[at]
        );
    }
    client.shutdown(Shutdown::Write).expect("half-close");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("read to the end");
    assert!(rest.is_empty(), "{} bytes more than expected", rest.len());
    let stats = server.stop();

    let (max, consumed, written, callbacks, report) = seen.get(|s| {
        (
            s.max_in_callback,
            s.consumed,
            s.written,
            s.callbacks,
            format!("{s:?}"),
        )
    });
    eprintln!("while stalled: {while_stalled:?} (written, consumed); at the end: {report}");
    assert!(
        max <= HIGH_WATER + BLOCK,
        "one callback wrote {max} bytes: past high_water ({HIGH_WATER}) by more than the one \
         block written before backlogged() turned true; {report}"
    );
    assert_eq!(consumed, INPUT, "{report}");
    assert_eq!(written, INPUT * BLOCK, "{report}");
    assert!(
        callbacks > 1,
        "the rest of the input was never passed again: {report}"
    );
    assert_eq!(stats.bytes_out, (INPUT * BLOCK) as u64, "{stats}");
}
