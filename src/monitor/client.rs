//! Talking to the monitor group from outside: kv servers ping through it, clients and the CLI
//! read the view through it.
//!
//! Every request goes to all monitors at once, and the first useful answer wins. Asking one
//! monitor after another would let a monitor that hangs (stopped, or behind a link that drops
//! packets without refusing) cost a full timeout per request: for a kv server, long enough that
//! a new monitor leader's grace period runs out before its ping arrives, and a live primary is
//! replaced. The others answer `NotLeader` at once, so this costs the group little.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::task::JoinSet;

use super::api::{PingReply, RecoverReply, RecoverRequest, ViewReply, PING, RECOVER, VIEW};
use crate::net::RpcClient;
use crate::view::Ping;

/// No monitor could answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no monitor answered (tried {}): {last}", tried.join(", "))]
pub struct MonitorUnavailable {
    /// The monitors asked (the configured ones, and any leader they hinted at).
    pub tried: Vec<String>,
    /// The last failure seen.
    pub last: String,
    /// A monitor's refusal for want of the cluster secret, if one refused.
    pub unauthorized: Option<String>,
}

/// A handle on the monitor group. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MonitorClient {
    /// Sends the RPCs.
    rpc: RpcClient,
    /// Every monitor's address.
    monitors: Arc<Vec<String>>,
    /// How long one monitor may take to answer; the whole request takes no longer, plus the
    /// time to follow a leader hint to a monitor not in the list.
    timeout: Duration,
}

/// What one monitor's answer means for the request.
enum Answer<T> {
    /// The answer the request wanted.
    Done(T),
    /// Not it: the failure to report if nobody else answers, and a monitor to ask as well.
    Not {
        /// Why this answer was not it.
        why: String,
        /// Where the answering monitor thinks the leader is.
        hint: Option<String>,
    },
}

impl MonitorClient {
    /// A client for the monitors at `monitors`; `timeout` bounds each monitor's answer.
    pub fn new(rpc: RpcClient, monitors: Vec<String>, timeout: Duration) -> MonitorClient {
        MonitorClient {
            rpc,
            monitors: Arc::new(monitors),
            timeout,
        }
    }

    /// The monitors' addresses.
    pub fn monitors(&self) -> &[String] {
        &self.monitors
    }

    /// Send `request` to every monitor at once, and to the leaders they hint at; return the
    /// first answer `judge` accepts. The requests still running then are dropped.
    async fn ask_all<Req, Resp, T>(
        &self,
        path: &'static str,
        request: Req,
        mut judge: impl FnMut(&str, Resp) -> Answer<T>,
    ) -> Result<T, MonitorUnavailable>
    where
        Req: Serialize + Send + Sync + 'static,
        Resp: DeserializeOwned + Send + 'static,
    {
        let request = Arc::new(request);
        let mut asked: Vec<String> = Vec::new();
        let mut pending = JoinSet::new();
        let mut ask = |addr: &str, pending: &mut JoinSet<_>| {
            if asked.iter().any(|a| a == addr) {
                return;
            }
            asked.push(addr.to_string());
            let (rpc, addr, request, timeout) = (
                self.rpc.clone(),
                addr.to_string(),
                request.clone(),
                self.timeout,
            );
            pending.spawn(async move {
                let reply = rpc.call::<Req, Resp>(&addr, path, &request, timeout).await;
                (addr, reply)
            });
        };
        for addr in self.monitors.iter() {
            ask(addr, &mut pending);
        }
        let mut last = String::from("no monitors configured");
        let mut unauthorized = None;
        while let Some(joined) = pending.join_next().await {
            let Ok((addr, reply)) = joined else {
                continue;
            };
            match reply {
                Ok(reply) => match judge(&addr, reply) {
                    Answer::Done(done) => return Ok(done),
                    Answer::Not { why, hint } => {
                        last = why;
                        if let Some(hint) = hint {
                            ask(&hint, &mut pending);
                        }
                    }
                },
                Err(err) => {
                    last = err.to_string();
                    if err.is_unauthorized() {
                        unauthorized = Some(last.clone());
                    }
                }
            }
        }
        Err(MonitorUnavailable {
            tried: asked,
            last,
            unauthorized,
        })
    }

    /// Ping the leader: its answer, `View` or `Foreign` (never `NotLeader`).
    pub async fn ping(&self, ping: &Ping) -> Result<PingReply, MonitorUnavailable> {
        self.ask_all(PING, ping.clone(), |addr, reply| match reply {
            PingReply::NotLeader { hint } => Answer::Not {
                why: format!("{addr} is not the leader"),
                hint,
            },
            answer => Answer::Done(answer),
        })
        .await
    }

    /// Ask the leader for an operator recovery (see [`RecoverRequest`]).
    pub async fn recover(
        &self,
        request: &RecoverRequest,
    ) -> Result<RecoverReply, MonitorUnavailable> {
        self.ask_all(RECOVER, request.clone(), |addr, reply| match reply {
            RecoverReply::NotLeader { hint } => Answer::Not {
                why: format!("{addr} is not the leader"),
                hint,
            },
            answer => Answer::Done(answer),
        })
        .await
    }

    /// Read the view: from the serving leader if one answers (the newest view there is),
    /// else the newest view any monitor has applied.
    pub async fn view(&self) -> Result<ViewReply, MonitorUnavailable> {
        let mut best: Option<ViewReply> = None;
        let serving = self
            .ask_all(VIEW, (), |addr, reply: ViewReply| {
                if reply.serving {
                    return Answer::Done(reply);
                }
                tracing::debug!(
                    "{addr} is not serving (view {}); leader hint {:?}",
                    reply.view.num,
                    reply.leader
                );
                let hint = reply.leader.as_ref().map(|(_, addr)| addr.clone());
                if best.as_ref().is_none_or(|b| reply.view.num > b.view.num) {
                    best = Some(reply);
                }
                Answer::Not {
                    why: format!("{addr} is not serving"),
                    hint,
                }
            })
            .await;
        match (serving, best) {
            (Ok(reply), _) => Ok(reply),
            (Err(_), Some(best)) => Ok(best),
            (Err(err), None) => Err(err),
        }
    }
}
