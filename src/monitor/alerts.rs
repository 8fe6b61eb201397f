//! Alert notifications (SPEC §8.4): a Prometheus counter and a log line per alert, a broadcast
//! for the SSE streams, and a POST of the alert as JSON to each configured webhook, retried
//! with backoff by a background task so raising an alert never waits on the network.
//!
//! The webhook body is the alert itself (camelCase) plus a top-level `text`, which is all a
//! Slack-style incoming webhook needs; other receivers read the structured fields.
//!
//! Delivery is at most `max_attempts` per webhook, with exponential backoff and jitter between
//! attempts. The queue towards the worker is bounded: when it is full (a webhook down for long
//! under an alert storm) new alerts are still counted, logged and broadcast, but their webhook
//! delivery is dropped and counted in `edgeplane_alerts_dropped_total`.
//!
//! TLS: the HTTP client uses the roots given in [`NotifierConfig::root_certificates_pem`] and only
//! those when set; otherwise the system's roots; and when the system has none (a minimal
//! container) it still builds, with no roots, so plain-http receivers keep working and https
//! deliveries fail with a logged certificate error instead of the notifier failing to start.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio::task::JoinHandle;

use super::analysis::Verdict;
use crate::model::Timestamp;

/// Longest wait between two delivery attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum AlertError {
    #[error("invalid notifier configuration: {0}")]
    Invalid(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AlertKind {
    AutoRollback,
    Warning,
    StuckDeployment,
    Quarantine,
    InconclusivePause,
    DeploymentFailed,
    ReplicationLag,
    /// The store refuses writes; running deployments are paused until they resume.
    StoreUnavailable,
}

impl AlertKind {
    /// The `kind` label value of `edgeplane_alerts_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::AutoRollback => "AutoRollback",
            AlertKind::Warning => "Warning",
            AlertKind::StuckDeployment => "StuckDeployment",
            AlertKind::Quarantine => "Quarantine",
            AlertKind::InconclusivePause => "InconclusivePause",
            AlertKind::DeploymentFailed => "DeploymentFailed",
            AlertKind::ReplicationLag => "ReplicationLag",
            AlertKind::StoreUnavailable => "StoreUnavailable",
        }
    }
}

/// One alert. Also kept in deployment timelines, so it avoids serde features postcard lacks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub kind: AlertKind,
    pub deployment_id: Option<String>,
    pub configuration_id: Option<String>,
    /// For alerts about one edge (quarantine).
    pub edge_id: Option<String>,
    pub message: String,
    /// The analysis verdict behind an automatic action, with its numbers.
    pub verdict: Option<Verdict>,
    pub at: Timestamp,
}

impl Alert {
    /// The one-line human summary used for the log line and Slack's `text`.
    pub fn summary(&self) -> String {
        let mut text = format!("[edgeplane] {}", self.kind.as_str());
        if let Some(deployment_id) = &self.deployment_id {
            text.push_str(&format!(" {deployment_id}"));
        }
        if let Some(configuration_id) = &self.configuration_id {
            text.push_str(&format!(" ({configuration_id})"));
        }
        if let Some(edge_id) = &self.edge_id {
            text.push_str(&format!(" edge {edge_id}"));
        }
        text.push_str(": ");
        text.push_str(&self.message);
        text
    }

