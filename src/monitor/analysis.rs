//! Canary analysis (SPEC §8.3): judges one interval of a watch period and keeps the breach
//! persistence state. Pure: no I/O, the clock comes in as a value.
//!
//! Every metric is judged on its "badness" orientation, where larger is worse: the cache miss
//! rate (`100 - cacheHitRate`), the error rate and the p99 latency. Three kinds of check:
//!
//! - **Threshold**: the canary group's aggregate (counters summed, histograms merged) against the
//!   deployment's limits: hit rate below `cacheHitRateThreshold`, error rate above
//!   `errorRateThreshold`, p99 above `p99LatencyThresholdMs`. A breach is *severe*, and fails at
//!   once, when it is at least twice the limit: error rate ≥ 2 × limit, p99 ≥ 2 × limit, or a
//!   miss rate at least twice the allowed one (`100 - hitRate ≥ 2 × (100 - limit)`; with the
//!   default 80 % that is a hit rate of 60 % or less).
//! - **CanaryVsBaseline**: per-edge values of canary edges against baseline edges in the same
//!   window. With at least [`MIN_GROUP_FOR_TEST`] edges with traffic on each side, a one-sided
//!   Mann–Whitney U test (average ranks for ties, tie-corrected variance, normal approximation
//!   with continuity correction) must find the canary worse at p < [`SIGNIFICANCE`], *and* the
//!   canary median must exceed the baseline median by more than `maxRegression` (relative) and
//!   by the metric's absolute floor. With fewer edges (say 1 canary against 8 baseline) a rank
//!   test cannot reach significance, so a robust rule stands in: the canary median must be
//!   beyond the baseline median by more than `maxRegression` and the floor *and* worse than every
//!   baseline edge. Both rules stay quiet on noise: being a little worse, or worse than some
//!   baseline edges, is not a regression.
//! - **AfterVsBefore**: the canary aggregate against the pre-deployment snapshot, with the same
//!   relative-and-floor rule. Skipped when the snapshot saw no traffic.
//!
//! `maxRegression` is a percentage of the reference (20 means "20 % worse than the reference"),
//! turned into a fraction where the relative rules use it ([`max_regression_fraction`]). The absolute floors
//! ([`HIT_RATE_FLOOR_PP`], [`ERROR_RATE_FLOOR_PP`], [`P99_FLOOR_MS`]) keep relative rules from
//! firing on tiny figures (0.02 % → 0.03 % errors is +50 % but nothing an operator acts on).
//!
//! Outcome of an interval, in this order:
//! 1. fewer than `minSamples` canary requests → `Inconclusive` (never a pass); breach counters
//!    are left as they were, since nothing was learnt;
//! 2. a severe threshold breach, or any metric breaching for `breachIntervals` consecutive
//!    intervals → `Fail` (whether that rolls back is the engine's call, from `autoRollback`);
//! 3. a breach not yet persistent, or a warning → `Warn`;
//! 4. otherwise `Pass`.
//!
//! Warnings follow the fixed operator levels of SPEC §8.3 (hit rate < 80 %, p99 > 100 ms,
//! errors > 1 %) and are raised only for metrics that do not already breach the deployment's
//! own, looser, thresholds.

use serde::{Deserialize, Serialize};

use super::aggregate::WindowTotals;
pub use crate::model::BreachState;
use crate::model::{PerformanceSnapshot, RollbackConfig, Timestamp};

/// One-sided significance level of the Mann–Whitney test.
pub const SIGNIFICANCE: f64 = 0.05;
/// Fewest edges with traffic per group for the rank test; below it the robust rule applies.
pub const MIN_GROUP_FOR_TEST: usize = 3;

/// z a rate regression must exceed, against the counts behind both rates, before it counts
/// where no rank test across edges applies (few edges, or against the pre-deployment
/// snapshot): one-sided p ≈ 0.001. A few hundred requests make a 0.2% error rate look like
/// 0.4% by chance; counts, not ratios, say whether that is noise.
pub const PROPORTION_Z: f64 = 3.0;

/// Observations in the top percent a relative p99 comparison needs on each side.
pub const MIN_TAIL_OBSERVATIONS: u64 = 50;
/// Smallest cache hit rate drop (percentage points) a relative check may call a regression.
pub const HIT_RATE_FLOOR_PP: f64 = 1.0;
/// Smallest error rate rise (percentage points) a relative check may call a regression.
pub const ERROR_RATE_FLOOR_PP: f64 = 0.1;
/// Smallest p99 rise (ms) a relative check may call a regression.
pub const P99_FLOOR_MS: f64 = 10.0;

/// Warning levels of SPEC §8.3, independent of a deployment's thresholds.
pub const WARN_HIT_RATE_BELOW: f64 = 80.0;
pub const WARN_P99_ABOVE_MS: f64 = 100.0;
pub const WARN_ERROR_RATE_ABOVE: f64 = 1.0;

/// `maxRegression` as the analysis uses it: the API and the stored RollbackConfig speak percent
/// of the reference value (10 = 10 % worse), the relative rules a fraction (0.1).
pub fn max_regression_fraction(thresholds: &RollbackConfig) -> f64 {
    thresholds.max_regression / 100.0
}

/// One edge's totals over the analysis window.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct EdgeWindow {
    pub edge_id: String,
    pub totals: WindowTotals,
}

