//! The deployment engine: one task, one loop over a closed set of messages, driving every
//! running deployment through the pure state machine ([`super::machine`]).
//!
//! Each turn of the loop takes every message that has queued up, steps the deployments they
//! concern, persists each changed deployment through the store's command door, and only then
//! answers callers, publishes timeline events and carries out the returned actions (pushes,
//! rollbacks, analyses) as tasks whose answers come back as messages. Batching the turn is
//! what keeps a thousand acks from costing a thousand commits; persisting before acting is
//! what lets a restart resume every deployment from its last step ([`resume_actions`]).
//!
//! Time comes from a [`Clock`]; edges are reached through an [`EdgeTransport`]; verdicts come
//! from an [`Analysis`]: the three seams tests replace.
//!
//! When the store refuses a step (a full disk, an I/O error), nothing of that step leaves the
//! loop and every running deployment pauses: the loop forgets its in-memory records, which are
//! ahead of the store, raises a `StoreUnavailable` alert and takes no step, answer or timeout
//! until writes resume. Then it reloads the deployments as after a restart, records the pause
//! on their timelines and re-issues the work left without a decision.
//!
//! A node with peers starts its engine idle ([`Engine::start_idle`]): it runs only while the
//! node is primary, is put down (its memory dropped) when the node steps down and loads the
//! unfinished deployments again from the replicated store when it is promoted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::Instrument;
use tracing::field::Empty;

use super::machine::{
    Action, AlertKind, AnalysisOutcome, Event, OperatorAction, PushMode, StepContext, StepError,
    resume_actions, step, step_answers, watches,
};
use super::plan::plan;
use crate::model::{
    ConfigType, Deployment, DeploymentEvent, DeploymentStatus, EventKind, PerformanceSnapshot,
    RollbackConfig, SYSTEM_ACTOR, Timestamp,
};
use crate::secrets::SecretBox;
use crate::store::{
    Applied, Command, CommandEnvelope, DeploymentChanges, EdgeRecord, Store, StoreError,
};

/// The source of time for the engine: the seam through which tests drive time themselves.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// Wall-clock time.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Where and how to reach one edge.
#[derive(Clone, Debug)]
pub struct EdgeTarget {
    pub location_id: String,
    pub endpoint: String,
    /// The edge's agent token (pushes carry it as a bearer).
    pub token: String,
}

/// What to push: one version of one configuration.
#[derive(Clone, Debug)]
pub struct PushContent {
    pub configuration_id: String,
    pub version: String,
    pub config_type: ConfigType,
    /// Content with secrets opened (the edge needs the real private key).
    pub content: Arc<Value>,
    pub metadata: BTreeMap<String, String>,
    pub mode: PushMode,
    /// The body on the wire, encoded (and checksummed) by the transport's first push of this
    /// content and mode and shared by every clone: a push to a thousand edges encodes its
    /// content once, not a thousand times.
    pub encoded: Arc<OnceLock<bytes::Bytes>>,
}

impl PushContent {
    /// The same content pushed in `mode`; an encoded body belongs to one mode only.
    pub fn with_mode(mut self, mode: PushMode) -> Self {
        if self.mode != mode {
            self.mode = mode;
            self.encoded = Arc::default();
        }
        self
    }
}

/// An edge's answer to a push or rollback.
#[derive(Clone, Debug, PartialEq)]
pub enum EdgeAnswer {
    Acked {
        latency_ms: u64,
    },
    Nacked {
        reason: String,
    },
    Failed {
        error: String,
    },
    /// The edge has seen a higher cluster term: this node is no longer primary. Not an
    /// answer about the edge, so the edge is left without a decision for the primary to take.
    StaleTerm {
        seen: u64,
    },
}

/// Why a version's push content could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("version {version} of configuration {configuration_id} not found")]
    NotFound {
        configuration_id: String,
        version: String,
    },
    #[error("cannot open the configuration's secrets: {0}")]
    Secrets(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Reads a version's content and opens its sealed secrets for a push (`mode: apply`): what the
/// engine and the reconciler both send.
pub async fn load_content(
    store: &Store,
    secrets: &SecretBox,
    configuration_id: &str,
    version: &str,
) -> Result<PushContent, ContentError> {
    let (id, wanted) = (configuration_id.to_string(), version.to_string());
    let (configuration, found) = store
        .read(move |r| Ok((r.configuration(&id)?, r.version(&id, &wanted)?)))
        .await?;
    let (Some(configuration), Some(found)) = (configuration, found) else {
        return Err(ContentError::NotFound {
            configuration_id: configuration_id.to_string(),
            version: version.to_string(),
        });
    };
    let mut content = found.content;
    crate::validate::open_secrets(configuration.config_type, &mut content, secrets)
        .map_err(|e| ContentError::Secrets(e.to_string()))?;
    Ok(PushContent {
        configuration_id: configuration_id.to_string(),
        version: version.to_string(),
        config_type: configuration.config_type,
        content: Arc::new(content),
        metadata: found.metadata,
        mode: PushMode::Apply,
        encoded: Arc::default(),
    })
}

/// How the engine reaches edges (the HTTP push client in production).
pub trait EdgeTransport: Send + Sync + 'static {
    fn push(&self, target: EdgeTarget, content: PushContent) -> BoxFuture<'static, EdgeAnswer>;
    /// Makes `to_version` (or, with `None`, the agent's previous version) active again from
    /// the edge's local history.
    fn rollback(
        &self,
        target: EdgeTarget,
        configuration_id: String,
        to_version: Option<String>,
    ) -> BoxFuture<'static, EdgeAnswer>;
}

/// One analysis request: canary edges against baseline edges since `since`.
#[derive(Clone, Debug)]
pub struct AnalysisRequest {
    pub deployment_id: String,
    pub configuration_id: String,
    pub version: String,
    pub rollback_config: RollbackConfig,
    pub canary: Vec<String>,
    pub baseline: Vec<String>,
    pub since: Timestamp,
    pub now: Timestamp,
    pub pre_deployment: Option<PerformanceSnapshot>,
}

/// A verdict and the numbers behind it.
#[derive(Clone, Debug)]
pub struct AnalysisAnswer {
    pub outcome: AnalysisOutcome,
    pub data: BTreeMap<String, String>,
}

/// Judges watch periods (the monitor implements it with metrics).
pub trait Analysis: Send + Sync + 'static {
    fn analyze(&self, request: AnalysisRequest) -> BoxFuture<'static, AnalysisAnswer>;
    /// A snapshot of the targets before anything changes (`preDeploymentMetrics`).
    fn snapshot(
        &self,
        _locations: Vec<String>,
        _now: Timestamp,
    ) -> BoxFuture<'static, Option<PerformanceSnapshot>> {
        Box::pin(async { None })
    }
}

/// Receives the engine's alerts (the monitor's notifier in production).
pub trait AlertSink: Send + Sync + 'static {
    fn alert(&self, deployment: &Deployment, kind: AlertKind, message: &str);
    /// An alert about one edge of the deployment (a quarantine), naming it.
    fn edge_alert(&self, deployment: &Deployment, kind: AlertKind, location: &str, message: &str) {
        let _ = location;
        self.alert(deployment, kind, message);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("deployment '{0}' not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the deployment engine has stopped")]
    Stopped,
}

