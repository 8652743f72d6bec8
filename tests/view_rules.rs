//! The view rules of design.md, checked against the pure decision logic with a fake clock: no
//! sleeps, no network, milliseconds per test.

mod common;

use std::time::{Duration, Instant};

use common::test1::{self, Scripted, DEAD_PINGS};
use viewkv::view::{Decider, Decision, Ping, Timings, View, ViewTable};

/// The pure view service: a table, a decider and a clock that moves only when told.
struct Pure {
    table: ViewTable,
    decider: Decider,
    now: Instant,
    timings: Timings,
}

impl Pure {
    fn new() -> Pure {
        let timings = Timings {
            ping_interval: Duration::from_millis(100),
            dead_pings: DEAD_PINGS,
        };
        let now = Instant::now();
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
        pure.apply(formed);
        pure
    }

    fn apply(&mut self, decisions: Vec<Decision>) -> Vec<Decision> {
        for decision in &decisions {
            assert!(
                self.table.apply(decision),
                "decision {decision:?} was a no-op"
            );
        }
        decisions
    }

    fn ping_now(&mut self, ping: Ping) -> View {
        let decisions = self.decider.ping(&self.table, &ping, self.now);
        self.apply(decisions);
        self.table.view.clone()
    }

    fn pass(&mut self, intervals: u32) {
        for _ in 0..intervals {
            self.now += self.timings.ping_interval;
            let decisions = self.decider.tick(&self.table, self.now);
            self.apply(decisions);
        }
    }
}

