//! Getting a request to the primary and an answer back: the retry machinery, separate from
//! sequence numbering so a server can reuse it to proxy a client's request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::kv::api::{KvError, Op, Reply, Request, Sent, READ, REQUEST};
use crate::monitor::{MonitorClient, MonitorUnavailable};
use crate::net::{decode, encode, RpcClient, RpcError};
use crate::view::{ClusterId, Member, View};

/// Timeouts and pacing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// How long one call (get, put, ...) may take, retries included.
    pub deadline: Duration,
    /// How long to wait between retries (the ping interval: a new view takes about that long).
    pub retry_interval: Duration,
    /// Deadline of one RPC to a kv server or monitor.
    pub rpc_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            deadline: Duration::from_secs(10),
            retry_interval: Duration::from_millis(100),
            rpc_timeout: Duration::from_secs(3),
        }
    }
}

/// What a read may return.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadConsistency {
    /// What the latest acknowledged write left, as if the service were one machine (the
    /// default): the primary answers, under its read lease or through its backup.
    #[default]
    Linearizable,
    /// What one replica holding the service's state has now, without asking anyone else: the
    /// backup (or the front door's own server) may not have the newest writes yet, and the
    /// primary may show writes not yet confirmed, which a failover could still lose. Cheaper,
    /// and answered by a backup even while the primary is unreachable.
    Stale,
}

/// How long a client that has never reached a monitor keeps trying before it says none is
/// reachable. Long enough for a cluster that is still starting to bind its ports; short enough
/// that a newcomer with no cluster running hears so at once rather than after the deadline.
pub const UNREACHABLE_AFTER: Duration = Duration::from_secs(1);

/// What to tell someone whose monitors cannot be reached.
pub const NO_CLUSTER_HINT: &str = "is the cluster running? Start one with `viewkv up`, or name \
     its monitors with --monitors (or VIEWKV_MONITORS, or a cluster file's `monitors`)";

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No confirmed answer before the deadline: the operation may or may not have been applied.
    #[error("no answer within {deadline:?}; the operation may or may not have been applied (last error: {last})")]
    Indeterminate {
        /// The deadline that passed.
        deadline: Duration,
        /// The last failure seen.
        last: String,
    },
    /// No answer to a read before the deadline: it failed, and a read changes nothing.
    #[error("no answer within {deadline:?}; the read failed (last error: {last})")]
    ReadFailed {
        /// The deadline that passed.
        deadline: Duration,
        /// The last failure seen.
        last: String,
    },
    /// This client has never reached any monitor, and none answered for
    /// [`UNREACHABLE_AFTER`]: most likely no cluster runs at these addresses. Nothing was sent
    /// to a kv server, so nothing was applied.
    #[error("no monitor is reachable at {} ({last}); {NO_CLUSTER_HINT}", monitors.join(", "))]
    NoMonitors {
        /// The addresses tried.
        monitors: Vec<String>,
        /// Why the last of them failed.
        last: String,
    },
    /// The service refused the operation; it was not applied.
    #[error("refused: {0}")]
    Refused(KvError),
    /// A monitor or server refused the request for want of the cluster secret: nothing was
    /// applied. Give the cluster's secret file.
    #[error("{0}")]
    Unauthorized(String),
    /// The first attempt of a request found the client's session gone from the duplicate
    /// table (evicted or expired): nothing was applied; the caller starts a new session.
    #[error("the service no longer remembers this client's session; nothing was applied")]
    SessionLost,
    /// The server answered with something this client cannot read (a different version?).
    #[error("unreadable reply from the server: {0}")]
    BadReply(String),
}

/// A kv server in this process that a router can hand requests to directly when it is the
/// primary, instead of over the network (the Redis front door of the primary itself).
pub trait LocalServer: Send + Sync {
    /// The address views name it by.
    fn addr(&self) -> &str;
    /// Serve `sent` as if it had arrived over the network. The server takes it in (applies
    /// it, or refuses it) before this returns, so requests submitted one after another are
    /// applied in that order; what is left to wait for is its confirmation.
    fn submit(self: Arc<Self>, sent: Sent) -> Submission;
    /// Answer the read `op` from this server's own state, as a stale read.
    fn read_stale(&self, op: &Op) -> Reply;
}

