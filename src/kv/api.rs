//! The kv service's RPCs as they travel on the wire.

use serde::{Deserialize, Serialize};

pub use super::sessions::Session;
pub use super::store::Limits;
use crate::view::Member;

/// Client → primary: a [`Request`], answered with a [`Reply`].
pub const REQUEST: &str = "/kv/request";
/// Primary → backup: a [`Forward`], answered with a [`StreamReply`].
pub const FORWARD: &str = "/kv/forward";
/// Primary → backup: a [`TransferChunk`] of the full state, answered with a [`StreamReply`].
pub const TRANSFER: &str = "/kv/transfer";
/// Client → any server: a read [`Op`] answered from that server's own state without asking
/// anyone else (a stale read), with a [`Reply`] (`WrongServer` from a server holding none).
pub const READ: &str = "/kv/read";
/// GET a JSON status document.
pub const STATUS: &str = "/status";
/// Client → primary: a [`DumpRequest`] for a consistent snapshot of the data, page by page,
/// answered with a [`DumpReply`].
pub const DUMP: &str = "/kv/dump";

/// One operation on one key. Keys and values are arbitrary bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Read the value; absent keys read as `None`.
    Get {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Set the value.
    Put {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The new value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Append to the value (an absent key counts as empty).
    Append {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// What to append.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Store `decimal(fnv1a32(previous ++ value))`; reply with the previous value.
    PutHash {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// What to hash after the previous value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Remove the key; reply with the previous value.
    Delete {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Set the value if `when` allows (Redis's `SET` with `NX`/`XX`/`GET`). Reply: with `get`,
    /// the previous value; without, `Some(b"")` if the value was written and `None` if not.
    Set {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The new value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// Whether the key must be absent or present for the write to happen.
        when: When,
        /// Reply with the previous value.
        get: bool,
        /// What the write does to the key's time to live.
        ttl: Ttl,
    },
    /// Add `by` to the value read as a decimal 64-bit integer (absent: 0); reply with the new
    /// value in decimal. A value that is not such an integer, or an overflow: `Invalid`.
    IncrBy {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// What to add.
        by: i64,
    },
    /// Append to the value (absent: empty); reply with the new length in decimal (Redis's
    /// `APPEND`).
    AppendLen {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// What to append.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Read, in key order, the keys that start with `prefix` and sort after `after` (from the
    /// first if `None`): at most `limit` of them (capped at [`SCAN_MAX_KEYS`]) and about
    /// [`SCAN_BYTES`] of keys and values. The reply is a [`ScanPage`], encoded. A read: it
    /// changes nothing and is ordered like a `Get`.
    Scan {
        /// Only keys starting with this.
        #[serde(with = "serde_bytes")]
        prefix: Vec<u8>,
        /// Only keys after this one: the last key of the previous page.
        after: Option<serde_bytes::ByteBuf>,
        /// Most keys in the page.
        limit: u32,
        /// Whether the page carries the values too (otherwise each value is empty).
        values: bool,
    },
    /// Remove every key (Redis's `FLUSHDB`); reply with how many there were, in decimal.
    Flush,
    /// Make the key expire `after_ms` from now on the service clock (0: remove it now), or with
    /// `None` never (`PERSIST`). Reply: `1` if the key exists (for `PERSIST`: and had a time to
    /// live), else `0`.
    Expire {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// How long it lives from now, in ms; `None` for ever.
        after_ms: Option<u64>,
        /// When the new deadline is set (Redis 7's NX/XX/GT/LT).
        only: ExpireIf,
    },
    /// Read the key's remaining time to live in ms, in decimal: `-2` if the key does not exist,
    /// `-1` if it does not expire. A read.
    Ttl {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Set several keys as one operation (Redis's `MSET`; with `only_if_none_exist`, `MSETNX`:
    /// nothing is written if any of the keys exists). Reply: `1` if written, `0` if not.
    MSet {
        /// Keys and values, applied in order (a repeated key keeps the last value).
        pairs: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>,
        /// Write only if none of the keys exists.
        only_if_none_exist: bool,
    },
    /// Add `by` to the value read as a decimal number (absent: 0); reply with the new value
    /// (`INCRBYFLOAT`: 15 significant digits, no exponent, no trailing zeros; see
    /// `redis_float`). A value that is not a number, or a result that is not finite: `Invalid`.
    IncrByFloat {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The increment, as the client wrote it: parsed when applied, so the operation is
        /// plain bytes on the wire and in the duplicate table.
        by: String,
    },
    /// Read several keys as one operation (Redis's `MGET`): every value as of one moment. The
    /// reply is [`Values`], encoded: one optional value per key, in the keys' order. A read;
    /// values over [`Limits::max_value`] bytes together are refused as `TooLarge`.
    MGet {
        /// The keys, in the order their values are answered (repeats answered each time).
        keys: Vec<serde_bytes::ByteBuf>,
    },
    /// Remove several keys as one operation (Redis's `DEL` and `UNLINK`); reply with how many
    /// existed, in decimal (a repeated key counts once).
    DelMany {
        /// The keys.
        keys: Vec<serde_bytes::ByteBuf>,
    },
    /// Count, as one operation, how many of the keys exist (Redis's `EXISTS`; a repeated key
    /// counts each time); reply in decimal. A read.
    Exists {
        /// The keys.
        keys: Vec<serde_bytes::ByteBuf>,
    },
    /// Several operations applied as one, in order, with nothing in between (Redis's
    /// `MULTI`/`EXEC`): one entry, replicated and deduplicated like any operation. The reply is
    /// [`Replies`], encoded: each operation's own reply — one refused (say an `IncrBy` of a
    /// value that is not an integer) changes nothing but does not stop the others. A read if
    /// all its operations are. An operation may not itself be a `Multi` (`Invalid`); the
    /// operations' keys and values together, and their replies together, are at most
    /// [`Limits::max_value`] bytes (`TooLarge`, and nothing is changed).
    Multi {
        /// The operations, in order.
        ops: Vec<Op>,
    },
}

/// Most keys one [`Op::Scan`] returns.
pub const SCAN_MAX_KEYS: u32 = 10_000;
/// About how many key and value bytes one [`Op::Scan`] returns (at least one pair, if any).
pub const SCAN_BYTES: usize = 1 << 20;

/// The reply of an [`Op::Scan`]: pairs in key order, and whether more keys follow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// Keys and values (empty values when the scan asked for keys only).
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whether keys past the last pair match too: ask again from it.
    pub more: bool,
}

/// A scan reply that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadScanPage {
    /// No reply at all.
    #[error("the scan reply is empty")]
    Empty,
    /// The pairs do not parse.
    #[error(transparent)]
    Records(#[from] BadRecords),
}

impl ScanPage {
    /// As it travels in a [`Reply::Ok`]: one byte, 1 if more keys follow, then the pairs
    /// packed as in [`TransferChunk::records`].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![u8::from(self.more)];
        for (key, value) in &self.pairs {
            pack_record(&mut out, key, value);
        }
        out
    }

    /// Read an encoded page.
    pub fn decode(bytes: &[u8]) -> Result<ScanPage, BadScanPage> {
        let (&flag, records) = bytes.split_first().ok_or(BadScanPage::Empty)?;
        let pairs = unpack_records(records)?
            .into_iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        Ok(ScanPage {
            pairs,
            more: flag == 1,
        })
    }
}

/// The reply of an [`Op::MGet`]: one value per key asked, `None` for a key that is absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Values(pub Vec<Option<Vec<u8>>>);

/// The reply of an [`Op::Multi`]: one reply per operation, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replies(pub Vec<Reply>);

impl Replies {
    /// As it travels in a [`Reply::Ok`].
    pub fn encode(&self) -> Vec<u8> {
        crate::net::encode(self)
    }

    /// Read an encoded reply list.
    pub fn decode(bytes: &[u8]) -> Result<Replies, crate::net::DecodeError> {
        crate::net::decode(bytes)
    }
}

/// The length that marks an absent value in an encoded [`Values`] (no value is that long: a
/// message is at most [`crate::net::MAX_MESSAGE`] bytes).
const ABSENT: u32 = u32::MAX;

/// An MGET reply that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed MGET reply at byte {at}")]
pub struct BadValues {
    /// Where parsing stopped.
    pub at: usize,
}

impl Values {
    /// As it travels in a [`Reply::Ok`]: for each value, its length as a `u32` LE (`u32::MAX`
    /// for an absent key), then its bytes — the framing of [`pack_record`], one length per
    /// item.
    pub fn encode(&self) -> Vec<u8> {
        let bytes = self.0.iter().flatten().map(Vec::len).sum::<usize>();
        let mut out = Vec::with_capacity(4 * self.0.len() + bytes);
        for value in &self.0 {
            match value {
                Some(value) => {
                    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                    out.extend_from_slice(value);
                }
                None => out.extend_from_slice(&ABSENT.to_le_bytes()),
            }
        }
        out
    }

    /// Read encoded values.
    pub fn decode(bytes: &[u8]) -> Result<Values, BadValues> {
        let mut values = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let length: [u8; 4] = bytes
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .ok_or(BadValues { at })?;
            let start = at + 4;
            match u32::from_le_bytes(length) {
                ABSENT => {
                    values.push(None);
                    at = start;
                }
                length => {
                    let end = start.checked_add(length as usize).ok_or(BadValues { at })?;
                    let value = bytes.get(start..end).ok_or(BadValues { at })?;
                    values.push(Some(value.to_vec()));
                    at = end;
                }
            }
        }
        Ok(Values(values))
    }
}

/// What an [`Op::Set`] does to the key's time to live. Expiry runs on the service clock, which
/// the primary and backup share (see [`Entry::at_ms`]): a key expires on both at the same entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ttl {
    /// The key no longer expires (a plain `SET`).
    Clear,
    /// The key keeps the deadline it had (`KEEPTTL`).
    Keep,
    /// The key expires this many ms from now (`EX`, `PX`).
    In(u64),
}

/// When an [`Op::Expire`] sets the new deadline. A key without one counts as living for ever.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpireIf {
    /// Always.
    Always,
    /// Only if the key has no deadline (`NX`).
    NoDeadline,
    /// Only if the key has one (`XX`).
    HasDeadline,
    /// Only if the new deadline is later (`GT`).
    Later,
    /// Only if the new deadline is earlier (`LT`).
    Earlier,
}

/// When an [`Op::Set`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum When {
    /// Always.
    Always,
    /// Only if the key is absent (`NX`).
    Absent,
    /// Only if the key is present (`XX`).
    Present,
}

impl Op {
    /// The key the operation touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Get { key }
            | Op::Put { key, .. }
            | Op::Append { key, .. }
            | Op::PutHash { key, .. }
            | Op::Delete { key }
            | Op::Set { key, .. }
            | Op::IncrBy { key, .. }
            | Op::AppendLen { key, .. } => key,
            Op::IncrByFloat { key, .. } | Op::Expire { key, .. } | Op::Ttl { key } => key,
            Op::Scan { prefix, .. } => prefix,
            Op::MSet { pairs, .. } => pairs.first().map_or(&[][..], |(key, _)| key),
            Op::MGet { keys } | Op::DelMany { keys } | Op::Exists { keys } => {
                keys.first().map_or(&[][..], |key| key)
            }
            Op::Flush => &[],
            Op::Multi { ops } => ops.first().map_or(&[][..], Op::key),
        }
    }

    /// Whether it is an operation on several keys (`MSet`, `MGet`, `DelMany`, `Exists`; their
    /// keys through [`Op::touch`]); the others name one (see [`Op::key`]).
    pub fn names_many_keys(&self) -> bool {
        matches!(
            self,
            Op::MSet { .. } | Op::MGet { .. } | Op::DelMany { .. } | Op::Exists { .. }
        )
    }

    /// Call `each` with every key it names (a `Multi`: its operations'), in order, repeats
    /// kept; returns whether it touches every key (a scan, a flush, or a `Multi` holding one).
    /// A visitor rather than a list: the primary asks it of most operations more than once
    /// (entering a write, confirming it, a read under the lease), and a list was allocated
    /// each time.
    pub fn touch<'a>(&'a self, each: &mut impl FnMut(&'a [u8])) -> bool {
        match self {
            Op::Scan { .. } | Op::Flush => true,
            Op::Multi { ops } => ops.iter().fold(false, |all, op| op.touch(each) | all),
            Op::MSet { pairs, .. } => {
                pairs.iter().for_each(|(key, _)| each(key));
                false
            }
            Op::MGet { keys } | Op::DelMany { keys } | Op::Exists { keys } => {
                keys.iter().for_each(|key| each(key));
                false
            }
            _ => {
                each(self.key());
                false
            }
        }
    }

    /// Whether it only reads: the primary keeps no duplicate entry for it, and a read that
    /// timed out failed (a write's outcome would be unknown).
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            Op::Get { .. } | Op::Scan { .. } | Op::Ttl { .. } | Op::MGet { .. } | Op::Exists { .. }
        ) || matches!(self, Op::Multi { ops } if ops.iter().all(Op::is_read))
    }

    /// Key and value bytes it carries: what it costs to replicate, roughly.
    pub fn bytes(&self) -> usize {
        match self {
            Op::MSet { pairs, .. } => pairs.iter().map(|(k, v)| k.len() + v.len()).sum(),
            Op::MGet { keys } | Op::DelMany { keys } | Op::Exists { keys } => {
                keys.iter().map(|k| k.len()).sum()
            }
            Op::Multi { ops } => ops.iter().map(Op::bytes).sum(),
            _ => self.key().len() + self.value().map_or(0, <[u8]>::len),
        }
    }

    /// The value it carries, if any.
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            Op::Put { value, .. }
            | Op::Append { value, .. }
            | Op::PutHash { value, .. }
            | Op::Set { value, .. }
            | Op::AppendLen { value, .. } => Some(value),
            Op::Get { .. }
            | Op::Delete { .. }
            | Op::IncrBy { .. }
            | Op::Scan { .. }
            | Op::Flush
            | Op::MSet { .. }
            | Op::IncrByFloat { .. }
            | Op::Expire { .. }
            | Op::Ttl { .. }
            | Op::MGet { .. }
            | Op::DelMany { .. }
            | Op::Exists { .. }
            | Op::Multi { .. } => None,
        }
    }
}

