//! The replication task of one view: send the full state (an O(1) snapshot, streamed in
//! bounded chunks), then every entry after it in index order, batching whatever accumulated
//! while the previous batch was in flight. It only carries messages: every decision is the
//! replica's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::api::{Forward, StreamReply, FORWARD, TRANSFER};
use super::replica::{NextStep, Stop};
use super::server::KvServer;
use crate::view::View;

/// How a message to the backup went.
enum Sent {
    /// Accepted: the backup holds every entry up to this index.
    Applied(u64),
    /// Not now (lost, timed out, or the backup asked to retry).
    Failed,
    /// The backup refused us.
    Refused(String),
}

/// Run the replication task of `view`, in which `server` is primary with a backup, until the
/// view changes or the backup refuses us.
pub async fn run(server: Arc<KvServer>, view: View) {
    let Some(backup) = view.backup.clone() else {
        return;
    };
    let mut backoff = Backoff::new(server.config.timings.ping_interval);
    let result: Result<(), Stop> = async {
        loop {
            let Some(mut applied) = transfer(&server, &view, &backup.addr, &mut backoff).await?
            else {
                return Ok(());
            };
            let effects = server.with_replica(|r| r.transfer_installed(view.num, applied))?;
            server.run_effects(effects);
            backoff.reset();
            loop {
                let notified = server.wake_replication.notified();
                let batch = server.with_replica(|r| r.next_batch(view.num, applied))?;
                if batch.is_empty() {
                    notified.await;
                    continue;
                }
                server.with_replica(|r| r.sending(view.num, Instant::now()))?;
                let forward = Forward {
                    view: view.num,
                    primary: server.me(),
                    entries: batch,
                };
                match send(&server, &backup.addr, FORWARD, &forward).await {
                    Sent::Applied(now) => {
                        match server.with_replica(|r| r.backup_applied(view.num, now))? {
                            NextStep::Stream => applied = applied.max(now),
                            NextStep::Transfer => break,
                        }
                        backoff.reset();
                    }
                    Sent::Failed => {
                        server.with_replica(|r| r.replication_failed(view.num, Instant::now()))?;
                        backoff.wait().await;
                    }
                    Sent::Refused(reason) => {
                        server.with_replica(|r| r.backup_refused(view.num, &reason))?;
                        return Ok(());
                    }
                }
            }
        }
    }
    .await;
    if let Err(Stop::ViewChanged) = result {
        tracing::debug!("replication of view {} ends: the view changed", view.num);
    }
}

/// Send the whole state until the backup installs it: `Some(index)` once installed, `None`
/// if the backup refused us.
async fn transfer(
    server: &Arc<KvServer>,
    view: &View,
    addr: &str,
    backoff: &mut Backoff,
) -> Result<Option<u64>, Stop> {
    loop {
        let attempt: u64 = rand::random();
        let mut snapshot =
            server.with_replica(|r| r.begin_transfer(view.num, attempt, Instant::now()))?;
        let started = Instant::now();
        tracing::info!(
            "{}: sending the state as of entry {} ({} keys) to the backup",
            server.config.id,
            snapshot.index(),
            snapshot.keys()
        );
        let mut complete = true;
        while let Some(chunk) = snapshot.next_chunk() {
            server.with_replica(|r| r.sending(view.num, Instant::now()))?;
            match send(server, addr, TRANSFER, &chunk).await {
                Sent::Applied(_) => server.with_replica(|r| r.chunk_accepted(view.num))?,
                Sent::Failed => {
                    server.with_replica(|r| r.replication_failed(view.num, Instant::now()))?;
                    complete = false;
                    break;
                }
                Sent::Refused(reason) => {
                    server.with_replica(|r| r.backup_refused(view.num, &reason))?;
                    return Ok(None);
                }
            }
        }
        if complete {
            tracing::info!(
                "{}: transfer of {} keys done in {:?}",
                server.config.id,
                snapshot.keys(),
                started.elapsed()
            );
            return Ok(Some(snapshot.index()));
        }
        backoff.wait().await;
    }
}

/// One RPC to the backup.
async fn send<T: serde::Serialize>(server: &KvServer, addr: &str, path: &str, message: &T) -> Sent {
    let reply = server
        .rpc
        .call::<T, StreamReply>(addr, path, message, server.config.rpc_timeout)
        .await;
    match reply {
        Ok(StreamReply::Applied { applied }) => Sent::Applied(applied),
        Ok(StreamReply::Retry { reason }) => {
            tracing::debug!("{}: the backup asks to retry: {reason}", server.config.id);
            Sent::Failed
        }
        Ok(StreamReply::Refused { reason }) => Sent::Refused(reason),
        Err(err) => {
            tracing::debug!("{}: {path} to the backup failed: {err}", server.config.id);
            Sent::Failed
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
