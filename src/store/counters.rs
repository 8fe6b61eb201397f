//! Counters the engines keep across restarts: NACKs per edge and version, which quarantine an
//! edge (SPEC §7 common rules), and the pending breaches of each deployment's analysis (SPEC
//! §8.3 breach persistence). Written only through their commands, read through [`Reader`].

use redb::{ReadableTable, TableDefinition, TableError, WriteTransaction};

use super::command::{Applied, EdgeRecord};
use super::{EDGES, Reader, StoreError, codec};
use crate::model::BreachState;

/// (location, configuration, version) → NACKs of that version by that edge.
pub(crate) const NACKS: TableDefinition<(&str, &str, &str), u32> =
    TableDefinition::new("nack_counts");
/// Deployment id → its analysis' pending breach counters, when any is above zero.
pub(crate) const BREACHES: TableDefinition<&str, &[u8]> = TableDefinition::new("pending_breaches");

/// Counts one more NACK; the NACK that reaches `quarantine_after` quarantines the edge in the
/// same transaction.
pub(crate) fn record_nack(
    txn: &WriteTransaction,
    location_id: &str,
    configuration_id: &str,
    version: &str,
    quarantine_after: u32,
) -> Result<Applied, StoreError> {
    let mut edges = txn.open_table(EDGES)?;
    let mut record: EdgeRecord = edges
        .get(location_id)?
        .map(|v| codec::decode(v.value()))
        .transpose()?
        .ok_or_else(|| StoreError::NotFound(format!("edge location '{location_id}'")))?;
    let mut nacks = txn.open_table(NACKS)?;
    let key = (location_id, configuration_id, version);
    let count = nacks
        .get(key)?
        .map(|v| v.value())
        .unwrap_or(0)
        .saturating_add(1);
    nacks.insert(key, count)?;
    let quarantined = count >= quarantine_after.max(1) && !record.location.is_quarantined;
    if quarantined {
        record.location.is_quarantined = true;
        edges.insert(location_id, codec::encode(&record)?.as_slice())?;
    }
    Ok(Applied::Nack { count, quarantined })
}

/// Forgets every NACK of an edge: its quarantine was cleared, or the edge is gone.
pub(crate) fn forget_nacks(txn: &WriteTransaction, location_id: &str) -> Result<(), StoreError> {
    let mut nacks = txn.open_table(NACKS)?;
    let keys: Vec<(String, String, String)> = nacks
        .range((location_id, "", "")..)?
        .map(|entry| {
            entry.map(|(key, _)| {
                let (location, configuration, version) = key.value();
                (
                    location.to_string(),
                    configuration.to_string(),
                    version.to_string(),
                )
            })
        })
        .take_while(|key| key.as_ref().map_or(true, |k| k.0 == location_id))
        .collect::<Result<_, _>>()?;
    for (location, configuration, version) in &keys {
        nacks.remove((location.as_str(), configuration.as_str(), version.as_str()))?;
    }
    Ok(())
}

/// Keeps a deployment's pending breach counters; all-zero counters are forgotten.
pub(crate) fn save_breaches(
    txn: &WriteTransaction,
    deployment_id: &str,
    breaches: &BreachState,
) -> Result<Applied, StoreError> {
    let mut table = txn.open_table(BREACHES)?;
    if *breaches == BreachState::default() {
        table.remove(deployment_id)?;
    } else {
        table.insert(deployment_id, codec::encode(breaches)?.as_slice())?;
    }
    Ok(Applied::Nothing)
}

