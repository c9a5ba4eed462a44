//! Latency histograms (HDR, microseconds) and the figures one scenario reports.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// A histogram from 1 µs to 2 minutes with 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// One latency distribution, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// (percentile, µs) points of the whole distribution, for the charts.
    pub curve: Vec<(f64, u64)>,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let mut curve: Vec<(f64, u64)> = Vec::new();
        for v in h.iter_quantiles(4) {
            let point = (v.quantile_iterated_to() * 100.0, v.value_iterated_to());
            if curve.last().is_none_or(|last| last.0 < point.0) {
                curve.push(point);
            }
        }
        Latency {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            curve,
        }
    }

    /// `p50 0.42 ms  p90 ...`, the form the console shows.
    pub fn line(&self) -> String {
        format!(
            "p50 {} ms  p90 {} ms  p99 {} ms  max {} ms  (n={})",
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.max_us),
            self.count
        )
    }
}

/// Microseconds as milliseconds with two decimals.
pub fn ms(us: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // latencies are far below 2^52 µs
    let value = us as f64 / 1000.0;
    format!("{value:.2}")
}

/// What one scenario measured.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub scenario: String,
    /// What `count` and `rate` count: requests, commands, events, writes.
    pub unit: String,
    pub count: u64,
    pub errors: u64,
    pub seconds: f64,
    /// `count / seconds`.
    pub rate: f64,
    pub latencies: BTreeMap<String, Latency>,
    /// Scenario-specific figures (bytes per event, peak RSS, ...).
    pub extra: BTreeMap<String, serde_json::Value>,
    /// The settings it ran with.
    pub settings: BTreeMap<String, serde_json::Value>,
    /// Up to a few distinct error messages with their counts.
    pub error_samples: BTreeMap<String, u64>,
}

impl Report {
    pub fn new(scenario: &str, unit: &str) -> Self {
        Report {
            scenario: scenario.to_owned(),
            unit: unit.to_owned(),
            ..Report::default()
        }
    }

    pub fn finish(&mut self, count: u64, elapsed: Duration) {
        self.count = count;
        self.seconds = elapsed.as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let count = count as f64;
        self.rate = if self.seconds > 0.0 {
            count / self.seconds
        } else {
            0.0
        };
    }

    pub fn extra(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.extra.insert(key.to_owned(), value.into());
    }

    pub fn setting(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.settings.insert(key.to_owned(), value.into());
    }

    /// The human summary printed on stdout.
    pub fn print(&self) {
        println!(
            "== {}: {:.0} {}/s ({} {} in {:.1} s, {} errors)",
            self.scenario, self.rate, self.unit, self.count, self.unit, self.seconds, self.errors
        );
        for (name, latency) in &self.latencies {
            println!("   {name:<16} {}", latency.line());
        }
        for (key, value) in &self.extra {
            println!("   {key}: {value}");
        }
        for (message, n) in &self.error_samples {
            println!("   error x{n}: {message}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_curve_come_from_the_histogram() {
        let mut h = histogram();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let l = Latency::from_histogram(&h);
        assert_eq!(l.count, 1000);
        assert_eq!(l.p50_us, 500);
        assert_eq!(l.p99_us, 990);
        assert_eq!(l.max_us, 1000);
        assert!(l
            .curve
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(ms(1234), "1.23");
        assert!(l.line().starts_with("p50 0.50 ms"));
    }

    #[test]
    fn rate_is_count_over_seconds() {
        let mut r = Report::new("x", "requests");
        r.finish(500, Duration::from_millis(250));
        assert!((r.rate - 2000.0).abs() < 1e-9);
    }
}
