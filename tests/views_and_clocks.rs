//! Unknown or out-of-date views, requests from unknown servers, clocks that jump: refused or
//! tolerated as the design says, with a test each.
//!
//! - The pure view rules with a fake clock: pings from the future, pings from strangers, a
//!   clock that goes backwards, a clock that jumps hours ahead.
//! - Over the network: requests to servers that are not primary, forwards for views the backup
//!   has not seen or has left behind, a stranger's ping with an absurd view number.
//! - The kv service clock: entry time stamps that go backwards.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use rand::Rng;
use viewkv::kv::api::{
    Entry, Forward, KvError, Op, Reply, Request, Sent, StreamReply, FORWARD, REQUEST,
};
use viewkv::kv::{Limits, Store};
use viewkv::monitor::api::{PingReply, PING};
use viewkv::net::RpcClient;
use viewkv::testkit::{self, wait_for, Cluster, ClusterOptions};
use viewkv::view::{Decider, Decision, Ping, Timings, View, ViewTable};

const DEAD_PINGS: u32 = 5;
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The pure rules, driven with a fake clock (as in tests/view_rules.rs).
// ---------------------------------------------------------------------------------------------

/// A scripted kv server.
#[derive(Clone)]
struct Server {
    id: String,
    incarnation: u64,
}

impl Server {
    fn new(id: &str, incarnation: u64) -> Server {
        Server {
            id: id.to_string(),
            incarnation,
        }
    }

    fn ping(&self, viewnum: u64) -> Ping {
        self.ping_with(viewnum, false)
    }

    /// A ping; `synced` is what a primary says when its backup holds the state.
    fn ping_with(&self, viewnum: u64, synced: bool) -> Ping {
        Ping {
            id: self.id.clone(),
            addr: self.id.clone(),
            incarnation: self.incarnation,
            viewnum,
            backup_synced: synced,
            backup_failed: false,
            cluster: 0,
            holds_state: false,
        }
    }
}

/// The pure view service: a table, a decider and a clock that moves only when told.
struct Pure {
    table: ViewTable,
    decider: Decider,
    now: Instant,
    timings: Timings,
}

impl Pure {
    /// Starting at `now` (tests that move the clock backwards start a day in the future, so
    /// that `Instant` arithmetic never goes below the platform's origin).
    fn at(now: Instant) -> Pure {
        let timings = Timings {
            ping_interval: Duration::from_millis(100),
            dead_pings: DEAD_PINGS,
        };
        let table = ViewTable::default();
        let mut pure = Pure {
            decider: Decider::new(timings, &table, now, 1),
            table,
            now,
            timings,
        };
        // A group up for `dead_after` (before which it makes no view 1) that formed its cluster.
        pure.now += timings.dead_after();
        let formed = pure.decider.tick(&pure.table, pure.now);
        pure.apply(&formed);
        pure
    }

    fn new() -> Pure {
        Pure::at(Instant::now())
    }

    fn apply(&mut self, decisions: &[Decision]) {
        for decision in decisions {
            assert!(
                self.table.apply(decision),
                "decision {decision:?} was a no-op"
            );
        }
    }

    /// Ping at the current time; the decisions it caused (already applied).
    fn ping_at(&mut self, ping: &Ping, now: Instant) -> Vec<Decision> {
        let decisions = self.decider.ping(&self.table, ping, now);
        self.apply(&decisions);
        decisions
    }

    fn ping(&mut self, ping: &Ping) -> Vec<Decision> {
        self.ping_at(ping, self.now)
    }

    fn tick_at(&mut self, now: Instant) -> Vec<Decision> {
        let decisions = self.decider.tick(&self.table, now);
        self.apply(&decisions);
        decisions
    }

    /// Let `intervals` ping intervals pass, ticking after each.
    fn pass(&mut self, intervals: u32) {
        for _ in 0..intervals {
            self.now += self.timings.ping_interval;
            self.tick_at(self.now);
        }
    }

    fn view(&self) -> &View {
        &self.table.view
    }
}

