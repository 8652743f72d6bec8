//! The hot in-process paths, one operation at a time and with no network: Redis-protocol
//! frames read and written as a connection does, the framed wire format of the kv RPCs,
//! requests applied to a store of 100,000 keys, the duplicate table's lookup and record, and
//! the replica core's work per operation on a primary and its backup.
//!
//! `cargo bench --bench hot_paths` runs them all briefly (1 s warm-up, 2 s of measurement
//! each); criterion's own flags override that, e.g. `-- --measurement-time 10 apply`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::encode::extend_encode;
use redis_protocol::resp2::types::BytesFrame;
use serde_bytes::ByteBuf;
use viewkv::kv::api::{Entry, Forward, Op, Reply, Request, StreamReply, REQUEST};
use viewkv::kv::replica::{Replica, Settings, Submit};
use viewkv::kv::{Limits, Lookup, Sessions, Store, MAX_CHUNK_BYTES};
use viewkv::net::{decode, decode_answer, decode_call, encode, encode_answer, encode_call};
use viewkv::view::{Member, Timings, View};

/// Bytes of every value written.
const VALUE_BYTES: usize = 100;
/// Keys the store holds before the apply benchmarks.
const STORE_KEYS: u64 = 100_000;
/// Clients whose sessions write to the store (each request is its client's next one).
const STORE_CLIENTS: u64 = 1_000;
/// Sessions in the duplicate table of the lookup benchmarks.
const SESSIONS: u64 = 10_000;
/// Calls and answers in one framed batch.
const FRAMES: usize = 64;
/// SET commands, then as many GET commands, in one RESP pipeline.
const PIPELINED: usize = 16;
/// Replies of each kind encoded at once.
const REPLIES: usize = 16;
/// The service clock every request is applied at (ms): sessions recorded at it never expire.
const NOW_MS: u64 = 1_000_000;
/// A step through the key space coprime with its size, so successive operations touch keys
/// far apart (a different path through the tree each time) and every key in turn.
const STRIDE: u64 = 7_919;
/// Digits in a numbered key after its `key:` prefix (a 16-byte key).
const KEY_DIGITS: usize = 12;

/// The 16-byte key numbered `n`: `key:` and `n` in [`KEY_DIGITS`] digits.
fn key(n: u64) -> Vec<u8> {
    format!("key:{n:0KEY_DIGITS$}").into_bytes()
}

