//! The monitor group: the view service, replicated by Raft (design.md "The monitor group").
//!
//! Only the Raft leader decides views; its decisions — registrations, acknowledgments, new
//! views — are committed to the Raft log and applied by every monitor to a [`ViewTable`]. Pings
//! are soft state on the leader and never logged.
//!
//! [`ViewTable`]: crate::view::ViewTable

pub mod api;
mod client;
mod format;
mod heard;
mod lease;
mod legacy;
pub mod membership;
mod node;
mod state_machine;

pub use client::{MonitorClient, MonitorUnavailable};
pub use node::Monitor;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use viewkv_raft::{Network, Node, NodeId, Raft, Store};

use crate::net::{serve, RpcClient, Secret, ServeLimits, Tls};
use crate::view::Timings;
use heard::Heard;
use lease::Lease;
use membership::join::Start;
use state_machine::StateMachine;

/// Raft timings and log compaction settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftTimings {
    /// How often the leader sends heartbeats.
    pub heartbeat: Duration,
    /// openraft 0.9 has a follower that hears nothing for `election_max` (its leader lease,
    /// during which it also refuses to vote) plus a random time in `election_min..election_max`
    /// stand for election: the defaults give an effective election timeout of 450-600 ms.
    pub election_min: Duration,
    /// See `election_min`. Also the monitor's own lease: a leader answers pings only while a
    /// quorum acknowledged it less than this long ago, so it stops before anyone else can be
    /// elected.
    pub election_max: Duration,
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, to catch up slow followers without one.
    pub keep_after_snapshot: u64,
}

impl Default for RaftTimings {
    fn default() -> Self {
        RaftTimings {
            heartbeat: Duration::from_millis(50),
            election_min: Duration::from_millis(150),
            election_max: Duration::from_millis(300),
            snapshot_every: 1000,
            keep_after_snapshot: 100,
        }
    }
}

/// Everything one monitor node needs to start.
#[derive(Clone, Debug)]
pub struct MonitorConfig {
    /// This node's Raft id; must be a key of `peers`.
    pub id: NodeId,
    /// Every monitor of the group, this one included: id → advertised address.
    pub peers: BTreeMap<NodeId, String>,
    /// Where the Raft log, vote and snapshots are kept.
    pub data_dir: PathBuf,
    /// Ping interval and dead pings.
    pub timings: Timings,
    /// Raft timings.
    pub raft: RaftTimings,
    /// The cluster secret every request to this monitor must prove, if the cluster has one
    /// (outbound, the `RpcClient` given to [`run`] carries it).
    pub secret: Option<Secret>,
    /// TLS for this monitor's listener (mutual when it has a CA), if the cluster uses TLS
    /// (outbound, the `RpcClient` given to [`run`] connects with it).
    pub tls: Option<Tls>,
    /// Started with `--join`: with an empty data directory, wait to be added to the running
    /// group (`viewkv monitors add`) instead of forming one (see `membership::join`).
    pub join: bool,
}

/// Why a monitor could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The configuration is unusable.
    #[error("bad monitor configuration: {0}")]
    Config(String),
    /// The data directory could not be opened.
    #[error(transparent)]
    Store(#[from] viewkv_raft::StoreError),
    /// Raft storage failed.
    #[error("raft storage: {0}")]
    Storage(String),
    /// Raft could not start.
    #[error("raft: {0}")]
    Raft(String),
    /// The membership rules forbid this start (an empty monitor that was a member, `--join`
    /// while still a voter); the message says what to do.
    #[error("monitor start refused: {0}")]
    Membership(String),
}

impl MonitorConfig {
    fn openraft_config(&self) -> Result<openraft::Config, MonitorError> {
        let ms = |d: Duration| d.as_millis() as u64;
        openraft::Config {
            cluster_name: "viewkv-monitors".to_string(),
            heartbeat_interval: ms(self.raft.heartbeat),
            election_timeout_min: ms(self.raft.election_min),
            election_timeout_max: ms(self.raft.election_max),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.raft.snapshot_every),
            max_in_snapshot_log_to_keep: self.raft.keep_after_snapshot,
            purge_batch_size: 1,
            ..Default::default()
        }
        .validate()
        .map_err(|err| MonitorError::Config(err.to_string()))
    }
}