impl Reader {
    /// NACKs of `version` of a configuration by one edge.
    pub fn nack_count(
        &self,
        location_id: &str,
        configuration_id: &str,
        version: &str,
    ) -> Result<u32, StoreError> {
        let table = match self.txn.open_table(NACKS) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(error) => return Err(error.into()),
        };
        Ok(table
            .get((location_id, configuration_id, version))?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// The pending breach counters of a deployment's analysis (zero when none is pending).
    pub fn breaches(&self, deployment_id: &str) -> Result<BreachState, StoreError> {
        let table = match self.txn.open_table(BREACHES) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(BreachState::default()),
            Err(error) => return Err(error.into()),
        };
        match table.get(deployment_id)? {
            Some(value) => codec::decode(value.value()),
            None => Ok(BreachState::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Command, CommandEnvelope, Store};
    use super::*;
    use crate::model::{Capacity, EdgeHealth, EdgeLocation, EdgeType};

    fn edge(location_id: &str) -> Command {
        Command::CreateEdge {
            record: EdgeRecord {
                location: EdgeLocation {
                    location_id: location_id.into(),
                    name: location_id.into(),
                    region: "Europe".into(),
                    country_code: "DE".into(),
                    city: "Frankfurt".into(),
                    edge_type: EdgeType::default(),
                    endpoint: "http://127.0.0.1:9/".into(),
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
                token_id: "jti".into(),
                token_sealed: "sealed".into(),
            },
        }
    }

    fn apply(store: &Store, command: Command) -> Applied {
        store
            .apply_blocking(CommandEnvelope::new("system", "", command))
            .expect("applies")
    }

    fn nack(store: &Store, location_id: &str, version: &str) -> Applied {
        apply(
            store,
            Command::RecordNack {
                location_id: location_id.into(),
                configuration_id: "config-1".into(),
                version: version.into(),
                quarantine_after: 3,
            },
        )
    }

    fn quarantined(store: &Store, location_id: &str) -> bool {
        let reader = store.reader().expect("reader");
        let record = reader.edge(location_id).expect("read").expect("edge");
        record.location.is_quarantined
    }

    #[test]
    fn nacks_survive_a_reopen_and_the_third_quarantines() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let store = Store::open(dir.path()).expect("store");
            apply(&store, edge("eu-west-1"));
            assert_eq!(
                nack(&store, "eu-west-1", "1.0.0"),
                Applied::Nack {
                    count: 1,
                    quarantined: false
                }
            );
            nack(&store, "eu-west-1", "1.0.0");
            // Another version has a count of its own.
            nack(&store, "eu-west-1", "1.1.0");
            assert!(!quarantined(&store, "eu-west-1"));
        }
        let store = Store::open(dir.path()).expect("reopened");
        let reader = store.reader().expect("reader");
        assert_eq!(
            reader.nack_count("eu-west-1", "config-1", "1.0.0").ok(),
            Some(2)
        );
        drop(reader);
        assert_eq!(
            nack(&store, "eu-west-1", "1.0.0"),
            Applied::Nack {
                count: 3,
                quarantined: true
            }
        );
        assert!(quarantined(&store, "eu-west-1"));

        // An Admin's clearing gives the edge a fresh count.
        apply(
            &store,
            Command::SetEdgeQuarantine {
                location_id: "eu-west-1".into(),
                quarantined: false,
            },
        );
        let reader = store.reader().expect("reader");
        assert_eq!(
            reader.nack_count("eu-west-1", "config-1", "1.0.0").ok(),
            Some(0)
        );
        assert_eq!(
            reader.nack_count("eu-west-1", "config-1", "1.1.0").ok(),
            Some(0)
        );
        drop(reader);
        assert_eq!(
            nack(&store, "eu-west-1", "1.0.0"),
            Applied::Nack {
                count: 1,
                quarantined: false
            }
        );
        assert!(!quarantined(&store, "eu-west-1"));
    }

    #[test]
    fn pending_breaches_survive_a_reopen_until_they_clear() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pending = BreachState {
            error_rate: 1,
            ..BreachState::default()
        };
        {
            let store = Store::open(dir.path()).expect("store");
            assert_eq!(
                store.reader().and_then(|r| r.breaches("deploy-1")).ok(),
                Some(BreachState::default())
            );
            apply(
                &store,
                Command::SaveBreaches {
                    deployment_id: "deploy-1".into(),
                    breaches: pending.clone(),
                },
            );
        }
        let store = Store::open(dir.path()).expect("reopened");
        assert_eq!(
            store.reader().and_then(|r| r.breaches("deploy-1")).ok(),
            Some(pending)
        );
        apply(
            &store,
            Command::SaveBreaches {
                deployment_id: "deploy-1".into(),
                breaches: BreachState::default(),
            },
        );
        assert_eq!(
            store.reader().and_then(|r| r.breaches("deploy-1")).ok(),
            Some(BreachState::default())
        );
    }
}
