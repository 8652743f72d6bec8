//! Redis commands as viewkv understands them: a frame's arguments in, a [`Command`] or Redis's
//! own error text out. Pure: no I/O, tested on argument lists.

use bytes::Bytes;

use super::subcommands::{hello, subcommand};
use super::table;
use crate::kv::api::{ExpireIf, Ttl, When};
use crate::kv::integer::parse_integer;

/// One parsed command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `PING [message]`.
    Ping(Option<Bytes>),
    /// `ECHO message`.
    Echo(Bytes),
    /// `QUIT`: answer OK, then close.
    Quit,
    /// `SELECT 0` (only database 0 exists).
    Select,
    /// A command about the connection itself.
    Connection(ConnectionCommand),
    /// `CLIENT` subcommands answered OK and otherwise ignored (`SETINFO`, `NO-EVICT`).
    ClientOk,
    /// `CLIENT HELP`, `COMMAND HELP`, `CONFIG HELP`: the container's subcommands, described.
    Help(&'static str),
    /// `COMMAND [INFO name...]`: each command's arity, flags and key positions (all if none
    /// are named).
    CommandInfo(Vec<Bytes>),
    /// `COMMAND DOCS [name...]`: each command's summary and arguments (all if none are named).
    CommandDocs(Vec<Bytes>),
    /// `COMMAND LIST`.
    CommandList,
    /// `COMMAND COUNT`.
    CommandCount,
    /// `CONFIG GET pattern`: viewkv has no Redis configuration (an empty answer).
    ConfigGet,
    /// `INFO [section]`.
    Info(Option<String>),
    /// `DBSIZE`.
    DbSize,
    /// `GET key`.
    Get(Bytes),
    /// `SET key value [NX|XX] [GET]`, `SETNX`, `GETSET`.
    Set {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// NX / XX.
        when: When,
        /// Reply with the previous value.
        get: bool,
        /// EX / PX / KEEPTTL (none: the key no longer expires).
        ttl: Ttl,
        /// Which command this was, for its reply's shape.
        shape: SetShape,
    },
    /// `EXPIRE key seconds [NX|XX|GT|LT]`, `PEXPIRE key ms [...]` (ms; 0 or less removes the
    /// key) and `PERSIST` (`None`).
    Expire(Bytes, Option<u64>, ExpireIf),
    /// `TTL key` (`false`: in seconds) and `PTTL key` (`true`: in ms).
    Ttl(Bytes, bool),
    /// `GETDEL key`.
    GetDel(Bytes),
    /// `APPEND key value`.
    Append(Bytes, Bytes),
    /// `STRLEN key`.
    Strlen(Bytes),
    /// `DEL key...` and `UNLINK key...`.
    Del(Vec<Bytes>),
    /// `EXISTS key...`.
    Exists(Vec<Bytes>),
    /// `MGET key...`.
    MGet(Vec<Bytes>),
    /// `MSET key value ...` (`false`) and `MSETNX` (`true`): one operation.
    MSet(Vec<(Bytes, Bytes)>, bool),
    /// `INCRBYFLOAT key increment`.
    IncrByFloat(Bytes, Bytes),
    /// `INCR`, `DECR`, `INCRBY`, `DECRBY`.
    IncrBy(Bytes, i64),
    /// `TYPE key`.
    Type(Bytes),
    /// `PUTHASH key value`: viewkv's own (the seeds' PutHash).
    PutHash(Bytes, Bytes),
    /// `KEYS pattern`.
    Keys(Bytes),
    /// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.
    Scan {
        /// 0 to start, else a cursor a previous page returned.
        cursor: u64,
        /// Only keys matching this glob.
        pattern: Option<Bytes>,
        /// How many keys to look at.
        count: u32,
        /// Only keys of this type: every key is a string.
        strings: bool,
    },
    /// `FLUSHDB` and `FLUSHALL`, `ASYNC` or `SYNC` (both are synchronous here).
    Flush,
    /// `MULTI`: queue the commands that follow until `EXEC`.
    Multi,
    /// `EXEC`: run the queued commands as one operation.
    Exec,
    /// `DISCARD`: drop the queued commands.
    Discard,
}

