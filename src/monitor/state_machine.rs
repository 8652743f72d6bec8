//! The monitor's Raft state machine: the [`ViewTable`], changed only by committed
//! [`Decision`]s, snapshotted durably so the Raft log can be purged.

use std::io::Cursor;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use viewkv_raft::{Command, CommandReply, Node, NodeId, SnapshotStore, TypeConfig};

use super::format::{decode_decision, decode_snapshot, encode_snapshot, FormatError};
use super::MonitorError;
use crate::net::encode;
use crate::view::ViewTable;

/// Everything the state machine holds; also what a snapshot holds (see `format.rs`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Applied {
    /// The last log entry applied.
    pub last_applied: Option<LogId<NodeId>>,
    /// The last membership applied (openraft asks for it back on restart).
    pub membership: StoredMembership<NodeId, Node>,
    /// The view table itself.
    pub table: ViewTable,
}

/// The state machine. Clones share state: the Raft core applies, the monitor reads.
#[derive(Clone)]
pub struct StateMachine {
    /// The applied state, read by every ping and view request.
    state: Arc<RwLock<Applied>>,
    /// Where snapshots are kept durably.
    snapshots: SnapshotStore,
}

fn snapshot_error(err: FormatError) -> StorageError<NodeId> {
    openraft::StorageIOError::read_snapshot(None, &err).into()
}

impl StateMachine {
    /// The state machine, starting from the last durable snapshot if there is one.
    pub fn open(snapshots: SnapshotStore) -> Result<StateMachine, MonitorError> {
        let stored = snapshots
            .load()
            .map_err(|err| MonitorError::Storage(err.to_string()))?;
        let applied = match stored {
            Some((_, bytes)) => decode_snapshot(&bytes)
                .map_err(|err| MonitorError::Storage(format!("the stored snapshot: {err}")))?,
            None => Applied::default(),
        };
        Ok(StateMachine {
            state: Arc::new(RwLock::new(applied)),
            snapshots,
        })
    }

    /// A read guard on the applied state.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        match self.state.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A copy of the applied view table.
    pub fn table(&self) -> ViewTable {
        self.read().table.clone()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        match self.state.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let applied = self.read().clone();
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
            snapshot_id: match applied.last_applied {
                Some(id) => format!("{}-{}", id.leader_id.term, id.index),
                None => "empty".to_string(),
            },
        };
        let bytes = encode_snapshot(&applied);
        self.snapshots.save(&meta, &bytes)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), StorageError<NodeId>> {
        let applied = self.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandReply>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut replies = Vec::new();
        {
            let mut applied = self.write();
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                let reply = match entry.payload {
                    EntryPayload::Blank => CommandReply::default(),
                    EntryPayload::Membership(membership) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                        CommandReply::default()
                    }
                    EntryPayload::Normal(Command(bytes)) => {
                        // A command this build cannot read was written by a newer one (which
                        // must not happen before every monitor is upgraded, see format.rs):
                        // logged, not fatal.
                        let done = match decode_decision(&bytes) {
                            Ok(decision) => applied.table.apply(&decision),
                            Err(err) => {
                                tracing::error!("skipping undecodable decision: {err}");
                                false
                            }
                        };
                        CommandReply(encode(&done))
                    }
                };
                replies.push(reply);
            }
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
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
        let bytes = snapshot.into_inner();
        let applied = decode_snapshot(&bytes).map_err(snapshot_error)?;
        self.snapshots.save(meta, &bytes)?;
        *self.write() = applied;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.snapshots.load()?.map(|(meta, bytes)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
