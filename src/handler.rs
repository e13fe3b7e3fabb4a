//! The embedding API: the [`Handler`] trait the reactor calls, and the [`Context`] it calls
//! it with.
//!
//! A handler is the protocol side of the server. The reactor owns every socket and calls the
//! handler when a connection opens (after its TLS handshake and its authentication, where
//! those apply), when bytes arrive, when the peer finishes sending, and when
//! a connection is gone. The handler never touches a socket: it answers through the context,
//! which queues its writes and closes, and the reactor performs them once the callback returns.
//! That keeps the I/O in one place and the handler testable without a network.
//!
//! Writes to the connection being served are staged in one buffer shared by all connections
//! and written with one system call after the callback, so a handler may call
//! [`Context::write`] once per message without paying a system call per message. Writes to
//! other connections ([`Context::write_to`], [`Context::write_shared`]) are queued on those
//! connections, in order, and each connection's queue goes out with one `writev` before the
//! reactor next waits for events: a callback that writes to a thousand connections makes no
//! system call, and a connection written to by a hundred callbacks in one loop iteration
//! gets one write.
//!
//! Output is bounded by `Config::high_water`, inside a callback too. A handler that produces
//! much output per message asks [`Context::backlogged`] and stops consuming input while it is
//! true; the reactor hands the rest back once the output has drained. A connection that falls
//! behind on what *others* send it is dropped ([`CloseReason::SlowReader`]). A handler whose
//! messages are costly (one line to thousands) bounds its work per callback with
//! [`Context::yield_rest`].

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use crate::close_reason::CloseReason;
use crate::conn_id::ConnId;
use crate::listener::ListenerId;
use crate::outbox::{Letter, Outbox};
use crate::stats::Stats;

/// The protocol of a server built on [`crate::Reactor`].
///
/// One handler serves every connection of a reactor; per-connection state lives in
/// [`Handler::Session`], which the reactor keeps beside the connection.
///
/// ```
/// use std::net::SocketAddr;
/// use wharf::{Context, Handler};
///
/// /// Answers every complete `\n`-terminated line with its length.
/// struct LineLength;
///
/// impl Handler for LineLength {
///     type Session = ();
///
///     fn on_open(&mut self, _ctx: &mut Context<'_>, _peer: SocketAddr) {}
///
///     fn on_data(&mut self, ctx: &mut Context<'_>, _session: &mut (), input: &[u8]) -> usize {
///         let mut consumed = 0;
///         while let Some(end) = input[consumed..].iter().position(|&b| b == b'\n') {
///             ctx.write(format!("{}\n", end).as_bytes());
///             consumed += end + 1;
///         }
///         consumed // a partial line stays buffered until the rest arrives
///     }
/// }
/// ```
pub trait Handler {
    /// State kept for each connection (use `()` for none). It is stored inline in the
    /// reactor's connection table, so its size is paid by every connection, idle or not.
    type Session;

    /// A connection was accepted from `peer` (and, on a TLS listener or with an
    /// [`Authenticator`](crate::Authenticator), completed its handshake or its `AUTH` line).
    /// Returns its session. The context may already be used to write a greeting or to close
    /// the connection.
    fn on_open(&mut self, ctx: &mut Context<'_>, peer: SocketAddr) -> Self::Session;

    /// Bytes arrived. `input` holds every byte received and not yet consumed, oldest first.
    /// Returns how many bytes of `input` were consumed; the rest stays buffered and is passed
    /// again, with more bytes after it, when more arrive. Return `input.len()` when it was all
    /// used; consume whole messages only, so a partial one waits for its remainder.
    fn on_data(
        &mut self,
        ctx: &mut Context<'_>,
        session: &mut Self::Session,
        input: &[u8],
    ) -> usize;

    /// The peer shut down its sending side (end of stream). `unconsumed` holds the bytes
    /// received but never consumed. After this call the reactor writes everything still owed
    /// to the peer and then closes the connection.
    fn on_peer_closed(
        &mut self,
        ctx: &mut Context<'_>,
        session: &mut Self::Session,
        unconsumed: &[u8],
    ) {
        let _ = (ctx, session, unconsumed);
    }

    /// The connection is gone (its socket is closed). Writes to it through `ctx` are dropped;
    /// writes to other connections are delivered.
    fn on_close(&mut self, ctx: &mut Context<'_>, session: Self::Session, reason: CloseReason) {
        let _ = (ctx, session, reason);
    }

    /// The loop is about to write what this iteration queued, then wait for events. A
    /// handler that collects work across callbacks (a chat room batching join notices, so
    /// that a thousand joins cost each member one write, not a thousand) hands it over
    /// now. The context is about no connection: use [`Context::write_to`] and
    /// [`Context::write_shared`]. Called once per loop iteration, so keep it cheap when
    /// there is nothing to do (the default does nothing).
    fn on_flush(&mut self, ctx: &mut Context<'_>) {
        let _ = ctx;
    }

    /// A datagram arrived on one of the reactor's UDP sockets ([`crate::Reactor::add_udp`]).
    /// Returns true to send `reply` (empty on entry, and an empty reply is a valid datagram;
    /// at most 65507 bytes are sent) back to `from`. By default nothing is sent.
    fn on_datagram(&mut self, from: SocketAddr, data: &[u8], reply: &mut Vec<u8>) -> bool {
        let _ = (from, data, reply);
        false
    }
}

/// What a handler can do during a callback: write to and close connections, stop the reactor,
/// read the counters, and ask about the current connection (its identity, peer address, TLS
/// version and ALPN protocol).
///
/// The "current" connection is the one the callback is about.
pub struct Context<'a> {
    outbox: &'a mut Outbox,
    stats: &'a Stats,
    conn: ConnView<'a>,
}

