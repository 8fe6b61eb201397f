//! Layout of the per-edge metric ring buffers (SPEC §8.2): slot arithmetic, the stored sample
//! format, the write rule and the read plan. Pure; `store::series` applies it to redb.
//!
//! Two rings per edge. A ring is a fixed number of blocks keyed `(edge_id, block)`, each block
//! holding the slots of 60 consecutive intervals:
//!
//! | ring | interval | block | blocks | covers |
//! |---|---|---|---|---|
//! | fine (`series_fine`) | 10 s | 10 min | 37 | 6 hours and one spare block |
//! | coarse (`series_minutes`) | 1 min | 1 hour | 721 | 30 days and one spare block |
//!
//! A block is `(t / block span) mod blocks`; its slot is `(t / interval) mod 60`. Each stored
//! block carries its own start, so a block still holding an earlier lap is recognised and
//! replaced as a whole instead of being read as current. The spare block means a lap is only
//! replaced once it is older than the ring's retention: everything in the last 6 hours (30 days)
//! is still there. Every sample is written to both rings in the same transaction: into its
//! 10-second slot, and merged into its minute's slot.
//!
//! Why blocks: one redb entry per slot pays the key, the entry offsets and the B-tree's slack
//! on every 10-second sample and every minute (5.9 MB per edge on disk at full retention, of
//! which the 43,200 minute slots were 95 %). A block pays them once per 60 slots, and its slots
//! are encoded against each other ([`Block::encode`]): each slot is predicted from the previous
//! one scaled to its own request count (traffic keeps its shape from one interval to the next:
//! the same hit rate, bytes per request and latency distribution), so what is stored is the
//! small difference, and the block is then deflated. The encoding is exact: queries answer
//! what they answered from the per-slot layout. A steady edge's differences take about 16
//! bytes a slot and deflate to about 4, so a full edge (2,160 10-second slots and 43,200
//! minutes) takes well under 1 MiB on disk, whatever its age: the size grows only with the
//! number of edges, and with how erratic their traffic is (counters that change at random
//! cost what their randomness needs, up to 8 bytes each). `benches/series.rs` prints the
//! figure: 343,654 bytes per edge on disk with both rings full (446,054 before compaction),
//! 3.2 GiB at 10,000 edges, where one redb entry per slot took 5.9 MB per edge.
//!
//! Time rules, applied by the writer and the reader with the same `now`:
//! - A sample's timestamp is the start of the interval it covers, aligned down to the ring's
//!   interval. Samples more than [`MAX_CLOCK_SKEW_MS`] in the future are refused (one far-future
//!   value would otherwise make its block reject real data for a whole lap), and so are samples
//!   older than a ring's retention (they would replace newer data of the same block).
//! - A write into a block holding the same lap merges into its slot (two heartbeats in one
//!   interval both count); a block holding an older lap is replaced; a block holding a newer
//!   one keeps it and the late sample is dropped for that ring.
//! - Reads: the cutoff `C` is the first minute boundary at or after `now - 6 h + 10 s`, the
//!   oldest point the fine ring is sure to still hold. Of a window `[from, to)`, the part before
//!   `C` is answered by minute roll-ups whose minute starts in the window, the part from `C` on
//!   by 10-second samples. `C` is minute-aligned, so no roll-up overlaps a 10-second interval
//!   that is also returned: nothing is counted twice. A roll-up whose minute starts before
//!   `from` is left out even if the minute overlaps the window, the same "a sample belongs where
//!   it starts" rule `aggregate` uses.
//!
//! Stored blocks open with a format byte ([`BLOCK_FORMAT`]); a block of an unknown format is
//! treated as empty. The earlier per-slot layout (one postcard [`StoredSample`] per slot) is
//! still decoded, to move data written by earlier releases into blocks when the store opens.

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::metrics::LATENCY_BUCKETS_MS;
use crate::model::{LatencyHistogram, MetricsSample, Timestamp};

/// Largest distance into the future a sample's timestamp may have.
pub const MAX_CLOCK_SKEW_MS: i64 = 60_000;

/// Slots (intervals) per stored block.
pub const SLOTS_PER_BLOCK: u32 = 60;

