//! The command line: subcommands and their flags, with defaults and help text.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::output::Output;
use crate::sources::{parse_sources, Sources};
use crate::spread::Spread;

/// A load generator for echo and line-echo TCP servers (any of them, not only wharf):
/// round-trip throughput and latency, idle-connection memory, connections per second.
#[derive(Parser, Debug)]
#[command(
    name = "wharf-bench",
    version,
    after_help = "Examples:\n  \
        wharf-bench pingpong --addr 127.0.0.1:7000 -c 100 -s 64 -d 5\n  \
        wharf-bench pingpong --addr 127.0.0.1:7000 -c 1000 --line --json\n  \
        wharf-bench hold --addr 127.0.0.1:7000 -c 10000 --src 127.0.0.1-127.0.0.16 --server-pid \"$(pgrep -n wharf)\"\n  \
        wharf-bench hold --addr 127.0.0.1:7000 -c 100000 --procs 6 --src 127.0.0.1-127.0.0.16 --server-pid \"$PID\"\n  \
        wharf-bench connect --addr 127.0.0.1:7000 -d 5\n  \
        wharf-bench pingpong --addr 127.0.0.1:7443 -c 100 --tls --tls-ca ca.pem\n  \
        wharf-bench connect --addr 127.0.0.1:7443 -c 1 -d 5 --tls --insecure --src 127.0.0.1-127.0.0.16\n  \
        wharf-bench sweep --addr 127.0.0.1:7000 --conns 1,10,100,1000,10000 --out sweep/\n  \
        wharf-bench chat --addr 127.0.0.1:7000 -c 1000 -d 5 --rate 5000 --src 127.0.0.1-127.0.0.16\n  \
        wharf-bench udp --addr 127.0.0.1:7000 -c 16 -s 64 -d 5\n\n\
        Exit status: 0 a clean run, 3 the run finished but counted errors, 1 it could not run, \
        2 bad arguments."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to measure.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Round trips: each connection keeps one message in flight and checks every byte of the
    /// reply. Reports round trips/s, MB/s, latency percentiles and errors.
    Pingpong(PingpongArgs),
    /// Opens CONNS connections, checks each with one round trip, then holds them idle.
    /// Reports established/failed, the growth of the kernel's slab memory per connection and,
    /// with --server-pid, the server's memory per connection (summed over its processes).
    Hold(HoldArgs),
    /// Connect, one round trip, close, as fast as possible. Reports connections/s; with --tls
    /// each connection is a full TLS handshake (no session resumption), so it is handshakes/s.
    ///
    /// Each closed connection holds a local port in TIME_WAIT for a minute, so at tens of
    /// thousands a second one source address runs out: on loopback add
    /// --src 127.0.0.1-127.0.0.16.
    Connect(ConnectArgs),
    /// Pingpong at each connection count; writes results.csv, results.json and plot.svg.
    Sweep(SweepArgs),
    /// Draws the results.json of one or more sweeps into one SVG plot.
    Plot(PlotArgs),
    /// Medians of many runs (JSON lines from --json, with --label and --scenario) as one
    /// table, with the ratio of two labels.
    Summary(SummaryArgs),
    /// Chat fan-out, open loop: CONNS clients join a line chat room (`wharf chat`, `ncat
    /// --chat`, any server that relays each line to every other client) and send timestamped
    /// lines in turn, --rate lines/s in all, on a schedule; every other client must receive
    /// each one, in order. Reports offered and delivered deliveries/s, the fraction
    /// delivered, fan-out latency percentiles, lines undelivered, and with --server-pid the
    /// server's CPU per delivery.
    Chat(ChatArgs),
    /// UDP round trips: each flow keeps one datagram in flight against a UDP echo server
    /// (RFC 862, e.g. `wharf echo --udp ADDR`) and checks every echoed byte. A datagram not
    /// answered within --loss-timeout counts as lost and the flow sends the next.
    Udp(UdpArgs),
}

