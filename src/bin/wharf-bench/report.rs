//! What a run reports: one struct per mode, printed as text for people or as one JSON object
//! per line (`--json`) for scripts. JSON keys are stable; figures that were not measured
//! (no `--server-pid`) are `null`, never missing.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::cli::{Output, Target};
use crate::client::Client;
use crate::error::BenchError;
use crate::failure::Tally;
use crate::latency::LatencySummary;
use crate::server::{ServerCost, ServerProbe, ServerSample};

/// A finished run, in any mode.
pub trait Report: Serialize {
    /// Every failure counted; non-zero makes the exit status 3.
    fn errors(&self) -> u64;
    /// The human-readable form, several lines.
    fn text(&self) -> String;
}

/// Names and address common to every report.
#[derive(Debug, Clone, Serialize)]
pub struct RunId {
    /// `pingpong`, `hold`, `connect`, `chat` or `udp`.
    pub mode: &'static str,
    /// `--label`: the server under test.
    pub label: Option<String>,
    /// `--scenario`: the group this run belongs to in a comparison.
    pub scenario: Option<String>,
    /// The server address.
    pub addr: String,
}

impl RunId {
    /// The identity of a `mode` run against `target`.
    pub fn new(mode: &'static str, target: &Target) -> RunId {
        RunId {
            mode,
            label: target.output.label.clone(),
            scenario: target.output.scenario.clone(),
            addr: target.addr.to_string(),
        }
    }

    /// The identity of a `mode` run against `addr`, for modes without a [`Target`].
    pub fn named(mode: &'static str, addr: std::net::SocketAddr, output: &Output) -> RunId {
        RunId {
            mode,
            label: output.label.clone(),
            scenario: output.scenario.clone(),
            addr: addr.to_string(),
        }
    }

    fn heading(&self) -> String {
        match &self.label {
            Some(label) => format!("{} {} ({label})", self.mode, self.addr),
            None => format!("{} {}", self.mode, self.addr),
        }
    }
}

/// The server's side of a run (`--server-pid`); all `null` without it.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ServerFigures {
    /// The process measured, with its descendants (worker processes).
    pub server_pid: Option<u32>,
    /// Processes measured and summed: the server process and its descendants.
    pub server_procs: Option<u32>,
    /// Server user-space CPU time per operation (round trip or connection), in nanoseconds.
    pub server_user_ns_per_op: Option<f64>,
    /// Server kernel CPU time per operation, in nanoseconds.
    pub server_sys_ns_per_op: Option<f64>,
    /// Server total CPU time per operation, in nanoseconds (nanosecond-precise).
    pub server_cpu_ns_per_op: Option<f64>,
    /// Server resident memory at the end of the measured interval, in bytes (summed over
    /// its processes).
    pub server_rss_bytes: Option<u64>,
}

impl ServerFigures {
    /// Figures of server `pid` from its CPU `cost` and its sample at the end.
    pub fn measured(pid: u32, cost: ServerCost, end: &ServerSample) -> ServerFigures {
        ServerFigures {
            server_pid: Some(pid),
            server_procs: Some(end.processes),
            server_user_ns_per_op: Some(cost.user_ns_per_op),
            server_sys_ns_per_op: Some(cost.sys_ns_per_op),
            server_cpu_ns_per_op: cost.cpu_ns_per_op,
            server_rss_bytes: Some(end.rss_bytes),
        }
    }

    /// Figures of the server `probe` reads, from its samples at the two ends of an interval
    /// of `ops` operations; all `null` without a probe.
    pub fn between(
        probe: Option<&ServerProbe>,
        before: Option<ServerSample>,
        after: Option<ServerSample>,
        ops: u64,
    ) -> ServerFigures {
        match (probe, before, after) {
            (Some(probe), Some(before), Some(after)) => {
                ServerFigures::measured(probe.pid(), probe.cost(&before, &after, ops), &after)
            }
            _ => ServerFigures::default(),
        }
    }

