//! Performing what the [`Door`](crate::auth::Door) decides about a connection that has not
//! authenticated yet: its answers go out as one callback's reply, a refusal closes it (a
//! wrong token counts toward its address's lockout), and admission opens the handler's
//! session and hands it the input that followed the `AUTH` line. Until then the handler
//! never hears of the connection, and its input is held to at most `MAX_AUTH_LINE` bytes.

use super::Server;
use crate::auth::Verdict;
use crate::handler::Handler;
use crate::ConnId;

impl<H: Handler> Server<H> {
    /// Reads the input of a connection at the door (it is in the input buffer): answers
    /// each line, and opens the session on a good token.
    pub(super) fn authenticate(&mut self, id: ConnId) {
        let Some(door) = self.door.as_mut() else {
            return;
        };
        // One callback's worth of answers, sent together, as for a handler's.
        let held = self.conns[id.key()].output.held();
        self.outbox.begin(id, true, held);
        let peer = self.peers.peer(id.key());
        let locked = self.acceptor.is_locked(peer.ip(), self.clock.tick());
        loop {
            let conn = &mut self.conns[id.key()];
            let misses = conn.stage().auth_misses();
            let input = conn.input.as_slice();
            match door.examine(input, misses, peer, locked, &mut self.outbox.reply) {
                Verdict::Wait => return self.finish_callback(id),
                Verdict::Missed { consumed } => {
                    conn.input.consume(consumed);
                    conn.missed_auth();
                }
                Verdict::Refuse { consumed, failed } => {
                    conn.input.consume(consumed);
                    if failed {
                        self.auth_failed(id);
                    }
                    // Sends what was answered and closes; the handler never hears of it.
                    self.outbox.close_current = true;
                    return self.finish_callback(id);
                }
                Verdict::Admit { consumed, name } => {
                    conn.input.consume(consumed);
                    return self.authenticated(id, name);
                }
            }
        }
    }

    /// A good token: the handler's session, then any input that came after the `AUTH` line.
    fn authenticated(&mut self, id: ConnId, name: String) {
        self.stats.auth_ok += 1;
        let peer = self.peers.peer(id.key());
        log::debug!("conn={id} peer={peer} authenticated as {name}");
        self.peers.set_identity(id.key(), name);
        self.open_session(id, peer);
        self.finish_callback(id);
        if self.is_live(id) && !self.conns[id.key()].input.is_empty() {
            self.hand_buffered_input(id);
        }
    }

    /// A wrong token (or any token from a locked-out address): a failure counted against
    /// the address.
    fn auth_failed(&mut self, id: ConnId) {
        self.stats.auth_failures += 1;
        let peer = self.peers.peer(id.key());
        let clock = &self.clock;
        (self.acceptor).auth_failed(peer.ip(), &mut self.stats, clock);
        if let Some(count) = self.auth_log.hit(self.clock.now()) {
            log::info!(
                "conn={id} peer={peer} closing: authentication failed \
                 ({count} failures in the last second)"
            );
        }
    }
}
