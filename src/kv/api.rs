//! The kv service's RPCs as they travel on the wire.

use serde::{Deserialize, Serialize};

use crate::view::Member;

/// Client → primary: a [`Request`], answered with a [`Reply`].
pub const REQUEST: &str = "/kv/request";
/// Primary → backup: a [`Forward`], answered with a [`StreamReply`].
pub const FORWARD: &str = "/kv/forward";
/// Primary → backup: a [`TransferChunk`] of the full state, answered with a [`StreamReply`].
pub const TRANSFER: &str = "/kv/transfer";
/// GET a JSON status document.
pub const STATUS: &str = "/status";

/// One operation on one key. Keys and values are arbitrary bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Read the value; absent keys read as `None`.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Set the value.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Append to the value (an absent key counts as empty).
    Append {
        /// The key.
        key: Vec<u8>,
        /// What to append.
        value: Vec<u8>,
    },
    /// Store `decimal(fnv1a32(previous ++ value))`; reply with the previous value.
    PutHash {
        /// The key.
        key: Vec<u8>,
        /// What to hash after the previous value.
        value: Vec<u8>,
    },
    /// Remove the key; reply with the previous value.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl Op {
    /// The key the operation touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Get { key }
            | Op::Put { key, .. }
            | Op::Append { key, .. }
            | Op::PutHash { key, .. }
            | Op::Delete { key } => key,
        }
    }

    /// The value it carries, if any.
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            Op::Put { value, .. } | Op::Append { value, .. } | Op::PutHash { value, .. } => {
                Some(value)
            }
            Op::Get { .. } | Op::Delete { .. } => None,
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
    /// What to do.
    pub op: Op,
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
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Done. Get: the value; PutHash and Delete: the previous value; Put and Append: `None`.
    Ok(Option<Vec<u8>>),
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

/// Primary → backup: operations to apply, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    /// The view the primary is primary of.
    pub view: u64,
    /// The primary, with its incarnation: the backup checks it is its view's primary.
    pub primary: Member,
    /// Consecutive entries.
    pub entries: Vec<Entry>,
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
    /// Key/value pairs.
    pub data: Vec<(Vec<u8>, Vec<u8>)>,
    /// Part of the duplicate table.
    pub sessions: Vec<(u64, Session)>,
    /// The service clock of the state and its next session sweep (see [`Entry::at_ms`]), so
    /// the backup expires sessions exactly when the primary does.
    pub clock: (u64, u64),
}

/// A client's last request and its reply: what makes retries at-most-once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The client's last sequence number.
    pub seq: u64,
    /// The reply to it, repeated for a retry.
    pub reply: Reply,
    /// When the client was last heard from (service clock, ms): idle sessions expire.
    pub last_ms: u64,
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
