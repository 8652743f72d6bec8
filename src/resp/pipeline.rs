//! Commands that are one operation of the kv service (GET, SET, INCR, ...): the operation, and
//! how its outcome becomes the Redis reply. A connection runs a run of such commands read at
//! once as a pipeline — each handed to the primary in order before any is waited for, so their
//! copies travel to the backup together — and every other command one at a time.

use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame;

use super::command::{Command, SetShape};
use super::connection::{bulk, decimal, failure, simple};
use crate::client::ClientError;
use crate::kv::api::{Op, Values};

/// Most commands one pipeline run hands over before waiting: also the most client sessions a
/// connection keeps for it.
pub const MAX_RUN: usize = 64;

/// One command as one operation.
#[derive(Debug)]
pub struct Plan {
    /// The operation.
    pub op: Op,
    /// The reply's shape.
    pub shape: Shape,
}

/// How an operation's outcome is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The value, or nil.
    Bulk,
    /// A decimal the service answered, as an integer.
    Integer,
    /// The length of the value.
    Strlen,
    /// `string` or `none`.
    Type,
    /// SET, GETSET or SETNX (and whether SET asked for the old value).
    Set(SetShape, bool),
    /// `OK` (MSET), or the decimal (MSETNX).
    MSet(bool),
    /// TTL in seconds (`false`, rounded as Redis does) or PTTL in ms.
    Ttl(bool),
    /// An array of values or nils ([`Values`], encoded: MGET).
    Values,
}

/// `command` as one operation, or the command back if it is not one.
pub fn plan(command: Command) -> Result<Plan, Command> {
    let (op, shape) = match command {
        Command::Get(key) => (Op::Get { key: key.to_vec() }, Shape::Bulk),
        Command::Strlen(key) => (Op::Get { key: key.to_vec() }, Shape::Strlen),
        Command::Type(key) => (Op::Get { key: key.to_vec() }, Shape::Type),
        Command::Set {
            key,
            value,
            when,
            get,
            ttl,
            shape,
        } => (
            Op::Set {
                key: key.to_vec(),
                value: value.to_vec(),
                when,
                get,
                ttl,
            },
            Shape::Set(shape, get),
        ),
        Command::GetDel(key) => (Op::Delete { key: key.to_vec() }, Shape::Bulk),
        Command::Append(key, value) => (
            Op::AppendLen {
                key: key.to_vec(),
                value: value.to_vec(),
            },
            Shape::Integer,
        ),
        Command::MSet(pairs, only_if_none_exist) => (
            Op::MSet {
                pairs: pairs
                    .into_iter()
                    .map(|(k, v)| (k.to_vec().into(), v.to_vec().into()))
                    .collect(),
                only_if_none_exist,
            },
            Shape::MSet(only_if_none_exist),
        ),
        Command::IncrByFloat(key, by) => (
            Op::IncrByFloat {
                key: key.to_vec(),
                by: String::from_utf8_lossy(&by).into_owned(),
            },
            Shape::Bulk,
        ),
        Command::IncrBy(key, by) => (
            Op::IncrBy {
                key: key.to_vec(),
                by,
            },
            Shape::Integer,
        ),
        Command::PutHash(key, value) => (
            Op::PutHash {
                key: key.to_vec(),
                value: value.to_vec(),
            },
            Shape::Bulk,
        ),
        Command::Expire(key, after_ms, only) => (
            Op::Expire {
                key: key.to_vec(),
                after_ms,
                only,
            },
            Shape::Integer,
        ),
        Command::Ttl(key, in_ms) => (Op::Ttl { key: key.to_vec() }, Shape::Ttl(in_ms)),
        Command::MGet(keys) => (
            Op::MGet {
                keys: byte_bufs(keys),
            },
            Shape::Values,
        ),
        Command::Del(keys) => (
            Op::DelMany {
                keys: byte_bufs(keys),
            },
            Shape::Integer,
        ),
        Command::Exists(keys) => (
            Op::Exists {
                keys: byte_bufs(keys),
            },
            Shape::Integer,
        ),
        other => return Err(other),
    };
    Ok(Plan { op, shape })
}

/// Keys as an operation carries them.
fn byte_bufs(keys: Vec<Bytes>) -> Vec<serde_bytes::ByteBuf> {
    keys.into_iter()
        .map(|key| serde_bytes::ByteBuf::from(key.to_vec()))
        .collect()
}

