//! The duplicate table: what makes a retried write apply at most once, bounded in count and
//! bytes, and expired on the replicated service clock so primary and backup agree.
//!
//! Reads never enter it (a retried read simply runs again). A session keeps the reply to its
//! client's last write. When more than `max_sessions` sessions (or `max_session_bytes` of
//! replies) are held, the oldest session's reply is dropped but its sequence number is kept as
//! a small marker: a retry of that request is refused with `SessionExpired` instead of being
//! applied a second time, while the client's next request is served as usual. Markers and
//! sessions alike expire after `session_ttl` of silence; no client can still retry by then,
//! because requests past their deadline are refused and deadlines are shorter than the TTL.

use serde::{Deserialize, Serialize};

use super::api::Reply;

/// Markers kept per session slot before new sessions are refused (bounds the whole table).
const MARKERS_PER_SESSION: usize = 8;

/// One client's entry, as a transfer carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The client's last write's sequence number.
    pub seq: u64,
    /// The reply to it, repeated for a retry; `None` once evicted (a retry is then refused).
    pub reply: Option<Reply>,
    /// When the client was last heard from (service clock, ms): idle sessions expire.
    pub last_ms: u64,
}

/// What the table says about an incoming write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A new request: execute it and [`Sessions::record`] the reply.
    New,
    /// A retry of the last write: answer with this.
    Repeat(Reply),
    /// A retry of a write whose reply was evicted: it may have been applied; never apply again.
    Evicted,
    /// Older than the client's last write.
    Stale {
        /// The client's newest sequence number.
        last: u64,
    },
    /// The table is full of sessions younger than the TTL: new clients must wait.
    Full,
}

/// Bounds of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionBounds {
    /// Silence after which a session is forgotten, in service-clock ms.
    pub ttl_ms: u64,
    /// Sessions holding a reply.
    pub max_sessions: usize,
    /// Bytes of saved replies.
    pub max_bytes: usize,
}

/// The table, with its indexes. Every collection is persistent (O(1) clone for transfers).
///
/// The two indexes are refreshed lazily: an entry's key in them is when it was last heard *as
/// of its indexing*, never later than the truth, and a write from a known client touches only
/// the table (one map operation, where moving the entry in both indexes took six). Expiry and
/// eviction take the front of an index and, when its key is stale, move it to the true time
/// and look again; since no key is later than its entry's truth, a front whose key is true is
/// the true oldest, so what is expired and evicted is exactly what fresh indexes would give.
#[derive(Clone, Debug)]
pub struct Sessions {
    /// Client id → session, with where it sits in the indexes.
    table: imbl::OrdMap<u64, Entry>,
    /// Every entry by (last heard as of its indexing, client): expiry takes from the front.
    by_age: imbl::OrdSet<(u64, u64)>,
    /// Entries still holding a reply, by (last heard as of its indexing, client): eviction
    /// takes from the front.
    with_reply: imbl::OrdSet<(u64, u64)>,
    /// Bytes of the saved replies.
    reply_bytes: usize,
    /// The bounds in force (the service's, carried with the state).
    bounds: SessionBounds,
}

/// A session and its keys in the indexes.
#[derive(Clone, Debug)]
struct Entry {
    /// What a transfer carries.
    session: Session,
    /// Its key in `by_age` (at most `session.last_ms`).
    age_ms: u64,
    /// Its key in `with_reply`, if it holds a reply (at most `session.last_ms`).
    reply_ms: Option<u64>,
}

/// One of the two indexes.
#[derive(Clone, Copy)]
enum Index {
    /// `by_age`.
    Age,
    /// `with_reply`.
    Reply,
}

/// Bytes a saved reply accounts for.
fn reply_size(reply: &Reply) -> usize {
    match reply {
        Reply::Ok(value) => 16 + value.as_ref().map_or(0, Vec::len),
        Reply::Err(_) => 64,
    }
}

impl Sessions {
    /// An empty table with these bounds.
    pub fn new(bounds: SessionBounds) -> Sessions {
        Sessions {
            table: imbl::OrdMap::new(),
            by_age: imbl::OrdSet::new(),
            with_reply: imbl::OrdSet::new(),
            reply_bytes: 0,
            bounds,
        }
    }

