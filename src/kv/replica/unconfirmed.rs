//! The primary's entries that the backup has not confirmed yet: what the replication task
//! sends, and — key by key — how long a read under the lease must wait before it may answer.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use crate::kv::api::{Entry, Op};

/// Most entries in one forward.
const MAX_BATCH_ENTRIES: usize = 1024;
/// Most key and value bytes in one forward.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// Entries applied on the primary and not yet confirmed by the backup, in index order.
#[derive(Debug, Default)]
pub struct Unconfirmed {
    /// The entries.
    entries: VecDeque<Entry>,
    /// For each key some entry here writes, its hash and the newest such entry's index. Two
    /// keys with one hash share a slot, which only makes a read wait for a write it need not:
    /// kept by hash, the table allocates nothing per write, and (a table placed by the hash we
    /// give it) hashes nothing twice.
    written: HashTable<(u64, u64)>,
    /// Hashes keys for `written`.
    hasher: RandomState,
    /// The newest entry here that writes every key (a flush), or 0.
    everything: u64,
    /// Entries up to this index were dropped for a transfer before they were confirmed, so
    /// `written` no longer knows their keys: a read waits for all of them.
    untracked: u64,
}

impl Unconfirmed {
    /// Add the entry just applied.
    pub fn push(&mut self, entry: Entry) {
        let index = entry.index;
        let all = entry.request.op.touch(&mut |key| {
            let hash = self.hasher.hash_one(key);
            match self.written.find_mut(hash, |&(h, _)| h == hash) {
                Some(slot) => slot.1 = index,
                None => {
                    self.written.insert_unique(hash, (hash, index), |&(h, _)| h);
                }
            }
        });
        if all {
            self.everything = index;
        }
        self.entries.push_back(entry);
    }

    /// The backup holds every entry up to `applied`: forget them.
    pub fn confirm(&mut self, applied: u64) {
        while self.entries.front().is_some_and(|e| e.index <= applied) {
            let Some(entry) = self.entries.pop_front() else {
                break;
            };
            entry.request.op.touch(&mut |key| {
                let hash = self.hasher.hash_one(key);
                if let Ok(slot) = self.written.find_entry(hash, |&(h, _)| h == hash) {
                    if slot.get().1 == entry.index {
                        slot.remove();
                    }
                }
            });
        }
        if self.everything <= applied {
            self.everything = 0;
        }
    }

    /// A transfer of the state as of `index` replaces the stream: drop every entry (those up
    /// to `index` are in the snapshot, and none after it exists yet).
    pub fn restart_at(&mut self, index: u64) {
        self.entries.clear();
        self.written.clear();
        self.everything = 0;
        self.untracked = index;
    }

    /// The entries after `sent`, up to the batch limits; with `only_full`, none unless they
    /// fill a batch (more entries follow the last that fits).
    pub fn batch_after(&self, sent: u64, only_full: bool) -> Vec<&Entry> {
        let first = self.entries.partition_point(|e| e.index <= sent);
        let (mut count, mut bytes, mut full) = (0, 0, false);
        for entry in self.entries.range(first..) {
            let size = entry.request.op.bytes();
            if count > 0 && (count >= MAX_BATCH_ENTRIES || bytes + size > MAX_BATCH_BYTES) {
                full = true;
                break;
            }
            bytes += size;
            count += 1;
        }
        if only_full && !full {
            return Vec::new();
        }
        self.entries.range(first..first + count).collect()
    }

