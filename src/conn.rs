//! One connection: its socket, its phase, its input and output buffers, and backpressure.
//!
//! Every connection is in exactly one [`Phase`]. The phase alone decides what the reactor asks
//! the poller for ([`Conn::interest`]), and one function, [`settle`], moves a connection between
//! phases after its output has changed. The reactor performs the I/O and calls the handler;
//! this file only knows sockets and bytes, never protocols.
//!
//! ```text
//!              output > high water              read() == 0 (peer FIN)
//!    ┌──────┐ ───────────────────▶ ┌───────────┐        ┌────────────┐  output empty
//!    │ Open │                      │ Throttled │        │ PeerClosed │ ─────────────▶ closed
//!    └──────┘ ◀─────────────────── └───────────┘        └────────────┘
//!       │  │    output <= low water                          ▲
//!       │  └─────────────────────────────────────────────────┘ read() == 0
//!       │ handler closes                                    
//!       ▼                    output empty:                      read() == 0, error,
//!   ┌─────────┐  shutdown(Write) ┌───────────┐  or discard limit reached
//!   │ Closing │ ───────────────▶ │ Lingering │ ────────────────────────▶ closed
//!   └─────────┘                  └───────────┘
//! ```
//! A socket error in any phase closes the connection at once. Two more phases sit beside
//! `PeerClosed`: `Finishing` (the peer finished, but input it sent earlier is still being
//! handed to the handler a turn at a time; then `PeerClosed`) and `PeerTruncated` (a TLS
//! peer's end of stream without close_notify; like `PeerClosed`, closed as truncated).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::ops::Range;

use mio::net::TcpStream;
use mio::Interest;

use std::sync::Arc;

use crate::buffer::{Buffer, OutQueue};
use crate::timer::{after, Tick, NEVER};

/// What a connection asks the poller for while it reads.
///
/// On Linux this includes PRIORITY: urgent (MSG_OOB) data makes the kernel end a read at the
/// urgent mark even when more data follows, so a short read only proves the socket drained
/// when the poller did not flag urgent data (EPOLLPRI) with the event.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const READ_INTEREST: Interest = Interest::READABLE.add(Interest::PRIORITY);
/// What a connection asks the poller for while it reads.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) const READ_INTEREST: Interest = Interest::READABLE;

/// Whether a short read can be trusted to mean "drained" when the event flagged neither
/// urgent data nor the end of stream. Where the poller cannot flag urgent data (kqueue), it
/// cannot, and every read loop continues to `WouldBlock`.
pub(crate) const SHORT_READ_DRAINS: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// Where a connection is in its life. See the module diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading and writing.
    Open,
    /// Unsent output is over the high-water mark: not reading until it drains below the
    /// low-water mark.
    Throttled,
    /// The peer finished sending, but input it sent before that is still being handed to
    /// the handler a turn at a time (it yielded, or its output was over the limit): no
    /// more reads; once the handler takes no more, `on_peer_closed` and `PeerClosed`.
    Finishing,
    /// The peer shut down its sending side: write what is owed, then close.
    PeerClosed,
    /// Like `PeerClosed`, for a TLS peer that ended the TCP stream without close_notify:
    /// its unconsumed input was dropped (it may be cut short), and the close says so.
    PeerTruncated,
    /// The handler closed it: write what is owed, then shut down writing and linger.
    Closing,
    /// Our side is shut down; reading and discarding until the peer's end of stream, so that
    /// closing does not reset the connection under data the peer has not read yet.
    Lingering,
}

impl Phase {
    /// Whether the reactor reads (or, when lingering, discards) input in this phase.
    pub(crate) fn reads(self) -> bool {
        matches!(self, Phase::Open | Phase::Lingering)
    }

    /// Whether new output may still be queued in this phase.
    pub(crate) fn accepts_output(self) -> bool {
        matches!(
            self,
            Phase::Open
                | Phase::Throttled
                | Phase::Finishing
                | Phase::PeerClosed
                | Phase::PeerTruncated
        )
    }
}

/// Backpressure limits, from [`crate::Config`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watermarks {
    pub(crate) high: usize,
    pub(crate) low: usize,
}

/// What the reactor must do after [`settle`] moved a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Nothing beyond updating the poller interest.
    Stay,
    /// Reading may resume: read now, because the edge that announced the waiting input was
    /// consumed while reading was paused, and edge-triggered polling will not repeat it.
    ResumeReading,
    /// Output is flushed and the server is closing: shut down writing, then linger.
    ShutdownWrite,
    /// Everything owed was written to a peer that has finished: close.
    Close,
}

