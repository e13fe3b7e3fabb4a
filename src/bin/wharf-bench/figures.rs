//! Figures that measuring code computes and reports carry: the latency percentiles
//! (`latency.rs`) and the server's side of a run (`--server-pid`, `server.rs`).

use serde::Serialize;

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

/// The percentiles a report shows, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Slowest.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}