/// A command that changes or describes the connection itself rather than the data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionCommand {
    /// `RESET`: the connection's state back to a new connection's.
    Reset,
    /// `READONLY`: this connection's reads are stale reads, answered by the server it is
    /// connected to from its own state (as a Redis Cluster replica does after `READONLY`).
    ReadOnly,
    /// `READWRITE`: this connection's reads are linearizable again (the default).
    ReadWrite,
    /// `HELLO [protover] [AUTH user password] [SETNAME name]`.
    Hello {
        /// The protocol version asked for.
        version: Option<i64>,
        /// The password given with `AUTH`.
        password: Option<Bytes>,
        /// The connection name given with `SETNAME`.
        name: Option<Bytes>,
    },
    /// `AUTH [user] password`.
    Auth(Bytes),
    /// `CLIENT SETNAME name`.
    ClientSetName(Bytes),
    /// `CLIENT GETNAME`.
    ClientGetName,
    /// `CLIENT ID`.
    ClientId,
    /// `CLIENT INFO`.
    ClientInfo,
    /// `CLIENT LIST [TYPE type] [ID id...]`: the ids of the connections to list (`None`: any;
    /// a `TYPE` other than `normal` lists none).
    ClientList(Option<Vec<u64>>),
}

/// How a `SET`-like command answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetShape {
    /// `SET`: OK, nil when not written, or with GET the old value.
    Set,
    /// `SETNX`: 1 if written, else 0.
    SetNx,
    /// `GETSET`: the old value.
    GetSet,
}

/// A command refused before it ran: Redis's error text, without the leading `-`.
pub type Refusal = String;

pub(super) fn arity(name: &str) -> Refusal {
    format!("ERR wrong number of arguments for '{name}' command")
}

pub(super) const SYNTAX: &str = "ERR syntax error";
const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";

fn unknown(name: &[u8], args: &[Bytes]) -> Refusal {
    let mut text = format!(
        "ERR unknown command '{}', with args beginning with: ",
        String::from_utf8_lossy(name)
    );
    for arg in args.iter().take(10) {
        text.push_str(&format!("'{}' ", String::from_utf8_lossy(arg)));
    }
    text
}

pub(super) fn integer(arg: &Bytes) -> Result<i64, Refusal> {
    parse_integer(arg).ok_or_else(|| NOT_AN_INTEGER.to_string())
}

