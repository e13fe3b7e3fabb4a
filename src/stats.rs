//! Counters kept by the reactor.
//!
//! The reactor is single-threaded, so these are plain integers updated in place, never atomics:
//! a counter costs an add on the hot path, nothing more. Handlers read them through
//! [`crate::Context::stats`]; embedders read them from [`crate::Reactor::stats`].

/// A snapshot of the reactor's counters since it started.
///
/// ```
/// let stats = wharf::Stats::default();
/// assert_eq!(stats.active, 0);
/// ```
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections open now.
    pub active: u64,
    /// Connections closed, for any reason.
    pub closed: u64,
    /// Connections closed because the peer reset them or a socket error occurred.
    pub errors: u64,
    /// Bytes read from connections.
    pub bytes_in: u64,
    /// Bytes written to connections.
    pub bytes_out: u64,
    /// `accept` calls that failed with something other than "no connection waiting".
    pub accept_errors: u64,
}
