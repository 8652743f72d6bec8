//! `viewkv bench backup-sync`: load a large store, `kill -9` its backup, and measure what it
//! costs to bring up a new one: the time to a ready backup, the transfer rate, the primary's
//! memory, and what a light client load sees meanwhile. Redis's memory for the same keys is
//! measured beside viewkv's when `redis-server` is on PATH.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use viewkv::client::ClientOptions;
use viewkv::monitor::MonitorClient;
use viewkv::net::RpcClient;
use viewkv::view::View;
use viewkv::Client;

mod memory;

use memory::{redis_memory, rss, Memory, Sampler};

use super::bench::{settled, until};
use super::children::run_dir;
use super::local::LocalCluster;

/// Every key is this long.
const KEY_LEN: usize = 16;
/// Concurrent clients loading the keys.
const LOADERS: u64 = 64;
/// Concurrent clients of the light load.
const LIGHT_CLIENTS: usize = 8;
/// Pause between two operations of one light-load client.
const THINK: Duration = Duration::from_millis(5);
/// The light load measured before the kill, for comparison.
const BASELINE: Duration = Duration::from_secs(2);
/// Bytes in a MiB.
const MIB: f64 = (1u64 << 20) as f64;

/// Key `i`: `k` and 15 digits, 16 bytes.
fn key(i: u64) -> Vec<u8> {
    format!("k{i:015}").into_bytes()
}

/// The value of key `i`: its digits repeated to `size` bytes.
fn value(i: u64, size: usize) -> Vec<u8> {
    format!("{i:015}").bytes().cycle().take(size).collect()
}

/// One operation of the light load.
#[derive(Clone, Copy, Debug)]
struct Op {
    /// When it started.
    start: Instant,
    /// How long it took, retries included.
    took: Duration,
    /// Whether it failed (the client gave up).
    failed: bool,
}

/// Latency of the light-load operations in one window.
#[derive(Clone, Copy, Debug, Default)]
struct Latency {
    /// Operations in the window.
    ops: usize,
    /// Those that failed.
    errors: usize,
    /// Median time.
    p50: Duration,
    /// 99th percentile.
    p99: Duration,
    /// Longest.
    max: Duration,
}

