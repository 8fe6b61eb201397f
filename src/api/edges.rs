//! Edge locations, their agent tokens and heartbeats (SPEC §2.3, §5 edge rows, §6).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, Detail};
use super::extract::{Json, PageQuery, Path, Principal, Query};
use super::middleware::current_trace_id;
use super::openapi::{Conflict, NotFound};
use super::state::ApiState;
use super::views::{AgentToken, CreatedEdgeLocation, EdgeLocationList, HeartbeatAnswer};
use crate::model::metrics::LATENCY_BUCKETS_MS;
use crate::model::{Capacity, EdgeHealth, EdgeLocation, EdgeType, MetricsSample, Role, Timestamp};
use crate::service::Caller;
use crate::store::{EdgeChanges, EdgeRecord, HeartbeatRecord};

/// An edge location to register or update.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = EdgeLocationRequest)]
pub struct EdgeBody {
    /// Required to register; on update it may be left out, and cannot change.
    #[schema(value_type = String, pattern = "^[a-z0-9-]{1,64}$")]
    location_id: Option<String>,
    #[schema(value_type = String, required = true, min_length = 1, max_length = 128)]
    name: Option<String>,
    #[schema(value_type = String, required = true, min_length = 1, max_length = 128)]
    region: Option<String>,
    /// ISO 3166-1 alpha-2, any case.
    #[schema(value_type = String, required = true, pattern = "^[A-Za-z]{2}$")]
    country_code: Option<String>,
    #[schema(value_type = String)]
    city: Option<String>,
    #[serde(rename = "type")]
    #[schema(value_type = EdgeType)]
    edge_type: Option<String>,
    /// The absolute http(s) URL of the edge's agent.
    #[schema(value_type = String, required = true)]
    endpoint: Option<String>,
    #[schema(value_type = Capacity)]
    capacity: Option<Capacity>,
    #[schema(value_type = bool)]
    is_active: Option<bool>,
    /// At most 64 entries; keys 1–128 bytes, values at most 4096 bytes.
    #[schema(value_type = BTreeMap<String, String>)]
    metadata: Option<BTreeMap<String, String>>,
}

fn check_location_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            "locationId",
            "locationId must be 1–64 characters of a-z, 0-9 and '-'",
        ))
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), ApiError> {
    let parsed = reqwest::Url::parse(endpoint).map_err(|e| {
        ApiError::invalid_field("endpoint", format!("endpoint must be an absolute URL: {e}"))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ApiError::invalid_field(
            "endpoint",
            "endpoint must be an absolute http:// or https:// URL",
        ));
    }
    Ok(())
}

impl EdgeBody {
    fn changes(&self) -> Result<EdgeChanges, ApiError> {
        let required = |value: &Option<String>, field: &str| -> Result<String, ApiError> {
            let value = value.as_deref().map(str::trim).unwrap_or_default();
            if value.is_empty() || value.len() > 128 {
                return Err(ApiError::invalid_field(
                    field,
                    format!("{field} must be 1 to 128 characters"),
                ));
            }
            Ok(value.to_string())
        };
        let name = required(&self.name, "name")?;
        let region = required(&self.region, "region")?;
        let country_code = self
            .country_code
            .clone()
            .unwrap_or_default()
            .to_ascii_uppercase();
        if !crate::validate::is_country_code(&country_code) {
            return Err(ApiError::invalid_field(
                "countryCode",
                "countryCode must be an ISO 3166-1 alpha-2 code",
            ));
        }
        let endpoint = self.endpoint.clone().unwrap_or_default();
        check_endpoint(&endpoint)?;
        let edge_type = match self.edge_type.as_deref() {
            None | Some("EdgePOP") => EdgeType::EdgePop,
            Some("Shield") => EdgeType::Shield,
            Some("Origin") => EdgeType::Origin,
            Some(_) => {
                return Err(ApiError::invalid_field(
                    "type",
                    "type must be EdgePOP, Shield or Origin",
                ));
            }
        };
        let metadata = super::configurations::check_metadata(&self.metadata)?;
        Ok(EdgeChanges {
            name,
            region,
            country_code,
            city: self.city.clone().unwrap_or_default(),
            edge_type,
            endpoint,
            capacity: self.capacity.clone().unwrap_or_default(),
            is_active: self.is_active.unwrap_or(true),
            metadata,
        })
    }
}

fn caller(principal: &Principal) -> Caller {
    Caller::new(principal.subject.clone(), current_trace_id())
}

