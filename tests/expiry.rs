//! Key expiry across servers: a key's deadline is part of the replicated state, so a backup
//! made by a state transfer and then promoted expires the key as the old primary would have.

use std::time::Duration;

use viewkv::kv::api::{Op, Ttl, When};
use viewkv::testkit::{self, Cluster, ClusterOptions};

const DEADLINE: Duration = Duration::from_secs(60);

fn set(key: &str, ttl_ms: u64) -> Op {
    Op::Set {
        key: key.into(),
        value: b"v".to_vec(),
        when: When::Always,
        get: false,
        ttl: Ttl::In(ttl_ms),
    }
}

fn ttl(key: &str) -> Op {
    Op::Ttl { key: key.into() }
}

/// A reply that is a decimal number.
fn number(reply: Option<Vec<u8>>) -> i64 {
    let text = String::from_utf8(reply.expect("a reply")).expect("text");
    text.parse().expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_survive_a_transfer_and_a_failover() {
    testkit::init_tracing();
    let mut cluster = Cluster::start(ClusterOptions::fast(testkit::seed())).await;
    let first = cluster.start_server().await;
    let second = cluster.start_server().await;
    cluster.wait_ready(DEADLINE).await;
    let mut client = cluster.client();
    client.execute(set("long", 600_000)).await.expect("a set");
    client.execute(set("short", 1_500)).await.expect("a set");
    client.put(b"forever", b"v").await.expect("a put");
    // The second server leaves; a third gets the whole state by transfer, and then is the only
    // copy besides the primary.
    let view = cluster.view().await;
    let backup = view.backup.expect("a backup").addr;
    cluster.crash_server(&backup).await;
    let third = cluster.start_server().await;
    let ready = cluster
        .wait_view("the third server a ready backup", DEADLINE, |v| {
            v.backup.as_ref().is_some_and(|b| b.addr == third) && v.backup_ready
        })
        .await;
    let primary = ready.primary.expect("a primary").addr;
    assert!(primary == first || primary == second, "{primary}");
    cluster.crash_server(&primary).await;
    cluster
        .wait_view("the third server promoted", DEADLINE, |v| {
            v.primary.as_ref().is_some_and(|p| p.addr == third) && v.acked
        })
        .await;
    let mut client = cluster.client();
    let left = number(client.execute(ttl("long")).await.expect("a TTL"));
    assert!(
        (1..=600_000).contains(&left),
        "long's TTL after the failover: {left}"
    );
    assert_eq!(
        number(client.execute(ttl("forever")).await.expect("a TTL")),
        -1
    );
    // The short one expires on the new primary too.
    testkit::wait_for("the short key to expire", DEADLINE, || {
        let mut client = cluster.client();
        async move {
            client
                .get(b"short")
                .await
                .ok()
                .flatten()
                .is_none()
                .then_some(())
        }
    })
    .await;
    assert_eq!(
        number(client.execute(ttl("short")).await.expect("a TTL")),
        -2
    );
    cluster.shutdown().await;
}
