//! The chat job's clients and their sockets: one edge-triggered `mio::Poll` over all of them,
//! each client in one [`Stage`], and the only I/O of the job.
//!
//! Reading is the hot path: at 100 clients x 50,000 lines/s the clients receive about five
//! million lines a second on one core. Every read goes into one shared 64 KiB scratch
//! buffer and is counted there ([`Deliveries::take`]); a client keeps bytes of its own only
//! for an unfinished line. Writing is the light side (a line of ~30 bytes per send): a line
//! is written straight to the socket, and only what the socket does not take is queued,
//! up to [`QUEUE_BYTES`] per client.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::line::{Deliveries, Line};
use crate::dial::Dialer;
use crate::error::BenchError;
use crate::failure::{Failure, FailureKind, Tally};

/// Readiness events taken per `epoll_wait`.
const EVENTS_PER_POLL: usize = 1024;

/// Bytes read per `read` call, into the buffer every client shares.
const SCRATCH_BYTES: usize = 64 * 1024;

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

/// One chat client.
struct Member {
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

/// What became of a line handed to [`Room::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The socket took it.
    Written,
    /// The socket took part or none of it; the rest waits in the client's queue.
    Queued,
    /// The queue was full, or the client is gone: the line was not sent.
    Dropped,
}

/// The clients, their poller, and what they have counted.
pub struct Room {
    poll: Poll,
    events: Events,
    /// The events of one poll, copied out so each can borrow the room mutably.
    ready: Vec<(usize, bool, bool, bool)>,
    members: Vec<Option<Member>>,
    capacity: usize,
    dialer: Dialer,
    scratch: Box<[u8]>,
    origin: Instant,
    census: Census,
    /// Where the search for a client to send the next barrier line starts.
    next_syncer: usize,
    /// The client that sent the last barrier line.
    last_syncer: Option<usize>,
    /// What the receivers counted.
    pub deliveries: Deliveries,
    /// Connection failures.
    pub tally: Tally,
}

