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
    /// Base URL of the control plane, without `/api/v1`: the first of `control_plane`'s
    /// URLs when it lists one per node.
    pub control_plane: String,
    /// The other nodes' base URLs when `control_plane` lists several (a primary and its
    /// standby): heartbeats go to whichever is primary.
    pub other_control_planes: Vec<String>,
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
    /// `adapter = "nginx"`: the agent renders the active configurations for nginx and reads
    /// its access log for metrics. None: the `files` adapter (JSON files and the commands).
    pub nginx: Option<NginxSettings>,
}

/// The nginx adapter's keys (SPEC §6.1).
#[derive(Clone, Debug, PartialEq)]
pub struct NginxSettings {
    /// Where `edgeplane.conf` (and `tls/`) is written; default `{state_dir}/nginx`.
    pub render_dir: PathBuf,
    /// `nginx_listen`: the address nginx serves on (`0.0.0.0:80` by default).
    pub listen: String,
    /// `nginx_tls_listen`: the address of the TLS server of SSLCertificate configurations;
    /// by default the host of `nginx_listen` on port 443.
    pub tls_listen: String,
    /// `nginx_cache_dir`, default `{render_dir}/cache`.
    pub cache_dir: PathBuf,
    /// `nginx_cache_size`: nginx's `max_size` (`512m`, `10g`), default `1g`.
    pub cache_size: String,
    /// `nginx_access_log`: the JSON access log nginx writes and the agent reads, default
    /// `{render_dir}/access.log`.
    pub access_log: PathBuf,
    /// `nginx_geoip_variable`: the variable holding the client's country code (from a GeoIP
    /// module), without `$`. Without it, geo blocking is not enforced (a warning).
    pub geoip_variable: Option<String>,
    /// `nginx_binary`, default `nginx`.
    pub binary: String,
    /// `nginx_conf`: the operator's main nginx.conf, default `/etc/nginx/nginx.conf`.
    pub conf: PathBuf,
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

const KEYS: [&str; 25] = [
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
    "adapter",
    "render_dir",
    "nginx_listen",
    "nginx_tls_listen",
    "nginx_cache_dir",
    "nginx_cache_size",
    "nginx_access_log",
    "nginx_geoip_variable",
    "nginx_binary",
    "nginx_conf",
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
        let mut control_planes = control_plane_urls(table)?.into_iter();
        let control_plane = control_planes
            .next()
            .ok_or_else(|| AgentConfigError::Missing {
                key: "agent.control_plane".into(),
            })?;
        let other_control_planes: Vec<String> = control_planes.collect();
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
        let nginx = match optional_string(table, "adapter")?.as_deref() {
            None | Some("files") => {
                if let Some(key) = NGINX_KEYS.iter().find(|k| table.contains_key(**k)) {
                    return Err(invalid(
                        &format!("agent.{key}"),
                        "only with adapter = \"nginx\"",
                    ));
                }
                None
            }
            Some("nginx") => {
                if table.contains_key("metrics_file") {
                    return Err(invalid(
                        "agent.metrics_file",
                        "not with adapter = \"nginx\": metrics come from nginx_access_log",
                    ));
                }
                Some(nginx_settings(table, &state_dir)?)
            }
            Some(_) => return Err(invalid("agent.adapter", "\"files\" or \"nginx\"")),
        };
        let mut test_command = optional_string(table, "test_command")?;
        let mut reload_command = optional_string(table, "reload_command")?;
        if let Some(nginx) = &nginx {
            let binary = shell_quote(&nginx.binary);
            let conf = shell_quote(&nginx.conf.to_string_lossy());
            test_command.get_or_insert_with(|| format!("{binary} -t -c {conf}"));
            reload_command.get_or_insert_with(|| format!("{binary} -s reload -c {conf}"));
        }
        Ok(Self {
            location_id,
            listen,
            control_plane,
            other_control_planes,
            token,
            state_dir,
            test_command,
            reload_command,
            heartbeat_interval: duration(table, "heartbeat_interval", Duration::from_secs(10))?,
            keep_versions,
            command_timeout: duration(table, "command_timeout", Duration::from_secs(30))?,
            metrics_file: optional_string(table, "metrics_file")?.map(PathBuf::from),
            ca_file: optional_string(table, "ca_file")?.map(PathBuf::from),
            tls,
            nginx,
        })
    }
}

const NGINX_KEYS: [&str; 9] = [
    "render_dir",
    "nginx_listen",
    "nginx_tls_listen",
    "nginx_cache_dir",
    "nginx_cache_size",
    "nginx_access_log",
    "nginx_geoip_variable",
    "nginx_binary",
    "nginx_conf",
];

