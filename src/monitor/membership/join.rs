//! What a monitor with an empty data directory may do at start.
//!
//! On a group's first start every monitor is empty and initializes it with `--peers` (they
//! start together; some may answer before others are up). A monitor that is empty because its
//! disk was replaced or wiped must not do that, nor take part as the voter it was: it may have
//! voted in the current term, and it no longer holds entries it acknowledged. The rules:
//!
//! - Without `--join`, it asks its peers. If any remembers hearing from its id over Raft
//!   (`heard.rs`), or the newest membership they hold does not list it as a voter, it refuses to
//!   start, and says what to do. Otherwise (nobody answered, or it is a voter nobody heard
//!   from: a late first start) it initializes as before.
//! - With `--join`, it starts without initializing and waits for the leader to add it as a
//!   learner (`viewkv monitors add`). It refuses while the group still lists it as a voter
//!   (`viewkv monitors remove` comes first), and when no member answers at all.
//!
//! Limit: a replaced monitor whose every peer that heard from it is gone (or unreachable) is
//! let in as if new.

use std::time::Duration;

use tokio::task::JoinSet;
use viewkv_raft::NodeId;

use super::{MembersReply, MEMBERS};
use crate::monitor::{MonitorConfig, MonitorError};
use crate::net::RpcClient;

/// How long a peer may take to answer the question.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);

/// How an empty monitor goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Initialize the group with `--peers` (a first start).
    Initialize,
    /// Wait, uninitialized, to be added as a learner (`--join`).
    AwaitAdd,
}

/// Decide how monitor `config.id`, whose Raft state is empty, starts; `Err` names the
/// procedure to follow.
pub async fn empty_start(config: &MonitorConfig, rpc: &RpcClient) -> Result<Start, MonitorError> {
    let answers = ask_peers(config, rpc).await;
    let id = config.id;
    let addr = config.peers.get(&id).cloned().unwrap_or_default();
    let newest = answers
        .iter()
        .filter(|a| a.initialized)
        .max_by_key(|a| (a.from_leader(), a.membership_log));
    let is_voter = newest.map(|a| a.voters().contains(&id));
    let refuse = |why: String| Err(MonitorError::Membership(why));
    if config.join {
        return match is_voter {
            None => refuse(format!(
                "--join: no running monitor answered (asked {}); start this monitor once the \
                 group is up",
                peer_list(config)
            )),
            Some(true) => refuse(format!(
                "--join: monitor {id} is still a voter of the group (voters {:?}); a voter with \
                 an empty disk could vote again in a term it already voted in. On the live \
                 group run `viewkv monitors remove {id}`, then start this monitor with --join \
                 again, then `viewkv monitors add {id}={addr}`",
                newest.map(MembersReply::voters).unwrap_or_default()
            )),
            Some(false) => {
                tracing::info!(
                    "monitor {id} waits to be added: run `viewkv monitors add {id}={addr}`"
                );
                Ok(Start::AwaitAdd)
            }
        };
    }
    let heard_by: Vec<NodeId> = answers
        .iter()
        .filter(|a| a.heard.contains(&id))
        .map(|a| a.id)
        .collect();
    if !heard_by.is_empty() {
        return refuse(format!(
            "monitor {id} has an empty data directory ({}), but monitors {heard_by:?} \
             exchanged Raft messages with it before: its data was lost, and it must not \
             rejoin as the voter it was. To replace it: on the live group run `viewkv \
             monitors remove {id}`, start this monitor with --join (empty data directory), \
             then run `viewkv monitors add {id}={addr}`",
            config.data_dir.display()
        ));
    }
    if is_voter == Some(false) {
        return refuse(format!(
            "monitor {id} is not a voter of the running group (voters {:?}); to add it, start \
             it with --join and run `viewkv monitors add {id}={addr}`",
            newest.map(MembersReply::voters).unwrap_or_default()
        ));
    }
    Ok(Start::Initialize)
}

/// Every other peer's answer to [`MEMBERS`], asked at once; peers that do not answer are left
/// out.
async fn ask_peers(config: &MonitorConfig, rpc: &RpcClient) -> Vec<MembersReply> {
    let mut asks = JoinSet::new();
    for (id, addr) in &config.peers {
        if *id == config.id {
            continue;
        }
        let (rpc, addr) = (rpc.clone(), addr.clone());
        asks.spawn(async move {
            match rpc
                .call::<(), MembersReply>(&addr, MEMBERS, &(), ASK_TIMEOUT)
                .await
            {
                Ok(reply) => Some(reply),
                Err(err) => {
                    tracing::debug!("{addr} did not answer: {err}");
                    None
                }
            }
        });
    }
    let mut answers = Vec::new();
    while let Some(joined) = asks.join_next().await {
        if let Ok(Some(reply)) = joined {
            answers.push(reply);
        }
    }
    answers
}

/// The peers asked, for messages.
fn peer_list(config: &MonitorConfig) -> String {
    config
        .peers
        .iter()
        .filter(|(id, _)| **id != config.id)
        .map(|(id, addr)| format!("{id}={addr}"))
        .collect::<Vec<_>>()
        .join(", ")
}
