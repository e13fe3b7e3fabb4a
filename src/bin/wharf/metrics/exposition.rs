//! The Prometheus text exposition format (version 0.0.4): which metric each figure becomes,
//! and the text a scrape gets.
//!
//! Figures travel by name, as [`wharf::Stats::fields`] names them (and as a worker's stats
//! channel carries them): one table, [`SERIES`], says what each becomes, so the names an
//! operator graphs are chosen here, in one place. A figure the table does not know (a newer
//! worker's) is left out, not guessed at.

use std::fmt::Write;

/// The figures of one reactor (or process), by name.
pub type Figures = [(String, u64)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// One series: the figure it is made from, its metric, and its `reason` label if any.
struct Series {
    figure: &'static str,
    metric: &'static str,
    reason: Option<&'static str>,
    kind: Kind,
    help: &'static str,
    /// Figures kept in millionths (CPU time in microseconds) are shown divided by it.
    scale: u64,
}

const fn series(
    figure: &'static str,
    metric: &'static str,
    reason: Option<&'static str>,
    kind: Kind,
    help: &'static str,
) -> Series {
    Series {
        figure,
        metric,
        reason,
        kind,
        help,
        scale: 1,
    }
}

use Kind::{Counter, Gauge};

const ACCEPTED: &str = "Connections accepted and served.";
const REFUSED: &str = "Connections closed at accept, by reason.";
const CLOSED: &str = "Connections closed, by reason.";

/// Every series, in the order a scrape lists them; the series of one metric are together.
/// The figure `closed` is not here: it is the sum of `wharf_connections_closed_total`.
#[rustfmt::skip]
const SERIES: &[Series] = &[
    series("active", "wharf_connections_active", None, Gauge, "Connections open now."),
    series("accepted", "wharf_connections_accepted_total", None, Counter, ACCEPTED),
    series("rejected", "wharf_connections_refused_total", Some("full"), Counter, REFUSED),
    series("refused_not_allowed", "wharf_connections_refused_total", Some("not_allowed"), Counter, REFUSED),
    series("refused_per_ip", "wharf_connections_refused_total", Some("per_ip"), Counter, REFUSED),
    series("refused_locked_out", "wharf_connections_refused_total", Some("locked_out"), Counter, REFUSED),
    series("refused_rate_limited", "wharf_connections_refused_total", Some("rate_limited"), Counter, REFUSED),
    series("closed_by_peer", "wharf_connections_closed_total", Some("peer"), Counter, CLOSED),
    series("closed_by_server", "wharf_connections_closed_total", Some("server"), Counter, CLOSED),
    series("closed_by_error", "wharf_connections_closed_total", Some("error"), Counter, CLOSED),
    series("idle_timeouts", "wharf_connections_closed_total", Some("idle_timeout"), Counter, CLOSED),
    series("message_timeouts", "wharf_connections_closed_total", Some("message_timeout"), Counter, CLOSED),
    series("write_timeouts", "wharf_connections_closed_total", Some("write_timeout"), Counter, CLOSED),
    series("slow_readers", "wharf_connections_closed_total", Some("slow_reader"), Counter, CLOSED),
    series("closed_by_shutdown", "wharf_connections_closed_total", Some("shutdown"), Counter, CLOSED),
    series("auth_timeouts", "wharf_connections_closed_total", Some("auth_timeout"), Counter, CLOSED),
    series("tls_handshake_timeouts", "wharf_connections_closed_total", Some("tls_handshake_timeout"), Counter, CLOSED),
    series("tls_truncated", "wharf_connections_closed_total", Some("tls_truncated"), Counter, CLOSED),
    series("proxy_timeouts", "wharf_connections_closed_total", Some("proxy_timeout"), Counter, CLOSED),
    series("accept_errors", "wharf_accept_errors_total", None, Counter, "accept() calls that failed (other than nothing waiting)."),
    series("bytes_in", "wharf_received_bytes_total", None, Counter, "Bytes read from connections."),
    series("bytes_out", "wharf_sent_bytes_total", None, Counter, "Bytes written to connections."),
    series("writes", "wharf_write_calls_total", None, Counter, "write and writev calls made for connections' output."),
    series("proxy_headers", "wharf_proxy_headers_total", None, Counter, "PROXY protocol headers read."),
    series("proxy_errors", "wharf_proxy_errors_total", None, Counter, "Connections refused or closed for their PROXY header (untrusted source, none, invalid)."),
    series("tls_handshakes", "wharf_tls_handshakes_total", None, Counter, "TLS handshakes completed."),
    series("tls_errors", "wharf_tls_errors_total", None, Counter, "TLS connections closed for a protocol error."),
    series("auth_ok", "wharf_auth_successes_total", None, Counter, "Connections that authenticated."),
    series("auth_failures", "wharf_auth_failures_total", None, Counter, "Authentications that failed (a wrong token)."),
    series("lockouts", "wharf_auth_lockouts_total", None, Counter, "Lockouts begun: addresses that failed to authenticate too often."),
    series("offenders", "wharf_auth_offenders", None, Gauge, "Addresses counted or locked out for failed authentications now."),
    series("chat_members", "wharf_chat_members", None, Gauge, "Members in the chat room now."),
    series("chat_lines", "wharf_chat_lines_received_total", None, Counter, "Lines chat members sent (commands included)."),
    series("chat_deliveries", "wharf_chat_deliveries_total", None, Counter, "Chunks of chat lines queued to members: one per member per batch."),
    series("datagrams_in", "wharf_udp_datagrams_received_total", None, Counter, "UDP datagrams received."),
    series("datagrams_out", "wharf_udp_datagrams_sent_total", None, Counter, "UDP datagrams sent."),
    series("datagrams_dropped", "wharf_udp_datagrams_dropped_total", None, Counter, "UDP replies dropped: the socket's queue was full."),
    series("metrics_scrapes", "wharf_metrics_scrapes_total", None, Counter, "Scrapes of this endpoint answered (its own connections are not in the other figures)."),
    series("process_resident_memory_bytes", "process_resident_memory_bytes", None, Gauge, "Resident memory size in bytes."),
    series("process_open_fds", "process_open_fds", None, Gauge, "Open file descriptors."),
    Series {
        scale: 1_000_000,
        ..series("process_cpu_micros", "process_cpu_seconds_total", None, Counter, "User and system CPU time spent in seconds.")
    },
];

/// The page a scrape gets: every known series of `total`, and with workers, each worker's
/// too, labelled `worker="ID"` (the series without the label are then the workers' sum).
pub fn render(total: &Figures, workers: &[(usize, &Figures)]) -> String {
    let mut page = String::with_capacity(8 * 1024);
    let mut described = "";
    for series in SERIES {
        let Some(value) = find(total, series.figure) else {
            continue;
        };
        if series.metric != described {
            let kind = match series.kind {
                Counter => "counter",
                Gauge => "gauge",
            };
            let (metric, help) = (series.metric, series.help);
            let _ = writeln!(page, "# HELP {metric} {help}\n# TYPE {metric} {kind}");
            described = series.metric;
        }
        sample(&mut page, series, None, value);
        for (id, figures) in workers {
            if let Some(value) = find(figures, series.figure) {
                sample(&mut page, series, Some(*id), value);
            }
        }
    }
    page
}

fn find(figures: &Figures, name: &str) -> Option<u64> {
    figures.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

fn sample(page: &mut String, series: &Series, worker: Option<usize>, value: u64) {
    page.push_str(series.metric);
    let labels = [
        series.reason.map(|reason| format!("reason=\"{reason}\"")),
        worker.map(|id| format!("worker=\"{id}\"")),
    ];
    let labels: Vec<String> = labels.into_iter().flatten().collect();
    if !labels.is_empty() {
        let _ = write!(page, "{{{}}}", labels.join(","));
    }
    let _ = match series.scale {
        1 => writeln!(page, " {value}"),
        scale => writeln!(page, " {}", value as f64 / scale as f64),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
        pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    #[test]
    fn every_reactor_counter_has_a_series() {
        let stats = wharf::Stats::default();
        for (name, _) in stats.fields() {
            let known = name == "closed" || SERIES.iter().any(|s| s.figure == name);
            assert!(known, "{name} has no series in the metrics table");
        }
    }

    #[test]
    fn a_page_has_help_and_type_once_per_metric_and_labels_per_reason() {
        let total = figures(&[
            ("accepted", 5),
            ("closed_by_peer", 3),
            ("closed_by_error", 1),
            ("process_cpu_micros", 1_500_000),
            ("unknown_to_this_build", 7),
        ]);
        let page = render(&total, &[]);
        assert_eq!(
            page.matches("# TYPE wharf_connections_closed_total counter")
                .count(),
            1
        );
        assert!(page.contains("\nwharf_connections_accepted_total 5\n"));
        assert!(page.contains("wharf_connections_closed_total{reason=\"peer\"} 3\n"));
        assert!(page.contains("wharf_connections_closed_total{reason=\"error\"} 1\n"));
        assert!(page.contains("process_cpu_seconds_total 1.5\n"));
        assert!(!page.contains("unknown"));
    }

    #[test]
    fn workers_add_labelled_series_beside_the_sum() {
        let one = figures(&[("accepted", 2), ("closed_by_peer", 1)]);
        let two = figures(&[("accepted", 3), ("closed_by_peer", 0)]);
        let total = figures(&[("accepted", 5), ("closed_by_peer", 1)]);
        let page = render(&total, &[(1, &one), (2, &two)]);
        assert!(page.contains("wharf_connections_accepted_total 5\n"));
        assert!(page.contains("wharf_connections_accepted_total{worker=\"1\"} 2\n"));
        assert!(page.contains("wharf_connections_accepted_total{worker=\"2\"} 3\n"));
        assert!(page.contains("wharf_connections_closed_total{reason=\"peer\",worker=\"2\"} 0\n"));
    }
}
