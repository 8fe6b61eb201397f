//! Replication to a standby (SPEC §9): who this node is in its cluster, the primary's side of
//! the log stream, the standby's loop that follows it, promotion and stepping down.
//!
//! The command log written by `Store::apply` is the replication log. A standby asks the
//! primary for the entries after its last (`follower.rs`), applies each batch at the entries'
//! own (term, index) in one durable transaction, and asks again; each request also
//! acknowledges what it already holds, which is what sync replication waits for. A node is
//! writable only while it is primary: everything else the store refuses (the fence). A
//! promotion is a `NewTerm` command in the log, so the term travels with the data and a
//! node that comes back from an older term finds where the logs part.

mod announce;
mod duties;
mod follower;
mod leader;
pub mod wire;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::{ClusterRole, ClusterSettings};
use crate::model::Timestamp;
use crate::store::{Command, CommandEnvelope, Store, StoreError};

pub use duties::{Duty, TaskDuty};
pub use follower::{catch_up_before_open, fetch_secret_key};
pub use leader::LogAnswer;

/// File in the data dir holding the generated node id.
pub const NODE_ID_FILE: &str = "node-id";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Primary,
    Standby,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// This node cannot do that in its role (promote a primary).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

/// `{nodeId, url}` of a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeRef {
    pub node_id: String,
    pub url: String,
}

/// One peer as `GET /api/v1/cluster` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerView {
    pub node_id: String,
    pub url: String,
    pub role: NodeRole,
    pub applied_index: u64,
    pub lag_entries: u64,
    pub lag_ms: u64,
    pub last_contact_at: Option<Timestamp>,
}

/// `GET /api/v1/cluster` (SPEC §9).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    pub node_id: String,
    pub role: NodeRole,
    pub term: u64,
    pub leader: Option<NodeRef>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub degraded: bool,
    pub peers: Vec<PeerView>,
}

/// `POST /api/v1/cluster/promote`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Promoted {
    pub role: NodeRole,
    pub term: u64,
}

/// What this node knows of another.
#[derive(Clone, Debug)]
struct Progress {
    node_id: String,
    role: NodeRole,
    applied_index: u64,
    last_contact: Option<Timestamp>,
    /// Last time it held everything committed then.
    caught_up_at: Instant,
}

struct NodeState {
    role: NodeRole,
    leader: Option<NodeRef>,
    /// The primary's commit index as last heard (on a standby).
    leader_commit: u64,
    /// By URL.
    peers: BTreeMap<String, Progress>,
}

/// What raises the alert when the primary goes on without its standby.
type DegradedAlert = Box<dyn Fn(&str) + Send + Sync>;

/// Handle to this node's part in the cluster; clones share it.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    data_dir: std::path::PathBuf,
    url: Mutex<String>,
    settings: ClusterSettings,
    store: Store,
    client: reqwest::Client,
    state: Mutex<NodeState>,
    role: watch::Sender<NodeRole>,
    /// Held while a replicated batch is applied (see `follower::pause_applying`).
    applying: tokio::sync::Mutex<()>,
    /// Raised once when the primary goes on without its standby.
    on_degraded: Mutex<Option<DegradedAlert>>,
}

/// The node id: the configured one, or the one generated into the data dir on first start.
pub fn node_id(settings: &ClusterSettings, data_dir: &Path) -> Result<String, ClusterError> {
    if !settings.node_id.is_empty() {
        return Ok(settings.node_id.clone());
    }
    let path = data_dir.join(NODE_ID_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim().to_string();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| ClusterError::Invalid(format!("cannot create {}: {e}", data_dir.display())))?;
    let id = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    std::fs::write(&path, format!("{id}\n"))
        .map_err(|e| ClusterError::Invalid(format!("cannot write {}: {e}", path.display())))?;
    Ok(id)
}

/// The role a node starts in: the log's last promotion decides once there is one, the
/// settings before.
fn starting_role(
    store: &Store,
    node_id: &str,
    configured: ClusterRole,
) -> Result<NodeRole, StoreError> {
    Ok(match store.reader()?.leader()? {
        Some(leader) if leader.node_id == node_id => NodeRole::Primary,
        Some(_) => NodeRole::Standby,
        None => match configured {
            ClusterRole::Primary => NodeRole::Primary,
            ClusterRole::Standby => NodeRole::Standby,
        },
    })
}

