//! The inbound side: an HTTP/1.1 server that hands each whole request body to a [`Handler`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::frame::MAGIC;
use super::framed::{through_http, Answering};
use super::metrics::{Gauge, HttpMetrics};
use super::{encode, Secret, MAX_MESSAGE};

/// A request whose body has been read in full.
pub type HttpRequest = hyper::Request<Bytes>;
/// A response with an in-memory body.
pub type HttpResponse = hyper::Response<Full<Bytes>>;

/// Serves requests for one node.
pub trait Handler: Send + Sync + 'static {
    /// Answer one request.
    fn handle(&self, request: HttpRequest) -> impl Future<Output = HttpResponse> + Send;

    /// What this node reports on `/metrics` besides its requests.
    fn gauges(&self) -> Vec<Gauge> {
        Vec::new()
    }

    /// The route `path` belongs to, as `/metrics` labels it: paths that carry a key name
    /// their route instead, so a label does not grow with the keys.
    fn route(&self, path: &str) -> String {
        path.to_string()
    }

    /// Answer one call of a framed connection (`frame.rs`), which carries what a POST to
    /// `path` would. The calls of one connection are handed over one after another in the
    /// order they arrived: what must follow that order (applying a request) is done before
    /// this returns, and what is left to wait for goes in the returned future. The default
    /// runs [`Handler::handle`] in the future.
    fn call(self: Arc<Self>, path: &str, body: Bytes) -> Answering
    where
        Self: Sized,
    {
        through_http(self, path, body)
    }
}

fn response(status: StatusCode, content_type: &str, body: Vec<u8>) -> HttpResponse {
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// 200 with a bincode body.
pub fn bincode_reply<T: Serialize>(value: &T) -> HttpResponse {
    response(StatusCode::OK, "application/octet-stream", encode(value))
}

/// 200 with a JSON body.
pub fn json_reply(value: &serde_json::Value) -> HttpResponse {
    let mut body = value.to_string().into_bytes();
    body.push(b'\n');
    response(StatusCode::OK, "application/json", body)
}

/// 400 with an explanation.
pub fn bad_request(message: impl std::fmt::Display) -> HttpResponse {
    response(
        StatusCode::BAD_REQUEST,
        "text/plain; charset=utf-8",
        message.to_string().into_bytes(),
    )
}

/// 404 naming the path.
pub fn not_found(path: &str) -> HttpResponse {
    response(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        format!("no such endpoint: {path}").into_bytes(),
    )
}

/// What one listener lets its peers hold, so that no peer — authenticated or not — can wear a
/// node out: a client that sends its request a byte at a time, a flood of connections, many
/// large bodies at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeLimits {
    /// How long a connection may take to send a request's headers, counted from when the
    /// previous request was answered: an idle connection is closed after it too, so it is
    /// longer than the idle time after which [`super::RpcClient`] drops a pooled connection.
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive once its headers have: 408 after it.
    pub body_timeout: Duration,
    /// Connections open at once; one more is closed at once (and logged).
    pub max_connections: usize,
    /// Request body bytes held at once over all connections (by their `Content-Length`, or
    /// [`MAX_MESSAGE`] for a chunked body); a request that does not fit is answered 503 at once, so
    /// a peer cannot make the node hold many 64 MiB bodies at a time.
    pub max_body_bytes: usize,
}

impl Default for ServeLimits {
    fn default() -> ServeLimits {
        ServeLimits {
            header_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_body_bytes: 8 * MAX_MESSAGE,
        }
    }
}

/// The bytes a request will hold: its declared length; the most any body may have if it comes
/// in chunks of unknown total; none without either (HTTP/1.1: no body).
fn declared_length(parts: &hyper::http::request::Parts) -> usize {
    if parts.headers.contains_key(hyper::header::TRANSFER_ENCODING) {
        return MAX_MESSAGE;
    }
    parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(0, |n| n.min(MAX_MESSAGE))
}

/// Answer `/metrics` here (open, like `/status`) and every other request through
/// [`admit_and_handle`]; count it either way.
async fn handle_one<H: Handler>(
    handler: &H,
    request: hyper::Request<Incoming>,
    listener: &Listener,
) -> HttpResponse {
    let started = Instant::now();
    let path = request.uri().path().to_string();
    let reply = if path == "/metrics" {
        let text = listener.metrics.render(handler.gauges());
        response(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            text.into_bytes(),
        )
    } else {
        admit_and_handle(handler, request, listener).await
    };
    let status = reply.status().as_u16();
    let known = reply.status() != StatusCode::NOT_FOUND;
    listener
        .metrics
        .record(&handler.route(&path), known, status, started.elapsed());
    reply
}

/// What every connection of one listener shares.
pub(super) struct Listener {
    /// Its limits.
    pub(super) limits: ServeLimits,
    /// The secret requests must prove, if any.
    pub(super) secret: Option<Secret>,
    /// Body bytes that may still be held, as permits (framed connections wait for theirs).
    pub(super) body_budget: Arc<Semaphore>,
    /// What `/metrics` reports of its requests.
    pub(super) metrics: HttpMetrics,
}

