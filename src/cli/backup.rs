//! `viewkv dump FILE` and `viewkv restore FILE`: backups of the service's data.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use viewkv::client::{BackupProgress, RestoreOptions};

use super::{kv, parse_duration, MonitorsArg};

/// Arguments of `dump`.
#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    /// Where to write the dump (written as FILE.partial, renamed once complete).
    file: PathBuf,
    /// Where the cluster is.
    #[command(flatten)]
    monitors: MonitorsArg,
    /// Give up on one page after this long [default: the cluster file's, else 10s].
    #[arg(long, value_parser = parse_duration)]
    deadline: Option<Duration>,
}

/// Arguments of `restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// A file `viewkv dump` wrote.
    file: PathBuf,
    /// Restore into a service that already holds keys: the dump's keys overwrite theirs, keys
    /// the dump lacks are kept.
    #[arg(long)]
    force: bool,
    /// Writes in flight at once.
    #[arg(long, default_value_t = RestoreOptions::default().writers)]
    writers: usize,
    /// Where the cluster is.
    #[command(flatten)]
    monitors: MonitorsArg,
    /// Give up on one write after this long [default: the cluster file's, else 10s].
    #[arg(long, value_parser = parse_duration)]
    deadline: Option<Duration>,
}

/// A bar counting keys, drawn on stderr (hidden when stderr is not a terminal).
fn bar(verb: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template(&format!(
        "{verb} {{bar:40}} {{pos}}/{{len}} keys ({{per_sec}}, {{eta}} left)"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

fn show(bar: &ProgressBar) -> impl FnMut(BackupProgress) + '_ {
    |progress| {
        bar.set_length(progress.total_keys);
        bar.set_position(progress.keys);
    }
}

/// `dump FILE`.
pub async fn dump(args: DumpArgs) -> anyhow::Result<ExitCode> {
    let mut client = kv::client(&args.monitors, args.deadline)?;
    let bar = bar("dumping");
    let result = client.dump(&args.file, show(&bar)).await;
    bar.finish_and_clear();
    match result {
        Ok(header) => {
            println!(
                "dumped {} keys ({} bytes) as of view {}, operation {}, to {}",
                header.keys,
                header.bytes,
                header.view,
                header.index,
                args.file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("viewkv: dump failed: {err}");
            Ok(ExitCode::from(2))
        }
    }
}

/// `restore FILE`.
pub async fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let mut client = kv::client(&args.monitors, args.deadline)?;
    let options = RestoreOptions {
        force: args.force,
        writers: args.writers,
    };
    let bar = bar("restoring");
    let result = client.restore(&args.file, options, show(&bar)).await;
    bar.finish_and_clear();
    match result {
        Ok(header) => {
            println!(
                "restored {} keys ({} bytes) from {}",
                header.keys,
                header.bytes,
                args.file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("viewkv: restore failed: {err}");
            Ok(ExitCode::from(2))
        }
    }
}
