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
        let mut applied = loop {
            match self.transfer(view, &backup.addr).await {
                Ok(applied) => break applied,
                Err(Some(stop)) => return Err(stop),
                Err(None) => backoff.wait().await,
            }
        };
        {
            let mut st = self.state();
            if st.view.num != view.num {
                return Err(Stop::ViewChanged);
            }
            st.synced_view = Some(view.num);
            tracing::info!(
                "{}: backup {} holds the state as of entry {applied}",
                self.me().id,
                backup.id
            );
        }
        self.confirm(applied);
        self.ping_soon();
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
                Ok(now) => {
                    applied = applied.max(now);
                    self.confirm(applied);
                    backoff.reset();
                }
                Err(Some(stop)) => return Err(stop),
                Err(None) => backoff.wait().await,
            }
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
        let (index, chunks) = {
            let mut st = self.state();
            if st.view.num != view.num {
                return Err(Some(Stop::ViewChanged));
            }
            st.log.clear();
            let mut chunks: Vec<TransferChunk> = Vec::new();
            let mut bytes = 0;
            let mut data = Vec::new();
            for (key, value) in st.store.data() {
                if !data.is_empty() && bytes + key.len() + value.len() > MAX_BATCH_BYTES {
                    chunks.push(self.chunk(
                        view,
                        st.index,
                        chunks.len(),
                        std::mem::take(&mut data),
                    ));
                    bytes = 0;
                }
                bytes += key.len() + value.len();
                data.push((key.clone(), value.clone()));
            }
            let mut last = self.chunk(view, st.index, chunks.len(), data);
            last.last = true;
            last.sessions = st.store.sessions();
            last.clock_ms = st.store.clock_ms();
            chunks.push(last);
            (st.index, chunks)
        };
        for chunk in &chunks {
            self.send(addr, TRANSFER, chunk).await?;
        }
        Ok(index)
    }

    fn chunk(
        &self,
        view: &View,
        index: u64,
        number: usize,
        data: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> TransferChunk {
        TransferChunk {
            view: view.num,
            primary: self.me().clone(),
            index,
            chunk: number as u64,
            last: false,
            data,
            sessions: Vec::new(),
            clock_ms: 0,
        }
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
