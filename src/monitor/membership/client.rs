//! The operator's side: list the members, and send changes to the leader.

use std::time::Duration;

use tokio::task::JoinSet;

use super::admin::CATCH_UP;
use super::{ChangeReply, MemberChange, MembersReply, CHANGE_MEMBERS, MEMBERS};
use crate::net::RpcClient;

/// Leader hints followed before a change gives up (leadership moving during a change).
const MAX_HOPS: usize = 5;

/// Why a membership command failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MembersError {
    /// No monitor answered, or none knew of a leader.
    #[error("{0}")]
    Unavailable(String),
    /// The leader refused the change.
    #[error("refused: {0}")]
    Refused(String),
}

/// Talks to the monitors about their membership.
#[derive(Clone, Debug)]
pub struct MembersClient {
    /// Sends the RPCs (with the cluster secret).
    rpc: RpcClient,
    /// The monitors to ask (any of them will do: they point at the leader).
    monitors: Vec<String>,
    /// How long one monitor may take to answer a list request.
    timeout: Duration,
}

impl MembersClient {
    /// A client for the monitors at `monitors`.
    pub fn new(rpc: RpcClient, monitors: Vec<String>, timeout: Duration) -> MembersClient {
        MembersClient {
            rpc,
            monitors,
            timeout,
        }
    }

    /// The group as the leader sees it (replication progress included), else as the monitor
    /// with the newest membership sees it; with the address it came from.
    pub async fn list(&self) -> Result<(String, MembersReply), MembersError> {
        let mut asks = JoinSet::new();
        for addr in &self.monitors {
            let (rpc, addr, timeout) = (self.rpc.clone(), addr.clone(), self.timeout);
            asks.spawn(async move {
                let reply = rpc
                    .call::<(), MembersReply>(&addr, MEMBERS, &(), timeout)
                    .await;
                (addr, reply)
            });
        }
        let mut best: Option<(String, MembersReply)> = None;
        let mut last = String::from("no monitors given");
        while let Some(joined) = asks.join_next().await {
            let Ok((addr, reply)) = joined else {
                continue;
            };
            match reply {
                Ok(reply) if reply.from_leader() => return Ok((addr, reply)),
                Ok(reply) => {
                    let newer = |b: &(String, MembersReply)| {
                        (reply.initialized, reply.membership_log)
                            > (b.1.initialized, b.1.membership_log)
                    };
                    if best.as_ref().is_none_or(newer) {
                        best = Some((addr, reply));
                    }
                }
                Err(err) => last = err.to_string(),
            }
        }
        best.ok_or_else(|| {
            MembersError::Unavailable(format!(
                "no monitor answered (tried {}): {last}",
                self.monitors.join(", ")
            ))
        })
    }

    /// Make `change` on the leader; the group afterwards. An `Add` waits until the new monitor
    /// has caught up (at most 30 s).
    pub async fn change(&self, change: MemberChange) -> Result<MembersReply, MembersError> {
        let (addr, listed) = self.list().await?;
        let mut target = match listed.from_leader() {
            true => addr,
            false => self.leader_addr(&listed)?,
        };
        let timeout = self.timeout + CATCH_UP * 2;
        for _ in 0..MAX_HOPS {
            let reply = self
                .rpc
                .call::<MemberChange, ChangeReply>(&target, CHANGE_MEMBERS, &change, timeout)
                .await
                .map_err(|err| MembersError::Unavailable(err.to_string()))?;
            match reply {
                ChangeReply::Done(members) => return Ok(members),
                ChangeReply::Refused(why) => return Err(MembersError::Refused(why)),
                ChangeReply::NotLeader { hint: Some(hint) } => target = hint,
                ChangeReply::NotLeader { hint: None } => {
                    let (_, listed) = self.list().await?;
                    target = self.leader_addr(&listed)?;
                }
            }
        }
        Err(MembersError::Unavailable(format!(
            "the leader moved {MAX_HOPS} times during the change; try again"
        )))
    }

    /// The leader's address according to `listed`.
    fn leader_addr(&self, listed: &MembersReply) -> Result<String, MembersError> {
        listed
            .leader
            .and_then(|leader| listed.members.iter().find(|m| m.id == leader))
            .map(|m| m.addr.clone())
            .ok_or_else(|| {
                MembersError::Unavailable(format!(
                    "no monitor knows of a leader (asked {}): is a majority of the group up?",
                    self.monitors.join(", ")
                ))
            })
    }
}
