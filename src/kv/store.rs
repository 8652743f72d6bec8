//! The replicated state: keys and values plus the duplicate table, changed only by
//! [`Store::apply`]. Deterministic: the same requests at the same times give the same state on
//! the primary and the backup — the limits included, which are the service's and travel with
//! the state, not each server's own.

use std::ops::Bound;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::api::{
    ExpireIf, KvError, Op, Replies, Reply, Request, ScanPage, Ttl, Values, When, SCAN_BYTES,
    SCAN_MAX_KEYS,
};
use super::data::{Data, Record};
use super::integer::parse_integer;
use super::sessions::{Lookup, Session, SessionBounds, Sessions};

/// Most expired keys removed besides the operation's own each time a request is applied.
pub const REAP_PER_APPLY: usize = 16;

/// `n` as an INCRBYFLOAT result: rounded to 15 significant digits (so `0.1` + `0.2` is `0.3`, as
/// Redis's long-double arithmetic gives), then the shortest decimal that reads back as that,
/// never with an exponent (`5.0e3` + `2.0e2` is `5200`).
pub fn redis_float(n: f64) -> String {
    let rounded: f64 = format!("{n:.14e}").parse().unwrap_or(n);
    if rounded == 0.0 {
        return "0".to_string();
    }
    rounded.to_string()
}

/// FNV-1a, 32 bits: the hash of PutHash (seed 000).
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(2_166_136_261u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(16_777_619)
    })
}

/// Size limits and the duplicate table's bounds. The first primary's limits become the
/// service's: they travel with the state and govern every later primary and backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest key, and largest value (also after an Append or PutHash).
    pub max_value: usize,
    /// A client not heard from for this long is forgotten with its duplicate entry. Must be
    /// longer than any client's deadline.
    pub session_ttl: Duration,
    /// Most sessions holding a saved reply; the oldest reply is dropped beyond it.
    pub max_sessions: usize,
    /// Most bytes of saved replies; the oldest reply is dropped beyond it.
    pub max_session_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_value: 8 << 20,
            session_ttl: Duration::from_secs(600),
            max_sessions: 100_000,
            max_session_bytes: 64 << 20,
        }
    }
}

impl Limits {
    /// The duplicate table's bounds these limits set.
    pub fn session_bounds(&self) -> SessionBounds {
        SessionBounds {
            ttl_ms: self.session_ttl.as_millis() as u64,
            max_sessions: self.max_sessions,
            max_bytes: self.max_session_bytes,
        }
    }
}

/// Keys, values and sessions, with the service clock and limits. Cloning is O(1).
#[derive(Clone, Debug)]
pub struct Store {
    /// The data.
    data: Data,
    /// Last write and reply per client.
    sessions: Sessions,
    /// The service's limits (see [`Limits`]).
    limits: Limits,
    /// The service clock: the latest entry time stamp applied (ms). Replicated with the state,
    /// so a new primary continues it instead of starting from its own clock.
    clock_ms: u64,
}

fn invalid(reason: &str) -> Reply {
    Reply::Err(KvError::Invalid {
        reason: reason.to_string(),
    })
}

/// The reply of an [`Op::Multi`] of `ops`: `run` each in order, or `Invalid` without running
/// any if one is a `Multi` itself.
fn each(ops: &[Op], mut run: impl FnMut(&Op) -> Reply) -> Reply {
    if ops.iter().any(|op| matches!(op, Op::Multi { .. })) {
        return invalid("MULTI calls can not be nested");
    }
    let replies = ops.iter().map(&mut run).collect();
    Reply::Ok(Some(Replies(replies).encode()))
}

fn too_large(what: &str, size: usize, limits: &Limits) -> Reply {
    Reply::Err(KvError::TooLarge {
        what: what.to_string(),
        size: size as u64,
        limit: limits.max_value as u64,
    })
}

impl Store {
    /// An empty store governed by `limits`.
    pub fn new(limits: Limits) -> Store {
        Store {
            data: Data::default(),
            sessions: Sessions::new(limits.session_bounds()),
            limits,
            clock_ms: 0,
        }
    }

    /// Apply a request at time `at_ms`. Reads just run. A write's repeat gets the saved reply,
    /// an older one is refused as stale, a new one is executed and its reply saved.
    pub fn apply(&mut self, request: &Request, at_ms: u64) -> Reply {
        // The service clock never goes back, whatever the stamp says.
        self.clock_ms = self.clock_ms.max(at_ms);
        let now = self.clock_ms;
        self.sessions.expire(now);
        self.reap(&request.op, now);
        if request.op.is_read() {
            return self.execute(&request.op);
        }
        match self.sessions.lookup(request.client, request.seq, now) {
            Lookup::Repeat(reply) => reply,
            Lookup::Evicted => Reply::Err(KvError::SessionExpired {
                client: request.client,
                seq: request.seq,
            }),
            Lookup::Stale { last } => Reply::Err(KvError::Stale {
                client: request.client,
                seq: request.seq,
                last,
            }),
            Lookup::Full => Reply::Err(KvError::Unavailable {
                reason: format!(
                    "the duplicate table is full ({} sessions); retry later",
                    self.sessions.len()
                ),
            }),
            Lookup::New => {
                let reply = self.execute(&request.op);
                self.sessions
                    .record(request.client, request.seq, reply.clone(), now);
                reply
            }
        }
    }

