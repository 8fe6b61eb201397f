//! `edgeplane demo` (SPEC §1): a control plane on a temp dir with the nine simulated POPs, a
//! good and a bad configuration already approved, and the commands to watch a canary succeed
//! and a bad change roll back.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use rand::RngCore;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::ApiState;
use crate::config::Settings;
use crate::edge::{Fleet, SimulateOptions};

/// The bootstrap admin of the demo.
pub const ADMIN_USERNAME: &str = "admin";
/// Name of the configuration whose canary succeeds.
pub const GOOD_CONFIGURATION: &str = "demo-static-assets";
/// Name of the configuration whose version makes edges report errors (SPEC §7.6).
pub const BAD_CONFIGURATION: &str = "demo-bad-change";
/// The regions of the nine POPs (SPEC §4.3), in rollout order.
pub const REGIONS: [&str; 3] = ["North America", "Europe", "Asia Pacific"];

/// How often the simulated edges heartbeat: short, so a canary's watch sees fresh metrics.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// Longest wait for the nine edges to register and heartbeat once.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// Options of `edgeplane demo`.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Address of the control plane's API (port 0: any free port).
    pub listen: SocketAddr,
    /// Runs both canaries itself and prints their timeline (`--run-scenario`).
    pub run_scenario: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            run_scenario: false,
        }
    }
}

/// A running demo. [`Demo::stop`] ends it and removes its data dir.
pub struct Demo {
    /// Base URL of the control plane, without `/api/v1`.
    pub base_url: String,
    pub admin_username: String,
    pub admin_password: String,
    pub good_configuration_id: String,
    pub bad_configuration_id: String,
    fleet: Fleet,
    server: JoinHandle<()>,
    stop_server: oneshot::Sender<()>,
    data_dir: TempDataDir,
}

impl Demo {
    /// The demo's data dir (removed by [`Demo::stop`]).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir.0
    }

    /// Stops the edges and the server (bounded) and removes the data dir.
    pub async fn stop(self) {
        self.fleet.shutdown().await;
        let _ = self.stop_server.send(());
        let mut server = self.server;
        if tokio::time::timeout(Duration::from_secs(10), &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
        drop(self.data_dir);
    }
}

/// A data dir that is removed when dropped, so a demo that fails half-way leaves nothing.
struct TempDataDir(PathBuf);

impl TempDataDir {
    fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("edgeplane-demo-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for TempDataDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(%error, dir = %self.0.display(), "cannot remove the demo data dir");
        }
    }
}

/// The demo's settings: everything fast enough to watch, self-approval allowed.
fn demo_settings(data_dir: &Path, listen: SocketAddr) -> Settings {
    let mut settings = Settings::default();
    settings.server.data_dir = data_dir.to_path_buf();
    settings.server.listen = listen;
    settings.server.allow_self_approval = true;
    settings.rollout.analysis_interval = Duration::from_secs(2);
    // Five missed heartbeats make an edge unhealthy, as with the production defaults.
    settings.edges.healthy_within = HEARTBEAT_INTERVAL * 5;
    settings.edges.push_timeout = Duration::from_secs(2);
    // A viewer polling and streaming a few deployments by hand stays within budget.
    settings.limits.reads_per_minute = settings.limits.reads_per_minute.max(600);
    settings
}

/// Builds a control plane from its settings and the admin's bootstrap password: the
/// composition root's, handed in by the binary.
pub type BuildControlPlane = fn(Settings, Option<String>) -> anyhow::Result<ApiState>;

