//! Accepting connections: the accept loop and its budget, the connection limit, running out
//! of file descriptors, and opening a connection.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;

use super::Core;
use crate::access::Refusal;
use crate::conn::{Conn, Stage, READ_INTEREST};
use crate::conn_id::{ConnId, Source, MAX_KEY};
use crate::handler::{Context, Handler};
use crate::timer;

/// How long accepting pauses when it failed and no spare descriptor could make room.
const ACCEPT_RETRY_TICKS: u32 = 10; // 1 s

/// Refusal sent to a connection shed while the process is out of file descriptors.
const OUT_OF_FDS_LINE: &[u8] = b"ERR server full (out of file descriptors)\n";

impl<H: Handler> Core<H> {
    pub(super) fn accept(&mut self, index: usize) {
        if index >= self.listeners.len() {
            return; // closed by a drain since it was put on the resume list
        }
        for _ in 0..self.config.accept_budget {
            match self.listeners[index].socket_mut().accept() {
                Ok((stream, peer)) => {
                    // Cheapest refusal first: the access rules need no buffer and no byte.
                    let admitted = self.access.admit(peer.ip(), self.clock.tick());
                    self.plan_access_sweep();
                    if let Err(refusal) = admitted {
                        self.refuse_access(stream, peer, refusal);
                    } else if self.stats.active >= self.config.max_conns as u64 {
                        self.release_ip(peer.ip());
                        let line = std::mem::take(&mut self.full_line);
                        self.refuse(index, stream, peer, &line, "connection limit reached");
                        self.full_line = line;
                    } else {
                        self.open(index, stream, peer);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(error) => {
                    self.stats.accept_errors += 1;
                    if let Some(count) = self.accept_error_log.hit(self.clock.now()) {
                        log::warn!(
                            "accept failed: {error} ({count} failures in the last second); \
                             see `ulimit -n` and docs/OPERATIONS.md"
                        );
                    }
                    if is_out_of_descriptors(&error) {
                        match self.shed(index) {
                            Shed::One => continue,
                            // Linux reserves the descriptor before it looks at the queue, so
                            // EMFILE can mean "nothing waiting": the next arrival is an edge.
                            Shed::QueueEmpty => return,
                            Shed::Failed => {}
                        }
                    }
                    // Retrying now would spin. The next close frees a descriptor and resumes
                    // accepting; the timer covers what a close cannot (ENFILE cleared by
                    // another process, a failure of another kind).
                    self.accept_paused = true;
                    self.accept_retry_at = timer::after(self.clock.tick(), ACCEPT_RETRY_TICKS)
                        .min(self.accept_retry_at);
                    return;
                }
            }
        }
        self.resume.push(Source::Listener(index));
    }

    /// Out of descriptors: closes the spare one to make room, accepts the waiting connection
    /// and refuses it, then takes the spare back. The client learns at once that the server
    /// is full, instead of waiting in the kernel's queue, and the listener is drained, so the
    /// loop does not wake for it again and again.
    fn shed(&mut self, index: usize) -> Shed {
        let Some(spare) = self.spare_fd.take() else {
            return Shed::Failed;
        };
        drop(spare);
        let shed = match self.listeners[index].socket_mut().accept() {
            Ok((stream, peer)) => {
                self.refuse(
                    index,
                    stream,
                    peer,
                    OUT_OF_FDS_LINE,
                    "out of file descriptors",
                );
                Shed::One
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Shed::QueueEmpty,
            Err(_) => Shed::Failed,
        };
        self.spare_fd = File::open("/dev/null").ok();
        shed
    }

    /// Closes a connection the access rules refuse, at once and without a word: an
    /// address outside the allow-list learns nothing, and costs nothing more.
    fn refuse_access(&mut self, stream: TcpStream, peer: SocketAddr, refusal: Refusal) {
        let why = match refusal {
            Refusal::NotAllowed => {
                self.stats.refused_not_allowed += 1;
                "not in the allow-list"
            }
            Refusal::TooManyFromIp => {
                self.stats.refused_per_ip += 1;
                "too many connections from this address"
            }
            Refusal::LockedOut => {
                self.stats.refused_locked_out += 1;
                "locked out after failed authentications"
            }
            Refusal::RateLimited => {
                self.stats.refused_rate_limited += 1;
                "connecting faster than --max-accept-rate"
            }
        };
        drop(stream);
        if let Some(count) = self.access_log.hit(self.clock.now()) {
            log::warn!(
                "peer={peer} refused: {why} ({count} refused by access rules in the last second)"
            );
        }
    }

    /// Forgets a connection counted by the per-address limit.
    pub(super) fn release_ip(&mut self, ip: std::net::IpAddr) {
        if self.access.counts() {
            self.access.release(ip);
        }
    }

    /// Sends `line` to a connection the server will not serve, and closes it.
    fn refuse(
        &mut self,
        listener: usize,
        stream: TcpStream,
        peer: SocketAddr,
        line: &[u8],
        why: &str,
    ) {
        self.stats.rejected += 1;
        // A fresh socket's send buffer is empty: one write either takes the whole line or
        // the peer is already gone. Either way there is nothing more to do. A TLS client
        // expects a handshake, not a line of text: it just sees the close.
        if !self.is_tls_listener(listener) {
            let _ = (&stream).write(line);
        }
        // Closing with unread input would answer it with a reset, which can destroy the line
        // before the client reads it; clients often send at once, so read what came.
        let _ = (&stream).read(&mut self.scratch);
        if let Some(count) = self.reject_log.hit(self.clock.now()) {
            log::warn!(
                "peer={peer} refused: {why} ({count} refused in the last second, {} active)",
                self.stats.active
            );
        }
    }

    pub(super) fn open(&mut self, index: usize, mut stream: TcpStream, peer: SocketAddr) {
        let now = self.clock.tick();
        // The handler hears of the connection once it is through the door: its TLS
        // handshake, then its AUTH line, when the listener and the reactor ask for them.
        let stage = match (self.handshake_by(index, now), &self.authenticator) {
            (Some(by), _) => Stage::Handshaking { by },
            (None, Some(_)) => Stage::Authenticating {
                by: timer::after(now, self.auth_ticks),
                misses: 0,
            },
            (None, None) => Stage::open(),
        };
        let entry = self.conns.vacant_entry();
        if entry.key() > MAX_KEY {
            // Four billion connections: drop the new one rather than alias a token.
            self.stats.rejected += 1;
            self.release_ip(peer.ip());
            return;
        }
        let listener = &self.listeners[index];
        if let Err(error) = listener.prepare(&stream) {
            log::debug!("peer={peer} cannot set TCP options: {error}");
        }
        let id = ConnId::new(entry.key(), self.generations.next());
        // Data that arrived with the connection is reported by the poller once registered,
        // so there is no read here.
        if let Err(error) = self
            .registry
            .register(&mut stream, id.token(), READ_INTEREST)
        {
            self.stats.accept_errors += 1;
            self.release_ip(peer.ip());
            if let Some(count) = self.accept_error_log.hit(self.clock.now()) {
                log::warn!(
                    "peer={peer} cannot register connection: {error} ({count} in the last second)"
                );
            }
            return;
        }
        self.stats.accepted += 1;
        self.stats.active += 1;
        entry.insert(Conn::new(stream, id.generation(), now, stage));
        if self.access.counts() {
            if self.peer_ips.len() <= id.key() {
                self.peer_ips.resize(id.key() + 1, None);
            }
            self.peer_ips[id.key()] = Some(peer.ip());
        }
        log::trace!("conn={id} peer={peer} opened");
        #[cfg(feature = "tls")]
        if !self.start_tls(id, index) {
            return;
        }
        let held = self.conns[id.key()].output.held();
        self.outbox.begin(id, true, held);
        if !stage.at_the_door() {
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
        let view = self.extras.view(id.key(), Some(&conn.stream));
        let session = self.handler.on_open(
            &mut Context::new(&mut self.outbox, &self.stats).about(view),
            peer,
        );
        conn.open_session(session);
    }
}

impl<H: Handler> Core<H> {
    /// By when a connection accepted on listener `index` must complete its TLS handshake;
    /// `None` on a plain listener.
    fn handshake_by(&self, index: usize, now: timer::Tick) -> Option<timer::Tick> {
        #[cfg(feature = "tls")]
        return self
            .is_tls_listener(index)
            .then(|| timer::after(now, self.tls_ticks));
        #[cfg(not(feature = "tls"))]
        {
            let _ = (index, now);
            None
        }
    }

    fn is_tls_listener(&self, index: usize) -> bool {
        #[cfg(feature = "tls")]
        return self.listener_tls.get(index).is_some_and(Option::is_some);
        #[cfg(not(feature = "tls"))]
        {
            let _ = index;
            false
        }
    }
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
