//! Data directories this build does not understand are refused with a clear message.

use sonraft_storage::{OpenError, Store};

#[test]
fn a_data_dir_of_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap().close().unwrap();
    std::fs::write(dir.path().join("FORMAT"), "sonraft data format 99\n").unwrap();
    let err = Store::open(dir.path()).err().expect("refused");
    assert!(
        matches!(err, OpenError::FormatTooNew { found: 99, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("written by a newer release"),
        "{err}"
    );
}

#[test]
fn a_non_empty_directory_without_a_marker_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("somebody-elses-file"), "x").unwrap();
    let err = Store::open(dir.path()).err().expect("refused");
    assert!(matches!(err, OpenError::NotSonraft { .. }), "{err}");
}

#[test]
fn a_garbled_marker_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("FORMAT"), "\u{0}\u{1}garbage").unwrap();
    let err = Store::open(dir.path()).err().expect("refused");
    assert!(matches!(err, OpenError::NotSonraft { .. }), "{err}");
}

#[test]
fn stored_log_entries_of_an_unknown_format_are_an_error_not_a_panic() {
    let err = sonraft_storage::decode_entry(&[7, 1, 2, 3]).unwrap_err();
    assert!(err.contains("format 7"), "{err}");
    assert!(sonraft_storage::decode_entry(&[1, 0xff, 0xff, 0xff]).is_err());
    assert!(sonraft_storage::decode_entry(&[]).is_err());
}
