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
//! Hot path: a round trip costs one `write` (or `writev` in line mode), one `read` and a share
//! of `epoll_wait`, and allocates nothing (see `conn.rs`).

use std::io;
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::Interest;

use crate::client::{After, Client, Key, Readiness, Scenario};
use crate::conn::Conn;
use crate::dial::Dialer;
use crate::error::BenchError;
use crate::failure::{Failure, FailureKind, Tally};
use crate::latency::Latencies;
use crate::message::Message;
use crate::stream::{Stream, TlsConfig};

/// What a connection does after a round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send the next message at once.
    Send,
    /// Stay open and quiet until [`Client::send_idle`].
    Idle,
    /// Close the connection.
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
    /// Failures, by kind.
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
            Next::Idle => conn.go_idle(),
            Next::Close => return Ok(After::Close),
            // The end of this round trip is the start of the next: one clock read serves both.
            Next::Send => conn.start_exchange(&self.message, conn.started + latency)?,
        }
        Ok(After::Stay)
    }

    fn on_tick(&mut self, _key: Key, conn: &mut Conn, now: Instant) -> Result<(), Failure> {
        if conn.is_idle() || now.duration_since(conn.started) <= self.timeout {
            return Ok(());
        }
        let kind = if conn.is_connecting() {
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
                let conn = Conn::connecting(stream, self.next_key() as u32);
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
            if conn.is_idle() {
                conn.start_exchange(&echo.message, now)?;
            }
            Ok(())
        });
    }

    /// Connections whose first round trip came back, less those that failed since.
    pub fn established(&self) -> u64 {
        self.scenario.up - self.scenario.dropped
    }

    /// Fails with [`BenchError::NoConnection`] (or [`BenchError::NoTlsSession`]) when no
    /// connection is established because every handshake failed: there is no server to
    /// measure. A server that accepts but answers wrongly is measured (as errors).
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
