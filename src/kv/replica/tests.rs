//! Every kv rule on the pure core, with scripted views and times: no network, no sleeps.

use std::time::{Duration, Instant};

use super::*;
use crate::kv::api::{Entry, Forward, KvError, Op, Reply, Request, StreamReply, TransferChunk};

const T0_WALL: u64 = 1_000_000;

fn member(id: &str, incarnation: u64) -> Member {
    Member {
        id: id.into(),
        addr: format!("{id}:1"),
        incarnation,
    }
}

fn settings(min_copies: u32) -> Settings {
    Settings {
        timings: Timings {
            ping_interval: Duration::from_millis(100),
            dead_pings: 5,
        },
        limits: Limits::default(),
        min_copies,
        chunk_bytes: crate::kv::MAX_CHUNK_BYTES,
        read_lease: true,
    }
}

fn view(num: u64, primary: &Member, backup: Option<&Member>) -> View {
    View {
        num,
        primary: Some(primary.clone()),
        backup: backup.cloned(),
        acked: true,
        backup_ready: false,
        recovered: false,
    }
}

fn put(client: u64, seq: u64, key: &str, value: &str) -> Request {
    Request {
        client,
        seq,
        deadline_ms: T0_WALL + 10_000,
        op: Op::Put {
            key: key.into(),
            value: value.into(),
        },
    }
}

fn get(key: &str) -> Request {
    Request {
        client: 99,
        seq: 1,
        deadline_ms: T0_WALL + 10_000,
        op: Op::Get { key: key.into() },
    }
}

/// A primary and a backup that agree on `view 2 = (p, b)`, the backup idle before.
struct Pair {
    p: Replica,
    b: Replica,
    now: Instant,
    view: View,
}

impl Pair {
    fn new(min_copies: u32) -> Pair {
        let (pm, bm) = (member("p", 1), member("b", 2));
        let now = Instant::now();
        let mut p = Replica::new(pm.clone(), settings(min_copies));
        let mut b = Replica::new(bm.clone(), settings(min_copies));
        p.on_view(view(1, &pm, None), now);
        let two = view(2, &pm, Some(&bm));
        assert_eq!(
            p.on_view(two.clone(), now),
            vec![Effect::Replicate(two.clone())]
        );
        b.on_view(two.clone(), now);
        Pair {
            p,
            b,
            now,
            view: two,
        }
    }

    fn write(&mut self, request: Request) -> Submit {
        self.p.on_request(request, 0, self.now, T0_WALL)
    }

    /// Run a whole transfer, chunk by chunk.
    fn transfer(&mut self) {
        let num = self.view.num;
        let mut snapshot = self.p.begin_transfer(num, 7, self.now).expect("primary");
        while let Some(chunk) = snapshot.next_chunk() {
            self.p.sending(num, self.now).expect("primary");
            let (reply, _) = self.b.on_transfer(chunk);
            assert!(matches!(reply, StreamReply::Applied { .. }), "{reply:?}");
            self.p.chunk_accepted(num).expect("primary");
        }
        self.p
            .transfer_installed(num, snapshot.index())
            .expect("primary");
    }

    /// Forward everything pending; returns how far the backup applied.
    fn pump(&mut self) -> u64 {
        let num = self.view.num;
        let applied = self.b.index();
        let entries = self.p.next_batch(num, applied, false).expect("primary");
        let forward = Forward {
            view: num,
            primary: self.p.me().clone(),
            entries: entries.into_iter().cloned().collect(),
        };
        let (reply, _) = self.b.on_forward(forward);
        let StreamReply::Applied { applied } = reply else {
            panic!("forward not applied: {reply:?}");
        };
        self.p.backup_applied(num, applied).expect("primary");
        applied
    }
}

fn reply_of(submit: Submit) -> Reply {
    match submit {
        Submit::Reply(reply) | Submit::Wait { reply, .. } => reply,
    }
}

