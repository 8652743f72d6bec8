//! `viewkv monitors list/add/remove` and `viewkv monitor --join` as real processes: the
//! README's procedure for replacing a dead monitor with a new machine at a new address, while
//! a `viewkv put` loop writes through two kv servers.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[path = "common/procs.rs"]
mod procs;

use procs::{free_addrs, viewkv, Killed, DEADLINE, EXE};

/// `viewkv monitor --id ID --peers PEERS` with its data in `DIR/monitor-ID` (`--join` if
/// `join`), logging to `DIR/monitor-ID.log`.
fn monitor(id: u64, peers: &str, dir: &Path, join: bool) -> Command {
    let log = std::fs::File::create(dir.join(format!("monitor-{id}.log"))).expect("a log file");
    let mut command = Command::new(EXE);
    command
        .args(["monitor", "--id", &id.to_string(), "--peers", peers])
        .arg("--data-dir")
        .arg(dir.join(format!("monitor-{id}")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    if join {
        command.arg("--join");
    }
    command
}

fn spawn(mut command: Command) -> Killed {
    Killed(command.spawn().expect("viewkv monitor starts"))
}

/// `viewkv monitors list --json`, parsed, once the leader answers and `ok` holds.
fn list_where(
    monitors: &str,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let (code, out, _) = viewkv(&["monitors", "list", "--json", "--monitors", monitors]);
        if code == 0 {
            if let Ok(doc) = serde_json::from_str::<serde_json::Value>(&out) {
                if doc["leader"] == doc["answered_by"] && ok(&doc) {
                    return doc;
                }
            }
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The voters' (id, address) in a `list --json` document.
fn voters(doc: &serde_json::Value) -> Vec<(u64, String)> {
    let members = doc["members"].as_array().cloned().unwrap_or_default();
    members
        .iter()
        .filter(|m| m["voter"] == true)
        .filter_map(|m| Some((m["id"].as_u64()?, m["addr"].as_str()?.to_string())))
        .collect()
}

/// `viewkv server --listen ADDR --monitors MONITORS`, logging to `DIR/server-N.log`.
fn server(n: usize, addr: &str, monitors: &str, dir: &Path) -> Killed {
    let log = std::fs::File::create(dir.join(format!("server-{n}.log"))).expect("a log file");
    let child = Command::new(EXE)
        .args(["server", "--listen", addr, "--monitors", monitors])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("viewkv server starts");
    Killed(child)
}

/// `viewkv put key-N value-N` for N = 0, 1, ... until `stop`; every put must succeed. Returns
/// how many were acknowledged.
fn writer(monitors: String, stop: Arc<AtomicBool>) -> JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let (key, value) = (format!("key-{n}"), format!("value-{n}"));
            let (code, out, err) = viewkv(&["put", &key, &value, "--monitors", &monitors]);
            assert_eq!(code, 0, "put {key} failed during the change: {out} {err}");
            n += 1;
        }
        n
    })
}

#[test]
fn a_dead_monitor_is_replaced_by_a_new_machine_at_a_new_address() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let addrs = free_addrs(3);
    let peers = format!("1={},2={},3={}", addrs[0], addrs[1], addrs[2]);
    let mut running: Vec<Option<Killed>> = (1..=3)
        .map(|id| Some(spawn(monitor(id, &peers, dir.path(), false))))
        .collect();
    let all = addrs.join(",");
    list_where(&all, "three voters", |doc| voters(doc).len() == 3);
    let _servers: Vec<Killed> = (1..=2)
        .zip(free_addrs(2))
        .map(|(n, addr)| server(n, &addr, &all, dir.path()))
        .collect();
    let start = Instant::now();
    loop {
        let (code, _, _) = viewkv(&["put", "ready", "yes", "--monitors", &all]);
        if code == 0 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "the kv service never served");
        std::thread::sleep(Duration::from_millis(100));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writes = writer(all.clone(), stop.clone());

    // Monitor 3's machine dies; its disk is gone.
    running[2] = None;
    std::fs::remove_dir_all(dir.path().join("monitor-3")).expect("wipe monitor 3");
    let refused = monitor(3, &peers, dir.path(), false)
        .status()
        .expect("viewkv monitor runs");
    assert!(
        !refused.success(),
        "an empty monitor the group knows started"
    );
    let log = std::fs::read_to_string(dir.path().join("monitor-3.log")).expect("its log");
    assert!(log.contains("viewkv monitors remove 3"), "{log}");

    let (code, out, err) = viewkv(&["monitors", "remove", "3", "--monitors", &all]);
    assert_eq!(code, 0, "remove: {out} {err}");
    assert!(!out.contains("monitor 3 "), "{out}");

    // The new machine: a new address, an empty disk, --join.
    let new_addr = free_addrs(1).remove(0);
    let new_peers = format!("1={},2={},3={new_addr}", addrs[0], addrs[1]);
    running[2] = Some(spawn(monitor(3, &new_peers, dir.path(), true)));
    let member = format!("3={new_addr}");
    let (code, out, err) = viewkv(&["monitors", "add", &member, "--monitors", &all]);
    assert_eq!(code, 0, "add: {out} {err}");
    assert!(
        out.contains(&format!("monitor 3  {new_addr}  voter")),
        "{out}"
    );

    let now = format!("{},{},{new_addr}", addrs[0], addrs[1]);
    let doc = list_where(&now, "the new voter", |doc| voters(doc).len() == 3);
    assert!(voters(&doc).contains(&(3, new_addr.clone())), "{doc}");

    // Without the leader, the new monitor is needed for a quorum.
    let leader = doc["leader"].as_u64().expect("a leader") as usize;
    running[leader - 1] = None;
    let doc = list_where(&now, "a new leader", |doc| doc["leader"] != leader);
    println!("monitor {leader} killed; {doc}");

    stop.store(true, Ordering::Relaxed);
    let acked = writes.join().expect("the writer");
    assert!(acked > 0, "no write happened during the change");
    for n in 0..acked {
        let (code, out, err) = viewkv(&["get", &format!("key-{n}"), "--monitors", &now]);
        assert_eq!(
            (code, out.trim()),
            (0, format!("value-{n}").as_str()),
            "{err}"
        );
    }
    println!("{acked} writes acknowledged during the replacement, all read back");
    drop(running);
}