/// The transition function: given the phase and the memory its unsent output holds
/// ([`crate::buffer::OutQueue::held`], zero exactly when nothing is owed), the next phase and
/// action.
pub(crate) fn settle(phase: Phase, pending: usize, water: Watermarks) -> (Phase, Next) {
    match phase {
        Phase::Open if pending > water.high => (Phase::Throttled, Next::Stay),
        Phase::Throttled if pending <= water.low => (Phase::Open, Next::ResumeReading),
        Phase::PeerClosed | Phase::PeerTruncated if pending == 0 => (phase, Next::Close),
        Phase::Closing if pending == 0 => (Phase::Lingering, Next::ShutdownWrite),
        other => (other, Next::Stay),
    }
}

/// The connection timeouts, in ticks (see [`crate::timer`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// Close a connection with nothing read or written for this long.
    pub(crate) idle: Option<Tick>,
    /// Close a connection whose pending output has not moved for this long.
    pub(crate) write: Option<Tick>,
    /// Give up lingering after this long.
    pub(crate) linger: Tick,
    /// Close a connection whose unfinished message has waited this long.
    pub(crate) message: Option<Tick>,
}

/// Which deadline a connection reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    Idle,
    Write,
    Linger,
    /// It did not authenticate in time, or (once open) did not finish a message in time.
    Input,
}

/// One connection's state, stored in the reactor's slab.
///
/// Both buffers are empty and own no heap memory while the connection is idle; see
/// [`crate::Buffer`].
#[derive(Debug)]
pub(crate) struct Conn<S> {
    pub(crate) stream: TcpStream,
    /// Generation of the id this connection was given; see [`crate::ConnId`].
    pub(crate) generation: u32,
    pub(crate) phase: Phase,
    /// The interest currently registered with the poller, so it is changed only when needed.
    pub(crate) registered: Interest,
    /// Received bytes the handler has not consumed yet.
    pub(crate) input: Buffer,
    /// Bytes owed to the peer that the socket did not take yet.
    pub(crate) output: OutQueue,
    /// Bytes discarded while lingering.
    pub(crate) discarded: u32,
    /// Last tick anything was read or written (idle timeout).
    pub(crate) active_at: Tick,
    /// Last tick output moved, or became pending, or lingering began (write timeout, linger).
    pub(crate) wrote_at: Tick,
    /// The tick of this connection's live entry in the timer heap ([`NEVER`]: none).
    pub(crate) check_at: Tick,
    /// By when the peer must be done with what it is sending ([`NEVER`]: nothing waits).
    /// Before the handler hears of the connection: its TLS handshake and `AUTH` line. After:
    /// the message it left unfinished (a partial line), `Timeouts::message` after the
    /// handler last consumed anything; a slowloris that trickles a byte at a time keeps the
    /// idle timer alive but not this one.
    pub(crate) input_by: Tick,
    /// Lines other than `AUTH` it sent before authenticating.
    pub(crate) auth_misses: u8,
    /// On the reactor's list of connections to flush before it polls again.
    pub(crate) flush_pending: bool,
    /// The handler's state; `None` until the handler hears of the connection, which waits
    /// for authentication when the reactor requires it.
    pub(crate) session: Option<S>,
}

impl<S> Conn<S> {
    /// A connection whose handler session is `session`, or that must authenticate by
    /// `input_by` first (`session` `None`).
    pub(crate) fn new(stream: TcpStream, generation: u32, now: Tick, input_by: Tick) -> Conn<S> {
        Conn {
            stream,
            generation,
            phase: Phase::Open,
            registered: READ_INTEREST,
            input: Buffer::new(),
            output: OutQueue::default(),
            discarded: 0,
            active_at: now,
            wrote_at: now,
            check_at: NEVER,
            input_by,
            auth_misses: 0,
            flush_pending: false,
            session: None,
        }
    }

    /// When this connection must be closed if nothing changes, and why.
    pub(crate) fn deadline(&self, timeouts: Timeouts) -> Option<(Tick, Expiry)> {
        if self.phase == Phase::Lingering {
            return Some((after(self.wrote_at, timeouts.linger), Expiry::Linger));
        }
        let idle = timeouts
            .idle
            .map(|idle| (after(self.active_at, idle), Expiry::Idle));
        let write = timeouts
            .write
            .filter(|_| !self.output.is_empty())
            .map(|write| (after(self.wrote_at, write), Expiry::Write));
        let input = (self.input_by != NEVER).then_some((self.input_by, Expiry::Input));
        [write, idle, input]
            .into_iter()
            .flatten()
            .min_by_key(|(due, _)| *due)
    }