fn primary_id(view: &View) -> Option<&str> {
    view.primary.as_ref().map(|m| m.id.as_str())
}

fn backup_id(view: &View) -> Option<&str> {
    view.backup.as_ref().map(|m| m.id.as_str())
}

fn changes(decisions: &[Decision]) -> Vec<&Decision> {
    decisions
        .iter()
        .filter(|d| matches!(d, Decision::Change { .. }))
        .collect()
}

/// Bring up view (a, b), acknowledged, with b ready.
fn serving(s: &mut Pure, a: &Server, b: &Server) -> View {
    s.ping(&a.ping(0));
    s.ping(&a.ping(1));
    s.ping(&b.ping(0));
    assert_eq!(
        (primary_id(s.view()), backup_id(s.view())),
        (Some(a.id.as_str()), Some(b.id.as_str()))
    );
    let num = s.view().num;
    s.ping(&a.ping_with(num, true));
    let view = s.view().clone();
    assert!(view.acked && view.backup_ready, "{view:?}");
    view
}

#[test]
fn a_ping_from_a_future_view_is_tolerated_and_acknowledges_nothing() {
    let mut s = Pure::new();
    let (a, b) = (Server::new("a", 1), Server::new("b", 2));
    s.ping(&a.ping(0));
    assert_eq!((s.view().num, s.view().acked), (1, false));
    // The primary claims views it cannot have seen: not an acknowledgment of view 1.
    for future in [2, 7, u64::MAX] {
        let decisions = s.ping(&a.ping_with(future, true));
        assert!(changes(&decisions).is_empty(), "{decisions:?}");
        assert!(!s.view().acked, "view 1 acked by a ping for view {future}");
    }
    // Time passes with the primary stuck in the future: the unacked view stays (rule 3), and
    // an idle server is not made backup of it.
    for _ in 0..DEAD_PINGS * 2 {
        s.ping(&a.ping(u64::MAX));
        s.ping(&b.ping(u64::MAX));
        s.pass(1);
    }
    assert_eq!((s.view().num, s.view().acked), (1, false), "{:?}", s.view());
    assert_eq!(primary_id(s.view()), Some("a"));
    // The real acknowledgment still works, and then b becomes backup.
    s.ping(&a.ping(1));
    s.ping(&b.ping(1));
    assert_eq!(s.view().num, 2);
    assert_eq!(backup_id(s.view()), Some("b"));
    // View 2 unacked: a ping for view 3 with "backup synced" neither acks it nor makes b ready.
    s.ping(&a.ping_with(3, true));
    assert!(!s.view().acked && !s.view().backup_ready, "{:?}", s.view());
    // Acked but b not ready yet: a future ping does not make it ready either.
    s.ping(&a.ping_with(2, false));
    assert!(s.view().acked && !s.view().backup_ready);
    s.ping(&a.ping_with(3, true));
    s.ping(&b.ping_with(u64::MAX, true));
    assert!(
        !s.view().backup_ready,
        "b made ready by a ping for another view"
    );
    s.ping(&a.ping_with(2, true));
    assert!(s.view().backup_ready);
}

#[test]
fn an_unknown_server_is_registered_idle_and_displaces_no_live_member() {
    let mut s = Pure::new();
    let (a, b) = (Server::new("a", 1), Server::new("b", 2));
    let view = serving(&mut s, &a, &b);
    let stranger = Server::new("stranger", 666);
    for (i, viewnum) in [0, view.num, view.num + 1, u64::MAX]
        .into_iter()
        .enumerate()
    {
        let decisions = s.ping(&stranger.ping_with(viewnum, true));
        if i == 0 {
            assert!(
                matches!(decisions.as_slice(), [Decision::Register { id, .. }] if id == "stranger"),
                "{decisions:?}"
            );
        } else {
            assert!(decisions.is_empty(), "{decisions:?}");
        }
        assert_eq!(s.view(), &view);
    }
    assert!(s.table.servers.contains_key("stranger"));
    // Everyone keeps pinging for a long while: the view never changes.
    for _ in 0..DEAD_PINGS * 4 {
        s.ping(&a.ping(view.num));
        s.ping(&b.ping(view.num));
        s.ping(&stranger.ping_with(u64::MAX, true));
        s.pass(1);
    }
    assert_eq!(s.view(), &view);
    // When the backup dies, the stranger (a live idle server) takes the empty slot, as backup.
    for _ in 0..DEAD_PINGS + 1 {
        s.ping(&a.ping(s.view().num));
        s.ping(&stranger.ping(s.view().num));
        s.pass(1);
    }
    assert_eq!(primary_id(s.view()), Some("a"));
    assert_eq!(backup_id(s.view()), Some("stranger"));
    assert_eq!(s.view().num, view.num + 1);
}