/// A client's request: the operation plus what makes it at-most-once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The client's random id.
    pub client: u64,
    /// The client's sequence number, one higher for each new operation; a retry repeats it.
    pub seq: u64,
    /// When the client gives up, in ms since the Unix epoch (wall clock): a primary never
    /// applies a request past it, so a retry queued behind a frozen primary cannot apply a
    /// write a second time after its session expired.
    pub deadline_ms: u64,
    /// What to do.
    pub op: Op,
}

/// A [`Request`] as a client sends it to a primary: with the view it was sent in. A primary
/// refuses a request sent in a view older than the one that made it primary (after its last
/// time as something else): the client cannot have known its requests would go to a server
/// that refused some of them meanwhile, so a refused request cannot be overtaken by one sent
/// with it (see docs/ARCHITECTURE.md, the client library).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent<R = Request> {
    /// The number of the view whose primary the client sent it to; 0 if it knew none (no
    /// check).
    pub view: u64,
    /// The request.
    pub request: R,
}

impl<R> Sent<R> {
    /// `request` sent in no view (0): the server's own role alone decides whether it takes it
    /// (raw tools and tests).
    pub fn unstamped(request: R) -> Sent<R> {
        Sent { view: 0, request }
    }
}

/// Why an operation was not performed (or, for [`KvError::Unavailable`], not confirmed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum KvError {
    /// This server is not the primary of the view it holds: ask the monitors for the view.
    #[error("not the primary (this server holds view {view})")]
    WrongServer {
        /// The view the server holds.
        view: u64,
    },
    /// The primary could not confirm the operation with its backup yet; retry the same request.
    #[error("unavailable: {reason}")]
    Unavailable {
        /// What is going on.
        reason: String,
    },
    /// A key or value over the configured limit; never applied.
    #[error("{what} of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// `key`, `value` or `resulting value`.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A request older than one the client already sent; never applied.
    #[error("request {seq} of client {client:x} is older than its request {last}")]
    Stale {
        /// The client.
        client: u64,
        /// The stale request's sequence number.
        seq: u64,
        /// The newest sequence number seen from the client.
        last: u64,
    },
    /// A retry of a write whose saved reply the duplicate table no longer holds: it may have
    /// been applied, and is not applied again. Start a new session for the next request.
    #[error("the session of client {client:x} no longer holds the outcome of its request {seq}; it may or may not have been applied")]
    SessionExpired {
        /// The client.
        client: u64,
        /// The request's sequence number.
        seq: u64,
    },
    /// The request arrived after its client's deadline (or with a deadline further away than
    /// the service's session TTL); never applied.
    #[error("{reason}; not applied")]
    Deadline {
        /// Which.
        reason: String,
    },
    /// The primary no longer holds the dump snapshot a page was asked of (it expired, or the
    /// primary changed): start the dump again.
    #[error("dump {dump:x} is not open on this server (it expired or the primary changed); start the dump again")]
    DumpUnknown {
        /// The dump's id.
        dump: u64,
    },
    /// The operation does not apply to the value it found (e.g. `IncrBy` of a value that is
    /// not an integer); nothing was changed.
    #[error("{reason}")]
    Invalid {
        /// Why, in Redis's words where Redis has them.
        reason: String,
    },
    /// Fewer servers than `min_copies` hold the write. With `copies` 0 the primary refused it
    /// without applying it, its view having no backup to hold a second copy (Redis's
    /// `NOREPLICAS`); otherwise it is applied on the primary and will be confirmed once a
    /// backup is in sync. Either way, retry the same request.
    #[error("not enough copies: {copies} of the {min_copies} required hold the write{}", so_far(.copies))]
    NoReplicas {
        /// Servers holding it.
        copies: u32,
        /// The service's `min_copies`.
        min_copies: u32,
    },
}

