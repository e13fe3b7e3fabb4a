//! One connection: its socket, its [`Stage`], its input and output buffers, its deadlines.
//!
//! The stage alone decides what the reactor asks the poller for ([`Conn::interest`]); its
//! transitions are in [`stage`]. The reactor performs the I/O and calls the handler; this
//! module only knows sockets and bytes, never protocols.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::ops::Range;

use mio::net::TcpStream;
use mio::Interest;

use std::sync::Arc;

use crate::buffer::{Buffer, OutQueue};
use crate::timer::{after, Tick, NEVER};

mod stage;

pub(crate) use stage::{Next, Stage, Watermarks};

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
    /// Close a TLS connection whose handshake has not completed in this long.
    pub(crate) handshake: Tick,
    /// Close a connection whose PROXY header has not arrived in this long.
    pub(crate) proxy_header: Tick,
}

/// Which deadline a connection reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// Its PROXY header did not arrive in time.
    ProxyHeader,
    Idle,
    Write,
    Linger,
    /// Its TLS handshake did not complete in time.
    Handshake,
    /// It did not authenticate in time.
    Auth,
    /// The message it began (a partial line) did not complete in time.
    Message,
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
    /// Where it is in its life; changed only by [`Stage`]'s transitions, through the methods
    /// below.
    stage: Stage,
    /// The interest currently registered with the poller, so it is changed only when needed.
    pub(crate) registered: Interest,
    /// On the reactor's list of connections to flush before it polls again.
    pub(crate) flush_pending: bool,
    /// Received bytes the handler has not consumed yet.
    pub(crate) input: Buffer,
    /// Bytes owed to the peer that the socket did not take yet.
    pub(crate) output: OutQueue,
    /// Last tick anything was read or written (idle timeout).
    pub(crate) active_at: Tick,
    /// Last tick output moved, or became pending, or lingering began (write timeout, linger).
    pub(crate) wrote_at: Tick,
    /// The tick of this connection's live entry in the timer heap ([`NEVER`]: none).
    pub(crate) check_at: Tick,
    /// The handler's state: it exists from the moment the handler hears of the connection
    /// (it leaves the door: [`Conn::open_session`], the only place that sets it) until the
    /// close.
    pub(crate) session: Option<S>,
}

impl<S> Conn<S> {
    /// A connection just accepted, at `stage`: at the door (a handshake, an `AUTH` line),
    /// or open, and then [`Conn::open_session`] follows at once.
    pub(crate) fn new(stream: TcpStream, generation: u32, now: Tick, stage: Stage) -> Conn<S> {
        Conn {
            stream,
            generation,
            stage,
            registered: READ_INTEREST,
            flush_pending: false,
            input: Buffer::new(),
            output: OutQueue::default(),
            active_at: now,
            wrote_at: now,
            check_at: NEVER,
            session: None,
        }
    }

    pub(crate) fn stage(&self) -> Stage {
        self.stage
    }

    /// The handler heard of it: `session` is its state until the close.
    pub(crate) fn open_session(&mut self, session: S) {
        debug_assert!(self.session.is_none(), "a connection is opened once");
        self.stage = self.stage.opened();
        self.session = Some(session);
    }

    /// Moves the stage with one of [`Stage`]'s transitions.
    pub(crate) fn advance(&mut self, transition: impl FnOnce(Stage) -> Stage) {
        self.stage = transition(self.stage);
    }

    /// Applies [`Stage::settle`] to this connection's output; returns what to do next.
    pub(crate) fn settle(&mut self, water: Watermarks) -> Next {
        let (stage, next) = self.stage.settle(self.output.held(), water);
        self.stage = stage;
        next
    }

    /// A line other than `AUTH` came while at the door.
    pub(crate) fn missed_auth(&mut self) {
        self.stage.missed_auth();
    }

    /// The unfinished message must complete by `by` ([`NEVER`]: none waits).
    pub(crate) fn wait_for_message(&mut self, by: Tick) {
        self.stage.wait_for_message(by);
    }

