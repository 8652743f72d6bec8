//! The leader's decision logic: pings and time in, decisions out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::{ClusterId, Decision, Member, Ping, ServerId, View, ViewTable};

/// How often servers ping and how many missed pings make a server dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// Servers ping once per interval (design rule 1).
    pub ping_interval: Duration,
    /// A server not heard from for this many intervals is dead.
    pub dead_pings: u32,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            ping_interval: Duration::from_millis(100),
            dead_pings: 5,
        }
    }
}

impl Timings {
    /// Silence longer than this means dead.
    pub fn dead_after(&self) -> Duration {
        self.ping_interval * self.dead_pings
    }

    /// How long after a ping was *sent* its reply naming a server primary lets that server
    /// answer reads alone (its read lease): no monitor leader declares a server dead until
    /// `dead_after` has passed since it heard from it, or since it took over (the grace
    /// period), and both come after the ping was sent. The lease stops short of that by a
    /// margin of one ping interval or a fifth of `dead_after`, whichever is longer, for the
    /// clocks' rate drift and the moment a deposed monitor leader may still answer
    /// (docs/ARCHITECTURE.md, "Read leases").
    pub fn read_lease(&self) -> Duration {
        let margin = self.ping_interval.max(self.dead_after() / 5);
        self.dead_after().saturating_sub(margin)
    }

    /// Refuse timings the protocol cannot work with: a zero interval (pings in a busy loop), a
    /// zero or single dead-ping count (one late ping would be a death), an interval under 1 ms
    /// or over a minute.
    pub fn validate(&self) -> Result<(), String> {
        if self.ping_interval < Duration::from_millis(1) {
            return Err(format!(
                "ping_interval must be at least 1ms, not {:?}",
                self.ping_interval
            ));
        }
        if self.ping_interval > Duration::from_secs(60) {
            return Err(format!(
                "ping_interval must be at most 60s, not {:?}",
                self.ping_interval
            ));
        }
        if self.dead_pings < 2 {
            return Err(format!(
                "dead_pings must be at least 2 (one late ping is not a death), not {}",
                self.dead_pings
            ));
        }
        Ok(())
    }
}

/// The last ping heard from a server: the leader's soft state, never logged.
#[derive(Clone, Debug)]
struct Seen {
    /// When the ping arrived (or when the grace period started).
    last: Instant,
    /// The incarnation it pinged with.
    incarnation: u64,
    /// The ping itself (`None` for a grace period granted without one): what a recovery
    /// plans from.
    ping: Option<Ping>,
}

/// An operator recovery the leader can commit: the decision, and what it means in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The decision to log.
    pub decision: Decision,
    /// What it does and what is lost, for the operator.
    pub explanation: String,
}

/// Decides the next view. Only the monitor leader holds one; a new leader builds a fresh one, so
/// ping times never need to be replicated.
#[derive(Debug)]
pub struct Decider {
    /// Ping interval and death threshold.
    timings: Timings,
    /// Last ping per server.
    seen: BTreeMap<ServerId, Seen>,
    /// Servers that restarted (pinged with view 0 after having seen the view) while holding a
    /// role: dead for that role even though they keep pinging (rule 5). Dropped once the view no
    /// longer names them.
    demoted: BTreeSet<ServerId>,
    /// Backups their primary could not replicate to, and until when they are not picked again
    /// (so a server the primary cannot reach does not come straight back).
    shunned: BTreeMap<ServerId, Instant>,
    /// When this leader took over: a group without a view waits `dead_after` from then before
    /// making view 1, so servers of a cluster whose monitors lost their state have pinged
    /// first (and stop it).
    started: Instant,
    /// The cluster id to form with, if the table has none yet (random, from the caller).
    new_cluster: ClusterId,
}

/// Apply `decision` to the working copy and record it.
fn push(state: &mut ViewTable, out: &mut Vec<Decision>, decision: Decision) {
    if state.apply(&decision) {
        out.push(decision);
    }
}

/// Whether `ping` comes from `member` restarted: a new incarnation, or view 0 from a server that
/// must have seen the view already (a primary that acked it, a backup reported in sync).
fn restarted(member: Option<&Member>, ping: &Ping, must_have_seen: bool) -> bool {
    member.is_some_and(|m| {
        m.id == ping.id
            && (m.incarnation != ping.incarnation || (ping.viewnum == 0 && must_have_seen))
    })
}

