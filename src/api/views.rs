//! The typed answers of the API: every JSON body a handler sends is one of these (or a model
//! type), so the OpenAPI document is generated from exactly what goes on the wire.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::extract::PageRequest;
use crate::model::{
    CanaryConfig, Configuration, ConfigurationVersion, DeploymentEvent, DeploymentStatus,
    EdgeDeploymentState, EdgeLocation, EdgeState, FailureAction, PerformanceSnapshot, Role,
    RollbackConfig, SkippedLocation, Span, Strategy, Timestamp, Weekday,
};
use crate::monitor::aggregate::WindowStats;
use crate::rollout::{Plan, Progress};
use crate::store::{AuditRecord, Freeze};
use crate::validate::Finding;
use crate::validate::diff::{Change, Summary};

/// Defines a list answer, `{<plural>: [...], total, limit, offset, hasMore, nextOffset}`
/// (SPEC §5), whose array keeps the resource's plural name.
macro_rules! list_answer {
    ($(#[$meta:meta])* $name:ident, $field:ident, $item:ty) => {
        $(#[$meta])*
        #[derive(Debug, Serialize, ToSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            pub $field: Vec<$item>,
            /// Items matching the filters, over all pages.
            pub total: usize,
            #[schema(minimum = 1, maximum = 100)]
            pub limit: usize,
            pub offset: usize,
            pub has_more: bool,
            /// The offset of the next page, or null on the last one.
            pub next_offset: Option<usize>,
        }

        impl $name {
            /// The page `page` of `all`.
            pub fn page(all: Vec<$item>, page: PageRequest) -> Self {
                let total = all.len();
                let items = all.into_iter().skip(page.offset).take(page.limit).collect();
                Self::of(items, total, page)
            }

            /// Items already cut to the page, out of `total`.
            pub fn of(items: Vec<$item>, total: usize, page: PageRequest) -> Self {
                let end = page.offset + items.len();
                let has_more = end < total;
                Self {
                    $field: items,
                    total,
                    limit: page.limit,
                    offset: page.offset,
                    has_more,
                    next_offset: has_more.then_some(end),
                }
            }
        }
    };
}

list_answer!(
    /// A page of configurations, newest first.
    ConfigurationList,
    configurations,
    Configuration
);
list_answer!(
    /// A page of a configuration's versions, newest first, without their content unless asked.
    VersionList,
    versions,
    VersionSummary
);
list_answer!(
    /// A page of API users.
    UserList,
    users,
    UserView
);
list_answer!(
    /// A page of edge locations.
    EdgeLocationList,
    edge_locations,
    EdgeLocation
);
list_answer!(
    /// A page of deployments, newest first, without their timelines.
    DeploymentList,
    deployments,
    DeploymentView
);
list_answer!(
    /// A page of the audit log.
    AuditList,
    entries,
    AuditRecord
);

/// A version in the version list: its metadata, and its content only with
/// `?includeContent=true`. A list of large versions would otherwise be as large as all of them
/// together; the content of one version comes from `GET …/versions/{version}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionSummary {
    pub version_id: String,
    pub configuration_id: String,
    pub version: String,
    /// Only with `?includeContent=true` (secrets redacted, as everywhere).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub content: Option<Value>,
    pub schema_version: String,
    pub change_description: String,
    pub created_by: String,
    pub created_at: Timestamp,
    pub status: crate::model::ConfigStatus,
    pub approved_by: Option<String>,
    pub approved_at: Option<Timestamp>,
    pub approval_notes: Option<String>,
    pub is_deployed: bool,
    pub metadata: BTreeMap<String, String>,
    pub tags: Vec<String>,
}

impl VersionSummary {
    /// The summary of `version`, keeping its content when `include_content`.
    pub fn of(version: ConfigurationVersion, include_content: bool) -> Self {
        Self {
            version_id: version.version_id,
            configuration_id: version.configuration_id,
            version: version.version,
            content: include_content.then_some(version.content),
            schema_version: version.schema_version,
            change_description: version.change_description,
            created_by: version.created_by,
            created_at: version.created_at,
            status: version.status,
            approved_by: version.approved_by,
            approved_at: version.approved_at,
            approval_notes: version.approval_notes,
            is_deployed: version.is_deployed,
            metadata: version.metadata,
            tags: version.tags,
        }
    }
}

