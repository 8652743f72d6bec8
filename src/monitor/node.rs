//! One monitor node: answers pings as leader, decides views, serves status and Raft RPCs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use viewkv_raft::network::DispatchError;
use viewkv_raft::{dispatch_noting, Command, NodeId, Raft};

use super::api::{PingReply, RecoverReply, RecoverRequest, ViewReply, PING, RECOVER, STATUS, VIEW};
use super::format::encode_decision;
use super::lease::{leader_hint, Lease};
use super::membership::{self, Admin};
use super::state_machine::StateMachine;
use crate::net::{bad_request, bincode_reply, decode, json_reply, not_found, Handler};
use crate::net::{Gauge, HttpRequest, HttpResponse};
use crate::view::{Decider, Decision, Ping, Timings};

/// The decider of the current leadership term.
struct Slot {
    /// The term the decider was built in; a new term means a new grace period.
    term: u64,
    /// The leader's soft state and rules.
    decider: Decider,
    /// The last stall reported in the log, so it is logged once, not every tick.
    stalled: Option<String>,
    /// The last time the lease was confirmed under this slot. A longer gap than the lease means
    /// pings may have been refused meanwhile, so ping times are stale: start a new grace period.
    confirmed_at: Instant,
}

/// A running monitor.
pub struct Monitor {
    /// This node's Raft id.
    id: NodeId,
    /// The Raft node.
    raft: Raft,
    /// The applied view table.
    sm: StateMachine,
    /// Whether we may act as leader right now.
    lease: Lease,
    /// Ping interval and death threshold.
    timings: Timings,
    /// How long to wait for a decision to commit before giving up on a ping.
    write_timeout: Duration,
    /// Pings and view requests served: how often the kv servers and clients use the monitors.
    requests: AtomicU64,
    /// The decider, present only while we lead. Pings and ticks take turns on it, so decisions
    /// are computed from the state the previous decision left.
    slot: Mutex<Option<Slot>>,
    /// Membership: lists and changes the group, and records the peers heard from over Raft.
    admin: Admin,
}

/// Why a decision could not be committed.
#[derive(Debug)]
enum ProposeError {
    /// Leadership was lost, or the write timed out.
    NotLeader,
}

impl Monitor {
    /// A monitor over a started Raft node.
    pub(super) fn new(
        id: NodeId,
        raft: Raft,
        sm: StateMachine,
        lease: Lease,
        timings: Timings,
        write_timeout: Duration,
        admin: Admin,
    ) -> Monitor {
        Monitor {
            id,
            raft,
            sm,
            lease,
            timings,
            write_timeout,
            requests: AtomicU64::new(0),
            slot: Mutex::new(None),
            admin,
        }
    }

