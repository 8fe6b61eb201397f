//! The deployment engine on its injected clock, against a scripted transport that records every
//! push and rollback: quarantine after repeated NACKs, a canary wave whose push times out, an
//! ack after a timed-out attempt, a restart with pushes in flight, a step the store refuses to
//! save, a watch judged as soon as its canary edges' heartbeats arrive, and the engine of a node
//! that steps down (it stops) and is promoted again (it resumes from the store).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use edgeplane::fleet::HeartbeatIntake;
use edgeplane::model::{
    Capacity, CreateDeployment, Deployment, DeploymentStatus, EdgeHealth, EdgeLocation, EdgeState,
    EdgeType, EventKind, MetricsSample, Phase, RollbackConfig, Strategy, Timestamp,
};
use edgeplane::rollout::engine::{
    AlertSink, Analysis, AnalysisAnswer, AnalysisRequest, Clock, EdgeAnswer, EdgeTarget,
    EdgeTransport, Engine, EngineError, EngineSettings, PushContent,
};
use edgeplane::rollout::machine::{AlertKind, StepContext};
use edgeplane::rollout::{AnalysisOutcome, OperatorAction};
use edgeplane::secrets::SecretBox;
use edgeplane::store::{Command, CommandEnvelope, EdgeRecord, HeartbeatRecord, Store};

mod common;
use common::{HealthOnlyAnalysis, ManualClock};

const CONFIGURATION: &str = "config-1";
const VERSION: &str = "1.0.0";
/// Tuesday 2026-11-24 12:00 UTC: where every test's clock starts.
const START: Timestamp = Timestamp(1_795_521_600_000);
/// Guards against a condition that never comes; no assertion depends on how long one takes.
const HANG_GUARD: Duration = Duration::from_secs(30);

fn secrets() -> SecretBox {
    SecretBox::new([7; 32])
}

/// One call the engine made to an edge.
#[derive(Clone, Debug, PartialEq)]
enum Call {
    Push { location: String, version: String },
    Rollback { location: String },
}

/// How the scripted edge answers a push.
#[derive(Clone, Debug)]
enum Reply {
    Answer(EdgeAnswer),
    /// Never answers: the push stays in flight.
    Hold,
}

type Script = dyn Fn(&str, usize) -> Reply + Send + Sync;

/// A transport whose edges answer as the test scripts (by location and attempt number, from
/// 1) and that logs every call in order. Rollbacks always succeed.
struct ScriptedEdges {
    calls: Mutex<Vec<Call>>,
    script: Box<Script>,
}

impl ScriptedEdges {
    fn new(script: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            calls: Mutex::new(Vec::new()),
            script: Box::new(script),
        })
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("log").clone()
    }

    fn pushes_to(&self, location: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| matches!(c, Call::Push { location: l, .. } if l == location))
            .count()
    }
}

impl EdgeTransport for ScriptedEdges {
    fn push(&self, target: EdgeTarget, content: PushContent) -> BoxFuture<'static, EdgeAnswer> {
        let attempt = {
            let mut calls = self.calls.lock().expect("log");
            calls.push(Call::Push {
                location: target.location_id.clone(),
                version: content.version.clone(),
            });
            calls
                .iter()
                .filter(
                    |c| matches!(c, Call::Push { location, .. } if *location == target.location_id),
                )
                .count()
        };
        match (self.script)(&target.location_id, attempt) {
            Reply::Answer(answer) => Box::pin(async move { answer }),
            Reply::Hold => Box::pin(futures_util::future::pending()),
        }
    }

    fn rollback(
        &self,
        target: EdgeTarget,
        _configuration_id: String,
        _to_version: Option<String>,
    ) -> BoxFuture<'static, EdgeAnswer> {
        self.calls.lock().expect("log").push(Call::Rollback {
            location: target.location_id,
        });
        Box::pin(async { EdgeAnswer::Acked { latency_ms: 1 } })
    }
}

fn acked() -> Reply {
    Reply::Answer(EdgeAnswer::Acked { latency_ms: 5 })
}

/// The alerts the engine raised, by kind, and the edges that alerts about one edge named.
#[derive(Default)]
struct Alerts(
    Mutex<Vec<(AlertKind, String)>>,
    Mutex<Vec<(AlertKind, String)>>,
);