/// How a [`KvError::NoReplicas`] message ends: whether the write waits or was refused.
fn so_far(copies: &u32) -> &'static str {
    match copies {
        0 => " (the view has no backup, so the write was not applied)",
        _ => " so far",
    }
}

impl KvError {
    /// Whether the same request may be sent again (to the same or a new primary).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            KvError::WrongServer { .. } | KvError::Unavailable { .. } | KvError::NoReplicas { .. }
        )
    }

    /// Whether this retryable answer says for certain that the attempt was not applied: only
    /// the `NoReplicas` refusal (no copies). `WrongServer` and `Unavailable` also answer an
    /// applied request whose confirmation never came, so they say nothing either way.
    pub fn refused_unapplied(&self) -> bool {
        matches!(self, KvError::NoReplicas { copies: 0, .. })
    }
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Done. Get: the value; PutHash and Delete: the previous value; Put and Append: `None`.
    /// Encoded as bytes, not as a sequence of numbers: the same bytes on the wire, decoded in
    /// one copy instead of one call per byte.
    Ok(#[serde(with = "serde_bytes")] Option<Vec<u8>>),
    /// Not done, or not confirmed (see [`KvError`]).
    Err(KvError),
}

/// One operation in the primary's order, as forwarded to the backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the primary's order: the backup applies entries in this order, each once.
    pub index: u64,
    /// The service clock when the primary applied the entry, in ms: the backup uses the same
    /// time, so both expire idle client sessions identically. The clock is carried with the
    /// state and advanced by each primary's monotonic clock, so a wall clock that jumps changes
    /// nothing.
    pub at_ms: u64,
    /// The request.
    pub request: Request,
}

