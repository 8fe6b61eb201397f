//! Builds the control plane in dependency order — settings, secrets, store, tokens, limits,
//! validator, router — and runs it until SIGTERM. The one place that wires subsystems.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use metrics_exporter_prometheus::PrometheusHandle;
use rand::RngCore;

use crate::auth::{RateLimits, TokenIssuer, hash_password};
use crate::config::Settings;
use crate::edge::{PushClient, PushOptions};
use crate::fleet::HeartbeatIntake;
use crate::model::{Role, RollbackConfig, Timestamp, User};
use crate::monitor::alerts::{Notifier, NotifierConfig, WebhookConfig};
use crate::monitor::judge::MetricsAnalysis;
use crate::rollout::StepContext;
use crate::rollout::engine::{Engine, EngineSettings, SystemClock};
use crate::secrets::SecretBox;
use crate::store::{Command, CommandEnvelope, Store};
use crate::validate::Validator;

/// Name of the file holding the generated secret key when none is configured.
pub const SECRET_KEY_FILE: &str = "secret.key";
/// Name of the file the generated bootstrap password is written to.
pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";
/// Actor recorded for changes the server makes on its own.
pub const SYSTEM_ACTOR: &str = "system";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Engine(#[from] crate::rollout::engine::EngineError),
}

/// Everything a request handler or engine needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    store: Store,
    tokens: TokenIssuer,
    limits: RateLimits,
    secrets: SecretBox,
    validator: Validator,
    prometheus: PrometheusHandle,
    heartbeats: HeartbeatIntake,
    engine: Engine,
    push_client: PushClient,
    notifier: Notifier,
    ready: AtomicBool,
}

impl AppState {
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }
    pub fn store(&self) -> &Store {
        &self.inner.store
    }
    pub fn tokens(&self) -> &TokenIssuer {
        &self.inner.tokens
    }
    pub fn limits(&self) -> &RateLimits {
        &self.inner.limits
    }
    pub fn secrets(&self) -> &SecretBox {
        &self.inner.secrets
    }
    pub fn validator(&self) -> &Validator {
        &self.inner.validator
    }
    pub fn prometheus(&self) -> &PrometheusHandle {
        &self.inner.prometheus
    }
    pub fn heartbeats(&self) -> &HeartbeatIntake {
        &self.inner.heartbeats
    }
    pub fn push_client(&self) -> &PushClient {
        &self.inner.push_client
    }
    pub fn notifier(&self) -> &Notifier {
        &self.inner.notifier
    }
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }
    /// The server-wide default RollbackConfig.
    pub async fn thresholds(&self) -> Result<RollbackConfig, crate::store::StoreError> {
        self.store().read(|r| r.thresholds()).await
    }
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Release);
    }
}

/// The store and the secrets that go with it, as offline commands need them too.
pub struct Opened {
    pub store: Store,
    pub tokens: TokenIssuer,
    pub secrets: SecretBox,
}

/// Opens the store in the configured data dir, creating its secrets on first use.
pub fn open(settings: &Settings) -> Result<Opened, StartError> {
    let data_dir = &settings.server.data_dir;
    let secrets = load_secret_box(settings, data_dir)?;
    let store = Store::open(data_dir)?;
    let jwt_secret = if settings.auth.jwt_secret.is_empty() {
        let reader = store.reader()?;
        match reader.meta("jwt_secret")? {
            Some(stored) => BASE64
                .decode(&stored)
                .map_err(|_| StartError::Config("stored JWT secret is not base64".into()))?,
            None => {
                let mut secret = vec![0u8; 32];
                rand::rng().fill_bytes(&mut secret);
                store.apply_blocking(CommandEnvelope::new(
                    SYSTEM_ACTOR,
                    "",
                    Command::InitCluster {
                        jwt_secret: BASE64.encode(&secret),
                    },
                ))?;
                secret
            }
        }
    } else {
        BASE64
            .decode(settings.auth.jwt_secret.trim())
            .map_err(|_| {
                StartError::Config("auth.jwt_secret: must be base64 (32 bytes or more)".into())
            })?
    };
    let tokens = TokenIssuer::new(&jwt_secret, &settings.auth.issuer, &settings.auth.audience)
        .map_err(|e| StartError::Config(format!("auth.jwt_secret: {e}")))?;
    Ok(Opened {
        store,
        tokens,
        secrets,
    })
}

fn load_secret_box(settings: &Settings, data_dir: &Path) -> Result<SecretBox, StartError> {
    if !settings.secrets.encryption_key.is_empty() {
        return SecretBox::from_base64(settings.secrets.encryption_key.trim())
            .map_err(|e| StartError::Config(format!("secrets.encryption_key: {e}")));
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| StartError::Io(format!("cannot create {}: {e}", data_dir.display())))?;
    let path = data_dir.join(SECRET_KEY_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        return SecretBox::from_base64(text.trim())
            .map_err(|e| StartError::Config(format!("{}: {e}", path.display())));
    }
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    write_private_file(&path, &BASE64.encode(key))?;
    Ok(SecretBox::new(key))
}

/// Writes a file readable by its owner only, durably.
pub fn write_private_file(path: &Path, text: &str) -> Result<(), StartError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| StartError::Io(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(text.as_bytes())
        .and_then(|_| file.write_all(b"\n"))
        .and_then(|_| file.sync_all())
        .map_err(|e| StartError::Io(format!("cannot write {}: {e}", path.display())))
}

