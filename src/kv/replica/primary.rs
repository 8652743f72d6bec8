//! The primary's rules: ordering client requests, the copies a reply waits for, and what the
//! replication task may send and learns back.

use std::time::Instant;

use super::{Effect, PrimaryRole, Replica, Role};
use crate::kv::api::{Entry, KvError, Op, Reply, Request};
use crate::kv::transfer::Snapshot;
use crate::kv::Data;

/// What becomes of a client request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submit {
    /// Answer now.
    Reply(Reply),
    /// Applied as entry `index`: answer `reply` once [`super::Progress::confirmed`] reaches it,
    /// or give up if the epoch moves on.
    Wait {
        /// The entry's index.
        index: u64,
        /// The epoch it was applied in.
        epoch: u64,
        /// The outcome to answer with once confirmed.
        reply: Reply,
    },
}

/// Why the replication task of a view must stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The view changed (or we are no longer its primary): a new task takes over.
    ViewChanged,
}

/// What the replication task does after the backup's answer to a forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextStep {
    /// Keep streaming entries.
    Stream,
    /// The backup lost entries it had confirmed: send the whole state again.
    Transfer,
}

/// A serving primary's data at one moment, for a dump.
#[derive(Clone, Debug)]
pub struct DumpSnapshot {
    /// The data (shares structure with the live store).
    pub data: Data,
    /// The view of the primary that took it.
    pub view: u64,
    /// The data reflects every entry up to this index.
    pub index: u64,
    /// The primary's epoch then: a change means it stopped serving before confirming.
    pub epoch: u64,
}

impl Replica {
    fn primary_of(&mut self, view: u64) -> Result<&mut PrimaryRole, Stop> {
        match &mut self.role {
            Role::Primary(p) if self.view.num == view => Ok(p),
            _ => Err(Stop::ViewChanged),
        }
    }

    /// Serve a client request, sent in view `sent_in`, at `now` (monotonic) and `wall_ms` (the
    /// wall clock, for the client's deadline).
    pub fn on_request(
        &mut self,
        request: Request,
        sent_in: u64,
        now: Instant,
        wall_ms: u64,
    ) -> Submit {
        let view = self.view.num;
        let holds_state = self.holds_state;
        let ttl_ms = self.store.limits().session_ttl.as_millis() as u64;
        let Role::Primary(p) = &mut self.role else {
            return Submit::Reply(Reply::Err(KvError::WrongServer { view }));
        };
        if !holds_state || p.fenced {
            return Submit::Reply(Reply::Err(KvError::WrongServer { view }));
        }
        if sent_in != 0 && sent_in < p.since {
            // Sent to us as primary of a view before we last became primary: between the two
            // we were not, and may have refused a request sent with this one.
            return Submit::Reply(Reply::Err(KvError::WrongServer { view }));
        }
        if wall_ms > request.deadline_ms {
            return Submit::Reply(Reply::Err(KvError::Deadline {
                reason: format!(
                    "the request arrived {} ms after its client's deadline",
                    wall_ms - request.deadline_ms
                ),
            }));
        }
        let is_read = request.op.is_read();
        // A write whose retries could outlive its session could apply twice (reads keep no
        // session).
        if !is_read && request.deadline_ms.saturating_sub(wall_ms) > ttl_ms {
            return Submit::Reply(Reply::Err(KvError::Deadline {
                reason: format!(
                    "the client's deadline is {} ms away, longer than the service's session TTL of {ttl_ms} ms",
                    request.deadline_ms - wall_ms
                ),
            }));
        }
        let min_copies = self.settings.min_copies;
        if !is_read && min_copies > 1 && self.view.backup.is_none() {
            // No server could hold a second copy, so the write could never be confirmed:
            // refuse it unapplied, as Redis does when too few replicas are connected. With a
            // backup in the view, even one still syncing, writes are applied and wait: its
            // transfer carries them.
            return Submit::Reply(Reply::Err(KvError::NoReplicas {
                copies: 0,
                min_copies,
            }));
        }
        let at_ms = p.clock.now_ms(now).max(self.store.clock_ms());
        if is_read && !p.synced {
            // No other server can be made primary while our backup is not in sync (only a
            // ready backup is promoted), so our state is the service's: answer alone.
            return Submit::Reply(self.store.read(&request.op, at_ms));
        }
        if is_read && p.lease_until.is_some_and(|until| now < until) {
            // Under the read lease no other server can be primary yet: read our state now,
            // and answer once every entry it reflects is confirmed, so the reply shows no
            // write a failover could still lose.
            let reply = self.store.read(&request.op, at_ms);
            let index = p.unconfirmed.read_waits_for(&request.op);
            if self.progress.confirmed >= index {
                return Submit::Reply(reply);
            }
            return Submit::Wait {
                index,
                epoch: self.progress.epoch,
                reply,
            };
        }
        let reply = self.store.apply(&request, at_ms);
        self.index += 1;
        let index = self.index;
        if self.view.backup.is_some() {
            p.unconfirmed.push(Entry {
                index,
                at_ms,
                request,
            });
        }
        self.settle_unreplicated();
        Submit::Wait {
            index,
            epoch: self.progress.epoch,
            reply,
        }
    }