impl AlertSink for Alerts {
    fn alert(&self, _: &Deployment, kind: AlertKind, message: &str) {
        self.0
            .lock()
            .expect("alerts")
            .push((kind, message.to_string()));
    }

    fn edge_alert(&self, deployment: &Deployment, kind: AlertKind, location: &str, message: &str) {
        self.1
            .lock()
            .expect("alerts")
            .push((kind, location.to_string()));
        self.alert(deployment, kind, message);
    }
}

fn apply(store: &Store, command: Command) {
    store
        .apply_blocking(CommandEnvelope::new("admin", "", command))
        .expect("applied");
}

/// A store with one cache rule and healthy edges `edges` (location ids) in one region.
fn store_with(dir: &std::path::Path, edges: &[&str]) -> Store {
    let store = Store::open(dir).expect("store");
    common::store_cache_rule(&store, CONFIGURATION, "/static/*", VERSION, START)
        .expect("configuration stored");
    for id in edges {
        let location = EdgeLocation {
            location_id: id.to_string(),
            name: id.to_string(),
            region: "North America".into(),
            country_code: "US".into(),
            city: "Ashburn".into(),
            edge_type: EdgeType::EdgePop,
            endpoint: format!("http://{id}.test"),
            capacity: Capacity::default(),
            health: EdgeHealth::default(),
            metrics: None,
            last_heartbeat: Some(START),
            started_at: Some(START),
            is_active: true,
            active_configurations: BTreeMap::new(),
            metadata: BTreeMap::new(),
            is_quarantined: false,
        };
        apply(
            &store,
            Command::CreateEdge {
                record: EdgeRecord {
                    location,
                    token_id: format!("jti-{id}"),
                    token_sealed: secrets().seal(&format!("token-{id}")),
                },
            },
        );
    }
    store
}

/// Settings whose edges stay healthy however far a test moves the clock.
fn settings(quarantine_after: u32) -> EngineSettings {
    EngineSettings {
        healthy_within_ms: i64::MAX / 4,
        quarantine_after,
        ..EngineSettings::default()
    }
}

fn start_engine(
    store: &Store,
    transport: Arc<ScriptedEdges>,
    alerts: Arc<Alerts>,
    clock: Arc<ManualClock>,
    quarantine_after: u32,
) -> Engine {
    Engine::start(
        store.clone(),
        secrets(),
        transport,
        Arc::new(HealthOnlyAnalysis),
        alerts,
        clock,
        settings(quarantine_after),
    )
    .expect("engine starts")
}

/// Admits a deployment of the configuration to `targets` and has the engine start it.
async fn deploy(engine: &Engine, store: &Store, id: &str, strategy: Strategy, targets: &[&str]) {
    let deployment = CreateDeployment {
        configuration_id: CONFIGURATION.into(),
        strategy,
        target_locations: targets.iter().map(|t| t.to_string()).collect(),
        ..CreateDeployment::default()
    }
    .into_deployment(
        id.into(),
        VERSION.into(),
        "admin".into(),
        START,
        &RollbackConfig::default(),
    )
    .expect("valid request");
    let admitted = deployment.clone();
    apply(
        store,
        Command::CreateDeployment {
            deployment: Box::new(admitted),
            max_concurrent: 10,
        },
    );
    engine.start_deployment(deployment).await.expect("started");
}

async fn stored(store: &Store, id: &str) -> Deployment {
    let id = id.to_string();
    store
        .read(move |r| r.deployment(&id))
        .await
        .expect("read")
        .expect("stored")
}

/// Polls `check` until it returns something, failing after [`HANG_GUARD`].
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the stored deployment satisfies `done`, and returns it.
async fn wait_stored(
    store: &Store,
    id: &str,
    what: &str,
    done: impl Fn(&Deployment) -> bool,
) -> Deployment {
    wait_for(what, || async {
        let deployment = stored(store, id).await;
        done(&deployment).then_some(deployment)
    })
    .await
}

async fn quarantined(store: &Store, location: &str) -> bool {
    let location = location.to_string();
    store
        .read(move |r| r.edges())
        .await
        .expect("edges")
        .into_iter()
        .find(|e| e.location.location_id == location)
        .expect("edge")
        .location
        .is_quarantined
}

