//! What every request goes through: a request id and span, token verification, the rate
//! budget and its headers, Prometheus counters, and the error shape for errors that did not
//! come from a handler (unknown routes, panics, framework rejections).

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::error::{ApiError, ShapedError, error_response};
use super::extract::{AuthFailure, Principal};
use super::state::ApiState;
use crate::auth::{AuthError, LimitClass, session_stamp};
use crate::model::Role;

tokio::task_local! {
    static TRACE_ID: String;
}

/// The current request's id, for error bodies and logs ("" outside a request).
pub fn current_trace_id() -> String {
    TRACE_ID.try_with(Clone::clone).unwrap_or_default()
}

const REQUEST_ID: &str = "x-request-id";
const TRACEPARENT: &str = "traceparent";

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Route label for metrics: the path with ids replaced, so label values stay few.
pub fn route_label(path: &str) -> String {
    const WORDS: &[&str] = &[
        "api",
        "v1",
        "configurations",
        "validate",
        "approve",
        "versions",
        "tags",
        "diff",
        "deploy",
        "conflicts",
        "edge-locations",
        "heartbeat",
        "metrics",
        "token",
        "deployments",
        "events",
        "promote",
        "pause",
        "resume",
        "rollback",
        "approve-next-region",
        "regions",
        "thresholds",
        "audit",
        "users",
        "password",
        "freeze",
        "cluster",
        "log",
        "status",
        "snapshot",
        "secret-key",
        "openapi.json",
        "schemas",
        "authentication",
        "login",
        "health",
        "ready",
        "quarantine",
    ];
    if path.len() > 256 {
        return "other".into();
    }
    path.split('/')
        .map(|segment| {
            if segment.is_empty() || WORDS.contains(&segment) {
                segment
            } else {
                ":id"
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The `method` label of the request metrics: the methods the API and console answer, every
/// other (invented) method `other`, so that callers cannot add series at will.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The route template a request matched (`/api/v1/configurations/{id}`), carried on the
/// response from inside the router to [`guard`], which runs outside it.
#[derive(Clone, Debug)]
struct MatchedRoute(axum::extract::MatchedPath);

/// Inside the router: records the matched route template on the response, for the `route`
/// label of the request metrics. Requests that match no route never pass here.
pub async fn record_route(request: Request, next: Next) -> Response {
    let matched = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let mut response = next.run(request).await;
    if let Some(matched) = matched {
        response.extensions_mut().insert(MatchedRoute(matched));
    }
    response
}

/// The longest request target (path and query) answered; longer ones get 414 with the error
/// body. Well below the HTTP layer's own limit (64 KiB), which answers without one.
const MAX_URI_BYTES: usize = 8 * 1024;

/// Which budget a request draws from (SPEC §5).
fn limit_class(method: &Method, path: &str) -> LimitClass {
    let api = path.strip_prefix("/api/v1/");
    let Some(api) = api else {
        return LimitClass::Public;
    };
    if api.starts_with("metrics/") || (method == Method::GET && api.ends_with("/metrics")) {
        return LimitClass::MetricsRead;
    }
    if api.starts_with("edge-locations/") && api.ends_with("/heartbeat") {
        return LimitClass::Heartbeat;
    }
    if method == Method::GET || method == Method::HEAD {
        return LimitClass::Read;
    }
    if api.ends_with("/validate") || api == "configurations/validate" {
        return LimitClass::Validate;
    }
    if api.starts_with("deployments") || api.ends_with("/deploy") || api.starts_with("freeze") {
        return LimitClass::DeploymentAction;
    }
    LimitClass::Write
}

async fn authenticate(
    state: &ApiState,
    headers: &HeaderMap,
) -> Result<Option<Principal>, AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| AuthError::Invalid("malformed Authorization header".into()))?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .ok_or_else(|| AuthError::Invalid("expected 'Authorization: Bearer <token>'".into()))?
        .trim();
    let claims = state.tokens().verify(token)?;
    // A token is only as good as what it speaks for today: a deleted user, a new password, a
    // changed role (the session stamp), a deleted edge or a rotated edge token end it at once.
    let subject = claims.sub.clone();
    let jti = claims.jti.clone();
    let location = claims.loc.clone();
    let stamp = claims.stm.clone();
    let role = claims.role;
    let current_role = state
        .store()
        .read(move |reader| {
            if role == Role::Edge {
                let Some(location) = location else {
                    return Ok(None);
                };
                Ok(reader
                    .edge(&location)?
                    .filter(|edge| edge.token_id == jti)
                    .map(|_| Role::Edge))
            } else {
                Ok(reader
                    .user(&subject)?
                    .filter(|user| stamp.as_deref() == Some(session_stamp(user).as_str()))
                    .map(|user| user.role))
            }
        })
        .await
        .map_err(|e| AuthError::Unavailable(e.to_string()))?;
    match current_role {
        Some(role) => Ok(Some(Principal {
            subject: claims.sub,
            role,
            location: claims.loc,
        })),
        None => Err(AuthError::Invalid(
            "token revoked (its user or edge was removed, or the password, role or edge token changed); log in again".into(),
        )),
    }
}

/// The middleware every request passes through.
pub async fn guard(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(request.headers());
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let route = route_label(&path);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %method,
        route = %route,
        traceId = tracing::field::Empty,
    );
    // A caller's W3C trace context makes this request part of the caller's trace. The request
    // id stays the caller's `X-Request-Id` (or a fresh one) either way: it is what error
    // bodies, logs and the audit name, and callers that send no `traceparent` rely on it.
    let continued = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|value| crate::telemetry::continue_trace(&span, value));
    if !continued {
        crate::telemetry::record_trace_id(&span);
    }
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "local".into());

    let uri_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    let work = async {
        if uri_bytes > MAX_URI_BYTES {
            return (None, StatusCode::URI_TOO_LONG.into_response());
        }
        if let Some(refusal) = refuse_write_on_standby(&state, &method, &path) {
            return (None, refusal);
        }
        // Nodes streaming the log poll many times a second: the cluster secret, not a
        // per-address budget, is what admits them.
        if path.starts_with("/api/v1/cluster/log")
            && super::cluster::peer_authenticated(&state, request.headers())
        {
            return (None, next.run(request).await);
        }
        let mut principal_key = None;
        match authenticate(&state, request.headers()).await {
            Ok(Some(principal)) => {
                principal_key = Some(principal.subject.clone());
                request.extensions_mut().insert(principal);
            }
            Ok(None) => {}
            Err(AuthError::Unavailable(message)) => {
                return (
                    None,
                    ApiError::Unavailable(format!("cannot check the token now: {message}"))
                        .into_response(),
                );
            }
            Err(failure) => {
                request.extensions_mut().insert(AuthFailure(failure));
            }
        }
        request
            .extensions_mut()
            .insert(ClientAddress(address.clone()));
        let class = limit_class(&method, &path);
        let key = principal_key.unwrap_or_else(|| format!("addr:{address}"));
        let budget = state.limits().check(class, &key);
        let response = if budget.allowed {
            next.run(request).await
        } else {
            ApiError::RateLimited {
                message: format!(
                    "rate limit of {} requests exceeded; retry in {} s",
                    budget.limit, budget.reset_seconds
                ),
                retry_after: budget.reset_seconds,
            }
            .into_response()
        };
        (Some(budget), response)
    };
    let (budget, response) = TRACE_ID
        .scope(id.clone(), work.instrument(span.clone()))
        .await;
    // The matched template, not the path: label values stay the routes of the API whatever
    // paths callers invent.
    let route_template = response
        .extensions()
        .get::<MatchedRoute>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.0.as_str().to_owned());
    let mut response = TRACE_ID
        .scope(id.clone(), async { shape_error(response).await })
        .await;

    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID, value);
    }
    if let Some(budget) = budget {
        for (name, value) in [
            ("x-ratelimit-limit", budget.limit as u64),
            ("x-ratelimit-remaining", budget.remaining as u64),
            ("x-ratelimit-reset", budget.reset_seconds),
        ] {
            headers.insert(name, HeaderValue::from(value));
        }
    }
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed().as_secs_f64();
    // An accepted heartbeat is edge traffic, not a change: the INFO log stays readable.
    let routine = route.ends_with("/heartbeat") && response.status().is_success();
    let labels = [
        ("method", method_label(&method).to_owned()),
        ("route", route_template),
        ("status", status),
    ];
    metrics::counter!("edgeplane_http_requests_total", &labels).increment(1);
    metrics::histogram!("edgeplane_http_request_duration_seconds", &labels).record(elapsed);
    span.in_scope(|| {
        let (status, elapsed_ms) = (response.status().as_u16(), elapsed * 1000.0);
        if routine {
            tracing::debug!(status, elapsed_ms, "request");
        } else {
            tracing::info!(status, elapsed_ms, "request");
        }
    });
    response
}

