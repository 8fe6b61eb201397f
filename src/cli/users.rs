//! `edgeplane user …` and `edgeplane token`: user management and token minting on the
//! store directly, through the same command door as the API.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::auth::hash_password;
use crate::config::Settings;
use crate::model::{Role, Timestamp, User};
use crate::service::open::{Opened, open};
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

pub fn add(settings: &Settings, name: &str, role: Role, password: &str) -> anyhow::Result<()> {
    let store = opened(settings)?.store;
    let now = Timestamp::now();
    store.apply_blocking(CommandEnvelope::new(
        CLI_ACTOR,
        "",
        Command::CreateUser {
            user: User {
                username: name.into(),
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
    let store = opened(settings)?.store;
    store.apply_blocking(CommandEnvelope::new(
        CLI_ACTOR,
        "",
        Command::SetPassword {
            username: name.into(),
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
    let store = opened(settings)?.store;
    store.apply_blocking(CommandEnvelope::new(
        CLI_ACTOR,
        "",
        Command::DeleteUser {
            username: name.into(),
        },
    ))?;
    Ok(())
}

/// Mints a token for an existing user, valid for `ttl`.
pub fn token(settings: &Settings, name: &str, ttl: Duration) -> anyhow::Result<String> {
    let opened = opened(settings)?;
    let Some(user) = opened.store.reader()?.user(name)? else {
        bail!("no user named '{name}'");
    };
    let (token, _) = opened.tokens.issue(
        &user.username,
        user.role,
        None,
        Timestamp::now(),
        ttl.as_secs() as i64,
    )?;
    Ok(token)
}
