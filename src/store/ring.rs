//! Layout of the per-edge metric ring buffers (SPEC §8.2): slot arithmetic, the stored sample
//! format, the write rule and the read plan. Pure; `store::series` applies it to redb.
//!
//! Two rings per edge, each a fixed number of slots keyed `(edge_id, slot)`:
//!
//! | ring | interval | slots | covers |
//! |---|---|---|---|
//! | fine (`series_10s`) | 10 s | 2,160 | 6 hours |
//! | coarse (`series_1m`) | 1 min | 43,200 | 30 days |
//!
//! A slot is `(t / interval) mod slots`. Each stored value carries its interval's start, so a
//! slot still holding a value from an earlier lap is recognised and ignored instead of being
//! read as current. Every sample is written to both rings in the same transaction: into the fine
//! slot, and merged (read-modify-write) into the current minute's coarse slot, which is reset
//! first when it still holds an older minute.
//!
//! Stored values are postcard with varint integers, so a slot costs what its numbers need:
//! a typical 10-second sample (a few thousand requests, megabytes of traffic, a dozen non-empty
//! latency buckets) encodes to about 50–60 bytes, a minute roll-up a few bytes more, and the
//! largest possible value to 246 bytes. The key adds the edge id plus 4 bytes. Storage per edge
//! is fixed at `2,160 + 43,200 = 45,360` slots: about 75 bytes × 45,360 ≈ 3.4 MB of keys and
//! values for typical traffic and a ~10-byte edge id (≤ 12 MB in the worst case), and, with
//! redb's B-tree pages, about 5.9 MB on disk per edge once both rings are full (7.1 MB before
//! compaction; measured by `benches/series.rs`). The coarse ring is 95 % of it. The figure never
//! grows with time, only with the number of edges.
//!
//! Time rules, applied by the writer and the reader with the same `now`:
//! - A sample's timestamp is the start of the interval it covers, aligned down to the ring's
//!   interval. Samples more than [`MAX_CLOCK_SKEW_MS`] in the future are refused (one far-future
//!   value would otherwise make its slot reject real data for a whole lap), and so are samples
//!   older than a ring's retention (they would overwrite newer data of the same slot).
//! - A write into a slot holding the same interval merges (two heartbeats in one interval both
//!   count); a slot holding an older interval is overwritten; a slot holding a newer one keeps
//!   it and the late sample is dropped for that ring.
//! - Reads: the cutoff `C` is the first minute boundary at or after `now - 6 h + 10 s`, the
//!   oldest point the fine ring is sure to still hold. Of a window `[from, to)`, the part before
//!   `C` is answered by minute roll-ups whose minute starts in the window, the part from `C` on
//!   by 10-second samples. `C` is minute-aligned, so no roll-up overlaps a 10-second interval
//!   that is also returned: nothing is counted twice. A roll-up whose minute starts before
//!   `from` is left out even if the minute overlaps the window, the same "a sample belongs where
//!   it starts" rule `aggregate` uses.

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::metrics::LATENCY_BUCKETS_MS;
use crate::model::{LatencyHistogram, MetricsSample, Timestamp};

/// Largest distance into the future a sample's timestamp may have.
pub const MAX_CLOCK_SKEW_MS: i64 = 60_000;

#[derive(Debug, Error)]
pub enum RingError {
    #[error("stored sample cannot be encoded: {0}")]
    Encode(String),
    #[error("stored sample cannot be decoded: {0}")]
    Decode(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// 10-second samples, 2,160 slots: 6 hours.
    Fine,
    /// 1-minute roll-ups, 43,200 slots: 30 days.
    Coarse,
}

impl Resolution {
    pub fn interval_ms(self) -> i64 {
        match self {
            Resolution::Fine => 10_000,
            Resolution::Coarse => 60_000,
        }
    }

    pub fn slots(self) -> u32 {
        match self {
            Resolution::Fine => 2_160,
            Resolution::Coarse => 43_200,
        }
    }

    /// How far back the ring reaches.
    pub fn retention_ms(self) -> i64 {
        self.interval_ms() * i64::from(self.slots())
    }

    /// Start of the interval holding `t_ms` (floor, also for times before the epoch).
    pub fn interval_start(self, t_ms: i64) -> i64 {
        t_ms.div_euclid(self.interval_ms())
            .saturating_mul(self.interval_ms())
    }

