//! Memory of the control plane under a burst of logins: starts the real `edgeplane serve` on
//! loopback, reads its resident set size (VmRSS) before, during (the peak, sampled every
//! 10 ms) and after 200 concurrent logins for unknown users, and prints the three with the
//! answers by status. Password hashing is bounded by `auth.max_concurrent_hashes`, so the
//! peak stays near that many times Argon2id's 19 MiB.
//!
//! `cargo bench --bench login_memory` (optional env: LOGINS, default 200; HASHES, the
//! server's `auth.max_concurrent_hashes`, default 2).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

const PASSWORD: &str = "bench-admin-password";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// VmRSS of process `pid` in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() -> anyhow::Result<()> {
    let logins = env_number("LOGINS", 200);
    let hashes = env_number("HASHES", 2);
    let dir = tempfile::tempdir()?;
    let mut server = Command::new(env!("CARGO_BIN_EXE_edgeplane"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD)
        .env("EDGEPLANE_LIMITS_LOGIN_ATTEMPTS_PER_MINUTE", "100000000")
        .env("EDGEPLANE_LIMITS_WRITES_PER_MINUTE", "100000000")
        .env("EDGEPLANE_AUTH_MAX_CONCURRENT_HASHES", hashes.to_string())
        // Long enough that every login waits its turn instead of getting 429.
        .env("EDGEPLANE_AUTH_HASH_QUEUE_TIMEOUT", "120s")
        .env("EDGEPLANE_LOG_LEVEL", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = server.id();
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
    let url = format!("http://{address}/api/v1/authentication/login");

    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(async {
        let client = reqwest::Client::builder().build()?;
        // One login first, so the decoy hash and the pool's threads exist before measuring.
        client
            .post(&url)
            .json(&json!({"username": "warm-up", "password": "not-the-password"}))
            .send()
            .await?;
        let before = rss_mib(pid);

        let peak = Arc::new(AtomicU64::new(0));
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = {
            let (peak, sampling) = (peak.clone(), sampling.clone());
            std::thread::spawn(move || {
                while sampling.load(Ordering::Relaxed) {
                    let now = (rss_mib(pid) * 1024.0) as u64;
                    peak.fetch_max(now, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        let started = Instant::now();
        let answers = futures_util::future::join_all((0..logins).map(|n| {
            let request = client
                .post(&url)
                .json(&json!({"username": format!("nobody-{n}"), "password": "a-wrong-password-here"}))
                .send();
            async move { request.await.map(|r| r.status().as_u16()).unwrap_or(0) }
        }))
        .await;
        let elapsed = started.elapsed();
        sampling.store(false, Ordering::Relaxed);
        let _ = sampler.join();
        // What stays once the burst is over.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_mib(pid);
        let mut by_status = BTreeMap::new();
        for status in answers {
            *by_status.entry(status).or_insert(0u64) += 1;
        }
        println!(
            "{logins} concurrent logins, max_concurrent_hashes {hashes}: RSS before {before:.1} MiB, peak {:.1} MiB, after {after:.1} MiB; {:.1} s; answers {by_status:?}",
            peak.load(Ordering::Relaxed) as f64 / 1024.0,
            elapsed.as_secs_f64(),
        );
        anyhow::Ok(())
    });
    let _ = server.kill();
    let _ = server.wait();
    result
}
