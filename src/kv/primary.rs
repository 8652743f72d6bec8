//! The primary's side: ordering and applying client requests, and streaming them to the
//! backup (after a full state transfer) in index order.

use std::sync::Arc;
use std::time::Duration;

use super::api::{Entry, Forward, KvError, Reply, Request, StreamReply, TransferChunk};
use super::api::{FORWARD, TRANSFER};
use super::node::KvServer;
use crate::view::View;

/// Most entries in one forward.
const MAX_BATCH_ENTRIES: usize = 1024;
/// Most key and value bytes in one forward or transfer chunk.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// Why a stream to the backup stopped.
enum Stop {
    /// The backup refused us: our view is out of date.
    Refused(String),
    /// Our view changed; a new stream takes over.
    ViewChanged,
}

fn unavailable(reason: impl Into<String>) -> Reply {
    Reply::Err(KvError::Unavailable {
        reason: reason.into(),
    })
}

impl KvServer {
    /// Serve a client request: apply it here, then wait until the backup has applied it.
    pub async fn execute(&self, request: Request) -> Reply {
        let mut progress = self.progress.subscribe();
        let (index, reply, epoch) = {
            let mut st = self.state();
            let serving = st.view.primary.as_ref() == Some(self.me())
                && st.initialized
                && st.fenced_view != Some(st.view.num);
            if !serving {
                return Reply::Err(KvError::WrongServer { view: st.view.num });
            }
            let at_ms = st.clock.now_ms().max(st.store.clock_ms());
            let reply = st.store.apply(&request, at_ms);
            st.index += 1;
            let index = st.index;
            if st.view.backup.is_some() {
                st.log.push_back(Entry {
                    index,
                    at_ms,
                    request,
                });
                self.wake_sender.notify_one();
            } else {
                self.progress
                    .send_modify(|p| p.replicated = p.replicated.max(index));
            }
            (index, reply, progress.borrow().epoch)
        };
        let confirmed = async {
            progress
                .wait_for(|p| p.replicated >= index || p.epoch != epoch)
                .await
                .map(|p| *p)
        };
        match tokio::time::timeout(self.config.confirm_timeout, confirmed).await {
            Ok(Ok(p)) if p.replicated >= index && p.epoch == epoch => reply,
            Ok(_) => Reply::Err(KvError::WrongServer {
                view: self.state().view.num,
            }),
            Err(_) => unavailable("the backup has not confirmed the operation yet"),
        }
    }

    /// The replication task of `view` (in which we are primary and there is a backup): send
    /// the full state, then every entry after it, in order, until the view changes.
    pub(super) async fn replicate(self: Arc<Self>, view: View) {
        let Err(stop) = self.stream(&view).await;
        match stop {
            Stop::ViewChanged => {}
            Stop::Refused(reason) => {
                let mut st = self.state();
                if st.view.num == view.num {
                    tracing::warn!(
                        "{}: backup refused us in view {}: {reason}; not serving until the view changes",
                        self.me().id,
                        view.num
                    );
                    st.fenced_view = Some(view.num);
                    self.bump_epoch();
                }
            }
        }
    }

