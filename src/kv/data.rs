//! The keys and values: an ordered, persistent map whose clone is O(1), so a state transfer
//! reads a snapshot while the primary keeps writing (only the paths it changes are copied).

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::ops::Bound;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, Ordering as Atomic};

/// One key/value pair in a single shared allocation: a 12-byte [`Header`], the key, the value.
/// Cloning it (as the persistent map does when it copies a node) is a reference-count bump.
///
/// The map's leaves hold one record per key, so its header is most of the per-key overhead, and
/// it is written here rather than taken from a crate: the thin `Arc`s available keep a `usize`
/// count and a `usize` length (16 bytes, plus 4 for the key's length), which puts a 16-byte key
/// with a 100-byte value (136 bytes) in the allocator's 160-byte class; with 12 bytes it is 128.
pub struct Record(NonNull<Header>);

/// What precedes the key and value in a record's allocation.
#[repr(C)]
struct Header {
    /// Clones alive. Past [`MAX_COUNT`] the process aborts rather than let it wrap.
    count: AtomicU32,
    /// Bytes of the key.
    key_len: u32,
    /// Bytes of the key and the value.
    len: u32,
}

/// Most clones of one record: far above what the map makes (one per snapshot sharing a node),
/// and low enough that no number of threads racing past it can wrap the count.
const MAX_COUNT: u32 = u32::MAX / 2;

/// The largest key plus value a record holds (limits keep values far smaller).
pub const MAX_RECORD: usize = u32::MAX as usize - std::mem::size_of::<Header>();

// SAFETY: a record is immutable after `new` and its count is atomic, as in `std::sync::Arc`.
unsafe impl Send for Record {}
// SAFETY: as above: shared access only reads the bytes or updates the count atomically.
unsafe impl Sync for Record {}

/// The allocation of a record holding `len` bytes of key and value.
fn layout(len: usize) -> Layout {
    Layout::new::<Header>()
        .extend(Layout::array::<u8>(len).expect("a record's length fits a layout"))
        .expect("a record's length fits a layout")
        .0
}

impl Record {
    /// A record of `key` and `value`.
    ///
    /// # Panics
    /// If the key and value together are over [`MAX_RECORD`] bytes; the limits refuse such
    /// values (`Config::validate` caps `max_value`) and no message carries one.
    pub fn new(key: &[u8], value: &[u8]) -> Record {
        let len = key.len() + value.len();
        assert!(
            len <= MAX_RECORD,
            "a record of {len} bytes is over {MAX_RECORD}"
        );
        let layout = layout(len);
        // SAFETY: the layout is never zero-sized (it holds the header); the header is written
        // before the bytes behind it, which are all written (key then value) before the pointer
        // escapes, so every byte a record reads is initialized.
        unsafe {
            let Some(ptr) = NonNull::new(alloc(layout).cast::<Header>()) else {
                handle_alloc_error(layout)
            };
            ptr.as_ptr().write(Header {
                count: AtomicU32::new(1),
                key_len: key.len() as u32,
                len: len as u32,
            });
            let bytes = ptr.as_ptr().add(1).cast::<u8>();
            std::ptr::copy_nonoverlapping(key.as_ptr(), bytes, key.len());
            std::ptr::copy_nonoverlapping(value.as_ptr(), bytes.add(key.len()), value.len());
            Record(ptr)
        }
    }

    fn header(&self) -> &Header {
        // SAFETY: the allocation lives while this record (one of its counted clones) does.
        unsafe { self.0.as_ref() }
    }

    /// Key and value.
    fn bytes(&self) -> &[u8] {
        let len = self.header().len as usize;
        // SAFETY: `new` wrote `len` bytes right after the header (whose size is a multiple of
        // the bytes' alignment, 1), and they are never written again.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().add(1).cast::<u8>(), len) }
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.bytes()[..self.header().key_len as usize]
    }

    /// The value.
    pub fn value(&self) -> &[u8] {
        &self.bytes()[self.header().key_len as usize..]
    }

    /// Key plus value bytes (what limits and status count).
    pub fn size(&self) -> usize {
        self.header().len as usize
    }
}

