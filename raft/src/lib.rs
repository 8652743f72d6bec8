//! openraft plumbing for viewkv: the Raft type configuration, a durable log and snapshot store
//! on redb, and a network that carries Raft RPCs over any byte transport.
//!
//! The crate knows nothing about views or kv servers: the application's commands travel as
//! opaque bytes ([`Command`]) and its state machine lives in the main crate. That keeps this
//! crate reusable for several replica groups and keeps the dependency one-way (`viewkv` →
//! `viewkv-raft`).

use std::io::Cursor;

use serde::{Deserialize, Serialize};

pub mod network;
pub mod store;

pub use network::{
    dispatch, dispatch_noting, Network, OnHeard, Transport, TransportError, RAFT_APPEND,
    RAFT_SNAPSHOT, RAFT_VOTE,
};
pub use store::{LogStore, SnapshotStore, Store, StoreError};

/// A command for the application's state machine, encoded by the application.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command(pub Vec<u8>);

/// The state machine's answer to one applied [`Command`], encoded by the application.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandReply(pub Vec<u8>);

openraft::declare_raft_types!(
    /// The openraft type configuration shared by every viewkv Raft group.
    pub TypeConfig:
        D = Command,
        R = CommandReply,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Raft node ids: small integers given on the command line (`--id`).
pub type NodeId = u64;
/// A Raft node as the membership records it: its advertised address.
pub type Node = openraft::BasicNode;
/// The Raft handle of one node.
pub type Raft = openraft::Raft<TypeConfig>;
