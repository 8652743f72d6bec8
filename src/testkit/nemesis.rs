//! The campaign's fault schedule: one fault at a time, chosen, aimed and timed by a seeded
//! random generator, each undone before the next; between faults the cluster is given time to
//! settle again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::Cluster;
use crate::view::View;

/// The kinds of fault the nemesis injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Crash the primary, restart it later (empty, as a new incarnation).
    CrashPrimary,
    /// Crash the backup.
    CrashBackup,
    /// Crash an idle kv server.
    CrashIdle,
    /// Crash a monitor (sometimes the leader), restart it from its data later.
    CrashMonitor,
    /// Cut the cluster into two random halves.
    Partition,
    /// Cut the primary from every monitor, but not from its backup.
    PrimaryFromMonitors,
    /// Cut the monitor leader from the other monitors, but not from the kv servers.
    LeaderFromMonitors,
    /// Cut one direction of a random link.
    OneWay,
    /// 6.824's unreliable network on the kv servers.
    Unreliable,
    /// Random latency (and so reordering) on every message.
    Delay,
    /// Freeze a node (cut it from everyone, clients too) for longer than `dead_pings` intervals.
    Pause,
}

const ALL: &[Fault] = &[
    Fault::CrashPrimary,
    Fault::CrashBackup,
    Fault::CrashIdle,
    Fault::CrashMonitor,
    Fault::Partition,
    Fault::PrimaryFromMonitors,
    Fault::LeaderFromMonitors,
    Fault::OneWay,
    Fault::Unreliable,
    Fault::Delay,
    Fault::Pause,
];

/// How to undo a fault.
enum Undo {
    /// Restart this kv server.
    RestartServer(String),
    /// Restart this monitor.
    RestartMonitor(u64),
    /// Heal every cut link.
    Heal,
    /// Make the kv servers reliable again.
    Reliable,
    /// Remove the latency.
    NoDelay,
    /// Nothing was done.
    Nothing,
}

/// What the nemesis did.
#[derive(Clone, Debug, Default)]
pub struct NemesisLog {
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Times the primary changed (observed between faults).
    pub failovers: u64,
    /// Times the cluster did not settle within the deadline after a fault was undone.
    pub unsettled: u64,
    /// One line per fault, for a failing seed's report.
    pub lines: Vec<String>,
}

/// Whether the view has an acknowledged primary and a ready backup.
fn settled(view: &View) -> bool {
    view.primary.is_some() && view.acked && view.backup.is_some() && view.backup_ready
}

/// Inject faults until `until`, then leave the cluster healed with every node up.
pub async fn run(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    until: Instant,
    start: Instant,
) -> NemesisLog {
    let mut log = NemesisLog::default();
    let dead_after = cluster.options().timings.dead_after();
    let mut primary = cluster.view().await.primary.map(|m| m.id);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..800))).await;
        let view = cluster.view().await;
        let fault = ALL[rng.gen_range(0..ALL.len())];
        let undo = inject(cluster, rng, fault, &view).await;
        if matches!(undo, Undo::Nothing) {
            continue;
        }
        *log.faults.entry(format!("{fault:?}")).or_default() += 1;
        let hold = match fault {
            Fault::Pause => dead_after * rng.gen_range(2..5),
            _ => Duration::from_millis(rng.gen_range(300..2500)),
        };
        log.lines.push(format!(
            "{:>8.3}s {fault:?} for {hold:?} (view {})",
            start.elapsed().as_secs_f64(),
            view.summary()
        ));
        tokio::time::sleep(hold).await;
        undo_fault(cluster, undo).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut now_settled = false;
        while Instant::now() < deadline {
            if settled(&cluster.view().await) {
                now_settled = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !now_settled {
            log.unsettled += 1;
            log.lines
                .push("          the cluster did not settle within 30 s".to_string());
        }
        let now = cluster.view().await.primary.map(|m| m.id);
        if now != primary {
            log.failovers += 1;
            primary = now;
        }
    }
    log
}

/// Inject `fault`; how to undo it.
async fn inject(cluster: &mut Cluster, rng: &mut StdRng, fault: Fault, view: &View) -> Undo {
    let servers = cluster.server_addrs();
    let primary = view.primary.as_ref().map(|m| m.id.clone());
    let backup = view.backup.as_ref().map(|m| m.id.clone());
    // A kv server may die only when the view does not depend on it alone (design rule 7).
    let can_crash = settled(view) && servers.iter().all(|s| cluster.server_running(s));
    match fault {
        Fault::CrashPrimary | Fault::CrashBackup | Fault::CrashIdle if !can_crash => Undo::Nothing,
        Fault::CrashPrimary | Fault::CrashBackup => {
            let victim = if fault == Fault::CrashPrimary {
                primary
            } else {
                backup
            };
            match victim {
                Some(victim) => {
                    cluster.crash_server(&victim).await;
                    Undo::RestartServer(victim)
                }
                None => Undo::Nothing,
            }
        }
        Fault::CrashIdle => {
            let idle: Vec<&String> = servers.iter().filter(|s| !view.has_member(s)).collect();
            match idle.choose(rng) {
                Some(victim) => {
                    let victim = (*victim).clone();
                    cluster.crash_server(&victim).await;
                    Undo::RestartServer(victim)
                }
                None => Undo::Nothing,
            }
        }
        Fault::CrashMonitor => {
            let ids = cluster.monitor_ids();
            let id = if rng.gen_bool(0.5) {
                cluster.wait_leader(Duration::from_secs(30)).await
            } else {
                ids[rng.gen_range(0..ids.len())]
            };
            cluster.crash_monitor(id).await;
            Undo::RestartMonitor(id)
        }
        Fault::Partition => {
            let mut nodes = cluster.node_names();
            nodes.shuffle(rng);
            let cut = rng.gen_range(1..nodes.len());
            let (a, b) = nodes.split_at(cut);
            cluster.partition(a, b);
            Undo::Heal
        }
        Fault::PrimaryFromMonitors => match primary {
            Some(primary) => {
                cluster.partition(&[primary], &cluster.monitor_addrs());
                Undo::Heal
            }
            None => Undo::Nothing,
        },
        Fault::LeaderFromMonitors => {
            let leader = cluster.wait_leader(Duration::from_secs(30)).await;
            cluster.isolate_monitor(leader);
            Undo::Heal
        }
        Fault::OneWay => {
            let nodes = cluster.node_names();
            let from = &nodes[rng.gen_range(0..nodes.len())];
            let to = &nodes[rng.gen_range(0..nodes.len())];
            cluster.faults().cut(from, to);
            Undo::Heal
        }
        Fault::Unreliable => {
            cluster.set_unreliable(true);
            Undo::Reliable
        }
        Fault::Delay => {
            cluster
                .faults()
                .set_delay(Duration::ZERO, Duration::from_millis(rng.gen_range(5..30)));
            Undo::NoDelay
        }
        Fault::Pause => {
            let nodes = cluster.node_names();
            let node = nodes[rng.gen_range(0..nodes.len())].clone();
            cluster.isolate(&node);
            Undo::Heal
        }
    }
}

async fn undo_fault(cluster: &mut Cluster, undo: Undo) {
    match undo {
        Undo::RestartServer(addr) => cluster.restart_server(&addr).await,
        Undo::RestartMonitor(id) => cluster.restart_monitor(id).await,
        Undo::Heal => cluster.heal(),
        Undo::Reliable => cluster.set_unreliable(false),
        Undo::NoDelay => cluster.faults().set_delay(Duration::ZERO, Duration::ZERO),
        Undo::Nothing => {}
    }
}
