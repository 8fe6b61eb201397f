//! Deployments: the record of one rollout of a configuration version to edges (SPEC §2.4, §2.5, §7).
//!
//! The record is both the API's JSON shape and the value the store keeps with postcard, so it
//! holds everything the rollout engine needs to resume after a restart: per-edge state, the
//! planned waves and the engine cursor. Durations are [`Span`]s: humantime strings in JSON
//! (ISO-8601 and integer seconds accepted on input), integer milliseconds in the store.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{PerformanceSnapshot, Timestamp};

/// Errors of the deployment model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeploymentError {
    /// A create request failed validation; every problem is listed.
    #[error("invalid deployment request: {}", .0.len())]
    Invalid(Vec<FieldError>),
}

/// One validation problem, named by the request field it concerns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Durations

/// A duration with millisecond precision.
///
/// JSON: written as a humantime string (`"5m"`); read from a humantime string, an ISO-8601
/// duration (`"PT5M"`) or integer seconds. Store: integer milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span(pub u64);

impl Span {
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs * 1000)
    }

    pub const fn from_mins(mins: u64) -> Self {
        Self(mins * 60_000)
    }

    pub fn millis(self) -> u64 {
        self.0
    }

    /// Milliseconds as the signed type timestamps use; saturates rather than wraps.
    pub fn as_i64(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    /// Parses a duration in the product's one syntax ([`super::duration::parse_duration`]).
    pub fn parse(text: &str) -> Result<Self, String> {
        let duration = super::duration::parse_duration(text).map_err(|e| e.to_string())?;
        u64::try_from(duration.as_millis())
            .map(Span)
            .map_err(|_| format!("duration '{}' is too large", text.trim()))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        write!(
            f,
            "{}",
            humantime::format_duration(Duration::from_millis(self.0))
        )
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_string())
        } else {
            serializer.serialize_u64(self.0)
        }
    }
}

impl utoipa::PartialSchema for Span {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        let text = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .description(Some(
                "humantime (\"5m\", \"1h 30m\") or ISO-8601 (\"PT5M\")",
            ));
        let seconds = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .description(Some("whole seconds"));
        OneOfBuilder::new()
            .item(text)
            .item(seconds)
            .description(Some(
                "A duration; answers always write it as humantime text (\"5m\")",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Span {}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HumanVisitor;
        impl serde::de::Visitor<'_> for HumanVisitor {
            type Value = Span;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration: \"5m\", \"PT5M\" or integer seconds")
            }

            fn visit_u64<E: serde::de::Error>(self, secs: u64) -> Result<Span, E> {
                secs.checked_mul(1000)
                    .map(Span)
                    .ok_or_else(|| E::custom("duration too large"))
            }

            fn visit_i64<E: serde::de::Error>(self, secs: i64) -> Result<Span, E> {
                u64::try_from(secs)
                    .map_err(|_| E::custom("duration must not be negative"))
                    .and_then(|s| self.visit_u64(s))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Span, E> {
                Span::parse(text).map_err(E::custom)
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_any(HumanVisitor)
        } else {
            u64::deserialize(deserializer).map(Span)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Enumerations (unit variants only: they are API-visible and must read as plain strings)

/// How the new version reaches the edges (SPEC §7).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
pub enum Strategy {
    DirectDeployment,
    #[default]
    RegionalCanary,
    BlueGreenDeployment,
    RollingRegional,
    GeographicWave,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
pub enum DeploymentStatus {
    #[default]
    Pending,
    InProgress,
    Canary,
    Paused,
    AwaitingApproval,
    Completed,
    Failed,
    RolledBack,
}

impl DeploymentStatus {
    /// Terminal deployments never change again (SPEC §2.4).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            DeploymentStatus::Completed | DeploymentStatus::Failed | DeploymentStatus::RolledBack
        )
    }
}

/// What a failed watch period does (SPEC §7, common rules).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    #[default]
    Rollback,
    Pause,
}

/// Days of the week on which a geographic wave may start.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    /// Accepts `Mon` or `Monday`, any case.
    pub fn parse(text: &str) -> Option<Weekday> {
        const NAMES: [&str; 7] = [
            "monday",
            "tuesday",
            "wednesday",
            "thursday",
            "friday",
            "saturday",
            "sunday",
        ];
        let lower = text.trim().to_ascii_lowercase();
        NAMES
            .iter()
            .position(|name| *name == lower || (lower.len() == 3 && name.starts_with(&lower)))
            .map(|i| Weekday::ALL[i])
    }

    pub fn from_time(day: time::Weekday) -> Weekday {
        Weekday::ALL[usize::from(day.number_days_from_monday())]
    }
}

