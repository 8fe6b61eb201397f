//! Per-edge metric ring buffers in redb (SPEC §8.2): tables `series_fine` and
//! `series_minutes`, keyed `(edge_id, block)`, values encoded `ring::Block`s.
//!
//! The layout, the write rule, the read rule across the 6-hour boundary and the storage per
//! edge are documented in `store::ring`; this file only applies them to redb. The functions
//! take a `Database` or a transaction rather than a store handle so the caller decides
//! batching and durability: heartbeats of many edges go into one write transaction.
//!
//! Callers pass `now` explicitly; it must be the same clock for writes and reads. Like every redb
//! call these block: run them off the async threads.

use std::collections::HashMap;

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition,
    TableHandle, WriteTransaction,
};
use thiserror::Error;

use super::ring::{self, Block, Resolution, RingError, StoredSample};
use crate::model::{MetricsSample, Timestamp};

pub(crate) const SERIES_FINE: TableDefinition<(&str, u32), &[u8]> =
    TableDefinition::new("series_fine");
pub(crate) const SERIES_MINUTES: TableDefinition<(&str, u32), &[u8]> =
    TableDefinition::new("series_minutes");

/// The per-slot tables of earlier releases, moved into blocks by [`migrate_legacy`].
const LEGACY_10S: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("series_10s");
const LEGACY_1M: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("series_1m");

#[derive(Debug, Error)]
pub enum SeriesError {
    #[error("storage error: {0}")]
    Storage(#[from] redb::Error),
    #[error(transparent)]
    Encoding(#[from] RingError),
}

/// What a batch write did, per sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WriteOutcome {
    /// Samples written to at least one ring.
    pub stored: usize,
    /// Samples refused: too far in the future, or too old for both rings.
    pub rejected: usize,
}

fn table_for(
    resolution: Resolution,
) -> TableDefinition<'static, (&'static str, u32), &'static [u8]> {
    match resolution {
        Resolution::Fine => SERIES_FINE,
        Resolution::Coarse => SERIES_MINUTES,
    }
}

