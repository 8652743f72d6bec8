//! `viewkv bench load`: a load generator. Clients run a mix of reads and writes for a while;
//! throughput and latency percentiles (an HDR histogram) come out at the end. The same load runs
//! against the cluster through the client library, against an echo server through the same RPC
//! stack (`--echo`: the one-hop ceiling of the machine), or against a Redis server
//! (`--against-redis`) for a row beside it.
//!
//! The echo runs in a process of its own, as every server of a cluster does: a hop between two
//! processes costs each side a wake-up of a sleeping thread, which on a small (virtual) machine
//! is most of a round trip. An echo inside the load generator's own process shares its runtime
//! and threads and skips much of that, so it measures a hop no deployment has
//! (`--echo-in-process`, kept to show the difference).

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::encode::extend_encode;
use redis_protocol::resp2::types::BytesFrame;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use viewkv::kv::api::{Op, Reply, Request, Sent, REQUEST};
use viewkv::net::{bad_request, bincode_reply, decode, encode, Handler, HttpRequest, HttpResponse};
use viewkv::net::{through_http, Answering, CallOutcome, RpcClient, ServeLimits};
use viewkv::Client;

use super::kv::client;
use super::{parse_duration, MonitorsArg};

/// The largest latency the histograms hold (a minute, in µs); longer ones count as this.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Arguments of `viewkv bench load`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The cluster to load.
    #[command(flatten)]
    monitors: MonitorsArg,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Bytes per value written.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Distinct keys (chosen uniformly at random).
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Share of operations that are writes, from 0 to 1.
    #[arg(long, default_value_t = 0.5)]
    write_ratio: f64,
    /// Operations each client sends before waiting for their replies (natively: that many
    /// sessions of one client, their operations submitted in order on the shared connection).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Load a server that only echoes, run in a process of its own, through the same RPC
    /// stack: the ceiling of one hop between processes on this machine.
    #[arg(long, conflicts_with_all = ["against_redis", "echo_in_process"])]
    echo: bool,
    /// Load an echo server inside this process instead (it shares this process's threads, so a
    /// hop to it is cheaper than any hop between processes).
    #[arg(long, conflicts_with = "against_redis")]
    echo_in_process: bool,
    /// Load this Redis server (host:port) instead, with the same mix (SET and GET); AUTH with
    /// the cluster secret if one is configured (a Redis without a password ignores it).
    #[arg(long, value_name = "ADDR")]
    against_redis: Option<String>,
    /// Print the figures as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// What the load is sent to.
#[derive(Clone)]
enum Target {
    /// The cluster, through the client library: each load client a clone of this one, so
    /// all share its connections.
    Cluster(Box<Client>),
    /// An echo server at this address, through the RPC client (its clones share one
    /// connection, as the clones of a client do).
    Echo(String, Box<RpcClient>),
    /// A Redis server, with the password to AUTH with.
    Redis(String, Option<String>),
}

/// One client's share of the results.
struct Tally {
    /// Latency of each successful operation, in µs.
    latency: Histogram<u64>,
    /// Operations that failed.
    errors: u64,
}

/// An empty latency histogram: 1 µs to [`MAX_LATENCY_US`], 3 significant digits.
fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("a histogram")
}

/// An echo server: answers every request at once, as a primary with nothing to do would,
/// decoding the request and encoding the reply as the kv server does.
struct Echo;

impl Handler for Echo {
    async fn handle(&self, request: HttpRequest) -> HttpResponse {
        match decode::<Sent>(request.body()) {
            Ok(_) => bincode_reply(&Reply::Ok(None)),
            Err(err) => bad_request(err),
        }
    }