/// Where one edge stands in this deployment.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
pub enum EdgeState {
    /// Targeted, nothing sent yet (or a retry is due).
    #[default]
    Pending,
    /// A push is in flight; no answer yet.
    Pushed,
    Acked,
    Nacked,
    TimedOut,
    /// A rollback is in flight.
    RollingBack,
    RolledBack,
    /// The rollback could not be confirmed after retries; reconciliation takes over.
    RollbackFailed,
    Skipped,
}

/// Timeline entry kinds (SPEC §2.4 `events`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventKind {
    Created,
    StepStarted,
    EdgePushed,
    EdgeAcked,
    EdgeNacked,
    EdgeTimedOut,
    EdgeFailed,
    Verdict,
    Paused,
    Resumed,
    Promoted,
    AwaitingApproval,
    Approved,
    RollbackStarted,
    EdgeRolledBack,
    EdgeRollbackFailed,
    RolledBack,
    Completed,
    Failed,
    Alert,
    Skipped,
    Frozen,
    Unfrozen,
}

/// What the rollout engine is doing within the current wave.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
pub enum Phase {
    /// Not started yet.
    #[default]
    Idle,
    /// Waiting for the wave's `notBefore` (geographic waves).
    Scheduled,
    /// Pushing the wave's edges (`apply`).
    Pushing,
    /// Blue-green: staging the new version on every target.
    Staging,
    /// Blue-green: making the staged version active everywhere.
    Activating,
    /// Watching the wave until `phaseUntil`, then analysing.
    Watching,
    AwaitingApproval,
    RollingBack,
    Done,
}

// ---------------------------------------------------------------------------------------------
// Records

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct CanaryConfig {
    /// Informational: always equal to the first promotion step.
    pub initial_percentage: f64,
    /// Cumulative percentages of the targets, strictly increasing, ending at 100.
    pub promotion_steps: Vec<u32>,
    pub monitor_duration: Span,
    pub auto_promote: bool,
    /// Index into `promotionSteps` of the step being deployed or watched.
    pub current_step: u32,
}

impl Default for CanaryConfig {
    fn default() -> Self {
        Self {
            initial_percentage: 10.0,
            promotion_steps: vec![10, 50, 100],
            monitor_duration: Span::from_mins(5),
            auto_promote: true,
            current_step: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RollbackConfig {
    pub auto_rollback: bool,
    /// Percent; roll back below.
    #[schema(minimum = 0, maximum = 100)]
    pub cache_hit_rate_threshold: f64,
    /// Percent; roll back above.
    #[schema(minimum = 0, maximum = 100)]
    pub error_rate_threshold: f64,
    /// Roll back above.
    #[schema(exclusive_minimum = 0)]
    pub p99_latency_threshold_ms: f64,
    /// Largest tolerated regression against the baseline, in percent of the baseline value.
    #[schema(minimum = 0)]
    pub max_regression: f64,
    /// Fewer requests than this in a window make a verdict `Inconclusive`.
    pub min_samples: u64,
    /// Consecutive breaching intervals that count as a breach (SPEC §8.3).
    #[schema(minimum = 1)]
    pub breach_intervals: u32,
    /// How long an inconclusive watch may be extended in total before pausing.
    pub max_extension: Span,
}

impl Default for RollbackConfig {
    fn default() -> Self {
        Self {
            auto_rollback: true,
            cache_hit_rate_threshold: 80.0,
            error_rate_threshold: 1.0,
            p99_latency_threshold_ms: 200.0,
            max_regression: 10.0,
            min_samples: 1000,
            breach_intervals: 2,
            max_extension: Span::from_mins(15),
        }
    }
}

impl RollbackConfig {
    /// Field-level problems: percentages within 0–100, positive latency, at least one interval.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let percent = |value: f64| value.is_finite() && (0.0..=100.0).contains(&value);
        if !percent(self.cache_hit_rate_threshold) {
            errors.push(FieldError::new(
                "cacheHitRateThreshold",
                "must be a percentage from 0 to 100",
            ));
        }
        if !percent(self.error_rate_threshold) {
            errors.push(FieldError::new(
                "errorRateThreshold",
                "must be a percentage from 0 to 100",
            ));
        }
        if !(self.p99_latency_threshold_ms.is_finite() && self.p99_latency_threshold_ms > 0.0) {
            errors.push(FieldError::new(
                "p99LatencyThresholdMs",
                "must be a positive number of milliseconds",
            ));
        }
        if !(self.max_regression.is_finite() && self.max_regression >= 0.0) {
            errors.push(FieldError::new(
                "maxRegression",
                "must be a percentage of 0 or more",
            ));
        }
        if self.breach_intervals == 0 {
            errors.push(FieldError::new("breachIntervals", "must be at least 1"));
        }
        errors
    }
}

/// One entry of the deployment's timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentEvent {
    pub at: Timestamp,
    pub kind: EventKind,
    /// `system` for the engine's own decisions, else the operator's username.
    pub actor: String,
    pub message: String,
    pub location_id: Option<String>,
    pub version: Option<String>,
    /// Numbers behind the event (verdict figures, latencies), as strings.
    pub data: BTreeMap<String, String>,
}

/// An edge left out of the deployment, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SkippedLocation {
    pub location_id: String,
    pub reason: String,
}

