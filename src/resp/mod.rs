//! The Redis protocol (RESP2) on every kv server, so existing Redis clients and tools work
//! against viewkv. Each connection is one client session of the client library: a command on
//! a server that is not the primary is forwarded to the primary with the same retries and
//! at-most-once guarantee as any client's, so a failover is only a slower reply (or, past the
//! deadline, an error saying the outcome is unknown). Frames are read and written with the
//! `redis-protocol` crate.

mod command;
mod connection;
mod docs;
mod info;
mod pipeline;
mod scan;
mod subcommands;
mod table;
mod transaction;

pub use command::{parse, Command, ConnectionCommand, Refusal, SetShape};
pub use connection::read_batch;
pub use scan::{Cursors, Glob, MAX_CURSORS};

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::net::{Secret, TlsAcceptor};
use crate::Client;

/// The Redis version viewkv reports (`INFO`, `HELLO`): the release whose commands it follows.
pub const REDIS_VERSION: &str = "7.0.0";
/// Most connections served at once; one more is closed at once.
pub const MAX_CONNECTIONS: usize = 4096;

/// What every connection of one server shares.
pub struct Context {
    /// Makes a connection's client session (the server's monitors, secret and TLS).
    pub new_client: Box<dyn Fn() -> Client + Send + Sync>,
    /// The cluster secret `AUTH` must give, if the cluster has one (then every command but
    /// `AUTH`, `HELLO` and `QUIT` needs it first).
    pub secret: Option<Secret>,
    /// The server's status document, for `INFO`.
    pub status: Box<dyn Fn() -> serde_json::Value + Send + Sync>,
    /// The SCAN cursors this server handed out.
    pub cursors: Cursors,
    /// The cluster's TLS listener settings, if it uses TLS: then every connection is a TLS
    /// one (with the cluster CA, a client certificate is required, as on every other port),
    /// so the secret `AUTH` carries never crosses the network in clear.
    pub tls: Option<TlsAcceptor>,
}

/// How long a connection may take over its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Serve the Redis protocol on `listener` until `shutdown` completes.
pub async fn run(listener: TcpListener, context: Context, shutdown: impl Future<Output = ()>) {
    let context = Arc::new(context);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let ids = AtomicU64::new(1);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::debug!("RESP accept failed: {err}");
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("RESP connection from {peer} refused: {MAX_CONNECTIONS} open");
            continue;
        };
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let context = context.clone();
        connections.spawn(async move {
            let _ = stream.set_nodelay(true);
            let addresses = connection::Addresses::of(&stream);
            match context.tls.clone() {
                None => connection::serve(stream, addresses, id, context).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            connection::serve(stream, addresses, id, context).await;
                        }
                        Ok(Err(err)) => {
                            tracing::debug!("RESP TLS handshake with {peer} failed: {err}");
                        }
                        Err(_) => {
                            tracing::debug!(
                                "RESP TLS handshake with {peer} took over {HANDSHAKE:?}"
                            );
                        }
                    }
                }
            }
            drop(slot);
        });
    }
}