/// What became of a request handed to a [`LocalServer`].
pub enum Submission {
    /// Answered at once (a read served alone, or a refusal: nothing was applied).
    Answered(Reply),
    /// Applied; the reply once enough servers hold it.
    Waiting(Pin<Box<dyn Future<Output = Reply> + Send>>),
}

/// One attempt of a request: handed to a server, its outcome to come.
pub enum Attempt {
    /// Handed to the kv server of this process.
    Local(Submission),
    /// Queued on the framed connection to a server: it is written after every request queued
    /// before it, and served in that order.
    Remote {
        /// The server's address.
        addr: String,
        /// Its answer, once it comes.
        reply: Pin<Box<dyn Future<Output = Result<Bytes, RpcError>> + Send>>,
        /// Whether the server had already taken in a request of this router's under the view
        /// it was sent by (a router's `proven`).
        proven: bool,
    },
}

impl Attempt {
    /// Whether a request sent after this one cannot overtake it: the local server took it in
    /// (applied or answered it), or it is queued on the connection to a server known to be
    /// primary already. A request the local server refused will be sent again later; one
    /// queued on a connection to a server not yet proven could be refused by it (it has not
    /// learned it is primary yet) while the next one is taken (it learned in between).
    pub fn in_order(&self) -> bool {
        match self {
            Attempt::Local(submission) => {
                !matches!(submission, Submission::Answered(Reply::Err(_)))
            }
            Attempt::Remote { proven, .. } => *proven,
        }
    }

    /// The server's reply, or why none came; with the server's address if it is not the local
    /// one (handed back rather than copied before: the attempt is gone once answered).
    async fn outcome(self) -> (Option<String>, Result<Reply, RpcError>) {
        match self {
            Attempt::Local(Submission::Answered(reply)) => (None, Ok(reply)),
            Attempt::Local(Submission::Waiting(confirmed)) => (None, Ok(confirmed.await)),
            Attempt::Remote { addr, reply, .. } => {
                let outcome = reply.await.and_then(|bytes| {
                    decode(&bytes).map_err(|err| RpcError::Malformed {
                        addr: addr.clone(),
                        reason: err.0,
                    })
                });
                (Some(addr), outcome)
            }
        }
    }
}

/// Sends requests to the primary of a cached view; re-reads the view only after a failure.
pub struct Router {
    /// Sends requests to kv servers.
    rpc: RpcClient,
    /// Where views come from.
    monitors: MonitorClient,
    /// The cached view.
    view: Option<View>,
    /// Whether the primary of the cached view has taken in a request of ours (answered it
    /// other than by refusing it as not the primary) since it became the primary we send to.
    /// Until then a server still learning that it is primary could refuse one request and
    /// take in the next, so requests are not pipelined to it; once it has, it could refuse
    /// a later one only after a view change demoted it, and take one after that only after
    /// another made it primary again.
    proven: bool,
    /// Timeouts and pacing.
    options: ClientOptions,
    /// How many times the view was read from the monitors (6.824 counts them).
    view_reads: u64,
    /// Whether any monitor has ever answered this router: until one has, a client that finds
    /// no monitor fails fast ([`ClientError::NoMonitors`]) instead of retrying to its deadline.
    /// After that, an unreachable group is a fault to ride out.
    reached: bool,
    /// The cluster whose views we follow (the first the monitors named; 0 until then): a
    /// view of another cluster is refused, so monitors that lost their state and formed anew
    /// cannot send this client to a second primary.
    cluster: ClusterId,
    /// The kv server in this process, if any: requests for it skip the network.
    local: Option<Arc<dyn LocalServer>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("view", &self.view)
            .field("cluster", &self.cluster)
            .field("local", &self.local.as_ref().map(|l| l.addr().to_string()))
            .finish_non_exhaustive()
    }
}

