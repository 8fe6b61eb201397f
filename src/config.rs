//! Settings: defaults, then a TOML file, then `EDGEPLANE_<SECTION>_<KEY>` environment
//! variables, then command-line flags (SPEC §1).
//!
//! Every key is known: an unknown or mistyped key stops start-up with a one-line reason that
//! names it, so a typo never starts a half-configured server. An `EDGEPLANE_*` variable that
//! names no settings section belongs to another command (`EDGEPLANE_URL`, `EDGEPLANE_TOKEN`,
//! `EDGEPLANE_SIMULATE_TOKEN`, ...): it is reported in [`Settings::warnings`], never refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    crate::model::parse_duration(&text).map_err(serde::de::Error::custom)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub log: LogSettings,
    pub auth: AuthSettings,
    pub secrets: SecretSettings,
    pub limits: LimitSettings,
    pub edges: EdgeSettings,
    pub rollout: RolloutSettings,
    pub alerts: AlertSettings,
    pub store: StoreSettings,
    pub metrics: MetricsSettings,
    pub cluster: ClusterSettings,
    /// What loading noticed but did not refuse, for the log once it is set up.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Lets the author of a version approve it (demo only; four-eyes otherwise).
    pub allow_self_approval: bool,
    /// Largest accepted request body; a configuration's content is at most 1 MiB.
    pub max_body_bytes: usize,
    /// When set, `/metrics` answers only `Authorization: Bearer <this>` (Prometheus'
    /// `authorization` setting); unset, it is open like `/health`.
    pub metrics_token: Option<String>,
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// PEM certificate chain: with `tls_key`, the API is served over HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM bundle of CAs whose client certificates are accepted; edges must present one.
    pub tls_client_ca: Option<PathBuf>,
    /// Connections held at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// An HTTP/1 connection that has not sent a whole request head within this (the first
    /// request or the next one on a kept-alive connection) is closed; so is a TLS handshake.
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// A connection with no bytes in either direction for this long is closed.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// Event streams (`GET /deployments/{id}/events`) open at once, in all.
    pub max_event_streams: usize,
    /// Event streams open at once per user (or edge).
    pub max_event_streams_per_user: usize,
}