impl Clone for Record {
    fn clone(&self) -> Self {
        // Relaxed is enough to take a clone of a record this thread can already see (as in
        // `std::sync::Arc`): the clone is published to others by whatever sends it.
        if self.header().count.fetch_add(1, Atomic::Relaxed) > MAX_COUNT {
            std::process::abort();
        }
        Record(self.0)
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if self.header().count.fetch_sub(1, Atomic::Release) != 1 {
            return;
        }
        // Every other clone's last use happened before its decrement (Release); this fence
        // orders them before the free.
        fence(Atomic::Acquire);
        let layout = layout(self.header().len as usize);
        // SAFETY: the count reached zero: this was the last clone, nothing else can reach the
        // allocation, and it was made by `alloc` with this layout.
        unsafe { dealloc(self.0.as_ptr().cast::<u8>(), layout) }
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
        compare(self.key(), other.key())
    }
}

impl Borrow<Key> for Record {
    fn borrow(&self) -> &Key {
        Key::of(self.key())
    }
}

/// A key as the map looks it up: bytes in their order (as `[u8]` orders them), compared eight
/// at a time in registers. A lookup compares a key with a score of records, and the library
/// `memcmp` each of those calls cost a tenth of a write and a read at 10k keys.
#[derive(PartialEq, Eq)]
#[repr(transparent)]
pub struct Key([u8]);

impl Key {
    /// `bytes` as a key.
    pub fn of(bytes: &[u8]) -> &Key {
        // SAFETY: `Key` is `repr(transparent)` over `[u8]`: same layout and metadata.
        unsafe { &*(std::ptr::from_ref(bytes) as *const Key) }
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(&self.0, &other.0)
    }
}

/// `a.cmp(b)`, eight bytes at a time: two words of equal bytes compare as their big-endian
/// numbers do, and the first that differ decide; a short tail goes byte by byte.
fn compare(mut a: &[u8], mut b: &[u8]) -> Ordering {
    while let (Some((x, rest_a)), Some((y, rest_b))) =
        (a.split_first_chunk::<8>(), b.split_first_chunk::<8>())
    {
        if x != y {
            return u64::from_be_bytes(*x).cmp(&u64::from_be_bytes(*y));
        }
        (a, b) = (rest_a, rest_b);
    }
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
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
        self.records.get(Key::of(key)).map(Record::value)
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
        let previous = self.records.remove(Key::of(key));
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
        self.records
            .range::<_, Key>((start.map(Key::of), Bound::Unbounded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    #[test]
    fn records_keep_key_and_value_apart() {
        let r = Record::new(b"key", b"value");
        assert_eq!(
            (r.key(), r.value(), r.size()),
            (&b"key"[..], &b"value"[..], 8)
        );
        let empty = Record::new(b"", b"");
        assert_eq!((empty.key(), empty.value()), (&b""[..], &b""[..]));
        let no_value = Record::new(b"k", b"");
        assert_eq!((no_value.key(), no_value.value()), (&b"k"[..], &b""[..]));
        assert_eq!(Record::new(b"a", b"1"), Record::new(b"a", b"2"));
        assert!(Record::new(b"a", b"9") < Record::new(b"b", b""));
    }

    #[test]
    fn clones_on_many_threads_share_one_count() {
        let record = Record::new(b"key", &[7u8; 100]);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let clones: Vec<Record> = (0..1000).map(|_| record.clone()).collect();
                    assert!(clones
                        .iter()
                        .all(|c| c.key() == b"key" && c.value() == [7; 100]));
                });
            }
        });
        assert_eq!(record.header().count.load(Atomic::Relaxed), 1);
        let clone = record.clone();
        drop(record);
        assert_eq!(
            (clone.size(), clone.header().count.load(Atomic::Relaxed)),
            (103, 1)
        );
    }

    proptest! {
        #[test]
        fn keys_compare_as_their_bytes_do(
            a in vec(any::<u8>(), 0..40),
            b in vec(any::<u8>(), 0..40),
            shared in vec(any::<u8>(), 0..20),
        ) {
            // Keys that share a prefix (as most do) compare past it.
            let (a, b) = ([&shared[..], &a].concat(), [&shared[..], &b].concat());
            prop_assert_eq!(Key::of(&a).cmp(Key::of(&b)), a.cmp(&b));
            prop_assert_eq!(Key::of(&a).cmp(Key::of(&a)), Ordering::Equal);
        }
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
