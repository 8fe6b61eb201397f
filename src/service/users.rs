//! User use cases: logging in, creating and removing users, changing passwords. Password
//! hashing runs on the bounded [`HashPool`]; the store keeps the last Admin from being
//! removed.
//!
//! Usernames are compared without case: a new user is stored under the lowercase spelling,
//! and a name given to log in or to act on is found under any spelling, including users
//! stored with capitals before names were normalised, who keep working as they were.

use std::sync::Arc;

use super::Caller;
use crate::auth::{AuthError, HashError, HashPool, TokenIssuer, normalise_username};
use crate::config::AuthSettings;
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
    /// Every password hashing slot stayed busy for the queue timeout.
    #[error("too many logins at once; retry in {retry_after_seconds} s")]
    Busy { retry_after_seconds: u64 },
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A hashing thread did not answer.
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
    hashes: HashPool,
    token_ttl_seconds: i64,
}

impl Users {
    /// Starts the hashing threads (`auth.max_concurrent_hashes`).
    pub fn new(store: Store, tokens: Arc<TokenIssuer>, settings: &AuthSettings) -> Self {
        Self {
            store,
            tokens,
            hashes: HashPool::new(settings.max_concurrent_hashes, settings.hash_queue_timeout),
            token_ttl_seconds: settings.token_ttl.as_secs() as i64,
        }
    }

    fn hash_error(&self, error: HashError) -> UserError {
        match error {
            HashError::Busy => UserError::Busy {
                retry_after_seconds: 1,
            },
            HashError::Failed(message) => UserError::Internal(message),
        }
    }

    async fn hash(&self, password: String) -> Result<String, UserError> {
        self.hashes
            .hash(password)
            .await
            .map_err(|e| self.hash_error(e))
    }

    async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, UserError> {
        self.hashes
            .verify(password, stored)
            .await
            .map_err(|e| self.hash_error(e))
    }

    /// The stored user `username` names, under any spelling.
    pub async fn find(&self, username: &str) -> Result<Option<User>, UserError> {
        let given = username.to_string();
        Ok(self.store.read(move |r| find_user(r, &given)).await?)
    }

    /// Checks a password and issues a token. An unknown user costs the same as a wrong
    /// password (a hash is verified either way), so timing does not tell which names exist.
    pub async fn login(&self, username: &str, password: &str) -> Result<Session, UserError> {
        let user = self.find(username).await?;
        let stored_hash = user.as_ref().map(|u| u.password_hash.clone());
        let matches = self.verify(password.to_string(), stored_hash).await?;
        let user = match (user, matches) {
            (Some(user), true) => user,
            _ => return Err(UserError::BadCredentials),
        };
        let (token, claims) =
            self.tokens
                .issue_session(&user, Timestamp::now(), self.token_ttl_seconds)?;
        Ok(Session {
            token,
            expires_at: Timestamp::from_millis(claims.exp * 1000),
            user,
        })
    }

    /// Creates a user under the lowercase spelling of `username`; a user of the same name
    /// in any spelling is a conflict (the store decides, so two racing creates cannot both
    /// win).
    pub async fn create(
        &self,
        caller: &Caller,
        username: String,
        password: String,
        role: Role,
    ) -> Result<User, UserError> {
        let now = Timestamp::now();
        let user = User {
            username: normalise_username(&username),
            role,
            password_hash: self.hash(password).await?,
            created_at: now,
            updated_at: now,
        };
        self.store
            .apply(caller.envelope(Command::CreateUser { user: user.clone() }))
            .await?;
        Ok(user)
    }

    /// The stored name of the user `username` names; NotFound otherwise.
    async fn stored_name(&self, username: &str) -> Result<String, UserError> {
        self.find(username)
            .await?
            .map(|user| user.username)
            .ok_or_else(|| UserError::NotFound(format!("user '{username}'")))
    }

    pub async fn delete(&self, caller: &Caller, username: String) -> Result<(), UserError> {
        let username = self.stored_name(&username).await?;
        self.store
            .apply(caller.envelope(Command::DeleteUser { username }))
            .await?;
        Ok(())
    }

    /// Sets a password; with `current_password`, only if it matches the stored one (anyone
    /// changing their own, Admins included, so that a stolen token alone cannot take over
    /// the account). Every token issued to the user before stops working.
    pub async fn set_password(
        &self,
        caller: &Caller,
        username: String,
        password: String,
        current_password: Option<String>,
    ) -> Result<(), UserError> {
        let user = self
            .find(&username)
            .await?
            .ok_or_else(|| UserError::NotFound(format!("user '{username}'")))?;
        if let Some(current) = current_password
            && !self.verify(current, Some(user.password_hash)).await?
        {
            return Err(UserError::Invalid(
                "currentPassword",
                "the current password is required and must match".into(),
            ));
        }
        self.store
            .apply(caller.envelope(Command::SetPassword {
                username: user.username,
                password_hash: self.hash(password).await?,
                at: Timestamp::now(),
            }))
            .await?;
        Ok(())
    }
}

/// The user `given` names: stored under that spelling, under its lowercase one (every user
/// created since names were normalised), or, for older users stored with capitals, under
/// any spelling.
pub fn find_user(reader: &crate::store::Reader, given: &str) -> Result<Option<User>, StoreError> {
    if let Some(user) = reader.user(given)? {
        return Ok(Some(user));
    }
    let lower = normalise_username(given);
    if lower != given
        && let Some(user) = reader.user(&lower)?
    {
        return Ok(Some(user));
    }
    Ok(reader
        .users()?
        .into_iter()
        .find(|user| user.username.eq_ignore_ascii_case(given)))
}
