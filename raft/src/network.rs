//! Raft RPCs over an abstract byte transport.
//!
//! The client side ([`Network`], [`Connection`]) encodes each openraft request with bincode and
//! hands the bytes to a [`Transport`] (the application supplies one, e.g. HTTP with fault
//! injection). The server side ([`dispatch`]) decodes the request, runs it on the local
//! [`Raft`](crate::Raft) and encodes the answer.
//!
//! A response body is the bincode encoding of `Result<Resp, RaftError<NodeId, E>>`, exactly
//! what the local `Raft` method returned, so a remote Raft error reaches the caller intact and
//! becomes [`RPCError::RemoteError`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Node, NodeId, TypeConfig};

mod dispatch;

pub use dispatch::{dispatch, dispatch_noting, DispatchError};

/// Told the id of every peer that took part in a Raft exchange with this node: one that
/// answered our request, or sent us one that Raft accepted. The application keeps these ids (a
/// monitor remembers which peers have Raft state, to recognise one that lost it).
pub type OnHeard = Arc<dyn Fn(NodeId) + Send + Sync>;

/// Transport path of `AppendEntries` (also used for heartbeats).
pub const RAFT_APPEND: &str = "/raft/append";
/// Transport path of `RequestVote`.
pub const RAFT_VOTE: &str = "/raft/vote";
/// Transport path of one `InstallSnapshot` chunk.
pub const RAFT_SNAPSHOT: &str = "/raft/snapshot";

/// Why a [`Transport`] could not deliver a request or bring back its response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The node could not be reached at all (connection refused, no route, partitioned):
    /// openraft backs off before retrying.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// Any other failure (timeout, broken connection, error status, ...).
    #[error("{0}")]
    Failed(String),
}

/// Carries one request body to a node and returns the response body.
pub trait Transport: Clone + Send + Sync + 'static {
    /// Sends `body` to `path` on the node listening at `addr` and waits at most `timeout` for
    /// the response body.
    fn call(
        &self,
        addr: &str,
        path: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send;
}

/// openraft's network factory: makes a [`Connection`] per target node over one transport.
#[derive(Clone)]
pub struct Network<T> {
    /// The byte transport shared by every connection.
    transport: T,
    /// Told of every peer that answered one of our requests, if the application asked.
    heard: Option<OnHeard>,
}

impl<T: Transport> Network<T> {
    /// A network sending Raft RPCs through `transport`.
    pub fn new(transport: T) -> Self {
        Network {
            transport,
            heard: None,
        }
    }

    /// The same network, telling `heard` the id of every peer that answers a request.
    pub fn on_heard(mut self, heard: OnHeard) -> Self {
        self.heard = Some(heard);
        self
    }
}

impl<T: Transport> RaftNetworkFactory<TypeConfig> for Network<T> {
    type Network = Connection<T>;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Connection<T> {
        Connection {
            transport: self.transport.clone(),
            target,
            node: node.clone(),
            heard: self.heard.clone(),
        }
    }
}

/// The client end of Raft RPCs to one target node.
pub struct Connection<T> {
    /// The byte transport the requests travel on.
    transport: T,
    /// The target's node id, reported in [`RemoteError`]s.
    target: NodeId,
    /// The target as the membership records it; `node.addr` is where requests go.
    node: Node,
    /// Told when the target answers (see [`Network::on_heard`]).
    heard: Option<OnHeard>,
}

impl<T: Transport> Connection<T> {
    /// Sends one request to `path` and decodes the remote `Raft`'s result.
    async fn rpc<Req, Resp, E>(
        &self,
        path: &'static str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let reply = self
            .transport
            .call(&self.node.addr, path, body, option.hard_ttl())
            .await
            .map_err(|e| match e {
                TransportError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
                TransportError::Failed(_) => RPCError::Network(NetworkError::new(&e)),
            })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if let (Ok(_), Some(heard)) = (&result, &self.heard) {
            heard(self.target);
        }
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

/// How long to wait before retrying an unreachable peer. openraft's default, 500 ms, would
/// leave a monitor that restarts unreplicated for that long, and a lagging follower makes the
/// next election slower (its vote requests are refused and it backs off).
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(100);

impl<T: Transport> RaftNetwork<TypeConfig> for Connection<T> {
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.rpc(RAFT_APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc(RAFT_SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.rpc(RAFT_VOTE, &rpc, &option).await
    }
}

/// Failure to encode or decode a message body.
#[derive(Debug, thiserror::Error)]
enum WireError {
    /// The value could not be encoded.
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// The body is not a valid encoding (truncated, garbage, wrong message type).
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// A valid message followed by extra bytes: not a body we produced.
    #[error("{0} trailing bytes after message")]
    TrailingBytes(usize),
}

/// The most a decoder may allocate for one message: a corrupt or hostile length prefix must not
/// make a monitor try to allocate gigabytes (and abort).
const MAX_MESSAGE: usize = 64 << 20;

/// The wire configuration.
fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE>()
}

/// Encodes a message body.
fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

/// Decodes a whole message body; extra bytes are an error.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    let (value, read) = bincode::serde::decode_from_slice(body, config())?;
    if read != body.len() {
        return Err(WireError::TrailingBytes(body.len() - read));
    }
    Ok(value)
}
