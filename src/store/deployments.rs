//! How a deployment is laid out in the store: a small header row, one row per targeted edge
//! and one per timeline event, so that a turn of the engine writes what it changed (the edges
//! that answered, the events it appended) instead of the whole record.
//!
//! `deployments` holds the header: the record with its per-edge map, its timeline, its waves
//! and the location lists derived from the edges left empty. `deployment_edges` is keyed by
//! (deploymentId, locationId), `deployment_events` by (deploymentId, index on the timeline),
//! `deployment_waves` holds the planned waves, written once when the deployment starts.
//! [`read`] puts the record back together. A header written whole (before this layout) still
//! reads: its own edges and events come first, the rows overlay them.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{DEPLOYMENTS, StoreError, codec};
use crate::model::{Deployment, DeploymentEvent, EdgeDeploymentState, Wave};

pub(crate) const DEPLOYMENT_EDGES: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("deployment_edges");
pub(crate) const DEPLOYMENT_EVENTS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("deployment_events");
pub(crate) const DEPLOYMENT_WAVES: TableDefinition<&str, &[u8]> =
    TableDefinition::new("deployment_waves");

/// What one save of a deployment changes: its header, the edges whose state changed, the
/// events appended to its timeline from `first_event` on, and its waves when they changed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeploymentChanges {
    /// The record without edges, events, waves or derived location lists
    /// ([`Deployment::header`]).
    pub header: Box<Deployment>,
    pub waves: Option<Vec<Wave>>,
    pub edges: Vec<(String, EdgeDeploymentState)>,
    pub first_event: u64,
    pub events: Vec<DeploymentEvent>,
}

impl DeploymentChanges {
    /// Every part of `deployment`: what a first or a full save writes.
    pub fn whole(deployment: &Deployment) -> Self {
        Self {
            header: Box::new(deployment.header()),
            waves: Some(deployment.engine.waves.clone()),
            edges: deployment
                .edges
                .iter()
                .map(|(location, edge)| (location.clone(), edge.clone()))
                .collect(),
            first_event: 0,
            events: deployment.events.clone(),
        }
    }
}

/// Writes the changed parts of a deployment.
pub(crate) fn write(txn: &WriteTransaction, changes: &DeploymentChanges) -> Result<(), StoreError> {
    let id = changes.header.deployment_id.as_str();
    txn.open_table(DEPLOYMENTS)?
        .insert(id, codec::encode(changes.header.as_ref())?.as_slice())?;
    if let Some(waves) = &changes.waves {
        txn.open_table(DEPLOYMENT_WAVES)?
            .insert(id, codec::encode(waves)?.as_slice())?;
    }
    if !changes.edges.is_empty() {
        let mut table = txn.open_table(DEPLOYMENT_EDGES)?;
        for (location, edge) in &changes.edges {
            table.insert((id, location.as_str()), codec::encode(edge)?.as_slice())?;
        }
    }
    if !changes.events.is_empty() {
        let mut table = txn.open_table(DEPLOYMENT_EVENTS)?;
        for (offset, event) in changes.events.iter().enumerate() {
            let index = changes.first_event + offset as u64;
            table.insert((id, index), codec::encode(event)?.as_slice())?;
        }
    }
    Ok(())
}

/// The whole record of deployment `id`, or `None`.
pub(crate) fn read(
    deployments: &impl ReadableTable<&'static str, &'static [u8]>,
    waves: &impl ReadableTable<&'static str, &'static [u8]>,
    edges: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    events: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    id: &str,
) -> Result<Option<Deployment>, StoreError> {
    let Some(raw) = deployments.get(id)? else {
        return Ok(None);
    };
    let mut deployment: Deployment = codec::decode(raw.value())?;
    if let Some(raw) = waves.get(id)? {
        deployment.engine.waves = codec::decode(raw.value())?;
    }
    for entry in edges.range((id, "")..)? {
        let (key, value) = entry?;
        let (owner, location) = key.value();
        if owner != id {
            break;
        }
        deployment
            .edges
            .insert(location.to_string(), codec::decode(value.value())?);
    }
    for entry in events.range((id, 0)..=(id, u64::MAX))? {
        let (key, value) = entry?;
        let index = usize::try_from(key.value().1).unwrap_or(usize::MAX);
        let event: DeploymentEvent = codec::decode(value.value())?;
        match index.cmp(&deployment.events.len()) {
            std::cmp::Ordering::Less => deployment.events[index] = event,
            std::cmp::Ordering::Equal => deployment.events.push(event),
            std::cmp::Ordering::Greater => {
                return Err(StoreError::Corrupt(format!(
                    "deployment '{id}' misses timeline events before {index}"
                )));
            }
        }
    }
    deployment.derive_location_lists();
    Ok(Some(deployment))
}