    /// What to ask the poller for: readiness to read in the phases that read, readiness to
    /// write only while output is pending (asking for it otherwise wakes the loop for every
    /// acknowledgement the peer sends).
    pub(crate) fn interest(&self) -> Interest {
        let pending = !self.output.is_empty();
        match (self.phase.reads(), pending) {
            (true, true) => READ_INTEREST | Interest::WRITABLE,
            (true, false) => READ_INTEREST,
            // A phase that does not read always has output pending, except for the instant
            // between draining and `settle`; keep reading interest then so it is never empty.
            (false, true) => Interest::WRITABLE,
            (false, false) => READ_INTEREST,
        }
    }

    /// Sends `data` after any output already queued: written straight to the socket when
    /// nothing is queued (the common case, which needs no buffer), the rest queued. Returns
    /// the bytes written now.
    pub(crate) fn send(&mut self, data: &[u8], now: Tick) -> io::Result<usize> {
        if !self.output.is_empty() {
            self.output.push(data);
            return Ok(0);
        }
        let written = write_some(&mut self.stream, data)?;
        if written > 0 {
            self.active_at = now;
        }
        if written < data.len() {
            self.wrote_at = now; // output becomes pending: the write timeout starts
            self.output.push(&data[written..]);
        }
        Ok(written)
    }

    /// The server closes it: what is owed is still written, then writing shuts down and the
    /// connection lingers ([`settle`]); input not consumed yet is dropped. A connection already
    /// on its way out (the peer finished, or lingering) keeps its phase.
    pub(crate) fn begin_closing(&mut self) {
        if matches!(
            self.phase,
            Phase::Open | Phase::Throttled | Phase::Finishing
        ) {
            self.phase = Phase::Closing;
        }
        self.input.clear();
    }

    /// Queues `data` without writing it: it goes out with the next flush, in one `writev`
    /// with whatever else is queued by then.
    pub(crate) fn queue(&mut self, data: &[u8], now: Tick) {
        if self.output.is_empty() {
            self.wrote_at = now; // output becomes pending: the write timeout starts
        }
        self.output.push(data);
    }

    /// Like [`Conn::queue`] for part of a chunk shared with other connections: queued by
    /// reference.
    pub(crate) fn queue_shared(&mut self, chunk: Arc<[u8]>, range: Range<usize>, now: Tick) {
        if self.output.is_empty() {
            self.wrote_at = now;
        }
        self.output.push_shared(chunk, range);
    }

    /// Writes queued output until the socket takes no more. Returns the bytes written.
    pub(crate) fn flush(&mut self, now: Tick) -> io::Result<usize> {
        if self.output.is_empty() {
            return Ok(0);
        }
        let written = self.output.write_to(&mut self.stream)?;
        if written > 0 {
            self.active_at = now;
            self.wrote_at = now;
        }
        Ok(written)
    }

    pub(crate) fn read(&mut self, buf: &mut [u8], now: Tick) -> io::Result<usize> {
        loop {
            match self.stream.read(buf) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Ok(n) => {
                    self.active_at = now;
                    return Ok(n);
                }
                result => return result,
            }
        }
    }

    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        match self.stream.shutdown(Shutdown::Write) {
            // The peer is already gone; lingering will see the error or the end of stream.
            Err(error) if error.kind() == io::ErrorKind::NotConnected => Ok(()),
            result => result,
        }
    }
}