#[test]
fn the_first_primary_holds_an_empty_state_and_a_later_one_without_state_refuses() {
    let a = member("a", 1);
    let mut first = Replica::new(a.clone(), settings(1));
    first.on_view(view(1, &a, None), Instant::now());
    assert!(matches!(
        first.on_request(put(1, 1, "k", "v"), 0, Instant::now(), T0_WALL),
        Submit::Wait { .. }
    ));
    let mut late = Replica::new(a.clone(), settings(1));
    late.on_view(view(5, &a, None), Instant::now());
    assert_eq!(
        late.on_request(put(1, 1, "k", "v"), 0, Instant::now(), T0_WALL),
        Submit::Reply(Reply::Err(KvError::WrongServer { view: 5 }))
    );
}

#[test]
fn with_min_copies_2_a_primary_without_a_backup_refuses_writes_unapplied() {
    let a = member("a", 1);
    let mut lone = Replica::new(a.clone(), settings(2));
    lone.on_view(view(1, &a, None), Instant::now());
    let refused = Submit::Reply(Reply::Err(KvError::NoReplicas {
        copies: 0,
        min_copies: 2,
    }));
    assert_eq!(
        lone.on_request(put(1, 1, "k", "v"), 0, Instant::now(), T0_WALL),
        refused
    );
    assert!(KvError::NoReplicas {
        copies: 0,
        min_copies: 2
    }
    .refused_unapplied());
    assert_eq!(
        (
            lone.index(),
            lone.store().data().len(),
            lone.store().sessions().len()
        ),
        (0, 0, 0),
        "nothing applied, not even to the duplicate table"
    );
    // Reads still work: no other server can be primary.
    assert_eq!(
        lone.on_request(get("k"), 0, Instant::now(), T0_WALL),
        Submit::Reply(Reply::Ok(None))
    );
    let mut one = Replica::new(a.clone(), settings(1));
    one.on_view(view(1, &a, None), Instant::now());
    one.on_request(put(1, 1, "k", "v"), 0, Instant::now(), T0_WALL);
    assert_eq!(
        one.progress().confirmed,
        1,
        "min_copies = 1: confirmed alone"
    );
}

#[test]
fn a_write_applied_for_a_backup_that_left_the_view_waits_and_is_not_applied_twice() {
    let mut pair = Pair::new(2);
    let Submit::Wait { index, .. } = pair.write(put(1, 1, "k", "v")) else {
        panic!("with a backup syncing, a write is applied and waits");
    };
    // The backup leaves before it synced: the write stays unconfirmed, and what its client
    // hears after the confirmation timeout says it is held by one server.
    let alone = view(3, pair.p.me(), None);
    pair.p.on_view(alone, pair.now);
    assert!(pair.p.progress().confirmed < index);
    assert!(matches!(
        pair.p.unconfirmed_error(),
        KvError::NoReplicas {
            copies: 1,
            min_copies: 2
        }
    ));
    assert!(!pair.p.unconfirmed_error().refused_unapplied());
    // Its retry, and any new write, is refused without being applied.
    for request in [put(1, 1, "k", "v"), put(1, 2, "k", "w")] {
        assert!(matches!(
            pair.write(request),
            Submit::Reply(Reply::Err(KvError::NoReplicas { copies: 0, .. }))
        ));
    }
    assert_eq!(pair.p.index(), index);
    assert_eq!(pair.p.store().data().get(b"k"), Some(&b"v"[..]));
}

#[test]
fn writes_before_a_backup_are_confirmed_by_its_transfer() {
    let mut pair = Pair::new(2);
    let Submit::Wait { index, .. } = pair.write(put(1, 1, "k", "v")) else {
        panic!("waits");
    };
    assert!(pair.p.progress().confirmed < index);
    pair.transfer();
    assert!(pair.p.progress().confirmed >= index);
    assert_eq!(pair.b.store().data().get(b"k"), Some(&b"v"[..]));
}

