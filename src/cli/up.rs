//! `viewkv up`: a local cluster as child processes, with a live status line, until Ctrl-C.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use viewkv::monitor::MonitorClient;
use viewkv::net::{RpcClient, Secret};

use super::load;
use super::local::{Kind, LocalCluster};
use super::monitor::stop_signal;

/// Arguments of `viewkv up`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// How many monitors (1, 3 or 5), on 127.0.0.1:7001 and up.
    #[arg(long, default_value_t = 3)]
    monitors: u16,
    /// How many kv servers, on 127.0.0.1:7101 and up.
    #[arg(long, default_value_t = 3)]
    servers: u16,
    /// Keep the monitors' data and every node's log here [default: a new temporary directory,
    /// deleted on exit].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Take addresses and timings from a cluster file instead (see config/local.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Give the kv servers Redis-protocol ports from this one up (6379, 6380, ...); 0: none.
    /// A cluster file's servers take their `resp` address instead.
    #[arg(long, default_value_t = 6379)]
    resp_port: u16,
}

/// The data directory, and whether we made it (and so delete it on exit).
fn data_dir(arg: Option<PathBuf>) -> anyhow::Result<(PathBuf, bool)> {
    let (dir, temporary) = match arg {
        Some(dir) => (dir, false),
        None => (
            std::env::temp_dir().join(format!("viewkv-up-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok((dir, temporary))
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !matches!(args.monitors, 1 | 3 | 5) {
        bail!("--monitors must be 1, 3 or 5 (a Raft group needs a majority)");
    }
    let file = load(args.config.as_ref())?;
    let peers: Vec<(u64, String)> = if file.monitors.is_empty() {
        (1..=args.monitors)
            .map(|i| (u64::from(i), format!("127.0.0.1:{}", 7000 + i)))
            .collect()
    } else {
        file.monitors
            .iter()
            .map(|m| (m.id, m.addr.clone()))
            .collect()
    };
    let servers: Vec<(String, Option<String>)> = if file.servers.is_empty() {
        (1..=args.servers)
            .map(|i| {
                let resp = (args.resp_port > 0)
                    .then(|| format!("127.0.0.1:{}", u32::from(args.resp_port) + u32::from(i) - 1));
                (format!("127.0.0.1:{}", 7100 + i), resp)
            })
            .collect()
    } else {
        file.servers
            .iter()
            .map(|s| (s.addr.clone(), s.resp.clone()))
            .collect()
    };
    for addr in peers
        .iter()
        .map(|(_, a)| a)
        .chain(servers.iter().map(|(a, _)| a))
    {
        if std::net::TcpListener::bind(addr).is_err() {
            bail!("{addr} is in use (is another `viewkv up` running?)");
        }
    }
    for addr in servers.iter().filter_map(|(_, resp)| resp.as_ref()) {
        if std::net::TcpListener::bind(addr).is_err() {
            bail!(
                "{addr} is in use (a Redis server, or another `viewkv up`?): give --resp-port \
                 another first port, or 0 for no Redis-protocol ports"
            );
        }
    }
    let (dir, temporary) = data_dir(args.data_dir)?;
    if !temporary && dir.join("monitor-1").exists() {
        eprintln!(
            "warning: {} holds monitor data from an earlier run. The monitors remember its view, \
             but the kv servers kept their data in memory only, so the service will wait for \
             servers that no longer exist. Use a fresh --data-dir to start over.",
            dir.display()
        );
    }
    let secret_path = super::secret_path(&file).unwrap_or_else(|| dir.join("secret"));
    let secret = ensure_secret(&secret_path)?;
    let mut config_args: Vec<String> = match &args.config {
        Some(path) => vec!["--config".into(), path.display().to_string()],
        None => Vec::new(),
    };
    config_args.extend(["--secret-file".into(), secret_path.display().to_string()]);
    let tls_files = super::tls_files(&file);
    let tls = super::tls(&file)?;
    if let Some(tls) = &tls {
        // Every child listens: refuse here, once, what each would refuse.
        tls.acceptor()?;
    }
    let tls_args: Vec<String> = [
        ("--tls-cert", &tls_files.cert),
        ("--tls-key", &tls_files.key),
        ("--tls-ca", &tls_files.ca),
    ]
    .iter()
    .filter_map(|(flag, path)| {
        path.as_ref()
            .map(|p| [flag.to_string(), p.display().to_string()])
    })
    .flatten()
    .collect();
    config_args.extend(tls_args.iter().cloned());
    let mut cluster = LocalCluster::start(peers.clone(), servers.clone(), &dir, &config_args)?;
    println!(
        "viewkv up: {} monitors, {} kv servers (data and logs in {})",
        peers.len(),
        servers.len(),
        dir.display()
    );
    for node in &cluster.nodes {
        let resp = node
            .resp
            .as_ref()
            .map_or(String::new(), |r| format!("  redis {r}"));
        println!(
            "  {:<10} {:<16} pid {}{resp}",
            node.label(),
            node.addr,
            node.proc.pid()
        );
    }
    println!(
        "Every request must prove the cluster secret in {}; in another terminal, try:",
        secret_path.display()
    );
    if let Some(resp) = servers.iter().find_map(|(_, resp)| resp.as_ref()) {
        let (host, port) = resp.rsplit_once(':').unwrap_or((resp.as_str(), "6379"));
        println!(
            "  redis-cli -h {host} -p {port} -a \"$(cat {})\" set hello world",
            secret_path.display()
        );
    }
    if tls_args.is_empty() {
        println!(
            "  export VIEWKV_SECRET_FILE={}; viewkv put hello world && viewkv get hello",
            secret_path.display()
        );
    } else {
        println!(
            "  export VIEWKV_SECRET_FILE={}; viewkv {} put hello world && viewkv {} get hello",
            secret_path.display(),
            tls_args.join(" "),
            tls_args.join(" ")
        );
    }
    println!("Ctrl-C stops the cluster.");
    let monitor_addrs: Vec<String> = peers.iter().map(|(_, a)| a.clone()).collect();
    let client = MonitorClient::new(
        RpcClient::new("viewkv-up", None)
            .with_secret(Some(secret))
            .with_tls(tls.as_ref()),
        monitor_addrs,
        Duration::from_millis(300),
    );
    let stop = stop_signal();
    tokio::pin!(stop);
    let terminal = std::io::stdout().is_terminal();
    let mut last = String::new();
    loop {
        for node in &mut cluster.nodes {
            if node.proc.exited() && !node.proc.reported {
                node.proc.reported = true;
                if terminal {
                    println!();
                }
                println!(
                    "{} {} (pid {}) exited",
                    node.label(),
                    node.addr,
                    node.proc.pid()
                );
            }
        }
        let line = status_line(&client, &cluster).await;
        if line != last || terminal {
            if terminal {
                print!("\r\x1b[2K{line}");
            } else {
                println!("{line}");
            }
            let _ = std::io::stdout().flush();
            last = line;
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
    println!("\nstopping {} processes", cluster.nodes.len());
    drop(cluster);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(ExitCode::SUCCESS)
}

/// The secret in `path`, made (random, readable by its owner only) if the file does not exist.
fn ensure_secret(path: &Path) -> anyhow::Result<Secret> {
    if path.exists() {
        return Ok(Secret::load(path)?);
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let secret = Secret::generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options
        .open(path)
        .with_context(|| format!("cannot create the secret file {}", path.display()))?;
    writeln!(out, "{}", secret.expose())
        .with_context(|| format!("cannot write the secret file {}", path.display()))?;
    Ok(secret)
}

/// `view 3 primary=... backup=... | leader: monitor 1 | up: 3/3 monitors, 3/3 servers`.
async fn status_line(client: &MonitorClient, cluster: &LocalCluster) -> String {
    let view = match client.view().await {
        Ok(reply) => {
            let leader = match reply.leader.filter(|_| reply.serving) {
                Some((id, _)) => format!("leader: monitor {id}"),
                None => "no monitor leader".to_string(),
            };
            let stalled = reply.stalled.map(|s| format!(" | {s}")).unwrap_or_default();
            format!("view {} | {leader}{stalled}", reply.view.summary())
        }
        Err(_) => "no monitor answers".to_string(),
    };
    let up = |monitors: bool| {
        let all = cluster
            .nodes
            .iter()
            .filter(|n| matches!(n.kind, Kind::Monitor(_)) == monitors);
        let total = all.clone().count();
        let alive = all.filter(|n| !n.proc.reported).count();
        format!("{alive}/{total}")
    };
    format!("{view} | up: {} monitors, {} servers", up(true), up(false))
}
