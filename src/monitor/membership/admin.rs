//! The leader's side of membership changes: list, add (learner, catch up, voter), remove.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;
use viewkv_raft::{Node, NodeId, Raft};

use super::{ChangeReply, Member, MemberChange, MembersReply, CHANGE_MEMBERS, MEMBERS};
use crate::monitor::heard::Heard;
use crate::monitor::lease::leader_hint;
use crate::net::{bad_request, bincode_reply, decode, not_found, HttpResponse, RpcClient};

/// How long a new learner may take to catch up before `add` gives up (it stays a learner).
pub const CATCH_UP: Duration = Duration::from_secs(30);

/// How long a remaining voter may take to answer before a removal is refused as unsafe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves the membership RPCs of one monitor.
pub struct Admin {
    /// This monitor's id.
    id: NodeId,
    /// The Raft node whose membership is changed.
    raft: Raft,
    /// The peers this monitor has heard from, reported to monitors starting empty.
    heard: Arc<Heard>,
    /// Probes the voters that would remain after a removal.
    rpc: RpcClient,
}

impl Admin {
    /// The admin side of monitor `id`.
    pub fn new(id: NodeId, raft: Raft, heard: Arc<Heard>, rpc: RpcClient) -> Admin {
        Admin {
            id,
            raft,
            heard,
            rpc,
        }
    }

    /// Record that peer `id` sent a Raft request that Raft accepted.
    pub fn note_heard(&self, id: NodeId) {
        self.heard.note(id);
    }

    /// Serve [`MEMBERS`] and [`CHANGE_MEMBERS`].
    pub async fn handle(&self, path: &str, body: &[u8]) -> HttpResponse {
        match path {
            MEMBERS => bincode_reply(&self.members()),
            CHANGE_MEMBERS => match decode::<MemberChange>(body) {
                Ok(change) => bincode_reply(&self.change(change).await),
                Err(err) => bad_request(err),
            },
            other => not_found(other),
        }
    }

    /// What this monitor knows of the group.
    pub fn members(&self) -> MembersReply {
        let metrics = self.raft.metrics().borrow().clone();
        let stored = metrics.membership_config.clone();
        let membership = stored.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let matched = |id: &NodeId| {
            let replication = metrics.replication.as_ref()?;
            match *id == self.id {
                true => metrics.last_log_index,
                false => replication.get(id).cloned().flatten().map(|log| log.index),
            }
        };
        MembersReply {
            id: self.id,
            initialized: stored.log_id().is_some() || !voters.is_empty(),
            leader: metrics.current_leader,
            membership_log: stored.log_id().map(|log| (log.leader_id.term, log.index)),
            members: membership
                .nodes()
                .map(|(id, node)| Member {
                    id: *id,
                    addr: node.addr.clone(),
                    voter: voters.contains(id),
                    matched: matched(id),
                })
                .collect(),
            joint: membership.get_joint_config().len() > 1,
            applied: metrics.last_applied.map(|log| log.index),
            heard: self.heard.ids(),
        }
    }

    /// Make `change` if this monitor leads.
    pub async fn change(&self, change: MemberChange) -> ChangeReply {
        if !self.raft.metrics().borrow().state.is_leader() {
            return self.not_leader();
        }
        let done = match change {
            MemberChange::Add { id, addr } => self.add(id, addr).await,
            MemberChange::Remove { id } => self.remove(id).await,
        };
        match done {
            Ok(()) => ChangeReply::Done(self.members()),
            Err(Failure::NotLeader) => self.not_leader(),
            Err(Failure::Refused(why)) => ChangeReply::Refused(why),
        }
    }

    fn not_leader(&self) -> ChangeReply {
        ChangeReply::NotLeader {
            hint: leader_hint(&self.raft)
                .filter(|(id, _)| *id != self.id)
                .map(|(_, addr)| addr),
        }
    }

    /// Add `id` as a learner (unless it is one), wait until it has caught up, make it a voter.
    async fn add(&self, id: NodeId, addr: String) -> Result<(), Failure> {
        let current = self.members();
        match current.members.iter().find(|m| m.id == id) {
            Some(m) if m.voter => {
                return Err(Failure::Refused(format!(
                    "monitor {id} is already a voter (at {})",
                    m.addr
                )))
            }
            Some(m) if m.addr != addr => {
                return Err(Failure::Refused(format!(
                    "monitor {id} is already a learner at {}; run `viewkv monitors remove {id}` \
                     first to add it at {addr}",
                    m.addr
                )))
            }
            Some(_) => {}
            None => {
                self.raft
                    .add_learner(id, Node { addr: addr.clone() }, false)
                    .await
                    .map_err(Failure::from)?;
                tracing::info!("monitor {id} at {addr} added as a learner");
            }
        }
        self.wait_caught_up(id, &addr).await?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(Failure::from)?;
        tracing::info!("monitor {id} at {addr} is a voter");
        Ok(())
    }

