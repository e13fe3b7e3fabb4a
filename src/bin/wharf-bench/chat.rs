//! `chat`: fan-out through a line-based chat room (`wharf chat`, or any server that delivers
//! each line a client sends to every other client as `<NAME> line`).
//!
//! The pingpong driver (`client.rs`) does not fit: there a reply answers a request on the
//! same connection, here one line sent brings CONNS-1 lines on other connections, at any
//! time. So this file has its own single-threaded loop on one edge-triggered `mio::Poll`, with
//! a read and a write buffer per client.
//!
//! Each line a client sends is `b <client> <seq> <nanos>`: its own index, a per-client
//! sequence number and the send time in nanoseconds since the run began (one process, one
//! monotonic clock, so receivers can subtract). A receiver checks that each sender's numbers
//! only grow, and times the fan-out. Lines starting with `* ` (joins, leaves) are the room's
//! announcements; they are only used to know when every client has joined.
//!
//! Sending starts once every client is in the room: the room announces each join to the
//! members already there, so when CONNS x (CONNS-1) / 2 `joined` lines have arrived, all of
//! them are in. From then on every line must reach every other client: expected deliveries
//! are sent x (CONNS-1), and what has not arrived after a short drain counts as missing.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::cli::ChatArgs;
use crate::dial::Dialer;
use crate::error::BenchError;
use crate::failure::{Failure, FailureKind, Tally};
use crate::latency::Latencies;
use crate::limits::preflight;
use crate::progress::Progress;
use crate::report::{ChatReport, RunId};

/// Longest wait for events in one turn, when no line is due sooner.
const TURN: Duration = Duration::from_millis(50);

/// Readiness events taken per `epoll_wait`.
const EVENTS_PER_POLL: usize = 1024;

/// Bytes read per `read` call.
const SCRATCH_BYTES: usize = 64 * 1024;

/// After the last line is sent, how long the lines still on their way may take to arrive.
const DRAIN: Duration = Duration::from_secs(2);

/// One chat client.
struct Member {
    stream: TcpStream,
    /// Whether the handshake has completed.
    connected: bool,
    /// Received bytes not yet ending in `\n`.
    input: Vec<u8>,
    /// Bytes the socket did not take yet.
    output: Vec<u8>,
    /// Per sender, the sequence number the next line from it must at least have.
    next_seq: Vec<u64>,
}

/// What the receivers have counted.
#[derive(Default)]
struct Counts {
    joins: u64,
    deliveries: u64,
    out_of_order: u64,
    bad_lines: u64,
    latencies: Option<Latencies>,
    tally: Tally,
}

/// The room as this client sees it: every member's socket and what they have counted.
struct Room {
    poll: Poll,
    events: Events,
    members: Vec<Option<Member>>,
    dialer: Dialer,
    scratch: Box<[u8]>,
    counts: Counts,
    /// The clock every line's timestamp counts from.
    origin: Instant,
    line: String,
}

