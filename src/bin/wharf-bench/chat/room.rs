//! The chat job's clients as a scenario of the client loop (`client.rs`): each client in
//! one [`Stage`], and the only I/O of the job.
//!
//! Reading is the hot path: at 100 clients x 50,000 lines/s the clients receive about five
//! million lines a second on one core. Every read goes into one shared 64 KiB scratch
//! buffer and is counted there ([`Deliveries::take`]); a client keeps bytes of its own only
//! for an unfinished line. Writing is the light side (a line of ~30 bytes per send): a line
//! is written straight to the socket, and only what the socket does not take is queued,
//! up to [`QUEUE_BYTES`] per client.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::event::Source;
use mio::net::TcpStream;
use mio::Interest;

use super::line::{Deliveries, Line};
use crate::client::{nonblocking, After, Client, Key, Readiness, Scenario};
use crate::dial::{connected, Dialer};
use crate::error::BenchError;
use crate::failure::{Failure, FailureKind, Tally};

/// Most bytes a client queues when its socket is full. A server that stops reading is the
/// server's problem, not the client's memory's: beyond this, lines count as unsent.
const QUEUE_BYTES: usize = 64 * 1024;

/// Where a client is on its way into the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `connect` is in flight.
    Connecting,
    /// Connected; no barrier line has reached it yet.
    Waiting,
    /// A barrier line reached it: it is in the room, and whatever it receives from now on
    /// is another client's line.
    Ready,
}

pub struct Member {
    stream: TcpStream,
    stage: Stage,
    /// The tail of a line not yet ended by `\n`.
    partial: Vec<u8>,
    /// Bytes the socket did not take yet, at most [`QUEUE_BYTES`].
    queue: Vec<u8>,
}

/// How many clients are in each stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct Census {
    /// Clients dialled so far, failed ones included.
    pub dialed: usize,
    pub connecting: usize,
    pub waiting: usize,
    pub ready: usize,
}

impl Census {
    fn of(&mut self, stage: Stage) -> &mut usize {
        match stage {
            Stage::Connecting => &mut self.connecting,
            Stage::Waiting => &mut self.waiting,
            Stage::Ready => &mut self.ready,
        }
    }

    /// Clients still connected or connecting.
    pub fn alive(&self) -> usize {
        self.connecting + self.waiting + self.ready
    }
}

/// What became of a line handed to [`Client::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Written,
    /// The socket took part or none of it; the rest waits in the client's queue.
    Queued,
    /// The queue was full, or the client is gone: the line was not sent.
    Dropped,
}

/// The clients' scenario: where each is, and what they have counted. A client's key on the
/// loop is its index: the sender in the lines it sends, and its row of [`Deliveries`].
pub struct Room {
    capacity: usize,
    dialer: Dialer,
    origin: Instant,
    census: Census,
    /// Where the search for a client to send the next barrier line starts.
    next_syncer: usize,
    /// The client that sent the last barrier line.
    last_syncer: Option<usize>,
    pub deliveries: Deliveries,
    pub tally: Tally,
}

impl Room {
    /// A room for `conns` clients, none dialled yet.
    pub fn new(dialer: Dialer, conns: usize) -> Result<Client<Room>, BenchError> {
        Client::new(Room {
            capacity: conns,
            dialer,
            origin: Instant::now(),
            census: Census::default(),
            next_syncer: 0,
            last_syncer: None,
            deliveries: Deliveries::new(conns),
            tally: Tally::default(),
        })
    }

    /// Nanoseconds since the room was made: the clock of every line's timestamp.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// How many clients are in each stage.
    pub fn census(&self) -> Census {
        self.census
    }
}

impl Scenario for Room {
    type Conn = Member;

    fn source(member: &mut Member) -> &mut dyn Source {
        &mut member.stream
    }

    /// Finishes the connect, sends what is queued, and reads the lines that came.
    fn on_ready(
        &mut self,
        index: Key,
        member: &mut Member,
        readiness: Readiness,
        scratch: &mut [u8],
    ) -> Result<After, Failure> {
        if member.stage == Stage::Connecting {
            let refused = |error| Failure::new(FailureKind::ConnectFailed, Some(error));
            if !connected(&member.stream).map_err(refused)? {
                return Ok(After::Stay);
            }
            member.stage = Stage::Waiting;
            self.census.connecting -= 1;
            self.census.waiting += 1;
        }
        let hangup = readiness.hangup;
        if (readiness.writable || hangup) && !member.queue.is_empty() {
            flush(member)?;
        }
        if !(readiness.readable || hangup) {
            return Ok(After::Stay);
        }
        let mut synced = false;
        while let Some(n) = nonblocking(|| member.stream.read(scratch)).map_err(Failure::from_io)? {
            if n == 0 {
                return Err(closed());
            }
            // One clock reading per read, not per line: the lines of one read arrived together.
            let now_ns = self.now_ns();
            synced |= self
                .deliveries
                .take(index, &mut member.partial, &scratch[..n], now_ns);
            // A short read drained the socket: more data raises a new edge, so skip the read
            // that would only say WouldBlock. Not after a hangup, whose 0 must still be read.
            if n < scratch.len() && !hangup {
                break;
            }
        }
        if synced && member.stage != Stage::Ready {
            // A barrier line: the client is in the room.
            *self.census.of(member.stage) -= 1;
            member.stage = Stage::Ready;
            self.census.ready += 1;
        }
        Ok(After::Stay)
    }

