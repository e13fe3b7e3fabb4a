//! The command line: modes, flags, and how they become a [`Config`] and [`ListenOptions`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use wharf::proto::line::DEFAULT_MAX_LINE;
use wharf::{Config, HostPort, ListenOptions};

/// A single-threaded event-loop server: echo (also over UDP), line echo and chat, over TCP
/// and TLS, for testing clients, proxies and firewalls.
#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    after_help = "Examples:\n  \
        wharf echo                                  # echo on 127.0.0.1:7000\n  \
        wharf line --listen '[::]:7000'             # line echo, IPv4 and IPv6, all interfaces\n  \
        wharf echo --listen 127.0.0.1:0             # any free port; the real one is printed\n  \
        wharf chat                                  # a chat room on 127.0.0.1:7000\n  \
        wharf echo --udp 127.0.0.1:7000             # TCP and UDP echo on port 7000\n  \
        wharf line --tls-listen 127.0.0.1:7443 --tls-cert cert.pem --tls-key key.pem\n  \
        wharf echo --workers auto                   # one worker process per CPU, one port\n  \
        wharf echo --metrics-listen 9100            # Prometheus metrics on 127.0.0.1:9100\n  \
        wharf line --proxy-listen 0.0.0.0:7000 --proxy-from 10.0.0.5  # behind HAProxy\n\n\
        Signals: SIGINT or SIGTERM drains (listeners close, connections get --drain-timeout \
        to finish, exit 0); a second one stops at once. SIGUSR1 logs the counters. SIGHUP \
        reloads the TLS certificate and key. With --workers, signal the parent: it passes \
        them on to every worker.\n\
        Under systemd, sockets passed by socket activation (LISTEN_FDS) replace the listen \
        addresses, and NOTIFY_SOCKET hears READY=1 and STOPPING=1 (docs/systemd/).\n\
        Logging goes to stderr; set RUST_LOG (error, warn, info, debug, trace), default info.\n\
        docs/OPERATIONS.md explains every limit and the kernel settings behind it."
)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Mode,
}

#[derive(Subcommand)]
pub enum Mode {
    /// Echo every byte back, in order (RFC 862), over TCP and, with --udp, over UDP.
    Echo {
        #[command(flatten)]
        server: ServerArgs,
        /// Also echo datagrams on this UDP address (repeatable): each back to its sender,
        /// up to 65507 bytes.
        #[arg(long = "udp", value_name = "ADDR", value_parser = parse_listen_addr)]
        udp_specs: Vec<HostPort>,
        /// `--udp`, resolved at start ([`Mode::resolve`]).
        #[arg(skip)]
        udp: Vec<SocketAddr>,
    },
    /// Echo each complete line back byte-exact, terminator included.
    ///
    /// Lines end with \n; \r\n, empty lines, NUL and non-UTF-8 bytes pass through. A final
    /// line without \n is echoed when the client half-closes. A line longer than --max-line
    /// gets `ERR line too long (max N bytes)` and the connection is closed.
    Line {
        #[command(flatten)]
        server: ServerArgs,
        /// Longest line accepted, in bytes before the \n.
        #[arg(long, value_name = "SIZE", default_value_t = DEFAULT_MAX_LINE, value_parser = parse_size)]
        max_line: usize,
    },
    /// A line-based chat room: every line goes to every other client as `<NAME> line`.
    ///
    /// Clients are named user1, user2, ...; `/nick NAME` renames (1-32 of A-Z a-z 0-9 _ -),
    /// `/who` lists who is online; joins and leaves are announced as `* NAME joined` and
    /// `* NAME left`. A client that falls more than --max-outbuf behind is dropped. One room
    /// per process, so chat runs with one worker (no --workers).
    Chat {
        #[command(flatten)]
        server: ServerArgs,
        /// Longest line accepted, in bytes before the \n.
        #[arg(long, value_name = "SIZE", default_value_t = DEFAULT_MAX_LINE, value_parser = parse_size)]
        max_line: usize,
    },
}

