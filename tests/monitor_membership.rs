//! Changing the monitor group's membership (`viewkv monitors add/remove`), and the start rules
//! of a monitor with an empty data directory, on in-process clusters under client load: no
//! client operation fails, the history stays linearizable, no acknowledged write is lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use viewkv::check::Verdict;
use viewkv::monitor::membership::{
    MemberChange, MembersClient, MembersError, MembersReply, CHANGE_MEMBERS, MEMBERS,
};
use viewkv::monitor::{MonitorClient, MonitorError};
use viewkv::net::{RpcClient, RpcError, Secret};
use viewkv::testkit::workload::{client_loop, final_reads, judge, Recorder};
use viewkv::testkit::{self, wait_for, Cluster, ClusterOptions};

/// Generous: a noisy 2-core machine can stall a process for seconds.
const DEADLINE: Duration = Duration::from_secs(60);

/// Clients writing all along, every call recorded, and a prober reading the view.
struct Load {
    /// The record of every client call.
    recorder: Arc<Recorder>,
    /// Set to stop the clients and the prober.
    stop: Arc<AtomicBool>,
    /// The clients' tasks.
    clients: Vec<JoinHandle<()>>,
    /// The prober's task: the longest time the view service went without a serving answer.
    prober: JoinHandle<Duration>,
}

impl Load {
    /// Wait for a primary with a ready backup, then start 4 clients and a view prober.
    async fn start(cluster: &mut Cluster, seed: u64) -> Load {
        cluster.wait_ready(DEADLINE).await;
        let recorder = Arc::new(Recorder::new());
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (1..=4)
            .map(|who| {
                let client = cluster.client();
                tokio::spawn(client_loop(
                    recorder.clone(),
                    client,
                    who,
                    seed.wrapping_add(who),
                    stop.clone(),
                ))
            })
            .collect();
        let prober = tokio::spawn(probe_view(cluster.monitor_client("prober"), stop.clone()));
        Load {
            recorder,
            stop,
            clients,
            prober,
        }
    }

    /// Stop, read the append keys, and check the history: every call answered, linearizable,
    /// no acknowledged append lost or duplicated.
    async fn finish(self, cluster: &mut Cluster) {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.await.expect("a client task");
        }
        let longest = self.prober.await.expect("the prober");
        println!("longest time without a serving monitor leader: {longest:?}");
        let mut reader = cluster.client();
        final_reads(&self.recorder, &mut reader).await;
        let ops = self.recorder.operations();
        let unknown = ops.iter().filter(|op| op.complete().is_none()).count();
        println!(
            "{} operations, {unknown} with an unknown outcome",
            ops.len()
        );
        assert!(
            ops.len() > 100,
            "the clients hardly ran: {} calls",
            ops.len()
        );
        assert_eq!(unknown, 0, "client operations failed during the changes");
        assert!(
            self.recorder.refused().is_empty(),
            "{:?}",
            self.recorder.refused()
        );
        let (report, appends) = judge(&ops, Duration::from_secs(20));
        assert_ne!(report.verdict(), Verdict::NotLinearizable, "{report:?}");
        for append in appends {
            assert!(append.is_ok(), "{append:?}");
        }
    }
}

