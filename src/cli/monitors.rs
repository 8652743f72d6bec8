//! `viewkv monitors list | add ID=ADDR | remove ID`: the monitor group's membership.

use std::process::ExitCode;

use viewkv::monitor::membership::{MemberChange, MembersClient, MembersReply};
use viewkv::net::RpcClient;

use super::MonitorsArg;

/// Arguments of `viewkv monitors`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    action: Action,
}

/// What every action takes.
#[derive(clap::Args, Debug)]
struct Common {
    /// Where the monitors are (any member will do).
    #[command(flatten)]
    monitors: MonitorsArg,
    /// Print the group as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Print every member: id, address, voter or learner, the leader, replication progress.
    List {
        /// Where the monitors are, and the output format.
        #[command(flatten)]
        common: Common,
    },
    /// Add monitor ID at ADDR (started with --join and an empty data directory): as a learner,
    /// then, once it has caught up, as a voter.
    Add {
        /// The new member, `ID=HOST:PORT`.
        #[arg(value_parser = super::monitor::parse_peer)]
        member: (u64, String),
        /// Where the monitors are, and the output format.
        #[command(flatten)]
        common: Common,
    },
    /// Remove monitor ID from the group (then stop it). Refused if the voters left would not
    /// answer as a majority.
    Remove {
        /// The member's id.
        id: u64,
        /// Where the monitors are, and the output format.
        #[command(flatten)]
        common: Common,
    },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (change, common) = match args.action {
        Action::List { common } => (None, common),
        Action::Add {
            member: (id, addr),
            common,
        } => (Some(MemberChange::Add { id, addr }), common),
        Action::Remove { id, common } => (Some(MemberChange::Remove { id }), common),
    };
    let client = MembersClient::new(
        RpcClient::new("viewkv-cli", None).with_secret(common.monitors.secret()?),
        common.monitors.resolve()?,
        common.monitors.timeout,
    );
    let group = match change {
        None => client.list().await?.1,
        Some(change) => client.change(change).await?,
    };
    match common.json {
        true => println!("{}", to_json(&group)),
        false => print!("{}", to_text(&group)),
    }
    Ok(ExitCode::SUCCESS)
}

/// The group as a JSON document.
fn to_json(group: &MembersReply) -> serde_json::Value {
    let members: Vec<serde_json::Value> = group
        .members
        .iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id,
                "addr": m.addr,
                "voter": m.voter,
                "leader": group.leader == Some(m.id),
                "matched": m.matched,
            })
        })
        .collect();
    serde_json::json!({
        "members": members,
        "leader": group.leader,
        "answered_by": group.id,
        "joint": group.joint,
        "applied": group.applied,
    })
}

/// The group as lines for a terminal.
fn to_text(group: &MembersReply) -> String {
    let mut text = String::new();
    for m in &group.members {
        let role = match (m.voter, group.leader == Some(m.id)) {
            (true, true) => "voter, leader",
            (true, false) => "voter",
            (false, _) => "learner",
        };
        let matched = m
            .matched
            .map_or(String::new(), |i| format!("  log index {i}"));
        text.push_str(&format!("monitor {}  {}  {role}{matched}\n", m.id, m.addr));
    }
    if !group.from_leader() {
        text.push_str(&format!(
            "(as monitor {} sees it: the leader did not answer)\n",
            group.id
        ));
    }
    if group.joint {
        text.push_str("a membership change is under way (joint configuration)\n");
    }
    text
}