impl From<ContentError> for EngineError {
    fn from(error: ContentError) -> Self {
        match error {
            ContentError::NotFound {
                configuration_id,
                version,
            } => EngineError::NotFound(format!(
                "version {version} of configuration {configuration_id}"
            )),
            ContentError::Secrets(_) => EngineError::Conflict(error.to_string()),
            ContentError::Store(error) => EngineError::Store(error),
        }
    }
}

impl From<StepError> for EngineError {
    fn from(error: StepError) -> Self {
        EngineError::Conflict(error.to_string())
    }
}

/// Settings the engine works with.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub healthy_within_ms: i64,
    pub tick: Duration,
    pub step: StepContext,
    pub quarantine_after: u32,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            healthy_within_ms: 120_000,
            tick: Duration::from_millis(500),
            step: StepContext::default(),
            quarantine_after: 3,
        }
    }
}

enum Message {
    Start {
        deployment: Box<Deployment>,
        reply: oneshot::Sender<Result<Deployment, EngineError>>,
    },
    Operator {
        deployment_id: String,
        action: OperatorAction,
        actor: String,
        reply: oneshot::Sender<Result<Deployment, EngineError>>,
    },
    Answer {
        deployment_id: String,
        event: Event,
        /// The edge version this answer makes active, when it does.
        edge_version: Option<(String, Option<String>)>,
    },
    Freeze(bool),
    Tick,
    /// Edges whose new samples were just stored.
    Samples(Vec<String>),
}

/// What turns changed in one deployment and the store does not have yet.
#[derive(Debug)]
struct Touched {
    /// Timeline length when the store last had it: later events are new.
    events_before: usize,
    /// The edge versions the acks made active.
    edge_versions: Vec<(String, Option<String>)>,
    /// Edges named by the answers stepped.
    edges: BTreeSet<String>,
    /// Every edge may have changed (a start, an operator's action, a new wave, a rollback).
    all_edges: bool,
    /// The waves were planned.
    waves: bool,
}

impl Touched {
    fn new(events_before: usize) -> Self {
        Self {
            events_before,
            edge_versions: Vec::new(),
            edges: BTreeSet::new(),
            all_edges: false,
            waves: false,
        }
    }

    /// Adds what an earlier, unsaved turn changed.
    fn merge(&mut self, earlier: Touched) {
        self.events_before = self.events_before.min(earlier.events_before);
        let mut edge_versions = earlier.edge_versions;
        edge_versions.append(&mut self.edge_versions);
        self.edge_versions = edge_versions;
        self.edges.extend(earlier.edges);
        self.all_edges |= earlier.all_edges;
        self.waves |= earlier.waves;
    }

    /// The changed parts of `deployment` to save. The machine changes an edge other than the
    /// one an answer names only in a step that also puts a deployment-level event (a wave, a
    /// rollback, the end) on the timeline, so such an event means every edge is saved.
    fn changes(&self, deployment: &Deployment) -> DeploymentChanges {
        let first_event = self.events_before.min(deployment.events.len());
        let new_events = &deployment.events[first_event..];
        let all_edges = self.all_edges || new_events.iter().any(|e| e.location_id.is_none());
        let edges = if all_edges {
            deployment
                .edges
                .iter()
                .map(|(location, edge)| (location.clone(), edge.clone()))
                .collect()
        } else {
            self.edges
                .iter()
                .filter_map(|location| {
                    let edge = deployment.edges.get(location)?;
                    Some((location.clone(), edge.clone()))
                })
                .collect()
        };
        DeploymentChanges {
            header: Box::new(deployment.header()),
            waves: self.waves.then(|| deployment.engine.waves.clone()),
            edges,
            first_event: first_event as u64,
            events: new_events.to_vec(),
        }
    }
}

/// The edge an answer is about.
fn answered_edge(event: &Event) -> Option<&str> {
    match event {
        Event::EdgeAcked { location, .. }
        | Event::EdgeNacked { location, .. }
        | Event::EdgeFailed { location, .. }
        | Event::EdgeRolledBack { location }
        | Event::EdgeRollbackFailed { location, .. } => Some(location),
        _ => None,
    }
}

/// A timeline event of one deployment, as SSE streams forward it.
#[derive(Clone, Debug)]
pub struct Published {
    pub deployment_id: String,
    /// Position of the event on the deployment's timeline.
    pub index: usize,
    pub event: DeploymentEvent,
    /// The deployment's status after the event.
    pub status: crate::model::DeploymentStatus,
}

/// Handle to the running engine; clones share it.
#[derive(Clone)]
pub struct Engine {
    queue: mpsc::UnboundedSender<Message>,
    published: broadcast::Sender<Published>,
    running: Arc<Mutex<BTreeMap<String, RunningSummary>>>,
    /// Whether an engine started with [`Engine::start_idle`] should run.
    duty: Arc<watch::Sender<Duty>>,
}

/// What an engine started idle has been told to do. Each time it is told to run is a new
/// `On`, so a loop that missed an `Off` in between still stops and reloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Duty {
    /// Nothing yet (the node is starting): requests wait in the queue.
    Untold,
    /// Not to run: requests are refused as on a node that is not the primary.
    Off,
    On(u64),
}

/// What the API needs to know about a running deployment without asking the loop.
#[derive(Clone, Debug)]
pub struct RunningSummary {
    pub configuration_id: String,
    pub targets: BTreeSet<String>,
}

struct Loop {
    store: Store,
    secrets: SecretBox,
    transport: Arc<dyn EdgeTransport>,
    analysis: Arc<dyn Analysis>,
    alerts: Arc<dyn AlertSink>,
    clock: Arc<dyn Clock>,
    settings: EngineSettings,
    deployments: HashMap<String, Deployment>,
    /// Changes whose save failed, carried by the next save of their deployment.
    unsaved: HashMap<String, Touched>,
    /// Unhealthy edges and when they were read: answers alone do not need a fresh read.
    unhealthy: Option<(Timestamp, BTreeSet<String>)>,
    contents: HashMap<(String, String), PushContent>,
    /// Each edge's target, with the sealed token it was opened from.
    targets: HashMap<String, (String, EdgeTarget)>,
    queue: mpsc::UnboundedSender<Message>,
    published: broadcast::Sender<Published>,
    running: Arc<Mutex<BTreeMap<String, RunningSummary>>>,
    /// Since when the store has refused the engine's writes; `None` while it takes them.
    suspended: Option<Timestamp>,
    /// Deployments owed an analysis of new samples of their canary edges, judged as soon as
    /// the analysis floor lets them be.
    evidence_owed: BTreeSet<String>,
}

