//! Round-trip latencies: an HDR histogram in nanoseconds, summarised in microseconds.
//!
//! The client processes of a `--procs` run ship their histograms to the parent as the
//! recorded (value, count) pairs, which the parent adds into one: percentiles of the merged
//! histogram are those of every round trip, which no combination of the children's
//! percentiles would give.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Deserialize;

use crate::figures::LatencySummary;

/// The longest latency the histogram distinguishes; longer ones are recorded as this.
const MAX_TRACKED_NS: u64 = 60 * 60 * 1_000_000_000;

/// Significant decimal digits kept per value: 0.1 % precision at any scale.
const SIGNIFICANT_DIGITS: u8 = 3;

/// Latencies of one run. Recording allocates nothing; the histogram is sized up front. Read
/// back from JSON as [`Latencies::recorded`] wrote it.
#[derive(Debug, Deserialize)]
#[serde(from = "Vec<(u64, u64)>")]
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Latencies {
    pub fn new() -> Latencies {
        let histogram = Histogram::new_with_bounds(1, MAX_TRACKED_NS, SIGNIFICANT_DIGITS)
            .expect("constant histogram bounds are valid");
        Latencies { histogram }
    }

    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(ns.max(1));
    }

    /// Every recorded bucket as (highest value in it, count), in nanoseconds: the
    /// histogram in a form JSON can carry. Small: one pair per distinct bucket, a few
    /// thousand at most.
    pub fn recorded(&self) -> Vec<(u64, u64)> {
        self.histogram
            .iter_recorded()
            .map(|bucket| (bucket.value_iterated_to(), bucket.count_at_value()))
            .collect()
    }

    /// Adds the latencies of another run. Both histograms have the same bounds and
    /// precision, so each value lands in the bucket it came from.
    pub fn add(&mut self, other: &Latencies) {
        for (ns, count) in other.recorded() {
            self.histogram.saturating_record_n(ns.max(1), count);
        }
    }

    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    /// The percentiles, in microseconds (all zero when nothing was recorded).
    pub fn summary(&self) -> LatencySummary {
        if self.histogram.is_empty() {
            return LatencySummary::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        LatencySummary {
            p50_us: us(self.histogram.value_at_quantile(0.50)),
            p99_us: us(self.histogram.value_at_quantile(0.99)),
            p999_us: us(self.histogram.value_at_quantile(0.999)),
            max_us: us(self.histogram.max()),
            mean_us: self.histogram.mean() / 1000.0,
        }
    }
}

impl Default for Latencies {
    fn default() -> Latencies {
        Latencies::new()
    }
}

impl From<Vec<(u64, u64)>> for Latencies {
    fn from(recorded: Vec<(u64, u64)>) -> Latencies {
        let mut latencies = Latencies::new();
        for (ns, count) in recorded {
            latencies.histogram.saturating_record_n(ns.max(1), count);
        }
        latencies
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_out_in_microseconds() {
        let mut latencies = Latencies::new();
        for us in 1..=1000 {
            latencies.record(Duration::from_micros(us));
        }
        let summary = latencies.summary();
        assert!((summary.p50_us - 500.0).abs() < 1.0, "{summary:?}");
        assert!((summary.p99_us - 990.0).abs() < 1.0, "{summary:?}");
        assert!((summary.max_us - 1000.0).abs() < 1.0, "{summary:?}");
    }

    #[test]
    fn merged_histograms_give_the_percentiles_of_all_values() {
        let (mut all, mut odd, mut even) = (Latencies::new(), Latencies::new(), Latencies::new());
        for us in 1..=10_000 {
            let latency = Duration::from_micros(us * 7 % 10_007);
            all.record(latency);
            if us % 2 == 1 {
                odd.record(latency)
            } else {
                even.record(latency)
            }
        }
        let mut merged = Latencies::from(odd.recorded());
        merged.add(&even);
        assert_eq!(merged.len(), all.len());
        let (merged, all) = (merged.summary(), all.summary());
        assert_eq!(merged.p50_us, all.p50_us);
        assert_eq!(merged.p99_us, all.p99_us);
        assert_eq!(merged.p999_us, all.p999_us);
        assert_eq!(merged.max_us, all.max_us);
        assert!(
            (merged.mean_us - all.mean_us).abs() < 1e-6,
            "{merged:?} {all:?}"
        );
    }

    #[test]
    fn an_empty_run_reports_zeros() {
        assert_eq!(Latencies::new().summary().p99_us, 0.0);
    }
}
