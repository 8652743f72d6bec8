//! A fault campaign: concurrent clients run a recorded workload while the nemesis injects
//! faults; then the faults heal, the cluster must serve again, and the history is checked.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::nemesis::{self, NemesisLog};
use super::workload::{client_loop, final_reads, judge, Recorder};
use super::{Cluster, ClusterOptions};
use crate::check::{AppendReport, Operation, Outcome, Report, Verdict};
use crate::client::ClientOptions;

/// What to run.
#[derive(Clone, Debug)]
pub struct CampaignOptions {
    /// Drives the fault schedule and the workload.
    pub seed: u64,
    /// How long the nemesis injects faults.
    pub duration: Duration,
    /// Concurrent clients.
    pub clients: u64,
    /// Kv servers (primary, backup and idle spares).
    pub servers: usize,
    /// Time the linearizability search may take.
    pub check_budget: Duration,
    /// Keys of 100 bytes stored before the faults start, so every state transfer the
    /// failovers cause carries a real store.
    pub preload_keys: usize,
}

impl CampaignOptions {
    /// Five clients, four kv servers, three monitors.
    pub fn new(seed: u64, duration: Duration) -> CampaignOptions {
        CampaignOptions {
            seed,
            duration,
            clients: 5,
            servers: 4,
            check_budget: Duration::from_secs(60),
            preload_keys: 0,
        }
    }
}

/// What a campaign found.
#[derive(Debug)]
pub struct CampaignReport {
    /// The seed that replays the schedule.
    pub seed: u64,
    /// Keys stored before the faults.
    pub preloaded: usize,
    /// Calls recorded.
    pub operations: usize,
    /// Calls that returned.
    pub ok: usize,
    /// Calls whose outcome is unknown.
    pub unknown: usize,
    /// Calls the service refused outright (never expected).
    pub refused: Vec<String>,
    /// The linearizability verdict on the register keys.
    pub linearizability: Report,
    /// The append-set check of each append key.
    pub appends: Vec<AppendReport>,
    /// What the nemesis did.
    pub nemesis: NemesisLog,
    /// The longest time no client call succeeded while faults were injected.
    pub longest_unavailability: Duration,
    /// From healing the last fault to the first successful write.
    pub recovery: Duration,
}

impl CampaignReport {
    /// Acknowledged appends missing from the final reads.
    pub fn lost(&self) -> usize {
        self.appends.iter().map(|a| a.lost.len()).sum()
    }

    /// Elements appended once but found more than once.
    pub fn duplicated(&self) -> usize {
        self.appends.iter().map(|a| a.duplicated.len()).sum()
    }

    /// Everything wrong: non-linearizable keys, append anomalies, refusals.
    pub fn anomalies(&self) -> usize {
        let keys = self
            .linearizability
            .keys
            .iter()
            .filter(|k| k.verdict.verdict() == Verdict::NotLinearizable)
            .count();
        let appends = self.appends.iter().filter(|a| !a.is_ok()).count();
        keys + appends + self.refused.len()
    }

    /// No anomaly, and the cluster served again after the faults healed.
    pub fn passed(&self) -> bool {
        self.anomalies() == 0
    }
}

impl fmt::Display for CampaignReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {}: {} ops ({} ok, {} unknown), linearizability {:?}, {} lost, {} duplicated, \
             {} failovers, longest unavailability {:?}, recovery {:?}",
            self.seed,
            self.operations,
            self.ok,
            self.unknown,
            self.linearizability.verdict(),
            self.lost(),
            self.duplicated(),
            self.nemesis.failovers,
            self.longest_unavailability,
            self.recovery
        )?;
        if !self.passed() {
            writeln!(f, "{}", self.linearizability)?;
            for append in self.appends.iter().filter(|a| !a.is_ok()) {
                writeln!(f, "{append}")?;
            }
            for refusal in &self.refused {
                writeln!(f, "refused: {refusal}")?;
            }
            for line in &self.nemesis.lines {
                writeln!(f, "  {line}")?;
            }
            writeln!(f, "replay the schedule with VIEWKV_SEED={}", self.seed)?;
        }
        Ok(())
    }
}

/// The longest stretch between consecutive successful completions up to `end` (the last one
/// counts as ending one): where it starts and ends, in the history's nanoseconds (`(end, end)`
/// if nothing completed).
pub fn longest_gap(ops: &[Operation], end: u64) -> (u64, u64) {
    let mut done: Vec<u64> = ops
        .iter()
        .filter_map(|op| match op.outcome {
            Outcome::Ok { at, .. } if at <= end => Some(at),
            _ => None,
        })
        .collect();
    done.push(end);
    done.sort_unstable();
    done.windows(2)
        .map(|w| (w[0], w[1]))
        .max_by_key(|(from, to)| to - from)
        .unwrap_or((end, end))
}

