//! TLS on every listener and every call: a whole cluster runs over mutual TLS through a
//! failover; a plain-HTTP client, a client without a certificate and one whose certificate
//! another CA signed are refused and change nothing; unusable TLS files are reported by name.

use std::path::Path;
use std::time::Duration;

use viewkv::kv::api::{Op, Request, Sent, REQUEST};
use viewkv::monitor::api::VIEW;
use viewkv::net::{RpcClient, RpcError, Secret, Tls, TlsError, TlsFiles};
use viewkv::testkit::{self, Cluster, ClusterOptions, TestCa};
use viewkv::Client;

const DEADLINE: Duration = Duration::from_secs(30);

/// A cluster of three monitors and three kv servers over mutual TLS with `ca`'s certificates
/// (and a secret, as a real deployment has both), with `k` = `v` stored.
async fn tls_cluster(ca: &TestCa) -> Cluster {
    let mut options = ClusterOptions::fast(testkit::seed());
    options.secret = Some(Secret::generate());
    options.tls = Some(ca.tls("node"));
    let mut cluster = Cluster::start(options).await;
    for _ in 0..3 {
        cluster.start_server().await;
    }
    cluster.wait_ready(DEADLINE).await;
    cluster
        .client()
        .put(b"k", b"v")
        .await
        .expect("a put over TLS");
    cluster
}

/// A client of `cluster` connecting with `tls` (plain if `None`) but proving its secret, so
/// that only the transport differs from the cluster's own clients.
fn outsider(cluster: &Cluster, name: &str, tls: Option<&Tls>) -> RpcClient {
    RpcClient::new(name, None)
        .with_secret(cluster.options().secret.clone())
        .with_tls(tls)
}

/// A put of `k` = `intruder` as one RPC to `addr`, through `rpc`.
async fn put_intruder(rpc: &RpcClient, addr: &str) -> Result<Vec<u8>, RpcError> {
    let put = Request {
        client: 99,
        seq: 1,
        deadline_ms: viewkv::kv::wall_ms() + 10_000,
        op: Op::Put {
            key: b"k".to_vec(),
            value: b"intruder".to_vec(),
        },
    };
    let sent = Sent::unstamped(put);
    rpc.call_raw(addr, REQUEST, viewkv::net::encode(&sent), DEADLINE)
        .await
}

/// Whether `reply` failed below HTTP: no listener answered the request at all.
fn refused_by_transport(reply: &Result<Vec<u8>, RpcError>) -> bool {
    matches!(
        reply,
        Err(RpcError::Unreachable { .. } | RpcError::Broken { .. })
    )
}

/// Every node of `cluster` refuses a request from `rpc` before HTTP: the primary's kv request
/// and every monitor's view read.
async fn every_node_refuses(cluster: &Cluster, rpc: &RpcClient, who: &str) {
    let view = cluster.view().await;
    let Some(primary) = view.primary else {
        panic!("no primary in {view:?}");
    };
    let reply = put_intruder(rpc, &primary.addr).await;
    assert!(
        refused_by_transport(&reply),
        "{who}: the primary {} answered {reply:?}",
        primary.addr
    );
    for addr in cluster.monitor_addrs() {
        let reply = rpc.call_raw(&addr, VIEW, Vec::new(), DEADLINE).await;
        assert!(
            refused_by_transport(&reply),
            "{who}: monitor {addr} answered {reply:?}"
        );
    }
}

