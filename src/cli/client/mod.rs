//! The command-line client (SPEC §12.1): `login`, `config`, `deploy`, `rollout`, `edges`
//! and `freeze`, each a thin use of the HTTP API with the same tokens and roles as any
//! other client. Exit codes: 0 ok, 1 failure, 2 bad usage, 3 a watched deployment rolled
//! back.

pub mod configurations;
pub mod credentials;
pub mod deploy;
pub mod edges;
pub mod freeze;
pub mod http;
pub mod login;
pub mod output;
pub mod rollout;
pub mod watch;

use std::path::PathBuf;

use clap::{Args, Subcommand};

use self::deploy::{DeployOptions, FailureArg, StrategyArg};
use self::http::{Api, ClientError};
use self::output::{Output, Ui};
use self::rollout::Action;
use crate::model::deployment::Span;

/// Flags every client command takes.
#[derive(Args, Clone, Debug, Default)]
pub struct Common {
    /// `table` for people, `json` for exactly the API's JSON.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// PEM bundle to trust for an https control plane instead of the system's roots.
    #[arg(long, global = true)]
    pub ca_file: Option<PathBuf>,
}

/// The client's subcommands, flattened into the `edgeplane` command.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Log in to a control plane and keep its URL and token for the other commands.
    Login {
        /// The control plane, e.g. https://edgeplane.example.com.
        #[arg(long)]
        url: String,
        /// Asked for when not given and standard input is a terminal.
        #[arg(long)]
        username: Option<String>,
        /// Read the password from standard input instead of asking.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Configurations: apply a file, list, show, diff, validate, approve.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
        #[command(flatten)]
        common: Common,
    },
    /// Deploy an approved version of a configuration to the edges.
    Deploy(DeployArgs),
    /// Follow and steer deployments.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
        #[command(flatten)]
        common: Common,
    },
    /// Edge locations.
    Edges {
        #[command(subcommand)]
        command: EdgesCommand,
        #[command(flatten)]
        common: Common,
    },
    /// The global freeze of rollouts.
    Freeze {
        #[command(subcommand)]
        command: FreezeCommand,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Create the configuration the file names, or add a version when its content changed.
    Apply {
        /// JSON or YAML with name, type, content (and description, tags, metadata,
        /// changeDescription, bump); `-` reads standard input.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// List configurations.
    List {
        #[arg(long = "type")]
        config_type: Option<String>,
        #[arg(long)]
        status: Option<String>,
        /// Names containing this text.
        #[arg(long)]
        name: Option<String>,
    },
    /// Show a configuration, or one of its versions.
    Show {
        /// NAME or NAME@VERSION.
        spec: String,
    },
    /// The changes between two versions, breaking ones marked.
    Diff {
        name: String,
        from: String,
        to: String,
    },
    /// Validate a file without saving it; exits 1 when it is invalid.
    Validate {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Approve a version (Admin).
    Approve {
        /// NAME@VERSION.
        spec: String,
        #[arg(long)]
        notes: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// NAME or NAME@VERSION (default: the latest approved version).
    spec: String,
    #[arg(long, value_enum, default_value_t = StrategyArg::Canary)]
    strategy: StrategyArg,
    /// Target regions, comma separated (default: every region with edges).
    #[arg(long, value_delimiter = ',')]
    regions: Vec<String>,
    /// Target edge locations, comma separated.
    #[arg(long, value_delimiter = ',')]
    locations: Vec<String>,
    /// Show the plan and push nothing.
    #[arg(long)]
    dry_run: bool,
    /// Follow the deployment to its end; exit 0 Completed, 3 RolledBack, 1 Failed.
    #[arg(long)]
    watch: bool,
    /// Deploy a version whose validation has warnings.
    #[arg(long)]
    acknowledge_warnings: bool,
    /// How long each step is watched, e.g. 10s, 5m (canary step, blue-green test, rolling
    /// region delay, wave watch).
    #[arg(long, value_parser = deploy::parse_span)]
    monitor_duration: Option<Span>,
    /// Canary promotion steps in percent, e.g. 10,50,100.
    #[arg(long, value_delimiter = ',')]
    steps: Option<Vec<u32>>,
    /// Fewer requests than this in a window make a verdict inconclusive.
    #[arg(long)]
    min_samples: Option<u64>,
    /// Rolling: wait for `rollout approve-next-region` after each region.
    #[arg(long)]
    require_approval: bool,
    /// Canary: wait for `rollout promote` after each passed step.
    #[arg(long)]
    manual_promote: bool,
    /// What a failed watch does.
    #[arg(long, value_enum)]
    failure_action: Option<FailureArg>,
    #[command(flatten)]
    common: Common,
}

#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Where a deployment stands; --watch follows it to its end.
    Status {
        id: String,
        /// Exit 0 Completed, 3 RolledBack, 1 Failed.
        #[arg(long)]
        watch: bool,
    },
    /// List deployments, newest first.
    List {
        /// A configuration name or id.
        #[arg(long)]
        configuration: Option<String>,
        #[arg(long)]
        status: Option<String>,
    },
    /// Stop new pushes; edges stay where they are.
    Pause { id: String },
    /// Go on from where it paused.
    Resume { id: String },
    /// Skip the rest of the current watch.
    Promote { id: String },
    /// Let a rolling deployment go on to the next region.
    ApproveNextRegion { id: String },
    /// Return every edge the deployment touched to its previous version.
    Rollback {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum EdgesCommand {
    /// List edge locations with their health.
    List {
        #[arg(long)]
        region: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum FreezeCommand {
    /// Pause every running deployment and refuse new ones (Admin).
    On {
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift the freeze (Admin).
    Off,
    /// Whether rollouts are frozen.
    Status,
}

/// The control plane and token from the credentials file and the environment.
fn connect(common: &Common) -> Result<Api, ClientError> {
    let env = |name: &str| std::env::var(name).ok();
    let file = match credentials::credentials_path(env) {
        Some(path) => credentials::load(&path)?,
        None => None,
    };
    let target = credentials::resolve(file, env)?;
    let ca_file = common.ca_file.clone().or(target.ca_file);
    Api::new(&target.url, Some(target.token), ca_file.as_deref())
}

fn filters<'a>(pairs: &[(&'a str, Option<String>)]) -> Vec<(&'a str, String)> {
    pairs
        .iter()
        .filter_map(|(key, value)| value.clone().map(|v| (*key, v)))
        .collect()
}

async fn dispatch(command: ClientCommand) -> Result<u8, ClientError> {
    match command {
        ClientCommand::Login {
            url,
            username,
            password_stdin,
            common,
        } => {
            let options = login::LoginOptions {
                url,
                username,
                password_stdin,
                ca_file: common.ca_file,
            };
            login::login(options, Ui::new(common.output)).await?;
            Ok(0)
        }
        ClientCommand::Config { command, common } => {
            let api = connect(&common)?;
            let ui = Ui::new(common.output);
            match command {
                ConfigCommand::Apply { file } => {
                    configurations::apply(&api, &file, ui.output).await?
                }
                ConfigCommand::List {
                    config_type,
                    status,
                    name,
                } => {
                    let query =
                        filters(&[("type", config_type), ("status", status), ("name", name)]);
                    configurations::list(&api, &query, ui.output, ui.paint).await?
                }
                ConfigCommand::Show { spec } => {
                    configurations::show(&api, &spec, ui.output, ui.paint).await?
                }
                ConfigCommand::Diff { name, from, to } => {
                    configurations::diff(&api, &name, &from, &to, ui.output, ui.paint).await?
                }
                ConfigCommand::Validate { file } => {
                    let valid = configurations::validate(&api, &file, ui.output, ui.paint).await?;
                    return Ok(if valid { 0 } else { 1 });
                }
                ConfigCommand::Approve { spec, notes } => {
                    configurations::approve(&api, &spec, notes, ui.output, ui.paint).await?
                }
            }
            Ok(0)
        }
        ClientCommand::Deploy(args) => {
            let api = connect(&args.common)?;
            let options = DeployOptions {
                strategy: args.strategy,
                regions: args.regions,
                locations: args.locations,
                acknowledge_warnings: args.acknowledge_warnings,
                monitor_duration: args.monitor_duration,
                steps: args.steps,
                min_samples: args.min_samples,
                require_approval: args.require_approval,
                manual_promote: args.manual_promote,
                failure_action: args.failure_action,
            };
            deploy::deploy(
                &api,
                &args.spec,
                options,
                args.dry_run,
                args.watch,
                Ui::new(args.common.output),
            )
            .await
        }
        ClientCommand::Rollout { command, common } => {
            let api = connect(&common)?;
            let ui = Ui::new(common.output);
            let (id, action, reason) = match command {
                RolloutCommand::Status { id, watch } => {
                    return rollout::status(&api, &id, watch, ui).await;
                }
                RolloutCommand::List {
                    configuration,
                    status,
                } => {
                    let configuration = match configuration {
                        Some(name) => {
                            let found = configurations::find(&api, &name).await?;
                            Some(output::text(&found, "configurationId"))
                        }
                        None => None,
                    };
                    let query = filters(&[("configurationId", configuration), ("status", status)]);
                    rollout::list(&api, &query, ui).await?;
                    return Ok(0);
                }
                RolloutCommand::Pause { id } => (id, Action::Pause, None),
                RolloutCommand::Resume { id } => (id, Action::Resume, None),
                RolloutCommand::Promote { id } => (id, Action::Promote, None),
                RolloutCommand::ApproveNextRegion { id } => (id, Action::ApproveNextRegion, None),
                RolloutCommand::Rollback { id, reason } => (id, Action::Rollback, reason),
            };
            rollout::act(&api, &id, action, reason, ui).await?;
            Ok(0)
        }
        ClientCommand::Edges { command, common } => {
            let api = connect(&common)?;
            let EdgesCommand::List { region } = command;
            edges::list(&api, region, Ui::new(common.output)).await?;
            Ok(0)
        }
        ClientCommand::Freeze { command, common } => {
            let api = connect(&common)?;
            let (action, reason) = match command {
                FreezeCommand::On { reason } => (freeze::FreezeAction::On, reason),
                FreezeCommand::Off => (freeze::FreezeAction::Off, None),
                FreezeCommand::Status => (freeze::FreezeAction::Status, None),
            };
            freeze::freeze(&api, action, reason, Ui::new(common.output)).await?;
            Ok(0)
        }
    }
}

/// Runs one client command and answers the process exit code; failures are printed here,
/// as the API worded them.
pub fn run(command: ClientCommand) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("edgeplane: cannot start: {error}");
            return 1;
        }
    };
    match runtime.block_on(dispatch(command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("edgeplane: {error}");
            match error {
                ClientError::Usage(_) => 2,
                _ => 1,
            }
        }
    }
}
