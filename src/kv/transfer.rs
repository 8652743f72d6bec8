//! A state transfer's source: an O(1) snapshot of the primary's store, cut lazily into chunks
//! of bounded size while the primary keeps serving.

use super::api::{pack_record, Session, TransferChunk};
use super::store::Store;
use crate::view::Member;

/// Most key and value bytes in one transfer chunk, by default.
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

/// Bytes a session takes in a transfer, roughly.
fn session_size(session: &Session) -> usize {
    32 + match &session.reply {
        Some(crate::kv::api::Reply::Ok(value)) => value.as_ref().map_or(0, Vec::len),
        Some(crate::kv::api::Reply::Err(_)) => 64,
        None => 0,
    }
}

/// Where the next chunk starts.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Cursor {
    /// Records after this key (from the first if `None`).
    Records(Option<Vec<u8>>),
    /// Sessions after this client (from the first if `None`).
    Sessions(Option<u64>),
    /// Every chunk was produced.
    Done,
}

/// The state as of one index, and the chunks cut from it so far.
#[derive(Debug)]
pub struct Snapshot {
    /// The view whose primary sends it.
    view: u64,
    /// The primary.
    primary: Member,
    /// The state holds every entry up to this index.
    index: u64,
    /// This attempt's random id.
    attempt: u64,
    /// The state (shares structure with the live store).
    store: Store,
    /// The next chunk's number.
    next_chunk: u64,
    /// Where the next chunk starts.
    cursor: Cursor,
    /// Most key and value bytes per chunk (one record or session more if it alone is bigger).
    chunk_bytes: usize,
}

impl Snapshot {
    /// A transfer of `store` as of `index`.
    pub fn new(
        view: u64,
        primary: Member,
        index: u64,
        attempt: u64,
        store: Store,
        chunk_bytes: usize,
    ) -> Snapshot {
        Snapshot {
            view,
            primary,
            index,
            attempt,
            store,
            next_chunk: 0,
            cursor: Cursor::Records(None),
            chunk_bytes: chunk_bytes.max(1),
        }
    }

    /// The index the state is as of.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Keys in the state.
    pub fn keys(&self) -> usize {
        self.store.data().len()
    }

    /// The next chunk, or `None` after the last one.
    pub fn next_chunk(&mut self) -> Option<TransferChunk> {
        if self.cursor == Cursor::Done {
            return None;
        }
        // Room for a full chunk of records (or the whole store, if smaller) with their 8-byte
        // lengths (a quarter more than the key and value bytes covers records of 32 bytes and
        // up), so it is not regrown.
        let room = self.chunk_bytes.min(self.store.data().bytes());
        let mut records = Vec::with_capacity(room + room / 4);
        let mut deadlines = Vec::new();
        let mut sessions = Vec::new();
        let mut bytes = 0;
        if let Cursor::Records(after) = &self.cursor {
            let mut next = Cursor::Sessions(None);
            let mut last: Option<&[u8]> = None;
            for record in self.store.data().after(after.as_deref()) {
                if bytes > 0 && bytes + record.size() > self.chunk_bytes {
                    next = Cursor::Records(last.map(<[u8]>::to_vec));
                    break;
                }
                bytes += record.size();
                pack_record(&mut records, record.key(), record.value());
                if let Some(at) = self.store.data().deadline(record.key()) {
                    deadlines.push((record.key().to_vec().into(), at));
                }
                last = Some(record.key());
            }
            self.cursor = next;
        }
        if let Cursor::Sessions(after) = self.cursor {
            let mut next = Cursor::Done;
            for (client, session) in self.store.sessions().after(after) {
                let size = session_size(session);
                if bytes > 0 && bytes + size > self.chunk_bytes {
                    next = Cursor::Sessions(sessions.last().map(|(c, _)| *c).or(after));
                    break;
                }
                bytes += size;
                sessions.push((*client, session.clone()));
            }
            self.cursor = next;
        }
        let chunk = TransferChunk {
            view: self.view,
            primary: self.primary.clone(),
            index: self.index,
            attempt: self.attempt,
            chunk: self.next_chunk,
            last: self.cursor == Cursor::Done,
            records,
            deadlines,
            sessions,
            clock_ms: self.store.clock_ms(),
            limits: self.store.limits(),
            total_keys: self.store.data().len() as u64,
        };
        self.next_chunk += 1;
        Some(chunk)
    }
}
