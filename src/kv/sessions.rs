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
#[derive(Clone, Debug)]
pub struct Sessions {
    /// Client id → session.
    table: imbl::OrdMap<u64, Session>,
    /// Every entry by (last heard, client): expiry takes from the front.
    by_age: imbl::OrdSet<(u64, u64)>,
    /// Entries still holding a reply, by (last heard, client): eviction takes from the front.
    with_reply: imbl::OrdSet<(u64, u64)>,
    /// Bytes of the saved replies.
    reply_bytes: usize,
    /// The bounds in force (the service's, carried with the state).
    bounds: SessionBounds,
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
        while let Some(&(last, client)) = self.by_age.get_min() {
            if now_ms.saturating_sub(last) <= self.bounds.ttl_ms {
                break;
            }
            self.remove(client);
        }
    }

    fn remove(&mut self, client: u64) -> Option<Session> {
        let session = self.table.remove(&client)?;
        self.by_age.remove(&(session.last_ms, client));
        if let Some(reply) = &session.reply {
            self.with_reply.remove(&(session.last_ms, client));
            self.reply_bytes -= reply_size(reply);
        }
        Some(session)
    }

    /// What to do with write `seq` of `client`; touches the session (it was heard from).
    pub fn lookup(&mut self, client: u64, seq: u64, now_ms: u64) -> Lookup {
        let Some(session) = self.table.get(&client) else {
            if self.table.len() >= self.bounds.max_sessions * MARKERS_PER_SESSION {
                return Lookup::Full;
            }
            return Lookup::New;
        };
        let last = session.seq;
        if seq > last {
            return Lookup::New;
        }
        let saved = session.reply.clone();
        self.touch(client, now_ms);
        match (seq == last, saved) {
            (true, Some(reply)) => Lookup::Repeat(reply),
            (true, None) => Lookup::Evicted,
            (false, _) => Lookup::Stale { last },
        }
    }

    fn touch(&mut self, client: u64, now_ms: u64) {
        if self.table.get(&client).is_some_and(|s| s.last_ms >= now_ms) {
            return;
        }
        if let Some(mut session) = self.remove(client) {
            session.last_ms = now_ms;
            self.add(client, session);
        }
    }

    /// Save the reply to write `seq` of `client`, then evict the oldest replies over the
    /// bounds.
    pub fn record(&mut self, client: u64, seq: u64, reply: Reply, now_ms: u64) {
        let last_ms = self
            .remove(client)
            .map_or(now_ms, |s| s.last_ms.max(now_ms));
        self.add(
            client,
            Session {
                seq,
                reply: Some(reply),
                last_ms,
            },
        );
        while self.with_reply.len() > self.bounds.max_sessions
            || self.reply_bytes > self.bounds.max_bytes
        {
            let Some(&(_, oldest)) = self.with_reply.get_min() else {
                break;
            };
            if let Some(mut session) = self.remove(oldest) {
                session.reply = None;
                self.add(oldest, session);
            }
        }
    }

    /// Put an entry in (from [`Sessions::record`] or a transfer).
    pub fn insert(&mut self, client: u64, session: Session) {
        self.remove(client);
        self.add(client, session);
    }

    /// Put in an entry for a client that has none.
    fn add(&mut self, client: u64, session: Session) {
        self.by_age.insert((session.last_ms, client));
        if let Some(reply) = &session.reply {
            self.with_reply.insert((session.last_ms, client));
            self.reply_bytes += reply_size(reply);
        }
        self.table.insert(client, session);
    }

    /// Every entry, in client order.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Session)> {
        self.table.iter()
    }

    /// Entries of clients after `after` (all if `None`), in client order (for a transfer).
    pub fn after(&self, after: Option<u64>) -> impl Iterator<Item = (&u64, &Session)> {
        let start = match after {
            Some(client) => std::ops::Bound::Excluded(client),
            None => std::ops::Bound::Unbounded,
        };
        self.table.range((start, std::ops::Bound::Unbounded))
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
