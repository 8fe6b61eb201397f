//! The command-line client as an operator uses it: the real `edgeplane` binary against a
//! control plane on a loopback port with the nine simulated POPs — login, apply, approve, a
//! watched canary to completion and a bad change to its automatic rollback, and errors that
//! say what failed (SPEC §12.1).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use edgeplane::edge::{Fleet, SimulateOptions};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use common::{ADMIN_PASSWORD, JWT_SECRET, cache_rule, generous_limits, unique};

/// Longest any one client command may take here; a hang fails instead of blocking.
const COMMAND_DEADLINE: Duration = Duration::from_secs(90);

/// A control plane served on a loopback port with the nine simulated POPs.
struct Plane {
    base: String,
    fleet: Option<Fleet>,
    server: tokio::task::JoinHandle<()>,
    _state: edgeplane::api::ApiState,
    _dir: tempfile::TempDir,
}

impl Plane {
    async fn start() -> Plane {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = edgeplane::config::Settings::default();
        settings.server.data_dir = dir.path().to_path_buf();
        settings.server.allow_self_approval = true;
        settings.auth.jwt_secret = BASE64.encode(JWT_SECRET);
        settings.limits = generous_limits();
        settings.rollout.analysis_interval = Duration::from_millis(100);
        let state = edgeplane::app::build(
            settings,
            edgeplane::telemetry::prometheus(),
            Some(ADMIN_PASSWORD.to_string()),
        )
        .expect("app builds");
        state.set_ready(true);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let router = edgeplane::api::router(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await;
        });
        let admin = login(&base).await;
        tolerate_latency_noise(&base, &admin).await;
        let fleet = Fleet::start(SimulateOptions {
            control_plane: base.clone(),
            admin_token: admin.clone(),
            edges: 9,
            heartbeat_interval: Duration::from_millis(200),
            ..SimulateOptions::default()
        })
        .await
        .expect("fleet starts");
        let plane = Plane {
            base,
            fleet: Some(fleet),
            server,
            _state: state,
            _dir: dir,
        };
        plane.wait_all_healthy(&admin).await;
        plane
    }

    async fn wait_all_healthy(&self, admin: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        loop {
            let body: Value = client
                .get(format!(
                    "{}/api/v1/edge-locations?isHealthy=true",
                    self.base
                ))
                .bearer_auth(admin)
                .send()
                .await
                .expect("edges")
                .json()
                .await
                .expect("edges JSON");
            if body["total"] == 9 {
                return;
            }
            assert!(Instant::now() < deadline, "edges never all healthy: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(fleet) = self.fleet.take() {
            fleet.shutdown().await;
        }
        self.server.abort();
    }
}

