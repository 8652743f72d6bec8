//! The backup's side: accept forwards and state transfers only from the primary of our own
//! view, apply entries in the primary's order, each exactly once.

use super::api::{Forward, Session, StreamReply, TransferChunk};
use super::node::{KvServer, State};
use super::store::Store;
use crate::view::Member;

/// A state transfer being received.
pub(super) struct Staging {
    /// The view it belongs to.
    view: u64,
    /// The index the state is as of.
    index: u64,
    /// The transfer attempt it belongs to.
    attempt: u64,
    /// The next chunk expected.
    next_chunk: u64,
    /// Pairs received so far.
    data: Vec<(Vec<u8>, Vec<u8>)>,
    /// Sessions received so far.
    sessions: Vec<(u64, Session)>,
}

/// Whether `st` lets `primary` replicate to us in `view`; `Err` is the reply to send.
fn check_sender(st: &State, me: &Member, view: u64, primary: &Member) -> Result<(), StreamReply> {
    if view > st.view.num {
        return Err(StreamReply::Retry {
            reason: format!(
                "this server has not seen view {view} yet (it holds {})",
                st.view.num
            ),
        });
    }
    if view < st.view.num {
        return Err(StreamReply::Refused {
            reason: format!(
                "view {view} is over: this server holds view {}",
                st.view.num
            ),
        });
    }
    if st.view.backup.as_ref() != Some(me) {
        return Err(StreamReply::Refused {
            reason: format!("this server is not the backup of view {view}"),
        });
    }
    if st.view.primary.as_ref() != Some(primary) {
        return Err(StreamReply::Refused {
            reason: format!("{} is not the primary of view {view}", primary.id),
        });
    }
    Ok(())
}

impl KvServer {
    /// [`check_sender`], pinging the monitors at once if the sender knows a view we do not.
    fn admit(&self, st: &State, view: u64, primary: &Member) -> Result<(), StreamReply> {
        let verdict = check_sender(st, self.me(), view, primary);
        if matches!(verdict, Err(StreamReply::Retry { .. })) {
            self.ping_soon();
        }
        verdict
    }

    /// A forward from the primary: apply the entries we do not have yet, in order.
    pub fn on_forward(&self, forward: Forward) -> StreamReply {
        let mut st = self.state();
        if let Err(reply) = self.admit(&st, forward.view, &forward.primary) {
            return reply;
        }
        if st.installed_view != Some(forward.view) {
            return StreamReply::Retry {
                reason: "this backup has not received the state yet".into(),
            };
        }
        for entry in &forward.entries {
            if entry.index <= st.index {
                continue;
            }
            if entry.index != st.index + 1 {
                break;
            }
            st.store.apply(&entry.request, entry.at_ms);
            st.index = entry.index;
        }
        StreamReply::Applied { applied: st.index }
    }

    /// A chunk of the primary's full state; the last one installs it.
    pub fn on_transfer(&self, chunk: TransferChunk) -> StreamReply {
        let mut st = self.state();
        if let Err(reply) = self.admit(&st, chunk.view, &chunk.primary) {
            return reply;
        }
        // A state older than what we hold or are receiving for this view can only be a chunk
        // of an earlier attempt arriving late (the primary's index never goes back); installing
        // it would roll back entries the primary already counted as replicated.
        let installed = if st.installed_view == Some(chunk.view) {
            st.index
        } else {
            0
        };
        let staged = st
            .staging
            .as_ref()
            .filter(|s| s.view == chunk.view)
            .map_or(0, |s| s.index);
        if chunk.index < installed.max(staged) {
            return StreamReply::Retry {
                reason: format!(
                    "stale transfer chunk (state as of entry {}, this server holds {})",
                    chunk.index,
                    installed.max(staged)
                ),
            };
        }
        if chunk.chunk == 0 {
            st.staging = Some(Staging {
                view: chunk.view,
                index: chunk.index,
                attempt: chunk.attempt,
                next_chunk: 0,
                data: Vec::new(),
                sessions: Vec::new(),
            });
        }
        let in_order = st.staging.as_ref().is_some_and(|s| {
            s.view == chunk.view
                && s.index == chunk.index
                && s.attempt == chunk.attempt
                && s.next_chunk == chunk.chunk
        });
        let Some(staging) = st.staging.as_mut().filter(|_| in_order) else {
            return StreamReply::Retry {
                reason: format!(
                    "chunk {} out of order; start the transfer again",
                    chunk.chunk
                ),
            };
        };
        staging.next_chunk += 1;
        staging.data.extend(chunk.data);
        staging.sessions.extend(chunk.sessions);
        if !chunk.last {
            return StreamReply::Applied { applied: st.index };
        }
        let data = std::mem::take(&mut staging.data);
        let sessions = std::mem::take(&mut staging.sessions);
        st.staging = None;
        st.store = Store::from_transfer(self.config.limits, data, sessions, chunk.clock);
        st.index = chunk.index;
        st.installed_view = Some(chunk.view);
        st.initialized = true;
        self.reset_progress(chunk.index);
        tracing::info!(
            "{}: installed the state of view {} as of entry {} ({} keys)",
            self.me().id,
            chunk.view,
            chunk.index,
            st.store.keys()
        );
        StreamReply::Applied {
            applied: chunk.index,
        }
    }
}
