//! Driving one connection through an event: write what it owes, read, hand the input to
//! the handler (through the transport and the door first), and when its peer finishes,
//! hand over what is left. What follows a callback (its reply, the next stage, the close)
//! is in `settle.rs`; how output is queued and flushed, in `flush.rs`.

use std::io;

use mio::event::Event;

use super::Server;
use crate::close_reason::CloseReason;
use crate::conn::{Stage, SHORT_READ_DRAINS};
use crate::conn_id::{ConnId, Source};
use crate::handler::{Context, Handler};
use crate::timer::{self, NEVER};

/// What one poller event says about a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Readiness {
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// A short read does not prove the socket drained (the end of stream, an error or urgent
    /// data is flagged): read until `WouldBlock`.
    pub(crate) read_to_would_block: bool,
    /// Resumed, not an event: input left buffered while the output was backlogged is handed
    /// to the handler again first.
    pub(crate) redeliver: bool,
}

impl Readiness {
    pub(crate) fn from_event(event: &Event) -> Readiness {
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
    pub(crate) const RESUME: Readiness = Readiness {
        readable: true,
        writable: false,
        read_to_would_block: true,
        redeliver: true,
    };
}

impl<H: Handler> Server<H> {
    /// Serves one readiness event (or a resumption) of a live connection.
    pub(crate) fn drive(&mut self, id: ConnId, ready: Readiness) {
        self.handed_back = false;
        // Output first: room in the socket may lift throttling and let reading resume.
        if ready.writable && !self.flush(id) {
            return;
        }
        let conn = &self.conns[id.key()];
        if matches!(conn.stage(), Stage::Finishing { .. }) {
            // Its turn (resumed), or room again for the output that held it up.
            if ready.redeliver || (ready.writable && conn.output.held() <= self.water.low) {
                self.finish_input(id);
            }
        } else if ready.readable && conn.stage().reads() && (!ready.redeliver || self.redeliver(id))
        {
            self.read_input(id, ready.read_to_would_block);
        }
        if self.is_live(id) {
            self.settle(id);
        }
    }

    /// A connection resumed: input its handler left while its output was backlogged is
    /// handed back before anything new is read. False if it cannot read on now.
    fn redeliver(&mut self, id: ConnId) -> bool {
        let conn = &self.conns[id.key()];
        if matches!(conn.stage(), Stage::Open { .. }) && !conn.input.is_empty() {
            self.hand_buffered_input(id);
        }
        let yielded = std::mem::take(&mut self.handed_back);
        !yielded && self.is_live(id) && self.reads_on(id)
    }

    /// Whether reading may go on: the stage reads and the output is within the limit.
    fn reads_on(&self, id: ConnId) -> bool {
        let conn = &self.conns[id.key()];
        conn.stage().reads() && conn.output.held() <= self.water.high
    }

