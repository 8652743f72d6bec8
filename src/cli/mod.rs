//! The command line: one binary, one subcommand per role or action.

mod bench;
mod children;
mod monitor;
mod view;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// The monitors a client-side command talks to when none are given.
const DEFAULT_MONITORS: &str = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

/// viewkv: a fault-tolerant primary/backup key/value store.
#[derive(Parser, Debug)]
#[command(version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one node of the monitor group (the Raft-replicated view service).
    Monitor(monitor::Args),
    /// Print the current view and which monitor leads.
    View(view::Args),
    /// Measure failover and throughput on real processes.
    Bench(bench::Args),
}

/// Where the monitors are, for commands that talk to a cluster.
#[derive(clap::Args, Debug, Clone)]
pub struct MonitorsArg {
    /// Monitor addresses, comma-separated.
    #[arg(long, env = "VIEWKV_MONITORS", default_value = DEFAULT_MONITORS, value_delimiter = ',')]
    monitors: Vec<String>,
    /// How long to wait for a monitor's answer.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    timeout: Duration,
}

/// Parse `100ms`, `2s`, `1m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|err| format!("{text:?} is not a duration ({err}); try 100ms or 2s"))
}

/// Log to stderr at `default` level unless `RUST_LOG` says otherwise.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Run the parsed command; the exit code on success.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Monitor(args) => {
            init_logging("info,openraft=warn");
            monitor::run(args).await
        }
        Command::View(args) => {
            init_logging("warn");
            view::run(args).await
        }
        Command::Bench(args) => {
            init_logging("warn");
            bench::run(args).await
        }
    }
}