    fn call(self: Arc<Self>, path: &str, body: Bytes) -> Answering {
        if path != REQUEST {
            return through_http(self, path, body);
        }
        let outcome = match decode::<Sent>(&body) {
            Ok(_) => CallOutcome::ok(encode(&Reply::Ok(None))),
            Err(err) => CallOutcome {
                status: 400,
                body: err.to_string().into(),
            },
        };
        Box::pin(std::future::ready(outcome))
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.clients == 0 || args.keys == 0 || args.pipeline == 0 {
        bail!("--clients, --keys and --pipeline must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.write_ratio) {
        bail!("--write-ratio must be between 0 and 1");
    }
    let mut echo_process = None;
    let target = if args.echo || args.echo_in_process {
        let addr = if args.echo {
            let (child, addr) = spawn_echo().await?;
            echo_process = Some(child);
            addr
        } else {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?.to_string();
            tokio::spawn(serve_echo_on(listener, std::future::pending()));
            addr
        };
        Target::Echo(addr, Box::new(RpcClient::new("viewkv-bench", None)))
    } else if let Some(addr) = &args.against_redis {
        let password = args.monitors.secret()?.map(|s| s.expose().to_string());
        Target::Redis(addr.clone(), password)
    } else {
        Target::Cluster(Box::new(client(&args.monitors, None)?))
    };
    let done = Arc::new(AtomicU64::new(0));
    let progress = progress_bar(args.duration, args.json);
    let started = Instant::now();
    let until = started + args.duration;
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let (target, done) = (target.clone(), done.clone());
        let shape = (args.value_size, args.keys, args.write_ratio, args.pipeline);
        tasks.push(tokio::spawn(async move {
            one_client(target, i as u64, shape, until, done).await
        }));
    }
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        progress.set_position(started.elapsed().as_millis() as u64);
        progress.set_message(format!("{} ops", done.load(Ordering::Relaxed)));
    }
    let mut latency = histogram()?;
    let mut errors = 0;
    for task in tasks {
        let tally = task.await.context("a load client panicked")??;
        latency.add(&tally.latency).context("merging histograms")?;
        errors += tally.errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    drop(echo_process);
    report(&args, &latency, errors, elapsed);
    Ok(ExitCode::SUCCESS)
}

/// Serve the echo on `listener` until `shutdown` completes.
async fn serve_echo_on(listener: TcpListener, shutdown: impl std::future::Future<Output = ()>) {
    let limits = ServeLimits::default();
    viewkv::net::serve(listener, Arc::new(Echo), shutdown, limits, None, None).await;
}

/// `viewkv bench echo-server`: serve the echo on a free local port, print its address as one
/// line, and stop when standard input closes (the load generator that started it exited).
pub async fn echo_server() -> anyhow::Result<ExitCode> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    let parent_gone = async {
        let mut stdin = tokio::io::stdin();
        let mut sink = [0u8; 64];
        while stdin.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    };
    serve_echo_on(listener, parent_gone).await;
    Ok(ExitCode::SUCCESS)
}

/// Start `viewkv bench echo-server` as a child process: it and the address it serves on. The
/// child is killed when the handle is dropped, and exits by itself if this process dies.
async fn spawn_echo() -> anyhow::Result<(tokio::process::Child, String)> {
    let exe = std::env::current_exe().context("cannot find the viewkv executable")?;
    let mut command = tokio::process::Command::new(exe);
    command.args(["bench", "echo-server"]);
    // The echo stands in for a kv server: it gets the threads `viewkv up` gives one.
    super::children::size_as_node(command.as_std_mut());
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the echo server")?;
    let stdout = child.stdout.take().context("the echo server's output")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .context("the echo server did not say its address within 10 s")?
        .context("reading the echo server's address")?
        .context("the echo server exited before saying its address")?;
    Ok((child, line.trim().to_string()))
}

fn progress_bar(duration: Duration, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(duration.as_millis() as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {elapsed}/{duration} {msg}") {
        bar.set_style(style);
    }
    bar
}

