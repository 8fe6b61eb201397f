//! Health, readiness, Prometheus, the audit log and the schema index.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use super::extract::{Json, PageQuery, Principal, Query};
use super::state::ApiState;
use super::views::{AuditList, Health, Ready, SchemaIndex, SchemaLink};
use crate::model::{ConfigType, Role, RollbackConfig, Timestamp};
use crate::store::{AuditFilter, Command, CommandEnvelope};

/// Liveness.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "system",
    responses((status = 200, description = "The process is up", body = Health)),
)]
pub async fn health() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// Readiness: the store answers and takes writes, and the server is not starting or
/// draining. While writes are refused (a full disk, an I/O error being recovered from) the
/// answer is 503 with the reason, and says whether reads are still served.
#[utoipa::path(
    get,
    path = "/ready",
    operation_id = "ready",
    tag = "system",
    responses((status = 200, description = "Ready for traffic", body = Ready)),
)]
pub async fn ready(State(state): State<ApiState>) -> Result<axum::Json<Ready>, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::Unavailable("starting or shutting down".into()));
    }
    let store = state.store().status();
    if !store.writable {
        let reason = store
            .reason
            .unwrap_or_else(|| "the store is recovering from an I/O error".into());
        let reads = if store.readable {
            "reads are still served"
        } else {
            "reads resume once the store file is reopened"
        };
        return Err(ApiError::Unavailable(format!(
            "not ready: writes are refused: {reason}; {reads}"
        )));
    }
    state
        .store()
        .read(|r| r.last_log_position())
        .await
        .map_err(|_| ApiError::Unavailable("the store is not answering".into()))?;
    Ok(axum::Json(Ready {
        status: "ready".into(),
    }))
}

/// Prometheus metrics; with `server.metrics_token` set, only for that bearer token.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "prometheus",
    tag = "system",
    responses(
        (status = 200, description = "The text exposition format", content_type = "text/plain", body = String),
        (status = 401, response = super::openapi::Unauthorized),
    ),
)]
pub async fn prometheus(State(state): State<ApiState>, headers: header::HeaderMap) -> Response {
    if let Some(expected) = state
        .settings()
        .server
        .metrics_token
        .as_deref()
        .filter(|token| !token.is_empty())
    {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Digests compared, so the time taken tells nothing about the token.
        use sha2::Digest;
        if sha2::Sha256::digest(given.trim()) != sha2::Sha256::digest(expected) {
            return ApiError::Unauthorized(
                "/metrics needs 'Authorization: Bearer <server.metrics_token>'".into(),
            )
            .into_response();
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.prometheus().render(),
    )
        .into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such resource".into())
}

/// Index of the JSON Schemas of the configuration types.
#[utoipa::path(
    get,
    path = "/schemas",
    operation_id = "listSchemas",
    tag = "schemas",
    responses((status = 200, description = "One link per configuration type", body = SchemaIndex)),
)]
pub async fn schemas(principal: Principal) -> Result<axum::Json<SchemaIndex>, ApiError> {
    principal.require(Role::Viewer)?;
    let schemas = ConfigType::ALL
        .iter()
        .map(|t| SchemaLink {
            config_type: *t,
            href: format!("/api/v1/schemas/{}", t.as_str()),
        })
        .collect();
    Ok(axum::Json(SchemaIndex { schemas }))
}

/// Filters of the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entity type or id.
    entity: Option<String>,
    /// Who made the change.
    user: Option<String>,
    /// RFC 3339; only records from then on.
    #[param(format = DateTime)]
    since: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    page: PageQuery,
}

/// The audit log: who changed what, when, under which trace id.
#[utoipa::path(
    get,
    path = "/audit",
    operation_id = "listAudit",
    tag = "system",
    params(AuditQuery, PageQuery),
    responses((status = 200, description = "A page of audit records", body = AuditList)),
)]
pub async fn audit(
    State(state): State<ApiState>,
    principal: Principal,
    Query(query): Query<AuditQuery>,
) -> Result<axum::Json<AuditList>, ApiError> {
    principal.require(Role::Admin)?;
    let page = query.page.check()?;
    let since = match query.since.as_deref() {
        Some(text) => Some(Timestamp::parse_rfc3339(text).ok_or_else(|| {
            ApiError::invalid_field("since", "since must be an RFC 3339 timestamp")
        })?),
        None => None,
    };
    let filter = AuditFilter {
        entity: query.entity.clone(),
        user: query.user.clone(),
        since,
    };
    let found = state
        .store()
        .read(move |r| r.audit(&filter, page.offset, page.limit))
        .await?;
    Ok(axum::Json(AuditList::of(found.items, found.total, page)))
}

/// The server-wide default RollbackConfig.
#[utoipa::path(
    get,
    path = "/metrics/thresholds",
    operation_id = "getThresholds",
    tag = "metrics",
    responses((status = 200, description = "The thresholds", body = RollbackConfig)),
)]
pub async fn get_thresholds(
    State(state): State<ApiState>,
    principal: Principal,
) -> Result<axum::Json<RollbackConfig>, ApiError> {
    principal.require(Role::Viewer)?;
    Ok(axum::Json(state.thresholds().await?))
}

/// Set the server-wide default RollbackConfig.
#[utoipa::path(
    put,
    path = "/metrics/thresholds",
    operation_id = "setThresholds",
    tag = "metrics",
    request_body = RollbackConfig,
    responses((status = 200, description = "The thresholds", body = RollbackConfig)),
)]
pub async fn set_thresholds(
    State(state): State<ApiState>,
    principal: Principal,
    Json(thresholds): Json<RollbackConfig>,
) -> Result<axum::Json<RollbackConfig>, ApiError> {
    principal.require(Role::Admin)?;
    let problems = thresholds.validate();
    if !problems.is_empty() {
        return Err(ApiError::Validation {
            message: "invalid thresholds".into(),
            details: problems
                .into_iter()
                .map(|e| super::error::Detail::new(e.field, e.message))
                .collect(),
        });
    }
    state
        .store()
        .apply(CommandEnvelope::new(
            principal.subject.clone(),
            super::middleware::current_trace_id(),
            Command::SetThresholds {
                thresholds: thresholds.clone(),
            },
        ))
        .await?;
    Ok(axum::Json(thresholds))
}
