//! Replication figures on two real processes on loopback: write latency with and without
//! sync replication, the standby's replication lag under steady writes, and failover time
//! (kill -9 of the primary → promoted standby → first accepted write).
//!
//! `cargo bench --bench replication`; `BENCH_WRITES` sets the writes per run (default 300),
//! `BENCH_RATE` the steady write rate per second for the lag figures (default 200).

use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../tests/common/process.rs"]
mod process;

#[allow(dead_code)]
#[path = "../tests/common/cluster.rs"]
mod cluster;

use cluster::{ADMIN_PASSWORD, create_config, pair, promote, wait_in_sync};
use process::{client, login};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A quantile of a summary on a node's `/metrics`, in milliseconds.
async fn summary_ms(client: &reqwest::Client, base: &str, metric: &str, quantile: &str) -> f64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let prefix = format!("{metric}{{quantile=\"{quantile}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(f64::NAN, |seconds| seconds * 1000.0)
}

async fn run() {
    let writes = env_or("BENCH_WRITES", 300);
    let rate = env_or("BENCH_RATE", 200).max(1);
    let client = client();
    println!("replication bench: {writes} writes per run, steady rate {rate}/s, loopback");
    for sync in [false, true] {
        let (p, s) = pair(sync, &[]);
        let primary = p.start(Some(ADMIN_PASSWORD));
        let standby = s.start(None);
        let token = login(&client, &p.url, "admin", ADMIN_PASSWORD).await;
        wait_in_sync(&client, &p.url, &s.url, &token).await;

        // Back-to-back writes from one client: each one's latency.
        let mut latencies = Vec::new();
        for n in 0..writes {
            let started = Instant::now();
            let status = create_config(&client, &p.url, &token, &format!("seq-{n}")).await;
            assert_eq!(status, 201);
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        latencies.sort_by(f64::total_cmp);
        println!(
            "write latency, sync_replication = {sync}: p50 {:.2} ms, p99 {:.2} ms",
            percentile(&latencies, 50.0),
            percentile(&latencies, 99.0)
        );

        // Steady writes at `rate`: how long after a write was issued the standby applied it.
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        for n in 0..writes {
            tick.tick().await;
            let status = create_config(&client, &p.url, &token, &format!("steady-{n}")).await;
            assert_eq!(status, 201);
        }
        let metric = "edgeplane_replication_apply_lag_seconds";
        println!(
            "replication lag (write issued → applied on the standby), sync_replication = {sync}: p50 {:.2} ms, p99 {:.2} ms",
            summary_ms(&client, &s.url, metric, "0.5").await,
            summary_ms(&client, &s.url, metric, "0.99").await
        );

        if sync {
            let killed = Instant::now();
            primary.kill_hard();
            let promoted_at = Instant::now();
            promote(&client, &s.url, &token).await;
            let promoted = promoted_at.elapsed();
            loop {
                if create_config(&client, &s.url, &token, "first-after-promote").await == 201 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            println!(
                "failover: kill -9 → promoted {:.1} ms; promote → first accepted write {:.1} ms (promote call {:.1} ms)",
                (promoted_at - killed + promoted).as_secs_f64() * 1000.0,
                promoted_at.elapsed().as_secs_f64() * 1000.0,
                promoted.as_secs_f64() * 1000.0
            );
        } else {
            drop(primary);
        }
        drop(standby);
    }
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench`-less arguments: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run());
}
