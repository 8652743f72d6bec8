//! The keys and values: an ordered, persistent map whose clone is O(1), so a state transfer
//! reads a snapshot while the primary keeps writing (only the paths it changes are copied).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::ops::Bound;

use triomphe::ThinArc;

/// One key/value pair in a single shared allocation: `[key length: u32 LE][key][value]`.
/// Cloning it (as the persistent map does when it copies a node) is a reference-count bump.
/// The pointer is thin (8 bytes, the length lives in the allocation) and the count has no weak
/// half: the map's leaves hold one pointer per key, so this is most of its per-key overhead.
#[derive(Clone)]
pub struct Record(ThinArc<(), u8>);

/// Bytes of the length prefix in a [`Record`].
const PREFIX: usize = 4;

impl Record {
    /// A record of `key` and `value`. Keys are at most `u32::MAX` bytes (the limits are far
    /// lower).
    pub fn new(key: &[u8], value: &[u8]) -> Record {
        let mut bytes = Vec::with_capacity(PREFIX + key.len() + value.len());
        bytes.extend_from_slice(&(key.len() as u32).to_le_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        Record(ThinArc::from_header_and_slice((), &bytes))
    }

    /// Length prefix, key and value.
    fn bytes(&self) -> &[u8] {
        &self.0.slice
    }

    fn key_len(&self) -> usize {
        let mut prefix = [0u8; PREFIX];
        prefix.copy_from_slice(&self.bytes()[..PREFIX]);
        u32::from_le_bytes(prefix) as usize
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.bytes()[PREFIX..PREFIX + self.key_len()]
    }

    /// The value.
    pub fn value(&self) -> &[u8] {
        &self.bytes()[PREFIX + self.key_len()..]
    }

    /// Key plus value bytes (what limits and status count).
    pub fn size(&self) -> usize {
        self.bytes().len() - PREFIX
    }
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("key", &String::from_utf8_lossy(self.key()))
            .field("value_len", &self.value().len())
            .finish()
    }
}

impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Record {}

impl PartialOrd for Record {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Record {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(other.key())
    }
}

impl Borrow<[u8]> for Record {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

/// The data: records ordered by key, and the bytes they hold.
#[derive(Clone, Debug, Default)]
pub struct Data {
    /// The records. A set ordered by key: a record compares as its key.
    records: imbl::OrdSet<Record>,
    /// Sum of key and value lengths.
    bytes: usize,
    /// The keys that expire: key → when, on the service clock (ms).
    deadlines: imbl::OrdMap<Vec<u8>, u64>,
    /// The same pairs ordered by deadline, so the keys due first are found first.
    due: imbl::OrdSet<(u64, Vec<u8>)>,
}

impl Data {
    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.records.get(key).map(Record::value)
    }

    /// Set `key` to `value`; returns the previous value.
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> Option<Record> {
        let record = Record::new(key, value);
        self.bytes += record.size();
        let previous = self.records.insert(record);
        if let Some(old) = &previous {
            self.bytes -= old.size();
        }
        previous
    }

    /// Insert a record as received in a transfer.
    pub fn insert(&mut self, record: Record) {
        self.bytes += record.size();
        if let Some(old) = self.records.insert(record) {
            self.bytes -= old.size();
        }
    }

