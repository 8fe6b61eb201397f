//! What edges report each interval (SPEC §8.1) and performance snapshots (SPEC §2.6).

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// Upper bounds (ms, inclusive) of the fixed latency buckets; one more bucket counts the rest.
/// Fixed bounds are what make histograms mergeable across edges and time.
pub const LATENCY_BUCKETS_MS: [f64; 15] = [
    1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 75.0, 100.0, 150.0, 250.0, 500.0, 1000.0,
];

/// Request counts per latency bucket; `counts.len() == LATENCY_BUCKETS_MS.len() + 1`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencyHistogram {
    pub bounds_ms: Vec<f64>,
    pub counts: Vec<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            bounds_ms: LATENCY_BUCKETS_MS.to_vec(),
            counts: vec![0; LATENCY_BUCKETS_MS.len() + 1],
        }
    }
}

impl LatencyHistogram {
    /// Counts one observation.
    pub fn record(&mut self, latency_ms: f64) {
        let slot = LATENCY_BUCKETS_MS
            .iter()
            .position(|bound| latency_ms <= *bound)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.record_n(slot, 1);
    }

    fn record_n(&mut self, slot: usize, n: u64) {
        if self.counts.len() != LATENCY_BUCKETS_MS.len() + 1 {
            self.counts = vec![0; LATENCY_BUCKETS_MS.len() + 1];
        }
        self.counts[slot] += n;
    }

    /// Adds another histogram with the same bounds; mismatched inputs are ignored.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        if other.counts.len() != LATENCY_BUCKETS_MS.len() + 1 {
            return;
        }
        for (slot, n) in other.counts.iter().enumerate() {
            self.record_n(slot, *n);
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The q-quantile (0..=1), interpolated linearly inside its bucket.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut seen = 0u64;
        for (slot, n) in self.counts.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            if (seen + n) as f64 >= rank {
                let lower = if slot == 0 {
                    0.0
                } else {
                    LATENCY_BUCKETS_MS[slot - 1]
                };
                let upper = LATENCY_BUCKETS_MS
                    .get(slot)
                    .copied()
                    .unwrap_or(LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.len() - 1] * 2.0);
                let within = (rank - seen as f64) / *n as f64;
                return Some(lower + (upper - lower) * within);
            }
            seen += n;
        }
        Some(LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.len() - 1] * 2.0)
    }

    /// Mean estimated from bucket midpoints.
    pub fn mean(&self) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let mut sum = 0.0;
        for (slot, n) in self.counts.iter().enumerate() {
            let lower = if slot == 0 {
                0.0
            } else {
                LATENCY_BUCKETS_MS[slot - 1]
            };
            let upper = LATENCY_BUCKETS_MS
                .get(slot)
                .copied()
                .unwrap_or(LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.len() - 1] * 2.0);
            sum += (lower + upper) / 2.0 * *n as f64;
        }
        Some(sum / total as f64)
    }
}

/// One interval's counters from one edge (SPEC §8.1).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct MetricsSample {
    pub interval_seconds: u32,
    pub requests: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub errors4xx: u64,
    pub errors5xx: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub latency: LatencyHistogram,
}

impl MetricsSample {
    /// Adds `other`'s counts and interval to this one: one sample for both intervals, as an
    /// edge sends when the previous heartbeat reached no control plane.
    pub fn add(&mut self, other: &MetricsSample) {
        self.interval_seconds = self.interval_seconds.saturating_add(other.interval_seconds);
        self.requests = self.requests.saturating_add(other.requests);
        self.cache_hits = self.cache_hits.saturating_add(other.cache_hits);
        self.cache_misses = self.cache_misses.saturating_add(other.cache_misses);
        self.errors4xx = self.errors4xx.saturating_add(other.errors4xx);
        self.errors5xx = self.errors5xx.saturating_add(other.errors5xx);
        self.bytes_sent = self.bytes_sent.saturating_add(other.bytes_sent);
        self.bytes_received = self.bytes_received.saturating_add(other.bytes_received);
        self.latency.merge(&other.latency);
    }
}

/// Aggregated performance over a window (SPEC §2.6).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PerformanceSnapshot {
    pub timestamp: Timestamp,
    pub cache_hit_rate: f64,
    pub avg_latency_ms: f64,
    pub p50_latency_ms: f64,
    pub p95_latency_ms: f64,
    pub p99_latency_ms: f64,
    pub error_rate: f64,
    pub requests_per_sec: f64,
    pub bandwidth_mbps: f64,
    pub sample_count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_merged_counts() {
        let mut fast = LatencyHistogram::default();
        for _ in 0..99 {
            fast.record(8.0);
        }
        let mut slow = LatencyHistogram::default();
        slow.record(400.0);
        fast.merge(&slow);
        assert_eq!(fast.total(), 100);
        let p50 = fast.quantile(0.5).unwrap();
        assert!((5.0..=10.0).contains(&p50), "{p50}");
        let p99 = fast.quantile(0.99).unwrap();
        assert!(p99 <= 10.0, "{p99}");
        let max = fast.quantile(1.0).unwrap();
        assert!((250.0..=500.0).contains(&max), "{max}");
        assert_eq!(LatencyHistogram::default().quantile(0.5), None);
    }
}

/// Consecutive breaching intervals per metric of one deployment's analysis, carried from one
/// interval to the next (SPEC §8.3 breach persistence) and kept in the store, so a restart of
/// the control plane does not forget a pending breach.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BreachState {
    pub cache_hit_rate: u32,
    pub error_rate: u32,
    pub p99_latency: u32,
    /// Consecutive inconclusive intervals, for the engine's `maxExtension` decision.
    pub inconclusive: u32,
}
