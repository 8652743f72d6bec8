//! The kv servers: primary/backup replication following the monitors' view (design.md "The kv
//! servers").
//!
//! The rules live in a pure core, [`replica::Replica`]; `server.rs` and `replication.rs` are
//! the I/O shell around it. A server pings the monitor group every ping interval and takes the
//! role the view gives it. The primary applies each request under a short lock, gives it the
//! next index in its order, and answers once `min_copies` servers hold it; a replication task
//! sends a new backup an O(1) snapshot of the state in bounded chunks, then streams the entries
//! after it in index order. No lock is held across a network round trip.

pub mod api;
mod confirmations;
mod data;
mod dumps;
pub mod http_api;
pub mod integer;
pub mod replica;
mod replication;
mod server;
mod sessions;
mod store;
mod transfer;

pub use data::{Data, Record};
pub use dumps::{DUMP_IDLE, MAX_OPEN_DUMPS};
pub use server::{wall_ms, KvServer};
pub use sessions::{Lookup, SessionBounds, Sessions};
pub use store::{fnv1a32, Limits, Store};
pub use transfer::{Snapshot, MAX_CHUNK_BYTES};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::client::ClientOptions;
use crate::monitor::MonitorClient;
use crate::net::{serve, RpcClient, Secret, ServeLimits, Tls, TlsAcceptor};
use crate::view::Timings;
use crate::Client;

/// Everything a kv server needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Stable name (default: the advertised address).
    pub id: String,
    /// Where clients and the other kv servers reach this one.
    pub addr: String,
    /// The monitors' addresses.
    pub monitors: Vec<String>,
    /// Ping interval and dead pings.
    pub timings: Timings,
    /// Value size limit and duplicate-table bounds (for a service this server starts).
    pub limits: Limits,
    /// Servers that must hold a write before it is acknowledged: 2 (the default) means no
    /// single crash loses an acknowledged write; 1 lets a lone primary acknowledge.
    pub min_copies: u32,
    /// Whether the primary answers reads from its own state while it holds a read lease
    /// ([`Timings::read_lease`] after a ping reply naming it primary) — the default — rather
    /// than entering every read in the stream to the backup.
    pub read_lease: bool,
    /// Deadline of one RPC to the backup or a monitor (pings wait less: [`Self::ping_timeout`]).
    pub rpc_timeout: Duration,
    /// How long a client request may wait for its copies before the client is told to retry
    /// (checked by a sweep eight times per timeout, so up to an eighth longer).
    pub confirm_timeout: Duration,
    /// Most key and value bytes in one state-transfer chunk.
    pub transfer_chunk_bytes: usize,
    /// The cluster secret every request to this server must prove, if the cluster has one
    /// (outbound, the `RpcClient` given to [`run`] carries it).
    pub secret: Option<Secret>,
    /// TLS for this server's listener (mutual when it has a CA), if the cluster uses TLS
    /// (outbound, the `RpcClient` given to [`run`] connects with it).
    pub tls: Option<Tls>,
}

impl ServerConfig {
    /// How long a ping waits for the monitors' answer: at most half the time after which a
    /// monitor leader declares this server dead, so a ping lost to a monitor that hangs is
    /// followed by the next in time for a new leader's grace period. The monitor hears a ping
    /// whose answer came too late all the same.
    pub fn ping_timeout(&self) -> Duration {
        self.rpc_timeout.min(self.timings.dead_after() / 2)
    }

    /// A configuration with default timings for a server at `addr`.
    pub fn new(addr: &str, monitors: Vec<String>) -> ServerConfig {
        ServerConfig {
            id: addr.to_string(),
            addr: addr.to_string(),
            monitors,
            timings: Timings::default(),
            limits: Limits::default(),
            min_copies: 2,
            read_lease: true,
            rpc_timeout: Duration::from_secs(1),
            confirm_timeout: Duration::from_secs(2),
            transfer_chunk_bytes: MAX_CHUNK_BYTES,
            secret: None,
            tls: None,
        }
    }

    /// Refuse settings the protocol cannot work with, naming the values.
    pub fn validate(&self) -> Result<(), String> {
        self.timings.validate()?;
        if !(1..=2).contains(&self.min_copies) {
            return Err(format!(
                "min_copies must be 1 or 2 (a primary and its backup), not {}",
                self.min_copies
            ));
        }
        if self.limits.max_value == 0 {
            return Err("max_value must be at least 1 byte".into());
        }
        if self.limits.max_value > data::MAX_RECORD / 2 {
            return Err(format!(
                "max_value must be at most {} bytes (a key and its value share one record)",
                data::MAX_RECORD / 2
            ));
        }
        if self.limits.max_sessions == 0 {
            return Err("max_sessions must be at least 1".into());
        }
        if self.limits.session_ttl <= self.timings.dead_after() {
            return Err(format!(
                "session_ttl ({:?}) must be longer than dead_pings x ping_interval ({:?})",
                self.limits.session_ttl,
                self.timings.dead_after()
            ));
        }
        if self.transfer_chunk_bytes == 0 || self.transfer_chunk_bytes > crate::net::MAX_MESSAGE / 4
        {
            return Err(format!(
                "transfer_chunk_bytes must be between 1 and {}, not {}",
                crate::net::MAX_MESSAGE / 4,
                self.transfer_chunk_bytes
            ));
        }
        if let Some(tls) = &self.tls {
            tls.acceptor().map_err(|err| err.to_string())?;
        }
        if self.rpc_timeout.is_zero() || self.confirm_timeout.is_zero() {
            return Err("RPC and confirmation timeouts must be longer than zero".into());
        }
        Ok(())
    }
}

