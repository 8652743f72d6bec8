//! `viewkv`: run monitors and kv servers, and talk to a cluster.

mod cli;

use clap::Parser;

/// jemalloc rather than the system allocator: a store of a million keys is a million small
/// records allocated among short-lived request buffers, and jemalloc's size classes keep the
/// two apart (see the README's performance section for what it changed).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    args.default_sigpipe();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = args.worker_threads() {
        runtime.worker_threads(threads);
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("viewkv: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("viewkv: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
