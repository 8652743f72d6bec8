//! Durable Raft storage on redb: one database file `<dir>/raft.redb` holds the Raft log, the
//! vote / commit / purge metadata, and the last state machine snapshot.
//!
//! Keeping the snapshot in the same database as the log means that a node restarted after a log
//! purge always finds the snapshot that covers the purged entries, and can rebuild its state
//! machine from it.
//!
//! Every write transaction is committed with redb's default [`redb::Durability::Immediate`], so
//! data is fsynced before the write returns.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};
use redb::{Database, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::NodeId;

mod log_store;
mod snapshot_store;

pub use log_store::LogStore;
pub use snapshot_store::SnapshotStore;

/// Name of the database file inside the data directory.
const DB_FILE: &str = "raft.redb";

/// Log entries: index → bincode-encoded `Entry<TypeConfig>`.
const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
/// Small Raft metadata (vote, committed, last purged), keyed by the `KEY_*` names below.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The last snapshot: its metadata under [`KEY_SNAPSHOT_META`], its bytes under
/// [`KEY_SNAPSHOT_DATA`].
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

/// Meta key of the current vote.
const KEY_VOTE: &str = "vote";
/// Meta key of the last known committed log id.
const KEY_COMMITTED: &str = "committed";
/// Meta key of the last purged log id.
const KEY_LAST_PURGED: &str = "last_purged";
/// Snapshot key of the encoded `SnapshotMeta`.
const KEY_SNAPSHOT_META: &str = "meta";
/// Snapshot key of the snapshot bytes.
const KEY_SNAPSHOT_DATA: &str = "data";

/// Failure to open or create the Raft database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory does not exist and could not be created.
    #[error("cannot create raft data directory {path}: {source}")]
    CreateDir {
        /// The directory we tried to create.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// redb refused to open or create the database file (corrupt, locked, unreadable, ...).
    #[error("cannot open raft database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why it failed.
        source: redb::DatabaseError,
    },
    /// The database opened but its tables could not be created.
    #[error("cannot initialize tables in raft database {path}: {source}")]
    Init {
        /// The database file.
        path: PathBuf,
        /// Why it failed.
        source: redb::Error,
    },
}

/// The durable store of one Raft node; cheap to clone (all clones share one database).
#[derive(Clone)]
pub struct Store {
    /// The open database; shared by the log store, its readers and the snapshot store.
    db: Arc<Database>,
}

impl Store {
    /// Opens (or creates) `<dir>/raft.redb`, creating `dir` if it is missing.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        create_tables(&db).map_err(|source| StoreError::Init { path, source })?;
        Ok(Store { db: Arc::new(db) })
    }

    /// The Raft log storage (log entries, vote, committed and purged log ids).
    pub fn log_store(&self) -> LogStore {
        LogStore::new(self.db.clone())
    }

    /// The snapshot storage, for the application's state machine.
    pub fn snapshots(&self) -> SnapshotStore {
        SnapshotStore::new(self.db.clone())
    }

    /// Drop this handle and wait, up to `timeout`, until every other handle on the database
    /// (log store, readers, snapshot store) is gone too, then close the file, so the directory
    /// can be opened again, in this process as well. openraft's tasks drop theirs a moment after
    /// `Raft::shutdown` returns. Returns whether the database was closed in time.
    ///
    /// The last handle is dropped here, and the file closed (redb syncs and releases its lock
    /// then) before this returns: waiting only for the other handles to go would return while
    /// whichever task dropped the last one is still closing the file, and an immediate reopen
    /// would find it locked.
    pub async fn close(self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut db = self.db;
        loop {
            match Arc::try_unwrap(db) {
                Ok(last) => {
                    return tokio::task::spawn_blocking(move || drop(last))
                        .await
                        .is_ok()
                }
                Err(shared) if tokio::time::Instant::now() < deadline => {
                    db = shared;
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                Err(_) => return false,
            }
        }
    }
}

/// Creates every table so that later read transactions never see a missing table.
fn create_tables(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(LOGS)?;
    txn.open_table(META)?;
    txn.open_table(SNAPSHOT)?;
    txn.commit()?;
    Ok(())
}

