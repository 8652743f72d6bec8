//! The kv server's rules as a pure state machine: views, client requests, forwards, transfer
//! chunks and replies from the backup go in, with the time as an argument; replies and effects
//! (start or stop the replication task, ping now) come out. Nothing here does I/O, reads a
//! clock or spawns a task: the shell in `server.rs` and `replication.rs` does that, and the
//! unit tests in `tests.rs` drive every rule in milliseconds.

mod backup;
mod primary;
#[cfg(test)]
mod tests;
mod unconfirmed;

use std::time::Instant;

pub use primary::{DumpSnapshot, NextStep, Stop, Submit};

use super::store::{Limits, Store};
use crate::net::Gauge;
use crate::view::{ClusterId, Member, Ping, Timings, View};
use backup::Staging;
use unconfirmed::Unconfirmed;

/// What a server is configured with (its own settings; the service's limits come with the
/// state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Ping interval and dead pings: replication that makes no progress for `dead_pings`
    /// intervals is reported as failed.
    pub timings: Timings,
    /// The limits this server was started with; they govern a service it starts (as the first
    /// primary), and are compared with the service's when it receives the state.
    pub limits: Limits,
    /// Servers that must hold a write before the primary acknowledges it (1 or 2).
    pub min_copies: u32,
    /// Most key and value bytes in one transfer chunk.
    pub chunk_bytes: usize,
    /// Whether the primary answers reads alone while it holds a read lease
    /// ([`Timings::read_lease`]) instead of entering them in the stream to the backup.
    pub read_lease: bool,
}

/// What the shell must do after an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Start the replication task of this view (replacing any other): we are its primary and
    /// it has a backup.
    Replicate(View),
    /// Stop the replication task, if one runs.
    StopReplication,
    /// Ping the monitors now (a sender knows a newer view, or the backup just got in sync).
    PingNow,
}

/// What client requests wait on: how far writes are confirmed, and whether we still serve.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Every entry up to this index holds `min_copies` copies (or needs no more).
    pub confirmed: u64,
    /// Bumped whenever this server stops being a serving primary: waiters then give up.
    pub epoch: u64,
}

/// The role this server has in the newest view it knows.
#[derive(Debug)]
pub enum Role {
    /// Not in the view: holds nothing.
    Idle,
    /// The view's backup.
    Backup(BackupRole),
    /// The view's primary.
    Primary(PrimaryRole),
}

/// The backup's own state.
#[derive(Debug, Default)]
pub struct BackupRole {
    /// Whether this view's primary has transferred its state to us: forwards wait until then.
    installed: bool,
    /// A transfer being received.
    staging: Option<Staging>,
}

/// The primary's own state.
#[derive(Debug)]
pub struct PrimaryRole {
    /// Entries applied here that the backup has not confirmed yet, in index order.
    unconfirmed: Unconfirmed,
    /// Whether the backup has installed our full state in this view (reported in pings; from
    /// then on the monitors may promote it, so reads need its confirmation too).
    synced: bool,
    /// The highest index the backup has confirmed in this view.
    backup_applied: u64,
    /// The backup refused us: our view is out of date, so we do not serve in it.
    fenced: bool,
    /// The service clock that time-stamps entries.
    clock: ServiceClock,
    /// The first view of this time as primary (views after it kept us primary): requests sent
    /// in an older view are refused (see `on_request`).
    since: u64,
    /// Since when replication has had a message outstanding or failing without any accepted
    /// reply: the backup is reported failed once that lasts `dead_pings` intervals. Progress
    /// (any chunk or batch accepted) clears it, so a long transfer is never a failure.
    stalled_since: Option<Instant>,
    /// Until when no other server can have been made primary, so reads may be answered from
    /// our state alone: a ping reply naming us primary of this view, plus the read lease,
    /// counted from when that ping was sent. `None`: no lease (or leases are off).
    lease_until: Option<Instant>,
}

/// The service clock as this server advances it while primary: the replicated clock it took
/// over, plus time on its own monotonic clock since then.
#[derive(Clone, Copy, Debug)]
pub struct ServiceClock {
    /// When we took the clock over.
    since: Instant,
    /// Its reading then.
    base_ms: u64,
}

