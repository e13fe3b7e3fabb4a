//! The sweep plot: round trips per second (top) and p99 latency (bottom) against the number
//! of connections, both on a logarithmic connection axis, one line per server. SVG only, so
//! no fonts or image libraries are needed.

use std::fs;
use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

use super::PingpongReport;
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

/// Why plotters could not draw.
type Failed = DrawingAreaErrorKind<std::io::Error>;

/// A chart on the SVG file.
type Chart<'a, X, Y> = ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>;

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

/// `wharf-bench plot`: the sweeps in the `inputs` (their results.json) in one picture at
/// `out`.
pub fn run(inputs: &[PathBuf], title: &str, out: &Path) -> Result<(), BenchError> {
    let series = inputs
        .iter()
        .map(|path| Series::from_file(path))
        .collect::<Result<Vec<_>, _>>()?;
    draw(out, title, &series)?;
    eprintln!("wharf-bench: wrote {}", out.display());
    Ok(())
}

/// Draws `series` into an SVG file at `path`.
pub fn draw(path: &Path, title: &str, series: &[Series]) -> Result<(), BenchError> {
    let failed = |error: Failed| {
        let error = std::io::Error::other(error.to_string());
        BenchError::io(format!("drawing {}", path.display()), error)
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
    root.fill(&WHITE).map_err(failed)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(failed)?;
    let (top, bottom) = root.split_vertically(SIZE.1 / 2 - 20);
    let x = || (x_low..x_high).log_scale();
    let mut throughput = chart(&top, x(), 0.0..rps_high * 1.15, "round trips/s").map_err(failed)?;
    let p99_range = (p99_low..p99_high).log_scale();
    let mut latency = chart(&bottom, x(), p99_range, "p99 latency (us)").map_err(failed)?;
    for (index, series) in series.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let rps = series
            .points
            .iter()
            .map(|p| (p.connections, p.round_trips_per_s));
        let label = Some(series.label.as_str());
        plot(&mut throughput, rps.collect(), colour, label).map_err(failed)?;
        let p99 = series
            .points
            .iter()
            .map(|p| (p.connections, p.p99_us.max(1.0)));
        plot(&mut latency, p99.collect(), colour, None).map_err(failed)?;
    }
    throughput
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(failed)?;
    root.present().map_err(failed)?;
    Ok(())
}

/// One of the two charts: connections across on a logarithmic axis `x`, `y` up.
fn chart<'a, X, Y>(
    area: &DrawingArea<SVGBackend<'a>, Shift>,
    x: X,
    y: Y,
    y_desc: &str,
) -> Result<Chart<'a, X::CoordDescType, Y::CoordDescType>, Failed>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .margin_right(30)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc("connections")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| si(*y))
        .draw()?;
    Ok(chart)
}

/// One series on one chart: a line through its points, each marked with a dot, and in the
/// legend when it has a `label`.
fn plot<X, Y>(
    chart: &mut Chart<'_, X, Y>,
    points: Vec<(f64, f64)>,
    colour: RGBColor,
    label: Option<&str>,
) -> Result<(), Failed>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let line = chart.draw_series(LineSeries::new(
        points.iter().copied(),
        colour.stroke_width(2),
    ))?;
    if let Some(label) = label {
        line.label(label).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
        });
    }
    let dot = |c, s, st| Circle::new(c, s, st);
    chart.draw_series(PointSeries::of_element(points, 4, colour.filled(), &dot))?;
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
