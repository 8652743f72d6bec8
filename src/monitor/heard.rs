//! The peers this monitor has exchanged Raft messages with, kept in its data directory.
//!
//! A monitor whose data directory is empty looks, to the group, the same on its first start as
//! after its disk was replaced; only the second is dangerous (it could vote as if it had never
//! voted, or count towards a quorum without holding the entries it acknowledged). So every
//! monitor remembers, durably, the id of every peer that answered one of its Raft requests or
//! sent it one that Raft accepted: such a peer had Raft state. A monitor starting empty asks its
//! peers whether they heard from it (`membership::join`).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use viewkv_raft::{NodeId, OnHeard};

use super::MonitorError;

/// The file, in the data directory: one peer id per line.
const FILE: &str = "heard-peers";

/// The set of peers heard from, and its file.
#[derive(Debug)]
pub struct Heard {
    /// This monitor's own id: never recorded (a node does not vouch for itself).
    me: NodeId,
    /// Where the set is kept.
    path: PathBuf,
    /// The set, as last written.
    ids: Mutex<BTreeSet<NodeId>>,
}

impl Heard {
    /// The set kept in `dir` (empty if there is no file yet).
    pub fn open(me: NodeId, dir: &Path) -> Result<Heard, MonitorError> {
        let path = dir.join(FILE);
        let ids = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text).map_err(|line| {
                MonitorError::Config(format!(
                    "{} is damaged: {line:?} is not a monitor id",
                    path.display()
                ))
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(err) => {
                return Err(MonitorError::Storage(format!(
                    "cannot read {}: {err}",
                    path.display()
                )))
            }
        };
        Ok(Heard {
            me,
            path,
            ids: Mutex::new(ids),
        })
    }

    /// The hook to give the Raft network and dispatcher.
    pub fn hook(self: &Arc<Heard>) -> OnHeard {
        let heard = self.clone();
        Arc::new(move |id| heard.note(id))
    }

    /// Record that `id` took part in a Raft exchange. Written (and synced) the first time only.
    pub fn note(&self, id: NodeId) {
        if id == self.me {
            return;
        }
        let mut ids = match self.ids.lock() {
            Ok(ids) => ids,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !ids.insert(id) {
            return;
        }
        if let Err(err) = write(&self.path, &ids) {
            tracing::warn!(
                "cannot record monitor {id} in {}: {err}",
                self.path.display()
            );
        }
    }

    /// Every peer heard from.
    pub fn ids(&self) -> Vec<NodeId> {
        match self.ids.lock() {
            Ok(ids) => ids.iter().copied().collect(),
            Err(poisoned) => poisoned.into_inner().iter().copied().collect(),
        }
    }
}

/// The ids in `text`, or the first line that is not one.
fn parse(text: &str) -> Result<BTreeSet<NodeId>, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| line.parse().map_err(|_| line.to_string()))
        .collect()
}

/// Replace the file with `ids`: a temporary file, synced, renamed over it.
fn write(path: &Path, ids: &BTreeSet<NodeId>) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    let mut file = std::fs::File::create(&partial)?;
    for id in ids {
        writeln!(file, "{id}")?;
    }
    file.sync_all()?;
    std::fs::rename(&partial, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_survive_a_reopen_and_self_is_never_recorded() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let heard = Heard::open(1, dir.path()).expect("an empty set");
        assert!(heard.ids().is_empty());
        heard.note(3);
        heard.note(1);
        heard.note(2);
        heard.note(3);
        let again = Heard::open(1, dir.path()).expect("the written set");
        assert_eq!(again.ids(), vec![2, 3]);
    }

    #[test]
    fn a_damaged_file_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join(FILE), "2\nnot-an-id\n").expect("a file");
        let err = Heard::open(1, dir.path()).expect_err("a damaged file");
        assert!(err.to_string().contains("not-an-id"), "{err}");
    }
}
