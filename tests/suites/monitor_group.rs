//! The monitor group end to end: real monitors on loopback HTTP, scripted kv-server pingers,
//! crashes, restarts and partitions through the test harness.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::common::test1::{self, Scripted};
use viewkv::monitor::api::PingReply;
use viewkv::monitor::MonitorClient;
use viewkv::testkit::{self, wait_for, Cluster, ClusterOptions};
use viewkv::view::{Ping, View};

/// Fast cluster options, over TLS when the suite runs so.
fn options() -> ClusterOptions {
    let options = ClusterOptions::fast(testkit::seed());
    if super::OVER_TLS {
        options.over_tls()
    } else {
        options
    }
}

/// Generous: a noisy 2-core machine can stall a process for seconds.
const DEADLINE: Duration = Duration::from_secs(30);

/// The scenario's view of a real monitor group: pings go to the leader through a client that
/// follows `NotLeader` hints; "the current view" is the leader's.
struct Remote {
    client: MonitorClient,
    interval: Duration,
}

impl test1::Service for Remote {
    async fn ping(&mut self, ping: Ping) -> View {
        wait_for("a ping answered", DEADLINE, || async {
            self.client
                .ping(&ping)
                .await
                .ok()
                .and_then(PingReply::into_view)
        })
        .await
    }
    async fn get(&mut self) -> View {
        wait_for("the view", DEADLINE, || async {
            self.client.view().await.ok().map(|r| r.view)
        })
        .await
    }
    async fn interval(&mut self) {
        tokio::time::sleep(self.interval).await;
    }
    fn rounds(&self, _rounds: u32) -> u32 {
        (DEADLINE.as_millis() / self.interval.as_millis()) as u32
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mit_6824_viewservice_test1_over_a_monitor_group() {
    testkit::init_tracing();
    let options = options();
    let cluster = Cluster::start(options.clone()).await;
    assert_eq!(
        cluster.refuses_plain_http().await,
        super::OVER_TLS,
        "the suite runs over TLS exactly when it says so"
    );
    let mut remote = Remote {
        client: cluster.monitor_client("scripted"),
        interval: options.timings.ping_interval,
    };
    test1::run(&mut remote).await;
    cluster.shutdown().await;
}

/// Kv servers pinging in the background as real ones would: every interval, with the newest
/// view number seen, a primary reporting its backup in sync.
struct Pingers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Pingers {
    fn start(cluster: &Cluster, names: &[&str], interval: Duration) -> Pingers {
        Pingers::resume(cluster, names, interval, 0)
    }

    /// Pingers that have already seen view `seen` (a fresh one pinging 0 looks restarted).
    fn resume(cluster: &Cluster, names: &[&str], interval: Duration, seen: u64) -> Pingers {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = names
            .iter()
            .map(|name| {
                let client = cluster.monitor_client(name);
                let me = Scripted::new(name, incarnation(name));
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut seen = seen;
                    while !stop.load(Ordering::Relaxed) {
                        let reply = client.ping(&me.ping(seen)).await;
                        if let Some(view) = reply.ok().and_then(PingReply::into_view) {
                            seen = view.num;
                        }
                        tokio::time::sleep(interval).await;
                    }
                })
            })
            .collect();
        Pingers { stop, tasks }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// A pinger's incarnation: stable per name, so a resumed pinger is the same process.
fn incarnation(name: &str) -> u64 {
    name.bytes().map(u64::from).sum::<u64>() + 100
}

/// The leader's view, once it satisfies `ok`.
async fn view_where(client: &MonitorClient, what: &str, ok: impl Fn(&View) -> bool) -> View {
    wait_for(what, DEADLINE, || async {
        let reply = client.view().await.ok()?;
        ok(&reply.view).then_some(reply.view)
    })
    .await
}

fn settled(view: &View) -> bool {
    view.primary.is_some() && view.backup.is_some() && view.acked && view.backup_ready
}

/// Monitor `id`'s applied view, once it equals `want`.
async fn monitor_applied(cluster: &Cluster, id: u64, want: &View) {
    let want = want.to_json();
    wait_for(
        &format!("monitor {id} to apply {want}"),
        DEADLINE,
        || async {
            let status = cluster.monitor_status(id).await?;
            (status["view"] == want).then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_keeps_the_view_and_restarts_catch_up() {
    testkit::init_tracing();
    let options = options();
    let mut cluster = Cluster::start(options.clone()).await;
    let pingers = Pingers::start(&cluster, &["a", "b"], options.timings.ping_interval);
    let observer = cluster.monitor_client("observer");
    let before = view_where(&observer, "a settled view", settled).await;

    let leader = cluster.wait_leader(DEADLINE).await;
    cluster.crash_monitor(leader).await;
    let crashed_at = Instant::now();
    let probe = cluster.monitor_client("probe");
    let probe_ping = Scripted::new("a", incarnation("a")).ping(before.num);
    wait_for("a new leader answering pings", DEADLINE, || async {
        probe.ping(&probe_ping).await.ok()
    })
    .await;
    println!(
        "failover: a new leader answered pings {:?} after the crash",
        crashed_at.elapsed()
    );
    let after = observer.view().await.expect("the view").view;
    assert_eq!(
        after, before,
        "the view or its ack changed across the leader crash"
    );

    cluster.restart_monitor(leader).await;
    monitor_applied(&cluster, leader, &before).await;

    pingers.stop().await;
    for id in 1..=3 {
        cluster.crash_monitor(id).await;
    }
    for id in 1..=3 {
        cluster.restart_monitor(id).await;
    }
    cluster.wait_leader(DEADLINE).await;
    let restarted = observer.view().await.expect("the view").view;
    assert_eq!(
        restarted, before,
        "the view table did not survive a full restart"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_stops_answering_and_the_majority_decides() {
    testkit::init_tracing();
    let options = options();
    let cluster = Cluster::start(options.clone()).await;
    let pingers = Pingers::start(&cluster, &["a", "b"], options.timings.ping_interval);
    let observer = cluster.monitor_client("observer");
    let before = view_where(&observer, "a settled view", settled).await;
    let primary = before.primary.clone().expect("a primary");

    let leader = cluster.wait_leader(DEADLINE).await;
    cluster.isolate_monitor(leader);
    let isolated_at = Instant::now();
    // A kv server that can reach only the old leader.
    let only_old = MonitorClient::new(
        cluster.rpc_client("lonely"),
        vec![cluster.monitor_addr(leader)],
        Duration::from_millis(500),
    );
    // It pings as the primary does: no decision is needed, so only the lease can refuse it.
    let ping = Scripted::new(&primary.id, primary.incarnation).ping(before.num);
    wait_for("the isolated leader to refuse pings", DEADLINE, || async {
        only_old.ping(&ping).await.is_err().then_some(())
    })
    .await;
    println!(
        "isolated leader refused pings {:?} after isolation (lease = election_max = {:?})",
        isolated_at.elapsed(),
        options.raft.election_max
    );

    // The majority side still decides: stop the primary and watch the backup take over.
    pingers.stop().await;
    let survivor = if primary.id == "a" { "b" } else { "a" };
    let pinger = Pingers::resume(
        &cluster,
        &[survivor],
        options.timings.ping_interval,
        before.num,
    );
    let promoted = view_where(&observer, "the backup promoted", |v| {
        v.primary.as_ref().is_some_and(|p| p.id == survivor)
    })
    .await;
    assert!(promoted.num > before.num);
    let new_leader = cluster.wait_leader(DEADLINE).await;
    assert_ne!(new_leader, leader, "the isolated monitor still leads");

    let acked = view_where(&observer, "the new primary's ack", |v| v.acked).await;
    pinger.stop().await;
    cluster.heal();
    monitor_applied(&cluster, leader, &acked).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_is_purged_after_snapshots_and_restarts_recover() {
    testkit::init_tracing();
    let mut options = options();
    options.raft.snapshot_every = 10;
    options.raft.keep_after_snapshot = 0;
    let mut cluster = Cluster::start(options.clone()).await;
    let pingers = Pingers::start(&cluster, &["a", "b"], options.timings.ping_interval);
    let observer = cluster.monitor_client("observer");
    view_where(&observer, "a settled view", settled).await;

    // Monitor 3 misses what follows, so it must catch up from a snapshot.
    cluster.crash_monitor(3).await;
    // Each new idle server is a registration decision, each departure a forget decision.
    let client = cluster.monitor_client("registrar");
    for i in 0..30 {
        let ping = Scripted::new(&format!("idle-{i}"), 1000 + i).ping(0);
        wait_for("a registration", DEADLINE, || async {
            client.ping(&ping).await.ok()
        })
        .await;
    }
    for id in [1, 2] {
        wait_for(
            &format!("monitor {id} to purge its log"),
            DEADLINE,
            || async {
                let status = cluster.monitor_status(id).await?;
                (status["purged"].as_u64()? > 0).then_some(())
            },
        )
        .await;
    }
    let view = observer.view().await.expect("the view").view;
    cluster.restart_monitor(3).await;
    monitor_applied(&cluster, 3, &view).await;

    pingers.stop().await;
    let view = observer.view().await.expect("the view").view;
    for id in 1..=3 {
        cluster.crash_monitor(id).await;
    }
    for id in 1..=3 {
        cluster.restart_monitor(id).await;
    }
    cluster.wait_leader(DEADLINE).await;
    for id in 1..=3 {
        monitor_applied(&cluster, id, &view).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_and_five_monitors_work() {
    testkit::init_tracing();
    for monitors in [1, 5] {
        let mut options = options();
        options.monitors = monitors;
        let cluster = Cluster::start(options.clone()).await;
        let pingers = Pingers::start(&cluster, &["a", "b"], options.timings.ping_interval);
        let observer = cluster.monitor_client("observer");
        let view = view_where(&observer, "a settled view", settled).await;
        for id in 1..=monitors as u64 {
            monitor_applied(&cluster, id, &view).await;
        }
        pingers.stop().await;
        cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_a_4xx_and_the_monitor_keeps_running() {
    testkit::init_tracing();
    let cluster = Cluster::start(options()).await;
    let leader = cluster.wait_leader(DEADLINE).await;
    let addr = cluster.monitor_addr(leader);
    let rpc = cluster.rpc_client("fuzzer");
    let valid = viewkv::net::encode(&Scripted::new("x", 1).ping(0));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("/monitor/ping", Vec::new(), 400),
        ("/monitor/ping", valid[..valid.len() / 2].to_vec(), 400),
        ("/monitor/ping", [valid.clone(), vec![0]].concat(), 400),
        ("/monitor/ping", vec![0xff; 64], 400),
        ("/raft/append", vec![1, 2, 3], 400),
        ("/raft/vote", Vec::new(), 400),
        ("/raft/snapshot", vec![0xff; 10], 400),
        ("/no/such/path", Vec::new(), 404),
    ];
    for (path, body, want) in cases {
        match rpc
            .call_raw(&addr, path, body, Duration::from_secs(5))
            .await
        {
            Err(viewkv::net::RpcError::Status {
                status, message, ..
            }) => {
                assert_eq!(status, want, "{path}: {message}");
                assert!(!message.is_empty(), "{path}: an error without explanation");
            }
            other => panic!("{path}: expected HTTP {want}, got {other:?}"),
        }
    }
    let status = cluster
        .monitor_status(leader)
        .await
        .expect("the monitor still answers");
    assert_eq!(status["id"], leader);
    // Pings still work: y becomes the first primary (once the new group's `dead_after` passed).
    let after = cluster.monitor_client("after");
    let view = wait_for("view 1", DEADLINE, || async {
        let reply = after.ping(&Scripted::new("y", 2).ping(0)).await;
        reply.ok()?.into_view().filter(|v| v.num > 0)
    })
    .await;
    assert_eq!(view.num, 1);
    cluster.shutdown().await;
}
