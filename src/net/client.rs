//! The one outbound RPC path of every node.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::StatusCode;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use rustls::ClientConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::frame::Answer;
use super::mux::Mux;
use super::tls::TLS_HINT;
use super::{decode, encode, Fate, Faults, Secret, Tls, MAX_MESSAGE};

/// Paths whose calls travel over persistent framed connections (`frame.rs`) rather than one
/// HTTP request each: the kv service's (client requests, forwards, transfers, reads, dumps).
/// Monitors and Raft keep HTTP.
pub const FRAMED_PREFIX: &str = "/kv/";

/// Why an RPC failed. Except for [`RpcError::Status`], the request may or may not have been
/// served: callers that retry must make the retry idempotent.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// No connection could be made (refused, or a cut link).
    #[error("{addr} unreachable: {reason}")]
    Unreachable {
        /// Who we tried to reach.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// No answer within the deadline.
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout {
        /// Who we asked.
        addr: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The connection broke after the request was sent, or the reply was lost.
    #[error("{addr}: {reason}")]
    Broken {
        /// Who we asked.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("{addr} answered {status}: {message}")]
    Status {
        /// Who answered.
        addr: String,
        /// The HTTP status.
        status: u16,
        /// The server's explanation.
        message: String,
    },
    /// The reply could not be decoded.
    #[error("{addr} sent a malformed reply: {reason}")]
    Malformed {
        /// Who answered.
        addr: String,
        /// The decoder's complaint.
        reason: String,
    },
}

impl RpcError {
    /// Whether the server refused us for want of the cluster secret (nothing was done, and
    /// trying again with the same credentials cannot help).
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, RpcError::Status { status: 401, .. })
    }
}

/// Sends RPCs on behalf of one node. Cheap to clone; clones share a connection pool.
#[derive(Clone)]
pub struct RpcClient {
    /// This node's name in the fault table: its listen address, or a client's own name.
    me: Arc<str>,
    /// Pooled HTTP/1.1 connections, plain or TLS.
    http: Pool,
    /// Framed connections, one per server, for the paths under [`FRAMED_PREFIX`].
    frames: Arc<Mux>,
    /// Faults to apply to every call; `None` outside tests.
    faults: Option<Arc<Faults>>,
    /// The cluster secret every request carries, if the cluster has one.
    secret: Option<Secret>,
    /// The TLS client config, if connections use TLS (framed ones are opened with it too).
    tls: Option<Arc<ClientConfig>>,
}

/// A connection pool: plain HTTP, or HTTPS only (a client with TLS never falls back to clear
/// text).
#[derive(Clone)]
enum Pool {
    /// `http://` over plain TCP.
    Plain(Client<HttpConnector, Full<Bytes>>),
    /// `https://` with the node's TLS client config.
    Tls(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
}

impl Pool {
    /// A pool connecting with `tls` if given, else in plain text.
    fn new(tls: Option<&Tls>) -> Pool {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(1)));
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_idle_timeout(Duration::from_secs(30));
        match tls {
            None => Pool::Plain(builder.build(connector)),
            Some(tls) => {
                connector.enforce_http(false);
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(ClientConfig::clone(tls.client_config()))
                    .https_only()
                    .enable_http1()
                    .wrap_connector(connector);
                Pool::Tls(builder.build(https))
            }
        }
    }

    /// The scheme of this pool's URIs.
    fn scheme(&self) -> &'static str {
        match self {
            Pool::Plain(_) => "http",
            Pool::Tls(_) => "https",
        }
    }

    /// Send one request.
    fn request(&self, request: hyper::Request<Full<Bytes>>) -> ResponseFuture {
        match self {
            Pool::Plain(client) => client.request(request),
            Pool::Tls(client) => client.request(request),
        }
    }
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient").field("me", &self.me).finish()
    }
}

impl RpcClient {
    /// A client for the node called `me`, subject to `faults` if given.
    pub fn new(me: &str, faults: Option<Arc<Faults>>) -> RpcClient {
        RpcClient {
            me: me.into(),
            http: Pool::new(None),
            frames: Arc::new(Mux::new(None, Bytes::new())),
            faults,
            secret: None,
            tls: None,
        }
    }

    /// The same client, proving `secret` on every request (none if `None`).
    pub fn with_secret(mut self, secret: Option<Secret>) -> RpcClient {
        self.secret = secret;
        self.frames = self.new_mux();
        self
    }

    /// The same client, connecting over TLS with `tls` (in plain text if `None`); it then
    /// reaches only TLS listeners.
    pub fn with_tls(mut self, tls: Option<&Tls>) -> RpcClient {
        self.http = Pool::new(tls);
        self.tls = tls.map(|tls| tls.client_config().clone());
        self.frames = self.new_mux();
        self
    }

    /// A pool of framed connections with this client's TLS and secret.
    fn new_mux(&self) -> Arc<Mux> {
        let hello = self.secret.as_ref().map_or_else(Bytes::new, |s| {
            Bytes::copy_from_slice(s.header().as_bytes())
        });
        Arc::new(Mux::new(self.tls.clone(), hello))
    }

    /// This node's name.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// POST `body` to `path` on `addr`; the response body on a 2xx answer.
    pub async fn call_raw(
        &self,
        addr: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        self.start(addr, path, body, timeout)
            .await
            .map(|bytes| bytes.to_vec())
    }

