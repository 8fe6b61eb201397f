//! Durable write throughput under concurrency: configuration creates through the real
//! `edgeplane serve` on loopback at 1, 16 and 64 closed-loop clients, with 10 and with 10,000
//! configurations stored, printing creates per second and p50/p99. When an `etcd` binary is on
//! the PATH (or named by `ETCD_BIN`) the same load runs against etcd's v3 JSON gateway
//! (`POST /v3/kv/put`) in the same run, and the ratio is printed.
//!
//! `cargo bench --bench group_commit` (optional env: GC_SECONDS per cell, default 5;
//! GC_MAX_CREATES per cell, default 5000; GC_CLIENTS, default "1,16,64"; GC_STORED, default
//! "10,10000"; ETCD_BIN).
//!
//! Every cell starts from a copy of a data dir preloaded with the stored configurations, so a
//! cell's own creates do not inflate the next cell's starting point; a cell stops at its time
//! or its count of creates, whichever comes first. A last table drives `Store::apply` directly
//! with the same concurrency, to show the store's share apart from HTTP and validation.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use edgeplane::model::{ConfigStatus, ConfigType, Configuration, ConfigurationVersion, Timestamp};
use edgeplane::store::{Command as StoreCommand, CommandEnvelope, Store};
use serde_json::{Value, json};

