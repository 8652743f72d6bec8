//! `viewkv bench`: a load generator and failover measurements on real processes. Figures, not
//! pass/fail checks.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use viewkv::client::ClientOptions;
use viewkv::monitor::MonitorClient;
use viewkv::net::RpcClient;
use viewkv::view::{Ping, View};
use viewkv::Client;

use super::children::run_dir;
use super::local::LocalCluster;

/// Arguments of `viewkv bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Which benchmark.
    #[command(subcommand)]
    bench: Bench,
}

impl Args {
    /// Whether this is `bench load`, the load generator.
    pub fn generates_load(&self) -> bool {
        matches!(self.bench, Bench::Load(_))
    }
}

#[derive(clap::Subcommand, Debug)]
enum Bench {
    /// Run a mix of reads and writes for a while; throughput and latency percentiles.
    Load(super::bench_load::Args),
    /// Serve the echo that `bench load --echo` loads (started by it).
    #[command(hide = true)]
    EchoServer,
    /// Kill -9 the monitor leader under client load; time until a new leader answers pings,
    /// and count client operations that failed (expected: none).
    MonitorFailover {
        /// How many kills.
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// Keep data and logs here (default: a new temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Kill -9 the primary under client load; time until the first successful write.
    PrimaryFailover {
        /// How many kills.
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// Keep data and logs here (default: a new temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Load a large store, kill -9 the backup, and measure the new backup's state transfer:
    /// memory, time to a ready backup, transfer rate, and client latency meanwhile.
    BackupSync {
        /// How many keys to load (16-byte keys).
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
        /// Bytes per value.
        #[arg(long, default_value_t = 100)]
        value_size: usize,
        /// Keep data and logs here (default: a new temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print the figures as one JSON object on stdout (the table goes to stderr).
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.bench {
        Bench::Load(args) => super::bench_load::run(args).await,
        Bench::EchoServer => super::bench_load::echo_server().await,
        Bench::MonitorFailover { trials, dir } => monitor_failover(trials, dir).await,
        Bench::PrimaryFailover { trials, dir } => primary_failover(trials, dir).await,
        Bench::BackupSync {
            keys,
            value_size,
            dir,
            json,
        } => super::bench_sync::run(keys, value_size, dir, json).await,
    }
}

/// Wait until `probe` succeeds, up to `deadline`.
pub(super) async fn until<T, F, Fut>(
    what: &str,
    deadline: Duration,
    mut probe: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if start.elapsed() > deadline {
            bail!("gave up after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// p50, p99 and max of `samples`, formatted.
pub fn summarize(samples: &mut [Duration]) -> String {
    samples.sort();
    let pick = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i]
    };
    format!(
        "n={} p50={:.0?} p99={:.0?} max={:.0?}",
        samples.len(),
        pick(0.50),
        pick(0.99),
        pick(1.0)
    )
}

/// Clients writing in a loop in the background, counting what succeeded and what failed.
struct Load {
    /// Set to stop the clients.
    stop: Arc<AtomicBool>,
    /// Successful writes.
    ok: Arc<AtomicU64>,
    /// Writes that gave up (deadline passed).
    failed: Arc<AtomicU64>,
    /// The clients.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(monitors: &[String], clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let tasks = (0..clients)
            .map(|i| {
                let mut client = Client::new(monitors.to_vec());
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    let key = format!("load-{i}");
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        match client.put(key.as_bytes(), n.to_string().as_bytes()).await {
                            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                        };
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    /// Stop the clients; (successful, failed) writes.
    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

fn progress(trials: usize, what: &str) -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::new(trials as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what} {{msg}}"))
            .context("progress bar template")?,
    );
    Ok(bar)
}

/// The view once it has a primary and a ready backup and all three servers are known alive.
pub(super) async fn settled(monitors: &MonitorClient) -> anyhow::Result<View> {
    until("a settled view", Duration::from_secs(30), || async {
        let view = monitors.view().await.ok()?.view;
        (view.primary.is_some() && view.acked && view.backup_ready).then_some(view)
    })
    .await
}

/// Stop the load and print the figures of a failover benchmark.
async fn report(
    bar: ProgressBar,
    load: Load,
    what: &str,
    samples: &mut [Duration],
) -> anyhow::Result<ExitCode> {
    bar.finish();
    let (ok, failed) = load.stop().await;
    println!("{what}: {}", summarize(samples));
    println!("client writes meanwhile: {ok} succeeded, {failed} failed");
    Ok(ExitCode::SUCCESS)
}

/// Start the cluster the failover benchmarks kill, and wait until it is settled.
async fn setup(
    trials: usize,
    dir: Option<PathBuf>,
) -> anyhow::Result<(PathBuf, LocalCluster, MonitorClient)> {
    if trials == 0 {
        bail!("--trials must be at least 1");
    }
    let dir = run_dir(dir, "viewkv-bench")?;
    let cluster = LocalCluster::start_on_free_ports(&dir)?;
    let monitors = MonitorClient::new(
        RpcClient::new("bench", None),
        cluster.monitor_addrs(),
        Duration::from_millis(300),
    );
    println!(
        "3 monitors, 3 kv servers, 4 writing clients, default timings (logs in {})",
        dir.display()
    );
    settled(&monitors).await?;
    Ok((dir, cluster, monitors))
}

async fn monitor_failover(trials: usize, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (dir, mut cluster, client) = setup(trials, dir).await?;
    let addrs = cluster.monitor_addrs();
    let ping = Ping {
        id: "bench-pinger".into(),
        addr: "bench-pinger".into(),
        incarnation: 1,
        viewnum: 0,
        backup_synced: false,
        backup_failed: false,
        cluster: 0,
        holds_state: false,
    };
    let load = Load::start(&addrs, 4);
    let bar = progress(trials, "monitor leader kills")?;
    let mut samples = Vec::new();
    for _ in 0..trials {
        until("a leader", Duration::from_secs(30), || async {
            client.ping(&ping).await.ok()
        })
        .await?;
        let (leader, addr) = until("the leader's address", Duration::from_secs(30), || async {
            client.view().await.ok().filter(|r| r.serving)?.leader
        })
        .await?;
        cluster.kill(&addr)?;
        let killed = Instant::now();
        until("a new leader", Duration::from_secs(30), || async {
            client.ping(&ping).await.ok()
        })
        .await?;
        let took = killed.elapsed();
        samples.push(took);
        bar.set_message(format!("last {took:.0?}"));
        bar.inc(1);
        cluster.restart(&addr)?;
        // Let the restarted monitor catch up before the next kill: a lagging follower slows
        // the next election down (its vote requests are refused), which is not what we measure.
        let observer = RpcClient::new("bench-observer", None);
        until(
            &format!("monitor {leader} to catch up"),
            Duration::from_secs(30),
            || async {
                let mut applied = Vec::new();
                for addr in &addrs {
                    let body = observer
                        .call_raw(addr, "/status", Vec::new(), Duration::from_millis(300))
                        .await
                        .ok()?;
                    let status: serde_json::Value = serde_json::from_slice(&body).ok()?;
                    applied.push(status["last_applied"].as_u64()?);
                }
                applied.windows(2).all(|w| w[0] == w[1]).then_some(())
            },
        )
        .await?;
        cluster.all_running(&dir)?;
    }
    report(
        bar,
        load,
        "monitor leader failover (kill -9 → first ping answered)",
        &mut samples,
    )
    .await
}

async fn primary_failover(trials: usize, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (dir, mut cluster, monitors) = setup(trials, dir).await?;
    let addrs = cluster.monitor_addrs();
    let load = Load::start(&addrs, 4);
    // The probe retries every 5 ms, so its time measures the service, not the client's pacing.
    let mut probe = Client::with_options(
        addrs.clone(),
        ClientOptions {
            deadline: Duration::from_secs(30),
            retry_interval: Duration::from_millis(5),
            rpc_timeout: Duration::from_secs(1),
        },
    );
    let bar = progress(trials, "primary kills")?;
    let mut samples = Vec::new();
    for trial in 0..trials {
        let view = settled(&monitors).await?;
        // A second of steady load between kills, as in life.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let primary = view.primary.context("a settled view has a primary")?;
        probe.put(b"probe", b"before").await?;
        cluster.kill(&primary.addr)?;
        let killed = Instant::now();
        probe.put(b"probe", trial.to_string().as_bytes()).await?;
        let took = killed.elapsed();
        samples.push(took);
        bar.set_message(format!("last {took:.0?}"));
        bar.inc(1);
        cluster.restart(&primary.addr)?;
        cluster.all_running(&dir)?;
    }
    report(
        bar,
        load,
        "primary failover (kill -9 → first write answered)",
        &mut samples,
    )
    .await
}