/// A user as the API shows it: never the hash.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub username: String,
    pub role: Role,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<crate::model::User> for UserView {
    fn from(user: crate::model::User) -> Self {
        Self {
            username: user.username,
            role: user.role,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

/// Who a login token speaks for.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginUser {
    pub username: String,
    pub role: Role,
}

/// The answer to a successful login (SPEC §4.2).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginAnswer {
    /// A JWT for `Authorization: Bearer`.
    pub token: String,
    pub expires_at: Timestamp,
    pub user: LoginUser,
}

/// The outcome of validating a configuration (saved or not).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValidationAnswer {
    pub is_valid: bool,
    /// Null when the body validated was not saved.
    pub configuration_id: Option<String>,
    pub validated_at: Timestamp,
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

/// The conflict layer of validation alone.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConflictsAnswer {
    pub configuration_id: String,
    pub has_conflicts: bool,
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

/// The changes between two versions of a configuration (secrets compared, never shown).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiffAnswer {
    pub configuration_id: String,
    pub from_version: String,
    pub to_version: String,
    pub changes: Vec<Change>,
    pub summary: Summary,
}

/// Where to find the JSON Schema of one configuration type.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchemaLink {
    #[serde(rename = "type")]
    pub config_type: crate::model::ConfigType,
    pub href: String,
}

/// The index of the configuration types' JSON Schemas.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchemaIndex {
    pub schemas: Vec<SchemaLink>,
}

/// An edge location as registered, with its agent token, shown this once.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedEdgeLocation {
    #[serde(flatten)]
    pub location: EdgeLocation,
    /// The bearer token the edge's agent uses; it is not shown again.
    pub agent_token: String,
}

/// A fresh agent token for an edge; the previous one stopped working.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentToken {
    pub location_id: String,
    pub agent_token: String,
}

/// A heartbeat was accepted for recording.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatAnswer {
    pub received_at: Timestamp,
}

/// A deployment was accepted; the engine drives it from here.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentAccepted {
    pub deployment_id: String,
    pub status: DeploymentStatus,
    #[schema(maximum = 100)]
    pub progress_percentage: u8,
}

/// What a deployment would do, from `?dryRun=true`: nothing is pushed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryRunAnswer {
    pub dry_run: bool,
    pub configuration_id: String,
    pub configuration_version: String,
    pub strategy: Strategy,
    pub plan: Plan,
}

/// A deployment as the API shows it: the record without the engine's cursor, plus progress.
/// Lists leave out `events` and `edges`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentView {
    pub deployment_id: String,
    pub configuration_id: String,
    pub configuration_version: String,
    pub strategy: Strategy,
    pub target_regions: Vec<String>,
    pub target_locations: Vec<String>,
    pub status: DeploymentStatus,
    pub canary_config: CanaryConfig,
    pub rollback_config: RollbackConfig,
    pub test_duration: Span,
    pub region_delay: Span,
    pub require_approval: bool,
    pub continue_on_failure: bool,
    pub deployment_time: String,
    pub days: Vec<Weekday>,
    pub monitor_duration: Span,
    pub failure_action: FailureAction,
    pub acknowledge_warnings: bool,
    pub deployed_by: String,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub duration_seconds: Option<u64>,
    #[schema(maximum = 100)]
    pub progress_percentage: u8,
    pub current_step: u32,
    pub successful_locations: Vec<String>,
    pub failed_locations: Vec<String>,
    pub skipped_locations: Vec<String>,
    pub skipped: Vec<SkippedLocation>,
    pub errors: Vec<String>,
    pub pre_deployment_metrics: Option<PerformanceSnapshot>,
    pub post_deployment_metrics: Option<PerformanceSnapshot>,
    pub metadata: BTreeMap<String, String>,
    /// The timeline; in the answer for one deployment only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub events: Option<Vec<DeploymentEvent>>,
    /// Per-edge state by locationId; in the answer for one deployment only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub edges: Option<BTreeMap<String, EdgeDeploymentState>>,
    pub progress: Progress,
}

impl DeploymentView {
    /// The view of `deployment`; `full` includes the timeline and the per-edge states.
    pub fn new(deployment: &crate::model::Deployment, full: bool) -> Self {
        let d = deployment.clone();
        Self {
            progress: crate::rollout::progress(deployment),
            deployment_id: d.deployment_id,
            configuration_id: d.configuration_id,
            configuration_version: d.configuration_version,
            strategy: d.strategy,
            target_regions: d.target_regions,
            target_locations: d.target_locations,
            status: d.status,
            canary_config: d.canary_config,
            rollback_config: d.rollback_config,
            test_duration: d.test_duration,
            region_delay: d.region_delay,
            require_approval: d.require_approval,
            continue_on_failure: d.continue_on_failure,
            deployment_time: d.deployment_time,
            days: d.days,
            monitor_duration: d.monitor_duration,
            failure_action: d.failure_action,
            acknowledge_warnings: d.acknowledge_warnings,
            deployed_by: d.deployed_by,
            created_at: d.created_at,
            started_at: d.started_at,
            completed_at: d.completed_at,
            duration_seconds: d.duration_seconds,
            progress_percentage: d.progress_percentage,
            current_step: d.current_step,
            successful_locations: d.successful_locations,
            failed_locations: d.failed_locations,
            skipped_locations: d.skipped_locations,
            skipped: d.skipped,
            errors: d.errors,
            pre_deployment_metrics: d.pre_deployment_metrics,
            post_deployment_metrics: d.post_deployment_metrics,
            metadata: d.metadata,
            events: full.then_some(d.events),
            edges: full.then_some(d.edges),
        }
    }
}