#[test]
fn entries_stream_in_order_and_the_backup_never_goes_back() {
    let mut pair = Pair::new(2);
    pair.transfer();
    for seq in 1..=5 {
        pair.write(put(1, seq, "k", &seq.to_string()));
    }
    assert_eq!(pair.pump(), 5);
    assert_eq!(pair.p.progress().confirmed, 5);
    // A repeated forward (a retry) and one with a gap change nothing.
    let stale = Forward {
        view: 2,
        primary: pair.p.me().clone(),
        entries: vec![Entry {
            index: 3,
            at_ms: 0,
            request: put(1, 3, "k", "old"),
        }],
    };
    assert_eq!(
        pair.b.on_forward(stale).0,
        StreamReply::Applied { applied: 5 }
    );
    let gap = Forward {
        view: 2,
        primary: pair.p.me().clone(),
        entries: vec![Entry {
            index: 9,
            at_ms: 0,
            request: put(1, 9, "k", "gap"),
        }],
    };
    assert_eq!(
        pair.b.on_forward(gap).0,
        StreamReply::Applied { applied: 5 }
    );
    assert_eq!(pair.b.store().data().get(b"k"), Some(&b"5"[..]));
}

#[test]
fn batches_in_flight_stay_until_confirmed_and_one_lost_is_sent_again() {
    let mut pair = Pair::new(2);
    pair.transfer();
    let num = pair.view.num;
    let forward = |pair: &Pair, entries: Vec<&Entry>| Forward {
        view: num,
        primary: pair.p.me().clone(),
        entries: entries.into_iter().cloned().collect(),
    };
    for seq in 1..=2 {
        pair.write(put(1, seq, "k", &seq.to_string()));
    }
    let first = pair.p.next_batch(num, 0, false).expect("primary");
    assert_eq!(first.iter().map(|e| e.index).collect::<Vec<_>>(), [1, 2]);
    pair.write(put(1, 3, "k", "3"));
    // The next batch, sent while the first is in flight, holds only what came since.
    let second = pair.p.next_batch(num, 2, false).expect("primary");
    assert_eq!(second.iter().map(|e| e.index).collect::<Vec<_>>(), [3]);
    // The first is lost; the second reaches a gap and the backup says what it holds.
    let (reply, _) = pair.b.on_forward(forward(&pair, second));
    assert_eq!(reply, StreamReply::Applied { applied: 0 });
    pair.p.backup_applied(num, 0).expect("primary");
    assert_eq!(pair.p.progress().confirmed, 0, "nothing is confirmed yet");
    // Sent again from what the backup holds: everything is still there, in order.
    let again = pair.p.next_batch(num, 0, false).expect("primary");
    assert_eq!(again.iter().map(|e| e.index).collect::<Vec<_>>(), [1, 2, 3]);
    let (reply, _) = pair.b.on_forward(forward(&pair, again));
    assert_eq!(reply, StreamReply::Applied { applied: 3 });
    pair.p.backup_applied(num, 3).expect("primary");
    assert_eq!(pair.p.progress().confirmed, 3);
    assert!(pair
        .p
        .next_batch(num, 0, false)
        .expect("primary")
        .is_empty());
    assert_eq!(pair.b.store().data().get(b"k"), Some(&b"3"[..]));
}

#[test]
fn a_backup_refuses_senders_not_of_its_view() {
    let mut pair = Pair::new(2);
    pair.transfer();
    let forward = |view, primary: Member| Forward {
        view,
        primary,
        entries: Vec::new(),
    };
    let p = pair.p.me().clone();
    assert!(matches!(
        pair.b.on_forward(forward(1, p.clone())).0,
        StreamReply::Refused { .. }
    ));
    let (newer, effects) = pair.b.on_forward(forward(3, p.clone()));
    assert!(matches!(newer, StreamReply::Retry { .. }));
    assert_eq!(
        effects,
        vec![Effect::PingNow],
        "it asks the monitors at once"
    );
    let impostor = member("p", 99);
    assert!(matches!(
        pair.b.on_forward(forward(2, impostor)).0,
        StreamReply::Refused { .. }
    ));
    // An idle server refuses everything.
    let mut idle = Replica::new(member("c", 3), settings(2));
    idle.on_view(pair.view.clone(), pair.now);
    assert!(matches!(
        idle.on_forward(forward(2, p)).0,
        StreamReply::Refused { .. }
    ));
}

#[test]
fn forwards_wait_for_the_transfer() {
    let mut pair = Pair::new(2);
    let early = Forward {
        view: 2,
        primary: pair.p.me().clone(),
        entries: Vec::new(),
    };
    assert!(matches!(
        pair.b.on_forward(early).0,
        StreamReply::Retry { .. }
    ));
}