    /// Remove `key` (and its deadline); returns the removed record.
    pub fn remove(&mut self, key: &[u8]) -> Option<Record> {
        self.set_deadline(key, None);
        let previous = self.records.remove(key);
        if let Some(old) = &previous {
            self.bytes -= old.size();
        }
        previous
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Bytes of keys and values.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// When `key` expires, if it does.
    pub fn deadline(&self, key: &[u8]) -> Option<u64> {
        self.deadlines.get(key).copied()
    }

    /// Make `key` expire at `deadline`, or (`None`) never.
    pub fn set_deadline(&mut self, key: &[u8], deadline: Option<u64>) {
        if let Some(old) = self.deadlines.remove(key) {
            self.due.remove(&(old, key.to_vec()));
        }
        if let Some(at) = deadline {
            self.deadlines.insert(key.to_vec(), at);
            self.due.insert((at, key.to_vec()));
        }
    }

    /// A copy without the keys whose deadline is `now` or earlier (O(1) plus the expired).
    pub fn live(&self, now: u64) -> Data {
        let mut copy = self.clone();
        while let Some((at, key)) = copy.first_due() {
            if at > now {
                break;
            }
            let key = key.to_vec();
            copy.remove(&key);
        }
        copy
    }

    /// Keys not due by `now`.
    pub fn live_len(&self, now: u64) -> usize {
        let due = self
            .due
            .range(..(now.saturating_add(1), Vec::new()))
            .count();
        self.len() - due
    }

    /// Keys with a deadline.
    pub fn expiring(&self) -> usize {
        self.deadlines.len()
    }

    /// The key that expires first, with its deadline.
    pub fn first_due(&self) -> Option<(u64, &[u8])> {
        self.due.get_min().map(|(at, key)| (*at, key.as_slice()))
    }

    /// Records with keys after `after` (all records if `None`), in key order.
    pub fn after<'a>(&'a self, after: Option<&'a [u8]>) -> impl Iterator<Item = &'a Record> + 'a {
        self.from(match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        })
    }

    /// Records with keys from `start` on, in key order.
    pub fn from<'a>(&'a self, start: Bound<&'a [u8]>) -> impl Iterator<Item = &'a Record> + 'a {
        self.records.range::<_, [u8]>((start, Bound::Unbounded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_key_and_value_apart() {
        let r = Record::new(b"key", b"value");
        assert_eq!(
            (r.key(), r.value(), r.size()),
            (&b"key"[..], &b"value"[..], 8)
        );
        let empty = Record::new(b"", b"");
        assert_eq!((empty.key(), empty.value()), (&b""[..], &b""[..]));
        assert_eq!(Record::new(b"a", b"1"), Record::new(b"a", b"2"));
        assert!(Record::new(b"a", b"9") < Record::new(b"b", b""));
    }

    #[test]
    fn data_counts_bytes_and_iterates_in_key_order() {
        let mut data = Data::default();
        assert!(data.set(b"b", b"22").is_none());
        assert!(data.set(b"a", b"1").is_none());
        assert_eq!(
            data.set(b"b", b"333").map(|r| r.value().to_vec()),
            Some(b"22".to_vec())
        );
        assert_eq!((data.len(), data.bytes()), (2, 2 + 4));
        let keys: Vec<&[u8]> = data.after(None).map(Record::key).collect();
        assert_eq!(keys, [&b"a"[..], &b"b"[..]]);
        let keys: Vec<&[u8]> = data.after(Some(b"a")).map(Record::key).collect();
        assert_eq!(keys, [&b"b"[..]]);
        assert_eq!(data.remove(b"a").map(|r| r.size()), Some(2));
        assert_eq!(
            (data.len(), data.bytes(), data.get(b"b")),
            (1, 4, Some(&b"333"[..]))
        );
    }

    #[test]
    fn a_snapshot_does_not_see_later_writes() {
        let mut data = Data::default();
        for i in 0..10_000u32 {
            data.set(&i.to_be_bytes(), b"old");
        }
        let snapshot = data.clone();
        for i in 0..10_000u32 {
            data.set(&i.to_be_bytes(), b"new");
        }
        data.remove(&5u32.to_be_bytes());
        assert!(snapshot.after(None).all(|r| r.value() == b"old"));
        assert_eq!(snapshot.len(), 10_000);
        assert_eq!(data.len(), 9_999);
    }

    #[test]
    fn deadlines_are_kept_by_key_and_by_time() {
        let mut data = Data::default();
        data.set(b"a", b"1");
        data.set(b"b", b"2");
        data.set_deadline(b"a", Some(50));
        data.set_deadline(b"b", Some(20));
        data.set_deadline(b"b", Some(30));
        assert_eq!((data.deadline(b"a"), data.expiring()), (Some(50), 2));
        assert_eq!(data.first_due(), Some((30, &b"b"[..])));
        assert_eq!(
            (data.live_len(29), data.live_len(30), data.live_len(50)),
            (2, 1, 0)
        );
        let live = data.live(30);
        assert_eq!((live.len(), live.get(b"b"), live.expiring()), (1, None, 1));
        assert_eq!(data.len(), 2, "the original keeps its keys");
        data.remove(b"b");
        data.set_deadline(b"a", None);
        assert_eq!((data.first_due(), data.expiring()), (None, 0));
    }
}