    pub fn slot(self, t_ms: i64) -> u32 {
        // rem_euclid of a positive modulus lies in 0..slots, which fits u32.
        u32::try_from(
            t_ms.div_euclid(self.interval_ms())
                .rem_euclid(i64::from(self.slots())),
        )
        .unwrap_or(0)
    }

    /// Whether a sample starting at `t_ms` may be written at `now`.
    pub fn accepts(self, t_ms: i64, now: Timestamp) -> bool {
        let start = self.interval_start(t_ms);
        start <= now.millis().saturating_add(MAX_CLOCK_SKEW_MS)
            && start > now.millis().saturating_sub(self.retention_ms())
    }

    /// Inclusive slot ranges (at most two, when the span wraps) that hold the intervals
    /// starting in `[from_ms, to_ms)`.
    pub fn slot_ranges(self, from_ms: i64, to_ms: i64) -> Vec<RangeInclusive<u32>> {
        if to_ms <= from_ms {
            return Vec::new();
        }
        let interval = self.interval_ms();
        let first = from_ms.div_euclid(interval) + i64::from(from_ms.rem_euclid(interval) != 0);
        let last = (to_ms.saturating_sub(1)).div_euclid(interval);
        if last < first {
            return Vec::new();
        }
        let count = last.saturating_sub(first).saturating_add(1);
        let slots = self.slots();
        if count >= i64::from(slots) {
            return vec![0..=slots - 1];
        }
        let first_slot = self.slot(first.saturating_mul(interval));
        let last_slot = self.slot(last.saturating_mul(interval));
        if first_slot <= last_slot {
            vec![first_slot..=last_slot]
        } else {
            vec![first_slot..=slots - 1, 0..=last_slot]
        }
    }
}

/// Where a window's data comes from: minute roll-ups before the cutoff, 10-second samples
/// from it on (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadPlan {
    /// `[from, to)` in ms answered by the coarse ring, if any.
    pub coarse: Option<(i64, i64)>,
    /// `[from, to)` in ms answered by the fine ring, if any.
    pub fine: Option<(i64, i64)>,
}

pub fn read_plan(from: Timestamp, to: Timestamp, now: Timestamp) -> ReadPlan {
    let fine = Resolution::Fine;
    let oldest_sure = now
        .millis()
        .saturating_sub(fine.retention_ms())
        .saturating_add(fine.interval_ms());
    let minute = Resolution::Coarse.interval_ms();
    let cutoff = Resolution::Coarse.interval_start(oldest_sure.saturating_add(minute - 1));
    let (from, to) = (from.millis(), to.millis());
    let part = |a: i64, b: i64| (a < b).then_some((a, b));
    ReadPlan {
        coarse: part(from, to.min(cutoff)),
        fine: part(from.max(cutoff), to),
    }
}

/// One slot's value: a sample (or a roll-up of several) with its interval start.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct StoredSample {
    pub start_ms: i64,
    /// Seconds of the interval covered by reports, at most the ring's interval.
    pub seconds: u32,
    pub requests: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub errors4xx: u64,
    pub errors5xx: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Counts per fixed latency bucket (the bounds are fixed, so they are not stored).
    pub latency_counts: Vec<u64>,
}