/// On a node that is not the primary, a write answers 503 `NOT_LEADER` naming the leader
/// (SPEC §9); reads, login and the cluster's own endpoints go through.
fn refuse_write_on_standby(state: &ApiState, method: &Method, path: &str) -> Option<Response> {
    if state.cluster().is_primary()
        || matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
    {
        return None;
    }
    let api = path.strip_prefix("/api/v1/")?;
    if api == "authentication/login" || api.starts_with("cluster/") || api == "cluster" {
        return None;
    }
    Some(
        ApiError::NotLeader {
            leader: state.cluster().leader_url(),
        }
        .into_response(),
    )
}

/// The caller's address, for login budgets.
#[derive(Debug, Clone)]
pub struct ClientAddress(pub String);

/// Gives every error response the error shape and the request's trace id.
async fn shape_error(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let trace_id = current_trace_id();
    let (parts, body) = response.into_parts();
    if parts.extensions.get::<ShapedError>().is_some() {
        return Response::from_parts(parts, body);
    }
    // A framework response (unknown route, wrong method, rejected body, panic): reshape it.
    let bytes = axum::body::to_bytes(body, 1 << 16)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("NOT_FOUND", "no such resource".to_string()),
        StatusCode::METHOD_NOT_ALLOWED => (
            "METHOD_NOT_ALLOWED",
            "this method is not allowed on this resource".to_string(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            ("PAYLOAD_TOO_LARGE", "request body too large".to_string())
        }
        StatusCode::UNAUTHORIZED => ("UNAUTHORIZED", text),
        StatusCode::FORBIDDEN => ("FORBIDDEN", text),
        StatusCode::REQUEST_TIMEOUT => ("REQUEST_TIMEOUT", "the request took too long".to_string()),
        StatusCode::URI_TOO_LONG => (
            "URI_TOO_LONG",
            format!("the request URI is longer than {MAX_URI_BYTES} bytes"),
        ),
        s if s.is_server_error() => {
            tracing::error!(status = s.as_u16(), body = %text, "internal error");
            (
                "INTERNAL_ERROR",
                "internal error; see the server log for this trace id".to_string(),
            )
        }
        _ => (
            "VALIDATION_ERROR",
            if text.is_empty() {
                "bad request".to_string()
            } else {
                text
            },
        ),
    };
    let mut rebuilt = error_response(status, code, message, Vec::new(), trace_id);
    for (name, value) in parts.headers.iter() {
        if name == header::RETRY_AFTER || name == header::ALLOW {
            rebuilt.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rebuilt
}
