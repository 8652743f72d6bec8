//! Parsing the connection and server commands that take subcommands or options of their own:
//! `CLIENT`, `COMMAND`, `CONFIG` (whose subcommands the table lists) and `HELLO`.

use bytes::Bytes;

use super::command::{arity, integer, Command, ConnectionCommand, Refusal, SYNTAX};
use super::table::Spec;

/// The subcommand of the container command `spec` in `rest` (the subcommand's name first).
pub fn subcommand(spec: &'static Spec, rest: &[Bytes]) -> Result<Command, Refusal> {
    let Some((name, args)) = rest.split_first() else {
        // Only COMMAND may stand alone (its arity says so): COMMAND INFO of every command.
        return Ok(Command::CommandInfo(Vec::new()));
    };
    let Some(sub) = spec.sub(name) else {
        let name = String::from_utf8_lossy(name);
        if spec.name == "config" {
            return Err(format!(
                "ERR viewkv has no Redis configuration: CONFIG {name} is not supported"
            ));
        }
        return Err(format!(
            "ERR unknown subcommand '{name}'. Try {} HELP.",
            spec.name.to_uppercase()
        ));
    };
    if !sub.fits(rest.len() + 1) {
        return Err(arity(sub.name));
    }
    Ok(match sub.name {
        "client|setname" => {
            Command::Connection(ConnectionCommand::ClientSetName(connection_name(&args[0])?))
        }
        "client|getname" => Command::Connection(ConnectionCommand::ClientGetName),
        "client|id" => Command::Connection(ConnectionCommand::ClientId),
        "client|info" => Command::Connection(ConnectionCommand::ClientInfo),
        "client|list" => client_list(args)?,
        "client|no-evict" => match &*args[0].to_ascii_uppercase() {
            b"ON" | b"OFF" => Command::ClientOk,
            _ => return Err(SYNTAX.into()),
        },
        "client|setinfo" => Command::ClientOk,
        "command|count" => Command::CommandCount,
        "command|docs" => Command::CommandDocs(args.to_vec()),
        "command|info" => Command::CommandInfo(args.to_vec()),
        "command|list" => Command::CommandList,
        "config|get" => Command::ConfigGet,
        "client|help" | "command|help" | "config|help" => Command::Help(spec.name),
        other => return Err(format!("ERR viewkv lists '{other}' but cannot run it")),
    })
}

/// `CLIENT LIST`'s filters: `TYPE normal` (every connection is of that type) or `ID id...`.
fn client_list(args: &[Bytes]) -> Result<Command, Refusal> {
    let Some((filter, values)) = args.split_first() else {
        return Ok(listing(None));
    };
    match (&*filter.to_ascii_uppercase(), values) {
        (b"TYPE", [kind]) => match &*kind.to_ascii_uppercase() {
            b"NORMAL" => Ok(listing(None)),
            b"MASTER" | b"REPLICA" | b"SLAVE" | b"PUBSUB" => Ok(listing(Some(Vec::new()))),
            _ => Err(format!(
                "ERR Unknown client type '{}'",
                String::from_utf8_lossy(kind)
            )),
        },
        (b"ID", ids) if !ids.is_empty() => {
            let ids = ids
                .iter()
                .map(|id| {
                    integer(id)
                        .ok()
                        .and_then(|id| u64::try_from(id).ok())
                        .filter(|id| *id > 0)
                        .ok_or_else(|| Refusal::from("ERR Invalid client ID"))
                })
                .collect::<Result<_, _>>()?;
            Ok(listing(Some(ids)))
        }
        _ => Err(SYNTAX.into()),
    }
}

/// `CLIENT LIST` of the connections numbered `ids` (`None`: any).
fn listing(ids: Option<Vec<u64>>) -> Command {
    Command::Connection(ConnectionCommand::ClientList(ids))
}

