//! Errors a newcomer understands: with no cluster running a client says so at once and names
//! the addresses it tried; a read that runs out of time says it failed; only a write that may
//! have reached the primary is reported as "may or may not have been applied".

use std::net::TcpListener;
use std::time::Duration;

use viewkv::client::{ClientError, ClientOptions};
use viewkv::net::Secret;
use viewkv::testkit::{self, Cluster, ClusterOptions};
use viewkv::Client;

const DEADLINE: Duration = Duration::from_secs(30);

/// Addresses nothing listens on: bound, then released.
fn closed_addrs(n: usize) -> Vec<String> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound").to_string())
        .collect()
}

/// Options whose deadline is far longer than the test may take: an answer before it can only
/// come from failing fast.
fn patient() -> ClientOptions {
    ClientOptions {
        deadline: Duration::from_secs(600),
        retry_interval: Duration::from_millis(50),
        rpc_timeout: Duration::from_secs(1),
    }
}

fn assert_no_monitors(result: Result<(), ClientError>, monitors: &[String]) {
    match result {
        Err(ClientError::NoMonitors {
            monitors: tried, ..
        }) => assert_eq!(tried, monitors),
        other => panic!("expected NoMonitors, got {other:?}"),
    }
}

#[tokio::test]
async fn with_no_cluster_running_every_call_fails_fast_naming_the_monitors() {
    let monitors = closed_addrs(3);
    let mut client = Client::with_options(monitors.clone(), patient());
    assert_no_monitors(client.get(b"k").await.map(drop), &monitors);
    assert_no_monitors(client.put(b"k", b"v").await, &monitors);
    let err = client.delete(b"k").await.expect_err("no cluster");
    let text = err.to_string();
    for needle in [monitors[0].as_str(), "viewkv up", "--monitors", "refused"] {
        assert!(text.contains(needle), "{needle:?} missing from {text:?}");
    }
    assert!(!text.contains("may or may not"), "{text}");
    let connected = Client::connect(monitors.clone(), patient(), None).await;
    assert_no_monitors(connected.map(drop), &monitors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_read_failed_and_a_timed_out_write_is_of_unknown_outcome() {
    testkit::init_tracing();
    let mut cluster = Cluster::start(ClusterOptions::fast(testkit::seed())).await;
    let servers = [cluster.start_server().await, cluster.start_server().await];
    cluster.wait_ready(DEADLINE).await;
    let mut client = cluster.client_with(ClientOptions {
        deadline: Duration::from_secs(1),
        ..cluster.client_options()
    });
    client.put(b"k", b"v").await.expect("a put");
    // The servers go: monitors still answer, so this is no "no cluster" case, and a client
    // that has reached the cluster rides outages out until its deadline.
    for server in &servers {
        cluster.crash_server(server).await;
    }
    match client.get(b"k").await {
        Err(err @ ClientError::ReadFailed { .. }) => {
            let text = err.to_string();
            assert!(text.contains("the read failed"), "{text}");
            assert!(!text.contains("may or may not"), "{text}");
        }
        other => panic!("expected ReadFailed, got {other:?}"),
    }
    match client.put(b"k", b"w").await {
        Err(err @ ClientError::Indeterminate { .. }) => {
            assert!(err.to_string().contains("may or may not"), "{err}")
        }
        other => panic!("expected Indeterminate, got {other:?}"),
    }
    for id in cluster.monitor_ids() {
        cluster.crash_monitor(id).await;
    }
    let got = client.get(b"k").await;
    assert!(
        matches!(got, Err(ClientError::ReadFailed { .. })),
        "a client that had reached the cluster gave up early: {got:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_checks_the_cluster_and_the_secret_up_front() {
    testkit::init_tracing();
    let mut options = ClusterOptions::fast(testkit::seed());
    let secret = Secret::generate();
    options.secret = Some(secret.clone());
    let mut cluster = Cluster::start(options).await;
    cluster.start_server().await;
    cluster.start_server().await;
    cluster.wait_ready(DEADLINE).await;
    let monitors = cluster.monitor_addrs();
    let options = cluster.client_options();
    let mut client = Client::connect(monitors.clone(), options, Some(secret))
        .await
        .expect("connect to a running cluster");
    client.put(b"k", b"v").await.expect("a put");
    assert_eq!(client.get(b"k").await, Ok(Some(b"v".to_vec())));
    let wrong = Client::connect(monitors.clone(), options, Some(Secret::generate())).await;
    assert!(
        matches!(wrong, Err(ClientError::Unauthorized(_))),
        "a wrong secret: {:?}",
        wrong.map(drop)
    );
    let without = Client::connect(monitors, options, None).await;
    assert!(
        matches!(without, Err(ClientError::Unauthorized(_))),
        "no secret: {:?}",
        without.map(drop)
    );
    cluster.shutdown().await;
}