/// Runs `chat` as the command line asks.
pub fn run(args: &ChatArgs) -> Result<ChatReport, BenchError> {
    let target = &args.target;
    let conns = args.conns as usize;
    preflight(target, conns as u64)?;
    let mut room = Room {
        poll: Poll::new().map_err(|error| BenchError::io("creating the poller", error))?,
        events: Events::with_capacity(EVENTS_PER_POLL),
        members: (0..conns).map(|_| None).collect(),
        dialer: Dialer::new(target.addr, target.src.as_ref()),
        scratch: vec![0; SCRATCH_BYTES].into_boxed_slice(),
        counts: Counts {
            latencies: Some(Latencies::new()),
            ..Counts::default()
        },
        origin: Instant::now(),
        line: String::new(),
    };

    // Join: dial with at most --connect-pace handshakes in flight, until every client has
    // been announced to the ones before it (or the timeout says it will not happen).
    let join_deadline = room.origin + target.timeout;
    let mut dialed = 0;
    loop {
        let connecting = room
            .members
            .iter()
            .flatten()
            .filter(|member| !member.connected)
            .count();
        let mut room_for = (target.connect_pace as usize).saturating_sub(connecting);
        while dialed < conns && room_for > 0 {
            room.dial(dialed);
            dialed += 1;
            room_for -= 1;
        }
        let alive = room.alive() as u64;
        let all_in = dialed == conns
            && connecting == 0
            && room.counts.joins >= alive * alive.saturating_sub(1) / 2;
        if all_in || Instant::now() >= join_deadline {
            break;
        }
        room.turn(TURN)?;
    }
    let join_s = room.origin.elapsed().as_secs_f64();
    let joined = room
        .members
        .iter()
        .flatten()
        .filter(|member| member.connected)
        .count();
    if joined == 0 {
        return Err(BenchError::NoConnection {
            addr: target.addr,
            first_failure: room
                .counts
                .tally
                .first
                .clone()
                .unwrap_or_else(|| "no client joined".into()),
        });
    }

    // Send: line g of the whole run goes from client g % CONNS, so the clients take turns
    // and each sends at --rate, spread evenly rather than all at the same instant.
    let interval = Duration::from_secs_f64(1.0 / (args.rate * conns as f64));
    let progress = Progress::new("chat", args.duration);
    let start = Instant::now();
    let end = start + args.duration;
    let mut next_line: u64 = 0;
    let mut sent: u64 = 0;
    let mut expected: u64 = 0;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let mut due = start + interval.mul_f64(next_line as f64);
        while due <= now && due < end {
            let client = (next_line % conns as u64) as usize;
            let seq = next_line / conns as u64;
            if room.send(client, seq) {
                sent += 1;
                expected += room.alive().saturating_sub(1) as u64;
            }
            next_line += 1;
            due = start + interval.mul_f64(next_line as f64);
        }
        room.turn(due.saturating_duration_since(now).min(TURN))?;
        let elapsed = now - start;
        progress.update(elapsed, || {
            let rate = room.counts.deliveries as f64 / elapsed.as_secs_f64().max(1e-3);
            format!(
                "{rate:.0} deliveries/s, {} errors",
                room.counts.tally.total()
            )
        });
    }
    let seconds = start.elapsed().as_secs_f64();
    let drain_end = Instant::now() + DRAIN;
    while room.counts.deliveries + room.counts.out_of_order < expected {
        let now = Instant::now();
        if now >= drain_end || room.alive() == 0 {
            break;
        }
        room.turn((drain_end - now).min(TURN))?;
    }
    progress.finish();
    room.members.clear();

    let counts = room.counts;
    let missing = expected.saturating_sub(counts.deliveries + counts.out_of_order);
    let latency = counts
        .latencies
        .as_ref()
        .map(Latencies::summary)
        .unwrap_or_default();
    Ok(ChatReport {
        id: RunId::new("chat", target),
        connections: conns as u64,
        rate_per_conn: args.rate,
        duration_s: seconds,
        joined: joined as u64,
        join_s,
        sent,
        deliveries: counts.deliveries,
        expected,
        deliveries_per_s: counts.deliveries as f64 / seconds,
        latency,
        errors: missing + counts.out_of_order + counts.bad_lines + counts.tally.total(),
        missing,
        out_of_order: counts.out_of_order,
        bad_lines: counts.bad_lines,
        errors_by_kind: counts.tally,
    })
}

impl Room {
    /// Clients still connected or connecting.
    fn alive(&self) -> usize {
        self.members.iter().flatten().count()
    }

    /// Starts client `index`'s connection; a failure is counted and leaves it out.
    fn dial(&mut self, index: usize) {
        let result = self.dialer.dial().and_then(|mut stream| {
            self.poll
                .registry()
                .register(
                    &mut stream,
                    Token(index),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map(|()| stream)
        });
        match result {
            Ok(stream) => {
                self.members[index] = Some(Member {
                    stream,
                    connected: false,
                    input: Vec::new(),
                    output: Vec::new(),
                    next_seq: vec![0; self.members.len()],
                });
            }
            Err(error) => self
                .counts
                .tally
                .record(&Failure::new(FailureKind::ConnectFailed, Some(error))),
        }
    }

    /// Sends line `seq` of client `index`; false if that client is gone.
    fn send(&mut self, index: usize, seq: u64) -> bool {
        let Some(member) = self.members[index].as_mut() else {
            return false;
        };
        self.line.clear();
        let nanos = self.origin.elapsed().as_nanos();
        let _ = writeln!(self.line, "b {index} {seq} {nanos}");
        member.output.extend_from_slice(self.line.as_bytes());
        if member.connected {
            if let Err(failure) = flush(member) {
                self.fail(index, failure);
            }
        }
        true
    }

    /// Waits up to `wait` for events and handles them: handshakes, writes, lines received.
    fn turn(&mut self, wait: Duration) -> Result<(), BenchError> {
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(error) => return Err(BenchError::io("waiting for events (epoll_wait)", error)),
        }
        let ready: Vec<(usize, bool, bool)> = self
            .events
            .iter()
            .map(|event| {
                let closed = event.is_read_closed() || event.is_error();
                (
                    event.token().0,
                    event.is_readable() || closed,
                    event.is_writable() || closed,
                )
            })
            .collect();
        for (index, readable, writable) in ready {
            if let Err(failure) = self.advance(index, readable, writable) {
                self.fail(index, failure);
            }
        }
        Ok(())
    }