#[tokio::test]
async fn an_edge_is_quarantined_by_the_nack_that_reaches_quarantine_after() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store_with(dir.path(), &["edge-a"]);
    let edges = ScriptedEdges::new(|_, _| {
        Reply::Answer(EdgeAnswer::Nacked {
            reason: "test command failed".into(),
        })
    });
    let alerts = Arc::new(Alerts::default());
    let clock = Arc::new(ManualClock::new(START));
    let engine = start_engine(&store, edges.clone(), alerts.clone(), clock, 2);

    deploy(
        &engine,
        &store,
        "deploy-1",
        Strategy::DirectDeployment,
        &["edge-a"],
    )
    .await;
    let first = wait_stored(&store, "deploy-1", "the first deployment ends", |d| {
        d.status.is_terminal()
    })
    .await;
    assert_eq!(first.edges["edge-a"].state, EdgeState::Nacked, "{first:?}");
    assert!(!quarantined(&store, "edge-a").await, "one NACK of two");
    assert!(
        alerts
            .0
            .lock()
            .expect("alerts")
            .iter()
            .all(|(k, _)| *k != AlertKind::Quarantined)
    );

    deploy(
        &engine,
        &store,
        "deploy-2",
        Strategy::DirectDeployment,
        &["edge-a"],
    )
    .await;
    wait_stored(&store, "deploy-2", "the second deployment ends", |d| {
        d.status.is_terminal()
    })
    .await;
    assert!(
        quarantined(&store, "edge-a").await,
        "the second NACK quarantines"
    );
    assert_eq!(edges.pushes_to("edge-a"), 2, "{:?}", edges.calls());
    let raised: Vec<_> = alerts
        .0
        .lock()
        .expect("alerts")
        .iter()
        .filter(|(k, _)| *k == AlertKind::Quarantined)
        .cloned()
        .collect();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert!(raised[0].1.contains("edge-a"), "{raised:?}");
    // The alert names the edge, so its notification carries `edgeId`.
    assert_eq!(
        *alerts.1.lock().expect("alerts"),
        [(AlertKind::Quarantined, "edge-a".to_string())]
    );
}

#[tokio::test]
async fn a_push_timeout_in_the_canary_wave_rolls_back_the_timed_out_edge() {
    let targets = ["edge-a", "edge-b", "edge-c", "edge-d"];
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store_with(dir.path(), &targets);
    let edges = ScriptedEdges::new(|_, _| {
        Reply::Answer(EdgeAnswer::Failed {
            error: "no answer within 10s".into(),
        })
    });
    let alerts = Arc::new(Alerts::default());
    let clock = Arc::new(ManualClock::new(START));
    let engine = start_engine(&store, edges.clone(), alerts, clock.clone(), 3);

    deploy(
        &engine,
        &store,
        "deploy-1",
        Strategy::RegionalCanary,
        &targets,
    )
    .await;
    let ended = wait_stored(&store, "deploy-1", "the deployment ends", |d| {
        d.status.is_terminal()
    })
    .await;
    assert_eq!(ended.status, DeploymentStatus::RolledBack, "{ended:?}");
    assert_eq!(
        ended.edges["edge-a"].state,
        EdgeState::RolledBack,
        "{ended:?}"
    );
    // Every attempt timed out, then the canary was rolled back; no later wave was pushed.
    let canary_pushes = Call::Push {
        location: "edge-a".into(),
        version: VERSION.into(),
    };
    assert_eq!(
        edges.calls(),
        vec![
            canary_pushes.clone(),
            canary_pushes.clone(),
            canary_pushes,
            Call::Rollback {
                location: "edge-a".into()
            },
        ]
    );
    for later in ["edge-b", "edge-c", "edge-d"] {
        assert_eq!(ended.edges[later].state, EdgeState::Pending, "{ended:?}");
    }
}

