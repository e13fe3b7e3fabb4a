//! The reactor: [`Reactor`], what an embedder builds and runs, and [`Server`], everything
//! its loop ([`crate::event_loop`]) serves.
//!
//! `Server` composes the components, each of which owns its state in a file of its own: the
//! [`Acceptor`] (listeners, access rules, refusals), the connection slab with its
//! [`Stage`](crate::conn::Stage)s, the [`Output`] pending list, the [`Transports`] (plain
//! or TLS), the [`Door`] (`AUTH`), the timer heap, the [`UdpSockets`]. The files of this
//! module are the glue, one job each: `open.rs` turns an accepted socket into a
//! connection, `drive.rs` serves one connection's event, `settle.rs` performs a callback's
//! effects and the next stage (and the close), `flush.rs` writes queued output,
//! `door.rs`, `tls.rs` and `proxy.rs` apply the door's, the transport's and the PROXY
//! header's verdicts, `timeouts.rs` expires deadlines, `peers.rs` keeps each connection's
//! address, listener and identity, `access_log.rs` its access line.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::Level;

use mio::{Events, Poll, Registry, Waker};
use slab::Slab;

use crate::acceptor::Acceptor;
use crate::auth::{Authenticator, Door};
use crate::close_reason::CloseReason;
use crate::config::Config;
use crate::conn::{Conn, Timeouts, Watermarks};
use crate::conn_id::{ConnId, Generations, Source};
use crate::handle::{Handle, Requests};
use crate::handler::Handler;
use crate::listener::{Listener, ListenerId};
use crate::log_limit::LogLimit;
use crate::outbox::Outbox;
use crate::output::Output;
use crate::stats::Stats;
use crate::timer::{self, Clock, Tick, Timers, NEVER};
use crate::transport::Transports;
use crate::udp::UdpSockets;

mod access_log;
mod door;
mod drive;
mod flush;
mod open;
mod peers;
mod proxy;
mod settle;
mod timeouts;
mod tls;

use access_log::AccessLog;
pub(crate) use drive::Readiness;
use peers::Peers;

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
    pub(crate) poll: Poll,
    pub(crate) events: Events,
    pub(crate) control: Control,
    pub(crate) server: Server<H>,
}

/// What [`Reactor::set_stats_reporter`] installed.
pub(crate) type StatsReporter = Box<dyn FnMut(&Stats) + Send>;

/// The loop's own state ([`crate::event_loop`] acts on it): what handles asked for, and what it does on its own timers.
pub(crate) struct Control {
    pub(crate) requests: Arc<Requests>,
    /// A stop was asked for (and logged).
    pub(crate) stop_requested: bool,
    /// Set while draining: when the drain gives up.
    pub(crate) drain_until: Option<Tick>,
    pub(crate) drain_timeout: Duration,
    /// The stats line: when next, and how often ([`NEVER`]: only when asked).
    pub(crate) next_stats_at: Tick,
    pub(crate) stats_every: Option<Tick>,
    /// Called with the counters whenever the stats line is logged.
    pub(crate) stats_reporter: Option<StatsReporter>,
    /// [`Reactor::report_every`]: when next, how often, and what.
    pub(crate) periodic: Option<(Tick, Tick, StatsReporter)>,
    /// [`Reactor::on_drain`].
    pub(crate) on_drain: Option<Box<dyn FnMut() + Send>>,
}

impl Control {
    pub(crate) fn new(
        requests: Arc<Requests>,
        stats_interval: Option<Duration>,
        drain_timeout: Duration,
    ) -> Control {
        let stats_every = timer::ticks(stats_interval);
        Control {
            requests,
            stop_requested: false,
            drain_until: None,
            drain_timeout,
            next_stats_at: stats_every.unwrap_or(NEVER),
            stats_every,
            stats_reporter: None,
            periodic: None,
            on_drain: None,
        }
    }
}

