//! MIT 6.824's pbservice tests, ported: primary/backup kv servers under crashes, partitions and
//! an unreliable network, on the in-process harness. Plus monitor-leader loss under load and a
//! restarted primary coming back as backup.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use viewkv::client::ClientError;
use viewkv::kv::api::{KvError, Op, Reply, Request, Sent, REQUEST};
use viewkv::kv::fnv1a32;
use viewkv::testkit::{self, wait_for, Cluster, ClusterOptions};
use viewkv::view::View;
use viewkv::Client;

const DEADLINE: Duration = Duration::from_secs(30);

fn primary(view: &View) -> Option<&str> {
    view.primary.as_ref().map(|m| m.id.as_str())
}

fn backup(view: &View) -> Option<&str> {
    view.backup.as_ref().map(|m| m.id.as_str())
}

/// The view once it is (p, b), acknowledged, with the backup holding the state.
async fn settled(cluster: &Cluster, p: &str, b: Option<&str>) -> View {
    cluster
        .wait_view(&format!("view ({p}, {b:?}) settled"), DEADLINE, |v| {
            primary(v) == Some(p) && backup(v) == b && v.acked && (b.is_none() || v.backup_ready)
        })
        .await
}

/// The primary and backup of the first settled view, and the servers in neither role.
async fn roles(cluster: &Cluster, addrs: &[String]) -> (String, String, Vec<String>) {
    let view = settled_any(cluster).await;
    let (p, b) = (
        primary(&view).unwrap_or_default(),
        backup(&view).unwrap_or_default(),
    );
    let idle = addrs
        .iter()
        .filter(|a| *a != p && *a != b)
        .cloned()
        .collect();
    (p.to_string(), b.to_string(), idle)
}

/// Any settled view with a ready backup.
async fn settled_any(cluster: &Cluster) -> View {
    cluster
        .wait_view("a settled view with a ready backup", DEADLINE, |v| {
            v.primary.is_some() && v.acked && v.backup.is_some() && v.backup_ready
        })
        .await
}

async fn check(client: &mut Client, key: &str, want: &str) {
    let got = client.get(key.as_bytes()).await.expect("get");
    let shown = got
        .as_ref()
        .map(|g| String::from_utf8_lossy(g).into_owned());
    assert_eq!(
        got.as_deref(),
        Some(want.as_bytes()),
        "Get({key}) = {shown:?}"
    );
}

async fn put(client: &mut Client, key: &str, value: &str) {
    client
        .put(key.as_bytes(), value.as_bytes())
        .await
        .expect("put");
}

/// 6.824's pbservice tests assume the seeds' rule that a lone primary acknowledges writes
/// (`min_copies = 1`); `kv_edges` covers the default of 2.
async fn start(servers: usize) -> (Cluster, Vec<String>) {
    testkit::init_tracing();
    let mut options = ClusterOptions::fast(testkit::seed());
    if super::OVER_TLS {
        options = options.over_tls();
    }
    options.min_copies = 1;
    let mut cluster = Cluster::start(options).await;
    assert_eq!(
        cluster.refuses_plain_http().await,
        super::OVER_TLS,
        "the suite runs over TLS exactly when it says so"
    );
    let mut addrs = Vec::new();
    for _ in 0..servers {
        addrs.push(cluster.start_server().await);
    }
    (cluster, addrs)
}