#[test]
fn a_late_chunk_of_an_earlier_attempt_is_ignored() {
    let mut pair = Pair::new(2);
    let mut old = pair.p.begin_transfer(2, 1, pair.now).expect("primary");
    let late = old.next_chunk().expect("a chunk");
    pair.write(put(1, 1, "k", "acked"));
    pair.transfer();
    pair.pump();
    let (reply, _) = pair.b.on_transfer(late);
    assert!(matches!(reply, StreamReply::Retry { .. }), "{reply:?}");
    assert_eq!(pair.b.store().data().get(b"k"), Some(&b"acked"[..]));
    assert_eq!(pair.b.index(), 1);
}

#[test]
fn chunks_out_of_order_restart_the_transfer() {
    let mut pair = Pair::new(2);
    let mut snapshot = pair.p.begin_transfer(2, 1, pair.now).expect("primary");
    let mut first = snapshot.next_chunk().expect("a chunk");
    first.chunk = 1;
    first.last = false;
    assert!(matches!(
        pair.b.on_transfer(first).0,
        StreamReply::Retry { .. }
    ));
    let mut garbled: TransferChunk = snapshot_chunk(&mut pair);
    garbled.records = vec![1, 2, 3];
    assert!(matches!(
        pair.b.on_transfer(garbled).0,
        StreamReply::Retry { .. }
    ));
}

fn snapshot_chunk(pair: &mut Pair) -> TransferChunk {
    let mut snapshot = pair.p.begin_transfer(2, 2, pair.now).expect("primary");
    snapshot.next_chunk().expect("a chunk")
}

#[test]
fn a_backup_that_lost_entries_gets_a_fresh_transfer() {
    let mut pair = Pair::new(2);
    pair.transfer();
    pair.write(put(1, 1, "k", "v"));
    pair.pump();
    assert_eq!(pair.p.backup_applied(2, 0), Ok(NextStep::Transfer));
}

#[test]
fn a_refusing_backup_fences_the_primary() {
    let mut pair = Pair::new(2);
    let epoch = pair.p.progress().epoch;
    pair.p.backup_refused(2, "view 2 is over").expect("primary");
    assert!(pair.p.progress().epoch > epoch, "waiting requests give up");
    assert_eq!(
        pair.write(put(1, 1, "k", "v")),
        Submit::Reply(Reply::Err(KvError::WrongServer { view: 2 }))
    );
    // A new view lifts the fence.
    let next = view(3, pair.p.me(), Some(pair.b.me()));
    pair.p.on_view(next, pair.now);
    assert!(matches!(
        pair.write(put(1, 1, "k", "v")),
        Submit::Wait { .. }
    ));
}

#[test]
fn failing_means_no_progress_not_unfinished() {
    let mut pair = Pair::new(2);
    let dead = pair.p.settings().timings.dead_after();
    let mut now = pair.now;
    pair.p.begin_transfer(2, 1, now).expect("primary");
    // A transfer that takes 20 x dead_after but keeps being accepted is not a failure.
    for _ in 0..200 {
        pair.p.sending(2, now).expect("primary");
        now += dead / 10;
        pair.p.chunk_accepted(2).expect("primary");
        assert!(!pair.p.ping(now).backup_failed);
    }
    // A backup that accepts nothing for longer than dead_after is.
    pair.p.sending(2, now).expect("primary");
    pair.p
        .replication_failed(2, now + dead / 2)
        .expect("primary");
    assert!(!pair.p.ping(now + dead).backup_failed);
    assert!(
        pair.p
            .ping(now + dead + Duration::from_millis(1))
            .backup_failed
    );
}