/// Per-edge window totals of one group (canary or baseline).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct GroupSample {
    pub edges: Vec<EdgeWindow>,
}

impl GroupSample {
    /// All edges merged: the group's aggregate.
    pub fn aggregate(&self) -> WindowTotals {
        let mut totals = WindowTotals::default();
        for edge in &self.edges {
            totals.merge(&edge.totals);
        }
        totals
    }
}

/// What one interval's judgement looks at.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct AnalysisInput {
    /// The deployment's limits (SPEC §2.5).
    pub thresholds: RollbackConfig,
    pub canary: GroupSample,
    pub baseline: GroupSample,
    /// The deployment's `preDeploymentMetrics`, when taken.
    pub before: Option<PerformanceSnapshot>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Pass,
    Fail,
    Inconclusive,
    Warn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Metric {
    CacheHitRate,
    ErrorRate,
    P99Latency,
}

const METRICS: [Metric; 3] = [Metric::CacheHitRate, Metric::ErrorRate, Metric::P99Latency];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FindingKind {
    Threshold,
    CanaryVsBaseline,
    AfterVsBefore,
    /// An operator-level warning (SPEC §8.3) that does not breach the deployment's limits.
    Warning,
}

/// Test statistic of a Mann–Whitney comparison: U of the canary group, z, one-sided p.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Statistic {
    pub u: f64,
    pub z: f64,
    pub p: f64,
}

/// One reason behind a verdict, with the numbers that made it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub metric: Metric,
    pub kind: FindingKind,
    /// The canary figure in the metric's own unit (hit rate %, error rate %, p99 ms); the
    /// canary median across edges for `CanaryVsBaseline`, the aggregate otherwise.
    pub canary_value: f64,
    /// Baseline median, or the pre-deployment figure; none for thresholds and warnings.
    pub baseline_value: Option<f64>,
    /// The limit crossed, in the metric's unit.
    pub threshold: f64,
    /// Present when the rank test was used.
    pub statistic: Option<Statistic>,
    pub severe: bool,
    /// Consecutive breaching intervals of this metric including this one (0 for warnings).
    pub consecutive_intervals: u32,
}

/// One edge's figures as the analysis saw them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeFigures {
    pub edge_id: String,
    pub requests: u64,
    pub cache_hit_rate: f64,
    pub error_rate: f64,
    pub p99_latency_ms: f64,
}

/// A group's figures as stored with a verdict.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupSummary {
    pub edge_count: u32,
    pub requests_total: u64,
    pub cache_hit_rate: f64,
    pub error_rate: f64,
    pub avg_latency_ms: f64,
    pub p50_latency_ms: f64,
    pub p95_latency_ms: f64,
    pub p99_latency_ms: f64,
    pub edges: Vec<EdgeFigures>,
}

/// The judgement of one interval, stored with the deployment (postcard) and served as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub outcome: Outcome,
    pub reasons: Vec<Finding>,
    pub canary: GroupSummary,
    /// The edges still on the old version; none in a wave where every target runs the new
    /// version (the last step of a canary, a blue-green switch), judged without a baseline.
    pub baseline: Option<GroupSummary>,
    /// What stood in for the baseline when there was none ([`NO_BASELINE`]).
    pub note: Option<String>,
    pub at: Timestamp,
}

/// The note of a verdict judged with no edge left on the old version: the deployment's
/// absolute thresholds stand in for the canary-versus-baseline comparison (the comparison with
/// the pre-deployment snapshot still applies when one was taken).
pub const NO_BASELINE: &str = "no baseline: thresholds only";

impl BreachState {
    fn count_mut(&mut self, metric: Metric) -> &mut u32 {
        match metric {
            Metric::CacheHitRate => &mut self.cache_hit_rate,
            Metric::ErrorRate => &mut self.error_rate,
            Metric::P99Latency => &mut self.p99_latency,
        }
    }
}

/// Judges one interval and advances `state`.
pub fn judge(input: &AnalysisInput, state: &mut BreachState, now: Timestamp) -> Verdict {
    let thresholds = &input.thresholds;
    let canary_totals = input.canary.aggregate();
    let canary = summary(&input.canary, &canary_totals);
    let (baseline, note) = if input.baseline.edges.is_empty() {
        (None, Some(NO_BASELINE.to_string()))
    } else {
        (
            Some(summary(&input.baseline, &input.baseline.aggregate())),
            None,
        )
    };

    if canary_totals.requests < thresholds.min_samples {
        state.inconclusive = state.inconclusive.saturating_add(1);
        return Verdict {
            outcome: Outcome::Inconclusive,
            reasons: Vec::new(),
            canary,
            baseline,
            note,
            at: now,
        };
    }
    state.inconclusive = 0;

    let mut breaches: Vec<Finding> = Vec::new();
    let mut warnings: Vec<Finding> = Vec::new();
    for metric in METRICS {
        let aggregate_value = metric_value(metric, &canary_totals);
        let threshold = threshold_finding(metric, aggregate_value, thresholds);
        let threshold_breached = threshold.is_some();
        breaches.extend(threshold);
        breaches.extend(canary_vs_baseline(metric, input));
        if let Some(before) = &input.before {
            breaches.extend(after_vs_before(
                metric,
                aggregate_value,
                rate_count(metric, &canary_totals),
                before,
                thresholds,
            ));
        }
        if !threshold_breached {
            warnings.extend(warning_finding(metric, aggregate_value));
        }
    }

    let mut failed = false;
    for metric in METRICS {
        let count = state.count_mut(metric);
        if breaches.iter().any(|finding| finding.metric == metric) {
            *count = count.saturating_add(1);
        } else {
            *count = 0;
        }
        let consecutive = *count;
        for finding in breaches.iter_mut().filter(|f| f.metric == metric) {
            finding.consecutive_intervals = consecutive;
            failed |= finding.severe || consecutive >= thresholds.breach_intervals.max(1);
        }
    }

    let outcome = if failed {
        Outcome::Fail
    } else if !breaches.is_empty() || !warnings.is_empty() {
        Outcome::Warn
    } else {
        Outcome::Pass
    };
    breaches.extend(warnings);
    Verdict {
        outcome,
        reasons: breaches,
        canary,
        baseline,
        note,
        at: now,
    }
}