impl test1::Service for Pure {
    async fn ping(&mut self, ping: Ping) -> View {
        self.ping_now(ping)
    }
    async fn get(&mut self) -> View {
        self.table.view.clone()
    }
    async fn interval(&mut self) {
        self.pass(1);
    }
    fn rounds(&self, rounds: u32) -> u32 {
        rounds
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
        .block_on(f)
}

#[test]
fn mit_6824_viewservice_test1() {
    block_on(test1::run(&mut Pure::new()));
}

fn primary_id(view: &View) -> Option<&str> {
    view.primary.as_ref().map(|m| m.id.as_str())
}

fn backup_id(view: &View) -> Option<&str> {
    view.backup.as_ref().map(|m| m.id.as_str())
}

/// Bring up view (p, b) with both acked; `synced` says whether p reports b in sync.
fn primary_and_backup(s: &mut Pure, p: &Scripted, b: &Scripted, synced: bool) -> View {
    s.ping_now(p.ping(0));
    s.ping_now(p.ping(1));
    let v = s.ping_now(b.ping(0));
    assert_eq!(
        (primary_id(&v), backup_id(&v)),
        (Some(p.id.as_str()), Some(b.id.as_str()))
    );
    let mut ack = p.ping(v.num);
    ack.backup_synced = synced;
    s.ping_now(ack)
}

#[test]
fn unready_backup_is_never_promoted() {
    let mut s = Pure::new();
    let (a, b) = (Scripted::new("a", 1), Scripted::new("b", 2));
    let v = primary_and_backup(&mut s, &a, &b, false);
    assert!(v.acked && !v.backup_ready);
    for _ in 0..DEAD_PINGS * 4 {
        s.ping_now(b.ping(v.num));
        s.pass(1);
    }
    assert_eq!(s.table.view, v, "a syncing backup was promoted");
    let stalled = s
        .decider
        .stalled(&s.table, s.now)
        .expect("the stall is reported");
    assert!(stalled.contains("primary a is dead"), "{stalled}");
}

#[test]
fn ready_backup_is_promoted_when_primary_dies() {
    let mut s = Pure::new();
    let (a, b) = (Scripted::new("a", 1), Scripted::new("b", 2));
    let v = primary_and_backup(&mut s, &a, &b, true);
    assert!(v.backup_ready);
    for _ in 0..DEAD_PINGS + 1 {
        s.ping_now(b.ping(v.num));
        s.pass(1);
    }
    assert_eq!(primary_id(&s.table.view), Some("b"));
    assert_eq!(s.table.view.num, v.num + 1);
    assert!(
        s.decider.stalled(&s.table, s.now).is_some(),
        "b has not acked yet"
    );
}

#[test]
fn syncing_backup_that_dies_is_replaced_by_an_idle_server() {
    let mut s = Pure::new();
    let (a, b, c) = (
        Scripted::new("a", 1),
        Scripted::new("b", 2),
        Scripted::new("c", 3),
    );
    let v = primary_and_backup(&mut s, &a, &b, false);
    let mut seen_by_c = 0;
    for _ in 0..DEAD_PINGS + 1 {
        let mut ping = a.ping(s.table.view.num);
        ping.backup_synced = false;
        s.ping_now(ping);
        seen_by_c = s.ping_now(c.ping(seen_by_c)).num;
        s.pass(1);
    }
    let now = &s.table.view;
    assert_eq!((primary_id(now), backup_id(now)), (Some("a"), Some("c")));
    assert_eq!(now.num, v.num + 1);
    assert!(!now.backup_ready, "the new backup starts syncing");
}

#[test]
fn primary_restarted_with_new_incarnation_loses_its_role() {
    let mut s = Pure::new();
    let (a, b) = (Scripted::new("a", 1), Scripted::new("b", 2));
    let v = primary_and_backup(&mut s, &a, &b, true);
    let reborn = Scripted::new("a", 99);
    // It pings right away, with a view number even: the new incarnation gives it away.
    s.ping_now(reborn.ping(v.num));
    let w = s.ping_now(b.ping(v.num));
    assert_eq!(primary_id(&w), Some("b"), "{w:?}");
    assert_eq!(w.num, v.num + 1);
    // b acks; the reborn server is idle and becomes the next backup.
    let x = s.ping_now(b.ping(w.num));
    assert_eq!(backup_id(&x), Some("a"));
    assert_eq!(x.backup.as_ref().map(|m| m.incarnation), Some(99));
}

#[test]
fn lost_reply_before_the_first_ack_is_not_a_restart() {
    let mut s = Pure::new();
    let a = Scripted::new("a", 1);
    s.ping_now(a.ping(0));
    // The reply was lost; it pings with 0 again, then acks.
    s.ping_now(a.ping(0));
    let v = s.ping_now(a.ping(1));
    assert!(v.acked && primary_id(&v) == Some("a"));
    s.pass(DEAD_PINGS - 1);
    s.ping_now(a.ping(1));
    s.pass(DEAD_PINGS - 1);
    assert_eq!(s.table.view, v);
    assert!(s.decider.stalled(&s.table, s.now).is_none());
}

#[test]
fn idle_servers_time_out_and_are_forgotten() {
    let mut s = Pure::new();
    let (a, b, c) = (
        Scripted::new("a", 1),
        Scripted::new("b", 2),
        Scripted::new("c", 3),
    );
    primary_and_backup(&mut s, &a, &b, true);
    s.ping_now(c.ping(0));
    assert!(s.table.servers.contains_key("c"));
    let mut forgotten = false;
    for _ in 0..DEAD_PINGS + 1 {
        let v = s.table.view.num;
        s.ping_now(a.ping(v));
        s.ping_now(b.ping(v));
        s.now += s.timings.ping_interval;
        let decisions = s.decider.tick(&s.table, s.now);
        forgotten |= decisions.contains(&Decision::Forget { id: "c".into() });
        s.apply(decisions);
    }
    assert!(forgotten && !s.table.servers.contains_key("c"));
    assert!(s.table.servers.contains_key("a") && s.table.servers.contains_key("b"));
    assert_eq!(
        backup_id(&s.table.view),
        Some("b"),
        "members are never forgotten"
    );
}

#[test]
fn new_leader_grants_a_grace_period() {
    let mut s = Pure::new();
    let (a, b) = (Scripted::new("a", 1), Scripted::new("b", 2));
    let v = primary_and_backup(&mut s, &a, &b, true);
    // a went silent long ago, but a new leader takes over now and knows nothing of that.
    s.now += s.timings.dead_after() * 3;
    let mut fresh = Decider::new(s.timings, &s.table, s.now, 1);
    let early = s.now + s.timings.dead_after() - s.timings.ping_interval;
    assert!(
        fresh.tick(&s.table, early).is_empty(),
        "declared dead within the grace period"
    );
    let late = s.now + s.timings.dead_after();
    assert!(fresh.ping(&s.table, &b.ping(v.num), early).is_empty());
    let decisions = fresh.tick(&s.table, late);
    assert!(
        matches!(decisions.first(), Some(Decision::Change { next, .. }) if primary_id(next) == Some("b")),
        "after the grace period the silent primary is replaced: {decisions:?} (from {v:?})"
    );
}

#[test]
fn a_stale_decision_is_a_no_op() {
    let mut s = Pure::new();
    let (a, b) = (Scripted::new("a", 1), Scripted::new("b", 2));
    let v = primary_and_backup(&mut s, &a, &b, true);
    let stale = Decision::Change {
        prev: View::default(),
        next: View {
            num: 1,
            ..View::default()
        },
    };
    assert!(!s.table.apply(&stale));
    assert_eq!(s.table.view, v);
}

#[test]
fn a_backup_its_primary_cannot_reach_is_replaced_and_shunned_for_a_while() {
    let mut s = Pure::new();
    let (a, b, c) = (
        Scripted::new("a", 1),
        Scripted::new("b", 2),
        Scripted::new("c", 3),
    );
    let v = primary_and_backup(&mut s, &a, &b, true);
    s.ping_now(c.ping(0));
    let mut report = a.ping(v.num);
    report.backup_failed = true;
    let w = s.ping_now(report);
    assert_eq!((primary_id(&w), backup_id(&w)), (Some("a"), Some("c")));
    assert_eq!(w.num, v.num + 1);
    // A report from anyone but the primary, or for another view, changes nothing.
    let mut forged = b.ping(w.num);
    forged.backup_failed = true;
    assert_eq!(s.ping_now(forged), w);
    // c dies; b is alive but shunned, so the primary goes on alone for now...
    s.ping_now(a.ping(w.num));
    let mut seen = w.num;
    for _ in 0..DEAD_PINGS + 1 {
        seen = s.ping_now(a.ping(seen)).num;
        s.ping_now(b.ping(seen));
        s.pass(1);
    }
    assert_eq!(backup_id(&s.table.view), None, "{:?}", s.table.view);
    // ...and takes b back once the shunning is over.
    for _ in 0..DEAD_PINGS * 4 {
        seen = s.ping_now(a.ping(seen)).num;
        s.ping_now(b.ping(seen));
        s.pass(1);
    }
    assert_eq!(backup_id(&s.table.view), Some("b"));
}

#[test]
fn a_new_group_forms_its_cluster_at_once_and_makes_view_1_only_after_dead_after() {
    let timings = Timings {
        ping_interval: Duration::from_millis(100),
        dead_pings: DEAD_PINGS,
    };
    let mut table = ViewTable::default();
    let start = Instant::now();
    let mut decider = Decider::new(timings, &table, start, 42);
    let a = Scripted::new("a", 1);
    let early = decider.ping(&table, &a.ping(0), start + timings.ping_interval);
    for decision in &early {
        table.apply(decision);
    }
    assert!(
        matches!(early.first(), Some(Decision::Form { cluster: 42 })),
        "{early:?}"
    );
    assert_eq!(table.cluster, 42);
    assert_eq!(table.view.num, 0, "view 1 before dead_after: {early:?}");
    let later = decider.ping(&table, &a.ping(0), start + timings.dead_after());
    for decision in &later {
        table.apply(decision);
    }
    assert_eq!(primary_id(&table.view), Some("a"), "{later:?}");
}

/// A ping from a server of cluster `cluster` that holds the state as of `viewnum`.
fn of_cluster(server: &Scripted, cluster: u64, viewnum: u64, holds_state: bool) -> Ping {
    Ping {
        cluster,
        holds_state,
        ..server.ping(viewnum)
    }
}

#[test]
fn monitors_that_lost_their_state_make_no_view_while_servers_of_another_cluster_ping() {
    let mut s = Pure::new();
    let (p, b, fresh) = (
        Scripted::new("p", 1),
        Scripted::new("b", 2),
        Scripted::new("fresh", 3),
    );
    const OLD: u64 = 0x0dd;
    for _ in 0..DEAD_PINGS * 3 {
        s.ping_now(of_cluster(&p, OLD, 9, true));
        s.ping_now(of_cluster(&b, OLD, 9, true));
        s.ping_now(fresh.ping(0));
        s.pass(1);
    }
    assert_eq!(s.table.view.num, 0, "a second primary: {:?}", s.table.view);
    assert!(
        !s.table.servers.contains_key("p"),
        "a foreign server was registered"
    );
    let stalled = s.decider.stalled(&s.table, s.now).expect("the stall");
    assert!(
        stalled.contains("lost their state") && stalled.contains("viewkv recover"),
        "{stalled}"
    );

    // The operator adopts the surviving servers' cluster and view.
    let plan = s
        .decider
        .recovery(&s.table, None, s.now)
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(plan.explanation.contains("adopt cluster dd"), "{plan:?}");
    let Decision::Recover { cluster, next, .. } = &plan.decision else {
        panic!("{plan:?}");
    };
    assert_eq!((*cluster, next.num, next.recovered), (OLD, 10, true));
    assert!(matches!(primary_id(next), Some("p" | "b")), "{next:?}");
    s.apply(vec![plan.decision.clone()]);
    assert_eq!(s.table.cluster, OLD);
    // The chosen primary acknowledges; the others become backups as usual.
    let chosen = next.primary.clone().expect("a primary");
    let (primary, other) = if chosen.id == "p" { (&p, &b) } else { (&b, &p) };
    let mut seen = s.ping_now(of_cluster(primary, OLD, 9, true)).num;
    for _ in 0..DEAD_PINGS * 3 {
        seen = s.ping_now(of_cluster(primary, OLD, seen, true)).num;
        s.ping_now(of_cluster(other, OLD, 9, false));
        s.pass(1);
    }
    let view = &s.table.view;
    assert_eq!(primary_id(view), Some(chosen.id.as_str()), "{view:?}");
    assert!(view.acked && view.backup.is_some(), "{view:?}");
    assert!(
        !view.recovered,
        "only the recovery view is marked: {view:?}"
    );
}

#[test]
fn recover_refuses_a_service_that_can_go_on_by_itself() {
    let mut s = Pure::new();
    let (a, b) = (Scripted::new("a", 1), Scripted::new("b", 2));
    let v = primary_and_backup(&mut s, &a, &b, false);
    let err = s
        .decider
        .recovery(&s.table, None, s.now)
        .expect_err("not stalled");
    assert!(err.contains("not stalled"), "{err}");
    // The primary is slow to acknowledge a new view but alive: still no recovery.
    let c = Scripted::new("c", 3);
    s.ping_now(c.ping(0));
    let mut unacked = s.table.view.clone();
    unacked.num += 1;
    unacked.acked = false;
    let change = Decision::Change {
        prev: s.table.view.clone(),
        next: unacked,
    };
    s.apply(vec![change]);
    s.ping_now(a.ping(v.num));
    let err = s
        .decider
        .recovery(&s.table, None, s.now)
        .expect_err("the primary is alive");
    assert!(err.contains("is alive"), "{err}");
}

#[test]
fn recover_picks_the_server_holding_the_newest_state_and_says_what_is_lost() {
    let mut s = Pure::new();
    let (a, b, c) = (
        Scripted::new("a", 1),
        Scripted::new("b", 2),
        Scripted::new("c", 3),
    );
    let v = primary_and_backup(&mut s, &a, &b, false);
    // a dies; b never got in sync; c is idle.
    for _ in 0..DEAD_PINGS * 2 {
        s.ping_now(b.ping(v.num));
        s.ping_now(c.ping(v.num));
        s.pass(1);
    }
    assert!(s.decider.stalled(&s.table, s.now).is_some());
    let empty = s.decider.recovery(&s.table, None, s.now).expect("a plan");
    assert!(empty.explanation.contains("EMPTY"), "{empty:?}");

    // Had b installed a's state (reported only in its own ping), b is chosen and keeps it.
    s.ping_now(Ping {
        holds_state: true,
        ..b.ping(v.num)
    });
    let plan = s.decider.recovery(&s.table, None, s.now).expect("a plan");
    let Decision::Recover { next, cluster, .. } = &plan.decision else {
        panic!("{plan:?}");
    };
    assert_eq!(primary_id(next), Some("b"));
    assert_eq!(
        (*cluster, next.num, next.backup.clone()),
        (s.table.cluster, v.num + 1, None)
    );
    assert!(
        plan.explanation.contains("keeps the state") && plan.explanation.contains("primary a"),
        "{plan:?}"
    );
    let chosen = s
        .decider
        .recovery(&s.table, Some("c"), s.now)
        .expect("c is live");
    assert!(
        chosen.explanation.starts_with("c becomes primary"),
        "{chosen:?}"
    );
    let err = s
        .decider
        .recovery(&s.table, Some("a"), s.now)
        .expect_err("a is dead");
    assert!(
        err.contains("not a live kv server") && err.contains('b'),
        "{err}"
    );
    s.apply(vec![plan.decision]);
    assert!(
        s.decider
            .stalled(&s.table, s.now)
            .is_some_and(|why| why.contains("acknowledge")),
        "the recovered view waits for b's acknowledgment"
    );
}
