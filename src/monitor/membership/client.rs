//! The operator's side: list the members, and send changes to the leader.

use std::time::Duration;

use tokio::task::JoinSet;

use super::admin::CATCH_UP;
use super::{ChangeReply, MemberChange, MembersReply, CHANGE_MEMBERS, MEMBERS};
use crate::net::RpcClient;

/// Rounds of asking before a change gives up (leadership moving during a change).
const MAX_ROUNDS: usize = 10;

/// The pause between rounds: about an election.
const ELECTION_WAIT: Duration = Duration::from_millis(300);

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
    /// has caught up (at most 30 s). The leader the monitors name is asked first, then every
    /// monitor (any of them names the leader it knows), for a few rounds while an election
    /// settles.
    pub async fn change(&self, change: MemberChange) -> Result<MembersReply, MembersError> {
        let timeout = self.timeout + CATCH_UP * 2;
        let mut first =
            self.list()
                .await
                .ok()
                .and_then(|(addr, listed)| match listed.from_leader() {
                    true => Some(addr),
                    false => leader_addr(&listed),
                });
        let mut last = String::from("no monitors given");
        for _ in 0..MAX_ROUNDS {
            let targets: Vec<String> = first
                .take()
                .into_iter()
                .chain(self.monitors.clone())
                .collect();
            for target in targets {
                let reply = self
                    .rpc
                    .call::<MemberChange, ChangeReply>(&target, CHANGE_MEMBERS, &change, timeout)
                    .await;
                match reply {
                    Ok(ChangeReply::Done(members)) => return Ok(members),
                    Ok(ChangeReply::Refused(why)) => return Err(MembersError::Refused(why)),
                    Ok(ChangeReply::NotLeader { hint }) => {
                        last = format!("{target} is not the leader");
                        if hint.is_some() {
                            first = hint;
                            break;
                        }
                    }
                    Err(err) => last = err.to_string(),
                }
            }
            tokio::time::sleep(ELECTION_WAIT).await;
        }
        Err(MembersError::Unavailable(format!(
            "no leader took the change (tried {}): {last}; is a majority of the group up?",
            self.monitors.join(", ")
        )))
    }
}

/// The leader's address according to `listed`.
fn leader_addr(listed: &MembersReply) -> Option<String> {
    let leader = listed.leader?;
    let member = listed.members.iter().find(|m| m.id == leader)?;
    Some(member.addr.clone())
}