/// An edge with its health judged now.
fn view(state: &ApiState, mut location: EdgeLocation) -> EdgeLocation {
    let now = Timestamp::now();
    let healthy_within = state.settings().edges.healthy_within.as_millis() as i64;
    let healthy = location.is_healthy_at(now, healthy_within);
    location.health.is_healthy = healthy;
    location
}

/// Register an edge; answers its agent token once.
#[utoipa::path(
    post,
    path = "/edge-locations",
    operation_id = "createEdgeLocation",
    tag = "edge-locations",
    request_body = EdgeBody,
    responses(
        (status = 201, description = "The edge with its agent token", body = CreatedEdgeLocation),
        (status = 409, response = Conflict),
    ),
)]
pub async fn create(
    State(state): State<ApiState>,
    principal: Principal,
    Json(body): Json<EdgeBody>,
) -> Result<Response, ApiError> {
    principal.require(Role::Admin)?;
    let location_id = body.location_id.clone().unwrap_or_default();
    check_location_id(&location_id)?;
    let changes = body.changes()?;
    let (location, token) = state
        .edges()
        .create(&caller(&principal), location_id, changes)
        .await?;
    let body = CreatedEdgeLocation {
        location: view(&state, location),
        agent_token: token,
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// Filters of the edge list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListFilter {
    /// Region name, any case.
    region: Option<String>,
    /// ISO 3166-1 alpha-2, any case.
    country_code: Option<String>,
    #[serde(rename = "type")]
    #[param(value_type = Option<EdgeType>)]
    edge_type: Option<String>,
    #[param(value_type = Option<bool>)]
    is_active: Option<String>,
    /// Healthy now: a recent heartbeat that reported healthy.
    #[param(value_type = Option<bool>)]
    is_healthy: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    page: PageQuery,
}

fn parse_bool(value: &Option<String>, field: &str) -> Result<Option<bool>, ApiError> {
    match value.as_deref() {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(ApiError::invalid_field(
            field,
            format!("{field} must be true or false"),
        )),
    }
}

/// List edges.
#[utoipa::path(
    get,
    path = "/edge-locations",
    operation_id = "listEdgeLocations",
    tag = "edge-locations",
    params(ListFilter, PageQuery),
    responses((status = 200, description = "A page of edges", body = EdgeLocationList)),
)]
pub async fn list(
    State(state): State<ApiState>,
    principal: Principal,
    Query(filter): Query<ListFilter>,
) -> Result<axum::Json<EdgeLocationList>, ApiError> {
    principal.require(Role::Viewer)?;
    let page = filter.page.check()?;
    let is_active = parse_bool(&filter.is_active, "isActive")?;
    let is_healthy = parse_bool(&filter.is_healthy, "isHealthy")?;
    let now = Timestamp::now();
    let healthy_within = state.settings().edges.healthy_within.as_millis() as i64;
    let unfiltered = filter.region.is_none()
        && filter.country_code.is_none()
        && filter.edge_type.is_none()
        && is_active.is_none()
        && is_healthy.is_none();
    if unfiltered {
        let (offset, limit) = (page.offset, page.limit);
        let found = state
            .store()
            .read(move |r| r.edges_page(offset, limit))
            .await?;
        let views = found
            .items
            .into_iter()
            .map(|r| view(&state, r.location))
            .collect();
        return Ok(axum::Json(EdgeLocationList::of(views, found.total, page)));
    }
    let records = state.store().read(|r| r.edges()).await?;
    let views: Vec<EdgeLocation> = records
        .into_iter()
        .map(|r| r.location)
        .filter(|e| {
            filter
                .region
                .as_deref()
                .is_none_or(|r| e.region.eq_ignore_ascii_case(r))
                && filter
                    .country_code
                    .as_deref()
                    .is_none_or(|c| e.country_code.eq_ignore_ascii_case(c))
                && filter
                    .edge_type
                    .as_deref()
                    .is_none_or(|t| e.edge_type.as_str() == t)
                && is_active.is_none_or(|a| e.is_active == a)
                && is_healthy.is_none_or(|h| e.is_healthy_at(now, healthy_within) == h)
        })
        .map(|e| view(&state, e))
        .collect();
    Ok(axum::Json(EdgeLocationList::page(views, page)))
}

async fn load(state: &ApiState, id: String) -> Result<EdgeRecord, ApiError> {
    super::find(state, "edge location", id, |r, id| r.edge(id)).await
}