/// One targeted edge of a deployment and where it stands.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgeProgress {
    pub location_id: String,
    #[serde(flatten)]
    pub state: EdgeDeploymentState,
}

/// An edge the deployment left out, and why.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SkippedEdge {
    pub location_id: String,
    /// Always `Skipped`.
    pub state: EdgeState,
    /// Why it was left out.
    pub error: String,
}

/// One row of a deployment's per-edge answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EdgeRow {
    Targeted(EdgeProgress),
    Skipped(SkippedEdge),
}

/// Per-edge state of a deployment.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentEdges {
    pub deployment_id: String,
    pub status: DeploymentStatus,
    /// Rows in all (targeted and skipped), whatever the page.
    pub total: usize,
    pub edge_locations: Vec<EdgeRow>,
}

/// The global freeze of rollouts; the details are there only while frozen.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FreezeView {
    pub frozen: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub frozen_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub frozen_at: Option<Timestamp>,
}

impl From<Option<Freeze>> for FreezeView {
    fn from(freeze: Option<Freeze>) -> Self {
        match freeze {
            Some(freeze) => Self {
                frozen: true,
                reason: Some(freeze.reason),
                frozen_by: Some(freeze.frozen_by),
                frozen_at: Some(freeze.frozen_at),
            },
            None => Self {
                frozen: false,
                reason: None,
                frozen_by: None,
                frozen_at: None,
            },
        }
    }
}

/// Metrics of one edge over a window (SPEC §8.2).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgeMetrics {
    pub location_id: String,
    pub from: Timestamp,
    pub to: Timestamp,
    #[serde(flatten)]
    pub stats: WindowStats,
}

/// One location's share of an aggregate.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocationMetrics {
    pub location_id: String,
    #[serde(flatten)]
    pub stats: WindowStats,
}

/// Metrics of the edges running a configuration: the aggregate and per location.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationMetrics {
    pub configuration_id: String,
    pub from: Timestamp,
    pub to: Timestamp,
    pub locations: Vec<LocationMetrics>,
    #[serde(flatten)]
    pub stats: WindowStats,
}

/// Metrics of a region: the aggregate and per location.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionMetrics {
    pub region: String,
    pub from: Timestamp,
    pub to: Timestamp,
    pub locations: Vec<LocationMetrics>,
    #[serde(flatten)]
    pub stats: WindowStats,
}

/// One side of a canary analysis: which edges, and their merged figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupMetrics {
    pub locations: Vec<String>,
    /// `null` when the group has no edges (the last step of a canary has no baseline).
    pub metrics: Option<WindowStats>,
    /// Why `metrics` is missing, e.g. "no baseline: thresholds only".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One analysis verdict of a deployment with the numbers behind it.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerdictEntry {
    pub at: Timestamp,
    pub message: String,
    /// The verdict as the monitor recorded it: outcome, values per group, thresholds,
    /// test statistic.
    #[schema(value_type = Object)]
    pub verdict: Value,
}

/// Canary against baseline for a deployment, with every analysis verdict.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentMetrics {
    pub deployment_id: String,
    pub status: DeploymentStatus,
    pub from: Timestamp,
    pub to: Timestamp,
    pub canary: GroupMetrics,
    pub baseline: GroupMetrics,
    pub pre_deployment_metrics: Option<PerformanceSnapshot>,
    pub post_deployment_metrics: Option<PerformanceSnapshot>,
    pub rollback_config: RollbackConfig,
    pub verdicts: Vec<VerdictEntry>,
}

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
    pub version: String,
}

/// Readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// Always `ready`.
    pub status: String,
}

/// The `data` of one deployment stream event: the timeline entry with the deployment's status
/// after it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentEventMessage<'a> {
    #[serde(flatten)]
    pub event: &'a DeploymentEvent,
    pub status: DeploymentStatus,
}

/// One Server-Sent Event of GET /deployments/{id}/events.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentStreamEvent {
    /// The index of the timeline entry; absent on `lagged`.
    pub id: Option<String>,
    /// The entry's kind, or `lagged` when the reader fell behind and the stream ends.
    pub event: String,
    /// JSON: a DeploymentEventMessage, or `{"lagged":true}`.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}
