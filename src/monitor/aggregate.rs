//! Window statistics over timestamped metric samples (SPEC §8.2): sums counters and merges
//! latency histograms, never averages percentiles.
//!
//! Conventions, chosen once here so every caller reports the same numbers:
//! - A sample's timestamp is the start of the interval it covers; it belongs to a window
//!   `[from, to)` when its start does.
//! - `cacheHitRate` is hits over cache lookups (hits + misses), in percent; requests that never
//!   consulted the cache do not dilute it.
//! - `errorsTotal` counts 4xx and 5xx: a configuration change that blocks or misroutes traffic
//!   shows up as 4xx, so both matter for rollback. `errorRate` is errors over requests, in %.
//! - Rates (`requestsPerSec`, `bandwidthMbps`) divide by the seconds of the window actually
//!   covered by samples (the union of their intervals, clipped to the window), so an edge that
//!   joined five minutes into a one-hour window is not reported at a twelfth of its rate, and
//!   samples of many edges over the same interval add up rather than stretch time.
//!   `bandwidthMbps` is egress (`bytesSent`).
//! - Zero traffic: every rate and percentile is `0.0`, not null, so the shape always matches
//!   `PerformanceSnapshot`; `requestsTotal == 0` is the signal that there was nothing to measure.
//!   Analysis never reads a zero as "good": it refuses to judge below `minSamples` requests.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::metrics::LATENCY_BUCKETS_MS;
use crate::model::{LatencyHistogram, MetricsSample, PerformanceSnapshot, Timestamp};

/// Interval assumed for a sample that reports `intervalSeconds: 0` (the edge protocol default).
pub const DEFAULT_INTERVAL_SECONDS: u32 = 10;

/// Most points a `series` may have; bounds the work one query can ask for.
pub const MAX_SERIES_POINTS: usize = 10_000;

/// Each histogram bucket saturates here, so the sum over all buckets (which the model's
/// quantile code computes with plain addition) cannot overflow whatever edges report.
const BUCKET_CAP: u64 = u64::MAX / 32;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AggregateError {
    #[error("invalid window: `to` must be after `from`")]
    InvalidWindow,
    #[error("invalid step: it must be positive and give at most {MAX_SERIES_POINTS} points")]
    InvalidStep,
}

/// Statistics of one window, the JSON answer of the metrics queries (never stored).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WindowStats {
    pub requests_total: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_hit_rate: f64,
    pub avg_latency_ms: f64,
    pub p50_latency_ms: f64,
    pub p95_latency_ms: f64,
    pub p99_latency_ms: f64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub errors_total: u64,
    pub error_rate: f64,
    pub requests_per_sec: f64,
    pub bandwidth_mbps: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<Vec<SeriesPoint>>,
}

/// One `step` of a series; `timestamp` is the start of the step.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeriesPoint {
    pub timestamp: Timestamp,
    pub requests_total: u64,
    pub cache_hit_rate: f64,
    pub error_rate: f64,
    pub avg_latency_ms: f64,
    pub p50_latency_ms: f64,
    pub p95_latency_ms: f64,
    pub p99_latency_ms: f64,
    pub requests_per_sec: f64,
    pub bandwidth_mbps: f64,
}

/// Summed counters and merged latency of a window: the mergeable form behind `WindowStats`.
/// Merging totals (of edges, of groups) and then deriving rates is the only correct order.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct WindowTotals {
    pub requests: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub errors: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub latency: LatencyHistogram,
    /// Milliseconds of the window covered by at least one sample.
    pub covered_ms: i64,
}

impl WindowTotals {
    /// Totals of the samples whose start lies in `[from, to)`.
    pub fn from_samples(
        samples: &[(Timestamp, MetricsSample)],
        from: Timestamp,
        to: Timestamp,
    ) -> Self {
        totals_of(samples.iter().map(|(t, s)| (*t, s)), from, to)
    }

