//! The replicated part of the monitor's state and the decisions that change it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ClusterId, Member, ServerId, View};

/// A registered kv server: enough to put it into a view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Where it listens.
    pub addr: String,
    /// The incarnation it last pinged with.
    pub incarnation: u64,
}

/// A decision of the monitor leader: the only thing written to the Raft log (pings are not).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// A server pinged for the first time, or with a new address or incarnation.
    Register {
        /// The server's name.
        id: ServerId,
        /// What the registry should now say about it.
        info: ServerInfo,
    },
    /// An idle server stopped pinging: drop it so the registry stays bounded.
    Forget {
        /// The server's name.
        id: ServerId,
    },
    /// The group's first decision: the cluster id it will be known by.
    Form {
        /// A random id.
        cluster: ClusterId,
    },
    /// An operator's recovery (`viewkv recover --accept-data-loss`), if the view is still
    /// `prev`: the cluster id becomes `cluster` (the surviving servers' own, when the monitors
    /// lost their state) and the view `next`.
    Recover {
        /// The view the recovery was planned from.
        prev: View,
        /// The cluster id from now on.
        cluster: ClusterId,
        /// The view that replaces it (marked `recovered`).
        next: View,
    },
    /// Replace the view, but only if it is still `prev`. Comparing first makes a decision taken
    /// by a deposed leader on stale state harmless: it is applied as a no-op.
    Change {
        /// The view the decision was computed from.
        prev: View,
        /// The view that replaces it.
        next: View,
    },
}

/// The monitor's replicated state: the current view and the registry of known servers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewTable {
    /// The cluster id (0 until the group's first decision).
    pub cluster: ClusterId,
    /// The current view.
    pub view: View,
    /// Every server the monitor knows of (id → address, incarnation). A new leader gives each
    /// of them a grace period before declaring it dead.
    pub servers: BTreeMap<ServerId, ServerInfo>,
}

impl ViewTable {
    /// Apply one committed decision. Returns whether it changed anything.
    pub fn apply(&mut self, decision: &Decision) -> bool {
        match decision {
            Decision::Register { id, info } => {
                self.servers.insert(id.clone(), info.clone()).as_ref() != Some(info)
            }
            Decision::Forget { id } => {
                !self.view.has_member(id) && self.servers.remove(id).is_some()
            }
            Decision::Form { cluster } => {
                let formed = self.cluster == 0;
                if formed {
                    self.cluster = *cluster;
                }
                formed
            }
            Decision::Recover {
                prev,
                cluster,
                next,
            } => {
                let applies = &self.view == prev;
                if applies {
                    self.cluster = *cluster;
                    self.view = next.clone();
                }
                applies
            }
            Decision::Change { prev, next } => {
                if &self.view == prev && next != prev {
                    self.view = next.clone();
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Whether `ping` comes from a server of another cluster than this table's.
    pub fn is_foreign(&self, ping: &super::Ping) -> bool {
        ping.cluster != 0 && ping.cluster != self.cluster
    }

    /// The registered server `id` as a view member.
    pub fn member(&self, id: &str) -> Option<Member> {
        self.servers.get(id).map(|info| Member {
            id: id.to_string(),
            addr: info.addr.clone(),
            incarnation: info.incarnation,
        })
    }
}