    fn execute(&mut self, op: &Op) -> Reply {
        let now = self.clock_ms;
        if let Err(refused) = self.within_limits(op) {
            return refused;
        }
        let previous = |r: Option<Record>| r.map(|r| r.value().to_vec());
        match op {
            Op::Multi { ops } => {
                // Undone whole (an O(1) snapshot) if its replies would not fit one message
                // back, as an MGET's values must.
                let before = self.data.clone();
                let replies = each(ops, |op| self.execute(op));
                self.fitting(replies).unwrap_or_else(|refused| {
                    self.data = before;
                    refused
                })
            }
            Op::Get { .. }
            | Op::Scan { .. }
            | Op::Ttl { .. }
            | Op::MGet { .. }
            | Op::Exists { .. } => self.read_at(op, now),
            Op::DelMany { keys } => {
                let removed = keys
                    .iter()
                    .filter(|key| self.data.remove(key).is_some())
                    .count();
                Reply::Ok(Some(removed.to_string().into_bytes()))
            }
            Op::Put { key, value } => {
                self.write(key, value);
                Reply::Ok(None)
            }
            Op::Append { key, value } => match self.append(key, value) {
                Ok(_) => Reply::Ok(None),
                Err(refused) => refused,
            },
            Op::PutHash { key, value } => {
                let old = self.data.get(key).unwrap_or_default();
                let hash = fnv1a32(&[old, value].concat()).to_string();
                Reply::Ok(previous(self.write(key, hash.as_bytes())))
            }
            Op::Delete { key } => Reply::Ok(previous(self.data.remove(key))),
            Op::Set {
                key,
                value,
                when,
                get,
                ttl,
            } => {
                // A plain SET looks the key up once, to write it (a lookup in a big store is
                // most of a write's cost).
                let write = match when {
                    When::Always => true,
                    When::Absent => self.data.get(key).is_none(),
                    When::Present => self.data.get(key).is_some(),
                };
                let old = if write {
                    let deadline = match ttl {
                        Ttl::Keep => self.data.deadline(key),
                        _ => None,
                    };
                    let old = self.write(key, value).filter(|_| *get);
                    match ttl {
                        Ttl::Clear => {}
                        Ttl::Keep => self.data.set_deadline(key, deadline),
                        Ttl::In(ms) => self.data.set_deadline(key, Some(now.saturating_add(*ms))),
                    }
                    previous(old)
                } else {
                    self.data.get(key).map(<[u8]>::to_vec)
                };
                match (get, write) {
                    (true, _) => Reply::Ok(old),
                    (false, true) => Reply::Ok(Some(Vec::new())),
                    (false, false) => Reply::Ok(None),
                }
            }
            Op::IncrBy { key, by } => {
                let old = self.data.get(key).unwrap_or(b"0");
                let Some(old) = parse_integer(old) else {
                    return invalid("value is not an integer or out of range");
                };
                let Some(new) = old.checked_add(*by) else {
                    return invalid("increment or decrement would overflow");
                };
                let new = new.to_string();
                self.data.set(key, new.as_bytes());
                Reply::Ok(Some(new.into_bytes()))
            }
            Op::AppendLen { key, value } => match self.append(key, value) {
                Ok(length) => Reply::Ok(Some(length.to_string().into_bytes())),
                Err(refused) => refused,
            },
            Op::MSet {
                pairs,
                only_if_none_exist,
            } => {
                if *only_if_none_exist && pairs.iter().any(|(k, _)| self.data.get(k).is_some()) {
                    return Reply::Ok(Some(b"0".to_vec()));
                }
                for (key, value) in pairs {
                    self.write(key, value);
                }
                Reply::Ok(Some(b"1".to_vec()))
            }
            Op::IncrByFloat { key, by } => {
                let old = self.data.get(key).unwrap_or(b"0");
                let number = |text: &[u8]| {
                    std::str::from_utf8(text)
                        .ok()
                        .and_then(|t| t.parse::<f64>().ok())
                        .filter(|n| n.is_finite())
                };
                let (Some(old), Some(by)) = (number(old), number(by.as_bytes())) else {
                    return invalid("value is not a valid float");
                };
                let new = old + by;
                if !new.is_finite() {
                    return invalid("increment would produce NaN or Infinity");
                }
                let text = redis_float(new);
                if let Err(refused) = self.fits(text.len()) {
                    return refused;
                }
                self.data.set(key, text.as_bytes());
                Reply::Ok(Some(text.into_bytes()))
            }
            Op::Expire {
                key,
                after_ms,
                only,
            } => {
                let exists = self.data.get(key).is_some();
                let old = self.data.deadline(key).unwrap_or(u64::MAX);
                let new = after_ms.map_or(u64::MAX, |ms| now.saturating_add(ms));
                let allowed = match only {
                    ExpireIf::Always => true,
                    ExpireIf::NoDeadline => old == u64::MAX,
                    ExpireIf::HasDeadline => old != u64::MAX,
                    ExpireIf::Later => new > old,
                    ExpireIf::Earlier => new < old,
                };
                let changed = match after_ms {
                    _ if !exists || !allowed => false,
                    Some(0) => self.data.remove(key).is_some(),
                    Some(ms) => {
                        self.data.set_deadline(key, Some(now.saturating_add(*ms)));
                        true
                    }
                    None => {
                        let had = self.data.deadline(key).is_some();
                        self.data.set_deadline(key, None);
                        had
                    }
                };
                Reply::Ok(Some(if changed { b"1" } else { b"0" }.to_vec()))
            }
            Op::Flush => {
                let keys = self.data.live_len(now);
                self.data = Data::default();
                Reply::Ok(Some(keys.to_string().into_bytes()))
            }
        }
    }

    /// Answer the read `op` at service time `at_ms` (or the store's clock, if later) without
    /// changing anything: keys whose deadline passed read as absent though not yet reaped.
    /// What a primary answers from its own state (under a read lease, or while no other
    /// server can be promoted) and any replica answers a stale read with; primary and backup
    /// stay identical because only replicated entries change a store.
    pub fn read(&self, op: &Op, at_ms: u64) -> Reply {
        if !op.is_read() {
            return invalid("only a read can be answered without replicating it");
        }
        if let Err(refused) = self.within_limits(op) {
            return refused;
        }
        self.read_at(op, self.clock_ms.max(at_ms))
    }

    /// Whether `op`'s key and value are within the value limit, and an operation on several
    /// keys within it as a whole: it must fit a forward to the backup like one value does (so
    /// each of its keys and values does too).
    fn within_limits(&self, op: &Op) -> Result<(), Reply> {
        let limits = &self.limits;
        if op.key().len() > limits.max_value {
            return Err(too_large("key", op.key().len(), limits));
        }
        if let Some(value) = op.value().filter(|v| v.len() > limits.max_value) {
            return Err(too_large("value", value.len(), limits));
        }
        let whole = op.names_many_keys() || matches!(op, Op::Multi { .. });
        if whole && op.bytes() > limits.max_value {
            let what = match op {
                Op::MSet { .. } => "MSET (keys and values together)",
                Op::Multi { .. } => "MULTI (keys and values together)",
                _ => "keys together",
            };
            return Err(too_large(what, op.bytes(), limits));
        }
        Ok(())
    }

