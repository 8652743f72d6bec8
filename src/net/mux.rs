//! The client side of framed connections (see `frame.rs`): one persistent connection per
//! server, shared by every caller of an [`super::RpcClient`] and its clones, with any number of
//! calls in flight. Calls are written in the order they were started — what lets a caller
//! pipeline requests that must be applied in order — and batched: whatever was started while
//! the previous write was on its way goes out in one write, and when the answers just read woke
//! more callers than have started a call, the writer lets them start theirs before it writes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_rustls::TlsConnector;

use super::frame::{decode_answer, encode_call, encode_call_header, Answer, HELLO, MAGIC};
use super::tls::TLS_HINT;
use super::RpcError;

/// How long a connection may take to open (TCP, TLS and hello).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A connection unused for this long is replaced by a new one on its next call, well before
/// the server closes it as idle (its header timeout, 60 s by default), so a call never races
/// the server's close.
const IDLE_AFTER: Duration = Duration::from_secs(25);
/// Most bytes gathered into one write.
const MAX_WRITE: usize = 1 << 20;
/// A body at least this big is written from its own buffer rather than copied into the
/// write buffer (a transfer chunk is megabytes).
const COPY_AT_MOST: usize = 64 << 10;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// What a call's answer is delivered through.
type Answering = oneshot::Sender<Result<Answer, RpcError>>;

/// A call on its way to the connection's writer.
struct Outgoing {
    /// The id the frame carries.
    id: u64,
    /// The frame's header.
    header: BytesMut,
    /// Its body.
    body: Bytes,
    /// Where its answer goes.
    reply: Answering,
}

/// What a connection's task and its callers share.
struct State {
    /// Set once the connection cannot carry calls any more: the pool opens a new one.
    dead: AtomicBool,
    /// Wakes the task to close the connection at once (it hung).
    kill: Notify,
    /// When the connection was opened, the origin of the times below.
    opened: Instant,
    /// When an answer last arrived, in ms after `opened`.
    heard_ms: AtomicU64,
    /// When a call was last started on it, in ms after `opened`.
    used_ms: AtomicU64,
    /// The next call id.
    next_id: AtomicU64,
    /// Once the connection has ended: what a call started after that is told.
    ended: std::sync::OnceLock<RpcError>,
}

impl State {
    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// A call started at `since` (ms after opening) timed out: if nothing at all came back on
    /// the connection since, it hangs (a stopped server, a black hole): close it, so the next
    /// call opens a new one instead of queueing behind it.
    fn timed_out(&self, since: u64) {
        if self.heard_ms.load(Ordering::Relaxed) <= since {
            self.dead.store(true, Ordering::Relaxed);
            self.kill.notify_one();
        }
    }
}

/// One connection as the pool holds it.
struct Conn {
    /// Calls for its writer, in the order they were started.
    queue: mpsc::UnboundedSender<Outgoing>,
    /// Shared with its task.
    state: Arc<State>,
}

/// How connections are opened and introduced.
#[derive(Clone)]
struct Dial {
    /// TLS, if the cluster uses it.
    tls: Option<TlsConnector>,
    /// The body of the hello: the `Authorization` header value proving the secret, or empty.
    hello: Bytes,
}

/// The framed connections of one RPC client.
pub(super) struct Mux {
    /// Open connections by server address.
    conns: Mutex<HashMap<String, Conn>>,
    /// How to open more.
    dial: Dial,
}

/// A call started on a connection: its answer, once it comes.
pub(super) struct Started {
    /// Where the answer arrives.
    answer: oneshot::Receiver<Result<Answer, RpcError>>,
    /// The connection it went on.
    state: Arc<State>,
    /// When it was started, in ms after the connection opened.
    at_ms: u64,
}

impl Started {
    /// The answer's status and body, or why there is none within `timeout`.
    pub(super) async fn answer(self, addr: &str, timeout: Duration) -> Result<Answer, RpcError> {
        match tokio::time::timeout(timeout, self.answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(RpcError::Broken {
                addr: addr.to_string(),
                reason: "the connection closed before the answer came".into(),
            }),
            Err(_) => {
                self.state.timed_out(self.at_ms);
                Err(RpcError::Timeout {
                    addr: addr.to_string(),
                    timeout,
                })
            }
        }
    }
}

impl Mux {
    /// Connections over TLS with `tls` (plain without), each proving `authorization` (an
    /// `Authorization` header value; empty without a secret).
    pub(super) fn new(tls: Option<Arc<ClientConfig>>, authorization: Bytes) -> Mux {
        Mux {
            conns: Mutex::new(HashMap::new()),
            dial: Dial {
                tls: tls.map(TlsConnector::from),
                hello: authorization,
            },
        }
    }

