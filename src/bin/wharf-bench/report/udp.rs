//! The report of `udp`: datagram round trips.

use std::fmt::Write as _;

use serde::Serialize;

use super::*;

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
        let mut out = format!(
            "{}: {} flows x {} B datagrams, {:.1} s\n",
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
