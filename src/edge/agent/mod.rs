//! The edge agent (`edgeplane agent`): runs beside a real proxy, receives configurations,
//! writes them durably, runs the proxy's test and reload commands, and heartbeats.
//!
//! On disk, under `state_dir`:
//! - `configs/{configurationId}/{version}.json`: the content of each version kept (the last
//!   `keep_versions`, plus whatever is active or staged);
//! - `state.json`: per configuration, the active and staged versions, the history of
//!   versions that were active before (for rollback), and each kept version's checksum,
//!   type and metadata;
//! - `agent.addr`: the address a running agent listens on, so that `edgeplane agent rollback`
//!   goes through the running agent (which owns the state) instead of beside it;
//! - `term`: the highest cluster term a push or rollback carried; one from a lower term is
//!   refused with 409 `STALE_TERM` (SPEC §9), across restarts.
//!
//! The files are written atomically (temp file in the same directory, fsync, rename, fsync of the
//! directory), so a crash leaves either the old or the new file, never a torn one.
//!
//! Order of a push: the version file is written first, then `test_command` and
//! `reload_command` run with `EDGEPLANE_CONFIG_FILE` pointing at it, and only when both
//! succeed does `state.json` name it active. So the state file never names a version the
//! proxy refused. When the test fails the proxy never saw the version, so nothing is undone.
//! When the reload fails the proxy may be half-way, so the reload command is run again for
//! the previously active version (best effort; its outcome is part of the NACK reason).
//!
//! Metrics: when `metrics_file` is set, the proxy side is expected to write there (atomically)
//! one `MetricsSample` JSON per interval; the agent sends it with the next heartbeat if the
//! file changed since the previous heartbeat, and `null` otherwise.
//!
//! With `adapter = "nginx"` (`nginx/`) the proxy is nginx: the test and reload commands run
//! on one file rendered from every active configuration, and metrics come from nginx's
//! access log instead of `metrics_file`.
//!
//! This file holds what a push, an activation and a rollback do; the rooms around it are the
//! `[agent]` settings (`settings.rs`), the local version store (`versions.rs`), the proxy's
//! commands (`proxy.rs`), the service and heartbeats (`service.rs`) and the machine's
//! figures (`system.rs`).

mod nginx;
mod proxy;
mod service;
mod settings;
mod system;
mod versions;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::model::Timestamp;
use crate::protocol::{PushMode, PushReply, PushRequest, RollbackRequest, is_safe_name};

pub use service::{rollback_offline, run};
pub use settings::{AgentConfig, AgentConfigError};
use versions::{AgentState, ConfigState, StoredVersion, make_active};

/// The running agent, shared by the HTTP handlers and the heartbeat loop.
pub(crate) struct Agent {
    config: AgentConfig,
    state: Mutex<AgentState>,
    /// One lock per configuration: a push and a rollback of the same configuration never
    /// interleave; different configurations proceed in parallel.
    config_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Serialises writers of `state.json` so the last write carries the latest state.
    state_writer: tokio::sync::Mutex<()>,
    started_at: Timestamp,
    terms: crate::edge::term::TermGuard,
    /// The control-plane node heartbeats go to, among `control_plane`'s.
    control_planes: crate::edge::leader::ControlPlanes,
    /// The nginx adapter, when `adapter = "nginx"`.
    nginx: Option<nginx::Nginx>,
}

impl Agent {
    fn lock_for(&self, configuration_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .config_locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks
            .entry(configuration_id.to_owned())
            .or_default()
            .clone()
    }

    async fn handle_push(&self, configuration_id: &str, request: PushRequest) -> PushReply {
        if !is_safe_name(configuration_id) {
            return nack("invalid configurationId");
        }
        if !is_safe_name(&request.version) {
            return nack("invalid version");
        }
        let lock = self.lock_for(configuration_id);
        let _guard = lock.lock().await;
        let result = match request.mode {
            PushMode::Apply => self.apply(configuration_id, request).await,
            PushMode::Stage => self.stage(configuration_id, request).await,
            PushMode::Activate => self.activate(configuration_id, request).await,
        };
        match result {
            Ok(version) => PushReply::Acked { version },
            Err(reason) => {
                tracing::warn!(configuration_id, %reason, "push refused");
                PushReply::Nacked { reason }
            }
        }
    }

