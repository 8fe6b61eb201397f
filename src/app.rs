//! Builds the control plane in dependency order — settings, secrets, store, tokens, limits,
//! validator, engine, use cases, router — and runs it until SIGTERM. The one place that wires
//! subsystems; nothing else in the library imports it.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::api::{ApiParts, ApiState};
use crate::auth::RateLimits;
use crate::cluster::{Cluster, FencedTransport};
use crate::config::Settings;
use crate::fleet::{HeartbeatIntake, PushClient, PushOptions};
use crate::monitor::alerts::{Alert, AlertKind, Notifier, NotifierConfig, WebhookConfig};
use crate::monitor::judge::MetricsAnalysis;
use crate::rollout::StepContext;
use crate::rollout::engine::{Analysis, Clock, EdgeTransport, Engine, EngineSettings, SystemClock};
use crate::service::open::{OpenError, bootstrap_admin, open};
use crate::service::{Configurations, Deployments, Edges, Users};
use crate::validate::Validator;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Open(#[from] OpenError),
    #[error("{0}")]
    Engine(#[from] crate::rollout::engine::EngineError),
    #[error("{0}")]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// Starts the alert notifier with the configured webhooks.
fn start_notifier(settings: &Settings) -> Result<Notifier, StartError> {
    let root_certificates_pem = match &settings.alerts.ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            StartError::Config(format!(
                "alerts.ca_file: cannot read {}: {e}",
                path.display()
            ))
        })?),
        None => None,
    };
    let config = NotifierConfig {
        webhooks: settings
            .alerts
            .webhooks
            .iter()
            .map(|url| WebhookConfig {
                timeout: settings.alerts.webhook_timeout,
                max_attempts: settings.alerts.webhook_attempts.max(1),
                ..WebhookConfig::new(url.clone())
            })
            .collect(),
        root_certificates_pem,
        ..NotifierConfig::default()
    };
    let (notifier, _worker) =
        Notifier::start(config).map_err(|e| StartError::Config(format!("alerts: {e}")))?;
    Ok(notifier)
}

/// The engine's settings, from the server's.
pub fn engine_settings(settings: &Settings) -> EngineSettings {
    EngineSettings {
        healthy_within_ms: settings.edges.healthy_within.as_millis() as i64,
        tick: std::time::Duration::from_millis(100),
        step: StepContext {
            analyze_interval_ms: settings.rollout.analysis_interval.as_millis() as i64,
            // An inconclusive watch is extended by six analysis intervals at a time (a
            // minute at the default 10 s), up to the deployment's maxExtension.
            extension_step_ms: 6 * settings.rollout.analysis_interval.as_millis() as i64,
            max_push_attempts: settings.rollout.max_push_attempts,
            stuck_after_ms: settings.rollout.stuck_after.as_millis() as i64,
            ..StepContext::default()
        },
        quarantine_after: settings.rollout.quarantine_after,
    }
}

/// The engine's seams a test may replace: its clock, and its analysis of watch periods.
pub struct EngineSeams {
    pub clock: Arc<dyn Clock>,
    /// `None`: the metric analysis over the stored series.
    pub analysis: Option<Arc<dyn Analysis>>,
}

impl Default for EngineSeams {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            analysis: None,
        }
    }
}

/// Builds the whole application state from settings (no listening yet). On an empty store,
/// `admin` gets `bootstrap_password`, or a generated one written to the data dir.
pub fn build(
    settings: Settings,
    prometheus: PrometheusHandle,
    bootstrap_password: Option<String>,
) -> Result<ApiState, StartError> {
    build_with(
        settings,
        prometheus,
        bootstrap_password,
        EngineSeams::default(),
    )
}