async fn login(base: &str) -> String {
    let body: Value = reqwest::Client::new()
        .post(format!("{base}/api/v1/authentication/login"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login JSON");
    body["token"].as_str().expect("token").to_string()
}

/// Lets a canary's p99 latency be up to twice its baseline's. One simulated canary edge
/// against eight baseline edges gives a noisy p99, and these tests are about the client's flow,
/// not the latency judgement (the rollback they expect comes from a 9% error rate).
async fn tolerate_latency_noise(base: &str, token: &str) {
    let client = reqwest::Client::new();
    let url = format!("{base}/api/v1/metrics/thresholds");
    let mut thresholds: Value = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .expect("thresholds")
        .json()
        .await
        .expect("thresholds JSON");
    thresholds["maxRegression"] = json!(100.0);
    let status = client
        .put(&url)
        .bearer_auth(token)
        .json(&thresholds)
        .send()
        .await
        .expect("set thresholds")
        .status();
    assert!(status.is_success(), "set thresholds: {status}");
}

/// What one run of the binary left.
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The binary with its own config home, no colours and none of the caller's overrides.
struct Client {
    home: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Client {
    fn new() -> Client {
        Client {
            home: tempfile::tempdir().expect("home"),
            env: Vec::new(),
        }
    }

    fn with_env(mut self, name: &str, value: &str) -> Client {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    fn credentials(&self) -> PathBuf {
        self.home
            .path()
            .join("config")
            .join("edgeplane")
            .join("credentials")
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.home.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Outcome {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgeplane"));
        command
            .args(args)
            .env_remove("EDGEPLANE_URL")
            .env_remove("EDGEPLANE_TOKEN")
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env("HOME", self.home.path())
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("the binary starts");
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).await.expect("stdin");
            drop(pipe);
        }
        let output = tokio::time::timeout(COMMAND_DEADLINE, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("edgeplane {args:?} did not finish"))
            .expect("output");
        Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs and asserts exit code 0.
    async fn ok(&self, args: &[&str]) -> Outcome {
        let outcome = self.run(args, None).await;
        assert_eq!(outcome.code, 0, "edgeplane {args:?}: {outcome:?}");
        outcome
    }

    async fn login(&self, base: &str) {
        let outcome = self
            .run(
                &[
                    "login",
                    "--url",
                    base,
                    "--username",
                    "admin",
                    "--password-stdin",
                ],
                Some(&format!("{ADMIN_PASSWORD}\n")),
            )
            .await;
        assert_eq!(outcome.code, 0, "login: {outcome:?}");
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

fn cache_rule_yaml(name: &str, pattern: &str, ttl: u64, metadata: &str) -> String {
    format!(
        "name: {name}\ntype: CacheRule\ndescription: static assets\n{metadata}content:\n  pathPattern: \"{pattern}\"\n  ttl: {ttl}\n  cacheControl: \"public, max-age={ttl}\"\n  cacheKey: [\"$uri\"]\n  varyHeaders: [Accept-Encoding]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_apply_approve_and_a_watched_canary_completes() {
    let plane = Plane::start().await;
    let client = Client::new();

    client.login(&plane.base).await;
    let credentials = client.credentials();
    assert_eq!(mode(&credentials), 0o600, "credentials file mode");
    assert_eq!(
        mode(credentials.parent().expect("folder")),
        0o700,
        "folder mode"
    );
    let kept: Value =
        serde_json::from_str(&std::fs::read_to_string(&credentials).expect("read")).expect("JSON");
    assert_eq!(kept["url"], plane.base.as_str(), "{kept}");
    assert!(
        kept["token"].as_str().is_some_and(|t| !t.is_empty()),
        "{kept}"
    );

    // Apply creates by name, leaves an unchanged file alone, and adds a version on a change.
    let name = unique("cli-static");
    let pattern = format!("{}/*", unique("/cli"));
    let file = client.file("static.yaml", &cache_rule_yaml(&name, &pattern, 3600, ""));
    let file = file.to_str().expect("path");
    let created = client.ok(&["config", "apply", "-f", file]).await;
    assert!(
        created.stdout.contains("created: version 1.0.0"),
        "{created:?}"
    );
    let again = client.ok(&["config", "apply", "-f", file]).await;
    assert!(
        again.stdout.contains("unchanged at version 1.0.0"),
        "{again:?}"
    );
    client.file("static.yaml", &cache_rule_yaml(&name, &pattern, 600, ""));
    let changed = client.ok(&["config", "apply", "-f", file]).await;
    assert!(changed.stdout.contains("version 1.1.0"), "{changed:?}");

    // A next version of a stored configuration validates as applying it would: its own
    // stored version is not a conflict.
    let next = client.file("next.yaml", &cache_rule_yaml(&name, &pattern, 60, ""));
    let validated = client
        .ok(&["config", "validate", "-f", next.to_str().expect("path")])
        .await;
    assert!(validated.stdout.contains("is valid"), "{validated:?}");

    let listed = client
        .ok(&["config", "list", "--name", &name, "--output", "json"])
        .await;
    let listed: Value = serde_json::from_str(&listed.stdout).expect("list is the API's JSON");
    assert_eq!(
        listed["configurations"][0]["name"],
        name.as_str(),
        "{listed}"
    );
    assert_eq!(listed["configurations"][0]["version"], "1.1.0", "{listed}");

    let diff = client
        .ok(&["config", "diff", &name, "1.0.0", "1.1.0"])
        .await;
    assert!(diff.stdout.contains("~ /ttl: 3600 → 600"), "{diff:?}");
    assert!(
        !diff.stdout.contains('\x1b'),
        "no colours off a terminal: {diff:?}"
    );

    let shown = client
        .ok(&["config", "show", &format!("{name}@1.0.0"), "-o", "json"])
        .await;
    let shown: Value = serde_json::from_str(&shown.stdout).expect("show JSON");
    assert_eq!(shown["content"]["ttl"], 3600, "{shown}");

    client
        .ok(&["config", "approve", &format!("{name}@1.1.0")])
        .await;

    let dry = client
        .ok(&[
            "deploy",
            &format!("{name}@1.1.0"),
            "--strategy",
            "canary",
            "--monitor-duration",
            "1s",
            "--dry-run",
            "--output",
            "json",
        ])
        .await;
    let dry: Value = serde_json::from_str(&dry.stdout).expect("dry run JSON");
    assert_eq!(dry["dryRun"], true, "{dry}");
    assert_eq!(
        dry["plan"]["waves"].as_array().map(Vec::len),
        Some(3),
        "{dry}"
    );

    let watched = client
        .ok(&[
            "deploy",
            &format!("{name}@1.1.0"),
            "--strategy",
            "canary",
            "--monitor-duration",
            "1s",
            "--min-samples",
            "100",
            "--watch",
        ])
        .await;
    let lines: Vec<&str> = watched.stdout.lines().collect();
    let first = lines.first().copied().unwrap_or_default();
    let deployment_id = first
        .strip_prefix("deployment ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("first line names the deployment: {watched:?}"))
        .to_string();
    // Off a terminal: one plain line per event, then the final state.
    assert!(
        lines.iter().any(|l| l.contains("EdgeAcked")),
        "per-event lines: {watched:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("[Completed] Completed")),
        "the completion event: {watched:?}"
    );
    let last = lines.last().copied().unwrap_or_default();
    assert!(
        last.starts_with(&format!("deployment {deployment_id} Completed: 9/9")),
        "final line: {watched:?}"
    );

    let status = client
        .ok(&["rollout", "status", &deployment_id, "--output", "json"])
        .await;
    let status: Value = serde_json::from_str(&status.stdout).expect("status JSON");
    assert_eq!(status["status"], "Completed", "{status}");
    assert_eq!(status["configurationVersion"], "1.1.0", "{status}");

    // Watching a finished deployment replays it and exits with its outcome.
    let replay = client
        .ok(&["rollout", "status", &deployment_id, "--watch"])
        .await;
    assert!(replay.stdout.contains("Completed"), "{replay:?}");

    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_change_is_rolled_back_and_the_watch_exits_3() {
    let plane = Plane::start().await;
    let client = Client::new();
    client.login(&plane.base).await;

    let name = unique("cli-bad");
    let file = client.file(
        "bad.json",
        &json!({
            "name": name,
            "type": "CacheRule",
            // The simulated edges report a 9% error rate while running it (SPEC §7.6).
            "metadata": {"simulate.errorRate": "9.0"},
            "content": cache_rule(&format!("{}/*", unique("/cli-bad"))),
        })
        .to_string(),
    );
    client
        .ok(&["config", "apply", "-f", file.to_str().expect("path")])
        .await;
    client
        .ok(&["config", "approve", &format!("{name}@1.0.0")])
        .await;

    let watched = client
        .run(
            &[
                "deploy",
                &name,
                "--strategy",
                "canary",
                "--monitor-duration",
                "60s",
                "--min-samples",
                "100",
                "--watch",
                "--output",
                "json",
            ],
            None,
        )
        .await;
    assert_eq!(watched.code, 3, "a rollback exits 3: {watched:?}");
    let documents: Vec<Value> = watched
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(documents[0]["status"], "Pending", "the API's answer first");
    assert!(documents[0]["deploymentId"].is_string());
    let kinds: Vec<&str> = documents[1..]
        .iter()
        .filter_map(|d| d["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"Verdict"), "{kinds:?}");
    assert!(kinds.contains(&"RollbackStarted"), "{kinds:?}");
    assert!(kinds.contains(&"RolledBack"), "{kinds:?}");
    assert_eq!(
        documents.last().map(|d| d["status"].clone()),
        Some(json!("RolledBack"))
    );

    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_which_url_failed_or_what_the_api_said() {
    let plane = Plane::start().await;

    // Nothing to talk to yet: say how to log in.
    let nobody = Client::new();
    let outcome = nobody.run(&["config", "list"], None).await;
    assert_eq!(outcome.code, 2, "{outcome:?}");
    assert!(outcome.stderr.contains("edgeplane login"), "{outcome:?}");

    // A URL where nothing listens is named.
    let unreachable = Client::new()
        .with_env("EDGEPLANE_URL", "http://127.0.0.1:1")
        .with_env("EDGEPLANE_TOKEN", "anything");
    let outcome = unreachable.run(&["edges", "list"], None).await;
    assert_eq!(outcome.code, 1, "{outcome:?}");
    assert!(
        outcome
            .stderr
            .contains("cannot reach http://127.0.0.1:1/api/v1/edge-locations"),
        "{outcome:?}"
    );

    // A refused token: the API's code and message, and the trace id, not Rust types.
    let refused = Client::new()
        .with_env("EDGEPLANE_URL", &plane.base)
        .with_env("EDGEPLANE_TOKEN", "not-a-token");
    let outcome = refused.run(&["edges", "list"], None).await;
    assert_eq!(outcome.code, 1, "{outcome:?}");
    assert!(outcome.stderr.contains("UNAUTHORIZED (401)"), "{outcome:?}");
    assert!(outcome.stderr.contains("trace id: "), "{outcome:?}");

    // The environment alone is enough for scripts.
    let admin = login(&plane.base).await;
    let scripted = Client::new()
        .with_env("EDGEPLANE_URL", &plane.base)
        .with_env("EDGEPLANE_TOKEN", &admin);
    let edges = scripted.ok(&["edges", "list"]).await;
    assert_eq!(
        edges.stdout.lines().count(),
        10,
        "a header and nine POPs: {edges:?}"
    );
    assert!(edges.stdout.contains("us-east-1"), "{edges:?}");
    let europe = scripted
        .ok(&["edges", "list", "--region", "Europe", "-o", "json"])
        .await;
    let europe: Value = serde_json::from_str(&europe.stdout).expect("edges JSON");
    assert_eq!(europe["total"], 3, "{europe}");

    let outcome = scripted
        .run(&["rollout", "status", "deploy-none"], None)
        .await;
    assert_eq!(outcome.code, 1, "{outcome:?}");
    assert!(outcome.stderr.contains("NOT_FOUND (404)"), "{outcome:?}");
    assert!(outcome.stderr.contains("trace id: "), "{outcome:?}");

    let outcome = scripted
        .run(&["config", "show", "no-such-name"], None)
        .await;
    assert_eq!(outcome.code, 1, "{outcome:?}");
    assert!(
        outcome
            .stderr
            .contains("no configuration is named 'no-such-name'"),
        "{outcome:?}"
    );

    // Validation findings are listed, and an invalid file exits 1.
    let invalid = scripted.file(
        "invalid.yaml",
        &cache_rule_yaml(&unique("cli-invalid"), "/x/*", 0, "").replace("ttl: 0", "ttl: -5"),
    );
    let outcome = scripted
        .run(
            &["config", "validate", "-f", invalid.to_str().expect("path")],
            None,
        )
        .await;
    assert_eq!(outcome.code, 1, "{outcome:?}");
    assert!(outcome.stdout.contains("error content.ttl"), "{outcome:?}");

    // A file with a typo is bad usage.
    let typo = scripted.file("typo.yaml", "name: a\ntype: CacheRule\ncontnet: {}\n");
    let outcome = scripted
        .run(
            &["config", "apply", "-f", typo.to_str().expect("path")],
            None,
        )
        .await;
    assert_eq!(outcome.code, 2, "{outcome:?}");
    assert!(outcome.stderr.contains("contnet"), "{outcome:?}");

    // The freeze, on and off.
    scripted
        .ok(&["freeze", "on", "--reason", "incident 42"])
        .await;
    let frozen = scripted.ok(&["freeze", "status", "-o", "json"]).await;
    let frozen: Value = serde_json::from_str(&frozen.stdout).expect("freeze JSON");
    assert_eq!(frozen["frozen"], true, "{frozen}");
    assert_eq!(frozen["reason"], "incident 42", "{frozen}");
    let lifted = scripted.ok(&["freeze", "off"]).await;
    assert!(lifted.stdout.contains("not frozen"), "{lifted:?}");

    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_commands_list_pause_resume_and_roll_back_a_running_canary() {
    let plane = Plane::start().await;
    let client = Client::new();
    client.login(&plane.base).await;

    let name = unique("cli-steered");
    let file = client.file(
        "steered.yaml",
        &cache_rule_yaml(&name, &format!("{}/*", unique("/steered")), 60, ""),
    );
    client
        .ok(&["config", "apply", "-f", file.to_str().expect("path")])
        .await;
    client
        .ok(&["config", "approve", &format!("{name}@1.0.0")])
        .await;
    // A watch long enough that the canary is still running when the operator steps in.
    let started = client
        .ok(&[
            "deploy",
            &name,
            "--strategy",
            "canary",
            "--monitor-duration",
            "10m",
            "--output",
            "json",
        ])
        .await;
    let started: Value = serde_json::from_str(&started.stdout).expect("deploy JSON");
    let id = started["deploymentId"].as_str().expect("id").to_string();

    // Pausing needs a started deployment: wait (bounded) until the engine took it.
    let deadline = Instant::now() + COMMAND_DEADLINE;
    loop {
        let shown = client
            .ok(&["rollout", "status", &id, "--output", "json"])
            .await;
        let shown: Value = serde_json::from_str(&shown.stdout).expect("status JSON");
        if shown["status"] != "Pending" {
            break;
        }
        assert!(Instant::now() < deadline, "never started: {shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let listed = client.ok(&["rollout", "list", "--output", "json"]).await;
    let listed: Value = serde_json::from_str(&listed.stdout).expect("list JSON");
    assert!(
        listed["deployments"]
            .as_array()
            .expect("deployments")
            .iter()
            .any(|d| d["deploymentId"] == id.as_str()),
        "{listed}"
    );
    let table = client
        .ok(&["rollout", "list", "--configuration", &name])
        .await;
    let row = table
        .stdout
        .lines()
        .find(|line| line.starts_with(&id))
        .unwrap_or_else(|| panic!("a row for {id}: {table:?}"));
    assert!(row.contains("1.0.0") && row.contains("Canary"), "{row}");

    let refused = client
        .run(&["rollout", "pause", &id, "--reason", "why not"], None)
        .await;
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains("unexpected argument '--reason'"),
        "{refused:?}"
    );

    let paused = client.ok(&["rollout", "pause", &id]).await;
    assert_eq!(paused.stdout.trim(), format!("deployment {id} Paused"));
    let promoted = client.run(&["rollout", "promote", &id], None).await;
    assert_eq!(promoted.code, 1, "{promoted:?}");
    assert!(promoted.stderr.contains("resume it first"), "{promoted:?}");
    let resumed = client.ok(&["rollout", "resume", &id]).await;
    assert!(
        resumed.stdout.starts_with(&format!("deployment {id} "))
            && !resumed.stdout.contains("Paused"),
        "{resumed:?}"
    );

    client
        .ok(&["rollout", "rollback", &id, "--reason", "operator's call"])
        .await;
    let watched = client
        .run(&["rollout", "status", &id, "--watch"], None)
        .await;
    assert_eq!(
        watched.code, 3,
        "a rolled-back deployment exits 3: {watched:?}"
    );
    assert!(
        watched
            .stdout
            .lines()
            .last()
            .is_some_and(|line| line.starts_with(&format!("deployment {id} RolledBack"))),
        "{watched:?}"
    );
    let finished = client.run(&["rollout", "pause", &id], None).await;
    assert_eq!(
        finished.code, 1,
        "a finished deployment is not paused: {finished:?}"
    );

    plane.stop().await;
}

/// The value of `key:` in `config show`'s aligned fields.
fn shown_field<'a>(stdout: &'a str, key: &str) -> Option<&'a str> {
    stdout.lines().find_map(|line| {
        line.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_list_and_show_print_what_an_operator_reads() {
    let plane = Plane::start().await;
    let client = Client::new();
    client.login(&plane.base).await;

    let name = unique("cli-shown");
    let file = client.file(
        "shown.yaml",
        &cache_rule_yaml(
            &name,
            &format!("{}/*", unique("/shown")),
            120,
            "metadata:\n  team: web\n",
        ),
    );
    client
        .ok(&["config", "apply", "-f", file.to_str().expect("path")])
        .await;
    client
        .ok(&["config", "approve", &format!("{name}@1.0.0")])
        .await;

    let listed = client.ok(&["config", "list", "--name", &name]).await;
    let header = listed.stdout.lines().next().unwrap_or_default();
    for column in ["NAME", "TYPE", "VERSION", "STATUS", "DEPLOYED", "ID"] {
        assert!(header.contains(column), "{listed:?}");
    }
    let row = listed
        .stdout
        .lines()
        .find(|line| line.starts_with(&name))
        .unwrap_or_else(|| panic!("a row for {name}: {listed:?}"));
    let words: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &words[1..4],
        &["CacheRule", "1.0.0", "Approved"],
        "{listed:?}"
    );
    let nothing = client
        .ok(&["config", "list", "--name", &unique("no-such")])
        .await;
    assert_eq!(nothing.stdout.trim(), "no configurations");

    let shown = client.ok(&["config", "show", &name]).await;
    assert_eq!(shown_field(&shown.stdout, "name"), Some(name.as_str()));
    assert_eq!(shown_field(&shown.stdout, "type"), Some("CacheRule"));
    assert_eq!(shown_field(&shown.stdout, "version"), Some("1.0.0"));
    assert_eq!(shown_field(&shown.stdout, "status"), Some("Approved"));
    assert_eq!(
        shown_field(&shown.stdout, "description"),
        Some("static assets")
    );
    assert_eq!(shown_field(&shown.stdout, "metadata"), Some("team=web"));
    assert!(
        shown_field(&shown.stdout, "approved").is_some_and(|a| a.starts_with("by admin at ")),
        "{shown:?}"
    );
    let content = shown
        .stdout
        .split_once("content:\n")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("content follows: {shown:?}"));
    let content: Value = serde_json::from_str(content).expect("content is JSON");
    assert_eq!(content["ttl"], 120, "{content}");

    let version = client
        .ok(&["config", "show", &format!("{name}@1.0.0")])
        .await;
    assert!(
        shown_field(&version.stdout, "created").is_some_and(|c| c.starts_with("by admin at ")),
        "{version:?}"
    );
    assert!(
        shown_field(&version.stdout, "change").is_some(),
        "{version:?}"
    );
    let missing = client
        .run(&["config", "show", &format!("{name}@9.9.9")], None)
        .await;
    assert_eq!(missing.code, 1, "{missing:?}");

    plane.stop().await;
}
