//! The one API error type and the error body of SPEC §5.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::AuthError;
use crate::model::Timestamp;
use crate::service::{ConfigurationError, DeploymentError, EdgeError, UserError};
use crate::store::StoreError;
use crate::validate::Finding;

/// One `{field, message}` item of an error's details.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Detail {
    pub field: String,
    pub message: String,
}

impl Detail {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Names the primary's URL on a `NOT_LEADER` answer (SPEC §9).
pub use crate::protocol::term::LEADER_HEADER;

/// Every way a request can fail. Handlers return it; [`IntoResponse`] renders the body, and
/// the trace id is filled in by the request middleware.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Validation {
        message: String,
        details: Vec<Detail>,
    },
    #[error("{message}")]
    ConfigValidation {
        message: String,
        details: Vec<Detail>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A refused change because the fleet is frozen (SPEC §7).
    #[error("{0}")]
    Frozen(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{message}")]
    RateLimited { message: String, retry_after: u64 },
    #[error("{0}")]
    Unavailable(String),
    /// A write refused because the data directory's filesystem is full.
    #[error("{0}")]
    InsufficientStorage(String),
    /// A write sent to a node that is not the primary: the leader's URL when it is known.
    #[error("this node is not the primary; send writes to the leader")]
    NotLeader { leader: Option<String> },
    /// Something broke inside; the detail is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn validation(message: impl Into<String>) -> Self {
        ApiError::Validation {
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::Validation {
            message: message.clone(),
            details: vec![Detail::new(field, message)],
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation { .. } | ApiError::ConfigValidation { .. } => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::Frozen(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::NotLeader { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation { .. } => "VALIDATION_ERROR",
            ApiError::ConfigValidation { .. } => "CONFIG_VALIDATION_ERROR",
            ApiError::Unauthorized(_) => "UNAUTHORIZED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::Frozen(_) => "FROZEN",
            ApiError::MethodNotAllowed(_) => "METHOD_NOT_ALLOWED",
            ApiError::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            ApiError::RateLimited { .. } => "RATE_LIMIT_EXCEEDED",
            ApiError::Unavailable(_) => "SERVICE_UNAVAILABLE",
            ApiError::InsufficientStorage(_) => "INSUFFICIENT_STORAGE",
            ApiError::NotLeader { .. } => "NOT_LEADER",
            ApiError::Internal(_) => "INTERNAL_ERROR",
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: ErrorPayload,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorPayload {
    /// VALIDATION_ERROR, CONFIG_VALIDATION_ERROR, UNAUTHORIZED, FORBIDDEN, NOT_FOUND,
    /// CONFLICT, FROZEN, METHOD_NOT_ALLOWED, REQUEST_TIMEOUT, PAYLOAD_TOO_LARGE,
    /// RATE_LIMIT_EXCEEDED, SERVICE_UNAVAILABLE, NOT_LEADER, INSUFFICIENT_STORAGE,
    /// INTERNAL_ERROR.
    pub code: String,
    pub message: String,
    pub details: Vec<Detail>,
    pub trace_id: String,
    pub timestamp: Timestamp,
}

/// Marks a response as already carrying the error shape (the trace id is patched in later).
#[derive(Clone, Copy, Debug)]
pub struct ShapedError;

pub fn error_response(
    status: StatusCode,
    code: &str,
    message: String,
    details: Vec<Detail>,
    trace_id: String,
) -> Response {
    let body = ErrorBody {
        error: ErrorPayload {
            code: code.into(),
            message,
            details,
            trace_id: if trace_id.is_empty() {
                super::middleware::current_trace_id()
            } else {
                trace_id
            },
            timestamp: Timestamp::now(),
        },
    };
    let mut response = (status, Json(body)).into_response();
    response.extensions_mut().insert(ShapedError);
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code();
        let (message, details) = match &self {
            ApiError::Validation { message, details }
            | ApiError::ConfigValidation { message, details } => (message.clone(), details.clone()),
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                (
                    "internal error; see the server log for this trace id".into(),
                    Vec::new(),
                )
            }
            ApiError::NotLeader {
                leader: Some(leader),
            } => (
                self.to_string(),
                vec![Detail::new("leader", leader.clone())],
            ),
            other => (other.to_string(), Vec::new()),
        };
        let leader = match &self {
            ApiError::NotLeader { leader } => leader.clone(),
            _ => None,
        };
        let retry_after = match &self {
            ApiError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        let mut response = error_response(status, code, message, details, String::new());
        if let Some(seconds) = retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if let Some(leader) = leader
            && let Ok(value) = HeaderValue::from_str(&leader)
        {
            response.headers_mut().insert(LEADER_HEADER, value);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            StoreError::Conflict(message) => ApiError::Conflict(message),
            StoreError::Invalid(message) => ApiError::validation(message),
            StoreError::Forbidden(message) => ApiError::Forbidden(message),
            StoreError::Frozen(message) => ApiError::Frozen(message),
            StoreError::Unavailable(message) => {
                tracing::error!(error = %message, "store unavailable");
                ApiError::Unavailable("the store is unavailable; retry shortly".into())
            }
            // The store logged once when writes stopped; each refusal says why, not the log.
            StoreError::StorageFull(message) => ApiError::InsufficientStorage(message),
            StoreError::Recovering(message) => ApiError::Unavailable(message),
            StoreError::Corrupt(message) => ApiError::Internal(message),
            StoreError::NotLeader(_) => ApiError::NotLeader { leader: None },
        }
    }
}

fn finding_details(findings: Vec<Finding>) -> Vec<Detail> {
    findings
        .into_iter()
        .map(|f| Detail::new(f.field, f.message))
        .collect()
}

impl From<ConfigurationError> for ApiError {
    fn from(error: ConfigurationError) -> Self {
        match error {
            ConfigurationError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            ConfigurationError::Invalid { message, findings } => ApiError::ConfigValidation {
                message,
                details: finding_details(findings),
            },
            ConfigurationError::Store(error) => error.into(),
            ConfigurationError::Sealed(message) => {
                ApiError::Internal(format!("cannot open sealed secret: {message}"))
            }
            ConfigurationError::Internal(message) => ApiError::Internal(message),
        }
    }
}

impl From<DeploymentError> for ApiError {
    fn from(error: DeploymentError) -> Self {
        match error {
            DeploymentError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            DeploymentError::Invalid { message, details } => ApiError::Validation {
                message,
                details: details
                    .into_iter()
                    .map(|e| Detail::new(e.field, e.message))
                    .collect(),
            },
            DeploymentError::Rejected { message, findings } => ApiError::ConfigValidation {
                message,
                details: finding_details(findings),
            },
            DeploymentError::Conflict(message) => ApiError::Conflict(message),
            DeploymentError::Frozen(message) => ApiError::Frozen(message),
            DeploymentError::Stopped => {
                ApiError::Unavailable("the deployment engine has stopped".into())
            }
            DeploymentError::Configuration(error) => error.into(),
            DeploymentError::Store(error) => error.into(),
        }
    }
}

impl From<EdgeError> for ApiError {
    fn from(error: EdgeError) -> Self {
        match error {
            EdgeError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            EdgeError::Conflict(message) => ApiError::Conflict(message),
            EdgeError::Auth(error) => error.into(),
            EdgeError::Store(error) => error.into(),
            EdgeError::Internal(message) => ApiError::Internal(message),
        }
    }
}

impl From<UserError> for ApiError {
    fn from(error: UserError) -> Self {
        match error {
            UserError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            UserError::Invalid(field, message) => ApiError::invalid_field(field, message),
            UserError::BadCredentials => {
                ApiError::Unauthorized("invalid username or password".into())
            }
            UserError::Busy {
                retry_after_seconds,
            } => ApiError::RateLimited {
                message: error.to_string(),
                retry_after: retry_after_seconds,
            },
            UserError::Auth(error) => error.into(),
            UserError::Store(error) => error.into(),
            UserError::Internal(message) => ApiError::Internal(message),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Missing | AuthError::Invalid(_) | AuthError::Expired => {
                ApiError::Unauthorized(error.to_string())
            }
            AuthError::Forbidden(message) => ApiError::Forbidden(message),
            AuthError::Unavailable(message) => ApiError::Internal(message),
        }
    }
}