/// Where to connect, and what to call the run.
#[derive(Args, Debug, Clone)]
pub struct Target {
    #[command(flatten)]
    pub peer: Peer,
    /// An exchange (or handshake) without a whole answer for this long counts as a timeout.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_seconds)]
    pub timeout: Duration,
    /// Most handshakes in flight at once while connecting, so the server's SYN and accept
    /// queues (backlog) are not overrun.
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = at_least(1))]
    pub connect_pace: u32,
    #[command(flatten)]
    pub output: Output,
}

/// The server, the addresses to reach it from, and its process (every TCP mode).
#[derive(Args, Debug, Clone)]
pub struct Peer {
    /// The server: IP:PORT, \[IPv6\]:PORT, HOST:PORT (its first address), or PORT (loopback).
    // The help is given again, without the escapes rustdoc needs and clap would print.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7000", value_parser = parse_addr,
          help = "The server: IP:PORT, [IPv6]:PORT, HOST:PORT (its first address), or PORT (loopback)")]
    pub addr: SocketAddr,
    /// Source addresses to spread connections over (bind before connect), each bringing
    /// its own range of local ports: 127.0.0.2, 127.0.0.1-127.0.0.16 or a comma list.
    #[arg(long, value_name = "ADDRS", value_parser = parse_sources)]
    pub src: Option<Sources>,
    /// Process id of the server: reports its CPU time per operation (a round trip, a
    /// connection, a chat delivery) and its memory, from /proc, summed over PID and every
    /// process descended from it (a server's workers).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
}

impl Peer {
    /// The source addresses of `--src`; none when the kernel picks.
    pub fn sources(&self) -> &[IpAddr] {
        self.src.as_ref().map_or(&[], |sources| &sources.0)
    }
}

/// What each pingpong connection sends.
#[derive(Args, Debug, Clone)]
pub struct Load {
    /// Bytes per message (in --line mode, including the \n).
    #[arg(short, long, value_name = "BYTES", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=16 * 1024 * 1024))]
    pub size: u32,
    /// Line-echo server: each message is SIZE-1 bytes without a newline, then \n.
    #[arg(long)]
    pub line: bool,
    /// How long to measure, in seconds (after all connections are up).
    #[arg(short, long, value_name = "SECS", default_value = "5", value_parser = parse_seconds)]
    pub duration: Duration,
}

/// `pingpong` flags.
#[derive(Args, Debug, Clone)]
pub struct PingpongArgs {
    #[command(flatten)]
    pub target: Target,
    /// Concurrent connections.
    #[arg(short, long, value_name = "CONNS", default_value_t = 1, value_parser = at_least(1))]
    pub conns: u32,
    #[command(flatten)]
    pub load: Load,
    #[command(flatten)]
    pub spread: Spread,
    // Last: its help heading (TLS) would hold for the flags after it.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// `hold` flags.
#[derive(Args, Debug, Clone)]
pub struct HoldArgs {
    #[command(flatten)]
    pub target: Target,
    /// Connections to open and hold.
    #[arg(short, long, value_name = "CONNS", default_value_t = 1000,
          value_parser = at_least(1))]
    pub conns: u32,
    /// How long to hold them once all are up, in seconds.
    #[arg(short, long, value_name = "SECS", default_value = "5", value_parser = parse_seconds)]
    pub duration: Duration,
    #[command(flatten)]
    pub spread: Spread,
    // Last: its help heading (TLS) would hold for the flags after it.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// TLS to the server (`pingpong`, `hold`, `connect`). Every connection makes a full
