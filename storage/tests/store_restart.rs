//! What a node finds when it opens its store again after stopping, cleanly or not.

use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::{LeaderId, Vote};
use sonraft_raft::command::Command;
use sonraft_storage::{Store, encode_entry};

mod common;

fn committed_vote(term: u64, node: u64) -> Vote<u64> {
    Vote {
        leader_id: LeaderId::new(term, node),
        committed: true,
    }
}

#[tokio::test]
async fn a_node_that_led_rejoins_as_a_follower_when_it_reports_its_appends_early() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path()).unwrap();
        store.log.save_vote(&committed_vote(4, 1)).await.unwrap();
        store.close().unwrap();
    }
    let mut store = Store::open(dir.path()).unwrap();
    store.log.report_own_appends_early(1);
    let vote = store.log.read_vote().await.unwrap().unwrap();
    assert_eq!(vote.leader_id, LeaderId::new(4, 1), "same term and node");
    assert!(
        !vote.committed,
        "not resumed as leader: it may have lost appends its followers hold"
    );
    store.close().unwrap();

    let mut plain = Store::open(dir.path()).unwrap();
    assert_eq!(
        plain.log.read_vote().await.unwrap(),
        Some(committed_vote(4, 1)),
        "a store that never reports early keeps the vote as saved"
    );
}

#[tokio::test]
async fn a_node_that_followed_keeps_its_vote() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path()).unwrap();
        store.log.save_vote(&committed_vote(4, 2)).await.unwrap();
        store.close().unwrap();
    }
    let mut store = Store::open(dir.path()).unwrap();
    store.log.report_own_appends_early(1);
    assert_eq!(
        store.log.read_vote().await.unwrap(),
        Some(committed_vote(4, 2))
    );
}

#[tokio::test]
async fn a_log_with_a_hole_is_cut_at_the_hole_on_opening() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap().close().unwrap();
    common::with_raw_sled(dir.path(), |db| {
        // What a power loss can leave of an unsynced tail: entries 1-3, then 5-6 without 4.
        let log = db.open_tree("log").unwrap();
        for index in [1u64, 2, 3, 5, 6] {
            let entry = common::entry(index, &Command::Import(common::demo_import(1)));
            log.insert(index.to_be_bytes(), encode_entry(&entry).unwrap())
                .unwrap();
        }
    });
    let mut store = Store::open(dir.path()).unwrap();
    let state = store.log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index), Some(3));
    let indexes: Vec<u64> = store
        .log
        .try_get_log_entries(0..u64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(indexes, [1, 2, 3]);
}

#[tokio::test]
async fn a_log_key_of_the_wrong_size_is_refused_not_cut_at() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap().close().unwrap();
    common::with_raw_sled(dir.path(), |db| {
        let log = db.open_tree("log").unwrap();
        for index in [1u64, 2, 3] {
            let entry = common::entry(index, &Command::Import(common::demo_import(1)));
            log.insert(index.to_be_bytes(), encode_entry(&entry).unwrap())
                .unwrap();
        }
        // Damage that sorts between entries 1 and 2: it is no hole, and nothing may be cut.
        log.insert([0u8, 0, 0, 0, 0, 0, 0, 1, 9], b"junk".as_slice())
            .unwrap();
    });
    let err = Store::open(dir.path())
        .err()
        .expect("a damaged log is refused");
    assert!(err.to_string().contains("key of 9 bytes"), "{err}");
    sonraft_storage::wait_released(dir.path(), sonraft_storage::RELEASE_WITHIN).unwrap();
    common::with_raw_sled(dir.path(), |db| {
        assert_eq!(db.open_tree("log").unwrap().len(), 4, "nothing removed");
    });
}

fn log_id(term: u64, index: u64) -> sonraft_raft::LogId {
    sonraft_raft::LogId::new(openraft::CommittedLeaderId::new(term, 1), index)
}