    /// Writes the pushed version unless it is already kept. Returns whether it was new.
    async fn write_pushed(
        &self,
        configuration_id: &str,
        current: &ConfigState,
        request: &PushRequest,
    ) -> Result<bool, String> {
        if request.content.is_null() {
            return Err("content is required".into());
        }
        let checksum = crate::protocol::checksum(&request.content);
        if !checksum.eq_ignore_ascii_case(&request.checksum) {
            return Err(format!(
                "checksum mismatch: content hashes to {checksum}, push says {}",
                request.checksum
            ));
        }
        if let Some(kept) = current.versions.get(&request.version) {
            if !kept.checksum.eq_ignore_ascii_case(&checksum) {
                return Err(format!(
                    "version {} is already on this edge with different content",
                    request.version
                ));
            }
            return Ok(false);
        }
        self.write_version(
            self.version_path(configuration_id, &request.version),
            &request.content,
        )
        .await?;
        Ok(true)
    }

    fn forget_unkept(&self, configuration_id: &str, version: &str, was_new: bool) {
        if was_new {
            let _ = std::fs::remove_file(self.version_path(configuration_id, version));
        }
    }

    async fn apply(&self, configuration_id: &str, request: PushRequest) -> Result<String, String> {
        let current = self.snapshot(configuration_id);
        let was_new = self
            .write_pushed(configuration_id, &current, &request)
            .await?;
        if current.active.as_deref() == Some(request.version.as_str()) {
            return Ok(request.version);
        }
        if let Err(reason) = self
            .test_and_reload(
                configuration_id,
                &request.version,
                request.config_type,
                current.active.as_deref(),
            )
            .await
        {
            self.forget_unkept(configuration_id, &request.version, was_new);
            return Err(reason);
        }
        let mut next = current;
        next.versions
            .entry(request.version.clone())
            .or_insert_with(|| StoredVersion {
                config_type: request.config_type,
                checksum: request.checksum.to_ascii_lowercase(),
                metadata: request.metadata.clone(),
                written_at: Timestamp::now(),
            });
        make_active(&mut next, &request.version);
        if next.staged.as_deref() == Some(request.version.as_str()) {
            next.staged = None;
        }
        self.commit(configuration_id, next).await?;
        Ok(request.version)
    }

    async fn stage(&self, configuration_id: &str, request: PushRequest) -> Result<String, String> {
        let current = self.snapshot(configuration_id);
        let was_new = self
            .write_pushed(configuration_id, &current, &request)
            .await?;
        // nginx takes a staged version when it is activated; until then it is only checked.
        let checked = match &self.nginx {
            Some(nginx) => {
                self.nginx_check(
                    nginx,
                    configuration_id,
                    &request.version,
                    request.config_type,
                    &request.content,
                )
                .await
            }
            None => {
                self.run_hook(
                    "test",
                    self.config.test_command.as_ref(),
                    configuration_id,
                    &request.version,
                )
                .await
            }
        };
        if let Err(reason) = checked {
            self.forget_unkept(configuration_id, &request.version, was_new);
            return Err(reason);
        }
        let mut next = current;
        next.versions
            .entry(request.version.clone())
            .or_insert_with(|| StoredVersion {
                config_type: request.config_type,
                checksum: request.checksum.to_ascii_lowercase(),
                metadata: request.metadata.clone(),
                written_at: Timestamp::now(),
            });
        if next.active.as_deref() != Some(request.version.as_str()) {
            next.staged = Some(request.version.clone());
        }
        self.commit(configuration_id, next).await?;
        Ok(request.version)
    }