impl StoredSample {
    pub fn encode(&self) -> Result<Vec<u8>, RingError> {
        postcard::to_stdvec(self).map_err(|error| RingError::Encode(error.to_string()))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RingError> {
        postcard::from_bytes(bytes).map_err(|error| RingError::Decode(error.to_string()))
    }

    fn empty(start_ms: i64) -> Self {
        Self {
            start_ms,
            latency_counts: vec![0; LATENCY_BUCKETS_MS.len() + 1],
            ..Self::default()
        }
    }

    fn add(&mut self, sample: &MetricsSample, resolution: Resolution) {
        let cap = u32::try_from(resolution.interval_ms() / 1000).unwrap_or(u32::MAX);
        let seconds = if sample.interval_seconds == 0 {
            crate::monitor::aggregate::DEFAULT_INTERVAL_SECONDS
        } else {
            sample.interval_seconds
        };
        self.seconds = self.seconds.saturating_add(seconds).min(cap);
        self.requests = self.requests.saturating_add(sample.requests);
        self.cache_hits = self.cache_hits.saturating_add(sample.cache_hits);
        self.cache_misses = self.cache_misses.saturating_add(sample.cache_misses);
        self.errors4xx = self.errors4xx.saturating_add(sample.errors4xx);
        self.errors5xx = self.errors5xx.saturating_add(sample.errors5xx);
        self.bytes_sent = self.bytes_sent.saturating_add(sample.bytes_sent);
        self.bytes_received = self.bytes_received.saturating_add(sample.bytes_received);
        let mut latency = LatencyHistogram {
            bounds_ms: Vec::new(),
            counts: std::mem::take(&mut self.latency_counts),
        };
        crate::monitor::aggregate::merge_histogram(&mut latency, &sample.latency);
        self.latency_counts = latency.counts;
    }

    /// The sample form, timestamped with the interval start.
    pub fn to_sample(&self) -> (Timestamp, MetricsSample) {
        let mut latency = LatencyHistogram::default();
        if self.latency_counts.len() == latency.counts.len() {
            latency.counts.clone_from(&self.latency_counts);
        }
        (
            Timestamp(self.start_ms),
            MetricsSample {
                interval_seconds: self.seconds,
                requests: self.requests,
                cache_hits: self.cache_hits,
                cache_misses: self.cache_misses,
                errors4xx: self.errors4xx,
                errors5xx: self.errors5xx,
                bytes_sent: self.bytes_sent,
                bytes_received: self.bytes_received,
                latency,
            },
        )
    }
}

/// The write rule: what a slot should hold after `sample` (starting at `t`) arrives, or `None`
/// when the slot already holds a later interval and the sample is too late for this ring.
pub fn place(
    existing: Option<StoredSample>,
    resolution: Resolution,
    t: Timestamp,
    sample: &MetricsSample,
) -> Option<StoredSample> {
    let start = resolution.interval_start(t.millis());
    let mut value = match existing {
        Some(current) if current.start_ms == start => current,
        Some(current) if current.start_ms > start => return None,
        _ => StoredSample::empty(start),
    };
    value.add(sample, resolution);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;
    const HOUR: i64 = 60 * MINUTE;
    // A minute-aligned instant.
    const NOW: i64 = 1_764_000_000_000 - 1_764_000_000_000 % MINUTE;

    #[test]
    fn slot_ranges() {
        struct Case {
            resolution: Resolution,
            from: i64,
            to: i64,
            expected: Vec<RangeInclusive<u32>>,
        }
        let base = 2_160 * 10_000 * 1000; // slot 0 of the fine ring
        let cases = vec![
            Case {
                resolution: Resolution::Fine,
                from: base,
                to: base + 30_000,
                expected: vec![0..=2],
            },
            Case {
                resolution: Resolution::Fine,
                from: base + 1,
                to: base + 30_000,
                expected: vec![1..=2],
            },
            Case {
                resolution: Resolution::Fine,
                from: base - 20_000,
                to: base + 10_000,
                expected: vec![2158..=2159, 0..=0],
            },
            Case {
                resolution: Resolution::Fine,
                from: base,
                to: base + 7 * HOUR,
                expected: vec![0..=2159],
            },
            Case {
                resolution: Resolution::Fine,
                from: base,
                to: base,
                expected: vec![],
            },
            Case {
                resolution: Resolution::Coarse,
                from: i64::MIN,
                to: i64::MAX,
                expected: vec![0..=43_199],
            },
        ];
        for case in cases {
            assert_eq!(
                case.resolution.slot_ranges(case.from, case.to),
                case.expected,
                "{}..{}",
                case.from,
                case.to
            );
        }
    }

    #[test]
    fn read_plan_splits_at_a_minute_cutoff() {
        struct Case {
            from: i64,
            to: i64,
            coarse: Option<(i64, i64)>,
            fine: Option<(i64, i64)>,
        }
        let now = Timestamp(NOW);
        // now - 6 h + 10 s rounded up to the minute: now - 6 h + 1 min.
        let cutoff = NOW - 6 * HOUR + MINUTE;
        let cases = vec![
            Case {
                from: NOW - HOUR,
                to: NOW,
                coarse: None,
                fine: Some((NOW - HOUR, NOW)),
            },
            Case {
                from: NOW - 7 * HOUR,
                to: NOW - 6 * HOUR - 5 * MINUTE,
                coarse: Some((NOW - 7 * HOUR, NOW - 6 * HOUR - 5 * MINUTE)),
                fine: None,
            },
            Case {
                from: NOW - 7 * HOUR,
                to: NOW,
                coarse: Some((NOW - 7 * HOUR, cutoff)),
                fine: Some((cutoff, NOW)),
            },
            Case {
                from: NOW,
                to: NOW - HOUR,
                coarse: None,
                fine: None,
            },
        ];
        for case in cases {
            let plan = read_plan(Timestamp(case.from), Timestamp(case.to), now);
            assert_eq!(
                (plan.coarse, plan.fine),
                (case.coarse, case.fine),
                "{}..{}",
                case.from,
                case.to
            );
        }
    }

    #[test]
    fn place_merges_same_interval_replaces_older_and_drops_late() {
        let sample = MetricsSample {
            interval_seconds: 10,
            requests: 5,
            ..MetricsSample::default()
        };
        let t = Timestamp(NOW + 12_345);
        let fresh = place(None, Resolution::Fine, t, &sample).expect("fresh slot");
        assert_eq!(
            (fresh.start_ms, fresh.requests, fresh.seconds),
            (NOW + 10_000, 5, 10)
        );
        let merged =
            place(Some(fresh.clone()), Resolution::Fine, t, &sample).expect("same interval");
        assert_eq!((merged.requests, merged.seconds), (10, 10));
        let older = StoredSample {
            start_ms: NOW - 6 * HOUR,
            requests: 99,
            ..StoredSample::default()
        };
        let replaced = place(Some(older), Resolution::Fine, t, &sample).expect("older lap");
        assert_eq!(replaced.requests, 5);
        let late = Timestamp(NOW - 6 * HOUR + 10_000);
        assert_eq!(place(Some(fresh), Resolution::Fine, late, &sample), None);
    }

    #[test]
    fn accepts_only_within_retention_and_skew() {
        let now = Timestamp(NOW);
        for (resolution, t, expected) in [
            (Resolution::Fine, NOW, true),
            (Resolution::Fine, NOW + MAX_CLOCK_SKEW_MS, true),
            (Resolution::Fine, NOW + MAX_CLOCK_SKEW_MS + 10_000, false),
            (Resolution::Fine, NOW - 6 * HOUR, false),
            (Resolution::Coarse, NOW - 6 * HOUR, true),
            (Resolution::Coarse, NOW - 30 * 24 * HOUR, false),
            (Resolution::Coarse, i64::MIN, false),
            (Resolution::Coarse, i64::MAX, false),
        ] {
            assert_eq!(resolution.accepts(t, now), expected, "{resolution:?} {t}");
        }
    }

    #[test]
    fn stored_sample_is_small() {
        let mut latency = LatencyHistogram::default();
        for ms in [
            0.8, 3.0, 7.0, 12.0, 18.0, 25.0, 35.0, 45.0, 60.0, 90.0, 120.0, 200.0,
        ] {
            for _ in 0..200 {
                latency.record(ms);
            }
        }
        let sample = MetricsSample {
            interval_seconds: 10,
            requests: 2_400,
            cache_hits: 2_200,
            cache_misses: 200,
            errors4xx: 4,
            errors5xx: 1,
            bytes_sent: 48_000_000,
            bytes_received: 1_200_000,
            latency,
        };
        let typical = place(None, Resolution::Fine, Timestamp(NOW), &sample).expect("fresh");
        let typical_len = typical.encode().expect("encodes").len();
        assert!(typical_len <= 60, "{typical_len}");
        let worst = StoredSample {
            start_ms: i64::MIN,
            seconds: u32::MAX,
            requests: u64::MAX,
            cache_hits: u64::MAX,
            cache_misses: u64::MAX,
            errors4xx: u64::MAX,
            errors5xx: u64::MAX,
            bytes_sent: u64::MAX,
            bytes_received: u64::MAX,
            latency_counts: vec![u64::MAX; LATENCY_BUCKETS_MS.len() + 1],
        };
        let bytes = worst.encode().expect("encodes");
        assert_eq!(bytes.len(), 246);
        assert_eq!(StoredSample::decode(&bytes).expect("decodes"), worst);
        assert!(StoredSample::decode(&[0xff, 0xff]).is_err());
    }
}
