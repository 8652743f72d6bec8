//! Views: which kv server is primary and which is backup, and the pure rules that decide the
//! next view from pings and the passage of time (design.md "Views").
//!
//! Nothing here does I/O or reads a clock: time is an argument. The monitor feeds real pings and
//! `Instant::now()` into a [`Decider`]; the unit tests feed scripted ones and run in milliseconds.

mod decider;
mod table;
#[cfg(test)]
mod tests;

pub use decider::{Decider, Recovery, Timings};
pub use table::{Decision, ServerInfo, ViewTable};

use serde::{Deserialize, Serialize};

/// A kv server's stable name (by default its advertised address).
pub type ServerId = String;

/// Names one viewkv cluster: chosen at random by its monitor group's first decision, kept in its
/// Raft state, remembered by its kv servers and clients. 0: none yet.
pub type ClusterId = u64;

/// A kv server as a view names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// Stable name; survives restarts.
    pub id: ServerId,
    /// Where clients and the primary reach it.
    pub addr: String,
    /// Random number chosen at process start: a different one means the server restarted and
    /// lost its in-memory data, so it cannot keep a primary or backup role.
    pub incarnation: u64,
}

/// One view of the service. View 0 is the empty view (no primary).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// Increases by one with every change of primary or backup.
    pub num: u64,
    /// The only server that answers clients in this view.
    pub primary: Option<Member>,
    /// The server every operation is forwarded to before the primary answers.
    pub backup: Option<Member>,
    /// The primary has pinged with `num`: only then may the monitor move to `num + 1` (rule 3).
    pub acked: bool,
    /// The primary reported that the backup holds its full state: only then may the backup be
    /// promoted (rule 7).
    pub backup_ready: bool,
    /// An operator made this view (`viewkv recover --accept-data-loss`): its primary serves the
    /// state it holds, or — holding none — starts the service empty.
    pub recovered: bool,
}

impl View {
    /// Whether `id` holds a role (primary or backup) in this view.
    pub fn has_member(&self, id: &str) -> bool {
        self.primary.as_ref().is_some_and(|m| m.id == id) || self.is_backup(id)
    }

    /// Whether `id` is this view's primary.
    pub fn is_primary(&self, id: &str) -> bool {
        self.primary.as_ref().is_some_and(|m| m.id == id)
    }

    /// Whether `id` is this view's backup.
    pub fn is_backup(&self, id: &str) -> bool {
        self.backup.as_ref().is_some_and(|m| m.id == id)
    }
}

/// What a kv server tells the monitor every ping interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Who is pinging.
    pub id: ServerId,
    /// Where the server listens.
    pub addr: String,
    /// The server's incarnation (see [`Member::incarnation`]).
    pub incarnation: u64,
    /// The newest view number the server has seen; 0 if none. A primary pinging with the
    /// current number acknowledges that view.
    pub viewnum: u64,
    /// Sent by the primary of `viewnum`: that view's backup has installed the full state.
    pub backup_synced: bool,
    /// Sent by the primary of `viewnum`: it has failed to replicate to that view's backup for
    /// `dead_pings` intervals. The monitor replaces the backup (a transfer that can never
    /// succeed, or a link down between two servers the monitors both hear from, would
    /// otherwise stall the service forever).
    pub backup_failed: bool,
    /// The cluster whose views the server follows (0 until it has followed one): a monitor
    /// group of another cluster refuses its pings.
    pub cluster: ClusterId,
    /// Whether the server holds the service's state as of view `viewnum` (a primary, or a
    /// backup that installed its primary's state): what `viewkv recover` looks for.
    pub holds_state: bool,
}

impl View {
    /// One line for logs and the CLI: `7 primary=a backup=b (acked, backup ready)`.
    pub fn summary(&self) -> String {
        let name = |m: &Option<Member>| m.as_ref().map_or("-".to_string(), |m| m.id.clone());
        format!(
            "{} primary={} backup={}{}{}{}",
            self.num,
            name(&self.primary),
            name(&self.backup),
            if self.acked { " acked" } else { " unacked" },
            if self.backup.is_some() && !self.backup_ready {
                " backup-syncing"
            } else {
                ""
            },
            if self.recovered { " recovered" } else { "" }
        )
    }

    /// The view as JSON: `{"num", "primary", "backup", "acked", "backup_ready"}`, with server ids
    /// and null for an empty slot.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "num": self.num,
            "primary": self.primary.as_ref().map(|m| &m.id),
            "backup": self.backup.as_ref().map(|m| &m.id),
            "acked": self.acked,
            "backup_ready": self.backup_ready,
            "recovered": self.recovered,
        })
    }
}
