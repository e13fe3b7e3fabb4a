//! Authentication at the door: with an [`Authenticator`](crate::Authenticator) installed, a
//! connection's first line must be `AUTH <token>` ([`crate::proto::auth`]). The handler
//! hears of the connection only once it has authenticated; before that, the reactor answers
//! it alone, holds at most `MAX_AUTH_LINE` bytes of its input, and counts its failures
//! toward its address's lockout.

use std::net::SocketAddr;

use super::Core;
use crate::handler::Handler;
use crate::proto::auth::{first_line, ok_line, AuthStep, AUTH_FAILED, AUTH_REQUIRED};
use crate::ConnId;

impl<H: Handler> Core<H> {
    /// Reads the input of a connection that has not authenticated yet (it is in the input
    /// buffer): answers each line, and opens the session on a good token.
    pub(super) fn authenticate(&mut self, id: ConnId) {
        // One callback's worth of replies, sent together, as for a handler's.
        let held = self.conns[id.key()].output.held();
        self.outbox.begin(id, true, held);
        loop {
            let conn = &mut self.conns[id.key()];
            let (token_ok, consumed, peer) = match first_line(conn.input.as_slice()) {
                AuthStep::Incomplete => return self.finish_callback(id),
                AuthStep::NotAuth { consumed } => {
                    conn.input.consume(consumed);
                    self.outbox.reply.extend_from_slice(AUTH_REQUIRED);
                    // Each such line costs the server a reply: a client that keeps sending
                    // them (a stream of newlines would make 18 bytes out of each byte in)
                    // is closed after a few.
                    if conn.missed_auth() >= MAX_LINES_BEFORE_AUTH {
                        return self.close_unauthenticated(id);
                    }
                    continue;
                }
                AuthStep::TooLong => {
                    self.outbox.reply.extend_from_slice(AUTH_REQUIRED);
                    return self.close_unauthenticated(id);
                }
                AuthStep::Token { token, consumed } => {
                    let peer = conn.stream.peer_addr().ok();
                    // A lockout that began after this connection was accepted still holds:
                    // connections opened beforehand must not keep guessing.
                    let locked =
                        peer.is_some_and(|p| self.access.is_locked(p.ip(), self.clock.tick()));
                    let verdict = match (&mut self.authenticator, peer) {
                        (Some(auth), Some(peer)) if !locked => auth.authenticate(peer, token),
                        _ => None,
                    };
                    (verdict, consumed, peer)
                }
            };
            self.conns[id.key()].input.consume(consumed);
            return match (token_ok, peer) {
                (Some(name), Some(peer)) => self.authenticated(id, peer, name),
                _ => self.auth_failed(id, peer),
            };
        }
    }

    /// A good token: `OK NAME`, then the handler's session, then any input that came after
    /// the `AUTH` line.
    fn authenticated(&mut self, id: ConnId, peer: SocketAddr, name: String) {
        self.stats.auth_ok += 1;
        log::debug!("conn={id} peer={peer} authenticated as {name}");
        self.outbox.reply.extend_from_slice(&ok_line(&name));
        self.extras.set_identity(id.key(), name);
        self.open_session(id, peer);
        self.finish_callback(id);
        if self.is_live(id) && !self.conns[id.key()].input.is_empty() {
            self.deliver_buffered(id);
        }
    }

    /// A wrong token (or any token from a locked-out address): `ERR auth failed`, a close,
    /// and a failure counted against the address.
    fn auth_failed(&mut self, id: ConnId, peer: Option<SocketAddr>) {
        self.stats.auth_failures += 1;
        self.outbox.reply.extend_from_slice(AUTH_FAILED);
        if let Some(peer) = peer {
            let now = self.clock.tick();
            if self.access.auth_failed(peer.ip(), now) {
                self.stats.lockouts += 1;
                if let Some(count) = self.lockout_log.hit(self.clock.now()) {
                    log::warn!(
                        "peer={} locked out for {:?}: {} failed authentications within {:?} \
                         ({count} lockouts in the last second)",
                        peer.ip().to_canonical(),
                        self.config.lockout_duration,
                        self.config.lockout_failures,
                        self.config.lockout_window,
                    );
                }
            }
            self.stats.offenders = self.access.offenders() as u64;
            self.plan_access_sweep();
            if let Some(count) = self.auth_log.hit(self.clock.now()) {
                log::info!(
                    "conn={id} peer={peer} closing: authentication failed \
                     ({count} failures in the last second)"
                );
            }
        }
        self.close_unauthenticated(id);
    }

    /// Sends what was answered and closes, without the handler ever hearing of it.
    fn close_unauthenticated(&mut self, id: ConnId) {
        self.outbox.close_current = true;
        self.finish_callback(id);
    }

    /// Makes sure the access tables are swept while they remember anything.
    pub(super) fn plan_access_sweep(&mut self) {
        if self.access_sweep_at == crate::timer::NEVER && self.access.remembers() {
            self.access_sweep_at = crate::timer::after(self.clock.tick(), ACCESS_SWEEP_TICKS);
        }
    }
}

/// Lines other than `AUTH` answered before the connection is closed.
const MAX_LINES_BEFORE_AUTH: u8 = 8;

/// How often the lockout and rate tables drop what expired.
pub(super) const ACCESS_SWEEP_TICKS: u32 = 10; // 1 s