impl Latency {
    /// The figures of the `ops` for which `within` holds.
    fn of(ops: &[Op], within: impl Fn(&Op) -> bool) -> Latency {
        let ops: Vec<&Op> = ops.iter().filter(|op| within(op)).collect();
        let mut took: Vec<Duration> = ops.iter().map(|op| op.took).collect();
        if took.is_empty() {
            return Latency::default();
        }
        took.sort();
        let pick =
            |q: f64| took[((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1];
        Latency {
            ops: took.len(),
            errors: ops.iter().filter(|op| op.failed).count(),
            p50: pick(0.5),
            p99: pick(0.99),
            max: pick(1.0),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "ops": self.ops, "errors": self.errors, "p50_ms": ms(self.p50),
            "p99_ms": ms(self.p99), "max_ms": ms(self.max),
        })
    }

    fn line(&self) -> String {
        format!(
            "n={} p50={:.1?} p99={:.1?} max={:.1?} errors={}",
            self.ops, self.p50, self.p99, self.max, self.errors
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Load the keys through `LOADERS` concurrent clients, with a progress bar.
async fn load(monitors: &[String], keys: u64, value_size: usize) -> anyhow::Result<Duration> {
    let bar = ProgressBar::new(keys);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} keys loaded, {per_sec}, eta {eta}")
            .context("progress bar template")?,
    );
    let started = Instant::now();
    let tasks: Vec<_> = (0..LOADERS.min(keys.max(1)))
        .map(|t| {
            let mut client = Client::new(monitors.to_vec());
            let bar = bar.clone();
            tokio::spawn(async move {
                for i in (t..keys).step_by(LOADERS as usize) {
                    client
                        .put(&key(i), &value(i, value_size))
                        .await
                        .with_context(|| format!("loading key {i}"))?;
                    bar.inc(1);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await.context("a loading task panicked")??;
    }
    bar.finish();
    Ok(started.elapsed())
}

/// Clients doing 50/50 gets and puts on the loaded keys, recording every operation.
struct LightLoad {
    /// Set to stop the clients.
    stop: Arc<AtomicBool>,
    /// The clients; each returns its operations.
    tasks: Vec<tokio::task::JoinHandle<Vec<Op>>>,
}

impl LightLoad {
    fn start(monitors: &[String], keys: u64, value_size: usize) -> LightLoad {
        let stop = Arc::new(AtomicBool::new(false));
        // Retry every 10 ms, so latencies show the service rather than the client's pacing.
        let options = ClientOptions {
            retry_interval: Duration::from_millis(10),
            ..ClientOptions::default()
        };
        let tasks = (0..LIGHT_CLIENTS)
            .map(|_| {
                let mut client = Client::with_options(monitors.to_vec(), options);
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut ops = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let i = rand::random::<u64>() % keys.max(1);
                        let start = Instant::now();
                        let failed = if rand::random::<bool>() {
                            client.get(&key(i)).await.is_err()
                        } else {
                            client.put(&key(i), &value(i, value_size)).await.is_err()
                        };
                        ops.push(Op {
                            start,
                            took: start.elapsed(),
                            failed,
                        });
                        tokio::time::sleep(THINK).await;
                    }
                    ops
                })
            })
            .collect();
        LightLoad { stop, tasks }
    }

    /// Stop the clients; every operation they did.
    async fn stop(self) -> anyhow::Result<Vec<Op>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut ops = Vec::new();
        for task in self.tasks {
            ops.extend(task.await.context("a light-load client panicked")?);
        }
        Ok(ops)
    }
}

/// What happened between the kill and the ready backup, as the monitors and the new backup's
/// /status showed it.
#[derive(Debug)]
struct Timeline {
    /// Kill → the first view with another backup.
    new_view: Duration,
    /// Kill → the new backup first reported a transfer in progress.
    receiving: Option<Duration>,
    /// Kill → the new backup first reported holding the installed state.
    installed: Option<Duration>,
    /// Kill → a view with the new backup ready.
    ready: Duration,
    /// That view.
    view: View,
    /// Every view seen, with its time since the kill.
    views: Vec<(Duration, String)>,
}

/// The /status document of the server at `addr`.
async fn status(rpc: &RpcClient, addr: &str) -> Option<serde_json::Value> {
    let body = rpc
        .call_raw(addr, "/status", Vec::new(), Duration::from_millis(500))
        .await
        .ok()?;
    serde_json::from_slice(&body).ok()
}

/// Watch the view and the new backup from `killed` until a backup other than `old` is ready.
async fn watch(monitors: &MonitorClient, old: &str, killed: Instant) -> anyhow::Result<Timeline> {
    let rpc = RpcClient::new("bench-observer", None);
    let (mut new_view, mut receiving, mut installed) = (None, None, None);
    let mut views: Vec<(Duration, String)> = Vec::new();
    loop {
        if killed.elapsed() > Duration::from_secs(120) {
            bail!("no ready backup 120 s after the kill; views seen: {views:?}");
        }
        if let Ok(reply) = monitors.view().await {
            let (view, at) = (reply.view, killed.elapsed());
            if views.last().is_none_or(|(_, s)| *s != view.summary()) {
                views.push((at, view.summary()));
            }
            if let Some(backup) = view.backup.clone().filter(|b| b.addr != old) {
                let new_view = *new_view.get_or_insert(at);
                if view.backup_ready {
                    return Ok(Timeline {
                        new_view,
                        receiving,
                        installed,
                        ready: at,
                        view,
                        views,
                    });
                }
                if let Some(s) = status(&rpc, &backup.addr).await {
                    let at = killed.elapsed();
                    if s["receiving_transfer"]["view"].as_u64() == Some(view.num) {
                        receiving.get_or_insert(at);
                    }
                    let ours = s["view"]["num"].as_u64() == Some(view.num);
                    if ours && s["role"] == "backup" && s["holds_state"] == true {
                        installed.get_or_insert(at);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The primary's own time for its last transfer of `keys` keys, from its log line "transfer of
/// N keys done in <Duration:?>".
fn logged_transfer(log: &Path, keys: u64) -> anyhow::Result<Option<Duration>> {
    let needle = format!("transfer of {keys} keys done in ");
    let text =
        std::fs::read_to_string(log).with_context(|| format!("cannot read {}", log.display()))?;
    let Some(line) = text.lines().rev().find(|l| l.contains(&needle)) else {
        return Ok(None);
    };
    let raw = line.rsplit("done in ").next().unwrap_or_default();
    let text: String = raw
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || c.is_alphabetic())
        .collect();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("µs") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ns") {
        (n, 1e-9)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        return Ok(None);
    };
    Ok(number
        .parse::<f64>()
        .ok()
        .map(|n| Duration::from_secs_f64(n * scale)))
}

/// `viewkv bench backup-sync`.
pub async fn run(
    keys: u64,
    value_size: usize,
    dir: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if keys == 0 {
        bail!("--keys must be at least 1");
    }
    let raw = keys * (KEY_LEN + value_size) as u64;
    let dir = run_dir(dir, "viewkv-bench-sync")?;
    let redis_dir = dir.join("redis");
    let redis = tokio::task::spawn_blocking(move || redis_memory(&redis_dir, keys, value_size))
        .await
        .context("the redis measurement panicked")??;

    let cluster = LocalCluster::start_on_free_ports(&dir)?;
    let addrs = cluster.monitor_addrs();
    let monitors = MonitorClient::new(
        RpcClient::new("bench", None),
        addrs.clone(),
        Duration::from_millis(300),
    );
    eprintln!(
        "3 monitors, 3 kv servers; loading {keys} keys of {KEY_LEN}+{value_size} bytes with \
         {LOADERS} clients (logs in {})",
        dir.display()
    );
    let view = settled(&monitors).await?;
    let primary = view
        .primary
        .clone()
        .context("a settled view has a primary")?;
    let pid = cluster.pid(&primary.addr)?;
    let empty = rss(pid)?;
    let load_time = load(&addrs, keys, value_size).await?;
    let before = settled(&monitors).await?;
    if before.primary != view.primary {
        bail!("the primary changed while loading: {}", before.summary());
    }
    let backup = before
        .backup
        .clone()
        .context("a settled view has a backup")?;
    let observer = RpcClient::new("bench-observer", None);
    let held = until("the primary's status", Duration::from_secs(10), || async {
        status(&observer, &primary.addr).await?["keys"].as_u64()
    })
    .await?;
    if held != keys {
        bail!("the primary holds {held} keys after loading {keys}");
    }
    let memory = Memory {
        empty,
        loaded: rss(pid)?,
    };

    let light = LightLoad::start(&addrs, keys, value_size);
    tokio::time::sleep(BASELINE).await;
    let before_kill = rss(pid)?;
    let sampler = Sampler::start(pid);
    let mut cluster = cluster;
    cluster.kill(&backup.addr)?;
    let killed = Instant::now();
    let timeline = watch(&monitors, &backup.addr, killed).await;
    let ready_at = Instant::now();
    let (peak, samples) = sampler.stop()?;
    let ops = light.stop().await?;
    let timeline = timeline?;
    let after = rss(pid)?;
    let logged = logged_transfer(cluster.log(&primary.addr)?, keys)?;

    // Before: operations done within the 2 s before the kill. During: every operation in
    // flight at any moment from the kill to the ready backup (one started just before the
    // kill and stuck until the backup was ready counts here, not before).
    let baseline = Latency::of(&ops, |op| {
        op.start >= killed - BASELINE && op.start + op.took < killed
    });
    let during = Latency::of(&ops, |op| {
        op.start + op.took >= killed && op.start < ready_at
    });
    let by_status = timeline
        .receiving
        .zip(timeline.installed)
        .map(|(from, to)| to.saturating_sub(from));
    let by_view = timeline.ready.saturating_sub(timeline.new_view);
    let (transfer, basis) = match (logged, by_status) {
        (Some(t), _) => (t, "primary's log"),
        (None, Some(t)) => (t, "backup's /status"),
        (None, None) => (by_view, "view"),
    };
    let rate = raw as f64 / 1e6 / transfer.as_secs_f64();
    let extra = peak.saturating_sub(before_kill);
    let extra_target = 64.0 * MIB + 0.1 * raw as f64;
    let view_changes = timeline.view.num.saturating_sub(before.num);
    let same_primary = timeline.view.primary == before.primary;
    let per_byte = memory.per_raw_byte(raw);
    let ok_rss = per_byte <= 1.5;
    let ok_ready = timeline.ready <= Duration::from_secs(3);
    let ok_rate = rate >= 200.0;
    let ok_extra = extra as f64 <= extra_target;
    let ok_views = view_changes <= 2 && same_primary;
    let targets = [
        ("rss_per_raw_byte", ok_rss),
        ("kill_to_ready", ok_ready),
        ("transfer_rate", ok_rate),
        ("extra_rss", ok_extra),
        ("view_changes", ok_views),
    ];
    let missed: Vec<&str> = targets
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| *name)
        .collect();
    let met = |ok: bool| if ok { "met" } else { "MISSED" };
    let opt_ms = |d: Option<Duration>| d.map(ms);

    let mut table = Vec::new();
    table.push(format!(
        "backup-sync: {keys} keys x ({KEY_LEN} + {value_size}) bytes = {:.1} MB raw, loaded in \
         {load_time:.1?}",
        raw as f64 / 1e6
    ));
    let row = |name: &str, value: String, target: &str| format!("{name:<38} {value:<40} {target}");
    table.push(row(
        "primary RSS per raw byte",
        format!(
            "{per_byte:.2}x ({:.1} -> {:.1} MiB)",
            memory.empty as f64 / MIB,
            memory.loaded as f64 / MIB
        ),
        &format!("<= 1.5x: {}", met(ok_rss)),
    ));
    match redis {
        Some(r) => table.push(row(
            "redis-server RSS per raw byte",
            format!(
                "{:.2}x ({:.1} -> {:.1} MiB)",
                r.per_raw_byte(raw),
                r.empty as f64 / MIB,
                r.loaded as f64 / MIB
            ),
            "(reference)",
        )),
        None => table.push(row(
            "redis-server RSS per raw byte",
            "skipped: redis-server not on PATH".into(),
            "",
        )),
    }
    table.push(row(
        "kill -9 backup -> new backup ready",
        format!("{:.3?}", timeline.ready),
        &format!("<= 3 s: {}", met(ok_ready)),
    ));
    table.push(row(
        "  kill -> view with the new backup",
        format!("{:.3?}", timeline.new_view),
        "",
    ));
    table.push(row(
        "  new backup in view -> ready",
        format!("{by_view:.3?}"),
        "",
    ));
    table.push(row(
        "  transfer (primary's log)",
        logged.map_or("n/a".into(), |t| format!("{t:.3?}")),
        "",
    ));
    table.push(row(
        "  transfer (backup /status)",
        by_status.map_or("n/a".into(), |t| format!("{t:.3?}")),
        "",
    ));
    table.push(row(
        "transfer rate",
        format!("{rate:.0} MB/s ({basis})"),
        &format!(">= 200 MB/s: {}", met(ok_rate)),
    ));
    table.push(row(
        "primary extra RSS during transfer",
        format!(
            "{:.1} MiB ({:.1} -> peak {:.1}, after {:.1}; {samples} samples)",
            extra as f64 / MIB,
            before_kill as f64 / MIB,
            peak as f64 / MIB,
            after as f64 / MIB
        ),
        &format!("<= {:.1} MiB: {}", extra_target / MIB, met(ok_extra)),
    ));
    table.push(row(
        "client ops done in the 2 s before kill",
        baseline.line(),
        "",
    ));
    table.push(row("client ops in flight kill -> ready", during.line(), ""));
    table.push(row(
        "view changes, kill -> ready",
        format!(
            "{view_changes}{}",
            if same_primary {
                ""
            } else {
                " (primary changed!)"
            }
        ),
        &format!("<= 2: {}", met(ok_views)),
    ));
    for (at, view) in &timeline.views {
        table.push(format!("  +{:>8.1} ms  view {view}", ms(*at)));
    }
    let table = table.join("\n");
    if json {
        eprintln!("{table}");
        let redis_json = redis.map(|r| {
            serde_json::json!({"rss_empty": r.empty, "rss_loaded": r.loaded,
                "rss_per_raw_byte": r.per_raw_byte(raw)})
        });
        let report = serde_json::json!({
            "keys": keys, "value_size": value_size, "raw_bytes": raw,
            "load_ms": ms(load_time),
            "viewkv": {"rss_empty": memory.empty, "rss_loaded": memory.loaded,
                "rss_per_raw_byte": per_byte},
            "redis": redis_json,
            "kill_to_ready_ms": ms(timeline.ready),
            "kill_to_new_view_ms": ms(timeline.new_view),
            "new_view_to_ready_ms": ms(by_view),
            "transfer_ms_log": opt_ms(logged),
            "transfer_ms_status": opt_ms(by_status),
            "transfer_mb_per_s": rate, "transfer_basis": basis,
            "rss_before_kill": before_kill, "rss_peak": peak, "rss_after_ready": after,
            "rss_samples": samples, "extra_rss": extra, "extra_rss_target": extra_target as u64,
            "client_before": baseline.json(), "client_during": during.json(),
            "view_changes": view_changes, "same_primary": same_primary,
            "views": timeline.views.iter().map(|(at, v)| serde_json::json!({"ms": ms(*at), "view": v}))
                .collect::<Vec<_>>(),
            "targets_met": targets.iter().map(|(name, ok)| (name.to_string(), (*ok).into()))
                .collect::<serde_json::Map<_, _>>(),
        });
        println!("{report}");
    } else {
        println!("{table}");
    }
    if missed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("targets missed: {}", missed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}
