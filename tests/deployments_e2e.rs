//! End-to-end deployments: the real router on a loopback port, a simulated fleet of the nine
//! POPs registered through the API, and every strategy and operator action driven over HTTP
//! the way an operator would (SPEC §2.4, §5 deployment rows, §7, §10).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use edgeplane::app::EngineSeams;
use edgeplane::edge::{Fleet, SimulateOptions};
use edgeplane::model::{Deployment, Phase, Timestamp};
use serde_json::{Value, json};

use common::{
    ADMIN_PASSWORD, HealthOnlyAnalysis, JWT_SECRET, ManualClock, assert_error, cache_rule,
    generous_limits, unique,
};

const API: &str = "/api/v1";
/// Long enough for anything the engine does on loopback; a hang fails instead of blocking.
const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// A control plane served on a loopback port, a fleet of simulated edges registered with it,
/// and an admin token.
struct Served {
    base: String,
    http: reqwest::Client,
    admin: String,
    fleet: Option<Fleet>,
    server: tokio::task::JoinHandle<()>,
    /// The in-process app, when the control plane is not the binary.
    state: Option<edgeplane::api::ApiState>,
    _dir: tempfile::TempDir,
}

type Answer = (StatusCode, HeaderMap, Value);

impl Served {
    async fn start(edges: usize) -> Served {
        Served::start_with(edges, |_| {}).await
    }

    /// As [`Served::start`], with settings adjusted by `configure` first.
    async fn start_with(
        edges: usize,
        configure: impl FnOnce(&mut edgeplane::config::Settings),
    ) -> Served {
        Served::start_seamed(edges, configure, EngineSeams::default()).await
    }