/// Why the view could not be read.
#[derive(Debug)]
enum Refresh {
    /// No monitor answered.
    Unavailable(MonitorUnavailable),
    /// The monitors answered for another cluster.
    Foreign(String),
}

impl std::fmt::Display for Refresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refresh::Unavailable(err) => err.fmt(f),
            Refresh::Foreign(why) => f.write_str(why),
        }
    }
}

impl Router {
    /// A router reading views through `monitors` and sending requests with `rpc`.
    pub fn new(rpc: RpcClient, monitors: MonitorClient, options: ClientOptions) -> Router {
        Router {
            rpc,
            monitors,
            view: None,
            proven: false,
            options,
            view_reads: 0,
            reached: false,
            cluster: 0,
            local: None,
        }
    }

    /// This router handing requests for `local` to it directly.
    pub fn with_local(mut self, local: Arc<dyn LocalServer>) -> Router {
        self.local = Some(local);
        self
    }

    /// How many times the view was read from the monitors.
    pub fn view_reads(&self) -> u64 {
        self.view_reads
    }

    /// The kv server of this process, if the router was given one.
    pub fn local(&self) -> Option<&Arc<dyn LocalServer>> {
        self.local.as_ref()
    }

    /// The options in force.
    pub fn options(&self) -> ClientOptions {
        self.options
    }

    async fn refresh_view(&mut self) -> Result<(), Refresh> {
        self.view_reads += 1;
        let reply = self.monitors.view().await.map_err(Refresh::Unavailable)?;
        self.reached = true;
        if self.cluster == 0 {
            self.cluster = reply.cluster;
        }
        if reply.cluster != self.cluster {
            return Err(Refresh::Foreign(format!(
                "the monitors answered for cluster {:x}, but this client has followed cluster \
                 {:x} (other monitors, or monitors that lost their state): not following them",
                reply.cluster, self.cluster
            )));
        }
        if self.view.as_ref().and_then(|v| v.primary.as_ref()) != reply.view.primary.as_ref() {
            self.proven = false;
        }
        self.view = Some(reply.view);
        Ok(())
    }

    /// The cluster this router follows (0 until a monitor answered).
    pub fn cluster(&self) -> ClusterId {
        self.cluster
    }

    /// Read the view until a monitor answers: fails with [`ClientError::NoMonitors`] when none
    /// has for [`UNREACHABLE_AFTER`], or at once when one refused for want of the secret.
    pub async fn connect(&mut self) -> Result<(), ClientError> {
        let started = Instant::now();
        loop {
            match self.refresh_view().await {
                Ok(()) => return Ok(()),
                Err(err) => {
                    if let Some(fatal) = self.unreachable(&err, started, true) {
                        return Err(fatal);
                    }
                }
            }
            tokio::time::sleep(self.options.retry_interval).await;
        }
    }

    /// The error to give up with after a failed view read, if it is time to: the secret was
    /// refused, or — when `unsent`, nothing of this call having reached a kv server — no
    /// monitor has ever answered and [`UNREACHABLE_AFTER`] has passed since `started`.
    fn unreachable(&self, err: &Refresh, started: Instant, unsent: bool) -> Option<ClientError> {
        let Refresh::Unavailable(err) = err else {
            return None;
        };
        if let Some(refusal) = &err.unauthorized {
            return Some(ClientError::Unauthorized(refusal.clone()));
        }
        (unsent && !self.reached && started.elapsed() >= UNREACHABLE_AFTER).then(|| {
            ClientError::NoMonitors {
                monitors: self.monitors.monitors().to_vec(),
                last: err.last.clone(),
            }
        })
    }

    /// The address of the cached view's primary.
    fn primary_addr(&self) -> Option<&str> {
        let primary = self.view.as_ref()?.primary.as_ref()?;
        Some(&primary.addr)
    }

