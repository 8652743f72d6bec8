//! The kv server's I/O shell around the pure [`Replica`]: the ping loop, the HTTP handler,
//! waiting for confirmations, and running the effects the core asks for.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::api::{DumpReply, DumpRequest, DUMP, TRANSFER};
use super::api::{
    Forward, KvError, Op, Reply, Sent, TransferChunk, FORWARD, READ, REQUEST, STATUS,
};
use super::confirmations::Confirmations;
use super::dumps::Dumps;
use super::replica::{Effect, Replica, Settings, Submit};
use super::{replication, ServerConfig, MAX_CHUNK_BYTES};
use crate::client::Submission;
use crate::monitor::api::PingReply;
use crate::monitor::MonitorClient;
use crate::net::{bad_request, bincode_reply, decode, encode, json_reply, not_found, Handler};
use crate::net::{through_http, Answering, CallOutcome, DecodeError};
use crate::net::{Gauge, HttpRequest, HttpResponse, RpcClient};
use crate::view::Member;

/// Sweeps for requests that waited too long per confirm timeout: one is answered at most an
/// eighth of the timeout after its deadline.
const EXPIRE_SWEEPS: u32 = 8;

/// A running kv server.
pub struct KvServer {
    /// Settings.
    pub(super) config: ServerConfig,
    /// Sends forwards and transfers.
    pub(super) rpc: RpcClient,
    /// Pings go through it.
    monitors: MonitorClient,
    /// The rules and state, behind one short-held lock (never across an `.await`).
    replica: Mutex<Replica>,
    /// The requests waiting for their copies, woken as the replica's progress (published
    /// after every event) settles them.
    confirmations: Confirmations,
    /// Wakes the replication task when entries are waiting to be sent.
    pub(super) wake_replication: Notify,
    /// Wakes the ping loop early.
    wake_pinger: Notify,
    /// The replication task of the current view, if we are primary with a backup.
    replication: Mutex<Option<JoinHandle<()>>>,
    /// Dumps clients are reading, each a snapshot of the data (its own lock: building a page
    /// never holds up requests).
    dumps: Mutex<Dumps>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The wall clock in ms since the Unix epoch (for client deadlines).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A request applied on the primary, waiting for its copies.
struct Waiting {
    /// Its entry's index.
    index: u64,
    /// The epoch it was applied in.
    epoch: u64,
    /// When it gives up waiting (the confirm timeout after it was taken).
    deadline: Instant,
    /// The outcome to answer once confirmed.
    reply: Reply,
}

impl KvServer {
    /// A new, idle, empty server with a random incarnation.
    pub fn new(config: ServerConfig, rpc: RpcClient, monitors: MonitorClient) -> KvServer {
        let me = Member {
            id: config.id.clone(),
            addr: config.addr.clone(),
            incarnation: rand::random(),
        };
        let settings = Settings {
            timings: config.timings,
            limits: config.limits,
            min_copies: config.min_copies,
            chunk_bytes: config.transfer_chunk_bytes,
            read_lease: config.read_lease,
        };
        KvServer {
            replica: Mutex::new(Replica::new(me, settings)),
            config,
            rpc,
            monitors,
            confirmations: Confirmations::default(),
            wake_replication: Notify::new(),
            wake_pinger: Notify::new(),
            replication: Mutex::new(None),
            dumps: Mutex::new(Dumps::default()),
        }
    }

    /// This server as a view member.
    pub fn me(&self) -> Member {
        lock(&self.replica).me().clone()
    }

    /// Run `event` on the replica under its lock, then publish its progress.
    pub(super) fn with_replica<T>(&self, event: impl FnOnce(&mut Replica) -> T) -> T {
        let mut replica = lock(&self.replica);
        let out = event(&mut replica);
        self.confirmations.publish(replica.progress());
        out
    }