#[derive(Args)]
pub struct ServerArgs {
    /// Address to listen on: PORT or :PORT (loopback, 127.0.0.1), IP:PORT, [IPv6]:PORT or
    /// HOST:PORT (every address the name resolves to, once, at start); repeat for several.
    /// Every interface is explicit: 0.0.0.0:PORT, or [::]:PORT (IPv4 too). Port 0 picks a
    /// free port. [default: 127.0.0.1:7000, unless --tls-listen is given]
    #[arg(long = "listen", value_name = "ADDR", value_parser = parse_listen_addr)]
    specs: Vec<HostPort>,
    /// `--listen`, resolved at start ([`Mode::resolve`]).
    #[arg(skip)]
    addrs: Vec<SocketAddr>,
    /// Listen for TLS on this address (the forms of --listen); repeatable, and beside
    /// --listen for a plain port and a TLS port at once. Needs --tls-cert and --tls-key.
    #[arg(long = "tls-listen", value_name = "ADDR", value_parser = parse_listen_addr)]
    tls_specs: Vec<HostPort>,
    /// `--tls-listen`, resolved at start.
    #[arg(skip)]
    pub tls_addrs: Vec<SocketAddr>,
    /// Listen here for connections from a load balancer that sends the PROXY protocol
    /// header (v1 or v2) first (the forms of --listen; repeatable): the client address it
    /// carries is the connection's address for the access rules, limits and logs. Needs
    /// --proxy-from.
    #[arg(long = "proxy-listen", value_name = "ADDR", value_parser = parse_listen_addr)]
    proxy_specs: Vec<HostPort>,
    #[arg(skip)]
    proxy_addrs: Vec<SocketAddr>,
    /// --proxy-listen for TLS: the PROXY header, then the TLS handshake. Needs --tls-cert,
    /// --tls-key and --proxy-from.
    #[arg(long = "proxy-tls-listen", value_name = "ADDR", value_parser = parse_listen_addr)]
    proxy_tls_specs: Vec<HostPort>,
    #[arg(skip)]
    proxy_tls_addrs: Vec<SocketAddr>,
    /// The load balancers trusted to send a PROXY header (CIDR; repeatable): the only
    /// sources a --proxy-listen port takes connections from.
    #[arg(long = "proxy-from", value_name = "CIDR", value_parser = parse_cidr)]
    pub proxy_from: Vec<IpNet>,
    /// Close a connection on a --proxy-listen port that has not sent a whole PROXY header
    /// within this long.
    #[arg(long, value_name = "DURATION", default_value = "5", value_parser = parse_duration)]
    proxy_timeout: Duration,
    /// Serve metrics in the Prometheus text format at http://ADDR/metrics (the forms of
    /// --listen: PORT alone is loopback). With --workers, the parent serves the workers'
    /// sum and each worker's figures.
    #[arg(long = "metrics-listen", value_name = "ADDR", value_parser = parse_listen_addr)]
    metrics_specs: Vec<HostPort>,
    /// `--metrics-listen`, resolved at start.
    #[arg(skip)]
    pub metrics_addrs: Vec<SocketAddr>,
    /// The TLS certificate chain, PEM, leaf first.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS private key, PEM.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: require a client certificate chained to this CA (PEM). The certificate's
    /// subject (first DNS name, else common name) is the client's identity, its chat name.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Close a TLS connection whose handshake has not completed within this long.
    #[arg(long, value_name = "DURATION", default_value = "10", value_parser = parse_duration)]
    tls_handshake_timeout: Duration,
    /// Length of the queue of connections waiting to be accepted (capped by the kernel at
    /// net.core.somaxconn).
    #[arg(long, value_name = "N", default_value_t = ListenOptions::default().backlog)]
    backlog: u32,
    /// Set SO_REUSEPORT, so several servers can share the port.
    #[arg(long)]
    reuseport: bool,
    /// Make IPv6 listeners IPv6-only (IPV6_V6ONLY), so `[::]:PORT` and `0.0.0.0:PORT` can
    /// be given as two listeners.
    #[arg(long)]
    v6only: bool,
    /// Accept connections only from this network (CIDR, e.g. 10.0.0.0/8 or ::1/128; a bare
    /// address means just it); repeatable. Others are closed at once, before a byte is read.
    /// IPv4 clients of a `[::]` listener match IPv4 rules.
    #[arg(long = "allow", value_name = "CIDR", value_parser = parse_cidr)]
    allow: Vec<IpNet>,
    /// Most connections open at once from one source address; more are closed at once
    /// (0: no limit). [default: 256 when listening beyond loopback, else no limit]
    #[arg(long, value_name = "N")]
    max_conns_per_ip: Option<usize>,
    /// Most new connections a second from one source address (a token bucket, bursts of up
    /// to a second's worth); more are closed at once (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_accept_rate: u32,
    /// Require token authentication: FILE holds one NAME:TOKEN per line (keep it
    /// `chmod 600`). A client's first line must be `AUTH <token>`; it is answered `OK NAME`,
    /// and in chat NAME is its name. Anything else first gets `ERR auth required`, a wrong
    /// token `ERR auth failed` and a close.
    #[arg(long, value_name = "FILE")]
    pub auth_tokens: Option<PathBuf>,
    /// Close a connection that has not authenticated within this long.
    #[arg(long, value_name = "DURATION", default_value = "10", value_parser = parse_duration)]
    auth_timeout: Duration,
    /// Lock an address out after this many failed authentications within --lockout-secs:
    /// its connections are closed at once for --lockout-secs (0: never).
    #[arg(long, value_name = "N", default_value_t = 5)]
    lockout_failures: u32,
    /// The window in which --lockout-failures count, and how long a lockout lasts.
    #[arg(long, value_name = "DURATION", default_value = "60", value_parser = parse_duration)]
    lockout_secs: Duration,
    /// Never count failed authentications from this network toward a lockout (CIDR, e.g.
    /// 10.0.0.0/8 for a monitoring host; loopback is not exempt unless listed); repeatable.
    #[arg(long = "lockout-exempt", value_name = "CIDR", value_parser = parse_cidr)]
    lockout_exempt: Vec<IpNet>,
    /// Leading bits of an IPv6 address that name one client, for --lockout-failures,
    /// --max-accept-rate and --max-conns-per-ip: a host is usually given a whole /64.
    #[arg(long, value_name = "BITS", default_value_t = 64,
          value_parser = clap::value_parser!(u8).range(1..=128))]
    ipv6_prefix: u8,
    /// Most addresses remembered for lockouts, and for --max-accept-rate, so a flood from
    /// many addresses cannot grow either table without bound.
    #[arg(long, value_name = "N", default_value_t = Config::default().max_tracked_addresses)]
    max_tracked_ips: usize,
    /// Serve chat on a non-loopback address without authentication (protected mode refuses
    /// to otherwise).
    #[arg(long)]
    pub allow_unauthenticated: bool,
    /// Connections served at once, by each worker; each one over the limit is sent
    /// `ERR server full (max N connections)` and closed.
    #[arg(long, value_name = "N", default_value_t = Config::default().max_conns)]
    pub max_conns: usize,
    /// Close connections with nothing read or written for this long (0: never).
    #[arg(long, value_name = "DURATION", default_value = "300", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Close a connection that leaves a line unfinished this long, with no complete line
    /// since: a client trickling bytes (slowloris) would otherwise hold it, and up to
    /// --max-line bytes, forever (0: never). Like nginx's client_header_timeout.
    #[arg(long, value_name = "DURATION", default_value = "60", value_parser = parse_duration)]
    line_timeout: Duration,
    /// Close a connection whose pending output has not moved for this long: its client
    /// stopped reading (0: never).
    #[arg(long, value_name = "DURATION", default_value = "60", value_parser = parse_duration)]
    write_timeout: Duration,
    /// Largest output kept for one connection; past it the server stops reading from that
    /// client until it reads (backpressure).
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
    max_outbuf: usize,
    /// On SIGINT or SIGTERM, how long connections may take to finish before they are closed.
    #[arg(long, value_name = "DURATION", default_value = "5", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Log a line of counters this often (0: never; SIGUSR1 logs one at any time).
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    stats_interval: Duration,
    /// Send small replies at once (TCP_NODELAY). On by default in line mode.
    #[arg(long, overrides_with = "no_nodelay")]
    nodelay: bool,
    /// Let the kernel coalesce small replies (Nagle's algorithm). The default in echo mode.
    #[arg(long, overrides_with = "nodelay")]
    no_nodelay: bool,
    /// TCP keepalive: probe a connection after this much silence, so connections to hosts
    /// that vanished are closed (0: off).
    #[arg(long, value_name = "DURATION", default_value = "300", value_parser = parse_duration)]
    keepalive: Duration,
    /// Worker processes: each a single-threaded server with its own listening socket on the
    /// same port (SO_REUSEPORT), restarted if it dies. `auto`: one per CPU. --max-conns
    /// applies to each worker. Chat, and echo with --udp, run with one worker.
    #[arg(long, value_name = "N|auto", default_value = "1", value_parser = parse_workers)]
    pub workers: Workers,
    /// Write the server's process id to this file once it serves (atomically), and remove
    /// it on exit. With --workers, the parent's pid.
    #[arg(long, value_name = "PATH")]
    pub pidfile: Option<std::path::PathBuf>,
    /// Internal: this process is worker ID of a `--workers` parent.
    #[arg(long, hide = true, value_name = "ID")]
    pub worker_id: Option<usize>,
    /// Internal: a worker's end of its stats channel, a socket it inherits under this number.
    #[arg(long, hide = true, value_name = "FD", requires = "worker_id")]
    pub worker_stats_fd: Option<i32>,
    /// Internal: a worker listens here (an address its parent resolved) instead of --listen.
    #[arg(long, hide = true, value_name = "ADDR", requires = "worker_id")]
    worker_listen: Vec<SocketAddr>,
    /// Internal: a worker listens for TLS here instead of --tls-listen.
    #[arg(long, hide = true, value_name = "ADDR", requires = "worker_id")]
    worker_tls_listen: Vec<SocketAddr>,
    /// Internal: a worker serves on this listening socket, which it inherits from its
    /// parent (socket activation), as `FD:KIND`.
    #[arg(long, hide = true, value_name = "FD:KIND", requires = "worker_id")]
    pub worker_socket: Vec<String>,
    /// The listening sockets systemd passed (or a worker's parent), with what each is for:
    /// used instead of binding any address.
    #[arg(skip)]
    pub activated: Vec<(std::net::TcpListener, crate::systemd::Role)>,
    /// Internal: a worker's --proxy-listen.
    #[arg(long, hide = true, value_name = "ADDR", requires = "worker_id")]
    worker_proxy_listen: Vec<SocketAddr>,
    /// Internal: a worker's --proxy-tls-listen.
    #[arg(long, hide = true, value_name = "ADDR", requires = "worker_id")]
    worker_proxy_tls_listen: Vec<SocketAddr>,
}

