//! Every RPC and the CLI fed malformed, truncated, oversized and random bytes: a clear error,
//! never a panic, a hang or a lost write.
//!
//! - The decoders of every wire type, as properties: arbitrary bytes never panic; a valid
//!   encoding round-trips; a truncated one is always refused; flipped bytes never panic;
//!   trailing bytes are refused. Length prefixes claiming gigabytes are refused without
//!   allocating them. Cluster files: arbitrary text never panics the parser.
//! - Over the network: a few hundred seeded garbage bodies to every path of every monitor and
//!   of the primary, each answered 2xx or 4xx with a message; afterwards the cluster serves and
//!   the write made before the garbage is still there.
//! - A Raft request whose string field claims an absurd length, sent to a monitor running as
//!   its own process (so a crash shows as a dead child, not as a dead test binary).
//! - The CLI binary: non-UTF-8 keys and values stored and printed byte-exact; a garbage
//!   `--config` refused by every command with a message naming the file; unknown flags and bad
//!   durations refused by clap (exit code 2).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt::Debug;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{BasicNode, CommittedLeaderId, LogId, Membership, SnapshotMeta, StoredMembership};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::de::DeserializeOwned;
use serde::Serialize;
use viewkv::config::ClusterFile;
use viewkv::kv::api::{
    pack_record, Entry, Forward, KvError, Limits, Op, Reply, Request, Sent, Session, StreamReply,
    TransferChunk, FORWARD, REQUEST, TRANSFER,
};
use viewkv::monitor::api::{PingReply, ViewReply, PING, VIEW};
use viewkv::net::{decode, encode, RpcClient, RpcError, MAX_MESSAGE};
use viewkv::testkit::{self, wait_for, Cluster, ClusterOptions};
use viewkv::view::{Member, Ping, View};
use viewkv_raft::{TypeConfig, RAFT_APPEND, RAFT_SNAPSHOT, RAFT_VOTE};

const EXE: &str = env!("CARGO_BIN_EXE_viewkv");
const DEADLINE: Duration = Duration::from_secs(30);
const STATUS: &str = "/status";

fn ping(id: &str, incarnation: u64, viewnum: u64) -> Ping {
    Ping {
        id: id.to_string(),
        addr: id.to_string(),
        incarnation,
        viewnum,
        backup_synced: false,
        backup_failed: false,
        cluster: 0,
        holds_state: false,
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies for every wire type.
// ---------------------------------------------------------------------------------------------

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z0-9.:]{0,20}"]
}

fn member() -> impl Strategy<Value = Member> {
    (text(), text(), any::<u64>()).prop_map(|(id, addr, incarnation)| Member {
        id,
        addr,
        incarnation,
    })
}

fn view() -> impl Strategy<Value = View> {
    (
        any::<u64>(),
        option::of(member()),
        option::of(member()),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(num, primary, backup, acked, backup_ready, recovered)| View {
                num,
                primary,
                backup,
                acked,
                backup_ready,
                recovered,
            },
        )
}

fn any_ping() -> impl Strategy<Value = Ping> {
    (
        text(),
        text(),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                id,
                addr,
                incarnation,
                viewnum,
                backup_synced,
                backup_failed,
                cluster,
                holds_state,
            )| {
                Ping {
                    id,
                    addr,
                    incarnation,
                    viewnum,
                    backup_synced,
                    backup_failed,
                    cluster,
                    holds_state,
                }
            },
        )
}

fn ping_reply() -> impl Strategy<Value = PingReply> {
    prop_oneof![
        (view(), any::<u64>()).prop_map(|(view, cluster)| PingReply::View { view, cluster }),
        any::<u64>().prop_map(|cluster| PingReply::Foreign { cluster }),
        option::of(text()).prop_map(|hint| PingReply::NotLeader { hint }),
    ]
}