/// Makes the node at `data_dir` primary at its term + 1 (`edgeplane promote`, offline).
pub fn promote_offline(
    store: &Store,
    settings: &ClusterSettings,
    data_dir: &Path,
) -> Result<Promoted, ClusterError> {
    let node_id = node_id(settings, data_dir)?;
    store.set_writable(true);
    let term = store.reader()?.current_term()? + 1;
    store.apply_blocking(new_term(term, &node_id, &settings.advertise_url))?;
    Ok(Promoted {
        role: NodeRole::Primary,
        term,
    })
}

fn new_term(term: u64, node_id: &str, url: &str) -> CommandEnvelope {
    CommandEnvelope::new(
        crate::model::SYSTEM_ACTOR,
        "",
        Command::NewTerm {
            term,
            node_id: node_id.to_string(),
            url: url.to_string(),
        },
    )
}

impl Cluster {
    /// This node's cluster handle, in the role the log (or, before any promotion, the
    /// settings) gives it. The store is fenced unless the node is primary.
    pub fn new(
        settings: &ClusterSettings,
        data_dir: &Path,
        store: Store,
    ) -> Result<Self, ClusterError> {
        let node_id = node_id(settings, data_dir)?;
        let role = starting_role(&store, &node_id, settings.role)?;
        let client =
            crate::protocol::http_client(Duration::from_secs(2), 4, settings.ca_file.as_deref())
                .map_err(|e| ClusterError::Invalid(format!("cluster.ca_file: {e}")))?;
        let leader = store.reader()?.leader()?.map(|l| NodeRef {
            node_id: l.node_id,
            url: l.url,
        });
        let cluster = Cluster {
            inner: Arc::new(Inner {
                node_id,
                data_dir: data_dir.to_path_buf(),
                url: Mutex::new(settings.advertise_url.clone()),
                settings: settings.clone(),
                store,
                client,
                state: Mutex::new(NodeState {
                    role,
                    leader,
                    leader_commit: 0,
                    peers: BTreeMap::new(),
                }),
                role: watch::channel(role).0,
                applying: tokio::sync::Mutex::new(()),
                on_degraded: Mutex::new(None),
            }),
        };
        cluster.apply_role(role);
        Ok(cluster)
    }

    /// The URL peers and clients reach this node at, once the listener is bound (when
    /// `advertise_url` is not set).
    pub fn set_local_url(&self, url: String) {
        if let Ok(mut current) = self.inner.url.lock()
            && current.is_empty()
        {
            *current = url;
        }
    }

