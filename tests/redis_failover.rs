//! Issue 8's acceptance: a `kill -9` of the primary in the middle of a `redis-benchmark` run,
//! against a `viewkv up` cluster (3 monitors, 3 kv servers) through the Redis port of a server
//! that is not the primary. Beside the benchmark, a few connections of the test's own run a
//! recorded SET/GET/INCR workload on a few keys through the same port; the recorded history is
//! checked for linearizability with `viewkv::check`, and every acknowledged write is read back
//! from every live server. Both sides' errors are counted, and the figures the README quotes
//! are printed as a table (`cargo test --release --test redis_failover -- --nocapture`).
//! `VIEWKV_FAILOVER_KEYS=1000000` runs it at a million keys: the store is filled first, so the
//! promoted backup's transfer to the idle server happens under load at that size.
//!
//! Randomized choices (which non-primary is the front door, the recorded calls) follow
//! `viewkv::testkit::seed()`: printed, and replayed with `VIEWKV_SEED`.

#[path = "common/procs.rs"]
mod procs;
#[path = "common/up.rs"]
mod up;

use std::collections::BTreeMap;
use std::io::{self, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::encode::extend_encode;
use redis_protocol::resp2::types::BytesFrame;
use viewkv::check::{check, Call, Operation, Outcome, Verdict};
use viewkv::testkit::campaign::longest_gap;
use viewkv::testkit::workload::Recorder;

use procs::{poll_within, run, wait_for, wait_within, Killed, DEADLINE};
use up::Up;

/// Keys the recorded clients SET (each value written once) and GET.
const REGISTERS: [&str; 3] = ["failover:r0", "failover:r1", "failover:r2"];
/// Keys the recorded clients INCR and GET.
const COUNTERS: [&str; 2] = ["failover:n0", "failover:n1"];
/// Recorded client connections.
const CLIENTS: u64 = 6;
/// How long a recorded call waits for its reply before the client gives up on it. The front
/// door answers within its 10 s deadline (an error if the outcome is unknown), so a call still
/// unanswered after this long is a hang; shorter than the test's waits, so a hang is reported
/// as one.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// redis-benchmark's load, as the issue gives it (`-n` is sized by a calibration run, `-r` by
/// [`keyspace`]).
const BENCHMARK_ARGS: [&str; 6] = ["-t", "set,get", "-c", "50", "-d", "100"];
/// Keys redis-benchmark spreads its SETs over unless `VIEWKV_FAILOVER_KEYS` says otherwise.
const DEFAULT_KEYS: u64 = 100_000;
/// SETs of the calibration run, which measures this machine's rate through the front door.
const CALIBRATION_REQUESTS: u64 = 2000;
/// About how long each of the two benchmark tests should last at the calibrated rate; the kill
/// comes a second or so into the first, so both run well past it.
const SECONDS_PER_TEST: u64 = 10;
/// How long the whole benchmark may take before the test calls it hung.
const BENCHMARK_DEADLINE: Duration = Duration::from_secs(600);
/// Time the linearizability search may take.
const CHECK_BUDGET: Duration = Duration::from_secs(120);

#[test]
fn kill_9_of_the_primary_mid_redis_benchmark_loses_no_acknowledged_write() {
    let seed = viewkv::testkit::seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let up = Up::start(dir.path());
    let (primary, backup) = up.roles();
    let front = if rng.gen_bool(0.5) {
        ("the backup", backup.clone())
    } else {
        let idle = up.resp.keys().find(|a| **a != primary && **a != backup);
        ("the idle server", idle.expect("an idle server").clone())
    };
    let port = up.resp[&front.1];
    println!(
        "primary {primary}; redis-benchmark and the recorded clients go through {} {} \
         (Redis port {port})",
        front.0, front.1
    );

    let keys = keyspace();
    if keys > DEFAULT_KEYS {
        fill(&up, port, keys);
    }
    let requests = calibrate(&up, port);
    let recorder = Arc::new(Recorder::new());
    let mut benchmark = Benchmark::start(&up, port, requests, recorder.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<JoinHandle<ClientTally>> = (1..=CLIENTS)
        .map(|who| {
            let (recorder, stop) = (recorder.clone(), stop.clone());
            let (secret, seed) = (up.secret.clone(), rng.gen::<u64>());
            std::thread::spawn(move || client_loop(who, seed, port, &secret, &recorder, &stop))
        })
        .collect();

    // Kill the primary once both are well under way: the benchmark has reported finished
    // requests a few times over (it reports every 250 ms), and every recorded client has had
    // calls acknowledged.
    wait_for(
        "redis-benchmark and the recorded clients to get going",
        || {
            let acked = acknowledged_by_client(&recorder.operations(), 0);
            let all_going = (1..=CLIENTS).all(|who| acked.get(&who).copied().unwrap_or(0) >= 20);
            (benchmark.reports() >= 3 && all_going).then_some(())
        },
    );
    assert!(
        benchmark.running(),
        "redis-benchmark finished before the kill: the calibration sized -n too small"
    );
    // The primary now: on a loaded machine the view may have moved on since the start.
    let (primary, _) = up.roles();
    assert_ne!(
        primary, front.1,
        "the front door became the primary before the kill, through a failover nobody caused"
    );
    let (code, _, err) = run("kill", &["-9", &up.pids[&primary]]);
    assert_eq!(code, 0, "kill -9 of the primary: {err}");
    let killed_at = recorder.now();
    println!("killed the primary {primary} (pid {})", up.pids[&primary]);

    // Meanwhile, note when the view next has a backup holding the whole state: the promoted
    // backup's transfer to the idle server, under the benchmark's load.
    let (outcome, ready_again) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            poll_within(DEADLINE, || {
                let (now_primary, _) = up.ready_roles()?;
                (now_primary != primary).then(|| recorder.now())
            })
        });
        let outcome = benchmark.wait();
        (outcome, watcher.join().expect("the view watcher"))
    });
    println!(
        "redis-benchmark exited with status {} {:?}",
        outcome.code, outcome.errors
    );
    // The recorded clients go on until each has had calls acknowledged that it made after the
    // kill, then stop.
    let served_again = poll_within(DEADLINE, || {
        let acked = acknowledged_by_client(&recorder.operations(), killed_at);
        (1..=CLIENTS)
            .all(|who| acked.get(&who).copied().unwrap_or(0) >= 5)
            .then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let stopped_at = recorder.now();
    let tallies: Vec<ClientTally> = clients
        .into_iter()
        .map(|client| client.join().expect("a recorded client failed"))
        .collect();
    assert!(
        served_again.is_some(),
        "the recorded clients were not all served again within {DEADLINE:?} of the kill; their \
         errors: {:?}",
        errors(&tallies)
    );

    // Read every key back from every live server, recorded like any other call.
    let live: Vec<(&String, u16)> = up
        .resp
        .iter()
        .filter(|(addr, _)| **addr != primary)
        .map(|(addr, port)| (addr, *port))
        .collect();
    let mut finals = Vec::new();
    for (n, (addr, port)) in (CLIENTS + 1..).zip(&live) {
        let read = final_reads(n, *port, &up.secret, &recorder);
        finals.push((*addr, read));
    }

    let ops = recorder.operations();
    let started = Instant::now();
    let report = check(&ops, CHECK_BUDGET).expect("the recorder made a well-formed history");
    let check_time = started.elapsed();
    let mut lost = Vec::new();
    for (addr, read) in &finals {
        for (key, value) in read {
            for write in lost_writes(&ops, key.as_bytes(), value.as_deref()) {
                lost.push(format!("read from {addr}: {write}"));
            }
        }
    }

    let measured = Measured {
        seed,
        front: format!("{} {}", front.0, front.1),
        requests,
        benchmark: &outcome,
        killed_at,
        tallies: &tallies,
        ops: &ops,
        gap: longest_gap(&ops, stopped_at),
        ready_again,
        verdict: report.verdict(),
        check_time,
        lost: lost.len(),
    };
    println!("{measured}");

    assert_eq!(
        outcome.code, 0,
        "redis-benchmark did not complete: {}",
        outcome.stderr
    );
    for test in ["SET", "GET"] {
        let summary = outcome.summaries.iter().find(|s| s.test == test);
        let done = summary.map_or(0, |s| s.requests);
        assert_eq!(
            done, requests,
            "{test} requests completed:\n{}",
            outcome.stdout
        );
    }
    let first = outcome.first_progress.expect("a progress line");
    assert!(
        first < killed_at && outcome.exited_at > killed_at,
        "redis-benchmark's run does not span the kill"
    );
    assert!(
        ready_again.is_some(),
        "no backup held the whole state within {DEADLINE:?} of the kill"
    );
    let hung: usize = tallies.iter().map(|t| t.hung.len()).sum();
    assert_eq!(hung, 0, "recorded calls unanswered for {REPLY_TIMEOUT:?}");
    assert_eq!(
        report.verdict(),
        Verdict::Linearizable,
        "the recorded history (replay with VIEWKV_SEED={seed}):\n{report}"
    );
    assert!(
        lost.is_empty(),
        "acknowledged writes lost:\n{}",
        lost.join("\n")
    );
}

/// One Redis-protocol connection; `redis-protocol` encodes the commands and decodes the replies.
struct Connection {
    /// The connection to the server's Redis port.
    stream: TcpStream,
    /// Bytes read and not yet decoded.
    input: BytesMut,
}

impl Connection {
    /// Connect to the Redis port `port` and authenticate with `secret`.
    fn open(port: u16, secret: &str) -> io::Result<Connection> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let mut connection = Connection {
            stream,
            input: BytesMut::new(),
        };
        match connection.call(&[b"AUTH", secret.as_bytes()])? {
            BytesFrame::SimpleString(ok) if ok == "OK" => Ok(connection),
            other => Err(io::Error::other(format!("AUTH answered {other:?}"))),
        }
    }

    /// Send one command and read its reply. An error means the connection is no longer usable:
    /// it broke, timed out (`WouldBlock` or `TimedOut`), or sent something that does not parse.
    fn call(&mut self, args: &[&[u8]]) -> io::Result<BytesFrame> {
        let command = BytesFrame::Array(
            args.iter()
                .map(|arg| BytesFrame::BulkString(Bytes::copy_from_slice(arg)))
                .collect(),
        );
        let mut output = BytesMut::new();
        extend_encode(&mut output, &command, false).map_err(io::Error::other)?;
        self.stream.write_all(&output)?;
        let mut buffer = [0; 4096];
        loop {
            let decoded = decode_bytes_mut(&mut self.input)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if let Some((frame, _, _)) = decoded {
                return Ok(frame);
            }
            match self.stream.read(&mut buffer)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => self.input.extend_from_slice(&buffer[..n]),
            }
        }
    }
}