#[tokio::test]
async fn an_ack_after_a_timed_out_attempt_counts_and_the_watch_waits_for_the_clock() {
    let targets = ["edge-a", "edge-b", "edge-c", "edge-d"];
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store_with(dir.path(), &targets);
    // The first push to each edge times out (the edge may well have applied it); the retry acks.
    let edges = ScriptedEdges::new(|_, attempt| match attempt {
        1 => Reply::Answer(EdgeAnswer::Failed {
            error: "no answer within 10s".into(),
        }),
        _ => acked(),
    });
    let clock = Arc::new(ManualClock::new(START));
    let engine = start_engine(
        &store,
        edges.clone(),
        Arc::new(Alerts::default()),
        clock.clone(),
        3,
    );

    deploy(
        &engine,
        &store,
        "deploy-1",
        Strategy::RegionalCanary,
        &targets,
    )
    .await;
    let watched = wait_stored(&store, "deploy-1", "the canary acks", |d| {
        d.edges["edge-a"].state == EdgeState::Acked
    })
    .await;
    let canary = &watched.edges["edge-a"];
    assert_eq!(canary.attempts, 2, "{watched:?}");
    assert_eq!(canary.error, None, "{watched:?}");
    assert_eq!(watched.status, DeploymentStatus::Canary, "{watched:?}");
    assert_eq!(
        edges.pushes_to("edge-b"),
        0,
        "the watch holds the next wave"
    );

    // Past the canary's watch (on the engine's clock), the next wave goes out.
    clock.advance(Duration::from_secs(2 * 3600));
    wait_for("the next wave is pushed", || async {
        engine.tick();
        (edges.pushes_to("edge-b") > 0).then_some(())
    })
    .await;
    let promoted = stored(&store, "deploy-1").await;
    assert_eq!(
        promoted.edges["edge-a"].state,
        EdgeState::Acked,
        "{promoted:?}"
    );
    assert!(
        edges
            .calls()
            .iter()
            .all(|c| !matches!(c, Call::Rollback { .. }))
    );
}

/// Runs `work` on a runtime of its own that is dropped afterwards, taking every task the
/// engine spawned (its loop, pushes in flight) with it: a process that stops.
fn run_process<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(work)
}

#[test]
fn a_restarted_engine_re_issues_the_pushes_left_without_an_answer() {
    let targets = ["edge-a", "edge-b", "edge-c"];
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::new(START));

    // First process: edge-a answers, the pushes to edge-b and edge-c never do.
    let before = ScriptedEdges::new(|location, _| match location {
        "edge-a" => acked(),
        _ => Reply::Hold,
    });
    run_process(async {
        let store = store_with(dir.path(), &targets);
        let engine = start_engine(
            &store,
            before.clone(),
            Arc::new(Alerts::default()),
            clock.clone(),
            3,
        );
        deploy(
            &engine,
            &store,
            "deploy-1",
            Strategy::DirectDeployment,
            &targets,
        )
        .await;
        wait_stored(&store, "deploy-1", "edge-a's ack is stored", |d| {
            d.edges["edge-a"].state == EdgeState::Acked
        })
        .await;
        wait_for("every edge was pushed", || async {
            (before.calls().len() == 3).then_some(())
        })
        .await;
    });
    // Dropping the runtime dropped the store with it.

    let after = ScriptedEdges::new(|_, _| acked());
    run_process(async {
        let store = Store::open(dir.path()).expect("store reopens");
        let left = stored(&store, "deploy-1").await;
        assert_eq!(left.edges["edge-b"].state, EdgeState::Pushed, "{left:?}");
        assert_eq!(left.edges["edge-c"].state, EdgeState::Pushed, "{left:?}");

        let engine = start_engine(
            &store,
            after.clone(),
            Arc::new(Alerts::default()),
            clock.clone(),
            3,
        );
        wait_stored(&store, "deploy-1", "edge-b and edge-c ack", |d| {
            d.edges.values().all(|e| e.state == EdgeState::Acked)
        })
        .await;
        let mut pushed: Vec<_> = after
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Push { location, version } => Some((location, version)),
                Call::Rollback { .. } => None,
            })
            .collect();
        pushed.sort();
        assert_eq!(
            pushed,
            vec![
                ("edge-b".to_string(), VERSION.to_string()),
                ("edge-c".to_string(), VERSION.to_string()),
            ],
            "only the edges without a decision are pushed again"
        );

        // Past the watch, the resumed deployment completes.
        clock.advance(Duration::from_secs(2 * 3600));
        let done = wait_for("the deployment completes", || async {
            engine.tick();
            let deployment = stored(&store, "deploy-1").await;
            deployment.status.is_terminal().then_some(deployment)
        })
        .await;
        assert_eq!(done.status, DeploymentStatus::Completed, "{done:?}");
    });
}