    async fn stream(&self, view: &View) -> Result<std::convert::Infallible, Stop> {
        let Some(backup) = view.backup.clone() else {
            return Err(Stop::ViewChanged);
        };
        let mut backoff = Backoff::new(self.config.timings.ping_interval);
        loop {
            let mut applied = loop {
                match self.transfer(view, &backup.addr).await {
                    Ok(applied) => break applied,
                    Err(Some(stop)) => return Err(stop),
                    Err(None) => {
                        self.replication_failed();
                        backoff.wait().await;
                    }
                }
            };
            {
                let mut st = self.state();
                if st.view.num != view.num {
                    return Err(Stop::ViewChanged);
                }
                st.synced_view = Some(view.num);
                st.failing_since = None;
                tracing::info!(
                    "{}: backup {} holds the state as of entry {applied}",
                    self.me().id,
                    backup.id
                );
            }
            self.confirm(applied);
            self.ping_soon();
            backoff.reset();
            loop {
                let notified = self.wake_sender.notified();
                let batch = self.next_batch(view, applied)?;
                if batch.is_empty() {
                    notified.await;
                    continue;
                }
                let forward = Forward {
                    view: view.num,
                    primary: self.me().clone(),
                    entries: batch,
                };
                match self.send(&backup.addr, FORWARD, &forward).await {
                    Ok(now) if now < applied => {
                        // The backup lost entries it had confirmed: never count on it again
                        // without a fresh transfer.
                        tracing::error!(
                            "{}: backup {} went back from entry {applied} to {now}; sending the state again",
                            self.me().id,
                            backup.id
                        );
                        self.state().synced_view = None;
                        break;
                    }
                    Ok(now) => {
                        applied = now;
                        self.state().failing_since = None;
                        self.confirm(applied);
                        backoff.reset();
                    }
                    Err(Some(stop)) => return Err(stop),
                    Err(None) => {
                        self.replication_failed();
                        backoff.wait().await;
                    }
                }
            }
        }
    }

    /// Note that replication to the backup is failing; after `dead_pings` intervals of it the
    /// pings ask the monitors to replace the backup.
    fn replication_failed(&self) {
        let mut st = self.state();
        if st.failing_since.is_none() {
            st.failing_since = Some(std::time::Instant::now());
        }
    }

    /// Entries after `applied`, up to the batch limits; fails if the view changed.
    fn next_batch(&self, view: &View, applied: u64) -> Result<Vec<Entry>, Stop> {
        let mut st = self.state();
        if st.view.num != view.num {
            return Err(Stop::ViewChanged);
        }
        while st.log.front().is_some_and(|e| e.index <= applied) {
            st.log.pop_front();
        }
        let mut bytes = 0;
        let mut batch = Vec::new();
        for entry in &st.log {
            let size =
                entry.request.op.key().len() + entry.request.op.value().map_or(0, <[u8]>::len);
            if !batch.is_empty()
                && (batch.len() >= MAX_BATCH_ENTRIES || bytes + size > MAX_BATCH_BYTES)
            {
                break;
            }
            bytes += size;
            batch.push(entry.clone());
        }
        Ok(batch)
    }

    /// Everything up to `applied` is on the backup: release the waiting requests.
    fn confirm(&self, applied: u64) {
        self.progress
            .send_modify(|p| p.replicated = p.replicated.max(applied));
    }

    /// Send the whole state as of the current index, in chunks. `Ok(index)` once installed;
    /// `Err(None)` to retry.
    async fn transfer(&self, view: &View, addr: &str) -> Result<u64, Option<Stop>> {
        let chunks = {
            let mut st = self.state();
            if st.view.num != view.num {
                return Err(Some(Stop::ViewChanged));
            }
            st.log.clear();
            let mut chunks = Chunker::new(view.num, self.me().clone(), st.index, st.store.clock());
            for (key, value) in st.store.data() {
                chunks.add(key.len() + value.len(), |c| {
                    c.data.push((key.clone(), value.clone()))
                });
            }
            for (client, session) in st.store.sessions() {
                let size = 16 + reply_size(&session.reply);
                chunks.add(size, |c| c.sessions.push((client, session)));
            }
            chunks.finish()
        };
        let index = chunks.last().map_or(0, |c| c.index);
        for chunk in &chunks {
            self.send(addr, TRANSFER, chunk).await?;
        }
        Ok(index)
    }

    /// One RPC to the backup. `Ok(applied)`; `Err(None)` to retry; `Err(Some(stop))` to stop.
    async fn send<T: serde::Serialize>(
        &self,
        addr: &str,
        path: &str,
        message: &T,
    ) -> Result<u64, Option<Stop>> {
        let reply = self
            .rpc
            .call::<T, StreamReply>(addr, path, message, self.config.rpc_timeout)
            .await;
        match reply {
            Ok(StreamReply::Applied { applied }) => Ok(applied),
            Ok(StreamReply::Retry { reason }) => {
                tracing::debug!("{}: backup asks to retry: {reason}", self.me().id);
                Err(None)
            }
            Ok(StreamReply::Refused { reason }) => Err(Some(Stop::Refused(reason))),
            Err(err) => {
                tracing::debug!("{}: forward failed: {err}", self.me().id);
                Err(None)
            }
        }
    }
}