/// One TCP listener of the service, and what stands in front of its connections.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub addr: SocketAddr,
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub tls: bool,
    pub proxy: bool,
}

impl Kind {
    pub const PLAIN: Kind = Kind {
        tls: false,
        proxy: false,
    };
    pub const TLS: Kind = Kind {
        tls: true,
        proxy: false,
    };
    pub const PROXY: Kind = Kind {
        tls: false,
        proxy: true,
    };
    pub const PROXY_TLS: Kind = Kind {
        tls: true,
        proxy: true,
    };

    /// The kind a socket name or `--worker-socket` says (`plain`, `tls`, `proxy`,
    /// `proxy-tls`).
    pub fn named(name: &str) -> Option<Kind> {
        [Kind::PLAIN, Kind::TLS, Kind::PROXY, Kind::PROXY_TLS]
            .into_iter()
            .find(|kind| kind.name() == name)
    }

    /// Its name, its flag, and what its `listening on` line says after the mode.
    fn words(self) -> (&'static str, &'static str, &'static str) {
        match (self.tls, self.proxy) {
            (false, false) => ("plain", "--listen", ""),
            (true, false) => ("tls", "--tls-listen", ", tls"),
            (false, true) => ("proxy", "--proxy-listen", ", proxy"),
            (true, true) => ("proxy-tls", "--proxy-tls-listen", ", tls, proxy"),
        }
    }

