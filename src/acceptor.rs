//! Admission: listening sockets and what happens at accept, before a connection exists.
//!
//! [`Acceptor`] owns the listeners, the access rules ([`crate::access`]: allow-list,
//! per-address limit, lockout, accept rate), the connection limit and its refusal, the
//! spare descriptor that lets the server refuse cleanly when it is out of descriptors, and
//! the pause and retry after accept itself failed. It hands the reactor each connection it
//! admits; the reactor makes it a [`crate::conn::Conn`].
//!
//! What a refused client hears is configuration (`Config::full_reply`,
//! `Config::out_of_fds_reply`): the library speaks no protocol of its own.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use log::Level;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::access::{Access, Refusal};
use crate::config::Config;
use crate::listener::{Listener, ListenerId};
use crate::log_limit::LogLimit;
use crate::stats::Stats;
use crate::timer::{self, Clock, Tick, NEVER};
use ipnet::IpNet;

/// How long accepting pauses when it failed and no spare descriptor could make room.
const ACCEPT_RETRY_TICKS: u32 = 10; // 1 s

/// How often the lockout and rate tables drop what expired.
const ACCESS_SWEEP_TICKS: u32 = 10; // 1 s

/// What one accept came to.
#[derive(Debug)]
pub(crate) enum Accepted {
    /// A connection the rules admit.
    Conn(TcpStream, SocketAddr),
    /// A connection refused (and closed): go on accepting.
    Refused,
    /// Nothing more to accept now: the queue is empty, or accepting is paused.
    Done,
}

/// One listener and the rules for its connections, which outlive its socket: a drain
/// closes the socket, and the connections still open are still the listener's.
#[derive(Debug)]
struct Entry {
    /// `None` once closed.
    socket: Option<Listener>,
    /// Its connections skip the access rules, the connection limit and authentication.
    exempt: bool,
    /// It expects a PROXY protocol header, from these sources only.
    proxy_from: Option<Box<[IpNet]>>,
}

/// Listeners, access rules, the connection limit and what refusing costs. See the module
/// docs.
#[derive(Debug)]
pub(crate) struct Acceptor {
    /// By index (a [`ListenerId`]'s).
    listeners: Vec<Entry>,
    /// Connections open on exempt listeners: not counted against `max_conns`.
    exempt_open: u64,
    access: Access,
    max_conns: u64,
    full_reply: Box<[u8]>,
    out_of_fds_reply: Box<[u8]>,
    /// Accepting failed for lack of resources (descriptors, memory): retried when a
    /// connection closes or at `retry_at`, since no new edge comes for connections already
    /// queued.
    paused: bool,
    retry_at: Tick,
    /// When the lockout and rate tables next drop what expired ([`NEVER`]: they are empty).
    sweep_at: Tick,
    /// A descriptor held in reserve: closed to make room to accept and refuse a connection
    /// when the process is out of descriptors, then reopened.
    spare_fd: Option<File>,
    access_log: LogLimit,
    reject_log: LogLimit,
    error_log: LogLimit,
    lockout_log: LogLimit,
    /// For the lockout's log line: failures, window, duration.
    lockout: (u32, std::time::Duration, std::time::Duration),
}

impl Acceptor {
    pub(crate) fn new(config: &Config) -> Acceptor {
        let reply = |text: &Option<Vec<u8>>| text.clone().unwrap_or_default().into_boxed_slice();
        Acceptor {
            listeners: Vec::new(),
            exempt_open: 0,
            access: Access::new(config),
            max_conns: config.max_conns as u64,
            full_reply: reply(&config.full_reply),
            out_of_fds_reply: reply(&config.out_of_fds_reply),
            paused: false,
            retry_at: NEVER,
            sweep_at: NEVER,
            spare_fd: spare_descriptor(),
            access_log: LogLimit::per_second(
                module_path!(),
                Level::Warn,
                "connections refused by the access rules",
            ),
            reject_log: LogLimit::per_second(
                module_path!(),
                Level::Warn,
                "connections refused: server full",
            ),
            error_log: LogLimit::per_second(module_path!(), Level::Warn, "accept failures"),
            lockout_log: LogLimit::per_second(module_path!(), Level::Warn, "lockouts"),
            lockout: (
                config.lockout_failures,
                config.lockout_window,
                config.lockout_duration,
            ),
        }
    }