fn view_reply() -> impl Strategy<Value = ViewReply> {
    (
        view(),
        option::of((any::<u64>(), text())),
        any::<bool>(),
        option::of(text()),
        any::<u64>(),
    )
        .prop_map(|(view, leader, serving, stalled, cluster)| ViewReply {
            view,
            leader,
            serving,
            stalled,
            cluster,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        bytes(40).prop_map(|key| Op::Get { key }),
        (bytes(40), bytes(200)).prop_map(|(key, value)| Op::Put { key, value }),
        (bytes(40), bytes(200)).prop_map(|(key, value)| Op::Append { key, value }),
        (bytes(40), bytes(200)).prop_map(|(key, value)| Op::PutHash { key, value }),
        bytes(40).prop_map(|key| Op::Delete { key }),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    (any::<u64>(), any::<u64>(), any::<u64>(), op()).prop_map(|(client, seq, deadline_ms, op)| {
        Request {
            client,
            seq,
            deadline_ms,
            op,
        }
    })
}

fn kv_error() -> impl Strategy<Value = KvError> {
    prop_oneof![
        any::<u64>().prop_map(|view| KvError::WrongServer { view }),
        text().prop_map(|reason| KvError::Unavailable { reason }),
        (text(), any::<u64>(), any::<u64>()).prop_map(|(what, size, limit)| KvError::TooLarge {
            what,
            size,
            limit
        }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(client, seq, last)| KvError::Stale {
            client,
            seq,
            last
        }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(client, seq)| KvError::SessionExpired { client, seq }),
        text().prop_map(|reason| KvError::Deadline { reason }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(copies, min_copies)| KvError::NoReplicas { copies, min_copies }),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        option::of(bytes(100)).prop_map(Reply::Ok),
        kv_error().prop_map(Reply::Err),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (any::<u64>(), any::<u64>(), request()).prop_map(|(index, at_ms, request)| Entry {
        index,
        at_ms,
        request,
    })
}

fn forward() -> impl Strategy<Value = Forward> {
    (any::<u64>(), member(), vec(entry(), 0..4)).prop_map(|(view, primary, entries)| Forward {
        view,
        primary,
        entries,
    })
}

fn session() -> impl Strategy<Value = Session> {
    (any::<u64>(), option::of(reply()), any::<u64>()).prop_map(|(seq, reply, last_ms)| Session {
        seq,
        reply,
        last_ms,
    })
}

fn transfer_chunk() -> impl Strategy<Value = TransferChunk> {
    (
        (
            any::<u64>(),
            member(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        ),
        any::<bool>(),
        vec((bytes(20), bytes(60)), 0..4),
        vec((any::<u64>(), session()), 0..3),
        (any::<u64>(), any::<u64>(), limits()),
    )
        .prop_map(
            |(
                (view, primary, index, attempt, chunk),
                last,
                data,
                sessions,
                (clock_ms, total_keys, limits),
            )| {
                let mut records = Vec::new();
                for (key, value) in &data {
                    pack_record(&mut records, key, value);
                }
                TransferChunk {
                    view,
                    primary,
                    index,
                    attempt,
                    chunk,
                    last,
                    records,
                    deadlines: Vec::new(),
                    sessions,
                    clock_ms,
                    limits,
                    total_keys,
                }
            },
        )
}

fn limits() -> impl Strategy<Value = Limits> {
    (any::<usize>(), any::<u64>(), any::<usize>(), any::<usize>()).prop_map(
        |(max_value, ttl_ms, max_sessions, max_session_bytes)| Limits {
            max_value,
            session_ttl: Duration::from_millis(ttl_ms),
            max_sessions,
            max_session_bytes,
        },
    )
}

fn stream_reply() -> impl Strategy<Value = StreamReply> {
    prop_oneof![
        any::<u64>().prop_map(|applied| StreamReply::Applied { applied }),
        text().prop_map(|reason| StreamReply::Retry { reason }),
        text().prop_map(|reason| StreamReply::Refused { reason }),
    ]
}

/// Bytes biased towards the values that make bincode read further: varint markers 251-255,
/// small lengths, enum tags and booleans.
fn wire_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => any::<u8>(),
        1 => prop::sample::select(vec![0u8, 1, 2, 3, 4, 250, 251, 252, 253, 254, 255]),
    ];
    vec(byte, 0..300)
}

/// Decode `bytes` as every wire type; any outcome but a panic is fine.
fn decode_as_everything(bytes: &[u8]) -> usize {
    [
        decode::<Ping>(bytes).is_ok(),
        decode::<PingReply>(bytes).is_ok(),
        decode::<ViewReply>(bytes).is_ok(),
        decode::<Request>(bytes).is_ok(),
        decode::<Reply>(bytes).is_ok(),
        decode::<Forward>(bytes).is_ok(),
        decode::<TransferChunk>(bytes).is_ok(),
        decode::<StreamReply>(bytes).is_ok(),
    ]
    .into_iter()
    .filter(|ok| *ok)
    .count()
}

/// The encoding of `value` round-trips; cut at `cut` it is refused; with bytes flipped it is
/// decoded or refused (no panic); with `extra` bytes appended it is refused.
fn check_encoding<T>(
    value: &T,
    cut: Index,
    flips: &[(Index, u8)],
    extra: &[u8],
) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let bytes = encode(value);
    prop_assert!(!bytes.is_empty());
    match decode::<T>(&bytes) {
        Ok(back) => prop_assert_eq!(&back, value),
        Err(err) => prop_assert!(false, "a valid encoding was refused: {}", err),
    }
    let cut = cut.index(bytes.len());
    let truncated = decode::<T>(&bytes[..cut]);
    prop_assert!(
        truncated.is_err(),
        "the first {} of {} bytes decoded: {:?}",
        cut,
        bytes.len(),
        truncated
    );
    let mut flipped = bytes.clone();
    for (at, mask) in flips {
        let i = at.index(flipped.len());
        flipped[i] ^= mask;
    }
    let _ = decode::<T>(&flipped);
    let _ = decode::<T>(&flipped[..cut]);
    let mut longer = bytes.clone();
    longer.extend_from_slice(extra);
    let appended = decode::<T>(&longer);
    prop_assert!(
        appended.is_err(),
        "{} trailing bytes accepted: {:?}",
        extra.len(),
        appended
    );
    Ok(())
}

fn flips() -> impl Strategy<Value = Vec<(Index, u8)>> {
    vec((any::<Index>(), 1..=255u8), 1..5)
}

fn extra() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 1..16)
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in wire_bytes()) {
        decode_as_everything(&bytes);
    }

    #[test]
    fn ping_encodings(v in any_ping(), cut in any::<Index>(), f in flips(), e in extra()) {
        check_encoding(&v, cut, &f, &e)?;
    }

    #[test]
    fn ping_reply_encodings(v in ping_reply(), cut in any::<Index>(), f in flips(), e in extra()) {
        check_encoding(&v, cut, &f, &e)?;
    }

    #[test]
    fn view_reply_encodings(v in view_reply(), cut in any::<Index>(), f in flips(), e in extra()) {
        check_encoding(&v, cut, &f, &e)?;
    }

    #[test]
    fn request_encodings(v in request(), cut in any::<Index>(), f in flips(), e in extra()) {
        check_encoding(&v, cut, &f, &e)?;
    }

    #[test]
    fn sent_encodings(view in any::<u64>(), v in request(), cut in any::<Index>(), f in flips(), e in extra()) {
        check_encoding(&Sent { view, request: v }, cut, &f, &e)?;
    }

    #[test]
    fn reply_encodings(v in reply(), cut in any::<Index>(), f in flips(), e in extra()) {
        check_encoding(&v, cut, &f, &e)?;
    }

    #[test]
    fn forward_encodings(v in forward(), cut in any::<Index>(), f in flips(), e in extra()) {
        check_encoding(&v, cut, &f, &e)?;
    }

    #[test]
    fn transfer_chunk_encodings(
        v in transfer_chunk(), cut in any::<Index>(), f in flips(), e in extra()
    ) {
        check_encoding(&v, cut, &f, &e)?;
    }

    #[test]
    fn stream_reply_encodings(
        v in stream_reply(), cut in any::<Index>(), f in flips(), e in extra()
    ) {
        check_encoding(&v, cut, &f, &e)?;
    }

    #[test]
    fn arbitrary_text_never_panics_the_cluster_file_parser(text in any::<String>()) {
        if let Ok(file) = ClusterFile::parse(&text) {
            file.monitor_addrs();
        }
    }

    #[test]
    fn toml_shaped_garbage_never_panics_the_cluster_file_parser(lines in vec(toml_line(), 0..12)) {
        let text = lines.concat();
        if let Ok(file) = ClusterFile::parse(&text) {
            // The one check parse adds to the schema: distinct monitor ids.
            let ids: BTreeSet<u64> = file.monitors.iter().map(|m| m.id).collect();
            prop_assert_eq!(ids.len(), file.monitors.len(), "{}", text);
            prop_assert_eq!(file.monitor_addrs().len(), file.monitors.len());
        }
    }
}

