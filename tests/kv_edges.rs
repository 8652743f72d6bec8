//! The kv service's edges: bad input, limits, at-most-once on the wire, fencing of servers
//! that are not the backup, and state transfer racing with writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use viewkv::client::ClientError;
use viewkv::kv::api::{
    Entry, Forward, KvError, Op, Reply, Request, Sent, StreamReply, TransferChunk, FORWARD,
    REQUEST, TRANSFER,
};
use viewkv::kv::Limits;
use viewkv::net::{encode, RpcClient, RpcError};
use viewkv::testkit::{self, Cluster, ClusterOptions};
use viewkv::view::{Member, View};

const DEADLINE: Duration = Duration::from_secs(30);

/// A client deadline 30 s from now (wall clock, ms).
fn far() -> u64 {
    viewkv::kv::wall_ms() + 30_000
}

fn ready(v: &View) -> bool {
    v.primary.is_some() && v.acked && v.backup.is_some() && v.backup_ready
}

/// Wait until the single server started so far is an acknowledged primary.
async fn lone_primary(cluster: &Cluster) {
    cluster
        .wait_view("a lone primary", DEADLINE, |v| {
            v.acked && v.primary.is_some()
        })
        .await;
}

/// A cluster whose kv servers need `min_copies` copies of a write (1: a lone primary
/// acknowledges, as in the seeds).
async fn cluster_with(servers: usize, limits: Limits, min_copies: u32) -> (Cluster, Vec<String>) {
    testkit::init_tracing();
    let mut options = ClusterOptions::fast(testkit::seed());
    options.limits = limits;
    options.min_copies = min_copies;
    let mut cluster = Cluster::start(options).await;
    let mut addrs = Vec::new();
    for _ in 0..servers {
        addrs.push(cluster.start_server().await);
    }
    (cluster, addrs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_a_4xx_and_the_server_keeps_serving() {
    let (mut cluster, _) = cluster_with(2, Limits::default(), 2).await;
    let view = cluster.wait_view("a ready backup", DEADLINE, ready).await;
    let primary = view.primary.expect("a primary").addr;
    let rpc = RpcClient::new("fuzzer", None);
    let valid = encode(&Sent {
        view: view.num,
        request: Request {
            client: 1,
            seq: 1,
            deadline_ms: far(),
            op: Op::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
        },
    });
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (REQUEST, Vec::new(), 400),
        (REQUEST, valid[..valid.len() - 1].to_vec(), 400),
        (REQUEST, [valid.clone(), vec![7]].concat(), 400),
        (REQUEST, vec![0xff; 100], 400),
        (FORWARD, vec![3; 9], 400),
        ("/kv/transfer", vec![1], 400),
        ("/kv/nothing", Vec::new(), 404),
    ];
    for (path, body, want) in cases {
        match rpc
            .call_raw(&primary, path, body, Duration::from_secs(5))
            .await
        {
            Err(RpcError::Status {
                status, message, ..
            }) => {
                assert_eq!(status, want, "{path}: {message}");
                assert!(!message.is_empty());
            }
            other => panic!("{path}: expected HTTP {want}, got {other:?}"),
        }
    }
    // Oversized bodies are refused before they are read in full.
    let huge = vec![0u8; viewkv::net::MAX_MESSAGE + 1];
    let reply = rpc
        .call_raw(&primary, REQUEST, huge, Duration::from_secs(30))
        .await;
    assert!(
        matches!(
            reply,
            Err(RpcError::Status { status: 413, .. }) | Err(RpcError::Broken { .. })
        ),
        "{reply:?}"
    );
    let mut ck = cluster.client();
    ck.put(b"still", b"here")
        .await
        .expect("the server still serves");
    assert_eq!(ck.get(b"still").await.expect("get"), Some(b"here".to_vec()));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_over_the_limit_are_refused_with_a_clear_error() {
    let limits = Limits {
        max_value: 1000,
        ..Limits::default()
    };
    let (mut cluster, _) = cluster_with(2, limits, 2).await;
    cluster.wait_view("a ready backup", DEADLINE, ready).await;
    let mut ck = cluster.client();
    let err = ck
        .put(b"k", &[b'x'; 1001])
        .await
        .expect_err("over the limit");
    assert!(
        matches!(
            &err,
            ClientError::Refused(KvError::TooLarge {
                size: 1001,
                limit: 1000,
                ..
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("over the limit"), "{err}");
    ck.put(b"k", &[b'x'; 600]).await.expect("under the limit");
    let err = ck
        .append(b"k", &[b'y'; 600])
        .await
        .expect_err("the result would be over");
    assert!(
        matches!(err, ClientError::Refused(KvError::TooLarge { .. })),
        "{err}"
    );
    assert_eq!(ck.get(b"k").await.expect("get").map(|v| v.len()), Some(600));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_request_is_answered_from_the_duplicate_table() {
    let (cluster, _) = cluster_with(2, Limits::default(), 2).await;
    let view = cluster.wait_view("a ready backup", DEADLINE, ready).await;
    let primary = view.primary.expect("a primary").addr;
    let rpc = RpcClient::new("repeater", None);
    let request = |seq, value: &str| Request {
        client: 99,
        seq,
        deadline_ms: far(),
        op: Op::PutHash {
            key: b"h".to_vec(),
            value: value.as_bytes().to_vec(),
        },
    };
    let send = |request: Request| {
        let rpc = rpc.clone();
        let primary = primary.clone();
        async move {
            let sent = Sent::unstamped(request);
            rpc.call::<Sent, Reply>(&primary, REQUEST, &sent, Duration::from_secs(5))
                .await
                .expect("an answer")
        }
    };
    assert_eq!(send(request(1, "0")).await, Reply::Ok(None));
    // The same request again: the same answer, and the hash is not taken twice.
    assert_eq!(send(request(1, "0")).await, Reply::Ok(None));
    assert_eq!(
        send(request(2, "1")).await,
        Reply::Ok(Some(b"890022063".to_vec()))
    );
    assert_eq!(
        send(request(2, "1")).await,
        Reply::Ok(Some(b"890022063".to_vec()))
    );
    let stale = send(request(1, "0")).await;
    assert!(
        matches!(stale, Reply::Err(KvError::Stale { .. })),
        "{stale:?}"
    );
    let get = Request {
        client: 100,
        seq: 1,
        deadline_ms: far(),
        op: Op::Get { key: b"h".to_vec() },
    };
    assert_eq!(send(get).await, Reply::Ok(Some(b"78513644".to_vec())));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_refuse_forwards_not_from_their_views_primary() {
    let (cluster, addrs) = cluster_with(3, Limits::default(), 2).await;
    let view = cluster.wait_view("a ready backup", DEADLINE, ready).await;
    let backup = view.backup.clone().expect("a backup");
    let idle = addrs
        .iter()
        .find(|a| !view.has_member(a))
        .expect("an idle server")
        .clone();
    let rpc = RpcClient::new("impostor", None);
    let forward = |view_num, primary: Member| Forward {
        view: view_num,
        primary,
        entries: vec![Entry {
            index: 1_000_000,
            at_ms: 0,
            request: Request {
                client: 5,
                seq: 1,
                deadline_ms: far(),
                op: Op::Put {
                    key: b"x".to_vec(),
                    value: b"evil".to_vec(),
                },
            },
        }],
    };
    let impostor = Member {
        id: idle.clone(),
        addr: idle.clone(),
        incarnation: 7,
    };
    let send = |to: String, message: Forward| {
        let rpc = rpc.clone();
        async move {
            rpc.call::<Forward, StreamReply>(&to, FORWARD, &message, Duration::from_secs(5))
                .await
                .expect("an answer")
        }
    };
    // To the backup, from someone who is not the primary.
    let reply = send(backup.addr.clone(), forward(view.num, impostor.clone())).await;
    assert!(matches!(reply, StreamReply::Refused { .. }), "{reply:?}");
    // To the backup, for an old view.
    let primary = view.primary.clone().expect("a primary");
    let reply = send(backup.addr.clone(), forward(view.num - 1, primary.clone())).await;
    assert!(matches!(reply, StreamReply::Refused { .. }), "{reply:?}");
    // To an idle (never initialized) server that knows the view, even from the real primary.
    testkit::wait_for("the idle server to learn the view", DEADLINE, || async {
        let status = cluster.server_status(&idle).await?;
        (status["view"]["num"] == view.num).then_some(())
    })
    .await;
    let reply = send(idle.clone(), forward(view.num, primary)).await;
    assert!(matches!(reply, StreamReply::Refused { .. }), "{reply:?}");
    let status = cluster.server_status(&idle).await.expect("status");
    assert_eq!(status["keys"], 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_joining_under_load_gets_every_write_exactly_once() {
    let (mut cluster, addrs) = cluster_with(1, Limits::default(), 2).await;
    let first = addrs[0].clone();
    lone_primary(&cluster).await;
    let done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|i| {
            let mut ck = cluster.client();
            let done = done.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while !done.load(Ordering::Relaxed) {
                    ck.append(b"log", format!("<{i}.{n}>").as_bytes())
                        .await
                        .expect("append");
                    n += 1;
                }
                n
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A backup joins while the appends go on: the transfer races with them.
    let second = cluster.start_server().await;
    cluster
        .wait_view("the new backup ready", DEADLINE, ready)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    done.store(true, Ordering::Relaxed);
    let mut counts = Vec::new();
    for writer in writers {
        counts.push(writer.await.expect("a writer"));
    }
    // Only the backup's copy is left once the primary is gone.
    cluster.crash_server(&first).await;
    cluster
        .wait_view("the backup promoted", DEADLINE, |v| {
            v.primary.as_ref().is_some_and(|p| p.id == second) && v.acked
        })
        .await;
    let mut ck = cluster.client();
    let log =
        String::from_utf8(ck.get(b"log").await.expect("get").unwrap_or_default()).expect("ASCII");
    for (i, count) in counts.iter().enumerate() {
        let mut last = 0;
        for n in 0..*count {
            let token = format!("<{i}.{n}>");
            let at: Vec<usize> = log.match_indices(&token).map(|(at, _)| at).collect();
            assert_eq!(at.len(), 1, "{token} appears {} times", at.len());
            assert!(n == 0 || at[0] > last, "{token} out of order");
            last = at[0];
        }
    }
    assert_eq!(log.matches('<').count() as u64, counts.iter().sum::<u64>());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_that_dies_mid_transfer_is_replaced() {
    let (mut cluster, addrs) = cluster_with(1, Limits::default(), 1).await;
    let first = addrs[0].clone();
    lone_primary(&cluster).await;
    let mut ck = cluster.client();
    ck.put(b"k", b"v").await.expect("put");
    // The primary cannot reach the next server: its transfer never completes.
    let doomed = cluster.start_server().await;
    cluster.faults().cut(&first, &doomed);
    let syncing = cluster
        .wait_view("the doomed backup in the view", DEADLINE, |v| {
            v.backup.as_ref().is_some_and(|b| b.id == doomed) && v.acked
        })
        .await;
    assert!(
        !syncing.backup_ready,
        "a backup that never got the state is marked ready"
    );
    let third = cluster.start_server().await;
    cluster.crash_server(&doomed).await;
    let view = cluster
        .wait_view("the replacement backup ready", DEADLINE, |v| {
            ready(v) && v.backup.as_ref().is_some_and(|b| b.id == third)
        })
        .await;
    assert!(view.num > syncing.num);
    ck.put(b"k2", b"v2").await.expect("the service goes on");
    cluster.crash_server(&first).await;
    cluster
        .wait_view("the replacement promoted", DEADLINE, |v| {
            v.primary.as_ref().is_some_and(|p| p.id == third) && v.acked
        })
        .await;
    assert_eq!(ck.get(b"k").await.expect("get"), Some(b"v".to_vec()));
    assert_eq!(ck.get(b"k2").await.expect("get"), Some(b"v2".to_vec()));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_the_primary_cannot_reach_is_replaced() {
    let (mut cluster, addrs) = cluster_with(1, Limits::default(), 1).await;
    let first = addrs[0].clone();
    lone_primary(&cluster).await;
    let mut ck = cluster.client();
    ck.put(b"k", b"v").await.expect("put");
    // The next server stays alive and keeps pinging, but the primary can never reach it: the
    // primary reports the failure and the monitors pick another backup.
    let unreachable = cluster.start_server().await;
    cluster.faults().cut(&first, &unreachable);
    cluster
        .wait_view("the unreachable backup in the view", DEADLINE, |v| {
            v.backup.as_ref().is_some_and(|b| b.id == unreachable) && v.acked
        })
        .await;
    let third = cluster.start_server().await;
    cluster
        .wait_view("the reachable server as ready backup", DEADLINE, |v| {
            ready(v) && v.backup.as_ref().is_some_and(|b| b.id == third)
        })
        .await;
    ck.put(b"k2", b"v2").await.expect("the service goes on");
    assert_eq!(ck.get(b"k").await.expect("get"), Some(b"v".to_vec()));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_transfer_chunk_cannot_roll_the_backup_back() {
    let (mut cluster, _) = cluster_with(1, Limits::default(), 2).await;
    lone_primary(&cluster).await;
    cluster.start_server().await;
    let view = cluster.wait_view("a ready backup", DEADLINE, ready).await;
    let primary = view.primary.clone().expect("a primary");
    let backup = view.backup.clone().expect("a backup");
    let at_sync = cluster.server_status(&backup.addr).await.expect("status");
    // The transfer of this view as it looked at the start (an empty state): a request whose
    // first attempt timed out at the primary but still sits in the backup's socket.
    let late = TransferChunk {
        view: view.num,
        primary: primary.clone(),
        index: at_sync["index"].as_u64().expect("an index"),
        attempt: 1,
        chunk: 0,
        last: true,
        records: Vec::new(),
        deadlines: Vec::new(),
        sessions: Vec::new(),
        clock_ms: 0,
        limits: Limits::default(),
        total_keys: 0,
    };
    let mut ck = cluster.client();
    for i in 0..10 {
        ck.put(format!("k{i}").as_bytes(), b"acknowledged")
            .await
            .expect("put");
    }
    let before = cluster.server_status(&backup.addr).await.expect("status");
    let rpc = RpcClient::new("late-packet", None);
    let reply: StreamReply = rpc
        .call(&backup.addr, TRANSFER, &late, Duration::from_secs(5))
        .await
        .expect("an answer");
    assert!(matches!(reply, StreamReply::Retry { .. }), "{reply:?}");
    let after = cluster.server_status(&backup.addr).await.expect("status");
    assert_eq!(
        after["index"], before["index"],
        "the backup went back: {after}"
    );
    assert_eq!(after["keys"], 10);
    cluster.crash_server(&primary.addr).await;
    cluster
        .wait_view("the backup promoted", DEADLINE, |v| {
            v.primary.as_ref().is_some_and(|p| p.id == backup.id) && v.acked
        })
        .await;
    assert_eq!(
        ck.get(b"k0").await.expect("get"),
        Some(b"acknowledged".to_vec())
    );
    cluster.shutdown().await;
}
