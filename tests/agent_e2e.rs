//! The real `edgeplane agent` binary, driven the way a control plane and an operator drive
//! it: pushes, NACKs, stage and activate, rollbacks over HTTP and offline, restarts,
//! authentication, and heartbeats to a fake control plane.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::routing::post;
use edgeplane::fleet::{PushClient, PushError, PushOptions, PushOutcome};
use edgeplane::model::{ConfigType, Timestamp};
use edgeplane::protocol::{ActiveConfigurations, Heartbeat, PushMode, PushRequest};
use serde_json::{Value, json};

const TOKEN: &str = "edge-token-us-east-1";
const CONFIG_ID: &str = "config-0b7c9f1e";

struct Agent {
    child: Child,
    endpoint: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_scripts(dir: &Path) -> (PathBuf, PathBuf) {
    let test = dir.join("test.sh");
    std::fs::write(
        &test,
        "if grep -q BROKEN \"$EDGEPLANE_CONFIG_FILE\"; then echo \"proxy test: marker found\"; exit 1; fi\n",
    )
    .unwrap();
    let reload = dir.join("reload.sh");
    std::fs::write(
        &reload,
        "echo \"$EDGEPLANE_CONFIG_ID $EDGEPLANE_CONFIG_VERSION\" >> \"$EDGEPLANE_STATE_DIR/reloads.log\"\n",
    )
    .unwrap();
    (test, reload)
}

fn write_config(dir: &Path, control_plane: &str, heartbeat: &str) -> PathBuf {
    let (test, reload) = write_scripts(dir);
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            r#"[agent]
location_id = "us-east-1"
listen = "127.0.0.1:0"
control_plane = "{control_plane}"
token = "{TOKEN}"
state_dir = "{state}"
test_command = "sh {test}"
reload_command = "sh {reload}"
heartbeat_interval = "{heartbeat}"
keep_versions = 3
command_timeout = "10s"
"#,
            state = dir.join("state").display(),
            test = test.display(),
            reload = reload.display(),
        ),
    )
    .unwrap();
    path
}

/// Starts the agent and waits (bounded) for its `listening on ADDR` line.
fn start(config: &Path) -> Agent {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgeplane"))
        .arg("agent")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(address) = line.strip_prefix("listening on ") {
                let _ = tx.send(address.to_owned());
            }
        }
    });
    let address = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("agent did not print its address");
    Agent {
        child,
        endpoint: format!("http://{address}"),
    }
}

fn push_client() -> PushClient {
    PushClient::new(PushOptions {
        timeout: Duration::from_secs(10),
        retries: 0,
        ..PushOptions::default()
    })
    .unwrap()
}

fn apply(version: &str, content: Value) -> PushRequest {
    PushRequest::apply(version, ConfigType::CacheRule, content, BTreeMap::new())
}

fn rule(ttl: u64) -> Value {
    json!({"pathPattern": "/static/*", "ttl": ttl, "cacheControl": "public, max-age=60"})
}

async fn active(client: &PushClient, agent: &Agent) -> ActiveConfigurations {
    client.active(&agent.endpoint, TOKEN).await.unwrap()
}

fn acked(outcome: Result<PushOutcome, PushError>) -> String {
    match outcome {
        Ok(PushOutcome::Acked { version, .. }) => version,
        other => panic!("expected an ack, got {other:?}"),
    }
}

fn nacked(outcome: Result<PushOutcome, PushError>) -> String {
    match outcome {
        Ok(PushOutcome::Nacked { reason }) => reason,
        other => panic!("expected a nack, got {other:?}"),
    }
}

