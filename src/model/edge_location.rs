//! Edge locations (POPs) and what they report about themselves (SPEC §2.3).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{MetricsSample, Timestamp};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
pub enum EdgeType {
    #[default]
    #[serde(rename = "EdgePOP")]
    EdgePop,
    Shield,
    Origin,
}

impl EdgeType {
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeType::EdgePop => "EdgePOP",
            EdgeType::Shield => "Shield",
            EdgeType::Origin => "Origin",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Capacity {
    pub max_requests_per_sec: u64,
    pub max_bandwidth_mbps: u64,
    pub max_connections: u64,
    pub cache_storage_gb: u64,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            max_requests_per_sec: 100_000,
            max_bandwidth_mbps: 10_000,
            max_connections: 100_000,
            cache_storage_gb: 1_000,
        }
    }
}

/// The edge's own account of its health, as sent in its last heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct EdgeHealth {
    pub is_healthy: bool,
    pub cpu_usage: f64,
    pub memory_usage: f64,
    pub disk_usage: f64,
    pub bandwidth_utilization: f64,
    pub active_connections: u64,
}

impl Default for EdgeHealth {
    fn default() -> Self {
        Self {
            is_healthy: true,
            cpu_usage: 0.0,
            memory_usage: 0.0,
            disk_usage: 0.0,
            bandwidth_utilization: 0.0,
            active_connections: 0,
        }
    }
}

/// An edge location as the API shows it. Secrets (its agent token) live beside it in the
/// store, never in this type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgeLocation {
    pub location_id: String,
    pub name: String,
    pub region: String,
    pub country_code: String,
    pub city: String,
    #[serde(rename = "type")]
    pub edge_type: EdgeType,
    pub endpoint: String,
    pub capacity: Capacity,
    pub health: EdgeHealth,
    pub metrics: Option<MetricsSample>,
    pub last_heartbeat: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub is_active: bool,
    /// configurationId → version the edge reports running.
    pub active_configurations: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    /// Left out of deployments after repeated NACKs until an Admin clears it (SPEC §7).
    pub is_quarantined: bool,
}

impl EdgeLocation {
    /// Healthy: heartbeat younger than `healthy_within_ms` and the edge's own report says so.
    pub fn is_healthy_at(&self, now: Timestamp, healthy_within_ms: i64) -> bool {
        match self.last_heartbeat {
            Some(seen) => now.millis_since(seen) < healthy_within_ms && self.health.is_healthy,
            None => false,
        }
    }

    /// Eligible for a new deployment wave.
    pub fn is_deployable_at(&self, now: Timestamp, healthy_within_ms: i64) -> bool {
        self.is_active && !self.is_quarantined && self.is_healthy_at(now, healthy_within_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(last: Option<i64>, healthy: bool) -> EdgeLocation {
        EdgeLocation {
            location_id: "us-east-1".into(),
            name: "Virginia".into(),
            region: "North America".into(),
            country_code: "US".into(),
            city: "Ashburn".into(),
            edge_type: EdgeType::EdgePop,
            endpoint: "http://127.0.0.1:9000".into(),
            capacity: Capacity::default(),
            health: EdgeHealth {
                is_healthy: healthy,
                ..EdgeHealth::default()
            },
            metrics: None,
            last_heartbeat: last.map(Timestamp),
            started_at: None,
            is_active: true,
            active_configurations: BTreeMap::new(),
            metadata: BTreeMap::new(),
            is_quarantined: false,
        }
    }

    #[test]
    fn health_needs_a_recent_heartbeat_and_a_healthy_report() {
        let now = Timestamp(1_000_000);
        assert!(edge(Some(1_000_000 - 119_000), true).is_healthy_at(now, 120_000));
        assert!(!edge(Some(1_000_000 - 121_000), true).is_healthy_at(now, 120_000));
        assert!(!edge(Some(1_000_000), false).is_healthy_at(now, 120_000));
        assert!(!edge(None, true).is_healthy_at(now, 120_000));
    }
}