#[test]
fn the_snapshot_is_the_state_at_its_index_and_later_writes_are_streamed() {
    let mut pair = Pair::new(2);
    for i in 0..2000 {
        pair.write(put(1, i + 1, &format!("k{i:05}"), &"x".repeat(3000)));
    }
    let mut snapshot = pair.p.begin_transfer(2, 3, pair.now).expect("primary");
    pair.write(put(1, 5000, "late", "y"));
    let mut chunks = 0;
    while let Some(chunk) = snapshot.next_chunk() {
        chunks += 1;
        let pairs = crate::kv::api::unpack_records(&chunk.records).expect("well packed");
        let payload: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(
            payload <= crate::kv::MAX_CHUNK_BYTES,
            "a chunk of {payload} bytes"
        );
        pair.b.on_transfer(chunk);
    }
    assert!(chunks > 1, "6 MB of state takes more than one chunk");
    pair.p
        .transfer_installed(2, snapshot.index())
        .expect("primary");
    assert_eq!(
        pair.b.store().data().len(),
        2000,
        "the late write is not in the snapshot"
    );
    assert_eq!(pair.pump(), 2001);
    assert_eq!(pair.b.store().data().get(b"late"), Some(&b"y"[..]));
    assert_eq!(pair.b.store().sessions().len(), 1);
}

#[test]
fn the_services_limits_govern_a_backup_configured_otherwise() {
    let (pm, bm) = (member("p", 1), member("b", 2));
    let now = Instant::now();
    let mut p = Replica::new(pm.clone(), settings(2));
    let mut small = settings(2);
    small.limits.max_value = 10;
    small.limits.session_ttl = Duration::from_secs(1);
    let mut b = Replica::new(bm.clone(), small);
    p.on_view(view(1, &pm, None), now);
    let two = view(2, &pm, Some(&bm));
    p.on_view(two.clone(), now);
    b.on_view(two, now);
    let mut pair = Pair {
        p,
        b,
        now,
        view: view(2, &pm, Some(&bm)),
    };
    pair.transfer();
    assert!(pair.b.limits_mismatch().is_some());
    assert_eq!(pair.b.status()["limits"]["max_value"], 8 << 20);
    assert!(pair.b.status()["limits_mismatch"].is_string());
    let big = "v".repeat(1000);
    assert_eq!(reply_of(pair.write(put(1, 1, "k", &big))), Reply::Ok(None));
    pair.pump();
    assert_eq!(
        pair.b.store().data().get(b"k"),
        Some(big.as_bytes()),
        "same outcome as the primary"
    );
}

#[test]
fn requests_past_their_deadline_are_never_applied() {
    let mut pair = Pair::new(1);
    let mut late = put(1, 1, "k", "v");
    late.deadline_ms = T0_WALL - 1;
    assert!(matches!(
        reply_of(pair.write(late)),
        Reply::Err(KvError::Deadline { .. })
    ));
    let mut far = put(1, 1, "k", "v");
    far.deadline_ms = T0_WALL + 3_600_000;
    assert!(matches!(
        reply_of(pair.write(far)),
        Reply::Err(KvError::Deadline { .. })
    ));
    assert_eq!(pair.p.index(), 0);
    assert_eq!(pair.p.store().data().get(b"k"), None);
}

#[test]
fn reads_need_the_backup_only_once_it_is_in_sync() {
    let mut pair = Pair::new(2);
    pair.write(put(1, 1, "k", "v"));
    assert!(matches!(
        pair.write(get("k")),
        Submit::Reply(Reply::Ok(Some(_)))
    ));
    pair.transfer();
    assert!(pair.p.ping(pair.now).backup_synced);
    let Submit::Wait { index, .. } = pair.write(get("k")) else {
        panic!("a read after sync waits for the backup");
    };
    assert!(pair.p.progress().confirmed < index);
    pair.pump();
    assert!(pair.p.progress().confirmed >= index);
}

#[test]
fn views_only_move_forward_and_idle_servers_drop_their_state() {
    let mut pair = Pair::new(2);
    pair.transfer();
    pair.write(put(1, 1, "k", "v"));
    pair.pump();
    let b = pair.b.me().clone();
    assert!(
        pair.b.on_view(view(1, &b, None), pair.now).is_empty(),
        "older views are ignored"
    );
    let epoch = pair.b.progress().epoch;
    let other = member("c", 3);
    pair.b.on_view(view(3, &other, None), pair.now);
    assert!(matches!(pair.b.role(), Role::Idle));
    assert_eq!(pair.b.store().data().len(), 0);
    assert!(pair.b.progress().epoch > epoch);
}