    pub fn url(&self) -> String {
        self.inner.url.lock().map(|u| u.clone()).unwrap_or_default()
    }

    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    pub fn settings(&self) -> &ClusterSettings {
        &self.inner.settings
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn role(&self) -> NodeRole {
        *self.inner.role.borrow()
    }

    pub fn is_primary(&self) -> bool {
        self.role() == NodeRole::Primary
    }

    /// Changes of role, for what runs only on the primary (the engine, the reconciler).
    pub fn roles(&self) -> watch::Receiver<NodeRole> {
        self.inner.role.subscribe()
    }

    /// The primary's URL as this node knows it (None on the primary itself or when unknown).
    pub fn leader_url(&self) -> Option<String> {
        let state = self.inner.state.lock().ok()?;
        match state.role {
            NodeRole::Primary => None,
            NodeRole::Standby => state.leader.as_ref().map(|l| l.url.clone()),
        }
    }

    /// Called once each time the primary starts going on without its standby.
    pub fn on_degraded(&self, alert: impl Fn(&str) + Send + Sync + 'static) {
        if let Ok(mut slot) = self.inner.on_degraded.lock() {
            *slot = Some(Box::new(alert));
        }
    }

    fn apply_role(&self, role: NodeRole) {
        let store = &self.inner.store;
        match role {
            NodeRole::Primary => {
                store.set_writable(true);
                store.sync_gate().configure(
                    self.inner.settings.sync_replication && !self.inner.settings.peers.is_empty(),
                    self.inner.settings.sync_timeout,
                );
            }
            NodeRole::Standby => {
                store.set_writable(false);
                store
                    .sync_gate()
                    .configure(false, self.inner.settings.sync_timeout);
            }
        }
        metrics::gauge!("edgeplane_cluster_is_primary").set(if role == NodeRole::Primary {
            1.0
        } else {
            0.0
        });
        self.inner.role.send_if_modified(|current| {
            let changed = *current != role;
            *current = role;
            changed
        });
    }

    /// Makes this standby primary at term + 1 (SPEC §9). It stops following first, so no
    /// entry of the old primary lands after its own.
    pub async fn promote(&self) -> Result<Promoted, ClusterError> {
        if self.is_primary() {
            return Err(ClusterError::Conflict(
                "this node is already the primary".into(),
            ));
        }
        if let Ok(mut state) = self.inner.state.lock() {
            state.role = NodeRole::Primary;
        }
        let _applying = follower::pause_applying(self).await;
        let store = self.inner.store.clone();
        let (node_id, url) = (self.inner.node_id.clone(), self.url());
        let promoted = tokio::task::spawn_blocking(move || -> Result<u64, StoreError> {
            store.set_writable(true);
            let term = store.reader()?.current_term()? + 1;
            store.apply_blocking(new_term(term, &node_id, &url))?;
            Ok(term)
        })
        .await
        .map_err(|e| ClusterError::Invalid(format!("promotion task failed: {e}")))?;
        let term = match promoted {
            Ok(term) => term,
            Err(error) => {
                if let Ok(mut state) = self.inner.state.lock() {
                    state.role = NodeRole::Standby;
                }
                self.inner.store.set_writable(false);
                return Err(error.into());
            }
        };
        if let Ok(mut state) = self.inner.state.lock() {
            state.leader = Some(NodeRef {
                node_id: self.inner.node_id.clone(),
                url: self.url(),
            });
            for progress in state.peers.values_mut() {
                progress.role = NodeRole::Standby;
            }
        }
        self.apply_role(NodeRole::Primary);
        tracing::warn!(term, "promoted: this node is now the primary");
        Ok(Promoted {
            role: NodeRole::Primary,
            term,
        })
    }

    /// A peer is primary at a term above ours: stop writing at once and follow it.
    pub(crate) fn step_down(&self, term: u64, leader: Option<NodeRef>) {
        let was_primary = self.is_primary();
        if let Ok(mut state) = self.inner.state.lock() {
            state.role = NodeRole::Standby;
            if leader.is_some() {
                state.leader = leader.clone();
            }
        }
        self.apply_role(NodeRole::Standby);
        if was_primary {
            tracing::warn!(
                term,
                leader = leader.as_ref().map(|l| l.url.as_str()).unwrap_or("unknown"),
                "a peer is primary at a higher term: this node stops accepting writes and follows it"
            );
        }
    }

    /// What `GET /api/v1/cluster` shows.
    pub async fn view(&self) -> Result<ClusterView, StoreError> {
        let (term, last_index) = self
            .inner
            .store
            .read(|reader| Ok((reader.current_term()?, reader.last_log_position()?.1)))
            .await?;
        let state = self
            .inner
            .state
            .lock()
            .map_err(|_| StoreError::Unavailable("cluster state is poisoned".into()))?;
        let role = state.role;
        let commit_index = match role {
            NodeRole::Primary => last_index,
            NodeRole::Standby => state.leader_commit.max(last_index),
        };
        let leader = match role {
            NodeRole::Primary => Some(NodeRef {
                node_id: self.inner.node_id.clone(),
                url: self.url(),
            }),
            NodeRole::Standby => state.leader.clone(),
        };
        let now = Instant::now();
        let peers = state
            .peers
            .iter()
            .map(|(url, progress)| {
                let lag_entries = commit_index.saturating_sub(progress.applied_index);
                PeerView {
                    node_id: progress.node_id.clone(),
                    url: url.clone(),
                    role: progress.role,
                    applied_index: progress.applied_index,
                    lag_entries,
                    lag_ms: if lag_entries == 0 {
                        0
                    } else {
                        now.duration_since(progress.caught_up_at).as_millis() as u64
                    },
                    last_contact_at: progress.last_contact,
                }
            })
            .collect();
        Ok(ClusterView {
            node_id: self.inner.node_id.clone(),
            role,
            term,
            leader,
            commit_index,
            applied_index: last_index,
            degraded: role == NodeRole::Primary && self.inner.store.sync_gate().is_degraded(),
            peers,
        })
    }

    /// This node's [`wire::PeerStatus`].
    pub async fn status(&self) -> Result<wire::PeerStatus, StoreError> {
        let (term, compacted, last_index) = self
            .inner
            .store
            .read(|reader| {
                Ok((
                    reader.current_term()?,
                    reader.compacted_position()?,
                    reader.last_log_position()?.1,
                ))
            })
            .await?;
        Ok(wire::PeerStatus {
            node_id: self.inner.node_id.clone(),
            url: self.url(),
            role: self.role(),
            term,
            first_index: compacted.map_or(1, |(_, index)| index + 1),
            last_index,
        })
    }

    /// Records what a peer said of itself.
    fn heard_from(
        &self,
        url: &str,
        node_id: &str,
        role: NodeRole,
        applied_index: Option<u64>,
        commit_index: u64,
    ) {
        let Ok(mut state) = self.inner.state.lock() else {
            return;
        };
        let now = Instant::now();
        let progress = state
            .peers
            .entry(url.to_string())
            .or_insert_with(|| Progress {
                node_id: node_id.to_string(),
                role,
                applied_index: 0,
                last_contact: None,
                caught_up_at: now,
            });
        progress.node_id = node_id.to_string();
        progress.role = role;
        progress.last_contact = Some(Timestamp::now());
        if let Some(applied) = applied_index {
            progress.applied_index = applied;
            if applied >= commit_index {
                progress.caught_up_at = now;
            }
        }
    }

    /// Starts the background work of a node: following the primary (standby), watching
    /// peers' terms, compacting the log and publishing the replication gauges. Needs a Tokio
    /// runtime; the tasks end with the runtime.
    pub fn start(&self) {
        if self.inner.settings.peers.is_empty() {
            return;
        }
        tokio::spawn(follower::run(self.clone()));
        tokio::spawn(leader::watch_peers(self.clone()));
        tokio::spawn(leader::compact(self.clone()));
        tokio::spawn(leader::publish_gauges(self.clone()));
    }

    /// Before serving: asks the peers whether one is primary at a higher term, so an old
    /// primary restarted with its old settings comes back as a standby and never takes a
    /// write. Bounded by the client's timeouts.
    pub async fn check_peers_at_start(&self) {
        if self.inner.settings.peers.is_empty() || !self.is_primary() {
            return;
        }
        // A peer slow to answer is asked again a few times: serving as primary while a newer
        // one runs is what this check is for.
        for _ in 0..3 {
            if leader::probe_peers(self).await > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::warn!("no peer answered at start: serving as primary at this node's term");
    }
}

/// The edge transport of a node that may stop being primary: once it is not, no push or
/// rollback leaves it, whatever its engine still holds in memory.
pub struct FencedTransport {
    pub inner: Arc<dyn crate::rollout::engine::EdgeTransport>,
    pub cluster: Cluster,
}

impl crate::rollout::engine::EdgeTransport for FencedTransport {
    fn push(
        &self,
        target: crate::rollout::engine::EdgeTarget,
        content: crate::rollout::engine::PushContent,
    ) -> futures_util::future::BoxFuture<'static, crate::rollout::engine::EdgeAnswer> {
        if !self.cluster.is_primary() {
            return Box::pin(std::future::ready(not_primary()));
        }
        self.inner.push(target, content)
    }

    fn rollback(
        &self,
        target: crate::rollout::engine::EdgeTarget,
        configuration_id: String,
        to_version: Option<String>,
    ) -> futures_util::future::BoxFuture<'static, crate::rollout::engine::EdgeAnswer> {
        if !self.cluster.is_primary() {
            return Box::pin(std::future::ready(not_primary()));
        }
        self.inner.rollback(target, configuration_id, to_version)
    }
}