/// Moves deployments written whole (before this layout) into their parts, so that the next
/// save, which writes only a header, loses nothing.
pub(crate) fn split_whole_records(txn: &WriteTransaction) -> Result<(), StoreError> {
    let whole: Vec<Deployment> = {
        let table = txn.open_table(DEPLOYMENTS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let deployment: Deployment = codec::decode(entry?.1.value())?;
            if !deployment.edges.is_empty()
                || !deployment.events.is_empty()
                || !deployment.engine.waves.is_empty()
            {
                out.push(deployment);
            }
        }
        out
    };
    for deployment in &whole {
        write(txn, &DeploymentChanges::whole(deployment))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use redb::ReadableDatabase;

    use super::*;
    use crate::model::{CreateDeployment, EdgeState, EventKind, RollbackConfig, Timestamp};
    use crate::store::{Command, CommandEnvelope, Store};

    fn deployment(n_edges: usize) -> Deployment {
        let mut d = CreateDeployment {
            configuration_id: "config-1".into(),
            target_locations: vec!["edge-0".into()],
            ..CreateDeployment::default()
        }
        .into_deployment(
            "deploy-1".into(),
            "1.0.0".into(),
            "alice".into(),
            Timestamp(1000),
            &RollbackConfig::default(),
        )
        .expect("valid request");
        for i in 0..n_edges {
            d.edges.insert(
                format!("edge-{i}"),
                EdgeDeploymentState {
                    state: EdgeState::Pushed,
                    touched: true,
                    ..EdgeDeploymentState::default()
                },
            );
        }
        d
    }

    fn save(store: &Store, command: Command) {
        store
            .apply_blocking(CommandEnvelope::new("system", "", command))
            .expect("saved");
    }

    #[test]
    fn a_save_writes_the_changed_edge_and_the_new_event_and_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut d = deployment(500);
        save(
            &store,
            Command::SaveDeployment {
                deployment: Box::new(d.clone()),
                edge_versions: Vec::new(),
            },
        );
        let edge = d.edges.get_mut("edge-7").unwrap();
        edge.state = EdgeState::Acked;
        edge.acked_at = Some(Timestamp(2000));
        d.events.push(DeploymentEvent {
            at: Timestamp(2000),
            kind: EventKind::EdgeAcked,
            actor: "system".into(),
            message: "acked in 3 ms".into(),
            location_id: Some("edge-7".into()),
            version: Some("1.0.0".into()),
            data: Default::default(),
        });
        d.derive_location_lists();
        let changes = DeploymentChanges {
            header: Box::new(d.header()),
            waves: None,
            edges: vec![("edge-7".into(), d.edges["edge-7"].clone())],
            first_event: 1,
            events: d.events[1..].to_vec(),
        };
        let command = Command::SaveDeploymentChanges {
            changes,
            edge_versions: vec![("edge-7".into(), Some("1.0.0".into()))],
        };
        // What the log keeps of an ack is that edge, not the other 499.
        let logged = codec::encode(&command).unwrap();
        assert!(logged.len() < 1024, "{} bytes", logged.len());
        save(&store, command);

        let read = store.reader().unwrap().deployment("deploy-1").unwrap();
        assert_eq!(read.as_ref(), Some(&d));
        let read = read.unwrap();
        assert_eq!(read.successful_locations, vec!["edge-7".to_string()]);
        assert_eq!(read.events.len(), 2);
        assert_eq!(read.edges.len(), 500);
        assert_eq!(store.reader().unwrap().deployments().unwrap(), vec![d]);
    }

    #[test]
    fn a_record_stored_whole_is_split_into_rows_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let d = deployment(3);
        {
            let store = Store::open(dir.path()).unwrap();
            let txn = store.db.begin_write().unwrap();
            txn.open_table(DEPLOYMENTS)
                .unwrap()
                .insert("deploy-1", codec::encode(&d).unwrap().as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let txn = store.db.begin_read().unwrap();
        let header: Deployment = codec::decode(
            txn.open_table(DEPLOYMENTS)
                .unwrap()
                .get("deploy-1")
                .unwrap()
                .unwrap()
                .value(),
        )
        .unwrap();
        assert!(header.edges.is_empty() && header.events.is_empty());
        let mut expected = d;
        expected.derive_location_lists();
        assert_eq!(
            store.reader().unwrap().deployment("deploy-1").unwrap(),
            Some(expected)
        );
    }
}