    /// Adds one sample's counters (not its coverage, which needs the window).
    pub fn add_sample(&mut self, sample: &MetricsSample) {
        self.requests = self.requests.saturating_add(sample.requests);
        self.cache_hits = self.cache_hits.saturating_add(sample.cache_hits);
        self.cache_misses = self.cache_misses.saturating_add(sample.cache_misses);
        self.errors = self
            .errors
            .saturating_add(sample.errors4xx.saturating_add(sample.errors5xx));
        self.bytes_sent = self.bytes_sent.saturating_add(sample.bytes_sent);
        self.bytes_received = self.bytes_received.saturating_add(sample.bytes_received);
        merge_histogram(&mut self.latency, &sample.latency);
    }

    /// Adds totals of another source over the same window (another edge, another group).
    /// Sources run side by side, so coverage is the longer of the two, not the sum.
    pub fn merge(&mut self, other: &WindowTotals) {
        self.requests = self.requests.saturating_add(other.requests);
        self.cache_hits = self.cache_hits.saturating_add(other.cache_hits);
        self.cache_misses = self.cache_misses.saturating_add(other.cache_misses);
        self.errors = self.errors.saturating_add(other.errors);
        self.bytes_sent = self.bytes_sent.saturating_add(other.bytes_sent);
        self.bytes_received = self.bytes_received.saturating_add(other.bytes_received);
        merge_histogram(&mut self.latency, &other.latency);
        self.covered_ms = self.covered_ms.max(other.covered_ms);
    }

    /// Hits over lookups, in percent; 0 with no lookups.
    pub fn cache_hit_rate(&self) -> f64 {
        percent(
            self.cache_hits,
            self.cache_hits.saturating_add(self.cache_misses),
        )
    }

    /// Errors over requests, in percent; 0 with no requests.
    pub fn error_rate(&self) -> f64 {
        percent(self.errors, self.requests)
    }

    /// Latency quantile from the merged histogram; 0 with no latency observations.
    pub fn latency_quantile_ms(&self, q: f64) -> f64 {
        finite_or_zero(self.latency.quantile(q).unwrap_or(0.0))
    }

    pub fn avg_latency_ms(&self) -> f64 {
        finite_or_zero(self.latency.mean().unwrap_or(0.0))
    }

    pub fn requests_per_sec(&self) -> f64 {
        per_second(self.requests as f64, self.covered_ms)
    }

    /// Egress in megabits per second.
    pub fn bandwidth_mbps(&self) -> f64 {
        per_second(self.bytes_sent as f64 * 8.0 / 1_000_000.0, self.covered_ms)
    }

    /// The JSON statistics of these totals, without a series.
    pub fn stats(&self) -> WindowStats {
        WindowStats {
            requests_total: self.requests,
            cache_hits: self.cache_hits,
            cache_misses: self.cache_misses,
            cache_hit_rate: self.cache_hit_rate(),
            avg_latency_ms: self.avg_latency_ms(),
            p50_latency_ms: self.latency_quantile_ms(0.50),
            p95_latency_ms: self.latency_quantile_ms(0.95),
            p99_latency_ms: self.latency_quantile_ms(0.99),
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            errors_total: self.errors,
            error_rate: self.error_rate(),
            requests_per_sec: self.requests_per_sec(),
            bandwidth_mbps: self.bandwidth_mbps(),
            series: None,
        }
    }

    fn point(&self, timestamp: Timestamp) -> SeriesPoint {
        SeriesPoint {
            timestamp,
            requests_total: self.requests,
            cache_hit_rate: self.cache_hit_rate(),
            error_rate: self.error_rate(),
            avg_latency_ms: self.avg_latency_ms(),
            p50_latency_ms: self.latency_quantile_ms(0.50),
            p95_latency_ms: self.latency_quantile_ms(0.95),
            p99_latency_ms: self.latency_quantile_ms(0.99),
            requests_per_sec: self.requests_per_sec(),
            bandwidth_mbps: self.bandwidth_mbps(),
        }
    }
}