/// One edge's progress in this deployment.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgeDeploymentState {
    pub state: EdgeState,
    /// What the edge ran before; rollbacks return it there. `None`: the edge had no version
    /// of this configuration, or it is unknown, and rollback relies on the agent's history.
    pub previous_version: Option<String>,
    /// Index of the wave the edge belongs to.
    pub wave: u32,
    pub pushed_at: Option<Timestamp>,
    pub acked_at: Option<Timestamp>,
    pub apply_latency_ms: Option<u64>,
    pub error: Option<String>,
    pub attempts: u32,
    /// Set once the new version may have reached the edge; only touched edges are rolled back.
    pub touched: bool,
}

/// A planned wave: which edges, when, how long to watch, and whether a person must approve
/// the next one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    pub index: u32,
    pub name: String,
    pub locations: Vec<String>,
    pub watch_ms: u64,
    /// When true, the deployment waits for approval after this wave's watch passes.
    pub gate: bool,
    pub not_before: Option<Timestamp>,
    /// Geographic waves: the region's representative offset from UTC, for local-time windows.
    pub utc_offset_minutes: i32,
}

/// Where the engine stands; persisted with the deployment so a restart resumes it.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineCursor {
    pub waves: Vec<Wave>,
    /// Index into `waves`.
    pub wave: u32,
    pub phase: Phase,
    /// End of the current watch, or start time of a scheduled wave.
    pub phase_until: Option<Timestamp>,
    /// Start of the current watch: analysis compares from here.
    pub watch_started: Option<Timestamp>,
    /// When the last `Analyze` was asked for in this watch.
    pub last_analyze_at: Option<Timestamp>,
    /// Extension already granted to inconclusive verdicts in this watch.
    pub extension_used: Span,
    /// The phase to return to on resume; `Some` exactly while paused.
    pub paused_from: Option<Phase>,
    /// The status to return to on resume.
    pub paused_status: Option<DeploymentStatus>,
    /// A global freeze is in effect for this deployment; resume is refused until it lifts.
    pub frozen: bool,
    /// The current pause was caused by the freeze, so lifting the freeze resumes.
    pub paused_by_freeze: bool,
    /// A wave whose edge failures an operator accepted by resuming after a failure pause;
    /// they no longer fail that wave.
    pub accepted_failures_wave: Option<u32>,
    /// When the current pushing or rolling-back phase began, for the stuck alert.
    pub phase_since: Option<Timestamp>,
    /// The stuck alert was raised for the current phase.
    pub stuck_alerted: bool,
    /// Why the deployment is rolling back, for the final record.
    pub rollback_reason: Option<String>,
    /// The planned end, for progress displays.
    pub expected_finish: Option<Timestamp>,
}

/// A deployment (SPEC §2.4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub deployment_id: String,
    pub configuration_id: String,
    pub configuration_version: String,
    pub strategy: Strategy,
    pub target_regions: Vec<String>,
    pub target_locations: Vec<String>,
    pub status: DeploymentStatus,
    pub canary_config: CanaryConfig,
    pub rollback_config: RollbackConfig,
    /// Blue-green watch after activation.
    pub test_duration: Span,
    /// Rolling regional watch per region.
    pub region_delay: Span,
    pub require_approval: bool,
    pub continue_on_failure: bool,
    /// Geographic waves: local `HH:MM` at which each region starts.
    pub deployment_time: String,
    /// Geographic waves: allowed days; empty means any day.
    pub days: Vec<Weekday>,
    /// Geographic waves: watch per region.
    pub monitor_duration: Span,
    pub failure_action: FailureAction,
    pub acknowledge_warnings: bool,
    pub deployed_by: String,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub duration_seconds: Option<u64>,
    /// Share of the targets running the new version (blue-green: staging counts for half).
    pub progress_percentage: u8,
    /// 1-based number of the wave being deployed or watched; 0 before the start.
    pub current_step: u32,
    /// Edges running the new version.
    pub successful_locations: Vec<String>,
    /// Edges that NACKed, could not be reached, or whose rollback was not confirmed.
    pub failed_locations: Vec<String>,
    pub skipped_locations: Vec<String>,
    /// The skipped edges with the reason for each.
    pub skipped: Vec<SkippedLocation>,
    pub errors: Vec<String>,
    pub pre_deployment_metrics: Option<PerformanceSnapshot>,
    pub post_deployment_metrics: Option<PerformanceSnapshot>,
    pub events: Vec<DeploymentEvent>,
    pub metadata: BTreeMap<String, String>,
    pub edges: BTreeMap<String, EdgeDeploymentState>,
    pub engine: EngineCursor,
}

