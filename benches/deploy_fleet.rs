//! Figure: DirectDeployment of one configuration to 1,000 simulated edges through the whole
//! control plane (API, engine, store, HTTP pushes), from its `createdAt` to the last edge's
//! `ackedAt` (the server's own timestamps), and the
//! BlueGreen switch-back time at the same scale (SPEC §11).
//!
//! Run with `cargo bench --bench deploy_fleet`. Control plane and edges share this process on
//! loopback, so the figures include the simulator's own work and the polling interval.

mod common;

use std::time::{Duration, Instant};

use edgeplane::edge::{Fleet, SimulateOptions};
use serde_json::{Value, json};

use common::{ControlPlane, DEADLINE, POLL, REGIONS, percentile};

const EDGES: usize = 1000;
const RUNS: usize = 20;

async fn bench() {
    let plane = ControlPlane::start(|settings| {
        settings.rollout.analysis_interval = Duration::from_millis(100);
    })
    .await;
    let client = &plane.client;
    let fleet = Fleet::start(SimulateOptions {
        control_plane: client.base.clone(),
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
    drop(plane);
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(bench());
}
