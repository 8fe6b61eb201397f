//! Deployments: create (and dry-run), list, inspect, watch live, and the operator actions;
//! the global freeze (SPEC §5 deployment rows, §7).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::Stream;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::extract::{Json, OptionalJson, PageQuery, Path, Principal, Query};
use super::middleware::current_trace_id;
use super::openapi::{Conflict, NotFound};
use super::state::ApiState;
use super::views::{
    DeploymentAccepted, DeploymentEdges, DeploymentEventMessage, DeploymentList,
    DeploymentStreamEvent, DeploymentView, DryRunAnswer, EdgeProgress, EdgeRow, FreezeView,
    SkippedEdge,
};
use crate::model::deployment::CreateDeployment;
use crate::model::{Deployment, DeploymentStatus, EdgeState, Role};
use crate::rollout::OperatorAction;
use crate::service::{Admission, Caller};
use crate::store::Freeze;

fn caller(principal: &Principal) -> Caller {
    Caller::new(principal.subject.clone(), current_trace_id())
}

/// A deployment as the API shows it: the record without the engine's cursor, plus progress.
fn view(deployment: &Deployment, full: bool) -> DeploymentView {
    DeploymentView::new(deployment, full)
}

/// Whether to plan only.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// `true`: answer the plan and push nothing.
    #[param(value_type = Option<bool>)]
    dry_run: Option<String>,
}

/// Start a deployment (202), or plan it with `?dryRun=true` (200).
#[utoipa::path(
    post,
    path = "/deployments",
    operation_id = "createDeployment",
    tag = "deployments",
    params(CreateQuery),
    request_body = CreateDeployment,
    responses(
        (status = 202, description = "Accepted; the engine drives it from here", body = DeploymentAccepted,
            headers(("Location" = String, description = "The deployment's URL"))),
        (status = 200, description = "The plan of a dry run", body = DryRunAnswer),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ),
)]
pub async fn create(
    State(state): State<ApiState>,
    principal: Principal,
    Query(query): Query<CreateQuery>,
    Json(body): Json<CreateDeployment>,
) -> Result<Response, ApiError> {
    let dry_run = match query.dry_run.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "dryRun",
                "dryRun must be true or false",
            ));
        }
    };
    start(state, principal, body, dry_run).await
}

/// Deploy this version: POST /deployments with the configuration and version from the path.
#[utoipa::path(
    post,
    path = "/configurations/{id}/versions/{version}/deploy",
    operation_id = "deployVersion",
    tag = "deployments",
    params(
        ("id" = String, Path, description = "The configurationId"),
        ("version" = String, Path, description = "MAJOR.MINOR.PATCH"),
        CreateQuery,
    ),
    request_body(content = Option<CreateDeployment>, description = "May be left out; `configurationId` and `configurationVersion` come from the path"),
    responses(
        (status = 202, description = "Accepted; the engine drives it from here", body = DeploymentAccepted,
            headers(("Location" = String, description = "The deployment's URL"))),
        (status = 200, description = "The plan of a dry run", body = DryRunAnswer),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ),
)]
pub async fn deploy_version(
    State(state): State<ApiState>,
    principal: Principal,
    Path((configuration_id, version)): Path<(String, String)>,
    Query(query): Query<CreateQuery>,
    OptionalJson(body): OptionalJson<Value>,
) -> Result<Response, ApiError> {
    let mut body = if body.is_null() {
        Value::Object(serde_json::Map::new())
    } else {
        body
    };
    if !body.is_object() {
        return Err(ApiError::validation("the body must be a JSON object"));
    }
    body["configurationId"] = Value::String(configuration_id);
    body["configurationVersion"] = Value::String(version);
    let request: CreateDeployment = serde_json::from_value(body)
        .map_err(|e| ApiError::validation(format!("invalid request body: {e}")))?;
    start(
        state,
        principal,
        request,
        query.dry_run.as_deref() == Some("true"),
    )
    .await
}