/// Get an edge.
#[utoipa::path(
    get,
    path = "/edge-locations/{id}",
    operation_id = "getEdgeLocation",
    tag = "edge-locations",
    params(("id" = String, Path, description = "The locationId")),
    responses(
        (status = 200, description = "The edge", body = EdgeLocation),
        (status = 404, response = NotFound),
    ),
)]
pub async fn get(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<EdgeLocation>, ApiError> {
    principal.require(Role::Viewer)?;
    let record = load(&state, id).await?;
    Ok(axum::Json(view(&state, record.location)))
}

/// Update an edge.
#[utoipa::path(
    put,
    path = "/edge-locations/{id}",
    operation_id = "updateEdgeLocation",
    tag = "edge-locations",
    params(("id" = String, Path, description = "The locationId")),
    request_body = EdgeBody,
    responses(
        (status = 200, description = "The edge", body = EdgeLocation),
        (status = 404, response = NotFound),
    ),
)]
pub async fn update(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<EdgeBody>,
) -> Result<axum::Json<EdgeLocation>, ApiError> {
    principal.require(Role::Admin)?;
    if let Some(given) = &body.location_id
        && *given != id
    {
        return Err(ApiError::invalid_field(
            "locationId",
            "locationId cannot change",
        ));
    }
    let changes = body.changes()?;
    let location = state
        .edges()
        .update(&caller(&principal), id, changes)
        .await?;
    Ok(axum::Json(view(&state, location)))
}