/// Creates the `admin` user on first start with an empty store (SPEC §1).
pub fn bootstrap_admin(
    store: &Store,
    data_dir: &Path,
    password_from_env: Option<String>,
) -> Result<(), StartError> {
    if store.reader()?.user_count()? > 0 {
        return Ok(());
    }
    let (password, generated) = match password_from_env.filter(|p| !p.is_empty()) {
        Some(password) => {
            crate::auth::check_password(&password).map_err(|e| {
                StartError::Config(format!("EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD: {e}"))
            })?;
            (password, false)
        }
        None => {
            let mut bytes = [0u8; 18];
            rand::rng().fill_bytes(&mut bytes);
            (
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
                true,
            )
        }
    };
    let hash = hash_password(&password).map_err(|e| StartError::Io(e.to_string()))?;
    let now = Timestamp::now();
    store.apply_blocking(CommandEnvelope::new(
        SYSTEM_ACTOR,
        "",
        Command::CreateUser {
            user: User {
                username: "admin".into(),
                role: Role::Admin,
                password_hash: hash,
                created_at: now,
                updated_at: now,
            },
        },
    ))?;
    if generated {
        let path = data_dir.join(INITIAL_PASSWORD_FILE);
        write_private_file(&path, &password)?;
        tracing::warn!(
            password = %password,
            file = %path.display(),
            "created user 'admin' with a generated password; change it after first login"
        );
    } else {
        tracing::info!(
            "created user 'admin' with the password from EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD"
        );
    }
    Ok(())
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

/// Builds the whole application state from settings (no listening yet). On an empty store,
/// `admin` gets `bootstrap_password`, or a generated one written to the data dir.
pub fn build(
    settings: Settings,
    prometheus: PrometheusHandle,
    bootstrap_password: Option<String>,
) -> Result<AppState, StartError> {
    let opened = open(&settings)?;
    bootstrap_admin(&opened.store, &settings.server.data_dir, bootstrap_password)?;
    crate::api::extract::set_body_limit(settings.server.max_body_bytes);
    let limits = RateLimits::new(&settings.limits);
    let push_client = PushClient::new(PushOptions {
        timeout: settings.edges.push_timeout,
        retries: settings.edges.push_retries,
        max_in_flight: settings.edges.push_concurrency,
        ca_file: settings.edges.ca_file.clone(),
        ..PushOptions::default()
    })
    .map_err(|e| StartError::Config(format!("edges: {e}")))?;
    let notifier = start_notifier(&settings)?;
    let engine = Engine::start(
        opened.store.clone(),
        opened.secrets.clone(),
        Arc::new(push_client.clone()),
        Arc::new(MetricsAnalysis::new(opened.store.clone())),
        Arc::new(notifier.clone()),
        Arc::new(SystemClock),
        engine_settings(&settings),
    )?;
    Ok(AppState {
        inner: Arc::new(Inner {
            settings,
            store: opened.store.clone(),
            tokens: opened.tokens,
            limits,
            secrets: opened.secrets,
            validator: Validator::new(),
            prometheus,
            heartbeats: HeartbeatIntake::start(opened.store.clone()),
            engine,
            push_client,
            notifier,
            ready: AtomicBool::new(false),
        }),
    })
}

/// Runs the control plane until SIGTERM or Ctrl-C, then drains in-flight requests.
pub async fn serve(settings: Settings, prometheus: PrometheusHandle) -> anyhow::Result<()> {
    let listen = settings.server.listen;
    let grace = settings.server.shutdown_grace;
    let bootstrap_password = std::env::var("EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD").ok();
    let state =
        tokio::task::spawn_blocking(move || build(settings, prometheus, bootstrap_password))
            .await??;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let address = listener.local_addr()?;
    let router = crate::api::router(state.clone());

    let reconciler = crate::fleet::Reconciler::start(
        state.store().clone(),
        state.secrets().clone(),
        Arc::new(state.push_client().clone()),
        state.engine().clone(),
        state.settings().edges.reconcile_interval,
        state.settings().edges.healthy_within.as_millis() as i64,
    );
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
    let graceful_signal = shutdown_signal();
    let deadline_signal = shutdown_signal();
    state.set_ready(true);
    tracing::info!(%address, "edgeplane control plane started");
    println!("listening on {address}");
    let watchdog_state = state.clone();
    let _watchdog = crate::notify::ready(move || {
        let state = watchdog_state.clone();
        async move { state.is_ready() && state.thresholds().await.is_ok() }
    });
    let shutdown_state = state.clone();
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        graceful_signal.await;
        shutdown_state.set_ready(false);
        tracing::info!("shutting down: finishing in-flight requests");
    });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        result = &mut server => result?,
        _ = async {
            deadline_signal.await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!("in-flight requests did not finish within {grace:?}; exiting"),
    }
    housekeeping.abort();
    reconciler.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when
/// the future is first polled, so a signal that comes in between is not lost.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    let terminate = signal(SignalKind::terminate()).ok();
    let interrupt = signal(SignalKind::interrupt()).ok();
    async fn received(signal: Option<Signal>) {
        match signal {
            Some(mut signal) => {
                signal.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
    async move {
        tokio::select! {
            _ = received(terminate) => {}
            _ = received(interrupt) => {}
        }
    }
}
