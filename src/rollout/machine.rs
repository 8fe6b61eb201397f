//! The pure state machine of one deployment (SPEC §7, §8.4, §10).
//!
//! [`step`] takes the persisted [`Deployment`], one [`Event`] and the time, updates the record
//! and returns the [`Action`]s to carry out. It does no I/O and reads no clock. The engine
//! persists the record after every step *before* executing the actions, so a crash in
//! between only means re-issuing them on restart ([`resume_actions`]); pushes and rollbacks
//! are idempotent at the edge.
//!
//! Rules the machine keeps, beyond SPEC §7:
//! - Failure tolerance per wave: DirectDeployment tolerates any failed edge (retried, then
//!   reported). Every other strategy tolerates none: one NACK, or one push still failing
//!   after `max_push_attempts`, fails the wave, as does an edge on the new version that stops
//!   heartbeating during a watch (the new version may be what took it down).
//! - A NACK is final for that edge (the agent's proxy test refused this content; the same
//!   content would be refused again) and leaves the old version active, so NACKed edges are
//!   not rolled back. Timeouts are retried; an edge that timed out may have applied the
//!   version, so it is rolled back with the rest.
//! - A failed wave rolls back when `autoRollback` and `failureAction = rollback`; otherwise it
//!   pauses with an alert. Resuming after such a pause accepts that wave's failed edges.
//!   RollingRegional with `continueOnFailure` records the failure and goes on.
//! - Blue-green: a NACK while staging is a failed smoke check: nothing was activated, so the
//!   deployment ends `Failed` with nothing to undo.
//! - Analysis is asked for when a watch starts and then every `analyze_interval_ms`; a `Fail`
//!   acts at once, a `Pass` counts once the watch is over, an `Inconclusive` after the end
//!   extends the watch (at most `maxExtension` in all), then pauses with an alert.
//! - Pause keeps edges where they are: in-flight pushes complete, failed pushes are held and
//!   re-sent on resume. Resuming into a watch restarts the watch in full.
//! - Freeze pauses (and blocks resume) but never stops a rollback.
//! - A verdict names the watch it judged (`since`); verdicts on an earlier watch are dropped.
//! - A pushing or rolling-back phase lasting past `stuck_after_ms` raises one alert.
//! - Edges never pushed stay `Pending` when a deployment ends early: they never changed.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::plan::{Plan, next_window};
use crate::model::deployment::parse_hh_mm;
use crate::model::{
    Deployment, DeploymentEvent, DeploymentStatus, EdgeDeploymentState, EdgeState, EventKind,
    FailureAction, Phase, SkippedLocation, Span, Strategy, Timestamp,
};

/// Why an event could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The deployment has ended; nothing may change it (the API answers 409).
    #[error("deployment is {0:?} and can no longer change")]
    Terminal(DeploymentStatus),
    /// The action makes no sense in the current state (the API answers 409).
    #[error("{0}")]
    Invalid(String),
}

/// What the engine knows besides the deployment when it steps it.
#[derive(Clone, Debug, PartialEq)]
pub struct StepContext {
    /// Target edges that currently miss heartbeats or report themselves unhealthy.
    pub unhealthy: BTreeSet<String>,
    /// How often to ask for an analysis during a watch: the longest a watch goes unjudged
    /// when no new samples of its canary edges arrive.
    pub analyze_interval_ms: i64,
    /// Shortest time between two analyses that new samples ask for, so a large canary
    /// heartbeating all the time is judged a few times a second, not once per heartbeat.
    pub analyze_floor_ms: i64,
    /// Pushes (and rollbacks) per edge before giving up on it.
    pub max_push_attempts: u32,
    /// How much one inconclusive verdict extends a finished watch.
    pub extension_step_ms: i64,
    /// A pushing or rolling-back phase older than this raises one alert (SPEC §7 `stuck_after`).
    pub stuck_after_ms: i64,
    /// How late after its window a scheduled wave may still start; later, it waits for the
    /// next window.
    pub window_grace_ms: i64,
}

impl Default for StepContext {
    fn default() -> Self {
        Self {
            unhealthy: BTreeSet::new(),
            analyze_interval_ms: 10_000,
            analyze_floor_ms: 1_000,
            max_push_attempts: 3,
            extension_step_ms: 60_000,
            stuck_after_ms: 30 * 60_000,
            window_grace_ms: 3_600_000,
        }
    }
}

/// The analysis' verdict on a watch period (SPEC §8.3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AnalysisOutcome {
    Pass,
    Fail {
        reason: String,
    },
    Inconclusive {
        reason: String,
    },
    /// A warning threshold is crossed but not a rollback one: alert, keep going.
    Warn {
        message: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorAction {
    Promote,
    Pause,
    Resume,
    Rollback { reason: String },
    ApproveNextRegion,
}

/// Everything that makes a deployment move.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Start {
        plan: Plan,
    },
    /// Time passed; `now` is the step's argument.
    Tick,
    /// New samples of edges this deployment watches ([`watches`]) were stored: judge them
    /// now rather than at the next analysis interval, unless the last analysis is younger
    /// than the floor.
    SamplesArrived,
    EdgeAcked {
        location: String,
        version: String,
        latency_ms: u64,
    },
    EdgeNacked {
        location: String,
        reason: String,
    },
    /// The push did not get an answer: timeout, refused connection.
    EdgeFailed {
        location: String,
        error: String,
    },
    EdgeRolledBack {
        location: String,
    },
    EdgeRollbackFailed {
        location: String,
        error: String,
    },
    Verdict {
        outcome: AnalysisOutcome,
        /// The numbers behind the verdict, kept on the timeline.
        data: BTreeMap<String, String>,
        /// The `since` of the `Analyze` this answers; a verdict on an earlier watch is stale.
        since: Timestamp,
    },
    Operator {
        action: OperatorAction,
        actor: String,
    },
    Freeze,
    Unfreeze,
}

/// Pushes use the edge protocol's modes.
pub use crate::protocol::PushMode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlertKind {
    WaveFailed,
    Inconclusive,
    Stuck,
    Warning,
    RolledBack,
    RollbackIncomplete,
    NoTargets,
    /// An edge NACKed the same version `quarantine_after` times and is left out from now on.
    Quarantined,
    /// The store refuses writes: the deployment is paused until they resume (raised by the
    /// engine, which cannot record it on the timeline until then).
    StoreUnavailable,
}

/// What the engine must do after a step.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Push {
        location: String,
        mode: PushMode,
        version: String,
    },
    /// Put the edge back on `to_version`; `None`: the agent's previous version from its history.
    RollbackEdge {
        location: String,
        to_version: Option<String>,
    },
    /// Blue-green switch back: the old version is still staged on the edge.
    ActivateVersion {
        location: String,
        version: String,
    },
    /// Compare `canary` against `baseline` since `since`, answer with a `Verdict`.
    Analyze {
        canary: Vec<String>,
        baseline: Vec<String>,
        since: Timestamp,
    },
    Alert {
        kind: AlertKind,
        message: String,
    },
    /// The deployment reached a terminal status.
    Finished,
}

/// One edge's NACK (or final failure) and its reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgeNack {
    pub location_id: String,
    pub reason: String,
}

/// Progress the way operators read it (SPEC §7, common rules).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Edges running the new version.
    pub acked: usize,
    /// Edges in the deployment, skipped ones excluded.
    pub targets: usize,
    pub nacks: Vec<EdgeNack>,
    #[serde(rename = "p50ApplyMs")]
    pub p50_apply_ms: Option<u64>,
    #[serde(rename = "p99ApplyMs")]
    pub p99_apply_ms: Option<u64>,
}

const SYSTEM: &str = "system";
const FREEZE: &str = "freeze";

/// Applies one event. Operator actions on a terminal deployment, and actions that do not fit
/// the current state, are errors that leave the deployment unchanged; edge answers arriving
/// after the end are ignored.
pub fn step(
    d: &mut Deployment,
    event: Event,
    now: Timestamp,
    ctx: &StepContext,
) -> Result<Vec<Action>, StepError> {
    if d.status.is_terminal() {
        return match event {
            Event::Operator { .. } | Event::Start { .. } => Err(StepError::Terminal(d.status)),
            _ => Ok(Vec::new()),
        };
    }
    let mut run = Run {
        d,
        now,
        ctx,
        out: Vec::new(),
    };
    match event {
        Event::Start { plan } => run.start(plan)?,
        Event::Tick => run.tick(),
        Event::SamplesArrived => run.samples_arrived(),
        Event::EdgeAcked {
            location,
            version,
            latency_ms,
        } => run.edge_acked(&location, &version, latency_ms),
        Event::EdgeNacked { location, reason } => run.edge_nacked(&location, &reason),
        Event::EdgeFailed { location, error } => run.edge_failed(&location, &error),
        Event::EdgeRolledBack { location } => run.edge_rolled_back(&location),
        Event::EdgeRollbackFailed { location, error } => {
            run.edge_rollback_failed(&location, &error)
        }
        Event::Verdict {
            outcome,
            data,
            since,
        } => run.verdict(outcome, data, since),
        Event::Operator { action, actor } => run.operator(action, &actor)?,
        Event::Freeze => run.freeze(),
        Event::Unfreeze => run.unfreeze(),
    }
    let out = std::mem::take(&mut run.out);
    refresh(run.d);
    Ok(out)
}

/// Applies edge answers and verdicts that arrived together, in order, as [`step`] would one
/// by one, except that a run of acks checks whether its wave is done and recomputes the
/// derived fields once, not once per ack: a batch of a thousand acks costs one pass over the
/// wave. Edge answers are never refused, so there is no error to return.
pub fn step_answers(
    d: &mut Deployment,
    events: Vec<Event>,
    now: Timestamp,
    ctx: &StepContext,
) -> Vec<Action> {
    let mut out = Vec::new();
    let mut check_due = false;
    for event in events {
        if d.status.is_terminal() {
            break;
        }
        match event {
            Event::EdgeAcked {
                location,
                version,
                latency_ms,
            } => {
                let mut run = Run {
                    d: &mut *d,
                    now,
                    ctx,
                    out: Vec::new(),
                };
                check_due |= run.record_ack(&location, &version, latency_ms);
            }
            other => {
                if std::mem::take(&mut check_due) {
                    out.extend(check_acked_wave(d, now, ctx));
                }
                out.extend(step(d, other, now, ctx).unwrap_or_default());
            }
        }
    }
    if check_due {
        out.extend(check_acked_wave(d, now, ctx));
    }
    refresh(d);
    out
}

fn check_acked_wave(d: &mut Deployment, now: Timestamp, ctx: &StepContext) -> Vec<Action> {
    let mut run = Run {
        d,
        now,
        ctx,
        out: Vec::new(),
    };
    run.check_wave();
    std::mem::take(&mut run.out)
}

