//! The event loop: one thread, one `mio::Poll`, edge-triggered.
//!
//! The loop waits for readiness, accepts new connections, and drives each ready connection:
//! flush its output, read its input into one scratch buffer shared by all connections, hand
//! the bytes to the [`Handler`], write the reply, and [`settle`] the connection's phase. It
//! knows nothing about the handler's protocol; what it does before the handler hears of a
//! connection, the TLS handshake and the `AUTH` line, is in `tls.rs` and `auth.rs`.
//!
//! Edge-triggered readiness is reported once per change, not while it lasts, so every source
//! is drained until the operating system says `WouldBlock`, with two deliberate exceptions:
//! - a short read (fewer bytes than the buffer holds) means the socket is drained, and the
//!   next arrival raises a new edge, so the read that would only say `WouldBlock` is skipped;
//!   but not when the event also flagged the end of stream (which raises no new edge) or
//!   urgent data (at whose mark the kernel ends a read early), and not where the poller cannot
//!   flag urgent data at all (see [`crate::conn`]);
//! - a budget caps the work per event (bytes read per connection, accepts per listener) so
//!   that one busy source cannot starve the others. A source cut short by its budget goes on
//!   a resume list, served after the current batch; the loop then polls without sleeping.
//!
//! The poll timeout is the time to the nearest deadline: a connection's timeout (see
//! [`crate::timer`]), the end of a drain, the next stats line, or an accept retry.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mio::event::Event;
use mio::{Events, Interest, Poll, Registry, Waker};
use slab::Slab;

use crate::access::Access;
use crate::auth::Authenticator;
use crate::close_reason::CloseReason;
use crate::config::Config;
use crate::conn::{Conn, Timeouts, Watermarks, SHORT_READ_DRAINS};
use crate::conn_id::{ConnId, Generations, Source};
use crate::handler::{Handler, Outbox};
use crate::listener::Listener;
use crate::log_limit::LogLimit;
use crate::stats::Stats;
use crate::timer::{self, Clock, Tick, Timers, NEVER};

mod accept;
mod auth;
mod drive;
mod extras;
mod handle;
mod timeouts;
#[cfg(feature = "tls")]
mod tls;
mod udp;

use extras::Extras;
pub use handle::Handle;
pub(crate) use handle::Request;
use handle::Shared;
use udp::UdpEndpoint;

/// Size of the read buffer shared by all connections: one read takes up to this much.
const SCRATCH_SIZE: usize = 64 * 1024;

/// A single-threaded event loop serving the connections of its listeners with one handler.
///
/// ```
/// use std::io::{Read, Write};
/// use std::net::{SocketAddr, TcpStream};
/// use wharf::{Config, Context, Handler, ListenOptions, Listener, Reactor};
///
/// /// Replies to every byte with its uppercase form.
/// struct Upper;
/// impl Handler for Upper {
///     type Session = ();
///     fn on_open(&mut self, _: &mut Context<'_>, _: SocketAddr) {}
///     fn on_data(&mut self, ctx: &mut Context<'_>, _: &mut (), input: &[u8]) -> usize {
///         ctx.write(&input.to_ascii_uppercase());
///         input.len()
///     }
/// }
///
/// let listener = Listener::bind("127.0.0.1:0".parse()?, &ListenOptions::default())?;
/// let addr = listener.local_addr();
/// let mut reactor = Reactor::new(Config::default(), Upper)?;
/// reactor.add_listener(listener)?;
/// let handle = reactor.handle();
/// let server = std::thread::spawn(move || reactor.run());
///
/// let mut client = TcpStream::connect(addr)?;
/// client.write_all(b"hello")?;
/// let mut reply = [0; 5];
/// client.read_exact(&mut reply)?;
/// assert_eq!(&reply, b"HELLO");
///
/// handle.stop();
/// server.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Reactor<H: Handler> {
    poll: Poll,
    events: Events,
    core: Core<H>,
}

