//! Stale reads (`ReadConsistency::Stale`) against a running cluster: answered by a replica
//! from its own state, so they go on while the primary cannot be reached, when a linearizable
//! read cannot.

use std::time::Duration;

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