impl ServerSettings {
    /// The listener's TLS files; None for plain HTTP. Err names the key that is missing.
    pub fn tls(&self) -> Result<Option<crate::protocol::tls::ListenerTls>, ConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(crate::protocol::tls::ListenerTls {
                section: "server",
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
                require_client_cert: false,
            })),
            (Some(_), None) => Err(ConfigError::Invalid(
                "server.tls_key: required with server.tls_cert".into(),
            )),
            (None, Some(_)) => Err(ConfigError::Invalid(
                "server.tls_cert: required with server.tls_key".into(),
            )),
            (None, None) if self.tls_client_ca.is_some() => Err(ConfigError::Invalid(
                "server.tls_client_ca: needs server.tls_cert and server.tls_key".into(),
            )),
            (None, None) => Ok(None),
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./edgeplane-data"),
            allow_self_approval: false,
            max_body_bytes: 2 * 1024 * 1024,
            metrics_token: None,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(20),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_event_streams: 1024,
            max_event_streams_per_user: 16,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `edgeplane=debug,tower_http=info`.
    pub level: String,
    /// Also write daily-rotated log files into this directory.
    pub directory: Option<PathBuf>,
    /// OTLP/HTTP collector base URL (`/v1/traces` is appended); no traces leave the process
    /// without it.
    pub otlp_endpoint: Option<String>,
    /// Share of new traces kept (0 to 1); a trace a caller started follows the caller's choice.
    pub trace_sample_ratio: f64,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
            directory: None,
            otlp_endpoint: None,
            trace_sample_ratio: 1.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// HS256 signing secret (base64, at least 32 bytes). Empty: one is generated on first
    /// start and kept in the store, so every node of the cluster shares it.
    pub jwt_secret: String,
    /// Lifetime of the tokens that login gives.
    #[serde(deserialize_with = "duration")]
    pub token_ttl: Duration,
    /// Longest lifetime of any user token, from login or `edgeplane token --ttl`.
    #[serde(deserialize_with = "duration")]
    pub max_token_ttl: Duration,
    /// Lifetime of edge agent tokens; renewed by rotation (`POST /edge-locations/{id}/token`).
    #[serde(deserialize_with = "duration")]
    pub edge_token_ttl: Duration,
    pub issuer: String,
    pub audience: String,
    /// Password hashes (Argon2id, 19 MiB each) computed at once; logins beyond wait.
    pub max_concurrent_hashes: usize,
    /// How long a login waits for a hashing slot before it is answered 429.
    #[serde(deserialize_with = "duration")]
    pub hash_queue_timeout: Duration,
    /// Logins per username per hour from all addresses together (`limits.login_attempts_per_minute`
    /// is per username and address).
    pub login_attempts_per_user_per_hour: u32,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: String::new(),
            token_ttl: Duration::from_secs(3600),
            max_token_ttl: Duration::from_secs(30 * 24 * 3600),
            edge_token_ttl: Duration::from_secs(365 * 24 * 3600),
            issuer: "edgeplane".into(),
            audience: "edgeplane-api".into(),
            max_concurrent_hashes: 2,
            hash_queue_timeout: Duration::from_secs(5),
            login_attempts_per_user_per_hour:
                crate::auth::ratelimit::DEFAULT_LOGIN_ATTEMPTS_PER_USER_PER_HOUR,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretSettings {
    /// AES-256-GCM key (base64 of 32 bytes) sealing TLS private keys and edge tokens at rest.
    /// Empty: read from, or generated once into, `DATA_DIR/secret.key` (mode 0600).
    pub encryption_key: String,
}

/// Per-subject request budgets (SPEC §5).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    pub writes_per_minute: u32,
    pub reads_per_minute: u32,
    pub validate_per_minute: u32,
    pub deployment_actions_per_minute: u32,
    pub metrics_reads_per_minute: u32,
    pub heartbeats_per_second: u32,
    /// Unauthenticated requests per client address (health, readiness, Prometheus).
    pub public_per_minute: u32,
    /// Login attempts per username (four times as many per client address).
    pub login_attempts_per_minute: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            writes_per_minute: 20,
            reads_per_minute: 60,
            validate_per_minute: 100,
            deployment_actions_per_minute: 30,
            metrics_reads_per_minute: 120,
            heartbeats_per_second: 5,
            public_per_minute: 600,
            login_attempts_per_minute: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeSettings {
    /// An edge whose last heartbeat is older than this is unhealthy.
    #[serde(deserialize_with = "duration")]
    pub healthy_within: Duration,
    #[serde(deserialize_with = "duration")]
    pub push_timeout: Duration,
    pub push_retries: u32,
    pub push_concurrency: usize,
    /// PEM bundle of CAs trusted for https edge endpoints (none: only the built-in set).
    pub ca_file: Option<PathBuf>,
    /// PEM certificate presented to edges that ask for one (with `client_key`).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// How often edges' reported versions are compared with what they should run.
    #[serde(deserialize_with = "duration")]
    pub reconcile_interval: Duration,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            healthy_within: Duration::from_secs(120),
            push_timeout: Duration::from_secs(5),
            push_retries: 2,
            push_concurrency: 256,
            ca_file: None,
            client_cert: None,
            client_key: None,
            reconcile_interval: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutSettings {
    /// Deployments running at once (at most one per configuration).
    pub max_concurrent_deployments: usize,
    /// A pushing or rolling-back phase older than this raises an alert.
    #[serde(deserialize_with = "duration")]
    pub stuck_after: Duration,
    /// NACKs of the same version after which an edge is quarantined.
    pub quarantine_after: u32,
    /// How often a watch period is analysed.
    #[serde(deserialize_with = "duration")]
    pub analysis_interval: Duration,
    /// Pushes (and rollbacks) per edge before it counts as failed in a wave.
    pub max_push_attempts: u32,
}

impl Default for RolloutSettings {
    fn default() -> Self {
        Self {
            max_concurrent_deployments: 50,
            stuck_after: Duration::from_secs(30 * 60),
            quarantine_after: 3,
            analysis_interval: Duration::from_secs(10),
            max_push_attempts: 3,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    /// URLs that receive every alert as a JSON POST (Slack-compatible `text` included).
    pub webhooks: Vec<String>,
    /// Per delivery attempt, connection included.
    #[serde(deserialize_with = "duration")]
    pub webhook_timeout: Duration,
    /// Attempts per alert and webhook, with exponential backoff between them.
    pub webhook_attempts: u32,
    /// PEM bundle of CAs trusted for https webhooks (none: the system's).
    pub ca_file: Option<PathBuf>,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            webhooks: Vec::new(),
            webhook_timeout: Duration::from_secs(5),
            webhook_attempts: 5,
            ca_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// Free space on the data directory's filesystem below which heartbeats' metric samples
    /// are no longer stored, so configuration and deployment writes still fit. `0`: none.
    #[serde(deserialize_with = "byte_size")]
    pub free_space_reserve: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            free_space_reserve: 256 * 1024 * 1024,
        }
    }
}

/// Which part a node plays in its cluster when it starts (SPEC §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterRole {
    Primary,
    Standby,
}

