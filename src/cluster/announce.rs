//! The hook that makes a node that became primary announce itself to the edges (SPEC §9):
//! after a promotion, and at start once the node knows it is primary (an offline `promote`,
//! or a restart), so edges move their heartbeats to it and fence the old primary.

use super::{Cluster, NodeRole};
use crate::fleet::PushClient;
use crate::protocol::LeaderAnnouncement;
use crate::secrets::SecretBox;

impl Cluster {
    /// Names this node to the edges each time it becomes primary: on its pushes
    /// (`X-Edgeplane-Leader`) and in an announcement to every registered edge, run in its own
    /// task so promotion never waits on the fleet. Only a node with peers and an
    /// `advertise_url` does so: without peers there is no other node to move from, and the
    /// listener's own address may not be one edges can reach.
    pub fn announce_when_primary(&self, secrets: SecretBox, push: PushClient) {
        let url = self
            .settings()
            .advertise_url
            .trim_end_matches('/')
            .to_owned();
        if self.settings().peers.is_empty() {
            return;
        }
        if url.is_empty() {
            tracing::warn!(
                "cluster.advertise_url is not set: a new primary cannot name itself to the edges, which find it through their heartbeats only"
            );
            return;
        }
        push.set_sender_url(&url);
        let cluster = self.clone();
        tokio::spawn(async move {
            // At start the peers are asked first: an old primary restarted with its old
            // settings steps down instead of announcing a term the edges have moved past.
            cluster.clone().until_primary().await;
            let mut roles = cluster.roles();
            let mut announced = 0;
            loop {
                if roles
                    .wait_for(|role| *role == NodeRole::Primary)
                    .await
                    .is_err()
                {
                    return;
                }
                match cluster.store().read(|reader| reader.current_term()).await {
                    // Each term once: being primary again at a term already announced has
                    // nothing new to tell.
                    Ok(term) if term > announced => {
                        announced = term;
                        let still_primary = || cluster.is_primary();
                        crate::fleet::announce_leader(
                            cluster.store(),
                            &secrets,
                            &push,
                            LeaderAnnouncement {
                                term,
                                url: url.clone(),
                            },
                            still_primary,
                        )
                        .await;
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::error!(%error, "cannot read the term to announce to the edges")
                    }
                }
                if roles.changed().await.is_err() {
                    return;
                }
            }
        });
    }
}
