//! The client library: `get`, `put`, `append`, `put_hash` and `delete` against a viewkv
//! cluster, with at-most-once retries across failovers.
//!
//! ```no_run
//! # async fn demo() -> Result<(), viewkv::client::ClientError> {
//! let mut client = viewkv::Client::new(vec!["127.0.0.1:7001".into()]);
//! client.put(b"hello", b"world").await?;
//! assert_eq!(client.get(b"hello").await?, Some(b"world".to_vec()));
//! # Ok(())
//! # }
//! ```

mod backup;
mod dump_file;
mod router;

pub use backup::{BackupError, BackupProgress, RestoreOptions, PAGE_BYTES};
pub use dump_file::{DumpFileError, DumpHeader, DumpReader, DumpWriter, OwnedPair, MAGIC, VERSION};
pub use router::{
    Attempt, ClientError, ClientOptions, LocalServer, ReadConsistency, Router, Submission,
    NO_CLUSTER_HINT, UNREACHABLE_AFTER,
};

use crate::kv::api::{Op, Request, ScanPage};
use crate::monitor::MonitorClient;
use crate::net::{RpcClient, Secret, Tls};

impl Clone for Client {
    fn clone(&self) -> Client {
        self.session()
    }
}

/// An operation [`Client::submit`] handed over, to [`Client::finish`] on the same client.
pub struct Pending {
    /// The request, to send again if it must be retried.
    request: Request,
    /// Its first attempt, if it was handed to a server (else `finish` sends it).
    attempt: Option<Attempt>,
}

impl Pending {
    /// Whether the operation is on its way in order — taken in by the local server, or queued
    /// on the connection to a primary that has taken one of this client's requests in already
    /// (see [`Attempt::in_order`]) — so the next one may be submitted behind it without
    /// overtaking it.
    pub fn in_flight(&self) -> bool {
        self.attempt.as_ref().is_some_and(Attempt::in_order)
    }
}

/// A client session. Calls take `&mut self`: one operation at a time per client, which is what
/// makes each retry recognizable as a repeat. Cloning is cheap: a clone is a new session (its
/// own id and sequence numbers) sharing this one's connections — one framed connection per
/// server, many operations in flight on it — so give each concurrent task a clone.
#[derive(Debug)]
pub struct Client {
    /// Random id naming this session in the servers' duplicate tables.
    id: u64,
    /// Sequence number of the last operation started.
    seq: u64,
    /// Finds the primary and retries.
    router: Router,
    /// What this client's reads may return (linearizable unless asked otherwise).
    consistency: ReadConsistency,
}

impl Client {
    /// A client of the cluster whose monitors are at `monitors`, with default options.
    pub fn new(monitors: Vec<String>) -> Client {
        Client::with_options(monitors, ClientOptions::default())
    }

    /// A client with the given options.
    pub fn with_options(monitors: Vec<String>, options: ClientOptions) -> Client {
        Client::with_secret(monitors, options, None)
    }

    /// A client of a cluster that has a secret: every request proves `secret`.
    pub fn with_secret(
        monitors: Vec<String>,
        options: ClientOptions,
        secret: Option<Secret>,
    ) -> Client {
        Client::with_tls(monitors, options, secret, None)
    }

    /// A client of a cluster that has a secret and TLS: every request proves `secret` (if
    /// any) and goes over TLS with `tls` (if any; see [`Tls`]).
    pub fn with_tls(
        monitors: Vec<String>,
        options: ClientOptions,
        secret: Option<Secret>,
        tls: Option<&Tls>,
    ) -> Client {
        let id: u64 = rand::random();
        let rpc = RpcClient::new(&format!("client-{id:016x}"), None)
            .with_secret(secret)
            .with_tls(tls);
        Client::with_rpc(rpc, monitors, options)
    }

    /// A client that has checked the cluster is there: it read the view once. Fails within
    /// about a second ([`ClientError::NoMonitors`], naming the addresses) when no monitor
    /// answers, and at once when the secret is refused; [`Client::with_secret`] is the lazy
    /// form, which finds out on its first call.
    pub async fn connect(
        monitors: Vec<String>,
        options: ClientOptions,
        secret: Option<Secret>,
    ) -> Result<Client, ClientError> {
        Client::with_secret(monitors, options, secret)
            .checked()
            .await
    }

