//! The round-trip scenario of `pingpong`, `hold` and `connect` on the client loop
//! (`client.rs`): TCP (or TLS) connections to an echo server, each carrying at most one
//! message at a time, and what they count.
//!
//! A connection is dialed and sends its first message as soon as the handshake completes.
//! After each round trip it does what [`Echo::then`] says: the next message (`pingpong`),
//! nothing (connections being established, or held), or close (`connect`). Failures
//! (refused, reset, closed early, a wrong byte, a timeout, a TLS error) close the connection
//! and are counted in [`Echo::tally`].
//!
//! With TLS settings every connection makes a full TLS handshake after the TCP one, and its
//! first message goes out when that is done (so the first round trip includes both), and a
//! connection closed on purpose says close_notify first.
//!
//! Hot path: a round trip is one `write` (or `writev` in line mode) and one `read` into the
//! loop's shared scratch buffer, compared in place, and a share of `epoll_wait`; nothing is
//! allocated. Over TLS the same calls go through rustls (`stream.rs`, `tls_stream.rs`), which
//! adds its own copies and the cipher, and still one `writev` and one `read` per round trip.

use std::io::{self, IoSlice, Read, Write};
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::Interest;

use crate::client::{nonblocking, After, Client, Key, Readiness, Scenario};
use crate::dial::{connected, Dialer};
use crate::error::BenchError;
use crate::failure::{Failure, FailureKind, Tally};
use crate::latency::Latencies;
use crate::message::Message;
use crate::stream::{Stream, TlsConfig};

/// What a connection does after a round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Send,
    /// Stay open and quiet until [`Client::send_idle`].
    Idle,
    Close,
}

/// Round trips over TCP or TLS connections to one server, and their counts.
pub struct Echo {
    dialer: Dialer,
    message: Message,
    timeout: Duration,
    tls: Option<TlsConfig>,
    /// The TLS version the handshakes agreed on: one, "mixed", or none yet.
    pub tls_version: Option<String>,
    /// What a connection does after a round trip; latencies are recorded unless it idles.
    pub then: Next,
    /// Round trips timed (not those of connections being established).
    pub latencies: Latencies,
    pub tally: Tally,
    /// Connections whose first round trip came back.
    pub up: u64,
    /// Connections that failed before theirs did (failed dials included).
    pub failed_first: u64,
    /// Connections that failed after it.
    pub dropped: u64,
}

impl Echo {
    /// Connections made by `dialer`, each exchanging `message`, over TLS when `tls` says so;
    /// an exchange (or a handshake) that takes longer than `timeout` fails.
    pub fn new(
        dialer: Dialer,
        message: Message,
        timeout: Duration,
        tls: Option<TlsConfig>,
    ) -> Result<Client<Echo>, BenchError> {
        Client::new(Echo {
            dialer,
            message,
            timeout,
            tls,
            tls_version: None,
            then: Next::Idle,
            latencies: Latencies::new(),
            tally: Tally::default(),
            up: 0,
            failed_first: 0,
            dropped: 0,
        })
    }
}

impl Scenario for Echo {
    type Conn = Conn;

    /// How often in-flight exchanges are checked against the timeout: its precision.
    const TICK: Option<Duration> = Some(Duration::from_millis(100));

    fn source(conn: &mut Conn) -> &mut dyn Source {
        conn.stream.tcp_mut()
    }

    fn on_ready(
        &mut self,
        _key: Key,
        conn: &mut Conn,
        readiness: Readiness,
        scratch: &mut [u8],
    ) -> Result<After, Failure> {
        let Some(latency) = conn.advance(readiness, &self.message, scratch)? else {
            return Ok(After::Stay);
        };
        if conn.first {
            conn.first = false;
            self.up += 1;
            note_version(&mut self.tls_version, conn.stream.tls_version());
        }
        if self.then != Next::Idle {
            self.latencies.record(latency);
        }
        match self.then {
            Next::Idle => conn.phase = Phase::Idle,
            Next::Close => return Ok(After::Close),
            // The end of this round trip is the start of the next: one clock read serves both.
            Next::Send => conn.start_exchange(&self.message, conn.started + latency)?,
        }
        Ok(After::Stay)
    }

    fn on_tick(&mut self, _key: Key, conn: &mut Conn, now: Instant) -> Result<(), Failure> {
        if matches!(conn.phase, Phase::Idle) || now.duration_since(conn.started) <= self.timeout {
            return Ok(());
        }
        let kind = if matches!(conn.phase, Phase::Connecting) {
            FailureKind::ConnectFailed
        } else {
            FailureKind::Timeout
        };
        let error = io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {:?}", self.timeout),
        );
        Err(Failure::new(kind, Some(error)))
    }

    fn on_closed(&mut self, _key: Key, conn: &mut Conn, failure: Option<Failure>) {
        let Some(failure) = failure else {
            conn.stream.goodbye();
            return;
        };
        self.tally.record(&failure);
        if conn.first {
            self.failed_first += 1;
        } else {
            self.dropped += 1;
        }
    }
}

