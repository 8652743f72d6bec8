//! `MULTI` / `EXEC` / `DISCARD`: the commands queued between `MULTI` and `EXEC` become one
//! [`Op::Multi`], applied by the primary in order with nothing in between and replicated as
//! one entry, so a transaction is atomic on every replica and applied at most once. Only
//! commands that are one operation on the data can be queued; anything else is refused when
//! it is queued, which makes `EXEC` discard the transaction as Redis does after a queuing
//! error. `WATCH` (optimistic locking) is not served.

use redis_protocol::resp2::types::BytesFrame;

use super::connection::failure;
use super::pipeline::{Plan, Shape};
use crate::client::ClientError;
use crate::kv::api::{Op, Replies, Reply};

/// The error `EXEC` answers after a command could not be queued.
pub const ABORTED: &str = "EXECABORT Transaction discarded because of previous errors.";

/// A transaction being queued.
#[derive(Debug, Default)]
pub struct Transaction {
    /// The commands queued so far, in order.
    queued: Vec<Plan>,
    /// Whether a command could not be queued: `EXEC` then runs nothing.
    failed: bool,
}

impl Transaction {
    /// Queue one command.
    pub fn queue(&mut self, plan: Plan) {
        self.queued.push(plan);
    }

    /// A command could not be queued.
    pub fn fail(&mut self) {
        self.failed = true;
    }

    /// What `EXEC` runs: the one operation and how each reply is shaped, or the frame to
    /// answer at once (the abort, or an empty array for an empty transaction).
    pub fn into_op(self) -> Result<(Op, Vec<Shape>), BytesFrame> {
        if self.failed {
            return Err(BytesFrame::Error(ABORTED.into()));
        }
        if self.queued.is_empty() {
            return Err(BytesFrame::Array(Vec::new()));
        }
        let (ops, shapes) = self.queued.into_iter().map(|p| (p.op, p.shape)).unzip();
        Ok((Op::Multi { ops }, shapes))
    }
}

/// `EXEC`'s answer to the outcome of the transaction's operation: an array of each command's
/// reply, shaped as it would have been alone.
pub fn replies(shapes: Vec<Shape>, outcome: Result<Option<Vec<u8>>, ClientError>) -> BytesFrame {
    let bytes = match outcome {
        Ok(bytes) => bytes.unwrap_or_default(),
        Err(err) => return failure(err),
    };
    let replies = match Replies::decode(&bytes) {
        Ok(Replies(replies)) if replies.len() == shapes.len() => replies,
        Ok(Replies(replies)) => {
            let why = format!("{} replies to {} commands", replies.len(), shapes.len());
            return failure(ClientError::BadReply(why));
        }
        Err(err) => return failure(ClientError::BadReply(err.to_string())),
    };
    let frames = shapes.into_iter().zip(replies).map(|(shape, reply)| {
        shape.frame(match reply {
            Reply::Ok(value) => Ok(value),
            Reply::Err(err) => Err(ClientError::Refused(err)),
        })
    });
    BytesFrame::Array(frames.collect())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::kv::api::KvError;
    use crate::resp::parse;
    use crate::resp::pipeline::plan;

    fn planned(line: &str) -> Plan {
        let args: Vec<Bytes> = line
            .split(' ')
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        plan(parse(&args).expect("a valid command")).expect("one operation")
    }

    #[test]
    fn exec_runs_the_queued_commands_as_one_operation_and_shapes_each_reply() {
        let mut transaction = Transaction::default();
        for line in ["SET k v", "INCR n", "GET k"] {
            transaction.queue(planned(line));
        }
        let (op, shapes) = transaction.into_op().expect("something to run");
        let Op::Multi { ops } = op else {
            panic!("EXEC runs one Multi, not {op:?}");
        };
        assert_eq!(ops.len(), 3);
        assert!(matches!(ops[1], Op::IncrBy { by: 1, .. }));
        let invalid = KvError::Invalid {
            reason: "value is not an integer or out of range".into(),
        };
        let answered = Replies(vec![
            Reply::Ok(Some(Vec::new())),
            Reply::Err(invalid),
            Reply::Ok(Some(b"v".to_vec())),
        ]);
        assert_eq!(
            replies(shapes, Ok(Some(answered.encode()))),
            BytesFrame::Array(vec![
                BytesFrame::SimpleString("OK".into()),
                BytesFrame::Error("ERR value is not an integer or out of range".into()),
                BytesFrame::BulkString("v".into()),
            ])
        );
    }

    #[test]
    fn a_failed_or_empty_transaction_runs_nothing_and_a_bad_answer_is_an_error() {
        let mut failed = Transaction::default();
        failed.queue(planned("SET k v"));
        failed.fail();
        assert_eq!(
            failed.into_op().err(),
            Some(BytesFrame::Error(ABORTED.into()))
        );
        assert_eq!(
            Transaction::default().into_op().err(),
            Some(BytesFrame::Array(Vec::new()))
        );
        let shapes = vec![Shape::Bulk, Shape::Bulk];
        let one = Replies(vec![Reply::Ok(None)]).encode();
        assert!(matches!(
            replies(shapes.clone(), Ok(Some(one))),
            BytesFrame::Error(text) if text.contains("1 replies to 2 commands")
        ));
        assert!(matches!(
            replies(shapes, Err(ClientError::SessionLost)),
            BytesFrame::Error(_)
        ));
    }
}