/// [`build`] with the engine's seams given.
pub fn build_with(
    settings: Settings,
    prometheus: PrometheusHandle,
    bootstrap_password: Option<String>,
    seams: EngineSeams,
) -> Result<ApiState, StartError> {
    let opened = open(&settings)?;
    opened
        .store
        .set_free_space_reserve(settings.store.free_space_reserve);
    let cluster = Cluster::new(
        &settings.cluster,
        &settings.server.data_dir,
        opened.store.clone(),
    )?;
    if cluster.is_primary() {
        bootstrap_admin(&opened.store, &settings.server.data_dir, bootstrap_password)?;
    }
    crate::api::extract::set_body_limit(settings.server.max_body_bytes);
    let limits = RateLimits::new(&settings.limits)
        .with_login_attempts_per_user_per_hour(settings.auth.login_attempts_per_user_per_hour);
    let push_client = PushClient::new(PushOptions {
        timeout: settings.edges.push_timeout,
        retries: settings.edges.push_retries,
        max_in_flight: settings.edges.push_concurrency,
        ca_file: settings.edges.ca_file.clone(),
        client_cert: settings
            .edges
            .client_cert
            .clone()
            .zip(settings.edges.client_key.clone()),
        ..PushOptions::default()
    })
    .map_err(|e| StartError::Config(format!("edges: {e}")))?;
    push_client.set_term(
        opened
            .store
            .reader()
            .and_then(|r| r.current_term())
            .map_err(OpenError::from)?,
    );
    let notifier = start_notifier(&settings)?;
    {
        let notifier = notifier.clone();
        cluster.on_degraded(move |message| {
            notifier.notify(Alert {
                kind: AlertKind::ReplicationLag,
                deployment_id: None,
                configuration_id: None,
                edge_id: None,
                message: message.to_string(),
                verdict: None,
                at: crate::model::Timestamp::now(),
            })
        });
    }
    let transport: Arc<dyn EdgeTransport> = Arc::new(FencedTransport {
        inner: Arc::new(push_client.clone()),
        cluster: cluster.clone(),
    });
    let analysis = seams
        .analysis
        .unwrap_or_else(|| Arc::new(MetricsAnalysis::new(opened.store.clone())));
    // With peers, the engine runs only while this node is primary: `serve` hands it to the
    // cluster's supervisor with the other primary-only duties.
    let engine = if settings.cluster.peers.is_empty() {
        Engine::start(
            opened.store.clone(),
            opened.secrets.clone(),
            transport,
            analysis,
            Arc::new(notifier.clone()),
            seams.clock,
            engine_settings(&settings),
        )?
    } else {
        Engine::start_idle(
            opened.store.clone(),
            opened.secrets.clone(),
            transport,
            analysis,
            Arc::new(notifier.clone()),
            seams.clock,
            engine_settings(&settings),
        )
    };
    let tokens = Arc::new(opened.tokens);
    let heartbeats =
        HeartbeatIntake::start(opened.store.clone(), settings.metrics.per_edge_series, {
            let engine = engine.clone();
            Box::new(move |locations| engine.samples_arrived(locations))
        });
    let validator = Arc::new(Validator::new());
    let configurations = Configurations::new(
        opened.store.clone(),
        opened.secrets.clone(),
        validator.clone(),
        settings.server.allow_self_approval,
    );
    let deployments = Deployments::new(
        opened.store.clone(),
        configurations.clone(),
        engine.clone(),
        settings.rollout.max_concurrent_deployments,
        settings.edges.healthy_within.as_millis() as i64,
    );
    let edges = Edges::new(
        opened.store.clone(),
        tokens.clone(),
        opened.secrets.clone(),
        engine.clone(),
        heartbeats.clone(),
    )
    .with_agent_token_ttl(settings.auth.edge_token_ttl);
    let users = Users::new(opened.store.clone(), tokens.clone(), &settings.auth);
    Ok(ApiState::new(ApiParts {
        store: opened.store,
        tokens,
        limits,
        secrets: opened.secrets,
        validator,
        prometheus,
        heartbeats,
        engine,
        push_client,
        notifier,
        configurations,
        deployments,
        edges,
        users,
        cluster,
        settings,
    }))
}

/// [`build`] with the process's Prometheus recorder, for the demo.
pub fn build_for_demo(
    settings: Settings,
    bootstrap_password: Option<String>,
) -> anyhow::Result<ApiState> {
    Ok(build(
        settings,
        crate::telemetry::prometheus(),
        bootstrap_password,
    )?)
}