/// Delete an edge (409 while a running deployment targets it).
#[utoipa::path(
    delete,
    path = "/edge-locations/{id}",
    operation_id = "deleteEdgeLocation",
    tag = "edge-locations",
    params(("id" = String, Path, description = "The locationId")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ),
)]
pub async fn delete(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require(Role::Admin)?;
    state.edges().delete(&caller(&principal), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rotate the edge's agent token; the old one stops working at once.
#[utoipa::path(
    post,
    path = "/edge-locations/{id}/token",
    operation_id = "rotateEdgeToken",
    tag = "edge-locations",
    params(("id" = String, Path, description = "The locationId")),
    responses(
        (status = 200, description = "The new agent token, shown this once", body = AgentToken),
        (status = 404, response = NotFound),
    ),
)]
pub async fn rotate_token(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<AgentToken>, ApiError> {
    principal.require(Role::Admin)?;
    let token = state
        .edges()
        .rotate_token(&caller(&principal), id.clone())
        .await?;
    Ok(axum::Json(AgentToken {
        location_id: id,
        agent_token: token,
    }))
}

/// Clear an edge's quarantine: an Admin lets it back into deployments.
#[utoipa::path(
    delete,
    path = "/edge-locations/{id}/quarantine",
    operation_id = "clearEdgeQuarantine",
    tag = "edge-locations",
    params(("id" = String, Path, description = "The locationId")),
    responses(
        (status = 200, description = "The edge", body = EdgeLocation),
        (status = 404, response = NotFound),
    ),
)]
pub async fn clear_quarantine(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<EdgeLocation>, ApiError> {
    principal.require(Role::Admin)?;
    let location = state
        .edges()
        .clear_quarantine(&caller(&principal), id)
        .await?;
    Ok(axum::Json(view(&state, location)))
}

/// What an edge reports each interval (SPEC §6, §8.1).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Heartbeat)]
pub struct HeartbeatBody {
    #[serde(default)]
    health: EdgeHealth,
    /// configurationId → version the edge runs; at most 10,000 entries.
    #[serde(default)]
    active_configurations: BTreeMap<String, String>,
    #[serde(default)]
    metrics: Option<MetricsSample>,
    #[serde(default)]
    started_at: Option<Timestamp>,
}

/// The largest count one heartbeat may report for its interval: beyond any edge's traffic, and
/// small enough that a month of samples added up stays far within 64 bits.
const MAX_COUNT: u64 = 1 << 48;
/// The longest interval a metrics sample may cover (0 means the default interval): the
/// longest the series keep, so that an agent that carried its counts through a long outage
/// of the control plane still delivers them.
const MAX_INTERVAL_SECONDS: u32 = 31 * 86_400;

impl HeartbeatBody {
    /// Refuses values no edge can report, each named by its field: percentages outside
    /// 0–100, counts beyond [`MAX_COUNT`], a latency histogram without the fixed buckets.
    /// Negative counts and non-numbers are refused by parsing already.
    fn check(&self) -> Result<(), ApiError> {
        let mut details = Vec::new();
        let health = &self.health;
        for (field, value) in [
            ("health.cpuUsage", health.cpu_usage),
            ("health.memoryUsage", health.memory_usage),
            ("health.diskUsage", health.disk_usage),
            ("health.bandwidthUtilization", health.bandwidth_utilization),
        ] {
            if !(value.is_finite() && (0.0..=100.0).contains(&value)) {
                details.push(Detail::new(
                    field,
                    format!("must be a percentage from 0 to 100 (got {value})"),
                ));
            }
        }
        let mut count = |field: &str, value: u64| {
            if value > MAX_COUNT {
                details.push(Detail::new(
                    field,
                    format!("must be at most {MAX_COUNT} (got {value})"),
                ));
            }
        };
        count("health.activeConnections", health.active_connections);
        if let Some(sample) = &self.metrics {
            for (field, value) in [
                ("metrics.requests", sample.requests),
                ("metrics.cacheHits", sample.cache_hits),
                ("metrics.cacheMisses", sample.cache_misses),
                ("metrics.errors4xx", sample.errors4xx),
                ("metrics.errors5xx", sample.errors5xx),
                ("metrics.bytesSent", sample.bytes_sent),
                ("metrics.bytesReceived", sample.bytes_received),
            ] {
                count(field, value);
            }
            for (slot, value) in sample.latency.counts.iter().enumerate() {
                count(&format!("metrics.latency.counts.{slot}"), *value);
            }
            if sample.interval_seconds > MAX_INTERVAL_SECONDS {
                details.push(Detail::new(
                    "metrics.intervalSeconds",
                    format!("must be at most {MAX_INTERVAL_SECONDS}"),
                ));
            }
            let buckets = LATENCY_BUCKETS_MS.len();
            if sample.latency.counts.len() != buckets + 1 {
                details.push(Detail::new(
                    "metrics.latency.counts",
                    format!("must have {} counts, one per fixed bucket", buckets + 1),
                ));
            }
            if !sample.latency.bounds_ms.is_empty()
                && sample.latency.bounds_ms.as_slice() != LATENCY_BUCKETS_MS.as_slice()
            {
                details.push(Detail::new(
                    "metrics.latency.boundsMs",
                    format!("must be the fixed bucket bounds {LATENCY_BUCKETS_MS:?}"),
                ));
            }
        }
        match details.first() {
            None => Ok(()),
            Some(first) => Err(ApiError::Validation {
                message: format!("impossible heartbeat value at {}", first.field),
                details,
            }),
        }
    }
}

/// Post a heartbeat (an edge for itself, or an Admin).
#[utoipa::path(
    post,
    path = "/edge-locations/{id}/heartbeat",
    operation_id = "postHeartbeat",
    tag = "edge-locations",
    params(("id" = String, Path, description = "The locationId")),
    request_body = HeartbeatBody,
    responses(
        (status = 200, description = "Accepted for recording", body = HeartbeatAnswer),
        (status = 404, response = NotFound),
    ),
)]
pub async fn heartbeat(
    State(state): State<ApiState>,
    principal: Principal,
    peer: Option<axum::Extension<super::PeerCertificate>>,
    Path(id): Path<String>,
    Json(body): Json<HeartbeatBody>,
) -> Result<axum::Json<HeartbeatAnswer>, ApiError> {
    // With `server.tls_client_ca`, an edge proves itself with a certificate as well as its token.
    if principal.role == Role::Edge
        && peer.is_some_and(|peer| peer.required_for_edges && !peer.presented)
    {
        return Err(ApiError::Forbidden(
            "edges must present a client certificate signed by the server's client CA".into(),
        ));
    }
    // Object-level authorization: an edge token speaks for its own location only.
    let allowed = match principal.role {
        Role::Admin => true,
        Role::Edge => principal.location.as_deref() == Some(id.as_str()),
        _ => false,
    };
    if !allowed {
        return Err(ApiError::Forbidden(format!(
            "this token may not post heartbeats for '{id}'"
        )));
    }
    body.check()?;
    if body.active_configurations.len() > 10_000 {
        return Err(ApiError::invalid_field(
            "activeConfigurations",
            "too many entries",
        ));
    }
    let received_at = Timestamp::now();
    // An edge token proves its edge exists; an Admin may name any id.
    let known = principal.role == Role::Edge;
    state
        .edges()
        .heartbeat(
            HeartbeatRecord {
                location_id: id,
                received_at,
                health: body.health,
                active_configurations: body.active_configurations,
                metrics: body.metrics,
                started_at: body.started_at,
            },
            known,
        )
        .await?;
    Ok(axum::Json(HeartbeatAnswer { received_at }))
}
