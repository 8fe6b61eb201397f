//! The commands that change the store, and the records written beside each one.
//!
//! A command carries every value its effect needs (ids, times, hashes, sealed secrets), so
//! applying the same log in the same order gives the same store on any node. Preconditions
//! (a taken name, an identical path pattern with other content, a lost update, a freeze, the
//! deployment limits) are checked inside the write transaction that applies it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::deployments::DeploymentChanges;
use crate::model::{
    BreachState, Bump, Configuration, ConfigurationVersion, Deployment, EdgeHealth, EdgeLocation,
    MetricsSample, RollbackConfig, Timestamp, User,
};

/// An edge location with the secrets kept beside it (never shown by the API).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdgeRecord {
    pub location: EdgeLocation,
    /// `jti` of the one agent token that is valid for this edge.
    pub token_id: String,
    /// The agent token itself, sealed with the store's secret key: pushes carry it.
    pub token_sealed: String,
}

/// One heartbeat as it is stored (SPEC §6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatRecord {
    pub location_id: String,
    pub received_at: Timestamp,
    pub health: EdgeHealth,
    pub active_configurations: BTreeMap<String, String>,
    pub metrics: Option<MetricsSample>,
    pub started_at: Option<Timestamp>,
}

/// Fields an Admin may change on an edge location.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdgeChanges {
    pub name: String,
    pub region: String,
    pub country_code: String,
    pub city: String,
    pub edge_type: crate::model::EdgeType,
    pub endpoint: String,
    pub capacity: crate::model::Capacity,
    pub is_active: bool,
    pub metadata: BTreeMap<String, String>,
}

/// Every change the store knows how to make.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// First start: the secrets every node of the cluster shares.
    InitCluster {
        jwt_secret: String,
    },
    CreateUser {
        user: User,
    },
    SetPassword {
        username: String,
        password_hash: String,
        at: Timestamp,
    },
    DeleteUser {
        username: String,
    },
    CreateConfiguration {
        configuration: Configuration,
        version: ConfigurationVersion,
    },
    UpdateConfiguration {
        configuration_id: String,
        /// `If-Match`: the version the caller based its change on.
        expected_version: Option<String>,
        bump: Bump,
        version_id: String,
        #[serde(with = "crate::model::json")]
        content: Value,
        change_description: String,
        description: Option<String>,
        metadata: BTreeMap<String, String>,
        actor: String,
        at: Timestamp,
    },
    DeleteConfiguration {
        configuration_id: String,
    },
    ApproveVersion {
        configuration_id: String,
        version: Option<String>,
        approver: String,
        notes: Option<String>,
        allow_self_approval: bool,
        at: Timestamp,
    },
    TagVersion {
        configuration_id: String,
        version: String,
        tag: String,
    },
    CreateEdge {
        record: EdgeRecord,
    },
    UpdateEdge {
        location_id: String,
        changes: EdgeChanges,
    },
    RotateEdgeToken {
        location_id: String,
        token_id: String,
        token_sealed: String,
    },
    SetEdgeQuarantine {
        location_id: String,
        quarantined: bool,
    },
    DeleteEdge {
        location_id: String,
    },
    RecordHeartbeats {
        beats: Vec<HeartbeatRecord>,
    },
    /// A deployment's new state, with what its edges acknowledged since the last save: each
    /// `(location, version)` is the configuration version now active there (`None`: none).
    SaveDeployment {
        deployment: Box<Deployment>,
        edge_versions: Vec<(String, Option<String>)>,
    },
    SetFreeze {
        freeze: Option<Freeze>,
    },
    /// The server-wide default RollbackConfig (`PUT /metrics/thresholds`).
    SetThresholds {
        thresholds: RollbackConfig,
    },
    /// An edge NACKed a version once more; the NACK that reaches `quarantine_after`
    /// quarantines it (SPEC §7 common rules).
    RecordNack {
        location_id: String,
        configuration_id: String,
        version: String,
        quarantine_after: u32,
    },
    /// The pending breach counters of a deployment's analysis (SPEC §8.3).
    SaveBreaches {
        deployment_id: String,
        breaches: BreachState,
    },
    /// A new deployment (status Pending), admitted only while no freeze is in effect, no other
    /// deployment of its configuration runs and fewer than `max_concurrent` deployments run.
    CreateDeployment {
        deployment: Box<Deployment>,
        max_concurrent: u64,
    },
    /// What one turn of the engine changed in a running deployment (its header, the edges
    /// that changed, the events appended), with the edge versions its acks made active, as in
    /// `SaveDeployment`.
    SaveDeploymentChanges {
        changes: DeploymentChanges,
        edge_versions: Vec<(String, Option<String>)>,
    },
    /// A node became primary: the log goes on at `term` from this entry (SPEC §9 promote).
    /// Entries of a lower term after it on another node were never the cluster's.
    NewTerm {
        term: u64,
        node_id: String,
        url: String,
    },
}

/// A global stop of rollouts (SPEC §7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Freeze {
    pub reason: String,
    pub frozen_by: String,
    pub frozen_at: Timestamp,
}

