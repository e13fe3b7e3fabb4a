//! The event loop: one thread, one `mio::Poll`, edge-triggered.
//!
//! The loop waits for readiness, accepts new connections, and drives each ready connection:
//! flush its output, read its input into one scratch buffer shared by all connections, hand
//! the bytes to the [`Handler`], write the reply, and [`settle`] the connection's phase. It
//! knows nothing about protocols.
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

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Waker};
use slab::Slab;

use crate::config::Config;
use crate::conn::{settle, Conn, Next, Phase, Watermarks, READ_INTEREST, SHORT_READ_DRAINS};
use crate::conn_id::{ConnId, Generations, Source, MAX_KEY};
use crate::handler::{CloseReason, Context, Handler, Outbox};
use crate::listener::Listener;
use crate::stats::Stats;

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

/// A handle that stops a running [`Reactor`] from any thread.
///
/// ```
/// # use wharf::{Config, Reactor, service::Echo};
/// let mut reactor = Reactor::new(Config::default(), Echo)?;
/// let handle = reactor.handle();
/// handle.stop(); // before or while it runs: `run` returns promptly
/// reactor.run()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

struct Shared {
    stop: AtomicBool,
    waker: Waker,
}

impl Handle {
    /// Asks the reactor to stop: [`Reactor::run`] closes every connection and returns.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Err(error) = self.shared.waker.wake() {
            log::error!("cannot wake the reactor to stop it: {error}");
        }
    }
}

/// Everything but the poller and its event list, so that events can be iterated while the
/// rest is mutated.
struct Core<H: Handler> {
    registry: Registry,
    water: Watermarks,
    config: Config,
    listeners: Vec<Listener>,
    conns: Slab<Conn<H::Session>>,
    generations: Generations,
    handler: H,
    outbox: Outbox,
    /// True while mail is being delivered, so that a close inside delivery (which can create
    /// more mail) adds to the queue instead of recursing.
    delivering: bool,
    stats: Stats,
    /// `Config::linger_discard_limit`, within the range of the per-connection counter.
    linger_limit: u32,
    scratch: Box<[u8]>,
    /// Sources cut short by a budget or resumed after backpressure, to serve before sleeping.
    resume: Vec<Source>,
    /// Accepting failed for lack of resources (descriptors, memory): retried when a
    /// connection closes, since no new edge comes for connections already queued.
    accept_paused: bool,
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
        }
    }

    /// Serving a connection from the resume list: read until `WouldBlock`.
    const RESUME: Readiness = Readiness {
        readable: true,
        writable: false,
        read_to_would_block: true,
    };
}