fn not_primary() -> crate::rollout::engine::EdgeAnswer {
    crate::rollout::engine::EdgeAnswer::Failed {
        error: "this node is no longer the primary".into(),
    }
}

impl Cluster {
    /// Keeps the term pushes carry equal to the store's, and steps this node down when an edge
    /// answers `STALE_TERM` with a higher one: another node was promoted and the edges have
    /// heard from it. A node without peers only says so (there is nobody to follow, and a
    /// control plane restored from an older backup must still be able to write).
    pub fn follow_edge_terms(&self, push: crate::fleet::PushClient) {
        let cluster = self.clone();
        tokio::spawn(async move {
            let mut seen = push.seen_terms();
            let mut roles = cluster.roles();
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut reported = 0;
            loop {
                tokio::select! {
                    changed = seen.changed() => if changed.is_err() { return },
                    changed = roles.changed() => if changed.is_err() { return },
                    _ = every.tick() => {}
                }
                let Ok(ours) = cluster.store().read(|reader| reader.current_term()).await else {
                    continue;
                };
                push.set_term(ours);
                let edge_term = *seen.borrow_and_update();
                if edge_term <= ours || !cluster.is_primary() {
                    continue;
                }
                if cluster.settings().peers.is_empty() {
                    if edge_term <= reported {
                        continue;
                    }
                    reported = edge_term;
                    tracing::error!(
                        ours,
                        edge_term,
                        "an edge has seen a higher term than this node's; its pushes are refused"
                    );
                } else {
                    cluster.step_down(edge_term, None);
                }
            }
        });
    }
}
