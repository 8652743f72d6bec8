//! `viewkv bench`: measurements on real processes. Figures, not pass/fail checks.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use viewkv::monitor::MonitorClient;
use viewkv::net::RpcClient;
use viewkv::view::Ping;

use super::children::{free_port, monitor_args, run_dir, Proc};

/// Arguments of `viewkv bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Which benchmark.
    #[command(subcommand)]
    bench: Bench,
}

#[derive(clap::Subcommand, Debug)]
enum Bench {
    /// Kill -9 the monitor leader repeatedly; time until a new leader answers pings.
    MonitorFailover {
        /// How many kills.
        #[arg(long, default_value_t = 10)]
        trials: usize,
        /// Keep data and logs here (default: a new temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.bench {
        Bench::MonitorFailover { trials, dir } => monitor_failover(trials, dir).await,
    }
}

/// Wait until `probe` succeeds, up to `deadline`.
async fn until<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> anyhow::Result<T>
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
        "n={} p50={:?} p99={:?} max={:?}",
        samples.len(),
        pick(0.50),
        pick(0.99),
        pick(1.0)
    )
}

async fn monitor_failover(trials: usize, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    if trials == 0 {
        bail!("--trials must be at least 1");
    }
    let dir = run_dir(dir, "viewkv-bench")?;
    let peers: Vec<(u64, String)> = (1..=3)
        .map(|id| Ok((id, format!("127.0.0.1:{}", free_port()?))))
        .collect::<anyhow::Result<_>>()?;
    let spawn = |id: u64| {
        Proc::spawn(
            &format!("monitor {id}"),
            &monitor_args(id, &peers, &dir),
            &dir.join(format!("monitor-{id}.log")),
        )
    };
    let mut monitors: Vec<Proc> = (1..=3).map(spawn).collect::<anyhow::Result<_>>()?;
    let addrs: Vec<String> = peers.iter().map(|(_, a)| a.clone()).collect();
    let client = MonitorClient::new(
        RpcClient::new("bench", None),
        addrs.clone(),
        Duration::from_millis(300),
    );
    let ping = Ping {
        id: "bench-pinger".into(),
        addr: "bench-pinger".into(),
        incarnation: 1,
        viewnum: 0,
        backup_synced: false,
    };
    println!(
        "3 monitors with default timings (data and logs in {})",
        dir.display()
    );
    let bar = ProgressBar::new(trials as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} kills {msg}")
            .context("progress bar template")?,
    );
    let mut samples = Vec::new();
    for _ in 0..trials {
        until("a leader", Duration::from_secs(30), || async {
            client.ping(&ping).await.ok()
        })
        .await?;
        let leader = until("the leader's id", Duration::from_secs(30), || async {
            client.view().await.ok()?.leader
        })
        .await?;
        let index = (leader.0 - 1) as usize;
        monitors[index].kill();
        let killed = Instant::now();
        until("a new leader", Duration::from_secs(30), || async {
            client.ping(&ping).await.ok()
        })
        .await?;
        let took = killed.elapsed();
        samples.push(took);
        bar.set_message(format!("last {took:?}"));
        bar.inc(1);
        monitors[index] = spawn(leader.0)?;
        // Let the restarted monitor catch up before the next kill: a lagging follower slows
        // the next election down (its vote requests are refused), which is not what we measure.
        let observer = RpcClient::new("bench-observer", None);
        until(
            "the killed monitor to catch up",
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
        if let Some(dead) = monitors
            .iter_mut()
            .find_map(|m| m.exited().then_some(&m.name))
        {
            bail!(
                "{} exited unexpectedly; see its log in {}",
                dead,
                dir.display()
            );
        }
    }
    bar.finish();
    println!(
        "monitor leader failover (kill -9 → first ping answered): {}",
        summarize(&mut samples)
    );
    Ok(ExitCode::SUCCESS)
}
