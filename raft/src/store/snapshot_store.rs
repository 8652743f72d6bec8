//! The last state machine snapshot, stored next to the Raft log: [`SnapshotStore`].

use std::sync::Arc;

use openraft::{ErrorSubject, ErrorVerb, SnapshotMeta, StorageError};
use redb::{Database, ReadableDatabase};

use super::{decode, encode, DbError, KEY_SNAPSHOT_DATA, KEY_SNAPSHOT_META, SNAPSHOT};
use crate::{Node, NodeId};

/// Durable storage of the last snapshot of the application's state machine.
///
/// The state machine lives in the application; it saves every snapshot it builds or installs
/// here and, on restart, loads the last one to rebuild its state (the log entries it covers
/// may already be purged). Cheap to clone.
#[derive(Clone)]
pub struct SnapshotStore {
    /// The database shared with the [`super::Store`] this snapshot store came from.
    db: Arc<Database>,
}

impl SnapshotStore {
    /// Wraps the shared database.
    pub(super) fn new(db: Arc<Database>) -> Self {
        SnapshotStore { db }
    }

    /// Durably replace the stored snapshot.
    ///
    /// Blocks until the snapshot is fsynced; async callers with large snapshots may want to
    /// run it in `tokio::task::spawn_blocking`.
    // openraft's own error type, so state machines can pass it on with `?`.
    #[allow(clippy::result_large_err)]
    pub fn save(
        &self,
        meta: &SnapshotMeta<NodeId, Node>,
        data: &[u8],
    ) -> Result<(), StorageError<NodeId>> {
        self.write(meta, data).map_err(|e| {
            e.into_storage(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
            )
        })
    }

    /// The last saved snapshot, if any.
    #[allow(clippy::result_large_err, clippy::type_complexity)]
    pub fn load(
        &self,
    ) -> Result<Option<(SnapshotMeta<NodeId, Node>, Vec<u8>)>, StorageError<NodeId>> {
        self.read()
            .map_err(|e| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Read))
    }

    /// Writes metadata and data in one fsynced transaction, so they always match.
    fn write(&self, meta: &SnapshotMeta<NodeId, Node>, data: &[u8]) -> Result<(), DbError> {
        let meta = encode(meta)?;
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(SNAPSHOT)?;
            table.insert(KEY_SNAPSHOT_META, meta.as_slice())?;
            table.insert(KEY_SNAPSHOT_DATA, data)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Reads metadata and data from one consistent read transaction.
    #[allow(clippy::type_complexity)]
    fn read(&self) -> Result<Option<(SnapshotMeta<NodeId, Node>, Vec<u8>)>, DbError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SNAPSHOT)?;
        let meta = match table.get(KEY_SNAPSHOT_META)? {
            Some(guard) => decode(guard.value())?,
            None => return Ok(None),
        };
        let data = match table.get(KEY_SNAPSHOT_DATA)? {
            Some(guard) => guard.value().to_vec(),
            None => return Err(DbError::MissingSnapshotData),
        };
        Ok(Some((meta, data)))
    }
}
