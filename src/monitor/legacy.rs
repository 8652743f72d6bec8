//! The layouts format versions 0 and 1 wrote (before cluster ids and operator recoveries),
//! kept so a newer monitor reads an older one's log and snapshots, converted on the way in.

use std::collections::BTreeMap;

use openraft::{LogId, StoredMembership};
use serde::Deserialize;
use viewkv_raft::{Node, NodeId};

use super::state_machine::Applied;
use crate::view::{Decision, Member, ServerId, ServerInfo, View, ViewTable};

/// A view as versions 0 and 1 wrote it: no `recovered` flag.
#[derive(Deserialize)]
pub struct ViewV1 {
    /// See [`View::num`].
    num: u64,
    /// See [`View::primary`].
    primary: Option<Member>,
    /// See [`View::backup`].
    backup: Option<Member>,
    /// See [`View::acked`].
    acked: bool,
    /// See [`View::backup_ready`].
    backup_ready: bool,
}

impl From<ViewV1> for View {
    fn from(v: ViewV1) -> View {
        View {
            num: v.num,
            primary: v.primary,
            backup: v.backup,
            acked: v.acked,
            backup_ready: v.backup_ready,
            recovered: false,
        }
    }
}

/// A decision as versions 0 and 1 wrote it: no `Form` or `Recover`.
#[derive(Deserialize)]
pub enum DecisionV1 {
    /// See [`Decision::Register`].
    Register {
        /// The server.
        id: ServerId,
        /// Its address and incarnation.
        info: ServerInfo,
    },
    /// See [`Decision::Forget`].
    Forget {
        /// The server.
        id: ServerId,
    },
    /// See [`Decision::Change`].
    Change {
        /// The view it was computed from.
        prev: ViewV1,
        /// The view replacing it.
        next: ViewV1,
    },
}

impl From<DecisionV1> for Decision {
    fn from(d: DecisionV1) -> Decision {
        match d {
            DecisionV1::Register { id, info } => Decision::Register { id, info },
            DecisionV1::Forget { id } => Decision::Forget { id },
            DecisionV1::Change { prev, next } => Decision::Change {
                prev: prev.into(),
                next: next.into(),
            },
        }
    }
}

/// A view table as versions 0 and 1 wrote it: no cluster id (the group forms one on its next
/// leader's first decision).
#[derive(Deserialize)]
pub struct ViewTableV1 {
    /// See [`ViewTable::view`].
    view: ViewV1,
    /// See [`ViewTable::servers`].
    servers: BTreeMap<ServerId, ServerInfo>,
}

/// A snapshot as versions 0 and 1 wrote it.
#[derive(Deserialize)]
pub struct AppliedV1 {
    /// See [`Applied::last_applied`].
    last_applied: Option<LogId<NodeId>>,
    /// See [`Applied::membership`].
    membership: StoredMembership<NodeId, Node>,
    /// The table.
    table: ViewTableV1,
}

impl From<AppliedV1> for Applied {
    fn from(a: AppliedV1) -> Applied {
        Applied {
            last_applied: a.last_applied,
            membership: a.membership,
            table: ViewTable {
                cluster: 0,
                view: a.table.view.into(),
                servers: a.table.servers,
            },
        }
    }
}