    /// Follow `other`'s view if it is newer than ours (and what it knows of its primary if
    /// it is the same one): so that the sessions of one pipeline all send to one server.
    pub fn follow(&mut self, other: &Router) {
        let num = |router: &Router| router.view.as_ref().map(|v| v.num);
        match num(other).cmp(&num(self)) {
            std::cmp::Ordering::Greater => {
                self.view.clone_from(&other.view);
                self.proven = other.proven;
                if self.cluster == 0 {
                    self.cluster = other.cluster;
                }
            }
            std::cmp::Ordering::Equal => self.proven |= other.proven,
            std::cmp::Ordering::Less => {}
        }
    }

    /// A router like this one (same monitors, options, RPC client and cached view): for
    /// another session of the same caller.
    pub fn sibling(&self) -> Router {
        Router {
            view: self.view.clone(),
            proven: self.proven,
            reached: self.reached,
            cluster: self.cluster,
            local: self.local.clone(),
            ..Router::new(self.rpc.clone(), self.monitors.clone(), self.options)
        }
    }

    /// Answer the read `op` from one replica's state ([`ReadConsistency::Stale`]): this
    /// process's own server if it holds the state, else the view's backup, else its primary,
    /// retrying (reading the view again) until one answers or the deadline passes.
    pub async fn read_stale(&mut self, op: &Op) -> Result<Option<Vec<u8>>, ClientError> {
        if let Some(Reply::Ok(value)) = self.local.as_ref().map(|local| local.read_stale(op)) {
            return Ok(value);
        }
        let local = self.local.as_ref().map(|l| l.addr().to_string());
        let replicas = move |view: &View| -> Vec<Member> {
            [view.backup.clone(), view.primary.clone()]
                .into_iter()
                .flatten()
                .filter(|m| Some(&m.addr) != local.as_ref())
                .collect()
        };
        self.call_members(READ, op, replicas, |reply: Reply| match reply {
            Reply::Ok(value) => Ok(Ok(value)),
            Reply::Err(err) if err.is_retryable() => Err(err.to_string()),
            Reply::Err(err) => Ok(Err(ClientError::Refused(err))),
        })
        .await
    }

    /// Send `request` to `path` on the primary until it answers, the deadline passes or
    /// `settle` says the reply is final. `settle` maps a reply to `Ok` (done) or `Err(reason)`
    /// (retry after reading the view again). For requests that change nothing, so a retry is
    /// always safe (the dump's pages, the key count).
    pub async fn call_primary<Req, Resp, T>(
        &mut self,
        path: &str,
        request: &Req,
        settle: impl FnMut(Resp) -> Result<Result<T, ClientError>, String>,
    ) -> Result<T, ClientError>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
    {
        let primary = |view: &View| view.primary.iter().cloned().collect();
        self.call_members(path, request, primary, settle).await
    }

    /// [`Router::call_primary`], trying in turn the members `pick` chooses from the view.
    async fn call_members<Req, Resp, T>(
        &mut self,
        path: &str,
        request: &Req,
        pick: impl Fn(&View) -> Vec<Member>,
        mut settle: impl FnMut(Resp) -> Result<Result<T, ClientError>, String>,
    ) -> Result<T, ClientError>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
    {
        let started = Instant::now();
        let deadline = started + self.options.deadline;
        loop {
            let mut last = String::from("the view names no server to ask yet");
            if self.view.as_ref().is_none_or(|v| pick(v).is_empty()) {
                if let Err(err) = self.refresh_view().await {
                    if let Some(fatal) = self.unreachable(&err, started, true) {
                        return Err(fatal);
                    }
                    last = err.to_string();
                }
            }
            let members = self.view.as_ref().map(&pick).unwrap_or_default();
            for member in &members {
                let timeout = self
                    .options
                    .rpc_timeout
                    .min(deadline.saturating_duration_since(Instant::now()));
                match self.rpc.call(&member.addr, path, request, timeout).await {
                    Ok(reply) => match settle(reply) {
                        Ok(done) => return done,
                        Err(reason) => last = format!("{}: {reason}", member.addr),
                    },
                    Err(err) if err.is_unauthorized() => {
                        return Err(ClientError::Unauthorized(err.to_string()));
                    }
                    Err(err) => last = format!("{}: {err}", member.addr),
                }
            }
            if !members.is_empty() {
                self.view = None;
            }
            if Instant::now() + self.options.retry_interval >= deadline {
                return Err(ClientError::ReadFailed {
                    deadline: self.options.deadline,
                    last,
                });
            }
            tokio::time::sleep(self.options.retry_interval).await;
        }
    }

