//! The `edgeplane` command: parses the command line and hands over to the library.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use edgeplane::config::{Overrides, Settings};

#[derive(Parser)]
#[command(
    name = "edgeplane",
    version,
    about = "Control plane for CDN edge configuration"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct StoreArgs {
    /// Settings file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (beats the file and the environment).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane.
    Serve {
        #[command(flatten)]
        store: StoreArgs,
        /// Listen address, e.g. 127.0.0.1:8080 (port 0 picks a free port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Manage API users in the store (with the server stopped).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Mint an API token offline.
    Token {
        #[arg(long)]
        user: String,
        /// Lifetime, e.g. 1h, 30d.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: std::time::Duration,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user; the password is read from standard input.
    Add {
        name: String,
        #[arg(long)]
        role: String,
        #[arg(long, required = true)]
        password_stdin: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Set a user's password, read from standard input.
    Passwd {
        name: String,
        #[arg(long, required = true)]
        password_stdin: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List users.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove a user.
    Remove {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    edgeplane::config::parse_duration(text)
}

/// Failures that end the process, with their exit codes (SPEC §1).
enum Failure {
    Usage(String),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Other(error)
    }
}

fn settings(store: &StoreArgs, listen: Option<std::net::SocketAddr>) -> Result<Settings, Failure> {
    Settings::load(
        store.config.as_deref(),
        std::env::vars(),
        &Overrides {
            data_dir: store.data_dir.clone(),
            listen,
        },
    )
    .map_err(|e| Failure::Usage(e.to_string()))
}

fn read_password() -> Result<String, Failure> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).map_err(|e| {
        Failure::Usage(format!("cannot read the password from standard input: {e}"))
    })?;
    let password = text.trim_end_matches(['\n', '\r']).to_string();
    edgeplane::auth::check_password(&password).map_err(Failure::Usage)?;
    Ok(password)
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve { store, listen } => {
            let settings = settings(&store, listen)?;
            let _logs = edgeplane::telemetry::init_logs(&settings.log);
            let runtime = tokio::runtime::Runtime::new().map_err(anyhow::Error::from)?;
            runtime.block_on(edgeplane::app::serve(
                settings,
                edgeplane::telemetry::prometheus(),
            ))?;
            Ok(())
        }
        Command::User { command } => {
            use edgeplane::cli::users;
            match command {
                UserCommand::Add {
                    name, role, store, ..
                } => {
                    let settings = settings(&store, None)?;
                    let role = role.parse().map_err(Failure::Usage)?;
                    edgeplane::auth::check_username(&name).map_err(Failure::Usage)?;
                    users::add(&settings, &name, role, &read_password()?)?;
                    println!("added user {name}");
                }
                UserCommand::Passwd { name, store, .. } => {
                    let settings = settings(&store, None)?;
                    users::set_password(&settings, &name, &read_password()?)?;
                    println!("password of {name} changed");
                }
                UserCommand::List { store } => {
                    for (name, role) in users::list(&settings(&store, None)?)? {
                        println!("{name}\t{role}");
                    }
                }
                UserCommand::Remove { name, store } => {
                    users::remove(&settings(&store, None)?, &name)?;
                    println!("removed user {name}");
                }
            }
            Ok(())
        }
        Command::Token { user, ttl, store } => {
            let settings = settings(&store, None)?;
            println!("{}", edgeplane::cli::users::token(&settings, &user, ttl)?);
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("edgeplane: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Other(error)) => {
            eprintln!("edgeplane: {error:#}");
            ExitCode::from(1)
        }
    }
}