    pub fn name(self) -> &'static str {
        self.words().0
    }

    /// The flag that gives such a listener.
    pub fn flag(self) -> &'static str {
        self.words().1
    }

    /// What its `listening on` line says after the mode: `", tls"`, `", proxy"`.
    pub fn suffix(self) -> &'static str {
        self.words().2
    }
}

/// How many worker processes `--workers` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    Count(usize),
    /// One per CPU (`auto`).
    PerCpu,
}

/// More worker processes than this is a typo, not a deployment.
const MAX_WORKERS: usize = 1024;

fn parse_workers(text: &str) -> Result<Workers, String> {
    if text == "auto" {
        return Ok(Workers::PerCpu);
    }
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(Workers::Count(n)),
        _ => Err(format!(
            "invalid worker count '{text}': expected 1 to {MAX_WORKERS}, or auto (one per CPU)"
        )),
    }
}

fn parse_listen_addr(text: &str) -> Result<HostPort, String> {
    text.parse().map_err(|e: wharf::AddrError| e.to_string())
}

/// Resolves addresses as typed, once; a host name's addresses are said on stderr.
fn resolve_all(flag: &str, specs: &[HostPort]) -> Result<Vec<SocketAddr>, String> {
    let mut addrs = Vec::new();
    for spec in specs {
        let resolved = spec
            .resolve()
            .map_err(|e| format!("{flag} {spec}: cannot resolve the host name: {e}"))?;
        if spec.is_name() {
            let list: Vec<String> = resolved.iter().map(ToString::to_string).collect();
            eprintln!("wharf: {flag} {spec} resolves to {}", list.join(", "));
        }
        addrs.extend(resolved);
    }
    Ok(addrs)
}