/// handshake before its first round trip; the client keeps no sessions to resume.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "TLS")]
pub struct TlsArgs {
    /// Speak TLS (rustls, ring provider) to the server: connections complete a full handshake
    /// before their first round trip (and pingpong's clock starts), and every echoed byte is
    /// checked after decryption. Needs --tls-ca or --insecure.
    #[arg(long, requires = "trust")]
    pub tls: bool,
    /// Trust the server certificates this CA signed (PEM; every certificate in the file).
    #[arg(long, value_name = "FILE", requires = "tls", group = "trust")]
    pub tls_ca: Option<PathBuf>,
    /// Accept any server certificate (self-signed test certificates). Its signature over the
    /// handshake is still checked, so the server does the same work as with --tls-ca.
    #[arg(long, requires = "tls", group = "trust")]
    pub insecure: bool,
    /// The name the server's certificate must carry [default: the IP address of --addr].
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub tls_server_name: Option<String>,
    /// Offer only this TLS version [default: both, 1.3 preferred].
    #[arg(long, value_name = "VERSION", requires = "tls")]
    pub tls_version: Option<TlsVersion>,
    /// A client certificate chain (PEM) to present to a server that asks for one (mTLS).
    #[arg(long, value_name = "FILE", requires_all = ["tls", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires_all = ["tls", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
}

/// A TLS protocol version, as `--tls-version` names it.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[value(name = "1.2")]
    Tls12,
    /// TLS 1.3.
    #[value(name = "1.3")]
    Tls13,
}

/// Refuses `--tls` (exit status 2, as for any bad argument) in a build without the `tls`
/// feature, which has no TLS to speak.
#[cfg(not(feature = "tls"))]
pub fn refuse_tls(cli: &Cli) {
    use clap::CommandFactory;
    let asked = match &cli.command {
        Command::Pingpong(args) => args.tls.tls,
        Command::Hold(args) => args.tls.tls,
        Command::Connect(args) => args.tls.tls,
        _ => false,
    };
    if asked {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--tls: this wharf-bench was built without TLS (the `tls` feature, on by \
                 default): rebuild with `cargo build --release --bin wharf-bench`",
            )
            .exit();
    }
}

/// `connect` flags.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub target: Target,
    /// Connections in flight at once.
    #[arg(short, long, value_name = "N", default_value_t = 16, value_parser = at_least(1))]
    pub concurrency: u32,
    /// How long to measure, in seconds.
    #[arg(short, long, value_name = "SECS", default_value = "5", value_parser = parse_seconds)]
    pub duration: Duration,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// `sweep` flags.
#[derive(Args, Debug, Clone)]
pub struct SweepArgs {
    #[command(flatten)]
    pub target: Target,
    /// Connection counts to run pingpong at, in order.
    #[arg(long, value_name = "LIST", default_value = "1,10,100,1000,10000", value_delimiter = ',',
          value_parser = at_least(1))]
    pub conns: Vec<u32>,
    #[command(flatten)]
    pub load: Load,
    /// Directory for results.csv, results.json and plot.svg (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `chat` flags.
#[derive(Args, Debug, Clone)]
pub struct ChatArgs {
    #[command(flatten)]
    pub peer: Peer,
    /// Chat clients in the room.
    #[arg(short, long, value_name = "CONNS", default_value_t = 10, value_parser = at_least(2))]
    pub conns: u32,
    /// Lines per second over all clients together (not per client), sent in turn by one
    /// client after another on a fixed schedule, whether or not anything comes back (open
    /// loop). Each line is CONNS-1 deliveries.
    #[arg(long, value_name = "LINES_PER_S", default_value = "1000", value_parser = parse_rate)]
    pub rate: f64,
    /// How long to send, in seconds (after every client has joined).
    #[arg(short, long, value_name = "SECS", default_value = "5", value_parser = parse_seconds)]
    pub duration: Duration,
    /// Most connects in flight at once while joining, so the server's SYN and accept queues
    /// are not overrun. A server that accepts slowly behind a short listen backlog leaves
    /// the connections beyond it half-open, never joined: for `ncat --chat` use 8.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = at_least(1))]
    pub join_concurrency: u32,
    /// Joining (every connect, then the barrier) must be done within this long; clients not
    /// in the room by then are dropped and counted as timeouts.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_seconds)]
    pub timeout: Duration,
    /// Also join N members that never read (a 4 KiB receive buffer), before the others, and
    /// hold them to the end: the server must throttle or drop them without slowing the room.
    /// They are not clients of the count: nothing is expected of them.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub silent: u32,
    #[command(flatten)]
    pub output: Output,
}