/// The command that performs `call`.
fn command(call: &Call) -> Vec<&[u8]> {
    match call {
        Call::Get { key } => vec![b"GET", key],
        Call::Put { key, value } => vec![b"SET", key, value],
        Call::Incr { key } => vec![b"INCR", key],
        other => panic!("the recorded workload makes no {other}"),
    }
}

/// What `reply` says `call` returned, as the history records it; panics on a reply that
/// command never gets.
fn returned(call: &Call, reply: BytesFrame) -> Option<Vec<u8>> {
    match (call, reply) {
        (Call::Get { .. }, BytesFrame::BulkString(value)) => Some(value.to_vec()),
        (Call::Get { .. }, BytesFrame::Null) => None,
        (Call::Put { .. }, BytesFrame::SimpleString(ok)) if ok == "OK" => None,
        (Call::Incr { .. }, BytesFrame::Integer(n)) => Some(n.to_string().into_bytes()),
        (call, reply) => panic!("{call} answered {reply:?}"),
    }
}

/// What one recorded client saw go wrong.
#[derive(Default)]
struct ClientTally {
    /// Error replies and broken connections, by message.
    errors: BTreeMap<String, usize>,
    /// Calls with no reply within [`REPLY_TIMEOUT`].
    hung: Vec<Operation>,
}