/// Primary → backup: operations to apply, in order. The primary sends `Forward<&Entry>`,
/// encoded from the entries it keeps until they are confirmed (the same bytes, without a copy
/// of every write); the backup decodes a `Forward`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward<E = Entry> {
    /// The view the primary is primary of.
    pub view: u64,
    /// The primary, with its incarnation: the backup checks it is its view's primary.
    pub primary: Member,
    /// Consecutive entries.
    pub entries: Vec<E>,
}

/// Primary → backup: one chunk of the primary's full state, as of entry `index`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferChunk {
    /// The view the primary is primary of.
    pub view: u64,
    /// The primary, with its incarnation.
    pub primary: Member,
    /// The state includes every entry up to and including this index.
    pub index: u64,
    /// A random number naming this transfer attempt: chunks of an earlier attempt that arrive
    /// late are recognized and ignored.
    pub attempt: u64,
    /// Chunk number, from 0; the backup expects them in order.
    pub chunk: u64,
    /// Whether this is the last chunk: the backup installs the state on receiving it.
    pub last: bool,
    /// Key/value pairs, packed: each is `[key length: u32 LE][value length: u32 LE][key]
    /// [value]` (see [`pack_record`]).
    #[serde(with = "serde_bytes")]
    pub records: Vec<u8>,
    /// When the keys of this chunk that expire do so (service clock, ms).
    pub deadlines: Vec<(serde_bytes::ByteBuf, u64)>,
    /// Part of the duplicate table.
    pub sessions: Vec<(u64, Session)>,
    /// The service clock of the state (see [`Entry::at_ms`]), so the backup expires sessions
    /// exactly when the primary does.
    pub clock_ms: u64,
    /// The service's limits: the backup applies entries under them, whatever its own
    /// configuration says.
    pub limits: Limits,
    /// Keys in the whole state (for progress reports).
    pub total_keys: u64,
}