    /// Answer the read `op` at `now` from this server's own state, without waiting for
    /// anyone (a *stale* read): the primary's state may hold writes not yet confirmed, a
    /// backup's may lack the newest ones, and a deposed primary's may be old. Only a server
    /// holding the service's state answers; others say `WrongServer`.
    pub fn read_stale(&self, op: &Op, now: Instant) -> Reply {
        let view = self.view.num;
        let at_ms = match &self.role {
            Role::Primary(p) if self.holds_state && !p.fenced => p.clock.now_ms(now),
            Role::Backup(_) if self.holds_state => self.store.clock_ms(),
            _ => return Reply::Err(KvError::WrongServer { view }),
        };
        self.store.read(op, at_ms)
    }

    /// The data as of now for a dump: an O(1) snapshot (less the keys expired but not yet
    /// reaped), the index it reflects and the epoch
    /// to wait in (the dump is served once that index is confirmed, so it holds no write a
    /// failover could lose). Only a serving primary takes one.
    pub fn dump_snapshot(&self) -> Result<DumpSnapshot, KvError> {
        let view = self.view.num;
        match &self.role {
            Role::Primary(p) if self.holds_state && !p.fenced => Ok(DumpSnapshot {
                data: self.store.data().live(self.store.clock_ms()),
                view,
                index: self.index,
                epoch: self.progress.epoch,
            }),
            _ => Err(KvError::WrongServer { view }),
        }
    }

    /// Without a backup, entries are as replicated as they will ever be — enough only if one
    /// copy is.
    pub(super) fn settle_unreplicated(&mut self) {
        if self.view.backup.is_none() && self.settings.min_copies <= 1 {
            self.progress.confirmed = self.progress.confirmed.max(self.index);
        }
    }

    /// Why a request still waits for confirmation (after the confirmation timeout).
    pub fn unconfirmed_error(&self) -> KvError {
        let synced = matches!(&self.role, Role::Primary(p) if p.synced);
        if self.settings.min_copies > 1 && !synced {
            return KvError::NoReplicas {
                copies: 1,
                min_copies: self.settings.min_copies,
            };
        }
        KvError::Unavailable {
            reason: "the backup has not confirmed the operation yet".into(),
        }
    }

    /// The replication task of `view` starts a transfer: an O(1) snapshot of the state as of
    /// the current index. Entries up to it need not be streamed any more.
    pub fn begin_transfer(
        &mut self,
        view: u64,
        attempt: u64,
        now: Instant,
    ) -> Result<Snapshot, Stop> {
        let index = self.index;
        let p = self.primary_of(view)?;
        p.unconfirmed.restart_at(index);
        p.backup_applied = 0;
        p.stalled_since.get_or_insert(now);
        Ok(Snapshot::new(
            view,
            self.me.clone(),
            index,
            attempt,
            self.store.clone(),
            self.settings.chunk_bytes,
        ))
    }

    /// A message to the backup is about to go out at `now`.
    pub fn sending(&mut self, view: u64, now: Instant) -> Result<(), Stop> {
        self.primary_of(view)?.stalled_since.get_or_insert(now);
        Ok(())
    }

    /// The backup accepted a transfer chunk: progress.
    pub fn chunk_accepted(&mut self, view: u64) -> Result<(), Stop> {
        self.primary_of(view)?.stalled_since = None;
        Ok(())
    }

    /// A message to the backup failed or was answered "retry" at `now`.
    pub fn replication_failed(&mut self, view: u64, now: Instant) -> Result<(), Stop> {
        self.primary_of(view)?.stalled_since.get_or_insert(now);
        Ok(())
    }

    /// The backup installed the state as of `index`: it is in sync.
    pub fn transfer_installed(&mut self, view: u64, index: u64) -> Result<Vec<Effect>, Stop> {
        let p = self.primary_of(view)?;
        p.synced = true;
        p.backup_applied = index;
        p.stalled_since = None;
        tracing::info!(
            "{}: the backup holds the state as of entry {index}",
            self.me.id
        );
        self.progress.confirmed = self.progress.confirmed.max(index);
        Ok(vec![Effect::PingNow])
    }

    /// Entries after `sent` for the backup, up to the batch limits; with `only_full`, none
    /// unless they fill a batch.
    pub fn next_batch(&self, view: u64, sent: u64, only_full: bool) -> Result<Vec<&Entry>, Stop> {
        match &self.role {
            Role::Primary(p) if self.view.num == view => {
                Ok(p.unconfirmed.batch_after(sent, only_full))
            }
            _ => Err(Stop::ViewChanged),
        }
    }

    /// The backup says it holds every entry up to `applied`.
    pub fn backup_applied(&mut self, view: u64, applied: u64) -> Result<NextStep, Stop> {
        let id = self.me.id.clone();
        let p = self.primary_of(view)?;
        p.stalled_since = None;
        if applied < p.backup_applied {
            // It lost entries it had confirmed: never count on it again without a fresh
            // transfer.
            tracing::error!(
                "{id}: the backup went back from entry {} to {applied}; sending the state again",
                p.backup_applied
            );
            return Ok(NextStep::Transfer);
        }
        p.backup_applied = applied;
        p.unconfirmed.confirm(applied);
        self.progress.confirmed = self.progress.confirmed.max(applied);
        Ok(NextStep::Stream)
    }

    /// The backup refused us: in its view we are not the primary. Stop serving until our own
    /// view changes.
    pub fn backup_refused(&mut self, view: u64, reason: &str) -> Result<(), Stop> {
        let id = self.me.id.clone();
        let p = self.primary_of(view)?;
        tracing::warn!(
            "{id}: the backup refused us in view {view}: {reason}; not serving until the view changes"
        );
        p.fenced = true;
        self.progress.epoch += 1;
        Ok(())
    }
}
