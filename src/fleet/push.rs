//! The push client the deployment engine uses to talk to thousands of edges: one shared
//! connection pool, a bound on pushes in flight, a deadline on every attempt, and retries
//! with exponential backoff and full jitter for failures that may pass (SPEC §6, §7). The
//! client is the deployment engine's and the reconciler's `EdgeTransport`.
//!
//! Every push and rollback carries the node's cluster term (`X-Edgeplane-Term`, SPEC §9). An
//! edge that has seen a higher one answers 409 `STALE_TERM` with it: that is
//! [`PushError::StaleTerm`], never retried and never a NACK or a timeout, and the term is
//! published on [`PushClient::seen_terms`] so the node can step down. Beside the term a
//! node names itself (`X-Edgeplane-Leader`, its advertised URL) once it is told to, so edges
//! that take its pushes send it their heartbeats.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use rand::Rng;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Semaphore, watch};

use crate::protocol::{
    ActiveConfigurations, LeaderAnnouncement, PushMode, PushReply, PushRequest, RollbackRequest,
    chain, checksum, http_client_with_identity,
};
use crate::rollout::engine::{EdgeAnswer, EdgeTarget, EdgeTransport, PushContent};

/// Tuning of a [`PushClient`].
#[derive(Clone, Debug)]
pub struct PushOptions {
    /// Deadline of one attempt, connect included.
    pub timeout: Duration,
    /// Attempts after the first for timeouts, connection failures and 5xx/429 answers.
    pub retries: u32,
    /// First backoff ceiling; doubled per retry, capped by `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Pushes in flight at once across the whole client.
    pub max_in_flight: usize,
    /// Idle keep-alive connections kept per edge.
    pub pool_idle_per_edge: usize,
    /// PEM bundle of the CAs that sign edge certificates. Without it the system store is
    /// used when there is one; a machine with no CA bundle still gets a working client that
    /// speaks plain HTTP (and refuses https until a CA file is given).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key presented to edges that ask for one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            retries: 2,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            max_in_flight: 256,
            pool_idle_per_edge: 2,
            ca_file: None,
            client_cert: None,
        }
    }
}

/// What an edge said to a push or rollback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// The edge runs `version`; `latency` runs from the first attempt to the ack.
    Acked { version: String, latency: Duration },
    /// The edge refused; final, never retried.
    Nacked { reason: String },
}

/// Why a push got no answer from the edge, by kind.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("edge {endpoint}: no answer within {timeout:?} ({attempts} attempts)")]
    Timeout {
        endpoint: String,
        timeout: Duration,
        attempts: u32,
    },
    #[error("edge {endpoint}: connection failed or dropped ({attempts} attempts): {detail}")]
    Connect {
        endpoint: String,
        attempts: u32,
        detail: String,
    },
    #[error("edge {endpoint}: unintelligible reply: {detail}")]
    Protocol { endpoint: String, detail: String },
    #[error("edge {endpoint}: refused our token (401/403)")]
    Unauthorized { endpoint: String },
    #[error("edge {endpoint}: HTTP {status} ({attempts} attempts): {body}")]
    Status {
        endpoint: String,
        status: u16,
        attempts: u32,
        body: String,
    },
    /// The edge has seen a higher term than ours: another node is primary now.
    #[error("edge {endpoint}: refused term {ours}, it has seen term {seen} (STALE_TERM)")]
    StaleTerm {
        endpoint: String,
        ours: u64,
        seen: u64,
    },
    #[error("push client setup: {0}")]
    Setup(String),
}

impl PushError {
    /// Short kind name for logs, metrics and deployment events.
    pub fn kind(&self) -> &'static str {
        match self {
            PushError::Timeout { .. } => "timeout",
            PushError::Connect { .. } => "connect",
            PushError::Protocol { .. } => "protocol",
            PushError::Unauthorized { .. } => "unauthorized",
            PushError::Status { .. } => "status",
            PushError::StaleTerm { .. } => "stale_term",
            PushError::Setup(_) => "setup",
        }
    }
}

/// A cheap-to-clone handle over one connection pool and one in-flight bound.
#[derive(Clone, Debug)]
pub struct PushClient {
    http: reqwest::Client,
    in_flight: Arc<Semaphore>,
    options: Arc<PushOptions>,
    terms: Arc<Terms>,
}

