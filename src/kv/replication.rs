//! The replication task of one view: send the full state (an O(1) snapshot, streamed in
//! bounded chunks), then every entry after it in index order, batching whatever accumulated
//! while the previous batch was in flight. It only carries messages: every decision is the
//! replica's.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::api::{Forward, StreamReply, FORWARD, TRANSFER};
use super::replica::{NextStep, Stop};
use super::server::KvServer;
use crate::net::{decode, encode, RpcError};
use crate::view::View;

/// Most forwards in flight to the backup at once (see [`stream`]).
const WINDOW: usize = 8;
/// Most forwards in flight that are not full batches: a write that arrives while one is on
/// its way goes at once in a second, instead of waiting a round trip for the first's answer.
/// With one, a write waited up to two round trips; two cut the p99 at 32 clients by a tenth
/// with no more CPU per operation (perf stat, `bench load`), batches staying large under load.
const PARTIAL: usize = 2;
/// Transfer chunks in flight at once: the primary builds and sends the next while the backup
/// installs one (the connection keeps them in order; one that fails restarts the transfer).
/// With one at a time the two alternated, and half of two cores sat idle during a transfer;
/// three chunks of 1 MiB moved a million keys faster than two of 4 MiB (`bench backup-sync`).
const CHUNKS_IN_FLIGHT: usize = 3;

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
            let Some(applied) = transfer(&server, &view, &backup.addr, &mut backoff).await? else {
                return Ok(());
            };
            let effects = server.with_replica(|r| r.transfer_installed(view.num, applied))?;
            server.run_effects(effects);
            backoff.reset();
            if stream(&server, &view, &backup.addr, applied, &mut backoff).await? {
                return Ok(());
            }
        }
    }
    .await;
    if let Err(Stop::ViewChanged) = result {
        tracing::debug!("replication of view {} ends: the view changed", view.num);
    }
}

/// A forward on its way: the last index it carries, and how it went.
type InFlight = (u64, Pin<Box<dyn Future<Output = Sent> + Send>>);

/// Stream the entries after `applied` (what the backup installed) to the backup at `addr`:
/// `Ok(false)` when it must get the whole state again, `Ok(true)` when it refused us.
///
/// With fewer than [`PARTIAL`] batches in flight, whatever is waiting goes at once. With that
/// many in flight, what arrives waits for the first one's answer and then goes as one batch —
/// except whole batches (a bulk load), which go at once, up to [`WINDOW`] in flight. So an idle
/// stream adds no delay, a busy one sends a couple of forwards per round trip instead of one
/// per write (each forward costs both servers system calls and wake-ups: with 50 clients
/// writing, waiting for an answer cut the CPU per write by a fifth), and a bulk stream is not
/// held to one batch per round trip.
async fn stream(
    server: &Arc<KvServer>,
    view: &View,
    addr: &str,
    mut applied: u64,
    backoff: &mut Backoff,
) -> Result<bool, Stop> {
    let mut sent = applied;
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let me = server.me();
    loop {
        let notified = server.wake_replication.notified();
        while in_flight.len() < WINDOW {
            let only_full = in_flight.len() >= PARTIAL;
            // Encoded from the entries where they are kept, under the replica's lock.
            let batch = server.with_replica(|r| {
                let entries = r.next_batch(view.num, sent, only_full)?;
                let Some(last) = entries.last().map(|e| e.index) else {
                    return Ok(None);
                };
                let forward = Forward {
                    view: view.num,
                    primary: me.clone(),
                    entries,
                };
                let body = encode(&forward);
                r.sending(view.num, Instant::now())?;
                Ok::<_, Stop>(Some((last, body)))
            })?;
            let Some((last, body)) = batch else {
                break;
            };
            in_flight.push_back((last, start(server, addr, FORWARD, body)));
            sent = last;
        }
        // Below PARTIAL, a new entry must not wait for the answer.
        let more = in_flight.len() < PARTIAL;
        let Some((last, reply)) = in_flight.front_mut() else {
            notified.await;
            continue;
        };
        let last = *last;
        let outcome = if more {
            tokio::select! {
                outcome = reply => outcome,
                () = notified => continue,
            }
        } else {
            reply.await
        };
        in_flight.pop_front();
        match outcome {
            Sent::Applied(now) => {
                if server.with_replica(|r| r.backup_applied(view.num, now))? == NextStep::Transfer {
                    return Ok(false);
                }
                applied = applied.max(now);
                if now < last {
                    // The backup stopped at a gap (an earlier batch was lost): send again
                    // from what it holds; it skips what it has.
                    in_flight.clear();
                    sent = applied;
                } else if !in_flight.is_empty() {
                    // Still waiting on the backup: that counts as stalled until it answers.
                    server.with_replica(|r| r.sending(view.num, Instant::now()))?;
                }
                backoff.reset();
            }
            Sent::Failed => {
                server.with_replica(|r| r.replication_failed(view.num, Instant::now()))?;
                in_flight.clear();
                sent = applied;
                backoff.wait().await;
            }
            Sent::Refused(reason) => {
                server.with_replica(|r| r.backup_refused(view.num, &reason))?;
                return Ok(true);
            }
        }
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
        let mut in_flight = VecDeque::new();
        let mut built_all = false;
        loop {
            while !built_all && in_flight.len() < CHUNKS_IN_FLIGHT {
                let Some(chunk) = snapshot.next_chunk() else {
                    built_all = true;
                    break;
                };
                server.with_replica(|r| r.sending(view.num, Instant::now()))?;
                in_flight.push_back(start(server, addr, TRANSFER, encode(&chunk)));
            }
            let Some(reply) = in_flight.pop_front() else {
                break;
            };
            match reply.await {
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

/// One RPC to the backup carrying `body` (an encoded message), queued on its connection now:
/// how it went, once it did.
fn start(
    server: &KvServer,
    addr: &str,
    path: &str,
    body: Vec<u8>,
) -> Pin<Box<dyn Future<Output = Sent> + Send>> {
    let call = server
        .rpc
        .start(addr, path, body, server.config.rpc_timeout);
    let (id, path) = (server.config.id.clone(), path.to_string());
    Box::pin(async move {
        let reply = call.await.and_then(|bytes| {
            decode::<StreamReply>(&bytes).map_err(|err| RpcError::Malformed {
                addr: String::new(),
                reason: err.0,
            })
        });
        sent(&id, &path, reply)
    })
}

/// What the backup's answer to one RPC means.
fn sent(id: &str, path: &str, reply: Result<StreamReply, RpcError>) -> Sent {
    match reply {
        Ok(StreamReply::Applied { applied }) => Sent::Applied(applied),
        Ok(StreamReply::Retry { reason }) => {
            tracing::debug!("{id}: the backup asks to retry: {reason}");
            Sent::Failed
        }
        Ok(StreamReply::Refused { reason }) => Sent::Refused(reason),
        Err(err) => {
            tracing::debug!("{id}: {path} to the backup failed: {err}");
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
