//! A client given the kv server of its own process (`Client::with_local`) hands it the requests
//! meant for the primary when — and only when — that server is the primary.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use viewkv::client::LocalServer;
use viewkv::kv::api::{Reply, Request};
use viewkv::testkit::{self, Cluster, ClusterOptions};

/// A stand-in that answers every request itself, counting them.
struct Stub {
    /// The address it claims.
    addr: String,
    /// Requests served.
    served: AtomicU64,
}

impl LocalServer for Stub {
    fn addr(&self) -> &str {
        &self.addr
    }

    fn serve(&self, _request: Request) -> Pin<Box<dyn Future<Output = Reply> + Send + '_>> {
        self.served.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Reply::Ok(Some(b"from the local server".to_vec())) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_the_local_primary_skip_the_network_and_others_do_not() {
    testkit::init_tracing();
    let mut cluster = Cluster::start(ClusterOptions::fast(testkit::seed())).await;
    cluster.start_server().await;
    cluster.start_server().await;
    let view = cluster.wait_ready(Duration::from_secs(60)).await;
    let primary = view.primary.clone().expect("a primary").addr;
    let backup = view.backup.clone().expect("a backup").addr;
    cluster.client().put(b"k", b"stored").await.expect("put");

    let local = Arc::new(Stub {
        addr: primary,
        served: AtomicU64::new(0),
    });
    let mut client = cluster.client().with_local(local.clone());
    let got = client.get(b"k").await.expect("get");
    assert_eq!(got, Some(b"from the local server".to_vec()));
    assert_eq!(local.served.load(Ordering::SeqCst), 1);

    let elsewhere = Arc::new(Stub {
        addr: backup,
        served: AtomicU64::new(0),
    });
    let mut client = cluster.client().with_local(elsewhere.clone());
    assert_eq!(
        client.get(b"k").await.expect("get"),
        Some(b"stored".to_vec())
    );
    assert_eq!(
        elsewhere.served.load(Ordering::SeqCst),
        0,
        "not the primary"
    );
    cluster.shutdown().await;
}
