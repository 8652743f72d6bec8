//! A cluster with a secret serves only requests that prove it: client requests, forwards,
//! transfers, dumps, pings, view reads, recoveries, membership changes and Raft RPCs without
//! it get 401 and change nothing, and a client without it is told so at once instead of
//! retrying until its deadline.

use std::time::Duration;

use viewkv::client::ClientError;
use viewkv::kv::api::{Op, Request, Sent, DUMP, FORWARD, REQUEST, TRANSFER};
use viewkv::monitor::api::{PING, RECOVER, VIEW};
use viewkv::monitor::membership::{CHANGE_MEMBERS, MEMBERS};
use viewkv::net::{RpcClient, RpcError, Secret};
use viewkv::testkit::{self, Cluster, ClusterOptions};
use viewkv::Client;
use viewkv_raft::{RAFT_APPEND, RAFT_SNAPSHOT, RAFT_VOTE};

const DEADLINE: Duration = Duration::from_secs(30);

fn refused(reply: &Result<Vec<u8>, RpcError>) -> bool {
    matches!(reply, Err(err) if err.is_unauthorized())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_secret_every_rpc_is_refused_and_nothing_changes() {
    testkit::init_tracing();
    let mut options = ClusterOptions::fast(testkit::seed());
    options.secret = Some(Secret::generate());
    let mut cluster = Cluster::start(options).await;
    let primary = cluster.start_server().await;
    cluster.start_server().await;
    cluster.wait_ready(DEADLINE).await;
    let mut client = cluster.client();
    client.put(b"k", b"by the owner").await.expect("a put");

    let intruder = RpcClient::new("intruder", None);
    let put = Request {
        client: 99,
        seq: 1,
        deadline_ms: viewkv::kv::wall_ms() + 10_000,
        op: Op::Put {
            key: b"k".to_vec(),
            value: b"by an intruder".to_vec(),
        },
    };
    let body = viewkv::net::encode(&Sent::unstamped(put));
    // The HTTP API's append is a POST that would change `k`.
    let api = ["/v1/kv/k/append", "/v1/kv", "/v1/openapi.json"];
    for path in [REQUEST, FORWARD, TRANSFER, DUMP].into_iter().chain(api) {
        let reply = intruder
            .call_raw(&primary, path, body.clone(), DEADLINE)
            .await;
        assert!(refused(&reply), "{path} without the secret: {reply:?}");
    }
    for id in cluster.monitor_ids() {
        let addr = cluster.monitor_addr(id);
        let paths = [PING, VIEW, RECOVER, MEMBERS, CHANGE_MEMBERS];
        for path in paths
            .into_iter()
            .chain([RAFT_APPEND, RAFT_VOTE, RAFT_SNAPSHOT])
        {
            let reply = intruder
                .call_raw(&addr, path, b"x".to_vec(), DEADLINE)
                .await;
            assert!(
                refused(&reply),
                "monitor {id} {path} without the secret: {reply:?}"
            );
        }
        assert!(
            cluster.monitor_status(id).await.is_some(),
            "/status stays open for health checks"
        );
    }
    let wrong = RpcClient::new("wrong", None).with_secret(Some(Secret::generate()));
    let reply = wrong.call_raw(&primary, REQUEST, body, DEADLINE).await;
    assert!(refused(&reply), "a wrong secret: {reply:?}");

    let mut outsider = Client::with_rpc(
        RpcClient::new("outsider", None),
        cluster.monitor_addrs(),
        cluster.client_options(),
    );
    match outsider.get(b"k").await {
        Err(ClientError::Unauthorized(why)) => assert!(why.contains("secret"), "{why}"),
        other => panic!("a client without the secret: {other:?}"),
    }
    assert_eq!(
        client.get(b"k").await.expect("a get"),
        Some(b"by the owner".to_vec()),
        "a refused request changed the store"
    );
    cluster.shutdown().await;
}
