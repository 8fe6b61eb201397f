//! The `[agent]` table of an edge agent's TOML file: every key, its default, and an error
//! that names the key when a value is refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::protocol::is_safe_name;
use crate::protocol::tls::ListenerTls;

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
    /// PEM bundle of the CAs trusted for an https control plane (none: the system store).
    pub ca_file: Option<PathBuf>,
    /// `tls_cert`, `tls_key`, `tls_client_ca`: the agent's listener over HTTPS; with a
    /// client CA, only clients with a certificate it signed complete the handshake.
    pub tls: Option<ListenerTls>,
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
    /// A TLS file that cannot be used; the message names its key.
    #[error("{0}")]
    Tls(String),
}

const KEYS: [&str; 15] = [
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
    "tls_cert",
    "tls_key",
    "tls_client_ca",
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
        let tls_cert = optional_string(table, "tls_cert")?;
        let tls_key = optional_string(table, "tls_key")?;
        let tls_client_ca = optional_string(table, "tls_client_ca")?;
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => {
                let tls = ListenerTls {
                    section: "agent",
                    cert: cert.into(),
                    key: key.into(),
                    client_ca: tls_client_ca.map(PathBuf::from),
                    require_client_cert: true,
                };
                // The files are read now so that a bad one stops start-up naming its key.
                tls.server_config().map_err(AgentConfigError::Tls)?;
                Some(tls)
            }
            (Some(_), None) => return Err(invalid("agent.tls_key", "required with tls_cert")),
            (None, Some(_)) => return Err(invalid("agent.tls_cert", "required with tls_key")),
            (None, None) if tls_client_ca.is_some() => {
                return Err(invalid("agent.tls_client_ca", "needs tls_cert and tls_key"));
            }
            (None, None) => None,
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
            tls,
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
        Some(text) => match crate::model::parse_duration(&text) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(invalid(&format!("agent.{key}"), "must be above zero")),
            Err(e) => Err(invalid(&format!("agent.{key}"), &e.to_string())),
        },
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
        check_error("tls_cert = \"/nonexistent/cert.pem\"\n", "agent.tls_key");
        check_error(
            "tls_cert = \"/nonexistent/cert.pem\"\ntls_key = \"/nonexistent/key.pem\"\n",
            "agent.tls_cert: cannot read",
        );
    }
}