/// One recorded client: random GETs, SETs of values no other call writes, and INCRs on the
/// workload's keys through one connection to `port` (a new one if it breaks), until `stop`.
/// A call that gets an error reply, or no reply, is recorded with an unknown outcome.
fn client_loop(
    who: u64,
    seed: u64,
    port: u16,
    secret: &str,
    recorder: &Recorder,
    stop: &AtomicBool,
) -> ClientTally {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally = ClientTally::default();
    let mut connection: Option<Connection> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut live = match connection.take() {
            Some(live) => live,
            None => match Connection::open(port, secret) {
                Ok(live) => live,
                Err(err) => {
                    *tally.errors.entry(format!("connect: {err}")).or_default() += 1;
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        n += 1;
        let call = match rng.gen_range(0..10) {
            0..4 => {
                let keys = REGISTERS.iter().chain(&COUNTERS).collect::<Vec<_>>();
                Call::get(keys[rng.gen_range(0..keys.len())].as_bytes())
            }
            4..7 => Call::put(
                REGISTERS[rng.gen_range(0..REGISTERS.len())].as_bytes(),
                format!("c{who}.{n}"),
            ),
            _ => Call::incr(COUNTERS[rng.gen_range(0..COUNTERS.len())].as_bytes()),
        };
        let invoke = recorder.now();
        let reply = live.call(&command(&call));
        let complete = recorder.now();
        match reply {
            Ok(BytesFrame::Error(err)) => {
                *tally.errors.entry(err.to_string()).or_default() += 1;
                recorder.push(Operation::unknown(who, call, invoke));
                connection = Some(live);
            }
            Ok(reply) => {
                let value = returned(&call, reply);
                recorder.push(Operation::ok(who, call, invoke, complete, value));
                connection = Some(live);
            }
            Err(err) => {
                *tally
                    .errors
                    .entry(format!("connection: {err}"))
                    .or_default() += 1;
                let op = Operation::unknown(who, call, invoke);
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) {
                    tally.hung.push(op.clone());
                }
                recorder.push(op);
            }
        }
        // A little think time keeps the history at a size the checker decides in seconds.
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..2000)));
    }
    tally
}