/// What `viewkv view` tells an operator facing a stall that will not end by itself.
pub const RECOVER_HINT: &str = "if it will not come back, `viewkv recover --accept-data-loss` \
     makes a live server primary (`viewkv recover` first says what would be lost)";

impl Decider {
    /// A decider for a leader that just took over `table` at `now`. Every known server is treated
    /// as just heard from: a grace period of `dead_pings` intervals before anyone is declared dead.
    /// If the table has no cluster id yet, the first decision forms the cluster as `new_cluster`.
    pub fn new(
        timings: Timings,
        table: &ViewTable,
        now: Instant,
        new_cluster: ClusterId,
    ) -> Decider {
        let mut decider = Decider {
            timings,
            seen: BTreeMap::new(),
            demoted: BTreeSet::new(),
            shunned: BTreeMap::new(),
            started: now,
            new_cluster: new_cluster.max(1),
        };
        decider.grant_grace(table, now);
        decider
    }

    /// Give every registered server not heard from yet by this leader a grace period.
    fn grant_grace(&mut self, table: &ViewTable, now: Instant) {
        for (id, info) in &table.servers {
            self.seen.entry(id.clone()).or_insert(Seen {
                last: now,
                incarnation: info.incarnation,
                ping: None,
            });
        }
    }

    /// Handle a ping. Returns the decisions to commit, in order; each applies to the state the
    /// previous one leaves.
    pub fn ping(&mut self, table: &ViewTable, ping: &Ping, now: Instant) -> Vec<Decision> {
        let mut state = table.clone();
        let mut out = Vec::new();
        self.form(&mut state, &mut out);
        if state.is_foreign(ping) {
            // Heard (a recovery may adopt it), never registered or put into a view.
            self.heard(ping, now);
            return out;
        }
        let info = super::ServerInfo {
            addr: ping.addr.clone(),
            incarnation: ping.incarnation,
        };
        if state.servers.get(&ping.id) != Some(&info) {
            let id = ping.id.clone();
            push(&mut state, &mut out, Decision::Register { id, info });
        }
        self.heard(ping, now);
        let view = state.view.clone();
        if restarted(view.primary.as_ref(), ping, view.acked)
            || restarted(view.backup.as_ref(), ping, view.backup_ready)
        {
            self.demoted.insert(ping.id.clone());
        }
        if view.num == 0 {
            if now.saturating_duration_since(self.started) < self.timings.dead_after()
                || self.foreign(&state, now).next().is_some()
            {
                // Servers of a cluster whose monitors lost their state would have pinged by
                // now; while any does, only `viewkv recover` makes a view.
                return out;
            }
            let next = View {
                num: 1,
                primary: state.member(&ping.id),
                ..View::default()
            };
            push(&mut state, &mut out, Decision::Change { prev: view, next });
            return out;
        }
        let from_primary = view
            .primary
            .as_ref()
            .is_some_and(|m| m.id == ping.id && m.incarnation == ping.incarnation);
        if from_primary && !self.demoted.contains(&ping.id) && ping.viewnum == view.num {
            if let Some(backup) = view.backup.as_ref().filter(|_| ping.backup_failed) {
                let until = now + self.timings.dead_after() * 4;
                self.shunned.insert(backup.id.clone(), until);
            }
            let mut next = view.clone();
            next.acked = true;
            next.backup_ready |= ping.backup_synced && view.backup.is_some();
            push(&mut state, &mut out, Decision::Change { prev: view, next });
        }
        if let Some(change) = self.next_view(&state, now) {
            push(&mut state, &mut out, change);
        }
        out
    }

    /// Handle the passage of time: declare silent servers dead, change the view if that calls
    /// for it, and forget idle servers that went away.
    pub fn tick(&mut self, table: &ViewTable, now: Instant) -> Vec<Decision> {
        let mut state = table.clone();
        let mut out = Vec::new();
        self.form(&mut state, &mut out);
        if let Some(change) = self.next_view(&state, now) {
            push(&mut state, &mut out, change);
        }
        let gone: Vec<ServerId> = state
            .servers
            .keys()
            .filter(|id| !state.view.has_member(id) && !self.alive(id, now))
            .cloned()
            .collect();
        for id in gone {
            self.seen.remove(&id);
            push(&mut state, &mut out, Decision::Forget { id });
        }
        let dead_after = self.timings.dead_after();
        self.seen.retain(|id, seen| {
            state.servers.contains_key(id) || now.saturating_duration_since(seen.last) < dead_after
        });
        out
    }