/// Run one monitor node on `listener` until `shutdown` completes. On first start the node forms
/// the group with its peers by itself; on later starts it rejoins with the data in `data_dir`.
pub async fn run(
    config: MonitorConfig,
    listener: TcpListener,
    rpc: RpcClient,
    shutdown: impl Future<Output = ()>,
) -> Result<(), MonitorError> {
    if !config.peers.contains_key(&config.id) {
        return Err(MonitorError::Config(format!(
            "--id {} is not one of the peers {:?}",
            config.id,
            config.peers.keys().collect::<Vec<_>>()
        )));
    }
    let tls = match &config.tls {
        Some(tls) => Some(
            tls.acceptor()
                .map_err(|err| MonitorError::Config(err.to_string()))?,
        ),
        None => None,
    };
    let raft_config = Arc::new(config.openraft_config()?);
    let store = Store::open(&config.data_dir)?;
    let sm = StateMachine::open(store.snapshots())?;
    let heard = Arc::new(Heard::open(config.id, &config.data_dir)?);
    let raft = Raft::new(
        config.id,
        raft_config,
        Network::new(rpc.clone()).on_heard(heard.hook()),
        store.log_store(),
        sm.clone(),
    )
    .await
    .map_err(|err| MonitorError::Raft(err.to_string()))?;
    let members: BTreeMap<NodeId, Node> = config
        .peers
        .iter()
        .map(|(id, addr)| (*id, Node { addr: addr.clone() }))
        .collect();
    let pristine = !raft
        .is_initialized()
        .await
        .map_err(|err| MonitorError::Raft(err.to_string()))?;
    if pristine {
        match membership::join::empty_start(&config, &rpc).await {
            // Every member initializes with the same membership: openraft allows it, and no
            // node has to be told to go first.
            Ok(Start::Initialize) => {
                if let Err(err) = raft.initialize(members).await {
                    tracing::debug!("initialize: {err} (another monitor formed the group first)");
                }
            }
            Ok(Start::AwaitAdd) => {}
            Err(refused) => {
                if let Err(err) = raft.shutdown().await {
                    tracing::warn!("raft shutdown: {err}");
                }
                drop((raft, sm));
                if !store.close(Duration::from_secs(10)).await {
                    tracing::warn!("the raft database is still in use 10 s after shutdown");
                }
                return Err(refused);
            }
        }
    } else if config.join {
        tracing::info!("--join ignored: the data directory holds Raft state, rejoining with it");
    }
    // The lease ends a heartbeat before followers may vote again: a margin for the delay
    // between openraft's metrics report and our reading of it.
    let lease_age = config
        .raft
        .election_max
        .saturating_sub(config.raft.heartbeat);
    let (lease, lease_task) = Lease::follow(&raft, lease_age);
    let admin = membership::Admin::new(config.id, raft.clone(), heard, rpc);
    let monitor = Arc::new(Monitor::new(
        config.id,
        raft.clone(),
        sm,
        lease,
        config.timings,
        config.raft.election_max * 2,
        admin,
    ));
    tracing::info!(
        "monitor {} listening on {}",
        config.id,
        listener
            .local_addr()
            .map_or("?".to_string(), |a| a.to_string())
    );
    let ticker = {
        let monitor = monitor.clone();
        let interval = config.timings.ping_interval;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                monitor.tick().await;
            }
        })
    };
    let secret = config.secret.clone();
    serve(
        listener,
        monitor.clone(),
        shutdown,
        ServeLimits::default(),
        secret,
        tls,
    )
    .await;
    ticker.abort();
    let _ = ticker.await;
    if let Err(err) = raft.shutdown().await {
        tracing::warn!("raft shutdown: {err}");
    }
    drop((monitor, raft));
    let _ = lease_task.await;
    if !store.close(Duration::from_secs(10)).await {
        tracing::warn!("the raft database is still in use 10 s after shutdown");
    }
    Ok(())
}
