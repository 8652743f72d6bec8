//! `/metrics` on monitors and kv servers: Prometheus text a scraper can read, with the numbers
//! the rest of the cluster agrees on (view, role, keys, requests, Raft leadership), and open
//! without the cluster secret like `/status`.

use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use viewkv::net::{RpcClient, Secret};
use viewkv::testkit::{self, wait_for, Cluster, ClusterOptions};

const DEADLINE: Duration = Duration::from_secs(30);

/// The value of the sample `name` with exactly `labels` in a scrape, read by a Prometheus
/// text-format parser (not by this project's own code).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let lines = text.lines().map(|line| Ok(line.to_string()));
    let scrape = Scrape::parse(lines).expect("a Prometheus text-format scrape");
    scrape.samples.iter().find_map(|s| {
        let same_labels = s.labels.len() == labels.len()
            && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v));
        if s.metric != name || !same_labels {
            return None;
        }
        match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            Value::Histogram(_) | Value::Summary(_) => None,
        }
    })
}

async fn scrape(addr: &str) -> String {
    let scraper = RpcClient::new("scraper", None);
    let body = scraper
        .call_raw(addr, "/metrics", Vec::new(), DEADLINE)
        .await
        .expect("/metrics answers without the secret");
    String::from_utf8(body).expect("UTF-8 metrics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_agree_with_the_cluster() {
    testkit::init_tracing();
    let mut options = ClusterOptions::fast(testkit::seed());
    options.secret = Some(Secret::generate());
    let mut cluster = Cluster::start(options).await;
    cluster.start_server().await;
    cluster.start_server().await;
    let view = cluster.wait_ready(DEADLINE).await;
    let (primary, backup) = match (&view.primary, &view.backup) {
        (Some(p), Some(b)) => (p.addr.clone(), b.addr.clone()),
        _ => panic!("no primary and backup in {view:?}"),
    };
    let mut client = cluster.client();
    for i in 0..5 {
        let key = format!("k{i}");
        client.put(key.as_bytes(), b"v").await.expect("a put");
    }
    // A reply that carries a value, so the duplicate table holds reply bytes.
    let previous = client.put_hash(b"k0", b"x").await.expect("a puthash");
    assert_eq!(previous, Some(b"v".to_vec()));
    let text = scrape(&primary).await;
    assert!(
        sample(&text, "viewkv_kv_session_reply_bytes", &[]).is_some_and(|b| b >= 1.0),
        "{text}"
    );
    for gauge in [
        "viewkv_kv_unconfirmed_bytes",
        "viewkv_kv_transfer_received_bytes",
    ] {
        assert!(
            sample(&text, gauge, &[]).is_some(),
            "{gauge} missing: {text}"
        );
    }
    assert_eq!(sample(&text, "viewkv_kv_primary", &[]), Some(1.0), "{text}");
    assert_eq!(sample(&text, "viewkv_kv_backup", &[]), Some(0.0), "{text}");
    assert_eq!(sample(&text, "viewkv_kv_keys", &[]), Some(5.0), "{text}");
    assert_eq!(
        sample(&text, "viewkv_view_number", &[]),
        Some(view.num as f64),
        "{text}"
    );
    let answered = sample(
        &text,
        "viewkv_requests_total",
        &[("path", "/kv/request"), ("status", "200")],
    );
    assert!(answered.is_some_and(|n| n >= 5.0), "{text}");
    assert!(
        sample(&text, "viewkv_resident_memory_bytes", &[]).is_some_and(|b| b > 0.0),
        "{text}"
    );
    wait_for(
        "the backup's metrics to show the five keys",
        DEADLINE,
        || async {
            let text = scrape(&backup).await;
            (sample(&text, "viewkv_kv_backup", &[]) == Some(1.0)
                && sample(&text, "viewkv_kv_keys", &[]) == Some(5.0))
            .then_some(())
        },
    )
    .await;
    let leader = cluster.wait_leader(DEADLINE).await;
    for id in cluster.monitor_ids() {
        let text = scrape(&cluster.monitor_addr(id)).await;
        let leads = if id == leader { 1.0 } else { 0.0 };
        assert_eq!(
            sample(&text, "viewkv_monitor_serving", &[]),
            Some(leads),
            "monitor {id}: {text}"
        );
        assert!(
            sample(&text, "viewkv_raft_term", &[]).is_some_and(|t| t >= 1.0),
            "monitor {id}: {text}"
        );
        assert!(
            sample(
                &text,
                "viewkv_requests_total",
                &[("path", "/monitor/ping"), ("status", "200")],
            )
            .is_some_and(|n| n >= 1.0)
                || id != leader,
            "the leader answered pings: {text}"
        );
        assert!(
            sample(&text, "viewkv_raft_leader_changes_seen", &[]).is_some_and(|n| n >= 1.0),
            "monitor {id} saw its first leader: {text}"
        );
    }
    cluster.crash_monitor(leader).await;
    let survivor = cluster
        .monitor_ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("three monitors");
    let addr = cluster.monitor_addr(survivor);
    wait_for("a survivor to count the new leader", DEADLINE, || async {
        let text = scrape(&addr).await;
        sample(&text, "viewkv_raft_leader_changes_seen", &[])
            .filter(|n| *n >= 2.0)
            .map(drop)
    })
    .await;
    cluster.shutdown().await;
}