    /// Remember `ping` as the last heard from its server, at `now`.
    fn heard(&mut self, ping: &Ping, now: Instant) {
        let seen = Seen {
            last: now,
            incarnation: ping.incarnation,
            ping: Some(ping.clone()),
        };
        self.seen.insert(ping.id.clone(), seen);
    }

    /// Form the cluster (its first decision) if the table has no id yet.
    fn form(&self, state: &mut ViewTable, out: &mut Vec<Decision>) {
        if state.cluster == 0 {
            let cluster = self.new_cluster;
            push(state, out, Decision::Form { cluster });
        }
    }

    /// The live servers of another cluster pinging us, with their last pings.
    fn foreign<'a>(
        &'a self,
        table: &'a ViewTable,
        now: Instant,
    ) -> impl Iterator<Item = &'a Ping> + 'a {
        self.live_pings(now).filter(|p| table.is_foreign(p))
    }

    /// The last pings of every server heard from within `dead_pings` intervals.
    fn live_pings(&self, now: Instant) -> impl Iterator<Item = &Ping> + '_ {
        let dead_after = self.timings.dead_after();
        self.seen
            .values()
            .filter(move |s| now.saturating_duration_since(s.last) < dead_after)
            .filter_map(|s| s.ping.as_ref())
    }

    /// Why the service cannot make progress right now, if it cannot: for logs and `viewkv view`.
    pub fn stalled(&self, table: &ViewTable, now: Instant) -> Option<String> {
        let view = &table.view;
        if let Some(ping) = self.foreign(table, now).max_by_key(|p| p.viewnum) {
            if view.num == 0 {
                return Some(format!(
                    "kv servers of cluster {:x} (view {}, e.g. {}) ping this monitor group, which \
                     has no record of them: the monitors lost their state. No new view is made \
                     while they ping; `viewkv recover --accept-data-loss` adopts their view",
                    ping.cluster, ping.viewnum, ping.id
                ));
            }
        }
        let primary = view.primary.as_ref()?;
        if !view.acked {
            if !self.holds_role(primary, now) {
                return Some(format!(
                    "primary {} is dead and never acknowledged view {}: waiting for it to come \
                     back; {RECOVER_HINT}",
                    primary.id, view.num
                ));
            }
            return Some(format!(
                "waiting for primary {} to acknowledge view {}",
                primary.id, view.num
            ));
        }
        let backup_ok = view
            .backup
            .as_ref()
            .is_some_and(|b| self.holds_role(b, now));
        if self.holds_role(primary, now) || (backup_ok && view.backup_ready) {
            return None;
        }
        Some(format!(
            "primary {} is dead and no backup holds the data: waiting for it to come back; \
             {RECOVER_HINT}",
            primary.id
        ))
    }

    /// Plan an operator recovery at `now`: `primary` (default: the live server holding the most
    /// recent state) becomes primary of a new view marked `recovered`. Refused unless the
    /// service is stalled or servers of another cluster ping a group without a view (the
    /// monitors lost their state: their cluster id and view are adopted).
    pub fn recovery(
        &self,
        table: &ViewTable,
        primary: Option<&str>,
        now: Instant,
    ) -> Result<Recovery, String> {
        let foreign: Vec<&Ping> = self.foreign(table, now).collect();
        let adopting = table.view.num == 0 && !foreign.is_empty();
        let (cluster, candidates): (ClusterId, Vec<&Ping>) = if adopting {
            let newest = foreign.iter().max_by_key(|p| p.viewnum).copied();
            let cluster = newest.map_or(table.cluster, |p| p.cluster);
            let of_it = foreign.into_iter().filter(|p| p.cluster == cluster);
            (cluster, of_it.collect())
        } else {
            if self.stalled(table, now).is_none() {
                return Err(format!(
                    "the service is not stalled (view {}); recover is only for a service that \
                     cannot make progress by itself",
                    table.view.summary()
                ));
            }
            if let Some(primary) = table.view.primary.as_ref() {
                if self.holds_role(primary, now) {
                    return Err(format!(
                        "primary {} of view {} is alive: the service waits for it, and a second \
                         primary beside it could answer from a different state",
                        primary.id, table.view.num
                    ));
                }
            }
            let ours = self.live_pings(now).filter(|p| !table.is_foreign(p));
            (table.cluster, ours.collect())
        };
        let names = || {
            let ids: Vec<&str> = candidates.iter().map(|p| p.id.as_str()).collect();
            if ids.is_empty() {
                "none".to_string()
            } else {
                ids.join(", ")
            }
        };
        let chosen = match primary {
            Some(id) => candidates
                .iter()
                .find(|p| p.id == id)
                .copied()
                .ok_or_else(|| format!("{id} is not a live kv server here (live: {})", names()))?,
            None => candidates
                .iter()
                .filter(|p| p.holds_state)
                .max_by_key(|p| p.viewnum)
                .or_else(|| candidates.first())
                .copied()
                .ok_or("no live kv server pings the monitors: start one, then recover")?,
        };
        let newest = candidates.iter().map(|p| p.viewnum).max().unwrap_or(0);
        let next = View {
            num: table.view.num.max(newest) + 1,
            primary: Some(Member {
                id: chosen.id.clone(),
                addr: chosen.addr.clone(),
                incarnation: chosen.incarnation,
            }),
            backup: None,
            acked: false,
            backup_ready: false,
            recovered: true,
        };
        let dead = table
            .view
            .primary
            .as_ref()
            .map_or("the dead primary".to_string(), |p| {
                format!("primary {}", p.id)
            });
        let mut explanation = if adopting {
            format!(
                "adopt cluster {cluster:x}: its servers pinged with view {newest}; {} becomes \
                 primary of view {}. ",
                chosen.id, next.num
            )
        } else {
            format!("{} becomes primary of view {}. ", chosen.id, next.num)
        };
        explanation.push_str(&if chosen.holds_state {
            format!(
                "It keeps the state it holds as of view {}; writes only {dead} held (applied \
                 there after {} last received them) are lost.",
                chosen.viewnum, chosen.id
            )
        } else {
            format!(
                "It holds none of the service's state: the service starts EMPTY and every key is \
                 lost (live servers: {}).",
                names()
            )
        });
        Ok(Recovery {
            decision: Decision::Recover {
                prev: table.view.clone(),
                cluster,
                next,
            },
            explanation,
        })
    }

    /// Whether `id` pinged within the last `dead_pings` intervals.
    fn alive(&self, id: &str, now: Instant) -> bool {
        self.seen.get(id).is_some_and(|seen| {
            now.saturating_duration_since(seen.last) < self.timings.dead_after()
        })
    }

    /// Whether `member` is alive, in the same incarnation, has not restarted in its role, and
    /// is not shunned by its primary.
    fn holds_role(&self, member: &Member, now: Instant) -> bool {
        self.alive(&member.id, now)
            && !self.demoted.contains(&member.id)
            && self
                .shunned
                .get(&member.id)
                .is_none_or(|until| now >= *until)
            && self
                .seen
                .get(&member.id)
                .is_some_and(|seen| seen.incarnation == member.incarnation)
    }

    /// A live idle server to make backup, if any (the first by id, so decisions are repeatable).
    fn pick_idle(&self, state: &ViewTable, now: Instant) -> Option<Member> {
        state
            .servers
            .keys()
            .filter(|id| !state.view.has_member(id))
            .filter_map(|id| state.member(id))
            .find(|m| self.holds_role(m, now))
    }

    /// The view change the current liveness calls for, if any (design rules 3, 4, 6, 7).
    fn next_view(&mut self, state: &ViewTable, now: Instant) -> Option<Decision> {
        self.grant_grace(state, now);
        let view = &state.view;
        self.demoted.retain(|id| view.has_member(id));
        self.shunned.retain(|_, until| now < *until);
        if view.num == 0 || !view.acked {
            return None;
        }
        let primary = view.primary.as_ref()?;
        let primary_ok = self.holds_role(primary, now);
        let backup_ok = view.backup.as_ref().map(|b| self.holds_role(b, now));
        let (new_primary, new_backup) = match (primary_ok, backup_ok) {
            (true, Some(true)) => return None,
            (true, Some(false)) => (primary.clone(), self.pick_idle(state, now)),
            (true, None) => (primary.clone(), Some(self.pick_idle(state, now)?)),
            (false, Some(true)) if view.backup_ready => {
                let backup = view.backup.clone()?;
                (backup, self.pick_idle(state, now))
            }
            (false, _) => return None,
        };
        let next = View {
            num: view.num + 1,
            primary: Some(new_primary),
            backup: new_backup,
            acked: false,
            backup_ready: false,
            recovered: false,
        };
        Some(Decision::Change {
            prev: view.clone(),
            next,
        })
    }
}