    fn text(&self, out: &mut String, per: &str) {
        let (Some(pid), Some(user), Some(sys)) = (
            self.server_pid,
            self.server_user_ns_per_op,
            self.server_sys_ns_per_op,
        ) else {
            return;
        };
        let total = self
            .server_cpu_ns_per_op
            .map(|cpu| format!(", total {cpu:.0}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  server CPU    user {user:.0} ns/{per}, sys {sys:.0} ns/{per}{total} ({})",
            processes_text(pid, self.server_procs)
        );
    }
}

/// Whether a run spoke TLS, and what its handshakes agreed on (also read back from the
/// reports of the client processes of a `--procs` run).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsFigures {
    /// `--tls`: every connection made a full TLS handshake (the client resumes no session)
    /// before its first round trip.
    pub tls: bool,
    /// The TLS version the handshakes agreed on: "1.3", "1.2" or "mixed"; `null` without TLS
    /// or when no handshake completed.
    pub tls_version: Option<String>,
}

impl TlsFigures {
    /// The figures of a run over `client`'s connections.
    pub fn of(client: &Client) -> TlsFigures {
        TlsFigures {
            tls: client.tls(),
            tls_version: client.tls_version().map(str::to_string),
        }
    }

    /// The figures of a run spread over client processes, from theirs.
    pub fn merged<'a>(tls: bool, versions: impl Iterator<Item = Option<&'a str>>) -> TlsFigures {
        let mut agreed: Option<&str> = None;
        for version in versions.flatten() {
            agreed = match agreed {
                Some(seen) if seen != version => Some("mixed"),
                _ => Some(version),
            };
        }
        TlsFigures {
            tls,
            tls_version: agreed.map(str::to_string),
        }
    }

    /// "TLS 1.3", or "TLS" before any handshake completed; `None` for plain TCP.
    fn name(&self) -> Option<String> {
        if !self.tls {
            return None;
        }
        Some(match &self.tls_version {
            Some(version) => format!("TLS {version}"),
            None => "TLS".to_string(),
        })
    }

    fn text(&self, out: &mut String) {
        if let Some(name) = self.name() {
            let _ = writeln!(
                out,
                "  tls           {name}, a full handshake per connection"
            );
        }
    }
}

/// `pingpong`: round trips with one message in flight per connection.
#[derive(Debug, Clone, Serialize)]
pub struct PingpongReport {
    #[serde(flatten)]
    pub id: RunId,
    /// Connections asked for (`-c`).
    pub connections: u64,
    /// Bytes per message, each way.
    pub size: u64,
    /// Line mode (`--line`).
    pub line: bool,
    /// The measured interval, in seconds.
    pub duration_s: f64,
    /// Round trips completed in the interval.
    pub round_trips: u64,
    /// Round trips per second.
    pub round_trips_per_s: f64,
    /// Echoed payload per second, one way, in MB (10^6 bytes).
    pub mb_per_s: f64,
    #[serde(flatten)]
    pub latency: LatencySummary,
    /// Every failure: failed connects, resets, early closes, mismatches, timeouts.
    pub errors: u64,
    /// Connections whose first round trip succeeded before the measurement.
    pub connects_established: u64,
    /// Connections that failed before their first round trip completed.
    pub connects_failed: u64,
    /// Time to open all connections, in seconds.
    pub establish_s: f64,
    /// The failures, by kind.
    pub errors_by_kind: Tally,
    /// Client processes the connections were spread over (`--procs`).
    pub client_procs: u32,
    #[serde(flatten)]
    pub tls: TlsFigures,
    #[serde(flatten)]
    pub server: ServerFigures,
    /// Only in the report a client process of a `--procs` run gives its parent: its
    /// latencies as (nanoseconds, count) pairs, to merge (see `latency.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_histogram: Option<Vec<(u64, u64)>>,
}