/// Renumber a key made by [`key`] in place, so a timed loop changes keys without allocating.
fn renumber(key: &mut [u8], mut n: u64) {
    for digit in key.iter_mut().rev().take(KEY_DIGITS) {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// The value every write carries.
fn value() -> Vec<u8> {
    vec![b'v'; VALUE_BYTES]
}

/// A Put of key `n` as `client`'s write `seq`.
fn put(client: u64, seq: u64, n: u64) -> Request {
    Request {
        client,
        seq,
        deadline_ms: NOW_MS + 10_000,
        op: Op::Put {
            key: key(n),
            value: value(),
        },
    }
}

/// A RESP request frame of `words`, as a client sends it: an array of bulk strings.
fn command(words: &[&[u8]]) -> BytesFrame {
    BytesFrame::Array(
        words
            .iter()
            .map(|word| BytesFrame::BulkString(Bytes::copy_from_slice(word)))
            .collect(),
    )
}

/// [`PIPELINED`] `SET key:000123 <100-byte value>` commands then as many `GET`s, encoded as
/// one pipelined read.
fn pipeline() -> BytesMut {
    let mut wire = BytesMut::new();
    let keys: Vec<String> = (0..PIPELINED).map(|i| format!("key:{i:06}")).collect();
    let value = value();
    for key in &keys {
        let set = command(&[b"SET", key.as_bytes(), &value]);
        extend_encode(&mut wire, &set, false).expect("a SET frame encodes");
    }
    for key in &keys {
        let get = command(&[b"GET", key.as_bytes()]);
        extend_encode(&mut wire, &get, false).expect("a GET frame encodes");
    }
    wire
}

/// Reading a pipeline as a connection does, and writing its replies.
fn resp_frames(c: &mut Criterion) {
    let wire = pipeline();
    let whole: Vec<Vec<Bytes>> = viewkv::resp::read_batch(&mut wire.clone())
        .into_iter()
        .map(|args| args.expect("the pipeline's frames are valid"))
        .collect();
    assert_eq!(
        whole.len(),
        2 * PIPELINED,
        "one read takes the whole pipeline"
    );
    let mut group = c.benchmark_group("resp");
    group.throughput(Throughput::Elements(2 * PIPELINED as u64));
    group.bench_function("read_and_parse_pipeline_of_32", |b| {
        b.iter_batched(
            || wire.clone(),
            |mut input| {
                for args in viewkv::resp::read_batch(&mut input) {
                    let args = args.expect("the pipeline's frames are valid");
                    black_box(viewkv::resp::parse(&args).expect("SET and GET parse"));
                }
                input
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("decode_frames_only_pipeline_of_32", |b| {
        b.iter_batched(
            || wire.clone(),
            |mut input| {
                while let Some(frame) = decode_bytes_mut(&mut input).expect("valid frames") {
                    black_box(frame);
                }
                input
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("parse_only_pipeline_of_32", |b| {
        b.iter(|| {
            for args in &whole {
                black_box(viewkv::resp::parse(black_box(args)).expect("SET and GET parse"));
            }
        });
    });

    let ok = BytesFrame::SimpleString(Bytes::from_static(b"OK"));
    let bulk = BytesFrame::BulkString(value().into());
    let mut output = BytesMut::with_capacity(16 << 10);
    group.throughput(Throughput::Elements(REPLIES as u64));
    for (name, reply) in [("encode_16_ok", &ok), ("encode_16_bulk_100b", &bulk)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                output.clear();
                for _ in 0..REPLIES {
                    extend_encode(&mut output, black_box(reply), false).expect("a reply encodes");
                }
                black_box(&output);
            });
        });
    }
    group.finish();
}

/// The framed wire format: calls carrying a Put request, their answers, and the request body.
fn net_frames(c: &mut Criterion) {
    let requests: Vec<Request> = (0..FRAMES as u64).map(|i| put(1, i + 1, i)).collect();
    let bodies: Vec<Vec<u8>> = requests.iter().map(encode).collect();
    let reply = encode(&Reply::Ok(None));
    let mut calls = BytesMut::new();
    let mut answers = BytesMut::new();
    for (id, body) in bodies.iter().enumerate() {
        encode_call(&mut calls, id as u64, REQUEST, body);
        encode_answer(&mut answers, id as u64, 200, &reply);
    }
    let mut output = BytesMut::with_capacity(calls.len().max(answers.len()));

    let mut group = c.benchmark_group("net");
    group.throughput(Throughput::Elements(FRAMES as u64));
    group.bench_function("encode_call_64", |b| {
        b.iter(|| {
            output.clear();
            for (id, body) in bodies.iter().enumerate() {
                encode_call(&mut output, id as u64, REQUEST, black_box(body));
            }
            black_box(&output);
        });
    });
    group.bench_function("decode_call_64", |b| {
        b.iter_batched(
            || calls.clone(),
            |mut input| {
                while let Some(call) = decode_call(&mut input).expect("valid calls") {
                    black_box(call);
                }
                input
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("encode_answer_64", |b| {
        b.iter(|| {
            output.clear();
            for id in 0..FRAMES as u64 {
                encode_answer(&mut output, id, 200, black_box(&reply));
            }
            black_box(&output);
        });
    });
    group.bench_function("decode_answer_64", |b| {
        b.iter_batched(
            || answers.clone(),
            |mut input| {
                while let Some(answer) = decode_answer(&mut input).expect("valid answers") {
                    black_box(answer);
                }
                input
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("encode_request_64", |b| {
        b.iter(|| {
            for request in &requests {
                black_box(encode(black_box(request)));
            }
        });
    });
    group.bench_function("decode_request_64", |b| {
        b.iter(|| {
            for body in &bodies {
                black_box(decode::<Request>(black_box(body)).expect("a Put request decodes"));
            }
        });
    });
    group.finish();
}

/// A store holding [`STORE_KEYS`] keys of 100-byte values, written by [`STORE_CLIENTS`]
/// sessions; each client's last sequence number is `STORE_KEYS / STORE_CLIENTS`.
fn loaded_store() -> Store {
    let mut store = Store::new(Limits::default());
    for n in 0..STORE_KEYS {
        let request = put(n % STORE_CLIENTS + 1, n / STORE_CLIENTS + 1, n);
        assert_eq!(store.apply(&request, NOW_MS), Reply::Ok(None));
    }
    store
}

/// Each client's next write, as real traffic sends them: clients take turns, and each request
/// carries the next sequence number of its client (so the duplicate table answers `New`).
struct Writers {
    /// The last sequence number each client used.
    seqs: Vec<u64>,
    /// Requests made so far (picks the client and the key).
    count: u64,
}

impl Writers {
    /// Clients that have each written `seq` already.
    fn after(seq: u64) -> Writers {
        Writers {
            seqs: vec![seq; STORE_CLIENTS as usize],
            count: 0,
        }
    }

    /// Make `request` the next write: its client, sequence number, and a number for its key(s)
    /// (a different existing key each time).
    fn next(&mut self, request: &mut Request) -> u64 {
        self.count += 1;
        let client = self.count % STORE_CLIENTS;
        self.seqs[client as usize] += 1;
        request.client = client + 1;
        request.seq = self.seqs[client as usize];
        self.count * STRIDE % STORE_KEYS
    }
}

/// Applying requests to a store of 100,000 keys: a Put overwriting a key, a Get, an MSET.
fn apply(c: &mut Criterion) {
    let mut store = loaded_store();
    let mut writers = Writers::after(STORE_KEYS / STORE_CLIENTS);
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(1));

    let mut request = put(0, 0, 0);
    group.bench_function("put_overwrite_100k_keys", |b| {
        b.iter(|| {
            let n = writers.next(&mut request);
            if let Op::Put { key, .. } = &mut request.op {
                renumber(key, n);
            }
            black_box(store.apply(black_box(&request), NOW_MS))
        });
    });
    assert_eq!(store.data().len() as u64, STORE_KEYS, "every Put overwrote");
    assert_eq!(
        store.sessions().len() as u64,
        STORE_CLIENTS,
        "no session was added"
    );

    let mut get = Request {
        client: 0,
        seq: 0,
        deadline_ms: NOW_MS + 10_000,
        op: Op::Get { key: key(0) },
    };
    assert_eq!(store.apply(&get, NOW_MS), Reply::Ok(Some(value())));
    let mut count = 0;
    group.bench_function("get_applied_100k_keys", |b| {
        b.iter(|| {
            count += 1;
            if let Op::Get { key } = &mut get.op {
                renumber(key, count * STRIDE % STORE_KEYS);
            }
            black_box(store.apply(black_box(&get), NOW_MS))
        });
    });
    group.bench_function("get_read_100k_keys", |b| {
        b.iter(|| {
            count += 1;
            if let Op::Get { key } = &mut get.op {
                renumber(key, count * STRIDE % STORE_KEYS);
            }
            black_box(store.read(black_box(&get.op), NOW_MS))
        });
    });

    let mut mset = Request {
        client: 0,
        seq: 0,
        deadline_ms: NOW_MS + 10_000,
        op: Op::MSet {
            pairs: (0..10)
                .map(|i| (ByteBuf::from(key(i)), ByteBuf::from(value())))
                .collect(),
            only_if_none_exist: false,
        },
    };
    group.bench_function("mset_10_keys_100k_keys", |b| {
        b.iter(|| {
            let n = writers.next(&mut mset);
            if let Op::MSet { pairs, .. } = &mut mset.op {
                for (i, (key, _)) in pairs.iter_mut().enumerate() {
                    renumber(key, (n + i as u64) % STORE_KEYS);
                }
            }
            black_box(store.apply(black_box(&mset), NOW_MS))
        });
    });
    assert_eq!(
        store.data().len() as u64,
        STORE_KEYS,
        "every MSET overwrote"
    );
    group.finish();
}

/// A duplicate table with [`SESSIONS`] sessions, each having saved `reply` to its write 1.
fn sessions(reply: &Reply) -> Sessions {
    let mut table = Sessions::new(Limits::default().session_bounds());
    for client in 1..=SESSIONS {
        table.record(client, 1, reply.clone(), NOW_MS);
    }
    table
}

/// The client of the `count`th lookup in the table of [`sessions`]: a different one each time,
/// all in turn.
fn client(count: u64) -> u64 {
    count * STRIDE % SESSIONS + 1
}

/// The duplicate table among 10,000 sessions: the lookup of a retry answered from the table,
/// and of a client's next write (after a Put's empty reply, and after a 100-byte one such as
/// `SET … GET` or `GETSET` saves); and recording the reply to a client's next write.
fn dedup(c: &mut Criterion) {
    let mut group = c.benchmark_group("dedup");
    group.throughput(Throughput::Elements(1));
    let empty = Reply::Ok(None);
    let full = Reply::Ok(Some(value()));
    let mut table = sessions(&empty);
    let mut count = 0;
    assert_eq!(table.lookup(1, 1, NOW_MS), Lookup::Repeat(empty.clone()));
    group.bench_function("repeat_10k_sessions", |b| {
        b.iter(|| {
            count += 1;
            black_box(table.lookup(black_box(client(count)), 1, NOW_MS))
        });
    });
    assert_eq!(table.lookup(1, 2, NOW_MS), Lookup::New);
    group.bench_function("new_seq_10k_sessions", |b| {
        b.iter(|| {
            count += 1;
            black_box(table.lookup(black_box(client(count)), 2, NOW_MS))
        });
    });
    let mut table = sessions(&full);
    assert_eq!(table.lookup(1, 2, NOW_MS), Lookup::New);
    group.bench_function("new_seq_after_100b_reply_10k_sessions", |b| {
        b.iter(|| {
            count += 1;
            black_box(table.lookup(black_box(client(count)), 2, NOW_MS))
        });
    });
    let mut table = sessions(&empty);
    let mut seqs = vec![1; SESSIONS as usize + 1];
    group.bench_function("record_next_seq_10k_sessions", |b| {
        b.iter(|| {
            count += 1;
            let client = client(count);
            seqs[client as usize] += 1;
            table.record(
                black_box(client),
                seqs[client as usize],
                Reply::Ok(None),
                NOW_MS,
            );
        });
    });
    assert_eq!(table.len() as u64, SESSIONS, "no session was added");
    group.finish();
}

/// Keys the replicas hold in the replica benchmark (`bench load`'s default).
const REPLICA_KEYS: u64 = 10_000;
/// Writes the primary enters between two forwards to the backup (about what one forward
/// carries under `bench load --clients 64`).
const WRITES_PER_FORWARD: u64 = 16;
/// Operations between two ping replies that renew the primary's read lease (a few
/// milliseconds, far inside the lease's half second).
const OPS_PER_PING: u64 = 1024;
/// The cluster id the monitors answer with.
const CLUSTER: u64 = 7;

/// A primary and its backup in view 2, the backup synced, the primary under a read lease, and
/// [`REPLICA_KEYS`] keys written through them.
struct Replicas {
    /// The primary.
    p: Replica,
    /// The backup.
    b: Replica,
    /// The view they share.
    view: View,
}

impl Replicas {
    fn new() -> Replicas {
        let member = |id: &str, incarnation| Member {
            id: id.into(),
            addr: format!("{id}:1"),
            incarnation,
        };
        let settings = Settings {
            timings: Timings {
                ping_interval: Duration::from_millis(100),
                dead_pings: 5,
            },
            limits: Limits::default(),
            min_copies: 2,
            chunk_bytes: MAX_CHUNK_BYTES,
            read_lease: true,
        };
        let (pm, bm) = (member("p", 1), member("b", 2));
        let now = Instant::now();
        let mut p = Replica::new(pm.clone(), settings);
        let mut b = Replica::new(bm.clone(), settings);
        let view = |num, backup: Option<&Member>| View {
            num,
            primary: Some(pm.clone()),
            backup: backup.cloned(),
            acked: true,
            backup_ready: false,
            recovered: false,
        };
        p.on_view(view(1, None), now);
        let two = view(2, Some(&bm));
        p.on_view(two.clone(), now);
        b.on_view(two.clone(), now);
        let mut snapshot = p.begin_transfer(2, 1, now).expect("primary of view 2");
        while let Some(chunk) = snapshot.next_chunk() {
            b.on_transfer(chunk);
            p.chunk_accepted(2).expect("primary of view 2");
        }
        p.transfer_installed(2, snapshot.index())
            .expect("primary of view 2");
        let mut replicas = Replicas { p, b, view: two };
        replicas.renew_lease(now);
        for n in 0..REPLICA_KEYS {
            replicas.write(put(1, n + 1, n), now);
        }
        replicas.forward();
        assert_eq!(replicas.b.store().data().len() as u64, REPLICA_KEYS);
        let read = Request {
            client: 0,
            seq: 0,
            deadline_ms: NOW_MS + 10_000,
            op: Op::Get { key: key(0) },
        };
        assert!(
            matches!(
                replicas.p.on_request(read, 0, now, NOW_MS),
                Submit::Reply(Reply::Ok(Some(_)))
            ),
            "a read is answered at once under the lease"
        );
        replicas
    }

    /// A ping reply naming the primary, answered at once: the read lease runs from `now`.
    fn renew_lease(&mut self, now: Instant) {
        self.p.on_ping_reply(CLUSTER, self.view.clone(), now, now);
    }

    /// Enter a write on the primary.
    fn write(&mut self, request: Request, now: Instant) {
        let submitted = self.p.on_request(request, 0, now, NOW_MS);
        assert!(matches!(submitted, Submit::Wait { .. }), "{submitted:?}");
    }

    /// Forward what is unconfirmed to the backup (in as many batches as it takes), and
    /// confirm what it applied.
    fn forward(&mut self) {
        loop {
            let entries: Vec<Entry> = self
                .p
                .next_batch(2, self.b.index(), false)
                .expect("primary of view 2")
                .into_iter()
                .cloned()
                .collect();
            if entries.is_empty() {
                return;
            }
            let forward = Forward {
                view: 2,
                primary: self.p.me().clone(),
                entries,
            };
            let (reply, _) = self.b.on_forward(forward);
            let StreamReply::Applied { applied } = reply else {
                panic!("forward not applied: {reply:?}");
            };
            self.p
                .backup_applied(2, applied)
                .expect("primary of view 2");
        }
    }
}

/// The replica core per operation at [`REPLICA_KEYS`] keys: a write entered on the primary, a
/// read of another key answered under the lease, and every [`WRITES_PER_FORWARD`] writes a
/// forward applied on the backup and confirmed (the forward's entries copied as the backup
/// would decode them). What the network and the runtime add is `viewkv bench load`'s.
fn replica(c: &mut Criterion) {
    let mut replicas = Replicas::new();
    let mut writers = Writers::after(REPLICA_KEYS);
    let mut group = c.benchmark_group("replica");
    group.throughput(Throughput::Elements(1));
    let mut write = put(0, 0, 0);
    let mut read = Op::Get { key: key(0) };
    let mut count = 0u64;
    group.bench_function("write_and_lease_read_10k_keys", |b| {
        b.iter(|| {
            count += 1;
            let now = Instant::now();
            if count.is_multiple_of(OPS_PER_PING) {
                replicas.renew_lease(now);
            }
            let n = writers.next(&mut write) % REPLICA_KEYS;
            if let Op::Put { key, .. } = &mut write.op {
                renumber(key, n);
            }
            replicas.write(write.clone(), now);
            if let Op::Get { key } = &mut read {
                renumber(key, (n + REPLICA_KEYS / 2) % REPLICA_KEYS);
            }
            let request = Request {
                client: 0,
                seq: 0,
                deadline_ms: NOW_MS + 10_000,
                op: read.clone(),
            };
            black_box(replicas.p.on_request(request, 0, now, NOW_MS));
            if count.is_multiple_of(WRITES_PER_FORWARD) {
                replicas.forward();
            }
        });
    });
    replicas.forward();
    assert_eq!(
        replicas.p.progress().confirmed,
        replicas.b.index(),
        "every write was confirmed"
    );
    assert_eq!(replicas.b.store().data().len() as u64, REPLICA_KEYS);
    group.finish();
}

criterion_group! {
    name = hot_paths;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = resp_frames, net_frames, apply, dedup, replica
}
criterion_main!(hot_paths);
