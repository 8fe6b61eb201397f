//! API latency under steady load from a second process: starts the real `edgeplane serve` on
//! loopback and drives it at a fixed rate (open loop: a request is sent on schedule whether or
//! not earlier ones have answered), then prints p50/p99 of configuration GETs and creates.
//!
//! `cargo bench --bench api_load` (optional env: READ_RATE, READ_SECONDS, WRITE_RATE,
//! WRITE_SECONDS).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Sends `make(i)` at `rate` per second for `seconds`; returns latencies (ms) and failures.
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
        tokio::time::sleep_until(start + period * i as u32).await;
        let request = make(i);
        let latencies = latencies.clone();
        let failures = failures.clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let ok = request.await;
            let elapsed = sent.elapsed().as_secs_f64() * 1000.0;
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

        let read_rate = env_number("READ_RATE", 1000);
        let reads = drive(read_rate, env_number("READ_SECONDS", 10), |_| {
            let request = client
                .get(format!("{base}/configurations/{id}"))
                .bearer_auth(&token)
                .send();
            async move { request.await.map(|r| r.status().is_success()).unwrap_or(false) }
        })
        .await;
        let write_rate = env_number("WRITE_RATE", 100);
        let writes = drive(write_rate, env_number("WRITE_SECONDS", 5), |i| {
            let request = client
                .post(format!("{base}/configurations"))
                .bearer_auth(&token)
                .json(&json!({"name": format!("bench-{i}"), "type": "CacheRule", "content": {"pathPattern": format!("/b/{i}/*"), "ttl": 60, "cacheControl": "public"}}))
                .send();
            async move { request.await.map(|r| r.status().is_success()).unwrap_or(false) }
        })
        .await;
        report("GET /configurations/{id}", read_rate, &reads);
        report("POST /configurations", write_rate, &writes);
        anyhow::Ok(())
    });
    let _ = server.kill();
    let _ = server.wait();
    result
}