async fn start(
    state: ApiState,
    principal: Principal,
    request: CreateDeployment,
    dry_run: bool,
) -> Result<Response, ApiError> {
    principal.require(Role::Operator)?;
    let admission = state
        .deployments()
        .start(&caller(&principal), request, dry_run)
        .await?;
    let deployment = match admission {
        Admission::DryRun { deployment, plan } => {
            return Ok(axum::Json(DryRunAnswer {
                dry_run: true,
                configuration_id: deployment.configuration_id,
                configuration_version: deployment.configuration_version,
                strategy: deployment.strategy,
                plan,
            })
            .into_response());
        }
        Admission::Started(deployment) => deployment,
    };
    let deployment_id = deployment.deployment_id.clone();
    let mut response = (
        StatusCode::ACCEPTED,
        axum::Json(DeploymentAccepted {
            deployment_id: deployment_id.clone(),
            status: DeploymentStatus::Pending,
            progress_percentage: 0,
        }),
    )
        .into_response();
    if let Ok(value) = format!("/api/v1/deployments/{deployment_id}").parse() {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// Filters of the deployment list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListFilter {
    configuration_id: Option<String>,
    /// A status, any case.
    #[param(value_type = Option<DeploymentStatus>)]
    status: Option<String>,
    /// A strategy, any case.
    #[param(value_type = Option<crate::model::Strategy>)]
    strategy: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    page: PageQuery,
}

/// List deployments, newest first.
#[utoipa::path(
    get,
    path = "/deployments",
    operation_id = "listDeployments",
    tag = "deployments",
    params(ListFilter, PageQuery),
    responses((status = 200, description = "A page of deployments", body = DeploymentList)),
)]
pub async fn list(
    State(state): State<ApiState>,
    principal: Principal,
    Query(filter): Query<ListFilter>,
) -> Result<axum::Json<DeploymentList>, ApiError> {
    principal.require(Role::Viewer)?;
    let page = filter.page.check()?;
    let mut all = state.store().read(|r| r.deployments()).await?;
    all.retain(|d| {
        filter
            .configuration_id
            .as_deref()
            .is_none_or(|c| d.configuration_id == c)
            && filter
                .status
                .as_deref()
                .is_none_or(|s| format!("{:?}", d.status).eq_ignore_ascii_case(s))
            && filter
                .strategy
                .as_deref()
                .is_none_or(|s| format!("{:?}", d.strategy).eq_ignore_ascii_case(s))
    });
    all.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then(a.deployment_id.cmp(&b.deployment_id))
    });
    let views: Vec<DeploymentView> = all.iter().map(|d| view(d, false)).collect();
    Ok(axum::Json(DeploymentList::page(views, page)))
}

async fn load(state: &ApiState, id: String) -> Result<Deployment, ApiError> {
    super::find(state, "deployment", id, |r, id| r.deployment(id)).await
}

