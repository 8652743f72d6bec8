//! The kv servers: primary/backup replication following the monitors' view (design.md "The kv
//! servers").
//!
//! A server pings the monitor group every ping interval and takes the role the view gives it.
//! The primary applies each request under a short lock, gives it the next index in its order,
//! and answers only once its backup has applied everything up to that index; a replication task
//! streams the entries to the backup in index order, batching whatever accumulated while the
//! previous batch was in flight. A new backup first receives the full state as of some index,
//! then the entries after it. No lock is held across a network round trip.

pub mod api;
mod backup;
mod node;
mod primary;
mod store;

pub use node::KvServer;
pub use store::{fnv1a32, Limits, Store};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::monitor::MonitorClient;
use crate::net::{serve, RpcClient};
use crate::view::Timings;

/// Everything a kv server needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Stable name (default: the advertised address).
    pub id: String,
    /// Where clients and the other kv servers reach this one.
    pub addr: String,
    /// The monitors' addresses.
    pub monitors: Vec<String>,
    /// Ping interval (and dead pings, unused here but kept with it).
    pub timings: Timings,
    /// Value size limit and session expiry.
    pub limits: Limits,
    /// Deadline of one RPC to the backup or a monitor.
    pub rpc_timeout: Duration,
    /// How long a client request may wait for the backup before the client is told to retry.
    pub confirm_timeout: Duration,
}

impl ServerConfig {
    /// A configuration with default timings for a server at `addr`.
    pub fn new(addr: &str, monitors: Vec<String>) -> ServerConfig {
        ServerConfig {
            id: addr.to_string(),
            addr: addr.to_string(),
            monitors,
            timings: Timings::default(),
            limits: Limits::default(),
            rpc_timeout: Duration::from_secs(1),
            confirm_timeout: Duration::from_secs(2),
        }
    }
}

/// Run a kv server on `listener` until `shutdown` completes. It starts idle and empty, with a
/// fresh random incarnation.
pub async fn run(
    config: ServerConfig,
    listener: TcpListener,
    rpc: RpcClient,
    shutdown: impl Future<Output = ()>,
) {
    let monitors = MonitorClient::new(rpc.clone(), config.monitors.clone(), config.rpc_timeout);
    let server = Arc::new(KvServer::new(config, rpc, monitors));
    tracing::info!(
        "kv server {} (incarnation {:x}) listening on {}",
        server.me().id,
        server.me().incarnation,
        server.me().addr
    );
    let pinger = tokio::spawn(server.clone().ping_loop());
    serve(listener, server.clone(), shutdown).await;
    pinger.abort();
    let _ = pinger.await;
    server.stop().await;
}
