//! Why a connection closed: what handlers are told ([`crate::Handler::on_close`]) and what
//! the counters count ([`crate::Stats`]). A file of its own, so that neither of the two
//! depends on the other for it.

use std::fmt;
use std::io;

/// Why a connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer finished sending, and everything owed to it was written.
    PeerClosed,
    /// The handler closed it ([`Context::close`](crate::Context::close)); its output was written first.
    Closed,
    /// The peer reset the connection, or the socket failed.
    Error(io::ErrorKind),
    /// Nothing was read or written for `Config::idle_timeout`.
    IdleTimeout,
    /// Output was pending and none of it could be written for `Config::write_timeout`: the
    /// peer stopped reading.
    WriteTimeout,
    /// Writes from other connections ([`Context::write_to`](crate::Context::write_to), [`Context::write_shared`](crate::Context::write_shared))
    /// pushed its unsent output past `Config::high_water`: a reader too slow for what is sent
    /// to it, dropped so that it cannot hold the others up or grow without bound.
    SlowReader,
    /// The reactor stopped.
    Shutdown,
    /// The connection did not authenticate within `Config::auth_timeout`
    /// ([`crate::Reactor::set_authenticator`]). Handlers never see it: it had not opened.
    AuthTimeout,
    /// A TLS connection did not complete its handshake within
    /// `Config::tls_handshake_timeout`. Handlers never see it: it had not opened.
    HandshakeTimeout,
    /// The peer left a message unfinished (input the handler did not consume) for
    /// `Config::message_timeout` without the handler consuming anything: a slowloris.
    MessageTimeout,
    /// The peer ended a TLS connection's TCP stream without close_notify, so what it sent
    /// last may have been cut short by an attacker or a failure: the handler was told of the
    /// end with no unconsumed input ([`Handler::on_peer_closed`](crate::Handler::on_peer_closed)), and what was owed to the
    /// peer was written first.
    Truncated,
    /// A connection on a listener that expects a PROXY protocol header did not send a
    /// complete one within `Config::proxy_header_timeout`. Handlers never see it.
    ProxyTimeout,
}

impl CloseReason {
    /// The name of the counter this close counts toward, as
    /// [`Stats::fields`](crate::Stats::fields) names it.
    ///
    /// ```
    /// assert_eq!(wharf::CloseReason::PeerClosed.counter(), "closed_by_peer");
    /// ```
    pub fn counter(&self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "closed_by_peer",
            CloseReason::Closed => "closed_by_server",
            CloseReason::Error(_) => "closed_by_error",
            CloseReason::IdleTimeout => "idle_timeouts",
            CloseReason::WriteTimeout => "write_timeouts",
            CloseReason::SlowReader => "slow_readers",
            CloseReason::Shutdown => "closed_by_shutdown",
            CloseReason::AuthTimeout => "auth_timeouts",
            CloseReason::HandshakeTimeout => "tls_handshake_timeouts",
            CloseReason::Truncated => "tls_truncated",
            CloseReason::MessageTimeout => "message_timeouts",
            CloseReason::ProxyTimeout => "proxy_timeouts",
        }
    }

    pub(crate) fn from_error(error: &io::Error) -> CloseReason {
        CloseReason::Error(error.kind())
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("peer closed"),
            CloseReason::Closed => f.write_str("closed by server"),
            CloseReason::Error(kind) => write!(f, "error: {kind}"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::WriteTimeout => f.write_str("write timeout: peer stopped reading"),
            CloseReason::SlowReader => f.write_str("slow reader: output over the limit"),
            CloseReason::Shutdown => f.write_str("server shutdown"),
            CloseReason::AuthTimeout => f.write_str("auth timeout"),
            CloseReason::HandshakeTimeout => f.write_str("TLS handshake timeout"),
            CloseReason::Truncated => f.write_str("TLS stream truncated (no close_notify)"),
            CloseReason::MessageTimeout => f.write_str("message timeout: unfinished input"),
            CloseReason::ProxyTimeout => f.write_str("PROXY header timeout"),
        }
    }
}
