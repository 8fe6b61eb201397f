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
//!   goes through the running agent (which owns the state) instead of beside it.
//!
//! Both are written atomically (temp file in the same directory, fsync, rename, fsync of the
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

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use super::http::{EdgeService, router, shutdown_signal};
use super::protocol::{
    ActiveConfiguration, ActiveConfigurations, Heartbeat, PushMode, PushReply, PushRequest,
    RollbackRequest, is_safe_name,
};
use super::push::{PushOptions, build_http_client, chain};
use crate::model::{ConfigType, EdgeHealth, MetricsSample, Timestamp};

/// Longest command output quoted in a NACK reason.
const OUTPUT_LIMIT: usize = 2048;

/// The `[agent]` table of the agent's TOML file.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    pub location_id: String,
    pub listen: SocketAddr,
    /// Base URL of the control plane, without `/api/v1`.
    pub control_plane: String,
    /// This edge's agent token: pushes must bear it, heartbeats are sent with it.
    pub token: String,
    pub state_dir: PathBuf,
    pub test_command: Option<String>,
    pub reload_command: Option<String>,
    pub heartbeat_interval: Duration,
    pub keep_versions: usize,
    pub command_timeout: Duration,
    pub metrics_file: Option<PathBuf>,
    /// PEM bundle for an https control plane when the machine has no CA store.
    pub ca_file: Option<PathBuf>,
}

/// Why an agent configuration file was refused; every variant names the key.
#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("not valid TOML: {0}")]
    Syntax(String),
    #[error("missing key `{key}`")]
    Missing { key: String },
    #[error("invalid `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

const KEYS: [&str; 12] = [
    "location_id",
    "listen",
    "control_plane",
    "token",
    "state_dir",
    "test_command",
    "reload_command",
    "heartbeat_interval",
    "keep_versions",
    "command_timeout",
    "metrics_file",
    "ca_file",
];

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self, AgentConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| AgentConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    pub fn from_toml(text: &str) -> Result<Self, AgentConfigError> {
        let document: toml::Table =
            toml::from_str(text).map_err(|e| AgentConfigError::Syntax(e.to_string()))?;
        let table = match document.get("agent") {
            Some(toml::Value::Table(table)) => table,
            Some(_) => return Err(invalid("agent", "must be a table")),
            None => {
                return Err(AgentConfigError::Missing {
                    key: "agent".into(),
                });
            }
        };
        if let Some(unknown) = table.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(invalid(&format!("agent.{unknown}"), "unknown key"));
        }
        let location_id = required_string(table, "location_id")?;
        if !is_safe_name(&location_id) {
            return Err(invalid(
                "agent.location_id",
                "letters, digits, '-', '_' or '.' only",
            ));
        }
        let listen = required_string(table, "listen")?
            .parse::<SocketAddr>()
            .map_err(|e| invalid("agent.listen", &e.to_string()))?;
        let control_plane = required_string(table, "control_plane")?;
        if !(control_plane.starts_with("http://") || control_plane.starts_with("https://")) {
            return Err(invalid("agent.control_plane", "must be an http(s) URL"));
        }
        let token = required_string(table, "token")?;
        if token.is_empty() {
            return Err(invalid("agent.token", "must not be empty"));
        }
        let state_dir = PathBuf::from(required_string(table, "state_dir")?);
        let keep_versions = match table.get("keep_versions") {
            None => 10,
            Some(toml::Value::Integer(n)) if (1..=10_000).contains(n) => *n as usize,
            Some(_) => return Err(invalid("agent.keep_versions", "an integer from 1")),
        };
        Ok(Self {
            location_id,
            listen,
            control_plane: control_plane.trim_end_matches('/').to_owned(),
            token,
            state_dir,
            test_command: optional_string(table, "test_command")?,
            reload_command: optional_string(table, "reload_command")?,
            heartbeat_interval: duration(table, "heartbeat_interval", Duration::from_secs(10))?,
            keep_versions,
            command_timeout: duration(table, "command_timeout", Duration::from_secs(30))?,
            metrics_file: optional_string(table, "metrics_file")?.map(PathBuf::from),
            ca_file: optional_string(table, "ca_file")?.map(PathBuf::from),
        })
    }
}

