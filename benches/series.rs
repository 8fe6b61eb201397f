//! Cost of the metric ring buffers: one durable transaction writing a 10-second batch of 1,000
//! edges' samples, a one-hour query of one edge, and the bytes on disk per edge once both rings
//! have gone round, and what that makes at 10,000 edges (printed once before the timings).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use edgeplane::model::{LatencyHistogram, MetricsSample, Timestamp};
use edgeplane::store::series::{read_range, write_samples};
use redb::Database;

const EDGES: usize = 1_000;
const TEN_SECONDS: i64 = 10_000;
const HOUR: i64 = 3_600_000;
const START: i64 = 1_764_000_000_000 - 1_764_000_000_000 % HOUR;

/// A plausible 10-second report of a busy edge, varied a little per edge and interval.
fn sample(edge: usize, interval: i64) -> MetricsSample {
    let requests = 2_000 + (edge as i64 * 7 + interval * 13).rem_euclid(1_000) as u64;
    let mut latency = LatencyHistogram::default();
    for (bucket, share) in [
        (2, 5),
        (3, 20),
        (4, 30),
        (5, 20),
        (6, 12),
        (7, 8),
        (9, 3),
        (11, 2),
    ] {
        if let Some(count) = latency.counts.get_mut(bucket) {
            *count = requests * share / 100;
        }
    }
    MetricsSample {
        interval_seconds: 10,
        requests,
        cache_hits: requests * 92 / 100,
        cache_misses: requests - requests * 92 / 100,
        errors4xx: requests / 500,
        errors5xx: requests / 1_000,
        bytes_sent: requests * 24_000,
        bytes_received: requests * 600,
        latency,
    }
}

fn batch(edge_ids: &[String], interval: i64) -> Vec<(String, Timestamp, MetricsSample)> {
    edge_ids
        .iter()
        .enumerate()
        .map(|(edge, id)| {
            (
                id.clone(),
                Timestamp(START + interval * TEN_SECONDS),
                sample(edge, interval),
            )
        })
        .collect()
}

fn write_batch(db: &Database, samples: &[(String, Timestamp, MetricsSample)], now: Timestamp) {
    let txn = db.begin_write().expect("write txn");
    write_samples(&txn, samples, now).expect("write");
    txn.commit().expect("commit");
}

/// Fills both rings of a few edges completely (30 days of minutes, then 6 hours of 10 s) and
/// prints the file size per edge, before and after compaction.
fn disk_footprint() {
    const FOOTPRINT_EDGES: usize = 10;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("footprint.redb");
    let mut db = Database::create(&path).expect("database");
    let edge_ids: Vec<String> = (0..FOOTPRINT_EDGES)
        .map(|i| format!("edge-{i:04}"))
        .collect();
    let lap_start = START - 30 * 24 * HOUR - 6 * HOUR;
    // One sample per minute for 30 days fills every coarse slot once, cheaply.
    let minutes = 30 * 24 * 60;
    for chunk in (0..minutes).step_by(600) {
        let txn = db.begin_write().expect("write txn");
        for minute in chunk..(chunk + 600).min(minutes) {
            let t = Timestamp(lap_start + minute * 60_000);
            let samples: Vec<_> = edge_ids
                .iter()
                .enumerate()
                .map(|(e, id)| (id.clone(), t, sample(e, minute)))
                .collect();
            write_samples(&txn, &samples, t).expect("write");
        }
        txn.commit().expect("commit");
    }
    // Then six hours at 10 s fill the fine ring (and keep merging into the coarse one).
    let fine_start = (lap_start + minutes * 60_000 - START) / TEN_SECONDS;
    for chunk in (0..2_160).step_by(360) {
        let txn = db.begin_write().expect("write txn");
        for i in chunk..chunk + 360 {
            let interval = fine_start + i;
            let t = Timestamp(START + interval * TEN_SECONDS);
            let samples: Vec<_> = edge_ids
                .iter()
                .enumerate()
                .map(|(e, id)| (id.clone(), t, sample(e, interval)))
                .collect();
            write_samples(&txn, &samples, t).expect("write");
        }
        txn.commit().expect("commit");
    }
    let before = std::fs::metadata(&path).expect("size").len();
    db.compact().expect("compact");
    drop(db);
    let after = std::fs::metadata(&path).expect("size").len();
    let per_edge = after / FOOTPRINT_EDGES as u64;
    println!(
        "series footprint: {} edges, full laps of both rings: {} bytes/edge on disk ({} before compaction); \
         {:.2} MiB/edge, {:.1} GiB at 10,000 edges",
        FOOTPRINT_EDGES,
        per_edge,
        before / FOOTPRINT_EDGES as u64,
        per_edge as f64 / 1_048_576.0,
        per_edge as f64 * 10_000.0 / 1_073_741_824.0
    );
}

fn series(c: &mut Criterion) {
    disk_footprint();

    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::create(dir.path().join("series.redb")).expect("database");
    let edge_ids: Vec<String> = (0..EDGES).map(|i| format!("edge-{i:04}")).collect();
    // One hour of history for every edge, so queries and writes meet a realistic tree.
    for interval in 0..360 {
        write_batch(
            &db,
            &batch(&edge_ids, interval),
            Timestamp(START + interval * TEN_SECONDS),
        );
    }

    let mut group = c.benchmark_group("series");
    group.sample_size(20);
    let mut interval = 360;
    group.bench_function("write_1000_edges_one_durable_txn", |b| {
        b.iter_batched(
            || {
                interval += 1;
                (
                    batch(&edge_ids, interval),
                    Timestamp(START + interval * TEN_SECONDS),
                )
            },
            |(samples, now)| write_batch(&db, &samples, now),
            criterion::BatchSize::PerIteration,
        )
    });
    let now = Timestamp(START + interval * TEN_SECONDS);
    group.bench_function("read_1h_one_edge", |b| {
        b.iter(|| {
            let samples = read_range(
                &db,
                black_box("edge-0500"),
                now.plus_millis(-HOUR),
                now,
                now,
            )
            .expect("read");
            black_box(samples.len())
        })
    });
    group.finish();
}

criterion_group!(benches, series);
criterion_main!(benches);
