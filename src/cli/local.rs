//! A cluster of child processes on this machine: what `viewkv up` runs and the failover
//! benchmarks kill.

use std::path::{Path, PathBuf};

use super::children::{free_port, monitor_args, Proc};

/// What a node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Monitor with this id.
    Monitor(u64),
    /// Kv server.
    Server,
}

/// A kv server to start: its address, and where it serves the Redis protocol (if anywhere).
pub type ServerAddrs = (String, Option<String>);

/// One node: how to start it, and its process.
pub struct Node {
    /// Monitor or kv server.
    pub kind: Kind,
    /// Its address.
    pub addr: String,
    /// Where a kv server serves the Redis protocol, if it does.
    pub resp: Option<String>,
    /// Its arguments, to start it again the same way.
    args: Vec<String>,
    /// Its log file.
    log: PathBuf,
    /// The process.
    pub proc: Proc,
}

impl Node {
    /// `monitor 1` or `server`.
    pub fn label(&self) -> String {
        match self.kind {
            Kind::Monitor(id) => format!("monitor {id}"),
            Kind::Server => "server".to_string(),
        }
    }
}

/// Monitors and kv servers as child processes, killed when dropped.
pub struct LocalCluster {
    /// Monitor id → address.
    pub peers: Vec<(u64, String)>,
    /// Every node, monitors first.
    pub nodes: Vec<Node>,
}

impl LocalCluster {
    /// Start `peers` monitors and `servers` kv servers, data and logs under `dir`, each given
    /// `extra` arguments too.
    pub fn start(
        peers: Vec<(u64, String)>,
        servers: Vec<ServerAddrs>,
        dir: &Path,
        extra: &[String],
    ) -> anyhow::Result<LocalCluster> {
        let monitor_list = peers
            .iter()
            .map(|(_, a)| a.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (id, addr) in &peers {
            let mut args = monitor_args(*id, &peers, dir);
            args.extend(extra.iter().cloned());
            let log = dir.join(format!("monitor-{id}.log"));
            let proc = Proc::spawn(&format!("monitor {id}"), &args, &log)?;
            nodes.push(Node {
                kind: Kind::Monitor(*id),
                addr: addr.clone(),
                resp: None,
                args,
                log,
                proc,
            });
        }
        for (addr, resp) in &servers {
            let mut args = vec![
                "server".to_string(),
                "--listen".into(),
                addr.clone(),
                "--monitors".into(),
                monitor_list.clone(),
            ];
            if let Some(resp) = resp {
                args.extend(["--resp-listen".into(), resp.clone()]);
            }
            args.extend(extra.iter().cloned());
            let log = dir.join(format!("server-{}.log", addr.replace(':', "_")));
            let proc = Proc::spawn(&format!("server {addr}"), &args, &log)?;
            nodes.push(Node {
                kind: Kind::Server,
                addr: addr.clone(),
                resp: resp.clone(),
                args,
                log,
                proc,
            });
        }
        Ok(LocalCluster { peers, nodes })
    }

    /// Three monitors and three kv servers on free loopback ports.
    pub fn start_on_free_ports(dir: &Path) -> anyhow::Result<LocalCluster> {
        let peers = (1..=3)
            .map(|id| Ok((id, format!("127.0.0.1:{}", free_port()?))))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let servers = (0..3)
            .map(|_| Ok((format!("127.0.0.1:{}", free_port()?), None)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        LocalCluster::start(peers, servers, dir, &[])
    }

    /// The monitors' addresses.
    pub fn monitor_addrs(&self) -> Vec<String> {
        self.peers.iter().map(|(_, a)| a.clone()).collect()
    }

    fn node(&mut self, addr: &str) -> anyhow::Result<&mut Node> {
        self.nodes
            .iter_mut()
            .find(|n| n.addr == addr)
            .ok_or_else(|| anyhow::anyhow!("no node at {addr}"))
    }

    /// The node at `addr`, read-only.
    fn find(&self, addr: &str) -> anyhow::Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.addr == addr)
            .ok_or_else(|| anyhow::anyhow!("no node at {addr}"))
    }

    /// The process id of the node at `addr` (for reading its /proc entries).
    pub fn pid(&self, addr: &str) -> anyhow::Result<u32> {
        Ok(self.find(addr)?.proc.pid())
    }

    /// The log file of the node at `addr`.
    pub fn log(&self, addr: &str) -> anyhow::Result<&Path> {
        Ok(&self.find(addr)?.log)
    }

    /// `kill -9` the node at `addr`.
    pub fn kill(&mut self, addr: &str) -> anyhow::Result<()> {
        self.node(addr)?.proc.kill();
        Ok(())
    }

    /// Start the node at `addr` again, as before (a monitor with its data).
    pub fn restart(&mut self, addr: &str) -> anyhow::Result<()> {
        let node = self.node(addr)?;
        node.proc.kill();
        node.proc = Proc::spawn(&node.proc.name.clone(), &node.args, &node.log)?;
        Ok(())
    }

    /// An error naming the first node that exited, if any (its log is under `dir`).
    pub fn all_running(&mut self, dir: &Path) -> anyhow::Result<()> {
        let dead = self
            .nodes
            .iter_mut()
            .find_map(|n| n.proc.exited().then(|| n.proc.name.clone()));
        match dead {
            Some(name) => anyhow::bail!(
                "{name} exited unexpectedly; see its log in {}",
                dir.display()
            ),
            None => Ok(()),
        }
    }
}
