//! A client given the kv server of its own process (`Client::with_local`) hands it the requests
//! meant for the primary when — and only when — that server is the primary; a stale read goes
//! to it first whatever its role, and on to the view's servers when it holds no state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use viewkv::client::{LocalServer, ReadConsistency, Submission};
use viewkv::kv::api::{KvError, Op, Reply, Sent};
use viewkv::testkit::{self, Cluster, ClusterOptions};

/// A stand-in that answers every request itself, counting them.
struct Stub {
    /// The address it claims.
    addr: String,
    /// Requests served.
    served: AtomicU64,
    /// Whether it answers stale reads (as a server holding the state does).
    holds_state: bool,
}

impl LocalServer for Stub {
    fn addr(&self) -> &str {
        &self.addr
    }

    fn submit(self: Arc<Self>, _sent: Sent) -> Submission {
        self.served.fetch_add(1, Ordering::SeqCst);
        Submission::Answered(Reply::Ok(Some(b"from the local server".to_vec())))
    }

    fn read_stale(&self, _op: &Op) -> Reply {
        if !self.holds_state {
            return Reply::Err(KvError::WrongServer { view: 0 });
        }
        Reply::Ok(Some(b"stale, from the local server".to_vec()))
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
        holds_state: true,
    });
    let mut client = cluster.client().with_local(local.clone());
    let got = client.get(b"k").await.expect("get");
    assert_eq!(got, Some(b"from the local server".to_vec()));
    assert_eq!(local.served.load(Ordering::SeqCst), 1);

    let elsewhere = Arc::new(Stub {
        addr: backup.clone(),
        served: AtomicU64::new(0),
        holds_state: true,
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
    // Stale reads: the local server answers them whatever its role; one holding no state
    // leaves them to the view's servers.
    client.set_read_consistency(ReadConsistency::Stale);
    assert_eq!(
        client.get(b"k").await.expect("a stale get"),
        Some(b"stale, from the local server".to_vec())
    );
    let empty = Arc::new(Stub {
        addr: backup,
        served: AtomicU64::new(0),
        holds_state: false,
    });
    let mut client = cluster.client().with_local(empty);
    client.set_read_consistency(ReadConsistency::Stale);
    assert_eq!(
        client.get(b"k").await.expect("a stale get"),
        Some(b"stored".to_vec())
    );
    cluster.shutdown().await;
}
