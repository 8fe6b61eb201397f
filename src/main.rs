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
    /// The edge agent that runs beside a real edge proxy.
    Agent {
        #[arg(long, env = "EDGEPLANE_AGENT_CONFIG")]
        config: PathBuf,
        #[command(subcommand)]
        action: Option<AgentAction>,
    },
    /// A fleet of simulated edges in one process, speaking the agent's protocol.
    Simulate {
        /// Base URL of the control plane, e.g. http://127.0.0.1:8080; one per node of a
        /// primary and its standby (repeated, or comma separated), and the edges follow
        /// whichever is primary.
        #[arg(
            long,
            env = "EDGEPLANE_SIMULATE_CONTROL_PLANE",
            value_delimiter = ',',
            required = true
        )]
        control_plane: Vec<String>,
        /// Admin token used to register the edges.
        #[arg(long, env = "EDGEPLANE_SIMULATE_TOKEN")]
        token: String,
        #[arg(long, default_value_t = 9)]
        edges: usize,
        #[arg(long, default_value = "10s", value_parser = edgeplane::model::parse_duration)]
        heartbeat_interval: std::time::Duration,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Delay before each edge answers a push.
        #[arg(long, default_value = "0s", value_parser = edgeplane::model::parse_duration)]
        push_latency: std::time::Duration,
        /// Probability (0 to 1) that an edge NACKs a push.
        #[arg(long, default_value_t = 0.0)]
        nack_rate: f64,
        /// Edges that start down (comma separated ids).
        #[arg(long, value_delimiter = ',')]
        down: Vec<String>,
        #[arg(long, default_value = "127.0.0.1")]
        listen_host: std::net::IpAddr,
    },
    /// Run the control plane.
    Serve {
        #[command(flatten)]
        store: StoreArgs,
        /// Listen address, e.g. 127.0.0.1:8080 (port 0 picks a free port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// A control plane on a temp dir, the nine simulated POPs and a good and a bad
    /// configuration: watch a canary succeed and a bad change roll back.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Run both canaries and print their timeline.
        #[arg(long)]
        run_scenario: bool,
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
        #[arg(long, default_value = "1h", value_parser = edgeplane::model::parse_duration)]
        ttl: std::time::Duration,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Make a stopped standby the primary at the next term (SPEC §9).
    Promote {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// A consistent snapshot of the store into a file: from a running server (--url) or
    /// from the data dir of a stopped one.
    Backup {
        /// The running control plane to take it from.
        #[arg(long, requires = "token")]
        url: Option<String>,
        /// An Admin token for --url.
        #[arg(long, env = "EDGEPLANE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// PEM bundle to trust for an https --url instead of the system's roots.
        #[arg(long, requires = "url")]
        ca_file: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
        /// The file to write (mode 0600, written whole or not at all).
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a new data dir from a backup; refuses a directory that is not empty.
    Restore {
        /// The backup file.
        file: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
        /// The encryption key of the store the backup came from (its secret.key): checked
        /// against the backup's sealed values and installed as the new dir's secret.key.
        #[arg(long)]
        secret_key: Option<PathBuf>,
    },
    #[command(flatten)]
    Client(edgeplane::cli::client::ClientCommand),
}

#[derive(Subcommand)]
enum AgentAction {
    /// Put the previous version of a configuration back from the local history.
    Rollback { configuration_id: String },
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

/// Failures that end the process, with their exit codes (SPEC §1).
enum Failure {
    Usage(String),
    Other(anyhow::Error),
    /// Already reported; exit with this code.
    Code(u8),
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
    edgeplane::auth::check_password(&password, &[]).map_err(Failure::Usage)?;
    Ok(password)
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Other(e.into()))
}

fn agent_failure(error: anyhow::Error) -> Failure {
    if error
        .downcast_ref::<edgeplane::edge::AgentConfigError>()
        .is_some()
    {
        Failure::Usage(format!("{error:#}"))
    } else {
        Failure::Other(error)
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Agent { config, action } => {
            let _logs = edgeplane::telemetry::init_logs(&Default::default());
            match action {
                Some(AgentAction::Rollback { configuration_id }) => {
                    let version =
                        edgeplane::edge::agent::rollback_offline(&config, &configuration_id)
                            .map_err(agent_failure)?;
                    println!("{configuration_id} is now at {version}");
                    Ok(())
                }
                None => runtime()?
                    .block_on(edgeplane::edge::agent::run(&config))
                    .map_err(agent_failure),
            }
        }
        Command::Simulate {
            control_plane,
            token,
            edges,
            heartbeat_interval,
            seed,
            push_latency,
            nack_rate,
            down,
            listen_host,
        } => {
            let _logs = edgeplane::telemetry::init_logs(&Default::default());
            if !(0.0..=1.0).contains(&nack_rate) {
                return Err(Failure::Usage("--nack-rate must be between 0 and 1".into()));
            }
            let mut control_planes = edgeplane::protocol::term::control_plane_urls(
                control_plane.iter().map(String::as_str),
            )
            .map_err(|reason| Failure::Usage(format!("--control-plane: {reason}")))?
            .into_iter();
            let options = edgeplane::edge::SimulateOptions {
                control_plane: control_planes.next().unwrap_or_default(),
                other_control_planes: control_planes.collect(),
                admin_token: token,
                edges,
                heartbeat_interval,
                seed,
                push_latency,
                nack_rate,
                down,
                listen_host,
            };
            runtime()?.block_on(edgeplane::edge::simulator::run(options))?;
            Ok(())
        }
        Command::Serve { store, listen } => {
            tune_allocator();
            let settings = settings(&store, listen)?;
            let _logs = edgeplane::telemetry::init_logs(&settings.log);
            for warning in &settings.warnings {
                tracing::warn!("{warning}");
            }
            runtime()?.block_on(edgeplane::app::serve(
                settings,
                edgeplane::telemetry::prometheus(),
            ))?;
            Ok(())
        }
        Command::Demo {
            listen,
            run_scenario,
        } => {
            let _logs = edgeplane::telemetry::init_logs(&edgeplane::cli::demo::log_settings());
            runtime()?.block_on(edgeplane::cli::demo::run(
                edgeplane::cli::demo::DemoOptions {
                    listen,
                    run_scenario,
                },
                edgeplane::app::build_for_demo,
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
        Command::Client(command) => match edgeplane::cli::client::run(command) {
            0 => Ok(()),
            code => Err(Failure::Code(code)),
        },
        Command::Promote { store } => {
            let settings = settings(&store, None)?;
            let promoted = edgeplane::cli::promote(&settings)?;
            println!(
                "{}",
                serde_json::json!({"role": promoted.role, "term": promoted.term})
            );
            Ok(())
        }
        Command::Backup {
            url,
            token,
            ca_file,
            store,
            out,
        } => {
            let meta = match (url, token) {
                (Some(url), Some(token)) => {
                    if store.data_dir.is_some() || store.config.is_some() {
                        return Err(Failure::Usage(
                            "--url takes a backup through the API; --data-dir and --config \
                             are for a stopped server's data dir"
                                .into(),
                        ));
                    }
                    runtime()?.block_on(edgeplane::cli::backup::backup_online(
                        &url,
                        &token,
                        ca_file.as_deref(),
                        &out,
                    ))?
                }
                _ => {
                    let settings = settings(&store, None)?;
                    edgeplane::cli::backup::backup_offline(&settings.server.data_dir, &out)?
                }
            };
            println!(
                "wrote {} ({} bytes, term {}, index {}, digest {})",
                out.display(),
                meta.bytes,
                meta.term,
                meta.index,
                meta.content_digest_hex()
            );
            Ok(())
        }
        Command::Restore {
            file,
            data_dir,
            secret_key,
        } => {
            let restored =
                edgeplane::cli::backup::restore(&data_dir, &file, secret_key.as_deref())?;
            println!(
                "restored {} into {} (term {}, index {}, digest {})",
                file.display(),
                data_dir.display(),
                restored.meta.term,
                restored.meta.index,
                restored.meta.content_digest_hex()
            );
            if restored.has_sealed_values && !restored.key_installed {
                eprintln!(
                    "edgeplane: the backup holds sealed edge tokens or TLS keys: put the source's \
                     secret.key in {} (or set [secrets] encryption_key) before serving from it",
                    data_dir.display()
                );
            }
            Ok(())
        }
        Command::Token { user, ttl, store } => {
            let settings = settings(&store, None)?;
            if ttl > settings.auth.max_token_ttl {
                return Err(Failure::Usage(format!(
                    "--ttl: at most auth.max_token_ttl ({})",
                    humantime::format_duration(settings.auth.max_token_ttl)
                )));
            }
            println!("{}", edgeplane::cli::users::token(&settings, &user, ttl)?);
            Ok(())
        }
    }
}

/// The server's allocator returns memory it no longer uses within a second. jemalloc's
/// default keeps freed pages for ten seconds, and a deployment to 10,000 edges frees a lot at
/// once: RSS stayed about 300 MiB after such deployments, against 230–245 MiB with the
/// shorter decay (glibc malloc, the previous allocator, grew to 570 MiB; capped at two
/// arenas it held memory down but made the same deployment a third slower). jemalloc reads
/// its options only when it starts, so the process starts itself again with them, in place
/// (same pid, for systemd); an operator's own `_RJEM_MALLOC_CONF` is left as it is.
fn tune_allocator() {
    use std::os::unix::process::CommandExt;

    const VARIABLE: &str = "_RJEM_MALLOC_CONF";
    const OPTIONS: &str = "dirty_decay_ms:1000,muzzy_decay_ms:0";
    if std::env::var_os(VARIABLE).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(VARIABLE, OPTIONS)
        .exec();
    // Only reached when the exec failed: serve as we are.
    eprintln!("edgeplane: cannot restart with {VARIABLE}={OPTIONS} ({error}); serving without it");
}

/// jemalloc: per-thread caches without glibc's per-thread arenas, which held twice the heap
/// in use under 10,000 heartbeating edges.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
        Err(Failure::Code(code)) => ExitCode::from(code),
    }
}
