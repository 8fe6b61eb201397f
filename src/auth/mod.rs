//! Who may do what: JWTs, password hashes, roles and request budgets (SPEC §4, §5).

pub mod password;
pub mod ratelimit;
pub mod token;

pub use password::{hash_password, verify_password};
pub use ratelimit::{Budget, LimitClass, RateLimits};
pub use token::{Claims, TokenIssuer};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token has expired")]
    Expired,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unavailable(String),
}

/// Smallest password length accepted for API users.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Checks a username: 1–64 of `[A-Za-z0-9._-]`.
pub fn check_username(username: &str) -> Result<(), String> {
    if username.is_empty() || username.len() > 64 {
        return Err("username must be 1 to 64 characters".into());
    }
    if !username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("username may contain only letters, digits, '.', '_' and '-'".into());
    }
    Ok(())
}

pub fn check_password(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "password must be at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if password.len() > 1024 {
        return Err("password must be at most 1024 bytes".into());
    }
    Ok(())
}