/// Append one record to a packed [`TransferChunk::records`] buffer.
pub fn pack_record(buf: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(value);
}

/// A packed records buffer that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed records in a transfer chunk at byte {at}")]
pub struct BadRecords {
    /// Where parsing stopped.
    pub at: usize,
}

/// A key and its value, borrowed from a packed buffer.
pub type Pair<'a> = (&'a [u8], &'a [u8]);

/// Split a packed records buffer into (key, value) pairs; fails on a truncated buffer.
pub fn unpack_records(buf: &[u8]) -> Result<Vec<Pair<'_>>, BadRecords> {
    let mut out = Vec::new();
    let mut at = 0;
    let length = |at: usize| -> Option<usize> {
        let bytes: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(bytes) as usize)
    };
    while at < buf.len() {
        let (Some(k), Some(v)) = (length(at), length(at + 4)) else {
            return Err(BadRecords { at });
        };
        let key_at = at + 8;
        let value_at = key_at.checked_add(k).ok_or(BadRecords { at })?;
        let end = value_at.checked_add(v).ok_or(BadRecords { at })?;
        if end > buf.len() {
            return Err(BadRecords { at });
        }
        out.push((&buf[key_at..value_at], &buf[value_at..end]));
        at = end;
    }
    Ok(out)
}