fn invalid(key: &str, reason: &str) -> AgentConfigError {
    AgentConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

fn optional_string(table: &toml::Table, key: &str) -> Result<Option<String>, AgentConfigError> {
    match table.get(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(&format!("agent.{key}"), "must be a string")),
    }
}

fn required_string(table: &toml::Table, key: &str) -> Result<String, AgentConfigError> {
    optional_string(table, key)?.ok_or_else(|| AgentConfigError::Missing {
        key: format!("agent.{key}"),
    })
}

fn duration(
    table: &toml::Table,
    key: &str,
    default: Duration,
) -> Result<Duration, AgentConfigError> {
    match optional_string(table, key)? {
        None => Ok(default),
        Some(text) => match humantime::parse_duration(&text) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(invalid(&format!("agent.{key}"), "must be above zero")),
            Err(e) => Err(invalid(&format!("agent.{key}"), &e.to_string())),
        },
    }
}

/// `state.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AgentState {
    configurations: BTreeMap<String, ConfigState>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigState {
    active: Option<String>,
    activated_at: Option<Timestamp>,
    staged: Option<String>,
    /// Versions that were active before the current one, oldest first.
    history: Vec<String>,
    /// Versions kept on disk.
    versions: BTreeMap<String, StoredVersion>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredVersion {
    #[serde(rename = "type")]
    config_type: ConfigType,
    checksum: String,
    metadata: BTreeMap<String, String>,
    written_at: Timestamp,
}

impl ConfigState {
    fn empty() -> Self {
        Self {
            active: None,
            activated_at: None,
            staged: None,
            history: Vec::new(),
            versions: BTreeMap::new(),
        }
    }
}

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
}