impl Report for PingpongReport {
    fn errors(&self) -> u64 {
        self.errors
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let mode = if self.line { "line" } else { "echo" };
        let _ = writeln!(
            out,
            "{}: {} x {} B {mode} messages, {:.1} s",
            self.id.heading(),
            self.connections,
            self.size,
            self.duration_s
        );
        let _ = writeln!(
            out,
            "  round trips   {} ({:.0}/s, {:.2} MB/s each way)",
            self.round_trips, self.round_trips_per_s, self.mb_per_s
        );
        latency_text(&mut out, &self.latency);
        connections_text(
            &mut out,
            self.connects_established,
            self.connects_failed,
            self.establish_s,
        );
        self.tls.text(&mut out);
        client_procs_text(&mut out, self.client_procs);
        errors_text(&mut out, self.errors, &self.errors_by_kind);
        self.server.text(&mut out, "round trip");
        out
    }
}

/// `hold`: idle connections held open.
#[derive(Debug, Clone, Serialize)]
pub struct HoldReport {
    #[serde(flatten)]
    pub id: RunId,
    /// Connections asked for (`-c`).
    pub connections: u64,
    /// Connections up (first round trip done) and still open at the end of the hold.
    pub established: u64,
    /// Connections that failed before their first round trip completed.
    pub connects_failed: u64,
    /// Every failure, held connections the server dropped included.
    pub errors: u64,
    /// Time to open all connections, in seconds.
    pub establish_s: f64,
    /// How long they were held, in seconds.
    pub hold_s: f64,
    /// The failures, by kind.
    pub errors_by_kind: Tally,
    /// Client processes the connections were spread over (`--procs`).
    pub client_procs: u32,
    #[serde(flatten)]
    pub tls: TlsFigures,
    /// The server process measured, with its descendants (worker processes).
    pub server_pid: Option<u32>,
    /// Processes measured and summed at the end of the hold: the server and its descendants.
    pub server_procs: Option<u32>,
    /// Server resident memory before the first connection, in bytes (summed over its
    /// processes).
    pub server_rss_before_bytes: Option<u64>,
    /// Server resident memory at the end of the hold, in bytes (summed over its processes).
    pub server_rss_holding_bytes: Option<u64>,
    /// (holding - before) / established, in bytes: what one idle connection costs the
    /// server's user space (socket buffers in the kernel are not in RSS).
    pub server_rss_per_conn_bytes: Option<f64>,
    /// The kernel's slab memory (`Slab:` in /proc/meminfo) before the first connection.
    pub kernel_slab_before_bytes: Option<u64>,
    /// The same at the end of the hold.
    pub kernel_slab_holding_bytes: Option<u64>,
    /// (holding - before) / established, in bytes: what one connection costs this machine's
    /// kernel; on loopback both its ends, the client's socket and the server's.
    pub kernel_slab_per_conn_bytes: Option<f64>,
}

impl Report for HoldReport {
    fn errors(&self) -> u64 {
        self.errors
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {} idle connections, held {:.1} s",
            self.id.heading(),
            self.connections,
            self.hold_s
        );
        connections_text(
            &mut out,
            self.established,
            self.connects_failed,
            self.establish_s,
        );
        self.tls.text(&mut out);
        client_procs_text(&mut out, self.client_procs);
        errors_text(&mut out, self.errors, &self.errors_by_kind);
        if let (Some(before), Some(holding), Some(per_conn)) = (
            self.server_rss_before_bytes,
            self.server_rss_holding_bytes,
            self.server_rss_per_conn_bytes,
        ) {
            let processes = match self.server_procs {
                Some(procs) if procs > 1 => format!(" ({procs} processes)"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "  server RSS    {:.1} MiB before, {:.1} MiB holding{processes}: {per_conn:.0} bytes per connection",
                before as f64 / 1048576.0,
                holding as f64 / 1048576.0
            );
        }
        if let (Some(before), Some(holding), Some(per_conn)) = (
            self.kernel_slab_before_bytes,
            self.kernel_slab_holding_bytes,
            self.kernel_slab_per_conn_bytes,
        ) {
            let _ = writeln!(
                out,
                "  kernel slab   {:.1} MiB before, {:.1} MiB holding: {per_conn:.0} bytes per connection (machine-wide)",
                before as f64 / 1048576.0,
                holding as f64 / 1048576.0
            );
        }
        out
    }
}