/// What to (re)issue after a restart: pushes and rollbacks that were sent (or about to be)
/// without an answer recorded, and the analysis of a running watch. Paused deployments get
/// their in-flight work re-sent too, so no edge is left without a decision (SPEC §10).
pub fn resume_actions(d: &Deployment, now: Timestamp) -> Vec<Action> {
    if d.status.is_terminal() {
        return Vec::new();
    }
    let mode = push_mode(d);
    let mut out = Vec::new();
    for (location, edge) in &d.edges {
        match edge.state {
            EdgeState::Pushed => out.push(Action::Push {
                location: location.clone(),
                mode,
                version: d.configuration_version.clone(),
            }),
            EdgeState::RollingBack => out.push(rollback_action(d, location, edge)),
            _ => {}
        }
    }
    if d.engine.phase == Phase::Watching && d.engine.paused_from.is_none() {
        out.push(analyze_action(d, d.engine.watch_started.unwrap_or(now)));
    }
    out
}

/// Acked count, targets, NACK reasons and apply latency percentiles.
pub fn progress(d: &Deployment) -> Progress {
    let targets = d
        .edges
        .values()
        .filter(|e| e.state != EdgeState::Skipped)
        .count();
    let acked = d.edges.values().filter(|e| runs_new_version(e)).count();
    let nacks = d
        .edges
        .iter()
        .filter(|(_, e)| matches!(e.state, EdgeState::Nacked | EdgeState::TimedOut))
        .map(|(location, e)| EdgeNack {
            location_id: location.clone(),
            reason: e.error.clone().unwrap_or_default(),
        })
        .collect();
    let mut latencies: Vec<u64> = d
        .edges
        .values()
        .filter(|e| e.state == EdgeState::Acked)
        .filter_map(|e| e.apply_latency_ms)
        .collect();
    latencies.sort_unstable();
    Progress {
        acked,
        targets,
        nacks,
        p50_apply_ms: nearest_rank(&latencies, 50),
        p99_apply_ms: nearest_rank(&latencies, 99),
    }
}

fn nearest_rank(sorted: &[u64], percent: usize) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// An edge whose active version is the new one.
fn runs_new_version(edge: &EdgeDeploymentState) -> bool {
    edge.runs_new_version()
}

fn push_mode(d: &Deployment) -> PushMode {
    match (d.strategy, d.engine.phase) {
        (Strategy::BlueGreenDeployment, Phase::Staging) => PushMode::Stage,
        (Strategy::BlueGreenDeployment, _) if d.engine.wave == 0 => PushMode::Stage,
        (Strategy::BlueGreenDeployment, _) => PushMode::Activate,
        _ => PushMode::Apply,
    }
}

fn rollback_action(d: &Deployment, location: &str, edge: &EdgeDeploymentState) -> Action {
    match (&edge.previous_version, d.strategy) {
        (Some(version), Strategy::BlueGreenDeployment) => Action::ActivateVersion {
            location: location.to_string(),
            version: version.clone(),
        },
        (previous, _) => Action::RollbackEdge {
            location: location.to_string(),
            to_version: previous.clone(),
        },
    }
}

/// Whether new samples of `location` are evidence for a running watch of `d`: the edge runs the
/// version under watch.
pub fn watches(d: &Deployment, location: &str) -> bool {
    d.engine.phase == Phase::Watching
        && d.engine.paused_from.is_none()
        && d.edges.get(location).is_some_and(runs_new_version)
}

fn analyze_action(d: &Deployment, since: Timestamp) -> Action {
    let canary = d
        .edges
        .iter()
        .filter(|(_, e)| runs_new_version(e))
        .map(|(l, _)| l.clone())
        .collect();
    let baseline = d
        .edges
        .iter()
        .filter(|(_, e)| e.state == EdgeState::Pending)
        .map(|(l, _)| l.clone())
        .collect();
    Action::Analyze {
        canary,
        baseline,
        since,
    }
}

/// Recomputes the derived fields so they are true after every step.
fn refresh(d: &mut Deployment) {
    d.derive_location_lists();
    let targets = d
        .edges
        .values()
        .filter(|e| e.state != EdgeState::Skipped)
        .count();
    if d.status == DeploymentStatus::Completed {
        d.progress_percentage = 100;
    } else {
        // A share of zero targets is zero.
        let share = |n: usize, scale: usize| (n * scale).checked_div(targets).unwrap_or(0);
        let done = d.successful_locations.len();
        let percent = if d.strategy == Strategy::BlueGreenDeployment {
            // Staging is the first half of the work, activation the second.
            if d.engine.wave == 0 {
                let staged = d
                    .edges
                    .values()
                    .filter(|e| e.state == EdgeState::Acked)
                    .count();
                share(staged, 50)
            } else {
                50 + share(done, 50)
            }
        } else {
            share(done, 100)
        };
        d.progress_percentage = u8::try_from(percent.min(100)).unwrap_or(100);
    }
    d.canary_config.current_step = d.engine.wave;
}

struct Run<'a> {
    d: &'a mut Deployment,
    now: Timestamp,
    ctx: &'a StepContext,
    out: Vec<Action>,
}