/// Check the secret (every path but `/status`, which stays open for health checks), read the
/// whole body (at most [`MAX_MESSAGE`] bytes, within the body budget and timeout) and hand the
/// request to `handler`.
async fn admit_and_handle<H: Handler>(
    handler: &H,
    request: hyper::Request<Incoming>,
    listener: &Listener,
) -> HttpResponse {
    let limits = listener.limits;
    let (parts, body) = request.into_parts();
    let open = parts.uri.path() == "/status";
    if let Some(secret) = listener.secret.as_ref().filter(|_| !open) {
        let header = parts.headers.get(hyper::header::AUTHORIZATION);
        if !secret.admits(header.map(|h| h.as_bytes())) {
            return response(
                StatusCode::UNAUTHORIZED,
                "text/plain; charset=utf-8",
                b"missing or wrong cluster secret (give the cluster's --secret-file)".to_vec(),
            );
        }
    }
    let wanted = u32::try_from(declared_length(&parts).max(1)).unwrap_or(u32::MAX);
    let Ok(_held) = listener.body_budget.try_acquire_many(wanted) else {
        return response(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            format!(
                "too many request bytes in flight (at most {} at once); retry",
                limits.max_body_bytes
            )
            .into_bytes(),
        );
    };
    let read = tokio::time::timeout(
        limits.body_timeout,
        Limited::new(body, MAX_MESSAGE).collect(),
    );
    let Ok(read) = read.await else {
        return response(
            StatusCode::REQUEST_TIMEOUT,
            "text/plain; charset=utf-8",
            format!("the request body took over {:?}", limits.body_timeout).into_bytes(),
        );
    };
    match read {
        Ok(body) => {
            handler
                .handle(HttpRequest::from_parts(parts, body.to_bytes()))
                .await
        }
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain; charset=utf-8",
                format!("request body over {MAX_MESSAGE} bytes").into_bytes(),
            )
        }
        Err(err) => bad_request(format!("could not read the request body: {err}")),
    }
}

/// Serve one connection (plain or TLS) with `handler`: framed if it starts with the framed
/// preamble, else HTTP/1.1. Its first bytes must come within the header timeout.
async fn serve_connection<H: Handler, I>(mut io: I, handler: Arc<H>, shared: Arc<Listener>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut first = [0u8; 1];
    let timeout = shared.limits.header_timeout;
    match tokio::time::timeout(timeout, io.read_exact(&mut first)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) | Err(_) => return,
    }
    if first[0] != MAGIC[0] {
        let io = Prefixed {
            first: Some(first[0]),
            inner: io,
        };
        return serve_http(io, handler, shared).await;
    }
    let mut rest = [0u8; 3];
    match tokio::time::timeout(timeout, io.read_exact(&mut rest)).await {
        Ok(Ok(_)) if rest == MAGIC[1..] => super::framed::serve(io, handler, shared).await,
        _ => tracing::debug!("closing a connection that is neither HTTP nor framed"),
    }
}

/// A connection whose first byte was read to tell its protocol, reading it again first.
struct Prefixed<I> {
    /// The byte read ahead, until it is read again.
    first: Option<u8>,
    /// The connection.
    inner: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(byte) = self.first.take() {
            buf.put_slice(&[byte]);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serve the HTTP/1.1 requests of one connection with `handler`.
async fn serve_http<H: Handler, I>(io: I, handler: Arc<H>, shared: Arc<Listener>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = shared.limits.header_timeout;
    let service = hyper::service::service_fn(move |request| {
        let (handler, shared) = (handler.clone(), shared.clone());
        async move {
            let reply = handle_one(&*handler, request, &shared);
            Ok::<_, std::convert::Infallible>(reply.await)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), service);
    if let Err(err) = connection.await {
        tracing::debug!("connection ended: {err}");
    }
}

/// Accept connections on `listener` and serve them with `handler` until `shutdown` completes,
/// within `limits`, answering 401 to requests that do not prove `secret` (if any), over TLS
/// when given `tls` (whose handshake must end within the header timeout). Open connections
/// are closed when this returns.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
    limits: ServeLimits,
    secret: Option<Secret>,
    tls: Option<TlsAcceptor>,
) {
    let mut connections = JoinSet::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let shared = Arc::new(Listener {
        limits,
        secret,
        body_budget: Arc::new(Semaphore::new(
            limits.max_body_bytes.min(Semaphore::MAX_PERMITS),
        )),
        metrics: HttpMetrics::default(),
    });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!("accept failed: {err}");
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(
                        "closing a connection from {peer}: {} connections are open already",
                        limits.max_connections
                    );
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (handler, shared, acceptor) = (handler.clone(), shared.clone(), tls.clone());
                connections.spawn(async move {
                    let _slot = slot;
                    let Some(acceptor) = acceptor else {
                        return serve_connection(stream, handler, shared).await;
                    };
                    // Bounded like a request's headers: a peer that never finishes its
                    // handshake must not hold a connection slot for good.
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, handler, shared).await,
                        Ok(Err(err)) => tracing::debug!("TLS handshake with {peer} failed: {err}"),
                        Err(_) => tracing::debug!(
                            "TLS handshake with {peer} took over {:?}",
                            limits.header_timeout
                        ),
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}