#[test]
fn an_unknown_server_fills_only_an_empty_backup_slot_and_is_never_made_primary() {
    let mut s = Pure::new();
    let a = Server::new("a", 1);
    s.ping(&a.ping(0));
    s.ping(&a.ping(1));
    assert!(s.view().acked && s.view().backup.is_none());
    // The backup slot is empty: a server never heard of before may fill it, as a syncing
    // backup; its own claim to be in sync counts for nothing.
    let stranger = Server::new("stranger", 666);
    s.ping(&stranger.ping_with(u64::MAX, true));
    assert_eq!(
        (primary_id(s.view()), backup_id(s.view())),
        (Some("a"), Some("stranger"))
    );
    let view = s.view().clone();
    s.ping(&stranger.ping_with(view.num, true));
    s.ping(&a.ping_with(view.num, false));
    assert!(s.view().acked && !s.view().backup_ready);
    // The primary dies. The stranger, never reported in sync, is not promoted: the service
    // waits for a (rule 7) however long the stranger keeps pinging.
    for _ in 0..DEAD_PINGS * 4 {
        s.ping(&stranger.ping(view.num));
        s.pass(1);
    }
    assert_eq!(primary_id(s.view()), Some("a"), "{:?}", s.view());
    assert_eq!(s.view().num, view.num);
    let stalled = s.decider.stalled(&s.table, s.now).expect("a stall");
    assert!(stalled.contains("primary a is dead"), "{stalled}");
}

#[test]
fn a_clock_going_backwards_declares_nobody_dead() {
    let start = Instant::now() + Duration::from_secs(24 * 3600);
    let mut s = Pure::at(start);
    let (a, b, c) = (
        Server::new("a", 1),
        Server::new("b", 2),
        Server::new("c", 3),
    );
    let view = serving(&mut s, &a, &b);
    s.ping(&c.ping(view.num));
    s.pass(1);
    s.ping(&a.ping(view.num));
    s.ping(&b.ping(view.num));
    s.ping(&c.ping(view.num));
    let table = s.table.clone();
    let last = s.now;
    let steps = [
        Duration::from_millis(1),
        s.timings.ping_interval,
        s.timings.dead_after(),
        s.timings.dead_after() * 10,
        Duration::from_secs(10),
        Duration::from_secs(3600),
        Duration::from_secs(20 * 3600),
    ];
    for back in steps {
        let then = last - back;
        let decisions = s.tick_at(then);
        assert!(decisions.is_empty(), "{back:?} back: {decisions:?}");
        assert!(s.decider.stalled(&s.table, then).is_none());
    }
    assert_eq!(s.table, table);
    // Back to the present: nobody missed a ping, so nobody is dead.
    let decisions = s.tick_at(last + s.timings.ping_interval);
    assert!(decisions.is_empty(), "{decisions:?}");
    // A leader that took over at `last` and then sees the clock go back: no one dies either.
    let mut fresh = Decider::new(s.timings, &s.table, last, 1);
    for back in steps {
        let decisions = fresh.tick(&s.table, last - back);
        assert!(
            decisions.is_empty(),
            "new leader, {back:?} back: {decisions:?}"
        );
    }
    // Pings arriving with a time stamp in the past panic nowhere and change no view.
    for back in steps {
        for server in [&a, &b, &c] {
            let decisions = s.ping_at(&server.ping(view.num), last - back);
            assert!(changes(&decisions).is_empty(), "{decisions:?}");
        }
    }
    assert_eq!(s.view(), &view);
}

