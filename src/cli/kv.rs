//! `viewkv get|put|append|puthash|delete`: one operation through the client library.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use viewkv::client::{ClientError, ClientOptions};
use viewkv::Client;

use super::{load, parse_duration, MonitorsArg};

/// Arguments of `get` and `delete`.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// The key (any bytes your shell can pass).
    key: OsString,
    /// Where the cluster is.
    #[command(flatten)]
    monitors: MonitorsArg,
    /// Print JSON: `{"key": ..., "value": ...}` (value null when absent).
    #[arg(long)]
    json: bool,
    /// Give up after this long [default: the cluster file's, else 10s].
    #[arg(long, value_parser = parse_duration)]
    deadline: Option<Duration>,
}

/// Arguments of `put`, `append` and `puthash`.
#[derive(clap::Args, Debug)]
pub struct WriteArgs {
    /// The key.
    key: OsString,
    /// The value.
    value: OsString,
    /// Where the cluster is.
    #[command(flatten)]
    monitors: MonitorsArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Give up after this long [default: the cluster file's, else 10s].
    #[arg(long, value_parser = parse_duration)]
    deadline: Option<Duration>,
}

/// Which write.
#[derive(Clone, Copy, Debug)]
pub enum Write {
    /// `put`.
    Put,
    /// `append`.
    Append,
    /// `puthash`.
    PutHash,
}

/// A client of the cluster `monitors` names, with its deadline (the flag, else the cluster file's).
pub(super) fn client(monitors: &MonitorsArg, deadline: Option<Duration>) -> anyhow::Result<Client> {
    let file = load(monitors.config.as_ref())?;
    let defaults = ClientOptions::default();
    let deadline = deadline
        .or(file.client.deadline)
        .unwrap_or(defaults.deadline);
    file.check_deadline(deadline).map_err(anyhow::Error::msg)?;
    let options = ClientOptions {
        deadline,
        retry_interval: file
            .timings
            .ping_interval
            .unwrap_or(defaults.retry_interval),
        rpc_timeout: monitors.timeout,
    };
    Ok(Client::with_tls(
        monitors.resolve()?,
        options,
        super::secret(&file)?,
        super::tls(&file)?.as_ref(),
    ))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Write raw bytes and a newline to stdout.
fn print_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.write_all(b"\n")?;
    Ok(())
}

fn failure(err: ClientError) -> anyhow::Result<ExitCode> {
    eprintln!("viewkv: {err}");
    Ok(ExitCode::from(2))
}

/// `get` (or, with `delete`, `delete`): print the value (previous value); exit 1 if absent.
pub async fn get(args: GetArgs, delete: bool) -> anyhow::Result<ExitCode> {
    let mut client = client(&args.monitors, args.deadline)?;
    let key = args.key.into_encoded_bytes();
    let result = if delete {
        client.delete(&key).await
    } else {
        client.get(&key).await
    };
    let value = match result {
        Ok(value) => value,
        Err(err) => return failure(err),
    };
    if args.json {
        let doc = serde_json::json!({ "key": text(&key), "value": value.as_deref().map(text) });
        println!("{doc}");
    } else if let Some(value) = &value {
        if !delete {
            print_bytes(value)?;
        }
    }
    if value.is_none() {
        if !args.json {
            eprintln!("viewkv: key {:?} not found", text(&key));
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// `put`, `append` or `puthash`.
pub async fn write(args: WriteArgs, kind: Write) -> anyhow::Result<ExitCode> {
    let mut client = client(&args.monitors, args.deadline)?;
    let key = args.key.into_encoded_bytes();
    let value = args.value.into_encoded_bytes();
    let result = match kind {
        Write::Put => client.put(&key, &value).await.map(|()| None),
        Write::Append => client.append(&key, &value).await.map(|()| None),
        Write::PutHash => client.put_hash(&key, &value).await,
    };
    let previous = match result {
        Ok(previous) => previous,
        Err(err) => return failure(err),
    };
    match (args.json, kind) {
        (true, Write::PutHash) => {
            let doc =
                serde_json::json!({ "key": text(&key), "previous": previous.as_deref().map(text) });
            println!("{doc}");
        }
        (true, _) => println!("{}", serde_json::json!({ "key": text(&key), "ok": true })),
        (false, Write::PutHash) => {
            if let Some(previous) = previous {
                print_bytes(&previous)?;
            }
        }
        (false, _) => println!("OK"),
    }
    Ok(ExitCode::SUCCESS)
}
