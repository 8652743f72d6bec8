//! Backups through the client library: [`Client::dump`] writes a consistent snapshot of the
//! service's data to a file, page by page while the service keeps serving;
//! [`Client::restore`] writes a dump's records into a service.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;

use super::dump_file::{DumpFileError, DumpHeader, DumpReader, DumpWriter};
use super::{Client, ClientError, ReadConsistency};
use crate::kv::api::{unpack_records, DumpPage, DumpReply, DumpRequest, KvError, DUMP};

/// Most key and value bytes a dump asks for in one page.
pub const PAGE_BYTES: u32 = 1 << 20;
/// How many times a dump starts over when the primary loses its snapshot (a failover).
const DUMP_ATTEMPTS: u32 = 3;
/// How many times a restore sends one record whose outcome was unknown (a put of the same
/// value twice is harmless).
const PUT_ATTEMPTS: u32 = 3;
/// How often a restore reports progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// How far a dump or restore is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackupProgress {
    /// Keys written so far.
    pub keys: u64,
    /// Keys in all.
    pub total_keys: u64,
}

/// How to restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Write into a service that already holds keys (the dump's keys overwrite theirs; keys
    /// the dump lacks are kept).
    pub force: bool,
    /// How many writes are in flight at once.
    pub writers: usize,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            force: false,
            writers: 32,
        }
    }
}

/// Why a dump or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The cluster did not answer as it should.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The file could not be written or read, or is damaged.
    #[error(transparent)]
    File(#[from] DumpFileError),
    /// `restore` into a service that holds keys, without `force`.
    #[error("the service already holds {keys} keys; restore writes into an empty service (give --force to write the dump's keys over them; keys the dump lacks are kept)")]
    NotEmpty {
        /// Keys it holds.
        keys: u64,
    },
    /// The primary lost the dump's snapshot on every attempt.
    #[error("the primary changed during each of {DUMP_ATTEMPTS} attempts at the dump; try again once the service is stable")]
    Unstable,
    /// One record could not be restored; the records before it may have been.
    #[error("restoring key {key:?}: {source}")]
    Put {
        /// The key, as text where it is text.
        key: String,
        /// Why.
        source: ClientError,
    },
}

/// A dump page, `None` when the primary no longer holds the snapshot.
fn settle_page(reply: DumpReply) -> Result<Result<Option<DumpPage>, ClientError>, String> {
    match reply {
        DumpReply::Page(page) => Ok(Ok(Some(page))),
        DumpReply::Err(KvError::DumpUnknown { .. }) => Ok(Ok(None)),
        DumpReply::Err(err) if err.is_retryable() => Err(err.to_string()),
        DumpReply::Err(err) => Ok(Err(ClientError::Refused(err))),
        DumpReply::Count(_) => Err("answered a page request with a count".into()),
    }
}

