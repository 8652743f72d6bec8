//! Memory of a process holding the store: its RSS now, its peak while something runs, and
//! redis-server's for the same keys as the reference.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{key, value};
use crate::cli::children::free_port;

/// How often the sampler reads the RSS.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// VmRSS of process `pid`, in bytes.
pub(super) fn rss(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    viewkv::net::vm_rss(&text).with_context(|| format!("no readable VmRSS line in {path}"))
}

/// RSS figures of one store holding the keys.
#[derive(Clone, Copy, Debug)]
pub(super) struct Memory {
    /// RSS right after startup, empty.
    pub(super) empty: u64,
    /// RSS with every key loaded.
    pub(super) loaded: u64,
}

impl Memory {
    /// Extra RSS per raw key and value byte.
    pub(super) fn per_raw_byte(&self, raw: u64) -> f64 {
        self.loaded.saturating_sub(self.empty) as f64 / raw as f64
    }
}

/// Samples a process's RSS on its own thread until stopped; the peak.
pub(super) struct Sampler {
    /// Set to stop sampling.
    stop: Arc<AtomicBool>,
    /// Highest RSS seen so far.
    peak: Arc<AtomicU64>,
    /// The sampling thread; returns how many samples it took.
    thread: std::thread::JoinHandle<anyhow::Result<u64>>,
}

impl Sampler {
    pub(super) fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (stop2, peak2) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            let mut samples = 0;
            while !stop2.load(Ordering::Relaxed) {
                peak2.fetch_max(rss(pid)?, Ordering::Relaxed);
                samples += 1;
                std::thread::sleep(SAMPLE_EVERY);
            }
            Ok(samples)
        });
        Sampler { stop, peak, thread }
    }

    /// Stop; (peak RSS, samples taken).
    pub(super) fn stop(self) -> anyhow::Result<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self
            .thread
            .join()
            .map_err(|_| anyhow::anyhow!("the RSS sampler panicked"))??;
        Ok((self.peak.load(Ordering::Relaxed), samples))
    }
}

/// Whether `program` is an executable file in a directory of PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Redis's RSS before and after `redis-cli --pipe` loads the same keys; `None` without redis.
/// It runs in `dir`, its own empty directory, so no `dump.rdb` lying in the working directory
/// is loaded into it.
pub(super) fn redis_memory(
    dir: &Path,
    keys: u64,
    value_size: usize,
) -> anyhow::Result<Option<Memory>> {
    if !on_path("redis-server") || !on_path("redis-cli") {
        return Ok(None);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let port = free_port()?.to_string();
    let dir = dir.to_string_lossy();
    let args = [
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--dir",
        &dir,
    ];
    let server = Killed(
        Command::new("redis-server")
            .args(args)
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start redis-server")?,
    );
    let cli = |extra: &[&str]| {
        Command::new("redis-cli")
            .args(["-p", &port])
            .args(extra)
            .output()
    };
    let started = Instant::now();
    while !cli(&["ping"]).is_ok_and(|o| o.stdout.starts_with(b"PONG")) {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("redis-server on port {port} did not answer PING within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = server.0.id();
    let empty = rss(pid)?;
    let mut pipe = Command::new("redis-cli")
        .args(["-p", &port, "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start redis-cli --pipe")?;
    let stdin = pipe.stdin.take().context("redis-cli has no stdin")?;
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut out = BufWriter::with_capacity(1 << 20, stdin);
        for i in 0..keys {
            let (k, v) = (key(i), value(i, value_size));
            write!(out, "*3\r\n$3\r\nSET\r\n${}\r\n", k.len())?;
            out.write_all(&k)?;
            write!(out, "\r\n${}\r\n", v.len())?;
            out.write_all(&v)?;
            out.write_all(b"\r\n")?;
        }
        out.flush()
    });
    let output = pipe.wait_with_output().context("redis-cli --pipe failed")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the RESP writer panicked"))?
        .context("writing to redis-cli --pipe")?;
    let report = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !report.contains("errors: 0") {
        bail!(
            "redis-cli --pipe: {report} {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let dbsize = cli(&["dbsize"]).context("redis-cli dbsize")?;
    let size = String::from_utf8_lossy(&dbsize.stdout).trim().to_string();
    if size != keys.to_string() {
        bail!("redis holds {size} keys after loading {keys}");
    }
    Ok(Some(Memory {
        empty,
        loaded: rss(pid)?,
    }))
}
