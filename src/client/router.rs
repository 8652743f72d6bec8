//! Getting a request to the primary and an answer back: the retry machinery, separate from
//! sequence numbering so a server can reuse it to proxy a client's request.

use std::time::{Duration, Instant};

use crate::kv::api::{KvError, Reply, Request, REQUEST};
use crate::monitor::{MonitorClient, MonitorUnavailable};
use crate::net::RpcClient;
use crate::view::View;

/// Timeouts and pacing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// How long one call (get, put, ...) may take, retries included.
    pub deadline: Duration,
    /// How long to wait between retries (the ping interval: a new view takes about that long).
    pub retry_interval: Duration,
    /// Deadline of one RPC to a kv server or monitor.
    pub rpc_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            deadline: Duration::from_secs(10),
            retry_interval: Duration::from_millis(100),
            rpc_timeout: Duration::from_secs(3),
        }
    }
}

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No confirmed answer before the deadline: the operation may or may not have been applied.
    #[error("no answer within {deadline:?}; the operation may or may not have been applied (last error: {last})")]
    Indeterminate {
        /// The deadline that passed.
        deadline: Duration,
        /// The last failure seen.
        last: String,
    },
    /// The service refused the operation; it was not applied.
    #[error("refused: {0}")]
    Refused(KvError),
    /// A monitor or server refused the request for want of the cluster secret: nothing was
    /// applied. Give the cluster's secret file.
    #[error("{0}")]
    Unauthorized(String),
    /// The first attempt of a request found the client's session gone from the duplicate
    /// table (evicted or expired): nothing was applied; the caller starts a new session.
    #[error("the service no longer remembers this client's session; nothing was applied")]
    SessionLost,
}

/// Sends requests to the primary of a cached view; re-reads the view only after a failure.
#[derive(Debug)]
pub struct Router {
    /// Sends requests to kv servers.
    rpc: RpcClient,
    /// Where views come from.
    monitors: MonitorClient,
    /// The cached view.
    view: Option<View>,
    /// Timeouts and pacing.
    options: ClientOptions,
    /// How many times the view was read from the monitors (6.824 counts them).
    view_reads: u64,
}

impl Router {
    /// A router reading views through `monitors` and sending requests with `rpc`.
    pub fn new(rpc: RpcClient, monitors: MonitorClient, options: ClientOptions) -> Router {
        Router {
            rpc,
            monitors,
            view: None,
            options,
            view_reads: 0,
        }
    }

    /// How many times the view was read from the monitors.
    pub fn view_reads(&self) -> u64 {
        self.view_reads
    }

    /// The options in force.
    pub fn options(&self) -> ClientOptions {
        self.options
    }

    async fn refresh_view(&mut self) -> Result<(), MonitorUnavailable> {
        self.view_reads += 1;
        let reply = self.monitors.view().await?;
        self.view = Some(reply.view);
        Ok(())
    }

    /// Send `request` to the primary until it is answered or the deadline passes. The same
    /// request (same client id and seq) is repeated, so the service applies it at most once.
    /// `request.deadline_ms` should be the wall-clock time `options.deadline` from now.
    pub async fn execute(&mut self, request: &Request) -> Result<Option<Vec<u8>>, ClientError> {
        let deadline = Instant::now() + self.options.deadline;
        let mut attempts = 0u32;
        loop {
            let mut last = String::new();
            if self.view.as_ref().is_none_or(|v| v.primary.is_none()) {
                match self.refresh_view().await {
                    Ok(()) => {}
                    Err(MonitorUnavailable {
                        unauthorized: Some(refusal),
                        ..
                    }) => return Err(ClientError::Unauthorized(refusal)),
                    Err(err) => last = err.to_string(),
                }
            }
            let primary = self.view.as_ref().and_then(|v| v.primary.clone());
            match primary {
                None if last.is_empty() => last = "the view has no primary yet".into(),
                None => {}
                Some(primary) => {
                    let timeout = self
                        .options
                        .rpc_timeout
                        .min(deadline.saturating_duration_since(Instant::now()));
                    attempts += 1;
                    let reply: Result<Reply, _> = self
                        .rpc
                        .call(&primary.addr, REQUEST, request, timeout)
                        .await;
                    match reply {
                        Ok(Reply::Ok(value)) => return Ok(value),
                        Ok(Reply::Err(err)) if err.is_retryable() => {
                            // Maybe the view changed under us: read it again.
                            last = format!("{}: {err}", primary.addr);
                            self.view = None;
                        }
                        Ok(Reply::Err(KvError::SessionExpired { .. })) if attempts == 1 => {
                            return Err(ClientError::SessionLost);
                        }
                        Ok(Reply::Err(
                            err @ (KvError::SessionExpired { .. } | KvError::Deadline { .. }),
                        )) if attempts > 1 => {
                            // An earlier attempt may have been applied.
                            return Err(ClientError::Indeterminate {
                                deadline: self.options.deadline,
                                last: err.to_string(),
                            });
                        }
                        Ok(Reply::Err(err)) => return Err(ClientError::Refused(err)),
                        Err(err) if err.is_unauthorized() => {
                            return Err(ClientError::Unauthorized(err.to_string()));
                        }
                        Err(err) => {
                            last = err.to_string();
                            self.view = None;
                        }
                    }
                }
            }
            tracing::debug!(
                "request {}/{}: {last}; retrying",
                request.client,
                request.seq
            );
            if Instant::now() + self.options.retry_interval >= deadline {
                return Err(ClientError::Indeterminate {
                    deadline: self.options.deadline,
                    last,
                });
            }
            tokio::time::sleep(self.options.retry_interval).await;
        }
    }
}
