//! The cluster endpoints (SPEC §9): the node's view and promotion for operators, and under
//! `/cluster/log` what nodes ask of each other, authenticated with the cluster secret.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use super::extract::{Principal, Query};
use super::openapi::Conflict;
use super::state::ApiState;
use crate::cluster::wire::{self, LogQuery, PeerStatus, SecretKey};
use crate::cluster::{ClusterError, ClusterView, LogAnswer, Promoted};
use crate::model::Role;

impl From<ClusterError> for ApiError {
    fn from(error: ClusterError) -> Self {
        match error {
            ClusterError::Conflict(message) => ApiError::Conflict(message),
            ClusterError::Store(error) => error.into(),
            ClusterError::Invalid(message) => ApiError::Internal(message),
        }
    }
}

/// Refuses a node-to-node request that does not carry the cluster secret.
fn require_peer(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    if peer_authenticated(state, headers) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(format!(
            "this endpoint is for the cluster's nodes: send the cluster secret in {}",
            wire::SECRET_HEADER
        )))
    }
}

/// Whether the request carries this node's cluster secret.
pub fn peer_authenticated(state: &ApiState, headers: &HeaderMap) -> bool {
    headers
        .get(wire::SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|presented| {
            wire::secret_matches(&state.cluster().settings().secret, presented)
        })
}

/// This node's place in the cluster: role, term, leader, indexes and its peers' lag.
#[utoipa::path(
    get,
    path = "/cluster",
    operation_id = "getCluster",
    tag = "cluster",
    responses((status = 200, description = "The node's view of its cluster", body = ClusterView)),
)]
pub async fn view(
    State(state): State<ApiState>,
    principal: Principal,
) -> Result<axum::Json<ClusterView>, ApiError> {
    principal.require(Role::Viewer)?;
    Ok(axum::Json(state.cluster().view().await?))
}

/// Makes this standby the primary at the next term.
#[utoipa::path(
    post,
    path = "/cluster/promote",
    operation_id = "promoteNode",
    tag = "cluster",
    responses(
        (status = 200, description = "This node is now the primary", body = Promoted),
        (status = 409, response = Conflict),
    ),
)]
pub async fn promote(
    State(state): State<ApiState>,
    principal: Principal,
) -> Result<axum::Json<Promoted>, ApiError> {
    principal.require(Role::Admin)?;
    Ok(axum::Json(state.cluster().promote().await?))
}

/// Parameters of a standby's log request.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct LogParams {
    /// First index wanted; also acknowledges every entry before it.
    from: u64,
    /// Term of the standby's entry at `from - 1` (0 for none).
    prev_term: u64,
    /// The standby's current term.
    term: u64,
    node_id: String,
    #[serde(default)]
    url: String,
    /// Milliseconds to wait for a new entry when there is none (at most 5000).
    #[serde(default)]
    wait_ms: u64,
}

/// The command log from an index (postcard), for a standby; waits up to `waitMs` for a new
/// entry. 409 when the standby must install a copy of the store first.
#[utoipa::path(
    get,
    path = "/cluster/log",
    operation_id = "streamLog",
    tag = "cluster",
    params(LogParams),
    responses(
        (status = 200, description = "Log entries (postcard)", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 409, response = Conflict),
    ),
)]
pub async fn log(
    State(state): State<ApiState>,
    headers: HeaderMap,
    params: Result<Query<LogParams>, ApiError>,
) -> Result<Response, ApiError> {
    // Who asks is checked before what is asked: a caller without the secret learns nothing.
    require_peer(&state, &headers)?;
    let Query(params) = params?;
    let query = LogQuery {
        from: params.from.max(1),
        prev_term: params.prev_term,
        term: params.term,
        node_id: params.node_id,
        url: params.url,
        wait_ms: params.wait_ms,
    };
    match state.cluster().serve_log(query).await? {
        LogAnswer::Entries(batch) => {
            let body = postcard::to_stdvec(&batch)
                .map_err(|e| ApiError::Internal(format!("cannot encode log entries: {e}")))?;
            Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
        }
        LogAnswer::NotLeader(leader) => Err(ApiError::NotLeader { leader }),
        LogAnswer::SnapshotRequired(reason) => Err(ApiError::Conflict(reason)),
    }
}

/// Who this node is: id, URL, role, term and last log index.
#[utoipa::path(
    get,
    path = "/cluster/log/status",
    operation_id = "nodeStatus",
    tag = "cluster",
    responses((status = 200, description = "This node", body = PeerStatus)),
)]
pub async fn status(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<axum::Json<PeerStatus>, ApiError> {
    require_peer(&state, &headers)?;
    Ok(axum::Json(state.cluster().status().await?))
}

/// A consistent snapshot of the store for a standby whose log cannot continue from this
/// one's (the format of `GET /cluster/snapshot`); the log goes on after the position it holds.
#[utoipa::path(
    get,
    path = "/cluster/log/snapshot",
    operation_id = "copyStore",
    tag = "cluster",
    responses((status = 200, description = "The store's content", content_type = "application/octet-stream", body = Vec<u8>)),
)]
pub async fn copy(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    require_peer(&state, &headers)?;
    if !state.cluster().is_primary() {
        return Err(ApiError::NotLeader {
            leader: state.cluster().leader_url(),
        });
    }
    let store = state.store().clone();
    let body = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        store.write_snapshot(&mut out).map(|_| out)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("copy task failed: {e}")))??;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
}

/// The at-rest encryption key, for a standby's first start: a promoted standby must open the
/// sealed edge tokens and TLS keys it replicated.
#[utoipa::path(
    get,
    path = "/cluster/log/secret-key",
    operation_id = "secretKey",
    tag = "cluster",
    responses((status = 200, description = "The key (base64)", body = SecretKey)),
)]
pub async fn secret_key(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<axum::Json<SecretKey>, ApiError> {
    require_peer(&state, &headers)?;
    let configured = state.settings().secrets.encryption_key.trim().to_string();
    let key = if configured.is_empty() {
        let path = state
            .settings()
            .server
            .data_dir
            .join(crate::service::open::SECRET_KEY_FILE);
        tokio::fs::read_to_string(&path)
            .await
            .map_err(|e| ApiError::Internal(format!("cannot read {}: {e}", path.display())))?
            .trim()
            .to_string()
    } else {
        configured
    };
    Ok(axum::Json(SecretKey { key }))
}
