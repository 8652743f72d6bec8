//! `viewkv monitor`: run one monitor node until Ctrl-C or SIGTERM.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use viewkv::monitor::{MonitorConfig, RaftTimings};
use viewkv::net::RpcClient;
use viewkv::view::Timings;

use super::{load, parse_duration};

/// Arguments of `viewkv monitor`. Each setting comes from its flag, else the cluster file, else
/// the default.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// This monitor's id: one of the ids in --peers (or the cluster file).
    #[arg(long)]
    id: u64,
    /// Every monitor of the group, this one included: `1=HOST:PORT,2=HOST:PORT,3=HOST:PORT`.
    #[arg(long, value_delimiter = ',', value_parser = parse_peer)]
    peers: Option<Vec<(u64, String)>>,
    /// A cluster file (see config/local.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on [default: this monitor's address in --peers].
    #[arg(long)]
    listen: Option<String>,
    /// Where the Raft log, vote and snapshots are kept [default: the cluster file's
    /// data_dir/monitor-ID].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// How often kv servers ping [default: 100ms].
    #[arg(long, value_parser = parse_duration)]
    ping_interval: Option<Duration>,
    /// Missed pings after which a kv server is dead [default: 5].
    #[arg(long)]
    dead_pings: Option<u32>,
    /// Raft heartbeat interval, also openraft's timeout for one append [default: 50ms].
    #[arg(long, value_parser = parse_duration)]
    heartbeat: Option<Duration>,
    /// A follower stands for election after hearing nothing for --election-max plus a random
    /// time in [--election-min, --election-max) [default: 150ms].
    #[arg(long, value_parser = parse_duration)]
    election_min: Option<Duration>,
    /// See --election-min; also the leader's lease [default: 300ms].
    #[arg(long, value_parser = parse_duration)]
    election_max: Option<Duration>,
    /// Snapshot the view table (and purge the log) after this many decisions [default: 1000].
    #[arg(long)]
    snapshot_every: Option<u64>,
    /// Join a running group: with an empty data directory, do not form a group but wait to be
    /// added (`viewkv monitors add ID=ADDR`). Refused while ID is still a voter of the group
    /// (`viewkv monitors remove ID` first). Without it, an empty monitor the group already
    /// knows refuses to start.
    #[arg(long)]
    join: bool,
}

pub fn parse_peer(text: &str) -> Result<(u64, String), String> {
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
    let file = load(args.config.as_ref())?;
    let peers: BTreeMap<u64, String> = match args.peers {
        Some(peers) => peers.into_iter().collect(),
        None => file
            .monitors
            .iter()
            .map(|m| (m.id, m.addr.clone()))
            .collect(),
    };
    if peers.is_empty() {
        bail!("no monitors: give --peers 1=HOST:PORT,... or --config FILE");
    }
    let advertised = peers
        .get(&args.id)
        .with_context(|| format!("--id {} is not one of the monitors {:?}", args.id, peers))?
        .clone();
    let entry = file.monitors.iter().find(|m| m.id == args.id);
    let data_dir = args
        .data_dir
        .or_else(|| entry.and_then(|m| m.data_dir.clone()))
        .or_else(|| {
            file.data_dir
                .as_ref()
                .map(|d| d.join(format!("monitor-{}", args.id)))
        })
        .context("no data directory: give --data-dir DIR (or data_dir in the cluster file)")?;
    let listen = args.listen.unwrap_or_else(|| advertised.clone());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let t = &file.timings;
    let (timings, raft) = (Timings::default(), RaftTimings::default());
    let config = MonitorConfig {
        id: args.id,
        peers,
        data_dir,
        timings: Timings {
            ping_interval: args
                .ping_interval
                .or(t.ping_interval)
                .unwrap_or(timings.ping_interval),
            dead_pings: args
                .dead_pings
                .or(t.dead_pings)
                .unwrap_or(timings.dead_pings),
        },
        raft: RaftTimings {
            heartbeat: args.heartbeat.or(t.heartbeat).unwrap_or(raft.heartbeat),
            election_min: args
                .election_min
                .or(t.election_min)
                .unwrap_or(raft.election_min),
            election_max: args
                .election_max
                .or(t.election_max)
                .unwrap_or(raft.election_max),
            snapshot_every: args
                .snapshot_every
                .or(t.snapshot_every)
                .unwrap_or(raft.snapshot_every),
            keep_after_snapshot: raft.keep_after_snapshot,
        },
        secret: super::secret(&file)?,
        tls: super::tls(&file)?,
        join: args.join,
    };
    config.timings.validate().map_err(anyhow::Error::msg)?;
    let r = &config.raft;
    if r.heartbeat.is_zero() || r.election_min <= r.heartbeat || r.election_max <= r.election_min {
        anyhow::bail!(
            "Raft timings must satisfy 0 < heartbeat ({:?}) < election_min ({:?}) < election_max ({:?})",
            r.heartbeat,
            r.election_min,
            r.election_max
        );
    }
    let rpc = RpcClient::new(&advertised, None)
        .with_secret(config.secret.clone())
        .with_tls(config.tls.as_ref());
    viewkv::monitor::run(config, listener, rpc, stop_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