impl Client<Echo> {
    /// Starts a new connection; its first message goes out when the handshake completes.
    /// A connection that cannot be started (no descriptor, no local port) is counted failed.
    pub fn dial(&mut self) {
        let echo = &mut self.scenario;
        let started = echo
            .dialer
            .dial()
            .map_err(|error| Failure::new(FailureKind::ConnectFailed, Some(error)))
            .and_then(|tcp| {
                Stream::new(tcp, echo.tls.as_ref())
                    .map_err(|error| Failure::new(FailureKind::Tls, Some(error)))
            })
            .and_then(|stream| {
                let conn = Conn {
                    stream,
                    phase: Phase::Connecting,
                    seq: self.next_key() as u32,
                    started: Instant::now(),
                    first: true,
                };
                self.add(conn, Interest::READABLE | Interest::WRITABLE)
                    .map_err(|error| Failure::new(FailureKind::ConnectFailed, Some(error)))
            });
        if let Err(failure) = started {
            self.scenario.tally.record(&failure);
            self.scenario.failed_first += 1;
        }
    }

    /// Sends the next message on every idle connection; those that fail are closed.
    pub fn send_idle(&mut self, now: Instant) {
        self.each(|echo, _, conn| {
            if matches!(conn.phase, Phase::Idle) {
                conn.start_exchange(&echo.message, now)?;
            }
            Ok(())
        });
    }

    /// Connections whose first round trip came back, less those that failed since.
    pub fn established(&self) -> u64 {
        self.scenario.up - self.scenario.dropped
    }

    /// Fails with [`BenchError::Unreachable`] when no connection is established because
    /// every handshake failed: there is no server to measure. A server that accepts but answers wrongly is measured (as errors).
    pub fn reached(&self) -> Result<(), BenchError> {
        let echo = &self.scenario;
        match BenchError::unreachable(echo.dialer.target(), &echo.tally) {
            Some(error) if self.established() == 0 => Err(error),
            _ => Ok(()),
        }
    }
}

/// Adds the TLS version one handshake (or one client process) agreed on to what the earlier
/// ones did: one version, or "mixed".
pub fn note_version(agreed: &mut Option<String>, version: Option<&str>) {
    match (agreed.as_deref(), version) {
        (_, None) => {}
        (None, Some(version)) => *agreed = Some(version.to_string()),
        (Some(seen), Some(version)) if seen != version => *agreed = Some("mixed".to_string()),
        _ => {}
    }
}

/// Where a connection is in its exchange.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// The TCP handshake is under way.
    Connecting,
    /// TLS only: the TCP handshake is done and the TLS one under way.
    Handshaking,
    /// A message is out: `sent` bytes of it written, `received` bytes of the reply checked.
    /// Both can advance together: an echo server answers the first part of a large message
    /// while the rest is still being written, and waiting for the write to finish before
    /// reading would deadlock once both socket buffers are full.
    Exchanging { sent: usize, received: usize },
    /// Open, nothing in flight.
    Idle,
}

/// A client connection and its exchange in flight.
#[derive(Debug)]
pub struct Conn {
    /// The socket (or the TLS session over it), registered with the loop's poller.
    stream: Stream,
    phase: Phase,
    /// Which message is in flight: selects its bytes (see [`Message`]). The first is the
    /// connection's key, so connections started together do not all send the same bytes.
    seq: u32,
    /// When the current exchange started (the dial, for the first one).
    started: Instant,
    /// Whether the current exchange is the connection's first (it includes the handshake).
    first: bool,
}

impl Conn {
    /// Moves the connection on as far as `readiness` allows: finishes the handshake, writes,
    /// reads and checks. `Ok(Some(latency))` when a whole reply has come back.
    fn advance(
        &mut self,
        readiness: Readiness,
        message: &Message,
        scratch: &mut [u8],
    ) -> Result<Option<Duration>, Failure> {
        match self.phase {
            Phase::Connecting => {
                if !(readiness.writable || readiness.hangup) {
                    return Ok(None);
                }
                match connected(self.stream.tcp()) {
                    Ok(false) => return Ok(None),
                    Ok(true) if self.stream.is_tls() => {
                        // Out goes the ClientHello. The server cannot have answered it yet, so
                        // the read that would say `WouldBlock` waits for the next event.
                        flush(&mut self.stream)?;
                        self.phase = Phase::Handshaking;
                        return Ok(None);
                    }
                    Ok(true) => self.start_exchange(message, self.started)?,
                    Err(error) => {
                        return Err(Failure::new(FailureKind::ConnectFailed, Some(error)))
                    }
                }
            }
            Phase::Handshaking => return self.handshake(message),
            Phase::Idle => {
                if readiness.writable {
                    flush(&mut self.stream)?;
                }
                if readiness.readable || readiness.hangup {
                    check_idle(&mut self.stream, scratch)?;
                }
                return Ok(None);
            }
            Phase::Exchanging { .. } => {}
        }
        let Phase::Exchanging { sent, received } = self.phase else {
            return Ok(None);
        };
        if readiness.writable {
            if sent < message.size() {
                let sent = write_some(&mut self.stream, message, self.seq, sent)?;
                self.phase = Phase::Exchanging { sent, received };
            } else {
                // TLS records of the message the socket refused before.
                flush(&mut self.stream)?;
            }
        }
        if !(readiness.readable || readiness.hangup) {
            return Ok(None);
        }
        if self.read_reply(message, scratch, readiness.hangup)? {
            Ok(Some(self.started.elapsed()))
        } else {
            Ok(None)
        }
    }

