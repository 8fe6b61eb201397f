//! Two real processes on loopback (SPEC §9): a standby streams the primary's log, serves
//! reads with the primary's tokens and refuses writes with NOT_LEADER, resumes after a
//! restart and takes over when promoted; kill -9 of the primary under sync replication loses
//! no acknowledged write, and the old primary comes back as a standby with the same content;
//! a standby that joins after the log was compacted catches up through a copy of the store; a
//! primary that learns of a newer one puts its running deployment down (the new one takes it
//! up) and refuses heartbeats.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

mod common;
use common::cluster::{
    ADMIN_PASSWORD, SECRET, call, cluster_view, create_config, pair, promote, settle, wait_in_sync,
};
use common::process::{client, edgeplane, login, stored};

fn names(configurations: &BTreeMap<String, (String, String)>) -> BTreeSet<String> {
    configurations.keys().cloned().collect()
}

/// The content digests of two stopped nodes' stores.
fn digests(a: &Path, b: &Path) -> (String, String) {
    let digest = |dir: &Path| {
        edgeplane::store::Store::open(dir)
            .and_then(|store| store.replicated_content_digest())
            .expect("digest")
    };
    (digest(a), digest(b))
}

/// Waits until `node` says it is a standby at the primary's term holding every entry the
/// primary committed (so both hold the same log, promotion included) and the same
/// configurations.
async fn wait_caught_up(client: &reqwest::Client, node: &str, primary: &str, token: &str) {
    settle("the standby catches up", || async {
        let view = cluster_view(client, node, token).await;
        let leader = cluster_view(client, primary, token).await;
        view["role"] == "standby"
            && view["term"] == leader["term"]
            && view["appliedIndex"] == leader["commitIndex"]
            && stored(client, node, token).await == stored(client, primary, token).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_follows_serves_reads_refuses_writes_and_takes_over() {
    let client = client();
    let (p, s) = pair(true, &[]);
    let primary = p.start(Some(ADMIN_PASSWORD));
    let standby = s.start(None);
    let token = login(&client, &p.url, "admin", ADMIN_PASSWORD).await;
    wait_in_sync(&client, &p.url, &s.url, &token).await;
    for i in 0..5 {
        assert_eq!(
            create_config(&client, &p.url, &token, &format!("a{i}")).await,
            201
        );
    }
    // With sync replication the standby held each write before it was acknowledged, and the
    // primary's token is good on the standby.
    let on_standby = stored(&client, &s.url, &token).await;
    assert_eq!(
        names(&on_standby),
        names(&stored(&client, &p.url, &token).await)
    );

    let (status, headers, body) = call(
        &client,
        reqwest::Method::POST,
        format!("{}/api/v1/configurations", s.url),
        &token,
        Some(json!({"name": "refused", "type": "CacheRule", "content": {}})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "NOT_LEADER");
    assert_eq!(body["error"]["details"][0]["message"], p.url.as_str());
    assert_eq!(headers["x-edgeplane-leader"], p.url.as_str());

    let view = cluster_view(&client, &s.url, &token).await;
    assert_eq!(view["role"], "standby");
    assert_eq!(view["leader"]["url"], p.url.as_str());
    assert_eq!(view["term"], 1);
    wait_in_sync(&client, &p.url, &s.url, &token).await;

    // Without its standby the primary goes on alone after sync_timeout and says so; the
    // restarted standby resumes from its applied index and the primary waits for it again.
    assert!(standby.terminate().success());
    assert_eq!(create_config(&client, &p.url, &token, "alone").await, 201);
    assert_eq!(
        cluster_view(&client, &p.url, &token).await["degraded"],
        true
    );
    let standby = s.start(None);
    settle(
        "the standby resumes and the primary stops being degraded",
        || async {
            cluster_view(&client, &p.url, &token).await["degraded"] == false
                && stored(&client, &s.url, &token).await.contains_key("alone")
        },
    )
    .await;

    // Failover: the standby becomes primary at term 2 and takes writes with the same token.
    primary.kill_hard();
    let promoted = promote(&client, &s.url, &token).await;
    assert_eq!(promoted, json!({"role": "primary", "term": 2}));
    assert_eq!(create_config(&client, &s.url, &token, "after").await, 201);

    // The old primary, restarted with its old settings, refuses writes and follows.
    let old = p.start(None);
    let (status, headers, _) = call(
        &client,
        reqwest::Method::POST,
        format!("{}/api/v1/configurations", p.url),
        &token,
        Some(json!({"name": "fenced", "type": "CacheRule", "content": {}})),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(headers["x-edgeplane-leader"], s.url.as_str());
    wait_caught_up(&client, &p.url, &s.url, &token).await;
    assert_eq!(cluster_view(&client, &p.url, &token).await["term"], 2);
    assert!(old.terminate().success());
    assert!(standby.terminate().success());
    let (a, b) = digests(p.dir.path(), s.dir.path());
    assert_eq!(a, b, "both stores hold the same content");
}

/// Creates configurations until the server stops answering, recording every acknowledged
/// name.
async fn write_until_gone(
    base: String,
    token: String,
    writer: usize,
    acked: Arc<Mutex<Vec<String>>>,
) {
    let client = client();
    for n in 0.. {
        let name = format!("w{writer}-{n}");
        match create_config(&client, &base, &token, &name).await {
            201 => acked.lock().unwrap().push(name),
            0 => return,
            status => panic!("writer {writer}: {name} answered {status}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_primary_under_sync_replication_loses_no_acknowledged_write() {
    let seed: u64 = std::env::var("CLUSTER_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let rounds: usize = std::env::var("CLUSTER_KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    println!("kill -9 rounds: {rounds}, seed {seed} (CLUSTER_KILL_SEED to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    let client = client();
    let mut n_acked = 0;
    for round in 0..rounds {
        let (p, s) = pair(true, &[]);
        let primary = p.start(Some(ADMIN_PASSWORD));
        let standby = s.start(None);
        let token = login(&client, &p.url, "admin", ADMIN_PASSWORD).await;
        wait_in_sync(&client, &p.url, &s.url, &token).await;
        let acked = Arc::new(Mutex::new(Vec::new()));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                tokio::spawn(write_until_gone(
                    p.url.clone(),
                    token.clone(),
                    w,
                    acked.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..600))).await;
        primary.kill_hard();
        for writer in writers {
            writer.await.expect("writer");
        }
        let promoted = promote(&client, &s.url, &token).await;
        assert_eq!(promoted["term"], 2, "round {round}");
        let on_new_primary = stored(&client, &s.url, &token).await;
        let acked = acked.lock().unwrap().clone();
        n_acked += acked.len();
        for name in &acked {
            assert!(
                on_new_primary.contains_key(name),
                "round {round} (seed {seed}): acknowledged {name} is missing after failover"
            );
        }
        let old = p.start(None);
        wait_caught_up(&client, &p.url, &s.url, &token).await;
        assert!(old.terminate().success());
        assert!(standby.terminate().success());
        let (a, b) = digests(p.dir.path(), s.dir.path());
        assert_eq!(a, b, "round {round} (seed {seed}): the stores differ");
    }
    println!("{n_acked} acknowledged writes checked after {rounds} failovers");
    assert!(
        n_acked >= rounds,
        "seed {seed}: too few writes were acknowledged before the kills to check anything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_behind_the_compacted_log_installs_a_copy_then_streams() {
    let client = client();
    let (p, s) = pair(false, &[("EDGEPLANE_CLUSTER_MAX_LOG_ENTRIES", "3")]);
    let primary = p.start(Some(ADMIN_PASSWORD));
    let token = login(&client, &p.url, "admin", ADMIN_PASSWORD).await;
    for i in 0..10 {
        assert_eq!(
            create_config(&client, &p.url, &token, &format!("c{i}")).await,
            201
        );
    }
    settle("the primary compacts its log", || async {
        let status: Value = client
            .get(format!("{}/api/v1/cluster/log/status", p.url))
            .header("x-edgeplane-cluster-secret", SECRET)
            .send()
            .await
            .expect("status")
            .json()
            .await
            .unwrap_or(Value::Null);
        status["firstIndex"].as_u64().unwrap_or(0) > 1
    })
    .await;
    let standby = s.start(None);
    wait_caught_up(&client, &s.url, &p.url, &token).await;
    assert_eq!(
        create_config(&client, &p.url, &token, "streamed").await,
        201
    );
    settle("the standby streams after the copy", || async {
        stored(&client, &s.url, &token)
            .await
            .contains_key("streamed")
    })
    .await;
    assert!(standby.terminate().success());
    {
        let store = edgeplane::store::Store::open(s.dir.path()).expect("standby store");
        let reader = store.reader().expect("reader");
        assert!(
            reader.compacted_position().expect("meta").is_some(),
            "the standby started from a copy, not from the first entry"
        );
    }

    // Offline promotion: the stopped standby comes back as primary at term 2, whatever its
    // settings say, and the old primary steps down.
    let output = edgeplane(&["promote", "--data-dir", s.dir.path().to_str().unwrap()])
        .envs(s.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("edgeplane promote");
    assert!(output.status.success(), "{output:?}");
    let promoted: Value = serde_json::from_slice(&output.stdout).expect("JSON answer");
    assert_eq!(promoted, json!({"role": "primary", "term": 2}));
    let new_primary = s.start(None);
    assert_eq!(create_config(&client, &s.url, &token, "offline").await, 201);
    settle("the old primary steps down", || async {
        cluster_view(&client, &p.url, &token).await["role"] == "standby"
    })
    .await;
    assert_eq!(create_config(&client, &p.url, &token, "refused").await, 503);
    drop(new_primary);
    drop(primary);
}

/// A gauge's value on a node's `/metrics`.
async fn gauge(client: &reqwest::Client, base: &str, name: &str) -> Option<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_that_steps_down_puts_its_deployment_down_and_refuses_heartbeats() {
    use edgeplane::edge::{Fleet, SimulateOptions};

    let client = client();
    let (p, s) = pair(false, &[("EDGEPLANE_SERVER_ALLOW_SELF_APPROVAL", "true")]);
    let primary = p.start(Some(ADMIN_PASSWORD));
    let standby = s.start(None);
    let token = login(&client, &p.url, "admin", ADMIN_PASSWORD).await;
    wait_in_sync(&client, &p.url, &s.url, &token).await;
    let fleet = Fleet::start(SimulateOptions {
        control_plane: p.url.clone(),
        admin_token: token.clone(),
        edges: 3,
        heartbeat_interval: Duration::from_millis(200),
        ..SimulateOptions::default()
    })
    .await
    .expect("simulated edges");
    let edges = fleet.endpoints();
    settle("the simulated edges are healthy", || async {
        let (_, _, body) = call(
            &client,
            reqwest::Method::GET,
            format!("{}/api/v1/edge-locations?isHealthy=true", p.url),
            &token,
            None,
        )
        .await;
        body["total"].as_u64() == Some(edges.len() as u64)
    })
    .await;

    // A canary whose watch outlasts the test: the deployment runs on the primary's engine.
    let (status, _, body) = call(
        &client,
        reqwest::Method::POST,
        format!("{}/api/v1/configurations", p.url),
        &token,
        Some(json!({"name": "canaried", "type": "CacheRule",
                    "content": {"pathPattern": "/canaried/*", "ttl": 60, "cacheControl": "public"}})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let configuration = body["configurationId"].as_str().expect("id").to_string();
    let (status, _, body) = call(
        &client,
        reqwest::Method::POST,
        format!("{}/api/v1/configurations/{configuration}/approve", p.url),
        &token,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = call(
        &client,
        reqwest::Method::POST,
        format!("{}/api/v1/deployments", p.url),
        &token,
        Some(json!({
            "configurationId": configuration,
            "configurationVersion": "1.0.0",
            "strategy": "RegionalCanary",
            "targetLocations": edges.iter().map(|e| e.location_id.clone()).collect::<Vec<_>>(),
            "canaryConfig": {"promotionSteps": [10, 50, 100], "monitorDuration": "1h"},
        })),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let deployment = body["deploymentId"].as_str().expect("id").to_string();
    let in_progress = "edgeplane_deployments_in_progress";
    settle("the primary's engine runs the canary", || async {
        gauge(&client, &p.url, in_progress).await == Some(1.0)
    })
    .await;

    // The standby is promoted while the old primary still runs: within a probe of its peers
    // the old one learns of the higher term and steps down.
    assert_eq!(promote(&client, &s.url, &token).await["term"], 2);
    settle("the old primary steps down", || async {
        cluster_view(&client, &p.url, &token).await["role"] == "standby"
    })
    .await;
    settle("its engine puts the deployment down", || async {
        gauge(&client, &p.url, in_progress).await == Some(0.0)
    })
    .await;
    settle("the new primary's engine takes it up", || async {
        gauge(&client, &s.url, in_progress).await == Some(1.0)
    })
    .await;
    let (status, _, body) = call(
        &client,
        reqwest::Method::GET,
        format!("{}/api/v1/deployments/{deployment}", s.url),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["completedAt"].is_null(), "still watching: {body}");

    // A heartbeat is a write: the old primary refuses it and names the new one.
    let edge = &edges[0];
    let now = edgeplane::model::Timestamp::now();
    let (status, headers, body) = call(
        &client,
        reqwest::Method::POST,
        format!(
            "{}/api/v1/edge-locations/{}/heartbeat",
            p.url, edge.location_id
        ),
        &edge.token,
        Some(
            serde_json::to_value(edgeplane::protocol::Heartbeat {
                health: Default::default(),
                active_configurations: Default::default(),
                metrics: None,
                started_at: now,
                sent_at: now,
            })
            .expect("heartbeat"),
        ),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "NOT_LEADER", "{body}");
    assert_eq!(headers["x-edgeplane-leader"], s.url.as_str());

    fleet.shutdown().await;
    assert!(primary.terminate().success());
    assert!(standby.terminate().success());
}