    /// A read at service time `now` (see [`Store::read`]).
    fn read_at(&self, op: &Op, now: u64) -> Reply {
        let live = |key: &[u8]| {
            self.data
                .get(key)
                .filter(|_| self.data.deadline(key).is_none_or(|at| at > now))
        };
        match op {
            Op::Get { key } => Reply::Ok(live(key).map(<[u8]>::to_vec)),
            Op::Ttl { key } => {
                let ttl = match (live(key), self.data.deadline(key)) {
                    (None, _) => -2,
                    (Some(_), None) => -1,
                    (Some(_), Some(at)) => {
                        i64::try_from(at.saturating_sub(now)).unwrap_or(i64::MAX)
                    }
                };
                Reply::Ok(Some(ttl.to_string().into_bytes()))
            }
            Op::Exists { keys } => {
                let present = keys.iter().filter(|key| live(key).is_some()).count();
                Reply::Ok(Some(present.to_string().into_bytes()))
            }
            Op::MGet { keys } => {
                let values: Vec<Option<&[u8]>> = keys.iter().map(|key| live(key)).collect();
                let bytes = values.iter().flatten().map(|v| v.len()).sum::<usize>();
                // The answer must fit a message back as an MSET of the same must fit one.
                if bytes > self.limits.max_value {
                    return too_large("MGET reply (values together)", bytes, &self.limits);
                }
                let values = values.into_iter().map(|v| v.map(<[u8]>::to_vec)).collect();
                Reply::Ok(Some(Values(values).encode()))
            }
            Op::Scan {
                prefix,
                after,
                limit,
                values,
            } => Reply::Ok(Some(
                self.scan(
                    prefix,
                    after.as_ref().map(|a| a.as_slice()),
                    *limit,
                    *values,
                    now,
                )
                .encode(),
            )),
            Op::Multi { ops } => {
                let replies = each(ops, |op| self.read_at(op, now));
                self.fitting(replies).unwrap_or_else(|refused| refused)
            }
            _ => invalid("only a read can be answered without replicating it"),
        }
    }