    /// Start a call of `path` with `body` on the connection to `addr` (opened if need be): it
    /// is written after every call started before it on that connection.
    pub(super) fn start(&self, addr: &str, path: &str, body: Bytes) -> Started {
        let mut conns = lock(&self.conns);
        let fresh = conns.get(addr).is_some_and(|c| {
            let state = &c.state;
            !state.dead.load(Ordering::Relaxed)
                && state.now_ms() - state.used_ms.load(Ordering::Relaxed)
                    < IDLE_AFTER.as_millis() as u64
        });
        if !fresh {
            conns.insert(addr.to_string(), self.open(addr));
        }
        let Some(conn) = conns.get(addr) else {
            unreachable!("a connection to {addr} was just inserted");
        };
        let state = conn.state.clone();
        let at_ms = state.now_ms();
        state.used_ms.store(at_ms, Ordering::Relaxed);
        let id = state.next_id.fetch_add(1, Ordering::Relaxed);
        let mut header = BytesMut::with_capacity(32);
        encode_call_header(&mut header, id, path, body.len());
        let (reply, answer) = oneshot::channel();
        let outgoing = Outgoing {
            id,
            header,
            body,
            reply,
        };
        if let Err(mpsc::error::SendError(lost)) = conn.queue.send(outgoing) {
            let err = state.ended.get().cloned().unwrap_or(RpcError::Unreachable {
                addr: addr.to_string(),
                reason: "the connection closed".into(),
            });
            let _ = lost.reply.send(Err(err));
        }
        Started {
            answer,
            state,
            at_ms,
        }
    }

    /// A new connection to `addr`, opened by its own task.
    fn open(&self, addr: &str) -> Conn {
        let (queue, calls) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            dead: AtomicBool::new(false),
            kill: Notify::new(),
            opened: Instant::now(),
            heard_ms: AtomicU64::new(0),
            used_ms: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            ended: std::sync::OnceLock::new(),
        });
        tokio::spawn(run(
            addr.to_string(),
            self.dial.clone(),
            calls,
            state.clone(),
        ));
        Conn { queue, state }
    }
}

/// Why a connection ended.
enum End {
    /// It never opened: nothing was sent.
    Unopened(RpcError),
    /// It broke (or hung, or the server closed it) with calls in flight.
    Broken(String),
}

/// Open the connection, carry calls until it breaks or the pool lets go of it, then fail every
/// call still waiting.
async fn run(
    addr: String,
    dial: Dial,
    mut calls: mpsc::UnboundedReceiver<Outgoing>,
    state: Arc<State>,
) {
    let waiting: Mutex<HashMap<u64, Answering>> = Mutex::new(HashMap::new());
    let end = tokio::select! {
        end = carry(&addr, &dial, &mut calls, &state, &waiting) => end,
        () = state.kill.notified() => End::Broken("no answer came on the connection".into()),
    };
    state.dead.store(true, Ordering::Relaxed);
    let (unsent, in_flight) = match end {
        End::Unopened(err) => (err.clone(), err),
        End::Broken(reason) => (
            RpcError::Unreachable {
                addr: addr.clone(),
                reason: format!("the connection closed before the call was sent: {reason}"),
            },
            RpcError::Broken {
                addr: addr.clone(),
                reason,
            },
        ),
    };
    let _ = state.ended.set(unsent.clone());
    calls.close();
    for (_, reply) in lock(&waiting).drain() {
        let _ = reply.send(Err(in_flight.clone()));
    }
    // `recv`, not `try_recv`: a caller whose send began before the close may not have queued
    // its call yet, and `try_recv` would report the queue empty; its call would then be left
    // in the queue, unanswered, until its deadline. `recv` waits for such sends and ends once
    // none is left (no send can begin after the close).
    while let Some(call) = calls.recv().await {
        let _ = call.reply.send(Err(unsent.clone()));
    }
}

/// Open the connection (TCP, TLS if configured, the preamble and hello) and carry calls on it.
async fn carry(
    addr: &str,
    dial: &Dial,
    calls: &mut mpsc::UnboundedReceiver<Outgoing>,
    state: &State,
    waiting: &Mutex<HashMap<u64, Answering>>,
) -> End {
    let unreachable = |reason: String| {
        End::Unopened(RpcError::Unreachable {
            addr: addr.to_string(),
            reason,
        })
    };
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return unreachable(format!("tcp connect error: {err}")),
        Err(_) => return unreachable(format!("no connection within {CONNECT_TIMEOUT:?}")),
    };
    let _ = stream.set_nodelay(true);
    let Some(tls) = &dial.tls else {
        return exchange(addr, stream, dial, calls, state, waiting).await;
    };
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let Ok(name) = ServerName::try_from(host.to_string()) else {
        return unreachable(format!("{host} is not a name TLS can check"));
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(name, stream)).await {
        Ok(Ok(stream)) => exchange(addr, stream, dial, calls, state, waiting).await,
        Ok(Err(err)) => unreachable(format!("TLS handshake failed: {err}")),
        Err(_) => unreachable(format!("no TLS handshake within {CONNECT_TIMEOUT:?}")),
    }
}

