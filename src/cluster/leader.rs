//! The primary's side: answering a standby's log requests (with the long poll that keeps
//! its lag short), noticing a peer at a higher term, compacting the log and publishing the
//! replication gauges.

use std::time::Duration;

use super::wire::{self, LogBatch, LogQuery, PeerStatus};
use super::{Cluster, NodeRef, NodeRole};
use crate::store::StoreError;

/// What the primary answers a log request.
#[derive(Debug)]
pub enum LogAnswer {
    Entries(LogBatch),
    /// This node is not the primary; the leader's URL when it knows it.
    NotLeader(Option<String>),
    /// The standby's log cannot continue from this one's: it must install a copy.
    SnapshotRequired(String),
}

impl Cluster {
    /// Answers a standby's log request: the entries from `query.from` on, waiting up to
    /// `query.wait_ms` for one when there is none yet. The request acknowledges every entry
    /// before `from` once its term there matches this log.
    pub async fn serve_log(&self, query: LogQuery) -> Result<LogAnswer, StoreError> {
        let store = self.store().clone();
        let prev = query.from.saturating_sub(1);
        let (term, prev_term, last, compacted) = store
            .read(move |reader| {
                Ok((
                    reader.current_term()?,
                    reader.term_at(prev)?,
                    reader.last_log_position()?.1,
                    reader.compacted_position()?,
                ))
            })
            .await?;
        if query.term > term {
            self.step_down(query.term, None);
            return Ok(LogAnswer::NotLeader(None));
        }
        if !self.is_primary() {
            return Ok(LogAnswer::NotLeader(self.leader_url()));
        }
        match prev_term {
            Some(t) if t == query.prev_term => {}
            Some(t) => {
                return Ok(LogAnswer::SnapshotRequired(format!(
                    "the logs part at index {prev} (term {} there, {t} here)",
                    query.prev_term
                )));
            }
            None if prev > last => {
                return Ok(LogAnswer::SnapshotRequired(format!(
                    "the standby holds entries up to {prev}, past this log's last ({last})"
                )));
            }
            None => {
                let upto = compacted.map_or(0, |(_, index)| index);
                return Ok(LogAnswer::SnapshotRequired(format!(
                    "entries up to {upto} were compacted; the standby needs entry {}",
                    query.from
                )));
            }
        }
        store.sync_gate().ack(prev);
        let peer_key = if query.url.is_empty() {
            query.node_id.clone()
        } else {
            query.url.clone()
        };
        self.heard_from(
            &peer_key,
            &query.node_id,
            NodeRole::Standby,
            Some(prev),
            last,
        );

        let mut commits = store.commits();
        let from = query.from;
        let read = |store: crate::store::Store| async move {
            store
                .read(move |reader| reader.log_entries(from, wire::MAX_BATCH_ENTRIES))
                .await
        };
        let mut entries = read(store.clone()).await?;
        if entries.is_empty() && query.wait_ms > 0 {
            let wait = Duration::from_millis(query.wait_ms.min(wire::MAX_WAIT_MS));
            let _ = tokio::time::timeout(wait, commits.wait_for(|index| *index >= from)).await;
            entries = read(store.clone()).await?;
        }
        let commit_index = *store.commits().borrow();
        let term = store.read(|reader| reader.current_term()).await?;
        Ok(LogAnswer::Entries(LogBatch {
            term,
            leader_id: self.node_id().to_string(),
            leader_url: self.url(),
            commit_index,
            entries,
        }))
    }

    /// GET `{peer}/api/v1/cluster/log/status`.
    pub(super) async fn peer_status(&self, peer: &str) -> Result<PeerStatus, String> {
        let url = format!("{}/api/v1/cluster/log/status", peer.trim_end_matches('/'));
        let response = self
            .inner
            .client
            .get(&url)
            .header(wire::SECRET_HEADER, &self.inner.settings.secret)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| crate::protocol::chain(&e))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        response
            .json::<PeerStatus>()
            .await
            .map_err(|e| crate::protocol::chain(&e))
    }
}

