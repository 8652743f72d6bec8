//! A 3-node in-process cluster over the real store and network code: leader election,
//! replicated writes, snapshot + purge, snapshot installation on a new node, and that node
//! rebuilding its state from the stored snapshot after a restart.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{addr, start_node, test_config, MemTransport, TestNode, TestSm};
use openraft::error::{ForwardToLeader, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::{BasicNode, Config, SnapshotPolicy};
use viewkv_raft::{Command, CommandReply, NodeId, Store, StoreError, TypeConfig};

/// Deadline for anything the cluster must eventually do; generous for a loaded 2-core box.
const PATIENCE: Duration = Duration::from_secs(30);

/// Small snapshot policy: a snapshot every 5 applied logs, and purge everything it covers.
fn cluster_config() -> Arc<Config> {
    let config = Config {
        snapshot_policy: SnapshotPolicy::LogsSinceLast(5),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..(*test_config()).clone()
    };
    Arc::new(config.validate().unwrap())
}

/// Opens the store in `dir`, waiting until a previous incarnation's tasks have let it go.
async fn open_store(dir: &Path) -> Store {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match Store::open(dir) {
            Ok(store) => return store,
            Err(StoreError::Open {
                source: redb::DatabaseError::DatabaseAlreadyOpen,
                ..
            }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Some node's view of who leads, waiting for one to be known.
async fn known_leader(node: &TestNode) -> NodeId {
    let m = node
        .raft
        .wait(Some(PATIENCE))
        .metrics(|m| m.current_leader.is_some(), "a leader is known")
        .await
        .unwrap();
    m.current_leader.unwrap()
}

/// Writes `cmd` through whichever node leads, following leader changes.
async fn write(nodes: &BTreeMap<NodeId, TestNode>, cmd: &[u8]) -> ClientWriteResponse<TypeConfig> {
    let deadline = Instant::now() + PATIENCE;
    let mut target = known_leader(&nodes[&1]).await;
    loop {
        let res = tokio::time::timeout(
            PATIENCE,
            nodes[&target].raft.client_write(Command(cmd.to_vec())),
        )
        .await
        .expect("client_write hangs");
        let err = match res {
            Ok(resp) => return resp,
            Err(err) => err,
        };
        assert!(Instant::now() < deadline, "cannot write {cmd:?}: {err}");
        if let RaftError::Fatal(f) = &err {
            panic!("node {target} died: {f}");
        }
        target = match err.forward_to_leader::<BasicNode>() {
            Some(ForwardToLeader {
                leader_id: Some(leader),
                ..
            }) if nodes.contains_key(leader) => *leader,
            _ => known_leader(&nodes[&target]).await,
        };
    }
}

/// Waits until `node` has applied log `index`.
async fn applied(node: &TestNode, index: u64, what: &str) {
    node.raft
        .wait(Some(PATIENCE))
        .applied_index_at_least(Some(index), what)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_snapshot_and_restart() {
    let root = tempfile::tempdir().unwrap();
    let dir = |id: NodeId| root.path().join(format!("node-{id}"));
    let transport = MemTransport::default();
    let config = cluster_config();

    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        let store = open_store(&dir(id)).await;
        nodes.insert(id, start_node(id, store, config.clone(), &transport).await);
    }
    let members: BTreeMap<NodeId, BasicNode> =
        (1..=3).map(|id| (id, BasicNode::new(addr(id)))).collect();
    nodes[&1].raft.initialize(members).await.unwrap();

    // A leader is elected and every node learns about it.
    let leader = known_leader(&nodes[&1]).await;
    for node in nodes.values() {
        node.raft
            .wait(Some(PATIENCE))
            .metrics(|m| m.current_leader.is_some(), "leader known")
            .await
            .unwrap();
    }
    assert!(nodes.contains_key(&leader));

    // A write commits and is applied on all three.
    let resp = write(&nodes, b"first").await;
    assert_eq!(resp.data, CommandReply(b"first".to_vec()));
    for node in nodes.values() {
        applied(node, resp.log_id.index, "first write applied").await;
        assert!(node.sm.commands().contains(&b"first".to_vec()));
    }

    // Enough writes for every node to build a snapshot and purge the log it covers.
    let mut expected = vec![b"first".to_vec()];
    let mut last_index = resp.log_id.index;
    for i in 0..20 {
        let cmd = format!("cmd-{i}").into_bytes();
        last_index = write(&nodes, &cmd).await.log_id.index;
        expected.push(cmd);
    }
    for node in nodes.values() {
        applied(node, last_index, "all writes applied").await;
        node.raft
            .wait(Some(PATIENCE))
            .metrics(
                |m| m.snapshot.is_some() && m.purged.as_ref().is_some_and(|p| p.index >= 10),
                "snapshot built and log purged",
            )
            .await
            .unwrap();
    }

    // A new node can only catch up through a snapshot: the logs it lacks are gone.
    let store = open_store(&dir(4)).await;
    nodes.insert(4, start_node(4, store, config.clone(), &transport).await);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let leader = known_leader(&nodes[&1]).await;
        let res = nodes[&leader]
            .raft
            .add_learner(4, BasicNode::new(addr(4)), true)
            .await;
        match res {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "cannot add learner: {e}"),
        }
    }
    applied(&nodes[&4], last_index, "learner caught up").await;
    assert!(nodes[&4].sm.installed_snapshots() >= 1);
    let learned = nodes[&4].sm.commands();
    for cmd in &expected {
        assert!(learned.contains(cmd), "learner lacks {cmd:?}");
    }
    let leader = known_leader(&nodes[&1]).await;
    assert_eq!(learned, nodes[&leader].sm.commands());

    // Restart the learner: its purged log no longer holds the data, the stored snapshot does.
    let node4 = nodes.remove(&4).unwrap();
    transport.unregister(&addr(4));
    node4.raft.shutdown().await.unwrap();
    drop(node4);
    let store = open_store(&dir(4)).await;
    let restored = TestSm::open(store.snapshots()).unwrap().commands();
    assert!(!restored.is_empty(), "state not restored from the snapshot");
    assert_eq!(restored, learned[..restored.len()]);
    let node4 = start_node(4, store, config.clone(), &transport).await;
    applied(&node4, last_index, "restarted learner caught up").await;
    assert_eq!(node4.sm.commands(), learned);

    for node in nodes.values().chain([&node4]) {
        node.raft.shutdown().await.unwrap();
    }
}
