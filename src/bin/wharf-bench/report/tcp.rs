//! The reports of the TCP echo modes: pingpong, hold and connect.

use std::fmt::Write as _;

use serde::Serialize;

use super::*;

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
        let mode = if self.line { "line" } else { "echo" };
        let mut out = format!(
            "{}: {} x {} B {mode} messages, {:.1} s\n",
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
        server_text(&mut out, &self.server, "round trip");
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
        let mut out = format!(
            "{}: {} idle connections, held {:.1} s\n",
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
        let handshake = match self.tls.name() {
            Some(_) => "TLS handshake, ",
            None => "",
        };
        let mut out = format!(
            "{}: connect, {handshake}round trip, close; {} in flight, {:.1} s\n",
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
        server_text(&mut out, &self.server, "connection");
        out
    }
}