impl Deployment {
    /// The record without the parts that grow with the fleet (per-edge states, the timeline,
    /// the waves' location lists and the location lists derived from the edges): what the
    /// store keeps as the deployment's own row, the rest having rows of their own.
    pub fn header(&self) -> Deployment {
        Deployment {
            deployment_id: self.deployment_id.clone(),
            configuration_id: self.configuration_id.clone(),
            configuration_version: self.configuration_version.clone(),
            strategy: self.strategy,
            target_regions: self.target_regions.clone(),
            target_locations: self.target_locations.clone(),
            status: self.status,
            canary_config: self.canary_config.clone(),
            rollback_config: self.rollback_config.clone(),
            test_duration: self.test_duration,
            region_delay: self.region_delay,
            require_approval: self.require_approval,
            continue_on_failure: self.continue_on_failure,
            deployment_time: self.deployment_time.clone(),
            days: self.days.clone(),
            monitor_duration: self.monitor_duration,
            failure_action: self.failure_action,
            acknowledge_warnings: self.acknowledge_warnings,
            deployed_by: self.deployed_by.clone(),
            created_at: self.created_at,
            started_at: self.started_at,
            completed_at: self.completed_at,
            duration_seconds: self.duration_seconds,
            progress_percentage: self.progress_percentage,
            current_step: self.current_step,
            successful_locations: Vec::new(),
            failed_locations: Vec::new(),
            skipped_locations: Vec::new(),
            skipped: self.skipped.clone(),
            errors: self.errors.clone(),
            pre_deployment_metrics: self.pre_deployment_metrics.clone(),
            post_deployment_metrics: self.post_deployment_metrics.clone(),
            events: Vec::new(),
            metadata: self.metadata.clone(),
            edges: BTreeMap::new(),
            engine: self.engine.clone_without_waves(),
        }
    }

    /// Recomputes `successfulLocations` (edges running the new version), `failedLocations`
    /// (NACKed, given up on, rollback not confirmed) and `skippedLocations` from the edges.
    pub fn derive_location_lists(&mut self) {
        self.successful_locations = self
            .edges
            .iter()
            .filter(|(_, e)| e.runs_new_version())
            .map(|(l, _)| l.clone())
            .collect();
        self.failed_locations = self
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
        self.skipped_locations = self.skipped.iter().map(|s| s.location_id.clone()).collect();
    }
}

impl EdgeDeploymentState {
    /// The edge's active version is the deployment's new one.
    pub fn runs_new_version(&self) -> bool {
        self.state == EdgeState::Acked && self.touched
    }
}

