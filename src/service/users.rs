//! User use cases: logging in, creating and removing users, changing passwords. Password
//! hashing runs off the async threads; the store keeps the last Admin from being removed.

use std::sync::Arc;

use super::Caller;
use crate::auth::{AuthError, TokenIssuer, hash_password, verify_password};
use crate::model::{Role, Timestamp, User};
use crate::store::{Command, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0} not found")]
    NotFound(String),
    /// A field of the request is unacceptable; the first item names it.
    #[error("{1}")]
    Invalid(&'static str, String),
    /// Wrong username or password.
    #[error("invalid username or password")]
    BadCredentials,
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A blocking task (hashing, verifying) did not finish.
    #[error("{0}")]
    Internal(String),
}

/// A signed-in user's API token.
#[derive(Debug)]
pub struct Session {
    pub token: String,
    pub expires_at: Timestamp,
    pub user: User,
}

/// The user use cases; cheap to clone.
#[derive(Clone)]
pub struct Users {
    store: Store,
    tokens: Arc<TokenIssuer>,
    token_ttl_seconds: i64,
}

async fn hash(password: String) -> Result<String, UserError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| UserError::Internal(e.to_string()))?
        .map_err(UserError::from)
}

async fn verify(password: String, stored_hash: String) -> Result<bool, UserError> {
    tokio::task::spawn_blocking(move || verify_password(&password, &stored_hash))
        .await
        .map_err(|e| UserError::Internal(e.to_string()))
}

impl Users {
    pub fn new(store: Store, tokens: Arc<TokenIssuer>, token_ttl_seconds: i64) -> Self {
        Self {
            store,
            tokens,
            token_ttl_seconds,
        }
    }

    async fn find(&self, username: &str) -> Result<Option<User>, UserError> {
        let lookup = username.to_string();
        Ok(self.store.read(move |r| r.user(&lookup)).await?)
    }

    /// Checks a password and issues a token. An unknown user costs the same as a wrong
    /// password, so timing does not tell which names exist.
    pub async fn login(&self, username: &str, password: &str) -> Result<Session, UserError> {
        let user = self.find(username).await?;
        let stored_hash = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| crate::auth::password::decoy_hash().to_string());
        let matches = verify(password.to_string(), stored_hash).await?;
        let user = match (user, matches) {
            (Some(user), true) => user,
            _ => return Err(UserError::BadCredentials),
        };
        let (token, claims) = self.tokens.issue(
            &user.username,
            user.role,
            None,
            Timestamp::now(),
            self.token_ttl_seconds,
        )?;
        Ok(Session {
            token,
            expires_at: Timestamp::from_millis(claims.exp * 1000),
            user,
        })
    }

    pub async fn create(
        &self,
        caller: &Caller,
        username: String,
        password: String,
        role: Role,
    ) -> Result<User, UserError> {
        let now = Timestamp::now();
        let user = User {
            username,
            role,
            password_hash: hash(password).await?,
            created_at: now,
            updated_at: now,
        };
        self.store
            .apply(caller.envelope(Command::CreateUser { user: user.clone() }))
            .await?;
        Ok(user)
    }

    pub async fn delete(&self, caller: &Caller, username: String) -> Result<(), UserError> {
        self.store
            .apply(caller.envelope(Command::DeleteUser { username }))
            .await?;
        Ok(())
    }

    /// Sets a password; with `current_password`, only if it matches the stored one (a user
    /// changing their own, so that a stolen token alone cannot take over the account).
    pub async fn set_password(
        &self,
        caller: &Caller,
        username: String,
        password: String,
        current_password: Option<String>,
    ) -> Result<(), UserError> {
        if let Some(current) = current_password {
            let user = self
                .find(&username)
                .await?
                .ok_or_else(|| UserError::NotFound(format!("user '{username}'")))?;
            if !verify(current, user.password_hash).await? {
                return Err(UserError::Invalid(
                    "currentPassword",
                    "the current password is required and must match".into(),
                ));
            }
        }
        self.store
            .apply(caller.envelope(Command::SetPassword {
                username,
                password_hash: hash(password).await?,
                at: Timestamp::now(),
            }))
            .await?;
        Ok(())
    }
}