/// Starts the control plane, the nine simulated POPs and the two configurations.
pub async fn start(options: DemoOptions, build: BuildControlPlane) -> anyhow::Result<Demo> {
    let data_dir = TempDataDir::create()?;
    let settings = demo_settings(&data_dir.0, options.listen);
    let admin_password = generate_password();
    let bootstrap = admin_password.clone();
    let state = tokio::task::spawn_blocking(move || build(settings, Some(bootstrap))).await??;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let address = listener.local_addr()?;
    let base_url = format!("http://{address}");
    state.set_ready(true);
    let (stop_server, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let served = crate::api::serve(listener, state, async move {
            let _ = stopped.await;
        })
        .await;
        if let Err(error) = served {
            tracing::error!(%error, "demo control plane stopped");
        }
    });

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let api = Api {
        client: &client,
        base: format!("{base_url}/api/v1"),
    };
    let token = match api.login(ADMIN_USERNAME, &admin_password).await {
        Ok(token) => token,
        Err(error) => {
            server.abort();
            return Err(error);
        }
    };
    let fleet = match Fleet::start(SimulateOptions {
        control_plane: base_url.clone(),
        admin_token: token.clone(),
        edges: 9,
        heartbeat_interval: HEARTBEAT_INTERVAL,
        ..SimulateOptions::default()
    })
    .await
    {
        Ok(fleet) => fleet,
        Err(error) => {
            server.abort();
            return Err(error.context("starting the simulated edges"));
        }
    };
    let prepared = async {
        api.wait_until_healthy(&token, fleet.len()).await?;
        let good = api
            .create_and_approve(
                &token,
                GOOD_CONFIGURATION,
                "Long-lived caching of static assets",
                json!({
                    "pathPattern": "/static/*",
                    "ttl": 86400,
                    "cacheControl": "public, max-age=86400",
                    "cacheKey": ["$uri"],
                    "varyHeaders": ["Accept-Encoding"],
                }),
                json!({}),
            )
            .await?;
        let bad = api
            .create_and_approve(
                &token,
                BAD_CONFIGURATION,
                "A change that makes the edges fail 9% of requests",
                json!({
                    "pathPattern": "/checkout/*",
                    "ttl": 60,
                    "cacheControl": "public, max-age=60",
                    "cacheKey": ["$uri", "$args"],
                    "varyHeaders": ["Accept-Encoding"],
                }),
                // The simulated edges report this error rate while the version is active.
                json!({"simulate.errorRate": "9.0"}),
            )
            .await?;
        anyhow::Ok((good, bad))
    }
    .await;
    let (good_configuration_id, bad_configuration_id) = match prepared {
        Ok(ids) => ids,
        Err(error) => {
            fleet.shutdown().await;
            server.abort();
            return Err(error);
        }
    };
    Ok(Demo {
        base_url,
        admin_username: ADMIN_USERNAME.to_string(),
        admin_password,
        good_configuration_id,
        bad_configuration_id,
        fleet,
        server,
        stop_server,
        data_dir,
    })
}

/// Starts the demo, prints how to use it, and runs until SIGTERM or Ctrl-C.
pub async fn run(options: DemoOptions, build: BuildControlPlane) -> anyhow::Result<()> {
    // Installed before starting so that a signal during start-up is not lost.
    let signal = crate::shutdown::signal();
    let run_scenario = options.run_scenario;
    let demo = start(options, build).await?;
    println!("{}", instructions(&demo));
    let mut signal = std::pin::pin!(signal);
    if run_scenario {
        tokio::select! {
            result = scenario(&demo) => {
                if let Err(error) = result {
                    println!("the scenario stopped: {error:#}");
                }
                println!("\nscenario done; the demo keeps running until Ctrl-C");
                (&mut signal).await;
            }
            _ = &mut signal => {}
        }
    } else {
        signal.await;
    }
    println!(
        "stopping the demo and removing {}",
        demo.data_dir().display()
    );
    demo.stop().await;
    Ok(())
}

/// What `edgeplane demo` prints: the console, the credentials and the client commands to
/// watch a canary complete and a bad change roll back.
pub fn instructions(demo: &Demo) -> String {
    let base = &demo.base_url;
    format!(
        "\
edgeplane demo is running: a control plane and the nine simulated POPs.

  console:        {base}/
  admin user:     {user}
  admin password: {password}   (shown once)
  API:            {base}/api/v1
  metrics:        {base}/metrics
  configurations: {GOOD_CONFIGURATION} and {BAD_CONFIGURATION}, both approved

Log in (the password is asked for; --password-stdin reads it from a pipe):
  edgeplane login --url {base} --username {user}

Watch a regional canary of the good configuration complete (about a minute, exit code 0):
  edgeplane deploy {GOOD_CONFIGURATION} --strategy canary --monitor-duration 10s --watch

Watch the bad change breach the error-rate threshold and roll back by itself (exit code 3):
  edgeplane deploy {BAD_CONFIGURATION} --strategy canary --monitor-duration 10s --watch

Look around:
  edgeplane edges list
  edgeplane config list
  edgeplane rollout list

Only warnings are logged here. Press Ctrl-C to stop; the demo's data dir is removed.",
        user = demo.admin_username,
        password = demo.admin_password,
    )
}

/// The demo's own log: warnings only, so the instructions and the client's output are not
/// buried under every heartbeat and push.
pub fn log_settings() -> crate::config::LogSettings {
    crate::config::LogSettings {
        level: "warn".to_string(),
        ..crate::config::LogSettings::default()
    }
}

/// The body of the printed `POST /api/v1/deployments`: a RegionalCanary over the nine POPs
/// that watches each step for ten seconds.
pub fn canary_request(configuration_id: &str) -> Value {
    json!({
        "configurationId": configuration_id,
        "strategy": "RegionalCanary",
        "targetRegions": REGIONS,
        "canaryConfig": {
            "initialPercentage": 10,
            "promotionSteps": [10, 50, 100],
            "monitorDuration": "10s",
        },
    })
}

/// Longest a scenario deployment is followed before the demo gives up on it.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(300);