    /// Drives client `index` after a readiness event.
    fn advance(&mut self, index: usize, readable: bool, writable: bool) -> Result<(), Failure> {
        let Some(member) = self.members.get_mut(index).and_then(Option::as_mut) else {
            return Ok(()); // failed earlier in this batch
        };
        if !member.connected {
            if !(writable || readable) {
                return Ok(());
            }
            let refused = |error| Failure::new(FailureKind::ConnectFailed, Some(error));
            if let Some(error) = member.stream.take_error().map_err(refused)? {
                return Err(refused(error));
            }
            match member.stream.peer_addr() {
                Ok(_) => member.connected = true,
                Err(error) if error.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(error) => return Err(refused(error)),
            }
        }
        if !member.output.is_empty() {
            flush(member)?;
        }
        if !readable {
            return Ok(());
        }
        loop {
            match member.stream.read(&mut self.scratch) {
                Ok(0) => {
                    return Err(Failure::new(
                        FailureKind::Closed,
                        Some(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed a chat connection",
                        )),
                    ))
                }
                Ok(n) => member.input.extend_from_slice(&self.scratch[..n]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(Failure::from_io(error)),
            }
        }
        let now = self.origin.elapsed().as_nanos();
        let mut used = 0;
        while let Some(length) = member.input[used..].iter().position(|&byte| byte == b'\n') {
            let line = &member.input[used..used + length];
            receive(line, index, &mut member.next_seq, now, &mut self.counts);
            used += length + 1;
        }
        member.input.drain(..used);
        Ok(())
    }

    /// Counts client `index`'s failure and closes it.
    fn fail(&mut self, index: usize, failure: Failure) {
        self.counts.tally.record(&failure);
        self.members[index] = None;
    }
}

/// Writes what the socket takes of the member's pending output.
fn flush(member: &mut Member) -> Result<(), Failure> {
    let mut written = 0;
    while written < member.output.len() {
        match member.stream.write(&member.output[written..]) {
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
    member.output.drain(..written);
    Ok(())
}

/// Checks and counts one line received by client `receiver` at `now` (nanoseconds since
/// the run began).
fn receive(line: &[u8], receiver: usize, next_seq: &mut [u64], now: u128, counts: &mut Counts) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if let Some(announcement) = line.strip_prefix(b"* ") {
        if announcement.ends_with(b" joined") {
            counts.joins += 1;
        }
        return;
    }
    let Some((sender, seq, sent_at)) = parse(line) else {
        counts.bad_lines += 1;
        return;
    };
    let Some(next) = next_seq.get_mut(sender).filter(|_| sender != receiver) else {
        counts.bad_lines += 1; // an echo of its own line, or a client that does not exist
        return;
    };
    if seq < *next {
        counts.out_of_order += 1;
        return;
    }
    // A gap (seq above next) is not counted here: the lines skipped count as missing.
    *next = seq + 1;
    counts.deliveries += 1;
    if let Some(latencies) = counts.latencies.as_mut() {
        let nanos = u64::try_from(now.saturating_sub(sent_at)).unwrap_or(u64::MAX);
        latencies.record(Duration::from_nanos(nanos));
    }
}

/// `<NAME> b <client> <seq> <nanos>` as (client, seq, nanos).
fn parse(line: &[u8]) -> Option<(usize, u64, u128)> {
    let text = std::str::from_utf8(line).ok()?;
    let (_, body) = text.strip_prefix('<')?.split_once("> ")?;
    let mut fields = body.split(' ');
    if fields.next()? != "b" {
        return None;
    }
    let sender = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let nanos = fields.next()?.parse().ok()?;
    fields.next().is_none().then_some((sender, seq, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_parsed_and_checked_per_sender() {
        assert_eq!(parse(b"<user3> b 2 7 1000"), Some((2, 7, 1000)));
        assert_eq!(parse(b"<user3> hello"), None);
        let mut counts = Counts::default();
        let mut next = vec![0; 3];
        receive(b"<user1> b 0 0 10", 1, &mut next, 20, &mut counts);
        receive(b"<user1> b 0 2 10", 1, &mut next, 20, &mut counts);
        receive(b"<user1> b 0 1 10", 1, &mut next, 20, &mut counts);
        receive(b"<user2> b 1 0 10", 1, &mut next, 20, &mut counts);
        receive(b"* user4 joined", 1, &mut next, 20, &mut counts);
        receive(b"ERR unknown command", 1, &mut next, 20, &mut counts);
        assert_eq!(counts.deliveries, 2);
        assert_eq!(counts.out_of_order, 1);
        assert_eq!(counts.bad_lines, 2);
        assert_eq!(counts.joins, 1);
    }
}