    /// The error for `request` when its deadline passed: a read failed; a write's outcome is
    /// unknown.
    fn timed_out(&self, request: &Request, last: String) -> ClientError {
        let deadline = self.options.deadline;
        if request.op.is_read() {
            ClientError::ReadFailed { deadline, last }
        } else {
            ClientError::Indeterminate { deadline, last }
        }
    }

    /// The error for `request` when there is no more time: the `refusal` every attempt got,
    /// if none `maybe_applied`; else as [`Router::timed_out`].
    fn given_up(
        &self,
        request: &Request,
        refusal: Option<KvError>,
        maybe_applied: bool,
        last: String,
    ) -> ClientError {
        match refusal {
            Some(refusal) if !maybe_applied => ClientError::Refused(refusal),
            _ => self.timed_out(request, last),
        }
    }

    /// Send `request` to the primary until it is answered or the deadline passes. The same
    /// request (same client id and seq) is repeated, so the service applies it at most once.
    /// `request.deadline_ms` should be the wall-clock time `options.deadline` from now.
    pub async fn execute(&mut self, request: &Request) -> Result<Option<Vec<u8>>, ClientError> {
        self.execute_after(request, None).await
    }

    /// Hand `request` to the primary of the cached view now, if there is one, so that requests
    /// submitted one after another are applied in that order; [`Router::execute_after`]
    /// waits for its outcome. `None` without a primary to hand it to.
    pub fn submit(&self, request: &Request) -> Option<Attempt> {
        let primary = self.view.as_ref()?.primary.as_ref()?;
        Some(self.attempt(&primary.addr, request, self.options.rpc_timeout))
    }

    /// One attempt of `request` at the server at `addr`, started now.
    fn attempt(&self, addr: &str, request: &Request, timeout: Duration) -> Attempt {
        let view = self.view.as_ref().map_or(0, |v| v.num);
        match &self.local {
            Some(local) if local.addr() == addr => Attempt::Local(local.clone().submit(Sent {
                view,
                request: request.clone(),
            })),
            _ => Attempt::Remote {
                addr: addr.to_string(),
                reply: self
                    .rpc
                    .start(addr, REQUEST, encode(&Sent { view, request }), timeout),
                proven: self.proven && self.primary_addr() == Some(addr),
            },
        }
    }