/// `k` still holds `v`, read by a client of the cluster.
async fn unchanged(cluster: &mut Cluster) {
    assert_eq!(
        cluster.client().get(b"k").await.expect("a get over TLS"),
        Some(b"v".to_vec()),
        "a refused client changed the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_cluster_runs_over_mutual_tls_through_a_failover() {
    testkit::init_tracing();
    let ca = TestCa::new("cluster");
    let mut cluster = tls_cluster(&ca).await;
    // Every listener speaks only TLS, so everything below — pings, Raft, forwards, transfers,
    // client requests — went over it.
    let plain = outsider(&cluster, "plain", None);
    every_node_refuses(&cluster, &plain, "a plain client").await;

    let mut client = cluster.client();
    for i in 0..20 {
        let key = format!("key-{i}");
        client.put(key.as_bytes(), b"before").await.expect("a put");
    }
    let view = cluster.wait_ready(DEADLINE).await;
    let (Some(primary), Some(backup)) = (view.primary.clone(), view.backup.clone()) else {
        panic!("a ready view without both roles");
    };
    cluster.crash_server(&primary.addr).await;
    let after = cluster
        .wait_view("the backup promoted over TLS", DEADLINE, |v| {
            v.primary.as_ref().is_some_and(|p| p.id == backup.id) && v.acked
        })
        .await;
    assert!(after.num > view.num, "{after:?} after {view:?}");
    for i in 0..20 {
        let key = format!("key-{i}");
        assert_eq!(
            client
                .get(key.as_bytes())
                .await
                .expect("a get after failover"),
            Some(b"before".to_vec())
        );
        client
            .append(key.as_bytes(), b"+after")
            .await
            .expect("an append after failover");
    }
    cluster.wait_ready(DEADLINE).await;
    assert_eq!(
        client.get(b"key-7").await.expect("a get"),
        Some(b"before+after".to_vec())
    );
    every_node_refuses(&cluster, &plain, "a plain client after failover").await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_group_over_mutual_tls_replaces_a_crashed_leader_which_rejoins() {
    testkit::init_tracing();
    let ca = TestCa::new("cluster");
    let mut cluster = tls_cluster(&ca).await;
    let leader = cluster.wait_leader(DEADLINE).await;
    cluster.crash_monitor(leader).await;
    let next = cluster.wait_leader(DEADLINE).await;
    assert_ne!(next, leader, "the crashed monitor still leads");
    let mut client = cluster.client();
    client
        .put(b"k", b"under a new leader")
        .await
        .expect("a put");
    cluster.restart_monitor(leader).await;
    testkit::wait_for(
        "the restarted monitor to catch up over TLS",
        DEADLINE,
        || {
            let cluster = &cluster;
            async move {
                let restarted = cluster.monitor_status(leader).await?;
                let serving = cluster.monitor_status(next).await?;
                (restarted["last_applied"] == serving["last_applied"]).then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        client.get(b"k").await.expect("a get"),
        Some(b"under a new leader".to_vec())
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_against_a_tls_listener_is_refused_and_changes_nothing() {
    testkit::init_tracing();
    let ca = TestCa::new("cluster");
    let mut cluster = tls_cluster(&ca).await;
    let plain = outsider(&cluster, "plain", None);
    every_node_refuses(&cluster, &plain, "a plain client").await;
    let primary = cluster.view().await.primary.expect("a primary");
    let reply = put_intruder(&plain, &primary.addr).await;
    assert!(
        reply
            .as_ref()
            .is_err_and(|err| err.to_string().contains("a TLS listener?")),
        "a plain client is told TLS may be what it lacks: {reply:?}"
    );
    let mut library = Client::with_rpc(plain, cluster.monitor_addrs(), cluster.client_options());
    let refused = library.put(b"k", b"intruder").await;
    assert!(refused.is_err(), "a plain library client: {refused:?}");
    unchanged(&mut cluster).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_client_without_a_certificate_or_with_another_cas() {
    testkit::init_tracing();
    let ca = TestCa::new("cluster");
    let other = TestCa::new("other");
    let mut cluster = tls_cluster(&ca).await;

    let no_cert = Tls::load(&TlsFiles {
        ca: Some(ca.ca_file()),
        ..TlsFiles::default()
    })
    .expect("a CA alone loads");
    let rpc = outsider(&cluster, "no-cert", Some(&no_cert));
    every_node_refuses(&cluster, &rpc, "a client with no certificate").await;

    let foreign = TlsFiles {
        ca: Some(ca.ca_file()),
        ..other.issue("foreign")
    };
    let foreign = Tls::load(&foreign).expect("another CA's certificate loads");
    let rpc = outsider(&cluster, "foreign", Some(&foreign));
    every_node_refuses(&cluster, &rpc, "a client with another CA's certificate").await;

    // The other way round: a client that trusts only another CA refuses our nodes, and one
    // given no CA trusts only the public web roots, which did not sign them either.
    let distrustful = other.tls("distrustful");
    let rpc = outsider(&cluster, "distrustful", Some(&distrustful));
    every_node_refuses(&cluster, &rpc, "a client trusting another CA").await;
    let node = ca.issue("public-roots");
    let public_roots = Tls::load(&TlsFiles { ca: None, ..node }).expect("a cert and key load");
    let rpc = outsider(&cluster, "public-roots", Some(&public_roots));
    every_node_refuses(&cluster, &rpc, "a client trusting the public roots").await;

    // A client with a certificate our CA signed is served.
    let member = outsider(&cluster, "member", Some(&ca.tls("member")));
    let view = cluster.view().await;
    let Some(primary) = view.primary else {
        panic!("no primary in {view:?}");
    };
    let reply = put_intruder(&member, &primary.addr).await;
    assert!(
        reply.is_ok(),
        "a client with our CA's certificate: {reply:?}"
    );
    assert_eq!(
        cluster.client().get(b"k").await.expect("a get"),
        Some(b"intruder".to_vec()),
        "the served client's put was not applied"
    );
    cluster.shutdown().await;
}

/// The error loading `files`, which must fail.
fn load_error(files: &TlsFiles) -> TlsError {
    match Tls::load(files) {
        Ok(tls) => panic!("{files:?} loaded: {tls:?}"),
        Err(err) => err,
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("a test file");
    path
}

#[test]
fn unusable_tls_files_are_named_in_a_clear_error() {
    let ca = TestCa::new("cluster");
    let good = ca.issue("node");
    let dir = ca.dir();
    let shown = |path: &Option<std::path::PathBuf>| match path {
        Some(path) => path.display().to_string(),
        None => panic!("a path"),
    };

    let missing = dir.join("no-such-cert.pem");
    let err = load_error(&TlsFiles {
        cert: Some(missing.clone()),
        ..good.clone()
    });
    let text = err.to_string();
    assert!(
        text.contains(&missing.display().to_string()) && text.contains("cannot read"),
        "{text}"
    );

    let garbage = write(dir, "garbage.pem", "-----BEGIN CERTIFICATE-----\n!!!\n");
    let text = load_error(&TlsFiles {
        cert: Some(garbage.clone()),
        ..good.clone()
    })
    .to_string();
    assert!(
        text.contains(&garbage.display().to_string()) && text.contains("not valid PEM"),
        "{text}"
    );

    // A key where the certificate should be, and a certificate where the key should be.
    let text = load_error(&TlsFiles {
        cert: good.key.clone(),
        ..good.clone()
    })
    .to_string();
    assert!(
        text.contains(&shown(&good.key)) && text.contains("no PEM certificate"),
        "{text}"
    );
    let text = load_error(&TlsFiles {
        key: good.cert.clone(),
        ..good.clone()
    })
    .to_string();
    assert!(
        text.contains(&shown(&good.cert)) && text.contains("no PEM private key"),
        "{text}"
    );
    let text = load_error(&TlsFiles {
        ca: good.key.clone(),
        ..good.clone()
    })
    .to_string();
    assert!(
        text.contains("CA") && text.contains("no PEM certificate"),
        "{text}"
    );

    // Another certificate's key.
    let other = ca.issue("other");
    let text = load_error(&TlsFiles {
        key: other.key.clone(),
        ..good.clone()
    })
    .to_string();
    assert!(
        text.contains("does not belong to the certificate") && text.contains(&shown(&other.key)),
        "{text}"
    );

    let text = load_error(&TlsFiles {
        key: None,
        ..good.clone()
    })
    .to_string();
    assert!(text.contains("--tls-key is missing"), "{text}");

    // A CA alone is a client's TLS, not a listener's: a kv server refuses it by name.
    let client_only = Tls::load(&TlsFiles {
        ca: good.ca.clone(),
        ..TlsFiles::default()
    })
    .expect("a CA alone loads");
    let mut config = viewkv::kv::ServerConfig::new("127.0.0.1:1", Vec::new());
    config.tls = Some(client_only);
    let refused = config.validate();
    assert!(
        refused
            .as_ref()
            .is_err_and(|why| why.contains("--tls-cert and --tls-key")),
        "{refused:?}"
    );
    assert!(Tls::load(&good).is_ok(), "the good files load");
}
