//! Linearizability of a history against the key/value model.
//!
//! Every call touches one key and keys are independent objects, so a history is linearizable iff
//! each key's sub-history is (P-compositionality); each key is checked on its own. The per-key
//! search is Wing & Gong's, with Lowe's improvements ("Testing for linearizability", 2017):
//! call and return entries in one doubly linked list ordered by time; linearizing an operation
//! lifts its two entries out of the list and backtracking puts them back; a cache of
//! (set of linearized operations, model state) configurations already explored cuts repeated
//! work. An operation with an unknown outcome returns at +∞ and accepts any return value, so it
//! may be linearized anywhere after its invocation, or never (which is the same as at the end).
//!
//! Three prunings keep hot keys tractable, each dropping only choices that another choice
//! dominates (if the dropped one led to a linearization, so does the kept one):
//! - a completed read that fits the current value is linearized at once, without trying other
//!   orders (moving a read earlier, to where it already fits, breaks nothing);
//! - an unknown-outcome call that would not change the value is not placed (it can go last);
//! - an unknown-outcome read is left out altogether.
//!
//! Configurations are cached as 128-bit hashes (Zobrist hashing of the set, a keyed hash of the
//! value), so memory per configuration is constant however long values grow.
//!
//! Cost: thousands of operations per key at a few concurrent clients per key take milliseconds.
//! The search is exponential in the worst case, and what makes it so in practice is many
//! unknown-outcome writes on one key shared by many clients: each one stays a candidate from its
//! invocation on. Such keys may come back [`Verdict::Unknown`]; spread a workload over more keys,
//! and lean on the append-set check, which needs no search.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::history::{self, Bytes, Call, HistoryError, Operation, Outcome};
use super::model::{self, Next};

/// A verdict's severity, best first: a history's verdict is the worst of its keys'.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Verdict {
    /// Some order of the operations, consistent with real time, explains every return value.
    Linearizable,
    /// The time budget ran out before the search decided.
    Unknown,
    /// No such order exists.
    NotLinearizable,
}

/// The verdict on one key, with what explains it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyVerdict {
    /// Some order explains every return value.
    Linearizable,
    /// No order does; the counterexample shows where the search got furthest.
    NotLinearizable(Counterexample),
    /// The budget ran out.
    Unknown {
        /// How many search steps were spent, to judge how far from done it was.
        explored: u64,
    },
}

impl KeyVerdict {
    /// This verdict's severity.
    pub fn verdict(&self) -> Verdict {
        match self {
            KeyVerdict::Linearizable => Verdict::Linearizable,
            KeyVerdict::NotLinearizable(_) => Verdict::NotLinearizable,
            KeyVerdict::Unknown { .. } => Verdict::Unknown,
        }
    }
}

/// Where the search for a linearization of a key got furthest before failing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counterexample {
    /// How many operations the longest linearizable prefix found holds.
    pub prefix_len: usize,
    /// The last few operations of that prefix, in linearization order (the whole prefix can be
    /// thousands long; its end is what matters to a reader).
    pub prefix_tail: Vec<Operation>,
    /// The key's value after that prefix (`None`: absent).
    pub value: Option<Vec<u8>>,
    /// The completed operations that could not be placed next, in invocation order: the last one
    /// had already returned, so it had to come before anything invoked later, and neither it nor
    /// any order of the others before it fits the value.
    pub unplaced: Vec<Operation>,
}

/// The linearizability verdict on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyReport {
    /// The key.
    pub key: Vec<u8>,
    /// How many operations touched it, to put the verdict in proportion.
    pub operations: usize,
    /// What the search found.
    pub verdict: KeyVerdict,
}

/// The linearizability verdict on a whole history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// One entry per key, in key order.
    pub keys: Vec<KeyReport>,
}

impl Report {
    /// The worst verdict of any key (an empty history is linearizable).
    pub fn verdict(&self) -> Verdict {
        self.keys
            .iter()
            .map(|key| key.verdict.verdict())
            .max()
            .unwrap_or(Verdict::Linearizable)
    }
}