/// Everything the loop serves: the components, the handler, the counters. Apart from the
/// poller and its event list, so that events can be iterated while this is mutated.
pub(crate) struct Server<H: Handler> {
    registry: Registry,
    config: Config,
    water: Watermarks,
    timeouts: Timeouts,
    /// `Config::linger_discard_limit`, within the range of the per-connection counter.
    linger_limit: u32,
    /// Listeners, access rules, the connection limit, refusals.
    acceptor: Acceptor,
    /// Plain or TLS: each listener's settings and each TLS connection's session.
    transports: Transports,
    /// The `AUTH` exchange; `None`: connections need not authenticate.
    door: Option<Door>,
    udp: UdpSockets,
    conns: Slab<Conn<H::Session>>,
    generations: Generations,
    /// Each connection's address and identity, by slab key.
    peers: Peers,
    access_log: AccessLog,
    handler: H,
    /// What the current callback asked for, performed when it returns.
    outbox: Outbox,
    /// The pending list: connections to flush before the next poll.
    output: Output,
    /// The connection just served left input to be handed back from the resume list: stop
    /// reading it for now.
    handed_back: bool,
    timers: Timers,
    pub(crate) stats: Stats,
    scratch: Box<[u8]>,
    /// Sources cut short by a budget or resumed after backpressure, to serve before sleeping.
    pub(crate) resume: Vec<Source>,
    pub(crate) clock: Clock,
    tls_log: LogLimit,
    auth_log: LogLimit,
    proxy_log: LogLimit,
    slow_reader_log: LogLimit,
    message_timeout_log: LogLimit,
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
        let water = Watermarks {
            high: config.high_water,
            low: config.low_water.min(config.high_water),
        };
        let timeouts = Timeouts {
            idle: timer::ticks(config.idle_timeout),
            write: timer::ticks(config.write_timeout),
            linger: timer::ticks(Some(config.linger_timeout)).unwrap_or(0),
            message: timer::ticks(config.message_timeout),
            handshake: timer::ticks(Some(config.tls_handshake_timeout)).unwrap_or(1),
            proxy_header: timer::ticks(Some(config.proxy_header_timeout)).unwrap_or(1),
        };
        let requests = Arc::new(Requests::new(waker));
        let control = Control::new(requests, config.stats_interval, config.drain_timeout);
        let server = Server {
            registry,
            acceptor: Acceptor::new(&config),
            output: Output::new(config.flush_budget),
            linger_limit: config.linger_discard_limit.min(u32::MAX as usize - 1) as u32,
            water,
            timeouts,
            config,
            transports: Transports::new(),
            door: None,
            udp: UdpSockets::default(),
            conns: Slab::new(),
            generations: Generations::default(),
            peers: Peers::default(),
            access_log: AccessLog::new(),
            handler,
            outbox: Outbox::new(water.high),
            handed_back: false,
            timers: Timers::default(),
            stats: Stats::default(),
            scratch: vec![0; SCRATCH_SIZE].into_boxed_slice(),
            resume: Vec::new(),
            clock: Clock::new(),
            tls_log: LogLimit::per_second(module_path!(), Level::Info, "TLS errors"),
            auth_log: LogLimit::per_second(module_path!(), Level::Info, "failed authentications"),
            proxy_log: LogLimit::per_second(module_path!(), Level::Warn, "PROXY header errors"),
            slow_reader_log: LogLimit::per_second(
                module_path!(),
                Level::Info,
                "slow readers dropped",
            ),
            message_timeout_log: LogLimit::per_second(
                module_path!(),
                Level::Info,
                "unfinished messages closed",
            ),
        };
        Ok(Reactor {
            poll,
            events,
            control,
            server,
        })
    }

    /// Starts accepting connections on `listener`. Returns its id, which
    /// [`Context::listener`](crate::Context::listener) gives for each of its connections.
    /// A reactor takes at most [`ListenerId::MAX`] listeners.
    pub fn add_listener(&mut self, listener: Listener) -> io::Result<ListenerId> {
        let server = &mut self.server;
        let token = |index| Source::Listener(index).token();
        let id = server.acceptor.add(listener, &server.registry, token)?;
        server.transports.add_listener();
        Ok(id)
    }

    /// Exempts `listener` from the rules that protect the service: its connections skip
    /// the access rules (`Config::allow`, the per-address limit, the accept rate, lockout),
    /// neither take nor are refused a place under `Config::max_conns` (they still count in
    /// [`Stats::active`](crate::Stats::active)), and reach the handler without
    /// authenticating ([`Reactor::set_authenticator`]). For an internal endpoint the handler
    /// serves apart ([`Context::listener`](crate::Context::listener)) and bounds itself,
    /// such as a metrics port, which must answer most when the service is full; bind it
    /// where only its clients reach it.
    ///
    /// ```
    /// # use wharf::{Config, ListenOptions, Listener, Reactor, Tokens, service::Echo};
    /// let mut reactor = Reactor::new(Config::default(), Echo)?;
    /// reactor.set_authenticator(Tokens::parse("alice:s3cret-0123456789\n")?);
    /// let bind = || Listener::bind("127.0.0.1:0".parse().unwrap(), &ListenOptions::default());
    /// reactor.add_listener(bind()?)?;
    /// let metrics = reactor.add_listener(bind()?)?;
    /// reactor.exempt_from_rules(metrics);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn exempt_from_rules(&mut self, listener: ListenerId) {
        self.server.acceptor.exempt_from_rules(listener);
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
    ) -> io::Result<ListenerId> {
        let id = self.add_listener(listener)?;
        self.server.transports.secure_last_listener(tls);
        Ok(id)
    }

    /// Makes `listener` take connections only from load balancers in `from`, each sending
    /// a PROXY protocol header (HAProxy's, version 1 or 2) before anything else: the client
    /// address it carries is then the connection's address everywhere (the access rules,
    /// which apply to it rather than to the balancer, the per-address limit, lockout,
    /// [`Context::peer_addr`](crate::Context::peer_addr), logs). A connection from any
    /// other source is closed at accept; one without a valid header, or without a complete
    /// one within `Config::proxy_header_timeout`, is closed with a logged reason. On a TLS
    /// listener the header comes before the handshake. Call it before [`Reactor::run`].
    ///
    /// ```
    /// # use wharf::{Config, ListenOptions, Listener, Reactor, service::Echo};
    /// let mut reactor = Reactor::new(Config::default(), Echo)?;
    /// let listener = Listener::bind("127.0.0.1:0".parse()?, &ListenOptions::default())?;
    /// let behind_haproxy = reactor.add_listener(listener)?;
    /// reactor.expect_proxy_header(behind_haproxy, vec!["10.0.0.0/24".parse()?]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn expect_proxy_header(&mut self, listener: ListenerId, from: Vec<ipnet::IpNet>) {
        self.server.acceptor.expect_proxy_header(listener, from);
    }

    /// Requires every connection to authenticate before the handler hears of it: its first
    /// line must be `AUTH <token>`, which `authenticator` checks ([`crate::auth::line`] has
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
        let timeout = timer::ticks(Some(self.server.config.auth_timeout)).unwrap_or(1);
        self.server.door = Some(Door::new(Box::new(authenticator), timeout));
    }

    /// Starts serving datagrams on `socket` (bound and non-blocking): each goes to
    /// [`Handler::on_datagram`], and its reply back to the sender. Returns the socket's
    /// address.
    pub fn add_udp(&mut self, socket: std::net::UdpSocket) -> io::Result<SocketAddr> {
        socket.set_nonblocking(true)?;
        let socket = mio::net::UdpSocket::from_std(socket);
        let server = &mut self.server;
        let token = |index| Source::Udp(index).token();
        server.udp.add(socket, &server.registry, token)
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
    pub fn set_stats_reporter(&mut self, report: impl FnMut(&Stats) + Send + 'static) {
        self.control.stats_reporter = Some(Box::new(report));
    }

    /// The addresses of the listeners, in the order they were added.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        let acceptor = &self.server.acceptor;
        (0..acceptor.len())
            .filter_map(|index| acceptor.local_addr(index))
            .collect()
    }

    /// A handle that controls this reactor from another thread or a signal handler: stop,
    /// drain, a stats line or a copy of the counters, a TLS reload.
    pub fn handle(&self) -> Handle {
        Handle {
            requests: Arc::clone(&self.control.requests),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> &Stats {
        &self.server.stats
    }

    /// Calls `report` with the counters every `interval` (at least one tick, 100 ms), on the
    /// loop's thread, logging nothing: for a status that a supervisor shows (systemd's
    /// `STATUS=`). It runs inside the loop, so it must not block.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use wharf::{Config, Reactor, service::Echo};
    /// let mut reactor = Reactor::new(Config::default(), Echo)?;
    /// reactor.report_every(Duration::from_secs(5), |stats| {
    ///     let _status = format!("{} connections", stats.active);
    /// });
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn report_every(
        &mut self,
        interval: Duration,
        report: impl FnMut(&Stats) + Send + 'static,
    ) {
        let every = timer::ticks(Some(interval)).unwrap_or(1).max(1);
        self.control.periodic = Some((every, every, Box::new(report)));
    }

    /// Calls `hook` on the loop's thread when a drain begins ([`Handle::drain`], or the
    /// first SIGTERM with [`Handle::install_signal_handlers`]), after the listeners close:
    /// for telling a supervisor the service is stopping (systemd's `STOPPING=1`).
    pub fn on_drain(&mut self, hook: impl FnMut() + Send + 'static) {
        self.control.on_drain = Some(Box::new(hook));
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.server.handler
    }

    /// The handler, to change between runs or before the first: tell it the id of a
    /// listener added after the reactor was made, for example.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.server.handler
    }
}