/// A deployment with its timeline and progress.
#[utoipa::path(
    get,
    path = "/deployments/{id}",
    operation_id = "getDeployment",
    tag = "deployments",
    params(("id" = String, Path, description = "The deploymentId")),
    responses(
        (status = 200, description = "The deployment", body = DeploymentView),
        (status = 404, response = NotFound),
    ),
)]
pub async fn get(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<DeploymentView>, ApiError> {
    principal.require(Role::Viewer)?;
    Ok(axum::Json(view(&load(&state, id).await?, true)))
}

/// Per-edge state of a deployment.
#[utoipa::path(
    get,
    path = "/deployments/{id}/edge-locations",
    operation_id = "getDeploymentEdges",
    tag = "deployments",
    params(("id" = String, Path, description = "The deploymentId"), PageQuery),
    responses(
        (status = 200, description = "Every targeted edge and every skipped one; a page of them when `limit` or `offset` is given", body = DeploymentEdges),
        (status = 404, response = NotFound),
    ),
)]
pub async fn edge_locations(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<axum::Json<DeploymentEdges>, ApiError> {
    principal.require(Role::Viewer)?;
    // Without paging parameters the answer holds every edge, as it always has; a fleet of
    // thousands of edges is read a page at a time.
    let page = if page.limit.is_none() && page.offset.is_none() {
        None
    } else {
        Some(page.check()?)
    };
    let deployment = load(&state, id).await?;
    let edges: Vec<EdgeRow> = deployment
        .edges
        .iter()
        .map(|(location, edge)| {
            EdgeRow::Targeted(EdgeProgress {
                location_id: location.clone(),
                state: edge.clone(),
            })
        })
        .chain(deployment.skipped.iter().map(|s| {
            EdgeRow::Skipped(SkippedEdge {
                location_id: s.location_id.clone(),
                state: EdgeState::Skipped,
                error: s.reason.clone(),
            })
        }))
        .collect();
    let total = edges.len();
    let edges = match page {
        None => edges,
        Some(page) => edges
            .into_iter()
            .skip(page.offset)
            .take(page.limit)
            .collect(),
    };
    Ok(axum::Json(DeploymentEdges {
        deployment_id: deployment.deployment_id,
        status: deployment.status,
        total,
        edge_locations: edges,
    }))
}

/// Server-Sent Events: the timeline so far, then live events until the deployment ends.
/// Each event is named by its kind and carries the timeline entry with the deployment's
/// status as JSON.
#[utoipa::path(
    get,
    path = "/deployments/{id}/events",
    operation_id = "streamDeploymentEvents",
    tag = "deployments",
    params(("id" = String, Path, description = "The deploymentId")),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = DeploymentStreamEvent),
        (status = 404, response = NotFound),
    ),
)]
pub async fn events(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    principal.require(Role::Viewer)?;
    // Subscribe before reading the history so nothing falls between the two.
    let mut live = state.engine().subscribe();
    let deployment = load(&state, id.clone()).await?;
    let history = deployment.events.clone();
    let mut status = deployment.status;
    let store = state.store().clone();
    let stream = async_stream(move |sender| async move {
        for (index, event) in history.iter().enumerate() {
            if sender.send(sse_event(index, event, status)).await.is_err() {
                return;
            }
        }
        let mut next_index = history.len();
        while !status.is_terminal() {
            match live.recv().await {
                Ok(published) if published.deployment_id == id => {
                    if published.index < next_index {
                        continue;
                    }
                    next_index = published.index + 1;
                    status = published.status;
                    if sender
                        .send(sse_event(
                            published.index,
                            &published.event,
                            published.status,
                        ))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => {
                    // Too slow a reader: say so and end; it can reconnect for the history.
                    let _ = sender
                        .send(
                            SseEvent::default()
                                .event("lagged")
                                .data("{\"lagged\":true}"),
                        )
                        .await;
                    return;
                }
                Err(RecvError::Closed) => return,
            }
        }
        // Each event of a batch is published with the status after the whole batch, so the
        // terminal status can arrive before the batch's last events: finish from the record.
        let Ok(Some(finished)) = store.read(move |r| r.deployment(&id)).await else {
            return;
        };
        for (index, event) in finished.events.iter().enumerate().skip(next_index) {
            if sender
                .send(sse_event(index, event, finished.status))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn sse_event(
    index: usize,
    event: &crate::model::DeploymentEvent,
    status: DeploymentStatus,
) -> SseEvent {
    let data = serde_json::to_string(&DeploymentEventMessage { event, status })
        .unwrap_or_else(|_| "{}".to_string());
    SseEvent::default()
        .id(index.to_string())
        .event(format!("{:?}", event.kind))
        .data(data)
}

/// A stream fed by a task through a small channel.
fn async_stream<F, Fut>(produce: F) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<SseEvent>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(produce(sender));
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|event| (Ok(event), receiver))
    })
}

async fn act(
    state: ApiState,
    principal: Principal,
    id: String,
    action: OperatorAction,
) -> Result<axum::Json<DeploymentView>, ApiError> {
    principal.require(Role::Operator)?;
    let deployment = state
        .deployments()
        .act(&caller(&principal), &id, action)
        .await?;
    Ok(axum::Json(view(&deployment, false)))
}

/// Skip the rest of the current wait: the next step now.
#[utoipa::path(
    post,
    path = "/deployments/{id}/promote",
    operation_id = "promoteDeployment",
    tag = "deployments",
    params(("id" = String, Path, description = "The deploymentId")),
    responses(
        (status = 200, description = "The deployment", body = DeploymentView),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ),
)]
pub async fn promote(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<DeploymentView>, ApiError> {
    act(state, principal, id, OperatorAction::Promote).await
}

/// Pause: no new pushes.
#[utoipa::path(
    post,
    path = "/deployments/{id}/pause",
    operation_id = "pauseDeployment",
    tag = "deployments",
    params(("id" = String, Path, description = "The deploymentId")),
    responses(
        (status = 200, description = "The deployment", body = DeploymentView),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ),
)]
pub async fn pause(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<DeploymentView>, ApiError> {
    act(state, principal, id, OperatorAction::Pause).await
}

/// Resume where it paused.
#[utoipa::path(
    post,
    path = "/deployments/{id}/resume",
    operation_id = "resumeDeployment",
    tag = "deployments",
    params(("id" = String, Path, description = "The deploymentId")),
    responses(
        (status = 200, description = "The deployment", body = DeploymentView),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ),
)]
pub async fn resume(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<DeploymentView>, ApiError> {
    act(state, principal, id, OperatorAction::Resume).await
}

/// Open the next region's approval gate (RollingRegional).
#[utoipa::path(
    post,
    path = "/deployments/{id}/approve-next-region",
    operation_id = "approveNextRegion",
    tag = "deployments",
    params(("id" = String, Path, description = "The deploymentId")),
    responses(
        (status = 200, description = "The deployment", body = DeploymentView),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ),
)]
pub async fn approve_next_region(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<DeploymentView>, ApiError> {
    act(state, principal, id, OperatorAction::ApproveNextRegion).await
}

/// Why a deployment is rolled back by hand.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = RollbackRequest)]
pub struct RollbackBody {
    /// At most 4096 bytes (default: "manual rollback by <user>").
    #[schema(value_type = String, max_length = 4096)]
    reason: Option<String>,
}

/// Roll every touched edge back to its previous version.
#[utoipa::path(
    post,
    path = "/deployments/{id}/rollback",
    operation_id = "rollbackDeployment",
    tag = "deployments",
    params(("id" = String, Path, description = "The deploymentId")),
    request_body(content = Option<RollbackBody>, description = "May be left out"),
    responses(
        (status = 200, description = "The deployment", body = DeploymentView),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ),
)]
pub async fn rollback(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<RollbackBody>,
) -> Result<axum::Json<DeploymentView>, ApiError> {
    let reason = body
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| format!("manual rollback by {}", principal.subject));
    if reason.len() > 4096 {
        return Err(ApiError::invalid_field("reason", "at most 4096 bytes"));
    }
    act(state, principal, id, OperatorAction::Rollback { reason }).await
}