/// `connect`: connect, one round trip, close.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectReport {
    #[serde(flatten)]
    pub id: RunId,
    /// Connections in flight at once (`-c`).
    pub concurrency: u64,
    /// The measured interval, in seconds.
    pub duration_s: f64,
    /// Connections that completed connect, round trip and close (with `tls`, each a full
    /// TLS handshake too).
    pub connections: u64,
    /// Completed connections per second: with `tls`, full handshakes per second.
    pub connections_per_s: f64,
    /// Latency of the whole connect + round trip.
    #[serde(flatten)]
    pub latency: LatencySummary,
    /// Every failure.
    pub errors: u64,
    /// Handshakes that failed.
    pub connects_failed: u64,
    /// The failures, by kind.
    pub errors_by_kind: Tally,
    #[serde(flatten)]
    pub tls: TlsFigures,
    #[serde(flatten)]
    pub server: ServerFigures,
}

impl Report for ConnectReport {
    fn errors(&self) -> u64 {
        self.errors
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let handshake = match self.tls.name() {
            Some(_) => "TLS handshake, ",
            None => "",
        };
        let _ = writeln!(
            out,
            "{}: connect, {handshake}round trip, close; {} in flight, {:.1} s",
            self.id.heading(),
            self.concurrency,
            self.duration_s
        );
        let each = match self.tls.name() {
            Some(name) => format!(", each a full {name} handshake"),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "  connections   {} ({:.0}/s){each}",
            self.connections, self.connections_per_s
        );
        latency_text(&mut out, &self.latency);
        errors_text(&mut out, self.errors, &self.errors_by_kind);
        self.server.text(&mut out, "connection");
        out
    }
}

/// `chat`: lines fanned out through a chat room.
#[derive(Debug, Clone, Serialize)]
pub struct ChatReport {
    #[serde(flatten)]
    pub id: RunId,
    /// Clients asked for (`-c`).
    pub connections: u64,
    /// Lines each client was asked to send per second (`--rate`).
    pub rate_per_conn: f64,
    /// The sending interval, in seconds.
    pub duration_s: f64,
    /// Clients that joined (connected and were announced to the others) before sending.
    pub joined: u64,
    /// Time from the first connect until every client had been announced, in seconds.
    pub join_s: f64,
    /// Lines sent in the interval.
    pub sent: u64,
    /// Lines received from other clients (each sent line counts once per receiver).
    pub deliveries: u64,
    /// sent x (joined - 1): every line to every other client.
    pub expected: u64,
    /// Deliveries per second of the sending interval.
    pub deliveries_per_s: f64,
    /// Fan-out latency: from a line's send to its arrival at one receiver.
    #[serde(flatten)]
    pub latency: LatencySummary,
    /// Every failure: missing, out of order, unparsable lines and connection failures.
    pub errors: u64,
    /// Expected deliveries that never came (counted after the drain).
    pub missing: u64,
    /// Deliveries whose sequence number was not above the last one from the same sender.
    pub out_of_order: u64,
    /// Lines that are neither `* ` announcements nor this tool's own lines.
    pub bad_lines: u64,
    /// Connection failures, by kind.
    pub errors_by_kind: Tally,
}

impl Report for ChatReport {
    fn errors(&self) -> u64 {
        self.errors
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {} clients x {} lines/s, {:.1} s",
            self.id.heading(),
            self.connections,
            self.rate_per_conn,
            self.duration_s
        );
        let _ = writeln!(
            out,
            "  joined        {} ({:.2} s until all were announced)",
            self.joined, self.join_s
        );
        let _ = writeln!(
            out,
            "  lines         {} sent, {} of {} deliveries ({:.0}/s)",
            self.sent, self.deliveries, self.expected, self.deliveries_per_s
        );
        latency_text(&mut out, &self.latency);
        let _ = writeln!(
            out,
            "  chat errors   {} missing, {} out of order, {} bad lines",
            self.missing, self.out_of_order, self.bad_lines
        );
        errors_text(&mut out, self.errors, &self.errors_by_kind);
        out
    }
}