impl<H: Handler> Server<H> {
    /// Connections open now.
    pub(crate) fn connections(&self) -> usize {
        self.conns.len()
    }

    /// A handler asked the reactor to stop ([`crate::Context::stop_reactor`]).
    pub(crate) fn stop_asked(&self) -> bool {
        self.outbox.stop
    }

    /// Work the loop must do before it sleeps: the resume list, output to flush, or a
    /// callback since the handler's last `on_flush` (it may hold a batch).
    pub(crate) fn has_work(&self) -> bool {
        !self.resume.is_empty() || !self.output.is_empty() || self.outbox.unflushed
    }

    /// The nearest tick anything here is due: a connection's deadline, an accept retry, an
    /// access sweep, a count a rate-limited log line owes ([`NEVER`]: none).
    pub(crate) fn next_deadline(&self) -> Tick {
        let logs = self.logs_due().map_or(NEVER, |due| self.clock.tick_at(due));
        self.timers
            .next()
            .unwrap_or(NEVER)
            .min(self.acceptor.next_deadline())
            .min(logs)
    }

    /// When a rate-limited log line owes a count of what it did not log.
    fn logs_due(&self) -> Option<Instant> {
        let own = [
            &self.tls_log,
            &self.auth_log,
            &self.proxy_log,
            &self.slow_reader_log,
            &self.message_timeout_log,
        ];
        let own = own.into_iter().filter_map(LogLimit::due);
        own.chain(self.acceptor.logs_due()).min()
    }

