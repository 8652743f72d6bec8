//! A cluster of in-process nodes sharing one fault table.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::wait_for;
use crate::monitor::{self, MonitorClient, MonitorConfig, MonitorError, RaftTimings};
use crate::net::{Faults, RpcClient};
use crate::view::Timings;

/// How to build a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of monitor nodes (1, 3 or 5).
    pub monitors: usize,
    /// Ping interval and dead pings for the monitors.
    pub timings: Timings,
    /// Raft timings for the monitors.
    pub raft: RaftTimings,
    /// Seed of the fault table's random choices.
    pub seed: u64,
}

impl ClusterOptions {
    /// Short timings for tests on a small, noisy machine: fast enough that failures are seen in
    /// well under a second, slow enough that a busy CPU does not make healthy nodes look dead.
    pub fn fast(seed: u64) -> ClusterOptions {
        ClusterOptions {
            monitors: 3,
            timings: Timings {
                ping_interval: Duration::from_millis(50),
                dead_pings: 5,
            },
            raft: RaftTimings {
                heartbeat: Duration::from_millis(50),
                election_min: Duration::from_millis(250),
                election_max: Duration::from_millis(500),
                snapshot_every: 1000,
                keep_after_snapshot: 100,
            },
            seed,
        }
    }
}

/// A node that is up.
struct Running {
    /// Fired to stop the node.
    stop: oneshot::Sender<()>,
    /// The node's main task; its result says how it ended.
    task: JoinHandle<Result<(), MonitorError>>,
}

/// One monitor slot: survives crashes, so the node restarts with the same address and data.
struct MonitorSlot {
    /// The advertised (and listen) address.
    addr: String,
    /// The node's data directory.
    dir: PathBuf,
    /// Present while the node is up.
    running: Option<Running>,
}

/// In-process nodes on loopback, all subject to one [`Faults`] table.
pub struct Cluster {
    /// Build options.
    options: ClusterOptions,
    /// Cuts, losses and delays applied to every node's outbound RPCs.
    faults: Arc<Faults>,
    /// Holds every node's data; deleted when the cluster is dropped.
    _root: tempfile::TempDir,
    /// Monitor id → slot.
    monitors: BTreeMap<u64, MonitorSlot>,
    /// Talks to nodes out of band (not subject to faults) for status checks.
    observer: RpcClient,
}

async fn bind(addr: &str) -> TcpListener {
    // A just-closed port can linger for a moment; keep trying for a while.
    wait_for(
        &format!("binding {addr}"),
        Duration::from_secs(10),
        || async { TcpListener::bind(addr).await.ok() },
    )
    .await
}

impl Cluster {
    /// Start a cluster with `options.monitors` monitors and wait until a leader serves.
    pub async fn start(options: ClusterOptions) -> Cluster {
        let root = match tempfile::tempdir() {
            Ok(root) => root,
            Err(err) => panic!("cannot create a temporary directory: {err}"),
        };
        let mut listeners = BTreeMap::new();
        let mut monitors = BTreeMap::new();
        for id in 1..=options.monitors as u64 {
            let listener = bind("127.0.0.1:0").await;
            let addr = match listener.local_addr() {
                Ok(addr) => addr.to_string(),
                Err(err) => panic!("listener without address: {err}"),
            };
            let dir = root.path().join(format!("monitor-{id}"));
            monitors.insert(
                id,
                MonitorSlot {
                    addr,
                    dir,
                    running: None,
                },
            );
            listeners.insert(id, listener);
        }
        let mut cluster = Cluster {
            faults: Arc::new(Faults::new(options.seed)),
            options,
            _root: root,
            monitors,
            observer: RpcClient::new("testkit", None),
        };
        for (id, listener) in listeners {
            cluster.launch_monitor(id, listener);
        }
        cluster.wait_leader(Duration::from_secs(20)).await;
        cluster
    }

    /// The shared fault table.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// Every monitor's address, by id order.
    pub fn monitor_addrs(&self) -> Vec<String> {
        self.monitors.values().map(|m| m.addr.clone()).collect()
    }

