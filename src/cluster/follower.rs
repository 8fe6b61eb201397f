//! The standby's side: find the primary, stream its log from the last applied index, apply
//! each batch durably, and install a copy of its store when the logs cannot continue (the
//! primary compacted past this node, or this node holds entries the primary never had).

use std::time::Duration;

use super::wire::{self, LogBatch, LogQuery, SecretKey};
use super::{Cluster, NodeRef, NodeRole};
use crate::config::Settings;
use crate::store::{Store, StoreError};

/// How long one log request may wait on the primary for a new entry.
const POLL_WAIT_MS: u64 = 1_000;

/// Held while a batch is applied; a promotion takes it so nothing lands after it.
pub(super) async fn pause_applying(cluster: &Cluster) -> tokio::sync::MutexGuard<'_, ()> {
    cluster.inner.applying.lock().await
}

/// What one pull from the primary gave.
enum Pulled {
    Applied,
    Nothing,
    SnapshotRequired(String),
    NotLeader(Option<String>),
    /// This node's store refuses writes (a full disk, an I/O error it recovers from).
    StoreRefused(String),
}

impl Cluster {
    fn is_following(&self) -> bool {
        self.inner
            .state
            .lock()
            .map(|s| s.role == NodeRole::Standby)
            .unwrap_or(false)
    }

    fn known_leader(&self) -> Option<NodeRef> {
        self.inner.state.lock().ok()?.leader.clone()
    }

    fn forget_leader(&self, hint: Option<String>) {
        if let Ok(mut state) = self.inner.state.lock() {
            state.leader = hint.map(|url| NodeRef {
                node_id: String::new(),
                url,
            });
        }
    }

    /// One log request to `leader` and, if it brought entries, their application.
    async fn pull(&self, leader: &str) -> Result<Pulled, String> {
        let store = self.store().clone();
        let (term, (_, last)) = store
            .read(|reader| Ok((reader.current_term()?, reader.last_log_position()?)))
            .await
            .map_err(|e| e.to_string())?;
        let prev_term = store
            .read(move |reader| reader.term_at(last))
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or(0);
        let query = LogQuery {
            from: last + 1,
            prev_term,
            term,
            node_id: self.node_id().to_string(),
            url: self.url(),
            wait_ms: POLL_WAIT_MS,
        };
        let url = format!("{}/api/v1/cluster/log", leader.trim_end_matches('/'));
        let mut request_url =
            reqwest::Url::parse(&url).map_err(|e| format!("{url} is not a URL: {e}"))?;
        request_url
            .query_pairs_mut()
            .append_pair("from", &query.from.to_string())
            .append_pair("prevTerm", &query.prev_term.to_string())
            .append_pair("term", &query.term.to_string())
            .append_pair("nodeId", &query.node_id)
            .append_pair("url", &query.url)
            .append_pair("waitMs", &query.wait_ms.to_string());
        let response = self
            .inner
            .client
            .get(request_url)
            .header(wire::SECRET_HEADER, &self.inner.settings.secret)
            .timeout(Duration::from_millis(POLL_WAIT_MS) + Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| crate::protocol::chain(&e))?;
        let status = response.status();
        if status == reqwest::StatusCode::CONFLICT {
            let reason = response.text().await.unwrap_or_default();
            return Ok(Pulled::SnapshotRequired(reason));
        }
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            let hint = response
                .headers()
                .get(crate::api::error::LEADER_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            return Ok(Pulled::NotLeader(hint));
        }
        if !status.is_success() {
            return Err(format!("{url} answered {status}"));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| crate::protocol::chain(&e))?;
        let batch: LogBatch = postcard::from_bytes(&body)
            .map_err(|e| format!("{url} sent an unreadable batch: {e}"))?;
        if batch.term < term {
            // A primary behind this node's term learns it from the request and steps down.
            return Ok(Pulled::NotLeader(None));
        }
        if let Ok(mut state) = self.inner.state.lock() {
            state.leader = Some(NodeRef {
                node_id: batch.leader_id.clone(),
                url: leader.to_string(),
            });
            state.leader_commit = batch.commit_index;
        }
        self.heard_from(leader, &batch.leader_id, NodeRole::Primary, None, 0);
        if batch.entries.is_empty() {
            return Ok(Pulled::Nothing);
        }
        let _applying = pause_applying(self).await;
        if !self.is_following() {
            return Ok(Pulled::Nothing);
        }
        let issued: Vec<crate::model::Timestamp> =
            batch.entries.iter().map(|e| e.envelope.at).collect();
        let entries = batch.entries;
        let applied = tokio::task::spawn_blocking(move || store.apply_replicated(entries))
            .await
            .map_err(|e| format!("apply task failed: {e}"))?;
        match applied {
            Ok(_) => {
                // From the command's issue on the primary to its durable copy here.
                let now = crate::model::Timestamp::now();
                for at in issued {
                    let lag_ms = now.millis_since(at).max(0);
                    metrics::histogram!("edgeplane_replication_apply_lag_seconds")
                        .record(lag_ms as f64 / 1000.0);
                }
                Ok(Pulled::Applied)
            }
            Err(error @ (StoreError::Corrupt(_) | StoreError::Invalid(_))) => {
                Ok(Pulled::SnapshotRequired(error.to_string()))
            }
            Err(error @ (StoreError::Recovering(_) | StoreError::StorageFull(_))) => {
                Ok(Pulled::StoreRefused(error.to_string()))
            }
            Err(error) => Err(error.to_string()),
        }
    }