/// Everything but the poller and its event list, so that events can be iterated while the
/// rest is mutated.
struct Core<H: Handler> {
    registry: Registry,
    water: Watermarks,
    config: Config,
    listeners: Vec<Listener>,
    /// The TLS settings of each listener, by index (`None`: plain).
    #[cfg(feature = "tls")]
    listener_tls: Vec<Option<crate::tls::TlsConfig>>,
    /// Plaintext decrypted from one read, and ciphertext for one write: shared by all TLS
    /// connections, so an idle one holds no buffer of its own here.
    #[cfg(feature = "tls")]
    plain: Vec<u8>,
    #[cfg(feature = "tls")]
    sealed: Vec<u8>,
    /// `Config::tls_handshake_timeout` in ticks.
    #[cfg(feature = "tls")]
    tls_ticks: Tick,
    #[cfg(feature = "tls")]
    tls_log: LogLimit,
    udp: Vec<UdpEndpoint>,
    access: Access,
    /// Source address of each connection, by slab key: kept only while `access` counts
    /// connections per address, so other servers pay nothing for it.
    peer_ips: Vec<Option<std::net::IpAddr>>,
    access_log: LogLimit,
    /// When the lockout and rate tables next drop what expired ([`NEVER`]: they are empty).
    access_sweep_at: Tick,
    /// Checks `AUTH` lines; `None`: connections need not authenticate.
    authenticator: Option<Box<dyn Authenticator>>,
    /// `Config::auth_timeout` in ticks.
    auth_ticks: Tick,
    /// Identities and TLS sessions, by slab key, for the connections that have them.
    extras: Extras,
    auth_log: LogLimit,
    lockout_log: LogLimit,
    /// The reply buffer handed to `Handler::on_datagram`, reused.
    datagram_reply: Vec<u8>,
    conns: Slab<Conn<H::Session>>,
    generations: Generations,
    handler: H,
    outbox: Outbox,
    /// Connections with output queued and not yet flushed, oldest first; up to
    /// `flush_budget` of them are written before each poll (each is on it once:
    /// `Conn::flush_pending` says whether it is).
    pending: VecDeque<ConnId>,
    /// The connection just served left input to be handed back from the resume list: stop
    /// reading it for now.
    handed_back: bool,
    /// Connections whose handler yielded ([`crate::Context::yield_rest`]): resumed once the
    /// pending list has been flushed.
    yielded: Vec<ConnId>,
    /// True while mail is being delivered, so that a close inside delivery (which can create
    /// more mail) adds to the queue instead of recursing.
    delivering: bool,
    stats: Stats,
    /// Called with the counters whenever the stats line is logged.
    stats_reporter: Option<Box<dyn FnMut(&Stats)>>,
    /// `Config::linger_discard_limit`, within the range of the per-connection counter.
    linger_limit: u32,
    scratch: Box<[u8]>,
    /// Sources cut short by a budget or resumed after backpressure, to serve before sleeping.
    resume: Vec<Source>,
    /// Accepting failed for lack of resources (descriptors, memory): retried when a
    /// connection closes or at `accept_retry_at`, since no new edge comes for connections
    /// already queued.
    accept_paused: bool,
    accept_retry_at: Tick,
    /// A descriptor held in reserve: closed to make room to accept and refuse a connection
    /// when the process is out of descriptors, then reopened.
    spare_fd: Option<File>,
    /// `ERR server full (max N connections)\n`
    full_line: Box<[u8]>,
    clock: Clock,
    timers: Timers,
    timeouts: Timeouts,
    next_stats_at: Tick,
    /// A stop was asked for through the [`Handle`] (and logged).
    stop_requested: bool,
    /// Set while draining: when the drain gives up.
    drain_until: Option<Tick>,
    reject_log: LogLimit,
    accept_error_log: LogLimit,
    write_timeout_log: LogLimit,
    message_timeout_log: LogLimit,
    shared: Arc<Shared>,
}

