//! The dumps a primary has open: O(1) snapshots of its data that clients read page by page
//! (`viewkv dump`), while the live store keeps changing. Pure: the time is an argument.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::api::{pack_record, DumpPage, KvError};
use super::replica::DumpSnapshot;
use super::Data;

/// Most dumps open at once: each pins the data as it was when it began, so memory grows with
/// the writes since.
pub const MAX_OPEN_DUMPS: usize = 4;
/// A dump nobody asked a page of for this long is dropped (its client gave up).
pub const DUMP_IDLE: Duration = Duration::from_secs(60);

/// One open dump.
#[derive(Debug)]
struct OpenDump {
    /// The snapshot being read.
    data: Data,
    /// The view whose primary took it.
    view: u64,
    /// The index it reflects.
    index: u64,
    /// When a page was last asked of it.
    used: Instant,
}

/// The open dumps of one server.
#[derive(Debug, Default)]
pub struct Dumps {
    /// By id.
    open: HashMap<u64, OpenDump>,
}

impl Dumps {
    /// Open a dump of `snapshot` under the id `dump` (random, from the caller) at `now`, and
    /// return its first page of at most `max_bytes` key and value bytes.
    pub fn begin(
        &mut self,
        dump: u64,
        snapshot: DumpSnapshot,
        max_bytes: usize,
        now: Instant,
    ) -> Result<DumpPage, KvError> {
        self.open
            .retain(|_, d| now.saturating_duration_since(d.used) < DUMP_IDLE);
        if self.open.len() >= MAX_OPEN_DUMPS {
            return Err(KvError::Unavailable {
                reason: format!(
                    "{MAX_OPEN_DUMPS} dumps are already in progress on this server; try again when one is done"
                ),
            });
        }
        self.open.insert(
            dump,
            OpenDump {
                data: snapshot.data,
                view: snapshot.view,
                index: snapshot.index,
                used: now,
            },
        );
        self.page(dump, None, max_bytes, now)
    }

    /// The page of dump `dump` after key `after` (from the first key if `None`). The last page
    /// closes the dump.
    pub fn page(
        &mut self,
        dump: u64,
        after: Option<&[u8]>,
        max_bytes: usize,
        now: Instant,
    ) -> Result<DumpPage, KvError> {
        let open = self
            .open
            .get_mut(&dump)
            .ok_or(KvError::DumpUnknown { dump })?;
        open.used = now;
        let mut records = Vec::new();
        let mut payload = 0;
        let mut rest = open.data.after(after).peekable();
        while let Some(record) =
            rest.next_if(|r| records.is_empty() || payload + r.size() <= max_bytes)
        {
            payload += record.size();
            pack_record(&mut records, record.key(), record.value());
        }
        let last = rest.peek().is_none();
        drop(rest);
        let page = DumpPage {
            dump,
            view: open.view,
            index: open.index,
            total_keys: open.data.len() as u64,
            total_bytes: open.data.bytes() as u64,
            records,
            last,
        };
        if last {
            self.open.remove(&dump);
        }
        Ok(page)
    }

    /// How many dumps are open.
    pub fn open(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::api::unpack_records;

    fn snapshot(data: &Data) -> DumpSnapshot {
        DumpSnapshot {
            data: data.clone(),
            view: 3,
            index: 7,
            epoch: 0,
        }
    }

    fn keys(page: &DumpPage) -> Vec<Vec<u8>> {
        unpack_records(&page.records)
            .map(|pairs| pairs.iter().map(|(k, _)| k.to_vec()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn pages_walk_the_snapshot_not_the_live_data() {
        let mut data = Data::default();
        for i in 0..10u8 {
            data.set(&[i], &[i; 10]);
        }
        let now = Instant::now();
        let mut dumps = Dumps::default();
        let first = dumps.begin(1, snapshot(&data), 25, now).unwrap();
        assert_eq!(keys(&first), vec![vec![0], vec![1]]);
        assert_eq!((first.total_keys, first.view, first.index), (10, 3, 7));
        assert!(!first.last);
        // Writes after the snapshot are not seen.
        data.remove(&[5]);
        data.set(&[200], b"new");
        let mut seen = keys(&first);
        let mut after = seen.last().cloned();
        loop {
            let page = dumps.page(1, after.as_deref(), 25, now).unwrap();
            seen.extend(keys(&page));
            after = seen.last().cloned();
            if page.last {
                break;
            }
        }
        assert_eq!(seen, (0..10u8).map(|i| vec![i]).collect::<Vec<_>>());
        assert_eq!(dumps.open(), 0, "the last page closes the dump");
        assert_eq!(
            dumps.page(1, None, 25, now),
            Err(KvError::DumpUnknown { dump: 1 })
        );
    }

    #[test]
    fn a_record_bigger_than_a_page_still_goes_out_alone() {
        let mut data = Data::default();
        data.set(b"big", &[7; 100]);
        data.set(b"small", b"x");
        let mut dumps = Dumps::default();
        let page = dumps.begin(1, snapshot(&data), 10, Instant::now()).unwrap();
        assert_eq!(keys(&page), vec![b"big".to_vec()]);
        assert!(!page.last);
    }

    #[test]
    fn an_empty_store_dumps_as_one_last_page() {
        let mut dumps = Dumps::default();
        let page = dumps
            .begin(9, snapshot(&Data::default()), 100, Instant::now())
            .unwrap();
        assert!(page.last && page.records.is_empty() && page.total_keys == 0);
        assert_eq!(dumps.open(), 0);
    }

    #[test]
    fn open_dumps_are_bounded_and_idle_ones_expire() {
        let mut data = Data::default();
        data.set(b"a", b"1");
        data.set(b"b", b"2");
        let now = Instant::now();
        let mut dumps = Dumps::default();
        for id in 0..MAX_OPEN_DUMPS as u64 {
            dumps.begin(id, snapshot(&data), 1, now).unwrap();
        }
        assert!(matches!(
            dumps.begin(99, snapshot(&data), 1, now),
            Err(KvError::Unavailable { .. })
        ));
        let later = now + DUMP_IDLE;
        dumps.begin(99, snapshot(&data), 1, later).unwrap();
        assert_eq!(dumps.open(), 1, "the idle dumps were dropped");
    }
}