impl<H: Handler> Reactor<H> {
    /// A reactor with no listeners yet; add them with [`Reactor::add_listener`].
    pub fn new(mut config: Config, handler: H) -> io::Result<Reactor<H>> {
        // A budget of zero would never make progress and spin the loop; one is the least.
        config.accept_budget = config.accept_budget.max(1);
        config.read_budget = config.read_budget.max(1);
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(poll.registry(), Source::Waker.token())?;
        let events = Events::with_capacity(config.events_capacity.max(1));
        let linger_limit = config.linger_discard_limit.min(u32::MAX as usize - 1) as u32;
        let water = Watermarks {
            high: config.high_water,
            low: config.low_water.min(config.high_water),
        };
        Ok(Reactor {
            poll,
            events,
            core: Core {
                registry,
                water,
                config,
                listeners: Vec::new(),
                conns: Slab::new(),
                generations: Generations::default(),
                handler,
                outbox: Outbox::new(),
                delivering: false,
                stats: Stats::default(),
                linger_limit,
                scratch: vec![0; SCRATCH_SIZE].into_boxed_slice(),
                resume: Vec::new(),
                accept_paused: false,
                shared: Arc::new(Shared {
                    stop: AtomicBool::new(false),
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
        Ok(())
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

    /// Runs the loop until [`Handle::stop`] or [`Context::stop_reactor`] is called, then
    /// closes every connection and the listeners and returns. Errors only when the poller
    /// itself fails; a failing connection closes alone and never stops the loop.
    pub fn run(&mut self) -> io::Result<()> {
        while !self.core.stopping() {
            let timeout = if self.core.resume.is_empty() {
                None
            } else {
                Some(Duration::ZERO)
            };
            match self.poll.poll(&mut self.events, timeout) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
            for event in self.events.iter() {
                self.core.dispatch(event);
            }
            self.core.serve_resumed();
        }
        self.core.shut_down();
        Ok(())
    }
}

impl<H: Handler> Core<H> {
    fn stopping(&self) -> bool {
        self.outbox.stop || self.shared.stop.load(Ordering::Acquire)
    }

    fn dispatch(&mut self, event: &Event) {
        match Source::from_token(event.token()) {
            // The stop flag is read at the top of the loop.
            Source::Waker => {}
            Source::Listener(index) => self.accept(index),
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

    fn accept(&mut self, index: usize) {
        for _ in 0..self.config.accept_budget {
            match self.listeners[index].socket_mut().accept() {
                Ok((stream, peer)) => self.open(stream, peer),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(error) => {
                    // EMFILE and friends: the connection stays in the kernel's queue. Retrying
                    // now would spin; the next close frees a descriptor and resumes accepting.
                    self.accept_paused = true;
                    self.stats.accept_errors += 1;
                    if self.stats.accept_errors.is_power_of_two() {
                        log::warn!(
                            "accept failed: {error} ({} accept errors so far)",
                            self.stats.accept_errors
                        );
                    }
                    return;
                }
            }
        }
        self.resume.push(Source::Listener(index));
    }

    fn open(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        let entry = self.conns.vacant_entry();
        if entry.key() > MAX_KEY {
            return; // four billion connections: drop the new one rather than alias a token
        }
        if self.config.nodelay {
            if let Err(error) = stream.set_nodelay(true) {
                log::debug!("peer={peer} TCP_NODELAY failed: {error}");
            }
        }
        let id = ConnId::new(entry.key(), self.generations.next());
        // Data that arrived with the connection is reported by the poller once registered,
        // so there is no read here.
        if let Err(error) = self
            .registry
            .register(&mut stream, id.token(), READ_INTEREST)
        {
            log::warn!("peer={peer} cannot register connection: {error}");
            return;
        }
        self.stats.accepted += 1;
        self.stats.active += 1;
        self.outbox.begin(id, true);
        let session = self
            .handler
            .on_open(&mut Context::new(&mut self.outbox, &self.stats), peer);
        entry.insert(Conn::new(stream, id.generation(), session));
        log::trace!("conn={id} peer={peer} opened");
        self.finish_callback(id);
    }

    /// Serves one readiness event (or a resumption) of a live connection.
    fn drive(&mut self, id: ConnId, ready: Readiness) {
        // Output first: room in the socket may lift throttling and let reading resume.
        if ready.writable && !self.flush(id) {
            return;
        }
        if ready.readable && self.conns[id.key()].phase.reads() {
            self.read_input(id, ready.read_to_would_block);
        }
        if self.is_live(id) {
            self.settle(id);
        }
    }

    /// Writes queued output; false if that closed the connection.
    fn flush(&mut self, id: ConnId) -> bool {
        match self.conns[id.key()].flush() {
            Ok(written) => {
                self.stats.bytes_out += written as u64;
                true
            }
            Err(error) => {
                self.close(id, CloseReason::from_error(&error));
                false
            }
        }
    }

    fn read_input(&mut self, id: ConnId, read_to_would_block: bool) {
        let mut budget = self.config.read_budget;
        loop {
            let conn = &mut self.conns[id.key()];
            let lingering = conn.phase == Phase::Lingering;
            let n = match conn.read(&mut self.scratch) {
                Ok(0) if lingering => return self.close(id, CloseReason::Closed),
                Ok(0) => return self.peer_closed(id),
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) => return self.close(id, CloseReason::from_error(&error)),
            };
            if lingering {
                conn.discarded = conn.discarded.saturating_add(n as u32);
                if conn.discarded > self.linger_limit {
                    return self.close(id, CloseReason::Closed);
                }
            } else {
                self.stats.bytes_in += n as u64;
                self.deliver(id, n);
                if !self.is_live(id) || !self.conns[id.key()].phase.reads() {
                    return;
                }
                // Short read: drained, and the next arrival raises a new edge; unless the
                // event said otherwise (see the module docs).
                if n < self.scratch.len() && !read_to_would_block {
                    return;
                }
            }
            // Reads and discards alike count against the budget.
            budget = budget.saturating_sub(n);
            if budget == 0 {
                self.resume.push(Source::Conn(id));
                return;
            }
        }
    }

    /// Hands `n` freshly read bytes (in the scratch buffer) to the handler.
    fn deliver(&mut self, id: ConnId, n: usize) {
        let conn = &mut self.conns[id.key()];
        let fresh = &self.scratch[..n];
        // Without leftovers the handler reads straight from the scratch buffer: the common
        // case copies nothing and allocates nothing.
        let buffered = !conn.input.is_empty();
        if buffered {
            conn.input.extend(fresh);
        }
        let input = if buffered {
            conn.input.as_slice()
        } else {
            fresh
        };
        self.outbox.begin(id, true);
        let consumed = self
            .handler
            .on_data(
                &mut Context::new(&mut self.outbox, &self.stats),
                &mut conn.session,
                input,
            )
            .min(input.len());
        if buffered {
            conn.input.consume(consumed);
        } else {
            conn.input.extend(&fresh[consumed..]);
        }
        if conn.input.len() > self.config.max_input {
            log::debug!(
                "conn={id} closing: {} bytes unconsumed, over max_input={}",
                conn.input.len(),
                self.config.max_input
            );
            self.outbox.close_current = true;
        }
        self.finish_callback(id);
    }

    /// The peer shut down its sending side.
    fn peer_closed(&mut self, id: ConnId) {
        let conn = &mut self.conns[id.key()];
        conn.phase = Phase::PeerClosed;
        let unconsumed = std::mem::take(&mut conn.input);
        self.outbox.begin(id, true);
        self.handler.on_peer_closed(
            &mut Context::new(&mut self.outbox, &self.stats),
            &mut conn.session,
            unconsumed.as_slice(),
        );
        self.finish_callback(id);
    }

    /// Performs what a callback about `id` asked for: its reply, its close, its mail.
    fn finish_callback(&mut self, id: ConnId) {
        if !self.outbox.reply.is_empty() {
            let result = self.conns[id.key()].send(&self.outbox.reply);
            self.outbox.reply.clear();
            match result {
                Ok(written) => self.stats.bytes_out += written as u64,
                Err(error) => {
                    self.close(id, CloseReason::from_error(&error));
                    self.deliver_mail();
                    return;
                }
            }
        }
        if self.outbox.close_current {
            let conn = &mut self.conns[id.key()];
            if conn.phase != Phase::PeerClosed {
                conn.phase = Phase::Closing;
            }
            conn.input.clear();
        }
        self.deliver_mail();
        if self.is_live(id) {
            self.settle(id);
        }
    }

    /// Delivers writes and closes that callbacks addressed to other connections.
    fn deliver_mail(&mut self) {
        if self.delivering {
            return; // the outer call picks up what was added
        }
        self.delivering = true;
        while self.outbox.has_mail() {
            let mut mail = std::mem::take(&mut self.outbox.mail);
            let bytes = std::mem::take(&mut self.outbox.mail_bytes);
            let mut offset = 0;
            for (to, len) in mail.drain(..) {
                let data = &bytes[offset..offset + len];
                offset += len;
                if !self.is_live(to) || !self.conns[to.key()].phase.accepts_output() {
                    continue;
                }
                match self.conns[to.key()].send(data) {
                    Ok(written) => {
                        self.stats.bytes_out += written as u64;
                        self.settle(to);
                    }
                    Err(error) => self.close(to, CloseReason::from_error(&error)),
                }
            }
            for to in std::mem::take(&mut self.outbox.closes) {
                if self.is_live(to) {
                    let conn = &mut self.conns[to.key()];
                    if conn.phase != Phase::PeerClosed && conn.phase != Phase::Lingering {
                        conn.phase = Phase::Closing;
                        conn.input.clear();
                    }
                    self.settle(to);
                }
            }
            if self.outbox.mail.is_empty() {
                self.outbox.mail = mail; // keep the allocations
                let mut bytes = bytes;
                bytes.clear();
                self.outbox.mail_bytes = bytes;
            }
        }
        self.delivering = false;
    }

    /// Moves the connection to its next phase and keeps the poller interest in step.
    fn settle(&mut self, id: ConnId) {
        let conn = &mut self.conns[id.key()];
        let (phase, next) = settle(conn.phase, conn.output.len(), self.water);
        conn.phase = phase;
        match next {
            Next::Stay => {}
            Next::ResumeReading => self.resume.push(Source::Conn(id)),
            Next::ShutdownWrite => {
                if let Err(error) = conn.shutdown_write() {
                    return self.close(id, CloseReason::from_error(&error));
                }
                // The peer's end of stream may already be queued, with no edge to come.
                self.resume.push(Source::Conn(id));
            }
            Next::Close => return self.close(id, CloseReason::PeerClosed),
        }
        let conn = &mut self.conns[id.key()];
        let interest = conn.interest();
        if interest != conn.registered {
            if let Err(error) = self
                .registry
                .reregister(&mut conn.stream, id.token(), interest)
            {
                return self.close(id, CloseReason::from_error(&error));
            }
            conn.registered = interest;
        }
    }

    /// Closes the connection now and tells the handler.
    fn close(&mut self, id: ConnId, reason: CloseReason) {
        // Dropping the stream closes the socket, which also removes it from the poller:
        // no deregister call needed.
        let conn = self.conns.remove(id.key());
        self.stats.active -= 1;
        self.stats.closed += 1;
        if matches!(reason, CloseReason::Error(_)) {
            self.stats.errors += 1;
        }
        log::debug!("conn={id} closed: {reason}");
        drop(conn.stream);
        if self.accept_paused {
            self.accept_paused = false;
            self.resume
                .extend((0..self.listeners.len()).map(Source::Listener));
        }
        self.outbox.begin(id, false);
        self.handler.on_close(
            &mut Context::new(&mut self.outbox, &self.stats),
            conn.session,
            reason,
        );
        self.outbox.reply.clear();
        self.deliver_mail();
    }

    fn shut_down(&mut self) {
        self.listeners.clear();
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .map(|(key, conn)| ConnId::new(key, conn.generation))
            .collect();
        for id in ids {
            if self.is_live(id) {
                self.close(id, CloseReason::Shutdown);
            }
        }
    }
}
