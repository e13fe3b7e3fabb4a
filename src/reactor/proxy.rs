//! Performs what [`crate::proxy`] reads from a connection's first bytes on a listener that
//! expects a PROXY header: the client it names replaces the balancer's address, the access
//! rules admit it or not, and the connection moves on to the stage it would have started
//! in, with the bytes after the header handed on as if just read.

use super::Server;
use crate::close_reason::CloseReason;
use crate::conn_id::ConnId;
use crate::handler::Handler;
use crate::proxy::{self, Header};

impl<H: Handler> Server<H> {
    /// `n` bytes arrived (in the scratch buffer) on a connection still owing its header.
    pub(super) fn read_proxy_header(&mut self, id: ConnId, n: usize) {
        let conn = &mut self.conns[id.key()];
        conn.input.extend(&self.scratch[..n]);
        let (len, client) = match proxy::examine(conn.input.as_slice()) {
            Header::More => return,
            Header::Invalid(why) => return self.proxy_header_failed(id, &why),
            Header::Read { len, client } => (len, client),
        };
        self.stats.proxy_headers += 1;
        let balancer = self.peer(id);
        let client = client.unwrap_or(balancer);
        let listener = self.peers.listener(id.key());
        if !(self.acceptor).admit_client(listener, client, &mut self.stats, &self.clock) {
            return self.close(id, CloseReason::Closed);
        }
        self.peers.moved(id.key(), client);
        log::trace!("conn={id} peer={balancer} PROXY header: the client is {client}");
        // What came after the header is the client's, as if read just now: the header ends
        // within this read (a header ending earlier would have been read then), so it fits
        // in the scratch buffer where it came from.
        let input = std::mem::take(&mut self.conns[id.key()].input);
        let rest = &input.as_slice()[len..];
        let after = rest.len();
        self.scratch[..after].copy_from_slice(rest);
        drop(input);
        let next = self.first_stage(listener, self.clock.tick());
        self.conns[id.key()].advance(|stage| stage.header_read(next));
        // A door stage's deadline is later than the header's, whose timer entry finds it
        // when it fires.
        if !next.before_open() {
            let held = self.conns[id.key()].output.held();
            self.outbox.begin(id, true, held);
            self.open_session(id, client);
            self.finish_callback(id);
        }
        if after > 0 && self.is_live(id) && self.conns[id.key()].stage().reads() {
            self.receive(id, after);
        }
    }

    /// No valid header: closed, with the reason logged (at most once a second).
    pub(super) fn proxy_header_failed(&mut self, id: ConnId, why: &str) {
        self.stats.proxy_errors += 1;
        if let Some(count) = self.proxy_log.hit(self.clock.now()) {
            log::warn!(
                "conn={id} peer={} closing: no valid PROXY header: {why} ({count} PROXY \
                 header errors in the last second)",
                self.peer(id)
            );
        }
        self.close(id, CloseReason::Closed);
    }
}