/// One line of something that looks like a cluster file: real sections and keys with values of
/// every type, including absurd numbers and durations.
fn toml_line() -> impl Strategy<Value = String> {
    let section = prop::sample::select(vec![
        "[[monitor]]",
        "[[server]]",
        "[timings]",
        "[limits]",
        "[client]",
        "[monitor]",
        "[[timings]]",
        "[nonsense]",
        "[",
    ]);
    let key = prop::sample::select(vec![
        "id",
        "addr",
        "data_dir",
        "ping_interval",
        "dead_pings",
        "heartbeat",
        "election_min",
        "election_max",
        "snapshot_every",
        "max_value",
        "session_ttl",
        "deadline",
        "bogus",
        "",
    ]);
    let value = prop_oneof![
        prop::sample::select(vec![
            "1",
            "-1",
            "0",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999999",
            "1.5",
            "nan",
            "inf",
            "true",
            "\"100ms\"",
            "\"0s\"",
            "\"18446744073709551615s\"",
            "\"99999999999999999999y\"",
            "\"584942417356y\"",
            "\"1ns 1ns\"",
            "\"soon\"",
            "\"\"",
            "\"127.0.0.1:7001\"",
            "[1, 2]",
            "{ a = 1 }",
            "1979-05-27T07:32:00Z",
            "'''",
            "\"\\u0000\"",
        ])
        .prop_map(String::from),
        any::<i64>().prop_map(|n| n.to_string()),
        "\"[0-9]{1,25}(ns|us|ms|s|m|h|d|w|y)\"",
        any::<String>().prop_map(|s| format!("{s:?}")),
    ];
    prop_oneof![
        section.prop_map(|s| format!("{s}\n")),
        (key, value).prop_map(|(k, v)| format!("{k} = {v}\n")),
        any::<String>(),
    ]
}

