//! The nginx adapter (`[agent] adapter = "nginx"`, SPEC §6.1): the agent turns the active
//! configurations into one file, `render_dir/edgeplane.conf`, that the operator's nginx.conf
//! includes inside `http {}`, drives nginx with the test and reload commands, and reads
//! nginx's JSON access log for the heartbeat's metrics.
//!
//! The adapter keeps what nginx serves (configurationId → version and content) in memory, and
//! every change — an apply, an activation, a rollback, a deactivation — goes through one
//! lock: render the whole set with the change, write the TLS files and the candidate file
//! atomically, run the test command; when nginx refuses, put the previous file back and NACK
//! with nginx's own message (nginx never loaded the candidate, so it keeps serving); else
//! reload. Only then does the served set change. A staged version is rendered only to check
//! that it can be (no file is written) and reaches nginx when it is activated.

mod access_log;
mod render;
mod rules;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::settings::NginxSettings;
use super::versions::{AgentState, write_atomic_mode};
use super::{Agent, AgentConfig};
use crate::model::{ConfigType, MetricsSample};
use access_log::{Interval, Tailer};
use render::{ActiveRule, FILE_NAME, Rendered, render};

/// One configuration as nginx serves it.
#[derive(Clone, Debug)]
struct Served {
    version: String,
    config_type: ConfigType,
    content: Value,
}

/// The adapter's state in a running agent.
pub(super) struct Nginx {
    settings: NginxSettings,
    /// What the rendered file holds; changed only after nginx took it.
    served: tokio::sync::Mutex<BTreeMap<String, Served>>,
    log: Arc<Mutex<(Tailer, Interval)>>,
}

impl Nginx {
    /// The adapter for an agent whose state is `state`: the active versions, read from disk,
    /// are what nginx serves (the file was rendered from them).
    pub(super) fn open(settings: NginxSettings, config: &AgentConfig, state: &AgentState) -> Self {
        let mut served = BTreeMap::new();
        for (configuration_id, config_state) in &state.configurations {
            let Some(version) = &config_state.active else {
                continue;
            };
            let Some(kept) = config_state.versions.get(version) else {
                continue;
            };
            let path = super::versions::version_file(&config.state_dir, configuration_id, version);
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<Value>(&bytes).map_err(|e| e.to_string())
                }) {
                Ok(content) => {
                    served.insert(
                        configuration_id.clone(),
                        Served {
                            version: version.clone(),
                            config_type: kept.config_type,
                            content,
                        },
                    );
                }
                Err(error) => tracing::warn!(
                    configuration_id,
                    version,
                    %error,
                    "active version unreadable: left out of the nginx configuration"
                ),
            }
        }
        let tailer = Tailer::new(settings.access_log.clone());
        Self {
            settings,
            served: tokio::sync::Mutex::new(served),
            log: Arc::new(Mutex::new((tailer, Interval::default()))),
        }
    }

    fn conf_path(&self) -> PathBuf {
        self.settings.render_dir.join(FILE_NAME)
    }

    fn render(&self, served: &BTreeMap<String, Served>) -> Result<Rendered, String> {
        let rules: Vec<ActiveRule<'_>> = served
            .iter()
            .map(|(configuration_id, served)| ActiveRule {
                configuration_id,
                version: &served.version,
                config_type: served.config_type,
                content: &served.content,
            })
            .collect();
        let rendered = render(&rules, &self.settings)
            .map_err(|reason| format!("cannot render for nginx: {reason}"))?;
        for warning in &rendered.warnings {
            tracing::warn!(%warning, "not enforced by nginx");
        }
        Ok(rendered)
    }

    /// Counts of a sample the control plane did not take, for the next one to carry.
    pub(super) fn put_back(&self, sample: MetricsSample) {
        let mut guard = self
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.1.put_back(&sample);
    }

    /// The metrics sample of the interval since the last call: the access log's new lines.
    /// None when nginx logged no request.
    pub(super) async fn sample(&self, interval_seconds: u32) -> Option<MetricsSample> {
        let log = self.log.clone();
        let (sample, bad_lines) = tokio::task::spawn_blocking(move || {
            let mut guard = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let (tailer, interval) = &mut *guard;
            for line in tailer.poll() {
                interval.record(&line);
            }
            let bad_lines = interval.bad_lines;
            (interval.take(interval_seconds), bad_lines)
        })
        .await
        .ok()?;
        if bad_lines > 0 {
            tracing::warn!(
                bad_lines,
                "access log lines not in the edgeplane_json format were skipped"
            );
        }
        sample
    }
}