#[test]
fn a_promoted_backup_serves_from_the_transferred_state() {
    let mut pair = Pair::new(1);
    pair.transfer();
    pair.write(put(1, 1, "k", "v"));
    pair.pump();
    let b = pair.b.me().clone();
    pair.b.on_view(view(3, &b, None), pair.now);
    assert_eq!(
        reply_of(pair.b.on_request(get("k"), 0, pair.now, T0_WALL)),
        Reply::Ok(Some(b"v".to_vec()))
    );
    // The retry of a write the old primary applied gets the saved reply, not a second apply.
    assert_eq!(
        reply_of(pair.b.on_request(put(1, 1, "k", "v"), 0, pair.now, T0_WALL)),
        Reply::Ok(None)
    );
    assert_eq!(pair.b.index(), 2);
}

#[test]
fn a_request_sent_in_a_view_before_the_primary_last_became_primary_is_refused() {
    let mut pair = Pair::new(1);
    pair.transfer();
    // The primary since view 1 takes requests sent in view 1 or 2 (or unstamped).
    for sent_in in [0, 1, 2] {
        let put = put(1, 1 + sent_in, "k", "v");
        let submitted = pair.p.on_request(put, sent_in, pair.now, T0_WALL);
        assert!(
            matches!(submitted, Submit::Wait { .. }),
            "sent in {sent_in}: {submitted:?}"
        );
    }
    pair.pump();
    // The backup, made primary in view 3 and kept primary in view 4, refuses what was sent
    // to it as primary of view 2 or before: it was not then, and may have refused a request
    // sent with it.
    let b = pair.b.me().clone();
    pair.b.on_view(view(3, &b, None), pair.now);
    pair.b.on_view(view(4, &b, None), pair.now);
    for sent_in in [1, 2] {
        assert_eq!(
            reply_of(
                pair.b
                    .on_request(put(2, 1, "k", "w"), sent_in, pair.now, T0_WALL)
            ),
            Reply::Err(KvError::WrongServer { view: 4 }),
            "sent in {sent_in}"
        );
    }
    for (seq, sent_in) in [(1, 3), (2, 4), (3, 5), (4, 0)] {
        let submitted = pair
            .b
            .on_request(put(2, seq, "k", "w"), sent_in, pair.now, T0_WALL);
        assert_eq!(reply_of(submitted), Reply::Ok(None), "sent in {sent_in}");
    }
    assert_eq!(
        pair.b.index(),
        3 + 4,
        "the refused requests were not applied"
    );
}

#[test]
fn a_server_follows_only_the_cluster_that_answered_it_first() {
    let me = member("s", 1);
    let now = Instant::now();
    let mut s = Replica::new(me.clone(), settings(1));
    assert_eq!(s.ping(now).cluster, 0);
    s.on_ping_reply(7, view(1, &me, None), now, now);
    assert_eq!((s.cluster(), s.view().num), (7, 1));
    let ping = s.ping(now);
    assert_eq!((ping.cluster, ping.holds_state), (7, true));
    // Monitors of another cluster answering with a newer view are not followed.
    let other = member("o", 9);
    assert!(s
        .on_ping_reply(8, view(5, &other, None), now, now)
        .is_empty());
    assert_eq!((s.cluster(), s.view().num), (7, 1));
}

#[test]
fn a_foreign_refusal_resets_a_server_without_state_and_spares_one_holding_it() {
    let mut pair = Pair::new(2);
    pair.p
        .on_ping_reply(7, pair.view.clone(), pair.now, pair.now);
    pair.b
        .on_ping_reply(7, pair.view.clone(), pair.now, pair.now);
    assert!(matches!(
        pair.write(put(1, 1, "k", "v")),
        Submit::Wait { .. }
    ));
    // The backup has not installed the state: it holds nothing, and joins the other cluster.
    pair.b.on_foreign(8);
    assert_eq!((pair.b.cluster(), pair.b.view().num), (0, 0));
    assert!(matches!(pair.b.role(), Role::Idle));
    // The primary holds the state: it keeps it, and its cluster, for an operator.
    pair.p.on_foreign(8);
    assert_eq!((pair.p.cluster(), pair.p.view().num), (7, 2));
    assert_eq!(pair.p.store().data().get(b"k"), Some(&b"v"[..]));
}

