//! The recorded history of a campaign: which client called what, when, and what came back.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One client request against the store. Every call touches exactly one key, which is what lets
/// the linearizability checker split a history by key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Call {
    /// Read a key: returns its value, or nothing if it is absent.
    Get {
        /// The key read.
        key: Vec<u8>,
    },
    /// Overwrite a key; returns nothing.
    Put {
        /// The key written.
        key: Vec<u8>,
        /// Its new value.
        value: Vec<u8>,
    },
    /// Extend a key's value (an absent key counts as empty); returns nothing.
    Append {
        /// The key extended.
        key: Vec<u8>,
        /// The bytes added at the end.
        value: Vec<u8>,
    },
    /// Store the decimal FNV-1a-32 hash of (previous value, or empty, ++ `value`); returns the
    /// previous value, or nothing if the key was absent.
    PutHash {
        /// The key rewritten.
        key: Vec<u8>,
        /// The bytes hashed after the previous value.
        value: Vec<u8>,
    },
    /// Remove a key; returns the previous value, or nothing if it was absent.
    Delete {
        /// The key removed.
        key: Vec<u8>,
    },
    /// Add one to a key holding a decimal integer (an absent key counts as 0), as Redis's INCR;
    /// returns the new value in decimal. On a value that is not an integer as Redis writes one
    /// (no `+`, no leading zeros), or that is `i64::MAX`, the call fails and changes nothing:
    /// it cannot have returned.
    Incr {
        /// The key counted on.
        key: Vec<u8>,
    },
}

impl Call {
    /// A [`Call::Get`] of `key`.
    pub fn get(key: impl Into<Vec<u8>>) -> Call {
        Call::Get { key: key.into() }
    }

    /// A [`Call::Put`] of `value` at `key`.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Call {
        Call::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// A [`Call::Append`] of `value` to `key`.
    pub fn append(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Call {
        Call::Append {
            key: key.into(),
            value: value.into(),
        }
    }

    /// A [`Call::PutHash`] of `value` at `key`.
    pub fn put_hash(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Call {
        Call::PutHash {
            key: key.into(),
            value: value.into(),
        }
    }

    /// A [`Call::Delete`] of `key`.
    pub fn delete(key: impl Into<Vec<u8>>) -> Call {
        Call::Delete { key: key.into() }
    }

    /// A [`Call::Incr`] of `key`.
    pub fn incr(key: impl Into<Vec<u8>>) -> Call {
        Call::Incr { key: key.into() }
    }

    /// The one key this call touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Call::Get { key }
            | Call::Put { key, .. }
            | Call::Append { key, .. }
            | Call::PutHash { key, .. }
            | Call::Delete { key }
            | Call::Incr { key } => key,
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Get { key } => write!(f, "get({})", Bytes(key)),
            Call::Put { key, value } => write!(f, "put({}, {})", Bytes(key), Bytes(value)),
            Call::Append { key, value } => write!(f, "append({}, {})", Bytes(key), Bytes(value)),
            Call::PutHash { key, value } => {
                write!(f, "puthash({}, {})", Bytes(key), Bytes(value))
            }
            Call::Delete { key } => write!(f, "delete({})", Bytes(key)),
            Call::Incr { key } => write!(f, "incr({})", Bytes(key)),
        }
    }
}

/// What the client learned about its call.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// The call returned.
    Ok {
        /// When it returned: nanoseconds since the campaign started.
        at: u64,
        /// What it returned: the value for `Get`, `PutHash` and `Delete` (`None`: absent), the
        /// new value for `Incr`, always `None` for `Put` and `Append`.
        value: Option<Vec<u8>>,
    },
    /// The client gave up (timeout, deadline, broken connection): the call may or may not have
    /// taken effect, at any time after its invocation (Jepsen's `:info`).
    Unknown,
}

/// One client call and what came of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Operation {
    /// Which client issued it; a client has at most one call outstanding, so this names the
    /// sequence the call belongs to in reports.
    pub client: u64,
    /// What was asked.
    pub call: Call,
    /// When it was invoked: nanoseconds since the campaign started, on a monotonic clock shared
    /// by all clients (real-time order between calls is judged on it).
    pub invoke: u64,
    /// When and how it ended, if it did.
    pub outcome: Outcome,
}

impl Operation {
    /// A call by `client` invoked at `invoke` that returned `value` at `complete`.
    pub fn ok(
        client: u64,
        call: Call,
        invoke: u64,
        complete: u64,
        value: Option<Vec<u8>>,
    ) -> Operation {
        Operation {
            client,
            call,
            invoke,
            outcome: Outcome::Ok {
                at: complete,
                value,
            },
        }
    }

    /// A call by `client` invoked at `invoke` whose outcome is unknown.
    pub fn unknown(client: u64, call: Call, invoke: u64) -> Operation {
        Operation {
            client,
            call,
            invoke,
            outcome: Outcome::Unknown,
        }
    }

