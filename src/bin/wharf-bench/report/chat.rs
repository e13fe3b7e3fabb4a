//! The report of `chat`: open-loop fan-out through a chat room.

use std::fmt::Write as _;

use serde::Serialize;

use super::*;

/// `chat`: lines sent on a schedule, fanned out through a chat room.
#[derive(Debug, Clone, Serialize)]
pub struct ChatReport {
    #[serde(flatten)]
    pub id: RunId,
    /// Clients asked for (`-c`).
    pub conns: u64,
    /// Clients in the room when the window began (past the barrier).
    pub joined: u64,
    /// `--silent`: members that never read, held through the run besides the clients.
    pub silent: u64,
    /// From the first connect until every client had passed the barrier, in seconds.
    pub join_secs: f64,
    /// `--rate`: lines per second over all clients.
    pub rate: f64,
    /// The sending window, in seconds.
    pub duration_s: f64,
    /// Lines due in the window, per second.
    pub offered_lines_per_s: f64,
    /// Lines due x (conns - 1), per second: what a server delivering everything delivers.
    pub offered_deliveries_per_s: f64,
    /// Lines sent (written at once or queued).
    pub sent: u64,
    /// Lines that waited in the sender's queue because its socket was full.
    pub queued: u64,
    /// Lines due but not sent: the sender's socket and queue were full, or it had failed.
    pub unsent: u64,
    /// The latest a line went out after it was due, in microseconds: the client's own lag.
    pub max_send_lag_us: f64,
    /// Deliveries the lines sent should make (each to every other client in the room).
    pub expected: u64,
    /// Deliveries received of the window's lines, during the window or the drain.
    pub received: u64,
    /// Deliveries received per second of the window.
    pub delivered_deliveries_per_s: f64,
    /// received / expected.
    pub delivered_fraction: f64,
    /// Deliveries expected that had not arrived when the drain ended.
    pub undelivered: u64,
    /// Deliveries behind (or repeating) one already received from the same sender.
    pub out_of_order: u64,
    /// Lines the server sent back to their own sender (not counted as deliveries).
    pub echoed: u64,
    /// How long the drain after the window took, in seconds (at most 2).
    pub drain_secs: f64,
    /// Fan-out latency: from a line's send to its arrival at one receiver.
    #[serde(flatten)]
    pub latency: LatencySummary,
    /// Server CPU time per delivery received, in nanoseconds; `null` without --server-pid.
    pub server_cpu_ns_per_delivery: Option<f64>,
    /// The server's figures; an operation is a delivery.
    #[serde(flatten)]
    pub server: ServerFigures,
    /// Clients that failed: refused, reset, closed, or not in the room in time.
    pub connection_errors: u64,
    /// Every failure: undelivered, out of order, unsent, and connection errors.
    pub errors: u64,
    /// Connection failures, by kind.
    pub errors_by_kind: Tally,
}

impl Report for ChatReport {
    fn errors(&self) -> u64 {
        self.errors
    }

    fn text(&self) -> String {
        let mut out = format!(
            "{}: {} clients, {} lines/s in all, {:.1} s\n",
            self.id.heading(),
            self.conns,
            self.rate,
            self.duration_s
        );
        let _ = writeln!(
            out,
            "  joined        {} of {} in {:.2} s (first connect to barrier)",
            self.joined, self.conns, self.join_secs
        );
        if self.silent > 0 {
            let _ = writeln!(
                out,
                "  silent        {} members that never read",
                self.silent
            );
        }
        let _ = writeln!(
            out,
            "  offered       {:.0} lines/s, {:.0} deliveries/s",
            self.offered_lines_per_s, self.offered_deliveries_per_s
        );
        let _ = writeln!(
            out,
            "  sent          {} lines ({} queued, {} unsent), send lag max {:.0} us",
            self.sent, self.queued, self.unsent, self.max_send_lag_us
        );
        let _ = writeln!(
            out,
            "  delivered     {:.0} deliveries/s, {} of {} ({:.2} %), {} undelivered after a {:.2} s drain",
            self.delivered_deliveries_per_s,
            self.received,
            self.expected,
            self.delivered_fraction * 100.0,
            self.undelivered,
            self.drain_secs
        );
        latency_text(&mut out, &self.latency);
        let _ = writeln!(
            out,
            "  order         {} out of order, {} echoed to their sender",
            self.out_of_order, self.echoed
        );
        server_text(&mut out, &self.server, "delivery");
        errors_text(&mut out, self.errors, &self.errors_by_kind);
        out
    }
}