/// Read every workload key through `port` as client `who`, recording the reads; a read that
/// fails is tried again (it changed nothing). The value read of each key.
fn final_reads(
    who: u64,
    port: u16,
    secret: &str,
    recorder: &Recorder,
) -> Vec<(&'static str, Option<Vec<u8>>)> {
    let mut connection = wait_for("a connection for the final reads", || {
        Connection::open(port, secret).ok()
    });
    REGISTERS
        .iter()
        .chain(&COUNTERS)
        .map(|key| {
            let call = Call::get(key.as_bytes());
            let value = wait_for("a final read", || {
                let invoke = recorder.now();
                let reply = connection.call(&command(&call));
                let complete = recorder.now();
                match reply {
                    Ok(BytesFrame::Error(_)) => None,
                    Ok(reply) => {
                        let value = returned(&call, reply);
                        let op = Operation::ok(who, call.clone(), invoke, complete, value.clone());
                        recorder.push(op);
                        Some(value)
                    }
                    Err(err) => panic!("the final reads through port {port}: {err}"),
                }
            });
            (*key, value)
        })
        .collect()
}

/// The errors all recorded clients saw, by message.
fn errors(tallies: &[ClientTally]) -> BTreeMap<&str, usize> {
    let mut all = BTreeMap::new();
    for (message, n) in tallies.iter().flat_map(|tally| &tally.errors) {
        *all.entry(message.as_str()).or_default() += n;
    }
    all
}

/// Acknowledged calls made (invoked) at or after `since`, by client.
fn acknowledged_by_client(ops: &[Operation], since: u64) -> BTreeMap<u64, usize> {
    let mut acked = BTreeMap::new();
    for op in ops.iter().filter(|op| op.invoke >= since) {
        if op.complete().is_some() {
            *acked.entry(op.client).or_default() += 1;
        }
    }
    acked
}

