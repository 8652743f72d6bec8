//! The long fault campaign: many seeds of mixed faults, each history checked, one summary table.
//!
//! ```text
//! cargo run --release --example campaign -- --seeds 200 --secs 30 --parallel 3
//! cargo run --release --example campaign -- --first-seed 1234 --seeds 1 --secs 30   # replay one
//! ```

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use viewkv::testkit::campaign::{self, CampaignOptions, CampaignReport};

/// Command-line options.
struct Args {
    /// The first seed; the others follow it.
    first_seed: u64,
    /// How many seeds.
    seeds: u64,
    /// Seconds of faults per seed.
    secs: u64,
    /// Campaigns run at the same time.
    parallel: usize,
    /// Keys stored before the faults of each seed.
    keys: usize,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        first_seed: 1,
        seeds: 200,
        secs: 30,
        parallel: 2,
        keys: 50_000,
    };
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let value = words
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        let number: u64 = value
            .parse()
            .map_err(|_| format!("{flag} {value}: not a number"))?;
        match flag.as_str() {
            "--first-seed" => args.first_seed = number,
            "--seeds" => args.seeds = number,
            "--secs" => args.secs = number,
            "--parallel" => args.parallel = number.max(1) as usize,
            "--keys" => args.keys = number as usize,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("campaign: {err}\nusage: campaign [--first-seed N] [--seeds N] [--secs N] [--parallel N] [--keys N]");
            return std::process::ExitCode::from(2);
        }
    };
    viewkv::testkit::init_tracing();
    let bar = ProgressBar::new(args.seeds);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} seeds, {elapsed} {msg}") {
        bar.set_style(style);
    }
    let seeds: Vec<u64> = (0..args.seeds).map(|i| args.first_seed + i).collect();
    let mut reports: Vec<CampaignReport> = Vec::new();
    for batch in seeds.chunks(args.parallel) {
        let runs: Vec<_> = batch
            .iter()
            .map(|seed| {
                let mut options = CampaignOptions::new(*seed, Duration::from_secs(args.secs));
                options.preload_keys = args.keys;
                tokio::spawn(campaign::run(options))
            })
            .collect();
        for run in runs {
            match run.await {
                Ok(report) => {
                    if !report.passed() {
                        bar.println(format!("FAILED {report}"));
                    }
                    bar.set_message(format!("{} ops", report.operations));
                    reports.push(report);
                }
                Err(err) => bar.println(format!("a campaign panicked: {err}")),
            }
            bar.inc(1);
        }
    }
    bar.finish();
    println!(
        "{} seeds from {} of {} s each:\n",
        args.seeds, args.first_seed, args.secs
    );
    println!("{}", campaign::summary(&reports));
    if reports.len() as u64 == args.seeds && reports.iter().all(CampaignReport::passed) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