/// The term pushes carry and the highest one edges answered with.
#[derive(Debug)]
struct Terms {
    /// 0 sends no term header.
    ours: AtomicU64,
    /// Highest term an edge named in a `STALE_TERM` refusal.
    seen: watch::Sender<u64>,
    /// The URL pushes name as the primary's beside the term; none names nobody.
    sender_url: std::sync::RwLock<Option<http::HeaderValue>>,
}

/// One attempt's failure, before the retry policy decides.
enum AttemptError {
    Timeout,
    Connect(String),
    Protocol(String),
    Unauthorized,
    Status(u16, String),
    StaleTerm { ours: u64, seen: u64 },
}

impl AttemptError {
    fn retryable(&self) -> bool {
        match self {
            AttemptError::Timeout | AttemptError::Connect(_) => true,
            AttemptError::Status(status, _) => *status >= 500 || *status == 429 || *status == 408,
            AttemptError::Protocol(_)
            | AttemptError::Unauthorized
            | AttemptError::StaleTerm { .. } => false,
        }
    }
}

const BODY_LIMIT: usize = 2048;

impl PushClient {
    pub fn new(options: PushOptions) -> Result<Self, PushError> {
        let identity = match &options.client_cert {
            Some((cert, key)) => Some(
                crate::protocol::tls::client_identity(
                    ("edges.client_cert", cert),
                    ("edges.client_key", key),
                )
                .map_err(PushError::Setup)?,
            ),
            None => None,
        };
        let http = http_client_with_identity(
            options.timeout,
            options.pool_idle_per_edge,
            options.ca_file.as_deref(),
            identity,
        )
        .map_err(PushError::Setup)?;
        Ok(Self {
            http,
            in_flight: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
            options: Arc::new(options),
            terms: Arc::new(Terms {
                ours: AtomicU64::new(0),
                seen: watch::Sender::new(0),
                sender_url: std::sync::RwLock::new(None),
            }),
        })
    }

    pub fn options(&self) -> &PushOptions {
        &self.options
    }

    /// Sets the term every push and rollback carries from now on: the store's current term
    /// (0 sends none). Clones share it.
    pub fn set_term(&self, term: u64) {
        self.terms.ours.store(term, Ordering::SeqCst);
    }

    /// Sets the URL every push and rollback names as its sender's (`X-Edgeplane-Leader`, beside
    /// a term): the URL edges heartbeat once they take the push. Clones share it.
    pub fn set_sender_url(&self, url: &str) {
        let value = http::HeaderValue::from_str(url).ok();
        if let Ok(mut slot) = self.terms.sender_url.write() {
            *slot = value;
        }
    }

    fn sender_url(&self) -> Option<http::HeaderValue> {
        self.terms.sender_url.read().ok()?.clone()
    }

    /// The term pushes carry.
    pub fn term(&self) -> u64 {
        self.terms.ours.load(Ordering::SeqCst)
    }

    /// The highest term any edge answered a push with `STALE_TERM` (0 until one does). When
    /// it passes the node's own term another node is primary: the hook to step down on.
    pub fn seen_terms(&self) -> watch::Receiver<u64> {
        self.terms.seen.subscribe()
    }

    /// `PUT {endpoint}/edge/v1/configurations/{configuration_id}`.
    pub async fn push(
        &self,
        endpoint: &str,
        token: &str,
        configuration_id: &str,
        request: &PushRequest,
    ) -> Result<PushOutcome, PushError> {
        let body = serde_json::to_vec(request).map_err(|e| PushError::Setup(e.to_string()))?;
        self.push_encoded(endpoint, token, configuration_id, body.into())
            .await
    }

    /// [`PushClient::push`] of a body already encoded, shared by every edge it goes to.
    pub async fn push_encoded(
        &self,
        endpoint: &str,
        token: &str,
        configuration_id: &str,
        body: Bytes,
    ) -> Result<PushOutcome, PushError> {
        let url = format!(
            "{}/edge/v1/configurations/{configuration_id}",
            endpoint.trim_end_matches('/')
        );
        self.send_reply(endpoint, reqwest::Method::PUT, url, token, body)
            .await
    }