fn parse_cidr(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!(
                "invalid network '{text}': expected CIDR, e.g. 10.0.0.0/8, 127.0.0.1 or ::1/128"
            )
        })
}

/// The default `--max-conns-per-ip` of a server listening beyond loopback: one source
/// address (a client, or a NAT gateway for a few hundred users) can hold 256 connections,
/// 2.5 % of the default `--max-conns`, so no single host can take the server's slots from
/// everyone else. HAProxy and Redis leave per-source limits to the operator; a test service
/// pointed at the internet should not.
pub const EXPOSED_MAX_CONNS_PER_IP: usize = 256;

/// The reactor's clock tick: shorter timeouts are rounded up to it.
const TICK: Duration = Duration::from_millis(100);

/// A duration as people type it: a bare number is seconds, as it always was (`30`, `0.5`);
/// otherwise a number with a unit (`500ms`, `30s`, `5m`, `1h 30m`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<f64>() {
        if secs.is_finite() && (0.0..=1e9).contains(&secs) {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(format!("'{text}' seconds is out of range"));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("'{text}' is not a duration ({e}): a number of seconds, or e.g. 500ms, 30s, 5m")
    })
}

/// A size as people type it: a bare number is bytes, as it always was; otherwise a number
/// with a unit, binary or decimal as written: `KiB`, `MiB` count 1024s (`64KiB` = 65536),
/// `K`, `KB`, `M`, `MB` count 1000s (`1M` = 1000000), as the SI and `bytesize` have it.
fn parse_size(text: &str) -> Result<usize, String> {
    if let Ok(bytes) = text.parse::<usize>() {
        return Ok(bytes);
    }
    let bytes = text
        .parse::<bytesize::ByteSize>()
        .map_err(|e| {
            format!("'{text}' is not a size ({e}): a number of bytes, or e.g. 64KiB, 1MiB")
        })?
        .as_u64();
    usize::try_from(bytes).map_err(|_| format!("'{text}' is too large"))
}

/// A duration from the command line; 0 means "off".
fn seconds(duration: Duration) -> Option<Duration> {
    (!duration.is_zero()).then_some(duration)
}