/// Replace the length prefix of the first occurrence of `marker` (a string or byte field of
/// fewer than 251 bytes) by a varint claiming `length` bytes, and drop the field's bytes.
fn inflate(bytes: &[u8], marker: &[u8], length: u64) -> Vec<u8> {
    let mut prefixed = vec![marker.len() as u8];
    prefixed.extend_from_slice(marker);
    let at = bytes
        .windows(prefixed.len())
        .position(|w| w == prefixed.as_slice())
        .expect("the marker is in the encoding");
    let mut out = bytes[..at].to_vec();
    out.push(253);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&bytes[at + prefixed.len()..]);
    out
}

/// Length prefixes claiming more than the message limit (up to 2^62 bytes) are refused by
/// every decoder, promptly and without allocating what they claim.
#[test]
fn absurd_length_prefixes_are_refused_by_every_decoder() {
    const M: &[u8] = b"MARKER";
    let marker = String::from_utf8(M.to_vec()).expect("ascii");
    let member = Member {
        id: marker.clone(),
        addr: "a".into(),
        incarnation: 1,
    };
    let put = Request {
        client: 1,
        seq: 1,
        deadline_ms: 0,
        op: Op::Put {
            key: M.to_vec(),
            value: b"v".to_vec(),
        },
    };
    let view = View {
        num: 3,
        primary: Some(member.clone()),
        ..View::default()
    };
    /// Whether the decoder of one type refuses the bytes.
    type Refuses = fn(&[u8]) -> bool;
    let cases: Vec<(&str, Vec<u8>, Refuses)> = vec![
        ("Ping", encode(&ping(&marker, 1, 1)), |b| {
            decode::<Ping>(b).is_err()
        }),
        (
            "PingReply",
            encode(&PingReply::View {
                view: view.clone(),
                cluster: 7,
            }),
            |b| decode::<PingReply>(b).is_err(),
        ),
        (
            "ViewReply",
            encode(&ViewReply {
                view: View::default(),
                leader: Some((1, marker.clone())),
                serving: true,
                stalled: None,
                cluster: 7,
            }),
            |b| decode::<ViewReply>(b).is_err(),
        ),
        ("Request", encode(&put), |b| decode::<Request>(b).is_err()),
        ("Reply", encode(&Reply::Ok(Some(M.to_vec()))), |b| {
            decode::<Reply>(b).is_err()
        }),
        (
            "Forward",
            encode(&Forward {
                view: 2,
                primary: Member {
                    id: "p".into(),
                    ..member.clone()
                },
                entries: vec![Entry {
                    index: 1,
                    at_ms: 0,
                    request: put.clone(),
                }],
            }),
            |b| decode::<Forward>(b).is_err(),
        ),
        (
            "TransferChunk",
            encode(&TransferChunk {
                view: 2,
                primary: Member {
                    id: "p".into(),
                    ..member.clone()
                },
                index: 0,
                attempt: 0,
                chunk: 0,
                last: true,
                // The buffer's own length prefix is the one inflated.
                records: M.to_vec(),
                deadlines: Vec::new(),
                sessions: Vec::new(),
                clock_ms: 0,
                limits: Limits::default(),
                total_keys: 1,
            }),
            |b| decode::<TransferChunk>(b).is_err(),
        ),
        (
            "StreamReply",
            encode(&StreamReply::Refused {
                reason: marker.clone(),
            }),
            |b| decode::<StreamReply>(b).is_err(),
        ),
    ];
    for (name, bytes, refused) in cases {
        for length in [MAX_MESSAGE as u64 + 1, 1 << 40, 1 << 62, u64::MAX] {
            let inflated = inflate(&bytes, M, length);
            assert!(refused(&inflated), "{name} claiming {length} bytes");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Over the network.
// ---------------------------------------------------------------------------------------------

fn ready(v: &View) -> bool {
    v.primary.is_some() && v.acked && v.backup.is_some() && v.backup_ready
}

fn vote() -> openraft::Vote<u64> {
    openraft::Vote::new_committed(1, 1)
}

fn snapshot_request(snapshot_id: &str) -> InstallSnapshotRequest<TypeConfig> {
    InstallSnapshotRequest {
        vote: vote(),
        meta: SnapshotMeta {
            last_log_id: None,
            last_membership: StoredMembership::default(),
            snapshot_id: snapshot_id.to_string(),
        },
        offset: 0,
        data: b"data".to_vec(),
        done: true,
    }
}

/// An AppendEntries carrying a membership entry (whose node 1 is at `addr`) and a command.
fn append_request(addr: &str) -> AppendEntriesRequest<TypeConfig> {
    let membership = Membership::<u64, BasicNode>::new(
        vec![BTreeSet::from([1, 2, 3])],
        BTreeMap::from([(1, BasicNode::new(addr))]),
    );
    let entries = vec![
        openraft::Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
            payload: openraft::EntryPayload::Membership(membership),
        },
        openraft::Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 2),
            payload: openraft::EntryPayload::Normal(viewkv_raft::Command(vec![1, 2])),
        },
    ];
    AppendEntriesRequest {
        vote: vote(),
        prev_log_id: None,
        entries,
        leader_commit: None,
    }
}