    fn on_closed(&mut self, _index: Key, member: &mut Member, failure: Option<Failure>) {
        *self.census.of(member.stage) -= 1;
        if let Some(failure) = failure {
            self.tally.record(&failure);
        }
    }
}

impl Client<Room> {
    /// Dials clients until `in_flight` connects are pending or every client is dialled.
    pub fn dial_more(&mut self, in_flight: usize) {
        while self.scenario.census.dialed < self.scenario.capacity
            && self.scenario.census.connecting < in_flight
        {
            self.scenario.census.dialed += 1;
            let added = self.scenario.dialer.dial().and_then(|stream| {
                let member = Member {
                    stream,
                    stage: Stage::Connecting,
                    partial: Vec::new(),
                    queue: Vec::new(),
                };
                self.add(member, Interest::READABLE | Interest::WRITABLE)
            });
            match added {
                Ok(_) => self.scenario.census.connecting += 1,
                Err(error) => {
                    let failure = Failure::new(FailureKind::ConnectFailed, Some(error));
                    self.scenario.tally.record(&failure);
                }
            }
        }
    }

    /// Sends the barrier line `sync <k>` from a client already in the room if there is one:
    /// it has received a line, so the server has accepted it and relays what it sends.
    /// Before that, from the next connected client in turn, so that one the server has not
    /// accepted yet (its handshake done in the kernel, its `accept` still to come) does not
    /// hold the barrier up. False if no client is connected.
    pub fn send_sync(&mut self, k: u64) -> bool {
        let count = self.scenario.capacity;
        let in_stage = |index: usize, stage: Stage| {
            self.get(index).is_some_and(|member| member.stage == stage)
        };
        let ready = (0..count).find(|&index| in_stage(index, Stage::Ready));
        let syncer = ready.or_else(|| {
            (0..count)
                .map(|offset| (self.scenario.next_syncer + offset) % count)
                .find(|&index| in_stage(index, Stage::Waiting))
        });
        let Some(index) = syncer else {
            return false;
        };
        self.scenario.next_syncer = index + 1;
        self.scenario.last_syncer = Some(index);
        self.send(index, &Line::sync(k)) != Sent::Dropped
    }

    /// Whether the one client not in the room is the last to send a barrier line: it cannot
    /// receive its own line, so the next one should come at once, from another client.
    pub fn only_the_syncer_waits(&self) -> bool {
        self.scenario.census.waiting == 1
            && self.scenario.last_syncer.is_some_and(|index| {
                self.get(index)
                    .is_some_and(|member| member.stage == Stage::Waiting)
            })
    }

    pub fn send(&mut self, index: usize, line: &Line) -> Sent {
        self.with(index, |_, member| write_line(member, line.as_bytes()))
            .unwrap_or(Sent::Dropped)
    }

    /// Closes every client not in the room yet, counted as timed out.
    pub fn drop_unready(&mut self, why: &str) {
        self.each(|_, _, member| {
            if member.stage == Stage::Ready {
                return Ok(());
            }
            let error = io::Error::new(io::ErrorKind::TimedOut, why.to_string());
            Err(Failure::new(FailureKind::Timeout, Some(error)))
        });
    }
}

/// Writes a line straight to the socket when nothing is queued before it; queues what the
/// socket does not take, up to [`QUEUE_BYTES`].
fn write_line(member: &mut Member, line: &[u8]) -> Result<Sent, Failure> {
    if member.stage == Stage::Connecting {
        return Ok(Sent::Dropped);
    }
    if !member.queue.is_empty() {
        if member.queue.len() + line.len() > QUEUE_BYTES {
            return Ok(Sent::Dropped);
        }
        member.queue.extend_from_slice(line);
        return Ok(Sent::Queued);
    }
    let written = nonblocking(|| member.stream.write(line))
        .map_err(Failure::from_io)?
        .unwrap_or(0);
    if written == line.len() {
        return Ok(Sent::Written);
    }
    member.queue.extend_from_slice(&line[written..]);
    Ok(Sent::Queued)
}

/// Writes what the socket takes of the client's queue.
fn flush(member: &mut Member) -> Result<(), Failure> {
    let mut written = 0;
    while written < member.queue.len() {
        match nonblocking(|| member.stream.write(&member.queue[written..]))
            .map_err(Failure::from_io)?
        {
            None => break,
            Some(0) => {
                return Err(Failure::new(
                    FailureKind::Closed,
                    Some(io::Error::from(io::ErrorKind::WriteZero)),
                ))
            }
            Some(n) => written += n,
        }
    }
    member.queue.drain(..written);
    Ok(())
}

fn closed() -> Failure {
    Failure::new(
        FailureKind::Closed,
        Some(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed a chat connection",
        )),
    )
}
