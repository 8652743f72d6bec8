//! The "heard" hooks: `dispatch_noting` names the sender of a request Raft accepted, and a
//! `Network` built `on_heard` names every target that answered, and nobody else.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{addr, start_node, test_config, MemTransport};
use openraft::network::RPCOption;
use openraft::raft::VoteRequest;
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory, Vote};
use viewkv_raft::{dispatch_noting, Network, NodeId, OnHeard, Store, RAFT_VOTE};

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
}

/// A vote request from candidate `from`.
fn vote_from(from: NodeId) -> VoteRequest<NodeId> {
    VoteRequest {
        vote: Vote::new(1, from),
        last_log_id: None,
    }
}

/// A hook recording what it is told, and the record.
fn recorder() -> (OnHeard, Arc<Mutex<Vec<NodeId>>>) {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let record = heard.clone();
    (Arc::new(move |id| record.lock().unwrap().push(id)), heard)
}

#[tokio::test]
async fn the_sender_of_an_accepted_request_and_an_answering_target_are_heard() {
    let dir = tempfile::tempdir().unwrap();
    let transport = MemTransport::default();
    let node = start_node(
        1,
        Store::open(dir.path()).unwrap(),
        test_config(),
        &transport,
    )
    .await;

    let (hook, heard) = recorder();
    dispatch_noting(&node.raft, RAFT_VOTE, &encode(&vote_from(7)), &*hook)
        .await
        .unwrap();
    assert_eq!(*heard.lock().unwrap(), vec![7]);
    let refused = dispatch_noting(&node.raft, RAFT_VOTE, b"garbage", &*hook).await;
    assert!(refused.is_err());
    assert_eq!(
        *heard.lock().unwrap(),
        vec![7],
        "a malformed request names nobody"
    );

    let (hook, heard) = recorder();
    let mut network = Network::new(transport.clone()).on_heard(hook);
    let option = RPCOption::new(Duration::from_secs(10));
    let mut answering = network.new_client(1, &BasicNode::new(addr(1))).await;
    answering.vote(vote_from(8), option.clone()).await.unwrap();
    let mut missing = network.new_client(9, &BasicNode::new(addr(9))).await;
    assert!(missing.vote(vote_from(8), option).await.is_err());
    assert_eq!(
        *heard.lock().unwrap(),
        vec![1],
        "only the target that answered"
    );
}
