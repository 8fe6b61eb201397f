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
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::error::ApiError;
use super::extract::{Json, OptionalJson, PageQuery, Path, Principal, Query, page_body};
use super::middleware::current_trace_id;
use super::state::ApiState;
use crate::model::deployment::CreateDeployment;
use crate::model::{Deployment, DeploymentStatus, Role};
use crate::rollout::{OperatorAction, progress};
use crate::service::{Admission, Caller};
use crate::store::Freeze;

fn caller(principal: &Principal) -> Caller {
    Caller::new(principal.subject.clone(), current_trace_id())
}

/// A deployment as the API shows it: the record without the engine's cursor, plus progress.
fn view(deployment: &Deployment, full: bool) -> Value {
    let mut value = serde_json::to_value(deployment).unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.remove("engine");
        if !full {
            object.remove("events");
            object.remove("edges");
        }
        object.insert(
            "progress".into(),
            serde_json::to_value(progress(deployment)).unwrap_or(Value::Null),
        );
    }
    value
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateQuery {
    dry_run: Option<String>,
}

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

/// POST /configurations/{id}/versions/{version}/deploy.
pub async fn deploy_version(
    State(state): State<ApiState>,
    principal: Principal,
    Path((configuration_id, version)): Path<(String, String)>,
    Query(query): Query<CreateQuery>,
    OptionalJson(body): OptionalJson<Value>,
) -> Result<Response, ApiError> {
    let mut body = if body.is_null() { json!({}) } else { body };
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
            return Ok(axum::Json(json!({
                "dryRun": true,
                "configurationId": deployment.configuration_id,
                "configurationVersion": deployment.configuration_version,
                "strategy": deployment.strategy,
                "plan": plan,
            }))
            .into_response());
        }
        Admission::Started(deployment) => deployment,
    };
    let deployment_id = deployment.deployment_id.clone();
    let mut response = (
        StatusCode::ACCEPTED,
        axum::Json(json!({
            "deploymentId": deployment_id,
            "status": DeploymentStatus::Pending,
            "progressPercentage": 0,
        })),
    )
        .into_response();
    if let Ok(value) = format!("/api/v1/deployments/{deployment_id}").parse() {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListFilter {
    configuration_id: Option<String>,
    status: Option<String>,
    strategy: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

pub async fn list(
    State(state): State<ApiState>,
    principal: Principal,
    Query(filter): Query<ListFilter>,
) -> Result<axum::Json<Value>, ApiError> {
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
    let views: Vec<Value> = all.iter().map(|d| view(d, false)).collect();
    Ok(axum::Json(page_body("deployments", views, page)))
}

async fn load(state: &ApiState, id: String) -> Result<Deployment, ApiError> {
    super::find(state, "deployment", id, |r, id| r.deployment(id)).await
}

pub async fn get(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    principal.require(Role::Viewer)?;
    Ok(axum::Json(view(&load(&state, id).await?, true)))
}

pub async fn edge_locations(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    principal.require(Role::Viewer)?;
    let deployment = load(&state, id).await?;
    let edges: Vec<Value> =
        deployment
            .edges
            .iter()
            .map(|(location, edge)| {
                let mut value = serde_json::to_value(edge).unwrap_or(Value::Null);
                value["locationId"] = Value::String(location.clone());
                value
            })
            .chain(deployment.skipped.iter().map(
                |s| json!({"locationId": s.location_id, "state": "Skipped", "error": s.reason}),
            ))
            .collect();
    Ok(axum::Json(json!({
        "deploymentId": deployment.deployment_id,
        "status": deployment.status,
        "edgeLocations": edges,
    })))
}

/// GET /deployments/{id}/events: the timeline so far, then live events until it ends.
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
    let mut data = serde_json::to_value(event).unwrap_or(Value::Null);
    data["status"] = serde_json::to_value(status).unwrap_or(Value::Null);
    SseEvent::default()
        .id(index.to_string())
        .event(format!("{:?}", event.kind))
        .data(data.to_string())
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
) -> Result<axum::Json<Value>, ApiError> {
    principal.require(Role::Operator)?;
    let deployment = state
        .deployments()
        .act(&caller(&principal), &id, action)
        .await?;
    Ok(axum::Json(view(&deployment, false)))
}

pub async fn promote(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    act(state, principal, id, OperatorAction::Promote).await
}

pub async fn pause(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    act(state, principal, id, OperatorAction::Pause).await
}

pub async fn resume(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    act(state, principal, id, OperatorAction::Resume).await
}

pub async fn approve_next_region(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    act(state, principal, id, OperatorAction::ApproveNextRegion).await
}

#[derive(Debug, Default, Deserialize)]
pub struct RollbackBody {
    reason: Option<String>,
}

pub async fn rollback(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<RollbackBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let reason = body
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| format!("manual rollback by {}", principal.subject));
    if reason.len() > 4096 {
        return Err(ApiError::invalid_field("reason", "at most 4096 bytes"));
    }
    act(state, principal, id, OperatorAction::Rollback { reason }).await
}

#[derive(Debug, Default, Deserialize)]
pub struct FreezeBody {
    reason: Option<String>,
}

fn freeze_view(freeze: Option<Freeze>) -> Value {
    match freeze {
        Some(freeze) => json!({
            "frozen": true,
            "reason": freeze.reason,
            "frozenBy": freeze.frozen_by,
            "frozenAt": freeze.frozen_at,
        }),
        None => json!({"frozen": false}),
    }
}

pub async fn get_freeze(
    State(state): State<ApiState>,
    principal: Principal,
) -> Result<axum::Json<Value>, ApiError> {
    principal.require(Role::Viewer)?;
    Ok(axum::Json(freeze_view(
        state.store().read(|r| r.freeze()).await?,
    )))
}

pub async fn set_freeze(
    State(state): State<ApiState>,
    principal: Principal,
    OptionalJson(body): OptionalJson<FreezeBody>,
) -> Result<axum::Json<Value>, ApiError> {
    principal.require(Role::Admin)?;
    let reason = body.reason.unwrap_or_else(|| "no reason given".into());
    let freeze = state
        .deployments()
        .freeze(&caller(&principal), reason)
        .await?;
    Ok(axum::Json(freeze_view(Some(freeze))))
}

pub async fn lift_freeze(
    State(state): State<ApiState>,
    principal: Principal,
) -> Result<axum::Json<Value>, ApiError> {
    principal.require(Role::Admin)?;
    state.deployments().lift_freeze(&caller(&principal)).await?;
    Ok(axum::Json(freeze_view(None)))
}