    pub(super) fn read_input(&mut self, id: ConnId, read_to_would_block: bool) {
        let mut budget = self.config.read_budget;
        loop {
            let conn = &mut self.conns[id.key()];
            let lingering = matches!(conn.stage(), Stage::Lingering { .. });
            let n = match conn.read(&mut self.scratch, self.clock.tick()) {
                Ok(0) if lingering => return self.close(id, CloseReason::Closed),
                Ok(0) if matches!(conn.stage(), Stage::ProxyHeader { .. }) => {
                    return self.proxy_header_failed(id, "the stream ended before it");
                }
                Ok(0) => return self.end_of_stream(id),
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) => return self.close(id, CloseReason::from_error(&error)),
            };
            if lingering {
                if !conn.discard(n, self.linger_limit) {
                    return self.close(id, CloseReason::Closed);
                }
            } else {
                self.stats.bytes_in += n as u64;
                self.access_log.read(id.key(), n);
                if matches!(conn.stage(), Stage::ProxyHeader { .. }) {
                    self.read_proxy_header(id, n); // then `receive` what follows it
                } else {
                    self.receive(id, n); // TLS or plain, then `hand_read`
                }
                if !self.is_live(id) || std::mem::take(&mut self.handed_back) {
                    return; // closed, or its input waits on the resume list
                }
                // Closing, or output past the high-water mark (settle will throttle): stop.
                if !self.reads_on(id) {
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
    pub(super) fn hand_read(&mut self, id: ConnId, n: usize) {
        // Nothing the handler's callback leads to reads into the scratch buffer (reads
        // happen only here, in `read_input`, in `refuse` and for UDP), so it can be lent out.
        let scratch = std::mem::take(&mut self.scratch);
        self.hand_input(id, &scratch[..n]);
        self.scratch = scratch;
    }

    /// Hands `fresh` bytes to the handler, or to authentication while it is pending.
    pub(super) fn hand_input(&mut self, id: ConnId, fresh: &[u8]) {
        let conn = &mut self.conns[id.key()];
        match conn.stage() {
            Stage::Authenticating { .. } => {
                conn.input.extend(fresh);
                return self.authenticate(id);
            }
            // TLS hands over no plaintext before its handshake is done (and the stage has
            // moved on): nothing to keep.
            Stage::Handshaking { .. } => return,
            _ => {}
        }
        // Without leftovers the handler reads straight from the read buffer: the common case
        // copies nothing and allocates nothing.
        if conn.input.is_empty() {
            return self.call_on_data(id, Some(fresh));
        }
        conn.input.extend(fresh);
        self.call_on_data(id, None);
    }

    /// Hands the input buffer (leftovers and what was added to them) to the handler.
    pub(super) fn hand_buffered_input(&mut self, id: ConnId) {
        self.call_on_data(id, None);
    }

    /// `Handler::on_data` over `fresh`, or over the input buffer when there is none; what it
    /// leaves unconsumed stays in the input buffer.
    fn call_on_data(&mut self, id: ConnId, fresh: Option<&[u8]>) {
        let conn = &mut self.conns[id.key()];
        let Some(session) = conn.session.as_mut() else {
            return;
        };
        let view = super::peers::view(&self.peers, &self.transports, id.key());
        let input = fresh.unwrap_or(conn.input.as_slice());
        self.outbox.begin(id, true, conn.output.held());
        let consumed = self
            .handler
            .on_data(
                &mut Context::new(&mut self.outbox, &self.stats).about(view),
                session,
                input,
            )
            .min(input.len());
        match fresh {
            Some(fresh) => conn.input.extend(&fresh[consumed..]),
            None => conn.input.consume(consumed),
        }
        // Input left because the output is backlogged, or because the handler yielded,
        // must be handed back even if no more arrives: once the output drains (settle
        // resumes a throttled connection), or after the others had their turn.
        let hand_back = !conn.input.is_empty()
            && (self.outbox.yield_rest
                || self.outbox.current_held + self.outbox.reply.len() > self.water.high);
        // An unfinished message has `message` to complete, from the last time the handler
        // made progress (so a client pipelining requests, or one whose output is backlogged,
        // is never taken for a slowloris).
        let waiting = !conn.input.is_empty();
        if !waiting || consumed > 0 {
            conn.wait_for_message(NEVER);
        }
        let open = conn.stage().takes_messages();
        let (message_by, timeout) = (conn.stage().message_by(), self.timeouts.message);
        if let (true, true, NEVER, Some(ticks)) = (open, waiting, message_by, timeout) {
            let due = timer::after(self.clock.tick(), ticks);
            conn.wait_for_message(due);
            self.check_by(id, due);
        }
        self.check_input_limit(id);
        self.finish_callback(id);
        if hand_back && self.is_live(id) {
            let conn = &self.conns[id.key()];
            let resumable = conn.stage().reads() || matches!(conn.stage(), Stage::Finishing { .. });
            if resumable && conn.output.held() <= self.water.high {
                // A handler that yielded has done a turn's worth of work (a burst to a big
                // room): it goes again once what it queued has been flushed to everyone,
                // so it cannot refill the queues faster than they drain and the others'
                // lines wait behind one turn, not many.
                if self.outbox.yield_rest {
                    self.output.wait_for_flush(id);
                } else {
                    self.resume.push(Source::Conn(id));
                }
                self.handed_back = true;
            }
        }
    }

    /// A message that never completes must not grow the server: past `max_input`
    /// unconsumed bytes the connection is closed.
    fn check_input_limit(&mut self, id: ConnId) {
        let unconsumed = self.conns[id.key()].input.len();
        if unconsumed > self.config.max_input {
            log::debug!(
                "conn={id} closing: {unconsumed} bytes unconsumed, over max_input={}",
                self.config.max_input
            );
            self.outbox.close_current = true;
        }
    }

    /// The TCP stream ended. On a TLS connection that is a truncation: a peer that finished
    /// cleanly sent close_notify first, which ended its stream already (`receive`, in tls.rs).
    fn end_of_stream(&mut self, id: ConnId) {
        if !self.transports.is_tls(id.key()) {
            return self.input_ended(id);
        }
        let conn = &mut self.conns[id.key()];
        if !conn.input.is_empty() {
            log::debug!(
                "conn={id} TLS stream ended without close_notify: {} bytes of unterminated \
                 input dropped",
                conn.input.len()
            );
        }
        conn.input.clear();
        self.peer_closed(id);
        if self.is_live(id) {
            self.conns[id.key()].advance(Stage::truncated);
        }
    }

    /// The peer finished sending (a FIN, or a TLS close_notify). Input it sent before, which
    /// the handler has not taken yet (it yielded, or its output is backlogged), is handed to
    /// it first, a turn at a time as before: only then is it told of the end, with what is
    /// left (a last unterminated line). Telling it at once would hand it many messages as
    /// one "rest".
    pub(super) fn input_ended(&mut self, id: ConnId) {
        let conn = &mut self.conns[id.key()];
        if conn.session.is_none() || conn.input.is_empty() {
            return self.peer_closed(id);
        }
        conn.advance(Stage::finish);
        // Already waiting on the resume list (the read that brought the end was handed
        // back): its turn comes there.
        if !std::mem::take(&mut self.handed_back) {
            self.finish_input(id);
        }
    }

    /// One turn of handing a finished peer's input to the handler; once it takes no more
    /// (or all), `on_peer_closed`.
    fn finish_input(&mut self, id: ConnId) {
        let before = self.conns[id.key()].input.len();
        if before > 0 {
            self.hand_buffered_input(id);
            if !self.is_live(id) {
                return;
            }
        }
        let yielded = std::mem::take(&mut self.handed_back);
        let conn = &mut self.conns[id.key()];
        if !matches!(conn.stage(), Stage::Finishing { .. }) {
            return; // the handler closed it
        }
        let progress = conn.input.len() < before;
        let backlogged = conn.output.held() > self.water.high;
        if !conn.input.is_empty() && backlogged {
            // Its next turn comes when the output drains, whichever way it drains.
            conn.advance(Stage::wait_for_output);
        } else if conn.input.is_empty() || !(progress && yielded) {
            self.peer_closed(id);
        }
    }

    /// The peer shut down its sending side: the handler hears of it, with what it left.
    pub(super) fn peer_closed(&mut self, id: ConnId) {
        let conn = &mut self.conns[id.key()];
        conn.advance(Stage::peer_closed);
        let unconsumed = std::mem::take(&mut conn.input);
        self.outbox.begin(id, true, conn.output.held());
        // A connection that never authenticated has no session: nothing to tell.
        if let Some(session) = conn.session.as_mut() {
            let view = super::peers::view(&self.peers, &self.transports, id.key());
            self.handler.on_peer_closed(
                &mut Context::new(&mut self.outbox, &self.stats).about(view),
                session,
                unconsumed.as_slice(),
            );
        }
        self.finish_callback(id);
    }
}