#[tokio::test]
async fn a_step_the_store_refuses_pushes_nothing_and_the_deployment_resumes_with_the_store() {
    let targets = ["edge-a", "edge-b", "edge-c", "edge-d"];
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store_with(dir.path(), &targets);
    let edges = ScriptedEdges::new(|_, _| acked());
    let alerts = Arc::new(Alerts::default());
    let clock = Arc::new(ManualClock::new(START));
    let engine = start_engine(&store, edges.clone(), alerts.clone(), clock.clone(), 3);

    deploy(
        &engine,
        &store,
        "deploy-1",
        Strategy::RegionalCanary,
        &targets,
    )
    .await;
    wait_stored(&store, "deploy-1", "the canary acks", |d| {
        d.edges["edge-a"].state == EdgeState::Acked
    })
    .await;
    let later = ["edge-b", "edge-c", "edge-d"];
    assert!(later.iter().all(|l| edges.pushes_to(l) == 0));

    // The disk fills; past the canary's watch the engine steps into the next wave, whose
    // record the store refuses.
    store.faults().fill();
    clock.advance(Duration::from_secs(2 * 3600));
    engine.tick();
    wait_for("the engine pauses on the refused step", || async {
        alerts
            .0
            .lock()
            .expect("alerts")
            .iter()
            .any(|(kind, _)| *kind == AlertKind::StoreUnavailable)
            .then_some(())
    })
    .await;
    // Turns run one after another: once this answer comes, the refused turn is over.
    let refused = engine
        .operator("deploy-1", OperatorAction::Pause, "admin")
        .await;
    assert!(matches!(refused, Err(EngineError::Store(_))), "{refused:?}");
    for location in later {
        assert_eq!(
            edges.pushes_to(location),
            0,
            "no push for a step that was not stored: {:?}",
            edges.calls()
        );
    }

    // Space is freed: the store takes writes again by itself and the deployment goes on.
    store.faults().clear();
    wait_for("the next wave is pushed", || async {
        engine.tick();
        (edges.pushes_to("edge-b") > 0).then_some(())
    })
    .await;
    let done = wait_for("the deployment completes", || async {
        clock.advance(Duration::from_secs(3600));
        engine.tick();
        let deployment = stored(&store, "deploy-1").await;
        deployment.status.is_terminal().then_some(deployment)
    })
    .await;
    assert_eq!(done.status, DeploymentStatus::Completed, "{done:?}");
    assert!(
        done.edges.values().all(|e| e.state == EdgeState::Acked),
        "{done:?}"
    );
    assert!(
        edges
            .calls()
            .iter()
            .all(|c| !matches!(c, Call::Rollback { .. })),
        "no edge failed for the store's outage: {:?}",
        edges.calls()
    );
    let paused = done
        .events
        .iter()
        .position(|e| e.kind == EventKind::Paused && e.message.contains("store unavailable"))
        .expect("the pause is on the timeline");
    assert_eq!(done.events[paused + 1].kind, EventKind::Resumed, "{done:?}");
    for location in later {
        assert_eq!(edges.pushes_to(location), 1, "{:?}", edges.calls());
    }
}

/// Judges a canary by what its edges last reported: `Fail` once one reported a 5xx. Reads the
/// edge records, not the series, so it works on the manual clock.
struct ReportedErrors {
    store: Store,
}

impl Analysis for ReportedErrors {
    fn analyze(&self, request: AnalysisRequest) -> BoxFuture<'static, AnalysisAnswer> {
        let store = self.store.clone();
        Box::pin(async move {
            let edges = store.read(|r| r.edges()).await.expect("edges");
            let breaching: Vec<String> = edges
                .into_iter()
                .filter(|e| request.canary.contains(&e.location.location_id))
                .filter(|e| e.location.metrics.as_ref().is_some_and(|m| m.errors5xx > 0))
                .map(|e| e.location.location_id)
                .collect();
            let outcome = if breaching.is_empty() {
                AnalysisOutcome::Pass
            } else {
                AnalysisOutcome::Fail {
                    reason: format!("5xx from {}", breaching.join(", ")),
                }
            };
            AnalysisAnswer {
                outcome,
                data: BTreeMap::new(),
            }
        })
    }
}

