//! Login and API users (SPEC §4.2, §5 user rows).

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{Json, PageQuery, Path, Principal, Query};
use super::middleware::{ClientAddress, current_trace_id};
use super::openapi::NotFound;
use super::state::ApiState;
use super::views::{LoginAnswer, LoginUser, UserList, UserView};
use crate::auth::{check_password, check_username};
use crate::model::Role;
use crate::service::{Caller, UserError};

/// Credentials for a token.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = LoginRequest)]
pub struct LoginBody {
    #[schema(value_type = String, required = true, min_length = 1, max_length = 64)]
    username: Option<String>,
    #[schema(value_type = String, required = true, min_length = 1, max_length = 1024)]
    password: Option<String>,
}

fn caller(principal: &Principal) -> Caller {
    Caller::new(principal.subject.clone(), current_trace_id())
}

/// Log in and receive a JWT. Attempts are limited per (username, address), per address and
/// per username (429), and so are password checks running at once (429 after
/// `auth.hash_queue_timeout`).
#[utoipa::path(
    post,
    path = "/authentication/login",
    operation_id = "login",
    tag = "authentication",
    request_body = LoginBody,
    responses(
        (status = 200, description = "A token for `Authorization: Bearer`", body = LoginAnswer),
        (status = 401, response = super::openapi::Unauthorized),
    ),
)]
pub async fn login(
    State(state): State<ApiState>,
    address: Option<Extension<ClientAddress>>,
    Json(body): Json<LoginBody>,
) -> Result<axum::Json<LoginAnswer>, ApiError> {
    let username = body.username.unwrap_or_default();
    let password = body.password.unwrap_or_default();
    if username.is_empty() || password.is_empty() || username.len() > 64 || password.len() > 1024 {
        return Err(ApiError::validation("username and password are required"));
    }
    let address = address
        .map(|a| a.0.0.clone())
        .unwrap_or_else(|| "local".into());
    // Spent before the password is hashed: a refused attempt costs no hashing.
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
    Ok(axum::Json(LoginAnswer {
        token: session.token,
        expires_at: session.expires_at,
        user: LoginUser {
            username: user.username,
            role: user.role,
        },
    }))
}

/// A new API user.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = UserCreate)]
pub struct CreateUserBody {
    #[schema(value_type = String, required = true, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    username: Option<String>,
    /// At least 12 characters.
    #[schema(value_type = String, required = true, min_length = 12)]
    password: Option<String>,
    #[schema(value_type = Role, required = true)]
    role: Option<String>,
}

/// Create a user.
#[utoipa::path(
    post,
    path = "/users",
    operation_id = "createUser",
    tag = "users",
    request_body = CreateUserBody,
    responses(
        (status = 201, description = "The user", body = UserView),
        (status = 409, response = super::openapi::Conflict),
    ),
)]
pub async fn create(
    State(state): State<ApiState>,
    principal: Principal,
    Json(body): Json<CreateUserBody>,
) -> Result<Response, ApiError> {
    principal.require(Role::Admin)?;
    let username = body.username.unwrap_or_default();
    check_username(&username).map_err(|e| ApiError::invalid_field("username", e))?;
    let password = body.password.unwrap_or_default();
    check_password(&password, &[&username]).map_err(|e| ApiError::invalid_field("password", e))?;
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

/// List users.
#[utoipa::path(
    get,
    path = "/users",
    operation_id = "listUsers",
    tag = "users",
    params(PageQuery),
    responses((status = 200, description = "A page of users", body = UserList)),
)]
pub async fn list(
    State(state): State<ApiState>,
    principal: Principal,
    Query(page): Query<PageQuery>,
) -> Result<axum::Json<UserList>, ApiError> {
    principal.require(Role::Admin)?;
    let page = page.check()?;
    let users = state.store().read(|r| r.users()).await?;
    let views: Vec<UserView> = users.into_iter().map(UserView::from).collect();
    Ok(axum::Json(UserList::page(views, page)))
}

/// Delete a user (the last Admin cannot be deleted: 409).
#[utoipa::path(
    delete,
    path = "/users/{username}",
    operation_id = "deleteUser",
    tag = "users",
    params(("username" = String, Path, description = "The user's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, response = NotFound),
        (status = 409, response = super::openapi::Conflict),
    ),
)]
pub async fn delete(
    State(state): State<ApiState>,
    principal: Principal,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require(Role::Admin)?;
    state.users().delete(&caller(&principal), username).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new password; anyone changing their own gives the current one too. Every token issued
/// to the user before the change stops working.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = PasswordChange)]
pub struct PasswordBody {
    /// At least 12 characters.
    #[schema(value_type = String, required = true, min_length = 12)]
    password: Option<String>,
    #[schema(value_type = String)]
    current_password: Option<String>,
}

/// Change a password (Admin, or a user their own with the current one); the user's earlier
/// tokens stop working.
#[utoipa::path(
    put,
    path = "/users/{username}/password",
    operation_id = "setPassword",
    tag = "users",
    params(("username" = String, Path, description = "The user's name")),
    request_body = PasswordBody,
    responses(
        (status = 204, description = "Changed"),
        (status = 404, response = NotFound),
    ),
)]
pub async fn set_password(
    State(state): State<ApiState>,
    principal: Principal,
    Path(username): Path<String>,
    Json(body): Json<PasswordBody>,
) -> Result<StatusCode, ApiError> {
    let own = principal.subject.eq_ignore_ascii_case(&username) && principal.role != Role::Edge;
    if !own {
        principal.require(Role::Admin)?;
    }
    let password = body.password.unwrap_or_default();
    check_password(&password, &[&username]).map_err(|e| ApiError::invalid_field("password", e))?;
    // Changing one's own password needs the current one, Admins included, so a stolen
    // token alone cannot take over the account.
    let current_password = own.then(|| body.current_password.unwrap_or_default());
    state
        .users()
        .set_password(&caller(&principal), username, password, current_password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