/// Exponential backoff between retries to the backup, capped at one ping interval.
struct Backoff {
    /// The next wait.
    next: Duration,
    /// The cap.
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Backoff {
        Backoff {
            next: Duration::from_millis(2),
            max,
        }
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max);
    }

    fn reset(&mut self) {
        self.next = Duration::from_millis(2);
    }
}

/// Bytes a saved reply takes in a transfer.
fn reply_size(reply: &Reply) -> usize {
    match reply {
        Reply::Ok(value) => value.as_ref().map_or(0, Vec::len),
        Reply::Err(_) => 64,
    }
}

/// Cuts a state into transfer chunks of at most [`MAX_BATCH_BYTES`] (or one item, if bigger).
struct Chunker {
    /// Chunks filled so far.
    chunks: Vec<TransferChunk>,
    /// Bytes in the last chunk.
    bytes: usize,
    /// The first chunk, copied for the next ones.
    template: TransferChunk,
}

impl Chunker {
    fn new(view: u64, primary: crate::view::Member, index: u64, clock: (u64, u64)) -> Chunker {
        let template = TransferChunk {
            view,
            primary,
            index,
            attempt: rand::random(),
            chunk: 0,
            last: false,
            data: Vec::new(),
            sessions: Vec::new(),
            clock,
        };
        Chunker {
            chunks: vec![template.clone()],
            bytes: 0,
            template,
        }
    }

    /// Add an item of `size` bytes with `put`, starting a new chunk if this one is full.
    fn add(&mut self, size: usize, put: impl FnOnce(&mut TransferChunk)) {
        if self.bytes > 0 && self.bytes + size > MAX_BATCH_BYTES {
            let mut next = self.template.clone();
            next.chunk = self.chunks.len() as u64;
            self.chunks.push(next);
            self.bytes = 0;
        }
        self.bytes += size;
        if let Some(chunk) = self.chunks.last_mut() {
            put(chunk);
        }
    }

    /// The chunks, the last one marked.
    fn finish(mut self) -> Vec<TransferChunk> {
        if let Some(last) = self.chunks.last_mut() {
            last.last = true;
        }
        self.chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::Member;

    fn member() -> Member {
        Member {
            id: "p".into(),
            addr: "p".into(),
            incarnation: 1,
        }
    }

    #[test]
    fn transfers_are_cut_into_bounded_chunks_of_one_attempt() {
        let mut chunker = Chunker::new(3, member(), 42, (7, 9));
        // 18 saved replies of 3 MiB each: 54 MiB in all, far over one message.
        for client in 0..18u64 {
            chunker.add(3 << 20, |c| {
                c.sessions.push((
                    client,
                    crate::kv::api::Session {
                        seq: 1,
                        reply: Reply::Ok(None),
                        last_ms: 0,
                    },
                ))
            });
        }
        chunker.add(10, |c| c.data.push((b"k".to_vec(), b"v".to_vec())));
        let chunks = chunker.finish();
        assert_eq!(
            chunks.len(),
            18,
            "two 3 MiB items never share a 4 MiB chunk"
        );
        assert!(chunks
            .iter()
            .all(|c| c.sessions.len() <= 1 || c.data.is_empty()));
        assert_eq!(chunks.iter().map(|c| c.sessions.len()).sum::<usize>(), 18);
        let attempt = chunks[0].attempt;
        for (i, chunk) in chunks.iter().enumerate() {
            assert_eq!(chunk.chunk, i as u64);
            assert_eq!(
                (chunk.view, chunk.index, chunk.attempt, chunk.clock),
                (3, 42, attempt, (7, 9))
            );
            assert_eq!(chunk.last, i == chunks.len() - 1);
        }
    }
}
