//! `sweep`: pingpong at each connection count in turn, against one server; writes
//! `results.csv`, `results.json` and `plot.svg` (throughput and p99 latency against the
//! connection count) into the output directory. Their formats are `report/sweep.rs` and
//! `report/plot.rs`.

use std::fs;
use std::path::Path;

use crate::cli::SweepArgs;
use crate::error::BenchError;
use crate::pingpong;
use crate::report::plot::{self, Series};
use crate::report::sweep::{csv, table_header, table_row};
use crate::report::{to_json, to_json_pretty, PingpongReport};

/// Runs the sweep; returns its reports, one per connection count, after writing the files.
pub fn run(args: &SweepArgs) -> Result<Vec<PingpongReport>, BenchError> {
    let out = &args.out;
    fs::create_dir_all(out)
        .map_err(|error| BenchError::io(format!("creating {}", out.display()), error))?;
    let json = args.target.output.json;
    if !json {
        println!("{}", table_header());
    }
    let mut reports = Vec::with_capacity(args.conns.len());
    for &connections in &args.conns {
        let report = pingpong::run_at(&args.target, u64::from(connections), &args.load)?;
        if json {
            println!("{}", to_json(&report)?);
        } else {
            println!("{}", table_row(&report));
        }
        reports.push(report);
    }
    write(&out.join("results.csv"), &csv(&reports))?;
    write(&out.join("results.json"), &to_json_pretty(&reports)?)?;
    let label = args
        .target
        .output
        .label
        .clone()
        .unwrap_or_else(|| args.target.peer.addr.to_string());
    let title = format!("pingpong {} B, {label}", args.load.size);
    plot::draw(
        &out.join("plot.svg"),
        &title,
        &[Series::from_reports(label, &reports)],
    )?;
    eprintln!(
        "wharf-bench: wrote results.csv, results.json and plot.svg in {}",
        out.display()
    );
    Ok(reports)
}

fn write(path: &Path, text: &str) -> Result<(), BenchError> {
    fs::write(path, text)
        .map_err(|error| BenchError::io(format!("writing {}", path.display()), error))
}
