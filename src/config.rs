//! The reactor's settings: one plain struct with documented defaults.
//!
//! The CLI builds it from flags; an embedder builds it in code. Nothing in the library reads
//! the environment or global state for settings.

/// Settings of a [`crate::Reactor`]. Start from `Config::default()` and change what you need.
///
/// ```
/// let config = wharf::Config { nodelay: true, ..Default::default() };
/// assert!(config.low_water < config.high_water);
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    /// Backpressure: when a connection's unsent output grows past this many bytes, the reactor
    /// stops reading from it, so a peer that sends without reading cannot grow the server's
    /// memory without bound. Default: 64 KiB (the kernel's socket buffers hold far more; this
    /// is only what user space keeps).
    pub high_water: usize,
    /// Backpressure: reading resumes once unsent output has drained to this many bytes.
    /// The gap to `high_water` keeps a connection from flapping on every write.
    /// Default: 16 KiB.
    pub low_water: usize,
    /// Fairness: bytes read from one connection per readiness event before the reactor moves
    /// on to others (it comes back to this one before sleeping). Default: 256 KiB.
    pub read_budget: usize,
    /// Fairness: connections accepted per listener wakeup before established connections get
    /// their turn, so a connection storm cannot starve them. Default: 256.
    pub accept_budget: usize,
    /// Input limit: when a handler leaves more than this many bytes unconsumed (a message
    /// that never completes), the connection is closed, as by [`crate::Context::close`], so
    /// a peer cannot grow the server's memory without bound. Set it above the largest message
    /// the protocol accepts. Default: 1 MiB.
    pub max_input: usize,
    /// Readiness events taken from the poller per wakeup. Default: 1024.
    pub events_capacity: usize,
    /// Set TCP_NODELAY on accepted connections (send small replies at once instead of
    /// waiting to coalesce them). Default: off.
    pub nodelay: bool,
    /// Lingering close: after the server closes a connection (its output flushed and its
    /// write side shut down), it reads and discards at most this many bytes while waiting for
    /// the peer's end of stream. Closing with unread input makes the kernel send a reset that
    /// can destroy replies the peer has not read yet. Default: 16 MiB.
    pub linger_discard_limit: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            high_water: 64 * 1024,
            low_water: 16 * 1024,
            read_budget: 256 * 1024,
            accept_budget: 256,
            max_input: 1024 * 1024,
            events_capacity: 1024,
            nodelay: false,
            linger_discard_limit: 16 * 1024 * 1024,
        }
    }
}