    /// Start a call of `path` on `addr` now and give its reply body (on a 2xx answer) when it
    /// comes. A call under [`FRAMED_PREFIX`] is queued on the framed connection to `addr`
    /// before this returns, so calls started one after another are written, and served, in
    /// that order (unless the fault table delays one).
    pub fn start(
        &self,
        addr: &str,
        path: &str,
        body: impl Into<Bytes>,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<Bytes, RpcError>> + Send>> {
        let body: Bytes = body.into();
        let fate = match &self.faults {
            Some(faults) => faults.fate(&self.me, addr),
            None => Fate::Deliver {
                delay: Duration::ZERO,
            },
        };
        let addr = addr.to_string();
        let delay = match fate {
            Fate::DropRequest => {
                return Box::pin(std::future::ready(Err(RpcError::Unreachable {
                    addr,
                    reason: "request lost (fault injection)".into(),
                })))
            }
            Fate::Deliver { delay } | Fate::DropReply { delay } => delay,
        };
        let lost = matches!(fate, Fate::DropReply { .. }).then(|| addr.clone());
        let framed = path.starts_with(FRAMED_PREFIX);
        let reply: Pin<Box<dyn Future<Output = Result<Bytes, RpcError>> + Send>> =
            if framed && delay.is_zero() {
                let started = self.frames.start(&addr, path, body);
                Box::pin(async move { framed_reply(&addr, started.answer(&addr, timeout).await) })
            } else {
                let (this, path) = (self.clone(), path.to_string());
                Box::pin(async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay.min(timeout)).await;
                    }
                    let left = timeout.saturating_sub(delay);
                    if framed {
                        let started = this.frames.start(&addr, &path, body);
                        return framed_reply(&addr, started.answer(&addr, left).await);
                    }
                    match tokio::time::timeout(left, this.exchange(&addr, &path, body)).await {
                        Ok(reply) => reply,
                        Err(_) => Err(RpcError::Timeout { addr, timeout }),
                    }
                })
            };
        let Some(addr) = lost else {
            return reply;
        };
        Box::pin(async move {
            reply.await?;
            Err(RpcError::Broken {
                addr,
                reason: "reply lost (fault injection)".into(),
            })
        })
    }

    /// One HTTP exchange, without faults or deadline.
    async fn exchange(&self, addr: &str, path: &str, body: Bytes) -> Result<Bytes, RpcError> {
        let mut request = hyper::Request::post(format!("{}://{addr}{path}", self.http.scheme()))
            .header(hyper::header::CONTENT_TYPE, "application/octet-stream");
        if let Some(secret) = &self.secret {
            request = request.header(hyper::header::AUTHORIZATION, secret.header().clone());
        }
        let request = request
            .body(Full::new(body))
            .map_err(|err| RpcError::Unreachable {
                addr: addr.to_string(),
                reason: format!("bad address: {err}"),
            })?;
        let response = self.http.request(request).await.map_err(|err| {
            let mut reason = with_causes(&err);
            if matches!(self.http, Pool::Plain(_)) && answered_garbage(&err) {
                reason.push_str(TLS_HINT);
            }
            if err.is_connect() {
                RpcError::Unreachable {
                    addr: addr.to_string(),
                    reason,
                }
            } else {
                RpcError::Broken {
                    addr: addr.to_string(),
                    reason,
                }
            }
        })?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_MESSAGE)
            .collect()
            .await
            .map_err(|err| RpcError::Broken {
                addr: addr.to_string(),
                reason: err.to_string(),
            })?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(RpcError::Status {
                addr: addr.to_string(),
                status: status.as_u16(),
                message: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        Ok(bytes)
    }

    /// Send a typed request and decode the typed reply.
    pub async fn call<Req, Resp>(
        &self,
        addr: &str,
        path: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let bytes = self.start(addr, path, encode(request), timeout).await?;
        decode(&bytes).map_err(|err| RpcError::Malformed {
            addr: addr.to_string(),
            reason: err.0,
        })
    }
}

impl viewkv_raft::Transport for RpcClient {
    async fn call(
        &self,
        addr: &str,
        path: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, viewkv_raft::TransportError> {
        self.call_raw(addr, path, body, timeout)
            .await
            .map_err(|err| match err {
                RpcError::Unreachable { .. } => {
                    viewkv_raft::TransportError::Unreachable(err.to_string())
                }
                other => viewkv_raft::TransportError::Failed(other.to_string()),
            })
    }
}

/// A framed call's answer as an RPC's reply: its body on 200, else the status as an error.
fn framed_reply(addr: &str, answer: Result<Answer, RpcError>) -> Result<Bytes, RpcError> {
    let answer = answer?;
    if answer.status != 200 {
        return Err(RpcError::Status {
            addr: addr.to_string(),
            status: answer.status,
            message: String::from_utf8_lossy(&answer.body).into_owned(),
        });
    }
    Ok(answer.body)
}

/// Whether `err` says the server answered with something that is not HTTP, which is what a
/// TLS listener's alert looks like to a plain-HTTP client.
fn answered_garbage(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(inner) = cause {
        if inner
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse)
        {
            return true;
        }
        cause = inner.source();
    }
    false
}

/// `err` and what caused it, outermost first: hyper's own message ("client error (Connect)")
/// says nothing without its causes ("Connection refused").
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}