/// What a dump asks the primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DumpRequest {
    /// How many keys the service holds now (no snapshot is kept).
    Count,
    /// Take an O(1) snapshot of the data once every write in it is confirmed, and reply with
    /// its first page.
    Begin {
        /// Most key and value bytes in one page (capped by the server).
        max_bytes: u32,
    },
    /// The page of snapshot `dump` after key `after`.
    Next {
        /// The snapshot's id, from the first page.
        dump: u64,
        /// The last key of the previous page.
        #[serde(with = "serde_bytes")]
        after: Vec<u8>,
        /// Most key and value bytes in one page.
        max_bytes: u32,
    },
}

/// One page of a dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpPage {
    /// The snapshot's id: ask for the next page with it.
    pub dump: u64,
    /// The view whose primary took the snapshot.
    pub view: u64,
    /// The snapshot holds every entry up to this index, all of them confirmed.
    pub index: u64,
    /// Keys in the whole snapshot (for progress reports).
    pub total_keys: u64,
    /// Key and value bytes in the whole snapshot.
    pub total_bytes: u64,
    /// Key/value pairs in key order, packed as in [`TransferChunk::records`].
    #[serde(with = "serde_bytes")]
    pub records: Vec<u8>,
    /// Whether this is the last page.
    pub last: bool,
}