#[test]
fn a_recovered_view_keeps_the_state_a_server_holds_or_starts_one_empty() {
    let mut pair = Pair::new(1);
    pair.transfer();
    assert!(matches!(
        pair.write(put(1, 1, "k", "v")),
        Submit::Wait { .. }
    ));
    pair.pump();
    let (pm, bm) = (pair.p.me().clone(), pair.b.me().clone());
    // The backup installed the state: made primary by a recovery, it serves it.
    let mut recovered = view(3, &bm, None);
    recovered.recovered = true;
    recovered.acked = false;
    pair.b.on_view(recovered, pair.now);
    let read = reply_of(pair.b.on_request(get("k"), 0, pair.now, T0_WALL));
    assert_eq!(read, Reply::Ok(Some(b"v".to_vec())));
    // An idle server made primary by a recovery starts the service empty and serves.
    let mut idle = Replica::new(member("i", 5), settings(1));
    idle.on_view(view(2, &pm, Some(&bm)), pair.now);
    let mut empty = view(3, &member("i", 5), None);
    empty.recovered = true;
    idle.on_view(empty, pair.now);
    let read = reply_of(idle.on_request(get("k"), 0, pair.now, T0_WALL));
    assert_eq!(read, Reply::Ok(None));
    // Without the recovery mark, a server holding no state never serves as primary.
    let mut stranger = Replica::new(member("x", 6), settings(1));
    stranger.on_view(view(3, &member("x", 6), None), pair.now);
    let refused = reply_of(stranger.on_request(get("k"), 0, pair.now, T0_WALL));
    assert!(
        matches!(refused, Reply::Err(KvError::WrongServer { .. })),
        "{refused:?}"
    );
}

/// A pair whose backup is in sync and holds `k = v`.
fn synced_pair(settings_read_lease: bool) -> Pair {
    let mut pair = Pair::new(2);
    pair.p.settings.read_lease = settings_read_lease;
    pair.transfer();
    assert!(matches!(
        pair.write(put(1, 1, "k", "v")),
        Submit::Wait { .. }
    ));
    pair.pump();
    pair
}

fn get_at(replica: &mut Replica, at: Instant) -> Submit {
    replica.on_request(get("k"), 0, at, T0_WALL)
}

#[test]
fn under_a_read_lease_the_primary_answers_reads_alone_until_it_runs_out() {
    let mut pair = synced_pair(true);
    let lease = pair.p.settings().timings.read_lease();
    assert_eq!(lease, Duration::from_millis(400));
    // Without a ping reply there is no lease: the read enters the stream.
    let index = pair.p.index();
    assert!(
        matches!(get_at(&mut pair.p, pair.now), Submit::Wait { index: i, .. } if i == index + 1)
    );
    pair.pump();
    // The ping was sent at `now` and answered 300 ms later: the lease still counts from `now`.
    let sent = pair.now;
    let answered = sent + Duration::from_millis(300);
    pair.p.on_ping_reply(7, pair.view.clone(), sent, answered);
    let index = pair.p.index();
    let just_in = sent + lease - Duration::from_millis(1);
    assert_eq!(
        get_at(&mut pair.p, just_in),
        Submit::Reply(Reply::Ok(Some(b"v".to_vec())))
    );
    assert_eq!(pair.p.index(), index, "a lease read is not an entry");
    assert!(matches!(
        get_at(&mut pair.p, sent + lease),
        Submit::Wait { index: i, .. } if i == index + 1
    ));
}

