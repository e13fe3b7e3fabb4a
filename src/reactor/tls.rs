//! TLS on the reactor's connections (feature `tls`): the session made at accept, ciphertext
//! in and plaintext to the handler, the handler's output encrypted on its way out, the
//! handshake deadline, close_notify, and reloading certificates.
//!
//! The TLS session is sans-IO ([`crate::tls::session`]); this file moves its bytes. The
//! plaintext and ciphertext buffers are the reactor's, shared by all connections, so an idle
//! TLS connection holds only its rustls state.

use std::io::{self, Write};

use super::Core;
use crate::close_reason::CloseReason;
use crate::conn_id::ConnId;
use crate::handler::Handler;
use crate::timer;
use crate::tls::session::TlsSession;

impl<H: Handler> Core<H> {
    /// Gives a connection accepted on a TLS listener its session; the handshake starts when
    /// the ClientHello arrives. False if the session could not be made (it is then closed).
    pub(super) fn start_tls(&mut self, id: ConnId, listener: usize) -> bool {
        let Some(Some(tls)) = self.listener_tls.get(listener) else {
            return true; // a plain listener
        };
        match TlsSession::new(tls.server_config()) {
            Ok(session) => {
                self.extras.set_tls(id.key(), session);
                true
            }
            Err(error) => {
                log::warn!("conn={id} cannot start TLS: {error}");
                self.close(id, CloseReason::Closed);
                false
            }
        }
    }

    /// Bytes arrived: on a TLS connection decrypt them, answer the handshake, and hand the
    /// plaintext to the handler (or to authentication); on a plain one, `deliver` them.
    pub(super) fn receive_tls(&mut self, id: ConnId, n: usize) {
        let Some(session) = self.extras.tls_mut(id.key()) else {
            return self.deliver(id, n);
        };
        let mut plain = std::mem::take(&mut self.plain);
        let mut sealed = std::mem::take(&mut self.sealed);
        plain.clear();
        sealed.clear();
        // Decrypted in place: nothing reads the scratch buffer after this.
        let received = session.receive(&mut self.scratch[..n], &mut plain, &mut sealed);
        // What rustls answers (the rest of the handshake, session tickets, an alert) is
        // queued, not written: the handler's reply to the same read joins it, and both leave
        // in one write. Written alone, a small reply after the tickets would wait for the
        // client's delayed ACK under Nagle's algorithm (40 ms per first request).
        if !sealed.is_empty() {
            self.conns[id.key()].queue(&sealed, self.clock.tick());
        }
        self.sealed = sealed;
        match received {
            Err(error) => {
                self.tls_failed(id, &error);
            }
            Ok(received) => {
                if received.handshake_done {
                    self.handshake_done(id);
                }
                // Not after `on_open` closed it: input that came with the handshake's last
                // message is dropped, as any input is once the handler closes.
                if !plain.is_empty() && self.is_live(id) && self.conns[id.key()].stage().reads() {
                    self.deliver_bytes(id, &plain);
                }
                let reads = self.is_live(id) && self.conns[id.key()].stage().reads();
                if received.peer_closed && reads {
                    self.input_ended(id);
                }
            }
        }
        self.plain = plain;
        if self.is_live(id) && !self.conns[id.key()].output.is_empty() {
            self.flush(id);
        }
    }

    /// The handshake completed: the client certificate's subject is the connection's
    /// identity; then authentication, or the handler.
    fn handshake_done(&mut self, id: ConnId) {
        self.stats.tls_handshakes += 1;
        let Some(session) = self.extras.tls(id.key()) else {
            return;
        };
        let certified = session.client_identity();
        log::debug!(
            "conn={id} TLS handshake done: {} {}",
            session.version().unwrap_or("?"),
            certified.as_deref().unwrap_or("(no client certificate)")
        );
        let certified = match certified {
            Some(name) => {
                self.extras.set_identity(id.key(), name);
                true
            }
            None => false,
        };
        let conn = &mut self.conns[id.key()];
        // A verified client certificate is authentication enough; otherwise tokens, if any.
        if self.authenticator.is_some() && !certified {
            let by = timer::after(self.clock.tick(), self.auth_ticks);
            conn.advance(|stage| stage.authenticate_by(by));
            // The heap holds the handshake deadline, which may be later (and `schedule`
            // assumes deadlines only move later).
            return self.check_by(id, by);
        }
        let Ok(peer) = conn.stream.peer_addr() else {
            return self.close(id, CloseReason::Error(io::ErrorKind::NotConnected));
        };
        let held = self.conns[id.key()].output.held();
        self.outbox.begin(id, true, held);
        self.open_session(id, peer);
        self.finish_callback(id);
    }

