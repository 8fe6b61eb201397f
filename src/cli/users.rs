//! `edgeplane user …` and `edgeplane token`: user management and token minting on the
//! store directly, through the same command door as the API.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use crate::auth::{check_password, hash_password, normalise_username};
use crate::config::Settings;
use crate::model::{Role, Timestamp, User};
use crate::service::open::{Opened, open};
use crate::service::users::find_user;
use crate::store::{Command, CommandEnvelope};

const CLI_ACTOR: &str = "cli";

fn opened(settings: &Settings) -> anyhow::Result<Opened> {
    open(settings).with_context(|| {
        format!(
            "cannot open the store in {} (is the server running?)",
            settings.server.data_dir.display()
        )
    })
}

/// The stored user `name` names, under any spelling.
fn find(opened: &Opened, name: &str) -> anyhow::Result<User> {
    match find_user(&opened.store.reader()?, name)? {
        Some(user) => Ok(user),
        None => bail!("no user named '{name}'"),
    }
}

pub fn add(settings: &Settings, name: &str, role: Role, password: &str) -> anyhow::Result<()> {
    check_password(password, &[name]).map_err(|e| anyhow!("password: {e}"))?;
    let store = opened(settings)?.store;
    let now = Timestamp::now();
    store.apply_blocking(CommandEnvelope::new(
        CLI_ACTOR,
        "",
        Command::CreateUser {
            user: User {
                username: normalise_username(name),
                role,
                password_hash: hash_password(password)?,
                created_at: now,
                updated_at: now,
            },
        },
    ))?;
    Ok(())
}

pub fn set_password(settings: &Settings, name: &str, password: &str) -> anyhow::Result<()> {
    check_password(password, &[name]).map_err(|e| anyhow!("password: {e}"))?;
    let opened = opened(settings)?;
    let user = find(&opened, name)?;
    opened.store.apply_blocking(CommandEnvelope::new(
        CLI_ACTOR,
        "",
        Command::SetPassword {
            username: user.username,
            password_hash: hash_password(password)?,
            at: Timestamp::now(),
        },
    ))?;
    Ok(())
}

pub fn list(settings: &Settings) -> anyhow::Result<Vec<(String, Role)>> {
    let store = opened(settings)?.store;
    Ok(store
        .reader()?
        .users()?
        .into_iter()
        .map(|u| (u.username, u.role))
        .collect())
}

pub fn remove(settings: &Settings, name: &str) -> anyhow::Result<()> {
    let opened = opened(settings)?;
    let user = find(&opened, name)?;
    opened.store.apply_blocking(CommandEnvelope::new(
        CLI_ACTOR,
        "",
        Command::DeleteUser {
            username: user.username,
        },
    ))?;
    Ok(())
}

/// Mints a token for an existing user, valid for `ttl` (at most `auth.max_token_ttl`). Like
/// a login's, it stops working when the user's password or role changes.
pub fn token(settings: &Settings, name: &str, ttl: Duration) -> anyhow::Result<String> {
    let max = settings.auth.max_token_ttl;
    if ttl.is_zero() || ttl > max {
        bail!(
            "--ttl must be more than 0 and at most auth.max_token_ttl ({})",
            humantime::format_duration(max)
        );
    }
    let opened = opened(settings)?;
    let user = find(&opened, name)?;
    let (token, _) = opened
        .tokens
        .issue_session(&user, Timestamp::now(), ttl.as_secs() as i64)?;
    Ok(token)
}