/// Where a dump is written until it is complete.
fn partial(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

impl Client {
    /// How many keys the service holds.
    pub async fn count(&mut self) -> Result<u64, ClientError> {
        self.router
            .call_primary(DUMP, &DumpRequest::Count, |reply| match reply {
                DumpReply::Count(keys) => Ok(Ok(keys)),
                DumpReply::Err(err) if err.is_retryable() => Err(err.to_string()),
                DumpReply::Err(err) => Ok(Err(ClientError::Refused(err))),
                DumpReply::Page(_) => Err("answered a count request with a page".into()),
            })
            .await
    }

    /// Write a consistent snapshot of the service's data to `path`: every write acknowledged
    /// before the dump began is in it, and no write after. The file appears only once complete
    /// (it is written as `PATH.partial`, then renamed); `progress` hears after every page.
    pub async fn dump(
        &mut self,
        path: &Path,
        mut progress: impl FnMut(BackupProgress),
    ) -> Result<DumpHeader, BackupError> {
        let temporary = partial(path);
        for _ in 0..DUMP_ATTEMPTS {
            if let Some(header) = self.dump_once(&temporary, &mut progress).await? {
                std::fs::rename(&temporary, path).map_err(|source| DumpFileError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                return Ok(header);
            }
        }
        Err(BackupError::Unstable)
    }

    /// One attempt at a dump into `path`; `None` if the primary lost the snapshot.
    async fn dump_once(
        &mut self,
        path: &Path,
        progress: &mut impl FnMut(BackupProgress),
    ) -> Result<Option<DumpHeader>, BackupError> {
        let begin = DumpRequest::Begin {
            max_bytes: PAGE_BYTES,
        };
        let Some(mut page) = self.router.call_primary(DUMP, &begin, settle_page).await? else {
            return Ok(None);
        };
        let header = DumpHeader {
            view: page.view,
            index: page.index,
            keys: page.total_keys,
            bytes: page.total_bytes,
            taken_ms: crate::kv::wall_ms(),
        };
        let mut writer = DumpWriter::create(path, &header)?;
        let mut keys = 0;
        loop {
            keys += writer.packed(&page.records)?;
            progress(BackupProgress {
                keys,
                total_keys: header.keys,
            });
            if page.last {
                break;
            }
            let after = unpack_records(&page.records)
                .ok()
                .and_then(|pairs| pairs.last().map(|(key, _)| key.to_vec()))
                .unwrap_or_default();
            let next = DumpRequest::Next {
                dump: page.dump,
                after,
                max_bytes: PAGE_BYTES,
            };
            match self.router.call_primary(DUMP, &next, settle_page).await? {
                Some(next) => page = next,
                None => return Ok(None),
            }
        }
        writer.finish()?;
        Ok(Some(header))
    }

    /// Write the records of the dump in `path` into the service, `options.writers` at a time;
    /// refuses a service holding keys unless `options.force`. The whole file is checked
    /// before anything is written, so a damaged dump changes nothing.
    pub async fn restore(
        &mut self,
        path: &Path,
        options: RestoreOptions,
        mut progress: impl FnMut(BackupProgress),
    ) -> Result<DumpHeader, BackupError> {
        let header = check(path).await?;
        let keys = self.count().await?;
        if keys > 0 && !options.force {
            return Err(BackupError::NotEmpty { keys });
        }
        let (send, records) = mpsc::channel(options.writers.max(1) * 64);
        let reader = {
            let path = path.to_path_buf();
            tokio::task::spawn_blocking(move || -> Result<(), DumpFileError> {
                let mut reader = DumpReader::open(&path)?;
                while let Some(record) = reader.next_record()? {
                    if send.blocking_send(record).is_err() {
                        break;
                    }
                }
                Ok(())
            })
        };
        let records = Arc::new(Mutex::new(records));
        let done = Arc::new(AtomicU64::new(0));
        let mut writers = JoinSet::new();
        for _ in 0..options.writers.max(1) {
            let mut client = self.clone();
            client.set_read_consistency(ReadConsistency::Linearizable);
            let (records, done) = (records.clone(), done.clone());
            writers.spawn(async move {
                loop {
                    let next = records.lock().await.recv().await;
                    let Some((key, value)) = next else {
                        return Ok(());
                    };
                    client.put_again(&key, &value).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let report = |done: &AtomicU64| BackupProgress {
            keys: done.load(Ordering::Relaxed),
            total_keys: header.keys,
        };
        loop {
            match tokio::time::timeout(PROGRESS_EVERY, writers.join_next()).await {
                Err(_) => progress(report(&done)),
                Ok(None) => break,
                Ok(Some(Ok(Ok(())))) => {}
                Ok(Some(Ok(Err(err)))) => return Err(err),
                Ok(Some(Err(panic))) => std::panic::resume_unwind(panic.into_panic()),
            }
        }
        match reader.await {
            Ok(read) => read?,
            Err(panic) => std::panic::resume_unwind(panic.into_panic()),
        }
        progress(report(&done));
        Ok(header)
    }

    /// Put `key`, sending it again while its outcome is unknown.
    async fn put_again(&mut self, key: &[u8], value: &[u8]) -> Result<(), BackupError> {
        let mut attempt = 1;
        loop {
            match self.put(key, value).await {
                Ok(()) => return Ok(()),
                Err(ClientError::Indeterminate { .. }) if attempt < PUT_ATTEMPTS => attempt += 1,
                Err(source) => {
                    return Err(BackupError::Put {
                        key: String::from_utf8_lossy(key).into_owned(),
                        source,
                    })
                }
            }
        }
    }
}

/// Read the whole dump in `path`, checking every record and its end; its header.
async fn check(path: &Path) -> Result<DumpHeader, DumpFileError> {
    let path = path.to_path_buf();
    let checked = tokio::task::spawn_blocking(move || {
        let mut reader = DumpReader::open(&path)?;
        while reader.next_record()?.is_some() {}
        Ok(reader.header().clone())
    })
    .await;
    match checked {
        Ok(header) => header,
        Err(panic) => std::panic::resume_unwind(panic.into_panic()),
    }
}
