//! The duty that makes a node that became primary announce itself to the edges (SPEC §9):
//! after a promotion, and at start once the node knows it is primary (an offline `promote`,
//! or a restart), so edges move their heartbeats to it and fence the old primary.

use super::{Cluster, TaskDuty};
use crate::fleet::PushClient;
use crate::protocol::LeaderAnnouncement;
use crate::secrets::SecretBox;

impl Cluster {
    /// The duty that names this node to the edges each time it becomes primary: its pushes
    /// carry `X-Edgeplane-Leader` from now on, and each taking up (one per term, see
    /// [`Cluster::supervise`]) sends an announcement to every registered edge in its own task,
    /// so promotion never waits on the fleet; stepping down stops it. `None` when the node
    /// does not name itself: without peers there is no other node to move from, and without
    /// an `advertise_url` the listener's own address may not be one edges can reach.
    pub fn announcement(&self, secrets: SecretBox, push: PushClient) -> Option<TaskDuty> {
        if self.settings().peers.is_empty() {
            return None;
        }
        let url = self
            .settings()
            .advertise_url
            .trim_end_matches('/')
            .to_owned();
        if url.is_empty() {
            tracing::warn!(
                "cluster.advertise_url is not set: a new primary cannot name itself to the edges, which find it through their heartbeats only"
            );
            return None;
        }
        push.set_sender_url(&url);
        let cluster = self.clone();
        Some(TaskDuty::new("announcement to the edges", move || {
            let (cluster, secrets, push, url) =
                (cluster.clone(), secrets.clone(), push.clone(), url.clone());
            tokio::spawn(async move {
                let term = match cluster.store().read(|reader| reader.current_term()).await {
                    Ok(term) => term,
                    Err(error) => {
                        tracing::error!(%error, "cannot read the term to announce to the edges");
                        return;
                    }
                };
                let still_primary = || cluster.is_primary();
                crate::fleet::announce_leader(
                    cluster.store(),
                    &secrets,
                    &push,
                    LeaderAnnouncement { term, url },
                    still_primary,
                )
                .await;
            })
        }))
    }
}
