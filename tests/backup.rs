//! Backups: `dump` writes a consistent snapshot of the service's data while it keeps serving,
//! survives a failover in the middle, and `restore` writes it into another service byte for
//! byte, refusing a service that holds keys unless forced.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;
use viewkv::client::{BackupError, DumpHeader, DumpReader, DumpWriter, RestoreOptions};
use viewkv::kv::api::pack_record;
use viewkv::testkit::{self, Cluster, ClusterOptions};
use viewkv::Client;

const DEADLINE: Duration = Duration::from_secs(60);

async fn cluster(seed: u64) -> Cluster {
    testkit::init_tracing();
    let mut cluster = Cluster::start(ClusterOptions::fast(seed)).await;
    cluster.start_server().await;
    cluster.start_server().await;
    cluster.wait_ready(DEADLINE).await;
    cluster
}

/// Every record of the dump at `path`, checked.
fn records(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut reader = DumpReader::open(path).unwrap_or_else(|err| panic!("{err}"));
    let mut out = BTreeMap::new();
    while let Some((key, value)) = reader.next_record().unwrap_or_else(|err| panic!("{err}")) {
        assert!(out.insert(key, value).is_none(), "a key appears twice");
    }
    out
}

/// `count` distinct keys of any bytes (empty values, zero bytes and 0xFF included).
fn binary_pairs(rng: &mut StdRng, count: usize) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut pairs = BTreeMap::new();
    while pairs.len() < count {
        let key_len = rng.gen_range(1..40);
        let key: Vec<u8> = (0..key_len).map(|_| rng.gen()).collect();
        let value_len = if rng.gen_bool(0.05) {
            0
        } else {
            rng.gen_range(1..200)
        };
        let value: Vec<u8> = (0..value_len).map(|_| rng.gen()).collect();
        pairs.insert(key, value);
    }
    pairs
}