impl WindowStats {
    /// Statistics of the samples in `[from, to)`; with `step_ms`, also a series of
    /// `ceil((to - from) / step)` points starting at `from` (empty steps are zero points, so a
    /// chart shows the gap instead of interpolating over it).
    pub fn compute(
        samples: &[(Timestamp, MetricsSample)],
        from: Timestamp,
        to: Timestamp,
        step_ms: Option<i64>,
    ) -> Result<WindowStats, AggregateError> {
        let span = to.millis().saturating_sub(from.millis());
        if span <= 0 {
            return Err(AggregateError::InvalidWindow);
        }
        let mut stats = WindowTotals::from_samples(samples, from, to).stats();
        if let Some(step) = step_ms {
            stats.series = Some(series(samples, from, to, span, step)?);
        }
        Ok(stats)
    }
}

fn series(
    samples: &[(Timestamp, MetricsSample)],
    from: Timestamp,
    to: Timestamp,
    span: i64,
    step: i64,
) -> Result<Vec<SeriesPoint>, AggregateError> {
    if step <= 0 {
        return Err(AggregateError::InvalidStep);
    }
    let n_points = span / step + i64::from(span % step != 0);
    let n_points = usize::try_from(n_points).map_err(|_| AggregateError::InvalidStep)?;
    if n_points > MAX_SERIES_POINTS {
        return Err(AggregateError::InvalidStep);
    }
    let mut buckets: Vec<Vec<(Timestamp, &MetricsSample)>> = vec![Vec::new(); n_points];
    for (t, sample) in samples {
        if *t < from || *t >= to {
            continue;
        }
        let index = (t.millis().saturating_sub(from.millis()) / step) as usize;
        if let Some(bucket) = buckets.get_mut(index) {
            bucket.push((*t, sample));
        }
    }
    Ok(buckets
        .into_iter()
        .enumerate()
        .map(|(index, bucket)| {
            let bucket_from = from.plus_millis(step.saturating_mul(index as i64));
            let bucket_to = bucket_from.plus_millis(step).min(to);
            totals_of(bucket.into_iter(), bucket_from, bucket_to).point(bucket_from)
        })
        .collect())
}

