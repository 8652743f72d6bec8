//! `viewkv recover`: the operator's way out of a stalled service.

use std::process::ExitCode;

use viewkv::monitor::api::{RecoverReply, RecoverRequest};

use super::MonitorsArg;

/// Arguments of `viewkv recover`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Make the new view: without this flag, only say what it would do and what would be lost.
    #[arg(long)]
    accept_data_loss: bool,
    /// The kv server (its id) to make primary [default: the live one holding the most recent
    /// state].
    #[arg(long)]
    primary: Option<String>,
    /// Where the monitors are.
    #[command(flatten)]
    monitors: MonitorsArg,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.monitors.monitor_client()?;
    let request = RecoverRequest {
        accept_data_loss: args.accept_data_loss,
        primary: args.primary,
    };
    let reply = client
        .recover(&request)
        .await
        .map_err(|err| match err.unauthorized {
            Some(refusal) => anyhow::anyhow!(refusal),
            None => anyhow::anyhow!("{err}; {}", viewkv::client::NO_CLUSTER_HINT),
        })?;
    match reply {
        RecoverReply::Done { view, explanation } => {
            println!("recovered: {explanation}");
            println!("view {}", view.summary());
            Ok(ExitCode::SUCCESS)
        }
        RecoverReply::Plan { explanation } => {
            eprintln!("viewkv: would recover: {explanation}");
            eprintln!("viewkv: nothing done; run again with --accept-data-loss to do it");
            Ok(ExitCode::from(2))
        }
        RecoverReply::Refused { reason } => {
            eprintln!("viewkv: cannot recover: {reason}");
            Ok(ExitCode::from(2))
        }
        RecoverReply::NotLeader { hint } => {
            eprintln!(
                "viewkv: no monitor leader answered (last hint: {}); try again",
                hint.as_deref().unwrap_or("none")
            );
            Ok(ExitCode::from(2))
        }
    }
}