    /// The index that must be confirmed before a read of `op` may show what it read: the
    /// newest entry here that writes a key it reads (0 if none).
    pub fn read_waits_for(&self, op: &Op) -> u64 {
        let mut newest = 0;
        let all = op.touch(&mut |key| {
            let hash = self.hasher.hash_one(key);
            if let Some(&(_, index)) = self.written.find(hash, |&(h, _)| h == hash) {
                newest = newest.max(index);
            }
        });
        if all {
            newest = self.entries.back().map_or(0, |e| e.index);
        }
        newest.max(self.everything).max(self.untracked)
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Their key and value bytes.
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.request.op.bytes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::api::Request;

    fn entry(index: u64, op: Op) -> Entry {
        Entry {
            index,
            at_ms: 0,
            request: Request {
                client: 1,
                seq: index,
                deadline_ms: u64::MAX,
                op,
            },
        }
    }

    fn put(key: &str) -> Op {
        Op::Put {
            key: key.into(),
            value: b"v".to_vec(),
        }
    }

    fn get(key: &str) -> Op {
        Op::Get { key: key.into() }
    }

    #[test]
    fn a_read_waits_only_for_the_unconfirmed_writes_of_its_own_keys() {
        let mut u = Unconfirmed::default();
        u.push(entry(1, put("a")));
        u.push(entry(2, put("b")));
        u.push(entry(3, put("a")));
        assert_eq!(u.read_waits_for(&get("a")), 3);
        assert_eq!(u.read_waits_for(&get("b")), 2);
        assert_eq!(u.read_waits_for(&get("c")), 0);
        let mget = Op::MGet {
            keys: vec![b"c".to_vec().into(), b"b".to_vec().into()],
        };
        assert_eq!(u.read_waits_for(&mget), 2);
        let scan = Op::Scan {
            prefix: Vec::new(),
            after: None,
            limit: 10,
            values: true,
        };
        assert_eq!(u.read_waits_for(&scan), 3, "a scan waits for everything");
        u.confirm(2);
        assert_eq!(u.read_waits_for(&get("b")), 0);
        assert_eq!(
            u.read_waits_for(&get("a")),
            3,
            "the newer write to a is unconfirmed"
        );
        u.confirm(3);
        assert_eq!(u.read_waits_for(&get("a")), 0);
        assert_eq!(u.len(), 0);
    }

    #[test]
    fn a_flush_holds_every_read_and_a_transfer_holds_reads_until_its_index() {
        let mut u = Unconfirmed::default();
        u.push(entry(1, put("a")));
        u.push(entry(2, Op::Flush));
        assert_eq!(u.read_waits_for(&get("zzz")), 2);
        u.confirm(2);
        assert_eq!(u.read_waits_for(&get("zzz")), 0);
        u.push(entry(3, put("a")));
        u.restart_at(3);
        assert!(u.batch_after(0, false).is_empty());
        assert_eq!(
            u.read_waits_for(&get("b")),
            3,
            "what the transfer carries is unknown"
        );
    }

    #[test]
    fn a_multi_counts_as_a_write_of_each_of_its_keys() {
        let mut u = Unconfirmed::default();
        u.push(entry(1, put("a")));
        u.push(entry(
            2,
            Op::Multi {
                ops: vec![put("b"), put("c")],
            },
        ));
        assert_eq!(u.read_waits_for(&get("c")), 2);
        assert_eq!(u.read_waits_for(&get("d")), 0);
        let reads = Op::Multi {
            ops: vec![get("d"), get("a")],
        };
        assert_eq!(
            u.read_waits_for(&reads),
            1,
            "a MULTI of reads waits for each"
        );
        u.push(entry(
            3,
            Op::Multi {
                ops: vec![put("x"), Op::Flush],
            },
        ));
        assert_eq!(u.read_waits_for(&get("zzz")), 3, "a flush inside holds all");
    }

    #[test]
    fn batches_start_after_what_was_sent_and_stop_at_the_limits() {
        let mut u = Unconfirmed::default();
        for i in 1..=(MAX_BATCH_ENTRIES as u64 + 5) {
            u.push(entry(i, put("k")));
        }
        let first = u.batch_after(0, true);
        assert_eq!(first.len(), MAX_BATCH_ENTRIES, "a full batch");
        assert_eq!(u.batch_after(0, false), first);
        assert!(
            u.batch_after(MAX_BATCH_ENTRIES as u64, true).is_empty(),
            "the rest does not fill a batch"
        );
        let rest = u.batch_after(MAX_BATCH_ENTRIES as u64, false);
        assert_eq!(
            rest.iter().map(|e| e.index).collect::<Vec<_>>(),
            (MAX_BATCH_ENTRIES as u64 + 1..=MAX_BATCH_ENTRIES as u64 + 5).collect::<Vec<_>>()
        );
        assert_eq!(u.bytes(), (MAX_BATCH_ENTRIES + 5) * 2);
    }
}