/// Introduce ourselves on `stream`, then write calls and read answers until it ends.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    addr: &str,
    mut stream: S,
    dial: &Dial,
    calls: &mut mpsc::UnboundedReceiver<Outgoing>,
    state: &State,
    waiting: &Mutex<HashMap<u64, Answering>>,
) -> End {
    let mut input = BytesMut::with_capacity(64 << 10);
    let mut hello = BytesMut::from(&MAGIC[..]);
    encode_call(&mut hello, 0, HELLO, &dial.hello);
    let introduced = tokio::time::timeout(CONNECT_TIMEOUT, async {
        stream.write_all(&hello).await.map_err(|e| e.to_string())?;
        loop {
            match decode_answer(&mut input).map_err(|e| e.to_string())? {
                Some(answer) => return Ok(answer),
                None => match stream.read_buf(&mut input).await {
                    Ok(0) => return Err("the server closed the connection".to_string()),
                    Ok(_) => {}
                    Err(err) => return Err(err.to_string()),
                },
            }
        }
    })
    .await;
    match introduced {
        Ok(Ok(answer)) if answer.status == 200 => {}
        Ok(Ok(answer)) => {
            return End::Unopened(RpcError::Status {
                addr: addr.to_string(),
                status: answer.status,
                message: String::from_utf8_lossy(&answer.body).into_owned(),
            })
        }
        Ok(Err(mut reason)) => {
            if dial.tls.is_none() {
                reason.push_str(TLS_HINT);
            }
            return End::Unopened(RpcError::Unreachable {
                addr: addr.to_string(),
                reason: format!("no framed connection: {reason}"),
            });
        }
        Err(_) => {
            return End::Unopened(RpcError::Timeout {
                addr: addr.to_string(),
                timeout: CONNECT_TIMEOUT,
            })
        }
    }
    let (mut reader, mut writer) = tokio::io::split(stream);
    // Answers handed to their callers since the last write: when more callers were woken than
    // have started a call, the writer lets them run before it writes, so their calls go out in
    // the same write (one send for many callers under load; no detour for a lone caller).
    let woken = AtomicUsize::new(0);
    let writing = async {
        let mut output = BytesMut::new();
        while let Some(call) = calls.recv().await {
            let mut next = Some(call);
            let mut gathered = 0;
            let mut yielded = false;
            loop {
                while let Some(Outgoing {
                    id,
                    header,
                    body,
                    reply,
                }) = next.take()
                {
                    gathered += 1;
                    lock(waiting).insert(id, reply);
                    output.extend_from_slice(&header);
                    if body.len() < COPY_AT_MOST {
                        output.extend_from_slice(&body);
                    } else {
                        writer.write_all(&output).await.map_err(|e| e.to_string())?;
                        output.clear();
                        writer.write_all(&body).await.map_err(|e| e.to_string())?;
                    }
                    if output.len() < MAX_WRITE {
                        next = calls.try_recv().ok();
                    }
                }
                if yielded || output.len() >= MAX_WRITE || woken.load(Ordering::Relaxed) <= gathered
                {
                    break;
                }
                tokio::task::yield_now().await;
                yielded = true;
                next = calls.try_recv().ok();
                if next.is_none() {
                    break;
                }
            }
            woken.store(0, Ordering::Relaxed);
            if !output.is_empty() {
                writer.write_all(&output).await.map_err(|e| e.to_string())?;
                output.clear();
            }
        }
        // The pool let go of the connection: say so, and read the answers still due.
        let _ = writer.shutdown().await;
        Ok::<(), String>(())
    };
    let reading = async {
        loop {
            loop {
                match decode_answer(&mut input) {
                    Ok(Some(answer)) => {
                        state.heard_ms.store(state.now_ms(), Ordering::Relaxed);
                        if let Some(reply) = lock(waiting).remove(&answer.id) {
                            let _ = reply.send(Ok(answer));
                            woken.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(None) => break,
                    Err(err) => return err.to_string(),
                }
            }
            match reader.read_buf(&mut input).await {
                Ok(0) => return "the server closed the connection".to_string(),
                Ok(_) => {}
                Err(err) => return err.to_string(),
            }
        }
    };
    tokio::pin!(writing, reading);
    let mut written = false;
    loop {
        tokio::select! {
            wrote = &mut writing, if !written => match wrote {
                Ok(()) => written = true,
                Err(reason) => return End::Broken(reason),
            },
            reason = &mut reading => return End::Broken(reason),
        }
    }
}