impl Agent {
    fn open(config: AgentConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(config.state_dir.join("configs"))
            .with_context(|| format!("creating state directory {}", config.state_dir.display()))?;
        let path = config.state_dir.join("state.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => AgentState::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Self {
            config,
            state: Mutex::new(state),
            config_locks: Mutex::new(HashMap::new()),
            state_writer: tokio::sync::Mutex::new(()),
            started_at: Timestamp::now(),
        })
    }

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

    fn snapshot(&self, configuration_id: &str) -> ConfigState {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .configurations
            .get(configuration_id)
            .cloned()
            .unwrap_or_else(ConfigState::empty)
    }

    fn version_path(&self, configuration_id: &str, version: &str) -> PathBuf {
        self.config
            .state_dir
            .join("configs")
            .join(configuration_id)
            .join(format!("{version}.json"))
    }

    /// Replaces one configuration's state, prunes old versions and writes `state.json`.
    async fn commit(&self, configuration_id: &str, mut next: ConfigState) -> Result<(), String> {
        let pruned = prune(&mut next, self.config.keep_versions);
        let _writer = self.state_writer.lock().await;
        let bytes = {
            let mut state = self
                .state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state
                .configurations
                .insert(configuration_id.to_owned(), next);
            serde_json::to_vec_pretty(&*state).map_err(|e| e.to_string())?
        };
        let path = self.config.state_dir.join("state.json");
        let files: Vec<PathBuf> = pruned
            .iter()
            .map(|v| self.version_path(configuration_id, v))
            .collect();
        tokio::task::spawn_blocking(move || {
            write_atomic(&path, &bytes)?;
            // Pruned files go only after the state no longer names them.
            for file in files {
                let _ = std::fs::remove_file(file);
            }
            Ok::<(), std::io::Error>(())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("could not write the agent state: {e}"))
    }

    async fn write_version(&self, path: PathBuf, content: &Value) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(content).map_err(|e| e.to_string())?;
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("could not write the version file: {e}"))
    }

    /// Runs one of the proxy's commands for a version; Err carries the reason for a NACK.
    async fn run_hook(
        &self,
        what: &str,
        command: Option<&String>,
        configuration_id: &str,
        version: &str,
    ) -> Result<(), String> {
        let Some(command) = command else {
            return Ok(());
        };
        let mut child = tokio::process::Command::new("sh");
        child
            .arg("-c")
            .arg(command)
            .env(
                "EDGEPLANE_CONFIG_FILE",
                self.version_path(configuration_id, version),
            )
            .env("EDGEPLANE_CONFIG_ID", configuration_id)
            .env("EDGEPLANE_CONFIG_VERSION", version)
            .env("EDGEPLANE_STATE_DIR", &self.config.state_dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let output = match tokio::time::timeout(self.config.command_timeout, child.output()).await {
            Err(_) => {
                return Err(format!(
                    "{what} command timed out after {:?}",
                    self.config.command_timeout
                ));
            }
            Ok(Err(e)) => return Err(format!("{what} command could not start: {e}")),
            Ok(Ok(output)) => output,
        };
        if output.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Err(format!(
            "{what} command failed ({}): {}",
            output.status,
            tail(text.trim(), OUTPUT_LIMIT)
        ))
    }

    /// Test then reload `version`; on a failed reload, reload `restore` again.
    async fn test_and_reload(
        &self,
        configuration_id: &str,
        version: &str,
        restore: Option<&str>,
    ) -> Result<(), String> {
        self.run_hook(
            "test",
            self.config.test_command.as_ref(),
            configuration_id,
            version,
        )
        .await?;
        if let Err(reason) = self
            .run_hook(
                "reload",
                self.config.reload_command.as_ref(),
                configuration_id,
                version,
            )
            .await
        {
            let restored = match restore {
                None => String::from("no previous version to restore"),
                Some(previous) => match self
                    .run_hook(
                        "reload",
                        self.config.reload_command.as_ref(),
                        configuration_id,
                        previous,
                    )
                    .await
                {
                    Ok(()) => format!("reloaded {previous} again"),
                    Err(e) => format!("restoring {previous} failed too: {e}"),
                },
            };
            return Err(format!("{reason}; {restored}"));
        }
        Ok(())
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
        let checksum = crate::validate::checksum(&request.content);
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
        if let Err(reason) = self
            .run_hook(
                "test",
                self.config.test_command.as_ref(),
                configuration_id,
                &request.version,
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
        self.test_and_reload(configuration_id, &staged, current.active.as_deref())
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
        if let Err(reason) = self
            .test_and_reload(configuration_id, &target, current.active.as_deref())
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
        if let Err(reason) = self
            .run_hook(
                "reload",
                self.config.reload_command.as_ref(),
                configuration_id,
                "",
            )
            .await
        {
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

    fn active_list(&self) -> ActiveConfigurations {
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let configurations = state
            .configurations
            .iter()
            .filter_map(|(configuration_id, config)| {
                let version = config.active.clone()?;
                let kept = config.versions.get(&version)?;
                Some(ActiveConfiguration {
                    configuration_id: configuration_id.clone(),
                    version,
                    config_type: kept.config_type,
                    checksum: kept.checksum.clone(),
                    activated_at: config.activated_at.unwrap_or(kept.written_at),
                    staged_version: config.staged.clone(),
                })
            })
            .collect();
        ActiveConfigurations {
            location_id: self.config.location_id.clone(),
            configurations,
        }
    }
}

fn make_active(next: &mut ConfigState, version: &str) {
    if let Some(previous) = next.active.take()
        && previous != version
    {
        next.history.retain(|v| *v != previous);
        next.history.push(previous);
    }
    next.active = Some(version.to_owned());
    next.activated_at = Some(Timestamp::now());
}

/// Drops the oldest kept versions beyond `keep`, never the active or staged one. Returns the
/// versions whose files can go.
fn prune(state: &mut ConfigState, keep: usize) -> Vec<String> {
    let mut by_age: Vec<(Timestamp, String)> = state
        .versions
        .iter()
        .map(|(v, s)| (s.written_at, v.clone()))
        .collect();
    by_age.sort();
    let excess = by_age.len().saturating_sub(keep);
    let mut pruned = Vec::new();
    for (_, version) in by_age.into_iter().take(excess) {
        if state.active.as_ref() == Some(&version) || state.staged.as_ref() == Some(&version) {
            continue;
        }
        state.versions.remove(&version);
        state.history.retain(|v| *v != version);
        pruned.push(version);
    }
    pruned
}

fn nack(reason: &str) -> PushReply {
    PushReply::Nacked {
        reason: reason.to_owned(),
    }
}

/// The last `limit` bytes of `text`, cut at a character boundary: the end of a command's
/// output is where the error usually is.
fn tail(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Writes `bytes` to `path` so that readers see the old file or the new one, never a mix,
/// and the new one survives a power cut once this returns.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("path has no directory"))?;
    let created = !dir.exists();
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", rand::random::<u64>()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(dir)?.sync_all()?;
        if created && let Some(parent) = dir.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

impl EdgeService for Agent {
    fn token(&self) -> String {
        self.config.token.clone()
    }

    async fn push(&self, configuration_id: String, request: PushRequest) -> PushReply {
        self.handle_push(&configuration_id, request).await
    }

    async fn rollback(&self, configuration_id: String, request: RollbackRequest) -> PushReply {
        self.handle_rollback(&configuration_id, request).await
    }

    async fn active(&self) -> ActiveConfigurations {
        self.active_list()
    }
}

/// Runs the agent until SIGTERM or ctrl-c: the edge protocol on `listen` and the heartbeat
/// loop. Prints `listening on ADDR` once it accepts requests.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = AgentConfig::load(config_path)?;
    let listen = config.listen;
    let agent = Arc::new(Agent::open(config)?);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let address = listener.local_addr()?;
    let address_file = agent.config.state_dir.join(ADDRESS_FILE);
    write_atomic(&address_file, address.to_string().as_bytes())
        .with_context(|| format!("writing {}", address_file.display()))?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {address}")?;
        stdout.flush()?;
    }
    tracing::info!(%address, location_id = %agent.config.location_id, "agent started");
    let _watchdog = crate::notify::ready(|| async { true });
    let (stop_tx, stop_rx) = watch::channel(false);
    let heartbeats = tokio::spawn(heartbeat_loop(agent.clone(), stop_rx));
    axum::serve(listener, router(agent.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving the edge protocol")?;
    let _ = stop_tx.send(true);
    let _ = std::fs::remove_file(&address_file);
    let _ = tokio::time::timeout(Duration::from_secs(5), heartbeats).await;
    tracing::info!("agent stopped");
    Ok(())
}

/// `edgeplane agent rollback CONFIG_ID`: puts the previous version back from local history,
/// running the test and reload commands, without the control plane. A running agent owns
/// the state, so when the one recorded in `state_dir` answers, the rollback goes through
/// it; otherwise (agent stopped or crashed) the state on disk is changed directly. Returns
/// the version now active.
pub fn rollback_offline(config_path: &Path, configuration_id: &str) -> anyhow::Result<String> {
    let config = AgentConfig::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        if let Some(reply) = rollback_through_running_agent(&config, configuration_id).await {
            return match reply {
                PushReply::Acked { version } => Ok(version),
                PushReply::Nacked { reason } => anyhow::bail!("rollback refused: {reason}"),
            };
        }
        let agent = Agent::open(config)?;
        match agent
            .handle_rollback(configuration_id, RollbackRequest::default())
            .await
        {
            PushReply::Acked { version } => Ok(version),
            PushReply::Nacked { reason } => anyhow::bail!("rollback refused: {reason}"),
        }
    })
}

/// Where a running agent records its bound address, for `edgeplane agent rollback`.
const ADDRESS_FILE: &str = "agent.addr";

/// Asks the running agent, if there is one, to roll back. None when no agent answers
/// (none recorded, stale address, or not ours), so the caller works on the files itself.
async fn rollback_through_running_agent(
    config: &AgentConfig,
    configuration_id: &str,
) -> Option<PushReply> {
    let address = std::fs::read_to_string(config.state_dir.join(ADDRESS_FILE)).ok()?;
    let address: SocketAddr = address.trim().parse().ok()?;
    let client = build_http_client(&PushOptions {
        timeout: Duration::from_secs(2),
        ..PushOptions::default()
    })
    .ok()?;
    let response = client
        .post(format!(
            "http://{address}/edge/v1/configurations/{configuration_id}/rollback"
        ))
        .bearer_auth(&config.token)
        .timeout(config.command_timeout * 2 + Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    if response.status().as_u16() == 401 {
        return None;
    }
    response.json::<PushReply>().await.ok()
}

async fn heartbeat_loop(agent: Arc<Agent>, mut stop: watch::Receiver<bool>) {
    let interval = agent.config.heartbeat_interval;
    let client = match build_http_client(&PushOptions {
        timeout: interval.min(Duration::from_secs(10)),
        ca_file: agent.config.ca_file.clone(),
        ..PushOptions::default()
    }) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "heartbeats disabled");
            return;
        }
    };
    let url = format!(
        "{}/api/v1/edge-locations/{}/heartbeat",
        agent.config.control_plane, agent.config.location_id
    );
    let mut cpu = CpuSampler::default();
    let mut last_sent = SystemTime::UNIX_EPOCH;
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        wait = interval;
        let metrics = read_metrics(agent.config.metrics_file.as_deref(), last_sent).await;
        last_sent = SystemTime::now();
        let heartbeat = Heartbeat {
            health: health(&agent.config.state_dir, &mut cpu).await,
            active_configurations: agent.active_list().versions(),
            metrics,
            started_at: agent.started_at,
            sent_at: Timestamp::now(),
        };
        let sent = client
            .post(&url)
            .bearer_auth(&agent.config.token)
            .json(&heartbeat)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {}
            Ok(response) if response.status().as_u16() == 429 => {
                let retry_after = response
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs)
                    .unwrap_or(interval);
                wait = retry_after.clamp(interval, interval * 6);
                tracing::warn!(?wait, "heartbeat rate limited");
            }
            Ok(response) => tracing::warn!(status = %response.status(), "heartbeat refused"),
            Err(error) => tracing::warn!(error = %chain(&error), "heartbeat failed"),
        }
    }
}

