//! A cluster of in-process nodes sharing one fault table.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::wait_for;
use crate::client::{Client, ClientOptions};
use crate::kv::{self, Limits, ServerConfig};
use crate::monitor::membership::MembersClient;
use crate::monitor::{self, MonitorClient, MonitorConfig, MonitorError, RaftTimings};
use crate::net::{Faults, RpcClient, Secret, Tls};
use crate::view::{Timings, View};

/// The `i`th key [`Cluster::load_keys`] stores.
pub fn load_key(i: usize) -> String {
    format!("key-{i:011}")
}

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
    /// Size limits and session expiry of the kv servers.
    pub limits: Limits,
    /// Copies a write needs before it is acknowledged (the product's default, 2).
    pub min_copies: u32,
    /// Whether primaries answer reads under a read lease (the product's default, true).
    pub read_lease: bool,
    /// Most bytes per state-transfer chunk (small ones make a transfer take many messages).
    pub transfer_chunk_bytes: usize,
    /// The cluster secret every node requires and every harness client proves, if any.
    pub secret: Option<Secret>,
    /// TLS for every node's listener and every harness client's calls, if any (all nodes and
    /// clients share one certificate: the harness tests the transport, not identities).
    pub tls: Option<Tls>,
    /// Monitors [`Cluster::start`] leaves unstarted (their first start comes later, through
    /// [`Cluster::start_monitor`]): a monitor that joins the group's formation late.
    pub late_monitors: Vec<u64>,
}

impl ClusterOptions {
    /// These options with every node and harness client over mutual TLS, with certificates of
    /// a throwaway CA.
    pub fn over_tls(mut self) -> ClusterOptions {
        self.tls = Some(super::TestCa::new("testkit").tls("node"));
        self
    }

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
                election_min: Duration::from_millis(200),
                election_max: Duration::from_millis(400),
                snapshot_every: 1000,
                keep_after_snapshot: 100,
            },
            seed,
            limits: Limits::default(),
            min_copies: 2,
            read_lease: true,
            transfer_chunk_bytes: kv::MAX_CHUNK_BYTES,
            secret: None,
            tls: None,
            late_monitors: Vec::new(),
        }
    }
}

/// A node that is up.
struct Running<T> {
    /// Fired to stop the node.
    stop: oneshot::Sender<()>,
    /// The node's main task; its result says how it ended.
    task: JoinHandle<T>,
}

impl<T> Running<T> {
    /// Stop the node and wait until its tasks have ended and its port is closed.
    async fn stop(self, name: &str) -> T {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(result) => result,
            Err(err) => panic!("{name} panicked: {err}"),
        }
    }
}