    /// The webhook body: the alert's fields plus Slack's `text`.
    pub fn webhook_body(&self) -> serde_json::Value {
        let mut body = serde_json::to_value(self).unwrap_or_else(|_| serde_json::json!({}));
        if let Some(object) = body.as_object_mut() {
            object.insert(
                "text".to_string(),
                serde_json::Value::String(self.summary()),
            );
        }
        body
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookConfig {
    pub url: String,
    /// Per attempt, connection included.
    pub timeout: Duration,
    pub max_attempts: u32,
    /// Wait after the first failure; doubles each attempt up to 30 s, with jitter.
    pub initial_backoff: Duration,
}

impl WebhookConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout: Duration::from_secs(5),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifierConfig {
    pub webhooks: Vec<WebhookConfig>,
    /// Alerts waiting for webhook delivery before new ones are dropped.
    pub queue_capacity: usize,
    /// Alerts a slow SSE subscriber may lag behind before it misses some.
    pub broadcast_capacity: usize,
    /// Webhook deliveries in flight at once.
    pub max_in_flight: usize,
    /// PEM roots to trust instead of the system's (see the module doc).
    pub root_certificates_pem: Option<Vec<u8>>,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        Self {
            webhooks: Vec::new(),
            queue_capacity: 1024,
            broadcast_capacity: 256,
            max_in_flight: 16,
            root_certificates_pem: None,
        }
    }
}

/// Cheap, cloneable handle to raise alerts. The worker task ends once every handle is dropped
/// and the deliveries in flight are done.
#[derive(Clone, Debug)]
pub struct Notifier {
    queue: mpsc::Sender<Alert>,
    events: broadcast::Sender<Alert>,
}

impl Notifier {
    /// Starts the delivery worker; needs a tokio runtime. The handle resolves when the worker
    /// has finished (after every `Notifier` is dropped), for graceful shutdown.
    pub fn start(config: NotifierConfig) -> Result<(Notifier, JoinHandle<()>), AlertError> {
        for webhook in &config.webhooks {
            let url = reqwest::Url::parse(&webhook.url).map_err(|error| {
                AlertError::Invalid(format!("webhook url {:?}: {error}", webhook.url))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(AlertError::Invalid(format!(
                    "webhook url {:?}: not http(s)",
                    webhook.url
                )));
            }
        }
        let client = build_client(config.root_certificates_pem.as_deref())?;
        let (queue, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let (events, _) = broadcast::channel(config.broadcast_capacity.max(1));
        let worker = tokio::spawn(run_worker(
            receiver,
            client,
            Arc::from(config.webhooks),
            config.max_in_flight.max(1),
        ));
        Ok((Notifier { queue, events }, worker))
    }

    /// Raises an alert: counts, logs and broadcasts it, and queues its webhook deliveries.
    /// Never blocks and never fails; a full queue drops the webhook delivery only.
    pub fn notify(&self, alert: Alert) {
        metrics::counter!("edgeplane_alerts_total", "kind" => alert.kind.as_str()).increment(1);
        tracing::warn!(
            kind = alert.kind.as_str(),
            deployment_id = alert.deployment_id.as_deref().unwrap_or(""),
            configuration_id = alert.configuration_id.as_deref().unwrap_or(""),
            edge_id = alert.edge_id.as_deref().unwrap_or(""),
            "alert: {}",
            alert.message
        );
        // No subscriber is not an error: nobody is watching the streams right now.
        let _ = self.events.send(alert.clone());
        match self.queue.try_send(alert) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(alert)) => {
                metrics::counter!("edgeplane_alerts_dropped_total", "kind" => alert.kind.as_str())
                    .increment(1);
                tracing::error!(
                    kind = alert.kind.as_str(),
                    "alert queue full, webhook delivery dropped"
                );
            }
            Err(mpsc::error::TrySendError::Closed(alert)) => {
                metrics::counter!("edgeplane_alerts_dropped_total", "kind" => alert.kind.as_str())
                    .increment(1);
                tracing::error!(
                    kind = alert.kind.as_str(),
                    "alert worker stopped, webhook delivery dropped"
                );
            }
        }
    }

