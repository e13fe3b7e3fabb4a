//! TLS on the reactor's connections, through [`Transports`](crate::transport::Transports):
//! ciphertext in and plaintext to the handler, the handler's output encrypted on its way
//! out, the handshake's end, close_notify, reloading certificates. One code path with or
//! without the `tls` feature: without it no connection is TLS and these paths are dead.

use std::io;

use super::Server;
use crate::close_reason::CloseReason;
use crate::conn_id::ConnId;
use crate::handler::Handler;
use crate::timer;

impl<H: Handler> Server<H> {
    /// Gives a connection accepted on a TLS listener its session; the handshake starts when
    /// the ClientHello arrives. False if the session could not be made (it is then closed).
    pub(super) fn start_transport(&mut self, id: ConnId, listener: usize) -> bool {
        match self.transports.start(id.key(), listener) {
            Ok(()) => true,
            Err(error) => {
                log::warn!("conn={id} cannot start TLS: {error}");
                self.close(id, CloseReason::Closed);
                false
            }
        }
    }

    /// `n` bytes arrived in the scratch buffer: on a TLS connection decrypt them, answer the
    /// handshake, and hand the plaintext on; on a plain one, `hand_read` them as they are.
    pub(super) fn receive(&mut self, id: ConnId, n: usize) {
        if !self.transports.is_tls(id.key()) {
            return self.hand_read(id, n);
        }
        // Decrypted in place: nothing reads the scratch buffer after this.
        let received = self.transports.receive(id.key(), &mut self.scratch[..n]);
        // What TLS answers (the rest of the handshake, session tickets, an alert) is queued,
        // not written: the handler's reply to the same read joins it, and both leave in one
        // write. Written alone, a small reply after the tickets would wait for the client's
        // delayed ACK under Nagle's algorithm (40 ms per first request).
        let answer = self.transports.sealed();
        if !answer.is_empty() {
            self.conns[id.key()].queue(answer, self.clock.tick());
        }
        if let Some(error) = received.error {
            self.tls_failed(id, &error);
        } else {
            if received.handshake_done {
                self.handshake_done(id);
            }
            // Not after `on_open` closed it: input that came with the handshake's last
            // message is dropped, as any input is once the handler closes.
            let plain = self.transports.take_plain();
            if !plain.is_empty() && self.is_live(id) && self.conns[id.key()].stage().reads() {
                self.hand_input(id, &plain);
            }
            self.transports.restore_plain(plain);
            let reads = self.is_live(id) && self.conns[id.key()].stage().reads();
            if received.peer_closed && reads {
                self.input_ended(id);
            }
        }
        if self.is_live(id) && !self.conns[id.key()].output.is_empty() {
            self.flush(id);
        }
    }

    /// The handshake completed: the client certificate's subject is the connection's
    /// identity; then authentication, or the handler.
    fn handshake_done(&mut self, id: ConnId) {
        self.stats.tls_handshakes += 1;
        let handshake = self.transports.handshake(id.key());
        log::debug!(
            "conn={id} TLS handshake done: {} {}",
            handshake.version.unwrap_or("?"),
            handshake
                .identity
                .as_deref()
                .unwrap_or("(no client certificate)")
        );
        let certified = match handshake.identity {
            Some(name) => {
                self.peers.set_identity(id.key(), name);
                true
            }
            None => false,
        };
        let door_timeout = self
            .door_for(self.peers.listener(id.key()))
            .map(|door| door.timeout);
        let conn = &mut self.conns[id.key()];
        // A verified client certificate is authentication enough; otherwise tokens, if any.
        if let (Some(timeout), false) = (door_timeout, certified) {
            let by = timer::after(self.clock.tick(), timeout);
            conn.advance(|stage| stage.authenticate_by(by));
            // The heap holds the handshake deadline, which may be later (and `schedule`
            // assumes deadlines only move later).
            return self.check_by(id, by);
        }
        let peer = self.peer(id);
        let held = self.conns[id.key()].output.held();
        self.outbox.begin(id, true, held);
        self.open_session(id, peer);
        self.finish_callback(id);
    }

    /// A TLS error (plaintext to a TLS port, a corrupt record, a failed handshake): the
    /// alert is already queued; close after it, without a word to the handler beyond the
    /// close.
    fn tls_failed(&mut self, id: ConnId, error: &str) {
        self.stats.tls_errors += 1;
        if let Some(count) = self.tls_log.hit(self.clock.now()) {
            let peer = self.peer(id);
            log::info!(
                "conn={id} peer={peer} closing: TLS error: {error} ({count} TLS errors in the \
                 last second)"
            );
        }
        if self.is_live(id) {
            self.conns[id.key()].begin_closing();
        }
    }

    /// Encrypts `data` for a TLS connection and sends it. `None` for a plain connection.
    pub(super) fn send_sealed(&mut self, id: ConnId, data: &[u8]) -> Option<io::Result<usize>> {
        let sealed = self.transports.seal(id.key(), data)?;
        Some(self.conns[id.key()].send(sealed, self.clock.tick()))
    }

    /// Encrypts `data` for a TLS connection and queues it for the next flush. False for a
    /// plain connection.
    pub(super) fn queue_sealed(&mut self, id: ConnId, data: &[u8]) -> bool {
        let Some(sealed) = self.transports.seal(id.key(), data) else {
            return false;
        };
        self.conns[id.key()].queue(sealed, self.clock.tick());
        true
    }

    /// Sends close_notify ahead of shutting down writing, once. True if it was made now (the
    /// caller flushes it before shutting down); false for a plain connection or if it was
    /// already sent.
    pub(super) fn queue_close_notify(&mut self, id: ConnId) -> io::Result<bool> {
        let Some(goodbye) = self.transports.close_notify(id.key()) else {
            return Ok(false);
        };
        self.conns[id.key()].send(goodbye, self.clock.tick())?;
        Ok(true)
    }

    /// Tells the reactor's TLS listeners to read their certificate files again.
    pub(crate) fn reload_tls(&mut self) {
        let acceptor = &self.acceptor;
        self.transports.reload(|index| acceptor.local_addr(index));
    }
}