/// What one poller event says about a connection.
#[derive(Debug, Clone, Copy)]
struct Readiness {
    readable: bool,
    writable: bool,
    /// A short read does not prove the socket drained (the end of stream, an error or urgent
    /// data is flagged): read until `WouldBlock`.
    read_to_would_block: bool,
    /// Resumed, not an event: input left buffered while the output was backlogged is handed
    /// to the handler again first.
    redeliver: bool,
}

impl Readiness {
    fn from_event(event: &Event) -> Readiness {
        let error = event.is_error();
        Readiness {
            readable: event.is_readable() || event.is_read_closed() || error,
            writable: event.is_writable() || event.is_write_closed() || error,
            read_to_would_block: event.is_read_closed()
                || error
                || event.is_priority()
                || !SHORT_READ_DRAINS,
            redeliver: false,
        }
    }

    /// Serving a connection from the resume list: read until `WouldBlock`.
    const RESUME: Readiness = Readiness {
        readable: true,
        writable: false,
        read_to_would_block: true,
        redeliver: true,
    };
}

impl<H: Handler> Reactor<H> {
    /// A reactor with no listeners yet; add them with [`Reactor::add_listener`].
    pub fn new(mut config: Config, handler: H) -> io::Result<Reactor<H>> {
        // A budget of zero would never make progress and spin the loop; one is the least.
        config.accept_budget = config.accept_budget.max(1);
        config.read_budget = config.read_budget.max(1);
        config.flush_budget = config.flush_budget.max(1);
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(poll.registry(), Source::Waker.token())?;
        let events = Events::with_capacity(config.events_capacity.max(1));
        let linger_limit = config.linger_discard_limit.min(u32::MAX as usize - 1) as u32;
        let access = Access::new(&config);
        let auth_ticks = timer::ticks(Some(config.auth_timeout)).unwrap_or(1);
        #[cfg(feature = "tls")]
        let tls_ticks = timer::ticks(Some(config.tls_handshake_timeout)).unwrap_or(1);
        let water = Watermarks {
            high: config.high_water,
            low: config.low_water.min(config.high_water),
        };
        let timeouts = Timeouts {
            idle: timer::ticks(config.idle_timeout),
            write: timer::ticks(config.write_timeout),
            linger: timer::ticks(Some(config.linger_timeout)).unwrap_or(0),
            message: timer::ticks(config.message_timeout),
        };
        let stats_every = timer::ticks(config.stats_interval);
        let full_line =
            format!("ERR server full (max {} connections)\n", config.max_conns).into_bytes();
        Ok(Reactor {
            poll,
            events,
            core: Core {
                registry,
                water,
                config,
                listeners: Vec::new(),
                #[cfg(feature = "tls")]
                listener_tls: Vec::new(),
                #[cfg(feature = "tls")]
                plain: Vec::new(),
                #[cfg(feature = "tls")]
                sealed: Vec::new(),
                #[cfg(feature = "tls")]
                tls_ticks,
                #[cfg(feature = "tls")]
                tls_log: LogLimit::per_second(),
                udp: Vec::new(),
                access,
                peer_ips: Vec::new(),
                access_log: LogLimit::per_second(),
                access_sweep_at: NEVER,
                authenticator: None,
                auth_ticks,
                extras: Extras::default(),
                auth_log: LogLimit::per_second(),
                lockout_log: LogLimit::per_second(),
                datagram_reply: Vec::new(),
                conns: Slab::new(),
                generations: Generations::default(),
                handler,
                outbox: Outbox::new(water.high),
                pending: VecDeque::new(),
                handed_back: false,
                yielded: Vec::new(),
                delivering: false,
                stats: Stats::default(),
                stats_reporter: None,
                linger_limit,
                scratch: vec![0; SCRATCH_SIZE].into_boxed_slice(),
                resume: Vec::new(),
                accept_paused: false,
                accept_retry_at: NEVER,
                spare_fd: File::open("/dev/null").ok(),
                full_line: full_line.into_boxed_slice(),
                clock: Clock::new(),
                timers: Timers::default(),
                timeouts,
                next_stats_at: stats_every.unwrap_or(NEVER),
                stop_requested: false,
                drain_until: None,
                reject_log: LogLimit::per_second(),
                accept_error_log: LogLimit::per_second(),
                write_timeout_log: LogLimit::per_second(),
                message_timeout_log: LogLimit::per_second(),
                shared: Arc::new(Shared {
                    stop: AtomicBool::new(false),
                    drain: AtomicBool::new(false),
                    log_stats: AtomicBool::new(false),
                    reload: AtomicBool::new(false),
                    stats_wanted: AtomicBool::new(false),
                    stats_reply: Default::default(),
                    stats_ready: Default::default(),
                    signal: AtomicI32::new(0),
                    waker,
                }),
            },
        })
    }

