//! Changing the monitor group's membership through Raft (`viewkv monitors list/add/remove`).
//!
//! A new monitor joins as a learner, catches up, and only then becomes a voter; openraft moves
//! the group through a joint configuration for each change, so no two majorities can decide at
//! once. Only the leader changes membership; any other monitor answers `NotLeader` with a hint,
//! and [`MembersClient`] follows it. `join.rs` is the other half: the rules a monitor with an
//! empty data directory follows at start.

mod admin;
mod client;
pub(super) mod join;

pub use admin::Admin;
pub use client::{MembersClient, MembersError};

use serde::{Deserialize, Serialize};
use viewkv_raft::NodeId;

/// POST an empty body, get a [`MembersReply`]: the answering monitor's view of the group.
pub const MEMBERS: &str = "/monitor/members";
/// POST a [`MemberChange`], get a [`ChangeReply`] (the leader makes the change).
pub const CHANGE_MEMBERS: &str = "/monitor/members/change";

/// One member of the group, as a monitor's latest membership records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its Raft id.
    pub id: NodeId,
    /// Its advertised address.
    pub addr: String,
    /// A voter (counts towards quorums) or a learner (receives the log only).
    pub voter: bool,
    /// The last log index the leader knows it holds: known only in the leader's answer.
    pub matched: Option<u64>,
}

/// What one monitor knows of the group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersReply {
    /// The answering monitor's id.
    pub id: NodeId,
    /// Whether it holds any Raft state (a membership); an empty monitor knows of no group.
    pub initialized: bool,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// The (term, index) of the log entry holding its membership: the newest answer wins.
    pub membership_log: Option<(u64, u64)>,
    /// The members, by id.
    pub members: Vec<Member>,
    /// Whether its membership is a joint one (a change is half done).
    pub joint: bool,
    /// The last log index it has applied.
    pub applied: Option<u64>,
    /// The peers it has exchanged Raft messages with: they had Raft state then.
    pub heard: Vec<NodeId>,
}

impl MembersReply {
    /// Whether this answer comes from the leader itself.
    pub fn from_leader(&self) -> bool {
        self.leader == Some(self.id)
    }

    /// The voters' ids.
    pub fn voters(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.id)
            .collect()
    }
}

/// A change to the group's membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    /// Add monitor `id` at `addr`: a learner first, a voter once it has caught up.
    Add {
        /// The new member's id (not a voter yet).
        id: NodeId,
        /// Where it listens (it must be running with `--join`).
        addr: String,
    },
    /// Remove monitor `id` (a voter or a learner).
    Remove {
        /// The member to remove.
        id: NodeId,
    },
}

/// The answer to a [`MemberChange`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeReply {
    /// Committed: the group as the leader sees it afterwards.
    Done(MembersReply),
    /// This monitor does not lead; `hint` is the leader's address if it knows one.
    NotLeader {
        /// Where the leader is, if known.
        hint: Option<String>,
    },
    /// The change was not made, and why (the operator's next step included).
    Refused(String),
}