/// Writes the TLS files and the candidate file. Returns the files that did not exist before,
/// for removal when nginx refuses.
fn write_rendered(conf: &Path, rendered: &Rendered) -> std::io::Result<Vec<PathBuf>> {
    let mut created = Vec::new();
    for file in &rendered.files {
        if !file.path.exists() {
            created.push(file.path.clone());
        }
        write_atomic_mode(&file.path, &file.bytes, file.mode)?;
    }
    write_atomic_mode(conf, rendered.text.as_bytes(), 0o644)?;
    Ok(created)
}

/// Puts the previous file back (or removes the candidate when there was none) and removes the
/// TLS files only the candidate named.
fn restore(conf: &Path, previous: Option<&[u8]>, created: &[PathBuf]) {
    let result = match previous {
        Some(bytes) => write_atomic_mode(conf, bytes, 0o644),
        None => std::fs::remove_file(conf),
    };
    if let Err(error) = result {
        tracing::error!(%error, path = %conf.display(), "could not restore the previous nginx configuration");
    }
    for path in created {
        let _ = std::fs::remove_file(path);
    }
}

/// Removes TLS files the current configuration no longer names.
fn remove_stale_tls_files(tls_dir: &Path, rendered: &Rendered) {
    let Ok(entries) = std::fs::read_dir(tls_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !rendered.files.iter().any(|f| f.path == path) {
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("could not write the nginx configuration: {e}"))
}

impl Agent {
    /// Makes nginx serve `version` (of `config_type`) of a configuration, or nothing of it
    /// when `version` is None. Err is the NACK reason; nginx then serves what it served.
    pub(super) async fn nginx_switch(
        &self,
        nginx: &Nginx,
        configuration_id: &str,
        version: Option<(&str, ConfigType)>,
    ) -> Result<(), String> {
        let mut served = nginx.served.lock().await;
        let mut next = served.clone();
        match version {
            Some((version, config_type)) => {
                let content = self.read_version(configuration_id, version).await?;
                next.insert(
                    configuration_id.to_owned(),
                    Served {
                        version: version.to_owned(),
                        config_type,
                        content,
                    },
                );
            }
            None => {
                next.remove(configuration_id);
            }
        }
        let rendered = nginx.render(&next)?;
        let label = version.map_or("", |(version, _)| version);
        self.nginx_load(nginx, configuration_id, label, &rendered, true)
            .await?;
        *served = next;
        Ok(())
    }

    /// Whether `content` could be served beside what nginx serves now: a staged version is
    /// checked this way, without touching nginx.
    pub(super) async fn nginx_check(
        &self,
        nginx: &Nginx,
        configuration_id: &str,
        version: &str,
        config_type: ConfigType,
        content: &Value,
    ) -> Result<(), String> {
        let mut next = nginx.served.lock().await.clone();
        next.insert(
            configuration_id.to_owned(),
            Served {
                version: version.to_owned(),
                config_type,
                content: content.clone(),
            },
        );
        nginx.render(&next).map(|_| ())
    }

    /// At start-up: the file is rendered from the active versions when it differs (a new
    /// edge, or an agent upgraded), tested and reloaded. nginx may not run yet, so a failed
    /// reload is only logged.
    pub(super) async fn nginx_start(&self, nginx: &Nginx) {
        let served = nginx.served.lock().await;
        let rendered = match nginx.render(&served) {
            Ok(rendered) => rendered,
            Err(error) => {
                tracing::error!(%error, "the active configurations cannot be rendered for nginx");
                return;
            }
        };
        let current = tokio::fs::read(nginx.conf_path()).await.ok();
        if current.as_deref() == Some(rendered.text.as_bytes()) {
            return;
        }
        if let Err(error) = self.nginx_load(nginx, "", "", &rendered, false).await {
            tracing::warn!(%error, "nginx did not load the configuration rendered at start-up");
        }
    }

    /// Writes `rendered`, tests it and reloads nginx. When the test (or a required reload)
    /// fails, the previous file is back in place and the reason carries nginx's output.
    async fn nginx_load(
        &self,
        nginx: &Nginx,
        configuration_id: &str,
        version: &str,
        rendered: &Rendered,
        reload_required: bool,
    ) -> Result<(), String> {
        let conf = nginx.conf_path();
        let previous = tokio::fs::read(&conf).await.ok();
        let created = {
            let (conf, rendered) = (conf.clone(), rendered.clone());
            blocking(move || write_rendered(&conf, &rendered)).await?
        };
        let undo = |previous: Option<Vec<u8>>, created: Vec<PathBuf>| {
            let conf = conf.clone();
            blocking(move || {
                restore(&conf, previous.as_deref(), &created);
                Ok(())
            })
        };
        if let Err(reason) = self
            .run_hook(
                "test",
                self.config.test_command.as_ref(),
                configuration_id,
                version,
            )
            .await
        {
            undo(previous, created).await?;
            return Err(format!(
                "nginx refused the configuration, the previous one stays: {reason}"
            ));
        }
        if let Err(reason) = self
            .run_hook(
                "reload",
                self.config.reload_command.as_ref(),
                configuration_id,
                version,
            )
            .await
        {
            if !reload_required {
                return Err(reason);
            }
            undo(previous, created).await?;
            let again = match self
                .run_hook(
                    "reload",
                    self.config.reload_command.as_ref(),
                    configuration_id,
                    "",
                )
                .await
            {
                Ok(()) => "the previous one was reloaded".to_owned(),
                Err(e) => format!("reloading the previous one failed too: {e}"),
            };
            return Err(format!("{reason}; {again}"));
        }
        let tls_dir = nginx.settings.render_dir.join("tls");
        let rendered = rendered.clone();
        let _ = blocking(move || {
            remove_stale_tls_files(&tls_dir, &rendered);
            Ok(())
        })
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    use serde_json::json;

    use super::*;
    use crate::protocol::{PushMode, PushReply, PushRequest, RollbackRequest};

    /// An agent with the nginx adapter whose "nginx -t" refuses any file holding `REFUSE`.
    fn agent(dir: &Path) -> Agent {
        let render = dir.join("render");
        let text = format!(
            "[agent]\nlocation_id = \"edge\"\nlisten = \"127.0.0.1:0\"\n\
             control_plane = \"http://127.0.0.1:9\"\ntoken = \"t\"\nstate_dir = \"{state}\"\n\
             adapter = \"nginx\"\nrender_dir = \"{render}\"\n\
             test_command = \"if grep -q REFUSE '{render}/edgeplane.conf'; then echo 'nginx: [emerg] refused here' >&2; exit 1; fi\"\n\
             reload_command = \"echo reload >> '{reloads}'\"\n",
            state = dir.join("state").display(),
            render = render.display(),
            reloads = dir.join("reloads").display(),
        );
        let config = AgentConfig::from_toml(&text).unwrap();
        Agent::open(config).unwrap()
    }

    fn push(version: &str, config_type: ConfigType, content: Value, mode: PushMode) -> PushRequest {
        let mut request = PushRequest::apply(version, config_type, content, BTreeMap::new());
        request.mode = mode;
        request
    }

    fn headers(value: &str) -> Value {
        json!({"pathPattern": "/*", "addHeaders": {"X-Value": value}})
    }

    fn rendered(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("render").join(FILE_NAME)).unwrap()
    }

    fn reloads(dir: &Path) -> usize {
        std::fs::read_to_string(dir.join("reloads"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn a_refused_file_is_put_back_and_a_staged_version_waits_for_activation() {
        let dir = tempfile::tempdir().unwrap();
        let agent = agent(dir.path());
        let id = "config-h";
        let apply = |v: &str, value: &str| {
            push(
                v,
                ConfigType::ResponseModification,
                headers(value),
                PushMode::Apply,
            )
        };

        let reply = agent.handle_push(id, apply("1.0.0", "first")).await;
        assert_eq!(
            reply,
            PushReply::Acked {
                version: "1.0.0".into()
            }
        );
        let first = rendered(dir.path());
        assert!(first.contains("\"first\""), "{first}");
        let mode = std::fs::metadata(dir.path().join("render").join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        assert_eq!(reloads(dir.path()), 1);

        // nginx's test refuses: NACK with its words, the previous file back, no reload.
        let PushReply::Nacked { reason } = agent.handle_push(id, apply("1.1.0", "REFUSE")).await
        else {
            panic!("a refused file must be NACKed");
        };
        assert!(reason.contains("nginx: [emerg] refused here"), "{reason}");
        assert_eq!(rendered(dir.path()), first);
        assert_eq!(reloads(dir.path()), 1);
        assert_eq!(agent.active_list().versions()[id], "1.0.0");

        // What nginx cannot do is refused before nginx sees anything.
        let waf = push(
            "1.0.0",
            ConfigType::SecurityRule,
            json!({"waf": {"enabled": true, "rules": ["OWASP-CRS-3.3"]}}),
            PushMode::Apply,
        );
        let PushReply::Nacked { reason } = agent.handle_push("config-w", waf).await else {
            panic!("an unenforceable WAF must be NACKed");
        };
        assert!(reason.contains("no WAF module"), "{reason}");
        assert_eq!(rendered(dir.path()), first);

        // Staged: checked, not rendered; activated: rendered and reloaded.
        let staged = push(
            "1.2.0",
            ConfigType::ResponseModification,
            headers("staged"),
            PushMode::Stage,
        );
        assert_eq!(
            agent.handle_push(id, staged.clone()).await,
            PushReply::Acked {
                version: "1.2.0".into()
            }
        );
        assert_eq!(rendered(dir.path()), first);
        let activate = PushRequest {
            content: Value::Null,
            checksum: String::new(),
            mode: PushMode::Activate,
            ..staged
        };
        assert_eq!(
            agent.handle_push(id, activate).await,
            PushReply::Acked {
                version: "1.2.0".into()
            }
        );
        assert!(rendered(dir.path()).contains("\"staged\""));
        assert!(rendered(dir.path()).contains(&format!("{id}=1.2.0")));
        assert_eq!(reloads(dir.path()), 2);

        // A rollback renders the earlier version again.
        assert_eq!(
            agent.handle_rollback(id, RollbackRequest::default()).await,
            PushReply::Acked {
                version: "1.0.0".into()
            }
        );
        assert_eq!(rendered(dir.path()), first);

        // A restarted agent serves what is active: the file it finds is left as it is.
        drop(agent);
        let agent = self::agent(dir.path());
        let nginx = agent.nginx.as_ref().unwrap();
        agent.nginx_start(nginx).await;
        assert_eq!(reloads(dir.path()), 3);
        std::fs::remove_file(dir.path().join("render").join(FILE_NAME)).unwrap();
        agent.nginx_start(nginx).await;
        assert_eq!(
            rendered(dir.path()),
            first,
            "a missing file is rendered again"
        );
    }

    #[tokio::test]
    async fn certificates_and_keys_are_written_beside_the_file_and_removed_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let agent = agent(dir.path());
        let certificate = json!({
            "domains": ["www.example.com"],
            "certificate": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            "privateKey": "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n",
        });
        let request = push(
            "1.0.0",
            ConfigType::SslCertificate,
            certificate,
            PushMode::Apply,
        );
        assert_eq!(
            agent.handle_push("config-tls", request).await,
            PushReply::Acked {
                version: "1.0.0".into()
            }
        );
        let tls = dir.path().join("render/tls");
        let key = tls.join("config_tls-1.0.0.key");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            std::fs::read_to_string(tls.join("config_tls-1.0.0.crt"))
                .unwrap()
                .contains("MIIB")
        );
        assert!(rendered(dir.path()).contains("ssl_certificate_key"));

        // With nothing earlier to return to, the certificate leaves nginx and the disk.
        let request = RollbackRequest {
            to_version: None,
            deactivate_if_none: true,
        };
        assert_eq!(
            agent.handle_rollback("config-tls", request).await,
            PushReply::Acked {
                version: String::new()
            }
        );
        assert!(!rendered(dir.path()).contains("ssl_certificate_key"));
        assert!(!key.exists());
    }
}
