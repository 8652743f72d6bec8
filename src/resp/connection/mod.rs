//! One Redis-protocol connection: commands are read as they come (pipelined ones too), run in
//! order through the connection's client sessions, and answered in order; the replies to
//! everything read at once are written at once. A run of one-operation commands read together
//! is handed to the primary all at once (see `pipeline.rs`).

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::encode::extend_encode;
use redis_protocol::resp2::types::BytesFrame;
use redis_protocol::resp3::encode::complete::extend_encode as extend_encode3;
use redis_protocol::resp3::types::BytesFrame as Frame3;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

mod state;

use super::command::{parse, Command, ConnectionCommand, Refusal};
use super::docs;
use super::info::info;
use super::pipeline::{plan, Plan, MAX_RUN};
use super::scan::Glob;
use super::transaction::{self, Transaction};
use super::Context;
use crate::client::ClientError;
use crate::kv::api::{KvError, SCAN_MAX_KEYS};
use crate::Client;

/// Most bytes of one command (a value up to the largest message, with room for its framing).
const MAX_COMMAND: usize = crate::net::MAX_MESSAGE + (1 << 20);

/// One connection's state.
struct Connection {
    /// Its number (`CLIENT ID`).
    id: u64,
    /// Its name (`CLIENT SETNAME`).
    name: Option<Bytes>,
    /// Whether it proved the cluster secret (always, if the cluster has none).
    authenticated: bool,
    /// The protocol version replies are written in: 2, or 3 after `HELLO 3`.
    protocol: i64,
    /// Its client session: every command runs through the client machinery, so a server that
    /// is not the primary forwards, and retries are applied at most once.
    client: Client,
    /// More sessions, for the commands of a pipeline in flight beside the first (a session has
    /// one request in flight at a time); made as needed, at most [`MAX_RUN`] − 1.
    sessions: Vec<Client>,
    /// The server's context.
    context: Arc<Context>,
    /// The client's address (`CLIENT INFO`'s `addr`).
    peer: String,
    /// The address it connected to (`CLIENT INFO`'s `laddr`).
    local: String,
    /// When it connected (`CLIENT INFO`'s `age`).
    since: Instant,
    /// The commands queued since `MULTI`; `None` outside a transaction.
    transaction: Option<Transaction>,
}

fn error(text: impl Into<String>) -> BytesFrame {
    let text: String = text.into();
    BytesFrame::Error(text.replace(['\r', '\n'], " ").into())
}

pub(super) fn simple(text: &'static str) -> BytesFrame {
    BytesFrame::SimpleString(Bytes::from_static(text.as_bytes()))
}

pub(super) fn bulk(value: Option<Vec<u8>>) -> BytesFrame {
    value.map_or(BytesFrame::Null, |v| BytesFrame::BulkString(v.into()))
}

/// A client library error as a Redis error reply.
pub(super) fn failure(err: ClientError) -> BytesFrame {
    match err {
        ClientError::Refused(KvError::Invalid { reason }) => error(format!("ERR {reason}")),
        ClientError::Refused(KvError::NoReplicas { .. }) => {
            error("NOREPLICAS Not enough good replicas to write.")
        }
        ClientError::Unauthorized(why) => error(format!("NOAUTH {why}")),
        other => error(format!("ERR {other}")),
    }
}

/// The arguments of a request frame: an array of strings.
fn arguments(frame: BytesFrame) -> Result<Vec<Bytes>, String> {
    let BytesFrame::Array(items) = frame else {
        return Err("ERR Protocol error: expected an array of bulk strings".into());
    };
    items
        .into_iter()
        .map(|item| match item {
            BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => Ok(b),
            BytesFrame::Integer(i) => Ok(Bytes::from(i.to_string())),
            _ => Err("ERR Protocol error: expected an array of bulk strings".to_string()),
        })
        .collect()
}

