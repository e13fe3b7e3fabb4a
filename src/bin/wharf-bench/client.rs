//! The connection driver: many client connections on one thread and one edge-triggered
//! `mio::Poll`, each connection carrying at most one message at a time.
//!
//! A connection is dialed, sends its first message as soon as the handshake completes, and
//! reports each finished round trip to the caller's handler, which says what comes next: the
//! next message (`Next::Send`), nothing for now (`Next::Idle`), or close (`Next::Close`).
//! Failures (refused, reset, closed early, a wrong byte, a timeout, a TLS error) close the
//! connection and are reported to the same handler; they never panic and never end the run.
//!
//! With TLS settings every connection makes a full TLS handshake after the TCP one, and its
//! first message goes out when that is done (so the first round trip includes both), and a
//! connection closed by the handler says close_notify first.
//!
//! Hot path: a round trip costs one `write` (or `writev` in line mode), one `read` and a share
//! of `epoll_wait`, and allocates nothing (see `conn.rs`). Interest (readable and writable) is
//! registered once per connection and never changed, which edge-triggered polling allows at
//! no cost: a writable edge only comes after a write found the socket full.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::conn::{Conn, Readiness};
use crate::dial::Dialer;
use crate::error::BenchError;
use crate::failure::{Failure, FailureKind};
use crate::message::Message;
use crate::stream::{Stream, TlsConfig};

/// Identifies a connection for the lifetime of its socket. Keys are reused after a close,
/// so the driver never dials while a batch of events is being handled (see [`Client::turn`]).
pub type Key = usize;

/// Bytes read per `read` call: the largest reply read in one go. Replies shorter than this
/// that arrive whole are read with a single call.
const SCRATCH_BYTES: usize = 64 * 1024;

/// Readiness events taken per `epoll_wait`.
const EVENTS_PER_POLL: usize = 1024;

/// How often in-flight exchanges are checked against the timeout: the timeout's precision.
const EXPIRY_SCAN_EVERY: Duration = Duration::from_millis(100);

/// What happened to a connection, as told to the handler.
#[derive(Debug)]
pub enum Outcome {
    /// A whole message came back intact.
    RoundTrip {
        /// From sending the first byte to receiving the last; for the first message of a
        /// connection, from the start of the TCP handshake (so it includes the server's
        /// accept).
        latency: Duration,
    },
    /// The connection failed and has been closed.
    Failed {
        /// What went wrong.
        failure: Failure,
        /// Whether it failed before its first round trip completed (in the handshake or the
        /// first exchange), i.e. it never counted as established.
        first: bool,
    },
}

/// What a connection does after a round trip, as the handler decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send the next message at once.
    Send,
    /// Stay open and quiet until [`Client::send_idle`].
    Idle,
    /// Close the connection.
    Close,
}

/// Client connections to one server, all driven by one poller on the calling thread.
pub struct Client {
    poll: Poll,
    events: Events,
    conns: Slab<Conn>,
    dialer: Dialer,
    message: Message,
    scratch: Box<[u8]>,
    timeout: Duration,
    tls: Option<TlsConfig>,
    /// The TLS version the handshakes agreed on: one, "mixed", or none yet.
    tls_version: Option<&'static str>,
    last_expiry_scan: Instant,
    /// Failures found outside `turn` (by `send`), reported at the start of the next turn.
    /// Kept between turns so that reporting them allocates nothing.
    deferred: Vec<(Key, Failure)>,
    /// Keys of timed-out exchanges, reused between scans.
    expired: Vec<Key>,
}

impl Client {
    /// A driver for connections made by `dialer`, each exchanging `message`, over TLS when
    /// `tls` says so; an exchange (or a handshake) that takes longer than `timeout` fails.
    pub fn new(
        dialer: Dialer,
        message: Message,
        timeout: Duration,
        tls: Option<TlsConfig>,
    ) -> Result<Client, BenchError> {
        let poll = Poll::new().map_err(|error| BenchError::io("creating the poller", error))?;
        Ok(Client {
            poll,
            events: Events::with_capacity(EVENTS_PER_POLL),
            conns: Slab::new(),
            dialer,
            message,
            scratch: vec![0; SCRATCH_BYTES].into_boxed_slice(),
            timeout,
            tls,
            tls_version: None,
            last_expiry_scan: Instant::now(),
            deferred: Vec::new(),
            expired: Vec::new(),
        })
    }

    /// The server address.
    pub fn target(&self) -> SocketAddr {
        self.dialer.target()
    }