    /// Wait (at most [`CATCH_UP`]) until the leader has replicated its whole log to `id`.
    async fn wait_caught_up(&self, id: NodeId, addr: &str) -> Result<(), Failure> {
        let matched = |m: &openraft::RaftMetrics<NodeId, Node>| {
            let replication = m.replication.as_ref()?;
            replication.get(&id).cloned().flatten().map(|log| log.index)
        };
        let waited = self
            .raft
            .wait(Some(CATCH_UP))
            .metrics(
                |m| !m.state.is_leader() || matched(m).is_some_and(|i| Some(i) >= m.last_log_index),
                "the new learner to catch up",
            )
            .await;
        match waited {
            Ok(m) if m.state.is_leader() => Ok(()),
            Ok(_) => Err(Failure::NotLeader),
            Err(_) => Err(Failure::Refused(format!(
                "monitor {id} was added as a learner but did not catch up within {CATCH_UP:?}: \
                 is it running at {addr} with --join? Run `viewkv monitors add` again once it \
                 is, or `viewkv monitors remove {id}`"
            ))),
        }
    }

    /// Remove `id`: a voter through a joint configuration, a learner at once. Refused when the
    /// voters that would remain do not answer as a majority of themselves: the group would
    /// stop deciding (stuck in the joint configuration) until they came back.
    async fn remove(&self, id: NodeId) -> Result<(), Failure> {
        let current = self.members();
        let Some(member) = current.members.iter().find(|m| m.id == id) else {
            let ids: Vec<NodeId> = current.members.iter().map(|m| m.id).collect();
            return Err(Failure::Refused(format!(
                "monitor {id} is not a member (members: {ids:?})"
            )));
        };
        let changes = match member.voter {
            true => {
                let remaining: Vec<&Member> = current
                    .members
                    .iter()
                    .filter(|m| m.voter && m.id != id)
                    .collect();
                if remaining.is_empty() {
                    return Err(Failure::Refused(format!(
                        "monitor {id} is the last voter: a group needs at least one"
                    )));
                }
                self.check_quorum_answers(&remaining).await?;
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            }
            false => ChangeMembers::RemoveNodes(BTreeSet::from([id])),
        };
        self.raft
            .change_membership(changes, false)
            .await
            .map_err(Failure::from)?;
        tracing::info!("monitor {id} removed from the group");
        Ok(())
    }

    /// Refuse unless a majority of `voters` answers now.
    async fn check_quorum_answers(&self, voters: &[&Member]) -> Result<(), Failure> {
        let mut probes = tokio::task::JoinSet::new();
        for voter in voters {
            if voter.id == self.id {
                continue;
            }
            let (rpc, id, addr) = (self.rpc.clone(), voter.id, voter.addr.clone());
            probes.spawn(async move {
                let path = crate::monitor::api::STATUS;
                let answered = rpc
                    .call_raw(&addr, path, Vec::new(), PROBE_TIMEOUT)
                    .await
                    .is_ok();
                (id, answered)
            });
        }
        let mut answering: Vec<NodeId> = voters
            .iter()
            .map(|v| v.id)
            .filter(|id| *id == self.id)
            .collect();
        while let Some(probe) = probes.join_next().await {
            if let Ok((id, true)) = probe {
                answering.push(id);
            }
        }
        answering.sort_unstable();
        if answering.len() * 2 > voters.len() {
            return Ok(());
        }
        let ids: Vec<NodeId> = voters.iter().map(|v| v.id).collect();
        Err(Failure::Refused(format!(
            "the voters that would remain, {ids:?}, are not a working majority: only \
             {answering:?} answer. Removing now would stop the group; bring the others back \
             (or add new monitors) first"
        )))
    }
}

/// Why a change was not made.
enum Failure {
    /// Leadership moved during the change: the client asks the new leader.
    NotLeader,
    /// Anything else, for the operator.
    Refused(String),
}

impl From<RaftError<NodeId, ClientWriteError<NodeId, Node>>> for Failure {
    fn from(err: RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> Failure {
        match err {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Failure::NotLeader,
            RaftError::APIError(ClientWriteError::ChangeMembershipError(err)) => {
                Failure::Refused(format!("{err} (another change may be under way: retry)"))
            }
            RaftError::Fatal(err) => Failure::Refused(format!("raft stopped: {err}")),
        }
    }
}