fn report(args: &Args, latency: &Histogram<u64>, errors: u64, elapsed: f64) {
    let ops = latency.len();
    let at = |q: f64| latency.value_at_quantile(q);
    let target = if args.echo {
        "echo".to_string()
    } else if args.echo_in_process {
        "echo-in-process".to_string()
    } else if let Some(addr) = &args.against_redis {
        format!("redis {addr}")
    } else {
        "viewkv".to_string()
    };
    let doc = serde_json::json!({
        "target": target,
        "clients": args.clients,
        "pipeline": args.pipeline,
        "write_ratio": args.write_ratio,
        "value_size": args.value_size,
        "seconds": elapsed,
        "worker_threads": tokio::runtime::Handle::current().metrics().num_workers(),
        "ops": ops,
        "ops_per_sec": ops as f64 / elapsed,
        "p50_us": at(0.50),
        "p90_us": at(0.90),
        "p99_us": at(0.99),
        "p999_us": at(0.999),
        "max_us": latency.max(),
        "errors": errors,
    });
    if args.json {
        println!("{doc}");
        return;
    }
    println!(
        "{target}: {:.0} ops/s ({ops} in {elapsed:.1} s, {} clients, {:.0}% writes, {} errors, {} threads)",
        ops as f64 / elapsed,
        args.clients,
        args.write_ratio * 100.0,
        errors,
        doc["worker_threads"],
    );
    println!(
        "latency µs: p50 {} p90 {} p99 {} p99.9 {} max {}",
        at(0.50),
        at(0.90),
        at(0.99),
        at(0.999),
        latency.max()
    );
}

/// One client: operations until `until`, one (or a pipeline) at a time.
async fn one_client(
    target: Target,
    seed: u64,
    (value_size, keys, write_ratio, pipeline): (usize, u64, f64, usize),
    until: Instant,
    done: Arc<AtomicU64>,
) -> anyhow::Result<Tally> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let value = vec![b'v'; value_size];
    let mut tally = Tally {
        latency: histogram()?,
        errors: 0,
    };
    let mut redis = match &target {
        Target::Redis(addr, password) => Some(Redis::connect(addr, password.as_deref()).await?),
        _ => None,
    };
    let mut sessions: Vec<Client> = match &target {
        Target::Cluster(client) => (0..pipeline).map(|_| Client::clone(client)).collect(),
        _ => Vec::new(),
    };
    let mut seq = 0;
    while Instant::now() < until {
        let batch: Vec<(bool, Vec<u8>)> = (0..pipeline)
            .map(|_| {
                let key = format!("bench:{:012}", rng.gen_range(0..keys)).into_bytes();
                (rng.gen_bool(write_ratio), key)
            })
            .collect();
        let sent = Instant::now();
        let ok = match (&target, redis.as_mut()) {
            (Target::Redis(..), Some(redis)) => redis.batch(&batch, &value).await,
            (Target::Cluster(_), _) => native(&mut sessions, &batch, &value).await,
            (Target::Echo(addr, rpc), _) => {
                let calls: Vec<_> = batch
                    .iter()
                    .map(|(_, key)| {
                        seq += 1;
                        let request = Request {
                            client: seed,
                            seq,
                            deadline_ms: viewkv::kv::wall_ms() + 10_000,
                            op: Op::Put {
                                key: key.clone(),
                                value: value.clone(),
                            },
                        };
                        let echoed = Sent::unstamped(request);
                        rpc.start(addr, REQUEST, encode(&echoed), Duration::from_secs(10))
                    })
                    .collect();
                let mut ok = true;
                for call in calls {
                    ok &= call
                        .await
                        .is_ok_and(|bytes| decode::<Reply>(&bytes).is_ok());
                }
                ok
            }
            _ => false,
        };
        let took = sent.elapsed().as_micros() as u64;
        if ok {
            for _ in 0..batch.len() {
                tally.latency.saturating_record(took.max(1));
            }
            done.fetch_add(batch.len() as u64, Ordering::Relaxed);
        } else {
            tally.errors += batch.len() as u64;
        }
    }
    Ok(tally)
}

/// Run `batch` (writes of `value`, and reads) through the client library: one operation per
/// session, all submitted before any is waited for. Whether every one succeeded.
async fn native(sessions: &mut [Client], batch: &[(bool, Vec<u8>)], value: &[u8]) -> bool {
    let mut pending = Vec::with_capacity(batch.len());
    for (session, (write, key)) in sessions.iter_mut().zip(batch) {
        let op = match write {
            true => Op::Put {
                key: key.clone(),
                value: value.to_vec(),
            },
            false => Op::Get { key: key.clone() },
        };
        pending.push(session.submit(op));
    }
    let mut ok = true;
    for (session, pending) in sessions.iter_mut().zip(pending) {
        ok &= session.finish(pending).await.is_ok();
    }
    ok
}