    /// When it returned, or `None` if its outcome is unknown.
    pub fn complete(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Ok { at, .. } => Some(at),
            Outcome::Unknown => None,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{} {} -> ", self.client, self.call)?;
        match &self.outcome {
            Outcome::Ok { at, value } => {
                match (&self.call, value) {
                    (Call::Put { .. } | Call::Append { .. }, None) => f.write_str("ok")?,
                    (_, None) => f.write_str("nil")?,
                    (_, Some(value)) => write!(f, "{}", Bytes(value))?,
                }
                write!(f, " [{}, {}]", self.invoke, at)
            }
            Outcome::Unknown => write!(f, "? [{}, ∞)", self.invoke),
        }
    }
}

/// A history that cannot have been recorded from real calls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HistoryError {
    /// An operation returned before it was invoked.
    ReturnsBeforeInvoke {
        /// Its position in the history.
        index: usize,
        /// The operation itself, for the message.
        operation: Operation,
    },
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::ReturnsBeforeInvoke { index, operation } => {
                write!(
                    f,
                    "operation {index} returns before it is invoked: {operation}"
                )
            }
        }
    }
}

impl std::error::Error for HistoryError {}

/// Checks that every operation of `ops` could have been recorded.
pub(crate) fn validate(ops: &[Operation]) -> Result<(), HistoryError> {
    ops.iter()
        .enumerate()
        .try_for_each(|(index, op)| validate_one(index, op))
}

/// Checks that `op`, at position `index`, could have been recorded.
fn validate_one(index: usize, op: &Operation) -> Result<(), HistoryError> {
    match op.complete() {
        Some(at) if at < op.invoke => Err(HistoryError::ReturnsBeforeInvoke {
            index,
            operation: op.clone(),
        }),
        _ => Ok(()),
    }
}

/// A campaign's history, built one finished (or abandoned) operation at a time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Every operation recorded so far, in recording order (the checkers do not care about it).
    ops: Vec<Operation>,
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    /// Records `op`, refusing one that returns before it is invoked.
    pub fn push(&mut self, op: Operation) -> Result<(), HistoryError> {
        validate_one(self.ops.len(), &op)?;
        self.ops.push(op);
        Ok(())
    }

    /// Every operation recorded so far.
    pub fn operations(&self) -> &[Operation] {
        &self.ops
    }

    /// The recorded operations, by value.
    pub fn into_operations(self) -> Vec<Operation> {
        self.ops
    }
}

/// Bytes shown for humans: lossy UTF-8, quoted and escaped, long values cut short.
pub(crate) struct Bytes<'a>(
    /// The bytes to show.
    pub(crate) &'a [u8],
);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Longest value shown in full; longer ones show their start and their length.
        const SHOWN: usize = 40;
        let text = String::from_utf8_lossy(self.0);
        let mut chars = text.chars();
        let head: String = chars.by_ref().take(SHOWN).collect();
        write!(f, "\"{}\"", head.escape_debug())?;
        if chars.next().is_some() {
            write!(f, "…({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_short_and_readable() {
        let get = Operation::ok(3, Call::get("k"), 100, 250, Some(b"v\n".to_vec()));
        assert_eq!(get.to_string(), r#"c3 get("k") -> "v\n" [100, 250]"#);
        let put = Operation::ok(1, Call::put("k", "v"), 5, 6, None);
        assert_eq!(put.to_string(), r#"c1 put("k", "v") -> ok [5, 6]"#);
        let delete = Operation::ok(1, Call::delete("k"), 5, 6, None);
        assert_eq!(delete.to_string(), r#"c1 delete("k") -> nil [5, 6]"#);
        let incr = Operation::ok(2, Call::incr("n"), 7, 8, Some(b"3".to_vec()));
        assert_eq!(incr.to_string(), r#"c2 incr("n") -> "3" [7, 8]"#);
        let lost = Operation::unknown(2, Call::append(b"k".to_vec(), vec![0xff]), 7);
        assert_eq!(
            lost.to_string(),
            "c2 append(\"k\", \"\u{fffd}\") -> ? [7, ∞)"
        );
        let long = Operation::ok(4, Call::put_hash("k", "x".repeat(100)), 1, 2, None);
        assert_eq!(
            long.to_string(),
            format!(
                "c4 puthash(\"k\", \"{}\"…(100 bytes)) -> nil [1, 2]",
                "x".repeat(40)
            )
        );
    }

    #[test]
    fn history_refuses_time_travel() {
        let mut history = History::new();
        assert_eq!(
            history.push(Operation::ok(1, Call::get("k"), 5, 5, None)),
            Ok(())
        );
        let bad = Operation::ok(1, Call::get("k"), 9, 8, None);
        assert_eq!(
            history.push(bad.clone()),
            Err(HistoryError::ReturnsBeforeInvoke {
                index: 1,
                operation: bad
            })
        );
        assert_eq!(history.operations().len(), 1);
        assert!(validate(&history.into_operations()).is_ok());
    }
}
