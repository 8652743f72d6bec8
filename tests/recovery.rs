//! Operator recovery on a running cluster: a stalled service gets going again with
//! `recover --accept-data-loss` (and only with it), and monitors that lost all their state
//! start no second primary but adopt the surviving servers' view when told to.

use std::time::Duration;

use viewkv::client::{ClientError, ClientOptions};
use viewkv::monitor::api::{RecoverReply, RecoverRequest};
use viewkv::monitor::MonitorClient;
use viewkv::testkit::{self, wait_for, Cluster, ClusterOptions};
use viewkv::view::View;

const DEADLINE: Duration = Duration::from_secs(60);

async fn cluster() -> Cluster {
    testkit::init_tracing();
    Cluster::start(ClusterOptions::fast(testkit::seed())).await
}

fn id(member: &Option<viewkv::view::Member>) -> Option<String> {
    member.as_ref().map(|m| m.id.clone())
}

/// Ask the leader to recover (retrying while no leader answers); its answer.
async fn recover(operator: &MonitorClient, accept: bool, primary: Option<&str>) -> RecoverReply {
    let request = RecoverRequest {
        accept_data_loss: accept,
        primary: primary.map(String::from),
    };
    wait_for("a leader's answer to recover", DEADLINE, || async {
        operator.recover(&request).await.ok()
    })
    .await
}