/// Deploys the good configuration, then the bad one, one after the other (the bad change's
/// errors would otherwise show in the good canary's figures), printing each deployment's
/// events as they happen.
pub async fn scenario(demo: &Demo) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let api = Api {
        client: &client,
        base: format!("{}/api/v1", demo.base_url),
    };
    let token = api
        .login(&demo.admin_username, &demo.admin_password)
        .await?;
    for (name, id) in [
        (GOOD_CONFIGURATION, &demo.good_configuration_id),
        (BAD_CONFIGURATION, &demo.bad_configuration_id),
    ] {
        println!("\n== RegionalCanary of {name}");
        let started = api
            .call(
                reqwest::Method::POST,
                "/deployments",
                Some(&token),
                Some(canary_request(id)),
            )
            .await?;
        let deployment_id = started["deploymentId"]
            .as_str()
            .ok_or_else(|| anyhow!("the deployment answer has no deploymentId"))?
            .to_string();
        println!("deployment {deployment_id}");
        let began = Instant::now();
        let mut printed = 0;
        let mut last_line = String::new();
        loop {
            let deployment = api
                .call(
                    reqwest::Method::GET,
                    &format!("/deployments/{deployment_id}"),
                    Some(&token),
                    None,
                )
                .await?;
            let events = deployment["events"].as_array().cloned().unwrap_or_default();
            for event in events.iter().skip(printed) {
                // Per-edge acknowledgements would bury the decisions; those are what a
                // viewer is here to see.
                if event["locationId"].is_string() {
                    continue;
                }
                // A watch produces the same verdict every analysis interval; one says it.
                let line = timeline_line(event);
                if line != last_line {
                    println!("[{:>4}s] {line}", began.elapsed().as_secs());
                    last_line = line;
                }
            }
            printed = printed.max(events.len());
            let status = deployment["status"].as_str().unwrap_or("unknown");
            if matches!(status, "Completed" | "Failed" | "RolledBack") {
                println!("[{:>4}s] {name}: {status}", began.elapsed().as_secs());
                break;
            }
            if began.elapsed() > SCENARIO_DEADLINE {
                bail!("deployment {deployment_id} still {status} after {SCENARIO_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    Ok(())
}

/// One event as a timeline line: kind, message and the figures behind it.
fn timeline_line(event: &Value) -> String {
    let kind = event["kind"].as_str().unwrap_or("event");
    let message = event["message"].as_str().unwrap_or("");
    let figures: Vec<String> = event["data"]
        .as_object()
        .map(|data| {
            // The full verdict is for GET /metrics/deployments/{id}; the flat figures read
            // better on a terminal.
            data.iter()
                .filter(|(key, _)| key.as_str() != crate::monitor::judge::VERDICT_KEY)
                .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or("?")))
                .collect()
        })
        .unwrap_or_default();
    if figures.is_empty() {
        format!("{kind}: {message}")
    } else {
        format!("{kind}: {message} ({})", figures.join(", "))
    }
}

fn generate_password() -> String {
    let mut bytes = [0u8; 18];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The few calls of the HTTP API the demo makes, as any client would.
struct Api<'a> {
    client: &'a reqwest::Client,
    base: String,
}

impl Api<'_> {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| path.to_string())?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{path}: {status}: {text}");
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{path}: the answer is not JSON"))
    }

    async fn login(&self, username: &str, password: &str) -> anyhow::Result<String> {
        let body = json!({"username": username, "password": password});
        let answer = self
            .call(
                reqwest::Method::POST,
                "/authentication/login",
                None,
                Some(body),
            )
            .await?;
        answer["token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the login answer holds no token"))
    }

    /// Waits (bounded) until the control plane counts `expected` healthy edges.
    async fn wait_until_healthy(&self, token: &str, expected: usize) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let answer = self
                .call(
                    reqwest::Method::GET,
                    "/edge-locations?isHealthy=true",
                    Some(token),
                    None,
                )
                .await?;
            let healthy = answer["total"].as_u64().unwrap_or(0) as usize;
            if healthy >= expected {
                return Ok(());
            }
            if started.elapsed() > READY_DEADLINE {
                bail!("only {healthy} of {expected} edges became healthy");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Creates a CacheRule and approves its first version; returns its id.
    async fn create_and_approve(
        &self,
        token: &str,
        name: &str,
        description: &str,
        content: Value,
        metadata: Value,
    ) -> anyhow::Result<String> {
        let created = self
            .call(
                reqwest::Method::POST,
                "/configurations",
                Some(token),
                Some(json!({
                    "name": name,
                    "type": "CacheRule",
                    "description": description,
                    "content": content,
                    "metadata": metadata,
                })),
            )
            .await?;
        let id = created["configurationId"]
            .as_str()
            .ok_or_else(|| anyhow!("the created configuration has no configurationId"))?
            .to_string();
        self.call(
            reqwest::Method::POST,
            &format!("/configurations/{id}/approve"),
            Some(token),
            None,
        )
        .await?;
        Ok(id)
    }
}