    /// The message every round trip sends.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Whether connections speak TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The TLS version the completed handshakes agreed on ("1.3", "1.2", or "mixed").
    pub fn tls_version(&self) -> Option<&'static str> {
        self.tls_version
    }

    /// Open connections (connecting, busy or idle).
    pub fn open(&self) -> usize {
        self.conns.len()
    }

    /// Starts a new connection; its first message goes out when the handshake completes.
    /// An error here (no descriptor, no local port) means no connection was started.
    pub fn dial(&mut self) -> Result<Key, Failure> {
        let mut tcp = self
            .dialer
            .dial()
            .map_err(|error| Failure::new(FailureKind::ConnectFailed, Some(error)))?;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        self.poll
            .registry()
            .register(
                &mut tcp,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|error| Failure::new(FailureKind::ConnectFailed, Some(error)))?;
        let stream = Stream::new(tcp, self.tls.as_ref())
            .map_err(|error| Failure::new(FailureKind::Tls, Some(error)))?;
        entry.insert(Conn::connecting(stream, key as u32));
        Ok(key)
    }

    /// Sends the next message on every idle connection. Failures are reported to the handler
    /// of the next [`Client::turn`].
    pub fn send_idle(&mut self, now: Instant) {
        for (key, conn) in &mut self.conns {
            if conn.is_idle() {
                if let Err(failure) = conn.start_exchange(&self.message, now) {
                    self.deferred.push((key, failure));
                }
            }
        }
        for &(key, _) in &self.deferred {
            self.conns.try_remove(key);
        }
    }

    /// Closes every connection (TLS ones with close_notify).
    pub fn close_all(&mut self) {
        for (_, conn) in &mut self.conns {
            conn.stream.goodbye();
        }
        self.conns.clear();
    }

    /// Waits up to `wait` for events and drives the connections they name, calling `handler`
    /// with each finished round trip and each failure. Exchanges past the timeout fail here
    /// too. Dial only between turns: keys freed in a turn may still be named by its events.
    pub fn turn(
        &mut self,
        wait: Duration,
        handler: &mut impl FnMut(Key, Outcome) -> Next,
    ) -> Result<(), BenchError> {
        for (key, failure) in self.deferred.drain(..) {
            handler(
                key,
                Outcome::Failed {
                    failure,
                    first: false,
                },
            );
        }
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
            let outcome =
                match conn.advance(Readiness::from(event), &self.message, &mut self.scratch) {
                    Ok(None) => continue,
                    Ok(Some(latency)) => {
                        if conn.first {
                            note_version(&mut self.tls_version, conn.stream.tls_version());
                        }
                        conn.first = false;
                        Outcome::RoundTrip { latency }
                    }
                    Err(failure) => Outcome::Failed {
                        failure,
                        first: conn.first,
                    },
                };
            settle(&mut self.conns, key, outcome, &self.message, handler);
        }
        self.expire(handler);
        Ok(())
    }

    /// Fails every exchange that has been in flight longer than the timeout.
    fn expire(&mut self, handler: &mut impl FnMut(Key, Outcome) -> Next) {
        let now = Instant::now();
        if now.duration_since(self.last_expiry_scan) < EXPIRY_SCAN_EVERY {
            return;
        }
        self.last_expiry_scan = now;
        self.expired.clear();
        for (key, conn) in &self.conns {
            if !conn.is_idle() && now.duration_since(conn.started) > self.timeout {
                self.expired.push(key);
            }
        }
        for &key in &self.expired {
            let Some(conn) = self.conns.try_remove(key) else {
                continue;
            };
            let kind = if conn.is_connecting() {
                FailureKind::ConnectFailed
            } else {
                FailureKind::Timeout
            };
            let error = io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {:?}", self.timeout),
            );
            let failure = Failure::new(kind, Some(error));
            let first = conn.first;
            handler(key, Outcome::Failed { failure, first });
        }
    }
}

/// Tells the handler what happened and carries out its answer.
fn settle(
    conns: &mut Slab<Conn>,
    key: Key,
    outcome: Outcome,
    message: &Message,
    handler: &mut impl FnMut(Key, Outcome) -> Next,
) {
    let Outcome::RoundTrip { latency } = outcome else {
        conns.remove(key);
        handler(key, outcome);
        return;
    };
    // The end of this round trip is the start of the next: one clock read serves both.
    let now = conns[key].started + latency;
    match handler(key, outcome) {
        Next::Idle => conns[key].go_idle(),
        Next::Close => {
            conns.remove(key).stream.goodbye();
        }
        Next::Send => {
            if let Err(failure) = conns[key].start_exchange(message, now) {
                conns.remove(key);
                let failure_outcome = Outcome::Failed {
                    failure,
                    first: false,
                };
                handler(key, failure_outcome);
            }
        }
    }
}

/// Adds the TLS version one handshake agreed on to what the earlier ones did.
fn note_version(agreed: &mut Option<&'static str>, version: Option<&'static str>) {
    match (*agreed, version) {
        (_, None) => {}
        (None, Some(version)) => *agreed = Some(version),
        (Some(seen), Some(version)) if seen != version => *agreed = Some("mixed"),
        _ => {}
    }
}