    /// As [`Served::start_with`], with the engine's clock or analysis replaced.
    async fn start_seamed(
        edges: usize,
        configure: impl FnOnce(&mut edgeplane::config::Settings),
        seams: EngineSeams,
    ) -> Served {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = edgeplane::config::Settings::default();
        settings.server.data_dir = dir.path().to_path_buf();
        settings.server.allow_self_approval = true;
        settings.auth.jwt_secret = BASE64.encode(JWT_SECRET);
        settings.limits = generous_limits();
        settings.rollout.analysis_interval = Duration::from_millis(100);
        configure(&mut settings);
        let state = edgeplane::app::build_with(
            settings,
            edgeplane::telemetry::prometheus(),
            Some(ADMIN_PASSWORD.to_string()),
            seams,
        )
        .expect("app builds");
        state.set_ready(true);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let router = edgeplane::api::router(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await;
        });
        let mut served = Served {
            base: format!("http://{address}"),
            http: reqwest::Client::new(),
            admin: String::new(),
            fleet: None,
            server,
            state: Some(state),
            _dir: dir,
        };
        served.admin = served.login("admin", ADMIN_PASSWORD).await;
        let fleet = Fleet::start(SimulateOptions {
            control_plane: served.base.clone(),
            admin_token: served.admin.clone(),
            edges,
            heartbeat_interval: Duration::from_millis(200),
            ..SimulateOptions::default()
        })
        .await
        .expect("fleet starts");
        served.fleet = Some(fleet);
        served.wait_all_healthy(edges).await;
        served
    }

    fn fleet(&self) -> &Fleet {
        self.fleet.as_ref().expect("fleet")
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self
            .http
            .request(method, format!("{}{API}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, headers, body)
    }

    async fn get(&self, path: &str) -> Value {
        let (status, _, body) = self
            .call(reqwest::Method::GET, path, &self.admin, None)
            .await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    async fn login(&self, username: &str, password: &str) -> String {
        let response = self
            .http
            .post(format!("{}{API}/authentication/login", self.base))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .expect("login");
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("login body");
        body["token"].as_str().expect("token").to_string()
    }

    async fn user_token(&self, role: &str) -> String {
        let username = unique(&role.to_lowercase());
        let (status, _, body) = self
            .post(
                "/users",
                &self.admin,
                json!({"username": username, "password": common::USER_PASSWORD, "role": role}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create user: {body}");
        self.login(&username, common::USER_PASSWORD).await
    }

    async fn wait_all_healthy(&self, edges: usize) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let body = self
                .get(&format!(
                    "/edge-locations?isHealthy=true&limit={}",
                    edges.max(100)
                ))
                .await;
            if body["total"].as_u64() == Some(edges as u64)
                || body["edgeLocations"].as_array().map(Vec::len) == Some(edges)
            {
                return;
            }
            assert!(Instant::now() < deadline, "edges never all healthy: {body}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Creates a CacheRule and approves its first version; returns its id.
    async fn approved_config(&self) -> String {
        let (status, _, body) = self
            .post(
                "/configurations",
                &self.admin,
                json!({"name": unique("e2e"), "type": "CacheRule",
                       "content": cache_rule(&format!("{}/*", unique("/e2e")))}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create configuration: {body}");
        let id = body["configurationId"].as_str().expect("id").to_string();
        self.approve(&id).await;
        id
    }

    async fn approve(&self, configuration_id: &str) {
        let (status, _, body) = self
            .post(
                &format!("/configurations/{configuration_id}/approve"),
                &self.admin,
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "approve: {body}");
    }

    /// A new version of the configuration (ttl changed), approved; returns the version.
    async fn new_version(&self, configuration_id: &str, ttl: u64) -> String {
        let current = self
            .get(&format!("/configurations/{configuration_id}"))
            .await;
        let mut content = current["content"].clone();
        content["ttl"] = json!(ttl);
        content["cacheControl"] = json!(format!("public, max-age={ttl}"));
        let (status, _, body) = self
            .call(
                reqwest::Method::PUT,
                &format!("/configurations/{configuration_id}"),
                &self.admin,
                Some(json!({"content": content, "changeDescription": "new ttl"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "update: {body}");
        self.approve(configuration_id).await;
        body["version"].as_str().expect("version").to_string()
    }

    async fn deploy(&self, request: Value) -> String {
        let (status, _, body) = self.post("/deployments", &self.admin, request).await;
        assert_eq!(status, StatusCode::ACCEPTED, "create deployment: {body}");
        body["deploymentId"]
            .as_str()
            .expect("deploymentId")
            .to_string()
    }

    async fn deployment(&self, id: &str) -> Value {
        self.get(&format!("/deployments/{id}")).await
    }

    /// Polls until the deployment's status is `wanted`; panics on another terminal status.
    async fn wait_status(&self, id: &str, wanted: &str) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let body = self.deployment(id).await;
            let status = body["status"].as_str().unwrap_or_default().to_string();
            if status == wanted {
                return body;
            }
            assert!(
                !["Completed", "Failed", "RolledBack"].contains(&status.as_str()),
                "deployment {id} ended {status}, wanted {wanted}: {body}"
            );
            assert!(
                Instant::now() < deadline,
                "deployment {id} never {wanted}: {body}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The deployment as the store keeps it, engine cursor included (in-process servers only).
    async fn stored(&self, id: &str) -> Deployment {
        let state = self.state.as_ref().expect("an in-process control plane");
        let id = id.to_string();
        state
            .store()
            .read(move |r| r.deployment(&id))
            .await
            .expect("store readable")
            .expect("deployment stored")
    }

    /// Polls the stored deployment until `wanted` holds.
    async fn wait_stored(&self, id: &str, what: &str, wanted: impl Fn(&Deployment) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let deployment = self.stored(id).await;
            if wanted(&deployment) {
                return;
            }
            assert!(
                !deployment.status.is_terminal(),
                "deployment {id} ended {:?} before {what}: {:?}",
                deployment.status,
                deployment.errors
            );
            assert!(
                Instant::now() < deadline,
                "deployment {id} never {what}: {:?}",
                deployment.engine
            );
            tokio::time::sleep(POLL).await;
        }
    }

    fn locations(&self) -> Vec<String> {
        self.fleet()
            .endpoints()
            .into_iter()
            .map(|e| e.location_id)
            .collect()
    }

    /// Polls until every edge of the fleet runs `version` of the configuration.
    async fn wait_fleet_on(&self, configuration_id: &str, version: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let off: Vec<String> = self
                .locations()
                .into_iter()
                .filter(|l| {
                    self.fleet().active_version(l, configuration_id).as_deref() != Some(version)
                })
                .collect();
            if off.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "edges not on {version}: {off:?}");
            tokio::time::sleep(POLL).await;
        }
    }

    async fn stop(mut self) {
        if let Some(fleet) = self.fleet.take() {
            fleet.shutdown().await;
        }
        self.server.abort();
        drop(self.state);
    }
}

fn direct(configuration_id: &str, version: &str) -> Value {
    json!({
        "configurationId": configuration_id,
        "configurationVersion": version,
        "strategy": "DirectDeployment",
        "targetRegions": ["North America", "Europe", "Asia Pacific"],
    })
}

fn canary(configuration_id: &str, version: &str, monitor: &str) -> Value {
    json!({
        "configurationId": configuration_id,
        "configurationVersion": version,
        "strategy": "RegionalCanary",
        "targetRegions": ["North America", "Europe", "Asia Pacific"],
        "canaryConfig": {"promotionSteps": [10, 50, 100], "monitorDuration": monitor, "autoPromote": true},
        // Watches here last a second: a simulated edge serves ~1,000 requests a second, so
        // the default of 1,000 requests per window would make the first verdicts
        // inconclusive and extend the watch by a minute. One simulated canary edge against the
        // others gives a noisy p99, so a canary may be up to twice as slow as its baseline: the
        // rollbacks these tests expect come from error rates, not from latency.
        "rollbackConfig": {"minSamples": 100, "maxRegression": 100.0},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn direct_deployment_reaches_every_edge_and_is_recorded() {
    let served = Served::start(9).await;
    let config = served.approved_config().await;

    let (status, headers, body) = served
        .post("/deployments", &served.admin, direct(&config, "1.0.0"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "Pending", "{body}");
    assert_eq!(body["progressPercentage"], 0, "{body}");
    let id = body["deploymentId"]
        .as_str()
        .expect("deploymentId")
        .to_string();
    assert!(headers.get("location").is_some());

    let done = served.wait_status(&id, "Completed").await;
    assert_eq!(done["progressPercentage"], 100, "{done}");
    assert_eq!(done["progress"]["acked"], 9, "{done}");
    assert_eq!(done["progress"]["targets"], 9, "{done}");
    for location in served.locations() {
        assert_eq!(
            served.fleet().active_version(&location, &config).as_deref(),
            Some("1.0.0"),
            "{location}"
        );
    }
    let configuration = served.get(&format!("/configurations/{config}")).await;
    assert_eq!(configuration["isDeployed"], true, "{configuration}");
    assert_eq!(
        configuration["deployedLocations"].as_array().map(Vec::len),
        Some(9),
        "{configuration}"
    );
    let edge = served.get("/edge-locations/us-east-1").await;
    let active = &edge["activeConfigurations"];
    let shows = match active {
        Value::Object(map) => map.get(&config).and_then(Value::as_str) == Some("1.0.0"),
        other => other.to_string().contains(&config) && other.to_string().contains("1.0.0"),
    };
    assert!(shows, "{edge}");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_freeze_and_dry_run() {
    let served = Served::start(9).await;
    let config = served.approved_config().await;

    // A draft version cannot be deployed.
    let current = served.get(&format!("/configurations/{config}")).await;
    let mut content = current["content"].clone();
    content["ttl"] = json!(600);
    content["cacheControl"] = json!("public, max-age=600");
    let (status, _, body) = served
        .call(
            reqwest::Method::PUT,
            &format!("/configurations/{config}"),
            &served.admin,
            Some(json!({"content": content, "changeDescription": "draft"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let draft = body["version"].as_str().expect("version").to_string();
    let refused = served
        .post("/deployments", &served.admin, direct(&config, &draft))
        .await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");

    // A dry run answers the plan and pushes nothing.
    let (status, _, plan) = served
        .post(
            "/deployments?dryRun=true",
            &served.admin,
            canary(&config, "1.0.0", "1s"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["dryRun"], true, "{plan}");
    assert!(
        plan["plan"]["waves"]
            .as_array()
            .is_some_and(|w| w.len() == 3),
        "{plan}"
    );
    for location in served.locations() {
        assert!(served.fleet().history(&location).is_empty(), "{location}");
    }
    let listed = served
        .get(&format!("/deployments?configurationId={config}"))
        .await;
    assert_eq!(listed["total"], 0, "{listed}");

    // One deployment per configuration at a time.
    let running = served.deploy(canary(&config, "1.0.0", "1h")).await;
    served.wait_status(&running, "Canary").await;
    let second = served
        .post("/deployments", &served.admin, direct(&config, "1.0.0"))
        .await;
    assert_error(&second, StatusCode::CONFLICT, "CONFLICT");

    // A freeze pauses the running deployment and refuses new ones.
    let (status, _, body) = served
        .post("/freeze", &served.admin, json!({"reason": "incident"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    served.wait_status(&running, "Paused").await;
    let other = served.approved_config().await;
    let frozen = served
        .post("/deployments", &served.admin, direct(&other, "1.0.0"))
        .await;
    assert_error(&frozen, StatusCode::CONFLICT, "FROZEN");
    let (status, _, _) = served
        .call(reqwest::Method::DELETE, "/freeze", &served.admin, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    // Lifting the freeze lets the paused deployment go on from where it stopped.
    served.wait_status(&running, "Canary").await;

    // Deleting an edge a running deployment targets is refused.
    let (status, headers, body) = served
        .call(
            reqwest::Method::DELETE,
            "/edge-locations/eu-west-1",
            &served.admin,
            None,
        )
        .await;
    assert_error(&(status, headers, body), StatusCode::CONFLICT, "CONFLICT");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_version_with_warnings_deploys_only_when_they_are_acknowledged() {
    let served = Served::start(3).await;
    // `Vary: *` validates with a warning: the rule never serves from cache.
    let mut content = cache_rule(&format!("{}/*", unique("/warned")));
    content["varyHeaders"] = json!(["*"]);
    let (status, _, body) = served
        .post(
            "/configurations",
            &served.admin,
            json!({"name": unique("warned"), "type": "CacheRule", "content": content}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "create configuration: {body}");
    let config = body["configurationId"].as_str().expect("id").to_string();
    served.approve(&config).await;

    let refused = served
        .post("/deployments", &served.admin, direct(&config, "1.0.0"))
        .await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "CONFIG_VALIDATION_ERROR");
    let details = refused.2["error"]["details"].as_array().expect("details");
    assert!(
        details.iter().any(|d| d["field"] == "content.varyHeaders"),
        "the warning is listed: {}",
        refused.2
    );
    let listed = served
        .get(&format!("/deployments?configurationId={config}"))
        .await;
    assert_eq!(listed["total"], 0, "nothing was deployed: {listed}");

    let mut acknowledged = direct(&config, "1.0.0");
    acknowledged["acknowledgeWarnings"] = json!(true);
    let id = served.deploy(acknowledged).await;
    served.wait_status(&id, "Completed").await;
    served.stop().await;
}

/// Reads the SSE stream of a deployment to its end: (event name, data) pairs.
async fn read_events(served: &Served, id: &str) -> Vec<(String, Value)> {
    let response = served
        .http
        .get(format!("{}{API}/deployments/{id}/events", served.base))
        .bearer_auth(&served.admin)
        .send()
        .await
        .expect("events");
    assert_eq!(response.status(), StatusCode::OK);
    let text = tokio::time::timeout(DEADLINE, response.text())
        .await
        .expect("the event stream ends when the deployment does")
        .expect("stream body");
    let mut events = Vec::new();
    let mut name = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("event:") {
            name = rest.trim().to_string();
        } else if let Some(rest) = line.strip_prefix("data:") {
            let data = serde_json::from_str(rest.trim()).unwrap_or(Value::Null);
            events.push((std::mem::take(&mut name), data));
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn regional_canary_completes_and_streams_its_events() {
    let served = Served::start(9).await;
    let config = served.approved_config().await;
    let id = served.deploy(canary(&config, "1.0.0", "1s")).await;
    // A live subscriber sees every event as it happens, up to the terminal one.
    let (live, done) = tokio::join!(
        read_events(&served, &id),
        served.wait_status(&id, "Completed")
    );
    served.wait_fleet_on(&config, "1.0.0").await;
    assert_eq!(done["progress"]["acked"], 9, "{done}");
    let live_last = live.last().expect("live events");
    assert_eq!(live_last.1["status"], "Completed", "{live:?}");

    // A late subscriber gets the whole history, and the stream ends at the terminal event.
    let events = read_events(&served, &id).await;
    let done = served.deployment(&id).await;
    let recorded = done["events"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(events.len(), recorded, "{events:?}");
    assert_eq!(live.len(), recorded, "{live:?}");
    let last = events.last().expect("events");
    assert_eq!(last.1["status"], "Completed", "{last:?}");

    // The last step runs everywhere: its verdicts had no baseline and say so, with no
    // baseline figures of 0.
    let metrics = served.get(&format!("/metrics/deployments/{id}")).await;
    let final_verdict = metrics["verdicts"]
        .as_array()
        .and_then(|v| v.last())
        .expect("verdicts stored");
    assert_eq!(
        final_verdict["verdict"]["note"], "no baseline: thresholds only",
        "{final_verdict}"
    );
    assert!(
        final_verdict["verdict"]["baseline"].is_null(),
        "{final_verdict}"
    );
    assert_eq!(
        metrics["baseline"]["note"], "no baseline: thresholds only",
        "{metrics}"
    );
    assert!(metrics["baseline"]["metrics"].is_null(), "{metrics}");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nack_mid_canary_rolls_back_only_the_touched_edges() {
    let served = Served::start(9).await;
    let config = served.approved_config().await;
    let first = served.deploy(direct(&config, "1.0.0")).await;
    served.wait_status(&first, "Completed").await;
    let v2 = served.new_version(&config, 7200).await;

    let id = served.deploy(canary(&config, &v2, "2s")).await;
    served.wait_status(&id, "Canary").await;
    // The first wave must have landed before the edges start refusing, or nothing is
    // touched at all.
    let deadline = Instant::now() + DEADLINE;
    while served.deployment(&id).await["progress"]["acked"].as_u64() < Some(1) {
        assert!(
            Instant::now() < deadline,
            "the first canary edge never acked"
        );
        tokio::time::sleep(POLL).await;
    }
    served.fleet().set_nack_rate(1.0);
    let ended = served.wait_status(&id, "RolledBack").await;
    served.wait_fleet_on(&config, "1.0.0").await;
    let touched: Vec<String> = served
        .locations()
        .into_iter()
        .filter(|l| {
            served
                .fleet()
                .history(l)
                .iter()
                .any(|(c, v)| c == &config && v == &v2)
        })
        .collect();
    assert!(
        !touched.is_empty() && touched.len() < 9,
        "{touched:?}: {ended}"
    );
    let detail = served
        .get(&format!("/deployments/{id}/edge-locations"))
        .await;
    // Every edge that ran the new version was rolled back; no push is left in flight.
    for edge in detail["edgeLocations"].as_array().expect("edges") {
        let state = edge["state"].as_str().unwrap_or_default();
        assert_ne!(state, "Pushed", "{detail}");
        if touched.iter().any(|t| edge["locationId"] == t.as_str()) {
            assert_eq!(state, "RolledBack", "{detail}");
        }
    }
    // Read a page at a time, the same rows in the same order.
    let all = detail["edgeLocations"].as_array().expect("edges").clone();
    let first = served
        .get(&format!("/deployments/{id}/edge-locations?limit=4"))
        .await;
    let rest = served
        .get(&format!(
            "/deployments/{id}/edge-locations?offset=4&limit=100"
        ))
        .await;
    assert_eq!(first["total"], all.len(), "{first}");
    assert_eq!(detail["total"], all.len(), "{detail}");
    let mut paged = first["edgeLocations"].as_array().expect("page").clone();
    assert_eq!(paged.len(), 4);
    paged.extend(
        rest["edgeLocations"]
            .as_array()
            .expect("page")
            .iter()
            .cloned(),
    );
    assert_eq!(paged, all);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manual_rollback_and_the_rules_on_actions() {
    let served = Served::start(9).await;
    let config = served.approved_config().await;
    let first = served.deploy(direct(&config, "1.0.0")).await;
    served.wait_status(&first, "Completed").await;
    let v2 = served.new_version(&config, 7200).await;

    let developer = served.user_token("Developer").await;
    let viewer = served.user_token("Viewer").await;
    for token in [&developer, &viewer] {
        let refused = served
            .post("/deployments", token, canary(&config, &v2, "1h"))
            .await;
        assert_error(&refused, StatusCode::FORBIDDEN, "FORBIDDEN");
    }

    let id = served.deploy(canary(&config, &v2, "1h")).await;
    served.wait_status(&id, "Canary").await;
    for token in [&developer, &viewer] {
        for action in [
            "promote",
            "pause",
            "resume",
            "rollback",
            "approve-next-region",
        ] {
            let refused = served
                .post(&format!("/deployments/{id}/{action}"), token, json!({}))
                .await;
            assert_error(&refused, StatusCode::FORBIDDEN, "FORBIDDEN");
        }
    }
    let (status, _, body) = served
        .post(
            &format!("/deployments/{id}/rollback"),
            &served.admin,
            json!({"reason": "wrong ttl"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    served.wait_status(&id, "RolledBack").await;
    served.wait_fleet_on(&config, "1.0.0").await;

    for action in [
        "promote",
        "pause",
        "resume",
        "rollback",
        "approve-next-region",
    ] {
        let refused = served
            .post(
                &format!("/deployments/{id}/{action}"),
                &served.admin,
                json!({}),
            )
            .await;
        assert_error(&refused, StatusCode::CONFLICT, "CONFLICT");
    }
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blue_green_activates_everywhere_and_rolls_back_everywhere() {
    let served = Served::start(9).await;
    let config = served.approved_config().await;
    let blue_green = |version: &str, test: &str| {
        json!({
            "configurationId": config,
            "configurationVersion": version,
            "strategy": "BlueGreenDeployment",
            "targetRegions": ["North America", "Europe", "Asia Pacific"],
            "testDuration": test,
        })
    };
    let id = served.deploy(blue_green("1.0.0", "1s")).await;
    served.wait_status(&id, "Completed").await;
    served.wait_fleet_on(&config, "1.0.0").await;

    let v2 = served.new_version(&config, 7200).await;
    let id = served.deploy(blue_green(&v2, "1h")).await;
    served.wait_fleet_on(&config, &v2).await;
    let (status, _, body) = served
        .post(
            &format!("/deployments/{id}/rollback"),
            &served.admin,
            json!({"reason": "switch back"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    served.wait_status(&id, "RolledBack").await;
    served.wait_fleet_on(&config, "1.0.0").await;
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_regional_waits_for_approval_between_regions() {
    let served = Served::start(9).await;
    let config = served.approved_config().await;
    let id = served
        .deploy(json!({
            "configurationId": config,
            "configurationVersion": "1.0.0",
            "strategy": "RollingRegional",
            "targetRegions": ["Europe", "North America", "Asia Pacific"],
            "regionDelay": "1s",
            "requireApproval": true,
        }))
        .await;
    for _ in 0..2 {
        served.wait_status(&id, "AwaitingApproval").await;
        let (status, _, body) = served
            .post(
                &format!("/deployments/{id}/approve-next-region"),
                &served.admin,
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    served.wait_status(&id, "Completed").await;
    served.wait_fleet_on(&config, "1.0.0").await;
    served.stop().await;
}

/// A running `edgeplane serve` (the real binary); killed when dropped.
struct Binary {
    child: std::process::Child,
    address: String,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on `data_dir` with the settings file `config` and waits (bounded) for
/// its `listening on ADDR` line.
fn run_binary(data_dir: &std::path::Path, config: &std::path::Path, listen: &str) -> Binary {
    use std::io::{BufRead, BufReader};
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_edgeplane"));
    for (name, _) in std::env::vars() {
        if name.starts_with("EDGEPLANE_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(["serve", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", listen])
        .env("EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("EDGEPLANE_LOG_LEVEL", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start edgeplane serve");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    // Drains stdout for the life of the process, so logging never blocks it.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).unwrap_or_else(|_| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("edgeplane serve did not print 'listening on' in time")
        });
        if let Some(address) = line.trim().strip_prefix("listening on ") {
            return Binary {
                child,
                address: address.to_string(),
            };
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deployment_resumes_after_the_control_plane_is_killed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let config_file = dir.path().join("edgeplane.toml");
    std::fs::write(
        &config_file,
        "[server]\nallow_self_approval = true\n\n\
         [rollout]\nanalysis_interval = \"100ms\"\n\n\
         [limits]\nwrites_per_minute = 100000\nreads_per_minute = 100000\n\
         validate_per_minute = 100000\ndeployment_actions_per_minute = 100000\n\
         metrics_reads_per_minute = 100000\nheartbeats_per_second = 100000\n\
         public_per_minute = 100000\nlogin_attempts_per_minute = 100000\n",
    )
    .expect("settings file");
    let first = run_binary(&data_dir, &config_file, "127.0.0.1:0");
    // The restart listens where the fleet already heartbeats.
    let address = first.address.clone();
    let mut served = Served {
        base: format!("http://{address}"),
        http: reqwest::Client::new(),
        admin: String::new(),
        fleet: None,
        server: tokio::spawn(async {}),
        state: None,
        _dir: dir,
    };
    served.admin = served.login("admin", ADMIN_PASSWORD).await;
    served.fleet = Some(
        Fleet::start(SimulateOptions {
            control_plane: served.base.clone(),
            admin_token: served.admin.clone(),
            edges: 9,
            heartbeat_interval: Duration::from_millis(200),
            ..SimulateOptions::default()
        })
        .await
        .expect("fleet starts"),
    );
    served.wait_all_healthy(9).await;
    let config = served.approved_config().await;
    let id = served.deploy(canary(&config, "1.0.0", "3s")).await;
    served.wait_status(&id, "Canary").await;

    let mut first = first;
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("reap");
    drop(first);
    let _second = run_binary(&data_dir, &config_file, &address);
    served.admin = served.login("admin", ADMIN_PASSWORD).await;

    served.wait_status(&id, "Completed").await;
    served.wait_fleet_on(&config, "1.0.0").await;
    let detail = served
        .get(&format!("/deployments/{id}/edge-locations"))
        .await;
    for edge in detail["edgeLocations"].as_array().expect("edges") {
        assert_eq!(edge["state"], "Acked", "{detail}");
    }
    served.stop().await;
}

/// A webhook receiver on loopback that hands every alert it gets to the test.
async fn webhook_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(alert): axum::Json<Value>| {
            let sender = sender.clone();
            async move {
                let _ = sender.send(alert);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://{address}/hook"), receiver)
}

/// Waits for the first alert of `kind` the webhook received.
async fn alert_of_kind(
    receiver: &mut tokio::sync::mpsc::UnboundedReceiver<Value>,
    kind: &str,
) -> Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let alert = tokio::time::timeout_at(deadline, receiver.recv())
            .await
            .unwrap_or_else(|_| panic!("no {kind} alert reached the webhook"))
            .expect("receiver open");
        if alert["kind"] == kind {
            return alert;
        }
    }
}

/// The last failing verdict of a deployment, from GET /metrics/deployments/{id}.
async fn failing_verdict(served: &Served, deployment_id: &str) -> Value {
    let metrics = served
        .get(&format!("/metrics/deployments/{deployment_id}"))
        .await;
    metrics["verdicts"]
        .as_array()
        .expect("verdicts")
        .iter()
        .rev()
        .find(|v| v["verdict"]["outcome"] == "Fail")
        .cloned()
        .unwrap_or_else(|| panic!("no failing verdict stored: {metrics}"))
}

/// Creates and approves a CacheRule whose version makes simulated edges report a 9% error
/// rate (the degradation marker of SPEC §7.6).
async fn degrading_config(served: &Served) -> String {
    let (status, _, body) = served
        .post(
            "/configurations",
            &served.admin,
            json!({"name": unique("degrading"), "type": "CacheRule",
                   "content": cache_rule(&format!("{}/*", unique("/bad"))),
                   "metadata": {"simulate.errorRate": "9.0"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "create: {body}");
    let id = body["configurationId"].as_str().expect("id").to_string();
    served.approve(&id).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degrading_canary_is_rolled_back_by_itself_with_its_evidence() {
    let (hook, mut alerts) = webhook_receiver().await;
    let served = Served::start_with(9, |settings| {
        settings.alerts.webhooks = vec![hook];
    })
    .await;
    let configuration_id = degrading_config(&served).await;
    let deployment_id = served
        .deploy(json!({
            "configurationId": configuration_id,
            "strategy": "RegionalCanary",
            "targetRegions": ["North America", "Europe", "Asia Pacific"],
            "canaryConfig": {"promotionSteps": [10, 50, 100], "monitorDuration": "60s"},
            "rollbackConfig": {"minSamples": 100}
        }))
        .await;
    let done = served.wait_status(&deployment_id, "RolledBack").await;

    // Only the canary (10% of nine: one edge) ever ran the bad version, and it is off it now.
    let ran: Vec<String> = served
        .locations()
        .into_iter()
        .filter(|l| {
            served
                .fleet()
                .history(l)
                .iter()
                .any(|(c, v)| *c == configuration_id && v == "1.0.0")
        })
        .collect();
    assert_eq!(ran.len(), 1, "only the canary ran it: {ran:?}");
    assert_eq!(
        served.fleet().active_version(&ran[0], &configuration_id),
        None
    );
    assert_eq!(done["edges"][&ran[0]]["state"], "RolledBack", "{done}");

    // The verdict names the metric and the numbers behind it.
    let verdict = failing_verdict(&served, &deployment_id).await;
    let reason = &verdict["verdict"]["reasons"][0];
    assert_eq!(reason["metric"], "ErrorRate", "{verdict}");
    assert!(
        reason["canaryValue"].as_f64().unwrap_or(0.0) > 1.0,
        "{verdict}"
    );
    assert_eq!(reason["threshold"].as_f64(), Some(1.0), "{verdict}");

    // And the webhook heard about it, with the same evidence.
    let alert = alert_of_kind(&mut alerts, "AutoRollback").await;
    assert_eq!(alert["deploymentId"], deployment_id.as_str());
    assert_eq!(alert["verdict"]["outcome"], "Fail", "{alert}");
    assert!(
        alert["text"]
            .as_str()
            .unwrap_or_default()
            .contains("AutoRollback")
    );

    // Before and after are on the record: the canary's figures once it ended.
    let metrics = served
        .get(&format!("/metrics/deployments/{deployment_id}"))
        .await;
    assert!(
        metrics["preDeploymentMetrics"]["sampleCount"].as_u64() > Some(0),
        "{metrics}"
    );
    assert!(
        metrics["postDeploymentMetrics"]["errorRate"].as_f64() > Some(1.0),
        "the post-deployment snapshot shows the damage: {metrics}"
    );

    // The configuration is not deployed anywhere.
    let configuration = served
        .get(&format!("/configurations/{configuration_id}"))
        .await;
    assert_eq!(configuration["isDeployed"], false, "{configuration}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degrading_blue_green_switches_every_edge_back_by_itself() {
    let (hook, mut alerts) = webhook_receiver().await;
    let served = Served::start_with(9, |settings| {
        settings.alerts.webhooks = vec![hook];
    })
    .await;
    let configuration_id = served.approved_config().await;
    let first = served
        .deploy(
            json!({"configurationId": configuration_id, "strategy": "DirectDeployment",
                       "targetRegions": ["North America", "Europe", "Asia Pacific"]}),
        )
        .await;
    served.wait_status(&first, "Completed").await;

    // Version 1.1.0 carries the degradation marker.
    let current = served
        .get(&format!("/configurations/{configuration_id}"))
        .await;
    let mut content = current["content"].clone();
    content["ttl"] = json!(120);
    let (status, _, body) = served
        .call(
            reqwest::Method::PUT,
            &format!("/configurations/{configuration_id}"),
            &served.admin,
            Some(json!({"content": content, "changeDescription": "bad",
                        "metadata": {"simulate.errorRate": "9.0"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "update: {body}");
    served.approve(&configuration_id).await;

    let deployment_id = served
        .deploy(json!({
            "configurationId": configuration_id,
            "strategy": "BlueGreenDeployment",
            "targetRegions": ["North America", "Europe", "Asia Pacific"],
            "testDuration": "60s",
            "rollbackConfig": {"minSamples": 100}
        }))
        .await;
    served.wait_status(&deployment_id, "RolledBack").await;
    served.wait_fleet_on(&configuration_id, "1.0.0").await;
    let verdict = failing_verdict(&served, &deployment_id).await;
    assert_eq!(
        verdict["verdict"]["reasons"][0]["metric"], "ErrorRate",
        "{verdict}"
    );
    let alert = alert_of_kind(&mut alerts, "AutoRollback").await;
    assert_eq!(alert["deploymentId"], deployment_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn geographic_waves_go_east_to_west_at_local_night_on_an_injected_clock() {
    const HOUR: Duration = Duration::from_secs(3600);
    let clock = Arc::new(ManualClock::new(Timestamp::now()));
    let served = Served::start_seamed(
        9,
        |settings| {
            // The engine's clock leaps a day ahead of the edges' wall-clock heartbeats.
            settings.edges.healthy_within = Duration::from_secs(7 * 86_400);
        },
        EngineSeams {
            clock: clock.clone(),
            // Metrics land at wall-clock time, which the engine's clock leaves behind: the
            // waves are judged on edge health (NACKs, silence), as with no metrics at all.
            analysis: Some(Arc::new(HealthOnlyAnalysis)),
        },
    )
    .await;
    let config = served.approved_config().await;
    let id = served
        .deploy(json!({
            "configurationId": config,
            "configurationVersion": "1.0.0",
            "strategy": "GeographicWave",
            "targetRegions": ["North America", "Europe", "Asia Pacific"],
            "deploymentTime": "02:00",
            "monitorDuration": "1h",
        }))
        .await;
    served
        .wait_stored(&id, "planned", |d| !d.engine.waves.is_empty())
        .await;
    let waves = served.stored(&id).await.engine.waves;
    let order: Vec<&str> = waves.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        order,
        ["Asia Pacific", "Europe", "North America"],
        "east to west"
    );

    for (index, wave) in waves.iter().enumerate() {
        let start = wave.not_before.expect("a geographic wave has a start time");
        let local_minute = (start.millis() + i64::from(wave.utc_offset_minutes) * 60_000)
            .rem_euclid(86_400_000)
            / 60_000;
        assert_eq!(local_minute, 2 * 60, "{} starts at 02:00 local", wave.name);
        served
            .wait_stored(&id, "scheduled", |d| {
                d.engine.wave as usize == index && d.engine.phase == Phase::Scheduled
            })
            .await;
        // Until its window opens, neither this wave nor a later one has been pushed.
        for later in &waves[index..] {
            for location in &later.locations {
                assert!(
                    served.fleet().history(location).is_empty(),
                    "{location} pushed before {}",
                    later.name
                );
            }
        }
        clock.set(start);
        served
            .wait_stored(&id, "watching", |d| {
                d.engine.wave as usize == index && d.engine.phase == Phase::Watching
            })
            .await;
        for location in &wave.locations {
            assert_eq!(
                served.fleet().active_version(location, &config).as_deref(),
                Some("1.0.0"),
                "{location} in {}",
                wave.name
            );
        }
        clock.advance(HOUR);
    }
    served.wait_status(&id, "Completed").await;
    served.wait_fleet_on(&config, "1.0.0").await;
    // Every edge acked within its own region's window, by the engine's clock.
    let done = served.stored(&id).await;
    for (location, edge) in &done.edges {
        let wave = &waves[edge.wave as usize];
        let (start, acked) = (wave.not_before.expect("start"), edge.acked_at);
        assert!(
            acked.is_some_and(|at| at >= start && at < start.plus_millis(3_600_000)),
            "{location} acked at {acked:?}, its window opened at {start}"
        );
    }
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degrading_canary_with_failure_action_pause_is_held_not_rolled_back() {
    let served = Served::start(9).await;
    let configuration_id = degrading_config(&served).await;
    let deployment_id = served
        .deploy(json!({
            "configurationId": configuration_id,
            "strategy": "RegionalCanary",
            "targetRegions": ["North America", "Europe", "Asia Pacific"],
            "canaryConfig": {"promotionSteps": [10, 50, 100], "monitorDuration": "60s"},
            "rollbackConfig": {"minSamples": 100},
            "failureAction": "pause",
        }))
        .await;
    served.wait_status(&deployment_id, "Paused").await;
    let on_bad_version = || -> Vec<String> {
        served
            .locations()
            .into_iter()
            .filter(|l| {
                served
                    .fleet()
                    .active_version(l, &configuration_id)
                    .as_deref()
                    == Some("1.0.0")
            })
            .collect()
    };
    let canary = on_bad_version();
    assert_eq!(canary.len(), 1, "the canary keeps the version: {canary:?}");
    let verdict = failing_verdict(&served, &deployment_id).await;
    assert_eq!(
        verdict["verdict"]["reasons"][0]["metric"], "ErrorRate",
        "{verdict}"
    );

    // Held, not reverted: the canary goes on reporting its errors for several heartbeats
    // while the deployment stays paused where it failed.
    let seen = served.fleet().heartbeats_sent(&canary[0]);
    let deadline = Instant::now() + DEADLINE;
    while served.fleet().heartbeats_sent(&canary[0]) < seen + 5 {
        assert!(Instant::now() < deadline, "the canary stopped heartbeating");
        tokio::time::sleep(POLL).await;
    }
    let held = served.deployment(&deployment_id).await;
    assert_eq!(held["status"], "Paused", "{held}");
    let kinds: Vec<&str> = held["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"Paused"), "{kinds:?}");
    assert!(!kinds.contains(&"RollbackStarted"), "{kinds:?}");
    assert_eq!(on_bad_version(), canary);
    assert_eq!(held["edges"][&canary[0]]["state"], "Acked", "{held}");
    served.stop().await;
}

/// Waits for the first alert the webhook received that `wanted` accepts.
async fn alert_matching(
    receiver: &mut tokio::sync::mpsc::UnboundedReceiver<Value>,
    what: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let alert = tokio::time::timeout_at(deadline, receiver.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} alert reached the webhook"))
            .expect("receiver open");
        if wanted(&alert) {
            return alert;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edge_that_keeps_nacking_is_quarantined_across_a_restart_until_cleared() {
    const NACKING: &str = "eu-west-1";
    let (hook, mut alerts) = webhook_receiver().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let config_file = dir.path().join("edgeplane.toml");
    std::fs::write(
        &config_file,
        format!(
            "[server]\nallow_self_approval = true\n\n\
             [rollout]\nanalysis_interval = \"100ms\"\nquarantine_after = 3\n\n\
             [alerts]\nwebhooks = [\"{hook}\"]\n\n\
             [limits]\nwrites_per_minute = 100000\nreads_per_minute = 100000\n\
             validate_per_minute = 100000\ndeployment_actions_per_minute = 100000\n\
             metrics_reads_per_minute = 100000\nheartbeats_per_second = 100000\n\
             public_per_minute = 100000\nlogin_attempts_per_minute = 100000\n"
        ),
    )
    .expect("settings file");
    let first = run_binary(&data_dir, &config_file, "127.0.0.1:0");
    let address = first.address.clone();
    let mut served = Served {
        base: format!("http://{address}"),
        http: reqwest::Client::new(),
        admin: String::new(),
        fleet: None,
        server: tokio::spawn(async {}),
        state: None,
        _dir: dir,
    };
    served.admin = served.login("admin", ADMIN_PASSWORD).await;
    served.fleet = Some(
        Fleet::start(SimulateOptions {
            control_plane: served.base.clone(),
            admin_token: served.admin.clone(),
            edges: 9,
            heartbeat_interval: Duration::from_millis(200),
            ..SimulateOptions::default()
        })
        .await
        .expect("fleet starts"),
    );
    served.wait_all_healthy(9).await;
    let config = served.approved_config().await;
    assert!(served.fleet().set_edge_nack_rate(NACKING, 1.0));
    let edge_path = format!("/edge-locations/{NACKING}");

    // Two NACKs of version 1.0.0, one per deployment.
    for _ in 0..2 {
        let id = served.deploy(direct(&config, "1.0.0")).await;
        let done = served.wait_status(&id, "Completed").await;
        assert_eq!(done["edges"][NACKING]["state"], "Nacked", "{done}");
    }
    assert_eq!(served.get(&edge_path).await["isQuarantined"], false);

    // The control plane restarts; the count does not start over.
    let mut first = first;
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("reap");
    drop(first);
    let _second = run_binary(&data_dir, &config_file, &address);
    served.admin = served.login("admin", ADMIN_PASSWORD).await;
    served.wait_all_healthy(9).await;

    let third = served.deploy(direct(&config, "1.0.0")).await;
    served.wait_status(&third, "Completed").await;
    let edge = served.get(&edge_path).await;
    assert_eq!(
        edge["isQuarantined"], true,
        "the third NACK quarantines: {edge}"
    );
    let alert = alert_matching(&mut alerts, "Quarantine", |a| a["kind"] == "Quarantine").await;
    assert!(
        alert["message"]
            .as_str()
            .unwrap_or_default()
            .contains(NACKING),
        "{alert}"
    );

    // A quarantined edge is left out of the next deployment, even once it would ack.
    served.fleet().set_edge_nack_rate(NACKING, 0.0);
    let v2 = served.new_version(&config, 7200).await;
    let left_out = served.deploy(direct(&config, &v2)).await;
    let done = served.wait_status(&left_out, "Completed").await;
    let skipped = done["skippedLocations"]
        .as_array()
        .expect("skippedLocations");
    assert!(skipped.iter().any(|l| l == NACKING), "{done}");
    assert!(
        !served
            .fleet()
            .history(NACKING)
            .iter()
            .any(|(c, v)| *c == config && *v == v2),
        "a quarantined edge is not pushed"
    );

    // An Admin lets it back in; the next deployment reaches it.
    let (status, _, body) = served
        .call(
            reqwest::Method::DELETE,
            &format!("{edge_path}/quarantine"),
            &served.admin,
            None,
        )
        .await;
    assert!(status.is_success(), "clear quarantine: {status} {body}");
    assert_eq!(served.get(&edge_path).await["isQuarantined"], false);
    let back = served.deploy(direct(&config, &v2)).await;
    served.wait_status(&back, "Completed").await;
    served.wait_fleet_on(&config, &v2).await;
    served.stop().await;
}
