//! The built `viewkv` binary as real processes: `kill -9` of the monitor leader, and the
//! README's walkthrough (`viewkv up`, put, get, `kill -9` of the primary, get).

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
    view_json_with(&["--monitors", monitors])
}

/// `viewkv view --json ARGS`, parsed; `None` while no monitor answers.
fn view_json_with(args: &[&str]) -> Option<serde_json::Value> {
    let out = Command::new(EXE)
        .args(["view", "--json", "--timeout", "500ms"])
        .args(args)
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

/// Run `viewkv ARGS`; (exit code, stdout, stderr).
fn viewkv(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(EXE).args(args).output().expect("viewkv runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn up_put_get_kill_9_the_primary_get_again() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let monitors: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let servers: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut config = String::new();
    for (i, addr) in monitors.iter().enumerate() {
        config.push_str(&format!("[[monitor]]\nid = {}\naddr = \"{addr}\"\n", i + 1));
    }
    for addr in &servers {
        config.push_str(&format!("[[server]]\naddr = \"{addr}\"\n"));
    }
    let config_path = dir.path().join("cluster.toml");
    std::fs::write(&config_path, config).expect("the cluster file");
    let cfg = config_path.to_str().expect("a UTF-8 path");
    let out_path = dir.path().join("up.out");
    let up = Command::new(EXE)
        .args(["up", "--config", cfg, "--data-dir"])
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("an output file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("viewkv up starts");
    let up_pid = up.id();
    let _up = Killed(up);

    // `up` prints every child's address and pid.
    let pids: Vec<(String, String)> = wait_for("viewkv up to list its processes", || {
        let out = std::fs::read_to_string(&out_path).ok()?;
        let pids: Vec<(String, String)> = out
            .lines()
            .filter(|l| l.contains(" pid "))
            .filter_map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                Some((
                    words.get(words.len().checked_sub(3)?)?.to_string(),
                    words.last()?.to_string(),
                ))
            })
            .collect();
        (pids.len() == 6).then_some(pids)
    });

    let (code, stdout, stderr) = wait_for("a first put", || {
        let result = viewkv(&["put", "--config", cfg, "hello", "world"]);
        (result.0 == 0).then_some(result)
    });
    assert_eq!((code, stdout.trim()), (0, "OK"), "{stderr}");
    let (code, stdout, _) = viewkv(&["get", "--config", cfg, "hello"]);
    assert_eq!((code, stdout.as_str()), (0, "world\n"));
    let (code, stdout, _) = viewkv(&["get", "--config", cfg, "no-such-key"]);
    assert_eq!(
        (code, stdout.as_str()),
        (1, ""),
        "a missing key exits 1 and prints nothing"
    );

    let view = wait_for("a ready backup", || {
        let doc = view_json_with(&["--config", cfg])?;
        (doc["view"]["backup_ready"] == true && doc["view"]["acked"] == true).then_some(doc)
    });
    let primary = view["view"]["primary"]
        .as_str()
        .expect("a primary")
        .to_string();
    let (_, pid) = pids
        .iter()
        .find(|(addr, _)| *addr == primary)
        .expect("the primary's pid");
    let status = Command::new("kill")
        .args(["-9", pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let killed = Instant::now();
    let (code, stdout, stderr) = viewkv(&["get", "--config", cfg, "hello"]);
    println!(
        "get after kill -9 of the primary took {:?}",
        killed.elapsed()
    );
    assert_eq!((code, stdout.as_str()), (0, "world\n"), "{stderr}");

    // Ctrl-C stops everything.
    let status = Command::new("kill")
        .args(["-INT", &up_pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    for addr in monitors.iter().chain(&servers) {
        wait_for(&format!("{addr} to be released"), || {
            std::net::TcpListener::bind(addr).ok()
        });
    }
}