impl ServerArgs {
    pub fn config(&self) -> Config {
        Config {
            // 0 turns the limit off, as for every limit flag (the open-files limit remains).
            max_conns: if self.max_conns == 0 {
                usize::MAX
            } else {
                self.max_conns
            },
            // The refusals' words are this server's protocol, not the library's.
            full_reply: Some(
                format!("ERR server full (max {} connections)\n", self.max_conns).into_bytes(),
            ),
            out_of_fds_reply: Some(b"ERR server full (out of file descriptors)\n".to_vec()),
            allow: self.allow.clone(),
            max_conns_per_ip: self.max_conns_per_ip(),
            max_accept_rate: self.max_accept_rate,
            auth_timeout: self.auth_timeout.max(TICK),
            tls_handshake_timeout: self.tls_handshake_timeout.max(TICK),
            proxy_header_timeout: self.proxy_timeout.max(TICK),
            lockout_failures: self.lockout_failures,
            lockout_window: self.lockout_secs,
            lockout_duration: self.lockout_secs,
            lockout_exempt: self.lockout_exempt.clone(),
            ipv6_prefix: self.ipv6_prefix,
            max_tracked_addresses: self.max_tracked_ips,
            high_water: self.max_outbuf,
            low_water: self.max_outbuf / 4,
            idle_timeout: seconds(self.idle_timeout),
            message_timeout: seconds(self.line_timeout),
            write_timeout: seconds(self.write_timeout),
            drain_timeout: self.drain_timeout,
            // A worker's parent asks for its counters (SIGUSR1) on its own timer, and sums them.
            stats_interval: seconds(self.stats_interval).filter(|_| self.worker_id.is_none()),
            ..Config::default()
        }
    }

    /// The settings of a line-based mode (line, chat) whose lines hold at most `max_line`
    /// bytes: the protocol refuses longer lines itself, with an error line, so the input
    /// limit must let them through to it.
    pub fn line_config(&self, max_line: usize) -> Config {
        Config {
            max_input: Config::default().max_input.max(max_line.saturating_add(1)),
            ..self.config()
        }
    }

    /// Where to listen in plain TCP: `--listen`, or 127.0.0.1:7000 when no address at all
    /// is given; in a worker, the addresses its parent resolved.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        const DEFAULT: &[SocketAddr] = &[SocketAddr::V4(std::net::SocketAddrV4::new(
            std::net::Ipv4Addr::LOCALHOST,
            7000,
        ))];
        match self.worker_id {
            Some(_) => &self.worker_listen,
            None if self.addrs.is_empty()
                && self.tls_addrs.is_empty()
                && self.proxy_addrs.is_empty()
                && self.proxy_tls_addrs.is_empty() =>
            {
                DEFAULT
            }
            None => &self.addrs,
        }
    }

    /// Where to listen for TLS: `--tls-listen`, or in a worker the addresses its parent
    /// resolved.
    pub fn tls_listen_addrs(&self) -> &[SocketAddr] {
        match self.worker_id {
            Some(_) => &self.worker_tls_listen,
            None => &self.tls_addrs,
        }
    }

    /// Every TCP listener of the service: plain, TLS, and behind a PROXY-protocol balancer.
    pub fn listeners(&self) -> Vec<Point> {
        if !self.activated.is_empty() {
            return (self.activated.iter())
                .filter_map(|(socket, role)| match role {
                    crate::systemd::Role::Service(kind) => Some((socket.local_addr().ok()?, *kind)),
                    crate::systemd::Role::Metrics => None,
                })
                .map(|(addr, kind)| Point { addr, kind })
                .collect();
        }
        let (proxy, proxy_tls) = match self.worker_id {
            Some(_) => (&self.worker_proxy_listen, &self.worker_proxy_tls_listen),
            None => (&self.proxy_addrs, &self.proxy_tls_addrs),
        };
        let kinds = [
            (self.listen_addrs(), Kind::PLAIN),
            (self.tls_listen_addrs(), Kind::TLS),
            (proxy.as_slice(), Kind::PROXY),
            (proxy_tls.as_slice(), Kind::PROXY_TLS),
        ];
        kinds
            .into_iter()
            .flat_map(|(addrs, kind)| addrs.iter().map(move |addr| Point { addr: *addr, kind }))
            .collect()
    }

    /// `--max-conns-per-ip`, or its default: [`EXPOSED_MAX_CONNS_PER_IP`] when any listener
    /// is beyond loopback, else no limit.
    pub fn max_conns_per_ip(&self) -> usize {
        self.max_conns_per_ip.unwrap_or_else(|| {
            let exposed = (self.listeners().iter()).any(|point| !point.addr.ip().is_loopback());
            if exposed {
                EXPOSED_MAX_CONNS_PER_IP
            } else {
                0
            }
        })
    }

    /// Whether `--max-conns-per-ip` was left to its default.
    pub fn max_conns_per_ip_defaulted(&self) -> bool {
        self.max_conns_per_ip.is_none()
    }

    /// `--stats-interval`.
    pub fn stats_interval(&self) -> Option<Duration> {
        seconds(self.stats_interval)
    }

    pub fn listen_options(&self, nodelay_by_default: bool) -> ListenOptions {
        ListenOptions {
            backlog: self.backlog,
            // Workers share their port with each other.
            reuseport: self.reuseport || self.worker_id.is_some(),
            v6only: self.v6only,
            nodelay: (nodelay_by_default || self.nodelay) && !self.no_nodelay,
            keepalive: seconds(self.keepalive),
        }
    }
}

