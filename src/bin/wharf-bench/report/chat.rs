//! The report of `chat`: fan-out through a chat room.

use std::fmt::Write as _;

use serde::Serialize;

use super::*;

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
