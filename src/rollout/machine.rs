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
    /// How often to ask for an analysis during a watch.
    pub analyze_interval_ms: i64,
    /// Pushes (and rollbacks) per edge before giving up on it.
    pub max_push_attempts: u32,
    /// How much one inconclusive verdict extends a finished watch.
    pub extension_step_ms: i64,
    /// How late after its window a scheduled wave may still start; later, it waits for the
    /// next window.
    pub window_grace_ms: i64,
}

impl Default for StepContext {
    fn default() -> Self {
        Self {
            unhealthy: BTreeSet::new(),
            analyze_interval_ms: 10_000,
            max_push_attempts: 3,
            extension_step_ms: 60_000,
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
    },
    Operator {
        action: OperatorAction,
        actor: String,
    },
    Freeze,
    Unfreeze,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushMode {
    Apply,
    Stage,
    Activate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlertKind {
    WaveFailed,
    Inconclusive,
    Warning,
    RolledBack,
    RollbackIncomplete,
    NoTargets,
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeNack {
    pub location_id: String,
    pub reason: String,
}

/// Progress the way operators read it (SPEC §7, common rules).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
        Event::Verdict { outcome, data } => run.verdict(outcome, data),
        Event::Operator { action, actor } => run.operator(action, &actor)?,
        Event::Freeze => run.freeze(),
        Event::Unfreeze => run.unfreeze(),
    }
    let out = std::mem::take(&mut run.out);
    refresh(run.d);
    Ok(out)
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
    edge.state == EdgeState::Acked && edge.touched
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
    d.successful_locations = d
        .edges
        .iter()
        .filter(|(_, e)| runs_new_version(e))
        .map(|(l, _)| l.clone())
        .collect();
    d.failed_locations = d
        .edges
        .iter()
        .filter(|(_, e)| {
            matches!(
                e.state,
                EdgeState::Nacked | EdgeState::TimedOut | EdgeState::RollbackFailed
            )
        })
        .map(|(l, _)| l.clone())
        .collect();
    d.skipped_locations = d.skipped.iter().map(|s| s.location_id.clone()).collect();
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
        for location in self.wave_locations() {
            let Some(edge) = self.d.edges.get(&location) else {
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

    fn tick(&mut self) {
        if self.paused() {
            return;
        }
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

    fn edge_acked(&mut self, location: &str, version: &str, latency_ms: u64) {
        if version != self.d.configuration_version {
            return;
        }
        let now = self.now;
        let Some(edge) = self.d.edges.get_mut(location) else {
            return;
        };
        // Late acks of pushes given up on still count: the edge has the version now.
        if !matches!(
            edge.state,
            EdgeState::Pushed | EdgeState::Pending | EdgeState::TimedOut
        ) {
            return;
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
        self.check_wave();
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

    fn verdict(&mut self, outcome: AnalysisOutcome, data: BTreeMap<String, String>) {
        // Verdicts for anything but a running watch are stale (the watch moved on or paused).
        if self.paused() || self.d.engine.phase != Phase::Watching {
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
            AnalysisOutcome::Warn { message } => self.alert(AlertKind::Warning, message),
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