/// Pings and view reads served by all monitors so far.
async fn monitor_requests(cluster: &Cluster) -> u64 {
    let mut total = 0;
    for id in 1..=3 {
        let status = cluster.monitor_status(id).await.expect("a monitor status");
        total += status["requests"].as_u64().expect("a request count");
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_fail() {
    let (mut cluster, _) = start(0).await;
    let mut ck = cluster.client();

    // Single primary, no backup.
    let s1 = cluster.start_server().await;
    settled(&cluster, &s1, None).await;
    put(&mut ck, "111", "v1").await;
    check(&mut ck, "111", "v1").await;
    put(&mut ck, "2", "v2").await;
    check(&mut ck, "2", "v2").await;
    put(&mut ck, "1", "v1a").await;
    check(&mut ck, "1", "v1a").await;

    // Add a backup.
    let s2 = cluster.start_server().await;
    settled(&cluster, &s1, Some(&s2)).await;
    put(&mut ck, "3", "33").await;
    check(&mut ck, "3", "33").await;
    put(&mut ck, "4", "44").await;
    check(&mut ck, "4", "44").await;

    // Count RPCs to the monitors: pings plus the client's view reads.
    let before = monitor_requests(&cluster).await;
    let started = std::time::Instant::now();
    for i in 0..100 {
        put(&mut ck, "xk", &i.to_string()).await;
    }
    let elapsed = started.elapsed();
    let used = monitor_requests(&cluster).await - before;
    let allowed = 2 * (elapsed.as_millis() / 50) as u64 + 20;
    println!("100 puts in {elapsed:?}: {used} monitor requests (allowed {allowed})");
    assert!(
        used <= allowed,
        "{used} monitor requests for 100 puts (allowed {allowed})"
    );
    check(&mut ck, "xk", "99").await;

    // Primary failure: the backup takes over with the data.
    cluster.crash_server(&s1).await;
    settled(&cluster, &s2, None).await;
    check(&mut ck, "1", "v1a").await;
    check(&mut ck, "3", "33").await;
    put(&mut ck, "4", "444").await;
    check(&mut ck, "4", "444").await;

    // Kill the last server: a new one alone must not serve.
    cluster.crash_server(&s2).await;
    let s3 = cluster.start_server().await;
    let mut impatient = cluster.client_with(viewkv::client::ClientOptions {
        deadline: Duration::from_millis(1500),
        ..cluster.client_options()
    });
    let got = impatient.get(b"1").await;
    assert!(
        matches!(got, Err(ClientError::ReadFailed { .. })),
        "a fresh server alone answered: {got:?}"
    );
    let view = cluster.view().await;
    assert_ne!(
        primary(&view),
        Some(s3.as_str()),
        "a fresh server became primary: {view:?}"
    );
    cluster.shutdown().await;
}

/// PutHash chain and appends over an unreliable network: every operation applied exactly once.
async fn at_most_once(unreliable: bool) {
    let (mut cluster, _) = start(2).await;
    settled_any(&cluster).await;
    cluster.set_unreliable(unreliable);
    let mut ck = cluster.client();
    let mut val = String::new();
    for i in 0..100 {
        let v = i.to_string();
        let previous = ck.put_hash(b"a", v.as_bytes()).await.expect("puthash");
        assert_eq!(
            previous.unwrap_or_default(),
            val.as_bytes(),
            "PutHash {i} returned a wrong previous value"
        );
        val = fnv1a32(format!("{val}{v}").as_bytes()).to_string();
    }
    let mut expected = String::new();
    for i in 0..100 {
        let token = format!("x {i} y");
        ck.append(b"b", token.as_bytes()).await.expect("append");
        expected.push_str(&token);
    }
    cluster.set_unreliable(false);
    check(&mut ck, "a", &val).await;
    check(&mut ck, "b", &expected).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_once_unreliable() {
    at_most_once(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_put() {
    let (mut cluster, addrs) = start(3).await;
    let (s1, s2, idle) = roles(&cluster, &addrs).await;
    let (s1, s2, s3) = (&s1, &s2, &idle[0]);
    let mut ck = cluster.client();
    put(&mut ck, "a", "aa").await;
    put(&mut ck, "b", "bb").await;
    put(&mut ck, "c", "cc").await;
    check(&mut ck, "a", "aa").await;

    // Kill the backup, then put at once.
    cluster.crash_server(s2).await;
    put(&mut ck, "a", "aaa").await;
    check(&mut ck, "a", "aaa").await;

    // Kill the primary once the idle server is a ready backup, then put at once.
    settled(&cluster, s1, Some(s3)).await;
    cluster.crash_server(s1).await;
    put(&mut ck, "b", "bbb").await;
    check(&mut ck, "b", "bbb").await;
    check(&mut ck, "a", "aaa").await;
    check(&mut ck, "c", "cc").await;
    cluster.shutdown().await;
}

/// Clients writing random values to a few keys until `done`.
fn writers(
    cluster: &mut Cluster,
    n: usize,
    keys: u64,
    seed: u64,
    done: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|i| {
            let mut ck = cluster.client();
            let done = done.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed + i as u64);
                while !done.load(Ordering::Relaxed) {
                    let key = (rng.gen::<u64>() % keys).to_string();
                    let value = rng.gen::<u64>().to_string();
                    ck.put(key.as_bytes(), value.as_bytes()).await.expect("put");
                }
            })
        })
        .collect()
}

async fn concurrent_same_run(unreliable: bool) {
    let seed = testkit::seed();
    let (mut cluster, addrs) = start(2).await;
    let (p, b, _) = roles(&cluster, &addrs).await;
    cluster.set_unreliable(unreliable);
    let done = Arc::new(AtomicBool::new(false));
    let tasks = writers(&mut cluster, 3, 2, seed, &done);
    tokio::time::sleep(Duration::from_secs(3)).await;
    done.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a writer");
    }
    cluster.set_unreliable(false);
    let mut ck = cluster.client();
    let mut values = Vec::new();
    for key in ["0", "1"] {
        let value = ck.get(key.as_bytes()).await.expect("get");
        assert!(value.is_some(), "key {key} was never written");
        values.push(value);
    }
    // Kill the primary; the backup must have exactly the same values.
    cluster.crash_server(&p).await;
    settled(&cluster, &b, None).await;
    for (key, want) in ["0", "1"].iter().zip(values) {
        let got = ck
            .get(key.as_bytes())
            .await
            .expect("get from the old backup");
        assert_eq!(got, want, "key {key} differs on the backup");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_same() {
    concurrent_same_run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_same_unreliable() {
    concurrent_same_run(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_same_append() {
    let (mut cluster, addrs) = start(2).await;
    let (p, b, _) = roles(&cluster, &addrs).await;
    let done = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            let mut ck = cluster.client();
            let done = done.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while !done.load(Ordering::Relaxed) {
                    let key = (n % 2).to_string();
                    ck.append(key.as_bytes(), format!("x {i} {n} y").as_bytes())
                        .await
                        .expect("append");
                    n += 1;
                }
                n
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    done.store(true, Ordering::Relaxed);
    let mut counts = Vec::new();
    for task in tasks {
        counts.push(task.await.expect("an appender"));
    }
    let mut ck = cluster.client();
    let mut before = Vec::new();
    for key in ["0", "1"] {
        before.push(
            ck.get(key.as_bytes())
                .await
                .expect("get")
                .unwrap_or_default(),
        );
    }
    // Every append exactly once, in each client's order.
    let all = String::from_utf8_lossy(&before.concat()).into_owned();
    for (i, count) in counts.iter().enumerate() {
        for (key, value) in before.iter().enumerate() {
            let text = String::from_utf8_lossy(value).into_owned();
            let mut last = None;
            for n in (key..*count).step_by(2) {
                let token = format!("x {i} {n} y");
                let found: Vec<_> = text.match_indices(&token).collect();
                assert_eq!(found.len(), 1, "{token} appears {} times", found.len());
                let at = found[0].0;
                assert!(last.is_none_or(|l| l < at), "{token} is out of order");
                last = Some(at);
            }
        }
    }
    assert_eq!(all.matches(" y").count(), counts.iter().sum::<usize>());
    cluster.crash_server(&p).await;
    settled(&cluster, &b, None).await;
    for (key, want) in ["0", "1"].iter().zip(before) {
        let got = ck
            .get(key.as_bytes())
            .await
            .expect("get")
            .unwrap_or_default();
        assert_eq!(got, want, "key {key} differs on the backup");
    }
    cluster.shutdown().await;
}

/// Two clients each checking their own keys while servers crash and restart.
async fn repeated_crash(unreliable: bool) {
    let seed = testkit::seed();
    let (mut cluster, addrs) = start(3).await;
    settled_any(&cluster).await;
    cluster.set_unreliable(unreliable);
    let done = Arc::new(AtomicBool::new(false));
    let checkers: Vec<_> = (0..2u64)
        .map(|i| {
            let mut ck = cluster.client();
            let done = done.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed ^ (i + 1));
                let mut data: HashMap<String, String> = HashMap::new();
                let mut ops = 0;
                while !done.load(Ordering::Relaxed) {
                    let key = format!("{}", i * 1_000_000 + rng.gen_range(0..10));
                    if let Some(wanted) = data.get(&key) {
                        let got = ck.get(key.as_bytes()).await.expect("get");
                        assert_eq!(got.as_deref(), Some(wanted.as_bytes()), "key {key}");
                    }
                    let value = rng.gen::<u64>().to_string();
                    ck.put(key.as_bytes(), value.as_bytes()).await.expect("put");
                    data.insert(key, value);
                    ops += 2;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                ops
            })
        })
        .collect();
    // The nemesis: crash a random server, wait until the view no longer needs it, let the
    // clients run, restart it, wait until the view is settled again. It never kills a primary
    // whose backup is not ready yet: the design cannot survive that (design.md rule 7).
    let mut rng = StdRng::seed_from_u64(seed);
    let pause = Duration::from_millis(300);
    for _ in 0..5 {
        let victim = addrs[rng.gen_range(0..addrs.len())].clone();
        cluster.crash_server(&victim).await;
        cluster
            .wait_view("a settled view without the victim", DEADLINE, |v| {
                v.acked && v.backup_ready && v.backup.is_some() && !v.has_member(&victim)
            })
            .await;
        tokio::time::sleep(pause).await;
        cluster.restart_server(&victim).await;
        settled_any(&cluster).await;
        tokio::time::sleep(pause).await;
    }
    done.store(true, Ordering::Relaxed);
    for checker in checkers {
        let ops = checker.await.expect("a checker");
        assert!(ops > 0);
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_crash_reliable() {
    repeated_crash(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_crash_unreliable() {
    repeated_crash(true).await;
}

/// Send one raw request straight to `addr` (as a client holding a stale view would).
async fn raw(cluster: &Cluster, addr: &str, op: Op) -> Result<Reply, viewkv::net::RpcError> {
    let rpc = cluster.rpc_client("stale-client");
    let request = Request {
        client: 424242,
        seq: rand::random::<u32>() as u64 + 1,
        deadline_ms: viewkv::kv::wall_ms() + 30_000,
        op,
    };
    let sent = Sent::unstamped(request);
    rpc.call(addr, REQUEST, &sent, Duration::from_secs(5)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition1_old_primary_cut_from_monitors_does_not_serve() {
    let (mut cluster, addrs) = start(3).await;
    let (s1, s2, _) = roles(&cluster, &addrs).await;
    let (s1, s2) = (&s1, &s2);
    let mut ck = cluster.client();
    put(&mut ck, "a", "1").await;
    // Cut s1 from the monitors, but not from s2 or the clients.
    cluster.partition(std::slice::from_ref(s1), &cluster.monitor_addrs());
    let view = cluster
        .wait_view("s2 promoted", DEADLINE, |v| primary(v) == Some(s2.as_str()))
        .await;
    assert!(view.num > 1);
    let mut ck2 = cluster.client();
    put(&mut ck2, "a", "111").await;
    // s1 still believes it is primary; s2 refuses its forward, so s1 must not answer the Get.
    let reply = raw(&cluster, s1, Op::Get { key: b"a".to_vec() }).await;
    assert!(
        matches!(
            reply,
            Ok(Reply::Err(
                KvError::WrongServer { .. } | KvError::Unavailable { .. }
            ))
        ),
        "the cut-off old primary served a Get: {reply:?}"
    );
    check(&mut ck, "a", "111").await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition2_partitioned_old_primary_does_not_complete_gets() {
    let (mut cluster, addrs) = start(3).await;
    let (s1, s2, _) = roles(&cluster, &addrs).await;
    let (s1, s2) = (&s1, &s2);
    let mut ck = cluster.client();
    put(&mut ck, "a", "1").await;
    // Cut s1 from the monitors and from the other kv servers; clients still reach it.
    let others: Vec<String> = cluster
        .monitor_addrs()
        .into_iter()
        .chain(addrs.iter().filter(|a| *a != s1).cloned())
        .collect();
    cluster.partition(std::slice::from_ref(s1), &others);
    cluster
        .wait_view("s2 promoted", DEADLINE, |v| {
            primary(v) == Some(s2.as_str()) && v.acked
        })
        .await;
    let mut ck2 = cluster.client();
    put(&mut ck2, "a", "111").await;
    let reply = raw(&cluster, s1, Op::Get { key: b"a".to_vec() }).await;
    assert!(
        !matches!(reply, Ok(Reply::Ok(_))),
        "the partitioned old primary completed a Get: {reply:?}"
    );
    // A client whose view still names s1 ends up at s2.
    check(&mut ck, "a", "111").await;
    cluster.heal();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_leader_crash_under_load_loses_nothing() {
    let seed = testkit::seed();
    let (mut cluster, _) = start(3).await;
    settled_any(&cluster).await;
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3u64)
        .map(|i| {
            let mut ck = cluster.client();
            let done = done.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed + i);
                let mut last: HashMap<String, String> = HashMap::new();
                while !done.load(Ordering::Relaxed) {
                    let key = format!("c{i}-{}", rng.gen_range(0..5));
                    let value = rng.gen::<u64>().to_string();
                    ck.put(key.as_bytes(), value.as_bytes())
                        .await
                        .expect("put failed");
                    let got = ck.get(key.as_bytes()).await.expect("get failed");
                    assert_eq!(
                        got.as_deref(),
                        Some(value.as_bytes()),
                        "lost write to {key}"
                    );
                    last.insert(key, value);
                }
                last
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leader = cluster.wait_leader(DEADLINE).await;
    cluster.crash_monitor(leader).await;
    cluster.wait_leader(DEADLINE).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.store(true, Ordering::Relaxed);
    let mut ck = cluster.client();
    for client in clients {
        for (key, value) in client.await.expect("a client") {
            check(&mut ck, &key, &value).await;
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_primary_comes_back_idle_and_empty_then_backs_up() {
    let (mut cluster, addrs) = start(2).await;
    let (s1, s2, _) = roles(&cluster, &addrs).await;
    let (s1, s2) = (&s1, &s2);
    let mut ck = cluster.client();
    for i in 0..20 {
        put(&mut ck, &format!("k{i}"), &format!("v{i}")).await;
    }
    cluster.crash_server(s1).await;
    settled(&cluster, s2, None).await;
    cluster.restart_server(s1).await;
    let status = wait_for("the restarted server to answer", DEADLINE, || async {
        cluster.server_status(s1).await
    })
    .await;
    assert_eq!(status["keys"], 0, "a restarted server kept data: {status}");
    settled(&cluster, s2, Some(s1)).await;
    let status = cluster.server_status(s1).await.expect("status");
    assert_eq!(status["role"], "backup");
    assert_eq!(
        status["keys"], 20,
        "the new backup lacks the state: {status}"
    );
    // And it can take over.
    cluster.crash_server(s2).await;
    settled(&cluster, s1, None).await;
    check(&mut ck, "k7", "v7").await;
    cluster.shutdown().await;
}
