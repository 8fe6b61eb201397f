//! Health, readiness, Prometheus, the audit log and the schema index.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{Json, PageQuery, Principal, Query, page_of};
use super::state::ApiState;
use crate::model::{ConfigType, Role, RollbackConfig, Timestamp};
use crate::store::{AuditFilter, Command, CommandEnvelope};

pub async fn health() -> axum::Json<Value> {
    axum::Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

/// Ready when the store answers and the server is not draining.
pub async fn ready(State(state): State<ApiState>) -> Result<axum::Json<Value>, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::Unavailable("starting or shutting down".into()));
    }
    state
        .store()
        .read(|r| r.last_log_position())
        .await
        .map_err(|_| ApiError::Unavailable("the store is not answering".into()))?;
    Ok(axum::Json(json!({"status": "ready"})))
}

pub async fn prometheus(State(state): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.prometheus().render(),
    )
        .into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such resource".into())
}

pub async fn schemas(principal: Principal) -> Result<axum::Json<Value>, ApiError> {
    principal.require(Role::Viewer)?;
    let types: Vec<Value> = ConfigType::ALL
        .iter()
        .map(|t| json!({"type": t.as_str(), "href": format!("/api/v1/schemas/{}", t.as_str())}))
        .collect();
    Ok(axum::Json(json!({"schemas": types})))
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    entity: Option<String>,
    user: Option<String>,
    since: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

pub async fn audit(
    State(state): State<ApiState>,
    principal: Principal,
    Query(query): Query<AuditQuery>,
) -> Result<axum::Json<Value>, ApiError> {
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
    Ok(axum::Json(page_of(
        "entries",
        found.items,
        found.total,
        page,
    )))
}

pub async fn get_thresholds(
    State(state): State<ApiState>,
    principal: Principal,
) -> Result<axum::Json<RollbackConfig>, ApiError> {
    principal.require(Role::Viewer)?;
    Ok(axum::Json(state.thresholds().await?))
}

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