    /// Starts listening on `listener` (registered with `token`); returns its id.
    pub(crate) fn add(
        &mut self,
        mut listener: Listener,
        registry: &Registry,
        token: impl FnOnce(usize) -> Token,
    ) -> io::Result<ListenerId> {
        let index = self.listeners.len();
        let Some(id) = ListenerId::new(index) else {
            let most = ListenerId::MAX;
            let error = format!("a reactor takes at most {most} listeners");
            return Err(io::Error::new(io::ErrorKind::InvalidInput, error));
        };
        registry.register(listener.socket_mut(), token(index), Interest::READABLE)?;
        self.listeners.push(Entry {
            socket: Some(listener),
            exempt: false,
            proxy_from: None,
        });
        Ok(id)
    }

    /// Connections on `listener` must come from `from` and send a PROXY header first.
    pub(crate) fn expect_proxy_header(&mut self, listener: ListenerId, from: Vec<IpNet>) {
        if let Some(entry) = self.listeners.get_mut(listener.index()) {
            entry.proxy_from = Some(from.into_boxed_slice());
        }
    }

    /// Whether connections on `listener` send a PROXY header first.
    pub(crate) fn expects_proxy(&self, listener: ListenerId) -> bool {
        (self.listeners.get(listener.index())).is_some_and(|entry| entry.proxy_from.is_some())
    }

    /// Connections on `listener` skip the access rules, the connection limit and
    /// authentication.
    pub(crate) fn exempt_from_rules(&mut self, listener: ListenerId) {
        if let Some(entry) = self.listeners.get_mut(listener.index()) {
            entry.exempt = true;
        }
    }

    /// A connection on `listener` opened.
    pub(crate) fn opened(&mut self, listener: ListenerId) {
        if self.is_exempt(listener) {
            self.exempt_open += 1;
        }
    }

    /// A connection from `ip` on `listener` that opened closed. `admitted`: the access rules
    /// counted it (every one but a connection still owing its PROXY header); then it is
    /// released, unless the listener is exempt, where nothing is counted.
    pub(crate) fn closed(&mut self, listener: ListenerId, ip: IpAddr, admitted: bool) {
        if self.is_exempt(listener) {
            self.exempt_open = self.exempt_open.saturating_sub(1);
        } else if admitted {
            self.release_ip(ip);
        }
    }

    /// Whether connections on `listener` skip the rules.
    pub(crate) fn is_exempt(&self, listener: ListenerId) -> bool {
        (self.listeners.get(listener.index())).is_some_and(|entry| entry.exempt)
    }

    pub(crate) fn len(&self) -> usize {
        self.listeners.len()
    }

    pub(crate) fn local_addr(&self, index: usize) -> Option<SocketAddr> {
        let socket = self.listeners.get(index)?.socket.as_ref();
        socket.map(Listener::local_addr)
    }

    /// Closes every listener (a drain, or the end): no new connections.
    pub(crate) fn close(&mut self) {
        for entry in &mut self.listeners {
            entry.socket = None;
        }
    }

