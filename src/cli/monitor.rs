//! `viewkv monitor`: run one monitor node until Ctrl-C or SIGTERM.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use viewkv::monitor::{MonitorConfig, RaftTimings};
use viewkv::net::RpcClient;
use viewkv::view::Timings;

use super::parse_duration;

/// Arguments of `viewkv monitor`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// This monitor's id: one of the ids in --peers.
    #[arg(long)]
    id: u64,
    /// Every monitor of the group, this one included: `1=HOST:PORT,2=HOST:PORT,3=HOST:PORT`.
    #[arg(long, value_delimiter = ',', value_parser = parse_peer, required = true)]
    peers: Vec<(u64, String)>,
    /// Address to listen on (default: this monitor's address in --peers).
    #[arg(long)]
    listen: Option<String>,
    /// Where the Raft log, vote and snapshots are kept.
    #[arg(long)]
    data_dir: PathBuf,
    /// How often kv servers ping.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    ping_interval: Duration,
    /// Missed pings after which a kv server is dead.
    #[arg(long, default_value_t = 5)]
    dead_pings: u32,
    /// Raft heartbeat interval (also openraft's timeout for one append RPC).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    heartbeat: Duration,
    /// Shortest Raft election timeout (also the leader's lease).
    #[arg(long, default_value = "300ms", value_parser = parse_duration)]
    election_min: Duration,
    /// Longest Raft election timeout.
    #[arg(long, default_value = "600ms", value_parser = parse_duration)]
    election_max: Duration,
    /// Snapshot the view table (and purge the log) after this many decisions.
    #[arg(long, default_value_t = 1000)]
    snapshot_every: u64,
}

fn parse_peer(text: &str) -> Result<(u64, String), String> {
    let (id, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not ID=HOST:PORT"))?;
    let id = id
        .trim()
        .parse()
        .map_err(|_| format!("{id:?} in {text:?} is not a monitor id (a number)"))?;
    Ok((id, addr.trim().to_string()))
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let peers: BTreeMap<u64, String> = args.peers.into_iter().collect();
    let advertised = peers
        .get(&args.id)
        .with_context(|| format!("--id {} is not in --peers", args.id))?
        .clone();
    let listen = args.listen.unwrap_or_else(|| advertised.clone());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let config = MonitorConfig {
        id: args.id,
        peers,
        data_dir: args.data_dir,
        timings: Timings {
            ping_interval: args.ping_interval,
            dead_pings: args.dead_pings,
        },
        raft: RaftTimings {
            heartbeat: args.heartbeat,
            election_min: args.election_min,
            election_max: args.election_max,
            snapshot_every: args.snapshot_every,
            ..RaftTimings::default()
        },
    };
    let rpc = RpcClient::new(&advertised, None);
    viewkv::monitor::run(config, listener, rpc, stop_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