    /// Starts accepting connections on `listener`.
    pub fn add_listener(&mut self, mut listener: Listener) -> io::Result<()> {
        let token = Source::Listener(self.core.listeners.len()).token();
        self.core
            .registry
            .register(listener.socket_mut(), token, Interest::READABLE)?;
        self.core.listeners.push(listener);
        #[cfg(feature = "tls")]
        self.core.listener_tls.push(None);
        Ok(())
    }

    /// Starts accepting TLS connections on `listener`: each completes a handshake with
    /// `tls` (within `Config::tls_handshake_timeout`) before the handler hears of it, and
    /// the handler then reads and writes plaintext as on any connection. With client
    /// certificates required, the verified certificate's subject is the connection's
    /// [`identity`](crate::Context::identity). Feature `tls`.
    ///
    /// ```no_run
    /// # use wharf::{Config, ListenOptions, Listener, Reactor, TlsConfig, service::Echo};
    /// let mut reactor = Reactor::new(Config::default(), Echo)?;
    /// let listener = Listener::bind("127.0.0.1:7443".parse()?, &ListenOptions::default())?;
    /// reactor.add_tls_listener(listener, TlsConfig::from_pem_files("cert.pem", "key.pem", None)?)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "tls")]
    pub fn add_tls_listener(
        &mut self,
        listener: Listener,
        tls: crate::tls::TlsConfig,
    ) -> io::Result<()> {
        self.add_listener(listener)?;
        if let Some(slot) = self.core.listener_tls.last_mut() {
            *slot = Some(tls);
        }
        Ok(())
    }

