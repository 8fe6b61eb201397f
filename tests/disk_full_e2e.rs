//! The real binary on a small tmpfs data directory that fills up through the API: writes are
//! answered 507 and `/ready` 503 while the disk is full, resume without a restart once space
//! is freed, and every acknowledged write is there — also after `kill -9` while full.
//!
//! Mounting needs root (CI runs as root); elsewhere the test says loudly that it skipped.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_edgeplane");
const ADMIN_PASSWORD: &str = "e2e-admin-password";
/// How long a process may take to start, or the store to recover, before the test gives up.
const DEADLINE: Duration = Duration::from_secs(60);
/// Size of the data directory's filesystem.
const TMPFS_MIB: u64 = 16;

/// A tmpfs mounted for the test, unmounted when dropped (even when the test fails).
struct Tmpfs {
    mount_point: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one, or says why it cannot.
    fn mount(size_mib: u64) -> Result<Tmpfs, String> {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| format!("cannot run id: {e}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not running as root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mount_point = dir.path().join("fs");
        std::fs::create_dir(&mount_point).map_err(|e| e.to_string())?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&mount_point)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !mounted.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&mounted.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            mount_point,
            _dir: dir,
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount_point)
            .status();
    }
}

/// A running `edgeplane serve`, killed when dropped.
struct Server {
    child: Child,
    base: String,
    _stdout: Receiver<String>,
    /// Its log lines so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// How many log lines so far contain `text`.
    fn logged(&self, text: &str) -> usize {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|line| line.contains(text))
            .count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data_dir: &Path) -> Server {
    let mut command = Command::new(BINARY);
    command.args([
        "serve",
        "--data-dir",
        data_dir.to_str().expect("utf-8 path"),
        "--listen",
        "127.0.0.1:0",
    ]);
    for (name, _) in std::env::vars() {
        if name.starts_with("EDGEPLANE_") {
            command.env_remove(name);
        }
    }
    for key in [
        "WRITES_PER_MINUTE",
        "READS_PER_MINUTE",
        "PUBLIC_PER_MINUTE",
        "LOGIN_ATTEMPTS_PER_MINUTE",
    ] {
        command.env(format!("EDGEPLANE_LIMITS_{key}"), "100000");
    }
    command
        .env("EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("EDGEPLANE_LOG_LEVEL", "info")
        .env("EDGEPLANE_LOG_FORMAT", "text")
        .env("EDGEPLANE_STORE_FREE_SPACE_RESERVE", "0");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start edgeplane serve");
    let log = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().expect("stderr");
    let lines_seen = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            lines_seen.lock().expect("log").push(line);
        }
    });
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(address) = line.trim().strip_prefix("listening on ") {
                    return Server {
                        child,
                        base: format!("http://{address}"),
                        _stdout: lines,
                        log,
                    };
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("edgeplane serve did not print 'listening on' in time");
            }
        }
    }
}

struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn login(base: &str) -> Api {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        let response = client
            .post(format!("{base}/api/v1/authentication/login"))
            .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
            .send()
            .await
            .expect("login request");
        assert_eq!(response.status(), 200, "login");
        let body: Value = response.json().await.expect("login body");
        Api {
            client,
            base: base.to_string(),
            token: body["token"].as_str().expect("token").to_string(),
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Creates a configuration of about 200 KiB; answers the status and body.
    async fn create_large(&self, name: &str) -> (u16, Value) {
        let keys: Vec<String> = (0..2000)
            .map(|n| format!("$http_x_fill_{n:04}_{}", "a".repeat(80)))
            .collect();
        let content = json!({
            "pathPattern": format!("/{name}/*"),
            "ttl": 60,
            "cacheControl": "public",
            "cacheKey": keys,
        });
        let response = self
            .client
            .post(format!("{}/api/v1/configurations", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"name": name, "type": "CacheRule", "content": content}))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Writes until the disk is full; answers the names acknowledged and the refusal.
    async fn fill(&self, prefix: &str) -> (Vec<String>, Value) {
        let mut acked = Vec::new();
        for n in 0..400 {
            let name = format!("{prefix}-{n}");
            match self.create_large(&name).await {
                (201, _) => acked.push(name),
                (507, body) => return (acked, body),
                (status, body) => {
                    let mut text = body.to_string();
                    text.truncate(600);
                    panic!("unexpected answer {status} while filling: {text}")
                }
            }
        }
        panic!("the disk never filled");
    }

    async fn names(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut offset = 0;
        loop {
            let (status, page) = self
                .get(&format!("/api/v1/configurations?limit=100&offset={offset}"))
                .await;
            assert_eq!(status, 200, "{page}");
            for c in page["configurations"].as_array().expect("configurations") {
                out.insert(c["name"].as_str().expect("name").to_string());
            }
            match page["nextOffset"].as_u64() {
                Some(next) => offset = next,
                None => return out,
            }
        }
    }

    async fn ready(&self) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}/ready", self.base))
            .send()
            .await
            .expect("ready");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + DEADLINE;
        while self.ready().await.0 != 200 {
            assert!(Instant::now() < deadline, "writes never resumed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn ballast(path: &Path, mib: usize) {
    std::fs::write(path, vec![0xA5; mib * 1024 * 1024]).expect("ballast written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_directory_answers_507_and_recovers_without_a_restart() {
    let tmpfs = match Tmpfs::mount(TMPFS_MIB) {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            eprintln!("==========================================================");
            eprintln!("SKIPPED disk_full_e2e: {reason}; needs root to mount a tmpfs");
            eprintln!("SKIPPED: a full disk was NOT tested end to end");
            eprintln!("==========================================================");
            return;
        }
    };
    let data_dir = tmpfs.mount_point.join("data");
    let first_ballast = tmpfs.mount_point.join("ballast-1");
    let second_ballast = tmpfs.mount_point.join("ballast-2");
    let server = serve(&data_dir);
    let api = Api::login(&server.base).await;
    ballast(&first_ballast, 4);
    ballast(&second_ballast, 3);

    let (mut acked, refusal) = api.fill("fill").await;
    assert!(!acked.is_empty(), "nothing fitted before the disk filled");
    assert_eq!(
        refusal["error"]["code"], "INSUFFICIENT_STORAGE",
        "{refusal}"
    );
    let message = refusal["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("free"), "{message}");
    assert!(message.contains("the store file is"), "{message}");
    let (status, body) = api.ready().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE", "{body}");
    let health = api
        .client
        .get(format!("{}/health", api.base))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    // Reads are served again once the store file is reopened, while the disk is still full.
    let deadline = Instant::now() + DEADLINE;
    while api.get("/api/v1/configurations?limit=1").await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "reads never came back while full"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = api.ready().await;
    assert_eq!(status, 503, "{body}");
    let reason = body["error"]["message"].as_str().unwrap_or_default();
    assert!(reason.contains("reads are still served"), "{reason}");
    for _ in 0..5 {
        let (status, again) = api.create_large("refused-while-full").await;
        assert_eq!(status, 507, "{again}");
    }

    // Free space on the same filesystem: writes resume by themselves.
    std::fs::remove_file(&first_ballast).expect("ballast removed");
    api.wait_ready().await;
    let (status, body) = api.create_large("after-space-freed").await;
    assert_eq!(status, 201, "{body}");
    acked.push("after-space-freed".into());
    let stored = api.names().await;
    for name in &acked {
        assert!(stored.contains(name), "acknowledged {name} is missing");
    }
    assert!(!stored.contains("refused-while-full"));
    // The log tells the story once, not once per refused request.
    assert_eq!(server.logged("store writes stopped"), 1);
    assert_eq!(server.logged("store writes resumed"), 1);

    // Full again, then killed: the restart finds every acknowledged write.
    let (more, refusal) = api.fill("refill").await;
    assert_eq!(
        refusal["error"]["code"], "INSUFFICIENT_STORAGE",
        "{refusal}"
    );
    acked.extend(more);
    let mut server = server;
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reaped");
    drop(server);
    std::fs::remove_file(&second_ballast).expect("ballast removed");
    let restarted = serve(&data_dir);
    let api = Api::login(&restarted.base).await;
    api.wait_ready().await;
    let stored = api.names().await;
    for name in &acked {
        assert!(
            stored.contains(name),
            "acknowledged {name} is missing after kill -9"
        );
    }
    let (status, body) = api.create_large("after-restart").await;
    assert_eq!(status, 201, "{body}");
    drop(restarted);
    drop(tmpfs);
}