type SeriesTable<'txn> = Table<'txn, (&'static str, u32), &'static [u8]>;

fn load_block(
    table: &SeriesTable<'_>,
    resolution: Resolution,
    edge_id: &str,
    block: u32,
) -> Result<Option<Block>, SeriesError> {
    Ok(
        match table.get((edge_id, block)).map_err(redb::Error::from)? {
            // An undecodable block is treated as empty so the ring heals on the next lap.
            Some(bytes) => Block::decode(resolution, bytes.value()).ok(),
            None => None,
        },
    )
}

/// Writes a batch of `(edge_id, interval start, sample)` into both rings of each edge, inside
/// the caller's transaction (commit is the caller's). A block touched by several samples of
/// the batch is read and written once.
pub fn write_samples(
    txn: &WriteTransaction,
    samples: &[(String, Timestamp, MetricsSample)],
    now: Timestamp,
) -> Result<WriteOutcome, SeriesError> {
    let mut outcome = WriteOutcome::default();
    let mut fine = txn.open_table(SERIES_FINE).map_err(redb::Error::from)?;
    let mut coarse = txn.open_table(SERIES_MINUTES).map_err(redb::Error::from)?;
    let mut touched: HashMap<(Resolution, &str, u32), Option<Block>> = HashMap::new();
    for (edge_id, t, sample) in samples {
        let mut stored_anywhere = false;
        for (resolution, table) in [(Resolution::Fine, &fine), (Resolution::Coarse, &coarse)] {
            if !resolution.accepts(t.millis(), now) {
                continue;
            }
            let key = (resolution, edge_id.as_str(), resolution.block(t.millis()));
            let existing = match touched.remove(&key) {
                Some(block) => block,
                None => load_block(table, resolution, edge_id, key.2)?,
            };
            let placed = ring::place_in_block(existing.clone(), resolution, *t, sample);
            stored_anywhere |= placed.is_some();
            touched.insert(key, placed.or(existing));
        }
        if stored_anywhere {
            outcome.stored += 1;
        } else {
            outcome.rejected += 1;
        }
    }
    for ((resolution, edge_id, block), value) in touched {
        let Some(value) = value else { continue };
        let table = match resolution {
            Resolution::Fine => &mut fine,
            Resolution::Coarse => &mut coarse,
        };
        table
            .insert((edge_id, block), value.encode().as_slice())
            .map_err(redb::Error::from)?;
    }
    Ok(outcome)
}

/// The samples of one edge with interval starts in `[from, to)`, oldest first: minute roll-ups
/// before the 6-hour cutoff and 10-second samples after it (see `store::ring`).
pub fn read_range(
    db: &Database,
    edge_id: &str,
    from: Timestamp,
    to: Timestamp,
    now: Timestamp,
) -> Result<Vec<(Timestamp, MetricsSample)>, SeriesError> {
    let txn = db.begin_read().map_err(redb::Error::from)?;
    read_range_in(&txn, edge_id, from, to, now)
}

/// As [`read_range`], inside a read transaction the caller holds (to read many edges from one
/// consistent view).
pub fn read_range_in(
    txn: &ReadTransaction,
    edge_id: &str,
    from: Timestamp,
    to: Timestamp,
    now: Timestamp,
) -> Result<Vec<(Timestamp, MetricsSample)>, SeriesError> {
    let plan = ring::read_plan(from, to, now);
    let mut samples = Vec::new();
    for (resolution, part) in [
        (Resolution::Coarse, plan.coarse),
        (Resolution::Fine, plan.fine),
    ] {
        let Some((part_from, part_to)) = part else {
            continue;
        };
        let table = match txn.open_table(table_for(resolution)) {
            Ok(table) => table,
            // Nothing was ever written.
            Err(redb::TableError::TableDoesNotExist(_)) => continue,
            Err(error) => return Err(redb::Error::from(error).into()),
        };
        let first = samples.len();
        for blocks in resolution.block_ranges(part_from, part_to) {
            let range = table
                .range((edge_id, *blocks.start())..=(edge_id, *blocks.end()))
                .map_err(redb::Error::from)?;
            for entry in range {
                let (_, bytes) = entry.map_err(redb::Error::from)?;
                let Ok(block) = Block::decode(resolution, bytes.value()) else {
                    continue;
                };
                // Blocks also hold earlier laps; only the window's own intervals count.
                samples.extend(
                    block
                        .samples()
                        .filter(|value| value.start_ms >= part_from && value.start_ms < part_to)
                        .map(StoredSample::to_sample),
                );
            }
        }
        samples[first..].sort_by_key(|(t, _)| *t);
    }
    Ok(samples)
}

/// Removes both rings of an edge.
pub fn delete_edge(txn: &WriteTransaction, edge_id: &str) -> Result<(), SeriesError> {
    for resolution in [Resolution::Fine, Resolution::Coarse] {
        let mut table = txn
            .open_table(table_for(resolution))
            .map_err(redb::Error::from)?;
        table
            .retain_in((edge_id, 0)..=(edge_id, u32::MAX), |_, _| false)
            .map_err(redb::Error::from)?;
    }
    Ok(())
}

/// Moves the per-slot rings of earlier releases into blocks and drops their tables; nothing
/// to do once they are gone. Runs inside the caller's transaction (the store's open), one edge
/// at a time so memory stays bounded by one edge's rings. Returns the slots moved.
pub fn migrate_legacy(txn: &WriteTransaction) -> Result<usize, SeriesError> {
    let mut moved = 0;
    for (resolution, legacy) in [
        (Resolution::Fine, LEGACY_10S),
        (Resolution::Coarse, LEGACY_1M),
    ] {
        let exists = txn
            .list_tables()
            .map_err(redb::Error::from)?
            .any(|handle| handle.name() == legacy.name());
        if !exists {
            continue;
        }
        {
            let old = txn.open_table(legacy).map_err(redb::Error::from)?;
            let mut new = txn
                .open_table(table_for(resolution))
                .map_err(redb::Error::from)?;
            let mut edge: Option<String> = None;
            let mut blocks: HashMap<u32, Block> = HashMap::new();
            for entry in old.iter().map_err(redb::Error::from)? {
                let (key, bytes) = entry.map_err(redb::Error::from)?;
                let (edge_id, _) = key.value();
                if edge.as_deref() != Some(edge_id) {
                    if let Some(done) = edge.take() {
                        store_blocks(&mut new, &done, std::mem::take(&mut blocks))?;
                    }
                    edge = Some(edge_id.to_string());
                }
                // A slot that no longer decodes is left behind, as a read would skip it.
                let Ok(value) = StoredSample::decode_legacy(bytes.value()) else {
                    continue;
                };
                let index = resolution.block(value.start_ms);
                let existing = match blocks.remove(&index) {
                    Some(block) => Some(block),
                    None => load_block(&new, resolution, edge_id, index)?,
                };
                match ring::move_into_block(existing.clone(), resolution, &value) {
                    Some(block) => {
                        blocks.insert(index, block);
                        moved += 1;
                    }
                    None => {
                        if let Some(block) = existing {
                            blocks.insert(index, block);
                        }
                    }
                }
            }
            if let Some(done) = edge {
                store_blocks(&mut new, &done, blocks)?;
            }
        }
        txn.delete_table(legacy).map_err(redb::Error::from)?;
    }
    Ok(moved)
}

fn store_blocks(
    table: &mut SeriesTable<'_>,
    edge_id: &str,
    blocks: HashMap<u32, Block>,
) -> Result<(), SeriesError> {
    for (index, block) in blocks {
        table
            .insert((edge_id, index), block.encode().as_slice())
            .map_err(redb::Error::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LatencyHistogram;
    use crate::monitor::aggregate::WindowTotals;

    const MINUTE: i64 = 60_000;
    const HOUR: i64 = 60 * MINUTE;
    const NOW: i64 = 1_764_000_000_000 - 1_764_000_000_000 % HOUR;

    fn sample(requests: u64, latency_ms: f64) -> MetricsSample {
        let mut latency = LatencyHistogram::default();
        for _ in 0..requests.min(50) {
            latency.record(latency_ms);
        }
        MetricsSample {
            interval_seconds: 10,
            requests,
            cache_hits: requests * 9 / 10,
            cache_misses: requests - requests * 9 / 10,
            errors4xx: 1,
            errors5xx: 0,
            bytes_sent: requests * 1_000,
            bytes_received: requests * 100,
            latency,
        }
    }

    fn open(dir: &tempfile::TempDir) -> Database {
        Database::create(dir.path().join("series.redb")).expect("database opens")
    }

    /// Writes one sample per 10 s for `edge` from `start` for `count` intervals, in batches,
    /// each written at its own time as `now`.
    fn write_every_10s(db: &Database, edge: &str, start: i64, count: i64, requests: u64) {
        for chunk_start in (0..count).step_by(360) {
            let txn = db.begin_write().expect("write txn");
            for i in chunk_start..(chunk_start + 360).min(count) {
                let t = Timestamp(start + i * 10_000);
                let batch = [(edge.to_string(), t, sample(requests, 8.0))];
                write_samples(&txn, &batch, t).expect("write");
            }
            txn.commit().expect("commit");
        }
    }

    fn requests_in(db: &Database, edge: &str, from: i64, to: i64, now: i64) -> (usize, u64) {
        let samples =
            read_range(db, edge, Timestamp(from), Timestamp(to), Timestamp(now)).expect("read");
        let total = WindowTotals::from_samples(&samples, Timestamp(from), Timestamp(to));
        (samples.len(), total.requests)
    }

    #[test]
    fn fine_ring_wraps_and_old_laps_are_not_returned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(&dir);
        // 8 hours of 10 s samples: more than one lap of 2,160 slots.
        let start = NOW - 8 * HOUR;
        write_every_10s(&db, "edge-a", start, 8 * 360, 10);
        // The last hour comes from the fine ring: 360 samples, each its own.
        assert_eq!(
            requests_in(&db, "edge-a", NOW - HOUR, NOW, NOW),
            (360, 3_600)
        );
        // A query 7 to 8 h back reads minute roll-ups, not the slots that the newer lap reused.
        assert_eq!(
            requests_in(&db, "edge-a", start, start + HOUR, NOW),
            (60, 3_600)
        );
        // An hour later with no new writes, the slots of that hour still hold the lap from 6 h
        // before; none of it may be read as current.
        assert_eq!(
            requests_in(&db, "edge-a", NOW, NOW + HOUR, NOW + HOUR),
            (0, 0)
        );
        // Another edge's ring is separate.
        assert_eq!(requests_in(&db, "edge-b", NOW - HOUR, NOW, NOW), (0, 0));
    }

    #[test]
    fn six_fine_samples_roll_up_into_one_minute() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(&dir);
        let txn = db.begin_write().expect("write txn");
        let minute = NOW - 10 * MINUTE;
        let batch: Vec<_> = (0..6)
            .map(|i| {
                (
                    "edge-a".to_string(),
                    Timestamp(minute + i * 10_000),
                    sample(100 + i as u64, if i == 5 { 400.0 } else { 8.0 }),
                )
            })
            .collect();
        let outcome = write_samples(&txn, &batch, Timestamp(NOW)).expect("write");
        assert_eq!(
            outcome,
            WriteOutcome {
                stored: 6,
                rejected: 0
            }
        );
        txn.commit().expect("commit");

        let read = db.begin_read().expect("read txn");
        let table = read.open_table(SERIES_MINUTES).expect("table");
        let block = Block::decode(
            Resolution::Coarse,
            table
                .get(("edge-a", Resolution::Coarse.block(minute)))
                .expect("get")
                .expect("block filled")
                .value(),
        )
        .expect("decodes");
        let stored = block.slots[Resolution::Coarse.slot_in_block(minute)]
            .clone()
            .expect("slot filled");
        assert_eq!(stored.start_ms, minute);
        assert_eq!(stored.requests, 100 + 101 + 102 + 103 + 104 + 105);
        assert_eq!(stored.errors4xx, 6);
        assert_eq!(stored.seconds, 60);
        let (_, rolled) = stored.to_sample();
        assert_eq!(rolled.latency.total(), 300);
        // 250 fast and 50 slow requests: the merged histogram's p95 lies in the slow bucket.
        assert!(rolled.latency.quantile(0.95).unwrap_or(0.0) > 250.0);
    }

    #[test]
    fn data_survives_closing_and_reopening_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = open(&dir);
            write_every_10s(&db, "edge-a", NOW - HOUR, 360, 7);
        }
        let db = open(&dir);
        assert_eq!(
            requests_in(&db, "edge-a", NOW - HOUR, NOW, NOW),
            (360, 2_520)
        );
    }

    #[test]
    fn queries_across_the_six_hour_boundary_count_each_interval_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(&dir);
        write_every_10s(&db, "edge-a", NOW - 7 * HOUR, 7 * 360, 1);
        struct Case {
            from: i64,
            to: i64,
            requests: u64,
        }
        let cases = [
            Case {
                from: NOW - 7 * HOUR,
                to: NOW,
                requests: 7 * 360,
            },
            Case {
                from: NOW - 6 * HOUR - 30 * MINUTE,
                to: NOW - 5 * HOUR,
                requests: 90 * 6,
            },
            Case {
                from: NOW - 6 * HOUR,
                to: NOW - 6 * HOUR + 2 * MINUTE,
                requests: 12,
            },
        ];
        for case in cases {
            let (_, requests) = requests_in(&db, "edge-a", case.from, case.to, NOW);
            assert_eq!(
                requests,
                case.requests,
                "{}..{}",
                case.from - NOW,
                case.to - NOW
            );
        }
    }

    #[test]
    fn refused_samples_and_deleted_edges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(&dir);
        let txn = db.begin_write().expect("write txn");
        let batch = vec![
            ("edge-a".to_string(), Timestamp(NOW + HOUR), sample(5, 8.0)),
            (
                "edge-a".to_string(),
                Timestamp(NOW - 31 * 24 * HOUR),
                sample(5, 8.0),
            ),
            (
                "edge-a".to_string(),
                Timestamp(NOW - 10_000),
                sample(5, 8.0),
            ),
            (
                "edge-b".to_string(),
                Timestamp(NOW - 10_000),
                sample(5, 8.0),
            ),
        ];
        let outcome = write_samples(&txn, &batch, Timestamp(NOW)).expect("write");
        assert_eq!(
            outcome,
            WriteOutcome {
                stored: 2,
                rejected: 2
            }
        );
        delete_edge(&txn, "edge-a").expect("delete");
        txn.commit().expect("commit");
        assert_eq!(
            requests_in(&db, "edge-a", NOW - 40 * 24 * HOUR, NOW + 2 * HOUR, NOW),
            (0, 0)
        );
        assert_eq!(requests_in(&db, "edge-b", NOW - HOUR, NOW, NOW), (1, 5));
    }

    /// The per-slot layout of earlier releases, kept here to compare answers and to write
    /// data for the migration: one postcard value per slot, `(t / interval) mod slots`.
    mod legacy {
        use super::super::*;

        fn table(
            resolution: Resolution,
        ) -> TableDefinition<'static, (&'static str, u32), &'static [u8]> {
            match resolution {
                Resolution::Fine => LEGACY_10S,
                Resolution::Coarse => LEGACY_1M,
            }
        }

        fn slot(resolution: Resolution, t_ms: i64) -> u32 {
            u32::try_from(
                t_ms.div_euclid(resolution.interval_ms())
                    .rem_euclid(i64::from(resolution.slots())),
            )
            .expect("slot fits")
        }

        pub(super) fn write(
            txn: &WriteTransaction,
            samples: &[(String, Timestamp, MetricsSample)],
            now: Timestamp,
        ) {
            for resolution in [Resolution::Fine, Resolution::Coarse] {
                let mut table = txn.open_table(table(resolution)).expect("table");
                for (edge_id, t, sample) in samples {
                    if !resolution.accepts(t.millis(), now) {
                        continue;
                    }
                    let key = (edge_id.as_str(), slot(resolution, t.millis()));
                    let existing = table
                        .get(key)
                        .expect("get")
                        .and_then(|bytes| StoredSample::decode_legacy(bytes.value()).ok());
                    if let Some(value) = ring::place(existing, resolution, *t, sample) {
                        let bytes = value.encode_legacy().expect("encodes");
                        table.insert(key, bytes.as_slice()).expect("insert");
                    }
                }
            }
        }

        pub(super) fn read(
            db: &Database,
            edge_id: &str,
            from: Timestamp,
            to: Timestamp,
            now: Timestamp,
        ) -> Vec<(Timestamp, MetricsSample)> {
            let txn = db.begin_read().expect("read txn");
            let plan = ring::read_plan(from, to, now);
            let mut samples = Vec::new();
            for (resolution, part) in [
                (Resolution::Coarse, plan.coarse),
                (Resolution::Fine, plan.fine),
            ] {
                let Some((part_from, part_to)) = part else {
                    continue;
                };
                let table = txn.open_table(table(resolution)).expect("table");
                let first = samples.len();
                for entry in table
                    .range((edge_id, 0)..=(edge_id, u32::MAX))
                    .expect("range")
                {
                    let (_, bytes) = entry.expect("entry");
                    let value = StoredSample::decode_legacy(bytes.value()).expect("decodes");
                    if value.start_ms >= part_from && value.start_ms < part_to {
                        samples.push(value.to_sample());
                    }
                }
                samples[first..].sort_by_key(|(t, _)| *t);
            }
            samples
        }
    }

    /// Irregular traffic of two edges over seven hours, with gaps, late and doubled reports
    /// and bursts: what a layout must answer the same way.
    type Batch = Vec<(String, Timestamp, MetricsSample)>;

    fn irregular_history() -> Vec<(Batch, Timestamp)> {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        let mut batches = Vec::new();
        for i in 0..7 * 360 {
            let now = Timestamp(NOW - 7 * HOUR + i * 10_000);
            let mut batch = Vec::new();
            for edge in ["edge-a", "edge-b"] {
                if next(10) == 0 {
                    continue; // a missed heartbeat
                }
                let requests = if next(50) == 0 {
                    next(1_000_000)
                } else {
                    next(3_000)
                };
                let mut latency = LatencyHistogram::default();
                for _ in 0..next(40) {
                    latency.record(next(3_000) as f64 / 2.0);
                }
                let hits = next(requests + 1);
                let sample = MetricsSample {
                    interval_seconds: 10,
                    requests,
                    cache_hits: hits,
                    cache_misses: requests - hits,
                    errors4xx: next(20),
                    errors5xx: next(3),
                    bytes_sent: requests * next(50_000),
                    bytes_received: next(u64::MAX / 4),
                    latency,
                };
                // Now and then a report arrives late, or twice for one interval.
                let late = if next(20) == 0 { 30_000 } else { 0 };
                batch.push((
                    edge.to_string(),
                    now.plus_millis(-10_000 - late),
                    sample.clone(),
                ));
                if next(30) == 0 {
                    batch.push((edge.to_string(), now.plus_millis(-10_000), sample));
                }
            }
            batches.push((batch, now));
        }
        batches
    }

    fn windows() -> Vec<(i64, i64)> {
        vec![
            (NOW - 7 * HOUR, NOW),
            (NOW - HOUR, NOW),
            (NOW - 5 * MINUTE, NOW),
            (NOW - 6 * HOUR - 17 * MINUTE, NOW - 5 * HOUR - 3 * MINUTE),
            (NOW - 6 * HOUR + 25_000, NOW - 6 * HOUR + 9 * MINUTE + 5_000),
            (NOW - 3 * HOUR - 1, NOW - 2 * HOUR + 1),
        ]
    }

    #[test]
    fn blocks_answer_every_query_as_the_per_slot_layout_did() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = Database::create(dir.path().join("old.redb")).expect("old");
        let new = Database::create(dir.path().join("new.redb")).expect("new");
        // An hour of heartbeats per transaction; each batch is written at its own `now`.
        for hour in irregular_history().chunks(360) {
            let (old_txn, new_txn) = (
                old.begin_write().expect("txn"),
                new.begin_write().expect("txn"),
            );
            for (batch, now) in hour {
                legacy::write(&old_txn, batch, *now);
                write_samples(&new_txn, batch, *now).expect("write");
            }
            old_txn.commit().expect("commit");
            new_txn.commit().expect("commit");
        }
        for edge in ["edge-a", "edge-b"] {
            for (from, to) in windows() {
                let (from, to, now) = (Timestamp(from), Timestamp(to), Timestamp(NOW));
                let expected = legacy::read(&old, edge, from, to, now);
                assert!(!expected.is_empty());
                let actual = read_range(&new, edge, from, to, now).expect("read");
                assert_eq!(actual, expected, "{edge} {from:?}..{to:?}");
                let snapshot = |samples: &[(Timestamp, MetricsSample)]| {
                    crate::monitor::aggregate::to_snapshot(
                        &WindowTotals::from_samples(samples, from, to).stats(),
                        to,
                    )
                };
                assert_eq!(snapshot(&actual), snapshot(&expected));
            }
        }
    }

    #[test]
    fn data_of_the_per_slot_layout_is_moved_into_blocks_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("series.redb");
        {
            let db = Database::create(&path).expect("db");
            let txn = db.begin_write().expect("write txn");
            for (batch, now) in irregular_history() {
                legacy::write(&txn, &batch, now);
            }
            txn.commit().expect("commit");
        }
        let db = Database::create(&path).expect("db");
        let mut expected = Vec::new();
        for edge in ["edge-a", "edge-b"] {
            for (from, to) in windows() {
                let (from, to, now) = (Timestamp(from), Timestamp(to), Timestamp(NOW));
                expected.push(legacy::read(&db, edge, from, to, now));
            }
        }
        let txn = db.begin_write().expect("write txn");
        let moved = migrate_legacy(&txn).expect("migrate");
        txn.commit().expect("commit");
        assert!(moved > 7 * 360, "{moved}");
        let mut answers = expected.into_iter();
        for edge in ["edge-a", "edge-b"] {
            for (from, to) in windows() {
                let (from, to, now) = (Timestamp(from), Timestamp(to), Timestamp(NOW));
                let actual = read_range(&db, edge, from, to, now).expect("read");
                assert_eq!(Some(actual), answers.next(), "{edge} {from:?}..{to:?}");
            }
        }
        // The old tables are gone and a second open has nothing to move.
        let txn = db.begin_write().expect("write txn");
        assert!(
            !txn.list_tables()
                .expect("tables")
                .any(|handle| handle.name() == LEGACY_1M.name()
                    || handle.name() == LEGACY_10S.name())
        );
        assert_eq!(migrate_legacy(&txn).expect("migrate"), 0);
    }
}
