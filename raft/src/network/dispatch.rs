//! The server side of Raft RPCs: [`dispatch`] a request body to the local [`Raft`].

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::Serialize;

use super::{decode, encode, RAFT_APPEND, RAFT_SNAPSHOT, RAFT_VOTE};
use crate::{NodeId, Raft, TypeConfig};

/// Why a request body could not be handed to Raft.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The path is not one of [`RAFT_APPEND`], [`RAFT_VOTE`], [`RAFT_SNAPSHOT`].
    #[error("no such raft rpc: {0}")]
    UnknownPath(String),
    /// The body is not a valid encoding of the request expected on that path.
    #[error("malformed raft request: {0}")]
    BadRequest(String),
}

/// Server side: decode a request arriving on `path`, hand it to `raft`, encode the answer.
///
/// The answer is the bincode encoding of whatever the `Raft` method returned, errors included,
/// so the caller sees remote Raft errors faithfully.
pub async fn dispatch(raft: &Raft, path: &str, body: &[u8]) -> Result<Vec<u8>, DispatchError> {
    dispatch_noting(raft, path, body, &|_| {}).await
}

/// [`dispatch`], telling `heard` the sender's id (the leader or candidate named in the
/// request's vote) when Raft accepted the request.
pub async fn dispatch_noting(
    raft: &Raft,
    path: &str,
    body: &[u8],
    heard: &(dyn Fn(NodeId) + Send + Sync),
) -> Result<Vec<u8>, DispatchError> {
    let note = |sender: Option<NodeId>, ok: bool| {
        if let (Some(sender), true) = (sender, ok) {
            heard(sender);
        }
    };
    match path {
        RAFT_APPEND => {
            let req: AppendEntriesRequest<TypeConfig> = decode_request(body)?;
            let sender = req.vote.leader_id().voted_for();
            let result = raft.append_entries(req).await;
            note(sender, result.is_ok());
            encode_response(&result)
        }
        RAFT_VOTE => {
            let req: VoteRequest<NodeId> = decode_request(body)?;
            let sender = req.vote.leader_id().voted_for();
            let result = raft.vote(req).await;
            note(sender, result.is_ok());
            encode_response(&result)
        }
        RAFT_SNAPSHOT => {
            let req: InstallSnapshotRequest<TypeConfig> = decode_request(body)?;
            let sender = req.vote.leader_id().voted_for();
            let result = raft.install_snapshot(req).await;
            note(sender, result.is_ok());
            encode_response(&result)
        }
        other => Err(DispatchError::UnknownPath(other.to_string())),
    }
}

/// Decodes a request body, mapping any failure to [`DispatchError::BadRequest`].
fn decode_request<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, DispatchError> {
    decode(body).map_err(|e| DispatchError::BadRequest(e.to_string()))
}

/// Encodes Raft's result as the response body.
///
/// Encoding openraft's derived types into a `Vec` cannot fail in practice (bincode only fails on
/// unsized sequences or custom serializer errors, neither of which they use). Should it ever
/// happen, it is reported as a [`DispatchError::BadRequest`] rather than with a third variant,
/// because servers match the two variants exhaustively to choose an HTTP status.
fn encode_response<T: Serialize>(result: &T) -> Result<Vec<u8>, DispatchError> {
    encode(result).map_err(|e| {
        tracing::error!("cannot encode raft response: {e}");
        DispatchError::BadRequest(format!("cannot encode the response: {e}"))
    })
}