    /// `POST {endpoint}/edge/v1/configurations/{configuration_id}/rollback`.
    pub async fn rollback(
        &self,
        endpoint: &str,
        token: &str,
        configuration_id: &str,
        to_version: Option<&str>,
    ) -> Result<PushOutcome, PushError> {
        let url = format!(
            "{}/edge/v1/configurations/{configuration_id}/rollback",
            endpoint.trim_end_matches('/')
        );
        let request = RollbackRequest {
            to_version: to_version.map(str::to_owned),
            deactivate_if_none: to_version.is_none(),
        };
        let body = serde_json::to_vec(&request).map_err(|e| PushError::Setup(e.to_string()))?;
        self.send_reply(endpoint, reqwest::Method::POST, url, token, body.into())
            .await
    }

    /// `POST {endpoint}/edge/v1/leader`: tells the edge this node is primary at
    /// `announcement.term`, reachable at `announcement.url`. Retried like a push; an edge that
    /// has seen a higher term answers [`PushError::StaleTerm`].
    pub async fn announce(
        &self,
        endpoint: &str,
        token: &str,
        announcement: &LeaderAnnouncement,
    ) -> Result<LeaderAnnouncement, PushError> {
        let url = format!(
            "{}{}",
            endpoint.trim_end_matches('/'),
            crate::protocol::term::LEADER_PATH
        );
        let body = serde_json::to_vec(announcement).map_err(|e| PushError::Setup(e.to_string()))?;
        let (status, reply, _, attempts) = self
            .with_retries(
                endpoint,
                reqwest::Method::POST,
                &url,
                token,
                Some(body.into()),
            )
            .await?;
        ok_json(endpoint, status, attempts, &reply)
    }

    /// `GET {endpoint}/edge/v1/active-configurations`.
    pub async fn active(
        &self,
        endpoint: &str,
        token: &str,
    ) -> Result<ActiveConfigurations, PushError> {
        let url = format!(
            "{}/edge/v1/active-configurations",
            endpoint.trim_end_matches('/')
        );
        let (status, body, _, attempts) = self
            .with_retries(endpoint, reqwest::Method::GET, &url, token, None)
            .await?;
        ok_json(endpoint, status, attempts, &body)
    }

    async fn send_reply(
        &self,
        endpoint: &str,
        method: reqwest::Method,
        url: String,
        token: &str,
        body: Bytes,
    ) -> Result<PushOutcome, PushError> {
        let (status, reply, started, attempts) = self
            .with_retries(endpoint, method, &url, token, Some(body))
            .await?;
        match (status, parse_json::<PushReply>(endpoint, &reply)) {
            (200, Ok(PushReply::Acked { version })) => Ok(PushOutcome::Acked {
                version,
                latency: started.elapsed(),
            }),
            (200 | 422, Ok(PushReply::Nacked { reason })) => Ok(PushOutcome::Nacked { reason }),
            (200 | 422, Err(e)) => Err(e),
            (status, _) => Err(PushError::Status {
                endpoint: endpoint.to_owned(),
                status,
                attempts,
                body: trimmed(&reply),
            }),
        }
    }

