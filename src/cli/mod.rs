//! The command line: one binary, one subcommand per role or action.

mod backup;
mod bench;
mod bench_load;
mod bench_sync;
mod children;
mod kv;
mod local;
mod monitor;
mod monitors;
mod recover;
mod server;
mod up;
mod view;

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use clap::{Parser, Subcommand};
use viewkv::config::ClusterFile;
use viewkv::monitor::MonitorClient;
use viewkv::net::{RpcClient, Secret, Tls, TlsFiles};

/// The monitors a client-side command talks to when neither a flag, a cluster file nor
/// `VIEWKV_MONITORS` names them.
const DEFAULT_MONITORS: &str = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

/// viewkv: a fault-tolerant primary/backup key/value store whose view service is a Raft group.
#[derive(Parser, Debug)]
#[command(version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
    /// Log lines as text, or as one JSON object per line for a log collector. The level comes
    /// from `RUST_LOG` (e.g. `RUST_LOG=debug`, `RUST_LOG=viewkv=debug,openraft=info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "VIEWKV_LOG_FORMAT")]
    log_format: LogFormat,
    /// A file holding the cluster secret: every request proves it, and a monitor or server
    /// started with it refuses requests that do not [default: the cluster file's
    /// `secret_file`; none: the cluster is open to anyone who can reach its ports].
    #[arg(long, global = true, env = "VIEWKV_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// This node's TLS certificate chain (PEM): listeners serve it and calls present it.
    /// Any `--tls-*` turns TLS on for every listener and call [default: the cluster file's
    /// `tls_cert`; no TLS file anywhere: plain HTTP].
    #[arg(long, global = true, env = "VIEWKV_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM) [default: the cluster file's `tls_key`].
    #[arg(long, global = true, env = "VIEWKV_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// The CA (PEM) that peers' certificates must be signed by; given, every listener requires
    /// a client certificate it signed (mutual TLS) [default: the cluster file's `tls_ca`;
    /// none: calls trust the public web roots].
    #[arg(long, global = true, env = "VIEWKV_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Threads of this process's async runtime [default: `TOKIO_WORKER_THREADS`, else one per
    /// core; `bench load` a third of the cores]. `viewkv up` gives each of its nodes a third of
    /// the cores (at least one) unless `TOKIO_WORKER_THREADS` is set: six processes share the
    /// machine. `bench load` takes a node's share too, so that it does not starve the local
    /// cluster it measures; on a machine of its own, give it every core with this flag.
    #[arg(long, global = true)]
    worker_threads: Option<NonZeroUsize>,
}

impl Cli {
    /// Let a command that prints and exits end quietly when its reader goes away, as Unix
    /// tools do (`viewkv view | head -1`): Rust ignores SIGPIPE, so a print to a closed pipe
    /// would panic. The others keep ignoring it: a log line written to a closed pipe must not
    /// stop a node, and a benchmark reports a child's closed pipe as an error. (Sockets never
    /// raise it: their writes use MSG_NOSIGNAL.)
    pub fn default_sigpipe(&self) {
        if self.command.prints_and_exits() {
            // SAFETY: called from `main` before any thread starts; restoring the default
            // action of a signal has no other effect on this process.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            }
        }
    }

    /// `--worker-threads`, else a node's share of the cores for the load generator (unless
    /// `TOKIO_WORKER_THREADS` is set), else none: the runtime's default.
    pub fn worker_threads(&self) -> Option<usize> {
        match self.worker_threads {
            Some(threads) => Some(threads.get()),
            None if self.command.generates_load() => children::node_share(),
            None => None,
        }
    }
}

/// `--secret-file`, once parsed: commands read it through [`secret`].
static SECRET_FILE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// The cluster secret: from `--secret-file` (or `VIEWKV_SECRET_FILE`), else the cluster file's
/// `secret_file`, else none.
pub fn secret(file: &ClusterFile) -> anyhow::Result<Option<Secret>> {
    match secret_path(file) {
        Some(path) => Ok(Some(Secret::load(&path)?)),
        None => Ok(None),
    }
}

/// Where the cluster secret is to be found, if anywhere (see [`secret`]).
pub fn secret_path(file: &ClusterFile) -> Option<PathBuf> {
    let flag = SECRET_FILE.get().and_then(Option::as_ref);
    flag.or(file.secret_file.as_ref()).cloned()
}

/// `--tls-cert`, `--tls-key` and `--tls-ca`, once parsed: commands read them through [`tls`].
static TLS_FILES: OnceLock<TlsFiles> = OnceLock::new();

/// Where the TLS files are: each flag (or its variable), else the cluster file's key.
pub fn tls_files(file: &ClusterFile) -> TlsFiles {
    let flags = TLS_FILES.get().cloned().unwrap_or_default();
    TlsFiles {
        cert: flags.cert.or_else(|| file.tls_cert.clone()),
        key: flags.key.or_else(|| file.tls_key.clone()),
        ca: flags.ca.or_else(|| file.tls_ca.clone()),
    }
}