impl ServiceClock {
    /// The reading at `now`.
    pub fn now_ms(&self, now: Instant) -> u64 {
        self.base_ms + now.saturating_duration_since(self.since).as_millis() as u64
    }
}

/// One kv server's state and rules.
#[derive(Debug)]
pub struct Replica {
    /// This server as views name it.
    me: Member,
    /// Its configuration.
    settings: Settings,
    /// The newest view it has seen.
    view: View,
    /// Its role in that view.
    role: Role,
    /// The data and duplicate table.
    store: Store,
    /// How many entries the store reflects, in the primary's order.
    index: u64,
    /// Whether the store is the service's state: set by being the first primary or by
    /// installing a transfer. A server without it never serves as primary.
    holds_state: bool,
    /// What waiting client requests watch.
    progress: Progress,
    /// The cluster whose views we follow: the first one answering us, then only it (0 until
    /// then).
    cluster: ClusterId,
}

impl Replica {
    /// An idle, empty server.
    pub fn new(me: Member, settings: Settings) -> Replica {
        Replica {
            me,
            settings,
            view: View::default(),
            role: Role::Idle,
            store: Store::new(settings.limits),
            index: 0,
            holds_state: false,
            progress: Progress::default(),
            cluster: 0,
        }
    }

    /// This server as a view member.
    pub fn me(&self) -> &Member {
        &self.me
    }

    /// The newest view seen.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// The role in it.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Entries reflected in the store.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// What waiting requests watch.
    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The cluster we follow (0: none yet).
    pub fn cluster(&self) -> ClusterId {
        self.cluster
    }

    /// A ping sent at `sent`, answered by the monitors of `cluster` with `view` at `now`:
    /// followed if it is our cluster (or we have none yet), else ignored. A reply naming us
    /// primary of the view we then follow renews our read lease from `sent`.
    pub fn on_ping_reply(
        &mut self,
        cluster: ClusterId,
        view: View,
        sent: Instant,
        now: Instant,
    ) -> Vec<Effect> {
        if self.cluster == 0 {
            self.cluster = cluster;
        }
        if cluster != self.cluster {
            tracing::error!(
                "{}: monitors of cluster {cluster:x} answered, but this server follows cluster {:x}; \
                 ignoring their view",
                self.me.id,
                self.cluster
            );
            return Vec::new();
        }
        let names_us = view.num >= self.view.num && view.primary.as_ref() == Some(&self.me);
        let effects = self.on_view(view, now);
        let lease = self
            .settings
            .read_lease
            .then(|| sent + self.settings.timings.read_lease());
        if let (true, Role::Primary(p)) = (names_us, &mut self.role) {
            p.lease_until = lease.max(p.lease_until);
        }
        effects
    }

    /// The monitors (of cluster `theirs`) refused our ping as another cluster's. A server that
    /// holds no state forgets its cluster, so its next ping joins theirs; one that holds the
    /// state keeps it for an operator's `viewkv recover`.
    pub fn on_foreign(&mut self, theirs: ClusterId) -> Vec<Effect> {
        if self.holds_state {
            tracing::error!(
                "{}: the monitors are of cluster {theirs:x}, not {:x}, whose state this server \
                 holds (view {}); waiting for `viewkv recover`",
                self.me.id,
                self.cluster,
                self.view.num
            );
        } else {
            tracing::warn!(
                "{}: the monitors are of cluster {theirs:x}; holding no state, this server \
                 joins it",
                self.me.id
            );
            self.cluster = 0;
            self.view = View::default();
            self.store = Store::new(self.settings.limits);
            self.index = 0;
            self.progress.confirmed = 0;
            self.progress.epoch += 1;
            self.role = Role::Idle;
            return vec![Effect::StopReplication];
        }
        Vec::new()
    }