    /// Requires every connection to authenticate before the handler hears of it: its first
    /// line must be `AUTH <token>`, which `authenticator` checks ([`crate::proto::auth`] has
    /// the exchange). Until then the reactor answers alone: `ERR auth required` to any other
    /// line, `ERR auth failed` and a close to a wrong token (counted toward the address's
    /// lockout, `Config::lockout_failures`), `OK NAME` to a good one, after which
    /// [`Handler::on_open`] is called and [`Context::identity`](crate::Context::identity)
    /// is `NAME`. A connection that has not authenticated within `Config::auth_timeout` is
    /// closed. Call it before [`Reactor::run`].
    ///
    /// ```
    /// # use wharf::{Config, Reactor, Tokens, service::Echo};
    /// let mut reactor = Reactor::new(Config::default(), Echo)?;
    /// reactor.set_authenticator(Tokens::parse("alice:s3cret-0123456789\n")?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_authenticator(&mut self, authenticator: impl Authenticator + 'static) {
        self.core.authenticator = Some(Box::new(authenticator));
    }

    /// Starts serving datagrams on `socket` (bound and non-blocking): each goes to
    /// [`Handler::on_datagram`], and its reply back to the sender. Returns the socket's
    /// address.
    pub fn add_udp(&mut self, socket: std::net::UdpSocket) -> io::Result<SocketAddr> {
        socket.set_nonblocking(true)?;
        let mut endpoint = UdpEndpoint::new(mio::net::UdpSocket::from_std(socket));
        let addr = endpoint.local_addr()?;
        let token = Source::Udp(self.core.udp.len()).token();
        self.core
            .registry
            .register(endpoint.socket_mut(), token, Interest::READABLE)?;
        self.core.udp.push(endpoint);
        Ok(addr)
    }

    /// Calls `report` with the counters, on the loop's thread, each time the stats line is
    /// logged: every `Config::stats_interval` and on [`Handle::log_stats`] (SIGUSR1 with
    /// [`Handle::install_signal_handlers`]), whatever the log level. For counters that must
    /// reach another process without a thread of its own: a `--workers` worker writes them
    /// to its parent this way. It runs inside the loop, so it must not block.
    ///
    /// ```
    /// # use std::sync::{Arc, Mutex};
    /// # use wharf::{Config, Reactor, service::Echo};
    /// let mut reactor = Reactor::new(Config::default(), Echo)?;
    /// let seen = Arc::new(Mutex::new(None));
    /// let sink = Arc::clone(&seen);
    /// reactor.set_stats_reporter(move |stats| *sink.lock().unwrap() = Some(stats.accepted));
    /// let handle = reactor.handle();
    /// handle.log_stats();
    /// handle.stop();
    /// reactor.run()?;
    /// assert_eq!(*seen.lock().unwrap(), Some(0));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_stats_reporter(&mut self, report: impl FnMut(&Stats) + 'static) {
        self.core.stats_reporter = Some(Box::new(report));
    }

    /// The addresses of the listeners, in the order they were added.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.core
            .listeners
            .iter()
            .map(Listener::local_addr)
            .collect()
    }

    /// A handle that can stop this reactor from another thread.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: Arc::clone(&self.core.shared),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> &Stats {
        &self.core.stats
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.core.handler
    }

    /// Runs the loop until [`Handle::stop`] or [`Context::stop_reactor`](crate::Context) is
    /// called, or a [`Handle::drain`] completes; then closes every connection and the
    /// listeners and returns. Errors only when the poller itself fails; a failing connection
    /// closes alone and never stops the loop.
    pub fn run(&mut self) -> io::Result<()> {
        loop {
            self.core.take_requests();
            if self.core.finished() {
                break;
            }
            // What this iteration queued goes out now, one write per connection (up to the
            // flush budget; the rest after the next poll, which then does not sleep).
            self.core.flush_pending();
            let timeout = self.core.poll_timeout();
            match self.poll.poll(&mut self.events, timeout) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {
                    // epoll_wait is never restarted: without a fresh clock, the next timeout
                    // would be measured from before this wait, and a stream of signals (or
                    // stop/continue) could postpone every deadline.
                    self.core.clock.update();
                    self.core.expire_timers();
                    continue;
                }
                Err(error) => return Err(error),
            }
            self.core.clock.update();
            for event in self.events.iter() {
                self.core.dispatch(event);
            }
            self.core.serve_resumed();
            self.core.expire_timers();
        }
        self.core.shut_down();
        Ok(())
    }
}

impl<H: Handler> Core<H> {
    /// Acts on what other threads (or signal handlers) asked for through a [`Handle`].
    fn take_requests(&mut self) {
        if self.shared.log_stats.swap(false, Ordering::AcqRel) {
            self.report_stats();
        }
        if self.shared.stats_wanted.swap(false, Ordering::AcqRel) {
            self.shared.answer_stats(&self.stats);
        }
        if self.shared.reload.swap(false, Ordering::AcqRel) {
            #[cfg(feature = "tls")]
            self.reload_tls();
        }
        // Read once, here: `finished` uses what was read, so a stop that arrives between
        // the two is logged (next time round) before the loop ends, never skipped.
        if !self.stop_requested && self.shared.stop.load(Ordering::Acquire) {
            self.stop_requested = true;
            let why = match self.signal() {
                Some(_) if self.drain_until.is_some() => "second signal: ",
                _ => "",
            };
            log::info!(
                "{why}stopping now, closing {} connections",
                self.conns.len()
            );
        }
        if self.drain_until.is_none() && self.shared.drain.load(Ordering::Acquire) {
            self.clock.update();
            let ticks = timer::ticks(Some(self.config.drain_timeout)).unwrap_or(0);
            self.drain_until = Some(timer::after(self.clock.tick(), ticks));
            // Closing the listeners first: no new connections (or datagrams) while the
            // others finish.
            self.listeners.clear();
            #[cfg(feature = "tls")]
            self.listener_tls.clear();
            self.udp.clear();
            let received = match self.signal() {
                Some(name) => format!("received {name}: "),
                None => String::new(),
            };
            log::info!(
                "{received}draining: listeners closed, {} connections have up to {:?} to finish",
                self.conns.len(),
                self.config.drain_timeout
            );
        }
    }

