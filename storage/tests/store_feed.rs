//! The feed of applied changes (what the antenna sessions and the SON cycle follow): a batch
//! names what it changed, unless that is more than the feed keeps a list of.

use openraft::storage::RaftStateMachine;
use sonraft_raft::changeset::Outcome;
use sonraft_raft::command::Response;
use sonraft_storage::{FEED_KEYS_AT_MOST, Store, read};

mod common;

#[tokio::test]
async fn a_large_batch_says_everything_may_have_changed_instead_of_listing_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut feed = store.reader.subscribe();

    // An import of more cells and relations than the feed lists: the ring of recent batches
    // would otherwise hold a national import's millions of keys until thousands of later
    // batches pushed it out.
    let cells = FEED_KEYS_AT_MOST / 2 + 1;
    common::apply_demo(&mut store, cells).await;
    let import = feed.try_recv().expect("the import is in the feed");
    assert_eq!(import.index, 2);
    assert!(import.reset, "told as everything that may have changed");
    assert!(import.cells.is_empty() && import.relations.is_empty() && import.sites.is_empty());

    // A change set names its cell.
    let version = read(store.reader.state()).image.cells["C3"].version;
    let replies = store
        .sm
        .apply([common::entry(3, &common::tilt_change("C3", version, 45))])
        .await
        .unwrap();
    assert!(
        matches!(replies[..], [Response::ChangeSet(Outcome::Applied { .. })]),
        "{replies:?}"
    );
    let change = feed.try_recv().expect("the change set is in the feed");
    assert_eq!(change.index, 3);
    assert!(!change.reset);
    assert_eq!(
        change.cells.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        ["C3"]
    );
    store.close().unwrap();
}

#[tokio::test]
async fn a_batch_within_the_bound_lists_what_it_changed() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut feed = store.reader.subscribe();
    common::apply_demo(&mut store, 20).await;
    let import = feed.try_recv().expect("the import is in the feed");
    assert!(!import.reset);
    assert_eq!((import.cells.len(), import.relations.len()), (20, 20));
    assert_eq!(import.sites.len(), 1);
    store.close().unwrap();
}