/// What a handler may ask about the current connection.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ConnView<'a> {
    pub(crate) identity: Option<&'a str>,
    /// The address accept gave, while it is open.
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) listener: Option<ListenerId>,
    pub(crate) tls: crate::transport::TlsInfo<'a>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(outbox: &'a mut Outbox, stats: &'a Stats) -> Context<'a> {
        Context {
            outbox,
            stats,
            conn: ConnView::default(),
        }
    }

    /// A context about a connection, with what the handler may ask about it.
    pub(crate) fn about(mut self, conn: ConnView<'a>) -> Context<'a> {
        self.conn = conn;
        self
    }

    /// The current connection.
    pub fn id(&self) -> ConnId {
        self.outbox.current
    }

    /// Who the current connection is: the name it authenticated as
    /// ([`crate::Reactor::set_authenticator`]), or the subject of its verified TLS client
    /// certificate (first DNS name, else common name); `None` otherwise. Every callback
    /// about the connection sees it, [`Handler::on_open`] included.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use wharf::{Context, Handler};
    /// struct Greeter;
    /// impl Handler for Greeter {
    ///     type Session = ();
    ///     fn on_open(&mut self, ctx: &mut Context<'_>, _peer: SocketAddr) {
    ///         let name = ctx.identity().unwrap_or("stranger").to_string();
    ///         ctx.write(format!("hello, {name}\n").as_bytes());
    ///     }
    ///     fn on_data(&mut self, _: &mut Context<'_>, _: &mut (), input: &[u8]) -> usize {
    ///         input.len()
    ///     }
    /// }
    /// ```
    pub fn identity(&self) -> Option<&str> {
        self.conn.identity
    }

    /// The current connection's peer address, as accept gave it (no system call); `None`
    /// once it closed. [`Handler::on_open`] is also given it.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.conn.peer
    }

    /// The listener the current connection came in on ([`crate::Reactor::add_listener`]
    /// returned it); `None` once it closed, and in [`Handler::on_flush`].
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use wharf::{Context, Handler, ListenerId};
    /// /// Echoes on one port, answers `pong` on the others.
    /// struct TwoPorts { echo: Option<ListenerId> }
    /// impl Handler for TwoPorts {
    ///     type Session = ();
    ///     fn on_open(&mut self, _: &mut Context<'_>, _: SocketAddr) {}
    ///     fn on_data(&mut self, ctx: &mut Context<'_>, _: &mut (), input: &[u8]) -> usize {
    ///         if ctx.listener() == self.echo {
    ///             ctx.write(input);
    ///         } else {
    ///             ctx.write(b"pong\n");
    ///         }
    ///         input.len()
    ///     }
    /// }
    /// ```
    pub fn listener(&self) -> Option<ListenerId> {
        self.conn.listener
    }

    /// Whether the current connection is over TLS.
    pub fn is_tls(&self) -> bool {
        self.conn.tls.is_tls()
    }

    /// The current connection's TLS protocol version (`"TLSv1.3"`, `"TLSv1.2"`), if it is
    /// over TLS.
    pub fn tls_version(&self) -> Option<&'static str> {
        self.conn.tls.version()
    }

    /// The ALPN protocol the current connection negotiated, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.conn.tls.alpn()
    }

    /// Whether the current connection's unsent output (queued before this callback, plus
    /// what this callback wrote to it) is over `Config::high_water`. A handler that may
    /// answer one message with much output checks it between messages and, while it is
    /// true, stops and returns how much input it consumed: the rest stays buffered, reading
    /// pauses, and the reactor passes that input to [`Handler::on_data`] again once the
    /// peer has read enough for the output to drain to `Config::low_water`.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use wharf::{Context, Handler};
    /// /// Answers each byte with a kilobyte, never more than the output limit at a time.
    /// struct Amplifier;
    /// impl Handler for Amplifier {
    ///     type Session = ();
    ///     fn on_open(&mut self, _: &mut Context<'_>, _: SocketAddr) {}
    ///     fn on_data(&mut self, ctx: &mut Context<'_>, _: &mut (), input: &[u8]) -> usize {
    ///         let mut consumed = 0;
    ///         while consumed < input.len() && !ctx.backlogged() {
    ///             ctx.write(&[b'x'; 1024]);
    ///             consumed += 1;
    ///         }
    ///         consumed
    ///     }
    /// }
    /// ```
    pub fn backlogged(&self) -> bool {
        self.outbox.current_held + self.outbox.reply.len() > self.outbox.high_water
    }

    /// Stops serving the current connection's input for now: what this callback leaves
    /// unconsumed is handed back to [`Handler::on_data`] after the reactor has served the
    /// other connections and flushed their output, even if nothing more arrives, and no more
    /// is read from it until then. For a message that costs much more than it weighs (a
    /// chat line to ten thousand members), so that one sender's burst cannot hold up the
    /// loop: consume a bounded amount of work, call this, and return.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use wharf::{Context, Handler};
    /// /// Does expensive work for each byte, at most 100 bytes per turn.
    /// struct Costly;
    /// impl Handler for Costly {
    ///     type Session = ();
    ///     fn on_open(&mut self, _: &mut Context<'_>, _: SocketAddr) {}
    ///     fn on_data(&mut self, ctx: &mut Context<'_>, _: &mut (), input: &[u8]) -> usize {
    ///         if input.len() > 100 {
    ///             ctx.yield_rest();
    ///             return 100;
    ///         }
    ///         input.len()
    ///     }
    /// }
    /// ```
    pub fn yield_rest(&mut self) {
        self.outbox.yield_rest = true;
    }

    /// Queues `data` for the current connection.
    pub fn write(&mut self, data: &[u8]) {
        if self.outbox.current_open {
            self.outbox.reply.extend_from_slice(data);
        }
    }

    /// Queues `data` for connection `id`, which may be the current one. Data for a connection
    /// that has closed, or that an earlier callback closed, is dropped. It goes out with
    /// the rest of that connection's output before the loop next waits; if its unsent output
    /// passes `Config::high_water` (after an attempt to write it), the connection is dropped
    /// as a slow reader.
    pub fn write_to(&mut self, id: ConnId, data: &[u8]) {
        if id == self.outbox.current {
            self.write(data);
        } else if !data.is_empty() {
            self.outbox.mail_bytes.extend_from_slice(data);
            self.outbox.mail.push((id, Letter::Bytes(data.len())));
        }
    }

    /// Queues a chunk shared with other connections for connection `id`: for a message sent
    /// to many (a broadcast), each recipient queues a reference to the same bytes, which are
    /// never copied per recipient. Behaves like [`Context::write_to`] otherwise.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use wharf::{ConnId, Context};
    /// fn broadcast(ctx: &mut Context<'_>, to: &[ConnId], text: &str) {
    ///     let message: Arc<[u8]> = Arc::from(text.as_bytes());
    ///     for id in to {
    ///         ctx.write_shared(*id, &message);
    ///     }
    /// }
    /// ```
    pub fn write_shared(&mut self, id: ConnId, data: &Arc<[u8]>) {
        self.write_shared_range(id, data, 0..data.len());
    }

    /// Queues the `range` part of a shared chunk for connection `id`, by reference, like
    /// [`Context::write_shared`]: for a message most recipients get whole and a few get in
    /// parts (a batch of chat lines, without the lines a recipient sent itself). A range
    /// outside the chunk is ignored.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use wharf::{ConnId, Context};
    /// /// `batch` holds `from`'s own line at `own`: everyone else gets it all.
    /// fn relay(ctx: &mut Context<'_>, to: ConnId, from: ConnId, batch: &Arc<[u8]>, own: std::ops::Range<usize>) {
    ///     if to == from {
    ///         ctx.write_shared_range(to, batch, 0..own.start);
    ///         ctx.write_shared_range(to, batch, own.end..batch.len());
    ///     } else {
    ///         ctx.write_shared(to, batch);
    ///     }
    /// }
    /// ```
    pub fn write_shared_range(&mut self, id: ConnId, data: &Arc<[u8]>, range: Range<usize>) {
        if range.is_empty() || range.end > data.len() {
            return;
        }
        if id == self.outbox.current {
            self.write(&data[range]);
        } else {
            self.outbox
                .mail
                .push((id, Letter::Shared(Arc::clone(data), range)));
        }
    }

    /// Closes the current connection once everything written to it has been sent. Input that
    /// arrives afterwards is discarded.
    pub fn close(&mut self) {
        self.outbox.close_current = true;
    }

    /// Closes connection `id` once everything written to it has been sent, including what
    /// this callback writes to it before or after this call.
    pub fn close_conn(&mut self, id: ConnId) {
        if id == self.outbox.current {
            self.close();
        } else {
            self.outbox.closes.push(id);
        }
    }

    /// Asks the reactor to stop: [`crate::Reactor::run`] returns after this callback.
    pub fn stop_reactor(&mut self) {
        self.outbox.stop = true;
    }

    /// The reactor's counters as of this callback.
    pub fn stats(&self) -> &Stats {
        self.stats
    }
}
