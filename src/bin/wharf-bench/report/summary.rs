//! `summary`: many runs (JSON lines printed by `--json`, tagged with `--label` and
//! `--scenario`) as one Markdown table of medians, one column per label and, with
//! `--ratio A/B`, the ratio of two labels' medians.
//!
//! This is the table of the side-by-side comparison (`benches/compare.sh`): each scenario
//! runs every server several times, interleaved, and the median of the rounds is what is
//! quoted, because this machine's speed drifts between rounds.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::error::BenchError;

/// The rows of the table, by mode: a run's key, then the row's name. A row named "(all
/// rounds)" sums its rounds (errors, where any is news); the others take their median (rates,
/// latencies, costs).
const METRICS: &str = "
pingpong  round_trips_per_s           round trips/s
pingpong  p99_us                      p99 latency, us
pingpong  server_user_ns_per_op       server user ns / round trip
pingpong  server_sys_ns_per_op        server sys ns / round trip
pingpong  server_cpu_ns_per_op        server CPU ns / round trip
pingpong  errors                      errors (all rounds)
hold      established                 connections held
hold      server_rss_per_conn_bytes   server RSS bytes / connection
hold      errors                      errors (all rounds)
connect   connections_per_s           connections/s
connect   server_user_ns_per_op       server user ns / connection
connect   server_sys_ns_per_op        server sys ns / connection
connect   server_cpu_ns_per_op        server CPU ns / connection
connect   errors                      errors (all rounds)
chat      offered_deliveries_per_s    offered deliveries/s
chat      delivered_deliveries_per_s  delivered deliveries/s
chat      delivered_fraction          fraction delivered
chat      p50_us                      p50 fan-out latency, us
chat      p99_us                      p99 fan-out latency, us
chat      server_cpu_ns_per_delivery  server CPU ns / delivery
chat      join_secs                   join, s
chat      undelivered                 undelivered (all rounds)
chat      out_of_order                out of order (all rounds)
chat      errors                      errors (all rounds)
";

/// One row of [`METRICS`]: a run's key and the row's name.
struct Metric<'a> {
    key: &'a str,
    name: &'a str,
}

impl Metric<'_> {
    /// Whether the rounds are summed rather than folded into their median.
    fn sums(&self) -> bool {
        self.name.ends_with("(all rounds)")
    }
}

/// The rows of `mode`'s runs, in order.
fn metrics(mode: &str) -> impl Iterator<Item = Metric<'_>> + '_ {
    METRICS.lines().filter_map(move |row| {
        let (row_mode, row) = row.split_once(' ')?;
        let (key, name) = row.trim_start().split_once(' ')?;
        (row_mode == mode).then(|| Metric {
            key,
            name: name.trim_start(),
        })
    })
}

/// Runs of one scenario, in file order.
struct Scenario {
    name: String,
    mode: String,
    runs: Vec<Value>,
}

/// Prints the table of the runs in the file at `path`, with the ratio of two labels
/// (`--ratio A/B`) if asked.
pub fn run(path: &Path, ratio: Option<&str>) -> Result<(), BenchError> {
    let text = fs::read_to_string(path)
        .map_err(|error| BenchError::io(format!("reading {}", path.display()), error))?;
    let runs = parse_runs(&text, &path.display().to_string())?;
    let ratio = match ratio {
        None => None,
        Some(text) => Some(text.split_once('/').ok_or_else(|| {
            BenchError::Usage(format!("--ratio '{text}': expected two labels, A/B"))
        })?),
    };
    print!("{}", table(&runs, ratio));
    Ok(())
}

/// The runs in `text`: JSON lines, one run each (what `--json` prints), or one JSON array of
/// runs (`sweep`'s results.json), so both come to one table.
fn parse_runs(text: &str, path: &str) -> Result<Vec<Value>, BenchError> {
    if text.trim_start().starts_with('[') {
        return match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(runs)) => Ok(runs),
            Ok(_) | Err(_) => Err(BenchError::BadInput(format!(
                "{path}: not a JSON array of runs"
            ))),
        };
    }
    let mut runs = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let run: Value = serde_json::from_str(line).map_err(|error| {
            BenchError::BadInput(format!("{path}:{}: not a JSON run ({error})", number + 1))
        })?;
        runs.push(run);
    }
    Ok(runs)
}