/// Acknowledged writes to `key` that a later read of `value` there shows lost, described. A
/// register (only SET writes it, each value once) has lost an acknowledged SET when the value
/// read was written by a SET that returned before that one began, or by no SET at all; a
/// counter (only INCR writes it) has lost an acknowledged INCR that returned more than it holds.
fn lost_writes(ops: &[Operation], key: &[u8], value: Option<&[u8]>) -> Vec<String> {
    let integer = |bytes: &[u8]| std::str::from_utf8(bytes).ok()?.parse::<i64>().ok();
    let on_key = || ops.iter().filter(move |op| op.call.key() == key);
    // The SET that wrote the value read, if any did.
    let writer = on_key().find(
        |op| matches!(&op.call, Call::Put { value: written, .. } if Some(&written[..]) == value),
    );
    let held = || format!("{:?}", value.map(String::from_utf8_lossy));
    let mut lost = Vec::new();
    for op in on_key() {
        match (&op.call, &op.outcome) {
            (Call::Put { .. }, Outcome::Ok { .. }) => {
                // What the key holds was written by this SET, or by one that may have come
                // after it.
                let kept = writer.is_some_and(|writer| {
                    std::ptr::eq(writer, op)
                        || writer.complete().is_none_or(|done| done >= op.invoke)
                });
                if !kept {
                    lost.push(format!("{op}: the key holds {}", held()));
                }
            }
            (
                Call::Incr { .. },
                Outcome::Ok {
                    value: returned, ..
                },
            ) => {
                let returned = returned.as_deref().and_then(integer);
                let holds = value.map_or(Some(0), integer);
                if returned
                    .zip(holds)
                    .is_none_or(|(returned, holds)| returned > holds)
                {
                    lost.push(format!("{op}: the counter holds {}", held()));
                }
            }
            _ => {}
        }
    }
    lost
}

/// What a benchmark test reported at its end.
struct Summary {
    /// The test's name (`SET`, `GET`).
    test: String,
    /// Requests completed.
    requests: u64,
    /// How long it ran.
    seconds: f64,
    /// Requests per second.
    throughput: f64,
    /// The slowest request, in milliseconds.
    max_ms: f64,
}

/// A finished redis-benchmark run.
struct BenchmarkOutcome {
    /// Its exit status (-1: killed by a signal).
    code: i32,
    /// Everything it printed, progress lines included (their `\r` made newlines).
    stdout: String,
    /// Everything it printed on stderr.
    stderr: String,
    /// Its errors: stderr lines but the warning that CONFIG GET gave it nothing.
    errors: Vec<String>,
    /// Each test's summary.
    summaries: Vec<Summary>,
    /// When (on the recorder's clock) it first reported finished requests.
    first_progress: Option<u64>,
    /// When (on the recorder's clock) its exit was seen.
    exited_at: u64,
}

/// A redis-benchmark run in progress, its output read as it comes.
struct Benchmark {
    /// The redis-benchmark process.
    child: Killed,
    /// The progress lines so far, each with when it was read (on the recorder's clock).
    progress: Arc<Mutex<Vec<(u64, String)>>>,
    /// The readers of its stdout and stderr, each giving all it read.
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    /// Whose clock the progress lines and the exit are timed on.
    recorder: Arc<Recorder>,
}

/// `VIEWKV_FAILOVER_KEYS`, or [`DEFAULT_KEYS`].
fn keyspace() -> u64 {
    match std::env::var("VIEWKV_FAILOVER_KEYS") {
        Ok(keys) => keys
            .parse()
            .unwrap_or_else(|_| panic!("VIEWKV_FAILOVER_KEYS={keys} is not a number of keys")),
        Err(_) => DEFAULT_KEYS,
    }
}

/// `redis-benchmark -p PORT -a SECRET` and the common arguments.
fn benchmark_command(up: &Up, port: u16) -> Command {
    let mut command = Command::new("redis-benchmark");
    command.args(["-p", &port.to_string(), "-a", &up.secret]);
    command.args(BENCHMARK_ARGS);
    command.args(["-r", &keyspace().to_string()]);
    command
}