/// `udp`: datagram round trips, one in flight per flow.
#[derive(Debug, Clone, Serialize)]
pub struct UdpReport {
    #[serde(flatten)]
    pub id: RunId,
    /// Flows asked for (`-c`).
    pub flows: u64,
    /// Bytes per datagram, each way.
    pub size: u64,
    /// The measured interval, in seconds.
    pub duration_s: f64,
    /// Datagrams echoed intact in the interval.
    pub round_trips: u64,
    /// Round trips per second.
    pub round_trips_per_s: f64,
    #[serde(flatten)]
    pub latency: LatencySummary,
    /// Every failure: lost, mismatched, socket errors.
    pub errors: u64,
    /// Datagrams without an echo within the loss timeout.
    pub lost: u64,
    /// Echoes of a lost datagram that came after all (ignored, not errors).
    pub late: u64,
    /// Echoes that differ from what was sent.
    pub mismatches: u64,
    /// Failed sends and receives (for example ICMP port unreachable: nothing listening).
    pub socket_errors: u64,
    /// The first failure, word for word.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl Report for UdpReport {
    fn errors(&self) -> u64 {
        self.errors
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {} flows x {} B datagrams, {:.1} s",
            self.id.heading(),
            self.flows,
            self.size,
            self.duration_s
        );
        let _ = writeln!(
            out,
            "  round trips   {} ({:.0}/s)",
            self.round_trips, self.round_trips_per_s
        );
        latency_text(&mut out, &self.latency);
        let _ = writeln!(
            out,
            "  errors        {} ({} lost, {} mismatches, {} socket errors; {} late echoes)",
            self.errors, self.lost, self.mismatches, self.socket_errors, self.late
        );
        if let Some(first) = &self.first_error {
            let _ = writeln!(out, "  first error   {first}");
        }
        out
    }
}

fn latency_text(out: &mut String, latency: &LatencySummary) {
    let _ = writeln!(
        out,
        "  latency (us)  p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        latency.p50_us, latency.p99_us, latency.p999_us, latency.max_us
    );
}

fn connections_text(out: &mut String, established: u64, failed: u64, establish_s: f64) {
    let _ = writeln!(
        out,
        "  connections   {established} established, {failed} failed ({establish_s:.2} s to connect)"
    );
}

/// A line for runs spread over several client processes; none for the usual one.
fn client_procs_text(out: &mut String, procs: u32) {
    if procs > 1 {
        let _ = writeln!(out, "  clients       {procs} processes");
    }
}

/// `pid 42`, or `pid 42 and 3 descendants` for a server with worker processes.
fn processes_text(pid: u32, procs: Option<u32>) -> String {
    match procs {
        Some(procs) if procs > 1 => format!("pid {pid} and {} descendants", procs - 1),
        _ => format!("pid {pid}"),
    }
}

fn errors_text(out: &mut String, errors: u64, tally: &Tally) {
    // TLS failures are named only when there are some, so plain runs read as they always did.
    let tls = match tally.tls_errors {
        0 => String::new(),
        count => format!(", {count} TLS"),
    };
    let _ = writeln!(
        out,
        "  errors        {errors} ({} connect, {} resets, {} closed, {} mismatches, {} timeouts{tls}, {} other)",
        tally.connect_failed, tally.resets, tally.closed, tally.mismatches, tally.timeouts, tally.other
    );
    if let Some(first) = &tally.first {
        let _ = writeln!(out, "  first error   {first}");
    }
}

/// A value as one line of JSON (the `--json` output).
pub fn to_json(value: &impl Serialize) -> Result<String, BenchError> {
    serde_json::to_string(value)
        .map_err(|error| BenchError::io("encoding JSON", std::io::Error::other(error)))
}

/// A value as indented JSON (the files `sweep` writes).
pub fn to_json_pretty(value: &impl Serialize) -> Result<String, BenchError> {
    serde_json::to_string_pretty(value)
        .map_err(|error| BenchError::io("encoding JSON", std::io::Error::other(error)))
}