/// The metric in its own unit (hit rate %, error rate %, p99 ms).
fn metric_value(metric: Metric, totals: &WindowTotals) -> f64 {
    match metric {
        Metric::CacheHitRate => totals.cache_hit_rate(),
        Metric::ErrorRate => totals.error_rate(),
        Metric::P99Latency => totals.latency_quantile_ms(0.99),
    }
}

/// Whether this edge has the data the metric is computed from.
fn has_data(metric: Metric, totals: &WindowTotals) -> bool {
    match metric {
        Metric::CacheHitRate => totals.cache_hits.saturating_add(totals.cache_misses) > 0,
        Metric::ErrorRate => totals.requests > 0,
        Metric::P99Latency => totals.latency.total() > 0,
    }
}

/// Maps a value to "larger is worse".
fn badness(metric: Metric, value: f64) -> f64 {
    match metric {
        Metric::CacheHitRate => 100.0 - value,
        Metric::ErrorRate | Metric::P99Latency => value,
    }
}

/// The inverse of `badness`, to report limits in the metric's own unit.
fn from_badness(metric: Metric, badness_value: f64) -> f64 {
    badness(metric, badness_value)
}

fn floor(metric: Metric) -> f64 {
    match metric {
        Metric::CacheHitRate => HIT_RATE_FLOOR_PP,
        Metric::ErrorRate => ERROR_RATE_FLOOR_PP,
        Metric::P99Latency => P99_FLOOR_MS,
    }
}

fn threshold_finding(metric: Metric, value: f64, thresholds: &RollbackConfig) -> Option<Finding> {
    let limit = match metric {
        Metric::CacheHitRate => thresholds.cache_hit_rate_threshold,
        Metric::ErrorRate => thresholds.error_rate_threshold,
        Metric::P99Latency => thresholds.p99_latency_threshold_ms,
    };
    if !limit.is_finite() || !value.is_finite() {
        return None;
    }
    let (worse, allowed) = (badness(metric, value), badness(metric, limit));
    if worse <= allowed {
        return None;
    }
    Some(Finding {
        metric,
        kind: FindingKind::Threshold,
        canary_value: value,
        baseline_value: None,
        threshold: limit,
        statistic: None,
        severe: worse >= 2.0 * allowed,
        consecutive_intervals: 0,
    })
}

fn warning_finding(metric: Metric, value: f64) -> Option<Finding> {
    let level = match metric {
        Metric::CacheHitRate => WARN_HIT_RATE_BELOW,
        Metric::ErrorRate => WARN_ERROR_RATE_ABOVE,
        Metric::P99Latency => WARN_P99_ABOVE_MS,
    };
    (badness(metric, value) > badness(metric, level)).then_some(Finding {
        metric,
        kind: FindingKind::Warning,
        canary_value: value,
        baseline_value: None,
        threshold: level,
        statistic: None,
        severe: false,
        consecutive_intervals: 0,
    })
}

/// The badness a reference may grow to before it is a regression: beyond both the relative
/// allowance and the absolute floor.
fn regression_limit(metric: Metric, reference_badness: f64, max_regression: f64) -> f64 {
    let relative = reference_badness.max(0.0) * (1.0 + max_regression.max(0.0));
    relative.max(reference_badness + floor(metric))
}

fn canary_vs_baseline(metric: Metric, input: &AnalysisInput) -> Option<Finding> {
    let canary = edge_badness(metric, &input.canary);
    let baseline = edge_badness(metric, &input.baseline);
    if canary.is_empty() || baseline.is_empty() {
        return None;
    }
    let canary_median = median(&canary)?;
    let baseline_median = median(&baseline)?;
    let limit = regression_limit(
        metric,
        baseline_median,
        max_regression_fraction(&input.thresholds),
    );
    if !is_above(canary_median, limit) {
        return None;
    }
    // Rates are proportions of counts: whatever the rank test says across edges, the
    // merged counts must also show more than sampling noise.
    let canary_totals = input.canary.aggregate();
    let baseline_totals = input.baseline.aggregate();
    if !rate_regression_is_real(
        metric,
        badness(metric, metric_value(metric, &canary_totals)),
        rate_count(metric, &canary_totals),
        badness(metric, metric_value(metric, &baseline_totals)),
        rate_count(metric, &baseline_totals),
    ) {
        return None;
    }
    let statistic = if canary.len() >= MIN_GROUP_FOR_TEST && baseline.len() >= MIN_GROUP_FOR_TEST {
        let statistic = mann_whitney_greater(&canary, &baseline)?;
        if !is_above(SIGNIFICANCE, statistic.p) {
            return None;
        }
        Some(statistic)
    } else {
        let worst_baseline = baseline.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !is_above(canary_median, worst_baseline) {
            return None;
        }
        None
    };
    Some(Finding {
        metric,
        kind: FindingKind::CanaryVsBaseline,
        canary_value: from_badness(metric, canary_median),
        baseline_value: Some(from_badness(metric, baseline_median)),
        threshold: from_badness(metric, limit),
        statistic,
        severe: false,
        consecutive_intervals: 0,
    })
}