async fn read_metrics(path: Option<&Path>, since: SystemTime) -> Option<MetricsSample> {
    let path = path?;
    let modified = tokio::fs::metadata(path).await.ok()?.modified().ok()?;
    if modified <= since {
        return None;
    }
    let bytes = tokio::fs::read(path).await.ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(sample) => Some(sample),
        Err(error) => {
            tracing::warn!(%error, "metrics file is not a MetricsSample");
            None
        }
    }
}

/// CPU usage between two heartbeats, from `/proc/stat`.
#[derive(Default)]
struct CpuSampler {
    previous: Option<(u64, u64)>,
}

impl CpuSampler {
    fn sample(&mut self, stat: &str) -> f64 {
        let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
            return 0.0;
        };
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let total: u64 = fields.iter().sum();
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        let usage = match self.previous {
            Some((prev_total, prev_idle)) if total > prev_total => {
                let busy = (total - prev_total).saturating_sub(idle.saturating_sub(prev_idle));
                busy as f64 * 100.0 / (total - prev_total) as f64
            }
            _ => 0.0,
        };
        self.previous = Some((total, idle));
        usage
    }
}

fn memory_usage(meminfo: &str) -> f64 {
    let field = |name: &str| -> Option<f64> {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    match (field("MemTotal:"), field("MemAvailable:")) {
        (Some(total), Some(available)) if total > 0.0 => (total - available) * 100.0 / total,
        _ => 0.0,
    }
}

/// Disk usage of the filesystem holding `dir`, from `df -P` (portable output).
async fn disk_usage(dir: &Path) -> f64 {
    let output = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::process::Command::new("df")
            .arg("-P")
            .arg(dir)
            .kill_on_drop(true)
            .output(),
    )
    .await;
    let Ok(Ok(output)) = output else {
        return 0.0;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().nth(4))
        .and_then(|pct| pct.trim_end_matches('%').parse().ok())
        .unwrap_or(0.0)
}