#[tokio::test]
async fn pushes_rollbacks_and_restarts_keep_the_right_version_active() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9", "1h");
    let client = push_client();
    let mut agent = start(&config);
    let versions_dir = dir.path().join("state/configs").join(CONFIG_ID);

    // An acked push is on disk, whole, with no temp file left beside it.
    let v1 = apply("1.0.0", rule(60));
    assert_eq!(
        acked(client.push(&agent.endpoint, TOKEN, CONFIG_ID, &v1).await),
        "1.0.0"
    );
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(versions_dir.join("1.0.0.json")).unwrap()).unwrap();
    assert_eq!(on_disk, rule(60));
    let leftovers: Vec<_> = std::fs::read_dir(&versions_dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A version the proxy's test refuses is NACKed with the command's output; 1.0.0 stays.
    let broken = apply("1.1.0", json!({"pathPattern": "/BROKEN", "ttl": 1}));
    let reason = nacked(
        client
            .push(&agent.endpoint, TOKEN, CONFIG_ID, &broken)
            .await,
    );
    assert!(reason.contains("marker found"), "{reason}");
    let now = active(&client, &agent).await;
    assert_eq!(now.location_id, "us-east-1");
    assert_eq!(now.versions()[CONFIG_ID], "1.0.0");
    assert!(!versions_dir.join("1.1.0.json").exists());

    let v11 = apply("1.1.0", rule(120));
    assert_eq!(
        acked(client.push(&agent.endpoint, TOKEN, CONFIG_ID, &v11).await),
        "1.1.0"
    );

    // Stage beside the active version, then activate it without resending the content.
    let mut v12 = apply("1.2.0", rule(180));
    v12.mode = PushMode::Stage;
    assert_eq!(
        acked(client.push(&agent.endpoint, TOKEN, CONFIG_ID, &v12).await),
        "1.2.0"
    );
    let now = active(&client, &agent).await;
    assert_eq!(now.configurations[0].version, "1.1.0");
    assert_eq!(
        now.configurations[0].staged_version.as_deref(),
        Some("1.2.0")
    );
    let activate = PushRequest {
        content: Value::Null,
        checksum: String::new(),
        mode: PushMode::Activate,
        ..v12.clone()
    };
    assert_eq!(
        acked(
            client
                .push(&agent.endpoint, TOKEN, CONFIG_ID, &activate)
                .await
        ),
        "1.2.0"
    );
    let now = active(&client, &agent).await;
    assert_eq!(now.configurations[0].version, "1.2.0");
    assert_eq!(now.configurations[0].staged_version, None);
    let nothing_staged = PushRequest {
        version: "9.9.9".into(),
        ..activate.clone()
    };
    let reason = nacked(
        client
            .push(&agent.endpoint, TOKEN, CONFIG_ID, &nothing_staged)
            .await,
    );
    assert!(reason.contains("nothing staged"), "{reason}");

    // HTTP rollback goes one step back.
    assert_eq!(
        acked(
            client
                .rollback(&agent.endpoint, TOKEN, CONFIG_ID, None)
                .await
        ),
        "1.1.0"
    );
    assert_eq!(active(&client, &agent).await.versions()[CONFIG_ID], "1.1.0");

    // Killed hard, rolled back offline, restarted: the state on disk is what it serves.
    drop(agent);
    let output = Command::new(env!("CARGO_BIN_EXE_edgeplane"))
        .args(["agent", "--config"])
        .arg(&config)
        .args(["rollback", CONFIG_ID])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("1.0.0"),
        "{output:?}"
    );
    agent = start(&config);
    let now = active(&client, &agent).await;
    assert_eq!(now.versions()[CONFIG_ID], "1.0.0");
    // Nothing older is left to go back to: a plain rollback (as the local command sends)
    // is refused and leaves 1.0.0 active.
    let refused = reqwest::Client::new()
        .post(format!(
            "{}/edge/v1/configurations/{CONFIG_ID}/rollback",
            agent.endpoint
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 422);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("no earlier version"),
        "{body}"
    );
    assert_eq!(active(&client, &agent).await.versions()[CONFIG_ID], "1.0.0");
    // A named version from the kept history can be chosen.
    assert_eq!(
        acked(
            client
                .rollback(&agent.endpoint, TOKEN, CONFIG_ID, Some("1.2.0"))
                .await
        ),
        "1.2.0"
    );

    // The reload command ran for every activation, with the documented environment.
    let reloads = std::fs::read_to_string(dir.path().join("state/reloads.log")).unwrap();
    let lines: Vec<&str> = reloads.lines().collect();
    assert_eq!(
        lines,
        [
            "config-0b7c9f1e 1.0.0",
            "config-0b7c9f1e 1.1.0",
            "config-0b7c9f1e 1.2.0",
            "config-0b7c9f1e 1.1.0",
            "config-0b7c9f1e 1.0.0",
            "config-0b7c9f1e 1.2.0",
        ]
    );
}