fn after_vs_before(
    metric: Metric,
    value: f64,
    canary_count: u64,
    before: &PerformanceSnapshot,
    thresholds: &RollbackConfig,
) -> Option<Finding> {
    if before.sample_count == 0 {
        return None;
    }
    let before_value = match metric {
        Metric::CacheHitRate => before.cache_hit_rate,
        Metric::ErrorRate => before.error_rate,
        Metric::P99Latency => before.p99_latency_ms,
    };
    if !before_value.is_finite() || !value.is_finite() {
        return None;
    }
    let limit = regression_limit(
        metric,
        badness(metric, before_value),
        max_regression_fraction(thresholds),
    );
    if !is_above(badness(metric, value), limit) {
        return None;
    }
    if !rate_regression_is_real(
        metric,
        badness(metric, value),
        canary_count,
        badness(metric, before_value),
        before.sample_count,
    ) {
        return None;
    }
    Some(Finding {
        metric,
        kind: FindingKind::AfterVsBefore,
        canary_value: value,
        baseline_value: Some(before_value),
        threshold: from_badness(metric, limit),
        statistic: None,
        severe: false,
        consecutive_intervals: 0,
    })
}

/// How many observations a metric is computed from.
fn rate_count(metric: Metric, totals: &WindowTotals) -> u64 {
    match metric {
        Metric::CacheHitRate => totals.cache_hits.saturating_add(totals.cache_misses),
        Metric::ErrorRate => totals.requests,
        Metric::P99Latency => totals.latency.total(),
    }
}

/// For rate metrics, whether the canary's badness (a percentage of `canary_n` events) is
/// above the reference's beyond sampling noise: a one-sided two-proportion z-test at
/// [`PROPORTION_Z`]. A p99 is judged only when both sides have at least
/// [`MIN_TAIL_OBSERVATIONS`] behind their top percent: a p99 of a thousand requests is ten
/// requests, and a bucket boundary away from any other.
fn rate_regression_is_real(
    metric: Metric,
    canary_badness: f64,
    canary_n: u64,
    reference_badness: f64,
    reference_n: u64,
) -> bool {
    if metric == Metric::P99Latency {
        let enough = MIN_TAIL_OBSERVATIONS * 100;
        return canary_n >= enough && reference_n >= enough;
    }
    if canary_n == 0 || reference_n == 0 {
        return false;
    }
    let (n1, n2) = (canary_n as f64, reference_n as f64);
    let (p1, p2) = (
        (canary_badness / 100.0).clamp(0.0, 1.0),
        (reference_badness / 100.0).clamp(0.0, 1.0),
    );
    let pooled = (p1 * n1 + p2 * n2) / (n1 + n2);
    let spread = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if !(spread.is_finite() && spread > 0.0) {
        // Both rates 0% or 100%: no noise to speak of.
        return p1 > p2;
    }
    is_above((p1 - p2) / spread, PROPORTION_Z)
}

/// Per-edge badness values of the edges that have data for the metric.
fn edge_badness(metric: Metric, group: &GroupSample) -> Vec<f64> {
    group
        .edges
        .iter()
        .filter(|edge| has_data(metric, &edge.totals))
        .map(|edge| badness(metric, metric_value(metric, &edge.totals)))
        .filter(|value| value.is_finite())
        .collect()
}