/// Writes as much of `data` as the socket takes now.
fn write_some(stream: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < data.len() {
        match stream.write(&data[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WATER: Watermarks = Watermarks { high: 100, low: 10 };

    #[test]
    fn output_over_high_water_throttles_reading() {
        assert_eq!(settle(Phase::Open, 100, WATER), (Phase::Open, Next::Stay));
        assert_eq!(
            settle(Phase::Open, 101, WATER),
            (Phase::Throttled, Next::Stay)
        );
    }

    #[test]
    fn throttled_resumes_reading_only_below_low_water() {
        assert_eq!(
            settle(Phase::Throttled, 50, WATER),
            (Phase::Throttled, Next::Stay)
        );
        assert_eq!(
            settle(Phase::Throttled, 10, WATER),
            (Phase::Open, Next::ResumeReading)
        );
    }

    #[test]
    fn half_closed_peer_is_closed_once_output_is_flushed() {
        assert_eq!(
            settle(Phase::PeerClosed, 1, WATER),
            (Phase::PeerClosed, Next::Stay)
        );
        assert_eq!(
            settle(Phase::PeerClosed, 0, WATER),
            (Phase::PeerClosed, Next::Close)
        );
    }

    #[test]
    fn server_close_flushes_then_lingers() {
        assert_eq!(
            settle(Phase::Closing, 5, WATER),
            (Phase::Closing, Next::Stay)
        );
        assert_eq!(
            settle(Phase::Closing, 0, WATER),
            (Phase::Lingering, Next::ShutdownWrite)
        );
        assert_eq!(
            settle(Phase::Lingering, 0, WATER),
            (Phase::Lingering, Next::Stay)
        );
    }

    #[test]
    fn only_open_and_lingering_read() {
        assert!(Phase::Open.reads() && Phase::Lingering.reads());
        for phase in [
            Phase::Throttled,
            Phase::Finishing,
            Phase::PeerClosed,
            Phase::PeerTruncated,
            Phase::Closing,
        ] {
            assert!(!phase.reads(), "{phase:?}");
        }
    }
}

#[cfg(test)]
mod size {
    use super::Conn;

    /// docs/ARCHITECTURE.md states this size; an idle connection costs this much in the slab
    /// (plus the slab's own tag) and no heap at all.
    #[test]
    fn idle_connection_struct_stays_small() {
        let size = std::mem::size_of::<Conn<()>>();
        let entry = std::mem::size_of::<slab::Slab<Conn<()>>>();
        eprintln!("Conn<()> = {size} bytes; Slab header = {entry} bytes");
        // mio adds a selector id to every source when debug assertions are on (16 bytes here).
        let limit = if cfg!(debug_assertions) { 128 } else { 112 };
        assert!(
            size <= limit,
            "Conn<()> grew to {size} bytes: update docs/ARCHITECTURE.md"
        );
    }
}

#[cfg(test)]
mod deadlines {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        idle: Some(100),
        write: Some(20),
        linger: 50,
        message: Some(60),
    };

    /// A connection to a real loopback listener, for the fields around its socket.
    fn conn() -> (Conn<()>, std::net::TcpListener) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut conn = Conn::new(TcpStream::from_std(stream), 0, 1000, NEVER);
        conn.session = Some(());
        (conn, listener)
    }

    #[test]
    fn idle_deadline_follows_the_last_activity() {
        let (mut conn, _listener) = conn();
        assert_eq!(conn.deadline(TIMEOUTS), Some((1101, Expiry::Idle)));
        conn.active_at = 1500;
        assert_eq!(conn.deadline(TIMEOUTS), Some((1601, Expiry::Idle)));
    }

    #[test]
    fn pending_output_adds_the_sooner_write_deadline() {
        let (mut conn, _listener) = conn();
        conn.output.push(b"owed");
        conn.wrote_at = 1050;
        assert_eq!(conn.deadline(TIMEOUTS), Some((1071, Expiry::Write)));
        conn.output.clear();
        assert_eq!(conn.deadline(TIMEOUTS), Some((1101, Expiry::Idle)));
    }

    #[test]
    fn an_unauthenticated_connection_has_the_sooner_auth_deadline() {
        let (mut conn, _listener) = conn();
        conn.session = None;
        conn.input_by = 1050;
        assert_eq!(conn.deadline(TIMEOUTS), Some((1050, Expiry::Input)));
        conn.input_by = 1200;
        assert_eq!(conn.deadline(TIMEOUTS), Some((1101, Expiry::Idle)));
    }

    #[test]
    fn lingering_has_only_the_linger_deadline() {
        let (mut conn, _listener) = conn();
        conn.phase = Phase::Lingering;
        conn.wrote_at = 2000;
        assert_eq!(conn.deadline(TIMEOUTS), Some((2051, Expiry::Linger)));
    }

    #[test]
    fn disabled_timeouts_leave_no_deadline() {
        let (conn, _listener) = conn();
        let off = Timeouts {
            idle: None,
            write: None,
            linger: 50,
            message: None,
        };
        assert_eq!(conn.deadline(off), None);
    }
}