/// Plants log entries `indexes` (term 1) and the given `raft` tree metadata, as a power loss
/// can leave them.
fn plant(dir: &std::path::Path, indexes: &[u64], committed: Option<u64>, purged: Option<u64>) {
    common::with_raw_sled(dir, |db| {
        let log = db.open_tree("log").unwrap();
        for &index in indexes {
            let entry = common::entry(index, &Command::Import(common::demo_import(1)));
            log.insert(index.to_be_bytes(), encode_entry(&entry).unwrap())
                .unwrap();
        }
        let raft = db.open_tree("raft").unwrap();
        if let Some(c) = committed {
            let v = sonraft_raft::codec::encode(&Some(log_id(1, c))).unwrap();
            raft.insert("committed", v).unwrap();
        }
        if let Some(p) = purged {
            let v = sonraft_raft::codec::encode(&log_id(1, p)).unwrap();
            raft.insert("purged", v).unwrap();
        }
    });
}

#[tokio::test]
async fn a_commit_index_past_the_surviving_log_is_lowered_to_its_last_entry_on_opening() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap().close().unwrap();
    // Committed up to 7 was persisted, but the unsynced entries 4-7 were lost.
    plant(dir.path(), &[1, 2, 3], Some(7), None);
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.log.read_committed().await.unwrap(),
        Some(log_id(1, 3)),
        "openraft refuses to start with a commit index beyond its log"
    );
}

#[tokio::test]
async fn a_hole_right_after_the_purged_entry_is_cut_at_on_opening() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap().close().unwrap();
    // Purged up to 3; entry 4 was lost, 5 and 6 came back.
    plant(dir.path(), &[5, 6], None, Some(3));
    let mut store = Store::open(dir.path()).unwrap();
    let state = store.log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(
        state.last_log_id,
        Some(log_id(1, 3)),
        "nothing after the hole at 4 is kept"
    );
    let left = store.log.try_get_log_entries(0..u64::MAX).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
}

/// A purge records the purged id (synced) before it removes the entries; a crash in between
/// leaves the old entries behind. They are no hole: the entries after the purged point stay,
/// and the leftovers go (the purge finishes).
#[tokio::test]
async fn entries_a_crash_left_behind_a_purge_are_removed_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap().close().unwrap();
    plant(dir.path(), &[1, 2, 3, 4, 5, 6], None, Some(3));
    let mut store = Store::open(dir.path()).unwrap();
    let indexes: Vec<u64> = store
        .log
        .try_get_log_entries(0..u64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(
        indexes,
        [4, 5, 6],
        "acknowledged entries after the purged point were cut"
    );
    let state = store.log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 6)));
}

/// A lagging follower is sent entries in batches of about a mebibyte (at least one entry),
/// not up to 512 entries of a megabyte each: openraft gives an append one heartbeat interval
/// (50 ms with loopback timing) to be answered, and an append of hundreds of megabytes never
/// is, so the leader would resend it for ever and never learn that the follower needs a
/// snapshot (seen with a learner added after a 3-million-relation import).
#[tokio::test]
async fn a_batch_of_entries_for_a_follower_stays_near_a_mebibyte() {
    use openraft::RaftLogReader;
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap().close().unwrap();
    // Entries of ~290 KB each.
    common::with_raw_sled(dir.path(), |db| {
        let log = db.open_tree("log").unwrap();
        for index in 1..=20u64 {
            let entry = common::entry(index, &Command::Import(common::demo_import(6_000)));
            log.insert(index.to_be_bytes(), encode_entry(&entry).unwrap())
                .unwrap();
        }
    });
    let mut store = Store::open(dir.path()).unwrap();
    let one = encode_entry(&store.log.try_get_log_entries(1..2).await.unwrap()[0])
        .unwrap()
        .len();
    assert!(one > 250_000, "entries of {one} B");
    let batch = store.log.limited_get_log_entries(1, 21).await.unwrap();
    let bytes: usize = batch.iter().map(|e| encode_entry(e).unwrap().len()).sum();
    assert!(
        !batch.is_empty() && bytes <= (1 << 20) + one,
        "{} entries, {bytes} B",
        batch.len()
    );
    assert_eq!(batch[0].log_id.index, 1);
    // Always at least one, however large.
    let single = store.log.limited_get_log_entries(5, 6).await.unwrap();
    assert_eq!(single.len(), 1);
}