/// Sums the samples starting in `[from, to)` and measures the union of their intervals.
fn totals_of<'a>(
    samples: impl Iterator<Item = (Timestamp, &'a MetricsSample)>,
    from: Timestamp,
    to: Timestamp,
) -> WindowTotals {
    let mut totals = WindowTotals::default();
    let mut intervals: Vec<(i64, i64)> = Vec::new();
    for (t, sample) in samples {
        if t < from || t >= to {
            continue;
        }
        totals.add_sample(sample);
        let seconds = if sample.interval_seconds == 0 {
            DEFAULT_INTERVAL_SECONDS
        } else {
            sample.interval_seconds
        };
        let end = t
            .millis()
            .saturating_add(i64::from(seconds) * 1000)
            .min(to.millis());
        intervals.push((t.millis(), end));
    }
    intervals.sort_unstable();
    let mut covered: i64 = 0;
    let mut current: Option<(i64, i64)> = None;
    for (start, end) in intervals {
        current = match current {
            Some((cur_start, cur_end)) if start <= cur_end => Some((cur_start, cur_end.max(end))),
            Some((cur_start, cur_end)) => {
                covered = covered.saturating_add(cur_end - cur_start);
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    if let Some((cur_start, cur_end)) = current {
        covered = covered.saturating_add(cur_end - cur_start);
    }
    totals.covered_ms = covered;
    totals
}

/// The snapshot form (SPEC §2.6) of window statistics; `sampleCount` is the number of requests,
/// the unit `minSamples` is counted in.
pub fn to_snapshot(stats: &WindowStats, at: Timestamp) -> PerformanceSnapshot {
    PerformanceSnapshot {
        timestamp: at,
        cache_hit_rate: stats.cache_hit_rate,
        avg_latency_ms: stats.avg_latency_ms,
        p50_latency_ms: stats.p50_latency_ms,
        p95_latency_ms: stats.p95_latency_ms,
        p99_latency_ms: stats.p99_latency_ms,
        error_rate: stats.error_rate,
        requests_per_sec: stats.requests_per_sec,
        bandwidth_mbps: stats.bandwidth_mbps,
        sample_count: stats.requests_total,
    }
}

/// Adds `from` into `into` bucket by bucket, saturating; a histogram whose shape does not match
/// the fixed bounds is ignored rather than guessed at.
pub(crate) fn merge_histogram(into: &mut LatencyHistogram, from: &LatencyHistogram) {
    let n_buckets = LATENCY_BUCKETS_MS.len() + 1;
    if from.counts.len() != n_buckets {
        return;
    }
    if into.counts.len() != n_buckets {
        *into = LatencyHistogram::default();
    }
    for (total, n) in into.counts.iter_mut().zip(&from.counts) {
        *total = total.saturating_add(*n).min(BUCKET_CAP);
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    finite_or_zero(part as f64 * 100.0 / whole as f64)
}

fn per_second(amount: f64, covered_ms: i64) -> f64 {
    if covered_ms <= 0 {
        return 0.0;
    }
    finite_or_zero(amount * 1000.0 / covered_ms as f64)
}

fn finite_or_zero(value: f64) -> f64 {
    if value.is_finite() { value } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_764_000_000_000;

    fn sample(
        requests: u64,
        hits: u64,
        misses: u64,
        errors: u64,
        latency_ms: &[(f64, u64)],
    ) -> MetricsSample {
        let mut latency = LatencyHistogram::default();
        for (ms, n) in latency_ms {
            for _ in 0..*n {
                latency.record(*ms);
            }
        }
        MetricsSample {
            interval_seconds: 10,
            requests,
            cache_hits: hits,
            cache_misses: misses,
            errors4xx: errors / 2,
            errors5xx: errors - errors / 2,
            bytes_sent: requests.saturating_mul(1000),
            bytes_received: requests.saturating_mul(100),
            latency,
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp(T0 + seconds * 1000)
    }

    struct Case {
        name: &'static str,
        samples: Vec<(Timestamp, MetricsSample)>,
        window: (i64, i64),
        expect: fn(&WindowStats) -> bool,
    }

    fn check(case: Case) {
        let stats = WindowStats::compute(&case.samples, at(case.window.0), at(case.window.1), None)
            .expect("valid window");
        assert!((case.expect)(&stats), "{}: {stats:?}", case.name);
        let json = serde_json::to_value(&stats).expect("serialises");
        assert!(
            json.get("series").is_none(),
            "{}: series only with a step",
            case.name
        );
        assert!(
            json.get("requestsTotal").is_some(),
            "{}: camelCase",
            case.name
        );
    }

    #[test]
    fn window_statistics() {
        let cases = vec![
            Case {
                name: "zero traffic gives zeros, not NaN",
                samples: vec![],
                window: (0, 3600),
                expect: |s| {
                    s.requests_total == 0
                        && s.cache_hit_rate == 0.0
                        && s.p99_latency_ms == 0.0
                        && s.requests_per_sec == 0.0
                },
            },
            Case {
                name: "counters sum and rates use covered seconds",
                samples: vec![
                    (at(0), sample(1000, 900, 100, 10, &[(8.0, 100)])),
                    (at(10), sample(3000, 2700, 300, 30, &[(8.0, 100)])),
                ],
                window: (0, 3600),
                expect: |s| {
                    s.requests_total == 4000
                        && s.cache_hits == 3600
                        && (s.cache_hit_rate - 90.0).abs() < 1e-9
                        && s.errors_total == 40
                        && (s.error_rate - 1.0).abs() < 1e-9
                        && (s.requests_per_sec - 200.0).abs() < 1e-9
                        && (s.bandwidth_mbps - 1.6).abs() < 1e-9
                },
            },
            Case {
                name: "edges over the same interval add up their rates",
                samples: vec![
                    (at(0), sample(1000, 0, 0, 0, &[])),
                    (at(0), sample(1000, 0, 0, 0, &[])),
                ],
                window: (0, 60),
                expect: |s| (s.requests_per_sec - 200.0).abs() < 1e-9 && s.cache_hit_rate == 0.0,
            },
            Case {
                name: "samples outside [from, to) are left out",
                samples: vec![
                    (at(-10), sample(500, 0, 0, 0, &[])),
                    (at(0), sample(100, 0, 0, 0, &[])),
                    (at(60), sample(700, 0, 0, 0, &[])),
                ],
                window: (0, 60),
                expect: |s| s.requests_total == 100,
            },
            Case {
                name: "percentiles come from merged histograms, not averaged",
                samples: vec![
                    (at(0), sample(99, 0, 0, 0, &[(8.0, 99)])),
                    (at(10), sample(1, 0, 0, 0, &[(400.0, 1)])),
                    (at(20), sample(100, 0, 0, 0, &[(8.0, 100)])),
                ],
                window: (0, 60),
                // Averaging per-sample p99s would give about (10 + 500 + 10) / 3 = 173 ms.
                expect: |s| s.p99_latency_ms <= 10.0 && s.p50_latency_ms >= 5.0,
            },
        ];
        for case in cases {
            check(case);
        }
    }

    #[test]
    fn series_buckets_by_step_and_keeps_gaps() {
        let samples = vec![
            (at(0), sample(100, 90, 10, 0, &[(8.0, 10)])),
            (at(10), sample(100, 90, 10, 0, &[(8.0, 10)])),
            (at(130), sample(600, 300, 300, 6, &[(120.0, 10)])),
        ];
        let stats = WindowStats::compute(&samples, at(0), at(180), Some(60_000)).expect("valid");
        let series = stats.series.expect("series with a step");
        assert_eq!(series.len(), 3);
        assert_eq!(series[0].timestamp, at(0));
        assert_eq!(series[0].requests_total, 200);
        assert_eq!(series[1].requests_total, 0);
        assert_eq!(series[2].requests_total, 600);
        assert!((series[2].cache_hit_rate - 50.0).abs() < 1e-9);
        assert!((series[2].requests_per_sec - 60.0).abs() < 1e-9);
        assert_eq!(stats.requests_total, 800);
    }

    #[test]
    fn bad_windows_and_steps_are_errors() {
        assert_eq!(
            WindowStats::compute(&[], at(10), at(10), None),
            Err(AggregateError::InvalidWindow)
        );
        assert_eq!(
            WindowStats::compute(&[], at(0), at(10), Some(0)),
            Err(AggregateError::InvalidStep)
        );
        assert_eq!(
            WindowStats::compute(&[], Timestamp(i64::MIN), Timestamp(i64::MAX), Some(1)),
            Err(AggregateError::InvalidStep)
        );
    }

    #[test]
    fn hostile_counters_saturate_instead_of_panicking() {
        let mut huge = sample(u64::MAX, u64::MAX, u64::MAX, 0, &[]);
        huge.errors4xx = u64::MAX;
        huge.errors5xx = u64::MAX;
        huge.latency.counts = vec![u64::MAX; LATENCY_BUCKETS_MS.len() + 1];
        let mut odd = sample(1, 0, 0, 0, &[]);
        odd.latency.counts = vec![1; 3];
        odd.interval_seconds = u32::MAX;
        let samples = vec![(at(0), huge.clone()), (at(0), huge), (at(5), odd)];
        let stats = WindowStats::compute(&samples, Timestamp(i64::MIN), Timestamp(i64::MAX), None)
            .expect("valid");
        assert_eq!(stats.requests_total, u64::MAX);
        assert!(stats.p99_latency_ms.is_finite() && stats.error_rate.is_finite());
    }

    #[test]
    fn snapshot_carries_the_window_figures() {
        let samples = vec![(at(0), sample(1000, 950, 50, 5, &[(30.0, 100)]))];
        let stats = WindowStats::compute(&samples, at(0), at(60), None).expect("valid");
        let snapshot = to_snapshot(&stats, at(60));
        assert_eq!(snapshot.sample_count, 1000);
        assert_eq!(snapshot.timestamp, at(60));
        assert_eq!(snapshot.p99_latency_ms, stats.p99_latency_ms);
        assert!((snapshot.cache_hit_rate - 95.0).abs() < 1e-9);
    }
}