/// One monitor slot: survives crashes, so the node restarts with the same address and data.
struct MonitorSlot {
    /// The advertised (and listen) address.
    addr: String,
    /// The node's data directory.
    dir: PathBuf,
    /// Present while the node is up.
    running: Option<Running<Result<(), MonitorError>>>,
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
    /// Kv server address → the running server (`None` while crashed).
    servers: BTreeMap<String, Option<Running<()>>>,
    /// Clients made so far, to give each a distinct name in the fault table.
    clients: u64,
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
        let observer = RpcClient::new("testkit", None)
            .with_secret(options.secret.clone())
            .with_tls(options.tls.as_ref());
        let mut cluster = Cluster {
            faults: Arc::new(Faults::new(options.seed)),
            options,
            _root: root,
            monitors,
            servers: BTreeMap::new(),
            clients: 0,
            observer,
        };
        for (id, listener) in listeners {
            if !cluster.options.late_monitors.contains(&id) {
                cluster.launch_monitor(id, listener, false);
            }
        }
        cluster.wait_leader(Duration::from_secs(20)).await;
        cluster
    }

    /// The shared fault table.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// The options the cluster was built with.
    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// Every monitor's id.
    pub fn monitor_ids(&self) -> Vec<u64> {
        self.monitors.keys().copied().collect()
    }

    /// Every node's name in the fault table: monitors, then kv servers.
    pub fn node_names(&self) -> Vec<String> {
        self.monitor_addrs()
            .into_iter()
            .chain(self.server_addrs())
            .collect()
    }

    /// Cut `node` from every other node and every client, both ways (a frozen process).
    pub fn isolate(&self, node: &str) {
        let others: Vec<String> = self
            .node_names()
            .into_iter()
            .chain((1..=self.clients).map(|i| format!("client-{i}")))
            .filter(|n| n != node)
            .collect();
        self.faults.partition(&[node.to_string()], &others);
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

    fn launch_monitor(&mut self, id: u64, listener: TcpListener, join: bool) {
        let peers: BTreeMap<u64, String> = self
            .monitors
            .iter()
            .map(|(id, slot)| (*id, slot.addr.clone()))
            .collect();
        let rpc = self.rpc_client(&self.monitor_addr(id));
        let Some(slot) = self.monitors.get_mut(&id) else {
            panic!("no monitor {id}");
        };
        let config = MonitorConfig {
            id,
            peers,
            data_dir: slot.dir.clone(),
            timings: self.options.timings,
            raft: self.options.raft.clone(),
            secret: self.options.secret.clone(),
            tls: self.options.tls.clone(),
            join,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let ran = monitor::run(config, listener, rpc, async {
                let _ = stopped.await;
            })
            .await;
            if let Err(err) = &ran {
                tracing::warn!("testkit: monitor {id} stopped: {err}");
            }
            ran
        });
        slot.running = Some(Running { stop, task });
    }

    /// Crash monitor `id`: its tasks stop and its port closes. Its data directory stays.
    pub async fn crash_monitor(&mut self, id: u64) {
        let Some(running) = self.monitors.get_mut(&id).and_then(|s| s.running.take()) else {
            panic!("monitor {id} is not running");
        };
        tracing::info!("testkit: crash monitor {id}");
        if let Err(err) = running.stop(&format!("monitor {id}")).await {
            panic!("monitor {id} failed: {err}");
        }
    }

    /// Restart a crashed monitor from its data directory, on the same address.
    pub async fn restart_monitor(&mut self, id: u64) {
        self.start_monitor(id, false).await;
    }

    /// Start a crashed monitor on the same address, with `--join` if `join`.
    pub async fn start_monitor(&mut self, id: u64, join: bool) {
        tracing::info!("testkit: start monitor {id} (join: {join})");
        let addr = self.monitor_addr(id);
        let listener = bind(&addr).await;
        self.launch_monitor(id, listener, join);
    }

    /// Empty the data directory of crashed monitor `id`: a replaced disk.
    pub fn wipe_monitor(&mut self, id: u64) {
        if self.monitor_running(id) {
            panic!("wipe_monitor({id}): crash it first");
        }
        let Some(slot) = self.monitors.get(&id) else {
            panic!("no monitor {id}");
        };
        if let Err(err) = std::fs::remove_dir_all(&slot.dir) {
            panic!("cannot wipe {}: {err}", slot.dir.display());
        }
    }

    /// Start crashed monitor `id` (with `--join` if `join`), expecting it to refuse to start:
    /// its error. Panics if it is still running after `deadline`, or stops without an error.
    pub async fn start_monitor_refused(
        &mut self,
        id: u64,
        join: bool,
        deadline: Duration,
    ) -> MonitorError {
        self.start_monitor(id, join).await;
        let what = format!("monitor {id} to refuse to start");
        wait_for(&what, deadline, || async {
            let slot = self.monitors.get(&id)?;
            slot.running.as_ref()?.task.is_finished().then_some(())
        })
        .await;
        let Some(running) = self.monitors.get_mut(&id).and_then(|s| s.running.take()) else {
            panic!("monitor {id} is not running");
        };
        match running.stop(&format!("monitor {id}")).await {
            Ok(()) => panic!("monitor {id} stopped without an error"),
            Err(err) => err,
        }
    }

    /// A membership client (`viewkv monitors ...`) reaching every monitor out of band.
    pub fn members_client(&self) -> MembersClient {
        MembersClient::new(
            self.observer.clone(),
            self.monitor_addrs(),
            Duration::from_secs(2),
        )
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

    /// Make monitor `id` hang, as a stopped process or a link that drops packets does: every
    /// message between it and any node or client known so far waits for an hour instead of
    /// failing at once (which is what a cut does), so callers see only their own timeouts.
    pub fn hang_monitor(&self, id: u64) {
        self.delay_monitor(id, Duration::from_secs(3600));
    }

    /// End [`Cluster::hang_monitor`]; messages that were waiting stay lost.
    pub fn unhang_monitor(&self, id: u64) {
        self.delay_monitor(id, Duration::ZERO);
    }

    fn delay_monitor(&self, id: u64, delay: Duration) {
        let me = self.monitor_addr(id);
        let others = self
            .node_names()
            .into_iter()
            .chain((1..=self.clients).map(|i| format!("client-{i}")))
            .filter(|n| *n != me);
        for other in others {
            self.faults.set_link_delay(&me, &other, delay);
            self.faults.set_link_delay(&other, &me, delay);
        }
    }

    /// Restore every cut link.
    pub fn heal(&self) {
        self.faults.heal();
    }

    /// A monitor client for a node named `name`, subject to the cluster's faults.
    pub fn monitor_client(&self, name: &str) -> MonitorClient {
        MonitorClient::new(
            self.rpc_client(name),
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

    /// Start a new kv server on a fresh port; returns its address (also its id and its name in
    /// the fault table).
    pub async fn start_server(&mut self) -> String {
        self.start_server_with(|_| {}).await
    }

    /// Start a new kv server whose configuration `adjust` changes (servers configured
    /// differently from the rest).
    pub async fn start_server_with(&mut self, adjust: impl FnOnce(&mut ServerConfig)) -> String {
        let listener = bind("127.0.0.1:0").await;
        let addr = match listener.local_addr() {
            Ok(addr) => addr.to_string(),
            Err(err) => panic!("listener without address: {err}"),
        };
        let mut config = self.server_config(&addr);
        adjust(&mut config);
        self.launch_server(config, listener);
        addr
    }

    fn server_config(&self, addr: &str) -> ServerConfig {
        let mut config = ServerConfig::new(addr, self.monitor_addrs());
        config.timings = self.options.timings;
        config.limits = self.options.limits;
        config.min_copies = self.options.min_copies;
        config.read_lease = self.options.read_lease;
        config.transfer_chunk_bytes = self.options.transfer_chunk_bytes;
        config.rpc_timeout = Duration::from_millis(500);
        config.confirm_timeout = Duration::from_secs(1);
        config.secret = self.options.secret.clone();
        config.tls = self.options.tls.clone();
        config
    }

    fn launch_server(&mut self, config: ServerConfig, listener: TcpListener) {
        let addr = config.addr.clone();
        if let Err(err) = config.validate() {
            panic!("kv server {addr}: {err}");
        }
        let rpc = self.rpc_client(&addr);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(kv::run(config, listener, rpc, async {
            let _ = stopped.await;
        }));
        self.servers
            .insert(addr.to_string(), Some(Running { stop, task }));
    }

    /// Crash the kv server at `addr`: its tasks stop, its port closes, its memory is gone.
    pub async fn crash_server(&mut self, addr: &str) {
        let Some(running) = self.servers.get_mut(addr).and_then(Option::take) else {
            panic!("kv server {addr} is not running");
        };
        tracing::info!("testkit: crash kv server {addr}");
        running.stop(&format!("kv server {addr}")).await;
    }

    /// Restart a crashed kv server on the same address: a new incarnation, idle and empty.
    pub async fn restart_server(&mut self, addr: &str) {
        tracing::info!("testkit: restart kv server {addr}");
        let listener = bind(addr).await;
        let config = self.server_config(addr);
        self.launch_server(config, listener);
    }

    /// Every kv server's address, running or not.
    pub fn server_addrs(&self) -> Vec<String> {
        self.servers.keys().cloned().collect()
    }

    /// Whether the kv server at `addr` is up.
    pub fn server_running(&self, addr: &str) -> bool {
        self.servers.get(addr).is_some_and(Option::is_some)
    }

    /// A kv server's status document, read out of band; `None` if it does not answer.
    pub async fn server_status(&self, addr: &str) -> Option<serde_json::Value> {
        let body = self
            .observer
            .call_raw(addr, kv::api::STATUS, Vec::new(), Duration::from_secs(2))
            .await
            .ok()?;
        serde_json::from_slice(&body).ok()
    }

    /// Options for test clients: retry at the ping interval, give up after 30 s.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            deadline: Duration::from_secs(30),
            retry_interval: self.options.timings.ping_interval,
            rpc_timeout: Duration::from_secs(2),
        }
    }

    /// A new client (a new session), subject to the cluster's faults.
    pub fn client(&mut self) -> Client {
        self.client_with(self.client_options())
    }

    /// A new client with the given options.
    pub fn client_with(&mut self, options: ClientOptions) -> Client {
        self.clients += 1;
        let rpc = self.rpc_client(&format!("client-{}", self.clients));
        Client::with_rpc(rpc, self.monitor_addrs(), options)
    }

    /// An RPC client for the node or client called `name`: subject to the cluster's faults,
    /// proving its secret, over its TLS (for tests that send raw requests).
    pub fn rpc_client(&self, name: &str) -> RpcClient {
        RpcClient::new(name, Some(self.faults.clone()))
            .with_secret(self.options.secret.clone())
            .with_tls(self.options.tls.as_ref())
    }

    /// Whether the first monitor refuses a plain-HTTP request (it listens over TLS).
    pub async fn refuses_plain_http(&self) -> bool {
        let plain = RpcClient::new("plain-http", None);
        let addr = self.monitor_addr(self.monitor_ids()[0]);
        plain
            .call_raw(&addr, "/status", Vec::new(), Duration::from_secs(5))
            .await
            .is_err()
    }

    /// Make the kv servers unreliable as in 6.824: 10% of requests to them are dropped and 20%
    /// of the remaining replies are lost. `false` makes them reliable again.
    pub fn set_unreliable(&self, unreliable: bool) {
        let (request, reply) = if unreliable { (0.1, 0.2) } else { (0.0, 0.0) };
        for addr in self.servers.keys() {
            self.faults.set_loss_to(addr, request, reply);
        }
    }

    /// The current view, from the serving monitor leader.
    pub async fn view(&self) -> View {
        let client = MonitorClient::new(
            self.observer.clone(),
            self.monitor_addrs(),
            Duration::from_secs(1),
        );
        wait_for("the view", Duration::from_secs(30), || async {
            client.view().await.ok().map(|reply| reply.view)
        })
        .await
    }

    /// The view, once it satisfies `ok`. Panics after `deadline`.
    pub async fn wait_view(
        &self,
        what: &str,
        deadline: Duration,
        ok: impl Fn(&View) -> bool,
    ) -> View {
        wait_for(what, deadline, || async {
            let view = self.view().await;
            ok(&view).then_some(view)
        })
        .await
    }

    /// Wait until the view has an acknowledged primary and a ready backup; return it.
    pub async fn wait_ready(&self, deadline: Duration) -> View {
        self.wait_view("a primary and a ready backup", deadline, |v| {
            v.acked && v.backup.is_some() && v.backup_ready
        })
        .await
    }

    /// Store `keys` keys (`key-00000000000`, ...) of `value_size` bytes with 16 concurrent
    /// clients: a store large enough that its transfer is not trivial.
    pub async fn load_keys(&mut self, keys: usize, value_size: usize) {
        const WRITERS: usize = 16;
        let mut tasks = Vec::new();
        for first in 0..WRITERS {
            let mut client = self.client();
            tasks.push(tokio::spawn(async move {
                let value = vec![b'v'; value_size];
                for i in (first..keys).step_by(WRITERS) {
                    let key = load_key(i);
                    if let Err(err) = client.put(key.as_bytes(), &value).await {
                        panic!("loading {key}: {err}");
                    }
                }
            }));
        }
        for task in tasks {
            if let Err(err) = task.await {
                panic!("a loading task failed: {err}");
            }
        }
    }

    /// Stop every node.
    pub async fn shutdown(mut self) {
        let addrs = self.server_addrs();
        for addr in addrs {
            if self.server_running(&addr) {
                self.crash_server(&addr).await;
            }
        }
        let ids: Vec<u64> = self.monitors.keys().copied().collect();
        for id in ids {
            if self.monitor_running(id) {
                self.crash_monitor(id).await;
            }
        }
    }
}