    /// Carry out what the replica asked for.
    pub(super) fn run_effects(self: &Arc<Self>, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::PingNow => self.wake_pinger.notify_one(),
                Effect::StopReplication => self.stop_replication(),
                Effect::Replicate(view) => {
                    self.stop_replication();
                    let task = tokio::spawn(replication::run(self.clone(), view));
                    *lock(&self.replication) = Some(task);
                }
            }
        }
    }

    fn stop_replication(&self) {
        if let Some(task) = lock(&self.replication).take() {
            task.abort();
        }
    }

    /// Ask the ping loop to ping now.
    pub(super) fn ping_soon(&self) {
        self.wake_pinger.notify_one();
    }

    /// Time out the requests that waited for their copies past their deadline: one timer for
    /// them all, ticking [`EXPIRE_SWEEPS`] times per confirm timeout.
    pub async fn expire_loop(self: Arc<Self>) {
        let period = (self.config.confirm_timeout / EXPIRE_SWEEPS).max(Duration::from_millis(1));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.confirmations.expire(Instant::now());
        }
    }

    /// Ping the monitors every interval (or sooner when woken) and follow the view.
    pub async fn ping_loop(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(self.config.timings.ping_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = self.wake_pinger.notified() => {}
            }
            let ping = self.with_replica(|r| r.ping(Instant::now()));
            // The read lease counts from before the ping leaves: the monitors hear it later.
            let sent = Instant::now();
            let effects = match self.monitors.ping(&ping).await {
                Ok(PingReply::View { view, cluster }) => {
                    self.with_replica(|r| r.on_ping_reply(cluster, view, sent, Instant::now()))
                }
                Ok(PingReply::Foreign { cluster }) => self.with_replica(|r| r.on_foreign(cluster)),
                Ok(PingReply::NotLeader { .. }) => Vec::new(),
                Err(err) => {
                    tracing::debug!("ping failed: {err}");
                    Vec::new()
                }
            };
            self.run_effects(effects);
        }
    }

    /// Serve a client request: apply it here, then wait until enough servers hold it.
    pub async fn execute(&self, sent: Sent) -> Reply {
        match self.take(sent) {
            Ok(reply) => reply,
            Err(waiting) => self.settle(waiting).await,
        }
    }

    /// Apply a client request here now (or refuse it), and return what is left: its reply, or
    /// the wait until enough servers hold it. Requests submitted one after another are applied
    /// in that order, which is what lets a connection pipeline them.
    pub fn submit(self: &Arc<Self>, sent: Sent) -> Submission {
        match self.take(sent) {
            Ok(reply) => Submission::Answered(reply),
            Err(waiting) => {
                let server = self.clone();
                Submission::Waiting(Box::pin(async move { server.settle(waiting).await }))
            }
        }
    }

    /// Hand `request` to the replica: its reply now, or what to wait for.
    fn take(&self, sent: Sent) -> Result<Reply, Waiting> {
        let Sent { view, request } = sent;
        let now = Instant::now();
        let submitted = self.with_replica(|r| r.on_request(request, view, now, wall_ms()));
        match submitted {
            Submit::Reply(reply) => Ok(reply),
            Submit::Wait {
                index,
                epoch,
                reply,
            } => {
                self.wake_replication.notify_one();
                Err(Waiting {
                    index,
                    epoch,
                    deadline: now + self.config.confirm_timeout,
                    reply,
                })
            }
        }
    }

    /// The reply of an applied request once it is confirmed (or why it is not).
    async fn settle(&self, waiting: Waiting) -> Reply {
        match self
            .confirmed(waiting.index, waiting.epoch, waiting.deadline)
            .await
        {
            Ok(()) => waiting.reply,
            Err(err) => Reply::Err(err),
        }
    }

    /// Wait until entry `index` is confirmed while this server still serves in `epoch`, giving
    /// up at `deadline` (as the next sweep of [`KvServer::expire_loop`] finds it).
    async fn confirmed(&self, index: u64, epoch: u64, deadline: Instant) -> Result<(), KvError> {
        let waiting = self.confirmations.wait(index, epoch, deadline);
        let Ok(settled) = waiting.await else {
            return Err(self.with_replica(|r| r.unconfirmed_error()));
        };
        if settled.confirmed >= index && settled.epoch == epoch {
            return Ok(());
        }
        Err(KvError::WrongServer {
            view: self.with_replica(|r| r.view().num),
        })
    }

    /// Serve a dump request: counts and pages come from a snapshot whose writes are all
    /// confirmed.
    async fn on_dump(&self, request: DumpRequest) -> Result<DumpReply, KvError> {
        let page_bytes = |max: u32| (max as usize).clamp(1, MAX_CHUNK_BYTES);
        match request {
            DumpRequest::Count => {
                let snapshot = self.with_replica(|r| r.dump_snapshot())?;
                Ok(DumpReply::Count(snapshot.data.len() as u64))
            }
            DumpRequest::Begin { max_bytes } => {
                let snapshot = self.with_replica(|r| r.dump_snapshot())?;
                let deadline = Instant::now() + self.config.confirm_timeout;
                self.confirmed(snapshot.index, snapshot.epoch, deadline)
                    .await?;
                let page = lock(&self.dumps).begin(
                    rand::random(),
                    snapshot,
                    page_bytes(max_bytes),
                    Instant::now(),
                )?;
                Ok(DumpReply::Page(page))
            }
            DumpRequest::Next {
                dump,
                after,
                max_bytes,
            } => {
                let page = lock(&self.dumps).page(
                    dump,
                    Some(&after),
                    page_bytes(max_bytes),
                    Instant::now(),
                )?;
                Ok(DumpReply::Page(page))
            }
        }
    }

    fn on_forward(&self, forward: Forward) -> super::api::StreamReply {
        let (reply, effects) = self.with_replica(|r| r.on_forward(forward));
        if effects.contains(&Effect::PingNow) {
            self.ping_soon();
        }
        reply
    }

    fn on_transfer(&self, chunk: TransferChunk) -> super::api::StreamReply {
        let (reply, effects) = self.with_replica(|r| r.on_transfer(chunk));
        if effects.contains(&Effect::PingNow) {
            self.ping_soon();
        }
        reply
    }

    /// Answer the read `op` from this server's own state (see [`Replica::read_stale`]).
    pub fn read_stale(&self, op: &Op) -> Reply {
        if !op.is_read() {
            return Reply::Err(KvError::Invalid {
                reason: "a stale read must be a read".into(),
            });
        }
        self.with_replica(|r| r.read_stale(op, Instant::now()))
    }

    /// Stop everything (the server is shutting down).
    pub async fn stop(&self) {
        let task = lock(&self.replication).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// The JSON status document.
    pub fn status(&self) -> serde_json::Value {
        self.with_replica(|r| r.status())
    }
}