/// Checks that `history` is linearizable with respect to the key/value model, spending about
/// `budget` of wall-clock time (every key gets at least a few hundred search steps, so small
/// histories are decided even with a zero budget). Time is shared fairly between the keys still
/// undecided. Fails only on a history that cannot have been recorded.
pub fn check(history: &[Operation], budget: Duration) -> Result<Report, HistoryError> {
    let deadline = Instant::now().checked_add(budget);
    history::validate(history)?;
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.call.key()).or_default().push(op);
    }
    let cache_limit = (CACHE_ENTRIES / by_key.len().max(1)).max(MIN_CACHE_ENTRIES);
    let mut keys: Vec<(&[u8], usize, Slot)> = by_key
        .into_iter()
        .map(|(key, ops)| {
            let operations = ops.len();
            let search = Search::new(ops, cache_limit);
            (key, operations, Slot::Searching(Box::new(search)))
        })
        .collect();
    let mut first_round = true;
    loop {
        let undecided = keys
            .iter()
            .filter(|(_, _, slot)| matches!(slot, Slot::Searching(_)))
            .count();
        let now = Instant::now();
        let out_of_time = deadline.is_some_and(|deadline| now >= deadline);
        if undecided == 0 || (out_of_time && !first_round) {
            break;
        }
        let share = deadline.map(|deadline| {
            deadline.saturating_duration_since(now) / u32::try_from(undecided).unwrap_or(u32::MAX)
        });
        for (_, _, slot) in &mut keys {
            if let Slot::Searching(search) = slot {
                let until = share.map(|share| Instant::now() + share);
                if let Some(verdict) = search.run(until) {
                    *slot = Slot::Done(verdict);
                }
            }
        }
        first_round = false;
    }
    let keys = keys
        .into_iter()
        .map(|(key, operations, slot)| KeyReport {
            key: key.to_vec(),
            operations,
            verdict: match slot {
                Slot::Done(verdict) => verdict,
                Slot::Searching(search) => KeyVerdict::Unknown {
                    explored: search.explored,
                },
            },
        })
        .collect();
    Ok(Report { keys })
}

/// One key's progress inside [`check`].
enum Slot<'a> {
    /// Still searching; boxed because a search is large and a decided key drops it.
    Searching(Box<Search<'a>>),
    /// Decided.
    Done(KeyVerdict),
}

/// The list's first sentinel: its `next` is the earliest entry still in the list.
const HEAD: usize = 0;
/// The list's last sentinel, so that every real entry has a successor to link to.
const TAIL: usize = 1;
/// What sentinels hold in place of an operation index.
const NO_OP: usize = usize::MAX;
/// How many search steps run between two looks at the clock.
const STEPS_PER_CLOCK_CHECK: u32 = 512;
/// How many operations of the linearizable prefix a counterexample shows.
const PREFIX_SHOWN: usize = 8;
/// How many configurations all keys' caches hold at most together (16 bytes each, in hash
/// tables at most half full: about 256 MiB). A full cache is emptied: the search stays correct,
/// it only loses its memory of dead ends.
const CACHE_ENTRIES: usize = 1 << 23;
/// The least a key's cache may hold, however many keys share [`CACHE_ENTRIES`].
const MIN_CACHE_ENTRIES: usize = 1 << 16;

/// A call or return event of one operation, linked in time order.
struct Entry {
    /// Index of the operation in the key's operations ([`NO_OP`] for the sentinels).
    op: usize,
    /// For a call entry, the index of its return entry; `None` for returns and sentinels. The
    /// search tries to linearize calls and must backtrack at returns.
    ret: Option<usize>,
    /// The previous entry in time order (while linked; kept while lifted, to relink).
    prev: usize,
    /// The next entry in time order (while linked; kept while lifted, to relink).
    next: usize,
}

/// One linearized operation on the search stack.
struct Frame {
    /// The call entry lifted out of the list, to put back when backtracking.
    call: usize,
    /// The key's value and its hash before the operation, when the operation changed them.
    undo: Option<(Option<Vec<u8>>, u128)>,
    /// Whether the operation was read-only and placed as soon as it fit: then no other choice
    /// at that point can succeed if this one failed, and backtracking goes on past it.
    forced: bool,
}

/// The search for a linearization of one key's operations; it can pause and resume, so keys
/// can share the time budget.
struct Search<'a> {
    /// The key's operations; entries refer to them by index.
    ops: Vec<&'a Operation>,
    /// Per operation: whether it is read-only (see [`model::read_only`]).
    read_only: Vec<bool>,
    /// Arena of list entries: the two sentinels, then every call and return in time order.
    entries: Vec<Entry>,
    /// The entry the search looks at next.
    cursor: usize,
    /// The key's value after the operations linearized so far (`None`: absent).
    value: Option<Vec<u8>>,
    /// 128-bit hash of `value`, so that cache entries stay small however large values grow.
    value_hash: u128,
    /// Per operation, a random 128-bit key; the set of linearized operations is hashed as the
    /// xor of their keys (Zobrist hashing), updated in constant time.
    op_keys: Vec<u128>,
    /// Xor of `op_keys` over the linearized operations.
    set_hash: u128,
    /// The linearized operations, in linearization order.
    stack: Vec<Frame>,
    /// Configurations already reached, as `set_hash ^ value_hash`: reaching one again cannot
    /// lead anywhere new. All hashes are independently keyed and 128 bits wide, so mistaking
    /// two configurations for each other is astronomically unlikely.
    cache: HashSet<u128, BuildHasherDefault<KeyHasher>>,
    /// How many configurations `cache` may hold before it is emptied.
    cache_limit: usize,
    /// How many operations that returned are not linearized yet: at zero the search succeeds,
    /// since the remaining unknown-outcome operations can all go last (or never happen).
    unplaced_known: usize,
    /// Keys for the two 64-bit halves of every 128-bit hash.
    hashers: (RandomState, RandomState),
    /// The furthest the search got: the counterexample if it fails.
    deepest: Option<Counterexample>,
    /// Search steps so far, reported if the budget runs out.
    explored: u64,
}

