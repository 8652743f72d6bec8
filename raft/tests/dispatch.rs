//! The RPC layer end to end on one node: `dispatch` rejects bad input, and `Connection` maps
//! remote errors and transport failures to the right `RPCError`.

mod common;

use std::time::Duration;

use common::{addr, start_node, test_config, MemTransport};
use openraft::error::{Fatal, RPCError, RaftError};
use openraft::network::RPCOption;
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory, Vote};
use viewkv_raft::network::DispatchError;
use viewkv_raft::{
    dispatch, Network, NodeId, Store, Transport, TransportError, RAFT_APPEND, RAFT_SNAPSHOT,
    RAFT_VOTE,
};

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
}

fn vote_request() -> VoteRequest<NodeId> {
    VoteRequest {
        vote: Vote::new(1, 2),
        last_log_id: None,
    }
}

fn option() -> RPCOption {
    RPCOption::new(Duration::from_secs(10))
}

#[tokio::test]
async fn dispatch_rejects_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let transport = MemTransport::default();
    let node = start_node(
        1,
        Store::open(dir.path()).unwrap(),
        test_config(),
        &transport,
    )
    .await;
    let raft = &node.raft;

    let err = dispatch(raft, "/raft/nope", &encode(&vote_request())).await;
    assert!(
        matches!(&err, Err(DispatchError::UnknownPath(p)) if p == "/raft/nope"),
        "{err:?}"
    );

    let valid = encode(&vote_request());
    let truncated = &valid[..valid.len() - 1];
    let mut trailing = valid.clone();
    trailing.push(0);
    let garbage = vec![0xff; 64];
    for path in [RAFT_APPEND, RAFT_VOTE, RAFT_SNAPSHOT] {
        for body in [&[][..], truncated, &garbage] {
            let res = dispatch(raft, path, body).await;
            assert!(
                matches!(res, Err(DispatchError::BadRequest(_))),
                "{path} {body:?}: {res:?}"
            );
        }
    }
    let res = dispatch(raft, RAFT_VOTE, &trailing).await;
    assert!(matches!(res, Err(DispatchError::BadRequest(_))), "{res:?}");

    // The well-formed request gets an encoded `Result` back.
    let reply = dispatch(raft, RAFT_VOTE, &valid).await.unwrap();
    let (res, _): (Result<VoteResponse<NodeId>, RaftError<NodeId>>, usize) =
        bincode::serde::decode_from_slice(&reply, bincode::config::standard()).unwrap();
    assert!(res.is_ok(), "{res:?}");
}

#[tokio::test]
async fn connection_maps_errors() {
    let dir = tempfile::tempdir().unwrap();
    let transport = MemTransport::default();
    let node = start_node(
        1,
        Store::open(dir.path()).unwrap(),
        test_config(),
        &transport,
    )
    .await;
    let mut network = Network::new(transport.clone());

    let mut conn = network.new_client(1, &BasicNode::new(addr(1))).await;
    let resp = conn.vote(vote_request(), option()).await.unwrap();
    assert_eq!(resp.vote, Vote::new(1, 2));

    let mut missing = network.new_client(9, &BasicNode::new(addr(9))).await;
    let err = missing.vote(vote_request(), option()).await.unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");

    // A Raft error on the remote node comes back as that very error.
    node.raft.shutdown().await.unwrap();
    let err = conn.vote(vote_request(), option()).await.unwrap_err();
    match err {
        RPCError::RemoteError(remote) => {
            assert_eq!(remote.target, 1);
            assert_eq!(remote.target_node, Some(BasicNode::new(addr(1))));
            assert!(
                matches!(remote.source, RaftError::Fatal(Fatal::Stopped)),
                "{:?}",
                remote.source
            );
        }
        other => panic!("expected a remote error, got {other:?}"),
    }

    let mut garbage = Network::new(Garbage)
        .new_client(1, &BasicNode::new("x"))
        .await;
    let err = garbage.vote(vote_request(), option()).await.unwrap_err();
    assert!(matches!(err, RPCError::Network(_)), "{err:?}");

    let mut failing = Network::new(Failing)
        .new_client(1, &BasicNode::new("x"))
        .await;
    let err = failing.vote(vote_request(), option()).await.unwrap_err();
    assert!(matches!(err, RPCError::Network(_)), "{err:?}");
}

/// A transport whose peer answers with bytes that are not a response.
#[derive(Clone)]
struct Garbage;

impl Transport for Garbage {
    async fn call(
        &self,
        _addr: &str,
        _path: &'static str,
        _body: Vec<u8>,
        _timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        Ok(vec![7; 3])
    }
}

/// A transport that reaches the peer but fails (e.g. an HTTP 500).
#[derive(Clone)]
struct Failing;

impl Transport for Failing {
    async fn call(
        &self,
        _addr: &str,
        _path: &'static str,
        _body: Vec<u8>,
        _timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        Err(TransportError::Failed("status 500".to_string()))
    }
}
