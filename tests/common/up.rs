//! A `viewkv up` cluster of 3 monitors and 3 kv servers, each server with a Redis-protocol port,
//! for tests that drive it with Redis clients: `redis-cli`, `redis-benchmark`, the Python
//! `redis` package, or their own. Include it beside `procs.rs`:
//! `#[path = "common/procs.rs"] mod procs;` then `#[path = "common/up.rs"] mod up;`.
// Each test file uses the helpers it needs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::procs::{free_ports, run, viewkv, wait_for, Killed, EXE};

/// A running `viewkv up` and what a client needs to reach it.
pub struct Up {
    /// The `viewkv up` process (its children die with it).
    _up: Killed,
    /// Where its output, the nodes' logs and data are.
    dir: PathBuf,
    /// The cluster file.
    pub config: String,
    /// The cluster secret.
    pub secret: String,
    /// Kv server address → its Redis-protocol port.
    pub resp: BTreeMap<String, u16>,
    /// Kv server address → pid.
    pub pids: BTreeMap<String, String>,
}

impl Up {
    pub fn start(dir: &Path) -> Up {
        Up::start_with(dir, "")
    }

    /// [`Up::start`] with `settings` (top-level lines of the cluster file, e.g. TLS files).
    pub fn start_with(dir: &Path, settings: &str) -> Up {
        let secret_path = dir.join("secret");
        let mut config = format!("secret_file = {:?}\n", secret_path.display().to_string());
        config.push_str(settings);
        config.push_str("[timings]\nping_interval = \"50ms\"\n");
        // Nine ports, all different: 3 monitors, then each server's address and Redis port.
        let ports = free_ports(9);
        for (id, port) in (1..=3).zip(&ports) {
            config.push_str(&format!(
                "[[monitor]]\nid = {id}\naddr = \"127.0.0.1:{port}\"\n"
            ));
        }
        let mut resp = BTreeMap::new();
        for pair in ports[3..].chunks(2) {
            let (addr, port) = (format!("127.0.0.1:{}", pair[0]), pair[1]);
            config.push_str(&format!(
                "[[server]]\naddr = \"{addr}\"\nresp = \"127.0.0.1:{port}\"\n"
            ));
            resp.insert(addr, port);
        }
        let config_path = dir.join("cluster.toml");
        std::fs::write(&config_path, config).expect("the cluster file");
        let out_path = dir.join("up.out");
        let up = Command::new(EXE)
            .args(["up", "--config"])
            .arg(&config_path)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).expect("an output file"))
            .stderr(std::fs::File::create(dir.join("up.err")).expect("an error file"))
            .spawn()
            .expect("viewkv up starts");
        let up = Killed(up);
        let pids = wait_for("viewkv up to list its processes", || {
            let out = std::fs::read_to_string(&out_path).ok()?;
            let pids: BTreeMap<String, String> = out
                .lines()
                .filter(|l| l.trim_start().starts_with("server"))
                .filter_map(|l| {
                    let words: Vec<&str> = l.split_whitespace().collect();
                    let at = words.iter().position(|w| *w == "pid")?;
                    Some((words.get(1)?.to_string(), words.get(at + 1)?.to_string()))
                })
                .collect();
            (pids.len() == 3).then_some(pids)
        });
        let config = config_path.display().to_string();
        wait_for("a primary and a ready backup", || {
            let (code, out, _) = viewkv(&["view", "--json", "--config", &config]);
            let doc: serde_json::Value = serde_json::from_str(&out).ok()?;
            (code == 0 && doc["view"]["backup_ready"] == true).then_some(())
        });
        // The view needs only two servers; the spare must be up too.
        wait_for("every kv server's Redis port to answer", || {
            let answers = |port: &u16| TcpStream::connect(("127.0.0.1", *port)).is_ok();
            resp.values().all(answers).then_some(())
        });
        let secret = wait_for("the secret file", || {
            std::fs::read_to_string(&secret_path).ok()
        });
        Up {
            _up: up,
            dir: dir.to_path_buf(),
            config,
            secret: secret.trim().to_string(),
            resp,
            pids,
        }
    }

    /// The end of `viewkv up`'s output and of every node's log, to tell what the cluster did.
    pub fn logs(&self) -> String {
        /// Lines shown from the end of each file.
        const TAIL: usize = 40;
        let mut files = vec![self.dir.join("up.out"), self.dir.join("up.err")];
        if let Ok(entries) = std::fs::read_dir(self.dir.join("data")) {
            let mut logs: Vec<PathBuf> = entries
                .filter_map(|entry| Some(entry.ok()?.path()))
                .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
                .collect();
            logs.sort();
            files.extend(logs);
        }
        let mut out = String::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_else(|err| format!("({err})"));
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("==> {} <==\n", file.display()));
            for line in &lines[lines.len().saturating_sub(TAIL)..] {
                out.push_str(&without_colours(line));
                out.push('\n');
            }
        }
        out
    }

    /// `viewkv view --json`'s view, and whether it has a primary and a backup (by address)
    /// with the backup holding the whole state; `None` if the command gave no JSON.
    fn view(&self) -> Option<(Option<(String, String)>, bool)> {
        let (_, out, _) = viewkv(&["view", "--json", "--config", &self.config]);
        let doc: serde_json::Value = serde_json::from_str(&out).ok()?;
        let view = &doc["view"];
        let name = |slot: &str| Some(view[slot].as_str()?.to_string());
        let roles = name("primary").zip(name("backup"));
        Some((roles, view["backup_ready"] == true))
    }

    /// The view's (primary, backup) server addresses.
    pub fn roles(&self) -> (String, String) {
        let (roles, _) = self.view().expect("the view as JSON");
        roles.expect("a primary and a backup")
    }

    /// The view's (primary, backup) once its backup holds the whole state; `None` before.
    pub fn ready_roles(&self) -> Option<(String, String)> {
        let (roles, ready) = self.view()?;
        roles.filter(|_| ready)
    }

    /// The Redis port of a server that is neither primary nor backup.
    pub fn idle_port(&self) -> u16 {
        let (primary, backup) = self.roles();
        let idle = self.resp.keys().find(|a| **a != primary && **a != backup);
        self.resp[idle.expect("an idle server")]
    }

    /// `redis-cli -p PORT -a SECRET ARGS`: (exit code, stdout).
    pub fn cli(&self, port: u16, args: &[&str]) -> (i32, String) {
        let port = port.to_string();
        let mut all = vec!["-p", &port, "-a", &self.secret, "--no-auth-warning"];
        all.extend_from_slice(args);
        let (code, out, _) = run("redis-cli", &all);
        (code, out)
    }

    /// redis-cli's interactive mode through a pipe: `input`, one command a line; its stdout.
    pub fn piped(&self, port: u16, input: &str) -> String {
        let mut child = Command::new("redis-cli")
            .args([
                "-p",
                &port.to_string(),
                "-a",
                &self.secret,
                "--no-auth-warning",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("redis-cli runs");
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(input.as_bytes()).expect("write");
        }
        let out = child.wait_with_output().expect("redis-cli ends");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `commands` written to `port` at once, after an AUTH, as RESP arrays: the bytes that
    /// answer them, read until there are as many as `expected` has (or 30 s passed). Redis's
    /// own answers to the same pipeline are what `expected` holds.
    pub fn pipelined(&self, port: u16, commands: &[&[&str]], expected: &[u8]) -> Vec<u8> {
        use std::io::{Read as _, Write as _};
        let frame = |words: &[&str]| {
            let mut out = format!("*{}\r\n", words.len());
            for word in words {
                out.push_str(&format!("${}\r\n{word}\r\n", word.len()));
            }
            out
        };
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("a read timeout");
        let mut request = frame(&["AUTH", &self.secret]);
        for command in commands {
            request.push_str(&frame(command));
        }
        stream.write_all(request.as_bytes()).expect("write");
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        let wanted = b"+OK\r\n".len() + expected.len();
        while answer.len() < wanted {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        assert!(
            answer.starts_with(b"+OK\r\n"),
            "AUTH: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.split_off(b"+OK\r\n".len())
    }

    /// Run a Python program with `PORT` and `SECRET` in its environment; its stdout.
    pub fn python(&self, port: u16, program: &str) -> String {
        let out = Command::new("python3")
            .args(["-c", program])
            .env("PORT", port.to_string())
            .env("SECRET", &self.secret)
            .output()
            .expect("python3 runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("No module named 'redis'"),
            "the Python redis package is missing: `python3 -m pip install redis` (.ci/run does)"
        );
        assert!(out.status.success(), "python failed: {stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Up {
    /// A failing test shows what the cluster did: the logs go away with its directory.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// `line` without the terminal colour sequences (`ESC [ … m`) the nodes' logs carry.
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}