    /// Replaces this node's content with a copy of the primary's, then streams from there.
    async fn install_copy(&self, leader: &str, reason: &str) -> Result<(), String> {
        let url = format!(
            "{}/api/v1/cluster/log/snapshot",
            leader.trim_end_matches('/')
        );
        let response = self
            .inner
            .client
            .get(&url)
            .header(wire::SECRET_HEADER, &self.inner.settings.secret)
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .map_err(|e| crate::protocol::chain(&e))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| crate::protocol::chain(&e))?;
        let _applying = pause_applying(self).await;
        if !self.is_following() {
            return Ok(());
        }
        let store = self.store().clone();
        let reason = reason.to_string();
        let copy_dir = self.copy_dir();
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            let before = store.reader()?.last_log_position()?;
            // The copy is restored beside the data dir, then taken into the open store in
            // one transaction: the server keeps serving reads from the old content meanwhile.
            let _ = std::fs::remove_dir_all(&copy_dir);
            let meta = crate::store::restore_snapshot(&copy_dir, &mut body.as_ref())?;
            let position = (meta.log_term, meta.index);
            let installed = store.install_from(&copy_dir, position);
            let _ = std::fs::remove_dir_all(&copy_dir);
            installed?;
            if before.1 > position.1 || before.0 > position.0 {
                tracing::warn!(
                    local_last_index = before.1,
                    local_last_term = before.0,
                    primary_index = position.1,
                    primary_term = position.0,
                    "discarded this node's log entries after the primary's copy: the primary never had them"
                );
            }
            tracing::info!(index = position.1, term = position.0, %reason, "installed a copy of the primary's store");
            Ok(())
        })
        .await
        .map_err(|e| format!("install task failed: {e}"))?
        .map_err(|e| e.to_string())
    }

    /// Where a copy of the primary's store is restored before it is installed: beside the
    /// data dir, on the same file system.
    fn copy_dir(&self) -> std::path::PathBuf {
        let data_dir = &self.inner.data_dir;
        let name = data_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "edgeplane-data".into());
        data_dir.with_file_name(format!(".{name}.standby-copy"))
    }

    /// Finds the primary: the one this node last followed, else the first peer that says
    /// it is primary.
    async fn find_leader(&self) -> Option<String> {
        if let Some(leader) = self.known_leader() {
            return Some(leader.url);
        }
        let _ = super::leader::probe_peers(self).await;
        self.known_leader().map(|l| l.url)
    }
}

