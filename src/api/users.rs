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
use super::views::{LoginAnswer, LoginUser, UserList, UserView};
use crate::app::AppState;
use crate::auth::{check_password, check_username, hash_password, verify_password};
use crate::model::{Role, Timestamp, User};
use crate::store::{Command, CommandEnvelope};

/// Credentials for a token.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = LoginRequest)]
pub struct LoginBody {
    #[schema(value_type = String, required = true, min_length = 1, max_length = 64)]
    username: Option<String>,
    #[schema(value_type = String, required = true, min_length = 1, max_length = 1024)]
    password: Option<String>,
}

async fn hash(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)
}

/// Log in and receive a JWT.
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
    State(state): State<AppState>,
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
    let lookup = username.clone();
    let user = state.store().read(move |r| r.user(&lookup)).await?;
    let stored_hash = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| crate::auth::password::decoy_hash().to_string());
    let given = password.clone();
    let matches = tokio::task::spawn_blocking(move || verify_password(&given, &stored_hash))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let user = match (user, matches) {
        (Some(user), true) => user,
        _ => {
            tracing::warn!(%username, %address, "failed login");
            return Err(ApiError::Unauthorized(
                "invalid username or password".into(),
            ));
        }
    };
    let ttl = state.settings().auth.token_ttl.as_secs() as i64;
    let (token, claims) =
        state
            .tokens()
            .issue(&user.username, user.role, None, Timestamp::now(), ttl)?;
    tracing::info!(username = %user.username, "login");
    Ok(axum::Json(LoginAnswer {
        token,
        expires_at: Timestamp::from_millis(claims.exp * 1000),
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
    State(state): State<AppState>,
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
    let now = Timestamp::now();
    let user = User {
        username,
        role,
        password_hash: hash(password).await?,
        created_at: now,
        updated_at: now,
    };
    state
        .store()
        .apply(CommandEnvelope::new(
            principal.subject.clone(),
            current_trace_id(),
            Command::CreateUser { user: user.clone() },
        ))
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
    State(state): State<AppState>,
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
    State(state): State<AppState>,
    principal: Principal,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require(Role::Admin)?;
    state
        .store()
        .apply(CommandEnvelope::new(
            principal.subject.clone(),
            current_trace_id(),
            Command::DeleteUser { username },
        ))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new password; users other than Admins changing their own give the current one too.
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

/// Change a password (Admin, or a user their own).
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
    State(state): State<AppState>,
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
    if own && principal.role != Role::Admin {
        // Changing one's own password needs the current one, so a stolen token alone
        // cannot take over the account.
        let current = body.current_password.unwrap_or_default();
        let lookup = username.clone();
        let user = state
            .store()
            .read(move |r| r.user(&lookup))
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("user '{username}' not found")))?;
        let ok =
            tokio::task::spawn_blocking(move || verify_password(&current, &user.password_hash))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
        if !ok {
            return Err(ApiError::invalid_field(
                "currentPassword",
                "the current password is required and must match",
            ));
        }
    }
    state
        .store()
        .apply(CommandEnvelope::new(
            principal.subject.clone(),
            current_trace_id(),
            Command::SetPassword {
                username,
                password_hash: hash(password).await?,
                at: Timestamp::now(),
            },
        ))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