/// Why rollouts are frozen.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = FreezeRequest)]
pub struct FreezeBody {
    #[schema(value_type = String)]
    reason: Option<String>,
}

fn freeze_view(freeze: Option<Freeze>) -> FreezeView {
    FreezeView::from(freeze)
}

/// The freeze state.
#[utoipa::path(
    get,
    path = "/freeze",
    operation_id = "getFreeze",
    tag = "deployments",
    responses((status = 200, description = "Whether rollouts are frozen, by whom and why", body = FreezeView)),
)]
pub async fn get_freeze(
    State(state): State<ApiState>,
    principal: Principal,
) -> Result<axum::Json<FreezeView>, ApiError> {
    principal.require(Role::Viewer)?;
    Ok(axum::Json(freeze_view(
        state.store().read(|r| r.freeze()).await?,
    )))
}

/// Freeze all rollouts: running ones pause, new ones are refused.
#[utoipa::path(
    post,
    path = "/freeze",
    operation_id = "setFreeze",
    tag = "deployments",
    request_body(content = Option<FreezeBody>, description = "May be left out"),
    responses((status = 200, description = "The freeze", body = FreezeView)),
)]
pub async fn set_freeze(
    State(state): State<ApiState>,
    principal: Principal,
    OptionalJson(body): OptionalJson<FreezeBody>,
) -> Result<axum::Json<FreezeView>, ApiError> {
    principal.require(Role::Admin)?;
    let reason = body.reason.unwrap_or_else(|| "no reason given".into());
    let freeze = state
        .deployments()
        .freeze(&caller(&principal), reason)
        .await?;
    Ok(axum::Json(freeze_view(Some(freeze))))
}

/// Lift the freeze.
#[utoipa::path(
    delete,
    path = "/freeze",
    operation_id = "liftFreeze",
    tag = "deployments",
    responses((status = 200, description = "Not frozen any more", body = FreezeView)),
)]
pub async fn lift_freeze(
    State(state): State<ApiState>,
    principal: Principal,
) -> Result<axum::Json<FreezeView>, ApiError> {
    principal.require(Role::Admin)?;
    state.deployments().lift_freeze(&caller(&principal)).await?;
    Ok(axum::Json(freeze_view(None)))
}