/// An inline command (`PING\r\n`, as typed into telnet) at the start of `buf`, if a whole line
/// is there.
fn inline(buf: &mut BytesMut) -> Option<Vec<Bytes>> {
    let end = buf.iter().position(|b| *b == b'\n')?;
    let line = buf.split_to(end + 1).freeze();
    Some(
        line.split(|b| b.is_ascii_whitespace())
            .filter(|word| !word.is_empty())
            .map(|word| line.slice_ref(word))
            .collect(),
    )
}

/// `frame` in RESP3 (`map`: an array of alternating keys and values that RESP3 sends as a map).
fn resp3(frame: BytesFrame, map: bool) -> Frame3 {
    match frame {
        BytesFrame::SimpleString(data) => Frame3::SimpleString {
            data,
            attributes: None,
        },
        BytesFrame::Error(data) => Frame3::SimpleError {
            data,
            attributes: None,
        },
        BytesFrame::Integer(data) => Frame3::Number {
            data,
            attributes: None,
        },
        BytesFrame::BulkString(data) => Frame3::BlobString {
            data,
            attributes: None,
        },
        BytesFrame::Null => Frame3::Null,
        BytesFrame::Array(items) if map => {
            let mut items = items.into_iter().map(|f| resp3(f, false));
            let mut data = redis_protocol::resp3::types::FrameMap::default();
            while let (Some(key), Some(value)) = (items.next(), items.next()) {
                data.insert(key, value);
            }
            Frame3::Map {
                data,
                attributes: None,
            }
        }
        BytesFrame::Array(items) => Frame3::Array {
            data: items.into_iter().map(|f| resp3(f, false)).collect(),
            attributes: None,
        },
    }
}

/// The requests complete in `input` (taken out of it), at most [`MAX_RUN`]; a frame that
/// cannot be read ends the batch as an error (the connection closes after answering it).
pub fn read_batch(input: &mut BytesMut) -> Vec<Result<Vec<Bytes>, String>> {
    let mut batch = Vec::new();
    while batch.len() < MAX_RUN {
        let args = if input.first().is_some_and(|b| *b != b'*') {
            match inline(input) {
                Some(args) if args.is_empty() => continue,
                Some(args) => Ok(args),
                None => break,
            }
        } else {
            match decode_bytes_mut(input) {
                Ok(Some((frame, _, _))) => arguments(frame),
                Ok(None) => break,
                Err(err) => Err(format!("ERR Protocol error: {err}")),
            }
        };
        let unreadable = args.is_err();
        batch.push(args);
        if unreadable {
            break;
        }
    }
    batch
}

/// Whether `args` is a `HELLO` (its answer is written as a map in RESP3).
fn is_hello(args: &[Bytes]) -> bool {
    args.first()
        .is_some_and(|n| n.eq_ignore_ascii_case(b"HELLO"))
}

/// A reply to write.
struct Answer {
    /// The reply.
    frame: BytesFrame,
    /// Whether it answers `HELLO` (RESP3 sends that one as a map).
    hello: bool,
    /// Whether the connection closes after it.
    close: bool,
    /// The protocol version to write it in: the one in force once its command ran.
    protocol: i64,
}

/// What became of one command.
enum Outcome {
    /// Answer and go on.
    Reply(BytesFrame),
    /// Answer, then close the connection.
    Close(BytesFrame),
}