/// Fill the store through `port` with about `keys` keys (three pipelined SETs per key, spread
/// at random: 95% of the keyspace), and say how many there are.
fn fill(up: &Up, port: u16, keys: u64) {
    let started = Instant::now();
    let out = benchmark_command(up, port)
        .args(["-t", "set", "-P", "16", "-q", "-n", &(3 * keys).to_string()])
        .output()
        .expect("redis-benchmark runs");
    assert!(
        out.status.success(),
        "filling the store: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, dbsize) = up.cli(port, &["DBSIZE"]);
    assert_eq!(code, 0, "DBSIZE: {dbsize}");
    println!(
        "filled the store with {} keys in {:.1} s",
        dbsize.trim(),
        started.elapsed().as_secs_f64()
    );
}

/// The benchmark's `-n`: about [`SECONDS_PER_TEST`] of SETs at the rate a short SET-only run
/// through `port` reaches (with `--csv` a test is one row, its rate the second field).
fn calibrate(up: &Up, port: u16) -> u64 {
    let out = benchmark_command(up, port)
        .args([
            "-t",
            "set",
            "-n",
            &CALIBRATION_REQUESTS.to_string(),
            "--csv",
        ])
        .output()
        .expect("redis-benchmark runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the calibration run: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rate: f64 = stdout
        .lines()
        .find_map(|line| line.strip_prefix("\"SET\",\""))
        .and_then(|rest| rest.split('"').next())
        .and_then(|rate| rate.parse().ok())
        .unwrap_or_else(|| panic!("no SET row in the calibration run's CSV: {stdout}"));
    let requests = ((rate * SECONDS_PER_TEST as f64) as u64).max(CALIBRATION_REQUESTS);
    println!("calibration: {rate:.0} SET/s through the front door alone; -n {requests}");
    requests
}

impl Benchmark {
    /// Start `redis-benchmark` against `port` with `requests` requests per test; its output is
    /// timed on `recorder`'s clock.
    fn start(up: &Up, port: u16, requests: u64, recorder: Arc<Recorder>) -> Benchmark {
        let mut child = benchmark_command(up, port)
            .args(["-n", &requests.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("redis-benchmark runs");
        let mut stdout = child.stdout.take().expect("redis-benchmark's stdout");
        let mut stderr = child.stderr.take().expect("redis-benchmark's stderr");
        let progress = Arc::new(Mutex::new(Vec::new()));
        let lines = (progress.clone(), recorder.clone());
        let stdout = std::thread::spawn(move || {
            let (progress, recorder) = lines;
            let mut all = Vec::new();
            let mut line = Vec::new();
            let mut buffer = [0; 4096];
            loop {
                let n = match stdout.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => panic!("reading redis-benchmark's output: {err}"),
                };
                all.extend_from_slice(&buffer[..n]);
                for &byte in &buffer[..n] {
                    if byte != b'\r' && byte != b'\n' {
                        line.push(byte);
                        continue;
                    }
                    let text = String::from_utf8_lossy(&line).trim().to_string();
                    if !text.is_empty() {
                        let mut progress = progress.lock().expect("the progress lines");
                        progress.push((recorder.now(), text));
                    }
                    line.clear();
                }
            }
            String::from_utf8_lossy(&all).replace('\r', "\n")
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Benchmark {
            child: Killed(child),
            progress,
            stdout: Some(stdout),
            stderr: Some(stderr),
            recorder,
        }
    }

    /// When each progress line reporting finished requests was read.
    fn reported(&self) -> Vec<u64> {
        let progress = self.progress.lock().expect("the progress lines");
        progress
            .iter()
            .filter(|(_, line)| overall_rate(line).is_some_and(|rate| rate > 0.0))
            .map(|(at, _)| *at)
            .collect()
    }

    /// How many progress lines have reported finished requests.
    fn reports(&self) -> usize {
        self.reported().len()
    }

    /// Whether it is still running.
    fn running(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }

    /// Wait (at most [`BENCHMARK_DEADLINE`]) for it to end; what it did.
    fn wait(mut self) -> BenchmarkOutcome {
        let status = wait_within("redis-benchmark to end", BENCHMARK_DEADLINE, || {
            self.child.0.try_wait().expect("redis-benchmark's status")
        });
        let exited_at = self.recorder.now();
        let join = |reader: Option<JoinHandle<String>>| {
            let reader = reader.expect("an output reader");
            reader.join().expect("reading redis-benchmark's output")
        };
        let stdout = join(self.stdout.take());
        let stderr = join(self.stderr.take());
        let errors = stderr
            .lines()
            .filter(|line| !line.is_empty() && !line.contains("Could not fetch server CONFIG"))
            .map(str::to_string)
            .collect();
        BenchmarkOutcome {
            code: status.code().unwrap_or(-1),
            summaries: summaries(&stdout),
            first_progress: self.reported().first().copied(),
            exited_at,
            stdout,
            stderr,
            errors,
        }
    }
}

/// The overall rate a progress line (`SET: rps=… (overall: …) avg_msec=…`) reports, if it is
/// one and the rate is a number (`-nan` before the first request finishes).
fn overall_rate(line: &str) -> Option<f64> {
    let rest = line.split_once("(overall: ")?.1;
    let rate: f64 = rest.split(')').next()?.parse().ok()?;
    rate.is_finite().then_some(rate)
}

/// Each test's summary in redis-benchmark's default (not `-q`, not `--csv`) output.
fn summaries(output: &str) -> Vec<Summary> {
    let mut found: Vec<Summary> = Vec::new();
    let mut lines = output.lines().map(str::trim);
    let number = |text: Option<&str>| -> f64 {
        let text = text.unwrap_or_default();
        text.parse()
            .unwrap_or_else(|_| panic!("{text:?} in redis-benchmark's summary"))
    };
    while let Some(line) = lines.next() {
        if let Some(test) = line.strip_prefix("====== ") {
            found.push(Summary {
                test: test.trim_end_matches(" ======").to_string(),
                requests: 0,
                seconds: 0.0,
                throughput: 0.0,
                max_ms: 0.0,
            });
        }
        let Some(summary) = found.last_mut() else {
            continue;
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.contains("requests completed in") {
            summary.requests = number(words.first().copied()) as u64;
            summary.seconds = number(words.get(4).copied());
        } else if let Some(rate) = line.strip_prefix("throughput summary: ") {
            summary.throughput = number(rate.split_whitespace().next());
        } else if words.first() == Some(&"avg") && words.last() == Some(&"max") {
            summary.max_ms = number(lines.next().and_then(|l| l.split_whitespace().last()));
        }
    }
    found
}

/// The figures of one run, printed as a table the README can quote.
struct Measured<'a> {
    /// The run's seed.
    seed: u64,
    /// Which server the clients went through.
    front: String,
    /// Requests per benchmark test.
    requests: u64,
    /// What redis-benchmark did.
    benchmark: &'a BenchmarkOutcome,
    /// When the primary was killed, on the recorder's clock.
    killed_at: u64,
    /// What each recorded client saw go wrong.
    tallies: &'a [ClientTally],
    /// The recorded history, final reads included.
    ops: &'a [Operation],
    /// The longest stretch without an acknowledged recorded call.
    gap: (u64, u64),
    /// When the view next had a live primary and a backup holding the whole state.
    ready_again: Option<u64>,
    /// The linearizability verdict on the recorded history.
    verdict: Verdict,
    /// How long the check took.
    check_time: Duration,
    /// Acknowledged writes the final reads show lost.
    lost: usize,
}

impl std::fmt::Display for Measured<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Seconds from the kill to `at` on the recorder's clock.
        let since_kill = |at: u64| (at as f64 - self.killed_at as f64) / 1e9;
        let b = self.benchmark;
        writeln!(f, "| measure | value |\n|---|---|")?;
        writeln!(f, "| seed | {} |", self.seed)?;
        writeln!(f, "| clients go through | {} |", self.front)?;
        let args = format!("{} -r {}", BENCHMARK_ARGS.join(" "), keyspace());
        let status = if b.code == 0 {
            "completed".to_string()
        } else {
            format!("FAILED (exit {})", b.code)
        };
        writeln!(
            f,
            "| redis-benchmark {args} -n {} | {status}, {} errors; from {:+.2} s to {:+.2} s \
             around the kill |",
            self.requests,
            b.errors.len(),
            b.first_progress.map_or(f64::NAN, since_kill),
            since_kill(b.exited_at)
        )?;
        for s in &b.summaries {
            writeln!(
                f,
                "| redis-benchmark {} | {} requests in {:.2} s, {:.0} req/s, slowest {:.0} ms |",
                s.test, s.requests, s.seconds, s.throughput, s.max_ms
            )?;
        }
        for error in &b.errors {
            writeln!(f, "| redis-benchmark error | {error} |")?;
        }
        let errors = errors(self.tallies);
        let recorded = self.ops.len();
        let unknown = self.ops.iter().filter(|op| op.complete().is_none()).count();
        writeln!(
            f,
            "| recorded clients ({CLIENTS} connections, SET/GET/INCR on {} keys) | {recorded} \
             calls, {unknown} with unknown outcome, {} errors |",
            REGISTERS.len() + COUNTERS.len(),
            errors.values().sum::<usize>()
        )?;
        for (message, n) in errors {
            writeln!(f, "| recorded client error ×{n} | {message} |")?;
        }
        for op in self.tallies.iter().flat_map(|t| &t.hung) {
            writeln!(
                f,
                "| recorded call unanswered for {REPLY_TIMEOUT:?} | {op}, made {:+.3} s around \
                 the kill |",
                since_kill(op.invoke)
            )?;
        }
        if let Some(at) = self.ready_again {
            writeln!(
                f,
                "| a backup holds the whole state again (the idle server, after its transfer) | \
                 {:+.2} s after the kill |",
                since_kill(at)
            )?;
        }
        let (from, to) = self.gap;
        writeln!(
            f,
            "| longest gap without an acknowledged recorded call | {:.0} ms (from {:+.3} s to \
             {:+.3} s around the kill) |",
            (to - from) as f64 / 1e6,
            since_kill(from),
            since_kill(to)
        )?;
        writeln!(
            f,
            "| linearizability of the recorded history | {:?}, {recorded} calls checked in \
             {:.2?} |",
            self.verdict, self.check_time
        )?;
        write!(
            f,
            "| acknowledged writes lost (every key read back from each live server) | {} |",
            self.lost
        )
    }
}

#[test]
fn lost_writes_are_told_from_overwritten_ones() {
    let ops = [
        Operation::ok(1, Call::put("r", "a"), 0, 10, None),
        Operation::ok(2, Call::put("r", "b"), 20, 30, None),
        Operation::unknown(3, Call::put("r", "c"), 5),
        Operation::ok(1, Call::incr("n"), 0, 10, Some(b"1".to_vec())),
        Operation::ok(2, Call::incr("n"), 20, 30, Some(b"2".to_vec())),
    ];
    // "b" was written last; "c" may have landed after it.
    assert_eq!(lost_writes(&ops, b"r", Some(b"b")), Vec::<String>::new());
    assert_eq!(lost_writes(&ops, b"r", Some(b"c")), Vec::<String>::new());
    // "a" had returned before "b" began: holding it loses "b". Nothing, or a value no SET
    // wrote, loses both.
    assert_eq!(lost_writes(&ops, b"r", Some(b"a")).len(), 1);
    assert_eq!(lost_writes(&ops, b"r", None).len(), 2);
    assert_eq!(lost_writes(&ops, b"r", Some(b"z")).len(), 2);
    // A counter must hold at least what every acknowledged INCR returned.
    assert_eq!(lost_writes(&ops, b"n", Some(b"2")), Vec::<String>::new());
    assert_eq!(lost_writes(&ops, b"n", Some(b"1")).len(), 1);
    assert_eq!(lost_writes(&ops, b"n", None).len(), 2);
    assert_eq!(lost_writes(&ops, b"n", Some(b"two")).len(), 2);
}

#[test]
fn redis_benchmark_output_is_read() {
    let progress = "SET: rps=1645.4 (overall: 1701.2) avg_msec=28.019 (overall: 27.766)";
    assert_eq!(overall_rate(progress), Some(1701.2));
    let starting = "SET: rps=0.0 (overall: -nan) avg_msec=-nan (overall: -nan)";
    assert_eq!(overall_rate(starting), None);
    assert_eq!(overall_rate("====== SET ======"), None);
    let output = "SET: rps=0.0 (overall: 0.0) avg_msec=-nan (overall: -nan)
====== SET ======
  2000 requests completed in 1.94 seconds
  50 parallel clients
Latency by percentile distribution:
0.000% <= 10.335 milliseconds (cumulative count 1)
Summary:
  throughput summary: 1028.81 requests per second
  latency summary (msec):
          avg       min       p50       p95       p99       max
       48.384    10.336    40.959   114.431   165.887   192.767
GET: rps=1264.8 (overall: 1268.8) avg_msec=38.437 (overall: 39.258)
====== GET ======
  3000 requests completed in 2.36 seconds
Summary:
  throughput summary: 1268.87 requests per second
  latency summary (msec):
          avg       min       p50       p95       p99       max
       39.258     1.200    35.135    80.000    99.000   551.000
";
    let found = summaries(output);
    let read: Vec<(&str, u64, f64, f64, f64)> = found
        .iter()
        .map(|s| (&s.test[..], s.requests, s.seconds, s.throughput, s.max_ms))
        .collect();
    assert_eq!(
        read,
        [
            ("SET", 2000, 1.94, 1028.81, 192.767),
            ("GET", 3000, 2.36, 1268.87, 551.0)
        ]
    );
}