/// Run one campaign.
pub async fn run(options: CampaignOptions) -> CampaignReport {
    let mut cluster = Cluster::start(ClusterOptions::fast(options.seed)).await;
    for _ in 0..options.servers {
        cluster.start_server().await;
    }
    cluster
        .wait_view("a settled view", Duration::from_secs(30), |v| {
            v.primary.is_some() && v.acked && v.backup_ready
        })
        .await;
    cluster.load_keys(options.preload_keys, 100).await;
    let recorder = Arc::new(Recorder::new());
    let stop = Arc::new(AtomicBool::new(false));
    let client_options = ClientOptions {
        deadline: Duration::from_secs(10),
        ..cluster.client_options()
    };
    let clients: Vec<_> = (1..=options.clients)
        .map(|who| {
            let client = cluster.client_with(client_options);
            let seed = options.seed.wrapping_add(who);
            tokio::spawn(client_loop(
                recorder.clone(),
                client,
                who,
                seed,
                stop.clone(),
            ))
        })
        .collect();
    let start = Instant::now();
    let mut rng = StdRng::seed_from_u64(options.seed);
    let log = nemesis::run(&mut cluster, &mut rng, start + options.duration, start).await;
    let faults_end = recorder.now();

    // Everything is healed and up: the cluster must serve again.
    cluster.heal();
    let healed = Instant::now();
    let mut probe = cluster.client_with(ClientOptions {
        deadline: Duration::from_secs(60),
        ..client_options
    });
    let probe_ok = probe.put(b"probe", b"after the faults").await.is_ok();
    let recovery = if probe_ok {
        healed.elapsed()
    } else {
        Duration::MAX
    };

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    let mut reader = cluster.client_with(client_options);
    final_reads(&recorder, &mut reader).await;
    cluster.shutdown().await;

    let ops = recorder.operations();
    let (linearizability, appends) = judge(&ops, options.check_budget);
    let mut refused = recorder.refused();
    if !probe_ok {
        refused.push("the cluster did not serve again within 60 s of healing".into());
    }
    CampaignReport {
        seed: options.seed,
        preloaded: options.preload_keys,
        operations: ops.len(),
        ok: ops.iter().filter(|op| op.complete().is_some()).count(),
        unknown: ops.iter().filter(|op| op.complete().is_none()).count(),
        refused,
        linearizability,
        appends,
        nemesis: log,
        longest_unavailability: {
            let (from, to) = longest_gap(&ops, faults_end);
            Duration::from_nanos(to - from)
        },
        recovery,
    }
}

/// Summary table of many campaigns (the long campaign's output).
pub fn summary(reports: &[CampaignReport]) -> String {
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    for report in reports {
        for (kind, n) in &report.nemesis.faults {
            *faults.entry(kind.clone()).or_default() += n;
        }
    }
    let longest = reports
        .iter()
        .map(|r| r.longest_unavailability)
        .max()
        .unwrap_or_default();
    let recovery = reports.iter().map(|r| r.recovery).max().unwrap_or_default();
    let failing: Vec<u64> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.seed)
        .collect();
    let mut out = String::new();
    let rows = [
        ("seeds run", reports.len().to_string()),
        (
            "keys stored before the faults, per seed",
            reports
                .iter()
                .map(|r| r.preloaded)
                .max()
                .unwrap_or(0)
                .to_string(),
        ),
        (
            "operations",
            reports
                .iter()
                .map(|r| r.operations)
                .sum::<usize>()
                .to_string(),
        ),
        (
            "  of which unknown outcome",
            reports.iter().map(|r| r.unknown).sum::<usize>().to_string(),
        ),
        (
            "anomalies found",
            reports
                .iter()
                .map(CampaignReport::anomalies)
                .sum::<usize>()
                .to_string(),
        ),
        (
            "non-linearizable histories",
            reports
                .iter()
                .filter(|r| r.linearizability.verdict() == Verdict::NotLinearizable)
                .count()
                .to_string(),
        ),
        (
            "histories the checker could not decide",
            reports
                .iter()
                .filter(|r| r.linearizability.verdict() == Verdict::Unknown)
                .count()
                .to_string(),
        ),
        (
            "acknowledged writes lost",
            reports
                .iter()
                .map(CampaignReport::lost)
                .sum::<usize>()
                .to_string(),
        ),
        (
            "writes duplicated",
            reports
                .iter()
                .map(CampaignReport::duplicated)
                .sum::<usize>()
                .to_string(),
        ),
        (
            "failovers performed",
            reports
                .iter()
                .map(|r| r.nemesis.failovers)
                .sum::<u64>()
                .to_string(),
        ),
        ("longest unavailability", format!("{longest:.2?}")),
        ("longest recovery after healing", format!("{recovery:.2?}")),
        (
            "faults injected",
            faults
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("failing seeds", format!("{failing:?}")),
    ];
    out.push_str("| measure | value |\n|---|---|\n");
    for (name, value) in rows {
        out.push_str(&format!("| {name} | {value} |\n"));
    }
    out
}
