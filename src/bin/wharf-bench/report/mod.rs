//! What a run reports: one struct per mode, printed as text for people or as one JSON object
//! per line (`--json`) for scripts. JSON keys are stable; figures that were not measured
//! (no `--server-pid`) are `null`, never missing.
//!
//! Everything that formats results lives under here, apart from the code that measures
//! them (which fills the plain structs of `tcp.rs`, `chat.rs` and `udp.rs`): the text of
//! each report, the JSON, `sweep`'s table and CSV (`sweep.rs`) and plot (`plot.rs`), and
//! `summary`'s table of many runs (`summary.rs`).

use std::fmt::Write as _;

use serde::Serialize;

use std::net::SocketAddr;

use crate::error::BenchError;
use crate::failure::Tally;
use crate::figures::{LatencySummary, ServerFigures};
use crate::output::Output;

mod chat;
pub mod plot;
pub mod summary;
pub mod sweep;
mod tcp;
mod udp;

pub use chat::ChatReport;
pub use tcp::{ConnectReport, HoldReport, PingpongReport};
pub use udp::UdpReport;

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
    pub label: Option<String>,
    /// `--scenario`: the group this run belongs to in a comparison.
    pub scenario: Option<String>,
    pub addr: String,
}

impl RunId {
    /// The identity of a `mode` run against `addr`, named as `output` says.
    pub fn new(mode: &'static str, addr: SocketAddr, output: &Output) -> RunId {
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

/// Whether a run spoke TLS, and what its handshakes agreed on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TlsFigures {
    /// `--tls`: every connection made a full TLS handshake (the client resumes no session)
    /// before its first round trip.
    pub tls: bool,
    /// The TLS version the handshakes agreed on: "1.3", "1.2" or "mixed"; `null` without TLS
    /// or when no handshake completed.
    pub tls_version: Option<String>,
}

impl TlsFigures {
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

pub(super) fn latency_text(out: &mut String, latency: &LatencySummary) {
    let _ = writeln!(
        out,
        "  latency (us)  p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        latency.p50_us, latency.p99_us, latency.p999_us, latency.max_us
    );
}

pub(super) fn connections_text(out: &mut String, established: u64, failed: u64, establish_s: f64) {
    let _ = writeln!(
        out,
        "  connections   {established} established, {failed} failed ({establish_s:.2} s to connect)"
    );
}

/// A line for runs spread over several client processes; none for the usual one.
pub(super) fn client_procs_text(out: &mut String, procs: u32) {
    if procs > 1 {
        let _ = writeln!(out, "  clients       {procs} processes");
    }
}

/// The server's CPU time per operation (`per`), when it was measured.
pub(super) fn server_text(out: &mut String, server: &ServerFigures, per: &str) {
    let (Some(pid), Some(user), Some(sys)) = (
        server.server_pid,
        server.server_user_ns_per_op,
        server.server_sys_ns_per_op,
    ) else {
        return;
    };
    let total = server
        .server_cpu_ns_per_op
        .map(|cpu| format!(", total {cpu:.0}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  server CPU    user {user:.0} ns/{per}, sys {sys:.0} ns/{per}{total} ({})",
        processes_text(pid, server.server_procs)
    );
}

/// `pid 42`, or `pid 42 and 3 descendants` for a server with worker processes.
pub(super) fn processes_text(pid: u32, procs: Option<u32>) -> String {
    match procs {
        Some(procs) if procs > 1 => format!("pid {pid} and {} descendants", procs - 1),
        _ => format!("pid {pid}"),
    }
}

pub(super) fn errors_text(out: &mut String, errors: u64, tally: &Tally) {
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

/// Prints a report as text or as one line of JSON; returns its failure count.
pub fn print(report: &impl Report, json: bool) -> Result<u64, BenchError> {
    if json {
        println!("{}", to_json(report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(report.errors())
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
