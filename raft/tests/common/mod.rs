//! Test-only helpers shared by the integration tests: a minimal in-memory state machine that
//! keeps its snapshots in a [`SnapshotStore`], and an in-process [`Transport`].
#![allow(dead_code)]
// each test binary uses a different subset
// openraft's StorageError is large, but it is what the storage traits return.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::future::Future;
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, Config, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use viewkv_raft::{
    dispatch, CommandReply, Network, Node, NodeId, Raft, SnapshotStore, Store, Transport,
    TransportError, TypeConfig,
};

/// Everything the test state machine holds.
#[derive(Default)]
struct SmState {
    /// The last applied log id, reported to openraft by `applied_state`.
    last_applied: Option<LogId<NodeId>>,
    /// The last applied membership, reported to openraft by `applied_state`.
    membership: StoredMembership<NodeId, Node>,
    /// Every applied command's bytes, in order: the "application state".
    commands: Vec<Vec<u8>>,
    /// Number of snapshots built, to give each a unique id.
    built: u64,
    /// Number of snapshots installed from a leader, so tests can tell a snapshot arrived.
    installed: u64,
}

/// A minimal state machine: the list of applied commands; snapshots are saved in (and, on
/// start, restored from) a [`SnapshotStore`].
#[derive(Clone)]
pub struct TestSm {
    /// Shared so that tests can inspect the state while openraft owns a clone.
    state: Arc<Mutex<SmState>>,
    /// Durable snapshot storage of this node.
    snapshots: SnapshotStore,
}

/// Encodes the application state carried by a snapshot.
fn encode_commands(commands: &[Vec<u8>]) -> Result<Vec<u8>, StorageError<NodeId>> {
    bincode::serde::encode_to_vec(commands, bincode::config::standard())
        .map_err(|e| StorageIOError::write_state_machine(AnyError::new(&e)).into())
}

/// Decodes the application state carried by a snapshot.
fn decode_commands(data: &[u8]) -> Result<Vec<Vec<u8>>, StorageError<NodeId>> {
    bincode::serde::decode_from_slice(data, bincode::config::standard())
        .map(|(commands, _)| commands)
        .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)).into())
}

impl TestSm {
    /// A state machine restored from the last snapshot in `snapshots`, if any.
    pub fn open(snapshots: SnapshotStore) -> Result<TestSm, StorageError<NodeId>> {
        let mut state = SmState::default();
        if let Some((meta, data)) = snapshots.load()? {
            state.commands = decode_commands(&data)?;
            state.last_applied = meta.last_log_id;
            state.membership = meta.last_membership;
        }
        Ok(TestSm {
            state: Arc::new(Mutex::new(state)),
            snapshots,
        })
    }

    /// The applied commands so far.
    pub fn commands(&self) -> Vec<Vec<u8>> {
        self.state.lock().unwrap().commands.clone()
    }

    /// How many snapshots were installed from a leader.
    pub fn installed_snapshots(&self) -> u64 {
        self.state.lock().unwrap().installed
    }
}

impl RaftSnapshotBuilder<TypeConfig> for TestSm {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (meta, data) = {
            let mut st = self.state.lock().unwrap();
            st.built += 1;
            let index = st.last_applied.as_ref().map_or(0, |l| l.index);
            let meta = SnapshotMeta {
                last_log_id: st.last_applied,
                last_membership: st.membership.clone(),
                snapshot_id: format!("{index}-{}", st.built),
            };
            (meta, encode_commands(&st.commands)?)
        };
        self.snapshots.save(&meta, &data)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for TestSm {
    type SnapshotBuilder = TestSm;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), StorageError<NodeId>> {
        let st = self.state.lock().unwrap();
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandReply>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut st = self.state.lock().unwrap();
        let mut replies = Vec::new();
        for entry in entries {
            st.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => replies.push(CommandReply::default()),
                EntryPayload::Normal(cmd) => {
                    st.commands.push(cmd.0.clone());
                    replies.push(CommandReply(cmd.0));
                }
                EntryPayload::Membership(m) => {
                    st.membership = StoredMembership::new(Some(entry.log_id), m);
                    replies.push(CommandReply::default());
                }
            }
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> TestSm {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let commands = decode_commands(&data)?;
        self.snapshots.save(meta, &data)?;
        let mut st = self.state.lock().unwrap();
        st.commands = commands;
        st.last_applied = meta.last_log_id;
        st.membership = meta.last_membership.clone();
        st.installed += 1;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.snapshots.load()?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// An in-process transport: calls [`dispatch`] on the target node's `Raft`, found by address.
#[derive(Clone, Default)]
pub struct MemTransport {
    /// The running nodes by address; a missing address is unreachable.
    nodes: Arc<Mutex<HashMap<String, Raft>>>,
}

impl MemTransport {
    /// Makes `raft` reachable at `addr`.
    pub fn register(&self, addr: &str, raft: Raft) {
        self.nodes.lock().unwrap().insert(addr.to_string(), raft);
    }

    /// Makes `addr` unreachable.
    pub fn unregister(&self, addr: &str) {
        self.nodes.lock().unwrap().remove(addr);
    }
}

impl Transport for MemTransport {
    fn call(
        &self,
        addr: &str,
        path: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send {
        let target = self.nodes.lock().unwrap().get(addr).cloned();
        let addr = addr.to_string();
        async move {
            let raft = target.ok_or_else(|| TransportError::Unreachable(addr.clone()))?;
            match tokio::time::timeout(timeout, dispatch(&raft, path, &body)).await {
                Err(_) => Err(TransportError::Failed(format!("{addr}{path}: timeout"))),
                Ok(Err(e)) => Err(TransportError::Failed(e.to_string())),
                Ok(Ok(reply)) => Ok(reply),
            }
        }
    }
}

/// Raft timings for in-process tests: fast, yet tolerant of a loaded 2-core machine.
pub fn test_config() -> Arc<Config> {
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        install_snapshot_timeout: 2_000,
        ..Default::default()
    };
    Arc::new(config.validate().unwrap())
}

/// The address a test node registers under in a [`MemTransport`].
pub fn addr(id: NodeId) -> String {
    format!("node-{id}")
}

/// One running test node.
pub struct TestNode {
    /// The node's Raft handle.
    pub raft: Raft,
    /// The node's state machine (shared with openraft), for inspection.
    pub sm: TestSm,
}

/// Starts node `id` on `store` and makes it reachable through `transport`.
pub async fn start_node(
    id: NodeId,
    store: Store,
    config: Arc<Config>,
    transport: &MemTransport,
) -> TestNode {
    let sm = TestSm::open(store.snapshots()).unwrap();
    let raft = Raft::new(
        id,
        config,
        Network::new(transport.clone()),
        store.log_store(),
        sm.clone(),
    )
    .await
    .unwrap();
    transport.register(&addr(id), raft.clone());
    TestNode { raft, sm }
}