impl Command {
    /// What the audit log says about this command; `None` for telemetry that is not a
    /// change made by a person (heartbeats).
    pub fn audit_target(&self) -> Option<(&'static str, &'static str, String)> {
        use Command::*;
        Some(match self {
            InitCluster { .. } => ("init", "cluster", "cluster".into()),
            CreateUser { user } => ("create", "user", user.username.clone()),
            SetPassword { username, .. } => ("set-password", "user", username.clone()),
            DeleteUser { username } => ("delete", "user", username.clone()),
            CreateConfiguration { configuration, .. } => (
                "create",
                "configuration",
                configuration.configuration_id.clone(),
            ),
            UpdateConfiguration {
                configuration_id, ..
            } => ("update", "configuration", configuration_id.clone()),
            DeleteConfiguration { configuration_id } => {
                ("delete", "configuration", configuration_id.clone())
            }
            ApproveVersion {
                configuration_id, ..
            } => ("approve", "configuration", configuration_id.clone()),
            TagVersion {
                configuration_id, ..
            } => ("tag", "configuration", configuration_id.clone()),
            CreateEdge { record } => (
                "create",
                "edge-location",
                record.location.location_id.clone(),
            ),
            UpdateEdge { location_id, .. } => ("update", "edge-location", location_id.clone()),
            RotateEdgeToken { location_id, .. } => {
                ("rotate-token", "edge-location", location_id.clone())
            }
            SetEdgeQuarantine { location_id, .. } => {
                ("quarantine", "edge-location", location_id.clone())
            }
            DeleteEdge { location_id } => ("delete", "edge-location", location_id.clone()),
            RecordHeartbeats { .. } | SaveBreaches { .. } => return None,
            RecordNack { location_id, .. } => ("nack", "edge-location", location_id.clone()),
            // Deployment progress is on the deployment's own timeline; its creation and every
            // operator action are audited.
            SaveDeployment { deployment, .. } => {
                if deployment.events.len() > 1 && !deployment.status.is_terminal() {
                    return None;
                }
                ("deployment", "deployment", deployment.deployment_id.clone())
            }
            SaveDeploymentChanges { changes, .. } => {
                let n_events = changes.first_event + changes.events.len() as u64;
                if n_events > 1 && !changes.header.status.is_terminal() {
                    return None;
                }
                (
                    "deployment",
                    "deployment",
                    changes.header.deployment_id.clone(),
                )
            }
            SetThresholds { .. } => ("set-thresholds", "thresholds", "thresholds".into()),
            NewTerm { node_id, .. } => ("promote", "cluster", node_id.clone()),
            CreateDeployment { deployment, .. } => {
                ("create", "deployment", deployment.deployment_id.clone())
            }
            SetFreeze { freeze } => (
                if freeze.is_some() {
                    "freeze"
                } else {
                    "unfreeze"
                },
                "fleet",
                "freeze".into(),
            ),
        })
    }

    /// A one-line description for the audit record; never contains secrets.
    pub fn audit_summary(&self) -> String {
        use Command::*;
        match self {
            CreateUser { user } => format!("role {}", user.role),
            CreateConfiguration { configuration, .. } => format!(
                "{} '{}' version {}",
                configuration.config_type, configuration.name, configuration.version
            ),
            UpdateConfiguration {
                bump,
                change_description,
                ..
            } => format!("{bump:?} bump: {change_description}"),
            ApproveVersion { version, notes, .. } => format!(
                "version {}{}",
                version.as_deref().unwrap_or("latest"),
                notes
                    .as_deref()
                    .map(|n| format!(": {n}"))
                    .unwrap_or_default()
            ),
            TagVersion { version, tag, .. } => format!("tag '{tag}' -> {version}"),
            NewTerm { term, url, .. } => format!("primary at term {term} ({url})"),
            CreateEdge { record } => format!(
                "{} ({}) at {}",
                record.location.name, record.location.region, record.location.endpoint
            ),
            UpdateEdge { changes, .. } => format!("endpoint {}", changes.endpoint),
            SetEdgeQuarantine { quarantined, .. } => format!("quarantined = {quarantined}"),
            RecordNack {
                configuration_id,
                version,
                ..
            } => format!("NACKed {configuration_id} version {version}"),
            SaveDeployment { deployment, .. } | CreateDeployment { deployment, .. } => format!(
                "{:?} of {} version {}: {:?}",
                deployment.strategy,
                deployment.configuration_id,
                deployment.configuration_version,
                deployment.status
            ),
            SaveDeploymentChanges { changes, .. } => format!(
                "{:?} of {} version {}: {:?}",
                changes.header.strategy,
                changes.header.configuration_id,
                changes.header.configuration_version,
                changes.header.status
            ),
            SetFreeze { freeze } => freeze
                .as_ref()
                .map(|f| f.reason.clone())
                .unwrap_or_default(),
            _ => String::new(),
        }
    }
}

/// A command with who asked for it, when, and under which request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandEnvelope {
    pub actor: String,
    pub trace_id: String,
    pub at: Timestamp,
    pub command: Command,
}

impl CommandEnvelope {
    pub fn new(actor: impl Into<String>, trace_id: impl Into<String>, command: Command) -> Self {
        Self {
            actor: actor.into(),
            trace_id: trace_id.into(),
            at: Timestamp::now(),
            command,
        }
    }
}

/// One entry of the numbered command log that a standby replays (SPEC §9).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub term: u64,
    pub index: u64,
    pub envelope: CommandEnvelope,
}

/// One append-only audit record (GET /api/v1/audit).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub index: u64,
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    pub summary: String,
    pub trace_id: String,
    pub log_index: u64,
}

/// What applying a command produced, for the caller to answer with.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    Nothing,
    User(User),
    Configuration(Box<Configuration>, Box<ConfigurationVersion>),
    Version(Box<ConfigurationVersion>),
    Edge(Box<EdgeRecord>),
    Deployment(Box<Deployment>),
    /// NACKs counted so far, and whether this one quarantined the edge.
    Nack {
        count: u32,
        quarantined: bool,
    },
}
