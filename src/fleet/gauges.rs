//! Prometheus gauges of the fleet: edges known and healthy, by region.

use std::collections::BTreeMap;

use crate::model::Timestamp;
use crate::store::{Store, StoreError};

/// Counts (total, healthy) per region as of `now`.
pub fn count_by_region(
    store: &Store,
    now: Timestamp,
    healthy_within_ms: i64,
) -> Result<BTreeMap<String, (u64, u64)>, StoreError> {
    let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for record in store.reader()?.edges()? {
        let entry = counts.entry(record.location.region.clone()).or_default();
        entry.0 += 1;
        if record.location.is_healthy_at(now, healthy_within_ms) {
            entry.1 += 1;
        }
    }
    Ok(counts)
}

/// Sets `edgeplane_edges_total{region}` and `edgeplane_edges_healthy{region}`.
pub async fn publish(store: Store, healthy_within_ms: i64) {
    let counted = tokio::task::spawn_blocking(move || {
        count_by_region(&store, Timestamp::now(), healthy_within_ms)
    })
    .await;
    match counted {
        Ok(Ok(counts)) => {
            for (region, (total, healthy)) in counts {
                metrics::gauge!("edgeplane_edges_total", "region" => region.clone())
                    .set(total as f64);
                metrics::gauge!("edgeplane_edges_healthy", "region" => region).set(healthy as f64);
            }
        }
        Ok(Err(error)) => tracing::warn!(%error, "cannot count edges for the fleet gauges"),
        Err(error) => tracing::warn!(%error, "fleet gauge task failed"),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::{Capacity, EdgeHealth, EdgeLocation, EdgeType};
    use crate::store::{Command, CommandEnvelope, EdgeRecord, HeartbeatRecord};

    /// An active edge in `region` that has never heartbeated.
    pub(in crate::fleet) fn edge(id: &str, region: &str) -> EdgeRecord {
        EdgeRecord {
            location: EdgeLocation {
                location_id: id.into(),
                name: id.into(),
                region: region.into(),
                country_code: "US".into(),
                city: String::new(),
                edge_type: EdgeType::EdgePop,
                endpoint: "http://127.0.0.1:1".into(),
                capacity: Capacity::default(),
                health: EdgeHealth::default(),
                metrics: None,
                last_heartbeat: None,
                started_at: None,
                is_active: true,
                active_configurations: Default::default(),
                metadata: Default::default(),
                is_quarantined: false,
            },
            token_id: "t".into(),
            token_sealed: "s".into(),
        }
    }

    #[test]
    fn counts_edges_and_healthy_edges_per_region() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for (id, region) in [("a", "Europe"), ("b", "Europe"), ("c", "Asia Pacific")] {
            store
                .apply_blocking(CommandEnvelope::new(
                    "t",
                    "",
                    Command::CreateEdge {
                        record: edge(id, region),
                    },
                ))
                .unwrap();
        }
        let now = Timestamp::now();
        store
            .apply_blocking(CommandEnvelope::new(
                "t",
                "",
                Command::RecordHeartbeats {
                    beats: vec![HeartbeatRecord {
                        location_id: "a".into(),
                        received_at: now,
                        health: EdgeHealth::default(),
                        active_configurations: Default::default(),
                        metrics: None,
                        started_at: None,
                    }],
                },
            ))
            .unwrap();
        let counts = count_by_region(&store, now, 120_000).unwrap();
        assert_eq!(counts["Europe"], (2, 1));
        assert_eq!(counts["Asia Pacific"], (1, 0));
        let later = count_by_region(&store, now.plus_millis(121_000), 120_000).unwrap();
        assert_eq!(
            later["Europe"],
            (2, 0),
            "a heartbeat older than the limit is unhealthy"
        );
    }
}
