//! One kv server: its state, its role in the view, the ping loop and the request router.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::api::{Entry, Forward, Request, TransferChunk, FORWARD, REQUEST, STATUS, TRANSFER};
use super::backup::Staging;
use super::store::Store;
use super::ServerConfig;
use crate::monitor::MonitorClient;
use crate::net::{bad_request, bincode_reply, decode, json_reply, not_found, Handler};
use crate::net::{HttpRequest, HttpResponse, RpcClient};
use crate::view::{Member, Ping, View};

/// Everything that changes, behind one short-held lock.
pub(super) struct State {
    /// The newest view this server has seen.
    pub view: View,
    /// The data and duplicate table.
    pub store: Store,
    /// How many entries the store reflects, in the primary's order.
    pub index: u64,
    /// Whether the store holds the service's state: set by being the first primary or by
    /// installing a transfer; a server without it must never serve as primary.
    pub initialized: bool,
    /// Backup: the view whose primary transferred our state; forwards of other views wait.
    pub installed_view: Option<u64>,
    /// Backup: a transfer being received.
    pub staging: Option<Staging>,
    /// Primary: entries applied here but not yet confirmed by the backup, in index order.
    pub log: VecDeque<Entry>,
    /// Primary: the view whose backup has received our full state (reported in pings).
    pub synced_view: Option<u64>,
    /// Primary: the view in which the backup refused us; we do not serve in it.
    pub fenced_view: Option<u64>,
    /// Primary: the service clock that time-stamps entries.
    pub clock: ServiceClock,
    /// Primary: since when replication to the backup has been failing, if it is.
    pub failing_since: Option<Instant>,
}

/// What client requests wait on: how far the backup confirmed, and whether we still serve.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Progress {
    /// Every entry up to this index is applied by the backup (or needs no backup).
    pub replicated: u64,
    /// Bumped whenever this server stops being a serving primary: waiters then give up.
    pub epoch: u64,
}

/// A running kv server.
pub struct KvServer {
    /// This server as views name it.
    me: Member,
    /// Settings.
    pub(super) config: ServerConfig,
    /// Sends forwards and transfers.
    pub(super) rpc: RpcClient,
    /// Pings go through it.
    monitors: MonitorClient,
    /// The mutable state.
    state: Mutex<State>,
    /// Replication progress, watched by waiting client requests.
    pub(super) progress: watch::Sender<Progress>,
    /// Wakes the replication task when entries are added to the log.
    pub(super) wake_sender: Notify,
    /// Wakes the ping loop early (a backup asked about a view it has not seen yet).
    wake_pinger: Notify,
    /// The replication task of the current view, if we are primary with a backup.
    sender: Mutex<Option<JoinHandle<()>>>,
}

/// The service clock as this server advances it while primary: the replicated clock it took
/// over, plus time on its own monotonic clock since then.
pub(super) struct ServiceClock {
    /// When we took the clock over.
    since: Instant,
    /// Its reading then.
    base_ms: u64,
}

impl ServiceClock {
    /// A clock reading `base_ms` now.
    fn starting_at(base_ms: u64) -> ServiceClock {
        ServiceClock {
            since: Instant::now(),
            base_ms,
        }
    }

