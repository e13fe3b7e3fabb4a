//! The client event loop every scenario runs on: one thread, one edge-triggered `mio::Poll`,
//! a table of connections (TCP connections or UDP flows), and turns of waiting for events
//! until a deadline.
//!
//! What a connection *does* belongs to its [`Scenario`]: the TCP (or TLS) round trips of
//! pingpong, hold and connect (`echo.rs`), the chat room (`chat/room.rs`), the UDP flows
//! (`udp.rs`). The loop owns the sockets and the scratch buffer every read goes into; the
//! scenario owns what it counts. For each event the loop hands the scenario the connection
//! and its readiness; a failure closes the connection and is handed back once, to be
//! counted. Failures never panic and never end the run.
//!
//! Interest is registered once per socket and never changed, which edge-triggered polling
//! allows at no cost: a writable edge only comes after a write found the socket full.

use std::io;
use std::time::{Duration, Instant};

use mio::event::{Event, Source};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::error::BenchError;
use crate::failure::Failure;

/// Identifies a connection for the lifetime of its socket. Keys are reused after a close,
/// so connections are added only between turns: a key freed in a turn may still be named by
/// a later event of the same batch.
pub type Key = usize;

/// Bytes read per `read` call into the buffer every connection shares: the largest reply
/// (or datagram, or run of chat lines) read in one go.
const SCRATCH_BYTES: usize = 64 * 1024;

/// Readiness events taken per `epoll_wait`.
const EVENTS_PER_POLL: usize = 1024;

/// Readiness flags of one event, taken apart once.
#[derive(Debug, Clone, Copy)]
pub struct Readiness {
    pub readable: bool,
    pub writable: bool,
    /// End of stream or an error: reads must go on until they say which.
    pub hangup: bool,
}

impl From<&Event> for Readiness {
    fn from(event: &Event) -> Readiness {
        Readiness {
            readable: event.is_readable(),
            writable: event.is_writable(),
            hangup: event.is_read_closed() || event.is_write_closed() || event.is_error(),
        }
    }
}

/// Whether a connection stays open after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Stay,
    /// The scenario is done with it: close it (no failure).
    Close,
}

/// What a kind of connection does on the shared loop.
pub trait Scenario {
    /// One connection's state, its socket included.
    type Conn;

    /// How often [`Scenario::on_tick`] runs over every connection (after a turn): the
    /// precision of the scenario's timeouts. `None`: never.
    const TICK: Option<Duration> = None;

    /// The socket of `conn`, to register with the poller.
    fn source(conn: &mut Self::Conn) -> &mut dyn Source;

    /// Moves connection `key` on after a readiness event, reading into `scratch`. An error
    /// closes it as failed.
    fn on_ready(
        &mut self,
        key: Key,
        conn: &mut Self::Conn,
        readiness: Readiness,
        scratch: &mut [u8],
    ) -> Result<After, Failure>;

    /// Looks at connection `key` at time `now`, every [`Scenario::TICK`]: an exchange past
    /// its timeout fails here.
    fn on_tick(&mut self, _key: Key, _conn: &mut Self::Conn, _now: Instant) -> Result<(), Failure> {
        Ok(())
    }

    /// Connection `key` is being closed, failed (`failure`) or not: the last word on it.
    fn on_closed(&mut self, key: Key, conn: &mut Self::Conn, failure: Option<Failure>);
}

/// The connections of one scenario, all driven by one poller on the calling thread.
pub struct Client<S: Scenario> {
    poll: Poll,
    events: Events,
    conns: Slab<S::Conn>,
    scratch: Box<[u8]>,
    last_tick: Instant,
    pub scenario: S,
}

impl<S: Scenario> Client<S> {
    pub fn new(scenario: S) -> Result<Client<S>, BenchError> {
        Ok(Client {
            poll: Poll::new().map_err(|error| BenchError::io("creating the poller", error))?,
            events: Events::with_capacity(EVENTS_PER_POLL),
            conns: Slab::new(),
            scratch: vec![0; SCRATCH_BYTES].into_boxed_slice(),
            last_tick: Instant::now(),
            scenario,
        })
    }

