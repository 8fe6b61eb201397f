//! Shared harness of the API tests: an app on a temp dir driven in-process through
//! `api::router`, login and user helpers, typical content of every configuration type, the
//! check of the SPEC §5 error shape, and a clock for the deployment engine that tests move.

// Each test file compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

pub(crate) mod cluster;
pub(crate) mod process;

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use edgeplane::api::ApiState;
use edgeplane::config::{LimitSettings, Settings};
use edgeplane::model::Timestamp;
use edgeplane::rollout::AnalysisOutcome;
use edgeplane::rollout::engine::{Analysis, AnalysisAnswer, AnalysisRequest, Clock};

/// The bootstrap admin's password in every test app.
pub(crate) const ADMIN_PASSWORD: &str = "admin-password-for-tests";
/// Password given to every user the helpers create.
pub(crate) const USER_PASSWORD: &str = "user-password-for-tests";
/// The JWT signing secret of every test app, so tests can mint their own tokens.
pub(crate) const JWT_SECRET: [u8; 32] = [42; 32];

/// Budgets high enough that no test meets them unless it means to.
pub(crate) fn generous_limits() -> LimitSettings {
    LimitSettings {
        writes_per_minute: 100_000,
        reads_per_minute: 100_000,
        validate_per_minute: 100_000,
        deployment_actions_per_minute: 100_000,
        metrics_reads_per_minute: 100_000,
        heartbeats_per_second: 100_000,
        public_per_minute: 100_000,
        login_attempts_per_minute: 100_000,
    }
}

/// A control plane on its own temp dir, and the bootstrap admin's token.
pub(crate) struct TestApp {
    pub(crate) state: ApiState,
    pub(crate) router: Router,
    pub(crate) admin: String,
    // Dropped last: the store lives in it.
    dir: tempfile::TempDir,
}

static NEXT_NAME: AtomicUsize = AtomicUsize::new(0);

/// A name no other call in this process returns.
pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", NEXT_NAME.fetch_add(1, Ordering::Relaxed))
}

impl TestApp {
    /// An app with generous limits.
    pub(crate) async fn new() -> TestApp {
        TestApp::with_limits(generous_limits()).await
    }

    /// An app with the given budgets.
    pub(crate) async fn with_limits(limits: LimitSettings) -> TestApp {
        TestApp::with_settings(|settings| settings.limits = limits).await
    }

