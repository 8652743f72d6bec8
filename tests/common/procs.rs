//! Helpers for tests that run the built `viewkv` binary (and other programs) as processes.
// Each test file uses the helpers it needs.
#![allow(dead_code)]

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The `viewkv` binary under test.
pub const EXE: &str = env!("CARGO_BIN_EXE_viewkv");
/// How long a process test waits for anything.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A child process killed on drop, so a failing test leaves no orphans.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `n` loopback ports free right now, all different: each is held until all are drawn, where
/// drawing them one at a time may give the same port twice.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("an address").port())
        .collect()
}

/// `n` loopback addresses free right now, all different (see [`free_ports`]).
pub fn free_addrs(n: usize) -> Vec<String> {
    free_ports(n)
        .into_iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect()
}

/// Poll `probe` every 50 ms until it gives a value; panics after [`DEADLINE`].
pub fn wait_for<T>(what: &str, probe: impl FnMut() -> Option<T>) -> T {
    wait_within(what, DEADLINE, probe)
}

/// Poll `probe` every 50 ms until it gives a value; panics after `deadline`.
pub fn wait_within<T>(what: &str, deadline: Duration, probe: impl FnMut() -> Option<T>) -> T {
    poll_within(deadline, probe).unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

/// Poll `probe` every 50 ms until it gives a value; `None` after `deadline`.
pub fn poll_within<T>(deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if start.elapsed() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Run `program ARGS`; (exit code, stdout, stderr).
pub fn run(program: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("{program} does not run: {err}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run `viewkv ARGS`; (exit code, stdout, stderr).
pub fn viewkv(args: &[&str]) -> (i32, String, String) {
    run(EXE, args)
}