async fn health(state_dir: &Path, cpu: &mut CpuSampler) -> EdgeHealth {
    let stat = tokio::fs::read_to_string("/proc/stat")
        .await
        .unwrap_or_default();
    let meminfo = tokio::fs::read_to_string("/proc/meminfo")
        .await
        .unwrap_or_default();
    let disk = disk_usage(state_dir).await;
    EdgeHealth {
        // A nearly full disk means the next push cannot be written durably.
        is_healthy: disk < 98.0,
        cpu_usage: cpu.sample(&stat),
        memory_usage: memory_usage(&meminfo),
        disk_usage: disk,
        bandwidth_utilization: 0.0,
        active_connections: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[agent]
location_id = "us-east-1"
listen = "127.0.0.1:0"
control_plane = "http://127.0.0.1:8080/"
token = "secret"
state_dir = "/tmp/edge"
"#;

    fn check_error(extra: &str, expected_key: &str) {
        let text = format!("{MINIMAL}{extra}");
        let error = AgentConfig::from_toml(&text).unwrap_err().to_string();
        assert!(error.contains(expected_key), "{extra}: {error}");
    }

    #[test]
    fn defaults_fill_the_optional_keys() {
        let config = AgentConfig::from_toml(MINIMAL).unwrap();
        assert_eq!(config.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(config.keep_versions, 10);
        assert_eq!(config.command_timeout, Duration::from_secs(30));
        assert_eq!(config.control_plane, "http://127.0.0.1:8080");
        assert_eq!(config.test_command, None);
    }

    #[test]
    fn bad_values_name_their_key() {
        check_error(
            "heartbeat_interval = \"soon\"\n",
            "agent.heartbeat_interval",
        );
        check_error("keep_versions = 0\n", "agent.keep_versions");
        check_error("reload_comand = \"x\"\n", "agent.reload_comand");
        check_error("test_command = 3\n", "agent.test_command");
        let error = AgentConfig::from_toml("[agent]\nlisten = \"127.0.0.1:0\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("agent.location_id"), "{error}");
        let error = AgentConfig::from_toml(&MINIMAL.replace("127.0.0.1:0", "nowhere"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("agent.listen"), "{error}");
    }

    fn stored(at: i64) -> StoredVersion {
        StoredVersion {
            config_type: ConfigType::CacheRule,
            checksum: String::new(),
            metadata: BTreeMap::new(),
            written_at: Timestamp(at),
        }
    }

    #[test]
    fn pruning_keeps_the_newest_and_the_active() {
        let mut state = ConfigState::empty();
        for (i, v) in ["1", "2", "3", "4"].iter().enumerate() {
            state.versions.insert(v.to_string(), stored(i as i64));
        }
        state.active = Some("1".into());
        state.history = vec!["2".into(), "3".into()];
        let pruned = prune(&mut state, 2);
        assert_eq!(pruned, vec!["2".to_string()]);
        assert!(state.versions.contains_key("1"));
        assert_eq!(state.history, vec!["3".to_string()]);
    }

    #[test]
    fn cpu_usage_comes_from_deltas() {
        let mut sampler = CpuSampler::default();
        assert_eq!(sampler.sample("cpu  100 0 100 800 0 0 0 0\n"), 0.0);
        let usage = sampler.sample("cpu  150 0 150 900 0 0 0 0\n");
        assert!((usage - 50.0).abs() < 1e-9, "{usage}");
        assert!((memory_usage("MemTotal: 1000 kB\nMemAvailable: 250 kB\n") - 75.0).abs() < 1e-9);
    }

    #[test]
    fn tail_cuts_at_a_char_boundary() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("aéb", 2), "b");
    }
}