impl<'a> Search<'a> {
    /// A search over `ops`, all on one key, remembering at most `cache_limit` configurations.
    fn new(mut ops: Vec<&'a Operation>, cache_limit: usize) -> Search<'a> {
        // A read whose outcome is unknown changes nothing and may have returned anything: it
        // constrains nothing, and searching past it would only cost time.
        ops.retain(|op| {
            !matches!(
                (&op.call, &op.outcome),
                (Call::Get { .. }, Outcome::Unknown)
            )
        });
        // (time, rank, op): at equal times calls come first, so operations that touch at one
        // instant count as concurrent, and unknown outcomes return after everything else.
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            events.push((op.invoke, 0, i));
            events.push(match op.complete() {
                Some(at) => (at, 1, i),
                None => (u64::MAX, 2, i),
            });
        }
        events.sort_unstable();
        let last = events.len() + 1;
        let mut entries = vec![
            Entry {
                op: NO_OP,
                ret: None,
                prev: HEAD,
                next: if events.is_empty() { TAIL } else { 2 },
            },
            Entry {
                op: NO_OP,
                ret: None,
                prev: if events.is_empty() { HEAD } else { last },
                next: TAIL,
            },
        ];
        let mut call_entry = vec![HEAD; ops.len()];
        for (index, &(_, rank, op)) in (2..).zip(&events) {
            entries.push(Entry {
                op,
                ret: None,
                prev: if index == 2 { HEAD } else { index - 1 },
                next: if index == last { TAIL } else { index + 1 },
            });
            if rank == 0 {
                call_entry[op] = index;
            } else {
                // A return sorts after its own call (validated: it is not earlier).
                entries[call_entry[op]].ret = Some(index);
            }
        }
        let hashers = (RandomState::new(), RandomState::new());
        let mut search = Search {
            read_only: ops
                .iter()
                .map(|op| model::read_only(&op.call, &op.outcome))
                .collect(),
            op_keys: (0..ops.len())
                .map(|i| hash128(&hashers, (OP_KEY, i)))
                .collect(),
            unplaced_known: ops.iter().filter(|op| op.complete().is_some()).count(),
            cursor: HEAD,
            ops,
            entries,
            value: None,
            value_hash: hash128(&hashers, (VALUE, None::<&[u8]>)),
            set_hash: 0,
            stack: Vec::new(),
            cache: HashSet::default(),
            cache_limit,
            hashers,
            deepest: None,
            explored: 0,
        };
        search.settle();
        search
    }

    /// Searches until decided, or until `until` passes (`None`: no limit); `None` if undecided.
    fn run(&mut self, until: Option<Instant>) -> Option<KeyVerdict> {
        let mut countdown = STEPS_PER_CLOCK_CHECK;
        loop {
            if self.unplaced_known == 0 {
                return Some(KeyVerdict::Linearizable);
            }
            countdown -= 1;
            if countdown == 0 {
                countdown = STEPS_PER_CLOCK_CHECK;
                if until.is_some_and(|until| Instant::now() >= until) {
                    return None;
                }
            }
            self.explored += 1;
            let entry = self.cursor;
            if self.entries[entry].ret.is_none() {
                if !self.backtrack() {
                    let example = self.deepest.take().unwrap_or_else(|| self.snapshot());
                    return Some(KeyVerdict::NotLinearizable(example));
                }
            } else if self.linearize(entry, false) {
                self.settle();
            } else {
                self.cursor = self.entries[entry].next;
            }
        }
    }