#[test]
fn a_lease_read_waits_until_what_it_saw_is_confirmed() {
    let mut pair = synced_pair(true);
    pair.p
        .on_ping_reply(7, pair.view.clone(), pair.now, pair.now);
    let Submit::Wait { index, .. } = pair.write(put(1, 2, "k", "w")) else {
        panic!("a write waits for its copy");
    };
    // The read sees the write, so it may not be answered before the write is confirmed.
    assert_eq!(
        get_at(&mut pair.p, pair.now),
        Submit::Wait {
            index,
            epoch: pair.p.progress().epoch,
            reply: Reply::Ok(Some(b"w".to_vec())),
        }
    );
    assert_eq!(pair.p.index(), index);
    pair.pump();
    assert!(pair.p.progress().confirmed >= index);
    assert_eq!(
        get_at(&mut pair.p, pair.now),
        Submit::Reply(Reply::Ok(Some(b"w".to_vec())))
    );
}

#[test]
fn a_lease_read_waits_only_for_unconfirmed_writes_of_the_keys_it_reads() {
    let mut pair = synced_pair(true);
    pair.p
        .on_ping_reply(7, pair.view.clone(), pair.now, pair.now);
    pair.write(put(1, 2, "other", "w"));
    let epoch = pair.p.progress().epoch;
    // "k" has no write in flight: what the read sees cannot be lost, so it answers at once.
    assert_eq!(
        get_at(&mut pair.p, pair.now),
        Submit::Reply(Reply::Ok(Some(b"v".to_vec())))
    );
    let Submit::Wait { index, .. } = pair.write(put(1, 3, "k", "w")) else {
        panic!("a write waits for its copy");
    };
    pair.write(put(1, 4, "other", "x"));
    // Now it waits for the write to "k", not for the later one to "other".
    assert_eq!(
        get_at(&mut pair.p, pair.now),
        Submit::Wait {
            index,
            epoch,
            reply: Reply::Ok(Some(b"w".to_vec())),
        }
    );
    assert!(index < pair.p.index());
}

#[test]
fn with_leases_off_or_no_lease_granted_every_read_enters_the_stream() {
    let mut off = synced_pair(false);
    off.p.on_ping_reply(7, off.view.clone(), off.now, off.now);
    let index = off.p.index();
    assert!(matches!(get_at(&mut off.p, off.now), Submit::Wait { index: i, .. } if i == index + 1));
    // A reply with an older view naming us grants nothing.
    let mut old = synced_pair(true);
    let pm = old.p.me().clone();
    old.p.on_ping_reply(7, view(1, &pm, None), old.now, old.now);
    let index = old.p.index();
    assert!(matches!(get_at(&mut old.p, old.now), Submit::Wait { index: i, .. } if i == index + 1));
    // A reply making someone else primary ends our service, lease or not.
    let mut deposed = synced_pair(true);
    deposed
        .p
        .on_ping_reply(7, deposed.view.clone(), deposed.now, deposed.now);
    let bm = deposed.b.me().clone();
    deposed
        .p
        .on_ping_reply(7, view(3, &bm, None), deposed.now, deposed.now);
    assert_eq!(
        get_at(&mut deposed.p, deposed.now),
        Submit::Reply(Reply::Err(KvError::WrongServer { view: 3 }))
    );
}

#[test]
fn stale_reads_come_from_any_replica_holding_the_state() {
    let mut pair = Pair::new(2);
    let op = Op::Get { key: b"k".to_vec() };
    // A backup that has not installed the state holds nothing to answer from.
    assert_eq!(
        pair.b.read_stale(&op, pair.now),
        Reply::Err(KvError::WrongServer { view: 2 })
    );
    pair.transfer();
    pair.write(put(1, 1, "k", "v"));
    pair.pump();
    pair.write(put(1, 2, "k", "w"));
    // The backup lags by the write not yet forwarded; the primary shows it unconfirmed.
    assert_eq!(
        pair.b.read_stale(&op, pair.now),
        Reply::Ok(Some(b"v".to_vec()))
    );
    assert_eq!(
        pair.p.read_stale(&op, pair.now),
        Reply::Ok(Some(b"w".to_vec()))
    );
    let index = pair.p.index();
    pair.p.read_stale(&op, pair.now);
    assert_eq!(pair.p.index(), index, "a stale read is not an entry");
    let mut idle = Replica::new(member("i", 3), settings(2));
    idle.on_view(pair.view.clone(), pair.now);
    assert_eq!(
        idle.read_stale(&op, pair.now),
        Reply::Err(KvError::WrongServer { view: 2 })
    );
}
