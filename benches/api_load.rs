//! API latency under steady load from a second process (SPEC §11: p99 under 10 ms at 1,000
//! req/s): starts the real `edgeplane serve` on loopback with a simulated fleet heartbeating
//! into it every 10 s, and drives it open loop: each request has a slot on a fixed schedule
//! and is sent then whether or not earlier ones have answered; its latency runs from its slot
//! (so a stalled server is charged for the queue it causes) to the last byte of its body.
//! Failures (errors and non-2xx answers) are counted and reported, not dropped. Two phases: reads
//! only, then reads mixed with creates.
//!
//! `cargo bench --bench api_load` (optional env: RATE, SECONDS, WRITE_SHARE in percent,
//! FLEET_EDGES).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Mutex;

const PASSWORD: &str = "bench-admin-password";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Sends `make(i)` in slot `i` of a schedule of `rate` per second for `seconds`; returns the
/// latencies (ms, from each request's slot to the end of its body) and the failures.
async fn drive<F, Fut>(rate: u64, seconds: u64, make: F) -> (Vec<f64>, usize)
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let total = rate * seconds;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let slot = start + period * i as u32;
        tokio::time::sleep_until(slot).await;
        let request = make(i);
        let latencies = latencies.clone();
        let failures = failures.clone();
        tasks.push(tokio::spawn(async move {
            let ok = request.await;
            let elapsed = slot.elapsed().as_secs_f64() * 1000.0;
            if ok {
                latencies.lock().await.push(elapsed);
            } else {
                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let mut values = latencies.lock().await.clone();
    values.sort_by(|a, b| a.total_cmp(b));
    (values, failures.load(std::sync::atomic::Ordering::Relaxed))
}

/// Sends a request and reads its whole body; true for a 2xx answer.
async fn complete(request: reqwest::RequestBuilder) -> bool {
    match request.send().await {
        Ok(response) => {
            let ok = response.status().is_success();
            response.bytes().await.is_ok() && ok
        }
        Err(_) => false,
    }
}

fn report(name: &str, rate: u64, (values, failures): &(Vec<f64>, usize)) {
    println!(
        "{name:<28} rate {rate:>5}/s  n {:>6}  failed {failures:>4}  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        values.len(),
        percentile(values, 0.50),
        percentile(values, 0.99),
        values.last().copied().unwrap_or(f64::NAN),
    );
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = Command::new(env!("CARGO_BIN_EXE_edgeplane"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD)
        .env("EDGEPLANE_LIMITS_READS_PER_MINUTE", "100000000")
        .env("EDGEPLANE_LIMITS_WRITES_PER_MINUTE", "100000000")
        .env("EDGEPLANE_LIMITS_HEARTBEATS_PER_SECOND", "100000000")
        .env("EDGEPLANE_LIMITS_PUBLIC_PER_MINUTE", "100000000")
        .env("EDGEPLANE_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = server
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut address = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("listening on ") {
            address = rest.trim().to_string();
            break;
        }
    }
    anyhow::ensure!(!address.is_empty(), "the server did not start");
    let base = format!("http://{address}/api/v1");

    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(512)
            .build()?;
        let login: Value = client
            .post(format!("{base}/authentication/login"))
            .json(&json!({"username": "admin", "password": PASSWORD}))
            .send()
            .await?
            .json()
            .await?;
        let token = login["token"].as_str().unwrap_or_default().to_string();
        let created: Value = client
            .post(format!("{base}/configurations"))
            .bearer_auth(&token)
            .json(&json!({"name": "bench-read", "type": "CacheRule", "content": {"pathPattern": "/bench/*", "ttl": 60, "cacheControl": "public"}}))
            .send()
            .await?
            .json()
            .await?;
        let id = created["configurationId"].as_str().unwrap_or_default().to_string();

        let fleet = edgeplane::edge::Fleet::start(edgeplane::edge::SimulateOptions {
            control_plane: format!("http://{address}"),
            admin_token: token.clone(),
            edges: env_number("FLEET_EDGES", 1000) as usize,
            heartbeat_interval: Duration::from_secs(10),
            ..edgeplane::edge::SimulateOptions::default()
        })
        .await?;

        let rate = env_number("RATE", 1000);
        let seconds = env_number("SECONDS", 10);
        let read = |i: u64| {
            let url = if i % 2 == 0 {
                format!("{base}/configurations/{id}")
            } else {
                format!("{base}/edge-locations?limit=20&offset={}", i % 500)
            };
            complete(client.get(url).bearer_auth(&token))
        };
        let reads = drive(rate, seconds, read).await;
        report("reads only", rate, &reads);

        let write_share = env_number("WRITE_SHARE", 10).min(100);
        let write_rate = (rate * write_share / 100).max(1);
        let read_rate = rate.saturating_sub(write_rate).max(1);
        let write = |i: u64| {
            complete(
                client
                    .post(format!("{base}/configurations"))
                    .bearer_auth(&token)
                    .json(&json!({"name": format!("bench-{i}"), "type": "CacheRule", "content": {"pathPattern": format!("/b/{i}/*"), "ttl": 60, "cacheControl": "public"}})),
            )
        };
        let (mixed_reads, mixed_writes) = tokio::join!(
            drive(read_rate, seconds, read),
            drive(write_rate, seconds, write)
        );
        report("mixed: reads", read_rate, &mixed_reads);
        report("mixed: creates", write_rate, &mixed_writes);
        fleet.shutdown().await;
        anyhow::Ok(())
    });
    let _ = server.kill();
    let _ = server.wait();
    result
}