    /// `n` bytes discarded while lingering; false once past `limit`.
    pub(crate) fn discard(&mut self, n: usize, limit: u32) -> bool {
        self.stage.discard(n, limit)
    }

    /// When this connection must be closed if nothing changes, and why.
    pub(crate) fn deadline(&self, timeouts: Timeouts) -> Option<(Tick, Expiry)> {
        let door = match self.stage {
            Stage::Lingering { .. } => {
                return Some((after(self.wrote_at, timeouts.linger), Expiry::Linger))
            }
            Stage::ProxyHeader { by } => Some((by, Expiry::ProxyHeader)),
            Stage::Handshaking { by } => Some((by, Expiry::Handshake)),
            Stage::Authenticating { by, .. } => Some((by, Expiry::Auth)),
            _ => None,
        };
        let idle = timeouts
            .idle
            .map(|idle| (after(self.active_at, idle), Expiry::Idle));
        let write = timeouts
            .write
            .filter(|_| !self.output.is_empty())
            .map(|write| (after(self.wrote_at, write), Expiry::Write));
        let message_by = self.stage.message_by();
        let message = (message_by != NEVER).then_some((message_by, Expiry::Message));
        [write, idle, door, message]
            .into_iter()
            .flatten()
            .min_by_key(|(due, _)| *due)
    }

    /// What to ask the poller for: readiness to read in the stages that read, readiness to
    /// write only while output is pending (asking for it otherwise wakes the loop for every
    /// acknowledgement the peer sends).
    pub(crate) fn interest(&self) -> Interest {
        let pending = !self.output.is_empty();
        match (self.stage.reads(), pending) {
            (true, true) => READ_INTEREST | Interest::WRITABLE,
            (true, false) => READ_INTEREST,
            // A stage that does not read always has output pending, except for the instant
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
    /// connection lingers ([`Stage::close`]); input not consumed yet is dropped.
    pub(crate) fn begin_closing(&mut self) {
        self.advance(Stage::close);
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

    /// Everything owed was written while closing: shuts down writing and lingers; the
    /// linger timeout starts `now`.
    pub(crate) fn shut_down_writing(&mut self, now: Tick) -> io::Result<()> {
        match self.stream.shutdown(Shutdown::Write) {
            // The peer is already gone; lingering will see the error or the end of stream.
            Err(error) if error.kind() == io::ErrorKind::NotConnected => {}
            result => result?,
        }
        self.advance(Stage::linger);
        self.wrote_at = now;
        Ok(())
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
        let limit = if cfg!(debug_assertions) { 104 } else { 88 };
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
        handshake: 100,
        proxy_header: 50,
    };

    /// A connection to a real loopback listener, for the fields around its socket.
    fn conn() -> (Conn<()>, std::net::TcpListener) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut conn = Conn::new(TcpStream::from_std(stream), 0, 1000, Stage::open());
        conn.open_session(());
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
        conn.stage = Stage::Authenticating {
            by: 1050,
            misses: 0,
        };
        assert_eq!(conn.deadline(TIMEOUTS), Some((1050, Expiry::Auth)));
        conn.stage = Stage::Authenticating {
            by: 1200,
            misses: 0,
        };
        assert_eq!(conn.deadline(TIMEOUTS), Some((1101, Expiry::Idle)));
    }

    #[test]
    fn an_unfinished_message_has_its_own_deadline() {
        let (mut conn, _listener) = conn();
        conn.wait_for_message(1060);
        assert_eq!(conn.deadline(TIMEOUTS), Some((1060, Expiry::Message)));
        conn.wait_for_message(NEVER);
        assert_eq!(conn.deadline(TIMEOUTS), Some((1101, Expiry::Idle)));
    }

    #[test]
    fn lingering_has_only_the_linger_deadline() {
        let (mut conn, _listener) = conn();
        conn.stage = Stage::Lingering { discarded: 0 };
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
            handshake: 100,
            proxy_header: 50,
        };
        assert_eq!(conn.deadline(off), None);
    }
}