/// Run a kv server on `listener` until `shutdown` completes. It starts idle and empty, with a
/// fresh random incarnation. A configuration whose TLS cannot serve (see
/// [`ServerConfig::validate`]) is logged and the server does not start.
pub async fn run(
    config: ServerConfig,
    listener: TcpListener,
    rpc: RpcClient,
    shutdown: impl Future<Output = ()>,
) {
    run_with_resp(config, listener, None, rpc, shutdown).await;
}

/// [`run`], also serving the Redis protocol on `resp` if given (see [`crate::resp`]).
pub async fn run_with_resp(
    config: ServerConfig,
    listener: TcpListener,
    resp: Option<TcpListener>,
    rpc: RpcClient,
    shutdown: impl Future<Output = ()>,
) {
    let tls = match config.tls.as_ref().map(Tls::acceptor).transpose() {
        Ok(tls) => tls,
        Err(err) => {
            tracing::error!("kv server {}: {err}", config.addr);
            return;
        }
    };
    let rpc_for_resp = rpc.clone();
    let monitors = MonitorClient::new(rpc.clone(), config.monitors.clone(), config.ping_timeout());
    let server = Arc::new(KvServer::new(config, rpc, monitors));
    let me = server.me();
    tracing::info!(
        "kv server {} (incarnation {:x}) listening on {}",
        me.id,
        me.incarnation,
        me.addr
    );
    let pinger = tokio::spawn(server.clone().ping_loop());
    let sweeper = tokio::spawn(server.clone().expire_loop());
    let new_client = client_maker(&server, rpc_for_resp);
    let resp = resp.map(|listener| {
        let context = resp_context(&server, new_client.clone(), tls.clone());
        tokio::spawn(crate::resp::run(listener, context, std::future::pending()))
    });
    let secret = server.config.secret.clone();
    let node = http_api::Node {
        server: server.clone(),
        new_client,
        idle: std::sync::Mutex::new(Vec::new()),
    };
    serve(
        listener,
        Arc::new(node),
        shutdown,
        ServeLimits::default(),
        secret,
        tls,
    )
    .await;
    for task in [pinger, sweeper] {
        task.abort();
        let _ = task.await;
    }
    if let Some(resp) = resp {
        resp.abort();
        let _ = resp.await;
    }
    server.stop().await;
}

/// How the front doors of `server` (the Redis protocol, the HTTP API) make a client session:
/// through `rpc` (which carries the server's secret and TLS), handing requests to `server`
/// itself while it is the primary.
fn client_maker(server: &Arc<KvServer>, rpc: RpcClient) -> http_api::NewClient {
    let config = &server.config;
    let options = ClientOptions {
        deadline: Duration::from_secs(10),
        retry_interval: config.timings.ping_interval,
        rpc_timeout: config.rpc_timeout + config.confirm_timeout,
    };
    let monitors = config.monitors.clone();
    let local: Arc<dyn crate::client::LocalServer> = server.clone();
    Arc::new(move || {
        Client::with_rpc(rpc.clone(), monitors.clone(), options).with_local(local.clone())
    })
}

/// What the Redis-protocol connections of `server` share: client sessions, `AUTH` against the
/// secret, `INFO` from the status.
fn resp_context(
    server: &Arc<KvServer>,
    new_client: http_api::NewClient,
    tls: Option<TlsAcceptor>,
) -> crate::resp::Context {
    let status = server.clone();
    crate::resp::Context {
        new_client: Box::new(move || new_client()),
        secret: server.config.secret.clone(),
        status: Box::new(move || status.status()),
        cursors: crate::resp::Cursors::default(),
        tls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_value_is_refused_outside_what_a_record_holds() {
        let mut config = ServerConfig::new("127.0.0.1:1", Vec::new());
        for (max_value, ok) in [(0, false), (1, true), (data::MAX_RECORD / 2, true)] {
            config.limits.max_value = max_value;
            assert_eq!(config.validate().is_ok(), ok, "max_value {max_value}");
        }
        config.limits.max_value = data::MAX_RECORD / 2 + 1;
        let refused = config
            .validate()
            .expect_err("a max_value over half a record");
        assert!(refused.contains("max_value must be at most"), "{refused}");
    }
}