    /// Entries held (sessions and markers).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Sessions still holding a reply.
    pub fn replies(&self) -> usize {
        self.with_reply.len()
    }

    /// Bytes of replies the table holds (what `max_session_bytes` bounds).
    pub fn reply_bytes(&self) -> usize {
        self.reply_bytes
    }

    /// Forget every entry silent for longer than the TTL at `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        let ttl = self.bounds.ttl_ms;
        let expired = |at: u64| now_ms.saturating_sub(at) > ttl;
        // No key is later than its entry's truth: while the front's key has not expired, no
        // entry has (and a stale front is re-indexed only when it looks expired).
        while self.by_age.get_min().is_some_and(|&(at, _)| expired(at)) {
            if let Some((at, client)) = self.oldest(Index::Age) {
                if expired(at) {
                    self.remove(client);
                }
            }
        }
    }

    /// The front of `index` (time, client) once its key is true, re-indexing stale fronts on
    /// the way; `None` if the index is empty.
    fn oldest(&mut self, index: Index) -> Option<(u64, u64)> {
        loop {
            let set = match index {
                Index::Age => &mut self.by_age,
                Index::Reply => &mut self.with_reply,
            };
            let &(at, client) = set.get_min()?;
            let Some(entry) = self.table.get_mut(&client) else {
                // Cannot happen (every key has its entry); dropping it keeps the loop finite.
                set.remove(&(at, client));
                continue;
            };
            let last = entry.session.last_ms;
            if at >= last {
                return Some((at, client));
            }
            set.remove(&(at, client));
            set.insert((last, client));
            match index {
                Index::Age => entry.age_ms = last,
                Index::Reply => entry.reply_ms = Some(last),
            }
        }
    }

    fn remove(&mut self, client: u64) -> Option<Session> {
        let entry = self.table.remove(&client)?;
        self.by_age.remove(&(entry.age_ms, client));
        if let Some(at) = entry.reply_ms {
            self.with_reply.remove(&(at, client));
        }
        if let Some(reply) = &entry.session.reply {
            self.reply_bytes -= reply_size(reply);
        }
        Some(entry.session)
    }

    /// What to do with write `seq` of `client`; touches the session (it was heard from).
    pub fn lookup(&mut self, client: u64, seq: u64, now_ms: u64) -> Lookup {
        let Some(entry) = self.table.get(&client) else {
            if self.table.len() >= self.bounds.max_sessions * MARKERS_PER_SESSION {
                return Lookup::Full;
            }
            return Lookup::New;
        };
        let last = entry.session.seq;
        if seq > last {
            return Lookup::New;
        }
        let saved = entry.session.reply.clone();
        if entry.session.last_ms < now_ms {
            if let Some(entry) = self.table.get_mut(&client) {
                entry.session.last_ms = now_ms;
            }
        }
        match (seq == last, saved) {
            (true, Some(reply)) => Lookup::Repeat(reply),
            (true, None) => Lookup::Evicted,
            (false, _) => Lookup::Stale { last },
        }
    }

    /// Save the reply to write `seq` of `client`, then evict the oldest replies over the
    /// bounds.
    pub fn record(&mut self, client: u64, seq: u64, reply: Reply, now_ms: u64) {
        let size = reply_size(&reply);
        match self.table.get_mut(&client) {
            Some(entry) => {
                let session = &mut entry.session;
                session.last_ms = session.last_ms.max(now_ms);
                session.seq = seq;
                let old = session.reply.replace(reply);
                self.reply_bytes = self.reply_bytes + size - old.as_ref().map_or(0, reply_size);
                if entry.reply_ms.is_none() {
                    entry.reply_ms = Some(session.last_ms);
                    self.with_reply.insert((session.last_ms, client));
                }
            }
            None => self.add(
                client,
                Session {
                    seq,
                    reply: Some(reply),
                    last_ms: now_ms,
                },
            ),
        }
        while self.with_reply.len() > self.bounds.max_sessions
            || self.reply_bytes > self.bounds.max_bytes
        {
            let Some((at, oldest)) = self.oldest(Index::Reply) else {
                break;
            };
            self.with_reply.remove(&(at, oldest));
            if let Some(entry) = self.table.get_mut(&oldest) {
                entry.reply_ms = None;
                if let Some(reply) = entry.session.reply.take() {
                    self.reply_bytes -= reply_size(&reply);
                }
            }
        }
    }

    /// Put an entry in (from a transfer).
    pub fn insert(&mut self, client: u64, session: Session) {
        self.remove(client);
        self.add(client, session);
    }

    /// Put in an entry for a client that has none, indexed at its true time.
    fn add(&mut self, client: u64, session: Session) {
        let at = session.last_ms;
        self.by_age.insert((at, client));
        let reply_ms = session.reply.as_ref().map(|reply| {
            self.with_reply.insert((at, client));
            self.reply_bytes += reply_size(reply);
            at
        });
        self.table.insert(
            client,
            Entry {
                session,
                age_ms: at,
                reply_ms,
            },
        );
    }

    /// Every entry, in client order.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Session)> {
        self.table
            .iter()
            .map(|(client, entry)| (client, &entry.session))
    }

    /// Entries of clients after `after` (all if `None`), in client order (for a transfer).
    pub fn after(&self, after: Option<u64>) -> impl Iterator<Item = (&u64, &Session)> {
        let start = match after {
            Some(client) => std::ops::Bound::Excluded(client),
            None => std::ops::Bound::Unbounded,
        };
        self.table
            .range((start, std::ops::Bound::Unbounded))
            .map(|(client, entry)| (client, &entry.session))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::api::KvError;

    fn bounds(max_sessions: usize) -> SessionBounds {
        SessionBounds {
            ttl_ms: 1000,
            max_sessions,
            max_bytes: 1 << 20,
        }
    }

    fn ok(v: &str) -> Reply {
        Reply::Ok(Some(v.as_bytes().to_vec()))
    }

    #[test]
    fn repeats_get_the_saved_reply_and_older_requests_are_stale() {
        let mut s = Sessions::new(bounds(10));
        assert_eq!(s.lookup(1, 1, 0), Lookup::New);
        s.record(1, 1, ok("a"), 0);
        assert_eq!(s.lookup(1, 1, 5), Lookup::Repeat(ok("a")));
        assert_eq!(s.lookup(1, 2, 5), Lookup::New);
        s.record(1, 2, ok("b"), 5);
        assert_eq!(s.lookup(1, 1, 6), Lookup::Stale { last: 2 });
    }

    #[test]
    fn the_oldest_reply_is_evicted_and_its_retry_refused() {
        let mut s = Sessions::new(bounds(2));
        for client in 1..=3 {
            s.record(client, 1, ok("x"), client);
        }
        assert_eq!(s.replies(), 2);
        assert_eq!(s.len(), 3, "client 1 keeps a marker");
        assert_eq!(s.lookup(1, 1, 10), Lookup::Evicted);
        assert_eq!(
            s.lookup(1, 2, 10),
            Lookup::New,
            "its next request is served"
        );
        assert_eq!(s.lookup(3, 1, 10), Lookup::Repeat(ok("x")));
    }

    #[test]
    fn bytes_of_replies_are_bounded_too() {
        let mut s = Sessions::new(SessionBounds {
            ttl_ms: 1000,
            max_sessions: 100,
            max_bytes: 100,
        });
        s.record(1, 1, ok(&"a".repeat(60)), 0);
        s.record(2, 1, ok(&"b".repeat(60)), 1);
        assert_eq!(s.replies(), 1);
        assert_eq!(s.lookup(1, 1, 2), Lookup::Evicted);
    }

    #[test]
    fn a_full_table_refuses_new_clients_until_sessions_expire() {
        let mut s = Sessions::new(bounds(1));
        for client in 0..MARKERS_PER_SESSION as u64 {
            s.record(
                client,
                1,
                Reply::Err(KvError::Unavailable { reason: "x".into() }),
                0,
            );
        }
        assert_eq!(s.lookup(99, 1, 0), Lookup::Full);
        s.expire(1001);
        assert!(s.is_empty());
        assert_eq!(s.lookup(99, 1, 1001), Lookup::New);
    }

    /// The table as the module's doc states it, kept the obvious way: a map, scanned for the
    /// oldest entry whenever one must go.
    #[derive(Default)]
    struct Model {
        table: std::collections::BTreeMap<u64, Session>,
    }

    impl Model {
        fn lookup(&mut self, b: &SessionBounds, client: u64, seq: u64, now: u64) -> Lookup {
            let Some(session) = self.table.get_mut(&client) else {
                if self.table.len() >= b.max_sessions * MARKERS_PER_SESSION {
                    return Lookup::Full;
                }
                return Lookup::New;
            };
            if seq > session.seq {
                return Lookup::New;
            }
            session.last_ms = session.last_ms.max(now);
            match (seq == session.seq, session.reply.clone()) {
                (true, Some(reply)) => Lookup::Repeat(reply),
                (true, None) => Lookup::Evicted,
                (false, _) => Lookup::Stale { last: session.seq },
            }
        }

        fn record(&mut self, b: &SessionBounds, client: u64, seq: u64, reply: Reply, now: u64) {
            let last_ms = self.table.get(&client).map_or(now, |s| s.last_ms.max(now));
            let reply = Some(reply);
            self.table.insert(
                client,
                Session {
                    seq,
                    reply,
                    last_ms,
                },
            );
            loop {
                let held = self.table.iter().filter(|(_, s)| s.reply.is_some());
                let bytes: usize = held
                    .clone()
                    .flat_map(|(_, s)| s.reply.as_ref())
                    .map(reply_size)
                    .sum();
                if held.clone().count() <= b.max_sessions && bytes <= b.max_bytes {
                    break;
                }
                let oldest = held.min_by_key(|(c, s)| (s.last_ms, **c)).map(|(c, _)| *c);
                if let Some(session) = oldest.and_then(|c| self.table.get_mut(&c)) {
                    session.reply = None;
                }
            }
        }

        fn expire(&mut self, b: &SessionBounds, now: u64) {
            self.table
                .retain(|_, s| now.saturating_sub(s.last_ms) <= b.ttl_ms);
        }
    }

    #[test]
    fn lazily_kept_indexes_expire_and_evict_as_the_obvious_table_does() {
        use rand::{Rng, SeedableRng};
        let seed = crate::testkit::seed();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for round in 0..200 {
            let b = SessionBounds {
                ttl_ms: rng.gen_range(50..400),
                max_sessions: rng.gen_range(1..5),
                max_bytes: rng.gen_range(20..200),
            };
            let (mut table, mut model) = (Sessions::new(b), Model::default());
            let mut now = 0;
            for step in 0..300 {
                now += rng.gen_range(0..40);
                let client = rng.gen_range(0..12);
                let seq = rng.gen_range(1..6);
                let at = format!("seed {seed}, round {round}, step {step}");
                match rng.gen_range(0..10) {
                    0..=3 => assert_eq!(
                        table.lookup(client, seq, now),
                        model.lookup(&b, client, seq, now),
                        "{at}"
                    ),
                    4..=7 => {
                        let reply = ok(&"r".repeat(rng.gen_range(0..40)));
                        table.record(client, seq, reply.clone(), now);
                        model.record(&b, client, seq, reply, now);
                    }
                    8 => {
                        table.expire(now);
                        model.expire(&b, now);
                    }
                    _ => {
                        let session = Session {
                            seq,
                            reply: None,
                            last_ms: now,
                        };
                        table.insert(client, session.clone());
                        model.table.insert(client, session);
                    }
                }
                let held: Vec<(u64, Session)> =
                    table.iter().map(|(c, s)| (*c, s.clone())).collect();
                let want: Vec<(u64, Session)> =
                    model.table.iter().map(|(c, s)| (*c, s.clone())).collect();
                assert_eq!(held, want, "{at}");
                let replies = want.iter().flat_map(|(_, s)| s.reply.as_ref());
                assert_eq!(table.replies(), replies.clone().count(), "{at}");
                assert_eq!(
                    table.reply_bytes(),
                    replies.map(reply_size).sum::<usize>(),
                    "{at}"
                );
            }
        }
    }

    #[test]
    fn expiry_follows_the_last_time_heard() {
        let mut s = Sessions::new(bounds(10));
        s.record(1, 1, ok("a"), 0);
        s.record(2, 1, ok("b"), 500);
        assert_eq!(
            s.lookup(1, 1, 900),
            Lookup::Repeat(ok("a")),
            "touches client 1"
        );
        s.expire(1600);
        assert_eq!(s.len(), 1);
        assert_eq!(s.lookup(1, 1, 1600), Lookup::Repeat(ok("a")));
        s.expire(2601);
        assert!(s.is_empty());
    }
}