impl Connection {
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(mut self, mut stream: S) {
        let mut input = BytesMut::with_capacity(16 << 10);
        let mut output = BytesMut::with_capacity(16 << 10);
        loop {
            let mut closing = false;
            while !closing {
                let batch = read_batch(&mut input);
                if batch.is_empty() {
                    break;
                }
                for answer in self.batch(batch).await {
                    closing |= answer.close;
                    let encoded = if answer.protocol == 3 {
                        extend_encode3(&mut output, &resp3(answer.frame, answer.hello), false)
                            .map(drop)
                    } else {
                        extend_encode(&mut output, &answer.frame, false).map(drop)
                    };
                    if encoded.is_err() {
                        return;
                    }
                }
            }
            if !output.is_empty() {
                if stream.write_all(&output).await.is_err() {
                    return;
                }
                output.clear();
            }
            if closing {
                return;
            }
            if input.len() > MAX_COMMAND {
                let frame = error("ERR Protocol error: command too large");
                let _ = extend_encode(&mut output, &frame, false);
                let _ = stream.write_all(&output).await;
                return;
            }
            match stream.read_buf(&mut input).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// Run one command.
    async fn command(&mut self, parsed: Result<Command, Refusal>) -> Outcome {
        let command = match parsed {
            Ok(command) => command,
            Err(refusal) => return Outcome::Reply(error(refusal)),
        };
        let open = matches!(
            command,
            Command::Quit
                | Command::Connection(
                    ConnectionCommand::Auth(_)
                        | ConnectionCommand::Hello { .. }
                        | ConnectionCommand::Reset
                )
        );
        if !self.authenticated && !open {
            return Outcome::Reply(error("NOAUTH Authentication required."));
        }
        match command {
            Command::Quit => Outcome::Close(simple("OK")),
            other => Outcome::Reply(self.run_command(other).await),
        }
    }

    /// Run the commands read at once, in order: runs of one-operation commands as pipelines,
    /// the others one at a time. Nothing after a command that closes the connection runs.
    async fn batch(&mut self, batch: Vec<Result<Vec<Bytes>, String>>) -> Vec<Answer> {
        let mut out = Vec::with_capacity(batch.len());
        let mut run = Vec::new();
        for args in batch {
            let (hello, outcome) = match args {
                Ok(args) if self.transaction.is_some() => {
                    (is_hello(&args), self.in_transaction(&args).await)
                }
                Ok(args) => {
                    let parsed = match parse(&args) {
                        Ok(command) if self.authenticated => match plan(command) {
                            Ok(one) => {
                                run.push(one);
                                continue;
                            }
                            Err(command) => Ok(command),
                        },
                        other => other,
                    };
                    self.pipeline(&mut run, &mut out).await;
                    (is_hello(&args), self.command(parsed).await)
                }
                Err(refusal) => {
                    self.pipeline(&mut run, &mut out).await;
                    (false, Outcome::Close(error(refusal)))
                }
            };
            let (frame, close) = match outcome {
                Outcome::Reply(frame) => (frame, false),
                Outcome::Close(frame) => (frame, true),
            };
            out.push(self.answer(frame, hello, close));
            if close {
                return out;
            }
        }
        self.pipeline(&mut run, &mut out).await;
        out
    }

    /// Run one-operation commands (emptying `run`) and add their replies to `out`, in order.
    /// Each is handed to the primary (this server itself, or the framed connection to it)
    /// before any is waited for, through a client session of its own — a session has one
    /// request in flight — so the backup receives their copies together; they are applied in
    /// the order they came, and one the server did not take in makes those after it wait
    /// their turn.
    async fn pipeline(&mut self, run: &mut Vec<Plan>, out: &mut Vec<Answer>) {
        if run.len() <= 1 {
            for Plan { op, shape } in run.drain(..) {
                let frame = shape.frame(self.client.execute(op).await);
                out.push(self.answer(frame, false, false));
            }
            return;
        }
        let (ops, shapes): (Vec<_>, Vec<_>) =
            run.drain(..).map(|plan| (plan.op, plan.shape)).unzip();
        let outcomes = self.client.pipeline(&mut self.sessions, ops).await;
        for (outcome, shape) in outcomes.into_iter().zip(shapes) {
            let frame = shape.frame(outcome);
            out.push(self.answer(frame, false, false));
        }
    }

    /// One command inside a transaction (`run` is empty: nothing is pipelined meanwhile).
    /// One-operation commands are queued; `EXEC`, `DISCARD`, `QUIT` and `RESET` run; anything
    /// else is refused and makes `EXEC` discard the transaction.
    async fn in_transaction(&mut self, args: &[Bytes]) -> Outcome {
        let parsed = parse(args);
        let Some(queue) = self.transaction.as_mut() else {
            return self.command(parsed).await;
        };
        let command = match parsed {
            Ok(command) => command,
            Err(refusal) => {
                queue.fail();
                return Outcome::Reply(error(refusal));
            }
        };
        match command {
            Command::Exec => Outcome::Reply(self.exec().await),
            Command::Multi => Outcome::Reply(error("ERR MULTI calls can not be nested")),
            command @ (Command::Discard
            | Command::Quit
            | Command::Connection(ConnectionCommand::Reset)) => self.command(Ok(command)).await,
            command => match plan(command) {
                Ok(one) => {
                    queue.queue(one);
                    Outcome::Reply(simple("QUEUED"))
                }
                Err(_) => {
                    queue.fail();
                    let name = String::from_utf8_lossy(&args[0]).to_uppercase();
                    Outcome::Reply(error(format!(
                        "ERR {name} cannot be queued in a viewkv transaction: only commands \
                         that are one operation on the data (GET, SET, INCR, MSET, DEL, ...) can"
                    )))
                }
            },
        }
    }

    /// `EXEC`: the queued commands as one operation.
    async fn exec(&mut self) -> BytesFrame {
        let Some(queued) = self.transaction.take() else {
            return error("ERR EXEC without MULTI");
        };
        match queued.into_op() {
            Ok((op, shapes)) => transaction::replies(shapes, self.client.execute(op).await),
            Err(answer) => answer,
        }
    }

    /// `frame` as the answer to a command just run (in the protocol now in force).
    fn answer(&self, frame: BytesFrame, hello: bool, close: bool) -> Answer {
        Answer {
            frame,
            hello,
            close,
            protocol: self.protocol,
        }
    }

    async fn run_command(&mut self, command: Command) -> BytesFrame {
        let client = &mut self.client;
        match command {
            one @ (Command::Get(_)
            | Command::Strlen(_)
            | Command::Type(_)
            | Command::Set { .. }
            | Command::GetDel(_)
            | Command::Append(..)
            | Command::MSet(..)
            | Command::IncrByFloat(..)
            | Command::IncrBy(..)
            | Command::PutHash(..)
            | Command::Expire(..)
            | Command::Ttl(..)
            | Command::MGet(_)
            | Command::Del(_)
            | Command::Exists(_)) => match plan(one) {
                Ok(Plan { op, shape }) => shape.frame(client.execute(op).await),
                Err(_) => error("ERR this command is not one operation"),
            },
            Command::Ping(None) => simple("PONG"),
            Command::Ping(Some(message)) | Command::Echo(message) => {
                BytesFrame::BulkString(message)
            }
            Command::Connection(command) => self.connection_command(command),
            Command::Quit => simple("OK"),
            Command::Select | Command::ClientOk => simple("OK"),
            Command::Help(container) => docs::help(container),
            Command::CommandInfo(names) => docs::info(&names),
            Command::CommandDocs(names) => docs::docs(&names),
            Command::CommandList => docs::list(),
            Command::CommandCount => docs::count(),
            Command::ConfigGet => BytesFrame::Array(Vec::new()),
            Command::Info(section) => {
                let status = (self.context.status)();
                let keys = client.count().await.ok();
                let rss = std::fs::read_to_string("/proc/self/status")
                    .ok()
                    .and_then(|s| crate::net::vm_rss(&s));
                BytesFrame::BulkString(info(&status, keys, rss, section.as_deref()).into())
            }
            Command::DbSize => match client.count().await {
                Ok(keys) => BytesFrame::Integer(keys as i64),
                Err(err) => failure(err),
            },
            Command::Keys(pattern) => keys(client, &Glob::new(&pattern)).await,
            Command::Scan {
                cursor,
                pattern,
                count,
                strings,
            } => {
                let after = match cursor {
                    0 => None,
                    cursor => match self.context.cursors.resume(cursor) {
                        Some(key) => Some(key),
                        None => return error("ERR invalid cursor"),
                    },
                };
                let glob = Glob::new(pattern.as_deref().unwrap_or(b"*"));
                let page = match client
                    .scan(&glob.prefix(), after.as_deref(), count, false)
                    .await
                {
                    Ok(page) => page,
                    Err(err) => return failure(err),
                };
                let next = match page.pairs.last() {
                    Some((last, _)) if page.more => self.context.cursors.after(last.clone()),
                    _ => 0,
                };
                let keys = page
                    .pairs
                    .into_iter()
                    .filter(|(key, _)| strings && glob.matches(key))
                    .map(|(key, _)| BytesFrame::BulkString(key.into()))
                    .collect();
                BytesFrame::Array(vec![
                    BytesFrame::BulkString(next.to_string().into()),
                    BytesFrame::Array(keys),
                ])
            }
            Command::Multi => {
                self.transaction = Some(Transaction::default());
                simple("OK")
            }
            Command::Exec => self.exec().await,
            Command::Discard => match self.transaction.take() {
                Some(_) => simple("OK"),
                None => error("ERR DISCARD without MULTI"),
            },
            Command::Flush => match client.flush().await {
                Ok(_) => simple("OK"),
                Err(err) => failure(err),
            },
        }
    }
}

/// `KEYS`: every key matching `glob`, page by page through the store's scan.
async fn keys(client: &mut Client, glob: &Glob) -> BytesFrame {
    let prefix = glob.prefix();
    let mut after: Option<Vec<u8>> = None;
    let mut found = Vec::new();
    loop {
        let page = match client
            .scan(&prefix, after.as_deref(), SCAN_MAX_KEYS, false)
            .await
        {
            Ok(page) => page,
            Err(err) => return failure(err),
        };
        after = page.pairs.last().map(|(key, _)| key.clone());
        found.extend(
            page.pairs
                .into_iter()
                .filter(|(key, _)| glob.matches(key))
                .map(|(key, _)| BytesFrame::BulkString(key.into())),
        );
        if !page.more || after.is_none() {
            return BytesFrame::Array(found);
        }
    }
}

/// A reply carrying a decimal integer (`IncrBy`, `AppendLen`) as an integer frame.
pub(super) fn decimal(result: Result<Option<Vec<u8>>, ClientError>) -> BytesFrame {
    match result {
        Ok(Some(text)) => match std::str::from_utf8(&text).ok().and_then(|t| t.parse().ok()) {
            Some(n) => BytesFrame::Integer(n),
            None => error("ERR the server answered with something other than an integer"),
        },
        Ok(None) => error("ERR the server answered with nothing"),
        Err(err) => failure(err),
    }
}

/// The two ends of a connection, as `CLIENT INFO` shows them.
pub struct Addresses {
    /// The client's address.
    peer: String,
    /// The address it connected to.
    local: String,
}

impl Addresses {
    /// The ends of `stream`.
    pub fn of(stream: &TcpStream) -> Addresses {
        let address = |addr: std::io::Result<std::net::SocketAddr>| {
            addr.map_or_else(|_| "?".to_string(), |a| a.to_string())
        };
        Addresses {
            peer: address(stream.peer_addr()),
            local: address(stream.local_addr()),
        }
    }
}

/// Serve one connection (plain TCP, or TLS over it) until its client closes it (or sends
/// something unreadable).
pub async fn serve<S>(stream: S, addresses: Addresses, id: u64, context: Arc<Context>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let connection = Connection {
        id,
        name: None,
        authenticated: context.secret.is_none(),
        protocol: 2,
        client: (context.new_client)(),
        sessions: Vec::new(),
        context,
        peer: addresses.peer,
        local: addresses.local,
        since: Instant::now(),
        transaction: None,
    };
    connection.run(stream).await;
}
