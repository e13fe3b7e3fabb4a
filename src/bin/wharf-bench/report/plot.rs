//! The sweep plot: round trips per second (top) and p99 latency (bottom) against the number
//! of connections, both on a logarithmic connection axis, one line per server. SVG only, so
//! no fonts or image libraries are needed.

use std::fs;
use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

use super::PingpongReport;
use crate::cli::PlotArgs;
use crate::error::BenchError;

/// Plot size in pixels.
const SIZE: (u32, u32) = (900, 760);

/// Line colours, one per series in order: distinguishable, and readable in grey print.
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(90, 90, 90),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// One measured point of a sweep.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    /// Connections.
    pub connections: f64,
    /// Round trips per second.
    pub round_trips_per_s: f64,
    /// 99th-percentile latency, microseconds.
    pub p99_us: f64,
}

/// One server's sweep: a line on each chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// The legend entry.
    pub label: String,
    /// Points in connection order.
    pub points: Vec<Point>,
}

impl Series {
    /// The series of a sweep just run.
    pub fn from_reports(label: String, reports: &[PingpongReport]) -> Series {
        let points = reports
            .iter()
            .map(|report| Point {
                connections: report.connections as f64,
                round_trips_per_s: report.round_trips_per_s,
                p99_us: report.latency.p99_us,
            })
            .collect();
        Series { label, points }
    }

    /// The series in a `results.json` written by `sweep`, named by its runs' label (or by
    /// the file's directory when the runs have none).
    pub fn from_file(path: &Path) -> Result<Series, BenchError> {
        let text = fs::read_to_string(path)
            .map_err(|error| BenchError::io(format!("reading {}", path.display()), error))?;
        let bad = |why: &str| BenchError::BadInput(format!("{}: {why}", path.display()));
        let runs: Vec<Value> = serde_json::from_str(&text)
            .map_err(|error| bad(&format!("not a sweep's results.json ({error})")))?;
        let number = |run: &Value, key: &str| {
            run.get(key)
                .and_then(Value::as_f64)
                .ok_or_else(|| bad(&format!("a run has no number '{key}'")))
        };
        let mut points = Vec::with_capacity(runs.len());
        for run in &runs {
            points.push(Point {
                connections: number(run, "connections")?,
                round_trips_per_s: number(run, "round_trips_per_s")?,
                p99_us: number(run, "p99_us")?,
            });
        }
        let label = runs
            .first()
            .and_then(|run| run.get("label"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                let dir = path.parent()?.file_name()?;
                Some(dir.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| path.display().to_string());
        Ok(Series { label, points })
    }
}

/// `wharf-bench plot`: several sweeps in one picture.
pub fn run(args: &PlotArgs) -> Result<(), BenchError> {
    let series = args
        .inputs
        .iter()
        .map(|path| Series::from_file(path))
        .collect::<Result<Vec<_>, _>>()?;
    draw(&args.out, &args.title, &series)?;
    eprintln!("wharf-bench: wrote {}", args.out.display());
    Ok(())
}

/// Draws `series` into an SVG file at `path`.
pub fn draw(path: &Path, title: &str, series: &[Series]) -> Result<(), BenchError> {
    let failed = |error: String| {
        BenchError::io(
            format!("drawing {}", path.display()),
            std::io::Error::other(error),
        )
    };
    let points = || series.iter().flat_map(|s| s.points.iter());
    if points().next().is_none() {
        return Err(BenchError::BadInput(
            "nothing to plot: no sweep points".into(),
        ));
    }
    let (x_low, x_high) = widen(min_max(points().map(|p| p.connections)));
    let (_, rps_high) = min_max(points().map(|p| p.round_trips_per_s));
    let (p99_low, p99_high) = min_max(points().map(|p| p.p99_us.max(1.0)));
    let (p99_low, p99_high) = widen((p99_low / 1.5, p99_high * 1.5));

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(e.to_string()))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| failed(e.to_string()))?;
    let (top, bottom) = root.split_vertically(SIZE.1 / 2 - 20);

    let mut throughput = ChartBuilder::on(&top)
        .margin(12)
        .margin_right(30)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d((x_low..x_high).log_scale(), 0.0..rps_high * 1.15)
        .map_err(|e| failed(e.to_string()))?;
    throughput
        .configure_mesh()
        .x_desc("connections")
        .y_desc("round trips/s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| si(*y))
        .draw()
        .map_err(|e| failed(e.to_string()))?;

    let mut latency = ChartBuilder::on(&bottom)
        .margin(12)
        .margin_right(30)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d((x_low..x_high).log_scale(), (p99_low..p99_high).log_scale())
        .map_err(|e| failed(e.to_string()))?;
    latency
        .configure_mesh()
        .x_desc("connections")
        .y_desc("p99 latency (us)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| si(*y))
        .draw()
        .map_err(|e| failed(e.to_string()))?;

    for (index, series) in series.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let rps: Vec<(f64, f64)> = series
            .points
            .iter()
            .map(|p| (p.connections, p.round_trips_per_s))
            .collect();
        let p99: Vec<(f64, f64)> = series
            .points
            .iter()
            .map(|p| (p.connections, p.p99_us.max(1.0)))
            .collect();
        throughput
            .draw_series(LineSeries::new(rps.iter().copied(), colour.stroke_width(2)))
            .map_err(|e| failed(e.to_string()))?
            .label(series.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        throughput
            .draw_series(PointSeries::of_element(
                rps,
                4,
                colour.filled(),
                &|c, s, st| Circle::new(c, s, st),
            ))
            .map_err(|e| failed(e.to_string()))?;
        latency
            .draw_series(LineSeries::new(p99.iter().copied(), colour.stroke_width(2)))
            .map_err(|e| failed(e.to_string()))?;
        latency
            .draw_series(PointSeries::of_element(
                p99,
                4,
                colour.filled(),
                &|c, s, st| Circle::new(c, s, st),
            ))
            .map_err(|e| failed(e.to_string()))?;
    }
    throughput
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| failed(e.to_string()))?;
    root.present().map_err(|e| failed(e.to_string()))?;
    Ok(())
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), v| {
        (low.min(v), high.max(v))
    })
}

/// Makes a one-point range drawable (a logarithmic axis needs low < high).
fn widen((low, high): (f64, f64)) -> (f64, f64) {
    if high > low {
        (low, high)
    } else {
        (low / 2.0, high * 2.0)
    }
}

/// 1200 -> "1.2k", 3000000 -> "3M": axis labels that stay short.
fn si(value: f64) -> String {
    match value.abs() {
        v if v >= 1e6 => format!("{}M", trim(value / 1e6)),
        v if v >= 1e3 => format!("{}k", trim(value / 1e3)),
        _ => trim(value),
    }
}

fn trim(value: f64) -> String {
    let text = format!("{value:.1}");
    text.strip_suffix(".0").map(str::to_string).unwrap_or(text)
}
