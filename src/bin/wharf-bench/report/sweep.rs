//! The formats `sweep` writes its runs in, one row per connection count: a text table as it
//! goes, and `results.csv`.

use std::fmt::Write as _;

use super::PingpongReport;

/// Columns of `results.csv`, in order.
const CSV_HEADER: &str = "label,connections,size,line,duration_s,round_trips,round_trips_per_s,\
mb_per_s,p50_us,p99_us,p999_us,max_us,errors,server_user_ns_per_op,server_sys_ns_per_op,\
server_cpu_ns_per_op";

/// The heading of the text table, one row per connection count.
pub fn table_header() -> String {
    format!(
        "{:>7} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>10} {:>10}",
        "conns",
        "round trip/s",
        "MB/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "errors",
        "srv usr ns",
        "srv sys ns"
    )
}

/// One connection count's row of the text table.
pub fn table_row(report: &PingpongReport) -> String {
    let ns = |value: Option<f64>| value.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
    format!(
        "{:>7} {:>12.0} {:>9.2} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>7} {:>10} {:>10}",
        report.connections,
        report.round_trips_per_s,
        report.mb_per_s,
        report.latency.p50_us,
        report.latency.p99_us,
        report.latency.p999_us,
        report.latency.max_us,
        report.errors,
        ns(report.server.server_user_ns_per_op),
        ns(report.server.server_sys_ns_per_op),
    )
}

/// The reports as CSV, one row per connection count.
pub fn csv(reports: &[PingpongReport]) -> String {
    let mut text = format!("{CSV_HEADER}\n");
    let optional = |value: Option<f64>| value.map(|v| format!("{v:.1}")).unwrap_or_default();
    for r in reports {
        let label =
            r.id.label
                .as_deref()
                .unwrap_or_default()
                .replace('"', "\"\"");
        let _ = writeln!(
            text,
            "\"{label}\",{},{},{},{:.3},{},{:.1},{:.3},{:.1},{:.1},{:.1},{:.1},{},{},{},{}",
            r.connections,
            r.size,
            r.line,
            r.duration_s,
            r.round_trips,
            r.round_trips_per_s,
            r.mb_per_s,
            r.latency.p50_us,
            r.latency.p99_us,
            r.latency.p999_us,
            r.latency.max_us,
            r.errors,
            optional(r.server.server_user_ns_per_op),
            optional(r.server.server_sys_ns_per_op),
            optional(r.server.server_cpu_ns_per_op),
        );
    }
    text
}
