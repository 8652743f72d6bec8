//! openraft's storage test suite against the redb [`LogStore`].

mod common;

use common::TestSm;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageError, StorageIOError};
use tempfile::TempDir;
use viewkv_raft::{LogStore, NodeId, Store, TypeConfig};

/// Builds a fresh store (in its own temporary directory) for every suite case.
struct Builder;

impl StoreBuilder<TypeConfig, LogStore, TestSm, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, TestSm), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        let store =
            Store::open(dir.path()).map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        let sm = TestSm::open(store.snapshots())?;
        Ok((dir, store.log_store(), sm))
    }
}

#[test]
#[allow(clippy::result_large_err)] // the suite's own error type
fn openraft_suite() -> Result<(), StorageError<NodeId>> {
    Suite::test_all(Builder)
}
