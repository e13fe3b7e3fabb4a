//! Opening connections: the accept loop and its budget hand each connection the
//! [`Acceptor`](crate::acceptor::Acceptor) admits to `open`, which registers it, gives it
//! its stage and its transport, and tells the handler (at once, or once through the door).

use std::net::SocketAddr;

use mio::net::TcpStream;

use super::Server;
use crate::acceptor::Accepted;
use crate::auth::Door;
use crate::conn::{Conn, Stage, READ_INTEREST};
use crate::conn_id::{ConnId, Source, MAX_KEY};
use crate::handler::{Context, Handler};
use crate::listener::ListenerId;
use crate::timer;

impl<H: Handler> Server<H> {
    /// Accepts from listener `index` until nothing waits, or the budget is spent (then it
    /// goes on the resume list, so established connections get their turn).
    pub(crate) fn accept(&mut self, index: usize) {
        let tls = self.transports.is_tls_listener(index);
        for _ in 0..self.config.accept_budget {
            let (stats, clock, scratch) = (&mut self.stats, &self.clock, &mut self.scratch);
            match (self.acceptor).accept(index, tls, stats, clock, scratch) {
                Accepted::Conn(stream, peer) => self.open(index, stream, peer),
                Accepted::Refused => {}
                Accepted::Done => return,
            }
        }
        self.resume.push(Source::Listener(index));
    }

    pub(super) fn open(&mut self, index: usize, mut stream: TcpStream, peer: SocketAddr) {
        let now = self.clock.tick();
        // The acceptor numbers at most `ListenerId::MAX` listeners.
        let listener = ListenerId::new(index).unwrap_or(ListenerId::FIRST);
        let stage = match self.acceptor.expects_proxy(listener) {
            true => Stage::ProxyHeader {
                by: timer::after(now, self.timeouts.proxy_header),
            },
            false => self.first_stage(listener, now),
        };
        let entry = self.conns.vacant_entry();
        if entry.key() > MAX_KEY {
            // Four billion connections: drop the new one rather than alias a token.
            self.stats.rejected += 1;
            self.acceptor.release_unopened(listener, peer.ip());
            return;
        }
        self.acceptor.prepare(index, &stream, peer);
        let id = ConnId::new(entry.key(), self.generations.next());
        // Data that arrived with the connection is reported by the poller once registered,
        // so there is no read here.
        if let Err(error) = self
            .registry
            .register(&mut stream, id.token(), READ_INTEREST)
        {
            let clock = &self.clock;
            (self.acceptor).register_failed(listener, peer, &error, &mut self.stats, clock);
            return;
        }
        self.stats.accepted += 1;
        self.stats.active += 1;
        self.acceptor.opened(listener);
        entry.insert(Conn::new(stream, id.generation(), now, stage));
        self.peers.opened(id.key(), peer, listener);
        self.access_log.opened(id.key(), self.clock.now());
        log::trace!("conn={id} peer={peer} opened");
        if !self.start_transport(id, index) {
            return;
        }
        let held = self.conns[id.key()].output.held();
        self.outbox.begin(id, true, held);
        if !stage.before_open() {
            self.open_session(id, peer);
        }
        self.finish_callback(id);
        if self.is_live(id) {
            self.settle(id);
        }
    }

    /// Tells the handler of connection `id`, within a callback already begun, and keeps the
    /// session it returns.
    pub(super) fn open_session(&mut self, id: ConnId, peer: SocketAddr) {
        let conn = &mut self.conns[id.key()];
        let view = super::peers::view(&self.peers, &self.transports, id.key());
        let session = self.handler.on_open(
            &mut Context::new(&mut self.outbox, &self.stats).about(view),
            peer,
        );
        conn.open_session(session);
    }
}

impl<H: Handler> Server<H> {
    /// Where a connection on `listener` starts, after its PROXY header if it sends one. The
    /// handler hears of it once it is through the door: its TLS handshake, then its AUTH
    /// line, when the listener and the reactor ask for them.
    pub(super) fn first_stage(&self, listener: ListenerId, now: timer::Tick) -> Stage {
        match (
            self.handshake_by(listener.index(), now),
            self.door_for(listener),
        ) {
            (Some(by), _) => Stage::Handshaking { by },
            (None, Some(door)) => Stage::Authenticating {
                by: timer::after(now, door.timeout),
                misses: 0,
            },
            (None, None) => Stage::open(),
        }
    }

    /// The door connections on `listener` pass: the authenticator's, unless the listener
    /// is exempt from the rules.
    pub(super) fn door_for(&self, listener: ListenerId) -> Option<&Door> {
        let door = self.door.as_ref()?;
        (!self.acceptor.is_exempt(listener)).then_some(door)
    }

    /// By when a connection accepted on listener `index` must complete its TLS handshake;
    /// `None` on a plain listener.
    fn handshake_by(&self, index: usize, now: timer::Tick) -> Option<timer::Tick> {
        self.transports
            .is_tls_listener(index)
            .then(|| timer::after(now, self.timeouts.handshake))
    }
}