/// A valid body for `path`, to cut or corrupt; `None` for paths that ignore their body.
fn valid_body(path: &str) -> Option<Vec<u8>> {
    let member = Member {
        id: "fuzz-primary".into(),
        addr: "127.0.0.1:9".into(),
        incarnation: 5,
    };
    let request = Request {
        client: 0xf022,
        seq: 3,
        deadline_ms: viewkv::kv::wall_ms() + 60_000,
        op: Op::Append {
            key: b"fuzz-key".to_vec(),
            value: b"fuzz-value".to_vec(),
        },
    };
    let body = match path {
        PING => encode(&ping("fuzz-pinger", 77, 1)),
        RAFT_VOTE => encode(&VoteRequest::<u64> {
            vote: vote(),
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), 3)),
        }),
        RAFT_APPEND => encode(&append_request("127.0.0.1:9")),
        RAFT_SNAPSHOT => encode(&snapshot_request("snapshot-1")),
        REQUEST => encode(&Sent { view: 1, request }),
        FORWARD => encode(&Forward {
            view: 1,
            primary: member,
            entries: vec![Entry {
                index: 1,
                at_ms: 0,
                request,
            }],
        }),
        TRANSFER => encode(&TransferChunk {
            view: 1,
            primary: member,
            index: 1,
            attempt: 9,
            chunk: 0,
            last: true,
            records: {
                let mut records = Vec::new();
                pack_record(&mut records, b"fuzz-key", b"x");
                records
            },
            deadlines: Vec::new(),
            sessions: Vec::new(),
            clock_ms: 0,
            limits: Limits::default(),
            total_keys: 1,
        }),
        _ => return None,
    };
    Some(body)
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.gen()).collect()
}

