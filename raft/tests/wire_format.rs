//! Every openraft type this crate puts on the wire or on disk round-trips through bincode 2's
//! serde support (which, unlike JSON, cannot `deserialize_any`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use openraft::error::{Fatal, InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    AnyError, BasicNode, CommittedLeaderId, DefensiveError, Entry, EntryPayload, ErrorSubject,
    LogId, Membership, SnapshotMeta, SnapshotSegmentId, StorageError, StorageIOError,
    StoredMembership, Violation, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use viewkv_raft::{Command, NodeId, TypeConfig};

/// Encodes, decodes and re-encodes `value`, checking nothing changed.
fn roundtrip<T: Serialize + DeserializeOwned + Debug>(value: &T) {
    let config = bincode::config::standard();
    let bytes = bincode::serde::encode_to_vec(value, config).unwrap();
    let (back, read): (T, usize) = bincode::serde::decode_from_slice(&bytes, config)
        .unwrap_or_else(|e| panic!("cannot decode {value:?}: {e}"));
    assert_eq!(read, bytes.len(), "{value:?}");
    assert_eq!(format!("{back:?}"), format!("{value:?}"));
    assert_eq!(bincode::serde::encode_to_vec(&back, config).unwrap(), bytes);
}

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 2), index)
}

fn membership() -> Membership<NodeId, BasicNode> {
    let nodes: BTreeMap<NodeId, BasicNode> = (1..=4)
        .map(|id| (id, BasicNode::new(format!("h{id}:1"))))
        .collect();
    // A joint config, with node 4 a learner.
    Membership::new(
        vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([1, 2])],
        nodes,
    )
}

fn snapshot_meta() -> SnapshotMeta<NodeId, BasicNode> {
    SnapshotMeta {
        last_log_id: Some(log_id(2, 9)),
        last_membership: StoredMembership::new(Some(log_id(1, 2)), membership()),
        snapshot_id: "9-1".to_string(),
    }
}

/// An error with a source, so the encoded `AnyError` nests.
#[derive(Debug, thiserror::Error)]
#[error("outer")]
struct Outer(#[source] std::io::Error);

fn storage_errors() -> Vec<StorageError<NodeId>> {
    let nested = Outer(std::io::Error::other("disk on fire"));
    vec![
        StorageIOError::write_logs(AnyError::new(&nested).add_context(|| "appending")).into(),
        StorageIOError::read_snapshot(Some(snapshot_meta().signature()), AnyError::error("x"))
            .into(),
        DefensiveError::new(ErrorSubject::Log(log_id(1, 1)), Violation::LogsEmpty).into(),
    ]
}

#[test]
fn log_and_meta_types() {
    let entries: Vec<Entry<TypeConfig>> = vec![
        Entry {
            log_id: log_id(1, 1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(1, 2),
            payload: EntryPayload::Membership(membership()),
        },
        Entry {
            log_id: log_id(2, 3),
            payload: EntryPayload::Normal(Command(vec![0, 1, 255])),
        },
    ];
    for entry in &entries {
        roundtrip(entry);
    }
    roundtrip(&Vote::<NodeId>::new(3, 1));
    roundtrip(&Vote::<NodeId>::new_committed(4, 2));
    roundtrip(&Vote::<NodeId>::default());
    roundtrip(&Some(log_id(5, 6)));
    roundtrip(&None::<LogId<NodeId>>);
    roundtrip(&snapshot_meta());
    roundtrip(&SnapshotMeta::<NodeId, BasicNode>::default());
}

#[test]
fn requests() {
    roundtrip(&AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(2, 2),
        prev_log_id: Some(log_id(1, 2)),
        entries: vec![
            Entry {
                log_id: log_id(2, 3),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(2, 4),
                payload: EntryPayload::Normal(Command(b"c".to_vec())),
            },
            Entry {
                log_id: log_id(2, 5),
                payload: EntryPayload::Membership(membership()),
            },
        ],
        leader_commit: Some(log_id(2, 3)),
    });
    roundtrip(&AppendEntriesRequest::<TypeConfig> {
        vote: Vote::default(),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    });
    roundtrip(&VoteRequest::<NodeId> {
        vote: Vote::new(7, 3),
        last_log_id: Some(log_id(6, 40)),
    });
    roundtrip(&InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(2, 2),
        meta: snapshot_meta(),
        offset: 1 << 40,
        data: vec![9; 1000],
        done: true,
    });
}

#[test]
fn responses_and_errors() {
    type Append = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;
    type Vote_ = Result<VoteResponse<NodeId>, RaftError<NodeId>>;
    type Snap = Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

    for resp in [
        AppendEntriesResponse::Success,
        AppendEntriesResponse::PartialSuccess(Some(log_id(1, 5))),
        AppendEntriesResponse::PartialSuccess(None),
        AppendEntriesResponse::Conflict,
        AppendEntriesResponse::HigherVote(Vote::new(9, 1)),
    ] {
        roundtrip::<Append>(&Ok(resp));
    }
    roundtrip::<Vote_>(&Ok(VoteResponse {
        vote: Vote::new(3, 3),
        vote_granted: true,
        last_log_id: Some(log_id(2, 8)),
    }));
    roundtrip::<Snap>(&Ok(InstallSnapshotResponse {
        vote: Vote::new_committed(3, 3),
    }));

    let mut fatals = vec![Fatal::Panicked, Fatal::Stopped];
    fatals.extend(storage_errors().into_iter().map(Fatal::StorageError));
    for fatal in fatals {
        roundtrip::<Append>(&Err(RaftError::Fatal(fatal.clone())));
        roundtrip::<Vote_>(&Err(RaftError::Fatal(fatal.clone())));
        roundtrip::<Snap>(&Err(RaftError::Fatal(fatal)));
    }
    roundtrip::<Snap>(&Err(RaftError::APIError(
        InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
            expect: SnapshotSegmentId {
                id: "a".to_string(),
                offset: 0,
            },
            got: SnapshotSegmentId {
                id: "b".to_string(),
                offset: 17,
            },
        }),
    )));
}
