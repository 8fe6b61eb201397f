//! Figure: DirectDeployment of one configuration to 1,000 simulated edges through the whole
//! control plane (API, engine, store, HTTP pushes), from its `createdAt` to the last edge's
//! `ackedAt` (the server's own timestamps), and the
//! BlueGreen switch-back time at the same scale (SPEC §11).
//!
//! Run with `cargo bench --bench deploy_fleet`. Control plane and edges share this process on
//! loopback, so the figures include the simulator's own work and the polling interval.

use std::time::{Duration, Instant};

use base64::Engine as _;
use edgeplane::config::{LimitSettings, Settings};
use edgeplane::edge::{Fleet, SimulateOptions};
use serde_json::{Value, json};

const EDGES: usize = 1000;
const RUNS: usize = 20;
const PASSWORD: &str = "bench-admin-password";
const REGIONS: [&str; 3] = ["North America", "Europe", "Asia Pacific"];
const POLL: Duration = Duration::from_millis(2);
const DEADLINE: Duration = Duration::from_secs(120);

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method.clone(), format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body
    }

    async fn status(&self, deployment_id: &str) -> String {
        self.call(
            reqwest::Method::GET,
            &format!("/deployments/{deployment_id}"),
            None,
        )
        .await["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Polls until the deployment is `wanted`; panics on another terminal status.
    async fn wait(&self, deployment_id: &str, wanted: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let status = self.status(deployment_id).await;
            if status == wanted {
                return;
            }
            assert!(
                !["Completed", "Failed", "RolledBack"].contains(&status.as_str()),
                "deployment ended {status}, wanted {wanted}"
            );
            assert!(Instant::now() < deadline, "deployment never {wanted}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// A new approved version of the configuration; returns the version.
    async fn new_version(&self, configuration_id: &str, ttl: u64) -> String {
        let path = format!("/configurations/{configuration_id}");
        let mut content = self.call(reqwest::Method::GET, &path, None).await["content"].clone();
        content["ttl"] = json!(ttl);
        content["cacheControl"] = json!(format!("public, max-age={ttl}"));
        let updated = self
            .call(
                reqwest::Method::PUT,
                &path,
                Some(json!({"content": content, "changeDescription": "bench"})),
            )
            .await;
        self.call(
            reqwest::Method::POST,
            &format!("{path}/approve"),
            Some(json!({})),
        )
        .await;
        updated["version"].as_str().expect("version").to_string()
    }

    async fn deploy(&self, request: Value) -> String {
        self.call(reqwest::Method::POST, "/deployments", Some(request))
            .await["deploymentId"]
            .as_str()
            .expect("deploymentId")
            .to_string()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn generous() -> LimitSettings {
    LimitSettings {
        writes_per_minute: 1_000_000,
        reads_per_minute: 1_000_000,
        validate_per_minute: 1_000_000,
        deployment_actions_per_minute: 1_000_000,
        metrics_reads_per_minute: 1_000_000,
        heartbeats_per_second: 1_000_000,
        public_per_minute: 1_000_000,
        login_attempts_per_minute: 1_000_000,
    }
}

async fn bench() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::default();
    settings.server.data_dir = dir.path().to_path_buf();
    settings.server.allow_self_approval = true;
    settings.auth.jwt_secret = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    settings.limits = generous();
    settings.rollout.analysis_interval = Duration::from_millis(100);
    let state = edgeplane::app::build(
        settings,
        edgeplane::telemetry::prometheus(),
        Some(PASSWORD.to_string()),
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

    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!("{base}/api/v1/authentication/login"))
        .json(&json!({"username": "admin", "password": PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login body");
    let client = Client {
        http,
        base: base.clone(),
        token: login["token"].as_str().expect("token").to_string(),
    };
    let fleet = Fleet::start(SimulateOptions {
        control_plane: base,
        admin_token: client.token.clone(),
        edges: EDGES,
        heartbeat_interval: Duration::from_secs(2),
        ..SimulateOptions::default()
    })
    .await
    .expect("fleet starts");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let page = client
            .call(
                reqwest::Method::GET,
                "/edge-locations?isHealthy=true&limit=1",
                None,
            )
            .await;
        if page["total"].as_u64() == Some(EDGES as u64) {
            break;
        }
        assert!(Instant::now() < deadline, "the fleet never became healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let created = client
        .call(
            reqwest::Method::POST,
            "/configurations",
            Some(json!({
                "name": "bench-cache",
                "type": "CacheRule",
                "content": {"pathPattern": "/bench/*", "ttl": 60, "cacheControl": "public, max-age=60"},
            })),
        )
        .await;
    let configuration_id = created["configurationId"]
        .as_str()
        .expect("configurationId")
        .to_string();
    client
        .call(
            reqwest::Method::POST,
            &format!("/configurations/{configuration_id}/approve"),
            Some(json!({})),
        )
        .await;

    let mut totals = Vec::with_capacity(RUNS);
    let mut version = "1.0.0".to_string();
    for run in 0..RUNS {
        if run > 0 {
            version = client.new_version(&configuration_id, 60 + run as u64).await;
        }
        let deployment_id = client
            .deploy(json!({
                "configurationId": configuration_id,
                "configurationVersion": version,
                "strategy": "DirectDeployment",
                "targetRegions": REGIONS,
            }))
            .await;
        client.wait(&deployment_id, "Completed").await;
        // SPEC §11 propagation, on the server's own clock: createdAt to the last ackedAt.
        let record = client
            .call(
                reqwest::Method::GET,
                &format!("/deployments/{deployment_id}"),
                None,
            )
            .await;
        let stamp = |value: &Value| {
            value
                .as_str()
                .and_then(edgeplane::model::Timestamp::parse_rfc3339)
        };
        let created = stamp(&record["createdAt"]).expect("createdAt");
        let last_ack = record["edges"]
            .as_object()
            .expect("edges")
            .values()
            .filter_map(|e| stamp(&e["ackedAt"]))
            .max()
            .expect("an ack");
        totals.push(Duration::from_millis(
            last_ack.millis_since(created).max(0) as u64
        ));
    }
    totals.sort();
    println!(
        "direct deployment, {EDGES} edges, createdAt to last ackedAt over {RUNS} runs: p50 {:?}, max {:?} (fleet_scale has every fleet size)",
        percentile(&totals, 50.0),
        percentile(&totals, 100.0)
    );

    let old_version = version;
    let new_version = client.new_version(&configuration_id, 3600).await;
    let deployment_id = client
        .deploy(json!({
            "configurationId": configuration_id,
            "configurationVersion": new_version,
            "strategy": "BlueGreenDeployment",
            "targetRegions": REGIONS,
            "testDuration": "1h",
        }))
        .await;
    let deadline = Instant::now() + DEADLINE;
    let locations: Vec<String> = fleet
        .endpoints()
        .into_iter()
        .map(|e| e.location_id)
        .collect();
    while !locations
        .iter()
        .all(|l| fleet.active_version(l, &configuration_id).as_deref() == Some(&new_version))
    {
        assert!(Instant::now() < deadline, "blue-green never activated");
        tokio::time::sleep(POLL).await;
    }
    let started = Instant::now();
    client
        .call(
            reqwest::Method::POST,
            &format!("/deployments/{deployment_id}/rollback"),
            Some(json!({"reason": "bench switch-back"})),
        )
        .await;
    client.wait(&deployment_id, "RolledBack").await;
    let switch_back = started.elapsed();
    let on_old = locations
        .iter()
        .filter(|l| fleet.active_version(l, &configuration_id).as_deref() == Some(&old_version))
        .count();
    println!(
        "blue-green switch-back, {EDGES} edges: {switch_back:?} ({on_old}/{EDGES} edges on the old version)"
    );

    // Automatic rollback: a canary of a version that makes its edges report 9% errors.
    // Measured on the engine's own timeline, from the failing verdict (the analysis that saw
    // the breach, at most one analysis interval after the heartbeat that carried it) to
    // `RolledBack` (the last touched edge acked back).
    let mut rollback_times = Vec::with_capacity(RUNS);
    let mut touched = 0;
    for run in 0..RUNS {
        let created = client
            .call(
                reqwest::Method::POST,
                "/configurations",
                Some(json!({
                    "name": format!("bench-degrading-{run}"),
                    "type": "CacheRule",
                    "content": {"pathPattern": format!("/degrading-{run}/*"), "ttl": 60, "cacheControl": "public"},
                    "metadata": {"simulate.errorRate": "9.0"},
                })),
            )
            .await;
        let id = created["configurationId"].as_str().expect("id").to_string();
        client
            .call(
                reqwest::Method::POST,
                &format!("/configurations/{id}/approve"),
                Some(json!({})),
            )
            .await;
        let deployment_id = client
            .deploy(json!({
                "configurationId": id,
                "strategy": "RegionalCanary",
                "targetRegions": REGIONS,
                "canaryConfig": {"promotionSteps": [10, 50, 100], "monitorDuration": "1h"},
                "rollbackConfig": {"minSamples": 100},
            }))
            .await;
        client.wait(&deployment_id, "RolledBack").await;
        let record = client
            .call(
                reqwest::Method::GET,
                &format!("/deployments/{deployment_id}"),
                None,
            )
            .await;
        let at = |kind: &str, prefix: &str| {
            record["events"]
                .as_array()
                .expect("events")
                .iter()
                .find(|e| {
                    e["kind"] == kind && e["message"].as_str().unwrap_or("").starts_with(prefix)
                })
                .and_then(|e| e["at"].as_str())
                .and_then(edgeplane::model::Timestamp::parse_rfc3339)
                .expect("event on the timeline")
        };
        let verdict = at("Verdict", "fail");
        let rolled_back = at("RolledBack", "");
        rollback_times.push(Duration::from_millis(
            rolled_back.millis_since(verdict).max(0) as u64,
        ));
        touched = record["edges"]
            .as_object()
            .map(|edges| {
                edges
                    .values()
                    .filter(|e| e["touched"] == true || e["state"] == "RolledBack")
                    .count()
            })
            .unwrap_or(0);
    }
    rollback_times.sort();
    println!(
        "automatic rollback, {EDGES} edges ({touched} canary edges), failing verdict to last edge acked back over {RUNS} runs: p50 {:?}, p99 {:?} (plus at most one analysis interval, 100 ms here, after the breaching heartbeat)",
        percentile(&rollback_times, 50.0),
        percentile(&rollback_times, 99.0)
    );

    fleet.shutdown().await;
    server.abort();
    drop(state);
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(bench());
}
