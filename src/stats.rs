//! Counters kept by the reactor.
//!
//! The reactor is single-threaded, so these are plain integers updated in place, never atomics:
//! a counter costs an add on the hot path, nothing more. Handlers read them through
//! [`crate::Context::stats`]; embedders read them from [`crate::Reactor::stats`]; the reactor
//! logs them on `Config::stats_interval` and on [`crate::Handle::log_stats`].

use std::fmt;

use crate::close_reason::CloseReason;

/// A snapshot of the reactor's counters since it started.
///
/// Its `Display` form is the one-line summary the server logs:
///
/// ```
/// let stats = wharf::Stats::default();
/// assert!(stats.to_string().starts_with("accepted=0 active=0 rejected=0 closed=0"));
/// ```
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections accepted and served.
    pub accepted: u64,
    /// Connections open now.
    pub active: u64,
    /// Connections accepted only to be refused: over `max_conns`, or shed while the process
    /// was out of file descriptors.
    pub rejected: u64,
    /// `accept` calls that failed with something other than "no connection waiting".
    pub accept_errors: u64,
    /// Connections closed right after accept: their address is not in `Config::allow`.
    pub refused_not_allowed: u64,
    /// Connections closed right after accept: their address had `max_conns_per_ip` open.
    pub refused_per_ip: u64,
    /// Connections closed right after accept: their address is locked out after failing to
    /// authenticate `Config::lockout_failures` times.
    pub refused_locked_out: u64,
    /// Connections closed right after accept: their address connected faster than
    /// `Config::max_accept_rate`.
    pub refused_rate_limited: u64,
    /// Connections that authenticated.
    pub auth_ok: u64,
    /// Authentications that failed (a wrong token); each closed its connection.
    pub auth_failures: u64,
    /// Connections closed because they did not authenticate within `Config::auth_timeout`.
    pub auth_timeouts: u64,
    /// Lockouts begun: addresses that failed to authenticate too often.
    pub lockouts: u64,
    /// Addresses counted or locked out for failing to authenticate, now (at most
    /// `Config::max_tracked_addresses`).
    pub offenders: u64,
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
    /// TLS connections closed for a protocol error: plaintext sent to a TLS port, a corrupt
    /// record, a failed handshake (also counted by their close reason).
    pub tls_errors: u64,
    /// TLS connections closed because the handshake did not complete within
    /// `Config::tls_handshake_timeout`.
    pub tls_handshake_timeouts: u64,
    /// TLS connections whose peer ended the TCP stream without close_notify: their
    /// unterminated input was dropped, not taken as complete.
    pub tls_truncated: u64,
    /// Bytes read from connections.
    pub bytes_in: u64,
    /// Bytes written to connections.
    pub bytes_out: u64,
    /// Write system calls (`write`, `writev`) made for connections' output: one per reply
    /// sent at once and one per flush of a connection's queue (a socket that takes only part
    /// of a write can make it more).
    pub writes: u64,
    /// Connections closed after the peer finished sending.
    pub closed_by_peer: u64,
    /// Connections closed by the server (a handler's close, an overlong line, input limit).
    pub closed_by_server: u64,
    /// Connections closed by a socket error or a reset from the peer.
    pub closed_by_error: u64,
    /// Connections closed because they were silent for `idle_timeout`.
    pub idle_timeouts: u64,
    /// Connections closed because a message they began (a partial line) did not complete
    /// within `message_timeout`.
    pub message_timeouts: u64,
    /// Connections closed because their output did not move for `write_timeout`.
    pub write_timeouts: u64,
    /// Connections dropped because what others sent them went past `high_water`.
    pub slow_readers: u64,
    /// Connections closed because the reactor stopped (or a drain ran out of time).
    pub closed_by_shutdown: u64,
    /// Datagrams received on UDP sockets.
    pub datagrams_in: u64,
    /// Datagrams sent on UDP sockets.
    pub datagrams_out: u64,
    /// Replies dropped because a UDP socket's queue of unsent replies was full.
    pub datagrams_dropped: u64,
    /// PROXY protocol headers read ([`crate::Reactor::expect_proxy_header`]).
    pub proxy_headers: u64,
    /// Connections refused or closed for their PROXY header: from a source not trusted to
    /// send one, or with none or an invalid one (also counted by their close reason or
    /// refusal).
    pub proxy_errors: u64,
    /// Connections closed because their PROXY header did not arrive within
    /// `Config::proxy_header_timeout`.
    pub proxy_timeouts: u64,
}

