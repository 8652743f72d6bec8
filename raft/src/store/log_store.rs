//! The Raft log on redb: [`LogStore`] implements openraft's storage-v2 log traits.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{
    blocking, decode, encode, DbError, KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE, LOGS, META,
};
use crate::{NodeId, TypeConfig};

/// Durable Raft log storage: log entries plus vote, committed and last purged log ids.
///
/// Cheap to clone; every clone (including the log readers openraft hands to replication tasks)
/// shares the same database.
#[derive(Clone)]
pub struct LogStore {
    /// The database shared with the [`super::Store`] this log store came from.
    db: Arc<Database>,
}

impl LogStore {
    /// Wraps the shared database.
    pub(super) fn new(db: Arc<Database>) -> Self {
        LogStore { db }
    }

    /// Reads and decodes one value from the meta table.
    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, DbError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        let value = match table.get(key)? {
            Some(guard) => Some(decode(guard.value())?),
            None => None,
        };
        Ok(value)
    }

    /// Durably writes one value of the meta table; returns once it is fsynced.
    async fn write_meta<T: Serialize>(&self, key: &'static str, value: &T) -> Result<(), DbError> {
        let bytes = encode(value)?;
        blocking(&self.db, move |db| {
            let txn = db.begin_write()?;
            txn.open_table(META)?.insert(key, bytes.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    /// Reads the entries whose indexes fall in `range`, in index order.
    fn read_entries<RB: RangeBounds<u64>>(
        &self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, DbError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOGS)?;
        let mut entries = Vec::new();
        for row in table.range(range)? {
            let (key, value) = row?;
            entries.push(decode_entry(key.value(), value.value())?);
        }
        Ok(entries)
    }

    /// The log id of the last entry in the log, if the log is not empty.
    fn last_entry_log_id(&self) -> Result<Option<LogId<NodeId>>, DbError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOGS)?;
        let last = match table.last()? {
            Some((key, value)) => Some(decode_entry(key.value(), value.value())?.log_id),
            None => None,
        };
        Ok(last)
    }

    /// Durably inserts already-encoded entries; returns once they are fsynced.
    async fn write_entries(&self, rows: Vec<(u64, Vec<u8>)>) -> Result<(), DbError> {
        blocking(&self.db, move |db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(LOGS)?;
                for (index, bytes) in &rows {
                    table.insert(*index, bytes.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }
}

/// Decodes a stored entry and checks that it sits under its own index.
fn decode_entry(key: u64, bytes: &[u8]) -> Result<Entry<TypeConfig>, DbError> {
    let entry: Entry<TypeConfig> = decode(bytes)?;
    if entry.log_id.index != key {
        return Err(DbError::MisplacedEntry {
            key,
            found: entry.log_id.index,
        });
    }
    Ok(entry)
}

/// Shorthand for the error about the log as a whole.
fn logs_err(verb: ErrorVerb) -> impl FnOnce(DbError) -> StorageError<NodeId> {
    move |e| e.into_storage(ErrorSubject::Logs, verb)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        self.read_entries(range).map_err(logs_err(ErrorVerb::Read))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self
            .read_meta(KEY_LAST_PURGED)
            .map_err(logs_err(ErrorVerb::Read))?;
        let last_log_id = self
            .last_entry_log_id()
            .map_err(logs_err(ErrorVerb::Read))?;
        Ok(LogState {
            last_log_id: last_log_id.or(last_purged_log_id),
            last_purged_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write_meta(KEY_VOTE, vote)
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.read_meta(KEY_VOTE)
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Read))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.write_meta(KEY_COMMITTED, &committed)
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let committed: Option<Option<LogId<NodeId>>> = self
            .read_meta(KEY_COMMITTED)
            .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Read))?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        for entry in entries {
            let bytes = encode(&entry)
                .map_err(|e| e.into_storage(ErrorSubject::Log(entry.log_id), ErrorVerb::Write))?;
            rows.push((entry.log_id.index, bytes));
        }
        let written = if rows.is_empty() {
            Ok(())
        } else {
            self.write_entries(rows).await
        };
        match written {
            // The entries are fsynced: only now may openraft count them as persisted.
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e.into_storage(ErrorSubject::Logs, ErrorVerb::Write))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let since = log_id.index;
        blocking(&self.db, move |db| {
            let txn = db.begin_write()?;
            txn.open_table(LOGS)?.retain_in(since.., |_, _| false)?;
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Log(log_id), ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let upto = log_id.index;
        let purged = encode(&log_id).map_err(logs_err(ErrorVerb::Delete))?;
        blocking(&self.db, move |db| {
            // One transaction: the purge mark and the deletion become durable together, so a
            // crash can never leave a gap between last_purged and the first entry.
            let txn = db.begin_write()?;
            txn.open_table(META)?
                .insert(KEY_LAST_PURGED, purged.as_slice())?;
            txn.open_table(LOGS)?.retain_in(..=upto, |_, _| false)?;
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Log(log_id), ErrorVerb::Delete))
    }
}