fn heartbeat(location: &str, at: Timestamp, errors5xx: u64) -> HeartbeatRecord {
    HeartbeatRecord {
        location_id: location.to_string(),
        received_at: at,
        health: EdgeHealth::default(),
        active_configurations: BTreeMap::new(),
        metrics: Some(MetricsSample {
            interval_seconds: 10,
            requests: 1_000,
            errors5xx,
            ..MetricsSample::default()
        }),
        started_at: None,
    }
}

/// When the engine last asked for an analysis of the deployment's watch, once every message
/// sent to it before has been handled (an operator action is answered after its turn).
async fn last_analysis(engine: &Engine, store: &Store, id: &str) -> Option<Timestamp> {
    let _ = engine
        .operator("no-such-deployment", OperatorAction::Pause, "admin")
        .await;
    stored(store, id).await.engine.last_analyze_at
}

#[tokio::test]
async fn a_breaching_heartbeat_of_a_canary_edge_is_judged_when_it_arrives() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ids: Vec<String> = (0..10).map(|i| format!("edge-{i}")).collect();
    let targets: Vec<&str> = ids.iter().map(String::as_str).collect();
    let store = store_with(dir.path(), &targets);
    let clock = Arc::new(ManualClock::new(START));
    let step = StepContext::default();
    let engine = Engine::start(
        store.clone(),
        secrets(),
        ScriptedEdges::new(|_, _| acked()),
        Arc::new(ReportedErrors {
            store: store.clone(),
        }),
        Arc::new(Alerts::default()),
        clock.clone(),
        EngineSettings {
            step: StepContext {
                analyze_interval_ms: 60_000,
                ..step.clone()
            },
            ..settings(3)
        },
    )
    .expect("engine starts");
    let intake = HeartbeatIntake::start(store.clone(), false, {
        let engine = engine.clone();
        Box::new(move |locations| engine.samples_arrived(locations))
    });

    deploy(
        &engine,
        &store,
        "deploy-1",
        Strategy::RegionalCanary,
        &targets,
    )
    .await;
    let watching = wait_stored(&store, "deploy-1", "the canary wave is watched", |d| {
        d.engine.phase == Phase::Watching
    })
    .await;
    let canary = watching
        .edges
        .iter()
        .find(|(_, e)| e.state == EdgeState::Acked)
        .map(|(l, _)| l.clone())
        .expect("a canary edge");
    let baseline = watching
        .edges
        .iter()
        .find(|(_, e)| e.state == EdgeState::Pending)
        .map(|(l, _)| l.clone())
        .expect("an edge not yet deployed");
    let first = watching
        .engine
        .last_analyze_at
        .expect("judged at the start");

    // An edge outside the canary is no evidence about the new version.
    clock.advance(Duration::from_millis(2 * step.analyze_floor_ms as u64));
    intake
        .submit(heartbeat(&baseline, clock.now(), 50))
        .await
        .expect("heartbeat stored");
    assert_eq!(
        last_analysis(&engine, &store, "deploy-1").await,
        Some(first)
    );

    // A canary edge's report within the floor of the last analysis waits for the floor...
    intake
        .submit(heartbeat(&canary, clock.now(), 0))
        .await
        .expect("heartbeat stored");
    let judged = wait_for("the canary's report is judged", || async {
        last_analysis(&engine, &store, "deploy-1")
            .await
            .filter(|at| *at > first)
    })
    .await;
    assert_eq!(judged, clock.now());
    clock.advance(Duration::from_millis(step.analyze_floor_ms as u64 / 2));
    intake
        .submit(heartbeat(&canary, clock.now(), 40))
        .await
        .expect("heartbeat stored");
    assert_eq!(
        last_analysis(&engine, &store, "deploy-1").await,
        Some(judged)
    );
    // ...and is judged once it has passed, long before the analysis interval: the breach
    // rolls the canary back.
    clock.advance(Duration::from_millis(step.analyze_floor_ms as u64));
    assert!(clock.now().millis_since(first) < 60_000);
    let rolled_back = wait_stored(&store, "deploy-1", "the canary is rolled back", |d| {
        engine.tick();
        d.status == DeploymentStatus::RolledBack
    })
    .await;
    assert_eq!(rolled_back.engine.last_analyze_at, Some(clock.now()));
    assert_eq!(
        rolled_back.edges[&canary].state,
        EdgeState::RolledBack,
        "{rolled_back:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_steps_down_stops_its_engine_and_its_promotion_resumes_the_deployment() {
    use edgeplane::cluster::Cluster;
    use edgeplane::cluster::wire::LogQuery;
    use edgeplane::config::ClusterSettings;
    use edgeplane::store::StoreError;

    let targets = ["edge-a", "edge-b", "edge-c", "edge-d"];
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store_with(dir.path(), &targets);
    let cluster = Cluster::new(
        &ClusterSettings {
            // A peer that never answers: this node starts as the primary of its settings.
            peers: vec!["http://127.0.0.1:9".into()],
            secret: "cluster-secret".into(),
            ..ClusterSettings::default()
        },
        dir.path(),
        store.clone(),
    )
    .expect("cluster");
    // The engine's own transport, unfenced: what reaches it is what the engine itself sends.
    let edges = ScriptedEdges::new(|_, _| acked());
    let clock = Arc::new(ManualClock::new(START));
    let engine = Engine::start_idle(
        store.clone(),
        secrets(),
        edges.clone(),
        Arc::new(HealthOnlyAnalysis),
        Arc::new(Alerts::default()),
        clock.clone(),
        settings(3),
    );
    let _duties = cluster.supervise(vec![Arc::new(engine.clone())]);

    deploy(
        &engine,
        &store,
        "deploy-1",
        Strategy::RegionalCanary,
        &targets,
    )
    .await;
    wait_stored(&store, "deploy-1", "the canary acks", |d| {
        d.edges["edge-a"].state == EdgeState::Acked
    })
    .await;
    assert_eq!(
        edges.pushes_to("edge-b"),
        0,
        "the watch holds the next wave"
    );

    // A peer asks for the log at a higher term: this node steps down, and its engine stops.
    cluster
        .serve_log(LogQuery {
            from: 1,
            prev_term: 0,
            term: 99,
            node_id: "newer-primary".into(),
            url: String::new(),
            wait_ms: 0,
        })
        .await
        .expect("answered");
    assert!(!cluster.is_primary());
    wait_for("the engine lets go of its deployments", || async {
        engine.running().is_empty().then_some(())
    })
    .await;

    // Past the canary's watch nothing moves: ticks are dropped and requests refused.
    clock.advance(Duration::from_secs(2 * 3600));
    for _ in 0..3 {
        engine.tick();
    }
    // Queued behind the ticks: once it is answered, they were taken.
    let refused = engine
        .operator("deploy-1", OperatorAction::Pause, "admin")
        .await;
    assert!(
        matches!(refused, Err(EngineError::Store(StoreError::NotLeader(_)))),
        "{refused:?}"
    );
    assert_eq!(
        edges.calls().len(),
        1,
        "a stepped-down engine pushes nothing: {:?}",
        edges.calls()
    );
    assert_eq!(
        stored(&store, "deploy-1").await.status,
        DeploymentStatus::Canary
    );

    // Promoted again: the engine reloads the deployment from the store and takes it on.
    let promoted = cluster.promote().await.expect("promoted");
    assert!(promoted.term > 1, "{promoted:?}");
    wait_for("the resumed deployment's next wave is pushed", || async {
        engine.tick();
        (edges.pushes_to("edge-b") > 0).then_some(())
    })
    .await;
    let done = wait_for("the deployment completes", || async {
        clock.advance(Duration::from_secs(3600));
        engine.tick();
        let deployment = stored(&store, "deploy-1").await;
        deployment.status.is_terminal().then_some(deployment)
    })
    .await;
    assert_eq!(done.status, DeploymentStatus::Completed, "{done:?}");
    assert_eq!(
        edges.pushes_to("edge-a"),
        1,
        "the canary's stored ack stands: it is not pushed again"
    );
    for location in ["edge-b", "edge-c", "edge-d"] {
        assert_eq!(edges.pushes_to(location), 1, "{:?}", edges.calls());
    }
}
