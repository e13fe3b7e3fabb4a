//! Driving one connection: flush, read, hand input to the handler, write its reply, queue
//! its mail, settle the phase, close; and the flush of every connection's queued output
//! once per loop iteration.
//!
//! The output path, in one place:
//! - **A reply** (what a callback writes to the connection it is about) goes out at once,
//!   straight from the shared reply buffer, when nothing is queued for that connection. It
//!   answers a read just made, so writes never outnumber reads, and a request/response
//!   round trip costs one `write` and no copy. Otherwise it joins the queue.
//! - **Mail** (writes to other connections) is only queued: copied bytes, or a shared chunk
//!   by reference; over TLS, sealed for the recipient. The recipient goes on the pending
//!   list once.
//! - **The flush**: before the loop polls again, the oldest connections on the pending list
//!   (a slice: `flush_budget`, or a quarter of the list) each write their whole queue with
//!   one `writev` and settle (Redis's pending-writes list, which it flushes before
//!   sleeping). So a member of a busy room gets one write per turn of the list, whatever
//!   number of lines reached it.
//! - **The bound**: a queue that passes `high_water` (memory held, overhead included) is
//!   written at once; if the socket does not take enough, a recipient of mail is dropped as a
//!   slow reader, and the connection being served is throttled (its handler saw
//!   [`Context::backlogged`](crate::Context::backlogged) and left its input buffered).

use std::io;
use std::ops::Range;
use std::sync::Arc;

use super::{Core, Readiness};
use crate::close_reason::CloseReason;
use crate::conn::{Next, Stage};
use crate::conn_id::{ConnId, Source};
use crate::handler::{ConnView, Context, Handler, Letter};
use crate::timer::{self, NEVER};

impl<H: Handler> Core<H> {
    /// Serves one readiness event (or a resumption) of a live connection.
    pub(super) fn drive(&mut self, id: ConnId, ready: Readiness) {
        self.handed_back = false;
        // Output first: room in the socket may lift throttling and let reading resume.
        if ready.writable && !self.flush(id) {
            return;
        }
        let conn = &self.conns[id.key()];
        if conn.stage() == Stage::Finishing {
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
            self.deliver_buffered(id);
        }
        let yielded = std::mem::take(&mut self.handed_back);
        !yielded && self.is_live(id) && self.reads_on(id)
    }

    /// Whether reading may go on: the phase reads and the output is within the limit.
    fn reads_on(&self, id: ConnId) -> bool {
        let conn = &self.conns[id.key()];
        conn.stage().reads() && conn.output.held() <= self.water.high
    }

