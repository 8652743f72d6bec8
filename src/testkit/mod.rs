//! An in-process cluster harness for tests (feature `testkit`): start, crash and restart monitor
//! nodes, kv servers and clients inside one test process on real loopback HTTP, and cut, slow
//! or lose the messages between them. Users can write their own partition tests with it too.
//!
//! Every randomized choice follows one seed, printed at start; set `VIEWKV_SEED` to replay.

pub mod campaign;
mod cluster;
pub mod nemesis;
mod pki;
pub mod workload;

pub use cluster::{load_key, Cluster, ClusterOptions};
pub use pki::TestCa;

use std::future::Future;
use std::time::{Duration, Instant};

/// The seed for this run: `VIEWKV_SEED` if set, else a random one. Printed either way, so a
/// failing run can be replayed.
pub fn seed() -> u64 {
    let seed = match std::env::var("VIEWKV_SEED") {
        Ok(text) => match text.trim().parse() {
            Ok(seed) => seed,
            Err(_) => panic!("VIEWKV_SEED={text:?} is not a number"),
        },
        Err(_) => rand::random(),
    };
    println!("seed = {seed} (replay with VIEWKV_SEED={seed})");
    seed
}

/// Send this process's logs to the test output, filtered by `RUST_LOG` (default: viewkv's
/// warnings; openraft reports every injected fault, so it is silent unless asked).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,openraft=off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Poll `probe` every 20 ms until it returns `Some`, or panic after `deadline` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