/// Replication to a standby (SPEC §9).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// This node's id. Empty: a stable one generated into the data dir on first start.
    pub node_id: String,
    /// The role at first start; once a promotion is in the log, the log decides.
    pub role: ClusterRole,
    /// Base URLs of the other nodes; a standby follows the one that is primary.
    pub peers: Vec<String>,
    /// How peers and clients reach this node (named in `NOT_LEADER` answers).
    pub advertise_url: String,
    /// Shared secret the nodes authenticate each other with; required with `peers`.
    pub secret: String,
    /// Acknowledge a write only once the standby holds it durably.
    pub sync_replication: bool,
    /// How long a write waits for the standby before the primary goes on alone.
    #[serde(deserialize_with = "duration")]
    pub sync_timeout: Duration,
    /// PEM bundle of CAs trusted for https peers (none: the system's).
    pub ca_file: Option<PathBuf>,
    /// Log entries kept for a standby that has not applied them; beyond this the oldest are
    /// dropped and that standby installs a snapshot.
    pub max_log_entries: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            role: ClusterRole::Primary,
            peers: Vec::new(),
            advertise_url: String::new(),
            secret: String::new(),
            sync_replication: false,
            sync_timeout: Duration::from_secs(2),
            ca_file: None,
            max_log_entries: 100_000,
        }
    }
}

/// A size: a number of bytes, or a string such as `"256MiB"`, `"1 GiB"`, `"500MB"`.
fn byte_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Bytes(n) => Ok(n),
        Size::Text(text) => parse_byte_size(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "'{text}' is not a size (a number of bytes, or e.g. 256MiB, 1GiB, 500MB)"
            ))
        }),
    }
}

fn parse_byte_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// What the Prometheus endpoint exports about edge traffic.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Also export edge traffic per edge (`edgeplane_edge_*{location}`, about 23 series an
    /// edge). Traffic by region (`edgeplane_region_*`) is always exported.
    pub per_edge_series: bool,
}