    /// One page of keys starting with `prefix` after `after` (see [`Op::Scan`]), leaving out
    /// keys whose deadline is `now` or earlier.
    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: u32,
        values: bool,
        now: u64,
    ) -> ScanPage {
        // Nothing before the prefix can match: start there.
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut records = self
            .data
            .from(start)
            .take_while(|r| r.key().starts_with(prefix))
            .filter(|r| self.data.deadline(r.key()).is_none_or(|at| at > now))
            .peekable();
        let mut page = ScanPage::default();
        let mut bytes = 0;
        let limit = limit.clamp(1, SCAN_MAX_KEYS) as usize;
        while let Some(record) = records.next_if(|_| page.pairs.len() < limit && bytes < SCAN_BYTES)
        {
            let value = if values { record.value() } else { &[] };
            bytes += record.key().len() + value.len();
            page.pairs.push((record.key().to_vec(), value.to_vec()));
        }
        page.more = records.peek().is_some();
        page
    }

    /// Set `key` to `value` as a fresh value: it no longer expires (what `SET` does; `APPEND`
    /// and the counters keep the key's deadline).
    fn write(&mut self, key: &[u8], value: &[u8]) -> Option<Record> {
        self.data.set_deadline(key, None);
        self.data.set(key, value)
    }

    /// Remove what expired by `now`: the keys `op` touches, so it never sees an expired value,
    /// then up to [`REAP_PER_APPLY`] of the keys due first, so memory is given back without
    /// reads. Deterministic: the backup applies the same entries at the same service times.
    fn reap(&mut self, op: &Op, now: u64) {
        if self.data.expiring() > 0 {
            op.touch(&mut |key| {
                if self.data.deadline(key).is_some_and(|at| at <= now) {
                    self.data.remove(key);
                }
            });
        }
        for _ in 0..REAP_PER_APPLY {
            match self.data.first_due() {
                Some((at, key)) if at <= now => {
                    let key = key.to_vec();
                    self.data.remove(&key);
                }
                _ => break,
            }
        }
    }

    /// A Multi's `reply`, or `Err(TooLarge)` if its replies together exceed the value limit.
    fn fitting(&self, reply: Reply) -> Result<Reply, Reply> {
        match &reply {
            Reply::Ok(Some(bytes)) if bytes.len() > self.limits.max_value => Err(too_large(
                "MULTI replies (together)",
                bytes.len(),
                &self.limits,
            )),
            _ => Ok(reply),
        }
    }

    /// Whether a value of `length` bytes for `key` is within the value limit.
    fn fits(&self, length: usize) -> Result<(), Reply> {
        if length > self.limits.max_value {
            return Err(too_large("resulting value", length, &self.limits));
        }
        Ok(())
    }

    /// Append `value` to the value of `key` (absent: empty) within the value limit; the new
    /// length, or the refusal.
    fn append(&mut self, key: &[u8], value: &[u8]) -> Result<usize, Reply> {
        let old = self.data.get(key).unwrap_or_default();
        let length = old.len() + value.len();
        self.fits(length)?;
        let new = [old, value].concat();
        self.data.set(key, &new);
        Ok(length)
    }

    /// The service clock (see [`Store::apply`]'s `at_ms`).
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// The service's limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The keys and values.
    pub fn data(&self) -> &Data {
        &self.data
    }

    /// The duplicate table.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// An empty store to receive a transfer into: the sender's limits and clock.
    pub fn receiving(limits: Limits, clock_ms: u64) -> Store {
        Store {
            clock_ms,
            ..Store::new(limits)
        }
    }

    /// Add transferred records and sessions (see [`Store::receiving`]).
    pub fn extend(
        &mut self,
        records: impl IntoIterator<Item = Record>,
        deadlines: impl IntoIterator<Item = (Vec<u8>, u64)>,
        sessions: impl IntoIterator<Item = (u64, Session)>,
    ) {
        for record in records {
            self.data.insert(record);
        }
        for (key, at) in deadlines {
            self.data.set_deadline(&key, Some(at));
        }
        for (client, session) in sessions {
            self.sessions.insert(client, session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::api::BadScanPage;

    fn req(client: u64, seq: u64, op: Op) -> Request {
        Request {
            client,
            seq,
            deadline_ms: u64::MAX,
            op,
        }
    }

    fn put_hash(value: &str) -> Op {
        Op::PutHash {
            key: b"k".to_vec(),
            value: value.as_bytes().to_vec(),
        }
    }

    fn put(key: &[u8], value: &[u8]) -> Op {
        Op::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn put_hash_matches_the_seed_vectors() {
        let mut store = Store::new(Limits::default());
        let mut previous = None;
        for (seq, (value, stored)) in [("0", "890022063"), ("1", "78513644"), ("2", "3250269825")]
            .into_iter()
            .enumerate()
        {
            let reply = store.apply(&req(1, seq as u64 + 1, put_hash(value)), 0);
            assert_eq!(reply, Reply::Ok(previous.clone()));
            let now = store.apply(&req(2, seq as u64 + 1, Op::Get { key: b"k".to_vec() }), 0);
            assert_eq!(now, Reply::Ok(Some(stored.as_bytes().to_vec())));
            previous = Some(stored.as_bytes().to_vec());
        }
    }

    #[test]
    fn a_repeated_write_gets_the_saved_reply_and_is_not_reapplied() {
        let mut store = Store::new(Limits::default());
        let first = store.apply(&req(7, 1, put_hash("x")), 0);
        let again = store.apply(&req(7, 1, put_hash("x")), 5);
        assert_eq!(first, again);
        assert_eq!(first, Reply::Ok(None));
        let append = |seq| {
            req(
                7,
                seq,
                Op::Append {
                    key: b"a".to_vec(),
                    value: b"z".to_vec(),
                },
            )
        };
        store.apply(&append(2), 6);
        store.apply(&append(2), 7);
        let get = store.apply(&req(8, 1, Op::Get { key: b"a".to_vec() }), 8);
        assert_eq!(get, Reply::Ok(Some(b"z".to_vec())));
        assert!(matches!(
            store.apply(&append(1), 9),
            Reply::Err(KvError::Stale { .. })
        ));
    }

    #[test]
    fn reads_are_not_saved_in_the_duplicate_table() {
        let mut store = Store::new(Limits::default());
        store.apply(&req(1, 1, Op::Get { key: b"k".to_vec() }), 0);
        assert!(store.sessions().is_empty());
        store.apply(&req(1, 2, put(b"k", b"v")), 0);
        let read = store.apply(&req(1, 3, Op::Get { key: b"k".to_vec() }), 0);
        assert_eq!(read, Reply::Ok(Some(b"v".to_vec())));
        assert_eq!(store.sessions().len(), 1);
    }

    #[test]
    fn a_retry_after_eviction_is_refused_never_applied_twice() {
        let limits = Limits {
            max_sessions: 1,
            ..Limits::default()
        };
        let mut store = Store::new(limits);
        let append = |client, seq| {
            req(
                client,
                seq,
                Op::Append {
                    key: b"a".to_vec(),
                    value: b"z".to_vec(),
                },
            )
        };
        store.apply(&append(1, 1), 0);
        store.apply(&append(2, 1), 1);
        assert_eq!(
            store.apply(&append(1, 1), 2),
            Reply::Err(KvError::SessionExpired { client: 1, seq: 1 })
        );
        assert_eq!(store.data().get(b"a"), Some(&b"zz"[..]));
    }

    #[test]
    fn sizes_are_limited_and_counted() {
        let limits = Limits {
            max_value: 4,
            ..Limits::default()
        };
        let mut store = Store::new(limits);
        let put = |seq, v: &[u8]| req(1, seq, put(b"k", v));
        assert!(matches!(
            store.apply(&put(1, b"12345"), 0),
            Reply::Err(KvError::TooLarge { .. })
        ));
        assert_eq!(store.data().len(), 0);
        assert_eq!(store.apply(&put(2, b"123"), 0), Reply::Ok(None));
        assert_eq!(store.data().bytes(), 4);
        let append = req(
            1,
            3,
            Op::Append {
                key: b"k".to_vec(),
                value: b"45".to_vec(),
            },
        );
        assert!(matches!(
            store.apply(&append, 0),
            Reply::Err(KvError::TooLarge { .. })
        ));
        let delete = req(1, 4, Op::Delete { key: b"k".to_vec() });
        assert_eq!(store.apply(&delete, 0), Reply::Ok(Some(b"123".to_vec())));
        assert_eq!((store.data().len(), store.data().bytes()), (0, 0));
    }

    #[test]
    fn idle_sessions_expire_on_the_service_clock() {
        let limits = Limits {
            session_ttl: Duration::from_millis(1000),
            ..Limits::default()
        };
        let mut store = Store::new(limits);
        store.apply(&req(1, 1, put(b"k", b"1")), 0);
        store.apply(&req(2, 1, put(b"k", b"2")), 900);
        store.apply(&req(2, 2, put(b"k", b"3")), 1500);
        assert_eq!(
            store.sessions().len(),
            1,
            "client 1 was idle for over the TTL"
        );
        // A stamp from the past neither winds the clock back nor revives anything.
        store.apply(&req(3, 1, put(b"k", b"4")), 10);
        assert_eq!(store.clock_ms(), 1500);
    }

    #[test]
    fn a_transfer_reproduces_the_state() {
        let mut store = Store::new(Limits::default());
        store.apply(&req(1, 1, put_hash("a")), 0);
        store.apply(&req(1, 2, put(b"x", b"y")), 3);
        let mut copy = Store::receiving(store.limits(), store.clock_ms());
        copy.extend(
            store.data().after(None).cloned(),
            Vec::new(),
            store.sessions().iter().map(|(c, s)| (*c, s.clone())),
        );
        assert_eq!(copy.clock_ms(), 3);
        assert_eq!(
            (copy.data().len(), copy.data().bytes()),
            (store.data().len(), store.data().bytes())
        );
        assert_eq!(copy.apply(&req(1, 2, put(b"x", b"y")), 4), Reply::Ok(None));
        assert_eq!(copy.data().get(b"x"), Some(&b"y"[..]));
        assert_eq!(copy.sessions().len(), 1);
    }

    #[test]
    fn redis_style_writes_follow_redis() {
        let mut store = Store::new(Limits::default());
        let mut seq = 0;
        let mut run = |store: &mut Store, op: Op| {
            seq += 1;
            store.apply(&req(1, seq, op), 0)
        };
        let set = |value: &str, when: When, get: bool| Op::Set {
            key: b"k".to_vec(),
            value: value.into(),
            when,
            get,
            ttl: Ttl::Clear,
        };
        let ok = Reply::Ok(Some(Vec::new()));
        assert_eq!(
            run(&mut store, set("a", When::Present, false)),
            Reply::Ok(None)
        );
        assert_eq!(run(&mut store, set("a", When::Absent, false)), ok);
        assert_eq!(
            run(&mut store, set("b", When::Absent, false)),
            Reply::Ok(None)
        );
        assert_eq!(store.data().get(b"k"), Some(&b"a"[..]));
        assert_eq!(
            run(&mut store, set("c", When::Present, true)),
            Reply::Ok(Some(b"a".to_vec()))
        );
        assert_eq!(run(&mut store, set("d", When::Always, false)), ok);
        assert_eq!(store.data().get(b"k"), Some(&b"d"[..]));

        let incr = |by: i64| Op::IncrBy {
            key: b"n".to_vec(),
            by,
        };
        assert_eq!(run(&mut store, incr(5)), Reply::Ok(Some(b"5".to_vec())));
        assert_eq!(run(&mut store, incr(-7)), Reply::Ok(Some(b"-2".to_vec())));
        assert!(matches!(
            run(&mut store, incr(i64::MIN)),
            Reply::Err(KvError::Invalid { reason }) if reason.contains("overflow")
        ));
        let not_a_number = Op::IncrBy {
            key: b"k".to_vec(),
            by: 1,
        };
        assert!(matches!(
            run(&mut store, not_a_number),
            Reply::Err(KvError::Invalid { reason }) if reason.contains("not an integer")
        ));
        assert_eq!(store.data().get(b"k"), Some(&b"d"[..]), "nothing changed");
        // Redis's integers: no sign but '-', no leading zero.
        for spelled in ["007", "+5", "-0", " 1"] {
            let put = Op::Put {
                key: b"z".to_vec(),
                value: spelled.as_bytes().to_vec(),
            };
            run(&mut store, put);
            let incr = Op::IncrBy {
                key: b"z".to_vec(),
                by: 1,
            };
            assert!(
                matches!(run(&mut store, incr), Reply::Err(KvError::Invalid { .. })),
                "INCR of {spelled:?}"
            );
            assert_eq!(store.data().get(b"z"), Some(spelled.as_bytes()));
        }

        let append = Op::AppendLen {
            key: b"k".to_vec(),
            value: b"xyz".to_vec(),
        };
        assert_eq!(run(&mut store, append), Reply::Ok(Some(b"4".to_vec())));
        assert_eq!(store.data().get(b"k"), Some(&b"dxyz"[..]));
    }

    fn scan(store: &mut Store, prefix: &str, after: Option<&str>, limit: u32) -> ScanPage {
        let op = Op::Scan {
            prefix: prefix.into(),
            after: after.map(|a| serde_bytes::ByteBuf::from(a.as_bytes())),
            limit,
            values: true,
        };
        match store.apply(&req(9, 1, op), 0) {
            Reply::Ok(Some(bytes)) => ScanPage::decode(&bytes).expect("a scan page"),
            other => panic!("a scan replied {other:?}"),
        }
    }

    #[test]
    fn a_scan_pages_through_a_prefix_in_key_order() {
        let mut store = Store::new(Limits::default());
        for (seq, key) in ["a", "b1", "b2", "b3", "c"].iter().enumerate() {
            store.apply(&req(1, seq as u64 + 1, put(key.as_bytes(), b"v")), 0);
        }
        let keys = |page: &ScanPage| -> Vec<String> {
            let text = |k: &Vec<u8>| String::from_utf8_lossy(k).into_owned();
            page.pairs.iter().map(|(k, _)| text(k)).collect()
        };
        let first = scan(&mut store, "b", None, 2);
        assert_eq!(
            (keys(&first), first.more),
            (vec!["b1".into(), "b2".into()], true)
        );
        let second = scan(&mut store, "b", Some("b2"), 2);
        assert_eq!((keys(&second), second.more), (vec!["b3".into()], false));
        // A resume point before the prefix starts at the prefix; one past it finds nothing.
        assert_eq!(keys(&scan(&mut store, "b", Some("a"), 9)).len(), 3);
        assert!(scan(&mut store, "b", Some("b9"), 9).pairs.is_empty());
        let all = scan(&mut store, "", None, 100);
        assert_eq!((all.pairs.len(), all.more), (5, false));
        assert_eq!(all.pairs[0], (b"a".to_vec(), b"v".to_vec()));
        assert_eq!(store.sessions().len(), 1, "a scan keeps no session");
    }

    #[test]
    fn a_scan_page_is_bounded_in_bytes_and_always_progresses() {
        let mut store = Store::new(Limits::default());
        let big = vec![7u8; SCAN_BYTES];
        store.apply(&req(1, 1, put(b"k1", &big)), 0);
        store.apply(&req(1, 2, put(b"k2", &big)), 0);
        let page = scan(&mut store, "k", None, 100);
        assert_eq!((page.pairs.len(), page.more), (1, true));
        let page = scan(&mut store, "k", Some("k1"), 100);
        assert_eq!((page.pairs.len(), page.more), (1, false));
        assert_eq!(ScanPage::decode(&[]), Err(BadScanPage::Empty));
        assert!(ScanPage::decode(&[0, 9]).is_err(), "a truncated pair");
    }

    #[test]
    fn a_flush_removes_every_key_once() {
        let mut store = Store::new(Limits::default());
        store.apply(&req(1, 1, put(b"a", b"1")), 0);
        store.apply(&req(1, 2, put(b"b", b"2")), 0);
        let count = Some(b"2".to_vec());
        assert_eq!(
            store.apply(&req(1, 3, Op::Flush), 0),
            Reply::Ok(count.clone())
        );
        assert_eq!((store.data().len(), store.data().bytes()), (0, 0));
        store.apply(&req(2, 1, put(b"c", b"3")), 0);
        // A retry of the flush gets its saved reply and does not remove the newer key.
        assert_eq!(store.apply(&req(1, 3, Op::Flush), 0), Reply::Ok(count));
        assert_eq!(store.data().get(b"c"), Some(&b"3"[..]));
    }

    #[test]
    fn msetnx_writes_all_keys_or_none() {
        let mut store = Store::new(Limits::default());
        let mset = |pairs: &[(&str, &str)], only_if_none_exist| Op::MSet {
            pairs: pairs
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec().into(), v.as_bytes().to_vec().into()))
                .collect(),
            only_if_none_exist,
        };
        let written = |n: &str| Reply::Ok(Some(n.as_bytes().to_vec()));
        let first = mset(&[("a", "1"), ("b", "2")], true);
        assert_eq!(store.apply(&req(1, 1, first), 0), written("1"));
        let clash = mset(&[("c", "3"), ("b", "9")], true);
        assert_eq!(store.apply(&req(1, 2, clash), 0), written("0"));
        assert_eq!(
            (store.data().get(b"b"), store.data().get(b"c")),
            (Some(&b"2"[..]), None)
        );
        let plain = mset(&[("b", "8"), ("c", "3"), ("b", "7")], false);
        assert_eq!(store.apply(&req(1, 3, plain), 0), written("1"));
        assert_eq!(
            (store.data().get(b"b"), store.data().len()),
            (Some(&b"7"[..]), 3)
        );
        let limits = Limits {
            max_value: 4,
            ..Limits::default()
        };
        let mut small = Store::new(limits);
        let big = mset(&[("a", "1"), ("b", "12345")], false);
        assert!(matches!(
            small.apply(&req(1, 1, big), 0),
            Reply::Err(KvError::TooLarge { .. })
        ));
        assert!(small.data().is_empty(), "a refused MSET writes no key");
        let over = mset(&[("ab", "12"), ("cd", "34")], false);
        assert!(matches!(
            small.apply(&req(1, 2, over), 0),
            Reply::Err(KvError::TooLarge { .. })
        ));
        assert!(
            small.data().is_empty(),
            "an MSET over the limit in total writes no key"
        );
    }

    fn keys(keys: &[&str]) -> Vec<serde_bytes::ByteBuf> {
        keys.iter()
            .map(|k| serde_bytes::ByteBuf::from(k.as_bytes()))
            .collect()
    }

    fn values(reply: Reply) -> Vec<Option<String>> {
        let Reply::Ok(Some(bytes)) = reply else {
            panic!("an MGET answers values, not {reply:?}");
        };
        let text = |v: Vec<u8>| String::from_utf8(v).expect("UTF-8");
        let decoded = Values::decode(&bytes).expect("values");
        decoded.0.into_iter().map(|v| v.map(text)).collect()
    }

    #[test]
    fn mget_del_and_exists_take_several_keys_in_one_operation() {
        let mut store = Store::new(Limits::default());
        store.apply(&req(1, 1, put(b"a", b"1")), 0);
        store.apply(&req(1, 2, put(b"b", b"")), 0);
        store.apply(&req(1, 3, set("due", "x", Ttl::In(10))), 0);
        let mget = Op::MGet {
            keys: keys(&["a", "nope", "b", "a", "due"]),
        };
        let some = |v: &str| Some(v.to_string());
        let want = vec![some("1"), None, some(""), some("1"), some("x")];
        assert_eq!(values(store.apply(&req(2, 1, mget.clone()), 5)), want);
        assert_eq!(values(store.read(&mget, 5)), want, "the same read alone");
        // Past its deadline a key is absent to all three, and reaped by the applied ones.
        let mut gone = want.clone();
        gone[4] = None;
        assert_eq!(values(store.read(&mget, 10)), gone);
        let exists = Op::Exists {
            keys: keys(&["a", "a", "b", "nope", "due"]),
        };
        let count = |n: &str| Reply::Ok(Some(n.as_bytes().to_vec()));
        assert_eq!(store.read(&exists, 5), count("4"));
        assert_eq!(store.apply(&req(2, 1, exists), 10), count("3"));
        assert_eq!(store.data().get(b"due"), None, "reaped");
        assert_eq!(store.sessions().len(), 1, "reads keep no session");
        let del = Op::DelMany {
            keys: keys(&["a", "nope", "a", "b"]),
        };
        assert_eq!(store.apply(&req(3, 1, del.clone()), 10), count("2"));
        assert!(store.data().is_empty());
        // A retry gets the saved reply and removes nothing written since.
        store.apply(&req(1, 4, put(b"a", b"again")), 10);
        assert_eq!(store.apply(&req(3, 1, del), 10), count("2"));
        assert_eq!(store.data().get(b"a"), Some(&b"again"[..]));
        let none = Op::MGet { keys: keys(&[]) };
        assert_eq!(
            values(store.apply(&req(2, 1, none), 10)),
            Vec::<Option<String>>::new()
        );
    }

    #[test]
    fn several_keys_are_bounded_like_one_value() {
        let limits = Limits {
            max_value: 4,
            ..Limits::default()
        };
        let mut store = Store::new(limits);
        store.apply(&req(1, 1, put(b"a", b"123")), 0);
        store.apply(&req(1, 2, put(b"b", b"45")), 0);
        let refused = |reply: Reply| matches!(reply, Reply::Err(KvError::TooLarge { .. }));
        // Keys of four bytes together fit, five do not; values of five bytes do not fit a reply.
        let mget = |names: &[&str]| Op::MGet { keys: keys(names) };
        assert!(!refused(store.read(&mget(&["b", "b", "c", "d"]), 0)));
        assert!(refused(store.read(&mget(&["aa", "bbb"]), 0)));
        assert!(refused(store.read(&mget(&["a", "b"]), 0)));
        assert!(refused(store.apply(&req(2, 1, mget(&["a", "b"])), 0)));
        let del = Op::DelMany {
            keys: keys(&["a", "b", "cde"]),
        };
        assert!(refused(store.apply(&req(1, 3, del), 0)));
        assert_eq!(store.data().len(), 2, "a refused DEL removes no key");
        let exists = Op::Exists {
            keys: keys(&["abc", "de"]),
        };
        assert!(refused(store.read(&exists, 0)));
    }

    fn replies(reply: Reply) -> Vec<Reply> {
        let Reply::Ok(Some(bytes)) = reply else {
            panic!("a MULTI answers its replies, not {reply:?}");
        };
        Replies::decode(&bytes).expect("replies").0
    }

    #[test]
    fn multi_applies_its_operations_in_order_as_one_and_answers_each() {
        let mut store = Store::new(Limits::default());
        store.apply(&req(1, 1, put(b"text", b"abc")), 0);
        let multi = Op::Multi {
            ops: vec![
                put(b"n", b"41"),
                Op::IncrBy {
                    key: b"n".to_vec(),
                    by: 1,
                },
                Op::IncrBy {
                    key: b"text".to_vec(),
                    by: 1,
                },
                Op::Get { key: b"n".to_vec() },
            ],
        };
        let ok = |v: &str| Reply::Ok(Some(v.as_bytes().to_vec()));
        let answered = replies(store.apply(&req(2, 1, multi.clone()), 0));
        assert_eq!(answered.len(), 4);
        assert_eq!(answered[0], Reply::Ok(None));
        assert_eq!(answered[1], ok("42"), "each sees the ones before it");
        assert!(
            matches!(answered[2], Reply::Err(KvError::Invalid { .. })),
            "one refused: {:?}",
            answered[2]
        );
        assert_eq!(answered[3], ok("42"), "and the others still run");
        assert_eq!(store.data().get(b"text"), Some(&b"abc"[..]));
        // One operation for the sessions: a retry gets the saved replies and runs nothing.
        store.apply(&req(1, 2, put(b"n", b"0")), 0);
        assert_eq!(replies(store.apply(&req(2, 1, multi), 0)), answered);
        assert_eq!(store.data().get(b"n"), Some(&b"0"[..]));
    }

    #[test]
    fn a_multi_of_reads_is_a_read_and_nesting_is_refused() {
        let mut store = Store::new(Limits::default());
        store.apply(&req(1, 1, set("due", "x", Ttl::In(10))), 0);
        let reads = Op::Multi {
            ops: vec![
                Op::Get {
                    key: b"due".to_vec(),
                },
                Op::Exists {
                    keys: keys(&["due", "nope"]),
                },
            ],
        };
        assert!(reads.is_read());
        let ok = |v: &str| Reply::Ok(Some(v.as_bytes().to_vec()));
        assert_eq!(replies(store.read(&reads, 5)), vec![ok("x"), ok("1")]);
        assert_eq!(
            replies(store.read(&reads, 10)),
            vec![Reply::Ok(None), ok("0")]
        );
        assert_eq!(store.sessions().len(), 1, "reads keep no session");
        let nested = Op::Multi {
            ops: vec![put(b"a", b"1"), reads],
        };
        assert!(!nested.is_read());
        assert!(matches!(
            store.apply(&req(2, 1, nested), 10),
            Reply::Err(KvError::Invalid { .. })
        ));
        assert_eq!(store.data().get(b"a"), None, "a refused MULTI runs nothing");
        let big = Op::Multi {
            ops: vec![put(b"a", &[7; 600]), put(b"b", &[7; 600])],
        };
        let limits = Limits {
            max_value: 1000,
            ..Limits::default()
        };
        let mut small = Store::new(limits);
        assert!(matches!(
            small.apply(&req(3, 1, big), 10),
            Reply::Err(KvError::TooLarge { .. })
        ));
        // Replies that would not fit one message back undo the whole MULTI.
        small.apply(&req(3, 2, put(b"v", &[7; 600])), 10);
        let get = || Op::Get { key: b"v".to_vec() };
        let answers_too_much = Op::Multi {
            ops: vec![put(b"w", b"1"), get(), get()],
        };
        assert!(matches!(
            small.apply(&req(3, 3, answers_too_much), 10),
            Reply::Err(KvError::TooLarge { .. })
        ));
        assert_eq!(small.data().get(b"w"), None, "undone");
        let reads_too_much = Op::Multi {
            ops: vec![get(), get()],
        };
        assert!(matches!(
            small.read(&reads_too_much, 10),
            Reply::Err(KvError::TooLarge { .. })
        ));
        let fits = Op::Multi {
            ops: vec![put(b"w", b"1"), get()],
        };
        assert_eq!(replies(small.apply(&req(3, 4, fits), 10)).len(), 2);
        assert_eq!(small.data().get(b"w"), Some(&b"1"[..]));
    }

    #[test]
    fn encoded_values_round_trip_and_damage_is_caught() {
        let values = Values(vec![Some(b"v".to_vec()), None, Some(Vec::new())]);
        let bytes = values.encode();
        assert_eq!(
            bytes.len(),
            4 + 1 + 4 + 4,
            "a length per value, then its bytes"
        );
        assert_eq!(Values::decode(&bytes), Ok(values));
        assert_eq!(Values::decode(&[]), Ok(Values::default()));
        assert!(Values::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(
            Values::decode(&[5, 0, 0, 0, b'x']).is_err(),
            "a value cut short"
        );
    }

    #[test]
    fn incrbyfloat_follows_redis() {
        let mut store = Store::new(Limits::default());
        let incr = |key: &str, by: &str| Op::IncrByFloat {
            key: key.as_bytes().to_vec(),
            by: by.to_string(),
        };
        let mut seq = 0;
        let mut run = |store: &mut Store, op| {
            seq += 1;
            store.apply(&req(1, seq, op), 0)
        };
        let ok = |text: &str| Reply::Ok(Some(text.as_bytes().to_vec()));
        run(&mut store, put(b"f", b"10.50"));
        assert_eq!(run(&mut store, incr("f", "0.1")), ok("10.6"));
        assert_eq!(run(&mut store, incr("f", "-5")), ok("5.6"));
        run(&mut store, put(b"g", b"0.1"));
        assert_eq!(run(&mut store, incr("g", "0.2")), ok("0.3"));
        run(&mut store, put(b"e", b"5.0e3"));
        assert_eq!(run(&mut store, incr("e", "2.0e2")), ok("5200"));
        assert_eq!(run(&mut store, incr("new", "-1.5")), ok("-1.5"));
        assert_eq!(run(&mut store, incr("new", "1.5")), ok("0"));
        run(&mut store, put(b"s", b"abc"));
        for (key, by) in [("s", "1"), ("f", "x"), ("f", "inf"), ("f", "nan")] {
            assert!(
                matches!(
                    run(&mut store, incr(key, by)),
                    Reply::Err(KvError::Invalid { .. })
                ),
                "{key} by {by}"
            );
        }
        run(&mut store, put(b"max", b"1.7e308"));
        assert!(matches!(
            run(&mut store, incr("max", "1.7e308")),
            Reply::Err(KvError::Invalid { .. })
        ));
        assert_eq!(store.data().get(b"max"), Some(&b"1.7e308"[..]), "unchanged");
    }

    /// A plain SET of `key` with `ttl`.
    fn set(key: &str, value: &str, ttl: Ttl) -> Op {
        Op::Set {
            key: key.into(),
            value: value.into(),
            when: When::Always,
            get: false,
            ttl,
        }
    }

    #[test]
    fn keys_expire_on_the_service_clock_and_travel_with_a_transfer() {
        let mut store = Store::new(Limits::default());
        let ttl = |key: &str| Op::Ttl { key: key.into() };
        let get = |key: &str| Op::Get { key: key.into() };
        let text = |n: &str| Reply::Ok(Some(n.as_bytes().to_vec()));
        store.apply(&req(1, 1, set("k", "v", Ttl::In(1000))), 100);
        store.apply(&req(1, 2, put(b"forever", b"x")), 100);
        assert_eq!(store.apply(&req(2, 1, ttl("k")), 400), text("700"));
        assert_eq!(store.apply(&req(2, 1, ttl("forever")), 400), text("-1"));
        assert_eq!(store.apply(&req(2, 1, ttl("nothing")), 400), text("-2"));
        // APPEND keeps the deadline, KEEPTTL keeps it, a plain SET clears it.
        store.apply(
            &req(
                1,
                3,
                Op::Append {
                    key: b"k".to_vec(),
                    value: b"2".to_vec(),
                },
            ),
            500,
        );
        store.apply(&req(1, 4, set("k", "v3", Ttl::Keep)), 500);
        assert_eq!(store.apply(&req(2, 1, ttl("k")), 500), text("600"));
        // A copy made now expires the key at the same service time.
        let mut copy = Store::receiving(store.limits(), store.clock_ms());
        let deadlines: Vec<(Vec<u8>, u64)> = store
            .data()
            .after(None)
            .filter_map(|r| Some((r.key().to_vec(), store.data().deadline(r.key())?)))
            .collect();
        copy.extend(store.data().after(None).cloned(), deadlines, Vec::new());
        for s in [&mut store, &mut copy] {
            assert_eq!(s.apply(&req(2, 1, get("k")), 1099), text("v3"));
            assert_eq!(s.apply(&req(2, 1, get("k")), 1100), Reply::Ok(None));
            assert_eq!(s.apply(&req(2, 1, ttl("k")), 1100), text("-2"));
            assert_eq!((s.data().len(), s.data().expiring()), (1, 0), "reaped");
        }
        // EXPIRE and PERSIST answer whether they changed anything; EXPIRE 0 removes the key.
        let expire = |key: &str, after_ms| Op::Expire {
            key: key.into(),
            after_ms,
            only: ExpireIf::Always,
        };
        assert_eq!(
            store.apply(&req(1, 5, expire("forever", Some(50))), 1200),
            text("1")
        );
        assert_eq!(
            store.apply(&req(1, 6, expire("forever", None)), 1200),
            text("1")
        );
        assert_eq!(
            store.apply(&req(1, 7, expire("forever", None)), 1200),
            text("0")
        );
        assert_eq!(
            store.apply(&req(1, 8, expire("nothing", Some(50))), 1200),
            text("0")
        );
        store.apply(&req(1, 9, set("gone", "v", Ttl::In(10))), 1200);
        assert_eq!(
            store.apply(&req(1, 10, expire("forever", Some(0))), 1200),
            text("1")
        );
        assert_eq!(store.data().get(b"forever"), None);
        // Due keys are reaped by any later request, and a scan never shows them.
        let page = scan(&mut store, "", None, 10);
        assert_eq!(page.pairs.len(), 1, "gone lives until 1210");
        store.apply(&req(3, 1, put(b"other", b"o")), 5000);
        assert_eq!(
            (store.data().get(b"gone"), store.data().expiring()),
            (None, 0)
        );
    }

    #[test]
    fn an_expired_key_is_absent_to_every_operation() {
        let mut store = Store::new(Limits::default());
        store.apply(&req(1, 1, set("k", "5", Ttl::In(10))), 0);
        let incr = Op::IncrBy {
            key: b"k".to_vec(),
            by: 1,
        };
        assert_eq!(
            store.apply(&req(1, 2, incr), 10),
            Reply::Ok(Some(b"1".to_vec()))
        );
        assert_eq!(
            store.data().deadline(b"k"),
            None,
            "a new key, without the old deadline"
        );
        store.apply(&req(1, 3, set("n", "1", Ttl::In(10))), 20);
        let again = Op::MSet {
            pairs: vec![(b"n".to_vec().into(), b"2".to_vec().into())],
            only_if_none_exist: true,
        };
        assert_eq!(
            store.apply(&req(1, 4, again), 30),
            Reply::Ok(Some(b"1".to_vec()))
        );
    }

    #[test]
    fn expire_options_compare_deadlines_as_redis_7_does() {
        let mut store = Store::new(Limits::default());
        let mut seq = 0;
        let mut expire = |store: &mut Store, after_ms, only| {
            seq += 1;
            let op = Op::Expire {
                key: b"k".to_vec(),
                after_ms: Some(after_ms),
                only,
            };
            store.apply(&req(1, seq, op), 0) == Reply::Ok(Some(b"1".to_vec()))
        };
        store.apply(&req(2, 1, put(b"k", b"v")), 0);
        // No deadline counts as for ever: XX and GT refuse, LT and NX set.
        assert!(!expire(&mut store, 100, ExpireIf::HasDeadline));
        assert!(!expire(&mut store, 100, ExpireIf::Later));
        assert!(expire(&mut store, 100, ExpireIf::Earlier));
        assert!(!expire(&mut store, 50, ExpireIf::NoDeadline));
        assert!(!expire(&mut store, 50, ExpireIf::Later));
        assert!(expire(&mut store, 200, ExpireIf::Later));
        assert!(expire(&mut store, 150, ExpireIf::HasDeadline));
        assert_eq!(store.data().deadline(b"k"), Some(150));
    }

    #[test]
    fn a_read_changes_nothing_and_sees_expired_keys_as_absent() {
        let mut store = Store::new(Limits::default());
        store.apply(&req(1, 1, set("k", "v", Ttl::In(10))), 100);
        let get = Op::Get { key: b"k".to_vec() };
        let ttl = Op::Ttl { key: b"k".to_vec() };
        assert_eq!(store.read(&get, 105), Reply::Ok(Some(b"v".to_vec())));
        assert_eq!(store.read(&ttl, 105), Reply::Ok(Some(b"5".to_vec())));
        assert_eq!(store.read(&get, 110), Reply::Ok(None));
        assert_eq!(store.read(&ttl, 110), Reply::Ok(Some(b"-2".to_vec())));
        let scan = Op::Scan {
            prefix: Vec::new(),
            after: None,
            limit: 10,
            values: false,
        };
        let Reply::Ok(Some(page)) = store.read(&scan, 110) else {
            panic!("a scan answers a page");
        };
        assert!(ScanPage::decode(&page).expect("page").pairs.is_empty());
        // Nothing was reaped, and the service clock did not move: only entries change a store.
        assert_eq!((store.data().len(), store.clock_ms()), (1, 100));
        assert!(matches!(
            store.read(&Op::Delete { key: b"k".to_vec() }, 110),
            Reply::Err(_)
        ));
        assert_eq!(store.data().len(), 1);
    }
}
