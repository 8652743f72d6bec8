//! The backup's rules: accept forwards and transfer chunks only from the primary of our own
//! view, apply entries in the primary's order, each exactly once, and install a transfer only
//! if it is newer than what we hold.

use super::{BackupRole, Effect, Replica, Role};
use crate::kv::api::{unpack_records, Forward, StreamReply, TransferChunk};
use crate::kv::data::Record;
use crate::kv::store::Store;
use crate::view::{Member, View};

/// A state transfer being received.
#[derive(Debug)]
pub struct Staging {
    /// The view it belongs to.
    view: u64,
    /// The index the state is as of.
    index: u64,
    /// The transfer attempt it belongs to.
    attempt: u64,
    /// The next chunk expected.
    next_chunk: u64,
    /// Keys in the whole state, as the primary said.
    total_keys: u64,
    /// What was received so far, built in place.
    store: Store,
}

impl Staging {
    /// Keys received so far, the total the transfer will bring, and the bytes received.
    pub fn received(&self) -> (usize, u64, usize) {
        let data = self.store.data();
        (data.len(), self.total_keys, data.bytes())
    }

    /// Keys received of the total, for status.
    pub fn progress(&self) -> serde_json::Value {
        serde_json::json!({
            "view": self.view,
            "keys": self.store.data().len(),
            "total_keys": self.total_keys,
        })
    }
}

/// Whether, in `view`, `primary` may replicate to `me` in view `sender_view`.
fn check_sender(
    view: &View,
    me: &Member,
    sender_view: u64,
    primary: &Member,
) -> Result<(), StreamReply> {
    if sender_view > view.num {
        return Err(StreamReply::Retry {
            reason: format!(
                "this server has not seen view {sender_view} yet (it holds {})",
                view.num
            ),
        });
    }
    if sender_view < view.num {
        return Err(StreamReply::Refused {
            reason: format!(
                "view {sender_view} is over: this server holds view {}",
                view.num
            ),
        });
    }
    if view.backup.as_ref() != Some(me) {
        return Err(StreamReply::Refused {
            reason: format!("this server is not the backup of view {sender_view}"),
        });
    }
    if view.primary.as_ref() != Some(primary) {
        return Err(StreamReply::Refused {
            reason: format!("{} is not the primary of view {sender_view}", primary.id),
        });
    }
    Ok(())
}

impl Replica {
    /// [`check_sender`], asking for a ping if the sender knows a view we do not.
    fn admit(&mut self, sender_view: u64, primary: &Member) -> Result<&mut BackupRole, Reject> {
        if let Err(reply) = check_sender(&self.view, &self.me, sender_view, primary) {
            let effects = match reply {
                StreamReply::Retry { .. } => vec![Effect::PingNow],
                _ => Vec::new(),
            };
            return Err((reply, effects));
        }
        match &mut self.role {
            Role::Backup(b) => Ok(b),
            _ => Err((
                StreamReply::Refused {
                    reason: "this server is not a backup".into(),
                },
                Vec::new(),
            )),
        }
    }

    /// A forward from the primary: apply the entries we do not have yet, in order.
    pub fn on_forward(&mut self, forward: Forward) -> (StreamReply, Vec<Effect>) {
        let installed = match self.admit(forward.view, &forward.primary) {
            Ok(b) => b.installed,
            Err(rejected) => return rejected,
        };
        if !installed {
            let reason = "this backup has not received the state yet".into();
            return (StreamReply::Retry { reason }, Vec::new());
        }
        for entry in &forward.entries {
            if entry.index <= self.index {
                continue;
            }
            if entry.index != self.index + 1 {
                break;
            }
            self.store.apply(&entry.request, entry.at_ms);
            self.index = entry.index;
        }
        let applied = self.index;
        (StreamReply::Applied { applied }, Vec::new())
    }

    /// A chunk of the primary's full state; the last one installs it.
    pub fn on_transfer(&mut self, chunk: TransferChunk) -> (StreamReply, Vec<Effect>) {
        let index = self.index;
        let backup = match self.admit(chunk.view, &chunk.primary) {
            Ok(b) => b,
            Err(rejected) => return rejected,
        };
        // A state older than what we hold or are receiving for this view can only be a chunk
        // of an earlier attempt arriving late (the primary's index never goes back); installing
        // it would roll back entries the primary already counted as replicated.
        let installed = if backup.installed { index } else { 0 };
        let staged = backup.staging.as_ref().map_or(0, |s| s.index);
        if chunk.index < installed.max(staged) {
            let reason = format!(
                "stale transfer chunk (state as of entry {}, this server holds {})",
                chunk.index,
                installed.max(staged)
            );
            return (StreamReply::Retry { reason }, Vec::new());
        }
        let records = match unpack_records(&chunk.records) {
            Ok(records) => records,
            Err(err) => {
                let reason = format!("{err}; start the transfer again");
                return (StreamReply::Retry { reason }, Vec::new());
            }
        };
        if chunk.chunk == 0 {
            backup.staging = Some(Staging {
                view: chunk.view,
                index: chunk.index,
                attempt: chunk.attempt,
                next_chunk: 0,
                total_keys: chunk.total_keys,
                store: Store::receiving(chunk.limits, chunk.clock_ms),
            });
        }
        let Some(staging) = backup.staging.as_mut().filter(|s| {
            s.index == chunk.index && s.attempt == chunk.attempt && s.next_chunk == chunk.chunk
        }) else {
            let reason = format!(
                "chunk {} out of order; start the transfer again",
                chunk.chunk
            );
            return (StreamReply::Retry { reason }, Vec::new());
        };
        staging.next_chunk += 1;
        staging.store.extend(
            records.into_iter().map(|(k, v)| Record::new(k, v)),
            chunk
                .deadlines
                .into_iter()
                .map(|(k, at)| (k.into_vec(), at)),
            chunk.sessions,
        );
        if !chunk.last {
            return (StreamReply::Applied { applied: index }, Vec::new());
        }
        let Some(staging) = backup.staging.take() else {
            let reason = "no transfer in progress".into();
            return (StreamReply::Retry { reason }, Vec::new());
        };
        backup.installed = true;
        self.store = staging.store;
        self.index = chunk.index;
        self.holds_state = true;
        tracing::info!(
            "{}: installed the state of view {} as of entry {} ({} keys)",
            self.me.id,
            chunk.view,
            chunk.index,
            self.store.data().len()
        );
        if let Some(mismatch) = self.limits_mismatch() {
            tracing::warn!(
                "{}: limits differ from the service's: {mismatch}",
                self.me.id
            );
        }
        (
            StreamReply::Applied {
                applied: chunk.index,
            },
            Vec::new(),
        )
    }
}

/// A refused message: the reply and what to do.
type Reject = (StreamReply, Vec<Effect>);