#[tokio::test]
async fn pushes_need_the_edge_token_and_a_matching_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9", "1h");
    let agent = start(&config);
    let http = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only(Vec::new())
        .build()
        .unwrap();
    let url = format!("{}/edge/v1/configurations/{CONFIG_ID}", agent.endpoint);
    let body = apply("1.0.0", rule(60));

    let missing = http.put(&url).json(&body).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 401);
    let wrong = http
        .put(&url)
        .bearer_auth("edge-token-us-east-2")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let listing = http
        .get(format!("{}/edge/v1/active-configurations", agent.endpoint))
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status().as_u16(), 401);

    let mut tampered = body.clone();
    tampered.content = rule(61);
    let reply = http
        .put(&url)
        .bearer_auth(TOKEN)
        .json(&tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 422);
    let reply: Value = reply.json().await.unwrap();
    assert_eq!(reply["status"], "nacked");
    assert!(
        reply["reason"].as_str().unwrap().contains("checksum"),
        "{reply}"
    );

    let client = push_client();
    let error = client
        .push(&agent.endpoint, "not-the-token", CONFIG_ID, &body)
        .await
        .unwrap_err();
    assert!(matches!(error, PushError::Unauthorized { .. }), "{error}");
    assert!(
        client
            .active(&agent.endpoint, TOKEN)
            .await
            .unwrap()
            .configurations
            .is_empty()
    );
}

type Seen = Arc<Mutex<Vec<(String, Option<String>, Heartbeat)>>>;

async fn record_heartbeat(
    State(seen): State<Seen>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    axum::Json(heartbeat): axum::Json<Heartbeat>,
) -> axum::Json<Value> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    seen.lock().unwrap().push((id, bearer, heartbeat));
    axum::Json(json!({"receivedAt": "2026-01-01T00:00:00.000Z"}))
}