/// A Redis connection sending pipelined SET and GET.
struct Redis {
    /// The connection.
    stream: TcpStream,
    /// Bytes read and not yet decoded.
    input: BytesMut,
    /// Commands being encoded.
    output: BytesMut,
}

impl Redis {
    async fn connect(addr: &str, password: Option<&str>) -> anyhow::Result<Redis> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to the Redis server at {addr}"))?;
        stream.set_nodelay(true)?;
        let mut redis = Redis {
            stream,
            input: BytesMut::new(),
            output: BytesMut::new(),
        };
        if let Some(password) = password {
            redis.send(&[b"AUTH", password.as_bytes()])?;
            let answer = redis.exchange(1).await?;
            auth_answered(addr, answer.first())?;
        }
        Ok(redis)
    }

    fn send(&mut self, args: &[&[u8]]) -> anyhow::Result<()> {
        let frame = BytesFrame::Array(
            args.iter()
                .map(|a| BytesFrame::BulkString(Bytes::copy_from_slice(a)))
                .collect(),
        );
        extend_encode(&mut self.output, &frame, false).context("encoding a command")?;
        Ok(())
    }

    /// Write what was sent and read `n` replies.
    async fn exchange(&mut self, n: usize) -> anyhow::Result<Vec<BytesFrame>> {
        self.stream.write_all(&self.output).await?;
        self.output.clear();
        let mut replies = Vec::with_capacity(n);
        while replies.len() < n {
            match decode_bytes_mut(&mut self.input).context("a reply that does not parse")? {
                Some((frame, _, _)) => replies.push(frame),
                None => {
                    if self.stream.read_buf(&mut self.input).await? == 0 {
                        bail!("the Redis server closed the connection");
                    }
                }
            }
        }
        Ok(replies)
    }

    /// Send a batch of SETs (`true`) and GETs; whether every reply was a success.
    async fn batch(&mut self, batch: &[(bool, Vec<u8>)], value: &[u8]) -> bool {
        for (write, key) in batch {
            let sent = match write {
                true => self.send(&[b"SET", key, value]),
                false => self.send(&[b"GET", key]),
            };
            if sent.is_err() {
                return false;
            }
        }
        match self.exchange(batch.len()).await {
            Ok(replies) => !replies.iter().any(|r| matches!(r, BytesFrame::Error(_))),
            Err(_) => false,
        }
    }
}

/// Whether the load may go on after `AUTH` at `addr` answered `answer`: yes if accepted, and
/// yes if the server has no password at all (the cluster's secret is configured here, but the
/// Redis compared against need not have one); no on a wrong password or anything else.
fn auth_answered(addr: &str, answer: Option<&BytesFrame>) -> anyhow::Result<()> {
    match answer {
        Some(BytesFrame::SimpleString(_)) => Ok(()),
        Some(BytesFrame::Error(text)) if text.contains("without any password configured") => Ok(()),
        other => bail!("AUTH at {addr} answered {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_holds_slow_operations_as_they_were() {
        let mut h = histogram().expect("a histogram");
        h.saturating_record(80);
        h.saturating_record(2_500_000);
        assert_eq!(h.value_at_quantile(0.0), 80);
        let slow = h.max();
        assert!((2_497_000..=2_503_000).contains(&slow), "{slow}");
    }

    #[test]
    fn auth_goes_on_only_when_accepted_or_not_needed() {
        let ok = BytesFrame::SimpleString(Bytes::from_static(b"OK"));
        let no_password = BytesFrame::Error(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?"
                .into(),
        );
        let wrong = BytesFrame::Error(
            "WRONGPASS invalid username-password pair or user is disabled.".into(),
        );
        assert!(auth_answered("r", Some(&ok)).is_ok());
        assert!(auth_answered("r", Some(&no_password)).is_ok());
        let refused = auth_answered("r", Some(&wrong)).expect_err("a wrong password");
        assert!(refused.to_string().contains("WRONGPASS"), "{refused}");
        assert!(auth_answered("r", None).is_err());
    }
}
