//! The fault campaign against real processes: the built `viewkv` binary as three monitors and
//! four kv servers, five recording clients, and a nemesis that uses `kill -9`, `SIGSTOP` /
//! `SIGCONT` pauses longer than `dead_pings` intervals, and — when run as root — real network
//! partitions: every process in its own network namespace behind a veth pair, cut off by taking
//! its link down. Same checkers as the in-process campaign, and one more: a fault of a monitor
//! alone (half of them hit monitor 1, the one every server asks first) must not replace the
//! primary or a ready backup.
//!
//! `VIEWKV_PROCESS_CAMPAIGN_SECS` sets how long faults are injected (default 20).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use viewkv::check::Verdict;
use viewkv::client::ClientOptions;
use viewkv::monitor::MonitorClient;
use viewkv::net::RpcClient;
use viewkv::testkit::workload::{client_loop, final_reads, judge, Recorder};
use viewkv::testkit::{self};
use viewkv::view::View;
use viewkv::Client;

const EXE: &str = env!("CARGO_BIN_EXE_viewkv");

/// Run a command, quietly; whether it succeeded.
fn sh(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Network namespaces, one per node, joined by a bridge in the root namespace. Removed on drop.
struct Netns {
    /// Tag making names unique to this test run.
    tag: u32,
    /// How many nodes.
    nodes: usize,
}

impl Netns {
    /// Set up namespaces for `nodes` nodes, or `None` (with the reason) if this process cannot.
    fn setup(nodes: usize) -> Result<Netns, String> {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| e.to_string())?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not running as root".into());
        }
        if !sh("ip", &["-V"]) {
            return Err("the `ip` command (iproute2) is missing".into());
        }
        let tag = std::process::id() % 1000;
        let netns = Netns { tag, nodes };
        let bridge = netns.bridge();
        let subnet = netns.subnet();
        let ok = sh("ip", &["link", "add", &bridge, "type", "bridge"])
            && sh(
                "ip",
                &["addr", "add", &format!("{subnet}.254/24"), "dev", &bridge],
            )
            && sh("ip", &["link", "set", &bridge, "up"]);
        if !ok {
            return Err(format!("cannot create bridge {bridge}"));
        }
        for i in 0..nodes {
            let (ns, outer, inner) = (netns.ns(i), netns.outer(i), format!("vk{tag}n{i}"));
            let addr = format!("{}/24", netns.ip(i));
            let ok = sh("ip", &["netns", "add", &ns])
                && sh(
                    "ip",
                    &[
                        "link", "add", &outer, "type", "veth", "peer", "name", &inner,
                    ],
                )
                && sh("ip", &["link", "set", &inner, "netns", &ns])
                && sh("ip", &["link", "set", &outer, "master", &bridge])
                && sh("ip", &["link", "set", &outer, "up"])
                && sh(
                    "ip",
                    &[
                        "netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", &inner,
                    ],
                )
                && sh(
                    "ip",
                    &["netns", "exec", &ns, "ip", "link", "set", &inner, "up"],
                )
                && sh(
                    "ip",
                    &["netns", "exec", &ns, "ip", "link", "set", "lo", "up"],
                );
            if !ok {
                return Err(format!("cannot set up network namespace {ns}"));
            }
        }
        Ok(netns)
    }

    fn subnet(&self) -> String {
        format!("10.77.{}", self.tag % 250)
    }
    fn bridge(&self) -> String {
        format!("vkbr{}", self.tag)
    }
    fn ns(&self, i: usize) -> String {
        format!("viewkv-{}-{i}", self.tag)
    }
    fn outer(&self, i: usize) -> String {
        format!("vk{}o{i}", self.tag)
    }
    fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet(), i + 1)
    }

    /// Cut node `i` off the network (both ways), or put it back.
    fn link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        sh("ip", &["link", "set", &self.outer(i), state]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for i in 0..self.nodes {
            sh("ip", &["netns", "del", &self.ns(i)]);
            sh("ip", &["link", "del", &self.outer(i)]);
        }
        sh("ip", &["link", "del", &self.bridge()]);
    }
}