impl ChatArgs {
    /// The run's target, for the checks every mode makes before it starts.
    pub fn target(&self) -> Target {
        Target {
            peer: self.peer.clone(),
            timeout: self.timeout,
            connect_pace: self.join_concurrency,
            output: self.output.clone(),
        }
    }
}

/// `udp` flags.
#[derive(Args, Debug, Clone)]
pub struct UdpArgs {
    /// The UDP echo server: IP:PORT, \[IPv6\]:PORT, HOST:PORT (its first address), or PORT
    /// (loopback).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7000", value_parser = parse_addr,
          help = "The UDP echo server: IP:PORT, [IPv6]:PORT, HOST:PORT (its first address), or \
                  PORT (loopback)")]
    pub addr: SocketAddr,
    /// Flows: sockets, each with one datagram in flight.
    #[arg(short = 'c', long, value_name = "FLOWS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub flows: u32,
    /// Bytes per datagram (at most 65507, the most an IPv4 UDP datagram carries).
    #[arg(short, long, value_name = "BYTES", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=65_507))]
    pub size: u32,
    /// How long to measure, in seconds.
    #[arg(short, long, value_name = "SECS", default_value = "5", value_parser = parse_seconds)]
    pub duration: Duration,
    /// A datagram without its echo for this long counts as lost; the flow sends the next.
    #[arg(long, value_name = "SECS", default_value = "0.2", value_parser = parse_seconds)]
    pub loss_timeout: Duration,
    #[command(flatten)]
    pub output: Output,
}

/// `plot` flags.
#[derive(Args, Debug, Clone)]
pub struct PlotArgs {
    /// The SVG file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// A title above the plot.
    #[arg(long, value_name = "TEXT", default_value = "pingpong sweep")]
    pub title: String,
    /// results.json files written by `sweep`; each becomes one line, named by its --label.
    #[arg(required = true, value_name = "RESULTS_JSON")]
    pub inputs: Vec<PathBuf>,
}

/// `summary` flags.
#[derive(Args, Debug, Clone)]
pub struct SummaryArgs {
    /// A file of JSON lines, one run each, as printed by --json.
    #[arg(value_name = "RUNS_JSONL")]
    pub runs: PathBuf,
    /// Add a ratio column A/B of two labels' medians, e.g. wharf/tokio.
    #[arg(long, value_name = "A/B")]
    pub ratio: Option<String>,
}

/// Parses an address as people type it (`7000` and `:7000` mean loopback, `HOST:PORT` is
/// looked up now, and the first address it resolves to is used).
fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let spec: wharf::HostPort = text.parse().map_err(|e: wharf::AddrError| e.to_string())?;
    let addrs = spec
        .resolve()
        .map_err(|e| format!("cannot resolve '{spec}': {e}"))?;
    Ok(addrs[0])
}

/// A count of at least `min`.
fn at_least(min: i64) -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(min..)
}

/// Parses a duration in seconds, fractions allowed ("2", "0.5").
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = match text.parse() {
        Ok(seconds) => seconds,
        // With a unit: 500ms, 30s, 5m.
        Err(_) => humantime::parse_duration(text)
            .map_err(|_| {
                format!("'{text}' is not a duration: a number of seconds, or e.g. 500ms, 5m")
            })?
            .as_secs_f64(),
    };
    if !(seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!(
            "'{text}' seconds is out of range (more than 0, at most a day)"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a message rate per second, fractions allowed ("10", "0.5").
fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of messages per second"))?;
    if !(rate > 0.0 && rate <= 1_000_000.0) {
        return Err(format!(
            "'{text}' messages per second is out of range (more than 0, at most a million)"
        ));
    }
    Ok(rate)
}