    /// Runs attempts until one gets an answer that is final (2xx, 422, other 4xx) or the
    /// retries are spent. Returns status, body and when the first attempt started.
    async fn with_retries(
        &self,
        endpoint: &str,
        method: reqwest::Method,
        url: &str,
        token: &str,
        body: Option<Bytes>,
    ) -> Result<(u16, Bytes, Instant, u32), PushError> {
        // The semaphore is never closed, so acquire only fails if that invariant breaks.
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|e| PushError::Setup(e.to_string()))?;
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let error = match self.attempt(&method, url, token, body.as_ref()).await {
                Ok((status, reply)) if !AttemptError::Status(status, String::new()).retryable() => {
                    return Ok((status, reply, started, attempts));
                }
                Ok((status, reply)) => AttemptError::Status(status, trimmed(&reply)),
                Err(error) => error,
            };
            if !error.retryable() || attempts > self.options.retries {
                return Err(self.final_error(endpoint, error, attempts));
            }
            tokio::time::sleep(self.backoff(attempts)).await;
        }
    }

    async fn attempt(
        &self,
        method: &reqwest::Method,
        url: &str,
        token: &str,
        body: Option<&Bytes>,
    ) -> Result<(u16, Bytes), AttemptError> {
        let mut request = self.http.request(method.clone(), url).bearer_auth(token);
        let ours = self.term();
        if ours > 0 {
            request = request.header(crate::protocol::term::TERM_HEADER, ours);
            if let Some(url) = self.sender_url() {
                request = request.header(crate::protocol::term::LEADER_HEADER, url);
            }
        }
        // The edge may join the deployment's trace; it is free to ignore it.
        if let Some(traceparent) = crate::telemetry::traceparent(&tracing::Span::current()) {
            request = request.header("traceparent", traceparent);
        }
        if let Some(body) = body {
            request = request
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let exchange = async {
            let response = request.send().await.map_err(classify)?;
            let status = response.status().as_u16();
            if status == 401 || status == 403 {
                return Err(AttemptError::Unauthorized);
            }
            if status == 409
                && let Some(seen) = response
                    .headers()
                    .get(crate::protocol::term::TERM_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(crate::protocol::term::parse_term)
            {
                self.terms.seen.send_if_modified(|highest| {
                    let higher = seen > *highest;
                    if higher {
                        *highest = seen;
                    }
                    higher
                });
                return Err(AttemptError::StaleTerm { ours, seen });
            }
            let reply = response.bytes().await.map_err(classify)?;
            Ok((status, reply))
        };
        match tokio::time::timeout(self.options.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(AttemptError::Timeout),
        }
    }

    /// Full jitter: uniform in [0, min(max, base * 2^(attempt-1))].
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.options.backoff_base.as_millis() as u64;
        let ceiling = base
            .saturating_mul(1u64 << (attempt.saturating_sub(1)).min(20))
            .min(self.options.backoff_max.as_millis() as u64);
        Duration::from_millis(rand::rng().random_range(0..=ceiling))
    }

    fn final_error(&self, endpoint: &str, error: AttemptError, attempts: u32) -> PushError {
        let endpoint = endpoint.to_owned();
        match error {
            AttemptError::Timeout => PushError::Timeout {
                endpoint,
                timeout: self.options.timeout,
                attempts,
            },
            AttemptError::Connect(detail) => PushError::Connect {
                endpoint,
                attempts,
                detail,
            },
            AttemptError::Protocol(detail) => PushError::Protocol { endpoint, detail },
            AttemptError::Unauthorized => PushError::Unauthorized { endpoint },
            AttemptError::Status(status, body) => PushError::Status {
                endpoint,
                status,
                attempts,
                body,
            },
            AttemptError::StaleTerm { ours, seen } => PushError::StaleTerm {
                endpoint,
                ours,
                seen,
            },
        }
    }
}

/// Connection-level failures (refused, reset, closed early) are retryable; anything that
/// got bytes back that are not HTTP is a protocol error, which retrying will not fix.
fn classify(error: reqwest::Error) -> AttemptError {
    if error.is_timeout() {
        return AttemptError::Timeout;
    }
    if error.is_connect() {
        return AttemptError::Connect(chain(&error));
    }
    let detail = chain(&error);
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return AttemptError::Connect(detail);
        }
        source = cause.source();
    }
    // hyper reports a peer that closed without answering as an incomplete message, with no
    // io::Error underneath.
    if detail.contains("connection closed") || detail.contains("connection reset") {
        return AttemptError::Connect(detail);
    }
    AttemptError::Protocol(detail)
}

/// The JSON body of a 200 answer; any other status is [`PushError::Status`].
fn ok_json<T: DeserializeOwned>(
    endpoint: &str,
    status: u16,
    attempts: u32,
    body: &[u8],
) -> Result<T, PushError> {
    if status != 200 {
        return Err(PushError::Status {
            endpoint: endpoint.to_owned(),
            status,
            attempts,
            body: trimmed(body),
        });
    }
    parse_json(endpoint, body)
}

fn parse_json<T: DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T, PushError> {
    serde_json::from_slice(body).map_err(|e| PushError::Protocol {
        endpoint: endpoint.to_owned(),
        detail: format!("{e}; body: {}", trimmed(body)),
    })
}

fn trimmed(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(BODY_LIMIT)]);
    text.into_owned()
}