/// A connection name as `CLIENT SETNAME` and `HELLO SETNAME` accept it: visible ASCII, no
/// spaces (`CLIENT INFO` writes it as one field of a space-separated line).
fn connection_name(name: &Bytes) -> Result<Bytes, Refusal> {
    if name.iter().all(|b| (b'!'..=b'~').contains(b)) {
        Ok(name.clone())
    } else {
        Err("ERR Client names cannot contain spaces, newlines or special characters.".into())
    }
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`.
pub fn hello(rest: &[Bytes]) -> Result<Command, Refusal> {
    let mut version = None;
    let mut password = None;
    let mut name = None;
    let mut args = rest.iter();
    if let Some(first) = rest.first() {
        version = Some(
            integer(first).map_err(|_| "ERR Protocol version is not an integer or out of range")?,
        );
        args.next();
    }
    while let Some(option) = args.next() {
        match option.to_ascii_uppercase().as_slice() {
            b"AUTH" => {
                let (Some(_user), Some(pass)) = (args.next(), args.next()) else {
                    return Err(SYNTAX.into());
                };
                password = Some(pass.clone());
            }
            b"SETNAME" => {
                let Some(value) = args.next() else {
                    return Err(SYNTAX.into());
                };
                name = Some(connection_name(value)?);
            }
            _ => return Err(SYNTAX.into()),
        }
    }
    Ok(Command::Connection(ConnectionCommand::Hello {
        version,
        password,
        name,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::parse;

    fn parsed(line: &str) -> Result<Command, Refusal> {
        let args: Vec<Bytes> = line
            .split(' ')
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        parse(&args)
    }

    #[test]
    fn subcommands_parse_and_the_unknown_ones_are_refused_in_redis_words() {
        assert_eq!(
            parsed("client info"),
            Ok(Command::Connection(ConnectionCommand::ClientInfo))
        );
        assert_eq!(
            parsed("CLIENT ID"),
            Ok(Command::Connection(ConnectionCommand::ClientId))
        );
        assert_eq!(
            parsed("CLIENT SETNAME app"),
            Ok(Command::Connection(ConnectionCommand::ClientSetName(
                "app".into()
            )))
        );
        assert_eq!(
            parsed("CLIENT SETNAME"),
            Err("ERR wrong number of arguments for 'client|setname' command".into())
        );
        assert!(parsed("CLIENT SETNAME a\nb").is_err_and(|e| e.contains("cannot contain")));
        assert_eq!(parsed("CLIENT SETINFO LIB-NAME x"), Ok(Command::ClientOk));
        assert_eq!(parsed("CLIENT NO-EVICT maybe"), Err(SYNTAX.into()));
        assert_eq!(
            parsed("CLIENT KILL 1.2.3.4:5"),
            Err("ERR unknown subcommand 'KILL'. Try CLIENT HELP.".into())
        );
        assert_eq!(
            parsed("CLIENT"),
            Err("ERR wrong number of arguments for 'client' command".into())
        );
        assert_eq!(parsed("CLIENT LIST"), Ok(listing(None)));
        assert_eq!(parsed("CLIENT LIST TYPE normal"), Ok(listing(None)));
        assert_eq!(parsed("CLIENT LIST TYPE pubsub"), Ok(listing(Some(vec![]))));
        assert_eq!(parsed("CLIENT LIST ID 3 9"), Ok(listing(Some(vec![3, 9]))));
        assert_eq!(
            parsed("CLIENT LIST ID x"),
            Err("ERR Invalid client ID".into())
        );
        assert_eq!(parsed("CLIENT HELP"), Ok(Command::Help("client")));
        assert_eq!(parsed("COMMAND"), Ok(Command::CommandInfo(vec![])));
        assert_eq!(parsed("COMMAND COUNT"), Ok(Command::CommandCount));
        assert_eq!(
            parsed("COMMAND DOCS get Set"),
            Ok(Command::CommandDocs(vec!["get".into(), "Set".into()]))
        );
        assert_eq!(parsed("command info"), Ok(Command::CommandInfo(vec![])));
        assert_eq!(parsed("COMMAND LIST"), Ok(Command::CommandList));
        assert!(parsed("COMMAND GETKEYS get k").is_err_and(|e| e.contains("Try COMMAND HELP")));
        assert_eq!(parsed("CONFIG GET maxmemory"), Ok(Command::ConfigGet));
        assert!(parsed("CONFIG SET a b").is_err_and(|e| e.contains("no Redis configuration")));
        assert!(parsed("HELLO 3 SETNAME a b").is_err());
    }
}