/// The primary's answer to a [`DumpRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DumpReply {
    /// The answer to [`DumpRequest::Count`].
    Count(u64),
    /// A page.
    Page(DumpPage),
    /// Not served (see [`KvError`]).
    Err(KvError),
}

/// The backup's answer to a [`Forward`] or [`TransferChunk`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamReply {
    /// Applied: every entry up to `applied` is in the backup's state.
    Applied {
        /// The backup's position.
        applied: u64,
    },
    /// Not now: the backup has not seen this view yet, or needs the state first, or lost a
    /// chunk. The primary retries (a transfer from its first chunk).
    Retry {
        /// Why.
        reason: String,
    },
    /// Never: in the backup's view, the sender is not the primary or this is not the backup.
    /// The primary stops serving until its own view changes.
    Refused {
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::{Entry, Forward, KvError, Op, Reply, Request};
    use crate::net::{decode, encode};
    use crate::view::Member;

    /// The reply as it was encoded before its value was marked as bytes: a sequence of `u8`.
    #[derive(serde::Serialize)]
    enum ReplyAsSequence {
        Ok(Option<Vec<u8>>),
    }

    #[test]
    fn a_reply_value_encodes_to_the_same_bytes_as_a_sequence_of_u8_did() {
        for value in [None, Some(Vec::new()), Some(b"v".repeat(300))] {
            let now = encode(&Reply::Ok(value.clone()));
            assert_eq!(now, encode(&ReplyAsSequence::Ok(value.clone())));
            assert_eq!(decode::<Reply>(&now).ok(), Some(Reply::Ok(value)));
        }
        let refused = Reply::Err(KvError::Invalid {
            reason: "no".into(),
        });
        assert_eq!(decode::<Reply>(&encode(&refused)).ok(), Some(refused));
    }

    /// The keys `op` touches, in the order it visits them, and whether it touches them all.
    fn touched(op: &Op) -> (Vec<Vec<u8>>, bool) {
        let mut keys = Vec::new();
        let all = op.touch(&mut |key| keys.push(key.to_vec()));
        (keys, all)
    }

    #[test]
    fn touch_visits_every_named_key_and_says_when_an_op_touches_all() {
        let get = |key: &str| Op::Get { key: key.into() };
        let mget = Op::MGet {
            keys: vec![
                b"b".to_vec().into(),
                b"a".to_vec().into(),
                b"b".to_vec().into(),
            ],
        };
        assert_eq!(touched(&get("k")), (vec![b"k".to_vec()], false));
        assert_eq!(
            touched(&mget),
            (vec![b"b".to_vec(), b"a".to_vec(), b"b".to_vec()], false),
            "in order, repeats kept"
        );
        assert_eq!(touched(&Op::Flush), (Vec::new(), true));
        let multi = Op::Multi {
            ops: vec![get("x"), Op::Flush, get("y")],
        };
        assert_eq!(
            touched(&multi),
            (vec![b"x".to_vec(), b"y".to_vec()], true),
            "a flush inside a multi touches all, and the keys after it are still visited"
        );
    }

    #[test]
    fn a_forward_of_borrowed_entries_is_the_bytes_of_a_forward_of_owned_ones() {
        let entry = |index: u64| Entry {
            index,
            at_ms: 40 + index,
            request: Request {
                client: 7,
                seq: index,
                deadline_ms: 1_000,
                op: Op::Put {
                    key: format!("k{index}").into_bytes(),
                    value: vec![b'v'; 100],
                },
            },
        };
        let kept = [entry(1), entry(2)];
        let primary = Member {
            id: "kv1".into(),
            addr: "127.0.0.1:7101".into(),
            incarnation: 9,
        };
        let borrowed = Forward {
            view: 3,
            primary: primary.clone(),
            entries: kept.iter().collect(),
        };
        let owned = Forward {
            view: 3,
            primary,
            entries: kept.to_vec(),
        };
        assert_eq!(encode(&borrowed), encode(&owned));
        assert_eq!(decode::<Forward>(&encode(&borrowed)).ok(), Some(owned));
    }
}
