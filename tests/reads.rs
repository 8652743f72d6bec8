//! Reads against a running cluster: under a read lease the primary answers them without an
//! entry in the stream (with leases off, every read is one), and stale reads
//! (`ReadConsistency::Stale`) are answered by a replica from its own state, so they go on
//! while the primary cannot be reached, when a linearizable read cannot.

use std::time::{Duration, Instant};

use viewkv::client::{ClientError, ClientOptions, ReadConsistency};
use viewkv::testkit::{self, Cluster, ClusterOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_read_is_answered_by_the_backup_while_the_primary_is_out_of_reach() {
    testkit::init_tracing();
    let mut cluster = Cluster::start(ClusterOptions::fast(testkit::seed())).await;
    cluster.start_server().await;
    cluster.start_server().await;
    let view = cluster.wait_ready(Duration::from_secs(60)).await;
    let primary = view.primary.clone().expect("a primary").addr;
    let mut writer = cluster.client();
    writer.put(b"k", b"v").await.expect("a write");
    let short = ClientOptions {
        deadline: Duration::from_secs(2),
        ..cluster.client_options()
    };
    // Clients are named client-1, client-2, ... in the order they are made.
    let mut linearizable = cluster.client_with(short);
    let mut stale = cluster.client_with(short);
    stale.set_read_consistency(ReadConsistency::Stale);
    assert_eq!(stale.read_consistency(), ReadConsistency::Stale);
    for client in ["client-2", "client-3"] {
        cluster.faults().cut(client, &primary);
    }
    assert_eq!(stale.get(b"k").await, Ok(Some(b"v".to_vec())));
    let page = stale.scan(b"", None, 10, true).await.expect("a stale scan");
    assert_eq!(page.pairs, vec![(b"k".to_vec(), b"v".to_vec())]);
    match linearizable.get(b"k").await {
        Err(ClientError::ReadFailed { .. }) => {}
        other => panic!("a linearizable read needs the primary, got {other:?}"),
    }
    // Writes are never stale: they still need the primary.
    assert!(stale.put(b"k", b"w").await.is_err());
    cluster.heal();
    assert_eq!(linearizable.get(b"k").await, Ok(Some(b"v".to_vec())));
    cluster.shutdown().await;
}

/// The entries the primary at `addr` has applied, from its status.
async fn index(cluster: &Cluster, addr: &str) -> u64 {
    let status = cluster
        .server_status(addr)
        .await
        .expect("the primary's status");
    status["index"].as_u64().expect("an index")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_read_lease_reads_are_not_entries_and_without_one_each_is() {
    testkit::init_tracing();
    for read_lease in [true, false] {
        let options = ClusterOptions {
            read_lease,
            ..ClusterOptions::fast(testkit::seed())
        };
        let mut cluster = Cluster::start(options).await;
        cluster.start_server().await;
        cluster.start_server().await;
        let view = cluster.wait_ready(Duration::from_secs(60)).await;
        let primary = view.primary.clone().expect("a primary").addr;
        let mut client = cluster.client();
        client.put(b"k", b"v").await.expect("a write");
        if read_lease {
            // A ping reply renews the lease every interval; on a busy machine one may come
            // late, so wait for a read the primary answered alone.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let before = index(&cluster, &primary).await;
                assert_eq!(client.get(b"k").await, Ok(Some(b"v".to_vec())));
                if index(&cluster, &primary).await == before {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "no read was answered under a lease"
                );
            }
        } else {
            let before = index(&cluster, &primary).await;
            for _ in 0..20 {
                assert_eq!(client.get(b"k").await, Ok(Some(b"v".to_vec())));
            }
            assert_eq!(index(&cluster, &primary).await, before + 20);
        }
        cluster.shutdown().await;
    }
}
