//! The reactor's settings: one plain struct with documented defaults.
//!
//! The CLI builds it from flags; an embedder builds it in code. Nothing in the library reads
//! the environment or global state for settings.

use std::time::Duration;

use ipnet::IpNet;

/// Settings of a [`crate::Reactor`]. Start from `Config::default()` and change what you need.
///
/// ```
/// use std::time::Duration;
///
/// let config = wharf::Config {
///     max_conns: 50_000,
///     idle_timeout: Some(Duration::from_secs(30)),
///     ..Default::default()
/// };
/// assert!(config.low_water < config.high_water);
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    /// Connections served at once. Each connection past this is accepted, sent
    /// `full_reply` and closed, so the client learns why instead of waiting in the kernel's
    /// queue. Default: 10000.
    pub max_conns: usize,
    /// What a connection refused at `max_conns` is sent before it is closed; on a TLS
    /// listener nothing, which a TLS client could not read. The library speaks no protocol
    /// of its own, so by default nothing: the close says it. The `wharf` server sends
    /// `ERR server full (max N connections)\n`. Default: `None`.
    pub full_reply: Option<Vec<u8>>,
    /// What a connection is sent when the process is out of file descriptors: the reactor
    /// then accepts it with a descriptor held in reserve and closes it at once, so the
    /// client learns it now instead of waiting in the kernel's queue. The `wharf` server
    /// sends `ERR server full (out of file descriptors)\n`. Default: `None`.
    pub out_of_fds_reply: Option<Vec<u8>>,
    /// Access control: when not empty, connections from addresses outside these networks
    /// are closed right after accept, before a byte is read. IPv4-mapped IPv6 peers (IPv4
    /// clients of a `[::]` listener) match IPv4 networks. Default: empty (everyone).
    pub allow: Vec<IpNet>,
    /// Access control: most connections open at once from one source address; the next one
    /// is closed right after accept. 0: no limit. Default: 0.
    pub max_conns_per_ip: usize,
    /// How many leading bits of an IPv6 address name one client, for the lockout, the
    /// accept rate and `max_conns_per_ip` (1 to 128). Default: 64, the network one host is
    /// usually given, so an attacker cannot start afresh from each of its 2^64 addresses.
    pub ipv6_prefix: u8,
    /// Networks whose failed authentications are never counted toward a lockout (a
    /// monitoring host, a trusted proxy). Default: none; loopback is not exempt, so a local
    /// attacker is locked out too: list `127.0.0.0/8` and `::1/128` to exempt it.
    pub lockout_exempt: Vec<ipnet::IpNet>,
    /// Connection-rate limit: connections a second accepted from one source address, in
    /// bursts of up to one second's worth (a token bucket per address); more are closed right
    /// after accept. 0: no limit. Default: 0.
    pub max_accept_rate: u32,
    /// Authentication ([`crate::Reactor::set_authenticator`]): how long a new connection
    /// has to authenticate before it is closed. Default: 10 s.
    pub auth_timeout: Duration,
    /// TLS listeners: how long a new connection has to complete its handshake before it is
    /// closed (a client that connects and sends nothing, or half a ClientHello). Default: 10 s.
    pub tls_handshake_timeout: Duration,
    /// Listeners that expect a PROXY protocol header
    /// ([`crate::Reactor::expect_proxy_header`]): how long a new connection has to send a
    /// complete one before it is closed. Default: 5 s.
    pub proxy_header_timeout: Duration,
    /// Lockout: this many failed authentications from one address within `lockout_window`
    /// lock it out for `lockout_duration`: its connections are closed right after accept.
    /// 0: no lockout. Default: 5.
    pub lockout_failures: u32,
    /// See `lockout_failures`. Default: 60 s.
    pub lockout_window: Duration,
    /// See `lockout_failures`. Default: 60 s.
    pub lockout_duration: Duration,
    /// Most addresses remembered for the lockout and, separately, for the connection-rate
    /// limit, so that traffic from many addresses cannot grow either table without bound.
    /// Default: 16384.
    pub max_tracked_addresses: usize,
    /// Backpressure, the largest output the server keeps for one connection: past this many
    /// unsent bytes the reactor stops reading from it, so a peer that sends without reading
    /// cannot grow the server's memory without bound. Default: 1 MiB.
    pub high_water: usize,
    /// Backpressure: reading resumes once unsent output has drained to this many bytes.
    /// The gap to `high_water` keeps a connection from flapping on every write.
    /// Default: 256 KiB.
    pub low_water: usize,
    /// Close connections with nothing read or written for this long. `None`: never.
    /// Default: 300 s.
    pub idle_timeout: Option<Duration>,
    /// Close a connection that leaves a message unfinished this long: input its handler did
    /// not consume (a partial line, a partial request) and no progress since. Any byte
    /// keeps the idle timer alive, so without this a client sending one byte every few
    /// seconds holds a connection, and a partial message's memory, forever (slowloris).
    /// `None`: never. Default: 60 s, like nginx's `client_header_timeout`.
    pub message_timeout: Option<Duration>,
    /// Close a connection whose pending output has not moved for this long: its peer stopped
    /// reading. This is what finally frees a connection throttled at `high_water`.
    /// `None`: never. Default: 60 s.
    pub write_timeout: Option<Duration>,
    /// Lingering close: after the server closes a connection (its output flushed and its
    /// write side shut down), it reads and discards input until the peer's end of stream,
    /// for at most this long and at most `linger_discard_limit` bytes. Closing with unread
    /// input makes the kernel send a reset that can destroy replies the peer has not read
    /// yet. Default: 5 s.
    pub linger_timeout: Duration,
    /// See `linger_timeout`. Default: 16 MiB.
    pub linger_discard_limit: usize,
    /// Graceful drain ([`crate::Handle::drain`]): how long connections may take to finish
    /// after the listeners close, before the rest are closed. Default: 5 s.
    pub drain_timeout: Duration,
    /// Log a line of [`crate::Stats`] at this interval. `None`: never. Default: `None`.
    pub stats_interval: Option<Duration>,
    /// Input limit: when a handler leaves more than this many bytes unconsumed (a message
    /// that never completes), the connection is closed, as by [`crate::Context::close`], so
    /// a peer cannot grow the server's memory without bound. Set it above the largest message
    /// the protocol accepts. Default: 1 MiB.
    pub max_input: usize,
    /// Fairness: bytes read from one connection per readiness event before the reactor moves
    /// on to others (it comes back to this one before sleeping). Default: 256 KiB.
    pub read_budget: usize,
    /// Fairness: connections accepted per listener wakeup before established connections get
    /// their turn, so a connection storm cannot starve them. Default: 256.
    pub accept_budget: usize,
    /// Fairness: connections whose queued output is written per loop iteration before the
    /// reactor reads again, or a quarter of those waiting if that is more; the rest are
    /// written next time round, in order. A room of a thousand members takes about 5 ms of
    /// kernel time to write once, and a line that arrives meanwhile would wait a whole flush
    /// to be read and then another to go out: flushing in slices shortens that. Not in more
    /// than about four slices, though: each iteration can hand every member a new piece of
    /// output (a chat room's batch), which costs a little per member. Default: 32.
    pub flush_budget: usize,
    /// Readiness events taken from the poller per wakeup. Default: 1024.
    pub events_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_conns: 10_000,
            full_reply: None,
            out_of_fds_reply: None,
            allow: Vec::new(),
            max_conns_per_ip: 0,
            ipv6_prefix: 64,
            lockout_exempt: Vec::new(),
            max_accept_rate: 0,
            auth_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            proxy_header_timeout: Duration::from_secs(5),
            lockout_failures: 5,
            lockout_window: Duration::from_secs(60),
            lockout_duration: Duration::from_secs(60),
            max_tracked_addresses: 16384,
            high_water: 1024 * 1024,
            low_water: 256 * 1024,
            idle_timeout: Some(Duration::from_secs(300)),
            message_timeout: Some(Duration::from_secs(60)),
            write_timeout: Some(Duration::from_secs(60)),
            linger_timeout: Duration::from_secs(5),
            linger_discard_limit: 16 * 1024 * 1024,
            drain_timeout: Duration::from_secs(5),
            stats_interval: None,
            max_input: 1024 * 1024,
            read_budget: 256 * 1024,
            accept_budget: 256,
            flush_budget: 32,
            events_capacity: 1024,
        }
    }
}