#[tokio::test]
async fn heartbeats_carry_the_token_and_the_active_versions() {
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route(
            "/api/v1/edge-locations/{id}/heartbeat",
            post(record_heartbeat),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control_plane = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &control_plane, "200ms");
    let mut agent = start(&config);
    let client = push_client();
    acked(
        client
            .push(&agent.endpoint, TOKEN, CONFIG_ID, &apply("1.0.0", rule(60)))
            .await,
    );
    acked(
        client
            .push(&agent.endpoint, TOKEN, CONFIG_ID, &apply("1.1.0", rule(90)))
            .await,
    );
    // Heartbeats sent from here on saw 1.1.0 active until the rollback: one naming 1.0.0
    // reports the rollback, not the first push.
    let pushed_at = Timestamp::now();

    // `agent rollback` with the agent up goes through the agent, so what it serves changes.
    let output = Command::new(env!("CARGO_BIN_EXE_edgeplane"))
        .args(["agent", "--config"])
        .arg(&config)
        .args(["rollback", CONFIG_ID])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(active(&client, &agent).await.versions()[CONFIG_ID], "1.0.0");

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = seen.lock().unwrap().iter().any(|(id, bearer, beat)| {
            id == "us-east-1"
                && beat.sent_at > pushed_at
                && bearer.as_deref() == Some(&format!("Bearer {TOKEN}"))
                && beat
                    .active_configurations
                    .get(CONFIG_ID)
                    .map(String::as_str)
                    == Some("1.0.0")
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no heartbeat after the rollback with the version rolled back to"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // SIGTERM stops it cleanly.
    let pid = agent.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "agent did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(!dir.path().join("state/agent.addr").exists());
}

/// A fake control-plane node recording the heartbeats it takes; `not_leader` makes it a
/// standby that answers every heartbeat 503 `NOT_LEADER` naming that URL instead.
async fn control_plane_node(not_leader: Option<String>) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = match not_leader {
        Some(leader) => axum::Router::new().route(
            "/api/v1/edge-locations/{id}/heartbeat",
            post(move || async move {
                (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    [("x-edgeplane-leader", leader)],
                    axum::Json(json!({"error": {"code": "NOT_LEADER"}})),
                )
            }),
        ),
        None => axum::Router::new()
            .route(
                "/api/v1/edge-locations/{id}/heartbeat",
                post(record_heartbeat),
            )
            .with_state(seen.clone()),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// Waits (bounded) until `seen` holds a heartbeat sent after `since`.
async fn wait_heartbeat(seen: &Seen, since: Timestamp, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !seen
        .lock()
        .unwrap()
        .iter()
        .any(|(_, _, beat)| beat.sent_at > since)
    {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn heartbeats_follow_the_primary_across_control_plane_nodes() {
    let (primary, at_primary) = control_plane_node(None).await;
    let (standby, _) = control_plane_node(Some(primary.clone())).await;
    let (promoted, at_promoted) = control_plane_node(None).await;
    let dir = tempfile::tempdir().unwrap();
    // The standby first: its NOT_LEADER answer sends the agent to the primary.
    let config = write_config(dir.path(), &format!("{standby}, {primary}"), "200ms");
    let agent = start(&config);
    wait_heartbeat(
        &at_primary,
        Timestamp(0),
        "no heartbeat reached the primary",
    )
    .await;

    // A push from a higher term names its sender: heartbeats move there.
    let client = push_client();
    client.set_term(2);
    client.set_sender_url(&promoted);
    acked(
        client
            .push(&agent.endpoint, TOKEN, CONFIG_ID, &apply("1.0.0", rule(60)))
            .await,
    );
    let pushed_at = Timestamp::now();
    wait_heartbeat(
        &at_promoted,
        Timestamp(0),
        "no heartbeat reached the node that pushed",
    )
    .await;
    let before = at_primary.lock().unwrap().len();
    wait_heartbeat(&at_promoted, pushed_at, "heartbeats stayed elsewhere").await;
    assert!(
        at_primary
            .lock()
            .unwrap()
            .iter()
            .skip(before)
            .all(|(_, _, beat)| beat.sent_at < pushed_at),
        "the old primary got heartbeats after the push"
    );

    // An older term's push is refused and names nobody.
    let old = push_client();
    old.set_term(1);
    old.set_sender_url(&primary);
    let refused = old
        .push(&agent.endpoint, TOKEN, CONFIG_ID, &apply("1.1.0", rule(90)))
        .await;
    assert!(
        matches!(refused, Err(PushError::StaleTerm { seen: 2, .. })),
        "{refused:?}"
    );
    let refused_at = Timestamp::now();
    wait_heartbeat(&at_promoted, refused_at, "heartbeats left the new primary").await;
}

#[test]
fn a_bad_config_file_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        "[agent]\nlocation_id = \"x\"\nlisten = \"127.0.0.1:0\"\ncontrol_plane = \"http://x\"\ntoken = \"t\"\nstate_dir = \"/tmp/x\"\nheartbeat_interval = \"often\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_edgeplane"))
        .arg("agent")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("agent.heartbeat_interval"));
}

#[tokio::test]
async fn the_agent_refuses_a_lower_term_and_remembers_the_highest_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9", "1h");
    let client = push_client();
    let agent = start(&config);

    client.set_term(5);
    assert_eq!(
        acked(
            client
                .push(&agent.endpoint, TOKEN, CONFIG_ID, &apply("1.0.0", rule(60)))
                .await
        ),
        "1.0.0"
    );
    client.set_term(4);
    let refused = client
        .push(
            &agent.endpoint,
            TOKEN,
            CONFIG_ID,
            &apply("1.1.0", rule(120)),
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(PushError::StaleTerm {
                ours: 4,
                seen: 5,
                ..
            })
        ),
        "{refused:?}"
    );

    // The refusal is an error in the API's shape, naming the term the edge has seen.
    let http = reqwest::Client::new();
    let response = http
        .put(format!(
            "{}/edge/v1/configurations/{CONFIG_ID}",
            agent.endpoint
        ))
        .bearer_auth(TOKEN)
        .header("X-Edgeplane-Term", "1")
        .json(&apply("1.1.0", rule(120)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    assert_eq!(response.headers()["x-edgeplane-term"], "5");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "STALE_TERM");
    assert!(
        body["error"]["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains('5'),
        "{body}"
    );
    assert!(body["error"]["traceId"].is_string() && body["error"]["timestamp"].is_string());

    // A restarted agent still knows term 5.
    drop(agent);
    let agent = start(&config);
    let refused = client
        .rollback(&agent.endpoint, TOKEN, CONFIG_ID, None)
        .await;
    assert!(
        matches!(refused, Err(PushError::StaleTerm { seen: 5, .. })),
        "{refused:?}"
    );
    assert_eq!(active(&client, &agent).await.versions()[CONFIG_ID], "1.0.0");
    client.set_term(6);
    assert_eq!(
        acked(
            client
                .push(
                    &agent.endpoint,
                    TOKEN,
                    CONFIG_ID,
                    &apply("1.1.0", rule(120))
                )
                .await
        ),
        "1.1.0"
    );
}
