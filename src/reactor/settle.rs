//! Settling a connection once it has been served: performing what a callback asked for
//! (its reply, its close, its mail), applying the next [`Stage`] (poller interest, the
//! deadline, shutting down writing, closing), and the close itself, which tells the
//! handler.

use super::Server;
use crate::close_reason::CloseReason;
use crate::conn::{Next, Stage};
use crate::conn_id::{ConnId, Source};
use crate::handler::{ConnView, Context, Handler};

impl<H: Handler> Server<H> {
    /// Performs what a callback about `id` asked for: its reply, its close, its mail.
    pub(super) fn finish_callback(&mut self, id: ConnId) {
        if !self.outbox.reply.is_empty() {
            let reply = std::mem::take(&mut self.outbox.reply);
            let result = self.send_to(id, &reply);
            self.outbox.reply = reply;
            self.outbox.reply.clear();
            match result {
                Ok(written) => {
                    self.stats.bytes_out += written as u64;
                    self.access_log.wrote(id.key(), written);
                }
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
            self.queue_mail();
        }
        self.outbox.shrink_after_spike();
        // The caller settles the connection once its event is done (not per callback).
    }

    /// Moves the connection to its next stage and keeps the poller interest in step.
    pub(super) fn settle(&mut self, id: ConnId) {
        match self.conns[id.key()].settle(self.water) {
            Next::Stay => {}
            Next::ResumeReading => self.resume.push(Source::Conn(id)),
            Next::ShutdownWrite => {
                // TLS says goodbye before the TCP one: close_notify first, flushed (the
                // connection stays `Closing` until it is, and comes back here).
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
        let (peer, listener) = (self.peers.peer(id.key()), self.peers.listener(id.key()));
        // Still waiting for its PROXY header, it was never admitted.
        let admitted = !matches!(conn.stage(), Stage::ProxyHeader { .. });
        self.acceptor.closed(listener, peer.ip(), admitted);
        log::debug!("conn={id} closed: {reason}");
        (self.access_log).closed(id.key(), peer, reason, self.clock.now());
        let identity = self.peers.forget(id.key());
        // A clean close_notify only when nothing owed is being dropped: after lost output it
        // would tell the client the stream ended cleanly (a truncation attack's disguise),
        // so then the socket just closes.
        let clean = !matches!(reason, CloseReason::Error(_)) && conn.output.is_empty();
        self.transports.close(id.key(), &conn.stream, clean);
        drop(conn.stream);
        if self.acceptor.paused() {
            self.resume_listeners(); // a descriptor is free again
        }
        let Some(session) = conn.session else {
            return; // it never authenticated: the handler never heard of it
        };
        let view = ConnView {
            identity: identity.as_deref(),
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
            self.queue_mail();
        }
    }
}
