//! Per-edge metric ring buffers in redb (SPEC §8.2): tables `series_10s` and `series_1m`, keyed
//! `(edge_id, slot)`, values postcard `StoredSample`s.
//!
//! The layout, the write rule, the read rule across the 6-hour boundary and the fixed storage
//! per edge are documented in `store::ring`; this file only applies them to redb. The
//! functions take a `Database` or a transaction rather than a store handle so the caller decides
//! batching and durability: heartbeats of many edges go into one write transaction.
//!
//! Callers pass `now` explicitly; it must be the same clock for writes and reads. Like every redb
//! call these block: run them off the async threads.

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use thiserror::Error;

use super::ring::{self, Resolution, RingError, StoredSample};
use crate::model::{MetricsSample, Timestamp};

pub(crate) const SERIES_10S: TableDefinition<(&str, u32), &[u8]> =
    TableDefinition::new("series_10s");
pub(crate) const SERIES_1M: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("series_1m");

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
        Resolution::Fine => SERIES_10S,
        Resolution::Coarse => SERIES_1M,
    }
}

/// Writes a batch of `(edge_id, interval start, sample)` into both rings of each edge, inside
/// the caller's transaction (commit is the caller's).
pub fn write_samples(
    txn: &WriteTransaction,
    samples: &[(String, Timestamp, MetricsSample)],
    now: Timestamp,
) -> Result<WriteOutcome, SeriesError> {
    let mut outcome = WriteOutcome::default();
    let mut fine = txn.open_table(SERIES_10S).map_err(redb::Error::from)?;
    let mut coarse = txn.open_table(SERIES_1M).map_err(redb::Error::from)?;
    for (edge_id, t, sample) in samples {
        let mut stored_anywhere = false;
        for (resolution, table) in [
            (Resolution::Fine, &mut fine),
            (Resolution::Coarse, &mut coarse),
        ] {
            if !resolution.accepts(t.millis(), now) {
                continue;
            }
            let slot = resolution.slot(t.millis());
            let existing = match table
                .get((edge_id.as_str(), slot))
                .map_err(redb::Error::from)?
            {
                // An undecodable slot is treated as empty so the ring heals on the next lap.
                Some(bytes) => StoredSample::decode(bytes.value()).ok(),
                None => None,
            };
            if let Some(value) = ring::place(existing, resolution, *t, sample) {
                let bytes = value.encode()?;
                table
                    .insert((edge_id.as_str(), slot), bytes.as_slice())
                    .map_err(redb::Error::from)?;
                stored_anywhere = true;
            }
        }
        if stored_anywhere {
            outcome.stored += 1;
        } else {
            outcome.rejected += 1;
        }
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
        for slots in resolution.slot_ranges(part_from, part_to) {
            let range = table
                .range((edge_id, *slots.start())..=(edge_id, *slots.end()))
                .map_err(redb::Error::from)?;
            for entry in range {
                let (_, bytes) = entry.map_err(redb::Error::from)?;
                let Ok(value) = StoredSample::decode(bytes.value()) else {
                    continue;
                };
                // Slots also hold earlier laps; only the window's own intervals count.
                if value.start_ms >= part_from && value.start_ms < part_to {
                    samples.push(value.to_sample());
                }
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
        let table = read.open_table(SERIES_1M).expect("table");
        let slot = Resolution::Coarse.slot(minute);
        let stored = StoredSample::decode(
            table
                .get(("edge-a", slot))
                .expect("get")
                .expect("slot filled")
                .value(),
        )
        .expect("decodes");
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
}
