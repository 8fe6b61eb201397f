//! A real edge end to end: the `edgeplane serve` binary, two `edgeplane agent`s with the nginx
//! adapter, each driving its own nginx (run as the test's user on loopback ports, in a temp
//! prefix), and origins served by the test. What the control plane deploys must change how
//! nginx answers requests, and the metrics nginx logs must come back to the control plane
//! (SPEC §6.1).
//!
//! nginx comes from the distribution; `.ci/run` installs it and sets `REQUIRE_NGINX_TEST`, so
//! there a missing nginx fails the test instead of skipping it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use common::ADMIN_PASSWORD;
use common::process::{Running, start_binary};

const API: &str = "/api/v1";
/// Bound on every wait: a hang fails the test instead of blocking it.
const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// The nginx to run: on the PATH, or where distributions put it (`/usr/sbin` is not on
/// every user's PATH).
fn nginx_binary() -> Option<String> {
    ["nginx", "/usr/sbin/nginx"]
        .into_iter()
        .find(|binary| {
            Command::new(binary)
                .arg("-v")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(str::to_owned)
}

/// Two distinct ports free now (nginx needs them in its file; they are held together so
/// they differ).
fn free_ports() -> (u16, u16) {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let (first, second) = (bind(), bind());
    let port = |l: &std::net::TcpListener| l.local_addr().expect("address").port();
    (port(&first), port(&second))
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only(Vec::new())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// An origin server: answers every path with its name, or 500 once told to fail.
struct Origin {
    url: String,
    failing: Arc<AtomicBool>,
    hits: Arc<AtomicU64>,
}

async fn origin(name: &'static str) -> Origin {
    let failing = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicU64::new(0));
    let (fail, count) = (failing.clone(), hits.clone());
    let app = axum::Router::new().fallback(move || {
        let (fail, count) = (fail.clone(), count.clone());
        async move {
            count.fetch_add(1, Ordering::Relaxed);
            let status = if fail.load(Ordering::Relaxed) {
                axum::http::StatusCode::INTERNAL_SERVER_ERROR
            } else {
                axum::http::StatusCode::OK
            };
            (status, [("x-origin", name)], name)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Origin { url, failing, hits }
}

/// An nginx master in the foreground (`daemon off`), stopped when dropped.
struct Nginx {
    child: Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // TERM lets the master stop its workers; KILL would leave them running.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nginx -p DIR -e DIR/error.log -c DIR/nginx.conf`: everything nginx writes stays in DIR.
fn nginx_command(binary: &str, dir: &Path) -> String {
    let dir = dir.display();
    format!("{binary} -p {dir} -e {dir}/error.log -c {dir}/nginx.conf")
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// One edge: an agent with the nginx adapter and the nginx it drives.
struct Edge {
    location_id: String,
    /// Where nginx serves.
    base: String,
    dir: PathBuf,
    // Dropped in this order: nginx first, then the agent.
    nginx: Nginx,
    _agent: Running,
}

impl Edge {
    async fn start(
        nginx_binary: &str,
        control_plane: &ControlPlane,
        client: &Client,
        location_id: &str,
        dir: PathBuf,
    ) -> Edge {
        std::fs::create_dir_all(dir.join("tmp")).expect("edge dir");
        let (nginx_port, tls_port) = free_ports();
        // The agent listens on a port of its own choosing; its endpoint is set once known.
        let token = control_plane
            .register_edge(location_id, "http://127.0.0.1:9")
            .await;
        let user = if running_as_root() {
            "user root;\n"
        } else {
            ""
        };
        let d = dir.display();
        std::fs::write(
            dir.join("nginx.conf"),
            format!(
                "{user}worker_processes 1;\nerror_log {d}/error.log warn;\npid {d}/nginx.pid;\n\
                 events {{ worker_connections 512; }}\n\
                 http {{\n\
                 client_body_temp_path {d}/tmp/body;\nproxy_temp_path {d}/tmp/proxy;\n\
                 fastcgi_temp_path {d}/tmp/fastcgi;\nuwsgi_temp_path {d}/tmp/uwsgi;\n\
                 scgi_temp_path {d}/tmp/scgi;\naccess_log off;\n\
                 include {d}/render/edgeplane.conf;\n}}\n"
            ),
        )
        .expect("nginx.conf");
        let nginx = nginx_command(nginx_binary, &dir);
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[agent]\nlocation_id = \"{location_id}\"\nlisten = \"127.0.0.1:0\"\n\
                 control_plane = \"{cp}\"\ntoken = \"{token}\"\nstate_dir = \"{d}/state\"\n\
                 heartbeat_interval = \"1s\"\ncommand_timeout = \"20s\"\n\
                 adapter = \"nginx\"\nrender_dir = \"{d}/render\"\n\
                 nginx_listen = \"127.0.0.1:{nginx_port}\"\nnginx_tls_listen = \"127.0.0.1:{tls}\"\n\
                 nginx_cache_dir = \"{d}/cache\"\nnginx_access_log = \"{d}/access.log\"\n\
                 test_command = \"{nginx} -t\"\nreload_command = \"{nginx} -s reload\"\n",
                cp = control_plane.base,
                tls = tls_port,
            ),
        )
        .expect("agent.toml");
        // The agent first: it renders the file that nginx.conf includes.
        let agent = start_binary(
            &["agent".as_ref(), "--config".as_ref(), config.as_os_str()],
            &[("RUST_LOG", "warn"), ("EDGEPLANE_LOG_LEVEL", "warn")],
        );
        assert!(dir.join("render/edgeplane.conf").exists());
        control_plane.set_endpoint(location_id, &agent.url()).await;
        let mut parts = nginx.split(' ');
        let child = Command::new(parts.next().expect("nginx"))
            .args(parts)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start nginx");
        let edge = Edge {
            location_id: location_id.to_string(),
            base: format!("http://127.0.0.1:{nginx_port}"),
            dir,
            nginx: Nginx { child },
            _agent: agent,
        };
        let deadline = Instant::now() + DEADLINE;
        while client.try_get(&edge.base).await.is_none() {
            assert!(
                Instant::now() < deadline,
                "nginx never answered: {}",
                edge.log()
            );
            tokio::time::sleep(POLL).await;
        }
        edge
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// Waits until nginx answers with `expected` in `X-Edgeplane-Version` and the workers of
    /// the previous configuration stopped taking connections: a reload is asynchronous, so an
    /// ACK does not mean every new connection is served by the new file yet.
    async fn wait_serving(&self, client: &Client, expected: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let answer = client.get(&format!("{}/probe", self.base)).await;
            if answer.version().contains(expected) && self.workers_serving() == 1 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never served {expected} alone: {:?}",
                self.location_id,
                answer.headers
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// nginx workers that take new connections. One told to quit by a reload renames itself
    /// "worker process is shutting down" as it closes its listening sockets.
    fn workers_serving(&self) -> usize {
        let output = Command::new("ps")
            .args(["--ppid", &self.nginx.child.id().to_string(), "-o", "args="])
            .output()
            .expect("ps");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.trim() == "nginx: worker process")
            .count()
    }
}

/// One answer from nginx, as the test saw it.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn version(&self) -> &str {
        self.header("x-edgeplane-version")
    }
}

/// A client of the edges that counts what it received, per status, for the metrics check.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    statuses: Arc<std::sync::Mutex<BTreeMap<String, BTreeMap<u16, u64>>>>,
}

impl Client {
    fn new() -> Client {
        // A fresh connection per request: a kept-alive one may be closed under the request by
        // an old worker leaving after a reload, which a browser would retry and a count of
        // answers must not have to.
        let http = reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only(Vec::new())
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        Client {
            http,
            statuses: Arc::default(),
        }
    }

    async fn get(&self, url: &str) -> Answer {
        self.try_get(url).await.expect("nginx answers")
    }

    /// None when nothing answers.
    async fn try_get(&self, url: &str) -> Option<Answer> {
        let response = self.http.get(url).send().await.ok()?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.ok()?;
        let host = url.split('/').nth(2).unwrap_or_default().to_string();
        *self
            .statuses
            .lock()
            .expect("lock")
            .entry(host)
            .or_default()
            .entry(status.as_u16())
            .or_default() += 1;
        Some(Answer {
            status,
            headers,
            body,
        })
    }

    /// Requests answered by `edge`, and how many with a 4xx or 5xx.
    fn counted(&self, edge: &Edge) -> (u64, u64) {
        let host = edge.base.trim_start_matches("http://");
        let statuses = self.statuses.lock().expect("lock");
        let Some(by_status) = statuses.get(host) else {
            return (0, 0);
        };
        let total = by_status.values().sum();
        let errors = by_status
            .iter()
            .filter(|(status, _)| **status >= 400)
            .map(|(_, n)| n)
            .sum();
        (total, errors)
    }
}

/// The control plane: the real binary on a loopback port with a temp data dir.
struct ControlPlane {
    base: String,
    http: reqwest::Client,
    admin: String,
    _process: Running,
}

impl ControlPlane {
    async fn start(dir: &Path) -> ControlPlane {
        let config = dir.join("edgeplane.toml");
        std::fs::write(
            &config,
            "[server]\nallow_self_approval = true\n\n\
             [rollout]\nanalysis_interval = \"500ms\"\n\n\
             [limits]\nwrites_per_minute = 100000\nreads_per_minute = 100000\n\
             validate_per_minute = 100000\ndeployment_actions_per_minute = 100000\n\
             metrics_reads_per_minute = 100000\nheartbeats_per_second = 100000\n\
             public_per_minute = 100000\nlogin_attempts_per_minute = 100000\n",
        )
        .expect("settings file");
        let data_dir = dir.join("data");
        let process = start_binary(
            &[
                "serve".as_ref(),
                "--config".as_ref(),
                config.as_os_str(),
                "--data-dir".as_ref(),
                data_dir.as_os_str(),
                "--listen".as_ref(),
                "127.0.0.1:0".as_ref(),
            ],
            &[
                ("EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD),
                ("EDGEPLANE_LOG_LEVEL", "warn"),
            ],
        );
        let mut control_plane = ControlPlane {
            base: process.url(),
            http: http(),
            admin: String::new(),
            _process: process,
        };
        let (status, body) = control_plane
            .call(
                reqwest::Method::POST,
                "/authentication/login",
                Some(json!({"username": "admin", "password": ADMIN_PASSWORD})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login: {body}");
        control_plane.admin = body["token"].as_str().expect("token").to_string();
        control_plane
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{API}{path}", self.base))
            .bearer_auth(&self.admin);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("control plane answers");
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// Registers an edge in Europe; returns its agent token.
    async fn register_edge(&self, location_id: &str, endpoint: &str) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/edge-locations",
                Some(json!({
                    "locationId": location_id,
                    "name": format!("nginx {location_id}"),
                    "region": "Europe",
                    "countryCode": "DE",
                    "city": "Frankfurt",
                    "endpoint": endpoint,
                })),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "register {location_id}: {body}"
        );
        body["agentToken"].as_str().expect("agentToken").to_string()
    }

    async fn set_endpoint(&self, location_id: &str, endpoint: &str) {
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                &format!("/edge-locations/{location_id}"),
                Some(json!({
                    "name": format!("nginx {location_id}"),
                    "region": "Europe",
                    "countryCode": "DE",
                    "city": "Frankfurt",
                    "type": "EdgePOP",
                    "endpoint": endpoint,
                })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "endpoint of {location_id}: {body}");
    }

    async fn wait_healthy(&self, edges: &[&Edge]) {
        let deadline = Instant::now() + DEADLINE;
        for edge in edges {
            loop {
                let body = self
                    .get(&format!("/edge-locations/{}", edge.location_id))
                    .await;
                if body["health"]["isHealthy"] == true && body["lastHeartbeat"].is_string() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} never healthy: {body}",
                    edge.location_id
                );
                tokio::time::sleep(POLL).await;
            }
        }
    }

    /// Creates and approves a configuration; returns its id.
    async fn create(&self, name: &str, config_type: &str, content: Value) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/configurations",
                Some(json!({"name": name, "type": config_type, "content": content})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create {name}: {body}");
        let id = body["configurationId"].as_str().expect("id").to_string();
        self.approve(&id).await;
        id
    }

    async fn approve(&self, id: &str) {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/configurations/{id}/approve"),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "approve {id}: {body}");
    }

    /// A new approved version with `content`; returns the version.
    async fn update(&self, id: &str, content: Value) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                &format!("/configurations/{id}"),
                Some(json!({"content": content, "changeDescription": "next"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "update {id}: {body}");
        self.approve(id).await;
        body["version"].as_str().expect("version").to_string()
    }

    async fn deploy(&self, request: Value) -> String {
        let mut request = request;
        // Loopback origins may draw address warnings; they are what this test means.
        request["acknowledgeWarnings"] = json!(true);
        let (status, body) = self
            .call(reqwest::Method::POST, "/deployments", Some(request))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "deploy: {body}");
        body["deploymentId"]
            .as_str()
            .expect("deploymentId")
            .to_string()
    }

    /// Deploys `version` of `id` to `edges` at once and waits for the outcome `wanted`.
    async fn deploy_direct(&self, id: &str, version: &str, edges: &[&Edge], wanted: &str) -> Value {
        let locations: Vec<&str> = edges.iter().map(|e| e.location_id.as_str()).collect();
        let deployment = self
            .deploy(json!({
                "configurationId": id,
                "configurationVersion": version,
                "strategy": "DirectDeployment",
                "targetLocations": locations,
            }))
            .await;
        self.wait_status(&deployment, wanted).await
    }

    async fn wait_status(&self, deployment: &str, wanted: &str) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let body = self.get(&format!("/deployments/{deployment}")).await;
            let status = body["status"].as_str().unwrap_or_default().to_string();
            if status == wanted {
                return body;
            }
            assert!(
                !["Completed", "Failed", "RolledBack"].contains(&status.as_str()),
                "deployment ended {status}, wanted {wanted}: {body}"
            );
            assert!(
                Instant::now() < deadline,
                "deployment never {wanted}: {body}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

fn routing(origins: &[(&Origin, u32)]) -> Value {
    let origins: Vec<Value> = origins
        .iter()
        .enumerate()
        .map(|(i, (origin, weight))| {
            json!({"name": format!("origin-{i}"), "endpoint": origin.url, "weight": weight, "priority": 1})
        })
        .collect();
    json!({
        "pathPattern": "/*",
        "origins": origins,
        "failoverPolicy": {"retryAttempts": 0, "failoverThreshold": 5, "circuitBreakerTimeout": "1s"},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nginx_serves_what_the_control_plane_deploys() {
    let Some(nginx) = nginx_binary() else {
        assert!(
            std::env::var_os("REQUIRE_NGINX_TEST").is_none(),
            "REQUIRE_NGINX_TEST is set but nginx cannot be run"
        );
        eprintln!("!!!!!!!! nginx is not installed: the nginx end-to-end test is SKIPPED !!!!!!!!");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let control_plane = ControlPlane::start(dir.path()).await;
    let a = origin("a").await;
    let b = origin("b").await;
    let bad = origin("bad").await;
    bad.failing.store(true, Ordering::Relaxed);
    let client = Client::new();
    let one = Edge::start(
        &nginx,
        &control_plane,
        &client,
        "nginx-1",
        dir.path().join("edge-1"),
    )
    .await;
    let two = Edge::start(
        &nginx,
        &control_plane,
        &client,
        "nginx-2",
        dir.path().join("edge-2"),
    )
    .await;
    control_plane.wait_healthy(&[&one, &two]).await;

    // Routing 80/20 across two origins, on both edges.
    let route = control_plane
        .create("routing", "RoutingRule", routing(&[(&a, 80), (&b, 20)]))
        .await;
    control_plane
        .deploy_direct(&route, "1.0.0", &[&one, &two], "Completed")
        .await;
    let route_v1 = format!("{route}=1.0.0");
    one.wait_serving(&client, &route_v1).await;
    two.wait_serving(&client, &route_v1).await;
    let mut from_a = 0;
    for i in 0..500 {
        let answer = client.get(&format!("{}/split/{i}", one.base)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        match answer.header("x-origin") {
            "a" => from_a += 1,
            "b" => {}
            other => panic!("answered by {other:?}"),
        }
    }
    assert!(
        (375..=425).contains(&from_a),
        "{from_a} of 500 went to the 80% origin"
    );

    // A cache rule: the second request for a path is a hit.
    let cache = control_plane
        .create(
            "cache",
            "CacheRule",
            json!({"pathPattern": "/cached/*", "ttl": 60, "cacheControl": "public, max-age=60"}),
        )
        .await;
    control_plane
        .deploy_direct(&cache, "1.0.0", &[&one], "Completed")
        .await;
    one.wait_serving(&client, &format!("{cache}=1.0.0")).await;
    let hits_before = a.hits.load(Ordering::Relaxed) + b.hits.load(Ordering::Relaxed);
    let first = client.get(&format!("{}/cached/item", one.base)).await;
    let second = client.get(&format!("{}/cached/item", one.base)).await;
    assert_eq!(first.header("x-cache-status"), "MISS");
    assert_eq!(second.header("x-cache-status"), "HIT");
    assert_eq!(second.header("cache-control"), "public, max-age=60");
    assert_eq!(second.body, first.body);
    let hits_after = a.hits.load(Ordering::Relaxed) + b.hits.load(Ordering::Relaxed);
    assert_eq!(
        hits_after - hits_before,
        1,
        "the hit never reached an origin"
    );

    // A security rule denying the client's address, on a path holding a quote.
    let security = control_plane
        .create(
            "security",
            "SecurityRule",
            json!({"pathPattern": "/pri\"vate/*", "ipFiltering": {"denylist": ["127.0.0.1"]}}),
        )
        .await;
    control_plane
        .deploy_direct(&security, "1.0.0", &[&one], "Completed")
        .await;
    one.wait_serving(&client, &format!("{security}=1.0.0"))
        .await;
    let denied = client.get(&format!("{}/pri%22vate/x", one.base)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let open = client.get(&format!("{}/private/x", one.base)).await;
    assert_eq!(open.status, StatusCode::OK);

    // Response headers, one of which reads like directives: it stays a value.
    let headers = control_plane
        .create(
            "headers",
            "ResponseModification",
            json!({"pathPattern": "/*", "addHeaders": {
                "X-Edge-Test": "a; return 200 x",
                "X-Quoted": "say \"hi\" to $host }",
            }}),
        )
        .await;
    control_plane
        .deploy_direct(&headers, "1.0.0", &[&one], "Completed")
        .await;
    one.wait_serving(&client, &format!("{headers}=1.0.0")).await;
    let answer = client.get(&format!("{}/split/headers", one.base)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        ["a", "b"].contains(&answer.body.as_str()),
        "{}",
        answer.body
    );
    assert_eq!(answer.header("x-edge-test"), "a; return 200 x");
    assert_eq!(answer.header("x-quoted"), "say \"hi\" to $host }");

    // A version nginx refuses: NACKed with nginx's own words, the previous one serving.
    let mut refused = routing(&[(&a, 80), (&b, 20)]);
    refused["pathRewrite"] = json!({"from": "(?-u:^/old/)(.*)", "to": "/new/$1"});
    let refused_version = control_plane.update(&route, refused).await;
    let failed = control_plane
        .deploy_direct(&route, &refused_version, &[&one], "Failed")
        .await;
    let detail = control_plane
        .get(&format!(
            "/deployments/{}/edge-locations",
            failed["deploymentId"].as_str().expect("id")
        ))
        .await;
    let text = format!("{failed}{detail}");
    assert!(
        text.contains("pcre") && text.contains("test failed"),
        "{text}"
    );
    let answer = client
        .get(&format!("{}/split/after-refusal", one.base))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.version().contains(&route_v1), "{}", answer.version());

    // What nginx logged reaches the control plane: every request, 4xx included.
    let (sent, errors) = client.counted(&one);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let metrics = control_plane
            .get(&format!(
                "/metrics/edge-locations/{}?window=1h",
                one.location_id
            ))
            .await;
        if metrics["requestsTotal"] == sent && metrics["errorsTotal"] == errors {
            assert_eq!(metrics["cacheHits"], 1, "{metrics}");
            assert_eq!(metrics["cacheMisses"], 1, "{metrics}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sent {sent} requests ({errors} errors), the control plane has {metrics}"
        );
        tokio::time::sleep(POLL).await;
    }

    // A canary whose origin answers 500: rolled back, and only the canary ever served it.
    let broken_version = control_plane.update(&route, routing(&[(&bad, 100)])).await;
    let canary = control_plane
        .deploy(json!({
            "configurationId": route,
            "configurationVersion": broken_version,
            "strategy": "RegionalCanary",
            "targetLocations": ["nginx-1", "nginx-2"],
            "canaryConfig": {"initialPercentage": 50, "promotionSteps": [50, 100], "monitorDuration": "60s", "autoPromote": true},
            "rollbackConfig": {"autoRollback": true, "errorRateThreshold": 5.0, "cacheHitRateThreshold": 0.0,
                               "p99LatencyThresholdMs": 5000.0, "minSamples": 20},
        }))
        .await;
    let broken = format!("{route}={broken_version}");
    let mut served_broken: BTreeMap<String, u64> = BTreeMap::new();
    let deadline = Instant::now() + DEADLINE;
    let mut i = 0u64;
    let ended = loop {
        for edge in [&one, &two] {
            i += 1;
            let answer = client.get(&format!("{}/canary/{i}", edge.base)).await;
            if answer.version().contains(&broken) {
                *served_broken.entry(edge.location_id.clone()).or_default() += 1;
            }
        }
        let body = control_plane.get(&format!("/deployments/{canary}")).await;
        match body["status"].as_str().unwrap_or_default() {
            "RolledBack" => break body,
            "Completed" | "Failed" => panic!("the canary was not rolled back: {body}"),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the canary never rolled back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        served_broken.len(),
        1,
        "edges that served the broken version: {served_broken:?}; {ended}"
    );
    let canary_edge = if served_broken.contains_key("nginx-1") {
        &one
    } else {
        &two
    };
    canary_edge.wait_serving(&client, &route_v1).await;
    assert!(bad.hits.load(Ordering::Relaxed) > 0);
    for edge in [&one, &two] {
        let answer = client.get(&format!("{}/canary/after", edge.base)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", edge.location_id);
    }
    drop(one);
    drop(two);
}