/// The body of a push of `content`: its checksum and canonical form are computed here, once
/// per content and mode (see [`PushContent::encoded`]).
fn encode(content: &PushContent) -> Result<Bytes, PushError> {
    let request = PushRequest {
        version: content.version.clone(),
        config_type: content.config_type,
        checksum: checksum(&content.content),
        content: if content.mode == PushMode::Activate {
            Value::Null
        } else {
            (*content.content).clone()
        },
        metadata: content.metadata.clone(),
        mode: content.mode,
    };
    serde_json::to_vec(&request)
        .map(Bytes::from)
        .map_err(|e| PushError::Setup(e.to_string()))
}

/// The engine's answer for what the push client got back.
fn answer(result: Result<PushOutcome, PushError>) -> EdgeAnswer {
    match result {
        Ok(PushOutcome::Acked { latency, .. }) => EdgeAnswer::Acked {
            latency_ms: latency.as_millis() as u64,
        },
        Ok(PushOutcome::Nacked { reason }) => EdgeAnswer::Nacked { reason },
        Err(PushError::StaleTerm { seen, .. }) => EdgeAnswer::StaleTerm { seen },
        Err(error) => EdgeAnswer::Failed {
            error: error.to_string(),
        },
    }
}

impl EdgeTransport for PushClient {
    fn push(&self, target: EdgeTarget, content: PushContent) -> BoxFuture<'static, EdgeAnswer> {
        let client = self.clone();
        Box::pin(async move {
            let body = match content.encoded.get() {
                Some(body) => body.clone(),
                None => match encode(&content) {
                    Ok(body) => content.encoded.get_or_init(|| body).clone(),
                    Err(error) => {
                        return answer(Err(error));
                    }
                },
            };
            answer(
                client
                    .push_encoded(
                        &target.endpoint,
                        &target.token,
                        &content.configuration_id,
                        body,
                    )
                    .await,
            )
        })
    }

    fn rollback(
        &self,
        target: EdgeTarget,
        configuration_id: String,
        to_version: Option<String>,
    ) -> BoxFuture<'static, EdgeAnswer> {
        let client = self.clone();
        Box::pin(async move {
            answer(
                client
                    .rollback(
                        &target.endpoint,
                        &target.token,
                        &configuration_id,
                        to_version.as_deref(),
                    )
                    .await,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_its_ceiling() {
        let client = PushClient::new(PushOptions {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(250),
            ..PushOptions::default()
        })
        .unwrap();
        for attempt in 1..10 {
            let wait = client.backoff(attempt);
            let ceiling = (100u64 << (attempt - 1)).min(250);
            assert!(
                wait <= Duration::from_millis(ceiling),
                "{attempt}: {wait:?}"
            );
        }
    }

    fn content(mode: PushMode) -> PushContent {
        PushContent {
            configuration_id: "config-1".into(),
            version: "1.0.1".into(),
            config_type: crate::model::ConfigType::CacheRule,
            content: Arc::new(serde_json::json!({"ttl": 60, "pathPattern": "/a/*"})),
            metadata: Default::default(),
            mode,
            encoded: Arc::default(),
        }
    }

    #[test]
    fn a_shared_body_is_the_push_request_of_its_mode() {
        let apply = content(PushMode::Apply);
        let body = encode(&apply).unwrap();
        let request: PushRequest = serde_json::from_slice(&body).unwrap();
        assert_eq!(request.checksum, checksum(&apply.content));
        assert_eq!(request.content, *apply.content);
        assert_eq!(request.mode, PushMode::Apply);
        apply.encoded.get_or_init(|| body.clone());

        // Clones share the encoded body; another mode starts without one.
        assert_eq!(
            apply.clone().with_mode(PushMode::Apply).encoded.get(),
            Some(&body)
        );
        let activate = apply.with_mode(PushMode::Activate);
        assert!(activate.encoded.get().is_none());
        let request: PushRequest = serde_json::from_slice(&encode(&activate).unwrap()).unwrap();
        assert_eq!(request.mode, PushMode::Activate);
        assert!(request.content.is_null());
        assert_eq!(request.checksum, checksum(&activate.content));
    }

    #[test]
    fn client_builds_without_a_ca_file() {
        assert!(PushClient::new(PushOptions::default()).is_ok());
    }
}
