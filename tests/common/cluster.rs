//! Two nodes on loopback that name each other, for the cluster tests and the replication
//! bench: their settings, a write, the cluster view, and bounded waits on what they report.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::process::{Server, serve_with};

pub(crate) const ADMIN_PASSWORD: &str = "cluster-admin-password";
pub(crate) const SECRET: &str = "a-cluster-secret-for-tests";
/// Longest a test waits for the cluster to reach a state it must reach.
pub(crate) const SETTLE: Duration = Duration::from_secs(30);

/// Two different ports free right now, so each node can name the other before either
/// starts. Both are held until both are known: a port let go of at once may be handed out
/// again for the second.
pub(crate) fn free_ports() -> (u16, u16) {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let (a, b) = (bind(), bind());
    let port = |l: &std::net::TcpListener| l.local_addr().expect("address").port();
    (port(&a), port(&b))
}

/// One node's data dir and settings.
pub(crate) struct Node {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) listen: String,
    pub(crate) url: String,
    pub(crate) env: Vec<(String, String)>,
}

impl Node {
    pub(crate) fn start(&self, bootstrap_password: Option<&str>) -> Server {
        serve_with(self.dir.path(), &self.listen, bootstrap_password, &self.env)
    }
}

/// A primary and a standby that name each other.
pub(crate) fn pair(sync: bool, extra: &[(&str, &str)]) -> (Node, Node) {
    let (p, s) = free_ports();
    let node = |port: u16, peer: u16, role: &str| {
        let url = format!("http://127.0.0.1:{port}");
        let mut env: Vec<(String, String)> = vec![
            ("EDGEPLANE_CLUSTER_ROLE".into(), role.into()),
            (
                "EDGEPLANE_CLUSTER_PEERS".into(),
                format!("[\"http://127.0.0.1:{peer}\"]"),
            ),
            ("EDGEPLANE_CLUSTER_ADVERTISE_URL".into(), url.clone()),
            ("EDGEPLANE_CLUSTER_SECRET".into(), SECRET.into()),
            (
                "EDGEPLANE_CLUSTER_SYNC_REPLICATION".into(),
                sync.to_string(),
            ),
            ("EDGEPLANE_CLUSTER_SYNC_TIMEOUT".into(), "2s".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Node {
            dir: tempfile::tempdir().expect("temp dir"),
            listen: format!("127.0.0.1:{port}"),
            url,
            env,
        }
    };
    (node(p, s, "primary"), node(s, p, "standby"))
}

pub(crate) async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = client.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            (
                status,
                headers,
                response.json().await.unwrap_or(Value::Null),
            )
        }
        Err(_) => (0, Default::default(), Value::Null),
    }
}

pub(crate) async fn create_config(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    name: &str,
) -> u16 {
    let body = json!({
        "name": name,
        "type": "CacheRule",
        "content": {"pathPattern": format!("/{name}/*"), "ttl": 60, "cacheControl": "public"},
    });
    let url = format!("{base}/api/v1/configurations");
    call(client, reqwest::Method::POST, url, token, Some(body))
        .await
        .0
}

pub(crate) async fn cluster_view(client: &reqwest::Client, base: &str, token: &str) -> Value {
    let url = format!("{base}/api/v1/cluster");
    let (status, _, body) = call(client, reqwest::Method::GET, url, token, None).await;
    assert_eq!(status, 200, "GET /cluster: {body}");
    body
}

/// Polls `check` until it holds, failing the test after [`SETTLE`].
pub(crate) async fn settle<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + SETTLE;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {SETTLE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn promote(client: &reqwest::Client, base: &str, token: &str) -> Value {
    let url = format!("{base}/api/v1/cluster/promote");
    let (status, _, body) = call(client, reqwest::Method::POST, url, token, None).await;
    assert_eq!(status, 200, "promote: {body}");
    body
}

/// Waits until the primary sees its standby caught up and waits for it (not degraded).
pub(crate) async fn wait_in_sync(
    client: &reqwest::Client,
    primary: &str,
    standby: &str,
    token: &str,
) {
    settle("the primary sees its standby caught up", || async {
        let view = cluster_view(client, primary, token).await;
        view["role"] == "primary"
            && view["degraded"] == false
            && view["peers"].as_array().is_some_and(|peers| {
                peers.iter().any(|peer| {
                    peer["url"] == standby
                        && peer["role"] == "standby"
                        && peer["appliedIndex"] == view["commitIndex"]
                        && peer["lagEntries"] == 0
                })
            })
    })
    .await;
}