/// A garbage body for `path` and what kind of garbage it is.
fn garbage(rng: &mut StdRng, path: &str) -> (&'static str, Vec<u8>) {
    let valid = valid_body(path);
    // Corrupting a valid Raft request could forge a legitimate-looking one (a higher term,
    // entries): that is an attack on Raft, not bad input. Raft paths get only bodies that
    // cannot decode, plus random bytes.
    let raft = path.starts_with("/raft/");
    loop {
        let kind = rng.gen_range(0..7);
        let body = match (kind, &valid) {
            (0, _) => ("empty", Vec::new()),
            (1, _) => {
                let len = rng.gen_range(1..24);
                ("short random", random_bytes(rng, len))
            }
            (2, _) => {
                let len = rng.gen_range(24..4096);
                ("random", random_bytes(rng, len))
            }
            (3, Some(valid)) => {
                let cut = rng.gen_range(0..valid.len());
                ("truncated", valid[..cut].to_vec())
            }
            (4, Some(valid)) if !raft => {
                let mut body = valid.clone();
                for _ in 0..rng.gen_range(1..4) {
                    let i = rng.gen_range(0..body.len());
                    body[i] ^= rng.gen_range(1..=255u8);
                }
                ("flipped", body)
            }
            (5, Some(valid)) => {
                let mut body = valid.clone();
                let len = rng.gen_range(1..16);
                body.extend(random_bytes(rng, len));
                ("trailing bytes", body)
            }
            (6, _) => {
                let mut body = vec![rng.gen_range(251..=255u8)];
                let len = rng.gen_range(0..64);
                body.extend(random_bytes(rng, len));
                ("varint marker", body)
            }
            _ => continue,
        };
        return body;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_every_path_gets_a_clear_answer_and_loses_no_write() {
    testkit::init_tracing();
    let seed = testkit::seed();
    let mut cluster = Cluster::start(ClusterOptions::fast(seed)).await;
    cluster.start_server().await;
    cluster.start_server().await;
    let view = cluster
        .wait_view("a primary with a ready backup", DEADLINE, ready)
        .await;
    let primary = view.primary.clone().expect("a primary").addr;
    let mut ck = cluster.client();
    ck.put(b"written-before", b"the garbage")
        .await
        .expect("the write before the garbage");

    let mut targets: Vec<(String, &str)> = Vec::new();
    for addr in cluster.monitor_addrs() {
        for path in [PING, VIEW, RAFT_APPEND, RAFT_VOTE, RAFT_SNAPSHOT, STATUS] {
            targets.push((addr.clone(), path));
        }
    }
    for path in [REQUEST, FORWARD, TRANSFER, STATUS] {
        targets.push((primary.clone(), path));
    }
    let rpc = RpcClient::new("garbage", None);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..400 {
        // Every target at least once, then at random.
        let (addr, path) = targets
            .get(i)
            .unwrap_or_else(|| &targets[rng.gen_range(0..targets.len())])
            .clone();
        let (kind, body) = garbage(&mut rng, path);
        let len = body.len();
        let reply = rpc.call_raw(&addr, path, body, DEADLINE).await;
        let outcome = match reply {
            Ok(_) => "200".to_string(),
            Err(RpcError::Status {
                status, message, ..
            }) if (200..300).contains(&status)
                || ((400..500).contains(&status) && !message.trim().is_empty()) =>
            {
                status.to_string()
            }
            other => panic!(
                "request {i} (seed {seed}): {kind} body of {len} bytes to {path} on {addr}: \
                 {other:?}"
            ),
        };
        *answers.entry(format!("{path} {outcome}")).or_default() += 1;
    }
    println!("answers: {answers:?}");

    // Oversized: refused with 413 before it is read in full (or the connection is closed
    // while the rest is still being sent), and the node lives on.
    let monitor = cluster.monitor_addrs()[0].clone();
    let huge = vec![0u8; MAX_MESSAGE + 1];
    let reply = rpc.call_raw(&monitor, PING, huge, DEADLINE).await;
    assert!(
        matches!(
            reply,
            Err(RpcError::Status { status: 413, .. }) | Err(RpcError::Broken { .. })
        ),
        "{reply:?}"
    );

    for id in cluster.monitor_ids() {
        assert!(
            cluster.monitor_status(id).await.is_some(),
            "monitor {id} no longer answers"
        );
    }
    let mut after = cluster.client();
    after
        .put(b"written-after", b"the garbage")
        .await
        .expect("the cluster still takes writes");
    assert_eq!(
        after.get(b"written-after").await.expect("get"),
        Some(b"the garbage".to_vec())
    );
    assert_eq!(
        after.get(b"written-before").await.expect("get"),
        Some(b"the garbage".to_vec()),
        "the write made before the garbage was lost"
    );
    cluster.shutdown().await;
}

/// A child process killed on drop, so a failing test leaves no orphans.
struct Killed(tokio::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("an address").port()
}

/// A monitor running as its own process, with its log file.
struct MonitorProcess {
    addr: String,
    child: Killed,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl MonitorProcess {
    /// Start a one-node monitor group and wait until it answers.
    async fn start(rpc: &RpcClient) -> MonitorProcess {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.path().join("monitor.log");
        let file = std::fs::File::create(&log).expect("a log file");
        let child = Killed(
            tokio::process::Command::new(EXE)
                .args(["monitor", "--id", "1", "--peers", &format!("1={addr}")])
                .arg("--data-dir")
                .arg(dir.path().join("monitor-1"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(file)
                .kill_on_drop(true)
                .spawn()
                .expect("viewkv monitor starts"),
        );
        wait_for("the monitor to answer", DEADLINE, || async {
            rpc.call_raw(&addr, STATUS, Vec::new(), Duration::from_secs(2))
                .await
                .ok()
        })
        .await;
        MonitorProcess {
            addr,
            child,
            log,
            _dir: dir,
        }
    }

    /// The last lines of its log.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

/// Raft requests whose string fields (a snapshot id, a node address in a membership entry)
/// claim 2^62 bytes: the monitor must refuse them with a 4xx, not try to allocate that much.
/// Each goes to a monitor process of its own, so that an abort kills the child (and fails this
/// test, naming every path that killed it) instead of the whole test binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_requests_claiming_huge_strings_are_refused() {
    let rpc = RpcClient::new("raft-fuzzer", None);
    let cases = [
        (
            RAFT_SNAPSHOT,
            inflate(&encode(&snapshot_request("HUGE")), b"HUGE", 1 << 62),
        ),
        (
            RAFT_APPEND,
            inflate(&encode(&append_request("HUGE")), b"HUGE", 1 << 62),
        ),
    ];
    let mut failures = Vec::new();
    for (path, body) in cases {
        let mut monitor = MonitorProcess::start(&rpc).await;
        let reply = rpc
            .call_raw(&monitor.addr, path, body, Duration::from_secs(10))
            .await;
        let refused =
            matches!(&reply, Err(RpcError::Status { status, .. }) if (400..500).contains(status));
        let alive = rpc
            .call_raw(&monitor.addr, STATUS, Vec::new(), Duration::from_secs(5))
            .await
            .is_ok();
        if !refused || !alive {
            let exited = tokio::time::timeout(Duration::from_secs(2), monitor.child.0.wait())
                .await
                .ok();
            failures.push(format!(
                "{path}: expected a 4xx, got {reply:?}; monitor still answers: {alive}; \
                 exited: {exited:?}; its log ends with:\n{}",
                monitor.log_tail()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// The CLI binary.
// ---------------------------------------------------------------------------------------------

/// Run `viewkv ARGS` (no stdin, `VIEWKV_MONITORS` unset), with a 30 s limit: a hang fails.
async fn viewkv<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let run = tokio::process::Command::new(EXE)
        .args(&args)
        .env_remove("VIEWKV_MONITORS")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(DEADLINE, run).await {
        Ok(output) => output.expect("viewkv runs"),
        Err(_) => panic!("viewkv {args:?} did not finish within {DEADLINE:?}"),
    }
}

fn describe(args: &[OsString], out: &Output) -> String {
    format!(
        "viewkv {args:?}: {}\nstdout: {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Random bytes that are not valid UTF-8, without NUL (which no argv can carry).
fn non_utf8(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let len = rng.gen_range(1..max);
    let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen_range(1..=255u8)).collect();
    let at = rng.gen_range(0..bytes.len());
    // Bytes that are invalid anywhere in UTF-8 (a lone 0x80 is not: it can continue a lead
    // byte before it).
    bytes[at] = *[0xff, 0xfe, 0xc0, 0xc1]
        .get(rng.gen_range(0..4))
        .unwrap_or(&0xff);
    assert!(std::str::from_utf8(&bytes).is_err());
    bytes
}

fn os(bytes: &[u8]) -> OsString {
    OsStr::from_bytes(bytes).to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_stores_and_prints_non_utf8_keys_and_values_byte_exact() {
    testkit::init_tracing();
    let seed = testkit::seed();
    let mut cluster = Cluster::start(ClusterOptions::fast(seed)).await;
    cluster.start_server().await;
    cluster.start_server().await;
    cluster
        .wait_view("a primary with a ready backup", DEADLINE, ready)
        .await;
    let monitors = cluster.monitor_addrs().join(",");
    let flags = |command: &str| -> Vec<OsString> {
        [command, "--monitors", &monitors, "--deadline", "10s", "--"]
            .iter()
            .map(OsString::from)
            .collect()
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ck = cluster.client();
    for round in 0..4 {
        let key = non_utf8(&mut rng, 24);
        let value = if round == 0 {
            // A value with a newline and a leading dash, after `--`.
            [b"-\n".as_slice(), &non_utf8(&mut rng, 8)].concat()
        } else {
            non_utf8(&mut rng, 64)
        };
        let mut put = flags("put");
        put.extend([os(&key), os(&value)]);
        let out = viewkv(&put).await;
        assert!(out.status.success(), "{}", describe(&put, &out));
        assert_eq!(
            ck.get(&key).await.expect("get through the library"),
            Some(value.clone()),
            "{}",
            describe(&put, &out)
        );
        let mut get = flags("get");
        get.push(os(&key));
        let out = viewkv(&get).await;
        assert!(out.status.success(), "{}", describe(&get, &out));
        assert_eq!(
            out.stdout,
            [value.as_slice(), b"\n"].concat(),
            "{}",
            describe(&get, &out)
        );
        // And the other way round: written by the library, read by the CLI.
        let other = non_utf8(&mut rng, 64);
        ck.put(&key, &other).await.expect("put through the library");
        let out = viewkv(&get).await;
        assert_eq!(
            out.stdout,
            [other.as_slice(), b"\n"].concat(),
            "{}",
            describe(&get, &out)
        );
    }
    cluster.shutdown().await;
}

/// Every command that takes `--config`, with the arguments it needs besides.
fn commands_with_config() -> Vec<Vec<&'static str>> {
    vec![
        vec!["get", "k", "--deadline", "2s", "--timeout", "500ms"],
        vec!["delete", "k", "--deadline", "2s", "--timeout", "500ms"],
        vec!["put", "k", "v", "--deadline", "2s", "--timeout", "500ms"],
        vec!["append", "k", "v", "--deadline", "2s", "--timeout", "500ms"],
        vec![
            "puthash",
            "k",
            "v",
            "--deadline",
            "2s",
            "--timeout",
            "500ms",
        ],
        vec!["view", "--timeout", "500ms"],
        vec!["monitor", "--id", "1"],
        vec!["server", "--listen", "127.0.0.1:0"],
        vec!["up"],
    ]
}

fn assert_refuses_config(args: &[OsString], out: &Output, path: &Path) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let what = describe(args, out);
    assert!(!out.status.success(), "{what}");
    assert_ne!(out.status.code(), Some(101), "a panic: {what}");
    assert!(out.status.code().is_some(), "killed by a signal: {what}");
    assert!(!stderr.contains("panicked"), "{what}");
    assert!(
        stderr.contains(&path.display().to_string()),
        "the message does not name the file: {what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_config_file_is_refused_by_every_command() {
    let seed = testkit::seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("a temporary directory");
    // Random bytes (not UTF-8: the leading 0xff sees to it), and random text that is not
    // TOML (a line may not start with `=`).
    let binary = dir.path().join("garbage.bin");
    let mut bytes = vec![0xff];
    bytes.extend(random_bytes(&mut rng, 512));
    std::fs::write(&binary, &bytes).expect("write the garbage");
    let textual = dir.path().join("garbage.toml");
    let junk: String = (0..400)
        .map(|_| char::from(rng.gen_range(0x20..0x7f_u8)))
        .collect();
    std::fs::write(&textual, format!("= {junk}\n[[[monitor\n")).expect("write the garbage");
    for path in [&binary, &textual] {
        for command in commands_with_config() {
            let mut args: Vec<OsString> = command.iter().map(OsString::from).collect();
            args.push("--config".into());
            args.push(path.clone().into_os_string());
            let out = viewkv(&args).await;
            assert_refuses_config(&args, &out, path);
        }
    }
    // A file that does not exist, and a directory: also named.
    let missing = dir.path().join("missing.toml");
    for path in [missing.as_path(), dir.path()] {
        let args: Vec<OsString> = vec![
            "get".into(),
            "k".into(),
            "--config".into(),
            path.as_os_str().to_owned(),
        ];
        let out = viewkv(&args).await;
        assert_refuses_config(&args, &out, path);
    }
}

fn assert_clap_error(args: &[OsString], out: &Output, mentions: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let what = describe(args, out);
    assert_eq!(out.status.code(), Some(2), "{what}");
    // clap's errors start with `error:`; viewkv's own failures with `viewkv:`.
    assert!(stderr.starts_with("error:"), "not a clap error: {what}");
    assert!(stderr.contains(mentions), "{what}");
    assert!(!stderr.contains("panicked"), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_flags_and_bad_durations_are_clap_errors() {
    // `--monitors` points nowhere: a command that got past parsing would fail differently.
    let nowhere = ["--monitors", "127.0.0.1:1"];
    let commands: Vec<Vec<&str>> = vec![
        vec!["get", "k"],
        vec!["delete", "k"],
        vec!["put", "k", "v"],
        vec!["append", "k", "v"],
        vec!["puthash", "k", "v"],
        vec!["view"],
        vec!["monitor", "--id", "1"],
        vec!["server", "--listen", "127.0.0.1:0"],
        vec!["up"],
        vec!["bench", "monitor-failover"],
    ];
    for command in &commands {
        let args: Vec<OsString> = command
            .iter()
            .chain(&["--no-such-flag"])
            .map(OsString::from)
            .collect();
        let out = viewkv(&args).await;
        assert_clap_error(&args, &out, "--no-such-flag");
    }
    let bad_durations: Vec<Vec<&str>> = vec![
        vec!["get", "k", "--deadline", "soon"],
        vec!["put", "k", "v", "--deadline", "soon"],
        vec!["append", "k", "v", "--deadline", "1 fortnight"],
        vec!["delete", "k", "--deadline", "10 parsecs"],
        vec!["get", "k", "--timeout", "soon"],
        vec!["view", "--timeout", ""],
        vec!["get", "k", "--deadline", "99999999999999999999999s"],
        vec!["--worker-threads", "0", "view"],
        vec!["server", "--worker-threads", "many"],
    ];
    for command in &bad_durations {
        let args: Vec<OsString> = command.iter().chain(&nowhere).map(OsString::from).collect();
        let out = viewkv(&args).await;
        assert_clap_error(&args, &out, "invalid value");
    }
    // A duration or an address that is not UTF-8.
    for flag in ["--deadline", "--monitors"] {
        let args: Vec<OsString> = vec![
            "get".into(),
            "k".into(),
            flag.into(),
            OsString::from_vec(vec![b'1', 0xff, b's']),
        ];
        let out = viewkv(&args).await;
        assert_clap_error(&args, &out, "invalid UTF-8");
    }
}
