//! Opening a data dir: the store with the secrets that go with it (the sealing key and the
//! token signing key), created on first use, and the bootstrap `admin` user. The server and
//! the offline commands share it.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore;

use crate::auth::{TokenIssuer, hash_password};
use crate::config::Settings;
use crate::model::{Role, SYSTEM_ACTOR, Timestamp, User};
use crate::secrets::SecretBox;
use crate::store::{Command, CommandEnvelope, Store};

/// Name of the file holding the generated secret key when none is configured.
pub const SECRET_KEY_FILE: &str = "secret.key";
/// Name of the file the generated bootstrap password is written to.
pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A setting or a file standing in for one is unusable; the message names it.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Io(String),
}

/// The store and the secrets that go with it, as offline commands need them too.
pub struct Opened {
    pub store: Store,
    pub tokens: TokenIssuer,
    pub secrets: SecretBox,
}

/// Opens the store in the configured data dir, creating its secrets on first use.
pub fn open(settings: &Settings) -> Result<Opened, OpenError> {
    let data_dir = &settings.server.data_dir;
    let secrets = load_secret_box(settings, data_dir)?;
    let store = Store::open(data_dir)?;
    let jwt_secret = if settings.auth.jwt_secret.is_empty() {
        let reader = store.reader()?;
        match reader.meta("jwt_secret")? {
            Some(stored) => BASE64
                .decode(&stored)
                .map_err(|_| OpenError::Invalid("stored JWT secret is not base64".into()))?,
            None => {
                let mut secret = vec![0u8; 32];
                rand::rng().fill_bytes(&mut secret);
                store.apply_blocking(CommandEnvelope::new(
                    SYSTEM_ACTOR,
                    "",
                    Command::InitCluster {
                        jwt_secret: BASE64.encode(&secret),
                    },
                ))?;
                secret
            }
        }
    } else {
        BASE64
            .decode(settings.auth.jwt_secret.trim())
            .map_err(|_| {
                OpenError::Invalid("auth.jwt_secret: must be base64 (32 bytes or more)".into())
            })?
    };
    let tokens = TokenIssuer::new(&jwt_secret, &settings.auth.issuer, &settings.auth.audience)
        .map_err(|e| OpenError::Invalid(format!("auth.jwt_secret: {e}")))?;
    Ok(Opened {
        store,
        tokens,
        secrets,
    })
}

fn load_secret_box(settings: &Settings, data_dir: &Path) -> Result<SecretBox, OpenError> {
    if !settings.secrets.encryption_key.is_empty() {
        return SecretBox::from_base64(settings.secrets.encryption_key.trim())
            .map_err(|e| OpenError::Invalid(format!("secrets.encryption_key: {e}")));
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| OpenError::Io(format!("cannot create {}: {e}", data_dir.display())))?;
    let path = data_dir.join(SECRET_KEY_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        return SecretBox::from_base64(text.trim())
            .map_err(|e| OpenError::Invalid(format!("{}: {e}", path.display())));
    }
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    write_private_file(&path, &BASE64.encode(key))?;
    Ok(SecretBox::new(key))
}

/// Writes a file readable by its owner only, durably.
pub fn write_private_file(path: &Path, text: &str) -> Result<(), OpenError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| OpenError::Io(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(text.as_bytes())
        .and_then(|_| file.write_all(b"\n"))
        .and_then(|_| file.sync_all())
        .map_err(|e| OpenError::Io(format!("cannot write {}: {e}", path.display())))
}

/// Creates the `admin` user on first start with an empty store (SPEC §1).
pub fn bootstrap_admin(
    store: &Store,
    data_dir: &Path,
    password_from_env: Option<String>,
) -> Result<(), OpenError> {
    if store.reader()?.user_count()? > 0 {
        return Ok(());
    }
    let (password, generated) = match password_from_env.filter(|p| !p.is_empty()) {
        Some(password) => {
            crate::auth::check_password(&password, &["admin"]).map_err(|e| {
                OpenError::Invalid(format!("EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD: {e}"))
            })?;
            (password, false)
        }
        None => {
            let mut bytes = [0u8; 18];
            rand::rng().fill_bytes(&mut bytes);
            (
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
                true,
            )
        }
    };
    let hash = hash_password(&password).map_err(|e| OpenError::Io(e.to_string()))?;
    let now = Timestamp::now();
    store.apply_blocking(CommandEnvelope::new(
        SYSTEM_ACTOR,
        "",
        Command::CreateUser {
            user: User {
                username: "admin".into(),
                role: Role::Admin,
                password_hash: hash,
                created_at: now,
                updated_at: now,
            },
        },
    ))?;
    if generated {
        let path = data_dir.join(INITIAL_PASSWORD_FILE);
        write_private_file(&path, &password)?;
        tracing::warn!(
            password = %password,
            file = %path.display(),
            "created user 'admin' with a generated password; change it after first login"
        );
    } else {
        tracing::info!(
            "created user 'admin' with the password from EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD"
        );
    }
    Ok(())
}
