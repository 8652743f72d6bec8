//! A monitor that hangs instead of refusing — a stopped process, a link that drops packets —
//! costs its callers only their own timeout. Pings and view reads go to every monitor at once,
//! so a hung one, leader or not, delays nobody, and no live primary or ready backup is replaced
//! because their pings were stuck behind it.

use std::time::Duration;

use viewkv::monitor::MonitorClient;
use viewkv::net::RpcClient;
use viewkv::testkit::{self, wait_for, Cluster, ClusterOptions};
use viewkv::view::{Ping, View};

const DEADLINE: Duration = Duration::from_secs(30);

/// Longer than any deadline of these tests: a monitor client that asked the hung monitor and
/// waited for it could not finish in time.
const PATIENT: Duration = Duration::from_secs(120);

async fn start() -> Cluster {
    testkit::init_tracing();
    Cluster::start(ClusterOptions::fast(testkit::seed())).await
}

/// A running monitor other than `leader`.
fn follower(cluster: &Cluster, leader: u64) -> u64 {
    match cluster.monitor_ids().into_iter().find(|id| *id != leader) {
        Some(id) => id,
        None => panic!("no monitor besides {leader}"),
    }
}

/// A monitor client named `name` that asks `first` first and waits `PATIENT` for each answer.
fn patient_client(cluster: &Cluster, name: &str, first: u64) -> MonitorClient {
    let first = cluster.monitor_addr(first);
    let order = std::iter::once(first.clone())
        .chain(cluster.monitor_addrs().into_iter().filter(|a| *a != first))
        .collect();
    let rpc = RpcClient::new(name, Some(cluster.faults().clone()));
    MonitorClient::new(rpc, order, PATIENT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_monitor_listed_first_delays_no_ping_and_no_view_read() {
    let cluster = start().await;
    let leader = cluster.wait_leader(DEADLINE).await;
    let hung = follower(&cluster, leader);
    let client = patient_client(&cluster, "patient", hung);
    cluster
        .faults()
        .set_link_delay("patient", &cluster.monitor_addr(hung), PATIENT * 10);
    let ping = Ping {
        id: "s1".into(),
        addr: "127.0.0.1:1".into(),
        incarnation: 1,
        viewnum: 0,
        backup_synced: false,
        backup_failed: false,
        cluster: 0,
        holds_state: false,
    };
    // A new group makes view 1 only `dead_after` after its leader took over: ping until it
    // does, each ping answered well before the hung monitor would.
    let primary = tokio::time::timeout(DEADLINE, async {
        loop {
            let reply = client
                .ping(&ping)
                .await
                .expect("the leader answers the ping");
            if let Some(primary) = reply.into_view().and_then(|v| v.primary) {
                return primary.id;
            }
            tokio::time::sleep(cluster.options().timings.ping_interval).await;
        }
    })
    .await
    .expect("the pings waited for the hung monitor");
    assert_eq!(primary, "s1");
    let reply = tokio::time::timeout(DEADLINE, client.view())
        .await
        .expect("the view read waited for the hung monitor")
        .expect("the leader answers the view read");
    assert!(reply.serving, "the answer came from a monitor not serving");
    cluster.shutdown().await;
}

/// Primary, backup (with incarnations) and number of a view.
fn roles(view: &View) -> (Option<String>, Option<String>, u64) {
    let name = |m: &Option<viewkv::view::Member>| {
        m.as_ref().map(|m| format!("{}#{:x}", m.id, m.incarnation))
    };
    (name(&view.primary), name(&view.backup), view.num)
}

async fn hang_keeps_the_view(hang_leader: bool) {
    let mut cluster = start().await;
    for _ in 0..3 {
        cluster.start_server().await;
    }
    let before = cluster.wait_ready(DEADLINE).await;
    let mut client = cluster.client();
    client.put(b"before", b"1").await.expect("a write");
    let leader = cluster.wait_leader(DEADLINE).await;
    let hung = if hang_leader {
        leader
    } else {
        follower(&cluster, leader)
    };
    cluster.hang_monitor(hung);
    let serving = wait_for("a monitor leader that is not hung", DEADLINE, || async {
        for id in cluster.monitor_ids() {
            let status = cluster.monitor_status(id).await?;
            if id != hung && status["serving"] == serde_json::Value::Bool(true) {
                return Some(id);
            }
        }
        None
    })
    .await;
    // The serving leader has had many chances to declare a silent server dead: 40 ping
    // intervals, 8 times the grace it gives. Writes need both servers all along.
    let interval = cluster.options().timings.ping_interval;
    for i in 0..40u32 {
        let key = format!("during-{i}");
        client
            .put(key.as_bytes(), b"1")
            .await
            .expect("a write while a monitor hangs");
        tokio::time::sleep(interval).await;
    }
    let after = cluster.view().await;
    assert_eq!(
        roles(&after),
        roles(&before),
        "monitor {hung} hung (leader: {hang_leader}); monitor {serving} leads now and changed \
         the view from {before:?} to {after:?}"
    );
    assert!(
        after.backup_ready,
        "the backup is no longer ready: {after:?}"
    );
    cluster.unhang_monitor(hung);
    assert_eq!(
        client.get(b"during-39").await.expect("a read"),
        Some(b"1".to_vec())
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_monitor_leader_replaces_no_live_server() {
    hang_keeps_the_view(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_monitor_follower_replaces_no_live_server() {
    hang_keeps_the_view(false).await;
}
