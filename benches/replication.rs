//! Replication figures on two real processes on loopback: write latency with and without
//! sync replication, the standby's replication lag under steady writes (a write issued on the
//! primary → readable on the standby), and failover (promote → first accepted write, and kill
//! -9 of the primary → the standby, promoted at once, accepting writes).
//!
//! `cargo bench --bench replication`; `BENCH_WRITES` sets the writes per run (default 300),
//! `BENCH_RATE` the steady write rate per second for the lag figures (default 200),
//! `BENCH_FAILOVERS` the kill -9 rounds (default 5).

use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../tests/common/process.rs"]
mod process;

#[allow(dead_code)]
#[path = "../tests/common/cluster.rs"]
mod cluster;

use cluster::{ADMIN_PASSWORD, call, create_config, pair, promote, wait_in_sync};
use process::{client, login};
use serde_json::json;

/// Longest the bench waits for anything it must see; past it the run fails, not hangs.
const BOUND: Duration = Duration::from_secs(30);

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

/// Creates a configuration and answers its id.
async fn create(client: &reqwest::Client, base: &str, token: &str, name: &str) -> String {
    let body = json!({
        "name": name,
        "type": "CacheRule",
        "content": {"pathPattern": format!("/{name}/*"), "ttl": 60, "cacheControl": "public"},
    });
    let url = format!("{base}/api/v1/configurations");
    let (status, _, answer) = call(client, reqwest::Method::POST, url, token, Some(body)).await;
    assert_eq!(status, 201, "{answer}");
    answer["configurationId"]
        .as_str()
        .expect("configurationId")
        .to_string()
}

/// Polls the standby every millisecond until it serves configuration `id`; answers how long
/// after `issued` that was.
async fn readable_after(
    client: reqwest::Client,
    base: String,
    token: String,
    id: String,
    issued: Instant,
) -> Duration {
    let url = format!("{base}/api/v1/configurations/{id}");
    loop {
        let (status, _, _) = call(&client, reqwest::Method::GET, url.clone(), &token, None).await;
        if status == 200 {
            return issued.elapsed();
        }
        assert!(issued.elapsed() < BOUND, "the standby never served {id}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

async fn run() {
    let writes = env_or("BENCH_WRITES", 300);
    let rate = env_or("BENCH_RATE", 200).max(1);
    let failovers = env_or("BENCH_FAILOVERS", 5).max(1);
    let client = client();
    println!(
        "replication bench: {writes} writes per run, steady rate {rate}/s, {failovers} failovers, loopback"
    );
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
            latencies.push(ms(started.elapsed()));
        }
        let latencies = sorted(latencies);
        println!(
            "write latency, sync_replication = {sync}: p50 {:.2} ms, p99 {:.2} ms",
            percentile(&latencies, 50.0),
            percentile(&latencies, 99.0)
        );

        // Steady writes at `rate`, each followed on the standby until it serves it.
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut followers = tokio::task::JoinSet::new();
        for n in 0..writes {
            tick.tick().await;
            let issued = Instant::now();
            let id = create(&client, &p.url, &token, &format!("steady-{n}")).await;
            followers.spawn(readable_after(
                client.clone(),
                s.url.clone(),
                token.clone(),
                id,
                issued,
            ));
        }
        let mut lags = Vec::new();
        while let Some(lag) = followers.join_next().await {
            lags.push(ms(lag.expect("follower")));
        }
        let lags = sorted(lags);
        println!(
            "replication lag (write issued on the primary → served by the standby), sync_replication = {sync}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            percentile(&lags, 50.0),
            percentile(&lags, 99.0),
            lags.last().copied().unwrap_or(f64::NAN)
        );
        drop(primary);
        drop(standby);
    }

    // Failover under sync replication: the primary is killed and a script promotes the
    // standby at once, then writes until one is accepted.
    let (mut promote_to_write, mut kill_to_write) = (Vec::new(), Vec::new());
    for round in 0..failovers {
        let (p, s) = pair(true, &[]);
        let primary = p.start(Some(ADMIN_PASSWORD));
        let standby = s.start(None);
        let token = login(&client, &p.url, "admin", ADMIN_PASSWORD).await;
        wait_in_sync(&client, &p.url, &s.url, &token).await;
        for n in 0..20 {
            assert_eq!(
                create_config(&client, &p.url, &token, &format!("before-{n}")).await,
                201
            );
        }
        let killed = Instant::now();
        primary.kill_hard();
        let promoting = Instant::now();
        promote(&client, &s.url, &token).await;
        let name = format!("first-after-promote-{round}");
        while create_config(&client, &s.url, &token, &name).await != 201 {
            assert!(
                killed.elapsed() < BOUND,
                "the promoted standby never took a write"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        promote_to_write.push(ms(promoting.elapsed()));
        kill_to_write.push(ms(killed.elapsed()));
        drop(standby);
    }
    let (promote_to_write, kill_to_write) = (sorted(promote_to_write), sorted(kill_to_write));
    println!(
        "failover, {failovers} rounds: promote → first accepted write p50 {:.1} ms, max {:.1} ms; kill -9 → promoted standby accepting writes p50 {:.1} ms, max {:.1} ms",
        percentile(&promote_to_write, 50.0),
        promote_to_write.last().copied().unwrap_or(f64::NAN),
        percentile(&kill_to_write, 50.0),
        kill_to_write.last().copied().unwrap_or(f64::NAN),
    );
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
