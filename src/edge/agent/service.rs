//! The running agent: the edge protocol served on `listen` (the `EdgeService` the shared
//! router calls), the heartbeat loop, and `edgeplane agent rollback`, which goes through a
//! running agent when there is one.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::sync::watch;

use super::system::{CpuSampler, health, read_metrics};
use super::versions::write_atomic;
use super::{Agent, AgentConfig};
use crate::edge::http::{EdgeService, router, serve_tls};
use crate::edge::leader::send_heartbeat;
use crate::model::Timestamp;
use crate::protocol::http_client_with_identity;
use crate::protocol::tls::{Acceptor, client_identity};
use crate::protocol::{
    ActiveConfigurations, Heartbeat, PushReply, PushRequest, RollbackRequest, chain, http_client,
};

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

    fn terms(&self) -> &crate::edge::term::TermGuard {
        &self.terms
    }

    fn control_planes(&self) -> &crate::edge::leader::ControlPlanes {
        &self.control_planes
    }
}

/// Runs the agent until SIGTERM or ctrl-c: the edge protocol on `listen` and the heartbeat
/// loop. Prints `listening on ADDR` once it accepts requests.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = AgentConfig::load(config_path)?;
    let listen = config.listen;
    let agent = Arc::new(Agent::open(config)?);
    if let Some(nginx) = &agent.nginx {
        agent.nginx_start(nginx).await;
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let address = listener.local_addr()?;
    let address_file = agent.config.state_dir.join(ADDRESS_FILE);
    write_atomic(&address_file, address.to_string().as_bytes())
        .with_context(|| format!("writing {}", address_file.display()))?;
    // Installed before the agent says it listens (and before READY=1 reaches systemd), so a
    // SIGTERM sent right after stops it gracefully instead of killing it.
    let stop_signal = crate::shutdown::signal();
    let acceptor = match &agent.config.tls {
        Some(files) => {
            let acceptor = Acceptor::new(files.clone()).map_err(anyhow::Error::msg)?;
            acceptor.reload_on_sighup();
            Some(acceptor)
        }
        None => None,
    };
    {
        let mut stdout = std::io::stdout().lock();
        if acceptor.is_some() {
            writeln!(stdout, "listening on https://{address}")?;
        } else {
            writeln!(stdout, "listening on {address}")?;
        }
        stdout.flush()?;
    }
    tracing::info!(%address, location_id = %agent.config.location_id, "agent started");
    let _watchdog = crate::notify::ready(|| async { true });
    let (stop_tx, stop_rx) = watch::channel(false);
    let heartbeats = tokio::spawn(heartbeat_loop(agent.clone(), stop_rx));
    match acceptor {
        Some(acceptor) => serve_tls(listener, acceptor, router(agent.clone()), stop_signal)
            .await
            .context("serving the edge protocol")?,
        None => axum::serve(listener, router(agent.clone()))
            .with_graceful_shutdown(stop_signal)
            .await
            .context("serving the edge protocol")?,
    }
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
        if config.tls.is_some() && running_agent(&config).await.is_some() {
            // Over TLS the running agent only talks to the control plane; changing its files
            // under it would race its own pushes.
            anyhow::bail!(
                "the agent is running with TLS: roll back through the control plane, or stop the agent first"
            );
        }
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
    let address = running_agent(config).await?;
    let client = http_client(Duration::from_secs(2), 1, None).ok()?;
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

/// The address recorded by a running agent, if something accepts connections there.
async fn running_agent(config: &AgentConfig) -> Option<SocketAddr> {
    let address = std::fs::read_to_string(config.state_dir.join(ADDRESS_FILE)).ok()?;
    let address: SocketAddr = address.trim().parse().ok()?;
    let connect = tokio::net::TcpStream::connect(address);
    match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Ok(Ok(_)) => Some(address),
        _ => None,
    }
}

async fn heartbeat_loop(agent: Arc<Agent>, mut stop: watch::Receiver<bool>) {
    let interval = agent.config.heartbeat_interval;
    // The listener's certificate is also the agent's client certificate: a control plane
    // with `server.tls_client_ca` takes heartbeats only from edges that present one.
    let identity = match &agent.config.tls {
        Some(tls) => {
            match client_identity(("agent.tls_cert", &tls.cert), ("agent.tls_key", &tls.key)) {
                Ok(identity) => Some(identity),
                Err(error) => {
                    tracing::error!(%error, "heartbeats disabled");
                    return;
                }
            }
        }
        None => None,
    };
    let client = match http_client_with_identity(
        interval.min(Duration::from_secs(10)),
        2,
        agent.config.ca_file.as_deref(),
        identity,
    ) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "heartbeats disabled");
            return;
        }
    };
    let mut cpu = CpuSampler::default();
    let mut last_sent = SystemTime::UNIX_EPOCH;
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        wait = interval;
        let metrics = match &agent.nginx {
            Some(nginx) => {
                let seconds = u32::try_from(interval.as_secs()).unwrap_or(u32::MAX);
                nginx.sample(seconds).await
            }
            None => read_metrics(agent.config.metrics_file.as_deref(), last_sent).await,
        };
        let read_at = SystemTime::now();
        let mut heartbeat = Heartbeat {
            health: health(&agent.config.state_dir, &mut cpu).await,
            active_configurations: agent.active_list().versions(),
            metrics,
            started_at: agent.started_at,
            sent_at: Timestamp::now(),
        };
        let sent = send_heartbeat(
            &client,
            &agent.control_planes,
            &agent.config.location_id,
            &agent.config.token,
            &heartbeat,
            None,
        )
        .await;
        // A heartbeat the control plane surely did not store hands its sample to the next one
        // (nginx's counts are put back; the metrics file is read again unless it was replaced
        // meanwhile); one that may have been stored (a timeout, a 500) does not, so nothing is
        // counted twice.
        let not_stored = match &sent {
            Ok(response) => matches!(response.status().as_u16(), 429 | 503),
            Err(error) => error.is_connect(),
        };
        if !not_stored {
            last_sent = read_at;
        }
        if not_stored && let (Some(nginx), Some(sample)) = (&agent.nginx, heartbeat.metrics.take())
        {
            nginx.put_back(sample);
        }
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
