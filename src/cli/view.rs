//! `viewkv view`: print the current view and the monitor leader.

use std::process::ExitCode;

use super::MonitorsArg;

/// Arguments of `viewkv view`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the monitors are.
    #[command(flatten)]
    monitors: MonitorsArg,
    /// Print JSON: `{"view": {...}, "leader": ID, ...}`.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.monitors.monitor_client()?;
    let reply = client.view().await.map_err(|err| match err.unauthorized {
        Some(refusal) => anyhow::anyhow!(refusal),
        None => anyhow::anyhow!("{err}; {}", viewkv::client::NO_CLUSTER_HINT),
    })?;
    let leader = reply.leader.as_ref().filter(|_| reply.serving);
    if args.json {
        let doc = serde_json::json!({
            "view": reply.view.to_json(),
            "leader": leader.map(|(id, _)| id),
            "leader_addr": leader.map(|(_, addr)| addr),
            "stalled": reply.stalled,
            "cluster": format!("{:x}", reply.cluster),
        });
        println!("{doc}");
    } else {
        println!("view {}", reply.view.summary());
        println!("cluster: {:x}", reply.cluster);
        match leader {
            Some((id, addr)) => println!("leader: monitor {id} at {addr}"),
            None => println!("leader: none serving right now (no quorum?)"),
        }
        if let Some(reason) = &reply.stalled {
            println!("stalled: {reason}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