/// Write `pairs` with 16 concurrent clients.
async fn write_all(cluster: &mut Cluster, pairs: &BTreeMap<Vec<u8>, Vec<u8>>) {
    const WRITERS: usize = 16;
    let pairs: Arc<Vec<(Vec<u8>, Vec<u8>)>> =
        Arc::new(pairs.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    let mut tasks = Vec::new();
    for first in 0..WRITERS {
        let (mut client, pairs) = (cluster.client(), pairs.clone());
        tasks.push(tokio::spawn(async move {
            for (key, value) in pairs.iter().skip(first).step_by(WRITERS) {
                if let Err(err) = client.put(key, value).await {
                    panic!("writing {key:?}: {err}");
                }
            }
        }));
    }
    for task in tasks {
        task.await
            .unwrap_or_else(|err| panic!("a writer failed: {err}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_of_100k_binary_keys_restores_into_another_cluster_byte_for_byte() {
    let seed = testkit::seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let pairs = binary_pairs(&mut rng, 100_000);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.vkv");

    let started = std::time::Instant::now();
    let mut source = cluster(seed).await;
    write_all(&mut source, &pairs).await;
    println!("written in {:?}", started.elapsed());
    let mut pages = 0;
    let header = source
        .client()
        .dump(&file, |_| pages += 1)
        .await
        .unwrap_or_else(|err| panic!("dump: {err}"));
    assert_eq!(header.keys, 100_000);
    assert!(
        pages > 1,
        "100k keys fit in one page: the test misses paging"
    );
    assert!(
        !dir.path().join("backup.vkv.partial").exists(),
        "the partial file was renamed"
    );
    assert!(
        records(&file) == pairs,
        "the dump holds exactly what was written"
    );
    source.shutdown().await;

    let mut target = cluster(seed.wrapping_add(1)).await;
    let mut restorer = target.client();
    let mut last = None;
    restorer
        .restore(&file, RestoreOptions::default(), |p| last = Some(p))
        .await
        .unwrap_or_else(|err| panic!("restore: {err}"));
    println!("dumped and restored in {:?}", started.elapsed());
    let last = last.expect("progress was reported");
    assert_eq!((last.keys, last.total_keys), (100_000, 100_000));
    assert_eq!(restorer.count().await.unwrap(), 100_000);
    let again = dir.path().join("again.vkv");
    target
        .client()
        .dump(&again, |_| {})
        .await
        .unwrap_or_else(|err| panic!("dump of the restored service: {err}"));
    assert!(
        records(&again) == pairs,
        "the restored service holds the same bytes"
    );
    let mut reader = target.client();
    for (key, value) in pairs.iter().step_by(997) {
        assert_eq!(reader.get(key).await.unwrap().as_ref(), Some(value));
    }

    // Into a service that holds keys: refused, nothing written; forced: written over.
    restorer.put(b"\x00only-here", b"kept").await.unwrap();
    let (first_key, first_value) = pairs.iter().next().expect("pairs");
    restorer.put(first_key, b"changed").await.unwrap();
    let refused = restorer
        .restore(&file, RestoreOptions::default(), |_| {})
        .await;
    assert!(
        matches!(refused, Err(BackupError::NotEmpty { keys: 100_001 })),
        "{refused:?}"
    );
    assert_eq!(
        restorer.get(first_key).await.unwrap(),
        Some(b"changed".to_vec())
    );
    // Forced (with a small dump, to keep the test short): the dump's keys are written over,
    // others kept.
    let small = dir.path().join("small.vkv");
    let header = DumpHeader {
        view: 1,
        index: 1,
        keys: 1,
        bytes: 0,
        taken_ms: 0,
    };
    let mut writer = DumpWriter::create(&small, &header).unwrap();
    let mut packed = Vec::new();
    pack_record(&mut packed, first_key, first_value);
    writer.packed(&packed).unwrap();
    writer.finish().unwrap();
    let forced = RestoreOptions {
        force: true,
        ..RestoreOptions::default()
    };
    restorer
        .restore(&small, forced, |_| {})
        .await
        .unwrap_or_else(|err| panic!("forced restore: {err}"));
    assert_eq!(
        restorer.get(first_key).await.unwrap().as_ref(),
        Some(first_value)
    );
    assert_eq!(
        restorer.get(b"\x00only-here").await.unwrap(),
        Some(b"kept".to_vec())
    );
    assert_eq!(restorer.count().await.unwrap(), 100_001);
    println!("all done in {:?}", started.elapsed());
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_under_writes_holds_every_write_acknowledged_before_it_and_a_prefix_after() {
    let seed = testkit::seed();
    let mut cluster = cluster(seed).await;
    // Enough data for many pages, so the dump is read while the writer runs.
    cluster.load_keys(20_000, 1_000).await;
    // The writer puts its keys one after another; they sort in another order than they are
    // written, spread among the loaded keys (so over every page), so a dump that read the live
    // data page by page would see a later write without an earlier one.
    let key = |i: u64| format!("{}-w{i}", testkit::load_key((i * 7919 % 20_000) as usize));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut writer = cluster.client();
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                if let Err(err) = writer.put(key(i).as_bytes(), b"x").await {
                    panic!("writing {}: {err}", key(i));
                }
                i += 1;
                acked.store(i, Ordering::SeqCst);
            }
        })
    };
    testkit::wait_for("the writer to get going", DEADLINE, || {
        let acked = acked.load(Ordering::SeqCst);
        async move { (acked >= 50).then_some(()) }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dump");
    let before = acked.load(Ordering::SeqCst);
    cluster
        .client()
        .dump(&file, |_| {})
        .await
        .unwrap_or_else(|err| panic!("dump: {err}"));
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap_or_else(|err| panic!("writer: {err}"));
    let after = acked.load(Ordering::SeqCst);

    let dumped = records(&file);
    let present: Vec<bool> = (0..after + 1)
        .map(|i| dumped.contains_key(key(i).as_bytes()))
        .collect();
    let prefix = present.iter().take_while(|p| **p).count() as u64;
    assert!(
        present[prefix as usize..].iter().all(|p| !p),
        "the dump holds writes {:?} but not write {prefix}: not a snapshot",
        (prefix..=after)
            .filter(|i| present[*i as usize])
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(
        prefix >= before,
        "write {} was acknowledged before the dump began but is missing",
        prefix
    );
    assert_eq!(dumped.len() as u64, 20_000 + prefix);
    println!("acknowledged before the dump: {before}, in it: {prefix}, by its end: {after}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_whose_primary_crashes_midway_starts_over_on_the_new_primary() {
    let seed = testkit::seed();
    let mut cluster = cluster(seed).await;
    cluster.load_keys(20_000, 1_000).await;
    let view = cluster.wait_ready(DEADLINE).await;
    let primary = view.primary.clone().expect("a primary").addr;
    let mut client: Client = cluster.client();

    // After the first page, the primary is crashed before the dump goes on.
    let first_page = Arc::new(Notify::new());
    let (crashed_tx, crashed_rx) = std::sync::mpsc::channel();
    let crasher = {
        let first_page = first_page.clone();
        tokio::spawn(async move {
            first_page.notified().await;
            cluster.crash_server(&primary).await;
            let _ = crashed_tx.send(());
            cluster
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dump");
    let mut pages = 0;
    let header = client
        .dump(&file, |_| {
            pages += 1;
            if pages == 1 {
                first_page.notify_one();
                // The test body runs outside the runtime's workers: blocking here holds up
                // only the dump, while the crash goes on.
                crashed_rx
                    .recv_timeout(DEADLINE)
                    .unwrap_or_else(|err| panic!("the crash: {err}"));
            }
        })
        .await
        .unwrap_or_else(|err| panic!("dump: {err}"));
    let cluster = crasher.await.unwrap_or_else(|err| panic!("{err}"));
    assert!(
        header.view > view.num,
        "the dump finished in view {} (taken in view {}): it did not start over",
        header.view,
        view.num
    );
    let dumped = records(&file);
    assert_eq!(dumped.len(), 20_000);
    assert!(dumped.contains_key(testkit::load_key(19_999).as_bytes()));
    cluster.shutdown().await;
}
