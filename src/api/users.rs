//! Login and API users (SPEC §4.2, §5 user rows).

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{Json, PageQuery, Path, Principal, Query, page_body};
use super::middleware::{ClientAddress, current_trace_id};
use super::state::ApiState;
use crate::auth::{check_password, check_username};
use crate::model::{Role, Timestamp, User};
use crate::service::{Caller, UserError};

#[derive(Debug, Deserialize)]
pub struct LoginBody {
    username: Option<String>,
    password: Option<String>,
}

/// A user as the API shows it: never the hash.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub username: String,
    pub role: Role,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        Self {
            username: user.username,
            role: user.role,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

fn caller(principal: &Principal) -> Caller {
    Caller::new(principal.subject.clone(), current_trace_id())
}

pub async fn login(
    State(state): State<ApiState>,
    address: Option<Extension<ClientAddress>>,
    Json(body): Json<LoginBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let username = body.username.unwrap_or_default();
    let password = body.password.unwrap_or_default();
    if username.is_empty() || password.is_empty() || username.len() > 64 || password.len() > 1024 {
        return Err(ApiError::validation("username and password are required"));
    }
    let address = address
        .map(|a| a.0.0.clone())
        .unwrap_or_else(|| "local".into());
    let budget = state.limits().login_attempt(&username, &address);
    if !budget.allowed {
        tracing::warn!(%username, %address, "login attempts rate limited");
        return Err(ApiError::RateLimited {
            message: format!(
                "too many login attempts; retry in {} s",
                budget.reset_seconds
            ),
            retry_after: budget.reset_seconds,
        });
    }
    let session = match state.users().login(&username, &password).await {
        Err(UserError::BadCredentials) => {
            tracing::warn!(%username, %address, "failed login");
            return Err(UserError::BadCredentials.into());
        }
        other => other?,
    };
    let user = session.user;
    tracing::info!(username = %user.username, "login");
    Ok(axum::Json(json!({
        "token": session.token,
        "expiresAt": session.expires_at,
        "user": {"username": user.username, "role": user.role},
    })))
}

#[derive(Debug, Deserialize)]
pub struct CreateUserBody {
    username: Option<String>,
    password: Option<String>,
    role: Option<String>,
}

pub async fn create(
    State(state): State<ApiState>,
    principal: Principal,
    Json(body): Json<CreateUserBody>,
) -> Result<Response, ApiError> {
    principal.require(Role::Admin)?;
    let username = body.username.unwrap_or_default();
    check_username(&username).map_err(|e| ApiError::invalid_field("username", e))?;
    let password = body.password.unwrap_or_default();
    check_password(&password).map_err(|e| ApiError::invalid_field("password", e))?;
    let role: Role = body
        .role
        .as_deref()
        .ok_or_else(|| ApiError::invalid_field("role", "role is required"))?
        .parse()
        .map_err(|e: String| ApiError::invalid_field("role", e))?;
    let user = state
        .users()
        .create(&caller(&principal), username, password, role)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(UserView::from(user))).into_response())
}

pub async fn list(
    State(state): State<ApiState>,
    principal: Principal,
    Query(page): Query<PageQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    principal.require(Role::Admin)?;
    let page = page.check()?;
    let users = state.store().read(|r| r.users()).await?;
    let views: Vec<UserView> = users.into_iter().map(UserView::from).collect();
    Ok(axum::Json(page_body("users", views, page)))
}

pub async fn delete(
    State(state): State<ApiState>,
    principal: Principal,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require(Role::Admin)?;
    state.users().delete(&caller(&principal), username).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswordBody {
    password: Option<String>,
    current_password: Option<String>,
}

pub async fn set_password(
    State(state): State<ApiState>,
    principal: Principal,
    Path(username): Path<String>,
    Json(body): Json<PasswordBody>,
) -> Result<StatusCode, ApiError> {
    let own = principal.subject == username && principal.role != Role::Edge;
    if !own {
        principal.require(Role::Admin)?;
    }
    let password = body.password.unwrap_or_default();
    check_password(&password).map_err(|e| ApiError::invalid_field("password", e))?;
    // Changing one's own password needs the current one, so a stolen token alone cannot
    // take over the account.
    let current_password =
        (own && principal.role != Role::Admin).then(|| body.current_password.unwrap_or_default());
    state
        .users()
        .set_password(&caller(&principal), username, password, current_password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
