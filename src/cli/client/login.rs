//! `edgeplane login`: exchanges a username and password for a token and keeps both the URL
//! and the token in the credentials file for the other commands.

use std::io::{BufRead, IsTerminal, Read};
use std::path::PathBuf;

use serde_json::{Value, json};

use super::credentials::{self, Credentials};
use super::http::{Api, ClientError, normalize_url};
use super::output::{Output, Ui, print_json, text};

pub struct LoginOptions {
    pub url: String,
    pub username: Option<String>,
    pub password_stdin: bool,
    pub ca_file: Option<PathBuf>,
}

fn username(given: Option<String>) -> Result<String, ClientError> {
    if let Some(name) = given.filter(|n| !n.trim().is_empty()) {
        return Ok(name.trim().to_string());
    }
    if !std::io::stdin().is_terminal() {
        return Err(ClientError::Usage(
            "--username is needed when standard input is not a terminal".into(),
        ));
    }
    eprint!("Username: ");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| ClientError::Usage(format!("cannot read the username: {e}")))?;
    let name = line.trim().to_string();
    if name.is_empty() {
        return Err(ClientError::Usage("no username given".into()));
    }
    Ok(name)
}

fn password(from_stdin: bool) -> Result<String, ClientError> {
    let password = if from_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| ClientError::Usage(format!("cannot read the password: {e}")))?;
        text.trim_end_matches(['\n', '\r']).to_string()
    } else {
        // Read from the terminal itself with echo off, whatever standard input is.
        rpassword::prompt_password("Password: ").map_err(|e| {
            ClientError::Usage(format!(
                "cannot ask for the password ({e}); pipe it in with --password-stdin"
            ))
        })?
    };
    if password.is_empty() {
        return Err(ClientError::Usage("the password is empty".into()));
    }
    Ok(password)
}

pub async fn login(options: LoginOptions, ui: Ui) -> Result<(), ClientError> {
    let url = normalize_url(&options.url)?;
    let path = credentials::credentials_path(|name| std::env::var(name).ok()).ok_or_else(|| {
        ClientError::Usage(
            "cannot tell where to keep the credentials: set XDG_CONFIG_HOME or HOME".into(),
        )
    })?;
    let ca_file = match options.ca_file {
        Some(path) => Some(std::fs::canonicalize(&path).map_err(|e| {
            ClientError::Usage(format!("cannot read the CA file {}: {e}", path.display()))
        })?),
        None => None,
    };
    let username = username(options.username)?;
    let password = password(options.password_stdin)?;
    let api = Api::new(url.as_str(), None, ca_file.as_deref())?;
    let answer = api
        .post(
            &["authentication", "login"],
            &json!({"username": username, "password": password}),
        )
        .await?;
    let token = answer
        .get("token")
        .and_then(Value::as_str)
        .ok_or_else(|| ClientError::Other("the login answer holds no token".into()))?;
    let user = answer.get("user").cloned().unwrap_or(Value::Null);
    let credentials = Credentials {
        url: api.base(),
        token: token.to_string(),
        username: Some(username.clone()),
        role: user.get("role").and_then(Value::as_str).map(str::to_string),
        expires_at: answer
            .get("expiresAt")
            .and_then(Value::as_str)
            .map(str::to_string),
        ca_file,
    };
    credentials::save(&path, &credentials)?;
    match ui.output {
        Output::Json => print_json(&answer),
        Output::Table => println!(
            "logged in to {} as {username} ({}) until {}; credentials kept in {}",
            api.base(),
            text(&user, "role"),
            text(&answer, "expiresAt"),
            path.display()
        ),
    }
    Ok(())
}