/// Asks every peer who it is; a primary at a higher term than this node's makes it step
/// down, and a standby learns where the primary is. Answers how many peers answered.
pub(super) async fn probe_peers(cluster: &Cluster) -> usize {
    let own_url = cluster.url();
    let mut answered = 0;
    for peer in cluster.settings().peers.clone() {
        if peer.trim_end_matches('/') == own_url.trim_end_matches('/') {
            continue;
        }
        let Ok(status) = cluster.peer_status(&peer).await else {
            continue;
        };
        answered += 1;
        if status.node_id == cluster.node_id() {
            continue;
        }
        let Ok(term) = cluster.store().read(|reader| reader.current_term()).await else {
            continue;
        };
        cluster.heard_from(&peer, &status.node_id, status.role, None, 0);
        if status.role != NodeRole::Primary {
            continue;
        }
        let leader = NodeRef {
            node_id: status.node_id.clone(),
            url: peer.clone(),
        };
        if status.term > term || (status.term == term && !cluster.is_primary()) {
            if cluster.is_primary() {
                cluster.step_down(status.term, Some(leader));
            } else if let Ok(mut state) = cluster.inner.state.lock() {
                state.leader = Some(leader);
            }
        }
    }
    answered
}

/// Every second, [`probe_peers`].
pub(super) async fn watch_peers(cluster: Cluster) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let _ = probe_peers(&cluster).await;
    }
}

/// Every two seconds: on the primary, drops the entries every known standby has applied;
/// on any node, the oldest beyond `cluster.max_log_entries`.
pub(super) async fn compact(cluster: Cluster) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let applied_by_all = if cluster.is_primary() {
            cluster.inner.state.lock().ok().and_then(|state| {
                state
                    .peers
                    .values()
                    .filter(|p| p.role == NodeRole::Standby)
                    .map(|p| p.applied_index)
                    .min()
            })
        } else {
            None
        };
        let cap = cluster.settings().max_log_entries;
        let store = cluster.store().clone();
        let result = tokio::task::spawn_blocking(move || -> Result<u64, StoreError> {
            let last = store.reader()?.last_log_position()?.1;
            let over_cap = last.saturating_sub(cap);
            let upto = applied_by_all.unwrap_or(0).max(over_cap);
            if upto == 0 {
                return Ok(0);
            }
            store.compact_log(upto)
        })
        .await;
        match result {
            Ok(Ok(0)) => {}
            Ok(Ok(dropped)) => tracing::debug!(dropped, "compacted the command log"),
            Ok(Err(error)) => tracing::warn!(%error, "cannot compact the command log"),
            Err(error) => tracing::warn!(%error, "log compaction task failed"),
        }
    }
}

/// Every second: the lag gauges, the degraded gauge, and the alert when the primary starts
/// going on without its standby.
pub(super) async fn publish_gauges(cluster: Cluster) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_degraded = false;
    loop {
        tick.tick().await;
        let Ok(view) = cluster.view().await else {
            continue;
        };
        let (lag_entries, lag_ms) = match view.role {
            NodeRole::Primary => view
                .peers
                .iter()
                .filter(|p| p.role == NodeRole::Standby)
                .fold((0, 0), |(e, m), p| (e.max(p.lag_entries), m.max(p.lag_ms))),
            NodeRole::Standby => (view.commit_index.saturating_sub(view.applied_index), 0),
        };
        metrics::gauge!("edgeplane_replication_lag_entries").set(lag_entries as f64);
        metrics::gauge!("edgeplane_replication_lag_seconds").set(lag_ms as f64 / 1000.0);
        metrics::gauge!("edgeplane_replication_degraded").set(if view.degraded {
            1.0
        } else {
            0.0
        });
        if view.degraded && !was_degraded {
            let message = format!(
                "the standby did not acknowledge within {:?}: the primary goes on alone ({} entries behind)",
                cluster.settings().sync_timeout,
                lag_entries
            );
            if let Ok(alert) = cluster.inner.on_degraded.lock()
                && let Some(alert) = alert.as_ref()
            {
                alert(&message);
            }
        }
        was_degraded = view.degraded;
    }
}
