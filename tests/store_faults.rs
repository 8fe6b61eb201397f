//! Storage faults through the API, driven by the store's fault seam (no root, no small disk):
//! a full disk answers 507 and an I/O error 503, `/ready` says 503 while writes are refused,
//! reads go on, writes resume without a restart and no acknowledged write is lost; below the
//! free-space reserve heartbeats keep edge health but their samples are not stored.

use std::io;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

mod common;
use common::{TestApp, assert_error, cache_rule, unique};

/// Guards against a condition that never comes; no assertion depends on how long one takes.
const HANG_GUARD: Duration = Duration::from_secs(30);

async fn wait_until(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + HANG_GUARD;
    while !condition().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn create(app: &TestApp, pattern: &str) -> (StatusCode, axum::http::HeaderMap, Value) {
    app.request(
        Method::POST,
        "/api/v1/configurations",
        Some(&app.admin),
        Some(
            json!({"name": unique("config"), "type": "CacheRule", "content": cache_rule(pattern)}),
        ),
    )
    .await
}

async fn ready(app: &TestApp) -> (StatusCode, axum::http::HeaderMap, Value) {
    app.request(Method::GET, "/ready", None, None).await
}

#[tokio::test]
async fn a_full_disk_answers_507_and_writes_resume_once_space_is_freed() {
    let app = TestApp::new().await;
    let kept = create(&app, "/kept/*").await;
    assert_eq!(kept.0, StatusCode::CREATED, "{}", kept.2);
    let store = app.state.store().clone();

    // The disk fills under the next commit; the filesystem has 4 KiB left.
    store.faults().report_free_bytes(Some(4096));
    store.faults().fail_writes(1, io::ErrorKind::StorageFull);
    let refused = create(&app, "/refused/*").await;
    assert_error(
        &refused,
        StatusCode::INSUFFICIENT_STORAGE,
        "INSUFFICIENT_STORAGE",
    );
    let message = refused.2["error"]["message"].as_str().unwrap_or_default();
    for words in ["full", "4.0 KiB free", "the store file is", "free space"] {
        assert!(message.contains(words), "{words:?} in {message}");
    }

    // The file is reopened for reads while writes wait for space, and every later write is
    // refused the same way without touching the disk.
    wait_until("the store file is reopened", async || {
        store.status().readable
    })
    .await;
    assert_error(
        &create(&app, "/also-refused/*").await,
        StatusCode::INSUFFICIENT_STORAGE,
        "INSUFFICIENT_STORAGE",
    );
    let not_ready = ready(&app).await;
    assert_error(
        &not_ready,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    );
    let reason = not_ready.2["error"]["message"].as_str().unwrap_or_default();
    assert!(reason.contains("full"), "{reason}");
    assert!(reason.contains("reads are still served"), "{reason}");
    let (health, _, _) = app.request(Method::GET, "/health", None, None).await;
    assert_eq!(health, StatusCode::OK);
    let kept_id = kept.2["configurationId"].as_str().unwrap();
    let (read, _, body) = app
        .get(&format!("/api/v1/configurations/{kept_id}"), &app.admin)
        .await;
    assert_eq!(read, StatusCode::OK, "reads are served: {body}");

    // Space is freed: writes resume by themselves.
    store.faults().clear();
    wait_until("/ready answers 200", async || {
        ready(&app).await.0 == StatusCode::OK
    })
    .await;
    let after = create(&app, "/after/*").await;
    assert_eq!(after.0, StatusCode::CREATED, "{}", after.2);
    let (_, _, listed) = app
        .get("/api/v1/configurations?limit=100", &app.admin)
        .await;
    let patterns: Vec<&str> = listed["configurations"]
        .as_array()
        .expect("configurations")
        .iter()
        .filter_map(|c| c["content"]["pathPattern"].as_str())
        .collect();
    assert!(patterns.contains(&"/kept/*"), "{patterns:?}");
    assert!(patterns.contains(&"/after/*"), "{patterns:?}");
    assert!(!patterns.contains(&"/refused/*"), "{patterns:?}");
}

#[tokio::test]
async fn an_io_error_answers_503_and_heals_without_a_restart() {
    let app = TestApp::new().await;
    let store = app.state.store().clone();
    // The commit fails, then the first reopening.
    store.faults().fail_writes(2, io::ErrorKind::Other);
    let refused = create(&app, "/refused/*").await;
    assert_error(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    );
    let message = refused.2["error"]["message"].as_str().unwrap_or_default();
    assert!(
        !message.contains("injected"),
        "no internals in a 5xx: {message}"
    );
    wait_until("/ready answers 200", async || {
        ready(&app).await.0 == StatusCode::OK
    })
    .await;
    let after = create(&app, "/after/*").await;
    assert_eq!(after.0, StatusCode::CREATED, "{}", after.2);
}

#[tokio::test]
async fn below_the_reserve_heartbeats_keep_edge_health_but_store_no_samples() {
    let app = TestApp::with_settings(|settings| {
        settings.store.free_space_reserve = 64 * 1024 * 1024;
    })
    .await;
    let store = app.state.store().clone();
    let location = unique("edge");
    let (_, token) = app.create_edge(&location).await;
    let beat = |requests: u64| {
        json!({
            "health": {"isHealthy": true, "cpuUsage": 10.0},
            "metrics": {"intervalSeconds": 10, "requests": requests, "cacheHits": requests},
        })
    };
    let post = async |body: Value| {
        app.request(
            Method::POST,
            &format!("/api/v1/edge-locations/{location}/heartbeat"),
            Some(&token),
            Some(body),
        )
        .await
    };
    let requests_total = async || {
        let (status, _, body) = app
            .get(
                &format!("/api/v1/metrics/edge-locations/{location}?window=1h"),
                &app.admin,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["requestsTotal"].as_f64().expect("requestsTotal")
    };

    store.faults().report_free_bytes(Some(1024 * 1024));
    store.probe_disk();
    let (status, _, body) = post(beat(100)).await;
    assert_eq!(status, StatusCode::OK, "a heartbeat is still taken: {body}");
    let (_, _, edge) = app
        .get(&format!("/api/v1/edge-locations/{location}"), &app.admin)
        .await;
    assert!(
        edge["lastHeartbeat"].is_string(),
        "health is recorded: {edge}"
    );
    assert_eq!(requests_total().await, 0.0, "the sample was not stored");

    store.faults().report_free_bytes(None);
    store.probe_disk();
    let (status, _, body) = post(beat(7)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        requests_total().await,
        7.0,
        "above the reserve samples are stored"
    );
}
