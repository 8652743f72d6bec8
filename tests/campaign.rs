//! The short fault campaign CI runs: a few seeds of mixed faults under five concurrent clients,
//! each history checked for linearizability and for lost or duplicated appends. The long
//! campaign is `cargo run --release --example campaign -- --seeds 200 --secs 30`.

use std::time::Duration;

use viewkv::testkit::campaign::{self, CampaignOptions};
use viewkv::testkit::{self};

/// Seeds that once failed; each must pass forever after.
const REGRESSIONS: &[u64] = &[];

async fn campaign_passes(seed: u64, secs: u64) {
    let mut options = CampaignOptions::new(seed, Duration::from_secs(secs));
    // Enough that a transfer is many messages' worth, few enough for a debug build.
    options.preload_keys = 3_000;
    let report = campaign::run(options).await;
    println!("{report}");
    assert!(report.operations > 100, "the workload barely ran: {report}");
    assert!(report.passed(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_campaign() {
    testkit::init_tracing();
    let seed = testkit::seed();
    for i in 0..3 {
        campaign_passes(seed.wrapping_add(i), 15).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_seeds() {
    testkit::init_tracing();
    for seed in REGRESSIONS {
        campaign_passes(*seed, 15).await;
    }
}
