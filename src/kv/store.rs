//! The replicated state: keys and values plus the duplicate table, changed only by
//! [`Store::apply`]. Deterministic: the same requests at the same times give the same state on
//! the primary and the backup.

use std::collections::HashMap;
use std::time::Duration;

use super::api::{KvError, Op, Reply, Request, Session};

/// FNV-1a, 32 bits: the hash of PutHash (seed 000).
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(2_166_136_261u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(16_777_619)
    })
}

/// Size limits and session expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest key, and largest value (also after an Append or PutHash).
    pub max_value: usize,
    /// A client not heard from for this long is forgotten with its duplicate entry.
    pub session_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_value: 8 << 20,
            session_ttl: Duration::from_secs(600),
        }
    }
}

/// Keys, values and sessions.
#[derive(Clone, Debug, Default)]
pub struct Store {
    /// The data.
    data: HashMap<Vec<u8>, Vec<u8>>,
    /// Sum of key and value lengths, for status.
    bytes: usize,
    /// Last request and reply per client.
    sessions: HashMap<u64, Session>,
    /// Limits; not part of the replicated state (each server is configured).
    limits: Limits,
    /// The next time (ms) idle sessions are swept.
    next_sweep_ms: u64,
    /// The service clock: the latest entry time stamp applied (ms). Replicated with the state,
    /// so a new primary continues it instead of starting from its own clock.
    clock_ms: u64,
}

fn too_large(what: &str, size: usize, limits: &Limits) -> Reply {
    Reply::Err(KvError::TooLarge {
        what: what.to_string(),
        size: size as u64,
        limit: limits.max_value as u64,
    })
}

impl Store {
    /// An empty store.
    pub fn new(limits: Limits) -> Store {
        Store {
            limits,
            ..Store::default()
        }
    }

    /// Apply a request at time `at_ms`: a repeat gets the saved reply, a new one is executed and
    /// its reply saved.
    pub fn apply(&mut self, request: &Request, at_ms: u64) -> Reply {
        // The service clock never goes back, whatever the stamp says.
        self.clock_ms = self.clock_ms.max(at_ms);
        let at_ms = self.clock_ms;
        self.sweep(at_ms);
        if let Some(session) = self.sessions.get_mut(&request.client) {
            session.last_ms = at_ms;
            if request.seq == session.seq {
                return session.reply.clone();
            }
            if request.seq < session.seq {
                return Reply::Err(KvError::Stale {
                    client: request.client,
                    seq: request.seq,
                    last: session.seq,
                });
            }
        }
        let reply = self.execute(&request.op);
        self.sessions.insert(
            request.client,
            Session {
                seq: request.seq,
                reply: reply.clone(),
                last_ms: at_ms,
            },
        );
        reply
    }

    /// Forget sessions idle for longer than the TTL; runs at most ten times per TTL.
    fn sweep(&mut self, at_ms: u64) {
        if at_ms < self.next_sweep_ms {
            return;
        }
        let ttl = self.limits.session_ttl.as_millis() as u64;
        self.sessions
            .retain(|_, s| at_ms.saturating_sub(s.last_ms) <= ttl);
        self.next_sweep_ms = at_ms + (ttl / 10).max(1);
    }

    fn set(&mut self, key: &[u8], value: Vec<u8>) -> Option<Vec<u8>> {
        self.bytes += value.len();
        let previous = self.data.insert(key.to_vec(), value);
        match &previous {
            Some(old) => self.bytes -= old.len(),
            None => self.bytes += key.len(),
        }
        previous
    }

    fn execute(&mut self, op: &Op) -> Reply {
        let limits = self.limits;
        if op.key().len() > limits.max_value {
            return too_large("key", op.key().len(), &limits);
        }
        if let Some(value) = op.value().filter(|v| v.len() > limits.max_value) {
            return too_large("value", value.len(), &limits);
        }
        match op {
            Op::Get { key } => Reply::Ok(self.data.get(key).cloned()),
            Op::Put { key, value } => {
                self.set(key, value.clone());
                Reply::Ok(None)
            }
            Op::Append { key, value } => {
                let old = self.data.get(key).map_or(0, Vec::len);
                if old + value.len() > limits.max_value {
                    return too_large("resulting value", old + value.len(), &limits);
                }
                let mut new = self.data.get(key).cloned().unwrap_or_default();
                new.extend_from_slice(value);
                self.set(key, new);
                Reply::Ok(None)
            }
            Op::PutHash { key, value } => {
                let mut input = self.data.get(key).cloned().unwrap_or_default();
                input.extend_from_slice(value);
                let hash = fnv1a32(&input).to_string().into_bytes();
                Reply::Ok(self.set(key, hash))
            }
            Op::Delete { key } => {
                let previous = self.data.remove(key);
                if let Some(old) = &previous {
                    self.bytes -= key.len() + old.len();
                }
                Reply::Ok(previous)
            }
        }
    }

