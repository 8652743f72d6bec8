//! The monitor's RPCs as they travel on the wire.

use serde::{Deserialize, Serialize};

use crate::view::View;

/// POST a bincode [`crate::view::Ping`], get a [`PingReply`].
pub const PING: &str = "/monitor/ping";
/// POST an empty body, get a [`ViewReply`].
pub const VIEW: &str = "/monitor/view";
/// GET a JSON status document.
pub const STATUS: &str = "/status";

/// The answer to a ping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PingReply {
    /// The current committed view, after any decision the ping caused.
    View(View),
    /// This monitor is not a leader confirmed by a quorum; try `hint` (an address) if given.
    NotLeader {
        /// The leader this monitor believes in, if any.
        hint: Option<String>,
    },
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
}