/// Runs the control plane until SIGTERM or Ctrl-C, then drains in-flight requests.
pub async fn serve(settings: Settings, prometheus: PrometheusHandle) -> anyhow::Result<()> {
    let listen = settings.server.listen;
    let grace = settings.server.shutdown_grace;
    let bootstrap_password = std::env::var("EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD").ok();
    if settings.cluster.role == crate::config::ClusterRole::Standby {
        crate::cluster::fetch_secret_key(&settings).await?;
        crate::cluster::catch_up_before_open(&settings).await?;
    }
    let state =
        tokio::task::spawn_blocking(move || build(settings, prometheus, bootstrap_password))
            .await??;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let address = listener.local_addr()?;
    let acceptor = match state.settings().server.tls()? {
        Some(files) => {
            let acceptor =
                crate::protocol::tls::Acceptor::new(files).map_err(|e| anyhow::anyhow!(e))?;
            acceptor.reload_on_sighup();
            Some(acceptor)
        }
        None => {
            if !address.ip().is_loopback() {
                tracing::warn!(
                    %address,
                    "serving plain HTTP on a non-loopback address: tokens and keys cross the network in clear; set server.tls_cert and server.tls_key"
                );
            }
            None
        }
    };

    let scheme = if acceptor.is_some() { "https" } else { "http" };
    state
        .cluster()
        .set_local_url(format!("{scheme}://{address}"));
    // Before the first request is served: an old primary restarted with its old settings
    // learns of the newer one here and steps down before it could take a write.
    state.cluster().check_peers_at_start().await;
    state.cluster().start();
    state
        .cluster()
        .follow_edge_terms(state.push_client().clone());
    // What only a primary does runs while this node is one (SPEC §9): the engine steps and
    // pushes deployments, the reconciler pushes to edges that drifted.
    let reconciler = {
        let state = state.clone();
        crate::cluster::TaskDuty::new("reconciler", move || {
            let transport: Arc<dyn EdgeTransport> = Arc::new(FencedTransport {
                inner: Arc::new(state.push_client().clone()),
                cluster: state.cluster().clone(),
            });
            crate::fleet::Reconciler::start(
                state.store().clone(),
                state.secrets().clone(),
                transport,
                state.engine().clone(),
                state.settings().edges.reconcile_interval,
                state.settings().edges.healthy_within.as_millis() as i64,
            )
        })
    };
    // The announcement goes first, so edges hear of the new primary before its engine
    // pushes to them again.
    let mut duties: Vec<Arc<dyn crate::cluster::Duty>> = Vec::new();
    if let Some(announcement) = state
        .cluster()
        .announcement(state.secrets().clone(), state.push_client().clone())
    {
        duties.push(Arc::new(announcement));
    }
    duties.push(Arc::new(state.engine().clone()));
    duties.push(Arc::new(reconciler));
    let duties = state.cluster().supervise(duties);
    let housekeeping = {
        let state = state.clone();
        tokio::spawn(async move {
            let healthy_within = state.settings().edges.healthy_within.as_millis() as i64;
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
            let mut n = 0u64;
            loop {
                tick.tick().await;
                crate::fleet::gauges::publish(state.store().clone(), healthy_within).await;
                crate::monitor::certificates::publish(state.store().clone()).await;
                if n % 6 == 0 {
                    crate::monitor::edge_tokens::publish(
                        state.store().clone(),
                        state.secrets().clone(),
                    )
                    .await;
                }
                state.prometheus().run_upkeep();
                n += 1;
                if n % 6 == 0 {
                    state.limits().forget_idle();
                }
            }
        })
    };

    // Signal handlers go in before the server says it listens: a SIGTERM sent right after
    // `listening on` must stop it gracefully, not kill it by the default action.
    let graceful_signal = crate::shutdown::signal();
    let deadline_signal = crate::shutdown::signal();
    state.set_ready(true);
    tracing::info!(%address, "edgeplane control plane started");
    if acceptor.is_some() {
        println!("listening on https://{address}");
    } else {
        println!("listening on {address}");
    }
    let watchdog_state = state.clone();
    let _watchdog = crate::notify::ready(move || {
        let state = watchdog_state.clone();
        // A store refusing writes recovers by itself (it reopens its file in the background);
        // a restart would not help it, so only a store that should answer and does not counts.
        async move {
            let recovering = !state.store().status().writable;
            state.is_ready() && (recovering || state.thresholds().await.is_ok())
        }
    });
    let shutdown_state = state.clone();
    let shutdown = async move {
        graceful_signal.await;
        shutdown_state.set_ready(false);
        tracing::info!("shutting down: finishing in-flight requests");
    };
    let mut server: std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>,
    > = match acceptor {
        Some(acceptor) => Box::pin(crate::api::serve_tls(
            listener,
            acceptor,
            state.clone(),
            shutdown,
        )),
        None => Box::pin(crate::api::serve(listener, state.clone(), shutdown)),
    };
    tokio::select! {
        result = &mut server => result?,
        _ = async {
            deadline_signal.await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!("in-flight requests did not finish within {grace:?}; exiting"),
    }
    housekeeping.abort();
    duties.abort();
    tracing::info!("stopped");
    Ok(())
}
