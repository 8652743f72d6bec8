//! The server side of a framed connection (see `frame.rs`): after the preamble and a hello
//! that proves the secret, calls are read as they come and handed to the [`Handler`] in
//! arrival order; their answers are written as they become ready, whatever arrived at once
//! written at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::frame::{decode_call, encode_answer, Call, HELLO, MAX_FRAME};
use super::metrics::Counted;
use super::server::{Handler, Listener};
use super::MAX_MESSAGE;

/// Most calls of one connection waiting for their answers at once; the next is not read until
/// one is answered.
pub const MAX_IN_FLIGHT: usize = 4096;
/// Most bytes of the hello frame (it carries one header value).
const MAX_HELLO: usize = 4096;
/// The read buffer's starting size: room for a few dozen small calls per read (it grows for a
/// bigger frame). Every connection holds one, so it stays small.
const READ_BUFFER: usize = 8 << 10;
/// Body bytes taken in after which a connection's task lets the rest of the node run before
/// reading on. Calls this big are chunks of a state transfer (1 MiB each) or a dump, whose
/// handler works for milliseconds per call; with the next one always waiting, the task never
/// had to wait, and the node's timers and other connections (its pings: the monitors dropped
/// a backup in the middle of a transfer of a million keys) waited for the whole stream. Four
/// chunks between yields keep a 10 ms timer's wait near 150 ms (`tests/framed.rs`), far inside
/// the 500 ms after which a silent server is dead; a yield after every chunk cost the transfer
/// a fifth of its rate (`bench backup-sync`). Small calls never add up to it in one round,
/// so client traffic never yields here.
const YIELD_AFTER_BYTES: usize = 4 << 20;

/// A call's outcome: the HTTP status it would have had, and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallOutcome {
    /// The status (200 for a reply).
    pub status: u16,
    /// The body.
    pub body: Bytes,
}

impl CallOutcome {
    /// A 200 answer with `body`.
    pub fn ok(body: Vec<u8>) -> CallOutcome {
        CallOutcome {
            status: 200,
            body: body.into(),
        }
    }

    /// What an HTTP response says, as a call's outcome.
    pub async fn of(response: super::HttpResponse) -> CallOutcome {
        let status = response.status().as_u16();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        CallOutcome { status, body }
    }
}

/// The part of a call left to wait for once the handler has taken it in.
pub type Answering = Pin<Box<dyn Future<Output = CallOutcome> + Send>>;

/// A framed call answered as `handler` answers a POST of `body` to `path` over HTTP (what
/// [`Handler::call`] does unless a handler has a faster way).
pub fn through_http<H: Handler>(handler: Arc<H>, path: &str, body: Bytes) -> Answering {
    let request = hyper::Request::post(path).body(body);
    Box::pin(async move {
        match request {
            Ok(request) => CallOutcome::of(handler.handle(request).await).await,
            Err(err) => CallOutcome::of(super::bad_request(format!("bad path: {err}"))).await,
        }
    })
}

/// A call whose answer is not ready yet, and what it holds until then.
type InFlight = Pin<Box<dyn Future<Output = Done> + Send>>;

/// A call answered.
struct Done {
    /// Its id.
    id: u64,
    /// Its path, for `/metrics`.
    path: String,
    /// When it was read.
    started: Instant,
    /// The answer.
    outcome: CallOutcome,
    /// Its bytes of the listener's body budget, given back once the answer is written.
    _held: Option<OwnedSemaphorePermit>,
}

/// How a read of the next call ended.
enum Read {
    /// A whole call, holding its body bytes of the budget.
    Call(Call, Option<OwnedSemaphorePermit>),
    /// The peer closed the connection, or broke the format (logged).
    End,
}

/// Read the next call from `reader`, taking its bytes from `budget` (if given) before the
/// body is read, so a peer cannot make the node hold more body bytes than the listener allows.
async fn read_call<R: AsyncRead + Unpin>(
    reader: &mut R,
    input: &mut BytesMut,
    budget: Option<&Arc<Semaphore>>,
) -> Read {
    let mut held: Option<OwnedSemaphorePermit> = None;
    loop {
        match decode_call(input) {
            Ok(Some(call)) => return Read::Call(call, held),
            Ok(None) => {}
            Err(err) => {
                tracing::debug!("closing a framed connection: {err}");
                return Read::End;
            }
        }
        if let (Some(budget), None, Some(prefix)) = (budget, &held, input.get(..4)) {
            let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
            let wanted = len.clamp(1, MAX_FRAME as u32);
            match budget.clone().acquire_many_owned(wanted).await {
                Ok(permit) => held = Some(permit),
                Err(_) => return Read::End,
            }
        }
        match reader.read_buf(input).await {
            Ok(0) | Err(_) => return Read::End,
            Ok(_) => {}
        }
    }
}