/// `value > limit`, false when either is NaN: a check that cannot be computed never fires.
fn is_above(value: f64, limit: f64) -> bool {
    value > limit
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

fn summary(group: &GroupSample, totals: &WindowTotals) -> GroupSummary {
    GroupSummary {
        edge_count: u32::try_from(group.edges.len()).unwrap_or(u32::MAX),
        requests_total: totals.requests,
        cache_hit_rate: totals.cache_hit_rate(),
        error_rate: totals.error_rate(),
        avg_latency_ms: totals.avg_latency_ms(),
        p50_latency_ms: totals.latency_quantile_ms(0.50),
        p95_latency_ms: totals.latency_quantile_ms(0.95),
        p99_latency_ms: totals.latency_quantile_ms(0.99),
        edges: group
            .edges
            .iter()
            .map(|edge| EdgeFigures {
                edge_id: edge.edge_id.clone(),
                requests: edge.totals.requests,
                cache_hit_rate: edge.totals.cache_hit_rate(),
                error_rate: edge.totals.error_rate(),
                p99_latency_ms: edge.totals.latency_quantile_ms(0.99),
            })
            .collect(),
    }
}

/// One-sided Mann–Whitney U test of "x tends to be larger than y": U of x counts the pairs
/// where x wins (ties count half), ranks are averaged over ties, the variance is tie-corrected
/// and the p-value comes from the normal approximation with continuity correction. `None` when
/// either sample is empty or holds a non-finite value.
pub fn mann_whitney_greater(x: &[f64], y: &[f64]) -> Option<Statistic> {
    if x.is_empty() || y.is_empty() || x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    let (n1, n2) = (x.len() as f64, y.len() as f64);
    let mut pooled: Vec<(f64, bool)> = x
        .iter()
        .map(|v| (*v, true))
        .chain(y.iter().map(|v| (*v, false)))
        .collect();
    pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = pooled.len();
    let mut rank_sum_x = 0.0;
    let mut tie_term = 0.0;
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && pooled[end].0 == pooled[start].0 {
            end += 1;
        }
        // Ranks are 1-based; a tie run from start..end shares the mean of its ranks.
        let average_rank = (start + 1 + end) as f64 / 2.0;
        let run = (end - start) as f64;
        tie_term += run * run * run - run;
        rank_sum_x +=
            average_rank * pooled[start..end].iter().filter(|(_, in_x)| *in_x).count() as f64;
        start = end;
    }
    let u = rank_sum_x - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let n_total = n1 + n2;
    let variance = n1 * n2 / 12.0 * ((n_total + 1.0) - tie_term / (n_total * (n_total - 1.0)));
    if !is_above(variance, 0.0) {
        // Every value tied: no evidence either way.
        return Some(Statistic { u, z: 0.0, p: 1.0 });
    }
    let z = (u - mean - 0.5) / variance.sqrt();
    let p = (0.5 * erfc(z / std::f64::consts::SQRT_2)).clamp(0.0, 1.0);
    Some(Statistic { u, z, p })
}

