//! The built `viewkv` binary as three real monitor processes: `kill -9` the leader and watch
//! `viewkv view --json` name a new one.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_viewkv");
const DEADLINE: Duration = Duration::from_secs(60);

/// A child process killed on drop, so a failing test leaves no orphans.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("an address").port()
}

fn start_monitor(id: u64, peers: &str, dir: &Path) -> Killed {
    let log = std::fs::File::create(dir.join(format!("monitor-{id}.log"))).expect("a log file");
    let child = Command::new(EXE)
        .args([
            "monitor",
            "--id",
            &id.to_string(),
            "--peers",
            peers,
            "--data-dir",
        ])
        .arg(dir.join(format!("monitor-{id}")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("viewkv monitor starts");
    Killed(child)
}

/// `viewkv view --json`, parsed; `None` while no monitor answers.
fn view_json(monitors: &str) -> Option<serde_json::Value> {
    let out = Command::new(EXE)
        .args([
            "view",
            "--json",
            "--timeout",
            "500ms",
            "--monitors",
            monitors,
        ])
        .output()
        .expect("viewkv view runs");
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kill_9_of_the_leader_process_elects_a_new_one() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let peers = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let monitors_arg = addrs.join(",");
    let mut monitors: Vec<Option<Killed>> = (1..=3)
        .map(|id| Some(start_monitor(id, &peers, dir.path())))
        .collect();

    let first = wait_for("a leader", || view_json(&monitors_arg)?["leader"].as_u64());
    let doc = view_json(&monitors_arg).expect("the view");
    assert_eq!(doc["view"]["num"], 0, "no kv server pinged yet: {doc}");

    monitors[(first - 1) as usize] = None;
    let killed = Instant::now();
    let second = wait_for("a new leader", || {
        view_json(&monitors_arg)?["leader"]
            .as_u64()
            .filter(|id| *id != first)
    });
    println!(
        "leader {first} killed; leader {second} named {:?} later",
        killed.elapsed()
    );
    assert!((1..=3).contains(&second));
}
