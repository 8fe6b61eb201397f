//! Metrics queries (SPEC §5 metrics rows, §8.2): per edge, configuration, region and
//! deployment, with percentiles merged from histograms.

use axum::extract::State;
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

use super::error::ApiError;
use super::extract::{Path, Principal, Query};
use super::openapi::NotFound;
use super::state::ApiState;
use super::views::{
    ConfigurationMetrics, DeploymentMetrics, EdgeMetrics, GroupMetrics, LocationMetrics,
    RegionMetrics, VerdictEntry,
};
use crate::model::{Role, Timestamp, parse_duration};
use crate::monitor::aggregate::{WindowStats, WindowTotals};
use crate::monitor::analysis::NO_BASELINE;
use crate::monitor::judge::VERDICT_KEY;

/// Longest window a query may ask for: the coarse ring's retention.
const MAX_WINDOW_MS: i64 = 30 * 24 * 3600 * 1000;
/// Most series points one answer carries.
const MAX_POINTS: i64 = 10_000;

/// The time window of a metrics query: `window`, or `from` (and optionally `to`).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WindowQuery {
    /// Up to now, e.g. `5m`, `1h`, `PT1H` (default 1h, at most 30 days).
    window: Option<String>,
    /// RFC 3339 start.
    #[param(format = DateTime)]
    from: Option<String>,
    /// RFC 3339 end (default now).
    #[param(format = DateTime)]
    to: Option<String>,
    /// Also answer a series with points this far apart (at least 1s, at most 10,000 points).
    step: Option<String>,
}

/// A checked time window.
struct Window {
    from: Timestamp,
    to: Timestamp,
    step_ms: Option<i64>,
    now: Timestamp,
}

impl WindowQuery {
    fn check(&self) -> Result<Window, ApiError> {
        let now = Timestamp::now();
        let parse_time = |text: &str, field: &str| {
            Timestamp::parse_rfc3339(text).ok_or_else(|| {
                ApiError::invalid_field(field, format!("{field} must be an RFC 3339 timestamp"))
            })
        };
        let (from, to) = match (&self.from, &self.to, &self.window) {
            (Some(from), to, None) => {
                let to = match to {
                    Some(text) => parse_time(text, "to")?,
                    None => now,
                };
                (parse_time(from, "from")?, to)
            }
            (None, None, window) => {
                let span = parse_duration(window.as_deref().unwrap_or("1h"))
                    .map_err(|e| ApiError::invalid_field("window", e.to_string()))?;
                (Timestamp(now.millis() - span.as_millis() as i64), now)
            }
            _ => {
                return Err(ApiError::validation(
                    "give either window, or from (and optionally to)",
                ));
            }
        };
        if to.millis() <= from.millis() {
            return Err(ApiError::invalid_field("from", "from must be before to"));
        }
        if to.millis() - from.millis() > MAX_WINDOW_MS {
            return Err(ApiError::invalid_field(
                "window",
                "the window is at most 30 days",
            ));
        }
        let step_ms = match &self.step {
            Some(text) => {
                let step = parse_duration(text)
                    .map_err(|e| ApiError::invalid_field("step", e.to_string()))?;
                let step_ms = step.as_millis() as i64;
                if step_ms < 1000 || (to.millis() - from.millis()) / step_ms > MAX_POINTS {
                    return Err(ApiError::invalid_field(
                        "step",
                        format!("step must be at least 1s and give at most {MAX_POINTS} points"),
                    ));
                }
                Some(step_ms)
            }
            None => None,
        };
        Ok(Window {
            from,
            to,
            step_ms,
            now,
        })
    }
}

/// Stats of `locations` merged, and per location.
async fn stats_for(
    state: &ApiState,
    locations: Vec<String>,
    window: &Window,
) -> Result<(WindowStats, Vec<LocationMetrics>), ApiError> {
    let (from, to, now, step) = (window.from, window.to, window.now, window.step_ms);
    let per_location = state
        .store()
        .read(move |reader| {
            let mut out = Vec::with_capacity(locations.len());
            for location in locations {
                let samples = reader.series(&location, from, to, now)?;
                out.push((location, samples));
            }
            Ok(out)
        })
        .await?;
    let mut all = Vec::new();
    let mut rows = Vec::new();
    for (location, samples) in per_location {
        let totals = WindowTotals::from_samples(&samples, from, to);
        rows.push(LocationMetrics {
            location_id: location,
            stats: totals.stats(),
        });
        all.extend(samples);
    }
    all.sort_by_key(|(t, _)| *t);
    let stats = WindowStats::compute(&all, from, to, step)
        .map_err(|e| ApiError::validation(e.to_string()))?;
    Ok((stats, rows))
}

/// Metrics of one edge over a window.
#[utoipa::path(
    get,
    path = "/metrics/edge-locations/{id}",
    operation_id = "getEdgeMetrics",
    tag = "metrics",
    params(("id" = String, Path, description = "The locationId"), WindowQuery),
    responses(
        (status = 200, description = "The edge's figures over the window", body = EdgeMetrics),
        (status = 404, response = NotFound),
    ),
)]
pub async fn edge(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(query): Query<WindowQuery>,
) -> Result<axum::Json<EdgeMetrics>, ApiError> {
    principal.require(Role::Viewer)?;
    let window = query.check()?;
    super::find(&state, "edge location", id.clone(), |r, id| r.edge(id)).await?;
    let (stats, _) = stats_for(&state, vec![id.clone()], &window).await?;
    Ok(axum::Json(EdgeMetrics {
        location_id: id,
        from: window.from,
        to: window.to,
        stats,
    }))
}