/// Anything that can go wrong inside one storage operation; converted to openraft's
/// [`StorageError`] (with the operation's subject and verb) at the trait boundary.
#[derive(Debug, thiserror::Error)]
enum DbError {
    /// redb failed (I/O, corruption, transaction or commit error).
    #[error(transparent)]
    Redb(#[from] redb::Error),
    /// A value could not be encoded.
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// A stored value could not be decoded: the file holds something we did not write.
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// A stored value written by a newer release, in an encoding this build does not know.
    #[error("stored record format version {0} is newer than this build reads ({RECORD_VERSION}); upgrade this monitor")]
    NewerRecord(u8),
    /// A stored value decoded without consuming all its bytes.
    #[error("{0} trailing bytes after stored value")]
    TrailingBytes(usize),
    /// The blocking task running a write died (panicked or was cancelled at shutdown).
    #[error("storage task failed: {0}")]
    TaskFailed(String),
    /// Snapshot metadata is stored without its data; the file was not written by us.
    #[error("snapshot metadata present but snapshot data missing")]
    MissingSnapshotData,
    /// A log entry is stored under an index that differs from its own log id.
    #[error("log entry stored at index {key} claims index {found}")]
    MisplacedEntry {
        /// The table key.
        key: u64,
        /// The index inside the decoded entry.
        found: u64,
    },
}

/// Lets `?` lift redb's specific error types into [`DbError`] via [`redb::Error`].
macro_rules! redb_into_db_error {
    ($($t:ty),*) => {$(
        impl From<$t> for DbError {
            fn from(e: $t) -> Self {
                DbError::Redb(e.into())
            }
        }
    )*};
}
redb_into_db_error!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl DbError {
    /// Wraps this error as an openraft storage error about `subject`.
    fn into_storage(self, subject: ErrorSubject<NodeId>, verb: ErrorVerb) -> StorageError<NodeId> {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }
}

/// The most a decoder may allocate for one stored value, so a corrupt file gives an error
/// instead of an attempt to allocate gigabytes.
const MAX_STORED: usize = 1 << 30;

/// The storage configuration.
fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_STORED>()
}

/// Marks a versioned record: `[RECORD_MARK][version][bincode]`. The first release stored bare
/// bincode, and every record it stored (a vote, a log entry, a log id, snapshot metadata)
/// begins with a varint or an `Option` tag, never 0xFF; such a record reads as version 0. A
/// release that changes a record's encoding (an openraft upgrade that changes `Entry` or `Vote`)
/// adds a version here and keeps decoding the older ones, so a newer binary opens an older data
/// directory, as a rolling upgrade needs.
const RECORD_MARK: u8 = 0xFF;

/// The record version this build writes.
const RECORD_VERSION: u8 = 1;

/// Encodes a value stored in the database, with its version.
fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, DbError> {
    let mut out = vec![RECORD_MARK, RECORD_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, config())?;
    Ok(out)
}

/// Decodes a value read from the database, of any version this build knows, rejecting
/// trailing bytes.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DbError> {
    let body = match bytes {
        [RECORD_MARK, version, ..] if *version > RECORD_VERSION => {
            return Err(DbError::NewerRecord(*version))
        }
        // Versions 0 and 1 share one body encoding.
        [RECORD_MARK, _, body @ ..] => body,
        legacy => legacy,
    };
    let (value, read) = bincode::serde::decode_from_slice(body, config())?;
    if read != body.len() {
        return Err(DbError::TrailingBytes(body.len() - read));
    }
    Ok(value)
}

/// Runs a blocking database write on tokio's blocking pool so an fsync does not stall the
/// async workers that also carry heartbeats.
async fn blocking<T, F>(db: &Arc<Database>, f: F) -> Result<T, DbError>
where
    T: Send + 'static,
    F: FnOnce(&Database) -> Result<T, DbError> + Send + 'static,
{
    let db = db.clone();
    match tokio::task::spawn_blocking(move || f(&db)).await {
        Ok(res) => res,
        Err(join) => Err(DbError::TaskFailed(join.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

    use super::*;
    use crate::{Command, TypeConfig};

    fn bare<T: Serialize>(value: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(value, config()).expect("bincode encodes")
    }

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Command(vec![0xFF, 1, 2])),
        }
    }

    #[test]
    fn records_of_the_first_release_read_as_version_0() {
        for term in [0, 1, 250, 251, u64::MAX] {
            let vote = Vote::new(term, 3);
            let old = bare(&vote);
            assert_ne!(old[0], RECORD_MARK, "term {term}");
            assert_eq!(decode::<Vote<NodeId>>(&old).expect("a bare vote"), vote);
            let e = entry(term, term / 2);
            let old = bare(&e);
            assert_ne!(old[0], RECORD_MARK, "term {term}");
            assert_eq!(decode::<Entry<TypeConfig>>(&old).expect("a bare entry"), e);
            let id = Some(LogId::new(CommittedLeaderId::new(term, 2), 9));
            let old = bare(&id);
            assert_ne!(old[0], RECORD_MARK, "term {term}");
            assert_eq!(decode::<Option<LogId<NodeId>>>(&old).expect("an id"), id);
        }
    }

    #[test]
    fn records_carry_their_version_and_a_newer_one_is_refused_by_name() {
        let e = entry(7, 3);
        let mut stored = encode(&e).expect("encodes");
        assert_eq!(stored[..2], [RECORD_MARK, RECORD_VERSION]);
        assert_eq!(decode::<Entry<TypeConfig>>(&stored).expect("reads back"), e);
        stored[1] = RECORD_VERSION + 1;
        let err = decode::<Entry<TypeConfig>>(&stored).expect_err("a newer version");
        assert!(err.to_string().contains("newer"), "{err}");
        let mut trailing = encode(&e).expect("encodes");
        trailing.push(0);
        assert!(matches!(
            decode::<Entry<TypeConfig>>(&trailing),
            Err(DbError::TrailingBytes(1))
        ));
        assert!(decode::<Entry<TypeConfig>>(&[RECORD_MARK]).is_err());
    }
}