    /// Logs the stats line and hands the counters to the embedder's reporter, if any.
    fn report_stats(&mut self) {
        log::info!("stats: {}", self.stats);
        if let Some(report) = self.stats_reporter.as_mut() {
            report(&self.stats);
        }
    }

    /// The name of the last signal that made a request, if one did.
    fn signal(&self) -> Option<&'static str> {
        match self.shared.signal.load(Ordering::Acquire) {
            0 => None,
            signal => Some(crate::sys::signal::name(signal)),
        }
    }

    /// Whether `run` should return now.
    fn finished(&self) -> bool {
        if self.outbox.stop || self.stop_requested {
            return true;
        }
        match self.drain_until {
            Some(until) => self.conns.is_empty() || self.clock.tick() >= until,
            None => false,
        }
    }

    /// How long the poller may sleep: not at all with work on the resume list, output left
    /// to flush, or a callback since the handler's last `on_flush` (it may hold a batch),
    /// else until
    /// the nearest deadline.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.resume.is_empty() || !self.pending.is_empty() || self.outbox.unflushed {
            return Some(Duration::ZERO);
        }
        let next = [
            self.timers.next().unwrap_or(NEVER),
            self.accept_retry_at,
            self.next_stats_at,
            self.access_sweep_at,
            self.drain_until.unwrap_or(NEVER),
        ]
        .into_iter()
        .min()
        .unwrap_or(NEVER);
        (next != NEVER).then(|| self.clock.until(next))
    }

    fn dispatch(&mut self, event: &Event) {
        match Source::from_token(event.token()) {
            // The stop flag is read at the top of the loop.
            Source::Waker => {}
            Source::Listener(index) => self.accept(index),
            Source::Udp(index) => self.serve_udp(index),
            Source::Conn(id) => {
                if self.is_live(id) {
                    self.drive(id, Readiness::from_event(event));
                }
                // else: a stale event for a connection closed earlier in this batch, whose
                // slab slot may already hold a new connection with another generation.
            }
        }
    }

    fn serve_resumed(&mut self) {
        let mut work = std::mem::take(&mut self.resume);
        for source in work.drain(..) {
            match source {
                Source::Listener(index) => self.accept(index),
                Source::Udp(index) => self.serve_udp(index),
                Source::Conn(id) if self.is_live(id) => self.drive(id, Readiness::RESUME),
                _ => {}
            }
        }
        if self.resume.is_empty() {
            self.resume = work; // keep the allocation
        }
    }

    fn is_live(&self, id: ConnId) -> bool {
        self.conns
            .get(id.key())
            .is_some_and(|conn| conn.generation == id.generation())
    }

    fn shut_down(&mut self) {
        self.listeners.clear();
        #[cfg(feature = "tls")]
        self.listener_tls.clear();
        self.udp.clear();
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .map(|(key, conn)| ConnId::new(key, conn.generation))
            .collect();
        // Every connection is about to close: mail between them (a chat room telling all
        // the others of each departure) would be n² writes for nothing. Handlers still see
        // every close; what they send is dropped.
        self.delivering = true;
        for id in ids {
            if self.is_live(id) {
                self.close(id, CloseReason::Shutdown);
                self.outbox.mail.clear();
                self.outbox.mail_bytes.clear();
                self.outbox.closes.clear();
            }
        }
        self.delivering = false;
    }
}