/// The command in `args` (its name first), or why it is refused. The name and the number of
/// arguments are checked against the command table (`table.rs`), in Redis's words.
pub fn parse(args: &[Bytes]) -> Result<Command, Refusal> {
    let Some((name, rest)) = args.split_first() else {
        return Err("ERR empty command".into());
    };
    let Some(spec) = table::command(name) else {
        return Err(unserved(name, rest));
    };
    if !spec.fits(args.len()) {
        return Err(arity(spec.name));
    }
    if !spec.subcommands.is_empty() {
        return subcommand(spec, rest);
    }
    let lower = spec.name;
    // The arity check above makes every index below one that exists.
    let arg = |i: usize| rest[i].clone();
    Ok(match lower {
        "ping" => match rest {
            [] => Command::Ping(None),
            [message] => Command::Ping(Some(message.clone())),
            _ => return Err(arity(lower)),
        },
        "echo" => Command::Echo(arg(0)),
        "quit" => Command::Quit,
        "reset" => Command::Connection(ConnectionCommand::Reset),
        "readonly" => Command::Connection(ConnectionCommand::ReadOnly),
        "readwrite" => Command::Connection(ConnectionCommand::ReadWrite),
        "select" => {
            if integer(&arg(0))? != 0 {
                return Err("ERR DB index is out of range".into());
            }
            Command::Select
        }
        "hello" => hello(rest)?,
        "auth" => match rest {
            [password] | [_, password] => {
                Command::Connection(ConnectionCommand::Auth(password.clone()))
            }
            _ => return Err(SYNTAX.into()),
        },
        "info" => Command::Info(
            rest.first()
                .map(|s| String::from_utf8_lossy(s).to_lowercase()),
        ),
        "dbsize" => Command::DbSize,
        "multi" => Command::Multi,
        "exec" => Command::Exec,
        "discard" => Command::Discard,
        "get" => Command::Get(arg(0)),
        "set" => set(rest, lower)?,
        "setnx" => Command::Set {
            key: arg(0),
            value: arg(1),
            when: When::Absent,
            get: false,
            ttl: Ttl::Clear,
            shape: SetShape::SetNx,
        },
        "getset" => Command::Set {
            key: arg(0),
            value: arg(1),
            when: When::Always,
            get: true,
            ttl: Ttl::Clear,
            shape: SetShape::GetSet,
        },
        "getdel" => Command::GetDel(arg(0)),
        "append" => Command::Append(arg(0), arg(1)),
        "strlen" => Command::Strlen(arg(0)),
        "del" | "unlink" => Command::Del(rest.to_vec()),
        "exists" => Command::Exists(rest.to_vec()),
        "mget" => Command::MGet(rest.to_vec()),
        "mset" | "msetnx" => {
            if rest.len() % 2 != 0 {
                return Err(arity(lower));
            }
            Command::MSet(
                rest.chunks(2)
                    .map(|pair| (pair[0].clone(), pair[1].clone()))
                    .collect(),
                lower == "msetnx",
            )
        }
        "incrbyfloat" => Command::IncrByFloat(arg(0), arg(1)),
        "incr" => Command::IncrBy(arg(0), 1),
        "decr" => Command::IncrBy(arg(0), -1),
        "incrby" => Command::IncrBy(arg(0), integer(&arg(1))?),
        "decrby" => {
            let by = integer(&arg(1))?;
            Command::IncrBy(arg(0), by.checked_neg().ok_or(NOT_AN_INTEGER)?)
        }
        "type" => Command::Type(arg(0)),
        "puthash" => Command::PutHash(arg(0), arg(1)),
        "setex" | "psetex" => Command::Set {
            key: arg(0),
            value: arg(2),
            when: When::Always,
            get: false,
            ttl: Ttl::In(ttl_ms(&arg(1), lower == "setex", lower)?),
            shape: SetShape::Set,
        },
        "expire" | "pexpire" => {
            let only = match rest {
                [_, _] => ExpireIf::Always,
                [_, _, option] => match &*option.to_ascii_uppercase() {
                    b"NX" => ExpireIf::NoDeadline,
                    b"XX" => ExpireIf::HasDeadline,
                    b"GT" => ExpireIf::Later,
                    b"LT" => ExpireIf::Earlier,
                    _ => {
                        return Err(format!(
                            "ERR Unsupported option {}",
                            String::from_utf8_lossy(option)
                        ))
                    }
                },
                _ => return Err(arity(lower)),
            };
            let amount = integer(&arg(1))?;
            let ms = if amount <= 0 {
                0
            } else if lower == "expire" {
                u64::try_from(amount)
                    .ok()
                    .and_then(|s| s.checked_mul(1000))
                    .ok_or_else(|| {
                        Refusal::from(format!("ERR invalid expire time in '{lower}' command"))
                    })?
            } else {
                amount.unsigned_abs()
            };
            Command::Expire(arg(0), Some(ms), only)
        }
        "persist" => Command::Expire(arg(0), None, ExpireIf::Always),
        "ttl" | "pttl" => Command::Ttl(arg(0), lower == "pttl"),
        "keys" => Command::Keys(arg(0)),
        "scan" => scan(rest, lower)?,
        "flushdb" | "flushall" => match rest {
            [] => Command::Flush,
            [mode] if [&b"ASYNC"[..], b"SYNC"].contains(&&*mode.to_ascii_uppercase()) => {
                Command::Flush
            }
            [_] => return Err(SYNTAX.into()),
            _ => return Err(arity(lower)),
        },
        other => return Err(format!("ERR viewkv lists '{other}' but cannot run it")),
    })
}

/// Why a command the table does not list is refused: those viewkv knows it does not serve
/// say why, the rest are unknown.
fn unserved(name: &[u8], rest: &[Bytes]) -> Refusal {
    let upper = String::from_utf8_lossy(name).to_uppercase();
    match upper.as_str() {
        "EXPIREAT" | "PEXPIREAT" | "GETEX" => format!(
            "ERR viewkv does not support {upper} (expiry runs on the service clock, not the wall clock's absolute times)"
        ),
        "MULTI" | "EXEC" => format!("ERR viewkv does not support {upper} yet"),
        _ => unknown(name, rest),
    }
}

fn scan(rest: &[Bytes], lower: &str) -> Result<Command, Refusal> {
    let [cursor, options @ ..] = rest else {
        return Err(arity(lower));
    };
    let cursor = std::str::from_utf8(cursor)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| Refusal::from("ERR invalid cursor"))?;
    let (mut pattern, mut count, mut strings) = (None, 10, true);
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let value = options.next().ok_or_else(|| Refusal::from(SYNTAX))?;
        match &*option.to_ascii_uppercase() {
            b"MATCH" => pattern = Some(value.clone()),
            b"COUNT" => match integer(value)? {
                n if n < 1 => return Err(SYNTAX.into()),
                n => count = u32::try_from(n).unwrap_or(u32::MAX),
            },
            b"TYPE" => strings = value.eq_ignore_ascii_case(b"string"),
            _ => return Err(SYNTAX.into()),
        }
    }
    Ok(Command::Scan {
        cursor,
        pattern,
        count,
        strings,
    })
}

