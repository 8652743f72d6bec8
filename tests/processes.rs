//! The built `viewkv` binary as real processes: `kill -9` of the monitor leader, the README's
//! walkthrough (`viewkv up`, put, get, `kill -9` of the primary, get), a primary frozen with a
//! retry queued, stopped monitors (a hang, not a refusal) replacing no live server, and a
//! `viewkv up` over mutual TLS serving only commands given a certificate of its CA.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/procs.rs"]
mod procs;

use procs::{free_addrs, viewkv, wait_for, Killed, EXE};

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

/// `viewkv server` at `addr` with `extra` flags, logging to `DIR/server-N.log`.
fn start_server(n: usize, addr: &str, monitors: &str, dir: &Path, extra: &[&str]) -> Killed {
    let log = std::fs::File::create(dir.join(format!("server-{n}.log"))).expect("a log file");
    let child = Command::new(EXE)
        .args(["server", "--listen", addr, "--monitors", monitors])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("viewkv server starts");
    Killed(child)
}

/// Three monitors on free ports: the processes (by id - 1) and the `--monitors` list.
fn start_monitors(dir: &Path) -> (Vec<Option<Killed>>, String) {
    let addrs = free_addrs(3);
    let peers = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let monitors = (1..=3)
        .map(|id| Some(start_monitor(id, &peers, dir)))
        .collect();
    (monitors, addrs.join(","))
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

#[test]
fn kill_9_of_the_leader_process_elects_a_new_one() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (mut monitors, monitors_arg) = start_monitors(dir.path());

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

#[test]
fn up_put_get_kill_9_the_primary_get_again() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut monitors = free_addrs(6);
    let servers = monitors.split_off(3);
    // `up` makes the secret file the cluster file names; commands given the file prove it.
    let secret_path = dir.path().join("secret");
    let mut config = format!("secret_file = {:?}\n", secret_path.display().to_string());
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
    let secret = std::fs::read_to_string(&secret_path).expect("up wrote the secret file");
    assert!(secret.trim().len() >= 32, "a weak generated secret");
    let (code, _, stderr) = viewkv(&["get", "--monitors", &monitors.join(","), "hello"]);
    assert_eq!(code, 2, "a get without the secret: {stderr}");
    assert!(stderr.contains("secret"), "say what is missing: {stderr}");
    // A reader that goes away (`viewkv get big | head -c 1`) ends the command quietly, by
    // SIGPIPE as for any Unix tool, not with a panic. The value is larger than a pipe's buffer,
    // so the write meets the closed pipe whichever happens first.
    let big = "b".repeat(100_000);
    let (code, _, stderr) = viewkv(&["put", "--config", cfg, "big", &big]);
    assert_eq!(code, 0, "{stderr}");
    let mut reader_gone = Command::new(EXE)
        .args(["get", "--config", cfg, "big"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("viewkv get starts");
    drop(reader_gone.stdout.take());
    let output = reader_gone.wait_with_output().expect("viewkv get ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&output.status),
        Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        output.status
    );
    assert!(
        stderr.is_empty(),
        "nothing to say to a closed pipe: {stderr}"
    );
    let (code, _, stderr) = viewkv(&["delete", "--config", cfg, "big"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, _) = viewkv(&["get", "--config", cfg, "no-such-key"]);
    assert_eq!(
        (code, stdout.as_str()),
        (1, ""),
        "a missing key exits 1 and prints nothing"
    );

    // Nothing to recover in a healthy service: refused, with the reason.
    let (code, _, stderr) = viewkv(&["recover", "--accept-data-loss", "--config", cfg]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot recover"), "{stderr}");

    // A backup and its restore, through the CLI.
    let dump = dir.path().join("backup.vkv");
    let dump_arg = dump.to_str().expect("a UTF-8 path");
    let (code, stdout, stderr) = viewkv(&["dump", "--config", cfg, dump_arg]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("dumped 1 keys"), "{stdout}");
    let (code, _, stderr) = viewkv(&["restore", "--config", cfg, dump_arg]);
    assert_eq!(code, 2, "a restore into a service holding keys: {stderr}");
    assert!(
        stderr.contains("already holds 1 keys") && stderr.contains("--force"),
        "say why and what to do: {stderr}"
    );
    let (code, stdout, stderr) = viewkv(&["restore", "--force", "--config", cfg, dump_arg]);
    assert_eq!(
        (code, stdout.trim()),
        (
            0,
            format!("restored 1 keys (10 bytes) from {dump_arg}").as_str()
        ),
        "{stderr}"
    );
    let bytes = std::fs::read(&dump).expect("the dump");
    std::fs::write(&dump, &bytes[..bytes.len() - 3]).expect("a cut dump");
    let (code, _, stderr) = viewkv(&["restore", "--force", "--config", cfg, dump_arg]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cut short"), "{stderr}");

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

/// Whether process `pid` is stopped (state `T` in `/proc/PID/stat`).
fn stopped(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses and may hold spaces.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "T")
}

/// Send `signal` to process `pid`.
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {pid}");
}

#[test]
fn a_primary_frozen_past_the_session_ttl_never_applies_a_queued_retry_twice() {
    use viewkv::kv::api::{Op, Reply, Request, Sent, REQUEST};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (_monitors, monitors_arg) = start_monitors(dir.path());
    // One server that acknowledges alone, so the monitors keep it primary while it is frozen
    // (there is no backup to promote), with a session TTL shorter than the freeze.
    let server_addr = free_addrs(1).remove(0);
    let extra = ["--min-copies", "1", "--session-ttl", "3s"];
    let server = start_server(1, &server_addr, &monitors_arg, dir.path(), &extra);
    wait_for("an acknowledged primary", || {
        let doc = view_json(&monitors_arg)?;
        (doc["view"]["acked"] == true).then_some(())
    });
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let rpc = viewkv::net::RpcClient::new("frozen-test", None);
    let call = |request: Request| {
        let rpc = rpc.clone();
        let addr = server_addr.clone();
        async move {
            let sent = Sent::unstamped(request);
            rpc.call::<Sent, Reply>(&addr, REQUEST, &sent, Duration::from_secs(60))
                .await
        }
    };
    let append = Request {
        client: 77,
        seq: 1,
        deadline_ms: viewkv::kv::wall_ms() + 2_000,
        op: Op::Append {
            key: b"log".to_vec(),
            value: b"x".to_vec(),
        },
    };
    let first = runtime.block_on(call(append.clone()));
    assert!(matches!(first, Ok(Reply::Ok(None))), "{first:?}");
    // Freeze the primary (once the kernel says it is stopped: the signal is only queued when
    // `kill` returns); the client's retry of the same request waits in its socket.
    signal(server.0.id(), "-STOP");
    wait_for("the primary to be stopped", || {
        stopped(server.0.id()).then_some(())
    });
    let retry = runtime.spawn(call(append));
    // Longer than the session TTL (3 s): the fault, not a timing assertion.
    std::thread::sleep(Duration::from_secs(4));
    signal(server.0.id(), "-CONT");
    let retried = runtime.block_on(retry).expect("the retry task");
    let read = Request {
        client: 78,
        seq: 1,
        deadline_ms: viewkv::kv::wall_ms() + 10_000,
        op: Op::Get {
            key: b"log".to_vec(),
        },
    };
    let value = runtime.block_on(call(read));
    assert!(
        matches!(&value, Ok(Reply::Ok(Some(v))) if v == b"x"),
        "applied exactly once: {value:?}"
    );
    assert!(
        matches!(
            retried,
            Ok(Reply::Err(viewkv::kv::api::KvError::Deadline { .. }))
        ),
        "the queued retry past its deadline: {retried:?}"
    );
}

/// The primary and backup a `viewkv view --json` document names, and its view number.
fn view_roles(doc: &serde_json::Value) -> (serde_json::Value, serde_json::Value, u64) {
    let view = &doc["view"];
    let num = view["num"].as_u64().unwrap_or(0);
    (view["primary"].clone(), view["backup"].clone(), num)
}

#[test]
fn a_stopped_monitor_leader_then_a_stopped_first_monitor_replace_no_live_server() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (monitors, monitors_arg) = start_monitors(dir.path());
    let _servers: Vec<Killed> = (1..=2)
        .zip(free_addrs(2))
        .map(|(n, addr)| start_server(n, &addr, &monitors_arg, dir.path(), &[]))
        .collect();
    let settled = |doc: &serde_json::Value| {
        let view = &doc["view"];
        view["acked"] == true && view["backup_ready"] == true
    };
    let before = wait_for("a primary and a ready backup", || {
        view_json(&monitors_arg).filter(settled)
    });
    let leader = wait_for("a leader", || view_json(&monitors_arg)?["leader"].as_u64());
    // The leader, then monitor 1 (the first every server asks, leader or not), each stopped
    // for 6 s (as long as the stops that moved the view when pings asked one monitor at a time):
    // twelve times the 500 ms after which a leader declares a silent server dead.
    for id in [leader, 1] {
        let pid = match &monitors[(id - 1) as usize] {
            Some(monitor) => monitor.0.id(),
            None => panic!("monitor {id} is not running"),
        };
        signal(pid, "-STOP");
        std::thread::sleep(Duration::from_secs(6));
        let during = wait_for("a view while a monitor is stopped", || {
            view_json(&monitors_arg)
        });
        signal(pid, "-CONT");
        assert_eq!(
            view_roles(&during),
            view_roles(&before),
            "monitor {id} stopped: the view changed from {before} to {during}"
        );
        assert!(settled(&during), "monitor {id} stopped: {during}");
    }
    let after = wait_for("the view", || view_json(&monitors_arg));
    assert_eq!(view_roles(&after), view_roles(&before), "{after}");
}

#[test]
fn log_format_json_writes_one_object_per_line_at_the_rust_log_level() {
    let out = Command::new(EXE)
        .args(["view", "--monitors", "127.0.0.1:1", "--timeout", "200ms"])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "debug")
        .output()
        .expect("viewkv view runs");
    assert!(!out.status.success(), "no monitor listens on port 1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| match serde_json::from_str(line) {
            Ok(value) => value,
            Err(err) => panic!("not a JSON log line ({err}): {line}"),
        })
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "DEBUG"),
        "RUST_LOG=debug gave no debug line: {stderr}"
    );
    assert!(
        lines.iter().all(|l| l["fields"]["message"].is_string()),
        "a line without a message: {stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("viewkv: no monitor answered")),
        "the error for the user stays plain text: {stderr}"
    );
}