/// Run the same script on two services: one sees `silence` pass interval by interval, the
/// other in a single jump of the clock. The outcome must be the same.
#[test]
fn a_forward_jump_of_hours_is_a_long_silence() {
    let silence = Duration::from_secs(3 * 3600);
    let start = Instant::now();
    let (a, b, c) = (
        Server::new("a", 1),
        Server::new("b", 2),
        Server::new("c", 3),
    );
    let setup = |s: &mut Pure| {
        let view = serving(s, &a, &b);
        s.ping(&c.ping(view.num));
        view
    };
    let mut stepped = Pure::at(start);
    let mut jumped = Pure::at(start);
    let view = setup(&mut stepped);
    assert_eq!(setup(&mut jumped), view);

    let intervals = (silence.as_millis() / stepped.timings.ping_interval.as_millis()) as u32;
    stepped.pass(intervals);
    jumped.now += silence;
    let decisions = jumped.tick_at(jumped.now);
    assert_eq!(stepped.now, jumped.now);
    assert_eq!(jumped.table, stepped.table, "{decisions:?}");
    // The idle server is forgotten; primary and backup are both dead, so the view stays and
    // the service reports itself stalled.
    assert_eq!(decisions, vec![Decision::Forget { id: "c".into() }]);
    assert_eq!(jumped.view(), &view);
    let stalled = jumped.decider.stalled(&jumped.table, jumped.now);
    assert_eq!(
        stalled,
        stepped.decider.stalled(&stepped.table, stepped.now)
    );
    assert!(
        stalled
            .as_deref()
            .is_some_and(|s| s.contains("primary a is dead")),
        "{stalled:?}"
    );
    // The backup comes back first: it is promoted, in both.
    for s in [&mut stepped, &mut jumped] {
        s.ping(&b.ping(view.num));
        assert_eq!(primary_id(s.view()), Some("b"));
        assert_eq!(backup_id(s.view()), None);
        assert_eq!(s.view().num, view.num + 1);
        let num = s.view().num;
        s.ping(&b.ping(num));
        s.ping(&a.ping(0));
        assert_eq!(backup_id(s.view()), Some("a"), "{:?}", s.view());
    }
    assert_eq!(jumped.table, stepped.table);
}

// ---------------------------------------------------------------------------------------------
// Over the network.
// ---------------------------------------------------------------------------------------------

fn ready(v: &View) -> bool {
    v.primary.is_some() && v.acked && v.backup.is_some() && v.backup_ready
}

async fn cluster(servers: usize) -> (Cluster, Vec<String>) {
    testkit::init_tracing();
    let mut cluster = Cluster::start(ClusterOptions::fast(testkit::seed())).await;
    let mut addrs = Vec::new();
    for _ in 0..servers {
        addrs.push(cluster.start_server().await);
    }
    (cluster, addrs)
}