    /// Commit one decision through Raft (returns after it is applied here).
    async fn propose(&self, decision: &Decision) -> Result<(), ProposeError> {
        let write = self.raft.client_write(Command(encode_decision(decision)));
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => {
                tracing::debug!("decision not committed: {err}");
                Err(ProposeError::NotLeader)
            }
            Err(_) => {
                tracing::warn!("decision not committed within {:?}", self.write_timeout);
                Err(ProposeError::NotLeader)
            }
        }
    }

    /// Commit `decisions` in order, logging view changes.
    async fn commit_all(&self, decisions: Vec<Decision>) -> Result<(), ProposeError> {
        for decision in decisions {
            self.propose(&decision).await?;
            match &decision {
                Decision::Change { next, .. } => tracing::info!("view {}", next.summary()),
                Decision::Form { cluster } => tracing::info!("formed cluster {cluster:x}"),
                Decision::Recover { cluster, next, .. } => tracing::warn!(
                    "operator recovery: cluster {cluster:x}, view {}",
                    next.summary()
                ),
                Decision::Register { .. } | Decision::Forget { .. } => {}
            }
        }
        Ok(())
    }

    /// The slot for `term`, building a fresh decider (with a grace period) on a new term or
    /// after a gap in our leadership.
    fn slot_for<'a>(&self, slot: &'a mut Option<Slot>, term: u64, now: Instant) -> &'a mut Slot {
        let lapsed = |s: &Slot| {
            s.term != term || now.saturating_duration_since(s.confirmed_at) > self.lease.max_age()
        };
        if slot.as_ref().is_none_or(lapsed) {
            tracing::info!(
                "monitor {} leads term {term}: grace period for known servers",
                self.id
            );
            *slot = Some(Slot {
                term,
                decider: Decider::new(self.timings, &self.sm.table(), now, rand::random()),
                stalled: None,
                confirmed_at: now,
            });
        }
        match slot {
            Some(slot) => {
                slot.confirmed_at = now;
                slot
            }
            None => unreachable!("the slot was filled just above"),
        }
    }

    fn not_leader(&self) -> PingReply {
        PingReply::NotLeader {
            hint: leader_hint(&self.raft)
                .filter(|(id, _)| *id != self.id)
                .map(|(_, addr)| addr),
        }
    }

    /// Handle a kv server's ping.
    pub async fn ping(&self, ping: &Ping) -> PingReply {
        let Some(term) = self.lease.confirmed_term() else {
            return self.not_leader();
        };
        let mut guard = self.slot.lock().await;
        // Waiting for the slot can take a while (a tick committing decisions): check again.
        if self.lease.confirmed_term() != Some(term) {
            return self.not_leader();
        }
        let now = Instant::now();
        let slot = self.slot_for(&mut guard, term, now);
        let decisions = slot.decider.ping(&self.sm.table(), ping, now);
        if self.commit_all(decisions).await.is_err() {
            return self.not_leader();
        }
        // And once more before answering, so an answer never outlives the lease it relies on.
        if self.lease.confirmed_term() != Some(term) {
            return self.not_leader();
        }
        let table = self.sm.table();
        if table.is_foreign(ping) {
            return PingReply::Foreign {
                cluster: table.cluster,
            };
        }
        PingReply::View {
            view: table.view,
            cluster: table.cluster,
        }
    }

    /// Handle an operator's recovery: plan it from the leader's soft state, and commit it if
    /// the operator accepted the loss.
    pub async fn recover(&self, request: &RecoverRequest) -> RecoverReply {
        let not_leader = || RecoverReply::NotLeader {
            hint: leader_hint(&self.raft)
                .filter(|(id, _)| *id != self.id)
                .map(|(_, addr)| addr),
        };
        let Some(term) = self.lease.confirmed_term() else {
            return not_leader();
        };
        let mut guard = self.slot.lock().await;
        if self.lease.confirmed_term() != Some(term) {
            return not_leader();
        }
        let now = Instant::now();
        let slot = self.slot_for(&mut guard, term, now);
        let table = self.sm.table();
        let plan = match slot
            .decider
            .recovery(&table, request.primary.as_deref(), now)
        {
            Ok(plan) => plan,
            Err(reason) => return RecoverReply::Refused { reason },
        };
        if !request.accept_data_loss {
            return RecoverReply::Plan {
                explanation: plan.explanation,
            };
        }
        tracing::warn!("operator recovery: {}", plan.explanation);
        if self.commit_all(vec![plan.decision]).await.is_err() {
            return not_leader();
        }
        RecoverReply::Done {
            view: self.sm.table().view,
            explanation: plan.explanation,
        }
    }

    /// One round of time-driven decisions; run every ping interval.
    pub async fn tick(&self) {
        let mut guard = self.slot.lock().await;
        let Some(term) = self.lease.confirmed_term() else {
            *guard = None;
            return;
        };
        let now = Instant::now();
        let slot = self.slot_for(&mut guard, term, now);
        let table = self.sm.table();
        let decisions = slot.decider.tick(&table, now);
        let stalled = slot.decider.stalled(&table, now);
        if stalled != slot.stalled {
            match &stalled {
                Some(reason) => tracing::warn!("{reason}"),
                None => tracing::info!("service can make progress again"),
            }
            slot.stalled = stalled;
        }
        if let Err(err) = self.commit_all(decisions).await {
            tracing::debug!("tick decisions not committed: {err:?}");
        }
    }

    /// The applied view and what this node knows of the leader.
    pub async fn view(&self) -> ViewReply {
        let serving = self.lease.confirmed_term().is_some();
        let table = self.sm.table();
        let stalled = match serving {
            true => self
                .slot
                .lock()
                .await
                .as_ref()
                .and_then(|s| s.decider.stalled(&table, Instant::now())),
            false => None,
        };
        ViewReply {
            view: table.view,
            leader: leader_hint(&self.raft),
            serving,
            stalled,
            cluster: table.cluster,
        }
    }

    /// The JSON status document.
    pub async fn status(&self) -> serde_json::Value {
        let metrics = self.raft.metrics().borrow().clone();
        let role = match metrics.state {
            openraft::ServerState::Leader => "leader",
            openraft::ServerState::Follower => "follower",
            openraft::ServerState::Candidate => "candidate",
            openraft::ServerState::Learner => "learner",
            openraft::ServerState::Shutdown => "shutdown",
        };
        let reply = self.view().await;
        serde_json::json!({
            "id": self.id,
            "role": role,
            "serving": reply.serving,
            "term": metrics.current_term,
            "leader": metrics.current_leader,
            "last_applied": metrics.last_applied.map(|id| id.index),
            "snapshot": metrics.snapshot.map(|id| id.index),
            "purged": metrics.purged.map(|id| id.index),
            "requests": self.requests.load(Ordering::Relaxed),
            "view": reply.view.to_json(),
            "stalled": reply.stalled,
        })
    }
}