impl ClusterSettings {
    fn check(&self) -> Result<(), ConfigError> {
        for (i, url) in self.peers.iter().enumerate() {
            if !is_http_url(url) {
                return Err(ConfigError::Invalid(format!(
                    "cluster.peers[{i}]: '{url}' is not an http(s) URL"
                )));
            }
        }
        if !self.advertise_url.is_empty() && !is_http_url(&self.advertise_url) {
            return Err(ConfigError::Invalid(format!(
                "cluster.advertise_url: '{}' is not an http(s) URL",
                self.advertise_url
            )));
        }
        if !self.peers.is_empty() && self.secret.len() < 16 {
            return Err(ConfigError::Invalid(
                "cluster.secret: required with cluster.peers (16 characters or more)".into(),
            ));
        }
        if self.role == ClusterRole::Standby && self.peers.is_empty() {
            return Err(ConfigError::Invalid(
                "cluster.peers: a standby needs the primary's URL".into(),
            ));
        }
        if self.node_id.len() > 64
            || !self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(ConfigError::Invalid(
                "cluster.node_id: at most 64 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        if self.sync_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "cluster.sync_timeout: must be more than 0".into(),
            ));
        }
        if self.max_log_entries == 0 {
            return Err(ConfigError::Invalid(
                "cluster.max_log_entries: must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

fn is_http_url(url: &str) -> bool {
    reqwest::Url::parse(url)
        .map(|u| matches!(u.scheme(), "http" | "https"))
        .unwrap_or(false)
}

/// Command-line values that beat the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
}

impl Settings {
    /// Loads settings: defaults, then `file`, then the environment, then `overrides`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Settings, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                text.parse::<toml::Table>().map_err(|e| {
                    ConfigError::Invalid(format!("{}: {}", path.display(), e.message().trim()))
                })?
            }
            None => toml::Table::new(),
        };
        let warnings = apply_env(&mut table, env)?;
        let mut settings = deserialize_named(table)?;
        settings.warnings = warnings;
        if let Some(dir) = &overrides.data_dir {
            settings.server.data_dir = dir.clone();
        }
        if let Some(listen) = overrides.listen {
            settings.server.listen = listen;
        }
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        for (key, value) in [
            ("limits.writes_per_minute", limits.writes_per_minute),
            ("limits.reads_per_minute", limits.reads_per_minute),
            ("limits.validate_per_minute", limits.validate_per_minute),
            (
                "limits.deployment_actions_per_minute",
                limits.deployment_actions_per_minute,
            ),
            (
                "limits.metrics_reads_per_minute",
                limits.metrics_reads_per_minute,
            ),
            ("limits.heartbeats_per_second", limits.heartbeats_per_second),
            ("limits.public_per_minute", limits.public_per_minute),
            (
                "limits.login_attempts_per_minute",
                limits.login_attempts_per_minute,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{key}: must be at least 1")));
            }
        }
        if !(0.0..=1.0).contains(&self.log.trace_sample_ratio) {
            return Err(ConfigError::Invalid(
                "log.trace_sample_ratio: must be between 0 and 1".into(),
            ));
        }
        if let Some(endpoint) = &self.log.otlp_endpoint {
            let ok = reqwest::Url::parse(endpoint)
                .map(|u| matches!(u.scheme(), "http" | "https"))
                .unwrap_or(false);
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "log.otlp_endpoint: '{endpoint}' is not an http(s) URL"
                )));
            }
        }
        let auth = &self.auth;
        if auth.token_ttl.is_zero() || auth.token_ttl > auth.max_token_ttl {
            return Err(ConfigError::Invalid(format!(
                "auth.token_ttl: must be more than 0 and at most auth.max_token_ttl ({})",
                humantime::format_duration(auth.max_token_ttl)
            )));
        }
        if auth.edge_token_ttl < Duration::from_secs(24 * 3600) {
            return Err(ConfigError::Invalid(
                "auth.edge_token_ttl: must be at least 1d".into(),
            ));
        }
        for (key, value) in [
            ("auth.max_concurrent_hashes", auth.max_concurrent_hashes),
            (
                "auth.login_attempts_per_user_per_hour",
                auth.login_attempts_per_user_per_hour as usize,
            ),
            ("server.max_connections", self.server.max_connections),
            ("server.max_event_streams", self.server.max_event_streams),
            (
                "server.max_event_streams_per_user",
                self.server.max_event_streams_per_user,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{key}: must be at least 1")));
            }
        }
        for (key, value) in [
            (
                "server.header_read_timeout",
                self.server.header_read_timeout,
            ),
            ("server.idle_timeout", self.server.idle_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Invalid(format!("{key}: must be more than 0")));
            }
        }
        if self.server.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "server.max_body_bytes: must be at least 1024".into(),
            ));
        }
        for (i, url) in self.alerts.webhooks.iter().enumerate() {
            let ok = reqwest::Url::parse(url)
                .map(|u| matches!(u.scheme(), "http" | "https"))
                .unwrap_or(false);
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "alerts.webhooks[{i}]: '{url}' is not an http(s) URL"
                )));
            }
        }
        if self.rollout.max_concurrent_deployments == 0 {
            return Err(ConfigError::Invalid(
                "rollout.max_concurrent_deployments: must be at least 1".into(),
            ));
        }
        if self.rollout.max_push_attempts == 0 {
            return Err(ConfigError::Invalid(
                "rollout.max_push_attempts: must be at least 1".into(),
            ));
        }
        if let Some(tls) = self.server.tls()? {
            tls.server_config().map_err(ConfigError::Invalid)?;
        }
        match (&self.edges.client_cert, &self.edges.client_key) {
            (Some(cert), Some(key)) => {
                crate::protocol::tls::client_identity(
                    ("edges.client_cert", cert),
                    ("edges.client_key", key),
                )
                .map_err(ConfigError::Invalid)?;
            }
            (Some(_), None) => {
                return Err(ConfigError::Invalid(
                    "edges.client_key: required with edges.client_cert".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "edges.client_cert: required with edges.client_key".into(),
                ));
            }
            (None, None) => {}
        }
        if self.edges.push_concurrency == 0 {
            return Err(ConfigError::Invalid(
                "edges.push_concurrency: must be at least 1".into(),
            ));
        }
        self.cluster.check()
    }
}

