//! Reconciliation against a real listening control plane and the nine simulated POPs: an
//! edge whose state was wiped converges back to the deployed version, and edges already in
//! sync get no push.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use edgeplane::edge::{Fleet, SimulateOptions};
use edgeplane::fleet::reconcile_once;
use edgeplane::rollout::engine::EdgeTransport;
use serde_json::{Value, json};

use common::{TestApp, cache_rule, unique};

/// Longest any bounded wait in this file may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what` at the deadline.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the store last heard from `location_id` about `configuration_id`.
async fn reported(app: &TestApp, location_id: &str, configuration_id: &str) -> Option<String> {
    let (location_id, configuration_id) = (location_id.to_string(), configuration_id.to_string());
    app.state
        .store()
        .read(move |r| r.edge(&location_id))
        .await
        .expect("read edge")
        .and_then(|e| {
            e.location
                .active_configurations
                .get(&configuration_id)
                .cloned()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_edge_converges_back_and_edges_in_sync_get_no_push() {
    let app = TestApp::with_settings(|s| s.server.allow_self_approval = true).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let router = app.router.clone();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let fleet = Fleet::start(SimulateOptions {
        control_plane: format!("http://{address}"),
        admin_token: app.admin.clone(),
        heartbeat_interval: Duration::from_millis(200),
        ..SimulateOptions::default()
    })
    .await
    .expect("fleet starts");
    let locations: Vec<String> = fleet
        .endpoints()
        .into_iter()
        .map(|e| e.location_id)
        .collect();
    assert_eq!(locations.len(), 9);
    for location in &locations {
        eventually("every edge's first heartbeat", || async {
            (fleet.heartbeats_sent(location) > 0).then_some(())
        })
        .await;
    }

    let created = app
        .create_config(&app.admin, "CacheRule", cache_rule(&unique("/static")))
        .await;
    let configuration_id = created["configurationId"]
        .as_str()
        .expect("configurationId")
        .to_string();
    let version = created["version"].as_str().expect("version").to_string();
    let (status, _, approved) = app
        .request(
            Method::POST,
            &format!("/api/v1/configurations/{configuration_id}/approve"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    let (status, _, deployment) = app
        .request(
            Method::POST,
            "/api/v1/deployments",
            Some(&app.admin),
            Some(json!({
                "configurationId": configuration_id,
                "strategy": "DirectDeployment",
                "targetRegions": ["North America", "Europe", "Asia Pacific"],
            })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{deployment}");
    let deployment_id = deployment["deploymentId"]
        .as_str()
        .expect("deploymentId")
        .to_string();
    eventually("the deployment to complete", || async {
        let (_, _, body): (_, _, Value) = app
            .get(&format!("/api/v1/deployments/{deployment_id}"), &app.admin)
            .await;
        match body["status"].as_str() {
            Some("Completed") => Some(()),
            Some("Failed") | Some("RolledBack") => panic!("deployment ended: {body}"),
            _ => None,
        }
    })
    .await;
    for location in &locations {
        eventually("every edge to report the deployed version", || async {
            (reported(&app, location, &configuration_id).await.as_ref() == Some(&version))
                .then_some(())
        })
        .await;
    }

    let transport: Arc<dyn EdgeTransport> = Arc::new(app.state.push_client().clone());
    let healthy_within_ms = app.state.settings().edges.healthy_within.as_millis() as i64;
    let in_sync = reconcile_once(
        app.state.store(),
        app.state.secrets(),
        &transport,
        app.state.engine(),
        healthy_within_ms,
    )
    .await;
    assert!(
        in_sync.pushed.is_empty() && in_sync.failed.is_empty(),
        "a fleet in sync gets no push: {in_sync:?}"
    );

    let wiped = &locations[0];
    assert!(fleet.wipe(wiped));
    assert_eq!(fleet.active_version(wiped, &configuration_id), None);
    eventually("the wiped edge to report its empty state", || async {
        reported(&app, wiped, &configuration_id)
            .await
            .is_none()
            .then_some(())
    })
    .await;

    let report = reconcile_once(
        app.state.store(),
        app.state.secrets(),
        &transport,
        app.state.engine(),
        healthy_within_ms,
    )
    .await;
    assert_eq!(
        report.pushed,
        vec![(wiped.clone(), configuration_id.clone(), version.clone())]
    );
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(
        fleet.active_version(wiped, &configuration_id),
        Some(version.clone())
    );
    for location in &locations[1..] {
        assert_eq!(
            fleet.active_version(location, &configuration_id),
            Some(version.clone())
        );
    }

    fleet.shutdown().await;
    server.abort();
}