    /// Writes queued output; false if that closed the connection.
    pub(super) fn flush(&mut self, id: ConnId) -> bool {
        if self.conns[id.key()].output.is_empty() {
            return true;
        }
        self.stats.writes += 1;
        match self.conns[id.key()].flush(self.clock.tick()) {
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

    pub(super) fn read_input(&mut self, id: ConnId, read_to_would_block: bool) {
        let mut budget = self.config.read_budget;
        loop {
            let conn = &mut self.conns[id.key()];
            let lingering = matches!(conn.stage(), Stage::Lingering { .. });
            let n = match conn.read(&mut self.scratch, self.clock.tick()) {
                Ok(0) if lingering => return self.close(id, CloseReason::Closed),
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
                #[cfg(feature = "tls")]
                self.receive_tls(id, n); // plain connections go on to `deliver`
                #[cfg(not(feature = "tls"))]
                self.deliver(id, n);
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
    pub(super) fn deliver(&mut self, id: ConnId, n: usize) {
        // Nothing the handler's callback leads to reads into the scratch buffer (reads
        // happen only here, in `read_input`, in `refuse` and for UDP), so it can be lent out.
        let scratch = std::mem::take(&mut self.scratch);
        self.deliver_bytes(id, &scratch[..n]);
        self.scratch = scratch;
    }

    /// Hands `fresh` bytes to the handler, or to authentication while it is pending.
    pub(super) fn deliver_bytes(&mut self, id: ConnId, fresh: &[u8]) {
        let conn = &mut self.conns[id.key()];
        if conn.stage().at_the_door() {
            conn.input.extend(fresh);
            return self.authenticate(id);
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
    pub(super) fn deliver_buffered(&mut self, id: ConnId) {
        self.call_on_data(id, None);
    }

    /// `Handler::on_data` over `fresh`, or over the input buffer when there is none; what it
    /// leaves unconsumed stays in the input buffer.
    fn call_on_data(&mut self, id: ConnId, fresh: Option<&[u8]>) {
        let conn = &mut self.conns[id.key()];
        let Some(session) = conn.session.as_mut() else {
            return;
        };
        let view = self.extras.view(id.key(), Some(&conn.stream));
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
        let open = matches!(conn.stage(), Stage::Open { .. } | Stage::Throttled { .. });
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
            let resumable = conn.stage().reads() || conn.stage() == Stage::Finishing;
            if resumable && conn.output.held() <= self.water.high {
                // A handler that yielded has done a turn's worth of work (a burst to a big
                // room): it goes again once what it queued has been flushed to everyone,
                // so it cannot refill the queues faster than they drain and the others'
                // lines wait behind one turn, not many.
                if self.outbox.yield_rest {
                    self.yielded.push(id);
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
    /// cleanly sent close_notify first, which ended its stream already (`receive_tls`).
    fn end_of_stream(&mut self, id: ConnId) {
        if !self.extras.is_tls(id.key()) {
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
            self.deliver_buffered(id);
            if !self.is_live(id) {
                return;
            }
        }
        let yielded = std::mem::take(&mut self.handed_back);
        let conn = &self.conns[id.key()];
        if conn.stage() != Stage::Finishing {
            return; // the handler closed it
        }
        let progress = conn.input.len() < before;
        let backlogged = conn.output.held() > self.water.high;
        let waits = !conn.input.is_empty() && ((progress && yielded) || backlogged);
        if !waits {
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
            let view = self.extras.view(id.key(), Some(&conn.stream));
            self.handler.on_peer_closed(
                &mut Context::new(&mut self.outbox, &self.stats).about(view),
                session,
                unconsumed.as_slice(),
            );
        }
        self.finish_callback(id);
    }

    /// Performs what a callback about `id` asked for: its reply, its close, its mail.
    pub(super) fn finish_callback(&mut self, id: ConnId) {
        if !self.outbox.reply.is_empty() {
            let reply = std::mem::take(&mut self.outbox.reply);
            let result = self.send_to(id, &reply);
            self.outbox.reply = reply;
            self.outbox.reply.clear();
            match result {
                Ok(written) => self.stats.bytes_out += written as u64,
                Err(error) => {
                    self.close(id, CloseReason::from_error(&error));
                    return;
                }
            }
        }
        if self.outbox.close_current {
            self.conns[id.key()].begin_closing();
        }
        if self.outbox.has_mail() {
            self.deliver_mail();
        }
        self.outbox.shrink_after_spike();
        // The caller settles the connection once its event is done (not per callback).
    }

    /// Queues the writes that callbacks addressed to other connections, and performs their
    /// closes. Nothing is written here (unless a queue passes the limit): the flush before
    /// the next poll writes each connection once.
    pub(super) fn deliver_mail(&mut self) {
        if self.delivering {
            return; // the outer call picks up what was added
        }
        self.delivering = true;
        while self.outbox.has_mail() {
            let mut mail = std::mem::take(&mut self.outbox.mail);
            let bytes = std::mem::take(&mut self.outbox.mail_bytes);
            let mut offset = 0;
            for (to, letter) in mail.drain(..) {
                let open = self.is_live(to) && self.conns[to.key()].stage().accepts_output();
                match letter {
                    Letter::Bytes(len) => {
                        let data = &bytes[offset..offset + len];
                        offset += len;
                        if open {
                            self.queue_to(to, data);
                        }
                    }
                    Letter::Shared(chunk, range) if open => self.queue_shared_to(to, chunk, range),
                    Letter::Shared(..) => continue,
                }
                if open {
                    self.bound_mail(to);
                }
            }
            for to in std::mem::take(&mut self.outbox.closes) {
                if self.is_live(to) {
                    self.conns[to.key()].begin_closing();
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

    /// Queues `data` for `id` to go out with the next flush: encrypted first on TLS.
    fn queue_to(&mut self, id: ConnId, data: &[u8]) {
        #[cfg(feature = "tls")]
        let sealed = self.queue_sealed(id, data);
        #[cfg(not(feature = "tls"))]
        let sealed = false;
        if !sealed {
            self.conns[id.key()].queue(data, self.clock.tick());
        }
        self.mark_pending(id);
    }

    /// Queues a shared chunk for `id` by reference (over TLS each recipient's copy is
    /// encrypted anyway).
    fn queue_shared_to(&mut self, id: ConnId, chunk: Arc<[u8]>, range: Range<usize>) {
        if self.extras.is_tls(id.key()) {
            return self.queue_to(id, &chunk[range]);
        }
        self.conns[id.key()].queue_shared(chunk, range, self.clock.tick());
        self.mark_pending(id);
    }

    /// Puts `id` on the list of connections to flush before the next poll, once.
    fn mark_pending(&mut self, id: ConnId) {
        let conn = &mut self.conns[id.key()];
        if !conn.flush_pending {
            conn.flush_pending = true;
            self.pending.push_back(id);
        }
    }

    /// What others send is bounded by the high-water mark: not reading from the recipient
    /// cannot slow the senders down. A queue past it is written now (it may be a fast reader
    /// that was sent a lot in one iteration); a reader still that far behind is dropped.
    fn bound_mail(&mut self, id: ConnId) {
        if self.conns[id.key()].output.held() <= self.water.high || !self.flush(id) {
            return;
        }
        if self.conns[id.key()].output.held() > self.water.high {
            self.drop_slow_reader(id);
        }
    }

    /// Writes what was queued, before the loop waits again: first what the handler batched
    /// ([`Handler::on_flush`]), then each pending connection's queue with one `writev`, and
    /// it settles; oldest first, at most `flush_budget` connections or a quarter of those
    /// waiting (the rest next time round, after reading). Closes on the way may queue more; that joins the list, and a
    /// callback on the way may leave the handler holding batched work again, so the loop
    /// does not sleep then (see `poll_timeout`).
    pub(super) fn flush_pending(&mut self) {
        self.outbox.begin_unattached();
        self.handler
            .on_flush(&mut Context::new(&mut self.outbox, &self.stats));
        self.outbox.reply.clear();
        // Callbacks from here on (a connection closing as it is flushed, and the room told
        // of it) set it again: the loop then polls without sleeping and comes back here.
        self.outbox.unflushed = false;
        if self.outbox.has_mail() {
            self.deliver_mail();
        }
        let mut budget = self.config.flush_budget.max(self.pending.len() / 4);
        while budget > 0 {
            let Some(id) = self.pending.pop_front() else {
                break;
            };
            if !self.is_live(id) {
                continue; // closed since it was queued
            }
            budget -= 1;
            self.conns[id.key()].flush_pending = false;
            if self.flush(id) {
                self.settle(id);
            }
        }
        // Everything queued is written: handlers that yielded get their next turn.
        if self.pending.is_empty() && !self.yielded.is_empty() {
            let yielded = self.yielded.drain(..).map(Source::Conn);
            self.resume.extend(yielded);
        }
        self.outbox.shrink_after_spike();
    }

    /// Sends `data` to connection `id` now (queued behind what is already queued):
    /// encrypted first if it is a TLS connection.
    fn send_to(&mut self, id: ConnId, data: &[u8]) -> io::Result<usize> {
        if self.conns[id.key()].output.is_empty() {
            self.stats.writes += 1;
        }
        #[cfg(feature = "tls")]
        if let Some(result) = self.send_sealed(id, data) {
            return result;
        }
        self.conns[id.key()].send(data, self.clock.tick())
    }

    fn drop_slow_reader(&mut self, id: ConnId) {
        if let Some(count) = self.write_timeout_log.hit(self.clock.now()) {
            log::info!(
                "conn={id} dropped: a slow reader, over {} bytes behind ({count} such drops \
                 in the last second)",
                self.water.high
            );
        }
        self.close(id, CloseReason::SlowReader);
    }

    /// Moves the connection to its next stage and keeps the poller interest in step.
    pub(super) fn settle(&mut self, id: ConnId) {
        match self.conns[id.key()].settle(self.water) {
            Next::Stay => {}
            Next::ResumeReading => self.resume.push(Source::Conn(id)),
            Next::ShutdownWrite => {
                // TLS says goodbye before the TCP one: close_notify first, flushed (the
                // connection stays `Closing` until it is, and comes back here).
                #[cfg(feature = "tls")]
                match self.queue_close_notify(id) {
                    Err(error) => return self.close(id, CloseReason::from_error(&error)),
                    Ok(true) if !self.conns[id.key()].output.is_empty() => {
                        return self.settle(id);
                    }
                    Ok(_) => {}
                }
                let now = self.clock.tick();
                if let Err(error) = self.conns[id.key()].shut_down_writing(now) {
                    return self.close(id, CloseReason::from_error(&error));
                }
                // The peer's end of stream may already be queued, with no edge to come.
                self.resume.push(Source::Conn(id));
            }
            Next::Close if self.conns[id.key()].stage() == Stage::PeerTruncated => {
                return self.close(id, CloseReason::Truncated)
            }
            Next::Close => return self.close(id, CloseReason::PeerClosed),
        }
        let conn = &mut self.conns[id.key()];
        if conn.flush_pending {
            // The flush before the next poll writes its queue and settles it again: asking
            // the poller for writability now would cost two `epoll_ctl` calls for nothing.
            return;
        }
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
        self.schedule(id);
    }

    /// Closes the connection now and tells the handler.
    pub(super) fn close(&mut self, id: ConnId, reason: CloseReason) {
        // Dropping the stream closes the socket, which also removes it from the poller:
        // no deregister call needed.
        let conn = self.conns.remove(id.key());
        self.stats.count_close(reason);
        if let Some(ip) = self.peer_ips.get_mut(id.key()).and_then(Option::take) {
            self.release_ip(ip);
        }
        log::debug!("conn={id} closed: {reason}");
        #[allow(unused_mut)]
        let mut forgotten = self.extras.forget(id.key());
        #[cfg(feature = "tls")]
        if let Some(tls) = forgotten.tls.as_mut() {
            // A clean close_notify only when nothing owed is being dropped: after lost output
            // it would tell the client the stream ended cleanly (a truncation attack's
            // disguise), so then the socket just closes.
            if !matches!(reason, CloseReason::Error(_)) && conn.output.is_empty() {
                super::tls::farewell(tls, &conn.stream, &mut self.sealed);
            }
        }
        drop(conn.stream);
        if self.accept_paused {
            self.resume_listeners(); // a descriptor is free again
        }
        let Some(session) = conn.session else {
            return; // it never authenticated: the handler never heard of it
        };
        let view = ConnView {
            identity: forgotten.identity.as_deref(),
            ..ConnView::default()
        };
        self.outbox.begin(id, false, 0);
        self.handler.on_close(
            &mut Context::new(&mut self.outbox, &self.stats).about(view),
            session,
            reason,
        );
        self.outbox.reply.clear();
        if self.outbox.has_mail() {
            self.deliver_mail();
        }
    }
}