/// Known sections, so `EDGEPLANE_<SECTION>_<KEY>` can be split where the key has underscores.
const SECTIONS: [&str; 11] = [
    "server", "log", "auth", "secrets", "limits", "edges", "rollout", "alerts", "store", "metrics",
    "cluster",
];

/// Variables that configure something other than settings keys: the bootstrap password,
/// and the command-line client's control plane and token (SPEC §12.1).
const NOT_SETTINGS: [&str; 3] = [
    "EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD",
    "EDGEPLANE_URL",
    "EDGEPLANE_TOKEN",
];

/// Merges `EDGEPLANE_<SECTION>_<KEY>` variables into `table`; answers a warning for each
/// `EDGEPLANE_*` variable that names no section.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("EDGEPLANE_") else {
            continue;
        };
        if NOT_SETTINGS.contains(&name.as_str()) {
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        let Some((section, key)) = SECTIONS.iter().find_map(|s| {
            lower
                .strip_prefix(s)
                .and_then(|r| r.strip_prefix('_'))
                .map(|k| (*s, k.to_string()))
        }) else {
            warnings.push(format!(
                "{name} is not a setting of this command (settings are EDGEPLANE_<{}>_<KEY>); ignored",
                SECTIONS.join("|").to_ascii_uppercase()
            ));
            continue;
        };
        // A value that reads as a TOML literal (number, boolean) keeps its type; anything
        // else is a string.
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .filter(|v| !v.is_table())
            .unwrap_or(toml::Value::String(value));
        let section_table = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match section_table {
            toml::Value::Table(t) => {
                t.insert(key, parsed);
            }
            _ => {
                return Err(ConfigError::Invalid(format!("{section}: must be a table")));
            }
        }
    }
    Ok(warnings)
}