/// An nginx `listen` address: `host:port` or a bare port.
fn nginx_address(
    table: &toml::Table,
    key: &str,
    default: &str,
) -> Result<String, AgentConfigError> {
    let text = optional_string(table, key)?.unwrap_or_else(|| default.to_owned());
    if let Ok(port) = text.parse::<u16>()
        && port > 0
    {
        return Ok(port.to_string());
    }
    match text.parse::<SocketAddr>() {
        Ok(address) if address.port() > 0 => Ok(address.to_string()),
        _ => Err(invalid(
            &format!("agent.{key}"),
            "host:port (an IP address) or a port",
        )),
    }
}

/// A path nginx reads from the rendered file: UTF-8, absolute, no `$` (nginx would read a
/// variable) and no control characters.
fn nginx_path(
    table: &toml::Table,
    key: &str,
    default: PathBuf,
) -> Result<PathBuf, AgentConfigError> {
    let path = optional_string(table, key)?.map_or(default, PathBuf::from);
    let text = path.to_string_lossy();
    if !path.is_absolute() || text.contains('$') || text.chars().any(char::is_control) {
        return Err(invalid(
            &format!("agent.{key}"),
            "an absolute path without '$' or control characters",
        ));
    }
    Ok(path)
}

fn nginx_settings(
    table: &toml::Table,
    state_dir: &Path,
) -> Result<NginxSettings, AgentConfigError> {
    let state_dir = if state_dir.is_absolute() {
        state_dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| invalid("agent.state_dir", &e.to_string()))?
            .join(state_dir)
    };
    let render_dir = nginx_path(table, "render_dir", state_dir.join("nginx"))?;
    let listen = nginx_address(table, "nginx_listen", "0.0.0.0:80")?;
    let tls_default = match listen.parse::<SocketAddr>() {
        Ok(address) => SocketAddr::new(address.ip(), 443).to_string(),
        Err(_) => "443".to_owned(),
    };
    let tls_listen = nginx_address(table, "nginx_tls_listen", &tls_default)?;
    let cache_dir = nginx_path(table, "nginx_cache_dir", render_dir.join("cache"))?;
    let access_log = nginx_path(table, "nginx_access_log", render_dir.join("access.log"))?;
    let cache_size = optional_string(table, "nginx_cache_size")?.unwrap_or_else(|| "1g".into());
    let digits = cache_size.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G']);
    if digits.is_empty()
        || cache_size.len() - digits.len() > 1
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(invalid(
            "agent.nginx_cache_size",
            "a size such as 512m or 10g",
        ));
    }
    let geoip_variable = match optional_string(table, "nginx_geoip_variable")? {
        None => None,
        Some(name) => {
            let name = name.strip_prefix('$').unwrap_or(&name).to_owned();
            let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(invalid(
                    "agent.nginx_geoip_variable",
                    "an nginx variable name",
                ));
            }
            Some(name)
        }
    };
    let binary = optional_string(table, "nginx_binary")?.unwrap_or_else(|| "nginx".into());
    if binary.trim().is_empty() {
        return Err(invalid("agent.nginx_binary", "must not be empty"));
    }
    let conf = nginx_path(table, "nginx_conf", PathBuf::from("/etc/nginx/nginx.conf"))?;
    Ok(NginxSettings {
        render_dir,
        listen,
        tls_listen,
        cache_dir,
        cache_size,
        access_log,
        geoip_variable,
        binary,
        conf,
    })
}