impl Engine {
    /// Loads every unfinished deployment from the store, re-issues its pending work and
    /// starts the loop.
    pub fn start(
        store: Store,
        secrets: SecretBox,
        transport: Arc<dyn EdgeTransport>,
        analysis: Arc<dyn Analysis>,
        alerts: Arc<dyn AlertSink>,
        clock: Arc<dyn Clock>,
        settings: EngineSettings,
    ) -> Result<Engine, EngineError> {
        let unfinished = unfinished_deployments(&store.reader()?)?;
        let (engine, mut engine_loop, receiver) =
            Self::build(store, secrets, transport, analysis, alerts, clock, settings);
        let resumed = engine_loop.take_up(unfinished);
        tokio::spawn(async move {
            let mut receiver = receiver;
            engine_loop
                .resume_and_run(resumed, &mut receiver, None)
                .await;
        });
        Ok(engine)
    }

    /// An engine that holds nothing and runs nothing until [`Engine::take_up`]: then it loads
    /// the unfinished deployments from the store and resumes them as [`Engine::start`] does,
    /// until [`Engine::put_down`], when the turn under way ends, nothing more is pushed and
    /// everything it held in memory is dropped. It can be taken up again (from the store as it
    /// is then) any number of times: a node's engine runs only while the node is primary.
    /// Requests sent before it is first told either way wait in the queue; while it is put
    /// down they are refused with `NotLeader`.
    #[allow(clippy::too_many_arguments)]
    pub fn start_idle(
        store: Store,
        secrets: SecretBox,
        transport: Arc<dyn EdgeTransport>,
        analysis: Arc<dyn Analysis>,
        alerts: Arc<dyn AlertSink>,
        clock: Arc<dyn Clock>,
        settings: EngineSettings,
    ) -> Engine {
        let (engine, template, mut receiver) =
            Self::build(store, secrets, transport, analysis, alerts, clock, settings);
        let mut duty = engine.duty.subscribe();
        tokio::spawn(async move {
            loop {
                let Some(generation) = wait_until_on(&mut duty, &mut receiver).await else {
                    return;
                };
                let unfinished = match template.store.read(unfinished_deployments).await {
                    Ok(unfinished) => unfinished,
                    Err(error) => {
                        tracing::error!(%error, "the deployment engine cannot read the store; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let mut engine_loop = template.fresh();
                let resumed = engine_loop.take_up(unfinished);
                tracing::info!(
                    deployments = resumed.len(),
                    "the deployment engine runs: unfinished deployments resume from the store"
                );
                let stop = duty.clone();
                engine_loop
                    .resume_and_run(resumed, &mut receiver, Some((stop, generation)))
                    .await;
                template.forget_running();
                tracing::warn!(
                    "the deployment engine stopped: this node no longer pushes or steps deployments"
                );
            }
        });
        engine
    }

    /// Has an engine started with [`Engine::start_idle`] load the unfinished deployments and
    /// run (again). No effect on one that runs already, nor on one from [`Engine::start`].
    pub fn take_up(&self) {
        self.duty.send_if_modified(|duty| {
            if matches!(duty, Duty::On(_)) {
                return false;
            }
            *duty = Duty::On(GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            true
        });
    }

    /// Stops an engine started with [`Engine::start_idle`]: the turn under way ends, nothing
    /// more is pushed, and what it held in memory is dropped (the store keeps it).
    pub fn put_down(&self) {
        self.duty.send_if_modified(|duty| {
            let changed = *duty != Duty::Off;
            *duty = Duty::Off;
            changed
        });
    }

    fn build(
        store: Store,
        secrets: SecretBox,
        transport: Arc<dyn EdgeTransport>,
        analysis: Arc<dyn Analysis>,
        alerts: Arc<dyn AlertSink>,
        clock: Arc<dyn Clock>,
        settings: EngineSettings,
    ) -> (Engine, Loop, mpsc::UnboundedReceiver<Message>) {
        let (queue, receiver) = mpsc::unbounded_channel();
        let (published, _) = broadcast::channel(16_384);
        let running = Arc::new(Mutex::new(BTreeMap::new()));
        let engine_loop = Loop {
            store,
            secrets,
            transport,
            analysis,
            alerts,
            clock,
            settings,
            deployments: HashMap::new(),
            unsaved: HashMap::new(),
            unhealthy: None,
            contents: HashMap::new(),
            targets: HashMap::new(),
            queue: queue.clone(),
            published: published.clone(),
            running: running.clone(),
            suspended: None,
            evidence_owed: BTreeSet::new(),
        };
        let engine = Engine {
            queue,
            published,
            running,
            duty: Arc::new(watch::channel(Duty::Untold).0),
        };
        (engine, engine_loop, receiver)
    }

    /// Starts a deployment the store has admitted (status Pending); answers once the start
    /// is persisted. One that cannot start is persisted as Failed, freeing its slot.
    pub async fn start_deployment(
        &self,
        deployment: Deployment,
    ) -> Result<Deployment, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Message::Start {
                deployment: Box::new(deployment),
                reply,
            })
            .map_err(|_| EngineError::Stopped)?;
        answer.await.map_err(|_| EngineError::Stopped)?
    }

    /// An operator's action; answers with the persisted result, or a conflict.
    pub async fn operator(
        &self,
        deployment_id: &str,
        action: OperatorAction,
        actor: &str,
    ) -> Result<Deployment, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Message::Operator {
                deployment_id: deployment_id.into(),
                action,
                actor: actor.into(),
                reply,
            })
            .map_err(|_| EngineError::Stopped)?;
        answer.await.map_err(|_| EngineError::Stopped)?
    }

    /// Pauses (or lets go of) every running deployment for a global freeze.
    pub fn set_frozen(&self, frozen: bool) {
        let _ = self.queue.send(Message::Freeze(frozen));
    }

    /// Makes the loop look at the clock now (tests advance a manual clock, then tick).
    pub fn tick(&self) {
        let _ = self.queue.send(Message::Tick);
    }

    /// New samples of `locations` are stored: a watch they are evidence for is judged now,
    /// not at its next analysis interval (the heartbeat intake calls this after each batch).
    pub fn samples_arrived(&self, locations: Vec<String>) {
        let _ = self.queue.send(Message::Samples(locations));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.published.subscribe()
    }

