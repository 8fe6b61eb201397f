//! Figure: automatic rollback as SPEC §11 defines it, from the heartbeat that carries the
//! breach (its receive time on the control plane) to the last edge acked back (the
//! deployment's `RolledBack` event), at 9 and at 1,000 simulated edges.
//!
//! Each run deploys a version whose canary edges report 9% errors (a severe breach: twice the
//! 1% limit counts at once) with RegionalCanary and the production analysis interval (10 s),
//! so the figure shows that the breach is judged when its heartbeat arrives. Both timestamps
//! are the server's: the failing verdict records when the newest canary heartbeat it judged
//! was received. Run with `cargo bench --bench rollback`.

mod common;

use std::time::Duration;

use common::{ControlPlane, REGIONS, p99_label, percentile};
use edgeplane::edge::{Fleet, SimulateOptions};
use edgeplane::model::Timestamp;
use edgeplane::monitor::judge::JUDGED_HEARTBEAT_KEY;
use serde_json::{Value, json};

const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

/// The server's timestamp of the first timeline event of `kind` whose message starts with
/// `prefix`, and its data.
fn event<'a>(record: &'a Value, kind: &str, prefix: &str) -> &'a Value {
    record["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == kind && e["message"].as_str().unwrap_or("").starts_with(prefix))
        .expect("event on the timeline")
}

fn at(text: &Value) -> Timestamp {
    text.as_str()
        .and_then(Timestamp::parse_rfc3339)
        .expect("a timestamp")
}

async fn measure(edges: usize, runs: usize) {
    let plane = ControlPlane::start(|_| {}).await;
    let client = &plane.client;
    let fleet = Fleet::start(SimulateOptions {
        control_plane: client.base.clone(),
        admin_token: client.token.clone(),
        edges,
        heartbeat_interval: HEARTBEAT_INTERVAL,
        ..SimulateOptions::default()
    })
    .await
    .expect("fleet starts");
    // Every edge has heartbeated once, so each is healthy and has a baseline.
    tokio::time::sleep(HEARTBEAT_INTERVAL * 2).await;

    let mut figures = Vec::with_capacity(runs);
    let mut canary = 0;
    for run in 0..runs {
        let id = client
            .approved_rule(
                &format!("degrading-{edges}-{run}"),
                json!({"simulate.errorRate": "9.0"}),
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
        let record = client.wait(&deployment_id, "RolledBack").await;
        let verdict = event(&record, "Verdict", "fail");
        let heartbeat = at(&verdict["data"][JUDGED_HEARTBEAT_KEY]);
        let rolled_back = at(&event(&record, "RolledBack", "")["at"]);
        figures.push(Duration::from_millis(
            rolled_back.millis_since(heartbeat).max(0) as u64,
        ));
        canary = record["edges"]
            .as_object()
            .map(|edges| {
                edges
                    .values()
                    .filter(|e| e["state"] == "RolledBack")
                    .count()
            })
            .unwrap_or(0);
    }
    figures.sort();
    println!(
        "automatic rollback, {edges} edges ({canary} canary edges rolled back), breaching heartbeat received to last edge acked back, {runs} runs: p50 {:?}, {} {:?} (analysis interval 10 s, heartbeats every {:?})",
        percentile(&figures, 50.0),
        p99_label(runs),
        percentile(&figures, 99.0),
        HEARTBEAT_INTERVAL
    );
    fleet.shutdown().await;
    drop(plane);
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            measure(9, 20).await;
            measure(1_000, 5).await;
        });
}