    /// Adopt a view from the monitors at `now` and take the role it gives.
    pub fn on_view(&mut self, view: View, now: Instant) -> Vec<Effect> {
        if view.num < self.view.num {
            return Vec::new();
        }
        if view.num == self.view.num {
            // Same view; only its flags (acked, backup_ready) can differ.
            self.view = view;
            return Vec::new();
        }
        tracing::info!("{}: view {}", self.me.id, view.summary());
        let was_primary = matches!(self.role, Role::Primary(_));
        self.view = view.clone();
        if view.primary.as_ref() == Some(&self.me) {
            if (view.num == 1 || view.recovered) && !self.holds_state {
                // The first primary starts the service: an empty state under our limits. So
                // does the primary an operator recovered with no state to keep.
                if view.recovered {
                    tracing::warn!(
                        "{}: recovered by an operator as primary of view {} holding no state: \
                         the service starts empty",
                        self.me.id,
                        view.num
                    );
                }
                self.store = Store::new(self.settings.limits);
                self.index = 0;
                self.holds_state = true;
            }
            if !self.holds_state {
                tracing::error!(
                    "{}: made primary of view {} without holding the state; refusing to serve",
                    self.me.id,
                    view.num
                );
            }
            if !was_primary {
                // Nothing we applied before is awaited by a client of ours.
                self.progress.confirmed = self.index;
            }
            let (clock, since) = match &self.role {
                Role::Primary(p) => (p.clock, p.since),
                _ => {
                    let clock = ServiceClock {
                        since: now,
                        base_ms: self.store.clock_ms(),
                    };
                    (clock, view.num)
                }
            };
            self.role = Role::Primary(PrimaryRole {
                unconfirmed: Unconfirmed::default(),
                synced: false,
                backup_applied: 0,
                fenced: false,
                clock,
                since,
                stalled_since: None,
                lease_until: None,
            });
            self.settle_unreplicated();
            return match view.backup {
                Some(_) => vec![Effect::Replicate(view)],
                None => vec![Effect::StopReplication],
            };
        }
        // Requests waiting for confirmation will never get it from us.
        self.progress.epoch += 1;
        if view.backup.as_ref() == Some(&self.me) {
            // A new view as backup: our state counts only once its primary transferred it.
            self.holds_state = false;
            self.role = Role::Backup(BackupRole::default());
        } else {
            // Idle: whatever we held is no longer the service's state.
            self.store = Store::new(self.settings.limits);
            self.index = 0;
            self.holds_state = false;
            self.progress.confirmed = 0;
            self.role = Role::Idle;
        }
        vec![Effect::StopReplication]
    }

    /// What to tell the monitors at `now`.
    pub fn ping(&self, now: Instant) -> Ping {
        let (synced, failed) = match &self.role {
            Role::Primary(p) => (
                p.synced,
                p.stalled_since.is_some_and(|since| {
                    now.saturating_duration_since(since) > self.settings.timings.dead_after()
                }),
            ),
            _ => (false, false),
        };
        Ping {
            id: self.me.id.clone(),
            addr: self.me.addr.clone(),
            incarnation: self.me.incarnation,
            viewnum: self.view.num,
            backup_synced: synced,
            backup_failed: failed,
            cluster: self.cluster,
            holds_state: self.holds_state,
        }
    }