    /// Logs the counts rate-limited log lines owe, where due.
    pub(crate) fn flush_logs(&mut self) {
        let now = self.clock.now();
        for limit in [
            &mut self.tls_log,
            &mut self.auth_log,
            &mut self.proxy_log,
            &mut self.slow_reader_log,
            &mut self.message_timeout_log,
        ] {
            limit.flush(now);
        }
        self.acceptor.flush_logs(now);
    }

    /// Closes the listeners and UDP sockets (a drain): no new connections or datagrams.
    pub(crate) fn stop_listening(&mut self) {
        self.acceptor.close();
        self.transports.close_listeners();
        self.udp.close();
    }

    /// Serves UDP socket `index`; back on the resume list if its budget ran out.
    pub(crate) fn serve_udp(&mut self, index: usize) {
        let token = Source::Udp(index).token();
        let (scratch, stats) = (&mut self.scratch, &mut self.stats);
        if (self.udp).serve(
            index,
            &mut self.handler,
            scratch,
            stats,
            &self.registry,
            token,
        ) {
            self.resume.push(Source::Udp(index));
        }
    }

    /// The address connection `id` was accepted from.
    fn peer(&self, id: ConnId) -> SocketAddr {
        self.peers.peer(id.key())
    }

    pub(crate) fn is_live(&self, id: ConnId) -> bool {
        self.conns
            .get(id.key())
            .is_some_and(|conn| conn.generation == id.generation())
    }

    pub(crate) fn shut_down(&mut self) {
        self.stop_listening();
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .map(|(key, conn)| ConnId::new(key, conn.generation))
            .collect();
        // Every connection is about to close: mail between them (a chat room telling all
        // the others of each departure) would be n² writes for nothing. Handlers still see
        // every close; what they send is dropped.
        self.output.begin_delivery();
        for id in ids {
            if self.is_live(id) {
                self.close(id, CloseReason::Shutdown);
                self.outbox.mail.clear();
                self.outbox.mail_bytes.clear();
                self.outbox.closes.clear();
            }
        }
        self.output.end_delivery();
    }
}