/// Complementary error function (Numerical Recipes `erfcc`, fractional error below 1.2e-7),
/// enough for p-values compared against 0.05.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let value = t * poly.exp();
    if x >= 0.0 { value } else { 2.0 - value }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LatencyHistogram, MetricsSample};

    const NOW: Timestamp = Timestamp(1_764_000_000_000);

    /// An edge's totals for one window: requests, hit rate %, error rate %, and latency mostly at
    /// `typical_ms` with 1.5 % of requests at `tail_ms` (so p99 sits in the tail's bucket).
    fn edge(
        id: &str,
        requests: u64,
        hit_rate: f64,
        error_rate: f64,
        typical_ms: f64,
        tail_ms: f64,
    ) -> EdgeWindow {
        let hits = (requests as f64 * hit_rate / 100.0).round() as u64;
        let errors = (requests as f64 * error_rate / 100.0).round() as u64;
        let mut latency = LatencyHistogram::default();
        let tail = requests * 15 / 1000;
        for _ in 0..(requests - tail) {
            latency.record(typical_ms);
        }
        for _ in 0..tail {
            latency.record(tail_ms);
        }
        let sample = MetricsSample {
            interval_seconds: 60,
            requests,
            cache_hits: hits,
            cache_misses: requests - hits,
            errors4xx: 0,
            errors5xx: errors,
            bytes_sent: requests * 10_000,
            bytes_received: requests * 500,
            latency,
        };
        let mut totals = WindowTotals::default();
        totals.add_sample(&sample);
        totals.covered_ms = 60_000;
        EdgeWindow {
            edge_id: id.to_string(),
            totals,
        }
    }

    /// A fleet of `n` edges around the simulator's healthy figures with a little per-edge noise.
    fn healthy(prefix: &str, n: usize, requests: u64) -> Vec<EdgeWindow> {
        (0..n)
            .map(|i| {
                let wobble = (i % 5) as f64 - 2.0;
                edge(
                    &format!("{prefix}-{i}"),
                    requests,
                    92.0 + wobble * 0.4,
                    0.2 + wobble * 0.03,
                    12.0,
                    40.0 + wobble * 2.0,
                )
            })
            .collect()
    }

    fn degraded(n: usize, hit_rate: f64, error_rate: f64, tail_ms: f64) -> Vec<EdgeWindow> {
        (0..n)
            .map(|i| {
                edge(
                    &format!("canary-{i}"),
                    5_000,
                    hit_rate,
                    error_rate,
                    12.0,
                    tail_ms,
                )
            })
            .collect()
    }

    /// The limits the cases are written against: the defaults with 20 % allowed regression.
    fn thresholds() -> RollbackConfig {
        RollbackConfig {
            max_regression: 20.0,
            ..RollbackConfig::default()
        }
    }

    fn input(canary: Vec<EdgeWindow>, baseline: Vec<EdgeWindow>) -> AnalysisInput {
        AnalysisInput {
            thresholds: thresholds(),
            canary: GroupSample { edges: canary },
            baseline: GroupSample { edges: baseline },
            before: Some(PerformanceSnapshot {
                timestamp: NOW.plus_millis(-600_000),
                cache_hit_rate: 92.0,
                p99_latency_ms: 40.0,
                error_rate: 0.2,
                sample_count: 100_000,
                ..PerformanceSnapshot::default()
            }),
        }
    }

    fn without_before(mut input: AnalysisInput) -> AnalysisInput {
        input.before = None;
        input
    }

    struct Case {
        name: &'static str,
        /// The same input judged once per interval, in order.
        intervals: Vec<AnalysisInput>,
        expected: Vec<Outcome>,
        /// Finding kinds and metrics that must appear in the last verdict.
        last_reasons: Vec<(FindingKind, Metric)>,
    }

    fn check(case: Case) {
        let mut state = BreachState::default();
        let mut outcomes = Vec::new();
        let mut last = None;
        for (i, interval) in case.intervals.iter().enumerate() {
            let verdict = judge(interval, &mut state, NOW.plus_millis(i as i64 * 10_000));
            outcomes.push(verdict.outcome);
            last = Some(verdict);
        }
        let last = last.expect("at least one interval");
        assert_eq!(
            outcomes, case.expected,
            "{}: {:#?}",
            case.name, last.reasons
        );
        for (kind, metric) in &case.last_reasons {
            assert!(
                last.reasons
                    .iter()
                    .any(|f| f.kind == *kind && f.metric == *metric),
                "{}: missing {kind:?} {metric:?} in {:#?}",
                case.name,
                last.reasons
            );
        }
        // Verdicts are stored with postcard and served as JSON: both must round-trip.
        let bytes = postcard::to_stdvec(&last).expect("postcard encodes");
        assert_eq!(
            postcard::from_bytes::<Verdict>(&bytes).expect("postcard decodes"),
            last,
            "{}",
            case.name
        );
        let json = serde_json::to_string(&last).expect("json encodes");
        assert_eq!(
            serde_json::from_str::<Verdict>(&json).expect("json decodes"),
            last,
            "{}",
            case.name
        );
    }

    #[test]
    fn verdicts() {
        let good = || input(healthy("canary", 5, 5_000), healthy("base", 20, 5_000));
        let one_canary = |e: EdgeWindow| input(vec![e], healthy("base", 8, 5_000));
        let cases = vec![
            Case {
                name: "good canary with noise passes",
                intervals: vec![good(), good(), good()],
                expected: vec![Outcome::Pass; 3],
                last_reasons: vec![],
            },
            Case {
                name: "hit-rate drop fails after persistence",
                intervals: vec![input(degraded(5, 75.0, 0.2, 40.0), healthy("base", 20, 5_000)); 2],
                expected: vec![Outcome::Warn, Outcome::Fail],
                last_reasons: vec![
                    (FindingKind::Threshold, Metric::CacheHitRate),
                    (FindingKind::CanaryVsBaseline, Metric::CacheHitRate),
                    (FindingKind::AfterVsBefore, Metric::CacheHitRate),
                ],
            },
            Case {
                name: "error spike fails after persistence",
                intervals: vec![input(degraded(5, 92.0, 1.5, 40.0), healthy("base", 20, 5_000)); 2],
                expected: vec![Outcome::Warn, Outcome::Fail],
                last_reasons: vec![
                    (FindingKind::Threshold, Metric::ErrorRate),
                    (FindingKind::CanaryVsBaseline, Metric::ErrorRate),
                ],
            },
            Case {
                name: "p99 rise fails after persistence",
                intervals: vec![
                    input(degraded(5, 92.0, 0.2, 300.0), healthy("base", 20, 5_000));
                    2
                ],
                expected: vec![Outcome::Warn, Outcome::Fail],
                last_reasons: vec![(FindingKind::Threshold, Metric::P99Latency)],
            },
            Case {
                name: "relative regression within absolute limits fails on baseline comparison",
                intervals: vec![input(degraded(5, 92.0, 0.2, 90.0), healthy("base", 20, 5_000)); 2],
                expected: vec![Outcome::Warn, Outcome::Fail],
                last_reasons: vec![(FindingKind::CanaryVsBaseline, Metric::P99Latency)],
            },
            Case {
                name: "one noisy interval does not fail",
                intervals: vec![
                    good(),
                    input(degraded(5, 92.0, 1.5, 40.0), healthy("base", 20, 5_000)),
                    good(),
                    good(),
                ],
                expected: vec![Outcome::Pass, Outcome::Warn, Outcome::Pass, Outcome::Pass],
                last_reasons: vec![],
            },
            Case {
                name: "too little traffic is inconclusive, never a pass",
                intervals: vec![input(healthy("canary", 2, 300), healthy("base", 20, 5_000))],
                expected: vec![Outcome::Inconclusive],
                last_reasons: vec![],
            },
            Case {
                name: "inconclusive interval neither resets nor advances a pending breach",
                intervals: vec![
                    input(degraded(5, 92.0, 1.5, 40.0), healthy("base", 20, 5_000)),
                    input(
                        vec![edge("canary-0", 10, 92.0, 0.0, 12.0, 40.0)],
                        healthy("base", 20, 5_000),
                    ),
                    input(degraded(5, 92.0, 1.5, 40.0), healthy("base", 20, 5_000)),
                ],
                expected: vec![Outcome::Warn, Outcome::Inconclusive, Outcome::Fail],
                last_reasons: vec![(FindingKind::Threshold, Metric::ErrorRate)],
            },
            Case {
                name: "severe error breach fails at once",
                intervals: vec![input(
                    degraded(5, 92.0, 9.0, 40.0),
                    healthy("base", 20, 5_000),
                )],
                expected: vec![Outcome::Fail],
                last_reasons: vec![(FindingKind::Threshold, Metric::ErrorRate)],
            },
            Case {
                name: "severe hit-rate breach (miss rate twice the allowed) fails at once",
                intervals: vec![input(
                    degraded(5, 55.0, 0.2, 40.0),
                    healthy("base", 20, 5_000),
                )],
                expected: vec![Outcome::Fail],
                last_reasons: vec![(FindingKind::Threshold, Metric::CacheHitRate)],
            },
            Case {
                name: "warning within the deployment's own limits warns, never fails",
                intervals: vec![
                    without_before(input(
                        degraded(5, 92.0, 0.2, 140.0),
                        degraded(20, 92.0, 0.2, 140.0)
                    ));
                    3
                ],
                expected: vec![Outcome::Warn; 3],
                last_reasons: vec![(FindingKind::Warning, Metric::P99Latency)],
            },
            Case {
                name: "single canary edge: robust rule catches a clear regression",
                intervals: vec![one_canary(edge("canary-0", 5_000, 92.0, 0.2, 12.0, 90.0)); 2],
                expected: vec![Outcome::Warn, Outcome::Fail],
                last_reasons: vec![(FindingKind::CanaryVsBaseline, Metric::P99Latency)],
            },
            Case {
                name: "single canary edge inside the baseline's spread passes",
                intervals: vec![one_canary(edge("canary-0", 5_000, 91.4, 0.23, 12.0, 38.0)); 2],
                expected: vec![Outcome::Pass; 2],
                last_reasons: vec![],
            },
        ];
        for case in cases {
            check(case);
        }
    }

    #[test]
    fn rank_test_and_robust_rule_decide_differently_where_each_applies() {
        // Four canary edges at a p99 of 90 ms against eight baseline edges around 40 ms, one
        // of them an outlier at 200 ms. The rank test finds the canary worse; the robust rule
        // would not, since the canary median is not worse than every baseline edge.
        let mut baseline = healthy("base", 7, 5_000);
        baseline.push(edge("base-outlier", 5_000, 92.0, 0.2, 12.0, 200.0));
        let ranked = input(degraded(4, 92.0, 0.2, 90.0), baseline);
        let finding = canary_vs_baseline(Metric::P99Latency, &ranked).expect("rank test fires");
        let statistic = finding.statistic.expect("judged by the rank test");
        assert!(statistic.p < SIGNIFICANCE, "{statistic:?}");
        let canary = edge_badness(Metric::P99Latency, &ranked.canary);
        let baseline = edge_badness(Metric::P99Latency, &ranked.baseline);
        let worst_baseline = baseline.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert!(
            median(&canary).expect("median") < worst_baseline,
            "the robust rule would stay quiet: {canary:?} vs {baseline:?}"
        );

        // One canary edge against two baseline edges: no rank test can reach significance
        // there, and the robust rule catches the regression instead.
        let robust = input(degraded(1, 92.0, 0.2, 90.0), healthy("base", 2, 5_000));
        let canary = edge_badness(Metric::P99Latency, &robust.canary);
        let baseline = edge_badness(Metric::P99Latency, &robust.baseline);
        let rank = mann_whitney_greater(&canary, &baseline).expect("valid input");
        assert!(rank.p >= SIGNIFICANCE, "{rank:?}");
        let finding = canary_vs_baseline(Metric::P99Latency, &robust).expect("robust rule fires");
        assert_eq!(finding.statistic, None, "judged by the robust rule");
        assert_eq!(finding.kind, FindingKind::CanaryVsBaseline);
    }

    #[test]
    fn max_regression_is_a_percentage_of_the_reference() {
        let allowing = |percent: f64| RollbackConfig {
            max_regression: percent,
            ..RollbackConfig::default()
        };
        assert_eq!(max_regression_fraction(&allowing(20.0)), 0.2);
        assert_eq!(max_regression_fraction(&allowing(0.0)), 0.0);
        assert_eq!(max_regression_fraction(&allowing(150.0)), 1.5);
        assert_eq!(max_regression_fraction(&RollbackConfig::default()), 0.1);

        // A canary p99 of 90 ms against a baseline of 40 ms is 125 % worse: a regression
        // when 20 % is allowed, none when 200 % is.
        let judged = |percent: f64| {
            let mut regressed = without_before(input(
                degraded(5, 92.0, 0.2, 90.0),
                healthy("base", 20, 5_000),
            ));
            regressed.thresholds = allowing(percent);
            judge(&regressed, &mut BreachState::default(), NOW)
        };
        let strict = judged(20.0);
        assert_eq!(strict.outcome, Outcome::Warn, "{:#?}", strict.reasons);
        assert!(
            strict
                .reasons
                .iter()
                .any(|f| f.kind == FindingKind::CanaryVsBaseline && f.metric == Metric::P99Latency),
            "{:#?}",
            strict.reasons
        );
        let lenient = judged(200.0);
        assert_eq!(lenient.outcome, Outcome::Pass, "{:#?}", lenient.reasons);
    }

    #[test]
    fn a_wave_without_baseline_says_so_instead_of_zero_figures() {
        let last_wave = input(healthy("canary", 9, 5_000), Vec::new());
        let verdict = judge(&last_wave, &mut BreachState::default(), NOW);
        assert_eq!(verdict.outcome, Outcome::Pass, "{:#?}", verdict.reasons);
        assert_eq!(verdict.baseline, None);
        assert_eq!(verdict.note.as_deref(), Some(NO_BASELINE));
        let json = serde_json::to_value(&verdict).expect("json");
        assert_eq!(json["note"], NO_BASELINE, "{json}");
        assert!(json["baseline"].is_null(), "{json}");

        // Thresholds still judge it.
        let degraded_last_wave = input(degraded(9, 92.0, 9.0, 40.0), Vec::new());
        let verdict = judge(&degraded_last_wave, &mut BreachState::default(), NOW);
        assert_eq!(verdict.outcome, Outcome::Fail);
        assert_eq!(verdict.note.as_deref(), Some(NO_BASELINE));

        let with_baseline = judge(
            &input(healthy("canary", 2, 5_000), healthy("base", 7, 5_000)),
            &mut BreachState::default(),
            NOW,
        );
        assert_eq!(with_baseline.note, None);
        assert_eq!(with_baseline.baseline.map(|b| b.edge_count), Some(7));
    }

    #[test]
    fn mann_whitney_matches_textbook_values() {
        struct Known {
            x: Vec<f64>,
            y: Vec<f64>,
            u: f64,
            p: Option<f64>,
        }
        let known = vec![
            // Complete separation: U of the larger group is n1 * n2.
            Known {
                x: vec![4.0, 5.0, 6.0],
                y: vec![1.0, 2.0, 3.0],
                u: 9.0,
                p: Some(0.0404),
            },
            Known {
                x: vec![1.0, 2.0, 3.0],
                y: vec![4.0, 5.0, 6.0],
                u: 0.0,
                p: None,
            },
            // R1 = 32, U = 17, z = 6.5 / sqrt(50/3) = 1.592, p = 0.0557 (scipy, asymptotic).
            Known {
                x: vec![19.0, 22.0, 16.0, 29.0, 24.0],
                y: vec![20.0, 11.0, 17.0, 12.0],
                u: 17.0,
                p: Some(0.0557),
            },
            // Ties: ranks 1.5, 1.5, 3, 4.5, 4.5, 6; R1 = 1.5 + 4.5 + 6 = 12, U = 6.
            Known {
                x: vec![1.0, 3.0, 4.0],
                y: vec![1.0, 2.0, 3.0],
                u: 6.0,
                p: None,
            },
            // All tied: no evidence.
            Known {
                x: vec![2.0, 2.0],
                y: vec![2.0, 2.0, 2.0],
                u: 3.0,
                p: Some(1.0),
            },
        ];
        for case in known {
            let statistic = mann_whitney_greater(&case.x, &case.y).expect("valid input");
            assert!(
                (statistic.u - case.u).abs() < 1e-9,
                "{:?} vs {:?}: {statistic:?}",
                case.x,
                case.y
            );
            if let Some(p) = case.p {
                assert!(
                    (statistic.p - p).abs() < 5e-4,
                    "{:?} vs {:?}: {statistic:?}",
                    case.x,
                    case.y
                );
            }
        }
        assert_eq!(mann_whitney_greater(&[], &[1.0]), None);
        assert_eq!(mann_whitney_greater(&[f64::NAN], &[1.0]), None);
    }

    proptest::proptest! {
        #[test]
        fn rank_test_stays_a_probability(
            x in proptest::collection::vec(-1e6f64..1e6, 1..20),
            y in proptest::collection::vec(-1e6f64..1e6, 1..20),
        ) {
            let statistic = mann_whitney_greater(&x, &y).expect("finite input");
            proptest::prop_assert!((0.0..=1.0).contains(&statistic.p), "{statistic:?}");
            proptest::prop_assert!(statistic.u >= 0.0 && statistic.u <= (x.len() * y.len()) as f64);
        }
    }

    #[test]
    fn rate_noise_on_thin_traffic_is_not_a_regression() {
        // 0.38% errors over 1,317 requests against 0.26% over 2,317: noise.
        assert!(!rate_regression_is_real(
            Metric::ErrorRate,
            0.38,
            1_317,
            0.26,
            2_317
        ));
        // A 9.6% miss rate over 1,317 against 7.7% over 10,487: still within noise at z > 3.
        assert!(!rate_regression_is_real(
            Metric::CacheHitRate,
            9.57,
            1_317,
            7.67,
            10_487
        ));
        // 9% errors over 2,000 requests against 0.2%: real.
        assert!(rate_regression_is_real(
            Metric::ErrorRate,
            9.0,
            2_000,
            0.2,
            20_000
        ));
        assert!(!rate_regression_is_real(
            Metric::ErrorRate,
            5.0,
            0,
            0.2,
            100
        ));
        assert!(!rate_regression_is_real(
            Metric::P99Latency,
            46.0,
            1_300,
            38.0,
            10_000
        ));
        assert!(rate_regression_is_real(
            Metric::P99Latency,
            90.0,
            5_000,
            40.0,
            5_000
        ));
    }

    #[test]
    fn hostile_thresholds_do_not_panic() {
        let mut hostile = input(healthy("canary", 3, 5_000), healthy("base", 3, 5_000));
        hostile.thresholds = RollbackConfig {
            cache_hit_rate_threshold: f64::NAN,
            error_rate_threshold: f64::INFINITY,
            p99_latency_threshold_ms: -1.0,
            max_regression: f64::NAN,
            breach_intervals: 0,
            ..thresholds()
        };
        hostile.before = Some(PerformanceSnapshot {
            sample_count: 1,
            p99_latency_ms: f64::NAN,
            ..PerformanceSnapshot::default()
        });
        let verdict = judge(&hostile, &mut BreachState::default(), NOW);
        // A negative p99 limit is breached by any latency; one interval suffices at 0 intervals.
        assert_eq!(verdict.outcome, Outcome::Fail);
    }
}
