//! `viewkv server`: run one kv server until Ctrl-C or SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use viewkv::kv::{Limits, ServerConfig};
use viewkv::net::RpcClient;

use super::monitor::stop_signal;
use super::{load, parse_duration, MonitorsArg};

/// Arguments of `viewkv server`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on; also how clients and other servers reach this one.
    #[arg(long)]
    listen: String,
    /// Stable name of this server [default: its address].
    #[arg(long)]
    id: Option<String>,
    /// Where the monitors are (and the cluster file).
    #[command(flatten)]
    monitors: MonitorsArg,
    /// How often to ping the monitors [default: the cluster file's, else 100ms].
    #[arg(long, value_parser = parse_duration)]
    ping_interval: Option<Duration>,
    /// Largest key or value in bytes [default: the cluster file's, else 8 MiB].
    #[arg(long)]
    max_value: Option<usize>,
    /// Forget an idle client's duplicate-table entry after this long [default: 10m]. Must be
    /// longer than the clients' deadline.
    #[arg(long, value_parser = parse_duration)]
    session_ttl: Option<Duration>,
    /// Most sessions holding a saved reply [default: 100000].
    #[arg(long)]
    max_sessions: Option<usize>,
    /// Servers that must hold a write before it is acknowledged: 2 (no single crash loses an
    /// acknowledged write) or 1 (a lone primary acknowledges) [default: the cluster file's,
    /// else 2].
    #[arg(long)]
    min_copies: Option<u32>,
    /// Answer reads on the primary alone while it holds a read lease (true), or enter every
    /// read in the stream to the backup (false) [default: the cluster file's, else true].
    #[arg(long)]
    read_lease: Option<bool>,
    /// Also serve the Redis protocol (RESP2) here, e.g. 127.0.0.1:6379: redis-cli and Redis
    /// client libraries work against it; AUTH with the cluster secret if there is one.
    #[arg(long)]
    resp_listen: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let file = load(args.monitors.config.as_ref())?;
    let mut config = ServerConfig::new(&args.listen, args.monitors.resolve()?);
    if let Some(id) = args.id {
        config.id = id;
    }
    config.timings = file.timings();
    if let Some(interval) = args.ping_interval {
        config.timings.ping_interval = interval;
    }
    let defaults = Limits::default();
    config.limits = Limits {
        max_value: args
            .max_value
            .or(file.limits.max_value)
            .unwrap_or(defaults.max_value),
        session_ttl: args
            .session_ttl
            .or(file.limits.session_ttl)
            .unwrap_or(defaults.session_ttl),
        max_sessions: args
            .max_sessions
            .or(file.limits.max_sessions)
            .unwrap_or(defaults.max_sessions),
        max_session_bytes: file
            .limits
            .max_session_bytes
            .unwrap_or(defaults.max_session_bytes),
    };
    if let Some(copies) = args.min_copies.or(file.min_copies) {
        config.min_copies = copies;
    }
    if let Some(lease) = args.read_lease.or(file.read_lease) {
        config.read_lease = lease;
    }
    config.tls = super::tls(&file)?;
    config.validate().map_err(anyhow::Error::msg)?;
    if let Some(deadline) = file.client.deadline {
        viewkv::config::check_deadline(deadline, config.limits.session_ttl)
            .map_err(anyhow::Error::msg)?;
    }
    let ceiling = viewkv::net::MAX_MESSAGE / 2;
    if config.limits.max_value > ceiling {
        anyhow::bail!(
            "max_value {} is over {ceiling} bytes, half the largest message",
            config.limits.max_value
        );
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    config.secret = super::secret(&file)?;
    let rpc = RpcClient::new(&args.listen, None)
        .with_secret(config.secret.clone())
        .with_tls(config.tls.as_ref());
    let resp = match &args.resp_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for the Redis protocol on {addr}"))?,
        ),
        None => None,
    };
    viewkv::kv::run_with_resp(config, listener, resp, rpc, stop_signal()).await;
    Ok(ExitCode::SUCCESS)
}
