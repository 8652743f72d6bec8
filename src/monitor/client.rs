//! Talking to the monitor group from outside: kv servers ping through it, clients and the CLI
//! read the view through it. It remembers the leader and follows `NotLeader` hints.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::api::{PingReply, ViewReply, PING, VIEW};
use crate::net::{RpcClient, RpcError};
use crate::view::{Ping, View};

/// No monitor could answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no monitor answered ({tried} tried): {last}")]
pub struct MonitorUnavailable {
    /// How many requests were made.
    pub tried: usize,
    /// The last failure seen.
    pub last: String,
}

/// A handle on the monitor group. Cheap to clone; clones share the leader cache.
#[derive(Clone, Debug)]
pub struct MonitorClient {
    /// Sends the RPCs.
    rpc: RpcClient,
    /// Every monitor's address, in the order to try them.
    monitors: Arc<Vec<String>>,
    /// The monitor that answered last as leader: asked first next time.
    leader: Arc<Mutex<Option<String>>>,
    /// Per-request deadline.
    timeout: Duration,
}

impl MonitorClient {
    /// A client for the monitors at `monitors`.
    pub fn new(rpc: RpcClient, monitors: Vec<String>, timeout: Duration) -> MonitorClient {
        MonitorClient {
            rpc,
            monitors: Arc::new(monitors),
            leader: Arc::new(Mutex::new(None)),
            timeout,
        }
    }

    /// The monitors' addresses.
    pub fn monitors(&self) -> &[String] {
        &self.monitors
    }

    fn cached_leader(&self) -> Option<String> {
        match self.leader.lock() {
            Ok(leader) => leader.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn remember_leader(&self, addr: Option<String>) {
        match self.leader.lock() {
            Ok(mut leader) => *leader = addr,
            Err(poisoned) => *poisoned.into_inner() = addr,
        }
    }

    /// The order to try monitors in: the cached leader first, then the configured list.
    fn candidates(&self) -> Vec<String> {
        let leader = self.cached_leader();
        let rest = self.monitors.iter().filter(|m| Some(*m) != leader.as_ref());
        leader.clone().into_iter().chain(rest.cloned()).collect()
    }

    /// Ping the leader. Tries every monitor at most once, plus the hints they give.
    pub async fn ping(&self, ping: &Ping) -> Result<View, MonitorUnavailable> {
        let mut queue = self.candidates();
        let mut tried: Vec<String> = Vec::new();
        let mut last = String::from("no monitors configured");
        while let Some(addr) = queue.first().cloned() {
            queue.remove(0);
            if tried.contains(&addr) {
                continue;
            }
            tried.push(addr.clone());
            let reply: Result<PingReply, RpcError> =
                self.rpc.call(&addr, PING, ping, self.timeout).await;
            match reply {
                Ok(PingReply::View(view)) => {
                    self.remember_leader(Some(addr));
                    return Ok(view);
                }
                Ok(PingReply::NotLeader { hint }) => {
                    last = format!("{addr} is not the leader");
                    if let Some(hint) = hint {
                        queue.insert(0, hint);
                    }
                }
                Err(err) => last = err.to_string(),
            }
        }
        self.remember_leader(None);
        Err(MonitorUnavailable {
            tried: tried.len(),
            last,
        })
    }

    /// Read the view: from the serving leader if one answers (the newest view there is),
    /// else the newest view any monitor has applied. Follows leader hints.
    pub async fn view(&self) -> Result<ViewReply, MonitorUnavailable> {
        let mut queue = self.candidates();
        let mut tried: Vec<String> = Vec::new();
        let mut best: Option<ViewReply> = None;
        let mut last = String::from("no monitors configured");
        while let Some(addr) = queue.first().cloned() {
            queue.remove(0);
            if tried.contains(&addr) {
                continue;
            }
            tried.push(addr.clone());
            match self
                .rpc
                .call::<(), ViewReply>(&addr, VIEW, &(), self.timeout)
                .await
            {
                Ok(reply) if reply.serving => {
                    self.remember_leader(Some(addr));
                    return Ok(reply);
                }
                Ok(reply) => {
                    tracing::debug!(
                        "{addr} is not serving (view {}); leader hint {:?}",
                        reply.view.num,
                        reply.leader
                    );
                    if let Some((_, hint)) = &reply.leader {
                        queue.insert(0, hint.clone());
                    }
                    if best.as_ref().is_none_or(|b| reply.view.num > b.view.num) {
                        best = Some(reply);
                    }
                }
                Err(err) => {
                    tracing::debug!("view from {addr}: {err}");
                    last = err.to_string();
                }
            }
        }
        best.ok_or(MonitorUnavailable {
            tried: tried.len(),
            last,
        })
    }
}
