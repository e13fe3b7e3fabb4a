//! One round-trip connection (`echo.rs`): which phase of its exchange it is in, and the
//! socket I/O that moves it on. The loop (`client.rs`) owns the poller and the scenario
//! decides what a connection does next; this file only reads, writes and checks bytes.
//!
//! Hot path: a round trip is one `write` (or `writev` in line mode) and one `read` into the
//! driver's shared scratch buffer, compared in place; nothing is allocated. Over TLS the
//! same calls go through rustls (`stream.rs`, `tls_stream.rs`), which adds its own copies and
//! the cipher, and still one `writev` and one `read` per round trip.

use std::io::{IoSlice, Read, Write};
use std::time::{Duration, Instant};

use crate::client::{nonblocking, Readiness};
use crate::dial::connected;
use crate::failure::{Failure, FailureKind};
use crate::message::Message;
use crate::stream::Stream;

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
    pub stream: Stream,
    phase: Phase,
    /// Which message is in flight: selects its bytes (see [`Message`]).
    seq: u32,
    /// When the current exchange started (the dial, for the first one).
    pub started: Instant,
    /// Whether the current exchange is the connection's first (it includes the handshake).
    pub first: bool,
}

impl Conn {
    /// A connection whose handshake has just started. `seq` picks its first message, so
    /// connections started together do not all send the same bytes.
    pub fn connecting(stream: Stream, seq: u32) -> Conn {
        Conn {
            stream,
            phase: Phase::Connecting,
            seq,
            started: Instant::now(),
            first: true,
        }
    }

    /// Open with nothing in flight.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Idle)
    }

    /// Still in the TCP handshake.
    pub fn is_connecting(&self) -> bool {
        matches!(self.phase, Phase::Connecting)
    }

    /// Leaves the connection open and quiet after a round trip.
    pub fn go_idle(&mut self) {
        self.phase = Phase::Idle;
    }

    /// Moves the connection on as far as `readiness` allows: finishes the handshake, writes,
    /// reads and checks. `Ok(Some(latency))` when a whole reply has come back.
    pub fn advance(
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
    pub fn start_exchange(&mut self, message: &Message, now: Instant) -> Result<(), Failure> {
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

/// Sends what the stream holds back (TLS records the socket refused before).
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