impl Mode {
    /// The mode's name, as on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Echo { .. } => "echo",
            Mode::Line { .. } => "line",
            Mode::Chat { .. } => "chat",
        }
    }

    pub fn server_mut(&mut self) -> &mut ServerArgs {
        match self {
            Mode::Echo { server, .. } | Mode::Line { server, .. } | Mode::Chat { server, .. } => {
                server
            }
        }
    }

    pub fn server(&self) -> &ServerArgs {
        match self {
            Mode::Echo { server, .. } | Mode::Line { server, .. } | Mode::Chat { server, .. } => {
                server
            }
        }
    }

    /// Resolves every address given as typed (`--listen`, `--tls-listen`, `--udp`): host
    /// names are looked up once, here, at start.
    pub fn resolve(&mut self) -> Result<(), String> {
        if let Mode::Echo { udp_specs, udp, .. } = self {
            *udp = resolve_all("--udp", udp_specs)?;
        }
        let (Mode::Echo { server, .. } | Mode::Line { server, .. } | Mode::Chat { server, .. }) =
            self;
        server.addrs = resolve_all("--listen", &server.specs)?;
        server.tls_addrs = resolve_all("--tls-listen", &server.tls_specs)?;
        server.proxy_addrs = resolve_all("--proxy-listen", &server.proxy_specs)?;
        server.proxy_tls_addrs = resolve_all("--proxy-tls-listen", &server.proxy_tls_specs)?;
        let proxied = !server.proxy_addrs.is_empty()
            || !server.proxy_tls_addrs.is_empty()
            || server.listeners().iter().any(|point| point.kind.proxy);
        match (proxied, server.proxy_from.is_empty()) {
            (true, true) => {
                return Err(
                    "--proxy-listen needs --proxy-from CIDR: the load balancers \
                            trusted to send the PROXY header"
                        .into(),
                )
            }
            (false, false) => {
                return Err(
                    "--proxy-from needs a --proxy-listen (or --proxy-tls-listen) \
                            address to apply to"
                        .into(),
                )
            }
            _ => {}
        }
        server.metrics_addrs = resolve_all("--metrics-listen", &server.metrics_specs)?;
        Ok(())
    }

    /// The UDP addresses to serve (echo only).
    pub fn udp(&self) -> &[SocketAddr] {
        match self {
            Mode::Echo { udp, .. } => udp,
            _ => &[],
        }
    }
}

#[cfg(test)]
mod units {
    use super::{parse_duration, parse_size};
    use std::time::Duration;

    #[test]
    fn durations_are_seconds_when_bare_and_take_units() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("not a duration"));
        assert!(parse_duration("-1").unwrap_err().contains("out of range"));
    }

    #[test]
    fn sizes_are_bytes_when_bare_and_take_units() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64KB"), Ok(64_000));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert_eq!(parse_size("1M"), Ok(1_000_000), "M is SI, MiB binary");
    }
}