fn set(rest: &[Bytes], lower: &str) -> Result<Command, Refusal> {
    let [key, value, options @ ..] = rest else {
        return Err(arity(lower));
    };
    let mut when = When::Always;
    let mut get = false;
    let mut ttl = None;
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let upper = option.to_ascii_uppercase();
        match upper.as_slice() {
            b"NX" if when == When::Always => when = When::Absent,
            b"XX" if when == When::Always => when = When::Present,
            b"GET" => get = true,
            b"KEEPTTL" if ttl.is_none() => ttl = Some(Ttl::Keep),
            b"EX" | b"PX" if ttl.is_none() => {
                let amount = options.next().ok_or_else(|| Refusal::from(SYNTAX))?;
                ttl = Some(Ttl::In(ttl_ms(amount, upper == b"EX", lower)?));
            }
            b"EXAT" | b"PXAT" => {
                return Err("ERR viewkv does not support EXAT/PXAT (expiry runs on the service clock, not the wall clock's absolute times)".into())
            }
            _ => return Err(SYNTAX.into()),
        }
    }
    Ok(Command::Set {
        key: key.clone(),
        value: value.clone(),
        when,
        get,
        ttl: ttl.unwrap_or(Ttl::Clear),
        shape: SetShape::Set,
    })
}

/// A positive time to live of SET EX/PX, SETEX, PSETEX, in ms.
fn ttl_ms(amount: &Bytes, seconds: bool, lower: &str) -> Result<u64, Refusal> {
    let invalid = || Refusal::from(format!("ERR invalid expire time in '{lower}' command"));
    let amount = u64::try_from(integer(amount)?)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(invalid)?;
    if seconds {
        amount.checked_mul(1000).ok_or_else(invalid)
    } else {
        Ok(amount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<Bytes> {
        line.split(' ')
            .map(|word| Bytes::copy_from_slice(word.as_bytes()))
            .collect()
    }

    fn parsed(line: &str) -> Result<Command, Refusal> {
        parse(&args(line))
    }

    #[test]
    fn names_are_case_insensitive_and_arity_is_checked_in_redis_words() {
        assert_eq!(parsed("get k"), Ok(Command::Get("k".into())));
        assert_eq!(parsed("GeT k"), Ok(Command::Get("k".into())));
        assert_eq!(
            parsed("get"),
            Err("ERR wrong number of arguments for 'get' command".into())
        );
        assert_eq!(
            parsed("get a b"),
            Err("ERR wrong number of arguments for 'get' command".into())
        );
        assert_eq!(
            parsed("frobnicate a b"),
            Err("ERR unknown command 'frobnicate', with args beginning with: 'a' 'b' ".into())
        );
        assert_eq!(parsed("MSET a 1 b"), Err(arity("mset")));
    }

    #[test]
    fn set_options_map_to_the_operation() {
        let set_ttl = |when, get, ttl, shape| {
            Ok(Command::Set {
                key: "k".into(),
                value: "v".into(),
                when,
                get,
                ttl,
                shape,
            })
        };
        let set = |when, get, shape| set_ttl(when, get, Ttl::Clear, shape);
        assert_eq!(parsed("SET k v"), set(When::Always, false, SetShape::Set));
        assert_eq!(
            parsed("SET k v nx"),
            set(When::Absent, false, SetShape::Set)
        );
        assert_eq!(
            parsed("SET k v XX GET"),
            set(When::Present, true, SetShape::Set)
        );
        assert_eq!(parsed("SET k v NX XX"), Err(SYNTAX.into()));
        assert_eq!(parsed("SET k v BOGUS"), Err(SYNTAX.into()));
        let set_in = |ms| set_ttl(When::Always, false, Ttl::In(ms), SetShape::Set);
        assert_eq!(parsed("SET k v EX 10"), set_in(10_000));
        assert_eq!(parsed("SET k v px 1500"), set_in(1500));
        assert_eq!(parsed("SETEX k 2 v"), set_in(2000));
        assert_eq!(parsed("PSETEX k 20 v"), set_in(20));
        assert_eq!(
            parsed("SET k v NX KEEPTTL"),
            set_ttl(When::Absent, false, Ttl::Keep, SetShape::Set)
        );
        let invalid = Err("ERR invalid expire time in 'set' command".to_string());
        assert_eq!(parsed("SET k v EX 0"), invalid);
        assert_eq!(parsed("SET k v PX -5"), invalid);
        assert_eq!(parsed(&format!("SET k v EX {}", i64::MAX)), invalid);
        assert_eq!(parsed("SET k v EX 1 PX 1"), Err(SYNTAX.into()));
        assert_eq!(parsed("SET k v EX"), Err(SYNTAX.into()));
        assert!(parsed("SET k v EXAT 10").is_err_and(|e| e.contains("service clock")));
        assert_eq!(
            parsed("EXPIRE k 3"),
            Ok(Command::Expire("k".into(), Some(3000), ExpireIf::Always))
        );
        assert_eq!(
            parsed("PEXPIRE k 3"),
            Ok(Command::Expire("k".into(), Some(3), ExpireIf::Always))
        );
        assert_eq!(
            parsed("EXPIRE k -1"),
            Ok(Command::Expire("k".into(), Some(0), ExpireIf::Always))
        );
        assert_eq!(
            parsed("PERSIST k"),
            Ok(Command::Expire("k".into(), None, ExpireIf::Always))
        );
        assert_eq!(
            parsed("EXPIRE k 3 gt"),
            Ok(Command::Expire("k".into(), Some(3000), ExpireIf::Later))
        );
        assert_eq!(
            parsed("EXPIRE k 3 SOON"),
            Err("ERR Unsupported option SOON".into())
        );
        assert_eq!(parsed("EXPIRE k 3 NX XX"), Err(arity("expire")));
        assert_eq!(parsed("TTL k"), Ok(Command::Ttl("k".into(), false)));
        assert_eq!(parsed("PTTL k"), Ok(Command::Ttl("k".into(), true)));
        assert_eq!(
            parsed("SETNX k v"),
            set(When::Absent, false, SetShape::SetNx)
        );
        assert_eq!(
            parsed("GETSET k v"),
            set(When::Always, true, SetShape::GetSet)
        );
    }

    #[test]
    fn counters_parse_their_amounts() {
        assert_eq!(parsed("INCR n"), Ok(Command::IncrBy("n".into(), 1)));
        assert_eq!(parsed("DECRBY n 5"), Ok(Command::IncrBy("n".into(), -5)));
        assert_eq!(parsed("INCRBY n x"), Err(NOT_AN_INTEGER.into()));
        assert_eq!(
            parsed(&format!("DECRBY n {}", i64::MIN)),
            Err(NOT_AN_INTEGER.into())
        );
    }

    #[test]
    fn connection_commands_parse() {
        assert_eq!(
            parsed("HELLO 3 AUTH default pw SETNAME app"),
            Ok(Command::Connection(ConnectionCommand::Hello {
                version: Some(3),
                password: Some("pw".into()),
                name: Some("app".into()),
            }))
        );
        assert_eq!(
            parsed("AUTH default pw"),
            Ok(Command::Connection(ConnectionCommand::Auth("pw".into())))
        );
        assert_eq!(parsed("SELECT 0"), Ok(Command::Select));
        assert_eq!(
            parsed("readonly"),
            Ok(Command::Connection(ConnectionCommand::ReadOnly))
        );
        assert_eq!(
            parsed("READWRITE"),
            Ok(Command::Connection(ConnectionCommand::ReadWrite))
        );
        assert!(parsed("READONLY now").is_err());
        assert!(parsed("SELECT 1").is_err());
        assert_eq!(parsed("COMMAND COUNT"), Ok(Command::CommandCount));
        assert_eq!(parsed("COMMAND DOCS"), Ok(Command::CommandDocs(Vec::new())));
        assert_eq!(parsed("CLIENT SETINFO lib-name x"), Ok(Command::ClientOk));
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn keys_scan_and_flush_parse() {
        assert_eq!(parsed("KEYS user:*"), Ok(Command::Keys("user:*".into())));
        let scan = |cursor, pattern: Option<&str>, count, strings| {
            Ok(Command::Scan {
                cursor,
                pattern: pattern.map(|p| Bytes::copy_from_slice(p.as_bytes())),
                count,
                strings,
            })
        };
        assert_eq!(parsed("SCAN 0"), scan(0, None, 10, true));
        assert_eq!(
            parsed("scan 42 match a* count 100 type STRING"),
            scan(42, Some("a*"), 100, true)
        );
        assert_eq!(parsed("SCAN 0 TYPE hash"), scan(0, None, 10, false));
        assert_eq!(parsed("SCAN x"), Err("ERR invalid cursor".into()));
        assert_eq!(parsed("SCAN 0 COUNT 0"), Err(SYNTAX.into()));
        assert_eq!(parsed("SCAN 0 MATCH"), Err(SYNTAX.into()));
        assert_eq!(parsed("SCAN 0 FOO 1"), Err(SYNTAX.into()));
        assert_eq!(parsed("FLUSHDB"), Ok(Command::Flush));
        assert_eq!(parsed("flushall async"), Ok(Command::Flush));
        assert_eq!(parsed("FLUSHDB LATER"), Err(SYNTAX.into()));
    }
}
