//! Figure: time to push one configuration to 1,000 simulated edges (all acked), with p50/p99
//! per-edge latency, total time per round, and the process's memory.
//!
//! Run with `cargo bench --bench push_fleet`. Edges, control plane and pusher share this one
//! process on loopback, so the figures include the simulator's own work.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::post;
use edgeplane::edge::{Fleet, SimulateOptions};
use edgeplane::fleet::{PushClient, PushOptions, PushOutcome};
use edgeplane::model::ConfigType;
use edgeplane::protocol::PushRequest;
use serde_json::{Value, json};

const EDGES: usize = 1000;
const RUNS: usize = 20;

/// Just enough control plane to register edges and accept heartbeats.
async fn control_plane() -> String {
    async fn create(axum::Json(body): axum::Json<Value>) -> (StatusCode, axum::Json<Value>) {
        let mut reply = body;
        let id = reply["locationId"].as_str().unwrap_or_default().to_owned();
        reply["agentToken"] = json!(format!("token-{id}"));
        (StatusCode::CREATED, axum::Json(reply))
    }
    async fn heartbeat(Path(_id): Path<String>) -> StatusCode {
        StatusCode::OK
    }
    let app = axum::Router::new()
        .route("/api/v1/edge-locations", post(create))
        .route("/api/v1/edge-locations/{id}/heartbeat", post(heartbeat));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = control_plane().await;
        let started = Instant::now();
        let fleet = Fleet::start(SimulateOptions {
            control_plane: url,
            admin_token: "admin".into(),
            edges: EDGES,
            heartbeat_interval: Duration::from_secs(10),
            seed: 7,
            ..SimulateOptions::default()
        })
        .await
        .unwrap();
        println!("fleet of {EDGES} edges up and registered in {:?}", started.elapsed());
        let rss_fleet = status_kib("VmRSS:");
        let endpoints = fleet.endpoints();
        let client = PushClient::new(PushOptions::default()).unwrap();
        let mut per_edge = Vec::with_capacity(EDGES * RUNS);
        let mut totals = Vec::with_capacity(RUNS);
        for run in 0..RUNS {
            let request = PushRequest::apply(
                format!("1.{run}.0"),
                ConfigType::CacheRule,
                json!({"pathPattern": "/static/*", "ttl": 3600 + run, "cacheControl": "public"}),
                BTreeMap::new(),
            );
            let round = Instant::now();
            let outcomes = futures_util::future::join_all(endpoints.iter().map(|edge| {
                client.push(&edge.endpoint, &edge.token, "config-bench", &request)
            }))
            .await;
            totals.push(round.elapsed());
            for outcome in outcomes {
                match outcome {
                    Ok(PushOutcome::Acked { latency, .. }) => per_edge.push(latency),
                    other => panic!("run {run}: not acked: {other:?}"),
                }
            }
        }
        per_edge.sort();
        totals.sort();
        println!(
            "push to {EDGES} edges, {RUNS} runs, 256 in flight: per edge p50 {:?} p99 {:?} max {:?}",
            percentile(&per_edge, 0.5),
            percentile(&per_edge, 0.99),
            per_edge[per_edge.len() - 1],
        );
        println!(
            "total per run (all acked): p50 {:?} p99 {:?} (first run, cold connections: see max {:?})",
            percentile(&totals, 0.5),
            percentile(&totals, 0.99),
            totals[totals.len() - 1],
        );
        println!(
            "memory: VmRSS {} MiB after fleet start, {} MiB after pushes, VmHWM {} MiB",
            rss_fleet / 1024,
            status_kib("VmRSS:") / 1024,
            status_kib("VmHWM:") / 1024,
        );
        fleet.shutdown().await;
    });
}