impl Stats {
    /// Connections closed, for any reason.
    pub fn closed(&self) -> u64 {
        self.closed_by_peer
            + self.closed_by_server
            + self.closed_by_error
            + self.idle_timeouts
            + self.write_timeouts
            + self.slow_readers
            + self.closed_by_shutdown
            + self.auth_timeouts
            + self.tls_handshake_timeouts
            + self.tls_truncated
            + self.message_timeouts
            + self.proxy_timeouts
    }

    pub(crate) fn count_close(&mut self, reason: CloseReason) {
        self.active -= 1;
        let counter = match reason {
            CloseReason::PeerClosed => &mut self.closed_by_peer,
            CloseReason::Closed => &mut self.closed_by_server,
            CloseReason::Error(_) => &mut self.closed_by_error,
            CloseReason::IdleTimeout => &mut self.idle_timeouts,
            CloseReason::WriteTimeout => &mut self.write_timeouts,
            CloseReason::SlowReader => &mut self.slow_readers,
            CloseReason::Shutdown => &mut self.closed_by_shutdown,
            CloseReason::AuthTimeout => &mut self.auth_timeouts,
            CloseReason::HandshakeTimeout => &mut self.tls_handshake_timeouts,
            CloseReason::Truncated => &mut self.tls_truncated,
            CloseReason::MessageTimeout => &mut self.message_timeouts,
            CloseReason::ProxyTimeout => &mut self.proxy_timeouts,
        };
        *counter += 1;
    }
}

impl Stats {
    /// Every counter by its name, in the order of the logged line: what the log line, the
    /// `--workers` parent's sum and a metrics exporter are made from, so a new counter is
    /// added in one place.
    ///
    /// ```
    /// let stats = wharf::Stats::default();
    /// let names: Vec<&str> = stats.fields().map(|(name, _)| name).collect();
    /// assert_eq!(&names[..4], ["accepted", "active", "rejected", "closed"]);
    /// ```
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("accepted", self.accepted),
            ("active", self.active),
            ("rejected", self.rejected),
            ("closed", self.closed()),
            ("closed_by_peer", self.closed_by_peer),
            ("closed_by_server", self.closed_by_server),
            ("closed_by_error", self.closed_by_error),
            ("idle_timeouts", self.idle_timeouts),
            ("write_timeouts", self.write_timeouts),
            ("slow_readers", self.slow_readers),
            ("closed_by_shutdown", self.closed_by_shutdown),
            ("bytes_in", self.bytes_in),
            ("bytes_out", self.bytes_out),
            ("accept_errors", self.accept_errors),
            ("datagrams_in", self.datagrams_in),
            ("datagrams_out", self.datagrams_out),
            ("datagrams_dropped", self.datagrams_dropped),
            ("refused_not_allowed", self.refused_not_allowed),
            ("refused_per_ip", self.refused_per_ip),
            ("refused_locked_out", self.refused_locked_out),
            ("refused_rate_limited", self.refused_rate_limited),
            ("auth_ok", self.auth_ok),
            ("auth_failures", self.auth_failures),
            ("auth_timeouts", self.auth_timeouts),
            ("lockouts", self.lockouts),
            ("offenders", self.offenders),
            ("tls_handshakes", self.tls_handshakes),
            ("tls_errors", self.tls_errors),
            ("tls_handshake_timeouts", self.tls_handshake_timeouts),
            ("tls_truncated", self.tls_truncated),
            ("message_timeouts", self.message_timeouts),
            ("writes", self.writes),
            ("proxy_headers", self.proxy_headers),
            ("proxy_errors", self.proxy_errors),
            ("proxy_timeouts", self.proxy_timeouts),
        ]
        .into_iter()
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (name, value)) in self.fields().enumerate() {
            let space = if index == 0 { "" } else { " " };
            write!(f, "{space}{name}={value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_close_counts_toward_the_counter_its_reason_names() {
        let reasons = [
            CloseReason::PeerClosed,
            CloseReason::Closed,
            CloseReason::Error(std::io::ErrorKind::ConnectionReset),
            CloseReason::IdleTimeout,
            CloseReason::WriteTimeout,
            CloseReason::SlowReader,
            CloseReason::Shutdown,
            CloseReason::AuthTimeout,
            CloseReason::HandshakeTimeout,
            CloseReason::Truncated,
            CloseReason::MessageTimeout,
            CloseReason::ProxyTimeout,
        ];
        for reason in reasons {
            let mut stats = Stats {
                active: 1,
                ..Stats::default()
            };
            stats.count_close(reason);
            let counted: Vec<&str> = (stats.fields())
                .filter(|&(name, value)| value == 1 && name != "closed")
                .map(|(name, _)| name)
                .collect();
            assert_eq!(counted, [reason.counter()], "{reason:?}");
        }
    }
}