impl Handler for Monitor {
    fn gauges(&self) -> Vec<Gauge> {
        let metrics = self.raft.metrics().borrow().clone();
        let index = |id: Option<openraft::LogId<u64>>| id.map_or(0.0, |id| id.index as f64);
        let leader = metrics.state == openraft::ServerState::Leader;
        let serving = self.lease.confirmed_term().is_some();
        vec![
            Gauge::new(
                "viewkv_view_number",
                "The view this monitor has applied.",
                self.sm.table().view.num as f64,
            ),
            Gauge::new(
                "viewkv_raft_term",
                "The current Raft term.",
                metrics.current_term as f64,
            ),
            Gauge::new(
                "viewkv_raft_last_log_index",
                "The last Raft log index appended here.",
                metrics.last_log_index.map_or(0.0, |i| i as f64),
            ),
            Gauge::new(
                "viewkv_raft_applied_index",
                "The last Raft log index applied here.",
                index(metrics.last_applied),
            ),
            Gauge::new(
                "viewkv_raft_leader",
                "1 if this monitor is the Raft leader.",
                f64::from(u8::from(leader)),
            ),
            Gauge::new(
                "viewkv_raft_leader_changes_seen",
                "How many times the leader this monitor knows of changed since it started.",
                self.lease.leader_changes() as f64,
            ),
            Gauge::new(
                "viewkv_monitor_serving",
                "1 if this monitor leads with a quorum-confirmed lease and answers pings.",
                f64::from(u8::from(serving)),
            ),
            Gauge::new(
                "viewkv_monitor_requests",
                "Pings and view reads served.",
                self.requests.load(Ordering::Relaxed) as f64,
            ),
        ]
    }

    async fn handle(&self, request: HttpRequest) -> HttpResponse {
        let path = request.uri().path().to_string();
        match path.as_str() {
            PING => match decode::<Ping>(request.body()) {
                Ok(ping) => {
                    self.requests.fetch_add(1, Ordering::Relaxed);
                    bincode_reply(&self.ping(&ping).await)
                }
                Err(err) => bad_request(err),
            },
            VIEW => {
                self.requests.fetch_add(1, Ordering::Relaxed);
                bincode_reply(&self.view().await)
            }
            RECOVER => match decode::<RecoverRequest>(request.body()) {
                Ok(recover) => bincode_reply(&self.recover(&recover).await),
                Err(err) => bad_request(err),
            },
            STATUS => json_reply(&self.status().await),
            membership::MEMBERS | membership::CHANGE_MEMBERS => {
                self.admin.handle(&path, request.body()).await
            }
            _ => match dispatch_noting(&self.raft, &path, request.body(), &|id| {
                self.admin.note_heard(id)
            })
            .await
            {
                Ok(body) => {
                    let mut response = HttpResponse::new(body.into());
                    response.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/octet-stream"),
                    );
                    response
                }
                Err(DispatchError::UnknownPath(_)) => not_found(&path),
                Err(err @ DispatchError::BadRequest(_)) => bad_request(err),
            },
        }
    }
}