/// The Markdown table of `runs`: a row per scenario and metric, a column per label.
fn table(runs: &[Value], ratio: Option<(&str, &str)>) -> String {
    let labels = distinct(runs.iter().map(|run| text_of(run, "label")));
    let scenarios = group(runs);
    let mut out = String::new();
    let _ = write!(out, "| scenario | metric |");
    for label in &labels {
        let _ = write!(out, " {label} |");
    }
    if let Some((a, b)) = ratio {
        let _ = write!(out, " {a}/{b} |");
    }
    let _ = write!(out, "\n|---|---|");
    for _ in 0..labels.len() + usize::from(ratio.is_some()) {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    for scenario in &scenarios {
        let rounds = scenario.runs.len() / labels.len().max(1);
        let mut first_row = true;
        for metric in metrics(&scenario.mode) {
            let figures: Vec<Option<f64>> = labels
                .iter()
                .map(|label| fold(&scenario.runs, label, &metric))
                .collect();
            if figures.iter().all(Option::is_none) {
                continue; // not measured (e.g. no --server-pid)
            }
            let name = if first_row {
                format!("{} ({rounds} rounds)", scenario.name)
            } else {
                String::new()
            };
            first_row = false;
            let _ = write!(out, "| {name} | {} |", metric.name);
            for figure in &figures {
                let _ = write!(out, " {} |", figure.map_or("-".to_string(), number));
            }
            if let Some((a, b)) = ratio {
                let pick = |want: &str| {
                    labels
                        .iter()
                        .position(|label| label == want)
                        .and_then(|i| figures[i])
                };
                let cell = match (pick(a), pick(b)) {
                    (Some(a), Some(b)) if b != 0.0 && !metric.sums() => {
                        format!("{:.2}", a / b)
                    }
                    _ => "-".to_string(),
                };
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
    }
    out
}

/// One label's figure for `metric` in a scenario, or None when no run of it has the key.
fn fold(runs: &[Value], label: &str, metric: &Metric<'_>) -> Option<f64> {
    let mut values: Vec<f64> = runs
        .iter()
        .filter(|run| text_of(run, "label") == label)
        .filter_map(|run| run.get(metric.key)?.as_f64())
        .collect();
    if values.is_empty() {
        return None;
    }
    if metric.sums() {
        return Some(values.iter().sum());
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    })
}

/// Runs grouped by scenario (their `scenario`, else mode and connection count), in order of
/// first appearance.
fn group(runs: &[Value]) -> Vec<Scenario> {
    let mut scenarios: Vec<Scenario> = Vec::new();
    for run in runs {
        let mode = text_of(run, "mode");
        let name = match run.get("scenario").and_then(Value::as_str) {
            Some(name) => name.to_string(),
            None => format!(
                "{mode} c={}",
                run.get("connections")
                    .or_else(|| run.get("conns")) // chat's name for it
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            ),
        };
        match scenarios.iter_mut().find(|s| s.name == name) {
            Some(scenario) => scenario.runs.push(run.clone()),
            None => scenarios.push(Scenario {
                name,
                mode,
                runs: vec![run.clone()],
            }),
        }
    }
    scenarios
}

fn distinct(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for value in values {
        if !seen.contains(&value) {
            seen.push(value);
        }
    }
    seen
}

fn text_of(run: &Value, key: &str) -> String {
    run.get(key)
        .and_then(Value::as_str)
        .unwrap_or("-")
        .to_string()
}

/// 123456.7 -> "123457", 12.345 -> "12.3", 0.5 -> "0.50", 3.0 -> "3": enough digits, no
/// more, and counts stay whole.
fn number(value: f64) -> String {
    if value.fract() == 0.0 {
        return format!("{value:.0}");
    }
    match value.abs() {
        v if v >= 100.0 => format!("{value:.0}"),
        v if v >= 10.0 => format!("{value:.1}"),
        _ => format!("{value:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_read_from_json_lines_or_from_sweeps_json_array() {
        let lines = "{\"mode\": \"pingpong\", \"connections\": 1}\n\n{\"mode\": \"pingpong\", \"connections\": 10}\n";
        let array = "[\n  {\"mode\": \"pingpong\", \"connections\": 1},\n  {\"mode\": \"pingpong\", \"connections\": 10}\n]\n";
        let from_lines = parse_runs(lines, "runs.jsonl").unwrap();
        let from_array = parse_runs(array, "results.json").unwrap();
        assert_eq!(from_lines, from_array);
        assert_eq!(from_array.len(), 2);
        assert!(parse_runs("[1, 2", "bad.json").is_err());
    }

    fn run(label: &str, rps: f64, errors: u64) -> Value {
        serde_json::json!({
            "mode": "pingpong", "label": label, "scenario": "64 B x 100",
            "round_trips_per_s": rps, "p99_us": 50.0, "errors": errors,
            "server_user_ns_per_op": null
        })
    }

    #[test]
    fn medians_per_label_and_their_ratio() {
        let runs = [
            run("wharf", 100.0, 0),
            run("tokio", 50.0, 0),
            run("wharf", 300.0, 1),
            run("tokio", 60.0, 0),
            run("wharf", 200.0, 0),
            run("tokio", 40.0, 2),
        ];
        let table = table(&runs, Some(("wharf", "tokio")));
        assert!(
            table.contains("| 64 B x 100 (3 rounds) | round trips/s | 200 | 50 | 4.00 |"),
            "{table}"
        );
        assert!(
            table.contains("| errors (all rounds) | 1 | 2 | - |"),
            "{table}"
        );
        assert!(
            !table.contains("server user"),
            "unmeasured rows are left out:\n{table}"
        );
    }
}