const PASSWORD: &str = "bench-admin-password";
/// How long a server may take to start before the bench gives up.
const START_DEADLINE: Duration = Duration::from_secs(60);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// What one cell measured.
struct Figures {
    n_ok: usize,
    n_failed: usize,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Figures {
    fn line(&self) -> String {
        format!(
            "{:>8.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  n {:>6}  failed {:>4}",
            self.per_second, self.p50_ms, self.p99_ms, self.n_ok, self.n_failed
        )
    }
}

/// Runs `clients` closed-loop clients, each sending `request(client, n)` and waiting for its
/// answer before the next, until `seconds` have passed or `max_requests` were sent.
async fn closed_loop<F, Fut>(clients: usize, seconds: u64, max_requests: u64, request: F) -> Figures
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let request = Arc::new(request);
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let stop_at = start + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let request = request.clone();
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failed = 0usize;
                for n in 0.. {
                    if Instant::now() >= stop_at
                        || sent.fetch_add(1, Ordering::Relaxed) >= max_requests
                    {
                        break;
                    }
                    let begun = Instant::now();
                    if request(client, n).await {
                        latencies.push(begun.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        failed += 1;
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut n_failed = 0;
    for task in tasks {
        if let Ok((mut values, failed)) = task.await {
            latencies.append(&mut values);
            n_failed += failed;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    Figures {
        n_ok: latencies.len(),
        n_failed,
        per_second: latencies.len() as f64 / elapsed,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    }
}

fn cache_rule(path: &str) -> Value {
    json!({"pathPattern": path, "ttl": 60, "cacheControl": "public"})
}

/// A stored configuration that the bench's own creates never conflict with.
fn preload_command(n: usize) -> CommandEnvelope {
    create_command(&format!("preload-{n}"))
}

fn create_command(name: &str) -> CommandEnvelope {
    let id = format!("config-{name}");
    let now = Timestamp::now();
    let content = cache_rule(&format!("/{name}/*"));
    let configuration = Configuration {
        configuration_id: id.clone(),
        name: name.to_string(),
        config_type: ConfigType::CacheRule,
        description: String::new(),
        content: content.clone(),
        schema_version: "1.0".into(),
        version: "1.0.0".into(),
        tags: Vec::new(),
        status: ConfigStatus::Draft,
        created_by: "admin".into(),
        created_at: now,
        updated_at: now,
        approved_by: None,
        approved_at: None,
        is_deployed: false,
        deployed_locations: Vec::new(),
        metadata: BTreeMap::new(),
    };
    let version = ConfigurationVersion {
        version_id: format!("ver-{name}"),
        configuration_id: id,
        version: "1.0.0".into(),
        content,
        schema_version: "1.0".into(),
        change_description: "Initial version".into(),
        created_by: "admin".into(),
        created_at: now,
        status: ConfigStatus::Draft,
        approved_by: None,
        approved_at: None,
        approval_notes: None,
        is_deployed: false,
        metadata: BTreeMap::new(),
        tags: Vec::new(),
    };
    CommandEnvelope::new(
        "admin",
        "",
        StoreCommand::CreateConfiguration {
            configuration,
            version,
        },
    )
}

/// Writes `stored` configurations into a fresh store in `data_dir`, from a few threads.
fn preload(data_dir: &Path, stored: usize) -> anyhow::Result<()> {
    let store = Store::open(data_dir)?;
    let threads = 16;
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let store = store.clone();
                scope.spawn(move || -> anyhow::Result<()> {
                    for n in (t..stored).step_by(threads) {
                        store.apply_blocking(preload_command(n))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("preload thread panicked"))??;
        }
        Ok(())
    })
}

/// A running `edgeplane serve`.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data_dir: &Path) -> anyhow::Result<Server> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgeplane"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD)
        .env("EDGEPLANE_LIMITS_READS_PER_MINUTE", "100000000")
        .env("EDGEPLANE_LIMITS_WRITES_PER_MINUTE", "100000000")
        .env("EDGEPLANE_LIMITS_VALIDATE_PER_MINUTE", "100000000")
        .env("EDGEPLANE_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (lines_tx, lines) = std::sync::mpsc::channel();
    // Keeps draining stdout for the life of the process, so logging never blocks it.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut server = Server {
        child,
        base: String::new(),
    };
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        let line = lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
        if let Some(address) = line.trim().strip_prefix("listening on ") {
            server.base = format!("http://{address}/api/v1");
            return Ok(server);
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// Configuration creates against a fresh copy of `template`.
async fn edgeplane_cell(
    template: &Path,
    scratch: &Path,
    clients: usize,
    seconds: u64,
    max_creates: u64,
) -> anyhow::Result<Figures> {
    let data_dir = scratch.join(format!("edgeplane-{clients}"));
    copy_dir(template, &data_dir)?;
    let server = serve(&data_dir)?;
    let client = http_client()?;
    let login: Value = client
        .post(format!("{}/authentication/login", server.base))
        .json(&json!({"username": "admin", "password": PASSWORD}))
        .send()
        .await?
        .json()
        .await?;
    let token = login["token"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("login failed: {login}"))?
        .to_string();
    let url = format!("{}/configurations", server.base);
    let figures = closed_loop(clients, seconds, max_creates, move |c, n| {
        let request = client
            .post(&url)
            .bearer_auth(&token)
            .json(&json!({
                "name": format!("bench-{c}-{n}"),
                "type": "CacheRule",
                "content": cache_rule(&format!("/bench/{c}/{n}/*")),
            }))
            .send();
        async move {
            request
                .await
                .map(|r| r.status() == reqwest::StatusCode::CREATED)
                .unwrap_or(false)
        }
    })
    .await;
    drop(server);
    std::fs::remove_dir_all(&data_dir)?;
    Ok(figures)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running etcd, killed on drop.
struct Etcd {
    child: Child,
    base: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_etcd(binary: &Path, data_dir: &Path) -> anyhow::Result<Etcd> {
    let (client_port, peer_port) = (free_port()?, free_port()?);
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let child = Command::new(binary)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("default={peer_url}")])
        .args(["--log-level", "error"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let etcd = Etcd {
        child,
        base: client_url,
    };
    let client = http_client()?;
    let deadline = Instant::now() + START_DEADLINE;
    while Instant::now() < deadline {
        if etcd_put(&client, &etcd.base, "ready", "yes").await {
            return Ok(etcd);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("etcd did not answer in time")
}

async fn etcd_put(client: &reqwest::Client, base: &str, key: &str, value: &str) -> bool {
    client
        .post(format!("{base}/v3/kv/put"))
        .json(&json!({"key": BASE64.encode(key), "value": BASE64.encode(value)}))
        .send()
        .await
        .map(|r| r.status().is_success())
        .unwrap_or(false)
}

/// The same load as [`edgeplane_cell`] as etcd puts, on an etcd holding `stored` keys.
async fn etcd_cell(
    binary: &Path,
    scratch: &Path,
    stored: usize,
    clients: usize,
    seconds: u64,
    max_puts: u64,
) -> anyhow::Result<Figures> {
    let data_dir = scratch.join(format!("etcd-{clients}"));
    let etcd = start_etcd(binary, &data_dir).await?;
    let client = http_client()?;
    let preload = closed_loop(16, 3600, stored as u64, {
        let (client, base) = (client.clone(), etcd.base.clone());
        move |c, n| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let value = cache_rule(&format!("/preload/{c}/{n}/*")).to_string();
                etcd_put(&client, &base, &format!("preload/{c}/{n}"), &value).await
            }
        }
    })
    .await;
    anyhow::ensure!(preload.n_failed == 0, "etcd preload failed");
    let base = etcd.base.clone();
    let figures = closed_loop(clients, seconds, max_puts, move |c, n| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let value = json!({
                "name": format!("bench-{c}-{n}"),
                "type": "CacheRule",
                "content": cache_rule(&format!("/bench/{c}/{n}/*")),
            })
            .to_string();
            etcd_put(&client, &base, &format!("bench/{c}/{n}"), &value).await
        }
    })
    .await;
    drop(etcd);
    std::fs::remove_dir_all(&data_dir)?;
    Ok(figures)
}

/// Creates through `Store::apply` alone: no HTTP, no validation.
async fn store_cell(
    scratch: &Path,
    clients: usize,
    seconds: u64,
    max_creates: u64,
) -> anyhow::Result<Figures> {
    let data_dir = scratch.join(format!("store-{clients}"));
    let store = Store::open(&data_dir)?;
    let figures = closed_loop(clients, seconds, max_creates, {
        let store = store.clone();
        move |c, n| {
            let store = store.clone();
            async move {
                store
                    .apply(create_command(&format!("bench-{c}-{n}")))
                    .await
                    .is_ok()
            }
        }
    })
    .await;
    drop(store);
    std::fs::remove_dir_all(&data_dir)?;
    Ok(figures)
}

fn find_etcd() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("ETCD_BIN") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|candidate| candidate.is_file())
    })
}

fn main() -> anyhow::Result<()> {
    let seconds = env_number("GC_SECONDS", 5);
    let max_creates = env_number("GC_MAX_CREATES", 5_000);
    let clients_list = env_list("GC_CLIENTS", "1,16,64");
    let stored_list = env_list("GC_STORED", "10,10000");
    let etcd = find_etcd();
    let scratch = tempfile::tempdir()?;
    let runtime = tokio::runtime::Runtime::new()?;
    println!(
        "configuration creates, closed loop, {seconds} s or {max_creates} creates per cell; etcd: {}",
        etcd.as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "not found".into())
    );
    for stored in stored_list {
        // One preloaded template per size: the store, then one start so the admin, the JWT
        // secret and the sealing key exist before the copies are taken.
        let template = scratch.path().join(format!("template-{stored}"));
        let loading = Instant::now();
        preload(&template, stored)?;
        drop(serve(&template)?);
        println!(
            "-- {stored} configurations stored (preloaded in {:.1} s)",
            loading.elapsed().as_secs_f64()
        );
        for &clients in &clients_list {
            let ours = runtime.block_on(edgeplane_cell(
                &template,
                scratch.path(),
                clients,
                seconds,
                max_creates,
            ))?;
            println!("edgeplane {clients:>3} clients  {}", ours.line());
            if let Some(binary) = &etcd {
                let theirs = runtime.block_on(etcd_cell(
                    binary,
                    scratch.path(),
                    stored,
                    clients,
                    seconds,
                    max_creates,
                ))?;
                println!("etcd      {clients:>3} clients  {}", theirs.line());
                println!(
                    "ratio     {clients:>3} clients  edgeplane/etcd throughput {:.2}",
                    ours.per_second / theirs.per_second
                );
            }
        }
        std::fs::remove_dir_all(&template)?;
    }
    println!("-- Store::apply alone");
    for &clients in &clients_list {
        let figures =
            runtime.block_on(store_cell(scratch.path(), clients, seconds, max_creates))?;
        println!("store     {clients:>3} clients  {}", figures.line());
    }
    Ok(())
}