/// Serve a framed connection whose preamble has been read: the hello first (within the
/// header timeout, answered 401 and closed without the secret), then calls until the peer
/// closes or stays idle for the header timeout; answers still being waited for are written
/// before the connection closes.
pub(super) async fn serve<H: Handler, I>(io: I, handler: Arc<H>, shared: Arc<Listener>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let idle = shared.limits.header_timeout;
    let (mut reader, mut writer) = tokio::io::split(io);
    let mut input = BytesMut::with_capacity(READ_BUFFER);
    let mut output = BytesMut::new();
    let hello = tokio::time::timeout(idle, read_call(&mut reader, &mut input, None)).await;
    let hello = match hello {
        Ok(Read::Call(call, _)) if call.path == HELLO && call.body.len() <= MAX_HELLO => call,
        _ => return,
    };
    let admitted = shared
        .secret
        .as_ref()
        .is_none_or(|secret| secret.admits(Some(&hello.body)));
    if admitted {
        encode_answer(&mut output, hello.id, 200, b"");
    } else {
        let refusal = b"missing or wrong cluster secret (give the cluster's --secret-file)";
        encode_answer(&mut output, hello.id, 401, refusal);
    }
    if writer.write_all(&output).await.is_err() || !admitted {
        return;
    }
    output.clear();

    // One task reads calls, hands them over and writes answers: the answers ready at once
    // (most) go out with the next write without waking anything, and an answer that must wait
    // (for the backup) wakes this task when it is ready.
    let mut pending: FuturesUnordered<InFlight> = FuturesUnordered::new();
    let mut served = Served {
        handler: handler.clone(),
        shared: shared.clone(),
        output,
        counted: None,
        answered_at: None,
        taken_in: 0,
    };
    let budget = shared.body_budget.clone();
    let mut reading = true;
    let mut last_read = tokio::time::Instant::now();
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    while reading || !pending.is_empty() {
        tokio::select! {
            read = read_call(&mut reader, &mut input, Some(&budget)),
                if reading && pending.len() < MAX_IN_FLIGHT =>
            {
                let Read::Call(call, bytes) = read else {
                    reading = false;
                    continue;
                };
                last_read = tokio::time::Instant::now();
                let started = last_read.into_std();
                served.take(call, bytes, started, &mut pending);
                // Take the calls that arrived whole with it before writing any answer.
                while pending.len() < MAX_IN_FLIGHT {
                    match decode_call(&mut input) {
                        Ok(Some(call)) => served.take(call, None, started, &mut pending),
                        Ok(None) => break,
                        Err(err) => {
                            tracing::debug!("closing a framed connection: {err}");
                            reading = false;
                            break;
                        }
                    }
                }
            }
            Some(done) = pending.next(), if !pending.is_empty() => served.answer(done),
            () = &mut idle_timer, if reading => {
                // Idle for the header timeout since the last call: stop reading (the answers
                // still due are written first); else wait out the rest.
                let until = last_read + idle;
                if until <= tokio::time::Instant::now() {
                    reading = false;
                } else {
                    idle_timer.as_mut().reset(until);
                }
            }
        }
        while let Some(Some(done)) = pending.next().now_or_never() {
            served.answer(done);
        }
        served.answered_at = None;
        if !served.output.is_empty() {
            if writer.write_all(&served.output).await.is_err() {
                return;
            }
            served.output.clear();
        }
        if served.taken_in >= YIELD_AFTER_BYTES {
            served.taken_in = 0;
            tokio::task::yield_now().await;
        }
    }
}

/// What a framed connection serves calls with, and the answers not yet written.
struct Served<H> {
    /// Answers the calls.
    handler: Arc<H>,
    /// The listener's metrics.
    shared: Arc<Listener>,
    /// Encoded answers waiting for the next write.
    output: BytesMut,
    /// The path and status of the last answer, with where they are counted: a connection's
    /// answers are mostly alike, and looking the metrics up costs more than counting.
    counted: Option<(String, u16, Counted)>,
    /// When the answers encoded since the last write became ready, read once for all of them:
    /// they are ready within microseconds of each other, the latency buckets start at 50 µs,
    /// and a clock read per answer was a visible share of a small call's cost.
    answered_at: Option<Instant>,
    /// Body bytes taken in since the connection's task last let others run (see
    /// [`YIELD_AFTER_BYTES`]).
    taken_in: usize,
}

impl<H: Handler> Served<H> {
    /// Hand `call`, read at `started` (one clock read for all the calls of one read), to the
    /// handler: its answer goes into the output now if it is ready, else into `pending`.
    fn take(
        &mut self,
        call: Call,
        held: Option<OwnedSemaphorePermit>,
        started: Instant,
        pending: &mut FuturesUnordered<InFlight>,
    ) {
        let Call { id, path, body } = call;
        self.taken_in += body.len();
        if body.len() > MAX_MESSAGE {
            let refusal = format!("request body over {MAX_MESSAGE} bytes");
            let outcome = CallOutcome {
                status: 413,
                body: refusal.into(),
            };
            return self.answer(Done {
                id,
                path,
                started,
                outcome,
                _held: held,
            });
        }
        let mut answer = self.handler.clone().call(&path, body);
        match answer.as_mut().now_or_never() {
            Some(outcome) => self.answer(Done {
                id,
                path,
                started,
                outcome,
                _held: held,
            }),
            None => pending.push(Box::pin(async move {
                Done {
                    id,
                    path,
                    started,
                    outcome: answer.await,
                    _held: held,
                }
            })),
        }
    }

    /// Encode the answer of a call into the output, and count it.
    fn answer(&mut self, done: Done) {
        let Done {
            id,
            path,
            started,
            outcome,
            _held,
        } = done;
        encode_answer(&mut self.output, id, outcome.status, &outcome.body);
        let now = *self.answered_at.get_or_insert_with(Instant::now);
        let (status, took) = (outcome.status, now.saturating_duration_since(started));
        match &self.counted {
            Some((last, counted_status, counted)) if *last == path && *counted_status == status => {
                counted.record(took);
            }
            _ => {
                let route = self.handler.route(&path);
                let counted = self.shared.metrics.counted(&route, status != 404, status);
                counted.record(took);
                self.counted = Some((path, status, counted));
            }
        }
    }
}