/// First byte of every stored block: the version of its encoding.
pub const BLOCK_FORMAT: u8 = 1;

/// Latency buckets per stored sample: the fixed bounds plus the overflow bucket.
const BUCKETS: usize = LATENCY_BUCKETS_MS.len() + 1;

/// Deflate level of stored blocks: higher levels gain almost nothing on them.
const DEFLATE_LEVEL: u8 = 6;

/// Most bytes an encoded block inflates to: 60 slots of the largest values are under 30 KiB,
/// so anything longer is damage.
const MAX_RAW_BLOCK: usize = 64 * 1024;

#[derive(Debug, Error)]
pub enum RingError {
    #[error("stored sample cannot be encoded: {0}")]
    Encode(String),
    #[error("stored sample cannot be decoded: {0}")]
    Decode(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resolution {
    /// 10-second samples, kept 6 hours.
    Fine,
    /// 1-minute roll-ups, kept 30 days.
    Coarse,
}

impl Resolution {
    pub fn interval_ms(self) -> i64 {
        match self {
            Resolution::Fine => 10_000,
            Resolution::Coarse => 60_000,
        }
    }

    /// Slots the retention needs: 2,160 (6 h) and 43,200 (30 days).
    pub fn slots(self) -> u32 {
        match self {
            Resolution::Fine => 2_160,
            Resolution::Coarse => 43_200,
        }
    }

    /// Blocks of the ring: the retention's, plus one, so the block being replaced is never one
    /// the retention still covers.
    pub fn blocks(self) -> u32 {
        self.slots() / SLOTS_PER_BLOCK + 1
    }

    pub fn block_span_ms(self) -> i64 {
        self.interval_ms() * i64::from(SLOTS_PER_BLOCK)
    }

    /// How far back the ring is sure to reach.
    pub fn retention_ms(self) -> i64 {
        self.interval_ms() * i64::from(self.slots())
    }

    /// Start of the interval holding `t_ms` (floor, also for times before the epoch).
    pub fn interval_start(self, t_ms: i64) -> i64 {
        t_ms.div_euclid(self.interval_ms())
            .saturating_mul(self.interval_ms())
    }

    /// Start of the block (lap) holding `t_ms`.
    pub fn block_start(self, t_ms: i64) -> i64 {
        t_ms.div_euclid(self.block_span_ms())
            .saturating_mul(self.block_span_ms())
    }

    /// The block of the ring holding `t_ms`.
    pub fn block(self, t_ms: i64) -> u32 {
        // rem_euclid of a positive modulus lies in 0..blocks, which fits u32.
        u32::try_from(
            t_ms.div_euclid(self.block_span_ms())
                .rem_euclid(i64::from(self.blocks())),
        )
        .unwrap_or(0)
    }

    /// The slot inside its block of the interval holding `t_ms`.
    pub fn slot_in_block(self, t_ms: i64) -> usize {
        // Below SLOTS_PER_BLOCK by construction.
        usize::try_from(
            t_ms.div_euclid(self.interval_ms())
                .rem_euclid(i64::from(SLOTS_PER_BLOCK)),
        )
        .unwrap_or(0)
    }

    /// Whether a sample starting at `t_ms` may be written at `now`.
    pub fn accepts(self, t_ms: i64, now: Timestamp) -> bool {
        let start = self.interval_start(t_ms);
        start <= now.millis().saturating_add(MAX_CLOCK_SKEW_MS)
            && start > now.millis().saturating_sub(self.retention_ms())
    }

    /// Inclusive block ranges (at most two, when the span wraps) that hold the intervals
    /// starting in `[from_ms, to_ms)`.
    pub fn block_ranges(self, from_ms: i64, to_ms: i64) -> Vec<RangeInclusive<u32>> {
        if to_ms <= from_ms {
            return Vec::new();
        }
        let interval = self.interval_ms();
        let first = from_ms.div_euclid(interval) + i64::from(from_ms.rem_euclid(interval) != 0);
        let last = (to_ms.saturating_sub(1)).div_euclid(interval);
        if last < first {
            return Vec::new();
        }
        let per_block = i64::from(SLOTS_PER_BLOCK);
        let (first, last) = (first.div_euclid(per_block), last.div_euclid(per_block));
        let count = last.saturating_sub(first).saturating_add(1);
        let blocks = self.blocks();
        if count >= i64::from(blocks) {
            return vec![0..=blocks - 1];
        }
        let span = self.block_span_ms();
        let first_block = self.block(first.saturating_mul(span));
        let last_block = self.block(last.saturating_mul(span));
        if first_block <= last_block {
            vec![first_block..=last_block]
        } else {
            vec![first_block..=blocks - 1, 0..=last_block]
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
    /// The per-slot encoding of earlier releases (postcard, no format byte).
    pub fn encode_legacy(&self) -> Result<Vec<u8>, RingError> {
        postcard::to_stdvec(self).map_err(|error| RingError::Encode(error.to_string()))
    }

    /// Reads a slot written by an earlier release.
    pub fn decode_legacy(bytes: &[u8]) -> Result<Self, RingError> {
        postcard::from_bytes(bytes).map_err(|error| RingError::Decode(error.to_string()))
    }

    fn empty(start_ms: i64) -> Self {
        Self {
            start_ms,
            latency_counts: vec![0; BUCKETS],
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

    /// Adds another stored value of the same interval (used when moving earlier data).
    fn merge(&mut self, other: &StoredSample, resolution: Resolution) {
        let (_, sample) = other.to_sample();
        self.add(&sample, resolution);
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

    /// The counters a slot predicts from the previous one, in their stored order.
    fn counters(&self) -> [u64; 6] {
        [
            self.cache_hits,
            self.cache_misses,
            self.errors4xx,
            self.errors5xx,
            self.bytes_sent,
            self.bytes_received,
        ]
    }

    fn set_counters(&mut self, values: [u64; 6]) {
        [
            self.cache_hits,
            self.cache_misses,
            self.errors4xx,
            self.errors5xx,
            self.bytes_sent,
            self.bytes_received,
        ] = values;
    }

    /// The latency counts as exactly `BUCKETS` values (a malformed length reads as empty, as
    /// `to_sample` does).
    fn buckets(&self) -> [u64; BUCKETS] {
        let mut buckets = [0; BUCKETS];
        if self.latency_counts.len() == BUCKETS {
            buckets.copy_from_slice(&self.latency_counts);
        }
        buckets
    }
}

/// The write rule for one slot: what it should hold after `sample` (starting at `t`) arrives,
/// or `None` when it already holds a later interval and the sample is too late for this ring.
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

/// One stored block: the lap it holds and its filled slots.
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    /// Start of the block's first interval.
    pub start_ms: i64,
    /// `SLOTS_PER_BLOCK` slots; each filled one's `start_ms` is its own interval's start.
    pub slots: Vec<Option<StoredSample>>,
}

impl Block {
    fn empty(start_ms: i64) -> Self {
        Self {
            start_ms,
            slots: vec![None; SLOTS_PER_BLOCK as usize],
        }
    }

    /// The filled slots, oldest first.
    pub fn samples(&self) -> impl Iterator<Item = &StoredSample> {
        self.slots.iter().flatten()
    }

    /// Encodes the block: the format byte, the start, the number of filled slots, then each
    /// filled slot as a header (gap since the previous filled slot, and whether its seconds and
    /// its set of non-empty latency buckets changed) followed by its values as zig-zag varint
    /// differences from their prediction: requests from the previous slot's, every other
    /// counter and latency bucket from the previous slot's value scaled by the ratio of
    /// requests. Only non-empty buckets are written.
    ///
    /// The whole is then deflated: the differences of steady traffic repeat from slot to slot.
    pub fn encode(&self) -> Vec<u8> {
        let raw = self.encode_differences();
        let mut out = vec![BLOCK_FORMAT];
        out.extend(miniz_oxide::deflate::compress_to_vec(&raw, DEFLATE_LEVEL));
        out
    }

    fn encode_differences(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_signed(&mut out, i128::from(self.start_ms));
        let filled = self.slots.iter().filter(|slot| slot.is_some()).count();
        put_unsigned(&mut out, filled as u128);
        let mut previous = StoredSample::empty(self.start_ms);
        let mut previous_mask = 0u32;
        let mut previous_index: Option<usize> = None;
        for (index, slot) in self.slots.iter().enumerate() {
            let Some(value) = slot else { continue };
            let gap = previous_index.map_or(index, |p| index - p - 1);
            previous_index = Some(index);
            let buckets = value.buckets();
            let mask = buckets
                .iter()
                .enumerate()
                .filter(|(_, n)| **n != 0)
                .fold(0u32, |mask, (bucket, _)| mask | 1 << bucket);
            let seconds_changed = value.seconds != previous.seconds;
            let mask_changed = mask != previous_mask;
            put_unsigned(
                &mut out,
                (gap as u128) << 2 | u128::from(seconds_changed) << 1 | u128::from(mask_changed),
            );
            if seconds_changed {
                put_unsigned(&mut out, u128::from(value.seconds));
            }
            if mask_changed {
                put_unsigned(&mut out, u128::from(mask));
            }
            put_signed(
                &mut out,
                i128::from(value.requests) - i128::from(previous.requests),
            );
            let scale = Scale::new(previous.requests, value.requests);
            for (actual, before) in value.counters().iter().zip(previous.counters()) {
                put_signed(&mut out, i128::from(*actual) - scale.apply(before));
            }
            let previous_buckets = previous.buckets();
            for bucket in 0..BUCKETS {
                if mask & 1 << bucket != 0 {
                    put_signed(
                        &mut out,
                        i128::from(buckets[bucket]) - scale.apply(previous_buckets[bucket]),
                    );
                }
            }
            previous = value.clone();
            previous.latency_counts = buckets.to_vec();
            previous_mask = mask;
        }
        out
    }

    pub fn decode(resolution: Resolution, bytes: &[u8]) -> Result<Self, RingError> {
        let Some((&format, deflated)) = bytes.split_first() else {
            return Err(RingError::Decode("empty block".into()));
        };
        if format != BLOCK_FORMAT {
            return Err(RingError::Decode(format!(
                "block format {format}, this binary reads {BLOCK_FORMAT}"
            )));
        }
        let raw = miniz_oxide::inflate::decompress_to_vec_with_limit(deflated, MAX_RAW_BLOCK)
            .map_err(|error| RingError::Decode(format!("block does not inflate: {error}")))?;
        let bytes = raw.as_slice();
        let mut input = Reader { bytes, at: 0 };
        let start_ms = i64::try_from(input.signed()?)
            .map_err(|_| RingError::Decode("block start out of range".into()))?;
        let mut block = Block::empty(start_ms);
        let filled = input.unsigned()?;
        let mut previous = StoredSample::empty(start_ms);
        let mut previous_mask = 0u32;
        let mut next_index = 0u128;
        for _ in 0..filled {
            let header = input.unsigned()?;
            let index = next_index + (header >> 2);
            let slot = usize::try_from(index)
                .ok()
                .filter(|i| *i < SLOTS_PER_BLOCK as usize)
                .ok_or_else(|| RingError::Decode("slot beyond the block".into()))?;
            next_index = index + 1;
            let mut value = StoredSample::empty(
                start_ms.saturating_add(resolution.interval_ms() * slot as i64),
            );
            value.seconds = if header & 0b10 != 0 {
                u32::try_from(input.unsigned()?)
                    .map_err(|_| RingError::Decode("seconds out of range".into()))?
            } else {
                previous.seconds
            };
            let mask = if header & 0b01 != 0 {
                u32::try_from(input.unsigned()?)
                    .ok()
                    .filter(|mask| *mask >> BUCKETS == 0)
                    .ok_or_else(|| RingError::Decode("bucket mask out of range".into()))?
            } else {
                previous_mask
            };
            value.requests = counter(i128::from(previous.requests), input.signed()?)?;
            let scale = Scale::new(previous.requests, value.requests);
            let mut counters = [0u64; 6];
            for (slot_value, before) in counters.iter_mut().zip(previous.counters()) {
                *slot_value = counter(scale.apply(before), input.signed()?)?;
            }
            value.set_counters(counters);
            for bucket in 0..BUCKETS {
                if mask & 1 << bucket != 0 {
                    value.latency_counts[bucket] = counter(
                        scale.apply(previous.latency_counts[bucket]),
                        input.signed()?,
                    )?;
                }
            }
            previous = value.clone();
            previous_mask = mask;
            block.slots[slot] = Some(value);
        }
        if input.at != bytes.len() {
            return Err(RingError::Decode("trailing bytes after the block".into()));
        }
        Ok(block)
    }
}

/// The write rule for a block: what it should hold after `sample` (starting at `t`) arrives,
/// or `None` when it holds a later lap and the sample is too late for this ring.
pub fn place_in_block(
    existing: Option<Block>,
    resolution: Resolution,
    t: Timestamp,
    sample: &MetricsSample,
) -> Option<Block> {
    let start = resolution.block_start(t.millis());
    let mut block = match existing {
        Some(current) if current.start_ms == start => current,
        Some(current) if current.start_ms > start => return None,
        _ => Block::empty(start),
    };
    let slot = resolution.slot_in_block(t.millis());
    let value = place(block.slots[slot].take(), resolution, t, sample)?;
    block.slots[slot] = Some(value);
    Some(block)
}

/// Moves a slot of the per-slot layout into its block, keeping the newest lap: the same rule
/// as [`place_in_block`], so the order in which slots are moved does not matter.
pub fn move_into_block(
    existing: Option<Block>,
    resolution: Resolution,
    value: &StoredSample,
) -> Option<Block> {
    let start = resolution.block_start(value.start_ms);
    let mut block = match existing {
        Some(current) if current.start_ms == start => current,
        Some(current) if current.start_ms > start => return None,
        _ => Block::empty(start),
    };
    let interval = resolution.interval_start(value.start_ms);
    let slot = resolution.slot_in_block(value.start_ms);
    match &mut block.slots[slot] {
        Some(current) if current.start_ms == interval => current.merge(value, resolution),
        other => {
            let mut moved = value.clone();
            moved.start_ms = interval;
            moved.latency_counts = value.buckets().to_vec();
            *other = Some(moved);
        }
    }
    Some(block)
}

/// `previous × to / from` for predicting a counter from the previous slot's; exact integers,
/// so the encoder and the decoder agree.
struct Scale {
    from: u64,
    to: u64,
}

impl Scale {
    fn new(from: u64, to: u64) -> Self {
        Self { from, to }
    }

    fn apply(&self, previous: u64) -> i128 {
        if self.from == 0 {
            return i128::from(previous);
        }
        let scaled = u128::from(previous) * u128::from(self.to) / u128::from(self.from);
        i128::try_from(scaled).unwrap_or(i128::MAX)
    }
}

/// A decoded counter: its prediction plus the stored difference.
fn counter(predicted: i128, difference: i128) -> Result<u64, RingError> {
    predicted
        .checked_add(difference)
        .and_then(|value| u64::try_from(value).ok())
        .ok_or_else(|| RingError::Decode("counter out of range".into()))
}

fn put_unsigned(out: &mut Vec<u8>, mut value: u128) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_signed(out: &mut Vec<u8>, value: i128) {
    // Zig-zag: small magnitudes of either sign take few bytes.
    put_unsigned(out, ((value << 1) ^ (value >> 127)) as u128);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, RingError> {
        let byte = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| RingError::Decode("block ends early".into()))?;
        self.at += 1;
        Ok(byte)
    }

    fn unsigned(&mut self) -> Result<u128, RingError> {
        let mut value = 0u128;
        for shift in (0..128).step_by(7) {
            let byte = self.byte()?;
            value |= u128::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(RingError::Decode("varint too long".into()))
    }

    fn signed(&mut self) -> Result<i128, RingError> {
        let raw = self.unsigned()?;
        Ok((raw >> 1) as i128 ^ -((raw & 1) as i128))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;
    const HOUR: i64 = 60 * MINUTE;
    // A minute-aligned instant.
    const NOW: i64 = 1_764_000_000_000 - 1_764_000_000_000 % MINUTE;

    #[test]
    fn block_ranges() {
        struct Case {
            resolution: Resolution,
            from: i64,
            to: i64,
            expected: Vec<RangeInclusive<u32>>,
        }
        // Block 0 of the fine ring: 37 blocks of 10 minutes.
        let base = 37 * 10 * MINUTE * 1000;
        let cases = vec![
            Case {
                resolution: Resolution::Fine,
                from: base,
                to: base + 30_000,
                expected: vec![0..=0],
            },
            Case {
                resolution: Resolution::Fine,
                from: base + 10 * MINUTE - 10_000,
                to: base + 10 * MINUTE + 10_000,
                expected: vec![0..=1],
            },
            // An interval starting exactly at `to` is not in the window.
            Case {
                resolution: Resolution::Fine,
                from: base,
                to: base + 10 * MINUTE,
                expected: vec![0..=0],
            },
            // The first interval starting at or after `from` is in the next block.
            Case {
                resolution: Resolution::Fine,
                from: base - 1,
                to: base + 10_000,
                expected: vec![0..=0],
            },
            Case {
                resolution: Resolution::Fine,
                from: base - 20 * MINUTE,
                to: base + 10_000,
                expected: vec![35..=36, 0..=0],
            },
            Case {
                resolution: Resolution::Fine,
                from: base,
                to: base + 7 * HOUR,
                expected: vec![0..=36],
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
                expected: vec![0..=720],
            },
        ];
        for case in cases {
            assert_eq!(
                case.resolution.block_ranges(case.from, case.to),
                case.expected,
                "{}..{}",
                case.from,
                case.to
            );
        }
    }

    #[test]
    fn a_lap_is_replaced_only_once_older_than_the_retention() {
        for resolution in [Resolution::Fine, Resolution::Coarse] {
            let t = NOW + 7 * resolution.interval_ms();
            let lap = resolution.blocks() as i64 * resolution.block_span_ms();
            // The same block a lap later, and not before.
            assert_eq!(resolution.block(t), resolution.block(t + lap));
            assert!(lap > resolution.retention_ms(), "{resolution:?}");
            // The next interval to write into the block of `t` starts a lap after the block
            // of `t` starts, by when every interval of that block is out of retention.
            let next_lap_start = resolution.block_start(t) + lap;
            let last_in_block =
                resolution.block_start(t) + resolution.block_span_ms() - resolution.interval_ms();
            assert!(next_lap_start - last_in_block >= resolution.retention_ms());
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

    fn busy_sample(requests: u64) -> MetricsSample {
        let mut latency = LatencyHistogram::default();
        for (bucket, share) in [(1, 5), (2, 20), (3, 30), (4, 20), (5, 12), (6, 8), (8, 3)] {
            latency.counts[bucket] = requests * share / 100;
        }
        MetricsSample {
            interval_seconds: 10,
            requests,
            cache_hits: requests * 92 / 100,
            cache_misses: requests - requests * 92 / 100,
            errors4xx: requests / 500,
            errors5xx: requests / 1_000,
            bytes_sent: requests * 24_123,
            bytes_received: requests * 611,
            latency,
        }
    }

    fn round_trip(resolution: Resolution, block: &Block) -> usize {
        let bytes = block.encode();
        assert_eq!(bytes[0], BLOCK_FORMAT);
        assert_eq!(&Block::decode(resolution, &bytes).expect("decodes"), block);
        bytes.len()
    }

    #[test]
    fn blocks_round_trip_exactly_and_steady_traffic_is_small() {
        // A full block of a busy edge whose traffic wanders: a few bytes a slot.
        let mut block = None;
        for i in 0..60 {
            let t = Timestamp(NOW + i * 10_000);
            let sample = busy_sample(2_000 + (i as u64 * 137) % 900);
            block = place_in_block(block, Resolution::Fine, t, &sample);
        }
        let block = block.expect("placed");
        assert_eq!(block.samples().count(), 60);
        let len = round_trip(Resolution::Fine, &block);
        assert!(len <= 60 * 8, "{len}");

        // Gaps, a slot that merged two reports, changing bucket sets and seconds.
        let mut sparse = None;
        for (slot, requests, latency_ms) in [(3, 0, 1.0), (4, 10, 0.5), (9, 7, 900.0), (59, 1, 3.0)]
        {
            let mut sample = busy_sample(requests);
            sample.interval_seconds = 6;
            sample.latency.record(latency_ms);
            let t = Timestamp(NOW + slot * MINUTE);
            sparse = place_in_block(sparse, Resolution::Coarse, t, &sample);
            if slot == 9 {
                sparse = place_in_block(sparse, Resolution::Coarse, t, &busy_sample(5));
            }
        }
        let sparse = sparse.expect("placed");
        assert_eq!(sparse.samples().count(), 4);
        round_trip(Resolution::Coarse, &sparse);

        // The largest values there are, and a jump from them to nothing and back.
        let mut extreme = Block::empty(i64::MIN);
        let max = StoredSample {
            start_ms: i64::MIN,
            seconds: u32::MAX,
            requests: u64::MAX,
            cache_hits: u64::MAX,
            cache_misses: 0,
            errors4xx: u64::MAX,
            errors5xx: 1,
            bytes_sent: u64::MAX,
            bytes_received: u64::MAX,
            latency_counts: vec![u64::MAX; BUCKETS],
        };
        extreme.slots[0] = Some(max.clone());
        extreme.slots[1] = Some(StoredSample::empty(i64::MIN + 60_000));
        extreme.slots[2] = Some(StoredSample {
            start_ms: i64::MIN + 120_000,
            ..max
        });
        round_trip(Resolution::Coarse, &extreme);
    }

    #[test]
    fn damaged_or_unknown_blocks_are_refused_not_misread() {
        let block = place_in_block(None, Resolution::Fine, Timestamp(NOW), &busy_sample(2_000))
            .expect("placed");
        let bytes = block.encode();
        let mut future = bytes.clone();
        future[0] = BLOCK_FORMAT + 1;
        assert!(Block::decode(Resolution::Fine, &future).is_err());
        for cut in 0..bytes.len() {
            assert!(
                Block::decode(Resolution::Fine, &bytes[..cut]).is_err(),
                "{cut}"
            );
        }
        let deflated = |raw: &[u8]| {
            let mut bytes = vec![BLOCK_FORMAT];
            bytes.extend(miniz_oxide::deflate::compress_to_vec(raw, DEFLATE_LEVEL));
            bytes
        };
        let mut trailing = block.encode_differences();
        assert!(Block::decode(Resolution::Fine, &deflated(&trailing)).is_ok());
        trailing.push(0);
        assert!(Block::decode(Resolution::Fine, &deflated(&trailing)).is_err());
        // A slot index past the block, a counter below zero, a block that inflates too far.
        assert!(Block::decode(Resolution::Fine, &deflated(&[0, 1, 60 << 2])).is_err());
        assert!(Block::decode(Resolution::Fine, &deflated(&[0, 1, 0, 1])).is_err());
        assert!(Block::decode(Resolution::Fine, &deflated(&[0; MAX_RAW_BLOCK + 1])).is_err());
        assert!(Block::decode(Resolution::Fine, &[]).is_err());
        assert!(Block::decode(Resolution::Fine, &[0xff; 40]).is_err());
    }

    #[test]
    fn place_in_block_keeps_the_newest_lap() {
        let resolution = Resolution::Fine;
        let sample = busy_sample(100);
        let t = Timestamp(NOW + 20_000);
        let block = place_in_block(None, resolution, t, &sample).expect("fresh");
        let lap = resolution.blocks() as i64 * resolution.block_span_ms();
        // A sample a lap later replaces the whole block.
        let later = place_in_block(Some(block.clone()), resolution, t.plus_millis(lap), &sample)
            .expect("newer lap");
        assert_eq!(later.start_ms, block.start_ms + lap);
        assert_eq!(later.samples().count(), 1);
        // A sample of the earlier lap arriving after it is dropped.
        assert_eq!(place_in_block(Some(later), resolution, t, &sample), None);
        // Moving an earlier layout's slot follows the same rule.
        let legacy = StoredSample {
            start_ms: NOW + 30_000,
            requests: 3,
            seconds: 10,
            latency_counts: vec![0; BUCKETS],
            ..StoredSample::default()
        };
        let moved = move_into_block(Some(block), resolution, &legacy).expect("same lap");
        assert_eq!(
            moved.samples().map(|s| s.requests).collect::<Vec<_>>(),
            [100, 3]
        );
        let bytes = legacy.encode_legacy().expect("encodes");
        assert_eq!(
            StoredSample::decode_legacy(&bytes).expect("decodes"),
            legacy
        );
    }
}