    /// Running deployments by id.
    pub fn running(&self) -> BTreeMap<String, RunningSummary> {
        self.running.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn unfinished_deployments(reader: &crate::store::Reader) -> Result<Vec<Deployment>, StoreError> {
    Ok(reader
        .deployments()?
        .into_iter()
        .filter(|d| !d.status.is_terminal())
        .collect())
}

/// Where each engine's `On` generations come from: any number, as long as it is new.
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Resolves once a loop started for `On(generation)` must stop: it was put down, or put down
/// and taken up again since. Never for a loop without a duty (or whose handles are gone).
async fn told_to_stop(stop: &mut Option<(watch::Receiver<Duty>, u64)>) {
    let Some((duty, generation)) = stop else {
        return std::future::pending().await;
    };
    let generation = *generation;
    if duty
        .wait_for(|duty| *duty != Duty::On(generation))
        .await
        .is_err()
    {
        std::future::pending::<()>().await;
    }
}

/// Waits until an idle engine is told to run and answers the generation; meanwhile requests
/// wait while nothing was said and are refused while it is put down. `None` once every handle
/// is gone.
async fn wait_until_on(
    duty: &mut watch::Receiver<Duty>,
    receiver: &mut mpsc::UnboundedReceiver<Message>,
) -> Option<u64> {
    loop {
        let told = *duty.borrow_and_update();
        match told {
            Duty::On(generation) => return Some(generation),
            Duty::Untold => duty.changed().await.ok()?,
            Duty::Off => tokio::select! {
                changed = duty.changed() => changed.ok()?,
                message = receiver.recv() => refuse(vec![message?], not_primary),
            },
        }
    }
}

fn not_primary() -> EngineError {
    EngineError::Store(StoreError::NotLeader(
        "this node is not the primary: its deployment engine does not run".into(),
    ))
}

impl Loop {
    /// Takes up every unfinished deployment; answers the work to re-issue for each.
    fn take_up(&mut self, unfinished: Vec<Deployment>) -> Vec<(String, Vec<Action>)> {
        let now = self.clock.now();
        let mut resumed = Vec::new();
        for deployment in unfinished {
            // Admitted by the store but stopped before the engine planned it: start it now.
            if deployment.status == DeploymentStatus::Pending && deployment.started_at.is_none() {
                let (reply, _) = oneshot::channel();
                let _ = self.queue.send(Message::Start {
                    deployment: Box::new(deployment),
                    reply,
                });
                continue;
            }
            tracing::info!(
                deployment_id = %deployment.deployment_id,
                status = ?deployment.status,
                "resuming deployment after restart"
            );
            let actions = resume_actions(&deployment, now);
            self.track(&deployment);
            resumed.push((deployment.deployment_id.clone(), actions));
            self.deployments
                .insert(deployment.deployment_id.clone(), deployment);
        }
        resumed
    }

    /// Re-issues the work `take_up` answered, then runs the loop (until `stop` says so).
    async fn resume_and_run(
        mut self,
        resumed: Vec<(String, Vec<Action>)>,
        receiver: &mut mpsc::UnboundedReceiver<Message>,
        stop: Option<(watch::Receiver<Duty>, u64)>,
    ) {
        let _ = self.refresh_targets().await;
        for (id, actions) in resumed {
            self.execute(&id, actions).await;
        }
        self.run(receiver, stop).await;
    }

    /// The loop: turns until the queue closes or, for an engine started idle, until it is
    /// told to stop. A turn under way always ends first.
    async fn run(
        mut self,
        receiver: &mut mpsc::UnboundedReceiver<Message>,
        mut stop: Option<(watch::Receiver<Duty>, u64)>,
    ) {
        let mut tick = tokio::time::interval(self.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                biased;
                () = told_to_stop(&mut stop) => return,
                message = receiver.recv() => match message {
                    Some(message) => message,
                    None => return,
                },
                _ = tick.tick() => Message::Tick,
            };
            let mut batch = vec![first];
            while batch.len() < 8192 {
                match receiver.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
            self.turn(batch).await;
        }
    }

    /// A loop with the same seams and handles as this one and nothing in memory.
    fn fresh(&self) -> Loop {
        Loop {
            store: self.store.clone(),
            secrets: self.secrets.clone(),
            transport: self.transport.clone(),
            analysis: self.analysis.clone(),
            alerts: self.alerts.clone(),
            clock: self.clock.clone(),
            settings: self.settings.clone(),
            deployments: HashMap::new(),
            unsaved: HashMap::new(),
            unhealthy: None,
            contents: HashMap::new(),
            targets: HashMap::new(),
            queue: self.queue.clone(),
            published: self.published.clone(),
            running: self.running.clone(),
            suspended: None,
            evidence_owed: BTreeSet::new(),
        }
    }

    /// A stopped engine runs no deployment.
    fn forget_running(&self) {
        if let Ok(mut running) = self.running.lock() {
            running.clear();
        }
        metrics::gauge!("edgeplane_deployments_in_progress").set(0.0);
    }

    /// One turn: step everything, persist, answer, publish, act.
    async fn turn(&mut self, batch: Vec<Message>) {
        let now = self.clock.now();
        if let Some(since) = self.suspended
            && !self.resume_after_store_outage(since, now).await
        {
            refuse_while_suspended(batch);
            return;
        }
        let mut touched: BTreeMap<String, Touched> = BTreeMap::new();
        let mut actions: BTreeMap<String, Vec<Action>> = BTreeMap::new();
        let mut replies = Vec::new();
        let mut ticked = false;
        // A start the store could not serve: it stays admitted and starts once writes resume.
        let mut start_refused: Option<StoreError> = None;
        let mut context = self.settings.step.clone();
        // Answers alone never start a wave on their own health check worth a fresh read, and
        // news of samples asks for an analysis, which reads no health: a read at most a second
        // old serves such a turn (the heartbeat intake sends samples many times a second while
        // a fleet heartbeats); anything else reads the edges again.
        let answers_only = batch
            .iter()
            .all(|m| matches!(m, Message::Answer { .. } | Message::Samples(_)));
        context.unhealthy = self.unhealthy_edges(now, answers_only).await;
        // Answers wait here, by deployment and in order, and are stepped together.
        let mut answers: BTreeMap<String, Vec<Event>> = BTreeMap::new();

        for message in batch {
            match message {
                Message::Tick => ticked = true,
                Message::Samples(locations) => {
                    for (id, deployment) in &self.deployments {
                        if locations.iter().any(|l| watches(deployment, l)) {
                            self.evidence_owed.insert(id.clone());
                        }
                    }
                }
                Message::Start { deployment, reply } => {
                    let id = deployment.deployment_id.clone();
                    // Started already: a start sent while the engine was idle is also
                    // re-sent from the store when it takes up its work.
                    if self.deployments.contains_key(&id) {
                        replies.push((reply, id));
                        continue;
                    }
                    let admitted = (*deployment).clone();
                    match self.begin(*deployment, now, &context).await {
                        Ok(new_actions) => {
                            let entry = touched.entry(id.clone()).or_insert(Touched::new(0));
                            entry.all_edges = true;
                            entry.waves = true;
                            actions.entry(id.clone()).or_default().extend(new_actions);
                            replies.push((reply, id));
                        }
                        Err(EngineError::Store(error)) if store_refuses_writes(&error) => {
                            let _ = reply.send(Err(EngineError::Store(error.clone())));
                            start_refused = Some(error);
                        }
                        Err(error) => {
                            self.fail_unstarted(admitted, now, &error).await;
                            let _ = reply.send(Err(error));
                        }
                    }
                }
                Message::Operator {
                    deployment_id,
                    action,
                    actor,
                    reply,
                } => {
                    self.step_answers(&deployment_id, &mut answers, &mut actions, now, &context);
                    let Some(deployment) = self.deployments.get_mut(&deployment_id) else {
                        let answer = match self
                            .store
                            .reader()
                            .and_then(|r| r.deployment(&deployment_id))
                        {
                            Ok(Some(finished)) => Err(EngineError::Conflict(format!(
                                "deployment is {:?} and can no longer change",
                                finished.status
                            ))),
                            Ok(None) => Err(EngineError::NotFound(deployment_id)),
                            Err(error) => Err(error.into()),
                        };
                        let _ = reply.send(answer);
                        continue;
                    };
                    let before = deployment.events.len();
                    match step(deployment, Event::Operator { action, actor }, now, &context) {
                        Ok(new_actions) => {
                            touched
                                .entry(deployment_id.clone())
                                .or_insert(Touched::new(before))
                                .all_edges = true;
                            actions
                                .entry(deployment_id.clone())
                                .or_default()
                                .extend(new_actions);
                            replies.push((reply, deployment_id));
                        }
                        Err(error) => {
                            let _ = reply.send(Err(error.into()));
                        }
                    }
                }
                Message::Answer {
                    deployment_id,
                    event,
                    edge_version,
                } => {
                    let Some(deployment) = self.deployments.get(&deployment_id) else {
                        continue;
                    };
                    if let Event::EdgeNacked { location, .. } = &event {
                        let quarantined = record_nack(
                            &self.store,
                            location,
                            deployment,
                            self.settings.quarantine_after,
                        )
                        .await;
                        if quarantined {
                            self.alerts.edge_alert(
                                deployment,
                                AlertKind::Quarantined,
                                location,
                                &format!(
                                    "edge {location} NACKed version {} {} times and is quarantined",
                                    deployment.configuration_version,
                                    self.settings.quarantine_after
                                ),
                            );
                        }
                    }
                    let entry = touched
                        .entry(deployment_id.clone())
                        .or_insert(Touched::new(deployment.events.len()));
                    if let Some(location) = answered_edge(&event) {
                        entry.edges.insert(location.to_string());
                    }
                    if let Some(change) = edge_version {
                        entry.edge_versions.push(change);
                    }
                    answers.entry(deployment_id).or_default().push(event);
                }
                Message::Freeze(frozen) => {
                    let waiting: Vec<String> = answers.keys().cloned().collect();
                    for id in waiting {
                        self.step_answers(&id, &mut answers, &mut actions, now, &context);
                    }
                    for (id, deployment) in self.deployments.iter_mut() {
                        let before = deployment.events.len();
                        let event = if frozen {
                            Event::Freeze
                        } else {
                            Event::Unfreeze
                        };
                        if let Ok(new_actions) = step(deployment, event, now, &context) {
                            touched
                                .entry(id.clone())
                                .or_insert(Touched::new(before))
                                .all_edges = true;
                            actions.entry(id.clone()).or_default().extend(new_actions);
                        }
                    }
                }
            }
        }
        let waiting: Vec<String> = answers.keys().cloned().collect();
        for id in waiting {
            self.step_answers(&id, &mut answers, &mut actions, now, &context);
        }
        // Watches owed a judgement of new samples: asked for now unless the floor holds them
        // back to a later turn (the loop's own tick brings one).
        let owed: Vec<String> = self.evidence_owed.iter().cloned().collect();
        for id in owed {
            let Some(deployment) = self.deployments.get_mut(&id) else {
                self.evidence_owed.remove(&id);
                continue;
            };
            let before = deployment.events.len();
            let new_actions =
                step(deployment, Event::SamplesArrived, now, &context).unwrap_or_default();
            if new_actions.is_empty() {
                if deployment.engine.phase != crate::model::Phase::Watching
                    || deployment.status.is_terminal()
                {
                    self.evidence_owed.remove(&id);
                }
                continue;
            }
            self.evidence_owed.remove(&id);
            touched.entry(id.clone()).or_insert(Touched::new(before));
            actions.entry(id).or_default().extend(new_actions);
        }

        if ticked {
            for (id, deployment) in self.deployments.iter_mut() {
                let before = deployment.events.len();
                let snapshot = (
                    deployment.status,
                    deployment.engine.phase,
                    deployment.engine.wave,
                );
                if let Ok(new_actions) = step(deployment, Event::Tick, now, &context) {
                    let changed = !new_actions.is_empty()
                        || deployment.events.len() != before
                        || snapshot
                            != (
                                deployment.status,
                                deployment.engine.phase,
                                deployment.engine.wave,
                            );
                    if changed {
                        touched.entry(id.clone()).or_insert(Touched::new(before));
                        actions.entry(id.clone()).or_default().extend(new_actions);
                    }
                }
            }
        }

        // A deployment that just ended gets its post-deployment snapshot: the edges it
        // touched, over the monitor's recent window.
        for id in touched.keys() {
            let Some(deployment) = self.deployments.get(id) else {
                continue;
            };
            if deployment.status.is_terminal() && deployment.post_deployment_metrics.is_none() {
                let touched_edges: Vec<String> = deployment
                    .edges
                    .iter()
                    .filter(|(_, e)| e.pushed_at.is_some())
                    .map(|(location, _)| location.clone())
                    .collect();
                let snapshot = self.analysis.snapshot(touched_edges, now).await;
                if let Some(deployment) = self.deployments.get_mut(id) {
                    deployment.post_deployment_metrics = snapshot;
                }
            }
        }

        // Changes an earlier turn could not save go with this turn's.
        let unsaved: Vec<String> = self.unsaved.keys().cloned().collect();
        for id in unsaved {
            if let Some(earlier) = self.unsaved.remove(&id) {
                match touched.get_mut(&id) {
                    Some(entry) => entry.merge(earlier),
                    None => {
                        touched.insert(id, earlier);
                    }
                }
            }
        }

        // Persist before anything leaves this loop: only what changed, so a turn's cost
        // follows its answers, not the size of the fleet.
        let mut refused: Option<StoreError> = None;
        for (id, changed) in touched {
            if refused.is_some() {
                actions.remove(&id);
                continue;
            }
            let Some(deployment) = self.deployments.get(&id) else {
                continue;
            };
            let saved = self
                .store
                .apply(CommandEnvelope::new(
                    deployment
                        .events
                        .last()
                        .map(|e| e.actor.clone())
                        .unwrap_or_else(|| SYSTEM_ACTOR.to_string()),
                    "",
                    Command::SaveDeploymentChanges {
                        changes: changed.changes(deployment),
                        edge_versions: changed.edge_versions.clone(),
                    },
                ))
                .await;
            if let Err(error) = saved {
                // The step is not durable: do not act on it.
                actions.remove(&id);
                if store_refuses_writes(&error) {
                    refused = Some(error);
                } else {
                    // The in-memory record is ahead of the store; the next successful save
                    // carries it.
                    tracing::error!(deployment_id = %id, %error, "cannot persist deployment step");
                    self.unsaved.insert(id, changed);
                }
                continue;
            }
            for (index, event) in deployment
                .events
                .iter()
                .enumerate()
                .skip(changed.events_before)
            {
                log_event(deployment, event);
                let _ = self.published.send(Published {
                    deployment_id: id.clone(),
                    index,
                    event: event.clone(),
                    status: deployment.status,
                });
            }
            metrics::gauge!("edgeplane_deployment_progress_percent", "deployment" => id.clone())
                .set(f64::from(deployment.progress_percentage));
        }
        for (reply, id) in replies {
            let answer = match &refused {
                Some(error) if !actions.contains_key(&id) => Err(EngineError::Store(error.clone())),
                _ => self
                    .deployments
                    .get(&id)
                    .cloned()
                    .ok_or(EngineError::NotFound(id)),
            };
            let _ = reply.send(answer);
        }
        for (id, list) in actions {
            self.execute(&id, list).await;
        }
        if let Some(error) = refused.or(start_refused) {
            self.suspend(now, &error);
            return;
        }
        // Finished deployments leave memory; the store keeps them.
        let finished: Vec<String> = self
            .deployments
            .iter()
            .filter(|(id, d)| d.status.is_terminal() && !self.unsaved.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in finished {
            self.deployments.remove(&id);
            if let Ok(mut running) = self.running.lock() {
                running.remove(&id);
            }
        }
        // Set every turn, so a running deployment's progress stays exported through a long
        // watch while a finished one's goes idle and is dropped.
        for (id, deployment) in &self.deployments {
            metrics::gauge!("edgeplane_deployment_progress_percent", "deployment" => id.clone())
                .set(f64::from(deployment.progress_percentage));
        }
        metrics::gauge!("edgeplane_deployments_in_progress").set(self.deployments.len() as f64);
    }

    /// Steps the answers waiting for one deployment, all at once ([`step_answers`]).
    fn step_answers(
        &mut self,
        deployment_id: &str,
        answers: &mut BTreeMap<String, Vec<Event>>,
        actions: &mut BTreeMap<String, Vec<Action>>,
        now: Timestamp,
        context: &StepContext,
    ) {
        let Some(events) = answers.remove(deployment_id) else {
            return;
        };
        let Some(deployment) = self.deployments.get_mut(deployment_id) else {
            return;
        };
        let new_actions = step_answers(deployment, events, now, context);
        if !new_actions.is_empty() {
            actions
                .entry(deployment_id.to_string())
                .or_default()
                .extend(new_actions);
        }
    }

    /// The store refused a step: every running deployment pauses until writes resume. The
    /// records in memory may be ahead of the store, so they are dropped and reloaded then.
    fn suspend(&mut self, now: Timestamp, error: &StoreError) {
        self.suspended = Some(now);
        tracing::error!(
            %error,
            deployments = self.deployments.len(),
            "store unavailable: running deployments are paused until writes resume"
        );
        for deployment in self.deployments.values() {
            self.alerts.alert(
                deployment,
                AlertKind::StoreUnavailable,
                &format!(
                    "store unavailable: deployment paused until writes resume; nothing that \
                     could not be saved was pushed ({error})"
                ),
            );
        }
        self.deployments.clear();
        self.unsaved.clear();
    }

    /// Once the store takes writes again: reloads the unfinished deployments, records the
    /// pause on their timelines and re-issues their pending work, as after a restart. Answers
    /// whether the engine runs again.
    async fn resume_after_store_outage(&mut self, since: Timestamp, now: Timestamp) -> bool {
        if !self.store.status().writable {
            return false;
        }
        let unfinished = match self.store.read(|r| r.deployments()).await {
            Ok(all) => all
                .into_iter()
                .filter(|d| !d.status.is_terminal())
                .collect::<Vec<_>>(),
            Err(error) => {
                tracing::debug!(%error, "deployments cannot be reloaded yet");
                return false;
            }
        };
        self.suspended = None;
        let _ = self.refresh_targets().await;
        let mut resumed = Vec::new();
        for mut deployment in unfinished {
            // Admitted but never started: start it now, as after a restart.
            if deployment.status == DeploymentStatus::Pending && deployment.started_at.is_none() {
                let (reply, _) = oneshot::channel();
                let _ = self.queue.send(Message::Start {
                    deployment: Box::new(deployment),
                    reply,
                });
                continue;
            }
            let before = deployment.events.len();
            for (at, kind, message) in [
                (
                    since,
                    EventKind::Paused,
                    "store unavailable: paused until writes resume",
                ),
                (now, EventKind::Resumed, "store writable again: resumed"),
            ] {
                deployment.events.push(DeploymentEvent {
                    at,
                    kind,
                    actor: SYSTEM_ACTOR.to_string(),
                    message: message.to_string(),
                    location_id: None,
                    version: Some(deployment.configuration_version.clone()),
                    data: BTreeMap::new(),
                });
            }
            let saved = self
                .store
                .apply(CommandEnvelope::new(
                    SYSTEM_ACTOR,
                    "",
                    Command::SaveDeployment {
                        deployment: Box::new(deployment.clone()),
                        edge_versions: Vec::new(),
                    },
                ))
                .await;
            if let Err(error) = saved {
                // Refused again: stay paused and reload everything on the next try.
                self.suspended = Some(since);
                self.deployments.clear();
                tracing::debug!(%error, "store refused the resumption; still paused");
                return false;
            }
            let id = deployment.deployment_id.clone();
            for (index, event) in deployment.events.iter().enumerate().skip(before) {
                log_event(&deployment, event);
                let _ = self.published.send(Published {
                    deployment_id: id.clone(),
                    index,
                    event: event.clone(),
                    status: deployment.status,
                });
            }
            resumed.push((id.clone(), resume_actions(&deployment, now)));
            self.track(&deployment);
            self.deployments.insert(id, deployment);
        }
        // A freeze set or lifted just before the outage may have been dropped with the
        // messages; the stored one decides (both steps are idempotent).
        if let Ok(freeze) = self.store.read(|r| r.freeze()).await {
            let _ = self.queue.send(Message::Freeze(freeze.is_some()));
        }
        tracing::info!(
            deployments = resumed.len(),
            "store writable again: deployments resumed"
        );
        for (id, actions) in resumed {
            self.execute(&id, actions).await;
        }
        true
    }

    fn track(&self, deployment: &Deployment) {
        if let Ok(mut running) = self.running.lock() {
            running.insert(
                deployment.deployment_id.clone(),
                RunningSummary {
                    configuration_id: deployment.configuration_id.clone(),
                    targets: deployment.edges.keys().cloned().collect(),
                },
            );
        }
    }

    /// Plans and starts a deployment.
    async fn begin(
        &mut self,
        mut deployment: Deployment,
        now: Timestamp,
        context: &StepContext,
    ) -> Result<Vec<Action>, EngineError> {
        self.load_content(
            &deployment.configuration_id,
            &deployment.configuration_version,
        )
        .await?;
        let edges: Vec<_> = self
            .refresh_targets()
            .await?
            .into_iter()
            .map(|r| r.location)
            .collect();
        let planned = plan(&deployment, &edges, now, self.settings.healthy_within_ms);
        let locations: Vec<String> = planned
            .waves
            .iter()
            .flat_map(|w| w.locations.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        deployment.pre_deployment_metrics = self.analysis.snapshot(locations, now).await;
        let actions = step(
            &mut deployment,
            Event::Start { plan: planned },
            now,
            context,
        )?;
        self.track(&deployment);
        self.deployments
            .insert(deployment.deployment_id.clone(), deployment);
        Ok(actions)
    }

    /// Ends an admitted deployment that could not start as Failed, so that it does not hold
    /// its configuration's running slot.
    async fn fail_unstarted(
        &self,
        mut deployment: Deployment,
        now: Timestamp,
        error: &EngineError,
    ) {
        let message = format!("the deployment could not start: {error}");
        deployment.status = DeploymentStatus::Failed;
        deployment.completed_at = Some(now);
        deployment.errors.push(message.clone());
        deployment.events.push(DeploymentEvent {
            at: now,
            kind: EventKind::Failed,
            actor: SYSTEM_ACTOR.to_string(),
            message,
            location_id: None,
            version: Some(deployment.configuration_version.clone()),
            data: BTreeMap::new(),
        });
        let id = deployment.deployment_id.clone();
        let saved = self
            .store
            .apply(CommandEnvelope::new(
                SYSTEM_ACTOR,
                "",
                Command::SaveDeployment {
                    deployment: Box::new(deployment),
                    edge_versions: Vec::new(),
                },
            ))
            .await;
        if let Err(error) = saved {
            tracing::error!(deployment_id = %id, %error, "cannot record a failed start");
        }
    }

    /// Caches the push content of a version (see [`load_content`]).
    async fn load_content(
        &mut self,
        configuration_id: &str,
        version: &str,
    ) -> Result<(), EngineError> {
        let key = (configuration_id.to_string(), version.to_string());
        if self.contents.contains_key(&key) {
            return Ok(());
        }
        let content = load_content(&self.store, &self.secrets, configuration_id, version).await?;
        self.contents.insert(key, content);
        Ok(())
    }

    /// Reloads every edge's endpoint and agent token, and returns the edges read. A token is
    /// opened again only when its sealed form changed: a deployment to thousands of edges
    /// should not start with thousands of decryptions.
    async fn refresh_targets(&mut self) -> Result<Vec<EdgeRecord>, StoreError> {
        let records = match self.store.read(|r| r.edges()).await {
            Ok(records) => records,
            Err(error) => {
                tracing::error!(%error, "cannot read edges");
                return Err(error);
            }
        };
        let mut previous = std::mem::take(&mut self.targets);
        for record in &records {
            let location_id = &record.location.location_id;
            let known = previous
                .remove(location_id)
                .filter(|(sealed, _)| *sealed == record.token_sealed);
            let token = match known {
                Some((_, target)) => target.token,
                None => match self.secrets.open(&record.token_sealed) {
                    Ok(token) => token,
                    Err(error) => {
                        tracing::error!(%location_id, %error, "cannot open the edge's token");
                        continue;
                    }
                },
            };
            self.targets.insert(
                location_id.clone(),
                (
                    record.token_sealed.clone(),
                    EdgeTarget {
                        location_id: location_id.clone(),
                        endpoint: record.location.endpoint.clone(),
                        token,
                    },
                ),
            );
        }
        Ok(records)
    }

    /// Target edges that are not healthy now. Reading them decodes every edge, so a turn of
    /// answers only reuses a read less than a second old.
    async fn unhealthy_edges(&mut self, now: Timestamp, answers_only: bool) -> BTreeSet<String> {
        if self.deployments.is_empty() {
            return BTreeSet::new();
        }
        if let Some((read_at, unhealthy)) = &self.unhealthy {
            let fresh = now.millis_since(*read_at) < 1000 && now >= *read_at;
            if answers_only && fresh {
                return unhealthy.clone();
            }
        }
        let within = self.settings.healthy_within_ms;
        let unhealthy: BTreeSet<String> = self
            .store
            .read(move |r| {
                Ok(r.edges()?
                    .into_iter()
                    .filter(|e| !e.location.is_healthy_at(now, within))
                    .map(|e| e.location.location_id)
                    .collect())
            })
            .await
            .unwrap_or_default();
        self.unhealthy = Some((now, unhealthy.clone()));
        unhealthy
    }

    /// Carries out a step's actions as tasks; their answers come back as messages.
    async fn execute(&mut self, deployment_id: &str, actions: Vec<Action>) {
        // Taken out of the map while its actions go out (not copied: it grows with the
        // fleet), and put back after.
        let Some(deployment) = self.deployments.remove(deployment_id) else {
            return;
        };
        for action in actions {
            match action {
                Action::Push {
                    location,
                    mode,
                    version,
                } => {
                    if let Err(error) = self
                        .load_content(&deployment.configuration_id, &version)
                        .await
                    {
                        self.answer(
                            deployment_id,
                            Event::EdgeFailed {
                                location,
                                error: error.to_string(),
                            },
                            None,
                        );
                        continue;
                    }
                    let key = (deployment.configuration_id.clone(), version.clone());
                    let Some(cached) = self.contents.get_mut(&key) else {
                        continue;
                    };
                    // Kept in the mode last pushed, so every push of a wave shares one body.
                    if cached.mode != mode {
                        *cached = cached.clone().with_mode(mode);
                    }
                    let content = cached.clone();
                    let Some((_, target)) = self.targets.get(&location).cloned() else {
                        self.answer(
                            deployment_id,
                            Event::EdgeFailed {
                                location,
                                error: "the edge location no longer exists".into(),
                            },
                            None,
                        );
                        continue;
                    };
                    let transport = self.transport.clone();
                    let queue = self.queue.clone();
                    let id = deployment_id.to_string();
                    let span = tracing::info_span!(
                        "deployment.push",
                        deployment_id,
                        location_id = %location,
                        version = %version,
                        mode = ?mode,
                        traceId = Empty,
                    );
                    traced(&deployment, &span);
                    let work = async move {
                        let answer = transport.push(target, content).await;
                        let (event, edge_version) = match answer {
                            EdgeAnswer::StaleTerm { seen } => {
                                tracing::warn!(
                                    seen,
                                    "push refused: the edge has seen a higher term"
                                );
                                return;
                            }
                            EdgeAnswer::Acked { latency_ms } => (
                                Event::EdgeAcked {
                                    location: location.clone(),
                                    version: version.clone(),
                                    latency_ms,
                                },
                                // A staged version is on the edge but not active.
                                (mode != PushMode::Stage).then_some((location, Some(version))),
                            ),
                            EdgeAnswer::Nacked { reason } => {
                                (Event::EdgeNacked { location, reason }, None)
                            }
                            EdgeAnswer::Failed { error } => {
                                (Event::EdgeFailed { location, error }, None)
                            }
                        };
                        let _ = queue.send(Message::Answer {
                            deployment_id: id,
                            event,
                            edge_version,
                        });
                    };
                    tokio::spawn(work.instrument(span));
                }
                Action::RollbackEdge {
                    location,
                    to_version,
                } => self.roll_back(deployment_id, &deployment, location, to_version),
                Action::ActivateVersion { location, version } => {
                    self.roll_back(deployment_id, &deployment, location, Some(version))
                }
                Action::Analyze {
                    canary,
                    baseline,
                    since,
                } => {
                    let request = AnalysisRequest {
                        deployment_id: deployment_id.to_string(),
                        configuration_id: deployment.configuration_id.clone(),
                        version: deployment.configuration_version.clone(),
                        rollback_config: deployment.rollback_config.clone(),
                        canary,
                        baseline,
                        since,
                        now: self.clock.now(),
                        pre_deployment: deployment.pre_deployment_metrics.clone(),
                    };
                    let analysis = self.analysis.clone();
                    let queue = self.queue.clone();
                    let id = deployment_id.to_string();
                    let span =
                        tracing::info_span!("deployment.analysis", deployment_id, traceId = Empty);
                    traced(&deployment, &span);
                    let work = async move {
                        let answer = analysis.analyze(request).await;
                        let _ = queue.send(Message::Answer {
                            deployment_id: id,
                            event: Event::Verdict {
                                outcome: answer.outcome,
                                data: answer.data,
                                since,
                            },
                            edge_version: None,
                        });
                    };
                    tokio::spawn(work.instrument(span));
                }
                Action::Alert { kind, message } => self.alerts.alert(&deployment, kind, &message),
                Action::Finished => {
                    tracing::info!(
                        deployment_id,
                        status = ?deployment.status,
                        "deployment finished"
                    );
                    metrics::counter!(
                        "edgeplane_deployments_finished_total",
                        "status" => format!("{:?}", deployment.status)
                    )
                    .increment(1);
                    if let Some(seconds) = deployment.duration_seconds {
                        metrics::histogram!(
                            "edgeplane_deployment_duration_seconds",
                            "status" => format!("{:?}", deployment.status)
                        )
                        .record(seconds as f64);
                    }
                }
            }
        }
        self.deployments
            .insert(deployment_id.to_string(), deployment);
    }

    fn roll_back(
        &self,
        deployment_id: &str,
        deployment: &Deployment,
        location: String,
        to_version: Option<String>,
    ) {
        let Some((_, target)) = self.targets.get(&location).cloned() else {
            self.answer(
                deployment_id,
                Event::EdgeRollbackFailed {
                    location,
                    error: "the edge location no longer exists".into(),
                },
                None,
            );
            return;
        };
        let transport = self.transport.clone();
        let queue = self.queue.clone();
        let id = deployment_id.to_string();
        let configuration_id = deployment.configuration_id.clone();
        // With no earlier version known, a blue-green or plain rollback leaves the edge on
        // whatever its own history holds; the desired table forgets this configuration there.
        let previous = deployment
            .edges
            .get(&location)
            .and_then(|e| e.previous_version.clone());
        let span = tracing::info_span!(
            "deployment.rollback_edge",
            deployment_id,
            location_id = %location,
            traceId = Empty,
        );
        traced(deployment, &span);
        let work = async move {
            let answer = transport
                .rollback(target, configuration_id, to_version.clone())
                .await;
            let (event, edge_version) = match answer {
                EdgeAnswer::StaleTerm { seen } => {
                    tracing::warn!(seen, "rollback refused: the edge has seen a higher term");
                    return;
                }
                EdgeAnswer::Acked { .. } => (
                    Event::EdgeRolledBack {
                        location: location.clone(),
                    },
                    Some((location, to_version.or(previous))),
                ),
                EdgeAnswer::Nacked { reason } => (
                    Event::EdgeRollbackFailed {
                        location,
                        error: reason,
                    },
                    None,
                ),
                EdgeAnswer::Failed { error } => {
                    (Event::EdgeRollbackFailed { location, error }, None)
                }
            };
            let _ = queue.send(Message::Answer {
                deployment_id: id,
                event,
                edge_version,
            });
        };
        tokio::spawn(work.instrument(span));
    }

    fn answer(
        &self,
        deployment_id: &str,
        event: Event,
        edge_version: Option<(String, Option<String>)>,
    ) {
        let _ = self.queue.send(Message::Answer {
            deployment_id: deployment_id.to_string(),
            event,
            edge_version,
        });
    }
}

/// Deployment-level events (start, waves, verdicts, pauses, the end) go to the INFO log; the
/// per-edge traffic of pushes, acks and rollbacks to DEBUG.
/// Whether `error` means the store takes no writes for now (rather than refusing this one).
fn store_refuses_writes(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Unavailable(_) | StoreError::StorageFull(_) | StoreError::Recovering(_)
    )
}

/// While the store refuses writes: callers hear so, and edge answers and ticks are dropped (the
/// work they concern is re-issued from the stored records once writes resume).
fn refuse_while_suspended(batch: Vec<Message>) {
    refuse(batch, || {
        EngineError::Store(StoreError::Recovering(
            "the store refuses writes; deployments are paused until they resume".into(),
        ))
    });
}

/// Answers every caller in `batch` with `refusal` and drops the rest.
fn refuse(batch: Vec<Message>, refusal: fn() -> EngineError) {
    for message in batch {
        match message {
            Message::Start { reply, .. } | Message::Operator { reply, .. } => {
                let _ = reply.send(Err(refusal()));
            }
            Message::Answer { .. } | Message::Freeze(_) | Message::Tick | Message::Samples(_) => {}
        }
    }
}

fn log_event(deployment: &Deployment, event: &DeploymentEvent) {
    let kind = event.kind;
    let deployment_id = deployment.deployment_id.as_str();
    match &event.location_id {
        Some(location_id) => {
            tracing::debug!(deployment_id, %location_id, ?kind, "{}", event.message)
        }
        None => {
            let span = match kind {
                EventKind::StepStarted => tracing::info_span!(
                    "deployment.wave",
                    deployment_id,
                    step = deployment.current_step,
                    traceId = Empty
                ),
                EventKind::Verdict => {
                    tracing::info_span!("deployment.verdict", deployment_id, traceId = Empty)
                }
                EventKind::RollbackStarted | EventKind::RolledBack => {
                    tracing::info_span!("deployment.rollback", deployment_id, traceId = Empty)
                }
                _ => tracing::info_span!("deployment.event", deployment_id, traceId = Empty),
            };
            traced(deployment, &span);
            span.in_scope(|| tracing::info!(deployment_id, ?kind, "{}", event.message));
        }
    }
}

/// The key of a deployment's `metadata` that keeps the W3C trace context of the request that
/// started it, so that its later spans, in any turn of the loop or after a restart, join that
/// trace.
pub const TRACEPARENT_METADATA: &str = "traceparent";

/// Puts `span` into the deployment's trace, when it has one.
fn traced(deployment: &Deployment, span: &tracing::Span) {
    if let Some(traceparent) = deployment.metadata.get(TRACEPARENT_METADATA) {
        crate::telemetry::continue_trace(span, traceparent);
    }
}

/// Counts an edge's NACK of the deployment's version in the store, where the count outlives a
/// restart; true when this NACK quarantined the edge.
async fn record_nack(
    store: &Store,
    location: &str,
    deployment: &Deployment,
    quarantine_after: u32,
) -> bool {
    let result = store
        .apply(CommandEnvelope::new(
            SYSTEM_ACTOR,
            "",
            Command::RecordNack {
                location_id: location.to_string(),
                configuration_id: deployment.configuration_id.clone(),
                version: deployment.configuration_version.clone(),
                quarantine_after,
            },
        ))
        .await;
    match result {
        Ok(Applied::Nack { quarantined, .. }) => quarantined,
        Ok(_) => false,
        Err(error) => {
            tracing::error!(
                location,
                configuration_id = %deployment.configuration_id,
                %error,
                "cannot count the edge's NACK"
            );
            false
        }
    }
}