    /// The current reading.
    pub fn now_ms(&self) -> u64 {
        self.base_ms + self.since.elapsed().as_millis() as u64
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl KvServer {
    /// A new, idle, empty server with a random incarnation.
    pub fn new(config: ServerConfig, rpc: RpcClient, monitors: MonitorClient) -> KvServer {
        let me = Member {
            id: config.id.clone(),
            addr: config.addr.clone(),
            incarnation: rand::random(),
        };
        KvServer {
            me,
            state: Mutex::new(State {
                view: View::default(),
                store: Store::new(config.limits),
                index: 0,
                initialized: false,
                installed_view: None,
                staging: None,
                log: VecDeque::new(),
                synced_view: None,
                fenced_view: None,
                clock: ServiceClock::starting_at(0),
                failing_since: None,
            }),
            config,
            rpc,
            monitors,
            progress: watch::channel(Progress::default()).0,
            wake_sender: Notify::new(),
            wake_pinger: Notify::new(),
            sender: Mutex::new(None),
        }
    }

    /// This server as a view member.
    pub fn me(&self) -> &Member {
        &self.me
    }

    /// The state, locked. Never held across an `.await`.
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Ping the monitors every interval (or sooner when woken) and follow the view.
    pub async fn ping_loop(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(self.config.timings.ping_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = self.wake_pinger.notified() => {}
            }
            let ping = {
                let st = self.state();
                Ping {
                    id: self.me.id.clone(),
                    addr: self.me.addr.clone(),
                    incarnation: self.me.incarnation,
                    viewnum: st.view.num,
                    backup_synced: st.synced_view == Some(st.view.num),
                    backup_failed: st
                        .failing_since
                        .is_some_and(|since| since.elapsed() > self.config.timings.dead_after()),
                }
            };
            match self.monitors.ping(&ping).await {
                Ok(view) => self.on_view(view),
                Err(err) => tracing::debug!("ping failed: {err}"),
            }
        }
    }

    /// Ask the ping loop to ping now.
    pub(super) fn ping_soon(&self) {
        self.wake_pinger.notify_one();
    }

    /// Start counting confirmations afresh from `index` (our numbering changed).
    pub(super) fn reset_progress(&self, index: u64) {
        self.progress.send_modify(|p| p.replicated = index);
    }

    /// Bump the epoch: waiting requests give up with `WrongServer`.
    pub(super) fn bump_epoch(&self) {
        self.progress.send_modify(|p| p.epoch += 1);
    }

    /// Adopt a view from the monitors and take the role it gives.
    fn on_view(self: &Arc<Self>, view: View) {
        let mut st = self.state();
        if view.num < st.view.num {
            return;
        }
        if view.num == st.view.num {
            // Same view; only its flags (acked, backup_ready) can differ.
            st.view = view;
            return;
        }
        tracing::info!("{}: view {}", self.me.id, view.summary());
        let is_primary = view.primary.as_ref() == Some(&self.me);
        let is_backup = view.backup.as_ref() == Some(&self.me);
        let was_primary = st.view.primary.as_ref() == Some(&self.me);
        st.view = view.clone();
        st.fenced_view = None;
        st.staging = None;
        st.failing_since = None;
        if !is_primary {
            // Requests waiting for confirmation will never get it from us.
            self.bump_epoch();
        }
        if is_primary {
            if !st.initialized && view.num == 1 {
                st.initialized = true;
            }
            if !st.initialized {
                tracing::error!(
                    "{}: made primary of view {} without holding the state; refusing to serve",
                    self.me.id,
                    view.num
                );
            }
            st.installed_view = None;
            if !was_primary {
                // Nothing we applied before is awaited by a client of ours.
                self.reset_progress(st.index);
                st.clock = ServiceClock::starting_at(st.store.clock_ms());
            }
            self.start_replication(&mut st, &view);
        } else {
            self.stop_replication(&mut st);
            if is_backup {
                // A new view as backup: our state counts only once its primary transferred it.
                st.initialized = false;
            } else {
                // Idle: whatever we held is no longer the service's state.
                st.store = Store::new(self.config.limits);
                st.index = 0;
                self.reset_progress(0);
                st.initialized = false;
                st.installed_view = None;
            }
        }
    }

    /// Replace the replication task for a new view in which we are primary.
    fn start_replication(self: &Arc<Self>, st: &mut State, view: &View) {
        self.stop_replication(st);
        if view.backup.is_none() {
            // No backup: everything applied is as replicated as it will ever be.
            let index = st.index;
            self.progress
                .send_modify(|p| p.replicated = p.replicated.max(index));
            return;
        }
        let task = tokio::spawn(self.clone().replicate(view.clone()));
        *lock(&self.sender) = Some(task);
    }

    /// Stop the replication task, if any, and drop the unconfirmed log (a new backup gets it
    /// in its transfer; without a backup it needs none).
    fn stop_replication(&self, st: &mut State) {
        if let Some(task) = lock(&self.sender).take() {
            task.abort();
        }
        st.log.clear();
        st.synced_view = None;
    }

    /// Stop everything (the server is shutting down).
    pub async fn stop(&self) {
        let task = lock(&self.sender).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// The JSON status document.
    pub fn status(&self) -> serde_json::Value {
        let st = self.state();
        let role = if st.view.primary.as_ref() == Some(&self.me) {
            "primary"
        } else if st.view.backup.as_ref() == Some(&self.me) {
            "backup"
        } else {
            "idle"
        };
        let progress = *self.progress.borrow();
        serde_json::json!({
            "id": self.me.id,
            "addr": self.me.addr,
            "incarnation": self.me.incarnation,
            "role": role,
            "view": st.view.to_json(),
            "keys": st.store.keys(),
            "bytes": st.store.bytes(),
            "index": st.index,
            "replicated": progress.replicated,
            "initialized": st.initialized,
            "backup_synced": st.synced_view == Some(st.view.num),
        })
    }
}

impl Handler for KvServer {
    async fn handle(&self, request: HttpRequest) -> HttpResponse {
        let path = request.uri().path().to_string();
        match path.as_str() {
            REQUEST => match decode::<Request>(request.body()) {
                Ok(req) => bincode_reply(&self.execute(req).await),
                Err(err) => bad_request(err),
            },
            FORWARD => match decode::<Forward>(request.body()) {
                Ok(forward) => bincode_reply(&self.on_forward(forward)),
                Err(err) => bad_request(err),
            },
            TRANSFER => match decode::<TransferChunk>(request.body()) {
                Ok(chunk) => bincode_reply(&self.on_transfer(chunk)),
                Err(err) => bad_request(err),
            },
            STATUS => json_reply(&self.status()),
            _ => not_found(&path),
        }
    }
}