    /// In a configuration just reached: linearizes pending read-only operations while one fits
    /// (placing it now is as good as any later place), then points the cursor at the first
    /// candidate. If a fitting read leads to a configuration already explored, this one is a
    /// dead end too: the cursor goes to the first return entry, to backtrack.
    fn settle(&mut self) {
        let mut entry = self.entries[HEAD].next;
        while self.entries[entry].ret.is_some() {
            let index = self.entries[entry].op;
            let op = self.ops[index];
            let fits = || model::step(self.value.as_deref(), &op.call, &op.outcome).is_some();
            if !self.read_only[index] || !fits() {
                entry = self.entries[entry].next;
            } else if self.linearize(entry, true) {
                entry = self.entries[HEAD].next;
            } else {
                while self.entries[entry].ret.is_some() {
                    entry = self.entries[entry].next;
                }
                self.cursor = entry;
                return;
            }
        }
        self.cursor = self.entries[HEAD].next;
    }

    /// Tries to linearize the operation called at `entry` next; false if the model refuses it or
    /// the configuration it leads to was already explored. `forced`: see [`Frame::forced`].
    fn linearize(&mut self, entry: usize, forced: bool) -> bool {
        let index = self.entries[entry].op;
        let op = self.ops[index];
        let Some(next) = model::step(self.value.as_deref(), &op.call, &op.outcome) else {
            return false;
        };
        let unchanged = match &next {
            Next::Same => true,
            Next::Absent => self.value.is_none(),
            Next::Value(value) => self.value.as_ref() == Some(value),
        };
        if unchanged && op.complete().is_none() {
            // An unknown-outcome call that changes nothing here is as well placed at the end,
            // where it is always valid: the configurations without it already cover this one.
            return false;
        }
        let next_hash = match &next {
            Next::Same => self.value_hash,
            Next::Absent => hash128(&self.hashers, (VALUE, None::<&[u8]>)),
            Next::Value(value) => hash128(&self.hashers, (VALUE, Some(value.as_slice()))),
        };
        let set_hash = self.set_hash ^ self.op_keys[index];
        if self.cache.len() >= self.cache_limit {
            self.cache.clear();
        }
        if !self.cache.insert(set_hash ^ next_hash) {
            return false;
        }
        self.set_hash = set_hash;
        let undo = match next {
            Next::Same => None,
            Next::Absent => Some(self.replace_value(None, next_hash)),
            Next::Value(value) => Some(self.replace_value(Some(value), next_hash)),
        };
        self.stack.push(Frame {
            call: entry,
            undo,
            forced,
        });
        if op.complete().is_some() {
            self.unplaced_known -= 1;
        }
        self.lift(entry);
        true
    }

    /// Undoes linearizations back to the last unforced one and moves past it; false if there
    /// is none left to undo.
    fn backtrack(&mut self) -> bool {
        if self
            .deepest
            .as_ref()
            .is_none_or(|deepest| self.stack.len() > deepest.prefix_len)
        {
            self.deepest = Some(self.snapshot());
        }
        while let Some(frame) = self.stack.pop() {
            let index = self.entries[frame.call].op;
            self.set_hash ^= self.op_keys[index];
            if let Some((value, hash)) = frame.undo {
                self.value = value;
                self.value_hash = hash;
            }
            if self.ops[index].complete().is_some() {
                self.unplaced_known += 1;
            }
            self.unlift(frame.call);
            if !frame.forced {
                self.cursor = self.entries[frame.call].next;
                return true;
            }
        }
        false
    }

    /// Sets the key's value, returning the previous value and hash.
    fn replace_value(&mut self, value: Option<Vec<u8>>, hash: u128) -> (Option<Vec<u8>>, u128) {
        let value = std::mem::replace(&mut self.value, value);
        let hash = std::mem::replace(&mut self.value_hash, hash);
        (value, hash)
    }

    /// Unlinks the call entry `call` and its return entry.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if let Some(ret) = self.entries[call].ret {
            self.unlink(ret);
        }
    }

    /// Relinks what [`Search::lift`] unlinked, in reverse order (lifts are undone last first,
    /// so the neighbours each entry remembers are linked again by then).
    fn unlift(&mut self, call: usize) {
        if let Some(ret) = self.entries[call].ret {
            self.relink(ret);
        }
        self.relink(call);
    }

    /// Takes `entry` out of the list, leaving its own links as they were.
    fn unlink(&mut self, entry: usize) {
        let Entry { prev, next, .. } = self.entries[entry];
        self.entries[prev].next = next;
        self.entries[next].prev = prev;
    }

    /// Puts `entry` back between the neighbours it remembers.
    fn relink(&mut self, entry: usize) {
        let Entry { prev, next, .. } = self.entries[entry];
        self.entries[prev].next = entry;
        self.entries[next].prev = entry;
    }

    /// Describes the current configuration, taken when the search is stuck at a return entry.
    fn snapshot(&self) -> Counterexample {
        let shown = self.stack.len().saturating_sub(PREFIX_SHOWN);
        let prefix_tail = self.stack[shown..]
            .iter()
            .map(|frame| self.ops[self.entries[frame.call].op].clone())
            .collect();
        let stuck = self.entries[self.cursor].op;
        let mut unplaced = Vec::new();
        let mut entry = self.entries[HEAD].next;
        // Everything before the cursor is a call entry of a pending operation.
        while entry != self.cursor && entry != TAIL {
            let op = self.ops[self.entries[entry].op];
            if self.entries[entry].op != stuck && op.complete().is_some() {
                unplaced.push(op.clone());
            }
            entry = self.entries[entry].next;
        }
        if let Some(op) = self.ops.get(stuck) {
            unplaced.push((*op).clone());
        }
        Counterexample {
            prefix_len: self.stack.len(),
            prefix_tail,
            value: self.value.clone(),
            unplaced,
        }
    }
}