#[test]
fn with_no_cluster_running_the_cli_says_so_and_names_the_addresses() {
    let monitors = free_addrs(2).join(",");
    let first = monitors.split(',').next().unwrap_or_default().to_string();
    for args in [
        vec!["get", "k", "--deadline", "5m", "--monitors", &monitors],
        vec!["put", "k", "v", "--deadline", "5m", "--monitors", &monitors],
        vec!["view", "--monitors", &monitors],
    ] {
        let (code, _, stderr) = viewkv(&args);
        assert_ne!(code, 0, "{args:?}");
        for needle in [first.as_str(), "viewkv up", "--monitors", "refused"] {
            assert!(
                stderr.contains(needle),
                "{args:?}: {needle:?} missing: {stderr}"
            );
        }
        assert!(!stderr.contains("may or may not"), "{args:?}: {stderr}");
    }
}

#[test]
fn up_over_mutual_tls_serves_only_commands_given_a_certificate_of_its_ca() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = viewkv::testkit::TestCa::new("cli");
    let node = ca.issue("node");
    let user = ca.issue("user");
    let path = |p: &Option<std::path::PathBuf>| match p {
        Some(p) => p.display().to_string(),
        None => panic!("an issued file"),
    };
    let mut monitors = free_addrs(6);
    let servers = monitors.split_off(3);
    let secret_path = dir.path().join("secret");
    let mut config = format!(
        "secret_file = {:?}\ntls_cert = {:?}\ntls_key = {:?}\ntls_ca = {:?}\n",
        secret_path.display().to_string(),
        path(&node.cert),
        path(&node.key),
        path(&node.ca),
    );
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

    // The cluster file's TLS files serve the CLI as they serve the nodes.
    let (code, stdout, stderr) = wait_for("a first put over TLS", || {
        let result = viewkv(&["put", "--config", cfg, "hello", "world"]);
        (result.0 == 0).then_some(result)
    });
    assert_eq!((code, stdout.trim()), (0, "OK"), "{stderr}");
    let printed = std::fs::read_to_string(&out_path).expect("up's output");
    assert!(
        printed.contains("--tls-ca"),
        "up shows how to reach it: {printed}"
    );

    let list = monitors.join(",");
    let secret = secret_path.display().to_string();
    let plain = [
        "get",
        "--monitors",
        &list,
        "--secret-file",
        &secret,
        "hello",
    ];
    let (code, stdout, stderr) = viewkv(&plain);
    assert!(
        code != 0 && stdout.is_empty() && stderr.contains("a TLS listener?"),
        "a get without TLS fails and says TLS may be missing: {code} {stdout} {stderr}"
    );
    let (user_cert, user_key, ca_file) = (path(&user.cert), path(&user.key), path(&user.ca));
    let (code, stdout, stderr) = viewkv(&[
        "get",
        "--monitors",
        &list,
        "--secret-file",
        &secret,
        "--tls-cert",
        &user_cert,
        "--tls-key",
        &user_key,
        "--tls-ca",
        &ca_file,
        "hello",
    ]);
    assert_eq!((code, stdout.as_str()), (0, "world\n"), "{stderr}");
    let out = Command::new(EXE)
        .args(["view", "--json", "--monitors", &list])
        .env("VIEWKV_SECRET_FILE", &secret)
        .env("VIEWKV_TLS_CERT", &user_cert)
        .env("VIEWKV_TLS_KEY", &user_key)
        .env("VIEWKV_TLS_CA", &ca_file)
        .output()
        .expect("viewkv runs");
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the view as JSON, over TLS set by env");
    assert!(doc["view"]["num"].as_u64() > Some(0), "{doc}");

    // A file that is not there is named, not a panic.
    let missing = dir.path().join("no-such-key.pem");
    let missing_text = missing.display().to_string();
    let (code, _, stderr) = viewkv(&[
        "get",
        "--monitors",
        &list,
        "--tls-cert",
        &user_cert,
        "--tls-key",
        &missing_text,
        "hello",
    ]);
    assert!(
        code != 0 && stderr.contains(&missing_text) && !stderr.contains("panicked"),
        "{code} {stderr}"
    );

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