/// TLS, loaded from [`tls_files`]; none if no file is named.
pub fn tls(file: &ClusterFile) -> anyhow::Result<Option<Tls>> {
    let files = tls_files(file);
    if !files.any() {
        return Ok(None);
    }
    Ok(Some(Tls::load(&files)?))
}

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: timestamp, level, target, fields.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a local cluster (3 monitors, 3 kv servers) as child processes; Ctrl-C stops it.
    Up(up::Args),
    /// Run one node of the monitor group (the Raft-replicated view service).
    Monitor(monitor::Args),
    /// List the monitor group's members, add one or remove one.
    Monitors(monitors::Args),
    /// Run one kv server.
    Server(server::Args),
    /// Print the value of KEY (exit 1 if it is absent).
    Get(kv::GetArgs),
    /// Set KEY to VALUE.
    Put(kv::WriteArgs),
    /// Append VALUE to the value of KEY.
    Append(kv::WriteArgs),
    /// Store the FNV-1a hash of (previous value ++ VALUE) in KEY; print the previous value.
    Puthash(kv::WriteArgs),
    /// Remove KEY.
    Delete(kv::GetArgs),
    /// Print the current view and which monitor leads.
    View(view::Args),
    /// Get a stalled service going again: make a live server primary of a new view (says what
    /// would be lost; --accept-data-loss does it).
    Recover(recover::Args),
    /// Write a consistent snapshot of the service's data to FILE, with a progress bar.
    Dump(backup::DumpArgs),
    /// Write the keys of a dump into an empty service (--force: into one that holds keys).
    Restore(backup::RestoreArgs),
    /// Measure failover on real processes.
    Bench(bench::Args),
}

impl Command {
    /// Whether this is the load generator, `viewkv bench load`.
    fn generates_load(&self) -> bool {
        matches!(self, Command::Bench(args) if args.generates_load())
    }

    /// Whether this talks to a cluster, prints and exits: not a node, not a local cluster, not
    /// a benchmark (which runs processes and writes to their pipes).
    fn prints_and_exits(&self) -> bool {
        !matches!(
            self,
            Command::Up(_) | Command::Monitor(_) | Command::Server(_) | Command::Bench(_)
        )
    }
}

/// Where the monitors are, for commands that talk to a cluster.
#[derive(clap::Args, Debug, Clone)]
pub struct MonitorsArg {
    /// Monitor addresses, comma-separated [default: the cluster file's, else $VIEWKV_MONITORS,
    /// else 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003].
    #[arg(long, value_delimiter = ',')]
    monitors: Option<Vec<String>>,
    /// A cluster file (see config/local.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// How long to wait for one answer from a server.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    timeout: Duration,
}

impl MonitorsArg {
    /// The cluster secret (see [`secret`]), with the cluster file this argument names.
    pub fn secret(&self) -> anyhow::Result<Option<Secret>> {
        secret(&load(self.config.as_ref())?)
    }

    /// TLS (see [`tls`]), with the cluster file this argument names.
    pub fn tls(&self) -> anyhow::Result<Option<Tls>> {
        tls(&load(self.config.as_ref())?)
    }

    /// A client of the monitor group, proving the secret and speaking TLS as configured.
    pub fn monitor_client(&self) -> anyhow::Result<MonitorClient> {
        let rpc = RpcClient::new("viewkv-cli", None)
            .with_secret(self.secret()?)
            .with_tls(self.tls()?.as_ref());
        Ok(MonitorClient::new(rpc, self.resolve()?, self.timeout))
    }

    /// The monitors: the flag, else the cluster file, else `VIEWKV_MONITORS`, else the local
    /// defaults.
    pub fn resolve(&self) -> anyhow::Result<Vec<String>> {
        if let Some(monitors) = &self.monitors {
            return Ok(monitors.clone());
        }
        let file = load(self.config.as_ref())?;
        if !file.monitors.is_empty() {
            return Ok(file.monitor_addrs());
        }
        let list = std::env::var("VIEWKV_MONITORS").unwrap_or_else(|_| DEFAULT_MONITORS.into());
        Ok(list
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect())
    }
}

/// The cluster file at `path`, or an empty one.
pub fn load(path: Option<&PathBuf>) -> anyhow::Result<ClusterFile> {
    match path {
        Some(path) => Ok(ClusterFile::load(path)?),
        None => Ok(ClusterFile::default()),
    }
}

/// Parse `100ms`, `2s`, `1m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|err| format!("{text:?} is not a duration ({err}); try 100ms or 2s"))
}

/// Log to stderr at `default` level unless `RUST_LOG` says otherwise, in `format`.
fn init_logging(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => logs.try_init(),
        LogFormat::Json => logs.json().try_init(),
    };
}

/// Run the parsed command; the exit code on success.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let level = match cli.command {
        Command::Monitor(_) => "info,openraft=warn",
        Command::Server(_) => "info",
        _ => "warn",
    };
    init_logging(level, cli.log_format);
    let _ = SECRET_FILE.set(cli.secret_file.clone());
    let _ = TLS_FILES.set(TlsFiles {
        cert: cli.tls_cert.clone(),
        key: cli.tls_key.clone(),
        ca: cli.tls_ca.clone(),
    });
    match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Monitor(args) => monitor::run(args).await,
        Command::Monitors(args) => monitors::run(args).await,
        Command::Server(args) => server::run(args).await,
        Command::Get(args) => kv::get(args, false).await,
        Command::Delete(args) => kv::get(args, true).await,
        Command::Put(args) => kv::write(args, kv::Write::Put).await,
        Command::Append(args) => kv::write(args, kv::Write::Append).await,
        Command::Puthash(args) => kv::write(args, kv::Write::PutHash).await,
        Command::View(args) => view::run(args).await,
        Command::Recover(args) => recover::run(args).await,
        Command::Dump(args) => backup::dump(args).await,
        Command::Restore(args) => backup::restore(args).await,
        Command::Bench(args) => bench::run(args).await,
    }
}