impl Shape {
    /// The Redis reply to an operation's outcome.
    pub fn frame(self, outcome: Result<Option<Vec<u8>>, ClientError>) -> BytesFrame {
        let value = match outcome {
            Ok(value) => value,
            Err(err) => return failure(err),
        };
        match self {
            Shape::Bulk => bulk(value),
            Shape::Integer => decimal(Ok(value)),
            Shape::Strlen => BytesFrame::Integer(value.map_or(0, |v| v.len()) as i64),
            Shape::Type if value.is_some() => simple("string"),
            Shape::Type => simple("none"),
            Shape::Set(SetShape::GetSet, _) | Shape::Set(SetShape::Set, true) => bulk(value),
            Shape::Set(SetShape::Set, false) if value.is_some() => simple("OK"),
            Shape::Set(SetShape::Set, false) => BytesFrame::Null,
            Shape::Set(SetShape::SetNx, _) => BytesFrame::Integer(i64::from(value.is_some())),
            Shape::MSet(false) => simple("OK"),
            Shape::MSet(true) => decimal(Ok(value)),
            Shape::Ttl(in_ms) => match decimal(Ok(value)) {
                // Redis rounds the seconds of TTL to the nearest.
                BytesFrame::Integer(ms) if !in_ms && ms >= 0 => {
                    BytesFrame::Integer(ms.saturating_add(500) / 1000)
                }
                other => other,
            },
            Shape::Values => match Values::decode(&value.unwrap_or_default()) {
                Ok(Values(values)) => BytesFrame::Array(values.into_iter().map(bulk).collect()),
                Err(err) => failure(ClientError::BadReply(err.to_string())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::parse;

    fn planned(line: &str) -> Result<Plan, Command> {
        let args: Vec<Bytes> = line
            .split(' ')
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        plan(parse(&args).expect("a valid command"))
    }

    #[test]
    fn one_operation_commands_plan_and_others_do_not() {
        let set = planned("SET k v").expect("SET is one operation");
        assert!(matches!(set.op, Op::Set { .. }));
        assert_eq!(set.shape, Shape::Set(SetShape::Set, false));
        assert_eq!(
            planned("INCR n").ok().map(|p| p.shape),
            Some(Shape::Integer)
        );
        assert_eq!(
            planned("PTTL k").ok().map(|p| p.shape),
            Some(Shape::Ttl(true))
        );
        for (line, shape) in [
            ("MGET a b a", Shape::Values),
            ("DEL a b", Shape::Integer),
            ("UNLINK a", Shape::Integer),
            ("EXISTS a a", Shape::Integer),
        ] {
            assert_eq!(planned(line).ok().map(|p| p.shape), Some(shape), "{line}");
        }
        let mget = planned("MGET a b a").expect("MGET is one operation");
        let mut keys = Vec::new();
        let all = mget.op.touch(&mut |key| keys.push(key));
        assert_eq!((keys, all), (vec![&b"a"[..], b"b", b"a"], false));
        assert!(mget.op.names_many_keys());
        for other in ["PING", "DBSIZE", "KEYS *", "SELECT 0"] {
            assert!(planned(other).is_err(), "{other}");
        }
    }

    #[test]
    fn outcomes_take_the_shapes_redis_answers_with() {
        let ok = |v: &str| Ok(Some(v.as_bytes().to_vec()));
        assert_eq!(Shape::Set(SetShape::Set, false).frame(ok("")), simple("OK"));
        assert_eq!(
            Shape::Set(SetShape::Set, false).frame(Ok(None)),
            BytesFrame::Null
        );
        assert_eq!(
            Shape::Set(SetShape::SetNx, false).frame(Ok(None)),
            BytesFrame::Integer(0)
        );
        assert_eq!(Shape::Integer.frame(ok("42")), BytesFrame::Integer(42));
        assert_eq!(Shape::Strlen.frame(ok("abc")), BytesFrame::Integer(3));
        assert_eq!(Shape::Type.frame(Ok(None)), simple("none"));
        assert_eq!(Shape::Ttl(false).frame(ok("1500")), BytesFrame::Integer(2));
        assert_eq!(Shape::Ttl(false).frame(ok("-2")), BytesFrame::Integer(-2));
        assert_eq!(Shape::MSet(false).frame(ok("1")), simple("OK"));
        assert_eq!(Shape::MSet(true).frame(ok("0")), BytesFrame::Integer(0));
        let refused = ClientError::Refused(crate::kv::api::KvError::NoReplicas {
            copies: 0,
            min_copies: 2,
        });
        assert_eq!(
            Shape::Set(SetShape::Set, false).frame(Err(refused)),
            BytesFrame::Error("NOREPLICAS Not enough good replicas to write.".into())
        );
        let values = Values(vec![Some(b"v".to_vec()), None]).encode();
        assert_eq!(
            Shape::Values.frame(Ok(Some(values))),
            BytesFrame::Array(vec![BytesFrame::BulkString("v".into()), BytesFrame::Null])
        );
        assert!(matches!(
            Shape::Values.frame(ok("xy")),
            BytesFrame::Error(text) if text.starts_with("ERR unreadable reply")
        ));
    }
}