    /// An app whose settings `adjust` may change (data dir, secret and limits are set first).
    pub(crate) async fn with_settings(adjust: impl FnOnce(&mut Settings)) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = Settings::default();
        settings.server.data_dir = dir.path().to_path_buf();
        settings.auth.jwt_secret = BASE64.encode(JWT_SECRET);
        settings.limits = generous_limits();
        adjust(&mut settings);
        let state = edgeplane::app::build(
            settings,
            edgeplane::telemetry::prometheus(),
            Some(ADMIN_PASSWORD.to_string()),
        )
        .expect("app builds");
        state.set_ready(true);
        let router = edgeplane::api::router(state.clone());
        let mut app = TestApp {
            state,
            router,
            admin: String::new(),
            dir,
        };
        app.admin = app.login("admin", ADMIN_PASSWORD).await;
        app
    }

    /// Sends a prepared request; the body is parsed as JSON (Null when empty, a string when
    /// not JSON).
    pub(crate) async fn send(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router never fails");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, headers, body)
    }

    /// A request with an optional bearer token and an optional JSON body.
    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => builder.body(Body::empty()),
        }
        .expect("request");
        self.send(request).await
    }

    pub(crate) async fn get(&self, path: &str, token: &str) -> (StatusCode, HeaderMap, Value) {
        self.request(Method::GET, path, Some(token), None).await
    }

    /// Logs in and returns the token; panics unless the login succeeds.
    pub(crate) async fn login(&self, username: &str, password: &str) -> String {
        let (status, _, body) = self
            .request(
                Method::POST,
                "/api/v1/authentication/login",
                None,
                Some(json!({"username": username, "password": password})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login of {username}: {body}");
        body["token"].as_str().expect("token").to_string()
    }

    /// Creates a user with `role` through the API as admin; returns its name.
    pub(crate) async fn create_user(&self, role: &str) -> String {
        let username = unique(&role.to_lowercase());
        let (status, _, body) = self
            .request(
                Method::POST,
                "/api/v1/users",
                Some(&self.admin),
                Some(json!({"username": username, "password": USER_PASSWORD, "role": role})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create user: {body}");
        username
    }

    /// A fresh user of `role` (Viewer, Developer, Operator, Admin), logged in.
    pub(crate) async fn user_token(&self, role: &str) -> String {
        let username = self.create_user(role).await;
        self.login(&username, USER_PASSWORD).await
    }

    /// Creates a configuration and returns its body; panics unless 201.
    pub(crate) async fn create_config(
        &self,
        token: &str,
        config_type: &str,
        content: Value,
    ) -> Value {
        let name = unique("config");
        let (status, _, body) = self
            .request(
                Method::POST,
                "/api/v1/configurations",
                Some(token),
                Some(json!({"name": name, "type": config_type, "content": content})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create configuration: {body}");
        body
    }

    /// Registers an edge location as admin; returns its body and its agent token.
    pub(crate) async fn create_edge(&self, location_id: &str) -> (Value, String) {
        let (status, _, body) = self
            .request(
                Method::POST,
                "/api/v1/edge-locations",
                Some(&self.admin),
                Some(edge_body(location_id)),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create edge: {body}");
        let token = body["agentToken"].as_str().expect("agentToken").to_string();
        (body, token)
    }
}

/// A valid edge-location body.
pub(crate) fn edge_body(location_id: &str) -> Value {
    json!({
        "locationId": location_id,
        "name": format!("POP {location_id}"),
        "region": "Europe",
        "countryCode": "DE",
        "city": "Frankfurt",
        "endpoint": "http://127.0.0.1:9/",
    })
}

/// A typical cache rule on `path_pattern` (each stored rule needs its own pattern: the same
/// pattern with other content is a conflict).
pub(crate) fn cache_rule(path_pattern: &str) -> Value {
    json!({
        "pathPattern": path_pattern,
        "ttl": 86400,
        "cacheControl": "public, max-age=86400",
        "cacheKey": ["$uri", "$args"],
        "varyHeaders": ["Accept-Encoding"],
    })
}

pub(crate) fn routing_rule(path_pattern: &str) -> Value {
    json!({
        "pathPattern": path_pattern,
        "origins": [
            {"name": "primary", "endpoint": "https://origin-1.example.com", "weight": 70, "priority": 1},
            {"name": "secondary", "endpoint": "https://origin-2.example.com", "weight": 30, "priority": 2}
        ],
        "failoverPolicy": {"retryAttempts": 3, "retryDelay": "500ms", "failoverThreshold": 5, "circuitBreakerTimeout": "30s"},
    })
}

pub(crate) fn security_rule(path_pattern: &str) -> Value {
    json!({
        "pathPattern": path_pattern,
        "waf": {"enabled": true, "rules": ["OWASP-CRS-3.3"], "mode": "detect"},
        "rateLimit": {"enabled": true, "limit": 100, "window": "60s", "key": "ip"},
        "geoBlocking": {"enabled": true, "mode": "blocklist", "countries": ["KP"]},
        "ipFiltering": {"allowlist": ["10.0.0.0/8"], "denylist": ["203.0.113.0/24"]},
    })
}

pub(crate) fn response_modification(path_pattern: &str) -> Value {
    json!({
        "pathPattern": path_pattern,
        "addHeaders": {"X-Frame-Options": "DENY"},
        "removeHeaders": ["Server"],
        "compression": {"enabled": true, "algorithms": ["gzip", "br"], "minSize": 1024},
    })
}

/// A self-signed certificate for `domain` with its private key (PEM).
pub(crate) fn certificate(domain: &str) -> (String, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec![domain.to_string()]).expect("certificate");
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

/// A typical SSL certificate configuration for `domain`; also returns the private key.
pub(crate) fn ssl_certificate(domain: &str) -> (Value, String) {
    let (cert, key) = certificate(domain);
    let content = json!({
        "domains": [domain],
        "certificate": cert,
        "privateKey": key,
        "autoRenew": true,
        "renewalDays": 30,
        "provider": "letsencrypt",
    });
    (content, key)
}

/// Typical valid content of each of the five types, each on its own path and domain.
pub(crate) fn typical_contents() -> Vec<(&'static str, Value)> {
    let path = unique("/typical");
    vec![
        ("CacheRule", cache_rule(&format!("{path}/cache/*"))),
        ("RoutingRule", routing_rule(&format!("{path}/route/*"))),
        ("SecurityRule", security_rule(&format!("{path}/security/*"))),
        (
            "SSLCertificate",
            ssl_certificate(&format!("{}.example.com", unique("typical"))).0,
        ),
        (
            "ResponseModification",
            response_modification(&format!("{path}/response/*")),
        ),
    ]
}

/// Asserts `status` and the SPEC §5 error shape: `error.code`, `message`, a `details` array,
/// `traceId` equal to the `x-request-id` header, and an RFC 3339 `timestamp`.
pub(crate) fn assert_error(
    (status, headers, body): &(StatusCode, HeaderMap, Value),
    expected_status: StatusCode,
    code: &str,
) {
    assert_eq!(*status, expected_status, "status; body: {body}");
    assert_error_shape(headers, body);
    assert_eq!(body["error"]["code"], code, "code; body: {body}");
}

/// The error shape alone, whatever the status and code.
pub(crate) fn assert_error_shape(headers: &HeaderMap, body: &Value) {
    let error = &body["error"];
    assert!(
        error["code"].as_str().is_some_and(|c| !c.is_empty()),
        "error.code: {body}"
    );
    assert!(error["message"].is_string(), "error.message: {body}");
    assert!(error["details"].is_array(), "error.details: {body}");
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id header");
    assert_eq!(error["traceId"], request_id, "traceId: {body}");
    let timestamp = error["timestamp"].as_str().expect("timestamp");
    assert!(is_rfc3339(timestamp), "timestamp {timestamp:?}");
}

pub(crate) fn is_rfc3339(text: &str) -> bool {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok()
}

/// A clock that moves only when told to: the deployment engine's time in tests that jump
/// over hours of waiting (geographic waves) instead of sleeping through them.
pub(crate) struct ManualClock {
    millis: AtomicI64,
}

impl ManualClock {
    pub(crate) fn new(start: Timestamp) -> Self {
        Self {
            millis: AtomicI64::new(start.millis()),
        }
    }

    pub(crate) fn set(&self, to: Timestamp) {
        self.millis.store(to.millis(), Ordering::SeqCst);
    }

    pub(crate) fn advance(&self, by: std::time::Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.millis.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.millis.load(Ordering::SeqCst))
    }
}

/// Analysis from edge health alone: the engine already fails a watch on NACKs and on target
/// edges that fall silent, so every metric verdict passes. For tests whose engine clock runs
/// away from the wall-clock time the metrics are stored at.
pub(crate) struct HealthOnlyAnalysis;

impl Analysis for HealthOnlyAnalysis {
    fn analyze(
        &self,
        _request: AnalysisRequest,
    ) -> futures_util::future::BoxFuture<'static, AnalysisAnswer> {
        Box::pin(async {
            AnalysisAnswer {
                outcome: AnalysisOutcome::Pass,
                data: std::collections::BTreeMap::from([(
                    "basis".to_string(),
                    "edge health only".to_string(),
                )]),
            }
        })
    }
}

/// Stores a draft cache rule `id` on `path_pattern` at version `version`, straight through the
/// store's one door, for tests that drive the store or the engine without the API.
pub(crate) fn store_cache_rule(
    store: &edgeplane::store::Store,
    id: &str,
    path_pattern: &str,
    version: &str,
    at: Timestamp,
) -> Result<(), edgeplane::store::StoreError> {
    use edgeplane::model::{ConfigStatus, ConfigType, Configuration, ConfigurationVersion};
    let content = json!({"pathPattern": path_pattern, "ttl": 60, "cacheControl": "public"});
    let configuration = Configuration {
        configuration_id: id.into(),
        name: id.into(),
        config_type: ConfigType::CacheRule,
        description: String::new(),
        content: content.clone(),
        schema_version: "1.0".into(),
        version: version.into(),
        tags: Vec::new(),
        status: ConfigStatus::Draft,
        created_by: "admin".into(),
        created_at: at,
        updated_at: at,
        approved_by: None,
        approved_at: None,
        is_deployed: false,
        deployed_locations: Vec::new(),
        metadata: Default::default(),
    };
    let version = ConfigurationVersion {
        version_id: format!("ver-{id}"),
        configuration_id: id.into(),
        version: version.into(),
        content,
        schema_version: "1.0".into(),
        change_description: "Initial version".into(),
        created_by: "admin".into(),
        created_at: at,
        status: ConfigStatus::Draft,
        approved_by: None,
        approved_at: None,
        approval_notes: None,
        is_deployed: false,
        metadata: Default::default(),
        tags: Vec::new(),
    };
    store
        .apply_blocking(edgeplane::store::CommandEnvelope::new(
            "admin",
            "",
            edgeplane::store::Command::CreateConfiguration {
                configuration,
                version,
            },
        ))
        .map(|_| ())
}