    /// The service clock (see [`Store::apply`]'s `at_ms`).
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// The service clock and the time of the next session sweep, as a transfer carries them.
    pub fn clock(&self) -> (u64, u64) {
        (self.clock_ms, self.next_sweep_ms)
    }

    /// Number of keys.
    pub fn keys(&self) -> usize {
        self.data.len()
    }

    /// Bytes of keys and values.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Every key/value pair, for a state transfer.
    pub fn data(&self) -> impl Iterator<Item = (&Vec<u8>, &Vec<u8>)> {
        self.data.iter()
    }

    /// The duplicate table, for a state transfer.
    pub fn sessions(&self) -> Vec<(u64, Session)> {
        self.sessions
            .iter()
            .map(|(client, session)| (*client, session.clone()))
            .collect()
    }

    /// A store holding exactly the transferred state.
    pub fn from_transfer(
        limits: Limits,
        data: Vec<(Vec<u8>, Vec<u8>)>,
        sessions: Vec<(u64, Session)>,
        clock: (u64, u64),
    ) -> Store {
        let mut store = Store::new(limits);
        for (key, value) in data {
            store.set(&key, value);
        }
        store.sessions = sessions.into_iter().collect();
        (store.clock_ms, store.next_sweep_ms) = clock;
        store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(client: u64, seq: u64, op: Op) -> Request {
        Request { client, seq, op }
    }

    fn put_hash(value: &str) -> Op {
        Op::PutHash {
            key: b"k".to_vec(),
            value: value.as_bytes().to_vec(),
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
    fn a_repeated_request_gets_the_saved_reply_and_is_not_reapplied() {
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
    fn sizes_are_limited_and_counted() {
        let limits = Limits {
            max_value: 4,
            session_ttl: Duration::from_secs(60),
        };
        let mut store = Store::new(limits);
        let put = |seq, v: &[u8]| {
            req(
                1,
                seq,
                Op::Put {
                    key: b"k".to_vec(),
                    value: v.to_vec(),
                },
            )
        };
        assert!(matches!(
            store.apply(&put(1, b"12345"), 0),
            Reply::Err(KvError::TooLarge { .. })
        ));
        assert_eq!(store.keys(), 0);
        assert_eq!(store.apply(&put(2, b"123"), 0), Reply::Ok(None));
        assert_eq!(store.bytes(), 4);
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
        assert_eq!((store.keys(), store.bytes()), (0, 0));
    }

    #[test]
    fn idle_sessions_expire_deterministically() {
        let limits = Limits {
            max_value: 100,
            session_ttl: Duration::from_millis(1000),
        };
        let mut a = Store::new(limits);
        let mut b = Store::new(limits);
        let get = |client, seq| req(client, seq, Op::Get { key: b"k".to_vec() });
        for store in [&mut a, &mut b] {
            store.apply(&get(1, 1), 0);
            store.apply(&get(2, 1), 900);
            store.apply(&get(2, 2), 1500);
        }
        assert_eq!(a.sessions().len(), 1, "client 1 was idle for over the TTL");
        let mut sa = a.sessions();
        let mut sb = b.sessions();
        sa.sort_by_key(|s| s.0);
        sb.sort_by_key(|s| s.0);
        assert_eq!(sa, sb);
    }

    #[test]
    fn a_transfer_reproduces_the_state() {
        let mut store = Store::new(Limits::default());
        store.apply(&req(1, 1, put_hash("a")), 0);
        store.apply(
            &req(
                1,
                2,
                Op::Put {
                    key: b"x".to_vec(),
                    value: b"y".to_vec(),
                },
            ),
            0,
        );
        let data = store.data().map(|(k, v)| (k.clone(), v.clone())).collect();
        let copy = Store::from_transfer(Limits::default(), data, store.sessions(), store.clock());
        assert_eq!(copy.clock(), store.clock());
        assert_eq!((copy.keys(), copy.bytes()), (store.keys(), store.bytes()));
        let mut copy = copy;
        assert_eq!(
            copy.apply(
                &req(
                    1,
                    2,
                    Op::Put {
                        key: b"x".to_vec(),
                        value: b"y".to_vec()
                    }
                ),
                1
            ),
            Reply::Ok(None)
        );
        assert_eq!(
            copy.apply(&req(2, 1, Op::Get { key: b"x".to_vec() }), 1),
            Reply::Ok(Some(b"y".to_vec()))
        );
    }
}