/// Tag of the values hashed into [`Search::op_keys`], so they never hash like key values.
const OP_KEY: u8 = 0;
/// Tag of the key values hashed into [`Search::value_hash`].
const VALUE: u8 = 1;

/// 128-bit hash of `item`, from two independently keyed 64-bit hashes.
fn hash128(hashers: &(RandomState, RandomState), item: impl Hash) -> u128 {
    (u128::from(hashers.0.hash_one(&item)) << 64) | u128::from(hashers.1.hash_one(&item))
}

/// Hashes the cache's keys, which are uniformly random already, by keeping their low 64 bits.
#[derive(Default)]
struct KeyHasher(
    /// The hash so far.
    u64,
);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u128(&mut self, key: u128) {
        self.0 = key as u64;
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |verdict| {
            self.keys
                .iter()
                .filter(|key| key.verdict.verdict() == verdict)
                .count()
        };
        writeln!(
            f,
            "linearizability: {} ({} keys: {} linearizable, {} not, {} undecided)",
            match self.verdict() {
                Verdict::Linearizable => "linearizable",
                Verdict::Unknown => "UNDECIDED",
                Verdict::NotLinearizable => "NOT LINEARIZABLE",
            },
            self.keys.len(),
            count(Verdict::Linearizable),
            count(Verdict::NotLinearizable),
            count(Verdict::Unknown),
        )?;
        self.keys.iter().try_for_each(|key| write!(f, "{key}"))
    }
}

