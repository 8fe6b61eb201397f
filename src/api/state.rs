//! What the HTTP layer works with: the use cases, the store for reads, and the request
//! machinery (tokens, rate budgets, metrics). Built once by the composition root; cheap to
//! clone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::{RateLimits, TokenIssuer};
use crate::config::Settings;
use crate::fleet::HeartbeatIntake;
use crate::fleet::PushClient;
use crate::model::RollbackConfig;
use crate::monitor::alerts::Notifier;
use crate::rollout::engine::Engine;
use crate::secrets::SecretBox;
use crate::service::{Configurations, Deployments, Edges, Users};
use crate::store::{Store, StoreError};
use crate::validate::Validator;

/// The parts an [`ApiState`] is made of.
pub struct ApiParts {
    pub settings: Settings,
    pub store: Store,
    pub tokens: Arc<TokenIssuer>,
    pub limits: RateLimits,
    pub secrets: SecretBox,
    pub validator: Arc<Validator>,
    pub prometheus: PrometheusHandle,
    pub heartbeats: HeartbeatIntake,
    pub engine: Engine,
    pub push_client: PushClient,
    pub notifier: Notifier,
    pub configurations: Configurations,
    pub deployments: Deployments,
    pub edges: Edges,
    pub users: Users,
    pub cluster: crate::cluster::Cluster,
}

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    parts: ApiParts,
    ready: AtomicBool,
    event_streams: super::streams::EventStreams,
}

impl ApiState {
    /// A state that is not ready yet (`/ready` answers 503 until [`ApiState::set_ready`]).
    pub fn new(parts: ApiParts) -> Self {
        let event_streams = super::streams::EventStreams::new(
            parts.settings.server.max_event_streams,
            parts.settings.server.max_event_streams_per_user,
        );
        Self {
            inner: Arc::new(Inner {
                parts,
                ready: AtomicBool::new(false),
                event_streams,
            }),
        }
    }
    pub fn settings(&self) -> &Settings {
        &self.inner.parts.settings
    }
    pub fn store(&self) -> &Store {
        &self.inner.parts.store
    }
    pub fn tokens(&self) -> &TokenIssuer {
        &self.inner.parts.tokens
    }
    pub fn limits(&self) -> &RateLimits {
        &self.inner.parts.limits
    }
    pub fn secrets(&self) -> &SecretBox {
        &self.inner.parts.secrets
    }
    pub fn validator(&self) -> &Validator {
        &self.inner.parts.validator
    }
    pub fn prometheus(&self) -> &PrometheusHandle {
        &self.inner.parts.prometheus
    }
    pub fn heartbeats(&self) -> &HeartbeatIntake {
        &self.inner.parts.heartbeats
    }
    pub fn push_client(&self) -> &PushClient {
        &self.inner.parts.push_client
    }
    pub fn notifier(&self) -> &Notifier {
        &self.inner.parts.notifier
    }
    pub fn engine(&self) -> &Engine {
        &self.inner.parts.engine
    }
    pub fn configurations(&self) -> &Configurations {
        &self.inner.parts.configurations
    }
    pub fn deployments(&self) -> &Deployments {
        &self.inner.parts.deployments
    }
    pub fn edges(&self) -> &Edges {
        &self.inner.parts.edges
    }
    pub fn users(&self) -> &Users {
        &self.inner.parts.users
    }
    /// The open event streams and their caps.
    pub fn event_streams(&self) -> &super::streams::EventStreams {
        &self.inner.event_streams
    }
    pub fn cluster(&self) -> &crate::cluster::Cluster {
        &self.inner.parts.cluster
    }
    /// The server-wide default RollbackConfig.
    pub async fn thresholds(&self) -> Result<RollbackConfig, StoreError> {
        self.store().read(|r| r.thresholds()).await
    }
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Release);
    }
}