/// Deserializes with errors that name the offending key.
fn deserialize_named(table: toml::Table) -> Result<Settings, ConfigError> {
    for (section, value) in &table {
        if !SECTIONS.contains(&section.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "{section}: unknown section (expected one of {})",
                SECTIONS.join(", ")
            )));
        }
        let toml::Value::Table(inner) = value else {
            return Err(ConfigError::Invalid(format!("{section}: must be a table")));
        };
        // Deserialize each section alone so the error can carry `section.key`.
        let result = match section.as_str() {
            "server" => ServerSettings::deserialize(inner.clone()).map(drop),
            "log" => LogSettings::deserialize(inner.clone()).map(drop),
            "auth" => AuthSettings::deserialize(inner.clone()).map(drop),
            "secrets" => SecretSettings::deserialize(inner.clone()).map(drop),
            "limits" => LimitSettings::deserialize(inner.clone()).map(drop),
            "edges" => EdgeSettings::deserialize(inner.clone()).map(drop),
            "rollout" => RolloutSettings::deserialize(inner.clone()).map(drop),
            "store" => StoreSettings::deserialize(inner.clone()).map(drop),
            "metrics" => MetricsSettings::deserialize(inner.clone()).map(drop),
            "cluster" => ClusterSettings::deserialize(inner.clone()).map(drop),
            _ => AlertSettings::deserialize(inner.clone()).map(drop),
        };
        if let Err(error) = result {
            return Err(ConfigError::Invalid(name_key(
                section,
                inner,
                &error.to_string(),
            )));
        }
    }
    Settings::deserialize(table).map_err(|e| ConfigError::Invalid(e.to_string().trim().to_string()))
}