/// Read the view every 20 ms until `stop`; the longest gap between answers of a serving leader.
async fn probe_view(client: MonitorClient, stop: Arc<AtomicBool>) -> Duration {
    let mut last = Instant::now();
    let mut longest = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        if client.view().await.is_ok_and(|reply| reply.serving) {
            longest = longest.max(last.elapsed());
            last = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    longest.max(last.elapsed())
}

/// The group as the leader sees it, once it satisfies `ok`.
async fn group_where(
    members: &MembersClient,
    what: &str,
    ok: impl Fn(&MembersReply) -> bool,
) -> MembersReply {
    wait_for(what, DEADLINE, || async {
        let (_, group) = members.list().await.ok()?;
        (group.from_leader() && ok(&group)).then_some(group)
    })
    .await
}

/// Make `change`, retrying while the group is between leaders; panics if it is refused.
async fn change(members: &MembersClient, change: MemberChange) -> MembersReply {
    let start = Instant::now();
    loop {
        match members.change(change.clone()).await {
            Ok(group) => return group,
            Err(MembersError::Unavailable(why)) if start.elapsed() < DEADLINE => {
                println!("{change:?}: {why}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("{change:?}: {err}"),
        }
    }
}

/// Monitor `id` has applied at least what the leader had when this was called.
async fn caught_up(cluster: &Cluster, id: u64) {
    let leader = cluster.wait_leader(DEADLINE).await;
    let status = cluster
        .monitor_status(leader)
        .await
        .expect("the leader's status");
    let target = status["last_applied"].as_u64().expect("an applied index");
    let start = Instant::now();
    loop {
        let mine = cluster.monitor_status(id).await;
        let applied = mine.as_ref().and_then(|s| s["last_applied"].as_u64());
        if applied >= Some(target) {
            return;
        }
        if start.elapsed() > DEADLINE {
            let now = cluster.monitor_status(leader).await;
            panic!(
                "monitor {id} did not apply {target} within {DEADLINE:?}: its status {mine:?}, \
                 running {}; leader {leader} then {status}, now {now:?}",
                cluster.monitor_running(id)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn refusal(err: &MonitorError) -> String {
    match err {
        MonitorError::Membership(why) => why.clone(),
        other => panic!("refused for another reason: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_monitor_is_replaced_by_an_empty_one_under_load() {
    testkit::init_tracing();
    let seed = testkit::seed();
    let mut cluster = Cluster::start(ClusterOptions::fast(seed)).await;
    for _ in 0..3 {
        cluster.start_server().await;
    }
    let load = Load::start(&mut cluster, seed).await;
    let members = cluster.members_client();

    // Monitor 3's machine dies for good; the new one has an empty disk at the same address.
    cluster.crash_monitor(3).await;
    cluster.wipe_monitor(3);
    let why = refusal(&cluster.start_monitor_refused(3, false, DEADLINE).await);
    println!("without --join: {why}");
    assert!(why.contains("exchanged Raft messages with it"), "{why}");
    assert!(
        why.contains("viewkv monitors remove 3") && why.contains("--join"),
        "{why}"
    );
    let why = refusal(&cluster.start_monitor_refused(3, true, DEADLINE).await);
    println!("--join while a voter: {why}");
    assert!(why.contains("still a voter"), "{why}");
    assert!(why.contains("viewkv monitors remove 3"), "{why}");

    let group = change(&members, MemberChange::Remove { id: 3 }).await;
    assert_eq!(group.voters(), vec![1, 2], "{group:?}");
    let why = refusal(&cluster.start_monitor_refused(3, false, DEADLINE).await);
    assert!(why.contains("exchanged Raft messages with it"), "{why}");

    cluster.start_monitor(3, true).await;
    let addr = cluster.monitor_addr(3);
    let group = change(&members, MemberChange::Add { id: 3, addr }).await;
    assert_eq!(group.voters(), vec![1, 2, 3], "{group:?}");
    caught_up(&cluster, 3).await;

    // The new monitor is a working voter: without the leader, monitor 3 is needed for a quorum.
    let leader = cluster.wait_leader(DEADLINE).await;
    cluster.crash_monitor(leader).await;
    let next = cluster.wait_leader(DEADLINE).await;
    println!("monitor {leader} crashed, monitor {next} leads");
    cluster.restart_monitor(leader).await;
    // And it restarts from its own data like any member.
    cluster.crash_monitor(3).await;
    cluster.restart_monitor(3).await;
    caught_up(&cluster, 3).await;
    group_where(&members, "every monitor a voter", |g| {
        g.voters() == [1, 2, 3]
    })
    .await;

    load.finish(&mut cluster).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_monitors_shrink_to_three_and_grow_back_to_five_under_load() {
    testkit::init_tracing();
    let seed = testkit::seed();
    let mut options = ClusterOptions::fast(seed);
    options.monitors = 5;
    let mut cluster = Cluster::start(options).await;
    for _ in 0..3 {
        cluster.start_server().await;
    }
    let load = Load::start(&mut cluster, seed).await;
    let members = cluster.members_client();

    // Remove the leader first (it hands over), then another monitor; each removed one stops.
    let leader = cluster.wait_leader(DEADLINE).await;
    let other = if leader == 5 { 4 } else { 5 };
    let mut removed = Vec::new();
    for id in [leader, other] {
        let group = change(&members, MemberChange::Remove { id }).await;
        assert!(!group.voters().contains(&id), "{group:?}");
        group_where(&members, "the removal applied", |g| {
            !g.joint && !g.voters().contains(&id)
        })
        .await;
        cluster.crash_monitor(id).await;
        cluster.wait_leader(DEADLINE).await;
        removed.push(id);
    }
    let group = group_where(&members, "three voters", |g| g.voters().len() == 3).await;
    println!("shrunk to {:?}", group.voters());

    for &id in &removed {
        cluster.wipe_monitor(id);
        cluster.start_monitor(id, true).await;
        let addr = cluster.monitor_addr(id);
        let group = change(&members, MemberChange::Add { id, addr }).await;
        assert!(group.voters().contains(&id), "{group:?}");
        caught_up(&cluster, id).await;
    }
    group_where(&members, "five voters", |g| g.voters() == [1, 2, 3, 4, 5]).await;

    // Two of the three that stayed crash: the two new voters complete the quorum.
    let stayed: Vec<u64> = (1..=5).filter(|id| !removed.contains(id)).collect();
    for &id in &stayed[..2] {
        cluster.crash_monitor(id).await;
    }
    let serving = cluster.wait_leader(DEADLINE).await;
    println!("with {:?} down, monitor {serving} leads", &stayed[..2]);
    for &id in &stayed[..2] {
        cluster.restart_monitor(id).await;
    }

    load.finish(&mut cluster).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_or_meaningless_changes_are_refused_and_change_nothing() {
    testkit::init_tracing();
    let mut options = ClusterOptions::fast(testkit::seed());
    options.secret = Some(Secret::generate());
    let mut cluster = Cluster::start(options).await;
    let members = cluster.members_client();
    let before = group_where(&members, "the group", |g| g.voters() == [1, 2, 3]).await;

    let refused = |result: Result<MembersReply, MembersError>| match result {
        Err(MembersError::Refused(why)) => why,
        other => panic!("not refused: {other:?}"),
    };
    let addr = cluster.monitor_addr(2);
    let why = refused(members.change(MemberChange::Add { id: 2, addr }).await);
    assert!(why.contains("already a voter"), "{why}");
    let why = refused(members.change(MemberChange::Remove { id: 9 }).await);
    assert!(why.contains("not a member"), "{why}");

    // With monitor 2 down, removing monitor 3 would leave {1, 2} with one monitor answering.
    let victim = if cluster.wait_leader(DEADLINE).await == 2 {
        1
    } else {
        2
    };
    let keep = 6 - victim - 3;
    cluster.crash_monitor(victim).await;
    let why = refused(members.change(MemberChange::Remove { id: 3 }).await);
    assert!(why.contains("not a working majority"), "{why}");
    assert!(why.contains(&format!("[{keep}]")), "{why}");
    cluster.restart_monitor(victim).await;

    // A monitor that is not running is added as a learner, never catches up, and the add
    // says so after its deadline; removing it drops the learner.
    let absent = "127.0.0.1:1".to_string();
    let why = refused(
        members
            .change(MemberChange::Add {
                id: 4,
                addr: absent.clone(),
            })
            .await,
    );
    assert!(why.contains("did not catch up"), "{why}");
    let group = group_where(&members, "a learner 4", |g| g.members.len() == 4).await;
    assert!(group
        .members
        .iter()
        .any(|m| m.id == 4 && !m.voter && m.addr == absent));
    let group = change(&members, MemberChange::Remove { id: 4 }).await;
    assert!(group.members.iter().all(|m| m.id != 4), "{group:?}");

    // Without the cluster secret, neither path answers.
    let intruder = RpcClient::new("intruder", None);
    for path in [MEMBERS, CHANGE_MEMBERS] {
        let body = viewkv::net::encode(&MemberChange::Remove { id: 3 });
        let reply = intruder
            .call_raw(&cluster.monitor_addr(1), path, body, DEADLINE)
            .await;
        match reply {
            Err(err) => assert!(err.is_unauthorized(), "{path}: {err}"),
            Ok(_) => panic!("{path} answered without the secret"),
        }
    }
    // A body that is not a change gets a 400, and the monitor keeps answering.
    let insider = RpcClient::new("insider", None).with_secret(cluster.options().secret.clone());
    let addr = cluster.monitor_addr(1);
    let reply = insider
        .call_raw(&addr, CHANGE_MEMBERS, b"garbage".to_vec(), DEADLINE)
        .await;
    match reply {
        Err(RpcError::Status { status: 400, .. }) => {}
        other => panic!("a garbage change: {other:?}"),
    }
    let after = group_where(&members, "the group", |g| g.voters() == [1, 2, 3]).await;
    assert_eq!(before.members.len(), after.members.len(), "{after:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_whose_first_start_is_late_still_joins_the_group_it_was_configured_for() {
    testkit::init_tracing();
    let mut options = ClusterOptions::fast(testkit::seed());
    options.late_monitors = vec![3];
    let mut cluster = Cluster::start(options).await;
    let members = cluster.members_client();
    group_where(&members, "the group formed by 1 and 2", |g| {
        g.applied.is_some()
    })
    .await;
    cluster.start_monitor(3, false).await;
    caught_up(&cluster, 3).await;
    let group = group_where(&members, "every monitor a voter", |g| {
        g.voters() == [1, 2, 3]
    })
    .await;
    assert!(!group.joint, "{group:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_is_refused_when_no_member_answers() {
    testkit::init_tracing();
    let mut cluster = Cluster::start(ClusterOptions::fast(testkit::seed())).await;
    for id in [1, 2, 3] {
        cluster.crash_monitor(id).await;
    }
    cluster.wipe_monitor(1);
    let why = refusal(&cluster.start_monitor_refused(1, true, DEADLINE).await);
    assert!(why.contains("no running monitor answered"), "{why}");
    cluster.shutdown().await;
}
