//! The output path's writing: mail queued on its recipients, the flush of the pending list
//! before each poll, the bound on what a connection may be owed. The lists are
//! [`Output`](crate::output::Output)'s; see docs/ARCHITECTURE.md, "The output path".
//!
//! - **A reply** (what a callback writes to the connection it is about) goes out at once,
//!   straight from the shared reply buffer, when nothing is queued for that connection
//!   (`drive.rs`). It answers a read just made, so writes never outnumber reads, and a
//!   request/response round trip costs one `write` and no copy. Otherwise it joins the queue.
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

use super::Server;
use crate::close_reason::CloseReason;
use crate::conn_id::{ConnId, Source};
use crate::handler::{Context, Handler};
use crate::outbox::Letter;

impl<H: Handler> Server<H> {
    /// Writes queued output; false if that closed the connection.
    pub(super) fn flush(&mut self, id: ConnId) -> bool {
        if self.conns[id.key()].output.is_empty() {
            return true;
        }
        self.stats.writes += 1;
        match self.conns[id.key()].flush(self.clock.tick()) {
            Ok(written) => {
                self.stats.bytes_out += written as u64;
                self.access_log.wrote(id.key(), written);
                true
            }
            Err(error) => {
                self.close(id, CloseReason::from_error(&error));
                false
            }
        }
    }

    /// Queues the writes that callbacks addressed to other connections, and performs their
    /// closes. Nothing is written here (unless a queue passes the limit): the flush before
    /// the next poll writes each connection once.
    pub(super) fn queue_mail(&mut self) {
        if !self.output.begin_delivery() {
            return; // the outer call picks up what was added
        }
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
        self.output.end_delivery();
    }

    /// Queues `data` for `id` to go out with the next flush: encrypted first on TLS.
    fn queue_to(&mut self, id: ConnId, data: &[u8]) {
        if !self.queue_sealed(id, data) {
            self.conns[id.key()].queue(data, self.clock.tick());
        }
        self.mark_pending(id);
    }

    /// Queues a shared chunk for `id` by reference (over TLS each recipient's copy is
    /// encrypted anyway).
    fn queue_shared_to(&mut self, id: ConnId, chunk: Arc<[u8]>, range: Range<usize>) {
        if self.transports.is_tls(id.key()) {
            return self.queue_to(id, &chunk[range]);
        }
        self.conns[id.key()].queue_shared(chunk, range, self.clock.tick());
        self.mark_pending(id);
    }

    /// Puts `id` on the list of connections to flush before the next poll, once.
    fn mark_pending(&mut self, id: ConnId) {
        let conn = &mut self.conns[id.key()];
        self.output.mark(id, &mut conn.flush_pending);
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
    pub(crate) fn flush_pending(&mut self) {
        self.outbox.begin_unattached();
        self.handler
            .on_flush(&mut Context::new(&mut self.outbox, &self.stats));
        self.outbox.reply.clear();
        // Callbacks from here on (a connection closing as it is flushed, and the room told
        // of it) set it again: the loop then polls without sleeping and comes back here.
        self.outbox.unflushed = false;
        if self.outbox.has_mail() {
            self.queue_mail();
        }
        let mut budget = self.output.slice();
        while budget > 0 {
            let Some(id) = self.output.next() else {
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
        let resumed = self.output.resumed().map(Source::Conn);
        self.resume.extend(resumed);
        self.outbox.shrink_after_spike();
    }

    /// Sends `data` to connection `id` now (queued behind what is already queued):
    /// encrypted first if it is a TLS connection.
    pub(super) fn send_to(&mut self, id: ConnId, data: &[u8]) -> io::Result<usize> {
        if self.conns[id.key()].output.is_empty() {
            self.stats.writes += 1;
        }
        if let Some(result) = self.send_sealed(id, data) {
            return result;
        }
        self.conns[id.key()].send(data, self.clock.tick())
    }

    fn drop_slow_reader(&mut self, id: ConnId) {
        if let Some(count) = self.slow_reader_log.hit(self.clock.now()) {
            log::info!(
                "conn={id} dropped: a slow reader, over {} bytes behind ({count} such drops \
                 in the last second)",
                self.water.high
            );
        }
        self.close(id, CloseReason::SlowReader);
    }
}