impl Room {
    /// A room for `conns` clients, none dialled yet.
    pub fn new(dialer: Dialer, conns: usize) -> Result<Room, BenchError> {
        Ok(Room {
            poll: Poll::new().map_err(|error| BenchError::io("creating the poller", error))?,
            events: Events::with_capacity(EVENTS_PER_POLL),
            ready: Vec::with_capacity(EVENTS_PER_POLL),
            members: Vec::with_capacity(conns),
            capacity: conns,
            dialer,
            scratch: vec![0; SCRATCH_BYTES].into_boxed_slice(),
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

    /// Dials clients until `in_flight` connects are pending or every client is dialled.
    pub fn dial_more(&mut self, in_flight: usize) {
        while self.members.len() < self.capacity && self.census.connecting < in_flight {
            let index = self.members.len();
            self.census.dialed += 1;
            let dialed = self.dialer.dial().and_then(|mut stream| {
                self.poll
                    .registry()
                    .register(
                        &mut stream,
                        Token(index),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .map(|()| stream)
            });
            match dialed {
                Ok(stream) => {
                    self.census.connecting += 1;
                    self.members.push(Some(Member {
                        stream,
                        stage: Stage::Connecting,
                        partial: Vec::new(),
                        queue: Vec::new(),
                    }));
                }
                Err(error) => {
                    let failure = Failure::new(FailureKind::ConnectFailed, Some(error));
                    self.tally.record(&failure);
                    self.members.push(None);
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
        let count = self.members.len();
        let in_stage = |index: usize, stage: Stage| {
            self.members[index]
                .as_ref()
                .is_some_and(|member| member.stage == stage)
        };
        let ready = (0..count).find(|&index| in_stage(index, Stage::Ready));
        let syncer = ready.or_else(|| {
            (0..count)
                .map(|offset| (self.next_syncer + offset) % count)
                .find(|&index| in_stage(index, Stage::Waiting))
        });
        let Some(index) = syncer else {
            return false;
        };
        self.next_syncer = index + 1;
        self.last_syncer = Some(index);
        self.send(index, &Line::sync(k)) != Sent::Dropped
    }

    /// Whether the one client not in the room is the last to send a barrier line: it cannot
    /// receive its own line, so the next one should come at once, from another client.
    pub fn only_the_syncer_waits(&self) -> bool {
        self.census.waiting == 1
            && self.last_syncer.is_some_and(|index| {
                self.members[index]
                    .as_ref()
                    .is_some_and(|member| member.stage == Stage::Waiting)
            })
    }

    /// Sends `line` from client `index`.
    pub fn send(&mut self, index: usize, line: &Line) -> Sent {
        let Some(member) = self.members.get_mut(index).and_then(Option::as_mut) else {
            return Sent::Dropped;
        };
        match write_line(member, line.as_bytes()) {
            Ok(sent) => sent,
            Err(failure) => {
                self.fail(index, failure);
                Sent::Dropped
            }
        }
    }

    /// Closes every client not in the room yet, counted as timed out.
    pub fn drop_unready(&mut self, why: &str) {
        for index in 0..self.members.len() {
            if let Some(member) = &self.members[index] {
                if member.stage != Stage::Ready {
                    let error = io::Error::new(io::ErrorKind::TimedOut, why.to_string());
                    self.fail(index, Failure::new(FailureKind::Timeout, Some(error)));
                }
            }
        }
    }

    /// Waits up to `wait` for events and handles them: handshakes, queued writes, lines.
    pub fn turn(&mut self, wait: Duration) -> Result<(), BenchError> {
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(error) => return Err(BenchError::io("waiting for events (epoll_wait)", error)),
        }
        self.ready.clear();
        self.ready.extend(self.events.iter().map(readiness));
        for at in 0..self.ready.len() {
            let (index, readable, writable, read_closed) = self.ready[at];
            if let Err(failure) = self.advance(index, readable, writable, read_closed) {
                self.fail(index, failure);
            }
        }
        Ok(())
    }

    /// Drives client `index` after a readiness event.
    fn advance(
        &mut self,
        index: usize,
        readable: bool,
        writable: bool,
        read_closed: bool,
    ) -> Result<(), Failure> {
        let Some(member) = self.members.get_mut(index).and_then(Option::as_mut) else {
            return Ok(()); // failed earlier in this batch
        };
        if member.stage == Stage::Connecting {
            let refused = |error| Failure::new(FailureKind::ConnectFailed, Some(error));
            if let Some(error) = member.stream.take_error().map_err(refused)? {
                return Err(refused(error));
            }
            match member.stream.peer_addr() {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(error) => return Err(refused(error)),
            }
            member.stage = Stage::Waiting;
            self.census.connecting -= 1;
            self.census.waiting += 1;
        }
        if writable && !member.queue.is_empty() {
            flush(member)?;
        }
        if !readable {
            return Ok(());
        }
        let mut synced = false;
        loop {
            let n = match member.stream.read(&mut self.scratch) {
                Ok(0) => return Err(closed()),
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(Failure::from_io(error)),
            };
            // One clock reading per read, not per line: the lines of one read arrived together.
            let now_ns = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
            synced |= self
                .deliveries
                .take(index, &mut member.partial, &self.scratch[..n], now_ns);
            // A short read drained the socket: more data raises a new edge, so skip the read
            // that would only say WouldBlock. Not after a FIN, whose 0 must still be read.
            if n < self.scratch.len() && !read_closed {
                break;
            }
        }
        if synced {
            self.promote(index);
        }
        Ok(())
    }

    /// Client `index` is in the room.
    fn promote(&mut self, index: usize) {
        if let Some(member) = self.members[index].as_mut() {
            if member.stage != Stage::Ready {
                *self.census.of(member.stage) -= 1;
                member.stage = Stage::Ready;
                self.census.ready += 1;
            }
        }
    }

    /// Counts client `index`'s failure and closes it.
    fn fail(&mut self, index: usize, failure: Failure) {
        if let Some(member) = self.members[index].take() {
            *self.census.of(member.stage) -= 1;
            self.tally.record(&failure);
        }
    }
}

/// (client, readable, writable, read closed) of one event; an error or hang-up reads as
/// readable and writable, so the read or write that follows reports it.
fn readiness(event: &Event) -> (usize, bool, bool, bool) {
    let read_closed = event.is_read_closed() || event.is_error();
    (
        event.token().0,
        event.is_readable() || read_closed,
        event.is_writable() || event.is_write_closed() || event.is_error(),
        read_closed,
    )
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
    let written = loop {
        match member.stream.write(line) {
            Ok(n) => break n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break 0,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(Failure::from_io(error)),
        }
    };
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
        match member.stream.write(&member.queue[written..]) {
            Ok(0) => {
                return Err(Failure::new(
                    FailureKind::Closed,
                    Some(io::Error::from(io::ErrorKind::WriteZero)),
                ))
            }
            Ok(n) => written += n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(Failure::from_io(error)),
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
