//! Child processes of this binary: the local cluster (`viewkv up`) and the failover benchmarks
//! run monitors and kv servers as real processes, so `kill -9` means what it says.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// A child `viewkv` process, killed when dropped so no orphan outlives its parent.
pub struct Proc {
    /// What it is, for messages: `monitor 1`, `server 127.0.0.1:7101`.
    pub name: String,
    /// The OS process.
    child: Child,
    /// Whether its exit has been reported already.
    pub reported: bool,
}

impl Proc {
    /// Start `viewkv ARGS...` (with `--worker-threads`, see [`node_threads`]), with its stderr
    /// appended to `log`. A child gets a cluster secret
    /// and TLS files only from its arguments, not from this process's `VIEWKV_SECRET_FILE` and
    /// `VIEWKV_TLS_*`: the benchmarks' clusters are open, and `viewkv up` names its files.
    pub fn spawn(name: &str, args: &[String], log: &Path) -> anyhow::Result<Proc> {
        let exe = std::env::current_exe().context("cannot find the viewkv executable")?;
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open log file {}", log.display()))?;
        let mut command = Command::new(exe);
        die_with_parent(&mut command);
        command.args(args);
        size_as_node(&mut command);
        let child = command
            .env_remove("VIEWKV_SECRET_FILE")
            .env_remove("VIEWKV_TLS_CERT")
            .env_remove("VIEWKV_TLS_KEY")
            .env_remove("VIEWKV_TLS_CA")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            reported: false,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it has exited (and reap it if so).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runtime threads for each node of a cluster on this machine: a third of the cores, at least
/// one. Three of `viewkv up`'s six processes are busy under load (the primary, its backup and
/// the clients' front door); sized to every core each, they woke threads on cores another
/// process was using. On two cores, one thread each cut the p99 of `bench load --clients 32`
/// by about a tenth and raised its throughput (README, performance).
fn node_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (cores / 3).max(1)
}

/// A node's share of the cores ([`node_threads`]), unless `TOKIO_WORKER_THREADS` sets every
/// process's.
pub fn node_share() -> Option<usize> {
    std::env::var_os("TOKIO_WORKER_THREADS")
        .is_none()
        .then(node_threads)
}

/// Give the child `viewkv` of `command` a node's share of the cores ([`node_share`]).
pub fn size_as_node(command: &mut Command) {
    if let Some(threads) = node_share() {
        command.args(["--worker-threads", &threads.to_string()]);
    }
}

/// A free loopback port (bound then released; fine for a local tool, racy in theory).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("no free port")?;
    Ok(listener.local_addr()?.port())
}

/// `viewkv monitor` arguments for monitor `id` of `peers`, keeping data under `dir`.
pub fn monitor_args(id: u64, peers: &[(u64, String)], dir: &Path) -> Vec<String> {
    let peers = peers
        .iter()
        .map(|(id, addr)| format!("{id}={addr}"))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        "monitor".into(),
        "--id".into(),
        id.to_string(),
        "--peers".into(),
        peers,
        "--data-dir".into(),
        dir.join(format!("monitor-{id}")).display().to_string(),
    ]
}

/// A fresh directory for a run's data and logs: `dir` if given, else a new one under the
/// system's temporary directory.
pub fn run_dir(dir: Option<PathBuf>, prefix: &str) -> anyhow::Result<PathBuf> {
    let dir = match dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("{prefix}-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Make the child started by `command` die when this process does, however it dies (a
/// `kill -9` of `viewkv up` included), so no node outlives the cluster that started it. Linux
/// sends the signal when the spawning *thread* exits: spawn only from threads that live as long
/// as the process (the runtime's workers, not `spawn_blocking`).
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the hook runs in the forked child before exec and calls only prctl and getppid,
    // which are async-signal-safe; it touches no memory of the parent.
    let parent = std::process::id();
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the request above: then no signal will come.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("the parent exited while starting"));
            }
            Ok(())
        });
    }
}