fn name_key(section: &str, inner: &toml::Table, message: &str) -> String {
    let message = message.trim().replace('\n', " ");
    // serde names unknown fields itself; for a bad value, find the key the message is about.
    if let Some(start) = message.find("unknown field `") {
        let rest = &message[start + 15..];
        let key = rest.split('`').next().unwrap_or("");
        return format!("{section}.{key}: unknown key");
    }
    for key in inner.keys() {
        if message.contains(&format!("`{key}`")) || message.contains(key.as_str()) {
            return format!("{section}.{key}: {message}");
        }
    }
    let key = inner.keys().next().map(String::as_str).unwrap_or("?");
    format!("{section}.{key}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edgeplane.toml");
        std::fs::write(&path, text).unwrap();
        Settings::load(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            &Overrides::default(),
        )
    }

    #[test]
    fn defaults_match_the_spec() {
        let s = Settings::load(None, Vec::new(), &Overrides::default()).unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.server.data_dir, PathBuf::from("./edgeplane-data"));
        assert_eq!(s.limits.writes_per_minute, 20);
        assert_eq!(s.edges.healthy_within, Duration::from_secs(120));
    }

    #[test]
    fn the_free_space_reserve_takes_bytes_or_a_size_with_its_unit() {
        let default = Settings::load(None, Vec::new(), &Overrides::default()).unwrap();
        assert_eq!(default.store.free_space_reserve, 256 * 1024 * 1024);
        for (written, bytes) in [
            ("1048576", 1 << 20),
            ("\"512MiB\"", 512 << 20),
            ("\"2 GiB\"", 2 << 30),
            ("\"500MB\"", 500_000_000),
            ("0", 0),
        ] {
            let s = load(&format!("[store]\nfree_space_reserve = {written}\n"), &[]).unwrap();
            assert_eq!(s.store.free_space_reserve, bytes, "{written}");
        }
        let env = load("", &[("EDGEPLANE_STORE_FREE_SPACE_RESERVE", "64MiB")]).unwrap();
        assert_eq!(env.store.free_space_reserve, 64 << 20);
        let error = load("[store]\nfree_space_reserve = \"lots\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("store.free_space_reserve"), "{error}");
    }

    #[test]
    fn env_beats_file_and_flags_beat_env() {
        let s = load(
            "[server]\nlisten = \"127.0.0.1:9000\"\n[limits]\nreads_per_minute = 7\n",
            &[
                ("EDGEPLANE_LIMITS_READS_PER_MINUTE", "9"),
                ("EDGEPLANE_AUTH_TOKEN_TTL", "PT5M"),
            ],
        )
        .unwrap();
        assert_eq!(s.server.listen.port(), 9000);
        assert_eq!(s.limits.reads_per_minute, 9);
        assert_eq!(s.auth.token_ttl, Duration::from_secs(300));
        let overridden = Settings::load(
            None,
            vec![(
                "EDGEPLANE_SERVER_LISTEN".to_string(),
                "127.0.0.1:9001".to_string(),
            )],
            &Overrides {
                listen: Some("127.0.0.1:9002".parse().unwrap()),
                data_dir: None,
            },
        )
        .unwrap();
        assert_eq!(overridden.server.listen.port(), 9002);
    }

    #[test]
    fn the_clients_variables_are_not_settings() {
        let s = load(
            "",
            &[
                ("EDGEPLANE_URL", "http://127.0.0.1:1"),
                ("EDGEPLANE_TOKEN", "a-token"),
            ],
        )
        .unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn bad_keys_are_named() {
        let check = |text: &str, env: &[(&str, &str)], key: &str| {
            let error = load(text, env).unwrap_err().to_string();
            assert!(error.contains(key), "{error:?} should name {key}");
            assert!(!error.contains('\n'), "one line: {error:?}");
        };
        check("[server]\nlisten = \"nope\"\n", &[], "server.listen");
        check("[server]\nlisen = \"127.0.0.1:1\"\n", &[], "server.lisen");
        check(
            "[limits]\nreads_per_minute = \"x\"\n",
            &[],
            "limits.reads_per_minute",
        );
        check(
            "[edges]\npush_timeout = \"soon\"\n",
            &[],
            "edges.push_timeout",
        );
        check(
            "[limits]\nreads_per_minute = 0\n",
            &[],
            "limits.reads_per_minute",
        );
        check(
            "[log]\ntrace_sample_ratio = 1.5\n",
            &[],
            "log.trace_sample_ratio",
        );
        check(
            "[log]\notlp_endpoint = \"collector:4318\"\n",
            &[],
            "log.otlp_endpoint",
        );
        check("[nonsense]\nx = 1\n", &[], "nonsense");
        check("", &[("EDGEPLANE_SERVER_LISTEN", "bad")], "server.listen");
        check("[server\n", &[], "edgeplane.toml");
    }

    #[test]
    fn tls_keys_come_in_pairs_and_name_themselves() {
        let check = |text: &str, env: &[(&str, &str)], key: &str| {
            let error = load(text, env).unwrap_err().to_string();
            assert!(error.contains(key), "{error:?} should name {key}");
            assert!(!error.contains('\n'), "one line: {error:?}");
        };
        check(
            "",
            &[("EDGEPLANE_SERVER_TLS_CERT", "/nonexistent/cert.pem")],
            "server.tls_key: required",
        );
        check(
            "[server]\ntls_client_ca = \"/nonexistent/ca.pem\"\n",
            &[],
            "server.tls_client_ca",
        );
        check(
            "[server]\ntls_cert = \"/nonexistent/cert.pem\"\ntls_key = \"/nonexistent/key.pem\"\n",
            &[],
            "server.tls_cert: cannot read",
        );
        check(
            "[edges]\nclient_key = \"/nonexistent/key.pem\"\n",
            &[],
            "edges.client_cert: required",
        );
        check(
            "[edges]\nclient_cert = \"/nonexistent/c.pem\"\nclient_key = \"/nonexistent/k.pem\"\n",
            &[],
            "edges.client_cert: cannot read",
        );
    }

    #[test]
    fn cluster_settings_come_from_file_and_env_and_name_their_keys() {
        let s = load(
            "[cluster]\nrole = \"standby\"\npeers = [\"http://10.0.0.1:8080\"]\n",
            &[
                ("EDGEPLANE_CLUSTER_SECRET", "a-cluster-secret-of-length"),
                ("EDGEPLANE_CLUSTER_SYNC_REPLICATION", "true"),
                ("EDGEPLANE_CLUSTER_SYNC_TIMEOUT", "500ms"),
            ],
        )
        .unwrap();
        assert_eq!(s.cluster.role, ClusterRole::Standby);
        assert!(s.cluster.sync_replication);
        assert_eq!(s.cluster.sync_timeout, Duration::from_millis(500));
        let defaults = Settings::load(None, Vec::new(), &Overrides::default()).unwrap();
        assert_eq!(defaults.cluster.role, ClusterRole::Primary);
        assert_eq!(defaults.cluster.sync_timeout, Duration::from_secs(2));
        assert!(!defaults.cluster.sync_replication);

        let check = |text: &str, env: &[(&str, &str)], key: &str| {
            let error = load(text, env).unwrap_err().to_string();
            assert!(error.contains(key), "{error:?} should name {key}");
        };
        check(
            "[cluster]\npeers = [\"http://10.0.0.1:8080\"]\n",
            &[],
            "cluster.secret",
        );
        check("[cluster]\nrole = \"leader\"\n", &[], "cluster.role");
        check("[cluster]\nrole = \"standby\"\n", &[], "cluster.peers");
        check(
            "[cluster]\npeers = [\"10.0.0.1:8080\"]\nsecret = \"a-cluster-secret-of-length\"\n",
            &[],
            "cluster.peers[0]",
        );
        check(
            "",
            &[("EDGEPLANE_CLUSTER_SYNC_TIMEOUT", "soon")],
            "cluster.sync_timeout",
        );
        check(
            "",
            &[("EDGEPLANE_CLUSTER_NODE_ID", "a b")],
            "cluster.node_id",
        );
    }

    #[test]
    fn durations_take_every_form_of_the_one_syntax() {
        let s = load(
            "[auth]\ntoken_ttl = \"PT1H30M\"\n[edges]\npush_timeout = \"500ms\"\n",
            &[("EDGEPLANE_ROLLOUT_STUCK_AFTER", "P1D")],
        )
        .unwrap();
        assert_eq!(s.auth.token_ttl, Duration::from_secs(5400));
        assert_eq!(s.edges.push_timeout, Duration::from_millis(500));
        assert_eq!(s.rollout.stuck_after, Duration::from_secs(86_400));
        for bad in ["PT", "PTxS", "-5s", ""] {
            let error = load(&format!("[auth]\ntoken_ttl = \"{bad}\"\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(error.contains("auth.token_ttl"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn variables_of_other_commands_are_warnings_not_refusals() {
        let s = load(
            "",
            &[
                ("EDGEPLANE_SIMULATE_TOKEN", "t"),
                ("EDGEPLANE_URL", "http://127.0.0.1:8080"),
                ("EDGEPLANE_TOKEN", "t"),
                ("EDGEPLANE_AGENT_CONFIG", "/etc/edgeplane/agent.toml"),
                ("EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD", "a-long-password"),
                ("EDGEPLANE_LIMITS_READS_PER_MINUTE", "9"),
            ],
        )
        .expect("other commands' variables do not stop serve");
        assert_eq!(s.limits.reads_per_minute, 9);
        let mut warned: Vec<&str> = s
            .warnings
            .iter()
            .map(|w| w.split_whitespace().next().unwrap_or_default())
            .collect();
        warned.sort();
        assert_eq!(
            warned,
            // The client's URL and token are not settings: ignored without a word.
            ["EDGEPLANE_AGENT_CONFIG", "EDGEPLANE_SIMULATE_TOKEN"]
        );
        // A known section with an unknown key is still a typo that stops start-up.
        let error = load("", &[("EDGEPLANE_SERVER_LISTN", "127.0.0.1:1")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("server.listn"), "{error}");
    }
}
