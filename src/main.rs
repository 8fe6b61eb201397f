//! The `edgeplane` binary: parses the command line and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "edgeplane",
    version,
    about = "Self-hosted control plane for CDN edge configuration"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    /// A fleet of simulated edges in one process.
    Simulate {
        #[arg(long, env = "EDGEPLANE_SIMULATE_CONTROL_PLANE")]
        control_plane: String,
        /// Admin token used to register the edges.
        #[arg(long, env = "EDGEPLANE_SIMULATE_TOKEN")]
        token: String,
        #[arg(long, default_value_t = 9)]
        edges: usize,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        heartbeat_interval: Duration,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        push_latency: Duration,
        #[arg(long, default_value_t = 0.0)]
        nack_rate: f64,
        /// Edges that start down (comma separated ids).
        #[arg(long, value_delimiter = ',')]
        down: Vec<String>,
        #[arg(long, default_value = "127.0.0.1")]
        listen_host: std::net::IpAddr,
    },
}

#[derive(Subcommand)]
enum AgentAction {
    /// Put the previous version of a configuration back from local history.
    Rollback { configuration_id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let result = match cli.command {
        Command::Agent {
            config,
            action: Some(AgentAction::Rollback { configuration_id }),
        } => edgeplane::edge::agent::rollback_offline(&config, &configuration_id).map(|version| {
            println!("{configuration_id} is now at {version}");
        }),
        Command::Agent {
            config,
            action: None,
        } => runtime().and_then(|rt| rt.block_on(edgeplane::edge::agent::run(&config))),
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
            let opts = edgeplane::edge::SimulateOptions {
                control_plane,
                admin_token: token,
                edges,
                heartbeat_interval,
                seed,
                push_latency,
                nack_rate,
                down,
                listen_host,
            };
            runtime().and_then(|rt| rt.block_on(edgeplane::edge::simulator::run(opts)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("edgeplane: {error:#}");
            if error
                .downcast_ref::<edgeplane::edge::AgentConfigError>()
                .is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
