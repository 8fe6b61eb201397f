//! What the end-to-end benches share: a control plane in this process on loopback with
//! budgets no bench reaches, an API client, and percentiles.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use edgeplane::api::ApiState;
use edgeplane::config::{LimitSettings, Settings};
use edgeplane::model::Timestamp;
use serde_json::{Value, json};

pub(crate) const PASSWORD: &str = "bench-admin-password";
pub(crate) const REGIONS: [&str; 3] = ["North America", "Europe", "Asia Pacific"];
pub(crate) const POLL: Duration = Duration::from_millis(2);
pub(crate) const DEADLINE: Duration = Duration::from_secs(120);

/// A control plane serving on a free loopback port, with its data in a temp dir.
pub(crate) struct ControlPlane {
    pub(crate) state: ApiState,
    pub(crate) client: Client,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts one; `tune` adjusts the settings first.
    pub(crate) async fn start(tune: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = Settings::default();
        settings.server.data_dir = dir.path().to_path_buf();
        settings.server.allow_self_approval = true;
        settings.auth.jwt_secret = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        settings.limits = generous();
        tune(&mut settings);
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
            base,
            token: login["token"].as_str().expect("token").to_string(),
        };
        Self {
            state,
            client,
            server,
            _dir: dir,
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) token: String,
}

impl Client {
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
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

    /// Polls until the deployment is `wanted`; panics on another terminal status.
    pub(crate) async fn wait(&self, deployment_id: &str, wanted: &str) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let record = self
                .call(
                    reqwest::Method::GET,
                    &format!("/deployments/{deployment_id}"),
                    None,
                )
                .await;
            let status = record["status"].as_str().unwrap_or_default().to_string();
            if status == wanted {
                return record;
            }
            assert!(
                !["Completed", "Failed", "RolledBack"].contains(&status.as_str()),
                "deployment ended {status}, wanted {wanted}"
            );
            assert!(Instant::now() < deadline, "deployment never {wanted}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Creates and approves a cache rule on `/{name}/*` with `metadata`; returns its id.
    pub(crate) async fn approved_rule(&self, name: &str, metadata: Value) -> String {
        let created = self
            .call(
                reqwest::Method::POST,
                "/configurations",
                Some(json!({
                    "name": name,
                    "type": "CacheRule",
                    "content": {"pathPattern": format!("/{name}/*"), "ttl": 60, "cacheControl": "public"},
                    "metadata": metadata,
                })),
            )
            .await;
        let id = created["configurationId"].as_str().expect("id").to_string();
        self.call(
            reqwest::Method::POST,
            &format!("/configurations/{id}/approve"),
            Some(json!({})),
        )
        .await;
        id
    }

    /// A new approved version of the configuration with another `ttl`; returns the version.
    pub(crate) async fn new_version(&self, configuration_id: &str, ttl: u64) -> String {
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

    /// Waits on the deployment's event stream for `Completed`; returns when it arrived, and
    /// whether it arrived live (the replayed history carries the status at the time of the
    /// replay, so a first event already `Completed` means the stream opened too late to time
    /// the moment it became readable).
    pub(crate) async fn completed(&self, deployment_id: &str) -> (Timestamp, bool) {
        let mut response = self
            .http
            .get(format!(
                "{}/api/v1/deployments/{deployment_id}/events",
                self.base
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("event stream");
        assert!(response.status().is_success(), "event stream refused");
        let mut seen = String::new();
        let mut live = None;
        loop {
            let chunk = tokio::time::timeout(DEADLINE, response.chunk())
                .await
                .expect("the deployment never completed")
                .expect("event stream read");
            let Some(chunk) = chunk else {
                panic!("event stream ended before Completed");
            };
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if live.is_none() {
                // The status of the first event streamed.
                const KEY: &str = "\"status\":\"";
                if let Some(start) = seen.find(KEY).map(|i| i + KEY.len()) {
                    if let Some(len) = seen[start..].find('"') {
                        live = Some(&seen[start..start + len] != "Completed");
                    }
                }
            }
            if seen.contains("event: Completed") {
                return (Timestamp::now(), live.unwrap_or(false));
            }
            for bad in ["event: Failed", "event: RolledBack"] {
                assert!(!seen.contains(bad), "deployment ended: {bad}");
            }
            // Only the tail can still hold a partial line.
            if seen.len() > 4096 {
                seen.drain(..seen.len() - 64);
            }
        }
    }

    /// Starts a deployment; returns its id.
    pub(crate) async fn deploy(&self, request: Value) -> String {
        self.call(reqwest::Method::POST, "/deployments", Some(request))
            .await["deploymentId"]
            .as_str()
            .expect("deployment id")
            .to_string()
    }
}

/// The `p`-th percentile (nearest rank) of sorted figures.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// "p99" when there are enough runs for it to differ from the maximum, else "max".
pub(crate) fn p99_label(runs: usize) -> &'static str {
    if runs >= 100 { "p99" } else { "max" }
}

/// Budgets no bench reaches (limits added later keep their defaults).
fn generous() -> LimitSettings {
    let mut limits = LimitSettings::default();
    for budget in [
        &mut limits.writes_per_minute,
        &mut limits.reads_per_minute,
        &mut limits.validate_per_minute,
        &mut limits.deployment_actions_per_minute,
        &mut limits.metrics_reads_per_minute,
        &mut limits.heartbeats_per_second,
        &mut limits.public_per_minute,
        &mut limits.login_attempts_per_minute,
    ] {
        *budget = 1_000_000;
    }
    limits
}