    /// The gauges `/metrics` reports: the role, the state, replication and transfer progress.
    pub fn gauges(&self) -> Vec<Gauge> {
        let (primary, backup) = match &self.role {
            Role::Idle => (0.0, 0.0),
            Role::Backup(_) => (0.0, 1.0),
            Role::Primary(_) => (1.0, 0.0),
        };
        let (synced, unconfirmed, unconfirmed_bytes) = match &self.role {
            Role::Primary(p) => (p.synced, p.unconfirmed.len(), p.unconfirmed.bytes()),
            _ => (false, 0, 0),
        };
        let (received, total, received_bytes) = match &self.role {
            Role::Backup(BackupRole {
                staging: Some(s), ..
            }) => s.received(),
            _ => (0, 0, 0),
        };
        let count = |n: usize| n as f64;
        vec![
            Gauge::new(
                "viewkv_view_number",
                "The view this server follows.",
                self.view.num as f64,
            ),
            Gauge::new(
                "viewkv_kv_primary",
                "1 if this server is the primary.",
                primary,
            ),
            Gauge::new(
                "viewkv_kv_backup",
                "1 if this server is the backup.",
                backup,
            ),
            Gauge::new(
                "viewkv_kv_keys",
                "Keys in the store.",
                count(self.store.data().len()),
            ),
            Gauge::new(
                "viewkv_kv_bytes",
                "Key and value bytes in the store.",
                count(self.store.data().bytes()),
            ),
            Gauge::new(
                "viewkv_kv_sessions",
                "Client sessions in the duplicate table.",
                count(self.store.sessions().len()),
            ),
            Gauge::new("viewkv_kv_index", "Entries applied.", self.index as f64),
            Gauge::new(
                "viewkv_kv_confirmed_index",
                "Entries held by min_copies servers.",
                self.progress.confirmed as f64,
            ),
            Gauge::new(
                "viewkv_kv_unconfirmed_entries",
                "Entries the backup has not yet confirmed (replication lag).",
                count(unconfirmed),
            ),
            Gauge::new(
                "viewkv_kv_unconfirmed_bytes",
                "Key and value bytes of the entries the backup has not yet confirmed.",
                count(unconfirmed_bytes),
            ),
            Gauge::new(
                "viewkv_kv_session_reply_bytes",
                "Bytes of replies the duplicate table holds (bounded by max_session_bytes).",
                count(self.store.sessions().reply_bytes()),
            ),
            Gauge::new(
                "viewkv_kv_backup_synced",
                "1 if the backup holds the whole state.",
                f64::from(u8::from(synced)),
            ),
            Gauge::new(
                "viewkv_kv_transfer_received_keys",
                "Keys received by a transfer in progress.",
                count(received),
            ),
            Gauge::new(
                "viewkv_kv_transfer_received_bytes",
                "Key and value bytes received by a transfer in progress.",
                count(received_bytes),
            ),
            Gauge::new(
                "viewkv_kv_transfer_total_keys",
                "Keys a transfer in progress will bring.",
                total as f64,
            ),
            Gauge::new(
                "viewkv_kv_limits_mismatch",
                "1 if this server's own limits differ from the service's.",
                f64::from(u8::from(self.limits_mismatch().is_some())),
            ),
        ]
    }

    /// The JSON status document.
    pub fn status(&self) -> serde_json::Value {
        let role = match &self.role {
            Role::Idle => "idle",
            Role::Backup(_) => "backup",
            Role::Primary(_) => "primary",
        };
        let (synced, unconfirmed) = match &self.role {
            Role::Primary(p) => (p.synced, p.unconfirmed.len()),
            _ => (false, 0),
        };
        let transfer = match &self.role {
            Role::Backup(BackupRole {
                staging: Some(s), ..
            }) => Some(s.progress()),
            _ => None,
        };
        let limits = self.store.limits();
        serde_json::json!({
            "id": self.me.id,
            "addr": self.me.addr,
            "incarnation": self.me.incarnation,
            "role": role,
            "cluster": format!("{:x}", self.cluster),
            "view": self.view.to_json(),
            "keys": self.store.data().len(),
            "bytes": self.store.data().bytes(),
            "sessions": self.store.sessions().len(),
            "index": self.index,
            "confirmed": self.progress.confirmed,
            "unconfirmed": unconfirmed,
            "holds_state": self.holds_state,
            "backup_synced": synced,
            "receiving_transfer": transfer,
            "min_copies": self.settings.min_copies,
            "limits": {
                "max_value": limits.max_value,
                "session_ttl_ms": limits.session_ttl.as_millis() as u64,
                "max_sessions": limits.max_sessions,
                "max_session_bytes": limits.max_session_bytes,
            },
            "limits_mismatch": self.limits_mismatch(),
        })
    }

    /// How this server's configured limits differ from the service's, if they do.
    pub fn limits_mismatch(&self) -> Option<String> {
        let (own, service) = (self.settings.limits, self.store.limits());
        (self.holds_state && own != service).then(|| {
            format!("configured {own:?}, but the service's state carries {service:?}, which govern")
        })
    }
}