    /// Moves the TLS handshake on; once it is done, the first message goes out (and takes
    /// the handshake's last flight along).
    fn handshake(&mut self, message: &Message) -> Result<Option<Duration>, Failure> {
        match self.stream.handshake() {
            Ok(true) => self.start_exchange(message, self.started).map(|()| None),
            Ok(false) => Ok(None),
            Err(error) => Err(Failure::handshake(error)),
        }
    }

    /// Begins the next message on a connection with nothing in flight (or the first one,
    /// timed from the dial, once the handshake is done).
    fn start_exchange(&mut self, message: &Message, now: Instant) -> Result<(), Failure> {
        if !self.first {
            self.seq = self.seq.wrapping_add(1);
            self.started = now;
        }
        let sent = write_some(&mut self.stream, message, self.seq, 0)?;
        self.phase = Phase::Exchanging { sent, received: 0 };
        Ok(())
    }

    /// Reads and checks reply bytes; `Ok(true)` once the whole message is back.
    ///
    /// A short read (fewer bytes than the scratch buffer holds) drained the socket, and with
    /// edge-triggered polling the next arrival raises a new event, so the read that would only
    /// say `WouldBlock` is skipped. Not after a hangup, though: then reads go on to learn
    /// whether it is the end of stream or an error. Over TLS a short read of plaintext says
    /// nothing about the socket, so the stream tells (`Stream::drained`).
    fn read_reply(
        &mut self,
        message: &Message,
        scratch: &mut [u8],
        hangup: bool,
    ) -> Result<bool, Failure> {
        let Phase::Exchanging { sent, mut received } = self.phase else {
            return Ok(false);
        };
        loop {
            match nonblocking(|| self.stream.read(scratch)).map_err(Failure::from_io)? {
                None => return Ok(false),
                Some(0) => return Err(Failure::new(FailureKind::Closed, None)),
                Some(n) => {
                    if !message.matches(self.seq, received, &scratch[..n]) {
                        return Err(Failure::mismatch(received, &scratch[..n]));
                    }
                    received += n;
                    self.phase = Phase::Exchanging { sent, received };
                    if received == message.size() {
                        return Ok(true);
                    }
                    if n < scratch.len() && !hangup && self.stream.drained() {
                        return Ok(false);
                    }
                }
            }
        }
    }
}

/// An idle connection was reported readable: nothing was asked, so any byte is a mismatch,
/// and the end of stream or an error means the server dropped it.
fn check_idle(stream: &mut Stream, scratch: &mut [u8]) -> Result<(), Failure> {
    match nonblocking(|| stream.read(scratch)).map_err(Failure::from_io)? {
        None => Ok(()),
        Some(0) => Err(Failure::new(FailureKind::Closed, None)),
        Some(n) => Err(Failure::mismatch(0, &scratch[..n])),
    }
}

fn flush(stream: &mut Stream) -> Result<(), Failure> {
    nonblocking(|| stream.flush())
        .map(drop)
        .map_err(Failure::from_io)
}

/// Writes what remains of message `seq` until it is all sent or the socket is full; returns
/// the bytes sent so far.
fn write_some(
    stream: &mut Stream,
    message: &Message,
    seq: u32,
    mut sent: usize,
) -> Result<usize, Failure> {
    while sent < message.size() {
        let (body, tail) = message.unsent(seq, sent);
        // A plain write when there is one slice, so the common case is the cheapest call.
        let written = nonblocking(|| {
            if tail.is_empty() {
                stream.write(body)
            } else if body.is_empty() {
                stream.write(tail)
            } else {
                stream.write_vectored(&[IoSlice::new(body), IoSlice::new(tail)])
            }
        });
        match written.map_err(Failure::from_io)? {
            None => break,
            Some(0) => return Err(Failure::new(FailureKind::Closed, None)),
            Some(n) => sent += n,
        }
    }
    Ok(sent)
}
