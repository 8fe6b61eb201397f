//! The HTTP client every caller across the wire builds the same way: pushes from the control
//! plane, heartbeats from agents and simulated edges, and a rollback asked of a running agent.

use std::path::Path;
use std::time::Duration;

/// Builds a client with a connect deadline of `timeout` and up to `idle_per_host` idle
/// keep-alive connections per host. TLS roots come from `ca_file` when given (and only from
/// it); otherwise from the system store, falling back to an empty store on a machine without
/// one, so that start-up never fails for lack of a CA bundle. Err says why, for the caller's
/// own error type.
pub(crate) fn http_client(
    timeout: Duration,
    idle_per_host: usize,
    ca_file: Option<&Path>,
) -> Result<reqwest::Client, String> {
    http_client_with_identity(timeout, idle_per_host, ca_file, None)
}

/// [`http_client`] that presents `identity` (a client certificate) to servers that ask.
pub(crate) fn http_client_with_identity(
    timeout: Duration,
    idle_per_host: usize,
    ca_file: Option<&Path>,
    identity: Option<reqwest::Identity>,
) -> Result<reqwest::Client, String> {
    let base = || {
        let builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(timeout)
            .pool_max_idle_per_host(idle_per_host)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .user_agent(concat!("edgeplane/", env!("CARGO_PKG_VERSION")));
        match identity.clone() {
            Some(identity) => builder.identity(identity),
            None => builder,
        }
    };
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("reading CA file {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("parsing CA file {}: {e}", path.display()))?;
            base()
                .tls_certs_only(certs)
                .build()
                .map_err(|e| e.to_string())
        }
        None => match base().build() {
            Ok(client) => Ok(client),
            Err(error) => {
                tracing::warn!(%error, "no usable system CA store; https peers need a CA file");
                base()
                    .tls_certs_only(Vec::new())
                    .build()
                    .map_err(|e| e.to_string())
            }
        },
    }
}

/// An error with its causes, for logs and per-edge messages.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
