//! Backup and restore as an operator runs them (SPEC §9): the real binary takes a snapshot of
//! a busy server through the API, restores it into a new data dir and serves from it with the
//! same configurations, versions, users, edges and deployments; offline backup, and the
//! refusals that keep a restore from making a half store.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::process::{DEADLINE, Server, edgeplane, serve_with};
use common::{cache_rule, edge_body};

const ADMIN_PASSWORD: &str = "backup-admin-password";

/// Runs a one-shot command to its end, bounded by [`DEADLINE`].
fn run(args: &[&str]) -> Output {
    let mut child = edgeplane(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start edgeplane");
    let deadline = Instant::now() + DEADLINE;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("edgeplane {args:?} did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `digest …` a backup or restore printed.
fn printed_digest(output: &Output) -> String {
    let out = String::from_utf8_lossy(&output.stdout);
    out.split("digest ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no digest in {out}"))
        .to_string()
}

/// `serve` on port 0 with self-approval and room for the test's deployment actions.
fn start_server(data_dir: &Path) -> Server {
    let env = [
        ("EDGEPLANE_SERVER_ALLOW_SELF_APPROVAL", "true"),
        ("EDGEPLANE_LIMITS_DEPLOYMENT_ACTIONS_PER_MINUTE", "100000"),
    ]
    .map(|(name, value)| (name.to_string(), value.to_string()));
    serve_with(data_dir, "127.0.0.1:0", Some(ADMIN_PASSWORD), &env)
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn login(base: &str) -> Client {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        let response = http
            .post(format!("{base}/api/v1/authentication/login"))
            .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
            .send()
            .await
            .expect("login");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        Client {
            http,
            base: base.to_string(),
            token: body["token"].as_str().unwrap().to_string(),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.send(reqwest::Method::POST, path, Some(body)).await;
        assert!(
            (200..300).contains(&status),
            "POST {path}: {status} {answer}"
        );
        answer
    }

    async fn get(&self, path: &str) -> Value {
        let (status, answer) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {answer}");
        answer
    }

    /// Every item of a list endpoint, in the API's order.
    async fn all(&self, path: &str, plural: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut offset = 0;
        loop {
            let separator = if path.contains('?') { '&' } else { '?' };
            let page = self
                .get(&format!("{path}{separator}limit=100&offset={offset}"))
                .await;
            items.extend(page[plural].as_array().unwrap().iter().cloned());
            match page["nextOffset"].as_u64() {
                Some(next) => offset = next,
                None => return items,
            }
        }
    }

    /// What a restore must reproduce: configurations with their versions, users, edges and
    /// deployments, as the API shows them.
    async fn state(&self) -> Value {
        let mut configurations = Vec::new();
        for configuration in self.all("/configurations", "configurations").await {
            let id = configuration["configurationId"]
                .as_str()
                .unwrap()
                .to_string();
            let versions = self.get(&format!("/configurations/{id}/versions")).await;
            configurations.push(json!({"configuration": configuration, "versions": versions}));
        }
        json!({
            "configurations": configurations,
            "users": self.get("/users").await,
            "edges": self.all("/edge-locations", "edgeLocations").await,
            "deployments": self.all("/deployments", "deployments").await,
        })
    }
}

fn names(state: &Value) -> std::collections::BTreeSet<String> {
    state["configurations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["configuration"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_of_a_busy_server_restores_into_a_server_with_the_same_state() {
    let root = tempfile::tempdir().unwrap();
    let source_dir = root.path().join("source");
    let server = start_server(&source_dir);
    let client = Arc::new(Client::login(&server.base).await);

    // Content of every kind: configurations with several versions, one approved and
    // deployed, users, edges (with their sealed agent tokens).
    for i in 0..3 {
        client
            .post(
                "/users",
                json!({"username": format!("viewer{i}"), "password": "a-long-password-123", "role": "Viewer"}),
            )
            .await;
        client
            .post("/edge-locations", edge_body(&format!("edge-{i}")))
            .await;
    }
    let mut first = None;
    for i in 0..5 {
        let created = client
            .post(
                "/configurations",
                json!({"name": format!("rule-{i}"), "type": "CacheRule", "content": cache_rule(&format!("/static-{i}/*"))}),
            )
            .await;
        let id = created["configurationId"].as_str().unwrap().to_string();
        let mut content = cache_rule(&format!("/static-{i}/*"));
        content["ttl"] = json!(600);
        let (status, answer) = client
            .send(
                reqwest::Method::PUT,
                &format!("/configurations/{id}"),
                Some(json!({"content": content, "changeDescription": "shorter ttl"})),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        first.get_or_insert(id);
    }
    let first = first.unwrap();
    client
        .post(
            &format!("/configurations/{first}/approve"),
            json!({"notes": "ok"}),
        )
        .await;
    client
        .post(
            "/deployments",
            json!({"configurationId": first, "strategy": "DirectDeployment", "targetRegions": ["Europe"]}),
        )
        .await;
    let before = client.state().await;

    // Writers keep creating configurations while the backup runs.
    let running = Arc::new(AtomicBool::new(true));
    let mut writers = Vec::new();
    for w in 0..2 {
        let client = client.clone();
        let running = running.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while running.load(Ordering::Relaxed) {
                let name = format!("busy-{w}-{n}");
                client
                    .post(
                        "/configurations",
                        json!({"name": name, "type": "CacheRule", "content": cache_rule(&format!("/{name}/*"))}),
                    )
                    .await;
                n += 1;
            }
            n
        }));
    }
    // At least one write lands before the backup starts, so the backup runs among them.
    let deadline = Instant::now() + DEADLINE;
    while client
        .all("/configurations?name=busy-", "configurations")
        .await
        .is_empty()
    {
        assert!(Instant::now() < deadline, "writers made no progress");
        tokio::task::yield_now().await;
    }
    let backup_file = root.path().join("busy.snapshot");
    let base = server.base.clone();
    let token = client.token.clone();
    let out = backup_file.clone();
    let backup = tokio::task::spawn_blocking(move || {
        run(&[
            "backup",
            "--url",
            &base,
            "--token",
            &token,
            "--out",
            out.to_str().unwrap(),
        ])
    })
    .await
    .unwrap();
    assert!(backup.status.success(), "backup: {}", text(&backup));
    running.store(false, Ordering::Relaxed);
    let mut written = 0;
    for writer in writers {
        written += writer.await.unwrap();
    }
    assert!(written > 0);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the backup holds secrets: owner only");
    }
    let source_after = client.state().await;

    // The running server holds its store: an offline backup is refused, clearly.
    let offline = root.path().join("offline.snapshot");
    let refused = run(&[
        "backup",
        "--data-dir",
        source_dir.to_str().unwrap(),
        "--out",
        offline.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("running server"),
        "{}",
        text(&refused)
    );
    assert!(!offline.exists());

    // A key that does not open the sealed edge tokens is refused and leaves nothing.
    let wrong_key = root.path().join("wrong.key");
    std::fs::write(&wrong_key, "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=\n").unwrap();
    let restored_dir = root.path().join("restored");
    let wrong = run(&[
        "restore",
        "--data-dir",
        restored_dir.to_str().unwrap(),
        "--secret-key",
        wrong_key.to_str().unwrap(),
        backup_file.to_str().unwrap(),
    ]);
    assert!(!wrong.status.success());
    assert!(text(&wrong).contains("does not open"), "{}", text(&wrong));
    assert!(!restored_dir.exists());

    let key = source_dir.join("secret.key");
    let restore = run(&[
        "restore",
        "--data-dir",
        restored_dir.to_str().unwrap(),
        "--secret-key",
        key.to_str().unwrap(),
        backup_file.to_str().unwrap(),
    ]);
    assert!(restore.status.success(), "restore: {}", text(&restore));
    assert_eq!(printed_digest(&restore), printed_digest(&backup));

    // A restore never lands on a directory that holds anything.
    let again = run(&[
        "restore",
        "--data-dir",
        restored_dir.to_str().unwrap(),
        backup_file.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(text(&again).contains("not empty"), "{}", text(&again));

    // Offline backup of the restored (stopped) dir: the same content, digest for digest.
    let offline_ok = run(&[
        "backup",
        "--data-dir",
        restored_dir.to_str().unwrap(),
        "--out",
        offline.to_str().unwrap(),
    ]);
    assert!(offline_ok.status.success(), "{}", text(&offline_ok));
    assert_eq!(printed_digest(&offline_ok), printed_digest(&backup));

    assert!(server.terminate().success());
    let restored = start_server(&restored_dir);
    let restored_client = Client::login(&restored.base).await;
    let restored_state = restored_client.state().await;

    // Everything acknowledged before the backup is there; nothing the source never had is.
    assert!(names(&before).is_subset(&names(&restored_state)));
    assert!(names(&restored_state).is_subset(&names(&source_after)));
    assert_eq!(restored_state["users"], source_after["users"]);
    // Edge health moves with the engine's pushes; who the edges are and where they are
    // reached does not.
    let edges = |state: &Value| -> Vec<(Value, Value, Value)> {
        state["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["locationId"].clone(),
                    e["region"].clone(),
                    e["endpoint"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(edges(&restored_state), edges(&before));
    assert_eq!(edges(&before).len(), 3);
    let by_name = |state: &Value, name: &str| {
        state["configurations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["configuration"]["name"] == name)
            .cloned()
    };
    for name in names(&restored_state) {
        let restored_one = by_name(&restored_state, &name).unwrap();
        let source_one = by_name(&source_after, &name).unwrap();
        if name.starts_with("busy-") {
            assert_eq!(restored_one, source_one, "{name}");
        } else {
            assert_eq!(restored_one["versions"], source_one["versions"], "{name}");
            assert_eq!(
                restored_one["configuration"]["configurationId"],
                source_one["configuration"]["configurationId"]
            );
        }
    }
    let deployment_ids = |state: &Value| -> Vec<Value> {
        state["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["deploymentId"].clone())
            .collect()
    };
    assert_eq!(deployment_ids(&restored_state), deployment_ids(&before));
    assert!(!deployment_ids(&before).is_empty());
    assert!(restored.terminate().success());
}

#[test]
fn a_damaged_backup_file_is_refused_and_leaves_no_data_dir() {
    let root = tempfile::tempdir().unwrap();
    let source = root.path().join("source");
    // A store made offline (first user), then backed up offline.
    let mut add = edgeplane(&[
        "user",
        "add",
        "ops",
        "--role",
        "Operator",
        "--password-stdin",
        "--data-dir",
        source.to_str().unwrap(),
    ])
    .stdin(Stdio::piped())
    .spawn()
    .unwrap();
    {
        use std::io::Write;
        let mut stdin = add.stdin.take().unwrap();
        stdin.write_all(b"a-long-password-123\n").unwrap();
    }
    assert!(add.wait().unwrap().success());
    let file = root.path().join("store.snapshot");
    let backup = run(&[
        "backup",
        "--data-dir",
        source.to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(backup.status.success(), "{}", text(&backup));
    let bytes = std::fs::read(&file).unwrap();

    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x01;
    for (what, content) in [
        ("altered", damaged),
        ("truncated", bytes[..middle].to_vec()),
    ] {
        let broken = root.path().join(format!("{what}.snapshot"));
        std::fs::write(&broken, content).unwrap();
        let target = root.path().join(format!("from-{what}"));
        let restore = run(&[
            "restore",
            "--data-dir",
            target.to_str().unwrap(),
            broken.to_str().unwrap(),
        ]);
        assert_eq!(restore.status.code(), Some(1), "{what}: {}", text(&restore));
        assert!(!target.exists(), "{what} backup left {}", target.display());
    }
}

#[tokio::test]
async fn the_snapshot_route_streams_a_verifiable_snapshot_with_its_position_in_headers() {
    use axum::body::Body;
    use axum::http::{Request, header};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let app = common::TestApp::new().await;
    app.create_edge("edge-snapshot").await;
    let request = Request::get("/api/v1/cluster/snapshot")
        .header(header::AUTHORIZATION, format!("Bearer {}", app.admin))
        .body(Body::empty())
        .unwrap();
    let response = app.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers[header::CONTENT_TYPE], "application/octet-stream");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let meta = edgeplane::store::verify_snapshot(&mut bytes.as_ref()).unwrap();
    assert_eq!(headers["x-edgeplane-term"], meta.term.to_string().as_str());
    assert_eq!(
        headers["x-edgeplane-index"],
        meta.index.to_string().as_str()
    );
    let (_, last_index) = app
        .state
        .store()
        .reader()
        .unwrap()
        .last_log_position()
        .unwrap();
    assert_eq!(meta.index, last_index, "nothing was written since");
    assert!(meta.index >= 2, "the admin and the edge are in the log");
    assert_eq!(
        meta.tables
            .iter()
            .find(|t| t.name == "edge_locations")
            .map(|t| t.entries),
        Some(1)
    );
}