    async fn activate(
        &self,
        configuration_id: &str,
        request: PushRequest,
    ) -> Result<String, String> {
        let current = self.snapshot(configuration_id);
        if current.active.as_deref() == Some(request.version.as_str()) {
            return Ok(request.version);
        }
        let Some(staged) = current.staged.clone() else {
            return Err("nothing staged to activate".into());
        };
        if staged != request.version {
            return Err(format!(
                "staged version is {staged}, not {}",
                request.version
            ));
        }
        if let Some(kept) = current.versions.get(&staged)
            && !request.checksum.is_empty()
            && !kept.checksum.eq_ignore_ascii_case(&request.checksum)
        {
            return Err("checksum does not match the staged version".into());
        }
        let config_type = current
            .versions
            .get(&staged)
            .map_or(request.config_type, |kept| kept.config_type);
        self.test_and_reload(
            configuration_id,
            &staged,
            config_type,
            current.active.as_deref(),
        )
        .await?;
        let mut next = current;
        make_active(&mut next, &staged);
        next.staged = None;
        self.commit(configuration_id, next).await?;
        Ok(staged)
    }

    pub(crate) async fn handle_rollback(
        &self,
        configuration_id: &str,
        request: RollbackRequest,
    ) -> PushReply {
        if !is_safe_name(configuration_id) {
            return nack("invalid configurationId");
        }
        let lock = self.lock_for(configuration_id);
        let _guard = lock.lock().await;
        let current = self.snapshot(configuration_id);
        let target = match &request.to_version {
            Some(version) if current.versions.contains_key(version) => version.clone(),
            Some(version) => return nack(&format!("version {version} is not kept on this edge")),
            None => {
                match current.history.iter().rev().find(|v| {
                    current.versions.contains_key(*v) && current.active.as_ref() != Some(*v)
                }) {
                    Some(version) => version.clone(),
                    None if request.deactivate_if_none => {
                        return self.deactivate(configuration_id, current).await;
                    }
                    None => return nack("no earlier version in local history"),
                }
            }
        };
        if current.active.as_deref() == Some(target.as_str()) {
            return PushReply::Acked { version: target };
        }
        let Some(config_type) = current.versions.get(&target).map(|kept| kept.config_type) else {
            return nack(&format!("version {target} is not kept on this edge"));
        };
        if let Err(reason) = self
            .test_and_reload(
                configuration_id,
                &target,
                config_type,
                current.active.as_deref(),
            )
            .await
        {
            return nack(&reason);
        }
        let mut next = current;
        // Going back in time: the target and everything active after it leave the history,
        // so a second rollback goes further back instead of toggling.
        if let Some(position) = next.history.iter().rposition(|v| *v == target) {
            next.history.truncate(position);
        }
        next.active = Some(target.clone());
        next.activated_at = Some(Timestamp::now());
        if let Err(reason) = self.commit(configuration_id, next).await {
            return nack(&reason);
        }
        tracing::info!(configuration_id, version = %target, "rolled back");
        PushReply::Acked { version: target }
    }

    /// Leaves nothing of a configuration active: the proxy reloads without it (the reload
    /// command sees an empty `EDGEPLANE_CONFIG_VERSION`). Kept versions stay on disk.
    async fn deactivate(&self, configuration_id: &str, current: ConfigState) -> PushReply {
        let Some(active) = current.active.clone() else {
            return PushReply::Acked {
                version: String::new(),
            };
        };
        let reloaded = match &self.nginx {
            Some(nginx) => self.nginx_switch(nginx, configuration_id, None).await,
            None => {
                self.run_hook(
                    "reload",
                    self.config.reload_command.as_ref(),
                    configuration_id,
                    "",
                )
                .await
            }
        };
        if let Err(reason) = reloaded {
            return nack(&format!("{reason}; {active} stays active"));
        }
        let mut next = current;
        next.history.retain(|v| *v != active);
        next.history.push(active);
        next.active = None;
        next.activated_at = Some(Timestamp::now());
        if let Err(reason) = self.commit(configuration_id, next).await {
            return nack(&reason);
        }
        tracing::info!(
            configuration_id,
            "deactivated: no earlier version to return to"
        );
        PushReply::Acked {
            version: String::new(),
        }
    }
}

fn nack(reason: &str) -> PushReply {
    PushReply::Nacked {
        reason: reason.to_owned(),
    }
}