/// The stall the leader reports, once it reports one containing `what`.
async fn stall_saying(operator: &MonitorClient, what: &str) -> String {
    wait_for(&format!("a stall saying {what:?}"), DEADLINE, || async {
        let reply = operator.view().await.ok()?;
        reply.stalled.filter(|s| s.contains(what))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_service_serves_again_after_recover_accepts_the_loss() {
    let mut cluster = cluster().await;
    let p = cluster.start_server().await;
    let b = cluster.start_server().await;
    cluster.wait_ready(DEADLINE).await;
    let mut client = cluster.client();
    client.put(b"before", b"1").await.expect("put");

    // The backup dies, then the primary: nobody holds the data.
    cluster.crash_server(&b).await;
    cluster
        .wait_view("the primary alone", DEADLINE, |v| {
            v.acked && v.backup.is_none() && id(&v.primary).as_deref() == Some(p.as_str())
        })
        .await;
    cluster.crash_server(&p).await;
    let c = cluster.start_server().await;
    let operator = cluster.monitor_client("operator");
    let stall = stall_saying(&operator, "viewkv recover").await;
    assert!(stall.contains(&format!("primary {p} is dead")), "{stall}");

    // Without the flag: what would happen, and nothing done.
    let before = cluster.view().await;
    let plan = recover(&operator, false, None).await;
    let RecoverReply::Plan { explanation } = &plan else {
        panic!("{plan:?}");
    };
    assert!(
        explanation.contains(&format!("{c} becomes primary")) && explanation.contains("EMPTY"),
        "{explanation}"
    );
    assert_eq!(cluster.view().await, before, "a plan changed the view");

    let done = recover(&operator, true, None).await;
    let RecoverReply::Done { view, .. } = &done else {
        panic!("{done:?}");
    };
    assert_eq!(id(&view.primary).as_deref(), Some(c.as_str()));
    assert!(view.recovered && view.num == before.num + 1, "{view:?}");
    // Once is enough: a second recovery is refused while the new primary lives.
    let again = recover(&operator, true, None).await;
    assert!(
        matches!(&again, RecoverReply::Refused { reason } if reason.contains("is alive")),
        "{again:?}"
    );

    let d = cluster.start_server().await;
    let ready = cluster.wait_ready(DEADLINE).await;
    assert_eq!(
        (id(&ready.primary), id(&ready.backup)),
        (Some(c.clone()), Some(d))
    );
    let mut client = cluster.client();
    client
        .put(b"after", b"2")
        .await
        .expect("put after recovery");
    assert_eq!(
        client.get(b"after").await.expect("get"),
        Some(b"2".to_vec())
    );
    assert_eq!(
        client.get(b"before").await.expect("get"),
        None,
        "the service started empty, as the plan said"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_that_lost_their_state_adopt_the_servers_view_only_when_told() {
    let mut cluster = cluster().await;
    let p = cluster.start_server().await;
    let b = cluster.start_server().await;
    let old = cluster.wait_ready(DEADLINE).await;
    let mut client = cluster.client();
    for i in 0..100 {
        client
            .put(format!("k{i}").as_bytes(), format!("v{i}").as_bytes())
            .await
            .expect("put");
    }
    let old_cluster = cluster.server_status(&p).await.expect("p's status")["cluster"].clone();
    let mut watcher = cluster.client_with(ClientOptions {
        deadline: Duration::from_secs(3),
        ..cluster.client_options()
    });
    assert_eq!(watcher.get(b"k1").await.expect("get"), Some(b"v1".to_vec()));

    // Every monitor loses its disk.
    for id in cluster.monitor_ids() {
        cluster.crash_monitor(id).await;
        cluster.wipe_monitor(id);
    }
    for id in cluster.monitor_ids() {
        cluster.restart_monitor(id).await;
    }
    let fresh = cluster.start_server().await;
    let operator = cluster.monitor_client("operator");
    let stall = stall_saying(&operator, "lost their state").await;
    assert!(
        stall.contains(old_cluster.as_str().unwrap_or("?")),
        "{stall}"
    );
    // The fresh server is answered by the new group, yet no view is made while the old
    // servers ping: watch for many ping intervals.
    wait_for(
        "the fresh server to join the new group",
        DEADLINE,
        || async {
            let status = cluster.server_status(&fresh).await?;
            (status["cluster"] != "0" && status["cluster"] != old_cluster).then_some(())
        },
    )
    .await;
    let interval = cluster.options().timings.ping_interval;
    for _ in 0..3 * cluster.options().timings.dead_pings {
        let reply = operator.view().await.expect("the monitors answer");
        assert_eq!(reply.view, View::default(), "a view beside the old one");
        tokio::time::sleep(interval).await;
    }
    // The old primary still serves the clients that know it.
    assert_eq!(client.get(b"k7").await.expect("get"), Some(b"v7".to_vec()));
    // Until its backup dies: then a client that must read the view again is told why the
    // monitors' answer is not followed.
    cluster.crash_server(&b).await;
    match watcher.get(b"k1").await {
        Err(ClientError::ReadFailed { last, .. }) => {
            assert!(last.contains("answered for cluster"), "{last}")
        }
        other => panic!("a read through monitors of another cluster: {other:?}"),
    }

    let done = recover(&operator, true, None).await;
    let RecoverReply::Done { view, explanation } = &done else {
        panic!("{done:?}");
    };
    assert!(explanation.contains("adopt cluster"), "{explanation}");
    assert!(
        view.num > old.num && view.recovered,
        "{view:?} after {old:?}"
    );
    assert_eq!(
        id(&view.primary),
        Some(p.clone()),
        "the live server holding the state"
    );
    // The fresh server had joined the new group's cluster; holding nothing, it follows the
    // adopted one and becomes the backup.
    let ready = cluster.wait_ready(DEADLINE).await;
    assert_eq!(
        (id(&ready.primary), id(&ready.backup)),
        (Some(p), Some(fresh))
    );
    let reply = operator.view().await.expect("the view");
    assert_eq!(
        serde_json::json!(format!("{:x}", reply.cluster)),
        old_cluster,
        "the survivors' cluster id was adopted"
    );
    // Old and new clients read every key written before the loss.
    let mut new_client = cluster.client();
    for i in 0..100 {
        let key = format!("k{i}");
        let want = Some(format!("v{i}").into_bytes());
        assert_eq!(client.get(key.as_bytes()).await.expect("old client"), want);
        assert_eq!(
            new_client.get(key.as_bytes()).await.expect("new client"),
            want
        );
    }
    cluster.shutdown().await;
}
