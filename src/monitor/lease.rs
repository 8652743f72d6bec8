//! Whether this monitor may answer pings: it must be the leader, confirmed by a quorum no longer
//! ago than the lease, and it must have applied an entry of its own term (so its state includes
//! every decision of earlier leaders).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use viewkv_raft::{NodeId, Raft};

/// What the last metrics report said, and when it arrived.
#[derive(Clone, Debug)]
struct Observed {
    /// When this report reached us; the quorum ack it carries is at least this old plus its age.
    at: Instant,
    /// The Raft term.
    term: u64,
    /// Whether the node called itself leader.
    leader: bool,
    /// Milliseconds since a quorum acknowledged the leader, at the time of the report.
    quorum_ack_ms: Option<u64>,
    /// Whether the last applied entry is of the current term.
    applied_own_term: bool,
}

/// Follows the Raft metrics and answers "am I a confirmed leader right now?".
#[derive(Clone, Debug)]
pub struct Lease {
    /// Updated by a background task at every metrics report.
    observed: watch::Receiver<Option<Observed>>,
    /// How old a quorum acknowledgment may be: openraft's followers refuse to vote for this
    /// long after hearing from the leader, so no other leader can have been elected sooner.
    max_age: Duration,
    /// How many times the leader this node knows of changed to another (the first one known
    /// counts): frequent changes mean an unstable group, which `/metrics` shows.
    leader_changes: Arc<AtomicU64>,
}

impl Lease {
    /// Start following `raft`'s metrics. The task ends when the Raft node shuts down.
    pub fn follow(raft: &Raft, max_age: Duration) -> (Lease, tokio::task::JoinHandle<()>) {
        let (tx, observed) = watch::channel(None);
        let mut metrics = raft.metrics();
        let leader_changes = Arc::new(AtomicU64::new(0));
        let changes = leader_changes.clone();
        let task = tokio::spawn(async move {
            let mut known_leader = None;
            loop {
                let report = {
                    let m = metrics.borrow_and_update();
                    if m.current_leader.is_some() && m.current_leader != known_leader {
                        known_leader = m.current_leader;
                        changes.fetch_add(1, Ordering::Relaxed);
                    }
                    Observed {
                        at: Instant::now(),
                        term: m.current_term,
                        leader: m.state.is_leader(),
                        quorum_ack_ms: m.millis_since_quorum_ack,
                        applied_own_term: m
                            .last_applied
                            .is_some_and(|id| id.leader_id.term == m.current_term),
                    }
                };
                if tx.send(Some(report)).is_err() || metrics.changed().await.is_err() {
                    return;
                }
            }
        });
        let lease = Lease {
            observed,
            max_age,
            leader_changes,
        };
        (lease, task)
    }

    /// How many times the known leader changed since this node started.
    pub fn leader_changes(&self) -> u64 {
        self.leader_changes.load(Ordering::Relaxed)
    }

    /// How old a quorum acknowledgment may be.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// The term in which this node is a confirmed leader, if it is one now.
    pub fn confirmed_term(&self) -> Option<u64> {
        let observed = self.observed.borrow();
        let o = observed.as_ref()?;
        let acked_ms = o.quorum_ack_ms?;
        let age = Duration::from_millis(acked_ms) + o.at.elapsed();
        (o.leader && o.applied_own_term && age < self.max_age).then_some(o.term)
    }
}

/// The leader id and address `raft` believes in.
pub fn leader_hint(raft: &Raft) -> Option<(NodeId, String)> {
    let metrics = raft.metrics().borrow().clone();
    let leader = metrics.current_leader?;
    let node = metrics.membership_config.membership().get_node(&leader)?;
    Some((leader, node.addr.clone()))
}