/// One node: how to (re)start it and its process.
struct Node {
    /// `monitor 2` or `server 10.77.3.5:7000`.
    name: String,
    /// Its address.
    addr: String,
    /// Whether it is a monitor.
    monitor: bool,
    /// The command line (with the `ip netns exec` prefix when in a namespace).
    argv: Vec<String>,
    /// The process, while it runs.
    child: Option<Child>,
}

impl Node {
    fn start(&mut self, logs: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{}.log", self.name.replace([' ', ':'], "-"))))
            .expect("a log file");
        let child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the node starts");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            sh("kill", &[signal, &child.id().to_string()]);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.signal("-CONT");
        self.kill();
    }
}

/// A view member by id and incarnation.
type Who = Option<(String, u64)>;

/// The primary and backup of `view`.
fn roles(view: &View) -> (Who, Who) {
    let of = |m: &Option<viewkv::view::Member>| m.as_ref().map(|m| (m.id.clone(), m.incarnation));
    (of(&view.primary), of(&view.backup))
}

fn settled(view: &View) -> bool {
    view.primary.is_some() && view.acked && view.backup.is_some() && view.backup_ready
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_campaign() {
    testkit::init_tracing();
    let seed = testkit::seed();
    let secs: u64 = std::env::var("VIEWKV_PROCESS_CAMPAIGN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let (monitors, servers) = (3, 4);
    let netns = match Netns::setup(monitors + servers) {
        Ok(netns) => Some(netns),
        Err(why) => {
            println!("real network partitions skipped ({why}); kill -9 and SIGSTOP only");
            None
        }
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let free = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("an address").port()
    };
    let addr_of = |i: usize| match &netns {
        Some(n) => format!("{}:7000", n.ip(i)),
        None => format!("127.0.0.1:{}", free()),
    };
    let addrs: Vec<String> = (0..monitors + servers).map(addr_of).collect();
    let peers = (0..monitors)
        .map(|i| format!("{}={}", i + 1, addrs[i]))
        .collect::<Vec<_>>()
        .join(",");
    let monitor_list = addrs[..monitors].join(",");
    let mut nodes: Vec<Node> = (0..monitors + servers)
        .map(|i| {
            let mut argv: Vec<String> = match &netns {
                Some(n) => vec![
                    "ip".into(),
                    "netns".into(),
                    "exec".into(),
                    n.ns(i),
                    EXE.into(),
                ],
                None => vec![EXE.into()],
            };
            let monitor = i < monitors;
            if monitor {
                let data = dir.path().join(format!("monitor-{}", i + 1));
                argv.extend(["monitor".into(), "--id".into(), (i + 1).to_string()]);
                argv.extend(["--peers".into(), peers.clone(), "--data-dir".into()]);
                argv.push(data.display().to_string());
            } else {
                argv.extend(["server".into(), "--listen".into(), addrs[i].clone()]);
                argv.extend(["--monitors".into(), monitor_list.clone()]);
            }
            let name = if monitor {
                format!("monitor {}", i + 1)
            } else {
                format!("server {}", addrs[i])
            };
            Node {
                name,
                addr: addrs[i].clone(),
                monitor,
                argv,
                child: None,
            }
        })
        .collect();
    for node in &mut nodes {
        node.start(dir.path());
    }
    let monitor_addrs: Vec<String> = addrs[..monitors].to_vec();
    let observer = MonitorClient::new(
        RpcClient::new("observer", None),
        monitor_addrs.clone(),
        Duration::from_millis(500),
    );
    let view_now = || async {
        loop {
            if let Ok(reply) = observer.view().await {
                return reply.view;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let wait_settled = |deadline: Duration| async move {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if settled(&view_now().await) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    };
    assert!(
        wait_settled(Duration::from_secs(60)).await,
        "the cluster never settled"
    );

    let recorder = Arc::new(Recorder::new());
    let stop = Arc::new(AtomicBool::new(false));
    let options = ClientOptions {
        deadline: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    let clients: Vec<_> = (1..=5u64)
        .map(|who| {
            let client = Client::with_options(monitor_addrs.clone(), options);
            tokio::spawn(client_loop(
                recorder.clone(),
                client,
                who,
                seed.wrapping_add(who),
                stop.clone(),
            ))
        })
        .collect();

    let mut rng = StdRng::seed_from_u64(seed);
    let dead_after = Duration::from_millis(500);
    let until = Instant::now() + Duration::from_secs(secs);
    let mut faults = Vec::new();
    let mut unsettled = 0;
    let mut needless = Vec::new();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1000))).await;
        let view = view_now().await;
        let member = |i: usize| view.has_member(&nodes[i].addr);
        let target = match rng.gen_range(0..4) {
            0 => view
                .primary
                .as_ref()
                .and_then(|p| nodes.iter().position(|n| n.addr == p.addr)),
            1 => view
                .backup
                .as_ref()
                .and_then(|b| nodes.iter().position(|n| n.addr == b.addr)),
            2 => (monitors..monitors + servers).find(|i| !member(*i)),
            // Monitor 1 is the one every server and client lists first: hit it half the time.
            _ if rng.gen_bool(0.5) => Some(0),
            _ => Some(rng.gen_range(0..monitors)),
        };
        let Some(i) = target else { continue };
        // A kv server in the view may be hit only when the view does not depend on it alone.
        if !nodes[i].monitor && member(i) && !settled(&view) {
            continue;
        }
        let hold = Duration::from_millis(rng.gen_range(500..2000));
        let kind = rng.gen_range(0..if netns.is_some() { 3 } else { 2 });
        let what = ["kill -9", "SIGSTOP", "network cut"][kind];
        faults.push(format!(
            "{what} {} for {hold:?} (view {})",
            nodes[i].name,
            view.summary()
        ));
        match kind {
            0 => {
                nodes[i].kill();
                tokio::time::sleep(hold).await;
                nodes[i].start(dir.path());
            }
            1 => {
                nodes[i].signal("-STOP");
                tokio::time::sleep(hold.max(dead_after * 2)).await;
                nodes[i].signal("-CONT");
            }
            _ => {
                if let Some(netns) = &netns {
                    netns.link(i, false);
                    tokio::time::sleep(hold).await;
                    netns.link(i, true);
                }
            }
        }
        if !wait_settled(Duration::from_secs(30)).await {
            unsettled += 1;
        }
        // Every kv server was alive and reachable throughout a monitor's fault: a hung or cut
        // monitor must not make the group replace the primary or a ready backup.
        let after = view_now().await;
        if nodes[i].monitor && settled(&view) && roles(&after) != roles(&view) {
            needless.push(format!(
                "{what} {}: view {} became {}",
                nodes[i].name,
                view.summary(),
                after.summary()
            ));
        }
    }

    let healed = Instant::now();
    let mut probe = Client::with_options(
        monitor_addrs.clone(),
        ClientOptions {
            deadline: Duration::from_secs(60),
            ..options
        },
    );
    probe
        .put(b"probe", b"after the faults")
        .await
        .expect("the cluster serves again after the faults");
    let recovery = healed.elapsed();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    let mut reader = Client::with_options(monitor_addrs.clone(), options);
    final_reads(&recorder, &mut reader).await;
    let ops = recorder.operations();
    let (report, appends) = judge(&ops, Duration::from_secs(60));
    println!(
        "process campaign, seed {seed}: {} ops ({} unknown), {} faults, {unsettled} unsettled, recovery {recovery:?}, linearizability {:?}",
        ops.len(),
        ops.iter().filter(|op| op.complete().is_none()).count(),
        faults.len(),
        report.verdict()
    );
    for fault in &faults {
        println!("  {fault}");
    }
    assert!(ops.len() > 100, "the workload barely ran");
    assert!(
        recorder.refused().is_empty(),
        "refusals: {:?}",
        recorder.refused()
    );
    assert_ne!(report.verdict(), Verdict::NotLinearizable, "{report}");
    assert!(
        needless.is_empty(),
        "monitor faults replaced live servers: {needless:#?}"
    );
    for append in &appends {
        assert!(append.is_ok(), "{append}");
    }
    drop(nodes);
    drop(netns);
}
