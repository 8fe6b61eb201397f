//! The edge protocol's JSON shapes (SPEC §6): what the control plane pushes, what an edge
//! answers, and what an edge reports in its heartbeats.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{ConfigType, EdgeHealth, MetricsSample, Timestamp};

/// What a push asks the edge to do with the version it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushMode {
    /// Write the version and make it active.
    Apply,
    /// Write the version beside the active one without activating it.
    Stage,
    /// Make the staged version (named by `version`) active; `content` may be null.
    Activate,
}

/// Body of `PUT {endpoint}/edge/v1/configurations/{configurationId}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushRequest {
    pub version: String,
    #[serde(rename = "type")]
    pub config_type: ConfigType,
    #[serde(default)]
    pub content: Value,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Hex sha256 of the canonical content. For `activate` it may be empty; when given it
    /// must match the staged version's checksum.
    #[serde(default)]
    pub checksum: String,
    pub mode: PushMode,
}

impl PushRequest {
    /// An `apply` push of `content`, with its checksum computed here.
    pub fn apply(
        version: impl Into<String>,
        config_type: ConfigType,
        content: Value,
        metadata: BTreeMap<String, String>,
    ) -> Self {
        let checksum = crate::protocol::checksum(&content);
        Self {
            version: version.into(),
            config_type,
            content,
            metadata,
            checksum,
            mode: PushMode::Apply,
        }
    }
}

/// An edge's answer to a push or a rollback: 200 acked, 422 nacked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum PushReply {
    Acked { version: String },
    Nacked { reason: String },
}

/// Optional body of `POST .../configurations/{configurationId}/rollback`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRequest {
    /// The version to go back to; without it, the one active before the current one.
    #[serde(default)]
    pub to_version: Option<String>,
    /// With no `toVersion` and no earlier version in the edge's history, leave nothing of
    /// this configuration active (the edge never ran it before) instead of refusing. The
    /// control plane sets it; the agent's own rollback command does not.
    #[serde(default)]
    pub deactivate_if_none: bool,
}

/// Body of `GET {endpoint}/edge/v1/active-configurations`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveConfigurations {
    pub location_id: String,
    pub configurations: Vec<ActiveConfiguration>,
}

/// One configuration an edge runs. A configuration that is only staged (never active) is
/// not listed, so `version` is always a real version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveConfiguration {
    pub configuration_id: String,
    pub version: String,
    #[serde(rename = "type")]
    pub config_type: ConfigType,
    pub checksum: String,
    pub activated_at: Timestamp,
    pub staged_version: Option<String>,
}

impl ActiveConfigurations {
    /// configurationId → active version, the shape heartbeats and reconciliation use.
    pub fn versions(&self) -> BTreeMap<String, String> {
        self.configurations
            .iter()
            .map(|c| (c.configuration_id.clone(), c.version.clone()))
            .collect()
    }
}

/// Body of `POST {endpoint}/edge/v1/leader`: a node that became primary names its term and
/// the URL edges heartbeat from now on; the edge answers with the same shape, naming the
/// highest term it has seen and the URL it now reports to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaderAnnouncement {
    pub term: u64,
    pub url: String,
}

/// Body of `POST /api/v1/edge-locations/{id}/heartbeat`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub health: EdgeHealth,
    pub active_configurations: BTreeMap<String, String>,
    pub metrics: Option<MetricsSample>,
    pub started_at: Timestamp,
    pub sent_at: Timestamp,
}

/// Body of `POST /api/v1/edge-locations` (and, without `locationId`, of the `PUT`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeRegistration {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub location_id: Option<String>,
    pub name: String,
    pub region: String,
    pub country_code: String,
    pub city: String,
    #[serde(rename = "type")]
    pub edge_type: String,
    pub endpoint: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub metadata: BTreeMap<String, String>,
}

/// Whether `id` is safe to use as one path component on the edge's disk.
pub(crate) fn is_safe_name(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replies_are_tagged_by_status() {
        let acked = serde_json::to_value(PushReply::Acked {
            version: "1.0.0".into(),
        })
        .unwrap();
        assert_eq!(acked, json!({"status": "acked", "version": "1.0.0"}));
        let nacked: PushReply =
            serde_json::from_value(json!({"status": "nacked", "reason": "bad"})).unwrap();
        assert_eq!(
            nacked,
            PushReply::Nacked {
                reason: "bad".into()
            }
        );
    }

    #[test]
    fn unsafe_names_are_refused() {
        assert!(is_safe_name("config-1b4e28ba-2fa1-11d2-883f-0016d3cca427"));
        assert!(is_safe_name("1.2.0"));
        assert!(!is_safe_name(".."));
        assert!(!is_safe_name("a/b"));
        assert!(!is_safe_name(""));
    }
}