fn put(client: u64, key: &[u8], value: &[u8]) -> Request {
    Request {
        client,
        seq: 1,
        deadline_ms: viewkv::kv::wall_ms() + 30_000,
        op: Op::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_a_server_that_is_not_primary_gets_wrong_server() {
    let (mut cluster, addrs) = cluster(3).await;
    let view = cluster
        .wait_view("a ready backup and an idle server", DEADLINE, ready)
        .await;
    let backup = view.backup.clone().expect("a backup").addr;
    let idle = addrs
        .iter()
        .find(|a| !view.has_member(a))
        .expect("an idle server")
        .clone();
    let rpc = RpcClient::new("direct", None);
    let client: u64 = rand::thread_rng().gen();
    for (role, addr) in [("backup", &backup), ("idle", &idle)] {
        let request = put(client, b"sent-to-the-wrong-server", role.as_bytes());
        let sent = Sent::unstamped(request);
        let reply: Reply = rpc
            .call(addr, REQUEST, &sent, Duration::from_secs(5))
            .await
            .expect("an answer");
        assert!(
            matches!(reply, Reply::Err(KvError::WrongServer { .. })),
            "{role} {addr}: {reply:?}"
        );
        let status = cluster.server_status(addr).await.expect("status");
        assert_eq!(status["role"], role, "{status}");
    }
    // Applied nowhere: the primary does not have it.
    let mut ck = cluster.client();
    assert_eq!(
        ck.get(b"sent-to-the-wrong-server").await.expect("get"),
        None
    );
    cluster.shutdown().await;
}

/// The backup's (keys, index), read from its status.
async fn backup_position(cluster: &Cluster, addr: &str) -> (u64, u64) {
    let status = cluster.server_status(addr).await.expect("backup status");
    (
        status["keys"].as_u64().expect("keys"),
        status["index"].as_u64().expect("index"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_for_future_and_old_views_are_retried_or_refused_never_applied() {
    let (mut cluster, _) = cluster(2).await;
    let view = cluster.wait_view("a ready backup", DEADLINE, ready).await;
    let primary = view.primary.clone().expect("a primary");
    let backup = view.backup.clone().expect("a backup").addr;
    let mut ck = cluster.client();
    ck.put(b"before", b"1").await.expect("put");
    // The primary answered, so the backup applied it: keys 1.
    let (keys, index) = backup_position(&cluster, &backup).await;
    assert_eq!(keys, 1);
    let rpc = RpcClient::new("time-traveller", None);
    // From the real primary, with the very next index: only the view number is wrong.
    let forward = |num: u64| Forward {
        view: num,
        primary: primary.clone(),
        entries: vec![Entry {
            index: index + 1,
            at_ms: 0,
            request: put(42, b"from-another-view", b"x"),
        }],
    };
    let send = |forward: Forward| {
        let rpc = rpc.clone();
        let backup = backup.clone();
        async move {
            rpc.call::<Forward, StreamReply>(&backup, FORWARD, &forward, Duration::from_secs(5))
                .await
                .expect("an answer")
        }
    };
    for future in [view.num + 1, view.num + 1000, u64::MAX] {
        let reply = send(forward(future)).await;
        assert!(
            matches!(reply, StreamReply::Retry { .. }),
            "view {future}: {reply:?}"
        );
        assert_eq!(
            backup_position(&cluster, &backup).await,
            (keys, index),
            "applied a forward of view {future}"
        );
    }
    for old in [view.num - 1, 0] {
        let reply = send(forward(old)).await;
        assert!(
            matches!(reply, StreamReply::Refused { .. }),
            "view {old}: {reply:?}"
        );
        assert_eq!(
            backup_position(&cluster, &backup).await,
            (keys, index),
            "applied a forward of view {old}"
        );
    }
    // The checks above can see an application: a real write moves the backup on.
    ck.put(b"after", b"2").await.expect("put");
    assert_eq!(
        backup_position(&cluster, &backup).await,
        (keys + 1, index + 1)
    );
    assert_eq!(ck.get(b"from-another-view").await.expect("get"), None);
    assert_eq!(cluster.view().await, view, "the view changed");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_ping_with_an_absurd_view_number_gets_the_view() {
    let (mut cluster, _) = cluster(2).await;
    let view = cluster.wait_view("a ready backup", DEADLINE, ready).await;
    let rpc = RpcClient::new("stranger", None);
    let stranger = Ping {
        id: "stranger-from-nowhere".into(),
        addr: "192.0.2.1:9".into(),
        incarnation: 0xbad,
        viewnum: u64::MAX,
        backup_synced: true,
        backup_failed: true,
        cluster: 0,
        holds_state: false,
    };
    // Straight to the leader (asked again should leadership move meanwhile).
    let answer = wait_for("the leader's answer", DEADLINE, || async {
        let leader = cluster.wait_leader(DEADLINE).await;
        let addr = cluster.monitor_addr(leader);
        match rpc
            .call::<Ping, PingReply>(&addr, PING, &stranger, Duration::from_secs(5))
            .await
        {
            Ok(PingReply::View { view, .. }) => Some(view),
            _ => None,
        }
    })
    .await;
    assert_eq!(answer, view, "the stranger's ping changed the view");
    assert!(!answer.has_member(&stranger.id));
    let mut ck = cluster.client();
    ck.put(b"still", b"working").await.expect("put");
    assert_eq!(
        ck.get(b"still").await.expect("get"),
        Some(b"working".to_vec())
    );
    assert_eq!(cluster.view().await, view);
    cluster.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The kv service clock.
// ---------------------------------------------------------------------------------------------

fn one_second_sessions() -> Store {
    Store::new(Limits {
        session_ttl: Duration::from_secs(1),
        ..Limits::default()
    })
}

fn put_hash(client: u64, seq: u64, value: &str) -> Request {
    Request {
        client,
        seq,
        deadline_ms: u64::MAX,
        op: Op::PutHash {
            key: format!("h{client}").into_bytes(),
            value: value.as_bytes().to_vec(),
        },
    }
}

/// A write by `client` to a key of its own (reads never enter the duplicate table).
fn touch(client: u64, seq: u64) -> Request {
    Request {
        client,
        seq,
        deadline_ms: u64::MAX,
        op: Op::Put {
            key: format!("t{client}").into_bytes(),
            value: b"x".to_vec(),
        },
    }
}

#[test]
fn time_stamps_going_backwards_expire_no_session() {
    let mut store = one_second_sessions();
    let first = store.apply(&put_hash(1, 1, "a"), 5_000);
    let second = store.apply(&put_hash(2, 1, "b"), 5_000);
    assert_eq!((&first, &second), (&Reply::Ok(None), &Reply::Ok(None)));
    // Time stamps from far in the past (and zero), from another client.
    for (seq, at_ms) in [(1, 4_000), (2, 100), (3, 0), (4, 1), (5, 4_999)] {
        store.apply(&touch(3, seq), at_ms);
        assert_eq!(store.sessions().len(), 3, "a session expired at {at_ms} ms");
    }
    // The repeats get the saved replies (a re-executed PutHash would return the hash).
    assert_eq!(store.apply(&put_hash(1, 1, "a"), 1_000), first);
    assert_eq!(store.apply(&put_hash(2, 1, "b"), 4_500), second);
    assert_eq!(store.sessions().len(), 3);
    assert_eq!(store.clock_ms(), 5_000);
}

/// A retry stamped in the past must not make its session look older than it is: the client
/// was heard from at 5 000 ms, so at 5 600 ms (under the 1 s TTL) its session is still there.
#[test]
fn a_retry_stamped_in_the_past_does_not_age_its_session() {
    let mut store = one_second_sessions();
    let reply = store.apply(&put_hash(1, 1, "a"), 5_000);
    assert_eq!(reply, Reply::Ok(None));
    // The retry arrives with an old time stamp and gets the saved reply.
    assert_eq!(store.apply(&put_hash(1, 1, "a"), 200), reply);
    // Another client at 5 600 ms: expiry runs.
    store.apply(&touch(2, 1), 5_600);
    let last_ms = store
        .sessions()
        .iter()
        .find(|(client, _)| **client == 1)
        .map(|(_, session)| session.last_ms);
    assert!(
        last_ms.is_some_and(|ms| ms >= 5_000),
        "client 1, last heard from at 5000 ms, has a session last seen at {last_ms:?} ms"
    );
    // And the retry at 5 700 ms is still answered from the duplicate table, not re-executed.
    assert_eq!(store.apply(&put_hash(1, 1, "a"), 5_700), reply);
}

proptest! {
    #[test]
    fn the_service_clock_never_decreases(stamps in proptest::collection::vec(0u64..20_000, 1..200)) {
        let mut store = one_second_sessions();
        let mut high = 0;
        for (i, at_ms) in stamps.iter().enumerate() {
            let client = (i % 5) as u64;
            store.apply(&touch(client, i as u64 + 1), *at_ms);
            high = high.max(*at_ms);
            prop_assert_eq!(store.clock_ms(), high, "after {:?}", &stamps[..=i]);
        }
    }
}