    /// Alerts raised from now on, for SSE streams.
    pub fn subscribe(&self) -> broadcast::Receiver<Alert> {
        self.events.subscribe()
    }
}

fn build_client(root_certificates_pem: Option<&[u8]>) -> Result<reqwest::Client, AlertError> {
    let builder =
        || reqwest::Client::builder().user_agent(concat!("edgeplane/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = root_certificates_pem {
        let roots = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|error| AlertError::Invalid(format!("root certificates: {error}")))?;
        if roots.is_empty() {
            return Err(AlertError::Invalid(
                "root certificates: no certificate in the PEM".to_string(),
            ));
        }
        return builder()
            .tls_certs_only(roots)
            .build()
            .map_err(|error| AlertError::Invalid(format!("http client: {error}")));
    }
    match builder().build() {
        Ok(client) => Ok(client),
        Err(error) => {
            tracing::warn!(%error, "no usable system CA roots; https webhooks will fail until roots are configured");
            builder()
                .tls_certs_only(Vec::new())
                .build()
                .map_err(|error| AlertError::Invalid(format!("http client: {error}")))
        }
    }
}

async fn run_worker(
    mut receiver: mpsc::Receiver<Alert>,
    client: reqwest::Client,
    webhooks: Arc<[WebhookConfig]>,
    max_in_flight: usize,
) {
    let permits = Arc::new(Semaphore::new(max_in_flight));
    while let Some(alert) = receiver.recv().await {
        let body = Arc::new(alert.webhook_body());
        for webhook in webhooks.iter() {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (client, webhook, body) = (client.clone(), webhook.clone(), body.clone());
            let kind = alert.kind;
            tokio::spawn(async move {
                deliver(&client, &webhook, &body, kind).await;
                drop(permit);
            });
        }
    }
    // Every handle is gone: wait for the deliveries still running before reporting done.
    let all = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

async fn deliver(
    client: &reqwest::Client,
    webhook: &WebhookConfig,
    body: &serde_json::Value,
    kind: AlertKind,
) {
    let attempts = webhook.max_attempts.max(1);
    for attempt in 1..=attempts {
        let result = client
            .post(&webhook.url)
            .timeout(webhook.timeout)
            .json(body)
            .send()
            .await;
        let failure = match result {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => format!("status {}", response.status()),
            Err(error) => error.to_string(),
        };
        metrics::counter!("edgeplane_alert_webhook_failures_total").increment(1);
        if attempt == attempts {
            tracing::error!(url = %webhook.url, kind = kind.as_str(), attempt, %failure, "alert webhook gave up");
            return;
        }
        tracing::warn!(url = %webhook.url, kind = kind.as_str(), attempt, %failure, "alert webhook failed, retrying");
        tokio::time::sleep(backoff(webhook.initial_backoff, attempt)).await;
    }
}

/// Wait before attempt `attempt + 1`: `initial × 2^(attempt-1)`, capped, scaled by a random
/// factor in [0.5, 1] so many control planes (or alerts) do not retry in lockstep.
fn backoff(initial: Duration, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(16);
    let base = initial.saturating_mul(1u32 << exponent).min(MAX_BACKOFF);
    base.mul_f64(rand::rng().random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;
    use tokio::sync::watch;

    use super::*;

    #[derive(Clone)]
    struct Receiver {
        calls: Arc<AtomicU32>,
        failures_first: u32,
        /// Every call is reported here (with its 0-based number) as soon as it arrives.
        arrived: mpsc::UnboundedSender<u32>,
        /// No call is answered until the test opens the gate.
        gate: watch::Receiver<bool>,
        delivered: mpsc::UnboundedSender<serde_json::Value>,
    }

    async fn receive(
        State(mut receiver): State<Receiver>,
        axum::Json(body): axum::Json<serde_json::Value>,
    ) -> StatusCode {
        let call = receiver.calls.fetch_add(1, Ordering::SeqCst);
        let _ = receiver.arrived.send(call);
        if receiver.gate.wait_for(|open| *open).await.is_err() {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        if call < receiver.failures_first {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        let _ = receiver.delivered.send(body);
        StatusCode::OK
    }

    struct Webhook {
        url: String,
        calls: Arc<AtomicU32>,
        arrived: mpsc::UnboundedReceiver<u32>,
        gate: watch::Sender<bool>,
        bodies: mpsc::UnboundedReceiver<serde_json::Value>,
    }

    /// A webhook receiver on 127.0.0.1:0 that holds every call until its gate opens, then
    /// fails the first `failures_first` calls.
    async fn start_receiver(failures_first: u32) -> Webhook {
        let (delivered, bodies) = mpsc::unbounded_channel();
        let (arrived_tx, arrived) = mpsc::unbounded_channel();
        let (gate, gate_rx) = watch::channel(false);
        let calls = Arc::new(AtomicU32::new(0));
        let state = Receiver {
            calls: calls.clone(),
            failures_first,
            arrived: arrived_tx,
            gate: gate_rx,
            delivered,
        };
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Webhook {
            url: format!("http://{address}/hook"),
            calls,
            arrived,
            gate,
            bodies,
        }
    }

    /// Guards against a hang only; nothing here depends on how long a step takes.
    const HANG_GUARD: Duration = Duration::from_secs(30);

    fn alert(kind: AlertKind) -> Alert {
        Alert {
            kind,
            deployment_id: Some("deploy-1".to_string()),
            configuration_id: Some("config-1".to_string()),
            edge_id: None,
            message: "error rate 9.0% above 1.0% for 2 intervals".to_string(),
            verdict: None,
            at: Timestamp(1_764_000_000_000),
        }
    }

    fn webhook(url: &str) -> WebhookConfig {
        WebhookConfig {
            initial_backoff: Duration::from_millis(20),
            ..WebhookConfig::new(url)
        }
    }

    #[tokio::test]
    async fn alert_arrives_after_a_failed_attempt_and_notify_does_not_wait() {
        let mut hook = start_receiver(1).await;
        let config = NotifierConfig {
            webhooks: vec![webhook(&hook.url)],
            ..NotifierConfig::default()
        };
        let (notifier, worker) = Notifier::start(config).expect("starts");
        let mut stream = notifier.subscribe();

        // The webhook answers nothing until the gate opens, so notify() returning at all, and
        // the broadcast arriving, prove neither waits on the network.
        notifier.notify(alert(AlertKind::AutoRollback));
        let broadcast = stream.recv().await.expect("broadcast");
        assert_eq!(broadcast.kind, AlertKind::AutoRollback);
        let first = tokio::time::timeout(HANG_GUARD, hook.arrived.recv())
            .await
            .expect("the first attempt reaches the webhook")
            .expect("receiver alive");
        assert_eq!(first, 0);
        assert!(
            hook.bodies.try_recv().is_err(),
            "nothing is delivered while the webhook holds its answer"
        );

        hook.gate.send_replace(true);
        let body = tokio::time::timeout(HANG_GUARD, hook.bodies.recv())
            .await
            .expect("delivered in time")
            .expect("delivered");
        // The first call failed with 503; the body came from the retry.
        assert_eq!(hook.calls.load(Ordering::SeqCst), 2);
        assert_eq!(body["kind"], "AutoRollback");
        assert_eq!(body["deploymentId"], "deploy-1");
        let text = body["text"].as_str().expect("slack text");
        assert!(
            text.contains("AutoRollback") && text.contains("deploy-1"),
            "{text}"
        );

        drop(notifier);
        tokio::time::timeout(HANG_GUARD, worker)
            .await
            .expect("worker ends once handles are gone")
            .expect("worker did not panic");
    }

    #[tokio::test]
    async fn a_full_queue_drops_delivery_but_not_the_broadcast() {
        // A worker that never gets to run its queue: build the handle by hand.
        let (queue, _receiver) = mpsc::channel(1);
        let (events, _) = broadcast::channel(8);
        let notifier = Notifier { queue, events };
        let mut stream = notifier.subscribe();
        for _ in 0..3 {
            notifier.notify(alert(AlertKind::Warning));
        }
        for _ in 0..3 {
            assert_eq!(
                stream.recv().await.expect("broadcast").kind,
                AlertKind::Warning
            );
        }
    }

    #[test]
    fn configuration_is_checked() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = runtime.enter();
        for (config, ok) in [
            (
                NotifierConfig {
                    webhooks: vec![webhook("not a url")],
                    ..NotifierConfig::default()
                },
                false,
            ),
            (
                NotifierConfig {
                    webhooks: vec![webhook("ftp://example.com/")],
                    ..NotifierConfig::default()
                },
                false,
            ),
            (
                NotifierConfig {
                    root_certificates_pem: Some(b"not pem".to_vec()),
                    ..NotifierConfig::default()
                },
                false,
            ),
            (
                NotifierConfig {
                    webhooks: vec![webhook("https://hooks.example.com/x")],
                    ..NotifierConfig::default()
                },
                true,
            ),
        ] {
            assert_eq!(Notifier::start(config.clone()).is_ok(), ok, "{config:?}");
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let initial = Duration::from_millis(100);
        for (attempt, low, high) in [
            (1, 50, 100),
            (2, 100, 200),
            (4, 400, 800),
            (40, 15_000, 30_000),
        ] {
            let wait = backoff(initial, attempt);
            assert!(
                wait >= Duration::from_millis(low) && wait <= Duration::from_millis(high),
                "attempt {attempt}: {wait:?}"
            );
        }
    }
}
