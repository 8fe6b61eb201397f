//! Where the client finds its control plane and token: the credentials file written by
//! `edgeplane login` (`$XDG_CONFIG_HOME/edgeplane/credentials`, mode 0600 in a 0700 folder),
//! overridden field by field by `EDGEPLANE_URL` and `EDGEPLANE_TOKEN` for scripts.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::http::ClientError;

/// Overrides the control plane URL of the credentials file.
pub const URL_VARIABLE: &str = "EDGEPLANE_URL";
/// Overrides the token of the credentials file.
pub const TOKEN_VARIABLE: &str = "EDGEPLANE_TOKEN";

/// What `edgeplane login` keeps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    pub url: String,
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The CA bundle given at login, used again by every later command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// The credentials file, from the environment as given by `env`: `$XDG_CONFIG_HOME` when set
/// to an absolute path (the XDG rule), else `$HOME/.config`.
pub fn credentials_path(env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let base = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            env("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("edgeplane").join("credentials"))
}

/// Reads the credentials file; `None` when there is none yet.
pub fn load(path: &Path) -> Result<Option<Credentials>, ClientError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(ClientError::Usage(format!(
                "cannot read {}: {error}",
                path.display()
            )));
        }
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        ClientError::Usage(format!(
            "{} is not a credentials file ({e}); run `edgeplane login` again",
            path.display()
        ))
    })
}

/// Writes the credentials file: the folder is made 0700, the file written 0600 beside it and
/// renamed into place, so no reader ever sees a half-written or world-readable token.
pub fn save(path: &Path, credentials: &Credentials) -> Result<(), ClientError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

    let fail = |what: &str, error: std::io::Error| {
        ClientError::Other(format!("cannot {what} {}: {error}", path.display()))
    };
    let dir = path
        .parent()
        .ok_or_else(|| ClientError::Usage(format!("{} has no folder", path.display())))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| fail("create the folder of", e))?;
    // The folder may have existed with looser rights; it holds a secret now.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| fail("restrict the folder of", e))?;
    let text = serde_json::to_string_pretty(credentials)
        .map_err(|e| ClientError::Other(format!("cannot encode the credentials: {e}")))?;
    let temporary = dir.join(format!(".credentials.{}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(fail("write", error));
    }
    Ok(())
}

/// The control plane a command talks to.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub url: String,
    pub token: String,
    pub ca_file: Option<PathBuf>,
}

/// The file's values with the environment's on top; an error says what is missing and how
/// to provide it.
pub fn resolve(
    file: Option<Credentials>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Target, ClientError> {
    let from_env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let url = from_env(URL_VARIABLE).or_else(|| file.as_ref().map(|f| f.url.clone()));
    let token = from_env(TOKEN_VARIABLE).or_else(|| file.as_ref().map(|f| f.token.clone()));
    match (url, token) {
        (Some(url), Some(token)) => Ok(Target {
            url,
            token,
            ca_file: file.and_then(|f| f.ca_file),
        }),
        (None, _) => Err(ClientError::Usage(format!(
            "no control plane: run `edgeplane login --url URL` or set {URL_VARIABLE}"
        ))),
        (Some(_), None) => Err(ClientError::Usage(format!(
            "no token: run `edgeplane login` or set {TOKEN_VARIABLE}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn the_path_follows_xdg_then_home() {
        let check = |pairs: &[(&str, &str)], expected: Option<&str>| {
            assert_eq!(
                credentials_path(env(pairs)),
                expected.map(PathBuf::from),
                "{pairs:?}"
            );
        };
        check(
            &[("XDG_CONFIG_HOME", "/x"), ("HOME", "/home/a")],
            Some("/x/edgeplane/credentials"),
        );
        check(
            &[("HOME", "/home/a")],
            Some("/home/a/.config/edgeplane/credentials"),
        );
        // A relative XDG_CONFIG_HOME is to be ignored.
        check(
            &[("XDG_CONFIG_HOME", "rel"), ("HOME", "/home/a")],
            Some("/home/a/.config/edgeplane/credentials"),
        );
        check(&[], None);
    }

    #[test]
    fn the_environment_beats_the_file_field_by_field() {
        let file = Credentials {
            url: "http://file:1".into(),
            token: "file-token".into(),
            ..Credentials::default()
        };
        let target = resolve(Some(file.clone()), env(&[(TOKEN_VARIABLE, "env-token")])).unwrap();
        assert_eq!(target.url, "http://file:1");
        assert_eq!(target.token, "env-token");
        let target = resolve(Some(file), env(&[(URL_VARIABLE, "http://env:2")])).unwrap();
        assert_eq!(target.url, "http://env:2");
        assert_eq!(target.token, "file-token");
        let target = resolve(
            None,
            env(&[(URL_VARIABLE, "http://env:2"), (TOKEN_VARIABLE, "t")]),
        )
        .unwrap();
        assert_eq!(
            (target.url.as_str(), target.token.as_str()),
            ("http://env:2", "t")
        );
        let missing = resolve(None, env(&[(URL_VARIABLE, "http://env:2")])).unwrap_err();
        assert!(missing.to_string().contains(TOKEN_VARIABLE), "{missing}");
        assert!(resolve(None, env(&[])).is_err());
    }

    #[test]
    fn saved_credentials_are_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let path = dir
            .path()
            .join("conf")
            .join("edgeplane")
            .join("credentials");
        let credentials = Credentials {
            url: "http://127.0.0.1:8080".into(),
            token: "secret".into(),
            username: Some("alice".into()),
            ..Credentials::default()
        };
        save(&path, &credentials).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(load(&path).unwrap(), Some(credentials));
        assert_eq!(load(&dir.path().join("none")).unwrap(), None);
        std::fs::write(&path, "not json").unwrap();
        assert!(load(&path).is_err());
    }
}