impl EngineCursor {
    /// A copy of the cursor with no waves, without copying them first.
    fn clone_without_waves(&self) -> EngineCursor {
        EngineCursor {
            waves: Vec::new(),
            wave: self.wave,
            phase: self.phase,
            phase_until: self.phase_until,
            watch_started: self.watch_started,
            last_analyze_at: self.last_analyze_at,
            extension_used: self.extension_used,
            paused_from: self.paused_from,
            paused_status: self.paused_status,
            frozen: self.frozen,
            paused_by_freeze: self.paused_by_freeze,
            accepted_failures_wave: self.accepted_failures_wave,
            phase_since: self.phase_since,
            stuck_alerted: self.stuck_alerted,
            rollback_reason: self.rollback_reason.clone(),
            expected_finish: self.expected_finish,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Create request

/// The body of `POST /deployments`. Fields the server owns (`deploymentId`, `status`,
/// `progressPercentage`, ...) are not part of it and are ignored when sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct CreateDeployment {
    pub configuration_id: String,
    /// Default: the latest approved version, resolved by the caller.
    pub configuration_version: Option<String>,
    pub strategy: Strategy,
    pub target_regions: Vec<String>,
    pub target_locations: Vec<String>,
    pub canary_config: CanaryConfig,
    /// Default: the server-wide thresholds.
    pub rollback_config: Option<RollbackConfig>,
    pub test_duration: Span,
    pub region_delay: Span,
    pub require_approval: bool,
    pub continue_on_failure: bool,
    pub deployment_time: String,
    /// Day names (`Tue` or `Tuesday`); kept as text so a bad one is a field error.
    pub days: Vec<String>,
    pub monitor_duration: Span,
    pub failure_action: FailureAction,
    pub acknowledge_warnings: bool,
    pub metadata: BTreeMap<String, String>,
}

impl Default for CreateDeployment {
    fn default() -> Self {
        Self {
            configuration_id: String::new(),
            configuration_version: None,
            strategy: Strategy::default(),
            target_regions: Vec::new(),
            target_locations: Vec::new(),
            canary_config: CanaryConfig::default(),
            rollback_config: None,
            test_duration: Span::from_mins(10),
            region_delay: Span::from_mins(15),
            require_approval: false,
            continue_on_failure: false,
            deployment_time: "02:00".to_string(),
            days: Vec::new(),
            monitor_duration: Span::from_mins(60),
            failure_action: FailureAction::default(),
            acknowledge_warnings: false,
            metadata: BTreeMap::new(),
        }
    }
}

const DAY_MS: u64 = 86_400_000;

/// Parses `HH:MM` (24-hour) into minutes after midnight.
pub fn parse_hh_mm(text: &str) -> Option<u32> {
    let (hours, minutes) = text.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let hours: u32 = hours.parse().ok()?;
    let minutes: u32 = minutes.parse().ok()?;
    (hours < 24 && minutes < 60).then_some(hours * 60 + minutes)
}

fn check_span(errors: &mut Vec<FieldError>, field: &str, span: Span, min: Span, max: Span) {
    if span < min || span > max {
        errors.push(FieldError::new(
            field,
            format!("must be between {min} and {max}"),
        ));
    }
}

impl CreateDeployment {
    /// Every problem with the request, as field-level errors; empty when valid.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.configuration_id.trim().is_empty() {
            errors.push(FieldError::new("configurationId", "is required"));
        }
        if self.target_regions.is_empty() && self.target_locations.is_empty() {
            errors.push(FieldError::new(
                "targetRegions",
                "at least one of targetRegions and targetLocations must be non-empty",
            ));
        }
        for (field, list) in [
            ("targetRegions", &self.target_regions),
            ("targetLocations", &self.target_locations),
        ] {
            for (i, item) in list.iter().enumerate() {
                if item.trim().is_empty() {
                    errors.push(FieldError::new(
                        &format!("{field}[{i}]"),
                        "must not be empty",
                    ));
                } else if list[..i].contains(item) {
                    errors.push(FieldError::new(
                        &format!("{field}[{i}]"),
                        format!("'{item}' is listed twice"),
                    ));
                }
            }
        }

        let steps = &self.canary_config.promotion_steps;
        if steps.is_empty() {
            errors.push(FieldError::new(
                "canaryConfig.promotionSteps",
                "must not be empty",
            ));
        } else if steps.iter().any(|p| !(1..=100).contains(p)) {
            errors.push(FieldError::new(
                "canaryConfig.promotionSteps",
                "every step must be between 1 and 100",
            ));
        } else if steps.windows(2).any(|w| w[0] >= w[1]) {
            errors.push(FieldError::new(
                "canaryConfig.promotionSteps",
                "steps must be strictly increasing",
            ));
        } else if steps.last() != Some(&100) {
            errors.push(FieldError::new(
                "canaryConfig.promotionSteps",
                "the last step must be 100",
            ));
        } else if (self.canary_config.initial_percentage - f64::from(steps[0])).abs() > 1e-9 {
            errors.push(FieldError::new(
                "canaryConfig.initialPercentage",
                "must equal the first promotion step",
            ));
        }

        let second = Span::from_secs(1);
        let day = Span(DAY_MS);
        check_span(
            &mut errors,
            "canaryConfig.monitorDuration",
            self.canary_config.monitor_duration,
            second,
            day,
        );
        check_span(&mut errors, "testDuration", self.test_duration, second, day);
        check_span(&mut errors, "regionDelay", self.region_delay, Span(0), day);
        check_span(
            &mut errors,
            "monitorDuration",
            self.monitor_duration,
            second,
            day,
        );

        if let Some(rollback) = &self.rollback_config {
            if !(0.0..=100.0).contains(&rollback.cache_hit_rate_threshold) {
                errors.push(FieldError::new(
                    "rollbackConfig.cacheHitRateThreshold",
                    "must be between 0 and 100",
                ));
            }
            if !(0.0..=100.0).contains(&rollback.error_rate_threshold) {
                errors.push(FieldError::new(
                    "rollbackConfig.errorRateThreshold",
                    "must be between 0 and 100",
                ));
            }
            if !(rollback.p99_latency_threshold_ms > 0.0
                && rollback.p99_latency_threshold_ms.is_finite())
            {
                errors.push(FieldError::new(
                    "rollbackConfig.p99LatencyThresholdMs",
                    "must be a positive number",
                ));
            }
            if !(rollback.max_regression >= 0.0 && rollback.max_regression.is_finite()) {
                errors.push(FieldError::new(
                    "rollbackConfig.maxRegression",
                    "must not be negative",
                ));
            }
            if !(1..=100).contains(&rollback.breach_intervals) {
                errors.push(FieldError::new(
                    "rollbackConfig.breachIntervals",
                    "must be between 1 and 100",
                ));
            }
            check_span(
                &mut errors,
                "rollbackConfig.maxExtension",
                rollback.max_extension,
                Span(0),
                day,
            );
        }

        if parse_hh_mm(&self.deployment_time).is_none() {
            errors.push(FieldError::new(
                "deploymentTime",
                "must be a 24-hour time HH:MM",
            ));
        }
        for (i, name) in self.days.iter().enumerate() {
            if Weekday::parse(name).is_none() {
                errors.push(FieldError::new(
                    &format!("days[{i}]"),
                    format!("'{name}' is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"),
                ));
            }
        }
        errors
    }