/// `text` as one `sh` word.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// `control_plane`: one URL, a comma-separated list of them, or an array of them (one per
/// control-plane node), each an http(s) URL, returned without trailing `/`, duplicates
/// dropped.
fn control_plane_urls(table: &toml::Table) -> Result<Vec<String>, AgentConfigError> {
    const KEY: &str = "agent.control_plane";
    let entries: Vec<String> = match table.get("control_plane") {
        None => return Err(AgentConfigError::Missing { key: KEY.into() }),
        Some(toml::Value::String(text)) => text.split(',').map(str::to_owned).collect(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                toml::Value::String(text) => Ok(text.clone()),
                _ => Err(invalid(KEY, "every entry must be a string")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid(KEY, "a URL or a list of URLs")),
    };
    let urls = crate::protocol::term::control_plane_urls(entries.iter().map(String::as_str))
        .map_err(|reason| invalid(KEY, &reason))?;
    Ok(urls)
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
        assert!(config.other_control_planes.is_empty());
        assert_eq!(config.test_command, None);
    }

    #[test]
    fn control_plane_takes_one_url_per_node() {
        let with = |value: &str| {
            AgentConfig::from_toml(&MINIMAL.replace(
                "control_plane = \"http://127.0.0.1:8080/\"",
                &format!("control_plane = {value}"),
            ))
        };
        let config = with("[\"http://10.0.0.1:8080/\", \"https://cp-b.example.net\"]").unwrap();
        assert_eq!(config.control_plane, "http://10.0.0.1:8080");
        assert_eq!(config.other_control_planes, ["https://cp-b.example.net"]);
        let config = with("\"http://10.0.0.1:8080, http://10.0.0.2:8080,\"").unwrap();
        assert_eq!(config.control_plane, "http://10.0.0.1:8080");
        assert_eq!(config.other_control_planes, ["http://10.0.0.2:8080"]);
        let config = with("[\"http://a:1\", \"http://a:1/\"]").unwrap();
        assert!(config.other_control_planes.is_empty(), "duplicates dropped");

        for bad in [
            "[]",
            "\"\"",
            "\" , \"",
            "[\"http://a:1\", 3]",
            "[\"http://a:1\", \"cp-b:8080\"]",
            "\"http://a:1,ftp://b\"",
            "7",
        ] {
            let error = with(bad).unwrap_err().to_string();
            assert!(error.contains("agent.control_plane"), "{bad}: {error}");
        }
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

    #[test]
    fn the_nginx_adapter_has_defaults_and_names_its_keys() {
        let files = AgentConfig::from_toml(MINIMAL).unwrap();
        assert_eq!(files.nginx, None);
        let config = AgentConfig::from_toml(&format!("{MINIMAL}adapter = \"nginx\"\n")).unwrap();
        let nginx = config.nginx.unwrap();
        assert_eq!(nginx.render_dir, PathBuf::from("/tmp/edge/nginx"));
        assert_eq!(nginx.listen, "0.0.0.0:80");
        assert_eq!(nginx.tls_listen, "0.0.0.0:443");
        assert_eq!(nginx.cache_dir, PathBuf::from("/tmp/edge/nginx/cache"));
        assert_eq!(
            nginx.access_log,
            PathBuf::from("/tmp/edge/nginx/access.log")
        );
        assert_eq!(nginx.cache_size, "1g");
        assert_eq!(nginx.geoip_variable, None);
        assert_eq!(
            config.test_command.as_deref(),
            Some("'nginx' -t -c '/etc/nginx/nginx.conf'")
        );
        assert_eq!(
            config.reload_command.as_deref(),
            Some("'nginx' -s reload -c '/etc/nginx/nginx.conf'")
        );

        let config = AgentConfig::from_toml(&format!(
            "{MINIMAL}adapter = \"nginx\"\nnginx_listen = \"127.0.0.1:8081\"\nnginx_binary = \"/opt/it's/nginx\"\nnginx_geoip_variable = \"$geoip2_country\"\ntest_command = \"true\"\n"
        ))
        .unwrap();
        let nginx = config.nginx.unwrap();
        assert_eq!(nginx.listen, "127.0.0.1:8081");
        assert_eq!(nginx.tls_listen, "127.0.0.1:443");
        assert_eq!(nginx.geoip_variable.as_deref(), Some("geoip2_country"));
        assert_eq!(config.test_command.as_deref(), Some("true"));
        assert_eq!(
            config.reload_command.as_deref(),
            Some("'/opt/it'\\''s/nginx' -s reload -c '/etc/nginx/nginx.conf'")
        );

        let nginx = |extra: &str| format!("adapter = \"nginx\"\n{extra}");
        check_error("adapter = \"apache\"\n", "agent.adapter");
        check_error("nginx_listen = \"127.0.0.1:80\"\n", "agent.nginx_listen");
        check_error(
            &nginx("nginx_listen = \"localhost:80\"\n"),
            "agent.nginx_listen",
        );
        check_error(
            &nginx("nginx_cache_size = \"1 g\"\n"),
            "agent.nginx_cache_size",
        );
        check_error(
            &nginx("nginx_cache_size = \"10gg\"\n"),
            "agent.nginx_cache_size",
        );
        check_error(
            &nginx("nginx_access_log = \"/var/log/$host\"\n"),
            "agent.nginx_access_log",
        );
        check_error(&nginx("render_dir = \"relative\"\n"), "agent.render_dir");
        check_error(
            &nginx("nginx_geoip_variable = \"a-b\"\n"),
            "agent.nginx_geoip_variable",
        );
        check_error(&nginx("nginx_binary = \" \"\n"), "agent.nginx_binary");
        check_error(
            &nginx("metrics_file = \"/tmp/m.json\"\n"),
            "agent.metrics_file",
        );
    }

    #[test]
    fn the_example_nginx_agent_file_is_valid() {
        // Its TLS files exist only on an edge; everything else is checked as written.
        let example: String = include_str!("../../../config/nginx/agent.toml")
            .lines()
            .filter(|line| !line.starts_with("tls_"))
            .map(|line| format!("{line}\n"))
            .collect();
        let config = AgentConfig::from_toml(&example).unwrap();
        let nginx = config.nginx.unwrap();
        assert_eq!(nginx.listen, "0.0.0.0:80");
        assert_eq!(nginx.cache_dir, PathBuf::from("/var/cache/nginx/edgeplane"));
        assert_eq!(
            config.reload_command.as_deref(),
            Some("'/usr/sbin/nginx' -s reload -c '/etc/nginx/nginx.conf'")
        );
    }
}