    /// A TLS error (plaintext to a TLS port, a corrupt record, a failed handshake): the
    /// alert rustls made is already queued; close after it, without a word to the handler
    /// beyond the close.
    fn tls_failed(&mut self, id: ConnId, error: &rustls::Error) {
        self.stats.tls_errors += 1;
        if let Some(count) = self.tls_log.hit(self.clock.now()) {
            let peer = self.conns[id.key()].stream.peer_addr();
            let peer = peer.map_or_else(|_| "?".to_string(), |p| p.to_string());
            log::info!("conn={id} peer={peer} closing: TLS error: {error} ({count} TLS errors in the last second)");
        }
        if !self.is_live(id) {
            return;
        }
        if let Some(session) = self.extras.tls_mut(id.key()) {
            session.refuse_more_output();
        }
        self.conns[id.key()].begin_closing();
    }

    /// Encrypts `data` for a TLS connection and sends it. `None` for a plain connection.
    pub(super) fn send_sealed(&mut self, id: ConnId, data: &[u8]) -> Option<io::Result<usize>> {
        let session = self.extras.tls_mut(id.key())?;
        let mut sealed = std::mem::take(&mut self.sealed);
        sealed.clear();
        session.seal(data, &mut sealed);
        let result = self.conns[id.key()].send(&sealed, self.clock.tick());
        self.sealed = sealed;
        Some(result)
    }

    /// Encrypts `data` for a TLS connection and queues it for the next flush. False for a
    /// plain connection.
    pub(super) fn queue_sealed(&mut self, id: ConnId, data: &[u8]) -> bool {
        let Some(session) = self.extras.tls_mut(id.key()) else {
            return false;
        };
        let mut sealed = std::mem::take(&mut self.sealed);
        sealed.clear();
        session.seal(data, &mut sealed);
        self.conns[id.key()].queue(&sealed, self.clock.tick());
        self.sealed = sealed;
        true
    }

    /// Queues close_notify ahead of shutting down writing, once. True if it was queued now
    /// (the caller flushes it before shutting down); false for a plain connection or if it
    /// was already sent.
    pub(super) fn queue_close_notify(&mut self, id: ConnId) -> io::Result<bool> {
        let Some(session) = self.extras.tls_mut(id.key()) else {
            return Ok(false);
        };
        let mut sealed = std::mem::take(&mut self.sealed);
        sealed.clear();
        let queued = session.say_goodbye(&mut sealed);
        let result = self.conns[id.key()].send(&sealed, self.clock.tick());
        self.sealed = sealed;
        result.map(|_| queued)
    }

    /// Tells the reactor's TLS listeners to read their certificate files again; a broken
    /// pair is logged and the old one kept.
    pub(super) fn reload_tls(&mut self) {
        if self.listener_tls.iter().all(Option::is_none) {
            return log::info!("reload requested: no TLS listener, nothing to reload");
        }
        for (index, tls) in self.listener_tls.iter_mut().enumerate() {
            let Some(tls) = tls else { continue };
            let addr = self.listeners.get(index).map(|l| l.local_addr());
            let addr = addr.map_or_else(String::new, |a| a.to_string());
            match tls.reload() {
                Ok(true) => log::info!("TLS listener {addr}: certificate reloaded"),
                Ok(false) => {}
                Err(error) => {
                    log::error!(
                        "TLS listener {addr}: reload failed, keeping the old certificate: {error}"
                    )
                }
            }
        }
    }
}

/// A last close_notify for a TLS connection closing now, written if the socket takes it (no
/// queueing: the socket is about to close).
/// `sealed` is the reactor's ciphertext buffer, lent.
pub(super) fn farewell(
    session: &mut TlsSession,
    stream: &mio::net::TcpStream,
    sealed: &mut Vec<u8>,
) {
    sealed.clear();
    if session.say_goodbye(sealed) {
        let _ = (&*stream).write(sealed);
    }
}
