//! A shared table of network faults, consulted by every outbound RPC of the nodes it is
//! installed in. Nodes are named by their listen address (clients by a name of their own).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What happens to one RPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Delivered after `delay`, reply included.
    Deliver {
        /// Extra latency added before the request leaves.
        delay: Duration,
    },
    /// The request never arrives.
    DropRequest,
    /// The request is served but its reply is lost.
    DropReply {
        /// Extra latency added before the request leaves.
        delay: Duration,
    },
}

/// The mutable part of [`Faults`].
#[derive(Debug)]
struct State {
    /// Directed links that carry nothing: (from, to).
    cut: HashSet<(String, String)>,
    /// Probability that a request is dropped (6.824's unreliable network: 0.1), and that the
    /// reply of a delivered one is lost (6.824: 0.2), on every link.
    loss: (f64, f64),
    /// The same, for messages to particular nodes (6.824 makes servers unreliable, not links).
    loss_to: HashMap<String, (f64, f64)>,
    /// Inclusive range of extra latency added to every message.
    delay: (Duration, Duration),
    /// Extra latency on particular directed links (a slow path between two nodes).
    link_delay: HashMap<(String, String), Duration>,
    /// Drives every random choice, so a seed replays the same sequence of choices.
    rng: StdRng,
}

/// Network faults for a set of in-process nodes: cut links, lossy links, slow links.
#[derive(Debug)]
pub struct Faults {
    /// Behind a mutex because every node's RPC client consults it concurrently.
    state: Mutex<State>,
}

impl Faults {
    /// A fault-free network whose random choices follow `seed`.
    pub fn new(seed: u64) -> Faults {
        Faults {
            state: Mutex::new(State {
                cut: HashSet::new(),
                loss: (0.0, 0.0),
                loss_to: HashMap::new(),
                delay: (Duration::ZERO, Duration::ZERO),
                link_delay: HashMap::new(),
                rng: StdRng::seed_from_u64(seed),
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut state)
    }

    /// Stop messages from `from` to `to` (one way).
    pub fn cut(&self, from: &str, to: &str) {
        self.with(|s| s.cut.insert((from.to_string(), to.to_string())));
    }

    /// Cut every link between a node of `a` and a node of `b`, both ways.
    pub fn partition(&self, a: &[String], b: &[String]) {
        for x in a {
            for y in b {
                self.cut(x, y);
                self.cut(y, x);
            }
        }
    }

    /// Restore every cut link (loss and delay settings stay).
    pub fn heal(&self) {
        self.with(|s| s.cut.clear());
    }

    /// Lose requests and replies with the given probabilities on every link.
    pub fn set_loss(&self, drop_request: f64, drop_reply: f64) {
        self.with(|s| s.loss = (drop_request.clamp(0.0, 1.0), drop_reply.clamp(0.0, 1.0)));
    }

    /// Lose requests to `node`, and their replies, with the given probabilities (zero to stop).
    pub fn set_loss_to(&self, node: &str, drop_request: f64, drop_reply: f64) {
        let loss = (drop_request.clamp(0.0, 1.0), drop_reply.clamp(0.0, 1.0));
        self.with(|s| s.loss_to.insert(node.to_string(), loss));
    }

    /// Add a random latency in `min..=max` to every message (reorders concurrent messages).
    pub fn set_delay(&self, min: Duration, max: Duration) {
        self.with(|s| s.delay = (min, max.max(min)));
    }

    /// Add `delay` to every message from `from` to `to` (zero to stop), on top of the rest.
    pub fn set_link_delay(&self, from: &str, to: &str, delay: Duration) {
        self.with(|s| {
            let link = (from.to_string(), to.to_string());
            if delay.is_zero() {
                s.link_delay.remove(&link);
            } else {
                s.link_delay.insert(link, delay);
            }
        });
    }

    /// Decide the fate of one message from `from` to `to`.
    pub fn fate(&self, from: &str, to: &str) -> Fate {
        self.with(|s| {
            if s.cut.contains(&(from.to_string(), to.to_string())) {
                return Fate::DropRequest;
            }
            let (drop_request, drop_reply) = s.loss_to.get(to).copied().unwrap_or(s.loss);
            if drop_request > 0.0 && s.rng.gen_bool(drop_request) {
                return Fate::DropRequest;
            }
            let (min, max) = s.delay;
            let link = (from.to_string(), to.to_string());
            let extra = s.link_delay.get(&link).copied().unwrap_or_default();
            let delay = extra
                + if max > min {
                    s.rng.gen_range(min..=max)
                } else {
                    min
                };
            if drop_reply > 0.0 && s.rng.gen_bool(drop_reply) {
                Fate::DropReply { delay }
            } else {
                Fate::Deliver { delay }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_is_directional_and_heal_restores() {
        let faults = Faults::new(1);
        faults.cut("a", "b");
        assert_eq!(faults.fate("a", "b"), Fate::DropRequest);
        assert!(matches!(faults.fate("b", "a"), Fate::Deliver { .. }));
        faults.heal();
        assert!(matches!(faults.fate("a", "b"), Fate::Deliver { .. }));
    }

    #[test]
    fn partition_cuts_both_ways_between_groups_only() {
        let faults = Faults::new(1);
        let (a, b) = (
            vec!["a".to_string(), "b".to_string()],
            vec!["c".to_string()],
        );
        faults.partition(&a, &b);
        assert_eq!(faults.fate("a", "c"), Fate::DropRequest);
        assert_eq!(faults.fate("c", "b"), Fate::DropRequest);
        assert!(matches!(faults.fate("a", "b"), Fate::Deliver { .. }));
    }

    #[test]
    fn loss_rates_are_roughly_honoured_and_seeded() {
        let run = |seed| {
            let faults = Faults::new(seed);
            faults.set_loss(0.1, 0.2);
            (0..10_000)
                .map(|_| faults.fate("x", "y"))
                .collect::<Vec<_>>()
        };
        let fates = run(7);
        assert_eq!(fates, run(7), "the same seed must give the same fates");
        let dropped = fates.iter().filter(|f| **f == Fate::DropRequest).count();
        let lost = fates
            .iter()
            .filter(|f| matches!(f, Fate::DropReply { .. }))
            .count();
        assert!((800..1200).contains(&dropped), "dropped {dropped} of 10000");
        assert!((1500..2100).contains(&lost), "lost {lost} replies of 10000");
    }

    #[test]
    fn a_link_delay_slows_one_direction_only() {
        let faults = Faults::new(4);
        faults.set_link_delay("a", "b", Duration::from_millis(30));
        let delay = Duration::from_millis(30);
        assert_eq!(faults.fate("a", "b"), Fate::Deliver { delay });
        let none = Duration::ZERO;
        assert_eq!(faults.fate("b", "a"), Fate::Deliver { delay: none });
        faults.set_link_delay("a", "b", Duration::ZERO);
        assert_eq!(faults.fate("a", "b"), Fate::Deliver { delay: none });
    }

    #[test]
    fn loss_to_a_node_spares_other_destinations() {
        let faults = Faults::new(3);
        faults.set_loss_to("s", 1.0, 0.0);
        assert_eq!(faults.fate("c", "s"), Fate::DropRequest);
        assert!(matches!(faults.fate("s", "c"), Fate::Deliver { .. }));
        faults.set_loss_to("s", 0.0, 0.0);
        assert!(matches!(faults.fate("c", "s"), Fate::Deliver { .. }));
    }
}
