//! The agent's local version store under `state_dir`: the content file of each kept version,
//! `state.json` with the active and staged slots, the history of earlier active versions and
//! each kept version's checksum, type and metadata; written atomically and pruned to
//! `keep_versions`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Agent, AgentConfig};
use crate::model::{ConfigType, Timestamp};
use crate::protocol::{ActiveConfiguration, ActiveConfigurations};

/// `state.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AgentState {
    pub(super) configurations: BTreeMap<String, ConfigState>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConfigState {
    pub(super) active: Option<String>,
    pub(super) activated_at: Option<Timestamp>,
    pub(super) staged: Option<String>,
    /// Versions that were active before the current one, oldest first.
    pub(super) history: Vec<String>,
    /// Versions kept on disk.
    pub(super) versions: BTreeMap<String, StoredVersion>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StoredVersion {
    #[serde(rename = "type")]
    pub(super) config_type: ConfigType,
    pub(super) checksum: String,
    pub(super) metadata: BTreeMap<String, String>,
    pub(super) written_at: Timestamp,
}

impl ConfigState {
    pub(super) fn empty() -> Self {
        Self {
            active: None,
            activated_at: None,
            staged: None,
            history: Vec::new(),
            versions: BTreeMap::new(),
        }
    }
}

impl Agent {
    pub(super) fn open(config: AgentConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(config.state_dir.join("configs"))
            .with_context(|| format!("creating state directory {}", config.state_dir.display()))?;
        let path = config.state_dir.join("state.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => AgentState::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let terms = open_terms(&config.state_dir)?;
        let nginx = config
            .nginx
            .clone()
            .map(|settings| super::nginx::Nginx::open(settings, &config, &state));
        let control_planes = crate::edge::leader::ControlPlanes::new(
            &config.location_id,
            std::iter::once(config.control_plane.clone())
                .chain(config.other_control_planes.iter().cloned())
                .collect(),
        );
        Ok(Self {
            nginx,
            control_planes,
            config,
            state: Mutex::new(state),
            config_locks: Mutex::new(HashMap::new()),
            state_writer: tokio::sync::Mutex::new(()),
            started_at: Timestamp::now(),
            terms,
        })
    }

    pub(super) fn snapshot(&self, configuration_id: &str) -> ConfigState {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .configurations
            .get(configuration_id)
            .cloned()
            .unwrap_or_else(ConfigState::empty)
    }

    pub(super) fn version_path(&self, configuration_id: &str, version: &str) -> PathBuf {
        version_file(&self.config.state_dir, configuration_id, version)
    }

    /// The content of a kept version.
    pub(super) async fn read_version(
        &self,
        configuration_id: &str,
        version: &str,
    ) -> Result<Value, String> {
        let path = self.version_path(configuration_id, version);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| format!("could not read version {version}: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("version {version} is unreadable: {e}"))
    }

    /// Replaces one configuration's state, prunes old versions and writes `state.json`.
    pub(super) async fn commit(
        &self,
        configuration_id: &str,
        mut next: ConfigState,
    ) -> Result<(), String> {
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

    pub(super) async fn write_version(&self, path: PathBuf, content: &Value) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(content).map_err(|e| e.to_string())?;
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("could not write the version file: {e}"))
    }

    pub(super) fn active_list(&self) -> ActiveConfigurations {
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

/// Where the content of a kept version lives under `state_dir`.
pub(super) fn version_file(state_dir: &Path, configuration_id: &str, version: &str) -> PathBuf {
    state_dir
        .join("configs")
        .join(configuration_id)
        .join(format!("{version}.json"))
}

pub(super) fn make_active(next: &mut ConfigState, version: &str) {
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
pub(super) fn prune(state: &mut ConfigState, keep: usize) -> Vec<String> {
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

/// The term guard of the agent, from `state_dir/term` (0 when no term was seen yet).
fn open_terms(state_dir: &Path) -> anyhow::Result<crate::edge::term::TermGuard> {
    let path = state_dir.join(TERM_FILE);
    let highest = match std::fs::read_to_string(&path) {
        Ok(text) => crate::protocol::term::parse_term(&text)
            .with_context(|| format!("{} does not hold a term", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(crate::edge::term::TermGuard::persistent(
        highest,
        Box::new(move |term| write_atomic(&path, format!("{term}\n").as_bytes())),
    ))
}

/// File in the state dir holding the highest term seen.
const TERM_FILE: &str = "term";

/// Writes `bytes` to `path` so that readers see the old file or the new one, never a mix,
/// and the new one survives a power cut once this returns.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, bytes, None)
}

/// [`write_atomic`] with the file's permission bits set to `mode` before it takes the name,
/// so a private key is never readable by others, not even for a moment.
pub(super) fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    write_atomic_with(path, bytes, Some(mode))
}

fn write_atomic_with(path: &Path, bytes: &[u8], mode: Option<u32>) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        if let Some(mode) = mode {
            options.mode(mode);
        }
        let mut file = options.open(&temp)?;
        if let Some(mode) = mode {
            // The creation mode is narrowed by the umask; the file gets exactly `mode`.
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