impl fmt::Display for KeyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "  key {} ({} ops): ", Bytes(&self.key), self.operations)?;
        match &self.verdict {
            KeyVerdict::Linearizable => writeln!(f, "linearizable"),
            KeyVerdict::Unknown { explored } => {
                writeln!(
                    f,
                    "undecided: budget exhausted after {explored} search steps"
                )
            }
            KeyVerdict::NotLinearizable(example) => {
                writeln!(f, "NOT linearizable")?;
                write!(f, "{example}")
            }
        }
    }
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "    longest linearizable prefix found: {} operations",
            self.prefix_len
        )?;
        if self.prefix_tail.len() < self.prefix_len {
            write!(f, ", ending with")?;
        }
        writeln!(f)?;
        for op in &self.prefix_tail {
            writeln!(f, "      {op}")?;
        }
        match &self.value {
            Some(value) => writeln!(f, "    leaving the value {}", Bytes(value))?,
            None => writeln!(f, "    leaving the key absent")?,
        }
        writeln!(
            f,
            "    then none of these could be placed (the last had already returned):"
        )?;
        for op in &self.unplaced {
            writeln!(f, "      {op}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::put_hash;
    use super::super::sim;
    use super::*;

    /// Generous: the hand-written histories are decided in microseconds.
    const BUDGET: Duration = Duration::from_secs(60);

    /// An operation by `client` over `[invoke, complete]` that returned `value`.
    fn op(client: u64, call: Call, invoke: u64, complete: u64, value: Option<&str>) -> Operation {
        Operation::ok(client, call, invoke, complete, value.map(Into::into))
    }

    /// The verdict on `history`, printing the report for failing runs.
    fn verdict(history: &[Operation]) -> Verdict {
        let report = check(history, BUDGET).expect("well-formed history");
        println!("{report}");
        report.verdict()
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let history = [
            op(1, Call::get("k"), 0, 1, None),
            op(1, Call::put("k", "a"), 2, 3, None),
            op(2, Call::get("k"), 4, 5, Some("a")),
            op(1, Call::append("k", "b"), 6, 7, None),
            op(2, Call::get("k"), 8, 9, Some("ab")),
            op(1, Call::put_hash("k", "c"), 10, 11, Some("ab")),
            op(3, Call::get("other"), 10, 11, None),
            op(
                2,
                Call::delete("k"),
                12,
                13,
                std::str::from_utf8(&put_hash(Some(b"ab"), b"c")).ok(),
            ),
            op(1, Call::get("k"), 14, 15, None),
        ];
        assert_eq!(verdict(&history), Verdict::Linearizable);
        assert_eq!(verdict(&[]), Verdict::Linearizable);
    }

    #[test]
    fn concurrent_writes_may_land_in_either_order() {
        for (first, second) in [("a", "b"), ("b", "a")] {
            let history = [
                op(1, Call::put("k", "a"), 0, 10, None),
                op(2, Call::put("k", "b"), 1, 9, None),
                // Concurrent with both writes: may see either, or neither.
                op(3, Call::get("k"), 2, 3, None),
                op(4, Call::get("k"), 4, 5, Some(first)),
                // After both: sees the one that landed last, for good.
                op(3, Call::get("k"), 11, 12, Some(second)),
                op(4, Call::get("k"), 13, 14, Some(second)),
            ];
            assert_eq!(verdict(&history), Verdict::Linearizable);
        }
        // Operations touching at one instant count as concurrent.
        let touching = [
            op(1, Call::put("k", "a"), 0, 5, None),
            op(2, Call::get("k"), 5, 6, None),
        ];
        assert_eq!(verdict(&touching), Verdict::Linearizable);
    }

    #[test]
    fn reads_that_flip_back_are_not_linearizable() {
        let history = [
            op(1, Call::put("k", "a"), 0, 10, None),
            op(2, Call::put("k", "b"), 1, 9, None),
            op(3, Call::get("k"), 11, 12, Some("a")),
            op(4, Call::get("k"), 13, 14, Some("b")),
        ];
        assert_eq!(verdict(&history), Verdict::NotLinearizable);
    }

    #[test]
    fn stale_read_is_not_linearizable() {
        let stale = op(3, Call::get("k"), 4, 5, Some("a"));
        let history = [
            op(1, Call::put("k", "a"), 0, 1, None),
            op(2, Call::put("k", "b"), 2, 3, None),
            stale.clone(),
            op(4, Call::put("unrelated", "x"), 0, 9, None),
        ];
        let report = check(&history, BUDGET).expect("well-formed history");
        println!("{report}");
        assert_eq!(report.verdict(), Verdict::NotLinearizable);
        let [k, unrelated] = &report.keys[..] else {
            panic!("two keys expected: {report:?}");
        };
        assert_eq!(unrelated.verdict, KeyVerdict::Linearizable);
        let KeyVerdict::NotLinearizable(example) = &k.verdict else {
            panic!("key k should fail: {report:?}");
        };
        assert_eq!(example.prefix_len, 2);
        assert_eq!(example.value, Some(b"b".to_vec()));
        assert_eq!(example.unplaced, [stale]);
        let text = report.to_string();
        assert!(text.contains("NOT LINEARIZABLE"), "{text}");
        assert!(text.contains(r#"c3 get("k") -> "a" [4, 5]"#), "{text}");
    }

    #[test]
    fn lost_write_is_not_linearizable() {
        let history = [
            op(1, Call::put("k", "a"), 0, 1, None),
            op(2, Call::get("k"), 2, 3, Some("a")),
            op(1, Call::put("k", "b"), 4, 5, None),
            op(2, Call::get("k"), 6, 7, Some("a")),
        ];
        assert_eq!(verdict(&history), Verdict::NotLinearizable);
        let from_nothing = [
            op(1, Call::put("k", "a"), 0, 1, None),
            op(2, Call::get("k"), 2, 3, None),
        ];
        assert_eq!(verdict(&from_nothing), Verdict::NotLinearizable);
    }

    #[test]
    fn incr_counts_each_call_once() {
        // Two concurrent INCRs return 1 and 2 in either order; a later read sees 2.
        for (first, second) in [("1", "2"), ("2", "1")] {
            let history = [
                op(1, Call::incr("n"), 0, 10, Some(first)),
                op(2, Call::incr("n"), 1, 9, Some(second)),
                op(3, Call::get("n"), 11, 12, Some("2")),
            ];
            assert_eq!(verdict(&history), Verdict::Linearizable);
        }
        // Both returning 1 means one increment was lost (or applied to a stale copy).
        let twice = [
            op(1, Call::incr("n"), 0, 10, Some("1")),
            op(2, Call::incr("n"), 1, 9, Some("1")),
        ];
        assert_eq!(verdict(&twice), Verdict::NotLinearizable);
        // An acknowledged INCR the final read does not count is lost.
        let lost = [
            op(1, Call::incr("n"), 0, 1, Some("1")),
            op(1, Call::incr("n"), 2, 3, Some("2")),
            op(2, Call::get("n"), 4, 5, Some("1")),
        ];
        assert_eq!(verdict(&lost), Verdict::NotLinearizable);
        // An INCR whose outcome is unknown may count, or not, but at most once.
        let unknown = |seen: &str| {
            [
                Operation::unknown(1, Call::incr("n"), 0),
                op(2, Call::incr("n"), 1, 2, Some("1")),
                op(2, Call::get("n"), 3, 4, Some(seen)),
            ]
        };
        assert_eq!(verdict(&unknown("1")), Verdict::Linearizable);
        assert_eq!(verdict(&unknown("2")), Verdict::Linearizable);
        assert_eq!(verdict(&unknown("3")), Verdict::NotLinearizable);
        // INCR of a value that is not an integer cannot have returned.
        let text = [
            op(1, Call::put("n", "x"), 0, 1, None),
            op(1, Call::incr("n"), 2, 3, Some("1")),
        ];
        assert_eq!(verdict(&text), Verdict::NotLinearizable);
    }

    #[test]
    fn duplicated_append_is_not_linearizable() {
        let history = [
            op(1, Call::append("k", "x"), 0, 1, None),
            op(2, Call::get("k"), 2, 3, Some("xx")),
        ];
        assert_eq!(verdict(&history), Verdict::NotLinearizable);
        let once = [
            op(1, Call::append("k", "x"), 0, 1, None),
            op(2, Call::get("k"), 2, 3, Some("x")),
        ];
        assert_eq!(verdict(&once), Verdict::Linearizable);
    }

    #[test]
    fn put_hash_must_return_the_previous_value() {
        let stored = String::from_utf8_lossy(&put_hash(Some(b"a"), b"z")).into_owned();
        let right = [
            op(1, Call::put("k", "a"), 0, 1, None),
            op(1, Call::put_hash("k", "z"), 2, 3, Some("a")),
            op(2, Call::get("k"), 4, 5, Some(&stored)),
        ];
        assert_eq!(verdict(&right), Verdict::Linearizable);
        let wrong_previous = [
            op(1, Call::put("k", "a"), 0, 1, None),
            op(1, Call::put_hash("k", "z"), 2, 3, Some("b")),
        ];
        assert_eq!(verdict(&wrong_previous), Verdict::NotLinearizable);
        let wrong_hash = [
            op(1, Call::put_hash("k", "z"), 0, 1, None),
            op(2, Call::get("k"), 2, 3, Some(&stored)),
        ];
        assert_eq!(verdict(&wrong_hash), Verdict::NotLinearizable);
    }

    #[test]
    fn unknown_put_may_take_effect_late() {
        let history = [
            op(1, Call::put("k", "a"), 0, 1, None),
            Operation::unknown(2, Call::put("k", "b"), 2),
            op(3, Call::get("k"), 3, 4, Some("a")),
            op(3, Call::get("k"), 10, 11, Some("b")),
            op(3, Call::get("k"), 12, 13, Some("b")),
        ];
        assert_eq!(verdict(&history), Verdict::Linearizable);
        // But not before it was invoked.
        let early = [
            op(1, Call::put("k", "a"), 0, 1, None),
            op(3, Call::get("k"), 2, 3, Some("b")),
            Operation::unknown(2, Call::put("k", "b"), 4),
        ];
        assert_eq!(verdict(&early), Verdict::NotLinearizable);
        // Nor twice.
        let twice = [
            Operation::unknown(2, Call::append("k", "b"), 0),
            op(3, Call::get("k"), 2, 3, Some("bb")),
        ];
        assert_eq!(verdict(&twice), Verdict::NotLinearizable);
    }

    #[test]
    fn unknown_put_may_never_take_effect() {
        let history = [
            op(1, Call::put("k", "a"), 0, 1, None),
            Operation::unknown(2, Call::put("k", "b"), 2),
            Operation::unknown(2, Call::append("k", "c"), 3),
            Operation::unknown(4, Call::get("k"), 3),
            op(3, Call::get("k"), 4, 5, Some("a")),
            op(3, Call::get("k"), 10, 11, Some("a")),
        ];
        assert_eq!(verdict(&history), Verdict::Linearizable);
    }

    #[test]
    fn delete_returns_and_removes() {
        let history = [
            op(1, Call::delete("k"), 0, 1, None),
            op(1, Call::put("k", "a"), 2, 3, None),
            op(2, Call::delete("k"), 4, 5, Some("a")),
            op(1, Call::get("k"), 6, 7, None),
            op(2, Call::delete("k"), 8, 9, None),
            op(1, Call::append("k", "b"), 10, 11, None),
            op(1, Call::get("k"), 12, 13, Some("b")),
        ];
        assert_eq!(verdict(&history), Verdict::Linearizable);
        let deletes_nothing = [
            op(1, Call::put("k", "a"), 0, 1, None),
            op(2, Call::delete("k"), 2, 3, None),
        ];
        assert_eq!(verdict(&deletes_nothing), Verdict::NotLinearizable);
        let not_removed = [
            op(1, Call::put("k", "a"), 0, 1, None),
            op(2, Call::delete("k"), 2, 3, Some("a")),
            op(1, Call::get("k"), 4, 5, Some("a")),
        ];
        assert_eq!(verdict(&not_removed), Verdict::NotLinearizable);
    }

    #[test]
    fn malformed_history_is_an_error() {
        let history = [
            op(1, Call::put("k", "a"), 0, 1, None),
            op(1, Call::get("k"), 5, 4, Some("a")),
        ];
        assert!(matches!(
            check(&history, BUDGET),
            Err(HistoryError::ReturnsBeforeInvoke { index: 1, .. })
        ));
    }

    #[test]
    fn exhausted_budget_is_unknown() {
        // Twelve concurrent appends and a read that no order explains: the search must try
        // every order of every subset before it can say so.
        let mut history: Vec<Operation> = (0..12)
            .map(|i| op(i, Call::append("k", format!("<{i}>")), 0, 100, None))
            .collect();
        history.push(op(99, Call::get("k"), 101, 102, Some("<nope>")));
        let report = check(&history, Duration::ZERO).expect("well-formed history");
        println!("{report}");
        assert_eq!(report.verdict(), Verdict::Unknown);
        assert!(matches!(
            report.keys[..],
            [KeyReport {
                verdict: KeyVerdict::Unknown { explored: 1.. },
                ..
            }]
        ));
        // With a few appends the same search finishes, and fails.
        history.drain(4..12);
        assert_eq!(verdict(&history), Verdict::NotLinearizable);
    }

    #[test]
    fn random_linearizable_histories_pass_and_corrupted_reads_fail() {
        let (seed, mut rng) = sim::rng();
        let spread = sim::Shape {
            clients: 5,
            keys: 2,
            ops: 300,
            unknown_percent: 5,
        };
        // One hot key, ten clients at once, a few timeouts.
        let hot = sim::Shape {
            clients: 10,
            keys: 1,
            ops: 300,
            unknown_percent: 2,
        };
        let mut counted = 0;
        for round in 0..20 {
            let shape = if round % 2 == 0 { &spread } else { &hot };
            let history = sim::linearizable_history(&mut rng, shape);
            counted += history
                .iter()
                .filter(|op| matches!(op.call, Call::Incr { .. }) && op.complete().is_some())
                .count();
            let report = check(&history, BUDGET).expect("well-formed history");
            assert_eq!(
                report.verdict(),
                Verdict::Linearizable,
                "seed {seed}, round {round}:\n{report}"
            );

            // A read of a value nobody wrote.
            let mut corrupt = history.clone();
            let Some(read) = corrupt.iter_mut().find(|op| {
                matches!(op.call, Call::Get { .. }) && matches!(op.outcome, Outcome::Ok { .. })
            }) else {
                panic!("seed {seed}, round {round}: no completed read");
            };
            read.outcome = Outcome::Ok {
                at: read.complete().unwrap_or(read.invoke),
                value: Some(b"<never written>".to_vec()),
            };
            let report = check(&corrupt, BUDGET).expect("well-formed history");
            assert_eq!(
                report.verdict(),
                Verdict::NotLinearizable,
                "seed {seed}, round {round}:\n{report}"
            );

            // A stale read: the value of a put that a later write had certainly overwritten.
            let Some(stale) = sim::stale_read(&history) else {
                panic!("seed {seed}, round {round}: no stale read to plant");
            };
            let report = check(&stale, BUDGET).expect("well-formed history");
            assert_eq!(
                report.verdict(),
                Verdict::NotLinearizable,
                "seed {seed}, round {round}:\n{report}"
            );
        }
        assert!(counted > 0, "seed {seed}: no INCR succeeded");
    }

    #[test]
    fn ten_thousand_operations_over_five_keys() {
        let (seed, mut rng) = sim::rng();
        let shape = sim::Shape {
            clients: 8,
            keys: 5,
            ops: 10_000,
            unknown_percent: 1,
        };
        let history = sim::linearizable_history(&mut rng, &shape);
        let started = Instant::now();
        let report = check(&history, BUDGET).expect("well-formed history");
        println!(
            "checked {} operations in {:?}",
            history.len(),
            started.elapsed()
        );
        assert_eq!(
            report.verdict(),
            Verdict::Linearizable,
            "seed {seed}:\n{report}"
        );
        assert_eq!(report.keys.len(), 5);
    }
}