/// The same as GET /metrics/edge-locations/{id}, under the edge.
#[utoipa::path(
    get,
    path = "/edge-locations/{id}/metrics",
    operation_id = "getEdgeLocationMetrics",
    tag = "edge-locations",
    params(("id" = String, Path, description = "The locationId"), WindowQuery),
    responses(
        (status = 200, description = "The edge's figures over the window", body = EdgeMetrics),
        (status = 404, response = NotFound),
    ),
)]
pub async fn edge_of_location(
    state: State<ApiState>,
    principal: Principal,
    id: Path<String>,
    query: Query<WindowQuery>,
) -> Result<axum::Json<EdgeMetrics>, ApiError> {
    edge(state, principal, id, query).await
}

/// Metrics of the edges running a configuration, aggregate and per location.
#[utoipa::path(
    get,
    path = "/metrics/configurations/{id}",
    operation_id = "getConfigurationMetrics",
    tag = "metrics",
    params(("id" = String, Path, description = "The configurationId"), WindowQuery),
    responses(
        (status = 200, description = "The figures over the window", body = ConfigurationMetrics),
        (status = 404, response = NotFound),
    ),
)]
pub async fn configuration(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(query): Query<WindowQuery>,
) -> Result<axum::Json<ConfigurationMetrics>, ApiError> {
    principal.require(Role::Viewer)?;
    let window = query.check()?;
    let configuration = super::find(&state, "configuration", id.clone(), |r, id| {
        r.configuration(id)
    })
    .await?;
    let (stats, rows) =
        stats_for(&state, configuration.deployed_locations.clone(), &window).await?;
    Ok(axum::Json(ConfigurationMetrics {
        configuration_id: id,
        from: window.from,
        to: window.to,
        locations: rows,
        stats,
    }))
}

/// Metrics of a region, aggregate and per location.
#[utoipa::path(
    get,
    path = "/metrics/regions/{region}",
    operation_id = "getRegionMetrics",
    tag = "metrics",
    params(("region" = String, Path, description = "A region name, any case"), WindowQuery),
    responses(
        (status = 200, description = "The figures over the window", body = RegionMetrics),
        (status = 404, response = NotFound),
    ),
)]
pub async fn region(
    State(state): State<ApiState>,
    principal: Principal,
    Path(region): Path<String>,
    Query(query): Query<WindowQuery>,
) -> Result<axum::Json<RegionMetrics>, ApiError> {
    principal.require(Role::Viewer)?;
    let window = query.check()?;
    let wanted = region.clone();
    let locations: Vec<String> = state
        .store()
        .read(move |r| {
            Ok(r.edges()?
                .into_iter()
                .filter(|e| e.location.region.eq_ignore_ascii_case(&wanted))
                .map(|e| e.location.location_id)
                .collect())
        })
        .await?;
    if locations.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no edge locations in region '{region}'"
        )));
    }
    let (stats, rows) = stats_for(&state, locations, &window).await?;
    Ok(axum::Json(RegionMetrics {
        region,
        from: window.from,
        to: window.to,
        locations: rows,
        stats,
    }))
}

/// Canary against baseline for a deployment, with every analysis verdict and its numbers.
#[utoipa::path(
    get,
    path = "/metrics/deployments/{id}",
    operation_id = "getDeploymentMetrics",
    tag = "metrics",
    params(("id" = String, Path, description = "The deploymentId")),
    responses(
        (status = 200, description = "Canary and baseline figures and the verdicts", body = DeploymentMetrics),
        (status = 404, response = NotFound),
    ),
)]
pub async fn deployment(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<DeploymentMetrics>, ApiError> {
    principal.require(Role::Viewer)?;
    let deployment =
        super::find(&state, "deployment", id.clone(), |r, id| r.deployment(id)).await?;
    let now = Timestamp::now();
    let from = deployment.started_at.unwrap_or(deployment.created_at);
    let to = deployment
        .completed_at
        .unwrap_or(now)
        .max(from.plus_millis(1000));
    let window = Window {
        from,
        to,
        step_ms: None,
        now,
    };
    let (canary, baseline): (Vec<_>, Vec<_>) =
        deployment.edges.iter().partition(|(_, e)| e.touched);
    let canary: Vec<String> = canary.into_iter().map(|(l, _)| l.clone()).collect();
    let baseline: Vec<String> = baseline.into_iter().map(|(l, _)| l.clone()).collect();
    let (canary_stats, _) = stats_for(&state, canary.clone(), &window).await?;
    let (baseline_stats, baseline_note) = if baseline.is_empty() {
        (None, Some(NO_BASELINE.to_string()))
    } else {
        let (stats, _) = stats_for(&state, baseline.clone(), &window).await?;
        (Some(stats), None)
    };
    let verdicts: Vec<VerdictEntry> = deployment
        .events
        .iter()
        .filter_map(|event| {
            let verdict: Value = serde_json::from_str(event.data.get(VERDICT_KEY)?).ok()?;
            Some(VerdictEntry {
                at: event.at,
                message: event.message.clone(),
                verdict,
            })
        })
        .collect();
    Ok(axum::Json(DeploymentMetrics {
        deployment_id: deployment.deployment_id,
        status: deployment.status,
        from,
        to,
        canary: GroupMetrics {
            locations: canary,
            metrics: Some(canary_stats),
            note: None,
        },
        baseline: GroupMetrics {
            locations: baseline,
            metrics: baseline_stats,
            note: baseline_note,
        },
        pre_deployment_metrics: deployment.pre_deployment_metrics,
        post_deployment_metrics: deployment.post_deployment_metrics,
        rollback_config: deployment.rollback_config,
        verdicts,
    }))
}