/// The standby's loop: while this node is a standby, pull and apply; idle otherwise.
pub(super) async fn run(cluster: Cluster) {
    let mut roles = cluster.roles();
    let mut failures = 0u32;
    loop {
        if cluster.role() != NodeRole::Standby {
            if roles.changed().await.is_err() {
                return;
            }
            continue;
        }
        let Some(leader) = cluster.find_leader().await else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let outcome = match cluster.pull(&leader).await {
            Ok(Pulled::Applied | Pulled::Nothing) => Ok(()),
            Ok(Pulled::NotLeader(hint)) => {
                cluster.forget_leader(hint);
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(())
            }
            Ok(Pulled::SnapshotRequired(reason)) => {
                tracing::warn!(%reason, "the log cannot continue from the primary's: installing a copy");
                cluster.install_copy(&leader, &reason).await
            }
            Ok(Pulled::StoreRefused(reason)) => {
                // Nothing of the batch was kept: it is asked for again, from the last durable
                // entry, once the store has recovered by itself.
                tracing::warn!(%reason, "the store refuses the primary's entries until it recovers");
                wait_until_writable(cluster.store()).await;
                Ok(())
            }
            Err(error) => Err(error),
        };
        match outcome {
            Ok(()) => failures = 0,
            Err(error) => {
                failures += 1;
                if failures == 1 || failures % 20 == 0 {
                    tracing::warn!(%leader, %error, failures, "cannot stream the primary's log");
                }
                if failures >= 3 {
                    cluster.forget_leader(None);
                }
                let backoff = Duration::from_millis(100 * u64::from(failures.min(20)));
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// Returns once the store takes writes again after an I/O error or a full disk (its writer
/// reopens the file and watches free space by itself).
async fn wait_until_writable(store: &Store) {
    while !store.status().writable {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// On a standby's first start: the at-rest encryption key from the primary (kept 0600 in
/// the data dir), so it can open sealed edge tokens and TLS keys once promoted; and the
/// first entries of the log, so the store has the cluster's token signing key before the
/// node opens it. Retries until a peer answers.
pub async fn fetch_secret_key(settings: &Settings) -> anyhow::Result<()> {
    let cluster = &settings.cluster;
    let data_dir = &settings.server.data_dir;
    let key_path = data_dir.join(crate::service::open::SECRET_KEY_FILE);
    if !settings.secrets.encryption_key.is_empty() || key_path.exists() {
        return Ok(());
    }
    let client =
        crate::protocol::http_client(Duration::from_secs(2), 1, cluster.ca_file.as_deref())
            .map_err(|e| anyhow::anyhow!("cluster.ca_file: {e}"))?;
    let mut attempts = 0u32;
    loop {
        for peer in &cluster.peers {
            let url = format!(
                "{}/api/v1/cluster/log/secret-key",
                peer.trim_end_matches('/')
            );
            let answer = client
                .get(&url)
                .header(wire::SECRET_HEADER, &cluster.secret)
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            match answer {
                Ok(response) if response.status().is_success() => {
                    let key: SecretKey = response.json().await?;
                    crate::secrets::SecretBox::from_base64(key.key.trim())
                        .map_err(|e| anyhow::anyhow!("{url} sent an unusable key: {e}"))?;
                    std::fs::create_dir_all(data_dir)?;
                    crate::service::open::write_private_file(&key_path, key.key.trim())?;
                    tracing::info!(peer = %peer, "took the at-rest encryption key from the primary");
                    return Ok(());
                }
                Ok(response) => {
                    if attempts % 10 == 0 {
                        tracing::warn!(%url, status = %response.status(), "the primary refused the encryption key");
                    }
                }
                Err(error) => {
                    if attempts % 10 == 0 {
                        tracing::warn!(%url, error = %crate::protocol::chain(&error), "waiting for the primary");
                    }
                }
            }
        }
        attempts += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// On a standby whose store is empty: streams the primary's log into it until it holds the
/// cluster's token signing key and its users, before the node opens it for serving.
pub async fn catch_up_before_open(settings: &Settings) -> anyhow::Result<()> {
    let data_dir = settings.server.data_dir.clone();
    let store = {
        let data_dir = data_dir.clone();
        tokio::task::spawn_blocking(move || Store::open(&data_dir)).await??
    };
    let initialised = |store: &Store| -> Result<bool, StoreError> {
        let reader = store.reader()?;
        Ok(reader.meta("jwt_secret")?.is_some() && reader.user_count()? > 0)
    };
    if initialised(&store)? {
        return Ok(());
    }
    let cluster = Cluster::new(&settings.cluster, &data_dir, store.clone())?;
    cluster.step_down(0, None);
    let mut attempts = 0u32;
    while !initialised(&store)? {
        let Some(leader) = cluster.find_leader().await else {
            attempts += 1;
            if attempts % 10 == 0 {
                tracing::warn!("no peer says it is primary yet; waiting to take the first entries");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        match cluster.pull(&leader).await {
            Ok(Pulled::SnapshotRequired(reason)) => {
                cluster
                    .install_copy(&leader, &reason)
                    .await
                    .map_err(|e| anyhow::anyhow!(e))?;
            }
            Ok(Pulled::NotLeader(hint)) => cluster.forget_leader(hint),
            Ok(Pulled::StoreRefused(reason)) => {
                tracing::warn!(%reason, "the store refuses the primary's entries until it recovers");
                wait_until_writable(&store).await;
            }
            Ok(Pulled::Applied | Pulled::Nothing) => {}
            Err(error) => {
                tracing::warn!(%leader, %error, "cannot stream the primary's log");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    Ok(())
}
