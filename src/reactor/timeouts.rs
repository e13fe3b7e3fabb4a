//! Deadlines: connection timeouts from the timer heap, and the acceptor's retry and access
//! sweep. See [`crate::timer`] for how the heap stays lazy; the stats line's timer is the
//! loop's ([`crate::event_loop`]).

use super::Server;
use crate::close_reason::CloseReason;
use crate::conn::{Expiry, Stage};
use crate::conn_id::{ConnId, Source};
use crate::handler::Handler;
use crate::timer::{Tick, NEVER};

impl<H: Handler> Server<H> {
    /// Makes sure the timer heap will look at `id` no later than its current deadline.
    /// Called whenever a connection settles; costs a few comparisons unless the deadline
    /// moved earlier (output became pending, lingering began), which pushes one entry.
    pub(super) fn schedule(&mut self, id: ConnId) {
        let conn = &mut self.conns[id.key()];
        // The common case, an open connection with nothing pending that is already in the
        // heap: its deadline (last activity + idle timeout) can only have moved later.
        if conn.check_at != NEVER
            && conn.output.is_empty()
            && matches!(conn.stage(), Stage::Open { .. })
        {
            return;
        }
        if let Some((due, _)) = conn.deadline(self.timeouts) {
            self.check_by(id, due);
        }
    }

    /// Makes sure the timer heap looks at `id` by `due`: pushes an entry if its current one
    /// is later. For a deadline that moved earlier where `schedule`'s fast path would not see
    /// it.
    pub(super) fn check_by(&mut self, id: ConnId, due: Tick) {
        let conn = &mut self.conns[id.key()];
        if due < conn.check_at {
            conn.check_at = due;
            self.timers.schedule(due, id);
        }
    }

    /// Closes the connections whose deadline has passed, and runs the periodic work due.
    pub(crate) fn expire_timers(&mut self) {
        let now = self.clock.tick();
        // At most one live entry per connection: past twice that (and a floor, so small
        // servers never bother), drop the stale ones. Amortised O(1) per entry pushed.
        if self.timers.len() > 2 * self.conns.len() + 4096 {
            let conns = &self.conns;
            self.timers.compact(|at, id| {
                conns
                    .get(id.key())
                    .is_some_and(|c| c.generation == id.generation() && c.check_at == at)
            });
        }
        while let Some((at, id)) = self.timers.pop_due(now) {
            if !self.is_live(id) {
                continue; // closed since: lazy deletion
            }
            let conn = &mut self.conns[id.key()];
            if conn.check_at != at {
                continue; // a sooner entry replaced this one
            }
            conn.check_at = NEVER;
            match conn.deadline(self.timeouts) {
                Some((due, why)) if due <= now => self.expire(id, why),
                Some((due, _)) => {
                    // Activity moved the deadline on since this entry was pushed.
                    conn.check_at = due;
                    self.timers.schedule(due, id);
                }
                None => {}
            }
        }
        self.flush_logs();
        if self.acceptor.on_time(now, &mut self.stats) {
            self.resume_listeners();
        }
    }

    fn expire(&mut self, id: ConnId, why: Expiry) {
        match why {
            Expiry::Idle => {
                log::debug!("conn={id} closed: idle timeout");
                self.close(id, CloseReason::IdleTimeout);
            }
            Expiry::Write => {
                let pending = self.conns[id.key()].output.len();
                if let Some(count) = self.slow_reader_log.hit(self.clock.now()) {
                    log::info!(
                        "conn={id} dropped: {pending} bytes of output did not move for {:?}, \
                         the peer stopped reading ({count} such drops in the last second)",
                        self.config.write_timeout.unwrap_or_default()
                    );
                }
                self.close(id, CloseReason::WriteTimeout);
            }
            // The peer never finished: there is nothing left to protect.
            Expiry::Linger => self.close(id, CloseReason::Closed),
            // At the door, it is closed without a word (it may not even speak the protocol),
            // and the handler never heard of it.
            Expiry::ProxyHeader => {
                self.stats.proxy_errors += 1;
                if let Some(count) = self.proxy_log.hit(self.clock.now()) {
                    log::warn!(
                        "conn={id} peer={} closed: no complete PROXY header within {:?} ({count} \
                         PROXY header errors in the last second)",
                        self.peer(id),
                        self.config.proxy_header_timeout
                    );
                }
                self.close(id, CloseReason::ProxyTimeout);
            }
            Expiry::Handshake => {
                log::debug!(
                    "conn={id} closed: no TLS handshake within {:?}",
                    self.config.tls_handshake_timeout
                );
                self.close(id, CloseReason::HandshakeTimeout);
            }
            Expiry::Auth => {
                log::debug!(
                    "conn={id} closed: did not authenticate within {:?}",
                    self.config.auth_timeout
                );
                self.close(id, CloseReason::AuthTimeout);
            }
            Expiry::Message => {
                let waiting = self.conns[id.key()].input.len();
                if let Some(count) = self.message_timeout_log.hit(self.clock.now()) {
                    log::info!(
                        "conn={id} closed: {waiting} bytes of an unfinished message waited \
                         {:?} ({count} such closes in the last second)",
                        self.config.message_timeout.unwrap_or_default()
                    );
                }
                self.close(id, CloseReason::MessageTimeout);
            }
        }
    }

    /// Puts every listener on the resume list (accepting was paused).
    pub(super) fn resume_listeners(&mut self) {
        let listeners = self.acceptor.resume();
        self.resume.extend(listeners.map(Source::Listener));
    }
}