impl Run<'_> {
    fn event(&mut self, kind: EventKind, actor: &str, message: String, location: Option<&str>) {
        self.d.events.push(DeploymentEvent {
            at: self.now,
            kind,
            actor: actor.to_string(),
            message,
            location_id: location.map(str::to_string),
            version: Some(self.d.configuration_version.clone()),
            data: BTreeMap::new(),
        });
    }

    fn alert(&mut self, kind: AlertKind, message: String) {
        self.event(EventKind::Alert, SYSTEM, message.clone(), None);
        self.out.push(Action::Alert { kind, message });
    }

    fn paused(&self) -> bool {
        self.d.engine.paused_from.is_some()
    }

    fn wave_index(&self) -> usize {
        usize::try_from(self.d.engine.wave).unwrap_or(usize::MAX)
    }

    fn wave_count(&self) -> usize {
        self.d.engine.waves.len()
    }

    fn wave_locations(&self) -> Vec<String> {
        self.d
            .engine
            .waves
            .get(self.wave_index())
            .map(|w| w.locations.clone())
            .unwrap_or_default()
    }

    fn start(&mut self, plan: Plan) -> Result<(), StepError> {
        if self.d.status != DeploymentStatus::Pending || self.d.engine.phase != Phase::Idle {
            return Err(StepError::Invalid("deployment has already started".into()));
        }
        if self.d.engine.frozen {
            return Err(StepError::Invalid("a global freeze is in effect".into()));
        }
        self.d.started_at = Some(self.now);
        self.d.engine.expected_finish = Some(plan.expected_finish);
        for skipped in &plan.skipped {
            self.skip(&skipped.location_id, &skipped.reason);
        }
        for wave in &plan.waves {
            for location in &wave.locations {
                self.d
                    .edges
                    .entry(location.clone())
                    .or_insert_with(|| EdgeDeploymentState {
                        previous_version: plan.previous_versions.get(location).cloned(),
                        wave: wave.index,
                        ..EdgeDeploymentState::default()
                    });
            }
        }
        self.d.engine.waves = plan.waves;
        if self.d.engine.waves.is_empty() {
            self.alert(
                AlertKind::NoTargets,
                "no deployable target: every target was skipped".into(),
            );
            self.finish(DeploymentStatus::Failed, "no deployable target".into());
            return Ok(());
        }
        self.d.status = DeploymentStatus::InProgress;
        self.begin_wave(0);
        Ok(())
    }

    fn skip(&mut self, location: &str, reason: &str) {
        let edge = self.d.edges.entry(location.to_string()).or_default();
        edge.state = EdgeState::Skipped;
        edge.error = Some(reason.to_string());
        self.d.skipped.push(SkippedLocation {
            location_id: location.to_string(),
            reason: reason.to_string(),
        });
        self.event(
            EventKind::Skipped,
            SYSTEM,
            format!("skipped: {reason}"),
            Some(location),
        );
    }

    fn begin_wave(&mut self, index: usize) {
        self.d.engine.wave = u32::try_from(index).unwrap_or(u32::MAX);
        self.d.engine.phase_until = None;
        self.d.engine.watch_started = None;
        self.d.engine.last_analyze_at = None;
        self.d.engine.extension_used = Span(0);
        self.d.current_step = self.d.engine.wave.saturating_add(1);
        let not_before = self.d.engine.waves.get(index).and_then(|w| w.not_before);
        if let Some(start) = not_before.filter(|start| self.now < *start) {
            self.d.engine.phase = Phase::Scheduled;
            self.d.engine.phase_until = Some(start);
            self.d.status = DeploymentStatus::InProgress;
            let name = self.wave_name();
            self.event(
                EventKind::StepStarted,
                SYSTEM,
                format!("wave '{name}' scheduled for {start}"),
                None,
            );
            return;
        }
        self.push_wave();
    }

    fn wave_name(&self) -> String {
        self.d
            .engine
            .waves
            .get(self.wave_index())
            .map(|w| w.name.clone())
            .unwrap_or_default()
    }

    fn push_wave(&mut self) {
        let index = self.wave_index();
        let blue_green = self.d.strategy == Strategy::BlueGreenDeployment;
        self.d.engine.phase = match (blue_green, index) {
            (true, 0) => Phase::Staging,
            (true, _) => Phase::Activating,
            _ => Phase::Pushing,
        };
        self.d.engine.phase_since = Some(self.now);
        self.d.engine.stuck_alerted = false;
        let mode = push_mode(self.d);
        let canary_step =
            self.d.strategy == Strategy::RegionalCanary && index + 1 < self.wave_count();
        self.d.status = if canary_step {
            DeploymentStatus::Canary
        } else {
            DeploymentStatus::InProgress
        };
        let mut n_pushed = 0;
        for location in self.wave_locations() {
            let state = self.d.edges.get(&location).map(|e| e.state);
            if matches!(state, None | Some(EdgeState::Skipped)) {
                continue;
            }
            // Activation goes to the edges that hold the staged version, whatever their health:
            // a split fleet is worse than one slow edge.
            if mode != PushMode::Activate && self.ctx.unhealthy.contains(&location) {
                self.skip(&location, "unhealthy at the start of its wave");
                continue;
            }
            self.push(&location, mode, true);
            n_pushed += 1;
        }
        let name = self.wave_name();
        self.event(
            EventKind::StepStarted,
            SYSTEM,
            format!(
                "wave {} '{name}': {mode:?} to {n_pushed} edge(s)",
                index + 1
            ),
            None,
        );
        self.check_wave();
    }

    fn push(&mut self, location: &str, mode: PushMode, first: bool) {
        let now = self.now;
        let Some(edge) = self.d.edges.get_mut(location) else {
            return;
        };
        edge.state = EdgeState::Pushed;
        edge.pushed_at = Some(now);
        edge.acked_at = None;
        edge.attempts = if first {
            1
        } else {
            edge.attempts.saturating_add(1)
        };
        // A staged version is not active, so staging alone leaves nothing to undo.
        if mode != PushMode::Stage {
            edge.touched = true;
        }
        self.out.push(Action::Push {
            location: location.to_string(),
            mode,
            version: self.d.configuration_version.clone(),
        });
    }

    /// Moves on once every edge of the pushing wave has answered for good.
    fn check_wave(&mut self) {
        if self.paused()
            || !matches!(
                self.d.engine.phase,
                Phase::Pushing | Phase::Staging | Phase::Activating
            )
        {
            return;
        }
        let mut acked = 0usize;
        let mut failures = Vec::new();
        let Some(wave) = self.d.engine.waves.get(self.wave_index()) else {
            return;
        };
        for location in &wave.locations {
            let Some(edge) = self.d.edges.get(location) else {
                continue;
            };
            match edge.state {
                EdgeState::Pending | EdgeState::Pushed => return,
                EdgeState::Acked => acked += 1,
                EdgeState::Nacked | EdgeState::TimedOut => failures.push(format!(
                    "{location}: {}",
                    edge.error.as_deref().unwrap_or("failed")
                )),
                _ => {}
            }
        }
        let index = self.wave_index();
        match (self.d.strategy, self.d.engine.phase) {
            (Strategy::DirectDeployment, _) => {
                if acked == 0 {
                    self.finish(
                        DeploymentStatus::Failed,
                        format!("no target acked ({} failed)", failures.len()),
                    );
                } else {
                    let message = if failures.is_empty() {
                        format!("all {acked} reachable target(s) acked")
                    } else {
                        format!("{acked} target(s) acked, {} failed", failures.len())
                    };
                    self.finish(DeploymentStatus::Completed, message);
                }
            }
            (_, Phase::Staging) => {
                if failures.is_empty() && acked > 0 {
                    self.begin_wave(index + 1);
                } else {
                    let message = format!(
                        "smoke check failed, nothing was activated: {}",
                        failures.join("; ")
                    );
                    self.d.errors.push(message.clone());
                    self.alert(AlertKind::WaveFailed, message.clone());
                    self.finish(DeploymentStatus::Failed, message);
                }
            }
            _ => {
                let accepted = self.d.engine.accepted_failures_wave == Some(self.d.engine.wave);
                if !failures.is_empty() && !accepted {
                    self.wave_failed(format!(
                        "{} edge(s) failed in wave {}: {}",
                        failures.len(),
                        index + 1,
                        failures.join("; ")
                    ));
                } else if acked == 0 {
                    // Nothing of this wave runs the new version: there is nothing to watch.
                    self.wave_passed();
                } else {
                    self.start_watch();
                }
            }
        }
    }

    fn start_watch(&mut self) {
        let watch_ms = self
            .d
            .engine
            .waves
            .get(self.wave_index())
            .map(|w| w.watch_ms)
            .unwrap_or(0);
        if watch_ms == 0 {
            self.wave_passed();
            return;
        }
        let until = self
            .now
            .plus_millis(i64::try_from(watch_ms).unwrap_or(i64::MAX));
        self.d.engine.phase = Phase::Watching;
        self.d.engine.watch_started = Some(self.now);
        self.d.engine.phase_until = Some(until);
        self.d.engine.extension_used = Span(0);
        self.event(
            EventKind::StepStarted,
            SYSTEM,
            format!("watching wave {} until {until}", self.wave_index() + 1),
            None,
        );
        self.analyze();
    }

    fn analyze(&mut self) {
        let since = self.d.engine.watch_started.unwrap_or(self.now);
        self.out.push(analyze_action(self.d, since));
        self.d.engine.last_analyze_at = Some(self.now);
    }

    fn wave_passed(&mut self) {
        let index = self.wave_index();
        if index + 1 >= self.wave_count() {
            self.finish(
                DeploymentStatus::Completed,
                format!("all {} wave(s) done", self.wave_count()),
            );
            return;
        }
        let gate = self.d.engine.waves.get(index).is_some_and(|w| w.gate);
        if gate {
            self.d.engine.phase = Phase::AwaitingApproval;
            self.d.engine.phase_until = None;
            self.d.status = DeploymentStatus::AwaitingApproval;
            self.event(
                EventKind::AwaitingApproval,
                SYSTEM,
                format!("wave {} passed; waiting for approval", index + 1),
                None,
            );
        } else {
            self.event(
                EventKind::Promoted,
                SYSTEM,
                format!("wave {} passed; next wave", index + 1),
                None,
            );
            self.begin_wave(index + 1);
        }
    }

    fn wave_failed(&mut self, reason: String) {
        self.d.errors.push(reason.clone());
        if self.d.strategy == Strategy::RollingRegional && self.d.continue_on_failure {
            self.alert(
                AlertKind::WaveFailed,
                format!("{reason}; continuing (continueOnFailure)"),
            );
            self.d.engine.accepted_failures_wave = Some(self.d.engine.wave);
            self.wave_passed();
        } else if self.d.rollback_config.auto_rollback
            && self.d.failure_action == FailureAction::Rollback
        {
            self.start_rollback(reason, SYSTEM);
        } else {
            self.alert(AlertKind::WaveFailed, format!("{reason}; paused"));
            self.d.engine.accepted_failures_wave = Some(self.d.engine.wave);
            self.pause(SYSTEM, format!("paused on failure: {reason}"));
        }
    }

    fn pause(&mut self, actor: &str, message: String) {
        self.d.engine.paused_from = Some(self.d.engine.phase);
        self.d.engine.paused_status = Some(self.d.status);
        self.d.status = DeploymentStatus::Paused;
        self.event(EventKind::Paused, actor, message, None);
    }

    fn resume(&mut self, actor: &str) {
        let Some(phase) = self.d.engine.paused_from.take() else {
            return;
        };
        self.d.status = self
            .d
            .engine
            .paused_status
            .take()
            .unwrap_or(DeploymentStatus::InProgress);
        self.d.engine.phase = phase;
        self.event(
            EventKind::Resumed,
            actor,
            format!("resumed ({phase:?})"),
            None,
        );
        match phase {
            Phase::Pushing | Phase::Staging | Phase::Activating => {
                let mode = push_mode(self.d);
                for location in self.wave_locations() {
                    let held = self
                        .d
                        .edges
                        .get(&location)
                        .is_some_and(|e| e.state == EdgeState::Pending);
                    if held {
                        self.push(&location, mode, false);
                    }
                }
                self.check_wave();
            }
            Phase::Watching => self.start_watch(),
            Phase::Scheduled => self.tick(),
            _ => {}
        }
    }

    fn start_rollback(&mut self, reason: String, actor: &str) {
        self.d.engine.paused_from = None;
        self.d.engine.paused_status = None;
        self.d.engine.paused_by_freeze = false;
        self.d.engine.phase = Phase::RollingBack;
        self.d.engine.phase_until = None;
        self.d.engine.phase_since = Some(self.now);
        self.d.engine.stuck_alerted = false;
        self.d.engine.rollback_reason = Some(reason.clone());
        self.d.status = DeploymentStatus::InProgress;
        let mut actions = Vec::new();
        for (location, edge) in self.d.edges.iter_mut() {
            let undo = edge.touched
                && matches!(
                    edge.state,
                    EdgeState::Pushed | EdgeState::Acked | EdgeState::TimedOut
                );
            if undo {
                edge.state = EdgeState::RollingBack;
                edge.attempts = 1;
                actions.push(location.clone());
            }
        }
        self.event(
            EventKind::RollbackStarted,
            actor,
            format!("rolling back {} edge(s): {reason}", actions.len()),
            None,
        );
        for location in &actions {
            if let Some(edge) = self.d.edges.get(location) {
                let action = rollback_action(self.d, location, edge);
                self.out.push(action);
            }
        }
        self.check_rollback_done();
    }

    fn check_rollback_done(&mut self) {
        if self.d.engine.phase != Phase::RollingBack
            || self
                .d
                .edges
                .values()
                .any(|e| e.state == EdgeState::RollingBack)
        {
            return;
        }
        let reason = self.d.engine.rollback_reason.clone().unwrap_or_default();
        let stuck: Vec<String> = self
            .d
            .edges
            .iter()
            .filter(|(_, e)| e.state == EdgeState::RollbackFailed)
            .map(|(l, _)| l.clone())
            .collect();
        if stuck.is_empty() {
            self.alert(AlertKind::RolledBack, format!("rolled back: {reason}"));
            self.finish(
                DeploymentStatus::RolledBack,
                format!("rolled back: {reason}"),
            );
        } else {
            let message = format!(
                "rollback incomplete, {} edge(s) not confirmed ({}): {reason}",
                stuck.len(),
                stuck.join(", ")
            );
            self.d.errors.push(message.clone());
            self.alert(AlertKind::RollbackIncomplete, message.clone());
            self.finish(DeploymentStatus::Failed, message);
        }
    }

    fn finish(&mut self, status: DeploymentStatus, message: String) {
        let kind = match status {
            DeploymentStatus::Completed => EventKind::Completed,
            DeploymentStatus::RolledBack => EventKind::RolledBack,
            _ => EventKind::Failed,
        };
        self.d.status = status;
        self.d.engine.phase = Phase::Done;
        self.d.engine.phase_until = None;
        self.d.engine.paused_from = None;
        self.d.engine.paused_status = None;
        self.d.completed_at = Some(self.now);
        self.d.duration_seconds = self
            .d
            .started_at
            .map(|start| u64::try_from(self.now.millis_since(start) / 1000).unwrap_or(0));
        self.event(kind, SYSTEM, message, None);
        self.out.push(Action::Finished);
    }

    fn samples_arrived(&mut self) {
        if self.paused() || self.d.engine.phase != Phase::Watching {
            return;
        }
        let due = self
            .d
            .engine
            .last_analyze_at
            .is_none_or(|last| self.now.millis_since(last) >= self.ctx.analyze_floor_ms);
        if due {
            self.analyze();
        }
    }

    fn tick(&mut self) {
        // A paused deployment waits for a person by design; it is not stuck.
        if self.paused() {
            return;
        }
        self.check_stuck();
        match self.d.engine.phase {
            Phase::Scheduled => {
                let Some(until) = self.d.engine.phase_until else {
                    self.push_wave();
                    return;
                };
                if self.now < until {
                    return;
                }
                if self.now.millis_since(until) > self.ctx.window_grace_ms {
                    // The window passed while the deployment was held: wait for the next one.
                    let offset = self
                        .d
                        .engine
                        .waves
                        .get(self.wave_index())
                        .map(|w| w.utc_offset_minutes)
                        .unwrap_or(0);
                    let minute = parse_hh_mm(&self.d.deployment_time).unwrap_or(120);
                    let next = next_window(self.now, offset, minute, &self.d.days);
                    self.d.engine.phase_until = Some(next);
                    self.event(
                        EventKind::StepStarted,
                        SYSTEM,
                        format!("window missed; wave rescheduled for {next}"),
                        None,
                    );
                    return;
                }
                self.push_wave();
            }
            Phase::Watching => {
                let down: Vec<String> = self
                    .d
                    .edges
                    .iter()
                    .filter(|(l, e)| runs_new_version(e) && self.ctx.unhealthy.contains(*l))
                    .map(|(l, _)| l.clone())
                    .collect();
                if !down.is_empty() {
                    self.wave_failed(format!(
                        "edge(s) stopped heartbeating during the watch: {}",
                        down.join(", ")
                    ));
                    return;
                }
                let due =
                    self.d.engine.last_analyze_at.is_none_or(|last| {
                        self.now.millis_since(last) >= self.ctx.analyze_interval_ms
                    });
                if due {
                    self.analyze();
                }
            }
            _ => {}
        }
    }

    /// Pushes and rollbacks are bounded by the driver's timeouts and retries, so a phase that
    /// lasts past `stuck_after` means answers are being lost: tell a person, once per phase.
    fn check_stuck(&mut self) {
        let busy = matches!(
            self.d.engine.phase,
            Phase::Pushing | Phase::Staging | Phase::Activating | Phase::RollingBack
        );
        let Some(since) = self.d.engine.phase_since else {
            return;
        };
        if !busy
            || self.d.engine.stuck_alerted
            || self.now.millis_since(since) < self.ctx.stuck_after_ms
        {
            return;
        }
        let waiting: Vec<String> = self
            .d
            .edges
            .iter()
            .filter(|(_, e)| matches!(e.state, EdgeState::Pushed | EdgeState::RollingBack))
            .map(|(l, _)| l.clone())
            .take(10)
            .collect();
        self.d.engine.stuck_alerted = true;
        self.alert(
            AlertKind::Stuck,
            format!(
                "{:?} for {} min; waiting on {}",
                self.d.engine.phase,
                self.now.millis_since(since) / 60_000,
                waiting.join(", ")
            ),
        );
    }

    fn edge_acked(&mut self, location: &str, version: &str, latency_ms: u64) {
        if self.record_ack(location, version, latency_ms) {
            self.check_wave();
        }
    }

    /// The edge's part of an ack; true when it changed the edge, so the wave may be done.
    fn record_ack(&mut self, location: &str, version: &str, latency_ms: u64) -> bool {
        if version != self.d.configuration_version {
            return false;
        }
        let now = self.now;
        let Some(edge) = self.d.edges.get_mut(location) else {
            return false;
        };
        // Late acks of pushes given up on still count: the edge has the version now.
        if !matches!(
            edge.state,
            EdgeState::Pushed | EdgeState::Pending | EdgeState::TimedOut
        ) {
            return false;
        }
        edge.state = EdgeState::Acked;
        edge.acked_at = Some(now);
        edge.apply_latency_ms = Some(latency_ms);
        edge.error = None;
        self.event(
            EventKind::EdgeAcked,
            SYSTEM,
            format!("acked in {latency_ms} ms"),
            Some(location),
        );
        true
    }

    fn edge_nacked(&mut self, location: &str, reason: &str) {
        let Some(edge) = self.d.edges.get_mut(location) else {
            return;
        };
        if !matches!(edge.state, EdgeState::Pushed | EdgeState::Pending) {
            return;
        }
        edge.state = EdgeState::Nacked;
        edge.error = Some(reason.to_string());
        // The agent keeps its previous version active on a NACK.
        edge.touched = false;
        self.event(
            EventKind::EdgeNacked,
            SYSTEM,
            format!("nacked: {reason}"),
            Some(location),
        );
        self.check_wave();
    }

    fn edge_failed(&mut self, location: &str, error: &str) {
        let max = self.ctx.max_push_attempts;
        let paused = self.paused();
        let Some(edge) = self.d.edges.get_mut(location) else {
            return;
        };
        if edge.state != EdgeState::Pushed {
            return;
        }
        edge.error = Some(error.to_string());
        if edge.attempts < max {
            let attempt = edge.attempts;
            if paused {
                // Held: resume sends it again.
                edge.state = EdgeState::Pending;
            }
            self.event(
                EventKind::EdgeFailed,
                SYSTEM,
                format!("attempt {attempt} failed: {error}"),
                Some(location),
            );
            if !paused {
                let mode = push_mode(self.d);
                self.push(location, mode, false);
            }
        } else {
            edge.state = EdgeState::TimedOut;
            let attempts = edge.attempts;
            self.event(
                EventKind::EdgeTimedOut,
                SYSTEM,
                format!("gave up after {attempts} attempt(s): {error}"),
                Some(location),
            );
            self.check_wave();
        }
    }

    fn edge_rolled_back(&mut self, location: &str) {
        let Some(edge) = self.d.edges.get_mut(location) else {
            return;
        };
        if edge.state != EdgeState::RollingBack {
            return;
        }
        edge.state = EdgeState::RolledBack;
        edge.touched = false;
        let to = edge.previous_version.clone();
        self.event(
            EventKind::EdgeRolledBack,
            SYSTEM,
            format!(
                "back on {}",
                to.as_deref().unwrap_or("the agent's previous version")
            ),
            Some(location),
        );
        self.check_rollback_done();
    }

    fn edge_rollback_failed(&mut self, location: &str, error: &str) {
        let max = self.ctx.max_push_attempts;
        let Some(edge) = self.d.edges.get_mut(location) else {
            return;
        };
        if edge.state != EdgeState::RollingBack {
            return;
        }
        edge.error = Some(error.to_string());
        if edge.attempts < max {
            edge.attempts += 1;
            let edge = edge.clone();
            let action = rollback_action(self.d, location, &edge);
            self.out.push(action);
            self.event(
                EventKind::EdgeRollbackFailed,
                SYSTEM,
                format!("rollback attempt failed, retrying: {error}"),
                Some(location),
            );
        } else {
            edge.state = EdgeState::RollbackFailed;
            self.event(
                EventKind::EdgeRollbackFailed,
                SYSTEM,
                format!("rollback not confirmed: {error}"),
                Some(location),
            );
            self.check_rollback_done();
        }
    }

    fn verdict(
        &mut self,
        outcome: AnalysisOutcome,
        data: BTreeMap<String, String>,
        since: Timestamp,
    ) {
        // Verdicts for anything but the running watch are stale (it moved on or paused).
        if self.paused()
            || self.d.engine.phase != Phase::Watching
            || self.d.engine.watch_started != Some(since)
        {
            return;
        }
        let message = match &outcome {
            AnalysisOutcome::Pass => "pass".to_string(),
            AnalysisOutcome::Fail { reason } => format!("fail: {reason}"),
            AnalysisOutcome::Inconclusive { reason } => format!("inconclusive: {reason}"),
            AnalysisOutcome::Warn { message } => format!("warning: {message}"),
        };
        self.event(EventKind::Verdict, SYSTEM, message, None);
        if let Some(last) = self.d.events.last_mut() {
            last.data = data;
        }
        let watch_over = self
            .d
            .engine
            .phase_until
            .is_none_or(|until| self.now >= until);
        match outcome {
            AnalysisOutcome::Pass if watch_over => self.wave_passed(),
            AnalysisOutcome::Pass => {}
            AnalysisOutcome::Fail { reason } => {
                self.wave_failed(format!("analysis failed: {reason}"))
            }
            // Warnings alert without rolling back (SPEC §8.3); once the watch is over they
            // pass the wave like a clean verdict, or a change above the warning levels but
            // inside its own limits would be watched forever.
            AnalysisOutcome::Warn { message } => {
                self.alert(AlertKind::Warning, message);
                if watch_over {
                    self.wave_passed();
                }
            }
            AnalysisOutcome::Inconclusive { .. } if !watch_over => {}
            AnalysisOutcome::Inconclusive { reason } => {
                let max = self.d.rollback_config.max_extension;
                let used = self.d.engine.extension_used;
                if used < max {
                    let step = u64::try_from(self.ctx.extension_step_ms.max(1)).unwrap_or(60_000);
                    let add = step.min(max.0 - used.0);
                    self.d.engine.extension_used = Span(used.0 + add);
                    let until = self.now.plus_millis(Span(add).as_i64());
                    self.d.engine.phase_until = Some(until);
                    self.event(
                        EventKind::Verdict,
                        SYSTEM,
                        format!("watch extended by {} to {until}: {reason}", Span(add)),
                        None,
                    );
                } else {
                    let message =
                        format!("still inconclusive after extending the watch by {max}: {reason}");
                    self.alert(AlertKind::Inconclusive, message.clone());
                    self.pause(SYSTEM, message);
                }
            }
        }
    }

    fn operator(&mut self, action: OperatorAction, actor: &str) -> Result<(), StepError> {
        let phase = self.d.engine.phase;
        let started = phase != Phase::Idle;
        match action {
            OperatorAction::Pause => {
                if !started {
                    return Err(StepError::Invalid("deployment has not started".into()));
                }
                if self.paused() {
                    return Err(StepError::Invalid("deployment is already paused".into()));
                }
                if phase == Phase::RollingBack {
                    return Err(StepError::Invalid(
                        "a rollback in progress cannot be paused".into(),
                    ));
                }
                self.pause(actor, "paused by operator".into());
            }
            OperatorAction::Resume => {
                if !self.paused() {
                    return Err(StepError::Invalid("deployment is not paused".into()));
                }
                if self.d.engine.frozen {
                    return Err(StepError::Invalid("a global freeze is in effect".into()));
                }
                self.d.engine.paused_by_freeze = false;
                self.resume(actor);
            }
            OperatorAction::Promote => {
                if self.paused() {
                    return Err(StepError::Invalid(
                        "deployment is paused; resume it first".into(),
                    ));
                }
                let index = self.wave_index();
                match phase {
                    Phase::Watching | Phase::AwaitingApproval => {
                        self.event(
                            EventKind::Promoted,
                            actor,
                            format!("wave {} promoted by operator", index + 1),
                            None,
                        );
                        if index + 1 >= self.wave_count() {
                            self.finish(
                                DeploymentStatus::Completed,
                                "completed on promotion".into(),
                            );
                        } else {
                            self.begin_wave(index + 1);
                        }
                    }
                    Phase::Scheduled => {
                        self.event(
                            EventKind::Promoted,
                            actor,
                            format!("wave {} started ahead of its window", index + 1),
                            None,
                        );
                        self.push_wave();
                    }
                    _ => {
                        return Err(StepError::Invalid(format!(
                            "nothing to promote while {phase:?}"
                        )));
                    }
                }
            }
            OperatorAction::ApproveNextRegion => {
                if self.paused() || phase != Phase::AwaitingApproval {
                    return Err(StepError::Invalid(
                        "deployment is not awaiting approval".into(),
                    ));
                }
                let index = self.wave_index();
                self.event(
                    EventKind::Approved,
                    actor,
                    format!("wave {} approved", index + 2),
                    None,
                );
                self.begin_wave(index + 1);
            }
            OperatorAction::Rollback { reason } => {
                if phase == Phase::RollingBack {
                    return Err(StepError::Invalid(
                        "deployment is already rolling back".into(),
                    ));
                }
                let reason = if reason.trim().is_empty() {
                    "manual rollback".to_string()
                } else {
                    reason
                };
                if !started {
                    self.d.started_at = Some(self.now);
                }
                self.start_rollback(reason, actor);
            }
        }
        Ok(())
    }

    fn freeze(&mut self) {
        if self.d.engine.frozen {
            return;
        }
        self.d.engine.frozen = true;
        self.event(EventKind::Frozen, FREEZE, "global freeze".into(), None);
        let running = !matches!(self.d.engine.phase, Phase::Idle | Phase::RollingBack);
        if running && !self.paused() {
            self.d.engine.paused_by_freeze = true;
            self.pause(FREEZE, "paused by the global freeze".into());
        }
    }

    fn unfreeze(&mut self) {
        if !self.d.engine.frozen {
            return;
        }
        self.d.engine.frozen = false;
        self.event(
            EventKind::Unfrozen,
            FREEZE,
            "global freeze lifted".into(),
            None,
        );
        if self.d.engine.paused_by_freeze {
            self.d.engine.paused_by_freeze = false;
            self.resume(FREEZE);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::model::{EdgeLocation, Weekday};
    use crate::rollout::plan::plan;
    use crate::rollout::plan::tests::{NOW, deployment, fleet, nine_pops};

    const MINUTE: i64 = 60_000;

    type Judge = Box<dyn Fn(&[String], Timestamp) -> AnalysisOutcome>;

    /// A fake fleet answering the machine's actions at once, with time as a value.
    struct Sim {
        d: Deployment,
        edges: Vec<EdgeLocation>,
        now: Timestamp,
        ctx: StepContext,
        nack: BTreeSet<String>,
        unreachable: BTreeSet<String>,
        judge: Judge,
        /// When set, actions are recorded but not answered (a crash before executing them).
        hold: bool,
        held: Vec<Action>,
        pushes: Vec<(Timestamp, String, PushMode)>,
        rollbacks: Vec<Action>,
        analyses: Vec<(Vec<String>, Vec<String>)>,
        alerts: Vec<AlertKind>,
        finished: usize,
    }

    impl Sim {
        fn new(strategy: Strategy, body: serde_json::Value, edges: Vec<EdgeLocation>) -> Sim {
            Sim {
                d: deployment(strategy, body),
                edges,
                now: NOW,
                ctx: StepContext::default(),
                nack: BTreeSet::new(),
                unreachable: BTreeSet::new(),
                judge: Box::new(|_, _| AnalysisOutcome::Pass),
                hold: false,
                held: Vec::new(),
                pushes: Vec::new(),
                rollbacks: Vec::new(),
                analyses: Vec::new(),
                alerts: Vec::new(),
                finished: 0,
            }
        }

        fn nine(strategy: Strategy, body: serde_json::Value) -> Sim {
            Sim::new(strategy, body, nine_pops())
        }

        fn start(mut self) -> Sim {
            let p = plan(&self.d, &self.edges, self.now, 120_000);
            self.apply(Event::Start { plan: p });
            self
        }

        fn send(&mut self, event: Event) -> Result<(), StepError> {
            let actions = self.step_checked(event)?;
            self.handle(actions);
            Ok(())
        }

        /// Steps, and checks the promise the engine's saves rely on: a step changes an edge
        /// other than the one an answer names only when it also puts a deployment-level event
        /// on the timeline.
        fn step_checked(&mut self, event: Event) -> Result<Vec<Action>, StepError> {
            let sweeping = matches!(
                event,
                Event::Start { .. } | Event::Operator { .. } | Event::Freeze | Event::Unfreeze
            );
            let named = match &event {
                Event::EdgeAcked { location, .. }
                | Event::EdgeNacked { location, .. }
                | Event::EdgeFailed { location, .. }
                | Event::EdgeRolledBack { location }
                | Event::EdgeRollbackFailed { location, .. } => Some(location.clone()),
                _ => None,
            };
            let edges_before = self.d.edges.clone();
            let events_before = self.d.events.len();
            let actions = step(&mut self.d, event, self.now, &self.ctx)?;
            let deployment_level = self.d.events[events_before..]
                .iter()
                .any(|e| e.location_id.is_none());
            if !sweeping && !deployment_level {
                for (location, edge) in &self.d.edges {
                    if Some(location) != named.as_ref() {
                        assert_eq!(
                            edges_before.get(location),
                            Some(edge),
                            "{location} changed without a deployment-level event"
                        );
                    }
                }
            }
            Ok(actions)
        }

        fn apply(&mut self, event: Event) {
            self.send(event).expect("event applies");
        }

        fn op(&mut self, action: OperatorAction) -> Result<(), StepError> {
            self.send(Event::Operator {
                action,
                actor: "bob".into(),
            })
        }

        fn handle(&mut self, actions: Vec<Action>) {
            let mut queue = VecDeque::from(actions);
            while let Some(action) = queue.pop_front() {
                if self.hold && !matches!(action, Action::Alert { .. } | Action::Finished) {
                    self.held.push(action);
                    continue;
                }
                let reply = match &action {
                    Action::Push {
                        location,
                        mode,
                        version,
                    } => {
                        self.pushes.push((self.now, location.clone(), *mode));
                        if self.nack.contains(location) {
                            Event::EdgeNacked {
                                location: location.clone(),
                                reason: "nginx -t failed".into(),
                            }
                        } else if self.unreachable.contains(location) {
                            Event::EdgeFailed {
                                location: location.clone(),
                                error: "timed out after 5s".into(),
                            }
                        } else {
                            Event::EdgeAcked {
                                location: location.clone(),
                                version: version.clone(),
                                latency_ms: 10 + (self.pushes.len() as u64 % 90),
                            }
                        }
                    }
                    Action::RollbackEdge { location, .. }
                    | Action::ActivateVersion { location, .. } => {
                        self.rollbacks.push(action.clone());
                        if self.unreachable.contains(location) {
                            Event::EdgeRollbackFailed {
                                location: location.clone(),
                                error: "connection refused".into(),
                            }
                        } else {
                            Event::EdgeRolledBack {
                                location: location.clone(),
                            }
                        }
                    }
                    Action::Analyze {
                        canary,
                        baseline,
                        since,
                    } => {
                        self.analyses.push((canary.clone(), baseline.clone()));
                        // Numbered, so a test can tell which verdict's figures were kept.
                        let analysis = self.analyses.len().to_string();
                        Event::Verdict {
                            outcome: (self.judge)(canary, self.now),
                            data: BTreeMap::from([("analysis".into(), analysis)]),
                            since: *since,
                        }
                    }
                    Action::Alert { kind, .. } => {
                        self.alerts.push(*kind);
                        continue;
                    }
                    Action::Finished => {
                        self.finished += 1;
                        continue;
                    }
                };
                let more = self.step_checked(reply).expect("answer applies");
                queue.extend(more);
            }
        }

        /// Ticks every `tick_ms` until the deployment ends or waits for a person.
        fn run(&mut self, tick_ms: i64) {
            for _ in 0..20_000 {
                if self.d.status.is_terminal()
                    || matches!(
                        self.d.status,
                        DeploymentStatus::Paused | DeploymentStatus::AwaitingApproval
                    )
                {
                    return;
                }
                self.advance(tick_ms);
            }
            panic!("deployment did not settle: {:?}", self.d.engine.phase);
        }

        fn advance(&mut self, ms: i64) {
            self.now = self.now.plus_millis(ms);
            self.apply(Event::Tick);
        }

        fn pushed(&self, mode: PushMode) -> Vec<String> {
            self.pushes
                .iter()
                .filter(|(_, _, m)| *m == mode)
                .map(|(_, l, _)| l.clone())
                .collect()
        }

        fn rolled_back(&self) -> Vec<String> {
            let mut out: Vec<String> = self
                .rollbacks
                .iter()
                .map(|a| match a {
                    Action::RollbackEdge { location, .. }
                    | Action::ActivateVersion { location, .. } => location.clone(),
                    _ => String::new(),
                })
                .collect();
            out.sort();
            out
        }

        fn kinds(&self) -> Vec<EventKind> {
            self.d.events.iter().map(|e| e.kind).collect()
        }
    }

    fn sorted(list: &[&str]) -> Vec<String> {
        let mut out: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        out.sort();
        out
    }

    #[test]
    fn every_strategy_completes_on_healthy_fleets() {
        let cases: Vec<(Strategy, serde_json::Value, usize)> = vec![
            (Strategy::DirectDeployment, serde_json::json!({}), 1),
            (Strategy::RegionalCanary, serde_json::json!({}), 3),
            (Strategy::BlueGreenDeployment, serde_json::json!({}), 2),
            (Strategy::RollingRegional, serde_json::json!({}), 3),
            (
                Strategy::GeographicWave,
                serde_json::json!({"days": ["Wed", "Thu"]}),
                3,
            ),
        ];
        for edges in [nine_pops(), fleet(334)] {
            let n = edges.len();
            for (strategy, body, n_waves) in &cases {
                let mut sim = Sim::new(*strategy, body.clone(), edges.clone()).start();
                sim.run(MINUTE);
                let d = &sim.d;
                assert_eq!(d.status, DeploymentStatus::Completed, "{strategy:?} on {n}");
                assert_eq!(d.engine.waves.len(), *n_waves, "{strategy:?}");
                assert_eq!(d.progress_percentage, 100);
                assert_eq!(d.successful_locations.len(), n, "{strategy:?}");
                assert!(d.failed_locations.is_empty() && d.skipped_locations.is_empty());
                assert!(sim.rollbacks.is_empty());
                assert_eq!(sim.finished, 1);
                assert_eq!(d.current_step as usize, *n_waves);
                assert!(d.completed_at.is_some() && d.duration_seconds.is_some());
                assert_eq!(progress(d).acked, n);
                let expected_pushes = if *strategy == Strategy::BlueGreenDeployment {
                    2 * n
                } else {
                    n
                };
                assert_eq!(sim.pushes.len(), expected_pushes, "{strategy:?}");
                assert_eq!(sim.kinds().last(), Some(&EventKind::Completed));
            }
        }
    }

    #[test]
    fn answers_stepped_together_end_where_one_by_one_does() {
        for (strategy, nack) in [
            (Strategy::DirectDeployment, false),
            (Strategy::RegionalCanary, true),
        ] {
            let mut sim = Sim::new(strategy, serde_json::json!({}), fleet(40));
            sim.hold = true;
            let sim = sim.start();
            let mut answers: Vec<Event> = sim
                .held
                .iter()
                .filter_map(|action| match action {
                    Action::Push {
                        location, version, ..
                    } => Some(Event::EdgeAcked {
                        location: location.clone(),
                        version: version.clone(),
                        latency_ms: 12,
                    }),
                    _ => None,
                })
                .collect();
            assert!(answers.len() >= 4, "{strategy:?}");
            if nack {
                let Event::EdgeAcked { location, .. } = answers[1].clone() else {
                    unreachable!()
                };
                answers[1] = Event::EdgeNacked {
                    location,
                    reason: "nginx -t failed".into(),
                };
            }
            let mut one_by_one = sim.d.clone();
            let mut expected = Vec::new();
            for event in answers.clone() {
                expected.extend(step(&mut one_by_one, event, sim.now, &sim.ctx).unwrap());
            }
            let mut together = sim.d.clone();
            let actions = step_answers(&mut together, answers, sim.now, &sim.ctx);
            assert_eq!(together, one_by_one, "{strategy:?}");
            assert_eq!(actions, expected, "{strategy:?}");
            let wanted = if nack {
                DeploymentStatus::InProgress
            } else {
                DeploymentStatus::Completed
            };
            assert_eq!(together.status, wanted, "{strategy:?}");
            if nack {
                assert_eq!(together.engine.phase, Phase::RollingBack);
            }
        }
    }

    #[test]
    fn canary_watches_each_step_against_the_baseline() {
        let mut sim = Sim::nine(Strategy::RegionalCanary, serde_json::json!({})).start();
        assert_eq!(sim.pushed(PushMode::Apply), vec!["ap-east-1"]);
        assert_eq!(sim.d.status, DeploymentStatus::Canary);
        assert_eq!(sim.d.engine.phase, Phase::Watching);
        let (canary, baseline) = sim.analyses[0].clone();
        assert_eq!(canary, vec!["ap-east-1"]);
        assert_eq!(baseline.len(), 8);
        for _ in 0..4 {
            sim.advance(MINUTE);
        }
        assert_eq!(sim.pushes.len(), 1, "no promotion before monitorDuration");
        sim.advance(MINUTE);
        assert_eq!(sim.pushes.len(), 5);
        assert_eq!(sim.d.current_step, 2);
        assert_eq!(sim.d.canary_config.current_step, 1);
        assert_eq!(sim.d.progress_percentage, 55);
        sim.run(MINUTE);
        assert_eq!(sim.d.status, DeploymentStatus::Completed);
        assert_eq!(sim.now, NOW.plus_millis(15 * MINUTE));
    }

    #[test]
    fn new_canary_samples_are_judged_at_once_but_not_within_the_floor() {
        let mut sim = Sim::nine(Strategy::RegionalCanary, serde_json::json!({})).start();
        assert_eq!(sim.analyses.len(), 1, "judged when the watch starts");
        assert!(watches(&sim.d, "ap-east-1"));
        assert!(!watches(&sim.d, "eu-central-1"), "not on the new version");
        let floor = sim.ctx.analyze_floor_ms;
        sim.now = sim.now.plus_millis(floor - 1);
        sim.apply(Event::SamplesArrived);
        assert_eq!(sim.analyses.len(), 1, "within the floor");
        sim.now = sim.now.plus_millis(1);
        sim.apply(Event::SamplesArrived);
        assert_eq!(sim.analyses.len(), 2);
        assert_eq!(sim.d.engine.last_analyze_at, Some(sim.now));
        // Once the deployment waits for a person, samples ask for nothing.
        sim.op(OperatorAction::Pause).expect("paused");
        sim.now = sim.now.plus_millis(2 * floor);
        assert!(!watches(&sim.d, "ap-east-1"));
        sim.apply(Event::SamplesArrived);
        assert_eq!(sim.analyses.len(), 2);
    }

    #[test]
    fn nack_mid_canary_rolls_back_only_touched_edges() {
        let mut sim = Sim::nine(Strategy::RegionalCanary, serde_json::json!({}));
        sim.nack.insert("eu-central-1".into());
        let mut sim = sim.start();
        sim.run(MINUTE);
        assert_eq!(sim.d.status, DeploymentStatus::RolledBack);
        assert_eq!(
            sim.rolled_back(),
            sorted(&["ap-east-1", "us-central-1", "ap-south-1", "eu-north-1"])
        );
        assert!(sim.rollbacks.iter().all(|a| matches!(
            a,
            Action::RollbackEdge { to_version: Some(v), .. } if v == "1.0.0"
        )));
        assert_eq!(sim.d.failed_locations, vec!["eu-central-1"]);
        assert!(sim.d.successful_locations.is_empty());
        assert!(sim.d.errors.iter().any(|e| e.contains("eu-central-1")));
        assert!(sim.alerts.contains(&AlertKind::RolledBack));
        let progress = progress(&sim.d);
        assert_eq!(progress.nacks[0].reason, "nginx -t failed");
        assert!(
            sim.d
                .edges
                .values()
                .filter(|e| e.wave == 2)
                .all(|e| e.state == EdgeState::Pending)
        );
    }

    #[test]
    fn failed_analysis_rolls_back_the_first_canary_of_a_large_fleet() {
        let mut sim = Sim::new(Strategy::RegionalCanary, serde_json::json!({}), fleet(334));
        sim.judge = Box::new(|_, _| AnalysisOutcome::Fail {
            reason: "errorRate 4.1% > 1.0%".into(),
        });
        let mut sim = sim.start();
        sim.run(MINUTE);
        assert_eq!(sim.d.status, DeploymentStatus::RolledBack);
        assert_eq!(sim.pushes.len(), 101);
        assert_eq!(sim.rollbacks.len(), 101);
        // The first verdict failed the wave: it is the one on the timeline, with its figures,
        // and no analysis ran after it.
        let verdicts: Vec<_> = sim
            .d
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Verdict)
            .map(|e| {
                (
                    e.message.as_str(),
                    e.data.get("analysis").map(String::as_str),
                )
            })
            .collect();
        assert_eq!(
            verdicts,
            [("fail: errorRate 4.1% > 1.0%", Some("1"))],
            "{verdicts:?}"
        );
        assert_eq!(sim.analyses.len(), 1);
        assert!(
            sim.d
                .engine
                .rollback_reason
                .as_deref()
                .is_some_and(|r| r.contains("4.1%"))
        );
    }

    #[test]
    fn failure_action_pause_holds_and_resume_accepts_the_failure() {
        let mut sim = Sim::nine(
            Strategy::RegionalCanary,
            serde_json::json!({"failureAction": "pause"}),
        );
        sim.nack.insert("eu-central-1".into());
        let mut sim = sim.start();
        sim.run(MINUTE);
        assert_eq!(sim.d.status, DeploymentStatus::Paused);
        assert!(sim.alerts.contains(&AlertKind::WaveFailed));
        assert!(sim.rollbacks.is_empty());
        let pushes = sim.pushes.len();
        sim.advance(10 * MINUTE);
        assert_eq!(
            sim.pushes.len(),
            pushes,
            "a paused deployment pushes nothing"
        );
        sim.op(OperatorAction::Resume).unwrap();
        sim.run(MINUTE);
        assert_eq!(sim.d.status, DeploymentStatus::Completed);
        assert_eq!(sim.d.failed_locations, vec!["eu-central-1"]);
        assert_eq!(sim.d.successful_locations.len(), 8);
    }

    #[test]
    fn edges_down_during_a_watch_fail_it_and_before_a_wave_are_skipped() {
        let mut sim = Sim::nine(Strategy::RegionalCanary, serde_json::json!({})).start();
        sim.ctx.unhealthy.insert("ap-east-1".into());
        sim.advance(MINUTE);
        assert_eq!(sim.d.status, DeploymentStatus::RolledBack);
        assert_eq!(sim.rolled_back(), vec!["ap-east-1"]);
        assert!(sim.d.errors[0].contains("stopped heartbeating"));

        let mut sim = Sim::nine(Strategy::RegionalCanary, serde_json::json!({})).start();
        sim.ctx.unhealthy.insert("us-east-1".into());
        sim.run(MINUTE);
        assert_eq!(sim.d.status, DeploymentStatus::Completed);
        assert_eq!(sim.d.skipped_locations, vec!["us-east-1"]);
        assert_eq!(
            sim.d.skipped[0].reason,
            "unhealthy at the start of its wave"
        );
        assert_eq!(progress(&sim.d).targets, 8);
        assert_eq!(sim.d.progress_percentage, 100);
    }

    #[test]
    fn inconclusive_extends_the_watch_then_pauses_with_an_alert() {
        let mut sim = Sim::nine(Strategy::RegionalCanary, serde_json::json!({}));
        sim.judge = Box::new(|_, _| AnalysisOutcome::Inconclusive {
            reason: "412 requests < minSamples 1000".into(),
        });
        let mut sim = sim.start();
        sim.run(MINUTE);
        assert_eq!(sim.d.status, DeploymentStatus::Paused);
        assert_eq!(
            sim.now,
            NOW.plus_millis(20 * MINUTE),
            "5m watch + 15m extension"
        );
        assert_eq!(sim.d.engine.extension_used, Span::from_mins(15));
        assert!(sim.alerts.contains(&AlertKind::Inconclusive));
        assert_eq!(sim.pushes.len(), 1);
        assert!(matches!(
            sim.op(OperatorAction::Promote),
            Err(StepError::Invalid(_))
        ));
        sim.op(OperatorAction::Rollback {
            reason: "not enough traffic to judge".into(),
        })
        .unwrap();
        assert_eq!(sim.d.status, DeploymentStatus::RolledBack);
        let rollback = sim
            .d
            .events
            .iter()
            .find(|e| e.kind == EventKind::RollbackStarted);
        assert_eq!(rollback.map(|e| e.actor.as_str()), Some("bob"));
    }

    #[test]
    fn warnings_alert_without_stopping() {
        let mut sim = Sim::nine(Strategy::RegionalCanary, serde_json::json!({}));
        sim.judge = Box::new(|_, _| AnalysisOutcome::Warn {
            message: "p99 112 ms > 100 ms".into(),
        });
        let mut sim = sim.start();
        sim.advance(MINUTE);
        assert!(sim.alerts.contains(&AlertKind::Warning));
        assert_eq!(sim.d.status, DeploymentStatus::Canary);
        sim.run(MINUTE);
        assert_eq!(sim.d.status, DeploymentStatus::Completed);
        assert!(sim.rollbacks.is_empty());
        assert_eq!(sim.d.successful_locations.len(), 9);
    }

    #[test]
    fn direct_retries_then_reports_failures_without_rolling_back() {
        let mut sim = Sim::nine(Strategy::DirectDeployment, serde_json::json!({}));
        sim.unreachable.insert("ap-south-1".into());
        sim.nack.insert("eu-west-1".into());
        let sim = sim.start();
        assert_eq!(sim.d.status, DeploymentStatus::Completed);
        let tries = sim
            .pushes
            .iter()
            .filter(|(_, l, _)| l == "ap-south-1")
            .count();
        assert_eq!(tries, 3);
        assert_eq!(sim.d.failed_locations, sorted(&["ap-south-1", "eu-west-1"]));
        assert_eq!(sim.d.successful_locations.len(), 7);
        assert!(sim.rollbacks.is_empty());
        assert_eq!(sim.d.progress_percentage, 100);
        assert_eq!(sim.d.edges["ap-south-1"].state, EdgeState::TimedOut);

        let mut sim = Sim::nine(Strategy::DirectDeployment, serde_json::json!({}));
        sim.nack = nine_pops().into_iter().map(|e| e.location_id).collect();
        let sim = sim.start();
        assert_eq!(sim.d.status, DeploymentStatus::Failed);
    }

    #[test]
    fn blue_green_activates_after_staging_and_switches_back_on_failure() {
        let mut edges = nine_pops();
        edges[8].active_configurations.clear();
        let mut sim = Sim::new(Strategy::BlueGreenDeployment, serde_json::json!({}), edges);
        sim.judge = Box::new(|_, _| AnalysisOutcome::Fail {
            reason: "hit rate 61% < 80%".into(),
        });
        let mut sim = sim.start();
        assert_eq!(sim.pushed(PushMode::Stage).len(), 9);
        assert_eq!(sim.pushed(PushMode::Activate).len(), 9);
        assert!(
            sim.pushes
                .iter()
                .position(|p| p.2 == PushMode::Activate)
                .unwrap_or(0)
                >= 9,
            "activation only after every target staged"
        );
        sim.run(MINUTE);
        assert_eq!(sim.d.status, DeploymentStatus::RolledBack);
        let switch_backs = sim
            .rollbacks
            .iter()
            .filter(|a| matches!(a, Action::ActivateVersion { version, .. } if version == "1.0.0"))
            .count();
        assert_eq!(switch_backs, 8);
        assert!(sim.rollbacks.contains(&Action::RollbackEdge {
            location: "ap-southeast-1".into(),
            to_version: None
        }));
    }

    #[test]
    fn blue_green_failed_smoke_check_activates_nothing() {
        let mut sim = Sim::nine(Strategy::BlueGreenDeployment, serde_json::json!({}));
        sim.nack.insert("us-east-1".into());
        let sim = sim.start();
        assert_eq!(sim.d.status, DeploymentStatus::Failed);
        assert!(sim.pushed(PushMode::Activate).is_empty());
        assert!(sim.rollbacks.is_empty());
        assert!(sim.d.errors[0].contains("smoke check"));
        assert!(sim.d.successful_locations.is_empty());
    }

    #[test]
    fn rolling_regional_waits_at_each_gate() {
        let body = serde_json::json!({"requireApproval": true,
            "targetRegions": ["Europe", "North America", "Asia Pacific"]});
        let mut sim = Sim::nine(Strategy::RollingRegional, body.clone()).start();
        assert_eq!(sim.pushes.len(), 3);
        assert!(sim.pushes.iter().all(|(_, l, _)| l.starts_with("eu-")));
        sim.run(MINUTE);
        assert_eq!(sim.d.status, DeploymentStatus::AwaitingApproval);
        assert_eq!(sim.now, NOW.plus_millis(15 * MINUTE));
        for _ in 0..24 * 60 {
            sim.advance(MINUTE);
        }
        assert_eq!(sim.pushes.len(), 3, "never approved: never pushed further");
        sim.op(OperatorAction::ApproveNextRegion).unwrap();
        assert_eq!(sim.pushes.len(), 6);
        assert!(matches!(
            sim.op(OperatorAction::ApproveNextRegion),
            Err(StepError::Invalid(_))
        ));
        sim.run(MINUTE);
        assert_eq!(sim.d.status, DeploymentStatus::AwaitingApproval);
        sim.op(OperatorAction::Rollback {
            reason: "rejected".into(),
        })
        .unwrap();
        assert_eq!(sim.d.status, DeploymentStatus::RolledBack);
        assert_eq!(sim.rolled_back().len(), 6);
        let approved = sim.d.events.iter().find(|e| e.kind == EventKind::Approved);
        assert_eq!(approved.map(|e| e.actor.as_str()), Some("bob"));
    }

    #[test]
    fn rolling_regional_failure_rolls_back_done_regions_unless_told_to_continue() {
        for (continue_on_failure, status, n_rollbacks) in [
            (false, DeploymentStatus::RolledBack, 6),
            (true, DeploymentStatus::Completed, 0),
        ] {
            let mut sim = Sim::nine(
                Strategy::RollingRegional,
                serde_json::json!({"continueOnFailure": continue_on_failure,
                    "targetRegions": ["Europe", "North America", "Asia Pacific"]}),
            );
            sim.judge = Box::new(|canary, _| {
                if canary.iter().any(|l| l.starts_with("us-")) {
                    AnalysisOutcome::Fail {
                        reason: "5xx".into(),
                    }
                } else {
                    AnalysisOutcome::Pass
                }
            });
            let mut sim = sim.start();
            sim.run(MINUTE);
            assert_eq!(
                sim.d.status, status,
                "continueOnFailure {continue_on_failure}"
            );
            assert_eq!(sim.rollbacks.len(), n_rollbacks);
            assert!(!sim.d.errors.is_empty());
        }
    }

    #[test]
    fn geographic_waves_start_at_local_night_on_allowed_days() {
        let mut sim = Sim::nine(
            Strategy::GeographicWave,
            serde_json::json!({"days": ["Wed"], "deploymentTime": "02:00", "monitorDuration": "1h"}),
        )
        .start();
        assert!(sim.pushes.is_empty(), "Tuesday noon: nothing yet");
        assert_eq!(sim.d.engine.phase, Phase::Scheduled);
        sim.run(MINUTE);
        assert_eq!(sim.d.status, DeploymentStatus::Completed);
        let regions = ["Asia Pacific", "Europe", "North America"];
        for (wave, region) in sim.d.engine.waves.iter().zip(regions) {
            assert_eq!(wave.name, region);
            let first = sim
                .pushes
                .iter()
                .find(|(_, l, _)| wave.locations.contains(l))
                .map(|p| p.0)
                .expect("wave pushed");
            assert_eq!(Some(first), wave.not_before);
            let local = first.millis() + i64::from(wave.utc_offset_minutes) * MINUTE;
            assert_eq!(local.rem_euclid(86_400_000), 2 * 60 * MINUTE, "{region}");
            assert_eq!(
                crate::rollout::plan::local_weekday(local),
                Weekday::Wed,
                "{region}"
            );
        }
    }

    #[test]
    fn geographic_wave_held_past_its_window_waits_for_the_next() {
        let mut sim = Sim::nine(Strategy::GeographicWave, serde_json::json!({})).start();
        let first = sim.d.engine.phase_until.expect("scheduled");
        sim.op(OperatorAction::Pause).unwrap();
        sim.now = first.plus_millis(3 * 60 * MINUTE);
        sim.op(OperatorAction::Resume).unwrap();
        assert!(sim.pushes.is_empty());
        assert_eq!(
            sim.d.engine.phase_until,
            Some(first.plus_millis(24 * 60 * MINUTE))
        );
        sim.op(OperatorAction::Promote).unwrap();
        assert_eq!(sim.pushes.len(), 3, "promote starts a scheduled wave now");
    }

    /// Builds a deployment in a named state.
    fn in_state(name: &str) -> Sim {
        let canary = || Sim::nine(Strategy::RegionalCanary, serde_json::json!({}));
        match name {
            "pending" => canary(),
            "pushing" => {
                let mut sim = canary();
                sim.hold = true;
                sim.start()
            }
            "watching" => canary().start(),
            "awaiting" => {
                let mut sim = Sim::nine(
                    Strategy::RegionalCanary,
                    serde_json::json!({"canaryConfig": {"autoPromote": false}}),
                )
                .start();
                sim.run(MINUTE);
                sim
            }
            "paused" => {
                let mut sim = canary().start();
                sim.op(OperatorAction::Pause).unwrap();
                sim
            }
            "rolling back" => {
                let mut sim = canary().start();
                sim.hold = true;
                sim.op(OperatorAction::Rollback { reason: "x".into() })
                    .unwrap();
                sim
            }
            "scheduled" => Sim::nine(Strategy::GeographicWave, serde_json::json!({})).start(),
            "completed" => {
                let mut sim = canary().start();
                sim.run(MINUTE);
                sim
            }
            "rolled back" => {
                let mut sim = canary().start();
                sim.op(OperatorAction::Rollback { reason: "x".into() })
                    .unwrap();
                sim
            }
            "failed" => {
                let mut sim = Sim::nine(Strategy::BlueGreenDeployment, serde_json::json!({}));
                sim.nack.insert("us-east-1".into());
                sim.start()
            }
            other => panic!("unknown state {other}"),
        }
    }

    #[test]
    fn operator_actions_in_every_state() {
        // Columns: promote, pause, resume, rollback, approve-next-region.
        // o = accepted, i = invalid here (409), t = terminal (409).
        let table = [
            ("pending", "iiioi"),
            ("pushing", "ioioi"),
            ("watching", "ooioi"),
            ("awaiting", "ooioo"),
            ("paused", "iiooi"),
            ("rolling back", "iiiii"),
            ("scheduled", "ooioi"),
            ("completed", "ttttt"),
            ("rolled back", "ttttt"),
            ("failed", "ttttt"),
        ];
        let actions = [
            OperatorAction::Promote,
            OperatorAction::Pause,
            OperatorAction::Resume,
            OperatorAction::Rollback {
                reason: "bad".into(),
            },
            OperatorAction::ApproveNextRegion,
        ];
        // What each accepted action leaves: status, phase and wave.
        let rollback = actions[3].clone();
        use DeploymentStatus as S;
        use OperatorAction as A;
        let accepted = [
            ("pending", rollback.clone(), S::RolledBack, Phase::Done, 0),
            ("pushing", A::Pause, S::Paused, Phase::Pushing, 0),
            (
                "pushing",
                rollback.clone(),
                S::InProgress,
                Phase::RollingBack,
                0,
            ),
            ("watching", A::Promote, S::Canary, Phase::Watching, 1),
            ("watching", A::Pause, S::Paused, Phase::Watching, 0),
            ("watching", rollback.clone(), S::RolledBack, Phase::Done, 0),
            ("awaiting", A::Promote, S::Canary, Phase::Watching, 1),
            ("awaiting", A::Pause, S::Paused, Phase::AwaitingApproval, 0),
            ("awaiting", rollback.clone(), S::RolledBack, Phase::Done, 0),
            (
                "awaiting",
                A::ApproveNextRegion,
                S::Canary,
                Phase::Watching,
                1,
            ),
            ("paused", A::Resume, S::Canary, Phase::Watching, 0),
            ("paused", rollback.clone(), S::RolledBack, Phase::Done, 0),
            ("scheduled", A::Promote, S::InProgress, Phase::Watching, 0),
            ("scheduled", A::Pause, S::Paused, Phase::Scheduled, 0),
            ("scheduled", rollback.clone(), S::RolledBack, Phase::Done, 0),
        ];
        for (state, expected) in table {
            for (action, want) in actions.iter().zip(expected.chars()) {
                let mut sim = in_state(state);
                let before = sim.d.clone();
                let result = sim.op(action.clone());
                match (want, &result) {
                    ('o', Ok(())) => {
                        let (_, _, status, phase, wave) = accepted
                            .iter()
                            .find(|(s, a, ..)| *s == state && a == action)
                            .unwrap_or_else(|| panic!("{state} {action:?}: no expected outcome"));
                        assert_eq!(
                            (sim.d.status, sim.d.engine.phase, sim.d.engine.wave),
                            (*status, *phase, *wave),
                            "{state} {action:?}"
                        );
                    }
                    ('i', Err(StepError::Invalid(_))) | ('t', Err(StepError::Terminal(_))) => {
                        assert_eq!(sim.d, before, "{state} {action:?} must not change it")
                    }
                    _ => panic!("{state} {action:?}: expected {want}, got {result:?}"),
                }
            }
        }
    }

    #[test]
    fn pause_resume_and_promote_move_as_operators_expect() {
        let mut sim = Sim::nine(Strategy::RegionalCanary, serde_json::json!({})).start();
        sim.op(OperatorAction::Pause).unwrap();
        assert_eq!(sim.d.status, DeploymentStatus::Paused);
        sim.advance(30 * MINUTE);
        assert_eq!(sim.pushes.len(), 1);
        sim.op(OperatorAction::Resume).unwrap();
        assert_eq!(sim.d.status, DeploymentStatus::Canary);
        assert_eq!(
            sim.d.engine.phase_until,
            Some(sim.now.plus_millis(5 * MINUTE))
        );
        sim.op(OperatorAction::Promote).unwrap();
        assert_eq!(sim.pushes.len(), 5, "promote skips the rest of the watch");
        let kinds = sim.kinds();
        for kind in [EventKind::Paused, EventKind::Resumed, EventKind::Promoted] {
            let event = sim
                .d
                .events
                .iter()
                .find(|e| e.kind == kind && e.actor == "bob");
            assert!(event.is_some(), "{kind:?} by bob in {kinds:?}");
        }
    }

    #[test]
    fn a_push_failing_while_paused_is_held_until_resume() {
        let mut sim = Sim::nine(Strategy::DirectDeployment, serde_json::json!({}));
        sim.hold = true;
        let mut sim = sim.start();
        sim.hold = false;
        sim.op(OperatorAction::Pause).unwrap();
        sim.apply(Event::EdgeFailed {
            location: "us-east-1".into(),
            error: "timeout".into(),
        });
        assert_eq!(sim.d.edges["us-east-1"].state, EdgeState::Pending);
        assert!(sim.pushes.is_empty());
        for action in std::mem::take(&mut sim.held) {
            let Action::Push {
                location, version, ..
            } = action
            else {
                continue;
            };
            if location != "us-east-1" {
                sim.apply(Event::EdgeAcked {
                    location,
                    version,
                    latency_ms: 5,
                });
            }
        }
        assert_eq!(sim.d.status, DeploymentStatus::Paused);
        sim.op(OperatorAction::Resume).unwrap();
        assert_eq!(sim.d.status, DeploymentStatus::Completed);
        assert_eq!(sim.d.edges["us-east-1"].attempts, 2);
    }

    #[test]
    fn freeze_pauses_and_only_its_lifting_resumes() {
        let mut sim = Sim::nine(Strategy::RegionalCanary, serde_json::json!({})).start();
        sim.apply(Event::Freeze);
        assert_eq!(sim.d.status, DeploymentStatus::Paused);
        assert!(matches!(
            sim.op(OperatorAction::Resume),
            Err(StepError::Invalid(_))
        ));
        sim.apply(Event::Unfreeze);
        assert_eq!(sim.d.status, DeploymentStatus::Canary);

        // Paused by an operator before the freeze: stays paused after it.
        sim.op(OperatorAction::Pause).unwrap();
        sim.apply(Event::Freeze);
        sim.apply(Event::Unfreeze);
        assert_eq!(sim.d.status, DeploymentStatus::Paused);

        // A freeze never stops a rollback.
        let mut sim = in_state("rolling back");
        sim.apply(Event::Freeze);
        sim.hold = false;
        let held = std::mem::take(&mut sim.held);
        sim.handle(held);
        assert_eq!(sim.d.status, DeploymentStatus::RolledBack);

        // A frozen deployment does not start.
        let mut sim = Sim::nine(Strategy::DirectDeployment, serde_json::json!({}));
        sim.apply(Event::Freeze);
        let p = plan(&sim.d, &sim.edges, sim.now, 120_000);
        assert!(matches!(
            sim.send(Event::Start { plan: p }),
            Err(StepError::Invalid(_))
        ));
    }

    #[test]
    fn failed_rollbacks_are_retried_then_reported() {
        let mut sim = Sim::nine(Strategy::RegionalCanary, serde_json::json!({})).start();
        sim.unreachable.insert("ap-east-1".into());
        sim.op(OperatorAction::Rollback {
            reason: "manual".into(),
        })
        .unwrap();
        assert_eq!(sim.rollbacks.len(), 3);
        assert_eq!(sim.d.status, DeploymentStatus::Failed);
        assert_eq!(sim.d.edges["ap-east-1"].state, EdgeState::RollbackFailed);
        assert!(sim.alerts.contains(&AlertKind::RollbackIncomplete));
    }

    /// Persists the record the way the store does and returns the copy a restart would load.
    fn restart(d: &Deployment) -> Deployment {
        let bytes = postcard::to_stdvec(d).expect("encodes");
        postcard::from_bytes(&bytes).expect("decodes")
    }

    #[test]
    fn resume_actions_reissue_unanswered_work_after_a_crash() {
        type Crash = fn() -> Sim;
        let cases: Vec<(&str, Crash, Vec<&str>)> = vec![
            (
                "pushing",
                || in_state("pushing"),
                vec!["push apply ap-east-1"],
            ),
            (
                "staging",
                || {
                    let mut sim = Sim::nine(Strategy::BlueGreenDeployment, serde_json::json!({}));
                    sim.hold = true;
                    sim.start()
                },
                vec!["push stage"; 9],
            ),
            (
                "activating",
                || {
                    let mut sim =
                        Sim::nine(Strategy::BlueGreenDeployment, serde_json::json!({})).start();
                    sim.hold = true;
                    let mut d = restart(&sim.d);
                    // Crash right after activation was persisted: undo the answers.
                    for edge in d.edges.values_mut() {
                        edge.state = EdgeState::Pushed;
                    }
                    d.engine.phase = Phase::Activating;
                    d.status = DeploymentStatus::InProgress;
                    d.engine.waves.truncate(2);
                    d.engine.wave = 1;
                    sim.d = d;
                    sim
                },
                vec!["push activate"; 9],
            ),
            ("watching", || in_state("watching"), vec!["analyze"]),
            (
                "rolling back",
                || in_state("rolling back"),
                vec!["rollback ap-east-1"],
            ),
            (
                "paused while pushing",
                || {
                    let mut sim = in_state("pushing");
                    sim.op(OperatorAction::Pause).unwrap();
                    sim
                },
                vec!["push apply ap-east-1"],
            ),
            ("scheduled", || in_state("scheduled"), vec![]),
            ("completed", || in_state("completed"), vec![]),
        ];
        for (name, crash, expected) in cases {
            let sim = crash();
            let d = restart(&sim.d);
            let actions = resume_actions(&d, sim.now);
            let described: Vec<String> = actions
                .iter()
                .map(|a| match a {
                    Action::Push { location, mode, .. } if *mode == PushMode::Apply => {
                        format!("push apply {location}")
                    }
                    Action::Push { mode, .. } => format!("push {mode:?}").to_lowercase(),
                    Action::RollbackEdge { location, .. } => format!("rollback {location}"),
                    Action::Analyze { .. } => "analyze".to_string(),
                    other => format!("{other:?}"),
                })
                .collect();
            assert_eq!(described, expected, "{name}");

            // Feeding the edges' answers to the reloaded record carries it to the end.
            let mut resumed = crash();
            resumed.d = d;
            resumed.hold = false;
            resumed.handle(actions);
            if resumed.d.engine.paused_from.is_some() {
                resumed.op(OperatorAction::Resume).unwrap();
            }
            resumed.run(MINUTE);
            assert!(
                resumed.d.status.is_terminal(),
                "{name}: {:?}",
                resumed.d.status
            );
            assert!(
                resumed
                    .d
                    .edges
                    .values()
                    .all(|e| !matches!(e.state, EdgeState::Pushed | EdgeState::RollingBack)),
                "{name}: an edge was left without a decision"
            );
        }
    }

    #[test]
    fn progress_reports_acks_nacks_and_apply_latency() {
        let mut sim = Sim::nine(Strategy::DirectDeployment, serde_json::json!({}));
        sim.hold = true;
        let mut sim = sim.start();
        sim.hold = false;
        let latencies = [5u64, 10, 15, 20, 25, 30, 35, 400];
        let held = std::mem::take(&mut sim.held);
        for (action, latency) in held.into_iter().zip(latencies.iter().chain([&0])) {
            let Action::Push {
                location, version, ..
            } = action
            else {
                continue;
            };
            if location == "us-west-1" {
                sim.apply(Event::EdgeNacked {
                    location,
                    reason: "certificate expired".into(),
                });
            } else {
                sim.apply(Event::EdgeAcked {
                    location,
                    version,
                    latency_ms: *latency,
                });
            }
        }
        let p = progress(&sim.d);
        assert_eq!((p.acked, p.targets), (8, 9));
        assert_eq!(
            p.nacks,
            vec![EdgeNack {
                location_id: "us-west-1".into(),
                reason: "certificate expired".into()
            }]
        );
        assert!(p.p50_apply_ms.is_some_and(|v| v <= 35));
        assert_eq!(p.p99_apply_ms, Some(400));
        let json = serde_json::to_value(&p).unwrap();
        assert!(json.get("p99ApplyMs").is_some());
    }

    #[test]
    fn a_phase_stuck_past_the_limit_alerts_once() {
        let mut sim = in_state("pushing");
        sim.advance(29 * MINUTE);
        assert!(sim.alerts.is_empty());
        sim.advance(MINUTE);
        assert_eq!(sim.alerts, vec![AlertKind::Stuck]);
        sim.advance(MINUTE);
        assert_eq!(sim.alerts, vec![AlertKind::Stuck]);

        let mut paused = in_state("pushing");
        paused.op(OperatorAction::Pause).unwrap();
        paused.advance(60 * MINUTE);
        assert!(paused.alerts.is_empty());
    }

    #[test]
    fn a_verdict_on_an_earlier_watch_is_ignored() {
        let mut sim = in_state("watching");
        let started = sim.d.engine.watch_started.expect("watching");
        sim.advance(5 * MINUTE);
        assert_eq!(sim.d.current_step, 2, "first watch passed");
        sim.apply(Event::Verdict {
            outcome: AnalysisOutcome::Fail {
                reason: "late".into(),
            },
            data: BTreeMap::new(),
            since: started,
        });
        assert_eq!(sim.d.status, DeploymentStatus::Canary);
        assert!(sim.rollbacks.is_empty());
    }

    #[test]
    fn stale_and_late_answers_change_nothing() {
        let mut sim = in_state("completed");
        let before = sim.d.clone();
        sim.apply(Event::EdgeNacked {
            location: "us-east-1".into(),
            reason: "late".into(),
        });
        sim.apply(Event::Tick);
        assert_eq!(sim.d, before);
        // An ack for another version, from an edge still waiting on its push, leaves it
        // waiting; the right version then acks it.
        let mut sim = in_state("pushing");
        let waiting = sim
            .d
            .edges
            .iter()
            .find(|(_, e)| e.state == EdgeState::Pushed)
            .map(|(l, _)| l.clone())
            .expect("an edge waiting on its push");
        let before = sim.d.clone();
        sim.apply(Event::EdgeAcked {
            location: waiting.clone(),
            version: "9.9.9".into(),
            latency_ms: 1,
        });
        assert_eq!(sim.d, before, "a wrong-version ack changes nothing");
        sim.apply(Event::EdgeAcked {
            location: waiting.clone(),
            version: sim.d.configuration_version.clone(),
            latency_ms: 1,
        });
        assert_eq!(sim.d.edges[&waiting].state, EdgeState::Acked);
        let mut sim = in_state("watching");
        sim.apply(Event::EdgeAcked {
            location: "nowhere".into(),
            version: "2.0.0".into(),
            latency_ms: 1,
        });
        assert_eq!(sim.d.engine.phase, Phase::Watching);
        assert!(matches!(
            sim.send(Event::Start {
                plan: plan(&sim.d, &nine_pops(), NOW, 120_000)
            }),
            Err(StepError::Invalid(_))
        ));
    }
}