    /// Monitor `id`'s address (its name in the fault table).
    pub fn monitor_addr(&self, id: u64) -> String {
        match self.monitors.get(&id) {
            Some(slot) => slot.addr.clone(),
            None => panic!("no monitor {id}"),
        }
    }

    fn launch_monitor(&mut self, id: u64, listener: TcpListener) {
        let peers: BTreeMap<u64, String> = self
            .monitors
            .iter()
            .map(|(id, slot)| (*id, slot.addr.clone()))
            .collect();
        let Some(slot) = self.monitors.get_mut(&id) else {
            panic!("no monitor {id}");
        };
        let config = MonitorConfig {
            id,
            peers,
            data_dir: slot.dir.clone(),
            timings: self.options.timings,
            raft: self.options.raft.clone(),
        };
        let rpc = RpcClient::new(&slot.addr, Some(self.faults.clone()));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(monitor::run(config, listener, rpc, async {
            let _ = stopped.await;
        }));
        slot.running = Some(Running { stop, task });
    }

    /// Crash monitor `id`: its tasks stop and its port closes. Its data directory stays.
    pub async fn crash_monitor(&mut self, id: u64) {
        let Some(running) = self.monitors.get_mut(&id).and_then(|s| s.running.take()) else {
            panic!("monitor {id} is not running");
        };
        let _ = running.stop.send(());
        match running.task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => panic!("monitor {id} failed: {err}"),
            Err(err) => panic!("monitor {id} panicked: {err}"),
        }
    }

    /// Restart a crashed monitor from its data directory, on the same address.
    pub async fn restart_monitor(&mut self, id: u64) {
        let addr = self.monitor_addr(id);
        let listener = bind(&addr).await;
        self.launch_monitor(id, listener);
    }

    /// Whether monitor `id` is up.
    pub fn monitor_running(&self, id: u64) -> bool {
        self.monitors.get(&id).is_some_and(|s| s.running.is_some())
    }

    /// Cut every link between the nodes named in `a` and those in `b`, both ways.
    pub fn partition(&self, a: &[String], b: &[String]) {
        self.faults.partition(a, b);
    }

    /// Cut the links between monitor `id` and the other monitors (kv servers and clients can
    /// still reach it).
    pub fn isolate_monitor(&self, id: u64) {
        let me = self.monitor_addr(id);
        let others: Vec<String> = self
            .monitor_addrs()
            .into_iter()
            .filter(|a| *a != me)
            .collect();
        self.faults.partition(&[me], &others);
    }

    /// Restore every cut link.
    pub fn heal(&self) {
        self.faults.heal();
    }

    /// A monitor client for a node named `name`, subject to the cluster's faults.
    pub fn monitor_client(&self, name: &str) -> MonitorClient {
        MonitorClient::new(
            RpcClient::new(name, Some(self.faults.clone())),
            self.monitor_addrs(),
            Duration::from_millis(500),
        )
    }

    /// Monitor `id`'s status document, read out of band; `None` if it does not answer.
    pub async fn monitor_status(&self, id: u64) -> Option<serde_json::Value> {
        let addr = self.monitor_addr(id);
        let body = self
            .observer
            .call_raw(
                &addr,
                monitor::api::STATUS,
                Vec::new(),
                Duration::from_secs(2),
            )
            .await
            .ok()?;
        serde_json::from_slice(&body).ok()
    }

    /// The id of a running monitor that serves as leader (holds a quorum-confirmed lease), once
    /// one does. Panics after `deadline`.
    pub async fn wait_leader(&self, deadline: Duration) -> u64 {
        wait_for("a monitor leader", deadline, || async {
            for (id, slot) in &self.monitors {
                if slot.running.is_none() {
                    continue;
                }
                let status = self.monitor_status(*id).await?;
                if status["serving"] == serde_json::Value::Bool(true) {
                    return Some(*id);
                }
            }
            None
        })
        .await
    }

    /// Stop every node.
    pub async fn shutdown(mut self) {
        let ids: Vec<u64> = self.monitors.keys().copied().collect();
        for id in ids {
            if self.monitor_running(id) {
                self.crash_monitor(id).await;
            }
        }
    }
}