    pub fn open(&self) -> usize {
        self.conns.len()
    }

    pub fn next_key(&self) -> Key {
        self.conns.vacant_key()
    }

    pub fn get(&self, key: Key) -> Option<&S::Conn> {
        self.conns.get(key)
    }

    /// Registers `conn`'s socket for `interest` and adds it to the table. Between turns only.
    pub fn add(&mut self, mut conn: S::Conn, interest: Interest) -> io::Result<Key> {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        self.poll
            .registry()
            .register(S::source(&mut conn), Token(key), interest)?;
        entry.insert(conn);
        Ok(key)
    }

    /// Runs `f` on connection `key`, if it is open; a failure closes it.
    pub fn with<T>(
        &mut self,
        key: Key,
        f: impl FnOnce(&mut S, &mut S::Conn) -> Result<T, Failure>,
    ) -> Option<T> {
        let conn = self.conns.get_mut(key)?;
        match f(&mut self.scenario, conn) {
            Ok(value) => Some(value),
            Err(failure) => {
                self.scenario.on_closed(key, conn, Some(failure));
                self.conns.remove(key);
                None
            }
        }
    }

    /// Runs `f` on every open connection; those it fails are closed.
    pub fn each(&mut self, mut f: impl FnMut(&mut S, Key, &mut S::Conn) -> Result<(), Failure>) {
        let scenario = &mut self.scenario;
        self.conns.retain(|key, conn| match f(scenario, key, conn) {
            Ok(()) => true,
            Err(failure) => {
                scenario.on_closed(key, conn, Some(failure));
                false
            }
        });
    }

    /// Closes every connection (the scenario says its last word on each).
    pub fn close_all(&mut self) {
        for (key, conn) in &mut self.conns {
            self.scenario.on_closed(key, conn, None);
        }
        self.conns.clear();
    }

    /// Waits up to `wait` for events and hands each to the scenario, then, when a tick is
    /// due, looks at every connection.
    pub fn turn(&mut self, wait: Duration) -> Result<(), BenchError> {
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(error) => return Err(BenchError::io("waiting for events (epoll_wait)", error)),
        }
        for event in self.events.iter() {
            let key = event.token().0;
            let Some(conn) = self.conns.get_mut(key) else {
                continue; // closed earlier in this batch
            };
            let failure =
                match self
                    .scenario
                    .on_ready(key, conn, Readiness::from(event), &mut self.scratch)
                {
                    Ok(After::Stay) => continue,
                    Ok(After::Close) => None,
                    Err(failure) => Some(failure),
                };
            self.scenario.on_closed(key, conn, failure);
            self.conns.remove(key);
        }
        if let Some(every) = S::TICK {
            let now = Instant::now();
            if now.duration_since(self.last_tick) >= every {
                self.last_tick = now;
                self.each(|scenario, key, conn| scenario.on_tick(key, conn, now));
            }
        }
        Ok(())
    }

    /// Turns until `end`. Before each turn `between` runs: `None` ends the run early, and
    /// otherwise it says how long the turn may wait at most (it waits no later than `end`).
    pub fn run_until(
        &mut self,
        end: Instant,
        mut between: impl FnMut(&mut Self, Instant) -> Option<Duration>,
    ) -> Result<(), BenchError> {
        loop {
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            let Some(wait) = between(self, now) else {
                return Ok(());
            };
            self.turn(wait.min(end - now))?;
        }
    }
}

/// Runs one non-blocking socket call: again when a signal interrupted it, and `Ok(None)`
/// when it would block.
pub fn nonblocking<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<Option<T>> {
    loop {
        match call() {
            Ok(value) => return Ok(Some(value)),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}