impl crate::client::LocalServer for KvServer {
    fn addr(&self) -> &str {
        &self.config.addr
    }

    fn submit(self: Arc<Self>, sent: Sent) -> Submission {
        KvServer::submit(&self, sent)
    }

    fn read_stale(&self, op: &Op) -> Reply {
        KvServer::read_stale(self, op)
    }
}

impl KvServer {
    /// A framed call (see [`Handler::call`]): a client request is applied (or refused) before
    /// this returns, so the requests of one connection are applied in the order they came; a
    /// forward or transfer chunk is applied at once.
    pub fn call(self: &Arc<Self>, path: &str, body: Bytes) -> Answering {
        let now =
            |reply: Vec<u8>| -> Answering { Box::pin(std::future::ready(CallOutcome::ok(reply))) };
        match path {
            REQUEST => match decode::<Sent>(&body) {
                Ok(sent) => match self.submit(sent) {
                    Submission::Answered(reply) => now(encode(&reply)),
                    Submission::Waiting(confirmed) => {
                        Box::pin(async move { CallOutcome::ok(encode(&confirmed.await)) })
                    }
                },
                Err(err) => refused(err),
            },
            READ => match decode::<Op>(&body) {
                Ok(op) => now(encode(&self.read_stale(&op))),
                Err(err) => refused(err),
            },
            FORWARD => match decode::<Forward>(&body) {
                Ok(forward) => now(encode(&self.on_forward(forward))),
                Err(err) => refused(err),
            },
            TRANSFER => match decode::<TransferChunk>(&body) {
                Ok(chunk) => now(encode(&self.on_transfer(chunk))),
                Err(err) => refused(err),
            },
            _ => through_http(self.clone(), path, body),
        }
    }
}

/// A call whose body does not decode: 400 with the decoder's complaint.
fn refused(err: DecodeError) -> Answering {
    Box::pin(CallOutcome::of(bad_request(err)))
}

impl Handler for KvServer {
    fn call(self: Arc<Self>, path: &str, body: Bytes) -> Answering {
        KvServer::call(&self, path, body)
    }

    fn gauges(&self) -> Vec<Gauge> {
        let mut gauges = self.with_replica(|r| r.gauges());
        gauges.push(Gauge::new(
            "viewkv_kv_dumps_open",
            "Dumps clients are reading from this server.",
            lock(&self.dumps).open() as f64,
        ));
        gauges
    }

    async fn handle(&self, request: HttpRequest) -> HttpResponse {
        let path = request.uri().path().to_string();
        match path.as_str() {
            REQUEST => match decode::<Sent>(request.body()) {
                Ok(sent) => bincode_reply(&self.execute(sent).await),
                Err(err) => bad_request(err),
            },
            READ => match decode::<Op>(request.body()) {
                Ok(op) => bincode_reply(&self.read_stale(&op)),
                Err(err) => bad_request(err),
            },
            FORWARD => match decode::<Forward>(request.body()) {
                Ok(forward) => bincode_reply(&self.on_forward(forward)),
                Err(err) => bad_request(err),
            },
            TRANSFER => match decode::<TransferChunk>(request.body()) {
                Ok(chunk) => bincode_reply(&self.on_transfer(chunk)),
                Err(err) => bad_request(err),
            },
            DUMP => match decode::<DumpRequest>(request.body()) {
                Ok(dump) => bincode_reply(&self.on_dump(dump).await.unwrap_or_else(DumpReply::Err)),
                Err(err) => bad_request(err),
            },
            STATUS => json_reply(&self.status()),
            _ => not_found(&path),
        }
    }
}