    /// Builds the `Pending` deployment this request asks for.
    ///
    /// `version` is the resolved configuration version; `default_rollback` the server-wide
    /// thresholds used when the request names none.
    pub fn into_deployment(
        self,
        deployment_id: String,
        version: String,
        deployed_by: String,
        now: Timestamp,
        default_rollback: &RollbackConfig,
    ) -> Result<Deployment, DeploymentError> {
        let errors = self.validate();
        if !errors.is_empty() {
            return Err(DeploymentError::Invalid(errors));
        }
        let mut days: Vec<Weekday> = self.days.iter().filter_map(|d| Weekday::parse(d)).collect();
        days.sort();
        days.dedup();
        let mut canary_config = self.canary_config;
        canary_config.current_step = 0;
        let created = DeploymentEvent {
            at: now,
            kind: EventKind::Created,
            actor: deployed_by.clone(),
            message: format!(
                "deployment of version {version} created ({:?})",
                self.strategy
            ),
            location_id: None,
            version: Some(version.clone()),
            data: BTreeMap::new(),
        };
        Ok(Deployment {
            deployment_id,
            configuration_id: self.configuration_id,
            configuration_version: version,
            strategy: self.strategy,
            target_regions: self.target_regions,
            target_locations: self.target_locations,
            status: DeploymentStatus::Pending,
            canary_config,
            rollback_config: self
                .rollback_config
                .unwrap_or_else(|| default_rollback.clone()),
            test_duration: self.test_duration,
            region_delay: self.region_delay,
            require_approval: self.require_approval,
            continue_on_failure: self.continue_on_failure,
            deployment_time: self.deployment_time,
            days,
            monitor_duration: self.monitor_duration,
            failure_action: self.failure_action,
            acknowledge_warnings: self.acknowledge_warnings,
            deployed_by,
            created_at: now,
            started_at: None,
            completed_at: None,
            duration_seconds: None,
            progress_percentage: 0,
            current_step: 0,
            successful_locations: Vec::new(),
            failed_locations: Vec::new(),
            skipped_locations: Vec::new(),
            skipped: Vec::new(),
            errors: Vec::new(),
            pre_deployment_metrics: None,
            post_deployment_metrics: None,
            events: vec![created],
            metadata: self.metadata,
            edges: BTreeMap::new(),
            engine: EngineCursor::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: serde_json::Value) -> CreateDeployment {
        serde_json::from_value(body).expect("request parses")
    }

    fn fields(req: &CreateDeployment) -> Vec<String> {
        req.validate().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn spans_read_three_notations_and_write_humantime() {
        for (text, ms) in [
            ("\"5m\"", 300_000),
            ("\"PT5M\"", 300_000),
            ("300", 300_000),
            ("\"1h 30m\"", 5_400_000),
            ("\"P1DT2H\"", 93_600_000),
            ("\"PT1.5S\"", 1_500),
            ("\"P1W\"", 604_800_000),
        ] {
            let span: Span = serde_json::from_str(text).expect(text);
            assert_eq!(span, Span(ms), "{text}");
        }
        for bad in [
            "\"P\"",
            "\"PT\"",
            "\"P1M\"",
            "\"5 parsecs\"",
            "-3",
            "\"PT5\"",
        ] {
            assert!(serde_json::from_str::<Span>(bad).is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::to_string(&Span::from_mins(5)).unwrap(),
            "\"5m\""
        );
        assert_eq!(serde_json::to_string(&Span(0)).unwrap(), "\"0s\"");
        let bytes = postcard::to_stdvec(&Span(1234)).unwrap();
        assert_eq!(postcard::from_bytes::<Span>(&bytes).unwrap(), Span(1234));
    }

    #[test]
    fn defaults_follow_the_spec_and_owned_fields_are_ignored() {
        let req = request(serde_json::json!({
            "configurationId": "config-1",
            "targetRegions": ["Europe"],
            "status": "Completed",
            "deploymentId": "deploy-evil",
            "progressPercentage": 100
        }));
        assert!(req.validate().is_empty(), "{:?}", req.validate());
        let d = req
            .into_deployment(
                "deploy-1".into(),
                "1.0.0".into(),
                "alice".into(),
                Timestamp(1000),
                &RollbackConfig::default(),
            )
            .unwrap();
        assert_eq!(d.deployment_id, "deploy-1");
        assert_eq!(d.status, DeploymentStatus::Pending);
        assert_eq!(d.progress_percentage, 0);
        assert_eq!(d.strategy, Strategy::RegionalCanary);
        assert_eq!(d.canary_config.promotion_steps, vec![10, 50, 100]);
        assert_eq!(d.canary_config.monitor_duration, Span::from_mins(5));
        assert_eq!(d.test_duration, Span::from_mins(10));
        assert_eq!(d.region_delay, Span::from_mins(15));
        assert_eq!(d.monitor_duration, Span::from_mins(60));
        assert_eq!(d.deployment_time, "02:00");
        assert_eq!(d.rollback_config.breach_intervals, 2);
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["canaryConfig"]["monitorDuration"], "5m");
        assert_eq!(json["rollbackConfig"]["p99LatencyThresholdMs"], 200.0);
        assert_eq!(json["failureAction"], "rollback");
    }

    #[test]
    fn validation_names_each_bad_field() {
        let cases: Vec<(serde_json::Value, Vec<&str>)> = vec![
            (
                serde_json::json!({"configurationId": "c"}),
                vec!["targetRegions"],
            ),
            (
                serde_json::json!({"configurationId": "c", "targetLocations": ["a"],
                    "canaryConfig": {"promotionSteps": [10, 10, 100]}}),
                vec!["canaryConfig.promotionSteps"],
            ),
            (
                serde_json::json!({"configurationId": "c", "targetLocations": ["a"],
                    "canaryConfig": {"promotionSteps": [10, 50]}}),
                vec!["canaryConfig.promotionSteps"],
            ),
            (
                serde_json::json!({"configurationId": "c", "targetLocations": ["a"],
                    "canaryConfig": {"promotionSteps": [0, 100]}}),
                vec!["canaryConfig.promotionSteps"],
            ),
            (
                serde_json::json!({"configurationId": "c", "targetLocations": ["a"],
                    "canaryConfig": {"promotionSteps": [5, 100], "initialPercentage": 5}}),
                vec![],
            ),
            (
                serde_json::json!({"configurationId": "c", "targetLocations": ["a"],
                    "deploymentTime": "25:00", "days": ["Tue", "Caturday", "friday"]}),
                vec!["deploymentTime", "days[1]"],
            ),
            (
                serde_json::json!({"configurationId": "c", "targetLocations": ["a"],
                    "testDuration": "0s", "regionDelay": "2d", "monitorDuration": "PT30M"}),
                vec!["testDuration", "regionDelay"],
            ),
            (
                serde_json::json!({"configurationId": "c", "targetLocations": ["a", "a"],
                    "rollbackConfig": {"errorRateThreshold": 101.0, "breachIntervals": 0}}),
                vec![
                    "targetLocations[1]",
                    "rollbackConfig.errorRateThreshold",
                    "rollbackConfig.breachIntervals",
                ],
            ),
        ];
        for (body, expected) in cases {
            let req = request(body.clone());
            assert_eq!(fields(&req), expected, "{body}");
        }
    }

    #[test]
    fn invalid_request_does_not_build() {
        let req = CreateDeployment::default();
        match req.into_deployment(
            "d".into(),
            "1.0.0".into(),
            "a".into(),
            Timestamp(0),
            &RollbackConfig::default(),
        ) {
            Err(DeploymentError::Invalid(errors)) => assert!(errors.len() >= 2),
            Ok(_) => panic!("an empty request must not build"),
        }
    }

    /// A deployment with every optional part filled.
    fn populated() -> Deployment {
        let mut data = BTreeMap::new();
        data.insert("errorRate".to_string(), "0.4".to_string());
        let mut edges = BTreeMap::new();
        edges.insert(
            "us-east-1".to_string(),
            EdgeDeploymentState {
                state: EdgeState::Acked,
                previous_version: Some("1.1.0".into()),
                wave: 0,
                pushed_at: Some(Timestamp(10)),
                acked_at: Some(Timestamp(20)),
                apply_latency_ms: Some(10),
                error: Some("first try timed out".into()),
                attempts: 2,
                touched: true,
            },
        );
        edges.insert("eu-west-1".to_string(), EdgeDeploymentState::default());
        let snapshot = PerformanceSnapshot {
            timestamp: Timestamp(5),
            cache_hit_rate: 92.5,
            p99_latency_ms: 41.0,
            sample_count: 9000,
            ..PerformanceSnapshot::default()
        };
        Deployment {
            deployment_id: "deploy-1".into(),
            configuration_id: "config-1".into(),
            configuration_version: "1.2.0".into(),
            strategy: Strategy::GeographicWave,
            target_regions: vec!["Europe".into()],
            target_locations: vec!["us-east-1".into()],
            status: DeploymentStatus::Paused,
            canary_config: CanaryConfig {
                current_step: 1,
                ..CanaryConfig::default()
            },
            rollback_config: RollbackConfig::default(),
            test_duration: Span::from_mins(10),
            region_delay: Span::from_mins(15),
            require_approval: true,
            continue_on_failure: true,
            deployment_time: "03:30".into(),
            days: vec![Weekday::Tue, Weekday::Thu],
            monitor_duration: Span::from_mins(60),
            failure_action: FailureAction::Pause,
            acknowledge_warnings: true,
            deployed_by: "alice".into(),
            created_at: Timestamp(1),
            started_at: Some(Timestamp(2)),
            completed_at: Some(Timestamp(3)),
            duration_seconds: Some(1),
            progress_percentage: 50,
            current_step: 1,
            successful_locations: vec!["us-east-1".into()],
            failed_locations: vec!["ap-east-1".into()],
            skipped_locations: vec!["ap-south-1".into()],
            skipped: vec![SkippedLocation {
                location_id: "ap-south-1".into(),
                reason: "unhealthy".into(),
            }],
            errors: vec!["ap-east-1: connection refused".into()],
            pre_deployment_metrics: Some(snapshot.clone()),
            post_deployment_metrics: Some(snapshot),
            events: vec![DeploymentEvent {
                at: Timestamp(4),
                kind: EventKind::Verdict,
                actor: "system".into(),
                message: "pass".into(),
                location_id: Some("us-east-1".into()),
                version: Some("1.2.0".into()),
                data,
            }],
            metadata: BTreeMap::from([("ticket".to_string(), "CDN-1".to_string())]),
            edges,
            engine: EngineCursor {
                waves: vec![Wave {
                    index: 0,
                    name: "Europe".into(),
                    locations: vec!["eu-west-1".into()],
                    watch_ms: 60_000,
                    gate: true,
                    not_before: Some(Timestamp(100)),
                    utc_offset_minutes: 540,
                }],
                wave: 0,
                phase: Phase::Watching,
                phase_until: Some(Timestamp(200)),
                watch_started: Some(Timestamp(150)),
                last_analyze_at: Some(Timestamp(160)),
                extension_used: Span(5000),
                paused_from: Some(Phase::Watching),
                paused_status: Some(DeploymentStatus::Canary),
                frozen: true,
                paused_by_freeze: true,
                accepted_failures_wave: Some(0),
                phase_since: Some(Timestamp(140)),
                stuck_alerted: true,
                rollback_reason: Some("p99".into()),
                expected_finish: Some(Timestamp(999)),
            },
        }
    }

    #[test]
    fn populated_deployment_round_trips_through_postcard_and_json() {
        let d = populated();
        let bytes = postcard::to_stdvec(&d).unwrap();
        assert_eq!(postcard::from_bytes::<Deployment>(&bytes).unwrap(), d);
        let text = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Deployment>(&text).unwrap(), d);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["status"], "Paused");
        assert_eq!(json["edges"]["us-east-1"]["state"], "Acked");
        assert_eq!(json["engine"]["phase"], "Watching");
        assert_eq!(json["days"], serde_json::json!(["Tue", "Thu"]));
    }
}
