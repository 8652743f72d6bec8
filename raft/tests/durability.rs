//! Everything written through the store survives dropping it and reopening the directory.

use std::collections::{BTreeMap, BTreeSet};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader,
    SnapshotMeta, StoredMembership, Vote,
};
use viewkv_raft::{Command, NodeId, Store, StoreError, TypeConfig};

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn membership() -> Membership<NodeId, BasicNode> {
    let nodes: BTreeMap<NodeId, BasicNode> = (1..=3)
        .map(|id| (id, BasicNode::new(format!("127.0.0.1:{}", 7000 + id))))
        .collect();
    Membership::new(vec![nodes.keys().copied().collect::<BTreeSet<_>>()], nodes)
}

/// Entries 1..=10 mixing every payload kind.
fn entries() -> Vec<Entry<TypeConfig>> {
    (1..=10)
        .map(|i| {
            let payload = match i % 3 {
                0 => EntryPayload::Blank,
                1 => EntryPayload::Normal(Command(format!("cmd-{i}").into_bytes())),
                _ => EntryPayload::Membership(membership()),
            };
            Entry {
                log_id: log_id(1 + i / 4, i),
                payload,
            }
        })
        .collect()
}

#[tokio::test]
async fn state_survives_reopen() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("not/yet/there");
    let all = entries();
    let vote = Vote::new_committed(3, 2);
    let snapshot_meta = SnapshotMeta {
        last_log_id: Some(all[2].log_id),
        last_membership: StoredMembership::new(Some(all[1].log_id), membership()),
        snapshot_id: "3-1".to_string(),
    };
    let snapshot_data = b"state machine bytes".to_vec();

    {
        let store = Store::open(&data_dir)?;
        let mut log = store.log_store();
        log.blocking_append(all.clone()).await?;
        log.save_vote(&vote).await?;
        log.save_committed(Some(all[7].log_id)).await?;
        log.purge(all[2].log_id).await?; // removes 1..=3
        log.truncate(all[9].log_id).await?; // removes 10
        store.snapshots().save(&snapshot_meta, &snapshot_data)?;
    }

    let store = Store::open(&data_dir)?;
    let mut log = store.log_store();
    assert_eq!(log.read_vote().await?, Some(vote));
    assert_eq!(log.read_committed().await?, Some(all[7].log_id));
    let state = log.get_log_state().await?;
    assert_eq!(state.last_purged_log_id, Some(all[2].log_id));
    assert_eq!(state.last_log_id, Some(all[8].log_id));
    assert_eq!(log.try_get_log_entries(0..100).await?, all[3..9].to_vec());
    assert_eq!(log.try_get_log_entries(5..=6).await?, all[4..6].to_vec());
    let (hi, lo) = (7, 5);
    assert!(log.try_get_log_entries(hi..lo).await?.is_empty());
    assert_eq!(
        store.snapshots().load()?,
        Some((snapshot_meta.clone(), snapshot_data.clone()))
    );

    // Purge the whole log: the last log id must fall back to the last purged one, durably.
    log.purge(all[8].log_id).await?;
    drop((log, store));
    let store = Store::open(&data_dir)?;
    let mut log = store.log_store();
    let state = log.get_log_state().await?;
    assert_eq!(state.last_purged_log_id, Some(all[8].log_id));
    assert_eq!(state.last_log_id, Some(all[8].log_id));
    assert!(log.try_get_log_entries(..).await?.is_empty());

    // A new snapshot replaces the old one.
    let newer = SnapshotMeta {
        last_log_id: Some(all[8].log_id),
        snapshot_id: "9-2".to_string(),
        ..snapshot_meta
    };
    store.snapshots().save(&newer, b"newer")?;
    drop((log, store));
    let store = Store::open(&data_dir)?;
    assert_eq!(store.snapshots().load()?, Some((newer, b"newer".to_vec())));
    Ok(())
}

#[tokio::test]
async fn fresh_store_is_empty() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let mut log = store.log_store();
    assert_eq!(log.read_vote().await?, None);
    assert_eq!(log.read_committed().await?, None);
    let state = log.get_log_state().await?;
    assert_eq!((state.last_purged_log_id, state.last_log_id), (None, None));
    assert!(store.snapshots().load()?.is_none());
    Ok(())
}

#[test]
fn open_errors_name_the_path() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;

    // The data directory path is taken by a regular file.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x")?;
    let err = Store::open(&file.join("sub"))
        .err()
        .ok_or("open succeeded")?;
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
    assert!(err.to_string().contains(&*file.to_string_lossy()), "{err}");

    // The database file is garbage.
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad)?;
    std::fs::write(bad.join("raft.redb"), vec![0x5a; 8192])?;
    let err = Store::open(&bad).err().ok_or("open succeeded")?;
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("raft.redb"), "{err}");
    Ok(())
}
