//! The monitor's RPCs as they travel on the wire.

use serde::{Deserialize, Serialize};

use crate::view::{ClusterId, ServerId, View};

/// POST a bincode [`crate::view::Ping`], get a [`PingReply`].
pub const PING: &str = "/monitor/ping";
/// POST an empty body, get a [`ViewReply`].
pub const VIEW: &str = "/monitor/view";
/// POST a bincode [`RecoverRequest`], get a [`RecoverReply`]: the operator's way out of a
/// stall (`viewkv recover`).
pub const RECOVER: &str = "/monitor/recover";
/// GET a JSON status document.
pub const STATUS: &str = "/status";

/// The answer to a ping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PingReply {
    /// The current committed view, after any decision the ping caused.
    View {
        /// The view.
        view: View,
        /// The cluster it belongs to.
        cluster: ClusterId,
    },
    /// The ping came from a server of another cluster: nothing was decided. A server holding
    /// no state forgets its cluster and pings again; one holding state waits for an operator.
    Foreign {
        /// This monitor group's cluster.
        cluster: ClusterId,
    },
    /// This monitor is not a leader confirmed by a quorum; try `hint` (an address) if given.
    NotLeader {
        /// The leader this monitor believes in, if any.
        hint: Option<String>,
    },
}

impl PingReply {
    /// The view, if the reply carries one.
    pub fn into_view(self) -> Option<View> {
        match self {
            PingReply::View { view, .. } => Some(view),
            PingReply::Foreign { .. } | PingReply::NotLeader { .. } => None,
        }
    }
}

/// The answer to "what is the view?", from the monitor's applied state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewReply {
    /// The view as this monitor applied it (may trail the leader's by a moment).
    pub view: View,
    /// The Raft leader this monitor knows of: (id, address).
    pub leader: Option<(u64, String)>,
    /// Whether the answering monitor is itself the leader, confirmed by a quorum: then the view
    /// is the newest there is. (An isolated old leader still believes it leads; it is not
    /// serving.)
    pub serving: bool,
    /// Why the service is stuck, if it is (known only to the leader).
    pub stalled: Option<String>,
    /// The cluster the view belongs to: a client that has followed another refuses it.
    pub cluster: ClusterId,
}

/// What an operator asks of `viewkv recover`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverRequest {
    /// Commit the recovery; without it the leader only says what it would do and lose.
    pub accept_data_loss: bool,
    /// The server to make primary (default: the live one holding the most recent state).
    pub primary: Option<ServerId>,
}

/// The leader's answer to a [`RecoverRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecoverReply {
    /// Committed: the new view, and what it meant.
    Done {
        /// The view the recovery made.
        view: View,
        /// What it did and lost.
        explanation: String,
    },
    /// Not committed (no `accept_data_loss`): what it would do and lose.
    Plan {
        /// In words.
        explanation: String,
    },
    /// No recovery is possible or needed now.
    Refused {
        /// Why.
        reason: String,
    },
    /// This monitor is not the confirmed leader; try `hint` if given.
    NotLeader {
        /// The leader this monitor believes in, if any.
        hint: Option<String>,
    },
}