    /// Accepts one connection from listener `index` and applies the rules: on a PROXY
    /// listener, the source's trust; on others, the access rules (they need no buffer and
    /// no byte); then the connection limit (on exempt listeners, none of these). `Done`
    /// once nothing waits, the listener is gone, or accept itself failed (then accepting
    /// pauses until [`Acceptor::resume`]). `tls`: the listener speaks TLS, so a refusal is a
    /// close, not a line a TLS client could not read. `scratch`: room to read what a refused
    /// client sent at once.
    pub(crate) fn accept(
        &mut self,
        index: usize,
        tls: bool,
        stats: &mut Stats,
        clock: &Clock,
        scratch: &mut [u8],
    ) -> Accepted {
        // Closed by a drain since it was put on the resume list: nothing more.
        let Some(entry) = self.listeners.get_mut(index) else {
            return Accepted::Done;
        };
        let Some(socket) = entry.socket.as_mut() else {
            return Accepted::Done;
        };
        let (stream, peer) = match socket.socket_mut().accept() {
            Ok(accepted) => accepted,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Accepted::Done,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) =>
            {
                return Accepted::Refused
            }
            Err(error) => return self.failed(index, tls, &error, stats, clock, scratch),
        };
        let (exempt, proxied) = (entry.exempt, entry.proxy_from.is_some());
        // A PROXY listener's connection is admitted by the access rules once its header
        // names the client; only trusted sources may send one, exempt or not.
        if proxied && !self.trusts(index, peer.ip()) {
            stats.proxy_errors += 1;
            drop(stream);
            self.count_refusal(peer, Refusal::UntrustedProxy, stats, clock);
            return Accepted::Refused;
        }
        if !exempt && !proxied {
            let admitted = self.access.admit(peer.ip(), clock.tick());
            self.plan_sweep(clock.tick());
            if let Err(refusal) = admitted {
                drop(stream);
                self.count_refusal(peer, refusal, stats, clock);
                return Accepted::Refused;
            }
        }
        let served = stats.active.saturating_sub(self.exempt_open);
        if !exempt && served >= self.max_conns {
            if !proxied {
                self.release_ip(peer.ip());
            }
            self.refuse(tls, &stream, peer, Full::Connections, stats, clock);
            read_what_came(&stream, scratch);
            return Accepted::Refused;
        }
        Accepted::Conn(stream, peer)
    }

    /// Accept itself failed (not "nothing waiting").
    fn failed(
        &mut self,
        index: usize,
        tls: bool,
        error: &io::Error,
        stats: &mut Stats,
        clock: &Clock,
        scratch: &mut [u8],
    ) -> Accepted {
        stats.accept_errors += 1;
        if let Some(count) = self.error_log.hit(clock.now()) {
            log::warn!(
                "accept failed: {error} ({count} failures in the last second); \
                 see `ulimit -n` and docs/OPERATIONS.md"
            );
        }
        if is_out_of_descriptors(error) {
            match self.shed(index, tls, stats, clock, scratch) {
                Shed::One => return Accepted::Refused,
                // Linux reserves the descriptor before it looks at the queue, so EMFILE can
                // mean "nothing waiting": the next arrival is an edge.
                Shed::QueueEmpty => return Accepted::Done,
                Shed::Failed => {}
            }
        }
        // Retrying now would spin. The next close frees a descriptor and resumes accepting;
        // the timer covers what a close cannot (ENFILE cleared by another process, a failure
        // of another kind).
        self.paused = true;
        self.retry_at = timer::after(clock.tick(), ACCEPT_RETRY_TICKS).min(self.retry_at);
        Accepted::Done
    }

    /// Out of descriptors: closes the spare one to make room, accepts the waiting connection
    /// and refuses it, then takes the spare back. The client learns at once that the server
    /// is full, instead of waiting in the kernel's queue, and the listener is drained, so the
    /// loop does not wake for it again and again.
    fn shed(
        &mut self,
        index: usize,
        tls: bool,
        stats: &mut Stats,
        clock: &Clock,
        scratch: &mut [u8],
    ) -> Shed {
        let Some(socket) = self.listeners[index].socket.as_mut() else {
            return Shed::Failed;
        };
        let Some(spare) = self.spare_fd.take() else {
            return Shed::Failed;
        };
        drop(spare);
        let shed = match socket.socket_mut().accept() {
            // An address outside the allow-list learns nothing, not even that the server is
            // full.
            Ok((stream, peer)) if !self.access.allows(peer.ip()) => {
                drop(stream);
                self.count_refusal(peer, Refusal::NotAllowed, stats, clock);
                Shed::One
            }
            Ok((stream, peer)) => {
                self.refuse(tls, &stream, peer, Full::Descriptors, stats, clock);
                read_what_came(&stream, scratch);
                Shed::One
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Shed::QueueEmpty,
            Err(_) => Shed::Failed,
        };
        self.spare_fd = spare_descriptor();
        shed
    }

    /// Whether `ip` may send a PROXY header to listener `index`.
    fn trusts(&self, index: usize, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let trusted = (self.listeners.get(index)).and_then(|entry| entry.proxy_from.as_deref());
        trusted.is_some_and(|nets| nets.iter().any(|net| net.contains(&ip)))
    }

    /// The client a PROXY header named (`peer`, its connection's own address replaced):
    /// the access rules decide now. False if they refuse it (counted and logged); the
    /// reactor closes the connection, without a word.
    pub(crate) fn admit_client(
        &mut self,
        listener: ListenerId,
        peer: SocketAddr,
        stats: &mut Stats,
        clock: &Clock,
    ) -> bool {
        if self.is_exempt(listener) {
            return true; // and never released: the rules do not count it
        }
        let admitted = self.access.admit(peer.ip(), clock.tick());
        self.plan_sweep(clock.tick());
        match admitted {
            Ok(()) => true,
            Err(refusal) => {
                self.count_refusal(peer, refusal, stats, clock);
                false
            }
        }
    }

    /// Counts and logs a connection the access rules refuse; it is closed at once and
    /// without a word: an address outside the allow-list learns nothing, and costs nothing
    /// more.
    fn count_refusal(
        &mut self,
        peer: SocketAddr,
        refusal: Refusal,
        stats: &mut Stats,
        clock: &Clock,
    ) {
        let (counter, why) = match refusal {
            Refusal::UntrustedProxy => (
                &mut stats.refused_not_allowed,
                "not a trusted proxy: a PROXY listener takes only the sources it trusts",
            ),
            Refusal::NotAllowed => (&mut stats.refused_not_allowed, "not in the allow-list"),
            Refusal::TooManyFromIp => (
                &mut stats.refused_per_ip,
                "too many connections from this address",
            ),
            Refusal::LockedOut => (
                &mut stats.refused_locked_out,
                "locked out after failed authentications",
            ),
            Refusal::RateLimited => (
                &mut stats.refused_rate_limited,
                "connecting faster than --max-accept-rate",
            ),
        };
        *counter += 1;
        if let Some(count) = self.access_log.hit(clock.now()) {
            log::warn!(
                "peer={peer} refused: {why} ({count} refused by access rules in the last second)"
            );
        }
    }

    /// Sends the reply for `full` to a connection the server will not serve; it closes when
    /// dropped (after [`read_what_came`]).
    fn refuse(
        &mut self,
        tls: bool,
        stream: &TcpStream,
        peer: SocketAddr,
        full: Full,
        stats: &mut Stats,
        clock: &Clock,
    ) {
        let (reply, why) = match full {
            Full::Connections => (&self.full_reply, "connection limit reached"),
            Full::Descriptors => (&self.out_of_fds_reply, "out of file descriptors"),
        };
        stats.rejected += 1;
        // A fresh socket's send buffer is empty: one write either takes the whole reply or
        // the peer is already gone. Either way there is nothing more to do. A TLS client
        // expects a handshake, not a line of text: it just sees the close.
        if !reply.is_empty() && !tls {
            let _ = (&*stream).write(reply);
        }
        if let Some(count) = self.reject_log.hit(clock.now()) {
            log::warn!(
                "peer={peer} refused: {why} ({count} refused in the last second, {} active)",
                stats.active
            );
        }
    }

    /// Sets the TCP options of listener `index` on a connection it accepted.
    pub(crate) fn prepare(&self, index: usize, stream: &TcpStream, peer: SocketAddr) {
        if let Some(listener) = self.listeners.get(index).and_then(|e| e.socket.as_ref()) {
            if let Err(error) = listener.prepare(stream) {
                log::debug!("peer={peer} cannot set TCP options: {error}");
            }
        }
    }

    /// An admitted connection could not be registered with the poller: it is dropped.
    pub(crate) fn register_failed(
        &mut self,
        listener: ListenerId,
        peer: SocketAddr,
        error: &io::Error,
        stats: &mut Stats,
        clock: &Clock,
    ) {
        stats.accept_errors += 1;
        self.release_unopened(listener, peer.ip());
        if let Some(count) = self.error_log.hit(clock.now()) {
            log::warn!(
                "peer={peer} cannot register connection: {error} ({count} in the last second)"
            );
        }
    }

    /// A connection from `ip` on `listener`, just accepted, could not be opened: released
    /// if the rules admitted it at accept (not on a PROXY listener, whose connections are
    /// admitted only after their header).
    pub(crate) fn release_unopened(&mut self, listener: ListenerId, ip: IpAddr) {
        if !self.expects_proxy(listener) && !self.is_exempt(listener) {
            self.release_ip(ip);
        }
    }

    /// A connection from `ip` that was admitted is gone.
    fn release_ip(&mut self, ip: IpAddr) {
        if self.access.counts() {
            self.access.release(ip);
        }
    }

    /// A connection closed, freeing a descriptor: whether accepting, paused for lack of
    /// them, should resume now ([`Acceptor::resume`]).
    pub(crate) fn paused(&self) -> bool {
        self.paused
    }

    /// Ends a pause: returns the listeners to accept from again (no new edge comes for
    /// connections already queued).
    pub(crate) fn resume(&mut self) -> std::ops::Range<usize> {
        self.paused = false;
        if self.spare_fd.is_none() {
            // Lost when the process ran out of descriptors: shedding needs it back.
            self.spare_fd = spare_descriptor();
        }
        0..self.listeners.len()
    }

    /// Whether `ip` is locked out now: a lockout that began after a connection was accepted
    /// still holds, so connections opened beforehand cannot keep guessing.
    pub(crate) fn is_locked(&self, ip: IpAddr, now: Tick) -> bool {
        self.access.is_locked(ip, now)
    }

    /// A connection from `ip` failed to authenticate: counted toward its lockout.
    pub(crate) fn auth_failed(&mut self, ip: IpAddr, stats: &mut Stats, clock: &Clock) {
        if self.access.auth_failed(ip, clock.tick()) {
            stats.lockouts += 1;
            if let Some(count) = self.lockout_log.hit(clock.now()) {
                let (failures, window, duration) = self.lockout;
                log::warn!(
                    "peer={} locked out for {duration:?}: {failures} failed authentications \
                     within {window:?} ({count} lockouts in the last second)",
                    ip.to_canonical(),
                );
            }
        }
        stats.offenders = self.access.offenders() as u64;
        self.plan_sweep(clock.tick());
    }

    /// Makes sure the access tables are swept while they remember anything.
    fn plan_sweep(&mut self, now: Tick) {
        if self.sweep_at == NEVER && self.access.remembers() {
            self.sweep_at = timer::after(now, ACCESS_SWEEP_TICKS);
        }
    }

    fn log_limits(&mut self) -> [&mut LogLimit; 4] {
        [
            &mut self.access_log,
            &mut self.reject_log,
            &mut self.error_log,
            &mut self.lockout_log,
        ]
    }

    /// When one of its rate-limited log lines owes a count of what it did not log.
    pub(crate) fn logs_due(&self) -> Option<Instant> {
        let limits = [
            &self.access_log,
            &self.reject_log,
            &self.error_log,
            &self.lockout_log,
        ];
        limits.into_iter().filter_map(LogLimit::due).min()
    }

    /// Logs the counts its rate-limited log lines owe, where due.
    pub(crate) fn flush_logs(&mut self, now: Instant) {
        for limit in self.log_limits() {
            limit.flush(now);
        }
    }

    /// The next tick this needs the loop for: a retry or a sweep ([`NEVER`]: none).
    pub(crate) fn next_deadline(&self) -> Tick {
        self.retry_at.min(self.sweep_at)
    }

    /// Does what is due at `now`; true if accepting should resume ([`Acceptor::resume`]).
    pub(crate) fn on_time(&mut self, now: Tick, stats: &mut Stats) -> bool {
        if self.sweep_at <= now {
            self.access.expire(now);
            stats.offenders = self.access.offenders() as u64;
            self.sweep_at = NEVER;
            self.plan_sweep(now);
        }
        if self.retry_at <= now {
            self.retry_at = NEVER;
            return true;
        }
        false
    }
}

/// Reads (into `scratch`, and drops) what a refused client sent at once: closing with
/// unread input would answer it with a reset, which can destroy the reply before the client
/// reads it, and clients often send at once.
fn read_what_came(stream: &TcpStream, scratch: &mut [u8]) {
    let _ = (&*stream).read(scratch);
}

/// A descriptor to hold in reserve (see `Acceptor::spare_fd`).
fn spare_descriptor() -> Option<File> {
    File::open("/dev/null").ok()
}

/// Why a connection is refused with a reply.
#[derive(Debug, Clone, Copy)]
enum Full {
    /// `max_conns` are open (`Config::full_reply`).
    Connections,
    /// The process is out of descriptors (`Config::out_of_fds_reply`).
    Descriptors,
}

/// What shedding a waiting connection came to.
enum Shed {
    /// One connection was accepted and refused.
    One,
    /// There was nothing waiting.
    QueueEmpty,
    /// No spare descriptor, or the accept failed anyway.
    Failed,
}

/// Whether an accept failed for lack of descriptors (per process or system-wide) or of
/// kernel memory for the new socket.
fn is_out_of_descriptors(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