    /// [`Router::execute`], its first attempt `first` if it was submitted already. At the
    /// deadline, a request every attempt of which was refused unapplied
    /// ([`KvError::refused_unapplied`]) fails with that refusal rather than as unknown.
    pub async fn execute_after(
        &mut self,
        request: &Request,
        mut first: Option<Attempt>,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        let started = Instant::now();
        let deadline = started + self.options.deadline;
        let mut attempts = 0u32;
        // Whether some attempt may have been applied (timed out, lost with its connection, or
        // answered with an error that does not rule it out), and the last unapplied refusal.
        let mut maybe_applied = false;
        let mut refusal = None;
        // What the last round ended with, for the error if the deadline passes before another.
        let mut previous = String::new();
        loop {
            let mut last = String::new();
            if first.is_none() && self.view.as_ref().is_none_or(|v| v.primary.is_none()) {
                match self.refresh_view().await {
                    Ok(()) => {}
                    Err(err) => {
                        // "No monitors" only before anything was sent: afterwards a write may
                        // have been applied, and its outcome is unknown whatever the monitors do.
                        if let Some(fatal) = self.unreachable(&err, started, attempts == 0) {
                            return Err(fatal);
                        }
                        last = err.to_string();
                    }
                }
            }
            let attempt = match (first.take(), self.primary_addr()) {
                (Some(attempt), _) => Some(attempt),
                (None, Some(primary)) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        // Reading the view took the time left: an attempt now could only time
                        // out, and a write handed over might still be applied — making an
                        // outcome unknown that every attempt so far may have ruled out.
                        let last = if last.is_empty() { previous } else { last };
                        return Err(self.given_up(request, refusal, maybe_applied, last));
                    }
                    Some(self.attempt(primary, request, self.options.rpc_timeout.min(left)))
                }
                (None, None) => None,
            };
            match attempt {
                None if last.is_empty() => last = "the view has no primary yet".into(),
                None => {}
                Some(attempt) => {
                    attempts += 1;
                    let (remote, outcome) = attempt.outcome().await;
                    let addr = match &remote {
                        Some(addr) => addr,
                        None => self.local.as_ref().map_or("", |l| l.addr()),
                    };
                    let taken_in = match &outcome {
                        Ok(Reply::Ok(_)) => true,
                        Ok(Reply::Err(err)) => !matches!(err, KvError::WrongServer { .. }),
                        Err(_) => false,
                    };
                    if taken_in && self.primary_addr() == Some(addr) {
                        self.proven = true;
                    }
                    match outcome {
                        Ok(Reply::Ok(value)) => return Ok(value),
                        Ok(Reply::Err(err)) if err.is_retryable() => {
                            // Maybe the view changed under us: read it again.
                            last = format!("{addr}: {err}");
                            self.view = None;
                            if err.refused_unapplied() {
                                refusal = Some(err);
                            } else {
                                maybe_applied = true;
                            }
                        }
                        Ok(Reply::Err(KvError::SessionExpired { .. })) if attempts == 1 => {
                            return Err(ClientError::SessionLost);
                        }
                        Ok(Reply::Err(
                            err @ (KvError::SessionExpired { .. } | KvError::Deadline { .. }),
                        )) if attempts > 1 => {
                            // An earlier attempt may have been applied, unless every one was
                            // refused unapplied.
                            return Err(self.given_up(
                                request,
                                refusal,
                                maybe_applied,
                                err.to_string(),
                            ));
                        }
                        Ok(Reply::Err(err)) => return Err(ClientError::Refused(err)),
                        Err(err) if err.is_unauthorized() => {
                            return Err(ClientError::Unauthorized(err.to_string()));
                        }
                        Err(err) => {
                            last = err.to_string();
                            self.view = None;
                            maybe_applied = true;
                        }
                    }
                }
            }
            tracing::debug!(
                "request {}/{}: {last}; retrying",
                request.client,
                request.seq
            );
            if Instant::now() + self.options.retry_interval >= deadline {
                return Err(self.given_up(request, refusal, maybe_applied, last));
            }
            previous = last;
            tokio::time::sleep(self.options.retry_interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::Member;

    fn router(view: Option<(u64, &str)>, proven: bool) -> Router {
        let rpc = RpcClient::new("router-test", None);
        let monitors = MonitorClient::new(rpc.clone(), Vec::new(), Duration::from_secs(1));
        let mut router = Router::new(rpc, monitors, ClientOptions::default());
        router.view = view.map(|(num, addr)| View {
            num,
            primary: Some(Member {
                id: addr.into(),
                addr: addr.into(),
                incarnation: 1,
            }),
            ..View::default()
        });
        router.proven = proven;
        router
    }

    #[test]
    fn a_router_follows_a_newer_view_with_what_is_known_of_its_primary() {
        let mut behind = router(Some((3, "a")), true);
        behind.follow(&router(Some((4, "b")), false));
        assert_eq!(behind.primary_addr(), Some("b"));
        assert!(!behind.proven, "b has taken nothing of ours in");

        let mut none = router(None, false);
        none.follow(&router(Some((4, "b")), true));
        assert_eq!((none.primary_addr(), none.proven), (Some("b"), true));

        let mut same = router(Some((4, "b")), false);
        same.follow(&router(Some((4, "b")), true));
        assert!(same.proven, "the same view, proven by a sibling");

        let mut ahead = router(Some((5, "c")), false);
        ahead.follow(&router(Some((4, "b")), true));
        assert_eq!((ahead.primary_addr(), ahead.proven), (Some("c"), false));
    }
}