    /// This client once it has checked the cluster is there, as [`Client::connect`] does (for a
    /// client made with [`Client::with_tls`] or [`Client::with_rpc`]).
    pub async fn checked(mut self) -> Result<Client, ClientError> {
        self.router.connect().await?;
        Ok(self)
    }

    /// A new session sharing this client's connections, view and settings (what `clone`
    /// does).
    fn session(&self) -> Client {
        Client {
            id: rand::random(),
            seq: 0,
            router: self.router.sibling(),
            consistency: self.consistency,
        }
    }

    /// A client sending through `rpc` (the test harness passes one subject to its faults).
    pub fn with_rpc(rpc: RpcClient, monitors: Vec<String>, options: ClientOptions) -> Client {
        let monitor_client = MonitorClient::new(rpc.clone(), monitors, options.rpc_timeout);
        Client {
            id: rand::random(),
            seq: 0,
            router: Router::new(rpc, monitor_client, options),
            consistency: ReadConsistency::Linearizable,
        }
    }

    /// This client handing requests for `local` (a kv server in this process) to it directly
    /// while it is the primary.
    pub fn with_local(mut self, local: std::sync::Arc<dyn LocalServer>) -> Client {
        self.router = self.router.with_local(local);
        self
    }

    /// Make this client's reads (`get`, `scan`, TTLs) `consistency` from now on.
    pub fn set_read_consistency(&mut self, consistency: ReadConsistency) {
        self.consistency = consistency;
    }

    /// What this client's reads may return.
    pub fn read_consistency(&self) -> ReadConsistency {
        self.consistency
    }

    /// This session's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// How many times this client read the view from the monitors.
    pub fn view_reads(&self) -> u64 {
        self.router.view_reads()
    }

    /// Run any operation at most once (what `get`, `put`, ... do; front doors such as the
    /// Redis protocol use it for the operations without a method of their own). Its reply as
    /// [`Op`] describes it.
    pub async fn execute(&mut self, op: Op) -> Result<Option<Vec<u8>>, ClientError> {
        self.call(op).await
    }

    async fn call(&mut self, op: Op) -> Result<Option<Vec<u8>>, ClientError> {
        if self.consistency == ReadConsistency::Stale && op.is_read() {
            return self.router.read_stale(&op).await;
        }
        let request = self.next_request(op);
        self.run(request, None).await
    }

    /// `op` as this session's next request.
    fn next_request(&mut self, op: Op) -> Request {
        self.seq += 1;
        let deadline = self.router.options().deadline;
        Request {
            client: self.id,
            seq: self.seq,
            deadline_ms: crate::kv::wall_ms() + deadline.as_millis() as u64,
            op,
        }
    }

    /// Hand `op` to the primary now — the kv server of this process (see
    /// [`Client::with_local`]) or the framed connection to it — so that operations submitted
    /// one after another, by this client and others sharing its connections, are applied in
    /// that order, and [`Client::finish`] it later: how a connection runs a pipeline of
    /// commands, one client per command in flight, without waiting for each one's copies
    /// before the next. Without a known primary, for a stale read, or when the local server
    /// refuses it, the operation is left to `finish`, which runs it as [`Client::execute`]
    /// does; [`Pending::in_flight`] says which happened, and an operation submitted after one
    /// that is not in flight could overtake it.
    pub fn submit(&mut self, op: Op) -> Pending {
        let stale = self.consistency == ReadConsistency::Stale && op.is_read();
        let request = self.next_request(op);
        let attempt = match stale {
            true => None,
            false => self.router.submit(&request),
        };
        Pending { request, attempt }
    }

    /// `op` as a [`Pending`] operation left to [`Client::finish`] (not submitted): for one
    /// that must not overtake an operation submitted before it.
    pub fn defer(&mut self, op: Op) -> Pending {
        let request = self.next_request(op);
        Pending {
            request,
            attempt: None,
        }
    }

    /// Run `ops` as a pipeline and return their outcomes in order: each through a session of
    /// its own — this client for the first, then `sessions` (clones of this one are added as
    /// needed; keep them for the next pipeline) — all handed to the primary before any is
    /// waited for, so they are applied in the order given and their copies travel to the
    /// backup together. The sessions first follow the newest view any of them holds, so all
    /// send to one server; once one operation is not surely in order (see
    /// [`Pending::in_flight`]) the ones after it wait their turn.
    pub async fn pipeline(
        &mut self,
        sessions: &mut Vec<Client>,
        ops: Vec<Op>,
    ) -> Vec<Result<Option<Vec<u8>>, ClientError>> {
        while sessions.len() + 1 < ops.len() {
            sessions.push(self.session());
        }
        let sessions = &mut sessions[..ops.len().saturating_sub(1)];
        for session in sessions.iter() {
            self.router.follow(&session.router);
        }
        for session in sessions.iter_mut() {
            session.router.follow(&self.router);
            session.consistency = self.consistency;
        }
        let mut pending = Vec::with_capacity(ops.len());
        let mut in_order = true;
        for (i, op) in ops.into_iter().enumerate() {
            let client = match i {
                0 => &mut *self,
                i => &mut sessions[i - 1],
            };
            let submitted = match in_order {
                true => client.submit(op),
                false => client.defer(op),
            };
            in_order &= submitted.in_flight();
            pending.push(submitted);
        }
        let mut outcomes = Vec::with_capacity(pending.len());
        for (i, submitted) in pending.into_iter().enumerate() {
            let client = match i {
                0 => &mut *self,
                i => &mut sessions[i - 1],
            };
            outcomes.push(client.finish(submitted).await);
        }
        outcomes
    }

    /// The outcome of an operation [`Client::submit`] handed over: its reply once confirmed,
    /// with the same retries, at most once, as [`Client::execute`].
    pub async fn finish(&mut self, pending: Pending) -> Result<Option<Vec<u8>>, ClientError> {
        let Pending { request, attempt } = pending;
        if attempt.is_none() && self.consistency == ReadConsistency::Stale && request.op.is_read() {
            return self.router.read_stale(&request.op).await;
        }
        self.run(request, attempt).await
    }

    /// Send `request` until it is answered (its first attempt `first`, if it was submitted),
    /// starting a new session if the service forgot ours.
    async fn run(
        &mut self,
        mut request: Request,
        first: Option<Attempt>,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        match self.router.execute_after(&request, first).await {
            Err(ClientError::SessionLost) => {
                // The service forgot us (we were idle past its session TTL, or evicted) and
                // applied nothing: carry on as a new session.
                self.renew();
                request.client = self.id;
                request.seq = self.seq;
                let result = self.router.execute(&request).await;
                if matches!(result, Err(ClientError::SessionLost)) {
                    self.renew();
                }
                result
            }
            other => other,
        }
    }

    /// Start a new session: a new random id, sequence numbers from 1.
    fn renew(&mut self) {
        self.id = rand::random();
        self.seq = 1;
    }

    /// The value of `key`, or `None` if it is absent.
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        self.call(Op::Get { key: key.to_vec() }).await
    }

    /// Set `key` to `value`.
    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        let (key, value) = (key.to_vec(), value.to_vec());
        self.call(Op::Put { key, value }).await.map(drop)
    }

    /// Append `value` to the value of `key` (an absent key counts as empty).
    pub async fn append(&mut self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        let (key, value) = (key.to_vec(), value.to_vec());
        self.call(Op::Append { key, value }).await.map(drop)
    }

    /// Store the decimal FNV-1a-32 hash of (previous value ++ `value`); returns the previous
    /// value.
    pub async fn put_hash(
        &mut self,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, ClientError> {
        let (key, value) = (key.to_vec(), value.to_vec());
        self.call(Op::PutHash { key, value }).await
    }

    /// Remove `key`; returns its previous value.
    pub async fn delete(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        self.call(Op::Delete { key: key.to_vec() }).await
    }

    /// One page of the keys starting with `prefix` that sort after `after`, in key order, with
    /// their values if `values` (see [`Op::Scan`]). A read like `get`: linearizable.
    pub async fn scan(
        &mut self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: u32,
        values: bool,
    ) -> Result<ScanPage, ClientError> {
        let op = Op::Scan {
            prefix: prefix.to_vec(),
            after: after.map(serde_bytes::ByteBuf::from),
            limit,
            values,
        };
        let reply = self.call(op).await?.unwrap_or_default();
        ScanPage::decode(&reply).map_err(|err| ClientError::BadReply(err.to_string()))
    }

    /// Remove every key; returns how many there were.
    pub async fn flush(&mut self) -> Result<u64, ClientError> {
        let reply = self.call(Op::Flush).await?.unwrap_or_default();
        std::str::from_utf8(&reply)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| ClientError::BadReply("a flush's key count is not a number".into()))
    }
}
